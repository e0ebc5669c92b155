"""The two training folds of the phantom specialists: first half / second half of the sorted case names.

One definition for make_plans.py (which writes it as nnU-Net's splits_final.json) and predict_oof.py
(which needs it without the plan step when the shipped models are re-scored: reproduce.sh MODELS=shipped).
"""

from __future__ import annotations

import json
from pathlib import Path


def two_fold_splits(raw_dataset: Path) -> list[dict]:
    """nnU-Net's splits_final.json content for the raw dataset's labelled cases: fold 0 validates on the
    first half of the sorted case names, fold 1 on the second half."""
    ending = json.loads((raw_dataset / "dataset.json").read_text())["file_ending"]
    cases = sorted(p.name[: -len(ending)] for p in (raw_dataset / "labelsTr").glob(f"*{ending}"))
    if len(cases) < 2:
        raise SystemExit(f"{raw_dataset / 'labelsTr'}: need at least 2 labelled cases for two folds, found {len(cases)}")
    half = len(cases) // 2
    a, b = cases[:half], cases[half:]
    return [{"train": b, "val": a}, {"train": a, "val": b}]
