"""Where a specialist's data augmentation runs, timed as reproduce.sh trains: two folds side by side, one torch
thread each, the CPU levers on (bfloat16 autocast, channels_last), nnU-Net's own trainer and data loaders.

    source training/env.sh
    python bench/training_loader.py --dataset Dataset902_PhantomT2 --epochs 4 --rounds 2 \
        --json bench/results/training-loader.json

Layouts (nnU-Net reads nnUNet_n_proc_DA when it builds its loaders):
- workers: nnUNet_n_proc_DA=2 (training/env.sh's value so far): per training process two augmentation worker
  processes for the training batches and one for validation (NonDetMultiThreadedAugmenter);
- in_process: nnUNet_n_proc_DA=0: nnU-Net's SingleThreadedAugmenter, the same transforms in the training process.

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
LAYOUTS = {"workers": "2", "in_process": "0"}
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
    env = dict(os.environ, nnUNet_n_proc_DA=LAYOUTS[layout], nnUNet_results=str(results), OMP_NUM_THREADS="1")
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
            "cpu_s": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 1)}


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
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    if a.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch holds start-up)")
    if "nnUNet_preprocessed" not in os.environ:
        p.error("nnUNet_preprocessed is not set (source training/env.sh)")

    rounds = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for r in range(a.rounds):
            row = {layout: run_layout(a, layout, tmp, f"{layout}{r}") for layout in LAYOUTS}
            row["speedup"] = round(row["workers"]["epoch_s"] / row["in_process"]["epoch_s"], 3)
            rounds.append(row)
            print(f"round {r}: " + ", ".join(f"{k} {row[k]['epoch_s']} s/epoch ({row[k]['cpu_s']} CPU s)" for k in LAYOUTS)
                  + f": in_process {row['speedup']}x", flush=True)
        if a.keep_logs:
            a.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in tmp.glob("*.log"):
                (a.keep_logs / log.name).write_text(log.read_text())
    out = {"command": "python bench/training_loader.py " + " ".join(sys.argv[1:]),
           "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": f"{platform.node()} ({platform.machine()})",
           "cpus": os.cpu_count(), "dataset": a.dataset, "trainer": a.trainer, "plans": a.plans, "epochs": a.epochs,
           "pretrained": str(a.pretrained) if a.pretrained else None, "lr": a.lr,
           "rounds": rounds, "speedup_median": round(statistics.median(r["speedup"] for r in rounds), 3)}
    print(f"in_process over workers: {out['speedup_median']}x per epoch (median of {len(rounds)} rounds)")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
