"""Time budget: drop mirroring first, then the members that weigh least; never overrun by more than one member."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import numpy as np
import pytest

from panther_ensemble.inference import budget
from panther_ensemble.inference.engine import Engine
from panther_ensemble.runtime import Runtime
from panther_ensemble.io import read_image
from panther_ensemble.spec import parse_spec


def fake_member(name, weight, mirrored=True):
    return SimpleNamespace(name=name, spec=SimpleNamespace(weight=weight),
                           mirror_axes=(0, 1, 2) if mirrored else None)


def plan_with(costs, budget_s, weights, elapsed=0.0):
    members = [fake_member(n, w) for n, w in weights.items()]
    order = sorted(members, key=lambda m: -m.spec.weight)
    p = budget.BudgetPlan(order=order, budget_s=budget_s, started=time.perf_counter() - elapsed)
    for m in members:
        tiles, seconds_per_forward = costs[m.name]
        p.mirror_copies[m.name] = 8
        p.costs[m.name] = budget._Cost(tiles, 2 * 8, seconds_per_forward)  # 2 folds x 8 mirrored copies
    return p, order


def test_enough_time_changes_nothing():
    p, order = plan_with({"a": (10, 0.01), "b": (10, 0.01)}, 100.0, {"a": 0.7, "b": 0.3})
    assert [p.should_run(m) for m in order] == [True, True]
    assert p.mirroring_dropped == () and p.dropped == []


def test_mirroring_is_dropped_first(caplog):
    # with mirroring: 2 x 10 tiles x 16 forwards x 0.1 s = 32 s; without: 4 s; budget 10 s
    p, order = plan_with({"a": (10, 0.1), "b": (10, 0.1)}, 10.0, {"a": 0.7, "b": 0.3})
    with caplog.at_level(logging.WARNING):
        assert [p.should_run(m) for m in order] == [True, True]
    assert set(p.mirroring_dropped) == {"a", "b"} and p.dropped == []
    assert "dropping mirroring for a, b" in caplog.text
    assert p.mirror_axes(order[0]) is None


def test_then_the_lightest_members(caplog):
    # without mirroring each member costs 10 tiles x 2 forwards x 0.5 s = 10 s; budget 25 s: one must go
    p, order = plan_with({"a": (10, 0.5), "b": (10, 0.5), "c": (10, 0.5)}, 25.0, {"a": 0.2, "b": 0.5, "c": 0.3})
    with caplog.at_level(logging.WARNING):
        runs = {m.name: p.should_run(m) for m in order}
    assert [m.name for m in order] == ["b", "c", "a"]  # heaviest first
    assert runs == {"b": True, "c": True, "a": False}
    assert "dropping member a (weight 0.2)" in caplog.text


def test_the_heaviest_member_always_runs():
    p, order = plan_with({"a": (100, 1.0), "b": (100, 1.0)}, 0.001, {"a": 0.4, "b": 0.6})
    runs = {m.name: p.should_run(m) for m in order}
    assert runs == {"b": True, "a": False}


def test_replanning_uses_time_already_spent():
    p, order = plan_with({"a": (10, 0.05), "b": (10, 0.05)}, 20.0, {"a": 0.6, "b": 0.4})
    assert p.should_run(order[0]) and p.mirroring_dropped == ()  # 8 s + 8 s with mirroring: fits in 20 s
    p.started -= 18.5  # a took longer than thought: 1.5 s left, b needs 8 s (1 s without mirroring)
    assert p.should_run(order[1])
    assert p.mirroring_dropped == ("b",) and p.dropped == []


@pytest.mark.parametrize("batches,expected", [
    ([(4, 1.0), (8, 1.5), (10, 1.75)], 0.75 / 6),  # tiles batched 4, 4, 2: the first batch is the warm-up
    ([(i, 0.1 * i) for i in range(1, 11)], 0.1),  # one tile per call
    ([(10, 2.0)], 0.2),  # a single batch: everything counts
])
def test_measured_speed_replaces_the_calibration_with_batched_tiles(monkeypatch, batches, expected):
    p, order = plan_with({"a": (10, 1.0)}, 100.0, {"a": 1.0})
    clock = iter([0.0, 0.0] + [t for _, t in batches])  # should_run: re-plan, then the start
    monkeypatch.setattr(budget.time, "perf_counter", lambda: next(clock))
    assert p.should_run(order[0])
    for done, _ in batches:
        p.on_tile(order[0], done, 10)
    assert p.costs["a"].seconds_per_forward == pytest.approx(expected / 16)  # 2 folds x 8 mirrored copies


def test_engine_with_a_tiny_budget_runs_only_the_heaviest_member_unmirrored(models, mri_file, caplog):
    members = [{"name": "A", "model": "A", "folds": [0], "weight": 2.0},
               {"name": "B", "model": "B", "folds": [0], "weight": 1.0}]
    image, geometry = read_image(mri_file)
    # far below one member's time: with 0.2 s a fresh-clone CI run once had both tiny members fit and kept B
    budget = 0.02
    with caplog.at_level(logging.WARNING):
        start = time.perf_counter()
        result = Engine(parse_spec({"version": 1, "task": 1, "members": members, "time_budget_s": budget}),
                        models, Runtime.create("cpu")).predict(image, geometry)
        elapsed = time.perf_counter() - start
    assert result.members_used == ("A",) and result.members_dropped == ("B",)
    assert "A" in result.mirroring_dropped
    assert "dropping member B" in caplog.text and "dropping mirroring" in caplog.text
    alone = Engine(parse_spec({"version": 1, "task": 1, "members": [dict(members[0], mirroring=False)]}),
                   models, Runtime.create("cpu")).predict(image, geometry)
    assert np.array_equal(result.mask, alone.mask)
    # the overrun is at most the one member that had to run (plus its share outside the network)
    one_member = sum(v for k, v in result.stages.seconds.items() if k.endswith(" A") or "[A]" in k)
    calibration = result.stages.seconds["plan (time budget calibration)"]  # one forward per member, measured
    assert elapsed <= budget + calibration + one_member + 1.0


def test_tile_count_matches_the_sliding_window(models, mri_file):
    members = [{"name": "A", "model": "A", "folds": [0]}, {"name": "B", "model": "B", "folds": [0]}]
    engine = Engine(parse_spec({"version": 1, "task": 1, "members": members}), models, Runtime.create("cpu")).load()
    image, geometry = read_image(mri_file)
    from panther_ensemble.inference.preprocess import preprocess
    from panther_ensemble.inference.sliding_window import tile_slicers

    for m in engine.members:
        pre = preprocess(image, geometry.spacing_zyx, m.preprocess_plan, engine.device)
        padded = [max(s, p) for s, p in zip(pre.data.shape[1:], m.patch_size)]
        assert budget.tile_count(m, image, geometry.spacing_zyx) == len(tile_slicers(padded, m.patch_size, 0.5))
