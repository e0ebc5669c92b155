#!/usr/bin/env bash
# The release decision of README.md (this folder), run after `TASKS=2 training/reproduce.sh train oof export fit
# shift heldout` has left the 36-epoch Task 2 members in model_weights/ and their spec in resources/task2.json
# (uncommitted until judged): the 36-epoch shipped spec on seeds 1160-1179, then head to head against the
# 12-epoch shipped spec's masks on the same cases (kept in $PANTHER_DATA/heldout/task2_s1160_12ep).
#   bash docs/results/experiments/task2_36ep/judge.sh        (THREADS=1 beside other work; about 35 min on 2)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
NEW=$PANTHER_DATA/heldout/task2_s1160_36ep
OLD=$PANTHER_DATA/heldout/task2_s1160_12ep
[ -d "$OLD/pred/fitted" ] || { echo "judge.sh: $OLD/pred/fitted: the 12-epoch masks are missing" >&2; exit 1; }
"$PY" "$REPO/training/evaluate_heldout.py" --task 2 --seeds 1160-1179 --work "$NEW" --threads "${THREADS:-2}" \
  --members-spec "$REPO/docs/results/fit_task2/base.json" --spec "$REPO/resources/task2.json" \
  --out "$REPO/docs/results/heldout_task2_seeds1160-1179"
# the same phantoms, or the comparison means nothing
diff -r -q "$NEW/gt" "$OLD/gt"
"$NNUNET_BIN/panther-ensemble" evaluate --pred "$NEW/pred/fitted" "$OLD/pred/fitted" --names fitted_36ep fitted_12ep \
  --gt "$NEW/gt" --bootstrap 2000 --reference fitted_12ep --out "$HERE/head_to_head_seeds1160-1179"
