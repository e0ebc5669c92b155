#!/usr/bin/env bash
# The release of the rebuilt members (README.md, "Results": the rule, fixed before any map, said ship on both tasks).
#   bash docs/results/experiments/rebuild_release/ship.sh
# 1. The rule is read again from the committed head to heads (nothing ships on a "no").
# 2. The release it replaces keeps its seeds 1100-1119 tables here (heldout_release_task<N>_seeds1100-1119), and every
#    pooled or compare file that named docs/results/heldout_task<N> is rebuilt with that path (the same numbers).
# 3. What the rebuild's clone wrote as shipped files is copied unchanged: model_weights/, resources/task<N>.json (the
#    judged candidates: checked), docs/results/fit_task<N> and heldout_task<N> (seeds 1100-1119), and, where the clone
#    is still kept, the sample cases, their expected outputs and training/results.md (not the real-trainer fixture:
#    its tests pin the numbers of its own training log). Where
#    it went with its machine (only docs/results/experiments/rebuild_fast/rebuilt/ is kept), run
#    `bash training/make_samples.sh && bash test/make_expected.sh` afterwards.
# 4. Pools: the new release over every held-out set that decided nothing for it (1100-1119 and rescore.sh's sets), the
#    same with its decision set, and the two releases' fitted masks head to head on the cases both were scored on.
# Then: python training/readme_tables.py --write. Idempotent: a step whose result is in place is a no-op.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
# shellcheck source=../../../../training/experiment.sh
source "$REPO/training/experiment.sh"
R=docs/results/experiments/rebuild_release
declare -A DECIDED=([1]=1330-1349 [2]=1310-1329)  # run.sh's decision seeds
# the sets rescore.sh has scored so far (of the older held-out sets, on which the replaced release was scored; its
# default list holds the rest: Task 1 1260-1279, 1280-1299, 1310-1329, Task 2 1240-1259, 1260-1279, 1280-1299); as
# they come, add them here and to training/readme_tables.py's RESCORED, and run this again
T1_SETS=${T1_SETS-1140-1159 1200-1219 1220-1239 1240-1259}
T2_SETS=${T2_SETS-1160-1179 1200-1219 1220-1239}
# the replaced release's own tables of those sets (training/readme_tables.py's heldout-task<N> rows until this ship)
T1=docs/results/experiments/task1_60ep_confident
T2B=docs/results/experiments/task2_bf16_release
declare -A OLD_SET=(
  [1:1140-1159]=$T1/heldout_release_seeds1140-1159 [1:1200-1219]=$T1/heldout_release_seeds1200-1219
  [1:1220-1239]=$T1/heldout_candidate_seeds1220-1239
  [1:1240-1259]=docs/results/experiments/task1_iso84/heldout_release_seeds1240-1259
  [1:1260-1279]=docs/results/experiments/task1_84ep/heldout_release_seeds1260-1279
  [1:1280-1299]=docs/results/experiments/task1_back60/heldout_candidate_seeds1280-1299
  [1:1310-1329]=docs/results/experiments/task1_guard60/heldout_release_seeds1310-1329
  [2:1160-1179]=$T2B/heldout_release_seeds1160-1179 [2:1200-1219]=$T2B/heldout_release_seeds1200-1219
  [2:1220-1239]=$T2B/heldout_release_seeds1220-1239 [2:1260-1279]=$T2B/heldout_release_seeds1260-1279
  [2:1280-1299]=$T2B/heldout_candidate_seeds1280-1299
)
CLONE=$PANTHER_DATA/exp/rebuild_fast/repo
KEPT=$REPO/docs/results/experiments/rebuild_fast/rebuilt
if [ ! -d "$CLONE/model_weights" ]; then CLONE=$KEPT; fi

for t in 1 2; do
  exp_rule_says_ship "$HERE/head_to_head_task${t}_seeds${DECIDED[$t]}" candidate_rebuilt release
done

exp_stamp "the replaced release's 1100-1119 tables"
for t in 1 2; do
  old=$R/heldout_release_task${t}_seeds1100-1119
  if [ ! -d "$REPO/$old" ]; then git -C "$REPO" mv "docs/results/heldout_task$t" "$old"; fi
  exp_repath_pooled "docs/results/heldout_task$t" "$old"
done

exp_stamp "the rebuild's shipped files (from $CLONE)"
copy() {  # copy PATH: the clone's PATH in place of the repo's
  if [ -e "$CLONE/$1" ]; then rm -rf "${REPO:?}/$1" && mkdir -p "$(dirname "$REPO/$1")" && cp -rp "$CLONE/$1" "$REPO/$1"; fi
}
for d in "$CLONE"/model_weights/Dataset*; do copy "model_weights/$(basename "$d")"; done  # (its README is this repo's)
for t in 1 2; do
  copy "resources/task$t.json"
  exp_same_spec "$REPO/resources/task$t.json" "$HERE/candidate_task$t.json"
  copy "docs/results/fit_task$t"
  copy "docs/results/heldout_task$t"
  copy "training/sample_choice_t$t.json"
done
if [ "$CLONE" != "$KEPT" ]; then
  for p in test/samples.json test/input test/ground-truth test/expected_output \
           training/results.md; do copy "$p"; done
else
  echo "ship.sh: the rebuild's clone is gone: now bash training/make_samples.sh && bash test/make_expected.sh" >&2
fi

exp_stamp "pools"
sets_of() {  # sets_of TASK SEEDS...: the new release's table folders of those sets
  local t=$1 s
  shift
  for s in "$@"; do
    if [ "$s" = 1100-1119 ]; then echo "docs/results/heldout_task$t"
    elif [ "$s" = "${DECIDED[$t]}" ]; then echo "$R/heldout_candidate_task${t}_seeds$s"
    else echo "$R/rescored_task${t}_seeds$s"; fi
  done
}
olds_of() {  # olds_of TASK SEEDS...: the replaced release's table folders of those sets
  local t=$1 s
  shift
  for s in "$@"; do
    if [ "$s" = 1100-1119 ]; then echo "$R/heldout_release_task${t}_seeds1100-1119"
    elif [ "$s" = "${DECIDED[$t]}" ]; then echo "$R/heldout_release_task${t}_seeds$s"
    else echo "${OLD_SET[$t:$s]:-}"; fi
  done
}
joined() { local IFS=$1; shift; echo "$*"; }
for t in 1 2; do
  sv=T${t}_SETS
  read -r -a rest <<< "${!sv}"
  undecided=(1100-1119 "${rest[@]}")
  all=("${undecided[@]}" "${DECIDED[$t]}")
  mapfile -t new_u < <(sets_of "$t" "${undecided[@]}")
  mapfile -t new_a < <(sets_of "$t" "${all[@]}")
  (cd "$REPO" && "$PY" training/pool_heldout.py "${new_u[@]}" --seeds "$(joined , "${undecided[@]}")" \
    --reference equal --out "$R/pooled_rebuilt_task${t}_undecided.json")
  (cd "$REPO" && "$PY" training/pool_heldout.py "${new_a[@]}" --seeds "$(joined , "${all[@]}")" \
    --reference equal --out "$R/pooled_rebuilt_task${t}_all.json")
  # head to head where the replaced release has a table of the same set (Task 2's 1240-1259 it has not): on every
  # such set, and on those that decided nothing
  for which in all undecided; do
    if [ "$which" = all ]; then pick=("${all[@]}"); suffix=; else pick=("${undecided[@]}"); suffix=_undecided; fi
    both=()
    for s in "${pick[@]}"; do if [ -n "$(olds_of "$t" "$s")" ]; then both+=("$s"); fi; done
    mapfile -t new_b < <(sets_of "$t" "${both[@]}")
    mapfile -t old_b < <(olds_of "$t" "${both[@]}")
    (cd "$REPO" && "$PY" training/pool_heldout.py --compare "rebuilt=$(joined , "${new_b[@]}")" \
      "release=$(joined , "${old_b[@]}")" --reference release --seeds "$(joined , "${both[@]}")" \
      --out "$R/compare_releases_task$t$suffix.json")
  done
done
exp_stamp "done: now python training/readme_tables.py --write"
