"""Search spaces: NAS-Bench-201, NAS-Bench-101 and DARTS (design.md §2).

``get(name)`` returns a shared instance of the space; spaces are imported on first use.
"""
from __future__ import annotations

import importlib
import threading

from .base import Arch, SearchSpace, stable_digest

_REGISTRY: dict[str, tuple[str, str]] = {
    "nb201": ("zcfast.spaces.nb201", "NB201Space"),
    "nb101": ("zcfast.spaces.nb101", "NB101Space"),
    "darts": ("zcfast.spaces.darts", "DartsSpace"),
}
_ALIASES = {"nasbench201": "nb201", "nats-tss": "nb201", "nasbench101": "nb101", "nb301": "darts"}
_INSTANCES: dict[str, SearchSpace] = {}
_LOCK = threading.Lock()


def available() -> list[str]:
    """Names accepted by ``get``."""
    return sorted(_REGISTRY)


def get(name: str) -> SearchSpace:
    """The search space called ``name`` ("nb201", "nb101", "darts"); unknown -> ValueError."""
    if not isinstance(name, str):
        raise ValueError(f"search space name must be a str, got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _REGISTRY:
        raise ValueError(f"unknown search space {name!r}; available: {available()}")
    with _LOCK:
        if key not in _INSTANCES:
            module_name, cls = _REGISTRY[key]
            _INSTANCES[key] = getattr(importlib.import_module(module_name), cls)()
        return _INSTANCES[key]


__all__ = ["Arch", "SearchSpace", "available", "get", "stable_digest"]
