"""Where each member's out-of-fold probability maps are, and reading one of them.

Two layouts: our engine's (`predict --save-probabilities DIR` -> DIR/<member>/<case>.npz with the label
names inside) and nnU-Net's model folder (fold_*/validation/<case>.npz, label names from dataset.json).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError

log = logging.getLogger(__name__)


@dataclass
class MemberSource:
    name: str
    path: Path
    kind: str  # "npz" (our --save-probabilities format) or "nnunet" (model folder, fold_*/validation)
    files: dict[str, Path]
    labels: tuple[str, ...] | None = None  # nnunet: from dataset.json; npz: from the files (checked per file)


def find_member(name: str, path: Path) -> MemberSource:
    """Recognise the folder's layout and list its cases (reads no map)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, f"member {name}: out-of-fold folder does not exist")
    fold_dirs = sorted(p for p in path.glob("fold_*") if p.is_dir())
    if (path / "dataset.json").is_file() or fold_dirs:
        return _nnunet_member(name, path, fold_dirs)
    files = {f.stem: f for f in sorted(path.glob("*.npz")) if not f.name.startswith(".")}
    if not files:
        raise InputError(path, f"member {name}: no out-of-fold probability maps (expected <case>.npz files from "
                               "`predict --save-probabilities`, or an nnU-Net model folder with "
                               "fold_*/validation/*.npz)")
    log.info("member %s: %d probability maps in %s", name, len(files), path)
    return MemberSource(name, path, "npz", files, None)


def _nnunet_member(name: str, path: Path, fold_dirs: list[Path]) -> MemberSource:
    files: dict[str, Path] = {}
    used = []
    for fd in fold_dirs:
        if not re.fullmatch(r"fold_\d+", fd.name):
            log.warning("member %s: %s skipped (not a cross-validation fold, so not out-of-fold)", name, fd)
            continue
        val = fd / "validation"
        found = sorted(val.glob("*.npz")) if val.is_dir() else []
        if found:
            used.append(fd.name)
        for f in found:
            if f.stem in files:
                raise InputError(f, f"member {name}: case {f.stem} also in {files[f.stem]} (a case may be "
                                    "validated in one fold only)")
            files[f.stem] = f
    if not files:
        raise InputError(path, f"member {name}: nnU-Net model folder without fold_*/validation/*.npz "
                               "(train with --npz, or run nnUNetv2_train --val --npz)")
    labels = _dataset_labels(path / "dataset.json", name)
    log.info("member %s: nnU-Net model folder %s, %d out-of-fold maps from %s", name, path, len(files),
             ", ".join(used))
    return MemberSource(name, path, "nnunet", files, labels)


def _dataset_labels(path: Path, name: str) -> tuple[str, ...]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, f"member {name}: nnU-Net model folder has no dataset.json (label names)") from None
    except ValueError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    labels = raw.get("labels") if isinstance(raw, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise InputError(path, "no \"labels\" mapping name -> index")
    if any(not isinstance(v, int) or isinstance(v, bool) for v in labels.values()):
        raise InputError(path, "labels must map names to single integers (region-based training is not "
                               "supported: its maps are not softmax probabilities)")
    order = sorted(labels.items(), key=lambda kv: kv[1])
    if [v for _, v in order] != list(range(len(order))):
        raise InputError(path, f"label indices must be 0..{len(order) - 1}, got {sorted(labels.values())}")
    return tuple(k for k, _ in order)


def read_map(source: MemberSource, cid: str) -> tuple[np.ndarray, tuple[str, ...], tuple[float, ...] | None]:
    """(probabilities (labels, z, y, x) as stored, label names, spacing or None) of one case."""
    path = source.files[cid]
    try:
        with np.load(path, allow_pickle=False) as z:
            if "probabilities" not in z:
                raise InputError(path, f"no 'probabilities' array in the npz (keys: {', '.join(z.files)})")
            probs = z["probabilities"]
            labels = tuple(str(x) for x in z["labels"]) if "labels" in z else None
            spacing = tuple(float(x) for x in z["spacing"]) if "spacing" in z else None
    except (OSError, ValueError, EOFError) as exc:  # corrupt or truncated file
        raise InputError(path, f"cannot read npz ({exc})") from None
    if source.kind == "nnunet":
        labels = source.labels
    elif labels is None:
        raise InputError(path, "no 'labels' array in the npz (written by `predict --save-probabilities`?)")
    elif source.labels is None:
        source.labels = labels
    elif labels != source.labels:
        raise InputError(path, f"label names {list(labels)} differ from this member's other maps "
                               f"{list(source.labels)}")
    if probs.ndim != 4 or probs.shape[0] != len(labels):
        raise InputError(path, f"probabilities of shape {probs.shape} do not fit {len(labels)} labels "
                               f"{list(labels)} (expected (labels, z, y, x))")
    if not np.issubdtype(probs.dtype, np.floating):
        raise InputError(path, f"probabilities must be floating point, got {probs.dtype}")
    return probs, labels, spacing


def peek_labels(source: MemberSource, tumor_label: str) -> tuple[str, ...]:
    """The member's label names without reading a probability map (npz members are read lazily)."""
    if source.labels is None:
        path = next(iter(source.files.values()))
        try:
            with np.load(path, allow_pickle=False) as z:
                if "labels" not in z:
                    raise InputError(path, "no 'labels' array in the npz (written by `predict --save-probabilities`?)")
                source.labels = tuple(str(x) for x in z["labels"])
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(path, f"cannot read npz ({exc})") from None
    check_member_labels(source, source.labels, tumor_label)
    return source.labels


def check_member_labels(m: MemberSource, labels: tuple[str, ...], tumor_label: str) -> None:
    """The labels must hold the tumour and 'background', each name once."""
    where = m.path
    if tumor_label not in labels:
        raise InputError(where, f"member {m.name}: labels {list(labels)} have no {tumor_label!r} (the spec's "
                                "tumor_label)")
    if "background" not in labels:
        raise InputError(where, f"member {m.name}: labels {list(labels)} have no 'background'")
    if len(set(labels)) != len(labels):
        raise InputError(where, f"member {m.name}: duplicate label names {list(labels)}")
