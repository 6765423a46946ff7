"""One-architecture-at-a-time scoring in plain PyTorch: the baseline of bench_throughput.py.

No zcfast kernels and no zcfast engine: the network is ``space.build`` under the
per-architecture seed (design.md §5, so the weights equal score_arch's and score_batch's), and
each proxy is the official definition written with ordinary PyTorch ops, sharing passes the way
a careful hand-written pipeline would:

* one forward/backward of the cross-entropy loss for grad_norm, snip and fisher (forward hooks
  keep each Conv2d/Linear output and its gradient);
* one forward/backward of Σ logits to a copy of the input for jacob_cov (float64 corrcoef,
  ``eigvalsh``);
* one forward/backward for grasp (g, then g_f with create_graph, z = Σ g·g_f, Hg);
* synflow on a float64 copy with |θ|, stem/cell/final BatchNorms replaced by identities
  (the residual blocks keep theirs, the NB201 quirk), input ones [1, C, H, W].
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from zcfast.scoring import build_seeded

GRAD_PROXIES = ("grad_norm", "snip", "fisher")


def _layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _ce_pass(net: nn.Module, x: torch.Tensor, y: torch.Tensor, want: set[str]) -> dict[str, float]:
    layers = _layers(net)
    outs: dict[int, torch.Tensor] = {}

    def keep(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        outs[id(mod)] = out

    hooks = [m.register_forward_hook(keep) for m in layers] if "fisher" in want else []
    net.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    for h in hooks:
        h.remove()
    res: dict[str, float] = {}
    with torch.no_grad():
        if "grad_norm" in want:
            res["grad_norm"] = float(sum(m.weight.grad.norm() for m in layers))
        if "snip" in want:
            res["snip"] = float(sum((m.weight.grad * m.weight).abs().sum() for m in layers))
        if "fisher" in want:
            tot = 0.0
            for m in layers:
                act, g = outs[id(m)], outs[id(m)].grad
                prod = act * g
                per_nk = prod.sum(dim=tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod
                per_c = 0.5 * per_nk.pow(2).mean(0)
                tot += float(per_c.abs().sum()) * m.weight[0].numel()
            res["fisher"] = tot
    net.zero_grad(set_to_none=True)
    return res


def _jacob_cov(net: nn.Module, x: torch.Tensor) -> float:
    xin = x.clone().requires_grad_(True)
    out = net(xin)
    (jac,) = torch.autograd.grad(out, xin, torch.ones_like(out))
    j = jac.reshape(jac.shape[0], -1).double()
    corr = torch.corrcoef(j)
    if not torch.isfinite(corr).all():
        return float("nan")
    v = torch.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-(torch.log(v + k) + 1.0 / (v + k)).sum())


def _grasp(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    ws = [m.weight for m in _layers(net)]
    g = torch.autograd.grad(F.cross_entropy(net(x), y), ws)
    gf = torch.autograd.grad(F.cross_entropy(net(x), y), ws, create_graph=True)
    z = sum((a.detach() * b).sum() for a, b in zip(g, gf))
    hg = torch.autograd.grad(z, ws)
    with torch.no_grad():
        return float(-sum((w * h).sum() for w, h in zip(ws, hg)))


def _synflow(net: nn.Module, x: torch.Tensor) -> float:
    net = copy.deepcopy(net)
    keep = {id(m) for m in net.reduction_batchnorms()} if hasattr(net, "reduction_batchnorms") else set()
    for name, mod in list(net.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, nn.BatchNorm2d) and id(child) not in keep:
                setattr(mod, cname, nn.Identity())
    net = net.double().train()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    ones = torch.ones((1,) + tuple(x.shape[1:]), dtype=torch.float64, device=x.device)
    net(ones).sum().backward()
    with torch.no_grad():
        return float(sum((m.weight * m.weight.grad).abs().sum() for m in _layers(net)))


def plain_score_arch(space: Any, arch: Any, x: torch.Tensor, y: torch.Tensor, proxies: Sequence[str],
                     seed: int = 42, num_classes: int = 10) -> dict[str, float]:
    """Score one architecture with plain PyTorch (see the module docstring).

    Args:
        x [N, 3, H, W] float32, y [N] int64 on the device to use.
    """
    net = build_seeded(space, arch, seed, num_classes).to(x.device).train()
    want = set(proxies)
    res: dict[str, float] = {}
    if want & set(GRAD_PROXIES):
        res.update(_ce_pass(net, x, y, want))
    if "jacob_cov" in want:
        res["jacob_cov"] = _jacob_cov(net, x)
    if "grasp" in want:
        res["grasp"] = _grasp(net, x, y)
    if "synflow" in want:
        res["synflow"] = _synflow(net, x)
    unknown = want - set(res)
    if unknown:
        raise ValueError(f"plain baseline has no proxy {sorted(unknown)}")
    return {p: res[p] for p in proxies}
