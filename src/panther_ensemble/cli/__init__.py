"""`panther-ensemble` command line: one subcommand per job, each owned by its own module.

Every subcommand module exposes `HELP` (its description), `add_arguments(parser)` and `main(args) -> int`.
A module is imported only when its subcommand is chosen (`panther-ensemble evaluate` does not pay for
importing torch and nnU-Net); the one-line summaries of the top-level help live in `SUBCOMMANDS` here, so
`panther-ensemble --help` imports none of them. Failures end as one `error:` line (`failures.py`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap

from .. import __version__
from ..console import LockedStderrHandler
from .failures import handling_signals, run_reported

# name -> (module, one-line summary for the top-level help)
SUBCOMMANDS = {
    "predict": ("panther_ensemble.cli.predict",
                "segment the pancreatic tumour in MRI files with the shipped ensemble of a task or your own"),
    "evaluate": ("panther_ensemble.cli.evaluate",
                 "score predicted tumour masks against ground truth with the five PANTHER metrics"),
    "fit": ("panther_ensemble.cli.fit",
            "tune an ensemble's member weights, decision rule and post-processing on training cases"),
    "phantom": ("panther_ensemble.cli.phantom",
                "make synthetic PANTHER-like MRI cases (test inputs, training data)"),
}

DESCRIPTION = ("Segment pancreatic tumours in abdominal MRI with an ensemble of nnU-Net models (the PANTHER "
               "challenge), and score and tune such ensembles.")

EPILOG = """\
examples:
  panther-ensemble predict scans/ -o masks/ --task 1       T1 MRI files in scans/ -> masks/<case>.mha
  panther-ensemble evaluate --pred masks/ --gt labels/     Dice, surface Dice, HD95, MASD, volume RMSE
  panther-ensemble COMMAND --help                          the options of one command

exit status: 0 done, 1 internal error, 2 bad input (the message names the file), 3 out of memory,
130 or 143 stopped by Ctrl-C or SIGTERM (a partly written output is removed)"""


def wrap(text: str, width: int = 100) -> str:
    """Paragraphs (separated by blank lines) filled to `width`: descriptions are shown as written otherwise."""
    return "\n\n".join(textwrap.fill(" ".join(par.split()), width) for par in text.split("\n\n"))


def _load(name: str):
    return importlib.import_module(SUBCOMMANDS[name][0])


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser; only the `chosen` subcommand's module is imported (none for the top-level help)."""
    parser = argparse.ArgumentParser(prog="panther-ensemble", description=wrap(DESCRIPTION), epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"panther-ensemble {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="more detail in the log, and the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, summary) in SUBCOMMANDS.items():
        if name != chosen:
            sub.add_parser(name, help=summary, add_help=False)
            continue
        module = _load(name)
        p = sub.add_parser(name, help=summary, description=wrap(getattr(module, "HELP", summary)),
                           epilog=getattr(module, "EPILOG", None), formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        try:  # -v also after the subcommand (`panther-ensemble predict ... -v`)
            p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                           help="more detail in the log, and the traceback of an internal error")
        except argparse.ArgumentError:
            pass
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    chosen = chosen if chosen in SUBCOMMANDS else None
    args = build_parser(chosen).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        handlers=[LockedStderrHandler()])
    if args.command is None:
        build_parser(None).print_help()
        return 2
    with handling_signals():
        return run_reported(lambda: _load(args.command).main(args), verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
