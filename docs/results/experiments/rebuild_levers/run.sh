#!/usr/bin/env bash
# The timed rebuild of README.md (this folder), with the CPU levers in pre-training too (then not yet the default):
#   bash docs/results/experiments/rebuild_levers/run.sh [PHASE ...]   (default: base train1 train2 rest collect)
# The phases, the clone and the timings: training/timed_rebuild.sh.
set -euo pipefail
# shellcheck source=../../../../training/run_from_copy.sh
source "${REBUILD_LEVERS_HERE:-$(dirname "${BASH_SOURCE[0]}")}/../../../../training/run_from_copy.sh"
run_from_copy REBUILD_LEVERS_HERE "$@"  # bash reads a script while it runs it, and this one runs for hours
HERE=$REBUILD_LEVERS_HERE
# the one lever then untried: pre-training in bfloat16 with channels_last (the specialists used both by default)
export TRAIN_CPU_AUTOCAST=auto TRAIN_CHANNELS_LAST=on
# shellcheck source=../../../../training/timed_rebuild.sh
source "$HERE/../../../../training/timed_rebuild.sh"
