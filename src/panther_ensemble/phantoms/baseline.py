"""Threshold baselines: how far one global intensity threshold gets on the phantoms (is the task non-trivial?).

Two baselines, both fitted on training phantoms (per-case mean tumour Dice as the objective) and scored
per case on held-out phantoms:

- whole body (the real question: no label is used at prediction time).  Intensities are divided by the
  median of the body's voxels, the body being every voxel above 10 % of the image's 99th percentile.
  Candidates: a one-sided threshold (tumour = body voxels below it for Task 1, whose tumour is
  hypo-intense; above it for Task 2, hyper-intense) and, stronger, the best band [lo, hi).  Normalised
  intensities are binned (width 0.01 from 0 to 4; brighter voxels share the last bin), so every band is
  scored at once from each case's cumulative histograms of body and tumour voxels.
- in the true pancreas (an upper bound that is given the organ): intensities divided by the median of
  the true pancreas+tumour voxels, tumour = those voxels below (Task 1) or above (Task 2) a threshold.

Why that body mask: on 8 training phantoms per task, 10 % of the 99th percentile gave the smallest
case-to-case spread of the tumour's normalised median (coefficient of variation 7.6 % Task 1, 5.8 %
Task 2) among 10 % and 20 % of it (raw or after a 1-voxel Gaussian smoothing) and 20 % of the 95th;
Otsu's threshold splits tissue classes instead of body from air (it kept 0-58 % of the volume).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..scoring.metrics import mask_dice
from .datasets import format_seeds, nnunet_case_name
from .generate import make_phantom

log = logging.getLogger(__name__)

BODY_FRACTION = 0.1  # body = voxels above this fraction of the 99th percentile
BIN_WIDTH = 0.01  # of the normalised intensity (intensity / body median)
N_BINS = 400  # bins cover [0, 4); brighter voxels fall in the last one


# --------------------------------------------------------------------------------------------
# whole body


def body_mask(img: np.ndarray) -> np.ndarray:
    """Voxels above BODY_FRACTION of the image's 99th percentile (no label used)."""
    return img > BODY_FRACTION * float(np.percentile(img, 99))


def normalised_bins(img: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Bin index (0 .. N_BINS-1) of every voxel's intensity / median intensity of the body."""
    v = img.astype(np.float64) / max(float(np.median(img[body])), 1e-9)
    return np.clip(np.floor(v / BIN_WIDTH), 0, N_BINS - 1).astype(np.int64)


@dataclass
class BodyHistograms:
    """One case's counts per normalised-intensity bin: body voxels, tumour voxels in the body, all tumour."""

    body: np.ndarray
    tumour: np.ndarray
    tumour_total: int

    @classmethod
    def of(cls, img: np.ndarray, lab: np.ndarray) -> "BodyHistograms":
        body = body_mask(img)
        bins = normalised_bins(img, body)
        tum = lab == 1
        return cls(np.bincount(bins[body], minlength=N_BINS), np.bincount(bins[body & tum], minlength=N_BINS),
                   int(tum.sum()))

    def band_dice(self) -> np.ndarray:
        """(N_BINS+1, N_BINS+1) table: [i, j] = Dice of predicting the body voxels in bins i..j-1.

        Entries with j <= i (an empty band) are -1, so that they are never the best.
        """
        cb = np.concatenate([[0], np.cumsum(self.body)])
        ct = np.concatenate([[0], np.cumsum(self.tumour)])
        pred = cb[None, :] - cb[:, None]
        tp = ct[None, :] - ct[:, None]
        denom = pred + self.tumour_total
        with np.errstate(divide="ignore", invalid="ignore"):
            dice = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 1.0)
        return np.where(np.triu(np.ones_like(dice, dtype=bool), 1), dice, -1.0)


def predict_band(img: np.ndarray, lo_bin: int, hi_bin: int) -> np.ndarray:
    """Tumour mask of the whole-body rule: body voxels whose normalised bin is in [lo_bin, hi_bin)."""
    body = body_mask(img)
    bins = normalised_bins(img, body)
    return body & (bins >= lo_bin) & (bins < hi_bin)


def _rule(lo_bin: int, hi_bin: int) -> dict:
    lo = None if lo_bin == 0 else round(lo_bin * BIN_WIDTH, 6)
    hi = None if hi_bin == N_BINS else round(hi_bin * BIN_WIDTH, 6)
    bounds = [f">= {lo}"] * (lo is not None) + [f"< {hi}"] * (hi is not None)
    text = "tumour = body voxels with normalised intensity " + " and ".join(bounds) if bounds else "tumour = body"
    return {"rule": text, "lo": lo, "hi": hi, "lo_bin": lo_bin, "hi_bin": hi_bin}


def fit_whole_body(task: int, train: list[BodyHistograms], test: dict[int, BodyHistograms]) -> dict:
    """Best one-sided threshold and best band on the training cases; their per-case test Dice."""
    mean = np.zeros((N_BINS + 1, N_BINS + 1))
    for h in train:
        mean += h.band_dice()
    mean /= max(len(train), 1)
    if task == 1:  # hypo-intense tumour: everything below a threshold
        one_sided = (0, int(np.argmax(mean[0, 1:])) + 1)
    else:  # hyper-intense: everything above
        one_sided = (int(np.argmax(mean[:N_BINS, N_BINS])), N_BINS)
    band = tuple(int(v) for v in np.unravel_index(int(np.argmax(mean)), mean.shape))
    out = {"normalisation": f"intensity / median of the body; body = voxels above {BODY_FRACTION} x the image's "
                            f"99th percentile; bins of {BIN_WIDTH}"}
    tables = {int(s): h.band_dice() for s, h in test.items()}
    for name, (i, j) in (("one_sided", one_sided), ("band", band)):
        per_case = {s: float(t[i, j]) for s, t in tables.items()}
        out[name] = dict(_rule(i, j), train_dice=float(mean[i, j]),
                         test_dice_mean=float(np.mean(list(per_case.values()))) if per_case else None,
                         test_dice=per_case)
    return out


# --------------------------------------------------------------------------------------------
# in the true pancreas


def pancreas_samples(img: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intensities / their median inside the true pancreas+tumour mask, and which of them are tumour."""
    m = lab > 0
    v = img[m].astype(np.float64)
    v /= max(float(np.median(v)), 1e-9)  # normalise by the organ's median (removes the random scale)
    return v, lab[m] == 1


def fit_in_pancreas(task: int, train: list, test: dict) -> dict:
    """Best-on-train threshold (0.5 .. 1.5 in steps of 0.01) inside the true organ; per-case test Dice."""
    below = task == 1
    cands = np.linspace(0.5, 1.5, 101)

    def case_dice(v, t, thr):
        pred = v < thr if below else v > thr
        return mask_dice(pred, t)

    mean_train = [float(np.mean([case_dice(v, t, c) for v, t in train])) for c in cands]
    best = int(np.argmax(mean_train))
    thr = float(cands[best])
    per_case = {int(s): case_dice(v, t, thr) for s, (v, t) in test.items()}
    return {"normalisation": "intensity / median of the true pancreas+tumour voxels",
            "rule": f"tumour = true pancreas+tumour voxels {'<' if below else '>'} {thr:g}",
            "threshold": thr, "train_dice": mean_train[best],
            "test_dice_mean": float(np.mean(list(per_case.values()))) if per_case else None,
            "test_dice": per_case}


# --------------------------------------------------------------------------------------------
# both, on phantoms


def heldout_case_name(task: int, seed: int) -> str:
    """The case name under training/evaluate_heldout.py's work folder (images/<name>.mha, gt/<name>.mha)."""
    return f"t{int(task)}_seed{int(seed)}"


def load_case(task: int, seed: int, dataset_dir=None, heldout_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) arrays: read from an nnU-Net raw dataset written by `write_nnunet_dataset`, or from
    the images/ and gt/ of a held-out work folder (training/evaluate_heldout.py), when one holds this case;
    else regenerated (the same phantom every way)."""
    for folder, image_path, label_path in (
            (dataset_dir, f"imagesTr/{nnunet_case_name(task, seed)}_0000.mha", f"labelsTr/{nnunet_case_name(task, seed)}.mha"),
            (heldout_dir, f"images/{heldout_case_name(task, seed)}.mha", f"gt/{heldout_case_name(task, seed)}.mha")):
        # the image is written last (evaluate_heldout.py): where it is, the label is whole
        if folder is not None and (Path(folder) / label_path).is_file() and (Path(folder) / image_path).is_file():
            img = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(folder) / image_path)))
            lab = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(folder) / label_path)))
            return img, lab
    ph = make_phantom(task, seed)
    return ph.image, ph.label


def threshold_baselines(task: int, train_seeds, test_seeds, dataset_dir=None, heldout_dir=None) -> dict:
    """Both baselines (whole body: one-sided and band; in the true pancreas) fitted on `train_seeds` and
    scored per case on `test_seeds`.  dataset_dir: an nnU-Net raw dataset of this task to read training
    phantoms from instead of regenerating them; heldout_dir: a held-out work folder (evaluate_heldout.py's
    --work) to read test phantoms from; a phantom found in neither is regenerated."""
    train_seeds, test_seeds = [int(s) for s in train_seeds], [int(s) for s in test_seeds]
    stats = {"train": {}, "test": {}}
    for part, seeds, src in (("train", train_seeds, {"dataset_dir": dataset_dir}),
                             ("test", test_seeds, {"heldout_dir": heldout_dir})):
        for s in seeds:
            img, lab = load_case(task, s, **src)
            stats[part][s] = (BodyHistograms.of(img, lab), pancreas_samples(img, lab))
            log.info("baseline: %s phantom task %d seed %d", part, task, s)
    train, test = stats["train"], stats["test"]
    return {
        "task": int(task), "train_seeds": format_seeds(train_seeds), "test_seeds": format_seeds(test_seeds),
        "whole_body": fit_whole_body(task, [b for b, _ in train.values()], {s: b for s, (b, _) in test.items()}),
        "in_pancreas": fit_in_pancreas(task, [p for _, p in train.values()], {s: p for s, (_, p) in test.items()}),
    }
