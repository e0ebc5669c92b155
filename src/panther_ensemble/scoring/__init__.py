"""Scoring: the PANTHER challenge's metrics, and what is built on them.

    metrics.py      the five metrics of one case (Dice, surface Dice 5 mm, HD95, MASD, volumes), the
                    official script's spacing quirk, the metric keys and their directions, and
                    mask_dice (two masks' overlap, 1 when both are empty; for agreement checks)
    leaderboard.py  aggregates over cases (means, volume RMSE), ranks, mean rank
    evaluate.py     prediction folders against a ground-truth folder -> json / csv / terminal tables
    figures.py      metrics.png and leaderboard.png
    fit/            choosing an ensemble's weights, decision and post-processing by these metrics
                    (nested cross-validated; needs torch, so it is not imported here)

Python use, without files::

    from panther_ensemble.scoring import case_metrics, aggregate, rank_table
    m = case_metrics(pred, gt, spacing_zyx=(3.0, 1.19, 1.19))          # one case -> dict
    agg = aggregate({"case_a": m, ...})                                 # dict of five numbers
    rows = rank_table({"model A": agg_a, "model B": agg_b})             # leaderboard rows

Importing this package changes nothing outside it: no patched library, no logger or warning settings.
"""

from .leaderboard import aggregate, paired_differences, rank_stability, rank_table
from .metrics import AGGREGATE_KEYS, CASE_KEYS, HIGHER_IS_BETTER, case_metrics

__all__ = ["AGGREGATE_KEYS", "CASE_KEYS", "HIGHER_IS_BETTER", "aggregate", "case_metrics", "paired_differences", "rank_stability", "rank_table"]
