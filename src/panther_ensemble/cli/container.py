"""The grand-challenge job: find the input socket, run the task's ensemble, write the output socket.

`inference.py` at the repository root (the image's entry point) is a thin call of `main`. Defaults are
the platform's: /input, /output, weights from /opt/ml/model (an uploaded model tarball) falling back to
the image's own model_weights/, and resources/task<N>.json for the task the socket names.
Everything is validated before heavy work; on any failure nothing is written to /output.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ..errors import InputError

log = logging.getLogger("panther_ensemble")


def build_parser(app_root: Path) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inference.py", description="PANTHER pancreatic tumour segmentation "
                                "(grand-challenge container entry point)")
    p.add_argument("--input", type=Path, default=Path("/input"), help="input root (default /input)")
    p.add_argument("--output", type=Path, default=Path("/output"), help="output root (default /output)")
    p.add_argument("--model-dir", type=Path, default=None,
                   help=f"weights root (default /opt/ml/model if not empty, else {app_root}/model_weights)")
    p.add_argument("--spec", type=Path, default=None, help="ensemble spec (default resources/task<N>.json)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run(input_dir: Path, output_dir: Path, model_dir: Path, spec_path: Path | None, device: str,
        app_root: Path) -> Path:
    from ..api import Ensemble
    from ..io import find_socket_input, output_mask_path, read_image

    started = time.perf_counter()
    socket = find_socket_input(input_dir)
    spec_path = spec_path or app_root / "resources" / f"task{socket.task}.json"
    ensemble = Ensemble.from_spec(spec_path, model_dir, device)
    if ensemble.spec.task != socket.task:
        raise InputError(spec_path, f"spec is for task {ensemble.spec.task} but the input socket {socket.slug} is "
                                    f"task {socket.task}")
    log.info("task %d: %s; spec %s; weights %s", socket.task, socket.image, spec_path, model_dir)
    image, geometry = read_image(socket.image)
    log.info("image %s: size %s, spacing %s mm", socket.image.name, geometry.size_xyz,
             tuple(round(s, 4) for s in geometry.spacing_xyz))
    result = ensemble.segment((image, geometry))
    target = result.save(output_mask_path(output_dir, socket.image))
    log.info("wrote %s in %.1f s", target, time.perf_counter() - started)
    return target


def main(argv: list[str] | None = None, app_root: Path | None = None) -> int:
    from ..api import default_weights_root
    from ..cpus import limit_thread_pools

    limit_thread_pools()  # before numpy/torch load: a container sees the host's cores, not its quota
    app_root = Path(app_root or Path.cwd())
    args = build_parser(app_root).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        run(args.input, args.output, args.model_dir or default_weights_root(app_root), args.spec, args.device,
            app_root)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
