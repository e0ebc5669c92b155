"""`panther-ensemble` command line: one subcommand per job, each owned by its own module.

Every subcommand module exposes `HELP` (one line), `add_arguments(parser)` and `main(args) -> int`.
They are imported only when their subcommand is chosen, so `panther-ensemble evaluate` does not pay
for importing torch and nnU-Net.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import InputError

SUBCOMMANDS = {
    "predict": "panther_ensemble.cli.predict",
    "evaluate": "panther_ensemble.cli.evaluate",
    "fit": "panther_ensemble.cli.fit",
    "phantom": "panther_ensemble.cli.phantom",
}


def _load(name: str):
    return importlib.import_module(SUBCOMMANDS[name])


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panther-ensemble", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        if chosen is not None and name != chosen:
            sub.add_parser(name, add_help=False)
            continue
        try:
            module = _load(name)
        except ModuleNotFoundError as exc:  # a subcommand whose module is not built yet
            if exc.name != SUBCOMMANDS[name]:
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    chosen = chosen if chosen in SUBCOMMANDS else None
    args = build_parser(chosen).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    if args.command is None:
        build_parser(None).print_help()
        return 2
    try:
        return int(_load(args.command).main(args) or 0)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
