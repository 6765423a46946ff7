"""Batched multi-architecture scoring (issue #7, design.md §6).

``score_batch(space, archs, inputs, targets, proxies)`` scores K architectures of a space per
forward/backward: for NAS-Bench-201 the K candidates run as one network
(:class:`zcfast.batched.nb201.BatchedNB201`); other spaces fall back to a loop over
:func:`zcfast.score_arch`. Either way each candidate's scores equal ``score_arch`` on it
(same per-architecture seed, so the same weights; same batch) within floating-point tolerance.

How the proxies separate (parameters of different candidates are disjoint, inputs are
per-candidate copies):

* one forward in training mode gives logits ``[K, N, classes]``;
* jacob_cov: ``∂(Σ logits)/∂x`` for the stacked input copies ``[N, K·3, H, W]``; candidate k's
  rows are its own Jacobian; all K scores come from one ``zcfast.ops.jacob_cov([K, N, D])``;
* grad_norm / snip / plain / fisher: one backward of ``Σ_k CE(logits_k, y)`` for the weights and
  for every conv/linear output (Fisher); saliencies of all candidates' weight tensors in one
  ``zcfast.ops.saliency`` call, summed per candidate;
* grasp: the same backward with ``create_graph``; ``z = Σ stopgrad(g)·g``; ``∂z/∂θ = H g`` per
  candidate (the Hessian is block diagonal across candidates);
* synflow: a second float64 forward with |θ|, an all-ones input ``[1, K·3, H, W]`` and only the
  reduction-block BatchNorms (NB201 quirk), ``R = Σ logits``.

The same forward serves jacob_cov and the cross-entropy proxies (the official code uses a fresh
copy per measure; in training mode the forwards are identical, so the values are too).

Where the time goes and what is measured (bench/results/throughput.cpu.md, 2-core CPU under
load): on CPU, stacking K > 1 candidates was *slower* per architecture than K = 1 (grouping
does not make CPU convolutions cheaper; gathering op groups' channel slices and the K-times
larger activations cost memory traffic), so ``choose_k`` picks K = 1 there. The CPU gain over
one-at-a-time scoring comes from what K = 1 keeps: one forward for jacob_cov and the
cross-entropy proxies, edges that cannot affect any proxy skipped, the bit-exact fast weight
initialisation (no module construction), and the 3×3 average pool as separable shifted sums.
Stacking is meant for GPUs, where one pass over K candidates replaces K small kernel launches;
bench/gpu_throughput.sh measures that (not run yet: no GPU was available when this was written).
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from zcfast.proxies.registry import ProxyResult

#: proxies the batched NB201 path computes itself; others fall back to score_arch per arch.
BATCHED_PROXIES = ("grad_norm", "snip", "fisher", "jacob_cov", "synflow", "grasp", "plain")
_CE_PROXIES = ("grad_norm", "snip", "fisher", "grasp", "plain")

__all__ = ["score_batch", "score_one", "fast_route_applies", "supports", "choose_k", "BATCHED_PROXIES", "default_conv_mode", "fast_init_matches"]


def supports(space: Any) -> bool:
    """True when ``space`` has a batched path (NAS-Bench-201)."""
    return getattr(space, "name", None) == "nb201"


def default_conv_mode(device: torch.device | str) -> str:
    """The convolution layout that measured fastest on ``device``.

    CUDA: ``"grouped"`` (one grouped convolution per op group; the expected winner, to be
    confirmed by bench/gpu_throughput.sh, which has not run on a GPU yet). CPU: ``"split"``
    (one plain convolution per candidate inside the batched network): on the 2-core CPU here a
    grouped float32 convolution [64, K·16, 32, 32] was 2–4× slower than the same K convolutions
    run separately. (With K = 1, the CPU default, both are the same.)
    ``ZCFAST_BATCHED_CONV`` (grouped|split) overrides.
    """
    env = os.environ.get("ZCFAST_BATCHED_CONV")
    if env:
        if env not in ("grouped", "split"):
            raise ValueError(f"ZCFAST_BATCHED_CONV must be 'grouped' or 'split', got {env!r}")
        return env
    return "grouped" if torch.device(device).type == "cuda" else "split"


# Bytes kept for backward per candidate per input sample (float32, 32×32), worst case: an
# all-convolution cell keeps ~18 tensors of 16×32×32 floats per stage-1 cell (ReLU, conv, BN
# outputs of 6 edges), 5 cells, plus half that for stage 2 and a quarter for stage 3:
# 18 · 64 KiB · 5 · 1.75 ≈ 10 MB. An analytic upper bound (bench_throughput.py records the
# measured CUDA peak per K).
_BYTES_PER_CAND_SAMPLE_32 = 10e6


def choose_k(n_archs: int, batch_size: int, device: torch.device | str = "cpu", image_hw: int = 32,
             proxies: Sequence[str] = ()) -> int:
    """How many candidates to stack per pass.

    CPU: 1. Measured on the 2-core CPU here (bench/results/throughput.cpu.md), stacking more
    candidates was slower, not faster: convolutions do not get cheaper when grouped on CPU, and
    gathering each op group's channel slices adds memory traffic; the batched path's CPU gain
    comes from fused passes, pruned dead edges and the fast initialisation, which K=1 keeps.
    CUDA: as many as fit in half the free memory by a per-candidate estimate (×3 with grasp,
    whose double backward keeps more), capped at 64.

    Args:
        n_archs: number of architectures to score (K never exceeds it).
        batch_size: N, the samples per candidate.
        image_hw: input height (memory scales with its square).
        proxies: requested proxies (grasp needs more memory).
    """
    if n_archs < 1:
        return 1
    dev = torch.device(device)
    if dev.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(dev)
    per = _BYTES_PER_CAND_SAMPLE_32 * batch_size * (image_hw / 32.0) ** 2
    if "grasp" in proxies:
        per *= 3
    return max(1, min(64, n_archs, int(0.5 * free // per)))


_FAST_INIT_OK: dict[tuple[int, int], bool] = {}


def fast_init_matches(space: Any, num_classes: int = 10) -> bool:
    """Whether ``nb201.fast_weights`` reproduces ``space.build`` bit for bit (checked once).

    Two architectures covering every op, built under ``torch.manual_seed(s)`` and
    fast-initialised from ``torch.Generator().manual_seed(s)``, must give identical tensors;
    otherwise score_batch builds every network (slower, same result).
    """
    cache_key = (id(type(space)), num_classes)
    if cache_key not in _FAST_INIT_OK:
        from zcfast.batched.nb201 import extract, fast_weights, weights_equal
        ok = True
        probes = [("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none", "nor_conv_3x3"),
                  ("nor_conv_1x1", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect")]
        with torch.random.fork_rng(devices=[]):
            for i, arch in enumerate(probes):
                torch.manual_seed(1234 + i)
                built = extract(space.build(arch, num_classes))
                gen = torch.Generator().manual_seed(1234 + i)
                ok = ok and weights_equal(built, fast_weights(arch, num_classes, generator=gen))
        _FAST_INIT_OK[cache_key] = ok
    return _FAST_INIT_OK[cache_key]


def _build_weights(space: Any, arch: Any, seed: int, num_classes: int, fast: bool):
    """The candidate's tensors exactly as score_arch builds its network (design.md §5)."""
    from zcfast.batched.nb201 import extract, fast_weights
    from zcfast.proxies import arch_seed, build_seeded
    from zcfast.spaces.nb201 import check_arch
    if fast:
        gen = torch.Generator().manual_seed(arch_seed(seed, space.key(arch)))
        return fast_weights(check_arch(arch), num_classes, generator=gen)
    return extract(build_seeded(space, arch, seed, num_classes))


def _build_all(space: Any, archs: Sequence[Any], seed: int, num_classes: int) -> list:
    """Every candidate's tensors; with the fast path, in parallel threads (ATen releases the GIL)."""
    fast = fast_init_matches(space, num_classes)
    workers = min(len(archs), os.cpu_count() or 1)
    if not fast or workers <= 1:
        return [_build_weights(space, a, seed, num_classes, fast) for a in archs]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda a: _build_weights(space, a, seed, num_classes, True), archs))


def _check_proxies(proxies: Iterable[str] | str) -> list[str]:
    if isinstance(proxies, str):
        proxies = [p.strip() for p in proxies.split(",") if p.strip()]
    names = list(proxies)
    if not names:
        raise ValueError("no proxies requested")
    try:
        from zcfast.proxies import available_proxies
        known = set(available_proxies())
    except ImportError:  # pragma: no cover - the proxy package is part of zcfast
        known = set(BATCHED_PROXIES)
    bad = [p for p in names if p not in known]
    if bad:
        raise ValueError(f"unknown proxies {bad}; available: {sorted(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate proxies in {names}")
    return names


def score_batch(space: Any, archs: Sequence[Any], inputs: Tensor, targets: Tensor,
                proxies: Iterable[str] | str, seed: int = 42, device: str | torch.device = "cpu", *,
                num_classes: int = 10, k: int | None = None, conv_mode: str | None = None,
                detailed: bool = False) -> list[dict[str, float]] | list[dict[str, ProxyResult]]:
    """Score many architectures, K per forward/backward where the space allows it.

    Args:
        space: a ``zcfast.spaces`` space; NB201 is batched, others loop over score_arch.
        archs: the architectures (any number; scored in chunks of K).
        inputs: [N, 3, H, W] float batch (shared by every candidate, as score_arch).
        targets: [N] int64 labels.
        proxies: names (or a comma-separated string) from ``zcfast.available_proxies()``.
        seed: per-architecture seeding base (design.md §5).
        device: where to run.
        num_classes: classifier width (10 CIFAR-10, 100, 120 ImageNet16-120).
        k: candidates per pass; default ``choose_k``.
        conv_mode: "grouped" | "split"; default ``default_conv_mode(device)``.
        detailed: return ``ProxyResult`` values (with ``error`` for every undefined or
            non-finite value, the same texts as the general engine) instead of floats.

    Returns:
        one dict per architecture, in order: proxy name → value (NaN where the proxy is
        undefined, e.g. jacob_cov of a network whose output ignores some inputs), or
        proxy name → ``ProxyResult`` with ``detailed=True``.
    """
    names = _check_proxies(proxies)
    archs = list(archs)
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        raise ValueError(f"inputs must be a [N, C, H, W] tensor, got "
                         f"{tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__}")
    if not isinstance(targets, Tensor) or targets.dim() != 1 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(f"targets must be a [N] tensor with N={inputs.shape[0]}, got "
                         f"{tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__}")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not archs:
        return []
    device = torch.device(device)
    if not supports(space):
        res = [_score_arch(space, a, inputs, targets, names, seed, num_classes, device) for a in archs]
        return res if detailed else _values(res)
    mode = conv_mode or default_conv_mode(device)
    if mode not in ("grouped", "split"):
        raise ValueError(f"conv_mode must be 'grouped' or 'split', got {mode!r}")
    batched = [p for p in names if p in BATCHED_PROXIES]
    rest = [p for p in names if p not in BATCHED_PROXIES]
    if k is None:
        k = choose_k(len(archs), inputs.shape[0], device, inputs.shape[-1], batched)
    x = inputs.detach().to(device)
    y = targets.detach().to(device)
    with _strict_fp32(device):
        res = _score_sorted(space, archs, x, y, inputs, targets, names, batched, rest, seed, num_classes,
                            device, mode, k)
    return res if detailed else _values(res)


def _values(res: list[dict[str, ProxyResult]]) -> list[dict[str, float]]:
    return [{p: r.value for p, r in d.items()} for d in res]


def fast_route_applies(space: Any, proxies: Sequence[str]) -> bool:
    """Whether :func:`zcfast.score_arch` may score ``proxies`` on ``space`` with :func:`score_one`:
    the space is zcfast's NAS-Bench-201 space (not merely one named "nb201": a look-alike
    may build other networks) and every proxy has a batched computation."""
    from zcfast.spaces.nb201 import NB201Space
    return isinstance(space, NB201Space) and all(p in BATCHED_PROXIES for p in proxies)


def score_one(space: Any, arch: Any, inputs: Tensor, targets: Tensor | None, proxies: Sequence[str],
              seed: int = 42, num_classes: int = 10, device: str | torch.device = "cpu", *,
              detailed: bool = False) -> dict[str, float] | dict[str, ProxyResult]:
    """One architecture through the batched network (K = 1): :func:`zcfast.score_arch`'s route
    on NAS-Bench-201 (``fast=True``, its default).

    The inputs are validated as the general engine does (same errors: non-floating or
    non-finite inputs, mismatched or out-of-range targets). Values equal the general engine's
    up to float32 rounding: another operation order (edges that cannot affect any proxy
    skipped, pooling as shifted sums, fast weight initialisation), measured against float64
    in bench/bench_proxies.py --f64 to be as close as the general engine. Undefined values are
    NaN with the same reasons as the general engine's (``detailed=True`` returns them).

    Args:
        space: an NB201 space (:func:`fast_route_applies`).
        arch: one architecture.
        inputs: [N, 3, H, W] float batch; targets: [N] int64 labels in [0, num_classes) (may be
            ``None`` when only jacob_cov / synflow are asked for).
        proxies: names, each in :data:`BATCHED_PROXIES`.
        detailed: return ``{name: ProxyResult}`` (with ``error``) instead of floats.

    Returns:
        proxy name → value (NaN where the proxy is undefined), or → ``ProxyResult``.
    """
    from zcfast.proxies.engine import _check_inputs, check_class_targets

    names = _check_proxies(proxies)
    if not fast_route_applies(space, names):
        raise ValueError(f"no batched route for proxies {names} on space {getattr(space, 'name', space)!r}")
    need_targets = any(p in _CE_PROXIES for p in names)
    _check_inputs(inputs, targets, need_targets)
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be a [N, C, H, W] batch, got shape {tuple(inputs.shape)}")
    if targets is None or not need_targets:
        targets = torch.zeros(inputs.shape[0], dtype=torch.long)
    elif not targets.is_floating_point():
        check_class_targets(targets, num_classes)
    return score_batch(space, [arch], inputs, targets, names, seed, device, num_classes=num_classes, k=1,
                       detailed=detailed)[0]


@contextlib.contextmanager
def _strict_fp32(device: torch.device) -> Iterator[None]:
    """No TF32 in CUDA convolutions/matmuls during the call (PyTorch allows it in cuDNN
    convolutions by default): its 10-bit mantissa moves proxies by ~1e-3, so a batched score
    would no longer equal the float32 definition. The caller's settings are restored."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _score_sorted(space, archs, x, y, inputs, targets, names, batched, rest, seed, num_classes, device, mode,
                  k) -> list[dict[str, ProxyResult]]:
    # Chunks of similar architectures: sorted by their op tuples, neighbours share leading
    # edges, where a single op group then covers the whole chunk (no channel gathers). Each
    # candidate's scores do not depend on its chunk-mates, so the order is restored after.
    order = sorted(range(len(archs)), key=lambda i: tuple(space.to_choices(archs[i])))
    out: list[dict[str, ProxyResult] | None] = [None] * len(archs)
    for start in range(0, len(order), k):
        idx = order[start:start + k]
        chunk = [archs[i] for i in idx]
        vals = _score_chunk_retry(space, chunk, x, y, batched, seed, num_classes, mode) if batched else \
            [_Candidate() for _ in chunk]
        for i, a, v in zip(idx, chunk, vals):
            res = v.results(batched)
            if rest:
                res.update(_score_arch(space, a, inputs, targets, rest, seed, num_classes, device))
            out[i] = {p: res[p] for p in names}
    return out  # type: ignore[return-value]


def _score_arch(space, arch, inputs, targets, proxies, seed, num_classes, device) -> dict[str, ProxyResult]:
    from zcfast.proxies import score_arch
    return dict(score_arch(space, arch, inputs, targets, proxies, seed=seed, num_classes=num_classes,
                           device=str(device), fast=False, detailed=True))


class _Candidate:
    """One candidate's values and the reasons of its undefined ones, filled by the passes."""

    __slots__ = ("values", "errors", "log_values")

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self.log_values: dict[str, float] = {}

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def __setitem__(self, name: str, value: float) -> None:
        self.values[name] = value

    def undefined(self, names: Iterable[str], reason: str) -> None:
        """Mark ``names`` NaN with ``reason`` (the general engine's texts)."""
        from zcfast.proxies import reductions
        for n in names:
            if n not in self.errors:
                self.errors[n] = reductions.undefined_reason(n, reason)
                self.values[n] = float("nan")

    def results(self, names: Sequence[str]) -> dict[str, ProxyResult]:
        from zcfast.proxies import ProxyResult, reductions
        out = {}
        for n in names:
            v = float(self.values[n])
            err = self.errors.get(n)
            if err is None and not math.isfinite(v):
                err = reductions.not_finite_reason(n, v)
            log_value = self.log_values.get(n)
            if n == "synflow" and err is None:
                log_value = math.log(v) if v > 0 else float("-inf")
            out[n] = ProxyResult(n, v if err is None or not math.isfinite(v) else float("nan"), None, log_value, err)
        return out


def _score_chunk_retry(space: Any, archs: Sequence[Any], x: Tensor, y: Tensor, proxies: list[str], seed: int,
                       num_classes: int, conv_mode: str) -> list[_Candidate]:
    """``_score_chunk``, halving the chunk on CUDA out-of-memory (the official code splits the
    batch instead, which would change BatchNorm statistics; splitting candidates does not)."""
    try:
        return _score_chunk(space, archs, x, y, proxies, seed, num_classes, conv_mode)
    except torch.OutOfMemoryError:
        if len(archs) == 1:
            raise
    if x.device.type == "cuda":
        torch.cuda.empty_cache()
    half = len(archs) // 2
    return (_score_chunk_retry(space, archs[:half], x, y, proxies, seed, num_classes, conv_mode)
            + _score_chunk_retry(space, archs[half:], x, y, proxies, seed, num_classes, conv_mode))


def _score_chunk(space: Any, archs: Sequence[Any], x: Tensor, y: Tensor, proxies: list[str], seed: int,
                 num_classes: int, conv_mode: str) -> list[_Candidate]:
    """Score one chunk of K architectures with the batched NB201 network."""
    from zcfast.batched.nb201 import BatchedNB201
    cands = _build_all(space, archs, seed, num_classes)
    net = BatchedNB201(cands, conv_mode=conv_mode)
    del cands
    K = net.K
    results = [_Candidate() for _ in range(K)]
    device = x.device
    want = set(proxies)
    if want & (set(_CE_PROXIES) | {"jacob_cov"}):
        cl = _channels_last(device)
        net.map_tensors(lambda t: _to_format(t.detach().to(device), cl).requires_grad_(t.dim() > 1))
        _gradient_pass(net, x, y, want, results, cl)
    if "synflow" in want:
        net.map_tensors(lambda t: t.detach().to(device=device, dtype=torch.float64).abs().requires_grad_(t.dim() > 1))
        _synflow_pass(net, x, results)
    return results


def _owner_sum(per: Tensor, owners: list[int], K: int) -> list[float]:
    """Sum per-tensor values [T] into per-candidate totals by owner index."""
    idx = torch.tensor(owners, device=per.device)
    tot = torch.zeros(K, dtype=per.dtype, device=per.device).index_add_(0, idx, per)
    return tot.tolist()


def _per_candidate(layers, weights: Sequence[Tensor], grads: Sequence[Tensor | None]):
    """Per-candidate (weight view, grad view, owner) triples of every layer."""
    ws: list[Tensor] = []
    gs: list[Tensor | None] = []
    owners: list[int] = []
    for layer, w, g in zip(layers, weights, grads):
        ws += layer.split(w.detach())
        gs += [None] * len(layer.owners) if g is None else layer.split(g.detach())
        owners += layer.owners
    return ws, gs, owners


def _saliency(results, name: str, layers, weights, grads, K: int) -> None:
    from zcfast.proxies.reductions import weight_saliency
    ws, gs, owners = _per_candidate(layers, weights, grads)
    per = weight_saliency(ws, gs, name)                                  # one fused call, [T]
    for k, v in enumerate(_owner_sum(per, owners, K)):
        results[k][name] = v


def _gradient_state(layers, grads: Sequence[Tensor | None], K: int) -> list[str | None]:
    """Per candidate: ``None`` (finite, not all zero), ``"nan"`` (a NaN/inf gradient) or
    :data:`reductions.ALL_ZERO`, from one fused per-tensor norm (:func:`reductions.gradient_problem`'s rule)."""
    from zcfast import ops
    from zcfast.proxies import reductions
    _, gs, owners = _per_candidate(layers, [g if g is not None else layer.weight for layer, g in zip(layers, grads)],
                                   grads)
    pairs = [(g, o) for g, o in zip(gs, owners) if g is not None]
    state: list[str | None] = [reductions.ALL_ZERO] * K
    if not pairs:
        return [None] * K
    per, _ = ops.saliency(None, [g for g, _ in pairs], "grad_norm")
    finite = [bool(torch.isfinite(g).all()) if not math.isfinite(v) else True
              for (g, _), v in zip(pairs, per.tolist())]
    for (_, o), v, ok in zip(pairs, per.tolist(), finite):
        if not ok:
            state[o] = "nan"
        elif v != 0.0 and state[o] == reductions.ALL_ZERO:
            state[o] = None
    return state


def _candidate_overflows(net, layers, x: Tensor, k: int) -> bool:
    """Whether candidate ``k``'s input or a recorded layer output exceeds the square range."""
    from zcfast.proxies import reductions
    if reductions.exceeds_square_range(x):
        return True
    for layer in layers:
        if layer.act is None or k not in layer.owners:
            continue
        act = layer.act
        g = layer.owners.index(k)
        part = act[g] if act.dim() == 3 else act.chunk(len(layer.owners), 1)[g]
        if reductions.exceeds_square_range(part):
            return True
    return False


def _channels_last(device: torch.device) -> bool:
    """Whether to run the float32 pass in channels_last. Off by default.

    On CPU it is faster (ReLU-conv-BN forward+backward at [64, 16, 32, 32]: 12.9 instead of
    22.7 ms, one thread) but less accurate: on the paper batch, an ill-conditioned NB201
    architecture's grad_norm moved 2.5e-3 from the float64 value (NCHW: 9e-5; score_arch
    itself: 2.7e-4), beyond the tolerance promised. ``ZCFAST_BATCHED_CHANNELS_LAST=1`` turns
    it on."""
    return os.environ.get("ZCFAST_BATCHED_CHANNELS_LAST", "0") == "1"


def _to_format(t: Tensor, channels_last: bool) -> Tensor:
    return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t


def _gradient_pass(net, x: Tensor, y: Tensor, want: set[str], results: list[_Candidate],
                   channels_last: bool = False) -> None:
    from zcfast import ops
    from zcfast.proxies import reductions
    K = net.K
    N = x.shape[0]
    need_jac = "jacob_cov" in want
    need_ce = bool(want & set(_CE_PROXIES))
    need_grasp = "grasp" in want
    ce_names = [p for p in _CE_PROXIES if p in want]
    xk = _to_format(x.repeat(1, K, 1, 1), channels_last)
    if need_jac:
        xk.requires_grad_(True)
    logits = net.forward(xk, bn="all")                                  # [K, N, O]
    if need_jac:
        # allow_unused: a candidate whose output ignores its input (every path cut by 'none'
        # edges) has no edge left to it; its Jacobian is 0 (jacob_cov NaN, as the engine's)
        (jx,) = torch.autograd.grad(logits.sum(), xk, retain_graph=need_ce, allow_unused=True)
        if jx is None:
            jx = torch.zeros_like(xk)
        jac = jx.reshape(N, K, -1).transpose(0, 1).to(torch.float64)   # [K, N, D]
        scores, _ = ops.jacob_cov(jac, 1e-5)
        for k, s in enumerate(scores.tolist()):
            results[k]["jacob_cov"] = s
            if not math.isfinite(s):
                results[k].errors["jacob_cov"] = reductions.jacob_cov_reason(jac[k], s)
        del jx, jac
    if not need_ce:
        return
    layers = net.layers()
    weights = [layer.weight for layer in layers]
    losses = [F.cross_entropy(logits[k], y) for k in range(K)]
    for k, lk in enumerate(torch.stack([lo.detach() for lo in losses]).tolist()):
        if not math.isfinite(lk):
            results[k].undefined(ce_names, reductions.loss_not_finite_reason(lk))
    loss = sum(losses)
    acts = [layer.act for layer in layers] if "fisher" in want else []
    grads = torch.autograd.grad(loss, weights + acts, create_graph=need_grasp, allow_unused=True)
    wgrads = list(grads[:len(weights)])
    agrads = list(grads[len(weights):])
    for k, state in enumerate(_gradient_state(layers, wgrads, K)):
        if state == "nan":
            results[k].undefined(ce_names, "the loss gradient is not finite (NaN or inf in the counted "
                                           "weights' gradients)")
        elif state == reductions.ALL_ZERO and _candidate_overflows(net, layers, x, k):
            results[k].undefined(ce_names, reductions.overflow_reason(x.dtype))
    for name in ("grad_norm", "snip", "plain"):
        if name in want:
            _saliency(results, name, layers, weights, wgrads, K)
    if "fisher" in want:
        tot = torch.zeros(K, dtype=torch.float32, device=x.device)
        for layer, g in zip(layers, agrads):
            if g is None:
                continue
            act = layer.act.detach()
            g = g.detach()
            if act.dim() == 3:                                          # classifier [K, N, O]
                act = act.permute(1, 0, 2).reshape(N, -1)
                g = g.permute(1, 0, 2).reshape(N, -1)
            pc, _ = ops.fisher(act, g)                                  # [G·Cout]
            # reductions.fisher_layer's rule per candidate: Σ_c |F_c| · fan-in
            per = pc.abs().view(len(layer.owners), -1).sum(1) * layer.fan_in()
            tot.index_add_(0, torch.tensor(layer.owners, device=tot.device), per.to(tot.dtype))
        for k, v in enumerate(tot.tolist()):
            results[k]["fisher"] = v
    if need_grasp:
        z = sum((g * g.detach()).sum() for g in wgrads if g is not None)
        hg = torch.autograd.grad(z, weights, allow_unused=True)
        _saliency(results, "grasp", layers, weights, hg, K)
        for k, state in enumerate(_gradient_state(layers, hg, K)):
            if state == "nan":
                results[k].undefined(["grasp"], "the Hessian-gradient product is not finite (NaN or inf "
                                                "in the counted weights' gradients)")
    for c in results:  # an undefined value stays NaN whatever the passes computed after
        for n in c.errors:
            if n in c.values and n != "jacob_cov":
                c.values[n] = float("nan")
    for layer in layers:
        layer.act = None


def _synflow_pass(net, x: Tensor, results: list[_Candidate]) -> None:
    from zcfast.proxies import reductions
    K = net.K
    ones = torch.ones((1, K * x.shape[1]) + tuple(x.shape[2:]), dtype=torch.float64, device=x.device)
    logits = net.forward(ones, bn="reduction")
    layers = net.layers()
    weights = [layer.weight for layer in layers]
    grads = torch.autograd.grad(logits.sum(), weights, allow_unused=True)
    _saliency(results, "synflow", layers, weights, grads, K)
    for k, out in enumerate(logits.detach().sum(dim=(1, 2)).tolist()):
        if not math.isfinite(out):
            results[k].errors["synflow"] = reductions.synflow_output_reason(out)
            results[k]["synflow"] = float("nan")
        elif math.isinf(results[k]["synflow"]):  # the float64 sum overflowed: the engine's log value
            ws, gs, owners = _per_candidate(layers, weights, grads)
            logs = [reductions.log_abs_prod_sum(w, g) for w, g, o in zip(ws, gs, owners) if o == k and g is not None]
            log_value = reductions.stable_log_total(logs)
            results[k].log_values["synflow"] = log_value
            results[k].errors["synflow"] = reductions.synflow_overflow_reason(log_value)
    for layer in layers:
        layer.act = None
