#!/usr/bin/env bash
# How far the full study's queue (run_queue.sh) has got: each part's runs in the store, seed by seed, and the missing
# ones by name (`kdlib study|federated --plan`). Runs nothing and loads no data; seconds. Usage:
#   bash figures/full/progress.sh            # the store figures/full/study.jsonl (or KDLIB_RESULTS's)
set -euo pipefail
cd "$(dirname "$0")/../.."
source figures/full/variants.sh
export KDLIB_RESULTS=${KDLIB_RESULTS:-figures/full}
echo "== main study"
python -m kdlib study --scale full --plan
echo "== union reference rows"
# shellcheck disable=SC2086
python -m kdlib study --scale full --plan $UNION_SETS
echo "== public teacher"
# shellcheck disable=SC2086
python -m kdlib study --scale full --plan $PUBLIC_TEACHER_SETS
echo "== federated claim (first pass)"
python -m kdlib federated --scale full --plan --set starts="$FEDERATED_CLAIM_STARTS"
echo "== federated, every start"
python -m kdlib federated --scale full --plan
