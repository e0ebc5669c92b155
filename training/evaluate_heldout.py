"""Held-out evaluation on fresh phantoms: every member alone, the equal-weight ensemble and the shipped
(fitted) ensemble, scored with `panther-ensemble evaluate`.

    python training/evaluate_heldout.py --task 1 --seeds 1100-1119 --work /work/data/heldout/task1 \
        --out docs/results/heldout_task1

1. generates the held-out phantoms (seeds never used in training) as <case>.mha + ground truth;
2. runs every member of the task's shipped spec (resources/task<N>.json) once per case through the public
   API and keeps each member's probability map on the image grid (WORK/maps, float32: these do not depend
   on the fit, so `--stage maps` may run before it);
3. from those maps: a member's mask is its own argmax == tumour (nnU-Net's decision for that model
   alone); "equal" is the equal-weight mean of all members with argmax (nnU-Net's ensemble); "fitted" is
   the shipped spec's weights, class weights, decision and post-processing, computed with the engine's own
   stage functions (on the first case it is checked voxel for voxel against the shipped ensemble run as
   inference.py runs it);
4. scores every entry into --out (leaderboard, per-case metrics, figures) and writes bootstrap.json: how
   often each entry leads on resampled case sets, and each entry minus equal weights per metric.
Cases already predicted (maps newer than the members' checkpoints) are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from freshness import is_current  # training/, the script's own folder

REPO = Path(__file__).resolve().parents[1]


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        seeds += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return seeds


def weighted_probabilities(maps: dict, spec, shape) -> tuple:
    """(the spec's weighted probabilities, their labels) from full-grid member maps {name: (probs, labels)},
    with the engine's own `WeightedProbabilities`."""
    import torch

    from panther_ensemble.inference.ensemble import WeightedProbabilities, common_label_space

    labels = common_label_space([maps[m.name][1] for m in spec.members if m.name in maps])
    acc = WeightedProbabilities(labels, shape, torch.device("cpu"))
    for m in spec.members:
        if m.weight > 0:
            probs, member_labels = maps[m.name]
            acc.add(m.name, probs, member_labels, [(0, n) for n in shape], m.weight, m.class_weights)
    return acc.probabilities(), labels


def combine(maps: dict, spec, geometry) -> np.ndarray:
    """The spec's ensemble decision from full-grid member maps, with the engine's own stage functions."""
    from panther_ensemble.inference.ensemble import decide
    from panther_ensemble.inference.postprocess import apply_rules

    p, labels = weighted_probabilities(maps, spec, geometry.shape_zyx)
    tumour = decide(p, labels, spec.tumor_label, spec.decision.rule, spec.decision.threshold).numpy()
    return apply_rules(tumour, p, labels, spec, geometry.spacing_zyx).astype(np.uint8)


def load_spec_from(raw: dict):
    from panther_ensemble.spec import parse_spec

    return parse_spec(raw, "equal weights")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", type=int, choices=(1, 2), required=True)
    p.add_argument("--seeds", default="1100-1119")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--spec", type=Path, default=None, help="default: resources/task<N>.json")
    p.add_argument("--model-dir", type=Path, default=REPO / "model_weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of the forward passes (default: every CPU this process may use)")
    p.add_argument("--members-spec", type=Path, default=None,
                   help="spec whose members make the maps (default: --spec); the maps do not depend on the fit, so "
                        "`--stage maps --members-spec <the fit's base.json>` may run before the fit")
    p.add_argument("--stage", choices=("maps", "all"), default="all",
                   help="maps: phantoms and every member's probability maps only; all: then every entry, scored")
    a = p.parse_args()

    from panther_ensemble import Ensemble, load_spec, read_image
    from panther_ensemble.io import write_mask
    from panther_ensemble.phantoms import generate_phantom
    from panther_ensemble.phantoms.baseline import heldout_case_name  # `phantom baseline --heldout-dir` reads them

    spec_path = a.spec or REPO / "resources" / f"task{a.task}.json"
    raw = json.loads((a.members_spec or spec_path).read_text())
    every = dict(raw, members=[dict(m, weight=1.0, class_weights={}) for m in raw["members"]],
                 decision={"rule": "argmax"}, postprocess={}, time_budget_s=None)
    all_members = Ensemble.from_spec(every, a.model_dir, a.device, threads=a.threads)
    equal = load_spec_from(every)
    names = [m["name"] for m in raw["members"]]
    images, gt_dir, pred_root, map_root = a.work / "images", a.work / "gt", a.work / "pred", a.work / "maps"
    for d in (images, gt_dir):
        d.mkdir(parents=True, exist_ok=True)
    # a map older than its member's checkpoints came from earlier weights (a longer schedule, a retrain)
    checkpoints = {m["name"]: sorted((a.model_dir / m["model"]).glob("fold_*/checkpoint_*.pth")) for m in raw["members"]}
    cases = []
    for seed in parse_seeds(a.seeds):  # the members' maps, kept (float32) so that a re-run or the fit's turn resumes
        case = heldout_case_name(a.task, seed)
        cases.append(case)
        if not (images / f"{case}.mha").exists():  # the image is written last and whole: it marks a finished phantom
            image, label = generate_phantom(a.task, seed)
            for img, folder in ((label, gt_dir), (image, images)):
                tmp = folder / f".{case}.partial.mha"  # a run stopped mid-write (a full disk) leaves no image to reuse
                sitk.WriteImage(img, str(tmp), True)
                tmp.replace(folder / f"{case}.mha")
        if all(is_current(map_root / n / f"{case}.npz", checkpoints[n]) for n in names):
            continue
        array, geometry = read_image(images / f"{case}.mha")
        maps: dict = {}
        all_members.segment((array, geometry), on_member=lambda n, probs, labels: maps.__setitem__(n, (probs.cpu(), labels)))
        for n in names:
            (map_root / n).mkdir(parents=True, exist_ok=True)
            tmp = map_root / n / f".{case}.partial.npz"
            np.savez(tmp, probabilities=maps[n][0].numpy().astype(np.float32), labels=np.array(maps[n][1]))
            tmp.replace(map_root / n / f"{case}.npz")
        print(f"{case}: maps of {', '.join(names)}", flush=True)
    if a.stage == "maps":
        return 0

    shipped = load_spec(spec_path)
    if not {m.name for m in shipped.members} <= set(names):  # the fit leaves weight-0 members out
        raise SystemExit(f"{spec_path}: members {[m.name for m in shipped.members]} are not among the maps' {names}")
    entries = names + ["equal", "fitted"]
    for k, case in enumerate(cases):
        array, geometry = read_image(images / f"{case}.mha")
        maps = {}
        for n in names:
            with np.load(map_root / n / f"{case}.npz") as f:
                maps[n] = (torch.from_numpy(f["probabilities"]), [str(x) for x in f["labels"]])
        tumour = {n: (maps[n][0].argmax(0) == maps[n][1].index(shipped.tumor_label)).numpy().astype(np.uint8)
                  for n in names}
        tumour["equal"] = combine(maps, equal, geometry)
        tumour["fitted"] = combine(maps, shipped, geometry)
        if k == 0:  # the recomputed fitted mask is what the shipped ensemble writes
            direct = Ensemble.from_spec(shipped, a.model_dir, a.device, threads=a.threads).segment((array, geometry)).mask
            if not np.array_equal(direct, tumour["fitted"]):
                raise SystemExit(f"{case}: the fitted ensemble recomputed from member maps differs from the shipped "
                                 f"ensemble in {int((direct != tumour['fitted']).sum())} voxels")
        for entry, mask in tumour.items():
            write_mask(mask, geometry, pred_root / entry / f"{case}.mha")
        print(f"{case}: " + ", ".join(f"{e} {int(m.sum())}" for e, m in tumour.items()) + " tumour voxels", flush=True)
    cmd = [sys.executable, "-m", "panther_ensemble.cli", "evaluate", "--pred", *[str(pred_root / e) for e in entries],
           "--names", *entries, "--gt", str(gt_dir), "--out", str(a.out)]
    subprocess.run(cmd, check=True)
    write_bootstrap(a.out, entries)
    shown = spec_path.resolve()  # the repo's own spec as a repo path, any other as given
    shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else spec_path
    (a.out / "command.json").write_text(json.dumps({"command": " ".join(sys.argv), "seeds": a.seeds,
                                                    "spec": str(shown)}, indent=2) + "\n")
    return 0


def write_bootstrap(out: Path, entries: list[str], reference: str = "equal", resamples: int = 2000) -> dict:
    """OUT/bootstrap.json from the per-case metrics that `panther-ensemble evaluate` wrote for each entry
    (OUT/<entry>/metrics.json "cases"): the held-out cases drawn with replacement `resamples` times, one draw
    for every entry, and (`scoring.evaluate.bootstrap_summary`) how often each entry leads the leaderboard,
    and each entry minus `reference` per metric with a 95% interval. 20 cases are few: this says which
    parts of the table they support."""
    from panther_ensemble.scoring.evaluate import bootstrap_summary, format_bootstrap

    per_case = {e: json.loads((out / e / "metrics.json").read_text())["cases"] for e in entries}
    summary = bootstrap_summary(per_case, reference, resamples, seed=0)
    (out / "bootstrap.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_bootstrap(summary), flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(main())
