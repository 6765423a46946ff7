"""zcfast: fast, faithful zero-cost proxies for neural architecture search.

Public entry points (imported lazily so ``import zcfast`` stays cheap):

- ``zcfast.ops``: fused saliency / Fisher / Jacobian-covariance kernels (C++/CUDA extension).
- ``zcfast.spaces``: NAS-Bench-201, NAS-Bench-101 and DARTS search spaces.
- ``zcfast.score`` / ``zcfast.score_detailed`` / ``zcfast.available_proxies`` /
  ``zcfast.register_proxy`` / ``zcfast.score_arch``: the proxy engine.
- ``zcfast.scan``: streaming, resumable multi-candidate scans.

See docs/design.md for how the parts fit together.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "score": ("zcfast.proxies", "score"),
    "score_detailed": ("zcfast.proxies", "score_detailed"),
    "score_arch": ("zcfast.scoring", "score_arch"),
    "available_proxies": ("zcfast.proxies", "available_proxies"),
    "register_proxy": ("zcfast.proxies", "register_proxy"),
    "unregister_proxy": ("zcfast.proxies", "unregister_proxy"),
    "ProxyResult": ("zcfast.proxies", "ProxyResult"),
    "register_need": ("zcfast.proxies", "register_need"),
    "unregister_need": ("zcfast.proxies", "unregister_need"),
    "Need": ("zcfast.proxies", "Need"),
    "NeedError": ("zcfast.proxies", "NeedError"),
    "scan": ("zcfast.scan", "scan"),
    "has_cuda": ("zcfast.ops", "has_cuda"),
}
_SUBMODULES = {"ops", "reference", "spaces", "proxies", "store", "data", "correlate", "search", "batched",
               "options", "scoring", "seeding"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"zcfast.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'zcfast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
