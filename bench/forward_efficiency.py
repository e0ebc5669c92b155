"""Forward efficiency: FLOPs, achieved throughput against the measured matmul peak, and the forward settings'
levers, per member network.

    python bench/forward_efficiency.py [--device cpu|cuda] [--threads N] [--members shipped,resencl-small]
                                       [--levers "defaults;tiles=2;channels_last;..."] [--rounds 3] [--repeats 3]
                                       [--out bench/results/forward-cpu]

Per member: FLOPs of one forward call at its patch (counted on the meta device), and for the shipped members
the FLOPs of the `task1-shipped` benchmark case (tiles x folds x mirrored copies). Per lever set (a
runtime.ForwardSettings text; `tiles=N` sets the batch of tiles per call): seconds per tile of the member's
first fold, built and prepared by the engine (`Ensemble(..., forward=...)`), achieved FLOP/s and its fraction
of the dense matmul peak measured in the same process (matmul_peak.py). Lever sets are timed in interleaved
rounds (each round times every set `repeats` times), so a shared machine's load spreads over all of them;
the per-set figure is the median over all calls, with the best call beside it.

Members: `shipped` = the Task 1 specialists (resources/task1.json, their checkpoints; `shipped:DA5` = one of
them); `resencl-small` = the
GPU check's ResEnc-L network (bench/gpu/plans_resencl_iso1mm.json, 102 M parameters) at a 32 x 64 x 64 patch,
random weights; `resencl` = the same at its own 160 x 192 x 256 patch (for a GPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))  # modelfactory

from matmul_peak import matmul_peak, rate, time_calls  # noqa: E402

CPU_LEVERS = "onednn=0;defaults;tiles=2;tiles=4;channels_last;channels_last,onednn=0"
CUDA_LEVERS = ("tiles=1;tiles=2;tiles=4;channels_last,tiles=1;channels_last,tiles=2;cudnn_benchmark=0,tiles=1;"
               "autocast=fp32,tiles=1;autocast=bf16,tiles=1")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def resencl_folder(root: Path, patch: list[int] | None, name: str) -> dict:
    """A one-fold model folder with the GPU check's ResEnc-L plans (random weights), at `patch` if given."""
    import modelfactory as mf

    plans = json.loads((REPO / "bench" / "gpu" / "plans_resencl_iso1mm.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    if patch:
        cfg["patch_size"] = list(patch)
    plans["configurations"] = {"3d_fullres": cfg}
    dataset_json = mf.make_dataset_json()
    folder = root / name
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    if not (folder / "fold_0" / "checkpoint_final.pth").exists():
        torch.manual_seed(0)
        net = mf.build_network(plans, dataset_json)
        torch.save({"network_weights": net.state_dict(), "init_args": {"configuration": "3d_fullres", "fold": 0},
                    "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)},
                   folder / "fold_0" / "checkpoint_final.pth")
    return {"name": name, "folder": str(folder), "fold": 0}


def shipped_members() -> list[dict]:
    from panther_ensemble.spec import load_spec

    spec = load_spec(REPO / "resources" / "task1.json")
    return [{"name": m.name, "folder": str(REPO / "model_weights" / m.model), "fold": m.folds[0]}
            for m in spec.members if m.weight > 0]


def forward_flops(folder: str) -> dict:
    """FLOPs and activation peak of one forward call at the folder's patch, on the meta device."""
    from panther_ensemble.inference.forward_cost import count_forward
    from panther_ensemble.inference.members import ModelFolder

    model = ModelFolder.open(Path(folder))
    cfg = model.configuration("3d_fullres")
    cost = count_forward(lambda: model.build_network(cfg), (1, model.num_input_channels, *cfg.patch_size))
    return {"patch": list(cfg.patch_size), "forward_gflop": cost.flops / 1e9,
            "activation_mb_fp32": cost.activation_bytes / 2**20, "flops": cost.flops}


def case_costs(image_path: Path, threads: int) -> list[dict]:
    """The shipped Task 1 members on the task1-shipped case: tiles, folds, FLOPs per case (as run_bench runs
    them: no mirroring)."""
    from panther_ensemble import Ensemble

    spec = json.loads((REPO / "resources" / "task1.json").read_text())
    for m in spec["members"]:
        m["mirroring"] = False
    ensemble = Ensemble.from_spec(spec, REPO / "model_weights", "cpu", threads)
    return [c.as_dict() for c in ensemble.costs(image_path)]


def prepared_network(member: dict, device: str, threads: int, levers: str):
    from panther_ensemble import Ensemble

    spec = {"version": 1, "task": 1, "members": [{"name": member["name"], "model": member["folder"].lstrip("/"),
                                                  "folds": [member["fold"]], "mirroring": False}]}
    ensemble = Ensemble.from_spec(spec, "/", device, threads, forward=levers.replace("defaults", ""))
    return ensemble, ensemble.networks[member["name"]][0]


def sweep(member: dict, levers: list[str], device: torch.device, threads: int, rounds: int, repeats: int,
          peak: dict | None, on_result=None) -> list[dict]:
    """Seconds per tile of `member`'s first fold under each lever set, interleaved over `rounds`."""
    counted = forward_flops(member["folder"])
    flops, patch = counted["flops"], counted["patch"]
    setups = []
    for text in levers:
        t = time.perf_counter()
        try:
            ensemble, network = prepared_network(member, device.type, threads, text)
            tiles = ensemble.runtime.forward.tiles or 1
            x = torch.randn(tiles, 1, *patch, device=device)

            def call(network=network, x=x, ensemble=ensemble):
                with torch.inference_mode(), ensemble.runtime.autocast(device):
                    network(x)

            ensemble.runtime.configure_torch()
            first = time_calls(call, device, 1, warmup=0)[0]  # compiles, autotunes
            setups.append({"levers": text, "tiles": tiles, "call": call, "ensemble": ensemble, "times": [],
                           "first_call_s": first, "prepare_s": time.perf_counter() - t - first})
            log(f"{member['name']} [{text}]: first call {first:.2f} s")
        except Exception as exc:  # noqa: BLE001 - a lever that does not work here is a result too
            setups.append({"levers": text, "error": f"{type(exc).__name__}: {str(exc)[:300]}", "times": []})
            log(f"{member['name']} [{text}]: failed: {exc}")
    for r in range(rounds):
        for s in setups:
            if "error" in s:
                continue
            s["ensemble"].runtime.configure_torch()
            s["times"] += time_calls(s["call"], device, repeats, warmup=1 if r == 0 else 0)
    results = []
    for s in setups:
        row = {"member": member["name"], "levers": s["levers"]}
        if "error" in s:
            row["error"] = s["error"]
        else:
            per_tile = statistics.median(s["times"]) / s["tiles"]
            best = min(s["times"]) / s["tiles"]
            row.update(tiles_per_call=s["tiles"], seconds_per_tile=per_tile, best_seconds_per_tile=best,
                       calls=len(s["times"]), first_call_s=s["first_call_s"], prepare_s=s["prepare_s"],
                       **rate(flops, per_tile, peak), best_fraction_of_peak=rate(flops, best, peak).get(
                           "fraction_of_peak"))
        results.append(row)
        if on_result:
            on_result(row)
    for s in setups:
        s.pop("ensemble", None)
    return results


def report(data: dict) -> str:
    peak = data["peak"]
    lines = [f"# Forward efficiency ({data['machine']['date']}, {data['device']}, {data['threads']} threads, "
             f"torch {data['machine']['torch']})", "",
             f"Command: `{data['command']}`", "",
             f"Measured dense matmul peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['dtype']}, "
             f"{peak['size']} x {peak['size']}, best of rounds; median {peak['median_flops_per_s'] / 1e9:.1f})", "",
             "| member | patch | GFLOP per forward | activations MB (fp32) |", "|---|---|---|---|"]
    for name, f in data["flops"].items():
        lines.append(f"| {name} | {' x '.join(map(str, f['patch']))} | {f['forward_gflop']:.2f} | "
                     f"{f['activation_mb_fp32']:.0f} |")
    if data.get("case"):
        lines += ["", "Per case (task1-shipped image, no mirroring):", "",
                  "| member | tiles | folds | tile forwards | TFLOP per case |", "|---|---|---|---|---|"]
        for c in data["case"]:
            lines.append(f"| {c['member']} | {c['tiles']} | {c['folds']} | {c['tile_forwards']} | "
                         f"{c['case_tflop']:.3f} |")
    lines += ["", "| member | levers | tiles per call | s per tile (median) | best | GFLOP/s | of peak | first call s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in data["levers"]:
        if "error" in r:
            lines.append(f"| {r['member']} | {r['levers']} | failed: {r['error'][:80]} | | | | | |")
            continue
        lines.append(f"| {r['member']} | {r['levers']} | {r['tiles_per_call']} | {r['seconds_per_tile']:.4f} | "
                     f"{r['best_seconds_per_tile']:.4f} | {r['gflop_per_s']:.1f} | {100 * r['fraction_of_peak']:.1f}% | "
                     f"{r['first_call_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--members", default="shipped,resencl-small")
    p.add_argument("--levers", default=None, help="';'-separated forward settings texts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/panther-forward"))
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "forward-cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    levers = (a.levers or (CUDA_LEVERS if device.type == "cuda" else CPU_LEVERS)).split(";")
    a.work.mkdir(parents=True, exist_ok=True)
    members = []
    for kind in a.members.split(","):
        if kind.startswith("shipped"):  # shipped, or shipped:NAME for one of them
            members += [m for m in shipped_members() if kind == "shipped" or m["name"] == kind.split(":")[1]]
        elif kind in ("resencl-small", "resencl"):
            members.append(resencl_folder(a.work, [32, 64, 64] if kind == "resencl-small" else None, kind))
        else:
            raise SystemExit(f"unknown member kind {kind!r}")
    data = {"command": " ".join(["python", *sys.argv]), "device": a.device, "threads": a.threads,
            "machine": {"host": platform.node(), "torch": torch.__version__,
                        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None},
            "flops": {m["name"]: forward_flops(m["folder"]) for m in members}, "levers": []}
    if any(kind.startswith("shipped") for kind in a.members.split(",")):
        image = a.work / "task1-shipped.mha"
        if not image.exists():
            from scenarios import SCENARIOS, make_image

            s = SCENARIOS["task1-shipped"]["image"]
            make_image(s["task"], s["seed"], s["shape"], s["spacing"], image)
        data["case"] = case_costs(image, a.threads)
    data["peak"] = matmul_peak(device)
    log(f"matmul peak {data['peak']['flops_per_s'] / 1e9:.1f} GFLOP/s")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for m in members:
        data["levers"] += sweep(m, levers, device, a.threads, a.rounds, a.repeats, data["peak"],
                                on_result=lambda r: log(json.dumps(r)))
        data["peak_after"] = matmul_peak(device)  # the machine's state may drift: measured again at the end
        a.out.with_suffix(".json").write_text(json.dumps(data, indent=2))
    a.out.with_suffix(".md").write_text(report(data))
    print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
