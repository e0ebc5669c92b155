"""ITK prints to file descriptor 2 on its own; each ITK call runs with it captured (console.STDERR_LOCK) and what
it said becomes one log line, or the reason of an InputError."""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


from ..console import STDERR_LOCK
from ..errors import one_line
from .stored import inflated_size, meta_header, meta_voxel_bytes

log = logging.getLogger(__name__)

def itk_read_report(path: Path, itk_text: str) -> str | None:
    """A short read that ITK printed but did not raise: MetaIO says 'data not read completely' (ideal =
    N : actual = M), and 'Uncompress failed' for a compressed MetaImage without CompressedDataSize, cut or
    not (so the stream is counted here), while ITK returns the image anyway."""
    short = re.search(r"ideal\s*=\s*(\d+)\s*:\s*actual\s*=\s*(\d+)", itk_text)
    if short:
        return f"truncated or corrupt image data (expected {short.group(1)} bytes, found {short.group(2)})"
    if "uncompress failed" not in itk_text.lower():
        return None
    try:
        fields, offset = meta_header(path)
        expected = meta_voxel_bytes(fields)
        if expected is None or fields.get("ElementDataFile") != "LOCAL":
            return None
        with open(path, "rb") as f:
            f.seek(offset)
            found = inflated_size(f, expected, gzip=False)
    except (OSError, ValueError, KeyError):
        return None
    if found < expected:
        return f"truncated or corrupt image data (expected {expected} bytes, found {found})"
    return None


def itk_call(fn: Callable[[], Any]) -> tuple[Any, BaseException | None, str]:
    """(result, exception or None, what was written to stderr meanwhile): the process's stderr is captured
    for the call, so ITK's raw lines never reach the user."""
    result, failure = None, None
    with _captured_stderr() as captured:
        try:
            result = fn()
        except (RuntimeError, MemoryError) as exc:
            failure = exc
    return result, failure, "".join(captured)


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """File descriptor 2 pointed at a temporary file for the block; the text is appended to the yielded list
    on exit. Captures nothing where descriptor 2 cannot be duplicated."""
    with STDERR_LOCK:  # one capture at a time, and no log line from another thread inside it (console.py)
        with _fd2_to_temporary_file() as captured:
            yield captured


@contextmanager
def _fd2_to_temporary_file() -> Iterator[list[str]]:
    captured: list[str] = []
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass
    try:
        saved = os.dup(2)
    except OSError:
        yield captured
        return
    try:
        sink = tempfile.TemporaryFile()
    except OSError:
        sink = open(os.devnull, "w+b")
    with sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            try:
                sink.seek(0)
                captured.append(sink.read(1 << 20).decode("utf-8", "replace"))
            except OSError:
                pass


_ITK_WARNING = re.compile(r"WARNING: In [^\n]*, line \d+\n[^\n]*?\(0x[0-9a-fA-F]+\):\s*([^\n]*)")


def log_itk_output(path: Path, text: str) -> None:
    """ITK warnings as one log line each (e.g. a NIfTI direction coerced to orthogonal); anything else ITK
    printed, at debug level."""
    if not text.strip():
        return
    for message in _ITK_WARNING.findall(text):
        log.warning("%s: %s (ITK)", path, message.strip())
    rest = _ITK_WARNING.sub("", text).strip()
    if rest:
        log.debug("%s: ITK printed: %s", path, " ".join(rest.split()))


def itk_reason(exc: BaseException) -> str:
    """The useful sentence of an ITK exception: its 'Description:' line, else its last error line without
    source location and object address. 'Reason:' lines are dropped: ITK appends the last errno, often
    unrelated (e.g. 'No such file or directory' for a short read)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ln.lower().startswith("description:"):
            return one_line(ln.split(":", 1)[1], 200)
    candidates = [ln for ln in lines if not ln.startswith(("Reason:", "Exception thrown in"))] or lines
    if not candidates:
        return type(exc).__name__
    text = re.sub(r"^(sitk::|ITK )?ERROR:\s*", "", candidates[-1])
    text = re.sub(r"^\w+\s*\(0x[0-9a-fA-F]+\):\s*", "", text)
    return one_line(text, 200)


# ---------------------------------------------------------------------------------------------------------
# Writing
