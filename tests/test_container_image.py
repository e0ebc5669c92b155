"""The real Dockerfile, built and run the way grand-challenge runs it (test/run.sh), and exported.

The engine and base image come from the session fixture container_env (tests/suite_plugin.py): it installs
podman as root with apt-get, saying so, or skips these tests naming what is missing and how to get it."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO

pytestmark = pytest.mark.container


def test_image_builds_and_runs_sample_cases_like_the_platform(container_env):
    env = {**os.environ, **container_env.env, "PYTHON": sys.executable}
    proc = subprocess.run([REPO / "test" / "run.sh", "panther-ensemble:test"], capture_output=True, text=True,
                          env=env, timeout=3600)
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    cases = [line for line in proc.stdout.splitlines() if line.startswith("OK: ")]
    assert len(cases) == len(list((REPO / "test" / "input").iterdir())) >= 2
    assert "bad input: exit non-zero, no output; error:" in proc.stdout
    assert "all cases passed" in proc.stdout


def test_export_packs_image_and_weights(container_env, tmp_path):
    # runs after the build above (same module); export.sh refuses images that are not amd64 or run as root
    env = {**os.environ, **container_env.env, "PYTHON": sys.executable, "EXPORT_DIR": str(tmp_path)}
    proc = subprocess.run([REPO / "export.sh", "panther-ensemble:test"], capture_output=True, text=True, env=env,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    images = list(tmp_path.glob("panther-ensemble_*.tar.gz"))
    assert len(images) == 1 and images[0].stat().st_size > 100e6
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        names = tar.getnames()
    assert all(n == "." or n.startswith("./") for n in names)  # no leading folder: unpacks into /opt/ml/model
    assert any(n.endswith("fold_0/checkpoint_final.pth") for n in names)
    assert "satisfies resources/task1.json" in proc.stdout and "satisfies resources/task2.json" in proc.stdout
    print(proc.stdout)
