"""bench/cpu_bf16.py's own logic, on the test members (bfloat16 emulated where the CPU has none: slower, same
values), so that the benchmark whose results bench/README.md quotes can fail here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import cpu_bf16  # noqa: E402 - bench/ is not a package


def test_the_benchmark_times_both_settings_and_measures_their_agreement(models, mri_file, tmp_path, monkeypatch):
    import panther_ensemble.runtime as runtime_mod

    monkeypatch.setattr(runtime_mod, "native_bf16", lambda: True)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"version": 1, "task": 1, "members": [
        {"name": "A", "model": "A", "folds": [0], "mirroring": False}]}))
    image = sitk.ReadImage(str(mri_file))
    truth = sitk.GetImageFromArray((sitk.GetArrayFromImage(image) > np.median(sitk.GetArrayFromImage(image)))
                                   .astype(np.uint8))
    truth.CopyInformation(image)
    sitk.WriteImage(truth, str(tmp_path / "truth.mha"))
    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps([{"task": 1, "seed": 7, "image": str(mri_file),
                                    "ground_truth": str(tmp_path / "truth.mha")}]))
    out = tmp_path / "result"
    assert cpu_bf16.main(["--threads", "1", "--rounds", "2", "--samples", str(samples), "--weights-root",
                          str(models), "--spec", f"1={spec}", "--out", str(out)]) == 0
    case = json.loads(out.with_suffix(".json").read_text())["cases"][0]
    f32, bf16 = case["settings"]["defaults"], case["settings"]["cpu_autocast=bf16"]
    assert len(f32["wall_s"]) == len(bf16["wall_s"]) == 2 and f32["median_predict_s"] > 0
    assert 0 < case["max_probability_gap"] < 0.05  # bfloat16 computed: not float32's values, but near them
    assert 0.9 < case["mask_dice_bf16_vs_float32"] <= 1 and 0 <= f32["tumour_dice"] <= 1
    assert case["speedup_wall"] > 0 and "| Task 1 seed 7 |" in out.with_suffix(".md").read_text()


def test_phantom_cases_are_written_with_their_tumour_truth(tmp_path):
    samples = cpu_bf16.phantom_samples("1:5,2:6-7", tmp_path)
    assert [(s["task"], s["seed"]) for s in samples] == [(1, 5), (2, 6), (2, 7)]
    truth = sitk.GetArrayFromImage(sitk.ReadImage(samples[0]["ground_truth"]))
    assert set(np.unique(truth)) <= {0, 1, 2} and (truth == 1).any()  # 1 tumour: what the benchmark scores
    assert "abdominal-t2-mri" in samples[1]["image"] and Path(samples[2]["image"]).is_file()


def test_summary_over_cases():
    case = {"speedup_wall": 2.0, "speedup_predict": 2.5, "max_probability_gap": 0.01, "voxels_flipped": 3,
            "tumour_voxels_float32": 100, "mask_dice_bf16_vs_float32": 0.99,
            "settings": {"defaults": {"tumour_dice": 0.8}, "cpu_autocast=bf16": {"tumour_dice": 0.7}}}
    other = {**case, "speedup_wall": 1.0, "mask_dice_bf16_vs_float32": 0.95, "max_probability_gap": 0.02}
    s = cpu_bf16.summary([case, other])
    assert (s["median_speedup_wall"], s["smallest_mask_dice"], s["largest_probability_gap"]) == (1.5, 0.95, 0.02)
    assert (s["voxels_flipped"], s["mean_tumour_dice_float32"], s["mean_tumour_dice_bf16"]) == (6, 0.8, 0.7)
