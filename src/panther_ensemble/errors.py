"""The exceptions users see, and how a failure becomes one line.

Every check on user-supplied input (image, spec, model folder, socket layout, output location) raises
`InputError` with a message that names the file and the problem on one line. Running out of memory, after
the runtime's own fallbacks, becomes `OutOfMemory`, which says what was being done. The command-line
layers (`cli/failures.py`) print either as one `error:` line and exit non-zero without writing an output
file; docs/ERRORS.md lists every kind of bad input with its message.

No heavy imports here (no torch, no SimpleITK): this module is imported by everything.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class InputError(Exception):
    """Bad input from the user: the message is one line, names the file and says what is wrong."""

    def __init__(self, where: object, problem: str):
        # a file name may hold a newline: escaped, the message stays one line
        self.where = printable(str(where))
        self.problem = printable(problem)
        super().__init__(f"{self.where}: {self.problem}")


def printable(text: str) -> str:
    """Control characters as Python escapes ('a\\nb.mha'); every other character, non-ASCII included, as is."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class OutOfMemory(MemoryError):
    """Not enough memory for a step, after the runtime's fallbacks: `doing` says which step (e.g. "reading
    /input/x.mha"), `detail` why (sizes, or the allocator's first sentence). A MemoryError, so callers that
    catch MemoryError catch this too."""

    def __init__(self, doing: str, detail: str = ""):
        self.doing = doing
        self.detail = detail
        super().__init__(f"out of memory while {doing}" + (f": {detail}" if detail else ""))


def is_memory_error(exc: BaseException) -> bool:
    """Whether `exc` is an allocation failure: MemoryError (numpy's too), torch's OutOfMemoryError, a CPU
    allocator or ITK failing to allocate. Without importing torch."""
    if isinstance(exc, MemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA), a RuntimeError
        return True
    text = str(exc).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "cannot allocate memory",
                                   "failed to allocate memory", "std::bad_alloc"))


def one_line(text: str, limit: int = 240) -> str:
    """The first useful part of a library's message: whitespace collapsed, advice and links cut, at most
    `limit` characters."""
    text = " ".join(str(text).split())
    for cut in (" If reserved but unallocated", " See documentation", " This is an internal miniz error",
                " (Triggered internally at", " Check the documentation"):
        if cut in text:
            text = text[: text.index(cut)]
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


@contextmanager
def memory_errors_as(doing: str) -> Iterator[None]:
    """Turn an allocation failure inside the block into `OutOfMemory(doing, ...)`; anything else passes."""
    try:
        yield
    except OutOfMemory:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised unchanged unless it is an allocation failure
        if not is_memory_error(exc):
            raise
        raise OutOfMemory(doing, one_line(str(exc)) or type(exc).__name__) from exc
