"""bench/inference_split.py and bench/training_loader.py: their own logic (the spec one fold runs with, the epoch
clock read from nnU-Net's log) and the committed results against the figures they are built from. Their timings are
the benchmarks' (bench/README.md), not a test's."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import inference_allocator  # noqa: E402
import inference_split  # noqa: E402
import training_loader  # noqa: E402


@pytest.mark.parametrize("task,member", [(1, "default"), (2, "DA5"), (1, "iso")])
def test_one_fold_spec_is_predict_oof_s_spec_of_a_shipped_or_fitted_member(task, member):
    from panther_ensemble.spec import parse_spec

    spec = inference_split.one_fold_spec(task, member, 1)
    parsed = parse_spec(spec, "<bench>")
    (m,) = parsed.members
    assert m.folds == (1,) or list(m.folds) == [1]
    assert not m.mirroring and m.resampling == "fast" and parsed.decision.rule == "argmax"
    models = {x["name"]: x["model"] for x in json.loads((REPO / f"docs/results/fit_task{task}/base.json").read_text())["members"]}
    assert spec["members"][0]["model"] == models[member]
    assert (REPO / "model_weights" / models[member] / "fold_1").is_dir()


def test_epoch_ends_reads_nnunet_s_epoch_time_lines(tmp_path):
    log = tmp_path / "t.log"
    log.write_text("2026-12-07 08:59:15.549449: Epoch 0\n"
                   "2026-12-07 08:59:37.868684: Epoch time: 22.32 s\n"
                   "2026-12-07 08:59:37.868728: Yayy! New best EMA pseudo Dice: 0.61\n"
                   "2026-12-07 09:00:00.812877: Epoch time: 22.36 s\n"
                   "something else: Epoch time: 1 s\n")
    ends = training_loader.epoch_ends(log)
    assert len(ends) == 2 and ends[1] - ends[0] == pytest.approx(22.944193, abs=1e-5)


@pytest.mark.parametrize("name,layouts", [("inference-split-task1.json", ("threads", "processes")),
                                          ("inference-split-task2.json", ("threads", "processes")),
                                          ("training-loader.json", ("workers", "in_process")),
                                          ("training-loader-fresh.json", ("workers", "in_process"))])
def test_committed_results_are_the_ratios_of_their_own_times(name, layouts):
    doc = json.loads((REPO / "bench" / "results" / name).read_text())
    slow, fast = layouts
    key = "wall_s" if slow == "threads" else "epoch_s"
    for r in doc["rounds"]:
        assert r["speedup"] == pytest.approx(r[slow][key] / r[fast][key], abs=1e-3)
        if slow == "threads":
            assert r[slow]["cases"] == r[fast]["cases"] and r["masks_equal"]
    assert doc["speedup_median"] == pytest.approx(statistics.median(r["speedup"] for r in doc["rounds"]), abs=1e-3)
    assert doc["speedup_median"] > 1  # what reproduce.sh's defaults rest on (training/reproduce.sh step_oof, T_N_PROC_DA)


def test_committed_progress_plot_result_counts_the_drawings_of_each_cadence():
    doc = json.loads((REPO / "bench" / "results" / "progress-plot.json").read_text())
    median = doc["cpu_s_per_drawing_median"]
    assert median == pytest.approx(statistics.median(doc["cpu_s_per_drawing"]), abs=1e-3)
    n = doc["epochs"]
    assert doc["drawings_per_run"] == {"every_epoch": n, "plot_every_5": len([e for e in range(n) if (e + 1) % 5 == 0 or e == n - 1])}
    for cadence, drawings in doc["drawings_per_run"].items():
        assert doc["cpu_s_per_run"][cadence] == pytest.approx(median * drawings, abs=0.1)


def test_training_env_keeps_freed_memory_unless_the_caller_chose(tmp_path):
    """training/env.sh's allocator settings (bench/results/training-allocator.json) reach the processes it starts,
    and a caller's own value stays."""
    import os
    import subprocess

    script = (f"source {REPO}/training/env.sh; python3 -c 'import os; print(os.environ[\"MALLOC_TRIM_THRESHOLD_\"], "
              "os.environ[\"MALLOC_TOP_PAD_\"], os.environ[\"MALLOC_MMAP_THRESHOLD_\"])'")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, check=True).stdout.split()
    doc = json.loads((REPO / "bench" / "results" / "training-allocator.json").read_text())
    kept = doc["layouts"]["in_process+glibc_kept"]
    assert out == [kept["MALLOC_TRIM_THRESHOLD_"], kept["MALLOC_TOP_PAD_"], kept["MALLOC_MMAP_THRESHOLD_"]]
    mine = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                          env=dict(env, MALLOC_TRIM_THRESHOLD_="123")).stdout.split()
    assert mine[0] == "123"
    # bench/inference_allocator.py measures the container's job with what env.sh exports, read from the file
    assert inference_allocator.kept_settings() == dict(zip(
        ["MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_"], out))


def test_dockerfile_sets_the_allocator_settings_of_training_env_sh():
    """The image runs the job with the settings bench/inference_allocator.py measured (training/env.sh's)."""
    import re

    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    env_lines = [ln for ln in text.splitlines() if ln.startswith("ENV ") and "MALLOC_" in ln]
    assert len(env_lines) == 1
    found = dict(re.findall(r"(MALLOC_[A-Z_]+)=(\S+)", env_lines[0]))
    assert found == inference_allocator.kept_settings()


def test_committed_inference_allocator_results_are_their_own_ratios():
    for task in (1, 2):
        doc = json.loads((REPO / "bench" / "results" / f"inference-allocator-task{task}.json").read_text())
        assert doc["masks_identical"] and doc["layouts"]["glibc_kept"] == inference_allocator.kept_settings()
        for r in doc["rounds"]:
            assert r["speedup"] == pytest.approx(r["glibc_default"]["wall_s"] / r["glibc_kept"]["wall_s"], abs=1e-3)
            assert r["peak_rss_ratio"] == pytest.approx(
                r["glibc_kept"]["peak_rss_mib"] / r["glibc_default"]["peak_rss_mib"], abs=1e-3)
        assert doc["speedup_median"] == statistics.median(r["speedup"] for r in doc["rounds"])
        assert doc["speedup_median"] > 1  # what the Dockerfile's ENV rests on
        firsts = [r["order"][0] for r in doc["rounds"]]  # no layout always ran first
        assert len(doc["rounds"]) >= 4 and all(a != b for a, b in zip(firsts, firsts[1:]))


def test_inference_allocator_refuses_an_env_sh_without_its_three_settings(tmp_path, monkeypatch):
    (tmp_path / "env.sh").write_text("export MALLOC_TOP_PAD_=${MALLOC_TOP_PAD_:-1}\n")
    monkeypatch.setattr(inference_allocator, "ENV_SH", tmp_path / "env.sh")
    with pytest.raises(SystemExit, match="three MALLOC_"):
        inference_allocator.kept_settings()


def test_committed_allocator_result_is_the_ratio_of_its_own_times_and_faults():
    doc = json.loads((REPO / "bench" / "results" / "training-allocator.json").read_text())
    for r in doc["rounds"]:
        ref = r["in_process"]["epoch_s"]
        for x, v in r["speedup_vs_first"].items():
            assert v == pytest.approx(ref / r[x]["epoch_s"], abs=1e-3)
        assert r["in_process+glibc_kept"]["minor_page_faults"] * 5 < r["in_process"]["minor_page_faults"]
    med = doc["speedup_vs_first_median"]
    assert med["in_process+glibc_kept"] > 1 > med["in_process+jemalloc"]  # what training/env.sh rests on
