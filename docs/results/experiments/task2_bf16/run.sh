#!/usr/bin/env bash
# The plan of README.md (this folder), step by step and resumable (what a step has made is kept):
#   bash docs/results/experiments/task2_bf16/run.sh [build|maps|fit|compare ...]   (default: all)
# build: the 36-epoch Task 2 folds (commit c39ca16) trained on to 60 epochs with the trainers' CPU levers (bfloat16
# autocast, channels_last), exactly as docs/results/experiments/task2_60ep trained the shipped float32 members but
# for the levers; maps: their out-of-fold maps; fit: the shipped Task 2 search on them; compare: against the shipped
# members' fit (docs/results/fit_task2/report.json), by the criterion of README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
SEED_COMMIT=c39ca16     # the 36-epoch Task 2 members that task2_60ep trained on to 60 epochs in float32
FP32_COMMIT=f2ae5a9     # those float32 60-epoch members and their fit, shipped
D=Dataset902_PhantomT2
W=$PANTHER_DATA/exp/task2_bf16
RUNS=$W/nnUNet_results  # this trial's nnU-Net runs, apart from the rebuild's $nnUNet_results
NEW=$W/candidate/model_weights
FP32=$W/fp32
declare -A FOLDER=([default]=nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres
                   [DA5]=nnUNetTrainerPhantomDA5__nnUNetPlansPhantom__3d_fullres
                   [iso]=nnUNetTrainerPhantom__nnUNetPlansPhantomIso__3d_fullres)
declare -A TRAINER=([default]=nnUNetTrainerPhantom [DA5]=nnUNetTrainerPhantomDA5 [iso]=nnUNetTrainerPhantom)
declare -A PLANS=([default]=nnUNetPlansPhantom [DA5]=nnUNetPlansPhantom [iso]=nnUNetPlansPhantomIso)
# shellcheck disable=SC2054  # the commas are the options' own value lists
SEARCH=(--weight-step 0.2 --min-volumes off,500 --keep-largest off,1 --max-distances off,20 --never-empty on,off
        --keep-most-confident off,1)  # FIT_SEARCH[2] of training/reproduce.sh, the shipped fit's
STEPS=${*:-build maps fit compare}
THREADS=${THREADS:-2}
LOG=$PANTHER_DATA/logs/exp_t2_bf16
mkdir -p "$W" "$RUNS" "$PANTHER_DATA/logs"
exp_unpack "$SEED_COMMIT" "$W/seed36" "model_weights/$D"
exp_unpack "$FP32_COMMIT" "$FP32" "model_weights/$D" docs/results/fit_task2/base.json docs/results/fit_task2/report.json

train_fold() {  # train_fold MEMBER FOLD: reproduce.sh's train step for one fold to 60 epochs (training/experiment.sh),
  # bfloat16 asked for by name (the trial's lever: a CPU without it stops the run instead of training in float32)
  exp_train_fold "$RUNS" 902 "${TRAINER[$1]}" "${PLANS[$1]}" "$2" 60 "${LOG}_train_$1_f$2.log" --cpu-autocast bf16
}
oof() { exp_oof "$NEW/$D/${FOLDER[$1]}" "$nnUNet_raw/$D" "$W/oof/$1" "${LOG}_oof_$1.log"; }

for s in $STEPS; do
  case $s in
    build)
      if [ -d "$NEW" ]; then exp_stamp "build: $NEW exists"; continue; fi
      # Dataset902 and its two plans only, timed apart from the rebuild's steps
      (cd "$REPO" && TASKS=2 PRETRAINING_DATA=no TIMINGS_FILE="$W/timings.json" training/reproduce.sh data plan)
      models=()
      for m in default DA5 iso; do
        for f in 0 1; do
          if [ ! -f "$RUNS/$D/${FOLDER[$m]}/fold_$f/seeded_from.json" ] || ! grep -q seed36 \
              "$RUNS/$D/${FOLDER[$m]}/fold_$f/seeded_from.json"; then
            nnUNet_results=$RUNS "$PY" "$REPO/training/seed_from_shipped.py" "$W/seed36/model_weights/$D/${FOLDER[$m]}" \
              --folds "$f" --force >> "${LOG}_seed.log" 2>&1
          fi
        done
        exp_stamp "train $m, folds 0 and 1 side by side (bfloat16 autocast, channels_last)"
        t0=$(date +%s)
        train_fold "$m" 0 & a=$!; train_fold "$m" 1 & b=$!; wait "$a"; wait "$b"
        echo "{\"member\": \"$m\", \"wall_s\": $(( $(date +%s) - t0 ))}" >> "$W/train_wall.jsonl"
        models+=("$RUNS/$D/${FOLDER[$m]}")
      done
      "$PY" "$REPO/training/export_weights.py" --dest "$NEW.tmp" "${models[@]}"
      mv "$NEW.tmp" "$NEW" ;;
    maps)
      oof default & a=$!; oof DA5 & b=$!; wait "$a"; wait "$b"
      oof iso ;;
    fit)
      exp_fit "$FP32/docs/results/fit_task2/base.json" "$W/oof" "$nnUNet_raw/$D/labelsTr" "$W/fit" "$THREADS" \
        "${LOG}_fit.log" "${SEARCH[@]}"
      exp_keep_fit "$W/fit" "$HERE/fit" ;;
    compare)
      cp "$W/train_wall.jsonl" "$HERE/train_wall.jsonl"
      "$PY" "$HERE/compare.py" "$FP32/docs/results/fit_task2/report.json" "$HERE/fit/report.json" "$RUNS/$D" \
        > "$HERE/compare.md"
      cat "$HERE/compare.md" ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
exp_stamp "done"
