"""Where a phantom specialist's training epoch goes on this CPU, and what the trainers' CPU levers save: nnU-Net's
own trainer, its own data loader and steps.

    source training/env.sh
    nnUNet_n_proc_DA=0 python bench/training_split.py --dataset Dataset902_PhantomT2 --json bench/results/training-split.json

For each plan (nnUNetPlansPhantom, nnUNetPlansPhantomIso) and each lever set (--levers: stock, channels_last,
bf16, bf16+channels_last; training/trainers.py _CpuSpeed) a trainer of training/trainers.py is built for fold 0 as
train_specialist.py builds it (one torch thread, the CPU). Then, interleaved over the lever sets and repeated:
fetching a training batch (augmentation included; nnUNet_n_proc_DA=0 runs it in this process, so it is timed), one
train_step (forward, backward, optimizer), fetching a validation batch, one validation_step under no_grad (as
run_training calls it). The epoch's shares follow from the schedule (iterations and validation iterations per
epoch); each lever set's epoch is also given as a ratio to stock's in the same run. Needs
$nnUNet_preprocessed/<dataset> (training/reproduce.sh plan); writes nothing under $nnUNet_results except the
trainers' empty fold folders in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


LEVERS = {"stock": ("off", False), "channels_last": ("off", True), "bf16": ("bf16", False),
          "bf16+channels_last": ("bf16", True)}


def build(dataset: str, trainer_name: str, plans_name: str, lever: str):
    import torch
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed

    sys.path.insert(0, str(REPO / "training"))
    import trainers

    pre = join(nnUNet_preprocessed, dataset)
    plans = load_json(join(pre, plans_name + ".json"))
    plans["continue_training"] = False
    tr = getattr(trainers, trainer_name)(plans=plans, configuration="3d_fullres", fold=0,
                                         dataset_json=load_json(join(pre, "dataset.json")), device=torch.device("cpu"))
    tr.cpu_autocast, tr.channels_last = LEVERS[lever]
    tr.initialize()
    loaders = tr.get_dataloaders()
    tr.train_step(next(loaders[0]))  # warm-up: first allocations
    return tr, loaders


def split(dataset: str, trainer_name: str, plans_name: str, levers: list[str], repeats: int) -> dict:
    import torch

    built = {lever: build(dataset, trainer_name, plans_name, lever) for lever in levers}
    times = {lever: {"train_batch_s": [], "train_step_s": [], "val_batch_s": [], "val_step_s": []} for lever in levers}
    for _ in range(repeats):
        for lever, (tr, (train_loader, val_loader)) in built.items():
            tt = times[lever]
            t = time.perf_counter(); batch = next(train_loader); tt["train_batch_s"].append(time.perf_counter() - t)
            tr.network.train()
            t = time.perf_counter(); tr.train_step(batch); tt["train_step_s"].append(time.perf_counter() - t)
            t = time.perf_counter(); batch = next(val_loader); tt["val_batch_s"].append(time.perf_counter() - t)
            tr.network.eval()
            with torch.no_grad():
                t = time.perf_counter(); tr.validation_step(batch); tt["val_step_s"].append(time.perf_counter() - t)
    tr = next(iter(built.values()))[0]
    iters, val_iters = tr.num_iterations_per_epoch, tr.num_val_iterations_per_epoch
    out = {"trainer": trainer_name, "plans": plans_name, "patch_size": list(tr.configuration_manager.patch_size),
           "batch_size": tr.configuration_manager.batch_size, "iterations": iters, "val_iterations": val_iters,
           "levers": {}}
    for lever in levers:
        med = {k: median(v) for k, v in times[lever].items()}
        parts = {"train_batches": iters * med["train_batch_s"], "train_steps": iters * med["train_step_s"],
                 "val_batches": val_iters * med["val_batch_s"], "val_steps": val_iters * med["val_step_s"]}
        epoch = sum(parts.values())
        out["levers"][lever] = {"median_s": {k: round(v, 4) for k, v in med.items()},
                                "epoch_s_without_end_of_epoch": round(epoch, 1),
                                "epoch_share": {k: round(v / epoch, 3) for k, v in parts.items()}}
    if "stock" in out["levers"]:
        stock = out["levers"]["stock"]["epoch_s_without_end_of_epoch"]
        for row in out["levers"].values():
            row["speedup_vs_stock"] = round(stock / row["epoch_s_without_end_of_epoch"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="Dataset902_PhantomT2")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--levers", default="stock,channels_last,bf16,bf16+channels_last",
                    help="comma-separated lever sets, of: " + ", ".join(LEVERS))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    levers = [v for v in a.levers.split(",") if v]
    unknown = [v for v in levers if v not in LEVERS]
    if unknown or not levers:
        ap.error(f"--levers: unknown {unknown}; choose from {', '.join(LEVERS)}")
    if os.environ.get("nnUNet_n_proc_DA") != "0":
        ap.error("set nnUNet_n_proc_DA=0: with augmentation workers the batches are made elsewhere and not timed")
    # before nnU-Net is imported (it reads the variable once): the trainer makes its fold folder there
    os.environ["nnUNet_results"] = tempfile.mkdtemp(prefix="training_split_")
    import torch
    torch.set_num_threads(1)
    runs = [split(a.dataset, "nnUNetTrainerPhantom", p, levers, a.repeats)
            for p in ("nnUNetPlansPhantom", "nnUNetPlansPhantomIso")]
    doc = {"machine": f"{platform.node()} ({platform.machine()}), {os.cpu_count()} CPUs, torch threads 1, "
                      f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
                      f"native bfloat16 {bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}",
           "torch": torch.__version__, "command": "nnUNet_n_proc_DA=0 python bench/training_split.py " + " ".join(sys.argv[1:]),
           "dataset": a.dataset, "repeats": a.repeats, "runs": runs}
    print(json.dumps(doc, indent=2))
    if a.json:
        a.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
