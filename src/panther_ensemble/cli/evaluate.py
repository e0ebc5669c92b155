"""`panther-ensemble evaluate`: score predicted tumour masks with the PANTHER challenge's five metrics."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import InputError
from ..scoring.evaluate import (bootstrap_summary, default_names, evaluate_folders, format_bootstrap,
                                format_case_table, format_leaderboard, safe_dirnames, write_leaderboard,
                                write_metrics)
from ..scoring.leaderboard import aggregate, rank_table

HELP = """Score predicted tumour masks against ground-truth labels with the five PANTHER metrics: Dice,
surface Dice at 5 mm, HD95, MASD (all per case) and the RMSE of the tumour volume (over the cases).

With one --pred folder: a table per case and the aggregate. With several: each is scored and they are
ranked as on the challenge's leaderboard (mean rank over the five metrics). Predictions are matched to
ground-truth files by case name, the file name without its suffix (case_001.mha <-> case_001.nii.gz)."""

EPILOG = """\
examples:
  panther-ensemble evaluate --pred masks/ --gt labels/ --out report/
  panther-ensemble evaluate --pred ours/ baseline/ --names ours baseline --gt labels/ --official
  panther-ensemble evaluate --pred a/ b/ c/ --gt labels/ --bootstrap 2000 --reference b --out report/"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", nargs="+", required=True, type=Path, metavar="DIR",
                        help="folder of predicted masks, one file per case (.mha, .nii.gz, ...; values 0 and 1); "
                             "give several folders to rank them")
    parser.add_argument("--gt", required=True, type=Path, metavar="DIR",
                        help="folder of ground-truth label files (0 background, 1 tumour, 2 pancreas); its files "
                             "decide which cases are scored")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="also write metrics.json, metrics.csv and a figure (metrics.png) here; with several "
                             "--pred folders one subfolder each plus leaderboard.json/.csv/.png (default: print "
                             "only)")
    parser.add_argument("--official", action="store_true",
                        help="score as the organisers' evaluation script does, including its spacing mix-up "
                             "(x, y, z spacing with z, y, x arrays, which changes HD95, MASD and surface Dice on "
                             "anisotropic scans): use it to predict leaderboard numbers (default: correct spacing)")
    parser.add_argument("--names", nargs="+", metavar="NAME",
                        help="names to show for the --pred folders, one each (default: the folder names)")
    parser.add_argument("--missing-as-empty", action="store_true",
                        help="score a case with no prediction as an empty mask (default: stop with an error that "
                             "lists the missing cases)")
    parser.add_argument("--preview", type=Path, metavar="DIR",
                        help="also write DIR/<case>.png (prediction against ground truth through the tumour: true "
                             "positives green, false positives red, false negatives blue) and DIR/contact_sheet.png; "
                             "several --pred folders: one subfolder each. Needs --images")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="with several --pred folders: also draw N case sets with replacement (paired: one draw "
                             "for every entry) and report how often each entry leads the leaderboard and each "
                             "entry's difference from --reference per metric with a 95%% interval; written to "
                             "bootstrap.json with --out (default 0: off; 2000 is a good number)")
    parser.add_argument("--reference", metavar="NAME",
                        help="the entry the others are compared with under --bootstrap (default: the leaderboard's "
                             "first)")
    parser.add_argument("--seed", type=int, help="seed of the --bootstrap draws (default 0)")
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="the MRI files the previews are drawn on (<case>.* or <case>_0000.*)")


def main(args: argparse.Namespace) -> int:
    pred_dirs = list(args.pred)
    names = list(args.names) if args.names else default_names(pred_dirs)
    if len(names) != len(pred_dirs):
        raise InputError("--names", f"{len(names)} name(s) given for {len(pred_dirs)} --pred folder(s)")
    if len(set(names)) != len(names):
        raise InputError("--names", "names must be distinct")
    official = bool(args.official)
    if args.preview is not None and args.images is None:
        raise InputError("--preview", "needs --images DIR, the MRI the masks are drawn on")
    if args.bootstrap < 0:
        raise InputError("--bootstrap", f"must be 0 (off) or a number of draws, got {args.bootstrap}")
    if args.bootstrap and len(pred_dirs) < 2:
        raise InputError("--bootstrap", "compares entries: give at least two --pred folders")
    if args.reference is not None and not args.bootstrap:
        raise InputError("--reference", "is the entry --bootstrap compares with: give --bootstrap N too")
    if args.seed is not None and not args.bootstrap:
        raise InputError("--seed", "seeds the --bootstrap draws: give --bootstrap N too")
    if args.reference is not None and args.reference not in names:
        raise InputError("--reference", f"{args.reference!r} is not one of the entries ({', '.join(names)})")
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
        if args.bootstrap:
            reference = args.reference if args.reference is not None else rows[0]["name"]
            boot = bootstrap_summary(dict(zip(names, results)), reference, args.bootstrap,
                                     0 if args.seed is None else args.seed)
            print()
            print(format_bootstrap(boot))

    if args.out is not None:
        out = Path(args.out)
        if len(pred_dirs) == 1:
            write_metrics(out, results[0], aggs[names[0]], {**meta, "name": names[0], "pred": str(pred_dirs[0])},
                          names[0])
        else:
            for name, sub, d, cases in zip(names, safe_dirnames(names), pred_dirs, results):
                write_metrics(out / sub, cases, aggs[name], {**meta, "name": name, "pred": str(d)}, name)
            write_leaderboard(out, rows, {**meta, "pred": [str(d) for d in pred_dirs], "names": names})
            if args.bootstrap:
                (out / "bootstrap.json").write_text(json.dumps(boot, indent=2) + "\n")
        log.info("wrote results to %s", out)
    if args.preview is not None:
        from ..preview import comparison_previews

        subs = [Path(args.preview)] if len(pred_dirs) == 1 else [Path(args.preview) / s for s in safe_dirnames(names)]
        for d, sub, cases in zip(pred_dirs, subs, results):
            pages = comparison_previews(d, args.gt, args.images, sub, cases)
            log.info("previews in %s (contact sheet %s)", sub, pages[0] if pages else "-")
    return 0
