# shellcheck shell=bash
# The body of a timed rebuild from an empty folder (docs/results/experiments/rebuild_*/run.sh): training/reproduce.sh
# in a clone of this repo at the plan's commit, so that the shipped model_weights/, resources/ and tables of this repo
# are never written; resumable phase by phase (reproduce.sh skips what is done). Source it from the experiment's
# run.sh after run_from_copy, with HERE set to the experiment's folder and the experiment's own settings exported;
# it reads the script's arguments (the phases):
#   base: data plan pretrain (both tasks); train1, train2: one task's six specialist folds; rest: oof export fit
#   shift heldout baseline samples (both tasks), each of which is a phase of its own too, so that a session can stop
#   between two of them; collect: the clone's results copied into HERE/rebuilt (only once rest has ended).
# The clone and its data live in $PANTHER_DATA/exp/<the experiment folder's name>; every step's wall time goes to
# HERE/timings.json, one entry per step, summed over runs. COMMIT (default HEAD) is the plan's commit; a resumed
# run keeps the clone it made first.
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=experiment.sh
source "$REPO/training/experiment.sh"
REST="oof export fit shift heldout baseline samples"
PHASES="base train1 train2 rest $REST collect"
STEPS=${*:-base train1 train2 rest collect}
# shellcheck disable=SC2086 # one word per phase
exp_check_phases "$PHASES" $STEPS  # a misspelt phase must fail now, not hours in
COMMIT=${COMMIT:-HEAD}
W=${PANTHER_DATA:-/work/data}/exp/$(basename "$HERE")
CLONE=$W/repo
exp_clone "$COMMIT" "$CLONE"
# the clone runs this repo's environment (the same pins); its bulk data goes to $W/data, not to the
# shipped rebuild's $PANTHER_DATA folders
export PY=$REPO/.venv/bin/python NNUNET_BIN=$REPO/.venv/bin PANTHER_DATA=$W/data
# ... but the clone's own package, not the editable install's (this repo's working tree may have moved on between
# the sessions of one rebuild)
export PYTHONPATH=$CLONE/src${PYTHONPATH:+:$PYTHONPATH}
export TIMINGS_FILE=$HERE/timings.json
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
               training/baseline_t2.json model_weights; do
        if [ -e "$CLONE/$p" ]; then mkdir -p "$HERE/rebuilt/$(dirname "$p")"; rm -rf "${HERE:?}/rebuilt/$p"; cp -a "$CLONE/$p" "$HERE/rebuilt/$p"; fi
      done
      exp_stamp "collected into $HERE/rebuilt" ;;
  esac
done
