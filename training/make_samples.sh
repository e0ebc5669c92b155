#!/usr/bin/env bash
# Shipped sample cases (seeds from 1000: neither in training nor in the held-out tables): PANTHER socket layout under test/input/taskN,
# ground truth under test/ground-truth/<uuid>.mha, and test/samples.json recording seeds and paths.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
source "$HERE/env.sh"
# the first seed from 1000 that the shipped ensemble segments with tumour Dice >= 0.6 (training/pick_samples.py;
# the seeds tried are recorded in training/sample_choice_t<N>.json), unless given
# a task outside TASKS (reproduce.sh's) keeps its shipped seed: its models did not change, nor does its case
TASKS=${TASKS:-1 2}
seed_of() {
  local t=$1 given="T${1}_SEED"
  if [ -n "${!given:-}" ]; then echo "${!given}"
  elif [[ " $TASKS " != *" $t "* ]]; then
    "$PY" -c 'import json, sys; print(next(e["seed"] for e in json.load(open(sys.argv[1])) if e["task"] == int(sys.argv[2])))' \
      "$REPO/test/samples.json" "$t"
  else "$PY" "$HERE/pick_samples.py" --task "$t" --log "$HERE/sample_choice_t$t.json"; fi
}
T1_SEED=$(seed_of 1)
T2_SEED=$(seed_of 2)
rm -rf "$REPO/test/input" "$REPO/test/ground-truth"
$PY - "$REPO" "$T1_SEED" "$T2_SEED" <<'PY'
import json, sys
from pathlib import Path
from panther_ensemble import phantoms
repo, seeds = Path(sys.argv[1]), {1: int(sys.argv[2]), 2: int(sys.argv[3])}
entries = []
for task, seed in seeds.items():
    ipath, _ = phantoms.write_socket_case(repo / "test" / "input" / f"task{task}", task, seed,
                                          ground_truth_dir=repo / "test" / "ground-truth")
    info = phantoms.phantom_info(task, seed)
    entries.append({"task": task, "seed": seed, "uuid": info["uuid"],
                    "image": str(ipath.relative_to(repo)),
                    "ground_truth": f"test/ground-truth/{info['uuid']}.mha",
                    "size_zyx": info["size_zyx"], "spacing_zyx": info["spacing_zyx"],
                    "direction": info["direction"], "tumour_ml": info["tumour_ml"],
                    "tumour_diameter_mm": info["tumour_diameter_mm"],
                    "image_bytes": ipath.stat().st_size})
(repo / "test" / "samples.json").write_text(json.dumps(entries, indent=2) + "\n")
for e in entries:
    print(json.dumps(e))
PY
