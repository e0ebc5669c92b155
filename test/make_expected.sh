#!/usr/bin/env bash
# (Re)make test/expected_output/<interface>/images/pancreatic-tumor-segmentation/<uuid>.mha for every sample case
# in test/input/<interface>/, with the shipped default specs and models, on the CPU, in this checkout's engine.
# Run after changing a spec, the models or anything that changes the numbers; the tests compare against these.
set -euo pipefail
cd "$(dirname "$0")/.."
# reproduce.sh's interpreter (PY, training/env.sh) first: a checkout without its own .venv (a rebuild's clone) has no other
PY="${PY:-${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}}"
for case_dir in test/input/*/; do
  interface="$(basename "$case_dir")"
  out="test/expected_output/$interface"
  rm -rf "$out"
  "$PY" inference.py --input "$case_dir" --output "$out" --model-dir model_weights --device cpu
done
find test/expected_output -name '*.mha' | sort
# the shipped models' quality on the sample cases, for the docs (test/expected_output/metrics.json)
"$PY" - <<'PY'
import json
from pathlib import Path

import SimpleITK as sitk

from panther_ensemble.scoring import case_metrics

rows = {}
for mask in sorted(Path("test/expected_output").rglob("*.mha")):
    out = sitk.ReadImage(str(mask))
    gt = sitk.ReadImage(str(Path("test/ground-truth") / mask.name))
    m = case_metrics(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(gt), tuple(reversed(out.GetSpacing())))
    rows[str(mask)] = {k: round(float(v), 4) for k, v in m.items()}
Path("test/expected_output/metrics.json").write_text(json.dumps(rows, indent=2) + "\n")
print(json.dumps(rows, indent=2))
PY
