"""Resampling between the image grid and a member's network grid, on the compute device.

Two modes per member (`resampling` in the spec):
- faithful: the plans' own functions (`resampling_fn_data`, `resampling_fn_probabilities` and kwargs), run
  exactly as nnU-Net runs them (by default skimage on the CPU in float64: the reference, and slow).
- fast: a torch twin of the plans' function on the compute device:
  * `resample_data_or_seg_to_shape` (nnU-Net's default, skimage `resize` / scipy spline interpolation):
    spline interpolation on a regular grid is separable and linear, so each axis is one small matrix
    (n_out x n_in) obtained by running scipy's own 1D routine on unit vectors; applying the three matrices
    with torch reproduces skimage's result, boundary handling and prefilter included, to float32 rounding.
    The per-input range clipping skimage applies after cubic interpolation is reproduced too.
  * `resample_torch_fornnunet`: the same torch interpolation nnU-Net uses, on our device.
  In both, anisotropic spacing (ratio > 3) is handled as nnU-Net does (in-plane per slice, then the
  low-resolution axis separately), decided by nnU-Net's own `determine_do_sep_z_and_axis`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch
from nnunetv2.configuration import ANISO_THRESHOLD
from scipy import ndimage
from torch.nn import functional as F


def determine_do_sep_z_and_axis(force_separate_z: bool | None, current_spacing: Sequence[float],
                                new_spacing: Sequence[float],
                                anisotropy_threshold: float = ANISO_THRESHOLD) -> tuple[bool, int | None]:
    """nnU-Net's rule for resampling the low-resolution axis on its own (tested against nnU-Net's function,
    which lives in a module that imports nnU-Net's whole preprocessing stack)."""
    def lowres_axes(spacing):
        return np.where(max(spacing) / np.array(spacing) == 1)[0]

    def anisotropic(spacing):
        return (np.max(spacing) / np.min(spacing)) > anisotropy_threshold

    if force_separate_z is not None:
        separate, axis = force_separate_z, (lowres_axes(current_spacing) if force_separate_z else None)
    elif anisotropic(current_spacing):
        separate, axis = True, lowres_axes(current_spacing)
    elif anisotropic(new_spacing):
        separate, axis = True, lowres_axes(new_spacing)
    else:
        separate, axis = False, None
    if axis is not None:
        if len(axis) in (2, 3):  # no single low-resolution axis
            return False, None
        return separate, int(axis[0])
    return separate, None


def nnunet_resampling_function(name: str, kwargs) -> Callable:
    """The plans' own resampling function with its kwargs, found by name the way nnU-Net finds it."""
    from nnunetv2.preprocessing.resampling.utils import recursive_find_resampling_fn_by_name

    return partial(recursive_find_resampling_fn_by_name(name), **dict(kwargs))


@dataclass(frozen=True)
class TorchResampling:
    """A torch stand-in for one plans resampling function with its kwargs."""

    kind: str  # "spline" (twin of resample_data_or_seg_to_shape) or "interpolate" (resample_torch_fornnunet)
    order: int = 1
    order_z: int = 0
    force_separate_z: bool | None = None
    anisotropy_threshold: float = ANISO_THRESHOLD
    axis_mode: str = "nearest-exact"  # interpolate kind: mode along the low-resolution axis
    # 1D interpolation matrices by (kind, n_in, n_out, order); owned by the caller (the engine keeps one per
    # ensemble, so that a second case of the same size reuses them)
    matrices: dict | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_plans(cls, fn_name: str, kwargs, matrices: dict | None = None) -> "TorchResampling | None":
        """None when the plans name a function we have no twin for (the caller then uses the plans' own)."""
        threshold = kwargs.get("separate_z_anisotropy_threshold", ANISO_THRESHOLD)
        if kwargs.get("is_seg", False):
            return None
        if fn_name == "resample_data_or_seg_to_shape":
            return cls("spline", int(kwargs.get("order", 3)), int(kwargs.get("order_z", 0)),
                       kwargs.get("force_separate_z", False), threshold, matrices=matrices)
        if fn_name == "resample_torch_fornnunet":
            return cls("interpolate", 1, 0, kwargs.get("force_separate_z"), threshold,
                       kwargs.get("aniso_axis_mode", "nearest-exact"), matrices=matrices)
        return None

    def matrix(self, kind: str, n_in: int, n_out: int, order: int) -> np.ndarray:
        make = _zoom_matrix if kind == "zoom" else _map_matrix
        if self.matrices is None:
            return make(n_in, n_out, order)
        key = (kind, n_in, n_out, order)
        if key not in self.matrices:
            self.matrices[key] = make(n_in, n_out, order)
        return self.matrices[key]

    def __call__(self, data: torch.Tensor, new_shape: Sequence[int], current_spacing: Sequence[float],
                 new_spacing: Sequence[float]) -> torch.Tensor:
        if self.kind == "spline":
            return resample_spline(data, new_shape, current_spacing, new_spacing, self)
        return resample_interpolate(data, new_shape, current_spacing, new_spacing, self)


# ---------------------------------------------------------------------------------------------------------
# Twin of nnU-Net's default (skimage) resampling


def _zoom_matrix(n_in: int, n_out: int, order: int) -> np.ndarray:
    """skimage.transform.resize along one axis (ndi.zoom, grid_mode=True, mode 'nearest' = skimage 'edge')."""
    eye = np.eye(n_in)
    columns = [ndimage.zoom(eye[i], n_out / n_in, order=order, mode="nearest", grid_mode=True) for i in range(n_in)]
    matrix = np.stack(columns, axis=1)
    if matrix.shape != (n_out, n_in):  # ndi.zoom rounds the output length itself; must agree with nnU-Net's
        raise AssertionError(f"zoom matrix {matrix.shape} for {n_in} -> {n_out}")
    return matrix


def _map_matrix(n_in: int, n_out: int, order: int) -> np.ndarray:
    """nnU-Net's separate-z step along the low-resolution axis: map_coordinates at scale*(i+0.5)-0.5."""
    coords = (n_in / n_out) * (np.arange(n_out) + 0.5) - 0.5
    eye = np.eye(n_in)
    columns = [ndimage.map_coordinates(eye[i], coords[None], order=order, mode="nearest") for i in range(n_in)]
    return np.stack(columns, axis=1)


def _apply_along(x: torch.Tensor, dim: int, matrix: np.ndarray) -> torch.Tensor:
    w = torch.from_numpy(matrix).to(device=x.device, dtype=torch.float32)
    return torch.movedim(torch.movedim(x, dim, -1) @ w.T, -1, dim)


def resample_spline(data: torch.Tensor, new_shape: Sequence[int], current_spacing: Sequence[float],
                    new_spacing: Sequence[float], how: TorchResampling) -> torch.Tensor:
    """`resample_data_or_seg_to_shape(data, new_shape, current, new, is_seg=False, order, order_z,
    force_separate_z)` for float `data` (channels, *spatial), in float32 on data's device."""
    new_shape = [int(s) for s in new_shape]
    shape = list(data.shape[1:])
    if shape == new_shape:
        return data
    separate, axis = determine_do_sep_z_and_axis(how.force_separate_z, current_spacing, new_spacing,
                                                 how.anisotropy_threshold)
    x = data.float()
    if not separate:
        for d, (n_in, n_out) in enumerate(zip(shape, new_shape)):
            if n_in != n_out:
                x = _apply_along(x, d + 1, how.matrix("zoom", n_in, n_out, how.order))
        if how.order > 1:  # skimage clips cubic overshoot to each channel's input range
            x = torch.maximum(torch.minimum(x, _channel_range(data, "max")), _channel_range(data, "min"))
        return x
    others = [d for d in range(len(shape)) if d != axis]
    for d in others:
        if shape[d] != new_shape[d]:
            x = _apply_along(x, d + 1, how.matrix("zoom", shape[d], new_shape[d], how.order))
    if how.order > 1 and any(shape[d] != new_shape[d] for d in others):  # each slice clipped to its own range
        dims = tuple(d + 1 for d in others)
        x = torch.maximum(torch.minimum(x, data.float().amax(dim=dims, keepdim=True)),
                          data.float().amin(dim=dims, keepdim=True))
    if shape[axis] != new_shape[axis]:
        x = _apply_along(x, axis + 1, how.matrix("map", shape[axis], new_shape[axis], how.order_z))
    return x


def _channel_range(data: torch.Tensor, which: str) -> torch.Tensor:
    dims = tuple(range(1, data.ndim))
    values = data.float().amax(dim=dims, keepdim=True) if which == "max" else data.float().amin(dim=dims, keepdim=True)
    return values


# ---------------------------------------------------------------------------------------------------------
# Twin of nnU-Net's torch resampling (resample_torch_fornnunet), on our device and thread settings


def _interpolate(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    if mode == "linear":
        mode = {2: "bilinear", 3: "trilinear"}[x.ndim - 1]
    kwargs = {"align_corners": False, "antialias": False} if mode in ("bilinear", "trilinear") else {}
    return F.interpolate(x[None], size=tuple(int(s) for s in size), mode=mode, **kwargs)[0]


def resample_interpolate(data: torch.Tensor, new_shape: Sequence[int], current_spacing: Sequence[float],
                         new_spacing: Sequence[float], how: TorchResampling) -> torch.Tensor:
    new_shape = [int(s) for s in new_shape]
    if list(data.shape[1:]) == new_shape:
        return data
    separate, axis = determine_do_sep_z_and_axis(how.force_separate_z, current_spacing, new_spacing,
                                                 how.anisotropy_threshold)
    data = data.float()
    if not separate:
        return _interpolate(data, new_shape, "linear")
    moved = data.movedim(axis + 1, 1)  # slices become channels for the in-plane step
    c, a = moved.shape[:2]
    inplane = [s for i, s in enumerate(new_shape) if i != axis]
    out = _interpolate(moved.reshape(c * a, *moved.shape[2:]), inplane, "linear").reshape(c, a, *inplane)
    if a != new_shape[axis]:
        out = _interpolate(out, [new_shape[axis], *inplane], how.axis_mode)
    return out.movedim(1, axis + 1)
