"""Benchmark scenarios: an image and a set of members, prepared once into a work folder.

Images are phantoms (panther_ensemble.phantoms) resampled onto an exact grid so every run sees the sizes
the issue names. Members are the shipped specialists (resources/task<N>.json) or random-weight networks
built from plans in nnU-Net's format (tests/modelfactory.py), balanced so that every class wins somewhere.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

SCENARIOS = {
    "task1-shipped": {
        "description": "Task 1 phantom 72 x 258 x 318 at 3.0 x 1.19 x 1.19 mm; the shipped Task 1 specialists "
                       "(2 members x 2 folds), no mirroring, tile step 0.5",
        "task": 1, "image": {"task": 1, "seed": 3001, "shape": (72, 258, 318), "spacing": (3.0, 1.19, 1.19)},
        "members": "shipped",
    },
    "task1-larger": {
        "description": "the same Task 1 image; a larger pair: 5-stage PlainConvUNet 16-256 at the image's native "
                       "3.0 x 1.19 x 1.19 mm, patch 32 x 128 x 128, random weights, 1 fold each, no mirroring",
        "task": 1, "image": {"task": 1, "seed": 3001, "shape": (72, 258, 318), "spacing": (3.0, 1.19, 1.19)},
        "members": "larger",
    },
    "task1-iso1mm": {
        "description": "the same Task 1 image; one member at 1 mm isotropic (network grid 216 x 307 x 378), "
                       "4-stage 8-64 network, patch 64 x 96 x 96, random weights, 1 fold, no mirroring: "
                       "nnU-Net's CPU resampling dominates",
        "task": 1, "image": {"task": 1, "seed": 3001, "shape": (72, 258, 318), "spacing": (3.0, 1.19, 1.19)},
        "members": "iso1mm",
    },
    "task2-large": {
        "description": "Task 2 phantom resampled to 200 x 400 x 400; the shipped Task 2 specialists, no mirroring",
        "task": 2, "image": {"task": 2, "seed": 3002, "shape": (200, 400, 400), "spacing": None},
        "members": "shipped",
    },
}
DEFAULT = ("task1-shipped", "task1-larger", "task1-iso1mm", "task2-large")


def make_image(task: int, seed: int, shape, spacing, path: Path) -> None:
    """A phantom resampled onto exactly `shape` (z, y, x) over the same physical extent (linear)."""
    import SimpleITK as sitk

    from panther_ensemble.phantoms import generate_phantom

    image, _ = generate_phantom(task, seed)
    size_xyz = tuple(int(s) for s in reversed(shape))
    if spacing is None:
        extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
        spacing_xyz = tuple(float(e / s) for e, s in zip(extent, size_xyz))
    else:
        spacing_xyz = tuple(float(s) for s in reversed(spacing))
    ref = sitk.Image(size_xyz, sitk.sitkFloat32)
    ref.SetSpacing(spacing_xyz)
    ref.SetOrigin(image.GetOrigin())
    ref.SetDirection(image.GetDirection())
    out = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, 0.0)
    sitk.WriteImage(sitk.Cast(sitk.Round(out), sitk.sitkInt16), str(path), True)


def shipped_members(task: int) -> list[dict]:
    from panther_ensemble.spec import load_spec

    spec = load_spec(REPO / "resources" / f"task{task}.json")
    return [{"name": m.name, "folder": str(REPO / "model_weights" / m.model), "folds": list(m.folds),
             "mirroring": False, "tile_step_size": m.tile_step_size} for m in spec.members if m.weight > 0]


def random_members(kind: str, work: Path) -> list[dict]:
    import modelfactory as mf

    from panther_ensemble.spec import load_spec

    template_spec = load_spec(REPO / "resources" / "task1.json")
    template = json.loads((REPO / "model_weights" / template_spec.members[0].model / "plans.json").read_text())
    cfg_name = "3d_fullres"
    members = []
    specs = {"larger": [("larger_a", 11), ("larger_b", 12)], "iso1mm": [("iso1mm", 21)]}[kind]
    for name, seed in specs:
        plans = copy.deepcopy(template)
        cfg = plans["configurations"][cfg_name]
        if kind == "larger":
            cfg["spacing"] = [3.0, 1.19, 1.19]
            cfg["patch_size"] = [32, 128, 128]
            cfg["architecture"] = mf.plain_unet_arch(features=(16, 32, 64, 128, 256),
                                                     strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]])
            n_conv = 2
        else:
            cfg["spacing"] = [1.0, 1.0, 1.0]
            cfg["patch_size"] = [64, 96, 96]
            cfg["architecture"] = mf.plain_unet_arch(features=(8, 16, 32, 64),
                                                     strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
            n_conv = 2
        arch = cfg["architecture"]["arch_kwargs"]
        arch["n_conv_per_stage"] = [n_conv] * arch["n_stages"]
        arch["n_conv_per_stage_decoder"] = [n_conv] * (arch["n_stages"] - 1)
        plans["configurations"] = {cfg_name: cfg}
        dataset_json = json.loads((REPO / "model_weights" / template_spec.members[0].model / "dataset.json").read_text())
        folder = mf.make_model_folder(work / "models", name, plans, folds=(0,), seed=seed,
                                      trainer_name="nnUNetTrainer", dataset_json=dataset_json)
        members.append({"name": name, "folder": str(folder), "folds": [0], "mirroring": False,
                        "tile_step_size": 0.5})
    return members


def stock_copy(folder: Path, dest: Path) -> Path:
    """A copy whose checkpoints name `nnUNetTrainer`, which nnU-Net's own loader can import."""
    import torch

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(folder, dest)
    for ckpt_path in dest.glob("fold_*/checkpoint_*.pth"):
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # our own files
        ckpt["trainer_name"] = "nnUNetTrainer"
        ckpt.setdefault("init_args", {}).setdefault("configuration", "3d_fullres")
        torch.save(ckpt, ckpt_path)
    return dest


def prepare(name: str, work: Path) -> dict:
    s = SCENARIOS[name]
    work.mkdir(parents=True, exist_ok=True)
    img = s["image"]
    image_path = work / f"{name}.mha"
    if not image_path.exists():
        make_image(img["task"], img["seed"], img["shape"], img["spacing"], image_path)
    members = shipped_members(s["task"]) if s["members"] == "shipped" else random_members(s["members"], work)
    for m in members:
        m["stock_folder"] = str(stock_copy(Path(m["folder"]), work / "stock" / f"{name}-{m['name']}"))
    scenario = {"name": name, "task": s["task"], "image": str(image_path), "members": members}
    (work / f"{name}.scenario.json").write_text(json.dumps(scenario, indent=2))
    return scenario


def load(name: str, work: Path) -> dict:
    return json.loads((work / f"{name}.scenario.json").read_text())
