"""From per-case metrics to the challenge's aggregates, and from aggregates to a ranked leaderboard.

Aggregates: the mean of Dice, surface Dice, HD95 and MASD over the cases, and the RMSE of predicted vs
true tumour volume. Ranking as grand-challenge ranks submissions: a competition rank per aggregate (in
the metric's direction, ties share the lower rank), then the mean of those ranks, then a final position.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .metrics import AGGREGATE_KEYS, HIGHER_IS_BETTER, MEAN_KEYS


def aggregate(cases: Mapping[object, Mapping[str, float]]) -> dict:
    """Mean Dice, surface Dice, HD95 and MASD over the cases, and the RMSE of predicted vs true volume."""
    if not cases:
        raise ValueError("aggregate() needs at least one case")
    rows = list(cases.values())
    out = {k: float(np.mean([float(r[k]) for r in rows])) for k in MEAN_KEYS}
    err = np.array([float(r["pred_volume_mm3"]) - float(r["gt_volume_mm3"]) for r in rows])
    out["volume_rmse_mm3"] = float(np.sqrt(np.mean(err ** 2)))
    return out


def competition_ranks(values: Sequence[float], higher_is_better: bool) -> list[int]:
    """Rank 1 = best; equal values share the lowest rank of their group ("1224"), as grand-challenge does."""
    keyed = [(-v if higher_is_better else v) for v in values]
    return [1 + sum(1 for other in keyed if other < mine) for mine in keyed]


def rank_table(aggregates: Mapping[str, Mapping[str, float]]) -> list[dict]:
    """Leaderboard rows sorted by mean rank (best first), the way grand-challenge ranks submissions.

    Each row: name, the five aggregates, `rank_<metric>` for each, `mean_rank` and `position` (the final
    place, itself a competition rank of the mean rank). Ties (exactly equal values) share the lower rank.
    Rows with equal mean rank keep their input order.
    """
    names = list(aggregates)
    if not names:
        raise ValueError("rank_table() needs at least one entry")
    for n in names:
        bad = [k for k in AGGREGATE_KEYS if not math.isfinite(float(aggregates[n][k]))]
        if bad:
            raise ValueError(f"aggregate of {n!r} has non-finite {bad}")
    rows = [{"name": n, **{k: float(aggregates[n][k]) for k in AGGREGATE_KEYS}} for n in names]
    for k in AGGREGATE_KEYS:
        for row, r in zip(rows, competition_ranks([row[k] for row in rows], HIGHER_IS_BETTER[k])):
            row[f"rank_{k}"] = r
    for row in rows:
        row["mean_rank"] = float(np.mean([row[f"rank_{k}"] for k in AGGREGATE_KEYS]))
    for row, pos in zip(rows, competition_ranks([row["mean_rank"] for row in rows], False)):
        row["position"] = pos
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["mean_rank"], i))
    return [rows[i] for i in order]


def mean_rank_of(name: str, aggregates: Mapping[str, Mapping[str, float]]) -> float:
    """The mean rank of entry `name` on the leaderboard of `aggregates`."""
    return next(r["mean_rank"] for r in rank_table(aggregates) if r["name"] == name)


def rank_stability(per_case: Mapping[str, Mapping[object, Mapping[str, float]]], resamples: int = 2000,
                   seed: int = 0) -> dict:
    """How firm a leaderboard's order is: the cases are drawn with replacement (the same draw for every
    entry, so comparisons stay paired) `resamples` times, and each draw is ranked like the full table.

    per_case: entry name -> case -> metrics with the CASE_KEYS; every entry needs the same cases.
    Returns entry name -> {"first": share of draws in which the entry holds position 1 (ties count for every
    tied entry), "mean_rank_p2.5", "mean_rank_median", "mean_rank_p97.5": its mean rank's percentiles}.
    """
    names = list(per_case)
    if not names:
        raise ValueError("rank_stability() needs at least one entry")
    cases = _shared_cases(per_case, resamples, "rank_stability")
    rng = np.random.default_rng(seed)
    first = {n: 0 for n in names}
    mean_ranks: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(resamples):
        draw = rng.integers(0, len(cases), len(cases))
        aggregates = {n: aggregate({i: per_case[n][cases[c]] for i, c in enumerate(draw)}) for n in names}
        for row in rank_table(aggregates):
            mean_ranks[row["name"]].append(row["mean_rank"])
            first[row["name"]] += row["position"] == 1
    return {n: {"first": first[n] / resamples,
                "mean_rank_p2.5": float(np.percentile(mean_ranks[n], 2.5)),
                "mean_rank_median": float(np.median(mean_ranks[n])),
                "mean_rank_p97.5": float(np.percentile(mean_ranks[n], 97.5))} for n in names}


def _shared_cases(per_case: Mapping[str, Mapping[object, Mapping[str, float]]], resamples: int, caller: str) -> list:
    """The cases every entry is scored on, in the first entry's order: rank_stability and paired_differences
    draw from this one order, so that one seed gives both the same case sets."""
    names = list(per_case)
    cases = list(per_case[names[0]])
    for n in names:
        if set(per_case[n]) != set(cases):
            raise ValueError(f"entry {n!r} is scored on other cases than {names[0]!r}")
    if not cases or resamples < 1:
        raise ValueError(f"{caller}() needs at least one case and one resample")
    return cases


def _case_columns(cases: Mapping[object, Mapping[str, float]], order: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) array of the MEAN_KEYS and (n,) squared volume errors of `cases`, in `order`."""
    means = np.array([[float(cases[c][k]) for k in MEAN_KEYS] for c in order], dtype=np.float64)
    err2 = np.array([(float(cases[c]["pred_volume_mm3"]) - float(cases[c]["gt_volume_mm3"])) ** 2 for c in order])
    return means, err2


def _drawn_aggregates(means: np.ndarray, err2: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(resamples, 5) aggregates in AGGREGATE_KEYS order, one row per draw of case indices (resamples, n)."""
    return np.concatenate([means[draws].mean(axis=1), np.sqrt(err2[draws].mean(axis=1))[:, None]], axis=1)


def paired_differences(per_case: Mapping[str, Mapping[object, Mapping[str, float]]], reference: str,
                       resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Every entry against `reference`, metric by metric, on the same cases: is the difference real?

    per_case: entry name -> case -> metrics with the CASE_KEYS; every entry needs the same cases.
    For each other entry and each aggregate: `difference` (entry minus reference, over all cases: what
    `aggregate` gives, summed in one case order for both so that equal entries differ by exactly 0), its
    percentile bootstrap interval at `level` (`low`, `high`: cases drawn with replacement `resamples` times,
    one draw for both entries, so the comparison stays paired), and the
    shares of draws in which the entry's aggregate is `better` than the reference's or `equal` to it, in
    the metric's direction (HIGHER_IS_BETTER). An interval that excludes 0 says the cases support the sign.
    """
    names = list(per_case)
    if reference not in per_case:
        raise ValueError(f"paired_differences(): no entry {reference!r} (entries: {', '.join(map(repr, names))})")
    if not 0.0 < level < 1.0:
        raise ValueError(f"paired_differences(): level must lie between 0 and 1, got {level!r}")
    cases = _shared_cases(per_case, resamples, "paired_differences")
    draws = np.random.default_rng(seed).integers(0, len(cases), (resamples, len(cases)))
    every = np.arange(len(cases))[None, :]  # all cases once, summed in the same order for every entry
    ref_columns = _case_columns(per_case[reference], cases)
    ref_drawn, ref_full = _drawn_aggregates(*ref_columns, draws), _drawn_aggregates(*ref_columns, every)[0]
    tail = 100.0 * (1.0 - level) / 2.0
    out: dict = {}
    for n in names:
        if n == reference:
            continue
        columns = _case_columns(per_case[n], cases)
        full = _drawn_aggregates(*columns, every)[0] - ref_full
        diff = _drawn_aggregates(*columns, draws) - ref_drawn
        out[n] = {}
        for j, k in enumerate(AGGREGATE_KEYS):
            sign = 1.0 if HIGHER_IS_BETTER[k] else -1.0
            out[n][k] = {"difference": float(full[j]),
                         "low": float(np.percentile(diff[:, j], tail)),
                         "high": float(np.percentile(diff[:, j], 100.0 - tail)),
                         "better": float(np.mean(sign * diff[:, j] > 0)),
                         "equal": float(np.mean(diff[:, j] == 0))}
    return out
