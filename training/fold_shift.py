"""How a decision threshold fitted on out-of-fold maps moves when the ensemble averages its folds.

    # maps of unlabeled phantoms first (per fold, and all folds), then t'; --apply-to writes t' into a spec
    python training/fold_shift.py --spec docs/results/fit_task1/spec.json --task 1 --seeds 1300-1309 \
        --work $PANTHER_DATA/shift/task1 --out docs/results/fit_task1/fold_shift.json [--apply-to SPEC]
    # or from maps made before
    python training/fold_shift.py --spec resources/task1.json \
        --fold-maps $PANTHER_DATA/calib/t1_f0/maps $PANTHER_DATA/calib/t1_f1/maps \
        --ensemble-maps $PANTHER_DATA/calib/t1_both/maps --out docs/results/experiments/fold_shift_task1/shift.json

`panther-ensemble fit` scores candidates on out-of-fold maps: each case is predicted by the one fold model
that did not train on it. The shipped ensemble averages every fold's logits, and that average disagrees less
with itself at the tumour's edge: on the same images it decides a different volume at the same threshold.
This measures the move on UNLABELED images (no ground truth is read): per image, the spec's weighted
P(tumour) from each fold alone (`--fold-maps`, one folder per fold, written by `evaluate_heldout.py --stage
maps` with a spec restricted to that fold) and from the ensemble (`--ensemble-maps`), the tumour volume
V_k(t) of each fold and V_ens(t) of the ensemble at every threshold of a grid; and the transferred threshold

    t' = argmin over the grid of  sum over images (log V_ens(t') - log mean_k V_k(t))^2

for the spec's threshold t: the threshold at which the ensemble decides, image by image, the volume that a
single fold decides at t (the volume the fit saw). Images where no fold finds a voxel at t are left out; an
ensemble volume of 0 counts as one voxel.
Weighted P comes from the engine's own `WeightedProbabilities` (the spec's weights and class weights),
through evaluate_heldout.weighted_probabilities, which the held-out tables use too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from evaluate_heldout import weighted_probabilities  # training/, the script's own folder

GRID = np.round(np.arange(0.30, 0.7001, 0.01), 2)


def weighted_tumour_probability(maps: Path, case: str, spec) -> np.ndarray:
    """The spec's weighted P(tumour) of one case from WORK/maps/<member>/<case>.npz (evaluate_heldout's
    weighting, hence the engine's)."""
    loaded = {}
    for m in spec.members:
        if m.weight > 0:
            z = np.load(maps / m.name / f"{case}.npz")
            loaded[m.name] = (torch.from_numpy(z["probabilities"].astype(np.float32)), [str(x) for x in z["labels"]])
    p, labels = weighted_probabilities(loaded, spec, next(iter(loaded.values()))[0].shape[1:])
    return p[labels.index(spec.tumor_label)].numpy()


def volumes(p: np.ndarray, grid=GRID) -> np.ndarray:
    """Voxels with p >= t for every t of the grid (one sort instead of one pass per threshold)."""
    flat = np.sort(p[p >= grid[0] - 1e-9].ravel())
    return (flat.size - np.searchsorted(flat, grid.astype(flat.dtype), side="left")).astype(np.int64)


def transfer(fold_volumes: np.ndarray, ensemble_volumes: np.ndarray, t: float, grid=GRID) -> dict:
    """t' for threshold t from per-image volumes: fold_volumes (folds, images, grid), ensemble_volumes
    (images, grid). Returns t', the loss at every grid value, and the images used."""
    i = int(np.argmin(np.abs(grid - t)))
    if abs(grid[i] - t) > 1e-9:
        raise ValueError(f"threshold {t} is not on the grid {grid[0]}..{grid[-1]}")
    target = fold_volumes[:, :, i].mean(axis=0)  # mean over folds, per image
    used = target > 0
    # an ensemble volume of 0 counts as 1 voxel: a threshold that empties an image is far off, not skipped
    err = np.log(np.maximum(ensemble_volumes[used], 1)) - np.log(target[used])[:, None]
    losses = np.sum(err ** 2, axis=0).tolist() if used.any() else [float("inf")] * len(grid)
    j = int(np.argmin(losses))
    return {"t": float(grid[i]), "t_transferred": float(grid[j]), "loss": losses, "images_used": int(used.sum())}


def fold_runs(raw: dict, where: Path) -> list[tuple[str, dict]]:
    """("fold<k>", the spec with every weighted member on fold k alone) for each fold, then ("ensemble", the
    spec's weighted members with all their folds). Members of weight 0 are left out (no maps needed)."""
    members = [m for m in raw["members"] if m.get("weight", 1.0) > 0]
    fold_lists = {tuple(m.get("folds") or ()) for m in members}
    if len(fold_lists) != 1 or not next(iter(fold_lists)) or len(next(iter(fold_lists))) < 2:
        raise SystemExit(f"error: {where}: every weighted member needs the same explicit folds, two or more, to "
                         f"compare one fold with all; got {sorted(fold_lists)}")
    runs = [(f"fold{k}", dict(raw, members=[dict(m, folds=[k]) for m in members])) for k in next(iter(fold_lists))]
    return runs + [("ensemble", dict(raw, members=members))]


def make_maps(spec_path: Path, task: int, seeds: str, work: Path, threads: int,
              device: str = "cpu", model_dir: Path | None = None) -> tuple[list[Path], Path]:
    """Every weighted member's maps of the phantoms `seeds` (labels written by the generator, never read
    here) from each fold alone and from all folds, with `evaluate_heldout.py --stage maps` (resumable: maps
    already made are kept). Returns the per-fold maps folders and the ensemble's."""
    runs = fold_runs(json.loads(spec_path.read_text()), spec_path)
    work.mkdir(parents=True, exist_ok=True)
    for name, doc in runs:
        sub = work / name
        sub.mkdir(exist_ok=True)
        for shared in ("images", "gt"):  # one set of phantoms for every run
            (work / shared).mkdir(exist_ok=True)
            if not (sub / shared).exists():
                (sub / shared).symlink_to(work / shared, target_is_directory=True)
        (work / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        subprocess.run([sys.executable, str(Path(__file__).with_name("evaluate_heldout.py")), "--task", str(task),
                        "--seeds", seeds, "--work", str(sub), "--threads", str(threads), "--device", device, "--stage", "maps",
                        "--spec", str(work / f"{name}.json"), "--members-spec", str(work / f"{name}.json"),
                        "--out", str(work / "unused")]
                       + (["--model-dir", str(model_dir)] if model_dir is not None else []), check=True)
    return [work / name / "maps" for name, _ in runs[:-1]], work / "ensemble" / "maps"


def write_result(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, required=True,
                    help="the spec as the fit wrote it (its weights and its threshold t, fitted on out-of-fold maps)")
    ap.add_argument("--fold-maps", type=Path, nargs="+", help="one maps folder per fold (maps made before)")
    ap.add_argument("--ensemble-maps", type=Path, help="the maps folder of all folds together (maps made before)")
    ap.add_argument("--task", type=int, choices=(1, 2), help="make the maps: phantoms of this task ...")
    ap.add_argument("--seeds", help="... of these seeds (unlabeled use: seeds no training, fit or evaluation uses)")
    ap.add_argument("--work", type=Path, help="... in this folder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="where the maps are computed (cpu, cuda, cuda:1, ...)")
    ap.add_argument("--model-dir", type=Path,
                    help="the members' model folders are under this root (default: the repo's model_weights/)")
    ap.add_argument("--apply-to", type=Path, metavar="SPEC",
                    help="write t' into this spec's decision.threshold (the shipped copy; --spec stays the fit's "
                         "own, so that a second run transfers the fitted t again, not t')")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    from panther_ensemble.spec import load_spec

    spec = load_spec(a.spec)
    if spec.decision.rule != "threshold":
        # argmax has no parameter to move: the fit chose it on one-fold maps and the fold ensemble keeps it.
        # Said in --out (a stale transfer from an earlier fit must not stay there) and the shipped spec is left as is.
        write_result(a.out, {"spec": str(a.spec), "decision": spec.decision.rule, "t": None, "t_transferred": None,
                             "note": f"the fitted decision is {spec.decision.rule}, not a threshold: "
                                     "nothing to transfer, the shipped spec is left as fitted"})
        print(f"{a.spec}: the fitted decision is {spec.decision.rule!r}, not a threshold: nothing to transfer"
              + (f"; {a.apply_to} left as it is" if a.apply_to is not None else ""))
        return 0
    if a.work is not None:
        if a.task is None or a.seeds is None or a.fold_maps or a.ensemble_maps:
            raise SystemExit("error: --work makes the maps: give --task and --seeds, not --fold-maps/--ensemble-maps")
        a.fold_maps, a.ensemble_maps = make_maps(a.spec, a.task, a.seeds, a.work, a.threads, a.device, a.model_dir)
    elif not a.fold_maps or a.ensemble_maps is None:
        raise SystemExit("error: give --fold-maps and --ensemble-maps, or --work with --task and --seeds")
    first = next(m.name for m in spec.members if m.weight > 0)
    cases = sorted(p.stem for p in (a.ensemble_maps / first).glob("*.npz"))
    if not cases:
        raise SystemExit(f"error: {a.ensemble_maps / first}: no maps")
    fold_v = np.zeros((len(a.fold_maps), len(cases), len(GRID)), np.int64)
    ens_v = np.zeros((len(cases), len(GRID)), np.int64)
    i = int(np.argmin(np.abs(GRID - spec.decision.threshold)))  # the fitted t's column (transfer checks it is on the grid)
    for c, case in enumerate(cases):
        for k, d in enumerate(a.fold_maps):
            fold_v[k, c] = volumes(weighted_tumour_probability(d, case, spec))
        ens_v[c] = volumes(weighted_tumour_probability(a.ensemble_maps, case, spec))
        print(f"{case}: at t={GRID[i]:.2f} folds {', '.join(str(int(v)) for v in fold_v[:, c, i])} voxels, "
              f"ensemble {int(ens_v[c, i])}", flush=True)
    result = transfer(fold_v, ens_v, spec.decision.threshold)
    j = int(np.argmin(np.abs(GRID - result["t_transferred"])))
    target = fold_v[:, :, i].mean(0)
    used = target > 0
    ratio_t = np.median(ens_v[used, i] / target[used]) if used.any() else float("nan")
    ratio_tp = np.median(ens_v[used, j] / target[used]) if used.any() else float("nan")
    doc = {"spec": str(a.spec), "cases": cases, "grid": GRID.tolist(), "fold_volumes_voxels": fold_v.tolist(),
           "ensemble_volumes_voxels": ens_v.tolist(), **result,
           "median_ensemble_over_fold_volume_at_t": float(ratio_t),
           "median_ensemble_at_t_transferred_over_fold_volume_at_t": float(ratio_tp)}
    write_result(a.out, doc)
    print(f"threshold {result['t']:.2f} on one fold's maps ~ {result['t_transferred']:.2f} on the fold ensemble "
          f"({result['images_used']} images; median ensemble/fold volume {ratio_t:.3f} at {result['t']:.2f}, "
          f"{ratio_tp:.3f} at {result['t_transferred']:.2f})")
    if a.apply_to is not None:
        raw = json.loads(a.apply_to.read_text())
        if raw.get("decision", {}).get("rule") != "threshold":
            raise SystemExit(f"error: {a.apply_to}: decision is not a threshold")
        raw["decision"]["threshold"] = result["t_transferred"]
        said = raw.get("description", "").split(" Decision threshold moved")[0]
        raw["description"] = (f"{said} Decision threshold moved from the fitted {result['t']:.2f} to "
                              f"{result['t_transferred']:.2f}, where the fold ensemble decides the volume one fold "
                              f"decides at {result['t']:.2f} (training/fold_shift.py).")
        text = json.dumps(raw, indent=2) + "\n"
        if a.apply_to.read_text() != text:
            a.apply_to.write_text(text)
        print(f"{a.apply_to}: decision threshold {result['t_transferred']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
