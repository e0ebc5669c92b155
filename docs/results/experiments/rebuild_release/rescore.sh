#!/usr/bin/env bash
# Shipping the rebuilt members (README.md, "Results": the rule said ship on both tasks) rescores the held-out sets
# that the README's tables show for the previous release, with the rebuilt members and their shifted specs, so that
# every row of those tables describes what ships. Resumable: each set's phantoms and member maps are kept in
# $PANTHER_DATA/exp/rebuild_release/rescore_task<N>_<SEEDS> and made only where missing; a set's maps are deleted once
# its table is written (KEEP_MAPS=1 keeps them).
#   bash docs/results/experiments/rebuild_release/rescore.sh [TASK:SEEDS ...]   (default: every set below)
# Seeds 1100-1119 come from the rebuild's own heldout step (../rebuild_fast/rebuilt/docs/results/heldout_task<N>/),
# the decision sets (Task 1 1330-1349, Task 2 1310-1329) from run.sh: neither is made again here.
set -euo pipefail
# shellcheck source=../../../../training/run_from_copy.sh
source "${REBUILD_RESCORE_HERE:-$(dirname "${BASH_SOURCE[0]}")}/../../../../training/run_from_copy.sh"
run_from_copy REBUILD_RESCORE_HERE "$@"  # bash reads a script while it runs it, and this one runs for hours
HERE=$REBUILD_RESCORE_HERE
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
# the sets the README's held-out tables show (training/readme_tables.py), less 1100-1119 and the decision sets
SETS=${*:-1:1140-1159 1:1200-1219 1:1220-1239 1:1240-1259 1:1260-1279 1:1280-1299 1:1310-1329 2:1160-1179 2:1200-1219 2:1220-1239 2:1240-1259 2:1260-1279 2:1280-1299}
CLONE=$PANTHER_DATA/exp/rebuild_fast/repo  # the rebuild's clone: its model_weights/ are the rebuilt members
if [ ! -d "$CLONE/model_weights" ]; then CLONE=$REPO/docs/results/experiments/rebuild_fast/rebuilt; fi
W=$PANTHER_DATA/exp/rebuild_release
THREADS=${THREADS:-2}
mkdir -p "$W" "$PANTHER_DATA/logs"
for set in $SETS; do
  t=${set%%:*}; seeds=${set#*:}
  exp_stamp "Task $t: rebuilt members on seeds $seeds"
  exp_heldout "$t" "$seeds" "$CLONE/model_weights" "$CLONE/docs/results/fit_task$t/base.json" \
    "$HERE/candidate_task$t.json" "$HERE/rescored_task${t}_seeds$seeds" "$W/rescore_task${t}_$seeds" "$THREADS" \
    >> "$PANTHER_DATA/logs/exp_rebuild_release_rescore_t$t.log" 2>&1
  # a set's member maps (about 4.5 GB per 20 cases) go once its table is written (KEEP_MAPS=1 keeps them): the
  # thirteen sets' maps would not fit this machine's disk (the run of 2026-12-07 stopped on a full disk)
  if [ "${KEEP_MAPS:-0}" != 1 ]; then rm -rf "$W/rescore_task${t}_$seeds/maps"; fi
done
exp_stamp "done"
