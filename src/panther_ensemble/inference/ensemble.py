"""Weighted ensembling of member probability maps in a common label space, and the decision.

Members are matched by label NAME: a member may order or number its labels differently, and may lack a
label altogether (a tumour-only member has no pancreas). For every label c of the common space

    P(c) = sum_m w_m * k_mc * p_m(c) / sum_m w_m * k_mc      over the members m that have label c,

with w_m the member weight and k_mc its class weight (default 1). With equal weights and equal label
sets this is exactly nnU-Net's ensemble average. The sums live in one float32 tensor on the compute
device, updated in place, member by member; nothing else of image size is kept.
"""

from __future__ import annotations

from typing import Sequence

import torch


def common_label_space(label_sets: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """Union of label names, background first, then in order of first appearance."""
    names: list[str] = ["background"]
    for labels in label_sets:
        for name in labels:
            if name not in names:
                names.append(name)
    return tuple(names)


def box_slices(box: Sequence[Sequence[int]]) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in box)


def outside_box(shape: Sequence[int], box: Sequence[Sequence[int]]) -> list[tuple[slice, ...]]:
    """Disjoint slabs that together cover every voxel of `shape` outside the half-open `box`."""
    slabs = []
    inner: list[slice] = []
    for axis, (a, b) in enumerate(box):
        rest = [slice(None)] * (len(shape) - axis - 1)
        if a > 0:
            slabs.append((*inner, slice(0, a), *rest))
        if b < shape[axis]:
            slabs.append((*inner, slice(b, shape[axis]), *rest))
        inner.append(slice(a, b))
    return slabs


class WeightedProbabilities:
    """Running weighted sum of member probability maps on the full image grid (z, y, x)."""

    def __init__(self, labels: Sequence[str], shape: Sequence[int], device: torch.device):
        self.labels = tuple(labels)
        self.shape = tuple(int(s) for s in shape)
        self.sum = torch.zeros((len(self.labels), *self.shape), dtype=torch.float32, device=device)
        self.weight = torch.zeros(len(self.labels), dtype=torch.float64)
        self.members: list[str] = []

    def add(self, name: str, probabilities: torch.Tensor, labels: Sequence[str], box: Sequence[Sequence[int]],
            weight: float, class_weights: dict[str, float] | None = None) -> None:
        """Add one member: `probabilities` (its labels, *box shape) covers `box` of the image grid; outside
        the box the member says background with certainty, as nnU-Net's export does."""
        class_weights = class_weights or {}
        inside = box_slices(box)
        if tuple(probabilities.shape[1:]) != tuple(s.stop - s.start for s in inside):
            raise ValueError(f"member {name}: probabilities {tuple(probabilities.shape)} do not fit box {box}")
        for k, label in enumerate(labels):
            w = float(weight) * float(class_weights.get(label, 1.0))
            if w == 0:
                continue
            c = self.labels.index(label)
            self.sum[c][inside].add_(probabilities[k].to(self.sum.device, torch.float32), alpha=w)
            if label == "background":
                for slab in outside_box(self.shape, box):
                    self.sum[c][slab] += w
            self.weight[c] += w
        self.members.append(name)

    def probabilities(self) -> torch.Tensor:
        """The weighted mean per label (in place: the accumulator is consumed). A label that no member
        with weight contributed to (e.g. its only member was dropped by the time budget) has probability 0."""
        weight = self.weight.to(self.sum.device, torch.float32)
        self.sum /= torch.where(weight > 0, weight, 1.0).view(-1, *([1] * len(self.shape)))
        return self.sum


def decide(probabilities: torch.Tensor, labels: Sequence[str], tumor_label: str, rule: str,
           threshold: float | None = None) -> torch.Tensor:
    """Binary tumour mask (bool, on the probabilities' device).

    argmax: the label with the highest probability is the tumour label (nnU-Net's argmax; the pancreas
    and other labels become background). threshold: P(tumour) >= threshold.
    """
    t = labels.index(tumor_label)
    if rule == "argmax":
        return argmax_is(probabilities, t)
    if rule == "threshold":
        return probabilities[t] >= threshold
    raise ValueError(f"unknown decision rule {rule!r}")


def argmax_is(probabilities: torch.Tensor, index: int) -> torch.Tensor:
    """`probabilities.argmax(0) == index`, ties included (argmax takes the first maximum), by comparisons:
    strictly greater than every earlier label, at least as large as every later one. Several times faster
    than a full argmax over a (labels, z, y, x) tensor on the CPU."""
    p = probabilities[index]
    out = torch.ones_like(p, dtype=torch.bool)
    for j in range(probabilities.shape[0]):
        if j != index:
            out &= (p > probabilities[j]) if j < index else (p >= probabilities[j])
    return out


def label_mask(probabilities: torch.Tensor, labels: Sequence[str], label: str) -> torch.Tensor | None:
    """Voxels whose argmax is `label` (e.g. the predicted pancreas), or None if no member predicts it."""
    if label not in labels:
        return None
    return argmax_is(probabilities, labels.index(label))
