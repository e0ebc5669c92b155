"""What the fit tries: candidate ensembles and the search space they come from.

A candidate is a member weighting (optionally with per-member tumour class weights), a decision rule and a
post-processing setting. Stage A scores every weighting with every decision, without post-processing;
stage B tries every post-processing setting on the best `top_k` of stage A.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ...errors import InputError

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
DEFAULT_MIN_VOLUMES = (None, 100.0, 500.0, 2000.0)
DEFAULT_KEEP_LARGEST = (None, 1, 2)
DEFAULT_MAX_DISTANCES = (None, 5.0, 20.0)
#: never-empty fallback: off by default. Searched on Task 1's phantoms (docs/results/experiments/never_empty_task1)
#: it let the fit pair it with volume rules that empty a case more often, and the nested-CV result got worse;
#: `--never-empty on,off` searches it (on a tie the fallback wins, see crossval.select)
DEFAULT_NEVER_EMPTY = (None,)
#: keep the K components of highest peak P(tumour): off by default (the shipped search); `--keep-most-confident
#: off,1,2` searches it beside keep-largest (docs/results/experiments/keep_confident_task1)
DEFAULT_KEEP_MOST_CONFIDENT = (None,)
DEFAULT_TOP_K = 5

#: post-processing off: (min_volume_mm3, keep_largest, max_distance_to_pancreas_mm, never_empty, keep_most_confident)
PP_OFF = (None, None, None, None, None)
PP_FIELDS = ("min_volume_mm3", "keep_largest", "max_distance_to_pancreas_mm", "never_empty", "keep_most_confident")


@dataclass(frozen=True)
class Candidate:
    """One ensemble configuration. weights: per member (base-spec order), normalised to sum 1.
    factors: per-member class weight on the tumour label (None = all 1). pp: (min_volume_mm3,
    keep_largest, max_distance_to_pancreas_mm, never_empty, keep_most_confident), None = off (never_empty: True
    or None)."""

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
    if pp[4] is not None:
        parts.append(f"keep {pp[4]} most confident")
    if pp[2] is not None:
        parts.append(f"<= {pp[2]:g} mm from pancreas")
    if pp[3]:
        parts.append("never empty")
    return ", ".join(parts)


def dec_label(d: tuple) -> str:
    return "argmax" if d[0] == "argmax" else f"threshold {d[1]:g}"


def single_candidates(n_members: int) -> list[Candidate]:
    """Each member alone (argmax, no post-processing)."""
    return [Candidate(tuple(1.0 if j == i else 0.0 for j in range(n_members))) for i in range(n_members)]


def equal_candidate(n_members: int) -> Candidate:
    """Equal weights, argmax, no post-processing."""
    # written to the spec as these very numbers (6 decimals), so the fitter scores what the engine will run
    return Candidate(tuple(round(1.0 / n_members, 6) for _ in range(n_members)))


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


def uniq(xs: Iterable) -> list:
    """The distinct values in first-seen order; [None] when there are none."""
    out = []
    for x in xs:
        if x not in out:
            out.append(x)
    return out or [None]


# --------------------------------------------------------------------------------------------------
# the search space
# --------------------------------------------------------------------------------------------------
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
              never_empty: Sequence = DEFAULT_NEVER_EMPTY, top_k: int = DEFAULT_TOP_K,
              has_pancreas: bool = True,
              keep_most_confident: Sequence = DEFAULT_KEEP_MOST_CONFIDENT) -> "SearchSpace":
        """The space of the command line's options (the defaults are the command line's defaults)."""
        weights = _weight_vectors(n_members, weight_step, dirichlet, seed)
        weightings = _with_tumour_factors(weights, tumour_factors, n_members)
        return cls(weightings, _decisions(thresholds, argmax),
                   _pp_grid(min_volumes, keep_largest, max_distances, never_empty, has_pancreas,
                            keep_most_confident), top_k)

    @property
    def stage_a(self) -> list[Candidate]:
        return [Candidate(w, k, r, t) for (w, k) in self.weightings for (r, t) in self.decisions]

    @property
    def max_distance(self) -> float | None:
        ds = [p[2] for p in self.pp_grid if p[2] is not None]
        return max(ds) if ds else None

    @property
    def never_empty(self) -> bool:
        """Whether some setting falls back to the argmax tumour mask."""
        return any(p[3] for p in self.pp_grid)

    @property
    def min_threshold(self) -> float | None:
        ts = [t for r, t in self.decisions if r == "threshold"]
        return min(ts) if ts else None

    def n_candidates(self) -> int:
        a = len(self.weightings) * len(self.decisions)
        k = a if self.top_k <= 0 else min(self.top_k, a)
        return a + k * (len(self.pp_grid) - 1)

    def describe(self) -> dict:
        axes = {k: uniq([p[i] for p in self.pp_grid]) for i, k in enumerate(PP_FIELDS)}
        # in the order of the option (the all-off setting, always first, would put 'off' first)
        axes["never_empty"] = ["on" if v else None for v in uniq([p[3] for p in self.pp_grid[1:]])]
        return {"weightings": len(self.weightings),
                "weightings_with_tumour_factors": sum(k is not None for _, k in self.weightings),
                "decisions": [dec_label(d) for d in self.decisions],
                "postprocess_axes": {k: ["off" if v is None else v for v in vs] for k, vs in axes.items()},
                "postprocess_settings": len(self.pp_grid), "top_k": self.top_k,
                "candidates_per_search": self.n_candidates()}


def _weight_vectors(n: int, weight_step, dirichlet: int | None, seed: int) -> list[tuple[float, ...]]:
    """Simplex grid (auto: step 0.1 up to 3 members, 0.2 for 4-5, none beyond), every single member, equal
    weights, and Dirichlet samples (default: none up to 5 members, 150 beyond)."""
    if weight_step == "auto":
        weight_step = 0.1 if n <= 3 else (0.2 if n <= 5 else "none")
    if weight_step == "none":
        weight_step = None
    if dirichlet is None:
        dirichlet = 0 if n <= 5 else 150
    weights: list[tuple[float, ...]] = []
    if weight_step is not None:
        weights += simplex_grid(n, weight_step)
    vertices = [tuple(1.0 if j == i else 0.0 for j in range(n)) for i in range(n)]
    for w in vertices + [equal_candidate(n).weights]:
        if w not in weights:
            weights.append(w)
    if dirichlet:
        rng = np.random.default_rng(seed)
        for _ in range(dirichlet):
            w = tuple(round(float(x), 3) for x in rng.dirichlet(np.ones(n)))
            if w not in weights:
                weights.append(w)
    # the engine normalises by the weight sum, so weights need not sum to 1 exactly; they are scored as
    # they will be written (at most 6 decimals)
    return [tuple(round(x, 6) for x in w) for w in weights]


def _with_tumour_factors(weights, tumour_factors: Sequence[float], n: int) -> list:
    """(weights, None) for each weighting, plus (weights, factors) with one active member's tumour class
    weight times f, for each f != 1 (weightings with one active member only: a factor would cancel out)."""
    for f in tumour_factors:
        if not (f > 0 and math.isfinite(f)):
            raise InputError("--tumour-factors", f"factors must be positive numbers, got {f!r}")
    weightings: list = [(w, None) for w in weights]
    for w in weights:
        active = [i for i, x in enumerate(w) if x > 0]
        if len(active) < 2:
            continue
        for i in active:
            for f in tumour_factors:
                if f != 1:
                    weightings.append((w, tuple(f if j == i else 1.0 for j in range(n))))
    return weightings


def _decisions(thresholds: Sequence[float], argmax: bool) -> list:
    decisions: list = [("argmax", None)] if argmax else []
    for t in thresholds:
        if not 0 < t < 1:
            raise InputError("--thresholds", f"thresholds must be in (0, 1), got {t:g}")
        decisions.append(("threshold", float(t)))
    if not decisions:
        raise InputError("--thresholds", "no decision rule left (argmax off and no threshold)")
    return decisions


def _pp_grid(min_volumes: Sequence, keep_largest: Sequence, max_distances: Sequence, never_empty: Sequence,
             has_pancreas: bool, keep_most_confident: Sequence = DEFAULT_KEEP_MOST_CONFIDENT) -> list:
    """Off first, then every combination of the five axes (in the order of their values) but those that keep
    the largest AND the most confident components (the spec allows one of the two)."""
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
    for k in keep_most_confident:
        if k is not None and k < 1:
            raise InputError("--keep-most-confident", f"must be >= 1 or off, got {k}")
    for e in never_empty:
        if e not in (True, None):
            raise InputError("--never-empty", f"values are on or off, got {e!r}")
    combos = itertools.product(uniq(min_volumes), uniq(keep_largest), uniq(max_distances), uniq(never_empty),
                               uniq(keep_most_confident))
    return [PP_OFF] + [p for p in combos if p != PP_OFF and (p[1] is None or p[4] is None)]
