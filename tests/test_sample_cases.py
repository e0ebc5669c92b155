"""The shipped default models on the shipped sample cases: the README's main job, end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO
from panther_ensemble.inference.engine import Engine
from panther_ensemble.runtime import Runtime
from panther_ensemble.io import find_socket_input, read_image
from panther_ensemble.spec import load_spec, parse_spec

CASES = sorted(p.name for p in (REPO / "test" / "input").iterdir() if p.is_dir())


def expected_mask(interface: str, image_name: str) -> np.ndarray:
    path = REPO / "test" / "expected_output" / interface / "images" / "pancreatic-tumor-segmentation" / image_name
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_there_is_a_sample_case_per_task():
    tasks = sorted(find_socket_input(REPO / "test" / "input" / c).task for c in CASES)
    assert tasks == [1, 2]


@pytest.mark.parametrize("interface", CASES)
def test_readme_main_job_reproduces_the_expected_output(interface, tmp_path):
    """`python inference.py --input test/input/<interface> ...` as the README runs it (fresh process)."""
    socket = find_socket_input(REPO / "test" / "input" / interface)
    proc = subprocess.run([sys.executable, REPO / "inference.py", "--input", REPO / "test" / "input" / interface,
                           "--output", tmp_path, "--device", "cpu"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "images" / "pancreatic-tumor-segmentation" / socket.image.name
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    expected = expected_mask(interface, socket.image.name)
    assert got.shape == expected.shape
    assert (got == expected).mean() >= 0.9999


@pytest.mark.parametrize("interface", CASES)
def test_the_sample_case_tumour_is_found(interface):
    """What a CI smoke test shows: the expected output (which the test above reproduces from a fresh process)
    is a non-empty mask with tumour Dice >= 0.6 against the sample's ground truth (training/pick_samples.py)."""
    socket = find_socket_input(REPO / "test" / "input" / interface)
    mask = expected_mask(interface, socket.image.name).astype(bool)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(REPO / "test" / "ground-truth" / socket.image.name))) == 1
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert mask.any() and dice >= 0.6, f"{interface}: {mask.sum()} tumour voxels, Dice {dice:.3f}"


@pytest.mark.parametrize("doc,pattern", [
    ("README.md", r"The sample cases are found \(tumour Dice ([0-9.]+) and ([0-9.]+),"),
    ("training/README.md", r"Both samples are found \(tumour Dice ([0-9.]+) and ([0-9.]+),"),
    ("test/README.md", r"tumour Dice ([0-9.]+)\s+\(Task 1\) and ([0-9.]+) \(Task 2\)"),
])
def test_the_docs_give_the_sample_dice_of_the_expected_output(doc, pattern):
    """The sample Dice the docs state is test/expected_output/metrics.json's (make_expected.sh writes it), rounded:
    remaking the samples or the models must update the docs too."""
    import json
    import re

    metrics = json.loads((REPO / "test" / "expected_output" / "metrics.json").read_text())
    by_task = {find_socket_input(REPO / "test" / "input" / c).task: metrics[next(k for k in metrics if f"/{c}/" in k)]
               for c in CASES}
    found = re.search(pattern, (REPO / doc).read_text())
    assert found, f"{doc}: no sample Dice sentence ({pattern})"
    # metrics.json holds 4 decimals, the docs 3 (from the unrounded value): equal within that rounding
    assert [float(x) for x in found.groups()] == pytest.approx([by_task[t]["dice"] for t in (1, 2)], abs=6e-4), doc


@pytest.mark.parametrize("interface", CASES)
def test_fast_mode_agrees_with_faithful_on_the_sample_case(interface):
    """The figure quoted in docs/ARCHITECTURE.md: fast (torch twins, float32) vs faithful (nnU-Net's own)."""
    socket = find_socket_input(REPO / "test" / "input" / interface)
    spec = load_spec(REPO / "resources" / f"task{socket.task}.json")
    image, geometry = read_image(socket.image)
    masks, probabilities = {}, {}
    for mode in ("fast", "faithful"):
        raw = spec.to_json()
        for m in raw["members"]:
            m["resampling"] = mode
        result = Engine(parse_spec(raw, f"{mode} variant"), REPO / "model_weights", Runtime.create("cpu")).predict(
            image, geometry, keep_probabilities=True)
        masks[mode] = result.mask
        probabilities[mode] = result.probabilities
    agreement = (masks["fast"] == masks["faithful"]).mean()
    # the masks may hold few tumour voxels; the ensemble's probability maps are compared everywhere
    max_diff = float((probabilities["fast"] - probabilities["faithful"]).abs().max())
    print(f"{interface}: fast vs faithful voxel agreement {agreement:.6f}; tumour voxels "
          f"{int(masks['fast'].sum())} vs {int(masks['faithful'].sum())}; max |P fast - P faithful| {max_diff:.4f}")
    assert agreement >= 0.995
    assert max_diff < 0.05


@pytest.mark.parametrize("env_py", ["PY", "PYTHON"])
def test_make_expected_runs_the_interpreter_it_is_given(tmp_path, env_py):
    # reproduce.sh's samples step runs it in a rebuild's clone, which has no .venv of its own: the interpreter that
    # reproduce.sh was given (PY) must run it, not a python3 without the engine's packages
    (tmp_path / "test" / "input" / "task1").mkdir(parents=True)
    script = tmp_path / "test" / "make_expected.sh"
    script.write_text((REPO / "test" / "make_expected.sh").read_text())
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "fake-python"
    # one line per call; an output folder as inference.py makes; reads the metrics' heredoc
    fake.write_text(f'#!/bin/sh\necho "$1" >> {calls}\nmkdir -p test/expected_output\ncat > /dev/null\n')
    fake.chmod(0o755)
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                         env={"PATH": "/usr/bin:/bin", env_py: str(fake)})
    assert run.returncode == 0, run.stderr
    assert calls.read_text().split() == ["inference.py", "-"]  # the case folder's inference, then the metrics
