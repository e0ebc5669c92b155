"""`panther-ensemble predict`: the ensemble on any number of image files, loaded once (docs/MANY_CASES.md).

One input and an output file name (`-o mask.mha`): that one mask. Otherwise `-o` is a folder that gets
<case>.mha per case and summary.csv; finished cases are skipped, failures recorded, work shardable.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import InputError

HELP = "segment the pancreatic tumour in MRI files (the shipped ensemble of a task, or your own spec)"
log = logging.getLogger(__name__)
MASK_SUFFIXES = (".mha", ".nii", ".gz", ".nrrd")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+",
                   help="MRI files (.mha, .nii.gz, .nrrd, ...), folders of them, glob patterns (quoted: expanded "
                        "here) or list files (.txt/.lst/.list, one of these per line)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="folder for the masks (<case>.mha) and summary.csv; or a file name for a single input")
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
    many = p.add_argument_group("many cases")
    many.add_argument("--overwrite", action="store_true",
                      help="predict every case again (default: skip a case whose valid mask is already in -o)")
    many.add_argument("--shard", default=None, metavar="INDEX/COUNT",
                      help="do only case k of the sorted list where k mod COUNT == INDEX; '/COUNT' takes INDEX "
                           "from SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX")
    many.add_argument("--summary-only", action="store_true",
                      help="predict nothing: merge the shards' logs in -o into summary.csv (a case no shard "
                           "recorded is 'missing'); exit status 1 if any case failed or is missing")
    many.add_argument("--preview", type=Path, default=None, metavar="DIR",
                      help="also write DIR/<case>.png (three slices through the tumour, mask outlined) and "
                           "DIR/contact_sheet.png")
    many.add_argument("--no-progress", action="store_true", help="no progress bar (one log line per case stays)")


def ensemble_from_args(args: argparse.Namespace):
    """The Ensemble that --task / --spec / --model-dir / --device name."""
    from ..api import Ensemble, default_paths, default_weights_root, locate_app_root

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


def _single_file(args: argparse.Namespace, cases) -> bool:
    return (len(cases) == 1 and args.output.name.lower().endswith(MASK_SUFFIXES) and not args.output.is_dir()
            and args.shard is None and not args.summary_only and args.preview is None)


def _predict_one(args: argparse.Namespace, case) -> int:
    """The plain case: one image in, one named mask out (no summary, no resume)."""
    from ..io import read_image, save_probability_map

    ensemble = ensemble_from_args(args)
    keep = args.save_probabilities
    image, geometry = read_image(case.path)

    def on_member(name, probabilities, labels):
        save_probability_map(keep / name / f"{case.id}.npz", probabilities, labels, geometry.spacing_zyx)

    result = ensemble.segment((image, geometry), probabilities=bool(keep), on_member=on_member if keep else None)
    if keep:
        save_probability_map(keep / "ensemble" / f"{case.id}.npz", result.probabilities, result.labels,
                             geometry.spacing_zyx)
    log.info("%s -> %s", case.path, result.save(args.output))
    return 0


def main(args: argparse.Namespace) -> int:
    from ..batch.run import BatchOptions, BatchOutcome, discover_cases, finish_summary, parse_shard, run_batch
    from ..batch.summary import counts

    cases = discover_cases(args.images)
    if _single_file(args, cases):
        return _predict_one(args, cases[0])
    if args.output.suffix.lower() in MASK_SUFFIXES and args.output.is_file():
        raise InputError(args.output, "is a file: with several inputs, -o names a folder")
    options = BatchOptions(args.output, args.save_probabilities, args.preview, args.overwrite,
                           parse_shard(args.shard), False if args.no_progress else None)
    if args.summary_only:
        outcome = BatchOutcome([])
        finish_summary(outcome, cases, options, write_incomplete=True)
        c = counts(outcome.merged)
        return 1 if c["failed"] or c["missing"] else 0
    if args.spec is None and args.task is None:  # fail before reading any case
        raise InputError("--task", "say which ensemble: --task 1 or 2 (the shipped ones), or --spec FILE")
    outcome = run_batch(lambda: ensemble_from_args(args), cases, options)
    if outcome.failed:
        log.error("%d of %d case(s) failed: see %s", outcome.failed, len(outcome.rows),
                  outcome.summary or options.output)
    return 1 if outcome.failed else 0
