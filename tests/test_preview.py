"""Previews read back from the PNG: outline pixels on the mask's boundary, slices through the tumour, the
true aspect ratio, the grey window, TP/FP/FN colours; `predict --preview` and `evaluate --preview`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread
from scipy import ndimage

import modelfactory as mf
from panther_ensemble.preview import (FN_RGB, FP_RGB, OUTLINE_RGB, TP_RGB, intensity_window, render_comparison,
                                      render_prediction)

SPACING = (3.0, 1.2, 0.8)  # (z, y, x) mm: every view has a different aspect ratio
SHAPE = (24, 70, 90)
CLI = Path(sys.executable).parent / "panther-ensemble"


def png(path: Path) -> np.ndarray:
    return (imread(str(path))[..., :3] * 255).round().astype(np.uint8)


def ellipsoid(centre, radii_mm, shape=SHAPE, spacing=SPACING) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum(((g - c * s) / r) ** 2 for g, c, s, r in zip(grid, centre, spacing, radii_mm)) <= 1


def physical_pixels(panel, spacing=SPACING):
    """Pixel -> voxel maps computed independently of the renderer: the panel's pixels split the slice's field
    of view evenly; a pixel shows the voxel that contains its centre."""
    maps = []
    for axis, n_px in ((panel.row_axis, panel.shape[0]), (panel.col_axis, panel.shape[1])):
        centres = (np.arange(n_px) + 0.5) * SHAPE[axis] / n_px  # in voxel units
        maps.append(np.minimum(centres.astype(int), SHAPE[axis] - 1))
    if panel.view != "axial":
        maps[0] = maps[0][::-1]  # z points up
    return maps


def test_outline_pixels_lie_on_the_mask_boundary_in_each_slice(tmp_path):
    image = mf.synthetic_volume(SHAPE, seed=3)
    mask = ellipsoid((15, 40, 30), (7.0, 9.0, 8.0)).astype(np.uint8)
    layout = render_prediction(image, mask, SPACING, tmp_path / "p.png", title="case")
    picture = png(tmp_path / "p.png")
    assert picture.shape[:2] == layout.size[::-1]
    centroid = tuple(int(round(c)) for c in ndimage.center_of_mass(mask))
    assert layout.centre == centroid and layout.centred_on == "tumour"
    red = np.all(picture == OUTLINE_RGB, axis=2)
    inside_panels = np.zeros_like(red)
    for panel in layout.panels:
        h, w = panel.shape
        # field of view in mm, same scale on both axes: the aspect ratio is the physical one
        extents = (SHAPE[panel.row_axis] * SPACING[panel.row_axis], SHAPE[panel.col_axis] * SPACING[panel.col_axis])
        assert h / w == pytest.approx(extents[0] / extents[1], rel=0.02)
        rows, cols = physical_pixels(panel)
        np.testing.assert_array_equal(rows, panel.rows)
        np.testing.assert_array_equal(cols, panel.cols)
        plane = np.take(mask, centroid[panel.fixed_axis], axis=panel.fixed_axis).astype(bool)
        shown = plane[np.ix_(rows, cols)]  # the mask at the rendering's resolution
        here = red[panel.top:panel.top + h, panel.left:panel.left + w]
        inside_panels[panel.top:panel.top + h, panel.left:panel.left + w] = True
        assert here.sum() > 20, panel.view
        # every outline pixel is on the mask and touches a pixel outside it (4-neighbourhood) ...
        outside = np.pad(~shown, 1, constant_values=True)
        touches = outside[:-2, 1:-1] | outside[2:, 1:-1] | outside[1:-1, :-2] | outside[1:-1, 2:]
        assert np.all(shown[here]) and np.all(touches[here]), panel.view
        # ... and every such boundary pixel is outlined
        assert np.array_equal(here, shown & touches), panel.view
    assert not red[~inside_panels].any()  # no outline colour outside the three panels


def test_all_three_slices_cut_the_largest_component_even_when_its_centroid_is_outside():
    from panther_ensemble.preview import slice_centre

    big = ellipsoid((12, 35, 30), (9.0, 10.0, 10.0))
    small = ellipsoid((12, 35, 75), (6.0, 6.0, 6.0))
    centre, on = slice_centre(big | small)  # the two components' joint centroid lies between them
    assert on == "tumour" and centre == tuple(int(round(c)) for c in ndimage.center_of_mass(big))
    ring = ellipsoid((12, 35, 45), (9.0, 14.0, 14.0)) & ~ellipsoid((12, 35, 45), (9.0, 8.0, 8.0))
    centre, _ = slice_centre(ring)  # a ring: the centroid is in its hole
    assert ring[centre]


def test_grey_window_is_the_1st_to_99th_percentile(tmp_path):
    image = mf.synthetic_volume(SHAPE, seed=4)
    mask = np.zeros(SHAPE, np.uint8)
    layout = render_prediction(image, mask, SPACING, tmp_path / "p.png")
    lo, hi = np.percentile(image[image != 0], [1, 99])
    assert intensity_window(image) == pytest.approx((lo, hi))
    axial = layout.panels[0]
    picture = png(tmp_path / "p.png")[axial.top:axial.top + axial.shape[0], axial.left:axial.left + axial.shape[1]]
    expected = np.clip((image[layout.centre[0]][np.ix_(axial.rows, axial.cols)] - lo) / (hi - lo), 0, 1) * 255
    assert np.abs(picture[..., 0].astype(float) - expected).max() <= 1.0
    assert np.array_equal(picture[..., 0], picture[..., 1])  # grey
    assert layout.centred_on == "image centre" and layout.centre == tuple(s // 2 for s in SHAPE)


def test_an_empty_mask_is_shown_through_the_pancreas(tmp_path):
    image = mf.synthetic_volume(SHAPE, seed=5)
    pancreas = ellipsoid((8, 20, 60), (6.0, 8.0, 10.0))
    layout = render_prediction(image, np.zeros(SHAPE, np.uint8), SPACING, tmp_path / "p.png", pancreas=pancreas)
    assert layout.centred_on == "pancreas"
    assert layout.centre == tuple(int(round(c)) for c in ndimage.center_of_mass(pancreas))
    assert not np.all(png(tmp_path / "p.png") == OUTLINE_RGB, axis=2).any()


def test_comparison_colours_true_false_positives_and_false_negatives(tmp_path):
    image = mf.synthetic_volume(SHAPE, seed=6)
    truth = ellipsoid((12, 35, 45), (9.0, 10.0, 10.0))
    prediction = np.roll(truth, (5, 6), axis=(1, 2))
    layout = render_comparison(image, prediction, truth, SPACING, tmp_path / "c.png")
    assert layout.centre == tuple(int(round(c)) for c in ndimage.center_of_mass(truth))
    picture = png(tmp_path / "c.png").astype(int)
    for panel in layout.panels:
        h, w = panel.shape
        px = picture[panel.top:panel.top + h, panel.left:panel.left + w]
        i = layout.centre[panel.fixed_axis]
        pred, gt = panel.take(prediction, i), panel.take(truth, i)
        r, g, b = px[..., 0], px[..., 1], px[..., 2]
        classes = {"tp": pred & gt, "fp": pred & ~gt, "fn": ~pred & gt, "none": ~pred & ~gt}
        assert all(c.any() for c in classes.values()), panel.view
        assert np.all(((g > r) & (g > b))[classes["tp"]])
        assert np.all(((r > g) & (r > b))[classes["fp"]])
        assert np.all(((b > r) & (b > g))[classes["fn"]])
        assert np.all(((r == g) & (g == b))[classes["none"]])
    assert TP_RGB != FP_RGB != FN_RGB


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("preview_cohort")
    (root / "images").mkdir()
    for k in range(2):
        sitk.WriteImage(mf.synthetic_mri(shape=(12, 40, 44), seed=10 + k), str(root / "images" / f"c{k}.mha"))
    return root


def test_predict_and_evaluate_write_previews_and_a_contact_sheet(tmp_path, models, small_cohort):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"version": 1, "task": 1, "members": [{"name": "A", "model": "A", "folds": [0],
                                                                      "mirroring": False}]}))
    out, prev = tmp_path / "masks", tmp_path / "preview"
    proc = subprocess.run([CLI, "predict", small_cohort / "images", "-o", out, "--spec", spec, "--model-dir", models,
                           "--device", "cpu", "--preview", prev, "--no-progress"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in prev.glob("*.png")) == ["c0.png", "c1.png", "contact_sheet.png"]
    for k in range(2):  # the outline in the PNG is where the written mask is
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"c{k}.mha")))
        assert mask.any()
        assert np.all(png(prev / f"c{k}.png") == OUTLINE_RGB, axis=2).any()
    sheet = png(prev / "contact_sheet.png")
    assert sheet.shape[0] > 100 and sheet.shape[1] > 300

    # evaluate: the first case's own mask as ground truth (all true positives), the second's shifted
    gt = tmp_path / "gt"
    gt.mkdir()
    for k in range(2):
        m = sitk.ReadImage(str(out / f"c{k}.mha"))
        if k == 1:
            shifted = sitk.GetImageFromArray(np.roll(sitk.GetArrayFromImage(m), 4, axis=2))
            shifted.CopyInformation(m)
            m = shifted
        sitk.WriteImage(m, str(gt / f"c{k}.mha"))
    proc = subprocess.run([CLI, "evaluate", "--pred", out, "--gt", gt, "--preview", tmp_path / "ev", "--images",
                           small_cohort / "images"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    first, second = png(tmp_path / "ev" / "c0.png").astype(int), png(tmp_path / "ev" / "c1.png").astype(int)

    def coloured(p, channel):
        others = [c for c in range(3) if c != channel]
        return ((p[..., channel] > p[..., others[0]]) & (p[..., channel] > p[..., others[1]])).sum()

    assert coloured(first, 1) > 0 and coloured(first, 0) == 0 and coloured(first, 2) == 0
    assert coloured(second, 0) > 0 and coloured(second, 2) > 0
    assert (tmp_path / "ev" / "contact_sheet.png").is_file()
    proc = subprocess.run([CLI, "evaluate", "--pred", out, "--gt", gt, "--preview", tmp_path / "ev2"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "needs --images" in proc.stderr
