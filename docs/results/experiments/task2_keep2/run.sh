#!/usr/bin/env bash
# The plan of README.md (this folder), step by step and resumable (what a step has made is kept):
#   bash docs/results/experiments/task2_keep2/run.sh [fit|maps|shift|heldout|judge|posthoc ...]   (default: all)
# fit: the shipped Task 2 search with --keep-largest off,1,2 --keep-most-confident off,1,2 on the shipped members'
# out-of-fold maps (made again when missing); stops the trial when it chooses the shipped spec again. maps: the
# members' maps on the decision seeds (one set: both specs have the same members); shift: the fold-ensemble
# threshold transfer; heldout: both tables; judge: head to head; posthoc: the candidate on seeds 1200-1239.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
RELEASE_COMMIT=f2ae5a9  # the release judged against: 60-epoch members, never-empty guard (t 0.55)
SEEDS=1280-1299
D=Dataset902_PhantomT2
W=$PANTHER_DATA/exp/task2_keep2
REL=$W/release
MODELS_DIR=$REL/model_weights  # the shipped members: candidate and release alike
BASE=$REL/docs/results/fit_task2/base.json
declare -A FOLDER=([default]=nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres
                   [DA5]=nnUNetTrainerPhantomDA5__nnUNetPlansPhantom__3d_fullres
                   [iso]=nnUNetTrainerPhantom__nnUNetPlansPhantomIso__3d_fullres)
# shellcheck disable=SC2054  # the commas are the options' own value lists
SEARCH=(--weight-step 0.2 --min-volumes off,500 --max-distances off,20 --never-empty on,off  # FIT_SEARCH[2] ...
        --keep-largest off,1,2 --keep-most-confident off,1,2)                               # ... widened here
STEPS=${*:-fit maps shift heldout judge posthoc}
THREADS=${THREADS:-2}
LOG=$PANTHER_DATA/logs/exp_t2_keep2
mkdir -p "$W" "$PANTHER_DATA/logs"
exp_unpack "$RELEASE_COMMIT" "$REL" model_weights/$D resources/task2.json docs/results/fit_task2/base.json \
  docs/results/fit_task2/spec.json

oof() { exp_oof "$MODELS_DIR/$D/${FOLDER[$1]}" "$nnUNet_raw/$D" "$W/oof/$1" "${LOG}_oof_$1.log"; }
heldout() {  # heldout SPEC OUT WORK THREADS [--stage maps]
  exp_heldout 2 "$SEEDS" "$MODELS_DIR" "$BASE" "$1" "$2" "$3" "$4" "${@:5}"
}

for s in $STEPS; do
  case $s in
    fit)
      if [ ! -f "$W/oof/iso/.complete" ]; then
        (cd "$REPO" && MODELS=shipped TASKS=2 training/reproduce.sh data)  # the training phantoms, seeds 0-59
        oof default & a=$!; oof DA5 & b=$!; wait "$a"; wait "$b"; oof iso
      fi
      exp_fit "$BASE" "$W/oof" "$nnUNet_raw/$D/labelsTr" "$W/fit" "${FIT_THREADS:-$THREADS}" "${LOG}_fit.log" "${SEARCH[@]}"
      exp_keep_fit "$W/fit" "$HERE/fit"
      if exp_same_choice "$HERE/fit/spec.json" "$REL/docs/results/fit_task2/spec.json"; then
        exp_stamp "fit: the shipped choice again; by the plan there is nothing to judge"
        exit 0
      fi ;;
    maps)
      exp_stamp "member maps on seeds $SEEDS"
      heldout "$REL/resources/task2.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" \
        "${MAP_THREADS:-$THREADS}" --stage maps > "${LOG}_maps.log" 2>&1
      exp_share_maps "$W/heldout_release" "$W/heldout_candidate" ;;
    shift)
      exp_shift 2 "$W/fit/spec.json" "$MODELS_DIR" "$W/shift" "$THREADS" "$HERE/candidate_task2.json" \
        "Task 2 candidate of docs/results/experiments/task2_keep2: the shipped members, fitted with the shipped search widened to two kept components; not shipped unless judged" ;;
    heldout)
      heldout "$REL/resources/task2.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" "$THREADS"
      heldout "$HERE/candidate_task2.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" "$THREADS" ;;
    judge)
      exp_head_to_head "$W/heldout_candidate" "$W/heldout_release" candidate_keep2 release "$HERE/head_to_head_seeds$SEEDS" ;;
    posthoc)  # reported only: seeds 1200-1239 prompted this trial
      for p in 1200-1219 1220-1239; do
        if [ -d "$PANTHER_DATA/exp/task2_60ep_guard/heldout_$p/maps" ] && [ ! -e "$W/posthoc_$p/maps" ]; then
          exp_share_maps "$PANTHER_DATA/exp/task2_60ep_guard/heldout_$p" "$W/posthoc_$p"
        fi
        exp_heldout 2 "$p" "$MODELS_DIR" "$BASE" "$HERE/candidate_task2.json" "$HERE/posthoc_candidate_seeds$p" \
          "$W/posthoc_$p" "$THREADS"
      done ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
exp_stamp "done"
