#!/usr/bin/env bash
# Run the image the way grand-challenge runs it, on every sample case in test/input/<interface>/:
# no network, /input read-only, an empty writable /tmp, the weights read-only at /opt/ml/model, /output
# writable, the image's own non-root user, a read-only root filesystem, --gpus all only where a GPU exists.
# Then check the output (test/check_output.py) and a bad input (non-zero exit, no mask).
#
#   test/run.sh [--no-build] [TAG]       environment: BASE_IMAGE (passed to build.sh), PYTHON (checker)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=1
if [ "${1:-}" = "--no-build" ]; then BUILD=0; shift; fi
TAG="${1:-panther-ensemble:test}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"

source scripts/engine.sh  # ENGINE: docker where an engine answers, else podman
[ "$BUILD" = 1 ] && ./build.sh "$TAG"

GPU=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GPU=(--gpus all); fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

run_case() {  # run_case INPUT_DIR OUTPUT_DIR
  mkdir -p "$2"
  chmod 777 "$2"  # the image's user is not the host's
  "${ENGINE[@]}" run --rm --network none --read-only "${GPU[@]}" \
    --tmpfs /tmp:rw,size=4g,mode=1777 \
    --volume "$(realpath "$1"):/input:ro" \
    --volume "$(pwd)/model_weights:/opt/ml/model:ro" \
    --volume "$2:/output:rw" \
    "$TAG"
}

failed=0
for case_dir in test/input/*/; do
  interface="$(basename "$case_dir")"
  image="$(find "$case_dir/images" -name '*.mha' | head -n 1)"
  expected="test/expected_output/$interface/images/pancreatic-tumor-segmentation/$(basename "$image")"
  out="$WORK/$interface"
  start=$(date +%s%N)
  if ! run_case "${case_dir%/}" "$out" > "$WORK/$interface.log" 2>&1; then
    echo "FAIL $interface: the container exited non-zero"; tail -n 20 "$WORK/$interface.log"; failed=1; continue
  fi
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  printf '%s: wall time %d.%03d s (container start to exit)\n' "$interface" $((ms / 1000)) $((ms % 1000))
  "$PYTHON" test/check_output.py "$image" "$out" "$expected" || failed=1
done

# bad input: a truncated image must give a non-zero exit and no mask
bad="$WORK/bad-input"
mkdir -p "$bad/images/abdominal-t1-mri"
first="$(find test/input -name '*.mha' | head -n 1)"
head -c 4000 "$first" > "$bad/images/abdominal-t1-mri/truncated.mha"
if run_case "$bad" "$WORK/bad-output" > "$WORK/bad.log" 2>&1 || [ -n "$(find "$WORK/bad-output" -name '*.mha' 2>/dev/null)" ]; then
  echo "FAIL bad input: expected a non-zero exit and an empty /output"; cat "$WORK/bad.log"; failed=1
else
  echo "bad input: exit non-zero, no output; $(grep '^error:' "$WORK/bad.log")"
fi
if [ "$failed" != 0 ]; then
  echo "test/run.sh: FAILED"
  exit 1
fi
echo "test/run.sh: all cases passed"
