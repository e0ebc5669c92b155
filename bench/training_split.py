"""Where a phantom specialist's training epoch goes on this CPU: nnU-Net's own trainer, its own data loader and steps.

    source training/env.sh
    nnUNet_n_proc_DA=0 python bench/training_split.py --dataset Dataset902_PhantomT2 --json bench/results/training-split.json

For each plan (nnUNetPlansPhantom, nnUNetPlansPhantomIso) the trainer of training/trainers.py is built for fold 0 as
train_specialist.py builds it (one torch thread, the CPU), then, interleaved and repeated: fetching a training batch
(augmentation included; nnUNet_n_proc_DA=0 runs it in this process, so it is timed), one train_step (forward,
backward, optimizer), fetching a validation batch, one validation_step under no_grad (as run_training calls it).
The epoch's shares follow from the schedule (iterations and validation iterations per epoch): what a shorter
rebuild could cut. Needs $nnUNet_preprocessed/<dataset> (training/reproduce.sh plan); writes nothing under
$nnUNet_results except the trainer's empty fold folder in a temporary directory.
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


def split(dataset: str, trainer_name: str, plans_name: str, repeats: int) -> dict:
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
    tr.initialize()
    train_loader, val_loader = tr.get_dataloaders()
    tr.train_step(next(train_loader))  # warm-up: first allocations
    times: dict[str, list[float]] = {"train_batch_s": [], "train_step_s": [], "val_batch_s": [], "val_step_s": []}
    for _ in range(repeats):
        t = time.perf_counter(); batch = next(train_loader); times["train_batch_s"].append(time.perf_counter() - t)
        tr.network.train()
        t = time.perf_counter(); tr.train_step(batch); times["train_step_s"].append(time.perf_counter() - t)
        t = time.perf_counter(); batch = next(val_loader); times["val_batch_s"].append(time.perf_counter() - t)
        tr.network.eval()
        with torch.no_grad():
            t = time.perf_counter(); tr.validation_step(batch); times["val_step_s"].append(time.perf_counter() - t)
    med = {k: median(v) for k, v in times.items()}
    iters, val_iters = tr.num_iterations_per_epoch, tr.num_val_iterations_per_epoch
    parts = {"train_batches": iters * med["train_batch_s"], "train_steps": iters * med["train_step_s"],
             "val_batches": val_iters * med["val_batch_s"], "val_steps": val_iters * med["val_step_s"]}
    epoch = sum(parts.values())
    return {"trainer": trainer_name, "plans": plans_name, "patch_size": list(tr.configuration_manager.patch_size),
            "batch_size": tr.configuration_manager.batch_size, "iterations": iters, "val_iterations": val_iters,
            "median_s": {k: round(v, 4) for k, v in med.items()}, "epoch_s_without_end_of_epoch": round(epoch, 1),
            "epoch_share": {k: round(v / epoch, 3) for k, v in parts.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="Dataset902_PhantomT2")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if os.environ.get("nnUNet_n_proc_DA") != "0":
        ap.error("set nnUNet_n_proc_DA=0: with augmentation workers the batches are made elsewhere and not timed")
    # before nnU-Net is imported (it reads the variable once): the trainer makes its fold folder there
    os.environ["nnUNet_results"] = tempfile.mkdtemp(prefix="training_split_")
    import torch
    torch.set_num_threads(1)
    runs = [split(a.dataset, "nnUNetTrainerPhantom", p, a.repeats) for p in ("nnUNetPlansPhantom", "nnUNetPlansPhantomIso")]
    doc = {"machine": f"{platform.node()} ({platform.machine()}), {os.cpu_count()} CPUs, torch threads 1",
           "dataset": a.dataset, "repeats": a.repeats, "runs": runs}
    print(json.dumps(doc, indent=2))
    if a.json:
        a.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
