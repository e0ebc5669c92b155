"""Seed nnU-Net fold folders from shipped members, so that training goes on from them.

model_weights/ keeps inference-only checkpoints (float16 network weights, the epoch, no optimizer, no log).
This writes, per fold, a trainer-written checkpoint_final.pth at the shipped epoch (the weights in float32,
a fresh optimizer, a log of that many epochs with no values) and phantom_timing.json, so that

    python training/train_specialist.py ... --epochs 36        (or training/reproduce.sh train)

extends the run from the shipped epoch with the longer schedule's poly learning rate, as it extends a run it
trained itself (the Task 1 members went from 12 to 36 epochs that way). What is not kept: SGD's momentum
(it restarts from zero) and the shipped run's log (NaN in the seeded epochs; nnU-Net's moving average of the
pseudo Dice starts again from 0, so a seeded run's checkpoint_best follows its last epochs: use checkpoint_final).
A seeded run must be trained on (--epochs above the shipped epoch); one that does not learn is left in place
for reseeding (train_specialist.py exits 1, not the collapse status that makes reproduce.sh train afresh).

    python training/seed_from_shipped.py model_weights/Dataset902_PhantomT2/nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres

needs $nnUNet_preprocessed/<dataset>/ (plans and dataset.json, as for training) and writes to $nnUNet_results;
a fold that already has a checkpoint_final.pth is left alone (exit 1) unless --force.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import lineage  # training/, the script's own folder: the same file hash as a run's pretrained_from.json


def seeded_log(epochs: int, n_labels: int) -> dict:
    """nnU-Net's LocalLogger lists for `epochs` epochs that were not logged here: NaN values, and an EMA of 0 so
    that the next epochs' moving average starts from a number (nnU-Net reads the previous EMA entry)."""
    nan = float("nan")
    log = {key: [nan] * epochs for key in ("mean_fg_dice", "train_losses", "val_losses", "lrs",
                                            "epoch_start_timestamps", "epoch_end_timestamps")}
    log["ema_fg_dice"] = [0.0] * epochs
    log["dice_per_class_or_region"] = [[nan] * n_labels for _ in range(epochs)]
    return log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a shipped model folder: <...>/DatasetXXX_Name/<trainer>__<plans>__<configuration>")
    ap.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--force", action="store_true", help="overwrite a fold that has a checkpoint_final.pth")
    a = ap.parse_args()

    import torch
    from batchgenerators.utilities.file_and_folder_operations import join, load_json
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results

    import trainers  # training/, as train_specialist.py imports it

    model = os.path.abspath(a.model.rstrip(os.sep))
    dataset = os.path.basename(os.path.dirname(model))
    try:
        trainer_name, plans_name, configuration = os.path.basename(model).split("__")
    except ValueError:
        sys.exit(f"seed_from_shipped: {model}: not a <trainer>__<plans>__<configuration> folder")
    cls = getattr(trainers, trainer_name, None)
    if cls is None:
        sys.exit(f"seed_from_shipped: {model}: trainer {trainer_name} is not one of training/trainers.py")
    plans = load_json(join(nnUNet_preprocessed, dataset, plans_name + ".json"))
    dataset_json = load_json(join(nnUNet_preprocessed, dataset, "dataset.json"))

    for fold in a.folds:
        source = join(model, f"fold_{fold}", "checkpoint_final.pth")
        if not os.path.isfile(source):
            sys.exit(f"seed_from_shipped: {source}: no such checkpoint")
        shipped = torch.load(source, map_location="cpu", weights_only=False)
        if shipped.get("trainer_name") != trainer_name:
            sys.exit(f"seed_from_shipped: {source}: trainer_name {shipped.get('trainer_name')!r}, "
                     f"the folder says {trainer_name}")
        epochs = int(shipped["current_epoch"])
        out = join(nnUNet_results, dataset, os.path.basename(model), f"fold_{fold}")
        final = join(out, "checkpoint_final.pth")
        present = [n for n in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
                   if os.path.isfile(join(out, n))]
        if present and not a.force:
            sys.exit(f"seed_from_shipped: {out}: has {', '.join(present)} (a trained or running run): left alone; "
                     "--force to overwrite it")
        for stale in ("checkpoint_latest.pth", "checkpoint_best.pth"):  # a resume would prefer them
            if os.path.isfile(join(out, stale)):
                os.remove(join(out, stale))

        # nnU-Net's trainer pops "continue_training" from the plans it is given: one copy per fold
        tr = cls(plans=dict(plans, continue_training=False), configuration=configuration, fold=fold, dataset_json=dataset_json,
                 device=torch.device("cpu"))
        tr.initialize()
        # float16 -> float32 by copy_; strict: the same architecture, heads included
        tr.network.load_state_dict(shipped["network_weights"], strict=True)
        tr.logger.load_checkpoint(seeded_log(epochs, len(tr.label_manager.foreground_labels)))
        tr._best_ema = None
        # set by nnU-Net when it builds the data loaders, which seeding does not: keep the shipped member's
        tr.inference_allowed_mirroring_axes = shipped["inference_allowed_mirroring_axes"]
        tr.current_epoch = epochs - 1  # save_checkpoint stores current_epoch + 1, as at the end of training
        provenance = {"seeded_from": source, "sha256": lineage.sha256(source), "epochs": epochs,
                      "not_kept": "SGD momentum (restarts at zero), the shipped run's log (NaN)"}
        # before the checkpoint: a kill between the two must not leave a seeded checkpoint that reads as a run
        # trained from --pretrained (training/lineage.py); a provenance without a checkpoint is seeded again
        with open(join(out, "seeded_from.json"), "w") as f:
            json.dump(provenance, f, indent=2)
        tr.save_checkpoint(final)
        tr.print_to_log_file(f"seeded from {source} at epoch {epochs}: {json.dumps(provenance)}")
        with open(join(out, "phantom_timing.json"), "w") as f:
            json.dump({"epochs": epochs, "train_s": None, "seeded_from": source}, f, indent=2)
        print(f"{final}: seeded at epoch {epochs} from {source}", flush=True)


if __name__ == "__main__":
    main()
