"""Throughput of batch prediction against one `inference.py` process per case (what grand-challenge does).

    python bench/throughput.py [--cases 6] [--task 1] [--device cpu] [--work work-data/throughput]

The same small phantom cases (Task 1 phantoms of `panther_ensemble.phantoms`, cropped to a box around
the pancreas, so that a case is a few network tiles rather than a whole abdomen), the shipped models and
spec (resources/task<N>.json, mirroring off as shipped), on the same machine, one mode after the other:

  per-process  for each case: `python inference.py --input <socket folder> --output ...` (a fresh process
               that imports torch and nnU-Net, checks and loads every checkpoint, reads, predicts, writes)
  batch        one `panther-ensemble predict <list file> -o ...` over all cases (models loaded once; the
               next case read and the last one written while the current one is predicted)

Reported: wall time and CPU time (user + system of the child processes) per mode, cases per hour (wall)
and per CPU hour, their ratios, the per-process overhead (its wall time minus the batch's per-case time),
and whether both modes wrote identical masks. Results: bench/results/throughput.json and throughput.md.
CPU time is the steadier figure on a shared machine (other jobs stretch wall time, not CPU time).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CROP_ZYX = (40, 160, 160)  # voxels around the pancreas' centre (about 120 x 210 x 210 mm on Task 1 phantoms)
SLUGS = {1: "abdominal-t1-mri", 2: "abdominal-t2-mri"}


def _source(task: int, seed: int, sources: dict[str, Path]):
    """(image, centre (z, y, x) to crop around): a phantom and its pancreas' centre, or the centre of an
    already cropped phantom of an earlier run (--source-list)."""
    import SimpleITK as sitk

    from panther_ensemble.phantoms import generate_phantom

    cid = f"phantom-t{task}-{seed}"
    if cid in sources:
        image = sitk.ReadImage(str(sources[cid]))
        return image, np.array(image.GetSize()[::-1]) // 2
    image, label = generate_phantom(task, seed)
    labels = sitk.GetArrayFromImage(label)
    centre = np.argwhere(labels > 0).mean(axis=0).round().astype(int) if labels.any() else np.array(labels.shape) // 2
    return image, centre


def make_cases(work: Path, task: int, seeds: list[int], crop_zyx=CROP_ZYX, source_list: Path | None = None) -> list[dict]:
    """Socket folders (for inference.py) and a list file (for predict) of cropped phantoms; cached in work/."""
    import SimpleITK as sitk

    from panther_ensemble.io import case_id

    sources = {}
    if source_list is not None:
        sources = {case_id(p): Path(p) for p in source_list.read_text().split()}
    cases, listing = [], []
    for seed in seeds:
        cid = f"phantom-t{task}-{seed}"
        socket = work / "sockets" / cid
        image_path = socket / "images" / SLUGS[task] / f"{cid}.mha"
        if not image_path.is_file():
            image, centre = _source(task, seed, sources)
            shape = np.array(image.GetSize()[::-1])
            size = np.minimum(crop_zyx, shape)
            start = np.clip(centre - size // 2, 0, shape - size)
            crop = sitk.RegionOfInterest(image, [int(v) for v in size[::-1]], [int(v) for v in start[::-1]])
            image_path.parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(crop, str(image_path), True)
            (socket / "inputs.json").write_text(json.dumps(
                [{"interface": {"slug": SLUGS[task], "kind": "Image", "relative_path": f"images/{SLUGS[task]}"}}]))
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(image_path))
        reader.ReadImageInformation()
        cases.append({"id": cid, "seed": seed, "socket": str(socket), "image": str(image_path),
                      "size_xyz": list(reader.GetSize()), "spacing_xyz": [round(s, 4) for s in reader.GetSpacing()]})
        listing.append(str(image_path))
    (work / "cases.txt").write_text("\n".join(listing) + "\n")
    return cases


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], log: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one child process; its output to `log`; raises on failure."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return wall, cpu


def run_per_process(cases: list[dict], out: Path, device: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    walls, cpus = [], []
    for case in cases:
        target = out / case["id"]
        wall, cpu = timed([sys.executable, str(REPO / "inference.py"), "--input", case["socket"], "--output",
                           str(target), "--device", device], out / f"{case['id']}.log")
        walls.append(wall)
        cpus.append(cpu)
        print(f"  per-process {case['id']}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    return summarise(walls, cpus, len(cases))


def run_batch(cases: list[dict], work: Path, out: Path, task: int, device: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    wall, cpu = timed([sys.executable, "-m", "panther_ensemble.cli", "predict", str(work / "cases.txt"), "-o",
                       str(out / "masks"), "--task", str(task), "--device", device, "--no-progress", "--overwrite"],
                      out / "batch.log")
    with open(out / "masks" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["done"] * len(cases), rows
    result = summarise([wall], [cpu], len(cases))
    result["per_case_s"] = [round(float(r["seconds"]), 2) for r in rows]
    print(f"  batch: {wall:.1f} s wall, {cpu:.1f} s CPU for {len(cases)} cases", flush=True)
    return result


def summarise(walls: list[float], cpus: list[float], n: int) -> dict:
    wall, cpu = float(sum(walls)), float(sum(cpus))
    return {"wall_s": [round(w, 2) for w in walls], "cpu_s": [round(c, 2) for c in cpus], "total_wall_s": round(wall, 2),
            "total_cpu_s": round(cpu, 2), "cases_per_hour": round(3600 * n / wall, 1),
            "cases_per_cpu_hour": round(3600 * n / cpu, 1)}


def masks_identical(cases: list[dict], per_process: Path, batch: Path) -> bool:
    import SimpleITK as sitk

    for case in cases:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(
            per_process / case["id"] / "images" / "pancreatic-tumor-segmentation" / f"{case['id']}.mha")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(batch / "masks" / f"{case['id']}.mha")))
        if not np.array_equal(a, b):
            return False
    return True


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "load_average": os.getloadavg(),
            "nice": os.nice(0), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def markdown(doc: dict) -> str:
    p, b = doc["per_process"], doc["batch"]
    lines = [
        f"# Throughput: batch `predict` vs one `inference.py` per case ({doc['date']})", "",
        f"{len(doc['cases'])} Task {doc['task']} phantoms cropped to {doc['crop_zyx']} voxels around the pancreas, "
        f"shipped models and spec (2 members x 2 folds, mirroring off), device {doc['device']}, "
        f"{doc['machine']['cpus']} CPUs, load average at start {doc['machine']['load_average'][0]:.1f} "
        f"(a shared machine; this run at nice {doc['machine']['nice']}; modes in the order {doc['order']}; "
        f"load average at the end {doc['machine']['load_average_end'][0]:.1f}).", "",
        "| mode | wall s | CPU s | cases / hour | cases / CPU hour |", "|---|---|---|---|---|",
        f"| one `inference.py` per case | {p['total_wall_s']} | {p['total_cpu_s']} | {p['cases_per_hour']} | "
        f"{p['cases_per_cpu_hour']} |",
        f"| batch `panther-ensemble predict` | {b['total_wall_s']} | {b['total_cpu_s']} | {b['cases_per_hour']} | "
        f"{b['cases_per_cpu_hour']} |",
        f"| **ratio** | | | **{doc['ratio_wall']}x** | **{doc['ratio_cpu']}x** |", "",
        f"Per-process overhead (mean wall per process minus the batch's mean wall per case): "
        f"{doc['overhead_per_case_s']} s. Masks identical in both modes: {doc['masks_identical']}.", "",
        f"GPU: {doc['gpu']}", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--task", type=int, default=1, choices=(1, 2))
    ap.add_argument("--first-seed", type=int, default=3000)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--work", type=Path, default=REPO / "work-data" / "throughput")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--name", default="throughput", help="results file stem (throughput.json / .md)")
    ap.add_argument("--order", default="per-process,batch", choices=("per-process,batch", "batch,per-process"),
                    help="which mode runs first (run both orders on a machine whose load changes)")
    ap.add_argument("--crop", default=",".join(map(str, CROP_ZYX)), help="z,y,x voxels around the pancreas")
    ap.add_argument("--source-list", type=Path, default=None,
                    help="crop the centres of these images (an earlier run's cases.txt) instead of new phantoms")
    ap.add_argument("--gpu", default="pending: no GPU machine was lent to the session that ran this; run "
                                     "`python bench/throughput.py --device cuda --name throughput-gpu` on one")
    args = ap.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"making {args.cases} phantoms in {work} (cached)", flush=True)
    crop = tuple(int(v) for v in args.crop.split(","))
    cases = make_cases(work, args.task, list(range(args.first_seed, args.first_seed + args.cases)), crop,
                       args.source_list)
    doc = {"date": dt.date.today().isoformat(), "task": args.task, "device": args.device, "crop_zyx": list(crop),
           "machine": machine(), "cases": cases}
    doc["order"] = args.order
    for mode in args.order.split(","):
        if mode == "per-process":
            print("one inference.py per case", flush=True)
            doc["per_process"] = run_per_process(cases, work / "per-process", args.device)
        else:
            print("batch predict", flush=True)
            doc["batch"] = run_batch(cases, work, work / "batch", args.task, args.device)
    p, b = doc["per_process"], doc["batch"]
    doc["ratio_wall"] = round(p["total_wall_s"] / b["total_wall_s"], 2)
    doc["ratio_cpu"] = round(p["total_cpu_s"] / b["total_cpu_s"], 2)
    doc["overhead_per_case_s"] = round((p["total_wall_s"] - b["total_wall_s"]) / len(cases), 2)
    doc["masks_identical"] = masks_identical(cases, work / "per-process", work / "batch")
    doc["machine"]["load_average_end"] = os.getloadavg()
    doc["gpu"] = args.gpu
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.results / f"{args.name}.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
