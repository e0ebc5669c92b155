#!/usr/bin/env bash
# Install and configure podman the way these scripts use it (Debian/Ubuntu, as root; docs/CONTAINER.md):
#   - apt-get install podman, runc (podman runs with --runtime runc) and debootstrap (test/cpu-base/build.sh)
#   - default_ulimits = [] in containers.conf ($CONTAINERS_CONF, default /etc/containers/containers.conf):
#     podman's default asks for open-file and process limits above what some machines allow.
# The test suite runs this itself where it runs as root with apt-get and podman is missing.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "setup_podman.sh: run as root (sudo $0)" >&2
  exit 1
fi
missing=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup_podman.sh: apt-get install -y podman runc debootstrap (missing: ${missing[*]})"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi
conf="${CONTAINERS_CONF:-/etc/containers/containers.conf}"
mkdir -p "$(dirname "$conf")"
if [ -s "$conf" ] && [ -n "$(tail -c 1 "$conf")" ]; then echo >> "$conf"; fi  # a last line without newline
if ! grep -qE '^[[:space:]]*default_ulimits[[:space:]]*=' "$conf" 2>/dev/null; then
  if grep -qE '^[[:space:]]*\[containers\][[:space:]]*$' "$conf" 2>/dev/null; then
    sed -i -E '0,/^[[:space:]]*\[containers\][[:space:]]*$/s//[containers]\ndefault_ulimits = []/' "$conf"
  else
    printf '[containers]\ndefault_ulimits = []\n' >> "$conf"
  fi
  echo "setup_podman.sh: default_ulimits = [] in $conf"
fi
