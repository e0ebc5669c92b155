# shellcheck shell=bash
# The steps that the release experiments of docs/results/experiments/ share (source it after training/env.sh and
# set REPO): a candidate against a shipped release, judged head to head on held-out phantoms by a rule fixed
# before any map. Each function is resumable: what it has made is kept.

exp_stamp() { echo "[$(date +%H:%M:%S)] $*"; }

exp_check_phases() {  # exp_check_phases "PHASES" PHASE...: exit 2 naming a misspelt phase, before anything runs
  local phases=$1 s; shift
  for s in "$@"; do
    if [[ " $phases " != *" $s "* ]]; then
      echo "run.sh: unknown phase '$s' (the phases: $phases)" >&2
      exit 2
    fi
  done
}

exp_has_step() {  # exp_has_step TIMINGS STEP: exit 0 when reproduce.sh's timings file records STEP
  "$PY" -c 'import json, sys; sys.exit(sys.argv[2] not in json.load(open(sys.argv[1]))["steps"])' "$1" "$2" 2>/dev/null
}

exp_clone() {  # exp_clone COMMIT DEST: a clone of this repo ($REPO) checked out at COMMIT, once (a resumed run keeps it)
  local commit; commit=$(git -C "$REPO" rev-parse "$1")
  if [ -d "$2/.git" ]; then return; fi
  exp_stamp "cloning $REPO at $commit into $2"
  git clone -q --no-checkout "$REPO" "$2"
  git -C "$2" checkout -q "$commit"
}

exp_unpack() {  # exp_unpack COMMIT DEST PATHS...: files of a commit, once (a release judged against stays as committed)
  local commit=$1 dest=$2; shift 2
  if [ -d "$dest" ]; then return; fi
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  git -C "$REPO" archive "$commit" "$@" | tar -x -C "$dest.tmp"
  mv "$dest.tmp" "$dest"
}

exp_train_fold() {  # exp_train_fold RUNS DATASET TRAINER PLANS FOLD EPOCHS LOG [ARGS...]: one specialist fold trained
  # (or continued from its checkpoint) to EPOCHS with training/reproduce.sh's train arguments and the CPU levers, on
  # one torch thread (two folds run side by side) and the augmentation where reproduce.sh's train step puts it
  # (T_N_PROC_DA: env.sh's workers unless set); ARGS are added last (argparse keeps the last of a repeated option)
  local runs=$1 dataset=$2 trainer=$3 plans=$4 fold=$5 epochs=$6 log=$7; shift 7
  nnUNet_results=$runs OMP_NUM_THREADS=1 nnUNet_n_proc_DA=${T_N_PROC_DA:-${nnUNet_n_proc_DA:-2}} "$PY" "$REPO/training/train_specialist.py" --dataset "$dataset" \
    --trainer "$trainer" --plans "$plans" --fold "$fold" --epochs "$epochs" --lr 0.005 --tumour-ce-weight 4 \
    --cpu-autocast auto --channels-last on --skip-validation --require-pseudo-dice tumor=0.1 "$@" >> "$log" 2>&1
}

exp_oof() {  # exp_oof MODEL_FOLDER RAW_DATASET OUT LOG: a member's out-of-fold maps (each fold on its validation cases)
  if [ -f "$3/.complete" ]; then exp_stamp "out-of-fold maps $3: done"; return; fi
  exp_stamp "out-of-fold maps $3"
  "$PY" "$REPO/training/predict_oof.py" --model "$1" --raw "$2" --out "$3" > "$4" 2>&1
  touch "$3/.complete"
}

exp_fit() {  # exp_fit BASE_SPEC OOF_ROOT LABELS OUT THREADS LOG [SEARCH...]: the shipped fit's command
  # (training/fit_default.py: mean rank over the five metrics, nested 5-fold CV, seed 0) on default, DA5 and iso
  local base=$1 oof=$2 labels=$3 out=$4 threads=$5 log=$6; shift 6
  if [ -f "$out/report.md" ]; then exp_stamp "fit $out: done"; return; fi  # written last
  exp_stamp "fit $out"
  rm -rf "$out"
  "$NNUNET_BIN/panther-ensemble" fit --base-spec "$base" --oof default="$oof/default" DA5="$oof/DA5" iso="$oof/iso" \
    --gt "$labels" --out "$out" --objective mean-rank --folds 5 --seed 0 --threads "$threads" "$@" > "$log" 2>&1
}

exp_keep_fit() {  # exp_keep_fit FIT_WORK DEST: the fit's report, spec and trade-off picture, committed beside the plan
  mkdir -p "$2"
  cp "$1/report.md" "$1/report.json" "$1/tradeoff.png" "$1/spec.json" "$2/"
}

exp_same_choice() {  # exp_same_choice SPEC_A SPEC_B: exit 0 when two fitted specs choose the same members' weights,
  # decision and rules (a trial whose fit chose what is already judged has nothing new to judge)
  "$PY" - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
key = lambda s: (s["members"], s["decision"], s["postprocess"])
sys.exit(0 if key(a) == key(b) else 1)
PY
}

exp_candidate_spec() {  # exp_candidate_spec FITTED_SPEC OUT DESCRIPTION: the fitted spec, described, once
  if [ -f "$2" ]; then return; fi
  "$PY" - "$1" "$2" "$3" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["description"] = sys.argv[3]
open(sys.argv[2], "w").write(json.dumps(spec, indent=2) + "\n")
PY
}

exp_shift() {  # exp_shift TASK FITTED_SPEC MODEL_DIR WORK THREADS CANDIDATE DESCRIPTION: the candidate spec (once),
  # its threshold moved by the fold-ensemble transfer on the unlabeled seeds 1300-1309 (training/fold_shift.py;
  # fold_shift.json beside the candidate)
  exp_candidate_spec "$2" "$6" "$7"
  "$PY" "$REPO/training/fold_shift.py" --spec "$2" --task "$1" --seeds 1300-1309 --model-dir "$3" \
    --work "$4" --threads "$5" --out "$(dirname "$6")/fold_shift.json" --apply-to "$6"
}

exp_heldout() {  # exp_heldout TASK SEEDS MODEL_DIR MEMBERS_SPEC SPEC OUT WORK THREADS [--stage maps]
  "$PY" "$REPO/training/evaluate_heldout.py" --task "$1" --seeds "$2" --model-dir "$3" --members-spec "$4" \
    --spec "$5" --out "$6" --work "$7" --threads "$8" "${@:9}"
}

exp_share_maps() {  # exp_share_maps FROM TO: TO scores FROM's phantoms and member maps (another spec, the same members)
  local d
  mkdir -p "$2"
  for d in images gt maps; do ln -sfn "$1/$d" "$2/$d"; done
}

exp_head_to_head() {  # exp_head_to_head NEW_WORK OLD_WORK NEW_NAME OLD_NAME OUT: fitted masks, paired bootstrap
  diff -r -q "$1/gt" "$2/gt"  # the same phantoms, or the comparison means nothing
  "$NNUNET_BIN/panther-ensemble" evaluate --pred "$1/pred/fitted" "$2/pred/fitted" --names "$3" "$4" --gt "$2/gt" \
    --bootstrap 2000 --reference "$4" --out "$5"
}

exp_rule_says_ship() {  # exp_rule_says_ship HEAD_TO_HEAD NEW_NAME OLD_NAME: exit 0 when the rule says ship
  # the rule of every release experiment: a better mean rank, and no paired 95% interval wholly on the worse side
  "$PY" - "$@" <<'PY'
import json, sys
from pathlib import Path
h, new, old = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
board = {r["name"]: r["mean_rank"] for r in json.loads((h / "leaderboard.json").read_text())["leaderboard"]}
paired = json.loads((h / "bootstrap.json").read_text())["paired"][new]
lower_is_better = {"hd95", "masd", "volume_rmse_mm3"}
worse = [m for m, d in paired.items() if (d["low"] > 0 if m in lower_is_better else d["high"] < 0)]
if not board[new] < board[old] or worse:
    sys.exit(f"{h}: the rule says no (mean rank {board[new]} against {board[old]}; "
             f"intervals wholly on the worse side: {worse or 'none'})")
print(f"{h}: the rule says ship (mean rank {board[new]} against {board[old]})")
PY
}

exp_same_spec() {  # exp_same_spec SPEC JUDGED: a ship step's check that the spec it wrote is the judged candidate
  # (every parsed field but the description)
  "$PY" - "$1" "$2" <<'PY'
import sys
from panther_ensemble.spec import load_spec
a, b = ({k: v for k, v in load_spec(f).to_json().items() if k != "description"} for f in sys.argv[1:])
sys.exit(0 if a == b else f"{sys.argv[1]} is not the judged candidate {sys.argv[2]}:\n{a}\n{b}")
PY
}

exp_repath_pooled() {  # exp_repath_pooled FOLDER MOVED_TO: the pooled and --compare files under docs/results that name
  # the held-out set FOLDER (a repo path) rewritten with MOVED_TO, by the same command (training/pool_heldout.py repath)
  "$PY" - "$REPO" "$1" "$2" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[1]) / "training"))
from pool_heldout import repath
for f in repath(Path(sys.argv[1]), sys.argv[2], sys.argv[3]):
    print(f"{f}: rebuilt with {sys.argv[3]}")
PY
}

exp_ship_fit() {  # exp_ship_fit TASK DATASET WORK SEARCH FITTED_SPEC: docs/results/fit_task<N> and resources/task<N>.json
  # by training/fit_default.py, which keeps the experiment's own fit (WORK/fit, on WORK/oof) as current: the same
  # command on the same maps; checked against the experiment's fitted spec
  local task=$1 dataset=$2 work=$3 search=$4 fitted=$5 fw=$3/fit_default
  if [ ! -f "$fw/fit/report.md" ]; then
    rm -rf "$fw" && mkdir -p "$fw"
    "$PY" -c 'import json, sys; sys.path.insert(0, sys.argv[1]); from fit_default import base_spec
print(json.dumps(base_spec(int(sys.argv[2]), ["default", "DA5", "iso"]), indent=2))' "$REPO/training" "$task" > "$fw/base.json"
    echo "$search" > "$fw/search.txt"
    cmp "$fw/base.json" "$work/release/docs/results/fit_task$task/base.json"  # the base spec the experiment fitted with
    # a copy (-L: WORK/fit may be a link, which fit_default.py would fit into), newer than its inputs: kept as current
    sleep 1 && cp -rL "$work/fit" "$fw/fit"
  fi
  # shellcheck disable=SC2154  # nnUNet_raw: training/env.sh, sourced before this file
  "$PY" "$REPO/training/fit_default.py" --task "$task" --oof "$work/oof" --gt "$nnUNet_raw/$dataset/labelsTr" \
    --work "$fw" --report "$REPO/docs/results/fit_task$task" --search "$search"
  cmp "$fw/fit/spec.json" "$fitted"
}
