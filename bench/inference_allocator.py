"""Does the container's job gain from training/env.sh's glibc malloc settings, and what does it cost in memory?

    python bench/inference_allocator.py --task 1 --rounds 3 --json bench/results/inference-allocator-task1.json

Training gained 1.065x per epoch from telling glibc to keep freed memory (`bench/training_loader.py --layouts`,
bench/results/training-allocator.json). A grand-challenge job is one process per case that ends after one mask, so
the question there is different: fewer page faults against a higher peak (memory the heap keeps instead of giving
back is still counted in the resident set). Each layout runs the container's job exactly as the image does
(`inference.py`, the shipped spec and weights, the task's shipped sample case, `--device cpu`) as a child process;
the layouts alternate for `--rounds` rounds, their order swapped every other round. Per run: wall time, the child's CPU time, minor page faults and peak
resident set (`os.wait4`'s rusage), and the mask's bytes, which must be the same in every run (the allocator only
decides where freed memory goes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = {1: REPO / "test/input/task1", 2: REPO / "test/input/task2"}
ENV_SH = REPO / "training/env.sh"


def kept_settings() -> dict[str, str]:
    """training/env.sh's MALLOC_* defaults, read from the file so that the bench measures what it exports."""
    out = {}
    for line in ENV_SH.read_text().splitlines():
        if line.startswith("export MALLOC_") and ":-" in line:
            name = line.split()[1].split("=")[0]
            out[name] = line.split(":-", 1)[1].split("}")[0]
    if len(out) != 3:
        raise SystemExit(f"{ENV_SH}: expected three MALLOC_* defaults, found {sorted(out)}")
    return out


LAYOUTS = {"glibc_default": {}, "glibc_kept": None}  # None: filled from training/env.sh


def run_once(task: int, layout: dict[str, str], out_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    env.update(layout)
    cmd = [sys.executable, str(REPO / "inference.py"), "--input", str(SAMPLE[task]), "--output", str(out_dir),
           "--device", "cpu"]
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a child's long stderr cannot block it
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        log.seek(0)
        err = log.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"inference.py failed (status {os.waitstatus_to_exitcode(status)}):\n{err[-3000:]}")
    masks = sorted(out_dir.rglob("*.mha"))
    if len(masks) != 1:
        raise SystemExit(f"{out_dir}: expected one mask, found {masks}")
    digest = hashlib.sha256(masks[0].read_bytes()).hexdigest()
    masks[0].unlink()
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "minor_page_faults": usage.ru_minflt, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "mask_sha256": digest}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", type=int, choices=[1, 2], required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    layouts = dict(LAYOUTS, glibc_kept=kept_settings())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_once(a.task, {}, Path(tmp))  # untimed: the page cache holds the weights and the image for every layout
        for r in range(a.rounds):
            order = list(layouts) if r % 2 == 0 else list(layouts)[::-1]  # A-B, B-A, ...: no layout always first
            row = {name: run_once(a.task, layouts[name], Path(tmp)) for name in order}
            row["order"] = order
            base, kept = row["glibc_default"], row["glibc_kept"]
            row["speedup"] = round(base["wall_s"] / kept["wall_s"], 3)
            row["peak_rss_ratio"] = round(kept["peak_rss_mib"] / base["peak_rss_mib"], 3)
            rows.append(row)
            print(f"round {r + 1}: " + ", ".join(f"{n} {row[n]['wall_s']} s wall, {row[n]['cpu_s']} CPU-s, "
                                                 f"{row[n]['minor_page_faults']} minor faults, "
                                                 f"{row[n]['peak_rss_mib']} MiB peak" for n in layouts)
                  + f": speedup {row['speedup']}x, peak {row['peak_rss_ratio']}x", flush=True)
    digests = {row[n]["mask_sha256"] for row in rows for n in layouts}
    med = {n: {k: statistics.median(row[n][k] for row in rows)
               for k in ("wall_s", "cpu_s", "minor_page_faults", "peak_rss_mib")} for n in layouts}
    out = {"bench": "inference_allocator", "task": a.task, "machine": f"{platform.node()} ({platform.machine()})",
           "cpus": len(os.sched_getaffinity(0)), "date": time.strftime("%Y-%m-%d %H:%M"),
           "layouts": layouts, "rounds": rows, "median": med,
           "speedup_median": statistics.median(r["speedup"] for r in rows),
           "peak_rss_ratio_median": statistics.median(r["peak_rss_ratio"] for r in rows),
           "minor_page_fault_ratio": round(med["glibc_default"]["minor_page_faults"]
                                           / max(1, med["glibc_kept"]["minor_page_faults"]), 1),
           "masks_identical": len(digests) == 1}
    print(json.dumps({k: out[k] for k in ("speedup_median", "peak_rss_ratio_median", "minor_page_fault_ratio",
                                          "masks_identical")}))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["masks_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
