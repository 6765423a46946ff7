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
from typing import Callable, Collection, Iterable, Iterator, NamedTuple, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from zcfast.proxies import reductions
from zcfast.proxies.needs import SHARED_MAIN, Need, NeedError, closure, register_need
from zcfast.proxies.registry import PAPER_PROXIES, PassContext, ProxyResult, ProxySpec, resolve

DEFAULT_PROXIES: tuple[str, ...] = PAPER_PROXIES  # the default set: the paper's six
PAPER_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)

#: which BatchNorms synflow keeps: module names, a (qualified name, module) -> bool rule, or None
KeepBN = Union[Callable[[str, nn.Module], bool], Collection[str], None]


# ------------------------------------------------------------------------------------------
# which weights count
# ------------------------------------------------------------------------------------------
#: ``layer_types`` argument: ``None`` (every weight-bearing layer), one class, or a tuple of them
LayerTypes = Union[None, type, Sequence[type]]

#: modules whose ``weight`` counts under the default rule (``layer_types=None``)
_SINGLE_WEIGHT_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear, nn.Embedding, nn.EmbeddingBag)
#: modules whose parameters are never counted (nor reported as skipped): normalisation layers
_NORM_MODULES: tuple[type[nn.Module], ...] = tuple(
    t for t in (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
                getattr(nn, "RMSNorm", None)) if t is not None)


class Counted(NamedTuple):
    """One counted weight tensor: ``getattr(module, attr)`` (a parameter, or the effective weight
    of a ``torch.nn.utils.parametrize`` parametrization).

    ``name`` is the module's qualified name for its ``weight`` (the paper's per-layer key) and
    ``"<module>.<attr>"`` for other tensors (attention ``in_proj_weight``, RNN ``weight_ih_l0``).
    ``fisher_dim`` is the channel dimension of the module's output for fisher, or ``None`` where
    fisher cannot be measured on the output (attention, recurrent layers, embeddings).
    """

    name: str
    module: nn.Module
    attr: str
    fisher_dim: int | None


def normalise_layer_types(layer_types: LayerTypes) -> tuple[type[nn.Module], ...] | None:
    """``None`` (the default rule), or ``layer_types`` as a non-empty tuple of nn.Module classes
    (a single class is accepted as a 1-tuple).

    Raises:
        ValueError: anything else (the message names what was given).
    """
    if layer_types is None:
        return None
    if isinstance(layer_types, type):
        layer_types = (layer_types,)
    if isinstance(layer_types, (str, bytes)) or not isinstance(layer_types, Iterable):
        raise ValueError(f"layer_types must be None (every weight-bearing layer), an nn.Module class "
                         f"or a tuple of them, got {layer_types!r}")
    types = tuple(layer_types)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise ValueError(f"layer_types must be None (every weight-bearing layer), an nn.Module class "
                         f"or a non-empty tuple of them, got {layer_types!r}")
    return types


def _weight_attrs(m: nn.Module) -> list[str]:
    """The weight tensors of a weight-bearing module, by attribute name (``[]``: none)."""
    if isinstance(m, nn.MultiheadAttention):  # out_proj is its own (Linear) module
        if m._parameters.get("in_proj_weight") is not None:
            return ["in_proj_weight"]
        return [a for a in ("q_proj_weight", "k_proj_weight", "v_proj_weight") if m._parameters.get(a) is not None]
    if isinstance(m, nn.RNNBase):
        return [a for a in m._flat_weights_names if a.startswith("weight")]
    if isinstance(m, nn.RNNCellBase):
        return ["weight_ih", "weight_hh"]
    if isinstance(m, _SINGLE_WEIGHT_MODULES):
        return ["weight"]
    return []


def _fisher_dim(m: nn.Module, attr: str) -> int | None:
    if attr != "weight":
        return None
    if isinstance(m, nn.modules.conv._ConvNd):
        return 1
    if isinstance(m, (nn.Linear, nn.Bilinear)):
        return -1
    return None


def _is_parametrized(m: nn.Module, attr: str) -> bool:
    # a parametrization registers the submodule "parametrizations" (looked up first: the full
    # check's getattr miss costs ~1 µs per weight, called several times per weight and call)
    return "parametrizations" in m._modules and parametrize.is_parametrized(m, attr)


def _weight_leaves(c: Counted) -> list[torch.Tensor]:
    """The leaf parameters behind a counted weight (the originals of a parametrization)."""
    if _is_parametrized(c.module, c.attr):
        return list(c.module.parametrizations[c.attr].parameters())
    return [c.module._parameters[c.attr]]


def _usable_weight(name: str, m: nn.Module, attr: str) -> bool:
    """Whether ``m.<attr>`` is a countable weight; raises for an uninitialised (lazy) one."""
    if _is_parametrized(m, attr):
        return True
    w = m._parameters.get(attr)
    if w is None:
        return False
    if isinstance(w, nn.parameter.UninitializedParameter):
        raise ValueError(f"module {name or '<root>'!r} ({type(m).__name__}) is uninitialised (a lazy "
                         "module): run one forward pass on a batch first, then score")
    return w.is_floating_point()


def counted_weights(model: nn.Module, layer_types: LayerTypes = None, *,
                    _modules: Sequence[tuple[str, nn.Module]] | None = None) -> list[Counted]:
    """The weights the proxies sum over, in ``named_modules`` order.

    ``layer_types=None`` (the default of :func:`score`): every weight-bearing layer, i.e. the
    ``weight`` of Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear (and its subclasses, e.g.
    attention's ``out_proj``), Bilinear, Embedding and EmbeddingBag; MultiheadAttention's
    ``in_proj_weight`` (or ``q/k/v_proj_weight``); every ``weight_*`` of RNN/LSTM/GRU and their
    cells. A parametrized weight (``torch.nn.utils.parametrizations.weight_norm`` /
    ``spectral_norm`` / ``orthogonal``) counts by its effective weight. Biases and normalisation
    layers never count. With a class or tuple of classes: the same weights of modules that are
    instances of them (a module outside the table above counts its ``weight``).

    ``_modules``: internal, ``list(model.named_modules())`` when the caller already walked it
    (:func:`score_detailed` walks the model once for every check).

    Raises:
        ValueError: bad ``layer_types``, an uninitialised lazy module, or no counted weight.
    """
    types = normalise_layer_types(layer_types)
    out: list[Counted] = []
    for name, m in (model.named_modules() if _modules is None else _modules):
        if types is None:
            attrs = _weight_attrs(m)
        elif isinstance(m, types):
            attrs = _weight_attrs(m) or ["weight"]
        else:
            continue
        for attr in attrs:
            if _usable_weight(name, m, attr):
                key = name if attr == "weight" else (f"{name}.{attr}" if name else attr)
                out.append(Counted(key, m, attr, _fisher_dim(m, attr)))
    if not out:
        for name, m in model.named_modules():  # name a lazy module rather than "no weights"
            for attr in m._parameters:
                _usable_weight(name, m, attr)
        what = ("every weight-bearing layer (Conv*, Linear, Embedding, attention, RNN)" if types is None
                else f"layers of types {[t.__name__ for t in types]}")
        raise ValueError(f"the model has no weights to score: the proxies sum over the weights of {what}; "
                         "pass layer_types=... naming the modules whose weight counts")
    return out


def skipped_parameters(model: nn.Module, counted: Sequence[Counted], *,
                       _modules: Sequence[tuple[str, nn.Module]] | None = None) -> list[tuple[str, int]]:
    """``(qualified name, numel)`` of every floating parameter that is neither counted, nor a bias,
    nor part of a normalisation layer: what the default rule leaves out (e.g. a custom layer's
    raw ``nn.Parameter``, PReLU's slope)."""
    ids = {id(t) for c in counted for t in _weight_leaves(c)}
    skipped = []
    for mname, m in (model.named_modules() if _modules is None else _modules):
        if isinstance(m, _NORM_MODULES):
            continue
        for pname, p in m._parameters.items():
            if p is None or id(p) in ids or "bias" in pname or not p.is_floating_point():
                continue
            if isinstance(p, nn.parameter.UninitializedParameter):
                continue
            if mname.endswith("parametrizations.bias"):
                continue
            skipped.append((f"{mname}.{pname}" if mname else pname, p.numel()))
            ids.add(id(p))
    return skipped


def _warn_skipped(skipped: Sequence[tuple[str, int]]) -> None:
    """The warning naming the parameters the default rule leaves out (``skipped_parameters``)."""
    if not skipped:
        return
    total = sum(n for _, n in skipped)
    listed = ", ".join(f"{n} ({k:,})" for n, k in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
    warnings.warn(f"zcfast.score: {len(skipped)} parameter tensor(s) ({total:,} parameters) are not "
                  f"counted by the default rule (every weight-bearing layer): {listed}; pass "
                  "layer_types=... to choose the counted modules", UserWarning, stacklevel=3)


#: per-class rule of :func:`_fast_walk`, for ``layer_types=None`` and per normalised
#: ``layer_types``: ``cls -> (weight kind, normalisation layer?, fisher dim of its weight)``.
#: Kinds: 0 no counted weight; 1 ``weight``; 2 per instance (:func:`_weight_attrs`: attention,
#: RNNs); -1 the class overrides ``named_modules`` (the general path walks it). Bounded.
_CLASS_RULES: dict[tuple[type, ...] | None, dict[type, tuple[int, bool, int | None]]] = {}
_CLASS_RULES_MAX = 4096


def _class_rule(m: nn.Module, types: tuple[type[nn.Module], ...] | None) -> tuple[int, bool, int | None]:
    """``m``'s class rule (:data:`_CLASS_RULES`), from the checks :func:`counted_weights` and
    :func:`skipped_parameters` make on ``m``, cached by class."""
    rules = _CLASS_RULES.get(types)
    if rules is None or len(rules) > _CLASS_RULES_MAX:
        if len(_CLASS_RULES) > 64:
            _CLASS_RULES.clear()
        rules = _CLASS_RULES[types] = {}
    if type(m).named_modules is not nn.Module.named_modules:
        kind = -1
    elif isinstance(m, (nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase)):
        kind = 2
    elif isinstance(m, _SINGLE_WEIGHT_MODULES):
        kind = 1
    elif types is not None and isinstance(m, types):
        kind = 1   # a layer_types match outside the table counts its ``weight``
    else:
        kind = 0
    if kind > 0 and types is not None and not isinstance(m, types):
        kind = 0
    rule = (kind, isinstance(m, _NORM_MODULES), _fisher_dim(m, "weight"))
    rules[type(m)] = rule
    return rule


class _Walk(NamedTuple):
    """What one walk of a model gives :func:`score_detailed`, every check of
    ``_check_not_meta`` and :func:`counted_weights` made."""

    counted: list[Counted]
    #: ``(qualified name, parameter)`` of every parameter once, in ``named_parameters`` order
    #: (``[]`` when not asked for)
    parameters: list[tuple[str, nn.Parameter]]
    #: :func:`skipped_parameters` (``[]`` when not asked for)
    skipped: list[tuple[str, int]]
    #: whether a counted weight is parametrized (``torch.nn.utils.parametrize``)
    parametrized: bool


def _fast_walk(model: nn.Module, types: tuple[type[nn.Module], ...] | None, want_parameters: bool,
               want_skipped: bool) -> _Walk | None:
    """:func:`_walk` in one iterative pre-order walk (``named_modules``' order and
    de-duplication) with per-class rules, or ``None`` where the general path must decide: a
    meta tensor, an uninitialised (lazy) parameter, a parametrization, a class overriding
    ``named_modules``, or no counted weight (the general path raises the same errors, in the
    same order)."""
    counted: list[Counted] = []
    parameters: list[tuple[str, nn.Parameter]] = []
    candidates: list[tuple[str, str, nn.Parameter]] = []
    seen: set[int] = set()
    memo: set[nn.Module] = set()
    rules = _CLASS_RULES.get(types) or {}
    parameter, uninitialised = nn.Parameter, nn.parameter.UninitializedParameter
    new_counted = tuple.__new__   # Counted(...) without its Python-level __new__ (98 per NB201 call)
    stack: list[tuple[str, nn.Module]] = [("", model)]
    pop, push = stack.pop, stack.append
    while stack:
        name, m = pop()
        if m in memo:
            continue
        memo.add(m)
        children = m._modules
        if "parametrizations" in children or "named_modules" in m.__dict__:
            return None   # (before the class rule: a parametrized module's class is made per module)
        rule = rules.get(type(m))
        if rule is None:
            rule = _class_rule(m, types)
            rules = _CLASS_RULES.get(types, rules)
        kind, norm, fisher_dim = rule
        if kind < 0:
            return None
        own = m._parameters
        if own:
            prefix = name + "." if name else ""
            may_skip = want_skipped and not norm
            for pname, p in own.items():
                if p is None:
                    continue
                tp = type(p)
                if p.is_meta or (tp is not parameter and issubclass(tp, uninitialised)):
                    return None
                if want_parameters:
                    i = id(p)
                    if i not in seen:
                        seen.add(i)
                        parameters.append((prefix + pname, p))
                # a kind-1 module's "weight" is counted exactly when it is floating: never skipped
                if (may_skip and (kind != 1 or pname != "weight") and "bias" not in pname
                        and p.is_floating_point()):
                    candidates.append((prefix, pname, p))
            if kind == 1:
                w = own.get("weight")
                if w is not None and w.is_floating_point():
                    counted.append(new_counted(Counted, (name, m, "weight", fisher_dim)))
            elif kind == 2:
                for attr in _weight_attrs(m) or (["weight"] if types is not None else []):
                    w = own.get(attr)
                    if w is not None and w.is_floating_point():
                        key = name if attr == "weight" else prefix + attr
                        counted.append(Counted(key, m, attr, _fisher_dim(m, attr)))
        buffers = m._buffers
        if buffers:
            for b in buffers.values():
                if b is not None and b.is_meta:
                    return None
        if children:
            prefix = name + "." if name else ""
            for c, sub in reversed(children.items()):
                if sub is not None:
                    push((prefix + c, sub))
    if not counted:
        return None
    skipped = []
    if candidates:
        ids = {id(c.module._parameters[c.attr]) for c in counted}
        for prefix, pname, p in candidates:
            if id(p) not in ids:
                skipped.append((prefix + pname, p.numel()))
                ids.add(id(p))
    return _Walk(counted, parameters, skipped, False)


def _walk(model: nn.Module, layer_types: LayerTypes, *, want_parameters: bool, want_skipped: bool) -> _Walk:
    """The model's counted weights (:func:`counted_weights`), checked first for meta tensors;
    with ``want_parameters`` every parameter once with its name (``named_parameters``), with
    ``want_skipped`` :func:`skipped_parameters`. One walk of the module tree
    (:func:`_fast_walk`), or the general functions where that declines.

    Raises:
        ValueError: a meta tensor, bad ``layer_types``, an uninitialised lazy module, or no
            counted weight (the messages of ``_check_not_meta`` and :func:`counted_weights`).
    """
    try:
        types = normalise_layer_types(layer_types)
    except ValueError:  # raised below, after the meta check (the general path's order)
        walk = None
    else:
        walk = _fast_walk(model, types, want_parameters, want_skipped)
    if walk is not None:
        return walk
    modules = list(model.named_modules())
    _check_not_meta(model, modules)
    counted = counted_weights(model, layer_types, _modules=modules)
    parameters: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for mname, m in modules if want_parameters else ():
        for pname, p in m._parameters.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                parameters.append((f"{mname}.{pname}" if mname else pname, p))
    skipped = skipped_parameters(model, counted, _modules=modules) if want_skipped else []
    return _Walk(counted, parameters, skipped, any(_is_parametrized(c.module, c.attr) for c in counted))


# ------------------------------------------------------------------------------------------
# checks
# ------------------------------------------------------------------------------------------
def _check_inputs(inputs: torch.Tensor, targets: torch.Tensor | None, need_targets: bool,
                  check_values: bool = True, allow_integer: bool = False) -> None:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.is_meta:
        raise ValueError("inputs is a meta tensor (it has a shape but no values): pass real data")
    if inputs.is_complex() or not (inputs.is_floating_point() or allow_integer):
        raise ValueError(f"inputs must be a floating-point tensor, got dtype {inputs.dtype}")
    if inputs.dim() < 1 or inputs.shape[0] < 1 or (inputs.dim() < 2 and inputs.is_floating_point()):
        raise ValueError(f"inputs must be a batch [N, ...] with N >= 1, got shape {tuple(inputs.shape)}")
    if check_values and inputs.is_floating_point() and not reductions.all_finite(inputs):
        raise ValueError("inputs contain NaN or inf")
    if need_targets:
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
        if targets.is_meta:
            raise ValueError("targets is a meta tensor (it has a shape but no values): pass real labels")
        if targets.dim() == 0:
            raise ValueError(f"targets must be a batch [N] with one label per input (N = {inputs.shape[0]}), "
                             f"got a 0-dim tensor ({targets.item()!r})")
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
    if targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"class-index targets must be integers, got dtype {targets.dtype}")
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


def _check_not_meta(model: nn.Module, modules: Sequence[tuple[str, nn.Module]] | None = None) -> None:
    # one walk over the modules' own tensors (named_parameters + named_buffers walk the tree
    # twice and build names: ~1 ms per 100 modules); names are built only for the message.
    # ``modules``: the caller's ``list(model.named_modules())``, to share its walk
    mods = model.modules() if modules is None else (m for _, m in modules)
    if not any(t is not None and t.is_meta for m in mods
               for t in (*m._parameters.values(), *m._buffers.values())):
        return
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_meta:
            raise ValueError(f"the model's {name!r} is a meta tensor (shape only, no values): materialise "
                             "the model first, e.g. model.to_empty(device='cpu') and initialise its weights")


def _model_device(counted: Sequence[Counted]) -> torch.device:
    return _weight_leaves(counted[0])[0].device


def _forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        y = net(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        if not x.is_floating_point():
            raise ValueError(f"the model's forward failed on {str(x.dtype).replace('torch.', '')} inputs of shape "
                             f"{tuple(x.shape)}: {exc} (integer inputs are for models that read them, e.g. "
                             "token ids into nn.Embedding; pass floating-point inputs otherwise)") from exc
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
        for k, v in m.__dict__.items():  # hook dicts, plain lists etc.: new containers, same entries
            d[k] = v.copy() if isinstance(v, (dict, set, list)) else v
        memo[id(m)] = new
        d["_parameters"] = {k: tensor(v, True) for k, v in m._parameters.items()}
        d["_buffers"] = {k: tensor(v, False) for k, v in m._buffers.items()}
        d["_modules"] = {k: (rec(c) if c is not None else None) for k, c in m._modules.items()}
        return new

    try:
        new_model = rec(model)
    finally:
        memo.clear()  # rec's closure refers to itself: free the memo now, not at the next gc
        del rec
    _refresh_rnn_weights(new_model)
    return new_model


def _refresh_rnn_weights(net: nn.Module) -> None:
    """RNN modules keep a list of their weight tensors (``_flat_weights``) that their forward
    reads: point it at the clone's parameters, not the original's."""
    for m in net.modules():
        if isinstance(m, nn.RNNBase):
            m._init_flat_weights()


def _main_copy(t: torch.Tensor, is_param: bool) -> torch.Tensor:
    # Every tensor gets its own storage: a forward may write in place (BN running statistics,
    # ``weight.data.clamp_()``) and a proxy may write ``ctx.weights``; neither may reach the
    # caller's model (copy-on-write does not exist in torch). Cost: one copy of the weights
    # (NB201: ~1.4 MB, well under 1% of a main pass).
    v = t.detach().clone()
    return nn.Parameter(v, requires_grad=False) if is_param else v


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
def _prepare_copy(net: nn.Module, layer_types: LayerTypes) -> list[Counted]:
    """Put a private copy in training mode with only its counted weights requiring grad
    (for a parametrized weight: its originals). Returns the counted weights."""
    net.train()
    counted = counted_weights(net, layer_types)
    for p in net.parameters():
        p.requires_grad_(False)
    for c in counted:
        for leaf in _weight_leaves(c):
            leaf.requires_grad_(True)
    return counted


@contextlib.contextmanager
def _double_backward_safe(enabled: bool) -> Iterator[None]:
    """Attention through the math kernel while ``enabled``: the fused (flash / memory-efficient)
    scaled-dot-product kernels have no double backward, which grasp's H·g needs."""
    if not enabled:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def _weights_of(counted: Sequence[Counted]) -> list[torch.Tensor]:
    """The counted tensors (call inside ``parametrize.cached()`` so a parametrized weight is the
    one tensor the forward uses)."""
    return [getattr(c.module, c.attr) for c in counted]


def _problem(ctx: PassContext, needs: Iterable[str], reason: str) -> None:
    for need in needs:
        ctx.problems.setdefault(need, reason)


def _overflow_check(net: nn.Module, x: torch.Tensor) -> str | None:
    """The overflow reason (:func:`reductions.overflow_reason`) when the input or any module
    output of a forward of ``net`` exceeds the square root of its dtype's maximum (so squares,
    e.g. BatchNorm's variance, are inf), else ``None``. Run only when every gradient is 0."""
    found: list[torch.dtype] = []

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        if not found and isinstance(output, torch.Tensor) and reductions.exceeds_square_range(output):
            found.append(output.dtype)

    if x.is_floating_point() and reductions.exceeds_square_range(x):
        return reductions.overflow_reason(x.dtype)
    handles = [m.register_forward_hook(hook) for m in net.modules()]
    try:
        with torch.no_grad():
            net(x)
    except Exception:  # noqa: BLE001  (a diagnosis only)
        return None
    finally:
        for h in handles:
            h.remove()
    return reductions.overflow_reason(found[0]) if found else None


def _main_pass(net: nn.Module, x: torch.Tensor, targets: torch.Tensor | None, loss_fn: Callable,
               layer_types: LayerTypes, needs: set[str], ctx: PassContext) -> None:
    """Run pass 1 on ``net`` (a private copy, modified freely) and fill ``ctx``.

    Bad input (a forward that fails, wrong logits shape, targets out of range, a loss_fn that
    fails) raises ``ValueError``. A backward that fails or gives undefined values only marks the
    needs it serves in ``ctx.problems`` (with the reason): the other proxies are computed.
    """
    counted = _prepare_copy(net, layer_types)
    want_fisher = "fisher" in needs
    want_hg = "hessian_grad" in needs
    want_jac = "jacobian" in needs
    want_loss = want_fisher or want_hg or "grads" in needs or "outputs" in needs
    with parametrize.cached(), _double_backward_safe(want_hg):
        _main_pass_body(net, x, targets, loss_fn, counted, want_fisher, want_hg, want_jac, want_loss,
                        needs, ctx)


def _main_pass_body(net, x, targets, loss_fn, counted, want_fisher, want_hg, want_jac, want_loss,
                    needs, ctx) -> None:
    weights = _weights_of(counted)
    outputs: list[tuple[int, torch.Tensor]] = []
    out_grads: list[torch.Tensor | None] = []
    catchers: list[_GradCatcher] = []
    handles = []
    if want_fisher:
        for i, c in enumerate(counted):
            if c.fisher_dim is not None:
                handles.append(c.module.register_forward_hook(_OutputRecorder(outputs, out_grads, catchers, i)))
    xin = x.detach().clone().requires_grad_(True) if want_jac else x.detach()
    try:
        y = _forward(net, xin)
    finally:
        for h in handles:
            h.remove()
    if y.dim() != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"the model must return logits [N, C] with N = {x.shape[0]}, got shape {tuple(y.shape)}")

    ctx.layer_names = [c.name for c in counted]
    ctx.weights = [w.detach() for w in weights]
    g_w: list[torch.Tensor | None] = []
    grad_needs = ("grads", "fisher", "hessian_grad")
    if want_loss:
        assert targets is not None
        _check_targets_for_logits(targets, y, loss_fn)
        try:
            loss = loss_fn(y, targets)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise ValueError(f"loss_fn failed on logits of shape {tuple(y.shape)} and targets of shape "
                             f"{tuple(targets.shape)}: {exc}") from exc
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        loss = loss.reshape(())
        if "outputs" in needs:
            ctx.logits = y.detach()
            ctx.loss = loss.detach()
        if not bool(torch.isfinite(loss.detach())):
            _problem(ctx, grad_needs, reductions.loss_not_finite_reason(float(loss.detach())))
        elif loss.requires_grad:
            try:
                g_w = list(torch.autograd.grad(loss, weights, retain_graph=want_jac or want_hg,
                                               create_graph=want_hg, allow_unused=True))
            except RuntimeError as exc:
                if want_hg:  # an op without a differentiable backward: only grasp needs one
                    _problem(ctx, ("hessian_grad",), "the double backward (Hessian-gradient product) failed: "
                                                     f"the loss backward with create_graph raised {_first_line(exc)}")
                    want_hg = False
                    try:
                        g_w = list(torch.autograd.grad(loss, weights, retain_graph=want_jac, allow_unused=True))
                    except RuntimeError as exc2:
                        _problem(ctx, grad_needs, f"the backward of the loss failed: {_first_line(exc2)}")
                else:
                    _problem(ctx, grad_needs, f"the backward of the loss failed: {_first_line(exc)}")
        else:  # the loss does not depend on any counted weight
            g_w = [None] * len(weights)
        if g_w:
            reason = reductions.gradient_problem([g.detach() for g in g_w if g is not None])
            if reason == reductions.ALL_ZERO:
                reason = _overflow_check(net, x)
            if reason is not None:
                _problem(ctx, grad_needs, reason)
        ctx.grads = [g.detach() if g is not None else None for g in g_w] if g_w else None
        for cat in catchers:  # later backwards (jacobian, H·g) must not overwrite
            cat.active = False
        if want_fisher and "fisher" not in ctx.problems:
            pairs: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in counted]
            for (i, out), grad in zip(outputs, out_grads):
                if grad is not None:
                    pairs[i].append((out.detach(), grad))
            ctx.fisher_pairs = pairs
            ctx.fisher_channel_dims = [c.fisher_dim if c.fisher_dim is not None else 1 for c in counted]
        outputs.clear()
        out_grads.clear()
        catchers.clear()
    if want_jac:
        try:
            (jac,) = torch.autograd.grad(y, xin, grad_outputs=torch.ones_like(y),
                                         retain_graph=want_hg, allow_unused=True)
            ctx.jacobian = jac.detach() if jac is not None else torch.zeros_like(xin)
        except RuntimeError as exc:
            _problem(ctx, ("jacobian",), f"the backward to the inputs failed: {_first_line(exc)}")
    if want_hg and "hessian_grad" not in ctx.problems:
        terms = [(g.detach() * g).sum() for g in g_w if g is not None and g.requires_grad]
        if terms:
            try:
                z = torch.stack(terms).sum()
                hg = torch.autograd.grad(z, weights, allow_unused=True)
                ctx.hessian_grads = [h.detach() if h is not None else None for h in hg]
            except RuntimeError as exc:
                _problem(ctx, ("hessian_grad",),
                         f"the double backward (Hessian-gradient product) failed: {_first_line(exc)}")
        else:
            ctx.hessian_grads = [None] * len(weights)
        if ctx.hessian_grads is not None:
            reason = reductions.gradient_problem([h for h in ctx.hessian_grads if h is not None],
                                                 what="the Hessian-gradient product")
            if reason is not None and reason != reductions.ALL_ZERO:
                _problem(ctx, ("hessian_grad",), reason)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


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


def synflow_clone(model: nn.Module, keep_bn: KeepBN, layer_types: LayerTypes
                  ) -> tuple[nn.Module, list[Counted]]:
    """The synflow network of ``model`` in one walk: a private copy in training mode with every
    BatchNorm not kept by ``keep_bn`` replaced by an identity, every floating parameter and
    buffer replaced by its absolute value in float64 (the official ``state_dict`` ``abs_()`` on
    a ``double()`` copy), and only the counted weights requiring grad.

    Returns the copy and its counted weights (:func:`counted_weights`) in ``named_modules`` order.
    Faster than ``copy.deepcopy`` + :func:`remove_batchnorms` by about 10× on NB201's ~400
    modules: module objects get shallow ``__dict__`` copies (hook dicts are shared with the
    original: no hook is ever added to this copy), removed BatchNorms' tensors are never
    copied, and all floating tensors of a device are converted in one concatenated
    ``to(float64).abs_()`` and handed out as views. Models whose modules customise copying
    (or keep tensors in list attributes, e.g. RNNs) are deep-copied first.
    """
    rule = _keep_bn_rule(keep_bn)
    identity = nn.Identity()
    memo: dict[int, nn.Module] = {}
    tensors: dict[int, tuple[torch.Tensor, list]] = {}    # id -> (source, [(dict, key, is_param)])

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
        if kind == _CLONABLE_CHECK_ATTRS:
            if _holds_tensor_list(d):
                raise _NeedsDeepcopy
            for k, v in d.items():  # a user forward may append to its own lists: not the caller's
                if type(v) is list or type(v) is set or (type(v) is dict and not k.startswith("_")):
                    d[k] = v.copy()
        new = cls.__new__(cls)
        memo[id(m)] = new
        d["training"] = True
        d["_parameters"] = new_store(m._parameters, True)
        d["_buffers"] = new_store(m._buffers, False)
        set_dict(new, "__dict__", d)
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
    counted = counted_weights(net, layer_types)
    for c in counted:
        for leaf in _weight_leaves(c):
            leaf.requires_grad_(True)
    return net, counted


def _synflow_clone_slow(model: nn.Module, keep_bn: KeepBN, layer_types: LayerTypes
                        ) -> tuple[nn.Module, list[Counted]]:
    """:func:`synflow_clone` for models it cannot walk: a deep copy, then the same changes."""
    net = clone_module(model, _synflow_copy)
    remove_batchnorms(net, keep_bn)
    return net, _prepare_copy(net, layer_types)


def _synflow_need(ctx: PassContext) -> None:
    """The ``synflow`` need: :func:`_synflow_pass` on the caller's model (it is only read)."""
    assert ctx._source is not None
    _synflow_pass(ctx._source, ctx.batches[0][0], ctx.layer_types, ctx._options.get("synflow_keep_bn"), ctx)


def _synflow_pass(model: nn.Module, x: torch.Tensor, layer_types: LayerTypes,
                  keep_bn: KeepBN,
                  ctx: PassContext) -> None:
    """Run pass 2 on a private |θ| float64 copy of ``model`` (:func:`synflow_clone`) and fill
    ``ctx``; a failure marks only ``ctx.problems["synflow"]``."""
    net, counted = synflow_clone(model, keep_bn, layer_types)
    try:
        with parametrize.cached():
            weights = _weights_of(counted)
            ones = torch.ones((1,) + tuple(x.shape[1:]), dtype=torch.float64, device=x.device)
            out = _forward(net, ones)
            r = out.sum()
            ctx.synflow_output = float(r.detach())
            if r.requires_grad:
                gs = torch.autograd.grad(r, weights, allow_unused=True)
            else:
                gs = (None,) * len(weights)
    except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError) as exc:
        _problem(ctx, ("synflow",), f"the synflow pass (float64 |θ| copy, all-ones input of shape "
                                    f"{(1,) + tuple(x.shape[1:])}) failed: {_first_line(exc)}")
        return
    if not ctx.layer_names:
        ctx.layer_names = [c.name for c in counted]
    ctx.synflow_weights = [w.detach() for w in weights]
    ctx.synflow_grads = [g.detach() if g is not None else None for g in gs]


# ------------------------------------------------------------------------------------------
# public entry points
# ------------------------------------------------------------------------------------------
_RETURN_HINT = "a proxy must return a float, a (value, per_layer dict) pair or a ProxyResult"


def finalise(spec: ProxySpec, ctx: PassContext, per_layer: bool) -> ProxyResult:
    """Call ``spec``'s function on ``ctx`` and normalise what it returns. Each proxy's failure is
    its own: a pass it needs that failed, a function that raises or returns something that is not
    a number all give NaN with the reason in ``error``."""
    for need in spec.needs:
        if need in ctx.problems:
            return ProxyResult(spec.name, float("nan"), None, None,
                               reductions.undefined_reason(spec.name, ctx.problems[need]))
    try:
        raw = spec.fn(ctx)
    except Exception as exc:  # noqa: BLE001  (one proxy's bug must not take the others down)
        return ProxyResult(spec.name, float("nan"), None, None,
                           f"proxy {spec.name!r} raised {_first_line(exc)}")
    try:
        if isinstance(raw, ProxyResult):
            res = raw
            if not isinstance(res.value, (int, float)) or isinstance(res.value, bool):
                raise TypeError(f"its ProxyResult.value is {type(res.value).__name__}")
        elif isinstance(raw, tuple) and len(raw) == 2:
            res = ProxyResult(spec.name, _as_float(raw[0]), {str(k): float(v) for k, v in dict(raw[1]).items()})
        else:
            res = ProxyResult(spec.name, _as_float(raw))
    except (TypeError, ValueError) as exc:
        return ProxyResult(spec.name, float("nan"), None, None,
                           f"proxy {spec.name!r} returned {_describe(raw)} ({exc}): {_RETURN_HINT}")
    error = res.error
    if error is None and not math.isfinite(res.value):
        error = reductions.not_finite_reason(spec.name, res.value)
    value = float(res.value) if error is None or not math.isfinite(res.value) else float("nan")
    return ProxyResult(spec.name, value, res.per_layer if per_layer else None, res.log_value, error)


def _as_float(v: object) -> float:
    if isinstance(v, bool) or v is None or isinstance(v, (str, bytes)):
        raise TypeError(f"not a number: {type(v).__name__}")
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 or v.is_complex():
            raise TypeError(f"a tensor of shape {tuple(v.shape)}, not one real value")
        return float(v.detach())
    return float(v)  # type: ignore[arg-type]


def _describe(v: object) -> str:
    if v is None:
        return "None"
    text = repr(v)
    return f"{type(v).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


#: reason given to a proxy whose pass cannot run on integer (e.g. token id) inputs
def _integer_input_reasons(dtype: torch.dtype) -> dict[str, str]:
    return {"jacobian": reductions.integer_input_reason("jacob_cov", dtype),
            "synflow": reductions.integer_input_reason("synflow", dtype)}


def _weight_copies(model: nn.Module, counted: list[Counted], layer_types: LayerTypes) -> list[torch.Tensor]:
    """Private copies of the counted weights. A parametrized weight is computed on a private
    clone: its parametrization may update state on the way (spectral_norm's power iteration)."""
    if not any(_is_parametrized(c.module, c.attr) for c in counted):
        return [c.module._parameters[c.attr].detach().clone() for c in counted]
    net = clone_module(model, _main_copy)
    with torch.no_grad(), parametrize.cached():
        return [w.detach().clone() for w in _weights_of(counted_weights(net, layer_types))]


#: built-in no-pass needs that only read the weights or parameters (never the batch): with
#: these and built-in proxies alone (l2_norm, params), :func:`score_detailed` hands them
#: detached aliases of the caller's tensors instead of copies (they read and never write)
_READ_ONLY_NEEDS = frozenset({"weights", "parameters"})


def score_detailed(model: nn.Module, inputs: torch.Tensor | None, targets: torch.Tensor | None,
                   proxies: Sequence[str] | str = DEFAULT_PROXIES,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                   layer_types: LayerTypes = None,
                   per_layer: bool = False, *,
                   synflow_keep_bn: KeepBN = None,
                   seed: int | None = 0,
                   batches: Sequence[tuple[torch.Tensor, torch.Tensor | None]] | None = None,
                   _owned: bool = False) -> dict[str, ProxyResult]:
    """Score ``model`` with each proxy, in the fewest shared passes.

    Args:
        model: any ``nn.Module`` mapping inputs [N, ...] to logits [N, C]. Never modified
            (parameters and buffers, their storage, train/eval flags, requires_grad, .grad,
            hooks), even by a forward that writes its weights in place or by a proxy that
            writes ``ctx.weights``: the passes run on private copies with their own storage.
        inputs: [N, ...] batch (moved to the model's device): floating, or integer (e.g. token
            ids) when no requested proxy differentiates the input; with integer inputs
            jacob_cov and synflow give NaN with the reason. ``None`` when ``batches`` is given.
        targets: [N] int64 class indices in [0, C) (or what ``loss_fn`` takes); may be
            ``None`` when only jacob_cov / synflow are asked for.
        proxies: names from :func:`available_proxies` (one name or a sequence).
        loss_fn: ``loss_fn(logits, targets) -> scalar``; the paper's cross-entropy by default.
        layer_types: which weights count (:func:`counted_weights`). ``None`` (default): every
            weight-bearing layer (Conv1d/2d/3d, ConvTranspose*, Linear, Bilinear, Embedding,
            attention projections, RNN/LSTM/GRU weights, parametrized weights by their
            effective weight); a warning names any other parameter left out. One class or a
            tuple of classes: only those modules (the paper and :func:`score_arch` on the
            benchmark spaces: ``PAPER_LAYER_TYPES`` = (Conv2d, Linear)). Biases and
            normalisation layers never count.
        per_layer: fill ``ProxyResult.per_layer`` (counted weight name -> contribution).
        synflow_keep_bn: which BatchNorms synflow keeps (default: none, every BatchNorm
            module is bypassed): a collection of module names or ``(name, module) -> bool``.
            :func:`score_arch` passes the official NB201 rule.
        seed: the passes run under ``torch.manual_seed(seed)`` (e.g. dropout) without changing
            the caller's RNG state; ``None`` leaves the global RNG alone.
        batches: several mini-batches ``[(inputs, targets), ...]`` instead of ``inputs`` /
            ``targets`` (which are then ``None``): multi-batch needs (e.g. ``multi_grads``,
            ZiCo) read all of them; single-batch passes use the first. Without it, a
            multi-batch need splits the one batch into equal parts
            (:meth:`PassContext.mini_batches`; ZiCo: two halves).
        _owned: internal (:func:`score_arch`): ``model`` is a throwaway the main pass may
            modify, so it is not copied.

    Returns:
        ``{name: ProxyResult}`` in the order asked. Every undefined or non-finite value is NaN
        (or ±inf) with ``error`` giving the reason (docs/proxies.md, "Undefined values"); a pass
        or proxy that fails marks only the proxies that depend on it.

    Raises:
        ValueError / TypeError: bad input, named in the message (unknown proxies, a model that
        is not an nn.Module, meta tensors, uninitialised lazy modules, no counted weights,
        inputs/targets of the wrong kind, a forward or loss_fn that fails on the inputs).
    """
    specs = resolve(proxies)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    inputs, targets, extra = split_batches(inputs, targets, batches)
    # one walk of the module tree serves the meta check, the counted weights, the parameters
    # and the warning (most of a no-pass call's fixed cost on NB201's ~300 modules)
    warn = layer_types is None and not _owned
    # built-in proxies whose needs only read the weights or parameters (l2_norm, params): see read_only
    reader_only = all(spec.builtin and all(n in _READ_ONLY_NEEDS for n in spec.needs) for spec in specs)
    walk = _walk(model, layer_types, want_parameters=reader_only, want_skipped=warn)
    counted = walk.counted
    if warn:
        _warn_skipped(walk.skipped)
    device = _model_device(counted)
    plan = closure(dict.fromkeys(n for spec in specs for n in spec.needs))
    ctx = PassContext()
    integer = isinstance(inputs, torch.Tensor) and not inputs.is_floating_point() and not inputs.is_complex()
    if integer:  # token ids: the passes that need a floating input cannot run
        reasons = _integer_input_reasons(inputs.dtype)
        for need in plan:
            if need.floating_input:
                ctx.problems[need.name] = reasons.get(need.name) or reductions.integer_input_reason(
                    f"the {need.name} need", inputs.dtype)
        plan = [need for need in plan if not need.floating_input]
    main_needs = {need.name for need in plan if need.shared == SHARED_MAIN}
    need_targets = any(need.targets for need in plan)
    # synflow alone reads only the inputs' shape (its input is all ones): values unchecked
    check_values = any(need.reads_inputs for need in plan)
    _check_inputs(inputs, targets, need_targets, check_values=check_values, allow_integer=True)
    for xb, yb in extra:
        _check_inputs(xb, yb, need_targets, check_values=check_values, allow_integer=True)
    x = inputs.detach().to(device)
    t = targets.detach().to(device) if need_targets and targets is not None else None
    plugin = [need for need in plan if need.shared != SHARED_MAIN]
    # only built-in proxies and needs that never write the weights or parameters and never
    # read the batch (l2_norm, params): they may read the caller's tensors through detached aliases;
    # copying every weight, parameter and the batch was most of such a call's cost
    read_only = (not main_needs and all(spec.builtin for spec in specs)
                 and all(need.name in _READ_ONLY_NEEDS for need in plan)
                 and not walk.parametrized)
    if plugin and not read_only:  # private copies: a need or proxy writing them cannot reach the caller's tensors
        ctx.batches = tuple((xb.detach().to(device).clone(),
                             yb.detach().to(device).clone() if need_targets and yb is not None else None)
                            for xb, yb in [(inputs, targets)] + extra)
    elif plugin:
        ctx.batches = tuple((xb.detach().to(device), yb.detach().to(device) if need_targets and yb is not None
                             else None) for xb, yb in [(inputs, targets)] + extra)
    else:
        ctx.batches = ((x, t),)
    ctx.loss_fn, ctx.layer_types, ctx.seed = loss_fn, layer_types, seed
    ctx._source = model
    ctx._options["synflow_keep_bn"] = synflow_keep_bn
    ctx.copier = lambda: _private_copy(model, layer_types)

    # A proxy that needs no pass (e.g. a function of the weights alone) still sees the counted
    # weights: copies, so that writing them cannot reach the caller's model; the passes below
    # replace them with their own (private) tensors.
    ctx.layer_names = [c.name for c in counted]
    if not main_needs:
        if read_only:
            # the caller's tensors themselves: the built-in readers only read them (l2_norm under no_grad)
            ctx.weights = [c.module._parameters[c.attr] for c in counted]
            ctx._options["read_only"] = True
            ctx._options["parameters"] = walk.parameters   # the parameters need reuses this call's walk
        else:
            ctx.weights = _weight_copies(model, counted, layer_types)
    try:
        # the built-in readers draw no random number: the caller's RNG is left alone without a fork
        with contextlib.nullcontext() if read_only else _seeded(seed, device):
            if main_needs:
                net = model if _owned else clone_module(model, _main_copy)
                _main_pass(net, x, t, loss_fn, layer_types, main_needs, ctx)
                del net
            for need in plugin:
                _run_need(need, ctx)
        # built-in proxies first, so that a user proxy writing the context cannot change them
        order = sorted(range(len(specs)), key=lambda i: not specs[i].builtin)
        done = {i: finalise(specs[i], ctx, per_layer) for i in order}
        results = {specs[i].name: done[i] for i in range(len(specs))}
    finally:
        for need in plan:
            need.release(ctx)
        ctx.clear()
    return results


def split_batches(inputs: torch.Tensor | None, targets: torch.Tensor | None,
                  batches: Sequence[tuple[torch.Tensor, torch.Tensor | None]] | None
                  ) -> tuple[torch.Tensor, torch.Tensor | None, list[tuple[torch.Tensor, torch.Tensor | None]]]:
    """``(inputs, targets, further batches)`` from a call's ``inputs`` / ``targets`` / ``batches``.

    Raises:
        ValueError: ``batches`` given together with inputs/targets, empty, or not (inputs, targets) pairs.
    """
    if batches is None:
        return inputs, targets, []  # type: ignore[return-value]
    if inputs is not None or targets is not None:
        raise ValueError("batches: give either inputs/targets or batches=[(inputs, targets), ...], not both "
                         "(pass inputs=None, targets=None)")
    if isinstance(batches, (torch.Tensor, str, bytes)) or not isinstance(batches, Iterable):
        raise ValueError(f"batches must be a non-empty list of (inputs, targets) pairs, got {type(batches).__name__}")
    pairs = list(batches)
    if not pairs or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
        raise ValueError("batches must be a non-empty list of (inputs, targets) pairs")
    x0, y0 = pairs[0]
    return x0, y0, [tuple(p) for p in pairs[1:]]  # type: ignore[misc]


def _private_copy(model: nn.Module, layer_types: LayerTypes) -> nn.Module:
    """A private train-mode copy of ``model`` with no parameter requiring grad (for needs)."""
    net = clone_module(model, _main_copy)
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


#: errors a need's run may raise that mark only the proxies needing it (others are bugs in zcfast)
_NEED_FAILURES = (NeedError, RuntimeError, ValueError, TypeError, IndexError, NotImplementedError)


def _run_need(need: Need, ctx: PassContext) -> None:
    """Run a plug-in need; a failure marks it (and only it) in ``ctx.problems``."""
    if need.name in ctx.problems:
        return
    missing = [r for r in need.requires if r in ctx.problems]
    if missing:
        ctx.problems[need.name] = ctx.problems[missing[0]]
        return
    assert need.run is not None
    try:
        need.run(ctx)
    except NeedError as exc:
        ctx.problems[need.name] = str(exc)
    except _NEED_FAILURES as exc:
        ctx.problems[need.name] = f"the {need.name} need failed: {_first_line(exc)}"


def score(model: nn.Module, inputs: torch.Tensor | None, targets: torch.Tensor | None,
          proxies: Sequence[str] | str = DEFAULT_PROXIES,
          loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
          layer_types: LayerTypes = None,
          per_layer: bool = False, *,
          synflow_keep_bn: KeepBN = None,
          seed: int | None = 0,
          batches: Sequence[tuple[torch.Tensor, torch.Tensor | None]] | None = None) -> dict[str, float]:
    """``{proxy: value}``; see :func:`score_detailed` for the arguments.

    With ``per_layer=True`` the dict also holds ``"<proxy>/<counted weight name>"`` entries. A
    non-finite value is returned as is (NaN/inf) and announced with a ``RuntimeWarning`` giving
    its reason (use :func:`score_detailed` to get the reason as data).
    """
    detailed = score_detailed(model, inputs, targets, proxies, loss_fn, layer_types, per_layer,
                              synflow_keep_bn=synflow_keep_bn, seed=seed, batches=batches)
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


# ------------------------------------------------------------------------------------------
# the built-in needs of the paper's proxies (needs.py describes the mechanism)
# ------------------------------------------------------------------------------------------
for _need in (
        Need("grads", shared=SHARED_MAIN, fills=("grads",), targets=True, floating_input=False,
             description="ctx.grads: dL/dW of every counted weight (shared main pass)"),
        Need("hessian_grad", shared=SHARED_MAIN, fills=("hessian_grads",), targets=True, floating_input=False,
             description="ctx.hessian_grads: H.g of every counted weight (shared main pass, double backward)"),
        Need("fisher", shared=SHARED_MAIN, fills=("fisher_pairs", "fisher_channel_dims"), targets=True,
             floating_input=False,
             description="ctx.fisher_pairs: (output, dL/doutput) per call of every counted layer (shared main pass)"),
        Need("jacobian", shared=SHARED_MAIN, fills=("jacobian",), floating_input=True,
             description="ctx.jacobian: d(sum logits)/d inputs (shared main pass, one backward to the inputs)"),
        Need("outputs", shared=SHARED_MAIN, fills=("logits", "loss"), targets=True, floating_input=False,
             description="ctx.logits [N, C] and ctx.loss of the main forward (shared main pass)"),
        Need("synflow", run=_synflow_need, fills=("synflow_weights", "synflow_grads", "synflow_output"),
             floating_input=True, reads_inputs=False,
             description="ctx.synflow_weights / synflow_grads / synflow_output: its own float64 |theta| pass, "
                         "all-ones input")):
    register_need(_need, _builtin=True)
del _need
