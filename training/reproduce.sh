#!/usr/bin/env bash
# Reproduce the phantom specialists end to end on a CPU machine:
# datasets -> plans -> cut-down plans -> preprocessing -> 8 fold trainings -> export -> fixture.
# Usage: training/reproduce.sh [STEP...]   (steps: data plan train export fixture baseline samples; default all)
# Bulk outputs go to $PANTHER_DATA (default /work/data); only model_weights/, tests/data/ and test/ change in the repo.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
source "$HERE/env.sh"
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results" "$PANTHER_DATA/logs"
LOGS=$PANTHER_DATA/logs
PE="$NNUNET_BIN/panther-ensemble"
TRAIN_SEEDS=0-59
T1_EPOCHS=${T1_EPOCHS:-24}     # x 50 iterations
T2_EPOCHS=${T2_EPOCHS:-8}      # x 50 iterations, initialised from the Task 1 specialist of the same kind and fold
T2_LR=${T2_LR:-0.005}
STEPS=${*:-data plan train export fixture baseline samples}
has() { [[ " $STEPS " == *" $1 "* ]]; }
stamp() { echo "[$(date +%H:%M:%S)] $*"; }

if has data; then
  stamp "generating datasets"
  for t in 1 2; do
    rm -rf "$nnUNet_raw/Dataset90${t}_PhantomT${t}"
    # two processes, then merge (generation is per seed and deterministic)
    $PE phantom dataset --task $t --seeds 0-29 --out "$nnUNet_raw" --dataset-id 90$t --dataset-name PhantomT$t > "$LOGS/gen_t${t}_a.log" 2>&1 &
    $PE phantom dataset --task $t --seeds 30-59 --out "$PANTHER_DATA/tmp_gen_t$t" --dataset-id 90$t --dataset-name PhantomT$t > "$LOGS/gen_t${t}_b.log" 2>&1
    wait
    mv "$PANTHER_DATA/tmp_gen_t$t/Dataset90${t}_PhantomT${t}/imagesTr/"* "$nnUNet_raw/Dataset90${t}_PhantomT${t}/imagesTr/"
    mv "$PANTHER_DATA/tmp_gen_t$t/Dataset90${t}_PhantomT${t}/labelsTr/"* "$nnUNet_raw/Dataset90${t}_PhantomT${t}/labelsTr/"
    rm -rf "$PANTHER_DATA/tmp_gen_t$t"
    # dataset.json for all 60 seeds
    $PY - "$t" <<'PY'
import json, os, sys
t = sys.argv[1]
p = os.path.join(os.environ["nnUNet_raw"], f"Dataset90{t}_PhantomT{t}", "dataset.json")
d = json.load(open(p)); d["numTraining"] = 60
d["description"] = f"synthetic PANTHER Task {t} phantoms (panther_ensemble.phantoms), seeds 0-59"
json.dump(d, open(p, "w"), indent=2)
PY
  done
fi

if has plan; then
  stamp "planning"
  $NNUNET_BIN/nnUNetv2_plan_and_preprocess -d 901 902 -c 3d_fullres --verify_dataset_integrity --no_pp -np 2 > "$LOGS/plan.log" 2>&1
  $PY "$HERE/make_plans.py" 901 3.0 2.0 2.0
  $PY "$HERE/make_plans.py" 902 2.0 2.0 2.0
  $NNUNET_BIN/nnUNetv2_preprocess -d 901 902 -plans_name nnUNetPlansPhantom -c 3d_fullres -np 2 > "$LOGS/preprocess.log" 2>&1
fi

R=$nnUNet_results
m() { echo "$R/Dataset90$1_PhantomT$1/$2__nnUNetPlansPhantom__3d_fullres"; }
if has train; then
  for tr in nnUNetTrainerPhantom nnUNetTrainerPhantomDA5; do
    for f in 0 1; do
      stamp "Task 1 $tr fold $f"
      $PY "$HERE/train_specialist.py" --dataset 901 --trainer $tr --fold $f --epochs $T1_EPOCHS > "$LOGS/train_t1_${tr}_f$f.log" 2>&1
    done
  done
  for tr in nnUNetTrainerPhantom nnUNetTrainerPhantomDA5; do
    for f in 0 1; do
      stamp "Task 2 $tr fold $f"
      $PY "$HERE/train_specialist.py" --dataset 902 --trainer $tr --fold $f --epochs $T2_EPOCHS --lr $T2_LR \
        --pretrained "$(m 1 $tr)/fold_$f/checkpoint_final.pth" > "$LOGS/train_t2_${tr}_f$f.log" 2>&1
    done
  done
fi

if has export; then
  stamp "exporting"
  $PY "$HERE/export_weights.py" --dest "$REPO/model_weights" \
    "$(m 1 nnUNetTrainerPhantom)" "$(m 1 nnUNetTrainerPhantomDA5)" "$(m 2 nnUNetTrainerPhantom)" "$(m 2 nnUNetTrainerPhantomDA5)"
  $PY "$HERE/summarize.py" > "$HERE/results.md"
fi

if has fixture; then
  stamp "tiny real trainer fixture"
  bash "$HERE/make_fixture.sh"
fi

if has baseline; then
  stamp "threshold baseline"
  for t in 1 2; do
    $PE phantom baseline --task $t --train-seeds $TRAIN_SEEDS --test-seeds 1000-1011 --json "$HERE/baseline_t$t.json" > /dev/null
  done
fi

if has samples; then
  stamp "sample cases"
  bash "$HERE/make_samples.sh"
fi
stamp "done"
