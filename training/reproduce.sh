#!/usr/bin/env bash
# Reproduce the phantom specialists end to end on a CPU machine:
#   pre-training data (easier Task 1 phantoms, seeds 2000-2059) -> plan -> one pre-training run (fold all)
#   Task 1 data -> plan + cut-down plans + preprocessing -> Task 1 trainings (4 fold runs from the pre-trained net)
#   Task 2 data -> plan -> Task 2 trainings (4 fold runs, each from the Task 1 specialist of the same kind and fold)
#   -> export -> summary, fixture, baseline, samples.
# Usage: training/reproduce.sh [STEP...]
#   steps: data0 plan0 data1 plan1 data2 plan2 pretrain train1 train2 export fixture baseline samples
#   (default: all, in that order; data1 plan1 data2 plan2 run in the background during pretrain)
# Bulk outputs go to $PANTHER_DATA (default /work/data); in the repo only model_weights/, tests/data/,
# test/ and training/{results.md,baseline_t*.json} change.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
source "$HERE/env.sh"
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results" "$PANTHER_DATA/logs"
LOGS=$PANTHER_DATA/logs
PE="$NNUNET_BIN/panther-ensemble"
P_EPOCHS=${P_EPOCHS:-40}      # x 50 iterations, pre-training on Dataset903 (fold all)
T1_EPOCHS=${T1_EPOCHS:-10}     # x 50 iterations, initialised from the pre-trained network
T1_LR=${T1_LR:-0.005}
T2_EPOCHS=${T2_EPOCHS:-5}      # x 50 iterations, initialised from the Task 1 specialist of the same kind and fold
T2_LR=${T2_LR:-0.005}
ALL="data0 plan0 data1 plan1 data2 plan2 pretrain train1 train2 export fixture baseline samples"
STEPS=${*:-$ALL}
stamp() { echo "[$(date +%H:%M:%S)] $*"; }

# dataset per step: id, name, phantom task, first seed, extra generator options
declare -A DS_ID=([0]=903 [1]=901 [2]=902) DS_NAME=([0]=PhantomT1Pretrain [1]=PhantomT1 [2]=PhantomT2)
declare -A DS_TASK=([0]=1 [1]=1 [2]=2) DS_SEED0=([0]=2000 [1]=0 [2]=0) DS_OPT=([0]="--tumour-contrast-scale 4.5" [1]="" [2]="")
declare -A DS_SPACING=([0]="3.0 2.0 2.0" [1]="3.0 2.0 2.0" [2]="2.0 2.0 2.0") DS_SPLITS=([0]="--no-splits" [1]="" [2]="")

data() {  # $1 = 0, 1 or 2; 60 seeds in two processes, merged
  local k=$1 id=${DS_ID[$1]} t=${DS_TASK[$1]} a=${DS_SEED0[$1]}
  local D="Dataset${id}_${DS_NAME[$1]}"
  stamp "generating $D"
  rm -rf "$nnUNet_raw/$D" "$PANTHER_DATA/tmp_gen_$id"
  $PE phantom dataset --task $t --seeds $a-$((a + 29)) --out "$nnUNet_raw" --dataset-id $id --dataset-name ${DS_NAME[$k]} ${DS_OPT[$k]} > "$LOGS/gen_${id}_a.log" 2>&1 &
  local pid=$!
  $PE phantom dataset --task $t --seeds $((a + 30))-$((a + 59)) --out "$PANTHER_DATA/tmp_gen_$id" --dataset-id $id --dataset-name ${DS_NAME[$k]} ${DS_OPT[$k]} > "$LOGS/gen_${id}_b.log" 2>&1
  wait $pid
  mv "$PANTHER_DATA/tmp_gen_$id/$D/imagesTr/"* "$nnUNet_raw/$D/imagesTr/"
  mv "$PANTHER_DATA/tmp_gen_$id/$D/labelsTr/"* "$nnUNet_raw/$D/labelsTr/"
  rm -rf "$PANTHER_DATA/tmp_gen_$id"
  $PY - "$nnUNet_raw/$D/dataset.json" "$a-$((a + 59))" <<'PY'
import json, sys
p, seeds = sys.argv[1], sys.argv[2]
d = json.load(open(p)); d["numTraining"] = 60
d["description"] = d["description"].replace(d["description"].split("seeds ")[1].split(",")[0], seeds)
json.dump(d, open(p, "w"), indent=2)
PY
}

plan() {  # $1 = 0, 1 or 2
  local id=${DS_ID[$1]}
  stamp "planning Dataset$id"
  $NNUNET_BIN/nnUNetv2_plan_and_preprocess -d $id -c 3d_fullres --verify_dataset_integrity --no_pp -np 2 > "$LOGS/plan_$id.log" 2>&1
  $PY "$HERE/make_plans.py" $id ${DS_SPACING[$1]} ${DS_SPLITS[$1]}
  $NNUNET_BIN/nnUNetv2_preprocess -d $id -plans_name nnUNetPlansPhantom -c 3d_fullres -np 2 > "$LOGS/preprocess_$id.log" 2>&1
  touch "$nnUNet_preprocessed/Dataset${id}_${DS_NAME[$1]}/.phantom_ready"
}
wait_ready() { while [ ! -f "$nnUNet_preprocessed/Dataset${DS_ID[$1]}_${DS_NAME[$1]}/.phantom_ready" ]; do sleep 30; done; }

m() { echo "$nnUNet_results/Dataset90$1_PhantomT$1/$2__nnUNetPlansPhantom__3d_fullres"; }
PRE=$nnUNet_results/Dataset903_PhantomT1Pretrain/nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres/fold_all/checkpoint_final.pth
pretrain() {
  wait_ready 0
  stamp "pre-training on Dataset903 (fold all)"
  $PY "$HERE/train_specialist.py" --dataset 903 --trainer nnUNetTrainerPhantom --fold all --epochs $P_EPOCHS \
    --skip-validation > "$LOGS/pretrain_903.log" 2>&1
}
train1() {
  wait_ready 1
  for tr in nnUNetTrainerPhantom nnUNetTrainerPhantomDA5; do
    for f in 0 1; do  # the two folds side by side: on 2 cores this beats one run at a time
      stamp "Task 1 $tr fold $f"
      $PY "$HERE/train_specialist.py" --dataset 901 --trainer $tr --fold $f --epochs $T1_EPOCHS --lr $T1_LR \
        --pretrained "$PRE" > "$LOGS/train_t1_${tr}_f$f.log" 2>&1 &
    done
    wait
  done
}
train2() {
  wait_ready 2
  # all four at once; DA5 without nnU-Net's validation (30 cases per fold, ~25 min here): the Task 2 spec is
  # not fitted (training/README.md), so its out-of-fold maps would not be used
  for tr in nnUNetTrainerPhantom nnUNetTrainerPhantomDA5; do
    local skip=""
    [ $tr = nnUNetTrainerPhantomDA5 ] && skip="--skip-validation"
    for f in 0 1; do
      stamp "Task 2 $tr fold $f"
      $PY "$HERE/train_specialist.py" --dataset 902 --trainer $tr --fold $f --epochs $T2_EPOCHS --lr $T2_LR $skip \
        --pretrained "$(m 1 $tr)/fold_$f/checkpoint_final.pth" > "$LOGS/train_t2_${tr}_f$f.log" 2>&1 &
    done
  done
  wait
}

has() { [[ " $STEPS " == *" $1 "* ]]; }
START=$(date +%s)
has data0 && data 0
has plan0 && plan 0
BG=""
if has pretrain; then  # Task 1 and Task 2 data in the background while the pre-training runs
  ( for k in 1 2; do has data$k && data $k; has plan$k && plan $k; done; true ) > "$LOGS/task_data_bg.log" 2>&1 &
  BG=$!
else
  for k in 1 2; do has data$k && data $k; has plan$k && plan $k; done
fi
has pretrain && pretrain
[ -n "$BG" ] && wait $BG
has train1 && train1
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
