"""The per-case summary of a batch run: append-only shard logs, merged into OUT/summary.csv.

Each run of a shard appends one row per case to its own log, `OUT/summary.shard-I-of-N.csv` (an
unsharded run is shard 0 of 1), one complete line per `write` on a file opened for appending, so shards
writing into the same OUT never touch each other's files and a killed run leaves at most its last line
unfinished (ignored when read). A log is a history: a case that was done, then skipped on a re-run, has
both rows. `merge` turns the logs into one row per case of the case list, written atomically to
`OUT/summary.csv`, under an exclusive lock on `OUT/.summary.lock` so that concurrent merges do not
interleave.
"""

from __future__ import annotations

import csv
import fcntl
import io
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.csv"
STATUSES = ("done", "skipped", "failed", "missing")  # missing: only in a merge, for a case no run recorded
_SHARD_LOG = re.compile(r"^summary\.shard-(\d+)-of-(\d+)\.csv$")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def one_line(text: str, limit: int = 400) -> str:
    """An error message fit for one CSV cell and one log line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass
class Row:
    """One case's outcome in one run."""

    case_id: str
    status: str  # done, skipped, failed (or missing, in a merge)
    seconds: float = 0.0  # reading + predicting + writing (done), checking (skipped), until the failure
    tumour_volume_mm3: float | None = None
    error: str = ""
    input: str = ""
    finished_at: str = field(default_factory=now)

    def cells(self) -> list[str]:
        volume = "" if self.tumour_volume_mm3 is None else f"{self.tumour_volume_mm3:.3f}"
        return [self.case_id, self.status, f"{self.seconds:.3f}", volume, one_line(self.error), self.input,
                self.finished_at]

    @classmethod
    def parse(cls, cells: Sequence[str]) -> "Row":
        case, status, seconds, volume, error, inp, finished = cells
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        return cls(case, status, float(seconds), float(volume) if volume else None, error, inp, finished)


FIELDS = tuple(f.name for f in fields(Row))


def _csv_line(cells: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(list(cells))
    return buffer.getvalue()


def shard_log_path(output: Path, index: int, count: int) -> Path:
    return Path(output) / f"summary.shard-{index}-of-{count}.csv"


class ShardLog:
    """The append-only log of one shard; `append` is safe to call from one thread at a time."""

    def __init__(self, output: Path, index: int, count: int):
        self.path = shard_log_path(output, index, count)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if os.fstat(self._fd).st_size == 0:
            os.write(self._fd, _csv_line(FIELDS).encode())
        else:  # a killed run may have left half a line: start on a fresh one
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")
        self.rows: list[Row] = []

    def append(self, row: Row) -> None:
        os.write(self._fd, _csv_line(row.cells()).encode())
        self.rows.append(row)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ShardLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_logs(output: Path) -> list[Row]:
    """Every well-formed row of every shard log in `output`, oldest first."""
    rows: list[tuple[str, int, Row]] = []
    for path in sorted(Path(output).glob("summary.shard-*-of-*.csv")):
        if not _SHARD_LOG.match(path.name):
            continue
        with open(path, newline="") as f:
            for n, cells in enumerate(csv.reader(f)):
                if n == 0 or len(cells) != len(FIELDS):
                    continue
                try:
                    row = Row.parse(cells)
                except ValueError:
                    log.debug("%s: ignoring malformed line %d", path, n + 1)
                    continue
                rows.append((row.finished_at, len(rows), row))
    return [r for _, _, r in sorted(rows, key=lambda t: (t[0], t[1]))]


def merge_rows(case_ids: Sequence[str], history: Sequence[Row]) -> list[Row]:
    """One row per case id, in the given order: its latest row; when that is "skipped", the run that did
    the case (its "done" row, with its seconds) if the logs still hold it; "missing" when no run recorded it."""
    latest: dict[str, Row] = {}
    done: dict[str, Row] = {}
    for row in history:  # oldest first
        latest[row.case_id] = row
        if row.status == "done":
            done[row.case_id] = row
    merged = []
    for cid in case_ids:
        row = latest.get(cid)
        if row is None:
            merged.append(Row(cid, "missing", error="no run has recorded this case yet"))
        elif row.status == "skipped" and cid in done:
            merged.append(Row(**{**asdict(done[cid]), "tumour_volume_mm3": row.tumour_volume_mm3}))
        else:
            merged.append(row)
    return merged


def write_summary(output: Path, rows: Sequence[Row]) -> Path:
    """OUT/summary.csv, replaced atomically."""
    path = Path(output) / SUMMARY_NAME
    tmp = path.with_name(f".{SUMMARY_NAME}.partial-{os.getpid()}")
    tmp.write_text(_csv_line(FIELDS) + "".join(_csv_line(r.cells()) for r in rows))
    os.replace(tmp, path)
    return path


@contextmanager
def merge_lock(output: Path) -> Iterator[None]:
    """An exclusive advisory lock on OUT/.summary.lock (shards merging at the same moment take turns)."""
    Path(output).mkdir(parents=True, exist_ok=True)
    with open(Path(output) / ".summary.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def merge(output: Path, case_ids: Sequence[str], write_incomplete: bool = True) -> tuple[list[Row], Path | None]:
    """Merge the shard logs in `output` into one row per case; write OUT/summary.csv unless some case is
    missing and not `write_incomplete`. Returns (rows, the summary's path or None)."""
    with merge_lock(output):
        rows = merge_rows(case_ids, read_logs(output))
        complete = all(r.status != "missing" for r in rows)
        if not complete and not write_incomplete:
            return rows, None
        return rows, write_summary(output, rows)


def counts(rows: Iterable[Row]) -> dict[str, int]:
    out = {s: 0 for s in STATUSES}
    for r in rows:
        out[r.status] += 1
    return out
