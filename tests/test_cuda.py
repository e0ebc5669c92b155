"""CUDA paths of the engine, run on a GPU machine only (`pytest -m cuda`; skipped with a reason elsewhere).

Their logic is covered on the CPU elsewhere (fallback placements in test_runtime.py, batched mirrors and
accumulation dtypes in test_sliding_window.py); here the same functions meet a real GPU: float16 autocast,
weights resident on the device, a real out-of-memory fallback, and agreement with nnU-Net on CUDA.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

import modelfactory as mf
from panther_ensemble.inference.engine import Engine
from panther_ensemble.runtime import Runtime
from panther_ensemble.io import Geometry
from panther_ensemble.spec import parse_spec

pytestmark = pytest.mark.cuda

GEOMETRY = Geometry((70, 60, 20), (1.2, 1.2, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
MEMBERS = [{"name": "A", "model": "A", "folds": [0, 1]}, {"name": "B", "model": "B", "folds": [0]}]


def spec(mode, **extra):
    return parse_spec({"version": 1, "task": 1,
                       "members": [dict(m, resampling=mode, **extra) for m in MEMBERS]})


@pytest.fixture(scope="module")
def image():
    return mf.synthetic_volume()


def test_cuda_is_there():
    assert torch.cuda.is_available(), "this module must run on a GPU machine"


@pytest.mark.parametrize("mode", ["fast", "faithful"])
def test_cuda_agrees_with_cpu(models, image, mode):
    gpu = Engine(spec(mode), models, Runtime.create("cuda")).predict(image, GEOMETRY)
    cpu = Engine(spec(mode), models, Runtime.create("cpu")).predict(image, GEOMETRY)
    assert 0.05 < cpu.mask.mean() < 0.95
    assert (gpu.mask == cpu.mask).mean() > 0.999  # float16 autocast on the GPU vs float32 on the CPU


def test_faithful_cuda_matches_nnunet_predictor_on_cuda(models, image):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = models / "A"
    plans = json.loads((folder / "plans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    pm = PlansManager(plans)
    params = [torch.load(folder / f"fold_{f}" / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["network_weights"] for f in (0, 1)]
    predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=True, perform_everything_on_device=True,
                                device=torch.device("cuda"), allow_tqdm=False)
    predictor.manual_initialization(mf.build_network(plans, dataset_json), pm, pm.get_configuration("3d_fullres"),
                                    params, dataset_json, "nnUNetTrainer", (0, 1, 2))
    ref_seg, ref_prob = predictor.predict_single_npy_array(image[None], {"spacing": [3.0, 1.2, 1.2]}, None, None,
                                                           True)
    got = {}
    Engine(parse_spec({"version": 1, "task": 1, "members": [dict(MEMBERS[0], resampling="faithful")]}), models,
           Runtime.create("cuda")).predict(image, GEOMETRY, member_hook=lambda n, p, l: got.__setitem__(n, p.cpu().numpy()))
    assert (got["A"].argmax(0) == ref_seg).mean() > 0.999
    assert np.abs(got["A"] - ref_prob).max() < 0.05  # batched vs sequential mirrors: cuDNN picks other kernels


def test_weights_stay_on_the_device_between_cases(models, image):
    engine = Engine(spec("fast"), models, Runtime.create("cuda")).load()
    assert all(p.device.type == "cuda" for m in engine.members for net in m.networks for p in net.parameters())
    engine.predict(image, GEOMETRY)
    before = torch.cuda.memory_allocated()
    engine.predict(image, GEOMETRY)
    assert all(p.device.type == "cuda" for m in engine.members for net in m.networks for p in net.parameters())
    assert abs(torch.cuda.memory_allocated() - before) < 16 * 2**20


@pytest.fixture(scope="module")
def big_patch_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("big_patch")
    mf.make_model_folder(root, "P", mf.make_plans(spacing=(3.0, 1.5, 1.5), patch_size=(32, 96, 96)), folds=(0,),
                         seed=7)
    return root


def test_real_out_of_memory_falls_back_and_gives_the_same_mask(big_patch_models, caplog):
    image = mf.synthetic_volume(shape=(60, 300, 300), seed=1)
    geometry = Geometry((300, 300, 60), (1.5, 1.5, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    single = parse_spec({"version": 1, "task": 1, "members": [{"name": "P", "model": "P", "folds": [0],
                                                                 "mirroring": False}]})
    reference = Engine(single, big_patch_models, Runtime.create("cpu")).predict(image, geometry).mask
    engine = Engine(single, big_patch_models, Runtime.create("cuda")).load()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    # room for the weights, the network input and tiles (about 45 MB), not for the float32 accumulators
    # (3 x 60 x 297 x 297 x 4 B = 64 MB) on top
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + 70 * 2**20) / total)
    try:
        with caplog.at_level(logging.WARNING):
            got = engine.predict(image, geometry).mask
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert "case: out of memory" in caplog.text
    assert 0.01 < reference.mean() < 0.99
    assert (got == reference).mean() > 0.999


# ---------------------------------------------------------------------------------------------------------
# Forward settings on a real GPU (their logic is tested on the CPU in test_runtime.py / test_sliding_window.py)


@pytest.mark.parametrize("forward", ["tiles=4", "channels_last,tiles=1", "channels_last,tiles=3"])
def test_forward_settings_on_cuda_agree_with_one_tile_per_call(models, image, forward):
    got = {}
    for text in ("tiles=1", forward):
        probabilities = {}
        result = Engine(spec("fast"), models, Runtime.create("cuda", forward=text)).predict(
            image, GEOMETRY, member_hook=lambda n, p, l: probabilities.__setitem__(n, p.cpu()))
        got[text] = (result.mask, probabilities)
    (mask_one, p_one), (mask_many, p_many) = got["tiles=1"], got[forward]
    assert (mask_one == mask_many).mean() > 0.999  # float16 autocast: cuDNN may pick other kernels per batch
    for name in p_one:
        assert (p_one[name] - p_many[name]).abs().max().item() < 0.05


def test_memory_policy_batches_tiles_on_a_real_gpu():
    from panther_ensemble.runtime import Placement

    runtime = Runtime.create("cuda")
    cuda = torch.device("cuda", 0)
    batched = Placement(cuda, cuda, batched=True)
    assert runtime.tiles_per_batch(batched, "fast", lambda: 2**20) == runtime.forward.max_tiles
    total = torch.cuda.get_device_properties(0).total_memory
    # a tile as large as the whole device: one per call
    assert runtime.tiles_per_batch(batched, "fast", lambda: total) == 1
    torch.cuda.set_per_process_memory_fraction(0.5)
    try:  # the per-process cap is what is left, not the device's free memory
        assert runtime.tiles_per_batch(batched, "fast", lambda: int(0.2 * total)) == 1
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)


def test_real_out_of_memory_with_batched_tiles_retries_one_tile_per_call_on_the_device(big_patch_models, caplog):
    image = mf.synthetic_volume(shape=(60, 300, 300), seed=1)
    geometry = Geometry((300, 300, 60), (1.5, 1.5, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    single = parse_spec({"version": 1, "task": 1, "members": [{"name": "P", "model": "P", "folds": [0],
                                                                 "mirroring": False}]})
    reference = Engine(single, big_patch_models, Runtime.create("cpu")).predict(image, geometry).mask
    engine = Engine(single, big_patch_models, Runtime.create("cuda", forward="tiles=64")).load()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    # room for the float32 accumulators (85 MB) and one tile at a time (tens of MB), not for 64 tiles per call
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + 160 * 2**20) / total)
    try:
        with caplog.at_level(logging.WARNING):
            got = engine.predict(image, geometry).mask
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert "case: out of memory" in caplog.text and "one tile per call" in caplog.text
    assert "accumulate on cpu" not in caplog.text
    assert (got == reference).mean() > 0.999
