"""Tumour post-processing on the binary mask: component volume filter, pancreas gating, keep-largest or
keep-most-confident, and the never-empty fallback.

All off by default (spec `postprocess`). Components are 26-connected (cc3d). Volumes are in mm^3 from the
image spacing; distances to the predicted pancreas are Euclidean in mm (scipy's exact distance
transform with the voxel spacing), computed only inside a box around the tumour candidates.
"""

from __future__ import annotations

import logging

import cc3d
import numpy as np
from scipy.ndimage import distance_transform_edt

from .ensemble import decide, label_mask

log = logging.getLogger(__name__)


def postprocess(tumor: np.ndarray, spacing_zyx: tuple[float, ...], pancreas: np.ndarray | None = None, *,
                min_volume_mm3: float | None = None, keep_largest: int | None = None,
                max_distance_to_pancreas_mm: float | None = None, keep_most_confident: int | None = None,
                tumor_probability: np.ndarray | None = None, quiet: bool = False) -> np.ndarray:
    """Filtered copy of the bool tumour mask (z, y, x); the rules are the spec's `postprocess` fields.
    `keep_most_confident` ranks the components that pass the other rules by their peak `tumor_probability`
    (the weighted P(tumour) the mask was decided from, same shape; ties: the larger first). The volume and
    pancreas rules run first, so a K-component rule chooses among the components they leave.
    `quiet`: no log lines (a search that post-processes thousands of candidate masks)."""
    if keep_largest is not None and keep_most_confident is not None:
        raise ValueError("keep_largest and keep_most_confident exclude each other")
    if (min_volume_mm3 is None and keep_largest is None and max_distance_to_pancreas_mm is None
            and keep_most_confident is None) or not tumor.any():
        return tumor
    if keep_most_confident is not None and (tumor_probability is None or tumor_probability.shape != tumor.shape):
        raise ValueError("keep_most_confident needs the tumour probability map on the mask's grid")
    components, n = cc3d.connected_components(tumor, connectivity=26, return_N=True)
    # every per-voxel step reads the tumour voxels only (a few thousand in a crop of millions): bincount and the
    # lookup over the whole label image were three quarters of a post-processing call in the fit's search
    where = np.flatnonzero(tumor)
    labels = components.reshape(-1)[where]
    voxel_mm3 = float(np.prod(spacing_zyx))
    counts = np.bincount(labels, minlength=n + 1)
    volumes = counts[1:] * voxel_mm3  # component i+1
    keep = np.ones(n, dtype=bool)
    if min_volume_mm3 is not None:
        keep &= volumes >= min_volume_mm3
    if max_distance_to_pancreas_mm is not None:
        if pancreas is None or not pancreas.any():
            if not quiet:
                log.warning("post-processing: no pancreas predicted; pancreas gating skipped")
        else:
            keep &= _near_pancreas(where, labels, n, tumor.shape, pancreas, spacing_zyx, max_distance_to_pancreas_mm)
    if keep_largest is not None:
        keep = _keep_first(np.argsort(-volumes, kind="stable"), keep, keep_largest)
    if keep_most_confident is not None:
        peaks = _peaks_at(labels, n, tumor_probability.reshape(-1)[where])
        # np.lexsort: the last key is the primary one
        keep = _keep_first(np.lexsort((-volumes, -peaks)), keep, keep_most_confident)
    dropped = int(n - keep.sum())
    if dropped and not quiet:
        log.info("post-processing: kept %d of %d tumour components", int(keep.sum()), n)
    out = np.zeros(tumor.shape, dtype=bool)
    out.reshape(-1)[where[keep[labels - 1]]] = True
    return out


def component_peaks(components: np.ndarray, n: int, probability: np.ndarray) -> np.ndarray:
    """The highest `probability` inside each component 1..n (float64, shape (n,)): the values of
    `scipy.ndimage.maximum(probability, components, range(1, n + 1))`, read from the components' voxels only.
    scipy sorts every voxel of the image, background included, on each call; the fit's search calls this for
    every candidate mask, where that sort was nine tenths of the fit's time."""
    labels = components.reshape(-1)
    live = np.flatnonzero(labels)
    return _peaks_at(labels[live], n, probability.reshape(-1)[live])


def _peaks_at(labels: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """The highest of `values` per component label 1..n (labels and values: the components' voxels)."""
    peaks = np.full(n, -np.inf)
    np.maximum.at(peaks, labels - 1, values.astype(np.float64))
    return peaks


def _keep_first(order: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """The first k components of `order` among those `keep` still holds."""
    ranked = [i for i in order if keep[i]][:k]
    out = np.zeros_like(keep)
    out[ranked] = True
    return out


def _near_pancreas(where: np.ndarray, labels: np.ndarray, n: int, shape: tuple[int, ...], pancreas: np.ndarray,
                   spacing_zyx, max_mm: float) -> np.ndarray:
    """Whether each component 1..n (its voxels: flat indices `where`, component `labels`) comes within max_mm of the
    pancreas. The distance transform runs only over the tumour candidates' box grown by max_mm (+1 voxel): anything
    farther cannot change whether a component passes."""
    nz = np.stack(np.unravel_index(where, shape), axis=1)
    margin = [int(np.ceil(max_mm / s)) + 1 for s in spacing_zyx]
    lo = np.maximum(nz.min(0) - margin, 0)
    hi = np.minimum(nz.max(0) + 1 + np.array(margin), shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub_pancreas = pancreas[box]
    if not sub_pancreas.any():
        return np.zeros(n, dtype=bool)
    distance = distance_transform_edt(~sub_pancreas, sampling=spacing_zyx)
    nearest = np.full(n, np.inf)
    np.minimum.at(nearest, labels - 1, distance[tuple((nz - lo).T)])
    return nearest <= max_mm


def never_empty(tumor: np.ndarray, argmax_tumor, spacing_zyx: tuple[float, ...], quiet: bool = False) -> np.ndarray:
    """`tumor` when it has a voxel; otherwise the largest 26-connected component of the argmax tumour mask
    (a callable returning it: computed only when needed), which may be empty too. The spec's
    `postprocess.never_empty`, applied after the decision and every other rule."""
    if tumor.any():
        return tumor
    fallback = postprocess(argmax_tumor(), spacing_zyx, keep_largest=1, quiet=True)
    if fallback.any() and not quiet:
        log.info("post-processing: no tumour left; the largest argmax tumour component (%d voxels) instead",
                 int(fallback.sum()))
    return fallback


def apply_rules(tumor: np.ndarray, probabilities, labels, spec, spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """The spec's `postprocess` on the decided bool tumour mask, given the weighted probabilities it was decided
    from (a torch tensor on any device: the pancreas gate and the never-empty fallback read it). The one path
    of the engine and of every re-scoring of full-grid maps (training/evaluate_heldout.py)."""
    rules = spec.postprocess
    pancreas = None
    if rules.max_distance_to_pancreas_mm is not None:
        pm = label_mask(probabilities, labels, spec.pancreas_label)
        pancreas = pm.cpu().numpy() if pm is not None else None
    tumor_probability = None
    if rules.keep_most_confident is not None and tumor.any():
        tumor_probability = probabilities[labels.index(spec.tumor_label)].cpu().float().numpy()
    out = postprocess(tumor, spacing_zyx, pancreas, min_volume_mm3=rules.min_volume_mm3,
                      keep_largest=rules.keep_largest, max_distance_to_pancreas_mm=rules.max_distance_to_pancreas_mm,
                      keep_most_confident=rules.keep_most_confident, tumor_probability=tumor_probability)
    if rules.never_empty:
        out = never_empty(out, lambda: decide(probabilities, labels, spec.tumor_label, "argmax").cpu().numpy(),
                          spacing_zyx)
    return out
