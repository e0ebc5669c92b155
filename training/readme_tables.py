"""The README's result tables, made from the committed result files, so that they cannot drift from them.

    python training/readme_tables.py --check      # exit 1, naming the table, when README.md differs from the files
    python training/readme_tables.py --write      # rewrite the tables in README.md (and training/README.md)

A table sits between `<!-- table NAME: made by training/readme_tables.py -->` and `<!-- end table -->`; its
NAME is a key of TABLES. Each table reads leaderboards that the scoring wrote (`panther-ensemble fit`'s
report.json, `panther-ensemble evaluate`'s leaderboard.json, `training/pool_heldout.py`'s pooled JSON): the numbers
are those files', rounded, and the bold marks the best entry of each metric within a group of rows.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRICS = (("dice", "{:.3f}", max), ("surface_dice_5mm", "{:.3f}", max), ("hd95", "{:.1f}", min),
           ("masd", "{:.1f}", min), ("volume_rmse_mm3", "{:.0f}", min))
HEADER = ("| {first} | entry | Dice | surface Dice 5 mm | HD95 mm | MASD mm | volume RMSE mm3 | mean rank |\n"
          "|---|---|---|---|---|---|---|---|")
# leaderboard names -> the words of the tables
ENTRY = {"fitted ensemble (held-out)": "fitted (shipped spec's fit)", "equal-weight ensemble": "equal weights, argmax",
         "fitted": "**fitted (shipped)**", "equal": "equal weights, argmax",
         "rebuilt": "**rebuilt members (shipped)**", "release": "the release they replaced"}
T1 = "docs/results/experiments/task1_60ep_confident"
T1I = "docs/results/experiments/task1_iso84"
T1E = "docs/results/experiments/task1_84ep"
T1B = "docs/results/experiments/task1_back60"
T1G = "docs/results/experiments/task1_guard60"
T2 = "docs/results/experiments/keep_confident_task2"
T2G = "docs/results/experiments/task2_60ep_guard"
T2B = "docs/results/experiments/task2_bf16_release"
RR = "docs/results/experiments/rebuild_release"
# the sets rescore.sh has scored the rebuilt members on so far (of the sets the replaced release's tables show; the
# rest are in its default list: add them here and to ship.sh's T<N>_SETS as they come)
RESCORED = {1: ("1140-1159", "1200-1219", "1220-1239", "1240-1259"),
            2: ("1160-1179", "1200-1219", "1220-1239")}
DECIDED = {1: "1330-1349", 2: "1310-1329"}


def shipped_rows(t: int) -> list[tuple[str, str, str]]:
    """The shipped release (the rebuilt members, since 2026-12-08) on every held-out set of Task t."""
    n = 20 * (1 + len(RESCORED[t]))
    return [("1100-1119", f"docs/results/heldout_task{t}/leaderboard.json", "fitted"),
            *[(s, f"{RR}/rescored_task{t}_seeds{s}/leaderboard.json", "fitted") for s in RESCORED[t]],
            (f"{DECIDED[t]} (its release decision)",
             f"{RR}/heldout_candidate_task{t}_seeds{DECIDED[t]}/leaderboard.json", "fitted"),
            (f"{n}: all that decided nothing", f"{RR}/pooled_rebuilt_task{t}_undecided.json", "all"),
            (f"{n + 20}: with its decision set", f"{RR}/pooled_rebuilt_task{t}_all.json", "fitted")]


# NAME -> (first column's title, [(first column, result file, the entries to show: "all" or "fitted")])
TABLES = {
    "nested-cv": ("task", [
        ("1", "docs/results/fit_task1/report.json", "all"),
        ("2", "docs/results/fit_task2/report.json", "all"),
    ]),
    "heldout-task1": ("held-out cases (Task 1)", shipped_rows(1)),
    "heldout-task2": ("held-out cases (Task 2)", shipped_rows(2)),
    "releases": ("task: cases (the fitted masks of both releases)", [
        (f"1: the {20 * (1 + len(RESCORED[1]))} that decided nothing", f"{RR}/compare_releases_task1_undecided.json", "all"),
        ("1: with the rebuilt members' decision set", f"{RR}/compare_releases_task1.json", "all"),
        (f"2: the {20 * (1 + len([s for s in RESCORED[2] if s != '1240-1259']))} that decided nothing",
         f"{RR}/compare_releases_task2_undecided.json", "all"),
        ("2: with the rebuilt members' decision set", f"{RR}/compare_releases_task2.json", "all"),
    ]),
    # the 60-epoch release (2026-12-03 to 2026-12-07), in HISTORY.md
    "heldout-task1-60ep": ("held-out cases (Task 1, 60-epoch release)", [
        ("1100-1119", f"{RR}/heldout_release_task1_seeds1100-1119/leaderboard.json", "fitted"),
        ("1140-1159", f"{T1}/heldout_release_seeds1140-1159/leaderboard.json", "fitted"),
        ("1200-1219", f"{T1}/heldout_release_seeds1200-1219/leaderboard.json", "fitted"),
        ("1220-1239 (its release decision)", f"{T1}/heldout_candidate_seeds1220-1239/leaderboard.json", "fitted"),
        ("1240-1259 (a candidate's decision, lost)", f"{T1I}/heldout_release_seeds1240-1259/leaderboard.json", "fitted"),
        ("1260-1279 (the 84-epoch release's decision)", f"{T1E}/heldout_release_seeds1260-1279/leaderboard.json",
         "fitted"),
        ("1280-1299 (the decision to go back)", f"{T1B}/heldout_candidate_seeds1280-1299/leaderboard.json", "fitted"),
        ("1310-1329 (a candidate's decision, tied)", f"{T1G}/heldout_release_seeds1310-1329/leaderboard.json", "fitted"),
        ("140: the first seven", f"{T1B}/pooled_release_1100-1119_1140-1159_1200-1299.json", "all"),
        ("1330-1349 (the rebuilt members' decision)", f"{RR}/heldout_release_task1_seeds1330-1349/leaderboard.json",
         "fitted"),
    ]),
    # the 84-epoch release (2026-12-06, one day), in HISTORY.md
    "heldout-task1-84ep": ("held-out cases (Task 1, 84-epoch release)", [
        ("1100-1119", f"{T1B}/heldout_release84ep_seeds1100-1119/leaderboard.json", "fitted"),
        ("1140-1159", f"{T1E}/heldout_release_seeds1140-1159/leaderboard.json", "fitted"),
        ("1200-1219", f"{T1E}/heldout_release_seeds1200-1219/leaderboard.json", "fitted"),
        ("1220-1239", f"{T1E}/heldout_release_seeds1220-1239/leaderboard.json", "fitted"),
        ("1240-1259", f"{T1E}/heldout_release_seeds1240-1259/leaderboard.json", "fitted"),
        ("1260-1279 (its release decision)", f"{T1E}/heldout_candidate_seeds1260-1279/leaderboard.json", "fitted"),
        ("1280-1299 (the decision to go back)", f"{T1B}/heldout_release_seeds1280-1299/leaderboard.json", "fitted"),
        ("140: all seven", f"{T1B}/pooled_release84ep_1100-1119_1140-1159_1200-1299.json", "all"),
    ]),
    # the bfloat16-trained release (2026-12-06 to 2026-12-07), in HISTORY.md
    "heldout-task2-bf16": ("held-out cases (Task 2, bfloat16-trained 60-epoch release)", [
        ("1100-1119", f"{RR}/heldout_release_task2_seeds1100-1119/leaderboard.json", "fitted"),
        ("1160-1179", f"{T2B}/heldout_release_seeds1160-1179/leaderboard.json", "fitted"),
        ("1200-1219", f"{T2B}/heldout_release_seeds1200-1219/leaderboard.json", "fitted"),
        ("1220-1239", f"{T2B}/heldout_release_seeds1220-1239/leaderboard.json", "fitted"),
        ("1260-1279", f"{T2B}/heldout_release_seeds1260-1279/leaderboard.json", "fitted"),
        ("1280-1299 (the release decision)", f"{T2B}/heldout_candidate_seeds1280-1299/leaderboard.json", "fitted"),
        ("120: all six", f"{T2B}/pooled_release_1100-1119_1160-1179_1200-1239_1260-1299.json", "all"),
        ("1310-1329 (the rebuilt members' decision)", f"{RR}/heldout_release_task2_seeds1310-1329/leaderboard.json",
         "fitted"),
    ]),
    # the release before (float32 60-epoch members, never-empty guard, 2026-12-05 to 2026-12-06), in HISTORY.md
    "heldout-task2-60ep": ("held-out cases (Task 2, float32 60-epoch release)", [
        ("1100-1119", f"{T2B}/heldout_release60ep_seeds1100-1119/leaderboard.json", "fitted"),
        ("1160-1179", f"{T2G}/heldout_release_seeds1160-1179/leaderboard.json", "fitted"),
        ("1200-1219", f"{T2G}/heldout_release_seeds1200-1219/leaderboard.json", "fitted"),
        ("1220-1239", f"{T2G}/heldout_release_seeds1220-1239/leaderboard.json", "fitted"),
        ("1260-1279 (the release decision)", f"{T2G}/heldout_candidate_seeds1260-1279/leaderboard.json", "fitted"),
        ("1280-1299", f"{T2B}/heldout_release_seeds1280-1299/leaderboard.json", "fitted"),
        ("120: all six", f"{T2B}/pooled_release60ep_1100-1119_1160-1179_1200-1239_1260-1299.json", "all"),
        ("1240-1259 (post hoc: the set that prompted the release's rule; not pooled)",
         f"{T2G}/posthoc_candidate_seeds1240-1259/leaderboard.json", "fitted"),
    ]),
    # the release before (36-epoch members, 2026-12-03 to 2026-12-05), in docs/results/HISTORY.md
    "heldout-task2-36ep": ("held-out cases (Task 2, 36-epoch release)", [
        ("1100-1119", f"{T2G}/heldout_release36ep_seeds1100-1119/leaderboard.json", "fitted"),
        ("1160-1179 (the release decision)", "docs/results/heldout_task2_seeds1160-1179/leaderboard.json", "fitted"),
        ("1200-1219", f"{T2}/heldout_release36ep_seeds1200-1219/leaderboard.json", "fitted"),
        ("1220-1239", f"{T2}/confirm_release36ep_seeds1220-1239/leaderboard.json", "fitted"),
        ("1240-1259", "docs/results/experiments/task2_60ep/heldout_release_seeds1240-1259/leaderboard.json", "fitted"),
        ("1260-1279", f"{T2G}/heldout_release_seeds1260-1279/leaderboard.json", "fitted"),
        ("100: 1100-1119, 1160-1179, 1200-1259", "docs/results/experiments/task2_60ep/pooled_release36ep_1100-1119_1160-1179_1200-1259.json", "all"),
    ]),
}
# the files whose tables --check and --write keep (the default file list)
SHOWN_IN = ("README.md", "training/README.md", "docs/FITTING.md", "docs/results/HISTORY.md")
ORDINAL = {1: "1st", 2: "2nd", 3: "3rd"}


def leaderboard(path: Path) -> list[dict]:
    doc = json.loads(path.read_text())
    return doc["leaderboard_held_out"] if "leaderboard_held_out" in doc else doc["leaderboard"]


def rows_of(label: str, board: list[dict], which: str) -> list[str]:
    best = {m: pick(r[m] for r in board) for m, _, pick in METRICS}
    best_rank = min(r["mean_rank"] for r in board)
    shown = board if which == "all" else [r for r in board if r["name"] == "fitted"]
    if not shown:
        raise SystemExit(f"readme_tables.py: no 'fitted' entry in the leaderboard of {label}")
    out = []
    for r in shown:
        cells = []
        for m, fmt, _ in METRICS:
            v = fmt.format(r[m])
            cells.append(f"**{v}**" if which == "all" and r[m] == best[m] else v)
        rank = f"{r['mean_rank']:.1f}"
        if which == "all":
            rank = f"**{rank}**" if r["mean_rank"] == best_rank else rank
        else:  # one row of the set: where it stands among the set's entries
            place = 1 + sum(o["mean_rank"] < r["mean_rank"] for o in board)
            tied = "tied " if sum(o["mean_rank"] == r["mean_rank"] for o in board) > 1 else ""
            rank += f" ({tied}{ORDINAL.get(place, f'{place}th')} of {len(board)})"
        name = ENTRY.get(r["name"], r["name"])
        out.append(f"| {label if not out else 'same'} | {name} | " + " | ".join(cells) + f" | {rank} |")
    return out


def table(name: str) -> str:
    first, groups = TABLES[name]
    lines = [HEADER.format(first=first)]
    for label, path, which in groups:
        lines += rows_of(label, leaderboard(REPO / path), which)
    sources = ", ".join(f"`{p}`" for _, p, _ in groups)
    return "\n".join(lines) + f"\n\n(Made by `training/readme_tables.py` from {sources}.)"


BLOCK = re.compile(r"(<!-- table (?P<name>[\w-]+): made by training/readme_tables.py -->\n)(?P<body>(?:.*?\n)??)(<!-- end table -->)",
                   re.S)


def render(text: str) -> tuple[str, list[str]]:
    """The text with every table block remade, and the names of the blocks that changed."""
    changed = []

    def one(m: re.Match) -> str:
        if m["name"] not in TABLES:
            raise SystemExit(f"readme_tables.py: unknown table '{m['name']}' (known: {', '.join(TABLES)})")
        new = table(m["name"]) + "\n"
        if new != m["body"]:
            changed.append(m["name"])
        return m.group(1) + new + m.group(4)

    return BLOCK.sub(one, text), changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--write", action="store_true")
    ap.add_argument("files", nargs="*", type=Path, default=[REPO / f for f in SHOWN_IN])
    a = ap.parse_args(argv)
    stale = []
    for f in a.files:
        new, changed = render(f.read_text())
        if a.write and changed:
            f.write_text(new)
            print(f"{f}: remade {', '.join(changed)}")
        stale += [f"{f}: table {c}" for c in changed]
    if a.check and stale:
        print("readme_tables.py: differs from the result files (run training/readme_tables.py --write): "
              + "; ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
