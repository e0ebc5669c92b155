"""Can the specialists' training step get faster on this CPU by changing how the instance norm runs? nnU-Net's
InstanceNorm3d against two equivalent layers, in the trainers' fastest setting (bfloat16 autocast, channels_last_3d).

    source training/env.sh
    nnUNet_n_proc_DA=0 python bench/training_norm.py --json bench/results/training-norm.json

Why ask: a torch.profiler trace of one train_step (24 x 80 x 80 plans, 1 thread) spends about 16 % of the step in
aten::copy_, mostly layout copies around the norm (PyTorch's instance_norm runs batch_norm on an (1, N*C, ...)
view, which needs a contiguous tensor, while the convolutions want channels_last). Two layers compute the same
function without that view:

- `group_norm`: torch.nn.GroupNorm with one group per channel (the same mean and variance per sample and
  channel, the same affine parameters);
- `layout_norm`: the statistics by torch.var_mean over the spatial axes, in float32, on the tensor as it is
  (elementwise operations keep channels_last).

For each plan a trainer of training/trainers.py is built as bench/training_split.py builds it (fold 0, one torch
thread, the CPU levers bf16 + channels_last); each variant is a copy of the same network with its norms replaced
(weights copied), checked to give the same logits (float32, eval) within --atol, and trained on the same batches in
interleaved rounds. Reported: median seconds per train_step and each variant's speed as a ratio to nnU-Net's norm in
the same run. Writes nothing under $nnUNet_results except the trainers' empty fold folders in a temporary directory.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("instance_norm", "group_norm", "layout_norm")


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def replace_norms(network, variant: str):
    """The network with every InstanceNorm3d replaced by the variant (weights copied), in place. A norm held twice
    (dynamic_network_architectures keeps it as `.norm` and inside `.all_modules`) becomes one new layer."""
    import torch

    class LayoutNorm(torch.nn.Module):
        def __init__(self, norm):
            super().__init__()
            self.weight = torch.nn.Parameter(norm.weight.detach().clone())
            self.bias = torch.nn.Parameter(norm.bias.detach().clone())
            self.eps = norm.eps

        def forward(self, x):
            xf = x.float()
            var, mean = torch.var_mean(xf, dim=tuple(range(2, x.ndim)), keepdim=True, correction=0)
            shape = (1, -1) + (1,) * (x.ndim - 2)
            return ((xf - mean) * (torch.rsqrt(var + self.eps) * self.weight.view(shape)) + self.bias.view(shape)).to(x.dtype)

    if variant not in ("group_norm", "layout_norm"):
        raise ValueError(f"unknown variant {variant!r}")
    replaced: dict[int, torch.nn.Module] = {}
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if not isinstance(child, torch.nn.InstanceNorm3d):
                continue
            if id(child) in replaced:
                setattr(module, name, replaced[id(child)])
                continue
            if variant == "group_norm":
                new = torch.nn.GroupNorm(child.num_features, child.num_features, eps=child.eps, affine=True)
                with torch.no_grad():
                    new.weight.copy_(child.weight)
                    new.bias.copy_(child.bias)
            else:
                new = LayoutNorm(child)
            replaced[id(child)] = new
            setattr(module, name, new)
    return network


def run(dataset: str, plans_name: str, variants: list[str], repeats: int, atol: float) -> dict:
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    from training_split import build

    base, (train_loader, _) = build(dataset, "nnUNetTrainerPhantom", plans_name, "bf16+channels_last")
    trainers = {"instance_norm": base}
    reference = copy.deepcopy(base.network).float().eval()
    x = torch.randn(2, 1, *base.configuration_manager.patch_size)
    with torch.no_grad():
        expected = reference(x)[0].float()
    agreement = {}
    for variant in variants:
        if variant == "instance_norm":
            continue
        tr, _ = build(dataset, "nnUNetTrainerPhantom", plans_name, "bf16+channels_last")
        tr.network.load_state_dict(base.network.state_dict())
        replace_norms(tr.network, variant)
        tr.network.to(memory_format=torch.channels_last_3d)
        tr.optimizer, tr.lr_scheduler = tr.configure_optimizers()
        check = copy.deepcopy(tr.network).float().eval()
        with torch.no_grad():
            diff = float((check(x)[0].float() - expected).abs().max())
        agreement[variant] = diff
        if diff > atol:
            raise SystemExit(f"training_norm.py: {variant} is not the same function (max |logit diff| {diff:.2e} > {atol})")
        trainers[variant] = tr
    batches = [next(train_loader) for _ in range(4)]
    for tr in trainers.values():
        tr.network.train()
        tr.train_step(batches[0])  # warm-up: first allocations
    times = {v: [] for v in trainers}
    for _ in range(repeats):
        for variant, tr in trainers.items():
            for batch in batches:
                t = time.perf_counter()
                tr.train_step(batch)
                times[variant].append(time.perf_counter() - t)
    ref = median(times["instance_norm"])
    return {"plans": plans_name, "patch_size": list(base.configuration_manager.patch_size),
            "batch_size": base.configuration_manager.batch_size, "train_steps_timed": repeats * len(batches),
            "max_abs_logit_diff_vs_instance_norm": {k: float(f"{v:.3g}") for k, v in agreement.items()},
            "median_train_step_s": {v: round(median(t), 4) for v, t in times.items()},
            "speed_vs_instance_norm": {v: round(ref / median(t), 2) for v, t in times.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="Dataset902_PhantomT2")
    ap.add_argument("--plans", default="nnUNetPlansPhantom,nnUNetPlansPhantomIso")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds of 4 train steps per variant")
    ap.add_argument("--atol", type=float, default=1e-3, help="largest logit difference that counts as the same function")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    variants = [v for v in a.variants.split(",") if v]
    if "instance_norm" not in variants:
        variants.insert(0, "instance_norm")  # the reference of every ratio
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if os.environ.get("nnUNet_n_proc_DA") != "0":
        ap.error("set nnUNet_n_proc_DA=0: augmentation workers would share the cores with the timed steps")
    os.environ["nnUNet_results"] = tempfile.mkdtemp(prefix="training_norm_")
    import torch
    torch.set_num_threads(1)
    runs = [run(a.dataset, p, variants, a.repeats, a.atol) for p in a.plans.split(",") if p]
    doc = {"machine": f"{platform.node()} ({platform.machine()}), {os.cpu_count()} CPUs, torch threads 1, "
                      f"CPU capability {torch.backends.cpu.get_cpu_capability()}",
           "torch": torch.__version__, "levers": "bf16 autocast + channels_last_3d (training/trainers.py _CpuSpeed)",
           "command": "nnUNet_n_proc_DA=0 python bench/training_norm.py " + " ".join(sys.argv[1:]),
           "dataset": a.dataset, "runs": runs}
    print(json.dumps(doc, indent=2))
    if a.json:
        a.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
