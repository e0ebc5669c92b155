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
