"""bench/phantom_speed.py's own logic: the seeds it reads and the reference tree it builds from a commit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import phantom_speed as ps  # noqa: E402


def test_seeds_are_parsed_per_task():
    assert ps.parse("1:0-2,2:5") == [(1, [0, 1, 2]), (2, [5])]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout (a clone has it)")
def test_reference_tree_holds_the_commits_phantoms_and_this_checkouts_rest():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    root = ps.reference_tree(head)
    try:
        phantoms = root / ps.PHANTOMS
        committed = subprocess.run(["git", "-C", str(ROOT), "show", f"{head}:{ps.PHANTOMS}/geometry.py"], check=True,
                                   capture_output=True, text=True).stdout
        assert (phantoms / "geometry.py").read_text() == committed
        assert {p.name for p in phantoms.glob("*.py")} >= {"geometry.py", "anatomy.py", "generate.py", "__init__.py"}
        assert (root / "src" / "panther_ensemble" / "spec.py").is_file()  # the rest of the package, from here
    finally:
        shutil.rmtree(root)
