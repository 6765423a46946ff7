"""The paper's correlation study (Abdelfattah et al., ICLR 2021, Table 1 and Figure 1).

Score a sample (or all) of a search space's architectures with zero-cost proxies on one real
minibatch, join with the benchmark's ground truth, and report per proxy Spearman ρ, Kendall τ,
ρ/τ within the top 10 % by accuracy, the top-10 % overlap, the paper's pairwise vote agreement
and seconds per architecture, beside the paper's numbers and a reduced-training baseline.

Resumability: every score is written to a :class:`zcfast.store.ResultStore` as it is computed
(buffered at most :data:`FLUSH_SECONDS` seconds). Each proxy has its own run in the store,
identified by everything that determines its value (space, proxy, batch fingerprint, number
of classes, init seed, device type, and when not the defaults the network variant and the
per-architecture batch scheme), and rows are keyed by the architecture's canonical text
(one row per benchmark entry, as the paper scores every entry, isomorphic ones included). So:

- an interrupted study continues where it stopped, recomputing nothing that was stored;
- a larger ``n`` with the same ``seed`` extends a smaller one (the sample is a prefix of one
  seeded permutation of the space), and a study of another subset or with other proxies
  reuses every score already stored (e.g. ``synflow`` over all 15,625 NB201 entries, then all
  proxies on 1,000 of them, scores synflow on none of the 1,000 again).

Architectures missing several proxies are scored by one ``score_arch`` call (shared passes);
the per-proxy time is measured separately, each proxy alone, on the first ``time_sample``
architectures of the sample.

Example::

    res = zcfast.correlate.correlate("nb201", "cifar10", proxies="paper", n=1000, seed=0,
                                      out="runs/c10")
    print(zcfast.correlate.format_table(res.summary))
"""
from __future__ import annotations

import csv
import functools
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from . import data as zdata
from . import metrics
from . import options
from .proxies.registry import PAPER_PROXIES

__all__ = [
    "PAPER_PROXIES",
    "VOTE_PROXIES",
    "PAPER_SPEARMAN",
    "PAPER_VOTE",
    "PAPER_GROUND_TRUTH",
    "ANCHOR_SOURCES",
    "PUBLISHED_ANCHORS",
    "StudyResult",
    "resolve_proxies",
    "sample_archs",
    "correlate",
    "summarize",
    "format_table",
    "write_outputs",
    "table_columns",
    "result_records",
    "write_table",
    "read_table",
    "join_tables",
    "table_proxies",
    "export_table",
    "subsample_spread",
]

#: The proxies of the paper's vote.
VOTE_PROXIES: tuple[str, ...] = ("synflow", "jacob_cov", "snip")
#: |Spearman ρ| over all 15,625 NB201 architectures, paper Table 1 (official notebook output).
PAPER_SPEARMAN: dict[str, dict[str, float]] = {
    "cifar10": {"grad_norm": 0.594, "snip": 0.596, "grasp": 0.514, "fisher": 0.360, "synflow": 0.737, "jacob_cov": 0.731},
    "cifar100": {"grad_norm": 0.637, "snip": 0.637, "grasp": 0.547, "fisher": 0.385, "synflow": 0.763, "jacob_cov": 0.704},
    "ImageNet16-120": {"grad_norm": 0.578, "snip": 0.578, "grasp": 0.549, "fisher": 0.327, "synflow": 0.751, "jacob_cov": 0.701},
}
#: The paper's pairwise vote agreement (synflow, jacob_cov, snip), official notebook output.
PAPER_VOTE: dict[str, float] = {"cifar10": 0.8170822831897641, "cifar100": 0.8323757385510576,
                                "ImageNet16-120": 0.8131110314104887}
#: The protocols of the published anchors (:data:`PUBLISHED_ANCHORS`), by source key: each
#: anchor is read under its own protocol, never beside the paper's column as if it were one.
ANCHOR_SOURCES: dict[str, str] = {
    "suite-zero": "NAS-Bench-Suite-Zero (NASLib's implementations): 9,445 unique cells, validation accuracy, "
                  "batch 32",
    "vkdnw": "VKDNW (CVPR 2025) re-run of each proxy's official code, mean of 5 runs",
    "own": "the proxy's own paper or repository under its own protocol (MeCo: its correlation script, one "
           "real image; GradSign: its paper; AZ-NAS: its notebook, against ori-test; SWAP: its paper)",
}
#: Published |Spearman ρ| of the proxies after the paper, per (space, dataset):
#: ``proxy -> (|ρ|, source key of ANCHOR_SOURCES)``. NAS-Bench-Suite-Zero where it gives one,
#: else the VKDNW re-run (ZiCo is not in NAS-Bench-Suite-Zero). NAS-Bench-Suite-Zero computed
#: epe_nas with NASLib's code, which takes the official branch at 10 classes (so CIFAR-10's .787
#: anchors both ``epe_nas`` and ``epe_nas_naslib``) and the > 100-class branch on ImageNet16-120
#: (so its .319 anchors ``epe_nas_naslib`` only; the official branch has no published figure there).
PUBLISHED_ANCHORS: dict[tuple[str, str], dict[str, tuple[float, str]]] = {
    ("nb201", "cifar10"): {
        "nwot": (0.792, "suite-zero"), "jacob_cov": (0.818, "suite-zero"), "epe_nas": (0.787, "suite-zero"),
        "epe_nas_naslib": (0.787, "suite-zero"), "zen": (0.101, "suite-zero"), "l2_norm": (0.720, "suite-zero"),
        "params": (0.747, "suite-zero"), "flops": (0.714, "suite-zero"), "zico": (0.802, "vkdnw"),
        "meco": (0.89, "own"), "gradsign": (0.765, "own"), "te_nas": (0.722, "vkdnw"), "az_nas": (0.913, "own"),
    },
    ("nb201", "cifar100"): {
        "nwot": (0.799, "vkdnw"), "jacob_cov": (0.820, "vkdnw"), "zen": (0.072, "vkdnw"), "zico": (0.809, "vkdnw"),
        "gradsign": (0.793, "own"), "te_nas": (0.723, "vkdnw"), "az_nas": (0.880, "vkdnw"), "swap_reg": (0.90, "own"),
    },
    ("nb201", "ImageNet16-120"): {
        "nwot": (0.795, "suite-zero"), "jacob_cov": (0.781, "suite-zero"), "epe_nas_naslib": (0.319, "suite-zero"),
        "zen": (0.112, "suite-zero"), "zico": (0.779, "vkdnw"), "l2_norm": (0.799, "vkdnw"),
        "params": (0.763, "vkdnw"), "flops": (0.718, "vkdnw"),
        "gradsign": (0.783, "own"), "te_nas": (0.709, "vkdnw"), "az_nas": (0.859, "vkdnw"),
    },
}
#: Reduced-training baselines per (space, dataset): (label, accuracy metric, cost metric, cost unit).
BASELINES: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {
    ("nb201", "cifar10"): [("train_12ep", "hp12_valacc", "hp12_cost", "s of training (benchmark record)")],
}
#: Default ground-truth metric per (space, dataset): the shipped column closest to the paper's.
#: The paper ranked NB201 CIFAR-10 against the test accuracy of the ``cifar10-valid`` training
#: run (trained on 25k images); that column is not shipped, but the validation accuracy of the
#: same run is (``valid`` = ``cifar10_val_nbsuitezero``). CIFAR-100 / ImageNet16-120: the
#: 200-epoch test accuracy, the paper's column.
PAPER_GROUND_TRUTH: dict[tuple[str, str], str] = {("nb201", "cifar10"): "valid"}
#: With a benchmark file that has it (``NB201Space.has_metric(ds, "paper")``, e.g. a NAS-Bench-201
#: ``.pth`` or NATS-Bench folder imported by ``zcfast.formats.nb201``), the default metric is the
#: paper's own column: ``paper`` = the ``cifar10-valid`` run's 200-epoch test accuracy (ori-test).
PAPER_METRIC: dict[tuple[str, str], str] = {("nb201", "cifar10"): "paper"}


#: What a default metric means, for the table's protocol line and summary.json.
METRIC_NOTES: dict[str, str] = {
    "paper": "the cifar10-valid run's 200-epoch test accuracy, the column the paper ranked against",
    "valid": "the cifar10-valid run's validation accuracy, the shipped stand-in for the paper's column",
}


def default_metric(sp: Any, ds: str) -> str:
    """The default ground-truth metric of a study on ``sp`` / ``ds``: :data:`PAPER_METRIC` when
    the space's benchmark has that column (``sp.has_metric``), else :data:`PAPER_GROUND_TRUTH`'s
    shipped stand-in, else ``test``."""
    paper = PAPER_METRIC.get((sp.name, ds))
    has = getattr(sp, "has_metric", None)
    if paper is not None and callable(has) and has(ds, paper):  # a damaged benchmark file raises, naming it
        return paper
    return PAPER_GROUND_TRUTH.get((sp.name, ds), "test")


def _gt_column(sp: Any, ds: str, metric: str) -> str | None:
    """The table column ``metric`` reads (NB201; ``None`` for other spaces or raw metrics)."""
    if sp.name != "nb201":
        return None
    column_for = getattr(sp, "column_for", None)
    if not callable(column_for):  # a caller's own space object named nb201 (tests/test_correlate.py)
        from .spaces import nb201

        column_for = nb201.column_for
    try:
        return column_for(ds, metric)
    except (ValueError, KeyError):
        return metric


def _gt_summary(sp: Any, ds: str, metric: str, column: str | None) -> dict[str, Any]:
    """summary.json's ``ground_truth``: metric and column; with a benchmark file also the file
    (``benchmark``) and, for NB201 CIFAR-10, what the column is (``note``)."""
    out: dict[str, Any] = {"metric": metric, "column": column}
    source = _benchmark_source(sp)
    if source is not None:
        out["benchmark"] = source
        note = METRIC_NOTES.get(metric) if sp.name == "nb201" and ds == "cifar10" else None
        if note:
            out["note"] = note
    return out


def _benchmark_source(sp: Any) -> str | None:
    """The benchmark file the space reads (``data_path``), or ``None`` for shipped ground truth."""
    records_path = getattr(sp, "_records_path", None)   # NB101: data_path or $ZCFAST_NB101_PATH
    if callable(records_path):
        v = records_path()
        return None if v is None else str(v)
    v = getattr(sp, "data_path", None)                  # NB201 / DARTS: data_path or its env variable
    return None if v is None or callable(v) else str(v)
#: Longest time (s) a computed score waits in memory before it is committed to the store.
FLUSH_SECONDS: float = 2.0

ScoreFn = Callable[..., Mapping[str, float]]


@dataclass
class StudyResult:
    """What :func:`correlate` computed.

    Attributes:
        archs: canonical text of each studied architecture, ``[n]``, in sample order.
        index: benchmark index of each architecture (``-1`` when the space has none), ``[n]``.
        acc: ground-truth accuracy ``[n]`` (NaN where the benchmark has none).
        scores: proxy -> ``[n]`` float64 scores (NaN where scoring failed or gave NaN).
        errors: proxy -> ``[n]`` error text (``""`` when none).
        baselines: label -> (accuracy ``[n]``, cost ``[n]``) of each reduced-training baseline.
        seconds: ``[n]`` wall seconds of the ``score_arch`` call that produced each
            architecture's scores (0 for rows scored by an earlier study with other proxies).
        summary: the JSON summary (see :func:`summarize`).
        files: output name -> path (when ``out`` was given).
        keys: ``space.key(arch)`` of each architecture ``[n]`` (isomorphic cells share one).
    """

    archs: list[str]
    index: np.ndarray
    acc: np.ndarray
    scores: dict[str, np.ndarray]
    errors: dict[str, list[str]]
    baselines: dict[str, tuple[np.ndarray, np.ndarray]]
    seconds: np.ndarray
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------
#: Largest finite space :func:`sample_archs` enumerates and shuffles; larger ones (DARTS,
#: ~1.1e18 genotypes) are sampled lazily with ``space.sample``, in memory proportional to ``n``.
ENUMERATE_LIMIT: int = 1_000_000

#: The one proxy resolver (``zcfast.options.resolve_proxies``), kept under its old name.
resolve_proxies = options.resolve_proxies


def sample_archs(space: Any, n: int | None, seed: int) -> list[Any]:
    """``n`` distinct architectures drawn uniformly without replacement (``None``: all).

    A finite space of at most :data:`ENUMERATE_LIMIT` architectures is enumerated and the
    sample is the first ``n`` of ``random.Random(seed).shuffle`` of the enumeration;
    ``n=None`` returns the whole space in enumeration (benchmark index) order. Any other space
    (infinite, or finite but huge like DARTS) is sampled lazily with ``space.sample`` and
    de-duplicated by canonical text, so memory and time grow with ``n``, never with the size
    of the space. Either way a larger ``n`` extends a smaller one with the same seed.

    Raises:
        ValueError: ``n`` not a positive integer, ``n`` larger than the space, or ``n=None``
            for a space too large to enumerate.
    """
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"n must be a positive integer or 'all', got {n!r}")
    size = space.size()
    if size is not None and size <= ENUMERATE_LIMIT:
        every = list(space.enumerate())
        if n is None:
            return every
        if n > len(every):
            raise ValueError(f"n={n} is larger than the {space.name} space ({len(every)} architectures); use --n all")
        order = list(range(len(every)))
        random.Random(seed).shuffle(order)
        return [every[i] for i in order[:n]]
    if n is None:
        what = "infinite" if size is None else f"too large to enumerate ({float(size):.3g} architectures)"
        raise ValueError(f"n='all' is not possible: the {space.name} space is {what}; give a sample size n")
    if size is not None and n > size:
        raise ValueError(f"n={n} is larger than the {space.name} space ({size} architectures)")
    rng = random.Random(seed)
    seen: dict[str, Any] = {}
    tries = 0
    while len(seen) < n:
        a = space.sample(rng)
        seen.setdefault(space.encode(a), a)
        tries += 1
        if tries > 100 * n:
            raise ValueError(f"could not draw {n} distinct architectures from {space.name}")
    return list(seen.values())


def _default_score_fn(space: Any, arch: Any, inputs: torch.Tensor | None, targets: torch.Tensor | None,
                      proxies: Sequence[str], seed: int, num_classes: int, device: str,
                      variant: str = "benchmark",
                      batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Mapping[str, Any]:
    """``zcfast.score_arch(..., detailed=True)``: ``{proxy: ProxyResult}``, whose ``.error``
    says why a value is not finite (it reaches the store row and scores.csv). ``batches``
    (several mini-batches, ``inputs`` / ``targets`` then None) is passed through."""
    import zcfast

    return zcfast.score_arch(space, arch, inputs, targets, list(proxies), seed=seed,
                             num_classes=num_classes, device=device, variant=variant, detailed=True,
                             batches=batches)


# ------------------------------------------------------------------------------------------
# scoring with the store
# ------------------------------------------------------------------------------------------
class _Writer:
    """Buffers ScoreRows per run and commits them at most FLUSH_SECONDS after they were made."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.buf: dict[str, list[Any]] = {}
        self.last = time.monotonic()

    def add(self, run_id: str, row: Any) -> None:
        self.buf.setdefault(run_id, []).append(row)

    def maybe_flush(self) -> None:
        """Commit if the oldest buffered row waited FLUSH_SECONDS (called between architectures)."""
        if time.monotonic() - self.last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        for rid, rows in self.buf.items():
            if rows:
                self.store.put_many(rid, rows)
        self.buf = {}
        self.last = time.monotonic()


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def correlate(
    space: str | Any = "nb201",
    dataset: str = "cifar10",
    proxies: str | Sequence[str] = "paper",
    n: int | None = 1000,
    seed: int = 0,
    *,
    out: str | os.PathLike | None = None,
    store: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    batch_size: int = 64,
    batch_seed: int = 42,
    augment: bool = True,
    init_seed: int = 42,
    metric: str | None = None,
    device: str = "cpu",
    nan_policy: str = "omit",
    time_sample: int = 5,
    progress: bool = True,
    score_fn: ScoreFn | None = None,
    plots: bool = True,
    compute: bool = True,
    shard: tuple[int, int] | None = None,
    workers: int = 0,
    recycle: int = 10,
    variant: str = "benchmark",
    batch_per_arch: bool = False,
    n_batches: int = 1,
    n_boot: int = 1000,
    benchmark: str | os.PathLike | None = None,
) -> StudyResult:
    """Run the correlation study; see the module docstring.

    Args:
        space: a space name (``zcfast.spaces.get``) or a SearchSpace.
        dataset: ground-truth dataset: ``cifar10``, ``cifar100``, ``ImageNet16-120``; also sets
            the number of classes of the scored networks (10 / 100 / 120) and the normalisation.
        proxies: a proxy set (``"paper"``: the paper's six, the default; ``"all"``: every built-in
            proxy; ``"suite-zero"``; ``"every"``: see :func:`zcfast.options.resolve_proxies`), a
            comma-separated string or a list. Ensemble names (:mod:`zcfast.ensemble`) are
            allowed: their members are scored (and stored) as proxies, and each ensemble is a
            column of its own, aggregated over the studied sample, with the statistics of a
            proxy and the summed per-proxy cost of its members.
        n: architectures to study (uniform without replacement, ``seed``); ``None`` = all.
        seed: sampling seed.
        out: directory for ``scores.csv``, ``summary.json``, ``table.txt`` and PNG plots (and
            the default store ``results.sqlite``); None writes nothing but the store.
        store: result store path (default ``out/results.sqlite``; one of them is required).
        data: images for the batch (shipped name or user dataset path); default the shipped
            set of ``dataset`` (see :func:`zcfast.data.paper_batch`).
        batch_size, batch_seed, augment: the batch (paper: 64, 42, augmented).
        batch_per_arch: False (default): one batch (``batch_seed``) for every architecture, as
            the paper's text says. True: a new batch for each architecture, as the official
            loop (``iter(train_loader)`` per architecture), drawn reproducibly from
            (``batch_seed``, ``space.key(arch)``) with the same images and augmentation
            (:class:`zcfast.data.PaperBatches`), so runs stay resumable and shardable.
        n_batches: mini-batches per architecture (``--batches``; default 1): ``n_batches``
            disjoint batches of ``batch_size`` from :func:`zcfast.data.paper_batches` (with
            ``batch_per_arch``, that draw with each architecture's seed), passed as
            ``score_arch(..., batches=[...])``: multi-batch needs (ZiCo's) read all of them,
            single-batch proxies the first, which is the one-batch study's batch. With one batch
            a multi-batch proxy splits it (ZiCo: two halves). The runs are keyed by
            :func:`zcfast.data.batches_fingerprint` of the list (one batch: today's key), so
            every ``n_batches`` is a run of its own. A ``score_fn`` must then take ``batches``.
        init_seed: seed of the per-architecture initialisation (``zcfast.proxies.arch_seed``).
        variant: the network built for each architecture (``zcfast.score_arch``):
            ``"benchmark"`` (default), or for NB201 ``"official"``, the zero-cost-nas paper's
            model (cell conv biases, affine-free statistics-free cell BatchNorms). Applies to the
            default scorer only (a ``score_fn`` builds its own network).
        metric: ground-truth metric of ``space.ground_truth`` (NB201: ``test`` = 200-epoch test
            accuracy, ``test_robot``, ``valid``, ...). Default (:func:`default_metric`): with an
            NB201 benchmark file holding it, ``paper`` (the ``cifar10-valid`` run's test accuracy,
            the paper's column) for CIFAR-10; else the shipped column closest to the paper's
            (:data:`PAPER_GROUND_TRUTH`): for NB201 CIFAR-10 ``valid``, the accuracy of the
            ``cifar10-valid`` training run the paper ranked against (its test accuracy is not
            shipped); ``test`` otherwise.
        device: ``cpu`` or ``cuda``.
        nan_policy: how NaN scores are ranked (:mod:`zcfast.metrics`).
        time_sample: architectures on which each proxy is timed alone (0: skip).
        progress: show a tqdm progress bar (rate, ETA) on stderr.
        score_fn: scorer with ``score_arch``'s signature (default ``zcfast.score_arch``).
        plots: write the PNG plots (needs matplotlib).
        compute: False = score nothing: report on the sampled architectures already in the
            store with every proxy (e.g. while a long run is still going); the others are left
            out and counted in ``summary["missing_archs"]``.
        shard: ``(i, k)``: score only the sample positions ``p`` with ``p % k == i`` (run k
            processes on one store to use k cores; SQLite serialises their short write
            transactions). The report covers the sampled architectures complete in the store.
        workers: 0 scores in this process; k > 0 scores in k spawned worker processes (one
            torch thread each), this process being the only store writer. Spawned workers
            re-import the caller's main module: call from under ``if __name__ == "__main__":``
            in a script, and pass a ``score_fn`` defined at module level (picklable).
        recycle: with workers, each worker process is replaced after this many architectures,
            which bounds the memory of a scorer that leaks per call.
        n_boot: bootstrap resamples of each ρ / τ interval (:func:`summarize`; 0: none).
        benchmark: the benchmark file the ground truth is read from (``--benchmark``; see
            :func:`zcfast.options.resolve_space`): NB101's tfrecord / records, an NB201 ``.pth`` or
            NATS-Bench folder. The space (a configured copy) travels to worker processes with it.

    Returns:
        :class:`StudyResult`.

    Raises:
        ValueError / FileNotFoundError: bad space, dataset, proxy, metric, data, variant or
        store, all checked before the store is opened or written.

    The store key of each proxy's run (what determines a value) includes ``variant`` and
    ``batch_per_arch`` when they are not the defaults, so scores of different variants or
    batch schemes never mix (and stores written before these options existed keep their keys).
    """
    from . import spaces
    from .scoring import check_space_variant
    from .store import BatchKey, ResultStore, RunConfig, ScoreRow

    # ---- validate everything before touching the store (zcfast.options: the one front door)
    ds = options.resolve_dataset(dataset)
    sp = options.resolve_space(space, ground_truth_for="correlate", dataset=ds, benchmark=benchmark)
    if nan_policy not in metrics.NAN_POLICIES:
        raise ValueError(f"unknown nan_policy {nan_policy!r}; known: {', '.join(metrics.NAN_POLICIES)}")
    # ensembles (zcfast.ensemble, when present): their members are scored and stored as proxies;
    # each ensemble is aggregated over the studied sample (the population ranked together)
    resolve_scoring = getattr(options, "resolve_scoring", None)
    if resolve_scoring is not None:
        names_t, ensembles = resolve_scoring(proxies)
    else:
        names_t, ensembles = options.resolve_proxies(proxies), ()
    names = list(names_t)
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (i, k) with 0 <= i < k, got {shard!r}")
    options.check_count(workers, "workers", minimum=0)
    options.check_count(recycle, "recycle")
    options.check_count(batch_size, "batch_size")
    options.check_count(time_sample, "time_sample", minimum=0)
    options.check_count(n_boot, "n_boot (--bootstrap)", minimum=0)
    device_type = options.resolve_device(device).type
    if out is None and store is None:
        raise ValueError("give an output directory (out) or a store path")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"out: {out} is an existing file, not a directory; give a directory for the outputs")
    check_space_variant(sp, variant)
    if score_fn is not None and variant != "benchmark":
        raise ValueError(f"variant {variant!r} applies to the default scorer; a score_fn builds its own network")
    if not isinstance(batch_per_arch, bool):
        raise ValueError(f"batch_per_arch must be a bool, got {batch_per_arch!r}")
    options.check_count(n_batches, "n_batches (--batches)")
    if n_batches > 1 and score_fn is not None:
        from .parallel import takes_argument

        if not takes_argument(score_fn, "batches"):
            raise ValueError(f"n_batches (--batches) = {n_batches}: the score_fn has no batches parameter, so it "
                             "cannot score several mini-batches; use one batch or a score_fn that takes batches=")
    if metric is None:
        metric = default_metric(sp, ds)
    archs = sample_archs(sp, n, seed)
    acc = np.array([sp.ground_truth(a, ds, metric) for a in archs], dtype=np.float64)
    gt_column = _gt_column(sp, ds, metric)
    base_specs = BASELINES.get((sp.name, ds), [])
    baselines = {
        label: (np.array([sp.ground_truth(a, ds, m) for a in archs], dtype=np.float64),
                np.array([sp.ground_truth(a, ds, c) for a in archs], dtype=np.float64))
        for label, m, c, _ in base_specs
    }
    batches = zdata.PaperBatches(ds, batch_size, batch_seed, data=data, augment=augment, n_batches=n_batches)
    fixed = batches.fixed_batches()          # [(x [B, 3, H, W], y [B]), ...], n_batches of them
    num_classes = options.num_classes(ds)
    fingerprint = zdata.batches_fingerprint(fixed)   # one batch: batch_fingerprint(x, y), as before
    score: ScoreFn = score_fn or functools.partial(_default_score_fn, variant=variant)
    arch_batches = batches if batch_per_arch else None

    def batch_for(a: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return fixed if arch_batches is None else arch_batches.for_arch_batches(sp.key(a))

    out_dir = Path(out) if out is not None else None
    store_path = Path(store) if store is not None else out_dir / "results.sqlite"  # type: ignore[operator]
    if store_path.exists() and store_path.is_dir():
        raise ValueError(f"store path {store_path} is a directory")
    if not compute and not store_path.exists():
        raise FileNotFoundError(f"no result store at {store_path} to report on")
    store_path.parent.mkdir(parents=True, exist_ok=True)

    # the one store-run definition (store.RunConfig); only non-defaults enter the key, so the
    # run ids of earlier stores are unchanged
    batch_key = BatchKey(fingerprint=fingerprint, data=str(data) if data is not None else f"shipped:{ds}",
                         size=batch_size, seed=batch_seed, augment=augment, norm=ds,
                         per_arch=zdata.per_arch_scheme(n_batches) if batch_per_arch else None)
    run_configs = {p: RunConfig(kind="proxy", space=sp.name, proxies=(p,), num_classes=num_classes,
                                batch=batch_key, init_seed=init_seed, device=device_type, variant=variant)
                   for p in names}
    t_start = time.perf_counter()
    arch_strs = [sp.encode(a) for a in archs]
    values: dict[str, dict[str, float]] = {p: {} for p in names}
    errors: dict[str, dict[str, str]] = {p: {} for p in names}
    seconds: dict[str, float] = {}
    with ResultStore(store_path, create=compute) as st:
        if compute:
            if shard is not None:  # k shard processes write disjoint rows of one store together
                st.acquire_writer(shared=True)
            run_ids = {p: st.run_id(run_configs[p]) for p in names}
        else:  # read only: never register runs in a store another process may be writing
            known = st.runs()
            run_ids = {p: run_configs[p].run_id() for p in names}
            absent = [p for p in names if run_ids[p] not in known]
            if absent:
                raise ValueError(f"{store_path} holds no run of proxy {', '.join(absent)} with this configuration")
        wanted = set(arch_strs)

        def load_rows() -> None:
            for p in names:
                for row in st.rows(run_ids[p]):
                    if row.arch_key in wanted:
                        values[p][row.arch_key] = _float(row.values.get(p, math.nan))
                        if row.error:
                            errors[p][row.arch_key] = row.error
                        seconds[row.arch_key] = max(seconds.get(row.arch_key, 0.0), row.seconds)

        load_rows()
        todo = [(a, s) for a, s in zip(archs, arch_strs) if any(s not in values[p] for p in names)]
        n_resumed = len(archs) - len(todo)
        if not compute:
            todo = []
        elif shard is not None:
            position = {s: i for i, s in enumerate(arch_strs)}
            todo = [(a, s) for a, s in todo if position[s] % shard[1] == shard[0]]
        writer = _Writer(st)
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=n_resumed + len(todo), initial=n_resumed, unit="arch", dynamic_ncols=True,
                       desc=f"{sp.name}/{ds} {','.join(names)}", file=sys.stderr)
        try:
            if workers > 0:
                results = _pool_results(sp, todo, names, values, fixed, init_seed, num_classes, device,
                                        workers, recycle, score, arch_batches)
            else:
                results = _inline_results(sp, todo, names, values, batch_for, init_seed, num_classes, device,
                                          score)
            for s, missing, res, why, dt in results:
                seconds[s] = dt
                for p in missing:
                    v = res.get(p, math.nan)
                    values[p][s] = v
                    if why.get(p):
                        errors[p][s] = why[p]
                    # a NaN/inf value is stored with its reason, never a bare NULL error
                    writer.add(run_ids[p], ScoreRow(s, s, {p: v} if p in res else {}, why.get(p), dt))
                writer.maybe_flush()
                if bar is not None:
                    bar.update(1)
        finally:
            writer.flush()
            if bar is not None:
                bar.close()
        if shard is not None:
            load_rows()  # what the other shards have stored meanwhile
        store_counts = {p: st.count(run_ids[p]) for p in names}

    # ---- architectures with every proxy (all of them, unless report-only or sharded)
    complete = [i for i, s in enumerate(arch_strs) if all(s in values[p] for p in names)]
    n_missing = len(archs) - len(complete)
    if n_missing:
        if not complete:
            raise ValueError("the store holds no sampled architecture with every requested proxy yet")
        archs = [archs[i] for i in complete]
        arch_strs = [arch_strs[i] for i in complete]
        acc = acc[complete]
        baselines = {k: (v[0][complete], v[1][complete]) for k, v in baselines.items()}

    # ---- per-proxy time, each proxy alone, on the first architectures of the sample
    alone: dict[str, float] = {}
    if time_sample > 0 and compute:
        for p in names:
            ts = []
            for a in archs[:time_sample]:
                batches_a = batch_for(a)
                t0 = time.perf_counter()
                try:
                    with warnings.catch_warnings(), options.scoring_threads():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        _call_score(score, sp, a, [p], batches_a, init_seed, num_classes, device)
                except Exception:
                    pass
                ts.append(time.perf_counter() - t0)
            alone[p] = float(np.median(ts))

    index = np.array([sp.index(a) if hasattr(sp, "index") else -1 for a in archs], dtype=np.int64)
    score_arr = {p: np.array([values[p].get(s, math.nan) for s in arch_strs], dtype=np.float64) for p in names}
    err_arr = {p: [errors[p].get(s, "") for s in arch_strs] for p in names}
    sec_arr = np.array([seconds.get(s, 0.0) for s in arch_strs], dtype=np.float64)
    if ensembles:
        from . import ensemble as zens

        for e in ensembles:  # columns like proxies; non-finite members rank worst (zcfast.ensemble)
            score_arr[e] = np.asarray(zens.aggregate(e, {p: score_arr[p] for p in names}), dtype=np.float64)
            err_arr[e] = [""] * len(arch_strs)
            members = zens.expand([e])[0]
            if all(alone.get(m) is not None for m in members):
                alone[e] = float(sum(alone[m] for m in members))  # an ensemble costs its members
    summary = summarize(score_arr, acc, dataset=ds, baselines=baselines, nan_policy=nan_policy,
                        errors=err_arr, space=sp.name, n_boot=n_boot)
    summary.update({
        "space": sp.name,
        "dataset": ds,
        "n": len(archs),
        "sample": {"seed": seed, "n": "all" if n is None else n, "method": "uniform without replacement"},
        "ground_truth": _gt_summary(sp, ds, metric, gt_column),
        "batch": batch_key.to_dict(),
        "num_classes": num_classes,
        "init_seed": init_seed,
        "variant": variant,
        "batch_per_arch": batch_per_arch,
        "n_batches": n_batches,
        "device": str(device),
        "store": str(store_path),
        "run_ids": run_ids,
        "store_rows": store_counts,
        "resumed_archs": n_resumed,
        "scored_archs": len(todo),
        "missing_archs": n_missing,
        "wall_seconds": time.perf_counter() - t_start,
        "seconds_per_arch_joint_median": float(np.median(sec_arr[sec_arr > 0])) if (sec_arr > 0).any() else None,
        "time_sample": time_sample,
    })
    for p in score_arr:
        summary["proxies"][p]["seconds_per_arch_alone"] = alone.get(p)
    if ensembles:
        summary["ensembles"] = {e: {"members": list(zens.expand([e])[0]),
                                    "population": "the studied sample (ranked together)"} for e in ensembles}
    for label, _, _, unit in base_specs:
        summary["baselines"][label]["cost_unit"] = unit
    result = StudyResult(arch_strs, index, acc, score_arr, err_arr, baselines, sec_arr, summary,
                         keys=[sp.key(a) for a in archs])
    if out_dir is not None:
        result.files = write_outputs(result, out_dir, plots=plots)
    return result


def _call_score(score: ScoreFn, sp: Any, a: Any, names: list[str],
                batches: Sequence[tuple[torch.Tensor, torch.Tensor]], init_seed: int, num_classes: int,
                device: str) -> Mapping[str, Any]:
    """One scorer call: ``score(sp, a, x, y, names, ...)`` for one batch (as before multi-batch
    input existed), ``score(sp, a, None, None, names, ..., batches=[...])`` for several."""
    if len(batches) == 1:
        x, y = batches[0]
        return score(sp, a, x, y, names, seed=init_seed, num_classes=num_classes, device=device)
    return score(sp, a, None, None, names, seed=init_seed, num_classes=num_classes, device=device,
                 batches=list(batches))


def _score_one(score: ScoreFn, sp: Any, a: Any, missing: list[str],
               batches: Sequence[tuple[torch.Tensor, torch.Tensor]], init_seed: int, num_classes: int,
               device: str) -> tuple[dict[str, float], dict[str, str], float]:
    """Score ``missing`` proxies of ``a`` on ``batches`` (``[(x, y), ...]``) under
    :func:`zcfast.options.scoring_threads`.

    Returns ``(values, reasons, seconds)``: ``values[p]`` for each proxy the scorer returned,
    ``reasons[p]`` for each proxy whose value is missing or not finite (the scorer's exception
    when the whole call failed). Never raises for a scoring failure: it is recorded.
    """
    values: dict[str, float] = {}
    reasons: dict[str, str] = {}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), options.scoring_threads():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = dict(_call_score(score, sp, a, missing, batches, init_seed, num_classes, device))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # recorded per architecture, never silently dropped
        err = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        return {}, {p: err for p in missing}, time.perf_counter() - t0
    for p in missing:
        if p not in res:
            reasons[p] = f"proxy {p} returned no value"
            continue
        values[p], why = options.proxy_outcome(p, res[p])
        if why:
            reasons[p] = why.splitlines()[0][:500]
    return values, reasons, time.perf_counter() - t0


def _inline_results(sp, todo, names, values, batch_for, init_seed, num_classes, device, score):
    """Score in this process; yields (arch_str, missing proxies, values, reasons, seconds)."""
    for a, s in todo:
        missing = [p for p in names if s not in values[p]]
        res, why, dt = _score_one(score, sp, a, missing, batch_for(a), init_seed, num_classes, device)
        yield s, missing, res, why, dt


_WORKER: dict[str, Any] = {}


def _worker_init(space: Any, fixed: list[tuple[np.ndarray, np.ndarray]], score_fn: ScoreFn | None,
                 arch_batches: zdata.PaperBatches | None = None) -> None:
    """``space``: the study's space object (pickled with its benchmark path) or, as before, a name."""
    torch.set_num_threads(options.SCORING_THREADS)
    from . import spaces

    _WORKER.update(sp=spaces.get(space) if isinstance(space, str) else space, fixed=[(torch.from_numpy(x), torch.from_numpy(y)) for x, y in fixed],
                   score=score_fn or _default_score_fn, batches=arch_batches)


def _worker_task(task: tuple[str, list[str], int, int, str]
                 ) -> tuple[str, list[str], dict[str, float], dict[str, str], float]:
    s, missing, init_seed, num_classes, device = task
    w = _WORKER
    a = w["sp"].decode(s)
    batches = w["fixed"] if w["batches"] is None else w["batches"].for_arch_batches(w["sp"].key(a))
    res, why, dt = _score_one(w["score"], w["sp"], a, missing, batches, init_seed, num_classes, device)
    return s, missing, res, why, dt


def _pool_results(sp, todo, names, values, fixed, init_seed, num_classes, device, workers, recycle, score_fn,
                  arch_batches=None):
    """Score in ``workers`` spawned processes, each replaced after ``recycle`` architectures
    (bounds the memory of a scorer that leaks). Only this (parent) process writes the store.
    ``fixed`` is the study's ``[(x, y), ...]``; with ``arch_batches`` each worker draws each
    architecture's own batches (the same as inline). Yields results as they complete (any order)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    tasks = [(s, [p for p in names if s not in values[p]], init_seed, num_classes, device) for _, s in todo]
    pool = ctx.Pool(workers, initializer=_worker_init,
                    initargs=(sp, [(x.numpy(), y.numpy()) for x, y in fixed], score_fn, arch_batches),
                    maxtasksperchild=recycle)
    try:
        yield from pool.imap_unordered(_worker_task, tasks, chunksize=1)
        pool.close()
        pool.join()
    finally:
        pool.terminate()


# ------------------------------------------------------------------------------------------
# analysis and outputs
# ------------------------------------------------------------------------------------------
def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def summarize(
    scores: Mapping[str, np.ndarray],
    acc: np.ndarray,
    *,
    dataset: str = "cifar10",
    baselines: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    nan_policy: str = "omit",
    errors: Mapping[str, Sequence[str]] | None = None,
    vote_proxies: Sequence[str] = VOTE_PROXIES,
    space: str = "nb201",
    n_boot: int = 1000,
    boot_seed: int = 0,
) -> dict[str, Any]:
    """Correlation summary (JSON-ready; NaN -> None).

    Every ρ and τ (overall and within the top 10 % by accuracy, of proxies and baselines)
    carries ``<name>_ci95``: a percentile bootstrap 95 % interval over ``n_boot`` resamples of
    the architectures (:func:`zcfast.metrics.bootstrap_ci`, seed ``boot_seed``; None with
    ``n_boot=0``). A statistic over fewer than :data:`zcfast.metrics.MIN_POINTS` usable
    architectures is None (printed "-"), as is the top-10 % overlap of a top set that small;
    ``n_top10`` says how many the top set held. The vote carries no interval (it is O(n²) per
    evaluation).

    Args:
        scores: proxy -> ``[n]`` scores; acc: ``[n]`` accuracies.
        baselines: label -> (``[n]`` reduced-training accuracy, ``[n]`` cost).
        space: the space's name, which selects the published anchors (:data:`PUBLISHED_ANCHORS`).
    Returns:
        ``{"proxies": {p: {spearman, abs_spearman, kendall, spearman_top10, kendall_top10,
        top10_overlap, n_used, n_nan, n_error, paper_abs_spearman, delta_vs_paper, anchor,
        anchor_source, delta_vs_anchor}}, "vote": {...} | None, "baselines": {...},
        "anchor_sources": {source key: protocol}, "nan_policy": ...}``. ``paper_*`` is the paper's
        Table 1 (its six proxies only); ``anchor`` the published |ρ| of a later proxy under the
        protocol ``anchor_sources[anchor_source]`` (None where none is published).
    """
    ds = zdata.canonical_dataset(dataset)
    acc = np.asarray(acc, dtype=np.float64)
    paper = PAPER_SPEARMAN.get(ds, {})
    anchors = PUBLISHED_ANCHORS.get((space, ds), {})
    out: dict[str, Any] = {"nan_policy": nan_policy, "proxies": {}, "baselines": {}, "vote": None,
                           "anchor_sources": {}}
    out["min_points"] = metrics.MIN_POINTS
    out["bootstrap"] = {"resamples": n_boot, "seed": boot_seed, "level": 0.95,
                        "method": "percentile, architectures resampled with replacement"}
    for p, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        ok = ~np.isnan(acc)
        n_used = int(ok.sum()) if nan_policy == "worst" else int((ok & ~np.isnan(s)).sum())
        rho, tau, ci_rho, ci_tau = _rank_stats(s, acc, nan_policy, n_used, n_boot, boot_seed)
        top = metrics._top_mask(acc, 0.1)
        n_top = int(top.sum()) if nan_policy == "worst" else int((top & ~np.isnan(s)).sum())
        rho10, tau10, ci_rho10, ci_tau10 = _rank_stats(s[top], acc[top], nan_policy, n_top, n_boot, boot_seed)
        n_nan = int(np.isnan(s[ok]).sum())
        entry = {
            "spearman": _num(rho),
            "spearman_ci95": ci_rho,
            "abs_spearman": _num(abs(rho)),
            "abs_spearman_ci95": _abs_ci(ci_rho),
            "kendall": _num(tau),
            "kendall_ci95": ci_tau,
            "spearman_top10": _num(rho10),
            "spearman_top10_ci95": ci_rho10,
            "kendall_top10": _num(tau10),
            "kendall_top10_ci95": ci_tau10,
            "n_top10": n_top,
            "top10_overlap": _num(metrics.top_overlap(s, acc, 0.1)) if int(top.sum()) >= metrics.MIN_POINTS else None,
            "n_used": n_used,
            "n_nan": n_nan,
            "n_error": int(sum(1 for e in (errors or {}).get(p, []) if e)),
            "paper_abs_spearman": paper.get(p),
            "delta_vs_paper": _num(abs(rho) - paper[p]) if p in paper and not math.isnan(rho) else None,
            "anchor": anchors[p][0] if p in anchors else None,
            "anchor_source": anchors[p][1] if p in anchors else None,
            "delta_vs_anchor": _num(abs(rho) - anchors[p][0]) if p in anchors and not math.isnan(rho) else None,
        }
        out["proxies"][p] = entry
        if p in anchors:
            out["anchor_sources"][anchors[p][1]] = ANCHOR_SOURCES[anchors[p][1]]
    if all(p in scores for p in vote_proxies):
        agree = metrics.vote_agreement({p: scores[p] for p in vote_proxies}, acc)
        out["vote"] = {"proxies": list(vote_proxies), "agreement": _num(agree), "paper": PAPER_VOTE.get(ds),
                       "delta_vs_paper": _num(agree - PAPER_VOTE[ds]) if ds in PAPER_VOTE else None}
    for label, (bacc, cost) in (baselines or {}).items():
        n_b = int((~np.isnan(bacc) & ~np.isnan(acc)).sum())
        rho, tau, ci_rho, ci_tau = _rank_stats(bacc, acc, "omit", n_b, n_boot, boot_seed)
        top = metrics._top_mask(acc, 0.1)
        n_top = int((top & ~np.isnan(bacc)).sum())
        rho10 = metrics.spearman(bacc[top], acc[top], "omit") if n_top >= metrics.MIN_POINTS else math.nan
        out["baselines"][label] = {
            "spearman": _num(rho),
            "spearman_ci95": ci_rho,
            "kendall": _num(tau),
            "kendall_ci95": ci_tau,
            "spearman_top10": _num(rho10),
            "cost_per_arch_mean": _num(float(np.nanmean(cost))) if np.isfinite(cost).any() else None,
            "n_used": n_b,
        }
    return out


def _rank_stats(s: np.ndarray, acc: np.ndarray, nan_policy: str, n_used: int, n_boot: int, boot_seed: int
                ) -> tuple[float, float, list[float] | None, list[float] | None]:
    """(ρ, τ, ρ's 95 % interval, τ's) of scores ``[n]`` against ``acc`` ``[n]``; all missing
    (NaN / None) when fewer than :data:`zcfast.metrics.MIN_POINTS` pairs are usable."""
    if n_used < metrics.MIN_POINTS:
        return math.nan, math.nan, None, None
    rho = metrics.spearman(s, acc, nan_policy)
    tau = metrics.kendall(s, acc, nan_policy)
    cis = []
    for stat in ("spearman", "kendall"):
        lo, hi = metrics.bootstrap_ci(s, acc, stat, n_boot=n_boot, seed=boot_seed, nan_policy=nan_policy)
        cis.append(None if math.isnan(lo) else [lo, hi])
    return rho, tau, cis[0], cis[1]


def _abs_ci(ci: list[float] | None) -> list[float] | None:
    """The interval of |ρ| from the interval of ρ (a ρ interval across 0 gives [0, max |end|])."""
    if ci is None:
        return None
    lo, hi = ci
    if lo <= 0.0 <= hi:
        return [0.0, max(-lo, hi)]
    return sorted([abs(lo), abs(hi)])


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _ci(ci: Sequence[float] | None) -> str:
    return "-" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _ci_short(ci: Sequence[float] | None) -> str:
    return "" if ci is None else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def format_table(summary: Mapping[str, Any]) -> str:
    """A terminal table: one row per proxy, the paper's |ρ| and the published anchor (with its
    source) beside ours, then vote and baselines."""
    head = ["proxy", "rho", "rho 95% CI", "|rho|", "paper", "delta", "anchor", "delta", "source", "tau",
            "tau 95% CI", "rho@top10% [95% CI]", "top10 ovl", "NaN", "err", "s/arch"]
    rows = []
    sign = lambda v: f"{v:+.3f}" if v is not None else "-"  # noqa: E731
    for p, e in summary["proxies"].items():
        rows.append([p, _fmt(e["spearman"]), _ci(e.get("spearman_ci95")), _fmt(e["abs_spearman"]),
                     _fmt(e["paper_abs_spearman"]),
                     sign(e["delta_vs_paper"]), _fmt(e.get("anchor")), sign(e.get("delta_vs_anchor")),
                     e.get("anchor_source") or "-",
                     _fmt(e["kendall"]), _ci(e.get("kendall_ci95")),
                     _fmt(e["spearman_top10"]) + _ci_short(e.get("spearman_top10_ci95")),
                     _fmt(e["top10_overlap"], 2),
                     str(e["n_nan"]), str(e["n_error"]), _fmt(e.get("seconds_per_arch_alone"), 3)])
    v = summary.get("vote")
    if v:
        rows.append(["vote*", "-", "-", _fmt(v["agreement"]), _fmt(v["paper"]), sign(v["delta_vs_paper"]),
                     "-", "-", "-", "-", "-", "-", "-", "-", "-", "-"])
    for label, b in summary.get("baselines", {}).items():
        rows.append([label + "**", _fmt(b["spearman"]), _ci(b.get("spearman_ci95")),
                     _fmt(abs(b["spearman"]) if b["spearman"] is not None else None),
                     "-", "-", "-", "-", "-", _fmt(b["kendall"]), _ci(b.get("kendall_ci95")),
                     _fmt(b["spearman_top10"]), "-", "-", "-",
                     _fmt(b.get("cost_per_arch_mean"), 1)])
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = "-+-".join("-" * w for w in widths)
    fmt_row = lambda r: " | ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    gt = summary.get("ground_truth", {})
    title = (f"{summary.get('space', '?')} / {summary.get('dataset', '?')}: {summary.get('n', '?')} architectures, "
             f"ground truth {gt.get('column') or gt.get('metric', '?')}"
             + (f" ({gt['note']})" if gt.get("note") else "")
             + (f" from {gt['benchmark']}" if gt.get("benchmark") else "")
             + f", NaN scores: {summary.get('nan_policy')}")
    if summary.get("variant", "benchmark") != "benchmark":
        title += f", network variant {summary['variant']}"
    if summary.get("batch_per_arch"):
        title += ", one batch per architecture"
    if summary.get("n_batches", 1) > 1:
        title += f", {summary['n_batches']} mini-batches (multi-batch proxies read all, the others the first)"
    src = summary.get("source") or {}
    if src.get("store") or src.get("table"):
        title += f"; rendered from {src.get('store') or src.get('table')}"
    elif src.get("tables"):
        title += f"; rendered from {len(src['tables'])} joined tables ({', '.join(src['tables'])})"
    lines = [title, fmt_row(head), line] + [fmt_row(r) for r in rows]
    notes = ["rho = Spearman, tau = Kendall tau-b; paper = |rho| of Abdelfattah et al. (all 15,625 NB201 archs); "
             "s/arch = median seconds per architecture, each proxy alone"]
    boot = summary.get("bootstrap")
    if boot:
        notes.append(f"95% CI = percentile bootstrap over {boot['resamples']} resamples of the architectures "
                     f"(seed {boot['seed']}); '-' = fewer than {summary.get('min_points', metrics.MIN_POINTS)} "
                     "usable architectures (for rho@top10% and the overlap: in the top 10% by accuracy)")
    for key, protocol in summary.get("anchor_sources", {}).items():
        notes.append(f"anchor = published |rho| under its own protocol; source {key}: {protocol}")
    if v:
        notes.append("* vote = fraction of architecture pairs where the majority of "
                     f"{', '.join(v['proxies'])} orders the pair as the accuracy does (paper's pairwise vote)")
    for label, b in summary.get("baselines", {}).items():
        notes.append(f"** {label}: rank correlation of the 12-epoch reduced-training validation accuracy "
                     f"(cifar10-valid) with the ground truth; s/arch column = mean training cost "
                     f"({b.get('cost_unit', '')})")
    return "\n".join(lines + notes)


#: Formats of the score tables (:func:`write_table`); Parquet needs the optional pyarrow.
TABLE_FORMATS: tuple[str, ...] = ("csv", "json", "parquet")
#: Columns of every score table before the proxies (:func:`table_columns`).
LEADING_COLUMNS: tuple[str, ...] = ("arch_str", "index", "key", "accuracy")


def table_columns(proxies: Sequence[str], baselines: Sequence[str] = ()) -> list[str]:
    """The one column schema of the score tables of ``correlate``, ``score`` and ``report``
    (CSV, JSON and Parquet alike), in order:

    - ``arch_str``: the architecture's canonical text (or the ``--model`` spec);
    - ``index``: its benchmark index (int; -1 where the space has none);
    - ``key``: ``space.key(arch)`` (isomorphic cells share it; "" where unknown);
    - ``accuracy``: the ground truth where known (float, NaN otherwise);
    - ``<baseline>_acc``, ``<baseline>_cost`` per reduced-training baseline (correlate);
    - one float column per proxy (NaN / ±inf kept), then ``<proxy>_error`` per proxy (the
      reason of a non-finite value, "" when none);
    - ``seconds``: wall seconds of the scoring call (float).
    """
    return (list(LEADING_COLUMNS) + [f"{b}_acc" for b in baselines] + [f"{b}_cost" for b in baselines]
            + list(proxies) + [f"{p}_error" for p in proxies] + ["seconds"])


def result_records(result: StudyResult) -> tuple[list[str], list[dict[str, Any]]]:
    """``(columns, rows)`` of a study in the :func:`table_columns` schema; each row a dict of
    Python values (str, int, float)."""
    names = list(result.scores)
    bl = list(result.baselines)
    cols = table_columns(names, bl)
    rows = []
    for i, s in enumerate(result.archs):
        r: dict[str, Any] = {"arch_str": s, "index": int(result.index[i]),
                             "key": result.keys[i] if result.keys else "", "accuracy": float(result.acc[i])}
        for b in bl:
            r[f"{b}_acc"] = float(result.baselines[b][0][i])
        for b in bl:
            r[f"{b}_cost"] = float(result.baselines[b][1][i])
        for p in names:
            r[p] = float(result.scores[p][i])
        for p in names:
            r[f"{p}_error"] = result.errors[p][i] or ""
        r["seconds"] = float(result.seconds[i])
        rows.append(r)
    return cols, rows


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _is_text_column(c: str) -> bool:
    return c in ("arch_str", "key") or c.endswith("_error")


def write_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                fmt: str | None = None) -> Path:
    """Write rows of the :func:`table_columns` schema as CSV, JSON or Parquet (``fmt``; default
    from the suffix). CSV: ``repr`` of each float (round-trips exactly; ``nan``, ``inf``). JSON:
    a list of objects with the same keys, a non-finite float as ``null`` (its ``_error`` column
    says why). Parquet: ``arch_str``/``key``/``*_error`` strings, ``index`` int64, every other
    column float64 (NaN kept). Parquet needs pyarrow: without it a ValueError says so."""
    path = Path(path)
    fmt = fmt or {".json": "json", ".parquet": "parquet"}.get(path.suffix, "csv")
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; known: {', '.join(TABLE_FORMATS)}")
    cols = list(columns)
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("Parquet output needs pyarrow, which is not installed (pip install pyarrow); "
                             "the CSV and JSON tables hold the same columns") from None
        types = {c: pa.string() if _is_text_column(c) else pa.int64() if c == "index" else pa.float64()
                 for c in cols}
        schema = pa.schema([(c, types[c]) for c in cols])
        pq.write_table(pa.Table.from_pydict({c: [r[c] for r in rows] for c in cols}, schema=schema), path)
        return path
    if fmt == "json":
        path.write_text(json.dumps([{c: _json_value(r[c]) for c in cols} for r in rows], indent=1,
                                   allow_nan=False) + "\n")
        return path
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow([repr(float(r[c])) if isinstance(r[c], float) else r[c] for c in cols])
    return path


def read_table(path: str | os.PathLike) -> tuple[list[str], list[dict[str, Any]]]:
    """Read a score table written by :func:`write_table` (CSV, JSON or Parquet, by suffix) back
    into ``(columns, rows)``; also reads the ``scores.csv`` of earlier versions (columns in
    another order, no ``key``). ValueError when it has no ``arch_str`` column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such score table")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"{path}: reading Parquet needs pyarrow, which is not installed") from None
        t = pq.read_table(path)
        cols = list(t.column_names)
        rows = t.to_pylist()
    elif path.suffix == ".json":
        rows = json.loads(path.read_text())
        if not isinstance(rows, list) or (rows and not isinstance(rows[0], dict)):
            raise ValueError(f"{path}: not a zcfast score table (a JSON list of rows)")
        cols = list(rows[0]) if rows else []
    else:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            cols = list(reader.fieldnames or [])
            rows = list(reader)
    if "arch_str" not in cols:
        raise ValueError(f"{path}: not a zcfast score table (no arch_str column)")
    out = []
    for r in rows:
        d: dict[str, Any] = {}
        for c in cols:
            v = r.get(c)
            if _is_text_column(c):
                d[c] = "" if v is None else str(v)
            elif c == "index":
                d[c] = int(v) if v not in (None, "") else -1
            else:
                d[c] = _float(v) if v not in (None, "") else math.nan
        out.append(d)
    return cols, out


def table_proxies(columns: Sequence[str]) -> list[str]:
    """The proxy columns of a score table: those with an ``<name>_error`` column beside them."""
    return [c for c in columns if f"{c}_error" in columns]


def write_outputs(result: StudyResult, out_dir: str | os.PathLike, plots: bool = True,
                  formats: Sequence[str] = ("csv", "json", "parquet")) -> dict[str, Path]:
    """Write the score table (:func:`table_columns`) as ``scores.csv``, ``scores.json`` and,
    when pyarrow is installed, ``scores.parquet`` (each of ``formats``; without pyarrow the
    Parquet file is skipped and ``summary["notes"]`` says so), then ``summary.json``,
    ``table.txt`` and, with ``plots``, ``scatter.png`` (each proxy vs accuracy) and
    ``rho_vs_paper.png`` (|ρ| and |τ| with their 95 % intervals, the vote on its own panel)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    names = list(result.scores)
    cols, rows = result_records(result)
    for fmt in formats:
        try:
            files[{"json": "scores_json"}.get(fmt, fmt)] = write_table(cols, rows, out / f"scores.{fmt}", fmt)
        except ValueError as exc:
            if fmt != "parquet":
                raise
            result.summary.setdefault("notes", []).append(f"scores.parquet not written: {exc}")
    p_json = out / "summary.json"
    p_json.write_text(json.dumps(result.summary, indent=2, sort_keys=False, allow_nan=False) + "\n")
    files["json"] = p_json
    p_txt = out / "table.txt"
    p_txt.write_text(format_table(result.summary) + "\n")
    files["table"] = p_txt
    if plots:
        from . import plots as zplots

        files["scatter"] = zplots.scatter_grid(result.scores, result.acc, out / "scatter.png",
                                               title=f"{result.summary.get('space')} / {result.summary.get('dataset')}",
                                               rho={p: result.summary["proxies"][p]["spearman"] for p in names})
        files["bars"] = zplots.rho_bars(result.summary, out / "rho_vs_paper.png")
    return files


def export_table(result: StudyResult, path: str | os.PathLike, log_columns: Sequence[str] = ("synflow",)) -> Path:
    """Write the studied architectures' scores as a gzipped CSV, sorted by benchmark index.

    Columns: ``index``, ``arch_str``, one column per proxy (``repr`` of the float64, so values
    round-trip exactly; ``nan`` where missing), and ``<proxy>_log`` = natural log of the score
    for each proxy of ``log_columns`` present (``-inf`` for 0, ``nan`` for negative or missing).
    The gzip header carries no timestamp, so equal scores give identical bytes.
    """
    import gzip
    import io

    names = list(result.scores)
    logs = [p for p in log_columns if p in result.scores]
    order = np.argsort(result.index, kind="mergesort")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "arch_str"] + names + [f"{p}_log" for p in logs])
    for i in order:
        vals = [float(result.scores[p][i]) for p in names]
        lv = []
        for p in logs:
            v = float(result.scores[p][i])
            lv.append(math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan))
        w.writerow([int(result.index[i]), result.archs[i]] + [repr(v) for v in vals] + [repr(v) for v in lv])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=9) as gz:
            gz.write(buf.getvalue().encode())
    return path


def subsample_spread(scores: Sequence[float] | np.ndarray, acc: Sequence[float] | np.ndarray, n: int,
                     reps: int = 200, seed: int = 0, nan_policy: str = "omit") -> dict[str, float]:
    """Sampling noise of Spearman ρ: ρ on ``reps`` uniform subsets of ``n`` of the given
    architectures (without replacement), e.g. 1,000 of all 15,625.

    Args:
        scores, acc: ``[N]`` arrays (N >= n).
    Returns:
        ``{"mean", "std", "p2.5", "p50", "p97.5", "min", "max", "n", "reps"}`` of the subset ρ values.
    """
    s = np.asarray(scores, dtype=np.float64)
    a = np.asarray(acc, dtype=np.float64)
    if s.shape != a.shape or s.ndim != 1:
        raise ValueError(f"scores and acc must be 1-D of equal length, got {s.shape} and {a.shape}")
    if not 2 <= n <= s.shape[0]:
        raise ValueError(f"n must be in [2, {s.shape[0]}], got {n}")
    rng = np.random.default_rng(seed)
    vals = np.array([metrics.spearman(s[idx], a[idx], nan_policy)
                     for idx in (rng.choice(s.shape[0], n, replace=False) for _ in range(reps))])
    q = np.nanpercentile(vals, [2.5, 50, 97.5])
    return {"mean": float(np.nanmean(vals)), "std": float(np.nanstd(vals)), "p2.5": float(q[0]),
            "p50": float(q[1]), "p97.5": float(q[2]), "min": float(np.nanmin(vals)),
            "max": float(np.nanmax(vals)), "n": n, "reps": reps}


# ------------------------------------------------------------------------------------------
# re-rendering stored results (zcfast report)
# ------------------------------------------------------------------------------------------
#: Dataset of a store run from its number of classes (when its batch key names none).
_DATASET_OF_CLASSES: dict[int, str] = {10: "cifar10", 100: "cifar100", 120: "ImageNet16-120"}


def _ground_truth(sp: Any, archs: Sequence[str], ds: str, metric: str | None) -> tuple[np.ndarray, str | None]:
    """Accuracy ``[n]`` of the architectures (NaN where the space has no ground truth)."""
    metric = metric or default_metric(sp, ds)
    acc = np.full(len(archs), math.nan)
    if sp.ground_truth_problem(ds) is not None:  # e.g. darts, or nb101 without its records file
        return acc, metric
    for i, s in enumerate(archs):
        try:
            acc[i] = float(sp.ground_truth(sp.decode(s), ds, metric))
        except (NotImplementedError, KeyError, ValueError, LookupError, FileNotFoundError):
            acc[i] = math.nan
    return acc, metric


def _study(space_name: str, ds: str, archs: list[str], index: np.ndarray, keys: list[str], acc: np.ndarray,
           scores: dict[str, np.ndarray], errors: dict[str, list[str]],
           baselines: dict[str, tuple[np.ndarray, np.ndarray]], seconds: np.ndarray, nan_policy: str,
           n_boot: int, extra: Mapping[str, Any]) -> StudyResult:
    summary = summarize(scores, acc, dataset=ds, baselines=baselines, nan_policy=nan_policy, errors=errors,
                        space=space_name, n_boot=n_boot)
    summary.update({"space": space_name, "dataset": ds, "n": len(archs)})
    summary.update(extra)
    alone = extra.get("seconds_per_arch_alone", {})
    for p in scores:
        summary["proxies"][p]["seconds_per_arch_alone"] = alone.get(p)
    summary.pop("seconds_per_arch_alone", None)
    units = dict(extra.get("cost_units", {}))
    units.update({label: unit for label, _, _, unit in BASELINES.get((space_name, ds), [])})
    summary.pop("cost_units", None)
    for label in summary["baselines"]:
        if label in units:
            summary["baselines"][label]["cost_unit"] = units[label]
    return StudyResult(archs, index, acc, scores, errors, baselines, seconds, summary, keys=keys)


def _table_meta(path: Path) -> dict[str, Any]:
    """The ``summary.json`` beside a score table, or ``{}``."""
    side = path.parent / "summary.json"
    if side.is_file():
        try:
            return json.loads(side.read_text())
        except ValueError:
            return {}
    return {}


def _same_values(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Whether two columns hold the same values (NaN equal to NaN, text compared as text)."""
    for x, y in zip(a, b):
        if isinstance(x, float) and isinstance(y, float):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                return False
        elif x != y:
            return False
    return True


def join_tables(paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Several score tables of the same architectures (e.g. correlate runs of different proxies
    on one sample) as one: ``(columns, rows, metas)``, ``metas`` the ``summary.json`` beside each
    table (``{}`` where none).

    Rows are joined on the benchmark ``index`` when every row of every table has one (>= 0),
    else on ``key`` when every table has that column, else on ``arch_str``; the rows every table
    holds are kept, in the first table's order. A proxy (or baseline) column found in several
    tables is kept once when its values (and errors) agree, ``seconds`` is the sum over the
    tables, and the space, dataset and ground truth of the tables' summaries must agree.

    Raises:
        ValueError: no path; an architecture twice in one table; tables with no architecture in
            common; differing ``accuracy`` values, spaces, datasets or ground truths; or one
            proxy column with different values in two tables (each message names the tables).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no score table to read")
    tables = [read_table(p) for p in paths]
    metas = [_table_meta(p) for p in paths]
    if len(paths) == 1:
        return tables[0][0], tables[0][1], metas
    for field in ("space", "dataset", "ground_truth"):
        seen = {json.dumps(m[field], sort_keys=True): p for p, m in zip(paths, metas) if m.get(field) is not None}
        if len(seen) > 1:
            raise ValueError(f"the score tables differ in their {field}: " +
                             "; ".join(f"{p}: {v}" for v, p in seen.items()))
    if all(r.get("index", -1) >= 0 for _, rows in tables for r in rows):
        on = "index"
    elif all("key" in cols for cols, _ in tables):
        on = "key"
    else:
        on = "arch_str"
    by: list[dict[Any, dict[str, Any]]] = []
    for p, (_, rows) in zip(paths, tables):
        d: dict[Any, dict[str, Any]] = {}
        for r in rows:
            if r[on] in d:
                raise ValueError(f"{p}: {on} {r[on]!r} is in two rows; a table to join holds each architecture once")
            d[r[on]] = r
        by.append(d)
    keep = [r[on] for r in tables[0][1] if all(r[on] in d for d in by[1:])]
    if not keep:
        raise ValueError(f"the score tables share no architecture (joined on {on}): " + ", ".join(map(str, paths)))
    columns: list[str] = []
    rows_out: list[dict[str, Any]] = [{} for _ in keep]
    owner: dict[str, Path] = {}
    for p, (cols, _), d in zip(paths, tables, by):
        for c in cols:
            vals = [d[k].get(c) for k in keep]
            if c == "seconds":
                if c not in owner:
                    owner[c] = p
                    columns.append(c)
                    for o in rows_out:
                        o[c] = 0.0
                for o, v in zip(rows_out, vals):
                    o[c] = o[c] + (0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                continue
            if c in owner:
                if not _same_values([o[c] for o in rows_out], vals):
                    what = "accuracy (the ground truth)" if c == "accuracy" else f"column {c!r}"
                    raise ValueError(f"{owner[c]} and {p} hold different values of {what} for the same "
                                     "architectures; join tables of one ground truth, each proxy once")
                continue
            owner[c] = p
            columns.append(c)
            for o, v in zip(rows_out, vals):
                o[c] = v
    # the schema's order: identity and ground truth, baselines, proxies, their errors, seconds
    proxies = table_proxies(columns)
    bl = [c[:-4] for c in columns if c.endswith("_acc") and f"{c[:-4]}_cost" in columns]
    ordered = [c for c in ("arch_str", "index", "key", "accuracy") if c in columns]
    ordered += [c for b in bl for c in (f"{b}_acc", f"{b}_cost")] + proxies + [f"{q}_error" for q in proxies]
    ordered += [c for c in columns if c not in ordered]
    return ordered, rows_out, metas


def study_from_table(path: str | os.PathLike | Sequence[str | os.PathLike], *, space: str | None = None,
                     dataset: str | None = None, nan_policy: str | None = None, n_boot: int = 1000) -> StudyResult:
    """A :class:`StudyResult` from a score table (:func:`read_table`: CSV, JSON or Parquet,
    e.g. a correlate run's ``scores.csv``), or from several of the same architectures joined
    into one (:func:`join_tables`: e.g. the runs of different proxies on one sample, reported
    as one table), recomputing no proxy: the statistics, intervals and plots are computed from
    the stored scores and the ``accuracy`` column. Space, dataset, NaN policy and the per-proxy
    cost come from the ``summary.json`` beside the (first) table when there is one (else nb201 /
    cifar10 / omit; the costs from every table's); the arguments override them."""
    paths = [Path(p) for p in ([path] if isinstance(path, (str, os.PathLike)) else path)]
    cols, rows, metas = join_tables(paths)
    meta = metas[0]
    space_name = space or meta.get("space", "nb201")
    ds = zdata.canonical_dataset(dataset or meta.get("dataset", "cifar10"))
    policy = nan_policy or meta.get("nan_policy", "omit")
    proxies = table_proxies(cols)
    if not proxies:
        raise ValueError(f"{paths[0]}: no proxy columns (a proxy column P has a P_error column beside it)")
    bl = [c[:-4] for c in cols if c.endswith("_acc") and f"{c[:-4]}_cost" in cols]
    archs = [r["arch_str"] for r in rows]
    acc = np.array([r.get("accuracy", math.nan) for r in rows], dtype=np.float64)
    keys = [r.get("key", "") for r in rows]
    if "key" not in cols:
        try:
            from . import spaces

            sp = spaces.get(space_name)
            keys = [sp.key(sp.decode(a)) for a in archs]
        except Exception:  # noqa: BLE001 -- a table of a space zcfast cannot decode: no keys
            keys = [""] * len(archs)
    # the run's own record (sample, ground truth, batch, store, wall, ...) is kept; what is
    # computed from the scores is computed again
    computed = {"proxies", "baselines", "vote", "nan_policy", "anchor_sources", "min_points", "bootstrap",
                "space", "dataset", "n", "notes"}
    extra: dict[str, Any] = {k: v for k, v in meta.items() if k not in computed}
    if len(paths) == 1:
        extra["source"] = {"table": str(paths[0])}
    else:
        extra["source"] = {"tables": [str(p) for p in paths], "joined_rows": len(rows)}
        if len({json.dumps(m.get("batch"), sort_keys=True) for m in metas}) > 1:
            extra["batches_of_tables"] = {str(p): m.get("batch") for p, m in zip(paths, metas)}
    extra["cost_units"] = {b: e.get("cost_unit") for m in reversed(metas)
                           for b, e in m.get("baselines", {}).items() if e.get("cost_unit")}
    extra["seconds_per_arch_alone"] = {p: e.get("seconds_per_arch_alone") for m in reversed(metas)
                                       for p, e in m.get("proxies", {}).items() if p in proxies}
    return _study(space_name, ds, archs, np.array([r.get("index", -1) for r in rows], dtype=np.int64), keys, acc,
                  {p: np.array([r[p] for r in rows], dtype=np.float64) for p in proxies},
                  {p: [r.get(f"{p}_error", "") for r in rows] for p in proxies},
                  {b: (np.array([r[f"{b}_acc"] for r in rows], dtype=np.float64),
                       np.array([r[f"{b}_cost"] for r in rows], dtype=np.float64)) for b in bl},
                  np.array([r.get("seconds", 0.0) for r in rows], dtype=np.float64), policy, n_boot, extra)


def store_groups(store: Any) -> list[dict[str, Any]]:
    """The runs of a :class:`zcfast.store.ResultStore` that report together: the one-proxy runs
    of correlate / search whose configs differ only in the proxy, and each scan run alone.
    Returns ``[{"run_ids": [...], "proxies": [...], "config": {...}, "rows": n}]``, largest first."""
    groups: dict[str, dict[str, Any]] = {}
    for rid, cfg in store.runs().items():
        if "proxy" in cfg:
            common = {k: v for k, v in cfg.items() if k != "proxy"}
            gid = json.dumps(common, sort_keys=True)
            g = groups.setdefault(gid, {"run_ids": [], "proxies": [], "config": common, "rows": 0})
            g["run_ids"].append(rid)
            g["proxies"].append(cfg["proxy"])
        else:
            g = groups.setdefault(rid, {"run_ids": [rid], "proxies": list(cfg.get("proxies", [])), "config": cfg,
                                        "rows": 0})
        g["rows"] = max(g["rows"], store.count(rid))
    return sorted(groups.values(), key=lambda g: -g["rows"])


def study_from_store(path: str | os.PathLike, *, run: str | None = None, dataset: str | None = None,
                     metric: str | None = None, nan_policy: str = "omit", n_boot: int = 1000) -> StudyResult:
    """A :class:`StudyResult` of the stored runs of one group (:func:`store_groups`; ``run``: a
    run id of the group, default the largest), read-only, recomputing nothing: every stored
    architecture with a row in every run of the group, joined with the space's ground truth of
    ``dataset`` (default: the dataset of the run's batch normalisation) where the space has one.
    Raises ValueError for an unknown run id or a store with no runs."""
    from . import spaces
    from .store import ResultStore

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such result store")
    with ResultStore(path, create=False) as st:
        groups = store_groups(st)
        if not groups:
            raise ValueError(f"{path}: the store holds no run")
        if run is None:
            g = groups[0]
        else:
            found = [g for g in groups if run in g["run_ids"]]
            if not found:
                raise ValueError(f"{path}: no run {run!r}; runs: "
                                 + "; ".join(f"{','.join(g['run_ids'][:3])} ({','.join(g['proxies'][:6])})"
                                             for g in groups))
            g = found[0]
        cfg = g["config"]
        sp = spaces.get(cfg["space"])
        batch = cfg.get("batch") or {}
        ds = zdata.canonical_dataset(dataset or cfg.get("dataset") or batch.get("norm")
                                     or _DATASET_OF_CLASSES.get(int(cfg.get("num_classes", 10)), "cifar10"))
        values: dict[str, dict[str, float]] = {p: {} for p in g["proxies"]}
        errs: dict[str, dict[str, str]] = {p: {} for p in g["proxies"]}
        arch_of: dict[str, str] = {}
        secs: dict[str, float] = {}
        for rid, p_run in zip(g["run_ids"], g["proxies"] if "proxy" in st.config(g["run_ids"][0]) else
                              [None] * len(g["run_ids"])):
            for row in st.rows(rid):
                arch_of[row.arch_key] = row.arch_str
                secs[row.arch_key] = max(secs.get(row.arch_key, 0.0), row.seconds)
                for p in ([p_run] if p_run is not None else g["proxies"]):
                    values[p][row.arch_key] = _float(row.values.get(p, math.nan))
                    if row.error:
                        errs[p][row.arch_key] = row.error
    keys = [k for k in arch_of if all(k in values[p] for p in g["proxies"])]
    archs = [arch_of[k] for k in keys]
    decoded = [sp.decode(a) for a in archs]
    order = sorted(range(len(archs)), key=lambda i: (sp.index(decoded[i]) if hasattr(sp, "index") else 0, archs[i]))
    keys = [keys[i] for i in order]
    archs = [archs[i] for i in order]
    decoded = [decoded[i] for i in order]
    acc, metric = _ground_truth(sp, archs, ds, metric)
    baselines = {}
    if np.isfinite(acc).any():
        for label, m, c, _ in BASELINES.get((sp.name, ds), []):
            baselines[label] = (np.array([sp.ground_truth(a, ds, m) for a in decoded], dtype=np.float64),
                                np.array([sp.ground_truth(a, ds, c) for a in decoded], dtype=np.float64))
    gt_column = sp.column_for(ds, metric) if sp.name == "nb201" else None  # with $ZCFAST_NB201_PATH: its column
    extra = {"source": {"store": str(path), "run_ids": g["run_ids"], "config": cfg},
             "ground_truth": {"metric": metric, "column": gt_column},
             "batch": batch, "init_seed": cfg.get("init_seed") if "init_seed" in cfg else cfg.get("seed"),
             "variant": cfg.get("variant", "benchmark"), "store": str(path)}
    return _study(sp.name, ds, archs,
                  np.array([sp.index(a) if hasattr(sp, "index") else -1 for a in decoded], dtype=np.int64),
                  [sp.key(a) for a in decoded], acc,
                  {p: np.array([values[p][k] for k in keys], dtype=np.float64) for p in g["proxies"]},
                  {p: [errs[p].get(k, "") for k in keys] for p in g["proxies"]}, baselines,
                  np.array([secs.get(k, 0.0) for k in keys], dtype=np.float64), nan_policy, n_boot, extra)
