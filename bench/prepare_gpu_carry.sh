#!/usr/bin/env bash
# Prepare what bench/gpu_check.sh needs on a lent GPU machine (Python 3.12, torch preinstalled, no network):
# .gpu-carry/wheels/ (the pinned versions from requirements.txt, for CPython 3.12 manylinux x86-64) and
# .gpu-carry/task1_case.nii.gz (the Task 1 benchmark phantom). .gpu-carry is git-ignored; pass it in `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
mkdir -p .gpu-carry/wheels
pin() { grep -i "^$1==" requirements.txt; }
for pkg in nnunetv2 batchgenerators batchgeneratorsv2 blosc2 ndindex numexpr connected-components-3d \
           dynamic_network_architectures nibabel yacs graphviz; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu-carry/wheels "$(pin "$pkg")"
done
# acvl_utils publishes no wheel: build one (pure Python)
"$PY" -m pip wheel -q --no-deps -w .gpu-carry/wheels "$(pin acvl_utils)"
"$PY" - <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "bench")
from gpu_check import make_case
make_case(Path(".gpu-carry/task1_case.nii.gz"))
PY
du -sh .gpu-carry/wheels .gpu-carry/task1_case.nii.gz
