"""The suite's own rules (tests/suite_plugin.py), checked by running pytest on a tiny test file.

- cuda tests are skipped with a reason on a CPU machine whatever -m the user passes (never run and failed);
- benchmark tests are skipped with a reason unless --run-benchmarks or PANTHER_RUN_BENCHMARKS=1;
- without podman (and not root with apt-get) the container tests skip with ONE reason naming what is missing and
  the command that gets it; `-m "not container"` never touches the container setup;
- as root with apt-get, the setup installs podman, runc and debootstrap (here a stand-in apt-get), writes
  default_ulimits = [] into containers.conf, builds the CPU base image, and says so.
"""

from __future__ import annotations

import os
import re

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

import conftest
import suite_plugin
from conftest import REPO
from helpers_path import path_without, write_script

TESTS = REPO / "tests"

TINY = '''
import pytest


@pytest.mark.cuda
def test_gpu():
    import torch
    assert torch.cuda.is_available()


@pytest.mark.benchmark
def test_bench():
    pass


@pytest.mark.container
def test_box(container_env):
    assert container_env.engine == "podman"
    assert container_env.base_image.startswith("localhost/panther-cpu-base:")


@pytest.mark.container
def test_box_again(container_env):
    pass


def test_plain():
    pass
'''


@pytest.fixture
def tiny(pytester, monkeypatch, tmp_path):
    """pytester with the repo's pytest configuration, the tiny file, no GPU and no container tools on PATH."""
    pytester.makepyprojecttoml((REPO / "pyproject.toml").read_text())
    (pytester.mkdir("tests") / "test_tiny.py").write_text(TINY)  # where the repo's testpaths looks
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(REPO / "src"),
                                                      os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # torch.cuda.is_available() is False even on a GPU machine
    monkeypatch.delenv(suite_plugin.BENCH_ENV, raising=False)
    monkeypatch.delenv("BASE_IMAGE", raising=False)
    monkeypatch.setenv("PATH", path_without(tmp_path / "bin"))

    def run(*args):
        result = pytester.runpytest_subprocess("-p", "suite_plugin", "-p", "no:cacheprovider", *args)
        result.text = result.stdout.str() + result.stderr.str()
        return result

    return run


def skip_lines(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("SKIPPED") and word in line]


@pytest.mark.parametrize("args", [(), ("-m", "not container"), ("-m", "cuda or benchmark"),
                                  ("-m", "not slow"), ("-k", "gpu or bench")])
def test_cuda_and_benchmark_skip_with_a_reason_whatever_the_options(tiny, args):
    result = tiny(*args)
    assert result.ret == 0, result.text
    outcomes = result.parseoutcomes()
    assert "failed" not in outcomes and "error" not in outcomes and "errors" not in outcomes
    assert len(skip_lines(result.text, "needs a CUDA GPU: torch.cuda.is_available() is False")) == 1
    assert len(skip_lines(result.text, "--run-benchmarks or PANTHER_RUN_BENCHMARKS=1")) == 1


def test_benchmarks_run_when_asked(tiny, monkeypatch):
    result = tiny("-m", "benchmark", "--run-benchmarks")
    result.assert_outcomes(passed=1, deselected=4)
    monkeypatch.setenv(suite_plugin.BENCH_ENV, "1")
    result = tiny("-m", "benchmark")
    result.assert_outcomes(passed=1, deselected=4)


def test_container_tests_skip_with_one_reason_naming_the_tool_and_the_command(tiny):
    result = tiny()
    result.assert_outcomes(passed=1, skipped=4)
    lines = skip_lines(result.text, "container tests need")
    reasons = {line.split(": ", 1)[1] for line in lines}
    assert len(lines) == 2 and len(reasons) == 1, result.text  # both container tests, one reason
    reason = reasons.pop()
    assert reason.startswith("container tests need podman, runc, debootstrap (not found")
    assert "sudo scripts/setup_podman.sh" in reason and "apt-get install -y podman runc debootstrap" in reason
    assert "warning" not in result.text.lower()


def test_not_container_never_touches_the_container_setup(tiny):
    result = tiny("-m", "not container")
    result.assert_outcomes(passed=1, skipped=2, deselected=2)
    assert "[container tests]" not in result.text and "container tests need" not in result.text


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    """An apt-get that logs its calls and, on install, puts stand-ins for podman, runc and debootstrap on PATH."""
    tools, log = tmp_path / "apt-bin", tmp_path / "calls.log"
    log.touch()
    write_script(tools / "apt-get", f'''#!/usr/bin/env bash
echo "apt-get $*" >> {log}
if [[ " $* " == *" install "* ]]; then
  for tool in podman runc debootstrap; do
    printf '#!/bin/sh\\necho "%s $*" >> {log}\\nexit 0\\n' "$tool" > {tools}/$tool
    chmod +x {tools}/$tool
  done
fi
''')
    conf = tmp_path / "containers.conf"
    conf.write_text("[engine]\nevents_logger = \"file\"\n\n[containers]\nlog_size_max = -1\n")
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))
    return tools, log, conf


@pytest.mark.skipif(os.geteuid() != 0, reason="the suite installs podman only when it runs as root")
def test_as_root_with_apt_the_setup_installs_configures_builds_and_says_so(tiny, fake_apt, monkeypatch):
    tools, log, conf = fake_apt
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")

    result = tiny("-m", "not container")  # the tests that do not need it never pay for it
    assert log.read_text() == "" and "[container tests]" not in result.text

    result = tiny()
    result.assert_outcomes(passed=3, skipped=2)
    calls = log.read_text()
    assert "apt-get update" in calls and "apt-get install -y -qq podman runc debootstrap" in calls
    said = [line for line in result.text.splitlines() if line.startswith("[container tests]")]
    assert any("podman, runc, debootstrap not found: installing podman, runc and debootstrap with "
               "scripts/setup_podman.sh" in line for line in said), result.text
    assert any(f"default_ulimits = [] in {conf}" in line for line in said)
    assert any("building the CPU stand-in base image with test/cpu-base/build.sh" in line for line in said)
    settings = tomllib.loads(conf.read_text())  # still valid TOML: the key went into the existing table
    assert settings["containers"] == {"default_ulimits": [], "log_size_max": -1}
    assert "podman --runtime runc image exists localhost/panther-cpu-base:" in calls  # the real cpu-base script ran


def test_the_real_suite_uses_these_hooks():
    assert conftest.pytest_collection_modifyitems is suite_plugin.pytest_collection_modifyitems
    assert conftest.pytest_addoption is suite_plugin.pytest_addoption
    assert conftest.container_env is suite_plugin.container_env
    addopts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert not re.search(r"(^|\s)-m\b", addopts), "a -m in addopts is replaced by the user's -m: skip instead"
