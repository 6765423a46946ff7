"""Plain-PyTorch references of every op in :mod:`zcfast.ops` (docs/design.md §1).

They follow the contracts exactly (same shapes, result dtypes and NaN rules) but are written for
clarity, not speed: a Python loop over tensors, everything computed in float64 from the inputs'
exact values and only then cast to the contract's result dtype. Tests compare the fused kernels
against these; the benchmark uses them as the baselines for ``fisher`` and ``jacob_cov``, and
the per-layer GEMM form of ``hamming_kernel`` as NWOT's plain-PyTorch loop.
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


def hamming_kernel(acts: Sequence[Tensor], out: Tensor | None = None) -> Tensor:
    """Reference of :func:`zcfast.ops.hamming_kernel`: NWOT's GEMM form, layer by layer.

    Args:
        acts: L tensors ``[N, ...]``; each is flattened to ``[N, D_l]`` and thresholded,
            ``c = (a > 0)``, in float64 (exact for counts below 2^53).
        out: ``[N, N]`` float64 or int64 accumulator, or None for float64 zeros.

    Returns:
        ``out`` with ``Σ_l c cᵀ + (1 − c)(1 − c)ᵀ`` added (in place when given).
    """
    if out is None:
        n = acts[0].shape[0]
        out = torch.zeros(n, n, dtype=torch.float64, device=acts[0].device)
    k = torch.zeros(out.shape, dtype=torch.float64, device=out.device)
    for a in acts:
        c = (a.detach().reshape(a.shape[0], -1) > 0).double()
        k += c @ c.t() + (1.0 - c) @ (1.0 - c).t()
    out += k.to(out.dtype)
    return out


def moments(grad_batches: Sequence[Sequence[Tensor]]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Reference of ZiCo's moments after B mini-batches (zcfast.ops.moments_update, B times).

    Args:
        grad_batches: B lists of T gradient tensors (batch b's ``grads[t]``, same shapes across b).

    Returns:
        ``(mean_abs, mean, m2)``: T float64 tensors each, ``mean_abs = mean_b |g_b|``,
        ``mean = mean_b g_b`` and ``m2 = Σ_b (g_b − mean)²``, computed two-pass from the stacked
        batches (numpy's ``np.mean`` / ``np.std`` formulas, not the streaming update).
    """
    mean_abs, mean, m2 = [], [], []
    for t in range(len(grad_batches[0])):
        g = torch.stack([b[t].detach().double() for b in grad_batches])  # [B, *shape]
        mu = g.mean(dim=0)
        mean_abs.append(g.abs().mean(dim=0))
        mean.append(mu)
        m2.append(((g - mu) ** 2).sum(dim=0))
    return mean_abs, mean, m2


def zico_reduce(grad_batches: Sequence[Sequence[Tensor]]) -> Tensor:
    """Reference of :func:`zcfast.ops.zico_reduce` from the raw gradients, as the official code.

    Args:
        grad_batches: B >= 1 lists of T gradient tensors.

    Returns:
        ``[T]`` float64: per tensor ``Σ mean|g| / std(g)`` (std ddof 0 over the B batches) over
        the elements whose std is nonzero (``np.nonzero`` keeps NaN).
    """
    out = []
    for t in range(len(grad_batches[0])):
        g = torch.stack([b[t].detach().double().reshape(-1) for b in grad_batches])  # [B, n]
        std = ((g - g.mean(dim=0)) ** 2).mean(dim=0).sqrt()  # np.std, ddof 0
        keep = std != 0
        out.append((g.abs().mean(dim=0)[keep] / std[keep]).sum())
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


# ---- the #13 ops: sign patterns (SWAP, TE-NAS linear regions), sign sums (GradSign),
# ---- channel-correlation spectra (MeCo, AZ-NAS expressivity) --------------------------------
def sign_pack(x: Tensor) -> Tensor:
    """Reference of :func:`zcfast.ops.sign_pack`: the codes ``x > 0`` of each row, 64 per word.

    Args:
        x: ``[R, L]`` float32/float64/bfloat16/float16 (NaN counts as not positive).

    Returns:
        ``[R, ceil(L / 64)]`` int64: bit ``j`` of word ``w`` of row ``r`` is ``x[r, 64·w + j] > 0``
        (bit 63 is the sign bit of the int64; unused high bits of the last word are 0).
    """
    r, length = x.shape
    words = (length + 63) // 64
    bits = (x.detach() > 0).to(torch.int64).cpu()
    out = torch.zeros(r, words, dtype=torch.int64)
    for w in range(words):
        chunk = bits[:, 64 * w: 64 * (w + 1)]
        acc = torch.zeros(r, dtype=torch.int64)
        for j in range(chunk.shape[1]):
            acc |= chunk[:, j] << j   # j = 63 wraps to the sign bit, as two's complement
        out[:, w] = acc
    return out.to(x.device)


def distinct_rows(packed: Tensor) -> int:
    """Reference of :func:`zcfast.ops.distinct_rows`: how many distinct rows ``packed`` has.

    Args:
        packed: ``[R, W]`` int64 (e.g. :func:`sign_pack`'s output); ``R == 0`` gives 0.
    """
    if packed.shape[0] == 0:
        return 0
    return len({tuple(row) for row in packed.cpu().tolist()})


def sign_pattern_count(x: Tensor) -> int:
    """Reference of :func:`zcfast.ops.sign_pattern_count`: ``distinct_rows(sign_pack(x))``."""
    return distinct_rows(sign_pack(x))


def sign_sum(grads: Sequence[Tensor]) -> Tensor:
    """Reference of :func:`zcfast.ops.sign_sum` (GradSign's per-tensor reduction).

    Args:
        grads: T tensors ``[N, ...]`` (per-sample gradients: sample i's ∂ℓᵢ/∂θ in row i).

    Returns:
        ``[T]`` float64: ``Σ_θ |Σ_i sign(g[i, θ])|`` with ``sign(0) = 0`` and NaN counted as 0.
    """
    out = []
    for g in grads:
        s = torch.sign(torch.nan_to_num(g.detach().double(), nan=0.0)).reshape(g.shape[0], math.prod(g.shape[1:]))
        out.append(s.sum(dim=0).abs().sum())
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def box_sum(z: Tensor, kh: int, kw: int) -> Tensor:
    """Reference of :func:`zcfast.ops.box_sum`: the zero-padded input's kh·kw shifted slices added
    one at a time in the window's row-major order (each add in z's dtype), from the first.

    Args:
        z: ``[..., H, W]`` float; kh, kw: odd ≥ 1.

    Returns:
        ``[..., H, W]``: Σ over the centred window of each position, positions outside left out
        (they add the padding's 0).
    """
    if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"box_sum: the window must be odd and >= 1 in both dims, got kh={kh}, kw={kw}")
    h, w = z.shape[-2], z.shape[-1]
    zp = torch.nn.functional.pad(z, (kw // 2, kw // 2, kh // 2, kh // 2))
    acc = zp[..., 0:h, 0:w].clone()
    for dh in range(kh):
        for dw in range(kw):
            if dh or dw:
                acc.add_(zp[..., dh:dh + h, dw:dw + w])
    return acc


def batch_norm_train(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Reference of :func:`zcfast.ops.batch_norm_cl` (and, differentiated by autograd, of its
    backward): train-mode batch normalisation written out in float64 plain PyTorch.

    Args:
        x: ``[N, C, H, W]`` float; weight, bias: ``[C]`` or ``None``; eps: ≥ 0.

    Returns:
        ``y`` ``[N, C, H, W]`` float64 (differentiable w.r.t. x, weight and bias when they require
        grad); ``mean`` and the biased ``var`` ``[C]`` float64 over the N·H·W positions.
    """
    xd = x.double()
    mean = xd.mean(dim=(0, 2, 3))
    centred = xd - mean.view(1, -1, 1, 1)
    var = (centred * centred).mean(dim=(0, 2, 3))
    y = centred / torch.sqrt(var + eps).view(1, -1, 1, 1)
    if weight is not None:
        y = y * weight.double().view(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.double().view(1, -1, 1, 1)
    return y, mean.detach(), var.detach()


def channel_spectra(feats: Sequence[Tensor], kind: str = "corr") -> list[Tensor]:
    """Reference of :func:`zcfast.ops.channel_spectra`: eigenvalues of many small channel matrices.

    Args:
        feats: T tensors ``[C_t, P_t]`` (channels × positions/samples), float dtypes.
        kind: ``"corr"``: numpy ``corrcoef`` of the C_t rows, NaN/inf entries set to 0 (MeCo);
            ``"cov"``: covariance ``(F − mean)(F − mean)ᵀ / (P_t − 1)`` over the rows' P_t
            observations (AZ-NAS expressivity's channel covariance).

    Returns:
        T float64 tensors ``[C_t]``: the symmetric eigenvalues in ascending order (``eigvalsh``).
    """
    if kind not in ("corr", "cov"):
        raise ValueError(f"channel_spectra: kind must be 'corr' or 'cov', got {kind!r}")
    out = []
    for f in feats:
        f64 = f.detach().double()
        c = f64 - f64.mean(dim=1, keepdim=True)
        cov = c @ c.t() / max(f64.shape[1] - 1, 1)
        if kind == "corr":
            d = torch.sqrt(torch.diagonal(cov))
            m = cov / d[:, None] / d[None, :]
            m = torch.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)
        else:
            m = cov
        out.append(torch.linalg.eigvalsh(m))
    return out


def _crc32c_table() -> list[int]:
    table = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """Reference CRC-32C (Castagnoli, reflected 0x82F63B78), bytewise with one 256-entry table."""
    c = 0xFFFFFFFF
    for b in bytes(data):
        c = (c >> 8) ^ _CRC32C_TABLE[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


def crc32c_segments(data: bytes, offsets: Sequence[int], lengths: Sequence[int]) -> Tensor:
    """Reference of :func:`zcfast.ops.crc32c_segments`: int64 ``[S]``, one CRC per segment."""
    buf = bytes(data)
    return torch.tensor([crc32c(buf[o:o + n]) for o, n in zip(offsets, lengths)], dtype=torch.int64)
