"""training/timed_rebuild.sh through the experiments that use it (docs/results/experiments/rebuild_*/run.sh): a
misspelt phase stops run.sh before anything runs (no clone, no data folder). The rebuilds themselves run for hours
(their READMEs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "docs" / "results" / "experiments"
USERS = sorted(p.parent.name for p in EXPERIMENTS.glob("rebuild_*/run.sh") if "timed_rebuild.sh" in p.read_text())


def test_the_timed_rebuilds_share_one_body():
    assert "rebuild_levers" in USERS and len(USERS) >= 2, USERS


@pytest.mark.parametrize("name", USERS)
def test_run_refuses_an_unknown_phase_before_anything_runs(tmp_path, name):
    # the misspelt phase alone: were the check gone, nothing would run but the clone (never a rebuild in a test)
    run = subprocess.run(["bash", str(EXPERIMENTS / name / "run.sh"), "trian1"], capture_output=True,
                         text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PANTHER_DATA": str(tmp_path / "data"),
                                                     "TMPDIR": str(tmp_path)})
    assert run.returncode == 2 and "unknown phase 'trian1'" in run.stderr, run.stderr
    assert not (tmp_path / "data").exists()
    assert list(tmp_path.iterdir()) == []  # run_from_copy's copy is gone too
