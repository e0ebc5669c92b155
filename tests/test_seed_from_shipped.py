"""training/seed_from_shipped.py: training goes on from a shipped (inference-only, float16) member as from a run
it trained itself, with real nnU-Net code end to end (tiny network, tiny dataset)."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import torch
from tinydata import REPO, TINY, tiny_dataset

sys.path.insert(0, str(REPO / "training"))
try:
    import collapse
    from export_weights import strip_checkpoint
finally:
    sys.path.remove(str(REPO / "training"))


def _run(script: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "training" / script), *args], capture_output=True, text=True,
                          timeout=600, env=env)


def test_a_shipped_member_is_seeded_at_its_epoch_and_trained_on_with_the_longer_schedule(tmp_path):
    env = tiny_dataset(tmp_path)
    shipped = tmp_path / "model_weights" / "Dataset901_PhantomT1" / TINY.name
    for fold in (0, 1):  # the fixture has one fold: ship it as both
        strip_checkpoint(TINY / "fold_0" / "checkpoint_final.pth", shipped / f"fold_{fold}" / "checkpoint_final.pth")
    source = shipped / "fold_0" / "checkpoint_final.pth"
    half = torch.load(source, map_location="cpu", weights_only=True)
    assert half["current_epoch"] == 2 and "optimizer_state" not in half

    seeded = _run("seed_from_shipped.py", env, str(shipped))  # folds 0 and 1
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    assert seeded.stdout.count("seeded at epoch 2") == 2
    run = Path(env["nnUNet_results"]) / "Dataset901_PhantomT1" / TINY.name / "fold_0"
    final = torch.load(run / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 2 and final["trainer_name"] == "nnUNetTrainerPhantom"
    assert final["inference_allowed_mirroring_axes"] == half["inference_allowed_mirroring_axes"] is not None
    assert final["optimizer_state"]["param_groups"] and not final["optimizer_state"]["state"]  # fresh momentum
    for k, v in half["network_weights"].items():
        assert final["network_weights"][k].dtype == torch.float32 and torch.equal(final["network_weights"][k], v.float())
    assert len(final["logging"]["dice_per_class_or_region"]) == 2
    provenance = json.loads((run / "seeded_from.json").read_text())
    assert provenance["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest() and provenance["epochs"] == 2
    assert json.loads((run / "phantom_timing.json").read_text())["epochs"] == 2
    # a seeded run that was not trained on cannot pass a floor: its epochs have no pseudo Dice
    assert collapse.collapse_reason(final["logging"]["dice_per_class_or_region"], ["tumor", "pancreas"],
                                    {"tumor": 0.0}) == "pseudo Dice over the last 2 epochs: tumor not logged"

    again = _run("seed_from_shipped.py", env, str(shipped), "--folds", "0")
    assert again.returncode == 1 and "has checkpoint_final.pth (a trained or running run): left alone" in again.stderr

    def train(epochs: int) -> subprocess.CompletedProcess:
        return _run("train_specialist.py", env, "--dataset", "901", "--trainer", "nnUNetTrainerPhantom", "--plans",
                    "nnUNetPlansTiny", "--fold", "0", "--epochs", str(epochs), "--iters", "2", "--val-iters", "1",
                    "--lr", "0.005", "--skip-validation", "--require-pseudo-dice", "tumor=0")

    # not trained on: an error that says so, not the collapse status (reproduce.sh would then train afresh from
    # the pre-trained network) and not a move aside
    idle = train(2)
    assert idle.returncode == 1, idle.stderr[-3000:]
    assert "seeded at epoch 2 (seed_from_shipped.py) and not trained on: give --epochs above it" in idle.stderr
    assert (run / "checkpoint_final.pth").is_file() and not list(run.parent.glob("fold_0.collapsed-*"))

    trained = train(4)
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = "".join(p.read_text() for p in run.glob("training_log_*.txt"))
    assert "seeded from" in log and "extending the finished 2-epoch run" in log
    after = torch.load(run / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert after["current_epoch"] == 4
    lrs = after["logging"]["lrs"]
    assert len(lrs) == 4 and all(math.isnan(x) for x in lrs[:2])
    # epochs 2 and 3 of a 4-epoch poly schedule, as if the run had been trained for 4 from the start
    assert math.isclose(lrs[2], 0.005 * (1 - 2 / 4) ** 0.9) and math.isclose(lrs[3], 0.005 * (1 - 3 / 4) ** 0.9)
    dice = after["logging"]["dice_per_class_or_region"]
    assert all(not math.isnan(float(x)) for x in dice[2] + dice[3])
    assert any(not torch.equal(after["network_weights"][k], final["network_weights"][k]) for k in half["network_weights"])


def test_seeding_refuses_what_it_cannot_continue(tmp_path):
    env = tiny_dataset(tmp_path)
    bad = tmp_path / "model_weights" / "Dataset901_PhantomT1" / "not_a_model_folder"
    bad.mkdir(parents=True)
    r = _run("seed_from_shipped.py", env, str(bad))
    assert r.returncode == 1 and "not a <trainer>__<plans>__<configuration> folder" in r.stderr
    missing = tmp_path / "model_weights" / "Dataset901_PhantomT1" / TINY.name
    missing.mkdir()
    r = _run("seed_from_shipped.py", env, str(missing), "--folds", "1")
    assert r.returncode == 1 and "fold_1/checkpoint_final.pth: no such checkpoint" in r.stderr
