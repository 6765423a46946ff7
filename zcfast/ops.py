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
from dataclasses import dataclass
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

__all__ = ["saliency", "fisher", "jacob_cov", "hamming_kernel", "GradMoments", "moments_update",
           "zico_reduce", "has_cuda", "cuda_version", "build_info", "SALIENCY_KINDS"]

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


def _tensor_list(op: str, name: str, tensors: object) -> list[Tensor]:
    """``tensors`` as a list of Tensors; ValueError naming ``name[i]`` otherwise."""
    if tensors is None or isinstance(tensors, Tensor) or not isinstance(tensors, Sequence):
        raise ValueError(f"{op}: {name} must be a sequence of tensors, got {type(tensors).__name__}")
    out = list(tensors)
    for i, t in enumerate(out):
        if not isinstance(t, Tensor):
            raise ValueError(f"{op}: {name}[{i}] must be a Tensor, got {type(t).__name__}")
    return out


def hamming_kernel(acts: Sequence[Tensor], out: Tensor | None = None) -> Tensor:
    """NWOT's kernel matrix, accumulated over layers in one fused call.

    For each layer's activations ``a = acts[l]`` of shape ``[N, ...]`` (flattened per sample to
    ``[N, D_l]``) with binary codes ``c = (a > 0)`` (NaN counts as 0)::

        out[i, j] += Σ_l  c_i·c_j + (1 − c_i)·(1 − c_j)  =  Σ_l D_l − popcount(c_i XOR c_j)

    i.e. the number of features on which samples i and j agree. NWOT (Mellor et al. 2021) sums
    this over the inputs of a network's ReLUs and scores ``slogdet(K)``'s log-abs-det. The codes
    are thresholded and bit-packed in one pass per layer and compared with popcounts (no GEMM),
    so counts are integers and exact: the float64 accumulator stays exact up to 2^53.

    Args:
        acts: L tensors ``[N, ...]``, each float32, float64, bfloat16 or float16 (they may differ),
            all with the same N and on ``out``'s device. Non-contiguous tensors are copied.
        out: the ``[N, N]`` accumulator, float64 or int64, contiguous; created as float64 zeros
            when None (then ``acts`` must not be empty: N is read from ``acts[0]``).

    Returns:
        ``out`` (updated in place), ``[N, N]``, symmetric.

    Raises:
        ValueError: a non-tensor, a 0-dim tensor, a sample count other than N, another device, an
            unsupported dtype (the message names ``acts[i]`` or ``out``).
    """
    acts = _tensor_list("hamming_kernel", "acts", acts)
    if out is None:
        if not acts:
            raise ValueError("hamming_kernel: acts is empty and out is None: pass out=[N, N] "
                             "zeros or at least one [N, ...] tensor")
        a0 = acts[0]
        if not isinstance(a0, Tensor) or a0.dim() < 1:
            raise ValueError("hamming_kernel: acts[0] must have shape [N, ...] (at least 1 dim)")
        out = torch.zeros(a0.shape[0], a0.shape[0], dtype=torch.float64, device=a0.device)
    elif not isinstance(out, Tensor):
        raise ValueError(f"hamming_kernel: out must be a Tensor or None, got {type(out).__name__}")
    torch.ops.zcfast.hamming_kernel_.default(acts, out)
    return out


@dataclass
class GradMoments:
    """Streaming per-element moments of T gradient tensors over mini-batches (ZiCo's state).

    Attributes:
        count: mini-batches accumulated so far (0 for a fresh state, whose tensors hold no data).
        mean_abs: T float64 tensors, ``mean_abs[t].shape == grads[t].shape``: running mean of |g|.
        mean: T float64 tensors: running mean of g.
        m2: T float64 tensors: Σ (g − mean)² over the batches (Welford), so the variance with
            ddof 0 is ``m2 / count``.
    """

    count: int
    mean_abs: list[Tensor]
    mean: list[Tensor]
    m2: list[Tensor]

    @classmethod
    def empty_like(cls, grads: Sequence[Tensor]) -> GradMoments:
        """A fresh state (count 0) for gradients shaped like ``grads``, on their devices.

        The tensors are allocated uninitialised: ``moments_update`` with ``count == 0`` writes
        them without reading them. For the same reason a state can be reused for the next
        network of the same shapes after ``reset()``, with no zeroing and no allocation.
        """
        grads = _tensor_list("moments_update", "grads", grads)

        def empty() -> list[Tensor]:
            return [torch.empty(g.shape, dtype=torch.float64, device=g.device) for g in grads]

        return cls(0, empty(), empty(), empty())

    def reset(self) -> None:
        """Makes the state fresh again (count 0); the next update overwrites the tensors."""
        self.count = 0


def moments_update(grads: Sequence[Tensor], state: GradMoments | None = None) -> GradMoments:
    """One mini-batch's step of ZiCo's per-element gradient moments, fused over all tensors.

    For every element g of every ``grads[t]``, with n = ``state.count + 1``, in float64 and in
    place (Welford; the gradient buffers are read where they are, never copied to numpy)::

        mean_abs += (|g| − mean_abs) / n;   d = g − mean;   mean += d / n;   m2 += d·(g − mean)

    Args:
        grads: T gradient tensors (e.g. the ``.grad`` of every Conv/Linear weight after one
            mini-batch's backward), float32, float64, bfloat16 or float16, on one device.
        state: the moments so far, or None for a fresh one (``GradMoments.empty_like(grads)``).
            With ``state.count == 0`` the state's tensors are overwritten, never read.

    Returns:
        ``state``, updated in place, with ``count`` incremented.

    Raises:
        ValueError: a non-tensor, lengths or element counts that differ from the state's, a state
            tensor that is not contiguous float64 on the gradient's device (named, e.g. ``m2[3]``).
    """
    grads = _tensor_list("moments_update", "grads", grads)
    if state is None:
        state = GradMoments.empty_like(grads)
    elif not isinstance(state, GradMoments):
        raise ValueError(f"moments_update: state must be a GradMoments or None, got "
                         f"{type(state).__name__}")
    if grads or state.mean_abs or state.mean or state.m2:  # the dispatcher needs a tensor
        torch.ops.zcfast.moments_update_.default(grads, state.mean_abs, state.mean, state.m2,
                                                 int(state.count))
    state.count += 1
    return state


def zico_reduce(state: GradMoments) -> Tensor:
    """ZiCo's per-tensor sum: ``Σ_elements mean|g| / std(g)``, std with ddof 0 over the batches.

    Elements whose std is 0 (the same gradient in every batch, e.g. always 0) are dropped, as
    the official code's ``np.nonzero(std)``; a NaN std is kept (the sum becomes NaN, as there).
    The ZiCo score is ``Σ_t log(out[t])`` over the tensors whose sum is nonzero (zero layers are
    skipped): taking the log and skipping is left to the proxy.

    Args:
        state: the moments after ``state.count >= 1`` mini-batches (with one batch every std is
            0 and every sum 0).

    Returns:
        ``[T]`` float64 on the state's device (a CPU ``[0]`` tensor for an empty state).

    Raises:
        ValueError: ``state`` is not a GradMoments, ``count < 1``, or its tensors do not match.
    """
    if not isinstance(state, GradMoments):
        raise ValueError(f"zico_reduce: state must be a GradMoments, got {type(state).__name__}")
    if not state.mean_abs and not state.m2:
        if int(state.count) < 1:
            raise ValueError(f"zico_reduce: count must be >= 1 (batches in the state), got {state.count}")
        return torch.zeros(0, dtype=torch.float64)
    return torch.ops.zcfast.zico_reduce.default(state.mean_abs, state.m2, int(state.count))


# ---- sign patterns, sign sums and channel spectra (SWAP, TE-NAS, GradSign, MeCo, AZ-NAS) ------
# Kernels: csrc/cpu/signs_cpu.cpp, csrc/cpu/spectra_cpu.cpp, csrc/cuda/signs_cuda.cu,
# csrc/cuda/spectra_cuda.cu; math and checks in csrc/include/zcfast/signs.h; references in
# zcfast/reference.py; contracts in docs/design.md §1.
__all__ += ["sign_pack", "distinct_rows", "sign_pattern_count", "sign_sum", "channel_spectra",
            "SPECTRA_KINDS"]

SPECTRA_KINDS = ("corr", "cov")


def _one_tensor(op: str, name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    return x


def sign_pack(x: Tensor) -> Tensor:
    """Bit-pack the codes ``x > 0`` of each row: ``[R, L]`` float -> ``[R, ceil(L/64)]`` int64
    (bit j of word w of row r is ``x[r, 64w + j] > 0``; NaN counts as not positive; the unused
    high bits of the last word are 0; bit 63 is the int64's sign bit).

    SWAP packs each neuron's signs over the batch (x = activations transposed, [neurons, B]:
    a transposed view is read in place, not copied); TE-NAS's linear regions pack each sample's
    signs over all neurons (x = [B, neurons]).

    Args:
        x: ``[R, L]`` float32, float64, bfloat16 or float16, any strides, CPU or CUDA.

    Returns:
        ``[R, ceil(L / 64)]`` int64 on x's device.

    Raises:
        ValueError: x is not a float tensor of 2 dims.
    """
    return torch.ops.zcfast.sign_pack.default(_one_tensor("sign_pack", "x", x))


def distinct_rows(packed: Tensor) -> int:
    """The number of distinct rows of ``packed`` ``[R, W]`` int64 (0 for R = 0, 1 for W = 0 < R).

    Raises:
        ValueError: packed is not an int64 tensor of 2 dims.
    """
    return int(torch.ops.zcfast.distinct_rows.default(_one_tensor("distinct_rows", "packed", packed)))


def sign_pattern_count(x: Tensor) -> int:
    """``distinct_rows(sign_pack(x))`` fused (the packed codes are never a tensor): the number of
    distinct sign patterns ``x[r] > 0`` among the R rows of ``x`` ``[R, L]`` (SWAP's score; TE-NAS's
    linear-region count). Same arguments and errors as :func:`sign_pack`."""
    return int(torch.ops.zcfast.sign_pattern_count.default(_one_tensor("sign_pattern_count", "x", x)))


def sign_sum(grads: Sequence[Tensor]) -> Tensor:
    """GradSign's reduction, fused over T tensors: ``out[t] = Σ_θ |Σ_i sign(g_t[i, θ])|``.

    Args:
        grads: T per-sample gradient tensors ``[N_t, ...]`` (sample i's ∂ℓᵢ/∂θ in row i), float32,
            float64, bfloat16 or float16 (they may differ), on one device; any strides.

    Returns:
        ``[T]`` float64 (float64 ``[0]`` on the CPU for an empty list). ``sign(0) = 0`` and NaN
        counts as 0. The inner sums are integers (int16 for 16-bit inputs with N < 2^15 on the CPU,
        else int32) and the result is exact and deterministic (no atomics on CUDA).

    Raises:
        ValueError: a non-tensor, a 0-dim tensor, a non-float dtype, another device (the message
            names ``grads[i]``).
    """
    grads = _tensor_list("sign_sum", "grads", grads)
    if not grads:
        return torch.zeros(0, dtype=torch.float64)
    return torch.ops.zcfast.sign_sum.default(grads)


def channel_spectra(feats: Sequence[Tensor], kind: str = "corr") -> list[Tensor]:
    """Ascending symmetric eigenvalues of T small channel matrices, all in one call.

    Per feature F = ``feats[t]`` ``[C_t, P_t]`` (channels × observations), in float64:

    - ``kind="corr"`` (MeCo): numpy's ``corrcoef(F)`` with NaN/inf entries set to 0, so a
      zero-variance or non-finite channel contributes a zero row and column (diagonal included);
    - ``kind="cov"`` (AZ-NAS expressivity): ``(F − mean)(F − mean)ᵀ / max(P_t − 1, 1)``; a matrix
      with a non-finite entry gets all-NaN eigenvalues (the other matrices are unaffected).

    The rows are centred and scaled in one pass over all features, the Gram matrices formed with
    one bmm per run of equal (C, P), and each run of equal C solved in one batched ``eigvalsh``.

    Args:
        feats: T float tensors ``[C_t, P_t]`` sharing one dtype and one device (any strides).
            The same tensor object listed more than once is solved once (MeCo lists a
            container's output, which is its last child's tensor, twice); each place still gets
            its own result tensor.
        kind: ``"corr"`` or ``"cov"``.

    Returns:
        T float64 tensors ``[C_t]`` on the features' device (``[]`` for an empty list). Eigenvalues
        agree with ``torch.linalg.eigvalsh`` of the reference matrices to ~1e-12 (float64 input).

    Raises:
        ValueError: unknown kind, a non-tensor, a tensor not of 2 dims, mixed dtypes or devices
            (the message names ``feats[i]``).
    """
    feats = _tensor_list("channel_spectra", "feats", feats)
    if kind not in SPECTRA_KINDS:
        raise ValueError(f"channel_spectra: kind must be 'corr' or 'cov', got {kind!r}")
    if not feats:
        return []
    first: dict[int, int] = {}       # id(tensor) -> its index among the distinct tensors
    distinct: list[Tensor] = []
    where = []
    for f in feats:
        i = first.get(id(f))
        if i is None:
            i = first[id(f)] = len(distinct)
            distinct.append(f)
        where.append(i)
    out = list(torch.ops.zcfast.channel_spectra.default(distinct, kind))
    if len(distinct) == len(feats):
        return out
    seen: set[int] = set()
    res = []
    for i in where:
        res.append(out[i] if i not in seen else out[i].clone())
        seen.add(i)
    return res


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


@torch.library.register_fake("zcfast::hamming_kernel_")
def _hamming_fake(acts: list[Tensor], out: Tensor) -> None:
    if out.dtype not in (torch.float64, torch.int64):
        raise ValueError(f"hamming_kernel: out must be float64 or int64, got {out.dtype}")
    if out.dim() != 2 or out.shape[0] != out.shape[1]:
        raise ValueError(f"hamming_kernel: out must have shape [N, N], got {list(out.shape)}")
    for i, a in enumerate(acts):
        if a.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"hamming_kernel: acts[{i}] must be float32, float64, bfloat16 or "
                             f"float16, got {a.dtype}")
        if a.dim() < 1 or a.shape[0] != out.shape[0]:
            raise ValueError(f"hamming_kernel: acts[{i}] has shape {list(a.shape)} but out has "
                             f"shape {list(out.shape)}")
        if a.device != out.device:
            raise ValueError(f"hamming_kernel: acts[{i}] is on {a.device} but out is on {out.device}")
    return None


def _check_moments_fake(op: str, like_name: str, like: list[Tensor],
                        lists: tuple[tuple[str, list[Tensor]], ...]) -> None:
    for name, state in lists:
        if len(state) != len(like):
            raise ValueError(f"{op}: {name} and {like_name} must have the same length, got "
                             f"len({name})={len(state)} and len({like_name})={len(like)}")
        for i, (s, g) in enumerate(zip(state, like)):
            if s.dtype != torch.float64:
                raise ValueError(f"{op}: {name}[{i}] must be float64, got {s.dtype}")
            if s.numel() != g.numel():
                raise ValueError(f"{op}: {name}[{i}] has {s.numel()} elements but {like_name}[{i}] "
                                 f"has {g.numel()}")
            if s.device != g.device:
                raise ValueError(f"{op}: {name}[{i}] is on {s.device} but {like_name}[{i}] is on {g.device}")


@torch.library.register_fake("zcfast::moments_update_")
def _moments_update_fake(grads: list[Tensor], mean_abs: list[Tensor], mean: list[Tensor],
                         m2: list[Tensor], count: int) -> None:
    if count < 0:
        raise ValueError(f"moments_update: count must be >= 0 (batches already in the state), got {count}")
    for i, g in enumerate(grads):
        if g.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"moments_update: grads[{i}] must be float32, float64, bfloat16 or "
                             f"float16, got {g.dtype}")
        if g.device != grads[0].device:
            raise ValueError(f"moments_update: grads[{i}] is on {g.device} but grads[0] is on "
                             f"{grads[0].device} (all tensors must be on one device)")
    _check_moments_fake("moments_update", "grads", grads,
                        (("mean_abs", mean_abs), ("mean", mean), ("m2", m2)))
    return None


@torch.library.register_fake("zcfast::zico_reduce")
def _zico_reduce_fake(mean_abs: list[Tensor], m2: list[Tensor], count: int) -> Tensor:
    if count < 1:
        raise ValueError(f"zico_reduce: count must be >= 1 (batches in the state), got {count}")
    _check_moments_fake("zico_reduce", "mean_abs", mean_abs, (("mean_abs", mean_abs), ("m2", m2)))
    device = mean_abs[0].device if mean_abs else torch.device("cpu")
    return torch.empty((len(mean_abs),), dtype=torch.float64, device=device)


# fake kernels of the #13 ops (the checks of csrc/include/zcfast/signs.h)
def _fake_float(op: str, name: str, t: Tensor) -> None:
    if t.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{op}: {name} must be float32, float64, bfloat16 or float16, got {t.dtype}")


def _fake_sign_pack_input(op: str, x: Tensor) -> None:
    _fake_float(op, "x", x)
    if x.dim() != 2:
        raise ValueError(f"{op}: x must have shape [R, L] (rows, signs per row), got shape {list(x.shape)}")


@torch.library.register_fake("zcfast::sign_pack")
def _sign_pack_fake(x: Tensor) -> Tensor:
    _fake_sign_pack_input("sign_pack", x)
    return x.new_empty((x.shape[0], (x.shape[1] + 63) // 64), dtype=torch.int64)


@torch.library.register_fake("zcfast::distinct_rows")
def _distinct_rows_fake(packed: Tensor) -> Tensor:
    if packed.dtype != torch.int64:
        raise ValueError(f"distinct_rows: packed must be int64 (sign_pack's output), got {packed.dtype}")
    if packed.dim() != 2:
        raise ValueError(f"distinct_rows: packed must have shape [R, W], got shape {list(packed.shape)}")
    return packed.new_empty((), dtype=torch.int64)


@torch.library.register_fake("zcfast::sign_pattern_count")
def _sign_pattern_count_fake(x: Tensor) -> Tensor:
    _fake_sign_pack_input("sign_pattern_count", x)
    return x.new_empty((), dtype=torch.int64)


@torch.library.register_fake("zcfast::sign_sum")
def _sign_sum_fake(grads: list[Tensor]) -> Tensor:
    for i, g in enumerate(grads):
        _fake_float("sign_sum", f"grads[{i}]", g)
        if g.dim() < 1:
            raise ValueError(f"sign_sum: grads[{i}] must have shape [N, ...] (per-sample gradients, "
                             "samples first), got a 0-dim tensor")
        if g.device != grads[0].device:
            raise ValueError(f"sign_sum: grads[{i}] is on {g.device} but grads[0] is on "
                             f"{grads[0].device} (all tensors must be on one device)")
    device = grads[0].device if grads else torch.device("cpu")
    return torch.empty((len(grads),), dtype=torch.float64, device=device)


@torch.library.register_fake("zcfast::channel_spectra")
def _channel_spectra_fake(feats: list[Tensor], kind: str) -> list[Tensor]:
    if kind not in SPECTRA_KINDS:
        raise ValueError(f"channel_spectra: kind must be 'corr' or 'cov', got {kind!r}")
    for i, f in enumerate(feats):
        _fake_float("channel_spectra", f"feats[{i}]", f)
        if f.dim() != 2:
            raise ValueError(f"channel_spectra: feats[{i}] must have shape [C, P] (channels, "
                             f"observations), got shape {list(f.shape)}")
        if f.dtype != feats[0].dtype:
            raise ValueError(f"channel_spectra: feats[{i}] has dtype {f.dtype} but feats[0] has dtype "
                             f"{feats[0].dtype} (all tensors must share one dtype)")
        if f.device != feats[0].device:
            raise ValueError(f"channel_spectra: feats[{i}] is on {f.device} but feats[0] is on "
                             f"{feats[0].device} (all tensors must be on one device)")
    return [f.new_empty((f.shape[0],), dtype=torch.float64) for f in feats]


# ---- stride-1 window sums (NB201's average pools on the proxies' private copies) ---------------
# Kernels: csrc/cpu/box_cpu.cpp, csrc/cuda/box_cuda.cu; math and checks in csrc/include/zcfast/box.h;
# reference in zcfast/reference.py.
__all__ += ["box_sum"]


def box_sum(z: Tensor, kh: int, kw: int) -> Tensor:
    """Σ of ``z`` over the centred ``kh × kw`` window of each position (stride 1, positions outside
    the image left out): ``out[..., i, j] = Σ_{|dh| ≤ kh//2, |dw| ≤ kw//2} z[..., i+dh, j+dw]``.

    Added in the window's row-major order, from 0, in ``z``'s dtype: the order of PyTorch's CPU
    ``avg_pool2d``, so ``box_sum(x, 3, 3) / count`` is ``avg_pool2d(x, 3, 1, 1,
    count_include_pad=False)`` bit for bit in float32/float64, and ``box_sum(g / count, 3, 3)`` its
    backward. Not differentiable itself: :func:`avg_pool_same` is the differentiable pool built on
    it (the window is symmetric, so the sum is its own adjoint); under ``torch.vmap`` the batch
    dimension is one more leading dimension.

    Args:
        z: ``[..., H, W]`` float32, float64, bfloat16 or float16 (at least 2 dims), any strides,
            CPU or CUDA.
        kh, kw: the window, odd and ≥ 1.

    Returns:
        ``[..., H, W]`` contiguous, z's dtype and device; on CPU a channels_last 4-D ``z`` gives a
        channels_last result (the same values, bit for bit).

    Raises:
        ValueError: z is not a float tensor of ≥ 2 dims, or kh / kw is not an odd int ≥ 1.
    """
    z = _one_tensor("box_sum", "z", z)
    for name, k in (("kh", kh), ("kw", kw)):
        if not isinstance(k, int) or isinstance(k, bool):
            raise ValueError(f"box_sum: {name} must be an int, got {type(k).__name__}")
    return torch.ops.zcfast.box_sum.default(z, kh, kw)


class _BoxSum(torch.autograd.Function):
    """:func:`box_sum` with its gradient. The window is symmetric, so the sum is its own adjoint:
    the backward is ``box_sum`` of the output gradient, which adds each output's gradient into its
    window's inputs in row-major output order, as PyTorch's CPU ``avg_pool2d`` backward does. The
    backward is itself a ``_BoxSum`` (differentiable again)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor, kh: int, kw: int) -> Tensor:   # type: ignore[override]
        return box_sum(z, kh, kw)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:   # type: ignore[override]
        ctx.kh, ctx.kw = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx, g: Tensor):   # type: ignore[override]
        return _BoxSum.apply(g, ctx.kh, ctx.kw), None, None


_POOL_COUNTS: dict[tuple, Tensor] = {}


def _pool_counts(h: int, w: int, kh: int, kw: int, include_pad: bool, like: Tensor) -> Tensor:
    """The divisor [H, W] of a stride-1 "same" average pool: kh·kw, or (count_include_pad=False)
    the number of the window's positions inside the image, as PyTorch's kernel counts them
    (in-bounds rows × in-bounds columns). Cached per shape, dtype and device; read-only."""
    key = (h, w, kh, kw, include_pad, like.dtype, like.device)
    cnt = _POOL_COUNTS.get(key)
    if cnt is None:
        if include_pad:
            cnt = torch.full((h, w), float(kh * kw), dtype=like.dtype, device=like.device)
        else:
            def inside(n: int, k: int) -> Tensor:
                i = torch.arange(n)
                return torch.clamp(i + k // 2, max=n - 1) - torch.clamp(i - k // 2, min=0) + 1
            cnt = torch.outer(inside(h, kh), inside(w, kw)).to(dtype=like.dtype, device=like.device)
        _POOL_COUNTS[key] = cnt
    return cnt


def avg_pool_same(x: Tensor, kh: int, kw: int, count_include_pad: bool = False) -> Tensor:
    """``F.avg_pool2d(x, (kh, kw), 1, (kh // 2, kw // 2), count_include_pad=...)`` for odd kh, kw,
    differentiable (double backward included) and ``torch.vmap``-able: ``box_sum(x) / count``,
    whose backward is ``box_sum(g / count)``. On the CPU the values are PyTorch's kernel's bit for
    bit in float32/float64 (the same additions in the same order), forward and backward, and the
    3×3 case is several times faster (``bench/bench_ops_modern.py --only signs``).

    Args:
        x: ``[..., H, W]`` float (NB201: ``[N, C, H, W]``); kh, kw: odd ≥ 1.

    Returns:
        ``[..., H, W]`` (contiguous).
    """
    return _BoxSum.apply(x, kh, kw) / _pool_counts(x.shape[-2], x.shape[-1], kh, kw, bool(count_include_pad), x)


__all__ += ["avg_pool_same"]


def _check_box_fake(z: Tensor, kh: int, kw: int) -> None:
    _fake_float("box_sum", "z", z)
    if z.dim() < 2:
        raise ValueError(f"box_sum: z must have shape [..., H, W] (at least 2 dims), got shape {list(z.shape)}")
    if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"box_sum: the window must be odd and >= 1 in both dims (a centred window), "
                         f"got kh={kh}, kw={kw}")


@torch.library.register_fake("zcfast::box_sum")
def _box_sum_fake(z: Tensor, kh: int, kw: int) -> Tensor:
    _check_box_fake(z, kh, kw)
    return torch.empty(z.shape, dtype=z.dtype, device=z.device)


@torch.library.register_vmap("zcfast::box_sum")
def _box_sum_vmap(info, in_dims, z: Tensor, kh: int, kw: int):
    """The batch dimension moved to the front is one more leading dimension of [..., H, W]."""
    bdim = in_dims[0]
    if bdim is None:
        return torch.ops.zcfast.box_sum.default(z, kh, kw), None
    return torch.ops.zcfast.box_sum.default(z.movedim(bdim, 0), kh, kw), 0


# ---- CRC-32C of byte segments (TFRecord framing, issue #14) ------------------------------------
# Kernel: csrc/cpu/crc32c_cpu.cpp (CPU only: file bytes live in CPU memory); reference in
# zcfast/reference.py.
__all__ += ["crc32c_segments", "crc32c"]


def _byte_tensor(op: str, data: object) -> Tensor:
    if isinstance(data, (bytes, bytearray, memoryview)):
        buf = memoryview(data).cast("B")
        if buf.nbytes == 0:
            return torch.empty(0, dtype=torch.uint8)
        return torch.frombuffer(bytearray(buf) if buf.readonly else buf, dtype=torch.uint8)
    if isinstance(data, Tensor):
        return data
    raise ValueError(f"{op}: data must be bytes or a uint8 Tensor, got {type(data).__name__}")


def crc32c_segments(data: Tensor | bytes | bytearray | memoryview, offsets: Tensor, lengths: Tensor) -> Tensor:
    """The CRC-32C (Castagnoli, reflected polynomial 0x82F63B78; ``crc32c(b"123456789")`` is
    ``0xE3069283``) of each segment ``data[offsets[s] : offsets[s] + lengths[s]]``, in one call.

    Args:
        data: ``[N]`` uint8 CPU tensor (any stride), or a bytes-like object (wrapped without a copy
            when writable; a ``bytes`` object is copied once).
        offsets: ``[S]`` int64 CPU tensor, segment starts (0 <= offset).
        lengths: ``[S]`` int64 CPU tensor, segment lengths (0 allowed: CRC 0).

    Returns:
        ``[S]`` int64, each in ``[0, 2**32)``.

    Raises:
        ValueError: a wrong dtype or rank, a tensor not on the CPU, offsets/lengths of different
            sizes, a segment outside ``data`` (the message names the segment).
    """
    t = _byte_tensor("crc32c_segments", data)
    offsets = _one_tensor("crc32c_segments", "offsets", offsets)
    lengths = _one_tensor("crc32c_segments", "lengths", lengths)
    return torch.ops.zcfast.crc32c_segments.default(t, offsets, lengths)


def crc32c(data: Tensor | bytes | bytearray | memoryview) -> int:
    """The CRC-32C of a whole buffer (bytes-like, or a 1-D uint8 CPU tensor), as an int."""
    t = _byte_tensor("crc32c", data)
    if t.dim() != 1:
        raise ValueError(f"crc32c: data must be 1-D, got shape {list(t.shape)}")
    n = torch.tensor([t.shape[0]], dtype=torch.int64)
    return int(crc32c_segments(t, torch.zeros(1, dtype=torch.int64), n)[0])


@torch.library.register_fake("zcfast::crc32c_segments")
def _crc32c_segments_fake(data: Tensor, offsets: Tensor, lengths: Tensor) -> Tensor:
    for name, t, dtype in (("data", data, torch.uint8), ("offsets", offsets, torch.int64),
                           ("lengths", lengths, torch.int64)):
        if t.dtype != dtype:
            raise ValueError(f"crc32c_segments: {name} must be {dtype}, got {t.dtype}")
        if t.dim() != 1:
            raise ValueError(f"crc32c_segments: {name} must be 1-D, got shape {list(t.shape)}")
    torch._check(offsets.shape[0] == lengths.shape[0],
                 lambda: "crc32c_segments: offsets and lengths must have the same number of entries")
    return offsets.new_empty(offsets.shape, dtype=torch.int64)


# ---- train-mode BatchNorm2d on channels_last tensors (TE-NAS's channels_last NTK copies) --
# Kernels: csrc/cpu/batch_norm_cl_cpu.cpp, csrc/cuda/batch_norm_cl_cuda.cu; math in
# csrc/include/zcfast/batch_norm_cl.h; reference: zcfast.reference.batch_norm_train.
__all__ += ["batch_norm_cl", "batch_norm_cl_backward", "batch_norm_train_cl"]


def batch_norm_cl(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Train-mode BatchNorm2d of ``x`` with float64 statistics: ``(y, mean, var)``.

    With R = N·H·W: mean_c = Σ x / R, var_c = Σ (x − mean_c)² / R (biased, float64: one pass of
    shifted sums on CPU, two passes on CUDA),
    y = (x − mean_c) / √(var_c + eps) · w_c + b_c computed in float64 and rounded once. The sums
    run over fixed blocks of rows added in order: deterministic whatever the thread count.
    Not differentiable itself (:func:`batch_norm_train_cl` is).

    Args:
        x: ``[N, C, H, W]`` float32 or float64, CPU or CUDA; read as channels_last (a copy if it
            is not).
        weight, bias: ``[C]`` of x's dtype and device, or ``None`` (1 and 0).
        eps: finite, ≥ 0.

    Returns:
        ``y`` ``[N, C, H, W]`` channels_last, x's dtype; ``mean``, ``var`` ``[C]`` float64.

    Raises:
        ValueError: a wrong dtype, rank, shape or device (named), or a bad eps.
    """
    x = _one_tensor("batch_norm_cl", "x", x)
    return tuple(torch.ops.zcfast.batch_norm_cl.default(x, weight, bias, float(eps)))  # type: ignore[return-value]


def batch_norm_cl_backward(gy: Tensor, x: Tensor, weight: Tensor | None, mean: Tensor, var: Tensor,
                           eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """The backward of :func:`batch_norm_cl` (train mode, batch statistics): ``(gx, gweight,
    gbias)`` for the output gradient ``gy`` (x's shape, dtype and device), from the forward's
    ``mean`` and ``var`` [C] float64. With sg = Σ gy and sgx = Σ gy (x − mean) per channel
    (float64): gbias = sg, gweight = sgx / √(var + eps), gx = w / √(var + eps) · (gy − sg/R −
    (x − mean) · sgx / ((var + eps) R)); gx channels_last, gweight/gbias [C] of x's dtype."""
    gy = _one_tensor("batch_norm_cl_backward", "gy", gy)
    x = _one_tensor("batch_norm_cl_backward", "x", x)
    return tuple(torch.ops.zcfast.batch_norm_cl_backward.default(gy, x, weight, mean, var, float(eps)))  # type: ignore[return-value]


class _BatchNormCL(torch.autograd.Function):
    """:func:`batch_norm_cl` with its gradient (once differentiable: its backward records no
    graph, so a double backward through it raises)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):   # type: ignore[override]
        y, mean, var = batch_norm_cl(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps = eps
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: Tensor, _gm: Tensor | None, _gv: Tensor | None):   # type: ignore[override]
        x, weight, mean, var = ctx.saved_tensors
        gx, gw, gb = batch_norm_cl_backward(gy, x, weight, mean, var, ctx.eps)
        return (gx if ctx.needs_input_grad[0] else None, gw if weight is not None and ctx.needs_input_grad[1] else None,
                gb if ctx.has_bias and ctx.needs_input_grad[2] else None, None)


def batch_norm_train_cl(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`batch_norm_cl`, differentiable once w.r.t. ``x``, ``weight`` and ``bias``
    (:func:`batch_norm_cl_backward`); ``mean`` and ``var`` are not differentiable."""
    return _BatchNormCL.apply(x, weight, bias, eps)


def _check_bn_cl_fake(op: str, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> None:
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{op}: x must be float32 or float64, got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"{op}: x must have shape [N, C, H, W], got shape {list(x.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.dim() != 1 or t.shape[0] != x.shape[1]:
            raise ValueError(f"{op}: {name} must have shape [C] = [{x.shape[1]}], got shape {list(t.shape)}")
        if t.dtype != x.dtype:
            raise ValueError(f"{op}: {name} has dtype {t.dtype} but x has dtype {x.dtype}")


@torch.library.register_fake("zcfast::batch_norm_cl")
def _batch_norm_cl_fake(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    _check_bn_cl_fake("batch_norm_cl", x, weight, bias)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    return y, x.new_empty((x.shape[1],), dtype=torch.float64), x.new_empty((x.shape[1],), dtype=torch.float64)


@torch.library.register_fake("zcfast::batch_norm_cl_backward")
def _batch_norm_cl_backward_fake(gy: Tensor, x: Tensor, weight: Tensor | None, mean: Tensor, var: Tensor,
                                 eps: float):
    _check_bn_cl_fake("batch_norm_cl_backward", x, weight, None)
    if gy.shape != x.shape or gy.dtype != x.dtype:
        raise ValueError(f"batch_norm_cl_backward: gy must match x (shape {list(x.shape)}, {x.dtype}), "
                         f"got shape {list(gy.shape)}, {gy.dtype}")
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    return gx, x.new_empty((x.shape[1],)), x.new_empty((x.shape[1],))
