"""Record one step's wall time: python training/timings.py FILE STEP SECONDS [TASKS] (FILE is JSON, updated in place).

Each step keeps its latest run and the sum of all its runs (a step resumed across sessions adds up); TASKS
(reproduce.sh's, e.g. "1") says which tasks the latest run covered. A run under a second (a resumed step with
nothing left to do) is not recorded."""

import json
import platform
import sys
import time
from pathlib import Path

path, step, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
if seconds < 1.0:  # a resumed step that found its work done: not a run (it would hide the last real one)
    print(f"{step}: nothing left to do, not recorded")
    sys.exit(0)
data = json.loads(path.read_text()) if path.is_file() else {"machine": f"{platform.node()} ({platform.processor() or platform.machine()})", "steps": {}}
entry = data["steps"].setdefault(step, {"runs": 0, "total_s": 0.0})
entry["runs"] += 1
entry["total_s"] = round(entry["total_s"] + seconds, 1)
entry["last_s"] = round(seconds, 1)
entry["last_finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
if len(sys.argv) > 4:
    entry["last_tasks"] = sys.argv[4]
data["total_min"] = round(sum(e["total_s"] for e in data["steps"].values()) / 60, 1)
path.write_text(json.dumps(data, indent=2) + "\n")
print(f"{step}: {seconds / 60:.1f} min (all steps so far: {data['total_min']} min)")
