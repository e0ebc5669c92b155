"""The grand-challenge sockets: which input socket (task) a case came through, and where its mask goes."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path


from ..errors import InputError
from .images import case_id, is_image_file

log = logging.getLogger(__name__)

# PANTHER sockets: input folder slug -> task number; and the one output socket.
INPUT_SOCKETS = {"abdominal-t1-mri": 1, "abdominal-t2-mri": 2}
OUTPUT_SOCKET = "pancreatic-tumor-segmentation"
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
        if not isinstance(slug, str):
            raise InputError(path, f"entry {i}: interface.slug must be a string, got {type(slug).__name__}")
        if slug in INPUT_SOCKETS and slug not in slugs:  # a socket listed twice is still one socket
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
        found = sorted(p.name for p in folder.iterdir())  # what was there instead: a wrong extension, a dead link
        seen = f" (found {', '.join(found[:5])}{', ...' if len(found) > 5 else ''})" if found else ""
        raise InputError(folder, f"no image in the socket folder{seen}")
    if len(images) > 1:
        raise InputError(folder, f"expected exactly one image, found {len(images)}: "
                                 f"{', '.join(p.name for p in images[:5])}")
    return images[0]


def output_mask_path(output_dir: Path | str, input_image: Path) -> Path:
    return Path(output_dir) / "images" / OUTPUT_SOCKET / f"{case_id(input_image)}.mha"
