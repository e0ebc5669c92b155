#!/usr/bin/env bash
# The trial of README.md (this folder): the rebuilt members of docs/results/experiments/rebuild_fast, with the spec
# the rebuild fitted and shifted, judged head to head against the shipped release on new seeds, each task on its own.
# Resumable phase by phase (what a phase has made is kept):
#   bash docs/results/experiments/rebuild_release/run.sh [PHASE ...]   (default: candidate maps heldout judge)
# candidate: the rebuild's shifted specs and threshold transfers copied here; maps: both sides' member maps on the
# decision seeds; heldout: both tables; judge: head to head and the rule. TASKS="1 2" by default.
set -euo pipefail
# shellcheck source=../../../../training/run_from_copy.sh
source "${REBUILD_RELEASE_HERE:-$(dirname "${BASH_SOURCE[0]}")}/../../../../training/run_from_copy.sh"
run_from_copy REBUILD_RELEASE_HERE "$@"  # bash reads a script while it runs it, and this one runs for an hour
HERE=$REBUILD_RELEASE_HERE
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
PHASES="candidate maps heldout judge"
STEPS=${*:-$PHASES}
# shellcheck disable=SC2086 # one word per phase
exp_check_phases "$PHASES" $STEPS
RELEASE_COMMIT=0268895  # the release judged against: Task 1 d29d10c's 60-epoch members, Task 2 83c60db's
declare -A SEEDS=([1]=1330-1349 [2]=1310-1329)  # new for each task: no training, fit, shift, sample or choice saw them
declare -A DS=([1]=Dataset901_PhantomT1 [2]=Dataset902_PhantomT2)
TASKS=${TASKS:-1 2}
SRC=$PANTHER_DATA/exp/rebuild_fast
CLONE=$SRC/repo  # the rebuild's clone: its model_weights/ are the rebuilt members' float16 export after `export`
if [ ! -d "$CLONE/model_weights" ]; then
  # the clone lives outside the repo and went with a machine once; the rebuild's collect keeps what this trial
  # needs (the members' float16 export, the shifted specs, the fit reports) in the repo
  CLONE=$REPO/docs/results/experiments/rebuild_fast/rebuilt
  echo "run.sh: the rebuild's clone is gone; the trial reads the rebuilt members and specs kept in $CLONE" >&2
fi
SRC_TIMINGS=$REPO/docs/results/experiments/rebuild_fast/timings.json
W=$PANTHER_DATA/exp/rebuild_release
REL=$W/release
THREADS=${THREADS:-2}
LOG=$PANTHER_DATA/logs/exp_rebuild_release
for step in export fit shift; do  # the candidate is complete only once the rebuild has shifted its fitted specs
  if ! exp_has_step "$SRC_TIMINGS" "$step"; then
    echo "run.sh: the rebuild (docs/results/experiments/rebuild_fast) has not run its '$step' step yet ($SRC_TIMINGS)" >&2
    exit 1
  fi
done
mkdir -p "$W" "$PANTHER_DATA/logs"
exp_unpack "$RELEASE_COMMIT" "$REL" model_weights resources docs/results/fit_task1/base.json docs/results/fit_task2/base.json

heldout() {  # heldout TASK SIDE MODEL_DIR MEMBERS_SPEC SPEC [--stage maps]
  local t=$1 side=$2
  exp_heldout "$t" "${SEEDS[$t]}" "$3" "$4" "$5" "$HERE/heldout_${side}_task${t}_seeds${SEEDS[$t]}" \
    "$W/heldout_${side}_task$t" "$THREADS" "${@:6}"
}

for s in $STEPS; do
  for t in $TASKS; do
    case $s in
      candidate)
        if [ ! -f "$HERE/candidate_task$t.json" ]; then
          # the rebuilt members are not the shipped ones, or there is nothing to judge
          if cmp -s "$CLONE/model_weights/${DS[$t]}/nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres/fold_0/checkpoint_final.pth" \
                    "$REL/model_weights/${DS[$t]}/nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres/fold_0/checkpoint_final.pth"; then
            echo "run.sh: $CLONE/model_weights holds the shipped Task $t members, not the rebuilt ones" >&2
            exit 1
          fi
          cp "$CLONE/docs/results/fit_task$t/fold_shift.json" "$HERE/fold_shift_task$t.json"
          exp_candidate_spec "$CLONE/resources/task$t.json" "$HERE/candidate_task$t.json" \
            "Task $t candidate of docs/results/experiments/rebuild_release: the members of the timed rebuild (docs/results/experiments/rebuild_fast), 60 epochs from its bfloat16 pre-training, with the spec its fit chose and its shift moved; not shipped unless judged"
        fi ;;
      maps)
        exp_stamp "Task $t: release member maps on seeds ${SEEDS[$t]}"
        heldout "$t" release "$REL/model_weights" "$REL/docs/results/fit_task$t/base.json" "$REL/resources/task$t.json" \
          --stage maps > "${LOG}_maps_release_t$t.log" 2>&1
        exp_stamp "Task $t: candidate member maps on seeds ${SEEDS[$t]}"
        heldout "$t" candidate "$CLONE/model_weights" "$CLONE/docs/results/fit_task$t/base.json" "$HERE/candidate_task$t.json" \
          --stage maps > "${LOG}_maps_candidate_t$t.log" 2>&1 ;;
      heldout)
        heldout "$t" release "$REL/model_weights" "$REL/docs/results/fit_task$t/base.json" "$REL/resources/task$t.json"
        heldout "$t" candidate "$CLONE/model_weights" "$CLONE/docs/results/fit_task$t/base.json" "$HERE/candidate_task$t.json" ;;
      judge)
        exp_head_to_head "$W/heldout_candidate_task$t" "$W/heldout_release_task$t" candidate_rebuilt release \
          "$HERE/head_to_head_task${t}_seeds${SEEDS[$t]}"
        exp_rule_says_ship "$HERE/head_to_head_task${t}_seeds${SEEDS[$t]}" candidate_rebuilt release || true ;;
    esac
  done
done
exp_stamp "done"
