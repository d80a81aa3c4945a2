#!/usr/bin/env bash
# The full study's findings: notebooks/08_findings at full scale on the seeds that are complete in this folder's
# store (counted from seed 0; nothing is trained), its figures and verdicts.md, and its verdict table, with the
# commits and devices that made the records, into the README's verdict block where the figures folder has one.
#
#   bash figures/full/write_findings.sh                          # the main study: into this folder
#   VARIANT=public_teacher bash figures/full/write_findings.sh   # the public teacher: into public_teacher/
#   VARIANT=vit_pair bash figures/full/write_findings.sh         # the ViT student: into vit_pair/
#
# A variant is the main study with the --set options of variants.sh (those its run script runs). It refuses while
# fewer seeds are complete than the project quotes verdicts from (findings.MIN_SEEDS_TO_QUOTE, 5).
# FEDERATED=true adds the federated claim, on the seeds of it that are complete (`kdlib federated --scale full`
# stores them; the federated scale has 5), and refuses below 5 as well; FEDERATED_STARTS=random,kd_avg,kd_dp judges
# it on those starts alone (the first pass of run_queue.sh stores them). KDLIB_RESULTS and KDLIB_FIGURES (default:
# this folder, or the variant's) point it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
source figures/full/variants.sh
case "${VARIANT:-main}" in
    main) sets="" figures=figures/full ;;
    public_teacher) sets=$PUBLIC_TEACHER_SETS figures=figures/full/public_teacher ;;
    vit_pair) sets=$VIT_PAIR_SETS figures=figures/full/vit_pair ;;
    *) echo "VARIANT=$VARIANT is not a variant of the full study: use main, public_teacher or vit_pair" >&2; exit 2 ;;
esac
export KDLIB_RESULTS=${KDLIB_RESULTS:-figures/full} KDLIB_FIGURES=${KDLIB_FIGURES:-$figures}
# shellcheck disable=SC2086
read -r seeds needed < <(python -c "
import sys
from kdlib.__main__ import parse_overrides
from kdlib.study.findings import MIN_SEEDS_TO_QUOTE
from kdlib.study.runner import open_study
overrides = parse_overrides([a for a in sys.argv[1:] if a != '--set'])
print(open_study('full', progress=False, **overrides).complete_seeds(), MIN_SEEDS_TO_QUOTE)" $sets)
if [ "$seeds" -lt "$needed" ]; then
    echo "$seeds seed(s) of the full study (${VARIANT:-main}) are complete in $KDLIB_RESULTS; verdicts are quoted" \
        "from $needed: nothing written (continue with: bash figures/full/run_queue.sh)"
    exit 1
fi
fl=()
if [ -n "${FEDERATED_STARTS:-}" ]; then fl=(--set starts="$FEDERATED_STARTS"); fi
if [ "${FEDERATED:-false}" = true ]; then
    fl_seeds=$(python -c "
import sys
from kdlib.fl.study import open_federated
starts = {'starts': sys.argv[1]} if sys.argv[1] else {}
print(open_federated('full', progress=False, **starts).complete_seeds())" "${FEDERATED_STARTS:-}")
    if [ "$fl_seeds" -lt "$needed" ]; then
        echo "$fl_seeds seed(s) of the federated study (starts: ${FEDERATED_STARTS:-all}) are complete in" \
            "$KDLIB_RESULTS; verdicts are quoted from $needed: nothing written (continue with: bash" \
            "figures/full/run_queue.sh, or leave FEDERATED out)"
        exit 1
    fi
    echo "the federated claim on $fl_seeds complete seed(s)"
    fl+=(--set federated_seeds="$fl_seeds")
fi
echo "08_findings on $seeds complete seed(s) (${VARIANT:-main})"
# shellcheck disable=SC2086
python -m kdlib reproduce --scale full --only 08 --set seeds="$seeds" --set federated="${FEDERATED:-false}" \
    "${fl[@]}" $sets --output "runs/notebooks-full-${VARIANT:-main}"
