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
- ``gaussian_pass``: a pass with its own initialisation and input (Zen-NAS style):
  ``ctx.data["gaussian_pass"]`` = ``{"model", "input", "logits", "outputs"}`` from one no-grad
  train-mode forward of a private copy re-initialised by :func:`gaussian_init` on an N(0, 1)
  input of the batch's shape; ``model`` is that copy *after* the forward (BatchNorm running
  statistics updated, as a proxy reading running variances needs). :func:`gaussian_need`
  builds variants (another init, recorded modules).

Every need stores only detached tensors and its default ``clear`` drops them; hooks are removed
before ``run`` returns, whatever happens.

Speed helper for needs that run many passes on a private copy: :func:`box_avg_pools_`
gives every stride-1 "same" ``nn.AvgPool2d`` of that copy (NAS-Bench-201's ``avg_pool_3x3``) a
forward and backward written as k² shifted adds, bit for bit the values of PyTorch's CPU kernels
(same summation order, same divisions) at ~1/8 of their CPU time, and usable under
``torch.func`` transforms and batched gradients.
"""
from __future__ import annotations

from typing import Callable

import os
import types

import torch
import torch.nn as nn

from zcfast import ops
from zcfast.proxies.engine import _forward, counted_weights, _weight_leaves, _weights_of
from zcfast.proxies.needs import Need, NeedError, register_need
from zcfast.proxies.registry import PassContext

__all__ = ["CHANNELS_LAST_ATTR", "activation_need", "box_avg_pools_", "channels_last_", "gaussian_init", "gaussian_need", "grad_copy", "is_relu"]

#: which tensor of a module's call an activation need records
_WHERE = ("input", "output")


def is_relu(name: str, module: nn.Module) -> bool:
    """NWOT's rule: every module whose type name contains ``"ReLU"`` (ReLU, ReLU6, LeakyReLU...)."""
    return "ReLU" in type(module).__name__


def _recording_forward(net: nn.Module, x: torch.Tensor,
                       match: Callable[[str, nn.Module], bool] | None, where: str
                       ) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """One no-grad forward of ``net`` on ``x`` [N, ...] recording ``where`` ("input" or "output")
    of every call of the modules ``match`` selects (``None``: none), as
    ``[(module name, detached copy [N, ...]), ...]`` in call order; every hook is removed after."""
    found: list[tuple[str, torch.Tensor]] = []
    handles = []
    if match is not None:
        for mname, m in net.named_modules():
            if match(mname, m):
                def hook(module: nn.Module, args: tuple, output: object, _n: str = mname) -> None:
                    t = args[0] if where == "input" else output
                    if isinstance(t, torch.Tensor):
                        found.append((_n, t.detach().clone()))
                handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = _forward(net, x)
    finally:
        for h in handles:
            h.remove()
    return out, found


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
        if not any(match(mname, m) for mname, m in net.named_modules()):
            raise NeedError(f"the {name} need found no module to record (none matches its rule)")
        _, ctx.data[name] = _recording_forward(net, ctx.batches[0][0], match, where)

    return Need(name, run=run, floating_input=False,
                description=description or f"ctx.data[{name!r}]: the {where} of every matching module call")


def _parameters(ctx: PassContext) -> None:
    # private clones of the caller's parameters (writing them cannot reach the caller), without
    # copying the module tree (a fresh_copy is ~10x the cost for a count or a norm)
    source = ctx._source
    if source is None:
        raise NeedError("the parameters need has no model behind this context")
    if ctx._options.get("read_only"):  # built-in readers only (engine._READ_ONLY_NEEDS): aliases
        # named_parameters' names and order (each tensor once) from the engine's module walk;
        # params reads numel only
        ctx.data["parameters"] = dict(ctx._options["parameters"])
        return
    ctx.data["parameters"] = {n: p.detach().clone() for n, p in source.named_parameters()}


def _pair(v: object) -> tuple[int, int] | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(e, int) for e in v):
        return int(v[0]), int(v[1])
    return None


def _box_pool_forward(self: nn.AvgPool2d, x: torch.Tensor) -> torch.Tensor:
    if x.device.type != "cpu" or not x.is_floating_point() or x.dim() not in (3, 4):
        return nn.AvgPool2d.forward(self, x)
    kh, kw = _pair(self.kernel_size)   # type: ignore[misc]
    return ops.avg_pool_same(x, kh, kw, bool(self.count_include_pad))


def box_avg_pools_(net: nn.Module) -> int:
    """In place on a private copy: every ``nn.AvgPool2d`` (the exact type) of ``net`` with an odd
    kernel, stride 1, padding kernel//2 and no ``divisor_override`` computes its CPU forward and
    backward with :func:`zcfast.ops.avg_pool_same` (the same values as PyTorch's kernels, about 8x faster on
    NCHW float32, and batched-gradient friendly); other devices and inputs take the module's own
    forward. Module names, hooks and parameters are kept. Returns how many modules it changed."""
    n = 0
    for m in net.modules():
        if type(m) is not nn.AvgPool2d or m.divisor_override is not None:
            continue
        k, st, pad = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size), _pair(m.padding)
        if k is None or st != (1, 1) or pad != (k[0] // 2, k[1] // 2) or k[0] % 2 == 0 or k[1] % 2 == 0:
            continue
        m.forward = types.MethodType(_box_pool_forward, m)   # type: ignore[method-assign]
        n += 1
    return n


#: the attribute by which a model says its forward runs unchanged on channels_last tensors (no
#: ``.view`` of a 4-D feature map, no layout-dependent op): ``NB201Network`` sets it
CHANNELS_LAST_ATTR = "zcfast_channels_last"


def _cl_batch_norm_forward(self: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """nn.BatchNorm2d.forward with batch statistics from :func:`zcfast.ops.batch_norm_train_cl`
    (float64 statistics; PyTorch's channels_last CPU kernel's are ~100x less accurate) for a
    channels_last CPU float32/float64 input; the running statistics updated as PyTorch does
    (momentum, or the cumulative average when it is None; the unbiased variance). Anything else
    (eval with running statistics, other layouts, one value per channel) takes the module's own
    forward."""
    batch_stats = self.training or (self.running_mean is None and self.running_var is None)
    if not (batch_stats and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last) and x.shape[0] * x.shape[2] * x.shape[3] > 1
            and x.shape[1] == self.num_features):
        return nn.BatchNorm2d.forward(self, x)
    y, mean, var = ops.batch_norm_train_cl(x, self.weight, self.bias, self.eps)
    if self.training and self.track_running_stats and self.running_mean is not None:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            n = x.numel() // x.shape[1]
            self.running_mean.mul_(1 - f).add_(mean.to(self.running_mean.dtype), alpha=f)
            self.running_var.mul_(1 - f).add_((var * (n / (n - 1))).to(self.running_var.dtype), alpha=f)
    return y


def channels_last_(net: nn.Module) -> torch.memory_format:
    """In place on a private CPU copy whose model declares ``zcfast_channels_last = True``
    (:data:`CHANNELS_LAST_ATTR`): its 4-D parameters and buffers become channels_last, and every
    ``nn.BatchNorm2d`` (the exact type) takes :func:`_cl_batch_norm_forward`, so that a pass on a
    channels_last input runs PyTorch's channels_last (oneDNN) convolutions without reorders and
    float64-statistics BatchNorms (TE-NAS's NTK: one forward and a backward per sample, ~10%
    faster on NAS-Bench-201 at batch 32, bench/RESULTS.md), its value as close to float64 as the
    NCHW pass's (tests/test_ops_batch_norm_cl.py; deep weight gradients can move more:
    docs/proxies.md, "Channels-last private copies"). Returns the memory format the caller should give its input:
    ``torch.channels_last``, or ``torch.contiguous_format`` (nothing changed) for a model that does
    not declare it, one with a parameter off the CPU, or with ``ZCFAST_CHANNELS_LAST=0`` in the
    environment (the NCHW passes, e.g. to compare both).

    Raises:
        ValueError: ``ZCFAST_CHANNELS_LAST`` is set to anything but ``0`` or ``1``.
    """
    env = os.environ.get("ZCFAST_CHANNELS_LAST", "1")
    if env not in ("0", "1"):
        raise ValueError(f"ZCFAST_CHANNELS_LAST must be '0' or '1', got {env!r}")
    if env == "0" or getattr(net, CHANNELS_LAST_ATTR, False) is not True:
        return torch.contiguous_format
    if any(p.device.type != "cpu" for p in net.parameters()):
        return torch.contiguous_format
    net.to(memory_format=torch.channels_last)
    for m in net.modules():
        if type(m) is nn.BatchNorm2d:
            m.forward = types.MethodType(_cl_batch_norm_forward, m)   # type: ignore[method-assign]
    return torch.channels_last


def grad_copy(ctx: PassContext) -> tuple[nn.Module, list]:
    """A private train-mode copy whose counted weights (``ctx.layer_types``) require grad, and
    those weights (``Counted``, aligned with ``ctx.layer_names``): the start of every need that
    takes loss gradients on its own passes."""
    net = ctx.fresh_copy()
    counted = counted_weights(net, ctx.layer_types)
    for c in counted:
        for leaf in _weight_leaves(c):
            leaf.requires_grad_(True)
    return net, counted


def _multi_grads(ctx: PassContext) -> None:
    net, counted = grad_copy(ctx)
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


def call_generator(ctx: PassContext, device: torch.device) -> torch.Generator | None:
    """The call's own generator on ``device``, seeded with ``ctx.seed`` (a need drawing from it
    gets the same numbers whatever else the call ran first), or ``None`` (the global RNG) when
    the call has no seed."""
    if ctx.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(int(ctx.seed))


def normal_init_(model: nn.Module, generator: torch.Generator | None, *,
                 weights: tuple[type, ...] = (nn.Conv2d, nn.Linear),
                 norms: tuple[type, ...] = (nn.BatchNorm2d, nn.GroupNorm)) -> None:
    """The N(0, 1) re-initialisation of Zen-NAS and SWAP, in place, in ``model.modules()``
    order: every ``weights``-typed module's weight N(0, 1) from ``generator`` and its bias 0;
    every ``norms``-typed module with an affine weight: weight 1, bias 0 (affine-free ones left
    alone)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, weights):
                m.weight.normal_(0.0, 1.0, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, norms) and m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()


def gaussian_init(model: nn.Module) -> None:
    """Zen-NAS's initialisation, in place, from the global RNG: every Conv*/Linear weight
    N(0, 1) and bias 0; every BatchNorm/GroupNorm/LayerNorm weight 1 and bias 0."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                m.weight.normal_(0.0, 1.0)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.fill_(1.0)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()


def gaussian_need(name: str, init: Callable[[nn.Module], None] = gaussian_init,
                  match: Callable[[str, nn.Module], bool] | None = None, where: str = "output",
                  description: str = "") -> Need:
    """A need running its own pass: a private copy re-initialised by ``init(copy)`` (global RNG,
    seeded by the call's ``seed``), one no-grad train-mode forward of an N(0, 1) input of the
    batch's shape, recording ``where`` of every module ``match`` selects. ``ctx.data[name]`` =
    ``{"model": copy after the forward, "input": [N, ...], "logits": output, "outputs":
    [(module name, tensor)]}``.

    Raises:
        ValueError: ``where`` not "input" or "output".
    """
    if where not in _WHERE:
        raise ValueError(f"where must be one of {', '.join(_WHERE)}, got {where!r}")

    def run(ctx: PassContext) -> None:
        net = ctx.fresh_copy()
        init(net)
        x0 = ctx.batches[0][0]
        xg = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device)
        out, found = _recording_forward(net, xg, match, where)
        ctx.data[name] = {"model": net, "input": xg, "logits": out.detach(), "outputs": found}

    return Need(name, run=run, floating_input=True, reads_inputs=False,
                description=description or f"ctx.data[{name!r}]: its own init + Gaussian-input pass")


register_need(gaussian_need("gaussian_pass", description='ctx.data["gaussian_pass"]: a private copy with '
                            "Zen-NAS's N(0, 1) initialisation after one train-mode forward of an N(0, 1) "
                            "input (model, input, logits)"), _builtin=True)
