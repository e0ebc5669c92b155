"""The bfloat16 trial against the float32 members it repeats, by the criterion of README.md (this folder).

    python compare.py FP32_REPORT BF16_REPORT > compare.md

Both reports are `panther-ensemble fit` report.json files of the same search on the same 60 training phantoms (the
shipped Task 2 fit's, nested 5-fold CV, seed 0). Prints a markdown table of the nested-CV (out-of-fold) metrics of
every entry, float32 against bfloat16, the two fits' choices, and the verdict. Exit status 0 either way: the verdict
is in the text.
"""

from __future__ import annotations

import json
import sys

METRICS = [("dice", "Dice", "{:.3f}"), ("surface_dice_5mm", "surface Dice", "{:.3f}"), ("hd95", "HD95 mm", "{:.1f}"),
           ("masd", "MASD mm", "{:.1f}"), ("volume_rmse_mm3", "volume RMSE mm3", "{:.0f}")]
FITTED = "fitted ensemble (held-out)"
MEMBER_TOLERANCE = 0.03  # out-of-fold tumour Dice of each member, bfloat16 against float32
FITTED_TOLERANCE = 0.02  # the fitted entry's nested-CV tumour Dice


def board(report: dict) -> dict[str, dict]:
    return {row["name"]: row for row in report["leaderboard_held_out"]}


def choice(report: dict) -> str:
    c = report["chosen"]
    return json.dumps({k: c[k] for k in c if k in ("weights", "decision", "postprocess")}, sort_keys=True)


def main(fp32_path: str, bf16_path: str) -> int:
    fp32, bf16 = (json.load(open(p)) for p in (fp32_path, bf16_path))
    a, b = board(fp32), board(bf16)
    print("| entry | training | " + " | ".join(m[1] for m in METRICS) + " | mean rank |")
    print("|---" * (len(METRICS) + 3) + "|")
    for name in a:
        for label, row in (("float32", a[name]), ("bfloat16", b[name])):
            cells = [fmt.format(row[key]) for key, _, fmt in METRICS]
            print(f"| {name if label == 'float32' else 'same'} | {label} | " + " | ".join(cells)
                  + f" | {row['mean_rank']:.1f} |")
    print()
    checks = []
    for name in ("default", "DA5", "iso"):
        d = b[name]["dice"] - a[name]["dice"]
        checks.append((f"{name}: out-of-fold Dice {b[name]['dice']:.3f} against {a[name]['dice']:.3f} "
                       f"({d:+.3f}, tolerance -{MEMBER_TOLERANCE})", d >= -MEMBER_TOLERANCE))
    d = b[FITTED]["dice"] - a[FITTED]["dice"]
    checks.append((f"fitted: nested-CV Dice {b[FITTED]['dice']:.3f} against {a[FITTED]['dice']:.3f} ({d:+.3f}, "
                   f"tolerance -{FITTED_TOLERANCE})", d >= -FITTED_TOLERANCE))
    first = min(b.values(), key=lambda r: r["mean_rank"])["name"] == FITTED
    checks.append((f"fitted first by mean rank among the five entries of the bfloat16 fit "
                   f"({b[FITTED]['mean_rank']:.1f})", first))
    for text, ok in checks:
        print(f"- {'met' if ok else 'NOT met'}: {text}")
    print(f"- fits' choices: float32 {choice(fp32)}; bfloat16 {choice(bf16)}")
    verdict = all(ok for _, ok in checks)
    print()
    print("**Verdict: " + ("the criterion holds; bfloat16 autocast and channels_last become the CPU default of "
                           "training/reproduce.sh (auto: where the CPU runs bfloat16 natively).**" if verdict else
                           "the criterion does not hold; the levers stay opt-in.**"))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
