"""What nnU-Net's progress.png costs at each epoch's end, against a specialist epoch (training/trainers.py `_SparsePlot`).

    python bench/progress_plot.py --epochs 60 --repeats 5 --json bench/results/progress-plot.json

nnU-Net 2.8's logger (`LocalLogger.plot_progress_png`, called by `nnUNetTrainer.on_epoch_end` every epoch) draws three
panels on a 30 x 54 inch figure at 100 dpi and saves it as PNG. Here the logger holds `--epochs` epochs of values (the
figure's lines grow with them) and draws into a temporary folder `--repeats` times on one thread, timed as CPU time
of this process. The figure per epoch of a run follows for nnU-Net's cadence (every epoch) and the trainers'
(`plot_every` = 5: every 5th epoch and the last), as a share of the epoch time given (`--epoch-s`, default the
rebuild's 23.5 s wall per specialist epoch with two folds side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epoch-s", type=float, default=23.5)
    p.add_argument("--plot-every", type=int, default=5)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np
    from nnunetv2.training.logging.nnunet_logger import LocalLogger

    logger = LocalLogger()
    rng = np.random.default_rng(0)
    for e in range(a.epochs):
        for key in ("mean_fg_dice", "ema_fg_dice", "train_losses", "val_losses", "lrs"):
            logger.log(key, float(rng.random()), e)
        logger.log("epoch_start_timestamps", float(e * a.epoch_s), e)
        logger.log("epoch_end_timestamps", float(e * a.epoch_s + a.epoch_s - 0.8), e)
        logger.log("dice_per_class_or_region", [float(rng.random()), float(rng.random())], e)
    seconds = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(a.repeats):
            started = time.process_time()
            logger.plot_progress_png(d)
            seconds.append(time.process_time() - started)
    per_drawing = statistics.median(seconds)
    drawings_sparse = len([e for e in range(a.epochs) if (e + 1) % a.plot_every == 0 or e == a.epochs - 1])
    out = {"command": "python bench/progress_plot.py " + " ".join(sys.argv[1:]),
           "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": f"{platform.node()} ({platform.machine()})",
           "epochs": a.epochs, "cpu_s_per_drawing": [round(s, 3) for s in seconds],
           "cpu_s_per_drawing_median": round(per_drawing, 3), "epoch_s": a.epoch_s,
           "share_of_an_epoch_every_epoch": round(per_drawing / a.epoch_s, 4),
           "drawings_per_run": {"every_epoch": a.epochs, f"plot_every_{a.plot_every}": drawings_sparse},
           "cpu_s_per_run": {"every_epoch": round(per_drawing * a.epochs, 1),
                             f"plot_every_{a.plot_every}": round(per_drawing * drawings_sparse, 1)}}
    print(f"progress.png: {per_drawing:.2f} CPU-s per drawing ({100 * per_drawing / a.epoch_s:.1f} % of a {a.epoch_s} s "
          f"epoch); a {a.epochs}-epoch run: {a.epochs} drawings, {out['cpu_s_per_run']['every_epoch']} CPU-s, against "
          f"{drawings_sparse} and {out['cpu_s_per_run'][f'plot_every_{a.plot_every}']} with plot_every {a.plot_every}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
