"""SWAP (pym1024/SWAP@f6049f7c, ICLR 2024): the number of distinct sample-wise activation
patterns of the ReLUs, averaged over Gaussian re-initialisations (docs/proxies.md, section "swap").

Proxies (registered on import, built in):

- ``swap``: mean over :data:`SWAP_REPEATS` re-initialisations (:func:`swap_init`) of the number
  of distinct rows of the neurons × batch sign matrix of every ``nn.ReLU`` call whose input is 4-D.
- ``swap_reg``: ``swap`` × exp(−(P − μ)² / σ), P = parameters in thousands
  (:func:`regular_factor`, μ = :data:`SWAP_REG_MU`, σ = :data:`SWAP_REG_SIGMA`: zcfast's
  choice for NAS-Bench-201, not published by the authors; see the docs).

Needs registered here (module backend only; ``score_arch`` on NAS-Bench-201 routes these
proxies to the module backend):

- ``swap_patterns``: ``ctx.data["swap_patterns"]`` = ``{"counts": [distinct rows per
  re-initialisation], "params_k": P}`` on a private copy; :func:`swap_patterns_need` builds it
  with another number of re-initialisations (e.g. fewer, for tests).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from zcfast import ops
from zcfast.proxies.builtin_needs import box_avg_pools_, call_generator, normal_init_
from zcfast.proxies.engine import _forward
from zcfast.proxies.needs import Need, NeedError, register_need
from zcfast.proxies.reductions import all_finite
from zcfast.proxies.registry import PassContext, ProxyResult, register_proxy

__all__ = ["SWAP_REPEATS", "SWAP_SAMPLES", "SWAP_REG_MU", "SWAP_REG_SIGMA", "swap_init", "swap_patterns_need",
           "swap_count", "params_thousands", "regular_factor"]

#: the official correlation script's re-initialisations (``--repeats 32``)
SWAP_REPEATS = 32
#: the official batch (``--input_samples 16``); zcfast scores the batch it is given
SWAP_SAMPLES = 16
#: swap_reg's μ and σ (parameters in thousands): zcfast's choice for NAS-Bench-201 (the
#: repository passes none and the paper gives none for it): μ near NB201's largest network
#: (1,531 K at 10 classes) and σ = 1.5e6 so the factor spans ~0.26 (73 K) to 1 over the space
SWAP_REG_MU = 1500.0
SWAP_REG_SIGMA = 1.5e6


def swap_init(model: nn.Module, generator: torch.Generator | None) -> None:
    """SWAP's re-initialisation (its ``network_weight_gaussian_init``), in place, in
    ``model.modules()`` order: Conv2d and Linear weights N(0, 1) from ``generator``, biases 0;
    BatchNorm2d / GroupNorm weights 1, biases 0. Affine-free norms are left alone (the official
    ``ones_(None)`` raises on them); running statistics are untouched (train mode ignores them)."""
    normal_init_(model, generator)


def params_thousands(model: nn.Module) -> float:
    """The official ``count_parameters``: Σ numel over ``named_parameters()`` (shared ones once)
    whose name does not contain "auxiliary", in thousands."""
    return sum(p.numel() for n, p in model.named_parameters() if "auxiliary" not in n) / 1e3


def regular_factor(params_k: float, mu: float = SWAP_REG_MU, sigma: float = SWAP_REG_SIGMA) -> float:
    """exp(−(P − μ)² / σ) with P in thousands (the official ``cal_regular_factor``; σ divides
    the square directly, it is not a standard deviation)."""
    return math.exp(-((params_k - mu) ** 2) / sigma)


def swap_count(net: nn.Module, x: torch.Tensor) -> int:
    """Distinct rows of the neurons × batch sign matrix of one no-grad forward of ``net`` on x [B, ...].

    Every ``nn.ReLU`` call (``isinstance``, subclasses included) whose input is 4-D adds its
    output's neurons ([B, C, H, W] -> C·H·W rows of B signs); the rows of all calls are counted
    together (``torch.unique(dim=0)`` of the concatenation in the official code), here as
    bit-packed codes (:func:`zcfast.ops.sign_pack`, :func:`zcfast.ops.distinct_rows`). A ReLU's
    output is ≥ 0, so its sign is the code ``out > 0``; taken in the hook (the official keeps the
    tensor and reads it after the forward, so a later in-place op would change it there).

    Raises:
        NeedError: no such ReLU call, or a non-finite activation.
    """
    packed: list[torch.Tensor] = []
    bad: list[str] = []
    names = {id(m): n for n, m in net.named_modules()}

    def hook(module: nn.Module, args: tuple, out: object) -> None:
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() != 4:
            return
        if not isinstance(out, torch.Tensor):
            return
        flat = out.detach().reshape(x.shape[0], -1)
        if not all_finite(flat):
            bad.append(names.get(id(module), type(module).__name__))
        packed.append(ops.sign_pack(flat.t()))   # the transposed view, read in place (4x faster than a copy)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            _forward(net, x)
    finally:
        for h in handles:
            h.remove()
    if not packed:
        raise NeedError("swap: no nn.ReLU module was called on a 4-D input [N, C, H, W] (SWAP counts the "
                        "activation patterns of such ReLUs; the official returns None here)")
    if bad:
        raise NeedError(f"swap: non-finite activations after the N(0, 1) re-initialisation in {bad[0]!r}, "
                        "so their signs are undefined")
    return ops.distinct_rows(torch.cat(packed, dim=0))


def swap_patterns_need(name: str, *, repeats: int = SWAP_REPEATS, description: str = "") -> Need:
    """A need giving ``ctx.data[name]`` = ``{"counts": [int] * repeats, "params_k": float}``.

    One private train-mode copy (its stride-1 average pools as
    :func:`~zcfast.proxies.builtin_needs.box_avg_pools_`: the same values); ``repeats`` times: :func:`swap_init` (every draw from one
    ``torch.Generator`` seeded with ``ctx.seed``, the stream continuing across repeats; the
    global RNG when ``ctx.seed`` is None), then :func:`swap_count` on the whole batch. The
    official draws from the global RNG the same way (its ``seed`` argument never reaches
    ``manual_seed``), so ``torch.manual_seed(s)`` before it reproduces ``seed=s`` on CPU.
    ``params_k`` is :func:`params_thousands` of the copy.
    """
    if repeats < 1:
        raise ValueError(f"swap_patterns_need: repeats must be >= 1, got {repeats}")

    def run(ctx: PassContext) -> None:
        x = ctx.batches[0][0]
        if not x.is_floating_point():
            raise NeedError(f"{name}: SWAP reads the ReLUs of a 4-D feature map; got "
                            f"{str(x.dtype).replace('torch.', '')} inputs")
        net = ctx.fresh_copy()
        net.train()
        box_avg_pools_(net)   # the same values, a faster forward of NB201's 3x3 average pools on CPU
        gen = call_generator(ctx, x.device)
        counts = []
        for _ in range(repeats):
            swap_init(net, gen)
            try:
                counts.append(swap_count(net, x))
            except ValueError as exc:
                raise NeedError(f"{name}: {exc}") from exc
        ctx.data[name] = {"counts": counts, "params_k": params_thousands(net)}

    return Need(name, run=run, floating_input=True,
                description=description or f"ctx.data[{name!r}]: SWAP distinct-pattern counts over {repeats} re-inits")


register_need(swap_patterns_need(
    "swap_patterns", description='ctx.data["swap_patterns"]: {"counts": distinct ReLU sign patterns of the batch '
                                 f"after each of {SWAP_REPEATS} N(0, 1) re-inits, \"params_k\": parameters / 1e3}}"),
    _builtin=True)


@register_proxy("swap", needs=("swap_patterns",), _builtin=True)
def swap(ctx: PassContext) -> ProxyResult:
    """Mean over the re-initialisations of the distinct activation patterns (official SWAP-Score)."""
    counts = ctx.data["swap_patterns"]["counts"]
    return ProxyResult("swap", float(sum(counts)) / len(counts))


@register_proxy("swap_reg", needs=("swap_patterns",), _builtin=True)
def swap_reg(ctx: PassContext) -> ProxyResult:
    """``swap`` × :func:`regular_factor` (μ = :data:`SWAP_REG_MU`, σ = :data:`SWAP_REG_SIGMA`,
    read at call time, so a user may set them for another space)."""
    d = ctx.data["swap_patterns"]
    factor = regular_factor(d["params_k"], SWAP_REG_MU, SWAP_REG_SIGMA)
    return ProxyResult("swap_reg", float(sum(d["counts"])) / len(d["counts"]) * factor)
