"""Turn the fitted phantom specs into the shipped defaults, resources/task1.json and resources/task2.json.

    python training/make_default_specs.py /work/data/fit/Dataset901_PhantomT1/fit/spec.json \
        /work/data/fit/Dataset902_PhantomT2/fit/spec.json

`panther-ensemble fit` writes member model paths relative to the dataset's results folder; the shipped specs
name them relative to model_weights/ (the folders training/export_weights.py writes), so the dataset folder
is prefixed. Every member runs without mirroring and with `fast` resampling on the device, and the
description records where the weights came from. Weights, class weights, decision and post-processing are
the fitted ones, unchanged.

    python training/make_default_specs.py equal:Dataset902_PhantomT2

writes an unfitted spec instead: every model folder under model_weights/<dataset> as a member with weight 1,
argmax (nnU-Net's own ensemble rule), no post-processing. The Task 2 default is made this way (why: see
training/README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO / "src"))
from panther_ensemble.spec import parse_spec  # noqa: E402


NAMES = {"nnUNetTrainerPhantom": "default", "nnUNetTrainerPhantomDA5": "DA5"}
CPU_NOTE = "Mirroring off so that the sample case runs in about a minute on a 2-core CPU."


def equal_weight_spec(dataset: str) -> dict:
    task = 2 if "T2" in dataset else 1
    folders = sorted(p for p in (REPO / "model_weights" / dataset).iterdir() if p.is_dir())
    members = [{"name": NAMES.get(f.name.split("__")[0], f.name.split("__")[0]), "model": f"{dataset}/{f.name}",
                "folds": sorted(int(k.name[5:]) for k in f.glob("fold_*")), "weight": 1.0} for f in folders]
    return {"version": 1, "task": task, "members": members, "decision": {"rule": "argmax"},
            "description": f"Default Task {task} ensemble: phantom specialists of {dataset} (default and DA5 "
                           f"augmentation), equal weights, argmax, no post-processing (not fitted: training/README.md "
                           f"says why). {CPU_NOTE}"}


def fitted_spec(path: Path) -> dict:
    raw = json.loads(path.read_text())
    dataset = path.parents[1].name  # /.../fit/<Dataset>/fit/spec.json
    for m in raw["members"]:
        m["model"] = f"{dataset}/{m['model']}"
    raw["description"] = (f"Default Task {raw['task']} ensemble: phantom specialists of {dataset} (default and DA5 "
                          f"augmentation), weights, decision and post-processing fitted by `panther-ensemble fit` on "
                          f"their out-of-fold maps (docs/FITTING.md). {CPU_NOTE}")
    return raw


def main(args: list[str]) -> int:
    for arg in args:
        raw = equal_weight_spec(arg[len("equal:"):]) if arg.startswith("equal:") else fitted_spec(Path(arg))
        for m in raw["members"]:
            m["mirroring"] = False
            m["resampling"] = "fast"
        spec = parse_spec(raw, arg)
        target = REPO / "resources" / f"task{spec.task}.json"
        spec.save(target)
        print(f"{target}: " + ", ".join(f"{m.name} w={m.weight:g}" for m in spec.members)
              + f"; decision {spec.decision.rule}" + (f" {spec.decision.threshold}" if spec.decision.threshold else "")
              + f"; postprocess {spec.to_json()['postprocess']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
