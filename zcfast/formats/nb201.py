"""NAS-Bench-201 ``.pth`` files and NATS-Bench topology folders, read without their packages.

Inputs (what the benchmarks' users have on disk):

- ``NAS-Bench-201-v1_0-e61699.pth`` / ``NAS-Bench-201-v1_1-096897.pth``: a ``torch.save`` of one
  plain dict ``{"meta_archs": [15,625 arch strings], "arch2infos": {index: {"less": ArchResults
  state dict (hp 12), "full": ArchResults state dict (hp 200)}}, "evaluated_indexes": ...}``.
  Both of torch's containers are parsed here (the zip archive's ``*/data.pkl`` and the legacy
  sequence of pickles: magic number, protocol 1001, system info, the object), and the object is
  unpickled by :mod:`zcfast.safe_pickle`'s restricted unpickler (``torch.load`` is never called,
  so nothing in the file can run). A pickle holding tensors (persistent ids) is refused. The
  whole dict is held in memory while it is converted, as the official API holds it (for v1_1 that
  is tens of GB); the NATS-Bench folder below is the bounded-memory route to the same numbers.
- ``NATS-tss-v1_0-3ffb9-simple/``: ``meta.pickle.pbz2`` (``meta_archs``, ``evaluated_indexes``)
  and one bz2-compressed pickle per architecture, ``{index:06d}.pickle.pbz2`` (or ``{index}``),
  holding ``{hp: ArchResults state dict}`` with hp ``"12"`` / ``"200"``. Read one architecture
  file at a time through the restricted unpickler (memory bounded by the output table). An
  architecture without a file gets NaN everywhere. ``NATS-tss-v1_0-3ffb9.pickle.pbz2`` (the
  single-file form, the dict of the ``.pth`` with hp keys) is read too. The ``-full`` folders hold
  the trained weights as pickled tensors and are refused with a message naming the ``-simple``
  folder (same metrics, no weights). The size search space (``NATS-sss-*``) is refused.

An ArchResults state dict is ``{"arch_index", "arch_str", "dataset_seed": {dataset: [seeds]},
"all_results": {(dataset, seed): ResultsCount state dict}, ...}``; a ResultsCount holds
``epochs``, ``train_acc1es`` / ``train_losses`` / ``train_times`` (epoch → value),
``eval_names`` and ``eval_acc1es`` / ``eval_losses`` (``"{split}@{epoch}"`` → value), ``params``,
``flop``, ``latency`` (list of seconds).

Output: the table format zcfast ships for NB201 (:func:`zcfast.spaces.nb201.table`): ``index``
0..15624 in benchmark order, ``arch_str``, then float64 columns (NaN where absent), written once
as gzip CSV to ``cached_path("nb201", source, ".csv.gz")`` and returned by :func:`load_table`.

Column rule (``{d}`` dataset, ``{s}`` split, ``{H}`` hp = training epochs, ``{S}`` seed)::

    {d}_{s}_acc_hp{H}            accuracy (%) at the final epoch (H-1), mean over the run's seeds
    {d}_{s}_acc_hp{H}_seed{S}    the same for one seed
    {d}_{s}_loss_hp{H}           loss at the final epoch, mean over seeds
    {d}_params_hp{H}, {d}_flops_hp{H}   MB / MFLOPs (mean over seeds; where seeds disagree,
                                 seed 888's value, as the API's legacy fix)
    {d}_latency_hp{H}            seconds per batch, mean over seeds of the positive values
    {d}_train_time_hp{H}         training time of all H epochs (s), mean over seeds
    {d}_epoch_time_hp{H}         the same per epoch (the API's ``train-per-time``)

``{d}``: ``cifar10valid`` (``cifar10-valid``: trained on the train half), ``cifar10`` (train +
valid), ``cifar100``, ``imagenet16_120`` (``ImageNet16-120``). ``{s}``: ``train``, ``valid``
(``x-valid``), ``test`` (``x-test``), ``oritest`` (``ori-test``); which splits a run has is the
benchmark's (cifar10-valid: train, valid, oritest; cifar10: train, oritest; the others all four).
"Final epoch" and "mean over seeds" are ``get_metrics(dataset, split, iepoch=None,
is_random=False)`` of the official APIs, the numbers ``get_more_info(..., is_random=False)``
reports; a seed missing a value is left out of the mean (NaN if no seed has it). The paper's
CIFAR-10 column (``get_more_info(i, "cifar10-valid", hp="200")["test-accuracy"]``) is
``cifar10valid_oritest_acc_hp200``.

Writers for tests and fixtures: :func:`write_pth` and :func:`write_nats_simple` produce the
official layouts from a few entries (:data:`Entry`).
"""
from __future__ import annotations

import bz2
import collections
import csv
import gzip
import io
import math
import os
import pickle
import re
import tempfile
import time
import zipfile
from importlib import resources
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .. import safe_pickle
from .cache import ImportResult, cached_path

__all__ = ["NUM_ARCHS", "DATASETS", "SPLITS", "SUPPORTED", "Entry", "load_table", "import_file",
           "read_benchmark", "write_pth", "write_nats_simple", "column_name"]

NUM_ARCHS = 15625
#: official dataset name → column prefix
DATASETS: dict[str, str] = {"cifar10-valid": "cifar10valid", "cifar10": "cifar10", "cifar100": "cifar100",
                            "ImageNet16-120": "imagenet16_120"}
#: official split name → column part
SPLITS: dict[str, str] = {"train": "train", "x-valid": "valid", "x-test": "test", "ori-test": "oritest"}
#: ``.pth`` hp keys → training epochs
_PTH_HPS = {"less": "12", "full": "200"}
#: what this module reads, for messages
SUPPORTED = ("NAS-Bench-201-v1_0-e61699.pth, NAS-Bench-201-v1_1-096897.pth or the NATS-Bench "
             "topology folder NATS-tss-v1_0-3ffb9-simple/ (or NATS-tss-v1_0-3ffb9.pickle.pbz2)")
PICKLE_EXT = ".pickle.pbz2"
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001
_ARCH_RE = re.compile(r"^\|[a-z_0-9]+~0\|\+\|[a-z_0-9]+~0\|[a-z_0-9]+~1\|\+\|[a-z_0-9]+~0\|[a-z_0-9]+~1\|[a-z_0-9]+~2\|$")

#: One architecture for the writers::
#:
#:     {"index": 11, "arch_str": "|nor_conv_3x3~0|+...|",
#:      "runs": [{"dataset": "cifar10-valid", "hp": 200, "seed": 777,
#:                "acc": {"train": 99.1, "x-valid": 89.5, "ori-test": 89.7},  # final-epoch values
#:                "loss": {"train": 0.03, ...},            # optional (NaN where absent)
#:                "params": 0.8, "flops": 113.9,           # optional (NaN)
#:                "latency": 0.016, "epoch_time": 12.4}]}  # optional (no latency / no times)
#:
#: Earlier epochs get other (decreasing) values, so a reader of the wrong epoch is caught.
Entry = Mapping[str, Any]


class _Unpickler(safe_pickle.RestrictedUnpickler):
    """zcfast's restricted unpickler with messages for these benchmark files: a persistent id
    (torch's tensor storages) and torch globals mean trained weights, not metrics."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "torch":
            raise safe_pickle.UnsafePickleError(
                f"refusing to unpickle {module}.{name} from {self._source!r}: it holds tensors (trained "
                "weights, e.g. a NATS-Bench '-full' archive); zcfast reads the metrics-only files: "
                + SUPPORTED)
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise safe_pickle.UnsafePickleError(
            f"refusing to unpickle a persistent id (a tensor storage) from {self._source!r}: zcfast reads "
            "benchmark files of plain data only (" + SUPPORTED + ")")


def _unpickle(fh: IO[bytes], source: str) -> Any:
    try:
        return _Unpickler(fh, source).load()
    except safe_pickle.UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError, OverflowError, UnicodeDecodeError, OSError) as exc:
        # OSError: bz2's "Invalid data stream"; EOFError: truncated stream
        raise ValueError(f"{source!r} is not a readable pickle of plain data (truncated or corrupt?): "
                         f"{type(exc).__name__}: {exc}".splitlines()[0]) from None


def _load_bz2_pickle(path: Path) -> Any:
    with bz2.open(path, "rb") as fh:
        return _unpickle(fh, str(path))  # type: ignore[arg-type]


def _load_torch_file(path: Path) -> Any:
    """The object of a ``torch.save`` file (zip or legacy container), restricted unpickling."""
    src = str(path)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
                if len(names) != 1:
                    raise ValueError(f"{src!r} is a zip file but not a torch.save archive (no single */data.pkl)")
                with zf.open(names[0]) as fh:
                    return _unpickle(fh, src)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ValueError(f"{src!r} is a damaged torch.save zip archive: {exc}".splitlines()[0]) from None
    with open(path, "rb") as raw:
        fh = io.BufferedReader(raw, buffer_size=1 << 20)  # type: ignore[arg-type]
        try:
            magic = _Unpickler(fh, src).load()
        except Exception:  # noqa: BLE001 - any failure here means: not this format
            magic = None
        if magic != _TORCH_MAGIC:
            raise ValueError(f"{src!r} is not a torch.save file (neither a zip archive nor the legacy "
                             f"format; truncated?); expected {SUPPORTED}")
        protocol = _unpickle(fh, src)
        if protocol != _TORCH_PROTOCOL:
            raise ValueError(f"{src!r}: unsupported torch.save legacy protocol {protocol!r}")
        _unpickle(fh, src)  # system info
        return _unpickle(fh, src)


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------
def column_name(dataset: str, split: str, hp: int | str, kind: str = "acc", seed: int | None = None) -> str:
    """The column of an official (dataset, split, hp[, seed]): ``column_name("cifar10-valid",
    "ori-test", 200)`` → ``cifar10valid_oritest_acc_hp200``. ``kind``: ``acc`` or ``loss``."""
    d = DATASETS[dataset]
    s = SPLITS[split]
    name = f"{d}_{s}_{kind}_hp{int(hp)}"
    return name if seed is None else f"{name}_seed{int(seed)}"


def _num(v: Any) -> float:
    if v is None:
        return math.nan
    return float(v)


def _mean(vals: Sequence[float]) -> float:
    vals = [v for v in vals if not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else math.nan


class _Layout(ValueError):
    pass


def _convert_arch(state: Mapping[str, Any], hp: str, where: str) -> Iterator[tuple[str, float]]:
    """(column, value) pairs of one ArchResults state dict at ``hp``."""
    try:
        ds_seeds = state["dataset_seed"]
        all_results = state["all_results"]
        items = list(ds_seeds.items())
    except (KeyError, TypeError, AttributeError) as exc:
        raise _Layout(f"{where}: hp {hp!r} is not an ArchResults state dict (missing {exc})") from None
    for ds, seeds in items:
        if ds not in DATASETS:
            raise _Layout(f"{where}: unknown dataset {ds!r} (expected {sorted(DATASETS)})")
        d = DATASETS[ds]
        per: dict[str, list[float]] = collections.defaultdict(list)
        costs: dict[str, list[float]] = collections.defaultdict(list)
        seeds = list(seeds)
        for seed in seeds:
            try:
                r = all_results[(ds, seed)]
                last = int(r["epochs"]) - 1
                if last < 0:
                    raise _Layout(f"{where}: {ds} seed {seed} hp {hp} has {last + 1} epochs")
                vals = {"train": (r["train_acc1es"][last], r["train_losses"][last])}
                for name in r["eval_names"]:
                    if name not in SPLITS:
                        continue
                    key = f"{name}@{last}"
                    vals[name] = (r["eval_acc1es"][key], r["eval_losses"][key])
                times = r.get("train_times")
                lat = r.get("latency")
                params, flop = _num(r.get("params")), _num(r.get("flop"))
            except _Layout:
                raise
            except (KeyError, TypeError, AttributeError, IndexError) as exc:
                raise _Layout(f"{where}: {ds} seed {seed} hp {hp} has not the ResultsCount layout "
                              f"(missing {exc})") from None
            for split, (acc, loss) in vals.items():
                acc, loss = _num(acc), _num(loss)
                yield column_name(ds, split, hp, "acc", seed), acc
                per[f"{d}_{SPLITS[split]}_acc_hp{int(hp)}"].append(acc)
                per[f"{d}_{SPLITS[split]}_loss_hp{int(hp)}"].append(loss)
            costs["params"].append(params)
            costs["flops"].append(flop)
            if lat:
                lv = sum(float(x) for x in lat) / len(lat)
                if lv > 0:
                    costs["latency"].append(lv)
            if isinstance(times, dict) and times:
                total = float(sum(float(times[i]) for i in range(last + 1)))
                costs["train_time"].append(total)
                costs["epoch_time"].append(total / (last + 1))
        for name, v in per.items():
            yield name, _mean(v)
        for q in ("params", "flops"):
            v = costs[q]
            if len(v) > 1 and len({f"{x:.5f}" for x in v}) > 1 and 888 in seeds:
                v = [v[seeds.index(888)]]  # the API's legacy fix: inconsistent seeds → seed 888
            yield f"{d}_{q}_hp{int(hp)}", _mean(v)
        for q in ("latency", "train_time", "epoch_time"):
            if costs[q]:
                yield f"{d}_{q}_hp{int(hp)}", _mean(costs[q])


class _Collector:
    """Columns of the output table, created on first sight (memory: the table only)."""

    def __init__(self) -> None:
        self.cols: dict[str, np.ndarray] = {}
        self.datasets: set[str] = set()
        self.hps: set[int] = set()
        self.seeds: dict[str, set[int]] = collections.defaultdict(set)
        self.evaluated = 0

    def add(self, index: int, hps: Mapping[str, Any], meta_arch: str, where: str) -> None:
        if not isinstance(hps, Mapping) or not hps:
            raise _Layout(f"{where}: expected a dict hp → ArchResults state dict, found {type(hps).__name__}")
        for hp, state in hps.items():
            hp = _PTH_HPS.get(hp, hp)
            if not (isinstance(hp, str) and hp.isdigit()):
                raise _Layout(f"{where}: unknown hp key {hp!r} (expected '12' / '200', or 'less' / 'full')")
            if not isinstance(state, Mapping):
                raise _Layout(f"{where}: hp {hp!r} is a {type(state).__name__}, not an ArchResults state dict")
            a = state.get("arch_str")
            if a is not None and a != meta_arch:
                raise _Layout(f"{where}: architecture string {a!r} differs from meta_archs[{index}] {meta_arch!r}")
            if state.get("arch_index", index) not in (index, -1):
                raise _Layout(f"{where}: arch_index {state.get('arch_index')!r} is not {index}")
            self.hps.add(int(hp))
            for ds, seeds in (state.get("dataset_seed") or {}).items():
                self.datasets.add(str(ds))
                self.seeds[f"{ds}@hp{int(hp)}"].update(int(s) for s in seeds)
            for name, value in _convert_arch(state, hp, where):
                col = self.cols.get(name)
                if col is None:
                    col = self.cols[name] = np.full(NUM_ARCHS, np.nan, dtype=np.float64)
                col[index] = value
        self.evaluated += 1


def _check_meta(meta_archs: Any, where: str) -> list[str]:
    if not isinstance(meta_archs, (list, tuple)):
        raise ValueError(f"{where}: 'meta_archs' is not a list of architecture strings; expected {SUPPORTED}")
    if len(meta_archs) != NUM_ARCHS or not all(isinstance(a, str) and _ARCH_RE.match(a) for a in meta_archs):
        what = ("the NATS-Bench size search space (NATS-sss)" if len(meta_archs) == 32768
                else f"{len(meta_archs)} architectures")
        raise ValueError(f"{where} is not a NAS-Bench-201 topology benchmark: it has {what}, not "
                         f"{NUM_ARCHS:,} cell strings; expected {SUPPORTED}")
    return list(meta_archs)


def _from_dict(obj: Any, collector: _Collector, where: str, bar: Any) -> list[str]:
    if not isinstance(obj, dict) or not {"meta_archs", "arch2infos"} <= set(obj):
        raise ValueError(f"{where} has not the NAS-Bench-201 layout (a dict with 'meta_archs', 'arch2infos', "
                         f"'evaluated_indexes'); expected {SUPPORTED}")
    meta = _check_meta(obj["meta_archs"], where)
    infos = obj["arch2infos"]
    if not isinstance(infos, dict):
        raise ValueError(f"{where}: 'arch2infos' is a {type(infos).__name__}, not a dict index → results")
    for key in sorted(infos, key=lambda k: (not isinstance(k, int), k)):
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < NUM_ARCHS:
            raise ValueError(f"{where}: 'arch2infos' key {key!r} is not an index 0..{NUM_ARCHS - 1}")
        hps = infos.pop(key)  # free each architecture's results once converted
        collector.add(key, hps, meta[key], f"{where} [architecture {key}]")
        if bar is not None:
            bar.update(1)
    return meta


def _arch_file(folder: Path, index: int) -> Path | None:
    for name in (f"{index:06d}{PICKLE_EXT}", f"{index:d}{PICKLE_EXT}"):
        p = folder / name
        if p.is_file():
            return p
    return None


def _from_folder(folder: Path, collector: _Collector, bar: Any) -> list[str]:
    meta_file = folder / f"meta{PICKLE_EXT}"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no meta{PICKLE_EXT}: not a NATS-Bench folder; expected "
                                + SUPPORTED)
    meta_obj = _load_bz2_pickle(meta_file)
    if not isinstance(meta_obj, dict) or "meta_archs" not in meta_obj:
        raise ValueError(f"{str(meta_file)!r} has not the NATS-Bench meta layout (a dict with 'meta_archs')")
    meta = _check_meta(meta_obj["meta_archs"], str(meta_file))
    del meta_obj
    for i in range(NUM_ARCHS):
        p = _arch_file(folder, i)
        if p is not None:
            hps = _load_bz2_pickle(p)
            collector.add(i, hps, meta[i], str(p))
            del hps
        if bar is not None:
            bar.update(1)
    return meta


def read_benchmark(path: str | os.PathLike[str], *, progress: bool = False
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Convert a benchmark file or folder (no cache): ``(table, details)``.

    Returns:
        table: ``index`` int64 [15625], ``arch_str`` object [15625], float64 [15625] columns
        (module docstring's rule), sorted by name; details: ``format``, ``evaluated`` (architectures
        with results), ``datasets``, ``hps``, ``seeds`` (``"dataset@hpH"`` → sorted seeds).

    Raises:
        FileNotFoundError: ``path`` does not exist. ValueError: not one of :data:`SUPPORTED`, a
        foreign pickle (:class:`zcfast.safe_pickle.UnsafePickleError`, nothing it names is run), a
        truncated or corrupt file, or a wrong layout, each naming the file.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"NB201 benchmark file not found: {str(p)!r}")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=NUM_ARCHS, unit="arch", desc=f"import nb201 {p.name}", dynamic_ncols=True)
    collector = _Collector()
    try:
        if p.is_dir():
            if p.name.endswith("-full") and not (p / f"meta{PICKLE_EXT}").is_file():
                raise ValueError(f"{str(p)!r}: NATS-Bench '-full' archives are not read; use the "
                                 "NATS-tss-v1_0-3ffb9-simple folder (the same metrics without the weights)")
            meta = _from_folder(p, collector, bar)
            fmt = "nats-simple"
        elif p.name.endswith(".pbz2"):
            meta = _from_dict(_load_bz2_pickle(p), collector, str(p), bar)
            fmt = "nats-file"
        else:
            meta = _from_dict(_load_torch_file(p), collector, str(p), bar)
            fmt = "pth"
    except _Layout as exc:
        raise ValueError(f"not a NAS-Bench-201 benchmark file: {exc}") from None
    finally:
        if bar is not None:
            bar.close()
    table: dict[str, np.ndarray] = {"index": np.arange(NUM_ARCHS, dtype=np.int64),
                                    "arch_str": np.array(meta, dtype=object)}
    for name in sorted(collector.cols):
        table[name] = collector.cols[name]
    details = {"format": fmt, "evaluated": collector.evaluated,
               "datasets": [d for d in DATASETS if d in collector.datasets],
               "hps": sorted(collector.hps),
               "seeds": {k: sorted(v) for k, v in sorted(collector.seeds.items())}}
    return table, details


# --------------------------------------------------------------------------------------------
# The cached table
# --------------------------------------------------------------------------------------------
def _write_table(table: Mapping[str, np.ndarray], dest: Path) -> None:
    """gzip CSV (shipped format: '' for NaN, repr floats so values round-trip), atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    names = list(table)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            text = io.TextIOWrapper(gz, encoding="utf-8", newline="")
            w = csv.writer(text, lineterminator="\n")
            w.writerow(names)
            floats = [n for n in names if n not in ("index", "arch_str")]
            for i in range(NUM_ARCHS):
                row = [int(table["index"][i]), table["arch_str"][i]]
                for n in floats:
                    v = float(table[n][i])
                    row.append("" if math.isnan(v) else repr(v))
                w.writerow(row)
            text.flush()
            text.detach()
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read_cached(path: Path) -> dict[str, np.ndarray]:
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            rows = list(reader)
    except (OSError, EOFError, StopIteration, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cached NB201 table {str(path)!r} is damaged ({type(exc).__name__}); delete it "
                         "to convert the benchmark again") from None
    if header[:2] != ["index", "arch_str"] or len(rows) != NUM_ARCHS or any(len(r) != len(header) for r in rows):
        raise ValueError(f"cached NB201 table {str(path)!r} is damaged (wrong header or row count); delete it "
                         "to convert the benchmark again")
    cols = list(zip(*rows))
    out: dict[str, np.ndarray] = {"index": np.array(cols[0], dtype=np.int64),
                                  "arch_str": np.array(cols[1], dtype=object)}
    for name, col in zip(header[2:], cols[2:]):
        out[name] = np.array([float(v) if v else np.nan for v in col], dtype=np.float64)
    for arr in out.values():
        arr.setflags(write=False)
    return out


def import_file(path: str | os.PathLike[str], *, cache: str | os.PathLike[str] | None = None,
                progress: bool = True, force: bool = False) -> ImportResult:
    """Convert ``path`` once into ``cached_path("nb201", path, ".csv.gz", cache)`` (``zcfast import
    nb201 PATH``); an existing table for the same source is reused unless ``force``.

    Returns:
        :class:`~zcfast.formats.cache.ImportResult` (``details``: format, evaluated, datasets, hps,
        seeds; for a reused table: its column count only).

    Raises:
        as :func:`read_benchmark`; nothing is written when the source is refused.
    """
    p = Path(path).expanduser()
    dest = cached_path("nb201", p, ".csv.gz", cache)
    if dest.is_file() and not force:
        with gzip.open(dest, "rt", encoding="utf-8") as fh:
            ncols = len(fh.readline().split(","))
        return ImportResult("nb201", str(p), str(dest), NUM_ARCHS, 0.0, True, {"columns": ncols - 2})
    t0 = time.perf_counter()
    table, details = read_benchmark(p, progress=progress)
    _write_table(table, dest)
    return ImportResult("nb201", str(p), str(dest), NUM_ARCHS, time.perf_counter() - t0, False,
                        {**details, "columns": len(table) - 2})


def load_table(path: str | os.PathLike[str], *, cache: str | os.PathLike[str] | None = None,
               progress: bool = False) -> dict[str, np.ndarray]:
    """The converted table of a benchmark file or folder (converting it on first use).

    Returns:
        column → read-only array [15625] in benchmark order: ``index`` int64, ``arch_str`` object,
        the float64 columns of the module docstring's rule (NaN where absent).
    """
    res = import_file(path, cache=cache, progress=progress)
    return _read_cached(Path(res.table))


# --------------------------------------------------------------------------------------------
# Writers (tests, fixtures, docs)
# --------------------------------------------------------------------------------------------
def _shipped_arch_strs() -> list[str]:
    """The benchmark order, read from the asset zcfast ships (without importing zcfast.spaces)."""
    raw = (resources.files("zcfast") / "assets" / "nb201" / "nb201_groundtruth_merged.csv.gz").read_bytes()
    reader = csv.reader(io.StringIO(gzip.decompress(raw).decode("utf-8")))
    col = next(reader).index("arch_str")
    return [row[col] for row in reader]


def _results_count(ds: str, seed: int, hp: int, run: Mapping[str, Any], arch: str) -> dict[str, Any]:
    acc = dict(run.get("acc", {}))
    loss = dict(run.get("loss", {}))
    unknown = set(acc) - set(SPLITS)
    if unknown or "train" not in acc:
        raise ValueError(f"entry run {ds} seed {seed}: 'acc' needs 'train' and splits among {sorted(SPLITS)}, "
                         f"got {sorted(acc)}")

    def series(final: float) -> dict[int, float]:
        return {e: float(final) - 0.25 * (hp - 1 - e) for e in range(hp)}

    evals = [s for s in ("x-valid", "x-test", "ori-test") if s in acc]
    acc1, losses = {}, {}
    for s in evals:
        for e, v in series(acc[s]).items():
            acc1[f"{s}@{e}"] = v
        for e in range(hp):
            losses[f"{s}@{e}"] = float(loss.get(s, math.nan)) + (hp - 1 - e) * 0.01
    epoch_time = run.get("epoch_time")
    train_times = (collections.OrderedDict((e, float(epoch_time)) for e in range(hp))
                   if epoch_time is not None else None)
    eval_times = ({f"{s}@{e}": float(epoch_time) / 3 for s in evals for e in range(hp)}
                  if epoch_time is not None else {})
    return {
        "name": ds, "net_state_dict": None,
        "train_acc1es": series(acc["train"]), "train_acc5es": None,
        "train_losses": {e: float(loss.get("train", math.nan)) + (hp - 1 - e) * 0.01 for e in range(hp)},
        "train_times": train_times,
        "arch_config": {"channel": 16, "num_cells": 5, "arch_str": arch, "class_num": 10},
        "params": np.float64(run.get("params", math.nan)), "flop": float(run.get("flops", math.nan)),
        "seed": f"{int(seed):04d}", "epochs": hp,
        "latency": [np.float64(run["latency"])] if run.get("latency") is not None else None,
        "eval_names": evals, "eval_acc1es": acc1, "eval_times": eval_times, "eval_losses": losses,
    }


def _arch_results(entry: Entry, meta: Sequence[str]) -> tuple[int, dict[str, dict[str, Any]]]:
    """index, {hp: ArchResults state dict} of one writer entry."""
    index = int(entry["index"])
    arch = entry.get("arch_str", meta[index])
    if arch != meta[index]:
        raise ValueError(f"entry {index}: arch_str {arch!r} is not the benchmark's {meta[index]!r}")
    out: dict[str, dict[str, Any]] = {}
    for run in entry["runs"]:
        ds, hp, seed = run["dataset"], int(run["hp"]), int(run["seed"])
        if ds not in DATASETS:
            raise ValueError(f"entry {index}: unknown dataset {ds!r} (expected {sorted(DATASETS)})")
        st = out.setdefault(str(hp), {"arch_index": index, "arch_str": arch, "all_results": {},
                                      "dataset_seed": {}, "clear_net_done": True})
        if (ds, seed) in st["all_results"]:
            raise ValueError(f"entry {index}: run {ds} hp {hp} seed {seed} given twice")
        st["all_results"][(ds, seed)] = _results_count(ds, seed, hp, run, arch)
        st["dataset_seed"][ds] = sorted(st["dataset_seed"].get(ds, []) + [seed])
    return index, out


def write_pth(path: str | os.PathLike[str], entries: Iterable[Entry], version: str = "v1_0", *,
              meta_archs: Sequence[str] | None = None) -> Path:
    """A NAS-Bench-201 ``.pth`` (the official dict under ``torch.save``) of a few ``entries``.

    Args:
        version: ``"v1_0"`` (torch's legacy container, as that 2020 file; hp-12 runs only on
            cifar10-valid, as v1.0's ``less`` results) or ``"v1_1"`` (zip container).
        meta_archs: the 15,625 strings in benchmark order (default: the shipped table's order).
    Entries without an hp-12 or hp-200 run get an empty ArchResults for it (as the API needs both).
    """
    import torch

    if version not in ("v1_0", "v1_1"):
        raise ValueError(f"version must be 'v1_0' or 'v1_1', got {version!r}")
    meta = list(meta_archs) if meta_archs is not None else _shipped_arch_strs()
    arch2infos: dict[int, dict[str, Any]] = {}
    for entry in entries:
        index, hps = _arch_results(entry, meta)
        extra = set(hps) - set(_PTH_HPS.values())
        if extra:
            raise ValueError(f"entry {index}: a .pth holds hp 12 and 200 only, not {sorted(extra)}")
        if version == "v1_0" and any(ds != "cifar10-valid" for ds, _ in hps.get("12", {}).get("all_results", {})):
            raise ValueError(f"entry {index}: v1_0's hp-12 ('less') results exist only for cifar10-valid")
        empty = {"arch_index": index, "arch_str": meta[index], "all_results": {}, "dataset_seed": {},
                 "clear_net_done": True}
        arch2infos[index] = {"less": hps.get("12", dict(empty)), "full": hps.get("200", dict(empty))}
    obj = {"meta_archs": meta, "arch2infos": arch2infos, "evaluated_indexes": sorted(arch2infos),
           "total_archs": len(meta)}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, p, _use_new_zipfile_serialization=(version == "v1_1"))
    return p


def write_nats_simple(folder: str | os.PathLike[str], entries: Iterable[Entry], *,
                      meta_archs: Sequence[str] | None = None) -> Path:
    """A NATS-Bench topology ``-simple`` folder: ``meta.pickle.pbz2`` and one
    ``{index:06d}.pickle.pbz2`` per entry (bz2 pickles, protocol 4, as ``nats_bench`` writes)."""
    meta = list(meta_archs) if meta_archs is not None else _shipped_arch_strs()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    done = set()
    for entry in entries:
        index, hps = _arch_results(entry, meta)
        ordered = collections.OrderedDict(sorted(hps.items(), key=lambda kv: int(kv[0])))
        with bz2.open(out / f"{index:06d}{PICKLE_EXT}", "wb") as fh:
            pickle.dump(ordered, fh, protocol=4)
        done.add(index)
    with bz2.open(out / f"meta{PICKLE_EXT}", "wb") as fh:
        pickle.dump({"meta_archs": meta, "total_archs": len(meta), "arch2infos": None,
                     "evaluated_indexes": done}, fh, protocol=4)
    return out
