#!/usr/bin/env bash
# Submit the cohort to Slurm: a job array of SHARDS tasks (panther-predict.sbatch), then one job that
# merges their summaries once every task has ended (panther-merge.sbatch, --dependency=afterany).
#
#   deploy/slurm/submit.sh [--tasks LIST] SHARDS OUT INPUT... [PREDICT OPTION...]
#
#   --tasks LIST  only these array indices, e.g. 3 or 1,5 to re-submit tasks that were killed or
#                 failed (their finished cases are skipped); default 0-(SHARDS-1)
#   PANTHER_SBATCH_OPTIONS  extra sbatch options for both jobs, e.g. "--partition=gpu --account=x"
#   PANTHER_PREDICT         the predict command (default `panther-ensemble predict`)
# Logs: OUT/slurm-logs/. Prints the two job ids.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

tasks=""
if [[ ${1:-} == --tasks ]]; then
  tasks=$2
  shift 2
fi
if [[ $# -lt 3 ]]; then
  echo "usage: $0 [--tasks LIST] SHARDS OUT INPUT... [PREDICT OPTION...]" >&2
  exit 2
fi
shards=$1 out=$2
shift 2
tasks=${tasks:-0-$((shards - 1))}
read -r -a extra <<< "${PANTHER_SBATCH_OPTIONS:-}"
mkdir -p "$out/slurm-logs"

array=$(sbatch --parsable "${extra[@]}" --array="$tasks" --output="$out/slurm-logs/predict-%A_%a.log" \
  "$here/panther-predict.sbatch" "$shards" "$out" "$@")
array=${array%%;*}
merge=$(sbatch --parsable "${extra[@]}" --dependency="afterany:$array" \
  --output="$out/slurm-logs/merge-%j.log" "$here/panther-merge.sbatch" "$out" "$@")
merge=${merge%%;*}
echo "array $array (tasks $tasks of $shards shards), merge $merge"
