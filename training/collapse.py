"""Did a training run learn? A check on nnU-Net's own per-class pseudo Dice, so that a collapsed run stops the
rebuild instead of flowing, silently, into out-of-fold maps, a fit and a shipped spec.

nnU-Net does not seed its trainers: the same command on the same data can settle on "everything is
background" (train loss near 0, pseudo Dice 0 for every class, epoch after epoch). It happened to the Task 2
rebuild of 2026-12-03: pre-training stage 1 ended at pseudo Dice (0, 0) after 60 epochs where earlier runs
reached pancreas 0.6, and every specialist fine-tuned from it found no tumour (out-of-fold Dice 0 on 60 of
60 cases); `fit` then chose one member with argmax and wrote it into resources/task2.json.

    python training/train_specialist.py ... --require-pseudo-dice pancreas=0.3

checks the finished run (also one found finished); a run below a floor is moved aside to
<fold folder>.collapsed-<time> (a rerun then starts afresh instead of resuming the dead weights) and the
script exits with COLLAPSED. training/reproduce.sh retries such a run (TRAIN_TRIES).
"""

from __future__ import annotations

import math
import os
import time

COLLAPSED = 3  # exit status of train_specialist.py for a run below its floors
LAST_EPOCHS = 5  # pseudo Dice is drawn from a few random patches per epoch: judge the mean of the last few


def parse_floors(items: list[str] | None) -> dict[str, float]:
    """["pancreas=0.3", "tumor=0.2"] -> {"pancreas": 0.3, "tumor": 0.2}."""
    floors: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            floor = float(value)
        except ValueError:
            floor = None
        if not sep or not name or floor is None or not 0.0 <= floor <= 1.0:
            raise ValueError(f"--require-pseudo-dice {item!r}: expected LABEL=VALUE with VALUE in [0, 1]")
        floors[name] = floor
    return floors


def foreground_labels(dataset_json: dict) -> list[str]:
    """The label names in the order of nnU-Net's pseudo Dice: foreground labels by value (regions are not
    used by these datasets)."""
    labels = dataset_json["labels"]
    if any(not isinstance(v, int) for v in labels.values()):
        raise ValueError("region-based labels: pseudo Dice per region is not mapped to names here")
    return [name for name, value in sorted(labels.items(), key=lambda kv: kv[1]) if value != 0]


def check_labels(floors: dict[str, float], labels: list[str]) -> None:
    """A floor on a label the dataset does not have is an error (checked before training, not hours after)."""
    unknown = sorted(set(floors) - set(labels))
    if unknown:
        raise ValueError(f"--require-pseudo-dice: no label {', '.join(unknown)} (labels: {', '.join(labels)})")


def collapse_reason(dice_history: list, labels: list[str], floors: dict[str, float],
                    last: int = LAST_EPOCHS) -> str | None:
    """None when the run learned; else why not, in one line. dice_history is nnU-Net's
    logging["dice_per_class_or_region"]: one list per epoch, one value per foreground label."""
    check_labels(floors, labels)
    if not floors:
        return None
    if not dice_history:
        return "no epoch was logged"
    tail = dice_history[-last:]
    low = []
    for name, floor in floors.items():
        i = labels.index(name)
        # NaN: nothing of the class in the validation patches and nothing predicted (nnU-Net's 0/0), or an
        # epoch that was not logged here (seed_from_shipped.py); judged on the logged ones, never passed on none
        values = [float(epoch[i]) for epoch in tail if not math.isnan(float(epoch[i]))]
        if not values:
            low.append(f"{name} not logged")
            continue
        mean = sum(values) / len(values)
        if mean < floor:
            low.append(f"{name} {mean:.3f} < {floor:g}")
    if not low:
        return None
    return f"pseudo Dice over the last {len(tail)} epochs: {', '.join(low)}"


def move_aside(fold_folder: str, stamp: str | None = None, why: str = "collapsed") -> str:
    """Rename a run's folder (collapsed, or stale: training/lineage.py) so that the next run starts from scratch,
    nothing deleted; returns the new path, <fold folder>.<why>-<time>."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    target = f"{fold_folder.rstrip(os.sep)}.{why}-{stamp}"
    os.rename(fold_folder, target)
    return target


def pseudo_dice_history(checkpoint_path: str) -> list:
    """nnU-Net's per-epoch pseudo Dice as saved in a checkpoint ("logging" is the trainer logger's own
    checkpoint; reading it from disk works across nnU-Net's logger classes, which changed in 2.6)."""
    import torch

    return torch.load(checkpoint_path, map_location="cpu", weights_only=False)["logging"]["dice_per_class_or_region"]
