"""What a fit writes: the fitted spec, report.json, report.md (and, through plots.py, tradeoff.png)."""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from pathlib import Path
from typing import Mapping, Sequence

from ...spec import load_spec, parse_spec
from ..leaderboard import mean_rank_of, rank_table
from ..metrics import AGGREGATE_KEYS
from .crossval import FitResult, best_contender_on_all
from .evaluator import Evaluator, weighted_score
from .plots import plot_tradeoff
from .space import PP_FIELDS, Candidate, SearchSpace, pp_label

log = logging.getLogger(__name__)

FITTED = "fitted ensemble (held-out)"


def fitted_spec_json(base, cand: Candidate, description: str) -> dict:
    """The base spec with the candidate's weights, tumour class weights, decision and post-processing.
    Members with weight 0 are dropped (the engine would still load them). None fields are omitted."""
    d = json.loads(json.dumps(base.to_json()))
    members = []
    for m, w, k in zip(d["members"], cand.weights, cand.factors or [1.0] * len(cand.weights)):
        if w <= 0:
            continue
        if m.get("class_weights"):
            log.warning("member %s: base class_weights %s replaced by the fitted tumour factor", m["name"],
                        m["class_weights"])
        m["weight"] = round(float(w), 6)
        m["class_weights"] = {base.tumor_label: float(k)} if k != 1 else {}
        members.append(m)
    d["members"] = members
    d["decision"] = {"rule": cand.rule} if cand.rule == "argmax" else {"rule": "threshold",
                                                                        "threshold": float(cand.threshold)}
    d["postprocess"] = {k: v for k, v in zip(PP_FIELDS, cand.pp) if v is not None}
    if d.get("time_budget_s") is None:
        d.pop("time_budget_s", None)
    d["description"] = description
    parse_spec(d, source="fitted spec")  # must be valid
    return d


def spec_description(objective: str, n_cases: int, folds: int, heldout: Mapping[str, float]) -> str:
    return (f"fitted by `panther-ensemble fit` (objective {objective}) on {n_cases} cases; held-out (nested "
            f"{min(folds, n_cases)}-fold CV) Dice {heldout['dice']:.4f}, surface Dice "
            f"{heldout['surface_dice_5mm']:.4f}, HD95 {heldout['hd95']:.2f} mm, MASD {heldout['masd']:.2f} mm, "
            f"volume RMSE {heldout['volume_rmse_mm3']:.0f} mm3")


def write_outputs(out: Path, base, ev: Evaluator, res: FitResult, space: SearchSpace, info: dict,
                  timings: dict, t_start: float) -> dict:
    """spec.json (checked by loading it back), tradeoff.png, report.json and report.md in `out`.
    info: objective, metric_weights, folds, options. timings gains report, total and cpu. Returns the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    desc = spec_description(info["objective"], ev.n, info["folds"], res.heldout_agg)
    (out / "spec.json").write_text(json.dumps(fitted_spec_json(base, res.final.best.cand, desc), indent=2) + "\n")
    load_spec(out / "spec.json")
    t_r = time.perf_counter()
    plot_tradeoff(ev, res, out / "tradeoff.png")
    timings["report"] = time.perf_counter() - t_r
    timings["total"] = time.perf_counter() - t_start
    ru = resource.getrusage(resource.RUSAGE_SELF)
    timings["cpu"] = ru.ru_utime + ru.ru_stime  # < total when the CPU is shared
    rep = build_report(ev, res, space, info, timings)
    (out / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(rep))
    return rep


# --------------------------------------------------------------------------------------------------
# report.json
# --------------------------------------------------------------------------------------------------
def _agg_json(agg: Mapping[str, float]) -> dict:
    return {k: float(agg[k]) for k in AGGREGATE_KEYS}


def _cand_json(c: Candidate, names: Sequence[str]) -> dict:
    return {"weights": dict(zip(names, c.weights)),
            "tumour_class_weights": dict(zip(names, c.factors)) if c.factors else None,
            "decision": {"rule": c.rule, **({"threshold": c.threshold} if c.rule == "threshold" else {})},
            "postprocess": dict(zip(PP_FIELDS, c.pp)),
            "label": c.label(names)}


def _memory(ev: Evaluator) -> dict:
    cases = ev.data.cases
    full = sum(math.prod(c.full_shape) for c in cases)
    return {"peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
            "crops_bytes": int(sum(c.nbytes() for c in cases)),
            "largest_case_full_maps_bytes": int(ev.data.peak_case_bytes),
            "crop_voxel_fraction": float(sum(math.prod(c.crop_shape) for c in cases) / full),
            "live_voxel_fraction": float(sum(c.live.size for c in cases) / full)}


def build_report(ev: Evaluator, res: FitResult, space: SearchSpace, args_info: dict, timings: dict) -> dict:
    names = [m.name for m in ev.data.members]
    fitted_rank = mean_rank_of(FITTED, {**{n: res.reference[n] for n in names}, FITTED: res.heldout_agg})
    scales = ev.scales(range(ev.n))
    mw = args_info["metric_weights"]
    folds = [{"fold": f.fold, "n_train": len(f.train), "n_test": len(f.test),
              "test_cases": [ev.data.cases[i].cid for i in f.test], "chosen": _cand_json(f.chosen, names),
              "in_sample": _agg_json(f.train_agg), "held_out": _agg_json(f.test_agg), "candidates": f.n_candidates}
             for f in res.folds]
    return {
        "objective": args_info["objective"],
        "metric_weights": mw,
        "score_normalisation": {"image_diagonal_mm": scales[0], "rms_true_volume_mm3": scales[1]},
        "members": [{"name": m.name, "source": str(m.path), "layout": m.kind, "labels": list(lab)}
                    for m, lab in zip(ev.data.members, ev.data.labels)],
        "cases": {"used": len(ev.data.cases), "ids": [c.cid for c in ev.data.cases], "dropped": ev.data.dropped},
        "search_space": space.describe(),
        "candidates_scored": res.n_distinct_candidates,
        "folds": folds,
        "held_out": {
            "fitted ensemble": _agg_json(res.heldout_agg),
            **{k: _agg_json(v) for k, v in res.reference.items()},
            "fitted_mean_rank_vs_single_members": fitted_rank,
            "weighted_score": {"fitted ensemble": weighted_score(res.heldout_agg, mw, scales),
                               **{k: weighted_score(v, mw, scales) for k, v in res.reference.items()}},
        },
        "leaderboard_held_out": rank_table({**res.reference, FITTED: res.heldout_agg}),
        "in_sample": {"fitted ensemble": _agg_json(res.insample_agg),
                      "weighted_score": weighted_score(res.insample_agg, mw, scales),
                      "mean_rank_vs_single_members": res.final.best.mean_rank},
        "chosen": _cand_json(res.final.best.cand, names),
        "choice_stability": {
            "resamples": res.stability_resamples, "cases": ev.n,
            "best_on_all_cases": best_contender_on_all(res.stability, args_info["objective"]),
            "contenders": [{**_cand_json(c.cand, names), "mean_rank_vs_single_members": c.mean_rank,
                            "weighted_score": c.score, "share_chosen": c.share_chosen} for c in res.stability]},
        "timings_s": timings,
        "work": {**ev.stats, **{f"{k}_s": round(v, 2) for k, v in ev.seconds.items()}},
        "memory": _memory(ev),
        "options": args_info.get("options"),
    }


# --------------------------------------------------------------------------------------------------
# report.md
# --------------------------------------------------------------------------------------------------
def _fmt_row(name: str, agg: Mapping[str, float], extra: str = "") -> str:
    return (f"| {name} | {agg['dice']:.4f} | {agg['surface_dice_5mm']:.4f} | {agg['hd95']:.2f} | "
            f"{agg['masd']:.2f} | {agg['volume_rmse_mm3']:.0f} |{extra}")


def report_markdown(rep: dict) -> str:
    lines = ["# Ensemble fit report", "",
             f"Objective **{rep['objective']}**; {rep['cases']['used']} cases ({len(rep['cases']['dropped'])} "
             f"dropped); {rep['candidates_scored']} distinct candidates scored "
             f"({rep['search_space']['candidates_per_search']} per search, {len(rep['folds'])} outer folds + "
             "the final refit).", ""]
    for section in (_md_held_out, _md_in_sample, _md_chosen, _md_stability, _md_search_space, _md_cost):
        lines += section(rep) + [""]
    lines.append("![trade-off](tradeoff.png)")
    return "\n".join(lines) + "\n"


def _md_held_out(rep: dict) -> list[str]:
    lines = ["## Held-out (nested cross-validation: every case scored by a candidate chosen without it)", "",
             "| entry | Dice | surface Dice 5 mm | HD95 mm | MASD mm | volume RMSE mm3 | mean rank |",
             "|---|---|---|---|---|---|---|"]
    lines += [_fmt_row(r["name"], r, f" {r['mean_rank']:.2f} |") for r in rep["leaderboard_held_out"]]
    return lines + ["", f"Mean rank of the fitted ensemble (held-out) against the single members alone: "
                        f"{rep['held_out']['fitted_mean_rank_vs_single_members']:.2f}."]


def _md_in_sample(rep: dict) -> list[str]:
    lines = ["## In-sample vs held-out", "",
             "| fitted ensemble | Dice | surface Dice 5 mm | HD95 mm | MASD mm | volume RMSE mm3 | weighted score |",
             "|---|---|---|---|---|---|---|",
             _fmt_row("in-sample (final fit on all cases)", rep["in_sample"]["fitted ensemble"],
                      f" {rep['in_sample']['weighted_score']:.4f} |"),
             _fmt_row("held-out (nested CV)", rep["held_out"]["fitted ensemble"],
                      f" {rep['held_out']['weighted_score']['fitted ensemble']:.4f} |"),
             "", "Per outer fold (in-sample = on its training folds):", "",
             "| fold | cases train/test | chosen | in-sample Dice / HD95 | held-out Dice / HD95 |",
             "|---|---|---|---|---|"]
    for f in rep["folds"]:
        lines.append(f"| {f['fold']} | {f['n_train']}/{f['n_test']} | {f['chosen']['label']} | "
                     f"{f['in_sample']['dice']:.4f} / {f['in_sample']['hd95']:.2f} | "
                     f"{f['held_out']['dice']:.4f} / {f['held_out']['hd95']:.2f} |")
    return lines


def _md_chosen(rep: dict) -> list[str]:
    ch = rep["chosen"]
    lines = ["## Chosen (final fit on all cases -> spec.json)", "",
             f"- weights: {', '.join(f'{k} {v:.3g}' for k, v in ch['weights'].items())}"
             + (" (members with weight 0 are left out of spec.json)" if min(ch['weights'].values()) == 0 else "")]
    if ch["tumour_class_weights"]:
        lines.append(f"- tumour class weights: {ch['tumour_class_weights']}")
    d = ch["decision"]
    lines.append(f"- decision: {d['rule']}" + (f" at {d['threshold']:g}" if d["rule"] == "threshold" else ""))
    lines.append(f"- post-processing: {pp_label(tuple(ch['postprocess'].get(k) for k in PP_FIELDS))}")
    return lines


def _md_stability(rep: dict) -> list[str]:
    st = rep.get("choice_stability") or {}
    if not st.get("contenders") or not st.get("resamples"):
        return []
    lines = ["## How firm the choice is", "",
             f"The final search's {len(st['contenders'])} best distinct member weightings, each with the chosen "
             f"decision and post-processing, and the share of {st['resamples']} bootstrap draws of the "
             f"{st['cases']} cases (the same draw for all, paired) in which the same objective would choose it "
             "among them:", "",
             "| candidate | mean rank | weighted score | chosen in |", "|---|---|---|---|"]
    for i, c in enumerate(st["contenders"]):
        mr = "-" if c["mean_rank_vs_single_members"] is None else f"{c['mean_rank_vs_single_members']:.2f}"
        name = c["label"] + (" (**fitted**)" if i == 0 else "")
        lines.append(f"| {name} | {mr} | {c['weighted_score']:.4f} | {100 * c['share_chosen']:.0f}% |")
    share = st["contenders"][0]["share_chosen"]
    best = st.get("best_on_all_cases", 0)
    if best:
        lines += ["", f"With the chosen decision and post-processing, {st['contenders'][best]['label']} scores better "
                      "than the fitted candidate on all the cases: stage B post-processes only the best "
                      f"{rep['search_space']['top_k']} of stage A and never scored that pair (a larger `--top-k` "
                      "searches it)."]
    elif share < 0.5:
        lines += ["", f"The fitted candidate wins {100 * share:.0f}% of the draws: it is one of several near-equals "
                      "on these cases, and its weights are one choice among them, not a measure of each member's "
                      "worth."]
    return lines


def _md_search_space(rep: dict) -> list[str]:
    s = rep["search_space"]
    ax = s["postprocess_axes"]
    norm = rep["score_normalisation"]
    lines = ["## Search space", "",
             f"- stage A: {s['weightings']} weightings ({s['weightings_with_tumour_factors']} of them with tumour "
             f"class weights) x decisions {', '.join(s['decisions'])}, no post-processing",
             f"- stage B: the top {s['top_k'] or 'all'} of stage A x {s['postprocess_settings'] - 1} post-processing "
             f"settings: min_volume_mm3 {ax['min_volume_mm3']} x keep_largest {ax['keep_largest']} x "
             f"max_distance_to_pancreas_mm {ax['max_distance_to_pancreas_mm']} x never_empty "
             f"{ax['never_empty']}"
             + (f" x keep_most_confident {ax['keep_most_confident']} (with keep_largest off)"
                if ax.get("keep_most_confident", ["off"]) != ["off"] else "") + " (all off excluded)",
             f"- metric weights of the weighted score: {rep['metric_weights']} (HD95 and MASD divided by the "
             f"mean image diagonal {norm['image_diagonal_mm']:.0f} mm, volume RMSE by the "
             f"RMS true volume {norm['rms_true_volume_mm3']:.0f} mm3)"]
    if rep["cases"]["dropped"]:
        dropped = list(rep["cases"]["dropped"].items())[:20]
        lines.append("- dropped cases: " + "; ".join(f"{k}: {v}" for k, v in dropped))
    return lines


def _md_cost(rep: dict) -> list[str]:
    t = rep["timings_s"]
    mem = rep["memory"]
    w = rep["work"]
    return ["## Cost", "",
            f"- wall time: {t['total']:.1f} s, CPU time {t.get('cpu', float('nan')):.1f} s (reading and cropping "
            f"{t['load']:.1f} s, stage A {t['stage_a_s']:.1f} s, outer folds {t['outer_folds_s']:.1f} s, final "
            f"search {t['final_search_s']:.1f} s, how firm the choice is {t.get('stability_s', 0):.1f} s, report "
            f"{t.get('report', 0):.1f} s)",
            f"- peak RSS {mem['peak_rss_bytes'] / 2**30:.2f} GiB; crops {mem['crops_bytes'] / 2**20:.1f} MiB "
            f"(boxes {100 * mem['crop_voxel_fraction']:.2f}% of the voxels, live voxels "
            f"{100 * mem['live_voxel_fraction']:.3f}%)",
            f"- {w['weightings']} weighted-probability maps, {w['decisions']} decisions, {w['postprocess']} "
            f"post-processing calls, {w['metric_calls']} metric calls ({w['metric_reused']} identical masks reused)"]
