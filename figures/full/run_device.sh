#!/usr/bin/env bash
# The full study's remaining work on a lent GPU machine, in one call of the device tool: the main study's seeds
# (with their union rows), the public-teacher scenario and the ViT pair, `kdlib study` processes for each part and seed,
# all at once on the one GPU, under one time limit. Every run it finishes is stored (the store is append-only, so a
# process stopped by the limit loses only the run in flight); runs already in figures/full/study.jsonl are skipped.
#
# 1. Here, once: copy ../shared's CIFAR-10 archive and published checkpoints into .devshare/ (git ignores it; 30 MB):
#        bash figures/full/run_device.sh prepare
# 2. The call: run(command="bash figures/full/run_device.sh", carry=[".devshare"], timeout_s=600)
#    It writes $OUT/study.jsonl (the store), $OUT/summary.txt (what each process did) and $OUT/logs.tgz.
# 3. Here: add its runs to the store (keys done here already are skipped; each record keeps its env and commit):
#        python -m kdlib merge <files_at>/study.jsonl --results figures/full
#
# MAIN, PUBLIC, VIT: the seeds of each part (empty: none). PER_SEED (default 1): processes per part and seed, which
# share its runs (a seed of the main study is 50 runs, run one by one in a process; the machine has 16 cores, and the
# H100 lease of 2026-11-26 took about 30 s per run in each of 5 processes). LIMIT_S (default 480): the time limit of
# every process, counted from the start (a part not started by then is left out). SHARE (default .devshare).
# STORE_FROM (default figures/full/study.jsonl): the store it continues. SCALE and SETS are passed to the part
# scripts (for this script's test at a tiny size). Each process picks CUDA where there is one (--device auto).
# Flower's simulation needs Ray, which does not fit the call's 64 MiB, so the federated study is not run here.
set -uo pipefail
cd "$(dirname "$0")/../.."
SHARE=${SHARE:-.devshare}
if [ "${1:-run}" = prepare ]; then
    mkdir -p "$SHARE/pretrained" &&
        cp ../shared/data/cifar10-jpeg.tar.gz "$SHARE/" &&
        cp ../shared/pretrained/*.th "$SHARE/pretrained/" || { echo "no ../shared beside the project?"; exit 2; }
    du -sh "$SHARE"
    exit 0
fi
OUT=${OUT:?OUT: the folder whose files come back}
MAIN=${MAIN-"8 9"}
PUBLIC=${PUBLIC-"5 6 7 8 9"}
VIT=${VIT-"0 1 2 3 4"}
LIMIT_S=${LIMIT_S:-480}
PER_SEED=${PER_SEED:-1}
WORK=${WORK:-/tmp/kdlib-device}
STORE_FROM=${STORE_FROM:-figures/full/study.jsonl}
share=$(cd "$SHARE" && pwd) || { echo "no $SHARE: run 'bash figures/full/run_device.sh prepare' here first"; exit 2; }
mkdir -p "$OUT" "$WORK/store" "$WORK/logs" "$WORK/bin"
command -v python >/dev/null || ln -sf "$(command -v python3)" "$WORK/bin/python"  # the machine may have python3 only
export PATH=$WORK/bin:$PATH PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${THREADS:-1}
export KDLIB_CIFAR10_ARCHIVE=$share/cifar10-jpeg.tar.gz KDLIB_PRETRAINED=$share/pretrained
export KDLIB_DATA=${KDLIB_DATA:-$WORK/data} KDLIB_CACHE=$WORK/cache KDLIB_RESULTS=$WORK/store KDLIB_WORKERS=1
rm -f "$WORK/store/study.jsonl"
[ -f "$STORE_FROM" ] && cp "$STORE_FROM" "$WORK/store/study.jsonl"
before=$(wc -l <"$WORK/store/study.jsonl" 2>/dev/null || echo 0)
started=$(date +%s)
{
    date -u
    nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    # the data cache, once, before the processes that read it start
    python -c "from kdlib.study.runner import open_study; open_study('${SCALE:-full}').dataset" 2>&1 | tail -n 3
    echo "data ready after $(($(date +%s) - started)) s"
} >"$OUT/summary.txt" 2>&1

part() {  # $1 label, $2 script, $3 seed, $4 process number: one process, stopped at the limit
    local left=$((LIMIT_S - ($(date +%s) - started)))
    if [ "$left" -le 0 ]; then echo "$1 seed $3: not started (time limit reached)" >>"$OUT/summary.txt"; return; fi
    timeout "$left" bash "figures/full/$2" "$3" "$3" >"$WORK/logs/$1-$3-$4.log" 2>&1
    echo "$1 seed $3: exit $? after $(($(date +%s) - started)) s" >>"$OUT/summary.txt"
}
# PER_SEED processes share each part's seed: the store's per-key claims give each of them other runs
for n in $(seq "$PER_SEED"); do
    for seed in $MAIN; do part main run_study.sh "$seed" "$n" & done
    for seed in $PUBLIC; do part public run_public_teacher.sh "$seed" "$n" & done
    for seed in $VIT; do part vit run_vit_pair.sh "$seed" "$n" & done
done
wait
touch "$WORK/store/study.jsonl"
cp "$WORK/store/study.jsonl" "$OUT/study.jsonl"
echo "$(($(wc -l <"$OUT/study.jsonl") - before)) runs added in $(($(date +%s) - started)) s" >>"$OUT/summary.txt"
tar czf "$OUT/logs.tgz" -C "$WORK" logs
cat "$OUT/summary.txt"
