"""Where and how the work runs: device, CPU threads, precision, accumulator dtypes, how the networks' forward
passes run (`ForwardSettings`), tiles per forward call, out-of-memory fallback, timings and memory.

The only module that decides devices, dtypes and mixed precision or catches out-of-memory errors: a
`Runtime` is made once per ensemble and the engine asks it; the stage modules take devices, dtypes and
contexts as arguments. Process-wide torch settings (thread count, cuDNN autotuning) are applied only by
`Runtime.configure_torch`, which the public API calls once, explicitly. Everything here is exercised on
the CPU in the tests (the CUDA branches through the same functions, with the out-of-memory condition
injected).
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, fields, replace
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


FORWARD_ENV = "PANTHER_FORWARD"  # like nnU-Net's nnUNet_compile: forward settings without code changes
# A forward pass's memory on the GPU over the meta-device count of its activations (forward_cost.py): 1.39
# measured on the H200 for ResEnc-L at 160 x 192 x 256 under float16 autocast (3.75 GB used beyond weights
# and case tensors vs 2.69 GB counted: cuDNN workspaces, autocast's float16 copies of the weights); rounded up.
TILE_MEMORY_FACTOR = 1.5
_AUTOCAST = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float32": None, "fp32": None, "none": None}


@dataclass(frozen=True)
class ForwardSettings:
    """How the networks' forward passes run: every lever of bench/README.md's "Forward efficiency" section,
    with the default its measurement chose. `parse` reads the text form used by `PANTHER_FORWARD`,
    `Runtime.create(forward=...)` and the benchmarks: comma-separated `key=value` or bare `key` (true),
    e.g. "channels_last,compile=max-autotune,tiles=2,autocast=bf16".
    """

    autocast: str = "float16"  # CUDA autocast dtype: float16 (tensor cores on every GPU, the T4 included), bfloat16
    #                            (not on a T4), float32 (none)
    cpu_autocast: str = "off"  # CPU: off = float32, nnU-Net's CPU path; bf16 = bfloat16 autocast, only where oneDNN
    #                            runs it natively (emulated it is several times slower); auto = bf16 where native
    tiles: int = 0  # tiles per forward call in fast mode: 0 = the memory policy (CUDA) or 1 (CPU); n = fixed
    max_tiles: int = 4  # the memory policy's cap
    channels_last: bool = False  # channels_last_3d weights, so convolutions run and return NDHWC
    compile: str = "none"  # torch.compile mode: none, default, reduce-overhead (CUDA graphs), max-autotune
    cudnn_benchmark: bool = True  # cuDNN autotuning (the first tile of each shape pays for the search)
    onednn: bool = True  # CPU: Conv3d through oneDNN instead of PyTorch's slow_conv3d

    @classmethod
    def parse(cls, text: str | None) -> "ForwardSettings":
        return cls().updated(text)

    def updated(self, text: str | None) -> "ForwardSettings":
        known = {f.name: f.type for f in fields(self)}
        changes: dict = {}
        for item in filter(None, (part.strip() for part in (text or "").split(","))):
            key, _, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if key not in known:
                raise InputError(FORWARD_ENV, f"unknown forward setting {key!r} (known: {', '.join(known)})")
            changes[key] = _setting_value(key, known[key], value.strip() if _ else "1")
        return replace(self, **changes)

    def describe(self) -> str:
        default = ForwardSettings()
        diff = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)]
        return ",".join(diff) or "defaults"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST[self.autocast]


def _setting_value(key: str, kind: str, value: str):
    if kind == "bool":
        if value.lower() not in ("1", "0", "true", "false", "t", "f", "yes", "no", "on", "off"):
            raise InputError(FORWARD_ENV, f"{key} must be true or false, got {value!r}")
        return value.lower() in ("1", "true", "t", "yes", "on")
    if kind == "int":
        number = 0 if value == "auto" else int(value) if value.isdigit() else -1
        if number < 0:
            raise InputError(FORWARD_ENV, f"{key} must be a whole number >= 0 (or auto), got {value!r}")
        return number
    if key == "autocast" and value.lower() not in _AUTOCAST:
        raise InputError(FORWARD_ENV, f"autocast must be one of {', '.join(_AUTOCAST)}, got {value!r}")
    if key == "cpu_autocast":
        value = {"1": "bf16", "true": "bf16", "on": "bf16", "bfloat16": "bf16", "0": "off", "false": "off",
                 "none": "off", "float32": "off", "fp32": "off"}.get(value.lower(), value.lower())
        if value not in ("off", "bf16", "auto"):
            raise InputError(FORWARD_ENV, f"cpu_autocast must be off, bf16 or auto, got {value!r}")
    if key == "compile":
        value = {"1": "default", "true": "default", "0": "none", "false": "none"}.get(value.lower(), value)
        if value not in ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
            raise InputError(FORWARD_ENV, f"compile must be none or a torch.compile mode, got {value!r}")
    return value.lower()


@dataclass(frozen=True)
class Runtime:
    """Every device, precision and memory decision of one ensemble's runs."""

    device: torch.device
    threads: int = 1
    forward: ForwardSettings = field(default_factory=ForwardSettings)

    @classmethod
    def create(cls, requested: str = "auto", threads: int | None = None,
               forward: ForwardSettings | str | None = None) -> "Runtime":
        """`forward`: settings, their text form, or None for $PANTHER_FORWARD (unset: the defaults)."""
        if not isinstance(forward, ForwardSettings):
            forward = ForwardSettings.parse(os.environ.get(FORWARD_ENV) if forward is None else forward)
        if forward.cpu_autocast == "bf16" and not native_bf16():
            raise InputError(FORWARD_ENV, "cpu_autocast=bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX) "
                                          "for oneDNN, so it would run several times slower; use off or auto")
        return cls(choose_device(requested), int(threads or available_cpus()), forward)

    def configure_torch(self) -> None:
        """Process-wide torch settings for this runtime: CPU threads (a container sees the host's cores, not
        its quota) and cuDNN autotuning on CUDA (fixed tile shapes: the first tile pays for the search)."""
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        else:
            torch.backends.cudnn.benchmark = self.forward.cudnn_benchmark

    def placements(self) -> list["Placement"]:
        return fallback_placements(self.device, batched=self._may_batch())

    def autocast(self, compute: torch.device) -> AbstractContextManager:
        """nnU-Net's mixed precision: float16 autocast for the networks on CUDA, plain float32 on the CPU
        (bfloat16 autocast there only when `cpu_autocast` asks for it)."""
        dtype = self.compute_dtype(compute)
        if dtype == torch.float32:
            return nullcontext()
        return torch.autocast("cuda" if compute.type == "cuda" else "cpu", dtype=dtype)

    def compute_dtype(self, compute: torch.device) -> torch.dtype:
        if compute.type == "cuda":
            return self.forward.autocast_dtype or torch.float32
        if self.forward.cpu_autocast == "bf16" or (self.forward.cpu_autocast == "auto" and native_bf16()):
            return torch.bfloat16
        return torch.float32

    def batch_mirrors(self, compute: torch.device) -> bool:
        """All mirrored copies of a tile in one forward call: faster on a GPU, no gain on a CPU."""
        return compute.type == "cuda"

    @staticmethod
    def accumulate_dtype(resampling_mode: str) -> torch.dtype:
        """faithful: nnU-Net's float16 accumulators (its rounding, bit for bit); fast: float32."""
        return torch.float16 if resampling_mode == "faithful" else torch.float32

    def tiles_per_batch(self, placement: "Placement", resampling_mode: str, tile_bytes: Callable[[], int],
                        mirror_copies: int = 1, reserved_bytes: int = 0, available_bytes: int | None = None) -> int:
        """Tiles per forward call. faithful: 1, as nnU-Net (kernels round a batch differently, so only one tile
        per call keeps its bit-exactness on the CPU). fast: a fixed `tiles` setting, else on CUDA as many as
        fit in the memory left (`available_bytes`, default measured, less `reserved_bytes` for the
        accumulators still to come) at `tile_bytes()` (one tile's activations, forward_cost.py) x
        TILE_MEMORY_FACTOR x the mirrored copies batched with it, capped at `max_tiles`; on the CPU 1
        (measured: no gain, bench/README.md). 1 on a fallback placement."""
        if not placement.batched or resampling_mode == "faithful":
            return 1
        if self.forward.tiles:
            return self.forward.tiles
        if placement.compute.type != "cuda":
            return 1
        copies = mirror_copies if self.batch_mirrors(placement.compute) else 1
        per_tile = max(1, int(tile_bytes() * TILE_MEMORY_FACTOR * copies))
        if available_bytes is None:
            available_bytes = available_device_bytes(placement.compute)
        fit = (available_bytes - reserved_bytes) // per_tile
        return int(max(1, min(self.forward.max_tiles, fit)))

    def _may_batch(self) -> bool:
        return self.forward.tiles > 1 or (self.forward.tiles == 0 and self.device.type == "cuda")

    def prepare_network(self, network: torch.nn.Module) -> torch.nn.Module:
        """The network as the forward settings want it (returned: compiling wraps it in a new module). Under
        torch.compile the oneDNN override is left out: dynamo cannot trace `torch.mkldnn_convolution` (no fake
        tensor kernel; measured, bench/README.md), and inductor picks its own convolution kernels."""
        if self.device.type == "cpu" and self.forward.onednn and self.forward.compile == "none":
            use_onednn_convolutions(network)
        if self.forward.channels_last:
            network.to(memory_format=torch.channels_last_3d)
        if self.forward.compile != "none":
            network = torch.compile(network, mode=self.forward.compile)
        return network

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


def native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX); elsewhere torch emulates it."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def available_device_bytes(device: torch.device) -> int:
    """Memory this process can still allocate on a CUDA device: free device memory plus what the caching
    allocator holds unused, within `torch.cuda.set_per_process_memory_fraction`'s cap."""
    free, total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    unused = torch.cuda.memory_reserved(device) - allocated
    fraction = torch.cuda.get_per_process_memory_fraction(device) if hasattr(
        torch.cuda, "get_per_process_memory_fraction") else 1.0
    return int(min(free + unused, fraction * total - allocated))


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
        if (x.device.type != "cpu" or x.dtype != torch.float32 or conv.weight.device.type != "cpu"
                or torch.is_autocast_enabled("cpu")):
            # moved elsewhere, another dtype, or bfloat16 autocast (mkldnn_convolution is not on autocast's
            # list: it would stay float32; the stock Conv3d is, and oneDNN runs it in bfloat16): the stock path
            return torch.nn.Conv3d.forward(conv, x)
        channels_last = not conv.weight.is_contiguous() and conv.weight.is_contiguous(
            memory_format=torch.channels_last_3d)  # the forward settings' channels_last: keep NDHWC
        x = x.contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
        return torch.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation,
                                        conv.groups)

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
    """Where one member's prediction runs: networks and tiles on `compute`, accumulators on `accumulate`;
    `batched`: several tiles per forward call allowed (Runtime.tiles_per_batch), else one."""

    compute: torch.device
    accumulate: torch.device
    batched: bool = False

    def __str__(self) -> str:
        return f"compute on {self.compute}, accumulate on {self.accumulate}" + (
            ", tiles batched" if self.batched else ", one tile per call")


def fallback_placements(device: torch.device, batched: bool = False) -> list[Placement]:
    """Placements to try in order: (with `batched`: all on the device, several tiles per call;) all on the
    device; accumulators in host memory; all on the CPU."""
    cpu = torch.device("cpu")
    first = [Placement(device, device, batched=True)] if batched else []
    if device.type == "cpu":
        return first + [Placement(cpu, cpu)]
    return first + [Placement(device, device), Placement(device, cpu), Placement(cpu, cpu)]


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
