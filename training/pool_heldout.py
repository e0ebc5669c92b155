"""Pool several held-out sets of one task into one leaderboard, with its bootstrap (which parts of the
table the cases support).

    python training/pool_heldout.py docs/results/heldout_task1 docs/results/heldout_task1_seeds1120-1139 \
        --out docs/results/heldout_task1_seeds1120-1139/pooled_1100-1139.json

Reads each set's per-case metrics (SET/<entry>/metrics.json "cases", as `panther-ensemble evaluate` writes
them; every set must hold the same entries and no case twice), ranks the pooled aggregates like the
challenge's leaderboard, and adds `bootstrap` (`scoring.evaluate.bootstrap_summary`: 2000 resampled case
sets, seed 0; each entry minus --reference per metric).
"""

from __future__ import annotations

import argparse
import json
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", type=Path, help="held-out result folders (evaluate_heldout.py --out)")
    ap.add_argument("--out", type=Path, required=True, help="the pooled JSON file to write")
    ap.add_argument("--seeds", default="", help="the seeds the sets hold, for the record (e.g. 1100-1159)")
    ap.add_argument("--reference", default="equal", help="the entry the others are compared with (default equal)")
    a = ap.parse_args(argv)
    from panther_ensemble.scoring import aggregate, rank_table
    from panther_ensemble.scoring.evaluate import bootstrap_summary, format_bootstrap, format_leaderboard

    per_case = pool(a.sets)
    rows = rank_table({e: aggregate(v) for e, v in per_case.items()})
    boot = bootstrap_summary(per_case, a.reference, 2000, seed=0)
    doc = {"cases": len(per_case[ENTRIES[0]]), "seeds": a.seeds, "sets": [str(d) for d in a.sets],
           "leaderboard": rows, "bootstrap": boot}
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(format_leaderboard(rows))
    print()
    print(format_bootstrap(boot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
