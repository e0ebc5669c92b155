"""Threshold baselines: how far a global intensity threshold gets on the phantoms (is the task non-trivial?)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .datasets import format_seeds, nnunet_case_name
from .generate import make_phantom


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def _baseline_samples(task: int, seed: int, dataset_dir=None):
    case = nnunet_case_name(task, seed)
    if dataset_dir is not None and (Path(dataset_dir) / "labelsTr" / f"{case}.mha").is_file():
        # the same phantom, already written by write_nnunet_dataset: read instead of regenerating
        d = Path(dataset_dir)
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "imagesTr" / f"{case}_0000.mha")))
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "labelsTr" / f"{case}.mha")))
    else:
        img, lab, _, _ = make_phantom(task, seed)
    m = lab > 0
    v = img[m].astype(np.float64)
    v /= max(float(np.median(v)), 1e-9)  # normalise by the organ's median (removes the random scale)
    return v, lab[m] == 1


def threshold_baseline(task: int, train_seeds, test_seeds, dataset_dir=None) -> dict:
    """Best-on-train global threshold (on intensity / organ median) inside the true organ mask.

    Task 1 tumours are hypo-intense (tumour = below the threshold), Task 2 hyper-intense (above).
    Returns the threshold, the train Dice and the per-case test Dice.  dataset_dir: an nnU-Net raw
    dataset written by write_nnunet_dataset for this task, read instead of regenerating training phantoms.
    """
    below = task == 1
    train = [_baseline_samples(task, s, dataset_dir) for s in train_seeds]
    cands = np.linspace(0.5, 1.5, 101)

    def case_dice(v, t, thr):
        pred = v < thr if below else v > thr
        return _dice(pred, t)

    mean_train = [float(np.mean([case_dice(v, t, c) for v, t in train])) for c in cands]
    best = int(np.argmax(mean_train))
    thr = float(cands[best])
    test = {int(s): case_dice(*_baseline_samples(task, s), thr) for s in test_seeds}
    return {"task": task, "threshold": thr, "train_dice": mean_train[best],
            "test_dice_mean": float(np.mean(list(test.values()))), "test_dice": test,
            "train_seeds": format_seeds(train_seeds), "test_seeds": format_seeds(test_seeds)}
