"""Predictor-based search with a binary-relation GCN predictor (BRP-NAS style).

The predictor embeds a cell with a graph convolutional network over ``space.graph(arch)``
(adjacency ``[V, V]``, op one-hot ``[V, K]``) and answers "is architecture a better than b?"
with probability ``sigmoid(f(a) - f(b))``, where ``f`` is a scalar head on the GCN embedding.
It is trained as a binary classifier (BCE) on pairs of trained architectures. Because the
relation is the difference of two scores, ranking N candidates costs N forward passes instead
of N² pair comparisons (BRP-NAS feeds both embeddings to its classifier; this is zcfast's
documented deviation, docs/search.md).

Search (paper's BP-NAS setting: 100 trained architectures over 5 iterations): each iteration
ranks the untrained candidates with the predictor and trains ``ceil(n/2)`` of its best and the
rest drawn at random from its next ``explore_top`` best, then re-trains the predictor on every
architecture trained so far. Without warmup the first iteration is uniformly random.

Zero-cost warmup: score ``warmup_pool`` random architectures with the proxy (paper: 256 on
NB201, 512 on NB101) and pre-train the predictor on their proxy ranking; no training budget.

GCN defaults follow the paper's BRP-NAS: 4 layers, 600 hidden units, dropout 0.2, Adam lr
3.5e-4, weight decay 5e-4, batch 64 pairs.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from .common import (Arch, Ledger, Oracle, ProxySource, SearchResult, SearchStalled,
                     TrainedRecord, finish, make_rngs, sample_pool, warmup_ranking)

DEFAULT_ITERATIONS = 5
DEFAULT_HIDDEN = 600
DEFAULT_LAYERS = 4
DEFAULT_DROPOUT = 0.2
DEFAULT_LR = 3.5e-4
DEFAULT_WEIGHT_DECAY = 5e-4
DEFAULT_BATCH = 64
DEFAULT_TRAIN_STEPS = 100
DEFAULT_WARMUP_STEPS = 200
DEFAULT_EXPLORE_TOP = 100
DEFAULT_MAX_CANDIDATES = 20000
WARMUP_POOL = {"nb201": 256, "nb101": 512}


def default_warmup_pool(space: Any) -> int:
    """The paper's predictor warmup size: 256 on NB201, 512 on NB101 (256 elsewhere)."""
    return WARMUP_POOL.get(getattr(space, "name", ""), 256)


class GraphBatch:
    """Padded graph tensors of a list of architectures.

    Attributes:
        adj: row-normalised ``A + Aᵀ + I`` ``[N, V, V]`` float32 (zero rows for padding).
        feat: op one-hot ``[N, V, K]`` float32.
        mask: ``[N, V]`` float32, 1 for real vertices.
    """

    def __init__(self, graphs: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        if not graphs:
            raise ValueError("no graphs to batch")
        v = max(a.shape[0] for a, _ in graphs)
        k = graphs[0][1].shape[1]
        n = len(graphs)
        adj = np.zeros((n, v, v), dtype=np.float32)
        feat = np.zeros((n, v, k), dtype=np.float32)
        mask = np.zeros((n, v), dtype=np.float32)
        for i, (a, f) in enumerate(graphs):
            m = a.shape[0]
            if a.shape != (m, m) or f.shape != (m, k):
                raise ValueError(f"space.graph returned adjacency {a.shape} and features "
                                 f"{f.shape}; expected [V, V] and [V, {k}]")
            sym = a + a.T + np.eye(m, dtype=np.float32)
            adj[i, :m, :m] = sym / sym.sum(axis=1, keepdims=True)
            feat[i, :m] = f
            mask[i, :m] = 1.0
        self.adj = torch.from_numpy(adj)
        self.feat = torch.from_numpy(feat)
        self.mask = torch.from_numpy(mask)

    def __len__(self) -> int:
        return self.adj.shape[0]


class GCNRanker(nn.Module):
    """GCN encoder + scalar head: graphs ``[N, V, *]`` -> scores ``[N]``."""

    def __init__(self, in_dim: int, hidden: int = DEFAULT_HIDDEN, layers: int = DEFAULT_LAYERS,
                 dropout: float = DEFAULT_DROPOUT) -> None:
        super().__init__()
        if layers < 1 or hidden < 1:
            raise ValueError(f"GCN needs at least one layer and one hidden unit, "
                             f"got layers={layers}, hidden={hidden}")
        dims = [in_dim] + [hidden] * layers
        self.convs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, adj: torch.Tensor, feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = feat
        for conv in self.convs:
            h = self.dropout(torch.relu(torch.bmm(adj, conv(h))))
        g = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return self.head(g).squeeze(-1)


class BinaryRelationPredictor:
    """Trains a :class:`GCNRanker` on pairwise relations and ranks candidates.

    ``p(a better than b) = sigmoid(f(a) - f(b))``. All randomness comes from the torch
    generator state of the caller (the search runs under ``torch.random.fork_rng``).
    """

    def __init__(self, in_dim: int, hidden: int = DEFAULT_HIDDEN, layers: int = DEFAULT_LAYERS,
                 dropout: float = DEFAULT_DROPOUT, lr: float = DEFAULT_LR,
                 weight_decay: float = DEFAULT_WEIGHT_DECAY, batch: int = DEFAULT_BATCH) -> None:
        self.model = GCNRanker(in_dim, hidden, layers, dropout)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        self.batch = batch

    def fit(self, graphs: GraphBatch, targets: np.ndarray, steps: int,
            rng: np.random.Generator) -> float:
        """``steps`` Adam steps on random pairs of ``graphs`` ordered by ``targets`` ``[N]``.

        Pairs with equal or NaN targets are skipped. Returns the last batch loss (NaN if no
        usable pair exists).
        """
        valid = np.flatnonzero(~np.isnan(targets))
        if len(valid) < 2 or np.unique(targets[valid]).size < 2:
            return math.nan
        self.model.train()
        loss_value = math.nan
        y = torch.from_numpy(targets.astype(np.float64))
        for _ in range(steps):
            i = valid[rng.integers(0, len(valid), self.batch)]
            j = valid[rng.integers(0, len(valid), self.batch)]
            keep = targets[i] != targets[j]
            i, j = i[keep], j[keep]
            if len(i) == 0:
                continue
            idx, inv = np.unique(np.concatenate([i, j]), return_inverse=True)
            t = torch.from_numpy(idx)
            f = self.model(graphs.adj[t], graphs.feat[t], graphs.mask[t])
            fi, fj = f[torch.from_numpy(inv[:len(i)])], f[torch.from_numpy(inv[len(i):])]
            label = (y[torch.from_numpy(i)] > y[torch.from_numpy(j)]).float()
            loss = nn.functional.binary_cross_entropy_with_logits(fi - fj, label)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            loss_value = float(loss.detach())
        return loss_value

    @torch.no_grad()
    def score(self, graphs: GraphBatch, chunk: int = 4096) -> np.ndarray:
        """Predicted relative scores ``[N]`` (larger = better); deterministic (eval mode)."""
        self.model.eval()
        out = [self.model(graphs.adj[s:s + chunk], graphs.feat[s:s + chunk],
                          graphs.mask[s:s + chunk]) for s in range(0, len(graphs), chunk)]
        return torch.cat(out).numpy().astype(np.float64)


def _split(budget: int, iterations: int) -> list[int]:
    base, extra = divmod(budget, iterations)
    return [base + (1 if i < extra else 0) for i in range(iterations)]


def brp(space: Any, oracle: Oracle, budget: int, *, seed: int = 0,
        iterations: int = DEFAULT_ITERATIONS, hidden: int = DEFAULT_HIDDEN,
        layers: int = DEFAULT_LAYERS, dropout: float = DEFAULT_DROPOUT, lr: float = DEFAULT_LR,
        weight_decay: float = DEFAULT_WEIGHT_DECAY, batch: int = DEFAULT_BATCH,
        train_steps: int = DEFAULT_TRAIN_STEPS, warmup_steps: int = DEFAULT_WARMUP_STEPS,
        explore_top: int = DEFAULT_EXPLORE_TOP, max_candidates: int = DEFAULT_MAX_CANDIDATES,
        warmup: ProxySource | None = None, warmup_pool: int | None = None,
        threads: int | None = 1,
        on_train: Callable[[TrainedRecord], None] | None = None) -> SearchResult:
    """Binary-relation-predictor search over ``space`` with ``budget`` trained architectures.

    Candidates are the whole space when it has at most ``max_candidates`` architectures,
    otherwise a fresh uniform sample of ``max_candidates`` per iteration. ``threads``: torch
    intra-op threads while the predictor runs (restored afterwards; ``None`` leaves the
    setting alone). One thread is fastest for these small GCNs on a shared CPU.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if budget < iterations:
        raise ValueError(f"budget {budget} is smaller than the {iterations} predictor iterations "
                         "(each trains at least one architecture)")
    if explore_top < 0 or train_steps < 0 or warmup_steps < 0:
        raise ValueError("explore_top, train_steps and warmup_steps must be non-negative")
    pool_size = default_warmup_pool(space) if warmup_pool is None else warmup_pool
    if warmup is not None and pool_size < 2:
        raise ValueError(f"predictor warmup needs at least 2 proxy-scored architectures, got {pool_size}")
    rng, nprng = make_rngs(seed)
    ledger = Ledger(space, oracle, budget, on_train)
    config = {"iterations": iterations, "hidden": hidden, "layers": layers, "dropout": dropout,
              "lr": lr, "weight_decay": weight_decay, "batch": batch, "train_steps": train_steps,
              "warmup_steps": warmup_steps if warmup is not None else None,
              "explore_top": explore_top, "warmup": getattr(warmup, "name", None),
              "warmup_pool": pool_size if warmup is not None else None}
    graph_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def graphs_of(archs: Sequence[Arch]) -> GraphBatch:
        out = []
        for a in archs:
            k = space.key(a)
            if k not in graph_cache:
                graph_cache[k] = space.graph(a)
            out.append(graph_cache[k])
        return GraphBatch(out)

    size = space.size()
    enumerable = size is not None and size <= max_candidates
    all_candidates = _distinct(space, space.enumerate()) if enumerable else None
    all_graphs = graphs_of(all_candidates) if enumerable else None
    in_dim = (all_graphs.feat.shape[-1] if all_graphs is not None
              else space.graph(space.sample(rng))[1].shape[1])
    stalled = False
    with _num_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        predictor = BinaryRelationPredictor(in_dim, hidden, layers, dropout, lr, weight_decay, batch)
        pretrained = False
        if warmup is not None:
            ranked, scores = warmup_ranking(space, warmup, pool_size, rng)
            predictor.fit(graphs_of(ranked), scores, warmup_steps, nprng)
            pretrained = True
        trained: list[Arch] = []
        try:
            for it, n in enumerate(_split(budget, iterations)):
                if ledger.done:
                    break
                if enumerable:
                    cands, cgraphs = all_candidates, all_graphs
                else:
                    cands = sample_pool(space, max_candidates, rng)
                    cgraphs = graphs_of(cands)
                untrained = np.array([not ledger.seen(a) for a in cands])
                idx = np.flatnonzero(untrained)
                if len(idx) == 0:
                    break
                if it == 0 and not pretrained:
                    picks = [(int(i), "random") for i in nprng.permutation(idx)[:n]]
                else:
                    pred = predictor.score(cgraphs)[idx]
                    order = idx[np.argsort(-pred, kind="stable")]
                    n_best = (n + 1) // 2
                    picks = [(int(i), "predictor") for i in order[:n_best]]
                    rest = order[n_best:n_best + max(explore_top, n - n_best)]
                    chosen = nprng.permutation(rest)[:n - n_best]
                    picks += [(int(i), "predictor-explore") for i in chosen]
                for i, source in picks:
                    if ledger.done:
                        break
                    ledger.train(cands[i], source)
                    trained.append(cands[i])
                if it < iterations - 1 and not ledger.done:
                    accs = np.array([ledger.accuracy(a) for a in trained], dtype=np.float64)
                    predictor.fit(graphs_of(trained), accs, train_steps, nprng)
        except SearchStalled:
            stalled = True
    return finish("brp", seed, ledger, [warmup], config, stalled)


@contextlib.contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (``None``: leave it alone)."""
    old = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _distinct(space: Any, archs: Any) -> list[Arch]:
    """``archs`` with one representative per ``space.key`` (first occurrence kept)."""
    seen: set[str] = set()
    out = []
    for a in archs:
        k = space.key(a)
        if k not in seen:
            seen.add(k)
            out.append(a)
    return out
