"""Phantom generator: determinism, labels, anatomy, geometry, socket layout, shipped sample cases."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from panther_ensemble import phantoms
from panther_ensemble.io import Geometry
from panther_ensemble.phantoms import datasets, geometry
from panther_ensemble.scoring.metrics import mask_dice

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "test" / "README.md"


@pytest.fixture(scope="module")
def t1():
    return phantoms.make_phantom(1, 7)


@pytest.fixture(scope="module")
def t2():
    return phantoms.make_phantom(2, 7)


def _same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing()
            and a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection())


def test_deterministic_bit_for_bit(t1):
    img, lab = phantoms.generate_phantom(1, 7)  # second generation of the same seed in this process
    assert np.array_equal(sitk.GetArrayViewFromImage(img), t1.image)
    assert np.array_equal(sitk.GetArrayViewFromImage(lab), t1.label)
    ref_img = phantoms.to_image(t1.image, t1.geometry)
    assert _same_geometry(img, ref_img) and _same_geometry(img, lab)
    assert isinstance(t1.geometry, Geometry) and Geometry.of(img) == t1.geometry
    assert img.GetPixelID() == sitk.sitkInt16 and lab.GetPixelID() == sitk.sitkUInt8
    assert phantoms.case_uuid(1, 7) == phantoms.case_uuid(1, 7) != phantoms.case_uuid(2, 7)


# sha256 of the image and label arrays (little-endian int16 / uint8 bytes, (z, y, x)) and the geometry
PINNED = {
    "t1": dict(image="86abe08faba2a317339cea2291eda681e133335a6a258f485159fd0549d37789",
               label="93d6b51f5994a1267cb502ac907965fae1a64acbf8816e8b8e46540b8af7fcae",
               size=(305, 242, 73), spacing=(1.31, 1.31, 3.0), origin=(-216.217, -182.104, -48.576)),
    "t2": dict(image="1a8b5b07ebcd610b5691e6c0d68bcd34cc11b181f2471de3b0344aa026a6b6f3",
               label="6ae3c67eb8cfbe50d8ed21ff47e7b8201c394b5019c231ec699ca5bb33a1b247",
               size=(314, 300, 80), spacing=(0.9733, 0.9733, 1.92), origin=(-176.099, -168.257, -403.418)),
}


@pytest.mark.parametrize("which", ["t1", "t2"])
def test_phantom_version_is_pinned(which, request):
    """Task 1 and Task 2 seed 7 (PHANTOM_VERSION 2) are exactly these arrays and this geometry.

    The training data, the held-out cases and the shipped samples are all regenerated from (task, seed),
    so a change of these hashes is a new phantom: bump PHANTOM_VERSION, document the change in its
    docstring and in training/README.md, and regenerate the datasets and the sample cases.  Only then
    update the hashes here.
    """
    import hashlib
    img, lab, geom, *_ = request.getfixturevalue(which)
    pin = PINNED[which]
    assert phantoms.PHANTOM_VERSION == 2
    assert hashlib.sha256(np.ascontiguousarray(img, "<i2").tobytes()).hexdigest() == pin["image"]
    assert hashlib.sha256(np.ascontiguousarray(lab, "u1").tobytes()).hexdigest() == pin["label"]
    im = phantoms.to_image(img, geom)
    assert (im.GetSize(), im.GetSpacing(), im.GetOrigin()) == (pin["size"], pin["spacing"], pin["origin"])
    assert im.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("which", ["t1", "t2"])
def test_labels_and_tumour_location(which, request):
    img, lab, geom, meta = request.getfixturevalue(which)
    assert set(np.unique(lab).tolist()) == {0, 1, 2}
    assert img.dtype == np.int16 and img.min() >= 0
    tum, panc = lab == 1, lab == 2
    # tumour touches the pancreas; its surface stays within its own radius plus a few millimetres of
    # pancreatic tissue (a large tumour replaces the whole cross-section of the gland)
    from scipy import ndimage
    grown = ndimage.binary_dilation(panc, iterations=1)
    assert (grown & tum).any()
    surface = tum & ~ndimage.binary_erosion(tum)
    dist_to_panc = ndimage.distance_transform_edt(~panc, sampling=geom.spacing_zyx)
    assert dist_to_panc[surface].max() <= meta["tumour_diameter_mm"] / 2 * 1.25 + 8.0
    vol = tum.sum() * np.prod(geom.spacing_zyx)
    assert 4 / 3 * np.pi * 1.5 ** 3 <= vol <= 4 / 3 * np.pi * 25.0 ** 3 * 1.5
    assert 5.0 <= meta["tumour_diameter_mm"] <= 50.0


def test_tumour_differs_from_pancreas_in_the_intended_direction(t1, t2):
    """Task 1 tumour hypo-intense, Task 2 hyper-intense, against the pancreas within 10 mm of it (medians:
    the pancreas label also holds the duct and cysts)."""
    from scipy import ndimage
    for (img, lab, geom, *_), sign in ((t1, -1), (t2, 1)):
        near = ndimage.distance_transform_edt(lab != 1, sampling=geom.spacing_zyx) <= 10.0
        d = np.median(img[lab == 1]) - np.median(img[(lab == 2) & near])
        assert np.sign(d) == sign


def test_geometry_ranges():
    for seed in range(40):
        rng = np.random.default_rng([1, seed])
        g, _ = geometry.random_geometry(1, rng)
        nz, ny, nx = g.shape_zyx
        sz, sy, sx = g.spacing_zyx
        assert 3.0 <= sz <= 3.5 and 0.69 <= sx == sy <= 1.31
        assert 50 <= nz <= 88 and 150 <= ny <= 466 and 200 <= nx <= 570
        d = np.array(g.direction).reshape(3, 3)
        assert np.allclose(d @ d.T, np.eye(3), atol=1e-9)
        rng = np.random.default_rng([2, seed])
        g, _ = geometry.random_geometry(2, rng)
        nz, ny, nx = g.shape_zyx
        sz, sy, sx = g.spacing_zyx
        assert 1.9 <= sz <= 2.1 and 0.89 <= sx == sy <= 1.0
        assert nz <= 200 and ny <= 400 and nx <= 400
    dirs = [geometry.random_geometry(1, np.random.default_rng([1, s]))[0].direction for s in range(40)]
    n_identity = sum(np.allclose(d, np.eye(3).ravel()) for d in dirs)
    assert 20 <= n_identity <= 38  # about 1 in 4 has a rotation or flip


def test_socket_layout(tmp_path, t2, monkeypatch):
    monkeypatch.setattr(datasets, "make_phantom", lambda task, seed, *_: t2)  # layout only: reuse the fixture
    ipath, label = phantoms.write_socket_case(tmp_path / "in", 2, 7, ground_truth_dir=tmp_path / "gt")
    uid = phantoms.case_uuid(2, 7)
    assert ipath == tmp_path / "in" / "images" / "abdominal-t2-mri" / f"{uid}.mha"
    entries = json.loads((tmp_path / "in" / "inputs.json").read_text())
    assert entries == [{"interface": {"slug": "abdominal-t2-mri", "kind": "Image",
                                      "relative_path": "images/abdominal-t2-mri"},
                        "image": {"name": f"{uid}.mha"}}]
    img = sitk.ReadImage(str(ipath))
    gt = sitk.ReadImage(str(tmp_path / "gt" / f"{uid}.mha"))
    assert _same_geometry(img, gt) and _same_geometry(img, label)
    assert img.GetPixelID() == sitk.sitkInt16


def test_nnunet_dataset_layout(tmp_path, t2, monkeypatch):
    monkeypatch.setattr(datasets, "generate_phantom",
                        lambda task, seed, *_: (phantoms.to_image(t2.image, t2.geometry),
                                                phantoms.to_image(t2.label, t2.geometry)))
    root = phantoms.write_nnunet_dataset(tmp_path, 2, [3], 999, "Tiny")
    meta = json.loads((root / "dataset.json").read_text())
    assert root.name == "Dataset999_Tiny"
    assert meta["channel_names"] == {"0": "MRI"} and meta["file_ending"] == ".mha"
    assert meta["labels"] == {"background": 0, "tumor": 1, "pancreas": 2} and meta["numTraining"] == 1
    assert (root / "imagesTr" / "phantom_t2_0003_0000.mha").is_file()
    assert (root / "labelsTr" / "phantom_t2_0003.mha").is_file()


def test_parse_seeds():
    assert phantoms.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert phantoms.format_seeds([3, 4, 5, 6]) == "3-6"


def _shipped_cases():
    """(task, seed, image path, ground truth path) from test/samples.json."""
    spec = ROOT / "test" / "samples.json"
    if not spec.is_file():
        return []
    out = []
    for c in json.loads(spec.read_text()):
        out.append((c["task"], c["seed"], ROOT / c["image"], ROOT / c["ground_truth"]))
    return out


@pytest.mark.parametrize("task,seed,image,truth", _shipped_cases() or [pytest.param(0, 0, None, None, marks=pytest.mark.skip("no shipped samples yet"))])
def test_shipped_samples_regenerate_bit_for_bit(task, seed, image, truth):
    img, lab = phantoms.generate_phantom(task, seed)
    ref_img, ref_lab = sitk.ReadImage(str(image)), sitk.ReadImage(str(truth))
    assert image.stem == phantoms.case_uuid(task, seed)
    assert _same_geometry(img, ref_img) and _same_geometry(lab, ref_lab)
    assert ref_img.GetPixelID() == sitk.sitkInt16
    assert np.array_equal(sitk.GetArrayViewFromImage(img), sitk.GetArrayViewFromImage(ref_img))
    assert np.array_equal(sitk.GetArrayViewFromImage(lab), sitk.GetArrayViewFromImage(ref_lab))


def test_contrast_scale_changes_only_the_tumour(t2):
    """The easier pre-training variant: same anatomy and noise draws, stronger tumour contrast."""
    from scipy import ndimage
    img, lab, geom, _ = phantoms.make_phantom(2, 7, tumour_contrast_scale=2.0)
    assert np.array_equal(lab, t2.label) and geom == t2.geometry
    changed = img != t2.image
    assert changed.any()
    near = ndimage.distance_transform_edt(lab != 1, sampling=geom.spacing_zyx) <= 6.0
    assert not (changed & ~near).any()
    d_easy = np.median(img[lab == 1]) - np.median(img[(lab == 2) & near])
    d_std = np.median(t2.image[lab == 1]) - np.median(t2.image[(lab == 2) & near])
    assert d_easy > d_std > 0


# --------------------------------------------------------------------------------------------
# threshold baselines


def _tiny_case(seed=0):
    """A 6 x 7 x 8 'scan': air (0-3) around a body of intensities 40-120 with two bright voxels (500, 700:
    past the last bin once normalised), a tumour of 9 voxels with one of them in the air (outside the body)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 4, size=(6, 7, 8)).astype(np.int16)
    img[1:5, 1:6, 1:7] = rng.integers(40, 121, size=(4, 5, 6))
    img[4, 5, 6], img[1, 1, 1] = 500, 700
    lab = np.zeros(img.shape, np.uint8)
    lab[2:4, 2:4, 2:4] = 1
    lab[0, 0, 0] = 1
    return img, lab


def test_whole_body_band_dice_matches_brute_force():
    from panther_ensemble.phantoms import baseline as B
    img, lab = _tiny_case()
    table = B.BodyHistograms.of(img, lab).band_dice()
    n = B.N_BINS
    assert table.shape == (n + 1, n + 1)
    # brute force: the rule written out on the voxels, for every band [i, j) whose edges are not within
    # rounding of a voxel's normalised value
    body = img > 0.1 * np.percentile(img, 99)
    assert not body[0, 0, 0] and body[2, 2, 2]
    v = img / np.median(img[body])
    assert v.max() > n * B.BIN_WIDTH  # some voxels are past the last edge (they belong to the last bin)
    edges = np.arange(n + 1) * B.BIN_WIDTH
    safe = np.array([np.abs(v - e).min() > 1e-9 for e in edges])
    tum = lab == 1
    checked = 0
    for i in np.flatnonzero(safe):
        hi = np.where(np.arange(n + 1) == n, np.inf, edges)  # j = n: no upper bound
        pred = body[None] & (v[None] >= edges[i]) & (v[None] < hi[:, None, None, None])
        tp = (pred & tum[None]).sum(axis=(1, 2, 3))
        want = 2.0 * tp / (pred.sum(axis=(1, 2, 3)) + tum.sum())
        js = np.flatnonzero(safe & (np.arange(n + 1) > i))
        np.testing.assert_allclose(table[i, js], want[js], rtol=1e-12)
        checked += len(js)
        assert (table[i, : i + 1] == -1).all()  # empty bands are never chosen
    assert checked > 70000
    # the mask of the rule itself agrees with the table
    pred = B.predict_band(img, 25, 180)
    assert mask_dice(pred, tum) == pytest.approx(table[25, 180])


@pytest.mark.parametrize("which", ["t1", "t2"])
def test_whole_body_band_fits_the_tumour(which, request):
    """Fitted on one phantom, the best band sits on that phantom's tumour and beats the one-sided rule.

    (Not necessarily on the tumour's median: on Task 2 seed 7 the band stops just below it, where fat of
    the same brightness starts.)"""
    from panther_ensemble.phantoms import baseline as B
    ph = request.getfixturevalue(which)
    task = ph.facts["task"]
    hist = B.BodyHistograms.of(ph.image, ph.label)
    res = B.fit_whole_body(task, [hist], {7: hist})
    body = B.body_mask(ph.image)
    q25, q75 = np.percentile(ph.image[ph.label == 1] / np.median(ph.image[body]), [25, 75])
    band, one = res["band"], res["one_sided"]
    assert band["lo"] < q75 and q25 < band["hi"]  # the band overlaps the tumour's interquartile range
    assert band["train_dice"] == band["test_dice"][7] >= one["train_dice"] > 0
    assert (one["lo"] is None) == (task == 1) and (one["hi"] is None) == (task == 2)
    pred = B.predict_band(ph.image, band["lo_bin"], band["hi_bin"])
    assert mask_dice(pred, ph.label == 1) == pytest.approx(band["test_dice"][7], rel=1e-12)


def test_threshold_baselines_report(t1, monkeypatch):
    """Both baselines in one report; the in-pancreas one is the threshold the earlier versions fitted."""
    from panther_ensemble.phantoms import baseline as B
    calls = []
    monkeypatch.setattr(B, "load_case", lambda task, seed, dataset_dir=None, heldout_dir=None:
                        calls.append((seed, dataset_dir, heldout_dir)) or (t1.image, t1.label))
    res = phantoms.threshold_baselines(1, [7], [7, 8], dataset_dir="somewhere", heldout_dir="there")
    # training phantoms from the raw dataset, test phantoms from the held-out folder (each regenerated if absent)
    assert calls == [(7, "somewhere", None), (7, None, "there"), (8, None, "there")]
    assert res["task"] == 1 and res["train_seeds"] == "7" and res["test_seeds"] == "7,8"
    assert set(res["whole_body"]) == {"normalisation", "one_sided", "band"}
    for r in (res["whole_body"]["one_sided"], res["whole_body"]["band"], res["in_pancreas"]):
        assert set(r["test_dice"]) == {7, 8} and r["test_dice_mean"] == pytest.approx(r["test_dice"][7])
    v, t = B.pancreas_samples(t1.image, t1.label)
    thr = res["in_pancreas"]["threshold"]
    assert res["in_pancreas"]["train_dice"] == pytest.approx(mask_dice(v < thr, t))
    assert all(mask_dice(v < c, t) <= mask_dice(v < thr, t) for c in np.linspace(0.5, 1.5, 101))


def test_baseline_reads_the_same_phantoms_it_would_regenerate(tmp_path):
    """load_case's three sources give the same arrays: an nnU-Net raw dataset, a held-out work folder as
    training/evaluate_heldout.py writes it, and the generator; a folder without the case, or with its label only
    (a stopped write), regenerates it."""
    import SimpleITK as sitk
    from panther_ensemble.phantoms import baseline as B
    task, seed = 2, 1103
    ph = phantoms.make_phantom(task, seed)
    raw = phantoms.write_nnunet_dataset(tmp_path / "raw", task, [seed], 902, "PhantomT2")
    image, label = phantoms.generate_phantom(task, seed)
    held = tmp_path / "heldout"
    for img, folder in ((label, "gt"), (image, "images")):
        (held / folder).mkdir(parents=True)
        sitk.WriteImage(img, str(held / folder / f"{B.heldout_case_name(task, seed)}.mha"), True)
    for kwargs in ({"dataset_dir": raw}, {"heldout_dir": held}, {"heldout_dir": tmp_path / "empty"}, {}):
        img, lab = B.load_case(task, seed, **kwargs)
        assert np.array_equal(img, ph.image) and img.dtype == ph.image.dtype and np.array_equal(lab, ph.label), kwargs
    # a different image where the folder holds one proves it was read, not regenerated
    other = sitk.GetImageFromArray(np.zeros_like(ph.image))
    sitk.WriteImage(other, str(held / "images" / f"{B.heldout_case_name(task, seed)}.mha"))
    assert not B.load_case(task, seed, heldout_dir=held)[0].any()
    (held / "images" / f"{B.heldout_case_name(task, seed)}.mha").unlink()  # label only: regenerated
    assert np.array_equal(B.load_case(task, seed, heldout_dir=held)[0], ph.image)


def test_command_line(tmp_path, monkeypatch, capsys):
    """The commands training/reproduce.sh and training/make_samples.sh run parse; baseline writes its JSON."""
    from panther_ensemble.cli import build_parser, main
    parse = build_parser("phantom").parse_args
    a = parse(["phantom", "dataset", "--task", "1", "--seeds", "2000-2039", "--out", "raw", "--dataset-id", "903",
               "--dataset-name", "PhantomT1Pretrain", "--tumour-contrast-scale", "4.5"])
    assert (a.phantom_action, a.dataset_id, a.tumour_contrast_scale) == ("dataset", 903, 4.5)
    a = parse(["phantom", "socket", "--task", "2", "--seed", "1034", "--out", "in", "--ground-truth", "gt"])
    assert (a.task, a.seed, a.ground_truth) == (2, 1034, "gt")
    assert parse(["phantom", "info", "--task", "1", "--seeds", "1,2"]).seeds == "1,2"
    fake = {"task": 2, "train_seeds": "0-2", "test_seeds": "5",
            "whole_body": {"one_sided": {"rule": "r1", "train_dice": 0.01, "test_dice_mean": 0.02},
                           "band": {"rule": "r2", "train_dice": 0.03, "test_dice_mean": 0.04}},
            "in_pancreas": {"rule": "r3", "train_dice": 0.5, "test_dice_mean": 0.6}}
    seen = []
    monkeypatch.setattr(phantoms, "threshold_baselines", lambda *a: seen.append(a) or fake)
    out = tmp_path / "b.json"
    assert main(["phantom", "baseline", "--task", "2", "--train-seeds", "0-2", "--test-seeds", "5",
                 "--dataset-dir", "ds", "--heldout-dir", "ho", "--json", str(out)]) == 0
    assert seen == [(2, [0, 1, 2], [5], "ds", "ho")] and json.loads(out.read_text()) == fake
    captured = capsys.readouterr()
    assert json.loads(captured.out) == fake
    assert "whole body, band" in captured.err and "test 0.040" in captured.err
