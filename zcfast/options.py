"""The one front door: every name a user gives zcfast is resolved and validated here.

Every command (``zcfast score|correlate|search|scan``) and the Python entry points
(``zcfast.scan``, ``zcfast.correlate.correlate``, ``zcfast.search.search``) resolve proxies,
spaces, datasets, devices and counts through these functions, so a bad argument gets the same
one-line ``ValueError`` everywhere, naming the argument and the valid choices, *before* any work
starts (no store opened, no network built).

- :func:`resolve_proxies` -- a proxy-set keyword (:data:`PROXY_SETS`: ``"paper"``, ``"all"``,
  ``"suite-zero"``, ``"every"``), ``"a,b"`` or a list; :func:`proxy_set` expands one keyword.
- :func:`resolve_space` -- a space name or object; optionally refuses a space without ground truth.
- :func:`resolve_dataset` / :func:`num_classes` -- the benchmark datasets (one table:
  :data:`zcfast.data.NUM_CLASSES`).
- :func:`resolve_device` -- ``cpu`` / ``cuda[:N]``, refused when CUDA is not there.
- :func:`check_count` -- positive (or non-negative) integer options (threads, workers, sizes).
- :func:`proxy_outcome` -- a proxy result as ``(value, reason)``: no NaN without its reason.
- :func:`scoring_threads` -- the execution setting that changes values: stored scores are
  always computed with one torch thread (see docs/design.md, "Reliability").
"""
from __future__ import annotations

import contextlib
import difflib
import math
import os
from typing import Any, Iterator, Sequence

import torch

from zcfast.proxies.registry import PAPER_PROXIES, available_proxies, resolve

__all__ = [
    "PAPER_PROXIES",
    "PROXY_SETS",
    "SCORING_THREADS",
    "check_count",
    "num_classes",
    "proxy_outcome",
    "proxy_set",
    "resolve_dataset",
    "resolve_device",
    "resolve_proxies",
    "resolve_scoring",
    "resolve_space",
    "scoring_threads",
    "suggest",
]

#: torch CPU threads every stored score is computed with, whichever way the work is executed
#: (inline, worker processes, Ray): convolution reductions run in a thread-count dependent order,
#: so values under one run id would otherwise depend on the machine and the ``--workers`` choice.
SCORING_THREADS: int = 1


def suggest(name: str, choices: Sequence[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


#: The proxy-set keywords every ``--proxies`` / ``proxies=`` accepts (case-insensitive), with what
#: each selects; :func:`proxy_set` expands them. The default of every command and entry point is
#: ``"paper"`` (``PAPER_PROXIES``), so the run ids of default runs do not depend on what else is
#: registered.
PROXY_SETS: dict[str, str] = {
    "paper": "the paper's six: " + ",".join(PAPER_PROXIES),
    "all": "every built-in proxy: the paper's six, then the other built-ins in registry order",
    "suite-zero": "NAS-Bench-Suite-Zero's 13 (zcfast.proxies.suite_zero.SUITE_ZERO)",
    "every": "every registered proxy: 'all', then user-registered ones in registration order",
}


def proxy_set(keyword: str) -> tuple[str, ...]:
    """The proxy names one keyword of :data:`PROXY_SETS` selects, in a fixed order.

    ``"paper"``: :data:`PAPER_PROXIES`. ``"all"``: the paper's six, then every other built-in
    proxy in registry order (``plain``, ``nwot``, ``epe_nas``, ...). ``"suite-zero"``:
    ``zcfast.proxies.suite_zero.SUITE_ZERO`` (NAS-Bench-Suite-Zero's 13, NASLib's order).
    ``"every"``: ``"all"`` followed by the user-registered proxies in registration order.

    Raises:
        ValueError: an unknown keyword (naming the keywords).
    """
    key = keyword.strip().lower() if isinstance(keyword, str) else keyword
    if key not in PROXY_SETS:
        raise ValueError(f"unknown proxy set {keyword!r}; choose from {', '.join(PROXY_SETS)}")
    if key == "paper":
        return PAPER_PROXIES
    if key == "suite-zero":
        from zcfast.proxies.suite_zero import SUITE_ZERO

        return tuple(SUITE_ZERO)
    specs = resolve(available_proxies())
    builtin = PAPER_PROXIES + tuple(s.name for s in specs if s.builtin and s.name not in PAPER_PROXIES)
    if key == "all":
        return builtin
    return builtin + tuple(s.name for s in specs if not s.builtin)


def resolve_proxies(spec: str | Sequence[str], *, option: str = "proxies") -> tuple[str, ...]:
    """Proxy names from a user spec; duplicates are dropped, order kept.

    Args:
        spec: a keyword of :data:`PROXY_SETS` (``"paper"``: the paper's six; ``"all"``: every
            built-in proxy; ``"suite-zero"``: NAS-Bench-Suite-Zero's 13; ``"every"``: every
            registered proxy, user ones too; see :func:`proxy_set`), a comma-separated string
            of names, or a sequence of names. A keyword stands alone (not inside a list).
        option: how the caller calls this argument in messages (``--proxies``, ``warmup``).

    Raises:
        ValueError: empty spec, a non-string name, ``vote`` (not a per-network proxy) or an
            unknown name (with the closest registered name and the valid choices).
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() in PROXY_SETS:
            return proxy_set(text)
        names = [s.strip() for s in text.split(",") if s.strip()]
    elif isinstance(spec, Sequence):
        names = list(spec)
        bad = [n for n in names if not isinstance(n, str)]
        if bad:
            raise ValueError(f"{option}: proxy names must be strings, got {bad[0]!r}")
        names = [n.strip() for n in names]
    else:
        raise ValueError(f"{option} must be one of {', '.join(map(repr, PROXY_SETS))}, a comma-separated "
                         f"string or a list of names, got {spec!r}")
    if not names or not all(names):
        raise ValueError(f"{option} is empty: give a proxy set ({', '.join(PROXY_SETS)}; 'paper' = "
                         f"{', '.join(PAPER_PROXIES)}) or a comma-separated list of proxy names")
    unique = tuple(dict.fromkeys(names))
    _refuse_ensembles(unique, option)
    try:
        resolve(unique)  # the registry's single name check (unknown names, 'vote')
    except ValueError as exc:
        keywords = [n for n in unique if n.lower() in PROXY_SETS]
        hint = ""
        if keywords:
            hint = f" ({keywords[0]!r} is a proxy-set keyword: give it alone, not in a list)"
        elif str(exc).startswith("unknown proxy"):
            hint = f"; or a proxy set: {', '.join(PROXY_SETS)}"
        raise ValueError(f"{option}: {exc}{hint}") from None
    return unique


def _refuse_ensembles(names: Sequence[str], option: str) -> None:
    """A per-network scorer got an ensemble name (zcfast.ensemble): say what it is and where it works."""
    from zcfast import ensemble

    for n in names:
        if ensemble.is_ensemble(n):
            ens = ensemble.get_ensemble(n)
            raise ValueError(f"{option}: {n!r} is an ensemble ({ens.method} of {', '.join(ens.members)}), not a "
                             "per-network proxy: it ranks a population. Use it in zcfast scan --proxies or as a search "
                             f"--warmup/--move, or score its members and call zcfast.ensemble.aggregate({n!r}, scores)")


def resolve_scoring(spec: str | Sequence[str], *,
                    option: str = "proxies") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Like :func:`resolve_proxies`, but ensemble names (:mod:`zcfast.ensemble`) are allowed.

    Returns:
        ``(proxies, ensembles)``: the proxies to score per network (the names given and every
        ensemble's members, deduplicated in order, each checked by :func:`resolve_proxies`) and
        the ensemble names given, to aggregate over the population scored.
    Raises:
        ValueError: as :func:`resolve_proxies`; an ensemble whose member is not a registered
            proxy, or a recursive one (naming the ensemble).
    """
    from zcfast import ensemble

    if isinstance(spec, str) and spec.strip().lower() not in PROXY_SETS:
        spec = [s.strip() for s in spec.split(",") if s.strip()] or spec
    if isinstance(spec, str) or not isinstance(spec, Sequence) or not any(ensemble.is_ensemble(n) for n in spec):
        return resolve_proxies(spec, option=option), ()
    registered = set(available_proxies())
    try:
        proxies, ensembles = ensemble.expand([n.strip() if isinstance(n, str) else n for n in spec],
                                             is_proxy=registered.__contains__)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None
    return resolve_proxies(list(proxies), option=option), ensembles


def resolve_space(space: Any, *, ground_truth_for: str | None = None,
                  dataset: str | None = None, benchmark: str | os.PathLike[str] | None = None,
                  option: str = "--benchmark") -> Any:
    """A search space from its name (``zcfast.spaces.get``) or a space object.

    Args:
        space: ``"nb201"``, ``"nb101"``, ``"darts"`` (or an alias), or an object with the
            :class:`zcfast.spaces.SearchSpace` methods.
        ground_truth_for: the command that needs ground truth (``"correlate"``, ``"search"``):
            a space without it is refused, with the reason the space gives
            (``space.ground_truth_problem(dataset)``).
        dataset: the dataset whose ground truth is needed.
        benchmark: a benchmark file or folder the user has (``--benchmark PATH``: NB101's
            tfrecord / converted table / records, an NB201 ``.pth`` or NATS-Bench folder, NB301's
            surrogate models folder). It must exist; it is handed to the space's
            ``set_data_path`` (a space object given here is not modified: a copy is configured),
            which keeps it when the space is pickled to worker processes. Checked before the
            ground-truth check, so the space answers for this file.
        option: how the caller calls ``benchmark`` in messages.

    Raises:
        ValueError naming the space and, for ground truth, why it has none; a space that takes
        no benchmark file; FileNotFoundError naming a ``benchmark`` path that does not exist.
    """
    if isinstance(space, str):
        import zcfast.spaces

        try:
            sp = zcfast.spaces.get(space)
        except ValueError:
            choices = zcfast.spaces.available()
            raise ValueError(f"unknown search space {space!r}{suggest(space, choices)}; "
                             f"choose from {', '.join(choices)}") from None
    else:
        for attr in ("sample", "key", "encode", "decode", "build", "name"):
            if not hasattr(space, attr):
                raise ValueError(f"space must be a search-space name or a SearchSpace, got {space!r} "
                                 f"(no {attr!r})")
        sp = space
    if benchmark is not None:
        sp = _with_benchmark(sp, benchmark, option)
    if ground_truth_for is not None:
        probe = getattr(sp, "ground_truth_problem", None)
        problem = probe(dataset) if callable(probe) else None
        if problem:
            raise ValueError(f"{ground_truth_for} needs benchmark ground truth, but the {sp.name} space "
                             f"has none: {problem}")
    return sp


def _with_benchmark(sp: Any, benchmark: str | os.PathLike[str], option: str) -> Any:
    """``sp`` (a copy when it was the caller's object) with ``set_data_path(benchmark)`` applied and
    the file read (``benchmark_table()`` / ``records()``, where the space has one)."""
    import copy

    setter = getattr(sp, "set_data_path", None)
    if not callable(setter):
        raise ValueError(f"the {getattr(sp, 'name', sp)} space takes no {option} (it has no benchmark file to "
                         "read); leave it out")
    if not isinstance(benchmark, (str, os.PathLike)) or not str(benchmark).strip():
        raise ValueError(f"{option} must be a path, got {benchmark!r}")
    path = os.path.expanduser(os.fspath(benchmark))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{option} {path!r} does not exist (give the benchmark file or folder "
                                f"of the {getattr(sp, 'name', 'space')} space)")
    sp = copy.deepcopy(sp)   # spaces from zcfast.spaces.get are fresh; a user's object stays as it was
    sp.set_data_path(path)
    # read (convert once, cached) now: a file of the wrong kind or a damaged one is refused here,
    # naming it, whichever metric is asked for later (never a silent fall-back to shipped data)
    for reader in ("benchmark_table", "records"):
        fn = getattr(sp, reader, None)
        if callable(fn):
            fn()
            break
    return sp


def resolve_dataset(name: str) -> str:
    """Canonical benchmark dataset name (``cifar10``, ``cifar100``, ``ImageNet16-120``)."""
    from zcfast.data import DATASETS, canonical_dataset

    try:
        return canonical_dataset(name)
    except ValueError:
        raise ValueError(f"unknown dataset {name!r}{suggest(str(name).lower(), [d.lower() for d in DATASETS])}; "
                         f"choose from {', '.join(DATASETS)}") from None


def num_classes(dataset: str) -> int:
    """Classifier width of a benchmark dataset (10 / 100 / 120): the one table, ``zcfast.data.NUM_CLASSES``."""
    from zcfast.data import NUM_CLASSES

    return NUM_CLASSES[resolve_dataset(dataset)]


def resolve_device(device: Any, *, option: str = "device") -> torch.device:
    """A torch device zcfast can score on: ``cpu`` or an available ``cuda[:N]``.

    Raises:
        ValueError: not a device string, a device type zcfast does not run on (``meta``,
            ``mps``, ...), or CUDA asked for where it is not available.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{option}: {device!r} is not a device; use cpu or cuda[:N]") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{option}: device type {dev.type!r} is not supported; use cpu or cuda[:N]")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "no GPU is visible")
            raise ValueError(f"{option}: {device!r} asked for, but CUDA is not available here ({why}); "
                             "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{option}: {device!r} asked for, but only {torch.cuda.device_count()} "
                             "GPU(s) are visible")
    return dev


def check_count(value: Any, option: str, *, minimum: int = 1, allow_none: bool = False) -> int | None:
    """An integer option ``>= minimum`` (``None`` passes when ``allow_none``).

    Raises:
        ValueError naming the option, e.g. ``--threads must be an integer >= 1, got -3``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@contextlib.contextmanager
def scoring_threads(threads: int = SCORING_THREADS) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)``, restoring the caller's setting."""
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def proxy_outcome(name: str, result: Any) -> tuple[float, str | None]:
    """(value, reason) of one proxy's result: a float or a ``ProxyResult``-like object.

    A finite value has no reason (``None``). A non-finite value always gets one: the result's
    own ``error`` when it has one, else ``"<name> is nan (no reason given by the scorer)"``.
    A value that is not a number is NaN with a reason. Used by score, correlate and search, so
    no NaN reaches an output (store row, scores.csv, search log) without its cause.
    """
    reason = getattr(result, "error", None) or None
    raw = getattr(result, "value", result)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return math.nan, reason or f"{name} returned {type(raw).__name__}, not a number"
    if math.isfinite(value):
        return value, None
    return value, reason or f"{name} is {value!r} (no reason given by the scorer)"
