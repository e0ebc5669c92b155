"""The training scripts' resume rules, on the real tiny nnU-Net model folder (tests/data/real_trainer_model)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "real_trainer_model" / "nnUNetTrainerPhantom__nnUNetPlansTiny__3d_fullres"


def _oof(model: Path, raw: Path, out: Path, splits: Path) -> str:
    run = subprocess.run([sys.executable, str(REPO / "training" / "predict_oof.py"), "--model", str(model),
                          "--raw", str(raw), "--out", str(out), "--splits", str(splits)],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_out_of_fold_maps_resume_and_are_redone_after_a_retrain(tmp_path):
    """A map already written is skipped; once its fold's checkpoint is newer (a longer schedule, a retrain),
    it is predicted again instead of feeding the fit stale probabilities."""
    model = tmp_path / "models" / TINY.name
    shutil.copytree(TINY, model)
    raw = tmp_path / "Dataset901_PhantomT1"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"file_ending": ".mha"}))
    rng = np.random.default_rng(0)
    for case in ("c1", "c2"):
        image = sitk.GetImageFromArray(rng.normal(100, 20, (12, 40, 44)).astype(np.float32))
        image.SetSpacing((2.0, 2.0, 3.0))
        sitk.WriteImage(image, str(raw / "imagesTr" / f"{case}_0000.mha"))
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps([{"train": ["c2"], "val": ["c1", "c2"]}]))
    out = tmp_path / "oof"

    first = _oof(model, raw, out, splits)
    assert "fold 0 c1:" in first and "fold 0 c2:" in first
    with np.load(out / "c1.npz") as f:
        assert f["probabilities"].shape[1:] == (12, 40, 44)
    written = {c: (out / f"{c}.npz").stat().st_mtime_ns for c in ("c1", "c2")}

    assert "fold 0" not in _oof(model, raw, out, splits)  # resumed: nothing left to do
    assert {c: (out / f"{c}.npz").stat().st_mtime_ns for c in ("c1", "c2")} == written

    # the fold is retrained after c2's map was written (c2's map is now older than the checkpoint), and
    # before c1's (newer): only c2 is predicted again
    checkpoint = model / "fold_0" / "checkpoint_final.pth"
    trained = checkpoint.stat().st_mtime
    assert all((out / f"{c}.npz").stat().st_mtime > trained for c in ("c1", "c2"))
    os.utime(out / "c2.npz", (trained - 10, trained - 10))
    again = _oof(model, raw, out, splits)
    assert "fold 0 c2:" in again and "fold 0 c1:" not in again
    assert (out / "c2.npz").stat().st_mtime > trained
    assert (out / "c1.npz").stat().st_mtime_ns == written["c1"]


def test_freshness_rule_counts_every_file_below_a_folder(tmp_path):
    """The one resume rule of predict_oof, evaluate_heldout and fit_default: an output newer than every input."""
    sys.path.insert(0, str(REPO / "training"))
    try:
        from freshness import is_current, newest_mtime, write_if_changed
    finally:
        sys.path.remove(str(REPO / "training"))
    maps = tmp_path / "oof" / "default"
    maps.mkdir(parents=True)
    for i, name in enumerate(("a.npz", "b.npz")):
        (maps / name).write_bytes(b"x")
        os.utime(maps / name, (1000 + i, 1000 + i))
    base = tmp_path / "base.json"
    base.write_text("{}")
    os.utime(base, (900, 900))
    report = tmp_path / "report.md"
    assert not is_current(report, [maps, base])  # no output yet
    report.write_text("done")
    os.utime(report, (1001, 1001))
    assert newest_mtime([maps.parent, base]) == 1001
    assert is_current(report, [maps.parent, base])  # as new as the newest input
    os.utime(maps / "a.npz", (1002, 1002))  # one map below the folder redone after the report
    assert not is_current(report, [maps.parent, base])
    write_if_changed(base, "{}")  # same text: the input keeps its time, the report stays current
    assert base.stat().st_mtime == 900
    write_if_changed(base, '{"members": []}')  # new text: rewritten, the report is stale
    assert base.read_text() == '{"members": []}' and not is_current(report, [base])
    with pytest.raises(FileNotFoundError, match="no input files"):  # nothing to compare with is not "older"
        newest_mtime([tmp_path / "empty"])


def _training_module(name):
    sys.path.insert(0, str(REPO / "training"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(REPO / "training"))


def test_heldout_bootstrap_reads_evaluate_s_per_case_tables(tmp_path):
    """evaluate_heldout.write_bootstrap on the committed held-out tables (panther-ensemble evaluate's
    metrics.json): the 20 cases of every entry, none of the aggregates; the committed bootstrap.json is what
    it writes."""
    evaluate_heldout = _training_module("evaluate_heldout")
    entries = ["default", "DA5", "iso", "equal", "fitted"]
    committed = REPO / "docs" / "results" / "heldout_task2"
    for e in entries:
        (tmp_path / e).mkdir()
        shutil.copy(committed / e / "metrics.json", tmp_path / e / "metrics.json")
    result = evaluate_heldout.write_bootstrap(tmp_path, entries)
    written = json.loads((tmp_path / "bootstrap.json").read_text())
    assert written == json.loads((committed / "bootstrap.json").read_text())
    assert written["cases"] == 20 and set(written["rank_stability"]) == set(entries)
    assert set(written["paired"]) == set(entries) - {"equal"} and written["reference"] == "equal"
    assert sum(r["first"] for r in result["rank_stability"].values()) >= 1.0
    for r in written["rank_stability"].values():
        assert 1.0 <= r["mean_rank_p2.5"] <= r["mean_rank_median"] <= r["mean_rank_p97.5"] <= 5.0
    for metrics in written["paired"].values():
        for d in metrics.values():
            assert d["low"] <= d["high"] and 0.0 <= d["better"] + d["equal"] <= 1.0


def test_pool_heldout_pools_the_sets_and_refuses_a_case_in_two(tmp_path, capsys, monkeypatch):
    """training/pool_heldout.py: the committed pooled Task 1 file is what it writes from the three sets."""
    pool_heldout = _training_module("pool_heldout")
    sets = [REPO / "docs" / "results" / d for d in
            ("heldout_task1", "heldout_task1_seeds1120-1139", "heldout_task1_seeds1140-1159")]
    committed = REPO / "docs" / "results" / "heldout_task1_seeds1140-1159" / "pooled_1100-1159.json"
    out = tmp_path / "pooled.json"
    monkeypatch.chdir(REPO)  # the committed file records the sets as repo paths
    assert pool_heldout.main([*(str(d.relative_to(REPO)) for d in sets), "--seeds", "1100-1159", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(committed.read_text())
    doc = json.loads(out.read_text())
    assert doc["cases"] == 60 and [r["name"] for r in doc["leaderboard"]][0] == "equal"
    assert "minus equal" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="cases already in another set: t1_seed1100, t1_seed1101"):
        pool_heldout.pool([sets[0], sets[0]])


def test_two_fold_splits_are_the_sorted_halves_and_predict_oof_uses_them_without_the_plan_step(tmp_path):
    """MODELS=shipped on a fresh machine: no plan step, hence no splits_final.json; predict_oof must use the
    same two folds as make_plans.py writes, and say so."""
    sys.path.insert(0, str(REPO / "training"))
    try:
        from splits import two_fold_splits
    finally:
        sys.path.remove(str(REPO / "training"))
    raw = tmp_path / "Dataset901_PhantomT1"
    (raw / "labelsTr").mkdir(parents=True)
    (raw / "imagesTr").mkdir()
    (raw / "dataset.json").write_text(json.dumps({"file_ending": ".mha"}))
    rng = np.random.default_rng(1)
    for case in ("p_3", "p_1", "p_2", "p_0", "p_4"):
        image = sitk.GetImageFromArray(rng.normal(100, 20, (12, 40, 44)).astype(np.float32))
        image.SetSpacing((2.0, 2.0, 3.0))
        sitk.WriteImage(image, str(raw / "imagesTr" / f"{case}_0000.mha"))
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((12, 40, 44), np.uint8)), str(raw / "labelsTr" / f"{case}.mha"))
    splits = two_fold_splits(raw)
    assert splits == [{"train": ["p_2", "p_3", "p_4"], "val": ["p_0", "p_1"]},
                      {"train": ["p_0", "p_1"], "val": ["p_2", "p_3", "p_4"]}]
    # the tiny model has fold 0 only: give it a fold 1 (a copy) so that both folds of the splits can run
    model = tmp_path / "models" / TINY.name
    shutil.copytree(TINY, model)
    shutil.copytree(model / "fold_0", model / "fold_1")
    run = subprocess.run([sys.executable, str(REPO / "training" / "predict_oof.py"), "--model", str(model),
                          "--raw", str(raw), "--out", str(tmp_path / "oof")], capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1",
                                               nnUNet_preprocessed=str(tmp_path / "no_plan_step")))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "using the two folds of training/splits.py" in run.stdout
    assert [line.split(":")[0] for line in run.stdout.splitlines() if line.startswith("fold")] == [
        "fold 0 p_0", "fold 0 p_1", "fold 1 p_2", "fold 1 p_3", "fold 1 p_4"]


@pytest.mark.parametrize("models,steps,message", [
    ("shipped", ["data", "train", "oof"], "step 'train' builds models"),
    ("shipped", ["export"], "step 'export' builds models"),
    ("pretrained", ["oof"], "MODELS must be 'trained' or 'shipped'"),
])
def test_reproduce_refuses_to_build_models_when_told_to_score_the_shipped_ones(tmp_path, models, steps, message):
    run = subprocess.run(["bash", str(REPO / "training" / "reproduce.sh"), *steps], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, MODELS=models, PANTHER_DATA=str(tmp_path / "data"),
                                              TMPDIR=str(tmp_path)))
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert "generating" not in run.stdout and not (tmp_path / "data" / "nnUNet_raw" / "Dataset901_PhantomT1").exists()
