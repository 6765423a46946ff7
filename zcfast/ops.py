"""Fused zero-cost-proxy kernels (C++ / CUDA), exposed as typed functions.

The ops are registered with the PyTorch dispatcher as ``torch.ops.zcfast.*`` (schemas in
``csrc/zcfast.cpp``; CPU kernels in ``csrc/cpu``, CUDA kernels in ``csrc/cuda``) and have fake
kernels, so they work under ``torch.compile``. Contracts: docs/design.md §1.

Dtypes: inputs may be float32, float64, bfloat16 or float16. Sums accumulate in float64 for
float64 inputs and in float32 otherwise; results have that accumulation dtype. All tensors of one
call must share one dtype and one device. Bad input raises ``ValueError`` naming the argument.
None of these ops is differentiable (they compute scores, not losses).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

try:
    from zcfast import _C  # noqa: F401  (importing the extension registers torch.ops.zcfast.*)
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(
        "zcfast's compiled extension (zcfast._C) is missing or broken: build it with "
        "`python setup.py build_ext --inplace` (or `pip install -e . --no-build-isolation`) "
        f"from the repository root ({exc})"
    ) from exc

__all__ = ["saliency", "fisher", "jacob_cov", "has_cuda", "cuda_version", "build_info",
           "SALIENCY_KINDS"]

SALIENCY_KINDS = ("abs_prod", "prod", "grad_norm", "param_sq")
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def cuda_version() -> int:
    """CUDA runtime version the kernels were compiled with (e.g. 13000), or -1 for a CPU build."""
    return int(torch.ops.zcfast.cuda_version())


def has_cuda() -> bool:
    """True when this install contains the CUDA kernels (a GPU may still be absent)."""
    return cuda_version() != -1


def build_info() -> dict[str, Any]:
    """What was built: ``{"mode": "cpu"|"cuda", "cuda_version": int, "torch_cuda": str|None}``."""
    v = cuda_version()
    return {"mode": "cuda" if v != -1 else "cpu", "cuda_version": v, "torch_cuda": torch.version.cuda}


def _check_cuda_match() -> None:
    v = cuda_version()
    if v == -1 or torch.version.cuda is None:
        return
    built_major = v // 1000
    torch_major = int(torch.version.cuda.split(".")[0])
    if built_major != torch_major:
        raise ImportError(f"zcfast was built with CUDA {built_major} but torch uses CUDA "
                          f"{torch.version.cuda}: rebuild zcfast against this torch")


_check_cuda_match()


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _as_list(name: str, tensors: Sequence[Tensor] | None) -> list[Tensor]:
    if tensors is None:
        raise ValueError(f"saliency: {name} is None")
    if isinstance(tensors, Tensor):
        raise ValueError(f"saliency: {name} must be a sequence of tensors, got a single Tensor")
    out = list(tensors)
    for i, t in enumerate(out):
        if t is None:
            raise ValueError(f"saliency: {name}[{i}] is None (a parameter without a gradient?): "
                             "drop such tensors from both lists, or pass torch.zeros_like(param)")
        if not isinstance(t, Tensor):
            raise ValueError(f"saliency: {name}[{i}] must be a Tensor, got {type(t).__name__}")
    return out


def saliency(params: Sequence[Tensor] | None, grads: Sequence[Tensor] | None,
             kind: str) -> tuple[Tensor, Tensor]:
    """Per-tensor saliency sums over a list of parameters, fused into one call.

    Args:
        params: T tensors θ_i (any shapes). May be None for ``kind="grad_norm"``.
        grads: T tensors g_i, ``grads[i].shape == params[i].shape``. May be None for
            ``kind="param_sq"``.
        kind: ``"abs_prod"`` Σ|θ_i⊙g_i| (snip, synflow), ``"prod"`` Σθ_i⊙g_i (plain),
            ``"grad_norm"`` ‖g_i‖₂ (grad_norm), ``"param_sq"`` Σθ_i² (l2_norm).

    Returns:
        ``(per_tensor [T], total [])`` in the accumulation dtype; ``total`` is the sum of
        ``per_tensor`` (for grad_norm the sum of the per-tensor norms, as the paper).
        An empty list gives ``(float32 [0], float32 0.)`` on the CPU.

    Raises:
        ValueError: unknown kind, a None entry, mismatched lengths / shapes / dtypes / devices,
            or an unsupported dtype (the message names the argument, e.g. ``grads[3]``).
    """
    if kind == "grad_norm" and params is None:
        params = grads
    if kind == "param_sq" and grads is None:
        grads = params
    # Fast path: lists go straight to the op, whose C++ checks name the bad argument; only when
    # the dispatcher itself rejects an argument (None entries, non-tensors) do the Python checks
    # run, to turn that into a ValueError naming it. Keeps the per-call overhead low.
    if type(params) is not list:
        params = _as_list("params", params)
    if type(grads) is not list:
        grads = _as_list("grads", grads)
    if not params and not grads:
        if kind not in SALIENCY_KINDS:
            raise ValueError(f"saliency: kind must be one of {SALIENCY_KINDS}, got {kind!r}")
        return torch.zeros(0, dtype=torch.float32), torch.zeros((), dtype=torch.float32)
    try:
        return torch.ops.zcfast.saliency_reduce.default(params, grads, kind)
    except (TypeError, RuntimeError):
        _as_list("params", params)
        _as_list("grads", grads)
        raise


def fisher(act: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    """The Fisher proxy's per-channel term for one layer.

    Args:
        act: the layer's output activation, ``[N, C, *rest]`` (e.g. ``[N, C, H, W]`` or ``[N, C]``).
        grad: the gradient of the loss w.r.t. ``act``, same shape, dtype and device.

    Returns:
        ``(per_channel [C], total [])``: ``per_channel[c] = 0.5 · mean_n (Σ_rest act·grad)²``
        and their sum, in the accumulation dtype. ``N == 0`` gives NaN (mean of nothing).
    """
    for name, t in (("act", act), ("grad", grad)):
        if not isinstance(t, Tensor):
            raise ValueError(f"fisher: {name} must be a Tensor, got {type(t).__name__}")
    return torch.ops.zcfast.fisher_reduce.default(act, grad)


def jacob_cov(jacobians: Tensor, k: float = 1e-5) -> tuple[Tensor, Tensor]:
    """The jacob_cov score of M models at once.

    Args:
        jacobians: ``[M, N, D]``: for each of M models, the Jacobian of its summed output with
            respect to N input samples of D features each (input flattened).
        k: regulariser of the score (the paper uses 1e-5).

    Returns:
        ``(scores [M], eigenvalues [M, N])`` in the accumulation dtype. Per model: the N×N
        correlation matrix of the rows (numpy ``corrcoef``), its eigenvalues from a symmetric
        solver (ascending) and ``score = −Σ[log(λ+k) + 1/(λ+k)]``. Computed in float64 whatever
        the input dtype (the official code uses numpy float64). A model with a zero-variance or
        non-finite row gets score NaN and NaN eigenvalues (numpy semantics; never an exception),
        without affecting the other models. Fewer than 2 samples (N < 2) or no features
        (D = 0) leave the correlation undefined: every score NaN (numpy's corrcoef of one row
        would give [[1]] and a meaningless −1.00000000005).

    Raises:
        ValueError: ``jacobians`` is not a float [M, N, D] tensor, or ``k`` is not a finite
            number > 0 (the same check runs in the C++ op, CPU and CUDA).
    """
    if not isinstance(jacobians, Tensor):
        raise ValueError(f"jacob_cov: jacobians must be a Tensor, got {type(jacobians).__name__}")
    return torch.ops.zcfast.jacob_cov_score.default(jacobians, check_jacob_cov_k(k))


def check_jacob_cov_k(k: object) -> float:
    """``k`` as a float; ValueError unless it is a real number, finite and > 0."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) and not (
            isinstance(k, Tensor) and k.numel() == 1 and not k.dtype.is_complex):
        raise ValueError(f"jacob_cov: k must be a finite number > 0 (the paper uses 1e-5), got {k!r}")
    kf = float(k)
    if not math.isfinite(kf) or kf <= 0.0:
        raise ValueError(f"jacob_cov: k must be a finite number > 0 (the paper uses 1e-5), got {kf!r}")
    return kf


# ---- fake (meta) kernels, for torch.compile / export -------------------------------------------

@torch.library.register_fake("zcfast::saliency_reduce")
def _saliency_fake(params: list[Tensor], grads: list[Tensor], kind: str) -> tuple[Tensor, Tensor]:
    # The same checks as csrc/include/zcfast/checks.h, so meta/fake tensors fail like real ones.
    if kind not in SALIENCY_KINDS:
        raise ValueError(f"saliency: kind must be one of {SALIENCY_KINDS}, got {kind!r}")
    if len(params) != len(grads):
        raise ValueError(f"saliency: params and grads must have the same length, got "
                         f"len(params)={len(params)} and len(grads)={len(grads)}")
    if not params:
        raise ValueError("saliency_reduce needs at least one tensor (zcfast.ops.saliency handles [])")
    ref = params[0]
    for i, (p, g) in enumerate(zip(params, grads)):
        for name, t in ((f"params[{i}]", p), (f"grads[{i}]", g)):
            if t.dtype not in _FLOAT_DTYPES:
                raise ValueError(f"saliency: {name} must be float32, float64, bfloat16 or float16, "
                                 f"got {t.dtype}")
            if t.dtype != ref.dtype:
                raise ValueError(f"saliency: {name} has dtype {t.dtype} but params[0] has dtype "
                                 f"{ref.dtype} (all tensors must share one dtype)")
            if t.device != ref.device:
                raise ValueError(f"saliency: {name} is on {t.device} but params[0] is on "
                                 f"{ref.device} (all tensors must be on one device)")
        if p.shape != g.shape:
            raise ValueError(f"saliency: grads[{i}] has shape {list(g.shape)} but params[{i}] has "
                             f"shape {list(p.shape)}")
    acc = _acc_dtype(ref.dtype)
    return ref.new_empty((len(params),), dtype=acc), ref.new_empty((), dtype=acc)


@torch.library.register_fake("zcfast::fisher_reduce")
def _fisher_fake(act: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    if act.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"fisher: act must be float32, float64, bfloat16 or float16, got {act.dtype}")
    if act.dim() < 2:
        raise ValueError(f"fisher: act must have shape [N, C, ...], got {list(act.shape)}")
    if grad.shape != act.shape:
        raise ValueError(f"fisher: grad has shape {list(grad.shape)} but act has shape {list(act.shape)}")
    if grad.dtype != act.dtype:
        raise ValueError(f"fisher: grad has dtype {grad.dtype} but act has dtype {act.dtype}")
    if grad.device != act.device:
        raise ValueError(f"fisher: grad is on {grad.device} but act is on {act.device}")
    acc = _acc_dtype(act.dtype)
    return act.new_empty((act.shape[1],), dtype=acc), act.new_empty((), dtype=acc)


@torch.library.register_fake("zcfast::jacob_cov_score")
def _jacob_cov_fake(jacobians: Tensor, k: float) -> tuple[Tensor, Tensor]:
    if jacobians.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"jacob_cov: jacobians must be float32, float64, bfloat16 or float16, "
                         f"got {jacobians.dtype}")
    if jacobians.dim() != 3:
        raise ValueError(f"jacob_cov: jacobians must have shape [M, N, D], got {list(jacobians.shape)}")
    check_jacob_cov_k(k)
    acc = _acc_dtype(jacobians.dtype)
    m, n = jacobians.shape[0], jacobians.shape[1]
    return jacobians.new_empty((m,), dtype=acc), jacobians.new_empty((m, n), dtype=acc)
