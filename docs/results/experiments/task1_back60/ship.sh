#!/usr/bin/env bash
# Going back to the 60-epoch Task 1 release, only when the head to head (run.sh judge) says so by the rule fixed
# before any map (README.md, this folder):
#   bash docs/results/experiments/task1_back60/ship.sh
# It restores what commit eb74c8d shipped (model_weights/Dataset901_PhantomT1, resources/task1.json,
# docs/results/fit_task1), swaps the held-out tables of seeds 1100-1119 (the 60-epoch release's back to
# docs/results/heldout_task1, the 84-epoch release's to heldout_release84ep_seeds1100-1119 here; the pooled files that
# name either are rebuilt with the new paths), and pools the restored release over its seven sets (140 cases) and
# the release it replaced over the same. Then: T_EPOCHS_OF[1]=60 in training/reproduce.sh (by hand, with
# tests/test_collapse.py), TASKS=1 bash training/make_samples.sh && bash test/make_expected.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
CANDIDATE_COMMIT=eb74c8d
SEEDS=1280-1299
B=docs/results/experiments/task1_back60
T1C=docs/results/experiments/task1_60ep_confident
T1I=docs/results/experiments/task1_iso84
T1E=docs/results/experiments/task1_84ep
OLD84=$B/heldout_release84ep_seeds1100-1119
BACK60=$T1E/heldout_release60ep_seeds1100-1119

exp_rule_says_ship "$HERE/head_to_head_seeds$SEEDS" back_60ep release_84ep

exp_stamp "the 60-epoch release's members, spec and fit (commit $CANDIDATE_COMMIT)"
for p in model_weights/Dataset901_PhantomT1 resources/task1.json docs/results/fit_task1; do
  git -C "$REPO" rm -r -q "$p"
  git -C "$REPO" checkout "$CANDIDATE_COMMIT" -- "$p"
done
exp_same_spec "$REPO/resources/task1.json" "$REPO/$T1C/candidate_task1.json"  # the spec judged then and now

exp_stamp "held-out seeds 1100-1119: the two releases' tables swapped"
if [ ! -d "$REPO/$OLD84" ]; then
  git -C "$REPO" mv docs/results/heldout_task1 "$OLD84"
  exp_repath_pooled docs/results/heldout_task1 "$OLD84"
  git -C "$REPO" mv "$BACK60" docs/results/heldout_task1
  exp_repath_pooled "$BACK60" docs/results/heldout_task1
fi

NEW=(docs/results/heldout_task1 "$T1C/heldout_release_seeds1140-1159" "$T1C/heldout_release_seeds1200-1219"
     "$T1C/heldout_candidate_seeds1220-1239" "$T1I/heldout_release_seeds1240-1259" "$T1E/heldout_release_seeds1260-1279"
     "$B/heldout_candidate_seeds$SEEDS")
OLD=("$OLD84" "$T1E/heldout_release_seeds1140-1159" "$T1E/heldout_release_seeds1200-1219"
     "$T1E/heldout_release_seeds1220-1239" "$T1E/heldout_release_seeds1240-1259" "$T1E/heldout_candidate_seeds1260-1279"
     "$B/heldout_release_seeds$SEEDS")
ALL=1100-1119,1140-1159,1200-1299
exp_stamp "pools: the restored release over its seven sets (140 cases), the 84-epoch one over the same, head to head"
(cd "$REPO" && "$PY" training/pool_heldout.py "${NEW[@]}" --seeds "$ALL" --reference equal \
  --out "$B/pooled_release_1100-1119_1140-1159_1200-1299.json")
(cd "$REPO" && "$PY" training/pool_heldout.py "${OLD[@]}" --seeds "$ALL" --reference equal \
  --out "$B/pooled_release84ep_1100-1119_1140-1159_1200-1299.json")
new=$(IFS=,; echo "${NEW[*]}") old=$(IFS=,; echo "${OLD[*]}")
(cd "$REPO" && "$PY" training/pool_heldout.py --compare "60ep=$new" "84ep=$old" --reference 84ep --seeds "$ALL" \
  --out "$B/compare_releases_1100-1119_1140-1159_1200-1299.json")
exp_stamp "done: now T_EPOCHS_OF[1]=60 in training/reproduce.sh, and TASKS=1 bash training/make_samples.sh && bash test/make_expected.sh"
