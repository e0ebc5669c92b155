#!/usr/bin/env bash
# The plan of README.md (this folder), step by step and resumable (what a step has made is kept):
#   bash docs/results/experiments/task2_bf16_release/run.sh [shift|maps|heldout|judge ...]   (default: all)
# The candidate is the bfloat16-trained Task 2 members of ../task2_bf16 (run.sh build there; their float16 export in
# $PANTHER_DATA) with the spec fitted on their out-of-fold maps (../task2_bf16/fit/spec.json). shift: the fold-ensemble
# threshold transfer; maps: both releases' member maps on the decision seeds; heldout: both tables; judge: head to head.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
RELEASE_COMMIT=f2ae5a9  # the release judged against: float32 60-epoch members, never-empty guard (t 0.55)
SEEDS=1280-1299
D=Dataset902_PhantomT2
W=$PANTHER_DATA/exp/task2_bf16_release
NEW=$HERE/candidate/model_weights  # the candidate members, committed after the judge said ship ...
[ -d "$NEW" ] || NEW=$PANTHER_DATA/exp/task2_bf16/candidate/model_weights  # ... made by ../task2_bf16/run.sh build
FITTED=$REPO/docs/results/experiments/task2_bf16/fit/spec.json
REL=$W/release
BASE=$REL/docs/results/fit_task2/base.json
STEPS=${*:-shift maps heldout judge}
THREADS=${THREADS:-2}
LOG=$PANTHER_DATA/logs/exp_t2_bf16_release
mkdir -p "$W" "$PANTHER_DATA/logs"
exp_unpack "$RELEASE_COMMIT" "$REL" model_weights/$D resources/task2.json docs/results/fit_task2/base.json
if [ ! -d "$NEW" ]; then
  echo "run.sh: $NEW is missing: run docs/results/experiments/task2_bf16/run.sh build first" >&2
  exit 1
fi

heldout() {  # heldout MODEL_DIR SPEC OUT WORK THREADS [--stage maps]
  exp_heldout 2 "$SEEDS" "$1" "$BASE" "$2" "$3" "$4" "$5" "${@:6}"
}

for s in $STEPS; do
  case $s in
    shift)
      exp_shift 2 "$FITTED" "$NEW" "$W/shift" "$THREADS" "$HERE/candidate_task2.json" \
        "Task 2 candidate of docs/results/experiments/task2_bf16_release: the bfloat16-trained members of task2_bf16, with the spec the shipped search fitted on their out-of-fold maps; not shipped unless judged" ;;
    maps)
      exp_stamp "release member maps on seeds $SEEDS"
      heldout "$REL/model_weights" "$REL/resources/task2.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" \
        "$THREADS" --stage maps > "${LOG}_maps_release.log" 2>&1
      exp_stamp "candidate member maps on seeds $SEEDS"
      heldout "$NEW" "$HERE/candidate_task2.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" \
        "$THREADS" --stage maps > "${LOG}_maps_candidate.log" 2>&1 ;;
    heldout)
      heldout "$REL/model_weights" "$REL/resources/task2.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" "$THREADS"
      heldout "$NEW" "$HERE/candidate_task2.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" "$THREADS" ;;
    judge)
      exp_head_to_head "$W/heldout_candidate" "$W/heldout_release" candidate_bf16 release "$HERE/head_to_head_seeds$SEEDS"
      exp_rule_says_ship "$HERE/head_to_head_seeds$SEEDS" candidate_bf16 release || true ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
exp_stamp "done"
