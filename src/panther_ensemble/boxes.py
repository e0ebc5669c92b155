"""Bounding boxes of masks: the one definition every stage and every score uses.

A box is a list of half-open (start, stop) pairs, one per array axis, in the array's own axis order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

Box = list[tuple[int, int]]


def bounding_box(mask: np.ndarray, margin: int | Sequence[int] = 0) -> Box | None:
    """Half-open box of the nonzero voxels of `mask`, grown by `margin` voxels per axis and clipped to the
    array; None when nothing is set. One pass per axis over a shrinking sub-array (cheap on large volumes)."""
    mask = np.asarray(mask)
    margins = [int(margin)] * mask.ndim if np.isscalar(margin) else [int(m) for m in margin]
    box: Box = []
    sub = mask
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(sub, axis=others) if others else sub)
        if hit.size == 0:
            return None
        lo, hi = int(hit[0]), int(hit[-1]) + 1
        sub = sub[(slice(None),) * axis + (slice(lo, hi),)]
        box.append((max(lo - margins[axis], 0), min(hi + margins[axis], mask.shape[axis])))
    return box


def box_slices(box: Sequence[Sequence[int]]) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in box)


def box_shape(box: Sequence[Sequence[int]]) -> tuple[int, ...]:
    return tuple(int(b) - int(a) for a, b in box)
