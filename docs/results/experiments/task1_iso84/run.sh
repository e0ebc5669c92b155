#!/usr/bin/env bash
# The plan of README.md (this folder), step by step and resumable (what a step has made is kept):
#   bash docs/results/experiments/task1_iso84/run.sh [build|oof|fit|shift|maps|heldout|judge ...]   (default: all)
# build: the shipped Task 1 iso folds trained on from epoch 60 to 84 with the CPU levers; the candidate's members are
# the release's default and DA5 and that iso. oof: the three members' out-of-fold maps; fit: the shipped Task 1
# search on them; shift: the fold-ensemble threshold transfer; maps: the release's member maps and the new iso's on
# the decision seeds (default and DA5 are the same weights in both: their maps are made once); heldout: both tables;
# judge: the candidate against the release, head to head, by the rule of README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
RELEASE_COMMIT=eb74c8d  # the release judged against (Task 1 unchanged since 4806f87: 60-epoch members, keep most confident)
SEEDS=1240-1259
EPOCHS=84
D=Dataset901_PhantomT1
W=$PANTHER_DATA/exp/task1_iso84
RUNS=$W/nnUNet_results  # this trial's nnU-Net runs, apart from the rebuild's $nnUNet_results
REL=$W/release          # the release's files as committed (model_weights/, resources/task1.json, the fit's base spec)
BASE=$REL/docs/results/fit_task1/base.json
NEW=$HERE/candidate/model_weights          # the candidate's members, committed if the judge says ship ...
[ -d "$NEW" ] || NEW=$W/candidate/model_weights  # ... made by the build step
ISO=nnUNetTrainerPhantom__nnUNetPlansPhantomIso__3d_fullres
declare -A FOLDER=([default]=nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres
                   [DA5]=nnUNetTrainerPhantomDA5__nnUNetPlansPhantom__3d_fullres [iso]=$ISO)
# shellcheck disable=SC2054  # the commas are the option's own value list
SEARCH=(--keep-most-confident off,1,2)  # FIT_SEARCH[1] of training/reproduce.sh at $RELEASE_COMMIT
STEPS=${*:-build oof fit shift maps heldout judge}
THREADS=${THREADS:-2}
LOG=$PANTHER_DATA/logs/exp_t1_iso84
mkdir -p "$W" "$RUNS" "$PANTHER_DATA/logs"
exp_unpack "$RELEASE_COMMIT" "$REL" "model_weights/$D" resources/task1.json docs/results/fit_task1/base.json

train_fold() {  # train_fold FOLD: the iso member's fold to $EPOCHS (training/experiment.sh)
  exp_train_fold "$RUNS" 901 nnUNetTrainerPhantom nnUNetPlansPhantomIso "$1" "$EPOCHS" "${LOG}_train_iso_f$1.log"
}
oof() { exp_oof "$NEW/$D/${FOLDER[$1]}" "$nnUNet_raw/$D" "$W/oof/$1" "${LOG}_oof_$1.log"; }
heldout() {  # heldout MODEL_DIR MEMBERS_SPEC SPEC OUT WORK THREADS [--stage maps]
  exp_heldout 1 "$SEEDS" "$1" "$2" "$3" "$4" "$5" "$6" "${@:7}"
}
candidate_work() {  # the candidate's held-out work folder: the release's phantoms and default/DA5 maps, its own iso maps
  local c=$W/heldout_candidate r=$W/heldout_release d
  mkdir -p "$c/maps"
  for d in images gt; do ln -sfn "$r/$d" "$c/$d"; done
  for d in default DA5; do ln -sfn "$r/maps/$d" "$c/maps/$d"; done
  "$PY" -c 'import json, sys; s = json.load(open(sys.argv[1])); s["members"] = [m for m in s["members"] if m["name"] == "iso"]
print(json.dumps(s, indent=2))' "$BASE" > "$W/iso_only.json"
}

for s in $STEPS; do
  case $s in
    build)
      if [ -d "$NEW" ]; then exp_stamp "build: $NEW exists"; continue; fi
      # Dataset901 and its two plans only (the rebuild's recipe), timed apart from the rebuild's steps
      (cd "$REPO" && TASKS=1 PRETRAINING_DATA=no TIMINGS_FILE="$W/timings.json" training/reproduce.sh data plan)
      for f in 0 1; do
        if [ ! -f "$RUNS/$D/$ISO/fold_$f/checkpoint_final.pth" ]; then
          nnUNet_results=$RUNS "$PY" "$REPO/training/seed_from_shipped.py" "$REL/model_weights/$D/$ISO" --folds "$f" \
            >> "${LOG}_seed.log" 2>&1
        fi
      done
      exp_stamp "train iso, folds 0 and 1 side by side, 60 -> $EPOCHS epochs (bfloat16 autocast, channels_last)"
      t0=$(date +%s)
      train_fold 0 & a=$!; train_fold 1 & b=$!; wait "$a"; wait "$b"
      echo "{\"member\": \"iso\", \"epochs\": \"60 -> $EPOCHS\", \"wall_s\": $(( $(date +%s) - t0 ))}" >> "$W/train_wall.jsonl"
      cp "$W/train_wall.jsonl" "$HERE/train_wall.jsonl"
      rm -rf "$NEW.tmp"
      "$PY" "$REPO/training/export_weights.py" --dest "$NEW.tmp" "$RUNS/$D/$ISO"
      # the release's default and DA5 beside it, times kept (maps made from them since stay current)
      for m in default DA5; do cp -a "$REL/model_weights/$D/${FOLDER[$m]}" "$NEW.tmp/$D/"; done
      mv "$NEW.tmp" "$NEW" ;;
    oof)
      oof default & a=$!; oof DA5 & b=$!; wait "$a"; wait "$b"
      oof iso ;;
    fit)
      exp_fit "$BASE" "$W/oof" "$nnUNet_raw/$D/labelsTr" "$W/fit" "$THREADS" "${LOG}_fit.log" "${SEARCH[@]}"
      exp_keep_fit "$W/fit" "$HERE/fit" ;;
    shift)
      exp_shift 1 "$W/fit/spec.json" "$NEW" "$W/shift" "$THREADS" "$HERE/candidate_task1.json" \
        "Task 1 candidate of docs/results/experiments/task1_iso84: the release's default and DA5 with the iso member trained on to $EPOCHS epochs, fitted with the shipped search on their out-of-fold maps; not shipped unless judged" ;;
    maps)
      exp_stamp "release member maps on seeds $SEEDS"
      heldout "$REL/model_weights" "$BASE" "$REL/resources/task1.json" "$HERE/heldout_release_seeds$SEEDS" \
        "$W/heldout_release" "$THREADS" --stage maps > "${LOG}_maps_release.log" 2>&1
      exp_stamp "candidate iso maps on seeds $SEEDS"
      candidate_work
      heldout "$NEW" "$W/iso_only.json" "$W/iso_only.json" "$HERE/heldout_candidate_seeds$SEEDS" \
        "$W/heldout_candidate" "$THREADS" --stage maps > "${LOG}_maps_candidate.log" 2>&1 ;;
    heldout)
      heldout "$REL/model_weights" "$BASE" "$REL/resources/task1.json" "$HERE/heldout_release_seeds$SEEDS" \
        "$W/heldout_release" "$THREADS"
      heldout "$NEW" "$BASE" "$HERE/candidate_task1.json" "$HERE/heldout_candidate_seeds$SEEDS" \
        "$W/heldout_candidate" "$THREADS" ;;
    judge)
      exp_head_to_head "$W/heldout_candidate" "$W/heldout_release" candidate_iso84 release "$HERE/head_to_head_seeds$SEEDS"
      exp_rule_says_ship "$HERE/head_to_head_seeds$SEEDS" candidate_iso84 release || true ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
exp_stamp "done"
