"""Tumour post-processing: volume filter, keep-largest, pancreas distance gating, the never-empty fallback."""

from __future__ import annotations

import numpy as np
import pytest

from types import SimpleNamespace

import torch

from panther_ensemble.inference.postprocess import apply_rules, component_peaks, never_empty, postprocess
from panther_ensemble.spec import PostprocessSpec

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


def test_never_empty_keeps_a_non_empty_mask_and_never_computes_the_fallback():
    t, _ = scene()

    def fallback():
        raise AssertionError("the argmax mask must not be computed when the mask has a voxel")

    assert never_empty(t, fallback, SPACING) is t


def test_never_empty_falls_back_to_the_largest_argmax_component():
    t, _ = scene()
    out = never_empty(np.zeros_like(t), lambda: t, SPACING)
    assert components(out) == [120] and out[2:6, 20:26, 5:10].all()
    assert not never_empty(np.zeros_like(t), lambda: np.zeros_like(t), SPACING).any()  # nothing to fall back to


def _probabilities(tumour: np.ndarray, pancreas: np.ndarray, p_tumour: float) -> torch.Tensor:
    """(background, pancreas, tumor) maps: P(tumour) = p_tumour on `tumour` (argmax there when > 1/3)."""
    rest = (1 - p_tumour) / 2
    probs = np.zeros((3,) + tumour.shape, np.float32)
    probs[0] = 1.0
    probs[:, pancreas] = np.array([0.1, 0.9, 0.0])[:, None]
    probs[:, tumour] = np.array([rest, rest, p_tumour])[:, None]
    return torch.from_numpy(probs)


def test_apply_rules_runs_the_fallback_after_every_other_rule():
    t, pancreas = scene()
    labels = ["background", "pancreas", "tumor"]
    probs = _probabilities(t, pancreas, 0.45)  # argmax tumour everywhere in t, but below a 0.5 threshold
    thresholded = (probs[2] >= 0.5).numpy()
    assert not thresholded.any()

    def spec(**rules):
        return SimpleNamespace(postprocess=PostprocessSpec(**rules), tumor_label="tumor", pancreas_label="pancreas")

    assert not apply_rules(thresholded, probs, labels, spec(), SPACING).any()
    assert components(apply_rules(thresholded, probs, labels, spec(never_empty=True), SPACING)) == [120]
    # the gate keeps only A (next to the pancreas); a volume rule then drops A: the fallback refills from the
    # argmax mask as a whole (C, the largest), not from what the gate kept
    argmax = probs.argmax(0).numpy() == 2
    out = apply_rules(argmax, probs, labels, spec(max_distance_to_pancreas_mm=1.0, min_volume_mm3=200.0,
                                                  never_empty=True), SPACING)
    assert components(out) == [120]
    out = apply_rules(argmax, probs, labels, spec(max_distance_to_pancreas_mm=1.0, never_empty=True), SPACING)
    assert components(out) == [50]  # the gate left A: no fallback


def _peaks(t, values):
    """A P(tumour) map on the scene: each component of `t` at its own level, one voxel of it at its peak."""
    import cc3d

    comps = cc3d.connected_components(t, connectivity=26)
    p = np.zeros(t.shape, np.float32)
    for i, (level, peak) in enumerate(values, start=1):
        p[comps == i] = level
        p[tuple(np.argwhere(comps == i)[0])] = peak
    return comps, p


def test_keep_most_confident_ranks_components_by_peak_probability_not_volume():
    t, pancreas = scene()
    comps, _ = _peaks(t, [(0, 0)] * 3)
    sizes = {i: int((comps == i).sum()) for i in (1, 2, 3)}
    # C (120 voxels) is the largest but diffuse; A (50) holds the single most confident voxel; B (4) next
    by_size = {v: k for k, v in sizes.items()}
    levels = {by_size[120]: (0.55, 0.60), by_size[50]: (0.55, 0.97), by_size[4]: (0.90, 0.91)}
    _, p = _peaks(t, [levels[i] for i in (1, 2, 3)])
    assert components(postprocess(t, SPACING, keep_largest=1)) == [120]
    assert components(postprocess(t, SPACING, keep_most_confident=1, tumor_probability=p)) == [50]
    assert components(postprocess(t, SPACING, keep_most_confident=2, tumor_probability=p)) == [4, 50]
    # the other rules choose first: without A (next to nothing but the volume filter) B and C remain, B is surer
    out = postprocess(t, SPACING, keep_most_confident=1, tumor_probability=p, min_volume_mm3=200)
    assert components(out) == [120]
    out = postprocess(t, SPACING, pancreas, keep_most_confident=1, tumor_probability=p, max_distance_to_pancreas_mm=20)
    assert components(out) == [50]
    # equal peaks: the larger component wins
    _, flat = _peaks(t, [(0.8, 0.8)] * 3)
    assert components(postprocess(t, SPACING, keep_most_confident=1, tumor_probability=flat)) == [120]


def test_component_peaks_equal_scipys_maximum_per_label():
    """The replacement of scipy.ndimage.maximum (which sorts every voxel of the image on each call) gives its
    values exactly, on float16 and float32 maps, with components of one voxel and many, at any label count."""
    import cc3d
    from scipy import ndimage

    rng = np.random.default_rng(7)
    for dtype, density in ((np.float16, 0.05), (np.float32, 0.3), (np.float32, 0.002)):
        probability = rng.random((12, 30, 31)).astype(dtype)
        comps, n = cc3d.connected_components(rng.random((12, 30, 31)) < density, connectivity=26, return_N=True)
        expected = np.asarray(ndimage.maximum(probability, labels=comps, index=np.arange(1, n + 1)), np.float64)
        got = component_peaks(comps, n, probability)
        assert n > 0 and got.shape == (n,) and got.dtype == np.float64
        np.testing.assert_array_equal(got, expected)
    assert component_peaks(np.zeros((2, 2, 2), np.uint32), 0, np.ones((2, 2, 2))).shape == (0,)


def test_keep_most_confident_needs_the_map_and_excludes_keep_largest():
    import pytest

    t, _ = scene()
    with pytest.raises(ValueError, match="tumour probability map"):
        postprocess(t, SPACING, keep_most_confident=1)
    with pytest.raises(ValueError, match="tumour probability map"):
        postprocess(t, SPACING, keep_most_confident=1, tumor_probability=np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="exclude each other"):
        postprocess(t, SPACING, keep_largest=1, keep_most_confident=1, tumor_probability=np.zeros(t.shape))
    assert not postprocess(np.zeros_like(t), SPACING, keep_most_confident=1).any()  # nothing to rank: no map needed


def test_apply_rules_keeps_the_most_confident_component_from_the_weighted_probabilities():
    t, pancreas = scene()
    labels = ["background", "pancreas", "tumor"]
    probs = _probabilities(t, pancreas, 0.7)
    comps, _ = _peaks(t, [(0, 0)] * 3)
    small = comps == comps[6, 30, 30]  # B, 4 voxels
    probs[:, torch.from_numpy(small)] = torch.tensor([0.02, 0.02, 0.96])[:, None]
    spec = SimpleNamespace(postprocess=PostprocessSpec(keep_most_confident=1), tumor_label="tumor",
                           pancreas_label="pancreas")
    mask = (probs[2] >= 0.5).numpy()
    assert components(apply_rules(mask, probs, labels, spec, SPACING)) == [4]
    # the engine may hold the map in float16 (GPU AMP): the same choice
    assert components(apply_rules(mask, probs.half(), labels, spec, SPACING)) == [4]


def test_component_peaks_bench_reports_both_ways_on_real_map_files(tmp_path, capsys):
    """bench/component_peaks.py on maps in save_probability_map's format: both functions timed on every decided
    mask, the values identical (exit 0), the json written."""
    import importlib.util
    import json
    from pathlib import Path

    from panther_ensemble.io import save_probability_map

    rng = np.random.default_rng(3)
    for case in ("a", "b"):
        tumour = np.clip(rng.random((6, 20, 20)) * 0.8, 0, 1)
        tumour[2:4, 5:9, 5:9] = 0.9
        save_probability_map(tmp_path / "oof" / f"{case}.npz", np.stack([1 - tumour, tumour]), ["background", "tumor"],
                             (3.0, 2.0, 2.0))
    path = Path(__file__).resolve().parents[1] / "bench" / "component_peaks.py"
    spec = importlib.util.spec_from_file_location("component_peaks_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    assert bench.main(["--oof", str(tmp_path / "oof"), "--repeat", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["identical"] is True and doc["calls"] == doc["image"]["calls"] + doc["crop"]["calls"] > 0
    assert doc["image"]["median_voxels"] == 6 * 20 * 20 and doc["image"]["scipy_s"] > 0


def _bench(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", range(6))
def test_postprocess_reads_only_the_tumour_voxels_and_decides_as_before(seed):
    """Every rule and combination on scattered masks (many components, equal volumes, equal peaks, a
    Fortran-ordered and a strided input): the same mask as the whole-image version it replaced (kept in
    bench/postprocess_voxels.py, which times the two inside the fit's scoring)."""
    before = _bench("postprocess_voxels").postprocess_before
    rng = np.random.default_rng(seed)
    shape = (14, 40, 37)
    field = rng.random(shape).astype(np.float32)
    tumor = field > rng.uniform(0.9, 0.99)
    if seed % 3 == 1:
        tumor = np.asfortranarray(tumor)
    if seed % 3 == 2:
        big = np.zeros((28, 40, 37), bool)
        big[::2] = tumor
        tumor = big[::2]  # a strided view
        assert not tumor.flags.c_contiguous
    probability = np.round(rng.random(shape), 1).astype(np.float32)  # rounded: ties between component peaks
    pancreas = np.zeros(shape, bool)
    pancreas[5:9, 10:25, 12:20] = True
    spacing = (3.0, 1.3, 1.3)
    rules = [dict(min_volume_mm3=v) for v in (5.0, 30.0, 1e9)]
    rules += [dict(keep_largest=k) for k in (1, 2, 50)]
    rules += [dict(keep_most_confident=k, tumor_probability=probability) for k in (1, 3)]
    rules += [dict(max_distance_to_pancreas_mm=d) for d in (0.0, 4.0)]
    rules += [dict(min_volume_mm3=5.0, keep_most_confident=1, tumor_probability=probability),
              dict(min_volume_mm3=5.0, keep_largest=2, max_distance_to_pancreas_mm=6.0)]
    assert tumor.any()
    for r in rules:
        got = postprocess(tumor, spacing, pancreas, quiet=True, **r)
        want = before(tumor, spacing, pancreas, **r)
        assert got.dtype == bool and got.shape == tumor.shape, r
        assert np.array_equal(got, want), r


def test_postprocess_voxels_bench_scores_the_fit_search_both_ways_with_identical_metrics(tmp_path):
    """bench/postprocess_voxels.py on out-of-fold maps in fit's layout (the simulated biased members of
    test_fit_simulated: one over-segments, one adds far false positives): both post-processings timed inside the
    fit's Evaluator, every metric identical (exit 0), the json written."""
    import json

    import fitsim

    fitsim.write_case(tmp_path, fitsim.phantom_case(7), seed=7)
    out = tmp_path / "r.json"
    bench = _bench("postprocess_voxels")
    assert bench.main(["--oof", str(tmp_path / "oof"), "--gt", str(tmp_path / "gt"), "--cases", "1", "--rounds", "2",
                       "--weight-step", "1.0", "--thresholds", "0.4", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["identical_metrics"] is True and doc["postprocess_calls"] > 0 and doc["cases"] == 1
    assert len(doc["postprocess_s_before"]) == len(doc["postprocess_s_now"]) == 2
