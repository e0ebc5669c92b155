#!/usr/bin/env bash
# The plan of README.md (this folder), step by step and resumable (what a step has made is kept):
#   bash docs/results/experiments/task1_84ep/run.sh [build|oof|fit|shift|maps|heldout|judge ...]   (default: all)
# build: the shipped Task 1 default and DA5 folds trained on from epoch 60 to 84 with the CPU levers, beside the iso
# folds that ../task1_iso84 trained the same way (its export, the same weights); oof: the out-of-fold maps (iso's are
# ../task1_iso84's); fit: the shipped Task 1 search; shift: the fold-ensemble threshold transfer; maps: both releases'
# member maps on the decision seeds; heldout: both tables; judge: head to head, by the rule of README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
RELEASE_COMMIT=eb74c8d  # the release judged against (Task 1 unchanged since 4806f87: 60-epoch members, keep most confident)
SEEDS=1260-1279
EPOCHS=84
D=Dataset901_PhantomT1
W=$PANTHER_DATA/exp/task1_84ep
WI=$PANTHER_DATA/exp/task1_iso84  # ../task1_iso84/run.sh: the iso folds at 84 epochs, their export and maps
RUNS=$W/nnUNet_results
REL=$W/release
BASE=$REL/docs/results/fit_task1/base.json
NEW=$HERE/candidate/model_weights          # the candidate's members, committed if the judge says ship ...
[ -d "$NEW" ] || NEW=$W/candidate/model_weights  # ... made by the build step
declare -A FOLDER=([default]=nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres
                   [DA5]=nnUNetTrainerPhantomDA5__nnUNetPlansPhantom__3d_fullres
                   [iso]=nnUNetTrainerPhantom__nnUNetPlansPhantomIso__3d_fullres)
declare -A TRAINER=([default]=nnUNetTrainerPhantom [DA5]=nnUNetTrainerPhantomDA5)
# shellcheck disable=SC2054  # the commas are the option's own value list
SEARCH=(--keep-most-confident off,1,2)  # FIT_SEARCH[1] of training/reproduce.sh at $RELEASE_COMMIT
STEPS=${*:-build oof fit shift maps heldout judge}
THREADS=${THREADS:-2}
LOG=$PANTHER_DATA/logs/exp_t1_84ep
mkdir -p "$W" "$RUNS" "$PANTHER_DATA/logs"
exp_unpack "$RELEASE_COMMIT" "$REL" "model_weights/$D" resources/task1.json docs/results/fit_task1/base.json

train_fold() {  # train_fold MEMBER FOLD: to $EPOCHS (training/experiment.sh)
  exp_train_fold "$RUNS" 901 "${TRAINER[$1]}" nnUNetPlansPhantom "$2" "$EPOCHS" "${LOG}_train_$1_f$2.log"
}
oof() { exp_oof "$NEW/$D/${FOLDER[$1]}" "$nnUNet_raw/$D" "$W/oof/$1" "${LOG}_oof_$1.log"; }
heldout() {  # heldout MODEL_DIR SPEC OUT WORK THREADS [--stage maps]
  exp_heldout 1 "$SEEDS" "$1" "$BASE" "$2" "$3" "$4" "$5" "${@:6}"
}

for s in $STEPS; do
  case $s in
    build)
      if [ -d "$NEW" ]; then exp_stamp "build: $NEW exists"; continue; fi
      if [ ! -d "$WI/candidate/model_weights/$D/${FOLDER[iso]}" ]; then
        echo "run.sh: the 84-epoch iso folds are missing: run docs/results/experiments/task1_iso84/run.sh build first" >&2
        exit 1
      fi
      (cd "$REPO" && TASKS=1 PRETRAINING_DATA=no TIMINGS_FILE="$W/timings.json" training/reproduce.sh data plan)
      models=()
      for m in default DA5; do
        for f in 0 1; do
          if [ ! -f "$RUNS/$D/${FOLDER[$m]}/fold_$f/seeded_from.json" ]; then
            nnUNet_results=$RUNS "$PY" "$REPO/training/seed_from_shipped.py" "$REL/model_weights/$D/${FOLDER[$m]}" \
              --folds "$f" --force >> "${LOG}_seed.log" 2>&1
          fi
        done
        exp_stamp "train $m, folds 0 and 1 side by side, 60 -> $EPOCHS epochs (bfloat16 autocast, channels_last)"
        t0=$(date +%s)
        train_fold "$m" 0 & a=$!; train_fold "$m" 1 & b=$!; wait "$a"; wait "$b"
        echo "{\"member\": \"$m\", \"epochs\": \"60 -> $EPOCHS\", \"wall_s\": $(( $(date +%s) - t0 ))}" >> "$W/train_wall.jsonl"
        models+=("$RUNS/$D/${FOLDER[$m]}")
      done
      cp "$W/train_wall.jsonl" "$HERE/train_wall.jsonl"
      rm -rf "$NEW.tmp"
      "$PY" "$REPO/training/export_weights.py" --dest "$NEW.tmp" "${models[@]}"
      cp -a "$WI/candidate/model_weights/$D/${FOLDER[iso]}" "$NEW.tmp/$D/"  # times kept: its maps stay current
      mv "$NEW.tmp" "$NEW" ;;
    oof)
      mkdir -p "$W/oof"
      if [ ! -e "$W/oof/iso" ]; then cp -a "$WI/oof/iso" "$W/oof/iso"; fi  # the same weights' maps
      oof default & a=$!; oof DA5 & b=$!; wait "$a"; wait "$b"
      oof iso ;;
    fit)
      exp_fit "$BASE" "$W/oof" "$nnUNet_raw/$D/labelsTr" "$W/fit" "$THREADS" "${LOG}_fit.log" "${SEARCH[@]}"
      exp_keep_fit "$W/fit" "$HERE/fit" ;;
    shift)
      exp_shift 1 "$W/fit/spec.json" "$NEW" "$W/shift" "$THREADS" "$HERE/candidate_task1.json" \
        "Task 1 candidate of docs/results/experiments/task1_84ep: the three members trained on to $EPOCHS epochs, fitted with the shipped search on their out-of-fold maps; not shipped unless judged" ;;
    maps)
      exp_stamp "release member maps on seeds $SEEDS"
      heldout "$REL/model_weights" "$REL/resources/task1.json" "$HERE/heldout_release_seeds$SEEDS" \
        "$W/heldout_release" "$THREADS" --stage maps > "${LOG}_maps_release.log" 2>&1
      exp_stamp "candidate member maps on seeds $SEEDS"
      heldout "$NEW" "$HERE/candidate_task1.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" \
        "$THREADS" --stage maps > "${LOG}_maps_candidate.log" 2>&1 ;;
    heldout)
      heldout "$REL/model_weights" "$REL/resources/task1.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" "$THREADS"
      heldout "$NEW" "$HERE/candidate_task1.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" "$THREADS"
      diff -r -q "$W/heldout_release/gt" "$W/heldout_candidate/gt" ;;
    judge)
      exp_head_to_head "$W/heldout_candidate" "$W/heldout_release" candidate_84ep release "$HERE/head_to_head_seeds$SEEDS"
      exp_rule_says_ship "$HERE/head_to_head_seeds$SEEDS" candidate_84ep release || true ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
exp_stamp "done"
