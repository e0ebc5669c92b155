"""The spec is data: validated on load, every error names the file and the field."""

from __future__ import annotations

import copy
import json

import pytest

from panther_ensemble.errors import InputError
from panther_ensemble.spec import load_spec, parse_spec

GOOD = {
    "version": 1, "task": 1, "tumor_label": "tumor", "pancreas_label": "pancreas",
    "members": [
        {"name": "volume", "model": "D901/nnUNetTrainerDA5__P__3d_fullres", "folds": [0, 1], "weight": 0.6,
         "class_weights": {"tumor": 1.2}, "mirroring": True, "tile_step_size": 0.5, "resampling": "fast"},
        {"name": "boundary", "model": "D901/nnUNetTrainer__P__3d_fullres", "folds": ["all"],
         "checkpoint": "checkpoint_best.pth", "weight": 0.4, "resampling": "faithful"},
    ],
    "decision": {"rule": "threshold", "threshold": 0.4},
    "postprocess": {"min_volume_mm3": 100, "keep_largest": 2, "max_distance_to_pancreas_mm": 10},
    "time_budget_s": 300,
}


def test_good_spec_round_trips(tmp_path):
    spec = parse_spec(GOOD, "good.json")
    assert spec.members[0].folds == (0, 1) and spec.members[1].folds == ("all",)
    assert spec.decision.threshold == 0.4 and spec.postprocess.keep_largest == 2
    spec.save(tmp_path / "s.json")
    again = load_spec(tmp_path / "s.json")
    assert again.to_json() == spec.to_json()


@pytest.mark.parametrize("decision", [{"rule": "argmax"}, {"rule": "threshold", "threshold": 0.35}])
def test_to_json_parses_back_to_the_same_spec(tmp_path, decision):
    spec = parse_spec(dict(GOOD, decision=decision), "x.json")
    assert parse_spec(spec.to_json(), "x.json") == spec
    spec.save(tmp_path / "s.json")
    assert load_spec(tmp_path / "s.json") == parse_spec(dict(GOOD, decision=decision), str(tmp_path / "s.json"))


def test_never_empty_round_trips_and_counts_as_a_rule():
    spec = parse_spec(dict(GOOD, postprocess={"never_empty": True}), "x.json")
    assert spec.postprocess.never_empty is True and spec.postprocess.active
    assert parse_spec(spec.to_json(), "x.json") == spec
    assert not parse_spec(dict(GOOD, postprocess={"never_empty": False}), "x.json").postprocess.active


def test_defaults():
    spec = parse_spec({"version": 1, "task": 2, "members": [{"name": "a", "model": "m", "folds": [0]}]})
    m = spec.members[0]
    assert (m.checkpoint, m.weight, m.mirroring, m.tile_step_size, m.resampling) == (
        "checkpoint_final.pth", 1.0, True, 0.5, "fast")
    assert spec.decision.rule == "argmax" and not spec.postprocess.active and spec.tumor_label == "tumor"


def mutate(path, value):
    raw = copy.deepcopy(GOOD)
    *parents, last = path
    target = raw
    for p in parents:
        target = target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return raw


@pytest.mark.parametrize("path,value,field", [
    (["version"], 2, "version"),
    (["task"], 3, "task"),
    (["members"], [], "members"),
    (["members", 0, "folds"], [0, 0], "members[0].folds"),
    (["members", 0, "folds", 1], "five", "members[0].folds[1]"),
    (["members", 1, "checkpoint"], "model.pth", "members[1].checkpoint"),
    (["members", 0, "weight"], -1, "members[0].weight"),
    (["members", 0, "weight"], "heavy", "members[0].weight"),
    (["members", 0, "tile_step_size"], 0, "members[0].tile_step_size"),
    (["members", 0, "resampling"], "linear", "members[0].resampling"),
    (["members", 0, "mirroring"], "yes", "members[0].mirroring"),
    (["members", 0, "model"], "/abs/path", "members[0].model"),
    (["members", 1, "name"], "volume", "members[1].name"),
    (["members", 0, "wieght"], 1, "members[0].wieght"),
    (["members", 0, "name"], KeyError, "members[0].name"),
    (["decision", "rule"], "vote", "decision.rule"),
    (["decision", "threshold"], 1.5, "decision.threshold"),
    (["decision"], {"rule": "threshold"}, "decision.threshold"),
    (["postprocess", "keep_largest"], 0, "postprocess.keep_largest"),
    (["postprocess", "keep_most_confident"], 0, "postprocess.keep_most_confident"),
    (["postprocess", "keep_most_confident"], 1.5, "postprocess.keep_most_confident"),
    (["postprocess", "keep_most_confident"], 1, "postprocess.keep_most_confident"),  # the base keeps the largest 2
    (["postprocess", "min_volume_mm3"], -5, "postprocess.min_volume_mm3"),
    (["postprocess", "never_empty"], "yes", "postprocess.never_empty"),
    (["postprocess", "never_empty"], 1, "postprocess.never_empty"),
    (["time_budget_s"], 0, "time_budget_s"),
    (["tumour_label"], "tumor", "tumour_label"),
    (["pancreas_label"], "tumor", "pancreas_label"),
])
def test_bad_fields_are_named(path, value, field):
    with pytest.raises(InputError) as err:
        parse_spec(mutate(path, value), "resources/task1.json")
    message = str(err.value)
    assert message.startswith(f"resources/task1.json: {field}:"), message
    assert "\n" not in message


def test_all_zero_weights_refused():
    raw = copy.deepcopy(GOOD)
    for m in raw["members"]:
        m["weight"] = 0
    with pytest.raises(InputError, match="at least one member"):
        parse_spec(raw, "x.json")


def test_file_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_spec(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_spec(tmp_path / "bad.json")


def test_shipped_specs_are_valid():
    from conftest import REPO

    specs = sorted((REPO / "resources").glob("task*.json"))
    assert [p.name for p in specs] == ["task1.json", "task2.json"]
    for p in specs:
        spec = load_spec(p)
        assert spec.task == int(p.stem[-1])
        assert json.loads(p.read_text())["version"] == 1


def test_keep_most_confident_round_trips_in_place_of_keep_largest(tmp_path):
    raw = dict(GOOD, postprocess={"keep_most_confident": 2, "max_distance_to_pancreas_mm": 5})
    spec = parse_spec(raw, "x.json")
    assert spec.postprocess.keep_most_confident == 2 and spec.postprocess.keep_largest is None
    assert spec.postprocess.active
    spec.save(tmp_path / "s.json")
    assert load_spec(tmp_path / "s.json").to_json() == spec.to_json()
    # a spec without the field reads as before (off), and writes no new field
    old = parse_spec(GOOD, "good.json")
    assert old.postprocess.keep_most_confident is None
    assert "keep_most_confident" not in old.to_json()["postprocess"]
