"""A search space restricted to a given set of architectures (e.g. those a score table covers).

``SubsetSpace(space, arch_strs)`` keeps ``space``'s encoding, keys, graphs, networks and ground
truth, but samples uniformly from the subset, enumerates it, and offers only the one-edit
neighbours that are in it; ``from_choices`` rejects choice vectors outside it (REINFORCE
re-draws those). Used when a proxy table covers only part of a space.

``by="key"`` makes membership isomorphism-aware (``space.key``): an NB101 benchmark file holding
fewer architectures than the space (:func:`restrict_to_benchmark`) is searched inside it, and a
neighbour that is a relabelling of a benchmark cell counts as in it. :meth:`SubsetSpace.choice_table`
lets REINFORCE draw among the subset's choice vectors in proportion to its policy (the policy
conditioned on the subset), which rejection sampling could not do for a small subset of a
large space.
"""
from __future__ import annotations

import random
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch.nn as nn

from zcfast.spaces.base import SearchSpace, check_rng


class SubsetSpace(SearchSpace):
    """``space`` restricted to the architectures whose ``encode`` (``by="encode"``, default) or
    ``key`` (``by="key"``) is that of one of ``arch_strs`` (``space.encode`` texts)."""

    def __init__(self, space: SearchSpace, arch_strs: Iterable[str], *, by: str = "encode") -> None:
        if by not in ("encode", "key"):
            raise ValueError(f"SubsetSpace by must be 'encode' or 'key', got {by!r}")
        self.base = space
        self.name = space.name            # same ground truth / store configs as the full space
        self.num_choices = list(space.num_choices)
        self.by = by
        self._archs = [space.decode(s) for s in sorted(set(arch_strs))]
        if not self._archs:
            raise ValueError("a subset space needs at least one architecture")
        if by == "key":  # one representative per key, so sampling is uniform over distinct models
            firsts: dict[str, Any] = {}
            for a in self._archs:
                firsts.setdefault(space.key(a), a)
            self._archs = list(firsts.values())
        self._strs = {self._id(a) for a in self._archs}
        self._choices: np.ndarray | None = None
        self._near: dict[str, list[Any]] = {}   # id -> neighbours (the subset is fixed, so is the answer)

    def _id(self, arch: Any) -> str:
        return self.base.key(arch) if self.by == "key" else self.base.encode(arch)

    def __contains__(self, arch: Any) -> bool:
        return self._id(arch) in self._strs

    def __getattr__(self, name: str) -> Any:
        # what the base space offers beyond the SearchSpace methods (data_path, has_metric, ...)
        if name == "base" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def choice_table(self) -> tuple[np.ndarray, list[Any]]:
        """``(choices, archs)``: each subset architecture's ``to_choices`` vector, in one order:
        a read-only int64 array [A, D], built once (REINFORCE reads it on every draw)."""
        if self._choices is None:
            table = np.asarray([list(self.base.to_choices(a)) for a in self._archs], dtype=np.int64)
            table.setflags(write=False)
            self._choices = table
        return self._choices, self._archs

    def ground_truth_problem(self, dataset: str | None = None) -> str | None:
        probe = getattr(self.base, "ground_truth_problem", None)
        return probe(dataset) if callable(probe) else None

    def size(self) -> int:
        return len(self._archs)

    def sample(self, rng: random.Random) -> Any:
        check_rng(rng)
        return self._archs[rng.randrange(len(self._archs))]

    def enumerate(self) -> Iterator[Any]:
        return iter(self._archs)

    def neighbours(self, arch: Any) -> list[Any]:
        """The base space's one-edit neighbours that are in the subset. With ``by="key"`` (a
        benchmark smaller than its space), when none is, the subset's architectures nearest to
        ``arch`` in the padded choice encoding (fewest differing ``to_choices`` entries, other
        keys only), so mutation and the move proposal stay inside the benchmark. Memoised per
        architecture (a search asks for the same few architectures' neighbours many times)."""
        ident = self._id(arch)
        if ident not in self._near:
            self._near[ident] = self._neighbours(arch)
        return list(self._near[ident])

    def _neighbours(self, arch: Any) -> list[Any]:
        near = [n for n in self.base.neighbours(arch) if self._id(n) in self._strs]
        if near or self.by != "key" or len(self._archs) < 2:
            return near
        choices, archs = self.choice_table()
        table = np.asarray(choices, dtype=np.int64)
        dist = (table != np.asarray(self.base.to_choices(arch), dtype=np.int64)[None, :]).sum(axis=1)
        own = self.base.key(arch)
        others = [i for i in range(len(archs)) if self.base.key(archs[i]) != own]
        if not others:
            return []
        best = min(int(dist[i]) for i in others)
        return [archs[i] for i in others if int(dist[i]) == best]

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
        if self._id(arch) not in self._strs:
            raise ValueError(f"architecture {self.base.encode(arch)!r} is outside the subset")
        return arch

    def graph(self, arch: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.base.graph(arch)

    def build(self, arch: Any, num_classes: int = 10, **kwargs: Any) -> nn.Module:
        return self.base.build(arch, num_classes, **kwargs)

    def ground_truth(self, arch: Any, dataset: str = "cifar10", metric: str | None = None, **kwargs: Any) -> float:
        if metric is None:
            return self.base.ground_truth(arch, dataset, **kwargs)
        return self.base.ground_truth(arch, dataset, metric, **kwargs)


def benchmark_count(space: Any) -> int | None:
    """Architectures the space's configured benchmark file holds (``len(space.records())`` or
    ``space.benchmark_size()``), or ``None`` when the space cannot say cheaply."""
    for attr in ("benchmark_size", "records"):
        fn = getattr(space, attr, None)
        if callable(fn):
            try:
                got = fn()
            except (OSError, ValueError, KeyError):
                return None
            return got if isinstance(got, int) else len(got)
    return None


def restrict_to_benchmark(space: Any) -> Any:
    """``space`` itself when its benchmark holds every architecture of the space (or when it
    cannot say), else a :class:`SubsetSpace` (``by="key"``) of the benchmark's architectures, so
    that a search samples, mutates and proposes only architectures the oracle can look up.

    Applies to finite spaces whose benchmark is a user file (NB101: ``space.size()`` = 423,624,
    a file of the 30 shipped records holds 30); NB201's table is always complete."""
    if isinstance(space, SubsetSpace) or getattr(space, "name", None) != "nb101":
        return space
    count = benchmark_count(space)
    size = space.size()
    if count is None or size is None or count >= size:
        return space
    return SubsetSpace(space, (space.encode(a) for a in space.enumerate()), by="key")
