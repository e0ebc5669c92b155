"""Phantoms written to disk: nnU-Net v2 raw datasets, grand-challenge socket cases, facts, file names."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..io import INPUT_SOCKETS
from .generate import generate_phantom, make_phantom, to_image

log = logging.getLogger(__name__)

SLUGS = {task: slug for slug, task in INPUT_SOCKETS.items()}  # {1: "abdominal-t1-mri", 2: "abdominal-t2-mri"}
LABELS = {"background": 0, "tumor": 1, "pancreas": 2}


def case_uuid(task: int, seed: int) -> str:
    """The phantom's file name stem: a version-4 uuid drawn from its own stream of the seeded generator."""
    rng = np.random.default_rng([int(task), int(seed), 0x5E11])
    return str(uuid.UUID(int=int(rng.integers(0, 2 ** 63)) << 64 | int(rng.integers(0, 2 ** 63)), version=4))


_phantom_uuid = case_uuid  # write_socket_case has an argument of that name


def nnunet_case_name(task: int, seed: int) -> str:
    """The case identifier in an nnU-Net raw dataset: phantom_t<task>_<seed:04d>."""
    return f"phantom_t{int(task)}_{int(seed):04d}"


def phantom_info(task: int, seed: int) -> dict:
    """Geometry and tumour facts of one phantom (generates it)."""
    ph = make_phantom(task, seed)
    geom = ph.geometry
    vox = float(np.prod(geom.spacing_zyx))  # (z * y) * x, as phantom version 1 rounded it
    info = dict(ph.facts)
    info.update(uuid=case_uuid(task, seed), size_zyx=list(geom.shape_zyx), spacing_zyx=list(geom.spacing_zyx),
                origin_xyz=list(geom.origin_xyz), direction=list(geom.direction),
                tumour_ml=round(int((ph.label == 1).sum()) * vox / 1000, 3),
                pancreas_ml=round(int((ph.label == 2).sum()) * vox / 1000, 3))
    return info


def _write(im: sitk.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(im, str(path), useCompression=True)


def write_nnunet_dataset(out_dir, task: int, seeds, dataset_id: int, dataset_name: str,
                         tumour_contrast_scale: float = 1.0) -> Path:
    """nnU-Net v2 raw dataset out_dir/DatasetXXX_Name with one case per seed; returns its folder."""
    seeds = [int(v) for v in seeds]
    root = Path(out_dir) / f"Dataset{int(dataset_id):03d}_{dataset_name}"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for sd in seeds:
        case = nnunet_case_name(task, sd)
        img, lab = generate_phantom(task, sd, tumour_contrast_scale)
        _write(img, root / "imagesTr" / f"{case}_0000.mha")
        _write(lab, root / "labelsTr" / f"{case}.mha")
        log.info("wrote %s", case)
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": dict(LABELS),
        "numTraining": len(seeds),
        "file_ending": ".mha",
        "name": dataset_name,
        "description": f"synthetic PANTHER Task {task} phantoms (panther_ensemble.phantoms), seeds {format_seeds(seeds)}"
                       + (f", tumour contrast x{tumour_contrast_scale}" if tumour_contrast_scale != 1.0 else ""),
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root


def write_socket_case(out_dir, task: int, seed: int, case_uuid: str | None = None, ground_truth_dir=None):
    """PANTHER socket layout: out_dir/images/<slug>/<uuid>.mha and out_dir/inputs.json.

    The uuid defaults to the one drawn from the phantom's own generator.  When ground_truth_dir is
    given the label is written there as <uuid>.mha.  Returns (image path, label image).
    """
    ph = make_phantom(task, seed)
    uid = case_uuid or _phantom_uuid(task, seed)
    slug = SLUGS[int(task)]
    out = Path(out_dir)
    ipath = out / "images" / slug / f"{uid}.mha"
    _write(to_image(ph.image, ph.geometry), ipath)
    inputs = [{"interface": {"slug": slug, "kind": "Image", "relative_path": f"images/{slug}"},
               "image": {"name": f"{uid}.mha"}}]
    (out / "inputs.json").write_text(json.dumps(inputs, indent=2) + "\n")
    label = to_image(ph.label, ph.geometry)
    if ground_truth_dir is not None:
        _write(label, Path(ground_truth_dir) / f"{uid}.mha")
    return ipath, label


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part.split("-", 1) if not part.startswith("-") else (part, part)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def format_seeds(seeds) -> str:
    """[3, 4, 5, 6] -> '3-6'; otherwise a comma-separated list."""
    seeds = sorted(int(v) for v in seeds)
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(v) for v in seeds)
