"""Every kind of bad input, through the grand-challenge entry point (`cli/container.py`, what inference.py runs):
exit status, exactly one line on stderr (`error: ...`, no traceback, nothing from ITK), nothing written.

`KINDS` is the table of docs/ERRORS.md (a test below keeps the two in step). The runs are in-process
(`container.main(argv)`, the same code inference.py calls; stderr captured at the file-descriptor level, so a
line printed by ITK's C++ code would be seen); the signal tests and a few others run real processes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import REPO
from panther_ensemble.cli import container
from panther_ensemble.cpus import THREAD_VARIABLES

UUID = "1b2c3d4e-0000-4000-8000-000000000000"
SPEC = {"version": 1, "task": 1, "members": [
    {"name": "A", "model": "A", "folds": [0], "mirroring": False},
    {"name": "B", "model": "B", "folds": [0], "mirroring": False, "weight": 0.5}]}


@dataclass
class Case:
    root: Path
    source: Path  # the good test image
    input: Path
    output: Path
    weights: Path
    spec: dict = field(default_factory=lambda: json.loads(json.dumps(SPEC)))
    spec_path: Path | None = None
    device: str = "cpu"
    verbose: bool = False
    memory_limit: int | None = None  # bytes this machine allows, instead of its real memory

    @property
    def socket(self) -> Path:
        return self.input / "images" / "abdominal-t1-mri"

    @property
    def image(self) -> Path:
        return self.socket / f"{UUID}.mha"

    def argv(self) -> list[str]:
        spec_path = self.spec_path or self.root / "spec.json"
        if self.spec_path is None:
            spec_path.write_text(json.dumps(self.spec))
        return ["--input", str(self.input), "--output", str(self.output), "--model-dir", str(self.weights),
                "--spec", str(spec_path), "--device", self.device] + (["--verbose"] if self.verbose else [])


# ---------------------------------------------------------------------------------------------------------
# how each kind of bad input is made


def write_image(path: Path, array: np.ndarray, spacing=(1.2, 1.2, 3.0), compress=True, vector=False) -> Path:
    image = sitk.GetImageFromArray(array, isVector=vector)
    if image.GetDimension() == 3:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), compress)
    return path


def source_array(c: Case) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(c.source))).astype(np.float32)


def replace_image(c: Case, array: np.ndarray, **kw) -> None:
    write_image(c.image, array, **kw)


def cut_image(compress: bool, drop_size: bool = False):
    def setup(c: Case) -> None:
        replace_image(c, source_array(c), compress=compress)
        raw = c.image.read_bytes()
        if drop_size:
            start = raw.index(b"CompressedDataSize")
            raw = raw[:start] + raw[raw.index(b"\n", start) + 1:]
        c.image.write_bytes(raw[: len(raw) * 2 // 3])
    return setup


def header_edit(old: str, new: str):
    def setup(c: Case) -> None:
        replace_image(c, source_array(c), compress=False, spacing=(1.2, 1.2, 3.0))
        raw = c.image.read_bytes()
        end = raw.index(b"ElementDataFile")
        header = raw[:end].decode()
        assert old in header, header
        c.image.write_bytes(header.replace(old, new).encode() + raw[end:])
    return setup


def bad_voxel(value: float):
    def setup(c: Case) -> None:
        a = source_array(c)
        a[5, 20, 20] = value
        replace_image(c, a)
    return setup


def spacing(value: float):
    return lambda c: replace_image(c, source_array(c), spacing=(value, value, value))


def one_thin_slice_of_signal(c: Case) -> None:
    """1 mm slices, all zero but one: the nonzero crop, resampled to member A's 3 mm, is empty along z."""
    a = np.zeros_like(source_array(c))
    a[5] = source_array(c)[5] + 1
    replace_image(c, a, spacing=(1.2, 1.2, 1.0))


def decompression_bomb(c: Case) -> None:
    data = zlib.compress(b"\0" * (1 << 20))
    c.image.write_bytes(("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                         f"CompressedData = True\nCompressedDataSize = {len(data)}\n"
                         "TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\nElementSpacing = 1 1 1\n"
                         "DimSize = 1000000 1000000 100\nElementType = MET_SHORT\nElementDataFile = LOCAL\n").encode()
                        + data)


def nifti_image(origin=(0.0, 0.0, 0.0), pixdim_x: float | None = None):
    """The test image as an uncompressed NIfTI in the socket (the .mha removed); pixdim_x: written over the stored
    pixdim[1] (NIfTI-1, little-endian float32 at byte 80), which SimpleITK would not write negative."""
    def setup(c: Case) -> None:
        image = sitk.ReadImage(str(c.source))
        image.SetOrigin(origin)
        c.image.unlink()
        path = c.socket / f"{UUID}.nii"
        sitk.WriteImage(image, str(path))
        if pixdim_x is not None:
            raw = bytearray(path.read_bytes())
            raw[80:84] = np.float32(pixdim_x).tobytes()
            path.write_bytes(bytes(raw))
    return setup


def float64_voxel(value: float):
    def setup(c: Case) -> None:
        a = source_array(c).astype(np.float64)
        a[5, 20, 20] = value
        replace_image(c, a)
    return setup


def inputs_json(entries):
    return lambda c: (c.input / "inputs.json").write_text(entries if isinstance(entries, str) else json.dumps(entries))


def two_sockets(c: Case) -> None:
    t2 = c.input / "images" / "abdominal-t2-mri"
    t2.mkdir(parents=True)
    shutil.copy(c.source, t2 / "other.mha")
    (c.input / "inputs.json").unlink()


def no_socket(c: Case) -> None:
    shutil.rmtree(c.input / "images")
    (c.input / "inputs.json").unlink()


def output_read_only(c: Case) -> None:
    if os.geteuid() == 0:  # root ignores permission bits; sysfs refuses new entries to everyone
        c.output = Path("/sys/kernel/panther-output")
    else:
        c.output.mkdir()
        c.output.chmod(0o555)


def mask_path_is_folder(c: Case) -> None:
    (c.output / "images" / "pancreatic-tumor-segmentation" / f"{UUID}.mha").mkdir(parents=True)


def output_parent_is_file(c: Case) -> None:
    c.output.mkdir()
    (c.output / "images").write_text("a file")


def output_is_file(c: Case) -> None:
    c.output.write_text("a file")


def damage_checkpoint(how: str):
    def setup(c: Case) -> None:
        path = c.weights / "A" / "fold_0" / "checkpoint_final.pth"
        if how == "truncated":
            path.write_bytes(path.read_bytes()[:5000])
        elif how == "random":
            path.write_bytes(np.random.default_rng(0).bytes(5000))
        elif how == "malicious":
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            ckpt["logging"]["extra"] = Payload(c.root / "pwned")
            torch.save(ckpt, path)
        elif how == "not_nnunet":
            torch.save({"state_dict": {}}, path)
        elif how == "wrong_shapes":
            ckpt = torch.load(c.weights / "B" / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                              weights_only=False)
            torch.save(ckpt, path)
    return setup


class Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def inject(exc: BaseException):
    """The engine fails this way once the networks are loaded and the grids checked."""
    def setup(c: Case) -> None:
        c.injected = exc
    return setup


def memory_for_reading_only(c: Case) -> None:
    """Enough memory to read the image (at most 16 bytes per voxel), not to segment it (17 and more)."""
    c.memory_limit = 70 * 60 * 20 * 16


def no_cuda(c: Case) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    c.device = "cuda"


@dataclass(frozen=True)
class Kind:
    id: str
    setup: Callable[[Case], None]
    expected: str  # in the error line
    status: int = 2


KINDS = [
    # the input socket
    Kind("input_folder_missing", lambda c: setattr(c, "input", c.root / "nowhere"), "input folder does not exist"),
    Kind("no_input_socket", no_socket, "no input socket: expected images/abdominal-t1-mri/"),
    Kind("two_input_sockets", two_sockets, "more than one input socket present"),
    Kind("inputs_json_invalid", inputs_json("[{"), "inputs.json: not valid JSON"),
    Kind("inputs_json_not_a_list", inputs_json({"slug": "abdominal-t1-mri"}), "expected a JSON list of socket entries"),
    Kind("inputs_json_entry_without_slug", inputs_json([{"interface": {}}]), "entry 0 has no interface.slug"),
    Kind("inputs_json_unknown_slug", inputs_json([{"interface": {"slug": "ct-image"}}]), "names no known input socket"),
    Kind("inputs_json_slug_not_a_string", inputs_json([{"interface": {"slug": ["abdominal-t1-mri"]}}]),
         "entry 0: interface.slug must be a string, got list"),
    Kind("socket_folder_missing", inputs_json([{"interface": {"slug": "abdominal-t2-mri"}}]),
         "abdominal-t2-mri: socket folder does not exist"),
    Kind("socket_empty", lambda c: c.image.unlink(), "no image in the socket folder"),
    Kind("socket_without_image", lambda c: c.image.rename(c.socket / "scan.txt"),
         "no image in the socket folder (found scan.txt)"),
    Kind("two_images", lambda c: shutil.copy(c.source, c.socket / "second.mha"), "expected exactly one image, found 2"),
    # the image file
    Kind("image_not_an_image", lambda c: c.image.write_text("not a MetaImage"), "cannot read image (not an image file "
                                                                               "of a known format"),
    Kind("image_truncated", cut_image(compress=False), "truncated or corrupt image data (expected 336000 bytes, found"),
    Kind("image_truncated_compressed", cut_image(compress=True), "truncated or corrupt image data (expected 261070 "
                                                                 "bytes of compressed data, found"),
    Kind("image_truncated_compressed_no_size", cut_image(compress=True, drop_size=True),
         "truncated or corrupt image data (expected 336000 bytes, found"),
    Kind("image_2d", lambda c: replace_image(c, np.ones((60, 70), np.float32)), "expected a 3D image, got 2D"),
    Kind("image_4d", lambda c: sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(np.ones((3, 4, 5), np.float32))]
                                                               * 2), str(c.image)), "expected a 3D image, got 4D"),
    Kind("image_vector", lambda c: replace_image(c, np.ones((3, 4, 5, 3), np.float32), vector=True),
         "expected a scalar image, got 3 components per voxel"),
    Kind("image_complex", lambda c: sitk.WriteImage(sitk.Image(5, 4, 3, sitk.sitkComplexFloat32), str(c.image)),
         "expected a scalar image, got 2 components per voxel"),
    Kind("image_empty", header_edit("DimSize = 70 60 20", "DimSize = 70 0 20"), "empty image of size (70, 0, 20)"),
    Kind("image_size_negative", header_edit("DimSize = 70 60 20", "DimSize = 70 -60 20"),
         "negative size in the header: (70, -60, 20)"),
    Kind("voxel_nan", bad_voxel(np.nan), "1 voxel is NaN or infinite"),
    Kind("voxel_beyond_float32", float64_voxel(1e300), "1 voxel is beyond the float32 range (|value| > 3.4e+38)"),
    Kind("voxel_infinite", bad_voxel(np.inf), "1 voxel is NaN or infinite"),
    Kind("signal_in_one_thin_slice", one_thin_slice_of_signal,
         "spacing 1.2 x 1.2 x 1 mm (x, y, z) gives member A (spacing 1.5 x 1.5 x 3 mm) a network grid of 56 x 48 x 0 "
         "voxels, empty along an axis: its nonzero voxels span only 70 x 60 x 1 of its 70 x 60 x 20 voxels (x, y, z), "
         "too thin to resample; is the image almost all zeros?"),
    # a float32 voxel of 3e38 is in range, but the z-score's variance is infinite: every voxel would become 0
    Kind("voxel_overflows_normalisation", bad_voxel(3e38),
         "voxel values up to 3e+38 overflow member A's ZScoreNormalization in float32 (the limit for 84000 voxels "
         "is 3.2e+16); rescale the intensities"),
    Kind("spacing_zero", header_edit("ElementSpacing = 1.2 1.2 3", "ElementSpacing = 1.2 0 3"),
         "spacing must be positive and finite, got (1.2, 0.0, 3.0)"),
    Kind("spacing_negative", header_edit("ElementSpacing = 1.2 1.2 3", "ElementSpacing = 1.2 -1.2 3"),
         "spacing must be positive and finite, got (1.2, -1.2, 3.0)"),
    Kind("spacing_negative_nifti", nifti_image(pixdim_x=-1.2), "spacing must be positive and finite, got (-1.2"),
    Kind("spacing_absurd", header_edit("ElementSpacing = 1.2 1.2 3", "ElementSpacing = 1e300 1e300 1e300"),
         "spacing 1e+300 x 1e+300 x 1e+300 mm (x, y, z) gives member A"),
    Kind("origin_nan", header_edit("Offset = 0 0 0", "Offset = nan 0 0"), "origin must be finite, got (nan, 0.0, 0.0)"),
    Kind("origin_nan_nifti", nifti_image(origin=(float("nan"), 0.0, 0.0)), "origin must be finite, got (nan"),
    Kind("spacing_tiny", spacing(0.001), "spacing 0.001 x 0.001 x 0.001 mm (x, y, z) gives member A (spacing 1.5 x "
                                         "1.5 x 3 mm) a network grid of 0 x 0 x 0 voxels, empty along an axis"),
    Kind("spacing_huge", spacing(10000.0), "spacing 10000 x 10000 x 10000 mm (x, y, z) gives member A"),
    Kind("direction_singular", header_edit("TransformMatrix = 1 0 0 0 1 0 0 0 1",
                                           "TransformMatrix = 0 0 0 0 0 0 0 0 0"),
         "direction matrix (0 0 0 / 0 0 0 / 0 0 0) is singular (determinant 0)"),
    Kind("direction_not_orthonormal", header_edit("TransformMatrix = 1 0 0 0 1 0 0 0 1",
                                                  "TransformMatrix = 2 0 0 0 1 0 0 0 1"),
         "is not orthonormal (column lengths 2, 1, 1)"),
    Kind("image_too_big_for_memory", decompression_bomb, "out of memory while reading", status=3),
    # the output socket
    Kind("output_is_a_file", output_is_file, "is a file, but the output"),
    Kind("output_images_is_a_file", output_parent_is_file, "is a file, but the output"),
    Kind("mask_path_is_a_folder", mask_path_is_folder, "is a folder; the output is a file of this name"),
    Kind("output_not_writable", output_read_only, "cannot write here"),
    # the spec
    Kind("spec_missing", lambda c: setattr(c, "spec_path", c.root / "missing.json"), "spec file does not exist"),
    Kind("spec_invalid_json", lambda c: (setattr(c, "spec_path", c.root / "bad.json"),
                                         (c.root / "bad.json").write_text("{")), "not valid JSON"),
    Kind("spec_unknown_field", lambda c: c.spec.update(colour="red"), "colour: unknown field"),
    Kind("spec_bad_value", lambda c: c.spec["members"][0].update(tile_step_size=2), "members[0].tile_step_size"),
    Kind("spec_wrong_task", lambda c: c.spec.update(task=2), "spec is for task 2 but the input socket"),
    Kind("spec_unknown_tumour_label", lambda c: c.spec.update(tumor_label="lesion"), "has no label 'lesion'"),
    # the model folders and checkpoints
    Kind("model_folder_missing", lambda c: c.spec["members"][1].update(model="no_such_model"),
         "model folder does not exist"),
    Kind("fold_missing", lambda c: c.spec["members"][0].update(folds=[0, 4]), "checkpoint for fold 4 of member 'A' "
                                                                              "is missing"),
    Kind("plans_missing", lambda c: (c.weights / "A" / "plans.json").unlink(), "plans.json: missing"),
    Kind("dataset_json_invalid", lambda c: (c.weights / "A" / "dataset.json").write_text("{"), "dataset.json: not "
                                                                                              "valid JSON"),
    Kind("checkpoint_truncated", damage_checkpoint("truncated"), "truncated or corrupt checkpoint (not a readable "
                                                                 "torch file"),
    Kind("checkpoint_corrupt", damage_checkpoint("random"), "truncated or corrupt checkpoint (not a readable torch "
                                                            "file: unreadable pickle data"),
    Kind("checkpoint_malicious", damage_checkpoint("malicious"), "refused to load: the checkpoint holds posix.system"),
    Kind("checkpoint_not_nnunet", damage_checkpoint("not_nnunet"), "not an nnU-Net checkpoint (no 'network_weights')"),
    Kind("checkpoint_wrong_network", damage_checkpoint("wrong_shapes"), "weights do not fit the network in plans.json "
                                                                         "(size mismatch for"),
    # the machine
    Kind("cuda_requested_without_gpu", no_cuda, "--device: cuda was requested but no CUDA device is available"),
    Kind("out_of_memory_while_segmenting", inject(torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 15.6 GiB of which 1.2 GiB is "
        "free. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments")),
         f"out of memory while segmenting {UUID}.mha (70 x 60 x 20 voxels, on cpu): CUDA out of memory. Tried to "
         "allocate 2.00 GiB. GPU 0 has a total capacity of 15.6 GiB of which 1.2 GiB is free.", status=3),
    Kind("case_too_big_for_memory", memory_for_reading_only,
         f"out of memory while segmenting {UUID}.mha: 70 x 60 x 20 voxels need at least 2.8 MB on the CPU; "
         "this machine allows 1.3 MB", status=3),
    Kind("internal_error", inject(ZeroDivisionError("division by zero")),
         "internal error: ZeroDivisionError: division by zero (run with --verbose for the traceback)", status=1),
]


@pytest.fixture
def case(tmp_path, models, mri_file, monkeypatch) -> Case:
    for var in THREAD_VARIABLES:  # container.main sets these when unset; keep the session's environment
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    monkeypatch.setattr("logging.basicConfig", lambda **kw: None)  # pytest owns the root logger here
    weights = tmp_path / "weights"
    for name in ("A", "B"):
        shutil.copytree(models / name, weights / name)
    c = Case(tmp_path, mri_file, tmp_path / "input", tmp_path / "output", weights)
    c.socket.mkdir(parents=True)
    shutil.copy(mri_file, c.image)
    (c.input / "inputs.json").write_text(json.dumps(
        [{"interface": {"slug": "abdominal-t1-mri", "kind": "Image", "relative_path": "images/abdominal-t1-mri"}}]))
    c.injected = None
    return c


def snapshot(folder: Path) -> list | None:
    if not folder.exists() or str(folder).startswith("/sys"):
        return None
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.is_dir() else ["<file>"]


def run_case(c: Case, capfd, monkeypatch) -> tuple[int, str]:
    if c.injected is not None:
        import panther_ensemble.inference.engine as engine_mod

        def fail(*args, **kwargs):
            raise c.injected

        monkeypatch.setattr(engine_mod.Engine, "predict", fail)
    if c.memory_limit is not None:
        import panther_ensemble.io.stored as stored_mod

        monkeypatch.setattr(stored_mod, "memory_limit_bytes", lambda: c.memory_limit)
    capfd.readouterr()
    status = container.main(c.argv(), app_root=REPO)
    return status, capfd.readouterr().err


@pytest.mark.parametrize("kind", KINDS, ids=[k.id for k in KINDS])
def test_bad_input(kind, case, capfd, monkeypatch):
    kind.setup(case)
    before = snapshot(case.output)
    try:
        status, err = run_case(case, capfd, monkeypatch)
    finally:
        if case.output.exists() and case.output.is_dir() and case.output.is_relative_to(case.root):
            case.output.chmod(0o755)
    assert err.count("\n") == 1 and err.startswith("error: "), err  # one line, nothing else
    assert kind.expected in err, err
    assert status == kind.status, err
    assert "Traceback" not in err and "ITK" not in err and "MetaImage" not in err
    assert snapshot(case.output) == before  # nothing written, nothing left behind
    assert not (case.root / "pwned").exists()


def test_the_container_checks_a_case_once_and_finds_its_nonzero_box_once(case, capfd, monkeypatch):
    """The checks before any network runs are `Ensemble.segment`'s (`preflight.check_case`): the container does
    not run them again, and the nonzero box (a pass over every voxel) is found once for all of them."""
    import panther_ensemble.boxes as boxes_mod
    import panther_ensemble.preflight as preflight_mod

    calls = {"bounding_box": 0, "check_grids": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(boxes_mod, "bounding_box", counted("bounding_box", boxes_mod.bounding_box))
    monkeypatch.setattr(preflight_mod, "check_grids", counted("check_grids", preflight_mod.check_grids))
    case.memory_limit = 10 ** 15  # known, so that the memory check runs to its end
    bad_voxel(3e38)(case)  # refused by the last check, after the other two, before any network
    status, err = run_case(case, capfd, monkeypatch)
    assert status == 2 and "overflow member A's ZScoreNormalization" in err, err
    assert calls == {"bounding_box": 1, "check_grids": 1}


def test_the_table_in_the_docs_lists_every_kind():
    doc = (REPO / "docs" / "ERRORS.md").read_text()
    missing = [k.id for k in KINDS if f"`{k.id}`" not in doc]
    assert not missing, f"docs/ERRORS.md lacks {missing}"
    assert len(KINDS) >= 30


def test_verbose_puts_the_traceback_above_the_one_line(case, capfd, monkeypatch):
    inject(ZeroDivisionError("division by zero"))(case)
    case.verbose = True
    status, err = run_case(case, capfd, monkeypatch)
    lines = err.splitlines()
    assert status == 1 and lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "error: internal error: ZeroDivisionError: division by zero"


def test_a_good_case_still_writes_its_mask(case, capfd, monkeypatch):
    status, err = run_case(case, capfd, monkeypatch)
    assert status == 0 and "error" not in err, err
    assert [p.name for p in (case.output / "images" / "pancreatic-tumor-segmentation").iterdir()] == [f"{UUID}.mha"]
    assert [p.name for p in (case.output / "images").iterdir()] == ["pancreatic-tumor-segmentation"]


def test_other_files_in_the_output_socket_are_named_and_left(case, capfd, monkeypatch, caplog):
    socket = case.output / "images" / "pancreatic-tumor-segmentation"
    socket.mkdir(parents=True)
    (socket / "earlier-case.mha").write_bytes(b"not ours to delete")
    (socket / f"{UUID}.mha").write_bytes(b"an earlier run on this case")
    with caplog.at_level("WARNING", logger="panther_ensemble"):
        status, err = run_case(case, capfd, monkeypatch)
    assert status == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"{socket / f'{UUID}.mha'} exists and will be replaced if this run succeeds" in warnings
    assert (f"the output socket {socket} already holds 1 other entry (earlier-case.mha), left as they are"
            in warnings)
    assert (socket / "earlier-case.mha").read_bytes() == b"not ours to delete"
    assert sitk.ReadImage(str(socket / f"{UUID}.mha")).GetSize() == sitk.ReadImage(str(case.image)).GetSize()


# ---------------------------------------------------------------------------------------------------------
# real processes


SLOW_WRITE = """
import sys, time
from pathlib import Path
import SimpleITK as sitk
real = sitk.WriteImage
def slow(image, name, *args):
    real(image, name, *args)            # the mask is in the hidden staging folder; the rename has not happened
    print("WRITING", name, flush=True)
    time.sleep(120)
sitk.WriteImage = slow
from panther_ensemble.cli.container import main
sys.exit(main(sys.argv[1:], app_root=Path.cwd()))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_the_write_removes_the_partial_output(case, signum):
    """inference.py's job in a real process, stopped while the mask sits in the hidden staging folder: the folder
    goes, one line says so, the status is 128 + the signal number."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITE, *case.argv()], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("WRITING"), (line, proc.stderr.read() if proc.poll() is not None else "")
        staging = Path(line.split()[1]).parent
        assert staging.is_dir() and staging.name.startswith(".pancreatic-tumor-segmentation.partial-")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err
    name = signal.Signals(signum).name
    assert err.splitlines()[-1] == f"error: interrupted by {name}; removed the partly written {staging}"
    assert "Traceback" not in err
    assert not staging.exists()
    assert sorted(p.name for p in (case.output / "images").iterdir()) == ["pancreatic-tumor-segmentation"]
    assert list((case.output / "images" / "pancreatic-tumor-segmentation").iterdir()) == []


def test_predict_command_reports_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "scan.mha"
    write_image(bad, np.ones((10, 20, 30), np.float32), compress=False)
    bad.write_bytes(bad.read_bytes()[:-1000])
    message = f"{bad}: truncated or corrupt image data (expected 24000 bytes, found 23000)"
    # one image to one named mask: the input error is the command's error
    proc = subprocess.run([Path(sys.executable).parent / "panther-ensemble", "predict", bad, "-o",
                           tmp_path / "out" / "mask.mha", "--task", "1", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"error: {message}"
    assert "Traceback" not in proc.stderr and "MetaImage" not in proc.stderr
    assert not (tmp_path / "out" / "mask.mha").exists()
    # into a folder (a batch, even of one): the case fails, is recorded with the same line, the batch says so
    proc = subprocess.run([Path(sys.executable).parent / "panther-ensemble", "predict", bad, "-o", tmp_path / "many",
                           "--task", "1", "--device", "cpu", "--no-progress"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].endswith(f"ERROR 1 of 1 case(s) failed: see {tmp_path / 'many' / 'summary.csv'}")
    assert "Traceback" not in proc.stderr and "MetaImage" not in proc.stderr
    with open(tmp_path / "many" / "summary.csv") as f:
        row = next(csv.DictReader(f))
    assert (row["status"], row["error"]) == ("failed", message)
    assert not list((tmp_path / "many").glob("*.mha"))


def test_an_unreadable_image_is_named_as_such(case, capfd, monkeypatch):
    """The platform runs as a user, not root: a file it may not read is not 'a file of no known format' (ITK's
    word for it). Root reads any file, so the permission check is made to answer no for the image."""
    import panther_ensemble.io.images as images

    real = os.access
    monkeypatch.setattr(images.os, "access", lambda p, mode: False if Path(p) == case.image else real(p, mode))
    status, err = run_case(case, capfd, monkeypatch)
    assert status == 2 and err == f"error: {case.image}: permission denied: this user cannot read the file\n", err
    assert snapshot(case.output) is None


def test_a_file_name_with_a_newline_stays_one_line(case, capfd, monkeypatch):
    shutil.copy(case.source, case.socket / "a\nb.mha")
    status, err = run_case(case, capfd, monkeypatch)
    assert status == 2 and err.count("\n") == 1, err
    assert err.rstrip("\n").endswith("expected exactly one image, found 2: 1b2c3d4e-0000-4000-8000-000000000000.mha, "
                                      "a\\nb.mha"), err


def test_an_uncompressed_nifti_named_nii_gz_is_read_as_itk_reads_it(tmp_path, mri_file):
    from panther_ensemble.io.images import read_image

    image = sitk.ReadImage(str(mri_file))
    sitk.WriteImage(image, str(tmp_path / "x.nii"))
    (tmp_path / "x.nii").rename(tmp_path / "x.nii.gz")  # not gzip inside: nibabel refuses it, ITK reads it
    array, geometry = read_image(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(image).astype(np.float32))
    assert geometry.spacing_xyz == pytest.approx(image.GetSpacing())


def test_a_socket_listed_twice_in_inputs_json_is_one_socket(tmp_path):
    from panther_ensemble.io.sockets import _slugs_from_inputs_json

    path = tmp_path / "inputs.json"
    entry = {"interface": {"slug": "abdominal-t1-mri"}}
    path.write_text(json.dumps([entry, {"interface": {"slug": "ct-image"}}, entry]))
    assert _slugs_from_inputs_json(path) == ["abdominal-t1-mri"]
