"""A small synthetic search space with a known optimum, for tests and examples.

``ToySpace(decisions=D, options=C)``: an architecture is a tuple of D ints in ``range(C)``.
Its "accuracy" is a fixed function of the choices: an additive part plus a pairwise
interaction between neighbouring decisions, both drawn once from ``seed``::

    acc(a) = 50 + 40 * (Σ_d W[d, a_d] + 0.3 * Σ_d U[d, a_d, a_{d+1}]) / scale

so the landscape is not separable but the optimum (found by enumeration, :meth:`optimum`) is
unique with overwhelming probability. :meth:`proxy_table` gives a noisy, correlated proxy.
"""
from __future__ import annotations

import itertools
import random
from typing import Iterator, Sequence

import numpy as np
import torch.nn as nn

from zcfast.spaces.base import SearchSpace, check_num_classes, check_rng, stable_digest

ToyArch = tuple[int, ...]


class ToySpace(SearchSpace):
    """Synthetic space of ``options ** decisions`` architectures with a known optimum."""

    name = "toy"

    def __init__(self, decisions: int = 4, options: int = 4, seed: int = 0) -> None:
        if decisions < 1 or options < 2:
            raise ValueError(f"toy space needs >= 1 decision and >= 2 options, "
                             f"got {decisions}, {options}")
        self.decisions = decisions
        self.options = options
        self.num_choices = [options] * decisions
        rng = np.random.default_rng(seed)
        self._w = rng.random((decisions, options))
        self._u = rng.random((max(decisions - 1, 0), options, options))
        grid = np.array(list(itertools.product(range(options), repeat=decisions)), dtype=np.int64)
        raw = self._w[np.arange(decisions), grid].sum(axis=1)
        if decisions > 1:
            d = np.arange(decisions - 1)
            raw = raw + 0.3 * self._u[d, grid[:, :-1], grid[:, 1:]].sum(axis=1)
        lo, hi = raw.min(), raw.max()
        acc = 50.0 + 40.0 * (raw - lo) / (hi - lo)
        self._acc = {tuple(int(x) for x in row): float(a) for row, a in zip(grid, acc)}

    # -- SearchSpace ------------------------------------------------------------------------
    def size(self) -> int:
        return self.options ** self.decisions

    def sample(self, rng: random.Random) -> ToyArch:
        check_rng(rng)
        return tuple(rng.randrange(self.options) for _ in range(self.decisions))

    def enumerate(self) -> Iterator[ToyArch]:
        return iter(itertools.product(range(self.options), repeat=self.decisions))

    def neighbours(self, arch: ToyArch) -> list[ToyArch]:
        a = self._check(arch)
        return [a[:d] + (c,) + a[d + 1:] for d in range(self.decisions)
                for c in range(self.options) if c != a[d]]

    def encode(self, arch: ToyArch) -> str:
        return "toy:" + "-".join(str(c) for c in self._check(arch))

    def decode(self, text: str) -> ToyArch:
        if not isinstance(text, str) or not text.startswith("toy:"):
            raise ValueError(f"not a toy architecture string: {text!r}")
        try:
            return self._check(tuple(int(x) for x in text[4:].split("-")))
        except ValueError as exc:
            raise ValueError(f"bad toy architecture string {text!r}: {exc}") from exc

    def key(self, arch: ToyArch) -> str:
        return stable_digest(self.encode(arch))

    def to_choices(self, arch: ToyArch) -> list[int]:
        return list(self._check(arch))

    def from_choices(self, choices: Sequence[int]) -> ToyArch:
        return tuple(self._check_choices(choices))

    def graph(self, arch: ToyArch) -> tuple[np.ndarray, np.ndarray]:
        """Chain input -> decision 0 -> ... -> output: adjacency [D+2, D+2], one-hot [D+2, D*C+2]."""
        a = self._check(arch)
        v = self.decisions + 2
        adj = np.zeros((v, v), dtype=np.float32)
        adj[np.arange(v - 1), np.arange(1, v)] = 1.0
        feat = np.zeros((v, self.decisions * self.options + 2), dtype=np.float32)
        feat[0, -2] = 1.0
        feat[-1, -1] = 1.0
        for d, c in enumerate(a):
            feat[d + 1, d * self.options + c] = 1.0
        return adj, feat

    def build(self, arch: ToyArch, num_classes: int = 10) -> nn.Module:
        """A tiny CNN whose width follows the first decision: [N, 3, H, W] -> [N, num_classes]."""
        a = self._check(arch)
        num_classes = check_num_classes(num_classes)
        width = 2 + a[0]
        return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def ground_truth(self, arch: ToyArch, dataset: str = "cifar10", metric: str = "test") -> float:
        return self._acc[self._check(arch)]

    # -- helpers ----------------------------------------------------------------------------
    def optimum(self) -> tuple[ToyArch, float]:
        """The best architecture and its accuracy (by enumeration)."""
        arch = max(self._acc, key=self._acc.__getitem__)
        return arch, self._acc[arch]

    def proxy_table(self, noise: float = 5.0, seed: int = 1) -> dict[str, float]:
        """``encode(arch) -> accuracy + N(0, noise²)``: a correlated zero-cost stand-in."""
        rng = np.random.default_rng(seed)
        archs = sorted(self._acc)
        eps = rng.normal(0.0, noise, len(archs))
        return {self.encode(a): self._acc[a] + float(e) for a, e in zip(archs, eps)}

    def _check(self, arch: object) -> ToyArch:
        if not isinstance(arch, tuple) or len(arch) != self.decisions or not all(
                isinstance(c, (int, np.integer)) and 0 <= c < self.options for c in arch):
            raise ValueError(f"not a toy architecture of {self.decisions} choices in "
                             f"range({self.options}): {arch!r}")
        return tuple(int(c) for c in arch)
