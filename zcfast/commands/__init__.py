"""CLI commands: one module per command (see zcfast/cli.py for the protocol), plus helpers."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def load_callable(spec: str, option: str, label: str) -> Callable[..., Any]:
    """The function named by ``spec`` = ``'package.module:function'``.

    ``option`` (e.g. ``--model``) and ``label`` (e.g. ``model``) name what is being loaded in
    the ``ValueError`` raised for a malformed spec, a module that cannot be imported, or a
    missing or non-callable attribute.
    """
    if ":" not in spec:
        raise ValueError(f"{option} must look like 'package.module:function', got {spec!r}")
    mod_name, attr = spec.split(":", 1)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"{option} {spec!r} cannot be loaded: cannot import {label} module "
                         f"{mod_name!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"{option} {spec!r} cannot be loaded: {label} module {mod_name!r} has no "
                         f"callable {attr!r}")
    return fn
