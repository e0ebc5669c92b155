"""Predicted against true tumour volume of the shipped Task 1 weighting, on out-of-fold maps and on the
fold ensemble's maps of held-out phantoms (the check that started this experiment; see README.md).

    python docs/results/experiments/fold_shift_task1/volume_check.py oof OUT.json      # $PANTHER_DATA/oof, seeds 0-59
    python docs/results/experiments/fold_shift_task1/volume_check.py heldout OUT.json  # held-out maps, seeds 1140-1159

Per case (mm3): the true volume, each member's own argmax, the equal-weight argmax, and the weighted
P(tumour) (default 0.4, DA5 0.1, iso 0.5) at 0.4, 0.5 and 0.6, no post-processing; and the mean weighted
P inside the true tumour.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

W = {"default": 0.4, "DA5": 0.1, "iso": 0.5}
DATA = Path(os.environ.get("PANTHER_DATA", "/work/data"))


def run(mapdir: Path, gtdir: Path, cases: list[str], out: Path) -> None:
    rows = []
    for c in cases:
        gt_img = sitk.ReadImage(str(gtdir / f"{c}.mha"))
        gt = sitk.GetArrayFromImage(gt_img)
        voxel = float(np.prod(gt_img.GetSpacing()))
        maps = {}
        for m in W:
            z = np.load(mapdir / m / f"{c}.npz")
            labels = [str(x) for x in z["labels"]]
            maps[m] = z["probabilities"].astype(np.float32)
        ti = labels.index("tumor")
        vol = {"gt": float((gt == 1).sum() * voxel)}
        for m in W:
            vol[m] = float((maps[m].argmax(0) == ti).sum() * voxel)
        vol["equal"] = float(((sum(maps.values()) / 3).argmax(0) == ti).sum() * voxel)
        wp = sum(W[m] * maps[m][ti] for m in W)
        for t in (0.4, 0.5, 0.6):
            vol[f"w>={t}"] = float((wp >= t).sum() * voxel)
        vol["meanP_in_gt"] = float(wp[gt == 1].mean())
        rows.append({"case": c, **vol})
        print(c, {k: round(v, 2) for k, v in vol.items()}, flush=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    which, out = sys.argv[1], Path(sys.argv[2])
    if which == "oof":
        maps, gt = DATA / "oof" / "Dataset901_PhantomT1", DATA / "nnUNet_raw" / "Dataset901_PhantomT1" / "labelsTr"
    else:
        maps, gt = DATA / "heldout" / "task1_s1140" / "maps", DATA / "heldout" / "task1_s1140" / "gt"
    run(maps, gt, sorted(p.stem for p in (maps / "default").glob("*.npz")), out)
