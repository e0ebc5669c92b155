#!/usr/bin/env bash
# The plan of README.md (this folder), step by step and resumable (a step whose output exists is skipped):
#   bash docs/results/experiments/keep_confident_task1/run.sh [maps|fits|shift|heldout|judge ...]   (default: all)
# maps: the shipped members' out-of-fold maps (MODELS=shipped TASKS=1 training/reproduce.sh data oof) and their
# maps on the decision seeds 1200-1219; fits: A (the shipped search) and B (A + --keep-most-confident off,1,2) side
# by side, one core each; shift: B's threshold moved to the fold ensemble (only if B keeps the most confident);
# heldout: the then shipped release's table on seeds 1200-1219 (and B's); judge: B against it, head to head.
# "shipped" here is the release this experiment judged B against (release36ep_task1.json, resources/task1.json until
# B replaced it), so that a rerun after B shipped still compares the same two specs.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
PE="$NNUNET_BIN/panther-ensemble"
SEEDS=1200-1219
D=Dataset901_PhantomT1
W=$PANTHER_DATA/exp/keep_confident_task1
BASE=$REPO/docs/results/fit_task1/base.json   # the shipped fit's base spec (training/fit_default.py)
SHIPPED=$HERE/release36ep_task1.json
SHIPPED_TABLE=$HERE/heldout_release36ep_seeds$SEEDS
OOF=$PANTHER_DATA/oof/$D
STEPS=${*:-maps fits shift heldout judge}
stamp() { echo "[$(date +%H:%M:%S)] $*"; }
mkdir -p "$W"

fit_run() {  # fit_run NAME [EXTRA OPTIONS...]: the shipped fit's command (fit_default.py) with extra options
  local name=$1; shift
  if [ -f "$W/fit$name/report.md" ]; then stamp "fit $name: done"; return; fi
  rm -rf "$W/fit$name"
  "$PE" fit --base-spec "$BASE" --oof default="$OOF/default" DA5="$OOF/DA5" iso="$OOF/iso" \
    --gt "$nnUNet_raw/$D/labelsTr" --out "$W/fit$name" --objective mean-rank --folds 5 --seed 0 --threads 1 "$@" \
    > "$W/fit$name.log" 2>&1
}

chose_confident() { "$PY" -c "import json,sys; sys.exit(0 if json.load(open('$W/fitB/report.json'))['chosen']['postprocess'].get('keep_most_confident') else 1)"; }

heldout() {  # heldout SPEC OUT WORK: evaluate_heldout.py on the decision seeds (member maps shared through WORK)
  "$PY" "$REPO/training/evaluate_heldout.py" --task 1 --seeds "$SEEDS" --work "$3" --threads "${THREADS:-2}" \
    --members-spec "$BASE" --spec "$1" --out "$2"
}

for s in $STEPS; do
  case $s in
    maps)
      stamp "out-of-fold maps of the shipped members"
      (cd "$REPO" && MODELS=shipped TASKS=1 training/reproduce.sh data oof)
      stamp "member maps on seeds $SEEDS"
      "$PY" "$REPO/training/evaluate_heldout.py" --task 1 --seeds "$SEEDS" --work "$W/heldout_shipped" \
        --threads "${THREADS:-2}" --members-spec "$BASE" --stage maps --out "$SHIPPED_TABLE" ;;
    fits)
      stamp "fits A and B"
      fit_run A & a=$!
      fit_run B --keep-most-confident off,1,2 & b=$!
      wait "$a"; wait "$b"
      for n in A B; do
        mkdir -p "$HERE/fit_$n"
        cp "$W/fit$n/report.md" "$W/fit$n/report.json" "$W/fit$n/tradeoff.png" "$W/fit$n/spec.json" "$HERE/fit_$n/"
      done ;;
    shift)
      if ! chose_confident; then stamp "B does not keep the most confident component: nothing to judge"; continue; fi
      if [ ! -f "$HERE/candidate_task1.json" ]; then
        "$PY" - "$W/fitB/spec.json" "$HERE/candidate_task1.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["description"] = ("Task 1 candidate of docs/results/experiments/keep_confident_task1: the shipped members, "
                       "fitted with --keep-most-confident off,1,2 on their out-of-fold maps; not shipped unless judged")
open(sys.argv[2], "w").write(json.dumps(spec, indent=2) + "\n")
PY
      fi
      "$PY" "$REPO/training/fold_shift.py" --spec "$W/fitB/spec.json" --task 1 --seeds 1300-1309 \
        --work "$PANTHER_DATA/shift/task1" --threads "${THREADS:-2}" --out "$HERE/fold_shift.json" \
        --apply-to "$HERE/candidate_task1.json" ;;
    heldout)
      heldout "$SHIPPED" "$SHIPPED_TABLE" "$W/heldout_shipped"
      if chose_confident; then
        mkdir -p "$W/heldout_candidate"
        for d in images gt maps; do ln -sfn "$W/heldout_shipped/$d" "$W/heldout_candidate/$d"; done
        heldout "$HERE/candidate_task1.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate"
      fi ;;
    judge)
      if ! chose_confident; then continue; fi
      "$PE" evaluate --pred "$W/heldout_candidate/pred/fitted" "$W/heldout_shipped/pred/fitted" \
        --names keep_confident shipped --gt "$W/heldout_shipped/gt" --bootstrap 2000 --reference shipped \
        --out "$HERE/head_to_head_seeds$SEEDS" ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
stamp "done"
