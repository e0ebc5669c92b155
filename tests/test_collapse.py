"""A training run that did not learn stops the rebuild (training/collapse.py, train_specialist.py
--require-pseudo-dice, reproduce.sh's retries) instead of flowing into maps, a fit and a shipped spec."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tinydata import TINY, tiny_dataset, training_env

REPO = Path(__file__).resolve().parents[1]
LABELS = ["tumor", "pancreas"]

sys.path.insert(0, str(REPO / "training"))
try:
    import collapse
    import train_specialist
finally:
    sys.path.remove(str(REPO / "training"))


def test_floors_are_parsed_strictly():
    assert collapse.parse_floors(["pancreas=0.3", "tumor=0.1"]) == {"pancreas": 0.3, "tumor": 0.1}
    assert collapse.parse_floors(None) == {}
    for bad in ("pancreas", "pancreas=", "=0.3", "pancreas=high", "pancreas=1.5"):
        with pytest.raises(ValueError, match="LABEL=VALUE"):
            collapse.parse_floors([bad])


def test_collapse_is_judged_on_the_mean_of_the_last_epochs():
    learned_late = [[0.0, 0.0]] * 20 + [[0.05, 0.6], [0.2, 0.7], [0.3, 0.7], [0.25, 0.8], [0.3, 0.7]]
    assert collapse.collapse_reason(learned_late, LABELS, {"tumor": 0.1, "pancreas": 0.3}) is None
    dead = [[0.0, 0.0]] * 60  # the Task 2 pre-training of 2026-12-03
    reason = collapse.collapse_reason(dead, LABELS, {"pancreas": 0.3})
    assert reason == "pseudo Dice over the last 5 epochs: pancreas 0.000 < 0.3"
    # one lucky epoch among dead ones is not learning; a noisy dip in a learned run is not collapse
    assert collapse.collapse_reason(dead[:-1] + [[0.0, 0.9]], LABELS, {"pancreas": 0.3}) is not None
    assert collapse.collapse_reason([[0.3, 0.7]] * 4 + [[0.0, 0.7]], LABELS, {"tumor": 0.1}) is None
    both = collapse.collapse_reason([[0.0, 0.75]] * 36, LABELS, {"tumor": 0.1, "pancreas": 0.3})
    assert both.endswith("tumor 0.000 < 0.1")  # the specialists fine-tuned from it: pancreas fine, no tumour
    assert collapse.collapse_reason([[0.0, 0.75]] * 3, LABELS, {}) is None  # no floors, no judgement
    assert collapse.collapse_reason([], LABELS, {"tumor": 0.1}) == "no epoch was logged"
    with pytest.raises(ValueError, match="no label tumour"):
        collapse.collapse_reason(dead, LABELS, {"tumour": 0.1})


def test_label_order_follows_nnunet_s_pseudo_dice():
    assert collapse.foreground_labels({"labels": {"pancreas": 2, "background": 0, "tumor": 1}}) == LABELS
    with pytest.raises(ValueError, match="region"):
        collapse.foreground_labels({"labels": {"background": 0, "whole": [1, 2]}})


def _results_layout(tmp_path: Path) -> tuple[dict, Path]:
    """nnU-Net folders holding the real tiny trainer-written run as a finished 2-epoch run of Dataset901."""
    data = tmp_path / "data"
    pre = data / "nnUNet_preprocessed" / "Dataset901_PhantomT1"
    pre.mkdir(parents=True)
    shutil.copy(TINY / "plans.json", pre / "nnUNetPlansTiny.json")
    shutil.copy(TINY / "dataset.json", pre / "dataset.json")
    (data / "nnUNet_raw").mkdir()
    run = data / "nnUNet_results" / "Dataset901_PhantomT1" / TINY.name / "fold_0"
    run.mkdir(parents=True)
    shutil.copy(TINY / "fold_0" / "checkpoint_final.pth", run / "checkpoint_final.pth")
    (run / "phantom_timing.json").write_text(json.dumps({"epochs": 2}))
    return training_env(data), run


def _train(env: dict, *floors: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "training" / "train_specialist.py"), "--dataset", "901",
                           "--trainer", "nnUNetTrainerPhantom", "--plans", "nnUNetPlansTiny", "--fold", "0",
                           "--epochs", "2", "--skip-validation", "--require-pseudo-dice", *floors],
                          capture_output=True, text=True, timeout=300, env=env)


def test_a_finished_run_below_its_floor_is_moved_aside_with_one_line(tmp_path):
    """The real checkpoint's own log: tumour pseudo Dice 0.107, 0.173 (mean 0.140), pancreas 0.008, 0.0."""
    history = torch.load(TINY / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["logging"]["dice_per_class_or_region"]
    assert [round(float(e[0]), 3) for e in history] == [0.107, 0.173]
    env, run = _results_layout(tmp_path)

    ok = _train(env, "tumor=0.1")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "nothing to do" in ok.stdout and (run / "checkpoint_final.pth").is_file()

    dead = _train(env, "tumor=0.1", "pancreas=0.3")
    assert dead.returncode == collapse.COLLAPSED, dead.stderr[-2000:]
    line = dead.stderr.strip().splitlines()[-1]
    assert line.startswith(f"train_specialist: {run}: the run did not learn (pseudo Dice over the last 2 epochs: "
                           "pancreas 0.004 < 0.3)"), line
    assert not run.exists()  # a rerun trains afresh instead of resuming (or skipping) the dead weights
    moved = list(run.parent.glob("fold_0.collapsed-*"))
    assert len(moved) == 1 and (moved[0] / "checkpoint_final.pth").is_file() and str(moved[0]) in line

    bad = _train(env, "pancreas")
    assert bad.returncode == 2 and "LABEL=VALUE" in bad.stderr
    run.mkdir()  # a typo in a label is refused before any training, the run folder left as it is
    typo = _train(env, "tumour=0.1")
    assert typo.returncode == 2 and "no label tumour (labels: tumor, pancreas)" in typo.stderr, typo.stderr[-2000:]
    assert "phantom schedule" not in typo.stdout + typo.stderr and list(run.iterdir()) == []


def _reproduce(tmp_path: Path, fails: int, tries: int, *steps: str, only: str = "",
               **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """reproduce.sh STEPS with a stand-in interpreter whose first FAILS train_specialist.py calls (those whose
    arguments hold ONLY) report a collapse (exit 3) and the rest succeed; the calls it saw."""
    calls = tmp_path / "calls.txt"
    count = tmp_path / "count"
    count.write_text("0")
    fake = tmp_path / "python"
    fake.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
printf '[%s]' "$@" >> {calls}.args; echo >> {calls}.args
case "$1" in *train_specialist.py)
  case "$*" in *"{only}"*)
    n=$(cat {count}); echo $((n + 1)) > {count}
    if [ "$n" -lt {fails} ]; then exit 3; fi;;
  esac;;
esac
exit 0
""")
    fake.chmod(0o755)
    run = subprocess.run(["bash", str(REPO / "training" / "reproduce.sh"), *steps], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PY=str(fake), TRAIN_TRIES=str(tries),
                                              PANTHER_DATA=str(tmp_path / "data"), TMPDIR=str(tmp_path),
                                              **{"TASKS": "1", **env}))
    return run, [c for c in calls.read_text().splitlines() if "train_specialist.py" in c] if calls.exists() else []


def test_reproduce_retries_a_network_that_did_not_learn_and_stops_after_its_tries(tmp_path):
    (tmp_path / "a").mkdir()
    run, calls = _reproduce(tmp_path / "a", 1, 3, "pretrain")
    assert run.returncode == 0, run.stderr
    assert "run 1 of 3 did not learn (pancreas=0.3 tumor=0.1 not reached" in run.stderr
    stage1 = [c for c in calls if "nnUNetTrainerPhantom " in c + " "]
    assert len(stage1) == 2 and len(calls) == 3  # stage 1 twice, then stage 2 once
    # stage 1: the pancreas and a tumour head that fires (pretrain_retry), two words for train_specialist.py
    args = [a for a in (tmp_path / "a" / "calls.txt.args").read_text().splitlines() if "train_specialist.py]" in a]
    assert [a.endswith("[--require-pseudo-dice][pancreas=0.3][tumor=0.1]") for a in args] == [True, True, False]
    assert args[2].endswith("[--require-pseudo-dice][tumor=0.1]")
    assert "--require-pseudo-dice tumor=0.1" in calls[-1] and "TumourFocus" in calls[-1]
    assert all("--device cpu" in c for c in calls)  # reproduce.sh's DEVICE, cpu unless asked
    assert not any("--lr" in c for c in calls)  # stage 2 at the trainer's own learning rate unless P2_LR

    (tmp_path / "b").mkdir()
    run, calls = _reproduce(tmp_path / "b", 99, 2, "pretrain", "train")
    assert run.returncode != 0
    assert "reproduce.sh: 2 runs did not learn (pancreas=0.3 tumor=0.1 not reached)" in run.stderr
    assert len(calls) == 2  # nothing is built on the dead pre-training: no stage 2, no specialists
    assert "pretrain:" not in run.stdout  # the failed step is not timed as done

    (tmp_path / "c").mkdir()  # specialists: a fold that never learns fails the step (its twin ran too)
    run, calls = _reproduce(tmp_path / "c", 99, 1, "train")
    assert run.returncode != 0 and "1 runs did not learn (tumor=0.1 not reached)" in run.stderr
    assert len(calls) == 2 and all("--fold" in c for c in calls)

    (tmp_path / "d").mkdir()  # a GPU machine: every training run is asked for it
    run, calls = _reproduce(tmp_path / "d", 0, 1, "train", DEVICE="cuda")
    assert run.returncode == 0, run.stderr
    assert len(calls) == 6 and all("--device cuda" in c for c in calls)

    # pre-training and the specialists train with the CPU levers (auto: bfloat16 where native), each set apart
    (tmp_path / "f").mkdir()
    run, calls = _reproduce(tmp_path / "f", 0, 1, "pretrain", "train")
    assert run.returncode == 0, run.stderr
    assert len(calls) == 8 and all("--cpu-autocast auto --channels-last on" in c for c in calls)
    (tmp_path / "f2").mkdir()
    run, calls = _reproduce(tmp_path / "f2", 0, 1, "pretrain", "train", P_CPU_AUTOCAST="off", P_CHANNELS_LAST="off")
    assert run.returncode == 0, run.stderr
    assert all("--cpu-autocast off --channels-last off" in c for c in calls[:2])
    assert all("--cpu-autocast auto --channels-last on" in c for c in calls[2:])
    (tmp_path / "g").mkdir()
    run, calls = _reproduce(tmp_path / "g", 0, 1, "train", T_CPU_AUTOCAST="off", T_CHANNELS_LAST="off")
    assert run.returncode == 0 and all("--cpu-autocast off --channels-last off" in c for c in calls)

    # a stage 1 whose tumour head never fired is trained afresh (pretrain_retry): no stage 2 before one passes
    (tmp_path / "h").mkdir()
    run, calls = _reproduce(tmp_path / "h", 2, 3, "pretrain", only="nnUNetTrainerPhantom ")
    assert run.returncode == 0, run.stderr
    assert ["TumourFocus" in c for c in calls] == [False, False, False, True]
    assert "run 2 of 3 did not learn (pancreas=0.3 tumor=0.1 not reached" in run.stderr

    (tmp_path / "e").mkdir()  # the stage-2 remedy to try: its learning rate, and only stage 2's
    run, calls = _reproduce(tmp_path / "e", 0, 1, "pretrain", P2_LR="0.005")
    assert run.returncode == 0, run.stderr
    assert len(calls) == 2 and "--lr" not in calls[0] and "TumourFocus" in calls[1] and "--lr 0.005" in calls[1]


def test_reproduce_trains_each_task_for_its_shipped_schedule_unless_t_epochs_says_otherwise(tmp_path):
    """The shipped members' schedules (training/README.md): Task 1 60 epochs (since 2026-12-04; 84 for a day, then
    back, docs/results/experiments/task1_back60), Task 2 60 (since 2026-12-05); T_EPOCHS sets both."""
    for name, env, expected in (("a", {"TASKS": "1 2"}, ["60"] * 12),
                                ("b", {"TASKS": "1 2", "T_EPOCHS": "12"}, ["12"] * 12)):
        (tmp_path / name).mkdir()
        run, calls = _reproduce(tmp_path / name, 0, 1, "train", **env)
        assert run.returncode == 0, run.stderr
        assert [c.split("--epochs ")[1].split()[0] for c in calls] == expected
        assert [c.split("--dataset ")[1].split()[0] for c in calls] == ["901"] * 6 + ["902"] * 6


def _train_tiny(env: dict, *floors: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "training" / "train_specialist.py"), "--dataset", "901",
                           "--trainer", "nnUNetTrainerPhantom", "--plans", "nnUNetPlansTiny", "--fold", "0",
                           "--epochs", "2", "--iters", "2", "--val-iters", "1", "--skip-validation",
                           "--require-pseudo-dice", *floors], capture_output=True, text=True, timeout=600, env=env)


def test_a_run_is_judged_right_after_it_trains_and_a_run_stopped_before_its_check_is_finished_not_retrained(tmp_path):
    """The path the finished-run test does not take: real nnU-Net training from scratch, then the check on the
    pseudo Dice it logged (on 2026-12-03 that read an attribute nnU-Net 2.8's logger no longer has, and every
    run crashed after its last epoch)."""
    env = tiny_dataset(tmp_path)
    run = Path(env["nnUNet_results"]) / "Dataset901_PhantomT1" / TINY.name / "fold_0"

    ok = _train_tiny(env, "tumor=0")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "TIMING" in ok.stdout and json.loads((run / "phantom_timing.json").read_text())["device"] == "cpu"
    final = run / "checkpoint_final.pth"
    history = collapse.pseudo_dice_history(str(final))
    assert len(history) == 2 and all(len(epoch) == 2 for epoch in history)

    # stopped after its last epoch, before the check and the timing: finished from checkpoint_final, not retrained
    (run / "phantom_timing.json").unlink()
    weights = torch.load(final, map_location="cpu", weights_only=False)["network_weights"]
    again = _train_tiny(env, "tumor=0")
    assert again.returncode == 0, again.stderr[-3000:]
    log = "".join(p.read_text() for p in run.glob("training_log_*.txt"))
    assert "finishing the 2-epoch run" in log and (run / "phantom_timing.json").is_file()
    after = torch.load(final, map_location="cpu", weights_only=False)
    assert after["current_epoch"] == 2 and len(after["logging"]["dice_per_class_or_region"]) == 2
    assert all(torch.equal(weights[k], after["network_weights"][k]) for k in weights)

    # trained afresh and below its floor: judged at once, moved aside, exit 3
    shutil.rmtree(run)
    dead = _train_tiny(env, "pancreas=1")
    assert dead.returncode == collapse.COLLAPSED, dead.stderr[-3000:]
    assert "the run did not learn (pseudo Dice over the last 2 epochs: pancreas" in dead.stderr.strip().splitlines()[-1]
    assert not run.exists() and len(list(run.parent.glob("fold_0.collapsed-*"))) == 1


def test_epochs_without_pseudo_dice_are_left_out_and_none_at_all_never_passes():
    nan = float("nan")
    # nnU-Net's 0/0 for a class absent from the validation patches and not predicted
    assert collapse.collapse_reason([[0.3, 0.7], [nan, 0.7], [0.2, 0.7]], LABELS, {"tumor": 0.2}) is None
    assert collapse.collapse_reason([[0.0, 0.7], [nan, 0.7]], LABELS, {"tumor": 0.1}) == \
        "pseudo Dice over the last 2 epochs: tumor 0.000 < 0.1"
    assert collapse.collapse_reason([[nan, nan]] * 12, LABELS, {"tumor": 0.0, "pancreas": 0.3}) == \
        "pseudo Dice over the last 5 epochs: tumor not logged, pancreas not logged"


def test_fresh_heads_without_a_checkpoint_is_refused_before_training(tmp_path):
    env, run = _results_layout(tmp_path)
    r = subprocess.run([sys.executable, str(REPO / "training" / "train_specialist.py"), "--dataset", "901",
                        "--trainer", "nnUNetTrainerPhantom", "--plans", "nnUNetPlansTiny", "--fold", "0",
                        "--epochs", "2", "--fresh-heads"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "--fresh-heads needs --pretrained" in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("fresh_heads", [False, True])
def test_a_run_starts_from_every_weight_of_its_checkpoint_or_with_fresh_heads(fresh_heads):
    """The real trainer-written tiny checkpoint into the network its plans build: every weight, or (a stage-2
    retry, --fresh-heads) every weight but the segmentation heads, which keep the network's own initialisation."""
    from modelfactory import build_network

    plans = json.loads((TINY / "plans.json").read_text())
    network = build_network(plans, json.loads((TINY / "dataset.json").read_text()))
    own = {k: v.clone() for k, v in network.state_dict().items()}
    saved = torch.load(TINY / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                       weights_only=False)["network_weights"]
    line = train_specialist.load_initial_weights(network, str(TINY / "fold_0" / "checkpoint_final.pth"), fresh_heads)
    now = network.state_dict()
    heads = [k for k in now if ".seg_layers." in k]
    assert heads and len(heads) < len(now)
    for k, v in now.items():
        expected = own[k] if fresh_heads and k in heads else saved[k]
        assert torch.equal(v, expected), k
    assert any(not torch.equal(own[k], saved[k]) for k in heads)  # the two cases can be told apart
    assert ("except the segmentation heads" in line) == fresh_heads



def test_fresh_heads_load_to_the_cpu_and_refuse_a_checkpoint_of_another_network(tmp_path, monkeypatch):
    """A stage 2 saved on a GPU machine loads on this one (map_location, which nnU-Net's own fine-tuning loader
    lacks), and a checkpoint missing a feature weight or holding a foreign one is refused: the run stops there."""
    from modelfactory import build_network

    plans = json.loads((TINY / "plans.json").read_text())
    network = build_network(plans, json.loads((TINY / "dataset.json").read_text()))
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (seen.append(k.get("map_location")), real_load(*a, **k))[1])
    for fresh in (False, True):
        train_specialist.load_initial_weights(network, str(TINY / "fold_0" / "checkpoint_final.pth"), fresh)
    assert seen == ["cpu", "cpu"]

    ckpt = real_load(TINY / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    feature = next(k for k in ckpt["network_weights"] if ".seg_layers." not in k)
    kept = ckpt["network_weights"].pop(feature)
    torch.save(ckpt, tmp_path / "other.pth")
    with pytest.raises(RuntimeError, match="does not fit the network: missing") as refused:
        train_specialist.load_initial_weights(network, str(tmp_path / "other.pth"), True)
    assert f"'{feature}'" in str(refused.value)
    ckpt["network_weights"][feature] = kept
    ckpt["network_weights"]["decoder.foreign.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "foreign.pth")
    with pytest.raises(RuntimeError, match="unexpected \\['decoder.foreign.weight'\\]"):
        train_specialist.load_initial_weights(network, str(tmp_path / "foreign.pth"), True)
