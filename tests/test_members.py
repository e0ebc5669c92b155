"""Model folders -> members: networks from plans alone, the safe checkpoint loader, label checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import modelfactory as mf
from panther_ensemble.inference.engine import Engine
from panther_ensemble.runtime import Runtime
from panther_ensemble.errors import InputError
from panther_ensemble.inference.members import ModelFolder, load_checkpoint, load_member
from panther_ensemble.spec import parse_spec


def spec_with(**member):
    base = {"name": "m", "model": "A", "folds": [0, 1]}
    base.update(member)
    return parse_spec({"version": 1, "task": 1, "members": [base]}, "spec.json")


def test_custom_trainer_name_loads_without_its_code(models):
    ckpt = load_checkpoint(models / "tumor_only" / "fold_0" / "checkpoint_final.pth")
    assert ckpt.trainer_name == "nnUNetTrainer1e3_150e_DA5"
    engine = Engine(spec_with(model="tumor_only", folds=[0]), models, Runtime.create("cpu")).load()
    member = engine.members[0]
    assert member.trainer_name == "nnUNetTrainer1e3_150e_DA5"
    assert type(member.networks[0]).__name__ == "ResidualEncoderUNet"
    assert member.label_names == ("background", "tumor")
    assert member.mirror_axes == (0, 1, 2)


def test_full_trainer_checkpoint_loads_with_weights_only(models):
    """Our checkpoints carry numpy float32 scalars in the training log, as nnU-Net's trainer writes them:
    plain weights_only loading refuses them, the allow-list lets exactly those through."""
    path = models / "A" / "fold_0" / "checkpoint_final.pth"
    with pytest.raises(Exception, match="numpy"):
        torch.load(path, map_location="cpu", weights_only=True)
    ckpt = load_checkpoint(path)
    assert ckpt.configuration == "3d_fullres" and ckpt.mirror_axes == (0, 1, 2)
    reference = torch.load(path, map_location="cpu", weights_only=False)["network_weights"]
    assert all(torch.equal(reference[k], v) for k, v in ckpt.network_weights.items())


class Payload:
    """Unpickling this runs a shell command: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_foreign_types_is_refused(models, tmp_path):
    folder = tmp_path / "evil"
    shutil.copytree(models / "A", folder)
    marker = tmp_path / "pwned"
    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    ckpt["logging"]["extra"] = Payload(marker)
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(InputError) as err:
        load_checkpoint(folder / "fold_0" / "checkpoint_final.pth")
    assert "refused" in str(err.value) and "system" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("damage,reason", [
    ("truncated", ""),  # torch's reason depends on where the archive is cut
    ("empty", "the file ends early"),
    ("random", "unreadable pickle data"),
    ("text", "unreadable pickle data"),
])
def test_truncated_or_corrupt_checkpoint(models, tmp_path, damage, reason):
    """One line that says what is wrong, without torch's advice to retry with weights_only=False (which would
    run whatever the file holds)."""
    path = tmp_path / "checkpoint_final.pth"
    data = (models / "A" / "fold_1" / "checkpoint_final.pth").read_bytes()
    path.write_bytes({"truncated": data[:5000], "empty": b"", "random": np.random.default_rng(0).bytes(5000),
                      "text": b"hello world\n" * 10}[damage])
    with pytest.raises(InputError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: truncated or corrupt checkpoint (not a readable torch file: {reason}")
    assert message.endswith(f"; {path.stat().st_size} bytes)")
    assert "weights_only" not in message and "\n" not in message


def test_mirroring_is_logged_in_words(models, caplog):
    folder = ModelFolder.open(models / "A")
    with caplog.at_level("INFO", logger="panther_ensemble.inference.members"):
        load_member(spec_with().members[0], folder, torch.device("cpu"))
        load_member(spec_with(mirroring=False).members[0], folder, torch.device("cpu"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].endswith("mirroring axes (0, 1, 2)") and lines[1].endswith("mirroring off")
    assert not any("None" in line for line in lines)


def test_weights_that_do_not_fit_the_plans(models, tmp_path):
    folder = tmp_path / "mismatch"
    shutil.copytree(models / "A", folder)
    ckpt_b = torch.load(models / "B" / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    ckpt_b["network_weights"] = {k: v[..., :1] if v.ndim == 5 else v for k, v in ckpt_b["network_weights"].items()}
    torch.save(ckpt_b, folder / "fold_0" / "checkpoint_final.pth")
    spec = spec_with(model="mismatch", folds=[0])
    with pytest.raises(InputError, match="do not fit the network"):
        Engine(spec, tmp_path, Runtime.create("cpu")).load()


@pytest.mark.parametrize("problem,expected", [
    ("missing_fold", "checkpoint for fold 3"),
    ("missing_folder", "model folder does not exist"),
    ("unknown_tumour_label", "has no label 'lesion'"),
    ("unknown_class_weight_label", "unknown label 'liver'"),
    ("missing_plans", "plans.json: missing"),
    ("unknown_configuration", "configuration '2d' not in plans"),
    ("best_checkpoint_missing", "checkpoint for fold 0"),
])
def test_spec_and_folder_problems_fail_before_loading(models, tmp_path, problem, expected):
    root = models
    spec = spec_with()
    if problem == "missing_fold":
        spec = spec_with(folds=[0, 3])
    elif problem == "missing_folder":
        spec = spec_with(model="nowhere")
    elif problem == "unknown_tumour_label":
        spec = parse_spec({"version": 1, "task": 1, "tumor_label": "lesion",
                           "members": [{"name": "m", "model": "A", "folds": [0]}]}, "spec.json")
    elif problem == "unknown_class_weight_label":
        spec = spec_with(class_weights={"liver": 2.0})
    elif problem == "missing_plans":
        root = tmp_path
        shutil.copytree(models / "A", tmp_path / "A")
        (tmp_path / "A" / "plans.json").unlink()
    elif problem == "unknown_configuration":
        spec = spec_with(configuration="2d")
    elif problem == "best_checkpoint_missing":
        spec = spec_with(checkpoint="checkpoint_best.pth")
    with pytest.raises(InputError) as err:
        Engine(spec, root, Runtime.create("cpu"))
    assert expected in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_region_based_folder_refused(tmp_path):
    dataset_json = mf.make_dataset_json({"background": 0, "whole": [1, 2], "tumor": 1})
    dataset_json["regions_class_order"] = [1, 2]
    mf.make_model_folder(tmp_path, "R", mf.make_plans(), folds=(0,), dataset_json=dict(dataset_json,
                                                                                         labels={"background": 0, "a": 1, "b": 2}))
    (tmp_path / "R" / "dataset.json").write_text(__import__("json").dumps(dataset_json))
    with pytest.raises(InputError, match="region-based"):
        ModelFolder.open(tmp_path / "R").label_names


def test_fold_all_and_label_order(models):
    engine = Engine(spec_with(model="reordered", folds=["all"]), models, Runtime.create("cpu")).load()
    assert engine.members[0].label_names == ("background", "pancreas", "tumor")
    assert engine.labels == ("background", "pancreas", "tumor")


def test_mirroring_off_in_spec(models):
    member = load_member(spec_with(mirroring=False).members[0], ModelFolder.open(models / "A"), torch.device("cpu"))
    assert member.mirror_axes is None
