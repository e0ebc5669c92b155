"""Progress a person can follow: tiles done/total, elapsed time and ETA per member (a bar on a terminal, a log
line every 10 % elsewhere), and one closing line per case with the total time and the tumour volume."""

from __future__ import annotations

import logging
import re

import pytest

from panther_ensemble import Ensemble
from panther_ensemble.runtime import TileProgress, duration_text

SPEC = {"version": 1, "task": 1, "members": [{"name": "A", "model": "A", "folds": [0, 1], "mirroring": False},
                                             {"name": "B", "model": "B", "folds": [0], "mirroring": False}]}
LINE = re.compile(r"^predict (\w+): tile (\d+)/(\d+) \((\d+) %\), (.+) elapsed, ETA (.+)$")


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_log_line_at_every_ten_percent_with_elapsed_time_and_eta(caplog):
    clock = FakeClock()
    progress = TileProgress("predict A", interactive=False, clock=clock)
    with caplog.at_level(logging.INFO, logger="panther_ensemble.runtime"):
        for done in range(1, 26):  # 25 tiles, one second each
            clock.now += 1.0
            progress(done, 25)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10
    assert lines[1] == "predict A: tile 5/25 (20 %), 5.0 s elapsed, ETA 20.0 s"
    assert lines[-1] == "predict A: tile 25/25 (100 %), 25.0 s elapsed, ETA 0.0 s"
    assert [int(LINE.match(line).group(4)) // 10 for line in lines] == list(range(1, 11))


def test_few_tiles_and_batches_of_tiles():
    clock = FakeClock()
    seen = []
    progress = TileProgress("predict B", interactive=False, clock=clock)
    logger = logging.getLogger("panther_ensemble.runtime")
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        for done in (3, 3, 6, 9):  # batches of 3 tiles; a repeated count logs nothing new
            clock.now += 60.0
            progress(done, 9)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert seen == ["predict B: tile 3/9 (33 %), 1 min 00 s elapsed, ETA 2 min 00 s",
                    "predict B: tile 6/9 (66 %), 3 min 00 s elapsed, ETA 1 min 30 s",
                    "predict B: tile 9/9 (100 %), 4 min 00 s elapsed, ETA 0.0 s"]


def test_a_bar_with_eta_on_a_terminal(capsys, caplog):
    progress = TileProgress("predict A", interactive=True)
    with caplog.at_level(logging.INFO, logger="panther_ensemble.runtime"):
        progress(1, 10)
        progress(3, 10)
        shown = str(progress.bar)  # what the bar shows now: count, elapsed<remaining
        for done in range(4, 11):
            progress(done, 10)
    assert shown.startswith("predict A:  30%") and "3/10 [" in shown and "<" in shown and "tile/s" in shown
    assert "predict A" in capsys.readouterr().err
    assert progress.bar is None  # closed (and cleared) at the last tile
    assert caplog.records == []  # the bar replaces the log lines


@pytest.mark.parametrize("seconds,text", [(4.25, "4.2 s"), (59.9, "59.9 s"), (125, "2 min 05 s"),
                                          (3725, "1 h 02 min"), (float("nan"), "?")])
def test_durations_for_people(seconds, text):
    assert duration_text(seconds) == text


def test_real_ensemble_logs_tiles_per_member_and_one_closing_line(models, mri_file, caplog):
    """A non-terminal run (as on the platform) of a tiny real ensemble: each member's tiles in 10 % steps up
    to 100 %, today's stage lines unchanged, and the closing line last."""
    ensemble = Ensemble.from_spec(SPEC, models, device="cpu")
    with caplog.at_level(logging.INFO, logger="panther_ensemble"):
        result = ensemble.segment(mri_file)
    lines = [r.getMessage() for r in caplog.records]
    for member in ("A", "B"):
        mine = [LINE.match(line) for line in lines if line.startswith(f"predict {member}: tile")]
        assert mine and all(mine), lines
        total = int(mine[-1].group(3))
        assert mine[-1].group(2) == str(total) and mine[-1].group(6) == "0.0 s"
        assert len(mine) == min(total, 10)
        assert all(m.group(6) != "?" for m in mine)
        assert any(re.match(rf"predict {member} +\d+\.\d+ s +peak RSS", line) for line in lines)  # the stage line
    closing = lines[-1]
    assert re.fullmatch(r"case done in [^:]+: tumour (\d+) voxels, (\d+) mm3 \(2 of 2 members ran; peak RSS "
                        r"\d+ MB\)", closing), closing
    assert closing.startswith(f"case done in {duration_text(result.timings['total'])}: tumour "
                              f"{result.tumour_voxels} voxels, {result.tumour_volume_mm3:.0f} mm3")
    assert sum(line.startswith("case done") for line in lines) == 1
