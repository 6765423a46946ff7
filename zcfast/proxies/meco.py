"""MeCo (HamsterMimi/MeCo@0d830dd2): the minimum eigenvalue of each module's channel
correlation on one sample, summed over modules (docs/proxies.md, section "meco").

Proxies (registered on import, built in):

- ``meco``: Σ over module calls of λmin(corrcoef(F)), F = the call's output for the first
  sample reshaped to channels × positions ``[C, P]`` (NaN/inf entries of the correlation set to
  0, calls whose λmin is NaN/inf dropped).
- ``meco_opt``: the same with 8 channels drawn at random per call (``random.Random(ctx.seed)``,
  the official ``random.sample``), λmin scaled by C / 8.

Needs registered here (module backend only; :mod:`zcfast.batched` does not produce them, so
``score_arch`` on NAS-Bench-201 routes these proxies to the module backend):

- ``meco_features``: ``ctx.data["meco_features"]`` = ``[(module name, F [C, P] float), ...]``,
  one per call (in the order the calls return, as forward hooks fire) of every module, the
  containers and the whole network included, from one no-grad train-mode forward of the
  **first sample alone** ``x[:1]`` on a private copy. A call that returns the tensor the
  previous call returned, unchanged (a container and its last child), lists the *same* F object
  (read-only), which :func:`zcfast.ops.channel_spectra` solves once. :func:`meco_features_need`
  builds the variant on Gaussian input (the packaged measure's ``randn(1, 3, 64, 64)``).

Quirks kept from the official code (each written where it applies below):

- every module is hooked (``named_modules()``, so the root and every container too): a
  ``Sequential``'s output is its last child's output and counts twice, as official;
- ``output[0]`` is the first sample; ``reshape(shape[0], -1)`` makes its first dimension the
  "channels": ``[C, H, W]`` -> ``[C, H·W]``; a 2-D output ``[N, K]`` gives ``[K, 1]`` (one position:
  the correlation is all NaN, set to 0, λmin = 0), so 2-D outputs add exactly 0;
- the network is in train mode (BatchNorm normalises over the one sample's positions).
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import torch
import torch.nn as nn

from zcfast import ops
from zcfast.proxies.engine import _forward
from zcfast.proxies.builtin_needs import call_generator
from zcfast.proxies import reductions
from zcfast.proxies.needs import Need, NeedError, register_need
from zcfast.proxies.registry import PassContext, ProxyResult, register_proxy

__all__ = ["MECO_OPT_CHANNELS", "MECO_PACKAGED_SHAPE", "meco_features_need", "meco_score", "meco_opt_score"]

#: the channels ``meco_opt`` samples per module call (official ``random.sample(range(C), 8)``)
MECO_OPT_CHANNELS = 8
#: the packaged measure's input (``correlation/foresight/pruners/measures/meco.py``): one Gaussian
#: 64×64 image, whatever the batch
MECO_PACKAGED_SHAPE: tuple[int, ...] = (1, 3, 64, 64)


def meco_features_need(name: str, *, gaussian_shape: Sequence[int] | None = None,
                       description: str = "") -> Need:
    """A need giving ``ctx.data[name]`` = ``[(module name, F [C, P]), ...]`` (see the module
    docstring) from one no-grad train-mode forward of a private copy.

    ``gaussian_shape=None``: the input is the first sample of the batch, ``x[:1]`` (the
    official NB201 correlation script: ``--batch_size 1``, one real image). A shape, e.g.
    :data:`MECO_PACKAGED_SHAPE`: the input is ``torch.randn(gaussian_shape)`` drawn from a
    generator seeded with ``ctx.seed`` (the global RNG when it is ``None``), as the packaged
    measure (which draws from the global RNG and ignores the batch); only its first sample is read.

    Calls whose output is not a tensor (a tuple: the official takes its first element, the whole
    batch, and fails on one sample) or is 0-/1-D (the official ``shape[0]`` of a scalar raises)
    are skipped. A model none of whose calls gives a ``[C, P]`` with P > 1 is undefined
    (:class:`NeedError`): MeCo reads feature maps.
    """
    def run(ctx: PassContext) -> None:
        x = ctx.batches[0][0]
        if gaussian_shape is None:
            if x.shape[0] < 1:
                raise NeedError(f"{name}: the batch is empty (MeCo reads its first sample)")
            inp = x[:1]
        else:
            if not x.is_floating_point():
                raise NeedError(f"{name}: the packaged MeCo input is Gaussian noise, which a model of "
                                f"{str(x.dtype).replace('torch.', '')} inputs cannot read")
            gen = call_generator(ctx, x.device)
            inp = torch.randn(tuple(gaussian_shape), generator=gen, device=x.device, dtype=x.dtype)
        net = ctx.fresh_copy()
        net.train()
        feats: list[tuple[str, torch.Tensor]] = []
        # a container returns its last child's very tensor: while that tensor is unchanged (same
        # object, same version counter: no in-place op since) the call shares the child's copy,
        # so channel_spectra solves it once; the call still counts, as official
        last: list = [None, -1, None]   # [output tensor, its _version, the copy made of it]

        def hook(module: nn.Module, args: tuple, out: object, _n: str = "") -> None:
            # copied at once: a later in-place op (ReLU(inplace=True)) must not change it, as
            # the official hook computes its eigenvalue inside the hook
            if not isinstance(out, torch.Tensor) or out.dim() < 2 or not out.is_floating_point():
                return
            if out is last[0] and out._version == last[1]:
                feats.append((_n, last[2]))
                return
            fea = out[0].detach()
            copy = fea.reshape(fea.shape[0], -1).clone()
            last[:] = [out, out._version, copy]
            feats.append((_n, copy))

        handles = [m.register_forward_hook(lambda mod, args, out, _n=n: hook(mod, args, out, _n))
                   for n, m in net.named_modules()]
        try:
            with torch.no_grad():
                _forward(net, inp)
        except ValueError as exc:
            raise NeedError(f"{name}: the forward of one sample failed: {exc}") from exc
        finally:
            for h in handles:
                h.remove()
            last[:] = [None, -1, None]
        if not any(f.shape[1] > 1 for _, f in feats):
            raise NeedError(f"{name}: no module output has channels x positions (every output is [N, K] "
                            "or smaller: one position per channel, so each correlation is undefined, which "
                            "the official sets to 0); MeCo reads feature maps [N, C, H, W] or [N, C, L]")
        ctx.data[name] = feats

    return Need(name, run=run, reads_inputs=gaussian_shape is None,
                description=description or f"ctx.data[{name!r}]: [(module, F [C, P])] per module call, one sample")


register_need(meco_features_need(
    "meco_features", description='ctx.data["meco_features"]: [(module, F [C, P])]: every module call\'s output '
                                 "for the first sample alone (train mode), channels x positions (MeCo)"), _builtin=True)


def _finite_sum(values: list[float]) -> tuple[float, int]:
    """Σ of the finite values and how many were dropped (official: NaN and inf removed)."""
    kept = [v for v in values if math.isfinite(v)]
    return float(sum(kept)), len(values) - len(kept)


def _rank_deficient(f: torch.Tensor) -> bool:
    """Whether ``corrcoef(F)`` of a finite ``F [C, P]`` with no more positions than channels (``P <= C``) is
    singular: its centred rows span at most P − 1 dimensions (the centring removes one), so the
    C×C matrix has rank ≤ P − 1 < C and λmin = 0 exactly (zeroed degenerate rows keep it so). The
    official float32 ``eig`` returns rounding noise around 0 there (~1e-7 per call); a solve in
    float64 returns ~1e-16. A non-finite F (NaN entries set to 0 are no longer a Gram matrix) is
    solved."""
    return f.shape[1] <= f.shape[0] and reductions.all_finite(f)


def _lambda_min(fs: Sequence[torch.Tensor]) -> list[float]:
    """λmin of each ``nan_to_num(corrcoef(F))``: 0 without a solve for ``[C, 1]`` features (the
    all-NaN matrix set to 0, the official value) and for rank-deficient ones
    (:func:`_rank_deficient`: NB201's last stage at 32×32, 64 channels × 64 positions); the rest in
    one :func:`zcfast.ops.channel_spectra` call (float64, symmetric solver: the official general
    ``eig`` on float32 returns the same real spectrum up to rounding)."""
    solve = [i for i, f in enumerate(fs) if f.shape[1] > 1 and not _rank_deficient(f)]
    values = [0.0] * len(fs)
    for i, s in zip(solve, ops.channel_spectra([fs[i] for i in solve], "corr") if solve else []):
        values[i] = float(s[0])
    return values


def meco_score(feats: Sequence[tuple[str, torch.Tensor]]) -> tuple[float, dict[str, float]]:
    """MeCo on ``[(name, F [C, P])]``: ``(Σ λmin, per module Σ of its calls' λmin)``.

    λmin of the C×C ``corrcoef`` with NaN/inf set to 0 (:func:`_lambda_min`). ``[C, 1]``
    features add 0 (the official value) and are left out of ``per``, as before."""
    live = [(n, f) for n, f in feats if f.shape[1] > 1]
    values = _lambda_min([f for _, f in live])
    per: dict[str, float] = {}
    for (n, _), v in zip(live, values):
        if math.isfinite(v):
            per[n] = per.get(n, 0.0) + v
    total, _ = _finite_sum(values)
    return total, per


def meco_opt_score(feats: Sequence[tuple[str, torch.Tensor]], rng: random.Random,
                   channels: int = MECO_OPT_CHANNELS) -> tuple[float, dict[str, float], list[str]]:
    """meco_opt on ``[(name, F [C, P])]``: per call ``channels`` rows drawn by
    ``rng.sample(range(C), channels)`` (one draw per call in order, ``[K, 1]`` outputs included so
    the stream matches the official), λmin of their correlation × C / channels.

    Returns ``(Σ, per module, names of calls with C < channels)``; those calls are skipped
    without a draw (the official ``random.sample`` raises ValueError there)."""
    picked: list[tuple[str, torch.Tensor, int]] = []
    short: list[str] = []
    for n, f in feats:
        c = f.shape[0]
        if c < channels:
            short.append(n)
            continue
        idx = rng.sample(range(c), channels)
        if f.shape[1] > 1:
            picked.append((n, f[idx], c))
    values = [v * c / channels for (_, _, c), v in zip(picked, _lambda_min([f for _, f, _ in picked]))]
    per: dict[str, float] = {}
    for (n, _, _), v in zip(picked, values):
        if math.isfinite(v):
            per[n] = per.get(n, 0.0) + v
    total, _ = _finite_sum(values)
    return total, per, short


@register_proxy("meco", needs=("meco_features",), _builtin=True)
def meco(ctx: PassContext) -> ProxyResult:
    """Σ over module calls of λmin(corrcoef(F)) on the first sample (official ``meco``).

    ``per_layer``: each module's Σ over its calls (containers and the root included)."""
    value, per = meco_score(ctx.data["meco_features"])
    return ProxyResult("meco", value, per)


@register_proxy("meco_opt", needs=("meco_features",), _builtin=True)
def meco_opt(ctx: PassContext) -> ProxyResult:
    """Σ over module calls of λmin of 8 random channels' correlation × C / 8 (official ``meco_opt``).

    The channels are drawn by ``random.Random(ctx.seed).sample`` (official: the unseeded global
    ``random``); ``seed=None`` uses the global ``random`` module, as the official. A call with
    fewer than 8 channels makes the value NaN with the reason (the official raises there)."""
    rng = random.Random(int(ctx.seed)) if ctx.seed is not None else random._inst  # type: ignore[attr-defined]
    value, per, short = meco_opt_score(ctx.data["meco_features"], rng)
    if short:
        return ProxyResult("meco_opt", float("nan"), None, None,
                           f"meco_opt: module output(s) with fewer than {MECO_OPT_CHANNELS} channels cannot give "
                           f"{MECO_OPT_CHANNELS} sampled channels: {', '.join(repr(s) for s in short[:3])}"
                           f"{', ...' if len(short) > 3 else ''} (the official random.sample raises there)")
    return ProxyResult("meco_opt", value, per)
