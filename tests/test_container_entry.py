"""inference.py and `panther-ensemble predict` as users run them: real files, real processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO

SPEC = {"version": 1, "task": 1, "members": [
    {"name": "A", "model": "A", "folds": [0], "mirroring": False},
    {"name": "B", "model": "B", "folds": [0], "mirroring": False, "weight": 0.5}]}


def socket_input(root: Path, image: Path | None, task: int = 1, inputs_json: bool = True) -> Path:
    slug = f"abdominal-t{task}-mri"
    folder = root / "input" / "images" / slug
    folder.mkdir(parents=True)
    if image is not None:
        shutil.copy(image, folder / "1b2c3d4e-0000-4000-8000-000000000000.mha")
    if inputs_json:
        (root / "input" / "inputs.json").write_text(json.dumps(
            [{"interface": {"slug": slug, "kind": "Image", "relative_path": f"images/{slug}"}}]))
    return root / "input"


def run_inference(tmp_path, inp, models, spec=SPEC):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    out = tmp_path / "output"
    proc = subprocess.run([sys.executable, REPO / "inference.py", "--input", inp, "--output", out, "--model-dir",
                           models, "--spec", spec_path, "--device", "cpu"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    return proc, out


def masks_in(out: Path) -> list[Path]:
    folder = out / "images" / "pancreatic-tumor-segmentation"
    return sorted(folder.glob("*")) if folder.exists() else []


def test_inference_writes_one_binary_mask_with_the_input_geometry(tmp_path, models, mri_file):
    proc, out = run_inference(tmp_path, socket_input(tmp_path, mri_file), models)
    assert proc.returncode == 0, proc.stderr
    [mask_path] = masks_in(out)
    assert mask_path.name == "1b2c3d4e-0000-4000-8000-000000000000.mha"
    mask, image = sitk.ReadImage(str(mask_path)), sitk.ReadImage(str(mri_file))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert mask.GetSize() == image.GetSize()
    assert mask.GetSpacing() == image.GetSpacing() and mask.GetOrigin() == image.GetOrigin()
    assert mask.GetDirection() == image.GetDirection()
    values = np.unique(sitk.GetArrayFromImage(mask))
    assert set(values.tolist()) <= {0, 1} and len(values) == 2
    for stage in ("preprocess", "predict A", "predict B", "decide", "peak RSS"):
        assert stage in proc.stderr
    assert [p.name for p in (out / "images").iterdir()] == ["pancreatic-tumor-segmentation"]


def test_socket_found_without_inputs_json(tmp_path, models, mri_file):
    proc, out = run_inference(tmp_path, socket_input(tmp_path, mri_file, inputs_json=False), models)
    assert proc.returncode == 0, proc.stderr
    assert len(masks_in(out)) == 1


def test_all_zero_image_gives_an_empty_mask_with_a_warning(tmp_path, models):
    zero = sitk.Image(30, 20, 10, sitk.sitkInt16)
    zero.SetSpacing((1.2, 1.2, 3.0))
    sitk.WriteImage(zero, str(tmp_path / "zero.mha"))
    proc, out = run_inference(tmp_path, socket_input(tmp_path, tmp_path / "zero.mha"), models)
    assert proc.returncode == 0, proc.stderr
    assert "all zero" in proc.stderr
    [mask_path] = masks_in(out)
    assert not sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))).any()


def bad_case(kind: str, tmp_path: Path, mri_file: Path, models: Path):
    spec = json.loads(json.dumps(SPEC))
    image = mri_file
    extra = None
    if kind == "no_image":
        image = None
    elif kind == "two_images":
        extra = mri_file
    elif kind == "truncated":
        img = sitk.ReadImage(str(mri_file))
        sitk.WriteImage(img, str(tmp_path / "full.mha"), False)
        data = (tmp_path / "full.mha").read_bytes()
        (tmp_path / "trunc.mha").write_bytes(data[: len(data) * 2 // 3])
        image = tmp_path / "trunc.mha"
    elif kind == "nan":
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(mri_file)))
        a[5, 5, 5] = np.nan
        img = sitk.GetImageFromArray(a)
        img.CopyInformation(sitk.ReadImage(str(mri_file)))
        sitk.WriteImage(img, str(tmp_path / "nan.mha"))
        image = tmp_path / "nan.mha"
    elif kind == "unknown_label":
        spec["tumor_label"] = "lesion"
    elif kind == "unknown_folder":
        spec["members"][1]["model"] = "no_such_model"
    elif kind == "missing_fold":
        spec["members"][0]["folds"] = [0, 4]
    elif kind == "wrong_task":
        spec["task"] = 2
    inp = socket_input(tmp_path, image)
    if extra is not None:
        shutil.copy(extra, inp / "images" / "abdominal-t1-mri" / "second.mha")
    return inp, spec


@pytest.mark.parametrize("kind,expected", [
    ("no_image", "no image"), ("two_images", "exactly one image"), ("truncated", "truncated or corrupt image data"),
    ("nan", "NaN"), ("unknown_label", "no label 'lesion'"), ("unknown_folder", "model folder does not exist"),
    ("missing_fold", "fold 4"), ("wrong_task", "task 2")])
def test_bad_input_one_line_nonzero_exit_no_output(tmp_path, models, mri_file, kind, expected):
    inp, spec = bad_case(kind, tmp_path, mri_file, models)
    proc, out = run_inference(tmp_path, inp, models, spec)
    assert proc.returncode != 0
    error_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and expected in error_lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert masks_in(out) == []


def test_predict_cli_on_plain_files_with_probabilities(tmp_path, models, mri_file):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    proc = subprocess.run([Path(sys.executable).parent / "panther-ensemble", "predict", mri_file, "-o",
                           tmp_path / "pred", "--spec", spec_path, "--model-dir", models, "--device", "cpu",
                           "--save-probabilities", tmp_path / "probs"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred" / "case_0000.mha")))
    ens = np.load(tmp_path / "probs" / "ensemble" / "case_0000.npz")
    a = np.load(tmp_path / "probs" / "A" / "case_0000.npz")
    assert list(ens["labels"]) == ["background", "tumor", "pancreas"]
    assert ens["probabilities"].shape == (3, *mask.shape) and a["probabilities"].dtype == np.float16
    # float16 storage may flip near-ties only
    assert ((ens["probabilities"].astype(np.float32).argmax(0) == 1) == (mask == 1)).mean() > 0.999
    np.testing.assert_allclose(a["spacing"], (3.0, 1.2, 1.2))
