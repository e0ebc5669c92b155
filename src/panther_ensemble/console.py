"""The process's stderr, shared by log lines and by io's capture of ITK's own output.

io points file descriptor 2 at a temporary file while ITK reads or writes (ITK prints to it directly). Batch
prediction reads and writes in threads, so two captures must not interleave (the second would save the first's
temporary file as "stderr" and restore it last, losing every later line), and a log line from another thread
must not land in a capture. Both take STDERR_LOCK: io around a capture, LockedStderrHandler around each line.
"""

from __future__ import annotations

import logging
import sys
import threading

STDERR_LOCK = threading.RLock()


class LockedStderrHandler(logging.StreamHandler):
    """A StreamHandler on sys.stderr that waits while io captures ITK's output."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        with STDERR_LOCK:
            super().emit(record)
