"""Shared machinery of the search algorithms: training oracle, budget ledger, proxy sources.

Budget accounting (issue #6):

- scoring architectures with a zero-cost proxy (warmup pool, move proposal) costs no training
  budget; it is counted separately in ``SearchResult.proxy_evaluations``;
- each architecture handed to the training oracle for the first time costs one unit of budget,
  whether the oracle succeeds, raises or returns NaN (the error is recorded, the search goes on);
- asking for an architecture that was already trained (same ``space.key``) is a free lookup of
  the recorded accuracy.

Every trained architecture is logged in order as a :class:`TrainedRecord`.
"""
from __future__ import annotations

import csv
import gzip
import math
import os
import random as _random
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

Arch = Hashable

# Paper defaults shared by several families (see docs/search.md for the citations).
DEFAULT_MOVE_EXPLORE = 0.25
MAX_CONSECUTIVE_LOOKUPS = 2000


class BudgetExhausted(Exception):
    """Raised by :meth:`Ledger.train` when no training budget is left."""


class SearchStalled(Exception):
    """Raised when an algorithm keeps proposing already-trained architectures."""


# ---------------------------------------------------------------------------------------------
# Training oracles
# ---------------------------------------------------------------------------------------------

class Oracle(ABC):
    """Trains (or looks up) one architecture and returns its accuracy (%)."""

    name: str = "oracle"

    @abstractmethod
    def __call__(self, arch: Arch) -> float:
        ...


class BenchmarkOracle(Oracle):
    """Benchmark lookup through ``space.ground_truth(arch, dataset, metric)``.

    Lookups are memoised per architecture key, so repeated experiments stay cheap.
    """

    def __init__(self, space: Any, dataset: str = "cifar10", metric: str | None = None) -> None:
        self.space = space
        self.dataset = dataset
        self.metric = metric
        self.name = f"benchmark:{space.name}:{dataset}" + (f":{metric}" if metric else "")
        self._cache: dict[str, float] = {}

    def __call__(self, arch: Arch) -> float:
        key = self.space.key(arch)
        if key not in self._cache:
            if self.metric is None:
                value = self.space.ground_truth(arch, self.dataset)
            else:
                value = self.space.ground_truth(arch, self.dataset, self.metric)
            self._cache[key] = float(value)
        return self._cache[key]


class TableOracle(Oracle):
    """Accuracy looked up in a mapping ``space.encode(arch) -> accuracy``."""

    def __init__(self, space: Any, table: Mapping[str, float], name: str = "table") -> None:
        self.space = space
        self.table = dict(table)
        self.name = name

    def __call__(self, arch: Arch) -> float:
        text = self.space.encode(arch)
        if text not in self.table:
            raise KeyError(f"architecture {text!r} is not in the accuracy table {self.name!r}")
        return float(self.table[text])


class CallableOracle(Oracle):
    """A user function ``arch -> accuracy`` (e.g. one that really trains the network)."""

    def __init__(self, fn: Callable[[Arch], float], name: str | None = None) -> None:
        if not callable(fn):
            raise ValueError(f"trainer must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "trainer")

    def __call__(self, arch: Arch) -> float:
        return float(self.fn(arch))


def make_oracle(space: Any, oracle: Oracle | Callable[[Arch], float] | None = None,
                dataset: str = "cifar10", metric: str | None = None) -> Oracle:
    """An :class:`Oracle` from an oracle, a user callable, or (``None``) the benchmark lookup."""
    if isinstance(oracle, Oracle):
        return oracle
    if oracle is None:
        return BenchmarkOracle(space, dataset, metric)
    return CallableOracle(oracle)


# ---------------------------------------------------------------------------------------------
# Proxy sources
# ---------------------------------------------------------------------------------------------

class ProxySource(ABC):
    """Zero-cost scores of architectures (larger = predicted better). Costs no training budget."""

    name: str = "proxy"

    def __init__(self) -> None:
        self.evaluations = 0          # scores requested (lookups or computations)

    @abstractmethod
    def _scores(self, archs: Sequence[Arch]) -> list[float]:
        ...

    def scores(self, archs: Sequence[Arch]) -> np.ndarray:
        """Scores of ``archs`` -> float64 array ``[len(archs)]``; NaN where scoring failed."""
        self.evaluations += len(archs)
        return np.asarray(self._scores(list(archs)), dtype=np.float64)


class TableProxy(ProxySource):
    """A precomputed score table ``space.encode(arch) -> score``."""

    def __init__(self, space: Any, table: Mapping[str, float], name: str = "table") -> None:
        super().__init__()
        if not table:
            raise ValueError(f"score table {name!r} is empty")
        self.space = space
        self.table = {str(k): float(v) for k, v in table.items()}
        self.name = name

    def _scores(self, archs: Sequence[Arch]) -> list[float]:
        out = []
        for arch in archs:
            text = self.space.encode(arch)
            if text not in self.table:
                raise ValueError(f"architecture {text!r} is not in score table {self.name!r}")
            out.append(self.table[text])
        return out

    @classmethod
    def from_file(cls, space: Any, path: str, column: str | None = None) -> "TableProxy":
        """Load a CSV (optionally ``.gz``) with an ``arch_str`` column and a score column.

        ``column`` picks the score column; by default the only column besides
        ``index``/``arch_str``/``arch_key``/``error``/``seconds``.
        """
        table = load_score_table(path, column)
        name = os.path.basename(path)
        return cls(space, table, name=f"{name}:{column}" if column else name)


def load_score_table(path: str, column: str | None = None) -> dict[str, float]:
    """Read ``arch_str -> score`` from a CSV / CSV.gz file (see :meth:`TableProxy.from_file`)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"score table {path!r} does not exist")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if "arch_str" not in fields:
            raise ValueError(f"score table {path!r} has no 'arch_str' column (columns: {fields})")
        if column is None:
            extra = [f for f in fields
                     if f not in ("index", "arch_str", "arch_key", "error", "seconds")]
            if len(extra) != 1:
                raise ValueError(f"score table {path!r} has score columns {extra}: "
                                 "say which one to use")
            column = extra[0]
        elif column not in fields:
            raise ValueError(f"score table {path!r} has no column {column!r} (columns: {fields})")
        table: dict[str, float] = {}
        for row in reader:
            value = row[column]
            table[row["arch_str"]] = float(value) if value not in ("", None) else math.nan
    return table


class ComputedProxy(ProxySource):
    """A registered zcfast proxy computed with ``zcfast.score_arch`` and cached per architecture.

    Scores are memoised in memory and, when ``store`` is given, in the shared
    :class:`zcfast.store.ResultStore` under the same :class:`zcfast.store.RunConfig` the
    correlation study (``zcfast.correlate``) builds for the same proxy, space, dataset, batch,
    init seed and device (rows keyed by ``arch_str``), so search and correlation reuse each
    other's scores. Scores are computed under :func:`zcfast.options.scoring_threads`, as
    correlate's, so a cached value does not depend on which command computed it.

    A non-finite score keeps its reason (``errors[arch_str]``, and the store row's error).

    ``n_batches`` > 1 scores on ``zcfast.data.paper_batches(dataset, batch_size, batch_seed,
    n_batches)`` (``score_arch(..., batches=...)``: multi-batch proxies such as ``zico`` read all,
    single-batch ones the first), keyed by ``zcfast.data.batches_fingerprint`` of the list, as
    ``zcfast correlate --batches`` keys its runs; one batch is the paper's batch (run ids unchanged).

    ``data`` (a user dataset: an ``.npz``, an image folder, torchvision's CIFAR folders or the
    ImageNet16 batches, see :func:`zcfast.data.load_dataset`) replaces the dataset's shipped images;
    the run is keyed by it as ``zcfast correlate --data`` keys its run, so the two share scores.
    """

    def __init__(self, space: Any, proxy: str, dataset: str = "cifar10", seed: int = 42,
                 batch_size: int = 64, batch_seed: int = 42, store: Any = None,
                 device: str = "cpu", n_batches: int = 1, data: str | None = None) -> None:
        super().__init__()
        from zcfast import options
        (self.proxy,) = options.resolve_proxies([proxy], option="proxy")
        self.space = space
        self.name = self.proxy
        self.dataset = options.resolve_dataset(dataset)
        self.num_classes = options.num_classes(self.dataset)
        self.seed = seed
        self.batch_size = options.check_count(batch_size, "proxy batch_size")
        self.batch_seed = batch_seed
        self.n_batches = options.check_count(n_batches, "n_batches (--batches)")
        self.device = str(device)
        self.device_type = options.resolve_device(device).type
        self.store = store
        self.data = None if data is None else str(data)
        self._batches: list[tuple[Any, Any]] | None = None
        self._run_id: str | None = None
        self._cache: dict[str, float] = {}
        if self.n_batches > 1 or self.data is not None:
            self.batches()                 # the images must load and fit: refused now, not mid-search
        self.errors: dict[str, str] = {}   # arch_str -> why its score is not finite
        self.computed = 0              # architectures actually scored (not cache hits)

    def inputs(self) -> tuple[Any, Any]:
        """The paper's batch for the dataset: (x [B, 3, H, W], y [B]) (the first of :meth:`batches`)."""
        return self.batches()[0]

    def batches(self) -> list[tuple[Any, Any]]:
        """The ``n_batches`` mini-batches ``[(x [B, 3, H, W], y [B]), ...]``; one: ``[paper_batch(...)]``."""
        if self._batches is None:
            from zcfast import data as zdata
            if self.n_batches == 1:
                self._batches = [zdata.paper_batch(self.dataset, self.batch_size, self.batch_seed, data=self.data)]
            else:
                self._batches = zdata.paper_batches(self.dataset, self.batch_size, self.batch_seed, self.n_batches,
                                                    data=self.data)
        return self._batches

    def run_config(self) -> Any:
        """The store run of this proxy: the :class:`zcfast.store.RunConfig` correlate builds."""
        from zcfast import data as zdata
        from zcfast.store import BatchKey, RunConfig
        batch = BatchKey(fingerprint=zdata.batches_fingerprint(self.batches()),
                         data=self.data if self.data is not None else f"shipped:{self.dataset}",
                         size=self.batch_size, seed=self.batch_seed, augment=True, norm=self.dataset)
        return RunConfig(kind="proxy", space=self.space.name, proxies=(self.proxy,),
                         num_classes=self.num_classes, batch=batch, init_seed=self.seed,
                         device=self.device_type)

    def store_config(self) -> dict[str, Any]:
        """The run config as the JSON object stored with the run (``run_config().to_dict()``)."""
        return self.run_config().to_dict()

    def _load_store(self) -> None:
        if self.store is None or self._run_id is not None:
            return
        self._run_id = self.store.run_id(self.run_config())
        for row in self.store.rows(self._run_id):
            self._cache[row.arch_str] = float(row.values.get(self.proxy, math.nan))
            if row.error:
                self.errors[row.arch_str] = row.error

    def _scores(self, archs: Sequence[Arch]) -> list[float]:
        import zcfast
        from zcfast import options
        self._load_store()
        out, new_rows = [], []
        for arch in archs:
            text = self.space.encode(arch)
            if text not in self._cache:
                batches = self.batches()
                x, y = batches[0] if len(batches) == 1 else (None, None)
                t0 = time.perf_counter()
                raised = False
                try:
                    with options.scoring_threads():
                        values = zcfast.score_arch(self.space, arch, x, y, [self.proxy],
                                                   seed=self.seed, num_classes=self.num_classes,
                                                   device=self.device, detailed=True,
                                                   batches=batches if len(batches) > 1 else None)
                    value, error = options.proxy_outcome(self.proxy, values.get(self.proxy))
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # noqa: BLE001 -- recorded per architecture
                    value, error = math.nan, f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                    raised = True
                self.computed += 1
                self._cache[text] = value
                if error:
                    self.errors[text] = error
                if self.store is not None:
                    from zcfast.store import ScoreRow
                    # as correlate: a failed call stores no value; a NaN/inf value with its reason
                    new_rows.append(ScoreRow(text, text, {} if raised else {self.proxy: value},
                                             error, time.perf_counter() - t0))
            out.append(self._cache[text])
        if new_rows:
            self.store.put_many(self._run_id, new_rows)
        return out


class EnsembleProxy(ProxySource):
    """An ensemble of :mod:`zcfast.ensemble` as a search proxy (``--warmup te_nas``, ``--move az_nas``).

    Population the ranks are over: every distinct architecture (``space.encode``) this source
    has scored so far in the run, in first-scored order, the current request included -- as
    AZ-NAS's evolution search re-ranks its whole scored history each step. So the warmup ranks
    the pool (the first request), and each move ranks its neighbours among every architecture
    scored before. The values returned by one call are comparable with each other (every caller
    compares within one call); values from different calls are not (the population grew).
    Member scores come from one :class:`ProxySource` per member (cached, so re-ranking costs
    no proxy evaluation). Aggregates are always finite (a member NaN is ranked worst); the
    members' reasons stay in ``errors``.
    """

    def __init__(self, space: Any, ensemble_name: str, members: Mapping[str, ProxySource]) -> None:
        super().__init__()
        from zcfast import ensemble
        self.ensemble = ensemble.get_ensemble(ensemble_name)
        self.space = space
        self.name = self.ensemble.name
        self.members = dict(members)
        self._population: dict[str, Arch] = {}
        self._member_scores: dict[str, dict[str, float]] = {m: {} for m in self.members}

    @property
    def errors(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for m, src in self.members.items():
            for k, v in getattr(src, "errors", {}).items():
                out.setdefault(k, f"{m}: {v}")
        return out

    def _scores(self, archs: Sequence[Arch]) -> list[float]:
        from zcfast import ensemble
        texts = [self.space.encode(a) for a in archs]
        new = [(t, a) for t, a in dict(zip(texts, archs)).items() if t not in self._population]
        if new:
            for m, src in self.members.items():
                vals = src.scores([a for _t, a in new])
                self._member_scores[m].update(zip((t for t, _a in new), map(float, vals)))
            self._population.update(new)
        order = list(self._population)
        agg = ensemble.aggregate(self.ensemble, {m: [self._member_scores[m][t] for t in order]
                                                 for m in self.members})
        pos = {t: i for i, t in enumerate(order)}
        return [float(agg[pos[t]]) for t in texts]


def make_proxy(spec: Any, space: Any, dataset: str = "cifar10", store: Any = None,
               seed: int = 42, column: str | None = None, device: str = "cpu",
               batch_size: int = 64, *, option: str = "proxy", n_batches: int = 1,
               data: str | None = None) -> ProxySource | None:
    """A :class:`ProxySource` from a spec.

    ``spec`` may be ``None`` (no proxy), a :class:`ProxySource`, a mapping ``arch_str -> score``,
    a path to a score table (CSV / CSV.gz with an ``arch_str`` column), or the name of a proxy
    registered in ``zcfast.available_proxies()`` or of an ensemble (:mod:`zcfast.ensemble`:
    :class:`EnsembleProxy`, its members computed) (computed on ``zcfast.data.paper_batch(dataset,
    batch_size, 42)``; zcfast ships 20 CIFAR-100 images, so CIFAR-100 needs ``batch_size <= 20``),
    resolved by :func:`zcfast.options.resolve_proxies` (``option`` names the argument in its
    messages, e.g. ``--warmup``); ``n_batches`` mini-batches of ``batch_size`` for a computed proxy
    (:class:`ComputedProxy`), drawn from ``data`` (a user dataset) when given. Anything else ->
    ``ValueError``.
    """
    if spec is None:
        return None
    if isinstance(spec, ProxySource):
        return spec
    if isinstance(spec, Mapping):
        return TableProxy(space, spec)
    if not isinstance(spec, str):
        raise ValueError(f"proxy must be a name, a score-table path or a mapping, got {spec!r}")
    if os.path.exists(spec) or spec.endswith((".csv", ".csv.gz")):
        return TableProxy.from_file(space, spec, column)
    from zcfast import ensemble, options
    if ensemble.is_ensemble(spec.strip()):   # an ensemble: its members computed, ranked by the aggregate
        members, _ = options.resolve_scoring([spec.strip()], option=option)
        return EnsembleProxy(space, spec.strip(), {
            m: ComputedProxy(space, m, dataset=dataset, seed=seed, store=store, device=device,
                             batch_size=batch_size, n_batches=n_batches, data=data) for m in members})
    try:
        names = options.resolve_proxies(spec, option=option)
    except ValueError as exc:
        raise ValueError(f"{exc}; or give the path of a score table (CSV with arch_str and score "
                         "columns)") from None
    if len(names) != 1:
        raise ValueError(f"{option} takes one proxy, got {', '.join(names)}")
    return ComputedProxy(space, names[0], dataset=dataset, seed=seed, store=store, device=device,
                         batch_size=batch_size, n_batches=n_batches, data=data)


def rank_order(scores: np.ndarray) -> np.ndarray:
    """Indices sorting ``scores`` best first; NaN ranks last; ties keep the input order."""
    nan = np.isnan(scores)
    keyed = np.where(nan, 0.0, -scores)
    return np.lexsort((keyed, nan))           # last key is primary: non-NaN first, then -score


# ---------------------------------------------------------------------------------------------
# Records, ledger and results
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainedRecord:
    """One architecture handed to the training oracle (one unit of budget)."""

    step: int                   # 1-based position in training order
    arch_str: str               # space.encode(arch)
    arch_key: str               # space.key(arch)
    accuracy: float             # NaN when the oracle failed
    best_accuracy: float        # best accuracy among records 1..step (NaN while none valid)
    source: str                 # how it was chosen: "random", "warmup", "mutation", "move", ...
    proxy_score: float | None = None
    error: str | None = None
    seconds: float = 0.0
    proxy_error: str | None = None   # why proxy_score is NaN/inf (the proxy's reason)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("accuracy", "best_accuracy", "proxy_score"):
            if isinstance(d[k], float) and math.isnan(d[k]):
                d[k] = None
        return d


class Ledger:
    """Budget accounting and the log of trained architectures for one search run."""

    def __init__(self, space: Any, oracle: Oracle, budget: int,
                 on_train: Callable[[TrainedRecord], None] | None = None,
                 max_consecutive_lookups: int = MAX_CONSECUTIVE_LOOKUPS) -> None:
        if not isinstance(budget, (int, np.integer)) or budget < 1:
            raise ValueError(f"budget must be a positive number of trained architectures, got {budget!r}")
        self.space = space
        self.oracle = oracle
        self.budget = int(budget)
        self.on_train = on_train
        self.records: list[TrainedRecord] = []
        self.lookups = 0
        self._acc: dict[str, float] = {}
        self._arch: dict[str, Arch] = {}
        self._consecutive_lookups = 0
        self.max_consecutive_lookups = max_consecutive_lookups
        self.best_arch: Arch | None = None
        self.best_accuracy = math.nan
        size = space.size()
        self.space_size = int(size) if size is not None else None

    @property
    def used(self) -> int:
        return len(self.records)

    @property
    def remaining(self) -> int:
        return self.budget - self.used

    @property
    def done(self) -> bool:
        """No budget left, or every architecture of a finite space trained."""
        return self.remaining <= 0 or (self.space_size is not None and self.used >= self.space_size)

    def seen(self, arch: Arch) -> bool:
        return self.space.key(arch) in self._acc

    def accuracy(self, arch: Arch) -> float | None:
        """Recorded accuracy of an already-trained architecture (free), else ``None``."""
        return self._acc.get(self.space.key(arch))

    def train(self, arch: Arch, source: str, proxy_score: float | None = None) -> float:
        """Accuracy of ``arch``: a free lookup if already trained, else one unit of budget.

        Oracle exceptions and non-finite results give NaN, recorded with the error.
        """
        key = self.space.key(arch)
        if key in self._acc:
            self.lookups += 1
            self._consecutive_lookups += 1
            if self._consecutive_lookups > self.max_consecutive_lookups:
                raise SearchStalled(f"{self._consecutive_lookups} consecutive proposals were "
                                    "already trained")
            return self._acc[key]
        if self.remaining <= 0:
            raise BudgetExhausted(f"training budget of {self.budget} architectures used up")
        self._consecutive_lookups = 0
        t0 = time.perf_counter()
        error = None
        try:
            acc = float(self.oracle(arch))
            if not math.isfinite(acc):
                error = f"trainer returned a non-finite accuracy ({acc})"
                acc = math.nan
        except Exception as exc:  # noqa: BLE001 -- a user trainer may raise anything; recorded
            acc, error = math.nan, f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - t0
        self._acc[key] = acc
        self._arch[key] = arch
        if not math.isnan(acc) and (math.isnan(self.best_accuracy) or acc > self.best_accuracy):
            self.best_accuracy, self.best_arch = acc, arch
        record = TrainedRecord(step=len(self.records) + 1, arch_str=self.space.encode(arch),
                               arch_key=key, accuracy=acc, best_accuracy=self.best_accuracy,
                               source=source,
                               proxy_score=None if proxy_score is None else float(proxy_score),
                               error=error, seconds=seconds)
        self.records.append(record)
        if self.on_train is not None:
            self.on_train(record)
        return acc


def fitness(acc: float) -> float:
    """Selection value of an accuracy: failed trainings (NaN) lose every comparison."""
    return -math.inf if acc is None or math.isnan(acc) else acc


@dataclass
class SearchResult:
    """Outcome of one search run."""

    algo: str
    seed: int
    budget: int
    records: list[TrainedRecord]
    best_arch_str: str | None
    best_accuracy: float
    proxy_evaluations: int
    lookups: int
    stalled: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def trained(self) -> int:
        return len(self.records)

    def curve(self, length: int | None = None) -> np.ndarray:
        """Best accuracy after each trained architecture -> ``[length]`` (default: budget).

        Entries past the last trained architecture repeat the final value; NaN before the
        first successful training.
        """
        length = self.budget if length is None else length
        out = np.full(length, np.nan)
        best = [r.best_accuracy for r in self.records[:length]]
        out[:len(best)] = best
        if best and len(best) < length:
            out[len(best):] = best[-1]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"algo": self.algo, "seed": self.seed, "budget": self.budget,
                "trained": self.trained, "lookups": self.lookups,
                "proxy_evaluations": self.proxy_evaluations, "stalled": self.stalled,
                "best_arch_str": self.best_arch_str,
                "best_accuracy": None if math.isnan(self.best_accuracy) else self.best_accuracy,
                "config": self.config, "records": [r.to_json() for r in self.records]}


def finish(algo: str, seed: int, ledger: Ledger, proxies: Iterable[ProxySource | None],
           config: dict[str, Any], stalled: bool = False) -> SearchResult:
    """Package a ledger as a :class:`SearchResult`."""
    seen: set[int] = set()
    evals = 0
    sources: list[ProxySource] = []
    for p in proxies:
        if p is not None and id(p) not in seen:
            seen.add(id(p))
            evals += p.evaluations
            sources.append(p)
    for rec in ledger.records:  # a NaN proxy score carries its reason into the log
        if rec.proxy_score is not None and not math.isfinite(rec.proxy_score) and rec.proxy_error is None:
            rec.proxy_error = next((p.errors[rec.arch_str] for p in sources
                                    if rec.arch_str in getattr(p, "errors", {})),
                                   f"proxy score is {rec.proxy_score!r}")
    best = ledger.best_arch
    return SearchResult(algo=algo, seed=seed, budget=ledger.budget, records=list(ledger.records),
                        best_arch_str=None if best is None else ledger.space.encode(best),
                        best_accuracy=ledger.best_accuracy, proxy_evaluations=evals,
                        lookups=ledger.lookups, stalled=stalled, config=config)


def sample_pool(space: Any, n: int, rng: _random.Random) -> list[Arch]:
    """Up to ``n`` architectures with distinct ``space.key``, drawn uniformly.

    Equivalent to drawing architectures uniformly and skipping keys already drawn. Finite
    spaces of at most 200,000 architectures are shuffled and scanned (so a request larger than
    the number of distinct keys returns all of them); larger spaces use rejection sampling.
    """
    if n < 1:
        raise ValueError(f"warmup pool must hold at least one architecture, got {n}")
    size = space.size()
    pool: list[Arch] = []
    keys: set[str] = set()
    if size is not None and size <= 200_000:
        archs = list(space.enumerate())
        rng.shuffle(archs)
        for arch in archs:
            key = space.key(arch)
            if key not in keys:
                keys.add(key)
                pool.append(arch)
                if len(pool) == n:
                    break
        return pool
    attempts = 0
    while len(pool) < n:
        arch = space.sample(rng)
        attempts += 1
        key = space.key(arch)
        if key not in keys:
            keys.add(key)
            pool.append(arch)
        elif attempts > 50 * n:
            raise ValueError(f"could not draw {n} distinct architectures from {space.name}")
    return pool


def make_rngs(seed: int) -> tuple[_random.Random, np.random.Generator]:
    """The run's Python RNG (for space sampling/mutation) and numpy Generator."""
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return _random.Random(int(seed)), np.random.default_rng(int(seed))


def warmup_ranking(space: Any, proxy: ProxySource, pool_size: int,
                   rng: _random.Random) -> tuple[list[Arch], np.ndarray]:
    """Zero-cost warmup: score a pool of ``pool_size`` random architectures with ``proxy``.

    Returns the pool sorted best first and its scores ``[pool_size]`` in that order (NaN
    last). Costs no training budget.
    """
    pool = sample_pool(space, pool_size, rng)
    scores = proxy.scores(pool)
    order = rank_order(scores)
    return [pool[i] for i in order], scores[order]
