"""One case through the ensemble, top to bottom.

    image (z, y, x) + Geometry
      -> per preprocessing signature: preprocess (transpose, crop, normalise, resample)   preprocess.py
      -> per member: sliding-window logits, folds averaged                                 sliding_window.py
      -> per member: back to the image grid, softmax                                       preprocess.py/resample.py
      -> weighted sum of probability maps in the common label space                        ensemble.py
      -> decision (argmax or threshold) -> post-processing                                 ensemble.py/postprocess.py
      -> uint8 mask with the input's geometry                                              io.py (by the caller)

`Engine` checks the spec against the model folders when it is made (cheap, before any heavy work), loads
every fold's weights once onto the compute device (`load`), and then predicts any number of cases.
Device placement and out-of-memory fallback are runtime.py's; this module only sequences the stages.
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

from . import budget as budget_mod
from .ensemble import WeightedProbabilities, common_label_space, decide, label_mask
from .errors import InputError
from .io import Geometry
from .members import Member, ModelFolder, check_member_files, load_member
from .postprocess import postprocess
from .preprocess import Preprocessed, preprocess, signature, to_image_grid
from .runtime import (Placement, StageLog, TileProgress, choose_device, fallback_placements, is_out_of_memory,
                      run_with_fallback, use_onednn_convolutions)
from .sliding_window import predict_logits
from .spec import EnsembleSpec

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
    def __init__(self, spec: EnsembleSpec, weights_root: Path | str, device: str = "auto"):
        self.spec = spec
        self.weights_root = Path(weights_root)
        self.device = choose_device(device)
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
            if self.device.type == "cpu":
                for network in member.networks:
                    use_onednn_convolutions(network)
            try:
                member.to(self.device)
            except Exception as exc:  # noqa: BLE001
                if not is_out_of_memory(exc):
                    raise
                member.to(torch.device("cpu"))
                log.warning("member %s: weights do not fit on %s; kept in host memory and moved per case",
                            member.name, self.device)
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
        return run_with_fallback("case", fallback_placements(self.device), lambda placement: self._predict_case(
            image, geometry, placement, started, stages, keep_probabilities, member_hook))

    def _predict_case(self, image: np.ndarray, geometry: Geometry, placement: Placement, started: float,
                      stages: StageLog, keep_probabilities: bool, member_hook: MemberProbabilitiesHook | None
                      ) -> CaseResult:
        spacing = geometry.spacing_zyx
        compute, full_size = placement.compute, placement.accumulate
        active = [m for m in self.members if m.spec.weight > 0]
        plan = budget_mod.plan(active, self.spec.time_budget_s, image, spacing, started)
        users = Counter(signature(m) for m in plan.order)
        cache: dict[str, Preprocessed] = {}
        accumulator = WeightedProbabilities(self.labels, image.shape, full_size)
        for member in plan.order:
            sig = signature(member)
            if plan.should_run(member):
                outside = time.perf_counter()
                if sig not in cache:
                    with stages.stage(f"preprocess [{member.name}]"):
                        cache[sig] = preprocess(image, spacing, member, compute)
                pre = cache[sig]
                outside = time.perf_counter() - outside
                with stages.stage(f"predict {member.name}"):
                    logits = self._predict_member(member, pre, plan, placement)
                after = time.perf_counter()
                with stages.stage(f"to image grid {member.name}"):
                    probabilities = to_image_grid(logits, pre, member, full_size)
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
                           self.spec.decision.threshold)
            rules = self.spec.postprocess
            pancreas = None
            if rules.max_distance_to_pancreas_mm is not None:
                pancreas = label_mask(probabilities, self.labels, self.spec.pancreas_label)
                pancreas = pancreas.cpu().numpy() if pancreas is not None else None
            tumor = tumor.cpu().numpy()
        with stages.stage("postprocess"):
            tumor = postprocess(tumor, spacing, rules, pancreas)
        log.info("case done: %s; tumour %d voxels (%.0f mm^3)", stages.summary(), int(tumor.sum()),
                 float(tumor.sum()) * geometry.voxel_volume_mm3)
        return CaseResult(tumor.astype(np.uint8), self.labels, probabilities if keep_probabilities else None,
                          stages, tuple(accumulator.members), plan.mirroring_dropped, tuple(plan.dropped))

    def _predict_member(self, member: Member, pre: Preprocessed, plan: "budget_mod.BudgetPlan",
                        placement: Placement) -> torch.Tensor:
        faithful = member.spec.resampling == "faithful"
        with _resident(member, placement.compute):
            progress = TileProgress(member.name)
            return predict_logits(
                pre.data.to(placement.compute), member.networks, len(member.label_names), member.patch_size,
                tile_step_size=member.spec.tile_step_size, mirror_axes=plan.mirror_axes(member),
                accumulate_device=placement.accumulate,
                # faithful: nnU-Net's float16 accumulators, fold by fold; fast: one float32 accumulator
                accumulate_dtype=torch.float16 if faithful else torch.float32,
                on_tile=lambda done, total: (progress(done, total), plan.on_tile(member, done, total)),
            )


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
