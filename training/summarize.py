"""Markdown table of the phantom specialists: schedule, wall time, pseudo Dice, out-of-fold Dice.

    python training/summarize.py  (reads $nnUNet_results; source training/env.sh first)
"""

import json
import os
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    res = Path(os.environ["nnUNet_results"])
    rows = ["| dataset | specialist | fold | epochs x iters | train min | val min | last pseudo Dice (tumour, pancreas) "
            "| out-of-fold Dice tumour | out-of-fold Dice pancreas | cases with tumour Dice >= 0.5 |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for ds in ("Dataset901_PhantomT1", "Dataset902_PhantomT2"):
        for model in sorted((res / ds).glob("*__nnUNetPlansPhantom__3d_fullres")):
            for fold in (0, 1):
                fd = model / f"fold_{fold}"
                if not (fd / "checkpoint_final.pth").is_file():
                    continue
                tim = json.loads((fd / "phantom_timing.json").read_text()) if (fd / "phantom_timing.json").is_file() else {}
                ck = torch.load(fd / "checkpoint_final.pth", map_location="cpu", weights_only=False)
                pseudo = ck["logging"]["dice_per_class_or_region"][-1]
                summ = fd / "validation" / "summary.json"
                if summ.is_file():
                    s = json.loads(summ.read_text())
                    d1, d2 = s["mean"]["1"]["Dice"], s["mean"]["2"]["Dice"]
                    per = [c["metrics"]["1"]["Dice"] for c in s["metric_per_case"]]
                    good = f"{sum(1 for v in per if v >= 0.5)}/{len(per)}"
                else:
                    d1 = d2 = float("nan")
                    good = "-"
                rows.append(f"| {ds} | {model.name.split('__')[0]} | {fold} | {tim.get('epochs', '?')} x "
                            f"{tim.get('iterations_per_epoch', '?')} | {tim.get('train_s', float('nan')) / 60:.1f} | "
                            f"{tim.get('validation_s', float('nan')) / 60:.1f} | "
                            f"{float(pseudo[0]):.3f}, {float(pseudo[1]):.3f} | {d1:.3f} | {d2:.3f} | {good} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
