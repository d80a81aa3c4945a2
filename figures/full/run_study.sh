#!/usr/bin/env bash
# The full study under the one protocol, seed by seed, into this folder's store (resumable: a stored run is
# skipped, so rerunning this script continues where it stopped). Per seed: every method on the student's own
# data (5 scenarios), then the union reference rows (fine-tuning and DP-KD on both parties' data).
#
#   bash figures/full/run_study.sh [FIRST_SEED] [LAST_SEED]      # default 0 9
#
# KDLIB_CACHE (default cache/) keeps the pre-trained parties; KDLIB_WORKERS (default 2) the runs at once.
# MAIN_SETS adds --set options to the main study; UNION=0 leaves out the union rows (run_public_teacher.sh uses both).
# SCALE (default full) and SETS (--set options for both) exist for the scripts' own test at a tiny size.
set -euo pipefail
cd "$(dirname "$0")/../.."
source figures/full/variants.sh
first=${1:-0}
last=${2:-9}
export KDLIB_RESULTS=${KDLIB_RESULTS:-figures/full} KDLIB_WORKERS=${KDLIB_WORKERS:-2}
for seed in $(seq "$first" "$last"); do
    echo "== seed $seed: main study $(date -u +%H:%M:%S)"
    # shellcheck disable=SC2086
    python -m kdlib study --scale "${SCALE:-full}" --quiet --seed "$seed" --set seeds=1 ${MAIN_SETS:-} ${SETS:-}
    [ "${UNION:-1}" = 1 ] || continue
    echo "== seed $seed: union reference rows $(date -u +%H:%M:%S)"
    # shellcheck disable=SC2086
    python -m kdlib study --scale "${SCALE:-full}" --quiet --seed "$seed" --set seeds=1 $UNION_SETS ${SETS:-}
done
echo "== done $(date -u +%H:%M:%S)"
