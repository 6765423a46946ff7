"""The zcfast result store: one SQLite file shared by correlate, search and scan.

A store holds *runs*; a run is identified by a configuration dict (space, dataset, batch,
seed, proxies, ...) and its id is a hash of that dict, so two processes asking for the same
configuration get the same run and different configurations never mix. Inside a run every
architecture appears at most once, keyed by ``space.key(arch)``.

Safety properties (tested in tests/test_store.py and tests/test_scan_faults.py):

- The file carries SQLite's ``application_id`` (:data:`APPLICATION_ID`, "ZCFS") and
  ``user_version`` (:data:`SCHEMA_VERSION`). Opening a file that is not SQLite, a foreign
  SQLite database, a newer schema, or a corrupt store raises :class:`StoreError` (a
  ``ValueError``) naming the problem; such a file is never written to.
- Every :meth:`ResultStore.put_many` is one transaction and rows are upserted by
  ``(run_id, arch_key)``: a process killed mid-write loses at most the batch in flight and
  never leaves a duplicate.
- Journaling is WAL by default (``synchronous=NORMAL``: durable across a killed process; a
  power cut may lose the last transactions but never corrupts). Pass ``journal="delete"`` for
  file systems where WAL is not supported (some network mounts).
- One writer process. Worker processes compute and send rows to the parent, which writes.
  Readers in other processes may open the same file concurrently (WAL).

A connection belongs to the thread/process that opened it: do not share a ResultStore
across ``fork`` or threads; open a new one instead.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "BatchKey",
    "ResultStore",
    "RunConfig",
    "ScoreRow",
    "StoreError",
    "config_id",
    "export_parquet",
]

#: SQLite ``PRAGMA application_id`` of a zcfast store: the bytes b"ZCFS" big-endian.
APPLICATION_ID: int = int.from_bytes(b"ZCFS", "big")
#: ``PRAGMA user_version`` written by this code. Older versions are migrated (none yet);
#: newer ones are refused.
SCHEMA_VERSION: int = 1

_SQLITE_MAGIC = b"SQLite format 3\x00"
_FORMAT_TAG = "zcfast-result-store"
_HEADER_SIZE = 100

_SCHEMA = f"""
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE runs (
    run_id  TEXT PRIMARY KEY,
    config  TEXT NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE scores (
    run_id   TEXT NOT NULL REFERENCES runs(run_id),
    arch_key TEXT NOT NULL,
    arch_str TEXT NOT NULL,
    vals     TEXT NOT NULL,
    error    TEXT,
    seconds  REAL NOT NULL,
    PRIMARY KEY (run_id, arch_key)
) WITHOUT ROWID;
INSERT INTO meta(key, value) VALUES ('format', '{_FORMAT_TAG}');
INSERT INTO meta(key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
"""


class StoreError(ValueError):
    """A file that is not a usable zcfast store (foreign, corrupt, newer schema) or bad input."""


@dataclass(frozen=True)
class ScoreRow:
    """One scored architecture.

    Attributes:
        arch_key: ``space.key(arch)``, the run-unique key (isomorphism-canonical hash).
        arch_str: ``space.encode(arch)``, canonical text of the architecture.
        values: proxy name -> score. NaN / ±inf are kept as such. Empty when scoring failed.
        error: ``None`` on success, else a one-line description (exception type and message,
            "out of memory", "non-finite: ...").
        seconds: wall time spent scoring this architecture (0.0 when unknown).
    """

    arch_key: str
    arch_str: str
    values: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.arch_key, str) or not self.arch_key:
            raise StoreError(f"ScoreRow.arch_key must be a non-empty str, got {self.arch_key!r}")
        if not isinstance(self.arch_str, str):
            raise StoreError(f"ScoreRow.arch_str must be a str, got {type(self.arch_str).__name__}")
        if not isinstance(self.values, Mapping):
            raise StoreError(f"ScoreRow.values must be a dict, got {type(self.values).__name__}")
        if self.error is not None and not isinstance(self.error, str):
            raise StoreError(f"ScoreRow.error must be str or None, got {type(self.error).__name__}")


def _canonical_json(config: Mapping[str, Any]) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
            return obj.item()
        raise TypeError(f"config value {obj!r} of type {type(obj).__name__} is not JSON-serialisable")

    try:
        return json.dumps(dict(config), sort_keys=True, separators=(",", ":"), default=default,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"run config cannot be stored: {exc}") from None


@dataclass(frozen=True)
class BatchKey:
    """The scoring batch as a store key: what makes two batches give the same values.

    Attributes:
        fingerprint: :func:`zcfast.data.batch_fingerprint` of the fixed batch (x, y).
        data: where the images came from (``"shipped:<dataset>"`` or the user's path).
        size, seed, augment: the draw (``zcfast.data.paper_batch``).
        norm: the dataset whose normalisation was applied.
        per_arch: the per-architecture batch scheme (``None``: one batch for every architecture).
    """

    fingerprint: str
    data: str
    size: int
    seed: int
    augment: bool = True
    norm: str = "cifar10"
    per_arch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"fingerprint": self.fingerprint, "data": self.data, "size": int(self.size),
                             "seed": int(self.seed), "augment": bool(self.augment), "norm": self.norm}
        if self.per_arch is not None:
            d["per_arch"] = self.per_arch
        return d


@dataclass(frozen=True)
class RunConfig:
    """The one definition of what keys a store run: everything that changes its values.

    Two kinds of run share this definition:

    - ``kind="proxy"`` (correlate and search): ONE proxy per run, rows keyed by
      ``space.encode(arch)`` (one row per benchmark entry). Correlate and search build the
      same RunConfig for the same proxy, space, classes, batch, init seed, device and variant,
      so each reuses the other's cached scores.
    - ``kind="scan"``: several proxies per run, rows keyed by ``space.key(arch)``; the
      candidate stream (``candidates``) and the ``scorer`` are part of the key.

    Execution settings that could change values (torch's thread count) are pinned, not
    keyed: every stored score is computed under :func:`zcfast.options.scoring_threads`.
    :meth:`to_dict` omits defaults that earlier stores did not record, so their run ids are
    unchanged.
    """

    kind: str
    space: str
    proxies: tuple[str, ...]
    num_classes: int
    batch: BatchKey
    init_seed: int
    device: str
    variant: str = "benchmark"
    dataset: str | None = None         # scan: the dataset name as given
    candidates: str | None = None      # scan: "enumerate" or "sample:<seed>"
    scorer: str | None = None          # scan: "zcfast" or the user scorer's qualified name

    def __post_init__(self) -> None:
        if self.kind not in ("proxy", "scan"):
            raise StoreError(f"RunConfig.kind must be 'proxy' or 'scan', got {self.kind!r}")
        if self.kind == "proxy" and len(self.proxies) != 1:
            raise StoreError(f"a 'proxy' run holds exactly one proxy, got {list(self.proxies)}")
        if self.kind == "scan" and (self.candidates is None or self.scorer is None or self.dataset is None):
            raise StoreError("a 'scan' run needs dataset, candidates and scorer")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored with the run (its id is :func:`config_id` of it)."""
        if self.kind == "proxy":
            d: dict[str, Any] = {"study": "correlate", "space": self.space, "num_classes": int(self.num_classes),
                                 "batch": self.batch.to_dict(), "init_seed": int(self.init_seed),
                                 "device": self.device, "row_key": "arch_str", "proxy": self.proxies[0]}
            if self.variant != "benchmark":
                d["variant"] = self.variant
            return d
        d = {"kind": "scan", "space": self.space, "dataset": self.dataset,
             "batch_size": int(self.batch.size), "data_seed": int(self.batch.seed),
             "data": self.batch.fingerprint, "seed": int(self.init_seed),
             "proxies": sorted(self.proxies), "num_classes": int(self.num_classes),
             "device": self.device, "candidates": self.candidates, "scorer": self.scorer}
        if self.variant != "benchmark":
            d["variant"] = self.variant
        return d

    def run_id(self) -> str:
        """The run id, without registering it in a store."""
        return config_id(self.to_dict())


def config_id(config: Mapping[str, Any]) -> str:
    """Run id of ``config``: first 16 hex digits of sha256 of its canonical JSON.

    Keys are sorted; list order is kept (so sort a proxy list first if its order should not
    matter). Tuples and lists are the same; NaN/inf and non-JSON values are refused.
    """
    if not isinstance(config, Mapping) or not config:
        raise StoreError("run config must be a non-empty dict")
    return hashlib.sha256(_canonical_json(config).encode()).hexdigest()[:16]


def _encode_values(values: Mapping[str, float]) -> str:
    clean: dict[str, float] = {}
    for name, value in values.items():
        if not isinstance(name, str):
            raise StoreError(f"proxy name must be a str, got {name!r}")
        try:
            clean[name] = float(value)
        except (TypeError, ValueError):
            raise StoreError(f"value of proxy {name!r} is not a number: {value!r}") from None
    # json keeps NaN/Infinity (non-standard tokens Python reads back) and floats round-trip exactly.
    return json.dumps(clean, sort_keys=True, allow_nan=True)


def _check_header(path: Path) -> bool:
    """Return True if ``path`` holds a zcfast store, False if it is empty; raise otherwise."""
    size = path.stat().st_size
    if size == 0:
        return False
    with open(path, "rb") as fh:
        header = fh.read(_HEADER_SIZE)
    if len(header) < _HEADER_SIZE or not header.startswith(_SQLITE_MAGIC):
        raise StoreError(f"{path} is not a zcfast result store: not an SQLite database file")
    app_id = int.from_bytes(header[68:72], "big")
    version = int.from_bytes(header[60:64], "big")
    if app_id != APPLICATION_ID:
        raise StoreError(
            f"{path} is an SQLite database of another application (application_id={app_id:#x}, "
            f"zcfast stores have {APPLICATION_ID:#x}); refusing to use or overwrite it")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} has store schema version {version}, newer than this zcfast "
                         f"(version {SCHEMA_VERSION}); upgrade zcfast to read it")
    if version < 1:
        raise StoreError(f"{path} has a zcfast application id but no schema version: corrupt store")
    return True


class ResultStore:
    """A zcfast SQLite result store.

    Args:
        path: file name. A new file is created when ``create`` is true and the file does not
            exist (or exists with size 0).
        create: when False a missing file raises ``FileNotFoundError``.
        journal: ``"wal"`` (default) or ``"delete"`` (plain rollback journal).
        check: run SQLite's ``quick_check`` when opening an existing store (O(file size);
            a corrupt file then fails here instead of part-way through a scan).
        timeout: seconds to wait for a lock held by another connection.

    Raises:
        StoreError: not a zcfast store (non-SQLite, foreign SQLite, newer schema, corrupt).
    """

    def __init__(self, path: str | os.PathLike[str], create: bool = True, journal: str = "wal",
                 check: bool = True, timeout: float = 60.0) -> None:
        if journal not in ("wal", "delete"):
            raise StoreError(f"journal must be 'wal' or 'delete', got {journal!r}")
        self.path = Path(path)
        exists = self.path.exists()
        if exists and self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a store file")
        if not exists and not create:
            raise FileNotFoundError(f"no zcfast store at {self.path}")
        if not exists:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        initialised = _check_header(self.path) if exists else False
        if exists and not initialised and not create:
            raise StoreError(f"{self.path} is an empty file, not a zcfast store (create=False)")
        self._conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        try:
            if initialised:
                self._verify_schema(conn, quick_check=check)
            else:
                self._initialise(conn)
            mode = conn.execute(f"PRAGMA journal_mode={journal.upper()}").fetchone()[0]
            self.journal = str(mode).lower()
            conn.execute("PRAGMA synchronous=NORMAL" if self.journal == "wal" else "PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{self.path} is not a usable zcfast store: {exc}") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    # ----------------------------------------------------------------- opening / schema
    def _initialise(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN EXCLUSIVE")
        try:
            # Re-check under the lock: another process may have initialised it meanwhile.
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                conn.execute("ROLLBACK")
                self._verify_schema(conn, quick_check=False)
                return
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO meta(key, value) VALUES ('created', ?)", (repr(time.time()),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _verify_schema(self, conn: sqlite3.Connection, quick_check: bool) -> None:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise StoreError(f"{self.path} is an SQLite database of another application "
                             f"(application_id={app_id:#x}); refusing to use or overwrite it")
        if quick_check:
            result = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
            if result != ["ok"]:
                raise StoreError(f"{self.path} is a corrupt zcfast store: {'; '.join(result)}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = {"meta", "runs", "scores"} - tables
        if missing:
            raise StoreError(f"{self.path} is a corrupt zcfast store: missing tables {sorted(missing)}")
        tag = conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if tag is None or tag[0] != _FORMAT_TAG:
            raise StoreError(f"{self.path} is a corrupt zcfast store: bad format tag {tag!r}")

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed")
        return self._conn

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    def _wrap(self, exc: sqlite3.DatabaseError) -> StoreError:
        return StoreError(f"{self.path}: store read/write failed ({exc}); the file may be corrupt")

    def verify(self) -> None:
        """Run SQLite's full ``integrity_check``; raise StoreError if the file is damaged."""
        try:
            result = [r[0] for r in self.conn.execute("PRAGMA integrity_check(5)")]
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None
        if result != ["ok"]:
            raise StoreError(f"{self.path} is a corrupt zcfast store: {'; '.join(result)}")

    # ----------------------------------------------------------------- runs
    def run_id(self, config: "RunConfig | Mapping[str, Any]") -> str:
        """Register the run of ``config`` (if new) and return its id (see :func:`config_id`).

        ``config`` is a :class:`RunConfig` (what correlate, search and scan use) or a plain
        dict (any other user of the store)."""
        if isinstance(config, RunConfig):
            config = config.to_dict()
        rid = config_id(config)
        text = _canonical_json(config)
        try:
            self.conn.execute("INSERT INTO runs(run_id, config, created) VALUES (?, ?, ?) "
                              "ON CONFLICT(run_id) DO NOTHING", (rid, text, time.time()))
            stored = self.conn.execute("SELECT config FROM runs WHERE run_id=?", (rid,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None
        if stored[0] != text:  # a 64-bit prefix collision: never mix two configs
            raise StoreError(f"run id {rid} already holds a different config: {stored[0]}")
        return rid

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every run in the store: run id -> config dict."""
        try:
            return {rid: json.loads(cfg) for rid, cfg in
                    self.conn.execute("SELECT run_id, config FROM runs ORDER BY created, run_id")}
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None

    def config(self, run_id: str) -> dict[str, Any]:
        """The config dict of ``run_id``; StoreError if unknown."""
        row = self.conn.execute("SELECT config FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"unknown run id {run_id!r} in {self.path}")
        return json.loads(row[0])

    def _require_run(self, run_id: str) -> None:
        if self.conn.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone() is None:
            raise StoreError(f"unknown run id {run_id!r} in {self.path}; get one from run_id(config)")

    # ----------------------------------------------------------------- rows
    def put_many(self, run_id: str, rows: Iterable[ScoreRow]) -> int:
        """Write ``rows`` in ONE transaction, upserting by ``(run_id, arch_key)``.

        Either all rows are stored or (process killed, error) none is. Returns the number of
        rows written.
        """
        params = []
        for row in rows:
            if not isinstance(row, ScoreRow):
                raise StoreError(f"put_many expects ScoreRow objects, got {type(row).__name__}")
            seconds = float(row.seconds)
            if not math.isfinite(seconds):
                raise StoreError(f"ScoreRow.seconds must be finite, got {row.seconds!r}")
            params.append((run_id, row.arch_key, row.arch_str, _encode_values(row.values),
                           row.error, seconds))
        if not params:
            return 0
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._require_run(run_id)
                conn.executemany(
                    "INSERT INTO scores(run_id, arch_key, arch_str, vals, error, seconds) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(run_id, arch_key) DO UPDATE SET "
                    "arch_str=excluded.arch_str, vals=excluded.vals, error=excluded.error, "
                    "seconds=excluded.seconds", params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None
        return len(params)

    def done_keys(self, run_id: str) -> set[str]:
        """Arch keys already stored for ``run_id`` (scored or failed). O(rows) memory: for
        million-row runs prefer :meth:`has_keys` on bounded batches."""
        self._require_run(run_id)
        return {r[0] for r in self.conn.execute("SELECT arch_key FROM scores WHERE run_id=?", (run_id,))}

    def has_keys(self, run_id: str, keys: Sequence[str]) -> set[str]:
        """The subset of ``keys`` already stored for ``run_id`` (memory bounded by ``len(keys)``)."""
        found: set[str] = set()
        keys = list(keys)
        chunk = 500  # stay well below SQLite's bound-parameter limit
        try:
            for i in range(0, len(keys), chunk):
                part = keys[i:i + chunk]
                marks = ",".join("?" * len(part))
                found.update(r[0] for r in self.conn.execute(
                    f"SELECT arch_key FROM scores WHERE run_id=? AND arch_key IN ({marks})",
                    (run_id, *part)))
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None
        return found

    def count(self, run_id: str, errors: bool | None = None) -> int:
        """Rows of ``run_id``; ``errors=True`` only failed ones, ``False`` only successful ones."""
        sql = "SELECT count(*) FROM scores WHERE run_id=?"
        if errors is True:
            sql += " AND error IS NOT NULL"
        elif errors is False:
            sql += " AND error IS NULL"
        return int(self.conn.execute(sql, (run_id,)).fetchone()[0])

    def get(self, run_id: str, arch_key: str) -> ScoreRow | None:
        """The row of ``arch_key`` in ``run_id``, or None."""
        r = self.conn.execute("SELECT arch_key, arch_str, vals, error, seconds FROM scores "
                              "WHERE run_id=? AND arch_key=?", (run_id, arch_key)).fetchone()
        return None if r is None else ScoreRow(r[0], r[1], json.loads(r[2]), r[3], r[4])

    def rows(self, run_id: str) -> Iterator[ScoreRow]:
        """Every row of ``run_id`` ordered by arch_key, streamed (memory flat in row count)."""
        self._require_run(run_id)
        last = ""
        page = 5000
        while True:  # keyset pagination: no long-lived cursor across a caller's writes
            try:
                batch = self.conn.execute(
                    "SELECT arch_key, arch_str, vals, error, seconds FROM scores "
                    "WHERE run_id=? AND arch_key>? ORDER BY arch_key LIMIT ?",
                    (run_id, last, page)).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._wrap(exc) from None
            for r in batch:
                yield ScoreRow(r[0], r[1], json.loads(r[2]), r[3], r[4])
            if len(batch) < page:
                return
            last = batch[-1][0]

    def delete_run(self, run_id: str) -> int:
        """Remove a run and its rows (one transaction); returns the number of rows removed."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            n = conn.execute("DELETE FROM scores WHERE run_id=?", (run_id,)).rowcount
            conn.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return n

    def export_parquet(self, run_id: str, path: str | os.PathLike[str],
                       row_group_size: int = 65536) -> int:
        """Write ``run_id`` to a Parquet file; see :func:`export_parquet`."""
        return export_parquet(self, run_id, path, row_group_size=row_group_size)


def export_parquet(store: ResultStore, run_id: str, path: str | os.PathLike[str],
                   row_group_size: int = 65536) -> int:
    """Export one run to Parquet, streaming row groups (memory flat in the number of rows).

    Columns: ``arch_key`` (string), ``arch``(string, the canonical text), one float64 column
    per proxy (the run config's ``proxies`` when present, else the sorted names seen in the
    first row group; a proxy missing from a row is null), ``error`` (string, null on
    success), ``seconds`` (float64). The run config is stored as JSON in the schema metadata
    under ``zcfast.config`` (and the run id under ``zcfast.run_id``). Returns the row count.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    config = store.config(run_id)
    proxies = config.get("proxies")
    it = store.rows(run_id)
    first: list[ScoreRow] = []
    for row in it:
        first.append(row)
        if len(first) >= row_group_size:
            break
    if isinstance(proxies, (list, tuple)) and all(isinstance(p, str) for p in proxies):
        names = list(proxies)
    else:
        names = sorted({name for row in first for name in row.values})
    schema = pa.schema(
        [("arch_key", pa.string()), ("arch", pa.string())]
        + [(name, pa.float64()) for name in names]
        + [("error", pa.string()), ("seconds", pa.float64())],
        metadata={"zcfast.config": json.dumps(config, sort_keys=True), "zcfast.run_id": run_id})

    def table(rows: list[ScoreRow]) -> "pa.Table":
        cols: dict[str, list[Any]] = {
            "arch_key": [r.arch_key for r in rows], "arch": [r.arch_str for r in rows]}
        for name in names:
            cols[name] = [r.values.get(name) for r in rows]
        cols["error"] = [r.error for r in rows]
        cols["seconds"] = [r.seconds for r in rows]
        return pa.Table.from_pydict(cols, schema=schema)

    total = 0
    tmp = Path(str(path) + ".tmp")
    with pq.ParquetWriter(str(tmp), schema) as writer:
        batch = first
        while batch:
            writer.write_table(table(batch), row_group_size=row_group_size)
            total += len(batch)
            batch = []
            for row in it:
                batch.append(row)
                if len(batch) >= row_group_size:
                    break
        if total == 0:
            writer.write_table(table([]))
    os.replace(tmp, path)
    return total
