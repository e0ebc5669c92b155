"""`panther-ensemble phantom`: synthetic PANTHER-like MRI phantoms (the work is in panther_ensemble.phantoms)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "make synthetic PANTHER-like MRI phantoms (sample cases, nnU-Net training data) and score threshold baselines"

SEEDS_HELP = "seeds as ranges and lists, e.g. 0-59 or 1,2,5 or 0-9,20; one phantom per seed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Every phantom is a pure function of (task, seed): the same command writes bit for bit the same "
        "files on any machine.  Task 1 looks like a T1 arterial-phase scan (tumour darker than the pancreas), "
        "Task 2 like a T2 MR-Linac scan (tumour brighter).  Labels: 0 background, 1 tumour, 2 pancreas.")
    sub = parser.add_subparsers(dest="phantom_action", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("socket", help="write one case as the grand-challenge container receives it",
                       description="Write OUT/images/<slug>/<uuid>.mha and OUT/inputs.json (the PANTHER input "
                                   "socket); the uuid is drawn from the seed.  Prints the image path.")
    p.add_argument("--task", type=int, choices=(1, 2), required=True, help="1 (T1 arterial) or 2 (T2 MR-Linac)")
    p.add_argument("--seed", type=int, required=True, help="which phantom")
    p.add_argument("--out", required=True, help="folder that plays the container's /input")
    p.add_argument("--ground-truth", default=None, metavar="DIR", help="also write the label here as <uuid>.mha")

    p = sub.add_parser("dataset", help="write an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json)",
                       description="Write OUT/DatasetXXX_NAME with one case phantom_t<task>_<seed> per seed.  "
                                   "Prints the dataset folder.")
    p.add_argument("--task", type=int, choices=(1, 2), required=True, help="1 (T1 arterial) or 2 (T2 MR-Linac)")
    p.add_argument("--seeds", required=True, help=SEEDS_HELP)
    p.add_argument("--out", required=True, help="the nnUNet_raw folder")
    p.add_argument("--dataset-id", type=int, required=True, help="nnU-Net dataset number (XXX)")
    p.add_argument("--dataset-name", default=None, help="dataset name (default PhantomT<task>)")
    p.add_argument("--tumour-contrast-scale", type=float, default=1.0, metavar="X",
                   help="multiply the tumour's contrast against the pancreas by X (same anatomy, easier tumours, "
                        "for curriculum pre-training; default 1 = the standard phantom)")

    p = sub.add_parser("baseline", help="score the best intensity-threshold segmentations on held-out phantoms",
                       description="How far one global intensity threshold gets: fitted on training phantoms "
                                   "(best mean tumour Dice), scored per case on held-out ones.  Whole body (no "
                                   "label used: intensity / body median; a one-sided threshold and the best "
                                   "band) and inside the true pancreas (given the organ).  Prints the JSON "
                                   "result on stdout and a summary on stderr.")
    p.add_argument("--task", type=int, choices=(1, 2), required=True, help="1 (T1 arterial) or 2 (T2 MR-Linac)")
    p.add_argument("--train-seeds", default="0-59", help=f"phantoms the threshold is fitted on ({SEEDS_HELP}; "
                                                         "default 0-59)")
    p.add_argument("--test-seeds", default="1100-1119", help="held-out phantoms it is scored on (default 1100-1119)")
    p.add_argument("--dataset-dir", default=None, metavar="DIR",
                   help="an nnU-Net raw dataset of this task written by `phantom dataset`: training phantoms are "
                        "read from it instead of regenerated (faster)")
    p.add_argument("--heldout-dir", default=None, metavar="DIR",
                   help="a held-out work folder of training/evaluate_heldout.py (images/, gt/): test phantoms are "
                        "read from it instead of regenerated (faster)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result to FILE")

    p = sub.add_parser("info", help="print each phantom's geometry and tumour facts as JSON lines",
                       description="One JSON line per seed: uuid, size, spacing, origin, direction, tumour "
                                   "diameter, lobes, location, tumour and pancreas volume, intensity scale.")
    p.add_argument("--task", type=int, choices=(1, 2), required=True, help="1 (T1 arterial) or 2 (T2 MR-Linac)")
    p.add_argument("--seeds", required=True, help=SEEDS_HELP)


def baseline_summary(res: dict) -> str:
    """A few lines for people: each baseline's rule, mean train and test tumour Dice."""
    rows = [("whole body, one-sided", res["whole_body"]["one_sided"]), ("whole body, band", res["whole_body"]["band"]),
            ("in the true pancreas", res["in_pancreas"])]
    out = [f"Task {res['task']} tumour Dice, fitted on seeds {res['train_seeds']}, tested on {res['test_seeds']}:"]
    for name, r in rows:
        test = "-" if r["test_dice_mean"] is None else f"{r['test_dice_mean']:.3f}"
        out.append(f"  {name:<22} train {r['train_dice']:.3f}  test {test}   ({r['rule']})")
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    from .. import phantoms

    act = args.phantom_action
    if act == "socket":
        ipath, _ = phantoms.write_socket_case(args.out, args.task, args.seed, ground_truth_dir=args.ground_truth)
        print(ipath)
    elif act == "dataset":
        root = phantoms.write_nnunet_dataset(args.out, args.task, phantoms.parse_seeds(args.seeds), args.dataset_id,
                                             args.dataset_name or f"PhantomT{args.task}", args.tumour_contrast_scale)
        print(root)
    elif act == "baseline":
        res = phantoms.threshold_baselines(args.task, phantoms.parse_seeds(args.train_seeds),
                                           phantoms.parse_seeds(args.test_seeds), args.dataset_dir,
                                           args.heldout_dir)
        text = json.dumps(res, indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        print(baseline_summary(res), file=sys.stderr)
    elif act == "info":
        for sd in phantoms.parse_seeds(args.seeds):
            print(json.dumps(phantoms.phantom_info(args.task, sd)))
    return 0
