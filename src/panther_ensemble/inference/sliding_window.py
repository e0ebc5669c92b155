"""Sliding-window prediction: one image, the networks of one member's folds, logits out.

Reproduces nnU-Net's `predict_sliding_window_return_logits` (pad to the patch, tiles placed by
`compute_steps_for_sliding_window`, Gaussian importance weighting with sigma = patch/8 and peak 10,
mirroring averaged in logit space, fold logits averaged with equal weight) but keeps the image, the
accumulators and every fold's weights on the compute device for the whole case, and visits each tile
once for all folds. It knows nothing of plans, files or members: tensors and callables in, tensor out.
Like MONAI's sliding-window inferer it leaves mixed precision to the caller (the engine wraps the call in
runtime's autocast policy) and takes the compute and accumulator devices as arguments.

Rounding: nnU-Net accumulates tile logits in float16 on every device. With `accumulate_dtype=float16`
each fold keeps its own float16 accumulator and sees exactly nnU-Net's sequence of additions, so the
result matches nnU-Net bit for bit on the CPU. With float32 one accumulator serves all folds.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
from scipy.ndimage import gaussian_filter1d

Network = Callable[[torch.Tensor], torch.Tensor]
TileCallback = Callable[[int, int], None]  # (tiles done, tiles total)


def gaussian_importance_map(tile_size: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """nnU-Net's `compute_gaussian(tile_size, sigma_scale=1/8, value_scaling_factor=10)`, bit for bit.

    nnU-Net filters a delta image with a 3D Gaussian (seconds for a large patch, on every cold start). The
    filter is separable and the input a delta, so every output voxel is the product of three 1D kernel
    values, multiplied in the same order scipy's successive 1D passes multiply them: an outer product.
    """
    profiles = []
    for size in tile_size:
        delta = np.zeros(size)
        delta[size // 2] = 1
        profiles.append(gaussian_filter1d(delta, size / 8, mode="constant", cval=0))
    gmap = profiles[0]
    for profile in profiles[1:]:
        gmap = np.multiply.outer(gmap, profile)
    gmap /= np.max(gmap) / 10
    gmap = torch.from_numpy(gmap).to(device=device, dtype=dtype)
    mask = gmap == 0  # a zero weight would divide by zero at the image border
    gmap[mask] = torch.min(gmap[~mask])
    return gmap


def tile_slicers(image_shape: Sequence[int], patch_size: Sequence[int], tile_step_size: float) -> list[tuple]:
    """Spatial slicers of every tile, in nnU-Net's order. A 2D patch on a 3D image tiles each slice."""
    if len(patch_size) == len(image_shape):
        steps = compute_steps_for_sliding_window(tuple(image_shape), tuple(patch_size), tile_step_size)
        return [tuple(slice(s, s + p) for s, p in zip(start, patch_size)) for start in itertools.product(*steps)]
    if len(patch_size) == len(image_shape) - 1:
        steps = compute_steps_for_sliding_window(tuple(image_shape[1:]), tuple(patch_size), tile_step_size)
        return [(d, *(slice(s, s + p) for s, p in zip(start, patch_size)))
                for d in range(image_shape[0]) for start in itertools.product(*steps)]
    raise ValueError(f"patch {tuple(patch_size)} does not fit an image of {len(image_shape)} dimensions")


def mirror_combinations(mirror_axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """Flip-axis combinations (tensor dims of a batched input) in nnU-Net's order, unflipped first."""
    if not mirror_axes:
        return [()]
    axes = [a + 2 for a in mirror_axes]
    return [()] + [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]


def predict_tiles(network: Network, x: torch.Tensor, flips: list[tuple[int, ...]], batch_mirrors: bool) -> torch.Tensor:
    """Network logits for a batch of tiles (n, channels, *patch), each averaged over its mirrored copies in
    nnU-Net's summation order. Every operation is elementwise per tile, so a tile's result depends on the
    others only through the network's own kernels (which may pick other algorithms for another batch size)."""
    n = x.shape[0]
    if batch_mirrors and len(flips) > 1:
        outputs = network(torch.cat([torch.flip(x, f) if f else x for f in flips]))
        prediction = outputs[0:n].clone()
        for i, f in enumerate(flips[1:], start=1):
            prediction += torch.flip(outputs[i * n:(i + 1) * n], f)
    else:
        prediction = network(x)
        for f in flips[1:]:
            prediction += torch.flip(network(torch.flip(x, f)), f)
    if len(flips) > 1:
        prediction /= len(flips)
    return prediction


def predict_tile(network: Network, x: torch.Tensor, flips: list[tuple[int, ...]], batch_mirrors: bool) -> torch.Tensor:
    """One tile (1, channels, *patch): `predict_tiles` with a batch of one."""
    return predict_tiles(network, x, flips, batch_mirrors)


@torch.inference_mode()
def predict_logits(
    image: torch.Tensor,
    networks: Sequence[Network],
    num_classes: int,
    patch_size: Sequence[int],
    tile_step_size: float = 0.5,
    mirror_axes: Sequence[int] | None = None,
    use_gaussian: bool = True,
    accumulate_device: torch.device | None = None,
    accumulate_dtype: torch.dtype = torch.float16,
    batch_mirrors: bool = False,
    importance_map: torch.Tensor | None = None,
    on_tile: TileCallback | None = None,
    tiles_per_batch: int = 1,
) -> torch.Tensor:
    """Fold-averaged logits (num_classes, *image.shape[1:]) for `image` (channels, *spatial).

    Tiles are cut from `image` on its own device (the compute device); the networks must live there too.
    Accumulators live on `accumulate_device` (default: the compute device). `batch_mirrors` runs all
    mirrored copies of a tile as one batch. `tiles_per_batch` tiles go through each network in one call
    (times the mirrored copies when batched); each tile is then weighted and added exactly as with one tile
    per call, in tile order, so only the networks' own kernels can tell the two apart. `importance_map`:
    the Gaussian for this patch, dtype and accumulator device, when the caller keeps one (else it is
    computed here). `on_tile(done, total)` is called after every batch of tiles.
    """
    if tiles_per_batch < 1:
        raise ValueError(f"tiles_per_batch must be at least 1, got {tiles_per_batch}")
    compute_device = image.device
    accumulate_device = accumulate_device or compute_device

    data, revert_padding = pad_nd_image(image, tuple(patch_size), "constant", {"value": 0}, True, None)
    spatial = data.shape[1:]
    slicers = tile_slicers(spatial, patch_size, tile_step_size)
    flips = mirror_combinations(mirror_axes)

    half = accumulate_dtype == torch.float16
    weight_dtype = torch.float16 if half else torch.float32
    gaussian = None
    if use_gaussian:
        gaussian = importance_map if importance_map is not None else gaussian_importance_map(
            tuple(patch_size), weight_dtype, torch.device(accumulate_device))
    per_fold = half and len(networks) > 1
    n_acc = len(networks) if per_fold else 1
    accumulators = [torch.zeros((num_classes, *spatial), dtype=accumulate_dtype, device=accumulate_device)
                    for _ in range(n_acc)]
    weight_sum = torch.zeros(spatial, dtype=weight_dtype, device=accumulate_device)

    for first in range(0, len(slicers), tiles_per_batch):
        batch = slicers[first:first + tiles_per_batch]
        targets = [(slice(None), *sl) for sl in batch]
        x = torch.stack([data[target] for target in targets])
        if per_fold:  # nnU-Net's rounding: every fold weighted and added on its own, tiles in order
            for f, network in enumerate(networks):
                predictions = predict_tiles(network, x, flips, batch_mirrors)
                for target, prediction in zip(targets, predictions):
                    prediction = prediction.to(accumulate_device)
                    if gaussian is not None:
                        prediction *= gaussian
                    accumulators[f][target] += prediction
        else:  # folds summed on the tile first: one weighting and one strided add per tile
            tile_sums = None
            for network in networks:
                predictions = predict_tiles(network, x, flips, batch_mirrors)
                tile_sums = predictions.float() if tile_sums is None else tile_sums.add_(predictions)
            tile_sums = tile_sums.to(accumulate_device)
            if gaussian is not None:
                tile_sums *= gaussian
            for target, tile_sum in zip(targets, tile_sums):
                accumulators[0][target] += tile_sum
        for sl in batch:
            weight_sum[sl] += gaussian if gaussian is not None else 1
        if on_tile is not None:
            on_tile(first + len(batch), len(slicers))

    if per_fold:
        # nnU-Net: each fold divided by the weight sum, fold results summed, then divided by the fold count
        logits = None
        for acc in accumulators:
            torch.div(acc, weight_sum, out=acc)
            logits = acc if logits is None else logits.add_(acc)
        logits /= len(networks)
    else:
        logits = accumulators[0]
        logits /= weight_sum
        if len(networks) > 1:
            logits /= len(networks)
    if torch.isinf(logits).any():
        raise FloatingPointError("infinite logits: the float16 accumulator overflowed; use float32 accumulation")
    return logits[(slice(None), *revert_padding[1:])]
