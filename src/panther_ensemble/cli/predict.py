"""`panther-ensemble predict`: the ensemble on image files anywhere (no container layout needed)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ..errors import InputError

HELP = "segment the pancreatic tumour in one or more MRI files with an ensemble spec"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", type=Path, help="input images (.mha, .nii.gz, ...) or folders of them")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output folder (one <case>.mha per input), or a file name for a single input")
    p.add_argument("--spec", type=Path, required=True, help="ensemble spec JSON (e.g. resources/task1.json)")
    p.add_argument("--model-dir", type=Path, required=True, help="weights root the spec's model paths are under")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--save-probabilities", type=Path, default=None, metavar="DIR",
                   help="also write DIR/<member>/<case>.npz and DIR/ensemble/<case>.npz (float16 probability "
                        "maps on the image grid, with their label names): the input of `panther-ensemble fit`")


def _inputs(paths: list[Path]) -> list[Path]:
    from ..io import is_image_file

    found = []
    for p in paths:
        if p.is_dir():
            images = sorted(q for q in p.iterdir() if is_image_file(q))
            if not images:
                raise InputError(p, "folder holds no image")
            found += images
        else:
            found.append(p)
    return found


def main(args: argparse.Namespace) -> int:
    from ..engine import Engine
    from ..io import case_id, read_image, save_probability_map, write_mask
    from ..spec import load_spec

    images = _inputs(args.images)
    single_file = len(images) == 1 and args.output.suffix in (".mha", ".nii", ".gz", ".nrrd")
    engine = Engine(load_spec(args.spec), args.model_dir, args.device)
    for path in images:
        image, geometry = read_image(path)
        cid = case_id(path)
        hook = None
        if args.save_probabilities:
            def hook(name, probs, labels, cid=cid, spacing=geometry.spacing_zyx):
                save_probability_map(args.save_probabilities / name / f"{cid}.npz", probs, labels, spacing)
        result = engine.predict(image, geometry, keep_probabilities=bool(args.save_probabilities),
                                member_hook=hook)
        if args.save_probabilities:
            save_probability_map(args.save_probabilities / "ensemble" / f"{cid}.npz", result.probabilities,
                                 result.labels, geometry.spacing_zyx)
        target = args.output if single_file else args.output / f"{cid}.mha"
        write_mask(result.mask, geometry, target)
        log.info("%s -> %s", path, target)
    return 0
