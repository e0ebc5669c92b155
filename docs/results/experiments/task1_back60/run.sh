#!/usr/bin/env bash
# The plan of README.md (this folder), step by step and resumable (what a step has made is kept):
#   bash docs/results/experiments/task1_back60/run.sh [maps|heldout|judge ...]   (default: all)
# maps: both releases' member maps on the decision seeds; heldout: both tables; judge: head to head, by the rule.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
CANDIDATE_COMMIT=eb74c8d  # the 60-epoch release (Task 1 unchanged from 4806f87 to eb2576e)
RELEASE_COMMIT=eb2576e    # the 84-epoch release, shipped now
SEEDS=1280-1299
D=Dataset901_PhantomT1
W=$PANTHER_DATA/exp/task1_back60
STEPS=${*:-maps heldout judge}
THREADS=${THREADS:-2}
LOG=$PANTHER_DATA/logs/exp_t1_back60
mkdir -p "$W" "$PANTHER_DATA/logs"
FILES=("model_weights/$D" resources/task1.json docs/results/fit_task1/base.json)
exp_unpack "$CANDIDATE_COMMIT" "$W/candidate" "${FILES[@]}"
exp_unpack "$RELEASE_COMMIT" "$W/release" "${FILES[@]}"
heldout() {  # heldout NAME [--stage maps]: one release's table on the decision seeds
  exp_heldout 1 "$SEEDS" "$W/$1/model_weights" "$W/$1/docs/results/fit_task1/base.json" "$W/$1/resources/task1.json" \
    "$HERE/heldout_$1_seeds$SEEDS" "$W/heldout_$1" "$THREADS" "${@:2}"
}
for s in $STEPS; do
  case $s in
    maps)
      for r in release candidate; do
        exp_stamp "$r member maps on seeds $SEEDS"
        heldout "$r" --stage maps > "${LOG}_maps_$r.log" 2>&1
      done ;;
    heldout)
      heldout release
      heldout candidate
      diff -r -q "$W/heldout_release/gt" "$W/heldout_candidate/gt" ;;
    judge)
      exp_head_to_head "$W/heldout_candidate" "$W/heldout_release" back_60ep release_84ep "$HERE/head_to_head_seeds$SEEDS"
      exp_rule_says_ship "$HERE/head_to_head_seeds$SEEDS" back_60ep release_84ep || true ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
exp_stamp "done"
