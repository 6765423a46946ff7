"""Training-free rank aggregation of proxies: ensembles usable wherever a proxy name is.

An :class:`Ensemble` names member proxies, the direction of each (``+1``: higher is better,
``-1``: lower is better) and a rank-aggregation ``method``. It is not a per-network proxy: its
value for an architecture depends on the *population* of architectures ranked together, so it
is computed from the members' scores of that population with :func:`aggregate`.

Ranking rules (every method):

- each member's scores are multiplied by its sign, then ranked ascending over the population
  (rank 1 = worst, N = best), ties sharing their average rank (``scipy.stats.rankdata``'s
  default, as AZ-NAS and TE-NAS rank);
- a non-finite member value (NaN, +inf, -inf: a failed or undefined score) ranks **worst**,
  below every finite value, all of them tied with each other (so a failure never helps);
- the aggregate is "higher = better", like every proxy.

Methods (``A`` = population size, ``r_m`` = member m's rank in 1..A):

- ``"log_rank"`` (AZ-NAS, cvlab-yonsei/AZ-NAS@5e6683a2 ``tss_general.ipynb`` and
  ``evolution_search_az.py``): Σ_m log(r_m / A); values in (-inf, 0], 0 = best on every member.
- ``"rank_sum"`` (TE-NAS, the same notebook's ``te_nas`` branch; VITA-Group/TENAS): Σ_m r_m.
- ``"mean_rank"``: mean over members of (r_m - 1) / (A - 1) in [0, 1] (a single architecture
  gets 1.0); equals :func:`zcfast.proxies.vote.rank_vote` ``method="rank"``.
- ``"vote"``: the per-architecture form of the paper's pairwise vote: the fraction of the other
  A - 1 architectures that a strict majority of the members score strictly lower
  (:func:`majority_wins`, which :func:`zcfast.proxies.vote.rank_vote` ``method="copeland"``
  calls: one implementation). A single architecture gets 1.0.

Built-in ensembles: ``te_nas`` (rank(-ntk_cond) + rank(linear_regions)), ``az_nas``
(Σ log(rank/N) of az_expressivity, az_progressivity, az_trainability, az_complexity, all
higher-is-better as in the official code) and ``majority_vote`` (synflow, jacob_cov, snip under
``"vote"``). The name ``vote`` stays reserved for the paper's *evaluation* number
(:func:`zcfast.proxies.vote.pairwise_vote`, the "vote" row of ``zcfast correlate``), which needs
ground truth and is not a per-architecture score; ``majority_vote`` is its per-architecture form.

This module imports numpy and :mod:`zcfast.metrics` only: members are referenced by name, checked against the proxy registry by
:func:`zcfast.options.resolve_proxies` (which expands ensemble names with :func:`expand`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

import numpy as np

from zcfast.metrics import rankdata

__all__ = ["METHODS", "Ensemble", "aggregate", "available_ensembles", "expand", "get_ensemble",
           "is_ensemble", "majority_wins", "member_ranks", "register_ensemble", "unregister_ensemble"]

#: aggregation methods and what each computes
METHODS: dict[str, str] = {
    "log_rank": "AZ-NAS: sum over members of log(rank / N)",
    "mean_rank": "mean over members of (rank - 1) / (N - 1), in [0, 1]",
    "rank_sum": "TE-NAS: sum over members of rank",
    "vote": "fraction of the others a strict majority of members score strictly lower (paper's vote)",
}


@dataclass(frozen=True)
class Ensemble:
    """A named rank aggregate of member proxies.

    Attributes:
        name: the name used wherever a proxy name is (``--proxies``, ``--warmup``, ...).
        members: member proxy (or ensemble) names, at least one, no duplicates.
        signs: one per member: ``+1`` higher is better, ``-1`` lower is better.
        method: a key of :data:`METHODS`.
        description: one line for listings.
    """

    name: str
    members: tuple[str, ...]
    signs: tuple[int, ...]
    method: str = "mean_rank"
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.strip() \
                or "," in self.name:
            raise ValueError(f"ensemble name must be a non-empty string without commas or surrounding spaces, "
                             f"got {self.name!r}")
        members = tuple(self.members) if not isinstance(self.members, str) else (self.members,)
        signs = tuple(self.signs) if isinstance(self.signs, (tuple, list)) else (self.signs,)
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "signs", signs)
        if not members or not all(isinstance(m, str) and m.strip() for m in members):
            raise ValueError(f"ensemble {self.name!r}: members must be non-empty proxy names, got {self.members!r}")
        if len(set(members)) != len(members):
            raise ValueError(f"ensemble {self.name!r}: duplicate members in {members}")
        if self.name in members:
            raise ValueError(f"ensemble {self.name!r} lists itself as a member")
        if len(signs) != len(members):
            raise ValueError(f"ensemble {self.name!r}: {len(signs)} signs for {len(members)} members")
        if any(isinstance(s, bool) or s not in (1, -1) for s in signs):
            raise ValueError(f"ensemble {self.name!r}: signs must be +1 (higher is better) or -1, got {signs}")
        object.__setattr__(self, "signs", tuple(int(s) for s in signs))
        if self.method not in METHODS:
            raise ValueError(f"ensemble {self.name!r}: unknown method {self.method!r}; choose from "
                             f"{', '.join(METHODS)}")


_ENSEMBLES: dict[str, Ensemble] = {}
_BUILTIN: set[str] = set()
#: set by zcfast.proxies.registry on import: is this name a registered proxy? (keeps this module
#: free of a registry import while register_ensemble still refuses a proxy's name)
_proxy_exists: Callable[[str], bool] | None = None
#: names no ensemble may take (the proxy-set keywords of zcfast.options.PROXY_SETS)
_KEYWORDS = ("paper", "all", "suite-zero", "every", "vote")   # + the paper's evaluation vote


def register_ensemble(ens: Ensemble, *, _builtin: bool = False) -> Ensemble:
    """Register ``ens`` under ``ens.name``; returns it.

    Raises:
        ValueError: not an :class:`Ensemble`, a name already registered (ensemble or proxy), or a
            proxy-set keyword.
    """
    if not isinstance(ens, Ensemble):
        raise ValueError(f"register_ensemble takes an Ensemble, got {type(ens).__name__}")
    if ens.name.lower() in _KEYWORDS:
        raise ValueError(f"ensemble name {ens.name!r} is reserved (a proxy-set keyword of zcfast.options.PROXY_SETS, "
                         "or 'vote': the paper's evaluation metric)")
    if ens.name in _ENSEMBLES:
        raise ValueError(f"an ensemble named {ens.name!r} is already registered")
    if _proxy_exists is not None and _proxy_exists(ens.name):
        raise ValueError(f"ensemble name {ens.name!r} is already a registered proxy; choose another name")
    _ENSEMBLES[ens.name] = ens
    if _builtin:
        _BUILTIN.add(ens.name)
    return ens


def unregister_ensemble(name: str) -> None:
    """Remove a user-registered ensemble (built-in ones cannot be removed)."""
    if name in _BUILTIN:
        raise ValueError(f"built-in ensemble {name!r} cannot be unregistered")
    if not isinstance(name, str) or name not in _ENSEMBLES:
        raise ValueError(f"no ensemble named {name!r} is registered")
    del _ENSEMBLES[name]


def is_ensemble(name: object) -> bool:
    """Whether ``name`` is a registered ensemble's name."""
    return isinstance(name, str) and name in _ENSEMBLES


def get_ensemble(name: str | Ensemble) -> Ensemble:
    """The registered ensemble ``name`` (an :class:`Ensemble` is returned as is)."""
    if isinstance(name, Ensemble):
        return name
    if not is_ensemble(name):
        import difflib

        close = difflib.get_close_matches(str(name), list(_ENSEMBLES), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown ensemble {name!r}{hint}; registered: {', '.join(_ENSEMBLES)}")
    return _ENSEMBLES[name]


def available_ensembles() -> list[str]:
    """Names of every registered ensemble, built-ins first."""
    return list(_ENSEMBLES)


def _leaves(ens: Ensemble, stack: tuple[str, ...]) -> list[str]:
    if ens.name in stack:
        raise ValueError(f"ensemble {stack[0]!r} is recursive: " + " -> ".join(stack + (ens.name,)))
    out: list[str] = []
    for m in ens.members:
        if is_ensemble(m):
            out.extend(_leaves(_ENSEMBLES[m], stack + (ens.name,)))
        else:
            out.append(m)
    return out


def expand(names: Sequence[str], *,
           is_proxy: Callable[[str], bool] | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split names into the proxies to score and the ensembles to aggregate.

    Args:
        names: proxy and ensemble names, in the user's order.
        is_proxy: optional check of a leaf member (``zcfast.options`` passes the registry's);
            a member that fails it raises, naming the ensemble.
    Returns:
        ``(proxies, ensembles)``: every non-ensemble name and every ensemble's (nested) members,
        deduplicated in first-seen order; the ensemble names given, deduplicated in order.
    Raises:
        ValueError: a recursive ensemble, or an unknown member (with ``is_proxy``).
    """
    if isinstance(names, str):
        names = (names,)
    proxies: list[str] = []
    ensembles: list[str] = []
    for n in names:
        if is_ensemble(n):
            ens = _ENSEMBLES[n]
            leaves = _leaves(ens, ())
            if is_proxy is not None:
                bad = [m for m in leaves if not is_proxy(m)]
                if bad:
                    raise ValueError(f"ensemble {n!r} has member {bad[0]!r}, which is not a registered proxy")
            proxies.extend(leaves)
            ensembles.append(n)
        else:
            proxies.append(n)
    return tuple(dict.fromkeys(proxies)), tuple(dict.fromkeys(ensembles))


ArrayLike = Union[Sequence[float], np.ndarray]


def _column(scores: Mapping[str, ArrayLike], ens: Ensemble, member: str, stack: tuple[str, ...]) -> np.ndarray:
    if is_ensemble(member) and member not in scores:
        return _aggregate(_ENSEMBLES[member], scores, stack + (ens.name,))
    if member not in scores:
        raise ValueError(f"ensemble {ens.name!r} needs scores of {list(ens.members)}; missing {member!r}")
    col = np.asarray(scores[member], dtype=np.float64)
    if col.ndim != 1:
        raise ValueError(f"scores[{member!r}] must be one value per architecture [A], got shape {list(col.shape)}")
    return col


def member_ranks(ens_or_name: str | Ensemble, scores: Mapping[str, ArrayLike]) -> np.ndarray:
    """Each member's signed ascending ranks [M, A] (1 = worst; non-finite ranked worst, tied)."""
    ens = get_ensemble(ens_or_name)
    cols = _columns(ens, scores, ())
    return np.stack([_signed_rank(c, s) for c, s in zip(cols, ens.signs)])


def _columns(ens: Ensemble, scores: Mapping[str, ArrayLike], stack: tuple[str, ...]) -> list[np.ndarray]:
    if ens.name in stack:
        raise ValueError(f"ensemble {stack[0]!r} is recursive: " + " -> ".join(stack + (ens.name,)))
    cols = [_column(scores, ens, m, stack) for m in ens.members]
    n = cols[0].shape[0]
    for m, c in zip(ens.members, cols):
        if c.shape[0] != n:
            raise ValueError(f"ensemble {ens.name!r}: scores[{m!r}] has {c.shape[0]} values, expected {n}")
    if n == 0:
        raise ValueError(f"ensemble {ens.name!r} ranks a population: got no architectures (A >= 1)")
    return cols


def _signed(col: np.ndarray, sign: int) -> np.ndarray:
    """sign · col with every non-finite value replaced by -inf (ranked worst)."""
    x = col * sign
    return np.where(np.isfinite(x), x, -np.inf)


def _signed_rank(col: np.ndarray, sign: int) -> np.ndarray:
    return rankdata(_signed(col, sign))


def majority_wins(cols: Sequence[np.ndarray]) -> np.ndarray:
    """Per architecture, the fraction of the other n − 1 that a strict majority of ``cols``
    score strictly lower (NaN lowest) -> [n] in [0, 1]; one architecture gets 1.0.

    The arithmetic of ``method="vote"`` and of :func:`zcfast.proxies.vote.rank_vote`
    ``method="copeland"`` (which calls this); ``cols``: M arrays [n]. Chunked by 512 rows, so
    memory is O(512 · n).
    """
    n = cols[0].shape[0]
    if n <= 1:
        return np.ones(n)
    wins = np.zeros(n)
    half = len(cols) / 2.0
    filled = [np.where(np.isnan(c), -np.inf, c) for c in cols]
    for lo in range(0, n, 512):
        hi = min(n, lo + 512)
        pos = np.zeros((hi - lo, n), dtype=np.int16)
        for f in filled:
            pos += f[lo:hi, None] > f[None, :]
        wins[lo:hi] = (pos > half).sum(axis=1)
    return wins / (n - 1)


def _aggregate(ens: Ensemble, scores: Mapping[str, ArrayLike], stack: tuple[str, ...]) -> np.ndarray:
    cols = _columns(ens, scores, stack)
    n = cols[0].shape[0]
    if ens.method == "vote":
        return majority_wins([_signed(c, s) for c, s in zip(cols, ens.signs)])
    ranks = [_signed_rank(c, s) for c, s in zip(cols, ens.signs)]
    if ens.method == "log_rank":
        return np.sum([np.log(r / n) for r in ranks], axis=0)
    if ens.method == "rank_sum":
        return np.sum(ranks, axis=0)
    if n == 1:
        return np.ones(1)
    return np.mean([(r - 1.0) / (n - 1) for r in ranks], axis=0)   # mean_rank


def aggregate(ens_or_name: str | Ensemble, scores: Mapping[str, ArrayLike]) -> np.ndarray:
    """The ensemble's value [A] for a population of A >= 1 architectures; higher = better.

    Args:
        ens_or_name: a registered ensemble's name or an :class:`Ensemble`.
        scores: ``{member: [A] raw scores}`` (the proxies' own values, same architecture order);
            a member that is itself an ensemble may be given or is aggregated from its members.
    Returns:
        float64 [A], every value finite (ranks are >= 1, so ``log_rank`` is too); non-finite
        member values are ranked worst (module docstring).
    Raises:
        ValueError: unknown ensemble, a missing member, lengths that differ, A = 0, recursion.
    """
    return _aggregate(get_ensemble(ens_or_name), scores, ())


for _ens in (
        Ensemble("te_nas", ("ntk_cond", "linear_regions"), (-1, 1), "rank_sum",
                 "TE-NAS: rank(-ntk_cond) + rank(linear_regions) over the population"),
        Ensemble("az_nas", ("az_expressivity", "az_progressivity", "az_trainability", "az_complexity"),
                 (1, 1, 1, 1), "log_rank",
                 "AZ-NAS: sum of log(rank/N) of expressivity, progressivity, trainability, complexity"),
        Ensemble("majority_vote", ("synflow", "jacob_cov", "snip"), (1, 1, 1), "vote",
                 "the paper's vote per architecture: share of the population a majority of "
                 "synflow, jacob_cov, snip ranks below it")):
    register_ensemble(_ens, _builtin=True)
del _ens
