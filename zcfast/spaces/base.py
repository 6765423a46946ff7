"""The search-space interface shared by correlate, search, scan and batched scoring.

See docs/design.md §2. Every space is a stateless (apart from lazily loaded ground-truth
tables) object; architectures (`Arch`) are hashable values owned by the space.
"""
from __future__ import annotations

import abc
import hashlib
import random
from typing import Any, Hashable, Iterator, Sequence

import numpy as np
import torch.nn as nn

Arch = Hashable


def stable_digest(text: str, length: int = 32) -> str:
    """Hex digest of ``text`` that is identical across runs and machines (never ``hash()``).

    Args:
        text: the canonical text to hash.
        length: number of hex characters kept (≤ 64).
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def check_rng(rng: Any) -> random.Random:
    """Return ``rng`` if it is a ``random.Random``; raise TypeError naming the problem otherwise."""
    if not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random instance (seeded by the caller), got {type(rng).__name__}")
    return rng


def check_num_classes(num_classes: Any) -> int:
    """Validate a classifier width: a positive int."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return int(num_classes)


class SearchSpace(abc.ABC):
    """Abstract search space (design.md §2).

    Attributes:
        name: registry name ("nb201", "nb101", "darts").
        num_choices: number of options of each decision in ``to_choices`` order.
    """

    name: str = ""
    num_choices: list[int] = []

    def size(self) -> int | None:
        """Number of architectures if the space is finite and enumerable, else None."""
        return None

    @abc.abstractmethod
    def sample(self, rng: random.Random) -> Arch:
        """A uniformly random valid architecture drawn with the caller's ``rng``."""

    def enumerate(self) -> Iterator[Arch]:
        """Lazily yield every architecture (benchmark order where one exists)."""
        raise NotImplementedError(f"search space {self.name!r} is not enumerable")

    @abc.abstractmethod
    def neighbours(self, arch: Arch) -> list[Arch]:
        """Every valid architecture one edit away from ``arch`` (never ``arch`` itself)."""

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """One random edit of ``arch``: a uniformly chosen element of ``neighbours(arch)``."""
        check_rng(rng)
        nbrs = self.neighbours(arch)
        if not nbrs:
            raise ValueError(f"architecture {self.encode(arch)!r} has no valid one-edit neighbour")
        return nbrs[rng.randrange(len(nbrs))]

    @abc.abstractmethod
    def encode(self, arch: Arch) -> str:
        """Canonical text of ``arch`` in the benchmark's own format."""

    @abc.abstractmethod
    def decode(self, text: str) -> Arch:
        """Parse ``encode``'s format; ValueError naming the problem on bad input."""

    @abc.abstractmethod
    def key(self, arch: Arch) -> str:
        """Stable, isomorphism-canonical hash of ``arch`` (hex string)."""

    @abc.abstractmethod
    def to_choices(self, arch: Arch) -> list[int]:
        """Integer decisions, ``c[i] in range(num_choices[i])``."""

    @abc.abstractmethod
    def from_choices(self, choices: Sequence[int]) -> Arch:
        """Inverse of ``to_choices``; ValueError on wrong length or out-of-range values."""

    @abc.abstractmethod
    def graph(self, arch: Arch) -> tuple[np.ndarray, np.ndarray]:
        """(adjacency [V, V] float32 0/1, op one-hot [V, K] float32) for GCN predictors."""

    @abc.abstractmethod
    def build(self, arch: Arch, num_classes: int = 10) -> nn.Module:
        """The benchmark's PyTorch network for ``arch``: input [N, 3, H, W] -> logits [N, num_classes]."""

    def ground_truth(self, arch: Arch, dataset: str = "cifar10", metric: str = "test") -> float:
        """Benchmark accuracy of ``arch``; see each space for datasets, metrics and units."""
        raise NotImplementedError(f"search space {self.name!r} has no ground truth")

    def ground_truth_problem(self, dataset: str | None = None) -> str | None:
        """Why ``ground_truth(arch, dataset)`` cannot answer here, or ``None`` if it can.

        Checked up front by the commands that need ground truth (``correlate``, ``search``
        with the benchmark oracle) through ``zcfast.options.resolve_space``, so a space or
        dataset without it is refused before any work starts, with this reason. The default
        says nothing is missing; a space without (installed) ground truth overrides it.

        Args:
            dataset: the dataset whose ground truth is needed (``None``: any).
        """
        return None

    def _check_choices(self, choices: Sequence[int]) -> list[int]:
        """Validate length and ranges of a choice vector against ``num_choices``."""
        try:
            values = [int(c) for c in choices]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name}: choices must be a sequence of ints, got {choices!r}") from exc
        if len(values) != len(self.num_choices):
            raise ValueError(f"{self.name}: expected {len(self.num_choices)} choices, got {len(values)}")
        for i, (c, n) in enumerate(zip(values, self.num_choices)):
            if not 0 <= c < n:
                raise ValueError(f"{self.name}: choice {i} = {c} out of range [0, {n})")
        return values
