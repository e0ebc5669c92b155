"""How many CPUs this process may really use (no heavy imports: used before numpy and torch load)."""

from __future__ import annotations

import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_MAX_THREADS")


def available_cpus() -> int:
    """Affinity mask and cgroup v2/v1 CPU quota (a container's --cpus), whichever is smaller."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, quota)
    return max(1, n)


def _cgroup_quota() -> int | None:
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            return max(1, int(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
        period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        if quota > 0:
            return max(1, quota // period)
    except (OSError, ValueError):
        pass
    return None


def limit_thread_pools() -> int:
    """Size OpenMP/BLAS pools to the CPUs we have (unless the user set them). Call before importing numpy."""
    n = available_cpus()
    for var in THREAD_VARIABLES:
        os.environ.setdefault(var, str(n))
    return n
