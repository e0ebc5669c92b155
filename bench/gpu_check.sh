#!/usr/bin/env bash
# One command for a lent GPU machine (see bench/README.md):   bench/gpu_check.sh OUT_DIR [--dry --device cpu]
# Installs the carried wheels (.gpu-carry/wheels, made by bench/prepare_gpu_carry.sh) into /tmp/site, puts
# the repo's src/ and the SimpleITK import shim on the path, runs the engine's CUDA tests (pytest -m cuda;
# CUDA_TESTS=0 skips them), then bench/gpu_check.py; leaves pytest_cuda.log, gpu_check.json and
# gpu_check.log in OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bench/gpu_check.sh OUT_DIR [gpu_check.py options]}"
shift
mkdir -p "$OUT"
if [ -d .gpu-carry/wheels ] && ! python3 -c "import nnunetv2" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu-carry/wheels/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
if ! python3 -c "import SimpleITK" 2>/dev/null; then
  export PYTHONPATH="$(pwd)/bench/gpu/shim:${PYTHONPATH:-}"
fi
export PYTHONPATH="$(pwd)/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
# nnU-Net's CLI entry points are not installed as scripts with --target: provide the one the check calls
mkdir -p /tmp/bin
printf '#!/usr/bin/env bash\nexec python3 -c "from nnunetv2.ensembling.ensemble import entry_point_ensemble_folders as f; f()" "$@"\n' \
  > /tmp/bin/nnUNetv2_ensemble
chmod +x /tmp/bin/nnUNetv2_ensemble
export PATH="/tmp/bin:$PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$OUT/gpu.txt" || true
if [ "${CUDA_TESTS:-1}" = 1 ]; then  # the engine's CUDA tests first (tests/test_cuda.py)
  timeout "${CUDA_TESTS_TIMEOUT:-240}" python3 -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider 2>&1 \
    | tee "$OUT/pytest_cuda.log" || true
fi
python3 bench/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
