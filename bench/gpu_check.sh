#!/usr/bin/env bash
# One command for a lent GPU machine (see bench/README.md):   bench/gpu_check.sh OUT_DIR [--dry --device cpu]
# Installs the carried wheels (.gpu-carry/wheels, made by bench/prepare_gpu_carry.sh) into /tmp/site when
# nnU-Net is not importable, puts the repo's src/ and (where SimpleITK is missing) its import shim on the path,
# runs the engine's CUDA tests (pytest -m cuda; CUDA_TESTS=0 skips them), then bench/gpu_check.py; leaves
# pytest_cuda.log, gpu_check.json and gpu_check.log in OUT_DIR.
# Python: $PYTHON, else .venv/bin/python where it exists, else python3. On a fresh clone with the README's
# .venv, `bench/gpu_check.sh OUT --dry --device cpu` needs nothing else: gpu_check.py makes its input
# phantom when none is carried.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bench/gpu_check.sh OUT_DIR [gpu_check.py options]}"
shift
mkdir -p "$OUT"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo "$(pwd)/.venv/bin/python" || echo python3 )}"
if [ -d .gpu-carry/wheels ] && ! "$PY" -c "import nnunetv2" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu-carry/wheels/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
if ! "$PY" -c "import SimpleITK" 2>/dev/null; then
  PYTHONPATH="$(pwd)/bench/gpu/shim:${PYTHONPATH:-}"
fi
PYTHONPATH="$(pwd)/src:${PYTHONPATH:-}"
export PYTHONPATH PYTHONUNBUFFERED=1
# nnU-Net's CLI entry points are not installed as scripts with --target: provide the one the check calls
BIN="$(mktemp -d)"
trap 'rm -rf "$BIN"' EXIT
printf '#!/usr/bin/env bash\nexec %q -c "from nnunetv2.ensembling.ensemble import entry_point_ensemble_folders as f; f()" "$@"\n' \
  "$PY" > "$BIN/nnUNetv2_ensemble"
chmod +x "$BIN/nnUNetv2_ensemble"
export PATH="$BIN:$PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$OUT/gpu.txt" || true
if [ "${CUDA_TESTS:-1}" = 1 ]; then  # the engine's CUDA tests first (tests/test_cuda.py)
  timeout "${CUDA_TESTS_TIMEOUT:-240}" "$PY" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider 2>&1 \
    | tee "$OUT/pytest_cuda.log" || true
fi
"$PY" bench/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
