"""Tumour post-processing: volume filter, keep-largest, pancreas distance gating."""

from __future__ import annotations

import numpy as np

from panther_ensemble.inference.postprocess import postprocess

SPACING = (3.0, 1.0, 1.0)  # voxel = 3 mm^3


def scene():
    tumour = np.zeros((10, 40, 40), bool)
    tumour[2:4, 5:10, 5:10] = True  # A: 50 voxels = 150 mm^3, next to the pancreas
    tumour[6, 30:32, 30:32] = True  # B: 4 voxels = 12 mm^3, 15 mm from the pancreas (x direction)
    tumour[2:6, 20:26, 5:10] = True  # C: 120 voxels = 360 mm^3, 6 mm from the pancreas in y
    pancreas = np.zeros_like(tumour)
    pancreas[2:4, 10:14, 5:10] = True  # touches A (y 10 vs A up to 9)
    pancreas[6, 30:32, 13:17] = True  # 14 mm from B (x 16 -> 30)
    return tumour, pancreas


def components(mask):
    import cc3d

    return sorted(np.bincount(cc3d.connected_components(mask, connectivity=26).ravel())[1:].tolist())


def test_off_by_default_is_identity():
    t, p = scene()
    assert np.array_equal(postprocess(t, SPACING, p), t)


def test_min_volume():
    t, _ = scene()
    out = postprocess(t, SPACING, min_volume_mm3=100)
    assert components(out) == [50, 120]
    out = postprocess(t, SPACING, min_volume_mm3=151)
    assert components(out) == [120]


def test_keep_largest():
    t, _ = scene()
    assert components(postprocess(t, SPACING, keep_largest=1)) == [120]
    assert components(postprocess(t, SPACING, keep_largest=2)) == [50, 120]


def test_distance_to_pancreas_in_mm_with_anisotropic_spacing():
    tumour = np.zeros((12, 30, 30), bool)
    tumour[2, 5, 5] = True  # 2 slices (6 mm) above the pancreas voxel
    tumour[8, 5, 20] = True  # 4 voxels in x (4 mm) from the pancreas
    pancreas = np.zeros_like(tumour)
    pancreas[4, 5, 5] = True
    pancreas[8, 5, 16] = True
    keep5 = postprocess(tumour, SPACING, pancreas, max_distance_to_pancreas_mm=5.0)
    assert keep5[8, 5, 20] and not keep5[2, 5, 5]
    keep6 = postprocess(tumour, SPACING, pancreas, max_distance_to_pancreas_mm=6.0)
    assert keep6[8, 5, 20] and keep6[2, 5, 5]
    # no pancreas predicted: gating is skipped rather than deleting every tumour
    kept = postprocess(tumour, SPACING, np.zeros_like(tumour), max_distance_to_pancreas_mm=1.0)
    assert np.array_equal(kept, tumour)


def test_rules_combine():
    t, p = scene()
    out = postprocess(t, SPACING, p, min_volume_mm3=20, keep_largest=1, max_distance_to_pancreas_mm=2.0)
    assert components(out) == [50]  # C is far from the pancreas, B too small; A remains
