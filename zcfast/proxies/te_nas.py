"""TE-NAS's two training-free measures (Chen, Gong & Wang, ICLR 2021): the condition number of
the neural tangent kernel and the number of linear regions.

Proxies (registered on import, built in):

- ``ntk_cond``: κ = λmax / λmin of the NTK Gram matrix (need ``ntk_gram``); **lower is better**,
  reported raw (the ensemble ``te_nas`` in :mod:`zcfast.ensemble` ranks −κ).
- ``linear_regions``: how many distinct ReLU sign patterns the samples of a Gaussian batch have
  through the whole network (need ``relu_sign_patterns``); higher is better.

TE-NAS's score rank(−κ) + rank(#regions) is a population aggregate, not a per-network proxy:
it is the ensemble ``te_nas`` (not registered here).

Official code read: VITA-Group/TENAS@9df78ffd, ``lib/procedures/ntk.py`` (``get_ntk_n``) and
``lib/procedures/linear_region_counter.py`` (``Linear_Region_Collector``, ``LinearRegionCount``),
with the per-architecture port idstcv/ZenNAS@d1d617e0 ``ZeroShotProxy/compute_te_nas_score.py``
(the official only prunes a supernet; the port draws ``torch.randn`` inputs instead of images).

Needs registered here (module backend only; :mod:`zcfast.batched` does not produce them):

- ``ntk_gram``: ``ctx.data["ntk_gram"]`` = the Gram matrix ``G Gᵀ`` [N, N] (float32 for a float32 model) of the
  per-sample gradients G [N, P]: row i = ∂(Σ_c logits[i, c])/∂W over every parameter whose
  *name* contains "weight" (``named_parameters`` order; BatchNorm weights included, biases not;
  ``layer_types`` does not apply), from **one** train-mode forward of the batch (BatchNorm over
  the batch) and the backwards of ``get_ntk_n`` (one per sample, graph retained; here a few rows per
  batched backward, the same gradients; stride-1 average pools as :func:`box_avg_pools_`). A weight
  the logits do not reach is left out (official: ``W.grad is not None``; zeros give the same Gram).
- ``relu_sign_patterns``: ``ctx.data["relu_sign_patterns"]`` = ``[N, W]`` int64, each sample's
  codes ``out > 0`` of every call of an ``nn.ReLU`` (``isinstance``) whose input is 4-D,
  bit-packed per call with :func:`zcfast.ops.sign_pack` and concatenated (the official
  concatenates the calls' outputs flattened per sample), from a no-grad train-mode forward of
  its **own** N(0, 1) input of the batch's shape (the batch gives only N and the sample shape).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from zcfast import ops
from zcfast.proxies.engine import _forward
from zcfast.proxies.builtin_needs import box_avg_pools_, call_generator, channels_last_
from zcfast.proxies.needs import Need, NeedError, register_need
from zcfast.proxies.reductions import has_nan
from zcfast.proxies.registry import PassContext, ProxyResult, register_proxy

__all__ = ["NTK_NAN_VALUE", "NTK_ROWS_PER_BACKWARD", "ntk_condition", "ntk_gram_of", "relu_sign_patterns_of"]

#: what the official ``np.nan_to_num(..., nan=100000.0)`` puts for a NaN κ (0/0: an all-zero NTK)
NTK_NAN_VALUE = 1e5


# ------------------------------------------------------------------------------------------
# needs
# ------------------------------------------------------------------------------------------
#: rows of the NTK's Jacobian per backward; > 1: one batched backward (``is_grads_batched``) of
#: that many one-hot cotangents. On NAS-Bench-201 at batch 32 (1 CPU thread), once the average
#: pools are fast, 1 was measured fastest (4.4 s vs 4.7 s for 2, 5.4 s for 4, 6.2 s for 8)
NTK_ROWS_PER_BACKWARD = 1


def ntk_gram_of(net: nn.Module, x: torch.Tensor, rows_per_backward: int = NTK_ROWS_PER_BACKWARD) -> torch.Tensor:
    """The NTK Gram matrix [N, N] (the weights' dtype: float32 as official) of ``net`` (train
    mode, modified: its "weight" parameters are set to require grad, its stride-1 average pools
    take :func:`~zcfast.proxies.builtin_needs.box_avg_pools_`, and a CPU NB201 copy becomes
    channels_last by :func:`~zcfast.proxies.builtin_needs.channels_last_`) on ``x`` [N, ...]: one forward,
    then row i = the gradient of Σ_c logits[i, c] w.r.t. every parameter named "...weight...",
    concatenated into G [N, P]; G Gᵀ.

    The official takes one backward per row (graph retained); here ``rows_per_backward`` rows
    share one batched backward (one-hot cotangents, ``is_grads_batched``): the same gradients
    (each row is still its own vector-Jacobian product through the batch-coupled BatchNorm)."""
    weights = [p for name, p in net.named_parameters() if "weight" in name and p.is_floating_point()]
    if not weights:
        raise NeedError("ntk_cond: the model has no parameter whose name contains 'weight' (TE-NAS's NTK "
                        "differentiates those)")
    if isinstance(rows_per_backward, bool) or not isinstance(rows_per_backward, int) or rows_per_backward < 1:
        raise ValueError(f"rows_per_backward must be an int >= 1, got {rows_per_backward!r}")
    for p in weights:
        p.requires_grad_(True)
    net.train()
    box_avg_pools_(net)
    # NB201 on CPU: channels_last convolutions, float64-statistics BatchNorms (~1.8x faster backwards)
    x = x.contiguous(memory_format=channels_last_(net))
    logits = _forward(net, x)
    if logits.shape[0] != x.shape[0]:
        raise NeedError(f"ntk_cond: the model returned {logits.shape[0]} rows for {x.shape[0]} samples; the NTK "
                        "needs one logits row per sample")
    if not logits.requires_grad:
        raise NeedError("ntk_cond: the logits do not depend on any 'weight' parameter, so the NTK is empty")
    n = x.shape[0]
    # cotangent k of a chunk: ones on logits row s + k, zeros elsewhere (d Σ_c logits[s+k, c])
    eye = torch.eye(n, dtype=logits.dtype, device=logits.device)
    eye = eye.reshape(n, n, *([1] * (logits.dim() - 1))).expand(n, *logits.shape)
    chunks: list[torch.Tensor] = []
    for s in range(0, n, rows_per_backward):
        v = eye[s:s + rows_per_backward]
        keep = s + rows_per_backward < n
        if v.shape[0] == 1:
            gs = torch.autograd.grad(logits, weights, v[0], retain_graph=keep, allow_unused=True)
            gs = tuple(g.unsqueeze(0) if g is not None else None for g in gs)
        else:
            gs = torch.autograd.grad(logits, weights, v, retain_graph=keep, is_grads_batched=True, allow_unused=True)
        chunks.append(torch.cat([g.detach().reshape(v.shape[0], -1) for g in gs if g is not None], 1))
    del logits
    grads = torch.cat(chunks)
    del chunks
    return grads @ grads.t()


def _ntk_gram(ctx: PassContext) -> None:
    net = ctx.fresh_copy()
    ctx.data["ntk_gram"] = ntk_gram_of(net, ctx.batches[0][0])


def relu_sign_patterns_of(net: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Bit-packed ReLU codes [N, W] int64 of ``net`` (modified: switched to train mode, its
    stride-1 average pools take :func:`~zcfast.proxies.builtin_needs.box_avg_pools_`, the same
    values) on ``z`` [N, ...]: a no-grad forward; every call of an ``nn.ReLU`` whose input is 4-D
    adds ``ops.sign_pack(out.reshape(N, -1))`` (its codes ``out > 0``, packed when the call runs).

    Raises:
        NeedError: no such ReLU call, or a ReLU output that is NaN (the official count is NaN).
    """
    net.train()
    box_avg_pools_(net)
    n = z.shape[0]
    packed: list[torch.Tensor] = []
    bad: list[str] = []

    def hook(m: nn.Module, args: tuple, out: object, _n: str) -> None:
        if not (args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4 and isinstance(out, torch.Tensor)):
            return   # the official hook records ReLUs on 4-D inputs only
        flat = out.detach().reshape(n, -1)
        if has_nan(flat):
            bad.append(_n)
        packed.append(ops.sign_pack(flat))

    handles = [m.register_forward_hook(lambda mod, args, out, _n=name: hook(mod, args, out, _n))
               for name, m in net.named_modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            _forward(net, z)
    finally:
        for h in handles:
            h.remove()
    if not handles:
        raise NeedError("linear_regions: the model has no nn.ReLU module (TE-NAS counts ReLU sign patterns)")
    if not packed:
        raise NeedError("linear_regions: no nn.ReLU was called on a 4-D (N, C, H, W) input; TE-NAS records only "
                        "those")
    if bad:
        raise NeedError(f"linear_regions: the output of {bad[0]} is NaN on the Gaussian input, so its sign "
                        "pattern is undefined (the official count is NaN)")
    return torch.cat(packed, dim=1)


def _relu_sign_patterns(ctx: PassContext) -> None:
    x = ctx.batches[0][0]
    if not x.is_floating_point():
        raise NeedError("linear_regions: its inputs are N(0, 1) noise of the batch's shape, which a model of "
                        f"{str(x.dtype).replace('torch.', '')} inputs (e.g. token ids) cannot read")
    gen = call_generator(ctx, x.device)
    z = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    ctx.data["relu_sign_patterns"] = relu_sign_patterns_of(ctx.fresh_copy(), z)


for _need in (
        Need("ntk_gram", run=_ntk_gram,
             description='ctx.data["ntk_gram"]: the NTK Gram matrix [N, N] of per-sample gradients of the summed '
                         'logits w.r.t. every parameter named "weight" (one train-mode forward, TE-NAS)'),
        Need("relu_sign_patterns", run=_relu_sign_patterns, reads_inputs=False,   # refuses integer inputs itself
             description='ctx.data["relu_sign_patterns"]: [N, W] int64 packed codes of every nn.ReLU call on a 4-D '
                         'input, on N(0, 1) inputs of the batch\'s shape (TE-NAS linear regions)')):
    register_need(_need, _builtin=True)
del _need


# ------------------------------------------------------------------------------------------
# proxies
# ------------------------------------------------------------------------------------------
def ntk_condition(gram: torch.Tensor) -> tuple[float, str | None]:
    """κ = λmax / λmin of ``gram`` [N, N] as the official: ``eigvalsh`` in the Gram's dtype
    (float32; ascending), ``λ[-1] / λ[0]``, NaN (0/0) -> :data:`NTK_NAN_VALUE`. A λmin of exactly
    0 gives inf with a reason (the official ``nan_to_num`` turns it into 1.8e308); a λmin that
    rounding makes negative gives a negative κ, kept as the official does."""
    eig = torch.linalg.eigvalsh(gram)
    kappa = float(eig[-1] / eig[0])
    if math.isnan(kappa):
        return NTK_NAN_VALUE, None
    if math.isinf(kappa):
        return kappa, ("ntk_cond: the NTK's smallest eigenvalue is 0 (κ = inf): the NTK is singular, e.g. "
                       "duplicated inputs or fewer weights than samples (the official nan_to_num reports 1.8e308)")
    return kappa, None


@register_proxy("ntk_cond", needs=("ntk_gram",), _builtin=True)
def ntk_cond(ctx: PassContext) -> ProxyResult:
    """κ of the NTK (lower is better), raw; an all-zero NTK (κ = 0/0) is 1e5, as the official."""
    value, error = ntk_condition(ctx.data["ntk_gram"])
    return ProxyResult("ntk_cond", value, None, None, error)


@register_proxy("linear_regions", needs=("relu_sign_patterns",), _builtin=True)
def linear_regions(ctx: PassContext) -> ProxyResult:
    """The number of distinct rows of the packed ReLU codes: the linear regions the Gaussian batch
    visits (1 ≤ value ≤ N; higher is better)."""
    return ProxyResult("linear_regions", float(ops.distinct_rows(ctx.data["relu_sign_patterns"])))
