#!/usr/bin/env bash
# The full study's findings: notebooks/08_findings at full scale on the main-study seeds that are complete in this
# folder's store (counted from seed 0; nothing is trained), its figures and verdicts.md into this folder, and its
# verdict table, with the commits and devices that made the records, into README.md's verdict block.
#
#   bash figures/full/write_findings.sh
#
# It refuses while fewer seeds are complete than the project quotes verdicts from (findings.MIN_SEEDS_TO_QUOTE, 5).
# FEDERATED=true adds the federated claim over the same seeds (store its runs first: `kdlib federated --scale full`,
# else 08 runs them). KDLIB_RESULTS and KDLIB_FIGURES (default: this folder) point it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
export KDLIB_RESULTS=${KDLIB_RESULTS:-figures/full} KDLIB_FIGURES=${KDLIB_FIGURES:-figures/full}
read -r seeds needed < <(python -c "
from kdlib.study.findings import MIN_SEEDS_TO_QUOTE
from kdlib.study.runner import open_study
print(open_study('full', progress=False).complete_seeds(), MIN_SEEDS_TO_QUOTE)")
if [ "$seeds" -lt "$needed" ]; then
    echo "$seeds seed(s) of the full study are complete in $KDLIB_RESULTS; verdicts are quoted from $needed:" \
        "nothing written (continue with: bash figures/full/run_queue.sh)"
    exit 1
fi
echo "08_findings on $seeds complete seed(s)"
python -m kdlib reproduce --scale full --only 08 --set seeds="$seeds" --set federated="${FEDERATED:-false}" \
    --output runs/notebooks-full
