"""Needs: the registered plug-ins that produce what proxies read from a :class:`PassContext`.

A proxy declares the names of the needs it reads (``register_proxy(name, needs=(...))``). A
*need* says what it puts into the context and how it gets it:

- ``shared="main"``: produced by the module backend's one shared pass (one forward of a private
  train-mode copy, then the fewest backwards): the built-in ``grads``, ``hessian_grad``,
  ``fisher``, ``jacobian`` and ``outputs``. Backends that cannot run a need say so through
  their ``supports`` (see :mod:`zcfast.scoring`).
- ``run(ctx)``: any other need. It runs on what the context offers -- ``ctx.fresh_copy()`` (a
  private copy of the caller's model, train mode, nothing requiring grad), ``ctx.counted``
  style helpers, ``ctx.batches`` / ``ctx.mini_batches(k)`` -- and stores what it produced in
  ``ctx.data[name]`` (or the attributes named in ``fills``). It may raise: the proxies needing it
  then get NaN with the reason (``NeedError`` gives the reason text itself).
- ``clear(ctx)``: drops what it stored (default: ``ctx.data.pop(name)`` and every attribute in
  ``fills`` set to ``None``); the engine calls it before returning, on every path.

This module imports nothing else of zcfast, so every backend can depend on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from zcfast.proxies.context import PassContext

__all__ = ["Need", "NeedError", "register_need", "unregister_need", "get_need", "available_needs",
           "closure", "SHARED_MAIN"]

#: the ``shared`` value of the needs served by the module backend's shared main pass
SHARED_MAIN = "main"


class NeedError(RuntimeError):
    """Raised by a need's ``run`` when it cannot produce its product; the message is the reason
    the proxies that need it report (``ProxyResult.error``)."""


@dataclass(frozen=True)
class Need:
    """A registered need (see the module docstring).

    Attributes:
        name: the name proxies list in ``needs``.
        run: ``run(ctx)`` producing the need on the module backend, or ``None`` for a need of
            the shared main pass (``shared="main"``).
        requires: needs that must be produced first (run in dependency order).
        fills: the :class:`PassContext` attributes it sets (cleared by the default ``clear``);
            a ``run`` need stores its product in ``ctx.data[name]`` besides.
        clear: ``clear(ctx)``, dropping every tensor it stored; default drops ``ctx.data[name]``
            and the ``fills`` attributes.
        targets: whether it reads the targets (a call without targets is refused when a
            requested proxy needs it).
        floating_input: whether it differentiates (or otherwise needs) a floating input; with
            integer inputs such a need is marked undefined instead of run.
        batches: how many mini-batches it reads: 1, or k > 1 (a multi-batch need: given one
            batch, it reads that batch split into k equal parts, ``PassContext.mini_batches``).
        shared: ``"main"`` for the shared-pass needs, else ``None``.
        description: one line for docs and ``available_needs``.
        reads_inputs: whether it reads the input values (``False``: shapes only, e.g. synflow's
            all-ones input, or no pass at all); inputs are checked for NaN/inf only when a
            requested need reads them.
    """

    name: str
    run: Callable[["PassContext"], None] | None = None
    requires: tuple[str, ...] = ()
    fills: tuple[str, ...] = ()
    clear: Callable[["PassContext"], None] | None = None
    targets: bool = False
    floating_input: bool = False
    batches: int = 1
    shared: str | None = None
    description: str = ""
    reads_inputs: bool = True

    def release(self, ctx: "PassContext") -> None:
        """Drop what this need stored in ``ctx`` (its ``clear``, or the default)."""
        if self.clear is not None:
            self.clear(ctx)
        ctx.data.pop(self.name, None)
        for attr in self.fills:
            if hasattr(ctx, attr):
                setattr(ctx, attr, None)


_NEEDS: dict[str, Need] = {}
_BUILTIN_NEEDS: set[str] = set()


def register_need(need: Need, *, _builtin: bool = False) -> Need:
    """Register ``need`` so proxies may list its name in ``needs``.

    Raises:
        ValueError: not a :class:`Need`, an empty or already registered name, a ``requires``
            naming an unregistered need, ``batches`` < 1, or neither ``run`` nor ``shared``.
    """
    if not isinstance(need, Need):
        raise ValueError(f"need must be a zcfast.proxies.Need, got {type(need).__name__}")
    if not isinstance(need.name, str) or not need.name.strip() or "," in need.name:
        raise ValueError(f"need name must be a non-empty string without commas, got {need.name!r}")
    if need.name in _NEEDS:
        raise ValueError(f"a need named {need.name!r} is already registered")
    unknown = [r for r in need.requires if r not in _NEEDS]
    if unknown:
        raise ValueError(f"need {need.name!r}: requires unknown needs {unknown}; known needs are {list(_NEEDS)}")
    if isinstance(need.batches, bool) or not isinstance(need.batches, int) or need.batches < 1:
        raise ValueError(f"need {need.name!r}: batches must be an int >= 1, got {need.batches!r}")
    if need.run is None and need.shared != SHARED_MAIN:
        raise ValueError(f"need {need.name!r}: give run=callable (shared='main' is for the built-in "
                         "shared-pass needs)")
    if need.run is not None and not callable(need.run):
        raise ValueError(f"need {need.name!r}: run must be callable, got {type(need.run).__name__}")
    _NEEDS[need.name] = need
    if _builtin:
        _BUILTIN_NEEDS.add(need.name)
    return need


def check_removable(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a registered user need."""
    if name in _BUILTIN_NEEDS:
        raise ValueError(f"built-in need {name!r} cannot be unregistered")
    if not isinstance(name, str) or name not in _NEEDS:
        raise ValueError(f"no need named {name!r} is registered; registered: {list(_NEEDS)}")


def unregister_need(name: str) -> None:
    """Remove a user-registered need (built-in needs cannot be removed). The public
    ``zcfast.unregister_need`` (:func:`zcfast.proxies.registry.unregister_need`) also refuses a
    need a registered proxy still uses.

    Raises:
        ValueError: a built-in or unregistered name.
    """
    check_removable(name)
    del _NEEDS[name]


def get_need(name: str) -> Need:
    """The registered need ``name``.

    Raises:
        ValueError: an unregistered name (the registered ones listed).
    """
    need = _NEEDS.get(name)
    if need is None:
        raise ValueError(f"unknown need {name!r}; known needs are {list(_NEEDS)}")
    return need


def available_needs() -> list[str]:
    """Names of every registered need, built-ins first."""
    return list(_NEEDS)


def is_registered(name: str) -> bool:
    """Whether a need ``name`` is registered."""
    return name in _NEEDS


def closure(names: Iterable[str]) -> list[Need]:
    """``names`` and everything they require, in dependency order (requirements first)."""
    out: list[Need] = []
    seen: set[str] = set()

    def visit(n: str, path: Sequence[str]) -> None:
        if n in seen:
            return
        if n in path:
            raise ValueError(f"needs {list(path) + [n]} require each other in a cycle")
        need = get_need(n)
        for r in need.requires:
            visit(r, list(path) + [n])
        seen.add(n)
        out.append(need)

    for n in names:
        visit(n, [])
    return out


def describe() -> dict[str, Any]:
    """``{name: description}`` of every registered need (for docs and ``zcfast info``)."""
    return {n: need.description for n, need in _NEEDS.items()}
