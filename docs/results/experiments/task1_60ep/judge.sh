#!/usr/bin/env bash
# The release decision of README.md (this folder), run after `T_EPOCHS=60 TASKS=1 training/reproduce.sh train oof
# export fit shift heldout` has left the 60-epoch Task 1 members in model_weights/ and their spec in
# resources/task1.json (uncommitted until judged): the 36-epoch shipped release (commit $OLD_COMMIT: its members,
# spec and base spec, taken from git) and the 60-epoch candidate on seeds 1180-1199, then head to head.
#   bash docs/results/experiments/task1_60ep/judge.sh        (THREADS=1 beside other work)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
OLD_COMMIT=${OLD_COMMIT:-6dd46d9}
SEEDS=1180-1199
NEW=$PANTHER_DATA/heldout/task1_s1180_60ep
OLD=$PANTHER_DATA/heldout/task1_s1180_36ep
REL=$PANTHER_DATA/release_task1_36ep   # the 36-epoch release's files, as committed
if [ ! -f "$REL/resources/task1.json" ]; then
  rm -rf "$REL.tmp" && mkdir -p "$REL.tmp"
  git -C "$REPO" archive "$OLD_COMMIT" model_weights/Dataset901_PhantomT1 resources/task1.json \
    docs/results/fit_task1/base.json | tar -x -C "$REL.tmp"
  mv "$REL.tmp" "$REL"
fi
# the 36-epoch release on the decision seeds (kept beside this file: its table is part of the record)
"$PY" "$REPO/training/evaluate_heldout.py" --task 1 --seeds "$SEEDS" --work "$OLD" --threads "${THREADS:-2}" \
  --model-dir "$REL/model_weights" --members-spec "$REL/docs/results/fit_task1/base.json" \
  --spec "$REL/resources/task1.json" --out "$HERE/heldout_36ep_seeds$SEEDS"
# the candidate: today's model_weights/ and resources/task1.json
"$PY" "$REPO/training/evaluate_heldout.py" --task 1 --seeds "$SEEDS" --work "$NEW" --threads "${THREADS:-2}" \
  --members-spec "$REPO/docs/results/fit_task1/base.json" --spec "$REPO/resources/task1.json" \
  --out "$REPO/docs/results/heldout_task1_seeds$SEEDS"
# the same phantoms, or the comparison means nothing
diff -r -q "$NEW/gt" "$OLD/gt"
"$NNUNET_BIN/panther-ensemble" evaluate --pred "$NEW/pred/fitted" "$OLD/pred/fitted" --names fitted_60ep fitted_36ep \
  --gt "$NEW/gt" --bootstrap 2000 --reference fitted_36ep --out "$HERE/head_to_head_seeds$SEEDS"
