"""NAS search with zero-cost warmup and move proposal (issue #6; docs/search.md).

Four families over any :class:`zcfast.spaces.SearchSpace`, with a budget counted in trained
architectures:

- ``random``: random search (warmup: train the proxy's best of a pool first);
- ``evolution``: aging evolution with tournament selection (warmup: seed the population with
  the proxy's best; move: train the proxy's best neighbour of the parent);
- ``reinforce``: REINFORCE over the space's choices with a moving-average baseline (warmup:
  pre-train the policy on the proxy's best);
- ``brp``: binary-relation GCN predictor, trained iteratively (warmup: pre-train the predictor
  on proxy rankings).

Entry point::

    result = zcfast.search.search(space, "evolution", budget=100, seed=0,
                                  dataset="cifar10", warmup="synflow", warmup_pool=3000,
                                  move="synflow")
    result.records        # every trained architecture in order (JSON: result.to_json())
    result.curve()        # best accuracy after each trained architecture [budget]
"""
from __future__ import annotations

from typing import Any, Callable

from .brp import brp
from .common import (BenchmarkOracle, CallableOracle, ComputedProxy, Ledger, Oracle,
                     ProxySource, SearchResult, TableOracle, TableProxy, TrainedRecord,
                     load_score_table, make_oracle, make_proxy)
from .evolution import evolution, propose_move
from .random import random_search
from .reinforce import reinforce

ALGORITHMS: dict[str, Callable[..., SearchResult]] = {
    "random": random_search,
    "evolution": evolution,
    "reinforce": reinforce,
    "brp": brp,
}
_ALIASES = {"rs": "random", "ae": "evolution", "rea": "evolution", "aging-evolution": "evolution",
            "rl": "reinforce", "bp": "brp", "brp-nas": "brp", "predictor": "brp"}
#: Families that accept a zero-cost move proposal.
MOVE_ALGORITHMS = ("evolution",)


def available() -> list[str]:
    """Algorithm names accepted by :func:`search`."""
    return sorted(ALGORITHMS)


def resolve_algo(name: str) -> str:
    """Canonical algorithm name; unknown -> ValueError listing the available ones."""
    if not isinstance(name, str):
        raise ValueError(f"algorithm must be a name, got {name!r}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in ALGORITHMS:
        raise ValueError(f"unknown search algorithm {name!r}; available: {available()}")
    return key


def resolve_search_space(space: Any, *, ground_truth_for: str | None = None,
                         dataset: str | None = None, benchmark: Any = None) -> Any:
    """:func:`zcfast.options.resolve_space`, plus ``"toy"`` (:class:`zcfast.search.toy.ToySpace`,
    a synthetic space with its own accuracies, for demos and tests).

    ``benchmark`` (``--benchmark PATH``) configures the space's benchmark file. With the
    benchmark lookup (``ground_truth_for`` given), an NB101 benchmark that holds fewer
    architectures than the space is searched inside it (:func:`zcfast.search.subset.restrict_to_benchmark`):
    samples, mutations, moves and REINFORCE draws are all benchmark architectures."""
    from zcfast import options

    if isinstance(space, str) and space.strip().lower() == "toy":
        from .toy import ToySpace
        space = ToySpace()
    try:
        sp = options.resolve_space(space, ground_truth_for=ground_truth_for, dataset=dataset,
                                   benchmark=benchmark)
    except ValueError as exc:
        if isinstance(space, str) and str(exc).startswith("unknown search space"):
            raise ValueError(f"{exc} (or toy, a synthetic demo space)") from None
        raise
    if ground_truth_for is not None:
        from .subset import restrict_to_benchmark

        sp = restrict_to_benchmark(sp)
    return sp


def search(space: Any, algo: str, budget: int, *, seed: int = 0,
           oracle: Oracle | Callable[[Any], float] | None = None, dataset: str = "cifar10",
           metric: str | None = None, warmup: Any = None, warmup_pool: int | None = None,
           move: Any = None, move_explore: float | None = None, store: Any = None,
           proxy_seed: int = 42, proxy_column: str | None = None,
           on_train: Callable[[TrainedRecord], None] | None = None, n_batches: int = 1,
           benchmark: Any = None, **options: Any) -> SearchResult:
    """Run one search.

    Args:
        space: a SearchSpace or its name (``zcfast.spaces.get``, or ``"toy"``); with the
            benchmark oracle (``oracle=None``) it must have ground truth for ``dataset``
            (``space.ground_truth_problem``), else ``ValueError`` with the reason.
        algo: ``random`` | ``evolution`` | ``reinforce`` | ``brp`` (aliases: rs, ae, rl, bp).
        budget: number of architectures the oracle may train.
        seed: the run's seed; a run is deterministic given it.
        oracle: an :class:`Oracle` or callable ``arch -> accuracy``; default the benchmark
            lookup ``space.ground_truth(arch, dataset, metric)``.
        warmup / move: proxy specs for :func:`make_proxy` (registered proxy name, score-table
            path, mapping or ProxySource); ``None`` disables them. ``move`` only applies to
            evolution.
        warmup_pool: architectures scored by the warmup (default per family: 3,000; brp: 256 on
            NB201, 512 on NB101).
        store: a ``zcfast.store.ResultStore`` caching computed proxy scores.
        n_batches: mini-batches of a computed warmup / move proxy (``--batches``; default 1):
            ``zcfast.data.paper_batches(dataset, 64, 42, n_batches)``, all read by multi-batch
            proxies (``zico``), the first by the others; one batch is the paper's. Keyed in the
            store as ``zcfast correlate --batches`` keys its runs, so the two share scores.
        benchmark: the benchmark file of the oracle (``--benchmark``: NB101 tfrecord / table /
            records, NB201 ``.pth`` / NATS folder); an NB101 file smaller than the space is
            searched inside (:func:`resolve_search_space`).
        options: family-specific options (population, tournament, lr, hidden, ...).
    """
    from zcfast import options as zopts

    # the one front door: every name is resolved before any work starts
    name = resolve_algo(algo)
    zopts.check_count(budget, "budget")
    dataset = zopts.resolve_dataset(dataset)
    # the benchmark lookup needs ground truth; a user oracle (trainer) does not
    space = resolve_search_space(space, ground_truth_for="search" if oracle is None else None,
                                 dataset=dataset, benchmark=benchmark)
    if move is not None and name not in MOVE_ALGORITHMS:
        raise ValueError(f"zero-cost move proposal applies to {list(MOVE_ALGORITHMS)}, not {name!r}")
    zopts.check_count(n_batches, "n_batches (--batches)")
    warm = make_proxy(warmup, space, dataset, store, proxy_seed, proxy_column, option="warmup",
                      n_batches=n_batches)
    mv = warm if (move is not None and move == warmup and warm is not None) else \
        make_proxy(move, space, dataset, store, proxy_seed, proxy_column, option="move", n_batches=n_batches)
    kwargs: dict[str, Any] = dict(options)
    if warm is not None:
        kwargs["warmup"] = warm
        if warmup_pool is not None:
            kwargs["warmup_pool"] = warmup_pool
    elif warmup_pool is not None:
        kwargs["warmup_pool"] = warmup_pool   # harmless without warmup; recorded nowhere
    if mv is not None:
        kwargs["move"] = mv
        if move_explore is not None:
            kwargs["move_explore"] = move_explore
    try:
        fn = ALGORITHMS[name]
        result = fn(space, make_oracle(space, oracle, dataset, metric), budget, seed=seed,
                    on_train=on_train, **kwargs)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ValueError(f"{name}: {exc}") from exc
        raise
    result.config.update({"space": space.name, "dataset": dataset, "metric": metric})
    return result


__all__ = ["ALGORITHMS", "BenchmarkOracle", "CallableOracle", "ComputedProxy", "Ledger",
           "MOVE_ALGORITHMS", "Oracle", "ProxySource", "SearchResult", "TableOracle", "TableProxy",
           "TrainedRecord", "available", "brp", "evolution", "load_score_table", "make_oracle",
           "make_proxy", "propose_move", "random_search", "reinforce", "resolve_algo",
           "resolve_search_space", "search"]
