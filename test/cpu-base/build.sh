#!/usr/bin/env bash
# Build a CPU stand-in for the pytorch/pytorch base image where no image registry is reachable:
# Debian bookworm (Python 3.11) from debootstrap + a venv with the CPU build of torch on PATH as `python`.
# Prints the image name. Reuses the image when it already exists (CI machines keep podman's storage).
#
#   test/cpu-base/build.sh [--name]       --name: only print the image name (nothing is built)
# Needs podman, runc and (for the first build) debootstrap, as root: scripts/setup_podman.sh installs them.
set -euo pipefail
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.28.0}"  # the pair pytorch/pytorch ships (timm needs torchvision)
IMAGE="localhost/panther-cpu-base:bookworm-torch${TORCH_VERSION}-tv${TORCHVISION_VERSION}"
here="$(cd "$(dirname "$0")" && pwd)"
PODMAN=(podman --runtime runc)
if [ "${1:-}" = --name ]; then
  echo "$IMAGE"
  exit 0
fi
need() {  # need TOOL...: exit naming the missing ones and the command that installs them
  local tool missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "test/cpu-base/build.sh: ${missing[*]} not installed; as root on Debian/Ubuntu: scripts/setup_podman.sh" \
      "(apt-get install -y podman runc debootstrap)" >&2
    exit 1
  fi
}
need podman runc

if "${PODMAN[@]}" image exists "$IMAGE" 2>/dev/null; then
  echo "$IMAGE"
  exit 0
fi
ROOTFS_IMAGE="localhost/panther-debian-rootfs:bookworm"
if ! "${PODMAN[@]}" image exists "$ROOTFS_IMAGE" 2>/dev/null; then
  need debootstrap
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" >&2
  tar -C "$rootfs" -c . | "${PODMAN[@]}" import - "$ROOTFS_IMAGE" >&2
fi
args=(--network host --build-arg "ROOTFS_IMAGE=$ROOTFS_IMAGE" --build-arg "TORCH_VERSION=$TORCH_VERSION"
      --build-arg "TORCHVISION_VERSION=$TORCHVISION_VERSION")
source "$here/../../scripts/pip_build_args.sh"
"${PODMAN[@]}" build "${args[@]}" "${PIP_BUILD_ARGS[@]}" -t "$IMAGE" -f "$here/Containerfile" "$here" >&2
echo "$IMAGE"
