"""bench/training_norm.py's own logic: the layers it times against nnU-Net's instance norm are the same function, in
the network nnU-Net builds (dynamic_network_architectures' PlainConvUNet), with every norm replaced."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from training_norm import replace_norms  # noqa: E402


def small_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    net = PlainConvUNet(1, 3, (4, 8, 16), torch.nn.Conv3d, 3, (1, 2, 2), (2, 2, 2), 3, (2, 2), False,
                        norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    with torch.no_grad():  # affine parameters away from 1 / 0, so that a layer that dropped them would show
        for m in net.modules():
            if isinstance(m, torch.nn.InstanceNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize("variant", ["group_norm", "layout_norm"])
def test_replaced_norms_are_the_same_function(variant):
    net = small_unet()
    x = torch.randn(2, 1, 8, 16, 16) * 3 + 1
    with torch.no_grad():
        expected = net(x)
        replaced = replace_norms(net, variant)
        assert not any(isinstance(m, torch.nn.InstanceNorm3d) for m in replaced.modules())
        got = replaced(x)
    assert torch.allclose(got, expected, atol=1e-4), float((got - expected).abs().max())
    # the same in channels_last_3d, the layout the trainers' levers use
    with torch.no_grad():
        got_cl = replaced.to(memory_format=torch.channels_last_3d)(x.to(memory_format=torch.channels_last_3d))
    assert torch.allclose(got_cl, expected, atol=1e-4)


def test_layout_norm_keeps_the_layout_and_trains():
    net = replace_norms(small_unet(), "layout_norm").train().to(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 1, 8, 16, 16).to(memory_format=torch.channels_last_3d)
    norm = next(m for m in net.modules() if type(m).__name__ == "LayoutNorm")
    block = next(m for m in net.modules() if hasattr(m, "all_modules") and hasattr(m, "norm"))
    assert block.norm is block.all_modules[1]  # the layer the forward uses is the one `.norm` names
    y = norm(torch.randn(2, 4, 8, 16, 16).to(memory_format=torch.channels_last_3d))
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    net(x).sum().backward()
    assert norm.weight.grad is not None and norm.bias.grad is not None


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError):
        replace_norms(small_unet(), "batch_norm")
