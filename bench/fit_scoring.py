"""The fit's scoring with and without the per-case ground-truth surface, in the same run, on real maps.

    python bench/fit_scoring.py --oof /work/data/oof/Dataset901_PhantomT1 \
        --gt /work/data/nnUNet_raw/Dataset901_PhantomT1/labelsTr --cases 12 --json bench/results/fit-scoring.json

The members are the folders under --oof. On the first --cases cases, every candidate of a coarse search
(weights in steps of 0.5, argmax and four thresholds, post-processing off) is scored twice by the fit's
Evaluator: once computing the ground truth's border distances in every metric call (the fit before
this change), once with them kept per case. Reports the metric seconds of both and checks that every
metric of every candidate is identical.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from panther_ensemble.scoring import fit


def score(data, candidates, kept: int) -> tuple[dict, float, dict]:
    ev = fit.Evaluator(data, "tumor", "pancreas", gt_surfaces_kept=kept)
    started = time.perf_counter()
    ev.ensure(candidates, range(len(data.cases)))
    wall = time.perf_counter() - started
    return {c: ev.metrics[c].copy() for c in candidates}, wall, dict(ev.seconds, **ev.stats)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--oof", type=Path, required=True)
    p.add_argument("--gt", type=Path, required=True)
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    members = [fit.find_member(d.name, d) for d in sorted(a.oof.iterdir()) if d.is_dir()]
    space = fit.SearchSpace.build(len(members), weight_step=0.5, min_volumes=[None], keep_largest=[None],
                                  max_distances=[None])
    names = sorted(members[0].files)[:a.cases]
    data = fit.load_cases(members, a.gt, fit.crop_rule(space, members, "tumor", "pancreas"), case_ids=names)
    candidates = space.stage_a
    before, wall_before, stats_before = score(data, candidates, kept=0)
    after, wall_after, stats_after = score(data, candidates, kept=fit.evaluator.GT_SURFACES_KEPT)
    identical = all(np.array_equal(before[c], after[c], equal_nan=True) for c in candidates)
    result = {
        "machine": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M"), "members": [m.name for m in members],
        "cases": len(data.cases), "candidates": len(candidates), "metric_calls": stats_after["metric_calls"],
        "metrics_s_without_cache": round(stats_before["metrics"], 2), "metrics_s_with_cache": round(stats_after["metrics"], 2),
        "metrics_ratio": round(stats_after["metrics"] / stats_before["metrics"], 3),
        "wall_s_without_cache": round(wall_before, 2), "wall_s_with_cache": round(wall_after, 2),
        "wall_ratio": round(wall_after / wall_before, 3), "identical_metrics": identical}
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
