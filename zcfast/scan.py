"""Streaming, resumable scans of many candidates into a :mod:`zcfast.store` result store.

``zcfast.scan(space, proxies, n=...)`` draws candidates lazily, skips those the run already
holds or that are in flight (deduplicated by ``space.key``), scores them on a backend
(:mod:`zcfast.parallel`: serial, local processes, Ray) and writes the rows to the store in
transactions. Killing the process at any moment and calling ``scan`` again with the same
arguments finishes the job: nothing is lost beyond the uncommitted rows (which are then
rescored), nothing is duplicated, and the values are those of an uninterrupted run.

Every argument is checked before any work starts (the front door, :mod:`zcfast.options`):
proxies, space, dataset, device, counts, the backend (Ray Client for ``ray://`` addresses),
the ``if __name__ == "__main__":`` guard that spawned workers need, and the export target
(never the store, never an existing file unless ``overwrite``). The store is then locked for
this scan (one writer per store) and its run checked for damaged rows.

The candidate stream, and what ``n`` means
    ``order="sample"``: ``space.sample(random.Random(sample_seed))`` drawn again and again;
    ``order="enumerate"``: ``space.enumerate()``. The scan ends when the run holds ``n``
    distinct candidates, i.e. the first ``n`` distinct keys of the stream (a run only ever
    holds candidates of its own stream: the stream is part of the run's config), or when
    the stream ends. A sampled stream of a finite space cannot give more distinct keys than
    the space has (NB201: 4,930 keys over 15,625 cells), so it is cut after
    ``min(50·n, 20·size) + 100,000`` draws (deterministic) and the result says
    ``exhausted=True``. ``n=None`` scans the whole (finite) space by enumeration.

Memory is flat in the number of candidates: the dedup state is the store itself (indexed
look-ups, a block of 256 candidates at a time) plus the keys in flight, bounded by the
backend's ``max_in_flight`` chunks and the commit buffer.

The run's config is a :class:`zcfast.store.RunConfig` of ``kind="scan"`` (see
:func:`run_config`): space, dataset, batch size, data seed, a fingerprint of the batch, model
seed, sorted proxies, classes, device type, the candidate stream and the scorer, so scans with
different settings never share rows. Every value is computed with
:data:`zcfast.options.SCORING_THREADS` torch threads, whatever the backend.
"""
from __future__ import annotations

import importlib.util
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator, Sequence

import torch

from zcfast import options
from zcfast.parallel import (ArchScorer, BatchScorer, Task, WorkerSpec, check_main_guard,
                             make_backend, resolve_start_method)
from zcfast.store import BatchKey, ResultStore, RunConfig, ScoreRow, StoreError, check_export_target

__all__ = ["ScanResult", "rank_by", "run_config", "scan"]

_LOOKUP_BLOCK = 256
_BACKENDS = ("serial", "local", "ray")


@dataclass(frozen=True)
class ScanResult:
    """What a scan call did.

    Attributes:
        run_id: the store run the rows went to.
        store: path of the store file.
        target: ``n`` (or the space size for a full enumeration).
        total: rows of the run when the call ended.
        scored: rows written by this call (new candidates and rescored ones).
        errors: of those, rows with an error.
        seconds: wall time of the call.
        exhausted: the candidate stream ended before ``target`` distinct candidates.
        total_errors: rows of the run with an error when the call ended.
        retried: rows stored with an error (or damaged) that this call rescored
            (``retry_errors=True``).
        first_error: the error of the first failed row written by this call, or None.
        ensembles: the ensemble names (:mod:`zcfast.ensemble`) given in ``proxies``; their
            members are what the run stores, :func:`rank_by` ranks it by one.
    """

    run_id: str
    store: str
    target: int
    total: int
    scored: int
    errors: int
    seconds: float
    exhausted: bool
    total_errors: int = 0
    retried: int = 0
    first_error: str | None = None
    ensembles: tuple[str, ...] = ()   # ensemble names given in ``proxies``: rank the run with rank_by

    @property
    def all_failed(self) -> bool:
        """Every candidate this call scored failed, or (nothing scored now) every row of the run."""
        if self.scored:
            return self.errors == self.scored
        return self.total > 0 and self.total_errors == self.total


def _callable_name(fn: Callable[..., Any] | None, default: str) -> str:
    if fn is None:
        return default
    mod = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{mod}.{name}"


def run_config(space_name: str, proxies: Sequence[str], *, dataset: str, batch_size: int,
               data_seed: int, data_fingerprint: str, seed: int, num_classes: int, device: str,
               order: str, sample_seed: int, scorer: str, data: str | None = None) -> RunConfig:
    """The store key of a scan run (everything that changes which rows or values it holds).

    Its :meth:`~zcfast.store.RunConfig.to_dict` is the dict earlier zcfast versions stored, so
    their scan run ids are unchanged (pinned in tests/test_scan.py).
    """
    stream = "enumerate" if order == "enumerate" else f"sample:{sample_seed}"
    batch = BatchKey(fingerprint=data_fingerprint, data=data or f"shipped:{dataset}",
                     size=int(batch_size), seed=int(data_seed))
    return RunConfig(kind="scan", space=space_name, proxies=tuple(sorted(proxies)),
                     num_classes=int(num_classes), batch=batch, init_seed=int(seed),
                     device=torch.device(device).type, dataset=dataset, candidates=stream, scorer=scorer)


def _default_batch_scorer() -> BatchScorer | None:
    try:
        from zcfast.batched import score_batch
    except ImportError:
        return None
    return score_batch


def rank_by(store: str | os.PathLike[str] | ResultStore, run_id: str, by: str,
            k: int | None = None) -> list[tuple[str, float]]:
    """The run's architectures best first by ``by``: a stored proxy or an ensemble.

    An ensemble (:mod:`zcfast.ensemble`) is aggregated over **every row of the run** (the
    population: each stored architecture, rows with an error included, whose missing or
    non-finite member values rank worst); a proxy ranks by its stored value (NaN last).
    Ties keep the store's row order.

    Args:
        store: store path or an open :class:`ResultStore`.
        run_id: the run (``ScanResult.run_id``).
        by: a proxy the run stores, or an ensemble whose members it stores.
        k: how many to return (None: all).
    Returns:
        ``[(arch_str, value), ...]``, value = the aggregate (or proxy value).
    Raises:
        ValueError: ``by`` is neither, or the run lacks one of the ensemble's members.
    """
    from zcfast import ensemble

    k = options.check_count(k, "k", allow_none=True)
    st = store if isinstance(store, ResultStore) else ResultStore(store, create=False)
    try:
        rows = list(st.rows(run_id))
    finally:
        if st is not store:
            st.close()
    if not rows:
        return []
    stored = set().union(*(r.values for r in rows))
    if ensemble.is_ensemble(by):
        leaves, _ = ensemble.expand([by])
        missing = [m for m in leaves if m not in stored]
        if missing:
            raise ValueError(f"rank_by: run {run_id} does not store {missing} (members of ensemble {by!r}); "
                             f"scan with proxies={by!r} first")
        values = ensemble.aggregate(by, {m: [float(r.values.get(m, math.nan)) for r in rows] for m in leaves})
    elif by in stored:
        values = [float(r.values.get(by, math.nan)) for r in rows]
    else:
        raise ValueError(f"rank_by: {by!r} is neither a proxy run {run_id} stores ({', '.join(sorted(stored))}) "
                         "nor an ensemble of them")
    import numpy as np

    vals = np.asarray(values, dtype=np.float64)
    nan = ~np.isfinite(vals)
    order = np.lexsort((np.where(nan, 0.0, -vals), nan))
    order = order[:k] if k is not None else order
    return [(rows[i].arch_str, float(vals[i])) for i in order]


def _check_int(value: Any, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{option} must be an integer, got {value!r}")
    return int(value)


def _check_backend(backend: Any, address: Any) -> None:
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}{options.suggest(str(backend), _BACKENDS)}; "
                         f"choose {', '.join(_BACKENDS)}")
    if address is not None and backend != "ray":
        raise ValueError("address (--address) only applies to backend 'ray'")
    if backend != "ray":
        return
    if importlib.util.find_spec("ray") is None:
        raise ValueError("backend 'ray' needs Ray, which is not installed: pip install 'ray[default]'")
    if address is not None and not isinstance(address, str):
        raise ValueError(f"address must be a string (HOST:PORT or ray://HOST:PORT), got {address!r}")
    if isinstance(address, str) and address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise ValueError(f"address {address!r} connects through Ray Client, which needs "
                         "pip install 'ray[client]' (not installed here); or run the scan on a node of the "
                         "cluster with its HOST:PORT address")


def _check_device(device: Any, backend: str) -> torch.device:
    """cpu / cuda[:N]; on Ray a CUDA device may live on the cluster only (checked there)."""
    if backend == "ray":
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            dev = None
        if dev is not None and dev.type == "cuda":
            return dev
    return options.resolve_device(device)


def _check_data(data: Any, option: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data)):
        raise ValueError(f"{option} must be a pair of tensors (x [B,C,H,W] float, y [B] int64)")
    inputs, targets = data
    if inputs.dim() != 4 or targets.dim() != 1 or inputs.shape[0] != targets.shape[0] or inputs.shape[0] < 1:
        raise ValueError(f"{option} must be x [B,C,H,W] and y [B] with B >= 1; got {list(inputs.shape)} "
                         f"and {list(targets.shape)}")
    if not inputs.is_floating_point():
        raise ValueError(f"{option}: x must be a floating-point tensor, got {inputs.dtype}")
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise ValueError(f"{option}: y must hold integer class labels, got {targets.dtype}")
    return inputs, targets


def _check_batches(batches: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``batches=[(x, y), ...]``: each pair as ``data``, all of one sample shape and dtype."""
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Sequence) or len(batches) == 0:
        raise ValueError("batches must be a non-empty list of (x [B,C,H,W] float, y [B] int64) pairs")
    out = [_check_data(b, f"batches[{i}]") for i, b in enumerate(batches)]
    x0 = out[0][0]
    for i, (x, _) in enumerate(out[1:], 1):
        if x.shape[1:] != x0.shape[1:] or x.dtype != x0.dtype:
            raise ValueError(f"batches[{i}]: x is {list(x.shape)} {x.dtype}, but batches[0] is "
                             f"{list(x0.shape)} {x0.dtype}; every batch needs the same sample shape and dtype")
    return out


def scan(space: Any, proxies: Sequence[str] | str, n: int | None = None, *,
         store: str | os.PathLike[str] | ResultStore = "zcfast-scan.sqlite",
         dataset: str = "cifar10", batch_size: int = 64, data_seed: int = 42, seed: int = 42,
         num_classes: int | None = None, data: tuple[torch.Tensor, torch.Tensor] | None = None,
         batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None, n_batches: int = 1,
         order: str = "sample", sample_seed: int = 0, device: str = "cpu",
         backend: str = "local", workers: int | None = None, address: str | None = None,
         start_method: str | None = None, chunk_size: int | None = None,
         scorer: ArchScorer | None = None, batch_scorer: BatchScorer | str | None = "auto",
         commit_rows: int = 256, commit_seconds: float = 5.0, progress: bool = True,
         export: str | os.PathLike[str] | None = None, overwrite: bool = False,
         retry_errors: bool = False) -> ScanResult:
    """Score up to ``n`` distinct candidates of ``space`` into a result store (resumable).

    Args:
        space: a ``SearchSpace`` or its name (``"nb201"``).
        proxies: proxy names (list or comma-separated string, ``"all"`` for the paper's six);
            stored sorted.
        n: distinct candidates the run should hold at the end (see the module docstring);
            None: enumerate the whole space.
        store: store path (created if missing) or an open :class:`ResultStore`. The scan holds
            the store's writer lock while it runs: a second scan on the same store is refused.
        dataset, batch_size, data_seed: the scoring batch, ``zcfast.data.paper_batch(dataset,
            batch_size, data_seed)``, unless ``data=(x [B,C,H,W] float, y [B] int64)`` is given
            (``dataset`` is then only a label, and sets ``num_classes`` when it is a benchmark).
        batches, n_batches: several mini-batches, for proxies that need them (ZiCo): the user's
            ``batches=[(x, y), ...]`` (instead of ``data``), or ``n_batches`` batches drawn by
            ``zcfast.data.paper_batches(dataset, batch_size, data_seed, n_batches)`` (the first
            is the paper's batch). Single-batch proxies use the first batch; a multi-batch
            proxy given one batch splits it (``zcfast.data.split_batch``). With more than one
            batch the scorer (and the batched scorer, else it is not used) must name a
            ``batches`` parameter and is called with ``inputs=None, targets=None,
            batches=[...]``, as ``zcfast.score_arch`` takes them; the run is keyed by
            ``zcfast.data.batches_fingerprint`` (one batch: the same run as ``data``).
        seed: model-init seed (per-architecture seeding, design.md §5).
        num_classes: classifier width; default from the dataset (10 / 100 / 120).
        order: ``"sample"`` (seeded by ``sample_seed``) or ``"enumerate"``.
        device: torch device the workers score on (``cpu``, ``cuda[:N]``).
        backend: ``"local"`` (process pool, ``workers`` processes, default every core),
            ``"ray"`` (``address`` of a cluster; default a local instance; ``ray://`` needs
            ``ray[client]``) or ``"serial"``. ``local`` forks its workers from a forkserver
            that has imported torch and zcfast once (``spawn`` where there is no forkserver;
            ``start_method`` / ``$ZCFAST_START_METHOD`` to choose), which imports the main
            script as spawn does: call ``scan`` under ``if __name__ == "__main__":``.
        chunk_size: candidates per task sent to a worker (default 8 with a batched scorer,
            else 4).
        scorer: per-architecture scorer with ``zcfast.score_arch``'s signature (default that
            function). Must be picklable (a module-level function) for process/Ray backends.
        batch_scorer: ``"auto"`` (``zcfast.batched.score_batch`` when importable and
            ``scorer`` is None), a callable with its signature, or None (one at a time).
        commit_rows, commit_seconds: a transaction is committed when this many rows are
            buffered or this long has passed since the last commit (the most a crash loses).
        progress: tqdm progress bar (rate, ETA) on stderr.
        export: also write the run to this Parquet file at the end (checked before the scan
            starts: never the store, never an existing file unless ``overwrite``, except an
            earlier export of the same run).
        overwrite: allow ``export`` to replace an existing file (never a store).
        retry_errors: rescore the rows of this run stored with an error (and rows whose
            checksum is damaged), replacing them in place. Without it a rerun keeps them, and a
            run with damaged rows is refused.

    Returns:
        :class:`ScanResult`.

    Raises:
        ValueError: bad arguments (unknown space/proxy/dataset/backend/device/order, bad
            counts, an unguarded main script, a bad export target, enumerating an infinite
            space), workers that die as they start; :class:`zcfast.store.StoreError` (a
            ValueError): the store is not a zcfast store, is being written by another process,
            is read-only, or holds damaged rows.
    """
    t_start = time.perf_counter()
    # ------------------------------------------------ the front door: nothing runs before this
    sp = options.resolve_space(space)
    # an ensemble name (zcfast.ensemble) stores its members; it ranks at report time (rank_by)
    members, ens_names = options.resolve_scoring(proxies, option="proxies")
    names = tuple(sorted(members))
    if order not in ("sample", "enumerate"):
        raise ValueError(f"order must be 'sample' or 'enumerate', got {order!r}")
    _check_backend(backend, address)
    dev = _check_device(device, backend)
    n = options.check_count(n, "n", minimum=0, allow_none=True)
    workers = options.check_count(workers, "workers", allow_none=True)
    chunk_size = options.check_count(chunk_size, "chunk_size", allow_none=True)
    commit_rows = options.check_count(commit_rows, "commit_rows")
    if isinstance(commit_seconds, bool) or not isinstance(commit_seconds, (int, float)) \
            or not math.isfinite(commit_seconds) or commit_seconds <= 0:
        raise ValueError(f"commit_seconds must be a number > 0, got {commit_seconds!r}")
    sample_seed, seed, data_seed = (_check_int(sample_seed, "sample_seed"), _check_int(seed, "seed"),
                                    _check_int(data_seed, "data_seed"))
    for flag, value in (("progress", progress), ("overwrite", overwrite), ("retry_errors", retry_errors)):
        if not isinstance(value, bool):
            raise ValueError(f"{flag} must be True or False, got {value!r}")
    if scorer is not None and not callable(scorer):
        raise ValueError(f"scorer must be a function with zcfast.score_arch's signature, got {scorer!r}")
    size = sp.size() if hasattr(sp, "size") else None
    if n is None:
        if size is None:
            raise ValueError(f"space {sp.name!r} is infinite: give n")
        order = "enumerate"
    target = n if n is not None else int(size)
    if backend == "local" and resolve_start_method(start_method) != "fork":
        check_main_guard("zcfast.scan(backend='local')")
    n_batches = options.check_count(n_batches, "n_batches")
    if data is not None and (batches is not None or n_batches > 1):
        raise ValueError("pass data=(x, y), batches=[(x, y), ...] or n_batches, not two of them")
    user_batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    if batches is not None:
        if n_batches > 1:
            raise ValueError("pass batches=[(x, y), ...] or n_batches, not both")
        user_batches = _check_batches(batches)
        data = user_batches[0]
    if data is None:
        dataset = options.resolve_dataset(dataset)
        batch_size = options.check_count(batch_size, "batch_size")
    else:
        inputs, targets = _check_data(data)
        batch_size = int(inputs.shape[0])
        if not isinstance(dataset, str) or not dataset:
            raise ValueError(f"dataset must be a name, got {dataset!r}")
        try:
            dataset = options.resolve_dataset(dataset)
        except ValueError:
            pass  # a label of the user's own data
    if num_classes is None:
        try:
            num_classes = options.num_classes(dataset)
        except ValueError:
            from zcfast.data import DATASETS
            raise ValueError(f"num_classes unknown for dataset {dataset!r}: pass num_classes, or use one of "
                             f"{', '.join(DATASETS)}") from None
    num_classes = options.check_count(num_classes, "num_classes", minimum=2)
    if batch_scorer == "auto":
        batch_scorer = _default_batch_scorer() if scorer is None else None
    elif isinstance(batch_scorer, str) or (batch_scorer is not None and not callable(batch_scorer)):
        raise ValueError(f"batch_scorer must be 'auto', a callable or None, got {batch_scorer!r}")
    scorer_name = "zcfast" if scorer is None else _callable_name(scorer, "zcfast")
    if scorer is not None and batch_scorer is not None:
        scorer_name += "+" + _callable_name(batch_scorer, "")
    multi = (user_batches is not None and len(user_batches) > 1) or n_batches > 1
    if multi:
        from zcfast.parallel import takes_argument
        if scorer is None:
            from zcfast.scoring import score_arch as default_scorer
        if not takes_argument(scorer if scorer is not None else default_scorer, "batches"):
            raise ValueError(f"batches: the scorer {scorer_name if scorer is not None else 'zcfast.score_arch'} "
                             "has no batches parameter, so it cannot score several mini-batches; "
                             "pass one batch, or a scorer that takes batches=")
        if batch_scorer is not None and not takes_argument(batch_scorer, "batches"):
            batch_scorer = None  # one at a time through the scorer, which takes them
    if chunk_size is None:
        chunk_size = 8 if batch_scorer is not None else 4
    from zcfast.data import batches_fingerprint, paper_batches

    if user_batches is None and data is not None:
        user_batches = [(inputs, targets)]
    all_batches = user_batches if user_batches is not None else paper_batches(dataset, batch_size, data_seed,
                                                                              n_batches)
    inputs, targets = all_batches[0]
    config = run_config(sp.name, names, dataset=dataset, batch_size=batch_size, data_seed=data_seed,
                        data_fingerprint=batches_fingerprint(all_batches), seed=seed,
                        num_classes=num_classes, device=str(dev), order=order, sample_seed=sample_seed,
                        scorer=scorer_name, data=None if data is None else "user")
    rid = config.run_id()
    spec = WorkerSpec(sp, names, inputs, targets, seed=seed, num_classes=num_classes,
                      device=str(dev), scorer=scorer, batch_scorer=batch_scorer,
                      batches=tuple(all_batches) if len(all_batches) > 1 else None)
    if backend != "serial":
        _check_picklable(spec, backend)
    own_store = not isinstance(store, ResultStore)
    store_path = store.path if isinstance(store, ResultStore) else store
    if export is not None:
        check_export_target(export, store=store_path, run_id=rid, overwrite=overwrite)
    # ------------------------------------------------ the work
    st = ResultStore(store) if own_store else store
    try:
        damaged: list[str] = []
        if st.readonly:
            if rid not in st.runs() or st.count(rid) < target or retry_errors:
                raise StoreError(f"store {st.path} is read-only: this scan would add rows; its runs can still "
                                 "be read and exported (ResultStore(path, readonly=True))")
        else:
            st.acquire_writer()  # one writer: a second scan of this store is refused here
            rid = st.run_id(config)
            damaged = [key for _, key in st.damaged(rid)]
            if damaged and not retry_errors:
                raise StoreError(f"store {st.path}: run {rid} holds {len(damaged)} damaged row(s) (checksum "
                                 f"mismatch: {', '.join(map(repr, damaged[:5]))}{' ...' if len(damaged) > 5 else ''}); "
                                 "rerun with retry_errors=True (--retry-errors) to rescore them")
            if damaged:
                st.delete_rows(rid, damaged)  # rescored below as the stream reaches them
        have = st.count(rid)
        state = _ScanState(st, rid, sp, target, have)
        retry = retry_errors and not st.readonly and (bool(damaged) or st.count(rid, errors=True) > 0)
        if not st.readonly and (have < target or retry):
            stream = _stream(sp, order, sample_seed, target, size)
            bar = _progress_bar(progress, target, have, sp.name, backend)

            def chunks() -> Iterator[list[Task]]:
                if retry:
                    yield from state.retry_chunks(chunk_size)
                if have < target:
                    yield from state.chunks(stream, chunk_size)

            try:
                with make_backend(backend, spec, workers=workers, address=address,
                                  start_method=start_method) as pool:
                    if bar is not None:
                        bar.set_postfix_str(f"{pool.workers} workers", refresh=False)
                    for rows in pool.imap_unordered(chunks()):
                        state.receive(rows, commit_rows, commit_seconds)
                        if bar is not None:
                            bar.update(len(rows))
                            if state.errors:
                                bar.set_postfix_str(f"{pool.workers} workers, {state.errors} errors",
                                                    refresh=False)
            finally:
                state.flush()  # rows already scored are kept even on Ctrl-C / an exception
                if bar is not None:
                    bar.close()
        total = st.count(rid)
        total_errors = st.count(rid, errors=True)
        if export is not None:
            st.export_parquet(rid, export, overwrite=overwrite)
        return ScanResult(rid, str(st.path), target, total, state.scored, state.errors,
                          time.perf_counter() - t_start, state.exhausted and total < target,
                          total_errors, state.retried, state.first_error, ens_names)
    finally:
        if own_store:
            st.close()


def _check_picklable(spec: WorkerSpec, backend: str) -> None:
    """Workers receive the spec pickled: fail early, naming the culprit, if it cannot be."""
    import pickle

    for what, obj in (("scorer", spec.scorer), ("batch_scorer", spec.batch_scorer),
                      ("space", spec.space)):
        try:
            pickle.dumps(obj)
        except Exception as exc:
            raise ValueError(f"the {what} {obj!r} cannot be sent to {backend} workers ({exc}); "
                             "use a module-level function/object or backend='serial'") from None


def _progress_bar(enabled: bool, total: int, initial: int, name: str, backend: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="arch", desc=f"scan {name} [{backend}]",
                smoothing=0.05, dynamic_ncols=True, file=sys.stderr)


def _stream(space: Any, order: str, sample_seed: int, target: int, size: int | None) -> Iterator[Hashable]:
    if order == "enumerate":
        yield from space.enumerate()
        return
    rng = random.Random(sample_seed)
    cap = 50 * target if size is None else min(50 * target, 20 * int(size))
    for _ in range(cap + 100_000):
        yield space.sample(rng)


class _ScanState:
    """Parent-side bookkeeping: dedup via the store + the keys in flight, commit buffer."""

    def __init__(self, store: ResultStore, run_id: str, space: Any, target: int, have: int) -> None:
        self.store, self.run_id, self.space = store, run_id, space
        self.target = target
        self.have = have          # rows in the run when the call started
        self.dispatched = 0       # new candidates sent to workers by this call
        self.retried = 0          # stored error rows sent to be rescored
        self.in_flight: set[str] = set()   # dispatched, not yet committed (bounded)
        self.committed_since_lookup: set[str] = set()  # bounded by one block's dispatches
        self.buffer: list[ScoreRow] = []
        self.last_commit = time.monotonic()
        self.scored = 0
        self.errors = 0
        self.first_error: str | None = None
        self.exhausted = False

    def retry_chunks(self, chunk_size: int) -> Iterator[list[Task]]:
        """Chunks of the run's rows stored with an error (rescored and replaced in place)."""
        chunk: list[Task] = []
        for row in self.store.rows(self.run_id, errors=True):
            try:
                arch = self.space.decode(row.arch_str)
            except ValueError as exc:
                raise StoreError(f"run {self.run_id}: stored architecture {row.arch_str!r} cannot be "
                                 f"decoded to rescore it ({exc})") from None
            self.in_flight.add(row.arch_key)
            self.retried += 1
            chunk.append((row.arch_key, row.arch_str, arch))
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def chunks(self, stream: Iterator[Hashable], chunk_size: int) -> Iterator[list[Task]]:
        """Lazily turn the stream into chunks of new candidates until the target is reached."""
        chunk: list[Task] = []
        block: list[Hashable] = []
        for arch in stream:
            block.append(arch)
            if len(block) < _LOOKUP_BLOCK:
                continue
            yield from self._new_in_block(block, chunk, chunk_size)
            block = []
            if self.have + self.dispatched >= self.target:
                break
        else:
            yield from self._new_in_block(block, chunk, chunk_size)
            self.exhausted = self.have + self.dispatched < self.target
        if chunk:
            yield chunk

    def _new_in_block(self, block: list[Hashable], chunk: list[Task], chunk_size: int) -> Iterator[list[Task]]:
        keyed = [(self.space.key(a), a) for a in block]
        done = self.store.has_keys(self.run_id, list({k for k, _ in keyed} - self.in_flight))
        # Keys committed from here on are in neither ``done`` (looked up before) nor
        # ``in_flight`` (removed on commit): remember them until the next look-up.
        self.committed_since_lookup.clear()
        for key, arch in keyed:
            if self.have + self.dispatched >= self.target:
                return
            if key in done or key in self.in_flight or key in self.committed_since_lookup:
                continue
            self.in_flight.add(key)
            self.dispatched += 1
            chunk.append((key, self.space.encode(arch), arch))
            if len(chunk) >= chunk_size:
                yield list(chunk)
                chunk.clear()

    def receive(self, rows: list[ScoreRow], commit_rows: int, commit_seconds: float) -> None:
        self.buffer.extend(rows)
        if len(self.buffer) >= commit_rows or time.monotonic() - self.last_commit >= commit_seconds:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.store.put_many(self.run_id, self.buffer)
            self.scored += len(self.buffer)
            failed = [r.error for r in self.buffer if r.error is not None]
            self.errors += len(failed)
            if failed and self.first_error is None:
                self.first_error = failed[0]
            keys = [r.arch_key for r in self.buffer]
            self.in_flight.difference_update(keys)
            self.committed_since_lookup.update(keys)
            self.buffer = []
        self.last_commit = time.monotonic()
