"""zcfast.metrics against scipy.stats and against a literal transcription of the paper's vote loop."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from zcfast import metrics


def _cases(rng: np.random.Generator):
    n = 200
    yield rng.normal(size=n), rng.normal(size=n)                       # continuous
    x = rng.normal(size=n)
    yield x, x + 0.5 * rng.normal(size=n)                               # correlated
    yield rng.integers(0, 5, n).astype(float), rng.integers(0, 7, n).astype(float)  # heavy ties
    yield np.round(rng.normal(size=n), 1), -np.round(rng.normal(size=n), 1)
    x = rng.normal(size=n)
    yield x, -x                                                         # perfect negative
    yield np.arange(7.0), np.array([3.0, 1, 4, 1, 5, 9, 2])             # tiny, ties
    yield np.array([1.0, 2.0]), np.array([2.0, 1.0])                    # n = 2


@pytest.mark.parametrize("case", range(7))
def test_spearman_kendall_match_scipy(case):
    x, y = list(_cases(np.random.default_rng(case)))[case]
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert metrics.kendall(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_rankdata_matches_scipy():
    rng = np.random.default_rng(1)
    for x in (rng.integers(0, 9, 300).astype(float), rng.normal(size=301), np.array([5.0]), np.zeros(4)):
        np.testing.assert_allclose(metrics.rankdata(x), stats.rankdata(x))


def test_kendall_inversions_large_odd_sizes():
    rng = np.random.default_rng(2)
    for n in (3, 1023, 1025, 5000):  # around powers of two
        x = rng.integers(0, n // 2 + 2, n).astype(float)
        y = x + rng.integers(0, 4, n)
        assert metrics.kendall(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


def test_nan_policies():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=100), rng.normal(size=100)
    x[[3, 10, 50]] = np.nan
    y[7] = np.nan
    # omit == scipy's nan_policy="omit" (the official notebook)
    ref = stats.spearmanr(x, y, nan_policy="omit").statistic
    assert metrics.spearman(x, y) == pytest.approx(ref, abs=1e-12)
    keep = ~(np.isnan(x) | np.isnan(y))
    assert metrics.kendall(x, y) == pytest.approx(stats.kendalltau(x[keep], y[keep]).statistic, abs=1e-12)
    # worst: NaN scores replaced by a value below everything, NaN accuracies dropped
    x2 = np.where(np.isnan(x), np.nanmin(x) - 1.0, x)
    k2 = ~np.isnan(y)
    assert metrics.spearman(x, y, "worst") == pytest.approx(stats.spearmanr(x2[k2], y[k2]).statistic, abs=1e-12)
    assert metrics.kendall(x, y, "worst") == pytest.approx(stats.kendalltau(x2[k2], y[k2]).statistic, abs=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        metrics.spearman(x, y, "raise")
    with pytest.raises(ValueError, match="nan_policy"):
        metrics.spearman(x, y, "drop")


def test_infinite_scores_are_ordinary_extremes():
    x = np.array([1.0, np.inf, 3.0, -np.inf, 2.0])
    y = np.array([2.0, 5.0, 4.0, 1.0, 3.0])
    assert metrics.spearman(x, y) == pytest.approx(1.0)
    assert metrics.kendall(x, y) == pytest.approx(1.0)


def test_degenerate_inputs():
    assert math.isnan(metrics.spearman([1.0], [2.0]))
    assert math.isnan(metrics.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(metrics.kendall([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="same length"):
        metrics.spearman([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="1-D"):
        metrics.kendall(np.zeros((2, 2)), np.zeros((2, 2)))


def test_top_fraction():
    rng = np.random.default_rng(4)
    acc = rng.normal(size=1000)
    s = acc + rng.normal(size=1000)
    top = np.argsort(-acc)[:100]
    assert metrics.top_fraction_spearman(s, acc, 0.1) == pytest.approx(
        stats.spearmanr(s[top], acc[top]).statistic, abs=1e-12)
    assert metrics.top_fraction_kendall(s, acc, 0.1) == pytest.approx(
        stats.kendalltau(s[top], acc[top]).statistic, abs=1e-12)
    assert metrics.top_overlap(acc, acc, 0.1) == 1.0
    assert metrics.top_overlap(-acc, acc, 0.1) == 0.0
    pred = set(np.argsort(-s)[:100])
    assert metrics.top_overlap(s, acc, 0.1) == pytest.approx(len(pred & set(top)) / 100)
    with pytest.raises(ValueError, match="fraction"):
        metrics.top_fraction_spearman(s, acc, 0.0)


def _vote_official_loop(mets: list[np.ndarray], acc: np.ndarray) -> float:
    """Literal transcription of the notebook's double loop (behaviour, for the test only)."""
    n = len(acc)
    right = tot = 0
    old = np.seterr(invalid="ignore")
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            diff = acc[i] - acc[j]
            if diff == 0 or np.isnan(diff):
                continue
            numpos = sum(1 for m in mets if (m[i] - m[j]) > 0)
            sign = 1 if numpos >= len(mets) / 2 else -1
            right += 1 if sign * diff > 0 else 0
            tot += 1
    np.seterr(**old)
    return right / tot


def test_vote_matches_official_loop_with_ties_and_nans():
    rng = np.random.default_rng(5)
    n = 60
    acc = np.round(rng.normal(size=n), 1)  # tied accuracies
    mets = [acc + rng.normal(size=n), np.round(rng.normal(size=n), 0), acc + rng.normal(scale=2, size=n)]
    mets[0][[1, 5]] = np.nan
    mets[2][[5, 9]] = np.inf
    ref = _vote_official_loop(mets, acc)
    assert metrics.vote_agreement(mets, acc, block=7) == pytest.approx(ref, abs=1e-15)
    assert metrics.vote_agreement({"a": mets[0], "b": mets[1], "c": mets[2]}, acc) == pytest.approx(ref, abs=1e-15)
    # one proxy: numpos >= 0.5 means a strict win
    assert metrics.vote_agreement([mets[1]], acc) == pytest.approx(_vote_official_loop([mets[1]], acc), abs=1e-15)
    assert metrics.vote_agreement([acc, acc, acc], acc) == 1.0


def test_vote_scales_to_nb201_size():
    rng = np.random.default_rng(6)
    n = 15625
    acc = rng.normal(size=n)
    mets = [acc + rng.normal(size=n) for _ in range(3)]
    t = time.perf_counter()
    v = metrics.vote_agreement(mets, acc)
    elapsed = time.perf_counter() - t
    assert 0.5 < v < 1.0
    assert elapsed < 60, f"vote over 15,625 took {elapsed:.1f} s"
