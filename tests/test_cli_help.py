"""The command line matches its docs: --version, help written for users, a top-level help that imports no
subcommand (fit imports torch), -v accepted before or after the subcommand."""

from __future__ import annotations

import subprocess
import sys

import pytest

import panther_ensemble
from conftest import REPO
from panther_ensemble.cli import SUBCOMMANDS, main


def run_main(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    out = capsys.readouterr()
    return stop.value.code, out.out, out.err


def test_version(capsys):
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0 and out == f"panther-ensemble {panther_ensemble.__version__}\n"


def test_inference_py_version_and_help():
    version = subprocess.run([sys.executable, REPO / "inference.py", "--version"], capture_output=True, text=True,
                             check=True).stdout
    assert version == f"inference.py (panther-ensemble {panther_ensemble.__version__})\n"
    text = subprocess.run([sys.executable, REPO / "inference.py", "--help"], capture_output=True, text=True,
                          check=True).stdout
    for words in ("images/abdominal-t1-mri/", "pancreatic-tumor-segmentation/<input name>.mha", "(default: /input)",
                  "exit status", "--device"):
        assert words in text, text


def test_top_level_help_lists_every_command_and_imports_none():
    code = ("import sys\nfrom panther_ensemble.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('panther_ensemble.cli.') and m != "
            "'panther_ensemble.cli.failures' or m.split('.')[0] in ('torch', 'nnunetv2', 'SimpleITK')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    *help_lines, modules = proc.stdout.strip().splitlines()
    assert modules == "[]"
    text = "\n".join(help_lines)
    for name, (_, summary) in SUBCOMMANDS.items():
        assert name in text and summary.split()[0] in text
    assert "examples:" in text and "exit status" in text and "--version" in text


@pytest.mark.parametrize("command,words", [
    ("predict", ["-o OUTPUT", "--task"]),
    ("evaluate", ["Dice", "examples:", "(default: correct spacing)"]),
    ("fit", ["spec.json", "examples:", "(default: mean-rank)", "(default: 0.3,0.4,0.5,0.6)"]),
    ("phantom", ["socket"]),
])
def test_every_command_has_help(capsys, command, words):
    code, out, _ = run_main([command, "--help"], capsys)
    assert code == 0
    for w in words:
        assert w in out, out
    assert "-v, --verbose" in out  # also after the subcommand


def test_verbose_after_the_subcommand(capsys, tmp_path):
    code = main(["evaluate", "--pred", str(tmp_path / "none"), "--gt", str(tmp_path / "none"), "-v"])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines()[-1].startswith("error: ")


def test_usage_errors_stay_argparse_usage_errors(capsys):
    code, _, err = run_main(["predict"], capsys)
    assert code == 2 and "usage: panther-ensemble predict" in err
