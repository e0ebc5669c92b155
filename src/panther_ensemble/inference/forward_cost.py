"""What one forward pass of a member's network costs, counted without running it for real.

The network is built from its plans on PyTorch's meta device (shapes, no data, no memory) and run once on a
patch-sized input of batch 1:
- FLOPs, counted by `torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products, 2 per
  multiply-add; normalisation and activations are not counted, as in every published FLOP figure);
- activation memory: the largest total size of the tensors alive at once during the pass (weights not
  included), in float32.
A ResEnc-L network at its 160 x 192 x 256 patch (5.4 TFLOP per call) is counted in under a second on a
CPU, allocating nothing on any device.

A whole case costs `forward FLOPs x tiles x folds x mirrored copies` (`case_flops`); tiles per call
change how the work is grouped, not how much there is. The benchmarks divide these counts by the measured
forward time (achieved FLOP/s); the runtime sizes tile batches with the memory figure.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ForwardCost:
    """One forward call on one tile (batch 1); both grow linearly with the batch."""

    input_shape: tuple[int, ...]  # (1, channels, *patch)
    flops: int
    activation_bytes: int  # peak of the tensors alive at once, float32 (half of it in float16)

    def activation_bytes_for(self, dtype: torch.dtype | None) -> int:
        """The activation peak in the dtype the network computes in (autocast's, or float32 for None)."""
        size = torch.tensor([], dtype=dtype or torch.float32).element_size()
        return self.activation_bytes * size // 4


def count_forward(build: Callable[[], torch.nn.Module], input_shape: Sequence[int]) -> ForwardCost:
    """FLOPs and activation peak of `build()`'s forward on a float32 input of `input_shape`, on the meta device."""
    with torch.device("meta"):
        network = build()
    network.eval()
    x = torch.empty(tuple(input_shape), device="meta")
    flop_counter = FlopCounterMode(display=False)
    live = _LiveBytes()
    live.add(x)
    with torch.inference_mode(), flop_counter, live:
        out = network(x)
        del out
    return ForwardCost(tuple(input_shape), int(flop_counter.get_total_flops()), int(live.peak))


def member_forward_cost(member) -> ForwardCost:
    """`count_forward` for an ensemble member (inference.members.Member), from its plans."""
    channels = member.folder.num_input_channels
    return count_forward(lambda: member.folder.build_network(member.configuration),
                         (1, channels, *member.patch_size))


def case_flops(forward_flops: int, tiles: int, folds: int, mirror_copies: int = 1) -> int:
    """FLOPs of one member on one case: every tile through every fold, once per mirrored copy."""
    return int(forward_flops) * int(tiles) * int(folds) * int(mirror_copies)


@dataclass(frozen=True)
class MemberCost:
    """One member on one case (engine.Engine.member_costs)."""

    name: str
    forward: ForwardCost
    tiles: int
    folds: int
    mirror_copies: int

    @property
    def forward_calls(self) -> int:
        """Forward passes of one tile (a call with several tiles or mirrored copies counts each)."""
        return self.tiles * self.folds * self.mirror_copies

    @property
    def case_flops(self) -> int:
        return case_flops(self.forward.flops, self.tiles, self.folds, self.mirror_copies)

    def as_dict(self) -> dict:
        return {"member": self.name, "input_shape": list(self.forward.input_shape),
                "forward_gflop": self.forward.flops / 1e9,
                "activation_mb_fp32": self.forward.activation_bytes / 2**20, "tiles": self.tiles,
                "folds": self.folds, "mirror_copies": self.mirror_copies, "tile_forwards": self.forward_calls,
                "case_tflop": self.case_flops / 1e12}


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of every storage an operator creates until its last tensor is freed; keeps the peak.
    Views and in-place results share their storage and add nothing."""

    def __init__(self):
        super().__init__()
        self.storages: dict[int, list[int]] = {}  # storage id -> [bytes, tensors alive]
        self.tracked: dict[int, weakref.finalize] = {}  # id(tensor) -> its finaliser
        self.current = 0
        self.peak = 0

    def add(self, t: torch.Tensor) -> None:
        if id(t) in self.tracked:
            return
        key = t.untyped_storage()._cdata
        entry = self.storages.get(key)
        if entry is None:
            entry = self.storages[key] = [t.untyped_storage().nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        self.tracked[id(t)] = weakref.finalize(t, self._release, id(t), key)

    def _release(self, tensor_id: int, key: int) -> None:
        self.tracked.pop(tensor_id, None)
        entry = self.storages[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.storages[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.add(t)
        return out
