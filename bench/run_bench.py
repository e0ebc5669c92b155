"""Speed and memory of our engine against nnU-Net's own predict-and-ensemble paths, on the same inputs.

    python bench/run_bench.py [--scenarios task1-shipped,...] [--paths a,b,c-faithful,c-fast] [--device cpu]

Paths, each run in its own process (so peak memory is its own), on the same image and the same members:
  a           nnU-Net CLI: `nnUNetv2_predict_from_modelfolder --save_probabilities` per member (worker pools,
              npz files), then `nnUNetv2_ensemble`; network forward timed inside the predicting process
  b           nnU-Net in-process: one `nnUNetPredictor` per member (preprocess, predict, export to
              probabilities on the image grid), probabilities averaged in numpy
  c-faithful  our engine, plans' own resampling functions, nnU-Net's float16 accumulation
  c-fast      our engine, torch resampling twins on the compute device, float32 accumulation
Reported per path: wall time end to end (image read to mask written), stages, the networks' own forward
time (every forward call wrapped and timed), overhead = wall - forward, peak resident memory of the whole
process tree (sampled every 50 ms), peak GPU memory where there is a GPU, and voxel agreement of the
tumour mask with path a. Per scenario: the FLOPs of the case's forward passes (per member: FLOPs of one
forward call counted on the meta device x tiles x folds x mirrored copies; the same work in every path),
so each path's achieved throughput is FLOPs / forward time, with its fraction of the dense matmul peak
measured by the driver in the same run (float16 on CUDA, float32 on a CPU; bench/matmul_peak.py).
Results: bench/results/<scenario>.json and bench/results/RESULTS.md.

nnU-Net's stock loader imports the trainer class named in a checkpoint; the shipped specialists have
custom trainer names, so paths a and b get copies of the model folders whose checkpoints name
`nnUNetTrainer` (same plans, same weights: the network is built from plans.json either way).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import scenarios as sc  # noqa: E402

PATHS = ("a", "b", "c-faithful", "c-fast")


# ---------------------------------------------------------------------------------------------------------
# Driver: one subprocess per (scenario, path); memory sampled from outside


def sample_tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_path(scenario: str, path: str, work: Path, device: str, timeout: float) -> dict:
    out = work / f"{scenario}.{path}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--worker", path, "--scenarios", scenario, "--work", str(work),
           "--device", device, "--result", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(work / f"{scenario}.{path}.log", "w")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sample_tree_rss(proc.pid))
        if time.perf_counter() - start > timeout:
            proc.kill()
            break
        time.sleep(0.05)
    log.close()
    if proc.returncode != 0 or not out.exists():
        tail = (work / f"{scenario}.{path}.log").read_text()[-3000:]
        return {"path": path, "error": f"exit {proc.returncode}", "log_tail": tail}
    result = json.loads(out.read_text())
    result["peak_rss_mb"] = peak / 2**20
    result["process_wall_s"] = time.perf_counter() - start
    return result


def agreement(mask_a: Path, mask_b: Path) -> float:
    import SimpleITK as sitk

    a = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_a))) == 1
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_b))) == 1
    return float((a == b).mean())


def machine() -> dict:
    import torch

    info = {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "date": dt.datetime.now().isoformat(timespec="seconds")}
    try:
        import nnunetv2
        from importlib.metadata import version

        info["nnunetv2"] = version("nnunetv2")
        del nnunetv2
    except Exception:  # noqa: BLE001
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def scenario_costs(scenario: dict, device: str) -> dict:
    """FLOPs of the scenario's forward passes (meta device, no forward runs) and the matmul peak, measured now."""
    from panther_ensemble import Ensemble
    from panther_ensemble.cpus import available_cpus
    from matmul_peak import matmul_peak
    import torch

    spec = {"version": 1, "task": scenario["task"], "members": [
        {"name": m["name"], "model": m["folder"].lstrip("/"), "folds": m["folds"], "mirroring": m["mirroring"],
         "tile_step_size": m["tile_step_size"]} for m in scenario["members"]]}
    members = [c.as_dict() for c in Ensemble.from_spec(spec, "/", "cpu").costs(scenario["image"])]
    torch.set_num_threads(available_cpus())
    peak = matmul_peak(torch.device("cuda" if device == "cuda" else "cpu"))
    return {"members": members, "case_tflop": sum(m["case_tflop"] for m in members), "peak": peak}


def summarise(name: str, results: dict[str, dict], info: dict, costs: dict | None = None) -> str:
    lines = [f"### {name} ({info['date']}, {info['cpus']} CPUs{', ' + info['gpu'] if 'gpu' in info else ''}, "
             f"torch {info['torch']})", "",
             f"{sc.SCENARIOS[name]['description']}", ""]
    if costs:
        peak = costs["peak"]
        lines += ["FLOPs: " + "; ".join(f"{m['member']} {m['forward_gflop']:.2f} GFLOP per forward x {m['tiles']} "
                                        f"tiles x {m['folds']} folds x {m['mirror_copies']} = {m['case_tflop']:.3f} "
                                        f"TFLOP" for m in costs["members"])
                  + f"; case {costs['case_tflop']:.3f} TFLOP. Measured {peak['dtype']} matmul peak "
                    f"{peak['flops_per_s'] / 1e9:.1f} GFLOP/s.", ""]
    lines += ["| path | wall s | forward s (calls) | overhead s | peak RSS MB | peak GPU MB | agreement with a | "
              "forward GFLOP/s (of peak) |", "|---|---|---|---|---|---|---|---|"]
    for path, r in results.items():
        if "error" in r:
            lines.append(f"| {path} | failed: {r['error']} | | | | | | |")
            continue
        gpu = f"{r['peak_gpu_mb']:.0f}" if r.get("peak_gpu_mb") else "-"
        agree = f"{r['agreement_with_a']:.5f}" if r.get("agreement_with_a") is not None else "-"
        achieved = "-"
        if costs and r["forward_s"] > 0:
            gflops = costs["case_tflop"] * 1e3 / r["forward_s"]
            achieved = f"{gflops:.1f} ({100 * gflops * 1e9 / costs['peak']['flops_per_s']:.0f}%)"
        lines.append(f"| {path} | {r['wall_s']:.1f} | {r['forward_s']:.1f} ({r['forward_calls']}) | "
                     f"{r['wall_s'] - r['forward_s']:.1f} | {r['peak_rss_mb']:.0f} | {gpu} | {agree} | {achieved} |")
    ratios = []
    for path in ("c-faithful", "c-fast"):
        if all(p in results and "error" not in results[p] for p in ("a", "b", path)):
            c, a, b = results[path], results["a"], results["b"]
            oc, oa, ob = (x["wall_s"] - x["forward_s"] for x in (c, a, b))
            ratios.append(f"- {path}: wall {a['wall_s'] / c['wall_s']:.2f}x faster than a, "
                          f"{b['wall_s'] / c['wall_s']:.2f}x faster than b; overhead {oc:.1f} s = "
                          f"{oc / oa:.3f} of a's ({oa:.1f} s), {oc / ob:.3f} of b's ({ob:.1f} s); "
                          f"peak RSS {c['peak_rss_mb'] / b['peak_rss_mb']:.2f} of b's")
    stage_lines = []
    for path, r in results.items():
        if "stages" in r:
            stage_lines.append(f"- {path}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items()))
    return "\n".join(lines + [""] + ratios + ["", "Stages (s):"] + stage_lines) + "\n"


def drive(args) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    info["device"] = args.device
    report = [f"# Benchmark results\n\nMachine: {json.dumps(info)}\n\nCommand: `{' '.join(sys.argv)}`\n"]
    for name in args.scenarios.split(","):
        print(f"== {name}: preparing", flush=True)
        scenario = sc.prepare(name, work)
        costs = scenario_costs(scenario, args.device)
        results: dict[str, dict] = {}
        for path in args.paths.split(","):
            print(f"== {name}: path {path}", flush=True)
            results[path] = run_path(name, path, work, args.device, args.timeout)
            r = results[path]
            print("   " + (f"wall {r['wall_s']:.1f} s, forward {r['forward_s']:.1f} s, peak RSS "
                           f"{r['peak_rss_mb']:.0f} MB" if "error" not in r else f"FAILED {r['error']}"), flush=True)
        if "a" in results and "error" not in results["a"]:
            for path, r in results.items():
                if "error" not in r:
                    r["agreement_with_a"] = agreement(Path(results["a"]["mask"]), Path(r["mask"]))
        (out_dir / f"{name}.json").write_text(json.dumps({"machine": info, "costs": costs, "results": results},
                                                         indent=2))
        report.append(summarise(name, results, info, costs))
        print(report[-1], flush=True)
    (out_dir / ("RESULTS.md" if args.device == "cpu" else f"RESULTS-{args.device}.md")).write_text(
        "\n".join(report))
    return 0


# ---------------------------------------------------------------------------------------------------------
# Workers: one path, in this process


class ForwardTimer:
    """Wraps network forward calls; on CUDA synchronises so the time is the kernels' time."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn):
        import torch

        def timed(*a, **k):
            if self.cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            y = fn(*a, **k)
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - t
            self.calls += 1
            return y

        return timed


def worker(args) -> int:
    import torch

    name = args.scenarios
    work = Path(args.work)
    scenario = sc.load(name, work)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    if device.type == "cpu":
        from panther_ensemble.cpus import available_cpus

        torch.set_num_threads(available_cpus())
    timer = ForwardTimer(device.type == "cuda")
    out_dir = work / f"{name}.{args.worker}.out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    start = time.perf_counter()
    if args.worker == "a":
        result = path_a(scenario, device, timer, out_dir)
    elif args.worker == "b":
        result = path_b(scenario, device, timer, out_dir)
    else:
        result = path_c(scenario, device, timer, out_dir, args.worker.split("-")[1])
    result.update(path=args.worker, wall_s=time.perf_counter() - start, forward_s=timer.seconds,
                  forward_calls=timer.calls)
    if device.type == "cuda":
        result.setdefault("peak_gpu_mb", torch.cuda.max_memory_allocated() / 2**20)
    Path(args.result).write_text(json.dumps(result, indent=2))
    return 0


def path_a(scenario: dict, device, timer: ForwardTimer, out_dir: Path) -> dict:
    """The CLI path, each command in its own process; forward time measured inside by cli_timed.py."""
    stages = {}
    inp = out_dir / "in"
    inp.mkdir()
    os.symlink(scenario["image"], inp / "case_0000.mha")
    env = {**os.environ, "nnUNet_raw": str(out_dir), "nnUNet_preprocessed": str(out_dir),
           "nnUNet_results": str(out_dir)}
    folders = []
    peak_gpu = 0.0
    for m in scenario["members"]:
        t = time.perf_counter()
        timing = out_dir / f"{m['name']}.timing.json"
        cmd = [sys.executable, str(REPO / "bench" / "cli_timed.py"), str(timing),
               "-i", str(inp), "-o", str(out_dir / m["name"]), "-m", m["stock_folder"],
               "-f", *[str(f) for f in m["folds"]], "--save_probabilities", "-device", device.type,
               "-step_size", str(m["tile_step_size"]), "--disable_progress_bar"]
        if not m["mirroring"]:
            cmd.append("--disable_tta")
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        stages[f"nnUNetv2_predict {m['name']}"] = time.perf_counter() - t
        measured = json.loads(timing.read_text())
        timer.seconds += measured["forward_s"]
        timer.calls += measured["forward_calls"]
        peak_gpu = max(peak_gpu, measured.get("peak_gpu_mb", 0.0))
        folders.append(str(out_dir / m["name"]))
    t = time.perf_counter()
    subprocess.run([shutil.which("nnUNetv2_ensemble") or str(Path(sys.executable).parent / "nnUNetv2_ensemble"),
                    "-i", *folders, "-o", str(out_dir / "ensemble")], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    stages["nnUNetv2_ensemble"] = time.perf_counter() - t
    return {"mask": str(out_dir / "ensemble" / "case.mha"), "stages": stages,
            **({"peak_gpu_mb": peak_gpu} if device.type == "cuda" else {})}


def path_b(scenario: dict, device, timer: ForwardTimer, out_dir: Path) -> dict:
    """nnUNetPredictor per member in this process, each stage timed; probabilities averaged in numpy."""
    import SimpleITK as sitk
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    stages: dict[str, float] = {}

    def stage(key, t0):
        stages[key] = stages.get(key, 0.0) + time.perf_counter() - t0

    t = time.perf_counter()
    image, props = SimpleITKIO().read_images([scenario["image"]])
    stage("read", t)
    average = None
    for m in scenario["members"]:
        t = time.perf_counter()
        predictor = nnUNetPredictor(tile_step_size=m["tile_step_size"], use_mirroring=m["mirroring"],
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(m["stock_folder"], m["folds"], "checkpoint_final.pth")
        predictor.network.forward = timer.wrap(predictor.network.forward)
        stage(f"load {m['name']}", t)
        t = time.perf_counter()
        ppa = PreprocessAdapterFromNpy([image], [None], [dict(props)], [None], predictor.plans_manager,
                                       predictor.dataset_json, predictor.configuration_manager,
                                       num_threads_in_multithreaded=1, verbose=False)
        dct = next(ppa)
        stage(f"preprocess {m['name']}", t)
        t = time.perf_counter()
        logits = predictor.predict_logits_from_preprocessed_data(dct["data"]).cpu()
        stage(f"predict {m['name']}", t)
        t = time.perf_counter()
        _, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, predictor.plans_manager, predictor.configuration_manager, predictor.label_manager,
            dct["data_properties"], return_probabilities=True)
        del logits
        average = probabilities if average is None else average + probabilities
        stage(f"export {m['name']}", t)
        del predictor
        if device.type == "cuda":
            torch.cuda.empty_cache()
    t = time.perf_counter()
    average /= len(scenario["members"])
    seg = average.argmax(0).astype(np.uint8)
    ref = sitk.ReadImage(scenario["image"])
    out = sitk.GetImageFromArray(seg)
    out.CopyInformation(ref)
    sitk.WriteImage(out, str(out_dir / "case.mha"), True)
    stage("ensemble + write", t)
    return {"mask": str(out_dir / "case.mha"), "stages": stages}


def path_c(scenario: dict, device, timer: ForwardTimer, out_dir: Path, mode: str) -> dict:
    from panther_ensemble import Ensemble, read_image

    spec = {"version": 1, "task": scenario["task"], "members": [
        {"name": m["name"], "model": m["folder"].lstrip("/"), "folds": m["folds"], "mirroring": m["mirroring"],
         "tile_step_size": m["tile_step_size"], "resampling": mode} for m in scenario["members"]]}
    t = time.perf_counter()
    ensemble = Ensemble.from_spec(spec, "/", device.type).load()
    load_s = time.perf_counter() - t
    for networks in ensemble.networks.values():
        for net in networks:
            net.forward = timer.wrap(net.forward)
    t = time.perf_counter()
    image, geometry = read_image(scenario["image"])
    read_s = time.perf_counter() - t
    result = ensemble.segment((image, geometry))
    t = time.perf_counter()
    result.save(out_dir / "case.mha")
    write_s = time.perf_counter() - t
    stages = {"load": load_s, "read": read_s, **{k: v for k, v in result.timings.items() if k != "total"},
              "write": write_s}
    return {"mask": str(out_dir / "case.mha"), "stages": stages}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", default=",".join(sc.DEFAULT))
    p.add_argument("--paths", default=",".join(PATHS))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--work", default="/tmp/panther-bench")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    return worker(args) if args.worker else drive(args)


if __name__ == "__main__":
    sys.exit(main())
