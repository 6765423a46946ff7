"""AZ-NAS's four measures as proxies of their own (cvlab-yonsei/AZ-NAS@5e6683a2,
``NB201/ZeroShotProxy/compute_az_nas_score.py``; docs/proxies.md, "az_nas").

Proxies (registered on import, built in):

- ``az_expressivity``: Σ over features (stem output, then every cell output) of the entropy of
  the normalised eigenvalue spectrum of the channel covariance over the B·H·W positions.
- ``az_progressivity``: the minimum over consecutive features of the entropy's increase.
- ``az_trainability``: mean over cells of 2 − σmax − 1/(σmax + 1e-6), σmax the largest singular
  value of the cross-covariance of a Rademacher output gradient and the gradient it gives the
  cell's input (pixel-unshuffled where the cell changes the resolution); −inf for a cell that
  passes the gradient through unchanged.
- ``az_complexity``: MFLOPs per sample (the ``flops_counts`` need of
  :mod:`zcfast.proxies.suite_zero`: NAS-Bench-201's published convention; the official notebook
  reads the same figures from the benchmark's API).

Higher is better for all four in the official aggregation (Σ log(rank/N) over the four with
ascending ranks, best = argmax); that aggregate is the ensemble ``az_nas`` of
:mod:`zcfast.ensemble`, not a proxy: it ranks a population.

Need registered here (module backend only):

- ``az_pass``: ``ctx.data["az_pass"]`` = ``{"cells": [name, ...], "shapes": [[N, C, H, W],
  ...], "spectra": [eigenvalues float64 [C_t], ...], "trainability": [(cell name, score), ...],
  "trainability_error": str | None}`` from one pass of a private copy with the official
  initialisation (:func:`az_init`) on an N(0, 1) input of the batch's shape (official: batch 64),
  train mode, features recorded at the modules the model's ``zcfast_cells()`` lists
  (:mod:`zcfast.proxies.cells`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from zcfast import ops
from zcfast.proxies.cells import CellsError, record_cells
from zcfast.proxies.builtin_needs import box_avg_pools_, call_generator
from zcfast.proxies.needs import Need, NeedError, register_need
from zcfast.proxies.registry import PassContext, ProxyResult, register_proxy

__all__ = ["AZ_NAS", "AZ_BATCH", "AZ_LOG_EPS", "AZ_SIGMA_EPS", "az_init", "rademacher_like",
           "spectrum_entropy", "trainability_score"]

#: the four measures, in the official aggregation's order (complexity is the notebook's FLOPs)
AZ_NAS: tuple[str, ...] = ("az_expressivity", "az_progressivity", "az_trainability", "az_complexity")
#: the official batch of Gaussian inputs (the NB201 loader's batch size; pass 64 samples to match)
AZ_BATCH = 64
#: the official entropy's ε: Σ −p·log(p + 1e-8)
AZ_LOG_EPS = 1e-8
#: the official trainability's ε: 2 − σmax − 1/(σmax + 1e-6)
AZ_SIGMA_EPS = 1e-6


def az_init(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """AZ-NAS's ``kaiming_norm_fanin`` initialisation, in place, from ``generator`` (default: the
    global RNG, as the official), in
    ``model.modules()`` order (``model.apply``'s order for these leaf modules): every
    ``nn.Conv2d`` / ``nn.Linear`` weight ``kaiming_normal_(mode="fan_in", nonlinearity="relu")``
    (N(0, 2/fan_in)), bias 0; every affine ``nn.BatchNorm2d`` / ``nn.GroupNorm`` weight 1, bias 0.

    Official quirk kept: only these four types are touched, so Conv1d/Conv3d/transposed
    convolutions, BatchNorm1d and LayerNorm keep the weights they had."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


#: mantissa bits of the uniform draw behind CPU ``torch.bernoulli`` for each dtype of p
_UNIFORM_BITS = {torch.float32: 24, torch.float64: 53}


def rademacher_like(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """The official Rademacher cotangent ``(torch.bernoulli(torch.ones_like(t) * 0.5) - 0.5) * 2``
    (±1 of ``t``'s shape and dtype), bit for bit and leaving ``generator`` in the same state.

    On CPU, ``bernoulli`` with a float32 (float64) probability tensor draws one 32-bit (64-bit)
    mt19937 number per element, in memory order, takes its low 24 (53) bits as a uniform
    u = bits · 2⁻²⁴ (2⁻⁵³), and returns u < 0.5: 1 exactly when bit 23 (52) is clear.
    ``torch.randint(0, 2²⁴ (2⁵³))`` draws the same numbers in the same order and keeps the same
    bits (``random() % 2²⁴``), 5–6× faster on [32, 16, 32, 32] (one serial draw per element, no
    probability tensor, no float compare per element).
    Other devices, dtypes and non-contiguous ``t`` take ``torch.bernoulli`` itself.

    Args:
        t: any tensor [*S]; only its shape, dtype, device and layout are read.
        generator: the stream to draw from (``None``: the global RNG).
    Returns:
        [*S] tensor of ±1 in ``t.dtype``.
    """
    bits = _UNIFORM_BITS.get(t.dtype)
    if t.device.type != "cpu" or bits is None or not t.is_contiguous():
        return (torch.bernoulli(torch.full_like(t, 0.5), generator=generator) - 0.5) * 2
    # the draws as floats of t's dtype (exact: every value < 2**bits fits its mantissa), then in
    # place: 1 where bit (bits-1) is set, i.e. u >= 0.5, mapped to -1, else +1
    r = torch.randint(0, 1 << bits, t.shape, generator=generator, dtype=t.dtype)
    return r.ge_(1 << (bits - 1)).mul_(-2.0).add_(1.0)


def spectrum_entropy(eig: torch.Tensor) -> float:
    """The official expressivity term of one feature: with p = λ / Σλ over the channel
    covariance's eigenvalues ``eig`` [C], Σ −p·log(p + 1e-8). NaN when Σλ = 0 (a feature that
    is constant over every position, e.g. the output of an all-``none`` cell)."""
    p = eig / eig.sum()
    return float(torch.sum(-p * torch.log(p + AZ_LOG_EPS)))


def trainability_score(g_out: torch.Tensor, g_in: torch.Tensor) -> float:
    """The official per-cell term from the cell's Rademacher output gradient ``g_out``
    [B, C_o, H_o, W_o] and the input gradient it gives ``g_in`` [B, C_i, H_i, W_i]:
    −inf when they are equal (the cell passes the gradient through unchanged); else g_in
    pixel-unshuffled by H_i/H_o where the resolutions differ, M = g_inᵀ g_out / (B·H_o·W_o)
    over positions ([C_i', C_o]: per-sample products in the gradients' dtype, their sum over B in
    float64), σmax its largest singular value, score
    2 − σmax − 1/(σmax + 1e-6).

    Raises:
        ValueError: shapes the official code cannot pair (resolution grows, a non-integer or
            non-square stride, a batch that differs).
    """
    if g_out.shape == g_in.shape and bool(torch.equal(g_in, g_out)):
        return float("-inf")
    if g_out.dim() != 4 or g_in.dim() != 4:
        raise ValueError(f"trainability pairs 4-D gradients [B, C, H, W], got {list(g_in.shape)} -> {list(g_out.shape)}")
    bo, co, ho, wo = g_out.shape
    if g_in.shape[2:] != g_out.shape[2:]:
        hi, wi = g_in.shape[2], g_in.shape[3]
        stride = hi // ho if ho else 0
        if stride < 1 or hi != stride * ho or wi != stride * wo:
            raise ValueError(f"trainability pixel-unshuffles the input gradient by one integer stride; a cell "
                             f"mapping {hi}x{wi} to {ho}x{wo} has none")
        g_in = nn.functional.pixel_unshuffle(g_in, stride)
    if g_in.shape[0] != bo or g_in.shape[2:] != g_out.shape[2:]:
        raise ValueError(f"trainability: input gradient {list(g_in.shape)} does not pair with output gradient "
                         f"{list(g_out.shape)}")
    # per sample [C_i', H·W] @ [H·W, C_o] on views (no permuted copy), summed over B in float64
    per_sample = torch.bmm(g_in.reshape(bo, g_in.shape[1], ho * wo), g_out.reshape(bo, co, ho * wo).transpose(1, 2))
    mat = per_sample.double().sum(dim=0) / (bo * ho * wo)
    smax = float(torch.linalg.svdvals(mat).max())
    return 2.0 - smax - 1.0 / (smax + AZ_SIGMA_EPS)


def _az_pass(ctx: PassContext) -> None:
    """The official pass on a private copy: :func:`az_init`, then an N(0, 1) input of the
    batch's shape (after the weights, as the official order), a train-mode forward
    with autograd recording up to the last listed cell, each feature's channel-covariance
    spectrum (:func:`zcfast.ops.channel_spectra`, ``kind="cov"``), then the cells from last to
    first, each drawing its Rademacher vector (the official ``torch.bernoulli(0.5)`` numbers, by
    :func:`rademacher_like`) and differentiating its output w.r.t. the feature before it.

    Every draw comes from one generator seeded with the call's ``seed`` (the official draws from
    the global RNG: after ``torch.manual_seed(seed)`` the CPU streams are the same), so the
    values do not depend on which other needs ran first in the call; ``seed=None``: the global RNG."""
    x0 = ctx.batches[0][0]
    if not x0.is_floating_point():
        raise NeedError("az_nas: its inputs are Gaussian noise of the batch's shape, which a model of "
                        f"{str(x0.dtype).replace('torch.', '')} inputs (e.g. token ids) cannot read")
    gen = call_generator(ctx, x0.device)
    net = ctx.fresh_copy()
    az_init(net, gen)
    box_avg_pools_(net)   # the same values, a faster forward and per-cell backward on CPU
    xg = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=gen)
    for p in net.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    # the input requires grad too (values unchanged): a parameter-free stem still gives a graph
    xg.requires_grad_(True)
    with torch.enable_grad():
        feats = record_cells(net, xg, "az_nas")
    names = [n for n, _ in feats]
    for name, f in feats:
        if f.dim() != 4:
            raise CellsError(f"az_nas reads [B, C, H, W] feature maps; cell {name!r} returned shape {list(f.shape)}")
    spectra = ops.channel_spectra([f.detach().transpose(0, 1).reshape(f.shape[1], -1) for _, f in feats], kind="cov")
    scores: list[tuple[str, float]] = []
    error: str | None = None
    for i in reversed(range(1, len(feats))):
        f_out, f_in = feats[i][1], feats[i - 1][1]
        g_out = rademacher_like(f_out.detach(), gen)
        if not f_out.requires_grad:
            error = f"az_trainability: the output of cell {names[i]!r} has no autograd graph (it depends on nothing)"
            break
        (g_in,) = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True, allow_unused=True)
        if g_in is None:
            error = (f"az_trainability: the output of cell {names[i]!r} does not depend on the feature before it "
                     f"({names[i - 1]!r}), so its input gradient is undefined")
            break
        try:
            scores.append((names[i], trainability_score(g_out, g_in)))
        except ValueError as exc:
            error = f"az_trainability: cell {names[i]!r}: {exc}"
            break
    scores.reverse()
    ctx.data["az_pass"] = {"cells": names, "shapes": [list(f.shape) for _, f in feats],
                           "spectra": spectra, "trainability": scores, "trainability_error": error}
    del feats


register_need(Need("az_pass", run=_az_pass, floating_input=True, reads_inputs=False,
                   description='ctx.data["az_pass"]: per listed cell (zcfast_cells) the channel-covariance '
                               "spectrum and the trainability term, from AZ-NAS's own init and Gaussian input"),
              _builtin=True)


def _nan_to_official(name: str, value: float, per: dict[str, float], why: str) -> ProxyResult:
    """The official ``float(v) if not isnan(v) else -inf``: NaN becomes −inf, with the reason."""
    if math.isnan(value):
        return ProxyResult(name, float("-inf"), per, None, f"{name}: {why} (the official code maps NaN to -inf)")
    if not math.isfinite(value):
        return ProxyResult(name, value, per, None, f"{name}: {why}")
    return ProxyResult(name, value, per)


def _entropies(ctx: PassContext) -> tuple[list[str], list[float]]:
    d = ctx.data["az_pass"]
    return d["cells"], [spectrum_entropy(s) for s in d["spectra"]]


@register_proxy("az_expressivity", needs=("az_pass",), _builtin=True)
def az_expressivity(ctx: PassContext) -> ProxyResult:
    """Σ over the stem and cell features of the spectrum entropy (:func:`spectrum_entropy`).

    ``per_layer``: each feature's entropy. A feature constant over every position (zero
    covariance) makes it NaN, which the official code reports as −inf."""
    names, ent = _entropies(ctx)
    per = dict(zip(names, ent))
    bad = [n for n, e in per.items() if math.isnan(e)]
    return _nan_to_official("az_expressivity", float(sum(ent)), per,
                            f"the features of {bad[:3]} are constant over every position (zero covariance)")


@register_proxy("az_progressivity", needs=("az_pass",), _builtin=True)
def az_progressivity(ctx: PassContext) -> ProxyResult:
    """min over consecutive features of entropy(next) − entropy(previous).

    ``per_layer``: each cell's increase over the feature before it. NaN entropies (constant
    features) make it −inf, as the official code (its ``np.min`` propagates NaN)."""
    names, ent = _entropies(ctx)
    diffs = {names[i]: ent[i] - ent[i - 1] for i in range(1, len(ent))}
    value = min(diffs.values())
    if any(math.isnan(v) for v in diffs.values()):
        value = float("nan")
    bad = [n for n, e in zip(names, ent) if math.isnan(e)]
    return _nan_to_official("az_progressivity", value, diffs,
                            f"the features of {bad[:3]} are constant over every position (zero covariance)")


@register_proxy("az_trainability", needs=("az_pass",), _builtin=True)
def az_trainability(ctx: PassContext) -> ProxyResult:
    """Mean over cells of :func:`trainability_score` (one Rademacher vector per cell).

    ``per_layer``: each cell's term. A cell that passes the gradient through unchanged (e.g.
    an NB201 cell whose only live path is ``skip_connect``) scores −inf, so the mean is −inf:
    the official value, reported with the reason."""
    d = ctx.data["az_pass"]
    if d["trainability_error"] is not None:
        return ProxyResult("az_trainability", float("nan"), None, None, d["trainability_error"])
    per = dict(d["trainability"])
    value = sum(per.values()) / len(per)
    ident = [n for n, v in per.items() if v == float("-inf")]
    why = (f"cells {ident[:3]} pass the gradient through unchanged (the official score of such a cell is -inf)"
           if ident else "a cell's term is not finite")
    return _nan_to_official("az_trainability", value, per, why)


@register_proxy("az_complexity", needs=("flops_counts",), _builtin=True)
def az_complexity(ctx: PassContext) -> ProxyResult:
    """MFLOPs per sample, the same figure as ``flops`` (the official notebook reads NAS-Bench-201's
    published FLOPs, which ``flops`` reproduces); higher ranks higher in the official aggregate."""
    per: dict[str, float] = {}
    for name, macs in ctx.data["flops_counts"]:
        per[name] = per.get(name, 0.0) + macs / 1e6
    return ProxyResult("az_complexity", sum(m for _, m in ctx.data["flops_counts"]) / 1e6, per)
