#!/usr/bin/env bash
# The confirmation of README.md (this folder): the post-hoc spec V against the shipped Task 2 spec on seeds 1220-1239,
# head to head on the same member maps. Resumable: evaluate_heldout.py keeps the maps it has made.
#   bash docs/results/experiments/keep_confident_task2/confirm.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
SEEDS=1220-1239
W=$PANTHER_DATA/exp/keep_confident_task2/confirm
BASE=$REPO/docs/results/fit_task2/base.json
heldout() {  # heldout SPEC OUT WORK
  "$PY" "$REPO/training/evaluate_heldout.py" --task 2 --seeds "$SEEDS" --work "$3" --threads "${THREADS:-2}" \
    --members-spec "$BASE" --spec "$1" --out "$2"
}
mkdir -p "$W/posthoc"
heldout "$HERE/release36ep_task2.json" "$HERE/confirm_release36ep_seeds$SEEDS" "$W/shipped"
for d in images gt maps; do ln -sfn "$W/shipped/$d" "$W/posthoc/$d"; done
heldout "$HERE/posthoc_keep_confident_task2.json" "$HERE/confirm_posthoc_seeds$SEEDS" "$W/posthoc"
"$NNUNET_BIN/panther-ensemble" evaluate --pred "$W/posthoc/pred/fitted" "$W/shipped/pred/fitted" \
  --names keep_confident shipped --gt "$W/shipped/gt" --bootstrap 2000 --reference shipped \
  --out "$HERE/confirm_head_to_head_seeds$SEEDS"
