#!/usr/bin/env bash
# Pre-training stage 2 retried from a stage 1 whose tumour head never fired (README.md, this folder):
#   bash docs/results/experiments/pretrain_retry/run.sh REBUILD_DATA [VARIANT ...]   (default: fresh_heads lr005)
# REBUILD_DATA is the data folder of the rebuild whose stage 1 is meant (its nnUNet_preprocessed, and its stage 1's
# checkpoint_final.pth, which is copied first). Each variant trains stage 2 once, as reproduce.sh's pretrain step
# does, into its own nnUNet_results under $PANTHER_DATA/exp/pretrain_retry/<variant>. The pseudo Dice of every epoch
# goes to <variant>.json here.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
REBUILD_DATA=${1:?usage: run.sh REBUILD_DATA [VARIANT ...]}
shift
export nnUNet_preprocessed=$REBUILD_DATA/nnUNet_preprocessed nnUNet_raw=$REBUILD_DATA/nnUNet_raw
STAGE1=$REBUILD_DATA/nnUNet_results/Dataset903_PhantomPretrain/nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres/fold_all/checkpoint_final.pth
VARIANTS=${*:-fresh_heads lr005}
# shellcheck disable=SC2086 # one word per variant
exp_check_phases "fresh_heads lr005 same" $VARIANTS
W=$PANTHER_DATA/exp/pretrain_retry
mkdir -p "$W"
[ -f "$W/stage1_checkpoint_final.pth" ] || cp "$STAGE1" "$W/stage1_checkpoint_final.pth"
for v in $VARIANTS; do
  case $v in
    fresh_heads) args=(--fresh-heads) ;;  # stage 1's features, fresh segmentation heads, the trainer's rate 0.01
    lr005) args=(--lr 0.005) ;;           # every weight loaded (the recipe), the specialists' rate 0.005
    same) args=() ;;                      # the recipe's own stage 2, once more
  esac
  out=$W/$v
  if [ -f "$HERE/$v.json" ]; then exp_stamp "$v: done ($HERE/$v.json)"; continue; fi
  exp_stamp "$v: stage 2 from $STAGE1 ${args[*]}"
  rc=0
  nnUNet_results=$out OMP_NUM_THREADS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) "$PY" "$REPO/training/train_specialist.py" --dataset 903 \
    --trainer nnUNetTrainerPhantomTumourFocus --fold all --epochs "${P2_EPOCHS:-24}" "${args[@]}" \
    --pretrained "$W/stage1_checkpoint_final.pth" --cpu-autocast auto --channels-last on --skip-validation \
    --device cpu --require-pseudo-dice tumor=0.1 >> "$W/$v.log" 2>&1 || rc=$?
  if (( rc != 0 && rc != 3 )); then echo "run.sh: $v failed (status $rc), see $W/$v.log" >&2; exit "$rc"; fi
  "$PY" - "$W/$v.log" "$HERE/$v.json" "$rc" "${args[*]}" <<'PY'
import json, re, sys
log, out, rc, args = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
dice = [[float(x) for x in re.findall(r"np\.float32\(([^)]*)\)", line)]  # float() reads nan too
        for line in open(log) if "Pseudo dice" in line]
tumour = [d[0] for d in dice]
json.dump({"args": args, "learned": rc == 0, "epochs": len(dice), "tumour_pseudo_dice": tumour,
           "pancreas_pseudo_dice": [d[1] for d in dice],
           "tumour_last5_mean": round(sum(tumour[-5:]) / max(1, len(tumour[-5:])), 4)},
          open(out, "w"), indent=1)
print(out, "learned" if rc == 0 else "did not learn", "tumour last 5:", tumour[-5:])
PY
done
