"""A PATH without some programs, for tests that play a machine where they are not installed."""

from __future__ import annotations

import os
from pathlib import Path

CONTAINER_TOOLS = ("docker", "podman", "runc", "crun", "debootstrap", "apt-get", "apt")


def path_without(folder: Path, hidden=CONTAINER_TOOLS) -> str:
    """A folder of links to every program on the current PATH except `hidden`; returns it as a PATH value."""
    folder.mkdir(parents=True, exist_ok=True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.name in hidden or (folder / entry.name).exists() or (folder / entry.name).is_symlink():
                continue
            if entry.is_file() and os.access(entry.path, os.X_OK):
                (folder / entry.name).symlink_to(entry.path)
    return str(folder)


def write_script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path
