#!/usr/bin/env bash
# Rebuild the phantom specialists from an empty folder, step by step and resumable (every step skips
# what is already done; an interrupted training continues from its last checkpoint, nnU-Net's --c):
#
#   data      phantoms v2: Dataset903 pre-training (Task 1 AND Task 2 looks, seeds 2000-2039 each),
#             Dataset901 Task 1 and Dataset902 Task 2 (seeds 0-59)
#   plan      nnU-Net's planner, then our two CPU-sized plans per task (A: nnUNetPlansPhantom, B: nnUNetPlansPhantomIso)
#             and preprocessing with each
#   pretrain  one network on both looks (Dataset903, fold all), in two stages: anatomy (nnU-Net's loss), then
#             tumour focus (tumour cross-entropy weight 4, more foreground patches); every specialist starts from it
#   seed      (only when named) each fold of the shipped model_weights/ written into $nnUNet_results as a run
#             stopped at its epoch (training/seed_from_shipped.py), so that train goes on from the shipped members
#             instead of from the pre-trained network: T_EPOCHS=60 TASKS=1 training/reproduce.sh seed train ...
#             (a fold that already has a checkpoint is left alone); such a run (seed without pretrain) makes
#             data and plan for the tasks in TASKS only, without the pre-training dataset
#   train     per task: default (plans A), DA5 (plans A), iso (default augmentation, plans B); folds 0 and 1
#   oof       out-of-fold probability maps of every member (fold k's model on fold k's validation cases,
#             with our engine, as the shipped ensemble runs it)
#   export    model_weights/ (float16, inference-only checkpoints) and training/results.md
#   fit       panther-ensemble fit on the out-of-fold maps; resources/task1.json and task2.json
#   shift     the fitted threshold moved to where the shipped fold ensemble decides the volume that one fold
#             decides at it (unlabeled phantoms, seeds 1300-1309; training/fold_shift.py)
#   heldout   20 fresh phantoms per task: every member, equal weights and the fitted ensemble, scored
#   baseline  intensity-threshold baselines (whole body, and inside the true pancreas)
#   samples   sample cases (test/input), their expected outputs, the tiny real-trainer fixture
#
# Usage: training/reproduce.sh [STEP...]        (default: all of them, in that order)
#        MODELS=shipped training/reproduce.sh data oof fit heldout
#                                      re-scores the committed model_weights/ on a fresh machine, without
#                                      the plan, pretrain and train steps (hours): the members are the shipped
#                                      float16 checkpoints, the folds those of training/splits.py
#        DEVICE=cuda nnUNet_n_proc_DA=12 training/reproduce.sh pretrain train oof
#                                      the same recipe on a GPU machine (nnU-Net's GPU path: mixed precision);
#                                      a torch that sees no GPU stops the step with one line, no CPU fallback
# Bulk outputs go to $PANTHER_DATA (default /work/data); the repo gets model_weights/, resources/,
# docs/results/, test/ and training/{results.md,timings.json,baseline_t*.json}.
# Each step's wall time is appended to training/timings.json.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=run_from_copy.sh
source "${REPRODUCE_HERE:-$(dirname "${BASH_SOURCE[0]}")}/run_from_copy.sh"
run_from_copy REPRODUCE_HERE "$@"  # a run of several hours must not read the repo's file as it is edited
HERE=$REPRODUCE_HERE
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$HERE/env.sh"
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results" "$PANTHER_DATA/logs"
LOGS=$PANTHER_DATA/logs
PE="$NNUNET_BIN/panther-ensemble"
P_EPOCHS=${P_EPOCHS:-60}    # x 50 iterations: pre-training stage 1 (anatomy), both looks
P2_EPOCHS=${P2_EPOCHS:-24}  # x 50 iterations: pre-training stage 2 (tumour focus), from stage 1
P2_LR=${P2_LR:-}            # stage 2's initial learning rate (empty: the trainer's 0.01); the untried remedy of
                            # training/README.md "A rebuild that did not learn" is P2_LR=0.005 (the specialists')
# x 50 iterations: each specialist fold, from the pre-trained network (a finished shorter run is extended from its
# checkpoint_final), per task: the shipped members' schedules (Task 1 60 since 2026-12-04: the 84-epoch members of
# docs/results/experiments/task1_84ep shipped on 2026-12-06 and lost to them on new seeds the same day,
# docs/results/experiments/task1_back60; Task 2 60 since 2026-12-05, its epochs 36 -> 60 with the CPU levers below
# since 2026-12-06); T_EPOCHS sets both
declare -A T_EPOCHS_OF=([1]="${T_EPOCHS:-60}" [2]="${T_EPOCHS:-60}")
T_LR=${T_LR:-0.005}
T_TUMOUR_W=${T_TUMOUR_W:-4}  # tumour cross-entropy weight of the specialists (as in pre-training stage 2)
TRAIN_TRIES=${TRAIN_TRIES:-3}  # runs per network when one does not learn (training/collapse.py: nnU-Net is unseeded)
HELDOUT_SEEDS=${HELDOUT_SEEDS:-1100-1119}
SHIFT_SEEDS=${SHIFT_SEEDS:-1300-1309}  # unlabeled use only (the shift step never reads their labels)
TASKS=${TASKS:-1 2}         # the tasks that train ... samples work on, e.g. TASKS=1 to finish Task 1 first
DEVICE=${DEVICE:-cpu}       # where training and maps run: cpu, or cuda on a GPU machine (train_specialist.py --device)
# the specialists' CPU levers (train_specialist.py --cpu-autocast, --channels-last; training/trainers.py _CpuSpeed):
# bfloat16 autocast where the CPU runs it natively, and channels_last; 2.2x faster epochs here, the same members by
# docs/results/experiments/task2_bf16. Pre-training uses them too (P_...; 2.4x faster, and it learned on the first try
# in both timed rebuilds of docs/results/experiments/rebuild_levers, whose specialists matched the shipped ones)
T_CPU_AUTOCAST=${T_CPU_AUTOCAST:-auto}
T_CHANNELS_LAST=${T_CHANNELS_LAST:-on}
P_CPU_AUTOCAST=${P_CPU_AUTOCAST:-${TRAIN_CPU_AUTOCAST:-auto}}
P_CHANNELS_LAST=${P_CHANNELS_LAST:-${TRAIN_CHANNELS_LAST:-on}}
# where the specialists' augmentation runs (nnU-Net's nnUNet_n_proc_DA): env.sh's worker processes, everywhere.
# In the training process (T_N_PROC_DA=0, nnU-Net's SingleThreadedAugmenter, the same transforms) the epochs were
# 1.04-1.33x faster on the CPU (bench/results/training-loader*.json), and it was the default until the timed rebuild
# that measured it (docs/results/experiments/rebuild_fast/) found Task 1's DA5 member 0.001 below the out-of-fold
# floor its plan had fixed: by that plan the lever is suspect and stays off until measured apart.
T_N_PROC_DA=${T_N_PROC_DA:-$nnUNet_n_proc_DA}
MODELS=${MODELS:-trained}   # trained: the members in $nnUNet_results; shipped: the members in model_weights/
ORDER="data plan pretrain seed train oof export fit shift heldout baseline samples"
ALL=${ORDER/ seed/}          # the rebuild from an empty folder: every step but seed
STEPS=${*:-$ALL}
for s in $STEPS; do  # a misspelt step would otherwise be skipped without a word
  if [[ " $ORDER " != *" $s "* ]]; then
    echo "reproduce.sh: unknown step '$s' (the steps: $ORDER)" >&2
    exit 2
  fi
done
if [ "$MODELS" = shipped ]; then
  for s in plan pretrain seed train export; do
    if [[ " $STEPS " == *" $s "* ]]; then
      echo "reproduce.sh: MODELS=shipped scores the committed model_weights/; step '$s' builds models (leave it out)" >&2
      exit 2
    fi
  done
elif [ "$MODELS" != trained ]; then
  echo "reproduce.sh: MODELS must be 'trained' or 'shipped', got '$MODELS'" >&2
  exit 2
fi
stamp() { echo "[$(date +%H:%M:%S)] $*"; }
wait_all() {  # wait_all PID...: waits for every one, then fails with the first failure's status (none left running)
  local pid rc=0 status
  for pid in "$@"; do
    status=0
    wait "$pid" || status=$?
    if (( status != 0 && rc == 0 )); then rc=$status; fi
  done
  return "$rc"
}
stop_job() {  # stop_job PID: ends a background job and every process it started; its exit status is not asked
  local tree=("$1") i=0 child
  while (( i < ${#tree[@]} )); do  # each process frozen before its children are listed: none starts another
    kill -STOP "${tree[i]}" 2> /dev/null || true
    while read -r child; do tree+=("$child"); done < <(pgrep -P "${tree[i]}" || true)
    i=$(( i + 1 ))
  done
  kill -TERM "${tree[@]}" 2> /dev/null || true  # (delivered on CONT)
  kill -CONT "${tree[@]}" 2> /dev/null || true
  wait "$1" 2> /dev/null || true
}
cores() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }  # nproc alone answers env.sh's OMP_NUM_THREADS=1

# members: name -> trainer, plans
declare -A TRAINER=([default]=nnUNetTrainerPhantom [DA5]=nnUNetTrainerPhantomDA5 [iso]=nnUNetTrainerPhantom)
declare -A PLANS=([default]=nnUNetPlansPhantom [DA5]=nnUNetPlansPhantom [iso]=nnUNetPlansPhantomIso)
MEMBERS="default DA5 iso"
declare -A DS=([0]=Dataset903_PhantomPretrain [1]=Dataset901_PhantomT1 [2]=Dataset902_PhantomT2)
# plans per dataset: "name spacing_z spacing_y spacing_x patch"
declare -A PLAN_A=([0]="nnUNetPlansPhantom 2.5 2.0 2.0 24,80,80" [1]="nnUNetPlansPhantom 3.0 2.0 2.0 24,80,80"
                   [2]="nnUNetPlansPhantom 2.0 2.0 2.0 24,80,80")
declare -A PLAN_B=([1]="nnUNetPlansPhantomIso 2.5 2.5 2.5 32,64,64" [2]="nnUNetPlansPhantomIso 2.5 2.5 2.5 32,64,64")
model_dir() {  # model_dir TASK MEMBER: the member's nnU-Net model folder (fold_0, fold_1)
  local root=$nnUNet_results
  if [ "$MODELS" = shipped ]; then root=$REPO/model_weights; fi
  echo "$root/${DS[$1]}/${TRAINER[$2]}__${PLANS[$2]}__3d_fullres"
}
PRE1=$nnUNet_results/${DS[0]}/nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres/fold_all/checkpoint_final.pth
PRE=$nnUNet_results/${DS[0]}/nnUNetTrainerPhantomTumourFocus__nnUNetPlansPhantom__3d_fullres/fold_all/checkpoint_final.pth

timed() {  # timed STEP: run step_STEP and record its wall time
  local t0; t0=$(date +%s)
  "step_$1"
  local file=$HERE/timings.json
  if [ "$MODELS" = shipped ]; then file=$HERE/timings_shipped.json; fi  # not a step of the from-scratch rebuild
  file=${TIMINGS_FILE:-$file}  # an experiment that borrows a step records it apart from the rebuild's timings
  "$PY" "$HERE/timings.py" "$file" "$1" $(( $(date +%s) - t0 )) "$TASKS"
}

gen() {  # gen TASK SEEDS DATASET_ID NAME: phantoms into the raw dataset, in two processes
  local task=$1 seeds=$2 id=$3 name=$4 a b mid
  a=${seeds%-*}; b=${seeds#*-}; mid=$(( (a + b) / 2 ))
  "$PE" phantom dataset --task "$task" --seeds "$a-$mid" --out "$nnUNet_raw" --dataset-id "$id" --dataset-name "$name" \
    > "$LOGS/gen_${id}_t${task}_a.log" 2>&1 &
  local pid=$!
  "$PE" phantom dataset --task "$task" --seeds "$((mid + 1))-$b" --out "$nnUNet_raw" --dataset-id "$id" --dataset-name "$name" \
    > "$LOGS/gen_${id}_t${task}_b.log" 2>&1
  wait "$pid"
}

# the datasets that data and plan make: the pre-training's (0) only when the members are trained from it; a run
# that seeds them from shipped ones (`seed`, without `pretrain`) or scores shipped ones needs the tasks' own only
# PRETRAINING_DATA=no: data and plan make the TASKS datasets only (an experiment that trains from its own seeds)
needs_pretraining_data() {
  [ "${PRETRAINING_DATA:-auto}" != no ] && [ "$MODELS" = trained ] && { has pretrain || ! has seed; }
}
step_data() {
  local k datasets="1 2 0"
  if ! needs_pretraining_data; then datasets=$TASKS; fi
  for k in $datasets; do
    local D=${DS[$k]} id=${DS[$k]:7:3} name=${DS[$k]#*_}
    if [ -f "$nnUNet_raw/$D/.complete" ]; then stamp "$D: already generated"; continue; fi
    stamp "generating $D"
    rm -rf "${nnUNet_raw:?}/$D"
    if [ "$k" = 0 ]; then gen 1 2000-2039 "$id" "$name"; gen 2 2000-2039 "$id" "$name"
    else gen "$k" 0-59 "$id" "$name"; fi
    # one dataset.json for all cases written (two tasks in Dataset903)
    "$PY" - "$nnUNet_raw/$D" <<'PY'
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
meta = json.loads((root / "dataset.json").read_text())
cases = sorted(p.name[:-4] for p in (root / "labelsTr").glob("*.mha"))
meta["numTraining"] = len(cases)
tasks = sorted({c.split("_")[1] for c in cases})
seeds = {t: sorted(int(c.split("_")[2]) for c in cases if c.split("_")[1] == t) for t in tasks}
meta["description"] = "synthetic PANTHER phantoms v2 (panther_ensemble.phantoms): " + "; ".join(
    f"Task {t[1]} seeds {s[0]}-{s[-1]}" for t, s in seeds.items())
(root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
print(root.name, meta["numTraining"], meta["description"])
PY
    touch "$nnUNet_raw/$D/.complete"
  done
}

plan_one() {  # plan_one K "name sz sy sx patch" [--no-splits]
  local k=$1 id=${DS[$1]:7:3} extra=${3:-}
  read -r pname sz sy sx patch <<< "$2"
  local ready="$nnUNet_preprocessed/${DS[$k]}/.ready_$pname"
  if [ -f "$ready" ]; then stamp "${DS[$k]} $pname: already preprocessed"; return; fi
  stamp "preprocessing ${DS[$k]} with $pname ($sz x $sy x $sx mm, patch $patch)"
  "$PY" "$HERE/make_plans.py" "$id" "$sz" "$sy" "$sx" --patch "$patch" --plans-name "$pname" ${extra:+"$extra"}
  "$NNUNET_BIN/nnUNetv2_preprocess" -d "$id" -plans_name "$pname" -c 3d_fullres -np 2 > "$LOGS/preprocess_${id}_$pname.log" 2>&1
  touch "$ready"
}

step_plan() {
  local k datasets="0 1 2"
  if ! needs_pretraining_data; then datasets=$TASKS; fi
  for k in $datasets; do
    local id=${DS[$k]:7:3}
    if [ ! -f "$nnUNet_preprocessed/${DS[$k]}/nnUNetPlans.json" ]; then
      stamp "nnU-Net planning ${DS[$k]}"
      "$NNUNET_BIN/nnUNetv2_plan_and_preprocess" -d "$id" -c 3d_fullres --verify_dataset_integrity --no_pp -np 2 \
        > "$LOGS/plan_$id.log" 2>&1
    fi
    if [ "$k" = 0 ]; then plan_one 0 "${PLAN_A[0]}" --no-splits
    else plan_one "$k" "${PLAN_A[$k]}"; plan_one "$k" "${PLAN_B[$k]}"; fi
  done
}

learn() {  # learn LOG FLOOR ARGS...: train_specialist.py ARGS until nnU-Net's pseudo Dice clears FLOOR, one or more
  # LABEL=VALUE words (TRAIN_TRIES runs)
  local log=$1 floor=$2 try rc; shift 2
  for (( try = 1; try <= TRAIN_TRIES; try++ )); do
    rc=0
    # shellcheck disable=SC2086 # FLOOR: one or more LABEL=VALUE words
    "$PY" "$HERE/train_specialist.py" "$@" --device "$DEVICE" --require-pseudo-dice $floor >> "$log" 2>&1 || rc=$?
    if (( rc != 3 )); then return "$rc"; fi  # 3: the run collapsed and was moved aside (collapse.py)
    stamp "run $try of $TRAIN_TRIES did not learn ($floor not reached; $log)" >&2
  done
  echo "reproduce.sh: $TRAIN_TRIES runs did not learn ($floor not reached): see $log" >&2
  return 3
}

step_pretrain() {
  # one training process: it gets every core as torch threads (the specialists' folds run side by side, one each)
  local threads; threads=$(cores)
  stamp "pre-training stage 1 on ${DS[0]} (both looks, fold all, $threads threads)"
  # stage 1 must learn the pancreas and let its tumour head fire: every stage 2 that learned the tumour started
  # from a stage 1 at tumour 0.35-0.64, and from one at 0.000 no stage 2 did, in five runs of three kinds
  # (docs/results/experiments/pretrain_retry/): such a stage 1 is trained afresh, not built on
  OMP_NUM_THREADS=$threads learn "$LOGS/pretrain_903.log" "pancreas=0.3 tumor=0.1" --dataset 903 --trainer nnUNetTrainerPhantom \
    --fold all --epochs "$P_EPOCHS" --cpu-autocast "$P_CPU_AUTOCAST" --channels-last "$P_CHANNELS_LAST" --skip-validation
  # a stage 2 (and later a specialist) that started from an older network than today's is moved aside and
  # trained afresh by train_specialist.py itself (training/lineage.py)
  stamp "pre-training stage 2 (tumour focus) on ${DS[0]}"
  OMP_NUM_THREADS=$threads learn "$LOGS/pretrain2_903.log" tumor=0.1 --dataset 903 \
    --trainer nnUNetTrainerPhantomTumourFocus --fold all --epochs "$P2_EPOCHS" ${P2_LR:+--lr "$P2_LR"} \
    --pretrained "$PRE1" --cpu-autocast "$P_CPU_AUTOCAST" --channels-last "$P_CHANNELS_LAST" --skip-validation
}

step_seed() {
  local t m f src out
  for t in $TASKS; do
    for m in $MEMBERS; do
      src=$(MODELS=shipped model_dir "$t" "$m")
      for f in 0 1; do
        out=$(model_dir "$t" "$m")/fold_$f
        if compgen -G "$out/checkpoint_*.pth" > /dev/null; then
          stamp "Task $t $m fold $f: has a checkpoint (seeded or trained): left alone"
          continue
        fi
        stamp "Task $t $m fold $f: seeded from $src"
        "$PY" "$HERE/seed_from_shipped.py" "$src" --folds "$f" >> "$LOGS/seed_t${t}_$m.log" 2>&1 || {
          echo "reproduce.sh: seeding Task $t $m fold $f from $src failed (log: $LOGS/seed_t${t}_$m.log)" >&2
          exit 1
        }
      done
    done
  done
}

step_train() {
  local t m f pids
  for t in $TASKS; do
    for m in $MEMBERS; do
      pids=()
      for f in 0 1; do  # the two folds side by side: on 2 cores this beats one run at a time
        stamp "Task $t $m fold $f"
        nnUNet_n_proc_DA=$T_N_PROC_DA learn "$LOGS/train_t${t}_${m}_f$f.log" tumor=0.1 --dataset "90$t" --trainer "${TRAINER[$m]}" \
          --plans "${PLANS[$m]}" --fold "$f" --epochs "${T_EPOCHS_OF[$t]}" --lr "$T_LR" --tumour-ce-weight "$T_TUMOUR_W" \
          --cpu-autocast "$T_CPU_AUTOCAST" --channels-last "$T_CHANNELS_LAST" --pretrained "$PRE" --skip-validation &
        pids+=($!)
      done
      wait_all "${pids[@]}"
    done
  done
}

step_oof() {
  local t m f pids threads oof
  # on the CPU the two folds side by side, the cores shared: 1.28x (Task 1) and 1.14x (Task 2) the cases per
  # minute of one process on both cores, the same maps to 2e-6 (bench/results/inference-split-task*.json)
  threads=$(( $(cores) / 2 )); (( threads >= 1 )) || threads=1
  for t in $TASKS; do
    for m in $MEMBERS; do
      stamp "out-of-fold maps: Task $t $m"
      oof=("$PY" "$HERE/predict_oof.py" --model "$(model_dir "$t" "$m")" --raw "$nnUNet_raw/${DS[$t]}" \
        --device "$DEVICE" --out "$PANTHER_DATA/oof/${DS[$t]}/$m")
      if [ "$DEVICE" != cpu ]; then
        "${oof[@]}" >> "$LOGS/oof_t${t}_$m.log" 2>&1
        continue
      fi
      pids=()
      for f in 0 1; do
        "${oof[@]}" --folds "$f" --threads "$threads" >> "$LOGS/oof_t${t}_${m}_f$f.log" 2>&1 &
        pids+=($!)
      done
      wait_all "${pids[@]}"
    done
  done
}

step_export() {
  stamp "exporting model_weights/"
  local models=() t m
  for t in $TASKS; do
    for m in $MEMBERS; do models+=("$(model_dir "$t" "$m")"); done
    rm -rf "${REPO:?}/model_weights/${DS[$t]}"  # only this task's: the other task's shipped models stay
  done
  "$PY" "$HERE/export_weights.py" --dest "$REPO/model_weights" "${models[@]}"
  # the other task's rows stay when only one task was trained here (TASKS=2)
  "$PY" "$HERE/summarize.py" --keep "$HERE/results.md" > "$HERE/results.md.new" && mv "$HERE/results.md.new" "$HERE/results.md"
}

# the fit's search per task: Task 1 also tries keeping the most confident tumour component (judged and shipped,
# docs/results/experiments/keep_confident_task1); Task 2's maps have twice the live voxels (slower scoring), so a
# coarser grid, with the never-empty fallback and keep-most-confident (judged and shipped,
# docs/results/experiments/task2_60ep_guard; on the members trained with the CPU levers it keeps the most confident
# component, docs/results/experiments/task2_bf16_release)
declare -A FIT_SEARCH=([1]="--keep-most-confident off,1,2"
                       [2]="--weight-step 0.2 --min-volumes off,500 --keep-largest off,1 --max-distances off,20 --never-empty on,off --keep-most-confident off,1")

EARLY_MAPS=()  # held-out map jobs started beside the fit; step_heldout waits for them

heldout_run() {  # heldout_run TASK THREADS [ARGS...]: evaluate_heldout.py on the task's held-out phantoms
  local t=$1 threads=$2; shift 2
  # every trained member (the fit's base spec), also those the fit gave weight 0 and left out of the shipped spec
  "$PY" "$HERE/evaluate_heldout.py" --task "$t" --seeds "$HELDOUT_SEEDS" --work "$PANTHER_DATA/heldout/task$t" \
    --threads "$threads" --device "$DEVICE" --members-spec "$REPO/docs/results/fit_task$t/base.json" --out "$REPO/docs/results/heldout_task$t" \
    "$@" >> "$LOGS/heldout_t$t.log" 2>&1
}

step_fit() {
  local t pids=() spare late=
  spare=$(( $(cores) - $(wc -w <<< "$TASKS") ))  # each fit runs on one core
  for t in $TASKS; do  # the held-out maps depend on the exported members only, not on the fit
    if has heldout && [ -f "$REPO/docs/results/fit_task$t/base.json" ]; then
      if (( spare >= 1 )); then  # on the cores the fits leave
        stamp "held-out maps, Task $t, beside the fit (1 thread)"
        heldout_run "$t" 1 --stage maps &
        EARLY_MAPS+=($!)
        spare=$(( spare - 1 ))
      else
        late+=" $t"
      fi
    fi
  done
  for t in $TASKS; do  # the tasks side by side
    stamp "fitting the Task $t ensemble"
    "$PY" "$HERE/fit_default.py" --task "$t" --oof "$PANTHER_DATA/oof/${DS[$t]}" --gt "$nnUNet_raw/${DS[$t]}/labelsTr" \
      --work "$PANTHER_DATA/fit/${DS[$t]}" --report "$REPO/docs/results/fit_task$t" --search "${FIT_SEARCH[$t]}" \
      >> "$LOGS/fit_t$t.log" 2>&1 &
    pids+=($!)
  done
  # the fits take unequal times (Task 1's about 9x Task 2's in rebuild_fast: 33 min of a core left idle): the core
  # the first one frees makes the maps no core beside the fits makes, until the last fit ends; that job is then
  # stopped (a map is written whole: at most the case in progress is lost) and the heldout step deals what is left
  # to every core. (`wait -n -p` is bash 5.1's; the job is stopped with procps' pgrep)
  if [ -z "$late" ] || [ "$DEVICE" != cpu ] || (( ${#pids[@]} < 2 )) || ! command -v pgrep > /dev/null \
     || (( BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501 )); then
    wait_all "${pids[@]}"
    return
  fi
  local first='' pid rc=0 lane='' rest=()
  wait -n -p first "${pids[@]}" || rc=$?
  if (( rc == 0 )); then
    stamp "held-out maps on the core a finished fit left (Task$late, 1 thread, until the last fit ends)"
    # shellcheck disable=SC2086 # one word per task
    ( for t in $late; do
        heldout_run "$t" 1 --stage maps || stamp "held-out maps, Task $t, beside the fit failed (heldout_t$t.log)"
      done ) &
    lane=$!
  fi
  for pid in "${pids[@]}"; do if [ "$pid" != "$first" ]; then rest+=("$pid"); fi; done
  local status=0
  wait_all "${rest[@]}" || status=$?
  if (( rc == 0 )); then rc=$status; fi
  if [ -n "$lane" ] && jobs -rp | grep -qx "$lane"; then  # (a job that ended may have left its pid to another)
    stop_job "$lane"
  fi
  return "$rc"
}

step_shift() {
  local t
  for t in $TASKS; do  # the fold ensemble that ships is model_weights/ (export), the fitted threshold the fit's own spec
    stamp "fold-ensemble threshold transfer, Task $t (unlabeled seeds $SHIFT_SEEDS)"
    "$PY" "$HERE/fold_shift.py" --spec "$REPO/docs/results/fit_task$t/spec.json" --task "$t" --seeds "$SHIFT_SEEDS" \
      --work "$PANTHER_DATA/shift/task$t" --threads 2 --device "$DEVICE" --out "$REPO/docs/results/fit_task$t/fold_shift.json" \
      --apply-to "$REPO/resources/task$t.json" >> "$LOGS/shift_t$t.log" 2>&1
  done
}

seeds_part() {  # seeds_part SEEDS K N: the K-th (0-based) of N interleaved parts of a seed list ("1100-1119", "1,5,7-9")
  local part a b seed i=0 out=() parts
  IFS=, read -ra parts <<< "$1"
  for part in "${parts[@]}"; do
    a=${part%-*}; b=${part#*-}
    for (( seed = a; seed <= b; seed++, i++ )); do
      if (( i % $3 == $2 )); then out+=("$seed"); fi
    done
  done
  (IFS=,; echo "${out[*]}")
}

step_heldout() {
  local t pids=() tasks threads pid lanes k part
  for pid in "${EARLY_MAPS[@]}"; do  # a failed early job leaves its maps to this step (they are made when missing)
    wait "$pid" || stamp "held-out maps made beside the fit failed (see heldout_t*.log); making them now"
  done
  # the maps first, each task's seeds dealt to one lane per core (one thread each), so that no core waits while the
  # task with the larger images finishes (Task 1's maps take about 1.6x Task 2's); then the scoring, tasks side by side
  # (on a GPU the scoring runs below make the maps, as before)
  if [ "$DEVICE" = cpu ]; then
    lanes=$(cores); (( lanes >= 1 )) || lanes=1
    for (( k = 0; k < lanes; k++ )); do
      (
        for t in $TASKS; do
          part=$(seeds_part "$HELDOUT_SEEDS" "$k" "$lanes")
          if [ -n "$part" ]; then HELDOUT_SEEDS=$part heldout_run "$t" 1 --stage maps; fi
        done
      ) &
      pids+=($!)
    done
    stamp "held-out maps: $lanes lane(s) of one thread"
    wait_all "${pids[@]}"
    pids=()
  fi
  tasks=$(wc -w <<< "$TASKS")
  threads=$(( $(cores) / tasks )); (( threads >= 1 )) || threads=1  # the tasks side by side, the cores shared
  for t in $TASKS; do  # (`evaluate_heldout.py --stage maps --members-spec <the fit's base.json>` may run before the fit)
    stamp "held-out phantoms, Task $t (seeds $HELDOUT_SEEDS, $threads thread(s))"
    heldout_run "$t" "$threads" &
    pids+=($!)
  done
  wait_all "${pids[@]}"
}

step_baseline() {
  local t pids=()
  for t in $TASKS; do  # the tasks side by side (one core each); the phantoms read where the data and heldout steps
    stamp "threshold baselines, Task $t"  # wrote them (regenerated where they did not: the same arrays)
    "$PE" phantom baseline --task "$t" --train-seeds 0-59 --test-seeds "$HELDOUT_SEEDS" \
      --dataset-dir "$nnUNet_raw/${DS[$t]}" --heldout-dir "$PANTHER_DATA/heldout/task$t" \
      --json "$HERE/baseline_t$t.json" > /dev/null &
    pids+=($!)
  done
  wait_all "${pids[@]}"
}

step_samples() {
  stamp "sample cases, expected outputs, real-trainer fixture"
  TASKS=$TASKS bash "$HERE/make_samples.sh"
  bash "$REPO/test/make_expected.sh"
  bash "$HERE/make_fixture.sh"
}

has() { [[ " $STEPS " == *" $1 "* ]]; }
START=$(date +%s)
for s in $ORDER; do
  if has "$s"; then timed "$s"; fi
done
stamp "done in $(( ($(date +%s) - START) / 60 )) min"
