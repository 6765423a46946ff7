"""Scoring a search-space architecture: per-architecture seeding (design.md §5) + the engine."""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zcfast.proxies.engine import DEFAULT_PROXIES, PAPER_LAYER_TYPES, LayerTypes, normalise_layer_types, score_detailed
from zcfast.proxies.registry import ProxyResult, resolve


def arch_seed(seed: int, key: str) -> int:
    """The seed of one architecture's initial weights: depends only on (seed, key).

    ``int.from_bytes(sha256(f"{seed}:{key}").digest()[:8], "little") & (2**63 - 1)``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not isinstance(key, str):
        raise ValueError(f"key must be a str, got {type(key).__name__}")
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


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


def bias_seed(seed: int, key: str) -> int:
    """Seed of the generator that draws an ``official`` NB201 network's cell conv biases.

    ``arch_seed(seed, "conv_bias:" + key)``: independent of the weights' stream
    (``arch_seed(seed, key)``), so the variant's weights equal the benchmark network's.
    """
    return arch_seed(seed, "conv_bias:" + key)


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


def score_arch(space: Any, arch: Any, inputs: torch.Tensor, targets: torch.Tensor | None,
               proxies: Sequence[str] | str = DEFAULT_PROXIES, seed: int = 42,
               num_classes: int = 10, device: str | torch.device = "cpu", *,
               detailed: bool = False,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
               layer_types: LayerTypes = PAPER_LAYER_TYPES,
               per_layer: bool = False,
               variant: str = "benchmark",
               fast: bool = True) -> dict[str, float] | dict[str, ProxyResult]:
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
            the paper's loss and layer types, only built-in proxies, no ``per_layer`` output
            (``detailed=True`` takes it too, with the engine's reasons for undefined values). Its values equal the general engine's up to float32
            rounding (both measured against float64 in bench/bench_proxies.py --f64).
            ``fast=False`` always runs the general engine (:func:`zcfast.score_detailed`).

    The network is owned by this call, so no copy of it is made; synflow on NB201 keeps the
    BatchNorms of the residual reduction blocks (official quirk), other spaces remove all.
    """
    if isinstance(space, str):
        import zcfast.spaces

        space = zcfast.spaces.get(space)
    types = normalise_layer_types(layer_types)
    if fast and not per_layer and variant == "benchmark" and loss_fn is F.cross_entropy \
            and types == PAPER_LAYER_TYPES and isinstance(inputs, torch.Tensor) and inputs.is_floating_point():
        from zcfast import batched

        specs = resolve(proxies)
        names = [spec.name for spec in specs]
        builtin = all(spec.fn.__module__ == "zcfast.proxies.builtin" for spec in specs)
        if builtin and batched.fast_route_applies(space, names):
            return batched.score_one(space, arch, inputs, targets, names, seed=seed, num_classes=num_classes,
                                     device=device, detailed=detailed)
    net = build_seeded(space, arch, seed, num_classes, variant=variant).to(device)
    keep = synflow_bn_rule(getattr(space, "name", ""), net)
    res = score_detailed(net, inputs, targets, proxies, loss_fn, layer_types, per_layer,
                         synflow_keep_bn=keep, seed=seed, _owned=True)
    del net
    if detailed:
        return res
    return {k: r.value for k, r in res.items()}
