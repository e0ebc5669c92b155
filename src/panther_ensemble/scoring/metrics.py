"""The five PANTHER metrics of one case, and the names and directions of every metric key.

Per case (tumour mask only): volumetric Dice, surface Dice at 5 mm, HD95, MASD, predicted and true tumour
volume. The surface terms follow DeepMind's `surface-distance` 0.1 exactly: its surfel-area lookup table
and its four metric functions are called as they are; only its `compute_surface_distances` is re-done
here (`surface_distances`, the same steps with scipy.ndimage's current names and a numpy sort), because
the released version calls names that NumPy 2 and SciPy 2 removed. `tests/test_evaluate.py` compares the
two on random masks. Nothing in this module changes another module: no patches, no global state.
See docs/EVALUATION.md for the rules and the organisers' script they were checked against.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import scipy.ndimage
from surface_distance import lookup_tables
from surface_distance import metrics as sd

from ..boxes import bounding_box, box_slices
from ..errors import InputError

#: per-case metric keys (distances in mm, volumes in mm^3)
CASE_KEYS = ("dice", "surface_dice_5mm", "hd95", "masd", "pred_volume_mm3", "gt_volume_mm3")
#: per-case keys whose aggregate is their mean over the cases
MEAN_KEYS = ("dice", "surface_dice_5mm", "hd95", "masd")
#: aggregate keys, in the order the challenge lists them (the volume becomes an RMSE across cases)
AGGREGATE_KEYS = ("dice", "surface_dice_5mm", "hd95", "masd", "volume_rmse_mm3")
#: True where a larger aggregate is better (the challenge ranks each aggregate in this direction)
HIGHER_IS_BETTER = {"dice": True, "surface_dice_5mm": True, "hd95": False, "masd": False, "volume_rmse_mm3": False}

SURFACE_DICE_TOLERANCE_MM = 5.0
HAUSDORFF_PERCENT = 95.0
GT_TUMOUR_LABEL = 1
GT_ALLOWED_LABELS = (0, 1, 2)
#: voxels kept around the joint bounding box before the distance computation (any value >= 0 gives the
#: same numbers, because the distance computation crops to the same box itself; belt and braces)
CROP_MARGIN = 2


# --------------------------------------------------------------------------------------------------
# surface distances (surface-distance 0.1's compute_surface_distances, without its removed names)
# --------------------------------------------------------------------------------------------------
class SurfelAreas:
    """surface-distance's table neighbour code -> surfel area (256 entries) for each spacing, built once.

    Building a table takes ~10 ms, more than the distances of a small tumour; whoever scores many masks
    of one spacing (the fit's Evaluator) owns one of these and passes it to `case_metrics`.
    """

    def __init__(self) -> None:
        self._tables: dict[tuple[float, ...], np.ndarray] = {}

    def __call__(self, spacing_mm: Sequence[float]) -> np.ndarray:
        key = tuple(float(s) for s in spacing_mm)
        table = self._tables.get(key)
        if table is None:
            table = lookup_tables.create_table_neighbour_code_to_surface_area(key)
            table.setflags(write=False)
            self._tables[key] = table
        return table


class GroundTruthSurface:
    """The ground truth's half of `surface_distances`, computed once for scoring many predictions of one case.

    Its neighbour codes, border voxels and the distance transform to its border, over the whole array plus
    one empty voxel on the high side of every axis. Every voxel outside the two masks' joint box is empty,
    so these numbers restricted to any joint box are the ones the library computes on its crop (a border
    voxel lies inside the box, the distance to the nearest one does not depend on what lies beyond): the
    same result for about half the work per prediction (tested bit for bit). Memory: 8 bytes per voxel.
    """

    def __init__(self, mask_gt: np.ndarray, spacing_mm: Sequence[float]) -> None:
        mask_gt = np.asarray(mask_gt, bool)
        if not mask_gt.any():
            raise ValueError("GroundTruthSurface needs a non-empty mask")
        self.shape = mask_gt.shape
        self.spacing = tuple(float(s) for s in spacing_mm)
        self.codes, self.border = _neighbour_codes(mask_gt)
        self.distance = scipy.ndimage.distance_transform_edt(~self.border, sampling=self.spacing)


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two masks (nonzero = inside), 1.0 when both are empty: two masks that agree.

    For comparing two segmentations with each other (bfloat16 against float32, a threshold against the
    truth, an out-of-fold map against its label). Not the challenge's per-case Dice: `case_metrics` scores
    an empty prediction 0 whatever the truth, by PANTHER's rule.
    """
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    if a.shape != b.shape:
        raise ValueError(f"mask_dice needs masks of one shape, got {a.shape} and {b.shape}")
    both = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if both == 0 else 2.0 * int(np.count_nonzero(a & b)) / both


def _neighbour_codes(mask: np.ndarray, box=None) -> tuple[np.ndarray, np.ndarray]:
    """surface-distance's neighbour codes and border voxels of mask[box], with one empty voxel appended on
    the high side of every axis (the library's crop)."""
    box = box if box is not None else [(0, n) for n in mask.shape]
    crop = np.zeros([hi - lo + 1 for lo, hi in box], np.uint8)
    crop[:-1, :-1, :-1] = mask[box_slices(box)]
    code = scipy.ndimage.correlate(crop, lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL, mode="constant", cval=0)
    return code, (code != 0) & (code != 0b11111111)


def surface_distances(mask_gt: np.ndarray, mask_pred: np.ndarray, spacing_mm: Sequence[float],
                      surfel_areas: SurfelAreas | None = None, gt_surface: GroundTruthSurface | None = None) -> dict:
    """surface-distance's `compute_surface_distances` for two non-empty 3D bool masks: the same dict, the
    same numbers (bit for bit; tested against the library).

    Steps as in the library: crop to the joint box plus one empty voxel on the high side of every axis,
    neighbour codes by correlation with its 2x2x2 kernel, border voxels, Euclidean distance transforms
    with the spacing, surfel areas from its lookup table, each list sorted by (distance, area). The sort
    is numpy's lexsort instead of Python's sort of tuples (same order, much faster on large surfaces).
    gt_surface: mask_gt's `GroundTruthSurface` (same array, same spacing), to reuse across predictions.
    """
    if not mask_gt.any() or not mask_pred.any():
        raise ValueError("surface_distances needs two non-empty masks")
    spacing = tuple(float(s) for s in spacing_mm)
    box = bounding_box(mask_gt | mask_pred)
    table = surfel_areas(spacing) if surfel_areas is not None else \
        lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    code_pred, border_pred = _neighbour_codes(mask_pred, box)
    if gt_surface is None:
        code_gt, border_gt = _neighbour_codes(mask_gt, box)
        dist_to_gt = scipy.ndimage.distance_transform_edt(~border_gt, sampling=spacing)
    else:
        if gt_surface.shape != mask_gt.shape or gt_surface.spacing != spacing:
            raise ValueError(f"gt_surface is of shape {gt_surface.shape} and spacing {gt_surface.spacing}, "
                             f"the masks of {mask_gt.shape} and {spacing}")
        grown = tuple(slice(lo, hi + 1) for lo, hi in box)  # the box and the appended empty voxel
        code_gt, border_gt, dist_to_gt = gt_surface.codes[grown], gt_surface.border[grown], gt_surface.distance[grown]
    dist_to_pred = scipy.ndimage.distance_transform_edt(~border_pred, sampling=spacing)
    d_gt, a_gt = _sorted(dist_to_pred[border_gt], table[code_gt][border_gt])
    d_pred, a_pred = _sorted(dist_to_gt[border_pred], table[code_pred][border_pred])
    return {"distances_gt_to_pred": d_gt, "distances_pred_to_gt": d_pred,
            "surfel_areas_gt": a_gt, "surfel_areas_pred": a_pred}


def _sorted(distances: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((areas, distances))  # by distance, then area: the library's sorted(zip(d, a))
    return distances[order], areas[order]


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
def _distinct_values(a: np.ndarray, limit: int = 6) -> str:
    vals = np.unique(a)
    shown = ", ".join(f"{v:g}" if np.issubdtype(vals.dtype, np.floating) else str(v) for v in vals[:limit])
    more = f", ... ({len(vals)} in all)" if len(vals) > limit else ""
    return f"{len(vals)} distinct values [{shown}{more}]"


def binarise_prediction(pred: np.ndarray, name: object = "prediction") -> np.ndarray:
    """The prediction as a bool mask, with the official script's rules.

    Accepted value sets: {0}, {1}, {0, 1} and {0, v} for any v != 0 (v becomes 1, as the official script
    does). Anything else ({1, 2}, a uniform 255, three or more values, NaN) raises InputError(name, ...).
    Cost: a few linear passes, no sort (np.unique runs only to word the error).
    """
    pred = np.asarray(pred)
    if pred.dtype == bool:
        return pred
    nonzero = pred != 0
    if nonzero.all():  # no 0 present: only a uniform 1 is allowed
        if pred.size and (pred == 1).all():
            return nonzero
        raise InputError(name, f"prediction must be binary (0 and 1); found {_distinct_values(pred)}")
    if nonzero.any():
        values = pred[nonzero]
        if (values != values[0]).any():  # NaN != NaN also lands here
            raise InputError(name, f"prediction must be binary (0 and 1); found {_distinct_values(pred)}")
    return nonzero


def tumour_mask(gt: np.ndarray, name: object = "ground truth") -> np.ndarray:
    """Ground truth as a bool tumour mask: label 1 (labels 0 background, 1 tumour, 2 pancreas).

    A bool array is taken as the tumour mask itself. Any label outside {0, 1, 2} raises InputError, so a
    0/255 mask cannot silently become "no tumour".
    """
    gt = np.asarray(gt)
    if gt.dtype == bool:
        return gt
    if gt.size:
        if gt.dtype.kind in "ui":
            bad = gt.min() < 0 or gt.max() > max(GT_ALLOWED_LABELS)
        else:
            bad = bool(((gt != 0) & (gt != 1) & (gt != 2)).any())
        if bad:
            raise InputError(name, f"ground truth labels must be within {{0, 1, 2}}; found {_distinct_values(gt)}")
    return gt == GT_TUMOUR_LABEL


# --------------------------------------------------------------------------------------------------
# spacing order and the penalty
# --------------------------------------------------------------------------------------------------
def surface_spacing(spacing_zyx: Sequence[float], official: bool = False) -> tuple[float, float, float]:
    """The spacing used for the surface metrics of (z, y, x) arrays.

    Correct mode: (z, y, x) itself. Official mode: reversed, i.e. SimpleITK's (x, y, z), which is what the
    organisers' script passes with its (z, y, x) arrays (axis 0 gets the x spacing, axis 2 the z spacing).
    """
    s = tuple(float(v) for v in spacing_zyx)
    return s[::-1] if official else s


def image_diagonal_mm(shape_zyx: Sequence[int], spacing_zyx: Sequence[float], official: bool = False) -> float:
    """The uniform-prediction penalty: norm(shape x spacing); in official mode with the (x, y, z) spacing
    paired with the (z, y, x) shape, exactly as the organisers' script computes it."""
    return float(np.linalg.norm(np.asarray(shape_zyx, float) * np.asarray(surface_spacing(spacing_zyx, official))))


# --------------------------------------------------------------------------------------------------
# one case
# --------------------------------------------------------------------------------------------------
def _checked_shapes(pred: np.ndarray, gt: np.ndarray, spacing_zyx, full_shape, pred_name, gt_name):
    if pred.ndim != 3 or gt.ndim != 3:
        raise InputError(pred_name if pred.ndim != 3 else gt_name,
                         f"expected a 3D array, got shape {pred.shape if pred.ndim != 3 else gt.shape}")
    if pred.shape != gt.shape:
        raise InputError(pred_name, f"shape {pred.shape} differs from {gt_name} shape {gt.shape}")
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_zyx must be three positive numbers, got {spacing_zyx!r}")
    full = pred.shape if full_shape is None else tuple(int(n) for n in full_shape)
    if len(full) != 3 or any(f < n for f, n in zip(full, pred.shape)):
        raise ValueError(f"full_shape {full_shape!r} must be 3D and at least the array shape {pred.shape}")
    return spacing, full


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing_zyx: Sequence[float], official: bool = False, *,
                 full_shape: Sequence[int] | None = None, pred_name: object = "prediction",
                 gt_name: object = "ground truth", surfel_areas: SurfelAreas | None = None,
                 gt_surface: GroundTruthSurface | None = None) -> dict:
    """The PANTHER metrics of one case, as a dict with `CASE_KEYS` (floats, all finite).

    pred: binary prediction (bool, or values {0, 1} / {0, v}; see `binarise_prediction`).
    gt: ground truth labels (0, 1 tumour, 2 pancreas) or a bool tumour mask.
    spacing_zyx: voxel spacing in array order (reverse of SimpleITK's GetSpacing()).
    official: reproduce the organisers' script (surface metrics and penalty diagonal with the spacing in
        (x, y, z) order against (z, y, x) arrays). Volumes and Dice do not depend on the order.
    full_shape: when pred and gt are crops of a larger image, that image's shape; everything outside the
        crop is taken as background in both. It defines the uniform-prediction rule (a prediction is
        uniform when the FULL image is all 0 or all 1) and the penalty diagonal. Default: pred.shape.
    pred_name, gt_name: what InputError messages call the two inputs (file paths from the CLI).
    surfel_areas: a `SurfelAreas` cache to reuse across calls (same numbers, less work).
    gt_surface: the ground truth tumour's `GroundTruthSurface` with the surface spacing (`surface_spacing`),
        for whoever scores many predictions against one case (same numbers, less work).

    Rules: a uniform prediction scores Dice 0, surface Dice 0, HD95 = MASD = image diagonal (mm) and
    predicted volume 0 (even when it is all 1, and even when the ground truth has no tumour). A non-uniform
    prediction on a ground truth without tumour scores Dice 0, surface Dice 0 and HD95 = MASD = the diagonal
    (surface-distance would give inf and nan there). Otherwise the numbers are surface-distance's.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    spacing, full = _checked_shapes(pred, gt, spacing_zyx, full_shape, pred_name, gt_name)
    p = binarise_prediction(pred, pred_name)
    g = tumour_mask(gt, gt_name)
    voxel_mm3 = spacing[0] * spacing[1] * spacing[2]
    n_gt = int(np.count_nonzero(g))
    n_pred = int(np.count_nonzero(p))
    gt_volume = n_gt * voxel_mm3
    diagonal = image_diagonal_mm(full, spacing, official)

    if n_pred == 0 or n_pred == math.prod(full):  # uniform over the full image
        return {"dice": 0.0, "surface_dice_5mm": 0.0, "hd95": diagonal, "masd": diagonal,
                "pred_volume_mm3": 0.0, "gt_volume_mm3": gt_volume}
    pred_volume = n_pred * voxel_mm3
    if n_gt == 0:  # no tumour in the ground truth, something predicted: a complete miss
        return {"dice": 0.0, "surface_dice_5mm": 0.0, "hd95": diagonal, "masd": diagonal,
                "pred_volume_mm3": pred_volume, "gt_volume_mm3": gt_volume}

    if gt_surface is None:
        box = box_slices(bounding_box(p | g, CROP_MARGIN))
        pc, gc = p[box], g[box]
    else:
        pc, gc = p, g  # the cached surface covers the whole array; surface_distances crops it to the joint box
    dists = surface_distances(gc, pc, surface_spacing(spacing, official), surfel_areas, gt_surface)
    dice = float(sd.compute_dice_coefficient(gc, pc))
    surface_dice = float(sd.compute_surface_dice_at_tolerance(dists, tolerance_mm=SURFACE_DICE_TOLERANCE_MM))
    hd95 = float(sd.compute_robust_hausdorff(dists, percent=HAUSDORFF_PERCENT))
    gt_to_pred, pred_to_gt = sd.compute_average_surface_distance(dists)
    masd = float((gt_to_pred + pred_to_gt) / 2.0)
    out = {"dice": dice, "surface_dice_5mm": surface_dice, "hd95": hd95, "masd": masd,
           "pred_volume_mm3": pred_volume, "gt_volume_mm3": gt_volume}
    # Both masks are non-empty here, so the numbers are finite; keep the guarantee anyway.
    for key in ("hd95", "masd"):
        if not math.isfinite(out[key]):
            out[key] = diagonal
    for key in ("dice", "surface_dice_5mm"):
        if not math.isfinite(out[key]):
            out[key] = 0.0
    return out
