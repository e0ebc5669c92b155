"""Score folders of predicted masks against a ground-truth folder; write and print the results.

Cases are the ground-truth files (`io.scan_images`); each ground truth is read once for all prediction
folders (`io.read_labels`), its geometry compared with each prediction's, and every pair scored by
`metrics.case_metrics`. Outputs: metrics.json / .csv / .png per folder, leaderboard.json / .csv / .png
for several, and compact tables for the terminal. docs/EVALUATION.md has the formats.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..io import IMAGE_SUFFIXES, Geometry, read_labels, scan_images
from .figures import plot_leaderboard, plot_metrics
from .leaderboard import paired_differences, rank_stability
from .metrics import AGGREGATE_KEYS, CASE_KEYS, MEAN_KEYS, case_metrics

log = logging.getLogger(__name__)

#: geometry tolerances between a prediction and its ground truth (spacing: the official script's 1e-4)
SPACING_ATOL_MM = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


# --------------------------------------------------------------------------------------------------
# scoring folders
# --------------------------------------------------------------------------------------------------
def check_geometry(pred: Geometry, pred_path: Path, gt: Geometry, gt_path: Path) -> None:
    """Same size (InputError naming both files), and the same spacing/origin/direction within tolerance."""
    diff = pred.mismatch(gt, SPACING_ATOL_MM, ORIGIN_ATOL_MM, DIRECTION_ATOL)
    if diff is None:
        return
    what, mine, theirs, atol = diff
    if what == "size":
        raise InputError(pred_path, f"size {mine} (x, y, z) differs from ground truth {gt_path} size {theirs}")

    def fmt(t):
        return "(" + ", ".join(f"{v:.6g}" for v in t) + ")"

    raise InputError(pred_path, f"{what} {fmt(mine)} differs from ground truth {gt_path} {what} {fmt(theirs)} "
                                f"(tolerance {atol:g})")


def _prediction_files(pred_dirs: Sequence[Path], gt_ids: Sequence[str], missing_as_empty: bool):
    """{case id: path} per prediction folder; InputError for missing cases unless `missing_as_empty`."""
    out = []
    for d in pred_dirs:
        files = scan_images(d)
        missing = sorted(set(gt_ids) - set(files))
        if missing and not missing_as_empty:
            listed = ", ".join(missing[:10]) + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
            raise InputError(d, f"no prediction for {len(missing)} ground-truth case(s): {listed} "
                                "(use --missing-as-empty to score them as empty predictions)")
        if missing:
            log.warning("%s: %d case(s) without prediction scored as empty: %s", d, len(missing), ", ".join(missing))
        extra = sorted(set(files) - set(gt_ids))
        if extra:
            log.warning("%s: %d prediction(s) without ground truth ignored: %s", d, len(extra), ", ".join(extra))
        out.append(files)
    return out


def evaluate_folders(pred_dirs: Sequence[Path], gt_dir: Path, official: bool = False,
                     missing_as_empty: bool = False) -> list[dict[str, dict]]:
    """Per-case metrics for each prediction folder against `gt_dir`: one {case id: metrics} per folder.

    Cases are the ground-truth files; each ground truth is read once for all folders. Missing predictions
    raise InputError listing them, unless `missing_as_empty` (then they score as an all-zero prediction).
    Predictions without ground truth are ignored with a warning.
    """
    gt_files = scan_images(gt_dir)
    if not gt_files:
        raise InputError(gt_dir, f"no ground-truth images ({', '.join(IMAGE_SUFFIXES)})")
    pred_files = _prediction_files(pred_dirs, list(gt_files), missing_as_empty)
    results: list[dict[str, dict]] = [{} for _ in pred_dirs]
    for cid, gt_path in gt_files.items():
        gt_arr, gt_geo = read_labels(gt_path)
        for k, files in enumerate(pred_files):
            if cid in files:
                pred_arr, pred_geo = read_labels(files[cid])
                check_geometry(pred_geo, files[cid], gt_geo, gt_path)
                pred_name = files[cid]
            else:
                pred_arr, pred_name = np.zeros(gt_arr.shape, bool), f"{pred_dirs[k]}/{cid} (missing)"
            results[k][cid] = case_metrics(pred_arr, gt_arr, gt_geo.spacing_zyx, official,
                                           pred_name=pred_name, gt_name=gt_path)
            log.debug("%s %s %s", pred_dirs[k], cid, results[k][cid])
    return results


# --------------------------------------------------------------------------------------------------
# names of the entries
# --------------------------------------------------------------------------------------------------
def default_names(pred_dirs: Sequence[Path]) -> list[str]:
    """The folder names, or the full paths when two folders share a name."""
    base = [p.resolve().name or str(p) for p in pred_dirs]
    return base if len(set(base)) == len(base) else [str(p) for p in pred_dirs]


def safe_dirnames(names: Sequence[str]) -> list[str]:
    """One distinct, file-system-safe folder name per entry name."""
    used: list[str] = []
    for name in names:
        sub = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "entry"
        while sub in used:
            sub += "_"
        used.append(sub)
    return used


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------
def write_metrics(out_dir: Path, cases: Mapping[str, Mapping[str, float]], agg: Mapping[str, float],
                  meta: Mapping, title: str) -> None:
    """metrics.json, metrics.csv and metrics.png in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"cases": {c: {k: float(m[k]) for k in CASE_KEYS} for c, m in cases.items()},
           "aggregate": {k: float(agg[k]) for k in AGGREGATE_KEYS}, "meta": dict(meta)}
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n")
    with open(out_dir / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", *CASE_KEYS, "volume_rmse_mm3"])
        for c, m in cases.items():
            w.writerow([c, *(repr(float(m[k])) for k in CASE_KEYS), ""])
        w.writerow(["aggregate", *(repr(float(agg[k])) for k in MEAN_KEYS), "", "",
                    repr(float(agg["volume_rmse_mm3"]))])
    plot_metrics(cases, agg, out_dir / "metrics.png", title)


def write_leaderboard(out_dir: Path, rows: Sequence[Mapping], meta: Mapping) -> None:
    """leaderboard.json, leaderboard.csv and leaderboard.png in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "leaderboard.json").write_text(json.dumps({"leaderboard": list(rows), "meta": dict(meta)},
                                                         indent=2) + "\n")
    cols = ["position", "name", "mean_rank", *AGGREGATE_KEYS, *(f"rank_{k}" for k in AGGREGATE_KEYS)]
    with open(out_dir / "leaderboard.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow([repr(r[c]) if isinstance(r[c], float) else r[c] for c in cols])
    plot_leaderboard(rows, out_dir / "leaderboard.png")


# --------------------------------------------------------------------------------------------------
# terminal tables
# --------------------------------------------------------------------------------------------------
def _fmt(v: float, digits: int) -> str:
    return f"{v:.{digits}f}"


def format_case_table(cases: Mapping[str, Mapping[str, float]], agg: Mapping[str, float]) -> str:
    """One line per case and a mean / RMSE line."""
    width = max([len("case"), len("mean / RMSE")] + [len(c) for c in cases])
    head = (f"{'case':<{width}} {'Dice':>7} {'sDice5':>7} {'HD95mm':>8} {'MASDmm':>8} "
            f"{'Vpred_mm3':>11} {'Vgt_mm3':>11}")
    lines = [head, "-" * len(head)]
    for cid, m in cases.items():
        lines.append(f"{cid:<{width}} {_fmt(m['dice'], 4):>7} {_fmt(m['surface_dice_5mm'], 4):>7} "
                     f"{_fmt(m['hd95'], 2):>8} {_fmt(m['masd'], 2):>8} {_fmt(m['pred_volume_mm3'], 1):>11} "
                     f"{_fmt(m['gt_volume_mm3'], 1):>11}")
    lines.append("-" * len(head))
    lines.append(f"{'mean / RMSE':<{width}} {_fmt(agg['dice'], 4):>7} {_fmt(agg['surface_dice_5mm'], 4):>7} "
                 f"{_fmt(agg['hd95'], 2):>8} {_fmt(agg['masd'], 2):>8} "
                 f"{'RMSE ' + _fmt(agg['volume_rmse_mm3'], 1):>23}")
    return "\n".join(lines)


def format_leaderboard(rows: Sequence[Mapping]) -> str:
    """One line per entry, best first, each metric with its rank in brackets."""
    width = max([len("name")] + [len(r["name"]) for r in rows])
    head = (f"{'#':>3} {'name':<{width}} {'mean rank':>9}  {'Dice':>11} {'sDice5':>11} {'HD95mm':>12} "
            f"{'MASDmm':>12} {'RMSE_mm3':>14}")
    lines = [head, "-" * len(head)]
    for r in rows:
        def cell(k, d, w):
            return f"{_fmt(r[k], d) + ' (' + str(r['rank_' + k]) + ')':>{w}}"

        lines.append(f"{r['position']:>3} {r['name']:<{width}} {r['mean_rank']:>9.2f}  "
                     f"{cell('dice', 4, 11)} {cell('surface_dice_5mm', 4, 11)} {cell('hd95', 2, 12)} "
                     f"{cell('masd', 2, 12)} {cell('volume_rmse_mm3', 0, 14)}")
    lines.append("(rank per metric in brackets; equal values share the lower rank)")
    return "\n".join(lines)


#: how the terminal shows each aggregate: label and decimals
_SHOWN = {"dice": ("Dice", 4), "surface_dice_5mm": ("sDice5", 4), "hd95": ("HD95mm", 2), "masd": ("MASDmm", 2),
          "volume_rmse_mm3": ("RMSE_mm3", 0)}


def bootstrap_summary(per_case: Mapping[str, Mapping[str, Mapping[str, float]]], reference: str, resamples: int,
                      seed: int = 0) -> dict:
    """bootstrap.json's content: how firm the leaderboard's order is (`leaderboard.rank_stability`) and every
    entry against `reference`, metric by metric (`leaderboard.paired_differences`). Both draw their case
    sets from one seed in the same order, so they are computed on the very same resampled case sets."""
    return {"resamples": resamples, "seed": seed, "cases": len(per_case[reference]), "reference": reference,
            "level": 0.95, "rank_stability": rank_stability(per_case, resamples=resamples, seed=seed),
            "paired": paired_differences(per_case, reference, resamples=resamples, seed=seed)}


def format_bootstrap(summary: Mapping) -> str:
    """Two tables: each entry's share of resampled case sets it leads, and each entry minus the reference."""
    stab, ref = summary["rank_stability"], summary["reference"]
    width = max([len("entry")] + [len(n) for n in stab])
    lines = [f"# {summary['resamples']} case sets drawn with replacement from the {summary['cases']} cases",
             f"{'entry':<{width}} {'leads':>6}  mean rank 95% interval"]
    for n, r in sorted(stab.items(), key=lambda kv: -kv[1]["first"]):
        lines.append(f"{n:<{width}} {100 * r['first']:>5.1f}%  {r['mean_rank_p2.5']:.1f} - {r['mean_rank_p97.5']:.1f}")
    lines += ["", f"# minus {ref}: difference over all cases, 95% bootstrap interval (paired), share of draws better",
              f"{'entry':<{width}} {'metric':<8} {'difference':>12} {'95% interval':>26} {'better':>7}"]
    for n, metrics in summary["paired"].items():
        for k, d in metrics.items():
            label, digits = _SHOWN[k]
            interval = f"[{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"
            lines.append(f"{n:<{width}} {label:<8} {d['difference']:>+12.{digits}f} {interval:>26} "
                         f"{100 * d['better']:>6.1f}%")
    lines.append("(an interval that excludes 0 means the cases support the difference's sign; HD95, MASD and "
                 "RMSE: lower is better)")
    return "\n".join(lines)
