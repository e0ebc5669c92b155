"""Real nnU-Net model folders for the tests, made on the spot.

Small networks built by dynamic_network_architectures from a plans.json written in nnU-Net v2's format,
He-initialised as nnU-Net initialises them, saved as checkpoints with everything nnU-Net's trainer puts in
one (optimizer state, a training log holding numpy float32 scalars, `_best_ema`, init_args with the plans),
so the safe loader meets what it meets in the field.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

LABELS = {"background": 0, "tumor": 1, "pancreas": 2}

ARCH_IMPORTS = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def plain_unet_arch(features=(4, 8, 16), kernel_sizes=None, strides=None) -> dict:
    n = len(features)
    kernel_sizes = kernel_sizes or [[3, 3, 3]] * n
    strides = strides or [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": kernel_sizes, "strides": strides, "n_conv_per_stage": [1] * n,
            "n_conv_per_stage_decoder": [1] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ARCH_IMPORTS,
    }


def resenc_unet_arch(features=(4, 8, 16)) -> dict:
    n = len(features)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
            "n_blocks_per_stage": [1] * n, "n_conv_per_stage_decoder": [1] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ARCH_IMPORTS,
    }


def make_plans(spacing=(3.0, 1.5, 1.5), patch_size=(8, 32, 32), transpose_forward=(0, 1, 2), architecture=None,
               configuration="3d_fullres", plans_name="nnUNetPlans", data_resampling="resample_data_or_seg_to_shape",
               probabilities_resampling="resample_data_or_seg_to_shape", use_mask_for_norm=False,
               normalization="ZScoreNormalization") -> dict:
    """plans.json content; `spacing` and `patch_size` are in transposed axis order, as nnU-Net stores them."""
    transpose_backward = [int(i) for i in np.argsort(transpose_forward)]
    if data_resampling == "resample_torch_fornnunet":
        data_kwargs = {"is_seg": False, "force_separate_z": None, "memefficient_seg_resampling": False}
        prob_kwargs = {"is_seg": False, "force_separate_z": None, "memefficient_seg_resampling": False}
        seg_kwargs = {"is_seg": True, "force_separate_z": None, "memefficient_seg_resampling": False}
    else:
        data_kwargs = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
        prob_kwargs = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
        seg_kwargs = {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": "Dataset999_TestPhantom",
        "plans_name": plans_name,
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [20, 64, 64],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(transpose_forward),
        "transpose_backward": transpose_backward,
        "configurations": {
            configuration: {
                "data_identifier": f"{plans_name}_{configuration}",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(patch_size),
                "median_image_size_in_voxels": [20, 64, 64],
                "spacing": list(spacing),
                "normalization_schemes": [normalization],
                "use_mask_for_norm": [use_mask_for_norm],
                "resampling_fn_data": data_resampling,
                "resampling_fn_seg": data_resampling,
                "resampling_fn_data_kwargs": data_kwargs,
                "resampling_fn_seg_kwargs": seg_kwargs,
                "resampling_fn_probabilities": probabilities_resampling,
                "resampling_fn_probabilities_kwargs": prob_kwargs,
                "architecture": architecture or plain_unet_arch(),
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 900.0, "mean": 310.0, "median": 300.0, "min": 0.0, "percentile_00_5": 20.0,
                  "percentile_99_5": 800.0, "std": 90.0}
        },
    }


def make_dataset_json(labels=None) -> dict:
    labels = labels or LABELS
    return {"channel_names": {"0": "MRI"}, "labels": labels, "numTraining": 10, "file_ending": ".mha",
            "name": "TestPhantom"}


def build_network(plans: dict, dataset_json: dict, configuration="3d_fullres") -> torch.nn.Module:
    arch = plans["configurations"][configuration]["architecture"]
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  len(dataset_json["channel_names"]), len(dataset_json["labels"]),
                                  allow_init=True, deep_supervision=False)


def trainer_checkpoint(network: torch.nn.Module, plans: dict, dataset_json: dict, configuration: str, fold,
                       trainer_name: str, mirror_axes=(0, 1, 2)) -> dict:
    """A checkpoint with the keys and value types nnU-Net 2.8's trainer writes (see save_checkpoint)."""
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    network.train()
    out = network(torch.zeros(1, 1, *plans["configurations"][configuration]["patch_size"]))
    out.float().mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    network.eval()
    f32 = np.float32
    logging = {"mean_fg_dice": [f32(0.1), f32(0.2)], "ema_fg_dice": [f32(0.1), f32(0.11)],
               "dice_per_class_or_region": [[f32(0.1), f32(0.3)], [f32(0.2), f32(0.2)]],
               "train_losses": [0.5, 0.4], "val_losses": [0.6, 0.5], "lrs": [0.01, 0.009],
               "epoch_start_timestamps": [1.0, 2.0], "epoch_end_timestamps": [1.5, 2.5]}
    return {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": logging,
        "_best_ema": f32(0.11),
        "current_epoch": 2,
        "init_args": {"plans": copy.deepcopy(plans), "configuration": configuration, "fold": fold,
                      "dataset_json": copy.deepcopy(dataset_json), "device": torch.device("cpu")},
        "trainer_name": trainer_name,
        "inference_allowed_mirroring_axes": tuple(mirror_axes) if mirror_axes is not None else None,
    }


def _calibrate(network: torch.nn.Module, patch_size, gain: float, seed: int) -> None:
    """Scale the output layer and centre its biases on a smooth random input, so every class wins somewhere."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool3d(torch.randn(1, 1, *patch_size, generator=g), 3, 1, 1) * 3
    x = x.to(next(network.parameters()).device)
    seg = [m for name, m in network.named_modules() if name.startswith("decoder.seg_layers")][-1]
    with torch.no_grad():
        seg.weight.mul_(gain)
        seg.bias.mul_(gain)
        network.eval()
        out = network(x)[0]
        seg.bias.sub_(out.mean(dim=tuple(range(1, out.ndim))))


def make_model_folder(root: Path, name: str, plans: dict, folds=(0, 1), seed=0, trainer_name="nnUNetTrainer",
                      dataset_json=None, configuration="3d_fullres", mirror_axes=(0, 1, 2),
                      checkpoint_name="checkpoint_final.pth", output_gain=4.0) -> Path:
    """`root/name/` in nnU-Net's layout with one checkpoint per fold (independently initialised networks).

    `output_gain` scales the final 1x1x1 convolution so random networks make confident, spatially varied
    decisions instead of near-uniform softmax outputs.
    """
    dataset_json = dataset_json or make_dataset_json()
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    for i, fold in enumerate(folds):
        torch.manual_seed(seed * 100 + i)
        network = build_network(plans, dataset_json, configuration)
        _calibrate(network, plans["configurations"][configuration]["patch_size"], output_gain, seed * 100 + i)
        ckpt = trainer_checkpoint(network, plans, dataset_json, configuration, fold, trainer_name, mirror_axes)
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(ckpt, folder / f"fold_{fold}" / checkpoint_name)
    return folder


def synthetic_volume(shape=(20, 60, 70), seed=0, zero_border=3) -> np.ndarray:
    """An abdomen-like float32 test volume (z, y, x): smooth blobs of different intensity, noise, and a zero
    border (so nnU-Net's crop to nonzero has something to do)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    vol = 200 + 40 * np.sin(3 * x + 2 * y) + 30 * z
    for _ in range(6):
        c = rng.uniform(-0.6, 0.6, 3)
        r = rng.uniform(0.1, 0.35)
        vol += rng.uniform(-150, 250) * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / r**2)
    vol += rng.normal(0, 15, shape)
    vol = np.clip(vol, 1, None).astype(np.float32)
    if zero_border:
        b = zero_border
        vol[:, :b] = 0
        vol[:, :, -b:] = 0
    return vol


def synthetic_mri(shape=(20, 60, 70), spacing_zyx=(3.0, 1.2, 1.2), seed=0, zero_border=3) -> sitk.Image:
    """`synthetic_volume` as a SimpleITK image with anisotropic spacing and a non-identity direction."""
    image = sitk.GetImageFromArray(synthetic_volume(shape, seed, zero_border))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    image.SetOrigin((-120.5, 33.25, -400.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    return image


def plain_unet_arch_2d(features=(4, 8, 16)) -> dict:
    arch = plain_unet_arch(features, kernel_sizes=[[3, 3]] * len(features),
                           strides=[[1, 1]] + [[2, 2]] * (len(features) - 1))
    arch["arch_kwargs"]["conv_op"] = "torch.nn.modules.conv.Conv2d"
    arch["arch_kwargs"]["norm_op"] = "torch.nn.modules.instancenorm.InstanceNorm2d"
    return arch
