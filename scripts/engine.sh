# shellcheck shell=bash
# Sourced by build.sh, test/run.sh and export.sh: sets ENGINE to `docker` where a docker engine answers,
# else to `podman --runtime runc` (crun refuses the cgroup layout of some machines, docs/CONTAINER.md).
# Neither there: says what to install and exits 1.
# shellcheck disable=SC2034  # ENGINE is this file's output: the scripts that source it use it
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ENGINE=(docker)
elif command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1; then
  ENGINE=(podman --runtime runc)
else
  if command -v podman >/dev/null 2>&1; then _missing="runc (podman runs with --runtime runc)"; else _missing="podman"; fi
  echo "$(basename "$0"): no container engine: no docker engine answers and $_missing is not installed." >&2
  echo "  Install podman and runc (Debian/Ubuntu, as root): scripts/setup_podman.sh" >&2
  echo "  (= apt-get install -y podman runc debootstrap, and default_ulimits = [] in containers.conf)," >&2
  echo "  or start a docker engine." >&2
  exit 1
fi
