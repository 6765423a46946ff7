"""The ``zcfast`` command line.

Each command lives in ``zcfast/commands/<name>.py`` and defines::

    HELP: str                                   # one line for ``zcfast --help``
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    # exit status

so commands stay independent of one another and import their heavy dependencies only when run.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

COMMANDS = ("score", "correlate", "search", "scan", "info")


def _load(name: str):
    return importlib.import_module(f"zcfast.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zcfast", description="Zero-cost proxies for NAS.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = _load(name)
        except ModuleNotFoundError as exc:  # a command whose module is not there yet
            if exc.name != f"zcfast.commands.{name}":
                raise
            continue
        cmd_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd_parser)
        cmd_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # Bad input: a clear one-line message, no traceback, non-zero exit.
        print(f"zcfast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
