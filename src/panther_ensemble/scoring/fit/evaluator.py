"""Scoring candidates: the engine's weighting, decision and post-processing on the crops, then the metrics.

Every candidate is scored exactly as the engine would decide on it: `WeightedProbabilities` -> `decide`
-> (`label_mask` for the pancreas) -> `postprocess` -> `case_metrics`, the same functions the engine and
the evaluator call, run on the live voxels of each case's crop (`cases.py`).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Mapping, Sequence

import numpy as np
import torch

from ...inference.ensemble import WeightedProbabilities, common_label_space, decide, label_mask
from ...inference.postprocess import never_empty, postprocess
from ..leaderboard import aggregate
from ..metrics import (AGGREGATE_KEYS, CASE_KEYS, GroundTruthSurface, SurfelAreas, case_metrics,
                       image_diagonal_mm, surface_spacing, tumour_mask)
from .cases import CaseData, Dataset
from .space import PP_OFF, Candidate

#: cases whose ground-truth surface the Evaluator keeps (see Evaluator._gt_surface)
GT_SURFACES_KEPT = 4
#: default weights of the `weighted` objective (see `weighted_score`)
DEFAULT_METRIC_WEIGHTS = {k: 1.0 for k in AGGREGATE_KEYS}


class Evaluator:
    """Per-case metrics of candidates, computed lazily and kept: metrics[candidate] is (cases, 6) with
    CASE_KEYS columns, NaN where not computed yet. Identical output masks of a case share one metric call;
    the surfel-area tables of the surface metrics are built once per spacing; the ground truth's border
    distances once per case (kept for the last `gt_surfaces_kept` cases). Every cache lives here."""

    def __init__(self, data: Dataset, tumor_label: str = "tumor", pancreas_label: str = "pancreas",
                 official: bool = False, gt_surfaces_kept: int = GT_SURFACES_KEPT):
        self.data = data
        self.tumor_label = tumor_label
        self.pancreas_label = pancreas_label
        self.official = official
        self.metrics: dict[Candidate, np.ndarray] = {}
        self._mask_metrics: dict[tuple[int, bytes], tuple] = {}
        self._outside: dict[tuple[int, tuple], bool] = {}
        self._surfel_areas = SurfelAreas()
        # the ground truth's border distances of the last few cases: candidates are scored case by case, and
        # one case's map is 8 bytes per crop voxel, so keeping every case would cost gigabytes
        self._gt_surfaces: OrderedDict[int, GroundTruthSurface | None] = OrderedDict()
        self._gt_surfaces_kept = gt_surfaces_kept  # 0: none (each metric call does the whole computation)
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
        for ci in case_idx:
            groups: dict[tuple, dict[tuple, list[Candidate]]] = {}
            for c in candidates:
                if np.isnan(self.metrics[c][ci, 0]):
                    groups.setdefault(c.wd, {}).setdefault(c.dec, []).append(c)
            for wd, by_dec in groups.items():
                self._score_weighting(ci, wd, by_dec)

    def _score_weighting(self, ci: int, wd: tuple, by_dec: dict) -> None:
        case = self.data.cases[ci]
        t = time.perf_counter()
        P, labels = self.probabilities(case, wd)
        self.seconds["probabilities"] += time.perf_counter() - t
        self.stats["weightings"] += 1
        pancreas_cache: list = []
        argmax_cache: list = []
        tumour_p_cache: list = []

        def tumour_probability():  # for keep-most-confident: P(tumour) on the crop (0 at voxels that are not live)
            if not tumour_p_cache:
                out = np.zeros(case.crop_shape, np.float32)
                out.reshape(-1)[case.live] = P[labels.index(self.tumor_label)].reshape(-1).numpy()
                tumour_p_cache.append(out)
            return tumour_p_cache[0]

        def argmax_tumour():  # the never-empty fallback's mask: every voxel of it is live (see crop_rule)
            if not argmax_cache:
                argmax_cache.append(case.scatter(decide(P, labels, self.tumor_label, "argmax").numpy()))
            return argmax_cache[0]

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
                out = self._postprocess(mask, case, c.pp, gated, pancreas, argmax_tumour, tumour_probability)
                self.metrics[c][ci] = self._case_metrics(ci, out)

    def _weighted(self, n: int, member_probs: Sequence[np.ndarray], wd: tuple):
        """The engine's WeightedProbabilities over n voxels (members with weight 0 left out, as in the fitted
        spec), from per-member float16 (labels, n) arrays: (labels, n, 1, 1) tensor and the label names."""
        weights, factors = wd
        active = [k for k, w in enumerate(weights) if w > 0]
        labels = common_label_space([self.data.labels[k] for k in active])
        acc = WeightedProbabilities(labels, (n, 1, 1), torch.device("cpu"))
        for k in active:
            cw = {self.tumor_label: factors[k]} if factors is not None and factors[k] != 1 else None
            # float16 crop -> float32 tensor: the same numbers (and bit-identical sums: tested), but torch's
            # mixed-dtype add_ on CPU is ~40x slower than a float32 one
            p = torch.from_numpy(member_probs[k]).float().reshape(member_probs[k].shape[0], n, 1, 1)
            acc.add(self.data.members[k].name, p, self.data.labels[k], [(0, n), (0, 1), (0, 1)], weights[k], cw)
        return acc.probabilities(), labels

    def probabilities(self, case: CaseData, wd: tuple):
        """The engine's weighted probabilities at the live voxels: a (labels, n_live, 1, 1) tensor in
        channels-last memory (argmax over labels ~6x faster than over a labels-first tensor; the same
        values). Every operation of the engine's weighting and decision is per voxel, so a voxel gets the
        same numbers here as on the whole image."""
        P, labels = self._weighted(case.live.size, case.probs, wd)
        return P.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2), labels

    def _pancreas_outside(self, ci: int, wd: tuple) -> bool:
        """Whether the engine's pancreas mask is non-empty outside the crop for this weighting."""
        case = self.data.cases[ci]
        if case.outside is None:
            return False
        if isinstance(case.outside, str):
            return True
        key = (ci, wd)
        if key not in self._outside:
            P, labels = self._weighted(case.outside[0].shape[1], case.outside, wd)
            pm = label_mask(P, labels, self.pancreas_label)
            self._outside[key] = bool(pm is not None and pm.any())
        return self._outside[key]

    def _postprocess(self, mask: np.ndarray, case: CaseData, pp: tuple, gated: dict, pancreas,
                     argmax_tumour, tumour_probability) -> np.ndarray:
        """The engine's apply_rules(mask, rules): postprocess, then the never-empty fallback. A rule with a
        pancreas gate is run as two postprocess calls, gate first, then the size rules on what is left: removing
        whole components leaves the others (their voxels, volumes and raster order) unchanged, so the result is
        identical, and the expensive distance transform is shared by all size rules with the same gate (tested
        against the single call)."""
        if pp == PP_OFF:
            return mask
        t = time.perf_counter()
        min_v, keep, dist, fallback, confident = pp
        size_rules = {"min_volume_mm3": min_v, "keep_largest": keep, "keep_most_confident": confident,
                      "tumor_probability": tumour_probability() if confident is not None else None}
        if dist is None and min_v is None and keep is None and confident is None:
            out = mask
        elif dist is None:
            out = postprocess(mask, case.spacing, None, quiet=True, **size_rules)
            self.stats["postprocess"] += 1
        else:
            if dist not in gated:
                gated[dist] = postprocess(mask, case.spacing, pancreas(), max_distance_to_pancreas_mm=dist,
                                          quiet=True)
                self.stats["postprocess"] += 1
            out = gated[dist]
            if min_v is not None or keep is not None or confident is not None:
                out = postprocess(out, case.spacing, None, quiet=True, **size_rules)
                self.stats["postprocess"] += 1
        if fallback:
            out = never_empty(out, argmax_tumour, case.spacing, quiet=True)
        self.seconds["postprocess"] += time.perf_counter() - t
        return out

    def _case_metrics(self, ci: int, mask: np.ndarray) -> tuple:
        key = (ci, hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest())
        hit = self._mask_metrics.get(key)
        if hit is not None:
            self.stats["metric_reused"] += 1
            return hit
        case = self.data.cases[ci]
        t = time.perf_counter()
        m = case_metrics(mask, case.gt, case.spacing, self.official, full_shape=case.full_shape,
                         pred_name=f"candidate on {case.cid}", gt_name=case.cid, surfel_areas=self._surfel_areas,
                         gt_surface=self._gt_surface(ci))
        self.seconds["metrics"] += time.perf_counter() - t
        self.stats["metric_calls"] += 1
        row = tuple(float(m[k]) for k in CASE_KEYS)
        self._mask_metrics[key] = row
        return row

    def _gt_surface(self, ci: int) -> GroundTruthSurface | None:
        if self._gt_surfaces_kept <= 0:
            return None
        if ci in self._gt_surfaces:
            self._gt_surfaces.move_to_end(ci)
            return self._gt_surfaces[ci]
        case = self.data.cases[ci]
        gt = tumour_mask(case.gt, case.cid)
        surface = GroundTruthSurface(gt, surface_spacing(case.spacing, self.official)) if gt.any() else None
        self._gt_surfaces[ci] = surface
        while len(self._gt_surfaces) > self._gt_surfaces_kept:
            self._gt_surfaces.popitem(last=False)
        return surface

    # ---------------------------------------------------------------------------------------------
    def aggregate(self, cand: Candidate, case_idx: Sequence[int]) -> dict:
        arr = self.metrics[cand][list(case_idx)]
        if np.isnan(arr).any():
            raise RuntimeError("aggregate over cases that were not scored")
        return aggregate({i: dict(zip(CASE_KEYS, row)) for i, row in enumerate(arr.tolist())})

    def scales(self, case_idx: Sequence[int]) -> tuple[float, float]:
        """Normalisers of the weighted score: mean image diagonal (mm; the uniform-prediction penalty) and
        the RMS true tumour volume (mm^3; the volume RMSE of predicting nothing), over these cases."""
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
