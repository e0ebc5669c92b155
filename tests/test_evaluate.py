"""Tests for panther_ensemble.scoring (metrics, leaderboard, evaluate, figures): PANTHER metric semantics around
DeepMind's surface-distance, the command, the figures, and that scoring changes no other module."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import subprocess
import sys
import types
import uuid
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import scipy.ndimage as ndi
import SimpleITK as sitk

import surface_distance
from panther_ensemble import cli, io
from panther_ensemble.errors import InputError
from panther_ensemble.scoring import figures, leaderboard, metrics

SPACING = (3.0, 1.1875, 0.8)  # (z, y, x), deliberately anisotropic and with three different values

# Surfel areas of surface-distance's 2x2x2 neighbourhood table for spacing 1 (by geometry):
CORNER = math.sqrt(3) / 4 * 0.5  # corner triangle, side sqrt(0.5): sqrt(3)/4 * 0.5 = 0.21650635
EDGE = math.sqrt(0.5)            # edge strip 1 x sqrt(0.5)
FACE = 1.0                       # face square 1 x 1


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def blob(shape, seed, threshold=0.56, sigma=2.0):
    """A random-ish smooth blob mask (several lumps, irregular surface)."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random(shape), sigma)
    field = (field - field.min()) / (field.max() - field.min())
    return field > threshold


class _NumpyWithOldAliases(types.ModuleType):
    """numpy plus `Inf` and `NaN` (removed in NumPy 2), which surface-distance 0.1 uses on empty masks."""

    Inf = math.inf
    NaN = math.nan

    def __getattr__(self, name):
        return getattr(np, name)


@contextlib.contextmanager
def library_as_released():
    """Run surface-distance 0.1 itself, as released, as the reference: inside this block only, its module
    global `np` gets the two old aliases, and its SciPy deprecation warnings are silenced. The code under
    test never runs inside it."""
    with mock.patch.object(surface_distance.metrics, "np", _NumpyWithOldAliases("numpy")), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy.ndimage.filters / .morphology
        yield


def reference(pred: np.ndarray, gt: np.ndarray, spacing) -> dict:
    """The metrics straight from surface-distance on the full arrays (no cropping, no special cases)."""
    with library_as_released():
        d = surface_distance.compute_surface_distances(gt, pred, spacing)
        a, b = surface_distance.compute_average_surface_distance(d)
        return {"dice": surface_distance.compute_dice_coefficient(gt, pred),
                "surface_dice_5mm": surface_distance.compute_surface_dice_at_tolerance(d, 5.0),
                "hd95": surface_distance.compute_robust_hausdorff(d, 95.0),
                "masd": (a + b) / 2}


def write_mha(path: Path, arr: np.ndarray, spacing_zyx=SPACING, origin=(10.0, -20.0, 5.0)) -> Path:
    img = sitk.GetImageFromArray(np.asarray(arr, np.uint8))
    img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


# ----------------------------------------------------------------------------------------------------------
# our surface distances are surface-distance's, bit for bit; scoring changes no other module
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_surface_distances_match_the_library_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(6, 28, 3))
    gt, pred = blob(shape, seed, sigma=1.2), blob(shape, seed + 50, sigma=1.2)
    if seed == 0:  # single voxels in opposite corners: both touch the array border
        gt, pred = np.zeros(shape, bool), np.zeros(shape, bool)
        gt[0, 0, 0], pred[-1, -1, -1] = True, True
    spacing = tuple(float(s) for s in rng.uniform(0.5, 3.5, 3))
    with library_as_released():
        ref = surface_distance.compute_surface_distances(gt, pred, spacing)
    tables = metrics.SurfelAreas()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated NumPy or SciPy name on our path
        ours = metrics.surface_distances(gt, pred, spacing, tables)
        again = metrics.surface_distances(gt, pred, spacing, tables)  # the cached table: same numbers
        # the ground truth's half computed once over the whole array (the fit's way): same numbers
        cached = metrics.surface_distances(gt, pred, spacing, tables, metrics.GroundTruthSurface(gt, spacing))
    assert set(ours) == set(ref)
    for k in ref:
        assert ours[k].dtype == ref[k].dtype and np.array_equal(ours[k], ref[k]), k
        assert np.array_equal(again[k], ref[k]), k
        assert cached[k].dtype == ref[k].dtype and np.array_equal(cached[k], ref[k]), k
    table = tables(spacing)
    assert tables(list(spacing)) is table and not table.flags.writeable
    np.testing.assert_array_equal(table, surface_distance.lookup_tables.create_table_neighbour_code_to_surface_area(
        spacing))
    with pytest.raises(ValueError):
        metrics.surface_distances(gt, np.zeros_like(gt), spacing)


def test_mask_dice_is_the_library_s_dice_and_calls_two_empty_masks_agreement():
    rng = np.random.default_rng(7)
    a, b = rng.random((6, 7, 8)) < 0.3, rng.random((6, 7, 8)) < 0.4
    assert metrics.mask_dice(a, b) == pytest.approx(surface_distance.metrics.compute_dice_coefficient(a, b), rel=1e-12)
    assert metrics.mask_dice(a.astype(np.uint8) * 2, b) == metrics.mask_dice(a, b)  # nonzero = inside
    empty = np.zeros_like(a)
    assert metrics.mask_dice(empty, empty) == 1.0  # two masks that agree, unlike case_metrics' Dice 0
    assert metrics.case_metrics(empty, empty, (1.0, 1.0, 1.0))["dice"] == 0.0
    assert metrics.mask_dice(empty, a) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        metrics.mask_dice(a, a[:-1])


def test_a_cached_ground_truth_surface_gives_the_same_metrics_for_many_predictions():
    """One small tumour in a large array, scored against predictions that miss, overlap, touch the array's
    edges or add far-away false positives: with the GroundTruthSurface (the fit's per-case cache) every
    metric is bit-identical to the plain call, in correct and official spacing order."""
    rng = np.random.default_rng(7)
    shape = (30, 70, 64)
    gt = np.zeros(shape, bool)
    gt[12:17, 30:38, 25:31] = blob((5, 8, 6), 3, sigma=1.0) | (rng.random((5, 8, 6)) < 0.2)
    gt[14, 33, 27] = True
    spacing = (2.7, 0.7, 1.3)  # no spacing a binary fraction: rounding would show a different computation
    tables = metrics.SurfelAreas()
    for official in (False, True):
        surface = metrics.GroundTruthSurface(gt, metrics.surface_spacing(spacing, official))
        for k in range(12):
            pred = np.roll(gt, int(rng.choice([-3, -2, -1, 1, 2, 3])), axis=int(rng.integers(0, 3)))
            if k % 3 == 1:
                pred[rng.random(shape) < 0.0005] = True  # scattered false positives, up to the array's edges
            if k % 3 == 2:
                pred = np.zeros(shape, bool)
                pred[0:3, 0:4, 60:64] = True  # a miss in a corner
            plain = metrics.case_metrics(pred, gt, spacing, official, surfel_areas=tables)
            cached = metrics.case_metrics(pred, gt, spacing, official, surfel_areas=tables, gt_surface=surface)
            assert plain == cached, (official, k)
            assert plain["hd95"] > 0
    with pytest.raises(ValueError, match="spacing"):
        metrics.surface_distances(gt, gt, spacing, tables, metrics.GroundTruthSurface(gt, spacing[::-1]))


NO_SIDE_EFFECTS_PROBE = r"""
import logging, sys, warnings
import numpy, scipy.ndimage, surface_distance.lookup_tables as lt, surface_distance.metrics as sdm

def levels():
    found = {n: lg.level for n, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    return {**found, "": logging.root.level}

def state():
    return {"sd np": sdm.np, "sd ndimage": sdm.ndimage, "table fn": lt.create_table_neighbour_code_to_surface_area,
            "numpy names": sorted(vars(numpy)), "ndimage names": sorted(vars(scipy.ndimage)),
            "sdm names": {k: id(v) for k, v in vars(sdm).items()}, "lt names": {k: id(v) for k, v in vars(lt).items()}}

before, levels_before, filters_before = state(), levels(), list(warnings.filters)
import numpy as np
import panther_ensemble.cli.evaluate
from panther_ensemble.scoring import aggregate, case_metrics, figures, rank_table
gt, pred = np.zeros((8, 9, 10), np.uint8), np.zeros((8, 9, 10), np.uint8)
gt[2:5, 2:6, 3:7] = 1
pred[3:6, 2:6, 3:8] = 1
m = case_metrics(pred, gt, (3.0, 1.0, 0.8))
rank_table({"a": aggregate({"c": m}), "b": aggregate({"c": m})})
assert "torch" not in sys.modules and "matplotlib" not in sys.modules, "scoring without figures stays light"
figures.plot_metrics({"c": m}, aggregate({"c": m}), sys.argv[1] + "/metrics.png", "t")
plt = sys.modules.get("matplotlib.pyplot")  # matplotlib's boxplot may import it to resolve its default backend
assert plt is None or plt.get_fignums() == [], "a figure was left in pyplot's global list"
assert list(warnings.filters) == filters_before, "warning filters changed"
import panther_ensemble.cli.fit, panther_ensemble.scoring.fit
assert state() == before, "a library module was changed"
now = levels()
assert all(now[n] == lv for n, lv in levels_before.items()), "a logger level changed"
assert all(now[n] == logging.NOTSET for n in now if n.startswith("panther_ensemble")), "a logger level was set"
assert not hasattr(numpy, "Inf") or int(numpy.__version__.split(".")[0]) < 2
print("clean")
"""


def test_scoring_changes_no_other_module(tmp_path):
    """Importing and using scoring (metrics, evaluate, figures, the fit package) leaves surface-distance,
    numpy, scipy, warning filters and logger levels as they were; fresh interpreter, so order-independent."""
    proc = subprocess.run([sys.executable, "-c", NO_SIDE_EFFECTS_PROBE, str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "clean"
    assert surface_distance.metrics.np is np and surface_distance.metrics.ndimage.__name__ == "scipy.ndimage"


# ----------------------------------------------------------------------------------------------------------
# against surface-distance directly
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_surface_distance_on_blobs_anisotropic(seed):
    shape = (20, 40, 44)
    gt = blob(shape, seed)
    pred = blob(shape, seed + 100)
    assert gt.any() and pred.any() and (gt & pred).any()
    ours = metrics.case_metrics(pred, gt, SPACING)
    ref = reference(pred, gt, SPACING)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k
    voxel = SPACING[0] * SPACING[1] * SPACING[2]
    assert ours["pred_volume_mm3"] == pytest.approx(pred.sum() * voxel)
    assert ours["gt_volume_mm3"] == pytest.approx(gt.sum() * voxel)
    # official mode = surface-distance with the spacing reversed; Dice and volumes unchanged
    off = metrics.case_metrics(pred, gt, SPACING, official=True)
    ref_off = reference(pred, gt, SPACING[::-1])
    for k, v in ref_off.items():
        assert off[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k
    assert off["hd95"] != pytest.approx(ours["hd95"])  # the anisotropy swap matters on these blobs
    assert off["pred_volume_mm3"] == ours["pred_volume_mm3"]


def test_labels_and_value_encodings():
    shape = (16, 30, 30)
    tum, pred = blob(shape, 5), blob(shape, 6)
    gt = np.where(ndi.binary_dilation(tum, iterations=3), 2, 0).astype(np.uint8)  # pancreas around
    gt[tum] = 1
    ref = metrics.case_metrics(pred, tum, SPACING)
    # label 2 (pancreas) is background for the metrics; uint8 {0,1} and {0,255} predictions are the same mask
    assert metrics.case_metrics(pred.astype(np.uint8), gt, SPACING) == ref
    assert metrics.case_metrics(pred.astype(np.uint8) * 255, gt, SPACING) == ref
    assert metrics.case_metrics(pred.astype(np.float32), gt, SPACING) == ref


def test_cropping_does_not_change_results():
    small_gt, small_pred = blob((14, 24, 26), 7), blob((14, 24, 26), 8)
    big = (40, 70, 80)
    gt = np.zeros(big, bool)
    pred = np.zeros(big, bool)
    gt[9:23, 30:54, 41:67] = small_gt
    pred[9:23, 30:54, 41:67] = small_pred
    full = metrics.case_metrics(pred, gt, SPACING)
    assert full == metrics.case_metrics(small_pred, small_gt, SPACING, full_shape=big)
    # the joint bounding box crop inside case_metrics is invisible against the un-cropped library call
    ref = reference(pred, gt, SPACING)
    for k, v in ref.items():
        assert full[k] == pytest.approx(v, rel=1e-12, abs=1e-12)
    # a mask touching the array border: margin clipping must not alter anything either
    gt2, pred2 = np.zeros((10, 12, 12), bool), np.zeros((10, 12, 12), bool)
    gt2[0:4, 0:5, 7:12] = True
    pred2[0:5, 1:5, 8:12] = True
    ref2 = reference(pred2, gt2, SPACING)
    got2 = metrics.case_metrics(pred2, gt2, SPACING)
    for k, v in ref2.items():
        assert got2[k] == pytest.approx(v, rel=1e-12, abs=1e-12)
    # far-apart masks: the crop must be the JOINT box (a box around either mask alone loses the other)
    gt3, pred3 = np.zeros((30, 40, 40), bool), np.zeros((30, 40, 40), bool)
    gt3[2:6, 3:9, 4:8] = True
    pred3[20:27, 25:37, 30:36] = True
    ref3 = reference(pred3, gt3, SPACING)
    got3 = metrics.case_metrics(pred3, gt3, SPACING)
    assert ref3["hd95"] > 20
    for k, v in ref3.items():
        assert got3[k] == pytest.approx(v, rel=1e-12, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# hand-computed tiny cases
# ----------------------------------------------------------------------------------------------------------
def test_two_single_voxels_by_hand():
    # gt voxel at (z, y, x) = (2, 2, 2), pred at (3, 2, 2): neighbours along z, spacing (z, y, x) = (3, 1, 0.7).
    # surface-distance puts surface points on voxel corners: gt corners at z = 1.5, 2.5; pred at z = 2.5, 3.5
    # (index units), same y and x. The 4 gt corners at z = 2.5 coincide with pred corners (distance 0); the 4
    # at z = 1.5 are one z-step (3 mm) from the nearest pred corner. All 8 corner surfels have the same area
    # (mirror images), so: HD95 = 3 mm (95 % of the area is reached only at the last, 3 mm, group);
    # mean distance each way = (4 * 0 + 4 * 3) / 8 = 1.5 mm -> MASD 1.5; every distance <= 5 mm -> surface
    # Dice 1; no overlap -> Dice 0; volume = 1 voxel * 3 * 1 * 0.7 = 2.1 mm^3 each.
    gt = np.zeros((6, 6, 6), np.uint8)
    pred = np.zeros((6, 6, 6), np.uint8)
    gt[2, 2, 2] = 1
    pred[3, 2, 2] = 1
    m = metrics.case_metrics(pred, gt, (3.0, 1.0, 0.7))
    assert m["dice"] == 0.0
    assert m["surface_dice_5mm"] == pytest.approx(1.0)
    assert m["hd95"] == pytest.approx(3.0)
    assert m["masd"] == pytest.approx(1.5)
    assert m["pred_volume_mm3"] == pytest.approx(2.1)
    assert m["gt_volume_mm3"] == pytest.approx(2.1)


def test_official_spacing_order_changes_hd95_by_hand():
    # Same two voxels. Official mode hands surface-distance SimpleITK's (x, y, z) = (0.7, 1, 3) with the
    # (z, y, x) arrays, so axis 0 (z) gets 0.7 mm: the z-step is 0.7 mm -> HD95 = 0.7, MASD = 4*0.7/8 = 0.35.
    # Volumes are order-independent (3 * 1 * 0.7 = 2.1).
    gt = np.zeros((6, 6, 6), np.uint8)
    pred = np.zeros((6, 6, 6), np.uint8)
    gt[2, 2, 2] = 1
    pred[3, 2, 2] = 1
    m = metrics.case_metrics(pred, gt, (3.0, 1.0, 0.7), official=True)
    assert m["hd95"] == pytest.approx(0.7)
    assert m["masd"] == pytest.approx(0.35)
    assert m["pred_volume_mm3"] == pytest.approx(2.1)
    # a shift along x instead: correct mode 0.7 mm, official mode 3 mm
    pred_x = np.zeros((6, 6, 6), np.uint8)
    pred_x[2, 2, 3] = 1
    assert metrics.case_metrics(pred_x, gt, (3.0, 1.0, 0.7))["hd95"] == pytest.approx(0.7)
    assert metrics.case_metrics(pred_x, gt, (3.0, 1.0, 0.7), official=True)["hd95"] == pytest.approx(3.0)


def test_two_cubes_shifted_by_one_voxel_by_hand():
    # gt: 2x2x2 cube; pred: the same cube shifted by one voxel along x; isotropic spacing 2 mm.
    # Dice = 2 * 4 / (8 + 8) = 0.5. Volume = 8 voxels * 8 mm^3 = 64 mm^3 each.
    # Surface points of a 2x2x2 cube: the 3x3x3 corner grid minus its centre = 26 points: 8 cube corners
    # (area CORNER), 12 edge midpoints (EDGE), 6 face centres (FACE); in index units, total area
    # 8*0.2165 + 12*0.7071 + 6*1 = 16.2173. gt -> pred: the 9 points of gt's -x face (4 corners, 4 edges,
    # 1 face) are one step from pred's surface, and so is gt's +x face centre (it is pred's interior centre);
    # the other 16 points lie on pred's surface (distance 0). Far area = 4*0.2165 + 4*0.7071 + 1 + 1 = 5.6945.
    # Mean gt->pred = 5.6945 / 16.2173 * 2 mm = 0.70227 mm; pred->gt is the mirror image, so MASD = 0.70227.
    # HD95: the 0-distance share is 1 - 0.3511 < 0.95, so the 95th percentile is the 1-step group = 2 mm.
    # Surface Dice @ 5 mm: every distance (0 or 2 mm) is within tolerance -> 1.
    gt = np.zeros((6, 6, 6), np.uint8)
    pred = np.zeros((6, 6, 6), np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    pred[1:3, 1:3, 2:4] = 1
    m = metrics.case_metrics(pred, gt, (2.0, 2.0, 2.0))
    far = 4 * CORNER + 4 * EDGE + 2 * FACE
    total = 8 * CORNER + 12 * EDGE + 6 * FACE
    assert m["dice"] == pytest.approx(0.5)
    assert m["masd"] == pytest.approx(far / total * 2.0, rel=1e-8)
    assert m["masd"] == pytest.approx(0.70227, abs=1e-5)
    assert m["hd95"] == pytest.approx(2.0)
    assert m["surface_dice_5mm"] == pytest.approx(1.0)
    assert m["pred_volume_mm3"] == pytest.approx(64.0)
    # identical masks: perfect scores
    same = metrics.case_metrics(gt, gt, (2.0, 2.0, 2.0))
    assert same["dice"] == 1.0 and same["surface_dice_5mm"] == 1.0 and same["hd95"] == 0.0 and same["masd"] == 0.0


def test_surface_dice_tolerance_is_five_mm_inclusive():
    # single voxels shifted by one step along z: the far group is exactly the z spacing away.
    # spacing z = 5.0 -> distance 5.0 <= 5 -> surface Dice 1; z = 5.5 -> far half (4 of 8 equal corners,
    # on both sides) is outside -> (4 + 4) / (8 + 8) = 0.5.
    gt = np.zeros((5, 5, 5), np.uint8)
    pred = np.zeros((5, 5, 5), np.uint8)
    gt[2, 2, 2] = 1
    pred[3, 2, 2] = 1
    assert metrics.case_metrics(pred, gt, (5.0, 1.0, 1.0))["surface_dice_5mm"] == pytest.approx(1.0)
    assert metrics.case_metrics(pred, gt, (5.5, 1.0, 1.0))["surface_dice_5mm"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------------------
# special cases
# ----------------------------------------------------------------------------------------------------------
SHAPE = (4, 5, 6)
DIAG = math.sqrt((4 * 3.0) ** 2 + (5 * 1.0) ** 2 + (6 * 0.5) ** 2)      # sqrt(144 + 25 + 9) = sqrt(178)
DIAG_OFFICIAL = math.sqrt((4 * 0.5) ** 2 + (5 * 1.0) ** 2 + (6 * 3.0) ** 2)  # (z,y,x) shape x (x,y,z) spacing
SP = (3.0, 1.0, 0.5)


@pytest.mark.parametrize("official, diag", [(False, DIAG), (True, DIAG_OFFICIAL)])
def test_uniform_zero_prediction(official, diag):
    gt = np.zeros(SHAPE, np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    m = metrics.case_metrics(np.zeros(SHAPE, np.uint8), gt, SP, official)
    assert m == {"dice": 0.0, "surface_dice_5mm": 0.0, "hd95": pytest.approx(diag), "masd": pytest.approx(diag),
                 "pred_volume_mm3": 0.0, "gt_volume_mm3": pytest.approx(8 * 1.5)}
    assert DIAG != pytest.approx(DIAG_OFFICIAL)


@pytest.mark.parametrize("official, diag", [(False, DIAG), (True, DIAG_OFFICIAL)])
def test_uniform_one_prediction(official, diag):
    gt = np.zeros(SHAPE, np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    m = metrics.case_metrics(np.ones(SHAPE, np.uint8), gt, SP, official)
    # all-ones scores like all-zeros, and its predicted volume is 0 (as the official script records it)
    assert m["dice"] == 0.0 and m["surface_dice_5mm"] == 0.0 and m["pred_volume_mm3"] == 0.0
    assert m["hd95"] == pytest.approx(diag) and m["masd"] == pytest.approx(diag)


@pytest.mark.parametrize("official", [False, True])
def test_uniform_rule_uses_full_image_when_cropped(official):
    gt = np.zeros((3, 3, 3), np.uint8)
    gt[1, 1, 1] = 1
    full = (20, 30, 40)
    m0 = metrics.case_metrics(np.zeros((3, 3, 3), np.uint8), gt, SP, official, full_shape=full)
    assert m0["hd95"] == pytest.approx(metrics.image_diagonal_mm(full, SP, official))
    assert m0["hd95"] != pytest.approx(metrics.image_diagonal_mm((3, 3, 3), SP, official))
    # all ones inside a crop is not uniform in the full image (outside the crop is background)
    m1 = metrics.case_metrics(np.ones((3, 3, 3), np.uint8), gt, SP, official, full_shape=full)
    assert m1["pred_volume_mm3"] == pytest.approx(27 * 1.5)
    assert 0 < m1["dice"] < 1


@pytest.mark.parametrize("official", [False, True])
def test_three_values_and_non_binary_predictions_are_errors(official):
    gt = np.zeros(SHAPE, np.uint8)
    gt[1, 1, 1] = 1
    three = np.zeros(SHAPE, np.uint8)
    three[0, 0, 0], three[1, 1, 1] = 1, 2
    with pytest.raises(InputError, match=r"^pred_case7\.mha: prediction must be binary.*3 distinct values \[0, 1, 2\]"):
        metrics.case_metrics(three, gt, SP, official, pred_name="pred_case7.mha")
    for bad in (np.where(three == 0, 1, 2), np.full(SHAPE, 255), np.full(SHAPE, np.nan)):
        with pytest.raises(InputError):
            metrics.case_metrics(bad, gt, SP, official)


@pytest.mark.parametrize("official, diag", [(False, DIAG), (True, DIAG_OFFICIAL)])
def test_empty_ground_truth(official, diag):
    gt = np.zeros(SHAPE, np.uint8)
    gt[0] = 2  # pancreas only, no tumour
    pred = np.zeros(SHAPE, np.uint8)
    pred[1:3, 1:3, 1:3] = 1
    # surface-distance alone gives non-finite numbers here (that is why we define the case)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = reference(pred.astype(bool), gt == 1, metrics.surface_spacing(SP, official))
    assert math.isinf(ref["hd95"]) and math.isnan(ref["masd"]) and ref["dice"] == 0.0
    m = metrics.case_metrics(pred, gt, SP, official)
    assert m == {"dice": 0.0, "surface_dice_5mm": 0.0, "hd95": pytest.approx(diag), "masd": pytest.approx(diag),
                 "pred_volume_mm3": pytest.approx(8 * 1.5), "gt_volume_mm3": 0.0}
    # empty prediction on empty ground truth is still a uniform prediction: the penalty, as officially
    e = metrics.case_metrics(np.zeros(SHAPE, np.uint8), gt, SP, official)
    assert e["dice"] == 0.0 and e["hd95"] == pytest.approx(diag) and e["gt_volume_mm3"] == 0.0
    assert all(math.isfinite(v) for v in {**m, **e}.values())


def test_bad_arrays():
    gt = np.zeros(SHAPE, np.uint8)
    with pytest.raises(InputError, match="differs from gt.mha"):
        metrics.case_metrics(np.zeros((4, 5, 7), np.uint8), gt, SP, pred_name="p.mha", gt_name="gt.mha")
    with pytest.raises(InputError, match="ground truth labels"):
        metrics.case_metrics(np.ones(SHAPE, np.uint8), np.full(SHAPE, 255, np.uint8), SP)


# ----------------------------------------------------------------------------------------------------------
# aggregate and ranking
# ----------------------------------------------------------------------------------------------------------
def test_aggregate_mean_and_rmse():
    cases = {"a": {"dice": 0.5, "surface_dice_5mm": 0.6, "hd95": 10.0, "masd": 2.0,
                   "pred_volume_mm3": 100.0, "gt_volume_mm3": 130.0},
             "b": {"dice": 0.7, "surface_dice_5mm": 1.0, "hd95": 4.0, "masd": 1.0,
                   "pred_volume_mm3": 50.0, "gt_volume_mm3": 10.0}}
    agg = leaderboard.aggregate(cases)
    # RMSE = sqrt(((100-130)^2 + (50-10)^2) / 2) = sqrt((900 + 1600) / 2) = sqrt(1250)
    assert agg == {"dice": pytest.approx(0.6), "surface_dice_5mm": pytest.approx(0.8), "hd95": 7.0,
                   "masd": 1.5, "volume_rmse_mm3": pytest.approx(math.sqrt(1250))}
    with pytest.raises(ValueError):
        leaderboard.aggregate({})


def test_rank_table_directions_and_ties():
    aggs = {
        "A": {"dice": 0.70, "surface_dice_5mm": 0.90, "hd95": 9.0, "masd": 2.0, "volume_rmse_mm3": 9000.0},
        "B": {"dice": 0.70, "surface_dice_5mm": 0.80, "hd95": 8.0, "masd": 3.0, "volume_rmse_mm3": 9000.0},
        "C": {"dice": 0.60, "surface_dice_5mm": 0.95, "hd95": 20.0, "masd": 1.0, "volume_rmse_mm3": 5000.0},
    }
    rows = {r["name"]: r for r in leaderboard.rank_table(aggs)}
    # Dice up: A, B tie at 0.70 -> both 1, C 3. sDice up: C 1, A 2, B 3. HD95 down: B 1, A 2, C 3.
    # MASD down: C 1, A 2, B 3. RMSE down: C 1, A and B tie -> 2, 2.
    assert [rows[n]["rank_dice"] for n in "ABC"] == [1, 1, 3]
    assert [rows[n]["rank_surface_dice_5mm"] for n in "ABC"] == [2, 3, 1]
    assert [rows[n]["rank_hd95"] for n in "ABC"] == [2, 1, 3]
    assert [rows[n]["rank_masd"] for n in "ABC"] == [2, 3, 1]
    assert [rows[n]["rank_volume_rmse_mm3"] for n in "ABC"] == [2, 2, 1]
    # mean ranks: A (1+2+2+2+2)/5 = 1.8, B (1+3+1+3+2)/5 = 2.0, C (3+1+3+1+1)/5 = 1.8 -> A, C share 1st
    assert [rows[n]["mean_rank"] for n in "ABC"] == [pytest.approx(1.8), pytest.approx(2.0), pytest.approx(1.8)]
    assert [r["name"] for r in leaderboard.rank_table(aggs)] == ["A", "C", "B"]
    assert [rows[n]["position"] for n in "ABC"] == [1, 3, 1]


def _case(dice, hd95, pred_ml=10.0, gt_ml=10.0):
    return {"dice": dice, "surface_dice_5mm": dice, "hd95": hd95, "masd": hd95 / 3, "pred_volume_mm3": pred_ml * 1000,
            "gt_volume_mm3": gt_ml * 1000}


def test_rank_stability_is_paired_and_sees_an_outlier():
    cases = [f"c{i}" for i in range(12)]
    rng = np.random.default_rng(3)
    base = {c: (float(rng.uniform(0.3, 0.8)), float(rng.uniform(5, 40))) for c in cases}
    # "better" beats "worse" on every metric of every case: first in every draw, whatever the cases' spread
    per_case = {"worse": {c: _case(d, h, 8.0) for c, (d, h) in base.items()},
                "better": {c: _case(d + 0.05, h - 2, 9.0) for c, (d, h) in base.items()}}
    out = leaderboard.rank_stability(per_case, resamples=300, seed=1)
    assert out["better"]["first"] == 1.0 and out["worse"]["first"] == 0.0
    assert out["better"]["mean_rank_p97.5"] == 1.0 and out["worse"]["mean_rank_p2.5"] == 2.0
    # "spiky" beats "better" on every metric of 11 cases and fails the 12th (an empty mask: the diagonal as
    # HD95): the full table ranks it behind "better", but every draw without that case ranks it first
    per_case["spiky"] = {c: _case(d + 0.08, h - 3, 9.5) for c, (d, h) in base.items()}
    per_case["spiky"]["c0"] = _case(0.0, 524.0, 0.0)
    rows = {r["name"]: r for r in leaderboard.rank_table({n: leaderboard.aggregate(v) for n, v in per_case.items()})}
    assert rows["spiky"]["mean_rank"] > rows["better"]["mean_rank"]
    out = leaderboard.rank_stability(per_case, resamples=400, seed=2)
    without_c0 = (1 - 1 / len(cases)) ** len(cases)  # share of draws that miss c0: about 0.35
    assert without_c0 - 0.1 < out["spiky"]["first"] < 0.75
    assert out["better"]["first"] > 0.2 and out["worse"]["first"] == 0.0
    assert out["spiky"]["mean_rank_p2.5"] == 1.0 and out["spiky"]["mean_rank_p97.5"] > rows["better"]["mean_rank"]
    assert sum(v["first"] for v in out.values()) >= 1.0
    assert leaderboard.rank_stability(per_case, resamples=50, seed=5) == \
        leaderboard.rank_stability(per_case, resamples=50, seed=5)  # reproducible
    with pytest.raises(ValueError, match="other cases"):
        leaderboard.rank_stability({"a": per_case["worse"], "b": {"c0": per_case["worse"]["c0"]}})



def test_paired_differences_signs_intervals_and_the_draws_of_rank_stability():
    cases = [f"c{i}" for i in range(15)]
    rng = np.random.default_rng(4)
    base = {c: (float(rng.uniform(0.3, 0.8)), float(rng.uniform(5, 40))) for c in cases}
    # the reference lists its cases in another order than the first entry (whose order rank_stability draws in)
    per_case = {"same": {c: _case(d, h, 8.0) for c, (d, h) in base.items()},
                "ref": {c: _case(*base[c], 8.0) for c in reversed(cases)},
                "better": {c: _case(d + 0.05, h - 2, 9.0) for c, (d, h) in base.items()}}
    out = leaderboard.paired_differences(per_case, "ref", resamples=300, seed=1)
    assert set(out) == {"same", "better"} and set(out["better"]) == set(metrics.AGGREGATE_KEYS)
    full = {n: leaderboard.aggregate(v) for n, v in per_case.items()}
    for k in metrics.AGGREGATE_KEYS:
        b = out["better"][k]
        assert b["difference"] == pytest.approx(full["better"][k] - full["ref"][k], rel=1e-12, abs=1e-12)
        assert b["better"] == 1.0 and b["equal"] == 0.0, k  # better on every case: better in every draw
        sign = 1 if metrics.HIGHER_IS_BETTER[k] else -1
        assert sign * b["low"] > 0 and sign * b["high"] > 0, k  # the interval excludes 0 on the right side
        assert out["same"][k] == {"difference": 0.0, "low": 0.0, "high": 0.0, "better": 0.0, "equal": 1.0}
    # a paired draw with an outlier: 11 of 12 cases far better, one empty mask (the diagonal as HD95)
    per_case["spiky"] = {c: _case(d + 0.08, h - 3, 9.5) for c, (d, h) in base.items()}
    per_case["spiky"]["c0"] = _case(0.0, 524.0, 0.0)
    spiky = leaderboard.paired_differences(per_case, "ref", resamples=400, seed=2)["spiky"]["hd95"]
    assert spiky["difference"] > 0 and spiky["low"] < 0 < spiky["high"]  # worse in the mean, not supported
    assert 0.2 < spiky["better"] < 0.6  # better exactly in the draws without c0, about (14/15)^15 = 0.36

    # one draw: the entry's and the reference's aggregates over the case set that rank_stability draws first
    # (same seed, the first entry's case order), computed by `aggregate` itself
    one = leaderboard.paired_differences(per_case, "ref", resamples=1, seed=7)
    draw = np.random.default_rng(7).integers(0, len(cases), len(cases))
    drawn = {n: leaderboard.aggregate({i: per_case[n][cases[c]] for i, c in enumerate(draw)}) for n in per_case}
    for n in ("better", "spiky"):
        for k in metrics.AGGREGATE_KEYS:
            assert one[n][k]["low"] == one[n][k]["high"] == pytest.approx(drawn[n][k] - drawn["ref"][k], abs=1e-9)
    assert leaderboard.paired_differences(per_case, "ref", 50, 5) == leaderboard.paired_differences(
        per_case, "ref", 50, 5)  # reproducible

    with pytest.raises(ValueError, match="no entry 'nope'"):
        leaderboard.paired_differences(per_case, "nope")
    with pytest.raises(ValueError, match="other cases"):
        leaderboard.paired_differences({"ref": per_case["ref"], "b": {"c0": per_case["ref"]["c0"]}}, "ref")
    with pytest.raises(ValueError, match="level"):
        leaderboard.paired_differences(per_case, "ref", level=95)


# ----------------------------------------------------------------------------------------------------------
# command line, end to end on .mha files
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture()
def dataset(tmp_path):
    shape = (12, 28, 30)
    gts, preds = {}, {}
    for i in range(3):
        tum = blob(shape, 20 + i, threshold=0.6)
        gt = np.where(ndi.binary_dilation(tum, iterations=2), 2, 0).astype(np.uint8)
        gt[tum] = 1
        gts[f"case_{i}"] = gt
        preds[f"case_{i}"] = ndi.binary_dilation(tum, iterations=1) if i != 1 else ndi.binary_erosion(tum)
    preds["case_2"] = np.zeros(shape, bool)  # uniform prediction -> penalty
    for cid, g in gts.items():
        write_mha(tmp_path / "gt" / f"{cid}.mha", g)
        write_mha(tmp_path / "A" / f"{cid}.mha", preds[cid])
        write_mha(tmp_path / "B" / f"{cid}.nii.gz", preds[cid])  # same masks as A: a deliberate tie
        write_mha(tmp_path / "C" / f"{cid}.mha", ndi.binary_dilation(preds[cid], iterations=2))
    (tmp_path / "A" / "notes.txt").write_text("ignored\n")
    return tmp_path, gts, preds


def run_cli(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_single_folder(dataset, capsys):
    root, gts, preds = dataset
    rc, out, err = run_cli(["evaluate", "--pred", str(root / "A"), "--gt", str(root / "gt"),
                            "--out", str(root / "res")], capsys)
    assert rc == 0, err
    doc = json.loads((root / "res" / "metrics.json").read_text())
    assert sorted(doc["cases"]) == ["case_0", "case_1", "case_2"]
    assert set(doc["aggregate"]) == set(metrics.AGGREGATE_KEYS)
    for cid in doc["cases"]:
        assert set(doc["cases"][cid]) == set(metrics.CASE_KEYS)
        expect = metrics.case_metrics(preds[cid], gts[cid], SPACING)
        for k in metrics.CASE_KEYS:
            assert doc["cases"][cid][k] == pytest.approx(expect[k], rel=1e-6), (cid, k)
    assert doc["cases"]["case_2"]["pred_volume_mm3"] == 0.0
    diag = math.dist((0, 0, 0), (12 * 3.0, 28 * 1.1875, 30 * 0.8))
    assert doc["cases"]["case_2"]["hd95"] == pytest.approx(diag, rel=1e-6)
    assert doc["aggregate"]["hd95"] == pytest.approx(np.mean([doc["cases"][c]["hd95"] for c in doc["cases"]]))
    assert doc["meta"]["official"] is False
    rows = list(csv.DictReader((root / "res" / "metrics.csv").read_text().splitlines()))
    assert [r["case"] for r in rows] == ["case_0", "case_1", "case_2", "aggregate"]
    assert float(rows[0]["dice"]) == pytest.approx(doc["cases"]["case_0"]["dice"])
    assert float(rows[-1]["volume_rmse_mm3"]) == pytest.approx(doc["aggregate"]["volume_rmse_mm3"])
    png = (root / "res" / "metrics.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000
    assert "case_1" in out and "mean / RMSE" in out

    # official mode: the same Dice/volumes, different distances on anisotropic data
    rc, out, err = run_cli(["evaluate", "--pred", str(root / "A"), "--gt", str(root / "gt"), "--official",
                            "--out", str(root / "res_off")], capsys)
    assert rc == 0, err
    off = json.loads((root / "res_off" / "metrics.json").read_text())
    assert off["meta"]["official"] is True
    assert off["cases"]["case_0"]["dice"] == doc["cases"]["case_0"]["dice"]
    assert off["cases"]["case_2"]["hd95"] == pytest.approx(
        math.dist((0, 0, 0), (12 * 0.8, 28 * 1.1875, 30 * 3.0)), rel=1e-6)
    assert off["cases"]["case_0"]["hd95"] != pytest.approx(doc["cases"]["case_0"]["hd95"])


def test_cli_leaderboard_with_tie(dataset, capsys):
    root, _, _ = dataset
    rc, out, err = run_cli(["evaluate", "--pred", str(root / "A"), str(root / "B"), str(root / "C"),
                            "--names", "alpha", "beta", "gamma", "--gt", str(root / "gt"),
                            "--out", str(root / "lb")], capsys)
    assert rc == 0, err
    board = json.loads((root / "lb" / "leaderboard.json").read_text())["leaderboard"]
    by = {r["name"]: r for r in board}
    for k in metrics.AGGREGATE_KEYS:  # A and B hold identical masks (.mha vs .nii.gz): tied on every metric
        assert by["alpha"][f"rank_{k}"] == by["beta"][f"rank_{k}"], k
        assert by["alpha"][k] == by["beta"][k]
    assert by["alpha"]["mean_rank"] == by["beta"]["mean_rank"]
    assert by["alpha"]["position"] == by["beta"]["position"]
    expect = leaderboard.rank_table({n: {k: by[n][k] for k in metrics.AGGREGATE_KEYS} for n in by})
    assert board == expect
    assert [r["mean_rank"] for r in board] == sorted(r["mean_rank"] for r in board)
    lb_csv = list(csv.DictReader((root / "lb" / "leaderboard.csv").read_text().splitlines()))
    assert [r["name"] for r in lb_csv] == [r["name"] for r in board]
    assert (root / "lb" / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for n in ("alpha", "beta", "gamma"):
        assert (root / "lb" / n / "metrics.json").is_file()
    assert "alpha" in out and "gamma" in out and "mean rank" in out


def test_cli_bootstrap_compares_every_entry_with_the_reference(dataset, capsys):
    root, _, _ = dataset
    argv = ["evaluate", "--pred", str(root / "A"), str(root / "B"), str(root / "C"), "--names", "alpha", "beta",
            "gamma", "--gt", str(root / "gt"), "--bootstrap", "200", "--reference", "gamma", "--out", str(root / "lb")]
    rc, out, err = run_cli(argv, capsys)
    assert rc == 0, err
    boot = json.loads((root / "lb" / "bootstrap.json").read_text())
    assert (boot["resamples"], boot["seed"], boot["cases"], boot["reference"]) == (200, 0, 3, "gamma")
    assert set(boot["paired"]) == {"alpha", "beta"} and set(boot["rank_stability"]) == {"alpha", "beta", "gamma"}
    per_case = {n: json.loads((root / "lb" / n / "metrics.json").read_text())["cases"] for n in ("alpha", "beta", "gamma")}
    assert boot["paired"] == json.loads(json.dumps(leaderboard.paired_differences(per_case, "gamma", 200, 0)))
    assert boot["rank_stability"] == json.loads(json.dumps(leaderboard.rank_stability(per_case, 200, 0)))
    assert boot["paired"]["alpha"] == boot["paired"]["beta"]  # identical masks: identical comparisons
    assert "minus gamma" in out and "95% interval" in out and "leads" in out
    # the default reference is the leaderboard's first; another seed, other draws
    rc, out, err = run_cli(argv[:-6] + ["--bootstrap", "50", "--seed", "3", "--out", str(root / "lb2")], capsys)
    assert rc == 0, err
    boot2 = json.loads((root / "lb2" / "bootstrap.json").read_text())
    first = json.loads((root / "lb2" / "leaderboard.json").read_text())["leaderboard"][0]["name"]
    assert boot2["reference"] == first and first not in boot2["paired"] and boot2["seed"] == 3


@pytest.mark.parametrize("extra, flag, words", [
    (["--bootstrap", "-1"], "--bootstrap", "must be 0 (off) or a number of draws, got -1"),
    (["--reference", "A"], "--reference", "is the entry --bootstrap compares with: give --bootstrap N too"),
    (["--seed", "4"], "--seed", "seeds the --bootstrap draws: give --bootstrap N too"),
    (["--bootstrap", "10", "--reference", "nope"], "--reference", "'nope' is not one of the entries (A, C)"),
])
def test_cli_bootstrap_option_errors(dataset, capsys, extra, flag, words):
    root, _, _ = dataset
    rc, out, err = run_cli(["evaluate", "--pred", str(root / "A"), str(root / "C"), "--gt", str(root / "gt"),
                            "--out", str(root / "never"), *extra], capsys)
    assert rc == 2 and err.strip().splitlines() == [f"error: {flag}: {words}"], err
    assert not (root / "never").exists()
    rc, out, err = run_cli(["evaluate", "--pred", str(root / "A"), "--gt", str(root / "gt"), "--bootstrap", "10"],
                           capsys)
    assert rc == 2 and err.strip() == "error: --bootstrap: compares entries: give at least two --pred folders"


def _bad_run(root, capsys, pred_dir, *extra):
    rc, out, err = run_cli(["evaluate", "--pred", str(pred_dir), "--gt", str(root / "gt"), *extra], capsys)
    lines = err.strip().splitlines()
    return rc, lines


def test_cli_three_values_error(dataset, capsys):
    root, gts, preds = dataset
    bad = (root / "bad3")
    for cid in gts:
        arr = preds[cid].astype(np.uint8)
        if cid == "case_1":
            arr[0, 0, 0] = 2
        write_mha(bad / f"{cid}.mha", arr)
    rc, lines = _bad_run(root, capsys, bad)
    assert rc == 2 and len(lines) == 1
    assert str(bad / "case_1.mha") in lines[0] and "3 distinct values" in lines[0]


def test_cli_size_mismatch_error(dataset, capsys):
    root, gts, preds = dataset
    bad = root / "badsize"
    for cid in gts:
        write_mha(bad / f"{cid}.mha", preds[cid] if cid != "case_0" else preds[cid][:, :, :-1])
    rc, lines = _bad_run(root, capsys, bad)
    assert rc == 2 and len(lines) == 1
    assert str(bad / "case_0.mha") in lines[0] and str(root / "gt" / "case_0.mha") in lines[0]
    assert "size" in lines[0]


def test_cli_geometry_mismatch_error(dataset, capsys):
    root, gts, preds = dataset
    bad = root / "badorigin"
    for cid in gts:
        write_mha(bad / f"{cid}.mha", preds[cid], origin=(10.0, -20.0, 5.5) if cid == "case_2" else (10.0, -20.0, 5.0))
    rc, lines = _bad_run(root, capsys, bad)
    assert rc == 2 and len(lines) == 1 and "origin" in lines[0] and str(bad / "case_2.mha") in lines[0]


def test_cli_missing_prediction(dataset, capsys):
    root, gts, preds = dataset
    part = root / "partial"
    write_mha(part / "case_1.mha", preds["case_1"])
    rc, lines = _bad_run(root, capsys, part)
    assert rc == 2 and len(lines) == 1
    assert str(part) in lines[0] and "case_0" in lines[0] and "case_2" in lines[0] and "case_1" not in lines[0]
    # with the flag, missing cases score as empty (uniform) predictions
    rc, lines = _bad_run(root, capsys, part, "--missing-as-empty", "--out", str(root / "res_part"))
    assert rc == 0
    doc = json.loads((root / "res_part" / "metrics.json").read_text())
    assert doc["cases"]["case_0"]["dice"] == 0.0 and doc["cases"]["case_0"]["pred_volume_mm3"] == 0.0
    assert doc["cases"]["case_1"]["dice"] > 0


def test_duplicate_case_id_and_case_id_rules(tmp_path):
    # case ids and folder scanning are io's (one rule for every command): other files are not cases
    assert io.case_id("abc.nii.gz") == "abc" and io.case_id("x.y.MHA") == "x.y" and io.case_id("n.nrrd") == "n"
    assert io.case_id("abc.nii") == "abc"
    write_mha(tmp_path / "e" / "c0.mha", np.zeros((2, 2, 2)))
    (tmp_path / "e" / "notes.txt").write_text("not a case\n")
    write_mha(tmp_path / "e" / ".mha", np.zeros((2, 2, 2)))
    assert list(io.scan_images(tmp_path / "e")) == ["c0"]
    write_mha(tmp_path / "d" / "c1.mha", np.zeros((2, 2, 2)))
    write_mha(tmp_path / "d" / "c1.nii.gz", np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="two files for case 'c1'"):
        io.scan_images(tmp_path / "d")


def test_console_script_end_to_end(dataset):
    root, _, _ = dataset
    exe = Path(sys.executable).with_name("panther-ensemble")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "panther_ensemble.cli"]
    ok = subprocess.run([*cmd, "evaluate", "--pred", str(root / "A"), "--gt", str(root / "gt")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "mean / RMSE" in ok.stdout
    bad = subprocess.run([*cmd, "evaluate", "--pred", str(root / "nope"), "--gt", str(root / "gt")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: {root / 'nope'}: not a folder"]


# ----------------------------------------------------------------------------------------------------------
# figures: short case labels, legends beside the data, not on it
# ----------------------------------------------------------------------------------------------------------
def test_short_case_labels():
    uuids = [str(uuid.UUID(int=i * 2**100 + 7)) for i in range(1, 40)]
    labels = figures.short_case_labels(uuids)
    assert labels == [u[:8] for u in uuids] and len(set(labels)) == len(uuids)
    # a shared prefix: the ends tell the cases apart
    labels = figures.short_case_labels(["PANTHER_0001", "PANTHER_0002", "case_7"])
    assert labels == ["…ER_0001", "…ER_0002", "case_7"]
    # neither 8 first nor 8 last characters are unique: widened until they are
    ids = ["prefix_A_middle_suffix", "prefix_B_middle_suffix"]
    labels = figures.short_case_labels(ids)
    assert len(set(labels)) == 2 and all(len(x) < len(ids[0]) for x in labels)
    assert figures.short_case_labels(["a", "b"]) == ["a", "b"]


def _synthetic_cases(n, seed=1):
    rng = np.random.default_rng(seed)
    cases = {}
    for i in range(n):
        cid = str(uuid.UUID(bytes=rng.bytes(16)))
        g = float(rng.uniform(2e3, 3e4))
        if i % 17 == 3:  # uniform prediction: the penalty
            cases[cid] = {"dice": 0.0, "surface_dice_5mm": 0.0, "hd95": 532.0, "masd": 532.0, "pred_volume_mm3": 0.0,
                          "gt_volume_mm3": g}
        else:
            d = float(rng.beta(5, 2))
            cases[cid] = {"dice": d, "surface_dice_5mm": min(1.0, d + 0.1), "hd95": float(rng.lognormal(2, 0.8)),
                          "masd": float(rng.lognormal(0.5, 0.7)), "pred_volume_mm3": g * float(rng.uniform(0.6, 1.4)),
                          "gt_volume_mm3": g}
    return cases


def test_metrics_figure_is_readable(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    cases = _synthetic_cases(92)  # a Task 1 training set, grand-challenge UUIDs as case ids
    agg = leaderboard.aggregate(cases)
    fig = figures.metrics_figure(cases, agg, "92 cases")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    height = fig.bbox.height
    for ax in fig.axes[:2]:  # the two per-case bar panels
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert len(ticks) == 92 and len(set(ticks)) == 92 and max(map(len, ticks)) <= 8
        assert ax.xaxis.get_tightbbox(r).height < 0.08 * height  # case labels take little of the height
        legend = ax.get_legend()
        assert legend is not None and not legend.get_window_extent(r).overlaps(ax.get_window_extent(r))
        red = {t.get_text() for t in ax.get_xticklabels() if t.get_color() == figures.RED}
        assert red == {c[:8] for c, m in cases.items() if m["pred_volume_mm3"] == 0}
    assert all(ax.get_legend() is None for ax in fig.axes[2:])  # no legend over the distributions or volumes
    figures.plot_metrics(cases, agg, tmp_path / "metrics.png", "92 cases")
    png = (tmp_path / "metrics.png").read_bytes()
    width_px, height_px = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert height_px == round(10.0 * figures.DPI) and width_px > height_px


def test_leaderboard_figure_text_stays_inside_its_panel():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    agg = leaderboard.aggregate(_synthetic_cases(20))
    rows = leaderboard.rank_table({f"entry {j}": {k: v * (1 + 0.3 * j) for k, v in agg.items()} for j in range(4)})
    fig = figures.leaderboard_figure(rows)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    for ax in fig.axes:
        box = ax.get_window_extent(r)
        for text in ax.texts:
            assert text.get_window_extent(r).x1 <= box.x1, text.get_text()
        tick_boxes = [t.get_window_extent(r) for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        assert not any(a.overlaps(b) for a, b in zip(tick_boxes, tick_boxes[1:]))
