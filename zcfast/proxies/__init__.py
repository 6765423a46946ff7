"""Zero-cost proxies: registry, need plug-ins, the module backend (engine), vote.

Public API (design.md §3, §5)::

    score(model, inputs, targets, proxies=DEFAULT_PROXIES, loss_fn=F.cross_entropy,
          layer_types=None, per_layer=False, *, batches=None) -> dict[str, float]
    score_detailed(...same...) -> dict[str, ProxyResult]
    available_proxies() -> list[str]
    register_proxy(name, needs=("grads",))          # decorator
    register_need(Need(name, run=fn, ...)); unregister_need(name); available_needs()
    counted_weights(model, layer_types=None) -> list[Counted]   # what the proxies sum over
    arch_seed(seed, key) -> int                     # from zcfast.seeding

Layout: ``needs`` (the Need registry) <- ``registry`` (proxies, PassContext) <- ``engine`` (the
module backend; registers the shared-pass needs and synflow) <- ``builtin`` (the proxies) and
``builtin_needs`` (the plug-in needs). ``score_arch`` and ``build_seeded`` (a benchmark
architecture, routed to a backend) live in :mod:`zcfast.scoring`, above this package. See
docs/proxies.md for each proxy's exact definition.
"""
from __future__ import annotations

from zcfast.proxies.needs import Need, NeedError, available_needs, register_need
from zcfast.proxies.registry import (NEEDS, PAPER_PROXIES, PassContext, ProxyResult, available_proxies,
                                     register_proxy, unregister_need, unregister_proxy)
from zcfast.proxies.engine import (DEFAULT_PROXIES, PAPER_LAYER_TYPES, counted_weights, remove_batchnorms, score,
                                   score_detailed)
from zcfast.proxies import builtin as _builtin  # noqa: F401  (registers the built-in proxies)
from zcfast.proxies import builtin_needs  # noqa: F401  (registers the plug-in needs)
from zcfast.proxies import suite_zero  # noqa: F401  (NAS-Bench-Suite-Zero's proxies, ZiCo, their needs)
from zcfast.proxies import meco, swap  # noqa: F401  (MeCo, SWAP)
from zcfast.proxies import gradsign, te_nas  # noqa: F401  (GradSign, TE-NAS's two measures)
from zcfast.proxies import az_nas  # noqa: F401  (AZ-NAS's four measures)
from zcfast.proxies import reductions, vote
from zcfast.seeding import arch_seed, bias_seed

__all__ = [
    "DEFAULT_PROXIES", "NEEDS", "Need", "NeedError", "PAPER_LAYER_TYPES", "PAPER_PROXIES", "PassContext",
    "ProxyResult", "available_needs", "register_need", "unregister_need",
    "arch_seed", "available_proxies", "bias_seed", "counted_weights",
    "reductions",
    "register_proxy",
    "remove_batchnorms", "score", "score_detailed",
    "unregister_proxy", "vote",
]
