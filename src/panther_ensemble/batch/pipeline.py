"""The batch loop's three stages on three threads, one case in each at a time.

    reader thread   read_image(case k+1)      ->  queue (1)  ->
    main thread     ensemble.segment(case k)  ->  queue (1)  ->
    writer thread   maps, mask, preview, summary row of case k-1

The networks run on the main thread (the ensemble's runtime owns the device and the CPU threads). Any
exception of a case (bad file, out of memory, a failed write) becomes that case's "failed" row, and the
files it had written are removed; the next case goes on. The mask is written last, atomically, so a valid
mask means the case is complete (what resume looks for).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .run import BatchOptions, Case, completed_volume, eta_text, failure_row, progress_bar
from ..io import Geometry, read_image, read_labels, save_probability_map
from .summary import Row, ShardLog, one_line

log = logging.getLogger(__name__)
_END = object()


@dataclass
class _Item:
    case: Case
    image: np.ndarray | None = None
    geometry: Geometry | None = None
    result: Any = None  # api.Segmentation
    pancreas: np.ndarray | None = None
    error: BaseException | None = None
    seconds: float = 0.0  # work on this case so far (reading, predicting, writing)
    files: list[Path] = field(default_factory=list)  # written so far, removed if the case fails


def skip_finished(cases: Sequence[Case], options: BatchOptions, shard_log: ShardLog) -> list[Case]:
    """Record the finished cases as skipped (drawing a missing preview from the existing mask); return the rest."""
    todo = []
    for case in cases:
        started = time.perf_counter()
        volume = None if options.overwrite else completed_volume(case, options)
        if volume is None:
            todo.append(case)
            continue
        preview = options.preview_path(case)
        error = ""
        if preview is not None and not preview.is_file():
            error = _preview_of_existing(case, options, preview, volume)
        shard_log.append(Row(case.id, "skipped", time.perf_counter() - started, volume, error, str(case.path)))
        log.debug("%s: skipped, valid mask %s", case.id, options.mask_path(case))
    return todo


def _preview_of_existing(case: Case, options: BatchOptions, path: Path, volume: float) -> str:
    from ..preview import render_prediction

    try:
        image, geometry = read_image(case.path)
        mask, _ = read_labels(options.mask_path(case))
        render_prediction(image, mask, geometry.spacing_zyx, path, title=f"{case.id}  tumour {volume:.0f} mm3")
    except Exception as exc:  # noqa: BLE001 - a preview never fails a case
        log.warning("%s: preview failed: %s", case.id, exc)
        return one_line(f"preview: {exc}")
    return ""


def _remove(paths: Sequence[Path]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            Path(p).unlink()


class Pipeline:
    """One ensemble, one output folder, one shard log; `run(cases)` predicts them all."""

    def __init__(self, ensemble, options: BatchOptions, shard_log: ShardLog):
        self.ensemble = ensemble
        self.options = options
        self.shard_log = shard_log
        self.keep_probabilities = options.probabilities is not None or options.preview is not None
        self.pancreas_label = getattr(getattr(ensemble, "spec", None), "pancreas_label", "pancreas")
        self.loaded: queue.Queue = queue.Queue(maxsize=1)
        self.predicted: queue.Queue = queue.Queue(maxsize=1)
        self.stop = threading.Event()

    def run(self, cases: Sequence[Case]) -> None:
        reader = threading.Thread(target=self._read_all, args=(list(cases),), name="panther-reader", daemon=True)
        writer = threading.Thread(target=self._write_all, args=(len(cases),), name="panther-writer", daemon=True)
        reader.start()
        writer.start()
        try:
            while (item := self._get(self.loaded)) is not _END:
                self._put(self.predicted, self._predict(item))
            self._put(self.predicted, _END)
            writer.join()
        finally:
            self.stop.set()

    # queues that give up when another stage has stopped
    def _put(self, q: queue.Queue, item) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue):
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.5)
            except queue.Empty:
                continue
        return _END

    def _read_all(self, cases: list[Case]) -> None:
        try:
            for case in cases:
                if self.stop.is_set():
                    return
                started = time.perf_counter()
                item = _Item(case)
                try:
                    item.image, item.geometry = read_image(case.path)
                except Exception as exc:  # noqa: BLE001 - recorded as the case's failure
                    item.error = exc
                item.seconds = time.perf_counter() - started
                self._put(self.loaded, item)
        finally:
            self._put(self.loaded, _END)

    def _predict(self, item: _Item) -> _Item:
        if item.error is not None:
            return item
        started = time.perf_counter()
        keep = self.options.probabilities
        cid, spacing = item.case.id, item.geometry.spacing_zyx

        def on_member(name, probabilities, labels):
            item.files.append(save_probability_map(Path(keep) / name / f"{cid}.npz", probabilities, labels, spacing))

        try:
            result = self.ensemble.segment((item.image, item.geometry), probabilities=self.keep_probabilities,
                                           on_member=on_member if keep is not None else None)
            if result.probabilities is not None:
                if self.options.preview is not None and self.pancreas_label in result.labels:
                    index = result.labels.index(self.pancreas_label)
                    item.pancreas = (result.probabilities.argmax(0) == index).cpu().numpy()
                result.probabilities = result.probabilities.cpu() if keep is not None else None
            item.result = result
        except Exception as exc:  # noqa: BLE001 - recorded as the case's failure
            log.debug("%s: prediction failed", cid, exc_info=True)
            item.error = exc
            _remove(item.files)
        item.seconds += time.perf_counter() - started
        return item

    def _write_all(self, total: int) -> None:
        from tqdm.contrib.logging import logging_redirect_tqdm

        bar = progress_bar(total, self.options, skipped=len(self.shard_log.rows))
        started, finished, failed = time.perf_counter(), 0, 0
        try:
            with logging_redirect_tqdm() if not bar.disable else contextlib.nullcontext():
                while (item := self._get(self.predicted)) is not _END:
                    row = self._write(item)
                    self.shard_log.append(row)
                    finished += 1
                    failed += row.status == "failed"
                    bar.update(1)
                    if failed:
                        bar.set_postfix(failed=failed)
                    self._log(row, finished, total, eta_text(time.perf_counter() - started, finished, total - finished))
        finally:
            bar.close()
            self.stop.set()

    @staticmethod
    def _log(row: Row, finished: int, total: int, eta: str) -> None:
        if row.status == "failed":
            log.error("%s: failed after %.1f s: %s (%d/%d%s)", row.case_id, row.seconds, row.error, finished, total,
                      eta)
        else:
            log.info("%s: done in %.1f s, tumour %.0f mm3 (%d/%d%s)", row.case_id, row.seconds,
                     row.tumour_volume_mm3, finished, total, eta)

    def _write(self, item: _Item) -> Row:
        if item.error is not None:
            return failure_row(item.case, item.error, item.seconds)
        started = time.perf_counter()
        case, result = item.case, item.result
        try:
            if self.options.probabilities is not None:
                item.files.append(save_probability_map(Path(self.options.probabilities) / "ensemble" / f"{case.id}.npz",
                                                       result.probabilities, result.labels,
                                                       item.geometry.spacing_zyx))
            result.save(self.options.mask_path(case))
        except Exception as exc:  # noqa: BLE001 - recorded as the case's failure
            log.debug("%s: writing failed", case.id, exc_info=True)
            _remove(item.files)
            return failure_row(case, exc, item.seconds + time.perf_counter() - started)
        error = self._preview(item)
        return Row(case.id, "done", item.seconds + time.perf_counter() - started, result.tumour_volume_mm3, error,
                   str(case.path))

    def _preview(self, item: _Item) -> str:
        path = self.options.preview_path(item.case)
        if path is None:
            return ""
        from ..preview import render_prediction

        title = f"{item.case.id}  tumour {item.result.tumour_volume_mm3:.0f} mm3"
        try:
            render_prediction(item.image, item.result.mask, item.geometry.spacing_zyx, path, pancreas=item.pancreas,
                              title=title)
        except Exception as exc:  # noqa: BLE001 - a preview never fails a case
            log.warning("%s: preview failed: %s", item.case.id, exc)
            return one_line(f"preview: {exc}")
        return ""
