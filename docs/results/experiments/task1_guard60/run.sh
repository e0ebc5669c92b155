#!/usr/bin/env bash
# The plan of README.md (this folder), step by step and resumable (what a step has made is kept):
#   bash docs/results/experiments/task1_guard60/run.sh [oof|fit|shift|maps|heldout|judge ...]   (default: all)
# oof: the shipped members' out-of-fold maps; fit: the shipped search plus --never-empty on,off (the trial ends when
# it chooses the shipped spec); shift: the threshold transfer; maps: both specs' member maps on the decision seeds;
# heldout: both tables; judge: head to head, by the rule of README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
RELEASE_COMMIT=d29d10c  # the release judged against: Task 1 back on eb74c8d's 60-epoch members and spec
SEEDS=1310-1329
D=Dataset901_PhantomT1
W=$PANTHER_DATA/exp/task1_guard60
WI=$PANTHER_DATA/exp/task1_iso84  # its default and DA5 out-of-fold maps are the shipped members'
REL=$W/release
BASE=$REL/docs/results/fit_task1/base.json
MODELS=$REL/model_weights
declare -A FOLDER=([default]=nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres
                   [DA5]=nnUNetTrainerPhantomDA5__nnUNetPlansPhantom__3d_fullres
                   [iso]=nnUNetTrainerPhantom__nnUNetPlansPhantomIso__3d_fullres)
# shellcheck disable=SC2054  # the commas are the options' own value lists
SEARCH=(--keep-most-confident off,1,2 --never-empty on,off)  # FIT_SEARCH[1] of training/reproduce.sh, plus the guard
STEPS=${*:-oof fit shift maps heldout judge}
THREADS=${THREADS:-2}
LOG=$PANTHER_DATA/logs/exp_t1_guard60
mkdir -p "$W" "$PANTHER_DATA/logs"
exp_unpack "$RELEASE_COMMIT" "$REL" "model_weights/$D" resources/task1.json docs/results/fit_task1/base.json
heldout() {  # heldout SPEC OUT WORK [--stage maps]
  exp_heldout 1 "$SEEDS" "$MODELS" "$BASE" "$1" "$2" "$3" "$THREADS" "${@:4}"
}
for s in $STEPS; do
  case $s in
    oof)
      mkdir -p "$W/oof"
      for m in default DA5; do
        if [ ! -e "$W/oof/$m" ]; then cp -a "$WI/oof/$m" "$W/oof/$m"; fi  # the same weights' maps
      done
      for m in default DA5; do  # task1_iso84 made those maps from these weights
        for f in 0 1; do
          cmp "$MODELS/$D/${FOLDER[$m]}/fold_$f/checkpoint_final.pth" \
            "$WI/candidate/model_weights/$D/${FOLDER[$m]}/fold_$f/checkpoint_final.pth"
        done
      done
      exp_oof "$MODELS/$D/${FOLDER[iso]}" "$nnUNet_raw/$D" "$W/oof/iso" "${LOG}_oof_iso.log" ;;
    fit)
      exp_fit "$BASE" "$W/oof" "$nnUNet_raw/$D/labelsTr" "$W/fit" "$THREADS" "${LOG}_fit.log" "${SEARCH[@]}"
      exp_keep_fit "$W/fit" "$HERE/fit"
      if exp_same_choice "$W/fit/spec.json" "$REPO/docs/results/fit_task1/spec.json"; then
        exp_stamp "the fit chose the shipped spec: nothing to judge, the trial ends here"; exit 0
      fi ;;
    shift)
      exp_shift 1 "$W/fit/spec.json" "$MODELS" "$W/shift" "$THREADS" "$HERE/candidate_task1.json" \
        "Task 1 candidate of docs/results/experiments/task1_guard60: the shipped 60-epoch members fitted with the shipped search plus the never-empty guard on their out-of-fold maps; not shipped unless judged" ;;
    maps)
      exp_stamp "release member maps on seeds $SEEDS"
      heldout "$REL/resources/task1.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" --stage maps \
        > "${LOG}_maps_release.log" 2>&1
      exp_stamp "candidate: the same members, another spec (the release's maps)"
      exp_share_maps "$W/heldout_release" "$W/heldout_candidate" ;;
    heldout)
      heldout "$REL/resources/task1.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release"
      heldout "$HERE/candidate_task1.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" ;;
    judge)
      exp_head_to_head "$W/heldout_candidate" "$W/heldout_release" candidate_guard release "$HERE/head_to_head_seeds$SEEDS"
      exp_rule_says_ship "$HERE/head_to_head_seeds$SEEDS" candidate_guard release || true ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
exp_stamp "done"
