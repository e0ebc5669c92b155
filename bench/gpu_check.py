"""GPU check: winning-team-shaped members on one GPU, our engine against nnU-Net's CLI path.

    python bench/gpu_check.py --out DIR [--device cuda|cpu] [--dry] [--levers [--compile]] [--before S] [--after S]

Members: two nnU-Net Residual Encoder UNet "L" networks (plans from nnU-Net's own nnUNetPlannerResEncL
with a 1 mm isotropic target spacing on the Task 1 phantom dataset: patch 160 x 192 x 256, 102 M
parameters), 5 folds each, random weights, no mirroring and tile step 0.5 (as the winning team's
container). Input: a Task 1 sized phantom (72 x 258 x 318 at 3.0 x 1.19 x 1.19 mm, NIfTI).
Measured: our engine (fast mode) cold and warm: per-stage times, share of wall time in network forward
passes, peak GPU memory; the same with the process capped at 15 GB of GPU memory (a T4's 16 GB minus
headroom); nnU-Net's CLI path (nnUNetv2_predict_from_modelfolder --save_probabilities per member +
nnUNetv2_ensemble) on the same GPU; voxel agreement of the two.

Forward efficiency (bench/README.md): FLOPs of one forward call and of the case (meta device), the dense
float16 matmul peak measured in the same run, and per engine run the achieved TFLOP/s (case FLOPs / forward
time) and its fraction of that peak. The engine runs twice, `--before` (default `tiles=1`: one tile per
call, the settings of the earlier GPU runs) and `--after` (runtime.ForwardSettings text; default `auto`:
with --levers the fastest lever set of the sweep that a T4 can run (float16, no compile), tiles turned into
the memory policy's cap, else the defaults); the capped run and the CLI comparison use `after`. `--levers`
first times the forward settings' lever sets on one ResEnc-L fold (bench/forward_efficiency.py's sweep);
`--compile` adds torch.compile to the sweep (minutes of compilation).

--dry (with --device cpu): the same steps with networks scaled down (features / 8, patch / 4, 6 mm spacing,
2 folds) on a smaller phantom (the same body at a third of the resolution), so the script itself is tested
on a machine without a GPU (tests/test_gpu_check.py).

Input: --image, else the carried .gpu-carry/task1_case.nii.gz (bench/prepare_gpu_carry.sh), else the phantom
is made here in the work folder (needs the real SimpleITK, as on any machine set up from requirements.txt).

Images are read with nnU-Net's NibabelIO in both paths: the lent GPU machine has no SimpleITK and its wheel
is too large to carry (bench/gpu/shim provides an import-only stand-in, see bench/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

CAP_BYTES = 15 * 10**9
CARRIED_CASE = REPO / ".gpu-carry" / "task1_case.nii.gz"
CASE_SEED, CASE_SHAPE, CASE_SPACING = 3001, (72, 258, 318), (3.0, 1.19, 1.19)  # a Task 1 sized phantom
DRY_SHAPE, DRY_SPACING = (24, 86, 106), (9.0, 3.57, 3.57)  # the same extent, a third of the voxels per axis


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_members(root: Path, plans_file: Path, dry: bool, device: torch.device) -> list[dict]:
    import modelfactory as mf

    plans = json.loads(plans_file.read_text())
    plans["image_reader_writer"] = "NibabelIO"
    cfg = plans["configurations"]["3d_fullres"]
    plans["configurations"] = {"3d_fullres": cfg}
    folds = (0, 1, 2, 3, 4)
    if dry:
        arch = cfg["architecture"]["arch_kwargs"]
        arch["features_per_stage"] = [max(2, f // 8) for f in arch["features_per_stage"]]
        arch["n_blocks_per_stage"] = [1] * arch["n_stages"]
        arch["n_stages"] = 4
        for key in ("features_per_stage", "kernel_sizes", "strides", "n_blocks_per_stage"):
            arch[key] = arch[key][:4]
        arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][:3]
        cfg["patch_size"] = [p // 4 for p in cfg["patch_size"]]
        cfg["spacing"] = [6.0, 6.0, 6.0]  # 36 x 51 x 63 voxels: two tiles per network
        folds = (0, 1)
    dataset_json = mf.make_dataset_json()
    dataset_json["file_ending"] = ".nii.gz"
    members = []
    for name, seed in (("resencl_a", 1), ("resencl_b", 2)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "plans.json").write_text(json.dumps(plans, indent=1))
        (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=1))
        for i, fold in enumerate(folds):
            torch.manual_seed(seed * 100 + i)
            net = mf.build_network(plans, dataset_json).to(device)
            mf._calibrate(net, [min(p, 64) for p in cfg["patch_size"]], 4.0, seed * 100 + i)
            (folder / f"fold_{fold}").mkdir(exist_ok=True)
            torch.save({"network_weights": {k: v.cpu() for k, v in net.state_dict().items()},
                        "init_args": {"configuration": "3d_fullres", "fold": fold}, "trainer_name": "nnUNetTrainer",
                        "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 1},
                       folder / f"fold_{fold}" / "checkpoint_final.pth")
            del net
        members.append({"name": name, "folder": str(folder), "folds": list(folds)})
    return members


def make_case(path: Path, dry: bool = False) -> Path:
    """The input phantom as NIfTI (nnU-Net's NibabelIO reads it in both paths): Task 1 sized, or small for --dry."""
    import SimpleITK as sitk

    from scenarios import make_image

    try:
        sitk.Image
    except ImportError as exc:  # the GPU machine's import shim
        raise SystemExit(f"no input image and no SimpleITK to make one ({exc}): run bench/prepare_gpu_carry.sh "
                         "where SimpleITK is installed and carry .gpu-carry/, or pass --image") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    if dry:
        make_image(1, CASE_SEED, DRY_SHAPE, DRY_SPACING, path)
    else:
        make_image(1, CASE_SEED, CASE_SHAPE, CASE_SPACING, path)
    return path


def read_nifti(path: Path):
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO

    from panther_ensemble.io import Geometry

    data, props = NibabelIO().read_images([str(path)])
    image = data[0].astype(np.float32)
    spacing_zyx = tuple(props["spacing"])
    geometry = Geometry(tuple(reversed(image.shape)), tuple(reversed(spacing_zyx)), (0.0, 0.0, 0.0),
                        (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    return image, geometry


def engine_runs(members, image_path: Path, device: torch.device, out: Path, cap: bool, forward: str = "",
                label: str = "", peak: dict | None = None) -> dict:
    """Our engine, fast mode, with the `forward` settings: a cold case then a warm case in one process."""
    from run_bench import ForwardTimer
    from matmul_peak import rate

    from panther_ensemble import Ensemble

    if cap and device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(CAP_BYTES / torch.cuda.get_device_properties(0).total_memory)
    spec = {"version": 1, "task": 1, "members": [
        {"name": m["name"], "model": m["folder"].lstrip("/"), "folds": m["folds"], "mirroring": False,
         "tile_step_size": 0.5, "resampling": "fast"} for m in members]}
    t = time.perf_counter()
    ensemble = Ensemble.from_spec(spec, "/", device.type, forward=forward).load()
    load_s = time.perf_counter() - t
    weights_mb = torch.cuda.memory_allocated() / 2**20 if device.type == "cuda" else None
    costs = [c.as_dict() for c in ensemble.costs(read_nifti(image_path))]
    case_tflop = sum(c["case_tflop"] for c in costs)
    tag = label or ("capped 15 GB" if cap else "uncapped")
    runs = {}
    networks = [net for nets in ensemble.networks.values() for net in nets]
    for run in ("cold", "warm"):
        timer = ForwardTimer(device.type == "cuda")
        own = [net.__dict__.get("forward") for net in networks]  # torch.compile's module has its own
        for net in networks:
            net.forward = timer.wrap(net.forward)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        image, geometry = read_nifti(image_path)
        read_s = time.perf_counter() - t
        result = ensemble.segment((image, geometry))
        wall = time.perf_counter() - t
        np.save(out / f"engine_{label or ('cap' if cap else 'uncapped')}_{run}.npy", result.mask)
        runs[run] = {"wall_s": wall, "read_s": read_s, "forward_s": timer.seconds, "forward_calls": timer.calls,
                     "forward_share": timer.seconds / wall, "stages": result.timings,
                     "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
                     "tumour_voxels": int(result.mask.sum()), **rate(case_tflop * 1e12, timer.seconds, peak)}
        for net, forward in zip(networks, own):  # unwrap for the next run
            net.__dict__.pop("forward", None)
            if forward is not None:
                net.forward = forward
        log(f"engine ({tag}; {ensemble.runtime.forward.describe()}) {run}: wall {wall:.1f} s, forward "
            f"{timer.seconds:.1f} s ({100 * timer.seconds / wall:.0f}%) in {timer.calls} calls, "
            f"{runs[run]['tflop_per_s']:.3g} TFLOP/s" + (f" ({100 * runs[run]['fraction_of_peak']:.1f}% of peak)"
                                                        if peak else "") + f", peak GPU {runs[run]['peak_gpu_mb']}")
    result = {"forward": ensemble.runtime.forward.describe(), "load_s": load_s, "weights_on_device_mb": weights_mb,
              "members": costs, "case_tflop": case_tflop, **runs}
    del ensemble, networks
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def nnunet_cli(members, image_path: Path, device: torch.device, work: Path) -> dict:
    inp = work / "cli_in"
    inp.mkdir(exist_ok=True)
    target = inp / "case_0000.nii.gz"
    if not target.exists():
        shutil.copy(image_path, target)
    env = {**os.environ, "nnUNet_raw": str(work), "nnUNet_preprocessed": str(work), "nnUNet_results": str(work)}
    stages, forward, calls, peak = {}, 0.0, 0, 0.0
    start = time.perf_counter()
    outs = []
    for m in members:
        t = time.perf_counter()
        timing = work / f"{m['name']}.timing.json"
        subprocess.run([sys.executable, str(REPO / "bench" / "cli_timed.py"), str(timing), "-i", str(inp),
                        "-o", str(work / f"cli_{m['name']}"), "-m", m["folder"], "-f", *map(str, m["folds"]),
                        "--save_probabilities", "-device", device.type, "-step_size", "0.5", "--disable_tta",
                        "--disable_progress_bar"], check=True, env=env, stdout=subprocess.DEVNULL)
        stages[f"nnUNetv2_predict {m['name']}"] = time.perf_counter() - t
        measured = json.loads(timing.read_text())
        forward += measured["forward_s"]
        calls += measured["forward_calls"]
        peak = max(peak, measured.get("peak_gpu_mb", 0.0))
        outs.append(str(work / f"cli_{m['name']}"))
        log(f"nnU-Net CLI {m['name']}: {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "nnUNetv2_ensemble") if
                    (Path(sys.executable).parent / "nnUNetv2_ensemble").exists() else "nnUNetv2_ensemble",
                    "-i", *outs, "-o", str(work / "cli_ensemble")], check=True, env=env, stdout=subprocess.DEVNULL)
    stages["nnUNetv2_ensemble"] = time.perf_counter() - t
    wall = time.perf_counter() - start
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO

    seg, _ = NibabelIO().read_seg(str(work / "cli_ensemble" / "case.nii.gz"))
    np.save(work / "cli_mask.npy", (seg[0] == 1).astype(np.uint8))
    log(f"nnU-Net CLI total {wall:.1f} s, forward {forward:.1f} s")
    return {"wall_s": wall, "forward_s": forward, "forward_calls": calls, "forward_share": forward / wall,
            "stages": stages, "peak_gpu_mb": peak or None}


def lever_sweep(member: dict, device: torch.device, a, peak: dict) -> list[dict]:
    """bench/forward_efficiency.py's sweep on the member's first fold (per-tile time, TFLOP/s, of peak)."""
    import forward_efficiency as fe

    sets = a.lever_sets or ("defaults;tiles=2;channels_last" if device.type == "cpu" else fe.CUDA_LEVERS)
    if a.compile:
        sets += ";compile=default,tiles=1;channels_last,compile=default,tiles=1"
    fold = {"name": member["name"], "folder": member["folder"], "fold": member["folds"][0]}
    rows = fe.sweep(fold, sets.split(";"), device, torch.get_num_threads(), rounds=3, repeats=2, peak=peak,
                    on_result=lambda r: log(f"levers {r['levers']}: " + (
                        f"{r['seconds_per_tile'] * 1e3:.1f} ms per tile, {r['tflop_per_s']:.3g} TFLOP/s, "
                        f"{100 * r['fraction_of_peak']:.1f}% of peak" if "error" not in r else r["error"])))
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def choose_after(after: str, levers: list[dict] | None) -> str:
    """`auto`: the fastest lever set a T4 can run in a one-case container (float16, no compile); a fixed tile
    count becomes the memory policy with that cap. Without a sweep: the defaults."""
    if after != "auto":
        return after
    usable = [r for r in levers or () if "error" not in r and "autocast" not in r["levers"]
              and "compile" not in r["levers"]]
    if not usable:
        return ""
    best = min(usable, key=lambda r: r["seconds_per_tile"])
    settings = []
    for item in best["levers"].split(","):
        if item.startswith("tiles="):
            n = int(item.split("=")[1])
            item = "tiles=1" if n == 1 else f"tiles=0,max_tiles={n}"
        if item != "defaults":
            settings.append(item)
    return ",".join(settings)


def add_fraction(run: dict, peak: dict) -> dict:
    for key in ("cold", "warm"):
        if key in run and "tflop_per_s" in run[key]:
            run[key]["fraction_of_peak"] = run[key]["tflop_per_s"] * 1e12 / peak["flops_per_s"]
    return run


def summary(results: dict) -> str:
    peak = results["peak"]
    lines = [f"# GPU check: forward efficiency ({results['device']}, torch {results['torch']})", "",
             f"Measured dense {peak['dtype']} matmul peak: {peak['flops_per_s'] / 1e12:.3g} TFLOP/s "
             f"({peak['size']} x {peak['size']}); FLOPs per forward call and per case counted on the meta device.", "",
             "| run | forward settings | wall s | forward s (calls) | case TFLOP | TFLOP/s | of peak | peak GPU MB |",
             "|---|---|---|---|---|---|---|---|"]
    for key in ("engine_before", "engine_after", "engine_after_capped_15GB"):
        run = results.get(key)
        if not run or "error" in run:
            lines.append(f"| {key} | failed | | | | | | |" if run else f"| {key} | not run | | | | | | |")
            continue
        for which in ("cold", "warm"):
            r = run[which]
            frac = f"{100 * r['fraction_of_peak']:.1f}%" if "fraction_of_peak" in r else "-"
            gpu = f"{r['peak_gpu_mb']:.0f}" if r.get("peak_gpu_mb") else "-"
            lines.append(f"| {key.replace('engine_', '')} {which} | {run['forward']} | {r['wall_s']:.1f} | "
                         f"{r['forward_s']:.2f} ({r['forward_calls']}) | {run['case_tflop']:.3g} | "
                         f"{r['tflop_per_s']:.3g} | {frac} | {gpu} |")
    for key in ("agreement_before_vs_cli", "agreement_after_vs_cli", "speedup_warm_forward"):
        if key in results:
            lines.append(f"\n{key}: {results[key]:.5f}")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/panther-gpu-check"))
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dry", action="store_true", help="scaled-down networks (for testing the script on a CPU)")
    p.add_argument("--image", type=Path, default=None,
                   help="input image (NIfTI); default: the carried .gpu-carry/task1_case.nii.gz (not with --dry), "
                        "else a phantom made in --work")
    p.add_argument("--skip", default="", help="comma list of steps to skip: before,cap,cli")
    p.add_argument("--levers", action="store_true", help="time the forward settings' lever sets first")
    p.add_argument("--lever-sets", default=None, help="';'-separated settings texts for --levers")
    p.add_argument("--compile", action="store_true", help="add torch.compile to the lever sweep")
    p.add_argument("--before", default="tiles=1", help="forward settings of the 'before' engine run")
    p.add_argument("--after", default="auto", help="forward settings of the 'after' runs (auto: see above)")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    device = torch.device(a.device)
    if a.image is None:
        if CARRIED_CASE.exists() and not a.dry:
            a.image = CARRIED_CASE
        else:
            a.image = make_case(a.work / "input" / ("dry_case.nii.gz" if a.dry else "task1_case.nii.gz"), a.dry)
            log(f"input phantom made: {a.image}")
    skip = set(filter(None, a.skip.split(",")))
    results: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "dry": a.dry, "image": a.image.name}

    def save():
        (a.out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
        (a.out / "gpu_check.md").write_text(summary(results))

    from matmul_peak import matmul_peak

    results["peak"] = matmul_peak(device)
    log(f"matmul peak {results['peak']['flops_per_s'] / 1e12:.3g} TFLOP/s ({results['peak']['dtype']})")
    t = time.perf_counter()
    members = make_members(a.work / "models", REPO / "bench" / "gpu" / "plans_resencl_iso1mm.json", a.dry, device)
    results["make_members_s"] = time.perf_counter() - t
    log(f"members ready in {results['make_members_s']:.1f} s")
    if a.levers:
        results["levers"] = lever_sweep(members[0], device, a, results["peak"])
        save()
    after = choose_after(a.after, results.get("levers"))
    log(f"after: {after or 'defaults'}")
    if "before" not in skip:
        results["engine_before"] = engine_runs(members, a.image, device, a.work, False, a.before, "before",
                                               results["peak"])
        save()
    results["engine_after"] = engine_runs(members, a.image, device, a.work, False, after, "after", results["peak"])
    if "engine_before" in results:
        results["speedup_warm_forward"] = (results["engine_before"]["warm"]["forward_s"]
                                           / results["engine_after"]["warm"]["forward_s"])
    save()
    if "cap" not in skip:
        proc = subprocess.run([sys.executable, __file__, "--capped-child", str(a.work), str(a.image), a.device,
                               after], capture_output=True, text=True)
        print(proc.stdout[-2000:], proc.stderr[-2000:], flush=True)
        results["engine_after_capped_15GB"] = (
            add_fraction(json.loads((a.work / "capped.json").read_text()), results["peak"]) if proc.returncode == 0
            else {"error": proc.stderr[-1500:]})
        save()
    if "cli" not in skip:
        results["nnunet_cli"] = nnunet_cli(members, a.image, device, a.work)
        theirs = np.load(a.work / "cli_mask.npy")
        for label in ("before", "after"):
            if f"engine_{label}" in results:
                ours = np.load(a.work / f"engine_{label}_cold.npy")
                results[f"agreement_{label}_vs_cli"] = float((ours == theirs).mean())
        results["speedup_vs_cli"] = results["nnunet_cli"]["wall_s"] / results["engine_after"]["cold"]["wall_s"]
        save()
    log(json.dumps({k: v for k, v in results.items() if k.startswith(("agreement", "speedup"))}))
    print(summary(results), flush=True)
    return 0


def capped_child(work: Path, image: Path, device: str, forward: str) -> int:
    members = [{"name": d.name, "folder": str(d), "folds": sorted(int(f.name.split("_")[1])
               for f in d.glob("fold_*"))} for d in sorted((work / "models").iterdir())]
    result = engine_runs(members, image, torch.device(device), work, cap=True, forward=forward, label="cap")
    (work / "capped.json").write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--capped-child":
        sys.exit(capped_child(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]))
    sys.exit(main())
