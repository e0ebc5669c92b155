"""Every repository path that the documentation names in backticks exists: a table moved or a script renamed must
take its mentions along (results are moved when a release replaces them)."""

import glob
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP = ("docs/", "training/", "resources/", "model_weights/", "test/", "tests/", "bench/", "src/", "deploy/", "scripts/")


def named_paths(text: str) -> list[str]:
    """Backticked spans that are repository paths (a `path:line` keeps the path; spans with $, <>, {} are patterns
    or commands, not paths)."""
    found = []
    for m in re.finditer(r"`([^`\s]+)`", text):
        span = m.group(1).rstrip(".,;)")
        if span.startswith(TOP) and not any(c in span for c in "$<>{}"):
            found.append(span.split(":")[0])
    return found


def missing(paths: list[str], root: Path) -> list[str]:
    return sorted({p for p in paths if not (glob.glob(str(root / p)) if "*" in p else (root / p).exists())})


MARKDOWN = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.parametrize("doc", MARKDOWN)
def test_every_named_path_exists(doc):
    assert missing(named_paths((REPO / doc).read_text()), REPO) == []


def test_the_check_finds_a_missing_path_and_skips_patterns():
    text = ("see `training/reproduce.sh`, `docs/results/no_such_table/` and `tests/test_*.py`; "
            "`training/README.md:12`; `docs/results/heldout_task<N>/` and `$PANTHER_DATA/oof` are patterns")
    assert named_paths(text) == ["training/reproduce.sh", "docs/results/no_such_table/", "tests/test_*.py",
                                 "training/README.md"]
    assert missing(named_paths(text), REPO) == ["docs/results/no_such_table/"]
    assert len(MARKDOWN) > 20  # the README, training/README.md, docs/, every experiment's README
