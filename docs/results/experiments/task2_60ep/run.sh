#!/usr/bin/env bash
# The plan of README.md (this folder), step by step and resumable (what a step has made is kept):
#   bash docs/results/experiments/task2_60ep/run.sh [build|maps|fit|shift|heldout|judge ...]   (default: all)
# build: the shipped 36-epoch Task 2 folds trained on to 60 epochs, exported into candidate/model_weights; maps: their
# out-of-fold maps, and both releases' member maps on the decision seeds; fit: the shipped Task 2 search on the
# candidate's maps; shift: the fold-ensemble threshold transfer; heldout: both tables on the decision seeds; judge:
# the candidate against the release, head to head.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
RELEASE_COMMIT=c39ca16  # the release judged against: 36-epoch members, resources/task2.json (t 0.52)
SEEDS=1240-1259
D=Dataset902_PhantomT2
W=$PANTHER_DATA/exp/task2_60ep
NEW=$HERE/candidate/model_weights  # the 60-epoch members (float16, committed once built)
REL=$W/release   # the release's files as committed (model_weights/, resources/task2.json, the fit's base spec)
BASE=$REL/docs/results/fit_task2/base.json  # the members of both releases (same names, models and folds)
declare -A FOLDER=([default]=nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres
                   [DA5]=nnUNetTrainerPhantomDA5__nnUNetPlansPhantom__3d_fullres
                   [iso]=nnUNetTrainerPhantom__nnUNetPlansPhantomIso__3d_fullres)
# shellcheck disable=SC2054  # the commas are the options' own value lists
SEARCH=(--weight-step 0.2 --min-volumes off,500 --keep-largest off,1 --max-distances off,20)  # FIT_SEARCH[2]
STEPS=${*:-build maps fit shift heldout judge}
THREADS=${THREADS:-2}
LOG=$PANTHER_DATA/logs/exp_t2_60ep
mkdir -p "$W" "$PANTHER_DATA/logs"
exp_unpack "$RELEASE_COMMIT" "$REL" model_weights/$D resources/task2.json docs/results/fit_task2/base.json

oof() { exp_oof "$NEW/$D/${FOLDER[$1]}" "$nnUNet_raw/$D" "$W/oof/$1" "${LOG}_oof_$1.log"; }
heldout() {  # heldout MODEL_DIR SPEC OUT WORK THREADS [--stage maps]
  exp_heldout 2 "$SEEDS" "$1" "$BASE" "$2" "$3" "$4" "$5" "${@:6}"
}

for s in $STEPS; do
  case $s in
    build)
      if [ -d "$NEW" ]; then exp_stamp "build: $NEW exists"; continue; fi
      # the seeds are the release's members: model_weights/ must still hold them (they stay until ship.sh)
      git -C "$REPO" diff --quiet "$RELEASE_COMMIT" -- "model_weights/$D"
      models=()
      for m in default DA5 iso; do models+=("$nnUNet_results/$D/${FOLDER[$m]}"); done
      # trained already (a resumed run): reproduce.sh would record a train step with nothing to do as a run
      if ! "$PY" -c 'import json, sys; sys.exit(0 if all(json.load(open(f"{m}/fold_{k}/phantom_timing.json"))["epochs"] >= 60
                     for m in sys.argv[1:] for k in (0, 1)) else 1)' "${models[@]}" 2> /dev/null; then
        (cd "$REPO" && T_EPOCHS=60 TASKS=2 training/reproduce.sh data plan seed train)
      fi
      "$PY" "$REPO/training/export_weights.py" --dest "$NEW.tmp" "${models[@]}"
      mv "$NEW.tmp" "$NEW" ;;
    maps)
      (cd "$REPO" && MODELS=shipped TASKS=2 training/reproduce.sh data)  # the training phantoms, seeds 0-59
      # two at a time, one thread each; the release's maps on the decision seeds beside the third
      oof default & a=$!; oof DA5 & b=$!; wait "$a"; wait "$b"
      oof iso & a=$!
      exp_stamp "release member maps on seeds $SEEDS"
      heldout "$REL/model_weights" "$REL/resources/task2.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" 1 \
        --stage maps > "${LOG}_maps_release.log" 2>&1
      wait "$a"
      exp_stamp "60-epoch member maps on seeds $SEEDS"
      heldout "$NEW" "$REL/resources/task2.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" "$THREADS" \
        --stage maps > "${LOG}_maps_candidate.log" 2>&1 ;;
    fit)
      exp_fit "$BASE" "$W/oof" "$nnUNet_raw/$D/labelsTr" "$W/fit" "$THREADS" "${LOG}_fit.log" "${SEARCH[@]}"
      exp_keep_fit "$W/fit" "$HERE/fit" ;;
    shift)
      exp_shift 2 "$W/fit/spec.json" "$NEW" "$W/shift" "$THREADS" "$HERE/candidate_task2.json" \
        "Task 2 candidate of docs/results/experiments/task2_60ep: the 36-epoch members trained on to 60 epochs, fitted with the shipped search on their out-of-fold maps; not shipped unless judged" ;;
    heldout)
      heldout "$REL/model_weights" "$REL/resources/task2.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" "$THREADS"
      heldout "$NEW" "$HERE/candidate_task2.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" "$THREADS" ;;
    judge)
      exp_head_to_head "$W/heldout_candidate" "$W/heldout_release" candidate_60ep release "$HERE/head_to_head_seeds$SEEDS" ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
exp_stamp "done"
