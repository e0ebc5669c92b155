#!/usr/bin/env bash
# Package the image and the model weights for upload to grand-challenge.
#
#   ./export.sh [TAG] [WEIGHTS_DIR]     (defaults: panther-ensemble:latest, model_weights)
#
# Writes <tag>_<timestamp>.tar.gz (docker/podman save | gzip) and model.tar.gz (tar -czf ... -C WEIGHTS_DIR .),
# after checking: the image is linux/amd64 and runs as a non-root user; the model tarball unpacks into the
# layout every spec in resources/ expects (each member's folder, plans.json, dataset.json, fold checkpoints).
set -euo pipefail
cd "$(dirname "$0")"
TAG="${1:-panther-ensemble:latest}"
WEIGHTS="${2:-model_weights}"
OUT="${EXPORT_DIR:-.}"   # where the two tarballs go
source scripts/engine.sh  # ENGINE: docker where an engine answers, else podman; exits naming what to install
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
fail() { echo "export.sh: $*" >&2; exit 1; }

if ! "${ENGINE[@]}" image inspect "$TAG" >/dev/null 2>&1; then
  fail "no image $TAG in ${ENGINE[0]}'s storage: build it first with
  ./build.sh $TAG
or, where the CUDA base image cannot be pulled (no registry access), on the CPU stand-in base:
  BASE_IMAGE=\$(test/cpu-base/build.sh) ./build.sh $TAG"
fi
arch="$("${ENGINE[@]}" image inspect --format '{{.Architecture}}' "$TAG")"
user="$("${ENGINE[@]}" image inspect --format '{{.Config.User}}' "$TAG")"
[ "$arch" = amd64 ] || fail "image $TAG is $arch, the platform needs amd64"
case "$user" in ""|root|0|0:*|root:*) fail "image $TAG runs as root (user '$user'); the platform rejects it";; esac

stamp="$(date +%Y%m%d-%H%M%S)"
image_tar="$OUT/$(basename "$(echo "${TAG%%:*}" | tr '/' '_')")_${stamp}.tar.gz"
echo "saving $TAG -> $image_tar" >&2
"${ENGINE[@]}" save "$TAG" | gzip -1 > "$image_tar"

model_tar="$OUT/model.tar.gz"
echo "packing $WEIGHTS -> $model_tar" >&2
tar -czf "$model_tar" -C "$WEIGHTS" --exclude=.gitkeep .
check="$(mktemp -d)"
trap 'rm -rf "$check"' EXIT
tar -xzf "$model_tar" -C "$check"
"$PYTHON" - "$check" resources/*.json <<'PY' || fail "model.tar.gz does not hold what the specs need"
import sys
from pathlib import Path
sys.path.insert(0, "src")
from panther_ensemble.errors import InputError
from panther_ensemble.inference.members import check_member_files
from panther_ensemble.spec import load_spec
root = Path(sys.argv[1])
for spec_file in sys.argv[2:]:
    spec = load_spec(spec_file)
    for member in spec.members:
        try:
            check_member_files(member, root, spec)
        except InputError as exc:
            sys.exit(f"{spec_file}: member {member.name}: {exc}")
    print(f"model.tar.gz satisfies {spec_file} ({len(spec.members)} members)")
PY
du -h "$image_tar" "$model_tar" | sed 's/^/size: /'
echo "upload $image_tar as the algorithm image and $model_tar as its model; it unpacks into /opt/ml/model"
