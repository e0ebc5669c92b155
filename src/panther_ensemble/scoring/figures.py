"""The evaluation's figures: `metrics.png` (one prediction folder) and `leaderboard.png` (several).

matplotlib is imported inside `new_figure`, not at the top of the module: importing it takes about
0.7 s here (measured), which scoring without figures (`case_metrics` from Python, the fit's thousands of
metric calls) should not pay. Figures are standalone `matplotlib.figure.Figure` objects saved through
their own canvas, never through pyplot: we switch no backend and leave no figure in pyplot's global list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

BLUE, ORANGE, GREEN, PURPLE, GREY, RED = "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#7f7f7f", "#d62728"
#: characters of a case id shown under a bar (UUIDs: the first 8 are unique in practice)
CASE_LABEL_WIDTH = 8
DPI = 110


def new_figure(width_in: float, height_in: float):
    """A standalone figure with constrained layout (no pyplot)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


def short_case_labels(case_ids: Sequence[str], width: int = CASE_LABEL_WIDTH) -> list[str]:
    """Short, unique tick labels for case ids: ids of at most `width` characters as they are; longer ones
    by their first `width` characters (grand-challenge UUIDs), or, where those collide, "…" and their last
    ones (ids like PANTHER_0042); widened one character at a time until every label is unique."""
    ids = [str(c) for c in case_ids]
    longest = max((len(c) for c in ids), default=0)
    for w in range(max(width, 2), longest + 1):
        for cut in (lambda s: s[:w], lambda s: "…" + s[len(s) - w + 1:]):
            labels = [c if len(c) <= w else cut(c) for c in ids]
            if len(set(labels)) == len(labels):
                return labels
    return ids


# --------------------------------------------------------------------------------------------------
# metrics.png
# --------------------------------------------------------------------------------------------------
def plot_metrics(cases: Mapping[str, Mapping[str, float]], agg: Mapping[str, float], path: Path,
                 title: str = "") -> None:
    """metrics.png: see `metrics_figure`."""
    metrics_figure(cases, agg, title).savefig(path, dpi=DPI)


def metrics_figure(cases: Mapping[str, Mapping[str, float]], agg: Mapping[str, float], title: str = ""):
    """Per-case bars (overlap; distances on a log axis), the distributions and the volumes, one figure.
    Cases are sorted by Dice (worst left), labelled by `short_case_labels`; uniform predictions in red."""
    ids = sorted(cases, key=lambda c: (cases[c]["dice"], c))  # worst first
    n = len(ids)

    def get(k):
        return np.array([cases[c][k] for c in ids], float)

    penalty = get("pred_volume_mm3") == 0  # only uniform predictions score volume 0
    fig = new_figure(float(min(max(11.0, 3.0 + 0.16 * n), 40.0)), 10.0)
    gs = fig.add_gridspec(3, 3, height_ratios=[1, 1, 1.15])
    labels = short_case_labels(ids)
    heading = (f"Per case, sorted by Dice (worst left); labels: first {CASE_LABEL_WIDTH} characters of the case "
               "id; red = uniform prediction (penalty)")
    _case_bars(fig.add_subplot(gs[0, :]), labels, penalty, heading, get("dice"), get("surface_dice_5mm"),
               [("Dice", BLUE, agg["dice"], f"{agg['dice']:.3f}"),
                ("surface Dice @ 5 mm", ORANGE, agg["surface_dice_5mm"], f"{agg['surface_dice_5mm']:.3f}")],
               "overlap (0-1, higher is better)", log=False)
    _case_bars(fig.add_subplot(gs[1, :]), labels, penalty, None, np.maximum(get("hd95"), 1e-2),
               np.maximum(get("masd"), 1e-2),
               [("HD95", GREEN, agg["hd95"], f"{agg['hd95']:.2f} mm"),
                ("MASD", PURPLE, agg["masd"], f"{agg['masd']:.2f} mm")],
               "distance (mm, log scale, lower is better)", log=True)
    _spread(fig.add_subplot(gs[2, 0]), [get("dice"), get("surface_dice_5mm")], ["Dice", "surface Dice 5 mm"],
            [BLUE, ORANGE], "overlap (0-1)", "Distribution: overlap", log=False)
    _spread(fig.add_subplot(gs[2, 1]), [np.maximum(get("hd95"), 1e-2), np.maximum(get("masd"), 1e-2)],
            ["HD95", "MASD"], [GREEN, PURPLE], "distance (mm, log scale)", "Distribution: boundary distances",
            log=True)
    _volumes(fig.add_subplot(gs[2, 2]), get("gt_volume_mm3") / 1000.0, get("pred_volume_mm3") / 1000.0, penalty,
             agg["volume_rmse_mm3"])
    fig.suptitle(f"{title}  —  {n} cases: Dice {agg['dice']:.3f}, surface Dice {agg['surface_dice_5mm']:.3f}, "
                 f"HD95 {agg['hd95']:.2f} mm, MASD {agg['masd']:.2f} mm, volume RMSE "
                 f"{agg['volume_rmse_mm3']:.0f} mm³", fontsize=11)
    return fig


def _case_bars(ax, labels, penalty, heading, left, right, series, ylabel, log) -> None:
    """Two bars per case and their means (dashed); the legend is a row above the axes, so it hides no bar."""
    x = np.arange(len(labels))
    w = 0.4
    bars, means = [], []
    for values, offset, (name, color, mean, mean_text) in zip((left, right), (-w / 2, w / 2), series):
        bars.append(ax.bar(x + offset, values, w, label=name, color=color))
        means.append(ax.axhline(mean, color=color, ls="--", lw=1, label=f"mean {name} {mean_text}"))
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_xticks(x, labels, rotation=90, fontsize=8 if len(labels) <= 60 else 6, family="monospace")
    ax.set_xlim(-0.6, len(labels) - 0.4)
    for tick, pen in zip(ax.get_xticklabels(), penalty):
        tick.set_color(RED if pen else "black")
    ax.legend(handles=bars + means, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, fontsize=8,
              frameon=False, borderaxespad=0.2, title=heading, title_fontsize=10, alignment="left")


def _spread(ax, data, names, colors, ylabel, title, log) -> None:
    """Box plot plus the individual cases (jittered points)."""
    ax.boxplot(data, widths=0.5, showfliers=False)
    ax.set_xticks(np.arange(1, len(data) + 1), names)
    rng = np.random.default_rng(0)
    for i, (d, col) in enumerate(zip(data, colors), start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=14, alpha=0.7, color=col, zorder=3)
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def _volumes(ax, gv, pv, penalty, rmse) -> None:
    """Predicted against true volume (mL); the dashed diagonal is predicted = true (said in the title,
    so no legend covers a point)."""
    ax.scatter(gv, pv, s=18, c=np.where(penalty, RED, BLUE), zorder=3)
    top = max(float(gv.max(initial=0)), float(pv.max(initial=0)), 1e-3) * 1.08
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--")
    ax.set_xlim(-0.02 * top, top)
    ax.set_ylim(-0.02 * top, top)  # keeps the red volume-0 penalty points visible
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("true tumour volume (mL = 1000 mm³)")
    ax.set_ylabel("predicted tumour volume (mL)")
    ax.set_title(f"Volume, RMSE {rmse:.0f} mm³\n(dashed line: predicted = true)")


# --------------------------------------------------------------------------------------------------
# leaderboard.png
# --------------------------------------------------------------------------------------------------
LEADERBOARD_PANELS = (("dice", "Dice (higher is better)", "{:.4f}"),
                      ("surface_dice_5mm", "surface Dice @ 5 mm (higher is better)", "{:.4f}"),
                      ("hd95", "HD95, mm (lower is better)", "{:.2f}"),
                      ("masd", "MASD, mm (lower is better)", "{:.2f}"),
                      ("volume_rmse_mm3", "volume RMSE, mm³ (lower is better)", "{:.0f}"),
                      ("mean_rank", "mean rank (lower is better)", "{:.2f}"))


def plot_leaderboard(rows: Sequence[Mapping], path: Path) -> None:
    """leaderboard.png: see `leaderboard_figure`."""
    leaderboard_figure(rows).savefig(path, dpi=DPI)


def leaderboard_figure(rows: Sequence[Mapping]):
    """One horizontal bar panel per aggregate plus the mean rank; entries in leaderboard order (best at the
    top), values and ranks written next to the bars, the best entry of each panel green."""
    from matplotlib.ticker import MaxNLocator  # lazily, as in new_figure

    names = [f"{r['position']}. {r['name']}" for r in rows][::-1]
    rows_r = list(rows)[::-1]
    y = np.arange(len(rows))
    fig = new_figure(15, max(5.5, 1.6 + 0.75 * len(rows)) + 2.5)
    axes = fig.subplots(2, 3)
    for ax, (key, label, fmt) in zip(axes.ravel(), LEADERBOARD_PANELS):
        vals = np.array([r[key] for r in rows_r], float)
        best = [(r["position"] if key == "mean_rank" else r[f"rank_{key}"]) == 1 for r in rows_r]
        ax.barh(y, vals, color=[GREEN if b else GREY for b in best])
        ax.set_yticks(y, names, fontsize=9)
        ax.set_xlabel(label)
        ax.set_xlim(0, max(float(vals.max()), 1e-9) * 1.55)  # room for the text right of the longest bar
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))  # 5-digit volumes must not run into each other
        for yi, v, r in zip(y, vals, rows_r):
            txt = fmt.format(v) + ("" if key == "mean_rank" else f"  (rank {r['rank_' + key]})")
            ax.text(v, yi, " " + txt, va="center", fontsize=8)
    fig.suptitle("Leaderboard (challenge ranking: rank per metric, then mean rank; green = best)", fontsize=12)
    return fig
