"""The *cells* contract: how a network tells a proxy where its stem and cells are.

Proxies that read one feature map per cell (AZ-NAS's expressivity, progressivity and
trainability) cannot find cells by module type: a "cell" is whatever block the search space
stacks. So a network lists them itself, with one method::

    def zcfast_cells(self) -> list[tuple[str, nn.Module]]:
        # the stem, then every cell and reduction block, in the order the forward calls them
        return [("stem", self.stem)] + [(f"cells.{i}", c) for i, c in enumerate(self.cells)]

Rules (checked by :func:`model_cells` and :func:`record_cells`):

- at least two entries (a stem and one cell): the measures compare consecutive features;
- each entry is a submodule of the network (or the network itself), listed once, under a
  unique name (the qualified module name is the convention: it keys ``per_layer``);
- each listed module is called exactly once per forward, in the listed order, and returns
  one tensor (its *feature*, e.g. ``[N, C, H, W]``).

zcfast's NAS-Bench-201, NAS-Bench-101 and DARTS networks implement it (:mod:`zcfast.spaces`);
any other ``nn.Module`` can. This module sits below the spaces: it only calls the method, it
never imports a space.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from zcfast.proxies.needs import NeedError

__all__ = ["CELLS_METHOD", "CellsError", "model_cells", "record_cells"]

#: the method a network defines to list its stem and cells
CELLS_METHOD = "zcfast_cells"


class CellsError(NeedError):
    """The model does not (correctly) list its cells; the message says what to add or fix."""


class _StopForward(Exception):
    """Raised by the last cell's hook to end the forward there (the official feature extractor
    runs the stem and the cells only). Not a RuntimeError/ValueError, so no wrapper catches it."""


def model_cells(model: nn.Module, who: str = "this proxy") -> list[tuple[str, nn.Module]]:
    """The ``[(name, module), ...]`` that ``model.zcfast_cells()`` lists, checked.

    Args:
        model: any ``nn.Module``.
        who: the proxy or need asking (for the message).

    Raises:
        CellsError: no ``zcfast_cells`` method, or a list breaking the rules of the module
            docstring (fewer than two entries, a non-module, a module not inside ``model``, a
            repeated module or name).
    """
    method = getattr(model, CELLS_METHOD, None)
    if method is None or not callable(method):
        raise CellsError(
            f"{who} reads the stem output and every cell output, but {type(model).__name__} does not list its "
            f"cells: give it a method {CELLS_METHOD}(self) -> list[tuple[str, nn.Module]] returning the stem and "
            "every cell/reduction block in forward order, e.g. [('stem', self.stem), ('cells.0', self.cells[0]), ...] "
            "(zcfast's nb201, nb101 and darts networks have it; docs/proxies.md, 'The cells contract')")
    listed = method()
    try:
        cells = [(name, m) for name, m in listed]
    except (TypeError, ValueError) as exc:
        raise CellsError(f"{type(model).__name__}.{CELLS_METHOD}() must return [(name, module), ...]; "
                         f"got {type(listed).__name__}") from exc
    if len(cells) < 2:
        raise CellsError(f"{who} compares consecutive cell features, so {type(model).__name__}.{CELLS_METHOD}() must "
                         f"list at least the stem and one cell; it lists {len(cells)}")
    inside = {id(m) for m in model.modules()}
    seen_names: set[str] = set()
    seen_ids: set[int] = set()
    for name, m in cells:
        if not isinstance(name, str) or not name:
            raise CellsError(f"{type(model).__name__}.{CELLS_METHOD}(): every name must be a non-empty string, "
                             f"got {name!r}")
        if not isinstance(m, nn.Module):
            raise CellsError(f"{type(model).__name__}.{CELLS_METHOD}(): {name!r} is a {type(m).__name__}, "
                             "not an nn.Module")
        if id(m) not in inside:
            raise CellsError(f"{type(model).__name__}.{CELLS_METHOD}(): {name!r} is not a submodule of the model "
                             "(list the model's own modules, not copies)")
        if name in seen_names or id(m) in seen_ids:
            raise CellsError(f"{type(model).__name__}.{CELLS_METHOD}(): {name!r} is listed twice (a name or a "
                             "module); each cell must be listed once")
        seen_names.add(name)
        seen_ids.add(id(m))
    return cells


def record_cells(model: nn.Module, x: torch.Tensor, who: str = "this proxy"
                 ) -> list[tuple[str, torch.Tensor]]:
    """Run ``model``'s forward on ``x`` [N, ...] up to its last listed cell and return each
    listed module's output, ``[(name, feature), ...]`` in the listed order.

    The features are the tensors the forward produced (not copies, not detached: with grad
    enabled they keep their autograd graph, so a caller can differentiate one cell's output
    with respect to another's). The forward stops once the last cell returned (the layers after
    it are not run, as the official feature extractor). Every hook is removed before returning.

    Raises:
        CellsError: the listed cells are not each called once in the listed order, a cell's
            output is not a tensor, or a feature was modified in place by a later module.
        ValueError: the forward itself failed (the message names the input shape).
    """
    cells = model_cells(model, who)
    names = [n for n, _ in cells]
    found: list[tuple[str, Any, int]] = []   # (name, output, its version when produced)
    last = len(cells) - 1
    handles = []

    def hook(module: nn.Module, args: tuple, out: object, _name: str, _last: bool) -> None:
        found.append((_name, out, out._version if isinstance(out, torch.Tensor) else -1))
        if _last:
            raise _StopForward()

    for k, (name, m) in enumerate(cells):
        handles.append(m.register_forward_hook(
            lambda mod, args, out, _n=name, _l=(k == last): hook(mod, args, out, _n, _l)))
    stopped = False
    try:
        try:
            model(x)
        except _StopForward:
            stopped = True
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise ValueError(f"the model's forward failed on inputs of shape {tuple(x.shape)}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
    called = [n for n, _, _ in found]
    if not stopped or called != names:
        raise CellsError(f"{who}: the cells {type(model).__name__}.{CELLS_METHOD}() lists must each be called once "
                         f"per forward, in the listed order {names}; the forward called {called}")
    out: list[tuple[str, torch.Tensor]] = []
    for name, t, version in found:
        if not isinstance(t, torch.Tensor):
            raise CellsError(f"{who}: cell {name!r} returned a {type(t).__name__}; a cell must return one tensor")
        if t._version != version:
            raise CellsError(f"{who}: the output of cell {name!r} was modified in place by a later module (an "
                             "inplace activation?); the measures read each cell's output as it left the cell")
        out.append((name, t))
    return out
