"""bfloat16 autocast on the CPU (`PANTHER_FORWARD=cpu_autocast=bf16`) against the default float32, end to end.

    python bench/cpu_bf16.py [--threads 2] [--rounds 2] [--phantoms 1:1100-1109,2:1100-1109] [--out bench/results/cpu-bf16]

Per shipped sample case (test/samples.json: its task's shipped spec and weights, mirroring and all): the two
settings are loaded once each, then timed in interleaved rounds (float32, bfloat16, float32, ...), so a shared
machine's load spreads over both; the figure is the median wall time of `Ensemble.segment` (image read to mask),
with the networks' own stage ("predict") beside it. Agreement: the largest gap between the two settings'
probability maps, the voxels whose tumour decision differs, the Dice of the two masks, and each mask's tumour Dice
against the case's ground truth (label 1). `--phantoms TASK:SEEDS,...` takes held-out phantoms (written to a
temporary folder) instead of the sample cases. The setting is refused where the CPU would emulate bfloat16 (the runtime's own
check), so this benchmark only runs where the lever can be used.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from panther_ensemble.scoring.metrics import mask_dice

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ("", "cpu_autocast=bf16")  # float32 (the default), then bfloat16


def compare(ensembles: dict[str, object], image: Path, truth: np.ndarray | None, rounds: int) -> dict:
    """Time each setting's `segment` on `image` in interleaved rounds; agreement from the last round."""
    walls: dict[str, list[float]] = {s: [] for s in ensembles}
    predict: dict[str, list[float]] = {s: [] for s in ensembles}
    last: dict[str, object] = {}
    for _ in range(rounds):
        for setting, ensemble in ensembles.items():
            start = time.perf_counter()
            result = ensemble.segment(image, probabilities=True)
            walls[setting].append(time.perf_counter() - start)
            predict[setting].append(sum(v for k, v in result.timings.items() if k.startswith("predict")))
            last[setting] = result
    f32, bf16 = (last[s] for s in SETTINGS)
    row = {"settings": {}, "max_probability_gap": float((f32.probabilities - bf16.probabilities).abs().max()),
           "voxels_flipped": int(np.count_nonzero(f32.mask != bf16.mask)),
           "tumour_voxels_float32": f32.tumour_voxels, "mask_dice_bf16_vs_float32": mask_dice(f32.mask > 0, bf16.mask > 0)}
    for setting in SETTINGS:
        entry = {"wall_s": [round(w, 2) for w in walls[setting]], "median_wall_s": round(statistics.median(walls[setting]), 2),
                 "median_predict_s": round(statistics.median(predict[setting]), 2)}
        if truth is not None:
            entry["tumour_dice"] = round(mask_dice(last[setting].mask > 0, truth), 4)
        row["settings"][setting or "defaults"] = entry
    row["speedup_wall"] = round(row["settings"]["defaults"]["median_wall_s"]
                                / row["settings"]["cpu_autocast=bf16"]["median_wall_s"], 2)
    row["speedup_predict"] = round(row["settings"]["defaults"]["median_predict_s"]
                                   / max(row["settings"]["cpu_autocast=bf16"]["median_predict_s"], 1e-9), 2)
    return row


def phantom_samples(text: str, folder: Path) -> list[dict]:
    """Sample entries (as test/samples.json's) for "TASK:SEEDS,TASK:SEEDS", written into `folder`."""
    from panther_ensemble.phantoms import parse_seeds, write_socket_case

    samples = []
    for item in text.split(","):
        task, _, seeds = item.partition(":")
        for seed in parse_seeds(seeds):
            case = folder / f"t{task}_{seed}"
            image, _ = write_socket_case(case, int(task), seed, ground_truth_dir=case / "truth")
            samples.append({"task": int(task), "seed": seed, "image": str(image),
                            "ground_truth": str(case / "truth" / image.name)})
    return samples


def report(result: dict) -> str:
    lines = [f"# bfloat16 autocast on the CPU against float32, end to end ({result['machine']['date']})", "",
             f"`{result['command']}`; torch {result['machine']['torch']}, {result['threads']} threads, "
             f"{result['rounds']} interleaved round(s); median seconds.", "",
             "| case | float32 wall s (predict s) | bfloat16 wall s (predict s) | speed-up wall (predict) | "
             "max probability gap | voxels flipped (of tumour voxels) | mask Dice bf16 vs float32 | "
             "tumour Dice float32 / bf16 |", "|---|---|---|---|---|---|---|---|"]
    for case in result["cases"]:
        a, b = case["settings"]["defaults"], case["settings"]["cpu_autocast=bf16"]
        lines.append(f"| Task {case['task']} seed {case['seed']} | {a['median_wall_s']} ({a['median_predict_s']}) | "
                     f"{b['median_wall_s']} ({b['median_predict_s']}) | **{case['speedup_wall']}x** "
                     f"({case['speedup_predict']}x) | {case['max_probability_gap']:.4f} | {case['voxels_flipped']} "
                     f"({case['tumour_voxels_float32']}) | {case['mask_dice_bf16_vs_float32']:.4f} | "
                     f"{a.get('tumour_dice', '-')} / {b.get('tumour_dice', '-')} |")
    if len(result["cases"]) > 1:
        s = summary(result["cases"])
        lines.append(f"| **all {s['cases']} cases** | | | median **{s['median_speedup_wall']}x** "
                     f"({s['median_speedup_predict']}x) | largest {s['largest_probability_gap']:.4f} | "
                     f"{s['voxels_flipped']} ({s['tumour_voxels_float32']}) | smallest {s['smallest_mask_dice']:.4f} | "
                     f"mean {s.get('mean_tumour_dice_float32', '-')} / {s.get('mean_tumour_dice_bf16', '-')} |")
    return "\n".join(lines) + "\n"


def summary(cases: list[dict]) -> dict:
    s = {"cases": len(cases),
         "median_speedup_wall": round(statistics.median(c["speedup_wall"] for c in cases), 2),
         "median_speedup_predict": round(statistics.median(c["speedup_predict"] for c in cases), 2),
         "largest_probability_gap": max(c["max_probability_gap"] for c in cases),
         "voxels_flipped": sum(c["voxels_flipped"] for c in cases),
         "tumour_voxels_float32": sum(c["tumour_voxels_float32"] for c in cases),
         "smallest_mask_dice": min(c["mask_dice_bf16_vs_float32"] for c in cases)}
    for setting, key in (("defaults", "float32"), ("cpu_autocast=bf16", "bf16")):
        dices = [c["settings"][setting]["tumour_dice"] for c in cases if "tumour_dice" in c["settings"][setting]]
        if dices:
            s[f"mean_tumour_dice_{key}"] = round(statistics.mean(dices), 4)
    return s


def main(argv: list[str] | None = None) -> int:
    from panther_ensemble import Ensemble

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--samples", default=str(REPO / "test" / "samples.json"))
    ap.add_argument("--phantoms", default=None, help="TASK:SEEDS,... held-out phantoms instead of --samples")
    ap.add_argument("--weights-root", default=None, help="default: the shipped model_weights/")
    ap.add_argument("--spec", action="append", default=None,
                    help="TASK=SPEC.json (default: resources/taskN.json); repeatable")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "cpu-bf16"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    specs = dict(item.split("=", 1) for item in a.spec or [])
    cases = []
    scratch = tempfile.TemporaryDirectory(prefix="cpu_bf16_")
    samples = (phantom_samples(a.phantoms, Path(scratch.name)) if a.phantoms
               else json.loads(Path(a.samples).read_text()))
    ensembles_of: dict[int, dict] = {}
    for sample in samples:
        task = int(sample["task"])
        image = Path(sample["image"]) if Path(sample["image"]).is_absolute() else REPO / sample["image"]
        truth_path = sample.get("ground_truth")
        truth = None
        if truth_path:
            truth_path = Path(truth_path) if Path(truth_path).is_absolute() else REPO / truth_path
            truth = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_path))) == 1  # 1 tumour (2 pancreas)
        if task not in ensembles_of:  # loaded once per task, kept warm over its cases
            ensembles_of[task] = {}
            for setting in SETTINGS:
                if str(task) in specs:
                    ensembles_of[task][setting] = Ensemble.from_spec(specs[str(task)], a.weights_root, "cpu",
                                                                     a.threads, setting)
                else:
                    ensembles_of[task][setting] = Ensemble.for_task(task, a.weights_root, "cpu", threads=a.threads,
                                                                    forward=setting)
                ensembles_of[task][setting].load()  # the networks built now, not inside the first timed case
        ensembles = ensembles_of[task]
        print(f"[{time.strftime('%H:%M:%S')}] Task {task} seed {sample.get('seed')}", flush=True)
        row = compare(ensembles, image, truth, a.rounds)
        cases.append({"task": task, "seed": sample.get("seed"), **row})
        print(json.dumps(cases[-1]), flush=True)
    scratch.cleanup()
    result = {"machine": {"date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__,
                          "processor": platform.processor() or platform.machine()},
              "command": "python bench/cpu_bf16.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "threads": a.threads, "rounds": a.rounds, "cases": cases, "summary": summary(cases)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(report(result))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
