"""bench/search_ensemble.py: the selection-half exclusion, the isolated-architecture pruning,
the ensemble column against a brute-force majority vote, and the held-out check."""
from __future__ import annotations

import importlib.util
import itertools
import math
import os
import sys

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "bench", "search_ensemble.py")


@pytest.fixture(scope="module")
def se():
    spec = importlib.util.spec_from_file_location("search_ensemble", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module      # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nb201():
    from zcfast import spaces
    return spaces.get("nb201")


def _vote_reference(cols: list[np.ndarray]) -> np.ndarray:
    """Per architecture: share of the others that a strict majority of members score lower
    (NaN lowest), by a plain double loop."""
    n = len(cols[0])
    out = np.zeros(n)
    for i, j in itertools.permutations(range(n), 2):
        wins = 0
        for c in cols:
            a = -math.inf if math.isnan(c[i]) else c[i]
            b = -math.inf if math.isnan(c[j]) else c[j]
            wins += a > b
        out[i] += wins > len(cols) / 2
    return out / (n - 1)


def test_subset_drops_the_selection_half_and_isolated_archs(se, nb201) -> None:
    ens, _sel, _doc = se.load_selection()
    assert ens.members == ("jacob_cov", "meco", "gradsign", "az_trainability") and ens.method == "vote"
    centre = nb201.arch_at(100)
    cluster = [centre] + nb201.neighbours(centre)                  # 25 archs, all linked through centre
    far = nb201.arch_at(15000)
    assert nb201.encode(far) not in {nb201.encode(n) for a in cluster for n in nb201.neighbours(a)} | \
        {nb201.encode(a) for a in cluster}
    archs = cluster + [far]
    idx = [nb201.index(a) for a in archs]
    arch = {i: nb201.encode(a) for i, a in zip(idx, archs)}
    rng = np.random.default_rng(0)
    vals = {m: {i: float(v) for i, v in zip(idx, rng.normal(size=len(idx)))} for m in ens.members}
    vals["meco"][idx[3]] = math.nan                               # a failed score: ranked worst
    del vals["gradsign"][idx[4]]                                  # a member not scored: dropped
    selection = {idx[1], idx[2], 99999}
    sub = se.build_subset(ens, arch, vals, selection)
    kept = [i for i in idx if i not in (idx[1], idx[2], idx[4], idx[-1])]
    assert sub.index.tolist() == sorted(kept)
    assert sub.info["complete"] == 25 and sub.info["dropped_selection_half"] == 2
    assert sub.info["dropped_isolated"] == 1 and sub.info["size"] == 22
    assert sub.info["nan_per_member"] == {"jacob_cov": 0, "meco": 1, "gradsign": 0, "az_trainability": 0}
    ref = _vote_reference([np.array([vals[m][int(i)] for i in sub.index]) for m in ens.members])
    np.testing.assert_allclose(sub.values, ref, rtol=0, atol=1e-15)
    assert sub.values[sub.index.tolist().index(idx[3])] <= np.sort(sub.values)[-2]   # NaN never helps


def test_isolated_is_a_fixed_point(se, nb201) -> None:
    a = nb201.arch_at(7)
    b = nb201.neighbours(a)[0]
    c = [n for n in nb201.neighbours(b) if nb201.encode(n) not in
         {nb201.encode(x) for x in nb201.neighbours(a)} and nb201.encode(n) != nb201.encode(a)][0]
    texts = [nb201.encode(x) for x in (a, b, c)]
    assert se.isolated(texts) == []                               # a-b-c is a chain
    assert sorted(se.isolated([texts[0], texts[2]])) == sorted([texts[0], texts[2]])


def test_table_round_trip(se, tmp_path) -> None:
    from zcfast.search import load_score_table

    path = str(tmp_path / "t.csv.gz")
    se.write_table(path, [3, 5], ["|a|", "|b|"], {"ensemble": np.array([0.5, 1 / 3]), "meco": np.array([math.nan, 2.0])})
    assert load_score_table(path, "ensemble") == {"|a|": 0.5, "|b|": 1 / 3}
    assert math.isnan(load_score_table(path, "meco")["|a|"])


def test_ensemble_reproduces_the_heldout_rho(se) -> None:
    ens, selection, doc = se.load_selection()
    assert len(selection) == 500
    check = se.check_heldout(ens, doc)
    assert check["n"] == 500
    assert check["spearman"] == pytest.approx(0.9313094018070305, abs=1e-12)
    assert check["spearman"] == pytest.approx(check["reported"], abs=1e-12)
