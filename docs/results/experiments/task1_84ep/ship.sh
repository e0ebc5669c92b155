#!/usr/bin/env bash
# The release of README.md's candidate, only when the head to head (run.sh judge) says ship by the rule fixed before
# any map: a better mean rank and no paired 95% interval entirely on the worse side.
#   bash docs/results/experiments/task1_84ep/ship.sh [release|rescore ...]   (default: both)
# It writes what `TASKS=1 training/reproduce.sh export fit shift heldout` would write from these members:
# model_weights/Dataset901_PhantomT1 (run.sh's export of the three 84-epoch members, copied with its times so that
# run.sh's maps of seeds 1300-1309 stay current), docs/results/fit_task1 and resources/task1.json (training/fit_default.py, which keeps
# run.sh's fit: the same command on the same out-of-fold maps), the threshold transfer and docs/results/heldout_task1
# (seeds 1100-1119); then the new release on the old one's other held-out sets (1140-1159, 1200-1259) and the pool of
# all six sets with run.sh's 1260-1279. The release it replaces keeps its 1100-1119 table in
# heldout_release60ep_seeds1100-1119 (this folder); the pooled files that named docs/results/heldout_task1 are
# rebuilt with that path. Each set's member maps are deleted once its table is written (KEEP_MAPS=1 keeps them); a
# set whose table exists is not run again. release: members, fit, shift, 1100-1119 and the pool of it with run.sh's
# 1260-1279 (what a release needs to land); rescore: the other four sets, the pools of all six and the comparisons
# (all 120 cases, the 100 without this release's decision set, the 60 that decided nothing).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
D=Dataset901_PhantomT1
W=$PANTHER_DATA/exp/task1_84ep
SEEDS=1260-1279
SEARCH="--keep-most-confident off,1,2"  # run.sh's, FIT_SEARCH[1] of training/reproduce.sh
THREADS=${THREADS:-2}
STEPS=${*:-release rescore}
OLD=docs/results/experiments/task1_84ep/heldout_release60ep_seeds1100-1119
T1C=docs/results/experiments/task1_60ep_confident
T1I=docs/results/experiments/task1_iso84
T1E=docs/results/experiments/task1_84ep

heldout() {  # heldout SEEDS OUT: the new release (model_weights/, resources/task1.json) on one held-out set
  local seeds=$1 out=$2 work=$W/heldout_ship_$1
  if [ -f "$REPO/$out/leaderboard.json" ] && [ "$REPO/$out/leaderboard.json" -nt "$REPO/resources/task1.json" ]; then
    exp_stamp "held-out seeds $seeds: done"; return
  fi
  exp_stamp "held-out seeds $seeds"
  exp_heldout 1 "$seeds" "$REPO/model_weights" "$REPO/docs/results/fit_task1/base.json" "$REPO/resources/task1.json" \
    "$REPO/$out" "$work" "$THREADS"
  if [ "${KEEP_MAPS:-0}" != 1 ]; then rm -rf "$work/maps"; fi
}

exp_rule_says_ship "$HERE/head_to_head_seeds$SEEDS" candidate_84ep release

for step in $STEPS; do
  case $step in
    release)
      exp_stamp "members"
      MEMBERS=$W/candidate/model_weights/$D  # run.sh's export: every map of run.sh came from it
      if [ ! -d "$MEMBERS" ]; then echo "ship.sh: $MEMBERS is missing: run run.sh build first" >&2; exit 1; fi
      rm -rf "${REPO:?}/model_weights/$D"
      cp -rp "$MEMBERS" "$REPO/model_weights/$D"

      exp_stamp "fit (run.sh's, kept by fit_default.py as current)"
      exp_ship_fit 1 "$D" "$W" "$SEARCH" "$HERE/fit/spec.json"

      exp_stamp "threshold transfer (run.sh's maps)"
      "$PY" "$REPO/training/fold_shift.py" --spec "$REPO/docs/results/fit_task1/spec.json" --task 1 --seeds 1300-1309 \
        --work "$W/shift" --threads "$THREADS" --out "$REPO/docs/results/fit_task1/fold_shift.json" \
        --apply-to "$REPO/resources/task1.json"
      exp_same_spec "$REPO/resources/task1.json" "$HERE/candidate_task1.json"

      exp_stamp "held-out seeds 1100-1119: the replaced release's table moved"
      if [ ! -d "$REPO/$OLD" ]; then git -C "$REPO" mv docs/results/heldout_task1 "$OLD"; fi
      exp_repath_pooled docs/results/heldout_task1 "$OLD"
      heldout 1100-1119 docs/results/heldout_task1
      exp_stamp "pool: the new release over its first 40 cases (1100-1119 and run.sh's 1260-1279)"
      (cd "$REPO" && "$PY" training/pool_heldout.py docs/results/heldout_task1 "$T1E/heldout_candidate_seeds$SEEDS" \
        --seeds 1100-1119,1260-1279 --reference equal --out "$T1E/pooled_release_1100-1119_1260-1279.json")
      exp_stamp "release done: now TASKS=1 bash training/make_samples.sh && bash test/make_expected.sh"
      ;;
    rescore)
      # the new release must be the one shipped: after it was withdrawn (../task1_back60) a rescore would score the
      # release that replaced it into this folder
      exp_same_spec "$REPO/resources/task1.json" "$HERE/candidate_task1.json"
      for s in 1140-1159 1200-1219 1220-1239 1240-1259; do
        heldout "$s" "$T1E/heldout_release_seeds$s"
      done

      NEWSETS=(docs/results/heldout_task1 "$T1E/heldout_release_seeds1140-1159" "$T1E/heldout_release_seeds1200-1219"
               "$T1E/heldout_release_seeds1220-1239" "$T1E/heldout_release_seeds1240-1259")
      OLDSETS=("$OLD" "$T1C/heldout_release_seeds1140-1159" "$T1C/heldout_release_seeds1200-1219"
               "$T1C/heldout_candidate_seeds1220-1239" "$T1I/heldout_release_seeds1240-1259")
      exp_stamp "pools: the new release over 120 cases, and the replaced one over the same 120"
      (cd "$REPO" && "$PY" training/pool_heldout.py "${NEWSETS[@]}" "$T1E/heldout_candidate_seeds$SEEDS" \
        --seeds 1100-1119,1140-1159,1200-1279 --reference equal --out "$T1E/pooled_release_1100-1119_1140-1159_1200-1279.json")
      (cd "$REPO" && "$PY" training/pool_heldout.py "${OLDSETS[@]}" "$T1E/heldout_release_seeds$SEEDS" \
        --seeds 1100-1119,1140-1159,1200-1279 --reference equal \
        --out "$T1E/pooled_release60ep_1100-1119_1140-1159_1200-1279.json")
      (cd "$REPO" && "$PY" training/pool_heldout.py "${NEWSETS[@]}" --seeds 1100-1119,1140-1159,1200-1259 \
        --reference equal --out "$T1E/pooled_release_1100-1119_1140-1159_1200-1259.json")  # without the set that decided it
      exp_stamp "the two releases' fitted masks head to head: on all 120 cases, and on the 100 that did not decide this one"
      new=$(IFS=,; echo "${NEWSETS[*]}") old=$(IFS=,; echo "${OLDSETS[*]}")
      (cd "$REPO" && "$PY" training/pool_heldout.py --compare "84ep=$new,$T1E/heldout_candidate_seeds$SEEDS" \
        "60ep=$old,$T1E/heldout_release_seeds$SEEDS" --reference 60ep --seeds 1100-1119,1140-1159,1200-1279 \
        --out "$T1E/compare_releases_1100-1119_1140-1159_1200-1279.json")
      (cd "$REPO" && "$PY" training/pool_heldout.py --compare "84ep=$new" "60ep=$old" \
        --reference 60ep --seeds 1100-1119,1140-1159,1200-1259 \
        --out "$T1E/compare_releases_1100-1119_1140-1159_1200-1259.json")
      # the 60 cases that decided neither release nor a candidate against either (1220-1239 chose the 60-epoch one,
      # 1240-1259 kept it against task1_iso84, 1260-1279 chose this one)
      new3=$(IFS=,; echo "${NEWSETS[*]:0:3}") old3=$(IFS=,; echo "${OLDSETS[*]:0:3}")
      (cd "$REPO" && "$PY" training/pool_heldout.py --compare "84ep=$new3" "60ep=$old3" \
        --reference 60ep --seeds 1100-1119,1140-1159,1200-1219 \
        --out "$T1E/compare_releases_1100-1119_1140-1159_1200-1219.json")
      exp_stamp "rescore done: the README's Task 1 rows (training/readme_tables.py) can name the six sets"
      ;;
    *) echo "ship.sh: unknown step '$step' (release, rescore)" >&2; exit 2 ;;
  esac
done
