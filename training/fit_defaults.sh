#!/usr/bin/env bash
# Fit the phantom ensembles on the specialists' out-of-fold maps: Dataset901 (Task 1) and Dataset902 (Task 2).
#
#   bash training/fit_defaults.sh [extra `panther-ensemble fit` options, e.g. --objective weighted]
#
# For each dataset that has results under $PANTHER_DATA/nnUNet_results, every model folder with
# fold_*/validation/*.npz (nnU-Net --npz out-of-fold maps) becomes a member of a base spec written to
# $PANTHER_DATA/fit/<dataset>/base.json (model paths relative to $PANTHER_DATA/nnUNet_results/<dataset>,
# folds = those with out-of-fold maps); member names: "default" (nnUNetTrainerPhantom), "DA5"
# (nnUNetTrainerPhantomDA5), else the trainer name (plus "_<plans>" when one trainer has several plans).
# Ground truth: the raw dataset's labelsTr. The fit
# writes spec.json, report.json, report.md and tradeoff.png to $PANTHER_DATA/fit/<dataset>/fit.
set -euo pipefail
DATA=${PANTHER_DATA:-/work/data}
PY=${PY:-/work/venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

for id in 901 902; do
    found=("$DATA"/nnUNet_results/Dataset"$id"_*)  # sorted; the pattern itself when nothing matches
    ds=${found[0]}
    if [ ! -d "$ds" ]; then
        echo "Dataset$id: no nnU-Net results under $DATA/nnUNet_results yet, skipped"
        continue
    fi
    name=$(basename "$ds")
    task=1
    [ "$id" = 902 ] && task=2
    out="$DATA/fit/$name"
    mkdir -p "$out"
    if ! "$PY" - "$ds" "$task" "$out/base.json" <<'EOF'
import json, re, sys
from pathlib import Path

ds, task, target = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
members = []
for model in sorted(p for p in ds.iterdir() if p.is_dir() and "__" in p.name):
    folds = sorted(int(f.name[5:]) for f in model.glob("fold_*")
                   if re.fullmatch(r"fold_\d+", f.name) and any((f / "validation").glob("*.npz")))
    if not folds:
        continue
    trainer, plans = (model.name.split("__") + ["", ""])[:2]
    name = {"nnUNetTrainerPhantom": "default", "nnUNetTrainerPhantomDA5": "DA5"}.get(trainer, trainer)
    members.append({"name": name, "model": model.name, "folds": folds, "_plans": plans})
names = [m["name"] for m in members]
for m in members:  # the same trainer with several plans: add the plans name
    if names.count(m["name"]) > 1:
        m["name"] += "_" + (m["_plans"].replace("nnUNetPlans", "") or "nnUNetPlans")
for m in members:
    m.pop("_plans")
if not members:
    sys.exit(f"{ds}: no model folder with fold_*/validation/*.npz yet")
spec = {"version": 1, "task": task, "members": members,
        "description": f"phantom specialists of {ds.name}: base spec for panther-ensemble fit"}
target.write_text(json.dumps(spec, indent=2) + "\n")
print(f"{target}: members " + ", ".join(f"{m['name']} ({m['model']}, folds {m['folds']})" for m in members))
EOF
    then
        echo "Dataset$id: skipped"
        continue
    fi
    set -x
    "$PY" -m panther_ensemble.cli fit --base-spec "$out/base.json" --model-dir "$ds" \
        --gt "$DATA/nnUNet_raw/$name/labelsTr" --out "$out/fit" "$@"
    { set +x; } 2>/dev/null
done
