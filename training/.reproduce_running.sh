#!/usr/bin/env bash
# Reproduce the phantom specialists end to end on a CPU machine:
#   Task 1 data -> plan + cut-down plans + preprocessing -> Task 1 trainings (4 fold runs)
#   (meanwhile, in the background: Task 2 data -> plan + preprocessing)
#   -> Task 2 trainings (4 fold runs, initialised from Task 1) -> export -> summary, fixture, baseline, samples.
# Usage: training/reproduce.sh [STEP...]
#   steps: data1 plan1 data2 plan2 train1 train2 export fixture baseline samples   (default: all, in that order,
#   with data2+plan2 running in the background during train1)
# Bulk outputs go to $PANTHER_DATA (default /work/data); in the repo only model_weights/, tests/data/,
# test/ and training/{results.md,baseline_t*.json} change.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
source "$HERE/env.sh"
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results" "$PANTHER_DATA/logs"
LOGS=$PANTHER_DATA/logs
PE="$NNUNET_BIN/panther-ensemble"
T1_EPOCHS=${T1_EPOCHS:-24}     # x 50 iterations
T2_EPOCHS=${T2_EPOCHS:-8}      # x 50 iterations, initialised from the Task 1 specialist of the same kind and fold
T2_LR=${T2_LR:-0.005}
ALL="data1 plan1 data2 plan2 train1 train2 export fixture baseline samples"
STEPS=${*:-$ALL}
stamp() { echo "[$(date +%H:%M:%S)] $*"; }

data() {  # $1 = task; seeds 0-59 in two processes, merged
  local t=$1 D="Dataset90$1_PhantomT$1"
  stamp "generating $D"
  rm -rf "$nnUNet_raw/$D" "$PANTHER_DATA/tmp_gen_t$t"
  $PE phantom dataset --task $t --seeds 0-29 --out "$nnUNet_raw" --dataset-id 90$t --dataset-name PhantomT$t > "$LOGS/gen_t${t}_a.log" 2>&1 &
  local pid=$!
  $PE phantom dataset --task $t --seeds 30-59 --out "$PANTHER_DATA/tmp_gen_t$t" --dataset-id 90$t --dataset-name PhantomT$t > "$LOGS/gen_t${t}_b.log" 2>&1
  wait $pid
  mv "$PANTHER_DATA/tmp_gen_t$t/$D/imagesTr/"* "$nnUNet_raw/$D/imagesTr/"
  mv "$PANTHER_DATA/tmp_gen_t$t/$D/labelsTr/"* "$nnUNet_raw/$D/labelsTr/"
  rm -rf "$PANTHER_DATA/tmp_gen_t$t"
  $PY - "$nnUNet_raw/$D/dataset.json" "$t" <<'PY'
import json, sys
p, t = sys.argv[1], sys.argv[2]
d = json.load(open(p)); d["numTraining"] = 60
d["description"] = f"synthetic PANTHER Task {t} phantoms (panther_ensemble.phantoms), seeds 0-59"
json.dump(d, open(p, "w"), indent=2)
PY
}

plan() {  # $1 = task
  local t=$1
  stamp "planning Dataset90$t"
  $NNUNET_BIN/nnUNetv2_plan_and_preprocess -d 90$t -c 3d_fullres --verify_dataset_integrity --no_pp -np 2 > "$LOGS/plan_t$t.log" 2>&1
  if [ "$t" = 1 ]; then $PY "$HERE/make_plans.py" 901 3.0 2.0 2.0; else $PY "$HERE/make_plans.py" 902 2.0 2.0 2.0; fi
  $NNUNET_BIN/nnUNetv2_preprocess -d 90$t -plans_name nnUNetPlansPhantom -c 3d_fullres -np 2 > "$LOGS/preprocess_t$t.log" 2>&1
  touch "$nnUNet_preprocessed/Dataset90${t}_PhantomT$t/.phantom_ready"
}

m() { echo "$nnUNet_results/Dataset90$1_PhantomT$1/$2__nnUNetPlansPhantom__3d_fullres"; }
train1() {
  for tr in nnUNetTrainerPhantom nnUNetTrainerPhantomDA5; do
    for f in 0 1; do
      stamp "Task 1 $tr fold $f"
      $PY "$HERE/train_specialist.py" --dataset 901 --trainer $tr --fold $f --epochs $T1_EPOCHS > "$LOGS/train_t1_${tr}_f$f.log" 2>&1
    done
  done
}
train2() {
  while [ ! -f "$nnUNet_preprocessed/Dataset902_PhantomT2/.phantom_ready" ]; do sleep 30; done
  for tr in nnUNetTrainerPhantom nnUNetTrainerPhantomDA5; do
    for f in 0 1; do
      stamp "Task 2 $tr fold $f"
      $PY "$HERE/train_specialist.py" --dataset 902 --trainer $tr --fold $f --epochs $T2_EPOCHS --lr $T2_LR \
        --pretrained "$(m 1 $tr)/fold_$f/checkpoint_final.pth" > "$LOGS/train_t2_${tr}_f$f.log" 2>&1
    done
  done
}

has() { [[ " $STEPS " == *" $1 "* ]]; }
START=$(date +%s)
has data1 && data 1
has plan1 && plan 1
BG=""
if has data2 || has plan2; then
  if has train1; then  # Task 2 data in the background while Task 1 trains
    ( has data2 && data 2; has plan2 && plan 2 ) > "$LOGS/task2_prep.log" 2>&1 &
    BG=$!
  else
    has data2 && data 2
    has plan2 && plan 2
  fi
fi
has train1 && train1
[ -n "$BG" ] && wait $BG
has train2 && train2
if has export; then
  stamp "exporting"
  $PY "$HERE/export_weights.py" --dest "$REPO/model_weights" \
    "$(m 1 nnUNetTrainerPhantom)" "$(m 1 nnUNetTrainerPhantomDA5)" "$(m 2 nnUNetTrainerPhantom)" "$(m 2 nnUNetTrainerPhantomDA5)"
  $PY "$HERE/summarize.py" > "$HERE/results.md"
fi
if has fixture; then stamp "tiny real trainer fixture"; bash "$HERE/make_fixture.sh"; fi
if has baseline; then
  stamp "threshold baseline"
  for t in 1 2; do
    $PE phantom baseline --task $t --train-seeds 0-59 --test-seeds 1000-1011 --dataset-dir "$nnUNet_raw/Dataset90${t}_PhantomT$t" \
      --json "$HERE/baseline_t$t.json" > /dev/null
  done
fi
if has samples; then stamp "sample cases"; bash "$HERE/make_samples.sh"; fi
stamp "done in $(( ($(date +%s) - START) / 60 )) min"
