"""Many cases: discovery, sharding, resume, failure isolation, the pipelined loop and `predict` as users run it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import modelfactory as mf
from panther_ensemble.batch.run import (BatchOptions, Case, Shard, discover_cases, parse_shard, run_batch,
                                    valid_mask_volume)
from panther_ensemble.errors import InputError
from panther_ensemble.batch.summary import FIELDS, Row, ShardLog, merge_rows, read_logs

SPEC = {"version": 1, "task": 1, "members": [{"name": "A", "model": "A", "folds": [0], "mirroring": False}]}
CLI = Path(sys.executable).parent / "panther-ensemble"


def write_image(path: Path, seed: int, shape=(12, 40, 44)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(mf.synthetic_mri(shape=shape, seed=seed), str(path))
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Five small MRI cases and one file that is not a readable image."""
    folder = tmp_path_factory.mktemp("cohort")
    for k in range(5):
        write_image(folder / f"case_{k:02d}.mha", seed=k)
    (folder / "case_03_broken.mha").write_bytes(b"ObjectType = Image\nNDims = 3\nthis is not an image\n")
    return folder


def summary(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == FIELDS
    return {r["case_id"]: r for r in rows}


def predict(*args, spec_path: Path, models: Path, check_rc: int | None = None):
    proc = subprocess.run([CLI, "predict", *map(str, args), "--spec", spec_path, "--model-dir", models,
                           "--device", "cpu"], capture_output=True, text=True, timeout=600)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


@pytest.fixture
def spec_path(tmp_path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    return path


# ------------------------------------------------------------------------------------------------ which cases
def test_discovery_of_files_folders_globs_and_list_files(tmp_path, cohort):
    a = write_image(tmp_path / "x" / "alpha.nii.gz", 1)
    b = write_image(tmp_path / "y" / "beta.mha", 2)
    (tmp_path / "y" / "notes.json").write_text("{}")
    lst = tmp_path / "lists" / "cases.txt"
    lst.parent.mkdir()
    lst.write_text("# my cohort\n\n../y/beta.mha\n" + str(a) + "\n")
    assert [c.id for c in discover_cases([lst])] == ["alpha", "beta"]
    assert [c.id for c in discover_cases([str(tmp_path / "*" / "*.mha"), a])] == ["alpha", "beta"]
    found = discover_cases([cohort, b])  # folder + file, sorted by case id
    assert [c.id for c in found] == ["beta", "case_00", "case_01", "case_02", "case_03", "case_03_broken", "case_04"]
    assert discover_cases([b, b, str(b)]) == [Case("beta", b)]  # the same file twice is one case
    write_image(tmp_path / "z" / "beta.nii.gz", 3)
    with pytest.raises(InputError, match="case id 'beta' is also the id of"):
        discover_cases([b, tmp_path / "z"])
    with pytest.raises(InputError, match="no image file matches"):
        discover_cases([str(tmp_path / "*.nrrd")])
    with pytest.raises(InputError, match="no such file"):
        discover_cases([tmp_path / "nothing.mha"])
    with pytest.raises(InputError, match="neither an image"):
        discover_cases([tmp_path / "y" / "notes.json"])


def test_shards_partition_the_sorted_list_and_take_the_index_from_job_arrays():
    cases = [Case(f"c{k:02d}", Path(f"c{k:02d}.mha")) for k in range(10)]
    for count in (1, 3, 4, 10, 13):
        parts = [Shard(i, count).select(cases) for i in range(count)]
        flat = [c for p in parts for c in p]
        assert sorted(flat, key=lambda c: c.id) == cases and len(flat) == len(set(flat))  # exactly once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
    assert [c.id for c in Shard(1, 3).select(cases)] == ["c01", "c04", "c07"]
    assert parse_shard("2/5") == Shard(2, 5) and parse_shard(None) == Shard(0, 1)
    for var in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX"):
        assert parse_shard("/4", {var: "3"}) == Shard(3, 4)
        assert parse_shard("auto/4", {var: "1"}) == Shard(1, 4)
    assert parse_shard("/4", {"SLURM_ARRAY_TASK_ID": "0", "JOB_COMPLETION_INDEX": "2"}) == Shard(0, 4)
    assert parse_shard("1/4", {"SLURM_ARRAY_TASK_ID": "3"}) == Shard(1, 4)  # explicit index wins
    with pytest.raises(InputError, match="none of SLURM_ARRAY_TASK_ID"):
        parse_shard("/4", {})
    with pytest.raises(InputError, match=r"^SLURM_ARRAY_TASK_ID: shard index 4 is outside 0..3"):
        parse_shard("/4", {"SLURM_ARRAY_TASK_ID": "4"})
    for bad in ("3", "a/b", "1/0", "-1/3"):
        with pytest.raises(InputError):
            parse_shard(bad, {})


def test_a_valid_mask_is_uint8_with_the_inputs_geometry(tmp_path):
    image = write_image(tmp_path / "in" / "c.mha", 0)
    case = Case("c", image)
    reference = sitk.ReadImage(str(image))
    mask = np.zeros(sitk.GetArrayFromImage(reference).shape, np.uint8)
    mask[5, 10:14, 10:12] = 1

    def write(array, path, geometry_from=reference):
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(geometry_from)
        sitk.WriteImage(out, str(path), True)
        return path

    good = write(mask, tmp_path / "good.mha")
    assert valid_mask_volume(good, case) == pytest.approx(8 * np.prod(reference.GetSpacing()))
    assert valid_mask_volume(tmp_path / "none.mha", case) is None
    assert valid_mask_volume(write(mask.astype(np.float32), tmp_path / "float.mha"), case) is None
    assert valid_mask_volume(write(mask * 255, tmp_path / "255.mha"), case) is None
    shifted = sitk.Image(reference)
    shifted.SetOrigin(tuple(o + 1.0 for o in reference.GetOrigin()))
    assert valid_mask_volume(write(mask, tmp_path / "moved.mha", shifted), case) is None
    truncated = tmp_path / "truncated.mha"
    truncated.write_bytes(good.read_bytes()[:-20])
    assert valid_mask_volume(truncated, case) is None


# ------------------------------------------------------------------------------------------------ the loop
class SlowEnsemble:
    """Stands in for api.Ensemble: records when it predicts; fails on request."""

    class spec:
        pancreas_label = "pancreas"

    def __init__(self, fail_on=()):
        self.intervals, self.fail_on = {}, set(fail_on)

    def segment(self, image, probabilities=False, on_member=None):
        from panther_ensemble.api import Segmentation

        array, geometry = image
        start = time.perf_counter()
        time.sleep(0.3)
        self.intervals[float(array.sum())] = (start, time.perf_counter())
        if float(array.sum()) in self.fail_on:
            raise RuntimeError("CUDA out of memory (pretend)\nsecond line")
        mask = (array > np.percentile(array, 99)).astype(np.uint8)
        return Segmentation(mask, geometry, ("background", "tumor"))


def test_reading_and_writing_overlap_with_prediction_and_failures_are_isolated(tmp_path, monkeypatch):
    import panther_ensemble.io as pio
    import panther_ensemble.batch.pipeline as pipeline

    cases = [Case(f"c{k}", write_image(tmp_path / "in" / f"c{k}.mha", k, shape=(8, 24, 24))) for k in range(4)]
    reads, writes = {}, {}

    def slow_read(path):
        start = time.perf_counter()
        time.sleep(0.2)
        out = pio.read_image(path)
        reads[Path(path).stem] = (start, time.perf_counter(), threading.current_thread().name)
        return out

    original_write = pio.write_mask

    def slow_write(mask, geometry, path):
        start = time.perf_counter()
        time.sleep(0.2)
        out = original_write(mask, geometry, path)
        writes[Path(path).stem] = (start, time.perf_counter(), threading.current_thread().name)
        return out

    monkeypatch.setattr(pipeline, "read_image", slow_read)
    monkeypatch.setattr("panther_ensemble.api.write_mask", slow_write)
    sums = [float(pio.read_image(c.path)[0].sum()) for c in cases]
    ensemble = SlowEnsemble(fail_on=[sums[2]])
    outcome = run_batch(lambda: ensemble, cases, BatchOptions(tmp_path / "out", progress=False))
    assert [(r.case_id, r.status) for r in outcome.rows] == [("c0", "done"), ("c1", "done"), ("c2", "failed"),
                                                             ("c3", "done")]
    assert outcome.rows[2].error == "RuntimeError: CUDA out of memory (pretend) second line"
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mha")) == ["c0.mha", "c1.mha", "c3.mha"]
    predicting = {k: ensemble.intervals[s] for k, s in zip(["c0", "c1", "c2", "c3"], sums)}
    # case k+1 is read, and case k-1 written, while case k is predicted (other threads)
    assert reads["c1"][0] < predicting["c0"][1] and reads["c1"][2] == "panther-reader"
    assert writes["c0"][0] < predicting["c1"][1] and writes["c0"][2] == "panther-writer"
    assert outcome.summary == tmp_path / "out" / "summary.csv"
    rows = summary(outcome.summary)
    assert [rows[c]["status"] for c in ("c0", "c1", "c2", "c3")] == ["done", "done", "failed", "done"]
    assert float(rows["c0"]["seconds"]) >= 0.6  # read + predict + write
    assert float(rows["c1"]["tumour_volume_mm3"]) > 0 and rows["c2"]["tumour_volume_mm3"] == ""


def test_merge_takes_the_latest_row_and_keeps_the_run_that_did_the_case(tmp_path):
    with ShardLog(tmp_path, 0, 2) as a, ShardLog(tmp_path, 1, 2) as b:
        a.append(Row("x", "done", 12.0, 5.0, finished_at="2026-01-01T00:00:01"))
        b.append(Row("y", "failed", 1.0, None, "bad", finished_at="2026-01-01T00:00:02"))
        a.append(Row("x", "skipped", 0.1, 5.0, finished_at="2026-01-01T00:00:03"))
        b.append(Row("y", "done", 9.0, 0.0, finished_at="2026-01-01T00:00:04"))
    with open(tmp_path / "summary.shard-1-of-2.csv", "a") as f:
        f.write('z,done,1.0,2')  # a killed run's unfinished last line
    history = read_logs(tmp_path)
    assert len(history) == 4
    merged = merge_rows(["x", "y", "z"], history)
    assert [(r.case_id, r.status, r.seconds) for r in merged] == [("x", "done", 12.0), ("y", "done", 9.0),
                                                                   ("z", "missing", 0.0)]
    with ShardLog(tmp_path, 1, 2) as b:  # a re-run starts on a new line after the unfinished one
        b.append(Row("z", "done", 3.0, 1.0))
    assert [r.status for r in merge_rows(["x", "y", "z"], read_logs(tmp_path))] == ["done", "done", "done"]


# ------------------------------------------------------------------------------------------------ the command
def test_predict_many_resume_overwrite_and_a_failing_case(tmp_path, models, cohort, spec_path):
    out = tmp_path / "out"
    first = predict(cohort, "-o", out, "--no-progress", spec_path=spec_path, models=models, check_rc=1)
    rows = summary(out / "summary.csv")
    assert {c: r["status"] for c, r in rows.items()} == {"case_00": "done", "case_01": "done", "case_02": "done",
                                                        "case_03": "done", "case_03_broken": "failed",
                                                        "case_04": "done"}
    assert rows["case_03_broken"]["error"].startswith(str(cohort / "case_03_broken.mha") + ": cannot read image")
    assert "1 of 6 case(s) failed" in first.stderr and "Traceback" not in first.stderr
    assert all(float(rows[c]["tumour_volume_mm3"]) > 0 and float(rows[c]["seconds"]) > 0
               for c in rows if c != "case_03_broken")
    masks = sorted(out.glob("*.mha"))
    assert [m.stem for m in masks] == ["case_00", "case_01", "case_02", "case_03", "case_04"]
    assert not [p for p in tmp_path.rglob("*") if "partial" in p.name]
    stamps = {m.name: m.stat().st_mtime_ns for m in masks}

    # resume: nothing predicted again but the failed case; a mask with the wrong geometry is redone
    wrong = sitk.ReadImage(str(out / "case_01.mha"))
    wrong.SetSpacing((9.0, 9.0, 9.0))
    sitk.WriteImage(wrong, str(out / "case_01.mha"))
    stamps["case_01.mha"] = (out / "case_01.mha").stat().st_mtime_ns
    again = predict(cohort, "-o", out, "--no-progress", spec_path=spec_path, models=models, check_rc=1)
    rows = summary(out / "summary.csv")
    assert {c: r["status"] for c, r in rows.items() if c != "case_01"} == {
        "case_00": "done", "case_02": "done", "case_03": "done", "case_03_broken": "failed", "case_04": "done"}
    assert rows["case_01"]["status"] == "done" and "geometry differs" in again.stderr
    changed = {m.name for m in out.glob("*.mha") if m.stat().st_mtime_ns != stamps[m.name]}
    assert changed == {"case_01.mha"}
    log = list(csv.DictReader(open(out / "summary.shard-0-of-1.csv")))
    assert [r["status"] for r in log].count("skipped") == 4  # 4 skipped, 1 redone, 1 failed again

    # --overwrite redoes all; fixing the broken case and dropping it from the inputs gives exit 0
    predict(cohort / "case_0*.mha", "-o", out, "--overwrite", "--no-progress", spec_path=spec_path, models=models)
    third = predict(str(cohort / "case_0?.mha"), "-o", out, "--overwrite", "--no-progress", spec_path=spec_path,
                    models=models, check_rc=0)
    assert all(m.stat().st_mtime_ns != stamps[m.name] for m in out.glob("*.mha"))
    assert set(summary(out / "summary.csv")) == {f"case_0{k}" for k in range(5)} and "5 done" in third.stderr


def test_shards_do_every_case_once_and_merge(tmp_path, models, cohort, spec_path):
    out = tmp_path / "out"
    inputs = [cohort / f"case_0{k}.mha" for k in range(5)]
    for index in (2, 0):
        proc = predict(*inputs, "-o", out, "--shard", f"{index}/3", "--no-progress", spec_path=spec_path,
                       models=models, check_rc=0)
    assert "summary.csv not written yet" in proc.stderr and not (out / "summary.csv").exists()
    merged = subprocess.run([CLI, "predict", *inputs, "-o", out, "--summary-only"], capture_output=True, text=True)
    assert merged.returncode == 1 and "missing" in merged.stderr  # shard 1 has not run
    assert {c: r["status"] for c, r in summary(out / "summary.csv").items()} == {
        "case_00": "done", "case_01": "missing", "case_02": "done", "case_03": "done", "case_04": "missing"}
    proc = subprocess.run([CLI, "predict", *inputs, "-o", out, "--shard", "/3", "--no-progress", "--spec",
                           spec_path, "--model-dir", models, "--device", "cpu"], capture_output=True, text=True,
                          env={**__import__("os").environ, "JOB_COMPLETION_INDEX": "1"})
    assert proc.returncode == 0, proc.stderr
    rows = summary(out / "summary.csv")  # the last shard wrote the complete summary
    assert {r["status"] for r in rows.values()} == {"done"} and len(rows) == 5
    done_rows = [r for f in out.glob("summary.shard-*-of-3.csv") for r in csv.DictReader(open(f))
                 if r["status"] == "done"]
    assert sorted(r["case_id"] for r in done_rows) == [f"case_0{k}" for k in range(5)]  # exactly once
    # a shard re-run does nothing and loads no model
    rerun = predict(*inputs, "-o", out, "--shard", "1/3", "--no-progress", spec_path=spec_path, models=models,
                    check_rc=0)
    assert "0 to predict" in rerun.stderr and "member A" not in rerun.stderr


def test_bad_shard_and_bad_spec_are_one_line_errors(tmp_path, models, cohort, spec_path):
    proc = predict(cohort / "case_00.mha", "-o", tmp_path / "o", "--shard", "/3", spec_path=spec_path, models=models)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --shard: no shard index")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SPEC, "members": [{**SPEC["members"][0], "model": "nowhere"}]}))
    proc = predict(cohort / "case_00.mha", "-o", tmp_path / "o", spec_path=bad, models=models)
    assert proc.returncode == 2 and "model folder does not exist" in proc.stderr
    assert not list((tmp_path / "o").glob("*.mha"))


def test_progress_bar_across_cases_with_an_eta(tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="panther_ensemble")
    cases = [Case(f"c{k}", write_image(tmp_path / "in" / f"c{k}.mha", k, shape=(8, 24, 24))) for k in range(3)]
    out = tmp_path / "out"
    out.mkdir()
    write_image(out / "c0.mha", 0, shape=(8, 24, 24))  # not a valid mask (float): predicted again
    run_batch(lambda: SlowEnsemble(), cases[:2], BatchOptions(out, progress=True))
    run_batch(lambda: SlowEnsemble(), cases, BatchOptions(out, progress=True))
    err = capsys.readouterr().err
    assert "shard 0/1 (0 skipped)" in err and "2/2 [" in err  # first run: both predicted
    assert "shard 0/1 (2 skipped)" in err and "1/1 [" in err  # second: only the new case
    assert "<00:00" in err or "<?" in err  # elapsed<remaining, tqdm's ETA
    assert "c0: done in" in caplog.text and "(1/2, about 0:00:0" in caplog.text  # the log line's ETA
