"""Markdown table of the phantom specialists: schedule, wall time, last pseudo Dice, out-of-fold Dice.

    python training/summarize.py [--keep training/results.md]
        (reads $nnUNet_results, $nnUNet_raw and $PANTHER_DATA/oof; source training/env.sh)

--keep: the rows of a dataset with no trained run here are taken from that earlier table, so exporting one task
(TASKS=2) does not drop the other task's rows.

Out-of-fold Dice: each member's maps from training/predict_oof.py (fold k's model on fold k's validation
cases, as the shipped ensemble runs it), the member's own argmax == tumour against labelsTr.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from panther_ensemble.scoring.metrics import mask_dice

DATASETS = ("Dataset901_PhantomT1", "Dataset902_PhantomT2")


def member_name(model: Path) -> str:
    trainer, plans, _ = model.name.split("__")
    if plans.endswith("Iso"):
        return "iso"
    return "DA5" if trainer.endswith("DA5") else "default"


def oof_scores(oof: Path, labels_tr: Path) -> list[float]:
    scores = []
    for npz in sorted(oof.glob("*.npz")):
        with np.load(npz) as f:
            probabilities, labels = f["probabilities"], [str(x) for x in f["labels"]]
        pred = probabilities.argmax(0) == labels.index("tumor")
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_tr / f"{npz.stem}.mha"))) == 1
        scores.append(mask_dice(pred, truth))
    return scores


def kept_rows(table: Path | None) -> dict:
    """dataset -> (training rows, out-of-fold rows) of an earlier summary (its two tables, in order)."""
    kept: dict = {ds: ([], []) for ds in DATASETS}
    if table is None or not table.is_file():
        return kept
    section = -1
    for line in table.read_text().splitlines():
        if line.startswith("| dataset |"):
            section += 1
        for ds in DATASETS:
            if line.startswith(f"| {ds} |") and section in (0, 1):
                kept[ds][section].append(line)
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="an earlier summary whose rows stand for datasets not trained here")
    a = ap.parse_args()
    kept = kept_rows(a.keep)
    res, raw = Path(os.environ["nnUNet_results"]), Path(os.environ["nnUNet_raw"])
    oof_root = Path(os.environ.get("PANTHER_DATA", "/work/data")) / "oof"
    rows = ["| dataset | member | trainer, plans | fold | epochs x iterations | train min | last pseudo Dice "
            "(tumour, pancreas) |", "|---|---|---|---|---|---|---|"]
    oof_rows = ["| dataset | member | out-of-fold cases | tumour Dice (mean) | cases with tumour Dice >= 0.5 |",
                "|---|---|---|---|---|"]
    for ds in DATASETS:
        n_rows, n_oof = len(rows), len(oof_rows)
        for model in sorted((res / ds).glob("*__3d_fullres")):
            name = member_name(model)
            for fold in (0, 1):
                fd = model / f"fold_{fold}"
                if not (fd / "checkpoint_final.pth").is_file():
                    continue
                timing_file = fd / "phantom_timing.json"
                tim = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
                ck = torch.load(fd / "checkpoint_final.pth", map_location="cpu", weights_only=False)
                pseudo = ck["logging"]["dice_per_class_or_region"][-1]
                rows.append(f"| {ds} | {name} | {model.name.split('__')[0]}, {model.name.split('__')[1]} | {fold} | "
                            f"{tim.get('epochs', '?')} x {tim.get('iterations_per_epoch', '?')} | "
                            f"{(float('nan') if tim.get('train_s') is None else tim['train_s']) / 60:.1f}{' (resumed)' if tim.get('resumed') else ''} | "
                            f"{float(pseudo[0]):.3f}, {float(pseudo[1]):.3f} |")
            scores = oof_scores(oof_root / ds / name, raw / ds / "labelsTr")
            if scores:
                oof_rows.append(f"| {ds} | {name} | {len(scores)} | {np.mean(scores):.3f} | "
                                f"{sum(s >= 0.5 for s in scores)}/{len(scores)} |")
        if len(rows) == n_rows and len(oof_rows) == n_oof:
            # nothing of this dataset here: the earlier rows still describe its (shipped) members
            rows += kept[ds][0]
            oof_rows += kept[ds][1]
    print("\n".join(["# Phantom specialists", "", "Training (training/train_specialist.py; `train min` of a resumed "
                     "run counts the last run only):", ""] + rows +
                    ["", "Out-of-fold (training/predict_oof.py: the input of `fit`):", ""] + oof_rows))


if __name__ == "__main__":
    main()
