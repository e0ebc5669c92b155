"""Read and write images; find the input socket. The only module that touches SimpleITK images.

The input's geometry (size, spacing, origin, direction) travels as one `Geometry` object from
`read_image` to `write_mask`. Arrays are in SimpleITK's array order (z, y, x), exactly as nnU-Net's
SimpleITKIO reads them: no reorientation, so the networks see what they saw in training.
Every check on an input file lives here and raises `InputError` naming the file; what ITK prints on its
own (warnings, MetaIO's read reports) is captured around each ITK call and logged as one line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import SimpleITK as sitk

from .console import STDERR_LOCK
from .errors import InputError, OutOfMemory, is_memory_error, memory_errors_as, one_line

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
    if not path.is_file():
        raise InputError(path, "not a file" if path.exists() else "no such image file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    _, failure, itk_text = _itk_call(reader.ReadImageInformation)
    if failure is not None:
        raise InputError(path, f"cannot read image ({_itk_reason(failure)})")
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
        array = array.astype(np.float32, copy=False)
    except MemoryError as exc:
        raise OutOfMemory(f"reading {path}", f"{_size_text(geometry.size_xyz, image.GetPixelIDTypeAsString())} "
                                             f"({one_line(str(exc), 120)})") from None
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(path, f"{bad} voxel{' is' if bad == 1 else 's are'} NaN or infinite")
    return array, geometry


def _read_itk(path: Path, intensity: bool) -> sitk.Image:
    """Header first, every check that needs no voxels, then the voxels. `intensity`: an input image (its
    spacing must be positive, its direction orthonormal, a float32 copy follows), not a label image."""
    if not path.is_file():
        raise InputError(path, "not a file" if path.exists() else "no such image file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    _, failure, itk_text = _itk_call(reader.ReadImageInformation)
    if failure is not None:
        reason = _itk_reason(failure)
        if "Unable to determine ImageIO reader" in reason:
            reason = "not an image file of a known format: .mha, .mhd, .nii.gz, .nii, .nrrd, ..."
        raise InputError(path, f"cannot read image ({reason})")
    _log_itk_output(path, itk_text)
    components, dimension, size = reader.GetNumberOfComponents(), reader.GetDimension(), tuple(reader.GetSize())
    if components != 1:
        raise InputError(path, f"expected a scalar image, got {components} components per voxel")
    if dimension != 3:
        raise InputError(path, f"expected a 3D image, got {dimension}D of size {size}")
    if min(size) < 1:
        raise InputError(path, f"empty image of size {size}")
    if intensity:
        declared = _declared_spacing(path)
        spacing = np.asarray(declared if declared is not None else reader.GetSpacing(), dtype=float)
        if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise InputError(path, f"spacing must be positive and finite, got {tuple(float(s) for s in spacing)}")
    problem = direction_problem(reader.GetDirection(), orthonormal=intensity)
    if problem is not None:
        raise InputError(path, problem)
    pixel_type = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    _check_fits_in_memory(path, size, reader.GetPixelID(), float_copy=intensity)  # before decompressing anything
    problem = _stored_data_problem(path)
    if problem is not None:
        raise InputError(path, problem)
    image, failure, itk_text = _itk_call(reader.Execute)
    if failure is not None and is_memory_error(failure):
        raise OutOfMemory(f"reading {path}", f"{_size_text(size, pixel_type)} ({one_line(str(failure), 120)})")
    problem = _itk_read_report(path, itk_text)
    if problem is None and failure is not None:
        problem = f"truncated or corrupt image data ({_itk_reason(failure)})"
    if problem is not None:
        raise InputError(path, problem)
    _log_itk_output(path, itk_text)
    return image


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
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def _stored_data_problem(path: Path) -> str | None:
    """'truncated or corrupt image data (...)' when the file holds less voxel data than its header declares,
    where that can be told cheaply: MetaImage (uncompressed, or compressed with CompressedDataSize, or a
    separate data file), NIfTI, gzipped NIfTI (its trailer; the stream is counted only when the trailer
    disagrees). ITK reads a cut NIfTI without complaint, filling the rest with whatever it finds."""
    name = path.name.lower()
    try:
        if name.endswith((".mha", ".mhd")):
            expected, found = _meta_data_sizes(path)
        elif name.endswith(".nii"):
            expected, found = _nifti_data_size(path), path.stat().st_size
        elif name.endswith(".nii.gz"):
            expected = _nifti_data_size(path)
            found = _gzip_size_if_short(path, expected)
        else:
            return None
    except (OSError, ValueError, KeyError, UnicodeError, ImportError):
        return None  # ITK will say what is wrong
    if isinstance(found, str):
        return found
    if expected is None or found is None or found >= expected:
        return None
    what = str(expected) if isinstance(expected, _CompressedBytes) else f"{expected} bytes"
    return f"truncated or corrupt image data (expected {what}, found {found})"


def _meta_header(path: Path) -> tuple[dict[str, str], int]:
    """A MetaImage's header fields, and where a LOCAL ElementDataFile's voxel data starts."""
    fields: dict[str, str] = {}
    offset = 0
    with open(path, "rb") as f:
        for raw in f:
            offset += len(raw)
            key, _, value = raw.decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile" or offset > 1 << 16:
                break
    return fields, offset


def _meta_voxel_bytes(fields: dict[str, str]) -> int | None:
    element = _MET_BYTES.get(fields.get("ElementType", ""))
    if element is None:
        return None
    return _product(fields["DimSize"].split()) * element * int(fields.get("ElementNumberOfChannels") or 1)


def _meta_data_sizes(path: Path) -> tuple[int | None, int | str | None]:
    """(declared, stored) bytes of a MetaImage's voxel data; a string when the data file is missing."""
    fields, offset = _meta_header(path)
    data_file = fields.get("ElementDataFile", "")
    if data_file == "LOCAL":
        found = path.stat().st_size - offset
    elif data_file and data_file != "LIST" and not any(c in data_file for c in " %"):
        raw_path = path.parent / data_file
        if not raw_path.is_file():
            return None, f"its voxel data file {data_file} is missing"
        if fields.get("HeaderSize", "0") not in ("", "0"):
            return None, None
        found = raw_path.stat().st_size
    else:
        return None, None
    if fields.get("CompressedData", "False").lower() == "true":
        declared = fields.get("CompressedDataSize")
        if declared:
            return _CompressedBytes(declared), found
        # other writers leave the size out; ITK then reads a cut stream with random voxels at the end, and only
        # sometimes says 'Uncompress failed': count what the stream holds (a decompression, in bounded pieces)
        expected = _meta_voxel_bytes(fields)
        if expected is None or data_file != "LOCAL":
            return None, None
        with open(path, "rb") as f:
            f.seek(offset)
            return expected, _inflated_size(f, expected, gzip=False)
    return _meta_voxel_bytes(fields), found


class _CompressedBytes(int):
    """A byte count of compressed data: says so in messages."""

    def __str__(self) -> str:
        return f"{int(self)} bytes of compressed data"


def _product(values) -> int:
    n = 1
    for v in values:
        n *= int(v)
    return n


def _nifti_data_size(path: Path) -> int:
    import nibabel

    header = nibabel.load(str(path)).header
    return int(header["vox_offset"]) + _product(header.get_data_shape()) * header.get_data_dtype().itemsize


def _gzip_size_if_short(path: Path, expected: int) -> int | None:
    """The uncompressed size of a gzip file when it is below `expected`, else None. The trailer's size field
    (modulo 2**32) is looked at first; only when it disagrees is the stream decompressed and counted (a cut
    file has no trailer)."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        if int.from_bytes(f.read(4), "little") == expected % 2**32:
            return None
        f.seek(0)
        count = _inflated_size(f, expected, gzip=True)
    return count if count < expected else None


def _inflated_size(f, limit: int, gzip: bool) -> int:
    """How many bytes the zlib (or gzip) stream from `f`'s position decompresses to, counted in bounded
    pieces up to `limit`, stopping where the stream breaks off."""
    import zlib

    wbits = 16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS
    stream = zlib.decompressobj(wbits)
    count, data = 0, b""
    try:
        while count < limit:
            data = data or f.read(1 << 16)
            if not data:
                break
            count += len(stream.decompress(data, 1 << 22))
            data = stream.unconsumed_tail
            if stream.eof:
                if not gzip:
                    break
                data, stream = stream.unused_data, zlib.decompressobj(wbits)  # the next gzip member
    except zlib.error:
        pass
    return count


def _itk_read_report(path: Path, itk_text: str) -> str | None:
    """A short read that ITK printed but did not raise: MetaIO says 'data not read completely' (ideal =
    N : actual = M), and 'Uncompress failed' for a compressed MetaImage without CompressedDataSize, cut or
    not (so the stream is counted here), while ITK returns the image anyway."""
    short = re.search(r"ideal\s*=\s*(\d+)\s*:\s*actual\s*=\s*(\d+)", itk_text)
    if short:
        return f"truncated or corrupt image data (expected {short.group(1)} bytes, found {short.group(2)})"
    if "uncompress failed" not in itk_text.lower():
        return None
    try:
        fields, offset = _meta_header(path)
        expected = _meta_voxel_bytes(fields)
        if expected is None or fields.get("ElementDataFile") != "LOCAL":
            return None
        with open(path, "rb") as f:
            f.seek(offset)
            found = _inflated_size(f, expected, gzip=False)
    except (OSError, ValueError, KeyError):
        return None
    if found < expected:
        return f"truncated or corrupt image data (expected {expected} bytes, found {found})"
    return None


def _check_fits_in_memory(path: Path, size, pixel_id: int, float_copy: bool) -> None:
    """Refuse before reading when the voxels cannot fit in memory (a small compressed file may declare
    terabytes): ITK's buffer, numpy's copy of it and, for images, the float32 copy."""
    limit = memory_limit_bytes()
    if limit is None:
        return
    item = _pixel_bytes(pixel_id)
    need = _product(size) * (2 * item + (4 if float_copy else 0))
    if need > limit:
        raise OutOfMemory(f"reading {path}", f"{_size_text(size, sitk.GetPixelIDValueAsString(pixel_id))}, about "
                                             f"{bytes_text(need)} to read; this machine allows {bytes_text(limit)}")


def memory_limit_bytes() -> int | None:
    """Memory this process may use: physical memory plus swap, or the cgroup limit (a container's --memory)
    when smaller; None when unknown."""
    limits = []
    try:
        import psutil

        limits.append(int(psutil.virtual_memory().total + psutil.swap_memory().total))
    except Exception:  # noqa: BLE001 - psutil missing or /proc unreadable: unknown
        pass
    for name in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            limits.append(int(text))
    return min(limits) if limits else None


def bytes_text(n: float) -> str:
    """A byte count for people: '2.6 TB'."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def _size_text(size, pixel_type: str) -> str:
    return f"the image is {' x '.join(str(s) for s in size)} voxels of {pixel_type}"


def _pixel_bytes(pixel_id: int) -> int:
    try:
        return sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], pixel_id)).dtype.itemsize
    except RuntimeError:
        return 8


# ---------------------------------------------------------------------------------------------------------
# ITK's own output. Its exceptions are multi-line stack descriptions, and ITK, MetaIO and the NIfTI library
# print warnings straight to the process's stderr, past Python. Both become log lines here.


def _itk_call(fn: Callable[[], Any]) -> tuple[Any, BaseException | None, str]:
    """(result, exception or None, what was written to stderr meanwhile): the process's stderr is captured
    for the call, so ITK's raw lines never reach the user."""
    result, failure = None, None
    with _captured_stderr() as captured:
        try:
            result = fn()
        except (RuntimeError, MemoryError) as exc:
            failure = exc
    return result, failure, "".join(captured)


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """File descriptor 2 pointed at a temporary file for the block; the text is appended to the yielded list
    on exit. Captures nothing where descriptor 2 cannot be duplicated."""
    with STDERR_LOCK:  # one capture at a time, and no log line from another thread inside it (console.py)
        with _fd2_to_temporary_file() as captured:
            yield captured


@contextmanager
def _fd2_to_temporary_file() -> Iterator[list[str]]:
    captured: list[str] = []
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass
    try:
        saved = os.dup(2)
    except OSError:
        yield captured
        return
    try:
        sink = tempfile.TemporaryFile()
    except OSError:
        sink = open(os.devnull, "w+b")
    with sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            try:
                sink.seek(0)
                captured.append(sink.read(1 << 20).decode("utf-8", "replace"))
            except OSError:
                pass


_ITK_WARNING = re.compile(r"WARNING: In [^\n]*, line \d+\n[^\n]*?\(0x[0-9a-fA-F]+\):\s*([^\n]*)")


def _log_itk_output(path: Path, text: str) -> None:
    """ITK warnings as one log line each (e.g. a NIfTI direction coerced to orthogonal); anything else ITK
    printed, at debug level."""
    if not text.strip():
        return
    for message in _ITK_WARNING.findall(text):
        log.warning("%s: %s (ITK)", path, message.strip())
    rest = _ITK_WARNING.sub("", text).strip()
    if rest:
        log.debug("%s: ITK printed: %s", path, " ".join(rest.split()))


def _itk_reason(exc: BaseException) -> str:
    """The useful sentence of an ITK exception: its 'Description:' line, else its last error line without
    source location and object address. 'Reason:' lines are dropped: ITK appends the last errno, often
    unrelated (e.g. 'No such file or directory' for a short read)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ln.lower().startswith("description:"):
            return one_line(ln.split(":", 1)[1], 200)
    candidates = [ln for ln in lines if not ln.startswith(("Reason:", "Exception thrown in"))] or lines
    if not candidates:
        return type(exc).__name__
    text = re.sub(r"^(sitk::|ITK )?ERROR:\s*", "", candidates[-1])
    text = re.sub(r"^\w+\s*\(0x[0-9a-fA-F]+\):\s*", "", text)
    return one_line(text, 200)


# ---------------------------------------------------------------------------------------------------------
# Writing


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
            _, failure, itk_text = _itk_call(lambda: sitk.WriteImage(image, str(tmp), True))
            if failure is not None:
                raise InputError(path, f"cannot write the mask ({_itk_reason(failure)})")
            _log_itk_output(path, itk_text)
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
