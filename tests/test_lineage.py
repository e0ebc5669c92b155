"""A run that started from another network than its --pretrained is today is moved aside and trained afresh, never
resumed or kept (training/lineage.py): a resumed rebuild whose pre-training was trained again (a stricter floor,
docs/results/experiments/pretrain_retry/) rebuilds what was built on the old one. Real nnU-Net training on the tiny
dataset, real checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tinydata import TINY, tiny_dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training"))
try:
    import lineage
finally:
    sys.path.remove(str(REPO / "training"))


def _train(env: dict, pretrained: Path, epochs: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "training" / "train_specialist.py"), "--dataset", "901",
                           "--trainer", "nnUNetTrainerPhantom", "--plans", "nnUNetPlansTiny", "--fold", "0",
                           "--epochs", str(epochs), "--iters", "1", "--val-iters", "1", "--skip-validation",
                           "--pretrained", str(pretrained)], capture_output=True, text=True, timeout=600, env=env)


def _network(path: Path, scale: float) -> None:
    """A checkpoint of the tiny network: the shipped test run's weights times `scale` (another pre-training)."""
    ckpt = torch.load(TINY / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    ckpt["network_weights"] = {k: v * scale if v.is_floating_point() else v for k, v in ckpt["network_weights"].items()}
    torch.save(ckpt, path)


def test_a_run_from_an_older_network_is_moved_aside_and_trained_afresh(tmp_path):
    env = tiny_dataset(tmp_path)
    run = Path(env["nnUNet_results"]) / "Dataset901_PhantomT1" / TINY.name / "fold_0"
    pre = tmp_path / "pretrained.pth"
    _network(pre, 1.0)

    first = _train(env, pre)
    assert first.returncode == 0, first.stderr[-3000:]
    kept = json.loads((run / lineage.RECORD).read_text())
    assert kept == {"pretrained": str(pre), "sha256": lineage.sha256(str(pre))}

    same = _train(env, pre)  # the same network: the finished run is kept
    assert same.returncode == 0 and "nothing to do" in same.stdout, same.stderr[-3000:]
    assert not list(run.parent.glob("fold_0.stale-*"))

    # the same bytes with newer times (a copy, a touch) and a run stopped mid-way: resumed, not moved aside
    os.utime(pre, (time.time() + 100,) * 2)
    (run / "checkpoint_final.pth").rename(run / "checkpoint_latest.pth")
    (run / "phantom_timing.json").unlink()
    resumed = _train(env, pre)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in "".join(p.read_text() for p in run.glob("training_log_*.txt"))
    assert not list(run.parent.glob("fold_0.stale-*")) and json.loads((run / lineage.RECORD).read_text()) == kept

    _network(pre, 1.01)  # pre-trained again, same path: the run built on the old one goes, a new one is trained
    again = _train(env, pre)
    assert again.returncode == 0, again.stderr[-3000:]
    moved = list(run.parent.glob("fold_0.stale-*"))
    assert len(moved) == 1 and (moved[0] / "checkpoint_final.pth").is_file()
    line = [x for x in again.stderr.splitlines() if "train_specialist:" in x]
    assert line == [f"train_specialist: {run}: it started from another {pre} (sha256 {kept['sha256'][:12]}, now "
                    f"{lineage.sha256(str(pre))[:12]}); moved to {moved[0]}, training afresh"]
    assert json.loads((run / lineage.RECORD).read_text())["sha256"] == lineage.sha256(str(pre))
    assert "TIMING" in again.stdout and (run / "checkpoint_final.pth").is_file()

    gone = _train(env, tmp_path / "gone.pth")  # the network is missing: one line, exit 2, the run left as it is
    assert gone.returncode == 2 and gone.stderr.strip().splitlines()[-1].endswith(
        f"--pretrained {tmp_path}/gone.pth: no such file (the network the run in {run} starts or started from)")
    assert (run / "checkpoint_final.pth").is_file() and len(list(run.parent.glob("fold_0.stale-*"))) == 1


def test_a_run_without_a_record_is_judged_once_by_time_and_a_seeded_run_is_never_stale(tmp_path):
    run = tmp_path / "fold_0"
    run.mkdir()
    pre = tmp_path / "pretrained.pth"
    pre.write_bytes(b"network")
    (run / "checkpoint_latest.pth").write_bytes(b"run")
    os.utime(pre, (2_000_000, 2_000_000))
    os.utime(run / "checkpoint_latest.pth", (1_000_000, 1_000_000))
    assert lineage.stale_reason(str(run), str(pre)) == \
        f"its checkpoints are older than {pre}, so it cannot have started from it"
    (run / "checkpoint_final.pth").write_bytes(b"run")  # written after the network: may have started from it
    assert lineage.stale_reason(str(run), str(pre)) is None
    # judged once: the run gets its record, and a later touch of the network (same bytes) does not move it
    assert json.loads((run / lineage.RECORD).read_text()) == {"pretrained": str(pre), "sha256": lineage.sha256(str(pre)),
                                                              "judged_by": "time"}
    os.utime(pre, (time.time() + 100,) * 2)
    assert lineage.stale_reason(str(run), str(pre)) is None
    (run / lineage.RECORD).write_text('{"sha2')  # unreadable: judged by time again
    assert lineage.stale_reason(str(run), str(pre)).startswith("its checkpoints are older than")
    pre.write_bytes(b"another network")
    (tmp_path / "old.pth").write_bytes(b"network")
    lineage.record(str(run), str(tmp_path / "old.pth"))  # a readable record of the old network: judged by content
    assert lineage.stale_reason(str(run), str(pre)).startswith(f"it started from another {pre}")
    lineage.forget(str(run))  # a run from scratch keeps no record
    assert not (run / lineage.RECORD).exists()
    (run / "checkpoint_final.pth").unlink()

    assert lineage.stale_reason(str(run), None) is None  # a run from scratch has no network to be stale against
    (run / "seeded_from.json").write_text("{}")  # its first weights are a shipped member's, not the network's
    assert lineage.stale_reason(str(run), str(pre)) is None
    assert lineage.stale_reason(str(tmp_path / "none"), str(pre)) is None  # no run, nothing to judge
    with pytest.raises(lineage.LineageError, match=f"--pretrained {tmp_path}/gone.pth: no such file"):
        lineage.stale_reason(str(tmp_path / "none"), str(tmp_path / "gone.pth"))
    assert lineage.stale_reason(str(run), str(tmp_path / "gone.pth")) is None  # seeded: the network is not needed
