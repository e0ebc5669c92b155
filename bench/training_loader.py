"""Where a specialist's data augmentation runs, timed as reproduce.sh trains: two folds side by side, one torch
thread each, the CPU levers on (bfloat16 autocast, channels_last), nnU-Net's own trainer and data loaders.

    source training/env.sh
    python bench/training_loader.py --dataset Dataset902_PhantomT2 --epochs 4 --rounds 2 \
        --json bench/results/training-loader.json

Layouts (nnU-Net reads nnUNet_n_proc_DA when it builds its loaders):
- workers: nnUNet_n_proc_DA=2 (training/env.sh's value so far): per training process two augmentation worker
  processes for the training batches and one for validation (NonDetMultiThreadedAugmenter);
- in_process: nnUNet_n_proc_DA=0: nnU-Net's SingleThreadedAugmenter, the same transforms in the training process;
- in_process+jemalloc, in_process+glibc_kept: the same with another memory allocator policy (--layouts), because a
  training process here takes about 26,000 minor page faults per CPU-second: glibc gives freed tensor memory back
  to the kernel and every step faults it in (and zeroes it) again.

Each layout trains folds 0 and 1 for `--epochs` epochs from a fresh network into a temporary nnUNet_results
($nnUNet_preprocessed is read, nothing else is written). The figure is the wall time per epoch from the end of the
first epoch to the end of the last (the first holds start-up), end of epoch included (checkpoints, progress plot),
the slower fold's; the layouts alternate for `--rounds` rounds. The per-process CPU time (training process and its
children) says where the cores went. Training is random either way (nnU-Net's augmentation is not seeded), so
only the time is compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JEMALLOC = "/lib/x86_64-linux-gnu/libjemalloc.so.2"  # Debian's libjemalloc2
# each layout: the environment its two training processes get on top of this one's
LAYOUTS = {
    "workers": {"nnUNet_n_proc_DA": "2"},
    "in_process": {"nnUNet_n_proc_DA": "0"},
    # the same, with jemalloc as the allocator: freed pages are kept for reuse (decay 10 s) instead of being given
    # back to the kernel and faulted in again at the next step's allocations
    "in_process+jemalloc": {"nnUNet_n_proc_DA": "0", "LD_PRELOAD": JEMALLOC},
    # the same with glibc's malloc told to keep its heap (no trimming, a large top pad, mmap only above 32 MB)
    "in_process+glibc_kept": {"nnUNet_n_proc_DA": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
                              "MALLOC_TOP_PAD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 25)},
}
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+): Epoch time:")


def epoch_ends(log: Path) -> list[float]:
    ends = []
    for line in log.read_text().splitlines():
        m = STAMP.match(line)
        if m:
            ends.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp())
    return ends


def run_layout(a, layout: str, tmp: Path, tag: str) -> dict:
    results = tmp / tag
    results.mkdir()
    # the layout's allocator policy only (training/env.sh exports its own MALLOC_* settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    env.update(LAYOUTS[layout], nnUNet_results=str(results), OMP_NUM_THREADS="1")
    procs, logs = [], []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    for fold in (0, 1):
        log = tmp / f"{tag}_f{fold}.log"
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, str(REPO / "training/train_specialist.py"), "--dataset", a.dataset, "--trainer", a.trainer,
             "--plans", a.plans, "--fold", str(fold), "--epochs", str(a.epochs), "--cpu-autocast", "auto",
             "--channels-last", "on", "--skip-validation"]
            + (["--pretrained", str(a.pretrained)] if a.pretrained else [])
            + (["--lr", str(a.lr)] if a.lr is not None else []), env=env, stdout=log.open("w"), stderr=subprocess.STDOUT))
    for p, log in zip(procs, logs):
        if p.wait() != 0:
            raise SystemExit(f"{layout}: training failed, see {log}:\n" + "\n".join(log.read_text().splitlines()[-15:]))
    wall = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    per_fold = []
    for log in logs:
        ends = epoch_ends(log)
        if len(ends) != a.epochs:
            raise SystemExit(f"{log}: {len(ends)} epoch ends, expected {a.epochs}")
        per_fold.append((ends[-1] - ends[0]) / (a.epochs - 1))
    return {"epoch_s": round(max(per_fold), 3), "epoch_s_per_fold": [round(v, 3) for v in per_fold],
            "wall_s": round(wall, 1),
            "cpu_s": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 1),
            "system_cpu_s": round(after.ru_stime - before.ru_stime, 1),
            "minor_page_faults": int(after.ru_minflt - before.ru_minflt)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="Dataset902_PhantomT2")
    p.add_argument("--trainer", default="nnUNetTrainerPhantom")
    p.add_argument("--plans", default="nnUNetPlansPhantom")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--pretrained", type=Path, help="start each fold from this checkpoint, as reproduce.sh's "
                   "specialists start from the pre-trained network (default: a fresh network)")
    p.add_argument("--lr", type=float, help="initial learning rate (reproduce.sh's T_LR)")
    p.add_argument("--keep-logs", type=Path, help="copy the training logs here")
    p.add_argument("--layouts", default="workers,in_process",
                   help=f"comma-separated, the first is the reference of the speed-ups (from: {', '.join(LAYOUTS)})")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    layouts = a.layouts.split(",")
    if len(layouts) < 2 or any(x not in LAYOUTS for x in layouts):
        p.error(f"--layouts {a.layouts}: two or more of {', '.join(LAYOUTS)}")
    if any("LD_PRELOAD" in LAYOUTS[x] for x in layouts) and not Path(JEMALLOC).is_file():
        p.error(f"{JEMALLOC} not found (Debian: apt-get install libjemalloc2)")
    if a.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch holds start-up)")
    if "nnUNet_preprocessed" not in os.environ:
        p.error("nnUNet_preprocessed is not set (source training/env.sh)")

    rounds = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for r in range(a.rounds):
            row = {layout: run_layout(a, layout, tmp, f"{layout.replace('+', '_')}{r}") for layout in layouts}
            ref = row[layouts[0]]["epoch_s"]
            row["speedup_vs_first"] = {x: round(ref / row[x]["epoch_s"], 3) for x in layouts[1:]}
            if len(layouts) == 2:
                row["speedup"] = row["speedup_vs_first"][layouts[1]]
            rounds.append(row)
            print(f"round {r}: " + ", ".join(f"{k} {row[k]['epoch_s']} s/epoch ({row[k]['cpu_s']} CPU s, "
                                             f"{row[k]['minor_page_faults']} minor faults)" for k in layouts)
                  + f": against {layouts[0]} " + ", ".join(f"{k} {v}x" for k, v in row["speedup_vs_first"].items()),
                  flush=True)
        if a.keep_logs:
            a.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in tmp.glob("*.log"):
                (a.keep_logs / log.name).write_text(log.read_text())
    out = {"command": "python bench/training_loader.py " + " ".join(sys.argv[1:]),
           "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": f"{platform.node()} ({platform.machine()})",
           "cpus": os.cpu_count(), "dataset": a.dataset, "trainer": a.trainer, "plans": a.plans, "epochs": a.epochs,
           "pretrained": str(a.pretrained) if a.pretrained else None, "lr": a.lr,
           "layouts": {x: LAYOUTS[x] for x in layouts}, "rounds": rounds,
           "speedup_vs_first_median": {x: round(statistics.median(r["speedup_vs_first"][x] for r in rounds), 3)
                                       for x in layouts[1:]}}
    if len(layouts) == 2:
        out["speedup_median"] = out["speedup_vs_first_median"][layouts[1]]
    print(f"against {layouts[0]}, per epoch (median of {len(rounds)} rounds): "
          + ", ".join(f"{x} {v}x" for x, v in out["speedup_vs_first_median"].items()))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
