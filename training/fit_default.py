"""Fit one task's shipped ensemble on its members' out-of-fold maps, and write resources/task<N>.json.

    python training/fit_default.py --task 1 --oof /work/data/oof/Dataset901_PhantomT1 \
        --gt /work/data/nnUNet_raw/Dataset901_PhantomT1/labelsTr --work /work/data/fit/Dataset901_PhantomT1 \
        --report docs/results/fit_task1

The members are the folders under --oof (default, DA5, iso), each with one <case>.npz per training case
(training/predict_oof.py). The objective is chosen before any result is seen and never changed after:
the challenge's own ranking, mean rank over the five PANTHER metrics (`--objective mean-rank`, the fit's
default), with nested 5-fold cross-validation, seed 0. The report (report.md/json, tradeoff.png, spec.json)
is copied to --report; the fitted spec becomes resources/task<N>.json with model paths under model_weights/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from freshness import is_current, write_if_changed  # training/, the script's own folder

REPO = Path(__file__).resolve().parents[1]
# member name -> (trainer, plans): the three specialists of training/reproduce.sh
MEMBERS = {"default": ("nnUNetTrainerPhantom", "nnUNetPlansPhantom"),
           "DA5": ("nnUNetTrainerPhantomDA5", "nnUNetPlansPhantom"),
           "iso": ("nnUNetTrainerPhantom", "nnUNetPlansPhantomIso")}
DATASETS = {1: "Dataset901_PhantomT1", 2: "Dataset902_PhantomT2"}
NOTE = ("Mirroring off so that a case runs in about a minute on a 2-core CPU; phantom specialists "
        "(training/README.md), not PANTHER models.")


def base_spec(task: int, members: list[str]) -> dict:
    ds = DATASETS[task]
    return {"version": 1, "task": task, "description": f"phantom specialists of {ds}: base spec for the fit",
            "members": [{"name": n, "model": f"{ds}/{MEMBERS[n][0]}__{MEMBERS[n][1]}__3d_fullres", "folds": [0, 1],
                         "mirroring": False, "resampling": "fast"} for n in members]}


def describe_members(fitted: dict, offered: list[str]) -> str:
    """The members the fitted spec kept, and those the fit offered but weighted 0 (a spec lists only the kept)."""
    kept = [m["name"] for m in fitted["members"]]
    dropped = [n for n in offered if n not in kept]
    said = f"{' and '.join(kept) if len(kept) <= 2 else ', '.join(kept)} specialist{'s' if len(kept) > 1 else ''}"
    if dropped:
        said += f" (the fit gave {', '.join(dropped)} weight 0)"
    return said


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", type=int, choices=(1, 2), required=True)
    p.add_argument("--oof", type=Path, required=True)
    p.add_argument("--gt", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--report", type=Path, required=True)
    p.add_argument("--search", default="",
                   help="extra `panther-ensemble fit` search options, e.g. a coarser grid where scoring is slow: "
                        "'--weight-step 0.2 --min-volumes off,500 --keep-largest off,1 --max-distances off,20'")
    a = p.parse_args()

    from panther_ensemble.spec import load_spec, parse_spec

    members = [n for n in MEMBERS if (a.oof / n).is_dir()]
    if len(members) < 2:
        raise SystemExit(f"{a.oof}: out-of-fold maps of fewer than two members ({members})")
    a.work.mkdir(parents=True, exist_ok=True)
    write_if_changed(a.work / "base.json", json.dumps(base_spec(a.task, members), indent=2) + "\n")
    cmd = [sys.executable, "-m", "panther_ensemble.cli", "fit", "--base-spec", str(a.work / "base.json"),
           "--oof", *[f"{n}={a.oof / n}" for n in members], "--gt", str(a.gt), "--out", str(a.work / "fit"),
           "--objective", "mean-rank", "--folds", "5", "--seed", "0", *a.search.split()]
    print(" ".join(cmd), flush=True)
    write_if_changed(a.work / "search.txt", " ".join(a.search.split()) + "\n")  # a changed grid must fit again
    # report.md is written last, so a fit stopped half-way is not current
    if is_current(a.work / "fit" / "report.md", [a.work / "base.json", a.work / "search.txt", *[a.oof / n for n in members]]):
        print(f"{a.work / 'fit'}: fitted after its inputs last changed: kept (delete it to fit again)", flush=True)
    else:
        if (a.work / "fit").is_symlink():  # a link's target is another run's fit: never fit into it
            (a.work / "fit").unlink()
        shutil.rmtree(a.work / "fit", ignore_errors=True)
        subprocess.run(cmd, check=True)
    a.report.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "report.json", "tradeoff.png", "spec.json"):
        shutil.copy2(a.work / "fit" / name, a.report / name)
    shutil.copy2(a.work / "base.json", a.report / "base.json")
    (a.report / "command.txt").write_text(" ".join(cmd).replace(str(a.work), "$WORK") + "\n")
    fitted = json.loads((a.work / "fit" / "spec.json").read_text())
    fitted["description"] = (f"Default Task {a.task} ensemble: {describe_members(fitted, members)} of "
                             f"{DATASETS[a.task]}; weights, decision and post-processing fitted by `panther-ensemble "
                             f"fit` on their out-of-fold maps (docs/results/fit_task{a.task}). {NOTE}")
    spec = parse_spec(fitted, "fitted spec")
    target = REPO / "resources" / f"task{a.task}.json"
    spec.save(target)
    load_spec(target)
    print(f"{target}: " + ", ".join(f"{m.name} w={m.weight:g}" for m in spec.members)
          + f"; decision {spec.decision.rule} {spec.decision.threshold or ''}; postprocess {spec.to_json()['postprocess']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
