"""The stacked NAS-Bench-201 backend: batched multi-architecture scoring (design.md §6).

``score_batch(space, archs, inputs, targets, proxies)`` scores K architectures of a space per
forward/backward: for NAS-Bench-201 the K candidates run as one network
(:class:`zcfast.batched.nb201.BatchedNB201`); other spaces, and proxies whose needs are not in
:data:`SUPPORTED_NEEDS`, go to the module backend (``score_arch``, installed by
:mod:`zcfast.scoring`). Either way each candidate's scores equal ``score_arch`` on it
(same per-architecture seed, so the same weights; same batch) within floating-point tolerance.

The passes fill one :class:`~zcfast.proxies.registry.PassContext` per candidate (views of its
own weights, gradients, layer outputs, Jacobian, synflow tensors; the module backend's
problem rules), and every proxy's own function runs on it: the reductions are defined once,
in the proxy, for both backends. The context lists the module network's layers: ``layer_names``
are its Conv2d/Linear names, dead edges included (the passes skip them; their gradients are
filled as the exact zeros the module network gives), so a proxy of the weights alone equals
the module route too.

How the proxies separate (parameters of different candidates are disjoint, inputs are
per-candidate copies):

* one forward in training mode gives logits ``[K, N, classes]``;
* jacobian need: ``∂(Σ logits)/∂x`` for the stacked input copies ``[N, K·3, H, W]``; candidate
  k's channels are its own Jacobian ``[N, 3, H, W]`` (the proxy then makes one
  ``zcfast.ops.jacob_cov`` call per candidate; with K > 1 on a GPU the K calls, and the K
  saliency calls, could be fused again: measure first);
* grads / fisher needs: one backward of ``Σ_k CE(logits_k, y)`` for the weights and for every
  conv/linear output (Fisher), split per candidate;
* grasp: the same backward with ``create_graph``; ``z = Σ stopgrad(g)·g``; ``∂z/∂θ = H g`` per
  candidate (the Hessian is block diagonal across candidates);
* synflow: a second forward with |θ|, an all-ones input ``[1, K·3, H, W]`` and only the
  reduction-block BatchNorms (NB201 quirk), ``R = Σ logits``: in float32, rerun in float64 when
  a value leaves float32's safe range (:func:`_synflow_need`; equal to the float64 definition
  within :data:`SYNFLOW_FP32_RTOL`);
* multi_grads (ZiCo): per mini-batch (``PassContext.mini_batches(2)``: the given batches or the
  one batch's halves) one forward + backward of ``Σ_k CE``, split per candidate as the grads;
* relu_kernels (NWOT): one no-grad forward of the *all-edge* network (``edges="all"``: the module
  network's ``none`` is ``x * 0``, so every ReLU call reaches its output, dead edges included),
  ``zcfast.ops.hamming_kernel`` of each ReLU call's input per candidate channel group, listed for
  the ``ReLUConvBN`` wrapper and its inner ReLU as the module backend lists them;
* zen_pass (Zen-NAS): per candidate N(0, 1) weights, z and ε from a generator seeded with the
  call's seed (the module network's draw order), two no-grad forwards of an all-edge network
  with BatchNorm running statistics (momentum 0.1, eps 1e-3): pre-pool features, running vars;
* per_sample_grads (GradSign): one forward of the first batch with every BatchNorm per sample
  (over that image's H·W positions: what the official forward of the image alone gives; the
  samples are then independent), one backward of the summed per-sample losses, and each
  layer's per-sample weight gradients from its recorded input and output gradient (one batched
  matmul per layer); ``ZCFAST_BATCHED_PER_SAMPLE=loop`` runs the official one-sample loop;
* labels, weights, parameters, flops_counts: no pass; the candidate's own tensors under the
  module network's names (dead edges included) and NAS-Bench-201's MACs per call from shapes.

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
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from zcfast import ops
from zcfast.proxies import reductions
from zcfast.proxies.engine import (_NEED_FAILURES, PAPER_LAYER_TYPES, _check_inputs, _first_line, check_class_targets,
                                   finalise, split_batches)
from zcfast.proxies.needs import NeedError, get_need
from zcfast.proxies.registry import PassContext, ProxyResult, ProxySpec, resolve
from zcfast.proxies.suite_zero import ZEN_BN_EPS, ZEN_BN_MOMENTUM, ZEN_GAMMA
from zcfast.seeding import arch_seed

#: the needs this backend produces per candidate (routing: zcfast.scoring); a proxy, built-in or
#: user, whose needs are all here is computed by its own function on each candidate's context.
#: The plug-in needs give exactly the module backend's products (zcfast.proxies.suite_zero and
#: builtin_needs describe each), computed on the stacked network.
SUPPORTED_NEEDS: frozenset[str] = frozenset({
    "grads", "hessian_grad", "fisher", "jacobian", "outputs", "synflow",
    "labels", "weights", "parameters", "flops_counts", "relu_kernels", "multi_grads", "zen_pass",
    "per_sample_grads"})
_LOSS_NEEDS = ("grads", "hessian_grad", "fisher")
#: the needs the shared main pass of the live-edge network fills
_MAIN_NEEDS = frozenset({"grads", "hessian_grad", "fisher", "jacobian", "outputs"})

__all__ = ["score_batch", "score_one", "fast_route_applies", "supports", "supports_needs", "choose_k",
           "SUPPORTED_NEEDS", "default_conv_mode", "fast_init_matches", "set_module_scorer"]

#: the module-backend scorer and builder for what this backend does not run (installed by
#: zcfast.scoring, which sits above this module: dependency inversion instead of an import cycle)
_MODULE: dict[str, Any] = {}


def set_module_scorer(score_arch: Any, build_seeded: Any) -> None:
    """Install the module-backend fallbacks: ``score_arch(space, arch, ..., fast=False,
    detailed=True)`` for proxies whose needs this backend does not support and other spaces, and
    ``build_seeded(space, arch, seed, num_classes)`` for spaces whose fast initialisation does
    not reproduce ``space.build``. Called once by :mod:`zcfast.scoring` on import."""
    _MODULE["score_arch"] = score_arch
    _MODULE["build_seeded"] = build_seeded


def supports_needs(needs: Iterable[str]) -> bool:
    """Whether this backend produces every need in ``needs`` (:data:`SUPPORTED_NEEDS`)."""
    return set(needs) <= SUPPORTED_NEEDS


def supports(space: Any) -> bool:
    """True when ``space`` has a batched path (zcfast's NAS-Bench-201 space)."""
    from zcfast.spaces.nb201 import NB201Space
    return isinstance(space, NB201Space)


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
    from zcfast.spaces.nb201 import check_arch
    if fast:
        gen = torch.Generator().manual_seed(arch_seed(seed, space.key(arch)))
        return fast_weights(check_arch(arch), num_classes, generator=gen)
    return extract(_MODULE["build_seeded"](space, arch, seed, num_classes))


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
    from zcfast.proxies.registry import available_proxies
    known = set(available_proxies())
    bad = [p for p in names if p not in known]
    if bad:
        raise ValueError(f"unknown proxies {bad}; available: {sorted(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate proxies in {names}")
    return names


def score_batch(space: Any, archs: Sequence[Any], inputs: Tensor, targets: Tensor,
                proxies: Iterable[str] | str, seed: int = 42, device: str | torch.device = "cpu", *,
                num_classes: int = 10, k: int | None = None, conv_mode: str | None = None,
                detailed: bool = False,
                batches: Sequence[tuple[Tensor, Tensor | None]] | None = None
                ) -> list[dict[str, float]] | list[dict[str, ProxyResult]]:
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
        batches: several mini-batches ``[(inputs, targets), ...]`` instead of ``inputs`` /
            ``targets`` (then ``None``), each ``[N_b, C, H, W]`` / ``[N_b]``: single-batch passes
            use the first, multi-batch needs all of them (``multi_grads`` on this backend, one
            forward + backward per mini-batch; others through the module backend). Without it,
            ``multi_grads`` splits ``inputs`` into two halves (``PassContext.mini_batches``).

    Returns:
        one dict per architecture, in order: proxy name → value (NaN where the proxy is
        undefined, e.g. jacob_cov of a network whose output ignores some inputs), or
        proxy name → ``ProxyResult`` with ``detailed=True``.
    """
    names = _check_proxies(proxies)
    archs = list(archs)
    full = None
    if batches is not None:
        inputs, targets, extra = split_batches(inputs, targets, batches)
        full = [(inputs, targets)] + extra if extra else None
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        raise ValueError(f"inputs must be a [N, C, H, W] tensor, got "
                         f"{tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__}")
    if not isinstance(targets, Tensor) or targets.dim() != 1 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(f"targets must be a [N] tensor with N={inputs.shape[0]}, got "
                         f"{tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__}")
    for i, (xb, yb) in enumerate(full[1:] if full else (), 1):
        if not isinstance(xb, Tensor) or xb.dim() != 4 or xb.shape[1:] != inputs.shape[1:]:
            raise ValueError(f"batches[{i}]: inputs must be a [N, {', '.join(map(str, inputs.shape[1:]))}] tensor "
                             f"like batches[0], got {tuple(xb.shape) if isinstance(xb, Tensor) else type(xb).__name__}")
        if not isinstance(yb, Tensor) or yb.dim() != 1 or yb.shape[0] != xb.shape[0]:
            raise ValueError(f"batches[{i}]: targets must be a [N] tensor with N={xb.shape[0]}, got "
                             f"{tuple(yb.shape) if isinstance(yb, Tensor) else type(yb).__name__}")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not archs:
        return []
    device = torch.device(device)
    if not supports(space):
        res = [_score_arch(space, a, inputs, targets, names, seed, num_classes, device, full) for a in archs]
        return res if detailed else _values(res)
    mode = conv_mode or default_conv_mode(device)
    if mode not in ("grouped", "split"):
        raise ValueError(f"conv_mode must be 'grouped' or 'split', got {mode!r}")
    specs = resolve(names)
    batched = [spec for spec in specs if supports_needs(spec.needs)]
    rest = [spec.name for spec in specs if not supports_needs(spec.needs)]
    if k is None:
        k = choose_k(len(archs), inputs.shape[0], device, inputs.shape[-1],
                     ["grasp"] if any("hessian_grad" in spec.needs for spec in batched) else [])
    x = inputs.detach().to(device)
    y = targets.detach().to(device)
    with _strict_fp32(device):
        res = _score_sorted(space, archs, x, y, inputs, targets, names, batched, rest, seed, num_classes,
                            device, mode, k, full)
    return res if detailed else _values(res)


def _values(res: list[dict[str, ProxyResult]]) -> list[dict[str, float]]:
    return [{p: r.value for p, r in d.items()} for d in res]


def fast_route_applies(space: Any, proxies: Sequence[str]) -> bool:
    """Whether :func:`zcfast.score_arch` may score ``proxies`` on ``space`` with :func:`score_one`:
    the space is zcfast's NAS-Bench-201 space (not merely one named "nb201": a look-alike
    may build other networks) and every proxy's needs are :data:`SUPPORTED_NEEDS` (a user proxy
    included: its own function runs on each candidate's context)."""
    from zcfast.spaces.nb201 import NB201Space
    if not isinstance(space, NB201Space):
        return False
    try:
        specs = resolve(list(proxies))
    except ValueError:
        return False
    return all(supports_needs(spec.needs) for spec in specs)


def score_one(space: Any, arch: Any, inputs: Tensor, targets: Tensor | None, proxies: Sequence[str],
              seed: int = 42, num_classes: int = 10, device: str | torch.device = "cpu", *,
              detailed: bool = False,
              batches: Sequence[tuple[Tensor, Tensor | None]] | None = None
              ) -> dict[str, float] | dict[str, ProxyResult]:
    """One architecture through the batched network (K = 1): :func:`zcfast.score_arch`'s route
    on NAS-Bench-201 (``fast=True``, its default). ``batches``: several mini-batches instead of
    ``inputs`` / ``targets`` (then ``None``), each validated as ``inputs`` is; multi-batch needs
    read all, single-batch passes the first.

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
        proxies: names whose needs are all in :data:`SUPPORTED_NEEDS`.
        detailed: return ``{name: ProxyResult}`` (with ``error``) instead of floats.

    Returns:
        proxy name → value (NaN where the proxy is undefined), or → ``ProxyResult``.
    """
    names = _check_proxies(proxies)
    if not fast_route_applies(space, names):
        raise ValueError(f"no batched route for proxies {names} on space {getattr(space, 'name', space)!r}")
    need_targets = any(get_need(n).targets for spec in resolve(names) for n in spec.needs)
    pairs = [(inputs, targets)] if batches is None else None
    if batches is not None:
        inputs, targets, extra = split_batches(inputs, targets, batches)
        pairs = [(inputs, targets)] + extra
    checked = []
    for xb, yb in pairs:
        _check_inputs(xb, yb, need_targets)
        if xb.dim() != 4:
            raise ValueError(f"inputs must be a [N, C, H, W] batch, got shape {tuple(xb.shape)}")
        if yb is None or not need_targets:
            yb = torch.zeros(xb.shape[0], dtype=torch.long)
        elif not yb.is_floating_point():
            check_class_targets(yb, num_classes)
        checked.append((xb, yb))
    if len(checked) > 1:
        return score_batch(space, [arch], None, None, names, seed, device, num_classes=num_classes, k=1,
                           detailed=detailed, batches=checked)[0]
    return score_batch(space, [arch], checked[0][0], checked[0][1], names, seed, device, num_classes=num_classes,
                       k=1, detailed=detailed)[0]


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
                  k, full=None) -> list[dict[str, ProxyResult]]:
    # Chunks of similar architectures: sorted by their op tuples, neighbours share leading
    # edges, where a single op group then covers the whole chunk (no channel gathers). Each
    # candidate's scores do not depend on its chunk-mates, so the order is restored after.
    order = sorted(range(len(archs)), key=lambda i: tuple(space.to_choices(archs[i])))
    out: list[dict[str, ProxyResult] | None] = [None] * len(archs)
    for start in range(0, len(order), k):
        idx = order[start:start + k]
        chunk = [archs[i] for i in idx]
        vals = _score_chunk_retry(space, chunk, x, y, batched, seed, num_classes, mode, full) if batched else \
            [{} for _ in chunk]
        for i, a, res in zip(idx, chunk, vals):
            if rest:
                res.update(_score_arch(space, a, inputs, targets, rest, seed, num_classes, device, full))
            out[i] = {p: res[p] for p in names}
    return out  # type: ignore[return-value]


def _score_arch(space, arch, inputs, targets, proxies, seed, num_classes, device, full=None
                ) -> dict[str, ProxyResult]:
    if full is not None:  # several mini-batches: the module backend reads them all
        return dict(_MODULE["score_arch"](space, arch, None, None, proxies, seed=seed, num_classes=num_classes,
                                          device=str(device), fast=False, detailed=True, batches=full))
    return dict(_MODULE["score_arch"](space, arch, inputs, targets, proxies, seed=seed, num_classes=num_classes,
                                      device=str(device), fast=False, detailed=True))


def _score_chunk_retry(space: Any, archs: Sequence[Any], x: Tensor, y: Tensor, specs: list[ProxySpec], seed: int,
                       num_classes: int, conv_mode: str, full: Sequence[tuple[Tensor, Tensor]] | None = None
                       ) -> list[dict[str, ProxyResult]]:
    """``_score_chunk``, halving the chunk on CUDA out-of-memory (the official code splits the
    batch instead, which would change BatchNorm statistics; splitting candidates does not)."""
    try:
        return _score_chunk(space, archs, x, y, specs, seed, num_classes, conv_mode, full)
    except torch.OutOfMemoryError:
        if len(archs) == 1:
            raise
    if x.device.type == "cuda":
        torch.cuda.empty_cache()
    half = len(archs) // 2
    return (_score_chunk_retry(space, archs[:half], x, y, specs, seed, num_classes, conv_mode, full)
            + _score_chunk_retry(space, archs[half:], x, y, specs, seed, num_classes, conv_mode, full))


def _score_chunk(space: Any, archs: Sequence[Any], x: Tensor, y: Tensor, specs: list[ProxySpec], seed: int,
                 num_classes: int, conv_mode: str, full: Sequence[tuple[Tensor, Tensor]] | None = None
                 ) -> list[dict[str, ProxyResult]]:
    """Score one chunk of K architectures with the batched NB201 network: the passes fill one
    :class:`PassContext` per candidate (views of its own weights and gradients, the plug-in
    needs' products in ``data``), then every proxy's own function runs on each (the module
    backend's :func:`finalise`).

    Passes: the shared main pass and ``multi_grads`` on the live-edge network, synflow on it in
    float32 with a float64 fallback; ``relu_kernels`` one no-grad forward of the all-edge network (every ReLU call of the
    module network, dead edges included), or the main forward's ReLU inputs when that pass runs
    and no candidate has a dead edge (then both networks are the same); ``zen_pass`` two no-grad forwards of an all-edge
    network re-initialised as Zen-NAS; ``labels`` / ``weights`` / ``parameters`` /
    ``flops_counts`` read the candidates' tensors and shapes (no pass)."""
    from zcfast.batched.nb201 import BatchedNB201
    cands = _build_all(space, archs, seed, num_classes)
    net = BatchedNB201(cands, conv_mode=conv_mode)
    K = net.K
    ctxs = [PassContext() for _ in range(K)]
    device = x.device
    want = {n for spec in specs for n in spec.needs}
    try:
        # each candidate's private copies of the scoring batches: a proxy writing them reaches
        # neither the caller's tensors nor another candidate's (e.g. the labels epe_nas reads)
        given = [(xb.detach().to(device), yb.detach().to(device)) for xb, yb in full] if full else [(x, y)]
        for c in ctxs:
            c.batches = tuple((xb.clone(), yb.clone()) for xb, yb in given)
            c.loss_fn, c.layer_types, c.seed = F.cross_entropy, PAPER_LAYER_TYPES, seed
        main = bool(want & _MAIN_NEEDS)
        cl = _channels_last(device)
        if main or want & {"multi_grads", "per_sample_grads"}:
            net.map_tensors(lambda t: _to_format(t.detach().to(device), cl).requires_grad_(t.dim() > 1))
        # each candidate's counted weights: views of this call's own (private) float32 tensors
        layers = net.layers()
        ws, _, owners = _per_candidate(layers, [layer.weight.to(device) for layer in layers], [None] * len(layers))
        for w, o in zip(ws, owners):
            ctxs[o].weights.append(w)
        # NWOT's kernels from the main forward when it runs every edge the module network runs
        # (no candidate has a dead edge): the same training-mode forward, one pass saved
        relu_tap = None
        if main and "relu_kernels" in want and all(
                live == tuple(op != "none" for op in arch) for live, arch in zip(net.live, net.archs)):
            relu_tap = net.relu_tap = _ReluKernels(K)
        if main:
            try:
                _gradient_pass(net, x, y, want, ctxs, cl)
            finally:
                net.relu_tap = None
        if relu_tap is not None:
            relu_tap.clear()
            for c, kernels in zip(ctxs, relu_tap.per):
                c.data["relu_kernels"] = kernels
        if "multi_grads" in want:
            _produce("multi_grads", ctxs, _multi_grads_pass, net, ctxs, cl)
        if "per_sample_grads" in want:
            _produce("per_sample_grads", ctxs, _per_sample_pass, net, ctxs, cl)
        if "synflow" in want:
            _synflow_need(net, x, ctxs)
        live = net.live
        del net
        if "relu_kernels" in want and relu_tap is None:
            _produce("relu_kernels", ctxs, _relu_kernel_pass, cands, x, ctxs, conv_mode)
        if "zen_pass" in want:
            _produce("zen_pass", ctxs, _zen_pass, cands, x, ctxs, seed, conv_mode)
        _shape_needs(cands, want, ctxs, x)
        _align_to_module_layers(cands, live, ctxs)
        del cands
        order = sorted(specs, key=lambda spec: not spec.builtin)
        out = []
        for c in ctxs:
            done = {spec.name: finalise(spec, c, False) for spec in order}
            out.append({spec.name: done[spec.name] for spec in specs})
        return out
    finally:
        for c in ctxs:
            c.clear()


def _produce(name: str, ctxs: list[PassContext], run: Any, *args: Any) -> None:
    """Run the batched pass ``run(*args)`` of the plug-in need ``name``; a failure marks that need in
    every candidate's ``problems`` with the module backend's texts (a ``NeedError``'s message,
    else ``the <need> need failed: <error>``). CUDA out-of-memory propagates (the chunk is halved)."""
    try:
        run(*args)
    except torch.OutOfMemoryError:
        raise
    except NeedError as exc:
        for c in ctxs:
            c.problems.setdefault(name, str(exc))
    except _NEED_FAILURES as exc:
        for c in ctxs:
            c.problems.setdefault(name, f"the {name} need failed: {_first_line(exc)}")


def _shape_needs(cands: Sequence[Any], want: set[str], ctxs: list[PassContext], x: Tensor) -> None:
    """The needs without a pass, per candidate from its own tensors (the module network's names):
    ``labels`` (the first batch's targets), ``weights`` (every Conv2d/Linear weight, dead edges
    included), ``parameters`` (every parameter), ``flops_counts`` (MACs per call on one sample)."""
    from zcfast.batched.nb201 import call_macs, named_parameters, named_weights
    device = x.device
    for c, w in zip(ctxs, cands):
        if "labels" in want:
            c.data["labels"] = c.batches[0][1]
        if "weights" in want:
            c.data["weights"] = [(n, t.to(device)) for n, t in named_weights(w)]
        if "parameters" in want:
            c.data["parameters"] = {n: t.to(device) for n, t in named_parameters(w).items()}
        if "flops_counts" in want:
            c.data["flops_counts"] = call_macs(w, (int(x.shape[2]), int(x.shape[3])))


def _align_to_module_layers(cands: Sequence[Any], live: Sequence[Sequence[bool]], ctxs: list[PassContext]) -> None:
    """Give each candidate's context the module backend's layer list: ``layer_names`` the module
    network's names of every Conv2d/Linear (dead edges included), and every per-layer list aligned
    with it. The passes ran on the live-edge network, so a dead layer's entries are filled as the
    module network gives them: its weight; zero gradients, Hessian-gradient products, multi-batch
    and per-sample gradients (its output never reaches the loss, or its input is 0); no Fisher
    pair (0); synflow's |θ| in float64 and a zero gradient."""
    from zcfast.batched.nb201 import live_mask, named_weights
    for w, lv, c in zip(cands, live, ctxs):
        full = named_weights(w)
        c.layer_names = [n for n, _ in full]
        mask = live_mask(w, lv)
        if all(mask):
            continue
        device = c.weights[0].device if c.weights else torch.device("cpu")
        dead = {i: t.to(device) for i, ((_, t), m) in enumerate(zip(full, mask)) if not m}

        def expand(values: list, fill: Any) -> list:
            it = iter(values)
            return [next(it) if m else fill(dead[i]) for i, m in enumerate(mask)]

        c.weights = expand(c.weights, lambda t: t)
        for attr in ("grads", "hessian_grads"):
            if getattr(c, attr) is not None:
                setattr(c, attr, expand(getattr(c, attr), torch.zeros_like))
        if c.fisher_pairs is not None and c.fisher_channel_dims is not None:
            c.fisher_pairs = expand(c.fisher_pairs, lambda t: [])
            c.fisher_channel_dims = expand(c.fisher_channel_dims, lambda t: 1)
        if c.synflow_weights is not None and c.synflow_grads is not None:
            c.synflow_weights = expand(c.synflow_weights, lambda t: t.double().abs())
            c.synflow_grads = expand(c.synflow_grads, lambda t: torch.zeros_like(t, dtype=torch.float64))
        if "multi_grads" in c.data:
            c.data["multi_grads"] = [expand(b, torch.zeros_like) for b in c.data["multi_grads"]]
        if "per_sample_grads" in c.data:
            n = c.batches[0][0].shape[0]
            c.data["per_sample_grads"] = expand(c.data["per_sample_grads"],
                                                lambda t: torch.zeros((n,) + tuple(t.shape), dtype=t.dtype,
                                                                      device=t.device))


def _candidate_grads(net, x: Tensor, y: Tensor, bad: list[str | None], what: str,
                     channels_last: bool) -> list[list[Tensor | None]]:
    """One training-mode forward of ``x`` [N, 3, H, W] repeated for the K candidates and one
    backward of ``Σ_k CE(logits_k, y)`` over the candidates whose loss is finite (a candidate
    whose loss is not gets ``bad[k] = "the loss of <what> is not finite (v)"``, the module
    backend's reason, and no gradient). Returns each candidate's ∂L/∂W list (live layers)."""
    K = net.K
    layers = net.layers()
    weights = [layer.weight for layer in layers]
    logits = net.forward(_to_format(x.repeat(1, K, 1, 1), channels_last), bn="all")   # [K, N, O]
    losses = [F.cross_entropy(logits[k], y) for k in range(K)]
    for k, v in enumerate(torch.stack([lo.detach() for lo in losses]).tolist()):
        if bad[k] is None and not math.isfinite(v):
            bad[k] = f"the loss of {what} is not finite ({v})"
    ok = [k for k in range(K) if bad[k] is None]
    grads: list[Tensor | None] = [None] * len(weights)
    if ok:
        grads = list(torch.autograd.grad(sum(losses[k] for k in ok), weights, allow_unused=True))
    return _by_candidate(layers, grads, K)


def _sweep(net, ctxs: list[PassContext], need: str, steps: Iterable[tuple[Tensor, Tensor, str]],
           channels_last: bool) -> list[list[list[Tensor | None]] | None]:
    """The loop both gradient-sweep needs share: for each ``(x, y, what)`` step one
    :func:`_candidate_grads` forward + backward of the K candidates; the layers' recorded
    outputs are released whatever happens. A candidate whose loss is not finite on a step gets
    the module backend's reason in ``problems[need]`` and ``None``; the others get their ∂L/∂W
    lists, one per step (each aligned with the candidate's live layers)."""
    K = net.K
    per: list[list[list[Tensor | None]]] = [[] for _ in range(K)]
    bad: list[str | None] = [None] * K
    try:
        for x, y, what in steps:
            for k, gk in enumerate(_candidate_grads(net, x, y, bad, what, channels_last)):
                per[k].append(gk)
    finally:
        for layer in net.layers():
            layer.act = None
    out: list[list[list[Tensor | None]] | None] = []
    for k, c in enumerate(ctxs):
        if bad[k] is not None:
            c.problems.setdefault(need, bad[k])
            out.append(None)
        else:
            out.append(per[k])
    return out


def _multi_grads_pass(net, ctxs: list[PassContext], channels_last: bool) -> None:
    """The ``multi_grads`` need of K candidates: per mini-batch (``PassContext.mini_batches(2)``:
    the given batches, or the one batch's two halves) one training-mode forward and one backward
    of ``Σ_k CE(logits_k, y)`` on the live-edge network (:func:`_sweep`); each candidate's
    ∂L/∂W list aligned with its ``ctx.weights`` (dead edges are left out: their gradient is
    exactly 0, which ZiCo drops). A candidate whose loss is not finite on a mini-batch gets the
    module backend's reason."""
    steps = ((xb, yb, "a mini-batch") for xb, yb in ctxs[0].mini_batches(2))
    for c, grads in zip(ctxs, _sweep(net, ctxs, "multi_grads", steps, channels_last)):
        if grads is not None:
            c.data["multi_grads"] = grads


def per_sample_route() -> str:
    """How the stacked backend computes ``per_sample_grads``: ``"stacked"`` (default: one forward
    with per-sample BatchNorm and one backward, :func:`_per_sample_pass`) or ``"loop"`` (the
    official loop, one forward + backward per sample, :func:`_per_sample_loop`; the reference
    the tests compare with), from ``ZCFAST_BATCHED_PER_SAMPLE``."""
    env = os.environ.get("ZCFAST_BATCHED_PER_SAMPLE", "stacked")
    if env not in ("stacked", "loop"):
        raise ValueError(f"ZCFAST_BATCHED_PER_SAMPLE must be 'stacked' or 'loop', got {env!r}")
    return env


def _per_sample_pass(net, ctxs: list[PassContext], channels_last: bool) -> None:
    """The ``per_sample_grads`` need of K candidates (GradSign's official per-sample loop) in one
    forward and one backward: per candidate one ``[N, *W.shape]`` tensor per weight of its
    ``ctx.weights`` (zeros where unused), ∂ℓᵢ/∂W as a forward of sample i *alone* gives it.

    How: a training-mode BatchNorm of one image normalises over its H·W positions, so the
    forward of the whole first batch ``[N, K·3, H, W]`` with every BatchNorm per sample
    (``bn="sample"``) gives every sample its official activations, and the samples are
    independent (every other NB201 op is per sample: convolutions, ReLU, pools, the
    classifier). The backward of ``Σ_k Σ_i CE(logits_k[i], y_i)`` then gives each sample its own
    output gradient δᵢ at every layer, and :func:`zcfast.batched.nb201.per_sample_weight_grads`
    forms gᵢ = δᵢ · unfold(xᵢ)ᵀ from the recorded inputs (one batched matmul per layer).
    This relies on knowing the architecture; the module backend (any ``nn.Module``) keeps one
    forward per sample. A candidate with a non-finite loss on some sample gets the loop's
    reason (the first such sample's) and no gradients. ``ZCFAST_BATCHED_PER_SAMPLE=loop``:
    :func:`_per_sample_loop`."""
    if per_sample_route() == "loop":
        _per_sample_loop(net, ctxs, channels_last)
        return
    from zcfast.batched.nb201 import per_sample_weight_grads
    K = net.K
    x, y = ctxs[0].batches[0]
    layers = net.layers()
    net.record_inputs = True
    try:
        logits = net.forward(_to_format(x.repeat(1, K, 1, 1), channels_last), bn="sample")   # [K, N, O]
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(K),
                                 reduction="none").view(K, -1)                                 # [K, N]
        finite = torch.isfinite(losses.detach())
        bad: list[str | None] = [None] * K
        if not bool(finite.all()):
            for k in range(K):
                if not bool(finite[k].all()):
                    i = int((~finite[k]).nonzero()[0, 0])
                    bad[k] = f"the loss of sample {i} is not finite ({float(losses[k, i])})"
        ok = [k for k in range(K) if bad[k] is None]
        per_layer: list[list[Tensor] | None] = [None] * len(layers)
        if ok:
            acts = [layer.act for layer in layers]
            deltas = torch.autograd.grad(losses[ok].sum(), acts, allow_unused=True)
            with torch.no_grad():
                per_layer = [None if d is None else per_sample_weight_grads(layer, d)
                             for layer, d in zip(layers, deltas)]
    finally:
        net.record_inputs = False
        for layer in layers:
            layer.act = None
            layer.inp = None
    per: list[list[Tensor | None]] = [[] for _ in range(K)]
    for layer, gs in zip(layers, per_layer):
        for gi, o in enumerate(layer.owners):
            per[o].append(None if gs is None else gs[gi])
    for k, c in enumerate(ctxs):
        if bad[k] is not None:
            c.problems.setdefault("per_sample_grads", bad[k])
            continue
        n = x.shape[0]
        c.data["per_sample_grads"] = [
            g.contiguous() if g is not None else torch.zeros((n,) + tuple(w.shape), dtype=w.dtype, device=w.device)
            for g, w in zip(per[k], c.weights)]


def _per_sample_loop(net, ctxs: list[PassContext], channels_last: bool) -> None:
    """The ``per_sample_grads`` need of K candidates as GradSign's official loop: per sample i
    of the first batch one training-mode forward of ``[1, K·3, H, W]`` (BatchNorm over that one
    sample) and one backward of ``Σ_k CE(logits_k, y_i)`` (:func:`_sweep`); per candidate one
    ``[N, *W.shape]`` tensor per weight of its ``ctx.weights`` (zeros where unused). A candidate
    whose loss is not finite on a sample gets the module backend's reason. The reference of
    :func:`_per_sample_pass` (``ZCFAST_BATCHED_PER_SAMPLE=loop``)."""
    x, y = ctxs[0].batches[0]
    steps = ((x[i:i + 1], y[i:i + 1], f"sample {i}") for i in range(x.shape[0]))
    for c, per in zip(ctxs, _sweep(net, ctxs, "per_sample_grads", steps, channels_last)):
        if per is None:
            continue
        c.data["per_sample_grads"] = [
            torch.stack([s[t] if s[t] is not None else torch.zeros_like(w) for s in per])
            for t, w in enumerate(c.weights)]


class _ReluKernels:
    """``BatchedNB201.relu_tap`` collecting NWOT's kernels: per candidate ``[(module name,
    K [N, N] float64), ...]`` in call order, one entry per ReLU-typed module a call passes through
    (a wrapper and its inner ReLU share one kernel, listed twice, as the module backend). A kernel
    is computed once per (source features, candidate), as the module backend reuses it for the
    edges one node feeds."""

    def __init__(self, K: int) -> None:
        self.per: list[list[tuple[str, Tensor]]] = [[] for _ in range(K)]
        self._recent: list[tuple[Tensor, int, Tensor]] = []   # (key, candidate, kernel), the last few

    def __call__(self, x: Tensor, owners: list[int], names: tuple[str, ...], key: Tensor) -> None:
        G = len(owners)
        parts = x.chunk(G, 1) if G > 1 else (x,)
        for part, k in zip(parts, owners):
            kern = next((kk for t, o, kk in self._recent if t is key and o == k), None)
            if kern is None:
                kern = ops.hamming_kernel([part.detach()])
                self._recent.append((key, k, kern))
                del self._recent[:-4 * len(self.per)]
            self.per[k] += [(n, kern) for n in names]

    def clear(self) -> None:
        self._recent.clear()


def _relu_kernel_pass(cands: Sequence[Any], x: Tensor, ctxs: list[PassContext], conv_mode: str) -> None:
    """The ``relu_kernels`` need of K candidates: one no-grad training-mode forward of the
    all-edge network (every ReLU call of the module network reaches its output: ``none`` is
    ``x * 0`` there, so dead edges count), the Hamming kernel of each call's input per candidate."""
    from zcfast.batched.nb201 import BatchedNB201
    net = BatchedNB201(cands, conv_mode=conv_mode, edges="all")
    net.map_tensors(lambda t: t.detach().to(x.device))
    tap = _ReluKernels(net.K)
    net.relu_tap = tap
    try:
        with torch.no_grad():
            net.forward(x.repeat(1, net.K, 1, 1), bn="all")
    finally:
        net.relu_tap = None
        tap.clear()
    for c, kernels in zip(ctxs, tap.per):
        c.data["relu_kernels"] = kernels


def _zen_pass(cands: Sequence[Any], x: Tensor, ctxs: list[PassContext], seed: int | None, conv_mode: str) -> None:
    """The ``zen_pass`` need of K candidates, as ``suite_zero``'s on each module network: per
    candidate a generator seeded with the call's ``seed`` draws its N(0, 1) weights (module order,
    every edge), then z and ε [N, ...]; two no-grad training-mode forwards of the all-edge network
    (BatchNorm eps 1e-3, running statistics at momentum 0.1) on z and z + γ·ε; the pre-pool
    features and every BatchNorm2d's running variance per candidate."""
    from zcfast.batched.nb201 import BatchedNB201, gaussian_weights
    device = x.device
    dtype = x.dtype if x.is_floating_point() else torch.float32
    zw, zs, es = [], [], []
    for w in cands:
        gen = None if seed is None else torch.Generator(device=device).manual_seed(int(seed))
        zw.append(gaussian_weights(w, gen, ZEN_BN_EPS, device))
        zs.append(torch.randn(x.shape, generator=gen, device=device, dtype=dtype))
        es.append(torch.randn(x.shape, generator=gen, device=device, dtype=dtype))
    net = BatchedNB201(zw, conv_mode=conv_mode, edges="all")
    del zw
    net.track_running_stats(ZEN_BN_MOMENTUM)
    feats: list[Tensor] = []
    net.feature_tap = lambda h: feats.append(h.detach())
    try:
        with torch.no_grad():
            net.forward(torch.cat(zs, 1), bn="all")
            net.forward(torch.cat([z + ZEN_GAMMA * e for z, e in zip(zs, es)], 1), bn="all")
    finally:
        net.feature_tap = None
    f0, f1 = (f.chunk(net.K, 1) for f in feats)
    for k, (c, rvs) in enumerate(zip(ctxs, net.running_vars())):
        c.data["zen_pass"] = {"features": (f0[k], f1[k]), "running_vars": rvs}


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


def _by_candidate(layers, tensors: Sequence[Tensor | None], K: int) -> list[list[Tensor | None]]:
    """``tensors`` (one per batched layer: a weight's gradient or None) as per-candidate lists
    aligned with each candidate's ``ctx.weights``."""
    _, gs, owners = _per_candidate(layers, [layer.weight for layer in layers], tensors)
    out: list[list[Tensor | None]] = [[] for _ in range(K)]
    for g, o in zip(gs, owners):
        out[o].append(g)
    return out


def _candidate_overflows(net, layers, x: Tensor, k: int) -> bool:
    """Whether candidate ``k``'s input or a recorded layer output exceeds the square range."""
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


def _mark(ctx: PassContext, needs: Iterable[str], reason: str) -> None:
    for n in needs:
        ctx.problems.setdefault(n, reason)


def _gradient_pass(net, x: Tensor, y: Tensor, want: set[str], ctxs: list[PassContext],
                   channels_last: bool = False) -> None:
    """The shared main pass of K candidates: one forward, the backwards ``want`` needs; fills
    each candidate's ``jacobian`` [N, C, H, W], ``grads``, ``fisher_pairs``, ``hessian_grads`` and
    ``logits`` [N, classes] / ``loss`` with the module backend's problem rules (same reasons)."""
    K = net.K
    need_jac = "jacobian" in want
    need_hg = "hessian_grad" in want
    need_loss = bool(want & set(_LOSS_NEEDS))
    xk = _to_format(x.repeat(1, K, 1, 1), channels_last)
    if need_jac:
        xk.requires_grad_(True)
    logits = net.forward(xk, bn="all")                                  # [K, N, O]
    if need_jac:
        # allow_unused: a candidate whose output ignores its input (every path cut by 'none'
        # edges) has no edge left to it; its Jacobian is 0 (jacob_cov NaN, as the engine's)
        (jx,) = torch.autograd.grad(logits.sum(), xk, retain_graph=need_loss, allow_unused=True)
        if jx is None:
            jx = torch.zeros_like(xk)
        C = x.shape[1]
        for k in range(K):
            ctxs[k].jacobian = jx[:, k * C:(k + 1) * C].detach()
        del jx
    if not (need_loss or "outputs" in want):
        return
    layers = net.layers()
    weights = [layer.weight for layer in layers]
    losses = [F.cross_entropy(logits[k], y) for k in range(K)]
    for k, lk in enumerate(torch.stack([lo.detach() for lo in losses]).tolist()):
        if not math.isfinite(lk):
            _mark(ctxs[k], _LOSS_NEEDS, reductions.loss_not_finite_reason(lk))
    if "outputs" in want:
        for k in range(K):
            ctxs[k].logits = logits[k].detach()
            ctxs[k].loss = losses[k].detach()
    if not need_loss:
        for layer in layers:
            layer.act = None
        return
    loss = sum(losses)
    fisher = "fisher" in want
    acts = [layer.act for layer in layers] if fisher else []
    grads = torch.autograd.grad(loss, weights + acts, create_graph=need_hg, allow_unused=True)
    wgrads = list(grads[:len(weights)])
    agrads = list(grads[len(weights):])
    per_cand = _by_candidate(layers, wgrads, K)
    for k, gk in enumerate(per_cand):
        reason = reductions.gradient_problem([g for g in gk if g is not None])
        if reason == reductions.ALL_ZERO:
            reason = reductions.overflow_reason(x.dtype) if _candidate_overflows(net, layers, x, k) else None
        if reason is not None:
            _mark(ctxs[k], _LOSS_NEEDS, reason)
        ctxs[k].grads = gk
    if fisher:
        pairs: list[list[list[tuple[Tensor, Tensor]]]] = [[] for _ in range(K)]
        dims: list[list[int]] = [[] for _ in range(K)]
        for layer, g in zip(layers, agrads):
            act = layer.act.detach()
            G = len(layer.owners)
            for gi, o in enumerate(layer.owners):
                if act.dim() == 3:                                      # classifier [K, N, O]
                    pair = (act[gi], g[gi].detach()) if g is not None else None
                    dims[o].append(-1)
                else:
                    pair = (act.chunk(G, 1)[gi], g.detach().chunk(G, 1)[gi]) if g is not None else None
                    dims[o].append(1)
                pairs[o].append([pair] if pair is not None else [])
        for k in range(K):
            if "fisher" not in ctxs[k].problems:
                ctxs[k].fisher_pairs = pairs[k]
                ctxs[k].fisher_channel_dims = dims[k]
    if need_hg:
        z = sum((g * g.detach()).sum() for g in wgrads if g is not None)
        hg = torch.autograd.grad(z, weights, allow_unused=True)
        for k, hk in enumerate(_by_candidate(layers, list(hg), K)):
            ctxs[k].hessian_grads = hk
            reason = reductions.gradient_problem([h for h in hk if h is not None],
                                                 what="the Hessian-gradient product")
            if reason is not None and reason != reductions.ALL_ZERO:
                _mark(ctxs[k], ("hessian_grad",), reason)
    for layer in layers:
        layer.act = None


# synflow's float32 pass is accepted only when its output and every gradient are finite and
# within these bounds. On the |θ| network with an all-ones input every value is a sum of
# non-negative products that reaches the output (BatchNorm, the one place with a subtraction,
# turns an infinity into NaN), so an overflow anywhere shows as a non-finite output or
# gradient; the upper bound (1 % of float32's largest value, 3.4e38) keeps a margin for the
# proxy's own products. The lower bound keeps every gradient far from float32's underflow
# (smallest normal 1.2e-38). Otherwise the chunk is recomputed
# in float64, the definition (docs/proxies.md, "synflow").
SYNFLOW_FP32_MAX = 0.01 * float(torch.finfo(torch.float32).max)
SYNFLOW_FP32_MIN_GRAD = 1e-20
# Relative tolerance of the float32 pass's value against the float64 definition, as tested over
# NB201 architectures (tests/test_batched_synflow_fp32.py; worst measured over 100 sampled
# architectures at 32×32: 3.5e-7): the |θ| network with an all-ones input sums non-negative
# terms except inside the reduction blocks' BatchNorms, so float32 rounding does not cancel.
SYNFLOW_FP32_RTOL = 1e-5


def synflow_precision() -> str:
    """``"auto"`` (float32 pass, float64 where it leaves the safe range; the default) or
    ``"float64"`` (always the float64 pass), from ``ZCFAST_BATCHED_SYNFLOW``."""
    env = os.environ.get("ZCFAST_BATCHED_SYNFLOW", "auto")
    if env not in ("auto", "float64"):
        raise ValueError(f"ZCFAST_BATCHED_SYNFLOW must be 'auto' or 'float64', got {env!r}")
    return env


def _synflow_need(net, x: Tensor, ctxs: list[PassContext]) -> None:
    """The synflow need of K candidates (net's tensors are replaced by their |θ| copies).

    ``auto``: the pass in float32 first (on CPU the float64 convolutions and their backward
    are most of a synflow scoring, and float32 halves their cost); kept only when
    :func:`_synflow_fp32_ok` holds, otherwise the whole chunk reruns in float64, the
    definition. The proxy's reduction always runs in float64 (the tensors are widened), and
    its value equals the float64 pass within :data:`SYNFLOW_FP32_RTOL`."""
    device = x.device
    if synflow_precision() == "auto":
        net.map_tensors(lambda t: t.detach().to(device=device, dtype=torch.float32).abs().requires_grad_(t.dim() > 1))
        if _synflow_pass(net, x, ctxs, torch.float32):
            return
    net.map_tensors(lambda t: t.detach().to(device=device, dtype=torch.float64).abs().requires_grad_(t.dim() > 1))
    _synflow_pass(net, x, ctxs, torch.float64)


def _synflow_fp32_ok(logits: Tensor, grads: list[list[Tensor | None]]) -> bool:
    """Whether a float32 synflow pass can stand for the float64 one: ``logits`` [K, 1, O] and
    every candidate's gradients finite and below :data:`SYNFLOW_FP32_MAX`, and each candidate's
    largest gradient either 0 (no path from the input reaches a weight: exactly 0 in any
    precision) or above :data:`SYNFLOW_FP32_MIN_GRAD` (nothing near float32's underflow).

    ``grads``: per candidate, its gradients (float32, or already widened to float64: the pass
    widens them once for the reduction and checks those). Each tensor's L2 norm in float64 (one
    fused ``ops.saliency`` call per candidate) bounds its largest entry from both sides,
    ``‖g‖₂ / √numel ≤ max|g| ≤ ‖g‖₂``; where those bounds settle both limits (nearly always) no
    maximum is taken, otherwise the exact ``max |g|`` decides. NaN and ±inf make the norm
    non-finite (squares of float32 values cannot overflow float64)."""
    out = float(logits.abs().amax())
    if not (math.isfinite(out) and out < SYNFLOW_FP32_MAX):
        return False
    for gk in grads:
        present = [g.double() for g in gk if g is not None]   # .double() of a float64 tensor is itself
        if not present:
            continue
        norms = ops.saliency(None, present, "grad_norm")[0].tolist()   # ‖g_t‖₂ in float64
        if not all(map(math.isfinite, norms)):   # (Python's max would not propagate a NaN)
            return False
        hi = max(norms)
        if hi == 0.0:
            continue
        lo = max(n / math.sqrt(g.numel()) for n, g in zip(norms, present))
        if hi < SYNFLOW_FP32_MAX and lo > SYNFLOW_FP32_MIN_GRAD:
            continue
        top = float(torch.stack([g.abs().amax() for g in present]).max())   # the bounds left it open
        if not (SYNFLOW_FP32_MIN_GRAD < top < SYNFLOW_FP32_MAX):
            return False
    return True


def _synflow_pass(net, x: Tensor, ctxs: list[PassContext], dtype: torch.dtype = torch.float64) -> bool:
    """The synflow pass of K candidates in ``dtype``: |θ| (already in net), all-ones input, only
    the reduction-block BatchNorms (NB201 quirk); fills each candidate's ``synflow_*`` (float64
    tensors) and returns True, or, in float32, returns False without filling anything when a
    value left the safe range (module constants above)."""
    K = net.K
    ones = torch.ones((1, K * x.shape[1]) + tuple(x.shape[2:]), dtype=dtype, device=x.device)
    logits = net.forward(ones, bn="reduction")
    layers = net.layers()
    if dtype != torch.float64:
        out_max = float(logits.detach().abs().amax())
        if not (math.isfinite(out_max) and out_max < SYNFLOW_FP32_MAX):   # refused before the backward
            for layer in layers:
                layer.act = None
            return False
    weights = [layer.weight for layer in layers]
    grads = torch.autograd.grad(logits.sum(), weights, allow_unused=True)
    per_g = _by_candidate(layers, list(grads), K)
    if dtype != torch.float64:
        # widened once: the check reads the float64 copies the reduction then uses
        per_g = [[None if g is None else g.double() for g in gk] for gk in per_g]
        if not _synflow_fp32_ok(logits.detach(), per_g):
            for layer in layers:
                layer.act = None
            return False
        weights = [w.detach().double() for w in weights]
        logits = logits.detach().double()
    ws, _, owners = _per_candidate(layers, weights, [None] * len(layers))
    per_w: list[list[Tensor]] = [[] for _ in range(K)]
    for w, o in zip(ws, owners):
        per_w[o].append(w)
    for k, (gk, out) in enumerate(zip(per_g, logits.detach().sum(dim=(1, 2)).tolist())):
        ctxs[k].synflow_weights = per_w[k]
        ctxs[k].synflow_grads = gk
        ctxs[k].synflow_output = out
    for layer in layers:
        layer.act = None
    return True
