#!/usr/bin/env bash
# The timed rebuild of README.md (this folder): training/reproduce.sh with its defaults as of the plan's commit:
#   bash docs/results/experiments/rebuild_fast/run.sh [PHASE ...]   (default: base train1 train2 rest collect)
# The phases, the clone and the timings: training/timed_rebuild.sh.
set -euo pipefail
# shellcheck source=../../../../training/run_from_copy.sh
source "${REBUILD_FAST_HERE:-$(dirname "${BASH_SOURCE[0]}")}/../../../../training/run_from_copy.sh"
run_from_copy REBUILD_FAST_HERE "$@"  # bash reads a script while it runs it, and this one runs for hours
HERE=$REBUILD_FAST_HERE
# shellcheck source=../../../../training/timed_rebuild.sh
source "$HERE/../../../../training/timed_rebuild.sh"
