#!/usr/bin/env bash
# The release of README.md's candidate, only when the head to head (run.sh judge) says ship by the rule fixed before
# any map: a better mean rank and no paired 95% interval entirely on the worse side.
#   bash docs/results/experiments/task2_bf16_release/ship.sh
# It writes what `TASKS=2 training/reproduce.sh export fit shift heldout` would write from these members:
# model_weights/Dataset902_PhantomT2 (candidate/: the export every map of run.sh came from), docs/results/fit_task2 and
# resources/task2.json (training/fit_default.py, which keeps ../task2_bf16's fit: the same command on the same
# out-of-fold maps), the threshold transfer (run.sh's maps of seeds 1300-1309: the members are copied with their times,
# so those maps stay current) and docs/results/heldout_task2 (seeds 1100-1119); then the new release on the old one's
# other held-out sets (1160-1179, 1200-1239, 1260-1279) and the pool of all six sets with run.sh's 1280-1299.
# The release it replaces keeps its 1100-1119 table in heldout_release60ep_seeds1100-1119 (this folder); the pooled
# files that named docs/results/heldout_task2 are rebuilt with that path. Each set's member maps (4.3 GB per 20 cases)
# are deleted once its table is written (KEEP_MAPS=1 keeps them); a set whose table exists is not run again.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
D=Dataset902_PhantomT2
W=$PANTHER_DATA/exp/task2_bf16_release
WB=$PANTHER_DATA/exp/task2_bf16  # ../task2_bf16/run.sh: the out-of-fold maps, the fit and the fp32 base it fitted with
SEEDS=1280-1299
SEARCH="--weight-step 0.2 --min-volumes off,500 --keep-largest off,1 --max-distances off,20 --never-empty on,off --keep-most-confident off,1"  # ../task2_bf16/run.sh's
THREADS=${THREADS:-2}
OLD=docs/results/experiments/task2_bf16_release/heldout_release60ep_seeds1100-1119
T2G=docs/results/experiments/task2_60ep_guard
T2B=docs/results/experiments/task2_bf16_release

exp_rule_says_ship "$HERE/head_to_head_seeds$SEEDS" candidate_bf16 release

exp_stamp "members"
MEMBERS=$HERE/candidate/model_weights/$D
# the export every map of run.sh came from, where it is still kept and the same bytes: copied with its times, the maps
# of seeds 1300-1309 stay current (the committed copy is newer than them, which would make the shift redo them)
if [ -d "$WB/candidate/model_weights/$D" ] && diff -r -q "$MEMBERS" "$WB/candidate/model_weights/$D"; then
  MEMBERS=$WB/candidate/model_weights/$D
fi
rm -rf "${REPO:?}/model_weights/$D"
cp -rp "$MEMBERS" "$REPO/model_weights/$D"

exp_stamp "fit (../task2_bf16's, kept by fit_default.py as current)"
mkdir -p "$W/ship"
ln -sfn "$WB/oof" "$W/ship/oof"
ln -sfn "$WB/fit" "$W/ship/fit"
ln -sfn "$WB/fp32" "$W/ship/release"  # exp_ship_fit checks the base spec against the one the fit used
exp_ship_fit 2 "$D" "$W/ship" "$SEARCH" "$REPO/docs/results/experiments/task2_bf16/fit/spec.json"

exp_stamp "threshold transfer (run.sh's maps)"
"$PY" "$REPO/training/fold_shift.py" --spec "$REPO/docs/results/fit_task2/spec.json" --task 2 --seeds 1300-1309 \
  --work "$W/shift" --threads "$THREADS" --out "$REPO/docs/results/fit_task2/fold_shift.json" \
  --apply-to "$REPO/resources/task2.json"
exp_same_spec "$REPO/resources/task2.json" "$HERE/candidate_task2.json"
heldout() {  # heldout SEEDS OUT: the new release (model_weights/, resources/task2.json) on one held-out set
  local seeds=$1 out=$2 work=$W/heldout_ship_$1 old
  if [ -f "$REPO/$out/leaderboard.json" ] && [ "$REPO/$out/leaderboard.json" -nt "$REPO/resources/task2.json" ]; then
    exp_stamp "held-out seeds $seeds: done"; return
  fi
  exp_stamp "held-out seeds $seeds"
  old=$PANTHER_DATA/exp/task2_60ep_guard/heldout_$seeds  # the phantoms the release before was scored on, if kept
  if [ -d "$old/images" ] && [ ! -e "$work" ]; then
    mkdir -p "$work" && cp -r "$old/images" "$old/gt" "$work/"  # the same phantoms: the generator is deterministic
  fi
  exp_heldout 2 "$seeds" "$REPO/model_weights" "$REPO/docs/results/fit_task2/base.json" "$REPO/resources/task2.json" \
    "$REPO/$out" "$work" "$THREADS"
  if [ "${KEEP_MAPS:-0}" != 1 ]; then rm -rf "$work/maps"; fi
}

exp_stamp "held-out seeds 1100-1119: the replaced release's table moved"
if [ ! -d "$REPO/$OLD" ]; then git -C "$REPO" mv docs/results/heldout_task2 "$OLD"; fi
exp_stamp "pooled files of the replaced release: its 1100-1119 table under its new path"
exp_repath_pooled docs/results/heldout_task2 "$OLD"
heldout 1100-1119 docs/results/heldout_task2
for s in 1160-1179 1200-1219 1220-1239 1260-1279; do
  heldout "$s" "$T2B/heldout_release_seeds$s"
done

exp_stamp "pools: the new release over 120 cases, and the replaced one over the same 120"
(cd "$REPO" && "$PY" training/pool_heldout.py docs/results/heldout_task2 "$T2B/heldout_release_seeds1160-1179" \
  "$T2B/heldout_release_seeds1200-1219" "$T2B/heldout_release_seeds1220-1239" "$T2B/heldout_release_seeds1260-1279" \
  "$T2B/heldout_candidate_seeds$SEEDS" --seeds 1100-1119,1160-1179,1200-1239,1260-1299 --reference equal \
  --out "$T2B/pooled_release_1100-1119_1160-1179_1200-1239_1260-1299.json")
(cd "$REPO" && "$PY" training/pool_heldout.py "$OLD" "$T2G/heldout_release_seeds1160-1179" \
  "$T2G/heldout_release_seeds1200-1219" "$T2G/heldout_release_seeds1220-1239" "$T2G/heldout_candidate_seeds1260-1279" \
  "$T2B/heldout_release_seeds$SEEDS" --seeds 1100-1119,1160-1179,1200-1239,1260-1299 --reference equal \
  --out "$T2B/pooled_release60ep_1100-1119_1160-1179_1200-1239_1260-1299.json")
(cd "$REPO" && "$PY" training/pool_heldout.py docs/results/heldout_task2 "$T2B/heldout_release_seeds1160-1179" \
  "$T2B/heldout_release_seeds1200-1219" "$T2B/heldout_release_seeds1220-1239" "$T2B/heldout_release_seeds1260-1279" \
  --seeds 1100-1119,1160-1179,1200-1239,1260-1279 --reference equal \
  --out "$T2B/pooled_release_1100-1119_1160-1179_1200-1239_1260-1279.json")  # without the set that decided it
exp_stamp "the two releases' fitted masks head to head: on all 120 cases, and on the 80 that decided neither"
NEWSETS=docs/results/heldout_task2,$T2B/heldout_release_seeds1160-1179,$T2B/heldout_release_seeds1200-1219,$T2B/heldout_release_seeds1220-1239
OLDSETS=$OLD,$T2G/heldout_release_seeds1160-1179,$T2G/heldout_release_seeds1200-1219,$T2G/heldout_release_seeds1220-1239
(cd "$REPO" && "$PY" training/pool_heldout.py --compare \
  "bf16=$NEWSETS,$T2B/heldout_release_seeds1260-1279,$T2B/heldout_candidate_seeds$SEEDS" \
  "release60ep=$OLDSETS,$T2G/heldout_candidate_seeds1260-1279,$T2B/heldout_release_seeds$SEEDS" \
  --reference release60ep --seeds 1100-1119,1160-1179,1200-1239,1260-1299 \
  --out "$T2B/compare_releases_1100-1119_1160-1179_1200-1239_1260-1299.json")
(cd "$REPO" && "$PY" training/pool_heldout.py --compare "bf16=$NEWSETS" "release60ep=$OLDSETS" \
  --reference release60ep --seeds 1100-1119,1160-1179,1200-1239 \
  --out "$T2B/compare_releases_1100-1119_1160-1179_1200-1239.json")
exp_stamp "done: now TASKS=2 bash training/make_samples.sh && bash test/make_expected.sh"
