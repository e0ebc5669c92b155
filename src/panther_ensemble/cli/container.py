"""The grand-challenge job: find the input socket, run the task's ensemble, write the output socket.

`inference.py` at the repository root (the image's entry point) is a thin call of `main`. Defaults are
the platform's: /input, /output, weights from /opt/ml/model (an uploaded model tarball) falling back to
the image's own model_weights/, and resources/task<N>.json for the task the socket names.

Everything that can be checked is checked before any network runs, in this order: the input socket, the
output location (`preflight.check_output_target`), the spec and model folders, the image, the
checkpoints, then what `Ensemble.segment` checks itself (`preflight.check_case`: every member's network grid,
the case's memory on the CPU, the voxel values). Any failure is one `error:` line and a non-zero exit status
(`failures.py`), and nothing is written to /output.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from .. import __version__
from ..console import LockedStderrHandler
from ..errors import InputError, memory_errors_as
from .failures import handling_signals, run_reported

log = logging.getLogger("panther_ensemble")

DESCRIPTION = """\
PANTHER pancreatic tumour segmentation: the grand-challenge job.

Reads the one MRI in INPUT/images/abdominal-t1-mri/ (Task 1, T1 arterial phase) or
INPUT/images/abdominal-t2-mri/ (Task 2, T2 MR-Linac); INPUT/inputs.json, when present, says which.
Runs that task's ensemble of nnU-Net models and writes the tumour mask (uint8, 0/1, the input's size,
spacing, origin and direction) to OUTPUT/images/pancreatic-tumor-segmentation/<input name>.mha."""

EPILOG = """\
example (outside a container, on the shipped sample case):
  python inference.py --input test/input/task1 --output /tmp/out --device cpu

exit status: 0 mask written; 2 bad input (the message names the file); 3 out of memory; 1 internal
error; 130 or 143 stopped by Ctrl-C or SIGTERM. On any failure nothing is written to OUTPUT."""


def build_parser(app_root: Path) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inference.py", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, default=Path("/input"), metavar="INPUT",
                   help="the platform's input folder (default: /input)")
    p.add_argument("--output", type=Path, default=Path("/output"), metavar="OUTPUT",
                   help="the platform's output folder (default: /output)")
    p.add_argument("--model-dir", type=Path, default=None, metavar="DIR",
                   help="folder holding the nnU-Net model folders the spec names (default: /opt/ml/model when "
                        f"the platform unpacked a model tarball there, else {app_root / 'model_weights'})")
    p.add_argument("--spec", type=Path, default=None, metavar="FILE",
                   help="ensemble spec to run instead of the task's own (default: "
                        f"{app_root / 'resources'}/task<N>.json for the task the input socket names)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the networks run: auto = the GPU when there is one, else the CPU (default: auto)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="more detail in the log, and the traceback of an internal error")
    p.add_argument("--version", action="version", version=f"inference.py (panther-ensemble {__version__})")
    return p


def run(input_dir: Path, output_dir: Path, model_dir: Path, spec_path: Path | None, device: str,
        app_root: Path) -> Path:
    from ..api import Ensemble
    from ..io import find_socket_input, output_mask_path, read_image
    from ..preflight import check_output_target
    from ..runtime import duration_text

    started = time.perf_counter()
    socket = find_socket_input(input_dir)
    target = check_output_target(output_mask_path(output_dir, socket.image))
    _warn_of_other_outputs(target)
    spec_path = spec_path or app_root / "resources" / f"task{socket.task}.json"
    ensemble = Ensemble.from_spec(spec_path, model_dir, device)
    if ensemble.spec.task != socket.task:
        raise InputError(spec_path, f"spec is for task {ensemble.spec.task} but the input socket {socket.slug} is "
                                    f"task {socket.task}")
    log.info("task %d: %s; spec %s; weights %s", socket.task, socket.image, spec_path, model_dir)
    image, geometry = read_image(socket.image)
    log.info("image %s: size %s, spacing %s mm", socket.image.name, geometry.size_xyz,
             tuple(round(s, 4) for s in geometry.spacing_xyz))
    with memory_errors_as(f"loading the networks on {ensemble.device}"):
        ensemble.load()
    result = ensemble.segment((image, geometry), name=socket.image)
    result.save(target)
    log.info("wrote %s in %s", target, duration_text(time.perf_counter() - started))
    return target


def _warn_of_other_outputs(target: Path) -> None:
    """The platform collects the socket's one file; a folder that already holds others (an earlier run on
    another case) would hand over two masks, and a user of `docker run` would not know which is new. Ours
    are not deleted (they are the user's files), but said."""
    if target.exists():
        log.warning("%s exists and will be replaced if this run succeeds", target)
    try:
        others = sorted(p.name for p in target.parent.iterdir() if p.name != target.name
                        and not p.name.startswith("."))
    except OSError:  # no folder yet, or one we may write to but not list: nothing to say
        return
    if others:
        named = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        log.warning("the output socket %s already holds %d other entr%s (%s), left as they are", target.parent,
                    len(others), "y" if len(others) == 1 else "ies", named)


def main(argv: list[str] | None = None, app_root: Path | None = None) -> int:
    from ..api import default_weights_root
    from ..cpus import limit_thread_pools

    limit_thread_pools()  # before numpy/torch load: a container sees the host's cores, not its quota
    app_root = Path(app_root or Path.cwd())
    args = build_parser(app_root).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        handlers=[LockedStderrHandler()])

    def job() -> int:
        run(args.input, args.output, args.model_dir or default_weights_root(app_root), args.spec, args.device, app_root)
        return 0

    with handling_signals():
        return run_reported(job, verbose=args.verbose)
