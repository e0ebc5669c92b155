"""The float32 and bfloat16 sides of this trial side by side (README.md, this folder): compare.md and compare.json.

    python compare.py --float32 $PANTHER_DATA/exp/rebuild_levers --bf16 $PANTHER_DATA/exp/maps_bf16 \
        --timings ../rebuild_levers/timings.json timings.json --out compare

Per task: whether the two fits chose the same (members' weights, decision, post-processing: the rule of README.md),
each fit's nested-CV leaderboard, the oof step's wall time on each side, each member's per-case map time (from the
oof logs), and how far the maps are apart: the largest probability gap and the tumour voxels whose argmax differs.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from panther_ensemble.scoring.metrics import mask_dice

DATASETS = {1: "Dataset901_PhantomT1", 2: "Dataset902_PhantomT2"}
MEMBERS = ("default", "DA5", "iso")
CASE_TIME = re.compile(r"^fold \d+ (\S+): ([0-9.]+) s$")


def choice(spec: dict) -> tuple:
    """What the fit chose (the same key as training/experiment.sh exp_same_choice)."""
    return spec["members"], spec["decision"], spec["postprocess"]


def case_seconds(log: Path) -> dict[str, float]:
    """predict_oof.py's per-case lines; a case predicted twice (a resumed run) keeps its last time."""
    out = {}
    for line in log.read_text().splitlines() if log.is_file() else []:
        m = CASE_TIME.match(line.strip())
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def map_agreement(a_dir: Path, b_dir: Path) -> dict:
    gap, flips, voxels, dices, cases = 0.0, 0, 0, [], 0
    for a_path in sorted(a_dir.glob("*.npz")):
        b_path = b_dir / a_path.name
        if not b_path.is_file():
            continue
        with np.load(a_path) as fa, np.load(b_path) as fb:
            pa, pb = fa["probabilities"].astype(np.float32), fb["probabilities"].astype(np.float32)
            tumour = [str(x) for x in fa["labels"]].index("tumor")
        gap = max(gap, float(np.abs(pa - pb).max()))
        ma, mb = pa.argmax(0) == tumour, pb.argmax(0) == tumour
        flips += int(np.count_nonzero(ma != mb))
        voxels += int(np.count_nonzero(ma))
        dices.append(mask_dice(ma, mb))
        cases += 1
    return {"cases": cases, "largest_probability_gap": round(gap, 4), "tumour_voxels_flipped": flips,
            "tumour_voxels_float32": voxels, "smallest_mask_dice": round(min(dices), 4) if dices else None}


def task_rows(task: int, f32: Path, bf16: Path) -> dict:
    ds = DATASETS[task]
    reports = {side: root / "repo" / "docs" / "results" / f"fit_task{task}" for side, root in
               (("float32", f32), ("bf16", bf16))}
    specs = {side: json.loads((d / "spec.json").read_text()) for side, d in reports.items()}
    boards = {side: json.loads((d / "report.json").read_text())["leaderboard_held_out"] for side, d in reports.items()}
    members = {}
    for m in MEMBERS:
        t32 = case_seconds(f32 / "data" / "logs" / f"oof_t{task}_{m}.log")
        t16 = case_seconds(bf16 / "data" / "logs" / f"oof_t{task}_{m}.log")
        both = sorted(set(t32) & set(t16))
        members[m] = {"cases_timed": len(both), "float32_s": round(sum(t32[c] for c in both), 1),
                      "bf16_s": round(sum(t16[c] for c in both), 1),
                      "speedup": round(sum(t32[c] for c in both) / sum(t16[c] for c in both), 2) if both else None,
                      **map_agreement(f32 / "data" / "oof" / ds / m, bf16 / "data" / "oof" / ds / m)}
    return {"same_choice": choice(specs["float32"]) == choice(specs["bf16"]),
            "chosen": {side: s.get("description", "") for side, s in specs.items()},
            "choice": {side: dict(zip(("members", "decision", "postprocess"), choice(s))) for side, s in specs.items()},
            "nested_cv": boards, "members": members}


def markdown(result: dict) -> str:
    lines = ["# bfloat16 against float32 out-of-fold maps: the fits and the maps (written by compare.py)", ""]
    steps = result["oof_step_s"]
    lines += [f"oof step (both tasks, reproduce.sh's timing): float32 {steps['float32'] / 60:.1f} min, bfloat16 "
              f"{steps['bf16'] / 60:.1f} min ({steps['float32'] / steps['bf16']:.2f}x)", ""]
    for task, r in result["tasks"].items():
        lines += [f"## Task {task}: {'the same choice' if r['same_choice'] else 'a different choice'}", ""]
        for side in ("float32", "bf16"):
            c = r["choice"][side]
            weights = ", ".join(f"{m['name']} {m.get('weight', 1)}" for m in c["members"])
            lines.append(f"- {side}: {weights}; decision {json.dumps(c['decision'])}; post-processing "
                         f"{json.dumps(c['postprocess'])}")
        lines += ["", "| side | row | Dice | surface Dice | HD95 | MASD | volume RMSE | mean rank |",
                  "|---|---|---|---|---|---|---|---|"]
        for side in ("float32", "bf16"):
            for row in r["nested_cv"][side]:
                lines.append(f"| {side} | {row['name']} | {row['dice']:.3f} | {row['surface_dice_5mm']:.3f} | "
                             f"{row['hd95']:.1f} | {row['masd']:.1f} | {row['volume_rmse_mm3']:.0f} | {row['mean_rank']} |")
        lines += ["", "| member | cases | map time float32 / bf16 (s) | speed-up | largest probability gap | "
                  "tumour voxels flipped (of float32's) | smallest mask Dice |", "|---|---|---|---|---|---|---|"]
        for m, s in r["members"].items():
            lines.append(f"| {m} | {s['cases']} | {s['float32_s']} / {s['bf16_s']} | {s['speedup']} | "
                         f"{s['largest_probability_gap']} | {s['tumour_voxels_flipped']} ({s['tumour_voxels_float32']}) | "
                         f"{s['smallest_mask_dice']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--float32", type=Path, required=True, help="the rebuild's folder (repo/, data/)")
    ap.add_argument("--bf16", type=Path, required=True, help="this trial's folder (repo/, data/)")
    ap.add_argument("--timings", type=Path, nargs=2, required=True, help="the two timings.json: float32, bf16")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.md and OUT.json")
    a = ap.parse_args(argv)
    oof = [json.loads(t.read_text())["steps"]["oof"]["total_s"] for t in a.timings]
    result = {"oof_step_s": {"float32": oof[0], "bf16": oof[1]},
              "tasks": {t: task_rows(t, a.float32, a.bf16) for t in DATASETS}}
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
