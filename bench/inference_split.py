"""Two ways to spend this machine's cores on many cases of one fold network: one process with every core as
torch threads (what training/predict_oof.py and fold_shift.py do today), or one process per core with one thread
each, the cases split between them (what the training folds and evaluate_heldout's two tasks already do).

    python bench/inference_split.py --task 1 --member default --fold 0 --cases 4 --rounds 2 \
        --json bench/results/inference-split.json

The network is one fold of a shipped member (model_weights/, the same spec shape as predict_oof.py's), the image
the task's shipped sample case. Each worker is its own process: it loads the network, segments the image once
untimed (first-call costs), waits for the start signal, then segments it `cases` times (the "threads" layout: one
worker with `--split` threads does all 2 x cases) or `cases` / cores times each (the "processes" layout). The two
layouts alternate for `--rounds` rounds; each round's figure is the wall time from the start signal to the last
worker's end. Also reported: whether the probability maps of one and of several threads are the same (oneDNN may
sum in another order), as the largest absolute difference and the mask agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = {1: REPO / "test/input/task1/images/abdominal-t1-mri", 2: REPO / "test/input/task2/images/abdominal-t2-mri"}


def one_fold_spec(task: int, member: str, fold: int) -> dict:
    shipped = json.loads((REPO / f"resources/task{task}.json").read_text())
    try:
        model = next(m["model"] for m in shipped["members"] if m["name"] == member)
    except StopIteration:
        base = json.loads((REPO / f"docs/results/fit_task{task}/base.json").read_text())
        model = next(m["model"] for m in base["members"] if m["name"] == member)
    return {"version": 1, "task": task,
            "members": [{"name": member, "model": model, "folds": [fold], "mirroring": False, "resampling": "fast"}],
            "decision": {"rule": "argmax"}, "description": f"bench: {member} fold {fold}"}


def worker(a) -> int:
    import numpy as np

    sys.path.insert(0, str(REPO / "src"))
    from panther_ensemble.api import Ensemble

    spec = json.loads(Path(a.spec_file).read_text())
    ensemble = Ensemble.from_spec(spec, REPO / "model_weights", device="cpu", threads=a.threads)
    image = next(Path(SAMPLE[spec["task"]]).glob("*.mha"))
    first = ensemble.segment(image, probabilities=True)
    np.save(a.map_out, first.probabilities.float().numpy())
    Path(a.ready).touch()
    while not Path(a.go).exists():
        time.sleep(0.01)
    started = time.time()
    for _ in range(a.cases):
        ensemble.segment(image)
    Path(a.result).write_text(json.dumps({"start": started, "end": time.time(), "cases": a.cases}))
    return 0


def run_layout(spec_file: Path, processes: int, threads: int, cases_each: int, tmp: Path, tag: str) -> dict:
    go = tmp / f"go_{tag}"
    procs, files = [], []
    for i in range(processes):
        f = {k: tmp / f"{tag}_{i}.{k}" for k in ("ready", "json", "npy")}
        files.append(f)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", "--spec-file", str(spec_file),
                                       "--threads", str(threads), "--cases", str(cases_each), "--ready", str(f["ready"]),
                                       "--go", str(go), "--result", str(f["json"]), "--map-out", str(f["npy"])], env=env))
    while not all(f["ready"].exists() for f in files):
        if any(p.poll() not in (None, 0) for p in procs):
            raise SystemExit(f"a {tag} worker failed")
        time.sleep(0.05)
    go.touch()
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a {tag} worker failed")
    results = [json.loads(f["json"].read_text()) for f in files]
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"processes": processes, "threads": threads, "cases": processes * cases_each, "wall_s": round(wall, 2),
            "s_per_case": round(wall / (processes * cases_each), 3), "map": str(files[0]["npy"])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", type=int, choices=(1, 2), default=1)
    p.add_argument("--member", default="default")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--split", type=int, default=2, help="cores to share (default 2: this machine's)")
    p.add_argument("--cases", type=int, default=4, help="cases per layout and round (a multiple of --split)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", type=Path)
    # worker mode
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for k in ("--spec-file", "--ready", "--go", "--result", "--map-out"):
        p.add_argument(k, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a)
    if a.cases % a.split:
        p.error(f"--cases {a.cases} is not a multiple of --split {a.split}")

    import numpy as np

    rounds = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        spec_file = tmp / "spec.json"
        spec_file.write_text(json.dumps(one_fold_spec(a.task, a.member, a.fold)))
        for r in range(a.rounds):
            one = run_layout(spec_file, 1, a.split, a.cases, tmp, f"threads{r}")
            many = run_layout(spec_file, a.split, 1, a.cases // a.split, tmp, f"processes{r}")
            m1, m2 = np.load(one.pop("map")), np.load(many.pop("map"))
            rounds.append({"threads": one, "processes": many, "speedup": round(one["wall_s"] / many["wall_s"], 3),
                           "max_abs_map_difference": float(np.max(np.abs(m1 - m2))),
                           "masks_equal": bool(np.array_equal(m1.argmax(0), m2.argmax(0)))})
            print(f"round {r}: {a.split} threads in one process {one['s_per_case']} s/case, {a.split} processes of "
                  f"one thread {many['s_per_case']} s/case: {rounds[-1]['speedup']}x; maps differ by at most "
                  f"{rounds[-1]['max_abs_map_difference']:.2e}, masks equal: {rounds[-1]['masks_equal']}", flush=True)
    speedups = [r["speedup"] for r in rounds]
    out = {"command": "python bench/inference_split.py " + " ".join(sys.argv[1:]),
           "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": f"{platform.node()} ({platform.machine()})",
           "cpus": os.cpu_count(), "task": a.task, "member": a.member, "fold": a.fold, "rounds": rounds,
           "speedup_median": round(statistics.median(speedups), 3)}
    print(f"processes over threads: {out['speedup_median']}x (median of {len(rounds)} rounds)")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
