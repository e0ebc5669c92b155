"""`panther-ensemble fit`: fit member weights, decision rule and post-processing on out-of-fold maps.

Input: a base spec (its members are the candidates), every member's out-of-fold probability maps of the
training cases, and the ground truth. Output: a fitted spec, a report (held-out estimate from nested
cross-validation, next to the in-sample score, the single members and the equal-weight ensemble) and a
trade-off figure. docs/FITTING.md describes the search space, the objectives and the numbers.

Every candidate is scored exactly as the engine would decide on it: `WeightedProbabilities` ->
`decide` -> (`label_mask` for the pancreas) -> `postprocess` -> `case_metrics`, the same functions the
engine and the evaluator call, run on float16 crops of each case. The crop is the box where ANY candidate
of the search could predict tumour, plus the ground-truth tumour, plus a margin for the largest
pancreas-distance gate; `docs/FITTING.md` ("Exact cropping") proves that no candidate's metrics change
and `tests/test_fit.py` checks it against uncropped scoring.

Python use::

    members = [find_member("DA5", Path("oof/DA5")), find_member("default", Path("nnUNet_results/.../model"))]
    space = SearchSpace.build(len(members))                      # the defaults of the command line
    data = load_cases(members, Path("labelsTr"), crop_rule(space, members, "tumor", "pancreas"))
    ev = Evaluator(data, "tumor", "pancreas")
    result = nested_cv(ev, space, objective="mean-rank", folds=5)
    result.heldout_agg, result.final.best.cand                  # held-out estimate, the final choice
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import logging
import math
import re
import resource
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .errors import InputError

HELP = ("fit member weights, decision rule/threshold and post-processing of an ensemble spec on out-of-fold "
        "probability maps (nested cross-validated)")

log = logging.getLogger(__name__)

#: per-case metric columns stored for every (candidate, case)
CASE_KEYS = ("dice", "surface_dice_5mm", "hd95", "masd", "pred_volume_mm3", "gt_volume_mm3")
AGGREGATE_KEYS = ("dice", "surface_dice_5mm", "hd95", "masd", "volume_rmse_mm3")
#: default weights of the `weighted` objective (see `weighted_score`); keys = AGGREGATE_KEYS
DEFAULT_METRIC_WEIGHTS = {"dice": 1.0, "surface_dice_5mm": 1.0, "hd95": 1.0, "masd": 1.0, "volume_rmse_mm3": 1.0}
METRIC_ALIASES = {"dice": "dice", "surface_dice": "surface_dice_5mm", "surface_dice_5mm": "surface_dice_5mm",
                  "sdice": "surface_dice_5mm", "hd95": "hd95", "masd": "masd", "volume_rmse": "volume_rmse_mm3",
                  "volume_rmse_mm3": "volume_rmse_mm3", "rmse": "volume_rmse_mm3"}
OBJECTIVES = ("mean-rank", "weighted")

#: slack on every probability bound of the crop rule (float16 storage, float32 sums, softmax rounding);
#: maps whose labels do not sum to 1 within PROB_SUM_TOL are refused, so the bounds hold with room to spare
CROP_EPS = 0.02
PROB_SUM_TOL = 0.02
#: extra voxels beyond ceil(max_distance / spacing) around the tumour box (see "Exact cropping")
GATE_MARGIN_EXTRA = 2

DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
DEFAULT_MIN_VOLUMES = (None, 100.0, 500.0, 2000.0)
DEFAULT_KEEP_LARGEST = (None, 1, 2)
DEFAULT_MAX_DISTANCES = (None, 5.0, 20.0)
DEFAULT_TOP_K = 5
DEFAULT_FOLDS = 5

PP_OFF = (None, None, None)


# ==================================================================================================
# search space
# ==================================================================================================
@dataclass(frozen=True)
class Candidate:
    """One ensemble configuration. weights: per member (base-spec order), normalised to sum 1.
    factors: per-member class weight on the tumour label (None = all 1). pp: (min_volume_mm3,
    keep_largest, max_distance_to_pancreas_mm), None = off."""

    weights: tuple[float, ...]
    factors: tuple[float, ...] | None = None
    rule: str = "argmax"
    threshold: float | None = None
    pp: tuple = PP_OFF

    @property
    def wd(self) -> tuple:  # what determines the weighted probabilities
        return (self.weights, self.factors)

    @property
    def dec(self) -> tuple:
        return (self.rule, self.threshold)

    def label(self, names: Sequence[str] | None = None) -> str:
        names = names or [f"m{i}" for i in range(len(self.weights))]
        w = " ".join(f"{n}={x:.3g}" for n, x in zip(names, self.weights) if x > 0)
        if self.factors is not None:
            w += " | tumour factors " + " ".join(f"{n}={k:g}" for n, k, x in zip(names, self.factors, self.weights)
                                                 if x > 0 and k != 1)
        d = "argmax" if self.rule == "argmax" else f"P(tumour)>={self.threshold:g}"
        return f"[{w}] {d} pp={pp_label(self.pp)}"


def pp_label(pp: tuple) -> str:
    if pp == PP_OFF:
        return "off"
    parts = []
    if pp[0] is not None:
        parts.append(f"min {pp[0]:g} mm3")
    if pp[1] is not None:
        parts.append(f"keep {pp[1]}")
    if pp[2] is not None:
        parts.append(f"<= {pp[2]:g} mm from pancreas")
    return ", ".join(parts)


def simplex_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """All weight vectors of n members with entries k*step (k integer) summing to 1."""
    s = round(1.0 / step)
    if s < 1 or abs(s * step - 1.0) > 1e-9:
        raise InputError("--weight-step", f"must divide 1 evenly (e.g. 0.1, 0.125, 0.2, 0.25), got {step:g}")
    out = []

    def rec(prefix: list[int], left: int, slots: int):
        if slots == 1:
            out.append(tuple(x / s for x in prefix + [left]))
            return
        for k in range(left, -1, -1):
            rec(prefix + [k], left - k, slots - 1)

    rec([], s, n)
    return out


@dataclass
class SearchSpace:
    """What the fit tries. Stage A: every weighting x every decision, no post-processing. Stage B: the
    top_k (weighting, decision) pairs of stage A (on the cases being fitted) x every post-processing
    setting. top_k = 0: the full cross product."""

    weightings: list[tuple[tuple[float, ...], tuple[float, ...] | None]]
    decisions: list[tuple[str, float | None]]
    pp_grid: list[tuple]
    top_k: int = DEFAULT_TOP_K

    @classmethod
    def build(cls, n_members: int, *, weight_step: float | str = "auto", dirichlet: int | None = None,
              seed: int = 0, tumour_factors: Sequence[float] = (), thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
              argmax: bool = True, min_volumes: Sequence = DEFAULT_MIN_VOLUMES,
              keep_largest: Sequence = DEFAULT_KEEP_LARGEST, max_distances: Sequence = DEFAULT_MAX_DISTANCES,
              top_k: int = DEFAULT_TOP_K, has_pancreas: bool = True) -> "SearchSpace":
        if weight_step == "auto":
            weight_step = 0.1 if n_members <= 3 else (0.2 if n_members <= 5 else "none")
        if weight_step == "none":
            weight_step = None
        if dirichlet is None:
            dirichlet = 0 if n_members <= 5 else 150
        weights: list[tuple[float, ...]] = []
        if weight_step is not None:
            weights += simplex_grid(n_members, weight_step)
        vertices = [tuple(1.0 if j == i else 0.0 for j in range(n_members)) for i in range(n_members)]
        equal = equal_candidate(n_members).weights
        for w in vertices + [equal]:
            if w not in weights:
                weights.append(w)
        if dirichlet:
            rng = np.random.default_rng(seed)
            for _ in range(dirichlet):
                w = tuple(round(float(x), 3) for x in rng.dirichlet(np.ones(n_members)))
                if w not in weights:
                    weights.append(w)
        # the engine normalises by the weight sum, so weights need not sum to 1 exactly; they are scored as
        # they will be written (at most 6 decimals)
        weights = [tuple(round(x, 6) for x in w) for w in weights]
        weightings: list = [(w, None) for w in weights]
        for f in tumour_factors:
            if not (f > 0 and math.isfinite(f)):
                raise InputError("--tumour-factors", f"factors must be positive numbers, got {f!r}")
        for w in weights:
            active = [i for i, x in enumerate(w) if x > 0]
            if len(active) < 2:
                continue  # one active member: a tumour factor cancels out
            for i in active:
                for f in tumour_factors:
                    if f == 1:
                        continue
                    k = tuple(f if j == i else 1.0 for j in range(n_members))
                    weightings.append((w, k))
        decisions: list = ([("argmax", None)] if argmax else [])
        for t in thresholds:
            if not 0 < t < 1:
                raise InputError("--thresholds", f"thresholds must be in (0, 1), got {t:g}")
            decisions.append(("threshold", float(t)))
        if not decisions:
            raise InputError("--thresholds", "no decision rule left (argmax off and no threshold)")
        for v in min_volumes:
            if v is not None and v < 0:
                raise InputError("--min-volumes", f"must be >= 0 or off, got {v:g}")
        for k in keep_largest:
            if k is not None and k < 1:
                raise InputError("--keep-largest", f"must be >= 1 or off, got {k}")
        for d in max_distances:
            if d is not None and d < 0:
                raise InputError("--max-distances", f"must be >= 0 or off, got {d:g}")
        if not has_pancreas and any(d is not None for d in max_distances):
            log.warning("no member predicts the pancreas label: pancreas-distance gating left out of the search")
            max_distances = [None]
        pp_grid = [PP_OFF] + [p for p in itertools.product(_uniq(min_volumes), _uniq(keep_largest),
                                                           _uniq(max_distances)) if p != PP_OFF]
        return cls(weightings, decisions, pp_grid, top_k)

    @property
    def stage_a(self) -> list[Candidate]:
        return [Candidate(w, k, r, t) for (w, k) in self.weightings for (r, t) in self.decisions]

    @property
    def max_distance(self) -> float | None:
        ds = [p[2] for p in self.pp_grid if p[2] is not None]
        return max(ds) if ds else None

    @property
    def min_threshold(self) -> float | None:
        ts = [t for r, t in self.decisions if r == "threshold"]
        return min(ts) if ts else None

    def n_candidates(self) -> int:
        a = len(self.weightings) * len(self.decisions)
        k = a if self.top_k <= 0 else min(self.top_k, a)
        return a + k * (len(self.pp_grid) - 1)

    def describe(self) -> dict:
        axes = {k: _uniq([p[i] for p in self.pp_grid])
                for i, k in enumerate(("min_volume_mm3", "keep_largest", "max_distance_to_pancreas_mm"))}
        return {"weightings": len(self.weightings),
                "weightings_with_tumour_factors": sum(k is not None for _, k in self.weightings),
                "decisions": [_dec_label(d) for d in self.decisions],
                "postprocess_axes": {k: ["off" if v is None else v for v in vs] for k, vs in axes.items()},
                "postprocess_settings": len(self.pp_grid), "top_k": self.top_k,
                "candidates_per_search": self.n_candidates()}


def _uniq(xs: Iterable) -> list:
    out = []
    for x in xs:
        if x not in out:
            out.append(x)
    return out or [None]


def _dec_label(d: tuple) -> str:
    return "argmax" if d[0] == "argmax" else f"threshold {d[1]:g}"


# ==================================================================================================
# reading out-of-fold maps
# ==================================================================================================
@dataclass
class MemberSource:
    name: str
    path: Path
    kind: str  # "npz" (our --save-probabilities format) or "nnunet" (model folder, fold_*/validation)
    files: dict[str, Path]
    labels: tuple[str, ...] | None = None  # nnunet: from dataset.json; npz: from the files (checked per file)


def find_member(name: str, path: Path) -> MemberSource:
    """Recognise the folder's layout and list its cases (reads no map)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, f"member {name}: out-of-fold folder does not exist")
    fold_dirs = sorted(p for p in path.glob("fold_*") if p.is_dir())
    if (path / "dataset.json").is_file() or fold_dirs:
        files: dict[str, Path] = {}
        used = []
        for fd in fold_dirs:
            if not re.fullmatch(r"fold_\d+", fd.name):
                log.warning("member %s: %s skipped (not a cross-validation fold, so not out-of-fold)", name, fd)
                continue
            val = fd / "validation"
            found = sorted(val.glob("*.npz")) if val.is_dir() else []
            if found:
                used.append(fd.name)
            for f in found:
                if f.stem in files:
                    raise InputError(f, f"member {name}: case {f.stem} also in {files[f.stem]} (a case may be "
                                        "validated in one fold only)")
                files[f.stem] = f
        if not files:
            raise InputError(path, f"member {name}: nnU-Net model folder without fold_*/validation/*.npz "
                                   "(train with --npz, or run nnUNetv2_train --val --npz)")
        labels = _dataset_labels(path / "dataset.json", name)
        log.info("member %s: nnU-Net model folder %s, %d out-of-fold maps from %s", name, path, len(files),
                 ", ".join(used))
        return MemberSource(name, path, "nnunet", files, labels)
    files = {f.stem: f for f in sorted(path.glob("*.npz")) if not f.name.startswith(".")}
    if not files:
        raise InputError(path, f"member {name}: no out-of-fold probability maps (expected <case>.npz files from "
                               "`predict --save-probabilities`, or an nnU-Net model folder with "
                               "fold_*/validation/*.npz)")
    log.info("member %s: %d probability maps in %s", name, len(files), path)
    return MemberSource(name, path, "npz", files, None)


def _dataset_labels(path: Path, name: str) -> tuple[str, ...]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, f"member {name}: nnU-Net model folder has no dataset.json (label names)") from None
    except ValueError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    labels = raw.get("labels") if isinstance(raw, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise InputError(path, "no \"labels\" mapping name -> index")
    if any(not isinstance(v, int) or isinstance(v, bool) for v in labels.values()):
        raise InputError(path, "labels must map names to single integers (region-based training is not "
                               "supported: its maps are not softmax probabilities)")
    order = sorted(labels.items(), key=lambda kv: kv[1])
    if [v for _, v in order] != list(range(len(order))):
        raise InputError(path, f"label indices must be 0..{len(order) - 1}, got {sorted(labels.values())}")
    return tuple(k for k, _ in order)


def read_map(source: MemberSource, cid: str) -> tuple[np.ndarray, tuple[str, ...], tuple[float, ...] | None]:
    """(probabilities (labels, z, y, x) as stored, label names, spacing or None) of one case."""
    path = source.files[cid]
    try:
        with np.load(path, allow_pickle=False) as z:
            if "probabilities" not in z:
                raise InputError(path, f"no 'probabilities' array in the npz (keys: {', '.join(z.files)})")
            probs = z["probabilities"]
            labels = tuple(str(x) for x in z["labels"]) if "labels" in z else None
            spacing = tuple(float(x) for x in z["spacing"]) if "spacing" in z else None
    except (OSError, ValueError, EOFError) as exc:  # corrupt or truncated file
        raise InputError(path, f"cannot read npz ({exc})") from None
    if source.kind == "nnunet":
        labels = source.labels
    elif labels is None:
        raise InputError(path, "no 'labels' array in the npz (written by `predict --save-probabilities`?)")
    elif source.labels is None:
        source.labels = labels
    elif labels != source.labels:
        raise InputError(path, f"label names {list(labels)} differ from this member's other maps "
                               f"{list(source.labels)}")
    if probs.ndim != 4 or probs.shape[0] != len(labels):
        raise InputError(path, f"probabilities of shape {probs.shape} do not fit {len(labels)} labels "
                               f"{list(labels)} (expected (labels, z, y, x))")
    if not np.issubdtype(probs.dtype, np.floating):
        raise InputError(path, f"probabilities must be floating point, got {probs.dtype}")
    return probs, labels, spacing


def peek_labels(source: MemberSource, tumor_label: str) -> tuple[str, ...]:
    """The member's label names without reading a probability map (npz members are read lazily)."""
    if source.labels is None:
        path = next(iter(source.files.values()))
        try:
            with np.load(path, allow_pickle=False) as z:
                if "labels" not in z:
                    raise InputError(path, "no 'labels' array in the npz (written by `predict --save-probabilities`?)")
                source.labels = tuple(str(x) for x in z["labels"])
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(path, f"cannot read npz ({exc})") from None
    _check_member_labels(source, source.labels, tumor_label)
    return source.labels


# ==================================================================================================
# cases: crops of every member's map
# ==================================================================================================
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
    from .ensemble import common_label_space

    n_labels = len(common_label_space([peek_labels(m, tumor_label) for m in members]))
    # argmax over L labels picks tumour only where its weighted probability is >= 1/L, which needs some
    # member with p(tumour) >= 1/L (proof in docs/FITTING.md); a threshold t needs some member with p >= t
    bound = 1.0 / max(n_labels, 2) if any(r == "argmax" for r, _ in space.decisions) else 1.0
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


def _bbox(mask: np.ndarray) -> list[tuple[int, int]] | None:
    if not mask.any():
        return None
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        nz = np.flatnonzero(mask.any(axis=other))
        out.append((int(nz[0]), int(nz[-1]) + 1))
    return out


def load_cases(members: Sequence[MemberSource], gt_dir: Path, rule: CropRule, tumor_label: str = "tumor",
               pancreas_label: str = "pancreas", case_ids: Sequence[str] | None = None) -> Dataset:
    """Read every member's map of every common case once, crop it, keep the crops as float16."""
    from .evaluate import read_image, scan_folder, tumour_mask

    t0 = time.perf_counter()
    gt_files = scan_folder(gt_dir)
    if not gt_files:
        raise InputError(gt_dir, "no ground-truth images (.mha, .nii.gz, .nii, .nrrd)")
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

    cases: list[CaseData] = []
    labels: list[tuple[str, ...] | None] = [m.labels for m in members]
    peak = 0
    for n_done, cid in enumerate(sorted(common)):
        img, gt_arr = read_image(gt_files[cid])
        spacing = tuple(float(s) for s in img.GetSpacing())[::-1]
        gt = tumour_mask(gt_arr, gt_files[cid])
        del gt_arr
        maps = []
        for k, m in enumerate(members):
            probs, labs, sp = read_map(m, cid)
            _check_member_labels(m, labs, tumor_label)
            labels[k] = labs
            if probs.shape[1:] != gt.shape:
                raise InputError(m.files[cid], f"probability map of shape {probs.shape[1:]} (z, y, x) does not match "
                                               f"ground truth {gt_files[cid]} shape {gt.shape}")
            if sp is not None and not np.allclose(sp, spacing, rtol=0, atol=1e-3):
                raise InputError(m.files[cid], f"spacing {tuple(round(s, 5) for s in sp)} (z, y, x) differs from "
                                               f"ground truth {gt_files[cid]} spacing {tuple(round(s, 5) for s in spacing)}")
            dev = float(np.abs(probs.sum(axis=0, dtype=np.float32) - 1.0).max())
            if not dev <= PROB_SUM_TOL:
                raise InputError(m.files[cid], f"probabilities do not sum to 1 over the labels (off by up to {dev:.3g}; "
                                               "softmax maps expected)")
            maps.append(probs)  # as stored (float32 from nnU-Net); only the live voxels become float16
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


def _check_member_labels(m: MemberSource, labels: tuple[str, ...], tumor_label: str) -> None:
    where = m.path
    if tumor_label not in labels:
        raise InputError(where, f"member {m.name}: labels {list(labels)} have no {tumor_label!r} (the spec's "
                                "tumor_label)")
    if "background" not in labels:
        raise InputError(where, f"member {m.name}: labels {list(labels)} have no 'background'")
    if len(set(labels)) != len(labels):
        raise InputError(where, f"member {m.name}: duplicate label names {list(labels)}")


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
    core = _bbox(tumour_possible | gt)
    if core is None:  # no candidate predicts anything, no tumour: one (dead) voxel is enough
        return CaseData(cid, shape, spacing, ((0, 1),) * 3, np.zeros((1, 1, 1), bool), np.zeros(0, np.int64),
                        [np.zeros((p.shape[0], 0), np.float16) for p in maps], None, None, gt_volume)
    margin = [0, 0, 0]
    if rule.margin_mm is not None:
        margin = [int(math.ceil(rule.margin_mm / s)) + GATE_MARGIN_EXTRA for s in spacing]
    box = [(max(lo - m, 0), min(hi + m, n)) for (lo, hi), m, n in zip(core, margin, shape)]
    sl = tuple(slice(a, b) for a, b in box)
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
        outside = _pancreas_outside(maps, labels, sl, rule.pancreas_min, tumor_label, pancreas_label)
        if outside is not None:
            sentinel = _sentinel(box, shape)
    return CaseData(cid, shape, spacing, tuple(box), np.ascontiguousarray(gt[sl]), live, probs, outside, sentinel,
                    gt_volume)


def _pancreas_outside(maps, labels, inside: tuple[slice, ...], pmin: float, tumor_label: str, pancreas_label: str):
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


# ==================================================================================================
# scoring: the engine's decision and post-processing on the crops
# ==================================================================================================
@contextlib.contextmanager
def _quiet_postprocess():
    lg = logging.getLogger("panther_ensemble.postprocess")
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


@contextlib.contextmanager
def _memoised_surface_tables():
    """surface-distance rebuilds its 256-entry surfel-area table from the spacing on every call (~10 ms, more
    than the distances of a small tumour). The table is a pure function of the spacing: memoise it while
    the fit runs (read-only arrays; the library only indexes them), restore the original afterwards."""
    import surface_distance.lookup_tables as lt

    original = lt.create_table_neighbour_code_to_surface_area
    if getattr(original, "_panther_memo", False):
        yield
        return
    cache: dict = {}

    def memo(spacing_mm):
        key = tuple(float(s) for s in spacing_mm)
        table = cache.get(key)
        if table is None:
            table = original(spacing_mm)
            table.setflags(write=False)
            cache[key] = table
        return table

    memo._panther_memo = True
    lt.create_table_neighbour_code_to_surface_area = memo
    try:
        yield
    finally:
        lt.create_table_neighbour_code_to_surface_area = original


class Evaluator:
    """Per-case metrics of candidates, computed lazily and cached: metrics[candidate] is (cases, 6) with
    CASE_KEYS columns, NaN where not computed yet. Identical output masks of a case share one metric call."""

    def __init__(self, data: Dataset, tumor_label: str = "tumor", pancreas_label: str = "pancreas",
                 official: bool = False):
        import torch

        self.torch = torch
        self.data = data
        self.tumor_label = tumor_label
        self.pancreas_label = pancreas_label
        self.official = official
        self.metrics: dict[Candidate, np.ndarray] = {}
        self._mask_metrics: dict[tuple[int, bytes], tuple] = {}
        self._outside: dict[tuple[int, tuple], bool] = {}
        self.stats = {"weightings": 0, "decisions": 0, "postprocess": 0, "metric_calls": 0, "metric_reused": 0}
        self.seconds = {"probabilities": 0.0, "decide": 0.0, "postprocess": 0.0, "metrics": 0.0}

    @property
    def n(self) -> int:
        return len(self.data.cases)

    def rows(self, cand: Candidate) -> np.ndarray:
        arr = self.metrics.get(cand)
        if arr is None:
            arr = self.metrics[cand] = np.full((self.n, len(CASE_KEYS)), np.nan)
        return arr

    def ensure(self, candidates: Sequence[Candidate], case_idx: Sequence[int]) -> None:
        """Compute every missing (candidate, case) entry."""
        for c in candidates:
            self.rows(c)
        with _quiet_postprocess(), _memoised_surface_tables():
            for ci in case_idx:
                groups: dict[tuple, dict[tuple, list[Candidate]]] = {}
                for c in candidates:
                    if np.isnan(self.metrics[c][ci, 0]):
                        groups.setdefault(c.wd, {}).setdefault(c.dec, []).append(c)
                for wd, by_dec in groups.items():
                    self._score_weighting(ci, wd, by_dec)

    def _score_weighting(self, ci: int, wd: tuple, by_dec: dict) -> None:
        from .ensemble import decide, label_mask

        case = self.data.cases[ci]
        t = time.perf_counter()
        P, labels = self.probabilities(case, wd)
        self.seconds["probabilities"] += time.perf_counter() - t
        self.stats["weightings"] += 1
        pancreas_cache: list = []

        def pancreas():
            if not pancreas_cache:
                pm = label_mask(P, labels, self.pancreas_label)
                if pm is not None:
                    pm = case.scatter(pm.numpy())
                    if not pm.any() and case.sentinel is not None and self._pancreas_outside(ci, wd):
                        pm[case.sentinel] = True  # the engine's mask is non-empty, but nowhere near a tumour
                pancreas_cache.append(pm)
            return pancreas_cache[0]

        for (rule, threshold), cands in by_dec.items():
            t = time.perf_counter()
            mask = case.scatter(decide(P, labels, self.tumor_label, rule, threshold).numpy())
            self.seconds["decide"] += time.perf_counter() - t
            self.stats["decisions"] += 1
            gated: dict = {}
            for c in cands:
                out = self._postprocess(mask, case, c.pp, gated, pancreas)
                self.metrics[c][ci] = self._case_metrics(ci, out)

    def probabilities(self, case: CaseData, wd: tuple):
        """The engine's weighted probabilities at the live voxels (members with weight 0 left out, as in the
        fitted spec): a (labels, n_live, 1, 1) tensor in channels-last memory (argmax over labels ~6x faster
        than over a labels-first tensor; the same values). Every operation of the engine's weighting and
        decision is per voxel, so a voxel gets the same numbers here as on the whole image."""
        from .ensemble import WeightedProbabilities, common_label_space

        torch = self.torch
        weights, factors = wd
        active = [k for k, w in enumerate(weights) if w > 0]
        labels = common_label_space([self.data.labels[k] for k in active])
        n = case.live.size
        shape = (n, 1, 1)
        acc = WeightedProbabilities(labels, shape, torch.device("cpu"))
        box = [(0, s) for s in shape]
        for k in active:
            cw = {self.tumor_label: factors[k]} if factors is not None and factors[k] != 1 else None
            # float16 crop -> float32 tensor: the same numbers (and bit-identical sums: tested), but torch's
            # mixed-dtype add_ on CPU is ~40x slower than a float32 one
            p = torch.from_numpy(case.probs[k]).float().reshape(case.probs[k].shape[0], *shape)
            acc.add(self.data.members[k].name, p, self.data.labels[k], box, weights[k], cw)
        P = acc.probabilities()
        return P.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2), labels

    def _pancreas_outside(self, ci: int, wd: tuple) -> bool:
        from .ensemble import WeightedProbabilities, common_label_space, label_mask

        case = self.data.cases[ci]
        if case.outside is None:
            return False
        if isinstance(case.outside, str):
            return True
        key = (ci, wd)
        if key not in self._outside:
            torch = self.torch
            weights, factors = wd
            active = [k for k, w in enumerate(weights) if w > 0]
            labels = common_label_space([self.data.labels[k] for k in active])
            n = case.outside[0].shape[1]
            acc = WeightedProbabilities(labels, (n, 1, 1), torch.device("cpu"))
            for k in active:
                cw = {self.tumor_label: factors[k]} if factors is not None and factors[k] != 1 else None
                p = torch.from_numpy(case.outside[k].reshape(case.outside[k].shape[0], n, 1, 1)).float()
                acc.add(self.data.members[k].name, p, self.data.labels[k], [(0, n), (0, 1), (0, 1)], weights[k], cw)
            pm = label_mask(acc.probabilities(), labels, self.pancreas_label)
            self._outside[key] = bool(pm is not None and pm.any())
        return self._outside[key]

    def _postprocess(self, mask: np.ndarray, case: CaseData, pp: tuple, gated: dict, pancreas) -> np.ndarray:
        """The engine's postprocess(mask, rules). A rule with a pancreas gate is run as two postprocess calls,
        gate first, then the size rules on what is left: removing whole components leaves the others (their
        voxels, volumes and raster order) unchanged, so the result is identical, and the expensive distance
        transform is shared by all size rules with the same gate (tested against the single call)."""
        from .postprocess import postprocess
        from .spec import PostprocessSpec

        if pp == PP_OFF:
            return mask
        t = time.perf_counter()
        min_v, keep, dist = pp
        if dist is None:
            out = postprocess(mask, case.spacing, PostprocessSpec(min_v, keep, None), None)
            self.stats["postprocess"] += 1
        else:
            if dist not in gated:
                gated[dist] = postprocess(mask, case.spacing, PostprocessSpec(None, None, dist), pancreas())
                self.stats["postprocess"] += 1
            out = gated[dist]
            if min_v is not None or keep is not None:
                out = postprocess(out, case.spacing, PostprocessSpec(min_v, keep, None), None)
                self.stats["postprocess"] += 1
        self.seconds["postprocess"] += time.perf_counter() - t
        return out

    def _case_metrics(self, ci: int, mask: np.ndarray) -> tuple:
        from .evaluate import case_metrics

        key = (ci, hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest())
        hit = self._mask_metrics.get(key)
        if hit is not None:
            self.stats["metric_reused"] += 1
            return hit
        case = self.data.cases[ci]
        t = time.perf_counter()
        m = case_metrics(mask, case.gt, case.spacing, self.official, full_shape=case.full_shape,
                         pred_name=f"candidate on {case.cid}", gt_name=case.cid)
        self.seconds["metrics"] += time.perf_counter() - t
        self.stats["metric_calls"] += 1
        row = tuple(float(m[k]) for k in CASE_KEYS)
        self._mask_metrics[key] = row
        return row

    # ---------------------------------------------------------------------------------------------
    def aggregate(self, cand: Candidate, case_idx: Sequence[int]) -> dict:
        from .evaluate import aggregate

        arr = self.metrics[cand][list(case_idx)]
        if np.isnan(arr).any():
            raise RuntimeError("aggregate over cases that were not scored")
        return aggregate({i: dict(zip(CASE_KEYS, row)) for i, row in enumerate(arr.tolist())})

    def scales(self, case_idx: Sequence[int]) -> tuple[float, float]:
        """Normalisers of the weighted score: mean image diagonal (mm; the uniform-prediction penalty) and
        the RMS true tumour volume (mm^3; the volume RMSE of predicting nothing), over these cases."""
        from .evaluate import image_diagonal_mm

        cases = [self.data.cases[i] for i in case_idx]
        diag = float(np.mean([image_diagonal_mm(c.full_shape, c.spacing, self.official) for c in cases]))
        vol = float(np.sqrt(np.mean([c.gt_volume_mm3 ** 2 for c in cases])))
        return diag, max(vol, 1.0)


def weighted_score(agg: Mapping[str, float], weights: Mapping[str, float], scales: tuple[float, float]) -> float:
    """sum_k w_k g_k / sum_k w_k with goodness g: Dice, surface Dice, 1 - HD95/D, 1 - MASD/D, 1 - RMSE/V
    (D = mean image diagonal, V = RMS true tumour volume): 1 is perfect, 0 is what predicting nothing scores."""
    diag, vol = scales
    g = {"dice": agg["dice"], "surface_dice_5mm": agg["surface_dice_5mm"], "hd95": 1.0 - agg["hd95"] / diag,
         "masd": 1.0 - agg["masd"] / diag, "volume_rmse_mm3": 1.0 - agg["volume_rmse_mm3"] / vol}
    total = sum(weights.values())
    return float(sum(weights[k] * g[k] for k in weights) / total)


# ==================================================================================================
# selection and nested cross-validation
# ==================================================================================================
@dataclass
class Scored:
    cand: Candidate
    agg: dict
    score: float  # weighted score
    mean_rank: float | None
    stage: str

    def key(self, objective: str) -> tuple:
        if objective == "mean-rank":
            return (self.mean_rank, -self.score)
        return (-self.score,)


@dataclass
class Selection:
    best: Scored
    scored: list[Scored]
    singles: dict[str, dict]  # member name -> aggregate on the same cases

    @property
    def n_candidates(self) -> int:
        return len(self.scored)


def single_candidates(n_members: int) -> list[Candidate]:
    return [Candidate(tuple(1.0 if j == i else 0.0 for j in range(n_members))) for i in range(n_members)]


def equal_candidate(n_members: int) -> Candidate:
    # written to the spec as these very numbers (6 decimals), so the fitter scores what the engine will run
    return Candidate(tuple(round(1.0 / n_members, 6) for _ in range(n_members)))


def select(ev: Evaluator, space: SearchSpace, case_idx: Sequence[int], objective: str,
           metric_weights: Mapping[str, float]) -> Selection:
    """Search on these cases only: stage A, then stage B around the top_k of stage A; the best by objective."""
    from .evaluate import rank_table

    names = [m.name for m in ev.data.members]
    singles_c = single_candidates(len(names))
    stage_a = space.stage_a
    ev.ensure(stage_a + singles_c, case_idx)
    scales = ev.scales(case_idx)
    singles = {n: ev.aggregate(c, case_idx) for n, c in zip(names, singles_c)}
    me = "\x00candidate"

    def score(cands: list[Candidate], stage: str) -> list[Scored]:
        out = []
        for c in cands:
            agg = ev.aggregate(c, case_idx)
            mr = None
            if objective == "mean-rank":
                rows = rank_table({**singles, me: agg})
                mr = next(r["mean_rank"] for r in rows if r["name"] == me)
            out.append(Scored(c, agg, weighted_score(agg, metric_weights, scales), mr, stage))
        return out

    scored_a = score(stage_a, "A")
    order = sorted(range(len(scored_a)), key=lambda i: (scored_a[i].key(objective), i))
    k = len(order) if space.top_k <= 0 else min(space.top_k, len(order))
    top = [scored_a[i].cand for i in order[:k]]
    stage_b = [replace(c, pp=p) for c in top for p in space.pp_grid if p != PP_OFF]
    ev.ensure(stage_b, case_idx)
    scored = scored_a + score(stage_b, "B")
    best_i = min(range(len(scored)), key=lambda i: (scored[i].key(objective), i))
    return Selection(scored[best_i], scored, singles)


@dataclass
class FoldResult:
    fold: int
    train: list[int]
    test: list[int]
    chosen: Candidate
    train_agg: dict
    test_agg: dict
    n_candidates: int


@dataclass
class FitResult:
    folds: list[FoldResult]
    final: Selection
    heldout_rows: np.ndarray  # (cases, 6): each case scored by the candidate of the fold that held it out
    heldout_agg: dict
    insample_agg: dict
    reference: dict[str, dict]  # name -> aggregate over all cases (single members, equal-weight ensemble)
    n_distinct_candidates: int
    seconds: dict = field(default_factory=dict)


def fold_assignment(n: int, k: int, seed: int) -> list[int]:
    order = np.random.default_rng(seed).permutation(n)
    fold = [0] * n
    for rank, i in enumerate(order):
        fold[int(i)] = rank % k
    return fold


def nested_cv(ev: Evaluator, space: SearchSpace, objective: str = "mean-rank",
              metric_weights: Mapping[str, float] = DEFAULT_METRIC_WEIGHTS, folds: int = DEFAULT_FOLDS,
              seed: int = 0) -> FitResult:
    """Outer K-fold over cases: select on K-1 folds, score the choice on the held-out fold; then select on
    all cases for the final spec. Stage A is scored on every case first (each case once per weighting)."""
    n = ev.n
    if n < 2:
        raise InputError("--gt", f"need at least 2 cases for cross-validation, got {n}")
    k = min(folds, n)
    assign = fold_assignment(n, k, seed)
    everything = list(range(n))
    t0 = time.perf_counter()
    ev.ensure(space.stage_a + single_candidates(len(ev.data.members)), everything)
    t_a = time.perf_counter() - t0
    log.info("stage A: %d candidates on %d cases in %.1f s", len(space.stage_a), n, t_a)
    results: list[FoldResult] = []
    heldout = np.full((n, len(CASE_KEYS)), np.nan)
    t1 = time.perf_counter()
    for f in range(k):
        train = [i for i in everything if assign[i] != f]
        test = [i for i in everything if assign[i] == f]
        sel = select(ev, space, train, objective, metric_weights)
        ev.ensure([sel.best.cand], test)
        heldout[test] = ev.metrics[sel.best.cand][test]
        results.append(FoldResult(f, train, test, sel.best.cand, sel.best.agg, ev.aggregate(sel.best.cand, test),
                                  sel.n_candidates))
        log.info("outer fold %d/%d: chose %s on %d cases; held-out Dice %.4f HD95 %.2f on %d cases", f + 1, k,
                 sel.best.cand.label([m.name for m in ev.data.members]), len(train), results[-1].test_agg["dice"],
                 results[-1].test_agg["hd95"], len(test))
    t_cv = time.perf_counter() - t1
    t2 = time.perf_counter()
    final = select(ev, space, everything, objective, metric_weights)
    t_final = time.perf_counter() - t2
    from .evaluate import aggregate

    heldout_agg = aggregate({i: dict(zip(CASE_KEYS, row)) for i, row in enumerate(heldout.tolist())})
    names = [m.name for m in ev.data.members]
    reference = {nm: ev.aggregate(c, everything) for nm, c in zip(names, single_candidates(len(names)))}
    eq = equal_candidate(len(names))
    ev.ensure([eq], everything)
    reference["equal-weight ensemble"] = ev.aggregate(eq, everything)
    return FitResult(results, final, heldout, heldout_agg, final.best.agg, reference, len(ev.metrics),
                     {"stage_a_s": t_a, "outer_folds_s": t_cv, "final_search_s": t_final})


# ==================================================================================================
# outputs
# ==================================================================================================
def fitted_spec_json(base, cand: Candidate, description: str) -> dict:
    """The base spec with the candidate's weights, tumour class weights, decision and post-processing.
    Members with weight 0 are dropped (the engine would still load them). None fields are omitted."""
    from .spec import parse_spec

    d = json.loads(json.dumps(base.to_json()))
    members = []
    for m, w, k in zip(d["members"], cand.weights, cand.factors or [1.0] * len(cand.weights)):
        if w <= 0:
            continue
        if m.get("class_weights"):
            log.warning("member %s: base class_weights %s replaced by the fitted tumour factor", m["name"],
                        m["class_weights"])
        m["weight"] = round(float(w), 6)
        m["class_weights"] = {base.tumor_label: float(k)} if k != 1 else {}
        members.append(m)
    d["members"] = members
    d["decision"] = {"rule": cand.rule} if cand.rule == "argmax" else {"rule": "threshold",
                                                                        "threshold": float(cand.threshold)}
    pp = dict(zip(("min_volume_mm3", "keep_largest", "max_distance_to_pancreas_mm"), cand.pp))
    d["postprocess"] = {k: v for k, v in pp.items() if v is not None}
    if d.get("time_budget_s") is None:
        d.pop("time_budget_s", None)
    d["description"] = description
    parse_spec(d, source="fitted spec")  # must be valid
    return d


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _agg_json(agg: Mapping[str, float]) -> dict:
    return {k: float(agg[k]) for k in AGGREGATE_KEYS}


def _cand_json(c: Candidate, names: Sequence[str], tumor_label: str) -> dict:
    return {"weights": dict(zip(names, c.weights)),
            "tumour_class_weights": dict(zip(names, c.factors)) if c.factors else None,
            "decision": {"rule": c.rule, **({"threshold": c.threshold} if c.rule == "threshold" else {})},
            "postprocess": dict(zip(("min_volume_mm3", "keep_largest", "max_distance_to_pancreas_mm"), c.pp)),
            "label": c.label(names)}


def build_report(ev: Evaluator, res: FitResult, space: SearchSpace, args_info: dict, timings: dict) -> dict:
    from .evaluate import rank_table

    names = [m.name for m in ev.data.members]
    heldout_board = rank_table({**res.reference, "fitted ensemble (held-out)": res.heldout_agg})
    singles_board = rank_table({**{n: res.reference[n] for n in names},
                                "fitted ensemble (held-out)": res.heldout_agg})
    fitted_rank = next(r["mean_rank"] for r in singles_board if r["name"] == "fitted ensemble (held-out)")
    scales = ev.scales(range(ev.n))
    mw = args_info["metric_weights"]
    return {
        "objective": args_info["objective"],
        "metric_weights": mw,
        "score_normalisation": {"image_diagonal_mm": scales[0], "rms_true_volume_mm3": scales[1]},
        "members": [{"name": m.name, "source": str(m.path), "layout": m.kind, "labels": list(lab)}
                    for m, lab in zip(ev.data.members, ev.data.labels)],
        "cases": {"used": len(ev.data.cases), "ids": [c.cid for c in ev.data.cases],
                  "dropped": ev.data.dropped},
        "search_space": space.describe(),
        "candidates_scored": res.n_distinct_candidates,
        "folds": [{"fold": f.fold, "n_train": len(f.train), "n_test": len(f.test),
                   "test_cases": [ev.data.cases[i].cid for i in f.test], "chosen": _cand_json(f.chosen, names,
                                                                                             ev.tumor_label),
                   "in_sample": _agg_json(f.train_agg), "held_out": _agg_json(f.test_agg),
                   "candidates": f.n_candidates} for f in res.folds],
        "held_out": {
            "fitted ensemble": _agg_json(res.heldout_agg),
            **{k: _agg_json(v) for k, v in res.reference.items()},
            "fitted_mean_rank_vs_single_members": fitted_rank,
            "weighted_score": {"fitted ensemble": weighted_score(res.heldout_agg, mw, scales),
                               **{k: weighted_score(v, mw, scales) for k, v in res.reference.items()}},
        },
        "leaderboard_held_out": heldout_board,
        "in_sample": {"fitted ensemble": _agg_json(res.insample_agg),
                      "weighted_score": weighted_score(res.insample_agg, mw, scales),
                      "mean_rank_vs_single_members": res.final.best.mean_rank},
        "chosen": _cand_json(res.final.best.cand, names, ev.tumor_label),
        "timings_s": timings,
        "work": {**ev.stats, **{f"{k}_s": round(v, 2) for k, v in ev.seconds.items()}},
        "memory": {"peak_rss_bytes": _peak_rss_bytes(),
                   "crops_bytes": int(sum(c.nbytes() for c in ev.data.cases)),
                   "largest_case_full_maps_bytes": int(ev.data.peak_case_bytes),
                   "crop_voxel_fraction": float(sum(math.prod(c.crop_shape) for c in ev.data.cases)
                                                / sum(math.prod(c.full_shape) for c in ev.data.cases)),
                   "live_voxel_fraction": float(sum(c.live.size for c in ev.data.cases)
                                                / sum(math.prod(c.full_shape) for c in ev.data.cases))},
        "options": args_info.get("options"),
    }


def _fmt_row(name: str, agg: Mapping[str, float], extra: str = "") -> str:
    return (f"| {name} | {agg['dice']:.4f} | {agg['surface_dice_5mm']:.4f} | {agg['hd95']:.2f} | "
            f"{agg['masd']:.2f} | {agg['volume_rmse_mm3']:.0f} |{extra}")


def report_markdown(rep: dict) -> str:
    lines = ["# Ensemble fit report", ""]
    lines.append(f"Objective **{rep['objective']}**; {rep['cases']['used']} cases "
                 f"({len(rep['cases']['dropped'])} dropped); {rep['candidates_scored']} distinct candidates scored "
                 f"({rep['search_space']['candidates_per_search']} per search, {len(rep['folds'])} outer folds + "
                 "the final refit).")
    lines.append("")
    lines.append("## Held-out (nested cross-validation: every case scored by a candidate chosen without it)")
    lines.append("")
    lines.append("| entry | Dice | surface Dice 5 mm | HD95 mm | MASD mm | volume RMSE mm3 | mean rank |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in rep["leaderboard_held_out"]:
        lines.append(_fmt_row(r["name"], r, f" {r['mean_rank']:.2f} |"))
    lines.append("")
    lines.append(f"Mean rank of the fitted ensemble (held-out) against the single members alone: "
                 f"{rep['held_out']['fitted_mean_rank_vs_single_members']:.2f}.")
    lines.append("")
    lines.append("## In-sample vs held-out")
    lines.append("")
    lines.append("| fitted ensemble | Dice | surface Dice 5 mm | HD95 mm | MASD mm | volume RMSE mm3 | weighted score |")
    lines.append("|---|---|---|---|---|---|---|")
    lines.append(_fmt_row("in-sample (final fit on all cases)", rep["in_sample"]["fitted ensemble"],
                          f" {rep['in_sample']['weighted_score']:.4f} |"))
    lines.append(_fmt_row("held-out (nested CV)", rep["held_out"]["fitted ensemble"],
                          f" {rep['held_out']['weighted_score']['fitted ensemble']:.4f} |"))
    lines.append("")
    lines.append("Per outer fold (in-sample = on its training folds):")
    lines.append("")
    lines.append("| fold | cases train/test | chosen | in-sample Dice / HD95 | held-out Dice / HD95 |")
    lines.append("|---|---|---|---|---|")
    for f in rep["folds"]:
        lines.append(f"| {f['fold']} | {f['n_train']}/{f['n_test']} | {f['chosen']['label']} | "
                     f"{f['in_sample']['dice']:.4f} / {f['in_sample']['hd95']:.2f} | "
                     f"{f['held_out']['dice']:.4f} / {f['held_out']['hd95']:.2f} |")
    lines.append("")
    ch = rep["chosen"]
    lines.append("## Chosen (final fit on all cases -> spec.json)")
    lines.append("")
    lines.append(f"- weights: {', '.join(f'{k} {v:.3g}' for k, v in ch['weights'].items())}"
                 + (" (members with weight 0 are left out of spec.json)" if min(ch['weights'].values()) == 0 else ""))
    if ch["tumour_class_weights"]:
        lines.append(f"- tumour class weights: {ch['tumour_class_weights']}")
    d = ch["decision"]
    lines.append(f"- decision: {d['rule']}" + (f" at {d['threshold']:g}" if d["rule"] == "threshold" else ""))
    lines.append(f"- post-processing: {pp_label(tuple(ch['postprocess'].values()))}")
    lines.append("")
    lines.append("## Search space")
    lines.append("")
    s = rep["search_space"]
    ax = s["postprocess_axes"]
    lines.append(f"- stage A: {s['weightings']} weightings ({s['weightings_with_tumour_factors']} of them with tumour "
                 f"class weights) x decisions {', '.join(s['decisions'])}, no post-processing")
    lines.append(f"- stage B: the top {s['top_k'] or 'all'} of stage A x {s['postprocess_settings'] - 1} post-processing "
                 f"settings: min_volume_mm3 {ax['min_volume_mm3']} x keep_largest {ax['keep_largest']} x "
                 f"max_distance_to_pancreas_mm {ax['max_distance_to_pancreas_mm']} (all off excluded)")
    lines.append(f"- metric weights of the weighted score: {rep['metric_weights']} (HD95 and MASD divided by the "
                 f"mean image diagonal {rep['score_normalisation']['image_diagonal_mm']:.0f} mm, volume RMSE by the "
                 f"RMS true volume {rep['score_normalisation']['rms_true_volume_mm3']:.0f} mm3)")
    if rep["cases"]["dropped"]:
        lines.append(f"- dropped cases: " + "; ".join(f"{k}: {v}" for k, v in list(rep['cases']['dropped'].items())[:20]))
    lines.append("")
    lines.append("## Cost")
    lines.append("")
    t = rep["timings_s"]
    lines.append(f"- wall time: {t['total']:.1f} s, CPU time {t.get('cpu', float('nan')):.1f} s (reading and cropping {t['load']:.1f} s, stage A "
                 f"{t['stage_a_s']:.1f} s, outer folds {t['outer_folds_s']:.1f} s, final search "
                 f"{t['final_search_s']:.1f} s, report {t.get('report', 0):.1f} s)")
    mem = rep["memory"]
    lines.append(f"- peak RSS {mem['peak_rss_bytes'] / 2**30:.2f} GiB; crops {mem['crops_bytes'] / 2**20:.1f} MiB "
                 f"(boxes {100 * mem['crop_voxel_fraction']:.2f}% of the voxels, live voxels "
                 f"{100 * mem['live_voxel_fraction']:.3f}%)")
    w = rep["work"]
    lines.append(f"- {w['weightings']} weighted-probability maps, {w['decisions']} decisions, {w['postprocess']} "
                 f"post-processing calls, {w['metric_calls']} metric calls ({w['metric_reused']} identical masks "
                 "reused)")
    lines.append("")
    lines.append("![trade-off](tradeoff.png)")
    return "\n".join(lines) + "\n"


def plot_tradeoff(ev: Evaluator, res: FitResult, path: Path, title: str = "") -> None:
    """Dice vs HD95 and Dice vs MASD of every candidate of the final search (in-sample, all cases)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m.name for m in ev.data.members]
    scored = res.final.scored
    fig, axes = plt.subplots(1, 2, figsize=(15, 7.4), constrained_layout=True)
    decs = _uniq([s.cand.dec for s in scored if s.stage == "A"])
    cmap = plt.get_cmap("viridis")
    colors = {d: ("#d62728" if d[0] == "argmax" else cmap(0.1 + 0.8 * i / max(len(decs) - 1, 1)))
              for i, d in enumerate(decs)}
    best = res.final.best
    for ax, xkey, xlab in ((axes[0], "hd95", "mean HD95 (mm, lower is better)"),
                           (axes[1], "masd", "mean MASD (mm, lower is better)")):
        b = [s for s in scored if s.stage == "B"]
        if b:
            ax.scatter([s.agg[xkey] for s in b], [s.agg["dice"] for s in b], s=14, marker="x", color="#999999",
                       alpha=0.6, label="with post-processing (stage B)", zorder=1)
        for d in decs:
            pts = [s for s in scored if s.stage == "A" and s.cand.dec == d]
            ax.scatter([s.agg[xkey] for s in pts], [s.agg["dice"] for s in pts], s=18, color=colors[d],
                       alpha=0.75, label=f"weightings, {_dec_label(d)}", zorder=2)
        # Pareto front (max Dice, min distance)
        pts = sorted(((s.agg[xkey], s.agg["dice"]) for s in scored), key=lambda p: (p[0], -p[1]))
        front, top = [], -1.0
        for x, y in pts:
            if y > top:
                front.append((x, y))
                top = y
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", lw=1.3, ls="--",
                label="Pareto front (all candidates)", zorder=4)
        for nm in names:
            agg = res.reference[nm]
            ax.scatter([agg[xkey]], [agg["dice"]], s=120, marker="s", color="white", edgecolor="black", lw=1.5,
                       zorder=5)
            ax.annotate(nm, (agg[xkey], agg["dice"]), textcoords="offset points", xytext=(7, 5), fontsize=9,
                        weight="bold")
        eq = res.reference["equal-weight ensemble"]
        ax.scatter([eq[xkey]], [eq["dice"]], s=120, marker="D", color="#1f77b4", edgecolor="black", zorder=5,
                   label="equal-weight ensemble (argmax, no post-processing)")
        ax.scatter([best.agg[xkey]], [best.agg["dice"]], s=320, marker="*", color="gold", edgecolor="black",
                   zorder=6, label="chosen (in-sample)")
        ax.scatter([res.heldout_agg[xkey]], [res.heldout_agg["dice"]], s=260, marker="*", facecolor="none",
                   edgecolor="black", lw=1.5, zorder=6, label="fitted ensemble, held-out estimate")
        ax.set_xscale("log")  # distances span sub-millimetre to the image diagonal (empty-prediction penalty)
        ax.set_xlabel(xlab + ", log scale")
        ax.set_ylabel("mean Dice (higher is better)")
        ax.grid(alpha=0.3, which="both")
        xs = [max(s.agg[xkey], 1e-3) for s in scored] + [max(res.heldout_agg[xkey], 1e-3)]
        ax.set_xlim(min(xs) / 1.3, max(xs) * 1.3)
    axes[0].set_title("Dice vs HD95 (squares: single members)")
    axes[1].set_title("Dice vs MASD (squares: single members)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=9)
    fig.suptitle(title or f"Trade-off across the {len(scored)} candidates of the final search ({ev.n} cases, "
                          f"in-sample; best = top-left)\nchosen: {best.cand.label(names)}", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ==================================================================================================
# command line
# ==================================================================================================
def _float_list(text: str, what: str, allow_off: bool = False) -> list:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if allow_off and part.lower() in ("off", "none"):
            out.append(None)
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise InputError(what, f"not a number{' or off' if allow_off else ''}: {part!r}") from None
    return out


def parse_metric_weights(text: str | None) -> dict[str, float]:
    w = dict(DEFAULT_METRIC_WEIGHTS)
    if not text:
        return w
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise InputError("--metric-weights", f"expected NAME=WEIGHT, got {part!r}")
        k, v = part.split("=", 1)
        key = METRIC_ALIASES.get(k.strip().lower())
        if key is None:
            raise InputError("--metric-weights", f"unknown metric {k.strip()!r} (known: {', '.join(sorted(METRIC_ALIASES))})")
        try:
            w[key] = float(v)
        except ValueError:
            raise InputError("--metric-weights", f"{k.strip()}: not a number: {v!r}") from None
        if not (w[key] >= 0 and math.isfinite(w[key])):
            raise InputError("--metric-weights", f"{k.strip()}: must be >= 0, got {v!r}")
    if sum(w.values()) <= 0:
        raise InputError("--metric-weights", "at least one weight must be > 0")
    return w


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-spec", type=Path, required=True, help="spec whose members are the candidates")
    p.add_argument("--oof", nargs="+", default=[], metavar="NAME=DIR",
                   help="out-of-fold maps of member NAME: a folder of <case>.npz (predict --save-probabilities) "
                        "or an nnU-Net model folder (fold_*/validation/*.npz, labels from its dataset.json)")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="weights root: members without --oof use the nnU-Net model folder <model-dir>/<member.model>")
    p.add_argument("--gt", type=Path, required=True, help="ground-truth labels (<case>.mha, 0/1 tumour/2 pancreas)")
    p.add_argument("--out", type=Path, required=True, help="writes spec.json, report.json, report.md, tradeoff.png")
    p.add_argument("--objective", choices=OBJECTIVES, default="mean-rank",
                   help="mean-rank: challenge mean rank against the single members (ties: weighted score); "
                        "weighted: weighted sum of normalised metrics (default: mean-rank)")
    p.add_argument("--metric-weights", default=None, metavar="K=W,...",
                   help="weights of the weighted score: dice, surface_dice, hd95, masd, volume_rmse (default all 1)")
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="outer cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="fold assignment and Dirichlet samples")
    p.add_argument("--weight-step", default="auto",
                   help="simplex grid step of the member weights (auto: 0.1 up to 3 members, 0.2 for 4-5, none "
                        "beyond), or 'none'")
    p.add_argument("--dirichlet", type=int, default=None,
                   help="extra random weightings from a flat Dirichlet (default 0 up to 5 members, 150 beyond)")
    p.add_argument("--tumour-factors", default="", metavar="F,...",
                   help="also try per-member tumour class weights: each active member's tumour weight times F "
                        "(e.g. 0.5,2; default: none)")
    p.add_argument("--thresholds", default=",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS),
                   help="thresholds on the weighted P(tumour) tried besides argmax ('' for none)")
    p.add_argument("--no-argmax", action="store_true", help="do not try the argmax rule")
    p.add_argument("--min-volumes", default="off,100,500,2000", help="min_volume_mm3 values ('off' = no filter)")
    p.add_argument("--keep-largest", default="off,1,2", help="keep_largest values ('off' = all components)")
    p.add_argument("--max-distances", default="off,5,20",
                   help="max_distance_to_pancreas_mm values ('off' = no pancreas gate)")
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K,
                   help="stage B tries every post-processing on the top K (weighting, decision) pairs of stage A "
                        "(0: on all of them)")
    p.add_argument("--official", action="store_true", help="score with the organisers' spacing quirk")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


def _parse_oof(items: Sequence[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for it in items:
        if "=" not in it:
            raise InputError("--oof", f"expected NAME=DIR, got {it!r}")
        name, d = it.split("=", 1)
        if not name or not d:
            raise InputError("--oof", f"expected NAME=DIR, got {it!r}")
        if name in out:
            raise InputError("--oof", f"member {name!r} given twice")
        out[name] = Path(d)
    return out


def main(args: argparse.Namespace) -> int:
    import torch

    from .spec import load_spec

    t_start = time.perf_counter()
    torch.set_num_threads(max(1, int(args.threads)))
    base = load_spec(args.base_spec)
    names = [m.name for m in base.members]
    oof = _parse_oof(args.oof)
    unknown = [n for n in oof if n not in names]
    if unknown:
        raise InputError("--oof", f"member(s) {', '.join(unknown)} not in the base spec {args.base_spec} "
                                  f"(members: {', '.join(names)})")
    sources = []
    for m in base.members:
        if m.name in oof:
            sources.append(find_member(m.name, oof[m.name]))
        elif args.model_dir is not None:
            sources.append(find_member(m.name, Path(args.model_dir) / m.model))
        else:
            raise InputError("--oof", f"no out-of-fold maps for member {m.name!r} (give {m.name}=DIR, or --model-dir)")
    objective = args.objective
    mw = parse_metric_weights(args.metric_weights)
    if args.folds < 2:
        raise InputError("--folds", f"must be >= 2, got {args.folds}")
    ws = str(args.weight_step).strip().lower()
    step = ws if ws in ("auto", "none") else _float_list(ws, "--weight-step")[0]
    keep = [None if k is None else int(k) for k in _float_list(args.keep_largest, "--keep-largest", True)]
    for s in sources:  # nnU-Net layout: from dataset.json; our npz layout: the first file's 'labels' array only
        peek_labels(s, base.tumor_label)
    has_pancreas = any(base.pancreas_label in s.labels for s in sources)
    space = SearchSpace.build(
        len(sources), weight_step=step, dirichlet=args.dirichlet, seed=args.seed, tumour_factors=_float_list(args.tumour_factors, "--tumour-factors"),
        thresholds=_float_list(args.thresholds, "--thresholds"), argmax=not args.no_argmax,
        min_volumes=_float_list(args.min_volumes, "--min-volumes", True), keep_largest=keep,
        max_distances=_float_list(args.max_distances, "--max-distances", True), top_k=args.top_k,
        has_pancreas=has_pancreas)
    log.info("search: %d weightings x %d decisions, then top %s x %d post-processing settings = %d candidates "
             "per search", len(space.weightings), len(space.decisions), space.top_k or "all",
             len(space.pp_grid) - 1, space.n_candidates())
    rule = crop_rule(space, sources, base.tumor_label, base.pancreas_label)
    log.info("crop: some member p(tumour) >= %.3f, plus ground truth%s", rule.tumour_min,
             f", margin {rule.margin_mm:g} mm (+{GATE_MARGIN_EXTRA} voxels) for the pancreas gate"
             if rule.margin_mm is not None else "")
    data = load_cases(sources, args.gt, rule, base.tumor_label, base.pancreas_label)
    t_loaded = time.perf_counter()
    ev = Evaluator(data, base.tumor_label, base.pancreas_label, official=bool(args.official))
    res = nested_cv(ev, space, objective, mw, folds=args.folds, seed=args.seed)
    t_fitted = time.perf_counter()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    best = res.final.best.cand
    h = res.heldout_agg
    desc = (f"fitted by `panther-ensemble fit` (objective {objective}) on {ev.n} cases; held-out (nested "
            f"{min(args.folds, ev.n)}-fold CV) Dice {h['dice']:.4f}, surface Dice {h['surface_dice_5mm']:.4f}, "
            f"HD95 {h['hd95']:.2f} mm, MASD {h['masd']:.2f} mm, volume RMSE {h['volume_rmse_mm3']:.0f} mm3")
    spec_json = fitted_spec_json(base, best, desc)
    (out / "spec.json").write_text(json.dumps(spec_json, indent=2) + "\n")
    load_spec(out / "spec.json")
    timings = {"load": t_loaded - t_start, **res.seconds, "fit": t_fitted - t_loaded}
    info = {"objective": objective, "metric_weights": mw,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
                        if k not in ("func",) and not callable(v)}}
    t_r = time.perf_counter()
    plot_tradeoff(ev, res, out / "tradeoff.png")
    timings["report"] = time.perf_counter() - t_r
    timings["total"] = time.perf_counter() - t_start
    ru = resource.getrusage(resource.RUSAGE_SELF)
    timings["cpu"] = ru.ru_utime + ru.ru_stime  # < total when the CPU is shared
    rep = build_report(ev, res, space, info, timings)
    (out / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(rep))

    print(f"# fitted on {ev.n} cases ({len(data.dropped)} dropped), {res.n_distinct_candidates} candidates, "
          f"objective {objective}")
    print(f"chosen: {best.label(names)}")
    print(f"{'entry':<34} {'Dice':>7} {'sDice5':>7} {'HD95':>7} {'MASD':>6} {'RMSE':>8}")
    rows = [("fitted, held-out", h), ("fitted, in-sample", res.insample_agg)] + list(res.reference.items())
    for nm, a in rows:
        print(f"{nm:<34} {a['dice']:7.4f} {a['surface_dice_5mm']:7.4f} {a['hd95']:7.2f} {a['masd']:6.2f} "
              f"{a['volume_rmse_mm3']:8.0f}")
    print(f"time {timings['total']:.1f} s, CPU {timings['cpu']:.1f} s (read {timings['load']:.1f} s, fit {timings['fit']:.1f} s); "
          f"peak RSS {rep['memory']['peak_rss_bytes'] / 2**30:.2f} GiB; wrote {out}/spec.json, report.json, "
          "report.md, tradeoff.png")
    return 0
