"""The zcfast result store: one SQLite file shared by correlate, search and scan.

A store holds *runs*; a run is identified by a configuration (a :class:`RunConfig`, or any
JSON dict) and its id is a hash of that configuration, so two processes asking for the same
configuration get the same run and different configurations never mix. Inside a run every
architecture appears at most once, keyed by ``arch_key``.

What the store promises (each promise is tested; see docs/scan.md, "The store's promises"):

- **Foreign or damaged files are refused, never written.** The file carries SQLite's
  ``application_id`` (:data:`APPLICATION_ID`, "ZCFS") and ``user_version``
  (:data:`SCHEMA_VERSION`). Opening a file that is not SQLite, a foreign SQLite database, a
  newer schema, or a corrupt store (``PRAGMA quick_check``) raises :class:`StoreError` (a
  ``ValueError``) naming the problem.
- **No lost or duplicated rows.** Every :meth:`ResultStore.put_many` is one transaction and
  rows are upserted by ``(run_id, arch_key)``: a process killed mid-write loses at most the
  batch in flight and never leaves a duplicate.
- **One writer.** The first write of a :class:`ResultStore` takes an advisory lock
  (``fcntl.flock`` on the sidecar ``<store>.lock``, holding the writer's pid and command
  line) until :meth:`ResultStore.close`; a second writer, in this or another process, gets a
  :class:`StoreError` naming the first ("store X is being written by process 1234 (zcfast
  scan ...)"). Writers whose rows cannot collide (``correlate --shard``) may share the lock
  instead (``acquire_writer(shared=True)``). Readers never take the lock: export, inspection and ``correlate
  --report-only`` work while a writer runs. The lock dies with its process (SIGKILL too).
- **Corrupt rows are detected.** SQLite keeps no checksums of the data, so every row carries
  one (``crc``: 64-bit BLAKE2b of run id, key, text, values, error and seconds). It is
  verified on every :meth:`~ResultStore.get` and :meth:`~ResultStore.rows` (hence every
  export) and by :meth:`~ResultStore.verify`; a damaged row raises :class:`StoreError`
  naming the run and the row, it is never returned, and :meth:`~ResultStore.put_many` does
  not write over it unless asked to rescore it. A run's config is checked against its id.
- **Read-only media.** A store whose file or folder is not writable (or
  ``readonly=True``) opens read-only (``mode=ro``; ``immutable=1`` when the folder is not
  writable, so no ``-wal``/``-shm`` is needed): reading and export work, writes are refused.
- **Exports never overwrite.** :func:`export_parquet` never writes over the store itself
  (whatever the path: symlink, hard link), over any SQLite file, or over an existing file
  unless ``overwrite=True`` (an earlier export of the same run is replaced); it writes a
  temporary file in the target folder, fsyncs and renames it, and removes it on any failure.

Journaling is WAL by default (``synchronous=NORMAL``: durable across a killed process; a power
cut may lose the last transactions but never corrupts). Pass ``journal="delete"`` for file
systems where WAL is not supported (some network mounts). Worker processes compute and send
rows to the parent, which is the only writer.

Schema version 2 added the row checksums. A version-1 store is read as is (its rows are
"legacy, unverified"; :meth:`~ResultStore.verify` says so) and migrated, computing the
checksums of its rows, on its first write.

A connection belongs to the thread/process that opened it: do not share a ResultStore
across ``fork`` or threads; open a new one instead (a forked child never holds the lock).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import sqlite3
import stat
import sys
import tempfile
import time
import urllib.parse
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
    "check_export_target",
    "config_id",
    "export_parquet",
]

#: SQLite ``PRAGMA application_id`` of a zcfast store: the bytes b"ZCFS" big-endian.
APPLICATION_ID: int = int.from_bytes(b"ZCFS", "big")
#: ``PRAGMA user_version`` written by this code: 2 (per-row checksums). Version 1 stores are
#: read, and migrated on their first write; newer ones are refused.
SCHEMA_VERSION: int = 2

_SQLITE_MAGIC = b"SQLite format 3\x00"
_FORMAT_TAG = "zcfast-result-store"
_HEADER_SIZE = 100
#: Files next to a store that belong to it (an export never writes over them).
_SIDECARS = ("-wal", "-shm", "-journal", ".lock")

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
    crc      INTEGER,
    PRIMARY KEY (run_id, arch_key)
) WITHOUT ROWID;
INSERT INTO meta(key, value) VALUES ('format', '{_FORMAT_TAG}');
INSERT INTO meta(key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
"""


class StoreError(ValueError):
    """A file that is not a usable zcfast store (foreign, corrupt, newer schema, damaged row,
    written by another process, read-only) or bad input to the store."""


@dataclass(frozen=True)
class ScoreRow:
    """One scored architecture.

    Attributes:
        arch_key: ``space.key(arch)`` (scan) or ``space.encode(arch)`` (correlate, search): the
            run-unique key.
        arch_str: ``space.encode(arch)``, canonical text of the architecture.
        values: proxy name -> score. NaN / ±inf are kept as such (with the reason in
            ``error``). Empty when scoring failed.
        error: ``None`` on success, else a one-line description (exception type and message,
            "out of memory", "non-finite value: jacob_cov=nan (reason)").
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
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)):
            raise StoreError(f"ScoreRow.seconds must be a number, got {self.seconds!r}")


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
    if isinstance(config, RunConfig):
        config = config.to_dict()
    if not isinstance(config, Mapping) or not config:
        raise StoreError("run config must be a non-empty dict (or a RunConfig)")
    return _text_id(_canonical_json(config))


def _text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode_values(values: Mapping[str, float]) -> str:
    clean: dict[str, float] = {}
    for name, value in values.items():
        if not isinstance(name, str) or not name:
            raise StoreError(f"proxy name must be a non-empty str, got {name!r}")
        if isinstance(value, bool):
            raise StoreError(f"value of proxy {name!r} is not a number: {value!r}")
        try:
            clean[name] = float(value)
        except (TypeError, ValueError):
            raise StoreError(f"value of proxy {name!r} is not a number: {value!r}") from None
    # json keeps NaN/Infinity (non-standard tokens Python reads back) and floats round-trip exactly.
    return json.dumps(clean, sort_keys=True, allow_nan=True)


def _row_crc(run_id: str, arch_key: str, arch_str: str, vals: str, error: str | None,
             seconds: float) -> int:
    """The checksum of one stored row: 64-bit BLAKE2b of its columns, as a signed integer."""
    text = json.dumps([run_id, arch_key, arch_str, vals, error, float(seconds).hex()])
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _row_intact(run_id: str, r: Sequence[Any]) -> bool:
    """Whether a stored row ``(arch_key, arch_str, vals, error, seconds, crc)`` matches its
    checksum (any type confusion a corruption may cause counts as damage)."""
    try:
        key, text, vals, error, seconds, crc = r
        if not (isinstance(key, str) and isinstance(text, str) and isinstance(vals, str)
                and (error is None or isinstance(error, str)) and isinstance(seconds, float)
                and isinstance(crc, int)):
            return False
        return _row_crc(run_id, key, text, vals, error, seconds) == crc
    except Exception:
        return False


def _one_line(parts: Iterable[Any]) -> str:
    """SQLite's messages (``quick_check`` lists, errors) folded onto one line."""
    return " ".join(" ".join(str(p) for p in parts).split())


def _check_header(path: Path) -> int:
    """The schema version of the zcfast store at ``path``, 0 if the file is empty; raise
    StoreError for anything else."""
    size = path.stat().st_size
    if size == 0:
        return 0
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
    return version


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


def _writable(path: Path) -> bool:
    """Writable by this process *and* carrying a write permission bit (so a file or folder
    made read-only with ``chmod -w`` counts as read-only also for root)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return os.access(path, os.W_OK) and bool(mode & 0o222)


def _command_line() -> str:
    argv = list(sys.argv) or ["python"]
    name = os.path.basename(argv[0])
    if name == "__main__.py" and os.path.basename(os.path.dirname(argv[0])) == "zcfast":
        name = "python -m zcfast"
    return " ".join([name, *argv[1:]])[:500].replace("\n", " ")


#: Lock file descriptors held by this process; a forked child closes its copies (it must
#: never keep the parent's lock alive, e.g. a pool worker outliving a killed parent).
_HELD_LOCKS: dict[int, int] = {}   # fd -> owning pid


def _close_inherited_locks() -> None:
    for fd in list(_HELD_LOCKS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


class _WriterLock:
    """``fcntl.flock`` on ``<store>.lock`` (of the store's real path), holding pid + command line."""

    def __init__(self, store: Path) -> None:
        real = Path(os.path.realpath(store))
        self.path = real.with_name(real.name + ".lock")
        self.fd: int | None = None
        self.pid = 0
        self.shared = False

    def acquire(self, store: Path, shared: bool = False) -> None:
        if self.fd is not None and self.pid == os.getpid():
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write store {store}: cannot create its lock file {self.path} "
                             f"({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            try:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            except OSError:
                pass
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreError(f"cannot lock store {store} for writing ({exc.strerror or exc})") from None
            pid, _, cmd = holder.strip().partition("\n")
            who = f"process {pid} ({cmd.strip()})" if pid.strip().isdigit() else "another process"
            raise StoreError(f"store {store} is being written by {who}; a store has one writer at a "
                             "time: wait for it to finish, or use another --store") from None
        if not shared:
            os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{_command_line()}\n".encode(), 0)
        self.fd, self.pid, self.shared = fd, os.getpid(), shared
        _HELD_LOCKS[fd] = self.pid

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None or self.pid != os.getpid():  # not ours (inherited across fork): closed already
            return
        _HELD_LOCKS.pop(fd, None)
        if not self.shared:  # a shared holder leaves the others' note in place
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
        os.close(fd)


_ROW_COLS = "arch_key, arch_str, vals, error, seconds"


class ResultStore:
    """A zcfast SQLite result store.

    Args:
        path: file name. A new file is created when ``create`` is true and the file does not
            exist (or exists with size 0); missing parent folders are created.
        create: when False a missing file raises ``FileNotFoundError``.
        journal: ``"wal"`` (default) or ``"delete"`` (plain rollback journal); applied when the
            store is created and on its first write.
        check: run SQLite's ``quick_check`` when opening an existing store (O(file size);
            a corrupt file then fails here instead of part-way through a scan).
        timeout: seconds to wait for a lock held by another connection.
        readonly: ``True`` opens read-only (the file must exist); ``False`` never; ``None``
            (default): read-only when the file or its folder is not writable (read-only media,
            ``chmod -w``). A read-only store reads and exports; every write raises StoreError.

    Attributes:
        readonly: opened read-only. writing: this object holds the store's writer lock.
        journal: the journal mode in force. schema_version: the file's schema version.

    Raises:
        StoreError: not a zcfast store (non-SQLite, foreign SQLite, newer schema, corrupt).
    """

    def __init__(self, path: str | os.PathLike[str], create: bool = True, journal: str = "wal",
                 check: bool = True, timeout: float = 60.0, readonly: bool | None = None) -> None:
        self._conn: sqlite3.Connection | None = None
        self.writing = False
        if journal not in ("wal", "delete"):
            raise StoreError(f"journal must be 'wal' or 'delete', got {journal!r}")
        if readonly not in (None, True, False):
            raise StoreError(f"readonly must be True, False or None (automatic), got {readonly!r}")
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise StoreError(f"store path must be a file name, got {path!r}")
        self.path = Path(path)
        self._journal = journal
        self._lock = _WriterLock(self.path)
        exists = self.path.exists()
        if exists and self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a store file")
        if exists and not self.path.is_file():
            raise StoreError(f"{self.path} is not a regular file, not a store file")
        if not exists and (not create or readonly):
            raise FileNotFoundError(f"no zcfast store at {self.path}")
        if not exists:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store {self.path}: {exc.strerror or exc}") from None
        version = _check_header(self.path) if exists else 0
        if exists and version == 0 and not create:
            raise StoreError(f"{self.path} is an empty file, not a zcfast store (create=False)")
        folder_writable = _writable(self.path.absolute().parent)
        self._ro_reason = ""
        if readonly:
            self._ro_reason = "readonly=True"
        elif readonly is None and exists:
            if not _writable(self.path):
                self._ro_reason = "the file has no write permission"
            elif not folder_writable:
                self._ro_reason = "its folder is not writable"
        self.readonly = bool(self._ro_reason)
        if self.readonly and version == 0:
            raise StoreError(f"{self.path} is an empty file that cannot be initialised: {self._ro_reason}")
        try:
            if self.readonly:
                wal = Path(str(self.path) + "-wal")
                immutable = not folder_writable and not (wal.exists() and wal.stat().st_size > 0)
                uri = ("file:" + urllib.parse.quote(str(self.path.absolute())) + "?mode=ro"
                       + ("&immutable=1" if immutable else ""))
                conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
            else:
                conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {_one_line([exc])}") from None
        try:
            if version:
                self._verify_schema(conn, version, quick_check=check)
            else:  # creating the tables needs no writer lock: SQLite's EXCLUSIVE transaction serialises it
                version = self._initialise(conn, check)
                conn.execute(f"PRAGMA journal_mode={journal.upper()}")
            self.schema_version = version
            self.journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if not self.readonly:
                conn.execute("PRAGMA synchronous=NORMAL" if self.journal == "wal" else "PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            self._release()
            hint = f" (opened read-only: {self._ro_reason})" if self.readonly else ""
            raise StoreError(f"{self.path} is not a usable zcfast store: {_one_line([exc])}{hint}") from None
        except BaseException:
            conn.close()
            self._release()
            raise
        self._conn = conn

    # ----------------------------------------------------------------- opening / schema
    def _initialise(self, conn: sqlite3.Connection, check: bool) -> int:
        conn.execute("BEGIN EXCLUSIVE")
        try:
            # Re-check under the lock: another process may have initialised it meanwhile.
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                conn.execute("ROLLBACK")
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if version > SCHEMA_VERSION or version < 1:
                    raise StoreError(f"{self.path} has store schema version {version}; this zcfast "
                                     f"reads 1 to {SCHEMA_VERSION}")
                self._verify_schema(conn, version, quick_check=check)
                return version
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
        return SCHEMA_VERSION

    def _verify_schema(self, conn: sqlite3.Connection, version: int, quick_check: bool) -> None:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise StoreError(f"{self.path} is an SQLite database of another application "
                             f"(application_id={app_id:#x}); refusing to use or overwrite it")
        if quick_check:
            result = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
            if result != ["ok"]:
                raise StoreError(f"{self.path} is a corrupt zcfast store: {_one_line(result)}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = {"meta", "runs", "scores"} - tables
        if missing:
            raise StoreError(f"{self.path} is a corrupt zcfast store: missing tables {sorted(missing)}")
        tag = conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if tag is None or tag[0] != _FORMAT_TAG:
            raise StoreError(f"{self.path} is a corrupt zcfast store: bad format tag {tag!r}")
        columns = {r[1] for r in conn.execute("PRAGMA table_info(scores)")}
        want = {"run_id", "arch_key", "arch_str", "vals", "error", "seconds"} | ({"crc"} if version >= 2 else set())
        if not want <= columns:
            raise StoreError(f"{self.path} is a corrupt zcfast store: table scores lacks columns "
                             f"{sorted(want - columns)}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): committed when the body returns, rolled
        back on any exception (a killed process leaves none of it); SQLite errors become a
        :class:`StoreError`."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None

    def _migrate(self) -> None:
        """Schema 1 -> 2: add the row checksums (computed from the rows as they are: they passed
        ``quick_check``). One transaction, under the writer lock."""
        with self._transaction() as conn:
            if "crc" not in {r[1] for r in conn.execute("PRAGMA table_info(scores)")}:
                conn.execute("ALTER TABLE scores ADD COLUMN crc INTEGER")
            last: tuple[str, str] = ("", "")
            while True:
                batch = conn.execute(
                    f"SELECT run_id, {_ROW_COLS} FROM scores WHERE (run_id, arch_key) > (?, ?) "
                    "ORDER BY run_id, arch_key LIMIT 5000", last).fetchall()
                conn.executemany("UPDATE scores SET crc=? WHERE run_id=? AND arch_key=?",
                                 [(_row_crc(*r), r[0], r[1]) for r in batch])
                if len(batch) < 5000:
                    break
                last = (batch[-1][0], batch[-1][1])
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        self.schema_version = SCHEMA_VERSION

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed")
        return self._conn

    def acquire_writer(self, *, shared: bool = False) -> None:
        """Take the store's writer lock (idempotent; every write method calls it, exclusive).

        ``shared=True`` is for cooperating writers whose rows cannot collide or double-count,
        such as ``correlate --shard I/K`` processes (disjoint architectures, rows keyed by the
        architecture): any number of shared writers may run together, and an exclusive writer
        (a scan, whose row count is its target) is refused while one does, and vice versa.
        The first write also migrates a schema-1 store and applies the ``journal`` mode.

        Raises:
            StoreError: the store is read-only, or another writer (named) holds the lock.
        """
        if self.writing:
            return
        conn = self.conn
        if self.readonly:
            raise StoreError(f"store {self.path} is open read-only ({self._ro_reason}): it can be read "
                             "and exported, not written")
        if not _writable(self.path):
            raise StoreError(f"store {self.path} is not writable (the file has no write permission): "
                             "it can be read and exported, not written")
        self._lock.acquire(self.path, shared=shared)
        try:
            if self.schema_version < SCHEMA_VERSION:
                self._migrate()
            if self.journal != self._journal:
                self.journal = str(conn.execute(f"PRAGMA journal_mode={self._journal.upper()}")
                                   .fetchone()[0]).lower()
                conn.execute("PRAGMA synchronous=NORMAL" if self.journal == "wal" else "PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            self._release()
            raise self._wrap(exc) from None
        except BaseException:
            self._release()
            raise
        self.writing = True

    def _release(self) -> None:
        self.writing = False
        self._lock.release()

    def close(self) -> None:
        """Close the connection and release the writer lock (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._release()

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
        return f"ResultStore({str(self.path)!r}{', readonly=True' if getattr(self, 'readonly', False) else ''})"

    def _wrap(self, exc: sqlite3.DatabaseError) -> StoreError:
        text = _one_line([exc])
        if "readonly" in text.replace(" ", "").lower():
            return StoreError(f"{self.path}: cannot write the store ({text}): it is on read-only media "
                              "or lacks permissions; it can still be read with readonly=True")
        return StoreError(f"{self.path}: store read/write failed ({text}); the file may be corrupt")

    def _damaged_error(self, run_id: str, key: Any) -> StoreError:
        return StoreError(f"{self.path}: row {key!r} of run {run_id} is damaged (its checksum does not "
                          "match its stored values; the file was changed outside zcfast): "
                          "ResultStore.verify() lists every damaged row, scan --retry-errors rescores them")

    # ----------------------------------------------------------------- integrity
    def damaged(self, run_id: str | None = None) -> list[tuple[str, str]]:
        """``(run_id, arch_key)`` of every row (of ``run_id``, or of every run) whose checksum
        does not match its values; ``[]`` for a schema-1 store (no checksums to check).
        Streams the rows (memory flat in their number). Undecodable keys are given as ``repr``."""
        if self.schema_version < 2:
            return []
        conn = self.conn
        sql = f"SELECT run_id, {_ROW_COLS}, crc FROM scores" + (" WHERE run_id=?" if run_id is not None else "")
        bad: list[tuple[str, str]] = []
        saved = conn.text_factory
        conn.text_factory = bytes  # decode here, so a mangled text column is reported, not raised
        try:
            for r in conn.execute(sql, () if run_id is None else (run_id,)):
                cols = []
                ok = True
                for c in r[:5]:
                    if isinstance(c, bytes):
                        try:
                            c = c.decode("utf-8")
                        except UnicodeDecodeError:
                            ok = False
                    cols.append(c)
                rid = cols[0] if isinstance(cols[0], str) else repr(cols[0])
                if not ok or not _row_intact(rid, (*cols[1:5], r[5], r[6])):
                    key = cols[1] if isinstance(cols[1], str) else repr(cols[1])
                    bad.append((rid, key))
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None
        finally:
            conn.text_factory = saved
        return bad

    def verify(self) -> list[str]:
        """Check the whole store: SQLite's ``integrity_check``, every run's config against its
        id, every row against its checksum.

        Returns:
            notes that are not damage (a schema-1 store's rows carry no checksum: "legacy,
            unverified"); ``[]`` when everything was verified.

        Raises:
            StoreError: the file is damaged, listing every damaged run and row (run id + arch key).
        """
        try:
            result = [r[0] for r in self.conn.execute("PRAGMA integrity_check(5)")]
            raw_runs = self.conn.execute("SELECT run_id, config FROM runs").fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None
        if result != ["ok"]:
            raise StoreError(f"{self.path} is a corrupt zcfast store: {_one_line(result)}")
        problems = [f"run {rid}: its config does not match its id" for rid, cfg in raw_runs
                    if not (isinstance(cfg, str) and _text_id(cfg) == rid)]
        problems += [f"run {rid} row {key!r}" for rid, key in self.damaged()]
        if problems:
            shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
            raise StoreError(f"{self.path}: {len(problems)} damaged record(s) (checksum mismatch; the file "
                             f"was changed outside zcfast): {shown}")
        if self.schema_version < 2:
            n = int(self.conn.execute("SELECT count(*) FROM scores").fetchone()[0])
            return [f"schema version {self.schema_version}: {n} rows carry no checksums (legacy, "
                    "unverified); the store's first write adds them"]
        return []

    # ----------------------------------------------------------------- runs
    def run_id(self, config: "RunConfig | Mapping[str, Any]") -> str:
        """Register the run of ``config`` (if new) and return its id (see :func:`config_id`).

        ``config`` is a :class:`RunConfig` (what correlate, search and scan use) or a plain
        dict (any other user of the store). Registering is a write (it takes the writer lock);
        on a read-only store the id of an existing run is returned, a new one is refused."""
        if isinstance(config, RunConfig):
            config = config.to_dict()
        rid = config_id(config)
        text = _canonical_json(config)
        if self.readonly:
            if rid not in self.runs():
                raise StoreError(f"store {self.path} is open read-only ({self._ro_reason}) and holds no "
                                 f"run {rid} of this config: a new run cannot be registered")
            return rid
        self.acquire_writer()
        try:
            self.conn.execute("INSERT INTO runs(run_id, config, created) VALUES (?, ?, ?) "
                              "ON CONFLICT(run_id) DO NOTHING", (rid, text, time.time()))
            stored = self.conn.execute("SELECT config FROM runs WHERE run_id=?", (rid,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None
        if stored[0] != text:  # a 64-bit prefix collision, or a damaged record: never mix two configs
            raise StoreError(f"run id {rid} already holds a different config: {stored[0]}")
        return rid

    def _load_config(self, rid: str, text: Any) -> dict[str, Any]:
        if not isinstance(text, str) or _text_id(text) != rid:
            raise StoreError(f"{self.path}: the config of run {rid} is damaged (it does not match the "
                             "run id); the file was changed outside zcfast")
        return json.loads(text)

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every run in the store: run id -> config dict (each checked against its id)."""
        try:
            raw = self.conn.execute("SELECT run_id, config FROM runs ORDER BY created, run_id").fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None
        return {rid: self._load_config(rid, cfg) for rid, cfg in raw}

    def config(self, run_id: str) -> dict[str, Any]:
        """The config dict of ``run_id``; StoreError if unknown."""
        try:
            row = self.conn.execute("SELECT config FROM runs WHERE run_id=?", (run_id,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None
        if row is None:
            raise StoreError(f"unknown run id {run_id!r} in {self.path}")
        return self._load_config(run_id, row[0])

    def _require_run(self, run_id: str) -> None:
        if not isinstance(run_id, str):
            raise StoreError(f"run id must be a str, got {run_id!r}")
        if self.conn.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone() is None:
            raise StoreError(f"unknown run id {run_id!r} in {self.path}; get one from run_id(config)")

    # ----------------------------------------------------------------- rows
    def _to_row(self, run_id: str, r: Sequence[Any]) -> ScoreRow:
        """A stored row as a ScoreRow, its checksum verified (schema 2)."""
        if self.schema_version >= 2 and not _row_intact(run_id, r):
            raise self._damaged_error(run_id, r[0])
        try:
            values = json.loads(r[2])
            return ScoreRow(r[0], r[1], values, r[3], r[4])
        except (ValueError, TypeError) as exc:  # only reachable for unverified legacy rows
            raise StoreError(f"{self.path}: row {r[0]!r} of run {run_id} cannot be read ({exc}); "
                             "the file may be corrupt") from None

    def _select(self) -> str:
        return _ROW_COLS + (", crc" if self.schema_version >= 2 else ", NULL")

    def put_many(self, run_id: str, rows: Iterable[ScoreRow], *, rescore: bool = False) -> int:
        """Write ``rows`` in ONE transaction, upserting by ``(run_id, arch_key)``.

        Either all rows are stored or (process killed, error) none is. A row already stored
        with a damaged checksum is not written over (StoreError naming it) unless
        ``rescore=True`` says the new row is its rescoring. Returns the number of rows written.
        """
        params = []
        for row in rows:
            if not isinstance(row, ScoreRow):
                raise StoreError(f"put_many expects ScoreRow objects, got {type(row).__name__}")
            seconds = float(row.seconds)
            if not math.isfinite(seconds):
                raise StoreError(f"ScoreRow.seconds must be finite, got {row.seconds!r}")
            vals = _encode_values(row.values)
            params.append((run_id, row.arch_key, row.arch_str, vals, row.error, seconds,
                           _row_crc(run_id, row.arch_key, row.arch_str, vals, row.error, seconds)))
        if not params:
            return 0
        self.acquire_writer()
        with self._transaction() as conn:
            self._require_run(run_id)
            if not rescore:
                keys = list({p[1] for p in params})
                for i in range(0, len(keys), 500):
                    part = keys[i:i + 500]
                    for r in conn.execute(f"SELECT {self._select()} FROM scores WHERE run_id=? AND "
                                          f"arch_key IN ({','.join('?' * len(part))})", (run_id, *part)):
                        if not _row_intact(run_id, r):
                            raise StoreError(
                                f"{self.path}: row {r[0]!r} of run {run_id} is damaged; put_many does "
                                "not write over it unless rescore=True (scan --retry-errors)")
            conn.executemany(
                "INSERT INTO scores(run_id, arch_key, arch_str, vals, error, seconds, crc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id, arch_key) DO UPDATE SET "
                "arch_str=excluded.arch_str, vals=excluded.vals, error=excluded.error, "
                "seconds=excluded.seconds, crc=excluded.crc", params)
        return len(params)

    def done_keys(self, run_id: str) -> set[str]:
        """Arch keys already stored for ``run_id`` (scored or failed). O(rows) memory: for
        million-row runs prefer :meth:`has_keys` on bounded batches."""
        self._require_run(run_id)
        try:
            return {r[0] for r in self.conn.execute("SELECT arch_key FROM scores WHERE run_id=?", (run_id,))}
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None

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
        try:
            return int(self.conn.execute(sql, (run_id,)).fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None

    def get(self, run_id: str, arch_key: str) -> ScoreRow | None:
        """The row of ``arch_key`` in ``run_id`` (checksum verified), or None."""
        try:
            r = self.conn.execute(f"SELECT {self._select()} FROM scores WHERE run_id=? AND arch_key=?",
                                  (run_id, arch_key)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._wrap(exc) from None
        return None if r is None else self._to_row(run_id, r)

    def rows(self, run_id: str, *, errors: bool | None = None) -> Iterator[ScoreRow]:
        """Every row of ``run_id`` ordered by arch_key, streamed (memory flat in row count),
        each checked against its checksum (a damaged row raises StoreError naming it).
        ``errors=True``: only rows stored with an error; ``False``: only the others."""
        self._require_run(run_id)
        where = {None: "", True: " AND error IS NOT NULL", False: " AND error IS NULL"}[errors]
        last = ""
        page = 5000
        while True:  # keyset pagination: no long-lived cursor across a caller's writes
            try:
                batch = self.conn.execute(
                    f"SELECT {self._select()} FROM scores WHERE run_id=? AND arch_key>?{where} "
                    "ORDER BY arch_key LIMIT ?", (run_id, last, page)).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._wrap(exc) from None
            for r in batch:
                yield self._to_row(run_id, r)
            if len(batch) < page:
                return
            last = batch[-1][0]

    def delete_rows(self, run_id: str, keys: Iterable[str]) -> int:
        """Remove the rows of ``keys`` from ``run_id`` (one transaction; damaged rows too);
        returns the number removed."""
        keys = list(keys)
        self.acquire_writer()
        n = 0
        with self._transaction() as conn:
            for i in range(0, len(keys), 500):
                part = keys[i:i + 500]
                n += conn.execute(f"DELETE FROM scores WHERE run_id=? AND arch_key IN "
                                  f"({','.join('?' * len(part))})", (run_id, *part)).rowcount
        return n

    def delete_run(self, run_id: str) -> int:
        """Remove a run and its rows (one transaction); returns the number of rows removed."""
        self.acquire_writer()
        with self._transaction() as conn:
            n = conn.execute("DELETE FROM scores WHERE run_id=?", (run_id,)).rowcount
            conn.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
        return n

    def export_parquet(self, run_id: str, path: str | os.PathLike[str], row_group_size: int = 65536,
                       *, overwrite: bool = False) -> int:
        """Write ``run_id`` to a Parquet file; see :func:`export_parquet`."""
        return export_parquet(self, run_id, path, row_group_size=row_group_size, overwrite=overwrite)


# --------------------------------------------------------------------- export
def _is_export_of(path: Path, run_id: str | None) -> bool:
    """Whether ``path`` is a zcfast Parquet export of ``run_id`` (an earlier export to replace)."""
    if not run_id:
        return False
    try:
        import pyarrow.parquet as pq

        meta = pq.read_schema(str(path)).metadata or {}
    except Exception:
        return False
    return meta.get(b"zcfast.run_id") == run_id.encode()


def check_export_target(target: str | os.PathLike[str], *, store: str | os.PathLike[str] | None = None,
                        run_id: str | None = None, overwrite: bool = False) -> Path:
    """Refuse an export target that would lose data; return it as a Path.

    Refused always: the store itself or one of its files (``-wal``, ``-shm``, ``-journal``,
    ``.lock``), by any path (symlink, hard link); a directory; anything that is not a regular
    file; any SQLite database. Refused unless ``overwrite``: an existing file, except an
    earlier zcfast export of the same ``run_id``. ``scan`` calls this before it starts.

    Raises:
        StoreError: one line naming the target and what to do instead.
    """
    if not isinstance(target, (str, os.PathLike)) or not str(target):
        raise StoreError(f"export path must be a file name, got {target!r}")
    p = Path(target)
    if store is not None:
        s = Path(store)
        real = os.path.realpath(s)
        same = os.path.realpath(p) in {real + suffix for suffix in ("", *_SIDECARS)}
        if not same and p.exists():
            for other in (s, *(Path(str(s) + suffix) for suffix in _SIDECARS)):
                try:
                    if other.exists() and os.path.samefile(p, other):
                        same = True
                        break
                except OSError:
                    pass
        if same:
            raise StoreError(f"export path {p} is the store {s} (or one of its files): an export never "
                             "overwrites a store; choose another file name, e.g. scores.parquet")
    if p.is_symlink() or p.exists():
        if p.is_dir():
            raise StoreError(f"export path {p} is a directory: give a file name, e.g. {p / 'scores.parquet'}")
        if not p.is_file():
            raise StoreError(f"export path {p} is not a regular file")
        if _is_sqlite(p):
            raise StoreError(f"export path {p} is an SQLite database (a result store?): an export never "
                             "overwrites one; choose another file name")
        if not overwrite and not _is_export_of(p, run_id):
            raise StoreError(f"export path {p} already exists and is not an export of this run: pass "
                             "overwrite=True (--overwrite) to replace it, or choose another file name")
    elif p.parent.exists() and not p.parent.is_dir():
        raise StoreError(f"export path {p}: {p.parent} is not a directory")
    return p


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def export_parquet(store: ResultStore, run_id: str, path: str | os.PathLike[str],
                   row_group_size: int = 65536, *, overwrite: bool = False) -> int:
    """Export one run to Parquet, streaming row groups (memory flat in the number of rows).

    Columns: ``arch_key`` (string), ``arch``(string, the canonical text), one float64 column
    per proxy (the run config's ``proxies`` when present, else the sorted names seen in the
    first row group; a proxy missing from a row is null), ``error`` (string, null on
    success), ``seconds`` (float64). The run config is stored as JSON in the schema metadata
    under ``zcfast.config`` (and the run id under ``zcfast.run_id``). Returns the row count.

    Safety: the target is checked by :func:`check_export_target` (never the store, a
    directory, an SQLite file; an existing file only with ``overwrite=True`` or when it is an
    earlier export of this run). The rows go to a temporary file in the target's folder,
    which is fsynced and renamed over the target; on any failure (a damaged row, a full disk,
    no permission) the temporary file is removed and a one-line StoreError is raised.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(row_group_size, bool) or not isinstance(row_group_size, int) or row_group_size < 1:
        raise StoreError(f"row_group_size must be an integer >= 1, got {row_group_size!r}")
    target = check_export_target(path, store=store.path, run_id=run_id, overwrite=overwrite)
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

    folder = target.absolute().parent
    tmp: str | None = None
    total = 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            umask = os.umask(0)
            os.umask(umask)
            mode = stat.S_IMODE(target.stat().st_mode) if target.is_file() else 0o666 & ~umask
            os.fchmod(fh.fileno(), mode)
            with pq.ParquetWriter(fh, schema) as writer:
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
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
        _fsync_dir(folder)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, (OSError, pa.ArrowException)):
            reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)).replace("\n", " ")
            raise StoreError(f"cannot export run {run_id} to {target}: {reason}") from None
        raise
    finally:
        it.close()
    return total
