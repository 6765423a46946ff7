"""CLI commands: one module per command (see zcfast/cli.py for the protocol), plus helpers.

``--model/--trainer/--scorer 'module:function'`` imports the module and runs its code, as any
plugin does: give only modules you trust.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, Callable

#: ``--proxies`` help of every command that takes it. The keywords are
#: ``zcfast.options.PROXY_SETS`` (written out here so that building the parser imports no torch;
#: tests/test_front_door.py checks that every keyword is named).
PROXIES_HELP = ("a proxy set or comma-separated proxy names: 'paper' (the paper's six: grad_norm,snip,grasp,"
                "fisher,synflow,jacob_cov), 'all' (every built-in proxy), 'suite-zero' (NAS-Bench-Suite-Zero's "
                "13), 'every' (every registered proxy, user ones too); 'zcfast info --proxies' lists them")


def load_callable(spec: str, option: str, label: str) -> Callable[..., Any]:
    """The function named by ``spec`` = ``'package.module:function'``.

    The current folder is put first on ``sys.path`` (as ``python -m`` does) when it is not
    there, so ``zcfast score --model mymodels:make_net`` finds ``./mymodels.py`` from the
    console script too. Importing the module runs its code.

    ``option`` (e.g. ``--model``) and ``label`` (e.g. ``model``) name what is being loaded in
    the ``ValueError`` raised for a malformed spec, a module that cannot be imported (or that
    raises while it is imported), or a missing or non-callable attribute.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"{option} must look like 'package.module:function', got {spec!r}")
    mod_name, attr = spec.split(":", 1)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"{option} {spec!r} cannot be loaded: cannot import {label} module "
                         f"{mod_name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- the user's module failed while importing
        first = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ValueError(f"{option} {spec!r} cannot be loaded: importing {label} module {mod_name!r} "
                         f"raised {first}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{option} {spec!r} cannot be loaded: {label} module {mod_name!r} has no "
                         f"callable {attr!r}")
    return fn


def count_type(option: str, minimum: int = 1) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer option ``>= minimum`` (as ``zcfast.options.check_count``),
    so ``--threads -3`` is refused by argparse with one line naming the option:
    ``zcfast score: error: argument --threads: must be an integer >= 1, got '-3'``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = "count"
    return parse


def check_out_dir(path: str | None, option: str = "--out") -> None:
    """Refuse an output directory that is an existing file (before any work starts)."""
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{option} {path!r} is an existing file, not a directory; give a directory")
