"""Sliding-window prediction against nnU-Net's predictor, tile for tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

import modelfactory as mf
from panther_ensemble.inference.sliding_window import mirror_combinations, predict_logits, tile_slicers


def predictor_for(plans, networks_params, network, mirror_axes, use_mirroring=True, step=0.5):
    dataset_json = mf.make_dataset_json()
    pm = PlansManager(plans)
    p = nnUNetPredictor(tile_step_size=step, use_gaussian=True, use_mirroring=use_mirroring,
                        perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    p.manual_initialization(network, pm, pm.get_configuration("3d_fullres"), networks_params, dataset_json,
                            "nnUNetTrainer", mirror_axes)
    return p


def make_networks(plans, n, seed=0):
    nets = []
    for i in range(n):
        torch.manual_seed(seed + i)
        net = mf.build_network(plans, mf.make_dataset_json())
        mf._calibrate(net, plans["configurations"]["3d_fullres"]["patch_size"], 4.0, seed + i)
        nets.append(net.eval())
    return nets


@pytest.mark.parametrize("image_shape,patch,step", [((20, 50, 61), (8, 32, 32), 0.5), ((5, 40, 40), (8, 32, 32), 0.5),
                                                    ((31, 70, 33), (16, 16, 16), 0.75), ((9, 50, 47), (32, 32), 0.5)])
def test_tile_placement_is_nnunets(image_shape, patch, step):
    plans = mf.make_plans(patch_size=patch)
    p = predictor_for(plans, None, None, None, step=step)
    # nnU-Net places tiles on the image padded to at least the patch size
    padded = tuple(max(s, q) for s, q in zip(image_shape[-len(patch):], patch))
    padded = image_shape[: len(image_shape) - len(patch)] + padded
    expected = [s[1:] for s in p._internal_get_sliding_window_slicers(padded)]
    assert tile_slicers(padded, patch, step) == expected


def test_mirror_combinations_order():
    assert mirror_combinations(None) == [()]
    assert mirror_combinations((0, 1, 2)) == [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]


@pytest.mark.parametrize("mirror", [None, (0, 2)])
def test_fp16_fold_accumulation_matches_nnunet_bit_for_bit(mirror):
    plans = mf.make_plans(patch_size=(8, 32, 32))
    nets = make_networks(plans, 2)
    data = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 12, 40, 45)).astype(np.float32))
    ref_net = mf.build_network(plans, mf.make_dataset_json()).eval()
    p = predictor_for(plans, [n.state_dict() for n in nets], ref_net, mirror, use_mirroring=mirror is not None)
    reference = p.predict_logits_from_preprocessed_data(data)
    ours = predict_logits(data, nets, 3, (8, 32, 32), 0.5, mirror, accumulate_dtype=torch.float16)
    assert ours.dtype == reference.dtype == torch.float16
    assert torch.equal(ours, reference)


def test_fp32_accumulation_and_batched_mirrors_agree_with_reference():
    plans = mf.make_plans(patch_size=(8, 32, 32))
    nets = make_networks(plans, 2, seed=5)
    data = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 12, 40, 44)).astype(np.float32))
    half = predict_logits(data, nets, 3, (8, 32, 32), 0.5, (1, 2), accumulate_dtype=torch.float16)
    full = predict_logits(data, nets, 3, (8, 32, 32), 0.5, (1, 2), accumulate_dtype=torch.float32)
    batched = predict_logits(data, nets, 3, (8, 32, 32), 0.5, (1, 2), accumulate_dtype=torch.float32,
                             batch_mirrors=True)
    assert full.dtype == torch.float32
    assert torch.allclose(full, batched, atol=1e-4)
    # nnU-Net's float16 accumulators quantise the logits where only the Gaussian's far tails reach (the
    # image corners: weights below float16 resolution); away from the border both agree to fp16 precision
    interior = (slice(None), slice(2, -2), slice(8, -8), slice(8, -8))
    scale = full.abs().max().item()
    assert (full[interior] - half.float()[interior]).abs().max().item() < 2e-3 * scale
    assert (full.argmax(0) == half.float().argmax(0)).float().mean() > 0.99


@pytest.mark.parametrize("mirror,batch_mirrors,tiles_per_batch", [(None, False, 4), ((1, 2), False, 7),
                                                                  ((1, 2), True, 4), (None, False, 100)])
def test_tile_batches_equal_one_tile_per_call(mirror, batch_mirrors, tiles_per_batch):
    """Fast mode (float32, one accumulator for all folds), oneDNN convolutions (whose kernels may round a
    batch differently): several tiles per forward call give batch 1's logits within float32 tolerance."""
    from panther_ensemble.runtime import use_onednn_convolutions

    plans = mf.make_plans(patch_size=(8, 32, 32))
    nets = make_networks(plans, 2, seed=9)
    for net in nets:
        use_onednn_convolutions(net)
    data = torch.from_numpy(np.random.default_rng(4).normal(size=(1, 13, 50, 47)).astype(np.float32))
    n = len(tile_slicers((13, 50, 47), (8, 32, 32), 0.5))
    assert n == 18  # batches of 4 and 7 leave a ragged last batch; 100 makes one batch
    seen = []
    one = predict_logits(data, nets, 3, (8, 32, 32), 0.5, mirror, accumulate_dtype=torch.float32,
                         batch_mirrors=batch_mirrors)
    many = predict_logits(data, nets, 3, (8, 32, 32), 0.5, mirror, accumulate_dtype=torch.float32,
                          batch_mirrors=batch_mirrors, tiles_per_batch=tiles_per_batch,
                          on_tile=lambda d, t: seen.append(d))
    assert many.dtype == torch.float32 and many.shape == one.shape
    assert (many - one).abs().max().item() <= 1e-5 * one.abs().max().item()
    assert seen == [min(n, b) for b in range(tiles_per_batch, n + tiles_per_batch, tiles_per_batch)]


def test_tile_batches_in_half_precision_per_fold_equal_batch_one():
    """nnU-Net's float16 per-fold accumulation with tiles batched: the same additions in the same order, equal
    within float16 rounding. Not bit for bit: even PyTorch's stock CPU convolution rounds a batch of tiles
    differently from single tiles (measured), which is why faithful mode keeps one tile per call
    (runtime.Runtime.tiles_per_batch) and stays bit-identical to nnU-Net."""
    from panther_ensemble.runtime import use_onednn_convolutions

    plans = mf.make_plans(patch_size=(8, 32, 32))
    nets = make_networks(plans, 2, seed=11)
    for net in nets:
        use_onednn_convolutions(net)
    data = torch.from_numpy(np.random.default_rng(5).normal(size=(1, 12, 40, 45)).astype(np.float32))
    one = predict_logits(data, nets, 3, (8, 32, 32), 0.5, (0,), accumulate_dtype=torch.float16)
    many = predict_logits(data, nets, 3, (8, 32, 32), 0.5, (0,), accumulate_dtype=torch.float16,
                          tiles_per_batch=4)
    assert (many.float() - one.float()).abs().max().item() <= 2e-3 * one.float().abs().max().item()


def test_tiles_per_batch_must_be_positive():
    with pytest.raises(ValueError, match="tiles_per_batch"):
        predict_logits(torch.zeros((1, 8, 32, 32)), [lambda x: x], 1, (8, 32, 32), tiles_per_batch=0)


def test_2d_configuration_matches_nnunet():
    plans = mf.make_plans(spacing=(1.5, 1.5), patch_size=(32, 32), architecture=mf.plain_unet_arch_2d())
    torch.manual_seed(3)
    net = mf.build_network(plans, mf.make_dataset_json()).eval()
    data = torch.from_numpy(np.random.default_rng(2).normal(size=(1, 4, 40, 37)).astype(np.float32))
    ref_net = mf.build_network(plans, mf.make_dataset_json()).eval()
    p = predictor_for(plans, [net.state_dict()], ref_net, (0, 1))
    reference = p.predict_logits_from_preprocessed_data(data)
    ours = predict_logits(data, [net], 3, (32, 32), 0.5, (0, 1), accumulate_dtype=torch.float16)
    assert torch.equal(ours, reference)


def test_progress_callback_counts_tiles():
    plans = mf.make_plans(patch_size=(8, 32, 32))
    nets = make_networks(plans, 1)
    seen = []
    data = torch.zeros((1, 10, 40, 40))
    predict_logits(data, nets, 3, (8, 32, 32), 0.5, None, on_tile=lambda d, t: seen.append((d, t)))
    n = len(tile_slicers((10, 40, 40), (8, 32, 32), 0.5))
    assert seen == [(i + 1, n) for i in range(n)] and n == 2 * 2 * 2


@pytest.mark.parametrize("patch", [(8, 32, 32), (24, 80, 80), (33, 47, 20), (32, 32)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_separable_gaussian_is_nnunets_bit_for_bit(patch, dtype):
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    from panther_ensemble.inference.sliding_window import gaussian_importance_map

    reference = compute_gaussian(patch, sigma_scale=1.0 / 8, value_scaling_factor=10, dtype=dtype,
                                 device=torch.device("cpu"))
    assert torch.equal(gaussian_importance_map(patch, dtype, torch.device("cpu")), reference)
