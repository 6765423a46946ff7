"""Scoring a search-space architecture: per-architecture seeding (design.md §5) + the engine."""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zcfast.proxies.engine import DEFAULT_PROXIES, PAPER_LAYER_TYPES, score_detailed
from zcfast.proxies.registry import ProxyResult


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


def build_seeded(space: Any, arch: Any, seed: int = 42, num_classes: int = 10) -> nn.Module:
    """``space.build(arch, num_classes)`` under ``torch.manual_seed(arch_seed(seed, space.key(arch)))``.

    The caller's global RNG state is left unchanged.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(arch_seed(seed, space.key(arch)))
        return space.build(arch, num_classes=num_classes)


def score_arch(space: Any, arch: Any, inputs: torch.Tensor, targets: torch.Tensor | None,
               proxies: Sequence[str] | str = DEFAULT_PROXIES, seed: int = 42,
               num_classes: int = 10, device: str | torch.device = "cpu", *,
               detailed: bool = False,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
               layer_types: Sequence[type[nn.Module]] = PAPER_LAYER_TYPES,
               per_layer: bool = False) -> dict[str, float] | dict[str, ProxyResult]:
    """Build ``arch`` of ``space`` with its per-architecture seed and score it.

    Args:
        space: a :class:`zcfast.spaces.SearchSpace` or its name ("nb201", ...).
        arch: an architecture of that space (anything ``space.build`` accepts).
        inputs: [N, C, H, W] float batch; targets: [N] int64 labels.
        proxies, loss_fn, layer_types, per_layer: as :func:`zcfast.score`.
        seed: the study's seed; the weights use ``arch_seed(seed, space.key(arch))``.
        num_classes: classifier width.
        device: where the network is built and scored.
        detailed: return ``{name: ProxyResult}`` (with errors) instead of ``{name: float}``.

    The network is owned by this call, so no copy of it is made; synflow on NB201 keeps the
    BatchNorms of the residual reduction blocks (official quirk), other spaces remove all.
    """
    if isinstance(space, str):
        import zcfast.spaces

        space = zcfast.spaces.get(space)
    net = build_seeded(space, arch, seed, num_classes).to(device)
    keep = synflow_bn_rule(getattr(space, "name", ""), net)
    res = score_detailed(net, inputs, targets, proxies, loss_fn, layer_types, per_layer,
                         synflow_keep_bn=keep, seed=seed, _owned=True)
    del net
    if detailed:
        return res
    return {k: r.value for k, r in res.items()}
