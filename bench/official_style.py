"""Baseline: each proxy computed the way the official implementation does it.

Written from the semantics in shared/docs/reference-semantics.md (not copied): every proxy
runs on its own deep copy of the network in training mode, with its own forward/backward
passes; per-layer arrays of Conv2d/Linear weights are summed layer by layer in the arrays'
dtype (float32, float64 for synflow), as the official ``sum_arr``. Plain PyTorch only (no
zcfast.ops), so it is also an independent check of the engine's values.

    official_scores(net, x, y, proxies=SIX, synflow_keep_bn=None) -> dict[str, float]

NAS-Bench-Suite-Zero's other proxies (issue #12) follow at the end: official_nwot, official_epe_nas,
official_zen, official_zico, official_l2_norm, official_params, official_flops, official_plain
(each ``(net, x, y, **options) -> float``) and official_modern_scores.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Collection, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SIX = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow")


def _layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _sum_arr(arrs: Sequence[torch.Tensor]) -> float:
    total = 0.0
    for a in arrs:
        total = total + torch.sum(a)  # tensor arithmetic in the array dtype, as the official code
    return float(total.detach()) if isinstance(total, torch.Tensor) else float(total)


def _copy(net: nn.Module) -> nn.Module:
    c = copy.deepcopy(net)
    c.train()
    c.zero_grad()
    for p in c.parameters():
        p.requires_grad_(True)
    return c


def grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net = _copy(net)
    F.cross_entropy(net(x), y).backward()
    return _sum_arr([l.weight.grad.norm() if l.weight.grad is not None else torch.zeros(())
                     for l in _layers(net)])


def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """|∂L/∂mask| with an all-ones mask multiplied into each weight (forward replaced)."""
    net = _copy(net)
    masks = {}
    for l in _layers(net):
        l.weight.requires_grad_(False)
        masks[l] = torch.ones_like(l.weight, requires_grad=True)

    def conv_fwd(self: nn.Conv2d, inp: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(inp, self.weight * masks[self], self.bias)

    def lin_fwd(self: nn.Linear, inp: torch.Tensor) -> torch.Tensor:
        return F.linear(inp, self.weight * masks[self], self.bias)

    for l in masks:
        l.forward = (conv_fwd if isinstance(l, nn.Conv2d) else lin_fwd).__get__(l)
    F.cross_entropy(net(x), y).backward()
    return _sum_arr([masks[l].grad.abs() if masks[l].grad is not None else torch.zeros(())
                     for l in masks])


def grasp(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net = _copy(net)
    weights = [l.weight for l in _layers(net)]
    # pass 1: g without graph
    g = torch.autograd.grad(F.cross_entropy(net(x), y), weights, allow_unused=True)
    # pass 2: g_f with graph, z = Σ g·g_f, backward gives H·g
    g_f = torch.autograd.grad(F.cross_entropy(net(x), y), weights, create_graph=True, allow_unused=True)
    z = 0
    for a, b in zip(g, g_f):
        if a is not None and b is not None:
            z = z + (a.detach() * b).sum()
    z.backward()
    return _sum_arr([-w.detach() * w.grad if w.grad is not None else torch.zeros(()) for w in weights])


def fisher(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Identity after each conv/linear output, backward hook: 0.5·mean_n(Σ_sp act·grad)²."""
    net = _copy(net)
    layers = _layers(net)
    acts: dict[nn.Module, torch.Tensor] = {}
    fish: dict[nn.Module, torch.Tensor] = {}

    def fwd_hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.view_as(out)  # the "dummy" identity: a new node whose gradient we catch
        acts[m] = out

        def grad_hook(grad: torch.Tensor) -> None:
            act = acts[m].detach()
            g_nk = (act * grad).sum(dim=tuple(range(2, act.dim()))) if act.dim() > 2 else act * grad
            d = 0.5 * g_nk.pow(2).mean(0)
            fish[m] = fish[m] + d if m in fish else d
        out.register_hook(grad_hook)
        return out

    hs = [l.register_forward_hook(fwd_hook) for l in layers]
    F.cross_entropy(net(x), y).backward()
    for h in hs:
        h.remove()
    arrs = []
    for l in layers:
        ch = fish[l].abs() if l in fish else torch.zeros(l.weight.shape[0])
        # broadcast each channel's value to every weight of that output channel
        arrs.append(ch.reshape((-1,) + (1,) * (l.weight.dim() - 1)).expand_as(l.weight))
    return _sum_arr(arrs)


def jacob_cov(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net = _copy(net)
    xi = x.detach().clone().requires_grad_(True)
    out = net(xi)
    out.backward(torch.ones_like(out))
    j = xi.grad.detach().reshape(x.shape[0], -1).cpu().numpy()
    try:
        corrs = np.corrcoef(j)
        v, _ = np.linalg.eig(corrs)
        k = 1e-5
        return float(np.real(-np.sum(np.log(v + k) + 1.0 / (v + k))))
    except Exception:  # the official code turns any failure into NaN
        return float("nan")


def synflow(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
            keep_bn: Callable[[str, nn.Module], bool] | Collection[str] | None = None) -> float:
    net = copy.deepcopy(net)
    names = set(keep_bn) if keep_bn is not None and not callable(keep_bn) else None
    for name, m in list(net.named_modules()):
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            kept = (keep_bn(name, m) if callable(keep_bn) else (names is not None and name in names))
            if not kept:
                parent, _, attr = name.rpartition(".")
                setattr(net.get_submodule(parent) if parent else net, attr, nn.Identity())
    net = net.double()
    with torch.no_grad():
        for _, t in net.state_dict().items():
            if t.is_floating_point():
                t.abs_()
    net.train()
    net.zero_grad()
    for p in net.parameters():
        p.requires_grad_(True)
    ones = torch.ones((1,) + tuple(x.shape[1:]), dtype=torch.float64, device=x.device)
    torch.sum(net(ones)).backward()
    return _sum_arr([(l.weight * l.weight.grad).abs() if l.weight.grad is not None
                     else torch.zeros((), dtype=torch.float64) for l in _layers(net)])


FUNCS = {"grad_norm": grad_norm, "snip": snip, "grasp": grasp, "fisher": fisher,
         "jacob_cov": jacob_cov, "synflow": synflow}


def official_scores(net: nn.Module, x: torch.Tensor, y: torch.Tensor, proxies: Sequence[str] = SIX,
                    synflow_keep_bn: Callable[[str, nn.Module], bool] | Collection[str] | None = None
                    ) -> dict[str, float]:
    """Each proxy on its own copy with its own passes (official style)."""
    out = {}
    for p in proxies:
        if p == "synflow":
            out[p] = synflow(net, x, y, synflow_keep_bn)
        else:
            out[p] = FUNCS[p](net, x, y)
    return out


# ============================================================================================
# NAS-Bench-Suite-Zero's proxies beyond the paper's six (issue #12): official semantics.
#
# Each ``official_<name>(net, x, y, **options) -> float`` works on its own deep copy of ``net``
# with its own passes, as NASLib's predictor does (one measure, one copy), written from the
# official code's behaviour (not copied). Sources, read at these commits:
#   BayesWatch/nas-without-training@b3a82a66 (score_networks.py, scores.py)      -> nwot
#   automl/NASLib@0b51bc18 (naslib/predictors/utils/pruners/measures/*.py,
#       predictors/zerocost.py, pruners/predictive.py)          -> nwot/epe_nas variants, l2_norm, plain
#   VascoLopes/EPE-NAS@22bd3410 (search.py)                                      -> epe_nas
#   idstcv/ZenNAS@d1d617e0 (ZeroShotProxy/compute_zen_score.py, Masternet.py,
#       evolution_search.py)                                                     -> zen
#   SLDGroup/ZiCo@b0fec659 (ZeroShotProxy/compute_zico.py)                       -> zico
#   D-X-Y/AutoDL-Projects@f46486e (xautodl/utils/flop_benchmark.py)              -> flops, params
# The caller's model, its RNG state and its hooks are never touched (random draws use a local
# torch.Generator). docs/proxies.md, "NAS-Bench-Suite-Zero proxies: official semantics", lists
# every quirk and which variant zcfast follows.
# ============================================================================================

#: NASLib's 13 measures under zcfast's names (NASLib's ``jacov`` is zcfast's ``jacob_cov``).
SUITE_ZERO = ("epe_nas", "fisher", "grad_norm", "grasp", "jacob_cov", "l2_norm", "nwot", "plain",
              "snip", "synflow", "zen", "params", "flops")
NWOT_RELUS = ("official", "naslib")
EPE_VARIANTS = ("official", "naslib")


def _choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]


def _first_tensor(out: object) -> torch.Tensor:
    """A model's output as one tensor: the tensor itself, or the first element of a tuple/list
    (xautodl's NB201 network returns ``(logits, features)`` in the NASWOT repository)."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"net must return a tensor (or a tuple whose first item is one), got {type(out).__name__}")
    return out


def _relu_typed(m: nn.Module) -> bool:
    """NASWOT's selection rule: the module's *type name* contains "ReLU" (so a wrapper class such
    as NB201's ``ReLUConvBN`` counts too, with its input, besides the nn.ReLU inside it)."""
    return "ReLU" in str(type(m))


def nwot_kernel(net: nn.Module, x: torch.Tensor, relus: str = "official") -> np.ndarray:
    """NASWOT's Hamming kernel K (float64 [N, N]) on a private train-mode copy of ``net``.

    For every hooked module call with input a (flattened per sample to [N, D]), c = (a > 0):
    K += c·cᵀ + (1−c)·(1−c)ᵀ, i.e. K[i, j] = number of positions where samples i and j have the
    same sign pattern, summed over the hooked calls. Each layer's product is a float32 GEMM as the
    official code (exact while D < 2**24; float64 above), added into a float64 K as numpy does.

    relus:
        ``"official"`` (NASWOT v2): modules whose type name contains "ReLU" (wrappers included)
        that the backward of a first forward (x requiring grad, ``out.backward(ones)``) reaches;
        K is accumulated in a second forward of the same batch. A module called several times
        (a shared ReLU) counts all its calls if any call was reached (the flag is per module).
        ``"naslib"``: one forward, every module whose type name contains "ReLU" except the search
        space's own classes (NASLib excludes types containing "naslib"; here classes defined in
        ``zcfast`` or ``naslib``), so NB201's ``ReLUConvBN`` wrappers do not count twice.
    """
    relus = _choice("relus", relus, NWOT_RELUS)
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be a batched tensor [N, ...], got {getattr(x, 'shape', type(x).__name__)}")
    net = _copy(net)
    n = x.shape[0]
    K = np.zeros((n, n), dtype=np.float64)
    visited: set[int] = set()
    counting = [False]

    def forward_hook(m: nn.Module, inp: tuple, out: object) -> None:
        if not counting[0]:
            if isinstance(out, torch.Tensor) and out.requires_grad:
                out.register_hook(lambda g, key=id(m): visited.add(key))  # noqa: B023 (key bound)
            return
        if relus == "official" and id(m) not in visited:
            return
        a = inp[0].reshape(n, -1)
        c = (a > 0).to(torch.float32 if a.shape[1] < 2 ** 24 else torch.float64)
        k = c @ c.t() + (1.0 - c) @ (1.0 - c).t()
        K[...] += k.detach().cpu().double().numpy()

    if relus == "official":
        mods = [m for m in net.modules() if _relu_typed(m)]
    else:
        mods = [m for m in net.modules() if _relu_typed(m)
                and type(m).__module__.split(".")[0] not in ("zcfast", "naslib")]
    handles = [m.register_forward_hook(forward_hook) for m in mods]
    try:
        if relus == "official":
            xi = x.detach().clone().requires_grad_(True)
            out = _first_tensor(net(xi))
            out.backward(torch.ones_like(out))
        counting[0] = True
        net(x.detach().clone())
    finally:
        for h in handles:
            h.remove()
    return K


def official_nwot(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                  relus: str = "official") -> float:
    """NASWOT (v2): log|det K| of :func:`nwot_kernel` (``np.linalg.slogdet``'s log-abs-det; the
    sign is ignored). x: [N, ...] (official batch 128, NAS-Bench-Suite-Zero 32); y unused.

    Quirks kept: train mode (BatchNorm on batch statistics); the ReLU's *input* is coded (so an
    in-place ReLU gives the same code); a singular K gives −inf (NASLib's predictor maps ±inf/NaN
    to −1e8). Deviation: the official hook ``view``s the input and silently drops a layer whose
    input is not contiguous (its ``except: pass``); this reference ``reshape``s instead.
    Follows BayesWatch/nas-without-training@b3a82a66 (``relus="official"``) or
    automl/NASLib@0b51bc18 measures/nwot.py (``relus="naslib"``).
    """
    _, logabsdet = np.linalg.slogdet(nwot_kernel(net, x, relus))
    return float(logabsdet)


def epe_class_scores(jac: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    """EPE-NAS's per-class terms: {label: s_c} in order of first appearance (classes whose term
    raised are left out, as the official ``try/except: continue``).

    jac: [N, D] Jacobian rows; labels: [N]. s_c = Σ log(|corrcoef(J_c)| + 1e-5) over the class's
    rows, divided by the class size ``len(corrs)`` when n_classes > 100. A class with one sample
    has a 0-d corrcoef (1.0): s_c = log(1 + 1e-5) in the ≤ 100 branch; in the > 100 branch
    ``len()`` of it raises, so the class is skipped. A constant row makes corrcoef NaN (kept).
    """
    per_class: dict = {}
    for i, label in enumerate(labels):
        key = label.item() if hasattr(label, "item") else label
        per_class[key] = jac[i] if key not in per_class else np.vstack((per_class[key], jac[i]))
    out: dict = {}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for c, rows in per_class.items():
            try:
                corrs = np.array(np.corrcoef(rows))
                s = np.sum(np.log(np.abs(corrs) + 1e-5))
                if n_classes > 100:
                    s = s / len(corrs)
            except Exception:  # the official "defensive programming"
                continue
            out[c] = s
    return out


def official_epe_nas(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, variant: str = "official",
                     n_classes: int | None = None) -> float:
    """EPE-NAS: per-class correlation of the input Jacobians J = ∂(Σ logits)/∂x.

    x: [N, ...] (official batch 256), y: [N] class labels (NASLib: a 2-D y is argmax-ed).
    A model returning a tuple is read by its first element (the official script unpacked
    xautodl's ``(features, logits)`` and took the logits: pass a model that returns logits).
    Train mode, ``out.backward(ones)``, J flattened to [N, D] (float32), then
    :func:`epe_class_scores`. Score: n_classes ≤ 100: Σ_c |s_c|; > 100: Σ_c Σ_c' |s_c − s_c'|
    divided by the number of classes kept.
    variant ``"official"`` (VascoLopes/EPE-NAS@22bd3410 search.py): the search script never
    passes the class count, so n_classes = 10 and the ≤ 100 branch always runs; with no class
    kept in the > 100 branch it divides by zero (NaN). ``"naslib"`` (automl/NASLib@0b51bc18
    measures/epe_nas.py): n_classes = the logit width, so ImageNet16-120 (120) takes the > 100
    branch; no class kept gives 0. ``n_classes`` overrides the variant's count.
    """
    variant = _choice("variant", variant, EPE_VARIANTS)
    if y.dim() == 2:
        y = torch.argmax(y, dim=1)
    net = _copy(net)
    xi = x.detach().clone().requires_grad_(True)
    out = _first_tensor(net(xi))
    out.backward(torch.ones_like(out))
    jac = xi.grad.detach().reshape(x.shape[0], -1).cpu().numpy()
    if n_classes is None:
        n_classes = 10 if variant == "official" else int(out.shape[-1])
    scores = epe_class_scores(jac, y.detach().cpu().numpy(), n_classes)
    if n_classes <= 100:
        return float(sum(np.abs(s) for s in scores.values()))
    total = 0.0
    for a in scores.values():
        for b in scores.values():
            total += np.abs(a - b)
    if not scores:
        return float("nan") if variant == "official" else 0.0
    return float(total / len(scores))


def _zen_feature_module(net: nn.Module, feature_module: str | None) -> nn.Module:
    if feature_module is not None:
        names = dict(net.named_modules())
        if feature_module not in names:
            raise ValueError(f"feature_module must name a submodule of net, got {feature_module!r}")
        return names[feature_module]
    pools = [m for m in net.modules() if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                                                         nn.AdaptiveAvgPool3d))]
    if not pools:
        raise ValueError("feature_module must name the module whose input is the pre-pool feature map: "
                         "net has no AdaptiveAvgPool module")
    return pools[-1]


def official_zen(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, gamma: float = 1e-2,
                 seed: int = 0, bn_eps: float = 1e-3, bn_momentum: float = 0.1,
                 feature_module: str | None = None) -> float:
    """Zen-NAS score (idstcv/ZenNAS@d1d617e0 compute_zen_score.py, repeat=1 as evolution_search.py).

    On a private copy, in train mode: BatchNorm running statistics reset (a fresh network's:
    mean 0, var 1), eps = ``bn_eps`` (1e-3, MasterNet's), momentum = ``bn_momentum`` (0.1, the
    default); Conv2d and Linear weights re-drawn N(0, 1) with zero biases; BatchNorm2d/GroupNorm
    weight 1, bias 0 (affine-free ones skipped, as NASLib's port). Then, under no_grad, Gaussian
    inputs z, ε ~ N(0, 1) of x's shape (x gives only the shape; y unused), f = the pre-global-pool
    features (the *input* of ``feature_module``, default the last AdaptiveAvgPool module, as
    NASLib's ``forward_before_global_avg_pool`` hooks NB201's pool; ZenNAS's ``forward_pre_GAP``
    is the last block's output, the same tensor):
        score = log mean_n Σ_{c,h,w} |f(z) − f(z + γ·ε)|_n  +  Σ_{BatchNorm2d} log √mean(running_var)
    The running variances are the ones the two train-mode forwards left (momentum 0.1 from 1:
    0.81 + 0.09·var(z) + 0.1·var(z+γε), torch's unbiased batch variance), not the batch variance;
    BatchNorms without running statistics are skipped. Random draws (weights in module order,
    then z, then ε) come from ``torch.Generator().manual_seed(seed)``. ZenNAS also turns residual
    links off in its search space; a given nn.Module is scored as it is.
    """
    if not isinstance(gamma, (int, float)) or not gamma > 0:
        raise ValueError(f"gamma must be a positive float, got {gamma!r}")
    net = copy.deepcopy(net)
    net.train()
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.track_running_stats:
                    m.reset_running_stats()
                if isinstance(m, nn.BatchNorm2d):
                    m.eps = bn_eps
                    m.momentum = bn_momentum
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, generator=gen)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        z = torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float32)
        eps = torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float32)
        feats: list[torch.Tensor] = []
        target = _zen_feature_module(net, feature_module)
        h = target.register_forward_hook(lambda m, inp, out: feats.append(inp[0]))
        try:
            net(z)
            net(z + gamma * eps)
        finally:
            h.remove()
        if len(feats) != 2:
            raise ValueError(f"feature_module must be called once per forward, got {len(feats)} calls in two forwards")
        f0, f1 = feats
        nas = torch.mean(torch.sum(torch.abs(f0 - f1), dim=tuple(range(1, f0.dim()))))
        bn = 0.0
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d) and m.running_var is not None:
                bn += torch.log(torch.sqrt(torch.mean(m.running_var)))
        return float(torch.log(nas) + bn)


def zico_batches(x: torch.Tensor, y: torch.Tensor, n_batches: int = 2,
                 batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The mini-batches ZiCo uses: ``batches`` when given, else (x, y) split into ``n_batches``
    parts of N // n_batches or N // n_batches + 1 samples (``torch.tensor_split``; two halves by
    default)."""
    if batches is not None:
        out = list(batches)
        if len(out) < 1:
            raise ValueError("batches must hold at least one (inputs, targets) pair, got none")
        return out
    if not isinstance(n_batches, int) or n_batches < 1 or n_batches > x.shape[0]:
        raise ValueError(f"n_batches must be an int in 1..{x.shape[0]} (the batch size), got {n_batches!r}")
    return list(zip(torch.tensor_split(x, n_batches), torch.tensor_split(y, n_batches)))


def official_zico(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, n_batches: int = 2,
                  batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> float:
    """ZiCo (SLDGroup/ZiCo@b0fec659 ZeroShotProxy/compute_zico.py).

    Train mode, cross-entropy, one forward+backward per mini-batch (:func:`zico_batches`: the
    given ``batches``, else x [N, ...], y [N] split in ``n_batches``). Per Conv2d/Linear module
    (``named_modules`` order, a shared module once) its weight gradients G [B, P] (float32 numpy,
    as the official copies them): per weight mean|g| / std(g) (ddof 0) over the B batches,
    weights with std 0 dropped; the layer's term is log of the sum, a layer whose sum is 0 (all
    dropped, e.g. B = 1) is skipped; score = Σ over layers (0.0 when no layer counts, as the
    official). A module without a gradient (unused) counts as zero gradients (the official would
    fail on ``None.data``). With B = 2: mean|g|/std = (|g₁|+|g₂|)/|g₁−g₂|.
    """
    parts = zico_batches(x, y, n_batches, batches)
    net = _copy(net)
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    grads: dict[str, list[np.ndarray]] = {name: [] for name, _ in layers}
    for xb, yb in parts:
        net.zero_grad()
        F.cross_entropy(_first_tensor(net(xb)), yb).backward()
        for name, m in layers:
            g = m.weight.grad
            grads[name].append(np.zeros(m.weight.numel(), dtype=np.float32) if g is None
                               else g.detach().cpu().reshape(-1).numpy().copy())
    total = 0.0
    for name, _ in layers:
        arr = np.array(grads[name])
        std = np.std(arr, axis=0)
        keep = np.nonzero(std)[0]
        mean_abs = np.mean(np.abs(arr), axis=0)
        s = np.sum(mean_abs[keep] / std[keep])
        if s != 0:
            total += float(np.log(s))
    return total


def official_l2_norm(net: nn.Module, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> float:
    """Σ over Conv2d/Linear of ‖W‖_F (automl/NASLib@0b51bc18 measures/l2_norm.py; no pass, no
    copy needed, summed as a float32 tensor like NASLib's ``sum_arr``). x, y unused."""
    with torch.no_grad():
        return _sum_arr([l.weight.norm() for l in _layers(net)])


def official_params(net: nn.Module, x: torch.Tensor | None = None, y: torch.Tensor | None = None, *,
                    millions: bool = False) -> float:
    """Number of parameters: every ``net.parameters()`` tensor (shared ones once; BatchNorm
    affine and biases included), as xautodl's ``count_parameters`` that NAS-Bench-201 publishes
    (D-X-Y/AutoDL-Projects@f46486e). ``millions=True`` divides by 1e6, the unit NB201 and
    NASLib report (NASLib counts through tensorwatch). x, y unused."""
    n = float(sum(int(np.prod(p.size())) for p in net.parameters()))
    return n / 1e6 if millions else n


def official_flops(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                   millions: bool = False) -> float:
    """FLOPs per sample in NAS-Bench-201's convention (xautodl ``get_model_infos``,
    D-X-Y/AutoDL-Projects@f46486e xautodl/utils/flop_benchmark.py).

    A private copy in eval mode runs one no_grad forward of ``torch.rand(1, *x.shape[1:])``
    (a local generator; x gives only the shape). Counted, per call of each module (so a shared
    module counts every use), as multiply-accumulates:
      Conv2d: kh·kw·C_in·C_out/groups · H_out·W_out (+ C_out·H_out·W_out with a bias);
      Conv1d: k·C_in·C_out/groups · L_out (+ C_out·L_out with a bias);
      Linear: in·out per input row (+ out with a bias).
    Nothing else: BatchNorm, activations, additions and pooling count 0 (xautodl hooks pools but
    leaves them out of the sum); Conv3d and transposed convolutions are not counted. xautodl
    asserts a 2-D Linear input; here a Linear counts once per row of its flattened input.
    Divided by the batch (1). ``millions=True`` gives MFLOPs, NB201's published unit.
    """
    net = copy.deepcopy(net)
    net.eval()
    total = [0.0]

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            per = kh * kw * m.in_channels * m.out_channels / m.groups
            active = out.shape[0] * out.shape[2] * out.shape[3]
            total[0] += per * active + (m.out_channels * active if m.bias is not None else 0)
        elif isinstance(m, nn.Conv1d):
            (k,) = m.kernel_size
            per = k * m.in_channels * m.out_channels / m.groups
            active = out.shape[0] * out.shape[-1]
            total[0] += per * active + (m.out_channels * active if m.bias is not None else 0)
        elif isinstance(m, nn.Linear):
            rows = inp[0].numel() // m.in_features
            total[0] += rows * m.in_features * m.out_features + (rows * m.out_features if m.bias is not None else 0)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))]
    gen = torch.Generator(device=x.device).manual_seed(0)
    try:
        with torch.no_grad():
            net(torch.rand((1,) + tuple(x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype))
    finally:
        for h in handles:
            h.remove()
    return total[0] / 1e6 if millions else total[0]


def official_plain(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Σ over Conv2d/Linear of Σ θ·∂L/∂θ (weights only; cross-entropy; train mode; one
    forward+backward; automl/NASLib@0b51bc18 measures/plain.py with split_data=1)."""
    net = _copy(net)
    F.cross_entropy(net(x), y).backward()
    return _sum_arr([l.weight.grad * l.weight if l.weight.grad is not None else torch.zeros_like(l.weight)
                     for l in _layers(net)])


MODERN_FUNCS: dict[str, Callable[..., float]] = {
    "nwot": official_nwot, "epe_nas": official_epe_nas, "zen": official_zen, "zico": official_zico,
    "l2_norm": official_l2_norm, "params": official_params, "flops": official_flops, "plain": official_plain,
}


def official_modern_scores(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           proxies: Sequence[str] = SUITE_ZERO,
                           batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None, *,
                           synflow_keep_bn: Collection[str] | Callable[[str, nn.Module], bool] | None = None,
                           zen_seed: int = 0, millions: bool = False) -> dict[str, float]:
    """Each proxy (any of the six or of :data:`MODERN_FUNCS`) on its own copy with its own
    passes, in sequence, with default options (the benchmark's baseline). ``batches`` goes to
    zico only; the others use (x, y). ``synflow_keep_bn`` goes to synflow (NB201's official rule:
    ``zcfast.scoring.synflow_bn_rule``), ``zen_seed`` to zen's generator (zcfast seeds it with
    the call's seed: ``score_arch``'s ``seed``), ``millions`` to params and flops (zcfast's
    units: M parameters, MFLOPs); the defaults keep the plain-call values."""
    unknown = [p for p in proxies if p not in FUNCS and p not in MODERN_FUNCS]
    if unknown:
        raise ValueError(f"proxies must be among {', '.join(sorted({*FUNCS, *MODERN_FUNCS}))}, got {unknown[0]!r}")
    out: dict[str, float] = {}
    for p in proxies:
        if p == "zico":
            out[p] = official_zico(net, x, y, batches=batches)
        elif p == "zen":
            out[p] = official_zen(net, x, y, seed=zen_seed)
        elif p in ("params", "flops"):
            out[p] = MODERN_FUNCS[p](net, x, y, millions=millions)
        elif p in MODERN_FUNCS:
            out[p] = MODERN_FUNCS[p](net, x, y)
        elif p == "synflow":
            out[p] = synflow(net, x, y, synflow_keep_bn)
        else:
            out[p] = FUNCS[p](net, x, y)
    return out


# ------------------------------------------------------------------------------------------
# MeCo and SWAP (issue #13), as their official code computes them (plain PyTorch, float32)
# ------------------------------------------------------------------------------------------
def meco_official(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, opt: bool = False,
                  seed: int | None = 0) -> float:
    """MeCo as HamsterMimi/MeCo@0d830dd2 ``correlation/NAS_Bench_201.py``'s get_score: a deep
    copy in train mode, a forward hook on every module of ``named_modules()`` (the root and the
    containers too), a forward of ``x[:1]`` (the script's batch of one); per call ``out[0]``
    reshaped to [C, -1], ``torch.corrcoef`` with NaN/inf set to 0, the minimum real part of
    ``torch.linalg.eig``; ``opt``: ``random.sample(range(C), 8)`` rows (a ``random.Random(seed)``
    instead of the unseeded global ``random``) and × C / 8; NaN and inf dropped, summed."""
    import random as _random
    import warnings as _warnings

    net = _copy(net)
    rng = _random.Random(seed)
    results: list[torch.Tensor] = []

    def hook(module: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        fea = out[0].clone().detach()
        n = fea.shape[0]
        fea = fea.reshape(n, -1)
        if opt:
            fea = fea[rng.sample(range(n), 8), :]
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")   # cov() of a single position: NaN, set to 0 below
            corr = torch.corrcoef(fea)
        corr[torch.isnan(corr)] = 0
        corr[torch.isinf(corr)] = 0
        value = torch.min(torch.real(torch.linalg.eig(corr)[0]))
        results.append(value * n / 8 if opt else value)

    handles = [m.register_forward_hook(hook) for _, m in net.named_modules()]
    try:
        with torch.no_grad():
            net(x[:1])
    finally:
        for h in handles:
            h.remove()
    res = torch.tensor([float(r) for r in results])
    res = res[torch.isfinite(res)]
    return float(torch.sum(res))


def swap_official(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, repeats: int = 32,
                  seed: int = 0, mu: float | None = None, sigma: float | None = None) -> float:
    """SWAP as pym1024/SWAP@f6049f7c (``correlation.py`` + ``src/metrics/swap.py``): a deep copy
    in train mode; ``torch.manual_seed(seed)`` (the global RNG, restored afterwards: the official
    never seeds it); per repeat its ``network_weight_gaussian_init`` (Conv2d/Linear N(0, 1), zero
    biases; BatchNorm2d/GroupNorm weight 1, bias 0; affine-free norms skipped where the official
    raises), a no-grad forward with hooks on ``nn.ReLU`` keeping outputs whose input is 4-D,
    ``torch.unique(sign(acts).T, dim=0)``'s row count; the mean over repeats, × exp(−(P − μ)²/σ)
    (P = parameters in thousands) when ``mu`` and ``sigma`` are given."""
    net = _copy(net)
    feats: list[torch.Tensor] = []

    def hook(module: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if isinstance(inp, tuple) and len(inp[0].size()) == 4:
            feats.append(out.detach())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    scores: list[int] = []
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(repeats):
                with torch.no_grad():
                    for m in net.modules():
                        if isinstance(m, (nn.Conv2d, nn.Linear)):
                            nn.init.normal_(m.weight)
                            if m.bias is not None:
                                nn.init.zeros_(m.bias)
                        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                            nn.init.ones_(m.weight)
                            nn.init.zeros_(m.bias)
                    feats.clear()
                    net(x)
                    if not feats:
                        raise ValueError("swap_official: no nn.ReLU was called on a 4-D input")
                    acts = torch.sign(torch.cat([f.view(x.size(0), -1) for f in feats], 1))
                    scores.append(torch.unique(acts.T, dim=0).size(0))
    finally:
        for h in handles:
            h.remove()
    value = float(np.mean(scores))
    if mu is not None and sigma is not None:
        p = float(np.sum([np.prod(v.size()) for n, v in net.named_parameters() if "auxiliary" not in n])) / 1e3
        value *= float(np.exp(-((p - mu) ** 2) / sigma))
    return value


# ---- GradSign and TE-NAS's two measures (issue #13; helper H2) ----------------------------
def official_gradsign(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """GradSign's ``get_grad_conflict`` (cmu-catalyst/GradSign@26412be8): a copy in train mode;
    per sample ``zero_grad``, a forward of ``x[[i]]`` alone (BatchNorm over one image), a
    backward of its cross-entropy, the Conv2d/Linear ``weight.grad`` (zeros when None) into one
    numpy vector; ``np.nansum(|Σ_i np.sign(g_i)|)`` in float32."""
    net = _copy(net)
    layers = _layers(net)
    rows = []
    for i in range(x.shape[0]):
        net.zero_grad()
        F.cross_entropy(net(x[[i]]), y[[i]]).backward()
        rows.append(np.concatenate([(l.weight.grad if l.weight.grad is not None else torch.zeros_like(l.weight))
                                    .detach().cpu().numpy().reshape(-1) for l in layers]))
    return float(np.nansum(np.abs(np.sign(np.stack(rows)).sum(axis=0))))


def official_ntk_cond(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """TE-NAS's ``get_ntk_n`` (VITA-Group/TENAS@9df78ffd, ``train_mode=True``, one batch): one
    forward, per sample ``logit[i:i+1].backward(ones, retain_graph=True)``, the grads of every
    parameter with "weight" in its name (None skipped) concatenated; NTK = G Gᵀ (einsum),
    ascending symmetric eigenvalues in float32, ``nan_to_num(λ[-1] / λ[0], nan=1e5)``."""
    net = _copy(net)
    out = net(x.clone())
    logit = out[1] if isinstance(out, tuple) else out   # 201 networks: (features, logits)
    grads = []
    for i in range(len(x)):
        logit[i:i + 1].backward(torch.ones_like(logit[i:i + 1]), retain_graph=True)
        grads.append(torch.cat([w.grad.view(-1).detach() for name, w in net.named_parameters()
                                if "weight" in name and w.grad is not None], -1))
        net.zero_grad()
    g = torch.stack(grads, 0)
    eig = torch.linalg.eigvalsh(torch.einsum("nc,mc->nm", g, g))
    return float(np.nan_to_num((eig[-1] / eig[0]).item(), copy=True, nan=100000.0))


def official_linear_regions(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                            seed: int | None = 0) -> float:
    """TE-NAS's ``Linear_Region_Collector`` as the per-architecture port runs it: N(0, 1) inputs of
    x's shape (x gives only the shape; drawn from a generator seeded ``seed``, zcfast's rule for
    the call's seed; ``None``: the global RNG), a no-grad train-mode forward, the outputs of every
    ``nn.ReLU`` call on a 4-D input concatenated per sample, ``sign``, then ``calc_LR``:
    Σ_i 1 / #{j: pattern j = pattern i} from A(1 − A)ᵀ + its transpose (half precision on CUDA
    as the official, float32 on CPU)."""
    gen = torch.Generator(device=x.device).manual_seed(seed) if seed is not None else None
    z = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    net = copy.deepcopy(net)
    net.train()
    feats: list[torch.Tensor] = []

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if isinstance(inp, tuple) and len(inp[0].size()) == 4:
            feats.append(out.detach())

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(z)
    finally:
        for h in hs:
            h.remove()
    if not feats:
        raise ValueError("no nn.ReLU was called on a 4-D input (the official collector has nothing to count)")
    a = torch.sign(torch.cat([f.reshape(len(z), -1) for f in feats], 1))
    a = a.half() if a.is_cuda else a.float()
    res = a @ (1 - a).T
    res = res + res.T
    res = (1 - torch.sign(res)).sum(1)
    return float((1.0 / res.float()).sum())


MODERN_FUNCS.update({"gradsign": official_gradsign, "ntk_cond": official_ntk_cond,
                     "linear_regions": official_linear_regions})
