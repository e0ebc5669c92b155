"""training/summarize.py --keep: exporting one task (TASKS=2 reproduce.sh export) rewrites training/results.md;
the rows of the task that was not trained on this machine must stay (on 2026-12-03 they were dropped)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tinydata import TINY

REPO = Path(__file__).resolve().parents[1]
EARLIER = """# Phantom specialists

Training (training/train_specialist.py; `train min` of a resumed run counts the last run only):

| dataset | member | trainer, plans | fold | epochs x iterations | train min | last pseudo Dice (tumour, pancreas) |
|---|---|---|---|---|---|---|
| Dataset901_PhantomT1 | default | nnUNetTrainerPhantom, nnUNetPlansPhantom | 0 | 36 x 50 | 26.7 (resumed) | 0.674, 0.863 |
| Dataset902_PhantomT2 | default | nnUNetTrainerPhantom, nnUNetPlansPhantom | 0 | 12 x 50 | 12.8 | 0.603, 0.791 |

Out-of-fold (training/predict_oof.py: the input of `fit`):

| dataset | member | out-of-fold cases | tumour Dice (mean) | cases with tumour Dice >= 0.5 |
|---|---|---|---|---|
| Dataset901_PhantomT1 | default | 60 | 0.613 | 45/60 |
| Dataset902_PhantomT2 | default | 60 | 0.445 | 28/60 |
"""


def _summarize(tmp_path: Path, *args: str) -> str:
    data = tmp_path / "data"
    env = dict(os.environ, nnUNet_results=str(data / "nnUNet_results"), nnUNet_raw=str(data / "nnUNet_raw"),
               PANTHER_DATA=str(data))
    proc = subprocess.run([sys.executable, str(REPO / "training" / "summarize.py"), *args], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_rows_of_a_dataset_not_trained_here_are_kept_and_those_trained_here_replace_theirs(tmp_path):
    earlier = tmp_path / "results.md"
    earlier.write_text(EARLIER)
    (tmp_path / "data" / "nnUNet_results").mkdir(parents=True)
    assert _summarize(tmp_path, "--keep", str(earlier)).strip() == EARLIER.strip()  # nothing here: all kept
    assert "Dataset90" not in _summarize(tmp_path)  # without --keep: only what is here

    # a real trained Task 2 run here (the tiny fixture's checkpoint, 2 epochs): its row replaces Task 2's rows
    run = tmp_path / "data" / "nnUNet_results" / "Dataset902_PhantomT2" / TINY.name / "fold_0"
    run.mkdir(parents=True)
    shutil.copy(TINY / "fold_0" / "checkpoint_final.pth", run / "checkpoint_final.pth")
    (run / "phantom_timing.json").write_text(json.dumps({"epochs": 2, "iterations_per_epoch": 2, "train_s": 6.0}))
    out = _summarize(tmp_path, "--keep", str(earlier)).splitlines()
    t1 = [line for line in out if line.startswith("| Dataset901_PhantomT1 |")]
    t2 = [line for line in out if line.startswith("| Dataset902_PhantomT2 |")]
    assert t1 == [line for line in EARLIER.splitlines() if line.startswith("| Dataset901_PhantomT1 |")]
    assert t2 == ["| Dataset902_PhantomT2 | default | nnUNetTrainerPhantom, nnUNetPlansTiny | 0 | 2 x 2 | 0.1 | "
                  "0.173, 0.000 |"]
