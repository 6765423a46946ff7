"""Rank-correlation metrics of the correlation study.

All functions take 1-D float arrays of equal length ``[n]`` (a proxy's scores and the ground
truth accuracy of the same ``n`` architectures).

NaN handling (``nan_policy``):

- ``"omit"`` (default, as the official notebook's ``scipy.stats.spearmanr(..., nan_policy="omit")``):
  every pair ``(score_i, acc_i)`` where either is NaN is dropped before ranking;
- ``"worst"``: a NaN score ranks below every finite score (ties among NaNs), so a
  degenerate network counts as predicted-worst rather than disappearing; NaN accuracies are
  still dropped;
- ``"raise"``: ValueError if any NaN is present.

``+inf``/``-inf`` scores are ordinary (extreme) values for ranking.
Every correlation of fewer than 2 usable points, or of a constant input, is NaN (as scipy).

The pairwise vote (:func:`vote_agreement`) follows the official notebook exactly, including
its treatment of NaN and tied scores; see its docstring.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "rankdata",
    "spearman",
    "kendall",
    "top_fraction_spearman",
    "top_fraction_kendall",
    "top_overlap",
    "vote_agreement",
    "bootstrap_ci",
    "NAN_POLICIES",
    "MIN_POINTS",
]

NAN_POLICIES = ("omit", "worst", "raise")
#: Fewest usable points over which a report states a rank statistic (ρ, τ, their top-10 %
#: versions, a bootstrap interval): below it the value is reported as missing ("-" in the
#: tables, null in JSON). Over ten points the 95 % interval of a Spearman ρ of 0.7 already
#: spans about [0.1, 0.9], and over two points ρ is always ±1, which says nothing.
MIN_POINTS: int = 10


def _as_1d(a: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {list(arr.shape)}")
    return arr


def _prepare(
    scores: Sequence[float] | np.ndarray, acc: Sequence[float] | np.ndarray, nan_policy: str
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the NaN policy; returns the (scores, acc) pairs to rank, both float64 ``[m]``."""
    s = _as_1d(scores, "scores")
    a = _as_1d(acc, "acc")
    if s.shape != a.shape:
        raise ValueError(f"scores and acc must have the same length, got {s.shape[0]} and {a.shape[0]}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"unknown nan_policy {nan_policy!r}; known: {', '.join(NAN_POLICIES)}")
    snan, anan = np.isnan(s), np.isnan(a)
    if nan_policy == "raise":
        if snan.any() or anan.any():
            raise ValueError(f"NaN values present: {int(snan.sum())} in scores, {int(anan.sum())} in acc")
        return s, a
    if nan_policy == "worst":
        keep = ~anan
        s = s[keep].copy()
        bad = np.isnan(s)
        if bad.any():
            s[bad] = -np.inf  # ranks below every finite score; NaNs tie with one another
            if np.isneginf(s[~bad]).any():
                raise ValueError("nan_policy='worst' cannot separate NaN from -inf scores")
        return s, a[keep]
    keep = ~(snan | anan)
    return s[keep], a[keep]


def rankdata(a: Sequence[float] | np.ndarray) -> np.ndarray:
    """Average ranks (1-based; ties share the mean of their ranks), like scipy's default.

    Args:
        a: ``[n]`` values with no NaN.
    Returns:
        float64 ``[n]`` ranks.
    """
    x = _as_1d(a, "a")
    n = x.shape[0]
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # boundaries of runs of equal values
    new = np.empty(n, dtype=bool)
    if n:
        new[0] = True
        new[1:] = xs[1:] != xs[:-1]
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)  # exclusive
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    run_id = np.cumsum(new) - 1
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = avg[run_id]
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.shape[0] < 2:
        return math.nan
    xc = x - x.mean()
    yc = y - y.mean()
    den = math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc)))
    if den == 0.0:
        return math.nan
    return float(np.clip(np.dot(xc, yc) / den, -1.0, 1.0))


def spearman(scores, acc, nan_policy: str = "omit") -> float:
    """Spearman's ρ: the Pearson correlation of average ranks (ties share their mean rank).

    Args:
        scores, acc: ``[n]`` arrays.
        nan_policy: ``"omit"``, ``"worst"`` or ``"raise"`` (module docstring).
    Returns:
        ρ in [-1, 1], or NaN for < 2 usable points or a constant input.
    """
    s, a = _prepare(scores, acc, nan_policy)
    return _pearson(rankdata(s), rankdata(a))


def _count_inversions(y: np.ndarray) -> int:
    """Number of pairs i < j with y[i] > y[j] (strict), for integer ranks ``y`` in [0, n).

    Bottom-up merge sort, vectorised per level: each level counts, for every element of a
    right run, the elements of its left run that are greater, with one global searchsorted
    (runs are made globally ordered by adding ``block * n`` offsets). O(n log² n) work in
    numpy, O(log n) Python steps.
    """
    n = y.shape[0]
    if n < 2:
        return 0
    size = 1
    while size < n:
        size *= 2
    big = n + 1  # pad value: greater than every real value, padded at the end
    a = np.full(size, n, dtype=np.int64)
    a[:n] = y
    total = 0
    w = 1
    while w < size:
        blocks = a.reshape(-1, 2, w)
        nb = blocks.shape[0]
        offs = (np.arange(nb, dtype=np.int64) * big)[:, None]
        left = (blocks[:, 0, :] + offs).ravel()  # globally sorted
        right = blocks[:, 1, :] + offs
        le = np.searchsorted(left, right.ravel(), side="right").reshape(nb, w)
        le -= (np.arange(nb, dtype=np.int64) * w)[:, None]
        greater = w - le  # left elements strictly greater than each right element
        total += int(greater.sum())
        a = np.sort(blocks.reshape(nb, 2 * w), axis=1).ravel()
        w *= 2
    return total


def _tie_pairs(x: np.ndarray) -> int:
    _, counts = np.unique(x, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def kendall(scores, acc, nan_policy: str = "omit") -> float:
    """Kendall's τ-b (ties corrected, as scipy's default), O(n log n)-style via merge counting.

    τ_b = (C − D) / sqrt((n0 − n1)(n0 − n2)), with n0 = n(n−1)/2, n1 / n2 the pairs tied in
    scores / in acc, C / D the concordant / discordant pairs.

    Args:
        scores, acc: ``[n]`` arrays.
        nan_policy: ``"omit"``, ``"worst"`` or ``"raise"``.
    Returns:
        τ_b in [-1, 1], or NaN for < 2 usable points or a constant input.
    """
    s, a = _prepare(scores, acc, nan_policy)
    n = s.shape[0]
    if n < 2:
        return math.nan
    # integer dense ranks keep the comparisons exact
    rs = np.unique(s, return_inverse=True)[1].astype(np.int64)
    ra = np.unique(a, return_inverse=True)[1].astype(np.int64)
    n0 = n * (n - 1) // 2
    n1 = _tie_pairs(rs)
    n2 = _tie_pairs(ra)
    n3 = _tie_pairs(rs * (n + 1) + ra)  # tied in both
    order = np.lexsort((ra, rs))  # by score, then by acc
    d = _count_inversions(ra[order])  # discordant pairs
    c_minus_d = n0 - n1 - n2 + n3 - 2 * d
    den = math.sqrt(float(n0 - n1) * float(n0 - n2))
    if den == 0.0:
        return math.nan
    return float(np.clip(c_minus_d / den, -1.0, 1.0))


def _top_mask(acc: np.ndarray, fraction: float) -> np.ndarray:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    a = _as_1d(acc, "acc")
    finite = ~np.isnan(a)
    k = int(math.ceil(fraction * int(finite.sum())))
    mask = np.zeros(a.shape[0], dtype=bool)
    if k == 0:
        return mask
    idx = np.flatnonzero(finite)
    order = idx[np.argsort(-a[idx], kind="mergesort")]
    mask[order[:k]] = True
    return mask


def top_fraction_spearman(scores, acc, fraction: float = 0.1, nan_policy: str = "omit") -> float:
    """Spearman ρ among the top ``fraction`` of architectures by accuracy (paper's "top-10%").

    The top set is the ``ceil(fraction · m)`` highest accuracies among the ``m`` non-NaN ones
    (ties at the boundary broken by input order); the NaN policy then applies inside it.
    """
    mask = _top_mask(acc, fraction)
    return spearman(_as_1d(scores, "scores")[mask], _as_1d(acc, "acc")[mask], nan_policy)


def top_fraction_kendall(scores, acc, fraction: float = 0.1, nan_policy: str = "omit") -> float:
    """Kendall τ-b among the top ``fraction`` of architectures by accuracy."""
    mask = _top_mask(acc, fraction)
    return kendall(_as_1d(scores, "scores")[mask], _as_1d(acc, "acc")[mask], nan_policy)


def top_overlap(scores, acc, fraction: float = 0.1) -> float:
    """Fraction of the top-``fraction`` architectures by accuracy that are also in the
    top-``fraction`` by score (the paper's "top-10%/top-10%"); NaN scores rank last."""
    s = _as_1d(scores, "scores")
    a = _as_1d(acc, "acc")
    if s.shape != a.shape:
        raise ValueError(f"scores and acc must have the same length, got {s.shape[0]} and {a.shape[0]}")
    keep = ~np.isnan(a)
    s, a = s[keep], a[keep]
    true_top = _top_mask(a, fraction)
    k = int(true_top.sum())
    if k == 0:
        return math.nan
    s2 = np.where(np.isnan(s), -np.inf, s)
    pred = np.argsort(-s2, kind="mergesort")[:k]
    return float(true_top[pred].sum() / k)


def vote_agreement(
    scores: Mapping[str, Sequence[float]] | Sequence[Sequence[float]],
    acc: Sequence[float],
    block: int = 512,
) -> float:
    """The paper's pairwise vote agreement (official notebook semantics, vectorised).

    For every ordered pair ``(i, j)``, ``i != j``, whose accuracies differ: each proxy ``m``
    votes "i better" when ``s_m[i] - s_m[j] > 0``; the majority says "i better" when at least
    half of the proxies vote so (``numpos >= len/2``), else "j better"; the pair counts as right
    when the majority agrees with the sign of ``acc[i] - acc[j]``. Returns right / total.

    As in the official code, a tied score difference and any comparison with NaN count as a
    vote for "j better" (the comparison ``> 0`` is false); pairs with a NaN accuracy are
    skipped. Over ordered pairs this makes ties count as right in exactly one of the two orders.

    Args:
        scores: ``{name: [n]}`` or a sequence of ``[n]`` arrays (the paper: synflow, jacob_cov, snip).
        acc: ``[n]`` ground truth.
        block: rows per vectorised block (memory is ~ ``block · n`` bytes per array).
    Returns:
        agreement in [0, 1]; NaN when no pair has differing accuracy.
    Cost: O(n²·M) comparisons in numpy blocks (15,625 architectures: a few seconds).
    """
    cols = list(scores.values()) if isinstance(scores, Mapping) else list(scores)
    if not cols:
        raise ValueError("vote_agreement needs at least one proxy")
    a = _as_1d(acc, "acc")
    S = [_as_1d(c, "scores") for c in cols]
    for c in S:
        if c.shape != a.shape:
            raise ValueError(f"every score array must have length {a.shape[0]}, got {c.shape[0]}")
    n = a.shape[0]
    need = len(S) / 2.0
    right = 0
    total = 0
    with np.errstate(invalid="ignore"):
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            d = a[lo:hi, None] - a[None, :]  # NaN acc -> NaN d: neither > 0 nor < 0
            pos = np.zeros(d.shape, dtype=np.int8)
            for c in S:
                pos += c[lo:hi, None] > c[None, :]
            maj = pos >= need
            right += int(np.count_nonzero((d > 0) & maj) + np.count_nonzero((d < 0) & ~maj))
            total += int(np.count_nonzero((d > 0) | (d < 0)))  # excludes i == j (d = 0)
    return right / total if total else math.nan


#: Largest number of pairs for which :func:`bootstrap_ci` computes Kendall's τ of all resamples
#: at once from an ``[m, m]`` sign matrix (memory ~ 3·8·m² bytes); above it, one τ per resample.
KENDALL_MATMUL_LIMIT: int = 3000


def _rank_rows(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean) along the last axis of ``[k, m]``."""
    k, m = x.shape
    order = np.argsort(x, axis=1, kind="mergesort")
    xs = np.take_along_axis(x, order, axis=1)
    new = np.ones((k, m), dtype=bool)
    new[:, 1:] = xs[:, 1:] != xs[:, :-1]
    run = np.cumsum(new, axis=1) - 1                      # run id of each sorted position
    pos = np.broadcast_to(np.arange(m, dtype=np.float64), (k, m))
    flat_run = (run + (np.arange(k) * m)[:, None]).ravel()
    total = np.bincount(flat_run, weights=pos.ravel() + 1.0, minlength=k * m)
    count = np.bincount(flat_run, minlength=k * m)
    avg = (total / np.maximum(count, 1))[flat_run].reshape(k, m)
    ranks = np.empty((k, m), dtype=np.float64)
    np.put_along_axis(ranks, order, avg, axis=1)
    return ranks


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ of each row pair of ``[k, m]`` arrays (NaN for a constant row)."""
    rx, ry = _rank_rows(x), _rank_rows(y)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rx * ry).sum(axis=1) / den
    r[den == 0] = np.nan
    return np.clip(r, -1.0, 1.0)


def _tie_matrix(x: np.ndarray) -> np.ndarray | None:
    """``[m, m]`` 1.0 where ``x_i == x_j``, ``i != j``; None when no two values tie."""
    if np.unique(x).shape[0] == x.shape[0]:
        return None
    t = (x[:, None] == x[None, :]).astype(np.float64)
    np.fill_diagonal(t, 0.0)
    return t


def _kendall_weighted(idx: np.ndarray, m: int, sign: np.ndarray, ties_s: np.ndarray | None,
                      ties_a: np.ndarray | None) -> np.ndarray:
    """Kendall τ-b of each resample ``idx[b]`` (``[k, m]`` indices into the m pairs) from its
    multiplicities w: C − D = ½ wᵀ·sign·w, tied pairs n1 = ½ wᵀ·T_s·w + Σ w(w−1)/2 (a pair
    drawn twice ties with itself), n2 likewise; exact (integer sums in float64)."""
    k = idx.shape[0]
    w = np.bincount((idx + (np.arange(k) * m)[:, None]).ravel(), minlength=k * m).reshape(k, m).astype(np.float64)
    self_pairs = (w * (w - 1.0) / 2.0).sum(axis=1)
    cd = 0.5 * ((w @ sign) * w).sum(axis=1)
    n1 = self_pairs + (0.5 * ((w @ ties_s) * w).sum(axis=1) if ties_s is not None else 0.0)
    n2 = self_pairs + (0.5 * ((w @ ties_a) * w).sum(axis=1) if ties_a is not None else 0.0)
    n0 = m * (m - 1) / 2.0
    den = np.sqrt((n0 - n1) * (n0 - n2))
    with np.errstate(invalid="ignore", divide="ignore"):
        t = cd / den
    t[den == 0] = np.nan
    return np.clip(t, -1.0, 1.0)


def bootstrap_ci(
    scores: Sequence[float] | np.ndarray,
    acc: Sequence[float] | np.ndarray,
    statistic: str = "spearman",
    *,
    n_boot: int = 1000,
    seed: int = 0,
    nan_policy: str = "omit",
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a rank statistic over resamples of the architectures.

    The NaN policy is applied first (``"omit"`` drops the pairs, ``"worst"`` ranks NaN scores
    last); then ``n_boot`` resamples of the ``m`` remaining (score, accuracy) pairs, drawn with
    replacement by ``numpy.random.default_rng(seed)``, each give the statistic, and the interval
    is their ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles (resamples whose statistic
    is undefined, e.g. a constant resample, are left out). The pairs are sorted by (accuracy,
    score) before resampling, so the interval does not depend on the order of the input (a
    report re-read from a store in another order gives the same interval).

    Args:
        scores, acc: ``[n]`` arrays.
        statistic: ``"spearman"`` or ``"kendall"`` (τ-b).
        n_boot: resamples (default 1000).
        seed: seed of the resampling.
        nan_policy: as :func:`spearman`.
        level: coverage (default 0.95).
    Returns:
        ``(low, high)``; ``(nan, nan)`` when fewer than :data:`MIN_POINTS` pairs remain, or
        ``n_boot`` is 0.
    Computed for blocks of resamples at once: Spearman by row-wise ranks, Kendall from each
    resample's multiplicities and the ``[m, m]`` sign matrix of the pairs (up to
    :data:`KENDALL_MATMUL_LIMIT` pairs; one τ per resample above). The values equal one
    :func:`spearman` / :func:`kendall` call per resample.
    """
    if statistic not in ("spearman", "kendall"):
        raise ValueError(f"unknown statistic {statistic!r}; known: spearman, kendall")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    s, a = _prepare(scores, acc, nan_policy)
    m = s.shape[0]
    if m < MIN_POINTS or n_boot == 0:
        return math.nan, math.nan
    order = np.lexsort((s, a))  # by accuracy, then score: the interval ignores the input order
    s, a = s[order], a[order]
    rng = np.random.default_rng(seed)
    vals = np.empty(int(n_boot), dtype=np.float64)
    if statistic == "kendall" and m > KENDALL_MATMUL_LIMIT:
        for b in range(int(n_boot)):  # the plain loop: one O(m log m) tau per resample
            i = rng.integers(0, m, m)
            vals[b] = kendall(s[i], a[i], "omit")
    else:
        block = max(1, min(int(n_boot), 4_000_000 // max(m, 1)))
        sign = ties_s = ties_a = None
        if statistic == "kendall":
            # [m, m] signs by comparison (±inf scores are ordinary extremes, as in kendall())
            sign = ((s[:, None] > s[None, :]).astype(np.float64) - (s[:, None] < s[None, :])) * \
                ((a[:, None] > a[None, :]).astype(np.float64) - (a[:, None] < a[None, :]))
            ties_s = _tie_matrix(s)
            ties_a = _tie_matrix(a)
        for lo in range(0, int(n_boot), block):
            k = min(block, int(n_boot) - lo)
            idx = rng.integers(0, m, (k, m))  # the same stream as k draws of m
            if statistic == "spearman":
                vals[lo:lo + k] = _spearman_rows(s[idx], a[idx])
            else:
                vals[lo:lo + k] = _kendall_weighted(idx, m, sign, ties_s, ties_a)
    vals = vals[~np.isnan(vals)]
    if not vals.size:
        return math.nan, math.nan
    lo, hi = np.percentile(vals, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(lo), float(hi)
