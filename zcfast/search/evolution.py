"""Aging (regularised) evolution with tournament selection, with zero-cost warmup and moves.

Real et al. (2019) aging evolution as the paper ran it on NAS-Bench-201 (population 64,
tournament 10; docs/search.md):

1. initial population: ``population`` random architectures, each trained; with zero-cost
   warmup, the proxy's best ``population`` of a pool of ``warmup_pool`` random architectures;
2. each cycle: draw ``tournament`` members of the population without replacement; the most
   accurate is the parent; the child is a one-edit mutation of the parent; train the child,
   append it and remove the oldest member.

Zero-cost move proposal: among *all* one-edit neighbours of the parent, train the one the proxy
ranks best, except with probability ``move_explore`` (paper: 0.25) a uniformly random
neighbour.
"""
from __future__ import annotations

import collections
import random as _random
from typing import Any, Callable


from .common import (DEFAULT_MOVE_EXPLORE, Arch, Ledger, Oracle, ProxySource, SearchResult,
                     SearchStalled, TrainedRecord, fitness, finish, make_rngs, rank_order,
                     warmup_ranking)

DEFAULT_POPULATION = 64
DEFAULT_TOURNAMENT = 10
DEFAULT_WARMUP_POOL = 3000


def propose_move(space: Any, parent: Arch, proxy: ProxySource, rng: _random.Random,
                 explore: float = DEFAULT_MOVE_EXPLORE) -> tuple[Arch, str, float | None]:
    """Zero-cost move: the proxy's best one-edit neighbour of ``parent``.

    With probability ``explore`` a uniformly random neighbour instead. Returns
    ``(child, kind, proxy_score)`` with ``kind`` in ``{"move", "move-explore"}``.
    """
    if not 0.0 <= explore <= 1.0:
        raise ValueError(f"move exploration probability must be in [0, 1], got {explore}")
    neighbours = space.neighbours(parent)
    if not neighbours:
        raise ValueError(f"architecture {space.encode(parent)!r} has no neighbours")
    if rng.random() < explore:
        return neighbours[rng.randrange(len(neighbours))], "move-explore", None
    scores = proxy.scores(neighbours)
    best = int(rank_order(scores)[0])
    return neighbours[best], "move", float(scores[best])


def evolution(space: Any, oracle: Oracle, budget: int, *, seed: int = 0,
              population: int = DEFAULT_POPULATION, tournament: int = DEFAULT_TOURNAMENT,
              warmup: ProxySource | None = None, warmup_pool: int = DEFAULT_WARMUP_POOL,
              move: ProxySource | None = None, move_explore: float = DEFAULT_MOVE_EXPLORE,
              on_train: Callable[[TrainedRecord], None] | None = None) -> SearchResult:
    """Aging evolution over ``space`` with ``budget`` trained architectures -> SearchResult."""
    if population < 2:
        raise ValueError(f"population must be at least 2, got {population}")
    if not 1 <= tournament <= population:
        raise ValueError(f"tournament size must be in [1, population={population}], got {tournament}")
    if budget < population:
        what = "the zero-cost warmup seeds" if warmup is not None else "the initial population needs"
        raise ValueError(f"budget {budget} is smaller than the population of {population} "
                         f"trained architectures {what}")
    if warmup is not None and warmup_pool < population:
        raise ValueError(f"warmup pool {warmup_pool} is smaller than the population {population} "
                         "it must seed")
    if not 0.0 <= move_explore <= 1.0:
        raise ValueError(f"move exploration probability must be in [0, 1], got {move_explore}")
    rng, _ = make_rngs(seed)
    ledger = Ledger(space, oracle, budget, on_train)
    config = {"population": population, "tournament": tournament,
              "warmup": getattr(warmup, "name", None),
              "warmup_pool": warmup_pool if warmup is not None else None,
              "move": getattr(move, "name", None),
              "move_explore": move_explore if move is not None else None}
    pop: collections.deque[tuple[Arch, float]] = collections.deque()
    stalled = False
    try:
        if warmup is not None:
            ranked, scores = warmup_ranking(space, warmup, warmup_pool, rng)
            for arch, score in zip(ranked[:population], scores[:population]):
                pop.append((arch, ledger.train(arch, "warmup", float(score))))
        else:
            while len(pop) < population and not ledger.done:
                arch = space.sample(rng)
                pop.append((arch, ledger.train(arch, "random")))
        while not ledger.done:
            members = rng.sample(range(len(pop)), tournament)
            parent = max((pop[i] for i in members), key=lambda m: fitness(m[1]))[0]
            if move is not None:
                child, kind, score = propose_move(space, parent, move, rng, move_explore)
            else:
                child, kind, score = space.mutate(parent, rng), "mutation", None
            pop.append((child, ledger.train(child, kind, score)))
            pop.popleft()
    except SearchStalled:
        stalled = True
    return finish("evolution", seed, ledger, [warmup, move], config, stalled)
