"""The hardware's own yardstick for achieved FLOP/s: dense matrix-product throughput, measured in the same run.

    peak = matmul_peak(device)          # float16 on CUDA (tensor cores), float32 on a CPU (what the CPU path runs)
    achieved = flops / seconds; fraction = achieved / peak["flops_per_s"]

A GPU's data-sheet peak is not what its kernels reach under this driver, clock and power limit, and a
shared CPU's is less still; a product of two large square matrices is the best case any convolution can
hope for, so the fraction says how far the networks' kernels are from it. The peak is the best of several
short rounds (the rounds absorb a shared machine's interruptions); report it with the forward times of the
same process.
"""

from __future__ import annotations

import statistics
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype | None = None, size: int | None = None,
                rounds: int = 5, round_s: float = 0.3) -> dict:
    """Dense `size` x `size` matrix products on `device`: FLOP/s of the best round and the median round."""
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    n = size or (8192 if device.type == "cuda" else 1024)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    _sync(device)
    per_round = []
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        while True:
            torch.matmul(a, b, out=out)
            count += 1
            if count % 4 == 0 or device.type == "cpu":
                _sync(device)
                elapsed = time.perf_counter() - start
                if elapsed >= round_s:
                    break
        per_round.append(2 * n**3 * count / elapsed)
    return {"device": str(device), "dtype": str(dtype).replace("torch.", ""), "size": n,
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "flops_per_s": max(per_round), "median_flops_per_s": statistics.median(per_round)}


def time_calls(fn, device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of fn() after `warmup` calls (synchronised on CUDA)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def rate(flops: float, seconds: float, peak: dict | None = None) -> dict:
    """Achieved throughput of `flops` done in `seconds`, and its fraction of the measured peak."""
    achieved = flops / seconds if seconds > 0 else 0.0
    result = {"tflop_per_s": achieved / 1e12, "gflop_per_s": achieved / 1e9}
    if peak:
        result["fraction_of_peak"] = achieved / peak["flops_per_s"]
    return result
