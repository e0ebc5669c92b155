"""Our engine against nnU-Net's own code paths, on real model folders (made by the fixtures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

import modelfactory as mf
from panther_ensemble.inference.engine import Engine
from panther_ensemble.runtime import Runtime
from panther_ensemble.io import read_image
from panther_ensemble.spec import parse_spec

BIN = Path(sys.executable).parent


def spec_for(*members, **top):
    return parse_spec({"version": 1, "task": 1, "members": list(members), **top})


def run_engine(spec, models, mri_file):
    image, geometry = read_image(mri_file)
    per_member = {}
    result = Engine(spec, models, Runtime.create("cpu")).predict(
        image, geometry, keep_probabilities=True,
        member_hook=lambda name, p, labels: per_member.__setitem__(name, p.cpu().numpy()))
    return result, per_member


def nnunet_predictor(folder: Path, folds, mirroring=True, step=0.5):
    """nnU-Net's predictor on the same folder: nnU-Net's network builder, weights read as nnU-Net reads them."""
    plans = json.loads((folder / "plans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    pm = PlansManager(plans)
    ckpts = [torch.load(folder / f"fold_{f}" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
             for f in folds]
    predictor = nnUNetPredictor(tile_step_size=step, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(mf.build_network(plans, dataset_json), pm, pm.get_configuration("3d_fullres"),
                                    [c["network_weights"] for c in ckpts], dataset_json, ckpts[0]["trainer_name"],
                                    ckpts[0]["inference_allowed_mirroring_axes"])
    return predictor


@pytest.mark.parametrize("model,folds,mirroring", [("A", [0, 1], True), ("B", [0], True), ("A", [1], False)])
def test_faithful_single_member_reproduces_nnunet_predictor(models, mri_file, model, folds, mirroring):
    spec = spec_for({"name": model, "model": model, "folds": folds, "resampling": "faithful",
                     "mirroring": mirroring, "tile_step_size": 0.5})
    result, per_member = run_engine(spec, models, mri_file)
    image, geometry = read_image(mri_file)
    ref_seg, ref_prob = nnunet_predictor(models / model, folds, mirroring).predict_single_npy_array(
        image[None], {"spacing": list(geometry.spacing_zyx)}, None, None, True)
    ours = per_member[model]
    assert ours.shape == ref_prob.shape
    assert np.abs(ours - ref_prob).max() < 1e-3
    assert (ours.argmax(0) == ref_seg).mean() >= 0.9999
    tumour_fraction = (ref_seg == 1).mean()
    assert 0.05 < tumour_fraction < 0.95  # the comparison is not trivially all-background
    assert (result.mask == (ref_seg == 1)).mean() >= 0.9999


@pytest.mark.slow
def test_two_heterogeneous_members_match_nnunet_cli_ensemble(models, mri_file, tmp_path):
    """nnUNetv2_predict --save_probabilities per member, then nnUNetv2_ensemble: the stock CLI path."""
    inp = tmp_path / "in"
    inp.mkdir()
    os.symlink(mri_file, inp / "case_0000.mha")
    env = {**os.environ, "nnUNet_raw": str(tmp_path), "nnUNet_preprocessed": str(tmp_path),
           "nnUNet_results": str(tmp_path), "nnUNet_def_n_proc": "1"}
    for member, folds in (("A", ["0", "1"]), ("B", ["0"])):
        subprocess.run([BIN / "nnUNetv2_predict_from_modelfolder", "-i", inp, "-o", tmp_path / member,
                        "-m", models / member, "-f", *folds, "--save_probabilities", "-device", "cpu", "-npp", "1",
                        "-nps", "1", "-step_size", "0.5", "--disable_tta", "--disable_progress_bar"],
                       check=True, env=env, capture_output=True)
    subprocess.run([BIN / "nnUNetv2_ensemble", "-i", tmp_path / "A", tmp_path / "B", "-o", tmp_path / "ens",
                    "-np", "1"], check=True, env=env, capture_output=True)
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ens" / "case.mha")))
    ref_prob = (np.load(tmp_path / "A" / "case.npz")["probabilities"]
                + np.load(tmp_path / "B" / "case.npz")["probabilities"]) / 2

    # mirroring is covered by the predictor test above; off here (--disable_tta) to keep CI time down
    members = [{"name": "A", "model": "A", "folds": [0, 1], "resampling": "faithful", "mirroring": False},
               {"name": "B", "model": "B", "folds": [0], "resampling": "faithful", "mirroring": False}]
    result, _ = run_engine(spec_for(*members), models, mri_file)
    assert 0.05 < (reference == 1).mean() < 0.95
    agreement = (result.mask == (reference == 1)).mean()
    assert agreement >= 0.999
    assert np.abs(result.probabilities.numpy() - ref_prob).max() < 1e-3

    # fast mode against the same reference (the figure documented in docs/ARCHITECTURE.md)
    fast = [dict(m, resampling="fast") for m in members]
    fast_result, _ = run_engine(spec_for(*fast), models, mri_file)
    fast_agreement = (fast_result.mask == result.mask).mean()
    print(f"faithful vs nnU-Net CLI: {agreement:.6f}; fast vs faithful: {fast_agreement:.6f}")
    assert fast_agreement >= 0.995
