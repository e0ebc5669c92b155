"""One case through the ensemble, top to bottom.

    image (z, y, x) + Geometry
      -> per preprocessing signature: preprocess (transpose, crop, normalise, resample)   preprocess.py
      -> per member: sliding-window logits, folds averaged                                 sliding_window.py
      -> per member: back to the image grid, softmax                                       preprocess.py/resample.py
      -> weighted sum of probability maps in the common label space                        ensemble.py
      -> decision (argmax or threshold) -> post-processing                                 ensemble.py/postprocess.py
      -> uint8 mask with the input's geometry                                              io/ (by the caller)

`Engine` checks the spec against the model folders when it is made (cheap, before any heavy work), loads
every fold's weights once onto the compute device (`load`), and then predicts any number of cases.
Device, precision, accumulator dtype and out-of-memory decisions are the `Runtime`'s (runtime.py); this
module only sequences the stages. The caches that make a second case cheaper (Gaussian importance maps,
interpolation matrices) belong to the engine object, nothing is cached at module level.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import InputError
from ..io import Geometry
from ..runtime import Placement, Runtime, StageLog, TileProgress, run_with_fallback
from ..spec import EnsembleSpec
from . import budget as budget_mod
from .ensemble import WeightedProbabilities, common_label_space, decide
from .forward_cost import ForwardCost, MemberCost, member_forward_cost
from .members import Member, ModelFolder, check_member_files, load_member
from .postprocess import apply_rules
from .preprocess import Preprocessed, preprocess, to_image_grid
from .sliding_window import gaussian_importance_map, mirror_combinations, predict_logits

log = logging.getLogger(__name__)

# Called with (member name, probabilities (labels, z, y, x) on the image grid, label names) when asked for.
MemberProbabilitiesHook = Callable[[str, torch.Tensor, tuple[str, ...]], None]


@dataclass
class CaseResult:
    mask: np.ndarray  # uint8 (z, y, x), values 0/1
    labels: tuple[str, ...]
    probabilities: torch.Tensor | None  # (labels, z, y, x) float32, only when asked for
    stages: StageLog
    members_used: tuple[str, ...]
    mirroring_dropped: tuple[str, ...] = ()
    members_dropped: tuple[str, ...] = ()


class Engine:
    def __init__(self, spec: EnsembleSpec, weights_root: Path | str, runtime: Runtime):
        self.spec = spec
        self.weights_root = Path(weights_root)
        self.runtime = runtime
        self.device = runtime.device
        self._gaussians: dict[tuple, torch.Tensor] = {}
        self._matrices: dict[tuple, np.ndarray] = {}
        self._forward_costs: dict[str, ForwardCost] = {}
        self.folders: list[ModelFolder] = [check_member_files(m, self.weights_root, spec) for m in spec.members]
        self.labels = common_label_space([f.label_names for f in self.folders])
        tumour_weight = sum(m.weight * m.class_weights.get(spec.tumor_label, 1.0) for m in spec.members)
        if tumour_weight <= 0:
            raise InputError(spec.source, f"members: no member gives weight to {spec.tumor_label!r} "
                                          "(member weight x class weight is 0 for all)")
        self.members: list[Member] = []

    def load(self) -> "Engine":
        """Build every member's fold networks once; keep them on the compute device when they fit."""
        if self.members:
            return self
        for member_spec, folder in zip(self.spec.members, self.folders):
            member = load_member(member_spec, folder, torch.device("cpu"))
            member.networks = [self.runtime.prepare_network(network) for network in member.networks]
            self.runtime.place(member.name, member.to)
            self.members.append(member)
        return self

    def predict(self, image: np.ndarray, geometry: Geometry, keep_probabilities: bool = False,
                member_hook: MemberProbabilitiesHook | None = None) -> CaseResult:
        """Segment one image. If the device runs out of memory anywhere in the case, the case is redone with
        full-size tensors in host memory (tiles still on the device), then entirely on the CPU."""
        started = time.perf_counter()
        self.load()
        stages = StageLog(self.device)
        if not np.any(image):
            log.warning("the image is all zero: writing an empty mask without running the networks")
            return CaseResult(np.zeros(image.shape, np.uint8), self.labels, None, stages, ())
        return run_with_fallback("case", self.runtime.placements(), lambda placement: self._predict_case(
            image, geometry, placement, started, stages, keep_probabilities, member_hook))

    def _predict_case(self, image: np.ndarray, geometry: Geometry, placement: Placement, started: float,
                      stages: StageLog, keep_probabilities: bool, member_hook: MemberProbabilitiesHook | None
                      ) -> CaseResult:
        spacing = geometry.spacing_zyx
        compute, full_size = placement.compute, placement.accumulate
        active = [m for m in self.members if m.spec.weight > 0]
        with stages.stage("plan (time budget calibration)" if self.spec.time_budget_s else "plan"):
            plan = budget_mod.plan(active, self.spec.time_budget_s, image, spacing, started, self.runtime.autocast)
        users = Counter(m.preprocess_plan.signature() for m in plan.order)
        cache: dict[str, Preprocessed] = {}
        accumulator = WeightedProbabilities(self.labels, image.shape, full_size)
        for member in plan.order:
            sig = member.preprocess_plan.signature()
            if plan.should_run(member):
                outside = time.perf_counter()
                if sig not in cache:
                    with stages.stage(f"preprocess [{member.name}]"):
                        cache[sig] = preprocess(image, spacing, member.preprocess_plan, compute, self._matrices)
                pre = cache[sig]
                outside = time.perf_counter() - outside
                with stages.stage(f"predict {member.name}"):
                    logits = self._predict_member(member, pre, plan, placement)
                after = time.perf_counter()
                with stages.stage(f"to image grid {member.name}"):
                    probabilities = to_image_grid(logits, pre, member.preprocess_plan, full_size, self._matrices)
                    del logits
                    tb = pre.transpose_backward
                    probabilities = probabilities.permute(0, *[a + 1 for a in tb])
                    box = [pre.bbox[a] for a in tb]
                with stages.stage(f"accumulate {member.name}"):
                    accumulator.add(member.name, probabilities, member.label_names, box, member.spec.weight,
                                    member.spec.class_weights)
                if member_hook is not None:
                    member_hook(member.name, _paste(probabilities, box, image.shape), member.label_names)
                del probabilities
                plan.member_done(member, outside + time.perf_counter() - after)
            users[sig] -= 1
            if users[sig] == 0:
                cache.pop(sig, None)

        with stages.stage("decide"):
            probabilities = accumulator.probabilities()
            tumor = decide(probabilities, self.labels, self.spec.tumor_label, self.spec.decision.rule,
                           self.spec.decision.threshold).cpu().numpy()
        with stages.stage("postprocess"):
            tumor = apply_rules(tumor, probabilities, self.labels, self.spec, spacing)
        return CaseResult(tumor.astype(np.uint8), self.labels, probabilities if keep_probabilities else None,
                          stages, tuple(accumulator.members), plan.mirroring_dropped, tuple(plan.dropped))

    def forward_cost(self, member: Member) -> ForwardCost:
        """FLOPs and activation memory of one forward call of the member's network (counted once, on the
        meta device)."""
        if member.name not in self._forward_costs:
            self._forward_costs[member.name] = member_forward_cost(member)
        return self._forward_costs[member.name]

    def member_costs(self, image: np.ndarray, spacing_zyx) -> list[MemberCost]:
        """Per member: forward cost, tiles on this image, folds, mirrored copies (as the spec says)."""
        self.load()
        return [MemberCost(m.name, self.forward_cost(m), budget_mod.tile_count(m, image, spacing_zyx),
                           len(m.networks), len(mirror_combinations(m.mirror_axes)))
                for m in self.members if m.spec.weight > 0]

    def _tiles_per_batch(self, member: Member, pre: Preprocessed, plan: "budget_mod.BudgetPlan",
                         placement: Placement) -> int:
        runtime = self.runtime
        spatial = [max(s, p) for s, p in zip(pre.data.shape[1:], member.patch_size)]
        # float32 accumulators for all classes and the weight sum, allocated after this decision
        on_device = placement.accumulate == placement.compute
        reserved = (len(member.label_names) + 1) * 4 * int(np.prod(spatial)) if on_device else 0
        tiles = runtime.tiles_per_batch(
            placement, member.spec.resampling,
            lambda: self.forward_cost(member).activation_bytes_for(runtime.compute_dtype(placement.compute)),
            len(mirror_combinations(plan.mirror_axes(member))), reserved)
        if tiles > 1:
            log.info("member %s: %d tiles per forward call", member.name, tiles)
        return tiles

    def _predict_member(self, member: Member, pre: Preprocessed, plan: "budget_mod.BudgetPlan",
                        placement: Placement) -> torch.Tensor:
        runtime = self.runtime
        dtype = runtime.accumulate_dtype(member.spec.resampling)
        with _resident(member, placement.compute), runtime.autocast(placement.compute):
            tiles_per_batch = self._tiles_per_batch(member, pre, plan, placement)  # weights in place: counted
            progress = TileProgress(f"predict {member.name}")
            return predict_logits(
                pre.data.to(placement.compute), member.networks, len(member.label_names), member.patch_size,
                tile_step_size=member.spec.tile_step_size, mirror_axes=plan.mirror_axes(member),
                accumulate_device=placement.accumulate, accumulate_dtype=dtype,
                batch_mirrors=runtime.batch_mirrors(placement.compute),
                importance_map=self._gaussian(member.patch_size, dtype, placement.accumulate),
                on_tile=lambda done, total: (progress(done, total), plan.on_tile(member, done, total)),
                tiles_per_batch=tiles_per_batch,
            )

    def _gaussian(self, patch_size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        # float16 weights with float16 accumulators (nnU-Net's), float32 otherwise
        weight_dtype = torch.float16 if dtype == torch.float16 else torch.float32
        key = (tuple(patch_size), weight_dtype, str(device))
        if key not in self._gaussians:
            self._gaussians[key] = gaussian_importance_map(tuple(patch_size), weight_dtype, device)
        return self._gaussians[key]


@contextmanager
def _resident(member: Member, device: torch.device) -> Iterator[None]:
    """The member's networks on `device` for the duration (a no-op when they live there already)."""
    home = member.device
    if home == device:
        yield
        return
    member.to(device)
    try:
        yield
    finally:
        member.to(home)


def _paste(probabilities: torch.Tensor, box, shape) -> torch.Tensor:
    full = torch.zeros((probabilities.shape[0], *shape), dtype=torch.float32, device=probabilities.device)
    full[0] = 1
    full[(slice(None), *[slice(a, b) for a, b in box])] = probabilities
    return full
