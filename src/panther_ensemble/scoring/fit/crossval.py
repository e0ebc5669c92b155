"""Choosing a candidate on some cases, and estimating how well that choice does on others.

`select` searches stage A, then stage B around its best `top_k`, on the cases it is given, and returns
the best candidate by the objective. `nested_cv` runs it on K-1 outer folds and scores the choice on the
held-out fold, for every fold; then selects once more on all cases (the fitted spec).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from ...errors import InputError
from ..leaderboard import aggregate, mean_rank_of
from ..metrics import CASE_KEYS
from .evaluator import DEFAULT_METRIC_WEIGHTS, Evaluator, weighted_score
from .space import PP_OFF, Candidate, SearchSpace, equal_candidate, single_candidates

log = logging.getLogger(__name__)

OBJECTIVES = ("mean-rank", "weighted")
DEFAULT_FOLDS = 5
#: how firm the final choice is: its `STABILITY_TOP` best candidates re-chosen on this many bootstrap draws of the cases
STABILITY_RESAMPLES = 500
STABILITY_TOP = 5


@dataclass
class Scored:
    cand: Candidate
    agg: dict
    score: float  # weighted score
    mean_rank: float | None
    stage: str

    def key(self, objective: str) -> tuple:
        return objective_key(objective, self.mean_rank, self.score)


def objective_key(objective: str, mean_rank: float | None, score: float) -> tuple:
    """The search's sort key (smaller is better): mean rank, then the weighted score; or the weighted score alone."""
    if objective == "mean-rank":
        return (mean_rank, -score)
    return (-score,)


@dataclass
class Selection:
    best: Scored
    scored: list[Scored]
    singles: dict[str, dict]  # member name -> aggregate on the same cases

    @property
    def n_candidates(self) -> int:
        return len(self.scored)


def select(ev: Evaluator, space: SearchSpace, case_idx: Sequence[int], objective: str,
           metric_weights: Mapping[str, float]) -> Selection:
    """Search on these cases only: stage A, then stage B around the top_k of stage A; the best by objective.
    mean-rank: the challenge's mean rank against the single members (ties: weighted score)."""
    names = [m.name for m in ev.data.members]
    singles_c = single_candidates(len(names))
    stage_a = space.stage_a
    ev.ensure(stage_a + singles_c, case_idx)
    scales = ev.scales(case_idx)
    singles = {n: ev.aggregate(c, case_idx) for n, c in zip(names, singles_c)}

    def score(cands: list[Candidate], stage: str) -> list[Scored]:
        return score_on(ev, cands, case_idx, singles, scales, objective, metric_weights, stage)

    scored_a = score(stage_a, "A")
    order = sorted(range(len(scored_a)), key=lambda i: (scored_a[i].key(objective), i))
    k = len(order) if space.top_k <= 0 else min(space.top_k, len(order))
    top = [scored_a[i].cand for i in order[:k]]
    stage_b = [replace(c, pp=p) for c in top for p in space.pp_grid if p != PP_OFF]
    ev.ensure(stage_b, case_idx)
    scored = scored_a + score(stage_b, "B")
    best_i = min(range(len(scored)), key=lambda i: choice_order(scored[i], objective, i))
    return Selection(scored[best_i], scored, singles)


def score_on(ev: Evaluator, cands: Sequence[Candidate], case_idx: Sequence[int], singles: Mapping[str, dict],
             scales: tuple[float, float], objective: str, metric_weights: Mapping[str, float],
             stage: str = "") -> list[Scored]:
    """Each candidate's aggregate on these cases, weighted score and (mean-rank) its mean rank against the single
    members' aggregates on the same cases (`singles`)."""
    me = "\x00candidate"
    out = []
    for c in cands:
        agg = ev.aggregate(c, case_idx)
        mr = mean_rank_of(me, {**singles, me: agg}) if objective == "mean-rank" else None
        out.append(Scored(c, agg, weighted_score(agg, metric_weights, scales), mr, stage))
    return out


def choice_order(sc: Scored, objective: str, position: int) -> tuple:
    """The order in which `select` prefers candidates: the objective; an exact tie goes to a never-empty setting
    (it can only change a case whose mask would be empty, and did not change one for the worse here), then to
    the simpler candidate (earlier in the search)."""
    return (sc.key(objective), not sc.cand.pp[3], position)


@dataclass
class Contender:
    """One of the final search's best candidates, and how often the same objective would choose it on a
    bootstrap draw of the cases."""

    cand: Candidate
    mean_rank: float | None
    score: float
    share_chosen: float


def choice_stability(ev: Evaluator, sel: Selection, case_idx: Sequence[int], objective: str,
                     metric_weights: Mapping[str, float], top: int = STABILITY_TOP,
                     resamples: int = STABILITY_RESAMPLES, seed: int = 0) -> list[Contender]:
    """How firm a selection's member weights are. Contenders: the `top` best distinct weightings of `sel` (by the
    objective; the first is its choice), each with the chosen decision and post-processing, so that they differ in
    the weights only (a weighting that stage B never post-processed is not held back by that). They are chosen
    among once more on `resamples` draws of the cases with replacement, the same draw for every contender and for
    the single members the mean rank is taken against (paired), by the same objective and tie-break. A choice that
    wins a minority of the draws is one of several near-equals: its weights are not a measure of each member's
    worth. Only these contenders are re-ranked, not the whole search (the cost of a full search per draw)."""
    names = [m.name for m in ev.data.members]
    case_idx = list(case_idx)
    chosen = sel.best.cand
    order = sorted(range(len(sel.scored)), key=lambda i: choice_order(sel.scored[i], objective, i))
    weightings: list[tuple] = []
    first_at: list[int] = []  # where each weighting first comes in the search: select's tie-break among them
    for i in order:
        if sel.scored[i].cand.wd not in weightings:
            weightings.append(sel.scored[i].cand.wd)
            first_at.append(i)
        if len(weightings) == max(1, top):
            break
    contenders = [replace(chosen, weights=w, factors=f) for w, f in weightings]
    ev.ensure(contenders, case_idx)
    singles_c = single_candidates(len(names))

    def scored_on(cases: list[int]) -> list[Scored]:
        singles = {n: ev.aggregate(c, cases) for n, c in zip(names, singles_c)}
        return score_on(ev, contenders, cases, singles, ev.scales(cases), objective, metric_weights)

    wins = [0] * len(contenders)
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        drawn = scored_on([case_idx[j] for j in rng.integers(0, len(case_idx), len(case_idx))])
        wins[min(range(len(contenders)), key=lambda p: choice_order(drawn[p], objective, first_at[p]))] += 1
    on_all = scored_on(case_idx)
    return [Contender(c, sc.mean_rank, sc.score, wins[p] / resamples if resamples else float("nan"))
            for p, (c, sc) in enumerate(zip(contenders, on_all))]


def best_contender_on_all(stability: Sequence[Contender], objective: str) -> int:
    """Which contender the objective prefers on all the cases (0: the choice itself). Another one means that a
    weighting the search ranked lower does better with the chosen decision and post-processing, a pair that
    stage B never scored (it post-processes only the top_k of stage A)."""
    keys = [(objective_key(objective, c.mean_rank, c.score), p) for p, c in enumerate(stability)]
    return min(keys)[1] if keys else 0


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
    stability: list[Contender] = field(default_factory=list)  # the final choice and its closest contenders
    stability_resamples: int = 0


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
    names = [m.name for m in ev.data.members]
    t0 = time.perf_counter()
    ev.ensure(space.stage_a + single_candidates(len(names)), everything)
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
                 sel.best.cand.label(names), len(train), results[-1].test_agg["dice"], results[-1].test_agg["hd95"],
                 len(test))
    t_cv = time.perf_counter() - t1
    t2 = time.perf_counter()
    final = select(ev, space, everything, objective, metric_weights)
    t_final = time.perf_counter() - t2
    t3 = time.perf_counter()
    resamples = STABILITY_RESAMPLES
    stability = choice_stability(ev, final, everything, objective, metric_weights, resamples=resamples, seed=seed)
    t_stability = time.perf_counter() - t3
    heldout_agg = aggregate({i: dict(zip(CASE_KEYS, row)) for i, row in enumerate(heldout.tolist())})
    reference = {nm: ev.aggregate(c, everything) for nm, c in zip(names, single_candidates(len(names)))}
    eq = equal_candidate(len(names))
    ev.ensure([eq], everything)
    reference["equal-weight ensemble"] = ev.aggregate(eq, everything)
    return FitResult(results, final, heldout, heldout_agg, final.best.agg, reference, len(ev.metrics),
                     {"stage_a_s": t_a, "outer_folds_s": t_cv, "final_search_s": t_final, "stability_s": t_stability},
                     stability, resamples)
