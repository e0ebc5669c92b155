"""Where and how the work runs: device, CPU threads, precision, accumulator dtypes, out-of-memory fallback,
timings and memory.

The only module that decides devices, dtypes and mixed precision or catches out-of-memory errors: a
`Runtime` is made once per ensemble and the engine asks it; the stage modules take devices, dtypes and
contexts as arguments. Process-wide torch settings (thread count, cuDNN autotuning) are applied only by
`Runtime.configure_torch`, which the public API calls once, explicitly. Everything here is exercised on
the CPU in the tests (the CUDA branches through the same functions, with the out-of-memory condition
injected).
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

import torch

from .cpus import available_cpus
from .errors import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")


def choose_device(requested: str = "auto") -> torch.device:
    """The compute device for `auto`, `cpu` or `cuda` (no side effects)."""
    if requested not in ("auto", "cpu", "cuda"):
        raise InputError("--device", f"must be auto, cpu or cuda, got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if requested == "cuda":
        raise InputError("--device", "cuda was requested but no CUDA device is available")
    return torch.device("cpu")


@dataclass(frozen=True)
class Runtime:
    """Every device, precision and memory decision of one ensemble's runs."""

    device: torch.device
    threads: int = 1

    @classmethod
    def create(cls, requested: str = "auto", threads: int | None = None) -> "Runtime":
        return cls(choose_device(requested), int(threads or available_cpus()))

    def configure_torch(self) -> None:
        """Process-wide torch settings for this runtime: CPU threads (a container sees the host's cores, not
        its quota) and cuDNN autotuning on CUDA (fixed tile shapes: the first tile pays for the search)."""
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        else:
            torch.backends.cudnn.benchmark = True

    def placements(self) -> list["Placement"]:
        return fallback_placements(self.device)

    def autocast(self, compute: torch.device) -> AbstractContextManager:
        """nnU-Net's mixed precision: float16 autocast for the networks on CUDA, plain float32 on the CPU."""
        if compute.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    def batch_mirrors(self, compute: torch.device) -> bool:
        """All mirrored copies of a tile in one forward call: faster on a GPU, no gain on a CPU."""
        return compute.type == "cuda"

    @staticmethod
    def accumulate_dtype(resampling_mode: str) -> torch.dtype:
        """faithful: nnU-Net's float16 accumulators (its rounding, bit for bit); fast: float32."""
        return torch.float16 if resampling_mode == "faithful" else torch.float32

    def prepare_network(self, network: torch.nn.Module) -> None:
        if self.device.type == "cpu":
            use_onednn_convolutions(network)

    def place(self, name: str, move: Callable[[torch.device], object]) -> torch.device:
        """Move a member's weights to the compute device; in host memory when they do not fit there."""
        try:
            move(self.device)
            return self.device
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is an out-of-memory error
            if not is_out_of_memory(exc):
                raise
        free_device_memory(self.device)
        move(torch.device("cpu"))
        log.warning("member %s: weights do not fit on %s; kept in host memory and moved per case", name, self.device)
        return torch.device("cpu")


def use_onednn_convolutions(network: torch.nn.Module) -> int:
    """On the CPU, run the network's 3D convolutions through oneDNN. PyTorch's CPU dispatcher sends most
    3D convolutions of nnU-Net-sized networks to its generic `slow_conv3d` kernel, several times slower than
    oneDNN on the same data (bench/README.md); results differ by float32 rounding only. Returns how many
    convolutions were switched. Only for networks that stay on the CPU."""
    if not torch.backends.mkldnn.is_available():
        return 0
    switched = 0
    for module in network.modules():
        if type(module) is torch.nn.Conv3d and module.padding_mode == "zeros":
            module.forward = _onednn_forward(module)
            switched += 1
    return switched


def _onednn_forward(conv: torch.nn.Conv3d):
    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or conv.weight.device.type != "cpu":
            return torch.nn.Conv3d.forward(conv, x)  # moved elsewhere or another dtype: the stock path
        return torch.mkldnn_convolution(x.contiguous(), conv.weight, conv.bias, conv.padding, conv.stride,
                                        conv.dilation, conv.groups)

    return forward


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    # some backends raise a plain RuntimeError for allocation failures
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class Placement:
    """Where one member's prediction runs: networks and tiles on `compute`, accumulators on `accumulate`."""

    compute: torch.device
    accumulate: torch.device

    def __str__(self) -> str:
        return f"compute on {self.compute}, accumulate on {self.accumulate}"


def fallback_placements(device: torch.device) -> list[Placement]:
    """Placements to try in order: all on the device; accumulators in host memory; all on the CPU."""
    cpu = torch.device("cpu")
    if device.type == "cpu":
        return [Placement(cpu, cpu)]
    return [Placement(device, device), Placement(device, cpu), Placement(cpu, cpu)]


def run_with_fallback(what: str, placements: list[Placement], fn: Callable[[Placement], T]) -> T:
    """Run `fn` on the first placement that does not run out of memory; say in the log when falling back."""
    for i, placement in enumerate(placements):
        try:
            return fn(placement)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is an out-of-memory error
            if not is_out_of_memory(exc) or i == len(placements) - 1:
                raise
            free_device_memory(placement.compute)
            log.warning("%s: out of memory (%s); retrying with %s", what, placement, placements[i + 1])
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------------
# Accounting


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_gpu_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


@dataclass
class StageLog:
    """Per-stage wall times of one case, with peak memory, for the log and for benchmarks."""

    device: torch.device
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            gpu = peak_gpu_mb(self.device)
            log.info("%-34s %7.2f s   peak RSS %6.0f MB%s", name, elapsed, peak_rss_mb(),
                     f"   peak GPU {gpu:6.0f} MB" if gpu is not None else "")

    def summary(self) -> str:
        total = sum(v for k, v in self.seconds.items() if "/" not in k)
        return f"total {total:.2f} s, peak RSS {peak_rss_mb():.0f} MB" + (
            f", peak GPU {peak_gpu_mb(self.device):.0f} MB" if self.device.type == "cuda" else "")


class TileProgress:
    """Progress of one member's sliding window: tiles done of the total, time elapsed and an estimate of the
    time left. On a terminal (stderr is a TTY) a tqdm bar; otherwise (platform logs, files, pipes) one log
    line at each 10 % step, e.g. `predict A: tile 12/120 (10 %), 3.1 s elapsed, ETA 28 s`.

    Called as `progress(done, total)` after each tile (or batch of tiles); the clock starts when the object
    is made, just before the first tile. `interactive` and `clock` are for tests.
    """

    def __init__(self, description: str, *, interactive: bool | None = None,
                 clock: Callable[[], float] = time.perf_counter, steps: int = 10):
        self.description = description
        self.interactive = _stderr_is_terminal() if interactive is None else interactive
        self.clock = clock
        self.steps = steps
        self.started = clock()
        self.bar = None
        self.last_step = 0

    def __call__(self, done: int, total: int) -> None:
        if total <= 0:
            return
        if self.interactive:
            self._bar(done, total)
            return
        done = min(done, total)
        step = done * self.steps // total
        if step > self.last_step:
            self.last_step = step
            elapsed = self.clock() - self.started
            eta = elapsed / done * (total - done) if done else float("nan")
            log.info("%s: tile %d/%d (%d %%), %s elapsed, ETA %s", self.description, done, total,
                     100 * done // total, duration_text(elapsed), duration_text(eta))

    def _bar(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.description, unit="tile", leave=False, file=sys.stderr,
                            dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __del__(self) -> None:  # a prediction that stopped half-way (out of memory, interrupted)
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def duration_text(seconds: float) -> str:
    """'4.2 s', '2 min 05 s', '1 h 02 min'; '?' when unknown."""
    if not seconds == seconds or seconds < 0:  # NaN or negative
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
