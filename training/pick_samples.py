"""Choose a task's shipped sample case: the first seed from --start whose phantom the shipped ensemble segments
with tumour Dice >= --min-dice (a CI smoke test should show a visible, correct tumour, not an empty mask).

    python training/pick_samples.py --task 1 [--start 1000] [--min-dice 0.6] [--tries 20]

Seeds from 1000 are used neither in training (0-59, 2000-2039) nor in the held-out tables (1100-1119). The
seeds tried and their Dice are printed (stderr) and written with the choice to --log, so the choice is on
record: the samples are picked for being good, and the held-out tables say how good the ensemble is in general.
Prints the chosen seed on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import SimpleITK as sitk


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", type=int, choices=(1, 2), required=True)
    p.add_argument("--start", type=int, default=1000)
    p.add_argument("--tries", type=int, default=20)
    p.add_argument("--min-dice", type=float, default=0.6)
    p.add_argument("--log", type=Path, default=None)
    a = p.parse_args()

    from panther_ensemble import Ensemble
    from panther_ensemble.phantoms import generate_phantom

    ensemble = Ensemble.for_task(a.task, device="cpu")
    tried = []
    for seed in range(a.start, a.start + a.tries):
        image, label = generate_phantom(a.task, seed)
        truth = sitk.GetArrayFromImage(label) == 1
        mask = ensemble.segment(image).mask.astype(bool)
        dice = float(2 * (mask & truth).sum() / max(1, mask.sum() + truth.sum()))
        tried.append({"seed": seed, "dice": round(dice, 4), "tumour_voxels": int(mask.sum())})
        print(f"task {a.task} seed {seed}: tumour Dice {dice:.3f}", file=sys.stderr, flush=True)
        if dice >= a.min_dice and mask.any():
            if a.log:
                a.log.write_text(json.dumps({"task": a.task, "chosen": seed, "min_dice": a.min_dice,
                                             "tried": tried}, indent=2) + "\n")
            print(seed)
            return 0
    raise SystemExit(f"task {a.task}: no seed in {a.start}-{a.start + a.tries - 1} reaches Dice {a.min_dice}: "
                     f"{tried}")


if __name__ == "__main__":
    sys.exit(main())
