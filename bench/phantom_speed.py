"""The phantom generator against its own earlier version: seconds per phantom and whether every array is the same.

    python bench/phantom_speed.py --reference 2c3da74 --seeds 1:0-5,2:0-5 --json bench/results/phantom-speed.json

The reference is the package as it is in this checkout with `src/panther_ensemble/phantoms/` taken from the
reference commit (git show), in a temporary folder. Each side runs in its own Python process, one thread
(OMP_NUM_THREADS=1, as each of `reproduce.sh`'s two generator processes runs), alternating side by side in rounds
so that the machine's drift is shared; each phantom is timed from `make_phantom` to its arrays, and the sha256 of
its image, label and geometry is compared between the sides. The reference is the number a change is judged
against; `identical: true` means the change is a speed-up only (the phantoms are pinned: tests/test_phantoms.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHANTOMS = "src/panther_ensemble/phantoms"


def worker(task: int, seeds: list[int]) -> None:
    import panther_ensemble
    from panther_ensemble.phantoms.generate import make_phantom

    for seed in seeds:
        t = time.perf_counter()
        ph = make_phantom(task, seed)
        seconds = time.perf_counter() - t
        digest = hashlib.sha256()
        digest.update(ph.image.astype("<i2").tobytes())
        digest.update(ph.label.astype("u1").tobytes())
        digest.update(repr(ph.geometry).encode())
        print(json.dumps({"task": task, "seed": seed, "seconds": round(seconds, 3), "sha256": digest.hexdigest(),
                          "shape_zyx": list(ph.image.shape), "package": panther_ensemble.__file__}), flush=True)


def reference_tree(commit: str) -> Path:
    """This checkout's src/ with the phantoms package of `commit`."""
    root = Path(tempfile.mkdtemp(prefix="phantom_ref_"))
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    names = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", f"{commit}:{PHANTOMS}"],
                           check=True, capture_output=True, text=True).stdout.split()
    shutil.rmtree(root / PHANTOMS)
    (root / PHANTOMS).mkdir()
    for name in names:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{PHANTOMS}/{name}"], check=True,
                              capture_output=True, text=True).stdout
        (root / PHANTOMS / name).write_text(text)
    return root


def run_side(src: Path, task: int, seeds: list[int]) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(src))
    out = subprocess.run([sys.executable, __file__, "--worker", "--task", str(task), "--seeds", ",".join(map(str, seeds))],
                         check=True, capture_output=True, text=True, env=env).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for row in rows:  # each side must have imported its own tree, or "identical" would mean nothing
        if not Path(row.pop("package")).resolve().is_relative_to(src.resolve()):
            raise SystemExit(f"phantom_speed.py: a worker imported panther_ensemble from outside {src}")
    return rows


def parse(text: str) -> list[tuple[int, list[int]]]:
    out = []
    for part in text.split(","):
        task, seeds = part.split(":")
        a, _, b = seeds.partition("-")
        out.append((int(task), list(range(int(a), int(b or a) + 1))))
    return out


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", help="commit whose phantoms package is the reference")
    ap.add_argument("--seeds", default="1:0-5,2:0-5", help="TASK:A-B,... (each seed is one phantom, both sides)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--task", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.task, [int(v) for v in a.seeds.split(",")])
        return 0
    if not a.reference:
        ap.error("--reference COMMIT is required")
    ref_root = reference_tree(a.reference)
    sides = {"reference": ref_root / "src", "current": REPO / "src"}
    rows: dict[str, list[dict]] = {k: [] for k in sides}
    try:
        for task, seeds in parse(a.seeds):
            for i, seed in enumerate(seeds):  # alternate which side goes first
                order = list(sides) if i % 2 == 0 else list(sides)[::-1]
                for side in order:
                    rows[side] += run_side(sides[side], task, [seed])
    finally:
        shutil.rmtree(ref_root, ignore_errors=True)
    key = lambda r: (r["task"], r["seed"])  # noqa: E731
    ref = {key(r): r for r in rows["reference"]}
    cur = {key(r): r for r in rows["current"]}
    differ = [f"task {t} seed {s}" for (t, s) in ref if ref[(t, s)]["sha256"] != cur[(t, s)]["sha256"]]
    med = {side: round(median([r["seconds"] for r in rows[side]]), 3) for side in sides}
    total = {side: round(sum(r["seconds"] for r in rows[side]), 1) for side in sides}
    doc = {"machine": f"{platform.node()} ({platform.machine()}), {os.cpu_count()} CPUs, one thread per side",
           "command": "python bench/phantom_speed.py " + " ".join(sys.argv[1:]),
           "reference": a.reference, "phantoms": len(ref), "median_s_per_phantom": med, "total_s": total,
           "speedup_total": round(total["reference"] / total["current"], 2), "identical": not differ,
           "differ": differ, "rows": rows}
    print(json.dumps({k: v for k, v in doc.items() if k != "rows"}, indent=2))
    if a.json:
        a.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main())
