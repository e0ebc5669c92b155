"""Checks before any network runs: the output location, every member's network grid, the case's memory and the
voxel values."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import panther_ensemble.preflight as preflight
from panther_ensemble import Ensemble, InputError
from panther_ensemble.io import Geometry, read_image
from panther_ensemble.preflight import (case_memory_bytes, check_case_memory, check_grids, check_intensities,
                                       check_output_target, intensity_limit, network_grid)

SPEC = {"version": 1, "task": 1, "members": [{"name": "A", "model": "A", "folds": [0], "mirroring": False},
                                             {"name": "B", "model": "B", "folds": [0], "mirroring": False}]}
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_a_writable_target_passes_and_nothing_is_left(tmp_path):
    target = tmp_path / "out" / "images" / "pancreatic-tumor-segmentation" / "x.mha"
    assert check_output_target(target) == target
    assert list(tmp_path.iterdir()) == []  # probed in tmp_path, created nothing
    target.parent.mkdir(parents=True)
    check_output_target(target)
    assert list(target.parent.iterdir()) == []
    assert [p.name for p in target.parent.parent.iterdir()] == [target.parent.name]


def test_the_target_is_a_folder(tmp_path):
    (tmp_path / "x.mha").mkdir()
    with pytest.raises(InputError, match=r"x.mha: is a folder; the output is a file of this name"):
        check_output_target(tmp_path / "x.mha")


@pytest.mark.parametrize("file_at", ["out", "out/images"])
def test_a_file_where_a_folder_must_be(tmp_path, file_at):
    (tmp_path / file_at).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / file_at).write_text("not a folder")
    target = tmp_path / "out" / "images" / "socket" / "x.mha"
    with pytest.raises(InputError) as err:
        check_output_target(target)
    assert str(err.value) == f"{tmp_path / file_at}: is a file, but the output {target} needs a folder here"


def test_a_folder_that_refuses_writes(tmp_path):
    """A real write probe (root ignores permission bits, so as root the kernel's sysfs stands in for a
    read-only mount: it refuses new entries to everyone)."""
    if os.geteuid() == 0:
        if not Path("/sys/kernel").is_dir():
            pytest.skip("no sysfs to stand in for a read-only folder, and root ignores permissions")
        folder = Path("/sys/kernel")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    try:
        with pytest.raises(InputError, match=rf"^{folder}: cannot write here \((Permission denied|Read-only file "
                                             r"system|Operation not permitted)\)$"):
            check_output_target(folder / "images" / "x.mha")
    finally:
        if folder.is_relative_to(tmp_path):
            folder.chmod(0o755)


def test_a_read_only_mount_is_named(tmp_path, monkeypatch):
    def refuse(prefix, dir):  # noqa: A002 - tempfile.mkdtemp's keyword
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), dir)

    monkeypatch.setattr(preflight.tempfile, "mkdtemp", refuse)
    with pytest.raises(InputError, match=rf"{tmp_path}: cannot write here \(Read-only file system\)"):
        check_output_target(tmp_path / "images" / "x.mha")


def test_the_suffix_of_a_mask(tmp_path):
    with pytest.raises(InputError, match="output must be .mha"):
        check_output_target(tmp_path / "x.png")
    check_output_target(tmp_path / "probs" / "x.npz", image=False)


def geometry(spacing_xyz, size_xyz=(70, 60, 20)) -> Geometry:
    return Geometry(size_xyz, spacing_xyz, (0.0, 0.0, 0.0), IDENTITY)


def test_network_grid_follows_the_plans_transpose(models):
    ensemble = Ensemble.from_spec(SPEC, models, device="cpu")
    plans = ensemble.preprocess_plans()
    # A: spacing (3, 1.5, 1.5); B: transpose (1, 2, 0), spacing (2, 2, 2.5) in transposed order = z 2.5, y 2, x 2
    assert network_grid((20, 60, 70), (3.0, 1.2, 1.2), plans["A"]) == ((20, 48, 56), (3.0, 1.5, 1.5))
    assert network_grid((20, 60, 70), (3.0, 1.2, 1.2), plans["B"]) == ((24, 36, 42), (2.5, 2.0, 2.0))
    grids = check_grids(ensemble, geometry((1.2, 1.2, 3.0)))
    assert grids == {"A": (20, 48, 56), "B": (24, 36, 42)}


def test_a_spacing_that_gives_an_empty_grid(models):
    ensemble = Ensemble.from_spec(SPEC, models, device="cpu")
    with pytest.raises(InputError) as err:
        check_grids(ensemble, geometry((0.001, 0.001, 0.001)), where="scan.mha")
    assert str(err.value) == ("scan.mha: spacing 0.001 x 0.001 x 0.001 mm (x, y, z) gives member A (spacing 1.5 x "
                              "1.5 x 3 mm) a network grid of 0 x 0 x 0 voxels, empty along an axis; is the spacing "
                              "in millimetres?")


def test_a_spacing_that_gives_a_huge_grid(models, monkeypatch):
    ensemble = Ensemble.from_spec(SPEC, models, device="cpu")
    with pytest.raises(InputError) as err:
        check_grids(ensemble, geometry((10000.0, 10000.0, 10000.0)), where="scan.mha")
    message = str(err.value)
    assert message.startswith("scan.mha: spacing 10000 x 10000 x 10000 mm (x, y, z) gives member A (spacing 1.5 x 1.5 "
                              "x 3 mm) a network grid of 466667 x 400000 x 66667 voxels (1.24e+16 voxels, ")
    assert message.endswith("per float32 map), above the limit of 268435456 voxels (PANTHER_MAX_GRID_VOXELS); is the "
                            "spacing in millimetres?")
    monkeypatch.setenv("PANTHER_MAX_GRID_VOXELS", "1000")
    with pytest.raises(InputError, match="above the limit of 1000 voxels"):
        check_grids(ensemble, geometry((1.2, 1.2, 3.0)))


def test_the_grid_is_computed_on_the_nonzero_crop(models):
    """Preprocessing crops to the nonzero box before resampling: a thin slab of signal gives a thin grid."""
    ensemble = Ensemble.from_spec(dict(SPEC, members=SPEC["members"][:1]), models, device="cpu")
    image = np.zeros((20, 60, 70), np.float32)
    image[5, 10:50, 10:60] = 1
    with pytest.raises(InputError) as err:  # one 1 mm slice at 3 mm: round(1/3) = 0
        check_grids(ensemble, geometry((1.2, 1.2, 1.0)), image)
    # the whole image would give a grid (20 slices at 1 mm: 7 at 3 mm): the zeros are to blame, not the spacing
    assert str(err.value).endswith("a network grid of 40 x 32 x 0 voxels, empty along an axis: its nonzero voxels "
                                   "span only 50 x 40 x 1 of its 70 x 60 x 20 voxels (x, y, z), too thin to "
                                   "resample; is the image almost all zeros?")
    assert check_grids(ensemble, geometry((1.2, 1.2, 3.0)), image) == {"A": (1, 32, 40)}


def test_segment_checks_the_grids_before_any_network_runs(models, tmp_path, monkeypatch):
    import panther_ensemble.inference.engine as engine_mod

    ensemble = Ensemble.from_spec(SPEC, models, device="cpu")
    monkeypatch.setattr(engine_mod, "predict_logits", lambda *a, **k: pytest.fail("a network ran"))
    image = sitk.GetImageFromArray(np.ones((20, 30, 40), np.float32))
    image.SetSpacing((10000.0, 10000.0, 10000.0))
    sitk.WriteImage(image, str(tmp_path / "huge.mha"))
    with pytest.raises(InputError, match=rf"^{tmp_path / 'huge.mha'}: spacing 10000 x 10000 x 10000 mm"):
        ensemble.segment(tmp_path / "huge.mha")
    array, geo = read_image(tmp_path / "huge.mha")
    with pytest.raises(InputError, match="^<image>: spacing 10000"):
        ensemble.segment((array, geo))


@pytest.mark.parametrize("layout", ["one_voxel", "alternating"])
def test_nnunets_zscore_stays_finite_up_to_the_intensity_limit_and_not_far_beyond(layout):
    """The limit is what nnU-Net's own normalisation (numpy, float32) survives, in the worst layout (half the
    voxels at +peak, half at -peak) as in the usual one (one bright voxel); 1e4 times above it, it overflows."""
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization

    shape = (32, 32, 32)
    limit = intensity_limit(int(np.prod(shape)))
    seg = np.zeros(shape, np.int8)

    def normalised(peak):
        image = np.random.default_rng(0).normal(100, 20, shape).astype(np.float32)
        if layout == "one_voxel":
            image[3, 4, 5] = peak
        else:
            image = np.where(np.indices(shape).sum(0) % 2 == 0, peak, -peak).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            return ZScoreNormalization(use_mask_for_norm=False, intensityproperties={}).run(image, seg)

    at_limit = normalised(limit)
    assert np.isfinite(at_limit).all() and abs(float(at_limit.std()) - 1) < 1e-3  # a true z-score
    beyond = normalised(min(limit * 1e4, 3e38))
    with np.errstate(invalid="ignore"):
        assert not abs(float(beyond.std()) - 1) < 1e-3  # overflowed: zeros or NaN


def test_check_intensities_refuses_what_would_overflow_and_spares_ct(models):
    ensemble = Ensemble.from_spec(SPEC, models, device="cpu")
    image = np.ones((20, 30, 40), np.float32)
    limit = intensity_limit(image.size)
    image[0, 0, 0] = -limit
    check_intensities(ensemble, image, "scan.mha")  # at the limit: passes
    image[0, 0, 0] = -2 * limit
    with pytest.raises(InputError, match=r"^scan.mha: voxel values up to 1.19e\+17 overflow member A's "
                                         r"ZScoreNormalization in float32 \(the limit for 24000 voxels is 6e\+16\)"):
        check_intensities(ensemble, image, "scan.mha")
    image[0, 0, 1] = np.nan  # an array given to the API has not been through read_image's check
    with pytest.raises(InputError, match=r"^<image>: 1 voxel is NaN or infinite$"):
        check_intensities(ensemble, image)
    image[0, 0, 1] = 1
    for plan in ensemble.preprocess_plans().values():  # CT normalisation clips first: nothing to refuse
        object.__setattr__(plan, "normalization", "CTNormalization")
    check_intensities(ensemble, image, "scan.mha")
    for plan in ensemble.preprocess_plans().values():  # min-max: only the range must fit
        object.__setattr__(plan, "normalization", "RescaleTo01Normalization")
    check_intensities(ensemble, image, "scan.mha")
    image[0, 0, 1] = 3e38
    with pytest.raises(InputError, match=r"RescaleTo01Normalization in float32 \(the limit for 24000 voxels is "
                                         r"1.7e\+38\)"):
        check_intensities(ensemble, image, "scan.mha")


def test_a_dangling_link_where_a_folder_must_be_is_named_as_such(tmp_path):
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    target = tmp_path / "out" / "seg" / "case.mha"
    with pytest.raises(InputError) as err:
        check_output_target(target)
    assert str(err.value) == (f"{tmp_path / 'out'}: is a link to {tmp_path / 'gone'}, which does not exist, but "
                              f"the output {target} needs a folder here")
    (tmp_path / "gone").mkdir()  # the link now leads somewhere: accepted, and nothing is left behind
    assert check_output_target(target) == target
    assert list((tmp_path / "gone").iterdir()) == []


def test_check_case_memory_refuses_a_case_that_cannot_fit(models, monkeypatch):
    import panther_ensemble.io.stored as stored_mod
    from panther_ensemble.errors import OutOfMemory

    ensemble = Ensemble.from_spec(SPEC, models, device="cpu")
    geo = geometry((1.2, 1.2, 3.0))
    image = np.zeros(geo.shape_zyx, np.float32)
    image[2:18, 5:55, 5:65] = 1  # the members' maps cover the nonzero box only
    grids = check_grids(ensemble, geo, image)
    crop = 16 * 50 * 60
    labels = {name: len(names) for name, names in ensemble.member_labels().items()}
    need = case_memory_bytes(70 * 60 * 20, len(ensemble.labels),
                             [(labels[n], crop, int(np.prod(g))) for n, g in grids.items()])
    shares = [4 * g + 2 * 3 * g + max(2 * g, 4 * 3 * crop) for g in (int(np.prod(g)) for g in grids.values())]
    assert need == 84000 * (4 + 4 * 3) + max(84000, max(shares))
    monkeypatch.setattr(stored_mod, "memory_limit_bytes", lambda: need)
    check_case_memory(ensemble, geo, grids, image, "scan.mha")  # exactly enough
    monkeypatch.setattr(stored_mod, "memory_limit_bytes", lambda: need - 1)
    with pytest.raises(OutOfMemory) as err:
        check_case_memory(ensemble, geo, grids, image, "/in/scan.mha")
    assert str(err.value).startswith("out of memory while segmenting scan.mha: 70 x 60 x 20 voxels need at least ")
    assert str(err.value).endswith(" on the CPU; this machine allows " + preflight.bytes_text(need - 1))
    monkeypatch.setattr(stored_mod, "memory_limit_bytes", lambda: None)  # unknown: nothing to say
    check_case_memory(ensemble, geo, grids, image)
    monkeypatch.setattr(stored_mod, "memory_limit_bytes", lambda: 1)
    check_case_memory(ensemble, geo, grids, np.zeros_like(image))  # all zero: no network runs, only a mask is made
    # with a time budget every member but the first may be dropped: the smallest share counts
    assert case_memory_bytes(10, 3, [(3, 10, 1000), (3, 10, 10)], any_member=True) == 10 * 16 + 40 + 60 + 120
    assert case_memory_bytes(10, 3, [(3, 10, 1000), (3, 10, 10)]) == 10 * 16 + 4000 + 6000 + 2000


PEAK = """
import json, sys
import numpy as np
from panther_ensemble import Ensemble
from panther_ensemble.io import Geometry
from panther_ensemble.preflight import case_memory_bytes, check_grids

models, spec, layout = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
ensemble = Ensemble.from_spec(spec, models, device="cpu").load()
shape = (32, 160, 176)
image = np.random.default_rng(0).normal(100, 20, shape).astype(np.float32)
if layout == "small_crop":  # the members' maps cover a small box; the accumulator still covers the whole image
    image[:, :, :] = 0
    image[4:28, 20:100, 30:120] = np.random.default_rng(0).normal(100, 20, (24, 80, 90))
geo = Geometry(shape[::-1], (1.2, 1.2, 3.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
grids = check_grids(ensemble, geo, image)
labels = ensemble.member_labels()
crop = 24 * 80 * 90 if layout == "small_crop" else image.size
bound = case_memory_bytes(image.size, len(ensemble.labels), [(len(labels[n]), crop, int(np.prod(g)))
                                                            for n, g in grids.items()])


def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


with open("/proc/self/clear_refs", "w") as f:  # the peak (VmHWM) starts again from the memory in use now
    f.write("5")
rss = status("VmRSS")
ensemble.segment((image, geo))
print(json.dumps({"bound_beyond_image": bound - 4 * image.size, "rss_before": rss, "peak": status("VmHWM")}))
"""


@pytest.mark.parametrize("layout, resampling", [("whole", "fast"), ("small_crop", "faithful")])
def test_case_memory_bytes_is_a_lower_bound_of_what_a_case_takes(models, layout, resampling):
    """A real case on the CPU (0.9 million voxels, both members) grows the process's peak memory by at least
    the bound, less the image that was already there: the check never refuses a case that would have fit.
    Also with nnU-Net's float16 accumulators (faithful) on a small nonzero box, where the bound is tightest."""
    import json
    import subprocess
    import sys

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("/proc/self/clear_refs is not writable here: the peak memory cannot be reset")
    spec = dict(SPEC, members=[dict(m, folds=[0], resampling=resampling) for m in SPEC["members"]])
    out = subprocess.run([sys.executable, "-c", PEAK, str(models), json.dumps(spec), layout], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["bound_beyond_image"] > 10e6  # large enough to stand out of the interpreter's own noise
    assert m["peak"] - m["rss_before"] >= m["bound_beyond_image"], m
