"""Baseline: each proxy computed the way the official implementation does it.

Written from the semantics in shared/docs/reference-semantics.md (not copied): every proxy
runs on its own deep copy of the network in training mode, with its own forward/backward
passes; per-layer arrays of Conv2d/Linear weights are summed layer by layer in the arrays'
dtype (float32, float64 for synflow), as the official ``sum_arr``. Plain PyTorch only (no
zcfast.ops), so it is also an independent check of the engine's values.

    official_scores(net, x, y, proxies=SIX, synflow_keep_bn=None) -> dict[str, float]
"""
from __future__ import annotations

import copy
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
