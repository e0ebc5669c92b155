"""The training cases as the fit keeps them: every member's map cropped to where a candidate could matter.

The crop is the box where ANY candidate of the search could predict tumour, plus the ground-truth tumour,
plus a margin for the largest pancreas-distance gate; inside it only the LIVE voxels (where some candidate
could label tumour or, with a gate, pancreas) keep their probabilities, as float16. docs/FITTING.md
("Exact cropping") proves that no candidate's metrics change; tests/test_fit.py checks it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ...boxes import bounding_box, box_slices
from ...inference.ensemble import common_label_space
from ...errors import InputError
from ...io import IMAGE_SUFFIXES, read_labels, scan_images
from ..metrics import tumour_mask
from .sources import MemberSource, check_member_labels, peek_labels, read_map
from .space import SearchSpace

log = logging.getLogger(__name__)

#: slack on every probability bound of the crop rule (float16 storage, float32 sums, softmax rounding);
#: maps whose labels do not sum to 1 within PROB_SUM_TOL are refused, so the bounds hold with room to spare
CROP_EPS = 0.02
PROB_SUM_TOL = 0.02
#: extra voxels beyond ceil(max_distance / spacing) around the tumour box (see "Exact cropping")
GATE_MARGIN_EXTRA = 2


@dataclass(frozen=True)
class CropRule:
    """Where some candidate could predict tumour: some member has p(tumour) >= tumour_min. With a
    pancreas gate in the search: margin of ceil(margin_mm / spacing) + GATE_MARGIN_EXTRA voxels, and
    pancreas_min (a member's p(pancreas) below it everywhere outside the crop means no candidate predicts
    pancreas there). crop=False keeps the whole image (reference scoring in the tests)."""

    tumour_min: float
    margin_mm: float | None
    pancreas_min: float | None
    crop: bool = True


def crop_rule(space: SearchSpace, members: Sequence[MemberSource], tumor_label: str, pancreas_label: str,
              crop: bool = True) -> CropRule:
    """The crop rule that keeps every candidate of `space` exact."""
    n_labels = len(common_label_space([peek_labels(m, tumor_label) for m in members]))
    # argmax over L labels picks tumour only where its weighted probability is >= 1/L, which needs some
    # member with p(tumour) >= 1/L (proof in docs/FITTING.md); a threshold t needs some member with p >= t.
    # The never-empty fallback is an argmax mask too
    argmax = any(r == "argmax" for r, _ in space.decisions) or space.never_empty
    bound = 1.0 / max(n_labels, 2) if argmax else 1.0
    if space.min_threshold is not None:
        bound = min(bound, space.min_threshold)
    has_pancreas = any(pancreas_label in (m.labels or ()) for m in members)
    gate = space.max_distance if has_pancreas else None
    pmin = (1.0 / max(n_labels, 3) - CROP_EPS) if gate is not None else None
    return CropRule(bound - CROP_EPS, gate, pmin, crop)


@dataclass
class CaseData:
    """One case, cropped. Inside the crop box only the LIVE voxels carry probabilities: those where some
    candidate could label tumour (or pancreas, when a pancreas gate is searched); everywhere else every
    candidate's weighted argmax/threshold says neither, so the decided masks are the live decisions
    scattered into an all-False box."""

    cid: str
    full_shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    box: tuple[tuple[int, int], ...]
    gt: np.ndarray  # bool tumour mask, crop box
    live: np.ndarray  # flat (C-order) indices into the crop box
    probs: list[np.ndarray]  # per member: float16 (labels, n_live)
    outside: object = None  # pancreas outside the crop: None = impossible, "certain", or per-member (L, n) arrays
    sentinel: tuple[int, int, int] | None = None  # crop voxel farther than any gate from every tumour voxel
    gt_volume_mm3: float = 0.0

    @property
    def crop_shape(self) -> tuple[int, ...]:
        return self.gt.shape

    def scatter(self, values) -> np.ndarray:
        """Bool crop-box mask: `values` (n_live, ...) at the live voxels, False elsewhere."""
        out = np.zeros(self.crop_shape, bool)
        out.reshape(-1)[self.live] = np.asarray(values).reshape(-1)
        return out

    def nbytes(self) -> int:
        n = self.gt.nbytes + self.live.nbytes + sum(p.nbytes for p in self.probs)
        if isinstance(self.outside, list):
            n += sum(p.nbytes for p in self.outside)
        return n


@dataclass
class Dataset:
    members: list[MemberSource]
    labels: list[tuple[str, ...]]  # per member
    cases: list[CaseData]
    dropped: dict[str, str]  # case id -> reason
    load_s: float = 0.0
    peak_case_bytes: int = 0


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------
def load_cases(members: Sequence[MemberSource], gt_dir: Path, rule: CropRule, tumor_label: str = "tumor",
               pancreas_label: str = "pancreas", case_ids: Sequence[str] | None = None) -> Dataset:
    """Read every member's map of every common case once, crop it, keep the crops as float16."""
    t0 = time.perf_counter()
    gt_files = scan_images(gt_dir)
    if not gt_files:
        raise InputError(gt_dir, f"no ground-truth images ({', '.join(IMAGE_SUFFIXES)})")
    common, dropped = _common_cases(members, gt_files, gt_dir, case_ids)
    cases: list[CaseData] = []
    labels: list[tuple[str, ...] | None] = [m.labels for m in members]
    peak = 0
    for n_done, cid in enumerate(common):
        gt_arr, geometry = read_labels(gt_files[cid])
        spacing = tuple(float(s) for s in geometry.spacing_zyx)
        gt = tumour_mask(gt_arr, gt_files[cid])
        del gt_arr
        maps = _read_maps(members, cid, gt, spacing, gt_files[cid], labels, tumor_label)
        peak = max(peak, sum(p.nbytes for p in maps))
        cases.append(_crop_case(cid, gt, spacing, maps, labels, rule, tumor_label, pancreas_label))
        del maps
        if (n_done + 1) % 10 == 0:
            log.info("read %d/%d cases (%.0f s)", n_done + 1, len(common), time.perf_counter() - t0)
    ds = Dataset(list(members), [tuple(x) for x in labels], cases, dropped, time.perf_counter() - t0, peak)
    full = sum(math.prod(c.full_shape) for c in cases)
    crop = sum(math.prod(c.crop_shape) for c in cases)
    live = sum(c.live.size for c in cases)
    log.info("%d cases read in %.1f s; crop boxes hold %.1f%% of the voxels, live voxels %.2f%%; %.1f MiB",
             len(cases), ds.load_s, 100.0 * crop / full, 100.0 * live / full, sum(c.nbytes() for c in cases) / 2**20)
    return ds


def _common_cases(members, gt_files: dict, gt_dir: Path, case_ids) -> tuple[list[str], dict[str, str]]:
    """The sorted ids in the ground truth and in every member (limited to `case_ids`), and the dropped ones
    with their reasons."""
    dropped: dict[str, str] = {}
    universe = set(gt_files).union(*(m.files for m in members))
    common = set(gt_files).intersection(*(m.files for m in members))
    for cid in sorted(universe - common):
        missing = ([] if cid in gt_files else ["ground truth"]) + [m.name for m in members if cid not in m.files]
        dropped[cid] = "missing in " + ", ".join(missing)
    if case_ids is not None:
        common &= set(case_ids)
    if not common:
        raise InputError("--oof", f"no case is in the ground truth ({len(gt_files)} cases in {gt_dir}) and in every "
                                  "member (" + ", ".join(f"{m.name}: {len(m.files)}" for m in members) + ")")
    if dropped:
        reasons: dict[str, int] = {}
        for r in dropped.values():
            reasons[r] = reasons.get(r, 0) + 1
        log.warning("%d case(s) dropped: %s", len(dropped), "; ".join(f"{n} {r}" for r, n in sorted(reasons.items())))
    return sorted(common), dropped


def _read_maps(members, cid: str, gt: np.ndarray, spacing, gt_path: Path, labels: list, tumor_label: str):
    """Every member's map of one case, as stored, checked against the ground truth (shape, spacing) and
    for being probabilities; records each member's labels in `labels`."""
    maps = []
    for k, m in enumerate(members):
        probs, labs, sp = read_map(m, cid)
        check_member_labels(m, labs, tumor_label)
        labels[k] = labs
        if probs.shape[1:] != gt.shape:
            raise InputError(m.files[cid], f"probability map of shape {probs.shape[1:]} (z, y, x) does not match "
                                           f"ground truth {gt_path} shape {gt.shape}")
        if sp is not None and not np.allclose(sp, spacing, rtol=0, atol=1e-3):
            raise InputError(m.files[cid], f"spacing {tuple(round(s, 5) for s in sp)} (z, y, x) differs from "
                                           f"ground truth {gt_path} spacing {tuple(round(s, 5) for s in spacing)}")
        dev = float(np.abs(probs.sum(axis=0, dtype=np.float32) - 1.0).max())
        if not dev <= PROB_SUM_TOL:
            raise InputError(m.files[cid], f"probabilities do not sum to 1 over the labels (off by up to {dev:.3g}; "
                                           "softmax maps expected)")
        maps.append(probs)  # as stored (float32 from nnU-Net); only the live voxels become float16
    return maps


# --------------------------------------------------------------------------------------------------
# cropping one case
# --------------------------------------------------------------------------------------------------
def _crop_case(cid: str, gt: np.ndarray, spacing, maps: list[np.ndarray], labels, rule: CropRule,
               tumor_label: str, pancreas_label: str) -> CaseData:
    shape = gt.shape
    gt_volume = float(np.count_nonzero(gt)) * float(np.prod(spacing))
    if not rule.crop:  # reference: every voxel of the image is live
        live = np.arange(gt.size)
        return CaseData(cid, shape, spacing, tuple((0, n) for n in shape), gt.copy(), live,
                        [p.reshape(p.shape[0], -1).astype(np.float16) for p in maps], None, None, gt_volume)
    tumour_possible = np.zeros(shape, bool)
    for p, labs in zip(maps, labels):
        tumour_possible |= p[labs.index(tumor_label)] >= rule.tumour_min
    margin = [0, 0, 0]
    if rule.margin_mm is not None:
        margin = [int(math.ceil(rule.margin_mm / s)) + GATE_MARGIN_EXTRA for s in spacing]
    box = bounding_box(tumour_possible | gt, margin)
    if box is None:  # no candidate predicts anything, no tumour: one (dead) voxel is enough
        return CaseData(cid, shape, spacing, ((0, 1),) * 3, np.zeros((1, 1, 1), bool), np.zeros(0, np.int64),
                        [np.zeros((p.shape[0], 0), np.float16) for p in maps], None, None, gt_volume)
    sl = box_slices(box)
    live_mask = tumour_possible[sl]
    if rule.margin_mm is not None and rule.pancreas_min is not None:
        for p, labs in zip(maps, labels):
            if pancreas_label in labs:
                live_mask |= p[(labs.index(pancreas_label),) + sl] >= rule.pancreas_min
    live = np.flatnonzero(live_mask)
    del tumour_possible, live_mask
    probs = [p[(slice(None),) + sl].reshape(p.shape[0], -1)[:, live].astype(np.float16) for p in maps]
    outside, sentinel = None, None
    has_outside = any(a > 0 or b < n for (a, b), n in zip(box, shape))
    if rule.margin_mm is not None and rule.pancreas_min is not None and has_outside:
        outside = _pancreas_outside(maps, labels, sl, rule.pancreas_min, pancreas_label)
        if outside is not None:
            sentinel = _sentinel(box, shape)
    return CaseData(cid, shape, spacing, tuple(box), np.ascontiguousarray(gt[sl]), live, probs, outside, sentinel,
                    gt_volume)


def _pancreas_outside(maps, labels, inside: tuple[slice, ...], pmin: float, pancreas_label: str):
    """What the engine's pancreas mask can be outside the crop: None (no candidate predicts pancreas there),
    "certain" (some voxel is pancreas for every candidate), or the probabilities of the voxels where some
    candidate might (per member: (labels, n) float16), to be decided per weighting."""
    with_p = [k for k, labs in enumerate(labels) if pancreas_label in labs]
    if not with_p:
        return None
    possible = np.zeros(maps[0].shape[1:], bool)
    for k in with_p:
        possible |= maps[k][labels[k].index(pancreas_label)] >= pmin
    possible[inside] = False
    if not possible.any():
        return None
    idx = np.nonzero(possible)
    min_p = np.min([maps[k][labels[k].index(pancreas_label)][idx] for k in with_p], axis=0).astype(np.float32)
    max_other = np.zeros_like(min_p)
    for k, labs in enumerate(labels):
        for c, lab in enumerate(labs):
            if lab != pancreas_label:
                max_other = np.maximum(max_other, maps[k][c][idx].astype(np.float32))
    # every weighted P(c != pancreas) <= max_other < min_p <= P(pancreas): pancreas for every weighting
    if np.any(min_p > max_other + CROP_EPS):
        return "certain"
    return [p[(slice(None),) + idx].astype(np.float16) for p in maps]


def _sentinel(box, shape) -> tuple[int, int, int] | None:
    """A crop voxel on a face of the crop that is not the image border: its distance to any voxel of the
    tumour box is >= (ceil(max_d / s) + 2) * s > max_d, and it lies outside postprocess's own distance box."""
    for axis, ((a, b), n) in enumerate(zip(box, shape)):
        if a > 0:
            return tuple(0 for _ in box)
        if b < n:
            idx = [0, 0, 0]
            idx[axis] = b - a - 1
            return tuple(idx)
    return None
