"""How the suite treats tests that need more than a CPU and Python: GPU, benchmarks, a container engine.

Imported by conftest.py (hooks and fixture), and loaded alone with `-p suite_plugin` by tests/test_suite_plugin.py.

- `cuda` tests are skipped, with the reason, where torch sees no GPU, whatever `-m` a user passes.
- `benchmark` tests are skipped, with the reason, unless `--run-benchmarks` or PANTHER_RUN_BENCHMARKS=1.
- `container_env` (session) is what the container tests use: docker where a docker engine answers, else podman.
  Where podman (or runc, or debootstrap for the CPU base image) is missing, it installs them with
  scripts/setup_podman.sh when the suite runs as root with apt-get (and says so), and skips the container tests
  with one reason naming what is missing and the command that installs it everywhere else. Only tests that
  request it pay for it: `-m "not container"` never installs or builds anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH_ENV = "PANTHER_RUN_BENCHMARKS"
SETUP_PODMAN = "scripts/setup_podman.sh"
INSTALL_HINT = ("install them with `sudo scripts/setup_podman.sh` (= apt-get install -y podman runc debootstrap, "
                "plus default_ulimits = [] in containers.conf); as root with apt-get the suite does this itself. "
                "Or deselect: -m 'not container'")


def pytest_addoption(parser):
    parser.addoption("--run-benchmarks", action="store_true", default=False,
                     help=f"run the tests marked benchmark (long timing runs; or set {BENCH_ENV}=1)")


def pytest_collection_modifyitems(config, items):
    cuda = [item for item in items if item.get_closest_marker("cuda")]
    if cuda:
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine "
                                           "(on a GPU machine these run, e.g. pytest -m cuda)")
            for item in cuda:
                item.add_marker(skip)
    if not (config.getoption("--run-benchmarks") or os.environ.get(BENCH_ENV) == "1"):
        skip = pytest.mark.skip(reason=f"benchmark (long timing run): opt in with --run-benchmarks or {BENCH_ENV}=1, "
                                       "e.g. pytest -m benchmark --run-benchmarks")
        for item in items:
            if item.get_closest_marker("benchmark"):
                item.add_marker(skip)


@dataclass
class ContainerEnv:
    engine: str                       # "docker" or "podman"
    base_image: str | None            # None: the Dockerfile's default base (pulled by the engine)
    env: dict[str, str] = field(default_factory=dict)  # for build.sh, test/run.sh, export.sh


def say(config, message: str) -> None:
    """A line on the terminal now, even while pytest captures output (like a live log line)."""
    line = f"[container tests] {message}"
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        print(line, flush=True)
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(line)


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def podman_image_exists(name: str) -> bool:
    return subprocess.run(["podman", "--runtime", "runc", "image", "exists", name], capture_output=True,
                          timeout=120).returncode == 0


def missing_for_podman() -> list[str]:
    """What the podman path lacks: podman and runc always, debootstrap while the CPU base image must be made."""
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    needs_base = not os.environ.get("BASE_IMAGE")
    if needs_base and not missing:
        name = subprocess.run([REPO / "test" / "cpu-base" / "build.sh", "--name"], capture_output=True, text=True,
                              check=True).stdout.strip()
        needs_base = not (podman_image_exists(name) or podman_image_exists("localhost/panther-debian-rootfs:bookworm"))
    if needs_base and shutil.which("debootstrap") is None:
        missing.append("debootstrap")
    return missing


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _run(config, what: str, argv: list, timeout: int) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}",
                    pytrace=False)
    return proc.stdout


@pytest.fixture(scope="session")
def container_env(request) -> ContainerEnv:
    config = request.config
    base = os.environ.get("BASE_IMAGE") or None
    if docker_answers():
        say(config, f"docker engine found; base image: {base or 'the Dockerfile default (pulled)'}")
        return ContainerEnv("docker", base, {"BASE_IMAGE": base} if base else {})
    missing = missing_for_podman()
    if missing:
        if not can_install():
            pytest.skip(f"container tests need {', '.join(missing)} (not found, and no docker engine answers): "
                        + INSTALL_HINT)
        say(config, f"{', '.join(missing)} not found: installing podman, runc and debootstrap with {SETUP_PODMAN} "
                    "(apt-get, as this suite runs as root; -m 'not container' skips this)")
        out = _run(config, SETUP_PODMAN, [REPO / SETUP_PODMAN], timeout=1800)
        for line in out.splitlines():
            say(config, line)
        still = [tool for tool in missing if shutil.which(tool) is None]
        if still:
            pytest.fail(f"{SETUP_PODMAN} ran but {', '.join(still)} is still not on PATH", pytrace=False)
    if base is None:
        say(config, "building the CPU stand-in base image with test/cpu-base/build.sh (debootstrap + torch CPU; "
                    "minutes the first time, reused from podman's storage after)")
        base = _run(config, "test/cpu-base/build.sh", [REPO / "test" / "cpu-base" / "build.sh"],
                    timeout=1800).strip().splitlines()[-1]
    say(config, f"podman (--runtime runc); base image: {base}")
    return ContainerEnv("podman", base, {"BASE_IMAGE": base})
