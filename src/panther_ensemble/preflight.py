"""Checks that fail early, in one line, before any network runs.

- `check_output_target(path)`: the mask (or probability map) can be written there: every existing part of
  the path is a folder, the target itself is not a folder, and the folder accepts a new entry (a real
  write probe, removed at once: a read-only mount or missing permission is found now, not after the whole
  ensemble has run).
- `check_grids(ensemble, geometry)`: every member's network grid, the image resampled to the member's
  spacing, has at least one voxel per axis and at most `max_grid_voxels()` voxels. A spacing in the wrong
  unit (0.001 or 10000 mm) otherwise fails deep inside resampling or asks for terabytes.
- `check_case_memory(ensemble, geometry, grids, image)`: on the CPU, the tensors a case cannot do without at
  once (the image and the ensemble's accumulator on the image grid, one member's input, logits and
  probabilities) fit in this machine's memory. Reading checks only the read; a case needs about 30 bytes per
  voxel, and past the memory the kernel kills the process with no message.
- `check_intensities(ensemble, image)`: every voxel finite, and none so large that a member's normalisation
  overflows float32 (nnU-Net's z-score squares deviations from the mean; an infinite variance turns the whole
  image into zeros and the mask comes out empty, silently).

- `check_case(ensemble, geometry, image)`: the last three, the image's nonzero box (`nonzero_crop`) found once.

`cli/container.py` runs the output check before it reads the image; `Ensemble.segment` runs `check_case`
itself, so every caller of the API gets the rest.
No torch import here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, OutOfMemory
from .io import Geometry, bytes_text, check_mask_suffix

#: Largest network grid (voxels) a member may be asked to run on, unless $PANTHER_MAX_GRID_VOXELS says
#: otherwise. 2**28 (268 million, 1 GB per float32 map) is about twice the largest PANTHER case at 1 mm
#: isotropic (Task 1: 88 x 466 x 570 voxels at 3.5 x 1.31 x 1.31 mm -> 308 x 610 x 747 = 140 million).
MAX_GRID_VOXELS = 2**28


def max_grid_voxels() -> int:
    value = os.environ.get("PANTHER_MAX_GRID_VOXELS", "").strip()
    if not value:
        return MAX_GRID_VOXELS
    try:
        limit = int(float(value))
    except ValueError:
        raise InputError("PANTHER_MAX_GRID_VOXELS", f"must be a number of voxels, got {value!r}") from None
    if limit < 1:
        raise InputError("PANTHER_MAX_GRID_VOXELS", f"must be at least 1, got {value!r}")
    return limit


# ---------------------------------------------------------------------------------------------------------
# Output


def check_output_target(path: Path | str, image: bool = True) -> Path:
    """Refuse, with one line, an output file that cannot be written: a folder in its place, a file where a
    folder must be, a folder that refuses new entries (read-only mount, permissions; found by creating and
    removing a hidden folder, the way `io.write_mask` stages its file). `image`: the target is a mask, so
    its suffix must be one `write_mask` writes. Creates nothing that stays."""
    path = Path(path)
    if image:
        check_mask_suffix(path)
    if path.is_dir():
        raise InputError(path, "is a folder; the output is a file of this name, so remove or rename the folder")
    if path.exists() and not path.is_file():
        raise InputError(path, "exists and is not a regular file")
    # the target's folder (the final rename) and the one above it (io.write_mask's hidden staging folder)
    for folder in dict.fromkeys((path.parent, path.parent.parent)):
        existing = _deepest_existing(folder)
        if existing.is_symlink() and not existing.exists():
            raise InputError(existing, f"is a link to {os.readlink(existing)}, which does not exist, but the output "
                                       f"{path} needs a folder here")
        if not existing.is_dir():
            raise InputError(existing, f"is a file, but the output {path} needs a folder here")
        _probe_writable(existing)
    return path


def _deepest_existing(folder: Path) -> Path:
    folder = Path(os.path.abspath(folder))
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _probe_writable(folder: Path) -> None:
    try:
        probe = tempfile.mkdtemp(prefix=".panther-write-probe-", dir=folder)
    except OSError as exc:
        raise InputError(folder, f"cannot write here ({exc.strerror or exc})") from None
    try:
        os.rmdir(probe)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------------------
# Network grids


def network_grid(shape_zyx: Sequence[int], spacing_zyx: Sequence[float], plan) -> tuple[tuple[int, ...],
                                                                                        tuple[float, ...]]:
    """(grid, target spacing), both in image axis order (z, y, x): the size of the image resampled to the
    member's spacing, as preprocessing computes it (`plans.compute_new_shape` in the plan's transposed order)."""
    from .inference.plans import compute_new_shape

    tf = list(plan.transpose_forward)
    shape_t = [int(shape_zyx[i]) for i in tf]
    spacing_t = [float(spacing_zyx[i]) for i in tf]
    target_t = plan.target_spacing(spacing_t)
    grid_t = compute_new_shape(shape_t, spacing_t, target_t)
    back = [tf.index(a) for a in range(len(tf))]
    return tuple(grid_t[i] for i in back), tuple(target_t[i] for i in back)


def nonzero_crop(image: np.ndarray) -> tuple[int, ...]:
    """The shape (z, y, x) of the image's nonzero bounding box, what preprocessing crops to before resampling;
    () for an image with no nonzero voxel (no network runs on it). One pass over the voxels: compute it once
    per case and hand it to `check_grids` and `check_case_memory` (`check_case` does)."""
    from .boxes import bounding_box

    box = bounding_box(np.asarray(image) != 0)
    return () if box is None else tuple(int(b - a) for a, b in box)


def check_case(ensemble, geometry: Geometry, image: np.ndarray, where: object = "<image>") -> dict:
    """Every check a case gets before any network runs, the nonzero box found once: `check_grids`,
    `check_case_memory`, `check_intensities`. Returns `check_grids`'s {member: grid (z, y, x)}."""
    crop = nonzero_crop(image)
    grids = check_grids(ensemble, geometry, where=where, crop_zyx=crop)
    check_case_memory(ensemble, geometry, grids, where=where, crop_zyx=crop)
    check_intensities(ensemble, image, where)
    return grids


def check_grids(ensemble, geometry: Geometry, image: np.ndarray | None = None, where: object = "<image>", *,
                crop_zyx: tuple[int, ...] | None = None) -> dict:
    """Refuse an image whose network grid for some member is empty along an axis or larger than
    `max_grid_voxels()`; the message names the spacing, the member and the grid it would give. `ensemble`: an
    `Ensemble` (its networks are loaded, none is run). `image` (or its `nonzero_crop`, `crop_zyx`), when at hand,
    so that the grid is computed on the crop to the nonzero box as preprocessing does. Returns {member: grid
    (z, y, x)}."""
    full = shape = tuple(geometry.shape_zyx)
    if crop_zyx is None and image is not None:
        crop_zyx = nonzero_crop(image)
    if crop_zyx:
        shape = tuple(crop_zyx)
    limit = max_grid_voxels()
    spacing_zyx = geometry.spacing_zyx
    grids = {}
    for name, plan in ensemble.preprocess_plans().items():
        grid, target = network_grid(shape, spacing_zyx, plan)
        grids[name] = grid
        voxels = int(np.prod([int(g) for g in grid], dtype=object))
        if min(grid) >= 1 and voxels <= limit:
            continue
        said = (f"spacing {_xyz(geometry.spacing_xyz)} mm (x, y, z) gives member {name} (spacing "
                f"{_xyz(target[::-1])} mm) a network grid of {_xyz(grid[::-1], int)} voxels")
        if min(grid) < 1:
            if shape != full and min(network_grid(full, spacing_zyx, plan)[0]) >= 1:  # the crop is to blame
                raise InputError(where, f"{said}, empty along an axis: its nonzero voxels span only "
                                        f"{_xyz(shape[::-1], int)} of its {_xyz(full[::-1], int)} voxels (x, y, z), "
                                        "too thin to resample; is the image almost all zeros?")
            raise InputError(where, f"{said}, empty along an axis; is the spacing in millimetres?")
        raise InputError(where, f"{said} ({_count(voxels, exact_below=0)} voxels, {bytes_text(4 * voxels)} per float32 map), above "
                                f"the limit of {limit} voxels (PANTHER_MAX_GRID_VOXELS); is the spacing in "
                                "millimetres?")
    return grids


def case_memory_bytes(image_voxels: int, labels: int, members: Sequence[tuple[int, int, int]],
                      any_member: bool = False) -> int:
    """A lower bound of the host memory a case takes on the CPU, from what must exist at once. Throughout: the
    float32 image and the ensemble's float32 accumulator (`labels` maps) on the image grid. Then either the uint8
    mask (at the end) or a member's share while it runs: on its network grid the float32 input and its logits (at
    least float16, one map per label of its own), with either the tile weights (at least float16, during the
    sliding window) or its float32 probabilities on its crop of the image grid (while they are brought back).
    `members`: (labels of the member, voxels of its crop of the image, voxels of its network grid); the largest
    share counts, or the smallest with `any_member` (a time budget may drop every member but one)."""
    shares = [4 * grid + 2 * m_labels * grid + max(2 * grid, 4 * m_labels * crop) for m_labels, crop, grid in members]
    share = (min if any_member else max)(shares, default=0)
    voxels = int(image_voxels)
    return voxels * (4 + 4 * int(labels)) + max(voxels, share)


def check_case_memory(ensemble, geometry: Geometry, grids: dict, image: np.ndarray | None = None,
                      where: object = "<image>", *, crop_zyx: tuple[int, ...] | None = None) -> None:
    """Refuse, as `OutOfMemory` (exit 3), a case whose tensors cannot fit in memory on the CPU
    (`case_memory_bytes` against `io.stored.memory_limit_bytes`). On a GPU the runtime's fallbacks own the
    device's memory, so only the CPU is checked; an all-zero image runs no network and needs only its mask.
    `grids`: `check_grids`'s answer. `image` or its `nonzero_crop` (`crop_zyx`): the members' maps cover that box;
    neither given, the whole image."""
    from .io.stored import memory_limit_bytes

    if getattr(ensemble.device, "type", str(ensemble.device)) != "cpu":
        return
    limit = memory_limit_bytes()
    if limit is None:
        return
    voxels = int(np.prod([int(s) for s in geometry.shape_zyx], dtype=object))
    if crop_zyx is None and image is not None:
        crop_zyx = nonzero_crop(image)
    if crop_zyx == ():
        return
    crop = voxels if crop_zyx is None else int(np.prod([int(s) for s in crop_zyx], dtype=object))
    labels = ensemble.member_labels()
    members = [(len(labels[name]), crop, int(np.prod(grid, dtype=object))) for name, grid in grids.items()]
    need = case_memory_bytes(voxels, len(ensemble.labels), members, any_member=bool(ensemble.spec.time_budget_s))
    if need > limit:
        called = Path(str(where)).name if where != "<image>" else "the image"
        raise OutOfMemory(f"segmenting {called}", f"{_xyz(geometry.size_xyz, int)} voxels need at least "
                                                  f"{bytes_text(need)} on the CPU; this machine allows "
                                                  f"{bytes_text(limit)}")


def intensity_limit(voxels: int, normalization: str = "ZScoreNormalization") -> float | None:
    """The largest |voxel value| that `normalization` (an nnU-Net scheme's class name) handles in float32 for an
    image of `voxels` voxels; None where no value can overflow.

    z-score (and any scheme we do not know): the sum of squared deviations from the mean is at most
    voxels * (2 * peak)**2, which must stay below float32's maximum. nnU-Net's own normalisation (numpy, float32)
    overflows from about 3.6e16 (half the voxels at +peak, half at -peak) to 1.8e19 (one bright voxel) on a 64**3
    image, and so does torch's on CUDA; torch on the CPU accumulates in float64, but there one such voxel still
    makes every other voxel about 0. Min-max rescaling: the range must fit. CT clips to the dataset's percentiles
    first; no normalisation and RGB (which asserts 0-255 itself) compute nothing that grows."""
    if normalization in ("CTNormalization", "NoNormalization", "RGBTo01Normalization"):
        return None
    if normalization == "RescaleTo01Normalization":
        return float(np.finfo(np.float32).max) / 2
    return float(np.sqrt(np.finfo(np.float32).max / (4.0 * max(int(voxels), 1))))


def check_intensities(ensemble, image: np.ndarray, where: object = "<image>") -> None:
    """Refuse voxels that no member can normalise: NaN or infinite ones (an array or SimpleITK image given to the
    API skips `read_image`'s check), and values so large that a member's normalisation would overflow float32
    (`intensity_limit`), which turns the image into zeros and the mask into nothing, silently."""
    image = np.asarray(image)
    if image.size == 0:
        return
    if image.dtype.kind == "f":
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if bad:
            raise InputError(where, f"{bad} voxel{' is' if bad == 1 else 's are'} NaN or infinite")
    peak = float(max(abs(float(image.max())), abs(float(image.min()))))
    for name, plan in ensemble.preprocess_plans().items():
        limit = intensity_limit(image.size, plan.normalization)
        if limit is not None and peak > limit:
            raise InputError(where, f"voxel values up to {peak:.3g} overflow member {name}'s {plan.normalization} "
                                    f"in float32 (the limit for {image.size} voxels is {limit:.2g}); rescale the "
                                    "intensities")


def _xyz(values, kind=float) -> str:
    if kind is int:  # an absurd spacing gives grids of hundreds of digits: those as powers of ten
        return " x ".join(_count(int(v)) for v in values)
    return " x ".join(f"{float(v):g}" for v in values)


def _count(n: int, exact_below: int = 10 ** 12) -> str:
    """A whole number for people: as is below `exact_below`, else '1.13e+16', or 'about 1e904' past any float."""
    if n < exact_below:
        return str(n)
    return f"{float(n):.3g}" if n < 10 ** 300 else f"about 1e{len(str(n)) - 1}"
