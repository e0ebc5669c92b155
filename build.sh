#!/usr/bin/env bash
# Build the algorithm image.   ./build.sh [TAG]        (default tag: panther-ensemble:latest)
#
# Uses docker when a docker engine answers, podman otherwise (with the runc runtime, see
# docs/CONTAINER.md; scripts/engine.sh says what to install when neither is there). Environment:
#   BASE_IMAGE   base image (default: the Dockerfile's pytorch/pytorch CUDA runtime tag)
#   PIP_CERT, PIP_FIND_LINKS   passed to pip during the build when set (or found in pip's config),
#                their folders mounted read-only; never baked into the image
set -euo pipefail
cd "$(dirname "$0")"
TAG="${1:-panther-ensemble:latest}"

source scripts/engine.sh  # ENGINE: docker where an engine answers, else podman
args=(--platform linux/amd64 --network host -t "$TAG")
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
source scripts/pip_build_args.sh
if [ "${ENGINE[0]}" = docker ]; then
  # docker build has no --volume: pass the settings only (works where pip reaches its index directly)
  for ((i = 0; i < ${#PIP_BUILD_ARGS[@]}; i += 2)); do
    [ "${PIP_BUILD_ARGS[i]}" = --build-arg ] && args+=(--build-arg "${PIP_BUILD_ARGS[i + 1]}")
  done
else
  args+=("${PIP_BUILD_ARGS[@]}")
fi
echo "building $TAG with ${ENGINE[*]}${BASE_IMAGE:+ on $BASE_IMAGE}" >&2
"${ENGINE[@]}" build "${args[@]}" .
