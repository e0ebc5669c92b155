"""Pool several held-out sets of one task into one leaderboard, with its bootstrap (which parts of the
table the cases support).

    python training/pool_heldout.py docs/results/heldout_task1 docs/results/heldout_task1_seeds1120-1139 \
        --out docs/results/heldout_task1_seeds1120-1139/pooled_1100-1139.json

Reads each set's per-case metrics (SET/<entry>/metrics.json "cases", as `panther-ensemble evaluate` writes
them; every set must hold the same entries and no case twice), ranks the pooled aggregates like the
challenge's leaderboard, and adds `bootstrap` (`scoring.evaluate.bootstrap_summary`: 2000 resampled case
sets, seed 0; each entry minus --reference per metric).

    python training/pool_heldout.py --compare new=SET,SET old=SET,SET --reference old --out F.json

compares releases instead: one entry (--entry, default fitted) of each release pooled over its sets, which must
hold the same cases (each release scored on its own maps of the same phantoms), ranked and bootstrapped paired.
`repath` rewrites the files that name a held-out set when the set's folder moves (training/experiment.sh
exp_repath_pooled, in the ship steps).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ENTRIES = ("default", "DA5", "iso", "equal", "fitted")


def pool(sets: list[Path], entries=ENTRIES) -> dict:
    """entry -> case -> metrics over all sets; a case in two sets is an error (the sets must not overlap)."""
    per_case: dict = {e: {} for e in entries}
    for d in sets:
        for e in entries:
            cases = json.loads((d / e / "metrics.json").read_text())["cases"]
            twice = sorted(set(cases) & set(per_case[e]))
            if twice:
                raise SystemExit(f"error: {d / e / 'metrics.json'}: cases already in another set: {', '.join(twice)}")
            per_case[e].update(cases)
    return per_case


def pool_releases(releases: dict[str, list[Path]], entry: str = "fitted") -> dict:
    """release -> case -> metrics of its `entry` over its sets; every release must hold the same cases."""
    per_case = {name: pool(sets, (entry,))[entry] for name, sets in releases.items()}
    first, *rest = releases
    for name in rest:
        if set(per_case[name]) != set(per_case[first]):
            only = sorted(set(per_case[name]) ^ set(per_case[first]))
            raise SystemExit(f"error: releases {first} and {name} hold different cases: {', '.join(only[:5])}"
                             + (f" and {len(only) - 5} more" if len(only) > 5 else ""))
    return per_case


def seed_ranges(seeds) -> str:
    """{1100, ..., 1119, 1140, ..., 1159} -> '1100-1119,1140-1159'."""
    runs: list[list[int]] = []
    for v in sorted(seeds):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def check_seeds(cases, seeds: str) -> None:
    """--seeds records which phantoms a pooled file holds (its name and the READMEs quote it): when given, it must be
    exactly the seeds of the pooled cases (names ending in seed<N>), or the record would name cases it does not hold."""
    if not seeds:
        return
    from panther_ensemble.phantoms.datasets import parse_seeds

    try:
        claimed = set(parse_seeds(seeds))
    except ValueError:
        raise SystemExit(f"error: --seeds '{seeds}': expected seeds and ranges, e.g. 1100-1119,1140-1159") from None
    held = set()
    for case in cases:
        m = re.search(r"seed(\d+)$", case)
        if m is None:
            raise SystemExit(f"error: --seeds given, but case '{case}' names no seed (expected a name ending in seed<N>)")
        held.add(int(m.group(1)))
    if claimed != held:
        raise SystemExit(f"error: --seeds {seeds} is not what the sets hold: {seed_ranges(held)}")


def parse_release(text: str) -> tuple[str, list[Path]]:
    name, sep, sets = text.partition("=")
    if not sep or not name or not sets:
        raise argparse.ArgumentTypeError(f"'{text}': expected NAME=SET[,SET...]")
    return name, [Path(d) for d in sets.split(",")]


def argv_of(doc: dict, out: str) -> list[str]:
    """The arguments that wrote a pooled (or --compare) file, read back from it."""
    sets = doc["sets"]
    chosen = (["--compare", *(f"{name}={','.join(d)}" for name, d in sets.items()), "--entry", doc["entry"]]
              if isinstance(sets, dict) else list(sets))
    return [*chosen, "--seeds", doc["seeds"], "--reference", doc["bootstrap"]["reference"], "--out", out]


def repath(repo: Path, folder: str, moved_to: str) -> list[str]:
    """Rewrite every pooled or --compare file under REPO/docs/results that names the held-out set `folder` (a repo
    path), with the same command but `moved_to` in its place: a release's table moves when the next release takes
    docs/results/heldout_task<N>/. Returns the files rewritten (repo paths)."""
    import contextlib
    import io

    done = []
    for f in sorted((repo / "docs" / "results").rglob("*.json")):
        if not (f.name.startswith("pooled_") or f.name.startswith("compare_releases_")):
            continue
        doc = json.loads(f.read_text())
        sets = doc.get("sets", [])
        named = [d for v in sets.values() for d in v] if isinstance(sets, dict) else sets
        if folder not in named:
            continue
        sets = ({k: [moved_to if d == folder else d for d in v] for k, v in sets.items()} if isinstance(sets, dict)
                else [moved_to if d == folder else d for d in sets])
        rel = str(f.relative_to(repo))
        with contextlib.chdir(repo), contextlib.redirect_stdout(io.StringIO()):
            main(argv_of({**doc, "sets": sets}, rel))
        done.append(rel)
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="*", type=Path, help="held-out result folders (evaluate_heldout.py --out)")
    ap.add_argument("--compare", nargs="+", type=parse_release, metavar="NAME=SET[,SET...]",
                    help="compare releases (their --entry) instead of pooling one release's entries")
    ap.add_argument("--entry", default="fitted", help="with --compare: the entry of each release (default fitted)")
    ap.add_argument("--out", type=Path, required=True, help="the pooled JSON file to write")
    ap.add_argument("--seeds", default="", help="the seeds the sets hold, for the record (e.g. 1100-1159): checked against "
                    "the pooled cases")
    ap.add_argument("--reference", default="equal", help="the entry the others are compared with (default equal)")
    a = ap.parse_args(argv)
    if bool(a.sets) == bool(a.compare):
        ap.error("give held-out sets or --compare, not both")
    from panther_ensemble.scoring import aggregate, rank_table
    from panther_ensemble.scoring.evaluate import bootstrap_summary, format_bootstrap, format_leaderboard

    if a.compare:
        releases = dict(a.compare)
        if len(releases) < 2 or a.reference not in releases:
            ap.error(f"--compare needs two releases or more and --reference one of them ({', '.join(releases)})")
        per_case = pool_releases(releases, a.entry)
        sets = {name: [str(d) for d in d_list] for name, d_list in releases.items()}
    else:
        per_case = pool(a.sets)
        sets = [str(d) for d in a.sets]
    check_seeds(next(iter(per_case.values())), a.seeds)
    rows = rank_table({e: aggregate(v) for e, v in per_case.items()})
    boot = bootstrap_summary(per_case, a.reference, 2000, seed=0)
    doc = {"cases": len(next(iter(per_case.values()))), "seeds": a.seeds, "sets": sets,
           **({"entry": a.entry} if a.compare else {}), "leaderboard": rows, "bootstrap": boot}
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(format_leaderboard(rows))
    print()
    print(format_bootstrap(boot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
