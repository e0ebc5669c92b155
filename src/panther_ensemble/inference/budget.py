"""Time budget: which members run, in which order, with or without mirroring.

Without a budget every member runs as the spec says. With `time_budget_s` in the spec:
1. members run in order of decreasing weight, so the ones dropped first are the ones that count least;
2. before the first member, each member's forward pass is timed once on a patch of zeros (after one
   warm-up pass), and its cost is estimated as tiles x folds x mirrored copies x seconds per forward;
3. before every member the plan is redone with what has been measured so far (seconds per tile from the
   tiles already run, time spent outside the networks): if the estimate of what is left exceeds the
   time left, mirroring is dropped for all remaining members first, then the remaining members with the
   least weight, one by one, until it fits. The first member always runs. Every drop is logged.
A member is only started when its estimate fits in the time left, so the budget is exceeded by at most
the misestimate of one member's prediction.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

from contextlib import AbstractContextManager
from typing import Callable

import numpy as np
import torch

from .members import Member
from .plans import compute_new_shape
from .preprocess import nonzero_bbox
from .sliding_window import mirror_combinations, tile_slicers

log = logging.getLogger(__name__)


def tile_count(member: Member, image: np.ndarray, spacing_zyx: Sequence[float]) -> int:
    """Tiles the sliding window will visit for this image (same arithmetic as preprocessing + padding)."""
    plan = member.preprocess_plan
    tf = plan.transpose_forward
    spacing_t = [float(spacing_zyx[i]) for i in tf]
    box = nonzero_bbox(image)
    cropped = [box[i][1] - box[i][0] for i in tf]
    shape = compute_new_shape(cropped, spacing_t, plan.target_spacing(spacing_t))
    patch = member.patch_size
    spatial = shape[len(shape) - len(patch):]
    padded = shape[: len(shape) - len(patch)] + [max(s, p) for s, p in zip(spatial, patch)]
    return len(tile_slicers(padded, patch, member.spec.tile_step_size))


@torch.inference_mode()
def seconds_per_forward(member: Member, device: torch.device,
                        autocast: Callable[[torch.device], AbstractContextManager]) -> float:
    """One forward pass of the member's first fold on a zero patch, after a warm-up pass, where it lives,
    under the runtime's precision (`autocast(device)`)."""
    network = member.networks[0]
    x = torch.zeros((1, 1, *member.patch_size), device=device)
    with autocast(device):
        network(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        network(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return time.perf_counter() - start


@dataclass
class _Cost:
    tiles: int
    forwards_per_tile: int  # folds x mirrored copies
    seconds_per_forward: float


@dataclass
class BudgetPlan:
    order: list[Member]
    budget_s: float | None = None
    started: float = field(default_factory=time.perf_counter)
    costs: dict[str, _Cost] = field(default_factory=dict)
    mirror_copies: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    mirroring_dropped: tuple[str, ...] = ()
    begun: list[str] = field(default_factory=list)
    _overhead_s: list[float] = field(default_factory=list)
    _member_start: float = 0.0
    _first_batch: tuple[int, float] | None = None  # (tiles done, time) when the first batch of tiles ended

    def mirror_axes(self, member: Member):
        return None if member.name in self.mirroring_dropped else member.mirror_axes

    def should_run(self, member: Member) -> bool:
        """Called before each member: re-plan with what was measured so far, then say whether it runs."""
        if self.budget_s is not None:
            self._replan()
        if member.name in self.dropped:
            return False
        self.begun.append(member.name)
        self._member_start = time.perf_counter()
        self._first_batch = None
        return True

    def on_tile(self, member: Member, done: int, total: int) -> None:
        """Called after every batch of tiles (one or several tiles per forward call)."""
        if self.budget_s is None:
            return
        now = time.perf_counter()
        if done < total and self._first_batch is None:
            self._first_batch = (done, now)
        if done == total:
            # measured speed replaces the calibration (the first batch is a warm-up when there are others)
            first_done, since = self._first_batch or (0, self._member_start)
            seconds_per_tile = (now - since) / (total - first_done)
            self.costs[member.name].seconds_per_forward = seconds_per_tile / self._forwards(member)

    def member_done(self, member: Member, seconds_outside_networks: float) -> None:
        self._overhead_s.append(seconds_outside_networks)

    def _forwards(self, member: Member) -> int:
        cost = self.costs[member.name]
        if member.name in self.mirroring_dropped:
            return cost.forwards_per_tile // self.mirror_copies[member.name]
        return cost.forwards_per_tile

    def _estimate(self, members: Sequence[Member]) -> float:
        overhead = float(np.mean(self._overhead_s)) if self._overhead_s else 0.0
        return sum(self.costs[m.name].tiles * self._forwards(m) * self.costs[m.name].seconds_per_forward + overhead
                   for m in members)

    def _replan(self) -> None:
        left = self.budget_s - (time.perf_counter() - self.started)
        todo = [m for m in self.order if m.name not in self.begun and m.name not in self.dropped]
        estimate = self._estimate(todo)
        if estimate <= left:
            return
        mirrored = [m.name for m in todo if m.mirror_axes and m.name not in self.mirroring_dropped]
        if mirrored:
            self.mirroring_dropped = (*self.mirroring_dropped, *mirrored)
            new_estimate = self._estimate(todo)
            log.warning("time budget: %.1f s estimated for %s but %.1f s left; dropping mirroring for %s "
                        "(estimate now %.1f s)", estimate, ", ".join(m.name for m in todo), left,
                        ", ".join(mirrored), new_estimate)
            estimate = new_estimate
        protected = self.order[0].name  # the member with the most weight always runs
        while estimate > left:
            candidates = [m for m in todo if m.name != protected]
            if not candidates:
                break
            victim = min(candidates, key=lambda m: (m.spec.weight, -self.order.index(m)))
            self.dropped.append(victim.name)
            todo.remove(victim)
            new_estimate = self._estimate(todo)
            log.warning("time budget: dropping member %s (weight %g): %.1f s estimated, %.1f s left "
                        "(estimate without it %.1f s)", victim.name, victim.spec.weight, estimate, left,
                        new_estimate)
            estimate = new_estimate


def plan(members: Sequence[Member], budget_s: float | None, image: np.ndarray | None = None,
         spacing_zyx: Sequence[float] | None = None, started: float | None = None,
         autocast: Callable[[torch.device], AbstractContextManager] | None = None) -> BudgetPlan:
    """The running order and, with a budget, the cost model. Without a budget: members grouped by
    preprocessing signature (so shared preprocessing is freed early), all of them, as the spec says."""
    if budget_s is None:
        first_seen: dict[str, int] = {}
        for i, m in enumerate(members):
            first_seen.setdefault(m.preprocess_plan.signature(), i)
        order = sorted(members, key=lambda m: first_seen[m.preprocess_plan.signature()])
        return BudgetPlan(order=list(order))
    order = sorted(members, key=lambda m: -m.spec.weight)  # stable: ties keep the spec's order
    p = BudgetPlan(order=list(order), budget_s=budget_s, started=started or time.perf_counter())
    for m in order:
        copies = len(mirror_combinations(m.mirror_axes))
        p.mirror_copies[m.name] = copies
        p.costs[m.name] = _Cost(tile_count(m, image, spacing_zyx), len(m.networks) * copies,
                                seconds_per_forward(m, m.device, autocast))
        log.info("time budget: member %s: %d tiles x %d forwards, %.3f s per forward (calibration)", m.name,
                 p.costs[m.name].tiles, p.costs[m.name].forwards_per_tile, p.costs[m.name].seconds_per_forward)
    return p
