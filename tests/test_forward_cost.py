"""FLOPs and activation memory of one forward pass, counted on the meta device (inference/forward_cost.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import modelfactory as mf
from panther_ensemble.inference import budget
from panther_ensemble.inference.engine import Engine
from panther_ensemble.inference.forward_cost import case_flops, count_forward
from panther_ensemble.io import read_image
from panther_ensemble.runtime import Runtime
from panther_ensemble.spec import parse_spec

REPO = Path(__file__).resolve().parents[1]


def toy():
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.LeakyReLU(inplace=True),
                               torch.nn.Conv3d(4, 2, 1))


def test_convolution_flops_are_two_per_multiply_add():
    cost = count_forward(toy, (1, 1, 8, 8, 8))
    voxels = 8 * 8 * 8
    assert cost.flops == 2 * voxels * (4 * 1 * 27 + 2 * 4 * 1)


def test_activation_peak_counts_live_tensors_once():
    # input (1 channel) + first convolution's output (4; the in-place activation adds nothing) + the last (2),
    # float32; all three alive at the end of the pass
    cost = count_forward(toy, (1, 1, 8, 8, 8))
    assert cost.activation_bytes == (1 + 4 + 2) * 512 * 4
    assert cost.activation_bytes_for(torch.float16) == cost.activation_bytes // 2
    double = count_forward(toy, (2, 1, 8, 8, 8))
    assert double.flops == 2 * cost.flops and double.activation_bytes == 2 * cost.activation_bytes


def test_resenc_l_is_counted_without_allocating_it():
    plans = json.loads((REPO / "bench" / "gpu" / "plans_resencl_iso1mm.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    def build():
        return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                      1, 3, allow_init=False, deep_supervision=False)

    start = time.perf_counter()
    cost = count_forward(build, (1, 1, 160, 192, 256))
    assert time.perf_counter() - start < 60
    # 102 M parameters, 160 x 192 x 256 voxels: 5.38 TFLOP per call; 5.4 GB of float32 activations at most
    assert abs(cost.flops / 1e12 - 5.381) < 0.01
    assert 4.5e9 < cost.activation_bytes < 6.5e9


def test_member_costs_multiply_tiles_folds_and_mirrors(models, mri_file):
    spec = parse_spec({"version": 1, "task": 1, "members": [{"name": "A", "model": "A", "folds": [0, 1]},
                                                            {"name": "B", "model": "B", "folds": [0],
                                                             "mirroring": False}]})
    engine = Engine(spec, models, Runtime.create("cpu", forward="onednn=0")).load()  # stock convolutions
    image, geometry = read_image(mri_file)
    costs = {c.name: c for c in engine.member_costs(image, geometry.spacing_zyx)}
    a = costs["A"]
    member_a = engine.members[0]
    assert a.forward.input_shape == (1, 1, 8, 32, 32)
    assert a.tiles == budget.tile_count(member_a, image, geometry.spacing_zyx)
    assert (a.folds, a.mirror_copies, costs["B"].mirror_copies) == (2, 8, 1)
    assert a.case_flops == case_flops(a.forward.flops, a.tiles, 2, 8) == a.forward.flops * a.forward_calls
    # the same count as a real forward pass of the loaded network would make
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        member_a.networks[0](torch.zeros(1, 1, 8, 32, 32))
    assert counter.get_total_flops() == a.forward.flops
    assert set(a.as_dict()) >= {"forward_gflop", "case_tflop", "tiles", "activation_mb_fp32"}
