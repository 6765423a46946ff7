"""REINFORCE over the space's choices, with zero-cost policy warmup.

The policy is a factorised categorical distribution over the decisions of
``space.num_choices`` (one logit vector per decision; ``space.from_choices`` turns a draw into
an architecture). Each trained architecture gives reward ``accuracy / 100``; the update is
REINFORCE with a moving-average baseline::

    b <- decay * b + (1 - decay) * r            (b starts at the first reward)
    logits <- Adam step on -(r - b) * log pi(choices)

The gradient of the log-probability of a factorised categorical is exact and closed form
(``onehot(c_d) - softmax(logits_d)``), so the controller is plain numpy: cheap and
deterministic. Already-trained draws are free lookups and still update the policy. Draws that
the space rejects (NB101 constraints) are re-drawn without an update.

Zero-cost warmup (the paper did not release its RL recipe; this is zcfast's, docs/search.md):
score a pool of ``warmup_pool`` random architectures with the proxy and pre-train the policy on
the best ``warmup_top`` of them by maximum likelihood. For a factorised categorical the maximum
likelihood fit is closed form: ``logits_d[c] = log(count_d[c] + smoothing)`` over the top
architectures' choices. No training budget is spent.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .common import (Ledger, Oracle, ProxySource, SearchResult, SearchStalled, TrainedRecord,
                     finish, make_rngs, warmup_ranking)

DEFAULT_LR = 0.1
DEFAULT_BASELINE_DECAY = 0.9
DEFAULT_WARMUP_POOL = 3000
DEFAULT_WARMUP_TOP = 64
DEFAULT_SMOOTHING = 1.0


class FactorisedPolicy:
    """Independent categoricals, one per decision; logits ``[D, max(num_choices)]``."""

    def __init__(self, num_choices: list[int], lr: float = DEFAULT_LR) -> None:
        if not num_choices or any(int(c) < 1 for c in num_choices):
            raise ValueError(f"space.num_choices must be a non-empty list of positive ints, "
                             f"got {num_choices!r}")
        self.num_choices = [int(c) for c in num_choices]
        width = max(self.num_choices)
        self.mask = np.zeros((len(num_choices), width), dtype=bool)
        for d, c in enumerate(self.num_choices):
            self.mask[d, :c] = True
        self.logits = np.zeros((len(num_choices), width))
        self.lr = lr
        self._m = np.zeros_like(self.logits)
        self._v = np.zeros_like(self.logits)
        self._t = 0

    def probs(self) -> np.ndarray:
        """Choice probabilities ``[D, max(num_choices)]`` (0 outside each decision's range)."""
        z = np.where(self.mask, self.logits, -np.inf)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def sample(self, rng: np.random.Generator) -> list[int]:
        p = self.probs()
        u = rng.random(len(self.num_choices))
        cum = np.cumsum(p, axis=1)
        return [int(min(np.searchsorted(cum[d], u[d], side="right"), self.num_choices[d] - 1))
                for d in range(len(self.num_choices))]

    def log_prob(self, choices: list[int]) -> float:
        p = self.probs()
        return float(sum(math.log(p[d, c]) for d, c in enumerate(choices)))

    def update(self, choices: list[int], advantage: float) -> None:
        """One Adam step ascending ``advantage * log pi(choices)``."""
        grad = -self.probs()                          # d log pi / d logits = onehot - softmax
        grad[np.arange(len(choices)), choices] += 1.0
        grad = np.where(self.mask, -advantage * grad, 0.0)   # minimise the negative objective
        self._t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        self._m = b1 * self._m + (1 - b1) * grad
        self._v = b2 * self._v + (1 - b2) * grad * grad
        mhat = self._m / (1 - b1 ** self._t)
        vhat = self._v / (1 - b2 ** self._t)
        self.logits -= self.lr * mhat / (np.sqrt(vhat) + eps)

    def fit_counts(self, choice_lists: list[list[int]], smoothing: float = DEFAULT_SMOOTHING) -> None:
        """Maximum-likelihood (Laplace-smoothed) fit to a set of architectures' choices."""
        counts = np.zeros_like(self.logits)
        for choices in choice_lists:
            counts[np.arange(len(choices)), choices] += 1.0
        self.logits = np.where(self.mask, np.log(counts + smoothing), 0.0)


MAX_INVALID_DRAWS = 1000


def _valid_draw(space: Any, policy: FactorisedPolicy,
                rng: np.random.Generator) -> tuple[list[int], Any]:
    """A policy draw that ``space.from_choices`` accepts (rejection sampling).

    Spaces with constraints (NB101: at most 9 edges, a connected cell) reject some choice
    vectors; such draws are discarded without a policy update, so the policy is effectively
    conditioned on validity.
    """
    table = getattr(space, "choice_table", None)
    if callable(table):  # a subset (e.g. an NB101 benchmark file smaller than the space)
        return _subset_draw(table(), policy, rng)
    for _ in range(MAX_INVALID_DRAWS):
        choices = policy.sample(rng)
        try:
            return choices, space.from_choices(choices)
        except ValueError:
            continue
    raise ValueError(f"{MAX_INVALID_DRAWS} consecutive policy draws were invalid architectures "
                     f"of {space.name}")


def _subset_draw(table: tuple[np.ndarray, list[Any]], policy: FactorisedPolicy,
                 rng: np.random.Generator) -> tuple[list[int], Any]:
    """A draw among a subset's architectures with probability ∝ π(their ``to_choices`` vector):
    the policy conditioned on the subset, exactly (rejection sampling would need ~size/len draws)."""
    choices, archs = table
    logp = np.log(np.maximum(policy.probs(), 1e-300))
    c = np.asarray(choices, dtype=np.int64)                       # [A, D]
    scores = logp[np.arange(c.shape[1])[None, :], c].sum(axis=1)  # [A] log π(c_a)
    w = np.exp(scores - scores.max())
    i = int(rng.choice(len(archs), p=w / w.sum()))
    return [int(v) for v in c[i]], archs[i]


def reinforce(space: Any, oracle: Oracle, budget: int, *, seed: int = 0, lr: float = DEFAULT_LR,
              baseline_decay: float = DEFAULT_BASELINE_DECAY,
              warmup: ProxySource | None = None, warmup_pool: int = DEFAULT_WARMUP_POOL,
              warmup_top: int = DEFAULT_WARMUP_TOP, smoothing: float = DEFAULT_SMOOTHING,
              on_train: Callable[[TrainedRecord], None] | None = None) -> SearchResult:
    """REINFORCE search over ``space`` with ``budget`` trained architectures -> SearchResult."""
    if not 0.0 <= baseline_decay < 1.0:
        raise ValueError(f"baseline decay must be in [0, 1), got {baseline_decay}")
    if lr <= 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    if warmup is not None and not 1 <= warmup_top <= warmup_pool:
        raise ValueError(f"warmup_top must be in [1, warmup_pool={warmup_pool}], got {warmup_top}")
    rng, nprng = make_rngs(seed)
    ledger = Ledger(space, oracle, budget, on_train)
    policy = FactorisedPolicy(list(space.num_choices), lr)
    config = {"lr": lr, "baseline_decay": baseline_decay, "policy": "factorised categorical",
              "warmup": getattr(warmup, "name", None),
              "warmup_pool": warmup_pool if warmup is not None else None,
              "warmup_top": warmup_top if warmup is not None else None}
    stalled = False
    baseline: float | None = None
    try:
        if warmup is not None:
            ranked, _ = warmup_ranking(space, warmup, warmup_pool, rng)
            policy.fit_counts([list(space.to_choices(a)) for a in ranked[:warmup_top]], smoothing)
        while not ledger.done:
            choices, arch = _valid_draw(space, policy, nprng)
            acc = ledger.train(arch, "policy")
            reward = 0.0 if math.isnan(acc) else acc / 100.0
            baseline = reward if baseline is None else baseline
            policy.update(choices, reward - baseline)
            baseline = baseline_decay * baseline + (1 - baseline_decay) * reward
    except SearchStalled:
        stalled = True
    return finish("reinforce", seed, ledger, [warmup], config, stalled)
