"""The training steps' resume rule: an output is kept only while it is newer than everything it was made from.

Out-of-fold maps against their fold's checkpoint, held-out maps against their member's checkpoints, a fit
against its maps and base spec: a retrained member (a longer schedule, a retrain after a bug fix) must never
be scored through maps of its earlier weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


def newest_mtime(inputs: Iterable[Path]) -> float:
    """The latest modification time over the input files; a folder counts with every file below it."""
    times = [f.stat().st_mtime for p in map(Path, inputs)
             for f in ([p] if p.is_file() else (q for q in p.rglob("*") if q.is_file()))]
    if not times:
        raise FileNotFoundError(f"no input files among {[str(p) for p in inputs]}")
    return max(times)


def is_current(output: Path, inputs: Iterable[Path]) -> bool:
    """True when `output` exists and is at least as new as every input (see `newest_mtime`)."""
    output = Path(output)
    return output.is_file() and output.stat().st_mtime >= newest_mtime(list(inputs))


def write_if_changed(path: Path, text: str) -> None:
    """Write `text` to `path` unless it already holds exactly that: an unchanged input keeps its time, so
    what was made from it stays current."""
    path = Path(path)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
