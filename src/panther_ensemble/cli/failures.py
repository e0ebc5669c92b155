"""How a command ends: every failure as one `error:` line (the last line on stderr) and an exit status that
says which kind. Shared by `panther-ensemble` (every subcommand) and the container's `inference.py`.

| status | meaning |
|---|---|
| 0 | done |
| 1 | internal error (a bug): one line; the traceback above it with --verbose |
| 2 | bad input: the file and what is wrong with it (`InputError`); also argparse's usage errors |
| 3 | out of memory, after the runtime's fallbacks: which step ran out (`OutOfMemory`) |
| 128 + N | stopped by signal N (130 Ctrl-C / SIGINT, 143 SIGTERM); a partly written output is removed |

The signal handlers are installed by `handling_signals()` around a command, not at import.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from typing import Callable, Iterator

from ..errors import InputError, OutOfMemory, is_memory_error, one_line

EXIT_INTERNAL, EXIT_INPUT, EXIT_MEMORY = 1, 2, 3
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A termination signal arrived; what was being written has been removed. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int, removed: list | None = None):
        self.signum = signum
        self.removed = list(removed or [])
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def run_reported(command: Callable[[], int | None], verbose: bool = False) -> int:
    """Run `command`; turn every way it can fail into one `error:` line on stderr and an exit status."""
    try:
        return int(command() or 0)
    except InputError as exc:
        _say(f"error: {exc}")
        return EXIT_INPUT
    except Interrupted as exc:
        removed = f"; removed the partly written {', '.join(str(p) for p in exc.removed)}" if exc.removed else ""
        _say(f"error: {exc}{removed}")
        return 128 + exc.signum
    except KeyboardInterrupt:  # Ctrl-C where our handler is not installed (not the main thread)
        _say("error: interrupted")
        return 128 + signal.SIGINT
    except Exception as exc:  # noqa: BLE001 - the one place where any failure becomes one line
        if verbose:
            traceback.print_exc()
        if is_memory_error(exc):
            detail = one_line(str(exc)) or type(exc).__name__
            _say(f"error: {exc}" if isinstance(exc, OutOfMemory) else f"error: out of memory ({detail})")
            return EXIT_MEMORY
        hint = "" if verbose else " (run with --verbose for the traceback)"
        _say(f"error: internal error: {type(exc).__name__}: {one_line(str(exc), 300)}{hint}")
        return EXIT_INTERNAL


def _say(line: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    print(line, file=sys.stderr, flush=True)


@contextmanager
def handling_signals() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT remove the staging folder or partial file `io` is writing
    (`io.remove_partial_writes`) and stop the command with `Interrupted` (exit status 128 + N through
    `run_reported`). Only in the main thread (the only one that may install handlers); the previous handlers
    come back afterwards. A signal that arrives while the interpreter is inside one long C call (a large
    convolution) is acted upon when that call returns."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        if fired:  # a second signal while the first is being handled: the first one's exit stands
            return
        fired.append(signum)
        removed = []
        io = sys.modules.get("panther_ensemble.io")  # nothing can be half-written if io was never imported
        if io is not None:
            removed = io.remove_partial_writes()
        raise Interrupted(signum, removed)

    previous = {s: signal.signal(s, stop) for s in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
