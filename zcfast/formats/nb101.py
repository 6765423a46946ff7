"""NAS-Bench-101's official ``nasbench_only108.tfrecord`` / ``nasbench_full.tfrecord``, read without
TensorFlow, converted once into a compact memory-mapped table.

Each TFRecord record (:mod:`zcfast.formats.tfrecord`) is UTF-8 JSON
``[module_hash, epochs, raw_adjacency, raw_operations, raw_metrics]`` (google-research/nasbench
``api.py``): ``raw_adjacency`` the row-major 0/1 digits of the module's ``dim x dim`` matrix,
``raw_operations`` its ops joined by commas, ``raw_metrics`` base64 of a ``ModelMetrics`` protobuf
(``lib/model_metrics.proto``)::

    ModelMetrics   { repeated EvaluationData evaluation_data = 1; int32 trainable_parameters = 2;
                     double total_time = 3; }
    EvaluationData { double current_epoch = 1; double training_time = 2; double train_accuracy = 3;
                     double validation_accuracy = 4; double test_accuracy = 5; string checkpoint_path = 6; }

``evaluation_data[0]`` is the untrained model (unused, as in the official API), ``[1]`` the halfway
point and ``[2]`` the end of training. One row per (hash, epochs, run): 423,624 hashes x 3 runs at
108 epochs in ``only108``, and at 4, 12, 36 and 108 epochs in ``full``.

The table (a folder under :func:`zcfast.formats.cache.cached_path`, written atomically) holds
``.npy`` arrays opened with ``np.load(mmap_mode="r")``, rows sorted by hash:

- ``hashes`` ``|S32`` [M] (sorted: lookups by ``np.searchsorted``);
- ``adjacency`` int8 [M, 7, 7] (the module's matrix, zero-padded), ``num_vertices`` int8 [M],
  ``ops`` int8 [M, 7] (codes into :data:`OP_NAMES`, -1 padding), ``trainable_parameters`` int64 [M];
- ``metrics`` float64 [M, E, R, 8]: for each epoch budget of ``meta["epochs"]`` and run, the 8
  values of :data:`METRICS` (NaN where a run is absent); ``runs`` int8 [M, E] (runs present);
- ``meta.json``: format, version, source, fingerprint, entries, rows, epochs, metrics.

:func:`open_table` reads it as a Mapping hash -> record in NASLib's record format (the one
:class:`zcfast.spaces.nb101.NB101Space` reads), built per lookup. :func:`load` opens any NB101
ground-truth file: a tfrecord (converted on first use), a table folder, JSON or a pickle.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import os
import shutil
import struct
import time
import uuid
from collections.abc import ItemsView, Mapping, ValuesView
from pathlib import Path
from typing import Any, Container, Iterable, Iterator

import numpy as np

from .. import safe_pickle
from . import cache as _cache
from .tfrecord import TFRecordError, iter_records, write_records

__all__ = ["OP_NAMES", "METRICS", "MAX_VERTICES", "TABLE_FORMAT", "TABLE_VERSION", "EvaluationData",
           "ModelMetrics", "decode_model_metrics", "encode_model_metrics", "parse_row", "import_file",
           "open_table", "NB101Table", "load", "load_records_file", "write_tfrecord",
           "TFRECORD_SUFFIXES", "PICKLE_SUFFIXES", "RECORDS_SUFFIXES", "RecordsFileResult", "TFRecordError"]

#: Op of each code of the table's ``ops`` array.
OP_NAMES: tuple[str, ...] = ("input", "conv1x1-bn-relu", "conv3x3-bn-relu", "maxpool3x3", "output")
#: The 8 values of each run, in the table's order (the keys of a NASLib run dict).
METRICS: tuple[str, ...] = (
    "halfway_training_time", "halfway_train_accuracy", "halfway_validation_accuracy", "halfway_test_accuracy",
    "final_training_time", "final_train_accuracy", "final_validation_accuracy", "final_test_accuracy")
MAX_VERTICES = 7
MAX_RUNS = 3
TABLE_FORMAT = "zcfast-nb101-table"
TABLE_VERSION = 1
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords")
PICKLE_SUFFIXES = (".pkl", ".pickle")
#: Suffixes of the records files (:func:`load_records_file`), read as they are (nothing converted).
RECORDS_SUFFIXES = (".json",) + PICKLE_SUFFIXES
_OP_CODE = {op: i for i, op in enumerate(OP_NAMES)}
_BLOCK = 1 << 13  # rows per allocation of the growing arrays
_ARRAYS = ("hashes", "adjacency", "num_vertices", "ops", "trainable_parameters", "metrics", "runs")


# --------------------------------------------------------------------------------------------
# Protobuf wire format of ModelMetrics / EvaluationData
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class EvaluationData:
    """One evaluation during training (absent fields read as protobuf's defaults: 0.0, "")."""

    current_epoch: float = 0.0
    training_time: float = 0.0
    train_accuracy: float = 0.0
    validation_accuracy: float = 0.0
    test_accuracy: float = 0.0
    checkpoint_path: str = ""


@dataclasses.dataclass
class ModelMetrics:
    """One training run's metrics: evaluations (initial, halfway, final), parameters, total time."""

    evaluation_data: list[EvaluationData] = dataclasses.field(default_factory=list)
    trainable_parameters: int = 0
    total_time: float = 0.0


_EVAL_DOUBLES = ("current_epoch", "training_time", "train_accuracy", "validation_accuracy", "test_accuracy")
_unpack_d = struct.Struct("<d").unpack_from


class _ProtoError(ValueError):
    pass


def _varint(buf: bytes, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end:
            raise _ProtoError(f"truncated varint at byte {i}")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
        if shift >= 70:
            raise _ProtoError(f"varint longer than 10 bytes at byte {i}")


def _fields(buf: bytes, i: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of a message in ``buf[i:end]``: an int for
    varints, raw 8 / 4 bytes for fixed64 / fixed32, (start, stop) for length-delimited fields."""
    while i < end:
        key, i = _varint(buf, i, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _ProtoError(f"field number 0 at byte {i}")
        if wire == 0:
            value, i = _varint(buf, i, end)
        elif wire == 1:
            if i + 8 > end:
                raise _ProtoError(f"truncated 64-bit field {field} at byte {i}")
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i, end)
            if i + n > end:
                raise _ProtoError(f"length-delimited field {field} of {n} bytes overruns the message at byte {i}")
            value, i = (i, i + n), i + n
        elif wire == 5:
            if i + 4 > end:
                raise _ProtoError(f"truncated 32-bit field {field} at byte {i}")
            value, i = buf[i:i + 4], i + 4
        else:
            raise _ProtoError(f"unsupported wire type {wire} (field {field}) at byte {i}")
        yield field, wire, value


def _double(field: str, wire: int, value: Any) -> float:
    if wire != 1:
        raise _ProtoError(f"{field} has wire type {wire}, expected 1 (double)")
    return _unpack_d(value)[0]


_EVAL_PREFIX = struct.Struct("<BdBdBdBdBd")  # fields 1-5 as the official writer emits them
_EVAL_TAGS = (0x09, 0x11, 0x19, 0x21, 0x29)


def _decode_eval(buf: bytes, i: int, end: int) -> EvaluationData:
    ev = EvaluationData()
    if end - i >= 45:
        # fast path: the five doubles in field order (45 bytes); any later field is read below and,
        # as protobuf does, overrides an earlier value of the same field
        t1, a, t2, b, t3, c, t4, d, t5, e = _EVAL_PREFIX.unpack_from(buf, i)
        if (t1, t2, t3, t4, t5) == _EVAL_TAGS:
            ev.current_epoch, ev.training_time, ev.train_accuracy, ev.validation_accuracy, ev.test_accuracy = \
                a, b, c, d, e
            i += 45
    for field, wire, value in _fields(buf, i, end):
        if 1 <= field <= 5:
            setattr(ev, _EVAL_DOUBLES[field - 1], _double(f"EvaluationData.{_EVAL_DOUBLES[field - 1]}", wire, value))
        elif field == 6:
            if wire != 2:
                raise _ProtoError(f"EvaluationData.checkpoint_path has wire type {wire}, expected 2")
            try:
                ev.checkpoint_path = bytes(buf[value[0]:value[1]]).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _ProtoError(f"EvaluationData.checkpoint_path is not UTF-8: {exc}") from None
    return ev


def decode_model_metrics(data: bytes) -> ModelMetrics:
    """Decode a serialized ``nasbench.ModelMetrics`` (proto2 wire format; unknown fields skipped).

    Raises:
        ValueError naming the problem (truncated varint or field, wrong wire type, ...).
    """
    data = bytes(data)
    m = ModelMetrics()
    for field, wire, value in _fields(data, 0, len(data)):
        if field == 1:
            if wire != 2:
                raise _ProtoError(f"ModelMetrics.evaluation_data has wire type {wire}, expected 2")
            m.evaluation_data.append(_decode_eval(data, value[0], value[1]))
        elif field == 2:
            if wire != 0:
                raise _ProtoError(f"ModelMetrics.trainable_parameters has wire type {wire}, expected 0")
            v = value & 0xFFFFFFFF                              # int32: the low 32 bits, signed
            m.trainable_parameters = v - (1 << 32) if v >= 1 << 31 else v
        elif field == 3:
            m.total_time = _double("ModelMetrics.total_time", wire, value)
    return m


def _enc_varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_model_metrics(m: ModelMetrics) -> bytes:
    """Serialize ``m`` as the official writer does (every field present, in field order)."""
    out = bytearray()
    for ev in m.evaluation_data:
        body = bytearray()
        for k, name in enumerate(_EVAL_DOUBLES, start=1):
            body += bytes([(k << 3) | 1]) + struct.pack("<d", float(getattr(ev, name)))
        if ev.checkpoint_path:
            path = ev.checkpoint_path.encode("utf-8")
            body += bytes([(6 << 3) | 2]) + _enc_varint(len(path)) + path
        out += bytes([(1 << 3) | 2]) + _enc_varint(len(body)) + body
    out += bytes([(2 << 3) | 0]) + _enc_varint(int(m.trainable_parameters))
    out += bytes([(3 << 3) | 1]) + struct.pack("<d", float(m.total_time))
    return bytes(out)


# --------------------------------------------------------------------------------------------
# One row of the tfrecord
# --------------------------------------------------------------------------------------------
def _hex32(h: Any) -> bool:
    if not isinstance(h, str) or len(h) != 32:
        return False
    try:
        int(h, 16)
    except ValueError:
        return False
    return True


def parse_row(data: bytes, known: Container[str] = ()) -> tuple[str, int, np.ndarray | None, list[str] | None,
                                                               ModelMetrics]:
    """One tfrecord row -> (hash, epochs, adjacency int8 [dim, dim], ops, metrics); adjacency and
    ops are ``None`` (not parsed) when the hash is in ``known`` (a row of an architecture seen before).

    Raises:
        ValueError naming what is wrong (the caller adds the file and record number).
    """
    try:
        row = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a NAS-Bench-101 row (not UTF-8 JSON: {exc})") from None
    if not isinstance(row, list) or len(row) != 5:
        raise ValueError("not a NAS-Bench-101 row (expected a JSON list [hash, epochs, adjacency, "
                         "operations, metrics])")
    h, epochs, raw_adj, raw_ops, raw_metrics = row
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
        raise ValueError(f"epochs {epochs!r} is not a positive int")
    if h in known:
        return h, epochs, None, None, _parse_metrics(raw_metrics)
    if not _hex32(h):
        raise ValueError(f"module hash {h!r} is not 32 hex digits")
    if not isinstance(raw_adj, str) or not raw_adj or raw_adj.strip("01"):
        raise ValueError("adjacency is not a string of 0/1 digits")
    dim = math.isqrt(len(raw_adj))
    if dim * dim != len(raw_adj) or dim > MAX_VERTICES:
        raise ValueError(f"adjacency has {len(raw_adj)} digits, not the square of a dimension <= {MAX_VERTICES}")
    adj = (np.frombuffer(raw_adj.encode("ascii"), dtype=np.uint8) - ord("0")).astype(np.int8).reshape(dim, dim)
    if not isinstance(raw_ops, str):
        raise ValueError("operations is not a comma-separated string")
    ops = raw_ops.split(",")
    if len(ops) != dim:
        raise ValueError(f"{len(ops)} operations for a {dim}x{dim} adjacency")
    for op in ops:
        if op not in _OP_CODE:
            raise ValueError(f"unknown operation {op!r}; expected one of {OP_NAMES}")
    return h, epochs, adj, ops, _parse_metrics(raw_metrics)


def _parse_metrics(raw_metrics: Any) -> ModelMetrics:
    if not isinstance(raw_metrics, str):
        raise ValueError("metrics is not a base64 string")
    try:
        blob = base64.b64decode(raw_metrics, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"metrics is not base64 ({exc})") from None
    try:
        metrics = decode_model_metrics(blob)
    except _ProtoError as exc:
        raise ValueError(f"metrics is not a ModelMetrics protobuf ({exc})") from None
    if len(metrics.evaluation_data) < 3:
        raise ValueError(f"ModelMetrics has {len(metrics.evaluation_data)} evaluation_data entries; a "
                         "NAS-Bench-101 run has 3 (initial, halfway, final)")
    return metrics


# --------------------------------------------------------------------------------------------
# Conversion into the table
# --------------------------------------------------------------------------------------------
class _Growing:
    """A [n, *tail] array grown in fixed blocks (no re-allocation of what is written)."""

    def __init__(self, tail: tuple[int, ...], dtype: Any, fill: Any) -> None:
        self.tail, self.dtype, self.fill = tail, np.dtype(dtype), fill
        self.blocks: list[np.ndarray] = []

    def ensure(self, n: int) -> None:
        while len(self.blocks) * _BLOCK < n:
            self.blocks.append(np.full((_BLOCK,) + self.tail, self.fill, dtype=self.dtype))

    def row(self, k: int) -> tuple[np.ndarray, int]:
        return self.blocks[k // _BLOCK], k % _BLOCK

    def take(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx),) + self.tail, dtype=self.dtype)
        b, o = idx // _BLOCK, idx % _BLOCK
        for j in np.unique(b):
            sel = b == j
            out[sel] = self.blocks[int(j)][o[sel]]
        return out

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in self.blocks)


def _progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False)


def _table_ok(folder: Path) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("format") == TABLE_FORMAT
            and meta.get("version") == TABLE_VERSION and all((folder / f"{a}.npy").is_file() for a in _ARRAYS))


class RecordsFileResult(_cache.ImportResult):
    """:func:`import_file`'s result for a records file: nothing converted, the file is its own
    table (``table == source``, ``cached=True``, ``seconds=0.0``)."""

    def summary(self) -> str:
        """``nb101: 30 architectures in X (a records file: used directly by --benchmark, ...)``."""
        return (f"{self.space}: {self.entries:,} architectures in {self.source} (a records file: used directly by "
                "--benchmark, no conversion needed)")


def import_file(path: str | os.PathLike[str], *, cache: str | os.PathLike[str] | None = None,
                progress: bool = True, force: bool = False, check_crc: bool = True,
                chunk_size: int = 4 << 20) -> _cache.ImportResult:
    """Convert an official NB101 tfrecord once into a table under ``cache`` (default
    :func:`zcfast.formats.cache.cache_dir`); reuse it when it exists (``cached=True``).

    Memory is bounded by the table (plus one read chunk), not by the file.

    A records file (``.json``, NASLib's ``.pkl`` / ``.pickle``: :data:`RECORDS_SUFFIXES`) is only
    read (:func:`load_records_file`, the restricted unpickler), nothing converted: a
    :class:`RecordsFileResult` whose ``table`` is the file itself (``cache``, ``force``,
    ``progress``, ``check_crc`` and ``chunk_size`` do not apply).

    Args:
        path: ``nasbench_only108.tfrecord`` or ``nasbench_full.tfrecord`` (or a file in their format),
            or a records file.
        cache: the cache folder (default ``$ZCFAST_CACHE`` or ``~/.cache/zcfast``).
        progress: a tqdm progress bar on stderr (when tqdm is importable).
        force: convert again even when the table exists.
        check_crc: check the TFRecord CRCs (default; ``False`` is slightly faster).
        chunk_size: bytes of the file read at a time (:func:`zcfast.formats.tfrecord.iter_records`).

    Raises:
        FileNotFoundError naming the path; TFRecordError / ValueError naming the file and the record
        number for damaged framing, a row that is not NB101 JSON, more than 3 runs of one
        (hash, epochs), or a file with no records; for a records file, :func:`load_records_file`'s.
    """
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"NAS-Bench-101 tfrecord not found: {str(src)!r}")
    if src.name.lower().endswith(RECORDS_SUFFIXES):
        return RecordsFileResult("nb101", str(src), str(src), len(load_records_file(src)), 0.0, True)
    target = _cache.cached_path("nb101", src, "", cache)
    if not force and _table_ok(target):
        meta = json.loads((target / "meta.json").read_text())
        return _cache.ImportResult("nb101", str(src), str(target), int(meta["entries"]), 0.0, True,
                                   {"rows": meta["rows"], "epochs": meta["epochs"]})
    t0 = time.perf_counter()
    name = str(src)
    index: dict[str, int] = {}
    adjacency = _Growing((MAX_VERTICES, MAX_VERTICES), np.int8, 0)
    ops_codes = _Growing((MAX_VERTICES,), np.int8, -1)
    num_vertices = _Growing((), np.int8, 0)
    params = _Growing((), np.int64, 0)
    metrics: dict[int, _Growing] = {}
    runs: dict[int, _Growing] = {}
    rows = 0
    bar = _progress_bar(progress, src.stat().st_size, f"nb101 {src.name}")
    try:
        for rows, data in enumerate(iter_records(src, check_crc=check_crc, chunk_size=chunk_size,
                                                 progress=bar.update if bar is not None else None), start=1):
            try:
                h, epochs, adj, op_list, mm = parse_row(data, index)
            except ValueError as exc:
                raise ValueError(f"NAS-Bench-101 file {name!r}: record {rows - 1}: {exc}") from None
            k = index.get(h)
            if k is None:
                assert adj is not None and op_list is not None
                k = index[h] = len(index)
                for g in (adjacency, ops_codes, num_vertices, params, *metrics.values(), *runs.values()):
                    g.ensure(k + 1)
                dim = adj.shape[0]
                blk, o = adjacency.row(k)
                blk[o, :dim, :dim] = adj
                blk, o = ops_codes.row(k)
                blk[o, :dim] = [_OP_CODE[x] for x in op_list]
                blk, o = num_vertices.row(k)
                blk[o] = dim
                blk, o = params.row(k)
                blk[o] = mm.trainable_parameters
            if epochs not in metrics:
                metrics[epochs] = _Growing((MAX_RUNS, len(METRICS)), np.float64, np.nan)
                runs[epochs] = _Growing((), np.int8, 0)
                metrics[epochs].ensure(len(index))
                runs[epochs].ensure(len(index))
            rblk, ro = runs[epochs].row(k)
            r = int(rblk[ro])
            if r >= MAX_RUNS:
                raise ValueError(f"NAS-Bench-101 file {name!r}: record {rows - 1}: a run {r + 1} of hash {h} at "
                                 f"{epochs} epochs; the benchmark has {MAX_RUNS} runs per budget")
            rblk[ro] = r + 1
            half, final = mm.evaluation_data[1], mm.evaluation_data[2]
            mblk, mo = metrics[epochs].row(k)
            mblk[mo, r] = (half.training_time, half.train_accuracy, half.validation_accuracy, half.test_accuracy,
                           final.training_time, final.train_accuracy, final.validation_accuracy,
                           final.test_accuracy)
    finally:
        if bar is not None:
            bar.close()
    if not index:
        raise ValueError(f"NAS-Bench-101 file {name!r} holds no records (an empty TFRecord file)")
    hashes = np.array(list(index), dtype="S32")
    del index
    order = np.argsort(hashes, kind="stable")
    epochs_sorted = sorted(metrics)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        M, E = len(hashes), len(epochs_sorted)
        np.save(tmp / "hashes.npy", hashes[order])
        del hashes
        for fname, g in (("adjacency", adjacency), ("ops", ops_codes), ("num_vertices", num_vertices),
                         ("trainable_parameters", params)):
            np.save(tmp / f"{fname}.npy", g.take(order))
            g.blocks.clear()
        out = np.lib.format.open_memmap(tmp / "metrics.npy", mode="w+", dtype=np.float64,
                                        shape=(M, E, MAX_RUNS, len(METRICS)))
        out_runs = np.zeros((M, E), dtype=np.int8)
        for s in range(0, M, _BLOCK):
            idx = order[s:s + _BLOCK]
            for e, ep in enumerate(epochs_sorted):
                out[s:s + len(idx), e] = metrics[ep].take(idx)
                out_runs[s:s + len(idx), e] = runs[ep].take(idx)
        out.flush()
        del out
        np.save(tmp / "runs.npy", out_runs)
        meta = {"format": TABLE_FORMAT, "version": TABLE_VERSION, "source": os.path.abspath(src),
                "fingerprint": _cache.fingerprint(src), "entries": M, "rows": rows, "epochs": epochs_sorted,
                "runs": MAX_RUNS, "metrics": list(METRICS), "ops": list(OP_NAMES), "check_crc": bool(check_crc)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if not force and _table_ok(target):
            # another process converted the same source meanwhile: keep its table
            shutil.rmtree(tmp, ignore_errors=True)
        elif target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
        else:
            try:
                os.replace(tmp, target)
            except OSError:
                if not _table_ok(target):  # not a concurrent conversion of the same source
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _cache.ImportResult("nb101", str(src), str(target), M, time.perf_counter() - t0, False,
                               {"rows": rows, "epochs": epochs_sorted})


# --------------------------------------------------------------------------------------------
# The table as a Mapping hash -> NASLib-format record
# --------------------------------------------------------------------------------------------
class NB101Table(Mapping):
    """A converted NB101 table (memory-mapped): ``table[hash]`` is a record dict in NASLib's format
    (``hash``, ``module_adjacency`` [[int]] of the module's dim, ``module_operations``,
    ``trainable_parameters``, ``results`` {str(epochs): [runs, each the 8 :data:`METRICS`]}), built
    per lookup. Iteration yields the hashes in sorted order. Pickles as its folder."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        try:
            self.meta = json.loads((self.folder / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"NAS-Bench-101 table {str(self.folder)!r} has no readable meta.json ({exc})") from None
        if not isinstance(self.meta, dict) or self.meta.get("format") != TABLE_FORMAT:
            raise ValueError(f"NAS-Bench-101 table {str(self.folder)!r}: meta.json is not a {TABLE_FORMAT}")
        if self.meta.get("version") != TABLE_VERSION:
            raise ValueError(f"NAS-Bench-101 table {str(self.folder)!r} has format version "
                             f"{self.meta.get('version')!r}; this zcfast reads {TABLE_VERSION} (import again)")
        arrays: dict[str, np.ndarray] = {}
        for a in _ARRAYS:
            try:
                arrays[a] = np.load(self.folder / f"{a}.npy", mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise ValueError(f"NAS-Bench-101 table {str(self.folder)!r}: {a}.npy is unreadable ({exc})") from None
        self.arrays = arrays
        self.hashes = arrays["hashes"]
        self.epochs: list[int] = [int(e) for e in self.meta["epochs"]]
        M = len(self.hashes)
        for a, want in (("adjacency", (M, MAX_VERTICES, MAX_VERTICES)), ("num_vertices", (M,)),
                        ("ops", (M, MAX_VERTICES)), ("trainable_parameters", (M,)),
                        ("metrics", (M, len(self.epochs), MAX_RUNS, len(METRICS))), ("runs", (M, len(self.epochs)))):
            if arrays[a].shape != want:
                raise ValueError(f"NAS-Bench-101 table {str(self.folder)!r}: {a}.npy has shape "
                                 f"{arrays[a].shape}, expected {want}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (NB101Table, (str(self.folder),))

    def __len__(self) -> int:
        return len(self.hashes)

    def _index(self, h: object) -> int | None:
        if not isinstance(h, str) or len(h) != 32:
            return None
        key = h.encode("ascii", "replace")
        i = int(np.searchsorted(self.hashes, key))
        return i if i < len(self.hashes) and self.hashes[i] == key else None

    def __contains__(self, h: object) -> bool:
        return self._index(h) is not None

    def __iter__(self) -> Iterator[str]:
        for s in range(0, len(self.hashes), _BLOCK):
            for h in self.hashes[s:s + _BLOCK].tolist():
                yield h.decode("ascii")

    def record(self, i: int) -> dict[str, Any]:
        """The record of row ``i`` (rows in hash order)."""
        a = self.arrays
        dim = int(a["num_vertices"][i])
        results: dict[str, list[dict[str, float]]] = {}
        m = a["metrics"][i]
        for e, ep in enumerate(self.epochs):
            n = int(a["runs"][i, e])
            if n:
                results[str(ep)] = [dict(zip(METRICS, map(float, m[e, r]))) for r in range(n)]
        return {"hash": self.hashes[i].decode("ascii"),
                "module_adjacency": a["adjacency"][i, :dim, :dim].astype(np.int64).tolist(),
                "module_operations": [OP_NAMES[c] for c in a["ops"][i, :dim].tolist()],
                "trainable_parameters": int(a["trainable_parameters"][i]),
                "results": results}

    def __getitem__(self, h: str) -> dict[str, Any]:
        i = self._index(h)
        if i is None:
            raise KeyError(h)
        return self.record(i)

    def items(self) -> ItemsView[str, dict[str, Any]]:
        """A lazy view (records built one at a time, in hash order)."""
        return _TableItems(self)

    def values(self) -> ValuesView[dict[str, Any]]:
        """A lazy view (records built one at a time, in hash order)."""
        return _TableValues(self)


class _TableItems(ItemsView):
    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        t = self._mapping
        for i in range(len(t)):
            rec = t.record(i)
            yield rec["hash"], rec


class _TableValues(ValuesView):
    def __iter__(self) -> Iterator[dict[str, Any]]:
        t = self._mapping
        for i in range(len(t)):
            yield t.record(i)


def open_table(path: str | os.PathLike[str]) -> NB101Table:
    """Open a converted table folder (from :func:`import_file`).

    Raises:
        FileNotFoundError naming the path; ValueError naming the folder when it is not a table.
    """
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"NAS-Bench-101 table folder not found: {str(p)!r}")
    return NB101Table(p)


# --------------------------------------------------------------------------------------------
# Any NB101 ground-truth file
# --------------------------------------------------------------------------------------------
def load_records_file(path: str | os.PathLike[str], *, pickled: bool | None = None) -> dict[str, dict[str, Any]]:
    """Read a JSON or pickle NB101 records file (list of records, or dict hash -> record).

    A pickle (``.pkl`` / ``.pickle``, or ``pickled=True``) is read with :func:`zcfast.safe_pickle.load`: plain
    containers and numpy arrays only, never code.

    Raises:
        FileNotFoundError naming the path; ValueError naming the file if the content is not
        records (not JSON, a refused or unreadable pickle, records without a string ``hash``).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"NAS-Bench-101 ground-truth file not found: {str(p)!r}")
    if pickled is None:
        pickled = p.suffix.lower() in PICKLE_SUFFIXES
    if pickled:
        try:
            data = safe_pickle.load(p)
        except safe_pickle.UnsafePickleError as exc:
            raise safe_pickle.UnsafePickleError(f"NAS-Bench-101 file: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"NAS-Bench-101 file: {exc}") from None
    else:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"NAS-Bench-101 file {str(p)!r} is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        data = [dict(v, hash=v.get("hash", k)) if isinstance(v, dict) else v for k, v in data.items()]
    if not isinstance(data, list) or not all(isinstance(r, dict) and isinstance(r.get("hash"), str)
                                             for r in data):
        raise ValueError(f"NAS-Bench-101 file {str(p)!r} must hold records (a list, or a dict hash → "
                         "record), each with a string 'hash' field")
    return {r["hash"]: r for r in data}


#: First byte of a pickle: PROTO (protocol 2+), or EMPTY_LIST / EMPTY_DICT / MARK (protocols 0-1).
_PICKLE_FIRST = (b"\x80", b"]", b"}", b"(")


def _looks_like_tfrecord(p: Path) -> bool:
    if p.suffix.lower() in TFRECORD_SUFFIXES:
        return True
    if p.suffix.lower() in RECORDS_SUFFIXES:
        return False
    with open(p, "rb") as fh:
        head = fh.read(64).lstrip()
    return head[:1] not in (b"[", b"{") + _PICKLE_FIRST


def load(path: str | os.PathLike[str], *, cache: str | os.PathLike[str] | None = None,
         progress: bool = True) -> Mapping[str, dict[str, Any]]:
    """Open any NB101 ground-truth source as a Mapping hash -> record (NASLib's format):

    - an official ``.tfrecord`` (converted once into the cache on first use, then reused);
    - a converted table folder (:func:`import_file`'s output);
    - a ``.json`` records file, or NASLib's ``.pkl`` / ``.pickle`` (via the restricted unpickler).

    A file of another suffix is read as JSON or a pickle when it starts like one, else as a tfrecord.

    Raises:
        FileNotFoundError naming the path; ValueError (TFRecordError, UnsafePickleError) naming
        the file and the problem.
    """
    p = Path(path)
    if p.is_dir():
        return NB101Table(p)
    if not p.is_file():
        raise FileNotFoundError(f"NAS-Bench-101 ground-truth file not found: {str(p)!r}")
    if _looks_like_tfrecord(p):
        res = import_file(p, cache=cache, progress=progress)
        return NB101Table(res.table)
    if p.suffix.lower() not in RECORDS_SUFFIXES:
        with open(p, "rb") as fh:
            return load_records_file(p, pickled=fh.read(1) in _PICKLE_FIRST)
    return load_records_file(p)


# --------------------------------------------------------------------------------------------
# Writing an official-format tfrecord from NASLib records (tests, fixtures)
# --------------------------------------------------------------------------------------------
def _row_bytes(rec: dict[str, Any], epochs: str, run: dict[str, Any]) -> bytes:
    adj = np.asarray(rec["module_adjacency"], dtype=np.int64)
    ops = list(rec["module_operations"])
    ep = int(epochs)
    evals = [EvaluationData(current_epoch=0.0, training_time=0.0, train_accuracy=0.1, validation_accuracy=0.1,
                            test_accuracy=0.1),
             EvaluationData(current_epoch=ep / 2, training_time=run["halfway_training_time"],
                            train_accuracy=run["halfway_train_accuracy"],
                            validation_accuracy=run["halfway_validation_accuracy"],
                            test_accuracy=run["halfway_test_accuracy"]),
             EvaluationData(current_epoch=float(ep), training_time=run["final_training_time"],
                            train_accuracy=run["final_train_accuracy"],
                            validation_accuracy=run["final_validation_accuracy"],
                            test_accuracy=run["final_test_accuracy"])]
    mm = ModelMetrics(evals, int(rec["trainable_parameters"]), float(run["final_training_time"]))
    row = [rec["hash"], ep, "".join(str(int(v)) for v in adj.reshape(-1)), ",".join(ops),
           base64.b64encode(encode_model_metrics(mm)).decode("ascii")]
    return json.dumps(row).encode("utf-8")


def write_tfrecord(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> int:
    """Write NASLib-format NB101 records as an official tfrecord: one row per hash x epochs x run,
    each ``ModelMetrics`` with the 3 evaluation_data entries (initial, halfway, final) as the
    official file has them. Returns the number of rows written (atomic write)."""
    def rows() -> Iterator[bytes]:
        for rec in records:
            for epochs, run_list in sorted(rec["results"].items(), key=lambda kv: int(kv[0])):
                for run in run_list:
                    yield _row_bytes(rec, epochs, run)
    return write_records(path, rows())

