#!/usr/bin/env bash
# The timed rebuild of README.md (this folder): training/reproduce.sh from an empty folder, in a clone of this repo
# at the plan's commit (the shipped model_weights/, resources/ and tables of this repo are never written), with the
# CPU levers in pre-training too. Resumable phase by phase (reproduce.sh skips what is done):
#   bash docs/results/experiments/rebuild_levers/run.sh [PHASE ...]   (default: base train1 train2 rest collect)
# base: data plan pretrain (both tasks); train1, train2: one task's six specialist folds; rest: oof export fit
# shift heldout baseline samples (both tasks), each of which is a phase of its own too, so that a session can stop
# between two of them; collect: the clone's results copied here (only once rest has ended). Every step's wall time
# goes to timings.json (this folder), one entry per step, summed over runs.
set -euo pipefail
# shellcheck source=../../../../training/run_from_copy.sh
source "${REBUILD_LEVERS_HERE:-$(dirname "${BASH_SOURCE[0]}")}/../../../../training/run_from_copy.sh"
run_from_copy REBUILD_LEVERS_HERE "$@"  # bash reads a script while it runs it, and this one runs for hours
HERE=$REBUILD_LEVERS_HERE
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
REST="oof export fit shift heldout baseline samples"
PHASES="base train1 train2 rest $REST collect"
STEPS=${*:-base train1 train2 rest collect}
# shellcheck disable=SC2086 # one word per phase
exp_check_phases "$PHASES" $STEPS  # a misspelt phase must fail now, not hours in
COMMIT=${COMMIT:-HEAD}  # the plan's commit (README.md); a resumed run keeps the clone it made first
W=${PANTHER_DATA:-/work/data}/exp/rebuild_levers
CLONE=$W/repo
if [ ! -d "$CLONE/.git" ]; then
  exp_stamp "cloning $REPO at $COMMIT into $CLONE"
  git clone -q "$REPO" "$CLONE"
  git -C "$CLONE" checkout -q "$(git -C "$REPO" rev-parse "$COMMIT")"
fi
# the clone runs this repo's environment (the same pins); its bulk data goes to $W/data, not to the
# shipped rebuild's $PANTHER_DATA folders
export PY=$REPO/.venv/bin/python NNUNET_BIN=$REPO/.venv/bin PANTHER_DATA=$W/data
# ... but the clone's own package, not the editable install's (this repo's working tree may have moved on between
# the sessions of one rebuild)
export PYTHONPATH=$CLONE/src${PYTHONPATH:+:$PYTHONPATH}
export TIMINGS_FILE=$HERE/timings.json
# the one lever not yet tried: pre-training in bfloat16 with channels_last (the specialists use both by default)
export TRAIN_CPU_AUTOCAST=auto TRAIN_CHANNELS_LAST=on
R=$CLONE/training/reproduce.sh
for s in $STEPS; do
  case $s in
    base) exp_stamp "data plan pretrain"; bash "$R" data plan pretrain ;;
    train1) exp_stamp "Task 1 specialists"; TASKS=1 bash "$R" train ;;
    train2) exp_stamp "Task 2 specialists"; TASKS=2 bash "$R" train ;;
    rest)
      exp_stamp "$REST"
      # shellcheck disable=SC2086 # one word per step
      bash "$R" $REST ;;
    oof|export|fit|shift|heldout|baseline|samples) exp_stamp "$s"; bash "$R" "$s" ;;
    collect)
      if ! exp_has_step "$TIMINGS_FILE" samples; then  # rest's last step: until then the clone holds the shipped results
        echo "run.sh: collect before rest has ended ($TIMINGS_FILE has no 'samples' step): the clone still holds the shipped results" >&2
        exit 1
      fi
      mkdir -p "$HERE/rebuilt"
      for p in training/results.md docs/results/fit_task1 docs/results/fit_task2 docs/results/heldout_task1 \
               docs/results/heldout_task2 resources/task1.json resources/task2.json training/baseline_t1.json \
               training/baseline_t2.json; do
        if [ -e "$CLONE/$p" ]; then mkdir -p "$HERE/rebuilt/$(dirname "$p")"; rm -rf "${HERE:?}/rebuilt/$p"; cp -a "$CLONE/$p" "$HERE/rebuilt/$p"; fi
      done
      exp_stamp "collected into $HERE/rebuilt" ;;
  esac
done
