"""Out-of-fold probability maps of one trained member: fold k's model on fold k's validation cases.

    python training/predict_oof.py --model $nnUNet_results/Dataset901_PhantomT1/nnUNetTrainerPhantom__nnUNetPlansPhantom__3d_fullres \
        --raw $nnUNet_raw/Dataset901_PhantomT1 --out /work/data/oof/Dataset901_PhantomT1/default

Writes OUT/<case>.npz (float16 probabilities on the image grid, label names, spacing: the format of
`panther-ensemble predict --save-probabilities`, read by `panther-ensemble fit`). Cases already written are
skipped (unless older than the fold's checkpoint_final.pth), so an interrupted run resumes and a retrained
fold is predicted again. The folds come from the dataset's splits_final.json.

Why our engine and not nnU-Net's validation: the maps must be what the shipped ensemble computes (fast
resampling, no mirroring, tile step 0.5), and on this CPU nnU-Net's validation of 30 cases took 13 min per
fold, our engine a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from freshness import is_current  # training/, the script's own folder
from splits import two_fold_splits


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="trained nnU-Net model folder (fold_0, fold_1, ...)")
    p.add_argument("--raw", type=Path, required=True, help="the nnU-Net raw dataset (imagesTr)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--splits", type=Path, default=None,
                   help="splits_final.json (default: $nnUNet_preprocessed/<dataset>/splits_final.json; where the "
                        "plan step has not run, e.g. for the shipped models on a fresh machine, the same two folds "
                        "computed from the raw dataset)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--folds", type=int, nargs="+", default=None,
                   help="only these folds (default: every fold of the splits); reproduce.sh runs one process per fold")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of the forward passes (default: every CPU this process may use)")
    a = p.parse_args()

    from panther_ensemble import Ensemble
    from panther_ensemble.io import save_probability_map

    splits_path = a.splits or Path(os.environ["nnUNet_preprocessed"]) / a.raw.name / "splits_final.json"
    if a.splits is None and not splits_path.is_file():
        print(f"{splits_path} not found: using the two folds of training/splits.py on {a.raw}", flush=True)
        splits = two_fold_splits(a.raw)
    else:
        splits = json.loads(splits_path.read_text())
    ending = json.loads((a.raw / "dataset.json").read_text())["file_ending"]
    a.out.mkdir(parents=True, exist_ok=True)
    if a.folds is not None and not set(a.folds) <= set(range(len(splits))):
        p.error(f"--folds {' '.join(map(str, a.folds))}: the splits have folds 0-{len(splits) - 1}")
    for fold, split in enumerate(splits):
        if a.folds is not None and fold not in a.folds:
            continue
        # a map older than its fold's checkpoint came from an earlier training of that fold (a longer
        # schedule, a retrain): predict it again
        checkpoint = a.model / f"fold_{fold}" / "checkpoint_final.pth"
        todo = [c for c in split["val"] if not is_current(a.out / f"{c}.npz", [checkpoint])]
        if not todo:
            continue
        spec = {"version": 1, "task": 2 if "T2" in a.raw.name else 1,
                "members": [{"name": "oof", "model": a.model.name, "folds": [fold], "mirroring": False,
                             "resampling": "fast"}],
                "decision": {"rule": "argmax"}, "description": f"out-of-fold maps of {a.model.name} fold {fold}"}
        ensemble = Ensemble.from_spec(spec, a.model.parent, device=a.device, threads=a.threads)
        for case in todo:
            started = time.perf_counter()
            result = ensemble.segment(a.raw / "imagesTr" / f"{case}_0000{ending}", probabilities=True)
            save_probability_map(a.out / f"{case}.npz", result.probabilities, result.labels, result.geometry.spacing_zyx)
            print(f"fold {fold} {case}: {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
