"""Which network did a run start from? A resumed rebuild must not build on a run that started from a network
that has since been trained afresh (a stage 1 rejected by a stricter floor, docs/results/experiments/pretrain_retry/):
its weights would go on from the old one's features while every later step believes they come from the new one.

train_specialist.py --pretrained P writes pretrained_from.json (P and its sha256) into the run's folder when the
run starts from P. A run found there later (finished, or to be resumed) whose record names other contents than
P's today is moved aside to <fold folder>.stale-<time> and trained afresh. A run without a record (written before
the record existed) is judged once by time: a run whose every checkpoint is older than P cannot have started from
P; one that may have gets its record then, so that a later copy or touch of P (new times, same bytes) does not
move it. A run seeded from a shipped member (seed_from_shipped.py) starts from that member, not from P: never stale.
"""

from __future__ import annotations

import hashlib
import json
import os

RECORD = "pretrained_from.json"
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


class LineageError(Exception):
    """The network a run starts or started from cannot be read: one line for the user."""


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record(fold_folder: str, pretrained: str, judged_by: str | None = None) -> None:
    """Say, in the run's folder, which network the run starts from (call before its first epoch)."""
    os.makedirs(fold_folder, exist_ok=True)
    entry = {"pretrained": os.path.abspath(pretrained), "sha256": sha256(pretrained)}
    if judged_by:
        entry["judged_by"] = judged_by
    path = os.path.join(fold_folder, RECORD)
    with open(path + ".tmp", "w") as f:  # a kill mid-write leaves the old record or none, never half of one
        json.dump(entry, f, indent=2)
    os.replace(path + ".tmp", path)


def forget(fold_folder: str) -> None:
    """A run that starts from scratch: a record left by an earlier start from a network would be false."""
    path = os.path.join(fold_folder, RECORD)
    if os.path.isfile(path):
        os.remove(path)


def _recorded_sha(fold_folder: str) -> str | None:
    try:
        with open(os.path.join(fold_folder, RECORD)) as f:
            return json.load(f)["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none, or unreadable: judged by time


def stale_reason(fold_folder: str, pretrained: str | None) -> str | None:
    """Why the run in fold_folder cannot have started from `pretrained` as it is now; None when it may have (a
    record-less run judged so gets its record), when there is no run there, no --pretrained, or the run was seeded
    from a shipped member. LineageError when `pretrained` is needed and missing."""
    if not pretrained or os.path.isfile(os.path.join(fold_folder, "seeded_from.json")):
        return None
    if not os.path.isfile(pretrained):
        raise LineageError(f"--pretrained {pretrained}: no such file (the network the run in {fold_folder} "
                           "starts or started from)")
    checkpoints = [os.path.join(fold_folder, c) for c in CHECKPOINTS if os.path.isfile(os.path.join(fold_folder, c))]
    if not checkpoints:
        return None
    was = _recorded_sha(fold_folder)
    if was is not None:
        now = sha256(pretrained)
        if was != now:
            return f"it started from another {pretrained} (sha256 {was[:12]}, now {now[:12]})"
        return None
    if max(os.path.getmtime(c) for c in checkpoints) < os.path.getmtime(pretrained):
        return f"its checkpoints are older than {pretrained}, so it cannot have started from it"
    record(fold_folder, pretrained, judged_by="time")
    return None
