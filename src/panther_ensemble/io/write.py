"""Writing masks and probability maps atomically; partial writes are registered so a signal handler can remove them."""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, memory_errors_as
from .images import Geometry
from .itk_output import itk_call, itk_reason, log_itk_output

log = logging.getLogger(__name__)

def write_mask(mask: np.ndarray, geometry: Geometry, path: Path | str) -> Path:
    """Write a uint8 mask with the input's geometry, atomically.

    The image is written into a hidden sibling folder of the target folder and renamed into place, so a
    crash, a full disk or a kill never leaves a partial file in the folder the platform collects from. The
    staging folder is registered while it exists, for `remove_partial_writes` (the command line's signal
    handler). A failure to write is an InputError naming the file.
    """
    path = Path(path)
    if mask.shape != geometry.shape_zyx:
        raise ValueError(f"mask shape {mask.shape} does not match the image shape {geometry.shape_zyx}")
    check_mask_suffix(path)
    with memory_errors_as(f"writing {path}"):
        image = geometry.stamp(sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8)))
    staging = path.parent.with_name(f".{path.parent.name}.partial-{os.getpid()}")
    try:
        with _partial(staging):
            path.parent.mkdir(parents=True, exist_ok=True)
            staging.mkdir(exist_ok=True)
            tmp = staging / path.name
            _, failure, itk_text = itk_call(lambda: sitk.WriteImage(image, str(tmp), True))
            if failure is not None:
                raise InputError(path, f"cannot write the mask ({itk_reason(failure)})")
            log_itk_output(path, itk_text)
            os.replace(tmp, path)
    except OSError as exc:
        raise InputError(path, f"cannot write the mask ({exc.strerror or exc})") from None
    return path


def save_probability_map(path: Path | str, probabilities, labels, spacing_zyx) -> Path:
    """Probabilities (labels, z, y, x) on the image grid as float16 `.npz` with their label names and
    spacing: what `predict --save-probabilities` writes and `fit` reads. Written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = probabilities.cpu().numpy() if hasattr(probabilities, "cpu") else np.asarray(probabilities)
    tmp = path.with_name(f".{path.stem}.partial.npz")
    with _partial(tmp):
        np.savez(tmp, probabilities=values.astype(np.float16), labels=np.array(labels),
                 spacing=np.array(spacing_zyx, dtype=np.float64))
        os.replace(tmp, path)
    return path


# Staging folders and partial files this process is writing now.
_PARTIAL_WRITES: set[Path] = set()


@contextmanager
def _partial(path: Path) -> Iterator[Path]:
    """Register `path` (a staging folder or a partial file) while the block writes it; remove it after."""
    _PARTIAL_WRITES.add(path)
    try:
        yield path
    finally:
        _remove(path)
        _PARTIAL_WRITES.discard(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        path.unlink()
    except OSError:
        pass


def remove_partial_writes() -> list[Path]:
    """Remove every staging folder and partial file being written now; returns those that existed. For a
    signal handler: the process is about to exit in the middle of a write."""
    removed = []
    for path in list(_PARTIAL_WRITES):
        if path.exists():
            removed.append(path)
        _remove(path)
    return removed


def check_mask_suffix(path: Path) -> None:
    """A mask is written as .mha, .nii.gz, .nii or .nrrd."""
    if not path.name.lower().endswith((".mha", ".mhd", ".nii", ".nii.gz", ".nrrd")):
        raise InputError(path, "output must be .mha, .nii.gz, .nii or .nrrd")


# ---------------------------------------------------------------------------------------------------------
# Sockets (grand-challenge's /input layout)
