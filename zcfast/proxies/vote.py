"""The paper's vote of synflow, jacob_cov and snip, in its two uses.

- :func:`pairwise_vote` -- the paper's *evaluation* number ("vote" column of Table 1): over
  every pair of architectures with different accuracy, the majority of the three proxies'
  pairwise comparisons is checked against the accuracy comparison; the result is the fraction
  of agreeing pairs. It needs ground truth and gives no per-architecture score (and is not a
  Spearman ρ). Implemented by :func:`zcfast.metrics.vote_agreement` (official notebook
  semantics, including how ties and NaN vote).
- :func:`rank_vote` -- a per-architecture score for *search*: each architecture's mean, over
  the voting proxies, of its normalised rank among the candidates scored together (0 = worst,
  1 = best; NaN ranks worst). Larger is better, as for every proxy. ``method="copeland"``
  instead counts, per architecture, the candidates it beats under the pairwise majority vote
  (the per-architecture form of the evaluation metric), normalised by n − 1.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from zcfast.ensemble import majority_wins
from zcfast.metrics import rankdata, vote_agreement

VOTE_PROXIES: tuple[str, ...] = ("synflow", "jacob_cov", "snip")


def _columns(scores: Mapping[str, Sequence[float]], proxies: Sequence[str]) -> list[np.ndarray]:
    missing = [p for p in proxies if p not in scores]
    if missing:
        raise ValueError(f"vote needs scores for {list(proxies)}; missing {missing}")
    cols = [np.asarray(scores[p], dtype=np.float64).reshape(-1) for p in proxies]
    n = cols[0].shape[0]
    for p, c in zip(proxies, cols):
        if c.shape[0] != n:
            raise ValueError(f"scores[{p!r}] has {c.shape[0]} values, expected {n}")
    return cols


def pairwise_vote(scores: Mapping[str, Sequence[float]], accuracies: Sequence[float],
                  proxies: Sequence[str] = VOTE_PROXIES) -> float:
    """The paper's vote metric: fraction of architecture pairs where the proxies' majority
    agrees with the accuracy order.

    Args:
        scores: ``{proxy: [n]}`` holding at least ``proxies``.
        accuracies: [n] ground truth.
        proxies: the voters (paper: synflow, jacob_cov, snip).
    Returns:
        a fraction in [0, 1] (NaN when no pair differs in accuracy).
    """
    cols = _columns(scores, proxies)
    return vote_agreement(cols, accuracies)


def rank_vote(scores: Mapping[str, Sequence[float]], proxies: Sequence[str] = VOTE_PROXIES,
              method: str = "rank") -> np.ndarray:
    """Per-architecture vote score for search (larger = predicted better).

    Args:
        scores: ``{proxy: [n]}`` for the n candidates compared together.
        proxies: the voters.
        method: ``"rank"`` -- mean over proxies of (average rank − 1)/(n − 1), NaN scores
            ranked below every finite one; ``"copeland"`` -- fraction of the other candidates
            that a strict majority of the proxies score strictly lower (NaN lowest).
    Returns:
        [n] float64 in [0, 1]. A single candidate gets 1.0.
    """
    cols = _columns(scores, proxies)
    n = cols[0].shape[0]
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.ones(1)
    if method == "rank":
        total = np.zeros(n)
        for c in cols:
            filled = np.where(np.isnan(c), -np.inf, c)
            total += (rankdata(filled) - 1.0) / (n - 1)
        return total / len(cols)
    if method == "copeland":
        return majority_wins(cols)   # one implementation, shared with the ensemble method "vote"
    raise ValueError(f"unknown rank_vote method {method!r}; use 'rank' or 'copeland'")
