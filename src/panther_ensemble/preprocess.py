"""nnU-Net preprocessing of one image for one member's plans, and the way back to the image grid.

Order as in nnU-Net's DefaultPreprocessor: transpose_forward -> crop to the nonzero bounding box ->
normalise (per channel scheme from the plans, BEFORE resampling) -> resample to the configuration's
spacing. The result remembers what is needed to undo it (`Preprocessed`). Members whose plans agree on
everything that shapes the network input share one `Preprocessed` (see `signature`).

- faithful: nnU-Net's own preprocessor class from the plans, run on the CPU (numpy/skimage).
- fast: the same steps in torch on the compute device, with resample.py's twins of the plans' functions.

`to_image_grid` turns a member's logits into probabilities on the (cropped, transposed) original grid:
resample (faithful: the plans' `resampling_fn_probabilities`; fast: torch), then softmax.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization, ZScoreNormalization
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
from scipy.ndimage import binary_fill_holes

from .members import Member
from .resample import TorchResampling


@dataclass
class Preprocessed:
    """The network input of one image for one preprocessing signature, and how to undo it."""

    data: torch.Tensor  # (channels, *network grid), float32, on the compute device
    bbox: list[list[int]]  # crop box in transposed image axes, half-open
    shape_before_cropping: tuple[int, ...]  # transposed image shape
    shape_after_cropping: tuple[int, ...]
    spacing_transposed: tuple[float, ...]  # image spacing in transposed axis order
    network_spacing: tuple[float, ...]  # full 3D target spacing (2D configs keep the image's slice spacing)
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]


def signature(member: Member) -> str:
    """Everything that shapes a member's network input. Equal signatures share one preprocessing."""
    cfg = member.configuration
    plans = member.folder.plans
    schemes = cfg.normalization_schemes
    return json.dumps({
        "mode": member.spec.resampling,
        "transpose_forward": plans["transpose_forward"],
        "spacing": cfg.spacing,
        "normalization": schemes,
        "use_mask_for_norm": cfg.use_mask_for_norm,
        # CT-style normalisation depends on the dataset's intensity statistics
        "intensities": plans.get("foreground_intensity_properties_per_channel") if "CTNormalization" in schemes
        else None,
        "preprocessor": cfg.configuration.get("preprocessor_name", "DefaultPreprocessor"),
        "resampling_fn_data": cfg.configuration["resampling_fn_data"],
        "resampling_fn_data_kwargs": cfg.configuration["resampling_fn_data_kwargs"],
    }, sort_keys=True)


def _target_spacing(member: Member, spacing_t: tuple[float, ...]) -> tuple[float, ...]:
    spacing = list(member.configuration.spacing)
    if len(spacing) < len(spacing_t):  # 2D configuration: the slice spacing stays
        spacing = [spacing_t[0], *spacing]
    return tuple(float(s) for s in spacing)


def preprocess(image: np.ndarray, spacing_zyx: tuple[float, ...], member: Member,
               device: torch.device) -> Preprocessed:
    """Network input for `member` from an image (z, y, x) float32 and its spacing (z, y, x)."""
    pm = member.folder.plans_manager
    tf = tuple(pm.transpose_forward)
    tb = tuple(pm.transpose_backward)
    spacing_t = tuple(float(spacing_zyx[i]) for i in tf)
    if member.spec.resampling == "faithful":
        data, bbox, shape_before, shape_after = _preprocess_nnunet(image, spacing_zyx, member)
        tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(device)
    else:
        tensor, bbox, shape_before, shape_after = _preprocess_torch(image, spacing_t, tf, member, device)
    return Preprocessed(tensor, bbox, shape_before, shape_after, spacing_t, _target_spacing(member, spacing_t),
                        tf, tb)


def _preprocess_nnunet(image, spacing_zyx, member: Member):
    cfg = member.configuration
    preprocessor = cfg.preprocessor_class(verbose=False)
    props = {"spacing": [float(s) for s in spacing_zyx]}
    data, _, props = preprocessor.run_case_npy(image[None], None, props, member.folder.plans_manager, cfg,
                                               member.folder.dataset_json)
    return (data, [list(map(int, b)) for b in props["bbox_used_for_cropping"]],
            tuple(props["shape_before_cropping"]), tuple(props["shape_after_cropping_and_before_resampling"]))


def nonzero_bbox(volume: np.ndarray) -> list[list[int]]:
    """Half-open bounding box of nonzero voxels. Equals nnU-Net's box of the hole-filled mask, because
    filling holes never extends a bounding box."""
    box = []
    for axis in range(volume.ndim):
        others = tuple(a for a in range(volume.ndim) if a != axis)
        hit = np.flatnonzero(np.any(volume != 0, axis=others))
        box.append([int(hit[0]), int(hit[-1]) + 1])
    return box


def _preprocess_torch(image, spacing_t, tf, member: Member, device):
    cfg = member.configuration
    transposed = image.transpose(tf)
    bbox = nonzero_bbox(transposed)
    cropped = transposed[tuple(slice(a, b) for a, b in bbox)]
    data = torch.from_numpy(np.ascontiguousarray(cropped, dtype=np.float32)).to(device)
    data = _normalize_torch(data, cropped, member)
    target = _target_spacing(member, spacing_t)
    new_shape = compute_new_shape(cropped.shape, spacing_t, target)
    how = TorchResampling.from_plans(cfg.configuration["resampling_fn_data"],
                                     cfg.configuration["resampling_fn_data_kwargs"])
    if how is not None:
        data = how(data[None], new_shape, spacing_t, target)
    else:  # a resampling function we have no torch twin for: use the plans' own
        data = torch.from_numpy(np.asarray(cfg.resampling_fn_data(data[None].cpu().numpy(), new_shape, spacing_t,
                                                                  target), dtype=np.float32)).to(device)
    return data.contiguous(), bbox, tuple(transposed.shape), tuple(cropped.shape)


def _normalize_torch(data: torch.Tensor, cropped: np.ndarray, member: Member) -> torch.Tensor:
    """nnU-Net's normalisation of channel 0; z-score and CT in torch, other schemes by nnU-Net's classes."""
    cfg = member.configuration
    scheme = cfg.normalization_schemes[0]
    use_mask = bool(cfg.use_mask_for_norm[0])
    intensities = member.folder.plans_manager.foreground_intensity_properties_per_channel.get("0", {})
    if scheme == ZScoreNormalization.__name__:
        if use_mask:  # the mask nnU-Net uses: nonzero voxels with holes filled
            mask = torch.from_numpy(binary_fill_holes(cropped != 0)).to(data.device)
            values = data[mask]
            mean, std = values.mean(), values.std(correction=0)
            data[mask] = (values - mean) / torch.clamp(std, min=1e-8)
            return data
        mean, std = data.mean(), data.std(correction=0)
        return (data - mean) / torch.clamp(std, min=1e-8)
    if scheme == CTNormalization.__name__:
        data = data.clamp(intensities["percentile_00_5"], intensities["percentile_99_5"])
        return (data - intensities["mean"]) / max(intensities["std"], 1e-8)
    import nnunetv2

    cls = recursive_find_python_class(f"{nnunetv2.__path__[0]}/preprocessing/normalization", scheme,
                                      "nnunetv2.preprocessing.normalization")
    seg = np.where(binary_fill_holes(cropped != 0), 0, -1).astype(np.int8)
    normalized = cls(use_mask_for_norm=use_mask, intensityproperties=intensities).run(cropped.astype(np.float32), seg)
    return torch.from_numpy(np.ascontiguousarray(normalized, dtype=np.float32)).to(data.device)


def to_image_grid(logits: torch.Tensor, pre: Preprocessed, member: Member, device: torch.device) -> torch.Tensor:
    """Member logits on its network grid -> softmax probabilities on the cropped, transposed image grid."""
    cfg = member.configuration
    current = pre.network_spacing
    if member.spec.resampling == "faithful":
        # exactly nnU-Net's export: the plans' function on the logits as they are (float16 from prediction)
        resampled = cfg.resampling_fn_probabilities(logits.cpu(), pre.shape_after_cropping, list(current),
                                                    list(pre.spacing_transposed))
        return torch.softmax(torch.as_tensor(resampled).float(), dim=0).to(device)

    how = TorchResampling.from_plans(cfg.configuration["resampling_fn_probabilities"],
                                     cfg.configuration["resampling_fn_probabilities_kwargs"])
    logits = logits.to(device=device, dtype=torch.float32)
    if how is not None:
        resampled = how(logits, pre.shape_after_cropping, current, pre.spacing_transposed)
    else:
        resampled = torch.as_tensor(cfg.resampling_fn_probabilities(
            logits.cpu().numpy(), pre.shape_after_cropping, list(current), list(pre.spacing_transposed))).to(device)
    return torch.softmax(resampled.float(), dim=0)
