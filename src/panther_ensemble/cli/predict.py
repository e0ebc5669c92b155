"""`panther-ensemble predict`: the ensemble on image files anywhere (no container layout needed)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import InputError

HELP = "segment the pancreatic tumour in MRI files (the shipped ensemble of a task, or your own spec)"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", type=Path, help="MRI files (.mha, .nii.gz, .nrrd, ...) or folders of them")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="folder for the masks (one <case>.mha per input), or a file name for a single input")
    which = p.add_argument_group("which ensemble (default: the shipped one of --task)")
    which.add_argument("--task", type=int, choices=(1, 2), default=None,
                       help="1 = T1 arterial-phase MRI, 2 = T2 MR-Linac; picks resources/task<N>.json and the "
                            "shipped weights")
    which.add_argument("--spec", type=Path, default=None, help="your own ensemble spec (JSON)")
    which.add_argument("--model-dir", type=Path, default=None,
                       help="folder the spec's model paths are relative to (default: the shipped weights)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the networks run (default: the GPU when there is one)")
    p.add_argument("--save-probabilities", type=Path, default=None, metavar="DIR",
                   help="also write DIR/<member>/<case>.npz and DIR/ensemble/<case>.npz (float16 probability "
                        "maps on the image grid, with their label names): what `panther-ensemble fit` reads")


def _inputs(paths: list[Path]) -> list[Path]:
    from ..io import scan_images

    found = []
    for p in paths:
        if p.is_dir():
            images = list(scan_images(p).values())
            if not images:
                raise InputError(p, "folder holds no image")
            found += images
        else:
            found.append(p)
    return found


def ensemble_from_args(args: argparse.Namespace):
    """The Ensemble that --task / --spec / --model-dir / --device name."""
    from ..api import Ensemble, default_paths, locate_app_root, default_weights_root

    if args.spec is None and args.task is None:
        raise InputError("--task", "say which ensemble: --task 1 or 2 (the shipped ones), or --spec FILE")
    if args.spec is None:
        spec_path, weights = default_paths(args.task)
    else:
        spec_path = args.spec
        weights = None if args.model_dir else default_weights_root(locate_app_root())
    ensemble = Ensemble.from_spec(spec_path, args.model_dir or weights, args.device)
    if args.task is not None and ensemble.spec.task != args.task:
        raise InputError(spec_path, f"spec is for task {ensemble.spec.task}, not --task {args.task}")
    return ensemble


def main(args: argparse.Namespace) -> int:
    from ..io import case_id, read_image, save_probability_map

    images = _inputs(args.images)
    single_file = len(images) == 1 and args.output.suffix in (".mha", ".nii", ".gz", ".nrrd")
    ensemble = ensemble_from_args(args)
    keep = args.save_probabilities
    for path in images:
        cid = case_id(path)
        image, geometry = read_image(path)

        def on_member(name, probabilities, labels, cid=cid, spacing=geometry.spacing_zyx):
            save_probability_map(keep / name / f"{cid}.npz", probabilities, labels, spacing)

        result = ensemble.segment((image, geometry), probabilities=bool(keep), on_member=on_member if keep else None)
        if keep:
            save_probability_map(keep / "ensemble" / f"{cid}.npz", result.probabilities, result.labels,
                                 geometry.spacing_zyx)
        target = result.save(args.output if single_file else args.output / f"{cid}.mha")
        log.info("%s -> %s", path, target)
    return 0
