"""Scoring candidates in parallel: in-process, a local process pool, or Ray.

The scan (``zcfast/scan.py``) produces *chunks* of candidates ``[(arch_key, arch_str, arch)]``
lazily; a backend scores them and yields lists of :class:`~zcfast.store.ScoreRow` as chunks
finish (in any order). Workers never touch the store: they return rows to the parent, which
is the only writer.

Every worker scores with ``torch.set_num_threads(threads)`` (default
:data:`zcfast.options.SCORING_THREADS` = 1, also in the serial backend) so that reductions run
in the same order whichever backend and worker count ran: with the default per-architecture
scorer the values are bit-identical across backends.

A NaN or infinite value is stored with its reason: the row's ``error`` reads
``"non-finite value: jacob_cov=nan (<why>)"``, the reason taken from zcfast's own
``ProxyResult.error`` (``detailed=True``) for the default scorers.

Backends:

* ``serial``: in the calling process (debugging, tiny scans).
* ``local``: one process per core (``os.sched_getaffinity``), ``concurrent.futures`` process
  pool. Start method ``forkserver`` by default where the platform has it (Linux), else
  ``spawn``: ``fork`` after torch has started its OpenMP thread pool (and with the parent's
  SQLite connection open) is not safe, and spawn costs one ``import torch`` per worker (about
  2.5 CPU-seconds, which dominates a scan of a few hundred NB201 candidates: see
  bench/bench_scan_overheads.py). The forkserver is a fresh process that imports torch and
  zcfast once (:data:`FORKSERVER_PRELOAD` plus the modules of the space and scorers) and
  forks every worker from that state, so workers start in milliseconds, and a second pool
  in the same process (another scan) reuses the running server. Forked workers take the
  parent's current environment variables (``os.environ``) as spawned ones do.
  ``zcfast scan`` starts the server before its own ``import torch``
  (:func:`zcfast.forkserver.start_forkserver`), so the two imports overlap.
  ``start_method="spawn"`` or ``"fork"`` may be passed (or ``ZCFAST_START_METHOD``). A worker that dies (killed, out of memory) breaks the
  pool: the pool is restarted and the chunks it held are retried one candidate at a time;
  a candidate that kills a worker again is recorded with the error ``worker process died``.
  Workers that die as they start (before scoring anything: typically a script that calls
  ``zcfast.scan`` without the ``if __name__ == "__main__":`` guard, which spawned workers need
  because they re-import the main module) raise :class:`WorkerStartError` instead of storing
  error rows; :func:`check_main_guard` refuses such a script before any worker starts.
  Workers exit by themselves within a second when the parent is killed (forkserver workers
  too: they watch the parent's pid and their server).
* ``ray``: one actor per CPU of the cluster (``ray.init(address=...)``; without an address
  and no running instance a local one is started). zcfast must be importable on every node.
"""
from __future__ import annotations

import ast
import inspect
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping, Sequence

import torch

from zcfast.forkserver import FORKSERVER_PRELOAD, resolve_start_method, start_forkserver
from zcfast.options import SCORING_THREADS, proxy_outcome, scoring_threads
from zcfast.store import ScoreRow

__all__ = [
    "Backend",
    "LocalPoolBackend",
    "RayBackend",
    "SerialBackend",
    "WorkerSpec",
    "WorkerStartError",
    "available_cpus",
    "FORKSERVER_PRELOAD",
    "check_main_guard",
    "hash_scorer",
    "make_backend",
    "resolve_start_method",
    "score_chunk",
    "start_forkserver",
    "takes_argument",
]

#: A chunk of candidates: (arch_key, arch_str, arch).
Task = tuple[str, str, Hashable]
#: Per-architecture scorer, signature of ``zcfast.score_arch``.
ArchScorer = Callable[..., dict[str, float]]
#: Batched scorer, signature of ``zcfast.batched.score_batch``.
BatchScorer = Callable[..., list[dict[str, float]]]


def available_cpus() -> int:
    """Cores this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


@dataclass
class WorkerSpec:
    """Everything a worker needs to score candidates (pickled once per worker).

    Attributes:
        space: the search space (``zcfast.spaces.SearchSpace``).
        proxies: proxy names to compute.
        inputs: ``[B, C, H, W]`` float batch; targets: ``[B]`` int64 labels.
        seed: model-init seed (design.md §5 per-architecture seeding).
        num_classes: classifier width.
        device: torch device string.
        scorer: per-architecture scorer (``zcfast.score_arch`` signature); None = that function.
        batch_scorer: optional batched scorer (``zcfast.batched.score_batch`` signature) tried
            first on a whole chunk; on any failure the chunk is rescored one at a time so a
            failing candidate is isolated.
        threads: ``torch.set_num_threads`` while scoring (:data:`zcfast.options.SCORING_THREADS`:
            the values of a run must not depend on how it was executed).
        batches: several mini-batches ``((x, y), ...)`` (``inputs, targets`` is the first). A
            scorer that names a ``batches`` parameter then gets them *instead of* the one batch,
            as ``zcfast.score_arch`` / ``score_batch`` take them: ``inputs=None, targets=None,
            batches=[...]``. None: the one batch.
    """

    space: Any
    proxies: tuple[str, ...]
    inputs: torch.Tensor
    targets: torch.Tensor
    seed: int = 42
    num_classes: int = 10
    device: str = "cpu"
    scorer: ArchScorer | None = None
    batch_scorer: BatchScorer | None = None
    threads: int = SCORING_THREADS
    batches: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None


_HASH_CALLS = 0  # candidates hash_scorer saw in this process (ZCFAST_HASH_SCORER_HOLD_AFTER)


def hash_scorer(space: Any, arch: Hashable, inputs: torch.Tensor, targets: torch.Tensor,
                proxies: Sequence[str], seed: int = 42, num_classes: int = 10,
                device: str = "cpu") -> dict[str, float]:
    """A synthetic, instant scorer for testing and benchmarking the scan machinery.

    Value of proxy ``p`` = a float in [-1, 1) from sha256 of ``(seed, space.key(arch), p)``;
    deterministic, independent of order/process. Environment knobs (for tests/benchmarks):

    - ``ZCFAST_HASH_SCORER_FAIL=1``: keys starting with ``"f"`` raise ``RuntimeError`` (about
      1/16 of candidates exercise the error path); ``=all``: every candidate raises;
    - ``ZCFAST_HASH_SCORER_SLEEP=<seconds>``: sleep that long per candidate (a slow scorer);
    - ``ZCFAST_HASH_SCORER_KILL=<prefix>``: the scoring *process* SIGKILLs itself on a key with
      that prefix (simulates a worker killed by the OOM killer);
    - ``ZCFAST_HASH_SCORER_HOLD=<path>``: while that file exists, wait before each candidate
      after the first ``ZCFAST_HASH_SCORER_HOLD_AFTER`` (default 0) this process scored (a test
      holds a scan mid-run, so a kill lands before its end whatever the machine's load).
    """
    import hashlib
    import signal

    key = space.key(arch)
    fail = os.environ.get("ZCFAST_HASH_SCORER_FAIL")
    if (fail == "1" and key.startswith("f")) or fail == "all":
        raise RuntimeError(f"synthetic failure for {key}")
    kill = os.environ.get("ZCFAST_HASH_SCORER_KILL")
    if kill and key.startswith(kill):
        os.kill(os.getpid(), signal.SIGKILL)
    global _HASH_CALLS
    _HASH_CALLS += 1
    hold = os.environ.get("ZCFAST_HASH_SCORER_HOLD")
    if hold and _HASH_CALLS > int(os.environ.get("ZCFAST_HASH_SCORER_HOLD_AFTER") or 0):
        while os.path.exists(hold):
            time.sleep(0.01)
    sleep = float(os.environ.get("ZCFAST_HASH_SCORER_SLEEP") or 0)
    if sleep > 0:
        time.sleep(sleep)
    out = {}
    for p in proxies:
        h = hashlib.sha256(f"{seed}:{key}:{p}".encode()).digest()
        out[p] = int.from_bytes(h[:8], "little") / 2.0**63 - 1.0
    return out


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
    return text[:2000]


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _one_line(text: Any, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def _check_values(values: Any, proxies: Sequence[str]) -> tuple[dict[str, float], str | None]:
    """Validate a scorer's output: a number (or a ``ProxyResult``) for every proxy.

    A non-finite value is kept, and the row's error names it with its reason
    (:func:`zcfast.options.proxy_outcome`: the ``ProxyResult.error``, which zcfast's own
    scorers always fill with ``detailed=True``): ``"non-finite value: jacob_cov=nan (<why>)"``.
    Missing or non-numeric values give ``"bad scorer output: ..."``.
    """
    if not isinstance(values, Mapping):
        return {}, f"scorer returned {type(values).__name__}, not a dict"
    clean: dict[str, float] = {}
    nonfinite: list[str] = []
    bad: list[str] = []
    for p in proxies:
        if p not in values:
            bad.append(f"missing {p}")
            continue
        raw = getattr(values[p], "value", values[p])
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) and not hasattr(raw, "__float__"):
            bad.append(f"{p} is not a number ({_one_line(repr(raw), 80)})")
            continue
        v, reason = proxy_outcome(p, values[p])
        clean[p] = v
        if reason is not None:  # the scorer's own reason, else say that it gave none
            own = getattr(values[p], "error", None)
            nonfinite.append(f"{p}={v} ({_one_line(own or 'no reason given by the scorer')})")
    if not nonfinite and not bad:
        return clean, None
    if not bad:
        return clean, f"non-finite value: {', '.join(nonfinite)}"
    return clean, f"bad scorer output: {', '.join(bad + nonfinite)}"


def _score_one(spec: WorkerSpec, task: Task) -> ScoreRow:
    key, text, arch = task
    scorer = spec.scorer
    extra: dict[str, Any] = {}
    if scorer is None:
        from zcfast.scoring import score_arch as scorer  # noqa: N813
        extra["detailed"] = True   # ProxyResults: every non-finite value with its reason
    if spec.batches is not None:  # instead of inputs / targets
        extra["batches"] = list(spec.batches)
    inputs, targets = spec.inputs, spec.targets
    if spec.batches is not None:
        inputs = targets = None
    t0 = time.perf_counter()
    try:
        raw = scorer(spec.space, arch, inputs, targets, list(spec.proxies),
                     seed=spec.seed, num_classes=spec.num_classes, device=spec.device, **extra)
        values, error = _check_values(raw, spec.proxies)
    except Exception as exc:  # recorded, the scan goes on
        values = {}
        error = ("out of memory: " if _is_oom(exc) else "") + _describe(exc)
        if _is_oom(exc) and torch.cuda.is_available():
            torch.cuda.empty_cache()
    return ScoreRow(key, text, values, error, time.perf_counter() - t0)


def _accepts(fn: Callable[..., Any], name: str, *, explicitly: bool = False) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or (not explicitly and
                              any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()))


def takes_argument(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn``'s signature names a parameter ``name`` (``**kwargs`` alone does not count)."""
    return _accepts(fn, name, explicitly=True)


def score_chunk(spec: WorkerSpec, chunk: Sequence[Task]) -> list[ScoreRow]:
    """Score one chunk of candidates; never raises for a candidate's failure.

    With ``spec.batch_scorer`` the chunk is first scored in one batched call (each row's
    ``seconds`` is then the batch time divided by the chunk size); if that call raises or
    returns the wrong number of results, every candidate is rescored alone. A batched scorer
    that takes ``detailed`` (zcfast.batched.score_batch) is asked for ``ProxyResult``s, so a
    NaN's reason reaches the row.
    """
    with scoring_threads(spec.threads):
        if spec.batches is not None and spec.batch_scorer is not None \
                and not takes_argument(spec.batch_scorer, "batches"):
            spec.batch_scorer = None  # it would score the first batch only
        if spec.batch_scorer is not None and len(chunk) > 1:
            extra: dict[str, Any] = {}
            inputs, targets = spec.inputs, spec.targets
            if spec.batches is not None:  # instead of inputs / targets
                extra["batches"] = list(spec.batches)
                inputs = targets = None
            if _accepts(spec.batch_scorer, "detailed", explicitly=True):
                extra["detailed"] = True
            if _accepts(spec.batch_scorer, "num_classes"):
                extra["num_classes"] = spec.num_classes
            elif spec.num_classes != 10:  # cannot tell it the width: score one at a time
                spec.batch_scorer = None
                return [_score_one(spec, task) for task in chunk]
            t0 = time.perf_counter()
            try:
                results = spec.batch_scorer(spec.space, [t[2] for t in chunk], inputs,
                                            targets, list(spec.proxies), seed=spec.seed,
                                            device=spec.device, **extra)
            except NotImplementedError:  # e.g. a space the batched path does not cover:
                spec.batch_scorer = None   # stop trying for the rest of this worker's life
                results = None
            except Exception:
                results = None
            if results is not None and len(results) == len(chunk):
                dt = (time.perf_counter() - t0) / len(chunk)
                rows = []
                for (key, text, arch), raw in zip(chunk, results):
                    values, error = _check_values(raw, spec.proxies)
                    rows.append(ScoreRow(key, text, values, error, dt))
                return rows
        return [_score_one(spec, task) for task in chunk]


# ------------------------------------------------------------------ starting workers
class WorkerStartError(ValueError):
    """Local worker processes die as they start, before scoring anything (nothing is stored)."""


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return (any(isinstance(x, ast.Name) and x.id == "__name__" for x in sides)
            and any(isinstance(x, ast.Constant) and x.value == "__main__" for x in sides))


def _unguarded_main_call() -> str | None:
    """``"file:line"`` when this call comes from the top-level code of a main *script* outside
    ``if __name__ == "__main__":`` (spawned workers would run that code again), else None.

    Mirrors multiprocessing's spawn: the main module is re-imported in each worker unless the
    program was started as ``python -m pkg`` (``pkg.__main__``), ``-c`` or interactively.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:
        return None
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None and (name == "__main__" or name.endswith(".__main__")):
        return None
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:
        return None
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.body:
            if node.body[0].lineno <= line <= (node.body[-1].end_lineno or node.body[-1].lineno):
                return None
    return f"{path}:{line}"


def check_main_guard(what: str = "zcfast.scan") -> None:
    """Refuse to start spawned workers from unguarded top-level script code.

    Spawned (and forkserver) workers re-import the main script; without the guard each one
    would run the script's top-level code again (and with it the scan), so every worker dies
    as it starts.

    Raises:
        ValueError: naming the script line and the missing ``if __name__ == "__main__":``.
    """
    where = _unguarded_main_call()
    if where is not None:
        raise ValueError(f"{what} at {where} starts worker processes, which re-import your script: put the "
                         "call under `if __name__ == \"__main__\":` (or use backend='serial')")


def _ping() -> int:
    return os.getpid()


def _start_failure_message(detail: str) -> str:
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    script = f" ({main})" if main else ""
    return (f"the local worker processes die as they start ({detail}); nothing was stored for their "
            f"candidates. If zcfast.scan is called from a script{script}, the call must be under "
            "`if __name__ == \"__main__\":` (spawned workers re-import the main module); otherwise check "
            "that `python -c 'import zcfast'` works, or use backend='serial'")


# ------------------------------------------------------------------ backends
class Backend:
    """Scores chunks; :meth:`imap_unordered` pulls chunks lazily, at most ``max_in_flight``
    outstanding, and yields each chunk's rows when it finishes."""

    workers: int = 1

    def imap_unordered(self, chunks: Iterable[list[Task]]) -> Iterator[list[ScoreRow]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialBackend(Backend):
    """Scores in the calling process, in order."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.workers = 1

    def imap_unordered(self, chunks: Iterable[list[Task]]) -> Iterator[list[ScoreRow]]:
        for chunk in chunks:
            yield score_chunk(self.spec, chunk)


_WORKER_SPEC: WorkerSpec | None = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True
    return True


def _parent_gone(parent: int, server: int | None) -> bool:
    """The pool owner ``parent`` is gone: for a direct child, ``getppid`` changed; for a
    forkserver worker (``server``: its parent, the server), the server exited (it does when
    the owner dies) or the owner's pid no longer exists."""
    if server is None:
        return os.getppid() != parent
    return os.getppid() != server or not _pid_alive(parent)


def _exit_with_parent(parent: int, server: int | None = None, interval: float = 0.5) -> None:
    """Daemon thread body: end this worker as soon as its parent is gone.

    A pool worker blocks reading its task queue, whose write end every worker also holds,
    so a SIGKILLed parent would leave it waiting forever; polling ends it.
    """
    while True:
        time.sleep(interval)
        if _parent_gone(parent, server):
            os._exit(1)


def _init_worker(spec: WorkerSpec, parent: int | None = None,
                 environ: dict[str, str] | None = None) -> None:
    """Pool-worker initialiser; ``parent`` (the pool owner's pid, taken in the parent so a
    parent that died while this worker was still starting is noticed too) starts the watchdog.
    ``environ`` (forkserver workers, whose server was started earlier): the owner's
    environment variables now, replacing those inherited from the server."""
    global _WORKER_SPEC
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    if parent is not None:
        server = None if os.getppid() == parent or environ is None else os.getppid()
        if _parent_gone(parent, server):
            os._exit(1)
        import threading
        threading.Thread(target=_exit_with_parent, args=(parent, server), daemon=True,
                         name="zcfast-parent-watch").start()
    torch.set_num_threads(spec.threads)
    _WORKER_SPEC = spec


def _worker_score(chunk: list[Task]) -> list[ScoreRow]:
    assert _WORKER_SPEC is not None, "worker not initialised"
    return score_chunk(_WORKER_SPEC, chunk)


def _died_row(task: Task, detail: str) -> ScoreRow:
    return ScoreRow(task[0], task[1], {}, f"worker process died while scoring this candidate "
                    f"(killed, or out of memory?): {detail}", 0.0)


def _preload_modules(spec: WorkerSpec) -> list[str]:
    """:data:`FORKSERVER_PRELOAD` plus zcfast's modules holding the spec's space and scorers
    (a user's module is imported by each worker as it unpickles the spec, as with spawn)."""
    mods = list(FORKSERVER_PRELOAD)
    for obj in (spec.space, spec.scorer, spec.batch_scorer):
        if obj is None:
            continue
        mod = getattr(obj, "__module__", None) if callable(obj) else type(obj).__module__
        if isinstance(mod, str) and mod.startswith("zcfast.") and mod not in mods:
            mods.append(mod)
    return mods


class LocalPoolBackend(Backend):
    """A pool of worker processes on this machine (default: one per available core)."""

    def __init__(self, spec: WorkerSpec, workers: int | None = None,
                 start_method: str | None = None, max_in_flight: int | None = None) -> None:
        self.spec = spec
        self.workers = int(workers) if workers else available_cpus()
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.start_method = resolve_start_method(start_method)
        self.max_in_flight = max_in_flight or 2 * self.workers
        self._pool: ProcessPoolExecutor | None = None
        self._completed = 0     # chunks finished by some worker (0: none has ever worked)
        self._probed = False

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context(self.start_method)
        environ = None
        if self.start_method == "forkserver":  # takes effect when the server (once per process) starts
            ctx.set_forkserver_preload(_preload_modules(self.spec))
            environ = dict(os.environ)
        return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(self.spec, os.getpid(), environ))

    def imap_unordered(self, chunks: Iterable[list[Task]]) -> Iterator[list[ScoreRow]]:
        it = iter(chunks)
        exhausted = False
        retry: list[list[Task]] = []  # singletons to rerun after a crash, one at a time
        pending: dict[Future, tuple[list[Task], bool]] = {}
        self._pool = self._new_pool()
        while True:
            if retry:
                if not pending:
                    chunk = retry.pop(0)
                    pending[self._pool.submit(_worker_score, chunk)] = (chunk, True)
            else:
                while not exhausted and len(pending) < self.max_in_flight:
                    try:
                        chunk = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    if chunk:
                        pending[self._pool.submit(_worker_score, chunk)] = (chunk, False)
            if not pending:
                if exhausted and not retry:
                    return
                continue
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            broken: list[tuple[list[Task], bool, str]] = []
            for fut in done:
                chunk, suspect = pending.pop(fut)
                try:
                    rows = fut.result()
                except BrokenProcessPool as exc:
                    broken.append((chunk, suspect, str(exc) or "BrokenProcessPool"))
                    continue
                self._completed += 1
                yield rows
            if broken:
                # every other pending future fails too: collect them, restart the pool
                for fut, (chunk, suspect) in list(pending.items()):
                    try:
                        rows = fut.result()
                    except BrokenProcessPool as exc:
                        broken.append((chunk, suspect, str(exc) or "BrokenProcessPool"))
                    else:
                        yield rows
                pending.clear()
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = self._new_pool()
                if not self._completed and not self._probed:
                    self._probe(broken[0][2])
                for chunk, suspect, detail in broken:
                    if suspect:  # it ran alone and the worker died: blame it
                        yield [_died_row(chunk[0], detail)]
                    else:
                        retry.extend([t] for t in chunk)

    def _probe(self, detail: str) -> None:
        """No worker has ever finished a chunk and the pool broke: can a worker start at all?
        A trivial task on the fresh pool tells a candidate that kills its worker (the task
        runs: go on, blaming candidates one at a time) from workers that die at start-up."""
        self._probed = True
        assert self._pool is not None
        try:
            self._pool.submit(_ping).result()
        except BrokenProcessPool:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            raise WorkerStartError(_start_failure_message(detail)) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayBackend(Backend):
    """One Ray actor per CPU (or GPU, or ``workers``), each holding the WorkerSpec.

    Args:
        address: ``ray.init(address=...)``; None: use the running instance, or start a local
            one (``include_dashboard=False``; workers get this checkout on PYTHONPATH).
        workers: number of actors; default the cluster's CPU count, or its GPU count when
            ``spec.device`` is a CUDA device.
        actor_options: ``ray.remote`` options of each actor; default ``{"num_cpus": 1}``,
            plus ``"num_gpus": 1`` for a CUDA device.
        init_kwargs: extra ``ray.init`` arguments when this backend starts Ray.
    """

    def __init__(self, spec: WorkerSpec, address: str | None = None, workers: int | None = None,
                 max_in_flight: int | None = None, init_kwargs: dict[str, Any] | None = None,
                 actor_options: dict[str, Any] | None = None) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is an optional dependency
            raise ValueError("the ray backend needs ray: pip install 'ray[default]'") from None
        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                root = str(Path(__file__).resolve().parents[1])
                path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
                kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
                # A local instance we start ourselves listens on loopback only. Ray 2.x replaces
                # 127.0.0.1 by the machine's address unless its cluster mode is off.
                kwargs["_node_ip_address"] = "127.0.0.1"
                try:
                    from ray._private import ray_constants
                    ray_constants.ENABLE_RAY_CLUSTER = False
                except (ImportError, AttributeError):  # pragma: no cover - other Ray versions
                    pass
            kwargs.update(init_kwargs or {})
            ray.init(address=address, **kwargs)
            self._started = True
        gpu = torch.device(spec.device).type == "cuda"
        resources = ray.cluster_resources()
        if gpu and not resources.get("GPU"):
            raise ValueError(f"device {spec.device!r} asked for, but the Ray cluster has no GPU")
        count = int(resources.get("GPU" if gpu else "CPU", 1))
        self.workers = int(workers) if workers else max(1, count)
        self.max_in_flight = max_in_flight or 2 * self.workers
        options = {"num_cpus": 1, **({"num_gpus": 1} if gpu else {}), **(actor_options or {})}
        actor_cls = ray.remote(**options)(_RayWorker)
        spec_ref = ray.put(spec)
        self._actors = [actor_cls.remote(spec_ref) for _ in range(self.workers)]
        self._actor_cls = actor_cls
        self._spec_ref = spec_ref

    def imap_unordered(self, chunks: Iterable[list[Task]]) -> Iterator[list[ScoreRow]]:
        ray = self.ray
        it = iter(chunks)
        exhausted = False
        pending: dict[Any, tuple[list[Task], int, int, Any]] = {}  # ref -> (chunk, actor idx, tries, actor)
        load = [0] * len(self._actors)
        retry: list[tuple[list[Task], int]] = []

        def submit(chunk: list[Task], tries: int, i: int | None = None) -> None:
            if i is None:
                i = min(range(len(load)), key=load.__getitem__)
            load[i] += 1
            actor = self._actors[i]
            pending[actor.score.remote(chunk)] = (chunk, i, tries, actor)

        while True:
            # A retried candidate runs alone on an idle actor: if that actor dies, the death is
            # its own, never a queued neighbour's. New chunks wait until the retries are placed.
            while retry:
                idle = [i for i, n in enumerate(load) if n == 0]
                if not idle:
                    break
                submit(*retry.pop(), i=idle[0])
            while not retry and not exhausted and len(pending) < self.max_in_flight:
                try:
                    chunk = next(it)
                except StopIteration:
                    exhausted = True
                    break
                if chunk:
                    submit(chunk, 0)
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                chunk, i, tries, actor = pending.pop(ref)
                load[i] -= 1
                try:
                    rows = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                    if self._actors[i] is actor:  # replace the dead actor (once per death)
                        self._actors[i] = self._actor_cls.remote(self._spec_ref)
                    if tries >= 1:  # already retried alone: blame it
                        yield [_died_row(t, _describe(exc)) for t in chunk]
                    else:  # the actor may have died for a queued neighbour: retry singly
                        retry.extend(([t], tries + 1) for t in chunk)
                    continue
                yield rows

    def close(self) -> None:
        for actor in getattr(self, "_actors", []):
            try:
                self.ray.kill(actor)
            except Exception:
                pass
        self._actors = []
        if self._started:
            self.ray.shutdown()
            self._started = False


class _RayWorker:
    """Ray actor body (wrapped with ``ray.remote`` at run time so ray stays optional)."""

    def __init__(self, spec: WorkerSpec) -> None:
        _init_worker(spec)
        self.spec = spec

    def score(self, chunk: list[Task]) -> list[ScoreRow]:
        return score_chunk(self.spec, chunk)


def make_backend(name: str, spec: WorkerSpec, workers: int | None = None,
                 address: str | None = None, start_method: str | None = None) -> Backend:
    """Backend by name: ``serial``, ``local`` (default for scans) or ``ray``."""
    if name == "serial":
        return SerialBackend(spec)
    if name == "local":
        return LocalPoolBackend(spec, workers=workers, start_method=start_method)
    if name == "ray":
        return RayBackend(spec, address=address, workers=workers)
    raise ValueError(f"unknown backend {name!r}; choose serial, local or ray")
