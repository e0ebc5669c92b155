"""Post-processing that reads only the tumour voxels (now) against the whole-image version (until 2026-12-08), in the
same run, inside the fit's own scoring, on real out-of-fold maps.

    python bench/postprocess_voxels.py --oof /work/data/exp/rebuild_fast/data/oof/Dataset901_PhantomT1 \
        --gt /work/data/exp/rebuild_fast/data/nnUNet_raw/Dataset901_PhantomT1/labelsTr --cases 8 \
        --json bench/results/postprocess-voxels.json

The members are the folders under --oof. On the first --cases cases the fit's Evaluator scores every candidate of a
search with Task 1's post-processing axes (the fit's defaults and --keep-most-confident off,1,2; weights in steps of
--weight-step, argmax and --thresholds) twice per round, once with `postprocess` as it was (`postprocess_before`, kept here as the reference that
tests/test_postprocess.py also checks against) and once as it is; rounds alternate the order. Reports the
post-processing seconds of both (the Evaluator's own clock) and checks that every metric of every candidate is
identical.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cc3d
import numpy as np
import torch
from scipy import ndimage
from scipy.ndimage import distance_transform_edt

from panther_ensemble.inference import postprocess as pp_module
from panther_ensemble.scoring import fit
from panther_ensemble.scoring.fit import evaluator as evaluator_module


def postprocess_before(tumor, spacing_zyx, pancreas=None, *, min_volume_mm3=None, keep_largest=None,
                       max_distance_to_pancreas_mm=None, keep_most_confident=None, tumor_probability=None,
                       quiet=True):
    """`postprocess` until 2026-12-08, line for line: bincount, the peaks (`component_peaks`), the pancreas gate's
    per-label minimum (scipy) and the keep lookup over the whole label image. The same rules in the same order."""
    if keep_largest is not None and keep_most_confident is not None:
        raise ValueError("keep_largest and keep_most_confident exclude each other")
    if (min_volume_mm3 is None and keep_largest is None and max_distance_to_pancreas_mm is None
            and keep_most_confident is None) or not tumor.any():
        return tumor
    components, n = cc3d.connected_components(tumor, connectivity=26, return_N=True)
    volumes = np.bincount(components.ravel(), minlength=n + 1)[1:] * float(np.prod(spacing_zyx))
    keep = np.ones(n, dtype=bool)
    if min_volume_mm3 is not None:
        keep &= volumes >= min_volume_mm3
    if max_distance_to_pancreas_mm is not None and pancreas is not None and pancreas.any():
        keep &= _near_pancreas_before(components, n, pancreas, spacing_zyx, max_distance_to_pancreas_mm)
    if keep_largest is not None:
        keep = pp_module._keep_first(np.argsort(-volumes, kind="stable"), keep, keep_largest)
    if keep_most_confident is not None:
        peaks = pp_module.component_peaks(components, n, tumor_probability)
        keep = pp_module._keep_first(np.lexsort((-volumes, -peaks)), keep, keep_most_confident)
    return np.concatenate([[False], keep])[components]


def _near_pancreas_before(components, n, pancreas, spacing_zyx, max_mm):
    """postprocess._near_pancreas until 2026-12-08, line for line (scipy's minimum per label over the box)."""
    nz = np.argwhere(components > 0)
    margin = [int(np.ceil(max_mm / s)) + 1 for s in spacing_zyx]
    lo = np.maximum(nz.min(0) - margin, 0)
    hi = np.minimum(nz.max(0) + 1 + np.array(margin), components.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub_pancreas = pancreas[box]
    if not sub_pancreas.any():
        return np.zeros(n, dtype=bool)
    distance = distance_transform_edt(~sub_pancreas, sampling=spacing_zyx)
    nearest = ndimage.minimum(distance, labels=components[box], index=np.arange(1, n + 1))
    return np.asarray(nearest) <= max_mm


def score(data, candidates, implementation) -> tuple[dict, float, int]:
    """Every candidate on every case with `implementation` as the engine's postprocess (the Evaluator's and the
    never-empty fallback's)."""
    saved = evaluator_module.postprocess, pp_module.postprocess
    evaluator_module.postprocess = pp_module.postprocess = implementation
    try:
        ev = fit.Evaluator(data, "tumor", "pancreas")
        ev.ensure(candidates, range(len(data.cases)))
    finally:
        evaluator_module.postprocess, pp_module.postprocess = saved
    return {c: ev.metrics[c].copy() for c in candidates}, ev.seconds["postprocess"], ev.stats["postprocess"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--oof", type=Path, required=True)
    p.add_argument("--gt", type=Path, required=True)
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--weight-step", type=float, default=0.5)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5],
                   help="the decisions besides argmax (the fit's default grid is finer)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    members = [fit.find_member(d.name, d) for d in sorted(a.oof.iterdir()) if d.is_dir()]
    space = fit.SearchSpace.build(len(members), weight_step=a.weight_step, thresholds=a.thresholds,
                                  keep_most_confident=[None, 1, 2])
    names = sorted(members[0].files)[:a.cases]
    data = fit.load_cases(members, a.gt, fit.crop_rule(space, members, "tumor", "pancreas"), case_ids=names)
    candidates = [fit.Candidate(c.weights, c.factors, c.rule, c.threshold, pp)
                  for c in space.stage_a for pp in space.pp_grid]
    seconds = {"before": [], "now": []}
    results = {}
    calls = None
    for r in range(a.rounds):
        for name in (("before", "now") if r % 2 == 0 else ("now", "before")):
            got, spent, calls = score(data, candidates, postprocess_before if name == "before" else pp_module.postprocess)
            seconds[name].append(spent)
            results.setdefault(name, got)
    identical = all(np.array_equal(results["before"][c], results["now"][c], equal_nan=True) for c in candidates)
    before, now = min(seconds["before"]), min(seconds["now"])
    result = {
        "machine": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M"), "members": [m.name for m in members],
        "cases": len(data.cases), "candidates": len(candidates), "postprocess_calls": calls,
        "crop_voxels": int(sum(int(np.prod(c.crop_shape)) for c in data.cases)),
        "postprocess_s_before": [round(s, 2) for s in seconds["before"]],
        "postprocess_s_now": [round(s, 2) for s in seconds["now"]],
        "ratio_best_of_rounds": round(before / now, 2), "identical_metrics": identical}
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
