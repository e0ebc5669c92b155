#!/usr/bin/env bash
# The trial of README.md (this folder), as amended on 2026-12-07 (the rebuild's members were lost with their
# machine): the shipped members' out-of-fold maps made twice, the networks in float32 and in bfloat16
# (PANTHER_FORWARD=cpu_autocast=bf16), each side fitted with reproduce.sh's own fit step. Resumable phase by phase
# (the oof step skips the maps it has written, the fit a fit newer than its maps):
#   bash docs/results/experiments/maps_bf16/run.sh [PHASE ...]   (default: data oof fit compare)
# data: the training phantoms (MODELS=shipped: Dataset901/902 only), made once and linked into the bf16 side;
# oof, fit: training/reproduce.sh's steps of those names with MODELS=shipped, float32 side first, each side in its
# own clone of this commit ($PANTHER_DATA/exp/maps_bf16/{f32,bf16}/repo, data beside it); compare: compare.py.
set -euo pipefail
# shellcheck source=../../../../training/run_from_copy.sh
source "${MAPS_BF16_HERE:-$(dirname "${BASH_SOURCE[0]}")}/../../../../training/run_from_copy.sh"
run_from_copy MAPS_BF16_HERE "$@"  # bash reads a script while it runs it, and this one runs for over an hour
HERE=$MAPS_BF16_HERE
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
PHASES="data oof fit compare"
STEPS=${*:-$PHASES}
# shellcheck disable=SC2086 # one word per phase
exp_check_phases "$PHASES" $STEPS  # a misspelt phase must fail now, not an hour in
DATA=${PANTHER_DATA:-/work/data}
W=$DATA/exp/maps_bf16
PY=$REPO/.venv/bin/python  # this repo's environment (the same pins) for the clones too
for side in f32 bf16; do
  exp_clone HEAD "$W/$side/repo"
  mkdir -p "$W/$side/data"
done
ln -sfn "$W/f32/data/nnUNet_raw" "$W/bf16/data/nnUNet_raw"  # the same phantoms on both sides, made once
side_step() {  # side_step SIDE STEP: reproduce.sh's STEP on the shipped members, in SIDE's clone and data folder
  local side=$1 step=$2 forward=cpu_autocast=off  # float32: stated, not left to a default
  if [ "$side" = bf16 ]; then forward=cpu_autocast=bf16; fi  # the one change (refused with one line where emulated)
  exp_stamp "$step ($side maps)"
  PY=$PY NNUNET_BIN=$REPO/.venv/bin PANTHER_DATA=$W/$side/data MODELS=shipped TIMINGS_FILE=$HERE/timings_$side.json \
    PYTHONPATH=$W/$side/repo/src${PYTHONPATH:+:$PYTHONPATH} PANTHER_FORWARD=$forward \
    bash "$W/$side/repo/training/reproduce.sh" "$step"
}
for s in $STEPS; do
  case $s in
    data) side_step f32 data ;;
    oof|fit) side_step f32 "$s"; side_step bf16 "$s" ;;
    compare)
      "$PY" "$HERE/compare.py" --float32 "$W/f32" --bf16 "$W/bf16" --timings "$HERE/timings_f32.json" \
        "$HERE/timings_bf16.json" --out "$HERE/compare"
      exp_stamp "wrote $HERE/compare.md" ;;
  esac
done
