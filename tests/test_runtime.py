"""Device policy and the out-of-memory fallback, exercised on the CPU through the same functions."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import panther_ensemble.inference.engine as engine_mod
from panther_ensemble.inference.engine import Engine
from panther_ensemble.runtime import Runtime
from panther_ensemble.errors import InputError
from panther_ensemble.io import read_image
from panther_ensemble.runtime import Placement, choose_device, fallback_placements, run_with_fallback
from panther_ensemble.spec import parse_spec

CPU = torch.device("cpu")


def test_fallback_order_on_cuda_and_cpu():
    cuda = torch.device("cuda", 0)
    assert fallback_placements(cuda) == [Placement(cuda, cuda), Placement(cuda, CPU), Placement(CPU, CPU)]
    assert fallback_placements(CPU) == [Placement(CPU, CPU)]


def test_out_of_memory_moves_to_the_next_placement_and_says_so(caplog):
    cuda = torch.device("cuda", 0)
    tried = []

    def fn(placement):
        tried.append(placement)
        if placement.accumulate.type == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "ok"

    with caplog.at_level(logging.WARNING):
        assert run_with_fallback("member x", fallback_placements(cuda), fn) == "ok"
    assert tried == fallback_placements(cuda)[:2]
    assert "member x: out of memory" in caplog.text and "accumulate on cpu" in caplog.text


def test_other_errors_are_not_swallowed():
    def fn(placement):
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError):
        run_with_fallback("m", fallback_placements(torch.device("cuda", 0)), fn)


def test_last_placement_out_of_memory_propagates():
    def fn(placement):
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(RuntimeError):
        run_with_fallback("m", [Placement(CPU, CPU)], fn)


def test_cuda_requested_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        assert choose_device("cuda").type == "cuda"
    else:
        with pytest.raises(InputError, match="no CUDA device"):
            choose_device("cuda")
    with pytest.raises(InputError):
        choose_device("tpu")
    assert choose_device("cpu") == CPU


def test_engine_recovers_from_out_of_memory_with_identical_result(models, mri_file, monkeypatch, caplog):
    spec = parse_spec({"version": 1, "task": 1, "members": [{"name": "A", "model": "A", "folds": [0],
                                                                "mirroring": False}]})
    image, geometry = read_image(mri_file)
    expected = Engine(spec, models, Runtime.create("cpu")).predict(image, geometry).mask

    real = engine_mod.predict_logits
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("out of memory (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_mod, "predict_logits", flaky)
    monkeypatch.setattr(Runtime, "placements", lambda self: [Placement(CPU, CPU)] * 2)
    with caplog.at_level(logging.WARNING):
        got = Engine(spec, models, Runtime.create("cpu")).predict(image, geometry).mask
    assert calls["n"] == 2 and "case: out of memory" in caplog.text
    assert np.array_equal(got, expected)


def test_onednn_convolutions_match_the_stock_ones():
    import copy

    import modelfactory as mf
    from panther_ensemble.runtime import use_onednn_convolutions

    plans = mf.make_plans(patch_size=(16, 48, 48), architecture=mf.resenc_unet_arch(features=(4, 8, 16)))
    torch.manual_seed(0)
    stock = mf.build_network(plans, mf.make_dataset_json()).eval()
    fast = copy.deepcopy(stock)
    assert use_onednn_convolutions(fast) == sum(isinstance(m, torch.nn.Conv3d) for m in stock.modules()) > 0
    x = torch.randn(1, 1, 16, 48, 48)
    with torch.inference_mode():
        a, b = stock(x), fast(x)
    assert (a - b).abs().max().item() < 1e-4 * a.abs().max().item()
    with torch.inference_mode():  # float16 input (or another device) falls back to the stock kernel
        assert fast.double()(x.double()).dtype == torch.float64


# ---------------------------------------------------------------------------------------------------------
# Forward settings and tiles per forward call

CUDA = torch.device("cuda", 0)
GB = 10**9


def test_forward_settings_text_form(monkeypatch):
    from panther_ensemble.runtime import ForwardSettings

    s = ForwardSettings.parse("channels_last, compile=max-autotune,tiles=2,autocast=bf16,cudnn-benchmark=0")
    assert (s.channels_last, s.compile, s.tiles, s.autocast_dtype, s.cudnn_benchmark) == (
        True, "max-autotune", 2, torch.bfloat16, False)
    assert ForwardSettings.parse("") == ForwardSettings() and ForwardSettings().describe() == "defaults"
    assert ForwardSettings.parse("tiles=auto,compile=1").compile == "default"
    assert ForwardSettings.parse("autocast=fp32").autocast_dtype is None
    for bad in ("channel_last", "tiles=-1", "channels_last=maybe", "compile=fastest", "autocast=int8"):
        with pytest.raises(InputError, match="PANTHER_FORWARD"):
            ForwardSettings.parse(bad)
    monkeypatch.setenv("PANTHER_FORWARD", "tiles=3")
    assert Runtime.create("cpu").forward.tiles == 3
    assert Runtime.create("cpu", forward="tiles=2").forward.tiles == 2  # an explicit argument wins
    assert Runtime.create("cpu", forward=ForwardSettings()).forward.tiles == 0


def test_placements_try_batched_tiles_first_where_they_are_allowed():
    from panther_ensemble.runtime import ForwardSettings

    batched = Placement(CUDA, CUDA, batched=True)
    assert Runtime(CUDA).placements() == [batched] + fallback_placements(CUDA)
    assert Runtime(CUDA, forward=ForwardSettings(tiles=1)).placements() == fallback_placements(CUDA)
    assert Runtime(CPU).placements() == [Placement(CPU, CPU)]  # the CPU policy is one tile per call
    assert Runtime(CPU, forward=ForwardSettings(tiles=2)).placements() == [Placement(CPU, CPU, True),
                                                                            Placement(CPU, CPU)]
    assert "one tile per call" in str(Placement(CUDA, CPU)) and "tiles batched" in str(batched)


def test_tiles_per_batch_fill_the_memory_left_up_to_the_cap():
    from panther_ensemble.runtime import ForwardSettings

    rt = Runtime(CUDA)
    batched = Placement(CUDA, CUDA, batched=True)

    def tiles(available, tile=GB, copies=1, reserved=0, mode="fast", placement=batched, runtime=rt):
        return runtime.tiles_per_batch(placement, mode, lambda: tile, copies, reserved, available)

    assert tiles(100 * GB) == 4  # capped
    assert tiles(4 * GB) == 2  # 4 GB / (1 GB x 1.5)
    assert tiles(4 * GB, reserved=2 * GB) == 1
    assert tiles(4 * GB, copies=8) == 1  # mirrored copies ride in the same call
    assert tiles(0) == 1  # never fewer than one
    assert tiles(100 * GB, mode="faithful") == 1  # nnU-Net's calls, bit for bit
    assert tiles(100 * GB, placement=Placement(CUDA, CUDA)) == 1  # the out-of-memory retry
    assert tiles(100 * GB, runtime=Runtime(CUDA, forward=ForwardSettings(max_tiles=8))) == 8
    assert tiles(GB, runtime=Runtime(CUDA, forward=ForwardSettings(tiles=3))) == 3  # fixed
    assert tiles(100 * GB, placement=Placement(CPU, CPU, True), runtime=Runtime(CPU)) == 1  # CPU: measured
    assert Runtime(CUDA).compute_dtype(CUDA) == torch.float16 and Runtime(CUDA).compute_dtype(CPU) == torch.float32
    assert Runtime(CUDA, forward=ForwardSettings(autocast="fp32")).compute_dtype(CUDA) == torch.float32


def test_out_of_memory_with_batched_tiles_retries_one_tile_per_call_first(models, mri_file, monkeypatch, caplog):
    spec = parse_spec({"version": 1, "task": 1, "members": [{"name": "A", "model": "A", "folds": [0, 1],
                                                                "mirroring": False}]})
    image, geometry = read_image(mri_file)
    expected = Engine(spec, models, Runtime.create("cpu")).predict(image, geometry).mask

    real = engine_mod.predict_logits
    seen = []

    def flaky(*args, **kwargs):
        seen.append(kwargs["tiles_per_batch"])
        if kwargs["tiles_per_batch"] > 1:
            raise torch.OutOfMemoryError("out of memory (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_mod, "predict_logits", flaky)
    with caplog.at_level(logging.WARNING):
        got = Engine(spec, models, Runtime.create("cpu", forward="tiles=3")).predict(image, geometry).mask
    assert seen == [3, 1]
    assert "case: out of memory" in caplog.text and "one tile per call" in caplog.text
    assert np.array_equal(got, expected)


def test_batched_tiles_give_the_same_mask_as_one_per_call(models, mri_file):
    spec = parse_spec({"version": 1, "task": 1, "members": [{"name": "A", "model": "A", "folds": [0, 1],
                                                                "mirroring": False}]})
    image, geometry = read_image(mri_file)
    one = Engine(spec, models, Runtime.create("cpu")).predict(image, geometry, keep_probabilities=True)
    many = Engine(spec, models, Runtime.create("cpu", forward="tiles=4")).predict(image, geometry,
                                                                                  keep_probabilities=True)
    assert (one.probabilities - many.probabilities).abs().max().item() < 1e-5
    assert (one.mask == many.mask).mean() > 0.9999


@pytest.mark.parametrize("onednn", [True, False])
def test_channels_last_networks_agree_with_the_default_layout(onednn):
    import copy

    import modelfactory as mf
    from panther_ensemble.runtime import ForwardSettings

    plans = mf.make_plans(patch_size=(16, 32, 32), architecture=mf.resenc_unet_arch(features=(4, 8, 16)))
    torch.manual_seed(1)
    reference = mf.build_network(plans, mf.make_dataset_json()).eval()
    network = Runtime(CPU, forward=ForwardSettings(channels_last=True, onednn=onednn)).prepare_network(
        copy.deepcopy(reference))
    conv = next(m for m in network.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 1, 16, 32, 32)
    with torch.inference_mode():
        a, b = reference(x), network(x)
    assert (a - b).abs().max().item() < 1e-4 * a.abs().max().item()


# ---------------------------------------------------------------------------------------------------------
# bfloat16 autocast on the CPU (opt-in: cpu_autocast)

def test_cpu_autocast_is_opt_in_and_refused_where_bfloat16_would_be_emulated(monkeypatch):
    import panther_ensemble.runtime as runtime_mod
    from panther_ensemble.runtime import ForwardSettings

    assert ForwardSettings().cpu_autocast == "off" and Runtime(CPU).compute_dtype(CPU) == torch.float32
    assert isinstance(Runtime(CPU).autocast(CPU), type(runtime_mod.nullcontext()))  # nnU-Net's CPU path: float32
    for text, value in (("cpu_autocast=bf16", "bf16"), ("cpu_autocast=bfloat16", "bf16"), ("cpu_autocast", "bf16"),
                        ("cpu_autocast=auto", "auto"), ("cpu_autocast=fp32", "off"), ("cpu-autocast=0", "off")):
        assert ForwardSettings.parse(text).cpu_autocast == value, text
    with pytest.raises(InputError, match="PANTHER_FORWARD.*cpu_autocast must be off, bf16 or auto, got 'fp16'"):
        ForwardSettings.parse("cpu_autocast=fp16")

    monkeypatch.setattr(runtime_mod, "native_bf16", lambda: False)
    with pytest.raises(InputError, match="PANTHER_FORWARD.*cpu_autocast=bf16: this CPU has no native bfloat16"):
        Runtime.create("cpu", forward="cpu_autocast=bf16")
    assert Runtime.create("cpu", forward="cpu_autocast=auto").compute_dtype(CPU) == torch.float32  # auto: off here

    monkeypatch.setattr(runtime_mod, "native_bf16", lambda: True)
    for text in ("cpu_autocast=bf16", "cpu_autocast=auto"):
        runtime = Runtime.create("cpu", forward=text)
        assert runtime.compute_dtype(CPU) == torch.bfloat16
        with runtime.autocast(CPU):
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert not torch.is_autocast_enabled("cpu")
    # the CUDA settings stay apart: a GPU keeps its float16 whatever the CPU is asked to do
    assert Runtime(CUDA, forward=ForwardSettings(cpu_autocast="bf16")).compute_dtype(CUDA) == torch.float16


@pytest.mark.parametrize("onednn", [True, False])
def test_cpu_bfloat16_networks_compute_in_bfloat16_and_agree_with_float32(onednn):
    import copy

    import modelfactory as mf
    from panther_ensemble.runtime import ForwardSettings

    plans = mf.make_plans(patch_size=(16, 32, 32), architecture=mf.resenc_unet_arch(features=(4, 8, 16)))
    torch.manual_seed(2)
    reference = mf.build_network(plans, mf.make_dataset_json()).eval()
    runtime = Runtime(CPU, forward=ForwardSettings(cpu_autocast="bf16", onednn=onednn))
    network = runtime.prepare_network(copy.deepcopy(reference))
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.inference_mode():
        a = reference(x)
        with runtime.autocast(CPU):
            b = network(x)
    # bfloat16 out: the convolutions ran in bfloat16 (the oneDNN override, whose kernel autocast does not
    # know, steps aside for the stock one)
    assert a.dtype == torch.float32 and b.dtype == torch.bfloat16
    error = (a - b.float()).abs().max().item() / a.abs().max().item()
    assert 0 < error < 0.05  # bfloat16's 8-bit mantissa: not float32's rounding, but close


def test_cpu_bfloat16_ensemble_gives_nearly_the_float32_mask(models, mri_file, monkeypatch):
    import panther_ensemble.runtime as runtime_mod

    monkeypatch.setattr(runtime_mod, "native_bf16", lambda: True)  # emulated where not native: slower, same values
    spec = parse_spec({"version": 1, "task": 1, "members": [{"name": "A", "model": "A", "folds": [0, 1],
                                                                "mirroring": False}]})
    image, geometry = read_image(mri_file)
    f32 = Engine(spec, models, Runtime.create("cpu")).predict(image, geometry, keep_probabilities=True)
    bf16 = Engine(spec, models, Runtime.create("cpu", forward="cpu_autocast=bf16")).predict(
        image, geometry, keep_probabilities=True)
    gap = (f32.probabilities - bf16.probabilities).abs()
    assert 0 < gap.max().item() < 0.05
    # random-weight members leave many voxels near the decision (a third of the mask's voxels are foreground):
    # 0.2% flip here; the shipped members on the sample cases are measured in bench/README.md
    assert (f32.mask != bf16.mask).mean() < 0.01
