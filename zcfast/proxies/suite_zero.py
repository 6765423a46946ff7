"""NAS-Bench-Suite-Zero's proxies beyond the paper's six, and ZiCo: each one declaration of the
needs it reads plus a reduction (docs/proxies.md, "NAS-Bench-Suite-Zero proxies", lists every
official quirk and which variant zcfast follows).

Proxies (registered on import, built in):

- ``nwot`` (NASWOT v2): log|det K|, K = Σ over ReLU calls of the Hamming kernel of the ReLU's
  *input* codes (``relu_kernels``), slogdet's log-abs-det on float64 K (singular: −inf, reason).
- ``epe_nas`` / ``epe_nas_naslib``: per-class correlations of the input Jacobian rows
  (``jacobian`` + ``labels``); official: the ≤ 100-class branch always (its script never passes
  the class count); NASLib: the logit width decides the branch (``outputs``).
- ``zen``: Zen-NAS with its own N(0, 1) initialisation and Gaussian inputs (``zen_pass``).
- ``zico``: Σ over layers of log Σ mean|g|/std(g) over the mini-batches (``multi_grads``), on
  :func:`zcfast.ops.moments_update` / :func:`zcfast.ops.zico_reduce`.
- ``l2_norm`` (Σ‖W‖_F, ``weights``), ``params`` (millions, ``parameters``), ``flops`` (MFLOPs per
  sample in NAS-Bench-201's convention, ``flops_counts``).

Needs registered here (module backend; :mod:`zcfast.batched` produces the same products for
NAS-Bench-201 candidates):

- ``labels``: ``ctx.data["labels"]`` = the first batch's targets [N] (no pass).
- ``weights``: ``ctx.data["weights"]`` = ``[(name, W), ...]`` of every counted weight (no pass).
- ``relu_kernels``: ``ctx.data["relu_kernels"]`` = ``[(module name, K_l [N, N] float64), ...]``,
  one per call (in call order) of every module whose type name contains "ReLU" and any of whose
  calls' outputs the output's autograd graph reaches (NASWOT v2's selection: its flag is per
  module), ``K_l = ops.hamming_kernel([input of the call])``.
- ``zen_pass``: ``ctx.data["zen_pass"]`` = ``{"features": (f(z) [N, ...], f(z + γε)),
  "running_vars": [(BatchNorm2d name, running_var [C]), ...]}``.
- ``flops_counts``: ``ctx.data["flops_counts"]`` = ``[(module name, multiply-accumulates), ...]``
  per call of every Conv1d/Conv2d/Linear on one sample (eval mode, no grad); a model calling
  another convolution (Conv3d, ConvTranspose*) makes it undefined (NeedError).
- ``per_sample_grads``: ``ctx.data["per_sample_grads"]`` = one ``[N, *W.shape]`` tensor per
  counted weight, ∂ℓᵢ/∂W from a forward of sample i *alone* (train mode: BatchNorm normalises
  over that one sample, as GradSign's official code); :func:`per_sample_grads_need` builds the
  batched variant (one forward, a backward per sample).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from zcfast import ops
from zcfast.proxies.builtin_needs import call_generator, grad_copy, normal_init_
from zcfast.proxies.engine import _forward, _weights_of
from zcfast.proxies.needs import Need, NeedError, register_need
from zcfast.proxies.registry import PassContext, ProxyResult, register_proxy

__all__ = ["SUITE_ZERO", "ZEN_GAMMA", "ZEN_BN_EPS", "ZEN_BN_MOMENTUM", "EPE_OFFICIAL_CLASSES",
           "zen_init", "per_sample_grads_need", "epe_nas_score", "conv_linear_macs"]

#: NAS-Bench-Suite-Zero's 13 proxies under zcfast's names (NASLib's ``jacov`` is ``jacob_cov``)
SUITE_ZERO: tuple[str, ...] = ("epe_nas", "fisher", "grad_norm", "grasp", "jacob_cov", "l2_norm", "nwot",
                               "plain", "snip", "synflow", "zen", "params", "flops")
#: Zen-NAS's perturbation scale, BatchNorm eps (MasterNet's) and momentum (torch's default)
ZEN_GAMMA = 1e-2
ZEN_BN_EPS = 1e-3
ZEN_BN_MOMENTUM = 0.1
#: the class count the official EPE-NAS search script uses (it never passes its own)
EPE_OFFICIAL_CLASSES = 10


# ------------------------------------------------------------------------------------------
# needs
# ------------------------------------------------------------------------------------------
def _labels(ctx: PassContext) -> None:
    """Class indices [N]: the targets, or the argmax of class-probability targets [N, C] (NASLib)."""
    x, y = ctx.batches[0]
    if y is None:
        raise NeedError("the labels need has no targets: pass targets (class indices [N])")
    if y.dim() == 2 and y.is_floating_point():
        y = torch.argmax(y, dim=1)
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.shape[0] != x.shape[0]:
        raise NeedError(f"the labels need reads class indices [N] (or class probabilities [N, C]); got targets "
                        f"of shape {tuple(y.shape)} and dtype {str(y.dtype).replace('torch.', '')}")
    ctx.data["labels"] = y


def _weights(ctx: PassContext) -> None:
    ctx.data["weights"] = list(zip(ctx.layer_names, ctx.weights))


def _is_relu_typed(module: nn.Module) -> bool:
    """NASWOT's rule: the type name contains "ReLU" (wrappers such as NB201's ReLUConvBN too)."""
    return "ReLU" in type(module).__name__


def _reachable(root: Any) -> set:
    """Every autograd node reachable from ``root`` (a grad_fn) through ``next_functions``."""
    seen: set = set()
    stack = [root]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(nf for nf, _ in fn.next_functions)
    return seen


def _relu_kernels(ctx: PassContext) -> None:
    """NASWOT v2 on a private train-mode copy: one forward with autograd recording (the input and
    every parameter requiring grad, as the official marking pass), each hooked call's Hamming
    kernel computed in its hook; kept are the calls whose output the logits' graph reaches (the
    official marks them with a backward of ``ones``; walking the graph selects the same calls
    without running it). The official flag is per module, so a module called several times
    counts every call once one of them is reached. A wrapper and the ReLU inside it see one
    input tensor: its kernel is computed once and listed for both (the official counts it twice)."""
    net = ctx.fresh_copy()
    x = ctx.batches[0][0]
    if not x.is_floating_point():
        raise NeedError("nwot: the relu_kernels need marks the ReLUs the backward reaches from a floating "
                        f"input; got {str(x.dtype).replace('torch.', '')} inputs")
    mods = [(name, m) for name, m in net.named_modules() if _is_relu_typed(m)]
    if not mods:
        raise NeedError("nwot: the model has no module whose type name contains 'ReLU' (NASWOT codes ReLU inputs)")
    for p in net.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    records: list[tuple[str, int, Any, torch.Tensor]] = []   # (name, module id, output grad_fn, kernel)
    recent: list[tuple[torch.Tensor, int, torch.Tensor]] = []   # (input, its version, kernel): wrappers

    def hook(module: nn.Module, args: tuple, out: object, _n: str = "") -> None:
        a = args[0] if args else None
        if not isinstance(a, torch.Tensor) or a.dim() < 1 or a.shape[0] != x.shape[0]:
            return   # not one row per sample: the official K of another shape fails to add, and is dropped
        kern = next((k for t, v, k in recent if t is a and v == a._version), None)
        if kern is None:
            kern = ops.hamming_kernel([a.detach()])
            recent.append((a, a._version, kern))
            del recent[:-4]
        grad_fn = out.grad_fn if isinstance(out, torch.Tensor) else None
        records.append((_n, id(module), grad_fn, kern))

    handles = [m.register_forward_hook(lambda mod, args, out, _n=name: hook(mod, args, out, _n)) for name, m in mods]
    try:
        xi = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = _forward(net, xi)
        reach = _reachable(out.grad_fn)
        marked = {mid for _, mid, fn, _ in records if fn is not None and fn in reach}   # per module
        ctx.data["relu_kernels"] = [(name, k) for name, mid, _, k in records if mid in marked]
    finally:
        for h in handles:
            h.remove()
        recent.clear()
        records.clear()


def zen_init(model: nn.Module, generator: torch.Generator | None) -> None:
    """Zen-NAS's re-initialisation, in place, in ``model.modules()`` order: BatchNorm running
    statistics reset (mean 0, var 1) and BatchNorm2d eps ``ZEN_BN_EPS`` / momentum
    ``ZEN_BN_MOMENTUM``; Conv2d and Linear weights N(0, 1) from ``generator``, biases 0;
    BatchNorm2d / GroupNorm weights 1, biases 0 (affine-free ones left alone)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.track_running_stats and m.running_var is not None:
                    m.reset_running_stats()
                if isinstance(m, nn.BatchNorm2d):
                    m.eps = ZEN_BN_EPS
                    m.momentum = ZEN_BN_MOMENTUM
    normal_init_(model, generator)


def _zen_pass(ctx: PassContext) -> None:
    """Zen-NAS on a private copy: :func:`zen_init` (draws from a generator seeded with the
    call's seed, then z, then ε, as the official order), two no-grad train-mode forwards of z and
    z + γ·ε [N, ...] (x gives only the shape), the input of the last AdaptiveAvgPool module
    recorded as the pre-pool features; the BatchNorm2d running variances those forwards left."""
    x = ctx.batches[0][0]
    if not x.is_floating_point():
        raise NeedError("zen: its inputs are Gaussian noise of the batch's shape, which a model of "
                        f"{str(x.dtype).replace('torch.', '')} inputs (e.g. token ids) cannot read")
    net = ctx.fresh_copy()
    pools = [m for m in net.modules() if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                                                         nn.AdaptiveAvgPool3d))]
    if not pools:
        raise NeedError("zen: the model has no AdaptiveAvgPool module; Zen-NAS reads the pre-global-pool "
                        "feature map (the input of the last one)")
    gen = call_generator(ctx, x.device)
    zen_init(net, gen)
    z = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    eps = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    feats: list[torch.Tensor] = []
    handle = pools[-1].register_forward_hook(lambda m, args, out: feats.append(args[0].detach()))
    try:
        with torch.no_grad():
            _forward(net, z)
            _forward(net, z + ZEN_GAMMA * eps)
    finally:
        handle.remove()
    if len(feats) != 2:
        raise NeedError(f"zen: the last AdaptiveAvgPool module must run once per forward, ran {len(feats)} "
                        "times in two forwards")
    ctx.data["zen_pass"] = {
        "features": (feats[0], feats[1]),
        "running_vars": [(name, m.running_var.detach().clone()) for name, m in net.named_modules()
                         if isinstance(m, nn.BatchNorm2d) and m.running_var is not None]}


#: the modules NAS-Bench-201's FLOP convention counts (every other convolution makes flops undefined)
_FLOPS_COUNTED: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)


def conv_linear_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> float | None:
    """Multiply-accumulates of one call in NAS-Bench-201's convention (xautodl's counter), or
    ``None`` for a module it does not count. Conv2d: kh·kw·C_in·C_out/groups·H_out·W_out (+
    C_out·H_out·W_out with a bias), per sample in the batch; Conv1d likewise over L_out; Linear:
    in·out per input row (+ out with a bias)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        active = out.shape[0] * out.shape[2] * out.shape[3]
        return (kh * kw * module.in_channels * module.out_channels / module.groups * active
                + (module.out_channels * active if module.bias is not None else 0))
    if isinstance(module, nn.Conv1d):
        (k,) = module.kernel_size
        active = out.shape[0] * out.shape[-1]
        return (k * module.in_channels * module.out_channels / module.groups * active
                + (module.out_channels * active if module.bias is not None else 0))
    if isinstance(module, nn.Linear):
        rows = inp.numel() // module.in_features
        return rows * module.in_features * module.out_features + (rows * module.out_features if module.bias is not None else 0)
    return None


def _flops_counts(ctx: PassContext) -> None:
    """One no-grad eval-mode forward of a private copy on one sample -- ``torch.rand`` of the
    batch's per-sample shape from a generator seeded 0 (xautodl's shape-only input), or the
    first sample itself for integer inputs -- counting every Conv1d/Conv2d/Linear call.

    A call of any other convolution (Conv3d, ConvTranspose*) raises :class:`NeedError`: the
    convention counts none of them, so a total without them would only look like a FLOP count."""
    net = ctx.fresh_copy()
    net.eval()
    x = ctx.batches[0][0]
    if x.is_floating_point():
        gen = torch.Generator(device=x.device).manual_seed(0)
        one = torch.rand((1,) + tuple(x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)
    else:
        one = x[:1].clone()
    counts: list[tuple[str, float]] = []
    outside: list[str] = []

    def hook(m: nn.Module, args: tuple, out: object, _n: str) -> None:
        if not isinstance(m, _FLOPS_COUNTED):
            outside.append(f"{_n} ({type(m).__name__})")
        elif args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            macs = conv_linear_macs(m, args[0], out)
            if macs is not None:
                counts.append((_n, float(macs)))

    handles = [m.register_forward_hook(lambda mod, args, out, _n=name: hook(mod, args, out, _n))
               for name, m in net.named_modules() if isinstance(m, _FLOPS_COUNTED + (nn.modules.conv._ConvNd,))]
    try:
        with torch.no_grad():
            _forward(net, one)
    finally:
        for h in handles:
            h.remove()
    if outside:
        raise NeedError(f"flops: NAS-Bench-201's convention counts Conv1d, Conv2d and Linear only; the model "
                        f"calls {', '.join(outside[:3])}{', ...' if len(outside) > 3 else ''}, which it cannot count")
    ctx.data["flops_counts"] = counts


def per_sample_grads_need(name: str, *, one_per_forward: bool = True, description: str = "") -> Need:
    """A need giving ``ctx.data[name]`` = one ``[N, *W.shape]`` tensor per counted weight: the
    loss gradient of each sample alone (``ctx.loss_fn`` on sample i), on a private train-mode copy.

    ``one_per_forward=True``: sample i runs its own forward ([1, ...] input, so BatchNorm
    normalises over one sample: GradSign's official per-sample loop). ``False``: one forward of
    the batch (BatchNorm over the batch), then one backward per sample of its loss term
    ``loss_fn(logits[i:i+1], y[i:i+1])``. Memory: N times the counted weights (float32).
    """
    def run(ctx: PassContext) -> None:
        net, counted = grad_copy(ctx)
        loss_fn = ctx.loss_fn
        assert loss_fn is not None
        x, y = ctx.batches[0]
        if y is None:
            raise NeedError(f"the {name} need has no targets: pass targets")
        n = x.shape[0]
        per: list[list[torch.Tensor | None]] = []
        logits = None if one_per_forward else _forward(net, x)
        for i in range(n):
            weights = _weights_of(counted)
            out = _forward(net, x[i:i + 1]) if one_per_forward else logits[i:i + 1]
            loss = loss_fn(out, y[i:i + 1])
            if not bool(torch.isfinite(loss.detach())):
                raise NeedError(f"the loss of sample {i} is not finite ({float(loss.detach())})")
            gs = torch.autograd.grad(loss, weights, allow_unused=True, retain_graph=not one_per_forward)
            per.append([g.detach() if g is not None else None for g in gs])
        ws = _weights_of(counted)
        ctx.data[name] = [torch.stack([p[t] if p[t] is not None else torch.zeros_like(ws[t]) for p in per])
                          for t in range(len(counted))]

    return Need(name, run=run, targets=True,
                description=description or f"ctx.data[{name!r}]: [N, *W.shape] per-sample loss gradients")


for _need in (
        Need("labels", run=_labels, targets=True, reads_inputs=False,
             description='ctx.data["labels"]: the targets [N] of the first batch (no pass)'),
        Need("weights", run=_weights, reads_inputs=False,
             description='ctx.data["weights"]: [(name, W)] of every counted weight (no pass)'),
        Need("relu_kernels", run=_relu_kernels, floating_input=True,
             description='ctx.data["relu_kernels"]: [(module, K [N, N] float64)]: the Hamming kernel of the input '
                         'codes of every ReLU-typed module call the output reaches (NWOT)'),
        Need("zen_pass", run=_zen_pass, reads_inputs=False,   # refuses integer inputs itself (its reason)
             description='ctx.data["zen_pass"]: Zen-NAS pre-pool features of z and z + 0.01 eps after its '
                         'N(0, 1) init, and the BatchNorm2d running variances'),
        Need("flops_counts", run=_flops_counts, reads_inputs=False,
             description='ctx.data["flops_counts"]: [(module, MACs)] of every Conv1d/Conv2d/Linear call on one sample'),
        per_sample_grads_need("per_sample_grads", description='ctx.data["per_sample_grads"]: [N, *W.shape] loss '
                              "gradients of each sample in its own forward (BatchNorm over one sample)")):
    register_need(_need, _builtin=True)
del _need


# ------------------------------------------------------------------------------------------
# proxies
# ------------------------------------------------------------------------------------------
@register_proxy("nwot", needs=("relu_kernels",), _builtin=True)
def nwot(ctx: PassContext) -> ProxyResult:
    """log|det K| of K = Σ_calls K_l (NASWOT v2; ``np.linalg.slogdet``'s log-abs-det, sign ignored).

    Singular K: −inf with the reason. ``per_layer``: each module's share of the diagonal
    (D_l, the features it codes), a diagnostic: log det does not split over layers."""
    kernels = ctx.data["relu_kernels"]
    if not kernels:
        return ProxyResult("nwot", float("nan"), None, None,
                           "nwot: the output's graph reaches no ReLU-typed module, so K is empty")
    total = kernels[0][1].clone()
    per: dict[str, float] = {}
    for name, k in kernels[1:]:
        total += k
    for name, k in kernels:
        per[name] = per.get(name, 0.0) + float(k[0, 0])
    _, logabsdet = np.linalg.slogdet(total.cpu().numpy())
    value = float(logabsdet)
    error = None
    if value == -math.inf:
        error = ("nwot: K is singular (log|det K| = -inf): two samples share every ReLU code, "
                 "e.g. duplicated inputs or a network whose ReLU inputs do not depend on the input")
    return ProxyResult("nwot", value, per, None, error)


def epe_nas_score(jacobian: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[float, str | None]:
    """EPE-NAS on J [N, ...] (flattened per sample) and labels [N]: ``(score, reason or None)``.

    Per class c (rows of that label, in order of first appearance): s_c = Σ log(|corrcoef(J_c)| +
    1e-5) (float64, as numpy's corrcoef), divided by the class size when n_classes > 100; a
    one-sample class has corrcoef 1 (s_c = log(1 + 1e-5)) in the first branch and is skipped in
    the second (the official ``len()`` of a 0-d array raises into its ``except: continue``).
    n_classes ≤ 100: Σ_c |s_c|; > 100: Σ_c Σ_c' |s_c − s_c'| / (classes kept).
    """
    jac = jacobian.detach().reshape(jacobian.shape[0], -1).to(torch.float64)
    lab = labels.detach().reshape(-1).tolist()
    order = list(dict.fromkeys(lab))
    index = {c: [i for i, v in enumerate(lab) if v == c] for c in order}
    scores: list[float] = []
    const = []
    for c in order:
        rows = jac[index[c]]
        if rows.shape[0] == 1:
            if n_classes > 100:
                continue
            scores.append(math.log(1.0 + 1e-5))
            continue
        corr = torch.corrcoef(rows)
        if bool(torch.isnan(corr).any()):
            const.append(c)
        s = float(torch.log(corr.abs() + 1e-5).sum())
        scores.append(s / rows.shape[0] if n_classes > 100 else s)
    if n_classes <= 100:
        value = float(sum(abs(s) for s in scores))
    elif not scores:
        return float("nan"), "epe_nas: no class with two or more samples (the > 100-class branch skips them)"
    else:
        value = float(sum(abs(a - b) for a in scores for b in scores) / len(scores))
    if const:
        return float("nan"), (f"epe_nas: the input Jacobian is constant (no variation) for some sample of "
                              f"classes {const[:5]}, so their correlation is undefined")
    return value, None


@register_proxy("epe_nas", needs=("jacobian", "labels"), _builtin=True)
def epe_nas(ctx: PassContext) -> ProxyResult:
    """EPE-NAS, official branch choice: the ≤ 100-class score Σ_c |s_c| whatever the classes
    (its search script never passes the class count, so the default 10 always applies)."""
    assert ctx.jacobian is not None
    value, error = epe_nas_score(ctx.jacobian, ctx.data["labels"], EPE_OFFICIAL_CLASSES)
    return ProxyResult("epe_nas", value, None, None, error)


@register_proxy("epe_nas_naslib", needs=("jacobian", "labels", "outputs"), _builtin=True)
def epe_nas_naslib(ctx: PassContext) -> ProxyResult:
    """EPE-NAS as NASLib calls it: the class count is the logit width, so more than 100 classes
    (ImageNet16-120) takes the pairwise branch."""
    assert ctx.jacobian is not None and ctx.logits is not None
    value, error = epe_nas_score(ctx.jacobian, ctx.data["labels"], int(ctx.logits.shape[-1]))
    return ProxyResult("epe_nas_naslib", value, None, None, error)


@register_proxy("zen", needs=("zen_pass",), _builtin=True)
def zen(ctx: PassContext) -> ProxyResult:
    """log mean_n Σ|f(z) − f(z + γε)| + Σ_BN2d log √mean(running_var) (float32, as the official).

    ``per_layer``: each BatchNorm's log √mean(running_var) term."""
    d = ctx.data["zen_pass"]
    f0, f1 = d["features"]
    nas = torch.mean(torch.sum(torch.abs(f0 - f1), dim=tuple(range(1, f0.dim()))))
    bn = torch.zeros((), dtype=f0.dtype, device=f0.device)
    per: dict[str, float] = {}
    for name, rv in d["running_vars"]:
        term = torch.log(torch.sqrt(torch.mean(rv)))
        per[name] = float(term)
        bn = bn + term
    value = float(torch.log(nas) + bn)
    error = None
    if float(nas) == 0.0:
        error = "zen: the pre-pool features do not change under the 0.01 Gaussian perturbation (log 0)"
    return ProxyResult("zen", value, per, None, error)


@register_proxy("zico", needs=("multi_grads",), _builtin=True)
def zico(ctx: PassContext) -> ProxyResult:
    """Σ over counted weights of log Σ_elements mean|g| / std(g) over the mini-batches (ddof 0).

    Elements with std 0 dropped, layers whose sum is 0 skipped (an unused weight counts as zero
    gradients), as the official code. Where no layer is left (one mini-batch, or gradients that
    never vary) the official code returns 0.0; zcfast gives NaN with that reason instead."""
    per_batch = ctx.data["multi_grads"]
    names = ctx.layer_names
    if not per_batch or not per_batch[0]:
        return ProxyResult("zico", float("nan"), None, None, "zico: no counted weight has a gradient")
    templates = [next((b[t] for b in per_batch if b[t] is not None), None) for t in range(len(per_batch[0]))]
    live = [t for t, g in enumerate(templates) if g is not None]
    state = None
    for b in per_batch:
        grads = [b[t] if b[t] is not None else torch.zeros_like(templates[t]) for t in live]  # type: ignore[arg-type]
        state = ops.moments_update(grads, state)
    sums = ops.zico_reduce(state).tolist() if state is not None and live else []
    per: dict[str, float] = {}
    total = 0.0
    for t, s in zip(live, sums):
        if s != 0:
            term = math.log(s) if s > 0 else float("nan")
            per[names[t] if t < len(names) else f"layer{t}"] = term
            total += term
    if not per:
        return ProxyResult("zico", float("nan"), None, None,
                           f"zico: no layer's gradient varies across the {len(per_batch)} mini-batch(es) (ZiCo needs "
                           "at least 2 batches that give different gradients; the official code returns 0.0 here)")
    return ProxyResult("zico", total, per)


@register_proxy("l2_norm", needs=("weights",), _builtin=True)
def l2_norm(ctx: PassContext) -> ProxyResult:
    """Σ over counted weights of ‖W‖_F (float32 per-layer norms summed in order, as NASLib)."""
    named = ctx.data["weights"]
    if not named:
        return ProxyResult("l2_norm", 0.0, {})
    with torch.no_grad():   # the caller's own tensors in a read-only call: no graph
        norms = torch._foreach_norm([w for _, w in named])
    if len({(n.dtype, n.device) for n in norms}) == 1:   # one conversion of the stacked norms
        values = torch.stack(norms).to(torch.float32).cpu().numpy()
    else:   # per norm: each converted exactly as the stacked form would
        values = torch.stack([n.to(torch.float32).cpu() for n in norms]).numpy()
    total = float(np.cumsum(values, dtype=np.float32)[-1])   # sequential float32 sum, as sum_arr
    return ProxyResult("l2_norm", total, {name: float(v) for (name, _), v in zip(named, values)})


@register_proxy("params", needs=("parameters",), _builtin=True)
def params(ctx: PassContext) -> ProxyResult:
    """Parameters in millions: every parameter tensor once (biases and BatchNorm affine
    included), as NAS-Bench-201 publishes (xautodl's ``count_parameters``) and NASLib reports."""
    named = ctx.data["parameters"]
    counts = [p.numel() for p in named.values()]
    return ProxyResult("params", sum(counts) / 1e6, dict(zip(named, [k / 1e6 for k in counts])))


@register_proxy("flops", needs=("flops_counts",), _builtin=True)
def flops(ctx: PassContext) -> ProxyResult:
    """MFLOPs per sample in NAS-Bench-201's convention: Conv1d/Conv2d/Linear multiply-accumulates
    only, every call counted (:func:`conv_linear_macs`); BatchNorm, activations, pooling and
    additions count 0."""
    per: dict[str, float] = {}
    for name, macs in ctx.data["flops_counts"]:
        per[name] = per.get(name, 0.0) + macs / 1e6
    return ProxyResult("flops", sum(m for _, m in ctx.data["flops_counts"]) / 1e6, per)
