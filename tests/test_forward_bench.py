"""The forward-efficiency benchmark's own logic (bench/matmul_peak.py, forward_efficiency.py, gpu_check.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import forward_efficiency as fe  # noqa: E402
import gpu_check  # noqa: E402
from matmul_peak import matmul_peak, rate  # noqa: E402


def test_matmul_peak_and_rates():
    peak = matmul_peak(torch.device("cpu"), size=128, rounds=2, round_s=0.01)
    assert peak["dtype"] == "float32" and peak["flops_per_s"] >= peak["median_flops_per_s"] > 0
    r = rate(2e9, 0.5, {"flops_per_s": 8e9})
    assert r["gflop_per_s"] == 4.0 and r["fraction_of_peak"] == 0.5


def test_after_settings_are_the_fastest_a_t4_can_run():
    rows = [{"levers": "tiles=1", "seconds_per_tile": 0.058},
            {"levers": "channels_last,tiles=2", "seconds_per_tile": 0.030},
            {"levers": "autocast=bf16,tiles=1", "seconds_per_tile": 0.020},  # no bfloat16 on a T4
            {"levers": "compile=default,tiles=1", "seconds_per_tile": 0.010},  # minutes of compilation per case
            {"levers": "tiles=4", "error": "OutOfMemoryError"}]
    assert gpu_check.choose_after("auto", rows) == "channels_last,tiles=0,max_tiles=2"  # the memory policy
    assert gpu_check.choose_after("auto", rows[:1]) == "tiles=1"
    assert gpu_check.choose_after("auto", None) == "" and gpu_check.choose_after("tiles=3", rows) == "tiles=3"


def test_sweep_times_every_lever_set_per_tile(models):
    member = {"name": "A", "folder": str(models / "A"), "fold": 0}
    rows = fe.sweep(member, ["defaults", "tiles=2", "compile=fastest"], torch.device("cpu"), 1, rounds=1, repeats=1,
                    peak={"flops_per_s": 1e12})
    assert [r["levers"] for r in rows] == ["defaults", "tiles=2", "compile=fastest"]
    assert rows[0]["tiles_per_call"] == 1 and rows[1]["tiles_per_call"] == 2
    assert all(r["seconds_per_tile"] > 0 and 0 < r["fraction_of_peak"] < 1 for r in rows[:2])
    assert "PANTHER_FORWARD" in rows[2]["error"]  # a bad setting is reported, not fatal
    assert fe.forward_flops(member["folder"])["patch"] == [8, 32, 32]
    report = fe.report({"machine": {"date": "d", "torch": "t"}, "device": "cpu", "threads": 1, "command": "c",
                        "peak": {"flops_per_s": 1e12, "median_flops_per_s": 1e12, "dtype": "float32", "size": 128},
                        "flops": {"A": fe.forward_flops(member["folder"])}, "levers": rows})
    assert "| A | tiles=2 | 2 |" in report and "failed" in report
