"""Held-out evaluation of the shipped ensemble and of each of its members on fresh phantoms.

    python training/evaluate_heldout.py --task 1 --seeds 1000-1011 --work /work/data/heldout/task1 \
        --out docs/results/heldout_task1

1. generates the held-out phantoms (seeds never used in training) as <case>.mha + ground truth;
2. runs the task's default ensemble (resources/task<N>.json) once per case with the engine, keeping each
   member's own probability map: a member's mask is its own argmax == tumour (nnU-Net's decision for that
   model alone), the ensemble's mask is what inference.py writes;
3. scores every member and the ensemble with `panther-ensemble evaluate` (leaderboard, figures) into --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        seeds += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return seeds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", type=int, choices=(1, 2), required=True)
    p.add_argument("--seeds", default="1000-1011")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--spec", type=Path, default=None)
    p.add_argument("--model-dir", type=Path, default=REPO / "model_weights")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()

    from panther_ensemble.engine import Engine
    from panther_ensemble.io import read_image, write_mask
    from panther_ensemble.phantoms import generate_phantom
    from panther_ensemble.spec import load_spec

    spec = load_spec(a.spec or REPO / "resources" / f"task{a.task}.json")
    engine = Engine(spec, a.model_dir, a.device)
    images, gt_dir, pred_root = a.work / "images", a.work / "gt", a.work / "pred"
    for d in (images, gt_dir):
        d.mkdir(parents=True, exist_ok=True)
    for seed in parse_seeds(a.seeds):
        case = f"t{a.task}_seed{seed}"
        if not (images / f"{case}.mha").exists():
            image, label = generate_phantom(a.task, seed)
            sitk.WriteImage(image, str(images / f"{case}.mha"), True)
            sitk.WriteImage(label, str(gt_dir / f"{case}.mha"), True)
        array, geometry = read_image(images / f"{case}.mha")
        members: dict[str, np.ndarray] = {}

        def keep(name, probabilities, labels, members=members):
            members[name] = (probabilities.argmax(0) == labels.index(spec.tumor_label)).cpu().numpy()

        result = engine.predict(array, geometry, member_hook=keep)
        write_mask(result.mask, geometry, pred_root / "ensemble" / f"{case}.mha")
        for name, mask in members.items():
            write_mask(mask.astype(np.uint8), geometry, pred_root / name / f"{case}.mha")
        print(f"{case}: ensemble {int(result.mask.sum())} tumour voxels", flush=True)
    names = [m.name for m in spec.members if m.weight > 0] + ["ensemble"]
    cmd = [sys.executable, "-m", "panther_ensemble.cli", "evaluate", "--pred", *[str(pred_root / n) for n in names],
           "--names", *names, "--gt", str(gt_dir), "--out", str(a.out)]
    subprocess.run(cmd, check=True)
    (a.out / "command.json").write_text(json.dumps({"command": " ".join(sys.argv), "seeds": a.seeds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
