#!/usr/bin/env bash
# The trial of README.md (this folder): the rebuild's out-of-fold maps made again with the networks in bfloat16
# (PANTHER_FORWARD=cpu_autocast=bf16) and fitted with the rebuild's own fit step, beside the float32 ones of
# docs/results/experiments/rebuild_levers. Resumable phase by phase (the oof step skips the maps it has written):
#   bash docs/results/experiments/maps_bf16/run.sh [PHASE ...]   (default: oof fit compare)
# oof, fit: training/reproduce.sh's steps of those names, in a second clone of the rebuild's commit whose data folder
# links the rebuild's datasets and trained members, so that nothing of the rebuild is written; compare: compare.py.
set -euo pipefail
# shellcheck source=../../../../training/run_from_copy.sh
source "${MAPS_BF16_HERE:-$(dirname "${BASH_SOURCE[0]}")}/../../../../training/run_from_copy.sh"
run_from_copy MAPS_BF16_HERE "$@"  # bash reads a script while it runs it, and this one runs for hours
HERE=$MAPS_BF16_HERE
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
PHASES="oof fit compare"
STEPS=${*:-$PHASES}
# shellcheck disable=SC2086 # one word per phase
exp_check_phases "$PHASES" $STEPS  # a misspelt phase must fail now, not an hour in
DATA=${PANTHER_DATA:-/work/data}
SRC=$DATA/exp/rebuild_levers
W=$DATA/exp/maps_bf16
SRC_TIMINGS=$REPO/docs/results/experiments/rebuild_levers/timings.json
PY=$REPO/.venv/bin/python  # this repo's environment (the same pins) for the clone too
for step in oof fit; do  # the float32 side must be complete: the trained members, its maps and its fit
  if ! exp_has_step "$SRC_TIMINGS" "$step"; then
    echo "run.sh: the rebuild (docs/results/experiments/rebuild_levers) has not run its '$step' step yet ($SRC_TIMINGS)" >&2
    exit 1
  fi
done
CLONE=$W/repo
if [ ! -d "$CLONE/.git" ]; then
  commit=$(git -C "$SRC/repo" rev-parse HEAD)
  exp_stamp "cloning $REPO at $commit (the rebuild's commit) into $CLONE"
  git clone -q --no-checkout "$REPO" "$CLONE"
  git -C "$CLONE" checkout -q "$commit"
fi
mkdir -p "$W/data"
for d in nnUNet_raw nnUNet_preprocessed nnUNet_results; do  # read only: the rebuild's datasets, splits and members
  ln -sfn "$SRC/data/$d" "$W/data/$d"
done
export PY NNUNET_BIN=$REPO/.venv/bin PANTHER_DATA=$W/data
export PYTHONPATH=$CLONE/src${PYTHONPATH:+:$PYTHONPATH}
export TIMINGS_FILE=$HERE/timings.json
# the one change: the networks' forward in bfloat16 (refused with one line where the CPU would emulate it)
export PANTHER_FORWARD=cpu_autocast=bf16
for s in $STEPS; do
  case $s in
    oof|fit) exp_stamp "$s (bfloat16 maps)"; bash "$CLONE/training/reproduce.sh" "$s" ;;
    compare)
      "$PY" "$HERE/compare.py" --float32 "$SRC" --bf16 "$W" --timings "$SRC_TIMINGS" "$TIMINGS_FILE" --out "$HERE/compare"
      exp_stamp "wrote $HERE/compare.md" ;;
  esac
done
