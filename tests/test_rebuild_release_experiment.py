"""docs/results/experiments/rebuild_release: run.sh's phase check. The trial itself runs on the rebuild's members and
the shipped release (its README)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "docs" / "results" / "experiments" / "rebuild_release" / "run.sh"


def test_run_refuses_an_unknown_phase_before_anything_runs(tmp_path):
    run = subprocess.run(["bash", str(RUN), "candidate", "map"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PANTHER_DATA": str(tmp_path)})
    assert run.returncode == 2 and "unknown phase 'map'" in run.stderr, run.stderr
    assert list(tmp_path.iterdir()) == []
