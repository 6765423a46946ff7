"""zcfast.ensemble: rank aggregation against hand computations and restated official formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest

from zcfast import ensemble, options
from zcfast.ensemble import Ensemble, aggregate, expand


def _avg_rank(x: list[float]) -> np.ndarray:
    """Independent 1-based average ranks (O(n^2)): rank = #less + (#equal + 1) / 2."""
    a = np.asarray(x, dtype=float)
    return np.array([(a < v).sum() + ((a == v).sum() + 1) / 2.0 for v in a])


def _worst(x: list[float], sign: int = 1) -> list[float]:
    return [sign * v if math.isfinite(sign * v) else -1e300 for v in x]


@pytest.fixture
def user():
    made: list[str] = []

    def make(*args, **kw) -> Ensemble:
        ens = ensemble.register_ensemble(Ensemble(*args, **kw))
        made.append(ens.name)
        return ens

    yield make
    for n in made:
        ensemble.unregister_ensemble(n)


def test_builtins_definitions() -> None:
    te = ensemble.get_ensemble("te_nas")
    assert (te.members, te.signs, te.method) == (("ntk_cond", "linear_regions"), (-1, 1), "rank_sum")
    az = ensemble.get_ensemble("az_nas")
    assert az.members == ("az_expressivity", "az_progressivity", "az_trainability", "az_complexity")
    assert (az.signs, az.method) == ((1, 1, 1, 1), "log_rank")
    mv = ensemble.get_ensemble("majority_vote")
    assert (mv.members, mv.method) == (("synflow", "jacob_cov", "snip"), "vote")
    assert {"te_nas", "az_nas", "majority_vote"} <= set(ensemble.available_ensembles())


def test_te_nas_hand() -> None:
    # -kappa = [-3, -1, worst, -1] -> ranks [2, 3.5, 1, 3.5]; regions [5, 5, 9, 1] -> [2.5, 2.5, 4, 1]
    got = aggregate("te_nas", {"ntk_cond": [3.0, 1.0, math.nan, 1.0], "linear_regions": [5, 5, 9, 1]})
    np.testing.assert_allclose(got, [4.5, 6.0, 5.0, 4.5])


def test_te_nas_official_restated() -> None:
    # AZ-NAS tss_general.ipynb te_nas branch: sum of stats.rankdata over {ntk: -cond, RN: regions}
    rng = np.random.default_rng(0)
    cond = rng.uniform(1, 100, 30)
    cond[[3, 7]] = cond[5]                      # ties
    regions = rng.integers(1, 6, 30).astype(float)
    want = _avg_rank(list(-cond)) + _avg_rank(list(regions))
    np.testing.assert_allclose(aggregate("te_nas", {"ntk_cond": cond, "linear_regions": regions}), want)


def test_az_nas_official_restated() -> None:
    # AZ-NAS: rank_agg = sum_k log(stats.rankdata(score_k) / l), best = argmax
    rng = np.random.default_rng(1)
    n = 25
    cols = {m: rng.normal(size=n).round(1) for m in ensemble.get_ensemble("az_nas").members}
    cols["az_trainability"][:3] = -math.inf     # official: an unchanged cell gives -inf, ranked lowest
    want = sum(np.log(_avg_rank(list(np.where(np.isinf(c), -1e300, c))) / n) for c in cols.values())
    got = aggregate("az_nas", cols)
    np.testing.assert_allclose(got, want)
    assert np.isfinite(got).all() and got.max() <= 0.0


def test_nan_ranked_worst_and_tied(user) -> None:
    ens = user("t_mean", ("a", "b"), (1, -1), "mean_rank")
    a = [1.0, math.nan, 3.0, math.inf, 2.0]
    b = [5.0, 1.0, math.nan, 0.0, 5.0]
    ra, rb = _avg_rank(_worst(a)), _avg_rank(_worst(b, -1))
    np.testing.assert_allclose(ensemble.member_ranks(ens, {"a": a, "b": b}), [ra, rb])
    assert ra[1] == ra[3] == 1.5                 # NaN and +inf: both worst, tied
    np.testing.assert_allclose(aggregate(ens, {"a": a, "b": b}), ((ra - 1) / 4 + (rb - 1) / 4) / 2)


def test_each_method_hand(user) -> None:
    s = {"a": [1.0, 2.0, 3.0], "b": [3.0, 1.0, 2.0]}
    ra, rb = np.array([1, 2, 3.0]), np.array([3, 1, 2.0])
    user("t_sum", ("a", "b"), (1, 1), "rank_sum")
    user("t_log", ("a", "b"), (1, 1), "log_rank")
    user("t_neg", ("a", "b"), (-1, 1), "rank_sum")
    np.testing.assert_allclose(aggregate("t_sum", s), ra + rb)
    np.testing.assert_allclose(aggregate("t_log", s), np.log(ra / 3) + np.log(rb / 3))
    np.testing.assert_allclose(aggregate("t_neg", s), (4 - ra) + rb)
    one = user("t_one", ("a",), (1,), "mean_rank")
    np.testing.assert_allclose(aggregate(one, {"a": [7.0]}), [1.0])


def test_majority_vote_hand() -> None:
    # arch0 vs 1: synflow 1<2, jacov 3>2, snip 1<3 -> 1 beats 0; 0 vs 2: 2 beats 0 (1<3, 3>1, 1<2);
    # 1 vs 2: synflow 2<3, jacov 2>1, snip 3>2 -> 1 beats 2
    got = aggregate("majority_vote", {"synflow": [1, 2, 3], "jacob_cov": [3, 2, 1], "snip": [1, 3, 2]})
    np.testing.assert_allclose(got, [0.0, 1.0, 0.5])


def test_vote_uses_signs(user) -> None:
    user("t_vote", ("a", "b", "c"), (-1, -1, -1), "vote")
    got = aggregate("t_vote", {"a": [1, 2, 3], "b": [3, 2, 1], "c": [1, 3, 2]})
    np.testing.assert_allclose(got, [1.0, 0.0, 0.5])


def test_expand_and_nesting(user) -> None:
    user("t_in", ("synflow", "snip"), (1, 1), "mean_rank")
    user("t_out", ("t_in", "nwot"), (1, 1), "rank_sum")
    assert expand(["snip", "t_out", "te_nas"]) == (("snip", "synflow", "nwot", "ntk_cond", "linear_regions"),
                                                   ("t_out", "te_nas"))
    scores = {"synflow": [1.0, 2.0], "snip": [1.0, 2.0], "nwot": [2.0, 1.0]}
    np.testing.assert_allclose(aggregate("t_out", scores), [1 + 2, 2 + 1])   # t_in ranks [1, 2]


def test_recursion_refused(user) -> None:
    user("t_a", ("t_b",), (1,), "mean_rank")      # t_b not registered yet: a proxy name for now
    user("t_b", ("t_a",), (1,), "mean_rank")
    with pytest.raises(ValueError, match="recursive: t_a -> t_b -> t_a"):
        expand(["t_a"])
    with pytest.raises(ValueError, match="recursive"):
        aggregate("t_a", {"x": [1.0]})


def test_bad_definitions(user) -> None:
    with pytest.raises(ValueError, match="unknown method 'median'"):
        Ensemble("x", ("a",), (1,), "median")
    with pytest.raises(ValueError, match="2 signs for 1 members"):
        Ensemble("x", ("a",), (1, 1))
    with pytest.raises(ValueError, match=r"signs must be \+1"):
        Ensemble("x", ("a",), (2,))
    with pytest.raises(ValueError, match="lists itself"):
        Ensemble("x", ("x",), (1,))
    with pytest.raises(ValueError, match="already a registered proxy"):
        ensemble.register_ensemble(Ensemble("synflow", ("snip",), (1,)))
    with pytest.raises(ValueError, match="reserved"):
        ensemble.register_ensemble(Ensemble("vote", ("snip",), (1,)))
    with pytest.raises(ValueError, match="already registered"):
        ensemble.register_ensemble(Ensemble("te_nas", ("snip",), (1,)))
    with pytest.raises(ValueError, match="cannot be unregistered"):
        ensemble.unregister_ensemble("az_nas")
    with pytest.raises(ValueError, match="missing 'linear_regions'"):
        aggregate("te_nas", {"ntk_cond": [1.0]})
    with pytest.raises(ValueError, match="has 1 values, expected 2"):
        aggregate("te_nas", {"ntk_cond": [1.0, 2.0], "linear_regions": [1.0]})
    with pytest.raises(ValueError, match="A >= 1"):
        aggregate("te_nas", {"ntk_cond": [], "linear_regions": []})
    with pytest.raises(ValueError, match="unknown ensemble 'te_naz'.*did you mean 'te_nas'"):
        aggregate("te_naz", {})


def test_proxy_name_clash_both_ways(user) -> None:
    from zcfast.proxies.registry import register_proxy

    user("t_clash", ("synflow",), (1,))
    with pytest.raises(ValueError, match="is a registered ensemble"):
        register_proxy("t_clash")(lambda ctx: 0.0)


def test_options_resolve(user) -> None:
    assert options.resolve_scoring("synflow,te_nas") == (("synflow", "ntk_cond", "linear_regions"), ("te_nas",))
    assert options.resolve_scoring("paper") == (options.PAPER_PROXIES, ())
    with pytest.raises(ValueError, match="'te_nas' is an ensemble .*not a per-network proxy"):
        options.resolve_proxies("te_nas")
    user("t_unknown", ("synflow", "nope"), (1, 1))
    with pytest.raises(ValueError, match="--warmup: ensemble 't_unknown' has member 'nope', which is not a "
                                         "registered proxy"):
        options.resolve_scoring("t_unknown", option="--warmup")
    with pytest.raises(ValueError, match="'vote' is not a per-network proxy.*majority_vote"):
        options.resolve_scoring("vote")


# ------------------------------------------------------------------ search: warmup / move by an ensemble
def _toy_tables(space):
    archs = list(space.enumerate())
    rng = np.random.default_rng(3)
    a = {space.encode(x): float(v) for x, v in zip(archs, rng.normal(size=len(archs)))}
    b = {space.encode(x): float(v) for x, v in zip(archs, rng.normal(size=len(archs)))}
    b[space.encode(archs[0])] = math.nan
    return archs, a, b


def test_ensemble_proxy_ranks_over_population_scored_so_far(user) -> None:
    from zcfast.search.common import EnsembleProxy, TableProxy
    from zcfast.search.toy import ToySpace

    space = ToySpace(decisions=3, options=3, seed=0)
    archs, a, b = _toy_tables(space)
    user("t_sp", ("pa", "pb"), (1, -1), "mean_rank")
    src = EnsembleProxy(space, "t_sp", {"pa": TableProxy(space, a), "pb": TableProxy(space, b)})
    first, second = archs[:5], archs[3:9]
    np.testing.assert_allclose(src.scores(first), aggregate("t_sp", {
        "pa": [a[space.encode(x)] for x in first], "pb": [b[space.encode(x)] for x in first]}))
    pop = archs[:9]                                # the second call ranks among all 9 scored so far
    want = aggregate("t_sp", {"pa": [a[space.encode(x)] for x in pop], "pb": [b[space.encode(x)] for x in pop]})
    np.testing.assert_allclose(src.scores(second), want[3:9])
    assert src.members["pa"].evaluations == 9     # each architecture's members scored once


def test_search_with_ensemble_warmup_and_move(user) -> None:
    from zcfast.search import search
    from zcfast.search.common import EnsembleProxy, TableProxy
    from zcfast.search.toy import ToySpace

    space = ToySpace(decisions=4, options=3, seed=0)
    _archs, a, b = _toy_tables(space)
    user("t_srch", ("pa", "pb"), (1, 1), "log_rank")
    src = EnsembleProxy(space, "t_srch", {"pa": TableProxy(space, a), "pb": TableProxy(space, b)})
    res = search(space, "evolution", 20, seed=1, warmup=src, warmup_pool=30, move=src,
                 population=8, tournament=3)
    assert res.config["warmup"] == res.config["move"] == "t_srch"
    warm = [r for r in res.records if r.source == "warmup"]
    assert len(warm) == 8 and all(np.isfinite(r.proxy_score) for r in res.records if r.proxy_score is not None)
    # the warmup trains the 8 best of its pool by the aggregate over that pool
    pool_scores = sorted((r.proxy_score for r in warm), reverse=True)
    assert pool_scores == [r.proxy_score for r in warm]


def test_make_proxy_builds_computed_members(user) -> None:
    from zcfast.search import make_proxy
    from zcfast.search.common import ComputedProxy, EnsembleProxy
    from zcfast.search.toy import ToySpace

    space = ToySpace(decisions=2, options=2, seed=0)
    user("t_cheap", ("params", "l2_norm"), (1, 1), "mean_rank")
    src = make_proxy("t_cheap", space, option="--warmup", batch_size=4)
    assert isinstance(src, EnsembleProxy) and set(src.members) == {"params", "l2_norm"}
    assert all(isinstance(m, ComputedProxy) for m in src.members.values())
    vals = src.scores(list(space.enumerate()))
    assert vals.shape == (4,) and np.isfinite(vals).all()
    user("t_bad", ("params", "nope"), (1, 1))
    with pytest.raises(ValueError, match="--warmup: ensemble 't_bad' has member 'nope'"):
        make_proxy("t_bad", space, option="--warmup")


# ------------------------------------------------------------------ scan: members stored, ranked by the ensemble
def test_scan_stores_members_and_ranks_by_ensemble(tmp_path, user) -> None:
    from zcfast.parallel import hash_scorer
    from zcfast.scan import rank_by, scan
    from zcfast.store import ResultStore

    user("t_scan", ("synflow", "snip"), (1, -1), "log_rank")
    path = tmp_path / "s.sqlite"
    res = scan("nb201", "t_scan,grasp", 12, store=path, backend="serial", scorer=hash_scorer,
               batch_scorer=None, progress=False)
    assert res.ensembles == ("t_scan",)
    with ResultStore(path, create=False) as st:
        rows = list(st.rows(res.run_id))
    assert len(rows) == 12 and all(set(r.values) == {"grasp", "snip", "synflow"} for r in rows)
    want = aggregate("t_scan", {m: [r.values[m] for r in rows] for m in ("synflow", "snip")})
    ranked = rank_by(path, res.run_id, "t_scan")
    assert [a for a, _ in ranked] == [rows[i].arch_str for i in np.argsort(-want, kind="stable")]
    np.testing.assert_allclose([v for _, v in ranked], np.sort(want)[::-1])
    assert len(rank_by(path, res.run_id, "grasp", k=3)) == 3
    with pytest.raises(ValueError, match=r"does not store \['ntk_cond', 'linear_regions'\]"):
        rank_by(path, res.run_id, "te_nas")
    with pytest.raises(ValueError, match="'zico' is neither"):
        rank_by(path, res.run_id, "zico")


def test_majority_vote_matches_rank_vote_copeland() -> None:
    from zcfast.proxies.vote import rank_vote

    rng = np.random.default_rng(4)
    s = {p: rng.integers(0, 5, 700).astype(float) for p in ("synflow", "jacob_cov", "snip")}   # ties, > 512 rows
    s["snip"][::7] = math.nan
    np.testing.assert_allclose(aggregate("majority_vote", s), rank_vote(s, method="copeland"))
    # independent O(n^2) restatement on a small slice
    small = {p: v[:40] for p, v in s.items()}
    f = [np.where(np.isnan(v), -np.inf, v) for v in small.values()]
    want = [sum(sum(a[i] > a[j] for a in f) >= 2 for j in range(40) if j != i) / 39 for i in range(40)]
    np.testing.assert_allclose(aggregate("majority_vote", small), want)


# ------------------------------------------------------------------ the held-out selection script
def test_selection_script_protocol(tmp_path) -> None:
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("ensemble_selection", root / "bench" / "ensemble_selection.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # ridge: tiny penalty -> least squares
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3.0
    mod.RIDGE_ALPHAS = (1e-9,)
    w, b, _ = mod.ridge_fit(X, y)
    np.testing.assert_allclose(np.r_[w, b], [1.0, -2.0, 0.5, 3.0], atol=1e-6)
    mod.RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)
    scores = [str(root / "docs/results/nb201_cifar10_1000/scores.csv")]
    assert mod.main(["--scores", *scores, "--max-size", "2", "--shots", "30", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "selection.json").read_text())
    sel, held = set(rep["selection_half_index"]), set(rep["heldout_half_index"])
    assert len(sel) == len(held) == 500 and not sel & held
    assert rep["proxies"] == ["grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov"]
    assert rep["candidate_space"]["count"] == 6 + 15 * 3
    assert rep["top10_on_selection"][0]["name"] == rep["selected"]["name"]
    assert set(rep["fewshot_ridge_heldout (not zero-cost)"]["shot_indices"]) <= sel
    lo, hi = rep["selected"]["heldout"]["spearman_ci95"]
    assert lo <= rep["selected"]["heldout"]["spearman"] <= hi
