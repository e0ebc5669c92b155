"""Read and write images; find the input socket. The only module that touches SimpleITK images.

The input's geometry (size, spacing, origin, direction) travels as one `Geometry` object from
`read_image` to `write_mask`. Arrays are in SimpleITK's array order (z, y, x), exactly as nnU-Net's
SimpleITKIO reads them: no reorientation, so the networks see what they saw in training.
Every check on an input file lives here and raises `InputError` naming the file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

log = logging.getLogger(__name__)

# PANTHER sockets: input folder slug -> task number; and the one output socket.
INPUT_SOCKETS = {"abdominal-t1-mri": 1, "abdominal-t2-mri": 2}
OUTPUT_SOCKET = "pancreatic-tumor-segmentation"
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
    image = _read_itk(path)
    array = sitk.GetArrayFromImage(image)
    if array.dtype.kind not in "uib":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise InputError(path, f"a label image must hold integers, got {array.dtype} values")
    return array, Geometry.of(image)


def _read_itk(path: Path) -> sitk.Image:
    if not path.is_file():
        raise InputError(path, "no such image file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(path, f"cannot read image ({_first_itk_line(exc)})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components "
                               "per voxel")
    if image.GetDimension() != 3:
        raise InputError(path, f"expected a 3D image, got {image.GetDimension()}D of size {image.GetSize()}")
    return image


def read_geometry(path: Path | str) -> Geometry:
    """The geometry of a 3D image file from its header alone (no voxel data read)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such image file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(path, f"cannot read image ({_first_itk_line(exc)})") from None
    if reader.GetDimension() != 3:
        raise InputError(path, f"expected a 3D image, got {reader.GetDimension()}D of size {reader.GetSize()}")
    return Geometry(tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()),
                    tuple(reader.GetDirection()))


def read_image(path: Path | str) -> tuple[np.ndarray, Geometry]:
    """One 3D scalar image as float32 (z, y, x) plus its geometry; refuses anything else with one line."""
    path = Path(path)
    image = _read_itk(path)
    geometry = Geometry.of(image)
    declared = _declared_spacing(path)
    spacing = np.asarray(declared if declared is not None else geometry.spacing_xyz)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(path, f"spacing must be positive and finite, got {tuple(float(s) for s in spacing)}")
    if min(geometry.size_xyz) < 1:
        raise InputError(path, f"empty image of size {geometry.size_xyz}")
    try:
        array = sitk.GetArrayFromImage(image)
    except RuntimeError as exc:
        raise InputError(path, f"cannot read voxel data ({_first_itk_line(exc)})") from None
    if np.iscomplexobj(array):
        raise InputError(path, "complex-valued voxels are not an MRI intensity image")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(path, f"{bad} voxels are NaN or infinite")
    return array, geometry


def _declared_spacing(path: Path) -> tuple[float, ...] | None:
    """The spacing as written in the file header. ITK silently turns a negative MetaImage or NIfTI
    spacing into a positive one with a flipped direction; a negative spacing is a broken file, so look."""
    name = path.name.lower()
    try:
        if name.endswith((".mha", ".mhd")):
            with open(path, "rb") as f:
                for raw in f:
                    key, _, value = raw.decode("latin-1").partition("=")
                    if key.strip() in ("ElementSpacing", "ElementSize"):
                        return tuple(float(v) for v in value.split())
                    if key.strip() == "ElementDataFile":
                        break
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel

            header = nibabel.load(str(path)).header
            return tuple(float(v) for v in header["pixdim"][1:4])
    except (OSError, ValueError, UnicodeError):
        return None
    return None


def _first_itk_line(exc: Exception) -> str:
    # ITK errors are multi-line stack descriptions; the useful part is the 'Description' line.
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def write_mask(mask: np.ndarray, geometry: Geometry, path: Path | str) -> Path:
    """Write a uint8 mask with the input's geometry, atomically.

    The image is written into a hidden sibling folder of the target folder and renamed into place, so a
    crash, a full disk or a kill never leaves a partial file in the folder the platform collects from.
    """
    path = Path(path)
    if mask.shape != geometry.shape_zyx:
        raise ValueError(f"mask shape {mask.shape} does not match the image shape {geometry.shape_zyx}")
    _image_io_for(path)
    image = geometry.stamp(sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8)))
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent.with_name(f".{path.parent.name}.partial-{os.getpid()}")
    staging.mkdir(exist_ok=True)
    tmp = staging / path.name
    try:
        sitk.WriteImage(image, str(tmp), True)
        os.replace(tmp, path)
    finally:
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    return path


def save_probability_map(path: Path | str, probabilities, labels, spacing_zyx) -> Path:
    """Probabilities (labels, z, y, x) on the image grid as float16 `.npz` with their label names and
    spacing: what `predict --save-probabilities` writes and `fit` reads. Written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = probabilities.cpu().numpy() if hasattr(probabilities, "cpu") else np.asarray(probabilities)
    tmp = path.with_name(f".{path.stem}.partial.npz")
    np.savez(tmp, probabilities=values.astype(np.float16), labels=np.array(labels),
             spacing=np.array(spacing_zyx, dtype=np.float64))
    os.replace(tmp, path)
    return path


def _image_io_for(path: Path) -> None:
    if not path.name.lower().endswith((".mha", ".mhd", ".nii", ".nii.gz", ".nrrd")):
        raise InputError(path, "output must be .mha, .nii.gz, .nii or .nrrd")


# ---------------------------------------------------------------------------------------------------------
# Sockets (grand-challenge's /input layout)


@dataclass(frozen=True)
class SocketInput:
    task: int
    slug: str
    image: Path


def find_socket_input(input_dir: Path | str) -> SocketInput:
    """Which task and which image: from `inputs.json` when present, else from the socket folder that exists."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(input_dir, "input folder does not exist")
    inputs_json = input_dir / "inputs.json"
    if inputs_json.is_file():
        slugs = _slugs_from_inputs_json(inputs_json)
    else:
        slugs = [s for s in INPUT_SOCKETS if (input_dir / "images" / s).is_dir()]
        if not slugs:
            raise InputError(input_dir, "no input socket: expected images/abdominal-t1-mri/ or "
                                        "images/abdominal-t2-mri/ (or an inputs.json)")
    if len(slugs) > 1:
        raise InputError(input_dir, f"more than one input socket present ({', '.join(slugs)}); expected one task")
    slug = slugs[0]
    return SocketInput(INPUT_SOCKETS[slug], slug, single_image_in(input_dir / "images" / slug))


def _slugs_from_inputs_json(path: Path) -> list[str]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(entries, list):
        raise InputError(path, "expected a JSON list of socket entries")
    slugs = []
    for i, entry in enumerate(entries):
        try:
            slug = entry["interface"]["slug"]
        except (TypeError, KeyError):
            raise InputError(path, f"entry {i} has no interface.slug") from None
        if slug in INPUT_SOCKETS:
            slugs.append(slug)
    if not slugs:
        known = ", ".join(INPUT_SOCKETS)
        raise InputError(path, f"names no known input socket (expected one of {known})")
    return slugs


def single_image_in(folder: Path) -> Path:
    if not folder.is_dir():
        raise InputError(folder, "socket folder does not exist")
    images = sorted(p for p in folder.iterdir() if is_image_file(p))
    if not images:
        raise InputError(folder, "no image in the socket folder")
    if len(images) > 1:
        raise InputError(folder, f"expected exactly one image, found {len(images)}: "
                                 f"{', '.join(p.name for p in images[:5])}")
    return images[0]


def output_mask_path(output_dir: Path | str, input_image: Path) -> Path:
    return Path(output_dir) / "images" / OUTPUT_SOCKET / f"{case_id(input_image)}.mha"
