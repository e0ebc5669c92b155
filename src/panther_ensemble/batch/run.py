"""Many cases with one loaded ensemble: discovery, sharding, resume, and a pipelined loop.

    cases = discover_cases(["scans/", "more/*.mha", "list.txt"])       # sorted by case id
    shard = parse_shard("/4")                                           # index from the job array
    outcome = run_batch(lambda: Ensemble.for_task(1), cases, BatchOptions(Path("out"), shard=shard))

- Inputs are image files, folders of them, glob patterns (expanded here, so a job script can pass them
  quoted), and list files (`.txt`, `.lst`, `.list`: one such input per line, relative to the list's
  folder; blank lines and `#` comments ignored). Case ids (`io.case_id`) must be unique.
- Sharding: case k of the sorted list belongs to shard k mod COUNT. Every case lands in exactly one shard.
- Resume: a case whose mask is valid (a readable uint8 0/1 image with the input's geometry; with
  `probabilities`, also its ensemble map) is skipped without loading any model, unless `overwrite`.
- The loop: a reader thread reads the next case while the ensemble predicts this one; a writer thread
  writes the last one (probability maps, mask, preview). A failing case is recorded with its error and the
  others go on. Rows go to the shard's log and are merged into OUT/summary.csv (`summary.py`).
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..io import IMAGE_SUFFIXES, case_id, is_image_file, read_geometry, read_labels, scan_images
from .summary import Row, ShardLog, counts, merge, one_line

log = logging.getLogger(__name__)

LIST_SUFFIXES = (".txt", ".lst", ".list")
#: job-array index variables, in the order they are consulted: Slurm, Kubernetes Indexed Job, AWS Batch
SHARD_INDEX_VARIABLES = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")
GEOMETRY_TOLERANCE = dict(spacing_atol=1e-4, origin_atol=1e-3, direction_atol=1e-4)


@dataclass(frozen=True)
class Case:
    id: str
    path: Path


# --------------------------------------------------------------------------------------------------
# which cases
# --------------------------------------------------------------------------------------------------
def discover_cases(inputs: Iterable[str | Path]) -> list[Case]:
    """Cases named by files, folders, globs and list files, sorted by case id; InputError on a bad input or
    on two different files with the same case id (their masks would collide)."""
    found: dict[str, Path] = {}
    for item in inputs:
        for path in _expand(str(item), None, 0):
            cid = case_id(path)
            if cid in found and found[cid].resolve() != path.resolve():
                raise InputError(path, f"case id {cid!r} is also the id of {found[cid]}: masks would collide")
            found.setdefault(cid, path)
    return [Case(cid, found[cid]) for cid in sorted(found)]


def _expand(item: str, base: Path | None, depth: int) -> list[Path]:
    path = Path(item).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if path.is_dir():
        images = list(scan_images(path).values())
        if not images:
            raise InputError(path, "folder holds no image")
        return images
    if path.is_file():
        if is_image_file(path):
            return [path]
        if path.name.lower().endswith(LIST_SUFFIXES) and depth < 4:
            return _read_list(path, depth)
        raise InputError(path, f"neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a list file "
                               f"({', '.join(LIST_SUFFIXES)}, one input per line)")
    if glob.has_magic(str(path)):
        matches = [Path(m) for m in sorted(glob.glob(str(path)))]
        images = [m for m in matches if is_image_file(m)]
        if not images:
            raise InputError(item, "no image file matches this pattern")
        return images
    raise InputError(path, "no such file or folder")


def _read_list(path: Path, depth: int) -> list[Path]:
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out += _expand(line, path.parent, depth + 1)
    if not out:
        raise InputError(path, "list file names no image")
    return out


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @property
    def tag(self) -> str:
        return f"shard {self.index}/{self.count}"

    def select(self, cases: Sequence[Case]) -> list[Case]:
        """Case k of the sorted list when k mod count == index."""
        return [c for k, c in enumerate(cases) if k % self.count == self.index]


def parse_shard(text: str | None, environ: Mapping[str, str] = os.environ) -> Shard:
    """`INDEX/COUNT`; `/COUNT` (or `auto/COUNT`) takes INDEX from the job array's variable
    (SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX, the first one set)."""
    if text is None:
        return Shard()
    index_text, sep, count_text = text.partition("/")
    try:
        count = int(count_text)
    except ValueError:
        count = 0
    if not sep or count < 1:
        raise InputError("--shard", f"expected INDEX/COUNT (e.g. 3/8), or /COUNT to take INDEX from "
                                    f"{', '.join(SHARD_INDEX_VARIABLES)}; got {text!r}")
    source = "--shard"
    if index_text.strip() in ("", "auto"):
        source = next((v for v in SHARD_INDEX_VARIABLES if environ.get(v, "").strip()), "")
        if not source:
            raise InputError("--shard", f"no shard index given and none of {', '.join(SHARD_INDEX_VARIABLES)} "
                                        "is set")
        index_text = environ[source]
    try:
        index = int(index_text)
    except ValueError:
        raise InputError(source, f"shard index must be an integer, got {index_text!r}") from None
    if not 0 <= index < count:
        raise InputError(source, f"shard index {index} is outside 0..{count - 1} (COUNT {count}); number the "
                                 "job array from 0, e.g. sbatch --array=0-" f"{count - 1}")
    return Shard(index, count)


# --------------------------------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchOptions:
    output: Path
    probabilities: Path | None = None  # --save-probabilities DIR
    preview: Path | None = None  # --preview DIR
    overwrite: bool = False
    shard: Shard = Shard()
    progress: bool | None = None  # None: a progress bar only on a terminal

    def mask_path(self, case: Case) -> Path:
        return Path(self.output) / f"{case.id}.mha"

    def preview_path(self, case: Case) -> Path | None:
        return None if self.preview is None else Path(self.preview) / f"{case.id}.png"


def valid_mask_volume(mask_path: Path, case: Case) -> float | None:
    """Tumour volume (mm3) of the mask at `mask_path` when it is a readable uint8 0/1 image with the geometry
    of the case's input; None otherwise (no file, unreadable, other type, other geometry)."""
    if not mask_path.is_file():
        return None
    try:
        geometry = read_geometry(case.path)
        mask, mask_geometry = read_labels(mask_path)
    except InputError as exc:
        log.debug("%s: not a valid mask (%s)", mask_path, exc)
        return None
    if mask.dtype != np.uint8 or mask.max(initial=0) > 1:
        log.info("%s: not a uint8 0/1 mask: predicting %s again", mask_path, case.id)
        return None
    if mask_geometry.mismatch(geometry, **GEOMETRY_TOLERANCE) is not None:
        log.info("%s: geometry differs from %s: predicting %s again", mask_path, case.path, case.id)
        return None
    return float(np.count_nonzero(mask)) * geometry.voxel_volume_mm3


def completed_volume(case: Case, options: BatchOptions) -> float | None:
    """The tumour volume of an already finished case (valid mask, and its probability map when asked for)."""
    if options.probabilities is not None and not (Path(options.probabilities) / "ensemble" / f"{case.id}.npz").is_file():
        return None
    return valid_mask_volume(options.mask_path(case), case)


# --------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------
@dataclass
class BatchOutcome:
    rows: list[Row]  # this run's rows, in the order they finished
    merged: list[Row] = field(default_factory=list)  # one per case of the whole list (every shard)
    summary: Path | None = None

    @property
    def failed(self) -> int:
        return counts(self.rows)["failed"]


def run_batch(make_ensemble: Callable[[], object], cases: Sequence[Case], options: BatchOptions) -> BatchOutcome:
    """Predict this shard's cases that are not finished; record every case; merge the summary.

    `make_ensemble` is called only when some case needs predicting (a finished shard loads no model)."""
    from .pipeline import Pipeline, skip_finished

    mine = options.shard.select(cases)
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)
    with ShardLog(output, options.shard.index, options.shard.count) as shard_log:
        todo = skip_finished(mine, options, shard_log)
        log.info("%s: %d of %d cases; %d finished before, %d to predict", options.shard.tag, len(mine), len(cases),
                 len(mine) - len(todo), len(todo))
        if todo:
            Pipeline(make_ensemble(), options, shard_log).run(todo)
        rows = list(shard_log.rows)
    outcome = BatchOutcome(rows)
    finish_summary(outcome, cases, options)
    return outcome


def finish_summary(outcome: BatchOutcome, cases: Sequence[Case], options: BatchOptions,
                   write_incomplete: bool | None = None) -> None:
    """Merge every shard's log into OUT/summary.csv (a sharded run writes it only once every case has a row;
    the merge step writes it in any case), and the contact sheet of the previews."""
    if write_incomplete is None:
        write_incomplete = options.shard.count == 1
    outcome.merged, outcome.summary = merge(Path(options.output), [c.id for c in cases], write_incomplete)
    c = counts(outcome.merged)
    if outcome.summary is not None:
        log.info("%s: %d done, %d skipped, %d failed, %d missing", outcome.summary, c["done"], c["skipped"],
                 c["failed"], c["missing"])
    else:
        log.info("summary.csv not written yet: %d case(s) of other shards have no row; after the last shard, "
                 "run the same command with --summary-only", c["missing"])
    if options.preview is not None:
        from ..preview import contact_sheet

        entries = [(_caption(r), options.preview_path(case)) for r, case in zip(outcome.merged, cases)
                   if options.preview_path(case).is_file()]
        if entries:
            pages = contact_sheet(entries, Path(options.preview) / "contact_sheet.png")
            log.info("contact sheet: %s", ", ".join(str(p) for p in pages))


def _caption(row: Row) -> str:
    volume = "" if row.tumour_volume_mm3 is None else f", {row.tumour_volume_mm3:.0f} mm3"
    return f"{row.case_id} ({row.status}{volume})"


def failure_row(case: Case, exc: BaseException, seconds: float) -> Row:
    message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    return Row(case.id, "failed", seconds, None, one_line(message), str(case.path))


def progress_bar(total: int, options: BatchOptions, skipped: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="case", desc=f"{options.shard.tag} ({skipped} skipped)", file=sys.stderr,
                disable=None if options.progress is None else not options.progress, dynamic_ncols=True,
                smoothing=0.1)


def eta_text(elapsed: float, finished: int, remaining: int) -> str:
    """", about H:MM:SS left" from the mean wall time per finished case so far."""
    if finished <= 0 or remaining <= 0:
        return ""
    seconds = int(round(elapsed / finished * remaining))
    return f", about {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d} left"
