"""What the file itself tells before ITK reads its voxels: declared vs stored data, and whether the voxels fit in
memory. ITK reads a cut NIfTI (and a cut compressed MetaImage without CompressedDataSize) without complaint."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import SimpleITK as sitk

from ..errors import OutOfMemory

log = logging.getLogger(__name__)

_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def stored_data_problem(path: Path) -> str | None:
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
    except Exception:  # noqa: BLE001 - nibabel's ImageFileError is a plain Exception; ITK will say what is wrong
        return None
    if isinstance(found, str):
        return found
    if expected is None or found is None or found >= expected:
        return None
    what = str(expected) if isinstance(expected, _CompressedBytes) else f"{expected} bytes"
    return f"truncated or corrupt image data (expected {what}, found {found})"


def meta_header(path: Path) -> tuple[dict[str, str], int]:
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


def meta_voxel_bytes(fields: dict[str, str]) -> int | None:
    element = _MET_BYTES.get(fields.get("ElementType", ""))
    if element is None:
        return None
    return _product(fields["DimSize"].split()) * element * int(fields.get("ElementNumberOfChannels") or 1)


def _meta_data_sizes(path: Path) -> tuple[int | None, int | str | None]:
    """(declared, stored) bytes of a MetaImage's voxel data; a string when the data file is missing."""
    fields, offset = meta_header(path)
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
        expected = meta_voxel_bytes(fields)
        if expected is None or data_file != "LOCAL":
            return None, None
        with open(path, "rb") as f:
            f.seek(offset)
            return expected, inflated_size(f, expected, gzip=False)
    return meta_voxel_bytes(fields), found


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
        count = inflated_size(f, expected, gzip=True)
    return count if count < expected else None


def inflated_size(f, limit: int, gzip: bool) -> int:
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


def check_fits_in_memory(path: Path, size, pixel_id: int, float_copy: bool) -> None:
    """Refuse before reading when the voxels cannot fit in memory (a small compressed file may declare
    terabytes): ITK's buffer, numpy's copy of it and, for images, the float32 copy."""
    limit = memory_limit_bytes()
    if limit is None:
        return
    item = _pixel_bytes(pixel_id)
    need = _product(size) * (2 * item + (4 if float_copy else 0))
    if need > limit:
        raise OutOfMemory(f"reading {path}", f"{size_text(size, sitk.GetPixelIDValueAsString(pixel_id))}, about "
                                             f"{bytes_text(need)} to read; this machine allows {bytes_text(limit)}")


def memory_limit_bytes() -> int | None:
    """Memory this process may use: physical memory plus swap, or the cgroup's limit (a container's --memory, with
    the swap it allows) when smaller; None when unknown."""
    limits = []
    swap = 0
    try:
        import psutil

        swap = int(psutil.swap_memory().total)
        limits.append(int(psutil.virtual_memory().total) + swap)
    except Exception:  # noqa: BLE001 - psutil missing or /proc unreadable: unknown
        pass
    cgroup = cgroup_memory_limit(Path("/sys/fs/cgroup"), swap)
    if cgroup is not None:
        limits.append(cgroup)
    return min(limits) if limits else None


def cgroup_memory_limit(root: Path, host_swap: int) -> int | None:
    """The memory and swap the cgroup mounted at `root` allows (None: no limit). A refusal must not come from
    swap left out: a container run with --memory may still swap, as much as `--memory-swap` allows (cgroup v2
    memory.swap.max; v1 memory.memsw.limit_in_bytes, memory and swap together), or the host's swap where the
    cgroup does not limit it."""
    def read(name: str) -> int | None | str:
        try:
            text = (root / name).read_text().strip()
        except OSError:
            return "absent"
        return int(text) if text.isdigit() and int(text) < 2**60 else None  # "max" or v1's huge "no limit"

    memory = read("memory.max")  # cgroup v2
    if memory != "absent":
        if memory is None:
            return None
        swap = read("memory.swap.max")
        return memory + (host_swap if swap in (None, "absent") else min(swap, host_swap))
    memory = read("memory/memory.limit_in_bytes")  # cgroup v1
    if memory in (None, "absent"):
        return None
    both = read("memory/memory.memsw.limit_in_bytes")
    return min(both, memory + host_swap) if isinstance(both, int) else memory + host_swap


def bytes_text(n: float) -> str:
    """A byte count for people: '2.6 TB' (an absurd one, from an absurd header: '3e+20 PB')."""
    n = float(min(n, 10 ** 300))  # a Python int from a header's product can exceed any float
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB" if n < 1000 else f"{n:.1g} PB"


def size_text(size, pixel_type: str) -> str:
    return f"the image is {' x '.join(str(s) for s in size)} voxels of {pixel_type}"


def _pixel_bytes(pixel_id: int) -> int:
    try:
        return sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], pixel_id)).dtype.itemsize
    except RuntimeError:
        return 8


# ---------------------------------------------------------------------------------------------------------
# ITK's own output. Its exceptions are multi-line stack descriptions, and ITK, MetaIO and the NIfTI library
# print warnings straight to the process's stderr, past Python. Both become log lines here.
