#!/usr/bin/env bash
# The plan of README.md (this folder), step by step and resumable (maps and fits already made are kept):
#   bash docs/results/experiments/task1_60ep_confident/run.sh [maps|fit|shift|heldout|judge ...]   (default: all)
# maps: the training phantoms, the 60-epoch members' out-of-fold maps, and both releases' member maps on the
# decision seeds; fit: the shipped Task 1 search on the 60-epoch maps; shift: the fold-ensemble threshold transfer;
# heldout: both tables on the decision seeds; judge: the candidate against the release, head to head.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
CANDIDATE_COMMIT=73ff311  # the 60-epoch float16 members (docs/results/experiments/task1_60ep/candidate/model_weights)
RELEASE_COMMIT=b1a515c    # the release judged against: 36-epoch members, keep the most confident component
SEEDS=1220-1239
D=Dataset901_PhantomT1
W=$PANTHER_DATA/exp/task1_60ep_confident
NEW=$W/model_weights
REL=$W/release   # the release's files as committed (model_weights/, resources/task1.json, the fit's base spec)
BASE=$REL/docs/results/fit_task1/base.json  # the members of both releases (same names, models and folds)
declare -A FOLDER=([default]=nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres
                   [DA5]=nnUNetTrainerPhantomDA5__nnUNetPlansPhantom__3d_fullres
                   [iso]=nnUNetTrainerPhantom__nnUNetPlansPhantomIso__3d_fullres)
# shellcheck disable=SC2054  # the commas are the option's own value list
SEARCH=(--keep-most-confident off,1,2)  # FIT_SEARCH[1] of training/reproduce.sh at $RELEASE_COMMIT
STEPS=${*:-maps fit shift heldout judge}
THREADS=${THREADS:-2}
mkdir -p "$W" "$PANTHER_DATA/logs"

exp_unpack "$RELEASE_COMMIT" "$REL" model_weights/$D resources/task1.json docs/results/fit_task1/base.json
if [ ! -d "$NEW" ]; then
  exp_unpack "$CANDIDATE_COMMIT" "$W/candidate_files" docs/results/experiments/task1_60ep/candidate/model_weights
  mv "$W/candidate_files/docs/results/experiments/task1_60ep/candidate/model_weights" "$NEW"
  rm -rf "$W/candidate_files"
fi

oof() { exp_oof "$NEW/$D/${FOLDER[$1]}" "$nnUNet_raw/$D" "$W/oof/$1" "$PANTHER_DATA/logs/exp60c_oof_$1.log"; }
heldout() {  # heldout MODEL_DIR SPEC OUT WORK THREADS [--stage maps]: evaluate_heldout.py on the decision seeds
  exp_heldout 1 "$SEEDS" "$1" "$BASE" "$2" "$3" "$4" "$5" "${@:6}"
}

for s in $STEPS; do
  case $s in
    maps)
      exp_stamp "training phantoms"
      (cd "$REPO" && MODELS=shipped TASKS=1 training/reproduce.sh data)
      # two at a time, one thread each; the release's maps on the decision seeds beside the third
      oof default & a=$!; oof DA5 & b=$!; wait "$a"; wait "$b"
      oof iso & a=$!
      exp_stamp "release member maps on seeds $SEEDS"
      heldout "$REL/model_weights" "$REL/resources/task1.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" 1 \
        --stage maps > "$PANTHER_DATA/logs/exp60c_maps_release.log" 2>&1
      wait "$a"
      exp_stamp "60-epoch member maps on seeds $SEEDS"
      heldout "$NEW" "$REL/resources/task1.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" "$THREADS" \
        --stage maps > "$PANTHER_DATA/logs/exp60c_maps_candidate.log" 2>&1 ;;
    fit)
      exp_fit "$BASE" "$W/oof" "$nnUNet_raw/$D/labelsTr" "$W/fit" "$THREADS" "$PANTHER_DATA/logs/exp60c_fit.log" "${SEARCH[@]}"
      exp_keep_fit "$W/fit" "$HERE/fit" ;;
    shift)
      exp_shift 1 "$W/fit/spec.json" "$NEW" "$W/shift" "$THREADS" "$HERE/candidate_task1.json" \
        "Task 1 candidate of docs/results/experiments/task1_60ep_confident: the 60-epoch members (commit 73ff311), fitted with the shipped search on their out-of-fold maps; not shipped unless judged" ;;
    heldout)
      heldout "$REL/model_weights" "$REL/resources/task1.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" "$THREADS"
      heldout "$NEW" "$HERE/candidate_task1.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" "$THREADS"
      diff -r -q "$W/heldout_release/gt" "$W/heldout_candidate/gt" ;;  # the same phantoms, or the comparison means nothing
    judge)
      exp_head_to_head "$W/heldout_candidate" "$W/heldout_release" candidate_60ep release "$HERE/head_to_head_seeds$SEEDS" ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
exp_stamp "done"
