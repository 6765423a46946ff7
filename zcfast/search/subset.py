"""A search space restricted to a given set of architectures (e.g. those a score table covers).

``SubsetSpace(space, arch_strs)`` keeps ``space``'s encoding, keys, graphs, networks and ground
truth, but samples uniformly from the subset, enumerates it, and offers only the one-edit
neighbours that are in it; ``from_choices`` rejects choice vectors outside it (REINFORCE
re-draws those). Used when a proxy table covers only part of a space.
"""
from __future__ import annotations

import random
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch.nn as nn

from zcfast.spaces.base import SearchSpace, check_rng


class SubsetSpace(SearchSpace):
    """``space`` restricted to the architectures whose ``encode`` is in ``arch_strs``."""

    def __init__(self, space: SearchSpace, arch_strs: Iterable[str]) -> None:
        self.base = space
        self.name = space.name            # same ground truth / store configs as the full space
        self.num_choices = list(space.num_choices)
        self._archs = [space.decode(s) for s in sorted(set(arch_strs))]
        if not self._archs:
            raise ValueError("a subset space needs at least one architecture")
        self._strs = {space.encode(a) for a in self._archs}

    def __contains__(self, arch: Any) -> bool:
        return self.base.encode(arch) in self._strs

    def size(self) -> int:
        return len(self._archs)

    def sample(self, rng: random.Random) -> Any:
        check_rng(rng)
        return self._archs[rng.randrange(len(self._archs))]

    def enumerate(self) -> Iterator[Any]:
        return iter(self._archs)

    def neighbours(self, arch: Any) -> list[Any]:
        return [n for n in self.base.neighbours(arch) if self.base.encode(n) in self._strs]

    def encode(self, arch: Any) -> str:
        return self.base.encode(arch)

    def decode(self, text: str) -> Any:
        return self.base.decode(text)

    def key(self, arch: Any) -> str:
        return self.base.key(arch)

    def to_choices(self, arch: Any) -> list[int]:
        return self.base.to_choices(arch)

    def from_choices(self, choices: Sequence[int]) -> Any:
        arch = self.base.from_choices(choices)
        if self.base.encode(arch) not in self._strs:
            raise ValueError(f"architecture {self.base.encode(arch)!r} is outside the subset")
        return arch

    def graph(self, arch: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.base.graph(arch)

    def build(self, arch: Any, num_classes: int = 10) -> nn.Module:
        return self.base.build(arch, num_classes)

    def ground_truth(self, arch: Any, dataset: str = "cifar10", metric: str = "test") -> float:
        return self.base.ground_truth(arch, dataset, metric)
