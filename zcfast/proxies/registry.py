"""Proxy registry: each zero-cost proxy is a named function of a :class:`PassContext`.

A proxy declares which products of the shared passes it ``needs``; the engine
(:mod:`zcfast.proxies.engine`) runs the fewest passes that produce the union of the needs of
every requested proxy, then calls each proxy on the same context.

Needs (what the engine puts into the context):

- ``"grads"``: ``ctx.grads`` -- ∂L/∂W of the loss for every counted layer weight (one
  forward + backward of the loss, BatchNorm in training mode).
- ``"hessian_grad"``: ``ctx.hessian_grads`` -- H·g for every counted weight, where g = ∂L/∂W
  (same forward, backward with ``create_graph``, then one more backward).
- ``"fisher"``: ``ctx.fisher_pairs`` -- per counted layer, a list of (activation, ∂L/∂activation)
  pairs, one per call of the layer in the forward (same forward + backward as ``"grads"``).
- ``"jacobian"``: ``ctx.jacobian`` -- ∂(Σ logits)/∂inputs, shape of the inputs (same forward,
  one more backward to the inputs only).
- ``"synflow"``: ``ctx.synflow_weights`` / ``ctx.synflow_grads`` -- |W| in float64 and
  ∂R/∂W for R = Σ net_|θ|(ones[1, ...]) on a copy without (most) BatchNorms (its own pass).
- ``"outputs"``: ``ctx.logits`` [N, C] and ``ctx.loss`` (detached) from the main forward.

These six are built-in *needs* (:mod:`zcfast.proxies.needs`); more are registered plug-ins
(``zcfast.register_need``, the built-in ones in :mod:`zcfast.proxies.builtin_needs`), each
listed by ``zcfast.proxies.needs.available_needs()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from zcfast import ensemble as _ensemble
from zcfast.proxies import needs as _needs
from zcfast.proxies.context import PassContext, ProxyResult

#: the built-in needs of the paper's proxies (every registered need: needs.available_needs())
NEEDS: tuple[str, ...] = ("grads", "hessian_grad", "fisher", "jacobian", "synflow", "outputs")
#: The paper's six proxies in its Table 1 order: the one definition of "all" / the default set
#: used by zcfast.score, score_arch, correlate, scan, search and the CLI.
PAPER_PROXIES: tuple[str, ...] = ("grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov")


ProxyFn = Callable[[PassContext], "ProxyResult | float | tuple[float, dict[str, float]]"]


@dataclass(frozen=True)
class ProxySpec:
    """A registered proxy: its function and the pass products it needs."""

    name: str
    fn: ProxyFn
    needs: tuple[str, ...]
    builtin: bool = False


_REGISTRY: dict[str, ProxySpec] = {}
_ensemble._proxy_exists = lambda n: n in _REGISTRY   # register_ensemble refuses a proxy's name

#: names a proxy may not take, with why: the commands give them another meaning
RESERVED_NAMES: dict[str, str] = {
    "vote": "the paper's vote compares architectures; see zcfast.proxies.vote and the ensemble 'majority_vote'",
    "paper": "'paper' selects the paper's six proxies (zcfast.options.PROXY_SETS)",
    "all": "'all' selects every built-in proxy (zcfast.options.PROXY_SETS)",
    "suite-zero": "'suite-zero' selects NAS-Bench-Suite-Zero's 13 proxies (zcfast.options.PROXY_SETS)",
    "every": "'every' selects every registered proxy, user ones included (zcfast.options.PROXY_SETS)",
}


def register_proxy(name: str, needs: Sequence[str] = ("grads",), *,
                   _builtin: bool = False) -> Callable[[ProxyFn], ProxyFn]:
    """Decorator registering ``fn(ctx: PassContext)`` as proxy ``name``.

    ``fn`` returns a :class:`ProxyResult`, a float, or ``(value, per_layer dict)``.
    ``needs`` names registered needs (``zcfast.proxies.needs.available_needs()``; a user need is
    registered first with ``zcfast.register_need``). Duplicate names and unknown needs raise
    ``ValueError``.

    Example::

        @zcfast.register_proxy("l2_grad_sq", needs=("grads",))
        def l2_grad_sq(ctx):
            return sum(float((g * g).sum()) for g in ctx.grads if g is not None)
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"proxy name must be a non-empty string, got {name!r}")
    if name in RESERVED_NAMES:
        raise ValueError(f"proxy name {name!r} is reserved ({RESERVED_NAMES[name]}); choose another name")
    if _ensemble.is_ensemble(name):
        raise ValueError(f"proxy name {name!r} is a registered ensemble (zcfast.ensemble); choose another name")
    if "," in name or name != name.strip():
        raise ValueError(f"proxy name {name!r} may not contain commas or surrounding spaces "
                         "(the command line splits --proxies on commas)")
    if isinstance(needs, str):
        needs = (needs,)
    if needs is None or not isinstance(needs, Iterable):
        raise ValueError(f"proxy {name!r}: needs must be a sequence of names from {_needs.available_needs()}, "
                         f"got {needs!r}")
    needs_t = tuple(needs)
    bad = [n for n in needs_t if not isinstance(n, str)]
    if bad:
        raise ValueError(f"proxy {name!r}: needs must be strings from {_needs.available_needs()}, got {bad!r}")
    unknown = [n for n in needs_t if not _needs.is_registered(n)]
    if unknown:
        raise ValueError(f"proxy {name!r}: unknown needs {unknown}; known needs are {_needs.available_needs()}")

    def decorator(fn: ProxyFn) -> ProxyFn:
        if name in _REGISTRY:
            raise ValueError(f"a proxy named {name!r} is already registered")
        if not callable(fn):
            raise TypeError(f"proxy {name!r}: expected a callable, got {type(fn).__name__}")
        _REGISTRY[name] = ProxySpec(name, fn, needs_t, _builtin)
        return fn

    return decorator


def unregister_proxy(name: str) -> None:
    """Remove a user-registered proxy (built-in proxies cannot be removed)."""
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is not None and spec.builtin:
        raise ValueError(f"built-in proxy {name!r} cannot be unregistered")
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"no proxy named {name!r} is registered")
    del _REGISTRY[name]


def available_proxies() -> list[str]:
    """Names of every registered proxy, built-ins first in the paper's order (the built-ins are
    registered by importing :mod:`zcfast.proxies`, which every import of this module does)."""
    return list(_REGISTRY)


def resolve(proxies: Iterable[str] | str) -> list[ProxySpec]:
    """Look up proxy names; unknown, duplicate or no names raise ``ValueError``."""
    if isinstance(proxies, str):
        proxies = (proxies,)
    if proxies is None or not isinstance(proxies, Iterable):
        raise ValueError(f"proxies must be a proxy name or a sequence of names from {list(_REGISTRY)}, "
                         f"got {proxies!r}")
    names = list(proxies)
    if not names:
        raise ValueError("no proxies requested")
    specs = []
    seen: set[str] = set()
    for n in names:
        if n == "vote":
            raise ValueError(
                "'vote' is not a per-network proxy: it compares architectures. Score "
                "('synflow', 'jacob_cov', 'snip') and use zcfast.proxies.vote.pairwise_vote "
                "(the paper's evaluation metric), or the ensemble 'majority_vote' (zcfast.ensemble: "
                "--warmup/--move of search, scan's ranking)")
        if not isinstance(n, str):
            raise ValueError(f"proxy names must be strings, got {n!r}")
        if n not in _REGISTRY:
            import difflib

            close = difflib.get_close_matches(n, list(_REGISTRY), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown proxy {n!r}{hint}; available: {', '.join(_REGISTRY)}")
        if n in seen:
            raise ValueError(f"proxy {n!r} requested twice")
        seen.add(n)
        specs.append(_REGISTRY[n])
    return specs


def unregister_need(name: str) -> None:
    """Remove a user-registered need (:func:`zcfast.proxies.needs.unregister_need`), refused
    while a registered proxy still needs it.

    Raises:
        ValueError: a built-in or unregistered need, or one a registered proxy needs (named).
    """
    _needs.check_removable(name)
    users = [spec.name for spec in _REGISTRY.values() if name in spec.needs]
    if users:
        raise ValueError(f"need {name!r} is needed by registered proxies {users}; unregister them first")
    _needs.unregister_need(name)
