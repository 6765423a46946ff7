"""Zero-cost proxies: registry, the shared-pass engine, vote, architecture scoring.

Public API (design.md §3, §5)::

    score(model, inputs, targets, proxies=DEFAULT_PROXIES, loss_fn=F.cross_entropy,
          layer_types=(nn.Conv2d, nn.Linear), per_layer=False) -> dict[str, float]
    score_detailed(...same...) -> dict[str, ProxyResult]
    available_proxies() -> list[str]
    register_proxy(name, needs=("grads",))          # decorator
    score_arch(space, arch, inputs, targets, proxies, seed=42, num_classes=10, device="cpu")
    arch_seed(seed, key) -> int

See docs/proxies.md for each proxy's exact definition and the official quirks.
"""
from __future__ import annotations

from zcfast.proxies.registry import (NEEDS, PassContext, ProxyResult, available_proxies,
                                     register_proxy, unregister_proxy)
from zcfast.proxies.engine import (DEFAULT_PROXIES, PAPER_LAYER_TYPES, remove_batchnorms, score,
                                   score_detailed)
from zcfast.proxies import builtin as _builtin  # noqa: F401  (registers the built-in proxies)
from zcfast.proxies.arch import (arch_seed, bias_seed, build_seeded, check_space_variant, score_arch,
                                 synflow_bn_rule)
from zcfast.proxies import reductions, vote

__all__ = [
    "DEFAULT_PROXIES", "NEEDS", "PAPER_LAYER_TYPES", "PassContext", "ProxyResult",
    "arch_seed", "available_proxies", "bias_seed", "build_seeded", "check_space_variant", "reductions",
    "register_proxy",
    "remove_batchnorms", "score", "score_arch", "score_detailed", "synflow_bn_rule",
    "unregister_proxy", "vote",
]
