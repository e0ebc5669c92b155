"""Reading images: one Geometry from read to write, every input check before the voxels (header, then data)."""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, OutOfMemory, is_memory_error, memory_errors_as, one_line
from .itk_output import itk_call, itk_read_report, itk_reason, log_itk_output
from .stored import check_fits_in_memory, size_text, stored_data_problem

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd", ".tif", ".tiff")


@dataclass(frozen=True)
class Geometry:
    """Where the voxels are in the world. Sizes and spacings in SimpleITK order (x, y, z)."""

    size_xyz: tuple[int, ...]
    spacing_xyz: tuple[float, ...]
    origin_xyz: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    @property
    def shape_zyx(self) -> tuple[int, ...]:
        return tuple(reversed(self.size_xyz))

    @property
    def spacing_zyx(self) -> tuple[float, ...]:
        return tuple(reversed(self.spacing_xyz))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_xyz))

    def mismatch(self, other: "Geometry", spacing_atol: float = 0.0, origin_atol: float = 0.0,
                 direction_atol: float = 0.0) -> tuple[str, tuple, tuple, float] | None:
        """The first way this geometry differs from `other`, as (what, this value, other value, tolerance)
        with what = "size", "spacing", "origin" or "direction" (SimpleITK order); None when the sizes are
        equal and the rest agrees within the absolute tolerances."""
        if tuple(self.size_xyz) != tuple(other.size_xyz):
            return "size", tuple(self.size_xyz), tuple(other.size_xyz), 0.0
        pairs = (("spacing", self.spacing_xyz, other.spacing_xyz, spacing_atol),
                 ("origin", self.origin_xyz, other.origin_xyz, origin_atol),
                 ("direction", self.direction, other.direction, direction_atol))
        for what, mine, theirs, atol in pairs:
            if len(mine) != len(theirs) or not np.allclose(mine, theirs, rtol=0, atol=atol):
                return what, tuple(mine), tuple(theirs), float(atol)
        return None

    def stamp(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing_xyz)
        image.SetOrigin(self.origin_xyz)
        image.SetDirection(self.direction)
        return image


def case_id(path: Path | str) -> str:
    """File name without its image suffix (`abc.nii.gz` -> `abc`)."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES)


def scan_images(folder: Path | str) -> dict[str, Path]:
    """{case id: path} of the image files directly in `folder`, sorted by case id; InputError when the
    folder is missing or holds two files of one case (`a.mha` and `a.nii.gz`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not is_image_file(path):
            continue
        cid = case_id(path)
        if cid in found:
            raise InputError(folder, f"two files for case {cid!r}: {found[cid].name} and {path.name}")
        found[cid] = path
    return dict(sorted(found.items()))


def read_labels(path: Path | str) -> tuple[np.ndarray, Geometry]:
    """A 3D label or mask image as it is stored (integers, (z, y, x)) plus its geometry."""
    path = Path(path)
    image = _read_itk(path, intensity=False)
    with memory_errors_as(f"reading {path}"):
        array = sitk.GetArrayFromImage(image)
    if array.dtype.kind not in "uib":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise InputError(path, f"a label image must hold integers, got {array.dtype} values")
    return array, Geometry.of(image)


def read_geometry(path: Path | str) -> Geometry:
    """The geometry of a 3D image file from its header alone (no voxel data read)."""
    path = Path(path)
    reader = _read_header(path)
    if reader.GetDimension() != 3:
        raise InputError(path, f"expected a 3D image, got {reader.GetDimension()}D of size {reader.GetSize()}")
    return Geometry(tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()),
                    tuple(reader.GetDirection()))


def read_image(path: Path | str) -> tuple[np.ndarray, Geometry]:
    """One 3D scalar image as float32 (z, y, x) plus its geometry; refuses anything else with one line.

    The header is read and checked first (components, dimension, size, spacing, direction, whether the file
    holds all the voxel data it declares, whether the voxels fit in memory), the voxels only then."""
    path = Path(path)
    image = _read_itk(path, intensity=True)
    geometry = Geometry.of(image)
    try:
        array = sitk.GetArrayFromImage(image)
        if np.iscomplexobj(array):
            raise InputError(path, "complex-valued voxels are not an MRI intensity image")
        if not np.isfinite(array).all():  # before the float32 copy, which would turn a huge value infinite
            raise InputError(path, f"{_voxels(np.count_nonzero(~np.isfinite(array)))} NaN or infinite")
        if array.dtype.kind == "f" and array.dtype.itemsize > 4:
            big = int(np.count_nonzero(np.abs(array) > np.finfo(np.float32).max))
            if big:
                raise InputError(path, f"{_voxels(big)} beyond the float32 range "
                                       f"(|value| > {np.finfo(np.float32).max:.3g})")
        array = array.astype(np.float32, copy=False)
    except MemoryError as exc:
        raise OutOfMemory(f"reading {path}", f"{size_text(geometry.size_xyz, image.GetPixelIDTypeAsString())} "
                                             f"({one_line(str(exc), 120)})") from None
    return array, geometry


def _voxels(n) -> str:
    return f"{int(n)} voxel is" if n == 1 else f"{int(n)} voxels are"


def _read_header(path: Path) -> sitk.ImageFileReader:
    """A reader holding the file's header (ITK's output captured), or one line on why there is none."""
    if not path.is_file():
        raise InputError(path, "not a file" if path.exists() else "no such image file")
    if not os.access(path, os.R_OK):  # ITK would call it a file of no known format
        raise InputError(path, "permission denied: this user cannot read the file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    _, failure, itk_text = itk_call(reader.ReadImageInformation)
    if failure is not None:
        reason = itk_reason(failure)
        if "Unable to determine ImageIO reader" in reason:
            reason = "not an image file of a known format: .mha, .mhd, .nii.gz, .nii, .nrrd, ..."
        raise InputError(path, f"cannot read image ({reason})")
    log_itk_output(path, itk_text)
    return reader


def _read_itk(path: Path, intensity: bool) -> sitk.Image:
    """Header first, every check that needs no voxels, then the voxels. `intensity`: an input image (its
    spacing must be positive, its direction orthonormal, a float32 copy follows), not a label image."""
    reader = _read_header(path)
    components, dimension, size = reader.GetNumberOfComponents(), reader.GetDimension(), tuple(reader.GetSize())
    if components != 1:
        raise InputError(path, f"expected a scalar image, got {components} components per voxel")
    if dimension != 3:
        raise InputError(path, f"expected a 3D image, got {dimension}D of size {size}")
    declared = _declared_header(path)
    if "size" in declared and min(declared["size"]) < 0:  # ITK reads -60 as 4294967236
        raise InputError(path, f"negative size in the header: {tuple(int(v) for v in declared['size'])}")
    if min(size) < 1:
        raise InputError(path, f"empty image of size {size}")
    if intensity:
        spacing = np.asarray(declared.get("spacing", reader.GetSpacing()), dtype=float)
        if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise InputError(path, f"spacing must be positive and finite, got {tuple(float(s) for s in spacing)}")
    # ITK reads a MetaImage's NaN offset as 0 and passes a NIfTI's NaN on: either way the mask would not sit where
    # the image does
    origin = np.asarray(declared.get("origin", reader.GetOrigin()), dtype=float)
    if not np.all(np.isfinite(origin)) or not np.all(np.isfinite(reader.GetOrigin())):
        raise InputError(path, f"origin must be finite, got {tuple(float(v) for v in origin)}")
    problem = direction_problem(reader.GetDirection(), orthonormal=intensity)
    if problem is not None:
        raise InputError(path, problem)
    pixel_type = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    check_fits_in_memory(path, size, reader.GetPixelID(), float_copy=intensity)  # before decompressing anything
    problem = stored_data_problem(path)
    if problem is not None:
        raise InputError(path, problem)
    image, failure, itk_text = itk_call(reader.Execute)
    if failure is not None and is_memory_error(failure):
        raise OutOfMemory(f"reading {path}", f"{size_text(size, pixel_type)} ({one_line(str(failure), 120)})")
    problem = itk_read_report(path, itk_text)
    if problem is None and failure is not None:
        problem = f"ITK could not read the image data ({itk_reason(failure)})"  # not known to be cut: not said
    if problem is not None:
        raise InputError(path, problem)
    log_itk_output(path, itk_text)
    return image


def _declared_header(path: Path) -> dict[str, tuple[float, ...]]:
    """Spacing, origin and size as written in the file header, where this format's header is read here: ITK
    silently turns a negative MetaImage or NIfTI spacing into a positive one with a flipped direction, reads a
    MetaImage's NaN offset as 0 and a negative size as a huge one; each is a broken file, so look. Keys absent
    when unknown (another format, an unreadable header: ITK then says what is wrong)."""
    name = path.name.lower()
    found: dict[str, tuple[float, ...]] = {}
    try:
        if name.endswith((".mha", ".mhd")):
            keys = {"ElementSpacing": "spacing", "ElementSize": "spacing", "Offset": "origin", "Position": "origin",
                    "Origin": "origin", "DimSize": "size"}
            with open(path, "rb") as f:
                for raw in f:
                    key, _, value = raw.decode("latin-1").partition("=")
                    key = key.strip()
                    if key in keys and keys[key] not in found:
                        found[keys[key]] = tuple(float(v) for v in value.split())
                    if key == "ElementDataFile":
                        break
        elif name.endswith((".nii", ".nii.gz")):
            pixdim = _nifti_pixdim(path)
            if pixdim is not None:
                found["spacing"] = pixdim
    except (OSError, ValueError, UnicodeError, EOFError, struct.error, zlib.error):
        return {}
    return found


def _nifti_pixdim(path: Path) -> tuple[float, ...] | None:
    """pixdim[1:4] as stored (nibabel would hand back their absolute values): NIfTI-1 float32 at byte 80, NIfTI-2
    float64 at byte 112, in the byte order that makes sizeof_hdr 348 or 540."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        head = f.read(136)
    for order in "<>":
        (sizeof_hdr,) = struct.unpack(order + "i", head[:4])
        if sizeof_hdr == 348:  # float32: shortest decimal that reads back the same (1.2, not 1.2000000476837158)
            return tuple(float(f"{v:.7g}") for v in struct.unpack(order + "3f", head[80:92]))
        if sizeof_hdr == 540:
            return struct.unpack(order + "3d", head[112:136])
    return None


# ---------------------------------------------------------------------------------------------------------
# Checks on a file before its voxels are read


def direction_problem(direction, orthonormal: bool = True) -> str | None:
    """What is wrong with a direction matrix (ITK order, row-major, columns = index axes), or None.
    Singular or not finite: always wrong (ITK refuses to set it). Not orthonormal (columns not unit vectors
    at right angles, beyond 1e-3): wrong for an input image, whose voxel size belongs in the spacing."""
    values = np.asarray(direction, dtype=float)
    n = int(round(np.sqrt(values.size)))
    if n * n != values.size:
        return f"direction matrix has {values.size} values"
    matrix = values.reshape(n, n)
    shown = " / ".join(" ".join(f"{v:g}" for v in row) for row in matrix)
    if not np.all(np.isfinite(matrix)):
        return f"direction matrix ({shown}) holds values that are not finite"
    det = float(np.linalg.det(matrix))
    if abs(det) < 1e-6:
        return (f"direction matrix ({shown}) is singular (determinant {abs(det):.3g}): its columns must be "
                "unit vectors at right angles")
    if orthonormal and np.abs(matrix.T @ matrix - np.eye(n)).max() > 1e-3:
        lengths = ", ".join(f"{v:.4g}" for v in np.linalg.norm(matrix, axis=0))
        return (f"direction matrix ({shown}) is not orthonormal (column lengths {lengths}): its columns must be "
                "unit vectors at right angles, the voxel size belongs in the spacing")
    return None


# bytes per value of the MetaImage element types
