"""nnU-Net preprocessing of one image for one `PreprocessPlan`, and the way back to the image grid.

Order as in nnU-Net's DefaultPreprocessor: transpose_forward -> crop to the nonzero bounding box ->
normalise (per channel scheme from the plans, BEFORE resampling) -> resample to the configuration's
spacing. The result remembers what is needed to undo it (`Preprocessed`). Members whose plans agree on
everything that shapes the network input share one `Preprocessed` (`PreprocessPlan.signature`).

- faithful: nnU-Net's own preprocessor class from the plans, run on the CPU (numpy/skimage).
- fast: the same steps in torch on the compute device, with resample.py's twins of the plans' functions.

`to_image_grid` turns a member's logits into probabilities on the (cropped, transposed) original grid:
resample (faithful: the plans' `resampling_fn_probabilities`; fast: torch), then softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes

from ..boxes import bounding_box
from .plans import PreprocessPlan, compute_new_shape
from .resample import TorchResampling, nnunet_resampling_function

ZSCORE, CT = "ZScoreNormalization", "CTNormalization"


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


def preprocess(image: np.ndarray, spacing_zyx: tuple[float, ...], plan: PreprocessPlan,
               device: torch.device, matrices: dict | None = None) -> Preprocessed:
    """Network input for `plan` from an image (z, y, x) float32 and its spacing (z, y, x). `matrices`: a
    cache of interpolation matrices the caller owns (fast mode)."""
    tf, tb = tuple(plan.transpose_forward), plan.transpose_backward
    spacing_t = tuple(float(spacing_zyx[i]) for i in tf)
    if plan.mode == "faithful":
        data, bbox, shape_before, shape_after = _preprocess_nnunet(image, spacing_zyx, plan)
        tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(device)
    else:
        tensor, bbox, shape_before, shape_after = _preprocess_torch(image, spacing_t, plan, device, matrices)
    return Preprocessed(tensor, bbox, shape_before, shape_after, spacing_t, plan.target_spacing(spacing_t), tf, tb)


def _preprocess_nnunet(image, spacing_zyx, plan: PreprocessPlan):
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class  # faithful mode only
    import nnunetv2

    manager, cfg = plan.nnunet_configuration()
    preprocessor_class = recursive_find_python_class(f"{nnunetv2.__path__[0]}/preprocessing", plan.preprocessor_name,
                                                     "nnunetv2.preprocessing")
    props = {"spacing": [float(s) for s in spacing_zyx]}
    data, _, props = preprocessor_class(verbose=False).run_case_npy(image[None], None, props, manager, cfg,
                                                                    dict(plan.dataset_json))
    return (data, [list(map(int, b)) for b in props["bbox_used_for_cropping"]],
            tuple(props["shape_before_cropping"]), tuple(props["shape_after_cropping_and_before_resampling"]))


def nonzero_bbox(volume: np.ndarray) -> list[list[int]]:
    """Half-open bounding box of nonzero voxels (the whole array when all are zero). Equals nnU-Net's box
    of the hole-filled mask, because filling holes never extends a bounding box."""
    box = bounding_box(volume != 0)
    if box is None:
        return [[0, n] for n in volume.shape]
    return [list(b) for b in box]


def _preprocess_torch(image, spacing_t, plan: PreprocessPlan, device, matrices):
    transposed = image.transpose(plan.transpose_forward)
    bbox = nonzero_bbox(transposed)
    cropped = transposed[tuple(slice(a, b) for a, b in bbox)]
    data = torch.from_numpy(np.ascontiguousarray(cropped, dtype=np.float32)).to(device)
    data = _normalize_torch(data, cropped, plan)
    target = plan.target_spacing(spacing_t)
    new_shape = compute_new_shape(cropped.shape, spacing_t, target)
    name, kwargs = plan.resampling_data
    how = TorchResampling.from_plans(name, kwargs, matrices)
    if how is not None:
        data = how(data[None], new_shape, spacing_t, target)
    else:  # a resampling function we have no torch twin for: use the plans' own
        fn = nnunet_resampling_function(name, kwargs)
        data = torch.from_numpy(np.asarray(fn(data[None].cpu().numpy(), new_shape, spacing_t, target),
                                           dtype=np.float32)).to(device)
    return data.contiguous(), bbox, tuple(transposed.shape), tuple(cropped.shape)


def _normalize_torch(data: torch.Tensor, cropped: np.ndarray, plan: PreprocessPlan) -> torch.Tensor:
    """nnU-Net's normalisation of channel 0; z-score and CT in torch, other schemes by nnU-Net's classes."""
    intensities = plan.intensity_properties
    if plan.normalization == ZSCORE:
        if plan.use_mask_for_norm:  # the mask nnU-Net uses: nonzero voxels with holes filled
            mask = torch.from_numpy(binary_fill_holes(cropped != 0)).to(data.device)
            values = data[mask]
            mean, std = values.mean(), values.std(correction=0)
            data[mask] = (values - mean) / torch.clamp(std, min=1e-8)
            return data
        mean, std = data.mean(), data.std(correction=0)
        return (data - mean) / torch.clamp(std, min=1e-8)
    if plan.normalization == CT:
        data = data.clamp(intensities["percentile_00_5"], intensities["percentile_99_5"])
        return (data - intensities["mean"]) / max(intensities["std"], 1e-8)
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    cls = recursive_find_python_class(f"{nnunetv2.__path__[0]}/preprocessing/normalization", plan.normalization,
                                      "nnunetv2.preprocessing.normalization")
    seg = np.where(binary_fill_holes(cropped != 0), 0, -1).astype(np.int8)
    normalized = cls(use_mask_for_norm=plan.use_mask_for_norm,
                     intensityproperties=dict(intensities)).run(cropped.astype(np.float32), seg)
    return torch.from_numpy(np.ascontiguousarray(normalized, dtype=np.float32)).to(data.device)


def to_image_grid(logits: torch.Tensor, pre: Preprocessed, plan: PreprocessPlan, device: torch.device,
                  matrices: dict | None = None) -> torch.Tensor:
    """Member logits on its network grid -> softmax probabilities on the cropped, transposed image grid."""
    current = pre.network_spacing
    name, kwargs = plan.resampling_probabilities
    if plan.mode == "faithful":
        # exactly nnU-Net's export: the plans' function on the logits as they are (float16 from prediction)
        resampled = nnunet_resampling_function(name, kwargs)(logits.cpu(), pre.shape_after_cropping, list(current),
                                                             list(pre.spacing_transposed))
        return torch.softmax(torch.as_tensor(resampled).float(), dim=0).to(device)

    how = TorchResampling.from_plans(name, kwargs, matrices)
    logits = logits.to(device=device, dtype=torch.float32)
    if how is not None:
        resampled = how(logits, pre.shape_after_cropping, current, pre.spacing_transposed)
    else:
        resampled = torch.as_tensor(nnunet_resampling_function(name, kwargs)(
            logits.cpu().numpy(), pre.shape_after_cropping, list(current), list(pre.spacing_transposed))).to(device)
    return torch.softmax(resampled.float(), dim=0)
