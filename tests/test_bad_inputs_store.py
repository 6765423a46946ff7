"""Bad input to the result store, its exports and scans (issue #11, classes 1, 4, 6, 13).

Table-driven: each case names the problem it feeds in, and checks the error type AND that
the message names the problem. Store files that are refused keep their bytes; refused scans
create nothing (no store, no export). The CLI cases run ``python -m zcfast scan ...`` as a
subprocess: exit status 2, exactly one line on stderr, no traceback. Two behavioural cases
end the file: SIGINT during a scan keeps its committed rows, and a second writer is refused.
"""
from __future__ import annotations

import errno
import hashlib
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from zcfast.parallel import hash_scorer
from zcfast.scan import scan
from zcfast.store import APPLICATION_ID, SCHEMA_VERSION, ResultStore, ScoreRow, StoreError, config_id
from zcfast.testing import committed_rows

ROOT = Path(__file__).resolve().parents[1]
CFG = {"space": "nb201", "seed": 42, "proxies": ["snip", "synflow"]}
DATA = (torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _store(path: Path, n: int = 40, journal: str = "delete") -> str:
    with ResultStore(path, journal=journal) as st:
        rid = st.run_id(CFG)
        st.put_many(rid, [ScoreRow(f"k{i:04d}", f"arch-{i}", {"synflow": i * 0.5, "snip": 1.0 + i},
                                   None, 0.01) for i in range(n)])
    return rid


# ------------------------------------------------------------------ store files
def _text_file(p: Path) -> None:
    p.write_text("hello, this is a text file\n" * 10)


def _magic_prefix(p: Path) -> None:
    p.write_bytes(b"SQLite")


def _truncated_header(p: Path) -> None:
    p.write_bytes(b"SQLite format 3\x00" + b"\x00" * 20)


def _foreign_sqlite(p: Path) -> None:
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE people(name TEXT)")
    conn.execute("INSERT INTO people VALUES ('ada')")
    conn.commit()
    conn.close()


def _foreign_app_id(p: Path) -> None:
    conn = sqlite3.connect(p)
    conn.execute("PRAGMA application_id=1234")
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()


def _newer_schema(p: Path) -> None:
    _store(p)
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


def _no_schema_version(p: Path) -> None:
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()


def _header_without_tables(p: Path) -> None:
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    conn.execute("CREATE TABLE junk(x)")
    conn.commit()
    conn.close()


def _scribbled_pages(p: Path) -> None:
    _store(p, n=3000)
    data = bytearray(p.read_bytes())
    for page in range(2, len(data) // 4096, 2):
        data[page * 4096 + 8: page * 4096 + 200] = b"\xa5" * 192
    p.write_bytes(bytes(data))


def _truncated_store(p: Path) -> None:
    _store(p, n=3000)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _bad_format_tag(p: Path) -> None:
    _store(p)
    conn = sqlite3.connect(p)
    conn.execute("UPDATE meta SET value='something-else' WHERE key='format'")
    conn.commit()
    conn.close()


def _v2_without_crc(p: Path) -> None:
    _store(p)
    conn = sqlite3.connect(p)
    conn.execute("ALTER TABLE scores DROP COLUMN crc")
    conn.commit()
    conn.close()


# (id, make the file, exception, text the message must contain)
FILE_CASES = [
    ("text-file", _text_file, StoreError, "not an SQLite database"),
    ("sqlite-magic-prefix-only", _magic_prefix, StoreError, "not an SQLite database"),
    ("truncated-header", _truncated_header, StoreError, "not an SQLite database"),
    ("foreign-sqlite", _foreign_sqlite, StoreError, "another application"),
    ("foreign-application-id", _foreign_app_id, StoreError, "application_id=0x4d2"),
    ("newer-schema", _newer_schema, StoreError, f"schema version {SCHEMA_VERSION + 1}, newer than this zcfast"),
    ("app-id-without-schema-version", _no_schema_version, StoreError, "no schema version"),
    ("zcfast-header-without-tables", _header_without_tables, StoreError, "missing tables"),
    ("scribbled-pages", _scribbled_pages, StoreError, "corrupt"),
    ("truncated-store", _truncated_store, StoreError, "malformed"),
    ("bad-format-tag", _bad_format_tag, StoreError, "bad format tag"),
    ("schema-2-without-checksums", _v2_without_crc, StoreError, "lacks columns ['crc']"),
]


@pytest.mark.parametrize("make, exc, text", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
@pytest.mark.parametrize("readonly", [None, True], ids=["writable", "readonly"])
def test_bad_store_file_refused_bytes_unchanged(tmp_path: Path, make: Callable[[Path], None], exc: type,
                                               text: str, readonly: bool | None) -> None:
    path = tmp_path / "x.sqlite"
    make(path)
    before = _digest(path)
    names = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(exc, match=None) as info:
        ResultStore(path, readonly=readonly)
    assert text in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no -wal/-journal/.lock made


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _empty(p: Path) -> None:
    p.touch()


OPEN_CASES: list[tuple[str, Callable[[Path], None] | None, dict[str, Any], type, str]] = [
    ("store-is-a-directory", lambda p: p.mkdir(), {}, StoreError, "is a directory"),
    ("store-is-a-fifo", _fifo, {}, StoreError, "not a regular file"),
    ("empty-file-create-false", _empty, {"create": False}, StoreError, "empty file"),
    ("missing-file-create-false", None, {"create": False}, FileNotFoundError, "no zcfast store"),
    ("missing-file-readonly", None, {"readonly": True}, FileNotFoundError, "no zcfast store"),
    ("empty-file-readonly", _empty, {"readonly": True}, StoreError, "cannot be initialised"),
    ("journal-memory", None, {"journal": "memory"}, StoreError, "journal must be 'wal' or 'delete'"),
    ("readonly-not-a-bool", None, {"readonly": "yes"}, StoreError, "readonly must be True, False or None"),
]


@pytest.mark.parametrize("make, kwargs, exc, text", [c[1:] for c in OPEN_CASES], ids=[c[0] for c in OPEN_CASES])
def test_bad_open_refused(tmp_path: Path, make: Callable[[Path], None] | None, kwargs: dict[str, Any],
                          exc: type, text: str) -> None:
    path = tmp_path / "x.sqlite"
    if make is not None:
        make(path)
    with pytest.raises(exc) as info:
        ResultStore(path, **kwargs)
    assert text in str(info.value)
    if make is None:
        assert not path.exists()


# ------------------------------------------------------------------ rows and runs
def _row(**kw: Any) -> ScoreRow:
    base = {"arch_key": "k", "arch_str": "a", "values": {"synflow": 1.0}, "error": None, "seconds": 0.0}
    return ScoreRow(**{**base, **kw})


ROW_CASES = [
    ("arch-key-empty", lambda: _row(arch_key=""), "ScoreRow.arch_key must be a non-empty str"),
    ("arch-key-int", lambda: _row(arch_key=3), "ScoreRow.arch_key must be a non-empty str"),
    ("arch-str-none", lambda: _row(arch_str=None), "ScoreRow.arch_str must be a str"),
    ("values-a-list", lambda: _row(values=[1.0]), "ScoreRow.values must be a dict"),
    ("error-an-int", lambda: _row(error=1), "ScoreRow.error must be str or None"),
    ("seconds-text", lambda: _row(seconds="1s"), "ScoreRow.seconds must be a number"),
]


@pytest.mark.parametrize("make, text", [c[1:] for c in ROW_CASES], ids=[c[0] for c in ROW_CASES])
def test_bad_score_row(make: Callable[[], ScoreRow], text: str) -> None:
    with pytest.raises(StoreError, match=None) as info:
        make()
    assert text in str(info.value)


PUT_CASES = [
    ("value-text", lambda rid: [_row(values={"synflow": "abc"})], "value of proxy 'synflow' is not a number"),
    ("value-bool", lambda rid: [_row(values={"synflow": True})], "value of proxy 'synflow' is not a number"),
    ("proxy-name-int", lambda rid: [_row(values={3: 1.0})], "proxy name must be a non-empty str"),
    ("seconds-nan", lambda rid: [_row(seconds=math.nan)], "ScoreRow.seconds must be finite"),
    ("not-a-score-row", lambda rid: [{"arch_key": "k"}], "put_many expects ScoreRow objects, got dict"),
    ("unknown-run", lambda rid: "unknown", "unknown run id '0123456789abcdef'"),
]


@pytest.mark.parametrize("rows, text", [c[1:] for c in PUT_CASES], ids=[c[0] for c in PUT_CASES])
def test_bad_put_many_writes_nothing(tmp_path: Path, rows: Callable[[str], Any], text: str) -> None:
    with ResultStore(tmp_path / "s.sqlite") as st:
        rid = st.run_id(CFG)
        good = [_row(arch_key=f"g{i}") for i in range(3)]
        batch = rows(rid)
        target = rid
        if batch == "unknown":
            batch, target = good, "0123456789abcdef"
        with pytest.raises(StoreError) as info:
            st.put_many(target, good + list(batch))
        assert text in str(info.value)
        assert st.conn.execute("SELECT count(*) FROM scores").fetchone()[0] == 0  # all or nothing


RUN_CASES = [
    ("config-empty", {}, "run config must be a non-empty dict"),
    ("config-object", {"space": object()}, "is not JSON-serialisable"),
    ("config-nan", {"seed": math.nan}, "run config cannot be stored"),
    ("config-not-a-dict", ["nb201"], "run config must be a non-empty dict"),
]


@pytest.mark.parametrize("config, text", [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])
def test_bad_run_config(tmp_path: Path, config: Any, text: str) -> None:
    with ResultStore(tmp_path / "s.sqlite") as st:
        with pytest.raises(StoreError) as info:
            st.run_id(config)
        assert text in str(info.value)
        assert st.runs() == {}


# ------------------------------------------------------------------ damage, read-only, second writer
def _damage(p: Path, what: str) -> None:
    """Change bytes SQLite cannot notice: one stored value (row k0003) or the run's config."""
    old, new = {"row": (b'"snip": 4.0, "synflow": 1.5', b'"snip": 4.0, "synflow": 9.5'),
                "config": (b'"seed":42', b'"seed":41')}[what]
    data = p.read_bytes()
    assert data.count(old) == 1
    p.write_bytes(data.replace(old, new))


STATE_CASES = [
    ("damaged-row-get", lambda st, rid: st.get(rid, "k0003"), "row 'k0003' of run", "row"),
    ("damaged-row-rows", lambda st, rid: list(st.rows(rid)), "row 'k0003' of run", "row"),
    ("damaged-row-verify", lambda st, rid: st.verify(), f"run {config_id(CFG)} row 'k0003'", "row"),
    ("damaged-row-overwritten", lambda st, rid: st.put_many(rid, [_row(arch_key="k0003")]),
     "put_many does not write over it", "row"),
    ("damaged-row-export", lambda st, rid: st.export_parquet(rid, st.path.with_name("x.parquet")),
     "row 'k0003' of run", "row"),
    ("damaged-config-runs", lambda st, rid: st.runs(), f"the config of run {config_id(CFG)} is damaged", "config"),
    ("damaged-config-read", lambda st, rid: st.config(rid), "does not match the run id", "config"),
    ("damaged-config-verify", lambda st, rid: st.verify(), "its config does not match its id", "config"),
]


@pytest.mark.parametrize("action, text, what", [c[1:] for c in STATE_CASES], ids=[c[0] for c in STATE_CASES])
def test_damaged_store_reported(tmp_path: Path, action: Callable[[ResultStore, str], Any], text: str,
                                what: str) -> None:
    path = tmp_path / "s.sqlite"
    rid = _store(path)
    _damage(path, what)
    st = ResultStore(path)
    try:
        with pytest.raises(StoreError) as info:
            action(st, rid)
        assert text in str(info.value) and "\n" not in str(info.value)
    finally:
        st.close()
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".*.tmp"))


def _chmod_ro(p: Path) -> None:
    p.chmod(0o444)


WRITE_CASES = [
    ("readonly-put-many", {"readonly": True}, None, lambda st, rid: st.put_many(rid, [_row()]), "open read-only"),
    ("readonly-delete-run", {"readonly": True}, None, lambda st, rid: st.delete_run(rid), "open read-only"),
    ("readonly-new-run", {"readonly": True}, None, lambda st, rid: st.run_id({"new": 1}), "a new run cannot be registered"),
    ("no-write-permission", {}, _chmod_ro, lambda st, rid: st.put_many(rid, [_row()]), "the file has no write permission"),
    ("second-writer-same-process", {}, "writer", lambda st, rid: st.put_many(rid, [_row()]),
     f"is being written by process {os.getpid()}"),
]


@pytest.mark.parametrize("kwargs, prepare, action, text", [c[1:] for c in WRITE_CASES], ids=[c[0] for c in WRITE_CASES])
def test_refused_writes_change_nothing(tmp_path: Path, kwargs: dict[str, Any], prepare: Any,
                                       action: Callable[[ResultStore, str], Any], text: str) -> None:
    path = tmp_path / "s.sqlite"
    rid = _store(path, journal="wal")
    holder = None
    if prepare == "writer":
        holder = ResultStore(path)
        holder.acquire_writer()
    elif prepare is not None:
        prepare(path)
    before = _digest(path)
    try:
        with ResultStore(path, **kwargs) as st:
            with pytest.raises(StoreError) as info:
                action(st, rid)
            assert text in str(info.value)
            assert st.count(rid) == 40
    finally:
        if holder is not None:
            holder.close()
        path.chmod(0o644)
    assert _digest(path) == before


# ------------------------------------------------------------------ exports
def _export_target(tmp_path: Path, store: Path, kind: str) -> Path:
    if kind == "store":
        return store
    if kind == "store-by-other-path":
        return tmp_path / "sub" / ".." / store.name
    if kind == "symlink-to-store":
        (tmp_path / "link.sqlite").symlink_to(store)
        return tmp_path / "link.sqlite"
    if kind == "hardlink-to-store":
        (tmp_path / "hard.sqlite").hardlink_to(store)
        return tmp_path / "hard.sqlite"
    if kind == "store-lock-file":
        return Path(str(store) + ".lock")
    if kind == "directory":
        (tmp_path / "outdir").mkdir()
        return tmp_path / "outdir"
    if kind in ("existing-file", "existing-file-overwrite-false"):
        (tmp_path / "notes.txt").write_text("keep me")
        return tmp_path / "notes.txt"
    if kind == "other-store-even-with-overwrite":
        _store(tmp_path / "other.sqlite")
        return tmp_path / "other.sqlite"
    if kind == "parent-is-a-file":
        (tmp_path / "afile").write_text("x")
        return tmp_path / "afile" / "x.parquet"
    raise AssertionError(kind)


EXPORT_CASES = [
    ("store", "is the store"),
    ("store-by-other-path", "is the store"),
    ("symlink-to-store", "is the store"),
    ("hardlink-to-store", "is the store"),
    ("store-lock-file", "is the store"),
    ("directory", "is a directory"),
    ("existing-file", "already exists and is not an export of this run"),
    ("other-store-even-with-overwrite", "is an SQLite database"),
    ("parent-is-a-file", "is not a directory"),
]


@pytest.mark.parametrize("kind, text", EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_export_target_refused_nothing_changed(tmp_path: Path, kind: str, text: str) -> None:
    (tmp_path / "sub").mkdir()
    store = tmp_path / "s.sqlite"
    rid = _store(store)
    target = _export_target(tmp_path, store, kind)
    files = {p: _digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    with ResultStore(store) as st:
        with pytest.raises(StoreError) as info:
            st.export_parquet(rid, target, overwrite=kind.endswith("with-overwrite"))
    assert text in str(info.value)
    assert {p: _digest(p) for p in tmp_path.rglob("*") if p.is_file()} == files  # nothing written
    with ResultStore(store, readonly=True) as st:
        assert st.count(rid) == 40 and st.verify() == []


def _no_space(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)


def _read_only_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod -w does not stop root: refuse the temporary file as a read-only folder does
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def _write_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    def broken(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", broken)


FAULT_CASES = [
    ("disk-full", _no_space, "No space left on device"),
    ("read-only-folder", _read_only_folder, "Permission denied"),
    ("io-error-mid-write", _write_fails, "Input/output error"),
]


@pytest.mark.parametrize("fault, text", [c[1:] for c in FAULT_CASES], ids=[c[0] for c in FAULT_CASES])
def test_export_fault_leaves_no_tmp_and_old_export_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          fault: Callable[[pytest.MonkeyPatch], None],
                                                          text: str) -> None:
    pytest.importorskip("pyarrow")
    store = tmp_path / "s.sqlite"
    rid = _store(store)
    old = tmp_path / "x.parquet"
    with ResultStore(store) as st:
        st.export_parquet(rid, old)
        before = _digest(old)
        fault(monkeypatch)
        for target in (old, tmp_path / "new.parquet"):
            with pytest.raises(StoreError) as info:
                st.export_parquet(rid, target)
            assert f"cannot export run {rid} to {target}: {text}" == str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite", "s.sqlite.lock", "x.parquet"]
    assert _digest(old) == before


# ------------------------------------------------------------------ scan arguments (Python API)
SCAN_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("proxy-typo", {"proxies": "synflo"}, "unknown proxy 'synflo' (did you mean 'synflow'?)"),
    ("proxy-vote", {"proxies": "vote"}, "'vote' is not a per-network proxy"),
    ("proxies-empty", {"proxies": []}, "proxies is empty"),
    ("proxy-not-a-string", {"proxies": ["synflow", 3]}, "proxy names must be strings"),
    ("space-unknown", {"space": "nb999"}, "unknown search space 'nb999'"),
    ("device-meta", {"device": "meta"}, "device type 'meta' is not supported"),
    ("device-junk", {"device": "banana"}, "'banana' is not a device"),
    ("backend-unknown", {"backend": "threads"}, "unknown backend 'threads'"),
    ("order-unknown", {"order": "random"}, "order must be 'sample' or 'enumerate'"),
    ("n-negative", {"n": -1}, "n must be an integer >= 0, got -1"),
    ("n-float", {"n": 1.5}, "n must be an integer >= 0, got 1.5"),
    ("workers-zero", {"workers": 0}, "workers must be an integer >= 1, got 0"),
    ("chunk-size-zero", {"chunk_size": 0}, "chunk_size must be an integer >= 1, got 0"),
    ("commit-rows-zero", {"commit_rows": 0}, "commit_rows must be an integer >= 1, got 0"),
    ("commit-seconds-zero", {"commit_seconds": 0}, "commit_seconds must be a number > 0"),
    ("seed-text", {"seed": "42"}, "seed must be an integer"),
    ("dataset-unknown", {"dataset": "svhn", "data": None}, "unknown dataset 'svhn'"),
    ("batch-size-zero", {"batch_size": 0, "data": None}, "batch_size must be an integer >= 1, got 0"),
    ("num-classes-unknown", {"dataset": "mnist"}, "num_classes unknown for dataset 'mnist'"),
    ("num-classes-one", {"num_classes": 1}, "num_classes must be an integer >= 2, got 1"),
    ("data-bad-shape", {"data": (torch.zeros(3, 8), torch.zeros(3))}, "data must be x [B,C,H,W] and y [B]"),
    ("data-float-labels", {"data": (torch.zeros(2, 3, 8, 8), torch.zeros(2))}, "y must hold integer class labels"),
    ("data-int-images", {"data": (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.long))},
     "x must be a floating-point tensor"),
    ("address-without-ray", {"address": "head:6379"}, "address (--address) only applies to backend 'ray'"),
    ("retry-errors-not-bool", {"retry_errors": "yes"}, "retry_errors must be True or False"),
    ("scorer-not-callable", {"scorer": 3}, "scorer must be a function"),
    ("scorer-unpicklable", {"scorer": lambda *a, **k: {}, "backend": "local"}, "cannot be sent to local workers"),
    ("batch-scorer-text", {"batch_scorer": "fast"}, "batch_scorer must be 'auto', a callable or None"),
    ("export-is-the-store", {"export": "STORE"}, "is the store"),
    ("export-is-a-directory", {"export": "DIR"}, "is a directory"),
    ("infinite-space-without-n", {"space": "INFINITE", "n": None}, "is infinite: give n"),
]


class _Infinite:
    """A space with no finite size."""

    name = "infinite"

    def __getattr__(self, name: str) -> Any:
        if name in ("sample", "key", "encode", "decode", "build"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def size(self) -> None:
        return None


@pytest.mark.parametrize("kwargs, text", [c[1:] for c in SCAN_CASES], ids=[c[0] for c in SCAN_CASES])
def test_bad_scan_argument_refused_before_any_work(tmp_path: Path, kwargs: dict[str, Any], text: str) -> None:
    store = tmp_path / "s.sqlite"
    args: dict[str, Any] = {"space": "nb201", "proxies": "synflow,snip", "n": 5, "store": store, "data": DATA,
                            "backend": "serial", "scorer": hash_scorer, "progress": False, **kwargs}
    if args.get("export") == "STORE":
        args["export"] = store
    elif args.get("export") == "DIR":
        args["export"] = tmp_path
    if args["space"] == "INFINITE":
        args["space"] = _Infinite()
    with pytest.raises(ValueError) as info:
        scan(args.pop("space"), args.pop("proxies"), args.pop("n"), **args)
    assert text in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    assert not store.exists()  # refused before any work: no store was created


# ------------------------------------------------------------------ scan arguments (CLI)
def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}


BASE = ["--n", "3", "--scorer", "zcfast.parallel:hash_scorer", "--backend", "serial", "--quiet", "--store", "s.sqlite"]
CLI_CASES = [
    ("proxy-typo", ["--proxies", "synflo"], "unknown proxy 'synflo' (did you mean 'synflow'?)"),
    ("proxy-vote", ["--proxies", "vote"], "'vote' is not a per-network proxy"),
    ("device-meta", ["--proxies", "synflow", "--device", "meta"], "device type 'meta' is not supported"),
    ("export-is-the-store", ["--proxies", "synflow", "--export", "s.sqlite"], "is the store"),
    ("export-is-a-directory", ["--proxies", "synflow", "--export", "."], "is a directory"),
    ("overwrite-without-export", ["--proxies", "synflow", "--overwrite"], "--overwrite only applies with --export"),
    ("workers-zero", ["--proxies", "synflow", "--workers", "0"], "--workers must be an integer >= 1, got 0"),
    ("n-negative", ["--proxies", "synflow", "--n", "-3"], "--n must be a non-negative integer or 'all'"),
    ("backend-unknown", ["--proxies", "synflow", "--backend", "threads"], "invalid choice: 'threads'"),
    ("dataset-unknown", ["--proxies", "synflow", "--dataset", "svhn"], "unknown dataset 'svhn'"),
    ("address-without-ray", ["--proxies", "synflow", "--address", "head:6379"], "--address only applies to --backend ray"),
    ("scorer-missing-module", ["--proxies", "synflow", "--scorer", "nomodule_xyz:f"], "cannot import scorer module"),
    ("store-not-a-database", ["--proxies", "synflow", "--store", "notes.txt"], "not an SQLite database"),
]


@pytest.mark.parametrize("argv, text", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_scan_bad_argument_one_line_exit_2(tmp_path: Path, argv: list[str], text: str) -> None:
    (tmp_path / "notes.txt").write_text("not a database, keep me")
    done = subprocess.run([sys.executable, "-m", "zcfast", "scan", *BASE, *argv], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert text in lines[-1]
    if not lines[0].startswith("usage:"):  # argparse's own errors come after its usage lines
        assert len(lines) == 1, lines
    assert not (tmp_path / "s.sqlite").exists()
    assert (tmp_path / "notes.txt").read_text() == "not a database, keep me"


# ------------------------------------------------------------------ signals and concurrency


def _cmd(store: Path, n: int) -> list[str]:
    return [sys.executable, "-m", "zcfast", "scan", "--space", "nb201", "--proxies", "synflow,snip", "--n", str(n),
            "--store", str(store), "--scorer", "zcfast.parallel:hash_scorer", "--backend", "serial", "--quiet",
            "--commit-rows", "1"]


@pytest.mark.parametrize("case", ["sigint-keeps-committed-rows", "second-writer-refused-while-first-runs"])
def test_signal_and_concurrency(tmp_path: Path, case: str) -> None:
    store, hold = tmp_path / "s.sqlite", tmp_path / "hold"
    hold.touch()  # the scan scores 5 candidates (4 committed: chunks of 4), then waits, the lock held
    proc = subprocess.Popen(_cmd(store, 40), env=_env(ZCFAST_HASH_SCORER_HOLD=str(hold),
                                                      ZCFAST_HASH_SCORER_HOLD_AFTER="5"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while committed_rows(store) < 4:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        if case == "second-writer-refused-while-first-runs":
            other = subprocess.run(_cmd(store, 40), env=_env(), capture_output=True, text=True, timeout=300)
            assert other.returncode == 2 and "Traceback" not in other.stderr
            assert f"being written by process {proc.pid}" in other.stderr.strip().splitlines()[-1]
            hold.unlink()
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            assert committed_rows(store) == 40
            return
        stored = committed_rows(store)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 130 and "Traceback" not in err
        assert "interrupted; scored candidates are in the store" in err
        with ResultStore(store) as st:
            assert st.verify() == []
            (rid,) = st.runs()
            assert st.count(rid) >= stored  # nothing committed was lost
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    hold.unlink()
    done = subprocess.run(_cmd(store, 40), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "40 candidates" in done.stdout
    assert committed_rows(store) == 40
