"""The ``zcfast`` command line.

Each command lives in ``zcfast/commands/<name>.py`` and defines::

    HELP: str                                   # one line for ``zcfast --help``
    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    # exit status

so commands stay independent of one another and import their heavy dependencies only when run.

Exit status: 0 success; 1 the work ran but failed (every candidate or training failed, or an
unexpected internal error); 2 a user error (bad argument, file or store), always ONE line
``zcfast <command>: error: ...`` on stderr and never a traceback; 130 interrupted (Ctrl-C /
SIGTERM). ``ZCFAST_TRACEBACK=1`` re-raises unexpected errors with their traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

COMMANDS = ("score", "correlate", "search", "scan", "import", "info", "report")
#: Commands whose module name is not the command's (``import`` is a Python keyword).
MODULES: dict[str, str] = {"import": "import_cmd"}

#: Exit status of a user error (bad argument, file, store), as argparse's own.
USAGE_ERROR = 2
#: Exit status of an interrupted command (128 + SIGINT).
INTERRUPTED = 130


def _load(name: str):
    return importlib.import_module(f"zcfast.commands.{MODULES.get(name, name)}")


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error of every other zcfast user error (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zcfast", description="Zero-cost proxies for NAS.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = _load(name)
        except ModuleNotFoundError as exc:  # a command whose module is not there yet
            if exc.name != f"zcfast.commands.{MODULES.get(name, name)}":
                raise
            continue
        cmd_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd_parser)
        cmd_parser.set_defaults(_run=module.run)
    return parser


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message with line breaks folded (OSError keeps its path)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:  # KeyError's str() is the repr of the key
        text = str(exc.args[0])
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # argparse errors: one error line, exit 2
    except SystemExit as exc:  # --help (0) or a usage error (2): a status, also when called in-process
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else USAGE_ERROR)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        print(f"zcfast: error: give a command: {', '.join(COMMANDS)}", file=sys.stderr)
        return USAGE_ERROR
    from zcfast.store import StoreError  # a ValueError subclass, named here for clarity

    prefix = f"zcfast {args.command}: error:"
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"\nzcfast {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (StoreError, ValueError, KeyError, OSError, NotImplementedError) as exc:
        # Bad input (argument, file, store, permission, existing file, full disk): one line.
        print(f"{prefix} {one_line(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except MemoryError:
        print(f"{prefix} out of memory; try a smaller --batch-size or --n", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 -- never a traceback for the user, unless asked
        if os.environ.get("ZCFAST_TRACEBACK"):
            raise
        print(f"{prefix} {type(exc).__name__}: {one_line(exc)} (unexpected; ZCFAST_TRACEBACK=1 shows "
              "the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
