"""PANTHER evaluation: the challenge's five tumour metrics per case, in aggregate, and as a leaderboard.

Per case (tumour mask only): volumetric Dice, surface Dice at 5 mm, HD95, MASD, predicted and true tumour
volume. Across cases: the mean of the first four and the RMSE of predicted vs true volume. All distances
come from DeepMind's `surface-distance` package (0.1); this module only adds the PANTHER semantics around
it (binarisation, the uniform-prediction penalty, empty ground truth, spacing order, ranking).
See docs/EVALUATION.md for the rules and the organisers' script they were checked against.

Python use, without files::

    m = case_metrics(pred, gt, spacing_zyx=(3.0, 1.19, 1.19))          # one case -> dict
    agg = aggregate({"case_a": m, ...})                                 # dict of five numbers
    rows = rank_table({"model A": agg_a, "model B": agg_b})             # leaderboard rows
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import types
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import scipy.ndimage

from .errors import InputError

HELP = "score prediction folders against ground truth with the five PANTHER metrics (several folders: a leaderboard)"

log = logging.getLogger(__name__)

#: per-case metric keys (distances in mm, volumes in mm^3)
CASE_KEYS = ("dice", "surface_dice_5mm", "hd95", "masd", "pred_volume_mm3", "gt_volume_mm3")
#: aggregate keys, in the order the challenge lists them
AGGREGATE_KEYS = ("dice", "surface_dice_5mm", "hd95", "masd", "volume_rmse_mm3")
#: True where a larger aggregate is better
HIGHER_IS_BETTER = {"dice": True, "surface_dice_5mm": True, "hd95": False, "masd": False, "volume_rmse_mm3": False}

SURFACE_DICE_TOLERANCE_MM = 5.0
HAUSDORFF_PERCENT = 95.0
GT_TUMOUR_LABEL = 1
GT_ALLOWED_LABELS = (0, 1, 2)
#: voxels kept around the joint bounding box before the distance computation (any value >= 0 gives the
#: same numbers, because surface-distance crops to the same box itself; the margin is only belt and braces)
CROP_MARGIN = 2
#: geometry tolerances between a prediction and its ground truth (spacing: the official script's 1e-4)
SPACING_ATOL_MM = 1e-4
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4
#: recognised image extensions (longest first so that ".nii.gz" wins over ".gz"-less ".nii")
EXTENSIONS = (".nii.gz", ".nrrd", ".mha", ".nii")


# --------------------------------------------------------------------------------------------------
# surface-distance 0.1 compatibility shim
# --------------------------------------------------------------------------------------------------
class _NumpyWithAliases(types.ModuleType):
    """numpy, plus the two aliases NumPy 2 removed (`np.Inf`, `np.NaN`) that surface-distance 0.1 uses.

    Installed only as `surface_distance.metrics.np`; the real numpy module is left untouched.
    """

    Inf = math.inf
    NaN = math.nan

    def __getattr__(self, name):
        return getattr(np, name)


class _NdimageWithOldNamespaces(types.ModuleType):
    """scipy.ndimage, reachable also as `.filters` and `.morphology` (namespaces deprecated in SciPy 1.x,
    removed in SciPy 2) so surface-distance 0.1 neither warns nor breaks; the functions are the same."""

    filters = scipy.ndimage
    morphology = scipy.ndimage

    def __getattr__(self, name):
        return getattr(scipy.ndimage, name)


def _install_surface_distance_shim():
    import surface_distance.metrics as sd_metrics

    if not isinstance(sd_metrics.np, _NumpyWithAliases):
        sd_metrics.np = _NumpyWithAliases("numpy")
    if not isinstance(sd_metrics.ndimage, _NdimageWithOldNamespaces):
        sd_metrics.ndimage = _NdimageWithOldNamespaces("scipy.ndimage")
    return sd_metrics


sd = _install_surface_distance_shim()


# --------------------------------------------------------------------------------------------------
# per-case metrics
# --------------------------------------------------------------------------------------------------
def _distinct_values(a: np.ndarray, limit: int = 6) -> str:
    vals = np.unique(a)
    shown = ", ".join(f"{v:g}" if np.issubdtype(vals.dtype, np.floating) else str(v) for v in vals[:limit])
    more = f", ... ({len(vals)} in all)" if len(vals) > limit else ""
    return f"{len(vals)} distinct values [{shown}{more}]"


def binarise_prediction(pred: np.ndarray, name: object = "prediction") -> np.ndarray:
    """The prediction as a bool mask, with the official script's rules.

    Accepted value sets: {0}, {1}, {0, 1} and {0, v} for any v != 0 (v becomes 1, as the official script
    does). Anything else ({1, 2}, a uniform 255, three or more values, NaN) raises InputError(name, ...).
    Cost: a few linear passes, no sort (np.unique runs only to word the error).
    """
    pred = np.asarray(pred)
    if pred.dtype == bool:
        return pred
    nonzero = pred != 0
    if nonzero.all():  # no 0 present: only a uniform 1 is allowed
        if pred.size and (pred == 1).all():
            return nonzero
        raise InputError(name, f"prediction must be binary (0 and 1); found {_distinct_values(pred)}")
    if nonzero.any():
        values = pred[nonzero]
        if (values != values[0]).any():  # NaN != NaN also lands here
            raise InputError(name, f"prediction must be binary (0 and 1); found {_distinct_values(pred)}")
    return nonzero


def tumour_mask(gt: np.ndarray, name: object = "ground truth") -> np.ndarray:
    """Ground truth as a bool tumour mask: label 1 (labels 0 background, 1 tumour, 2 pancreas).

    A bool array is taken as the tumour mask itself. Any label outside {0, 1, 2} raises InputError, so a
    0/255 mask cannot silently become "no tumour".
    """
    gt = np.asarray(gt)
    if gt.dtype == bool:
        return gt
    if gt.size:
        if gt.dtype.kind in "ui":
            bad = gt.min() < 0 or gt.max() > max(GT_ALLOWED_LABELS)
        else:
            bad = bool(((gt != 0) & (gt != 1) & (gt != 2)).any())
        if bad:
            raise InputError(name, f"ground truth labels must be within {{0, 1, 2}}; found {_distinct_values(gt)}")
    return gt == GT_TUMOUR_LABEL


def _joint_bbox(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """Slices of the bounding box of `mask` grown by `margin` voxels (clipped); None when empty."""
    z = np.flatnonzero(mask.any(axis=(1, 2)))
    if z.size == 0:
        return None
    sub = mask[z[0]:z[-1] + 1]
    y = np.flatnonzero(sub.any(axis=(0, 2)))
    x = np.flatnonzero(sub[:, y[0]:y[-1] + 1].any(axis=(0, 1)))
    return tuple(slice(max(int(lo) - margin, 0), min(int(hi) + 1 + margin, n))
                 for lo, hi, n in ((z[0], z[-1], mask.shape[0]), (y[0], y[-1], mask.shape[1]),
                                   (x[0], x[-1], mask.shape[2])))


def surface_spacing(spacing_zyx: Sequence[float], official: bool = False) -> tuple[float, float, float]:
    """The spacing handed to surface-distance for (z, y, x) arrays.

    Correct mode: (z, y, x) itself. Official mode: reversed, i.e. SimpleITK's (x, y, z), which is what the
    organisers' script passes with its (z, y, x) arrays (axis 0 gets the x spacing, axis 2 the z spacing).
    """
    s = tuple(float(v) for v in spacing_zyx)
    return s[::-1] if official else s


def image_diagonal_mm(shape_zyx: Sequence[int], spacing_zyx: Sequence[float], official: bool = False) -> float:
    """The uniform-prediction penalty: norm(shape x spacing); in official mode with the (x, y, z) spacing
    paired with the (z, y, x) shape, exactly as the organisers' script computes it."""
    return float(np.linalg.norm(np.asarray(shape_zyx, float) * np.asarray(surface_spacing(spacing_zyx, official))))


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing_zyx: Sequence[float], official: bool = False, *,
                 full_shape: Sequence[int] | None = None, pred_name: object = "prediction",
                 gt_name: object = "ground truth") -> dict:
    """The PANTHER metrics of one case, as a dict with `CASE_KEYS` (floats, all finite).

    pred: binary prediction (bool, or values {0, 1} / {0, v}; see `binarise_prediction`).
    gt: ground truth labels (0, 1 tumour, 2 pancreas) or a bool tumour mask.
    spacing_zyx: voxel spacing in array order (reverse of SimpleITK's GetSpacing()).
    official: reproduce the organisers' script (surface metrics and penalty diagonal with the spacing in
        (x, y, z) order against (z, y, x) arrays). Volumes and Dice do not depend on the order.
    full_shape: when pred and gt are crops of a larger image, that image's shape; everything outside the
        crop is taken as background in both. It defines the uniform-prediction rule (a prediction is
        uniform when the FULL image is all 0 or all 1) and the penalty diagonal. Default: pred.shape.
    pred_name, gt_name: what InputError messages call the two inputs (file paths from the CLI).

    Rules: a uniform prediction scores Dice 0, surface Dice 0, HD95 = MASD = image diagonal (mm) and
    predicted volume 0 (even when it is all 1, and even when the ground truth has no tumour). A non-uniform
    prediction on a ground truth without tumour scores Dice 0, surface Dice 0 and HD95 = MASD = the diagonal
    (surface-distance would give inf and nan there). Otherwise the numbers are surface-distance's.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.ndim != 3 or gt.ndim != 3:
        raise InputError(pred_name if pred.ndim != 3 else gt_name,
                         f"expected a 3D array, got shape {pred.shape if pred.ndim != 3 else gt.shape}")
    if pred.shape != gt.shape:
        raise InputError(pred_name, f"shape {pred.shape} differs from {gt_name} shape {gt.shape}")
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_zyx must be three positive numbers, got {spacing_zyx!r}")
    shape = pred.shape
    full = shape if full_shape is None else tuple(int(n) for n in full_shape)
    if len(full) != 3 or any(f < n for f, n in zip(full, shape)):
        raise ValueError(f"full_shape {full_shape!r} must be 3D and at least the array shape {shape}")

    p = binarise_prediction(pred, pred_name)
    g = tumour_mask(gt, gt_name)
    voxel_mm3 = spacing[0] * spacing[1] * spacing[2]
    n_gt = int(np.count_nonzero(g))
    n_pred = int(np.count_nonzero(p))
    gt_volume = n_gt * voxel_mm3
    diagonal = image_diagonal_mm(full, spacing, official)

    if n_pred == 0 or n_pred == math.prod(full):  # uniform over the full image
        return {"dice": 0.0, "surface_dice_5mm": 0.0, "hd95": diagonal, "masd": diagonal,
                "pred_volume_mm3": 0.0, "gt_volume_mm3": gt_volume}
    pred_volume = n_pred * voxel_mm3
    if n_gt == 0:  # no tumour in the ground truth, something predicted: a complete miss
        return {"dice": 0.0, "surface_dice_5mm": 0.0, "hd95": diagonal, "masd": diagonal,
                "pred_volume_mm3": pred_volume, "gt_volume_mm3": gt_volume}

    box = _joint_bbox(p | g, CROP_MARGIN)
    pc, gc = p[box], g[box]
    dists = sd.compute_surface_distances(gc, pc, spacing_mm=surface_spacing(spacing, official))
    dice = float(sd.compute_dice_coefficient(gc, pc))
    surface_dice = float(sd.compute_surface_dice_at_tolerance(dists, tolerance_mm=SURFACE_DICE_TOLERANCE_MM))
    hd95 = float(sd.compute_robust_hausdorff(dists, percent=HAUSDORFF_PERCENT))
    gt_to_pred, pred_to_gt = sd.compute_average_surface_distance(dists)
    masd = float((gt_to_pred + pred_to_gt) / 2.0)
    out = {"dice": dice, "surface_dice_5mm": surface_dice, "hd95": hd95, "masd": masd,
           "pred_volume_mm3": pred_volume, "gt_volume_mm3": gt_volume}
    # Both masks are non-empty here, so surface-distance returns finite numbers; keep the guarantee anyway.
    for key in ("hd95", "masd"):
        if not math.isfinite(out[key]):
            out[key] = diagonal
    for key in ("dice", "surface_dice_5mm"):
        if not math.isfinite(out[key]):
            out[key] = 0.0
    return out


# --------------------------------------------------------------------------------------------------
# aggregates and ranking
# --------------------------------------------------------------------------------------------------
def aggregate(cases: Mapping[str, Mapping[str, float]]) -> dict:
    """Mean Dice, surface Dice, HD95 and MASD over the cases, and the RMSE of predicted vs true volume."""
    if not cases:
        raise ValueError("aggregate() needs at least one case")
    rows = list(cases.values())
    out = {k: float(np.mean([float(r[k]) for r in rows])) for k in ("dice", "surface_dice_5mm", "hd95", "masd")}
    err = np.array([float(r["pred_volume_mm3"]) - float(r["gt_volume_mm3"]) for r in rows])
    out["volume_rmse_mm3"] = float(np.sqrt(np.mean(err ** 2)))
    return out


def _competition_ranks(values: Sequence[float], higher_is_better: bool) -> list[int]:
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
        for row, r in zip(rows, _competition_ranks([row[k] for row in rows], HIGHER_IS_BETTER[k])):
            row[f"rank_{k}"] = r
    for row in rows:
        row["mean_rank"] = float(np.mean([row[f"rank_{k}"] for k in AGGREGATE_KEYS]))
    for row, pos in zip(rows, _competition_ranks([row["mean_rank"] for row in rows], False)):
        row["position"] = pos
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["mean_rank"], i))
    return [rows[i] for i in order]


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------
def case_id(filename: str) -> str | None:
    """File name without a recognised image extension (case-insensitive); None for other files."""
    low = filename.lower()
    for ext in EXTENSIONS:
        if low.endswith(ext) and len(filename) > len(ext):
            return filename[:-len(ext)]
    return None


def scan_folder(folder: Path) -> dict[str, Path]:
    """{case id: path} for the images directly in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        cid = case_id(path.name)
        if cid is None or not path.is_file():
            continue
        if cid in found:
            raise InputError(folder, f"two files for case {cid!r}: {found[cid].name} and {path.name}")
        found[cid] = path
    return found


def read_image(path: Path):
    """(SimpleITK image, numpy array in (z, y, x)); InputError if unreadable or not a 3D scalar image."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "unknown error")
        raise InputError(path, f"cannot read image ({first})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"expected a 3D single-channel image, got {image.GetDimension()}D with "
                               f"{image.GetNumberOfComponentsPerPixel()} component(s)")
    return image, sitk.GetArrayFromImage(image)


def check_geometry(pred_img, pred_path: Path, gt_img, gt_path: Path) -> None:
    """Same size (InputError naming both), and the same spacing/origin/direction within tolerance."""
    if pred_img.GetSize() != gt_img.GetSize():
        raise InputError(pred_path, f"size {pred_img.GetSize()} (x, y, z) differs from ground truth {gt_path} "
                                    f"size {gt_img.GetSize()}")
    for what, a, b, atol in (("spacing", pred_img.GetSpacing(), gt_img.GetSpacing(), SPACING_ATOL_MM),
                             ("origin", pred_img.GetOrigin(), gt_img.GetOrigin(), ORIGIN_ATOL_MM),
                             ("direction", pred_img.GetDirection(), gt_img.GetDirection(), DIRECTION_ATOL)):
        if not np.allclose(a, b, rtol=0, atol=atol):
            fmt = lambda t: "(" + ", ".join(f"{v:.6g}" for v in t) + ")"  # noqa: E731
            raise InputError(pred_path, f"{what} {fmt(a)} differs from ground truth {gt_path} {what} {fmt(b)} "
                                        f"(tolerance {atol:g})")


def evaluate_folders(pred_dirs: Sequence[Path], gt_dir: Path, official: bool = False,
                     missing_as_empty: bool = False) -> list[dict[str, dict]]:
    """Per-case metrics for each prediction folder against `gt_dir`: one {case id: metrics} per folder.

    Cases are the ground-truth files; each ground truth is read once for all folders. Missing predictions
    raise InputError listing them, unless `missing_as_empty` (then they score as an all-zero prediction).
    Predictions without ground truth are ignored with a warning.
    """
    gt_files = scan_folder(gt_dir)
    if not gt_files:
        raise InputError(gt_dir, f"no ground-truth images ({', '.join(EXTENSIONS)})")
    pred_files = [scan_folder(d) for d in pred_dirs]
    for d, files in zip(pred_dirs, pred_files):
        missing = sorted(set(gt_files) - set(files))
        if missing and not missing_as_empty:
            listed = ", ".join(missing[:10]) + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
            raise InputError(d, f"no prediction for {len(missing)} ground-truth case(s): {listed} "
                                "(use --missing-as-empty to score them as empty predictions)")
        if missing:
            log.warning("%s: %d case(s) without prediction scored as empty: %s", d, len(missing), ", ".join(missing))
        extra = sorted(set(files) - set(gt_files))
        if extra:
            log.warning("%s: %d prediction(s) without ground truth ignored: %s", d, len(extra), ", ".join(extra))

    results: list[dict[str, dict]] = [{} for _ in pred_dirs]
    for cid, gt_path in gt_files.items():
        gt_img, gt_arr = read_image(gt_path)
        spacing_zyx = tuple(gt_img.GetSpacing())[::-1]
        for k, files in enumerate(pred_files):
            if cid in files:
                pred_img, pred_arr = read_image(files[cid])
                check_geometry(pred_img, files[cid], gt_img, gt_path)
                pred_name = files[cid]
            else:
                pred_arr, pred_name = np.zeros(gt_arr.shape, bool), f"{pred_dirs[k]}/{cid} (missing)"
            results[k][cid] = case_metrics(pred_arr, gt_arr, spacing_zyx, official,
                                           pred_name=pred_name, gt_name=gt_path)
            log.debug("%s %s %s", pred_dirs[k], cid, results[k][cid])
    return results


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------
def _fmt(v: float, digits: int) -> str:
    return f"{v:.{digits}f}"


def format_case_table(cases: Mapping[str, Mapping[str, float]], agg: Mapping[str, float]) -> str:
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
    width = max([len("name")] + [len(r["name"]) for r in rows])
    head = (f"{'#':>3} {'name':<{width}} {'mean rank':>9}  {'Dice':>11} {'sDice5':>11} {'HD95mm':>12} "
            f"{'MASDmm':>12} {'RMSE_mm3':>14}")
    lines = [head, "-" * len(head)]
    for r in rows:
        cell = lambda k, d, w: f"{_fmt(r[k], d) + ' (' + str(r['rank_' + k]) + ')':>{w}}"  # noqa: E731
        lines.append(f"{r['position']:>3} {r['name']:<{width}} {r['mean_rank']:>9.2f}  "
                     f"{cell('dice', 4, 11)} {cell('surface_dice_5mm', 4, 11)} {cell('hd95', 2, 12)} "
                     f"{cell('masd', 2, 12)} {cell('volume_rmse_mm3', 0, 14)}")
    lines.append("(rank per metric in brackets; equal values share the lower rank)")
    return "\n".join(lines)


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
        w.writerow(["aggregate", *(repr(float(agg[k])) for k in ("dice", "surface_dice_5mm", "hd95", "masd")),
                    "", "", repr(float(agg["volume_rmse_mm3"]))])
    plot_metrics(cases, agg, out_dir / "metrics.png", title)


def write_leaderboard(out_dir: Path, rows: Sequence[Mapping], meta: Mapping) -> None:
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(cases: Mapping[str, Mapping[str, float]], agg: Mapping[str, float], path: Path,
                 title: str = "") -> None:
    """Per-case bars (overlap metrics; distances on a log axis) and the distributions, one PNG."""
    plt = _pyplot()
    ids = sorted(cases, key=lambda c: (cases[c]["dice"], c))  # worst first
    n = len(ids)
    x = np.arange(n)
    get = lambda k: np.array([cases[c][k] for c in ids])  # noqa: E731
    penalty = get("pred_volume_mm3") == 0  # only uniform predictions score volume 0
    width_in = float(min(max(11.0, 4.0 + 0.22 * n), 40.0))
    fig = plt.figure(figsize=(width_in, 11.5), constrained_layout=True)
    gs = fig.add_gridspec(3, 3, height_ratios=[1, 1, 1.15])
    label_size = 8 if n <= 60 else 6

    ax = fig.add_subplot(gs[0, :])
    w = 0.4
    ax.bar(x - w / 2, get("dice"), w, label="Dice", color="#1f77b4")
    ax.bar(x + w / 2, get("surface_dice_5mm"), w, label="surface Dice @ 5 mm", color="#ff7f0e")
    ax.axhline(agg["dice"], color="#1f77b4", ls="--", lw=1, label=f"mean Dice {agg['dice']:.3f}")
    ax.axhline(agg["surface_dice_5mm"], color="#ff7f0e", ls="--", lw=1,
               label=f"mean surface Dice {agg['surface_dice_5mm']:.3f}")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("overlap (0-1, higher is better)")
    ax.set_title("Per case, sorted by Dice (worst left); red case names = uniform prediction (penalty)")
    ax.set_xticks(x, ids, rotation=90, fontsize=label_size)
    ax.set_xlim(-0.6, n - 0.4)
    ax.legend(loc="lower right", fontsize=8, ncol=2)
    for tick, pen in zip(ax.get_xticklabels(), penalty):
        tick.set_color("red" if pen else "black")

    ax = fig.add_subplot(gs[1, :])
    ax.bar(x - w / 2, np.maximum(get("hd95"), 1e-2), w, label="HD95", color="#2ca02c")
    ax.bar(x + w / 2, np.maximum(get("masd"), 1e-2), w, label="MASD", color="#9467bd")
    ax.axhline(agg["hd95"], color="#2ca02c", ls="--", lw=1, label=f"mean HD95 {agg['hd95']:.2f} mm")
    ax.axhline(agg["masd"], color="#9467bd", ls="--", lw=1, label=f"mean MASD {agg['masd']:.2f} mm")
    ax.set_yscale("log")
    ax.set_ylabel("distance (mm, log scale, lower is better)")
    ax.set_xticks(x, ids, rotation=90, fontsize=label_size)
    ax.set_xlim(-0.6, n - 0.4)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    for tick, pen in zip(ax.get_xticklabels(), penalty):
        tick.set_color("red" if pen else "black")

    def spread(ax, data, labels, colors):
        ax.boxplot(data, widths=0.5, showfliers=False)
        ax.set_xticks(np.arange(1, len(data) + 1), labels)
        rng = np.random.default_rng(0)
        for i, (d, col) in enumerate(zip(data, colors), start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=14, alpha=0.7, color=col, zorder=3)

    ax = fig.add_subplot(gs[2, 0])
    spread(ax, [get("dice"), get("surface_dice_5mm")], ["Dice", "surface Dice 5 mm"], ["#1f77b4", "#ff7f0e"])
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("overlap (0-1)")
    ax.set_title("Distribution: overlap")

    ax = fig.add_subplot(gs[2, 1])
    spread(ax, [np.maximum(get("hd95"), 1e-2), np.maximum(get("masd"), 1e-2)], ["HD95", "MASD"],
           ["#2ca02c", "#9467bd"])
    ax.set_yscale("log")
    ax.set_ylabel("distance (mm, log scale)")
    ax.set_title("Distribution: boundary distances")

    ax = fig.add_subplot(gs[2, 2])
    gv, pv = get("gt_volume_mm3") / 1000.0, get("pred_volume_mm3") / 1000.0
    ax.scatter(gv, pv, s=18, c=np.where(penalty, "red", "#1f77b4"), zorder=3)
    top = max(float(gv.max(initial=0)), float(pv.max(initial=0)), 1e-3) * 1.08
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="predicted = true")
    ax.set_xlim(-0.02 * top, top)
    ax.set_ylim(-0.02 * top, top)  # keeps the red volume-0 penalty points visible
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("true tumour volume (mL = 1000 mm³)")
    ax.set_ylabel("predicted tumour volume (mL)")
    ax.set_title(f"Volume, RMSE {agg['volume_rmse_mm3']:.0f} mm³")
    ax.legend(loc="upper left", fontsize=8)

    fig.suptitle(f"{title}  —  {n} cases: Dice {agg['dice']:.3f}, surface Dice {agg['surface_dice_5mm']:.3f}, "
                 f"HD95 {agg['hd95']:.2f} mm, MASD {agg['masd']:.2f} mm, volume RMSE "
                 f"{agg['volume_rmse_mm3']:.0f} mm³", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_leaderboard(rows: Sequence[Mapping], path: Path) -> None:
    """One horizontal bar panel per aggregate plus the mean rank; entries in leaderboard order."""
    plt = _pyplot()
    names = [f"{r['position']}. {r['name']}" for r in rows][::-1]  # best at the top
    rows_r = list(rows)[::-1]
    y = np.arange(len(rows))
    fig, axes = plt.subplots(2, 3, figsize=(15, max(5.5, 1.6 + 0.75 * len(rows)) * 1.0 + 2.5),
                             constrained_layout=True)
    panels = [("dice", "Dice (higher is better)", "{:.4f}"),
              ("surface_dice_5mm", "surface Dice @ 5 mm (higher is better)", "{:.4f}"),
              ("hd95", "HD95, mm (lower is better)", "{:.2f}"),
              ("masd", "MASD, mm (lower is better)", "{:.2f}"),
              ("volume_rmse_mm3", "volume RMSE, mm³ (lower is better)", "{:.0f}"),
              ("mean_rank", "mean rank (lower is better)", "{:.2f}")]
    for ax, (key, label, fmt) in zip(axes.ravel(), panels):
        vals = np.array([r[key] for r in rows_r], float)
        colors = ["#2ca02c" if (key != "mean_rank" and r[f"rank_{key}"] == 1) or
                  (key == "mean_rank" and r["position"] == 1) else "#7f7f7f" for r in rows_r]
        ax.barh(y, vals, color=colors)
        ax.set_yticks(y, names, fontsize=9)
        ax.set_xlabel(label)
        ax.set_xlim(0, max(float(vals.max()), 1e-9) * 1.35)
        for yi, v, r in zip(y, vals, rows_r):
            txt = fmt.format(v) + ("" if key == "mean_rank" else f"  (rank {r['rank_' + key]})")
            ax.text(v, yi, " " + txt, va="center", fontsize=8)
    fig.suptitle("Leaderboard (challenge ranking: rank per metric, then mean rank; green = best)", fontsize=12)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", nargs="+", required=True, type=Path, metavar="DIR",
                        help="prediction folder(s); several give a leaderboard")
    parser.add_argument("--gt", required=True, type=Path, metavar="DIR",
                        help="ground-truth folder (labels 0/1/2; tumour = 1); its files define the cases")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write metrics.json/.csv/.png (and leaderboard.* for several folders) here")
    parser.add_argument("--official", action="store_true",
                        help="reproduce the organisers' script: SimpleITK (x, y, z) spacing with (z, y, x) "
                             "arrays for surface metrics and the penalty diagonal")
    parser.add_argument("--names", nargs="+", metavar="NAME", help="display names, one per --pred folder")
    parser.add_argument("--missing-as-empty", action="store_true",
                        help="score a ground-truth case without prediction as an empty prediction (default: error)")


def _safe_dirname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "entry"


def _default_names(pred_dirs: Sequence[Path]) -> list[str]:
    base = [p.resolve().name or str(p) for p in pred_dirs]
    return base if len(set(base)) == len(base) else [str(p) for p in pred_dirs]


def main(args: argparse.Namespace) -> int:
    pred_dirs = list(args.pred)
    names = list(args.names) if args.names else _default_names(pred_dirs)
    if len(names) != len(pred_dirs):
        raise InputError("--names", f"{len(names)} name(s) given for {len(pred_dirs)} --pred folder(s)")
    if len(set(names)) != len(names):
        raise InputError("--names", "names must be distinct")
    official = bool(args.official)
    results = evaluate_folders(pred_dirs, args.gt, official=official, missing_as_empty=args.missing_as_empty)
    aggs = {name: aggregate(cases) for name, cases in zip(names, results)}
    mode = "official (x, y, z spacing with z, y, x arrays)" if official else "correct (z, y, x spacing)"
    meta = {"gt": str(args.gt), "official": official, "spacing_mode": mode,
            "missing_as_empty": bool(args.missing_as_empty), "n_cases": len(results[0])}

    if len(pred_dirs) == 1:
        print(f"# {names[0]} vs {args.gt} ({len(results[0])} cases, spacing mode: {mode})")
        print(format_case_table(results[0], aggs[names[0]]))
    else:
        rows = rank_table(aggs)
        print(f"# leaderboard vs {args.gt} ({len(results[0])} cases, spacing mode: {mode})")
        print(format_leaderboard(rows))

    if args.out is not None:
        out = Path(args.out)
        if len(pred_dirs) == 1:
            write_metrics(out, results[0], aggs[names[0]], {**meta, "name": names[0], "pred": str(pred_dirs[0])},
                          names[0])
        else:
            used: set[str] = set()
            for name, d, cases in zip(names, pred_dirs, results):
                sub = _safe_dirname(name)
                while sub in used:
                    sub += "_"
                used.add(sub)
                write_metrics(out / sub, cases, aggs[name], {**meta, "name": name, "pred": str(d)}, name)
            write_leaderboard(out, rows, {**meta, "pred": [str(d) for d in pred_dirs], "names": names})
        log.info("wrote results to %s", out)
    return 0
