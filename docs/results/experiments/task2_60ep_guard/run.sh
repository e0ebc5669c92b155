#!/usr/bin/env bash
# The plan of README.md (this folder), step by step and resumable (what a step has made is kept):
#   bash docs/results/experiments/task2_60ep_guard/run.sh [fit|maps|shift|heldout|judge|posthoc ...]   (default: all)
# fit: the earlier trial's search plus --never-empty on,off --keep-most-confident off,1 on the 60-epoch members'
# out-of-fold maps (made again when missing); stops the trial when it chooses the earlier candidate again. maps: both
# releases' member maps on the decision seeds; shift: the fold-ensemble threshold transfer; heldout: both tables;
# judge: head to head; posthoc: the candidate on the earlier trial's seeds (reported only).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
RELEASE_COMMIT=c39ca16  # the release judged against: 36-epoch members, resources/task2.json (t 0.52)
SEEDS=1260-1279
EARLIER=$REPO/docs/results/experiments/task2_60ep
D=Dataset902_PhantomT2
W=$PANTHER_DATA/exp/task2_60ep_guard
W60=$PANTHER_DATA/exp/task2_60ep  # the earlier trial's work: out-of-fold, shift and 1240-1259 maps of these members
NEW=$EARLIER/candidate/model_weights  # the 60-epoch members (float16, committed)
REL=$W/release
BASE=$REL/docs/results/fit_task2/base.json
declare -A FOLDER=([default]=nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres
                   [DA5]=nnUNetTrainerPhantomDA5__nnUNetPlansPhantom__3d_fullres
                   [iso]=nnUNetTrainerPhantom__nnUNetPlansPhantomIso__3d_fullres)
# shellcheck disable=SC2054  # the commas are the options' own value lists
SEARCH=(--weight-step 0.2 --min-volumes off,500 --keep-largest off,1 --max-distances off,20  # FIT_SEARCH[2]
        --never-empty on,off --keep-most-confident off,1)
STEPS=${*:-fit maps shift heldout judge posthoc}
THREADS=${THREADS:-2}
LOG=$PANTHER_DATA/logs/exp_t2_60ep_guard
mkdir -p "$W" "$PANTHER_DATA/logs"
exp_unpack "$RELEASE_COMMIT" "$REL" model_weights/$D resources/task2.json docs/results/fit_task2/base.json

oof() { exp_oof "$NEW/$D/${FOLDER[$1]}" "$nnUNet_raw/$D" "$W60/oof/$1" "${LOG}_oof_$1.log"; }
heldout() {  # heldout MODEL_DIR SPEC OUT WORK THREADS [--stage maps]
  exp_heldout 2 "$SEEDS" "$1" "$BASE" "$2" "$3" "$4" "$5" "${@:6}"
}

for s in $STEPS; do
  case $s in
    fit)
      if [ ! -f "$W60/oof/iso/.complete" ]; then
        (cd "$REPO" && MODELS=shipped TASKS=2 training/reproduce.sh data)  # the training phantoms, seeds 0-59
        oof default & a=$!; oof DA5 & b=$!; wait "$a"; wait "$b"; oof iso
      fi
      exp_fit "$BASE" "$W60/oof" "$nnUNet_raw/$D/labelsTr" "$W/fit" "${FIT_THREADS:-$THREADS}" "${LOG}_fit.log" "${SEARCH[@]}"
      exp_keep_fit "$W/fit" "$HERE/fit"
      if exp_same_choice "$HERE/fit/spec.json" "$EARLIER/fit/spec.json"; then
        exp_stamp "fit: the earlier candidate's choice again; by the plan there is nothing to judge"
        exit 0
      fi ;;
    maps)
      exp_stamp "release member maps on seeds $SEEDS"
      heldout "$REL/model_weights" "$REL/resources/task2.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" \
        "${MAP_THREADS:-$THREADS}" --stage maps > "${LOG}_maps_release.log" 2>&1
      exp_stamp "60-epoch member maps on seeds $SEEDS"
      heldout "$NEW" "$REL/resources/task2.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" \
        "${MAP_THREADS:-$THREADS}" --stage maps > "${LOG}_maps_candidate.log" 2>&1 ;;
    shift)
      exp_shift 2 "$W/fit/spec.json" "$NEW" "$W60/shift" "$THREADS" "$HERE/candidate_task2.json" \
        "Task 2 candidate of docs/results/experiments/task2_60ep_guard: the 60-epoch members, fitted with the shipped search plus never_empty and keep_most_confident on their out-of-fold maps; not shipped unless judged" ;;
    heldout)
      heldout "$REL/model_weights" "$REL/resources/task2.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" "$THREADS"
      heldout "$NEW" "$HERE/candidate_task2.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" "$THREADS" ;;
    judge)
      exp_head_to_head "$W/heldout_candidate" "$W/heldout_release" candidate_guard release "$HERE/head_to_head_seeds$SEEDS" ;;
    posthoc)  # reported only: seeds 1240-1259 decided the earlier trial
      exp_share_maps "$W60/heldout_candidate" "$W/posthoc_1240-1259"
      exp_heldout 2 1240-1259 "$NEW" "$BASE" "$HERE/candidate_task2.json" "$HERE/posthoc_candidate_seeds1240-1259" \
        "$W/posthoc_1240-1259" "$THREADS" ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
exp_stamp "done"
