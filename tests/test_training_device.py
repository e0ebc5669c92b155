"""train_specialist.py --device: where nnU-Net's trainer runs. The GPU path itself needs a GPU; its choice and
refusals are tested here on the CPU (the CPU path trains for real in test_collapse and test_seed_from_shipped)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO / "training"))
try:
    import train_specialist
finally:
    sys.path.remove(str(REPO / "training"))


def test_the_device_is_a_torch_device_this_machine_has(monkeypatch):
    assert train_specialist.training_device("cpu") == torch.device("cpu")
    for name, reason in (("xpu", "nnU-Net trains on cpu, cuda or mps"), ("gpu0", "not a torch device"), ("tpu", "not a torch device")):
        with pytest.raises(ValueError, match=f"--device {name}: {reason}"):
            train_specialist.training_device(name)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"--device cuda: this torch \(.+\) sees no CUDA device"):
        train_specialist.training_device("cuda")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert train_specialist.training_device("cuda") == torch.device("cuda")
    assert train_specialist.training_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"--device cuda:1: only 1 CUDA device\(s\)"):
        train_specialist.training_device("cuda:1")

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="has no MPS device"):
        train_specialist.training_device("mps")


def test_a_device_this_machine_lacks_stops_before_any_training_with_one_line(tmp_path):
    """No silent CPU fallback: hours of training where minutes were planned. cuda:99 is missing on any machine."""
    proc = subprocess.run([sys.executable, str(REPO / "training" / "train_specialist.py"), "--dataset", "901",
                           "--trainer", "nnUNetTrainerPhantom", "--fold", "0", "--device", "cuda:99"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "nnUNet_raw": str(tmp_path), "nnUNet_preprocessed": str(tmp_path),
                               "nnUNet_results": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train_specialist.py: error: --device cuda:99: "), last
    assert "phantom schedule" not in proc.stdout + proc.stderr and list(tmp_path.iterdir()) == []


def test_the_default_device_is_the_environment_s(tmp_path):
    """TRAIN_DEVICE picks the device where --device is not given (reproduce.sh passes DEVICE explicitly)."""
    proc = subprocess.run([sys.executable, str(REPO / "training" / "train_specialist.py"), "--dataset", "901",
                           "--trainer", "nnUNetTrainerPhantom", "--fold", "0"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "TRAIN_DEVICE": "cuda:99", "nnUNet_raw": str(tmp_path),
                               "nnUNet_preprocessed": str(tmp_path), "nnUNet_results": str(tmp_path)})
    assert proc.returncode == 2 and "--device cuda:99: " in proc.stderr, proc.stderr[-2000:]
