"""Streaming, resumable scans of many candidates into a :mod:`zcfast.store` result store.

``zcfast.scan(space, proxies, n=...)`` draws candidates lazily, skips those the run already
holds or that are in flight (deduplicated by ``space.key``), scores them on a backend
(:mod:`zcfast.parallel`: serial, local processes, Ray) and writes the rows to the store in
transactions. Killing the process at any moment and calling ``scan`` again with the same
arguments finishes the job: nothing is lost beyond the uncommitted rows (which are then
rescored), nothing is duplicated, and the values are those of an uninterrupted run.

The candidate stream, and what ``n`` means
    ``order="sample"``: ``space.sample(random.Random(sample_seed))`` drawn again and again;
    ``order="enumerate"``: ``space.enumerate()``. The scan ends when the run holds ``n``
    distinct candidates, i.e. the first ``n`` distinct keys of the stream (a run only ever
    holds candidates of its own stream: the stream is part of the run's config), or when
    the stream ends. A sampled stream of a finite space cannot give more distinct keys than
    the space has (NB201: 6,466 keys over 15,625 cells), so it is cut after
    ``min(50·n, 20·size) + 100,000`` draws (deterministic) and the result says
    ``exhausted=True``. ``n=None`` scans the whole (finite) space by enumeration.

Memory is flat in the number of candidates: the dedup state is the store itself (indexed
look-ups, a block of 256 candidates at a time) plus the keys in flight, bounded by the
backend's ``max_in_flight`` chunks and the commit buffer.

The run's config (see :func:`run_config`) holds space, dataset, batch size, data seed, a
fingerprint of the batch, model seed, sorted proxies, classes, device type, the candidate
stream and the scorer, so scans with different settings never share rows.
"""
from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Sequence

import torch

from zcfast.parallel import (ArchScorer, BatchScorer, Task, WorkerSpec, available_cpus,
                             make_backend)
from zcfast.store import ResultStore, ScoreRow

__all__ = ["ScanResult", "run_config", "scan"]

_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet16-120": 120}
_LOOKUP_BLOCK = 256


@dataclass(frozen=True)
class ScanResult:
    """What a scan call did.

    Attributes:
        run_id: the store run the rows went to.
        store: path of the store file.
        target: ``n`` (or the space size for a full enumeration).
        total: rows of the run when the call ended.
        scored: rows written by this call.
        errors: of those, rows with an error.
        seconds: wall time of the call.
        exhausted: the candidate stream ended before ``target`` distinct candidates.
    """

    run_id: str
    store: str
    target: int
    total: int
    scored: int
    errors: int
    seconds: float
    exhausted: bool


def _resolve_space(space: Any) -> Any:
    if isinstance(space, str):
        from zcfast.spaces import get
        return get(space)
    for attr in ("sample", "key", "encode", "name"):
        if not hasattr(space, attr):
            raise ValueError(f"space must be a search-space name or a SearchSpace, got {space!r}")
    return space


def _resolve_proxies(proxies: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(proxies, str):
        proxies = [p.strip() for p in proxies.split(",")]
    names = tuple(sorted({p for p in proxies if p}))
    if not names or not all(isinstance(p, str) for p in names):
        raise ValueError(f"proxies must be a non-empty list of names, got {proxies!r}")
    return names


def _callable_name(fn: Callable[..., Any] | None, default: str) -> str:
    if fn is None:
        return default
    mod = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{mod}.{name}"


def _fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    try:
        from zcfast.data import batch_fingerprint
    except ImportError:  # pragma: no cover
        import hashlib
        h = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes())
        h.update(y.detach().cpu().long().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]
    return batch_fingerprint(x, y)


def run_config(space_name: str, proxies: Sequence[str], *, dataset: str, batch_size: int,
               data_seed: int, data_fingerprint: str, seed: int, num_classes: int, device: str,
               order: str, sample_seed: int, scorer: str) -> dict[str, Any]:
    """The store config of a scan run (everything that changes which rows or values it holds)."""
    stream = "enumerate" if order == "enumerate" else f"sample:{sample_seed}"
    return {
        "kind": "scan",
        "space": space_name,
        "dataset": dataset,
        "batch_size": int(batch_size),
        "data_seed": int(data_seed),
        "data": data_fingerprint,
        "seed": int(seed),
        "proxies": sorted(proxies),
        "num_classes": int(num_classes),
        "device": torch.device(device).type,
        "candidates": stream,
        "scorer": scorer,
    }


def _default_batch_scorer() -> BatchScorer | None:
    try:
        from zcfast.batched import score_batch
    except ImportError:
        return None
    return score_batch


def scan(space: Any, proxies: Sequence[str] | str, n: int | None = None, *,
         store: str | os.PathLike[str] | ResultStore = "zcfast-scan.sqlite",
         dataset: str = "cifar10", batch_size: int = 64, data_seed: int = 42, seed: int = 42,
         num_classes: int | None = None, data: tuple[torch.Tensor, torch.Tensor] | None = None,
         order: str = "sample", sample_seed: int = 0, device: str = "cpu",
         backend: str = "local", workers: int | None = None, address: str | None = None,
         start_method: str | None = None, chunk_size: int | None = None,
         scorer: ArchScorer | None = None, batch_scorer: BatchScorer | str | None = "auto",
         commit_rows: int = 256, commit_seconds: float = 5.0, progress: bool = True,
         export: str | os.PathLike[str] | None = None) -> ScanResult:
    """Score up to ``n`` distinct candidates of ``space`` into a result store (resumable).

    Args:
        space: a ``SearchSpace`` or its name (``"nb201"``).
        proxies: proxy names (list or comma-separated string); stored sorted.
        n: distinct candidates the run should hold at the end (see the module docstring);
            None: enumerate the whole space.
        store: store path (created if missing) or an open :class:`ResultStore`.
        dataset, batch_size, data_seed: the scoring batch, ``zcfast.data.paper_batch(dataset,
            batch_size, data_seed)``, unless ``data=(x [B,C,H,W] float, y [B] int64)`` is given.
        seed: model-init seed (per-architecture seeding, design.md §5).
        num_classes: classifier width; default from the dataset (10 / 100 / 120).
        order: ``"sample"`` (seeded by ``sample_seed``) or ``"enumerate"``.
        device: torch device the workers score on.
        backend: ``"local"`` (process pool, ``workers`` processes, default every core),
            ``"ray"`` (``address`` of a cluster; default a local instance) or ``"serial"``.
        chunk_size: candidates per task sent to a worker (default 8 with a batched scorer,
            else 4).
        scorer: per-architecture scorer with ``zcfast.score_arch``'s signature (default that
            function). Must be picklable (a module-level function) for process/Ray backends.
        batch_scorer: ``"auto"`` (``zcfast.batched.score_batch`` when importable and
            ``scorer`` is None), a callable with its signature, or None (one at a time).
        commit_rows, commit_seconds: a transaction is committed when this many rows are
            buffered or this long has passed since the last commit (the most a crash loses).
        progress: tqdm progress bar (rate, ETA) on stderr.
        export: also write the run to this Parquet file at the end.

    Returns:
        :class:`ScanResult`.

    Raises:
        ValueError: bad arguments (unknown space/backend/order, n < 0, sampling a space with
            no ``sample``, enumerating an infinite space), or the store is not a zcfast store.
    """
    t_start = time.perf_counter()
    sp = _resolve_space(space)
    names = _resolve_proxies(proxies)
    if order not in ("sample", "enumerate"):
        raise ValueError(f"order must be 'sample' or 'enumerate', got {order!r}")
    if backend not in ("serial", "local", "ray"):
        raise ValueError(f"unknown backend {backend!r}; choose serial, local or ray")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"bad device {device!r}") from None
    if dev.type == "cuda" and backend != "ray" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"n must be a non-negative int or None, got {n!r}")
    size = sp.size() if hasattr(sp, "size") else None
    if n is None:
        if size is None:
            raise ValueError(f"space {sp.name!r} is infinite: give n")
        order = "enumerate"
    target = n if n is not None else int(size)
    if commit_rows < 1 or commit_seconds <= 0:
        raise ValueError("commit_rows must be >= 1 and commit_seconds > 0")
    if data is None:
        from zcfast.data import paper_batch
        inputs, targets = paper_batch(dataset, batch_size, data_seed)
    else:
        inputs, targets = data
        if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
            raise ValueError("data must be a pair of tensors (x [B,C,H,W], y [B])")
        if inputs.dim() != 4 or targets.dim() != 1 or inputs.shape[0] != targets.shape[0]:
            raise ValueError(f"data must be x [B,C,H,W] and y [B]; got {list(inputs.shape)} "
                             f"and {list(targets.shape)}")
        batch_size = int(inputs.shape[0])
    if num_classes is None:
        num_classes = _NUM_CLASSES.get(dataset.lower())
        if num_classes is None:
            raise ValueError(f"num_classes unknown for dataset {dataset!r}: pass num_classes")
    if batch_scorer == "auto":
        batch_scorer = _default_batch_scorer() if scorer is None else None
    elif isinstance(batch_scorer, str):
        raise ValueError(f"batch_scorer must be 'auto', a callable or None, got {batch_scorer!r}")
    scorer_name = "zcfast" if scorer is None else _callable_name(scorer, "zcfast")
    if scorer is not None and batch_scorer is not None:
        scorer_name += "+" + _callable_name(batch_scorer, "")
    if chunk_size is None:
        chunk_size = 8 if batch_scorer is not None else 4
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    config = run_config(sp.name, names, dataset=dataset, batch_size=batch_size,
                        data_seed=data_seed, data_fingerprint=_fingerprint(inputs, targets),
                        seed=seed, num_classes=num_classes, device=device, order=order,
                        sample_seed=sample_seed, scorer=scorer_name)
    own_store = not isinstance(store, ResultStore)
    st = ResultStore(store) if own_store else store
    try:
        rid = st.run_id(config)
        have = st.count(rid)
        state = _ScanState(st, rid, sp, target, have)
        if have < target:
            spec = WorkerSpec(sp, names, inputs, targets, seed=seed, num_classes=num_classes,
                              device=device, scorer=scorer, batch_scorer=batch_scorer)
            if backend != "serial":
                _check_picklable(spec, backend)
            stream = _stream(sp, order, sample_seed, target, size)
            bar = _progress_bar(progress, target, have, sp.name, backend)
            try:
                with make_backend(backend, spec, workers=workers, address=address,
                                  start_method=start_method) as pool:
                    if bar is not None:
                        bar.set_postfix_str(f"{pool.workers} workers", refresh=False)
                    for rows in pool.imap_unordered(state.chunks(stream, chunk_size)):
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
        if export is not None:
            st.export_parquet(rid, export)
        return ScanResult(rid, str(st.path), target, total, state.scored, state.errors,
                          time.perf_counter() - t_start, state.exhausted and total < target)
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
        self.dispatched = 0       # candidates sent to workers by this call
        self.in_flight: set[str] = set()   # dispatched, not yet committed (bounded)
        self.committed_since_lookup: set[str] = set()  # bounded by one block's dispatches
        self.buffer: list[ScoreRow] = []
        self.last_commit = time.monotonic()
        self.scored = 0
        self.errors = 0
        self.exhausted = False

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
            self.errors += sum(r.error is not None for r in self.buffer)
            keys = [r.arch_key for r in self.buffer]
            self.in_flight.difference_update(keys)
            self.committed_since_lookup.update(keys)
            self.buffer = []
        self.last_commit = time.monotonic()
