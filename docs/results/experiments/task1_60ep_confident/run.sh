#!/usr/bin/env bash
# The plan of README.md (this folder), step by step and resumable (maps and fits already made are kept):
#   bash docs/results/experiments/task1_60ep_confident/run.sh [maps|fit|shift|heldout|judge ...]   (default: all)
# maps: the training phantoms, the 60-epoch members' out-of-fold maps, and both releases' member maps on the
# decision seeds; fit: the shipped Task 1 search on the 60-epoch maps; shift: the fold-ensemble threshold transfer;
# heldout: both tables on the decision seeds; judge: the candidate against the release, head to head.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../../.." && pwd)
# shellcheck source=../../../../training/env.sh
source "$REPO/training/env.sh"
PE="$NNUNET_BIN/panther-ensemble"
CANDIDATE_COMMIT=73ff311  # the 60-epoch float16 members (docs/results/experiments/task1_60ep/candidate/model_weights)
RELEASE_COMMIT=b1a515c    # the release judged against: 36-epoch members, keep the most confident component
SEEDS=1220-1239
D=Dataset901_PhantomT1
W=$PANTHER_DATA/exp/task1_60ep_confident
NEW=$W/model_weights
REL=$W/release   # the release's files as committed (model_weights/, resources/task1.json, the fit's base spec)
BASE=$REL/docs/results/fit_task1/base.json  # the members of both releases (same names, models and folds)
MEMBERS=(default:nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres DA5:nnUNetTrainerPhantomDA5__nnUNetPlansPhantom__3d_fullres
         iso:nnUNetTrainerPhantom__nnUNetPlansPhantomIso__3d_fullres)
# shellcheck disable=SC2054  # the commas are the option's own value list
SEARCH=(--keep-most-confident off,1,2)  # FIT_SEARCH[1] of training/reproduce.sh at $RELEASE_COMMIT
STEPS=${*:-maps fit shift heldout judge}
THREADS=${THREADS:-2}
stamp() { echo "[$(date +%H:%M:%S)] $*"; }
mkdir -p "$W" "$PANTHER_DATA/logs"

unpack() {  # unpack COMMIT DEST PATHS...: files of a commit, once
  local commit=$1 dest=$2; shift 2
  if [ -d "$dest" ]; then return; fi
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  git -C "$REPO" archive "$commit" "$@" | tar -x -C "$dest.tmp"
  mv "$dest.tmp" "$dest"
}
unpack "$RELEASE_COMMIT" "$REL" model_weights/$D resources/task1.json docs/results/fit_task1/base.json
if [ ! -d "$NEW" ]; then
  unpack "$CANDIDATE_COMMIT" "$W/candidate_files" docs/results/experiments/task1_60ep/candidate/model_weights
  mv "$W/candidate_files/docs/results/experiments/task1_60ep/candidate/model_weights" "$NEW"
  rm -rf "$W/candidate_files"
fi

oof() {  # oof MEMBER:FOLDER: the member's out-of-fold maps (each fold on its validation cases)
  local name=${1%%:*} folder=${1#*:}
  if [ -f "$W/oof/$name/.complete" ]; then stamp "oof $name: done"; return; fi
  stamp "oof $name"
  "$PY" "$REPO/training/predict_oof.py" --model "$NEW/$D/$folder" --raw "$nnUNet_raw/$D" --out "$W/oof/$name" \
    > "$PANTHER_DATA/logs/exp60c_oof_$name.log" 2>&1
  touch "$W/oof/$name/.complete"
}

heldout() {  # heldout MODEL_DIR SPEC OUT WORK [--stage maps]: evaluate_heldout.py on the decision seeds
  "$PY" "$REPO/training/evaluate_heldout.py" --task 1 --seeds "$SEEDS" --model-dir "$1" --members-spec "$BASE" \
    --spec "$2" --out "$3" --work "$4" --threads "$5" "${@:6}"
}

for s in $STEPS; do
  case $s in
    maps)
      stamp "training phantoms"
      (cd "$REPO" && MODELS=shipped TASKS=1 training/reproduce.sh data)
      # two at a time, one thread each; the release's maps on the decision seeds beside the third
      oof "${MEMBERS[0]}" & a=$!; oof "${MEMBERS[1]}" & b=$!; wait "$a"; wait "$b"
      oof "${MEMBERS[2]}" & a=$!
      stamp "release member maps on seeds $SEEDS"
      heldout "$REL/model_weights" "$REL/resources/task1.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" 1 \
        --stage maps > "$PANTHER_DATA/logs/exp60c_maps_release.log" 2>&1
      wait "$a"
      stamp "60-epoch member maps on seeds $SEEDS"
      heldout "$NEW" "$REL/resources/task1.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" "$THREADS" \
        --stage maps > "$PANTHER_DATA/logs/exp60c_maps_candidate.log" 2>&1 ;;
    fit)
      if [ -f "$W/fit/report.md" ]; then stamp "fit: done"; else
        stamp "fit"
        rm -rf "$W/fit"
        "$PE" fit --base-spec "$BASE" --oof default="$W/oof/default" DA5="$W/oof/DA5" iso="$W/oof/iso" \
          --gt "$nnUNet_raw/$D/labelsTr" --out "$W/fit" --objective mean-rank --folds 5 --seed 0 --threads "$THREADS" \
          "${SEARCH[@]}" > "$PANTHER_DATA/logs/exp60c_fit.log" 2>&1
      fi
      mkdir -p "$HERE/fit"
      cp "$W/fit/report.md" "$W/fit/report.json" "$W/fit/tradeoff.png" "$W/fit/spec.json" "$HERE/fit/" ;;
    shift)
      if [ ! -f "$HERE/candidate_task1.json" ]; then
        "$PY" - "$W/fit/spec.json" "$HERE/candidate_task1.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["description"] = ("Task 1 candidate of docs/results/experiments/task1_60ep_confident: the 60-epoch members "
                       "(commit 73ff311), fitted with the shipped search on their out-of-fold maps; not shipped unless judged")
open(sys.argv[2], "w").write(json.dumps(spec, indent=2) + "\n")
PY
      fi
      "$PY" "$REPO/training/fold_shift.py" --spec "$W/fit/spec.json" --task 1 --seeds 1300-1309 --model-dir "$NEW" \
        --work "$W/shift" --threads "$THREADS" --out "$HERE/fold_shift.json" --apply-to "$HERE/candidate_task1.json" ;;
    heldout)
      heldout "$REL/model_weights" "$REL/resources/task1.json" "$HERE/heldout_release_seeds$SEEDS" "$W/heldout_release" "$THREADS"
      heldout "$NEW" "$HERE/candidate_task1.json" "$HERE/heldout_candidate_seeds$SEEDS" "$W/heldout_candidate" "$THREADS"
      diff -r -q "$W/heldout_release/gt" "$W/heldout_candidate/gt" ;;  # the same phantoms, or the comparison means nothing
    judge)
      "$PE" evaluate --pred "$W/heldout_candidate/pred/fitted" "$W/heldout_release/pred/fitted" \
        --names candidate_60ep release --gt "$W/heldout_release/gt" --bootstrap 2000 --reference release \
        --out "$HERE/head_to_head_seeds$SEEDS" ;;
    *) echo "run.sh: unknown step '$s'" >&2; exit 2 ;;
  esac
done
stamp "done"
