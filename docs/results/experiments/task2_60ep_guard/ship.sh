#!/usr/bin/env bash
# The release of README.md's candidate, only when the head to head (run.sh judge) says ship by the rule fixed before
# any map: a better mean rank and no paired 95% interval entirely on the worse side.
#   bash docs/results/experiments/task2_60ep_guard/ship.sh
# It writes what `T_EPOCHS=60 TASKS=2 training/reproduce.sh export fit shift heldout` would write from these members:
# model_weights/Dataset902_PhantomT2, docs/results/fit_task2 and resources/task2.json (training/fit_default.py, which
# keeps run.sh's fit: the same command on the same maps), the threshold transfer (run.sh's maps of seeds 1300-1309:
# the members are copied with their times, so the maps stay current) and docs/results/heldout_task2 (seeds
# 1100-1119), then the new release on the old one's other held-out sets and their pool. The release it replaces
# keeps its 1100-1119 table in heldout_release36ep_seeds1100-1119 (this folder); the pooled files that named
# docs/results/heldout_task2 are rebuilt with that path.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
D=Dataset902_PhantomT2
W=$PANTHER_DATA/exp/task2_60ep_guard
W60=$PANTHER_DATA/exp/task2_60ep  # the out-of-fold and shift maps of these members (run.sh)
SEEDS=1260-1279
SEARCH="--weight-step 0.2 --min-volumes off,500 --keep-largest off,1 --max-distances off,20 --never-empty on,off --keep-most-confident off,1"  # run.sh's

exp_rule_says_ship "$HERE/head_to_head_seeds$SEEDS" candidate_guard release

exp_stamp "members"
rm -rf "${REPO:?}/model_weights/$D"
cp -rp "$HERE/../task2_60ep/candidate/model_weights/$D" "$REPO/model_weights/$D"

exp_stamp "fit (run.sh's, kept by fit_default.py as current)"
ln -sfn "$W60/oof" "$W/oof"  # the maps run.sh fitted on
exp_ship_fit 2 "$D" "$W" "$SEARCH" "$HERE/fit/spec.json"

exp_stamp "threshold transfer (run.sh's maps)"
"$PY" "$REPO/training/fold_shift.py" --spec "$REPO/docs/results/fit_task2/spec.json" --task 2 --seeds 1300-1309 \
  --work "$W60/shift" --threads 2 --out "$REPO/docs/results/fit_task2/fold_shift.json" --apply-to "$REPO/resources/task2.json"
cmp <("$PY" -c 'import json, sys; s = json.load(open(sys.argv[1])); print(s["decision"], s["members"])' "$REPO/resources/task2.json") \
    <("$PY" -c 'import json, sys; s = json.load(open(sys.argv[1])); print(s["decision"], s["members"])' "$HERE/candidate_task2.json")

exp_stamp "held-out seeds 1100-1119"
OLD=docs/results/experiments/task2_60ep_guard/heldout_release36ep_seeds1100-1119
if [ ! -d "$REPO/$OLD" ]; then git -C "$REPO" mv docs/results/heldout_task2 "$OLD"; fi
"$PY" "$REPO/training/evaluate_heldout.py" --task 2 --seeds 1100-1119 --work "$W/heldout_1100-1119" --threads 2 \
  --members-spec "$REPO/docs/results/fit_task2/base.json" --out "$REPO/docs/results/heldout_task2"
exp_stamp "pooled files of the replaced release: its 1100-1119 table under its new path"
exp_repath_pooled docs/results/heldout_task2 "$OLD"
exp_stamp "the new release on the other held-out sets of the old one (never seen by these members' fit or choice)"
for s in 1160-1179 1200-1219 1220-1239; do
  "$PY" "$REPO/training/evaluate_heldout.py" --task 2 --seeds "$s" --work "$W/heldout_$s" --threads 2 \
    --members-spec "$REPO/docs/results/fit_task2/base.json" --out "$HERE/heldout_release_seeds$s"
done
(cd "$REPO" && "$PY" training/pool_heldout.py docs/results/heldout_task2 \
  docs/results/experiments/task2_60ep_guard/heldout_release_seeds1160-1179 \
  docs/results/experiments/task2_60ep_guard/heldout_release_seeds1200-1219 \
  docs/results/experiments/task2_60ep_guard/heldout_release_seeds1220-1239 \
  docs/results/experiments/task2_60ep_guard/heldout_candidate_seeds1260-1279 \
  --seeds 1100-1119,1160-1179,1200-1239,1260-1279 --reference equal \
  --out docs/results/experiments/task2_60ep_guard/pooled_release_1100-1119_1160-1179_1200-1239_1260-1279.json)
exp_stamp "done: now TASKS=2 bash training/make_samples.sh && bash test/make_expected.sh"
