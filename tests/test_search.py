"""Search algorithms (issue #6) on a synthetic space with a known optimum."""
from __future__ import annotations

import gzip
import json
import math
import random

import numpy as np
import pytest

from zcfast.search import (ALGORITHMS, CallableOracle, ComputedProxy, Ledger, TableProxy,
                           make_proxy, propose_move, search)
from zcfast.search.common import BudgetExhausted, load_score_table, rank_order
from zcfast.search.toy import ToySpace
from zcfast.spaces.base import SearchSpace

# Small settings per family so the whole file runs in seconds on 2 cores.
FAST = {
    "random": {},
    "evolution": {"population": 16, "tournament": 4},
    "reinforce": {},
    "brp": {"hidden": 32, "train_steps": 60, "warmup_steps": 60, "lr": 3e-3},
}


@pytest.fixture(scope="module")
def toy() -> ToySpace:
    return ToySpace(decisions=5, options=4, seed=0)


class CountingOracle:
    """Benchmark-like oracle that counts how often it is really asked to train."""

    def __init__(self, space: ToySpace) -> None:
        self.space = space
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, arch: tuple[int, ...]) -> float:
        self.calls.append(arch)
        return self.space.ground_truth(arch)


def test_toy_space_is_a_search_space(toy: ToySpace) -> None:
    assert isinstance(toy, SearchSpace)
    rng = random.Random(0)
    a = toy.sample(rng)
    assert toy.decode(toy.encode(a)) == a
    assert toy.from_choices(toy.to_choices(a)) == a
    assert len(toy.neighbours(a)) == 5 * 3 and a not in toy.neighbours(a)
    best, acc = toy.optimum()
    accs = [toy.ground_truth(x) for x in toy.enumerate()]
    assert acc == max(accs) and sorted(accs)[-2] < acc     # unique optimum
    adj, feat = toy.graph(a)
    assert adj.shape == (7, 7) and feat.shape == (7, 22) and feat.sum() == 7


# ---------------------------------------------------------------------------------------------
# Each family finds the known optimum within its budget
# ---------------------------------------------------------------------------------------------

def _first_hit(result, acc: float) -> int | None:
    return next((r.step for r in result.records if r.accuracy == acc), None)


def test_random_search_exhaustive_budget_finds_optimum() -> None:
    space = ToySpace(decisions=3, options=4, seed=3)      # 64 architectures
    result = search(space, "random", budget=space.size(), seed=0)
    assert result.best_accuracy == space.optimum()[1]
    assert result.trained == space.size()                  # distinct: all of them
    assert len({r.arch_key for r in result.records}) == space.size()


@pytest.mark.parametrize("algo,budget", [("evolution", 200), ("reinforce", 200), ("brp", 60)])
def test_algorithm_finds_optimum(toy: ToySpace, algo: str, budget: int) -> None:
    best, acc = toy.optimum()
    for seed in (0, 1):
        result = search(toy, algo, budget=budget, seed=seed, **FAST[algo])
        assert result.best_accuracy == acc, (algo, seed)
        assert result.best_arch_str == toy.encode(best)
        assert result.trained <= budget


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_zero_cost_warmup_with_perfect_proxy_finds_optimum_fast(toy: ToySpace, algo: str) -> None:
    """A proxy equal to the accuracy, pool = whole space: the optimum comes almost at once."""
    best, acc = toy.optimum()
    table = toy.proxy_table(noise=0.0)
    options = dict(FAST[algo])
    budget = 40 if algo != "evolution" else 32
    result = search(toy, algo, budget=budget, seed=0, warmup=table, warmup_pool=toy.size(),
                    **options)
    hit = _first_hit(result, acc)
    assert hit is not None, algo
    if algo in ("random", "evolution"):
        assert hit == 1                                   # trained first, in proxy order
        assert result.records[0].source == "warmup"


def test_warmup_helps_on_a_noisy_proxy(toy: ToySpace) -> None:
    """Mean best accuracy after 30 trained archs: warmup (noisy proxy) > none, over 10 seeds."""
    table = toy.proxy_table(noise=3.0)
    base = [search(toy, "random", 30, seed=s).best_accuracy for s in range(10)]
    warm = [search(toy, "random", 30, seed=s, warmup=table, warmup_pool=500).best_accuracy
            for s in range(10)]
    assert np.mean(warm) > np.mean(base)


# ---------------------------------------------------------------------------------------------
# Budget accounting
# ---------------------------------------------------------------------------------------------

def test_ledger_budget_accounting(toy: ToySpace) -> None:
    oracle = CountingOracle(toy)
    ledger = Ledger(toy, CallableOracle(oracle), budget=2)
    a, b, c = (0, 0, 0, 0, 0), (1, 0, 0, 0, 0), (2, 0, 0, 0, 0)
    assert ledger.train(a, "x") == toy.ground_truth(a)
    assert ledger.used == 1 and ledger.remaining == 1
    assert ledger.train(a, "x") == toy.ground_truth(a)      # seen: free lookup
    assert ledger.used == 1 and ledger.lookups == 1 and len(oracle.calls) == 1
    ledger.train(b, "y")
    assert ledger.done and ledger.used == 2
    assert ledger.train(b, "y") == toy.ground_truth(b)      # lookups still free when exhausted
    with pytest.raises(BudgetExhausted):
        ledger.train(c, "z")
    assert [r.step for r in ledger.records] == [1, 2]
    assert [r.best_accuracy for r in ledger.records] == [
        toy.ground_truth(a), max(toy.ground_truth(a), toy.ground_truth(b))]


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_search_budget_accounting(toy: ToySpace, algo: str) -> None:
    """Warmup scoring costs nothing; each trained arch costs one; repeats are looked up."""
    oracle = CountingOracle(toy)
    table = toy.proxy_table(noise=2.0)
    budget = 48
    result = search(toy, algo, budget, seed=4, oracle=oracle, warmup=table, warmup_pool=200,
                    **FAST[algo])
    assert result.trained == len(oracle.calls)              # one oracle call per unit of budget
    assert result.trained == budget or result.stalled
    keys = [r.arch_key for r in result.records]
    assert len(set(keys)) == len(keys)                      # never trained twice
    assert len(set(oracle.calls)) == len(oracle.calls)
    assert result.proxy_evaluations >= 200                  # the pool was scored ...
    assert result.proxy_evaluations > result.trained        # ... without spending budget
    assert [r.step for r in result.records] == list(range(1, result.trained + 1))


def test_evolution_move_budget(toy: ToySpace) -> None:
    oracle = CountingOracle(toy)
    table = toy.proxy_table(noise=2.0)
    result = search(toy, "evolution", 60, seed=2, oracle=oracle, move=table,
                    population=16, tournament=4)
    assert result.trained == len(oracle.calls) <= 60
    sources = {r.source for r in result.records}
    assert sources <= {"random", "move", "move-explore"} and "move" in sources
    # every move child was scored: 15 neighbours per proposal, no budget spent on them
    assert result.proxy_evaluations >= 15 * sum(r.source == "move" for r in result.records)


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_deterministic_per_seed(toy: ToySpace, algo: str) -> None:
    table = toy.proxy_table(noise=2.0)
    kw = dict(FAST[algo], warmup=table, warmup_pool=100)
    if algo == "evolution":
        kw["move"] = table
    runs = [search(toy, algo, 40, seed=s, **kw) for s in (7, 7, 8)]
    logs = [[(r.arch_str, r.accuracy, r.source) for r in run.records] for run in runs]
    assert logs[0] == logs[1]
    assert logs[0] != logs[2]
    assert runs[0].proxy_evaluations == runs[1].proxy_evaluations


def test_search_leaves_global_rng_alone(toy: ToySpace) -> None:
    state = random.getstate(), np.random.get_state()[1].copy()
    import torch
    t = torch.get_rng_state().clone()
    search(toy, "brp", 20, seed=0, **FAST["brp"])
    search(toy, "reinforce", 20, seed=0)
    assert random.getstate() == state[0]
    assert np.array_equal(np.random.get_state()[1], state[1])
    assert torch.equal(torch.get_rng_state(), t)


# ---------------------------------------------------------------------------------------------
# Zero-cost move proposal
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("explore", [0.0, 0.25, 1.0])
def test_move_picks_proxy_best_with_stated_probability(toy: ToySpace, explore: float) -> None:
    table = toy.proxy_table(noise=2.0)
    proxy = TableProxy(toy, table)
    parent = (1, 2, 3, 0, 1)
    nbrs = toy.neighbours(parent)
    best = nbrs[int(np.argmax([table[toy.encode(n)] for n in nbrs]))]
    rng = random.Random(123)
    trials = 4000
    picks = [propose_move(toy, parent, proxy, rng, explore)[0] for _ in range(trials)]
    p_best = (1 - explore) + explore / len(nbrs)
    freq = sum(p == best for p in picks) / trials
    sigma = math.sqrt(p_best * (1 - p_best) / trials)
    assert abs(freq - p_best) <= 4 * sigma + 1e-12
    assert all(p in nbrs for p in picks)
    if explore == 1.0:   # uniform over the 15 neighbours
        counts = np.array([sum(p == n for p in picks) for n in nbrs])
        assert counts.min() > trials / len(nbrs) * 0.7


def test_rank_order_nan_last() -> None:
    assert list(rank_order(np.array([1.0, np.nan, 3.0, 3.0, -np.inf]))) == [2, 3, 0, 4, 1]


# ---------------------------------------------------------------------------------------------
# Bad input and failing trainers
# ---------------------------------------------------------------------------------------------

def test_bad_input_messages(toy: ToySpace) -> None:
    with pytest.raises(ValueError, match="unknown search algorithm 'annealing'"):
        search(toy, "annealing", 10)
    with pytest.raises(ValueError, match="unknown proxy 'synflowz'"):
        search(toy, "random", 10, warmup="synflowz")
    with pytest.raises(ValueError, match="unknown search space"):
        search("nb999", "random", 10)
    with pytest.raises(ValueError, match="budget 10 is smaller than the population of 64"):
        search(toy, "evolution", 10, warmup=toy.proxy_table())
    with pytest.raises(ValueError, match="warmup pool 20 is smaller than the population 64"):
        search(toy, "evolution", 100, warmup=toy.proxy_table(), warmup_pool=20)
    with pytest.raises(ValueError, match="smaller than the 5 predictor iterations"):
        search(toy, "brp", 3)
    with pytest.raises(ValueError, match="move proposal applies to"):
        search(toy, "random", 10, move=toy.proxy_table())
    with pytest.raises(ValueError, match="budget must be an integer >= 1"):
        search(toy, "random", 0)
    with pytest.raises(ValueError, match="unexpected keyword"):
        search(toy, "random", 10, population=3)
    with pytest.raises(ValueError, match="exploration probability"):
        search(toy, "evolution", 100, move=toy.proxy_table(), move_explore=1.5)
    with pytest.raises(ValueError, match="not in score table"):
        search(toy, "random", 5, warmup={"toy:0-0-0-0-0": 1.0}, warmup_pool=10)


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_failing_trainer_is_recorded_and_search_goes_on(toy: ToySpace, algo: str) -> None:
    calls = {"n": 0}

    def flaky(arch: tuple[int, ...]) -> float:
        calls["n"] += 1
        if calls["n"] % 5 == 1:
            raise RuntimeError("GPU fell over")
        if calls["n"] % 5 == 2:
            return float("nan")
        return toy.ground_truth(arch)

    result = search(toy, algo, 40, seed=0, oracle=flaky, **FAST[algo])
    assert result.trained == 40 or result.stalled
    errors = [r for r in result.records if r.error is not None]
    assert any("RuntimeError: GPU fell over" in r.error for r in errors)
    assert any("non-finite" in r.error for r in errors)
    assert all(math.isnan(r.accuracy) for r in errors)
    ok = [r.accuracy for r in result.records if r.error is None]
    assert result.best_accuracy == max(ok)
    blob = json.dumps(result.to_json())                    # NaN -> null, still valid JSON
    assert "NaN" not in blob and json.loads(blob)["records"][0]["accuracy"] is None


# ---------------------------------------------------------------------------------------------
# Proxy sources
# ---------------------------------------------------------------------------------------------

def test_score_table_file_roundtrip(toy: ToySpace, tmp_path) -> None:
    table = toy.proxy_table(noise=1.0)
    path = tmp_path / "toy_scores.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("index,arch_str,synflow\n")
        for i, (k, v) in enumerate(table.items()):
            fh.write(f"{i},{k},{v!r}\n")
    loaded = load_score_table(str(path))
    assert loaded == pytest.approx(table)
    proxy = make_proxy(str(path), toy)
    archs = [toy.decode(k) for k in list(table)[:5]]
    assert np.allclose(proxy.scores(archs), [table[k] for k in list(table)[:5]])
    assert proxy.evaluations == 5
    two = tmp_path / "two.csv"
    two.write_text("arch_str,a,b\ntoy:0-0-0-0-0,1,2\n")
    with pytest.raises(ValueError, match="say which one"):
        load_score_table(str(two))
    assert load_score_table(str(two), "b") == {"toy:0-0-0-0-0": 2.0}
    with pytest.raises(FileNotFoundError):
        load_score_table(str(tmp_path / "missing.csv"))


def test_computed_proxy_is_cached_in_the_store(toy: ToySpace, tmp_path) -> None:
    """A registered proxy is computed with zcfast.score_arch once per arch, then reused."""
    import zcfast
    from zcfast.store import ResultStore
    archs = [(0, 0, 0, 0, 0), (3, 1, 0, 0, 0), (1, 1, 1, 1, 1)]
    with ResultStore(tmp_path / "s.sqlite") as store:
        p1 = ComputedProxy(toy, "synflow", "cifar10", store=store)
        s1 = p1.scores(archs)
        assert p1.computed == 3
        x, y = p1.inputs()
        ref = [zcfast.score_arch(toy, a, x, y, ["synflow"], seed=42, num_classes=10)["synflow"]
               for a in archs]
        assert np.allclose(s1, ref, rtol=1e-12)
        p2 = ComputedProxy(toy, "synflow", "cifar10", store=store)
        assert np.array_equal(p2.scores(archs), s1) and p2.computed == 0
        run = store.run_id(p2.store_config())
        assert {r.arch_str for r in store.rows(run)} == {toy.encode(a) for a in archs}


# ---------------------------------------------------------------------------------------------
# Real spaces (any zcfast.spaces space; a user oracle, so no benchmark file is needed)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("space_name", ["nb201", "nb101"])
@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_families_run_on_real_spaces(space_name: str, algo: str) -> None:
    from zcfast import spaces
    sp = spaces.get(space_name)

    def oracle(arch) -> float:      # a deterministic stand-in for training
        return int(sp.key(arch)[:6], 16) % 1000 / 10

    opts = {"evolution": {"population": 6, "tournament": 3},
            "brp": {"hidden": 16, "train_steps": 5, "max_candidates": 300}}.get(algo, {})
    result = search(sp, algo, 12, seed=0, oracle=oracle, **opts)
    assert result.trained == 12
    assert result.best_accuracy == max(r.accuracy for r in result.records)
    for r in result.records:
        assert r.accuracy == oracle(sp.decode(r.arch_str))


def test_nb201_benchmark_oracle_and_warmup() -> None:
    """NB201 lookups are the shipped ground truth; warmup with a table of it is free."""
    from zcfast import spaces
    from zcfast.spaces import nb201
    sp = spaces.get("nb201")
    table = nb201.table()
    truth = dict(zip(table["arch_str"], table["cifar100_test_nats"]))
    result = search(sp, "random", 5, seed=0, dataset="cifar100", warmup=truth, warmup_pool=3000)
    assert result.trained == 5 and result.proxy_evaluations == 3000
    for r in result.records:
        assert r.accuracy == pytest.approx(truth[r.arch_str])
    assert result.best_accuracy >= 72.0        # best of 3,000 by the truth itself


def test_subset_space_neighbours_memoised_and_unchanged():
    """SubsetSpace.neighbours is memoised per architecture: the same answer as computing it anew,
    and a copy each call (a caller's edit never reaches the memo)."""
    import json
    from pathlib import Path

    from zcfast.search.subset import SubsetSpace
    from zcfast.spaces import nb101

    recs = json.loads((Path(__file__).resolve().parent / "assets" / "nb101_records_30.json").read_text())
    sp = nb101.NB101Space()
    strs = [sp.encode(sp.spec(r["module_adjacency"], r["module_operations"])) for r in recs]
    sub = SubsetSpace(sp, strs, by="key")
    fresh = SubsetSpace(sp, strs, by="key")
    for a in list(sub.enumerate())[:5]:
        first = sub.neighbours(a)
        assert first and all(n in sub for n in first)
        first.clear()
        assert [sp.encode(n) for n in sub.neighbours(a)] == [sp.encode(n) for n in fresh._neighbours(a)]
