"""docs/results/experiments/maps_bf16: compare.py on two small hand-made sides (fits, logs, maps), and run.sh's
phase check. The trial itself runs on the shipped members (its README, amended 2026-12-07)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "docs" / "results" / "experiments" / "maps_bf16"


def _compare():
    spec = importlib.util.spec_from_file_location("maps_bf16_compare", HERE / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _side(root: Path, weights: dict[int, float], seconds: float, tumour_shift: int) -> None:
    for task, ds in ((1, "Dataset901_PhantomT1"), (2, "Dataset902_PhantomT2")):
        fit = root / "repo" / "docs" / "results" / f"fit_task{task}"
        fit.mkdir(parents=True)
        members = [{"name": "default", "weight": weights[task]}, {"name": "DA5", "weight": 1 - weights[task]}]
        (fit / "spec.json").write_text(json.dumps({"members": members, "decision": {"rule": "argmax"},
                                                    "postprocess": {"keep_most_confident": 1}}))
        row = {"name": "fitted ensemble (held-out)", "dice": 0.7, "surface_dice_5mm": 0.9, "hd95": 15.0, "masd": 12.0,
               "volume_rmse_mm3": 3000.0, "mean_rank": 1.4}
        (fit / "report.json").write_text(json.dumps({"leaderboard_held_out": [row]}))
        logs = root / "data" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for m in ("default", "DA5", "iso"):
            (logs / f"oof_t{task}_{m}.log").write_text(
                f"fold 0 case_a: {seconds:.1f} s\nsome other line\nfold 1 case_b: {seconds:.1f} s\n")
            maps = root / "data" / "oof" / ds / m
            maps.mkdir(parents=True)
            for case in ("case_a", "case_b"):
                p = np.zeros((3, 4, 5, 6), np.float16)
                p[0] = 1  # background everywhere ...
                p[:, 1, 1:3 + tumour_shift, 2] = np.array([0, 0.9, 0.1])[:, None]  # ... but a tumour run of 2 (+ shift) voxels
                np.savez(maps / f"{case}.npz", probabilities=p, labels=np.array(["background", "tumor", "pancreas"]),
                         spacing=np.array([1.0, 1.0, 1.0]))


def test_compare_reports_choice_speed_and_map_agreement(tmp_path):
    f32, b16 = tmp_path / "f32", tmp_path / "bf16"
    _side(f32, {1: 0.9, 2: 0.6}, 10.0, 0)
    _side(b16, {1: 0.9, 2: 0.4}, 4.0, 1)  # Task 2's fit chose other weights; one more tumour voxel per map
    timings = []
    for name, seconds in (("t32.json", 1200.0), ("t16.json", 800.0)):
        timings.append(tmp_path / name)
        timings[-1].write_text(json.dumps({"steps": {"oof": {"total_s": seconds}}}))
    out = tmp_path / "compare"
    assert _compare().main(["--float32", str(f32), "--bf16", str(b16), "--timings", *map(str, timings),
                            "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    t1, t2 = doc["tasks"]["1"], doc["tasks"]["2"]
    assert t1["same_choice"] is True and t2["same_choice"] is False
    member = t1["members"]["DA5"]
    assert (member["cases_timed"], member["float32_s"], member["bf16_s"], member["speedup"]) == (2, 20.0, 8.0, 2.5)
    assert (member["cases"], member["tumour_voxels_flipped"], member["tumour_voxels_float32"]) == (2, 2, 4)
    assert member["smallest_mask_dice"] == pytest.approx(0.8)  # 2 * 2 / (2 + 3)
    assert member["largest_probability_gap"] == 1.0  # background 1 -> 0 at the extra voxel
    text = out.with_suffix(".md").read_text()
    assert "1.50x" in text and "## Task 1: the same choice" in text and "## Task 2: a different choice" in text


def test_run_refuses_an_unknown_phase_before_anything_runs(tmp_path):
    run = subprocess.run(["bash", str(HERE / "run.sh"), "oof", "fitt"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PANTHER_DATA": str(tmp_path), "TMPDIR": str(tmp_path)})
    assert run.returncode == 2 and "unknown phase 'fitt'" in run.stderr, run.stderr
    assert not (tmp_path / "exp").exists()


def test_exp_has_step_reads_reproduce_s_timings_and_a_missing_file_is_not_done(tmp_path):
    timings = tmp_path / "timings.json"
    timings.write_text(json.dumps({"steps": {"oof": {"total_s": 1.0}}}))
    script = (f'PY={sys.executable}; REPO={REPO}; source {REPO}/training/experiment.sh; '
              f'exp_has_step {timings} oof && echo oof; exp_has_step {timings} fit || echo no-fit; '
              f'exp_has_step {tmp_path}/none.json oof || echo no-file')
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["oof", "no-fit", "no-file"] and run.stderr == "", run.stderr
