"""tradeoff.png: mean Dice against mean HD95 and MASD for every candidate of the final search.

matplotlib is imported only when a figure is drawn (`figures.new_figure`, see there why).
"""

from __future__ import annotations

from pathlib import Path

from ..figures import BLUE, DPI, RED, new_figure
from .crossval import FitResult
from .evaluator import Evaluator
from .space import dec_label, uniq


def pareto_front(points) -> list[tuple[float, float]]:
    """The (distance, Dice) points no other point beats on both (lower distance, higher Dice), by distance."""
    front, top = [], -1.0
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > top:
            front.append((x, y))
            top = y
    return front


def plot_tradeoff(ev: Evaluator, res: FitResult, path: Path, title: str = "") -> None:
    """Dice vs HD95 and Dice vs MASD of every candidate of the final search (in-sample, all cases), the
    Pareto front, the single members, the equal-weight ensemble, the choice and its held-out estimate."""
    from matplotlib import colormaps  # lazily: see the module docstring

    names = [m.name for m in ev.data.members]
    scored = res.final.scored
    fig = new_figure(15, 7.4)
    axes = fig.subplots(1, 2)
    decs = uniq([s.cand.dec for s in scored if s.stage == "A"])
    cmap = colormaps["viridis"]
    colors = {d: (RED if d[0] == "argmax" else cmap(0.1 + 0.8 * i / max(len(decs) - 1, 1)))
              for i, d in enumerate(decs)}
    for ax, xkey, xlab in ((axes[0], "hd95", "mean HD95 (mm, lower is better)"),
                           (axes[1], "masd", "mean MASD (mm, lower is better)")):
        _panel(ax, ev, res, names, decs, colors, xkey, xlab)
    axes[0].set_title("Dice vs HD95 (squares: single members)")
    axes[1].set_title("Dice vs MASD (squares: single members)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=9)
    fig.suptitle(title or f"Trade-off across the {len(scored)} candidates of the final search ({ev.n} cases, "
                          f"in-sample; best = top-left)\nchosen: {res.final.best.cand.label(names)}", fontsize=11)
    fig.savefig(path, dpi=DPI)


def _panel(ax, ev, res, names, decs, colors, xkey: str, xlab: str) -> None:
    scored = res.final.scored
    best = res.final.best
    b = [s for s in scored if s.stage == "B"]
    if b:
        ax.scatter([s.agg[xkey] for s in b], [s.agg["dice"] for s in b], s=14, marker="x", color="#999999",
                   alpha=0.6, label="with post-processing (stage B)", zorder=1)
    for d in decs:
        pts = [s for s in scored if s.stage == "A" and s.cand.dec == d]
        ax.scatter([s.agg[xkey] for s in pts], [s.agg["dice"] for s in pts], s=18, color=colors[d],
                   alpha=0.75, label=f"weightings, {dec_label(d)}", zorder=2)
    front = pareto_front([(s.agg[xkey], s.agg["dice"]) for s in scored])
    # markers on top of everything: where one candidate beats all others on both axes the front is that single
    # point (often the chosen star), and a line alone would draw nothing
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", lw=1.3, ls="--",
            marker="o", markersize=6, markerfacecolor="none", zorder=7, label="Pareto front (all candidates)")
    for nm in names:
        agg = res.reference[nm]
        ax.scatter([agg[xkey]], [agg["dice"]], s=120, marker="s", color="white", edgecolor="black", lw=1.5, zorder=5)
        ax.annotate(nm, (agg[xkey], agg["dice"]), textcoords="offset points", xytext=(7, 5), fontsize=9,
                    weight="bold")
    eq = res.reference["equal-weight ensemble"]
    ax.scatter([eq[xkey]], [eq["dice"]], s=120, marker="D", color=BLUE, edgecolor="black", zorder=5,
               label="equal-weight ensemble (argmax, no post-processing)")
    ax.scatter([best.agg[xkey]], [best.agg["dice"]], s=320, marker="*", color="gold", edgecolor="black",
               zorder=6, label="chosen (in-sample)")
    ax.scatter([res.heldout_agg[xkey]], [res.heldout_agg["dice"]], s=260, marker="*", facecolor="none",
               edgecolor="black", lw=1.5, zorder=6, label="fitted ensemble, held-out estimate")
    ax.set_xscale("log")  # distances span sub-millimetre to the image diagonal (empty-prediction penalty)
    ax.set_xlabel(xlab + ", log scale")
    ax.set_ylabel("mean Dice (higher is better)")
    ax.grid(alpha=0.3, which="both")
    xs = [max(s.agg[xkey], 1e-3) for s in scored] + [max(res.heldout_agg[xkey], 1e-3)]
    ax.set_xlim(min(xs) / 1.3, max(xs) * 1.3)
