"""Plain-PyTorch references of every op in :mod:`zcfast.ops` (docs/design.md §1).

They follow the contracts exactly (same shapes, result dtypes and NaN rules) but are written for
clarity, not speed: a Python loop over tensors, everything computed in float64 from the inputs'
exact values and only then cast to the contract's result dtype. Tests compare the fused kernels
against these; the benchmark uses them as the baselines for ``fisher`` and ``jacob_cov``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

SALIENCY_KINDS = ("abs_prod", "prod", "grad_norm", "param_sq")
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation (= result) dtype for inputs of ``dtype``: float64 stays, others float32."""
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"unsupported dtype {dtype}: expected float32, float64, bfloat16 or float16")
    return torch.float64 if dtype == torch.float64 else torch.float32


def saliency(params: Sequence[Tensor], grads: Sequence[Tensor], kind: str) -> tuple[Tensor, Tensor]:
    """Reference of :func:`zcfast.ops.saliency`.

    Args:
        params: T tensors θ_i of any shape.
        grads: T tensors g_i, ``grads[i].shape == params[i].shape``.
        kind: ``"abs_prod"`` Σ|θ⊙g|, ``"prod"`` Σθ⊙g, ``"grad_norm"`` ‖g‖₂, ``"param_sq"`` Σθ².

    Returns:
        ``(per_tensor [T], total [])`` in the accumulation dtype; ``total = per_tensor.sum()``.
    """
    if kind not in SALIENCY_KINDS:
        raise ValueError(f"saliency: kind must be one of {SALIENCY_KINDS}, got {kind!r}")
    if len(params) != len(grads):
        raise ValueError(f"saliency: len(params)={len(params)} != len(grads)={len(grads)}")
    out_dtype = acc_dtype(params[0].dtype) if len(params) else torch.float32
    device = params[0].device if len(params) else torch.device("cpu")
    values = []
    for p, g in zip(params, grads):
        p64, g64 = p.detach().double(), g.detach().double()
        if kind == "abs_prod":
            v = (p64 * g64).abs().sum()
        elif kind == "prod":
            v = (p64 * g64).sum()
        elif kind == "grad_norm":
            v = (g64 * g64).sum().sqrt()
        else:
            v = (p64 * p64).sum()
        values.append(v)
    per = torch.stack(values) if values else torch.zeros(0, dtype=torch.float64, device=device)
    return per.to(out_dtype), per.sum().to(out_dtype)


def fisher(act: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    """Reference of :func:`zcfast.ops.fisher`.

    Args:
        act: a layer's output activation, ``[N, C, *rest]``.
        grad: the loss gradient w.r.t. ``act``, same shape.

    Returns:
        ``(per_channel [C], total [])``: ``per_channel[c] = 0.5 · mean_n (Σ_rest act·grad)²``.
    """
    if act.dim() < 2 or act.shape != grad.shape:
        raise ValueError(f"fisher: act and grad must share a shape [N, C, ...], got "
                         f"{tuple(act.shape)} and {tuple(grad.shape)}")
    out_dtype = acc_dtype(act.dtype)
    prod = act.detach().double() * grad.detach().double()
    s = prod.reshape(act.shape[0], act.shape[1], -1).sum(dim=2)  # [N, C]
    per_channel = 0.5 * (s * s).mean(dim=0)
    return per_channel.to(out_dtype), per_channel.sum().to(out_dtype)


def jacob_cov(jacobians: Tensor, k: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Reference of :func:`zcfast.ops.jacob_cov`, one model at a time.

    Args:
        jacobians: ``[M, N, D]``: M models, N samples, D input features.
        k: the score's regulariser (the paper's 1e-5).

    Returns:
        ``(scores [M], eigenvalues [M, N])``: per model, ``torch.corrcoef`` of the N rows (float64),
        its eigenvalues ascending, ``score = −Σ[log(λ+k) + 1/(λ+k)]``. A model whose correlation
        matrix has a non-finite entry (a zero-variance row), and every model when N < 2 or
        D = 0, gets NaN score and NaN eigenvalues. ``k`` must be finite and > 0.
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k <= 0:
        raise ValueError(f"jacob_cov: k must be a finite number > 0 (the paper uses 1e-5), got {k!r}")
    if jacobians.dim() != 3:
        raise ValueError(f"jacob_cov: jacobians must be [M, N, D], got shape {tuple(jacobians.shape)}")
    out_dtype = acc_dtype(jacobians.dtype)
    M, N, _ = jacobians.shape
    scores = torch.empty(M, dtype=torch.float64)
    eigs = torch.empty(M, N, dtype=torch.float64)
    for m in range(M):
        rows = jacobians[m].detach().double().cpu()
        corr = torch.corrcoef(rows) if N > 0 else torch.zeros(0, 0, dtype=torch.float64)
        corr = corr.reshape(N, N)
        if N < 2 or jacobians.shape[2] == 0 or not torch.isfinite(corr).all():
            scores[m] = float("nan")
            eigs[m] = float("nan")
            continue
        lam = torch.linalg.eigvalsh(corr)
        eigs[m] = lam
        scores[m] = -(torch.log(lam + k) + 1.0 / (lam + k)).sum()
    return scores.to(out_dtype).to(jacobians.device), eigs.to(out_dtype).to(jacobians.device)
