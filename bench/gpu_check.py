"""GPU check: winning-team-shaped members on one GPU, our engine against nnU-Net's CLI path.

    python bench/gpu_check.py --out DIR [--device cuda|cpu] [--dry]

Members: two nnU-Net Residual Encoder UNet "L" networks (plans from nnU-Net's own nnUNetPlannerResEncL
with a 1 mm isotropic target spacing on the Task 1 phantom dataset: patch 160 x 192 x 256, 102 M
parameters), 5 folds each, random weights, no mirroring and tile step 0.5 (as the winning team's
container). Input: a Task 1 sized phantom (72 x 258 x 318 at 3.0 x 1.19 x 1.19 mm, NIfTI).
Measured: our engine (fast mode) cold and warm: per-stage times, share of wall time in network forward
passes, peak GPU memory; the same with the process capped at 15 GB of GPU memory (a T4's 16 GB minus
headroom); nnU-Net's CLI path (nnUNetv2_predict_from_modelfolder --save_probabilities per member +
nnUNetv2_ensemble) on the same GPU; voxel agreement of the two.

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


def engine_runs(members, image_path: Path, device: torch.device, out: Path, cap: bool) -> dict:
    """Our engine, fast mode: a cold case then a warm case in one process."""
    from run_bench import ForwardTimer

    from panther_ensemble import Ensemble

    if cap and device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(CAP_BYTES / torch.cuda.get_device_properties(0).total_memory)
    spec = {"version": 1, "task": 1, "members": [
        {"name": m["name"], "model": m["folder"].lstrip("/"), "folds": m["folds"], "mirroring": False,
         "tile_step_size": 0.5, "resampling": "fast"} for m in members]}
    t = time.perf_counter()
    ensemble = Ensemble.from_spec(spec, "/", device.type).load()
    load_s = time.perf_counter() - t
    weights_mb = torch.cuda.memory_allocated() / 2**20 if device.type == "cuda" else None
    runs = {}
    for run in ("cold", "warm"):
        timer = ForwardTimer(device.type == "cuda")
        for networks in ensemble.networks.values():
            for net in networks:
                net.forward = timer.wrap(net.forward)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        image, geometry = read_nifti(image_path)
        read_s = time.perf_counter() - t
        result = ensemble.segment((image, geometry))
        wall = time.perf_counter() - t
        np.save(out / f"engine_{'cap' if cap else 'uncapped'}_{run}.npy", result.mask)
        runs[run] = {"wall_s": wall, "read_s": read_s, "forward_s": timer.seconds, "forward_calls": timer.calls,
                     "forward_share": timer.seconds / wall, "stages": result.timings,
                     "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
                     "tumour_voxels": int(result.mask.sum())}
        for networks in ensemble.networks.values():  # unwrap for the next run
            for net in networks:
                net.__dict__.pop("forward", None)
        log(f"engine ({'capped 15 GB' if cap else 'uncapped'}) {run}: wall {wall:.1f} s, forward "
            f"{timer.seconds:.1f} s ({100 * timer.seconds / wall:.0f}%), peak GPU {runs[run]['peak_gpu_mb']}")
    return {"load_s": load_s, "weights_on_device_mb": weights_mb, **runs}


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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/panther-gpu-check"))
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dry", action="store_true", help="scaled-down networks (for testing the script on a CPU)")
    p.add_argument("--image", type=Path, default=None,
                   help="input image (NIfTI); default: the carried .gpu-carry/task1_case.nii.gz (not with --dry), "
                        "else a phantom made in --work")
    p.add_argument("--skip", default="", help="comma list of steps to skip: cap,cli")
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

    t = time.perf_counter()
    members = make_members(a.work / "models", REPO / "bench" / "gpu" / "plans_resencl_iso1mm.json", a.dry, device)
    results["make_members_s"] = time.perf_counter() - t
    log(f"members ready in {results['make_members_s']:.1f} s")
    results["engine"] = engine_runs(members, a.image, device, a.work, cap=False)
    save()
    if "cap" not in skip:
        proc = subprocess.run([sys.executable, __file__, "--capped-child", str(a.work), str(a.image), a.device],
                              capture_output=True, text=True)
        print(proc.stdout[-2000:], proc.stderr[-2000:], flush=True)
        results["engine_capped_15GB"] = (json.loads((a.work / "capped.json").read_text()) if proc.returncode == 0
                                         else {"error": proc.stderr[-1500:]})
        save()
    if "cli" not in skip:
        results["nnunet_cli"] = nnunet_cli(members, a.image, device, a.work)
        ours = np.load(a.work / "engine_uncapped_cold.npy")
        theirs = np.load(a.work / "cli_mask.npy")
        results["agreement_engine_vs_cli"] = float((ours == theirs).mean())
        results["speedup_vs_cli"] = results["nnunet_cli"]["wall_s"] / results["engine"]["cold"]["wall_s"]
        save()
    log(json.dumps({k: v for k, v in results.items() if k in ("agreement_engine_vs_cli", "speedup_vs_cli")}))
    return 0


def capped_child(work: Path, image: Path, device: str) -> int:
    members = [{"name": d.name, "folder": str(d), "folds": sorted(int(f.name.split("_")[1])
               for f in d.glob("fold_*"))} for d in sorted((work / "models").iterdir())]
    result = engine_runs(members, image, torch.device(device), work, cap=True)
    (work / "capped.json").write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--capped-child":
        sys.exit(capped_child(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]))
    sys.exit(main())
