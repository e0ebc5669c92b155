"""Tumour post-processing on the binary mask: component volume filter, keep-largest, pancreas gating.

All off by default (spec `postprocess`). Components are 26-connected (cc3d). Volumes are in mm^3 from the
image spacing; distances to the predicted pancreas are Euclidean in mm (scipy's exact distance
transform with the voxel spacing), computed only inside a box around the tumour candidates.
"""

from __future__ import annotations

import logging

import cc3d
import numpy as np
from scipy import ndimage
from scipy.ndimage import distance_transform_edt

from .spec import PostprocessSpec

log = logging.getLogger(__name__)


def postprocess(tumor: np.ndarray, spacing_zyx: tuple[float, ...], rules: PostprocessSpec,
                pancreas: np.ndarray | None = None, *, quiet: bool = False) -> np.ndarray:
    """Filtered copy of the bool tumour mask (z, y, x). quiet: log nothing (for callers that run it
    thousands of times, such as the fit; the result is the same)."""
    if not rules.active or not tumor.any():
        return tumor
    components, n = cc3d.connected_components(tumor, connectivity=26, return_N=True)
    voxel_mm3 = float(np.prod(spacing_zyx))
    counts = np.bincount(components.ravel(), minlength=n + 1)
    volumes = counts[1:] * voxel_mm3  # component i+1
    keep = np.ones(n, dtype=bool)
    if rules.min_volume_mm3 is not None:
        keep &= volumes >= rules.min_volume_mm3
    if rules.max_distance_to_pancreas_mm is not None:
        if pancreas is None or not pancreas.any():
            if not quiet:
                log.warning("post-processing: no pancreas predicted; pancreas gating skipped")
        else:
            keep &= _near_pancreas(components, n, pancreas, spacing_zyx, rules.max_distance_to_pancreas_mm)
    if rules.keep_largest is not None:
        order = np.argsort(-volumes, kind="stable")
        ranked = [i for i in order if keep[i]][: rules.keep_largest]
        keep[:] = False
        keep[ranked] = True
    dropped = int(n - keep.sum())
    if dropped and not quiet:
        log.info("post-processing: kept %d of %d tumour components", int(keep.sum()), n)
    lookup = np.concatenate([[False], keep])
    return lookup[components]


def _near_pancreas(components: np.ndarray, n: int, pancreas: np.ndarray, spacing_zyx, max_mm: float) -> np.ndarray:
    # distance transform only over the tumour candidates' box grown by max_mm (+1 voxel): anything
    # farther cannot change whether a component passes
    nz = np.argwhere(components > 0)
    margin = [int(np.ceil(max_mm / s)) + 1 for s in spacing_zyx]
    lo = np.maximum(nz.min(0) - margin, 0)
    hi = np.minimum(nz.max(0) + 1 + np.array(margin), components.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub_pancreas = pancreas[box]
    if not sub_pancreas.any():
        return np.zeros(n, dtype=bool)
    distance = distance_transform_edt(~sub_pancreas, sampling=spacing_zyx)
    nearest = ndimage.minimum(distance, labels=components[box], index=np.arange(1, n + 1))
    return np.asarray(nearest) <= max_mm
