"""What a proxy reads: :class:`ProxyResult` (one proxy's value for one network) and
:class:`PassContext` (what the passes produced for one network).

The bottom of :mod:`zcfast.proxies`: the registry, the need plug-ins (:mod:`zcfast.proxies.needs`)
and both backends import these two classes from here, and this module imports none of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from zcfast.data import split_batch

__all__ = ["PassContext", "ProxyResult"]


@dataclass(frozen=True)
class ProxyResult:
    """One proxy's value for one network.

    ``value`` is the paper's scalar (sum over counted layers); ``per_layer`` maps a module's
    qualified name to its contribution (filled when asked for); ``log_value`` is the natural log
    of ``value`` computed stably (synflow; ``None`` for proxies that can be negative);
    ``error`` explains a non-finite ``value`` (``None`` when the value is finite).
    """

    name: str
    value: float
    per_layer: dict[str, float] | None = None
    log_value: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the value is finite and no error was recorded."""
        return self.error is None and math.isfinite(self.value)


@dataclass
class PassContext:
    """What the passes produced for one network (see the module docstring).

    Tensors are detached. ``layer_names[i]`` names the module whose weight is ``weights[i]``;
    lists are aligned with it; a gradient is ``None`` where the loss does not depend on that
    weight. ``problems`` maps a need to a reason it could not be produced faithfully.

    For needs and proxies beyond the built-in attributes:

    - ``batches``: the scoring mini-batches ``((inputs [N, ...], targets [N] or None), ...)``,
      private copies on the model's device (writing them cannot reach the caller's tensors);
      single-batch passes use ``batches[0]``. :meth:`mini_batches` gives k of them.
    - ``data``: ``{need name: product}`` of the plug-in needs (cleared by each need).
    - :meth:`fresh_copy`: a new private copy of the scored model (train mode, nothing requires
      grad); ``model``: one such copy made on first use and kept for the call.
    - ``loss_fn``, ``layer_types``, ``seed``: the call's settings.
    """

    layer_names: list[str] = field(default_factory=list)
    weights: list[torch.Tensor] = field(default_factory=list)
    grads: list[torch.Tensor | None] | None = None
    hessian_grads: list[torch.Tensor | None] | None = None
    fisher_pairs: list[list[tuple[torch.Tensor, torch.Tensor]]] | None = None
    fisher_channel_dims: list[int] | None = None
    jacobian: torch.Tensor | None = None
    synflow_weights: list[torch.Tensor] | None = None
    synflow_grads: list[torch.Tensor | None] | None = None
    synflow_output: float | None = None
    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    problems: dict[str, str] = field(default_factory=dict)
    batches: tuple[tuple[torch.Tensor, torch.Tensor | None], ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    layer_types: Any = None
    seed: int | None = None
    copier: Callable[[], nn.Module] | None = field(default=None, repr=False)
    _model: nn.Module | None = field(default=None, repr=False)
    _source: nn.Module | None = field(default=None, repr=False)   # the caller's model: backends only
    _options: dict[str, Any] = field(default_factory=dict, repr=False)  # backend settings (synflow_keep_bn)

    def fresh_copy(self) -> nn.Module:
        """A new private copy of the scored model (its own storage, train mode, no parameter
        requiring grad): a need may modify it freely.

        Raises:
            ValueError: no model behind this context (a backend without module copies).
        """
        if self.copier is None:
            raise ValueError("this PassContext has no model to copy (the backend does not offer one)")
        return self.copier()

    @property
    def model(self) -> nn.Module:
        """A private copy of the scored model, made on first use and kept for the call."""
        if self._model is None:
            self._model = self.fresh_copy()
        return self._model

    def mini_batches(self, parts: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The mini-batches of a multi-batch need: ``batches`` when several were given, else
        the one batch split into ``parts`` equal parts of N // parts samples (the remainder
        dropped; ZiCo's two halves): :func:`zcfast.data.split_batch` with ``drop_remainder=True``.

        Raises:
            ValueError: fewer samples than ``parts``.
        """
        if len(self.batches) > 1:
            return list(self.batches)
        x, y = self.batches[0]
        if x.shape[0] < parts:
            raise ValueError(f"a batch of {x.shape[0]} samples cannot be split into {parts} mini-batches; "
                             f"pass batches=[...] or at least {parts} samples")
        return split_batch(x, y, parts, drop_remainder=True)   # the one split rule (zcfast.data)

    def clear(self) -> None:
        """Drop every tensor reference (the engine calls this before returning)."""
        for name in ("grads", "hessian_grads", "fisher_pairs", "jacobian", "synflow_weights",
                     "synflow_grads", "logits", "loss"):
            setattr(self, name, None)
        self.weights = []
        self.data.clear()
        self.batches = ()
        self._model = None
        self._source = None
        self.copier = None
