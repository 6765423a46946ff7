"""Plug-in needs beyond the paper's (module backend), each registered with :func:`register_need`.

- ``parameters`` (no pass): ``ctx.data["parameters"]`` = ``{qualified name: private copy}`` of
  every parameter of the model (biases and norms included), for weight- or shape-only proxies.
- ``relu_inputs`` / ``relu_outputs``: ``ctx.data[name]`` = ``[(module name, tensor [N, ...]), ...]``,
  one entry per call, of every module whose type name contains ``"ReLU"`` (NWOT records the
  *input*; SWAP the output), from one forward of a private train-mode copy without autograd.
  :func:`activation_need` builds the same for any module rule.
- ``layer_outputs``: the same for the counted layers' outputs (per-layer feature maps).
- ``multi_grads``: ``ctx.data["multi_grads"]`` = one list per mini-batch of ∂L/∂W of every counted
  weight (aligned with ``ctx.layer_names``), each from its own forward + backward of a private
  train-mode copy (ZiCo); given one batch, its two halves (``PassContext.mini_batches(2)``).

Every need stores only detached tensors and its default ``clear`` drops them; hooks are removed
before ``run`` returns, whatever happens.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from zcfast.proxies.engine import _forward, counted_weights, _weight_leaves, _weights_of
from zcfast.proxies.needs import Need, NeedError, register_need
from zcfast.proxies.registry import PassContext

__all__ = ["activation_need", "is_relu"]

#: which tensor of a module's call an activation need records
_WHERE = ("input", "output")


def is_relu(name: str, module: nn.Module) -> bool:
    """NWOT's rule: every module whose type name contains ``"ReLU"`` (ReLU, ReLU6, LeakyReLU...)."""
    return "ReLU" in type(module).__name__


def activation_need(name: str, match: Callable[[str, nn.Module], bool], where: str = "input",
                    description: str = "") -> Need:
    """A need recording ``where`` ("input" or "output") of every call of the modules ``match``
    selects, ``ctx.data[name] = [(module name, tensor [N, ...]), ...]`` in call order, from one
    forward (no autograd) of a private train-mode copy on ``ctx.batches[0]``. Register it with
    :func:`register_need`.

    Raises:
        ValueError: ``where`` not "input" or "output".
    """
    if where not in _WHERE:
        raise ValueError(f"where must be one of {', '.join(_WHERE)}, got {where!r}")

    def run(ctx: PassContext) -> None:
        net = ctx.fresh_copy()
        found: list[tuple[str, torch.Tensor]] = []
        handles = []
        for mname, m in net.named_modules():
            if match(mname, m):
                def hook(module: nn.Module, args: tuple, output: object, _n: str = mname) -> None:
                    t = args[0] if where == "input" else output
                    if isinstance(t, torch.Tensor):
                        found.append((_n, t.detach().clone()))
                handles.append(m.register_forward_hook(hook))
        if not handles:
            raise NeedError(f"the {name} need found no module to record (none matches its rule)")
        try:
            with torch.no_grad():
                _forward(net, ctx.batches[0][0])
        finally:
            for h in handles:
                h.remove()
        ctx.data[name] = found

    return Need(name, run=run, floating_input=False,
                description=description or f"ctx.data[{name!r}]: the {where} of every matching module call")


def _parameters(ctx: PassContext) -> None:
    net = ctx.fresh_copy()
    ctx.data["parameters"] = {n: p.detach() for n, p in net.named_parameters()}


def _multi_grads(ctx: PassContext) -> None:
    net = ctx.fresh_copy()
    counted = counted_weights(net, ctx.layer_types)
    for c in counted:
        for leaf in _weight_leaves(c):
            leaf.requires_grad_(True)
    loss_fn = ctx.loss_fn
    assert loss_fn is not None
    out: list[list[torch.Tensor | None]] = []
    for xb, yb in ctx.mini_batches(2):
        weights = _weights_of(counted)
        loss = loss_fn(_forward(net, xb), yb)
        if not bool(torch.isfinite(loss.detach())):
            raise NeedError(f"the loss of a mini-batch is not finite ({float(loss.detach())})")
        gs = torch.autograd.grad(loss, weights, allow_unused=True)
        out.append([g.detach() if g is not None else None for g in gs])
    ctx.data["multi_grads"] = out


for _need in (
        Need("parameters", run=_parameters, reads_inputs=False,
             description='ctx.data["parameters"]: {name: private copy} of every parameter (no pass)'),
        activation_need("relu_inputs", is_relu, "input",
                        'ctx.data["relu_inputs"]: the input of every call of a module whose type name '
                        'contains "ReLU" (train mode, no autograd)'),
        activation_need("relu_outputs", is_relu, "output",
                        'ctx.data["relu_outputs"]: the output of every such call'),
        Need("multi_grads", run=_multi_grads, targets=True, batches=2,
             description='ctx.data["multi_grads"]: per mini-batch, dL/dW of every counted weight (ZiCo)')):
    register_need(_need, _builtin=True)
del _need


def _layer_outputs(ctx: PassContext) -> None:
    net = ctx.fresh_copy()
    ids = {id(c.module) for c in counted_weights(net, ctx.layer_types)}
    need = activation_need("layer_outputs", lambda n, m: id(m) in ids, "output")
    assert need.run is not None
    # the rule needs this copy's module ids: run it on this copy
    saved = ctx.copier
    ctx.copier = lambda: net
    try:
        need.run(ctx)
    finally:
        ctx.copier = saved


register_need(Need("layer_outputs", run=_layer_outputs, floating_input=False,
                   description='ctx.data["layer_outputs"]: the output of every call of a counted layer'),
              _builtin=True)
