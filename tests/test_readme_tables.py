"""training/readme_tables.py: the README's result tables are the committed result files' numbers."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "readme_tables.py"


def _module():
    spec = importlib.util.spec_from_file_location("readme_tables", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_readmes_tables_match_the_result_files():
    run = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    module = _module()
    shown = "".join((REPO / f).read_text() for f in module.SHOWN_IN)
    for name in module.TABLES:  # every table is in a file --check reads (a table nobody shows is checked by no one)
        assert f"<!-- table {name}: made by training/readme_tables.py -->" in shown, name


def test_a_changed_number_or_a_stale_table_is_found(tmp_path):
    readme = (REPO / "README.md").read_text()
    assert "<!-- table nested-cv: made by training/readme_tables.py -->" in readme
    mod = _module()
    fitted_dice = f"{json.loads((REPO / 'docs/results/fit_task1/report.json').read_text())['leaderboard_held_out'][0]['dice']:.3f}"
    assert fitted_dice in mod.table("nested-cv")
    edited = tmp_path / "README.md"
    edited.write_text(readme.replace(fitted_dice, "0.999", 1))
    run = subprocess.run([sys.executable, str(SCRIPT), "--check", str(edited)], capture_output=True, text=True)
    assert run.returncode == 1 and "table nested-cv" in run.stderr
    subprocess.run([sys.executable, str(SCRIPT), "--write", str(edited)], check=True, capture_output=True)
    assert edited.read_text() == readme  # --write puts the files' numbers back, and nothing else changes


def test_rows_bold_the_best_of_each_metric_and_place_one_entry_among_its_set():
    mod = _module()
    board = [dict(name="fitted", dice=0.7, surface_dice_5mm=0.9, hd95=5.0, masd=2.0, volume_rmse_mm3=1000, mean_rank=1.4),
             dict(name="equal", dice=0.6, surface_dice_5mm=0.95, hd95=9.0, masd=1.0, volume_rmse_mm3=900, mean_rank=1.4),
             dict(name="default", dice=0.5, surface_dice_5mm=0.8, hd95=20.0, masd=3.0, volume_rmse_mm3=2000, mean_rank=3.0)]
    rows = mod.rows_of("set", board, "all")
    assert rows[0].startswith("| set | **fitted (shipped)** | **0.700** | 0.900 | **5.0** | 2.0 | 1000 | **1.4** |")
    assert rows[1] == "| same | equal weights, argmax | 0.600 | **0.950** | 9.0 | **1.0** | **900** | **1.4** |"
    one = mod.rows_of("set", board, "fitted")
    assert one == ["| set | **fitted (shipped)** | 0.700 | 0.900 | 5.0 | 2.0 | 1000 | 1.4 (tied 1st of 3) |"]
    with pytest.raises(SystemExit, match="no 'fitted' entry"):
        mod.rows_of("set", board[1:], "fitted")
