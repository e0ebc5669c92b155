"""bench/gpu_check.sh --dry --device cpu on a clean checkout: no .gpu-carry, no prior step, no GPU.

The dry mode runs every step of the GPU check (the CUDA tests, our engine cold and warm, the same capped at
15 GB in a child process, nnU-Net's CLI predict + ensemble, their agreement) with scaled-down networks on a
small phantom that gpu_check.py makes itself. About a minute on two cores, most of it nnU-Net's CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_gpu_check_dry_runs_standalone(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # the script sets up its own path (src/, and the shim where SimpleITK is missing)
    proc = subprocess.run([REPO / "bench" / "gpu_check.sh", out, "--dry", "--device", "cpu", "--work", work],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["dry"] is True and result["device"] == "cpu" and result["image"] == "dry_case.nii.gz"
    assert (work / "input" / "dry_case.nii.gz").exists()  # made here, nothing carried
    for key in ("engine_before", "engine_after", "engine_after_capped_15GB"):
        assert "error" not in result[key], result[key]
        assert result[key]["cold"]["wall_s"] > 0 and result[key]["warm"]["forward_calls"] > 0
        assert result[key]["cold"]["tflop_per_s"] > 0  # FLOPs counted, throughput against the peak
    assert result["peak"]["flops_per_s"] > 0
    assert result["nnunet_cli"]["wall_s"] > 0
    assert result["agreement_before_vs_cli"] > 0.99 and result["agreement_after_vs_cli"] > 0.99
    cuda_log = (out / "pytest_cuda.log").read_text()
    assert "skipped" in cuda_log and "failed" not in cuda_log  # the CUDA tests: skipped with a reason on a CPU
    assert "input phantom made" in (out / "gpu_check.log").read_text()
