"""The shared-pass engine behind :func:`zcfast.score`.

Passes (each run only when a requested proxy needs its products):

1. **Main pass** on one private deep copy of the model in training mode (BatchNorm on batch
   statistics, as the paper): one forward of the batch, then
   a. one backward of the loss to the counted weights -- and, for fisher, to every counted
      layer's output (recorded by forward hooks): grad_norm, snip, plain, fisher, grasp's g;
      with ``create_graph`` when grasp is asked for;
   b. one backward of Σ logits to the inputs only (jacob_cov), from the same forward;
   c. one backward of z = Σ g·g_f (g detached) to the counted weights: grasp's H·g. The
      official code computes g in a separate no-graph pass; on the same batch and weights it
      equals g_f, so that pass is dropped (equality is tested).
2. **Synflow pass** on a second private copy: BatchNorms removed (except those the
   ``synflow_keep_bn`` rule keeps), every floating parameter and buffer replaced by its
   absolute value, float64, input ones[1, C, H, W]; one forward + backward of R = Σ output.

All per-layer sums go through :mod:`zcfast.ops` (see :mod:`zcfast.proxies.reductions`). The
caller's model and tensors are never modified; every hook is removed before returning and
every graph is freed, so memory stays flat over thousands of calls.
"""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
from typing import Callable, Collection, Iterator, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from zcfast.proxies.registry import PassContext, ProxyResult, ProxySpec, resolve

DEFAULT_PROXIES: tuple[str, ...] = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow")
PAPER_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)

#: which BatchNorms synflow keeps: module names, a (qualified name, module) -> bool rule, or None
KeepBN = Union[Callable[[str, nn.Module], bool], Collection[str], None]


# ------------------------------------------------------------------------------------------
# checks
# ------------------------------------------------------------------------------------------
def _check_layer_types(layer_types: Sequence[type[nn.Module]]) -> tuple[type[nn.Module], ...]:
    types = tuple(layer_types)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise ValueError(f"layer_types must be a non-empty tuple of nn.Module classes, got {layer_types!r}")
    return types


def _counted_layers(model: nn.Module, layer_types: Sequence[type[nn.Module]]
                    ) -> list[tuple[str, nn.Module]]:
    types = _check_layer_types(layer_types)
    layers = []
    for name, m in model.named_modules():
        if isinstance(m, types):
            w = getattr(m, "weight", None)
            if isinstance(w, nn.Parameter) and not isinstance(w, nn.parameter.UninitializedParameter):
                layers.append((name, m))
    if not layers:
        raise ValueError(
            f"the model has no weight layers of types {[t.__name__ for t in types]} "
            "(zero-cost proxies are sums over those layers' weights; pass layer_types=...)")
    return layers


def _check_inputs(inputs: torch.Tensor, targets: torch.Tensor | None, need_targets: bool,
                  check_values: bool = True) -> None:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise ValueError(f"inputs must be a floating-point tensor, got dtype {inputs.dtype}")
    if inputs.dim() < 2 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must be a batch [N, ...] with N >= 1, got shape {tuple(inputs.shape)}")
    if check_values and not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or inf")
    if need_targets:
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
        if targets.shape[0] != inputs.shape[0]:
            raise ValueError(f"targets has {targets.shape[0]} rows but inputs has {inputs.shape[0]}")


def _check_targets_for_logits(targets: torch.Tensor, logits: torch.Tensor,
                              loss_fn: Callable) -> None:
    if loss_fn is not F.cross_entropy:
        return
    if targets.is_floating_point():
        if targets.shape != logits.shape:
            raise ValueError(f"floating targets (class probabilities) must have the logits' shape "
                             f"{tuple(logits.shape)}, got {tuple(targets.shape)}")
        return
    check_class_targets(targets, logits.shape[1])


def check_class_targets(targets: torch.Tensor, num_classes: int) -> None:
    """Class-index targets must be 1-D [N] with values in [0, num_classes)."""
    if targets.dim() != 1:
        raise ValueError(f"class-index targets must be 1-D [N], got shape {tuple(targets.shape)}")
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"targets out of range: values span [{lo}, {hi}] but the model has {num_classes} classes")


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
class _GradCatcher:
    """Tensor hook storing the gradient of one recorded layer output into ``grads[slot]``.

    It must not reference the output tensor itself: the tensor owns its hooks (through its
    autograd node), and a tensor → hook → tensor cycle passes through C++ objects that
    Python's garbage collector cannot see, so it would never be freed.
    """

    __slots__ = ("grads", "slot", "active")

    def __init__(self, grads: list, slot: int) -> None:
        self.grads = grads
        self.slot = slot
        self.active = True

    def __call__(self, grad: torch.Tensor) -> None:
        if self.active:
            self.grads[self.slot] = grad.detach()


class _OutputRecorder:
    """Forward hook recording each call's output of one layer and catching its gradient.

    Appends ``(layer index, output)`` to ``outputs`` and a ``None`` slot to ``grads`` that a
    tensor hook fills during the loss backward. A tensor hook registered before a later
    in-place change of the output (e.g. ``ReLU(inplace=True)``) still receives the gradient
    with respect to the value before the change, as the official identity-module hook does.
    """

    __slots__ = ("outputs", "grads", "catchers", "index")

    def __init__(self, outputs: list, grads: list, catchers: list, index: int) -> None:
        self.outputs = outputs
        self.grads = grads
        self.catchers = catchers
        self.index = index

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if isinstance(output, torch.Tensor) and output.requires_grad:
            catcher = _GradCatcher(self.grads, len(self.grads))
            self.grads.append(None)
            self.outputs.append((self.index, output))
            self.catchers.append(catcher)
            output.register_hook(catcher)


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run with the CPU generator (and, for a CUDA model, that device's generator) seeded with
    ``seed``, restoring the caller's RNG states afterwards. Only the generators that are
    restored are seeded (``torch.manual_seed`` would also reseed every other GPU and, before
    CUDA is initialised, queue the call with a formatted stack trace: ~0.6 ms a call)."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _model_device(layers: list[tuple[str, nn.Module]]) -> torch.device:
    return layers[0][1].weight.device


def _forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        y = net(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"the model's forward failed on inputs of shape {tuple(x.shape)}: {exc}") from exc
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"the model must return a logits tensor [N, C], got {type(y).__name__}")
    return y


def _keep_bn_rule(keep: KeepBN
                  ) -> Callable[[str, nn.Module], bool]:
    if keep is None:
        return lambda name, module: False
    if callable(keep):
        return keep
    names = set(keep)
    return lambda name, module: name in names


_COPY_HOOKS = ("__deepcopy__", "__copy__", "__reduce_ex__", "__reduce__", "__getstate__", "__setstate__")


def _fast_clonable(model: nn.Module) -> bool:
    """True when a structural clone is as good as ``copy.deepcopy`` for this model: no module
    customises copying/pickling and no plain attribute holds tensors in a list or tuple."""
    for m in model.modules():
        if _class_kind(type(m)) == _NOT_CLONABLE or _holds_tensor_list(m.__dict__):
            return False
    return True


def _holds_tensor_list(attrs: dict) -> bool:
    """Whether a module ``__dict__`` keeps tensors in a plain list/tuple (a clone would share them)."""
    for v in attrs.values():
        if (type(v) is list or type(v) is tuple) and any(isinstance(e, torch.Tensor) for e in v):
            return True
    return False


def clone_module(model: nn.Module, tensor_fn: Callable[[torch.Tensor, bool], torch.Tensor]) -> nn.Module:
    """A private copy of ``model`` whose parameters and buffers are ``tensor_fn(t, is_param)``.

    Module objects, their submodule/parameter/buffer dicts and hook dicts are new; parameters
    shared between modules stay shared. Models whose modules customise copying (or keep
    tensors in plain list attributes, e.g. RNNs' flat weights) are deep-copied first. Much
    cheaper than ``copy.deepcopy`` on cell-based networks with hundreds of modules.
    """
    if not _fast_clonable(model):
        model = copy.deepcopy(model)
    memo: dict[int, object] = {}

    def tensor(t: torch.Tensor | None, is_param: bool) -> torch.Tensor | None:
        if t is None:
            return None
        if id(t) not in memo:
            memo[id(t)] = tensor_fn(t, is_param)
        return memo[id(t)]  # type: ignore[return-value]

    def rec(m: nn.Module) -> nn.Module:
        if id(m) in memo:
            return memo[id(m)]  # type: ignore[return-value]
        new = m.__class__.__new__(m.__class__)
        d = new.__dict__
        for k, v in m.__dict__.items():  # hook dicts etc.: new containers, same entries
            d[k] = v.copy() if isinstance(v, (dict, set)) else v
        memo[id(m)] = new
        d["_parameters"] = {k: tensor(v, True) for k, v in m._parameters.items()}
        d["_buffers"] = {k: tensor(v, False) for k, v in m._buffers.items()}
        d["_modules"] = {k: (rec(c) if c is not None else None) for k, c in m._modules.items()}
        return new

    try:
        return rec(model)
    finally:
        memo.clear()  # rec's closure refers to itself: free the memo now, not at the next gc
        del rec


def _main_copy(t: torch.Tensor, is_param: bool) -> torch.Tensor:
    # weights are only read by the main pass: share storage; buffers (BN running stats) change
    return nn.Parameter(t.detach(), requires_grad=False) if is_param else t.detach().clone()


def _synflow_copy(t: torch.Tensor, is_param: bool) -> torch.Tensor:
    # official: every state-dict tensor replaced by its absolute value, network in float64
    if t.is_floating_point():
        v = t.detach().to(torch.float64).abs()
        if v.data_ptr() == t.data_ptr():
            v = v.clone()
    else:
        v = t.detach().clone()
    return nn.Parameter(v, requires_grad=False) if is_param else v


def remove_batchnorms(net: nn.Module, keep: KeepBN = None
                      ) -> list[str]:
    """Replace (in place) every BatchNorm of ``net`` not kept by ``keep`` with ``nn.Identity``.

    ``keep`` is ``None`` (remove all), a collection of module names to keep, or a callable
    ``(qualified_name, module) -> bool``. Returns the names of the removed modules.
    Only BatchNorm *modules* are seen; ``F.batch_norm`` calls inside a forward are not.
    """
    rule = _keep_bn_rule(keep)
    removed = []
    for name, m in list(net.named_modules()):
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not rule(name, m):
            parent_name, _, attr = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, attr, nn.Identity())
            removed.append(name)
    return removed


# ------------------------------------------------------------------------------------------
# passes
# ------------------------------------------------------------------------------------------
def _prepare_copy(net: nn.Module, layer_types: Sequence[type[nn.Module]]
                  ) -> tuple[list[tuple[str, nn.Module]], list[torch.Tensor]]:
    """Put a private copy in training mode with only its counted weights requiring grad.

    Returns the counted ``(name, module)`` layers and their weights, in the same order.
    """
    net.train()
    layers = _counted_layers(net, layer_types)
    for p in net.parameters():
        p.requires_grad_(False)
    weights = [m.weight for _, m in layers]
    for w in weights:
        w.requires_grad_(True)
    return layers, weights


def _main_pass(net: nn.Module, x: torch.Tensor, targets: torch.Tensor | None, loss_fn: Callable,
               layer_types: Sequence[type[nn.Module]], needs: set[str], ctx: PassContext) -> None:
    """Run pass 1 on ``net`` (a private copy, modified freely) and fill ``ctx``."""
    layers, weights = _prepare_copy(net, layer_types)
    want_fisher = "fisher" in needs
    want_hg = "hessian_grad" in needs
    want_jac = "jacobian" in needs
    want_loss = want_fisher or want_hg or "grads" in needs or "outputs" in needs

    outputs: list[tuple[int, torch.Tensor]] = []
    out_grads: list[torch.Tensor | None] = []
    catchers: list[_GradCatcher] = []
    handles = []
    if want_fisher:
        for i, (_, m) in enumerate(layers):
            handles.append(m.register_forward_hook(_OutputRecorder(outputs, out_grads, catchers, i)))
    xin = x.detach().clone().requires_grad_(True) if want_jac else x.detach()
    try:
        y = _forward(net, xin)
    finally:
        for h in handles:
            h.remove()
    if y.dim() != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"the model must return logits [N, C] with N = {x.shape[0]}, got shape {tuple(y.shape)}")

    ctx.layer_names = [n for n, _ in layers]
    ctx.weights = [w.detach() for w in weights]
    g_w: list[torch.Tensor | None] = []
    if want_loss:
        assert targets is not None
        _check_targets_for_logits(targets, y, loss_fn)
        loss = loss_fn(y, targets)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        loss = loss.reshape(())
        if "outputs" in needs:
            ctx.logits = y.detach()
            ctx.loss = loss.detach()
        if loss.requires_grad:
            g_w = list(torch.autograd.grad(loss, weights, retain_graph=want_jac or want_hg,
                                           create_graph=want_hg, allow_unused=True))
        else:  # the loss does not depend on any counted weight
            g_w = [None] * len(weights)
        ctx.grads = [g.detach() if g is not None else None for g in g_w]
        if want_fisher:
            for c in catchers:  # later backwards (jacobian, H·g) must not overwrite
                c.active = False
            pairs: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in layers]
            for (i, out), grad in zip(outputs, out_grads):
                if grad is not None:
                    pairs[i].append((out.detach(), grad))
            ctx.fisher_pairs = pairs
            ctx.fisher_channel_dims = [(-1 if isinstance(m, nn.Linear) else 1) for _, m in layers]
        outputs.clear()
        out_grads.clear()
        catchers.clear()
    if want_jac:
        (jac,) = torch.autograd.grad(y, xin, grad_outputs=torch.ones_like(y),
                                     retain_graph=want_hg, allow_unused=True)
        ctx.jacobian = jac.detach() if jac is not None else torch.zeros_like(xin)
    if want_hg:
        terms = [(g.detach() * g).sum() for g in g_w if g is not None and g.requires_grad]
        if terms:
            z = torch.stack(terms).sum()
            hg = torch.autograd.grad(z, weights, allow_unused=True)
            ctx.hessian_grads = [h.detach() if h is not None else None for h in hg]
        else:
            ctx.hessian_grads = [None] * len(weights)


class _NeedsDeepcopy(Exception):
    """Raised inside :func:`synflow_clone`'s walk when a module needs ``copy.deepcopy``."""


_CLASS_KIND: dict[type, int] = {}
_NOT_CLONABLE, _CLONABLE_BUILTIN, _CLONABLE_CHECK_ATTRS = 0, 1, 2


def _class_kind(cls: type) -> int:
    """How :func:`synflow_clone` may copy instances of ``cls`` (cached per class): not at all
    (customised copying, RNNs' flat weights), as is (torch.nn's own modules), or after checking
    that no attribute is a list/tuple holding tensors (user modules)."""
    kind = _CLASS_KIND.get(cls)
    if kind is None:
        if issubclass(cls, nn.RNNBase):
            kind = _NOT_CLONABLE
        elif cls.__module__.startswith("torch.nn.modules."):
            kind = _CLONABLE_BUILTIN
        elif any(getattr(cls, a, None) is not getattr(nn.Module, a, None) for a in _COPY_HOOKS):
            kind = _NOT_CLONABLE
        else:
            kind = _CLONABLE_CHECK_ATTRS
        _CLASS_KIND[cls] = kind
    return kind


def synflow_clone(model: nn.Module, keep_bn: KeepBN, layer_types: Sequence[type[nn.Module]]
                  ) -> tuple[nn.Module, list[tuple[str, nn.Module]]]:
    """The synflow network of ``model`` in one walk: a private copy in training mode with every
    BatchNorm not kept by ``keep_bn`` replaced by an identity, every floating parameter and
    buffer replaced by its absolute value in float64 (the official ``state_dict`` ``abs_()`` on
    a ``double()`` copy), and only the counted weights requiring grad.

    Returns the copy and its counted ``(name, module)`` layers in ``named_modules`` order.
    Faster than ``copy.deepcopy`` + :func:`remove_batchnorms` by about 10× on NB201's ~400
    modules: module objects get shallow ``__dict__`` copies (hook dicts are shared with the
    original: no hook is ever added to this copy), removed BatchNorms' tensors are never
    copied, and all floating tensors of a device are converted in one concatenated
    ``to(float64).abs_()`` and handed out as views. Models whose modules customise copying
    (or keep tensors in list attributes, e.g. RNNs) are deep-copied first.
    """
    rule = _keep_bn_rule(keep_bn)
    types = tuple(layer_types)
    identity = nn.Identity()
    memo: dict[int, nn.Module] = {}
    tensors: dict[int, tuple[torch.Tensor, list]] = {}    # id -> (source, [(dict, key, is_param)])
    layers: list[tuple[str, nn.Module]] = []

    bn_type = nn.modules.batchnorm._BatchNorm
    set_dict = object.__setattr__

    def new_store(old: dict, is_param: bool) -> dict:
        """A new ``_parameters``/``_buffers`` dict whose tensors are filled in after the walk."""
        store = dict(old)
        for k, t in store.items():
            if t is not None:
                entry = tensors.get(id(t))
                if entry is None:
                    tensors[id(t)] = entry = (t, [])
                entry[1].append((store, k, is_param))
        return store

    def rec(m: nn.Module, name: str) -> nn.Module:
        seen = memo.get(id(m))
        if seen is not None:
            return seen
        if isinstance(m, bn_type) and not rule(name, m):
            memo[id(m)] = identity
            return identity
        cls = type(m)
        kind = _CLASS_KIND.get(cls)
        if kind is None:
            kind = _class_kind(cls)
        if kind == _NOT_CLONABLE:
            raise _NeedsDeepcopy
        d = m.__dict__.copy()
        if kind == _CLONABLE_CHECK_ATTRS and _holds_tensor_list(d):
            raise _NeedsDeepcopy
        new = cls.__new__(cls)
        memo[id(m)] = new
        d["training"] = True
        d["_parameters"] = params = new_store(m._parameters, True)
        d["_buffers"] = new_store(m._buffers, False)
        set_dict(new, "__dict__", d)
        if isinstance(m, types):
            w = params.get("weight")
            if w is not None and isinstance(w, nn.Parameter) and not isinstance(w, nn.parameter.UninitializedParameter):
                layers.append((name, new))
        children = m._modules
        if children:
            prefix = name + "." if name else ""
            d["_modules"] = {k: (rec(c, prefix + k) if c is not None else None) for k, c in children.items()}
        else:
            d["_modules"] = {}
        return new

    try:
        net = rec(model, "")
    except _NeedsDeepcopy:
        return _synflow_clone_slow(model, keep_bn, layer_types)
    finally:
        # rec refers to itself through its closure cell: without this the cycle would keep
        # memo (every new module and tensor) alive until the next garbage collection
        memo.clear()
        del rec

    # convert: every floating tensor of a device in one cat -> float64 -> abs_, split into views
    groups: dict[torch.device, list[torch.Tensor]] = {}
    for t, _ in tensors.values():
        if t.is_floating_point():
            groups.setdefault(t.device, []).append(t)
    converted: dict[int, torch.Tensor] = {}
    for dev, ts in groups.items():
        flat = torch.cat([t.detach().reshape(-1) for t in ts]).to(torch.float64)
        if len(ts) == 1 and flat.data_ptr() == ts[0].data_ptr():
            flat = flat.clone()
        flat.abs_()
        for t, piece in zip(ts, flat.split([t.numel() for t in ts])):
            converted[id(t)] = piece.view(t.shape)
    for tid, (t, uses) in tensors.items():
        v = converted.get(tid)
        if v is None:
            v = t.detach().clone()                     # integer buffers, e.g. num_batches_tracked
        param = None
        for store, k, is_param in uses:
            if is_param:
                if param is None:
                    param = nn.Parameter(v, requires_grad=False)
                store[k] = param
            else:
                store[k] = v
    for _, m in layers:
        m.weight.requires_grad_(True)
    return net, layers


def _synflow_clone_slow(model: nn.Module, keep_bn: KeepBN, layer_types: Sequence[type[nn.Module]]
                        ) -> tuple[nn.Module, list[tuple[str, nn.Module]]]:
    """:func:`synflow_clone` for models it cannot walk: a deep copy, then the same changes."""
    net = clone_module(model, _synflow_copy)
    remove_batchnorms(net, keep_bn)
    layers, _ = _prepare_copy(net, layer_types)
    return net, layers


def _synflow_pass(model: nn.Module, x: torch.Tensor, layer_types: Sequence[type[nn.Module]],
                  keep_bn: KeepBN,
                  ctx: PassContext) -> None:
    """Run pass 2 on a private |θ| float64 copy of ``model`` (:func:`synflow_clone`) and fill ``ctx``."""
    net, layers = synflow_clone(model, keep_bn, layer_types)
    if not layers:
        _counted_layers(net, layer_types)  # raises the usual "no weight layers" error
    weights = [m.weight for _, m in layers]
    ones = torch.ones((1,) + tuple(x.shape[1:]), dtype=torch.float64, device=x.device)
    out = _forward(net, ones)
    r = out.sum()
    ctx.synflow_output = float(r.detach())
    if r.requires_grad:
        gs = torch.autograd.grad(r, weights, allow_unused=True)
    else:
        gs = (None,) * len(weights)
    if not ctx.layer_names:
        ctx.layer_names = [n for n, _ in layers]
    ctx.synflow_weights = [w.detach() for w in weights]
    ctx.synflow_grads = [g.detach() if g is not None else None for g in gs]


# ------------------------------------------------------------------------------------------
# public entry points
# ------------------------------------------------------------------------------------------
def _finalise(spec: ProxySpec, raw: object, ctx: PassContext, per_layer: bool) -> ProxyResult:
    if isinstance(raw, ProxyResult):
        res = raw
    elif isinstance(raw, tuple) and len(raw) == 2:
        res = ProxyResult(spec.name, float(raw[0]), dict(raw[1]))
    else:
        res = ProxyResult(spec.name, float(raw))  # type: ignore[arg-type]
    if res.name != spec.name:
        res = ProxyResult(spec.name, res.value, res.per_layer, res.log_value, res.error)
    error = res.error
    for need in spec.needs:
        if need in ctx.problems and error is None:
            error = ctx.problems[need]
    if error is None and not math.isfinite(res.value):
        error = f"{spec.name} is not finite ({res.value})"
    value = res.value if error is None or not math.isfinite(res.value) else float("nan")
    return ProxyResult(spec.name, value, res.per_layer if per_layer else None, res.log_value, error)


def score_detailed(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None,
                   proxies: Sequence[str] | str = DEFAULT_PROXIES,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                   layer_types: Sequence[type[nn.Module]] = PAPER_LAYER_TYPES,
                   per_layer: bool = False, *,
                   synflow_keep_bn: KeepBN = None,
                   seed: int | None = 0, _owned: bool = False) -> dict[str, ProxyResult]:
    """Score ``model`` with each proxy, in the fewest shared passes.

    Args:
        model: any classifier ``nn.Module`` mapping inputs [N, ...] to logits [N, C]. Never
            modified (parameters, buffers, train/eval flags, requires_grad, .grad).
        inputs: [N, ...] floating batch (moved to the model's device).
        targets: [N] int64 class indices in [0, C) (or what ``loss_fn`` takes); may be
            ``None`` when only jacob_cov / synflow are asked for.
        proxies: names from :func:`available_proxies`.
        loss_fn: ``loss_fn(logits, targets) -> scalar``; the paper's cross-entropy by default.
        layer_types: modules whose ``.weight`` counts (paper: Conv2d and Linear; add e.g.
            nn.Conv1d / nn.Conv3d). Biases and BatchNorm parameters never count.
        per_layer: fill ``ProxyResult.per_layer`` (module name -> contribution).
        synflow_keep_bn: which BatchNorms synflow keeps (default: none, every BatchNorm
            module is bypassed): a collection of module names or ``(name, module) -> bool``.
            :func:`score_arch` passes the official NB201 rule.
        seed: the passes run under ``torch.manual_seed(seed)`` (e.g. dropout) without changing
            the caller's RNG state; ``None`` leaves the global RNG alone.
        _owned: internal (:func:`score_arch`): ``model`` is a throwaway the main pass may
            modify, so it is not copied.

    Returns:
        ``{name: ProxyResult}`` in the order asked. A non-finite value carries ``error``.
    """
    specs = resolve(proxies)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    needs: set[str] = set()
    for s in specs:
        needs.update(s.needs)
    main_needs = needs - {"synflow"}
    if main_needs or not needs:
        layers = _counted_layers(model, layer_types)
        device = _model_device(layers)
    else:  # synflow alone: its private copy finds the counted layers (one module walk, not two)
        _check_layer_types(layer_types)
        first = next(model.parameters(), None)
        if first is None:
            _counted_layers(model, layer_types)  # raises "no weight layers"
        layers = None
        device = first.device
    need_targets = bool(main_needs - {"jacobian"})
    # synflow alone reads only the inputs' shape (its input is all ones): values unchecked
    _check_inputs(inputs, targets, need_targets, check_values=bool(main_needs))
    x = inputs.detach().to(device)
    t = targets.detach().to(device) if need_targets and targets is not None else None

    ctx = PassContext()
    if layers is not None:
        # A proxy that needs no pass (e.g. a function of the weights alone) still sees the
        # counted layers; the passes below replace these with their own (copied) tensors.
        ctx.layer_names = [name for name, _ in layers]
        ctx.weights = [m.weight.detach() for _, m in layers]
    try:
        with _seeded(seed, device):
            if main_needs:
                net = model if _owned else clone_module(model, _main_copy)
                _main_pass(net, x, t, loss_fn, layer_types, main_needs, ctx)
                del net
            if "synflow" in needs:
                _synflow_pass(model, x, layer_types, synflow_keep_bn, ctx)
        results = {}
        for spec in specs:
            results[spec.name] = _finalise(spec, spec.fn(ctx), ctx, per_layer)
    finally:
        ctx.clear()
    return results


def score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None,
          proxies: Sequence[str] | str = DEFAULT_PROXIES,
          loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
          layer_types: Sequence[type[nn.Module]] = PAPER_LAYER_TYPES,
          per_layer: bool = False, *,
          synflow_keep_bn: KeepBN = None,
          seed: int | None = 0) -> dict[str, float]:
    """``{proxy: value}``; see :func:`score_detailed` for the arguments.

    With ``per_layer=True`` the dict also holds ``"<proxy>/<module name>"`` entries. A
    non-finite value is returned as is (NaN) and announced with a ``RuntimeWarning`` giving
    its reason (use :func:`score_detailed` to get the reason as data).
    """
    detailed = score_detailed(model, inputs, targets, proxies, loss_fn, layer_types, per_layer,
                              synflow_keep_bn=synflow_keep_bn, seed=seed)
    out: dict[str, float] = {}
    for name, r in detailed.items():
        out[name] = r.value
        if r.error is not None:
            warnings.warn(f"zcfast.score: {r.error}", RuntimeWarning, stacklevel=2)
    if per_layer:
        for name, r in detailed.items():
            for layer, v in (r.per_layer or {}).items():
                out[f"{name}/{layer}"] = v
    return out
