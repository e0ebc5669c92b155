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


# --- the rule every release experiment ships by (training/experiment.sh exp_rule_says_ship), and ship.sh's use of it

import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

METRICS = ("dice", "surface_dice_5mm", "hd95", "masd", "volume_rmse_mm3")


def head_to_head(folder: Path, new_rank: float, old_rank: float, intervals: dict | None = None) -> Path:
    """A head to head as exp_head_to_head writes it (evaluate --bootstrap --reference OLD): both mean ranks, and the
    new side's paired intervals (default: every one holding 0)."""
    folder.mkdir(parents=True)
    board = [{"name": "new", "mean_rank": new_rank}, {"name": "old", "mean_rank": old_rank}]
    (folder / "leaderboard.json").write_text(json.dumps({"leaderboard": board}))
    paired = {m: {"difference": 0.0, "low": -1.0, "high": 1.0} for m in METRICS}
    for m, (low, high) in (intervals or {}).items():
        paired[m] = {"difference": (low + high) / 2, "low": low, "high": high}
    (folder / "bootstrap.json").write_text(json.dumps({"paired": {"new": paired}}))
    return folder


def rule(folder: Path) -> subprocess.CompletedProcess:
    script = f'REPO={REPO}; source "$REPO/training/experiment.sh"; exp_rule_says_ship "$1" new old'
    return subprocess.run(["bash", "-c", script, "rule", str(folder)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PY": sys.executable})


@pytest.mark.parametrize("new_rank,old_rank,intervals,ships", [
    (1.2, 1.8, {}, True),                                         # better rank, every interval holds 0
    (1.8, 1.2, {}, False),                                        # worse rank
    (1.5, 1.5, {}, False),                                        # a tie is not better
    (1.2, 1.8, {"dice": (-0.05, -0.01)}, False),                  # Dice wholly lower: worse
    (1.2, 1.8, {"hd95": (0.5, 3.0)}, False),                      # HD95 wholly higher: worse (lower is better)
    (1.2, 1.8, {"volume_rmse_mm3": (-900.0, -100.0)}, True),      # RMSE wholly lower: better, not worse
    (1.2, 1.8, {"surface_dice_5mm": (0.01, 0.05)}, True),         # surface Dice wholly higher: better
])
def test_the_release_rule_ships_only_on_a_better_rank_with_no_interval_wholly_worse(tmp_path, new_rank, old_rank,
                                                                                     intervals, ships):
    run = rule(head_to_head(tmp_path / "h", new_rank, old_rank, intervals))
    assert (run.returncode == 0) == ships, run.stdout + run.stderr
    assert ("the rule says ship" in run.stdout) == ships
    if not ships:
        assert "the rule says no" in run.stderr


def test_ship_refuses_when_a_task_lost_its_head_to_head_and_changes_nothing(tmp_path):
    """ship.sh reads the rule from the committed head to heads before it moves or copies anything."""
    repo = tmp_path / "repo"
    here = repo / "docs" / "results" / "experiments" / "rebuild_release"
    here.mkdir(parents=True)
    shutil.copy(RUN.parent / "ship.sh", here / "ship.sh")
    (repo / "training").mkdir()
    for f in ("env.sh", "experiment.sh"):
        shutil.copy(REPO / "training" / f, repo / "training" / f)
    shipped = repo / "docs" / "results" / "heldout_task1"
    shipped.mkdir(parents=True)
    (shipped / "leaderboard.json").write_text("{}")
    for t, seeds, ranks in ((1, "1330-1349", (1.0, 2.0)), (2, "1310-1329", (1.8, 1.2))):  # Task 2 lost
        h = head_to_head(here / f"head_to_head_task{t}_seeds{seeds}", *ranks)
        for f in ("leaderboard.json", "bootstrap.json"):  # exp_head_to_head's names of the two sides
            (h / f).write_text((h / f).read_text().replace('"new"', '"candidate_rebuilt"').replace('"old"', '"release"'))
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    run = subprocess.run(["bash", str(here / "ship.sh")], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PY": sys.executable, "PANTHER_DATA": str(tmp_path / "data")})
    assert run.returncode != 0 and "head_to_head_task2_seeds1310-1329: the rule says no" in run.stderr, run.stderr
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before


def test_ship_pools_the_sets_the_readme_tables_show():
    """ship.sh's T<N>_SETS (the pools it writes) and readme_tables.py's RESCORED (the rows shown beside the pools)
    name the same rescored sets: a set added to one and not the other would show rows the pooled row leaves out."""
    import re

    sys.path.insert(0, str(REPO / "training"))
    import readme_tables

    text = (RUN.parent / "ship.sh").read_text()
    for t in (1, 2):
        found = re.search(rf"^T{t}_SETS=\$\{{T{t}_SETS-([0-9 -]*)\}}$", text, re.M)
        assert found, f"ship.sh: no T{t}_SETS default"
        assert tuple(found.group(1).split()) == readme_tables.RESCORED[t]
        for s in readme_tables.RESCORED[t]:
            assert (RUN.parent / f"rescored_task{t}_seeds{s}" / "leaderboard.json").is_file()
