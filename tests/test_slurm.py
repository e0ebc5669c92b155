"""The shipped Slurm job array on a real one-node Slurm: 9 cases over 3 tasks, one task killed and re-submitted.

The cluster is Debian's slurm-wlm and munge, started privately by `slurmcluster.SlurmCluster` (installed
with apt-get first when this runs as root on a machine without them; otherwise the test is skipped with
the install command). The jobs are deploy/slurm/submit.sh and its two sbatch scripts, unchanged, running
the real `panther-ensemble predict`; small synthetic images and tiny nnU-Net model folders keep it quick.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

import modelfactory as mf
import slurmcluster
from conftest import REPO

pytestmark = pytest.mark.slurm

SUBMIT = REPO / "deploy" / "slurm" / "submit.sh"
SPEC = {"version": 1, "task": 1, "members": [{"name": "A", "model": "A", "folds": [0], "mirroring": True}]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = slurmcluster.install_if_possible()
    if why:
        pytest.skip(why)
    c = slurmcluster.SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except RuntimeError as exc:
        c.stop()
        pytest.fail(f"could not start the test cluster: {exc}")
    yield c
    c.stop()


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def submit(cluster, *args, cwd: Path) -> tuple[str, str]:
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    out = cluster.run("bash", SUBMIT, *args, env=env, cwd=cwd).stdout
    words = out.split()
    return words[words.index("array") + 1], words[words.index("merge") + 1]  # "array J (...), merge M"


def wait_for(predicate, timeout: float, what: str, cluster):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s; jobs {cluster.jobs()}\n{cluster.logs()}")


def test_array_of_three_over_nine_cases_with_a_killed_task(cluster, models, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    for k in range(9):  # task 1 gets p1, p4, p7: after the small p1, p4 takes long enough to be killed in
        shape = (16, 64, 64) if k in (4, 7) else (12, 40, 44)
        sitk.WriteImage(mf.synthetic_mri(shape=shape, seed=k), str(cases / f"p{k}.mha"))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "out"
    options = [str(cases / "*.mha"), "--spec", spec, "--model-dir", models, "--device", "cpu"]

    array, merge = submit(cluster, "3", out, *options, cwd=tmp_path)
    # one (fake) GPU: the tasks run one after another; kill task 1 once it has done its first case
    log1 = out / "summary.shard-1-of-3.csv"
    wait_for(lambda: log1.exists() and any(r["status"] == "done" for r in rows_of(log1)), 900,
             "task 1 finished no case", cluster)
    cluster.run("scancel", f"{array}_1")
    states = cluster.wait_all(900)
    assert states[f"{array}_0"] == states[f"{array}_2"] == "COMPLETED", states
    assert states[f"{array}_1"] == "CANCELLED", states
    assert states[merge] == "FAILED"  # the merge after the array: task 1's unfinished cases are missing
    first = {r["case_id"]: r["status"] for r in rows_of(out / "summary.csv")}
    missing = sorted(c for c, s in first.items() if s == "missing")
    assert len(first) == 9 and missing and set(missing) <= {"p1", "p4", "p7"}, first
    written = {m.name: m.stat().st_mtime_ns for m in out.glob("*.mha")}
    assert len(written) == 9 - len(missing)

    array2, merge2 = submit(cluster, "--tasks", "1", "3", out, *options, cwd=tmp_path)
    states = cluster.wait_all(900)
    assert states[f"{array2}_1"] == "COMPLETED" and states[merge2] == "COMPLETED", (states, cluster.logs())

    summary = rows_of(out / "summary.csv")
    assert [r["case_id"] for r in summary] == [f"p{k}" for k in range(9)]
    assert {r["status"] for r in summary} == {"done"}, summary
    assert all(float(r["tumour_volume_mm3"]) >= 0 and float(r["seconds"]) > 0 for r in summary)
    masks = {m.name: m.stat().st_mtime_ns for m in out.glob("*.mha")}
    assert sorted(masks) == [f"p{k}.mha" for k in range(9)]
    assert all(masks[name] == stamp for name, stamp in written.items())  # nothing was written twice
    done = [r["case_id"] for f in out.glob("summary.shard-*-of-3.csv") for r in rows_of(f) if r["status"] == "done"]
    assert sorted(done) == [f"p{k}" for k in range(9)]  # every case done exactly once
    resubmitted = (out / "slurm-logs" / f"predict-{array2}_1.log").read_text()
    assert f"3 of 9 cases; {3 - len(missing)} finished before, {len(missing)} to predict" in resubmitted
    assert not [p for p in out.rglob("*") if "partial" in p.name]
