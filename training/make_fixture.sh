#!/usr/bin/env bash
# A tiny but REAL trainer-written nnU-Net checkpoint for the engine's safe-loader tests:
# plans nnUNetPlansTiny (features 2-4-8-16, patch 16x32x32) on Dataset901, nnUNetTrainerPhantom,
# 2 epochs x 2 iterations, fold 0, checkpoint kept exactly as the trainer wrote it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
source "$HERE/env.sh"
$PY "$HERE/make_plans.py" 901 3.0 2.0 2.0 --features 2,4,8,16 --patch 16,32,32 --plans-name nnUNetPlansTiny --no-splits
# same spacing as nnUNetPlansPhantom: reuse its preprocessed data under the tiny plans' identifier
PRE=$nnUNet_preprocessed/Dataset901_PhantomT1
rm -rf "$PRE/nnUNetPlansTiny_3d_fullres"
ln -s "$PRE/nnUNetPlansPhantom_3d_fullres" "$PRE/nnUNetPlansTiny_3d_fullres"
OUT=$nnUNet_results/Dataset901_PhantomT1/nnUNetTrainerPhantom__nnUNetPlansTiny__3d_fullres
rm -rf "$OUT"
$PY "$HERE/train_specialist.py" --dataset 901 --trainer nnUNetTrainerPhantom --plans nnUNetPlansTiny --fold 0 \
  --epochs 2 --iters 2 --val-iters 1 --skip-validation > "$PANTHER_DATA/logs/fixture.log" 2>&1
DST=$REPO/tests/data/real_trainer_model/nnUNetTrainerPhantom__nnUNetPlansTiny__3d_fullres
rm -rf "$DST"
mkdir -p "$DST/fold_0"
cp "$OUT/plans.json" "$OUT/dataset.json" "$DST/"
cp "$OUT/fold_0/checkpoint_final.pth" "$DST/fold_0/"
du -sh "$DST"
