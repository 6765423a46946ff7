"""Random search, optionally with zero-cost warmup.

Without warmup: train distinct uniformly random architectures until the budget is used.
With warmup: score a pool of ``warmup_pool`` random architectures with the proxy (no training
budget) and train them in proxy order, best first; random sampling continues if the budget
outlasts the pool (the paper's "random search + warmup": the first picks come from the pool
in proxy order).
"""
from __future__ import annotations

from typing import Any, Callable

from .common import (Ledger, Oracle, ProxySource, SearchResult, SearchStalled, TrainedRecord,
                     finish, make_rngs, warmup_ranking)

DEFAULT_WARMUP_POOL = 3000


def random_search(space: Any, oracle: Oracle, budget: int, *, seed: int = 0,
                  warmup: ProxySource | None = None, warmup_pool: int = DEFAULT_WARMUP_POOL,
                  on_train: Callable[[TrainedRecord], None] | None = None) -> SearchResult:
    """Random search over ``space`` with ``budget`` trained architectures.

    Returns a :class:`SearchResult` whose ``records`` list every trained architecture in order.
    """
    rng, _ = make_rngs(seed)
    ledger = Ledger(space, oracle, budget, on_train)
    config = {"warmup": getattr(warmup, "name", None),
              "warmup_pool": warmup_pool if warmup is not None else None}
    stalled = False
    try:
        if warmup is not None:
            ranked, scores = warmup_ranking(space, warmup, warmup_pool, rng)
            for arch, score in zip(ranked, scores):
                if ledger.done:
                    break
                ledger.train(arch, "warmup", float(score))
        while not ledger.done:
            # An already-trained draw is a free lookup (and counts towards the stall guard).
            ledger.train(space.sample(rng), "random")
    except SearchStalled:
        stalled = True
    return finish("random", seed, ledger, [warmup], config, stalled)
