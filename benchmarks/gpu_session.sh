#!/usr/bin/env bash
# One GPU session in one command: the (T, alpha) grid benchmark at smoke scale, then the study at the paper's data
# sizes and models (all of CIFAR-10, resnet56 teacher, resnet20 student) with a shortened epoch budget.
#
#   OUT=runs/gpu bash benchmarks/gpu_session.sh [SHARED]      # SHARED: the folder with data/ and pretrained/
#
# SCALE picks the study's scale (default paper); PARALLEL=1 runs one study process per scenario at once (they share
# the GPU and the store, whose per-key claims keep them from computing a run twice). Each step has its own time
# limit (BENCH_S, STUDY_S seconds; 0 skips the step). The results store is
# append-only and fsynced, so a study cut off by its limit keeps every run it finished. At the end the results
# and the pre-trained parties are packed into $OUT, so that the notebooks can draw the figures from them on any
# machine:
#
#   KDLIB_RESULTS=... KDLIB_CACHE=... python -m kdlib reproduce --scale paper --only 02,03,04,05,06,08 \
#       --set 'pretrain={"epochs": 10}' --set 'distill={"epochs": 4}' --set scenarios=... --set federated=false
set -u
SHARED=${1:-../shared}
OUT=${OUT:-runs/gpu}
WORK=${WORK:-/tmp/kdlib-gpu}
DEVICE=${DEVICE:-cuda}
SCALE=${SCALE:-paper}
PARALLEL=${PARALLEL:-0}
BENCH_S=${BENCH_S:-150}
STUDY_S=${STUDY_S:-360}
BENCH_ARGS=${BENCH_ARGS:-}
SCENARIOS=${SCENARIOS:-iid,disjoint,dirichlet:0.1,dirichlet:0.5,dirichlet:1.0}
PRETRAIN=${PRETRAIN:-'{"epochs": 10}'}
DISTILL=${DISTILL:-'{"epochs": 4}'}
EXTRA_SET=${EXTRA_SET:-}

mkdir -p "$OUT" "$WORK/results" "$WORK/cache"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export KDLIB_CIFAR10_ARCHIVE=$SHARED/data/cifar10-jpeg.tar.gz KDLIB_PRETRAINED=$SHARED/pretrained
export KDLIB_RESULTS=$WORK/results KDLIB_CACHE=$WORK/cache
export KDLIB_WORKERS=${KDLIB_WORKERS:-1}  # each study process runs its jobs one by one (PARALLEL=1 runs processes side by side)

{
    date -u
    nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
} 2>&1 | tee "$OUT/env.txt"

if [ "$BENCH_S" -gt 0 ]; then  # 0 skips a step (GNU timeout would read 0 as "no limit")
    echo "== grid benchmark (smoke scale, $DEVICE, limit ${BENCH_S}s)"
    # shellcheck disable=SC2086
    timeout "$BENCH_S" python benchmarks/grid_speed.py --device "$DEVICE" --only a,b,c,d $BENCH_ARGS 2>&1 \
        | tee "$OUT/grid_speed.txt"
fi

if [ "$STUDY_S" -gt 0 ]; then
    echo "== study at $SCALE scale ($DEVICE, limit ${STUDY_S}s, parallel $PARALLEL): scenarios $SCENARIOS"
    started=$(date +%s)
    study() {  # $1: the scenarios of this process, $2: its log
        # shellcheck disable=SC2086
        timeout "$STUDY_S" python -m kdlib study --scale "$SCALE" --device "$DEVICE" --quiet \
            --set "scenarios=$1" --set "pretrain=$PRETRAIN" --set "distill=$DISTILL" $EXTRA_SET >"$2" 2>&1
    }
    if [ "$PARALLEL" = 1 ]; then  # the data cache is built once, before the processes start
        python -c "from kdlib.study.runner import open_study; open_study('$SCALE').dataset" >"$OUT/data.log" 2>&1
        pids=()
        IFS=',' read -ra names <<<"$SCENARIOS"
        for name in "${names[@]}"; do
            study "$name" "$OUT/study-${name//[:.]/_}.log" &
            pids+=($!)
        done
        code=0
        for pid in "${pids[@]}"; do wait "$pid" || code=$?; done
        cat "$OUT"/study-*.log >"$OUT/study.log"
    else
        study "$SCENARIOS" "$OUT/study.log"
        code=$?
    fi
    echo "study exit $code after $(($(date +%s) - started)) s"
    tail -n 5 "$OUT/study.log"
fi

python - "$SCALE" "$SCENARIOS" "$PRETRAIN" "$DISTILL" "$EXTRA_SET" <<'EOF' 2>&1 | tee "$OUT/summary.txt"
import json, sys
from kdlib.__main__ import parse_overrides
from kdlib.study.runner import open_study
scale, scenarios, pretrain, distill, extra = sys.argv[1:]
sets = parse_overrides([s.removeprefix("--set").strip() for s in extra.split("--set") if s.strip()])
study = open_study(scale, scenarios=scenarios, pretrain=json.loads(pretrain), distill=json.loads(distill), **sets)
frame = study.frame()
print(f"{len(frame)} runs stored")
if not frame.empty:
    print(frame[["scenario", "method", "wall_s"]].to_string(index=False))
    for metric in ("gain", "knowledge_gain", "knowledge_loss", "acc_after", "unseen_after"):
        if metric in frame:
            print(f"\n{metric} (points):\n{study.gain_table(metric).to_string()}")
EOF

tar czf "$OUT/results.tgz" -C "$WORK" results
tar cf - -C "$WORK" cache | split -b 15M - "$OUT/cache.tar.part-"
ls -la "$OUT"
