"""The paper's proxies (official semantics; see docs/proxies.md for every quirk).

Each is a function of the :class:`~zcfast.proxies.registry.PassContext` filled by the engine,
summed over the counted layers' weights (Conv2d and Linear by default).
"""
from __future__ import annotations

import math

import torch

from zcfast.proxies.reductions import (fisher_layer, jacob_cov_score, log_abs_prod_sum,
                                       stable_log_total, synflow_output_reason, synflow_overflow_reason,
                                       weight_saliency)
from zcfast.proxies.registry import PassContext, ProxyResult, register_proxy

BUILTIN: tuple[str, ...] = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow", "plain")
JACOB_COV_K = 1e-5


def _from_per_layer(name: str, names: list[str], per: torch.Tensor,
                    log_value: float | None = None, error: str | None = None) -> ProxyResult:
    values = per.tolist()
    total = float(per.sum())
    return ProxyResult(name, total, dict(zip(names, values)), log_value, error)


@register_proxy("grad_norm", needs=("grads",), _builtin=True)
def grad_norm(ctx: PassContext) -> ProxyResult:
    """Σ_layers ‖∂L/∂W‖₂ (cross-entropy loss, BatchNorm in training mode)."""
    assert ctx.grads is not None
    return _from_per_layer("grad_norm", ctx.layer_names, weight_saliency(ctx.weights, ctx.grads, "grad_norm"))


@register_proxy("snip", needs=("grads",), _builtin=True)
def snip(ctx: PassContext) -> ProxyResult:
    """Σ|W⊙∂L/∂W| (the official |∂L/∂mask| of an all-ones weight mask)."""
    assert ctx.grads is not None
    return _from_per_layer("snip", ctx.layer_names, weight_saliency(ctx.weights, ctx.grads, "snip"))


@register_proxy("grasp", needs=("hessian_grad",), _builtin=True)
def grasp(ctx: PassContext) -> ProxyResult:
    """−Σ W⊙(H·g), g = ∂L/∂W, one iteration on the batch; the official sign flip included."""
    assert ctx.hessian_grads is not None
    return _from_per_layer("grasp", ctx.layer_names, weight_saliency(ctx.weights, ctx.hessian_grads, "grasp"))


@register_proxy("plain", needs=("grads",), _builtin=True)
def plain(ctx: PassContext) -> ProxyResult:
    """Σ W⊙∂L/∂W (no absolute value)."""
    assert ctx.grads is not None
    return _from_per_layer("plain", ctx.layer_names, weight_saliency(ctx.weights, ctx.grads, "plain"))


@register_proxy("fisher", needs=("fisher",), _builtin=True)
def fisher(ctx: PassContext) -> ProxyResult:
    """Σ_layers Σ_c fan_in · 0.5·mean_n(Σ_spatial act·∂L/∂act)² on each layer's output."""
    assert ctx.fisher_pairs is not None and ctx.fisher_channel_dims is not None
    per = torch.stack([fisher_layer(pairs, w.numel(), dim).to(torch.float32).cpu()
                       for pairs, w, dim in zip(ctx.fisher_pairs, ctx.weights, ctx.fisher_channel_dims)])
    return _from_per_layer("fisher", ctx.layer_names, per)


@register_proxy("jacob_cov", needs=("jacobian",), _builtin=True)
def jacob_cov(ctx: PassContext) -> ProxyResult:
    """−Σ[log(λ+k) + 1/(λ+k)], λ the eigenvalues of the N×N correlation of J's rows, k=1e-5."""
    assert ctx.jacobian is not None
    value, error = jacob_cov_score(ctx.jacobian, JACOB_COV_K)
    return ProxyResult("jacob_cov", value, None, None, error)


@register_proxy("synflow", needs=("synflow",), _builtin=True)
def synflow(ctx: PassContext) -> ProxyResult:
    """Σ|W⊙∂R/∂W| on the |θ|, float64, BatchNorm-free copy with a ones[1, ...] input.

    ``log_value`` = ln(value), computed from per-layer logsumexp when the float64 sum
    overflows; a non-finite forward output or gradient is reported in ``error``.
    """
    assert ctx.synflow_weights is not None and ctx.synflow_grads is not None
    names = ctx.layer_names
    out = ctx.synflow_output
    if out is None or not math.isfinite(out):
        return ProxyResult("synflow", float("nan"), None, None, synflow_output_reason(out))
    per = weight_saliency(ctx.synflow_weights, ctx.synflow_grads, "synflow")
    total = float(per.sum())
    if math.isnan(total):  # diagnose only when needed (a NaN/inf gradient makes the sum NaN/inf)
        bad = [n for n, g in zip(names, ctx.synflow_grads) if g is not None and not torch.isfinite(g).all()]
        return ProxyResult("synflow", float("nan"), None, None,
                           f"synflow: non-finite gradients in float64 at layers {bad[:5]}")
    if math.isfinite(total):
        log_value = math.log(total) if total > 0 else float("-inf")
        return _from_per_layer("synflow", names, per, log_value)
    # the float64 sum overflowed: keep a finite log-scale value, report the overflow
    logs = [log_abs_prod_sum(w, g) if g is not None else float("-inf")
            for w, g in zip(ctx.synflow_weights, ctx.synflow_grads)]
    log_value = stable_log_total(logs)
    return _from_per_layer("synflow", names, per, log_value, synflow_overflow_reason(log_value))
