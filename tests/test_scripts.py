"""The container scripts' messages on a machine that lacks something, and CI's entry point.

Each runs the real script with a PATH that hides docker, podman and apt-get (tests/helpers_path.py), or with a
stand-in podman that knows no image: what they print must be what gets a first-time user further.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

from conftest import REPO
from helpers_path import path_without, write_script


def run(argv, path: str, **env):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={"PATH": path, "HOME": "/tmp", **env})


@pytest.fixture
def bare_path(tmp_path):
    return path_without(tmp_path / "bin")


@pytest.mark.parametrize("script", [["./build.sh", "my/tag:1"], ["./export.sh", "my/tag:1"],
                                    ["test/run.sh", "--no-build", "my/tag:1"]])
def test_without_any_engine_the_scripts_say_what_to_install(script, bare_path):
    proc = run(script, bare_path)
    assert proc.returncode == 1
    assert "no container engine: no docker engine answers and podman is not installed" in proc.stderr
    assert "scripts/setup_podman.sh" in proc.stderr and "apt-get install -y podman runc" in proc.stderr
    assert "command not found" not in proc.stderr


def test_export_without_the_image_names_the_build_command_that_works(tmp_path, bare_path):
    fake = tmp_path / "fake"
    log = tmp_path / "podman.log"
    write_script(fake / "podman", f'#!/bin/sh\necho "$*" >> {log}\necho "Error: {{image}} not known" >&2\nexit 125\n')
    write_script(fake / "runc", "#!/bin/sh\nexit 0\n")
    proc = run(["./export.sh", "my/tag:1"], f"{fake}:{bare_path}")
    assert proc.returncode == 1
    assert "no image my/tag:1 in podman's storage" in proc.stderr
    lines = [line.strip() for line in proc.stderr.splitlines()]
    assert "./build.sh my/tag:1" in lines  # the tag asked for, not build.sh's default tag
    assert "BASE_IMAGE=$(test/cpu-base/build.sh) ./build.sh my/tag:1" in lines
    assert "--runtime runc image inspect my/tag:1" in log.read_text()


def test_cpu_base_build_names_what_is_missing(bare_path):
    proc = run(["test/cpu-base/build.sh"], bare_path)
    assert proc.returncode == 1
    assert "podman runc not installed" in proc.stderr and "scripts/setup_podman.sh" in proc.stderr
    name = run(["test/cpu-base/build.sh", "--name"], bare_path)
    assert name.returncode == 0 and name.stdout.startswith("localhost/panther-cpu-base:bookworm-torch")


def test_setup_podman_refuses_without_root():
    argv = [REPO / "scripts" / "setup_podman.sh"]
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]  # as nobody
    proc = run(argv, os.environ["PATH"])
    assert proc.returncode == 1 and "run as root" in proc.stderr


def readme_command(pattern: str) -> str:
    """The one command line of the README's bash blocks that matches `pattern`."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines() if re.search(pattern, line)]
    assert len(lines) == 1, lines
    return lines[0]


def test_ci_runs_exactly_the_readme_test_command_after_the_readme_setup():
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    test_command = readme_command(r"-m pytest")
    assert test_command == ".venv/bin/python -m pytest"
    assert ci.count(test_command) == 1
    # the README's setup (venv, requirements, editable package), before the test command
    setup = readme_command(r"python3 -m venv \.venv").split(" && ")[:3]
    assert setup == ["python3 -m venv .venv", ".venv/bin/pip install -r requirements.txt",
                     ".venv/bin/pip install --no-deps -e ."]
    at = ci.index(test_command)
    before = [words(line) for line in ci[:at] if line and not line.startswith("#")]
    for step in setup:
        assert words(step) in before, step


def words(line: str) -> list[str]:
    return [w for w in shlex.split(line) if w != "-q"]  # quiet or not, the same command
