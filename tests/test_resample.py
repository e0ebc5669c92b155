"""The torch twins of nnU-Net's resampling functions against the originals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
from nnunetv2.preprocessing.resampling.resample_torch import resample_torch_fornnunet
from scipy.ndimage import gaussian_filter

from panther_ensemble.inference.resample import TorchResampling

CASES = [  # (shape, current spacing, new spacing, new shape): isotropic-ish, anisotropic (separate z), down, up
    ((14, 40, 45), (3.0, 1.5, 1.5), (3.0, 1.2, 1.2), (14, 50, 56)),
    ((14, 40, 45), (4.0, 1.0, 1.0), (3.0, 1.3, 1.2), (19, 31, 38)),
    ((20, 30, 33), (1.0, 1.0, 1.0), (3.0, 1.2, 1.2), (7, 25, 28)),
    ((10, 30, 33), (3.0, 1.19, 1.19), (1.0, 1.0, 1.0), (30, 36, 39)),
    ((12, 30, 20), (2.0, 2.0, 2.5), (3.0, 1.2, 1.2), (8, 50, 42)),
]


def smooth(shape, channels, seed=0):
    rng = np.random.default_rng(seed)
    return (gaussian_filter(rng.normal(size=(channels, *shape)), (0, 1.2, 1.2, 1.2)) * 100 + 50).astype(np.float32)


@pytest.mark.parametrize("shape,cur,new,new_shape", CASES)
@pytest.mark.parametrize("order", [3, 1])
def test_spline_twin_matches_skimage_resampling(shape, cur, new, new_shape, order):
    x = smooth(shape, 2)
    reference = resample_data_or_seg_to_shape(x, new_shape, cur, new, is_seg=False, order=order, order_z=0,
                                              force_separate_z=None)
    how = TorchResampling.from_plans("resample_data_or_seg_to_shape",
                                     {"is_seg": False, "order": order, "order_z": 0, "force_separate_z": None})
    ours = how(torch.from_numpy(x), new_shape, cur, new).numpy()
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 1e-5 * np.abs(reference).max()


@pytest.mark.parametrize("force", [True, False])
def test_spline_twin_forced_separate_z(force):
    shape, cur, new, new_shape = CASES[0]
    x = smooth(shape, 1, seed=3)
    reference = resample_data_or_seg_to_shape(x, new_shape, cur, new, False, 3, 0, force)
    ours = TorchResampling("spline", 3, 0, force)(torch.from_numpy(x), new_shape, cur, new).numpy()
    assert np.abs(ours - reference).max() < 1e-5 * np.abs(reference).max()


@pytest.mark.parametrize("shape,cur,new,new_shape", CASES)
def test_interpolate_twin_matches_nnunet_torch_resampling(shape, cur, new, new_shape):
    x = smooth(shape, 3, seed=1)
    reference = resample_torch_fornnunet(torch.from_numpy(x), new_shape, cur, new, is_seg=False)
    how = TorchResampling.from_plans("resample_torch_fornnunet", {"is_seg": False, "force_separate_z": None})
    ours = how(torch.from_numpy(x), new_shape, cur, new)
    assert torch.allclose(ours, reference, atol=1e-4)


def test_same_shape_is_untouched_and_unknown_functions_have_no_twin():
    x = torch.ones((1, 4, 5, 6))
    how = TorchResampling.from_plans("resample_data_or_seg_to_shape", {"order": 3})
    assert how(x, (4, 5, 6), (1, 1, 1), (1, 1, 1)) is x
    assert TorchResampling.from_plans("my_custom_resampler", {}) is None
    assert TorchResampling.from_plans("resample_data_or_seg_to_shape", {"is_seg": True}) is None
