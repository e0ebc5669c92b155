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
import torch
from helpers_path import write_script

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
    # the 36-epoch keep-largest release's three sets; its 1100-1119 table left docs/results/heldout_task1 on 2026-12-04
    sets = [REPO / "docs" / "results" / d for d in
            ("experiments/keep_confident_task1/heldout_release36ep_seeds1100-1119", "heldout_task1_seeds1140-1159",
             "heldout_task1_seeds1160-1179")]
    committed = REPO / "docs" / "results" / "heldout_task1_seeds1160-1179" / "pooled_1100-1119_1140-1179.json"
    out = tmp_path / "pooled.json"
    monkeypatch.chdir(REPO)  # the committed file records the sets as repo paths
    assert pool_heldout.main([*(str(d.relative_to(REPO)) for d in sets), "--seeds", "1100-1119,1140-1179",
                              "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(committed.read_text())
    doc = json.loads(out.read_text())
    ranks = [r["mean_rank"] for r in doc["leaderboard"]]
    assert doc["cases"] == 60 and ranks == sorted(ranks) and doc["bootstrap"]["cases"] == 60
    assert "minus equal" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="cases already in another set: t1_seed1100, t1_seed1101"):
        pool_heldout.pool([sets[0], sets[0]])
    # --seeds is the file's record of its cases: one that names other seeds than the sets hold is refused by name
    for claimed in ("1100-1119,1140-1159", "1100-1119,1140-1199", "1100-1179,9"):
        with pytest.raises(SystemExit, match=rf"--seeds {claimed} is not what the sets hold: 1100-1119,1140-1179$"):
            pool_heldout.main([*(str(d) for d in sets), "--seeds", claimed, "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="--seeds 'odd': expected seeds and ranges"):
        pool_heldout.main([str(sets[0]), "--seeds", "odd", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_pool_heldout_repath_rewrites_the_files_that_name_a_moved_set(tmp_path, monkeypatch):
    """pool_heldout.repath (experiment.sh exp_repath_pooled, in the ship steps): when docs/results/heldout_task2
    moves, every pooled and --compare file naming it is written again by the same command with the new path, the
    numbers unchanged; a file that does not name it is left alone."""
    pool_heldout = _training_module("pool_heldout")
    t2b = "docs/results/experiments/task2_bf16_release"
    for d in ("docs/results/heldout_task2", f"{t2b}/heldout_release60ep_seeds1100-1119",
              f"{t2b}/heldout_release_seeds1160-1179"):
        shutil.copytree(REPO / d, tmp_path / d, ignore=shutil.ignore_patterns("*.png", "*.csv"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / t2b
    pool_heldout.main(["docs/results/heldout_task2", f"{t2b}/heldout_release_seeds1160-1179", "--seeds", "1100-1119,1160-1179",
                       "--out", f"{t2b}/pooled_two.json"])
    pool_heldout.main([f"{t2b}/heldout_release_seeds1160-1179", "--seeds", "1160-1179", "--out", f"{t2b}/pooled_other.json"])
    pool_heldout.main(["--compare", "new=docs/results/heldout_task2", f"old={t2b}/heldout_release60ep_seeds1100-1119",
                       "--reference", "old", "--seeds", "1100-1119", "--out", f"{t2b}/compare_releases_x.json"])
    before = {f.name: json.loads(f.read_text()) for f in out.glob("*.json")}
    other_time = (out / "pooled_other.json").stat().st_mtime_ns
    moved = f"{t2b}/moved"
    (tmp_path / "docs/results/heldout_task2").rename(tmp_path / moved)
    assert pool_heldout.repath(tmp_path, "docs/results/heldout_task2", moved) == [
        f"{t2b}/compare_releases_x.json", f"{t2b}/pooled_two.json"]
    after = {f.name: json.loads(f.read_text()) for f in out.glob("*.json")}
    assert after["pooled_two.json"]["sets"] == [moved, f"{t2b}/heldout_release_seeds1160-1179"]
    assert after["compare_releases_x.json"]["sets"] == {"new": [moved], "old": [f"{t2b}/heldout_release60ep_seeds1100-1119"]}
    for name, doc in before.items():
        assert {k: v for k, v in after[name].items() if k != "sets"} == {k: v for k, v in doc.items() if k != "sets"}
    assert (out / "pooled_other.json").stat().st_mtime_ns == other_time


def test_pool_heldout_compare_is_the_head_to_head_from_the_two_tables(tmp_path, monkeypatch):
    """training/pool_heldout.py --compare: the fitted entries of two releases' held-out tables, paired case by case,
    give what `panther-ensemble evaluate` wrote head to head from their masks (task2_bf16_release, seeds 1280-1299):
    the same leaderboard and the same paired bootstrap. Releases holding different cases are refused by name."""
    pool_heldout = _training_module("pool_heldout")
    here = REPO / "docs" / "results" / "experiments" / "task2_bf16_release"
    out = tmp_path / "compare.json"
    monkeypatch.chdir(REPO)
    assert pool_heldout.main(["--compare", f"candidate_bf16={here / 'heldout_candidate_seeds1280-1299'}",
                              f"release={here / 'heldout_release_seeds1280-1299'}", "--reference", "release",
                              "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    head = here / "head_to_head_seeds1280-1299"
    assert doc["leaderboard"] == json.loads((head / "leaderboard.json").read_text())["leaderboard"]
    assert doc["bootstrap"]["paired"] == json.loads((head / "bootstrap.json").read_text())["paired"]
    assert doc["cases"] == 20 and doc["entry"] == "fitted" and set(doc["sets"]) == {"candidate_bf16", "release"}
    with pytest.raises(SystemExit, match="releases a and b hold different cases: t2_seed1100"):
        pool_heldout.pool_releases({"a": [here / "heldout_candidate_seeds1280-1299"],
                                    "b": [REPO / "docs" / "results" / "heldout_task2"]})
    for bad in (["--compare", "a=x", "--reference", "a"],                        # one release
                ["--compare", f"a={head}", f"b={head}", "--reference", "equal"],  # reference not a release
                [str(head), "--compare", f"a={head}", f"b={head}", "--reference", "a"]):
        with pytest.raises(SystemExit):
            pool_heldout.main([*bad, "--out", str(out)])


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

    # one fold (reproduce.sh runs one process per fold, side by side): its cases only, though both folds were retrained
    for fold in (0, 1):
        (model / f"fold_{fold}" / "checkpoint_final.pth").touch()
    one = subprocess.run([sys.executable, str(REPO / "training" / "predict_oof.py"), "--model", str(model),
                          "--raw", str(raw), "--out", str(tmp_path / "oof"), "--folds", "1", "--threads", "1"],
                         capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, nnUNet_preprocessed=str(tmp_path / "no_plan_step")))
    assert one.returncode == 0, one.stderr[-2000:]
    assert [line.split(":")[0] for line in one.stdout.splitlines() if line.startswith("fold")] == [
        "fold 1 p_2", "fold 1 p_3", "fold 1 p_4"]
    bad = subprocess.run([sys.executable, str(REPO / "training" / "predict_oof.py"), "--model", str(model),
                          "--raw", str(raw), "--out", str(tmp_path / "oof"), "--folds", "2"], capture_output=True,
                         text=True, timeout=600, env=dict(os.environ, nnUNet_preprocessed=str(tmp_path / "no_plan_step")))
    assert bad.returncode == 2 and "--folds 2: the splits have folds 0-1" in bad.stderr


@pytest.mark.parametrize("models,steps,message", [
    ("shipped", ["data", "train", "oof"], "step 'train' builds models"),
    ("shipped", ["export"], "step 'export' builds models"),
    ("shipped", ["seed", "oof"], "step 'seed' builds models"),
    ("trained", ["data", "trian", "oof"], "unknown step 'trian'"),
    ("pretrained", ["oof"], "MODELS must be 'trained' or 'shipped'"),
])
def test_reproduce_refuses_to_build_models_when_told_to_score_the_shipped_ones(tmp_path, models, steps, message):
    # stand-ins for the interpreter and panther-ensemble: a script that failed to refuse must not start real work
    # (phantom generation in background processes that would outlive the test)
    bin_dir = tmp_path / "bin"
    for name in ("python", "panther-ensemble"):
        write_script(bin_dir / name, f'#!/bin/sh\necho "{name} $@" >> {tmp_path / "calls.txt"}\n')
    run = subprocess.run(["bash", str(REPO / "training" / "reproduce.sh"), *steps], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, MODELS=models, PANTHER_DATA=str(tmp_path / "data"),
                                              TMPDIR=str(tmp_path), PY=str(bin_dir / "python"),
                                              NNUNET_BIN=str(bin_dir)))
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert not (tmp_path / "calls.txt").exists()
    assert "generating" not in run.stdout and not (tmp_path / "data" / "nnUNet_raw" / "Dataset901_PhantomT1").exists()


def _recorded_calls(tmp_path: Path, tasks: str, *steps: str, nnunet: bool = False) -> tuple[list[list[str]], str]:
    """Run reproduce.sh STEPS with a stand-in interpreter that records each call (its arguments, then
    OMP_NUM_THREADS=N) and succeeds; the calls and reproduce.sh's own output. nnunet: nnU-Net's commands
    (NNUNET_BIN) are stand-ins too, recorded with their name first."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" "nnUNet_n_proc_DA=$nnUNet_n_proc_DA" "OMP_NUM_THREADS=$OMP_NUM_THREADS" >> {calls}\n')
    fake.chmod(0o755)
    env = dict(os.environ, TASKS=tasks, PY=str(fake), PANTHER_DATA=str(tmp_path / "data"), TMPDIR=str(tmp_path))
    if nnunet:
        bin_dir = tmp_path / "bin"
        for name in ("nnUNetv2_plan_and_preprocess", "nnUNetv2_preprocess", "panther-ensemble"):
            write_script(bin_dir / name, f'#!/bin/sh\necho "{name} $@" >> {calls}\n')
        env["NNUNET_BIN"] = str(bin_dir)
    run = subprocess.run(["bash", str(REPO / "training" / "reproduce.sh"), *steps], capture_output=True, text=True,
                         timeout=60, env=env)
    assert run.returncode == 0, run.stderr
    return [line.split() for line in calls.read_text().splitlines()], run.stdout


def _arg(call: list[str], flag: str) -> str | None:
    return call[call.index(flag) + 1] if flag in call else None


@pytest.mark.parametrize("tasks,seeds", [("2", "1100-1119"), ("1 2", "1100-1119"), ("1 2", "7,1,30-34")])
def test_reproduce_heldout_deals_the_maps_to_every_core_then_scores_the_tasks_side_by_side(tmp_path, tasks, seeds):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HELDOUT_SEEDS", seeds)
        heldout = [c for c in _recorded_calls(tmp_path, tasks, "heldout")[0] if "evaluate_heldout.py" in c[0]]
    cores = len(os.sched_getaffinity(0))
    scored = [c for c in heldout if _arg(c, "--stage") is None]
    assert sorted(_arg(c, "--task") for c in scored) == tasks.split()  # side by side: any order
    assert all(_arg(c, "--seeds") == seeds for c in scored)
    expected = max(1, cores // len(tasks.split()))
    assert all(_arg(c, "--threads") == str(expected) for c in scored), scored
    maps = [c for c in heldout if _arg(c, "--stage") == "maps"]
    assert all(_arg(c, "--threads") == "1" for c in maps)
    listed = [int(s) for part in seeds.split(",") for s in (range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1))]
    for t in tasks.split():
        parts = [[int(s) for s in _arg(c, "--seeds").split(",")] for c in maps if _arg(c, "--task") == t]
        assert len(parts) == min(cores, len(listed))  # one lane per core, each with its share of every task
        assert sorted(s for p in parts for s in p) == sorted(listed)  # every seed once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_reproduce_heldout_on_a_gpu_makes_the_maps_in_the_scoring_runs(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEVICE", "cuda")
        heldout = [c for c in _recorded_calls(tmp_path, "1 2", "heldout")[0] if "evaluate_heldout.py" in c[0]]
    assert sorted(_arg(c, "--task") for c in heldout) == ["1", "2"] and all(_arg(c, "--stage") is None for c in heldout)


@pytest.mark.parametrize("tasks", ["2", "1 2"])
def test_reproduce_makes_heldout_maps_beside_the_fit_on_the_cores_it_leaves(tmp_path, tasks):
    calls, log = _recorded_calls(tmp_path, tasks, "fit", "heldout")
    # (the heldout step's own map lanes name their seeds one by one, the early jobs the whole range)
    early = [c for c in calls if "evaluate_heldout.py" in c[0] and _arg(c, "--stage") == "maps"
             and _arg(c, "--seeds") == "1100-1119"]
    n = len(tasks.split())
    spare = len(os.sched_getaffinity(0)) - n
    beside = max(0, min(spare, n))
    # with two fits, the core the first frees makes the maps of the tasks no spare core makes, stopped when the
    # last fit ends (here at once: whether it started them is a race)
    assert ("on the core a finished fit left" in log) == (n > 1 and beside < n)
    assert beside <= len(early) <= n
    assert sorted({_arg(c, "--task") for c in early}) == sorted(_arg(c, "--task") for c in early)  # each task once
    assert all(_arg(c, "--threads") == "1" for c in early)
    if spare >= 1:  # started before the fits (the calls themselves run side by side: their record has no order)
        assert log.index("beside the fit") < log.index("fitting the Task")
    scored = [c for c in calls if "evaluate_heldout.py" in c[0] and _arg(c, "--stage") is None]
    assert sorted(_arg(c, "--task") for c in scored) == tasks.split()
    (tmp_path / "alone").mkdir()  # a fit without the heldout step makes no maps
    assert not [c for c in _recorded_calls(tmp_path / "alone", tasks, "fit")[0] if "evaluate_heldout.py" in c[0]]


@pytest.mark.parametrize("cores,lane_tasks", [(2, ["1", "2"]), (3, ["2"])])
def test_reproduce_makes_heldout_maps_on_the_core_the_first_fit_frees_and_stops_them_with_the_last(tmp_path, cores,
                                                                                                  lane_tasks):
    """Task 2's fit ends long before Task 1's: its core makes the held-out maps that no core beside the fits makes
    (on 3 cores one makes Task 1's from the start), until Task 1's fit ends; then that job and everything it started
    are stopped (the heldout step makes what is left), and the step goes on at once."""
    calls, pids = tmp_path / "calls.txt", tmp_path / "pids.txt"
    bin_dir = tmp_path / "bin"
    write_script(bin_dir / "nproc", f"#!/bin/sh\necho {cores}\n")  # reproduce.sh's cores()
    fake = tmp_path / "python"
    fake.write_text(f"""#!/bin/sh
case "$*" in
  *fit_default.py*"--task 1"*) sleep 4 ;;
  *evaluate_heldout.py*"--task {lane_tasks[0]}"*"--seeds 1100-1119"*"--stage maps"*)
    echo "maps $*" >> {calls}; sleep 60 & echo $! >> {pids}; wait; echo "maps finished" >> {calls} ;;
  *) echo "$*" >> {calls} ;;
esac
""")
    fake.chmod(0o755)
    env = dict(os.environ, TASKS="1 2", PY=str(fake), PANTHER_DATA=str(tmp_path / "data"), TMPDIR=str(tmp_path),
               PATH=f"{bin_dir}:{os.environ['PATH']}")
    run = subprocess.run(["bash", str(REPO / "training" / "reproduce.sh"), "fit", "heldout"], capture_output=True,
                         text=True, timeout=50, env=env)
    assert run.returncode == 0, run.stderr
    log = run.stdout
    assert log.index("fitting the Task 2") < log.index("on the core a finished fit left") < log.index("held-out maps:")
    assert f"(Task {' '.join(lane_tasks)}, 1 thread" in log
    lines = calls.read_text().splitlines()
    lane = [line.split() for line in lines if line.startswith("maps ")]
    assert [_arg(c, "--task") for c in lane] == lane_tasks[:1] and _arg(lane[0], "--threads") == "1"  # stopped in it
    assert "maps finished" not in lines  # stopped, not waited for (the run ended within its timeout)
    whole = [line.split() for line in lines if not line.startswith("maps ") and "evaluate_heldout.py" in line
             and "--seeds 1100-1119 " in line + " " and "--stage maps" in line]  # the early jobs, instant here
    assert sorted(_arg(c, "--task") for c in whole + lane) == (["1"] if cores == 3 else []) + lane_tasks[:1]
    for pid in pids.read_text().split():  # nothing it started outlives it
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    scored = [line.split() for line in lines if "evaluate_heldout.py" in line and "--stage" not in line]
    assert sorted(_arg(c, "--task") for c in scored) == ["1", "2"]


def test_reproduce_pretrains_on_every_core_and_trains_folds_on_one_each(tmp_path):
    calls, _ = _recorded_calls(tmp_path, "1", "pretrain", "train")
    training = [c for c in calls if "train_specialist.py" in c[0]]
    pretrain = [c for c in training if _arg(c, "--dataset") == "903"]
    folds = [c for c in training if _arg(c, "--dataset") == "901"]
    assert len(pretrain) == 2 and len(folds) == 6  # two stages; 3 members x 2 folds
    assert {c[-1] for c in pretrain} == {f"OMP_NUM_THREADS={len(os.sched_getaffinity(0))}"}
    assert {c[-1] for c in folds} == {"OMP_NUM_THREADS=1"}  # two folds side by side: one core each


def test_reproduce_trains_specialists_with_nnunets_augmentation_workers(tmp_path):
    """Workers everywhere (env.sh's count, or the caller's): the in-process lever fell under rebuild_fast's floor;
    T_N_PROC_DA=0 still asks for it."""
    env_workers = f"nnUNet_n_proc_DA={os.environ.get('nnUNet_n_proc_DA', '2')}"  # env.sh's
    calls, _ = _recorded_calls(tmp_path, "1", "pretrain", "train")
    training = [c for c in calls if "train_specialist.py" in c[0]]
    folds = [c for c in training if _arg(c, "--dataset") == "901"]
    pretrain = [c for c in training if _arg(c, "--dataset") == "903"]
    assert len(folds) == 6 and {c[-2] for c in folds} == {env_workers}
    assert {c[-2] for c in pretrain} == {env_workers}
    for name, env, expected in (("gpu", {"DEVICE": "cuda", "nnUNet_n_proc_DA": "12"}, "nnUNet_n_proc_DA=12"),
                                ("in_process", {"T_N_PROC_DA": "0"}, "nnUNet_n_proc_DA=0")):
        (tmp_path / name).mkdir()
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            again, _ = _recorded_calls(tmp_path / name, "1", "train")
        assert {c[-2] for c in again if "train_specialist.py" in c[0]} == {expected}, name


def test_reproduce_baselines_read_the_heldout_phantoms_and_run_the_tasks_side_by_side(tmp_path):
    calls, log = _recorded_calls(tmp_path, "1 2", "baseline", nnunet=True)
    base = [c for c in calls if c[0] == "panther-ensemble"]
    assert sorted(_arg(c, "--task") for c in base) == ["1", "2"]
    data = tmp_path / "data"
    for c in base:
        t = _arg(c, "--task")
        assert _arg(c, "--heldout-dir") == f"{data}/heldout/task{t}" and _arg(c, "--test-seeds") == "1100-1119"
        assert _arg(c, "--dataset-dir").endswith(f"nnUNet_raw/Dataset90{t}_PhantomT{t}")
    assert log.count("threshold baselines, Task") == 2


def test_reproduce_side_by_side_jobs_fail_the_step_only_after_every_one_has_ended(tmp_path):
    """wait_all: fold 0's out-of-fold job fails at once, fold 1's ends later; the step fails with fold 0's status and
    only after fold 1 has ended (no job left running beside a rerun, writing the same cases)."""
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\ncase "$*" in\n  *"--folds 0"*) exit 7 ;;\n'
                    f'  *"--folds 1"*) sleep 1; echo "$*" >> {tmp_path / "ended.txt"} ;;\nesac\n')
    fake.chmod(0o755)
    run = subprocess.run(["bash", str(REPO / "training" / "reproduce.sh"), "oof"], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, TASKS="2", PY=str(fake), PANTHER_DATA=str(tmp_path / "data"),
                                              TMPDIR=str(tmp_path), DEVICE="cpu"))
    assert run.returncode == 7, (run.returncode, run.stderr)
    ended = (tmp_path / "ended.txt").read_text().splitlines()
    assert len(ended) == 1 and "--folds 1" in ended[0]  # the first member's fold 1 ran to its end; no later member started


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_reproduce_oof_runs_the_two_folds_side_by_side_on_the_cpu(tmp_path, device):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEVICE", device)
        calls, _ = _recorded_calls(tmp_path, "2", "oof")
    oof = [c for c in calls if "predict_oof.py" in c[0]]
    if device == "cpu":
        assert len(oof) == 6  # 3 members x 2 folds, one process each
        assert sorted(_arg(c, "--folds") for c in oof) == ["0", "0", "0", "1", "1", "1"]
        assert {_arg(c, "--threads") for c in oof} == {str(max(1, len(os.sched_getaffinity(0)) // 2))}
    else:  # one process per member, every fold, as before
        assert len(oof) == 3 and all(_arg(c, "--folds") is None for c in oof)


def test_reproduce_seed_writes_each_shipped_fold_once_and_before_training(tmp_path):
    """`seed` (named only: the rebuild from an empty folder trains from the pre-trained network) seeds every fold
    of the tasks asked for from model_weights/, leaves a fold that has any checkpoint (seeded, trained or
    running), and runs before `train` whatever order the steps are named in."""
    results = tmp_path / "data" / "nnUNet_results" / "Dataset901_PhantomT1"
    running = results / "nnUNetTrainerPhantomDA5__nnUNetPlansPhantom__3d_fullres" / "fold_1"
    running.mkdir(parents=True)
    (running / "checkpoint_latest.pth").write_bytes(b"")
    calls, log = _recorded_calls(tmp_path, "1", "train", "seed")
    seeded = [c for c in calls if "seed_from_shipped.py" in c[0]]
    expected = {(f"{REPO}/model_weights/Dataset901_PhantomT1/{m}", f) for m in
                ("nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres",
                 "nnUNetTrainerPhantomDA5__nnUNetPlansPhantom__3d_fullres",
                 "nnUNetTrainerPhantom__nnUNetPlansPhantomIso__3d_fullres") for f in "01"}
    expected.discard((f"{REPO}/model_weights/Dataset901_PhantomT1/{running.parent.name}", "1"))
    assert {(c[1], _arg(c, "--folds")) for c in seeded} == expected and len(seeded) == 5
    assert all(Path(c[1]).is_dir() for c in seeded)  # the shipped members exist where seed looks
    assert "Task 1 DA5 fold 1: has a checkpoint (seeded or trained): left alone" in log
    first_training = next(i for i, c in enumerate(calls) if "train_specialist.py" in c[0])
    assert max(i for i, c in enumerate(calls) if "seed_from_shipped.py" in c[0]) < first_training
    (tmp_path / "default").mkdir()  # the default steps (the rebuild) never seed
    assert not [c for c in _recorded_calls(tmp_path / "default", "1", "pretrain", "train")[0]
                if "seed_from_shipped.py" in c[0]]


def test_timings_records_runs_and_leaves_out_a_step_that_had_nothing_to_do(tmp_path):
    path = tmp_path / "timings.json"

    def record(step: str, seconds: float) -> str:
        return subprocess.run([sys.executable, str(REPO / "training" / "timings.py"), str(path), step, str(seconds), "2"],
                              capture_output=True, text=True, check=True).stdout

    record("train", 600)
    record("train", 300)
    assert "not recorded" in record("train", 0.4)  # resumed, everything already done
    entry = json.loads(path.read_text())["steps"]["train"]
    assert (entry["runs"], entry["total_s"], entry["last_s"], entry["last_tasks"]) == (2, 900.0, 300.0, "2")
    assert json.loads(path.read_text())["total_min"] == 15.0


def _write_maps(root: Path, member: str, case: str, tumour: np.ndarray) -> None:
    """A member's map as evaluate_heldout writes it: probabilities (background, tumor, pancreas), labels."""
    rest = 1.0 - tumour
    probs = np.stack([0.7 * rest, tumour, 0.3 * rest]).astype(np.float32)
    (root / member).mkdir(parents=True, exist_ok=True)
    np.savez(root / member / f"{case}.npz", probabilities=probs, labels=np.array(["background", "tumor", "pancreas"]))


def test_fold_shift_volumes_weighting_and_transferred_threshold(tmp_path, capsys):
    """training/fold_shift.py: volumes at every grid threshold as the engine's `decide` counts them, the
    spec's weighted P(tumour) from maps folders, and t' on images where the ensemble's P is a known shift of
    the folds' P (the ensemble decides at t - 0.12 what each fold decides at t)."""
    fold_shift = _training_module("fold_shift")
    from panther_ensemble.inference.ensemble import decide

    rng = np.random.default_rng(0)
    p = rng.random((6, 9, 11)).astype(np.float32)
    p.flat[:5] = np.float32(0.6)  # exactly on a grid value: counted as the engine counts it
    probs = torch.from_numpy(np.stack([1 - p, p]))
    expect = [int(decide(probs, ["background", "tumor"], "tumor", "threshold", float(t)).sum()) for t in fold_shift.GRID]
    assert fold_shift.volumes(p).tolist() == expect

    spec_doc = json.loads((REPO / "resources" / "task1.json").read_text())
    spec_doc["members"][1]["weight"] = 0.0  # DA5 dropped: its maps are not needed
    spec_doc["decision"] = {"rule": "threshold", "threshold": 0.6}  # as fitted (the shipped copy has t' since)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec_doc))
    w = {"default": 0.4, "iso": 0.5}
    ramp = np.linspace(0.0, 1.0, 4000, dtype=np.float64).reshape(10, 20, 20)
    for c in range(4):
        case = f"img_{c}"
        scale = 0.5 + 0.25 * c  # images of different tumour size
        for k in range(2):
            for m in w:
                _write_maps(tmp_path / f"f{k}", m, case, np.clip(ramp * scale, 0, 1))
        for m in w:  # the ensemble: P lowered by 0.12 everywhere (same volume at t - 0.12)
            _write_maps(tmp_path / "both", m, case, np.clip(ramp * scale - 0.12, 0, 1))
    from panther_ensemble.spec import load_spec
    pw = fold_shift.weighted_tumour_probability(tmp_path / "f0", "img_1", load_spec(spec_path))
    assert np.allclose(pw, np.clip(ramp * 0.75, 0, 1), atol=1e-6)  # both members alike: their weighted mean

    out = tmp_path / "shift.json"
    assert fold_shift.main(["--spec", str(spec_path), "--fold-maps", str(tmp_path / "f0"), str(tmp_path / "f1"),
                            "--ensemble-maps", str(tmp_path / "both"), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    # img_0's P never reaches 0.6 on a fold: no volume to match, left out
    assert doc["t"] == 0.6 and doc["t_transferred"] == pytest.approx(0.48) and doc["images_used"] == 3
    assert doc["median_ensemble_at_t_transferred_over_fold_volume_at_t"] == 1.0
    assert "0.60 on one fold's maps ~ 0.48 on the fold ensemble" in capsys.readouterr().out
    # no shift: the same threshold back
    same = fold_shift.transfer(np.array([doc["fold_volumes_voxels"][0]] * 2), np.array(doc["fold_volumes_voxels"][0]), 0.6)
    assert same["t_transferred"] == 0.6
    with pytest.raises(ValueError, match="not on the grid"):
        fold_shift.transfer(np.zeros((2, 1, len(fold_shift.GRID))), np.zeros((1, len(fold_shift.GRID))), 0.605)


def test_fold_shift_fold_runs_and_apply_to(tmp_path, capsys):
    """The specs fold_shift.make_maps predicts with (one per fold, then all folds; weight-0 members left out,
    unequal folds refused) and --apply-to, which writes t' into the shipped copy and leaves the fit's spec as
    it is, so that a second run transfers the fitted threshold again."""
    fold_shift = _training_module("fold_shift")
    raw = json.loads((REPO / "resources" / "task1.json").read_text())
    base = json.loads((REPO / "docs" / "results" / "fit_task1" / "base.json").read_text())
    raw["members"] = [dict(m, weight=1.0) for m in base["members"]]  # default, DA5, iso, whatever the release kept
    raw["members"][1]["weight"] = 0.0
    runs = fold_shift.fold_runs(raw, Path("x.json"))
    assert [n for n, _ in runs] == ["fold0", "fold1", "ensemble"]
    assert [[m["name"] for m in d["members"]] for _, d in runs] == [["default", "iso"]] * 3
    assert [[m["folds"] for m in d["members"]] for _, d in runs] == [[[0], [0]], [[1], [1]], [[0, 1], [0, 1]]]
    assert all(d["decision"] == raw["decision"] for _, d in runs)
    raw["members"][2]["folds"] = [0]
    with pytest.raises(SystemExit, match="x.json: every weighted member needs the same explicit folds"):
        fold_shift.fold_runs(raw, Path("x.json"))

    # --apply-to on maps made before (the shift of the test above: 0.60 -> 0.48)
    spec_doc = json.loads((REPO / "docs" / "results" / "fit_task1" / "spec.json").read_text())
    spec_doc["decision"] = {"rule": "threshold", "threshold": 0.6}  # as fitted (a fit may choose argmax instead)
    fitted, shipped = tmp_path / "fitted.json", tmp_path / "shipped.json"
    fitted.write_text(json.dumps(spec_doc))
    shipped.write_text(json.dumps(spec_doc, indent=2) + "\n")
    ramp = np.linspace(0.0, 1.0, 4000, dtype=np.float64).reshape(10, 20, 20)
    for c in range(3):
        for m in ("default", "DA5", "iso"):
            for k in range(2):
                _write_maps(tmp_path / f"f{k}", m, f"img_{c}", np.clip(ramp * (0.8 + 0.2 * c), 0, 1))
            _write_maps(tmp_path / "both", m, f"img_{c}", np.clip(ramp * (0.8 + 0.2 * c) - 0.12, 0, 1))
    argv = ["--spec", str(fitted), "--fold-maps", str(tmp_path / "f0"), str(tmp_path / "f1"),
            "--ensemble-maps", str(tmp_path / "both"), "--out", str(tmp_path / "s.json"), "--apply-to", str(shipped)]
    for _ in range(2):  # twice: the same t', not a second shift
        assert fold_shift.main(argv) == 0
        assert json.loads(shipped.read_text())["decision"]["threshold"] == pytest.approx(0.48)
    assert json.loads(fitted.read_text())["decision"]["threshold"] == 0.6
    assert json.loads(shipped.read_text())["members"] == spec_doc["members"]
    said = json.loads(shipped.read_text())["description"]
    assert said.startswith(spec_doc["description"]) and said.count("Decision threshold moved from the fitted 0.60 to 0.48") == 1
    with pytest.raises(SystemExit, match="give --fold-maps and --ensemble-maps, or --work"):
        fold_shift.main(["--spec", str(fitted), "--out", str(tmp_path / "s.json")])

    # a fit that chose argmax: nothing to transfer, said in --out (over a stale transfer), the shipped spec untouched
    spec_doc["decision"] = {"rule": "argmax"}
    fitted.write_text(json.dumps(spec_doc))
    before = shipped.read_text()
    assert fold_shift.main(["--spec", str(fitted), "--task", "1", "--seeds", "1300", "--work", str(tmp_path / "never"),
                            "--out", str(tmp_path / "s.json"), "--apply-to", str(shipped)]) == 0
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["decision"] == "argmax" and doc["t_transferred"] is None and "nothing to transfer" in doc["note"]
    assert shipped.read_text() == before and not (tmp_path / "never").exists()  # no maps made for nothing
    assert "not a threshold: nothing to transfer" in capsys.readouterr().out


def test_fold_shift_make_maps_passes_the_model_dir_on(tmp_path, monkeypatch):
    """--model-dir reaches every evaluate_heldout.py run (members outside model_weights/, e.g. a candidate
    unpacked from an older commit); without it the runs use evaluate_heldout.py's default, the repo's weights."""
    fold_shift = _training_module("fold_shift")
    calls = []
    monkeypatch.setattr(fold_shift.subprocess, "run", lambda argv, check: calls.append(argv))
    spec = tmp_path / "fitted.json"
    spec.write_text((REPO / "resources" / "task1.json").read_text())
    folds, ensemble = fold_shift.make_maps(spec, 1, "1300-1301", tmp_path / "w", 2, "cpu", tmp_path / "weights")
    assert folds == [tmp_path / "w" / "fold0" / "maps", tmp_path / "w" / "fold1" / "maps"]
    assert ensemble == tmp_path / "w" / "ensemble" / "maps"
    assert len(calls) == 3
    for argv in calls:
        assert argv[argv.index("--model-dir") + 1] == str(tmp_path / "weights")
        assert argv[argv.index("--seeds") + 1] == "1300-1301" and argv[argv.index("--stage") + 1] == "maps"
    calls.clear()
    fold_shift.make_maps(spec, 1, "1300-1301", tmp_path / "w2", 2)
    assert len(calls) == 3 and not any("--model-dir" in argv for argv in calls)


@pytest.mark.parametrize("task", [1, 2])
def test_shipped_spec_description_names_the_members_it_has_and_those_fitted_to_zero(task):
    """The fit writes the description; a member the fit weighted 0 is not in the spec and must not be named as
    one of its specialists (Task 2's said "default, DA5, iso" with DA5 gone)."""
    sys.path.insert(0, str(REPO / "training"))
    try:
        from fit_default import describe_members
    finally:
        sys.path.remove(str(REPO / "training"))
    shipped = json.loads((REPO / "resources" / f"task{task}.json").read_text())
    base = json.loads((REPO / "docs" / "results" / f"fit_task{task}" / "base.json").read_text())
    offered = [m["name"] for m in base["members"]]
    kept = [m["name"] for m in shipped["members"]]
    said = describe_members(shipped, offered)
    assert shipped["description"].startswith(f"Default Task {task} ensemble: {said} of ")
    for name in offered:
        assert (name in kept) == (f"gave {name}" not in said) and name in said
    assert describe_members({"members": [{"name": "a"}]}, ["a", "b", "c"]) == "a specialist (the fit gave b, c weight 0)"


@pytest.mark.parametrize("task,step,message", [
    ("3", "maps", "TASK must be 1 or 2, not '3'"),
    ("2", "fitz", "unknown step 'fitz'"),
])
def test_keep_confident_run_sh_refuses_an_unknown_task_or_step_by_name(tmp_path, task, step, message):
    """The keep-most-confident experiment's run.sh (Task 1 and, with TASK=2, Task 2): a wrong task or step is refused
    with its name; a wrong task before anything is written under $PANTHER_DATA (a wrong step only after the
    experiment's work folder exists: steps are checked as they come)."""
    run = subprocess.run(["bash", str(REPO / "docs/results/experiments/keep_confident_task1/run.sh"), step],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, TASK=task, PANTHER_DATA=str(tmp_path)))
    assert run.returncode == 2 and message in run.stderr, (run.returncode, run.stderr)
    assert (tmp_path / "exp").exists() == (task == "2")


@pytest.mark.parametrize("steps,expected", [
    (["plan"], {"901", "902", "903"}),                # the rebuild: the pre-training needs Dataset903
    (["plan", "pretrain"], {"901", "902", "903"}),
    (["plan", "seed", "train"], {"902"}),             # members seeded from shipped ones: no pre-training
    (["plan", "seed", "pretrain"], {"901", "902", "903"}),
])
def test_reproduce_plans_the_pretraining_dataset_only_when_the_members_are_trained_from_it(tmp_path, steps, expected):
    for d in ("Dataset901_PhantomT1", "Dataset902_PhantomT2", "Dataset903_PhantomPretrain"):
        (tmp_path / "data" / "nnUNet_preprocessed" / d).mkdir(parents=True)  # where the stand-in planner would write
    calls, _ = _recorded_calls(tmp_path, "2", *steps, nnunet=True)
    planned = {_arg(c, "-d") for c in calls if c[0] == "nnUNetv2_plan_and_preprocess"}
    preprocessed = {_arg(c, "-d") for c in calls if c[0] == "nnUNetv2_preprocess"}
    assert planned == expected and preprocessed == expected, calls


def test_reproduce_data_of_a_seeded_run_generates_the_tasks_it_trains_only(tmp_path):
    raw = tmp_path / "data" / "nnUNet_raw"
    for d in ("Dataset901_PhantomT1", "Dataset902_PhantomT2", "Dataset903_PhantomPretrain"):
        (raw / d).mkdir(parents=True)
        (raw / d / ".complete").write_text("")
    _, log = _recorded_calls(tmp_path, "2", "data", "seed")
    assert "Dataset902_PhantomT2: already generated" in log
    assert "Dataset901_PhantomT1" not in log and "Dataset903_PhantomPretrain" not in log
    (tmp_path / "rebuild").mkdir()
    raw2 = tmp_path / "rebuild" / "data" / "nnUNet_raw"
    for d in ("Dataset901_PhantomT1", "Dataset902_PhantomT2", "Dataset903_PhantomPretrain"):
        (raw2 / d).mkdir(parents=True)
        (raw2 / d / ".complete").write_text("")
    _, log = _recorded_calls(tmp_path / "rebuild", "2", "data")
    assert all(f"{d}: already generated" in log for d in ("Dataset901_PhantomT1", "Dataset902_PhantomT2",
                                                          "Dataset903_PhantomPretrain"))


def test_experiments_train_a_fold_with_reproduce_s_train_arguments(tmp_path):
    """training/experiment.sh exp_train_fold (the release experiments' training) against reproduce.sh's train step,
    both through the same recording stand-in interpreter: the same options and values but for what an experiment
    does not use (--pretrained: it continues seeded folds; --device: CPU only) and its own epochs; one thread."""
    calls, _ = _recorded_calls(tmp_path, "1", "train")
    shipped = next(c for c in calls if "train_specialist.py" in c[0] and _arg(c, "--fold") == "1"
                   and _arg(c, "--plans") == "nnUNetPlansPhantomIso")
    recorded = tmp_path / "exp_calls.txt"
    fake = tmp_path / "python_exp"
    fake.write_text(f'#!/bin/sh\necho "$@" "nnUNet_n_proc_DA=$nnUNet_n_proc_DA" "OMP_NUM_THREADS=$OMP_NUM_THREADS" >> {recorded}\n')
    fake.chmod(0o755)
    script = (f'PY={fake}; REPO={REPO}; source {REPO}/training/experiment.sh; '
              f'exp_train_fold {tmp_path}/runs 901 nnUNetTrainerPhantom nnUNetPlansPhantomIso 1 84 {tmp_path}/log '
              f'--cpu-autocast bf16')
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    (experiment,) = [line.split() for line in recorded.read_text().splitlines()]

    def options(call: list[str], drop: set[str]) -> dict[str, str]:
        out, i = {}, 1
        while i < len(call) - 2:  # the last two items are nnUNet_n_proc_DA=N OMP_NUM_THREADS=N
            flag = call[i]
            assert flag.startswith("--"), call
            if i + 1 < len(call) - 2 and not call[i + 1].startswith("--"):
                value, i = call[i + 1], i + 2
            else:
                value, i = "", i + 1
            if flag not in drop:
                out[flag] = value  # a repeated option: the last one counts, as argparse does
        return out

    mine = options(experiment, set())
    theirs = options(shipped, {"--pretrained", "--device"})
    assert mine.pop("--epochs") == "84" and mine.pop("--cpu-autocast") == "bf16"
    theirs.pop("--epochs")  # the shipped schedule, tested in test_collapse.py
    assert theirs.pop("--cpu-autocast") == "auto"
    assert mine == theirs, (experiment, shipped)
    assert experiment[0].endswith("training/train_specialist.py")
    assert experiment[-2:] == shipped[-2:] == [f"nnUNet_n_proc_DA={os.environ.get('nnUNet_n_proc_DA', '2')}",
                                                "OMP_NUM_THREADS=1"]


def test_run_from_copy_runs_the_script_as_it_was_and_leaves_no_copy(tmp_path):
    # what reproduce.sh and the experiments' run.sh do first: an edit of the repo's file during a run of hours must
    # not reach the running process (bash reads a script as it goes), and the arguments pass through as they were
    script = tmp_path / "repo" / "long.sh"
    script.parent.mkdir()
    padding = "".join(f": line {i} so that bash cannot have read the end of the script before the edit\n"
                      for i in range(3000))
    script.write_text(f'set -euo pipefail\nsource {REPO}/training/run_from_copy.sh\nrun_from_copy LONG_HERE "$@"\n'
                      f'echo "here=$LONG_HERE n=$# first=$1 second=$2"\n'
                      f'echo "echo EDITED" >> "$LONG_HERE/long.sh"\n{padding}echo end\n')
    copies = tmp_path / "tmp"
    copies.mkdir()
    run = subprocess.run(["bash", str(script), "a", "b c"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "TMPDIR": str(copies)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"here={script.parent} n=2 first=a second=b c", "end"]
    assert script.read_text().endswith("echo EDITED\n")  # the edit reached the repo's file, not the run
    assert list(copies.iterdir()) == []
