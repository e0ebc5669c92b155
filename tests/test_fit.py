"""Tests for panther_ensemble.scoring.fit: search, exact cropping, nested CV, inputs and outputs.

Synthetic out-of-fold maps with known errors: the tumour is a ball inside an ellipsoidal pancreas; member
"over" draws it 2.5 mm too large, "under" 2.5 mm too small, "fp" exactly but with false-positive blobs far
from the pancreas, "weak" exactly but with a hesitant pancreas (p about 0.4). So the right answers are known:
mixing over and under beats both, and post-processing is what makes "fp" good.

The benchmark at the end (50 or 100 Task 1-sized cases) is skipped by default:
`pytest -m benchmark --run-benchmarks tests/test_fit.py`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from panther_ensemble import cli
from panther_ensemble.inference.ensemble import WeightedProbabilities, common_label_space, decide
from panther_ensemble.errors import InputError
from panther_ensemble.inference.postprocess import apply_rules
from panther_ensemble.inference.postprocess import postprocess as _postprocess
from panther_ensemble.scoring import fit
from panther_ensemble.scoring.fit import crossval
from panther_ensemble.scoring.leaderboard import aggregate
from panther_ensemble.scoring.metrics import CASE_KEYS, case_metrics
from panther_ensemble.spec import PostprocessSpec, load_spec

LABELS = ("background", "tumor", "pancreas")
SMALL = (24, 56, 56)
SPACING = (3.0, 1.5, 1.5)


@pytest.fixture(autouse=True)
def _one_thread():
    """Like `fit --threads 1` (its default): the crops are small, and two OpenMP threads on a busy 2-core
    machine make every small torch op ~50x slower."""
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------------
# synthetic out-of-fold maps
# ----------------------------------------------------------------------------------------------------------
def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))



def postprocess(mask, spacing, rules, pancreas=None):
    """The engine's post-processing with a spec's rules."""
    return _postprocess(mask, spacing, pancreas, min_volume_mm3=rules.min_volume_mm3, keep_largest=rules.keep_largest,
                        max_distance_to_pancreas_mm=rules.max_distance_to_pancreas_mm)


def _grid(shape, spacing):
    return [((np.arange(n, dtype=np.float32) + 0.5) * s).reshape([-1 if a == i else 1 for a in range(3)])
            for i, (n, s) in enumerate(zip(shape, spacing))]


def make_case(rng, shape=SMALL, spacing=SPACING, kinds=("over", "under", "fp"), tumour=True, far_blob=False,
              clean=False, diffuse_blob=False):
    """Ground-truth labels (z, y, x) and {kind: (3, z, y, x) float32 probabilities (bg, tumour, pancreas)}.
    diffuse_blob: every member also sees a false tumour larger than the true one but less sure (P 0.6 at most),
    in the corner opposite the pancreas (no random draw: the other cases stay as they were)."""
    z, y, x = _grid(shape, spacing)
    ext = np.array(shape) * np.array(spacing)
    pc = ext * np.array([0.5, 0.55, 0.6]) + rng.uniform(-0.05, 0.05, 3) * ext
    pa = np.array([min(12.0, ext[0] * 0.25), min(10.0, ext[1] * 0.15), min(25.0, ext[2] * 0.3)])
    rho = np.sqrt(((z - pc[0]) / pa[0]) ** 2 + ((y - pc[1]) / pa[1]) ** 2 + ((x - pc[2]) / pa[2]) ** 2)
    dp = (rho - 1.0) * pa.min()
    r = rng.uniform(5.0, 8.0)
    tc = pc + rng.uniform(-0.3, 0.3, 3) * pa
    dt = np.sqrt((z - tc[0]) ** 2 + (y - tc[1]) ** 2 + (x - tc[2]) ** 2) - r
    gt = np.zeros(shape, np.uint8)
    gt[dp <= 0] = 2
    if tumour:
        gt[dt <= 0] = 1
    # far-away spots (corner region opposite the pancreas), at least 25 mm from it
    blobs = []
    for _ in range(2):
        c = np.array([rng.uniform(0.15, 0.85) * ext[0], rng.uniform(0.08, 0.2) * ext[1], rng.uniform(0.06, 0.2) * ext[2]])
        blobs.append((c, rng.uniform(2.5, 4.0)))
    maps = {}
    for kind in kinds:
        s = 1.2
        delta = {"over": 2.5, "under": -2.5}.get(kind, 0.0) + rng.normal(0, 0.4)
        jitter = rng.normal(0, 0.5, 3)
        dtk = np.sqrt((z - tc[0] - jitter[0]) ** 2 + (y - tc[1] - jitter[1]) ** 2 + (x - tc[2] - jitter[2]) ** 2) - r
        pt = _sig(-(dtk - delta) / s) if tumour else np.zeros(shape, np.float32)
        if (kind == "fp" or far_blob) and not clean:
            for c, br in blobs:
                db = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) - br
                pt = np.maximum(pt, 0.9 * _sig(-db / s))
        if diffuse_blob:
            c = ext * np.array([0.5, 0.2, 0.2])
            db = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) - 1.6 * r
            pt = np.maximum(pt, 0.6 * _sig(-db / s))
        pp_raw = _sig(-dp / s) * (0.42 if kind == "weak" else 0.95)
        pt = np.where(pt < 1e-4, 0, pt).astype(np.float32)  # exact zeros far away, as a softmax in float32 nearly has
        pp = np.where(pp_raw < 1e-4, 0, pp_raw * (1.0 - pt)).astype(np.float32)
        pb = 1.0 - pt - pp
        maps[kind] = np.stack([pb, pt, pp]).astype(np.float32)
    return gt, maps


def write_gt(path: Path, gt: np.ndarray, spacing=SPACING):
    img = sitk.GetImageFromArray(gt.astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)


def write_npz(path: Path, probs: np.ndarray, labels=LABELS, spacing=SPACING):
    """Our engine's --save-probabilities format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, probabilities=probs.astype(np.float16), labels=np.array(labels), spacing=np.array(spacing))


def write_nnunet(folder: Path, fold: int, cid: str, probs: np.ndarray, label_order=LABELS):
    """nnU-Net's out-of-fold export: fold_k/validation/<case>.npz (float32 'probabilities', dataset.json order)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps({"labels": {n: i for i, n in enumerate(label_order)},
                                                    "channel_names": {"0": "MRI"}, "file_ending": ".mha"}))
    val = folder / f"fold_{fold}" / "validation"
    val.mkdir(parents=True, exist_ok=True)
    order = [LABELS.index(n) for n in label_order]
    np.savez_compressed(val / f"{cid}.npz", probabilities=probs[order].astype(np.float32))
    (val / f"{cid}.pkl").write_bytes(b"")


def make_dataset(root: Path, n: int, kinds, seed=0, shape=SMALL, spacing=SPACING, extra=None):
    """root/gt/<case>.mha and root/oof/<kind>/<case>.npz. extra: {case index: make_case kwargs}."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        gt, maps = make_case(rng, shape, spacing, kinds, **(extra or {}).get(i, {}))
        cid = f"case_{i:03d}"
        write_gt(root / "gt" / f"{cid}.mha", gt, spacing)
        for k, p in maps.items():
            write_npz(root / "oof" / k / f"{cid}.npz", p, spacing=spacing)
    return root


def write_base_spec(path: Path, names, task=1):
    spec = {"version": 1, "task": task, "members": [{"name": n, "model": f"Dataset901/{n}", "folds": [0, 1, 2, 3, 4]}
                                                    for n in names]}
    path.write_text(json.dumps(spec))
    return path


def fit_args(root: Path, names, out: Path, *extra: str) -> list[str]:
    return ["fit", "--base-spec", str(write_base_spec(root / "base.json", names)), "--gt", str(root / "gt"),
            "--out", str(out), "--oof", *[f"{n}={root / 'oof' / n}" for n in names], *extra]


def sources(root: Path, names):
    return [fit.find_member(n, root / "oof" / n) for n in names]


def load(root, names, space, crop=True):
    src = sources(root, names)
    for s in src:
        fit.peek_labels(s, "tumor")
    return fit.load_cases(src, root / "gt", fit.crop_rule(space, src, "tumor", "pancreas", crop=crop))


# ----------------------------------------------------------------------------------------------------------
# search space
# ----------------------------------------------------------------------------------------------------------
def test_default_search_space_has_enough_candidates():
    for n in (2, 3, 4):
        space = fit.SearchSpace.build(n)
        assert space.n_candidates() >= 200, (n, space.n_candidates())
        ws = [w for w, _ in space.weightings]
        assert all(abs(sum(w) - 1) < 1e-5 for w in ws)
        assert fit.equal_candidate(n).weights in ws and abs(fit.equal_candidate(n).weights[0] - 1 / n) < 1e-6
        for i in range(n):  # every single member
            assert tuple(1.0 if j == i else 0.0 for j in range(n)) in ws
    assert len(fit.simplex_grid(3, 0.1)) == 66
    with pytest.raises(InputError):
        fit.simplex_grid(3, 0.3)
    big = fit.SearchSpace.build(7)
    assert len(big.weightings) >= 150  # Dirichlet samples beyond 5 members


# ----------------------------------------------------------------------------------------------------------
# exactness: crops change no metric; the two-call post-processing equals the single call
# ----------------------------------------------------------------------------------------------------------
def _reference_metrics(root, names, cand, cid, tumor="tumor", pancreas="pancreas"):
    """The engine's path on the whole image: full maps (float16 as stored), WeightedProbabilities, decide,
    apply_rules (ONE postprocess call with all rules, then the never-empty fallback), case_metrics without crop."""
    gt_img = sitk.ReadImage(str(root / "gt" / f"{cid}.mha"))
    gt = sitk.GetArrayFromImage(gt_img)
    spacing = tuple(gt_img.GetSpacing())[::-1]
    active = [k for k, w in enumerate(cand.weights) if w > 0]
    labels = common_label_space([LABELS for _ in active])
    acc = WeightedProbabilities(labels, gt.shape, torch.device("cpu"))
    for k in active:
        with np.load(root / "oof" / names[k] / f"{cid}.npz") as z:
            p = torch.from_numpy(z["probabilities"])
        cw = {tumor: cand.factors[k]} if cand.factors and cand.factors[k] != 1 else None
        acc.add(names[k], p, LABELS, [(0, s) for s in gt.shape], cand.weights[k], cw)
    P = acc.probabilities()
    mask = decide(P, labels, tumor, cand.rule, cand.threshold).numpy()
    rules = PostprocessSpec(*cand.pp[:3], bool(cand.pp[3]), cand.pp[4])
    out = apply_rules(mask, P, labels, SimpleNamespace(postprocess=rules, tumor_label=tumor, pancreas_label=pancreas),
                      spacing)
    m = case_metrics(out, gt, spacing)
    return tuple(float(m[k]) for k in CASE_KEYS)


def test_cropping_changes_no_metric(tmp_path):
    names = ["fp", "weak", "over"]
    # case 0: no tumour, false-positive blobs far from the pancreas -> the pancreas lies outside the crop
    # (the sentinel path); "weak" makes the pancreas outside uncertain (decided per weighting)
    # case 4: nothing anywhere (a one-voxel crop)
    root = make_dataset(tmp_path, 5, names, seed=3, shape=(24, 64, 64),
                        extra={0: {"tumour": False, "far_blob": True}, 1: {"far_blob": True},
                               2: {"diffuse_blob": True}, 4: {"tumour": False, "clean": True}})
    space = fit.SearchSpace.build(3, weight_step=0.5, thresholds=(0.35,), tumour_factors=(3.0,),
                                  min_volumes=(None, 80.0), keep_largest=(None, 1), max_distances=(None, 0.0, 6.0),
                                  never_empty=(None, True), top_k=0, keep_most_confident=(None, 1))
    assert not any(p[1] is not None and p[4] is not None for p in space.pp_grid)  # the spec allows one of the two
    cropped = load(root, names, space)
    full = load(root, names, space, crop=False)
    c0 = cropped.cases[0]
    assert c0.sentinel is not None and c0.outside is not None, "the test must exercise the outside-pancreas path"
    assert any(isinstance(c.outside, list) for c in cropped.cases), "and the per-weighting (uncertain) path"
    frac = sum(np.prod(c.crop_shape) for c in cropped.cases) / sum(np.prod(c.full_shape) for c in cropped.cases)
    assert frac < 0.5
    cands = space.stage_a
    cands += [replace(c, pp=p) for c in cands for p in space.pp_grid if p != fit.PP_OFF]
    ev_c, ev_f = fit.Evaluator(cropped), fit.Evaluator(full)
    ev_c.ensure(cands, range(5))
    ev_f.ensure(cands, range(5))
    assert cropped.cases[4].crop_shape == (1, 1, 1) and cropped.cases[4].live.size == 0
    for c in cands:
        np.testing.assert_array_equal(ev_c.metrics[c], ev_f.metrics[c], err_msg=c.label(names))
    # against the engine's own path on the whole image (one postprocess call with every rule)
    gated_blob_dropped = set()
    for c in cands[::41] + [x for x in cands if x.pp[2] is not None][::19]:
        for ci in range(5):
            ref = _reference_metrics(root, names, c, cropped.cases[ci].cid)
            assert ref == tuple(ev_c.metrics[c][ci]), (c.label(names), cropped.cases[ci].cid)
            if ci == 0 and c.pp[2] is not None:
                gated_blob_dropped.add(ref[4] == 0.0)
    assert gated_blob_dropped == {True, False}  # gating removes the far blob for some weightings, not others
    # keep-most-confident, through the engine's path too, and choosing another component than keep-largest somewhere
    confident = [c for c in cands if c.pp[4] is not None]
    for c in confident[::7]:
        for ci in range(5):
            assert _reference_metrics(root, names, c, cropped.cases[ci].cid) == tuple(ev_c.metrics[c][ci]), \
                (c.label(names), cropped.cases[ci].cid)
    differs = [c for c in confident if not np.array_equal(
        ev_c.metrics[c], ev_c.metrics[replace(c, pp=(c.pp[0], c.pp[4]) + c.pp[2:4] + (None,))])]
    assert differs, "the test must have a case where the most confident component is not the largest"
    # the never-empty fallback must have brought back a mask that the other rules had emptied
    refilled = [c for c in cands if c.pp[3] and not np.array_equal(ev_c.metrics[c], ev_c.metrics[replace(
        c, pp=c.pp[:3] + (None,) + c.pp[4:])])]
    assert refilled, "the test must exercise the never-empty fallback"


def test_cropping_is_exact_for_never_empty_without_an_argmax_decision(tmp_path):
    # thresholds only: the crop would keep just p(tumour) >= 0.7 - eps, but the fallback is an argmax mask, whose
    # voxels need p(tumour) >= 1/3 only; the crop rule must widen for it
    names = ["fp", "weak", "over"]
    root = make_dataset(tmp_path, 4, names, seed=5, shape=(24, 64, 64), extra={1: {"far_blob": True}})
    space = fit.SearchSpace.build(3, weight_step=0.5, thresholds=(0.7, 0.95), argmax=False,
                                  min_volumes=(None, 5000.0), keep_largest=(None,), max_distances=(None,),
                                  never_empty=(True, None), top_k=0)
    src = sources(root, names)
    for m in src:
        fit.peek_labels(m, "tumor")
    assert fit.crop_rule(space, src, "tumor", "pancreas").tumour_min < 0.34
    cropped, full = load(root, names, space), load(root, names, space, crop=False)
    cands = space.stage_a + [replace(c, pp=p) for c in space.stage_a for p in space.pp_grid[1:]]
    ev_c, ev_f = fit.Evaluator(cropped), fit.Evaluator(full)
    ev_c.ensure(cands, range(4))
    ev_f.ensure(cands, range(4))
    for c in cands:
        np.testing.assert_array_equal(ev_c.metrics[c], ev_f.metrics[c], err_msg=c.label(names))
    refilled = 0
    for c in cands:
        if c.pp[3]:
            for ci in range(4):
                ref = _reference_metrics(root, names, c, cropped.cases[ci].cid)
                assert ref == tuple(ev_c.metrics[c][ci]), (c.label(names), cropped.cases[ci].cid)
                off = tuple(ev_c.metrics[replace(c, pp=c.pp[:3] + (None,) + c.pp[4:])][ci])
                refilled += ref != off
    assert refilled, "some threshold or volume rule must have emptied a mask that the fallback refilled"


def test_two_call_postprocess_equals_single_call():
    rng = np.random.default_rng(0)
    import scipy.ndimage as ndi

    for seed in range(6):
        field = ndi.gaussian_filter(rng.random((20, 40, 40)), 1.5)
        mask = field > np.quantile(field, 0.93)
        pancreas = ndi.gaussian_filter(rng.random((20, 40, 40)), 3) > 0.52
        for min_v in (None, 20.0, 200.0):
            for keep in (None, 1, 2):
                for d in (0.0, 4.0):
                    single = postprocess(mask, SPACING, PostprocessSpec(min_v, keep, d), pancreas)
                    gated = postprocess(mask, SPACING, PostprocessSpec(None, None, d), pancreas)
                    two = postprocess(gated, SPACING, PostprocessSpec(min_v, keep, None), None) \
                        if (min_v is not None or keep is not None) else gated
                    np.testing.assert_array_equal(single, two)


# ----------------------------------------------------------------------------------------------------------
# the fit finds the known answers; held-out cases are never used to choose
# ----------------------------------------------------------------------------------------------------------
def test_fit_mixes_over_and_under_segmenting_members(tmp_path, capsys):
    names = ["over", "under"]
    root = make_dataset(tmp_path, 12, names, seed=1)
    out = tmp_path / "out"
    rc = cli.main(fit_args(root, names, out, "--thresholds", "0.5", "--min-volumes", "off", "--keep-largest",
                           "off,1", "--max-distances", "off", "--folds", "4"))
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    w = rep["chosen"]["weights"]
    assert 0.2 <= w["over"] <= 0.8 and 0.2 <= w["under"] <= 0.8, w
    held = rep["held_out"]
    assert held["fitted ensemble"]["dice"] > max(held["over"]["dice"], held["under"]["dice"]) + 0.1
    assert held["fitted ensemble"]["volume_rmse_mm3"] < min(held["over"]["volume_rmse_mm3"],
                                                            held["under"]["volume_rmse_mm3"])
    assert held["fitted_mean_rank_vs_single_members"] == 1.0
    spec = load_spec(out / "spec.json")  # valid spec
    assert [m.name for m in spec.members] == names
    assert abs(sum(m.weight for m in spec.members) - 1) < 1e-6
    assert (out / "tradeoff.png").stat().st_size > 20000 and (out / "report.md").read_text().count("|") > 20
    assert "chosen:" in capsys.readouterr().out


def test_fit_removes_false_positives_with_postprocessing(tmp_path):
    names = ["fp", "over"]
    root = make_dataset(tmp_path, 12, names, seed=2)
    out = tmp_path / "out"
    assert cli.main(fit_args(root, names, out, "--weight-step", "0.25", "--thresholds", "0.5",
                             "--objective", "weighted", "--folds", "3")) == 0
    rep = json.loads((out / "report.json").read_text())
    ch = rep["chosen"]
    assert ch["weights"]["fp"] >= 0.5
    assert any(v is not None for v in ch["postprocess"].values()), ch
    held = rep["held_out"]
    assert held["fitted ensemble"]["hd95"] < 0.5 * held["fp"]["hd95"]
    assert held["fitted ensemble"]["dice"] > held["over"]["dice"] + 0.1
    spec = load_spec(out / "spec.json")
    assert spec.postprocess.active
    # every outer fold chose post-processing, too
    assert all(any(v is not None for v in f["chosen"]["postprocess"].values()) for f in rep["folds"])


def test_an_exact_tie_goes_to_the_never_empty_fallback(tmp_path):
    # no candidate empties a case here, so every never-empty setting ties its twin: the fit must keep the
    # fallback (on by default), and must not invent it when the search leaves it out
    names = ["over", "under"]
    root = make_dataset(tmp_path, 8, names, seed=6)

    def chosen(never_empty):
        space = fit.SearchSpace.build(2, weight_step=0.5, thresholds=(0.5,), min_volumes=(None,),
                                      keep_largest=(None, 1), max_distances=(None,), never_empty=never_empty,
                                      top_k=0)
        ev = fit.Evaluator(load(root, names, space))
        return crossval.select(ev, space, range(8), "mean-rank", fit.DEFAULT_METRIC_WEIGHTS).best.cand, ev

    with_fallback, ev = chosen((True, None))
    without, _ = chosen((None,))
    assert with_fallback.pp[3] is True and without.pp[3] is None
    assert replace(with_fallback, pp=with_fallback.pp[:3] + (None,) + with_fallback.pp[4:]) == without
    np.testing.assert_array_equal(ev.metrics[with_fallback], ev.metrics[without])


def test_held_out_cases_never_choose(tmp_path, monkeypatch):
    names = ["over", "under"]
    root = make_dataset(tmp_path, 10, names, seed=4)
    space = fit.SearchSpace.build(2, weight_step=0.25, thresholds=(0.5,), min_volumes=(None,),
                                  keep_largest=(None, 1), max_distances=(None,), top_k=2)
    ev = fit.Evaluator(load(root, names, space))
    calls = []
    real_select = crossval.select

    def spy(ev_, space_, case_idx, objective, mw):
        calls.append(list(case_idx))
        return real_select(ev_, space_, case_idx, objective, mw)

    monkeypatch.setattr(crossval, "select", spy)
    res = fit.nested_cv(ev, space, "mean-rank", fit.DEFAULT_METRIC_WEIGHTS, folds=5, seed=7)
    assert len(calls) == 6 and calls[-1] == list(range(10))  # five outer folds, then the final refit
    held = sorted(i for f in res.folds for i in f.test)
    assert held == list(range(10))  # every case held out exactly once
    for f, used in zip(res.folds, calls):
        assert used == f.train and not set(used) & set(f.test)
        np.testing.assert_array_equal(res.heldout_rows[f.test], ev.metrics[f.chosen][f.test])
    # the held-out aggregate is the union of the held-out rows, not an in-sample number
    assert res.heldout_agg == aggregate({i: dict(zip(CASE_KEYS, r)) for i, r in
                                         enumerate(res.heldout_rows.tolist())})


def test_scoring_candidates_patches_nothing_and_logs_nothing(tmp_path, caplog):
    """The Evaluator owns its caches (surfel-area tables, identical masks); it swaps no library function,
    changes no logger level, and its thousands of post-processing calls log nothing."""
    import logging

    import surface_distance.lookup_tables as lt

    table_fn = lt.create_table_neighbour_code_to_surface_area
    watched = ["", "panther_ensemble", "panther_ensemble.inference.postprocess", "panther_ensemble.scoring.fit.evaluator"]
    levels = {n: logging.getLogger(n).level for n in watched}
    names = ["fp", "over"]
    root = make_dataset(tmp_path, 3, names, seed=2, extra={0: {"tumour": False, "far_blob": True}})
    space = fit.SearchSpace.build(2, weight_step=0.5, thresholds=(0.5,), min_volumes=(None, 100.0),
                                  keep_largest=(None, 1), max_distances=(None, 5.0), top_k=0)
    ev = fit.Evaluator(load(root, names, space))
    cands = space.stage_a + [replace(c, pp=p) for c in space.stage_a for p in space.pp_grid if p != fit.PP_OFF]
    with caplog.at_level(logging.DEBUG, logger="panther_ensemble.inference.postprocess"):
        ev.ensure(cands, range(3))
    dropped = [c for c in cands
               if c.pp[1] == 1 and not np.array_equal(ev.metrics[c], ev.metrics[replace(c, pp=fit.PP_OFF)])]
    assert dropped, "post-processing must have removed components (postprocess logs that when not quiet)"
    assert [r for r in caplog.records if r.name == "panther_ensemble.inference.postprocess"] == []
    assert lt.create_table_neighbour_code_to_surface_area is table_fn
    assert {n: logging.getLogger(n).level for n in watched} == levels
    assert ev.stats["metric_calls"] > 0 and len(ev._surfel_areas._tables) == 1  # one spacing, one table


# ----------------------------------------------------------------------------------------------------------
# nnU-Net layout
# ----------------------------------------------------------------------------------------------------------
def test_reads_nnunet_fold_validation_layout(tmp_path):
    rng = np.random.default_rng(5)
    names = ["over", "under"]
    root = tmp_path / "ours"
    model = tmp_path / "nnUNet_results" / "Dataset901_X" / "nnUNetTrainerPhantomDA5__nnUNetPlans__3d_fullres"
    for i in range(6):
        gt, maps = make_case(rng, kinds=names)
        cid = f"case_{i:03d}"
        write_gt(root / "gt" / f"{cid}.mha", gt)
        for k in names:
            write_npz(root / "oof" / k / f"{cid}.npz", maps[k])
        # the same "under" maps as nnU-Net exports them, label order background, pancreas, tumor, two folds
        write_nnunet(model, i % 2, cid, maps["under"].astype(np.float16).astype(np.float32),
                     ("background", "pancreas", "tumor"))
    (model / "fold_all" / "validation").mkdir(parents=True)  # trained on everything: not out-of-fold, skipped
    src = fit.find_member("under", model)
    assert src.kind == "nnunet" and src.labels == ("background", "pancreas", "tumor") and len(src.files) == 6
    space = fit.SearchSpace.build(2, weight_step=0.5, thresholds=(0.5,), min_volumes=(None,), keep_largest=(None, 1),
                                  max_distances=(None, 5.0), top_k=0)
    ours = [fit.find_member(n, root / "oof" / n) for n in names]
    mixed = [ours[0], src]
    for s in ours + mixed:
        fit.peek_labels(s, "tumor")
    a = fit.Evaluator(fit.load_cases(ours, root / "gt", fit.crop_rule(space, ours, "tumor", "pancreas")))
    b = fit.Evaluator(fit.load_cases(mixed, root / "gt", fit.crop_rule(space, mixed, "tumor", "pancreas")))
    cands = space.stage_a + [replace(c, pp=p) for c in space.stage_a for p in space.pp_grid[1:]]
    a.ensure(cands, range(6))
    b.ensure(cands, range(6))
    for c in cands:
        if c.weights[1] in (0.0, 1.0):  # same label order in the common space -> identical numbers
            np.testing.assert_array_equal(a.metrics[c], b.metrics[c])
        else:  # common label space order differs (pancreas before tumour): argmax ties may differ, nothing else
            np.testing.assert_allclose(a.metrics[c][:, 0], b.metrics[c][:, 0], atol=0.02)


# ----------------------------------------------------------------------------------------------------------
# bad inputs: one line, exit 2
# ----------------------------------------------------------------------------------------------------------
def _error_line(capsys, argv) -> str:
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_fit_keeps_the_most_confident_component_when_a_larger_false_one_is_less_sure(tmp_path):
    """Every case has a false tumour larger than the true one but less sure: keep-largest keeps the false one,
    keep-most-confident the true one. The fit must choose the latter, and its spec must carry it."""
    names = ["over", "under"]
    root = make_dataset(tmp_path, 8, names, seed=2, extra={i: {"diffuse_blob": True} for i in range(8)})
    out = tmp_path / "out"
    rc = cli.main(fit_args(root, names, out, "--weight-step", "0.5", "--thresholds", "0.5", "--min-volumes", "off",
                           "--keep-largest", "off,1", "--keep-most-confident", "off,1", "--max-distances", "off",
                           "--never-empty", "off", "--folds", "2"))
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["chosen"]["postprocess"]["keep_most_confident"] == 1, rep["chosen"]
    assert rep["chosen"]["postprocess"]["keep_largest"] is None
    assert rep["search_space"]["postprocess_axes"]["keep_most_confident"] == ["off", 1]
    spec = load_spec(out / "spec.json")
    assert spec.postprocess.keep_most_confident == 1 and spec.postprocess.keep_largest is None
    assert "keep_most_confident" in (out / "report.md").read_text()


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    names = ["over", "under"]
    root = make_dataset(tmp_path / "d", 3, names, seed=6)
    out = tmp_path / "out"
    # missing member folder
    argv = fit_args(root, names, out)
    argv[argv.index(f"under={root / 'oof' / 'under'}")] = f"under={tmp_path / 'nowhere'}"
    assert "does not exist" in _error_line(capsys, argv)
    # member not in the base spec / member without maps
    assert "not in the base spec" in _error_line(capsys, fit_args(root, names, out) + [f"other={root}"])
    argv = fit_args(root, names, out)
    argv.remove(f"under={root / 'oof' / 'under'}")
    assert "no out-of-fold maps for member 'under'" in _error_line(capsys, argv)
    # label mismatch: a map of 'under' without the tumour label
    bad = tmp_path / "bad"
    for f in (root / "oof" / "under").glob("*.npz"):
        with np.load(f) as z:
            p = z["probabilities"]
        write_npz(bad / f.name, p, labels=("background", "lesion", "pancreas"))
    argv = fit_args(root, names, out)
    argv[argv.index(f"under={root / 'oof' / 'under'}")] = f"under={bad}"
    assert "have no 'tumor'" in _error_line(capsys, argv)
    # label names that change between the maps of one member
    f0 = sorted(bad.glob("*.npz"))
    with np.load(root / "oof" / "under" / f0[0].name) as z:
        p = z["probabilities"]
    for f in f0:
        write_npz(f, p, labels=LABELS)
    write_npz(f0[1], p, labels=("background", "pancreas", "tumor"))
    assert "differ from this member's other maps" in _error_line(capsys, argv)
    # channel count that does not fit the labels
    write_npz(f0[1], p[:2], labels=LABELS)
    assert "do not fit 3 labels" in _error_line(capsys, argv)
    # no common case
    other = tmp_path / "other_gt"
    write_gt(other / "unrelated.mha", np.zeros(SMALL, np.uint8))
    argv = fit_args(root, names, out)
    argv[argv.index("--gt") + 1] = str(other)
    assert "no case is in the ground truth" in _error_line(capsys, argv)
    # wrong shape against the ground truth; maps that are not probabilities
    write_npz(f0[1], p[:, :, :10], labels=LABELS)
    assert "does not match ground truth" in _error_line(capsys, fit_args(root, names, out)[:-1] + [f"under={bad}"])
    write_npz(f0[1], p * 2, labels=LABELS)
    assert "do not sum to 1" in _error_line(capsys, fit_args(root, names, out)[:-1] + [f"under={bad}"])
    # nnU-Net folder without validation maps; bad option values
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "tumor": 1}}))
    assert "fold_*/validation" in _error_line(capsys, fit_args(root, names, out)[:-1] + [f"under={tmp_path / 'm'}"])
    assert "--metric-weights" in _error_line(capsys, fit_args(root, names, out, "--metric-weights", "dice=x"))
    assert "--weight-step" in _error_line(capsys, fit_args(root, names, out, "--weight-step", "0.3"))
    assert "--keep-most-confident: must be whole numbers" in _error_line(
        capsys, fit_args(root, names, out, "--keep-most-confident", "off,1.5"))
    assert "--keep-most-confident: must be >= 1" in _error_line(
        capsys, fit_args(root, names, out, "--keep-most-confident", "0"))
    assert not out.exists()


def test_members_that_find_no_tumour_are_refused_not_fitted(tmp_path, capsys):
    """Members whose training collapsed (tumour probability 0 everywhere: the Task 2 rebuild of 2026-12-03)
    give a one-line error and no spec, instead of a fitted-looking spec that finds nothing."""
    names = ["over", "under"]
    root = make_dataset(tmp_path / "d", 4, names, seed=3)
    for n in names:
        for f in (root / "oof" / n).glob("*.npz"):
            with np.load(f) as z:
                p = z["probabilities"].astype(np.float32)
            p[0] += p[1]  # the tumour's probability goes to the background
            p[1] = 0.0
            write_npz(f, p)
    out = tmp_path / "out"
    argv = fit_args(root, names, out, "--weight-step", "0.5", "--thresholds", "0.5", "--min-volumes", "off",
                    "--keep-largest", "off", "--max-distances", "off", "--folds", "2")
    err = _error_line(capsys, argv)
    assert "no member finds the tumour" in err and "Dice 0 on all 4 cases" in err and err.startswith("error: --oof")
    assert not (out / "spec.json").exists()
    # one member that finds it is enough to fit
    shutil.rmtree(root / "oof" / "over")
    make_dataset(tmp_path / "good", 4, ["over"], seed=3)
    shutil.copytree(tmp_path / "good" / "oof" / "over", root / "oof" / "over")
    assert cli.main(argv) == 0 and (out / "spec.json").is_file()


def test_dropped_cases_are_reported(tmp_path):
    names = ["over", "under"]
    root = make_dataset(tmp_path, 6, names, seed=8)
    (root / "oof" / "under" / "case_002.npz").unlink()
    (root / "gt" / "case_004.mha").unlink()
    out = tmp_path / "out"
    assert cli.main(fit_args(root, names, out, "--weight-step", "0.5", "--thresholds", "", "--min-volumes", "off",
                             "--keep-largest", "off,1", "--max-distances", "off", "--folds", "2",
                             "--tumour-factors", "2")) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["cases"]["used"] == 4
    assert rep["cases"]["dropped"] == {"case_002": "missing in under", "case_004": "missing in ground truth"}


def test_fitted_spec_keeps_members_with_weight_drops_zero_and_loads(tmp_path):
    from panther_ensemble.spec import load_spec as load

    base = load(write_base_spec(tmp_path / "base.json", ["a", "b", "c"]))
    cand = fit.Candidate((0.6, 0.0, 0.4), (1.0, 1.0, 2.0), "threshold", 0.4, (100.0, 1, None))
    d = fit.fitted_spec_json(base, cand, "test")
    (tmp_path / "spec.json").write_text(json.dumps(d))
    spec = load(tmp_path / "spec.json")
    assert [(m.name, m.weight, m.class_weights) for m in spec.members] == [("a", 0.6, {}), ("c", 0.4, {"tumor": 2.0})]
    assert (spec.decision.rule, spec.decision.threshold) == ("threshold", 0.4)
    assert (spec.postprocess.min_volume_mm3, spec.postprocess.keep_largest,
            spec.postprocess.max_distance_to_pancreas_mm) == (100.0, 1, None)
    d = fit.fitted_spec_json(base, fit.equal_candidate(3), "test")
    assert d["decision"] == {"rule": "argmax"} and d["postprocess"] == {}
    assert [m["weight"] for m in d["members"]] == [0.333333] * 3  # exactly what was scored


# ----------------------------------------------------------------------------------------------------------
# benchmark (skipped by default): pytest -m benchmark --run-benchmarks tests/test_fit.py [PANTHER_FIT_BENCH_CASES=50]
# [PANTHER_FIT_BENCH_MEMBERS=3]
# ----------------------------------------------------------------------------------------------------------
TASK1_SHAPE = (72, 258, 318)
TASK1_SPACING = (3.0, 1.1875, 1.1875)
BENCH_KINDS = ("over", "under", "fp", "weak")


def make_benchmark(root: Path, n_cases: int, n_members: int, seed: int = 0) -> Path:
    """Task 1-sized cases in the nnU-Net layout (float32, compressed npz, 5 folds), ground truth as .mha."""
    rng = np.random.default_rng(seed)
    kinds = BENCH_KINDS[:n_members]
    for i in range(n_cases):
        cid = f"bench_{i:03d}"
        if (root / "gt" / f"{cid}.mha").exists():
            continue
        gt, maps = make_case(rng, TASK1_SHAPE, TASK1_SPACING, kinds)
        for k in kinds:
            write_nnunet(root / "oof" / k, i % 5, cid, maps[k])
        write_gt(root / "gt" / f"{cid}.mha", gt, TASK1_SPACING)  # last: marks the case complete
    return root


@pytest.mark.benchmark
def test_benchmark_task1_size(tmp_path):
    n_cases = int(os.environ.get("PANTHER_FIT_BENCH_CASES", "50"))
    n_members = int(os.environ.get("PANTHER_FIT_BENCH_MEMBERS", "3"))
    root = Path(os.environ.get("PANTHER_FIT_BENCH_DIR", tmp_path / "bench")) / f"{n_cases}x{n_members}"
    t = time.perf_counter()
    make_benchmark(root, n_cases, n_members)
    print(f"\ndata ready in {time.perf_counter() - t:.0f} s")
    names = list(BENCH_KINDS[:n_members])
    out = root / "out"
    argv = fit_args(root, names, out)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "panther_ensemble.cli", *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t
    print(proc.stdout)
    print(proc.stderr[-3000:])
    assert proc.returncode == 0
    rep = json.loads((out / "report.json").read_text())
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"BENCH {n_cases} cases x {n_members} members: {rep['candidates_scored']} candidates, "
          f"{rep['search_space']['candidates_per_search']} per search; process wall {wall:.0f} s; "
          f"peak RSS {child_rss / 2**30:.2f} GiB; crops {rep['memory']['crops_bytes'] / 2**20:.0f} MiB")
    assert rep["search_space"]["candidates_per_search"] >= 200
    assert child_rss < 8 * 2**30


# ----------------------------------------------------------------------------------------------------------
# how firm the choice is
# ----------------------------------------------------------------------------------------------------------
def _two_members(root: Path, swapped: bool, n_common: int = 6) -> Path:
    """Members A and B, the same on every case but two: on case_000 A is exact and B over-segments; on
    case_001 (the same ground truth) B is exact and A over-segments when `swapped`, A exact again otherwise."""
    rng = np.random.default_rng(11)
    gt, maps = make_case(rng, kinds=("exact", "over"))
    pairs = [(maps["exact"], maps["over"]), (maps["over"], maps["exact"]) if swapped else (maps["exact"], maps["over"])]
    for i, (a, b) in enumerate(pairs):
        write_gt(root / "gt" / f"case_{i:03d}.mha", gt)
        write_npz(root / "oof" / "A" / f"case_{i:03d}.npz", a)
        write_npz(root / "oof" / "B" / f"case_{i:03d}.npz", b)
    for i in range(2, 2 + n_common):
        gt_i, maps_i = make_case(rng, kinds=("exact",))
        write_gt(root / "gt" / f"case_{i:03d}.mha", gt_i)
        for m in ("A", "B"):
            write_npz(root / "oof" / m / f"case_{i:03d}.npz", maps_i["exact"])
    return root


@pytest.mark.parametrize("swapped", [True, False])
def test_choice_stability_finds_near_equals_and_only_them(tmp_path, swapped):
    space = fit.SearchSpace([((1.0, 0.0), None), ((0.0, 1.0), None)], [("argmax", None)], [fit.PP_OFF])
    ev = fit.Evaluator(load(_two_members(tmp_path, swapped), ["A", "B"], space))
    everything = list(range(ev.n))
    sel = crossval.select(ev, space, everything, "mean-rank", fit.DEFAULT_METRIC_WEIGHTS)
    assert sel.best.cand.weights == (1.0, 0.0)  # swapped: an exact tie on all cases, the first candidate wins
    stab = crossval.choice_stability(ev, sel, everything, "mean-rank", fit.DEFAULT_METRIC_WEIGHTS, top=2,
                                     resamples=400, seed=0)
    assert [c.cand for c in stab] == [sel.best.cand, fit.Candidate((0.0, 1.0))]
    assert sum(c.share_chosen for c in stab) == pytest.approx(1.0)
    if swapped:
        # B wins every draw with more copies of case_001 than of case_000, none with fewer; with equal counts the two
        # have the same per-case rows in another order, and the float sums decide by rounding (or a tie, A's).
        # The draws replayed from the same seed:
        rng = np.random.default_rng(0)
        draws = [rng.integers(0, ev.n, ev.n) for _ in range(400)]
        more = sum(int((d == 1).sum() > (d == 0).sum()) for d in draws) / 400
        equal = sum(int((d == 1).sum() == (d == 0).sum()) for d in draws) / 400
        assert 0.25 < more < 0.45 and more <= stab[1].share_chosen <= more + equal
    else:  # A is never worse than B on any case: B never wins
        assert stab[0].share_chosen == 1.0 and stab[1].share_chosen == 0.0
    again = crossval.choice_stability(ev, sel, everything, "mean-rank", fit.DEFAULT_METRIC_WEIGHTS, top=2,
                                      resamples=400, seed=0)
    assert [c.share_chosen for c in again] == [c.share_chosen for c in stab]


def test_report_says_how_firm_the_choice_is(tmp_path, capsys):
    names = ["A", "B"]
    root = _two_members(tmp_path, swapped=True)
    out = tmp_path / "out"
    rc = cli.main(fit_args(root, names, out, "--thresholds", "0.5", "--min-volumes", "off", "--keep-largest", "off",
                           "--max-distances", "off", "--folds", "2"))
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    st = rep["choice_stability"]
    assert st["resamples"] == crossval.STABILITY_RESAMPLES and st["cases"] == 8
    assert st["contenders"][0]["label"] == rep["chosen"]["label"]
    assert 1 < len(st["contenders"]) <= crossval.STABILITY_TOP
    assert sum(c["share_chosen"] for c in st["contenders"]) == pytest.approx(1.0)
    md = (out / "report.md").read_text()
    assert "## How firm the choice is" in md and "(**fitted**)" in md
    assert ("near-equals" in md) == (st["contenders"][0]["share_chosen"] < 0.5)
    assert "bootstrap draws" in capsys.readouterr().out


def test_aggregate_counts_a_case_drawn_twice_twice(tmp_path):
    names = ["over", "under"]
    root = make_dataset(tmp_path, 4, names, seed=2)
    space = fit.SearchSpace([((1.0, 0.0), None)], [("argmax", None)], [fit.PP_OFF])
    ev = fit.Evaluator(load(root, names, space))
    cand = fit.Candidate((1.0, 0.0))
    ev.ensure([cand], range(4))
    rows = ev.metrics[cand]
    assert ev.aggregate(cand, [0, 0, 1]) == aggregate({i: dict(zip(CASE_KEYS, r)) for i, r in
                                                      enumerate(rows[[0, 0, 1]].tolist())})
    assert ev.aggregate(cand, [0, 0, 1]) != ev.aggregate(cand, [0, 1])
    assert ev.scales([0, 0, 1]) != ev.scales([0, 1]) or ev.scales([0]) == ev.scales([1])


def test_choice_stability_contenders_differ_in_weights_only(tmp_path):
    names = ["over", "under"]
    root = make_dataset(tmp_path, 8, names, seed=3)
    space = fit.SearchSpace.build(2, weight_step=0.25, thresholds=(0.4, 0.5), min_volumes=(None, 100.0),
                                  keep_largest=(None, 1), max_distances=(None,), top_k=2)
    ev = fit.Evaluator(load(root, names, space))
    everything = list(range(ev.n))
    sel = crossval.select(ev, space, everything, "mean-rank", fit.DEFAULT_METRIC_WEIGHTS)
    stab = crossval.choice_stability(ev, sel, everything, "mean-rank", fit.DEFAULT_METRIC_WEIGHTS, top=4,
                                     resamples=50, seed=1)
    chosen = sel.best.cand
    assert len(stab) == 4 and stab[0].cand == chosen
    assert len({c.cand.wd for c in stab}) == 4  # distinct weightings
    assert all((c.cand.rule, c.cand.threshold, c.cand.pp) == (chosen.rule, chosen.threshold, chosen.pp) for c in stab)
    # ranked as the search ranked their weightings (each weighting's best candidate, in the search's order)
    order = sorted(range(len(sel.scored)), key=lambda i: crossval.choice_order(sel.scored[i], "mean-rank", i))
    seen = []
    for i in order:
        if sel.scored[i].cand.wd not in seen:
            seen.append(sel.scored[i].cand.wd)
    assert [c.cand.wd for c in stab] == seen[:4]
    assert crossval.best_contender_on_all(stab, "mean-rank") == min(
        range(4), key=lambda p: (crossval.Scored(stab[p].cand, {}, stab[p].score, stab[p].mean_rank, "").key("mean-rank"), p))
