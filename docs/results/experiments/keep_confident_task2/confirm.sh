#!/usr/bin/env bash
# The confirmation of README.md (this folder): the post-hoc spec V against the shipped Task 2 spec on seeds 1220-1239,
# head to head on the same member maps. Resumable: evaluate_heldout.py keeps the maps it has made.
#   bash docs/results/experiments/keep_confident_task2/confirm.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
SEEDS=1220-1239
W=$PANTHER_DATA/exp/keep_confident_task2/confirm
BASE=$REPO/docs/results/fit_task2/base.json
heldout() {  # heldout SPEC OUT WORK
  exp_heldout 2 "$SEEDS" "$REPO/model_weights" "$BASE" "$1" "$2" "$3" "${THREADS:-2}"
}
heldout "$HERE/release36ep_task2.json" "$HERE/confirm_release36ep_seeds$SEEDS" "$W/shipped"
exp_share_maps "$W/shipped" "$W/posthoc"
heldout "$HERE/posthoc_keep_confident_task2.json" "$HERE/confirm_posthoc_seeds$SEEDS" "$W/posthoc"
exp_head_to_head "$W/posthoc" "$W/shipped" keep_confident shipped "$HERE/confirm_head_to_head_seeds$SEEDS"
