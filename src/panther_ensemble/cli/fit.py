"""`panther-ensemble fit`: choose an ensemble's weights, decision rule and post-processing on training data."""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Sequence

import torch

from ..errors import InputError
from ..scoring.fit import (DEFAULT_FOLDS, DEFAULT_METRIC_WEIGHTS, OBJECTIVES, Evaluator, SearchSpace, crop_rule,
                           find_member, load_cases, nested_cv, peek_labels, write_outputs)
from ..scoring.fit.cases import GATE_MARGIN_EXTRA
from ..scoring.fit.space import DEFAULT_THRESHOLDS, DEFAULT_TOP_K
from ..spec import load_spec

HELP = """Tune an ensemble on training cases: choose its member weights, decision rule (argmax or a
threshold on P(tumour)) and post-processing (small-component filter, keep-largest, distance to the
pancreas) by scoring candidates with the five PANTHER metrics, and write the best as a new spec.

Input: a spec naming the members, each member's out-of-fold probability maps of the training cases
(from nnU-Net training with --npz, or `panther-ensemble predict --save-probabilities`), and the cases'
ground-truth labels. Output (--out): spec.json (the fitted spec, ready for predict --spec), report.json
and report.md (the choice, its held-out estimate by nested cross-validation, the single members for
comparison) and tradeoff.png. Details: docs/FITTING.md."""

EPILOG = """\
examples:
  panther-ensemble fit --base-spec resources/task1.json --model-dir nnUNet_results \\
      --gt nnUNet_raw/Dataset901_X/labelsTr --out fits/task1
  panther-ensemble fit --base-spec my_spec.json --oof DA5=probs/DA5 default=probs/default --gt labels/ \\
      --out fits/mine --objective weighted --metric-weights hd95=5,masd=5"""

log = logging.getLogger(__name__)

#: names accepted by --metric-weights
METRIC_ALIASES = {"dice": "dice", "surface_dice": "surface_dice_5mm", "surface_dice_5mm": "surface_dice_5mm",
                  "sdice": "surface_dice_5mm", "hd95": "hd95", "masd": "masd", "volume_rmse": "volume_rmse_mm3",
                  "volume_rmse_mm3": "volume_rmse_mm3", "rmse": "volume_rmse_mm3"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("what to fit")
    data.add_argument("--base-spec", type=Path, required=True, metavar="FILE",
                      help="ensemble spec whose members are fitted (e.g. resources/task1.json); its other settings "
                           "are kept")
    data.add_argument("--gt", type=Path, required=True, metavar="DIR",
                      help="folder of the training cases' ground-truth labels (<case>.mha or .nii.gz; 0 background, "
                           "1 tumour, 2 pancreas)")
    data.add_argument("--model-dir", type=Path, default=None, metavar="DIR",
                      help="folder holding the members' nnU-Net model folders: a member's maps are read from "
                           "<DIR>/<its model>/fold_*/validation/*.npz (written when nnU-Net trains with --npz)")
    data.add_argument("--oof", nargs="+", default=[], metavar="NAME=DIR",
                      help="the maps of member NAME, instead: a folder of <case>.npz (from `panther-ensemble predict "
                           "--save-probabilities`) or an nnU-Net model folder")
    data.add_argument("--out", type=Path, required=True, metavar="DIR",
                      help="where to write spec.json, report.json, report.md and tradeoff.png")
    goal = p.add_argument_group("how candidates are compared")
    goal.add_argument("--objective", choices=OBJECTIVES, default="mean-rank",
                      help="mean-rank: the challenge's ranking, each candidate's mean rank over the five metrics "
                           "against the single members; weighted: a weighted sum of the normalised metrics "
                           "(default: mean-rank)")
    goal.add_argument("--metric-weights", default=None, metavar="NAME=W,...",
                      help="weights for --objective weighted, of dice, surface_dice, hd95, masd, volume_rmse "
                           "(default: all 1)")
    goal.add_argument("--official", action="store_true",
                      help="score with the organisers' spacing mix-up, as `evaluate --official` (default: correct "
                           "spacing)")
    goal.add_argument("--folds", type=int, default=DEFAULT_FOLDS, metavar="N",
                      help=f"outer cross-validation folds of the held-out estimate (default: {DEFAULT_FOLDS})")
    goal.add_argument("--seed", type=int, default=0, metavar="N",
                      help="seed of the fold split and of the random weightings (default: 0)")
    space = p.add_argument_group("what is tried")
    space.add_argument("--weight-step", default="auto", metavar="STEP",
                       help="step of the grid of member weights, or none; auto: 0.1 up to 3 members, 0.2 for 4-5, "
                            "no grid beyond (default: auto)")
    space.add_argument("--dirichlet", type=int, default=None, metavar="N",
                       help="random weightings tried besides the grid (default: 0 up to 5 members, 150 beyond)")
    space.add_argument("--tumour-factors", default="", metavar="F,...",
                       help="also try weighting one member's tumour probability F times its other labels, e.g. "
                            "0.5,2 (default: not tried)")
    space.add_argument("--thresholds", default=",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS), metavar="T,...",
                       help="thresholds on the ensemble's P(tumour) to try besides argmax; '' for none (default: "
                            f"{','.join(f'{t:g}' for t in DEFAULT_THRESHOLDS)})")
    space.add_argument("--no-argmax", action="store_true", help="do not try the argmax rule (default: tried)")
    space.add_argument("--min-volumes", default="off,100,500,2000", metavar="MM3,...",
                       help="minimum tumour component volumes in mm3 to try; off = keep all (default: "
                            "off,100,500,2000)")
    space.add_argument("--keep-largest", default="off,1,2", metavar="K,...",
                       help="numbers of largest tumour components to keep; off = all (default: off,1,2)")
    space.add_argument("--keep-most-confident", default="off", metavar="K,...",
                       help="numbers of tumour components of highest peak P(tumour) to keep (spec "
                            "postprocess.keep_most_confident), tried with keep-largest off; off = not tried "
                            "(default: off)")
    space.add_argument("--max-distances", default="off,5,20", metavar="MM,...",
                       help="largest distance in mm of a tumour component from the predicted pancreas; off = no "
                            "limit (default: off,5,20)")
    space.add_argument("--never-empty", default="off", metavar="on|off,...",
                       help="whether to try the fallback that keeps the largest argmax tumour component when the "
                            "decision and the rules leave no tumour (spec postprocess.never_empty); on,off searches "
                            "both, and on an exact tie the fallback wins (default: off)")
    space.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, metavar="K",
                       help="try post-processing on the K best weightings and decisions only; 0 = on all (default: "
                            f"{DEFAULT_TOP_K})")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="CPU threads (default: 1)")


# --------------------------------------------------------------------------------------------------
# option values
# --------------------------------------------------------------------------------------------------
def _float_list(text: str, what: str, allow_off: bool = False) -> list:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if allow_off and part.lower() in ("off", "none"):
            out.append(None)
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise InputError(what, f"not a number{' or off' if allow_off else ''}: {part!r}") from None
    return out


def _count_list(text: str, what: str) -> list:
    """Whole numbers or off (None), in the given order."""
    out = []
    for v in _float_list(text, what, True):
        if v is not None and v != int(v):
            raise InputError(what, f"must be whole numbers or off, got {v:g}")
        out.append(None if v is None else int(v))
    return out


def _on_off_list(text: str, what: str) -> list:
    """on -> True, off -> None (the search space's 'off'), in the given order."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part not in ("on", "off"):
            raise InputError(what, f"values are on or off, got {part!r}")
        out.append(True if part == "on" else None)
    if not out:
        raise InputError(what, "no value given (on, off or on,off)")
    return out


def parse_metric_weights(text: str | None) -> dict[str, float]:
    """--metric-weights: NAME=WEIGHT pairs over the defaults (all 1)."""
    w = dict(DEFAULT_METRIC_WEIGHTS)
    if not text:
        return w
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise InputError("--metric-weights", f"expected NAME=WEIGHT, got {part!r}")
        k, v = part.split("=", 1)
        key = METRIC_ALIASES.get(k.strip().lower())
        if key is None:
            raise InputError("--metric-weights",
                             f"unknown metric {k.strip()!r} (known: {', '.join(sorted(METRIC_ALIASES))})")
        try:
            w[key] = float(v)
        except ValueError:
            raise InputError("--metric-weights", f"{k.strip()}: not a number: {v!r}") from None
        if not (w[key] >= 0 and math.isfinite(w[key])):
            raise InputError("--metric-weights", f"{k.strip()}: must be >= 0, got {v!r}")
    if sum(w.values()) <= 0:
        raise InputError("--metric-weights", "at least one weight must be > 0")
    return w


def _parse_oof(items: Sequence[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for it in items:
        if "=" not in it:
            raise InputError("--oof", f"expected NAME=DIR, got {it!r}")
        name, d = it.split("=", 1)
        if not name or not d:
            raise InputError("--oof", f"expected NAME=DIR, got {it!r}")
        if name in out:
            raise InputError("--oof", f"member {name!r} given twice")
        out[name] = Path(d)
    return out


def _member_sources(base, args: argparse.Namespace) -> list:
    names = [m.name for m in base.members]
    oof = _parse_oof(args.oof)
    unknown = [n for n in oof if n not in names]
    if unknown:
        raise InputError("--oof", f"member(s) {', '.join(unknown)} not in the base spec {args.base_spec} "
                                  f"(members: {', '.join(names)})")
    sources = []
    for m in base.members:
        if m.name in oof:
            sources.append(find_member(m.name, oof[m.name]))
        elif args.model_dir is not None:
            sources.append(find_member(m.name, Path(args.model_dir) / m.model))
        else:
            raise InputError("--oof", f"no out-of-fold maps for member {m.name!r} (give {m.name}=DIR, or --model-dir)")
    return sources


def _search_space(args: argparse.Namespace, n_members: int, has_pancreas: bool, step, keep) -> SearchSpace:
    return SearchSpace.build(
        n_members, weight_step=step, dirichlet=args.dirichlet, seed=args.seed,
        tumour_factors=_float_list(args.tumour_factors, "--tumour-factors"),
        thresholds=_float_list(args.thresholds, "--thresholds"), argmax=not args.no_argmax,
        min_volumes=_float_list(args.min_volumes, "--min-volumes", True), keep_largest=keep,
        max_distances=_float_list(args.max_distances, "--max-distances", True),
        never_empty=_on_off_list(args.never_empty, "--never-empty"), top_k=args.top_k,
        has_pancreas=has_pancreas, keep_most_confident=_count_list(args.keep_most_confident, "--keep-most-confident"))


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------
def main(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    torch.set_num_threads(max(1, int(args.threads)))
    base = load_spec(args.base_spec)
    sources = _member_sources(base, args)
    mw = parse_metric_weights(args.metric_weights)
    if args.folds < 2:
        raise InputError("--folds", f"must be >= 2, got {args.folds}")
    ws = str(args.weight_step).strip().lower()
    step = ws if ws in ("auto", "none") else _float_list(ws, "--weight-step")[0]
    keep = [None if k is None else int(k) for k in _float_list(args.keep_largest, "--keep-largest", True)]
    for s in sources:  # nnU-Net layout: from dataset.json; our npz layout: the first file's 'labels' array only
        peek_labels(s, base.tumor_label)
    space = _search_space(args, len(sources), any(base.pancreas_label in s.labels for s in sources), step, keep)
    log.info("search: %d weightings x %d decisions, then top %s x %d post-processing settings = %d candidates "
             "per search", len(space.weightings), len(space.decisions), space.top_k or "all",
             len(space.pp_grid) - 1, space.n_candidates())
    rule = crop_rule(space, sources, base.tumor_label, base.pancreas_label)
    log.info("crop: some member p(tumour) >= %.3f, plus ground truth%s", rule.tumour_min,
             f", margin {rule.margin_mm:g} mm (+{GATE_MARGIN_EXTRA} voxels) for the pancreas gate"
             if rule.margin_mm is not None else "")
    data = load_cases(sources, args.gt, rule, base.tumor_label, base.pancreas_label)
    t_loaded = time.perf_counter()
    ev = Evaluator(data, base.tumor_label, base.pancreas_label, official=bool(args.official))
    res = nested_cv(ev, space, args.objective, mw, folds=args.folds, seed=args.seed)
    if all(a["dice"] == 0.0 for a in (res.insample_agg, res.heldout_agg, *res.reference.values())):
        # a spec fitted on members that find no tumour would ship a model that finds nothing, and look fitted
        raise InputError("--oof", f"no member finds the tumour: each member alone, their equal-weight ensemble and "
                                  f"the fitted choice score tumour Dice 0 on all {ev.n} cases (did the members' "
                                  "training collapse?); no spec written")
    timings = {"load": t_loaded - t_start, **res.seconds, "fit": time.perf_counter() - t_loaded}
    info = {"objective": args.objective, "metric_weights": mw, "folds": args.folds,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
                        if k not in ("func",) and not callable(v)}}
    rep = write_outputs(Path(args.out), base, ev, res, space, info, timings, t_start)
    _print_summary(ev, res, args.objective, [m.name for m in base.members], rep, Path(args.out))
    return 0


def _print_summary(ev: Evaluator, res, objective: str, names: list[str], rep: dict, out: Path) -> None:
    timings = rep["timings_s"]
    print(f"# fitted on {ev.n} cases ({len(ev.data.dropped)} dropped), {res.n_distinct_candidates} candidates, "
          f"objective {objective}")
    print(f"chosen: {res.final.best.cand.label(names)}")
    if res.stability and res.stability_resamples:
        print(f"chosen in {100 * res.stability[0].share_chosen:.0f}% of {res.stability_resamples} bootstrap draws of "
              f"the cases among the search's {len(res.stability)} best weightings (report.md: how firm the choice is)")
        best = rep["choice_stability"]["best_on_all_cases"]
        if best:
            print(f"note: {res.stability[best].cand.label(names)} scores better on all cases than the fitted "
                  "candidate: stage B never post-processed that weighting (see report.md)")
    print(f"{'entry':<34} {'Dice':>7} {'sDice5':>7} {'HD95':>7} {'MASD':>6} {'RMSE':>8}")
    rows = [("fitted, held-out", res.heldout_agg), ("fitted, in-sample", res.insample_agg),
            *res.reference.items()]
    for nm, a in rows:
        print(f"{nm:<34} {a['dice']:7.4f} {a['surface_dice_5mm']:7.4f} {a['hd95']:7.2f} {a['masd']:6.2f} "
              f"{a['volume_rmse_mm3']:8.0f}")
    print(f"time {timings['total']:.1f} s, CPU {timings['cpu']:.1f} s (read {timings['load']:.1f} s, fit "
          f"{timings['fit']:.1f} s); peak RSS {rep['memory']['peak_rss_bytes'] / 2**30:.2f} GiB; wrote "
          f"{out}/spec.json, report.json, report.md, tradeoff.png")
