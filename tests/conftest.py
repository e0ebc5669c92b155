"""Shared fixtures: real nnU-Net model folders and SimpleITK images, made once per test session; the suite's
hooks and the container fixture come from suite_plugin.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).parent))

import modelfactory as mf  # noqa: E402
# the suite's markers (cuda and benchmark skipped with a reason) and the container tests' session fixture
from suite_plugin import container_env, pytest_addoption, pytest_collection_modifyitems  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["pytester"]  # test_suite_plugin.py runs pytest on tiny test files


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    """Weights root with members of different plans.

    A: 3 stages, spacing (3.0, 1.5, 1.5), patch (8, 32, 32), folds 0 and 1, mirroring on all axes.
    B: transpose_forward (1, 2, 0), spacing (2.0, 2.0, 2.5) / patch (24, 24, 8) in transposed order, one fold.
    tumor_only: labels background/tumor only, a ResEnc network and a custom trainer name.
    reordered: labels numbered background 0, pancreas 1, tumor 2.
    """
    root = tmp_path_factory.mktemp("weights")
    mf.make_model_folder(root, "A", mf.make_plans(spacing=(3.0, 1.5, 1.5), patch_size=(8, 32, 32)), folds=(0, 1),
                         seed=1)
    mf.make_model_folder(root, "B", mf.make_plans(spacing=(2.0, 2.0, 2.5), patch_size=(24, 24, 8),
                                                  transpose_forward=(1, 2, 0),
                                                  architecture=mf.plain_unet_arch(strides=[[1, 1, 1], [2, 2, 2],
                                                                                           [2, 2, 1]])),
                         folds=(0,), seed=2)
    mf.make_model_folder(root, "tumor_only", mf.make_plans(spacing=(3.0, 1.5, 1.5), patch_size=(8, 32, 32),
                                                           architecture=mf.resenc_unet_arch()),
                         folds=(0,), seed=3, trainer_name="nnUNetTrainer1e3_150e_DA5",
                         dataset_json=mf.make_dataset_json({"background": 0, "tumor": 1}))
    mf.make_model_folder(root, "reordered", mf.make_plans(spacing=(3.0, 1.5, 1.5), patch_size=(8, 32, 32)),
                         folds=("all",), seed=4,
                         dataset_json=mf.make_dataset_json({"background": 0, "pancreas": 1, "tumor": 2}))
    return root


@pytest.fixture(scope="session")
def mri_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "case_0000.mha"
    sitk.WriteImage(mf.synthetic_mri(), str(path))
    return path
