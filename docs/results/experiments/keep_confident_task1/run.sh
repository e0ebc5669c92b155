#!/usr/bin/env bash
# The plan of README.md (keep_confident_task1/, or keep_confident_task2/ with TASK=2), step by step and resumable (a
# step whose output exists is skipped):
#   [TASK=2] bash docs/results/experiments/keep_confident_task1/run.sh [maps|fits|shift|heldout|judge ...]   (default: all)
# maps: the shipped members' out-of-fold maps (MODELS=shipped TASKS=$TASK training/reproduce.sh data oof) and their
# maps on the decision seeds 1200-1219; fits: A (the shipped search) and B (A + --keep-most-confident) side
# by side, one core each; shift: B's threshold moved to the fold ensemble (only if B keeps the most confident);
# heldout: the then shipped release's table on seeds 1200-1219 (and B's); judge: B against it, head to head.
# "shipped" here is the release this experiment judged B against (release36ep_task<N>.json, resources/task<N>.json
# until B replaced it), so that a rerun after B shipped still compares the same two specs.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
TASK=${TASK:-1}
case $TASK in  # A = the shipped search of the task (training/reproduce.sh, FIT_SEARCH before this experiment)
  1) D=Dataset901_PhantomT1; SEARCH_A=(); KMC="off,1,2" ;;  # the counts of keep_largest's search
  2) D=Dataset902_PhantomT2; KMC="off,1"
     # shellcheck disable=SC2054  # the commas are the options' own value lists
     SEARCH_A=(--weight-step 0.2 --min-volumes off,500 --keep-largest off,1 --max-distances off,20) ;;
  *) echo "run.sh: TASK must be 1 or 2, not '$TASK'" >&2; exit 2 ;;
esac
SEARCH_B=("${SEARCH_A[@]}" --keep-most-confident "$KMC")
OUT=$REPO/docs/results/experiments/keep_confident_task$TASK  # the experiment's committed results
SEEDS=1200-1219
W=$PANTHER_DATA/exp/keep_confident_task$TASK
BASE=$REPO/docs/results/fit_task$TASK/base.json   # the shipped fit's base spec (training/fit_default.py)
SHIPPED=$OUT/release36ep_task$TASK.json
SHIPPED_TABLE=$OUT/heldout_release36ep_seeds$SEEDS
OOF=$PANTHER_DATA/oof/$D
STEPS=${*:-maps fits shift heldout judge}
mkdir -p "$W"

fit_run() {  # fit_run NAME [EXTRA OPTIONS...]: the shipped fit's command (fit_default.py) with extra options
  local name=$1; shift
  exp_fit "$BASE" "$OOF" "$nnUNet_raw/$D/labelsTr" "$W/fit$name" 1 "$W/fit$name.log" "$@"
}

chose_confident() { "$PY" -c "import json,sys; sys.exit(0 if json.load(open('$W/fitB/report.json'))['chosen']['postprocess'].get('keep_most_confident') else 1)"; }

heldout() {  # heldout SPEC OUT WORK [--stage maps]: evaluate_heldout.py on the decision seeds (maps shared through WORK)
  exp_heldout "$TASK" "$SEEDS" "$REPO/model_weights" "$BASE" "$1" "$2" "$3" "${THREADS:-2}" "${@:4}"
}

for s in $STEPS; do
  case $s in
    maps)
      exp_stamp "out-of-fold maps of the shipped members"
      (cd "$REPO" && MODELS=shipped TASKS=$TASK training/reproduce.sh data oof)
      exp_stamp "member maps on seeds $SEEDS"
      heldout "$SHIPPED" "$SHIPPED_TABLE" "$W/heldout_shipped" --stage maps ;;
    fits)
      exp_stamp "fits A and B"
      fit_run A "${SEARCH_A[@]}" & a=$!
      fit_run B "${SEARCH_B[@]}" & b=$!
      wait "$a"; wait "$b"
      for n in A B; do
        mkdir -p "$OUT/fit_$n"
        cp "$W/fit$n/report.md" "$W/fit$n/report.json" "$W/fit$n/tradeoff.png" "$W/fit$n/spec.json" "$OUT/fit_$n/"
      done ;;
    shift)
      if ! chose_confident; then exp_stamp "B does not keep the most confident component: nothing to judge"; continue; fi
      exp_candidate_spec "$W/fitB/spec.json" "$OUT/candidate_task$TASK.json" \
        "Task $TASK candidate of docs/results/experiments/keep_confident_task$TASK: the shipped members, fitted with --keep-most-confident $KMC on their out-of-fold maps; not shipped unless judged"
      "$PY" "$REPO/training/fold_shift.py" --spec "$W/fitB/spec.json" --task "$TASK" --seeds 1300-1309 \
        --work "$PANTHER_DATA/shift/task$TASK" --threads "${THREADS:-2}" --out "$OUT/fold_shift.json" \
        --apply-to "$OUT/candidate_task$TASK.json" ;;
    heldout)
      heldout "$SHIPPED" "$SHIPPED_TABLE" "$W/heldout_shipped"
      if chose_confident; then
        exp_share_maps "$W/heldout_shipped" "$W/heldout_candidate"
        heldout "$OUT/candidate_task$TASK.json" "$OUT/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate"
      fi ;;
    judge)
      if ! chose_confident; then continue; fi
      exp_head_to_head "$W/heldout_candidate" "$W/heldout_shipped" keep_confident shipped "$OUT/head_to_head_seeds$SEEDS" ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
exp_stamp "done"
