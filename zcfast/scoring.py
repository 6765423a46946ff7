"""The neutral scoring layer above the backends: build a seeded architecture, route it.

``score_arch``, ``build_seeded`` and the routing live here, above both backends (the module
backend, :mod:`zcfast.proxies.engine`, hooks on any ``nn.Module``; the stacked NAS-Bench-201
backend, :mod:`zcfast.batched`), so neither backend imports the other. Routing asks each
backend which needs it supports (``Backend.supports``): a proxy, built-in or user, takes the
fast route exactly when every need it declares is one the fast backend runs. Seeds come from
:mod:`zcfast.seeding` (design.md §5).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zcfast import batched
from zcfast.proxies.engine import (DEFAULT_PROXIES, PAPER_LAYER_TYPES, LayerTypes, normalise_layer_types,
                                   score_detailed, split_batches)
from zcfast.proxies.needs import available_needs, get_need
from zcfast.proxies.registry import ProxyResult, ProxySpec, resolve
from zcfast.seeding import arch_seed, bias_seed

__all__ = ["Backend", "MODULE_BACKEND", "NB201_BACKEND", "backends", "build_seeded", "check_space_variant",
           "route", "score_arch", "synflow_bn_rule", "arch_seed", "bias_seed"]


def synflow_bn_rule(space_name: str, net: nn.Module) -> list[str] | None:
    """Names of the BatchNorms synflow keeps for a network of ``space_name``.

    NB201 (official quirk): the network rebuilt "without BN" keeps the BatchNorms inside the
    residual reduction blocks; the space's network lists them (``reduction_batchnorms()``).
    Every other space: ``None`` (all BatchNorms removed).
    """
    if space_name == "nb201":
        kept = getattr(net, "reduction_batchnorms", None)
        if kept is None:
            raise ValueError("the NB201 network does not expose reduction_batchnorms(); "
                             "cannot apply the official synflow BatchNorm rule")
        ids = {id(m) for m in kept()}
        return [name for name, m in net.named_modules() if id(m) in ids]
    return None


def check_space_variant(space: Any, variant: str) -> str:
    """Validate a network ``variant`` for ``space`` (its ``variants``; other spaces: ``benchmark``).

    Raises:
        ValueError naming the bad variant and the space's variants.
    """
    variants = tuple(getattr(space, "variants", ("benchmark",)))
    if not isinstance(variant, str) or variant not in variants:
        raise ValueError(f"unknown network variant {variant!r} for the {getattr(space, 'name', space)!s} "
                         f"space; expected one of {', '.join(variants)}")
    return variant


def build_seeded(space: Any, arch: Any, seed: int = 42, num_classes: int = 10, *,
                 variant: str = "benchmark") -> nn.Module:
    """``space.build(arch, num_classes)`` under ``torch.manual_seed(arch_seed(seed, space.key(arch)))``.

    ``variant`` (NB201 only besides the default ``"benchmark"``): ``"official"`` builds the
    zero-cost-nas paper's model (``NB201Space.build``), its cell conv biases drawn after the
    weights from a generator seeded with :func:`bias_seed`, so the weights are bit-identical to
    the ``benchmark`` network's. The caller's global RNG state is left unchanged.

    Raises:
        ValueError: a variant the space does not offer (named in the message).
    """
    check_space_variant(space, variant)
    with torch.random.fork_rng(devices=[]):
        key = space.key(arch)
        torch.manual_seed(arch_seed(seed, key))
        if variant == "benchmark":
            return space.build(arch, num_classes=num_classes)
        gen = torch.Generator().manual_seed(bias_seed(seed, key))
        return space.build(arch, num_classes=num_classes, variant=variant, bias_generator=gen)


def score_arch(space: Any, arch: Any, inputs: torch.Tensor | None, targets: torch.Tensor | None,
               proxies: Sequence[str] | str = DEFAULT_PROXIES, seed: int = 42,
               num_classes: int = 10, device: str | torch.device = "cpu", *,
               detailed: bool = False,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
               layer_types: LayerTypes = PAPER_LAYER_TYPES,
               per_layer: bool = False,
               variant: str = "benchmark",
               fast: bool = True,
               batches: Sequence[tuple[torch.Tensor, torch.Tensor | None]] | None = None
               ) -> dict[str, float] | dict[str, ProxyResult]:
    """Build ``arch`` of ``space`` with its per-architecture seed and score it.

    Args:
        space: a :class:`zcfast.spaces.SearchSpace` or its name ("nb201", ...).
        arch: an architecture of that space (anything ``space.build`` accepts).
        inputs: [N, C, H, W] float batch; targets: [N] int64 labels.
        proxies, loss_fn, per_layer: as :func:`zcfast.score`.
        layer_types: which weights count; on the benchmark spaces the paper's rule
            (``PAPER_LAYER_TYPES`` = Conv2d + Linear, the default here), which decides the
            paper's numbers. ``None`` counts every weight-bearing layer, as :func:`zcfast.score`.
        seed: the study's seed; the weights use ``arch_seed(seed, space.key(arch))``.
        num_classes: classifier width.
        device: where the network is built and scored.
        detailed: return ``{name: ProxyResult}`` (with errors) instead of ``{name: float}``.
        variant: the network variant (:func:`build_seeded`): ``"benchmark"`` (default) or, for
            NB201, ``"official"`` (the zero-cost-nas paper's model: cell conv biases,
            affine-free cell BatchNorms).
        fast: on NAS-Bench-201, score through ``zcfast.batched.score_one`` (one candidate of
            the batched network: no module tree, edges that cannot affect any proxy skipped;
            ~2-3x faster on CPU, bench/RESULTS.md) when it applies: the benchmark variant,
            the paper's loss and layer types, no ``per_layer`` output
            (``detailed=True`` takes it too, with the engine's reasons for undefined values),
            and every proxy's needs supported by that backend (:func:`route`; a user proxy of
            supported needs included). Its values equal the general engine's up to float32
            rounding (both measured against float64 in bench/bench_proxies.py --f64).
            ``fast=False`` always runs the general engine (:func:`zcfast.score_detailed`).
        batches: several mini-batches ``[(inputs, targets), ...]`` instead of ``inputs`` /
            ``targets`` (then ``None``), as :func:`zcfast.score`: multi-batch needs read all,
            single-batch passes the first (on the fast route too: the stacked backend gives
            ``multi_grads`` every mini-batch).

    The network is owned by this call, so no copy of it is made; synflow on NB201 keeps the
    BatchNorms of the residual reduction blocks (official quirk), other spaces remove all.
    """
    if isinstance(space, str):
        import zcfast.spaces

        space = zcfast.spaces.get(space)
    types = normalise_layer_types(layer_types)
    specs = resolve(proxies)
    if batches is not None:
        inputs, targets, extra = split_batches(inputs, targets, batches)
        needs_several = any(get_need(n).batches > 1 for spec in specs for n in spec.needs)
        batches = [(inputs, targets)] + extra if extra and needs_several else None
        if batches is not None:
            inputs = targets = None
    first = inputs if batches is None else batches[0][0]
    if fast and not per_layer and variant == "benchmark" and loss_fn is F.cross_entropy \
            and types == PAPER_LAYER_TYPES and isinstance(first, torch.Tensor) and first.is_floating_point():
        if route(space, specs) is NB201_BACKEND:   # several mini-batches too: the stacked backend reads them all
            return batched.score_one(space, arch, inputs, targets, [spec.name for spec in specs], seed=seed,
                                     num_classes=num_classes, device=device, detailed=detailed, batches=batches)
    net = build_seeded(space, arch, seed, num_classes, variant=variant).to(device)
    keep = synflow_bn_rule(getattr(space, "name", ""), net)
    res = score_detailed(net, inputs, targets, proxies, loss_fn, layer_types, per_layer,
                         synflow_keep_bn=keep, seed=seed, batches=batches, _owned=True)
    del net
    if detailed:
        return res
    return {k: r.value for k, r in res.items()}


# ------------------------------------------------------------------------------------------
# backends and routing
# ------------------------------------------------------------------------------------------
class Backend(Protocol):
    """An execution backend: runs the passes that produce needs, for one kind of network.

    ``supports(space, needs)`` says whether it can produce every need in ``needs`` for
    networks of ``space`` (``None``: any ``nn.Module``); routing asks it, never a name table.
    """

    name: str

    def supports(self, space: Any, needs: frozenset[str]) -> bool:
        """Whether this backend produces every need of ``needs`` on ``space``'s networks."""
        ...


class _ModuleBackend:
    """Hooks and passes on a private copy of any ``nn.Module`` (:mod:`zcfast.proxies.engine`):
    every registered need."""

    name = "module"

    def supports(self, space: Any, needs: frozenset[str]) -> bool:
        return set(needs) <= set(available_needs())


class _NB201Backend:
    """The stacked NAS-Bench-201 network (:mod:`zcfast.batched`): K candidates per pass, the needs
    in ``zcfast.batched.SUPPORTED_NEEDS``."""

    name = "nb201"

    def supports(self, space: Any, needs: frozenset[str]) -> bool:
        return batched.supports(space) and batched.supports_needs(needs)


MODULE_BACKEND: Backend = _ModuleBackend()
NB201_BACKEND: Backend = _NB201Backend()


def backends() -> list[Backend]:
    """The backends in routing order: the fastest that supports a request wins."""
    return [NB201_BACKEND, MODULE_BACKEND]


def route(space: Any, specs: Sequence[ProxySpec]) -> Backend:
    """The first backend of :func:`backends` that supports the union of ``specs``' needs on
    ``space`` (the module backend supports every registered need)."""
    needs = frozenset(n for spec in specs for n in spec.needs)
    for backend in backends():
        if backend.supports(space, needs):
            return backend
    return MODULE_BACKEND


batched.set_module_scorer(score_arch, build_seeded)
