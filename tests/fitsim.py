"""Simulated ensemble members with known biases, built from phantom ground truth (for test_fit_simulated.py).

No network is trained. A case is a real phantom's label map (`phantoms.generate_phantom`), cropped to the
pancreas and its surroundings; each member's out-of-fold map is made from that ground truth with seeded,
smooth noise, so that every member is decent but wrong in its own, known way:

- ``over``: P(tumour) = the ground truth dilated by OVER_DILATION_MM (with a bumpy surface), blurred, times
  OVER_P: its argmax over-segments every tumour by a few millimetres, but it finds every tumour, small ones
  included (its merit: no miss, the best surface Dice).
- ``small_miss``: the most accurate boundary on tumours of at least SMALL_TUMOUR_MM3, but a tumour below that
  volume gets P(tumour) <= SMALL_MISS_P (it calls it pancreas): an empty prediction, the diagonal penalty.
- ``far_fp``: a good but noisier boundary on every tumour, plus FP_BLOBS confident (P = FP_P) blobs outside
  the pancreas, their surfaces at least FP_MIN_FROM_PANCREAS_MM from it and FP_MIN_FROM_TUMOUR_MM from the
  tumour, each larger than the smallest tumours (so keep-largest alone is no cure; a pancreas gate or a low weight is).

The "good" boundaries are soft (a logistic of the signed distance with scale SOFTNESS_MM), as a network's
are; so with equal weights the over-segmenter's confident ring pulls the ensemble's boundary outwards.
Pancreas probability: the blurred mask of the pancreas, the tumour and PERITUMOUR_MM around it, the same
for every member; so where a tumour bulges out of the pancreas, tumour competes with pancreas alone, and
argmax and a 0.5 threshold agree (otherwise argmax over-segments wherever pancreas and background share the
rest, and a 0.5 threshold "beats" equal weights even for unbiased members).

Every array is a pure function of (phantom seed, member), so a case is the same in every run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import cc3d
import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from panther_ensemble.inference.ensemble import WeightedProbabilities, common_label_space, decide
from panther_ensemble.inference.postprocess import apply_rules
from panther_ensemble.io import save_probability_map
from panther_ensemble.phantoms import generate_phantom
from panther_ensemble.scoring.metrics import CASE_KEYS, case_metrics
from panther_ensemble.spec import PostprocessSpec

LABELS = ("background", "tumor", "pancreas")
MEMBERS = ("over", "small_miss", "far_fp")

#: crop around the pancreas + tumour, (z, y, x) mm on each side
CROP_MARGIN_MM = (12.0, 45.0, 45.0)
SOFTNESS_MM = 2.0  # logistic scale of the "good" members' boundaries
OVER_DILATION_MM = 5.0
OVER_BLUR_MM = 1.5
OVER_P = 0.97  # the over-segmenter's P(tumour) inside its dilated tumour
SMALL_TUMOUR_MM3 = 3000.0  # about 18 mm equivalent diameter
SMALL_MISS_P = 0.45  # small_miss's P(tumour) inside a small tumour: its argmax says pancreas there
FP_BLOBS = 2
FP_P = 0.92  # far_fp's P(tumour) at the centre of its blobs
FP_RADIUS_MM = (6.0, 8.0)  # 900-2100 mm3: larger than the small tumours
FP_MIN_FROM_PANCREAS_MM = 30.0
FP_MIN_FROM_TUMOUR_MM = 60.0
PERITUMOUR_MM = 8.0  # counted as pancreas by every member's pancreas probability
TUMOUR_BOX_MM = 25.0  # P(tumour) of the tumour is computed in its box grown by this much (0 outside)


@dataclass
class Case:
    cid: str
    label: np.ndarray  # (z, y, x) uint8: 0 background, 1 tumour, 2 pancreas (the crop)
    spacing: tuple[float, float, float]  # (z, y, x) mm

    @property
    def tumour_mm3(self) -> float:
        return float(np.count_nonzero(self.label == 1) * np.prod(self.spacing))


def phantom_case(seed: int, task: int = 1, cache: Path | str | None = None) -> Case:
    """The phantom's label map cropped to the bounding box of pancreas and tumour grown by CROP_MARGIN_MM.
    cache: a folder keeping the phantoms' label maps between runs, for working on the test (a phantom is a
    pure function of its seed; the test uses $PANTHER_FITSIM_CACHE when set). Nothing checks that the
    phantom generator is unchanged since: empty the folder when it changes."""
    f = Path(cache) / f"task{task}_{seed}.npz" if cache else None
    if f is not None and f.is_file():
        with np.load(f) as z:
            arr, spacing = z["label"], tuple(z["spacing"])
    else:
        _, lab = generate_phantom(task, seed)
        arr, spacing = sitk.GetArrayFromImage(lab), tuple(lab.GetSpacing()[::-1])
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(f.with_name(f".{f.stem}.partial.npz"), label=arr, spacing=np.array(spacing))
            f.with_name(f".{f.stem}.partial.npz").replace(f)
    return crop_case(f"sim_{task}_{seed}", arr, spacing)


def crop_case(cid: str, arr: np.ndarray, spacing) -> Case:
    spacing = tuple(float(s) for s in spacing)
    nz = np.argwhere(arr > 0)
    margin = [int(np.ceil(m / s)) for m, s in zip(CROP_MARGIN_MM, spacing)]
    lo = np.maximum(nz.min(0) - margin, 0)
    hi = np.minimum(nz.max(0) + 1 + np.array(margin), arr.shape)
    crop = arr[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.uint8)
    return Case(cid, np.ascontiguousarray(crop), spacing)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _smooth_noise(rng, shape, spacing, sigma_mm: float) -> np.ndarray:
    """Gaussian random field of unit standard deviation, correlation length about sigma_mm."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), [sigma_mm / s for s in spacing])
    return f / max(float(f.std()), 1e-9)


def _box(mask: np.ndarray, spacing, margin_mm: float) -> tuple[slice, ...]:
    nz = np.argwhere(mask)
    m = [int(np.ceil(margin_mm / s)) for s in spacing]
    lo = np.maximum(nz.min(0) - m, 0)
    hi = np.minimum(nz.max(0) + 1 + np.array(m), mask.shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def _signed_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """mm to the mask's surface: negative inside, positive outside."""
    out = ndimage.distance_transform_edt(~mask, sampling=spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    return np.where(mask, -inside, out)


def member_maps(case: Case, seed: int, biased: bool = True) -> dict[str, np.ndarray]:
    """{member: (3, z, y, x) float32 probabilities (background, tumour, pancreas)} for one case.
    biased=False: the control, three unbiased members (each the "good" boundary with its own noise)."""
    sp = case.spacing
    tumour = case.label == 1
    organ = case.label > 0
    shape = case.label.shape
    box = _box(tumour, sp, TUMOUR_BOX_MM)
    d = _signed_distance(tumour[box], sp)
    # P(pancreas | not tumour): the pancreas, and the tissue around the tumour where it bulges out of it (so
    # that at a tumour's boundary tumour competes with one label, and argmax decides at P(tumour) ~ 0.5)
    organ = organ.copy()
    organ[box] |= d <= PERITUMOUR_MM
    q = ndimage.gaussian_filter(organ.astype(np.float32), [1.2 / s for s in sp]) * 0.97
    small = case.tumour_mm3 < SMALL_TUMOUR_MM3
    far = None
    out = {}
    for k, name in enumerate(MEMBERS):
        rng = np.random.default_rng([seed, k])
        bump = _smooth_noise(rng, d.shape, sp, 3.0)
        pt = np.zeros(shape, np.float32)
        if not biased:
            pt[box] = _sig(-(d - rng.normal(0, 0.8) - 1.2 * bump) / SOFTNESS_MM)
        elif name == "over":
            dil = (d - 0.7 * bump) <= OVER_DILATION_MM
            pt[box] = OVER_P * ndimage.gaussian_filter(dil.astype(np.float32), [OVER_BLUR_MM / s for s in sp])
        elif name == "small_miss":
            p = _sig(-(d - rng.normal(0, 0.3) - 0.5 * bump) / SOFTNESS_MM)
            pt[box] = SMALL_MISS_P * p if small else p
        else:  # far_fp
            pt[box] = _sig(-(d - rng.normal(0, 1.0) - 1.2 * bump) / SOFTNESS_MM)
            if far is None:
                far = _far_blobs(case, np.random.default_rng([seed, 99]))
            pt = np.maximum(pt, far)
        pt = np.where(pt < 1e-4, 0.0, pt).astype(np.float32)
        pp = ((1.0 - pt) * q).astype(np.float32)
        out[name] = np.stack([1.0 - pt - pp, pt, pp]).astype(np.float32)
    return out


def _far_blobs(case: Case, rng) -> np.ndarray:
    """P(tumour) of FP_BLOBS confident spheres outside the pancreas, their surfaces at least
    FP_MIN_FROM_PANCREAS_MM from pancreas and tumour and FP_MIN_FROM_TUMOUR_MM from the tumour."""
    sp = np.array(case.spacing)
    d_organ = ndimage.distance_transform_edt(case.label == 0, sampling=sp)
    d_tumour = ndimage.distance_transform_edt(case.label != 1, sampling=sp)
    grid = np.indices(case.label.shape, dtype=np.float32)
    p = np.zeros(case.label.shape, np.float32)
    taken = np.zeros(case.label.shape, bool)
    for _ in range(FP_BLOBS):
        r = rng.uniform(*FP_RADIUS_MM)
        edge = [int(np.ceil((r + 2) / s)) for s in sp]
        inner = np.zeros(case.label.shape, bool)
        inner[tuple(slice(e, n - e) for e, n in zip(edge, inner.shape))] = True
        ok = inner & ~taken & (d_organ >= FP_MIN_FROM_PANCREAS_MM + r) & (d_tumour >= FP_MIN_FROM_TUMOUR_MM + r)
        cand = np.argwhere(ok)
        if len(cand) == 0:
            raise ValueError(f"{case.cid}: no room for a far false positive in the crop (widen CROP_MARGIN_MM)")
        c = cand[rng.integers(len(cand))]
        dist = np.sqrt(sum(((grid[a] - c[a]) * sp[a]) ** 2 for a in range(3))) - r
        p = np.maximum(p, FP_P * _sig(-dist / 0.8))
        taken |= dist < 2 * FP_RADIUS_MM[1] + r  # the next blob apart from this one
    return p


# --------------------------------------------------------------------------------------------------
# files in the layout `fit` reads
# --------------------------------------------------------------------------------------------------
def write_case(root: Path, case: Case, seed: int, biased: bool = True) -> None:
    """root/gt/<case>.mha and root/oof/<member>/<case>.npz (save_probability_map: float16, labels, spacing)."""
    img = sitk.GetImageFromArray(case.label)
    img.SetSpacing(tuple(float(s) for s in case.spacing[::-1]))
    (root / "gt").mkdir(parents=True, exist_ok=True)
    for name, probs in member_maps(case, seed, biased).items():
        save_probability_map(root / "oof" / name / f"{case.cid}.npz", probs, LABELS, case.spacing)
    sitk.WriteImage(img, str(root / "gt" / f"{case.cid}.mha"), True)  # last: marks the case complete


def write_base_spec(path: Path, names=MEMBERS) -> Path:
    spec = {"version": 1, "task": 1, "members": [{"name": n, "model": f"Dataset999/{n}", "folds": [0, 1, 2, 3, 4]}
                                                 for n in names]}
    path.write_text(json.dumps(spec))
    return path


# --------------------------------------------------------------------------------------------------
# applying a fitted choice to other cases, with the engine's stage functions
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """An ensemble as a fitted spec holds it: member weights (0 = left out), decision, post-processing."""

    weights: dict
    rule: str = "argmax"
    threshold: float | None = None
    min_volume_mm3: float | None = None
    keep_largest: int | None = None
    max_distance_to_pancreas_mm: float | None = None
    never_empty: bool = False
    keep_most_confident: int | None = None

    @classmethod
    def from_report(cls, chosen: dict) -> "Choice":
        pp = chosen["postprocess"]
        return cls(dict(chosen["weights"]), chosen["decision"]["rule"], chosen["decision"].get("threshold"),
                   pp["min_volume_mm3"], pp["keep_largest"], pp["max_distance_to_pancreas_mm"],
                   bool(pp["never_empty"]), pp.get("keep_most_confident"))

    @classmethod
    def from_spec(cls, spec) -> "Choice":
        p = spec.postprocess
        return cls({m.name: m.weight for m in spec.members}, spec.decision.rule, spec.decision.threshold,
                   p.min_volume_mm3, p.keep_largest, p.max_distance_to_pancreas_mm, p.never_empty,
                   p.keep_most_confident)


def predict(choice: Choice, maps: dict[str, np.ndarray], spacing) -> np.ndarray:
    """The engine's path on whole maps: WeightedProbabilities -> decide -> apply_rules."""
    active = [n for n in MEMBERS if choice.weights.get(n, 0) > 0]
    labels = common_label_space([LABELS for _ in active])
    shape = next(iter(maps.values())).shape[1:]
    acc = WeightedProbabilities(labels, shape, torch.device("cpu"))
    for n in active:
        acc.add(n, torch.from_numpy(maps[n]), LABELS, [(0, s) for s in shape], choice.weights[n])
    P = acc.probabilities()
    mask = decide(P, labels, "tumor", choice.rule, choice.threshold).numpy()
    rules = PostprocessSpec(choice.min_volume_mm3, choice.keep_largest, choice.max_distance_to_pancreas_mm,
                            choice.never_empty, choice.keep_most_confident)
    spec = SimpleNamespace(postprocess=rules, tumor_label="tumor", pancreas_label="pancreas")
    return apply_rules(mask, P, labels, spec, tuple(spacing))


def read_maps(root: Path, cid: str) -> dict[str, np.ndarray]:
    out = {}
    for n in MEMBERS:
        with np.load(root / "oof" / n / f"{cid}.npz") as z:
            out[n] = z["probabilities"]  # float16, as stored; WeightedProbabilities adds it as float32
    return out


def case_scores(mask: np.ndarray, gt: np.ndarray, spacing) -> dict:
    m = case_metrics(mask, gt, spacing)
    return {k: float(m[k]) for k in CASE_KEYS}


def dice_near_tumour(mask: np.ndarray, gt: np.ndarray, spacing, mm: float = 30.0) -> float:
    """Dice of the prediction within `mm` of the true tumour (far false positives aside)."""
    near = ndimage.distance_transform_edt(gt != 1, sampling=spacing) <= mm
    p, g = mask & near, gt == 1
    return float(2 * np.count_nonzero(p & g) / max(np.count_nonzero(p) + np.count_nonzero(g), 1))


def far_components(mask: np.ndarray, gt: np.ndarray, spacing, mm: float = 30.0) -> int:
    """Connected components of the prediction farther than `mm` from the true tumour."""
    comps, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
    if n == 0:
        return 0
    d = ndimage.distance_transform_edt(gt != 1, sampling=spacing)
    nearest = ndimage.minimum(d, labels=comps, index=np.arange(1, n + 1))
    return int(np.count_nonzero(np.asarray(nearest) > mm))
