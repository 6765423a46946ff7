"""Tests of zcfast.store: round trips, run separation, refusal of foreign/corrupt files,
atomic batches under SIGKILL, Parquet export."""
from __future__ import annotations

import hashlib
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from zcfast.store import (APPLICATION_ID, SCHEMA_VERSION, ResultStore, ScoreRow, StoreError,
                          config_id)
from zcfast.testing import committed_rows

CFG = {"space": "nb201", "dataset": "cifar10", "batch_size": 64, "seed": 42,
       "proxies": ["synflow", "jacob_cov"]}


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _rows(n: int, start: int = 0) -> list[ScoreRow]:
    return [ScoreRow(f"k{i:06d}", f"arch-{i}", {"synflow": i * 0.5, "jacob_cov": -float(i)},
                     None, 0.01 * i) for i in range(start, start + n)]


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    rows = _rows(7) + [
        ScoreRow("knan", "a-nan", {"synflow": math.nan, "jacob_cov": math.inf}, None, 0.0),
        ScoreRow("kerr", "a-err", {}, "RuntimeError: out of memory", 1.5),
        ScoreRow("ktiny", "a-tiny", {"synflow": 1e-308, "jacob_cov": 0.1 + 0.2}, None, 2.0),
    ]
    with ResultStore(path) as store:
        rid = store.run_id(CFG)
        assert store.put_many(rid, rows) == len(rows)
        assert store.journal == "wal"
    with ResultStore(path, create=False) as store:
        assert store.runs() == {rid: CFG}
        assert store.config(rid) == CFG
        got = {r.arch_key: r for r in store.rows(rid)}
        assert [r.arch_key for r in store.rows(rid)] == sorted(got)  # ordered by key
        assert set(got) == {r.arch_key for r in rows}
        for r in rows:
            g = got[r.arch_key]
            assert (g.arch_str, g.error, g.seconds) == (r.arch_str, r.error, r.seconds)
            assert set(g.values) == set(r.values)
            for name, value in r.values.items():  # bit-exact float round trip, NaN kept
                assert (math.isnan(value) and math.isnan(g.values[name])) or g.values[name] == value
        assert store.count(rid) == 10 and store.count(rid, errors=True) == 1
        assert store.count(rid, errors=False) == 9
        assert store.done_keys(rid) == set(got)
        assert store.has_keys(rid, ["k000003", "nope", "kerr"]) == {"k000003", "kerr"}
        assert store.get(rid, "kerr").error == "RuntimeError: out of memory"
        assert store.get(rid, "missing") is None
        store.verify()


def test_application_id_and_version_in_header(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_runs_keyed_by_config_never_mix(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "s.sqlite") as store:
        a = store.run_id(CFG)
        b = store.run_id({**CFG, "seed": 43})
        c = store.run_id({**CFG, "proxies": ["jacob_cov", "synflow"]})  # list order matters
        assert len({a, b, c}) == 3
        assert store.run_id(dict(reversed(list(CFG.items())))) == a  # key order does not
        assert config_id({**CFG, "proxies": ("synflow", "jacob_cov")}) == a  # tuple == list
        store.put_many(a, _rows(3))
        store.put_many(b, _rows(2, start=10))
        assert store.count(a) == 3 and store.count(b) == 2 and store.count(c) == 0
        assert {r.arch_key for r in store.rows(b)} == {"k000010", "k000011"}
        assert store.delete_run(b) == 2
        assert set(store.runs()) == {a, c}


def test_upsert_never_duplicates(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "s.sqlite") as store:
        rid = store.run_id(CFG)
        store.put_many(rid, _rows(5))
        store.put_many(rid, _rows(5, start=3))  # overlaps k3, k4
        replaced = ScoreRow("k000001", "arch-1b", {"synflow": 9.0}, "ValueError: x", 3.0)
        store.put_many(rid, [replaced])
        assert store.count(rid) == 8
        assert store.get(rid, "k000001") == replaced
        raw = store.conn.execute("SELECT count(*), count(DISTINCT arch_key) FROM scores").fetchone()
        assert raw == (8, 8)


def test_put_many_is_all_or_nothing(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "s.sqlite") as store:
        rid = store.run_id(CFG)
        bad = _rows(3) + [ScoreRow("kbad", "a", {"synflow": "not a number"})]  # type: ignore[dict-item]
        with pytest.raises(StoreError, match="synflow"):
            store.put_many(rid, bad)
        assert store.count(rid) == 0
        with pytest.raises(StoreError, match="unknown run id"):
            store.put_many("0123456789abcdef", _rows(2))
        assert store.conn.execute("SELECT count(*) FROM scores").fetchone()[0] == 0


def test_bad_input_named(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(StoreError, match="non-empty dict"):
            store.run_id({})
        with pytest.raises(StoreError, match="not JSON-serialisable"):
            store.run_id({"space": object()})
        with pytest.raises(StoreError, match="unknown run id"):
            list(store.rows("nope"))
        with pytest.raises(StoreError, match="arch_key"):
            ScoreRow("", "a", {})
        with pytest.raises(StoreError, match="journal"):
            ResultStore(tmp_path / "t.sqlite", journal="memory")
    with pytest.raises(FileNotFoundError):
        ResultStore(tmp_path / "absent.sqlite", create=False)
    assert not (tmp_path / "absent.sqlite").exists()
    with pytest.raises(StoreError, match="directory"):
        ResultStore(tmp_path)
    with pytest.raises(StoreError, match="closed"):
        store.count("x")


def test_plain_journal_mode(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "s.sqlite", journal="delete") as store:
        assert store.journal == "delete"
        rid = store.run_id(CFG)
        store.put_many(rid, _rows(4))
    with ResultStore(tmp_path / "s.sqlite", journal="delete") as store:
        assert store.count(rid) == 4


def test_missing_parent_directories_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "s.sqlite"
    with ResultStore(path) as store:
        store.put_many(store.run_id(CFG), _rows(2))
    assert path.is_file()


def test_empty_file_is_initialised_only_when_creating(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    with pytest.raises(StoreError, match="empty file"):
        ResultStore(path, create=False)
    with ResultStore(path) as store:
        store.put_many(store.run_id(CFG), _rows(1))


@pytest.mark.parametrize("content", [
    b"hello, this is a text file\n" * 10,
    b"",  # replaced below by a short non-empty prefix of the SQLite magic
    b"SQLite format 3\x00" + b"\x00" * 20,  # truncated header
])
def test_non_sqlite_file_refused_and_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.sqlite"
    path.write_bytes(content or b"SQLite")
    before = _digest(path)
    with pytest.raises(StoreError, match="not an SQLite database"):
        ResultStore(path)
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.sqlite"]  # no -wal/-journal made


def test_foreign_sqlite_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "foreign.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE people(name TEXT)")
    conn.execute("INSERT INTO people VALUES ('ada')")
    conn.commit()
    conn.close()
    before = _digest(path)
    with pytest.raises(StoreError, match="another application"):
        ResultStore(path)
    assert _digest(path) == before
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM people").fetchall() == [("ada",)]
    conn.close()


def test_foreign_application_id_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id=1234")
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="another application.*0x4d2"):
        ResultStore(path)


def test_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    ResultStore(path, journal="delete").close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = _digest(path)
    with pytest.raises(StoreError, match="newer than this zcfast"):
        ResultStore(path)
    assert _digest(path) == before


def _make_big_store(path: Path, n: int = 3000) -> None:
    with ResultStore(path, journal="delete") as store:
        rid = store.run_id(CFG)
        store.put_many(rid, _rows(n))


def test_corrupt_store_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _make_big_store(path)
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    page = 4096
    for p in range(2, len(data) // page, 2):  # scribble over every other page after the first
        data[p * page + 8: p * page + 200] = os.urandom(192)
    path.write_bytes(bytes(data))
    before = _digest(path)
    with pytest.raises(StoreError, match="corrupt|not a usable|malformed"):
        ResultStore(path)
    assert _digest(path) == before


def test_zcfast_header_without_tables_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    conn.execute("CREATE TABLE junk(x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="missing tables"):
        ResultStore(path)


def test_truncated_store_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _make_big_store(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError):
        ResultStore(path)


_WRITER = textwrap.dedent("""
    import sys, time
    from zcfast.store import ResultStore, ScoreRow
    store = ResultStore(sys.argv[1])
    rid = store.run_id({"space": "nb201", "seed": 0})
    print(rid, flush=True)
    b = 0
    while True:
        rows = [ScoreRow(f"k{b:05d}-{i:03d}", "a" * 200, {"p": float(b * 1000 + i)}, None, 0.0)
                for i in range(100)]
        store.put_many(rid, rows)
        b += 1
""")


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sigkill_mid_write_loses_at_most_the_batch_in_flight(tmp_path: Path, journal: str) -> None:
    path = tmp_path / "s.sqlite"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.replace("ResultStore(sys.argv[1])",
                                      f"ResultStore(sys.argv[1], journal={journal!r})"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for delay in (0.15, 0.4, 0.05):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], env=env,
                                stdout=subprocess.PIPE, text=True)
        rid = proc.stdout.readline().strip()
        before = committed_rows(path)
        while committed_rows(path) <= before:  # a new batch is committed: the writer is in its loop
            assert proc.poll() is None, "the writer died"
            time.sleep(0.005)
        time.sleep(delay)  # then anywhere in its write cycle (no timing is asserted)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with ResultStore(path, journal=journal) as store:
            store.verify()
            counts = store.conn.execute(
                "SELECT substr(arch_key, 1, 6), count(*) FROM scores WHERE run_id=? "
                "GROUP BY 1", (rid,)).fetchall()
            # every batch is complete (100 rows) or absent: never a partial batch
            assert counts and all(n == 100 for _, n in counts), counts
            for r in store.rows(rid):
                b, i = int(r.arch_key[1:6]), int(r.arch_key[7:])
                assert r.values == {"p": float(b * 1000 + i)}


def test_concurrent_reader_sees_committed_batches(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ResultStore(path) as writer, ResultStore(path) as reader:
        rid = writer.run_id(CFG)
        writer.put_many(rid, _rows(10))
        assert reader.count(rid) == 10
        writer.put_many(rid, _rows(10, start=10))
        assert reader.count(rid) == 20


def test_export_parquet(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import json

    path = tmp_path / "s.sqlite"
    with ResultStore(path) as store:
        rid = store.run_id(CFG)
        rows = _rows(25) + [ScoreRow("kerr", "a-err", {}, "boom", 0.5),
                            ScoreRow("knan", "a-nan", {"synflow": math.nan}, None, 0.0)]
        store.put_many(rid, rows)
        out = tmp_path / "out.parquet"
        assert store.export_parquet(rid, out, row_group_size=10) == 27
        empty = store.run_id({**CFG, "seed": 1})
        assert store.export_parquet(empty, tmp_path / "empty.parquet") == 0
    f = pq.ParquetFile(out)
    assert f.num_row_groups == 3
    table = f.read()
    assert table.column_names == ["arch_key", "arch", "synflow", "jacob_cov", "error", "seconds"]
    meta = table.schema.metadata
    assert json.loads(meta[b"zcfast.config"]) == CFG and meta[b"zcfast.run_id"].decode() == rid
    d = table.to_pydict()
    by_key = {k: i for i, k in enumerate(d["arch_key"])}
    for r in rows:
        i = by_key[r.arch_key]
        assert d["arch"][i] == r.arch_str and d["error"][i] == r.error
        assert d["seconds"][i] == r.seconds
        for name in ("synflow", "jacob_cov"):
            want = r.values.get(name)
            got = d[name][i]
            if want is None:
                assert got is None
            elif math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == want
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------- one writer
_HOLDER = textwrap.dedent("""
    import sys, time
    from zcfast.store import ResultStore
    store = ResultStore(sys.argv[1])
    store.run_id({"space": "nb201", "seed": 0})   # a write: takes the writer lock
    print("locked", flush=True)
    time.sleep(600)
""")


def _start_holder(tmp_path: Path, path: Path) -> subprocess.Popen:
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, str(script), str(path)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_refused_naming_the_first(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ResultStore(path) as st:
        st.put_many(st.run_id(CFG), _rows(3))
    proc = _start_holder(tmp_path, path)
    try:
        with ResultStore(path) as st:  # opening and reading need no lock
            rid = config_id(CFG)
            assert st.count(rid) == 3 and len(list(st.rows(rid))) == 3
            assert not st.writing
            with pytest.raises(StoreError, match=rf"being written by process {proc.pid} \(.*holder\.py"):
                st.put_many(rid, _rows(1, start=9))
            with pytest.raises(StoreError, match="being written by process"):
                st.run_id({"space": "other"})
            assert st.count(rid) == 3
            out = tmp_path / "x.parquet"
            assert st.export_parquet(rid, out) == 3  # export is a read
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    with ResultStore(path) as st:  # the lock died with its holder
        st.put_many(config_id(CFG), _rows(1, start=9))
        assert st.writing and st.count(config_id(CFG)) == 4


def test_writer_lock_is_per_store_object_and_released_on_close(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    a = ResultStore(path)
    rid = a.run_id(CFG)
    with ResultStore(path) as b:
        with pytest.raises(StoreError, match=f"being written by process {os.getpid()}"):
            b.put_many(rid, _rows(1))
    link = tmp_path / "alias.sqlite"
    link.symlink_to(path)
    with ResultStore(link) as d:  # the lock is on the real path: a symlink is the same store
        with pytest.raises(StoreError, match="being written"):
            d.acquire_writer()
    a.close()
    with ResultStore(path) as e:
        e.put_many(rid, _rows(2))
        assert e.count(rid) == 2


def test_forked_child_does_not_hold_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    st = ResultStore(path)
    rid = st.run_id(CFG)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its inherited lock descriptor was closed at fork
        os.close(r)
        os.write(w, b"1")  # os.fork() returned here, so the at-fork handler has run
        time.sleep(30)
        os._exit(0)
    try:
        os.close(w)
        # wait for the child to be past fork: until its handler runs, the child's copy of the
        # descriptor holds the lock (a window of microseconds that a loaded CI machine widens)
        assert os.read(r, 1) == b"1"
        st.close()  # the parent lets go: the child must not keep the store locked
        with ResultStore(path) as again:
            again.put_many(rid, _rows(1))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)


# ---------------------------------------------------------------- read-only
def _make_store(path: Path, n: int = 5, journal: str = "wal") -> str:
    with ResultStore(path, journal=journal) as st:
        rid = st.run_id(CFG)
        st.put_many(rid, _rows(n))
    return rid


def test_readonly_store_reads_and_exports_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    rid = _make_store(path)
    before = _digest(path)
    with ResultStore(path, readonly=True) as st:
        assert st.readonly and st.count(rid) == 5 and st.get(rid, "k000001") is not None
        assert st.run_id(CFG) == rid  # the id of an existing run
        assert st.verify() == []
        assert st.export_parquet(rid, tmp_path / "x.parquet") == 5
        for write in (lambda: st.put_many(rid, _rows(1)), lambda: st.delete_run(rid),
                      lambda: st.run_id({"new": 1}), lambda: st.delete_rows(rid, ["k000001"])):
            with pytest.raises(StoreError, match="read-only"):
                write()
    assert _digest(path) == before
    with pytest.raises(FileNotFoundError):
        ResultStore(tmp_path / "absent.sqlite", readonly=True)


@pytest.mark.parametrize("what", ["file", "file+folder"])
def test_store_without_write_permission_opens_readonly(tmp_path: Path, what: str) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    path = folder / "s.sqlite"
    rid = _make_store(path)
    path.chmod(0o444)
    if what == "file+folder":
        folder.chmod(0o555)
    try:
        before = _digest(path)
        with ResultStore(path, create=False) as st:
            assert st.readonly
            assert [r.arch_key for r in st.rows(rid)] == [f"k{i:06d}" for i in range(5)]
            with pytest.raises(StoreError, match="read-only"):
                st.put_many(rid, _rows(1))
        with ResultStore(path) as st:  # also with create=True: never written
            assert st.readonly
        if what == "file+folder":  # immutable: no -wal / -shm / .lock could be made
            assert sorted(p.name for p in folder.iterdir()) == ["s.sqlite", "s.sqlite.lock"]
        assert _digest(path) == before
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)


# ---------------------------------------------------------------- checksums
def _scribble(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new))


def test_damaged_row_is_reported_never_returned(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ResultStore(path, journal="delete") as st:
        rid = st.run_id(CFG)
        st.put_many(rid, _rows(3) + [ScoreRow("kzz", "arch-zz", {"synflow": 1.25}, None, 0.5)])
    _scribble(path, b'"synflow": 1.25', b'"synflow": 7.25')  # a plausible value: SQLite sees nothing
    with ResultStore(path) as st:  # quick_check passes: SQLite keeps no checksums of the data
        assert st.get(rid, "k000001") is not None
        with pytest.raises(StoreError, match=f"row 'kzz' of run {rid} is damaged"):
            st.get(rid, "kzz")
        with pytest.raises(StoreError, match="'kzz'.*damaged"):
            list(st.rows(rid))
        assert st.damaged() == [(rid, "kzz")]
        with pytest.raises(StoreError, match=f"1 damaged record.*run {rid} row 'kzz'"):
            st.verify()
        with pytest.raises(StoreError, match="damaged; put_many does not write over it"):
            st.put_many(rid, [ScoreRow("kzz", "arch-zz", {"synflow": 2.0})])
        st.put_many(rid, [ScoreRow("kzz", "arch-zz", {"synflow": 2.0})], rescore=True)
        assert st.get(rid, "kzz").values == {"synflow": 2.0}
        assert st.verify() == []


def test_damaged_run_config_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    _make_store(path, journal="delete")
    _scribble(path, b'"seed":42', b'"seed":43')
    with ResultStore(path) as st:
        with pytest.raises(StoreError, match="config of run .* is damaged"):
            st.runs()
        with pytest.raises(StoreError, match="config does not match its id"):
            st.verify()


_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE runs (run_id TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE scores (run_id TEXT NOT NULL REFERENCES runs(run_id), arch_key TEXT NOT NULL,
    arch_str TEXT NOT NULL, vals TEXT NOT NULL, error TEXT, seconds REAL NOT NULL,
    PRIMARY KEY (run_id, arch_key)) WITHOUT ROWID;
INSERT INTO meta VALUES ('format', 'zcfast-result-store'), ('schema_version', '1');
"""


def _make_v1_store(path: Path, n: int = 4) -> str:
    """A schema-1 store, as zcfast before checksums wrote it."""
    import json

    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("PRAGMA user_version=1")
    conn.executescript(_V1_SCHEMA)
    rid = config_id(CFG)
    conn.execute("INSERT INTO runs VALUES (?, ?, 0.0)", (rid, json.dumps(CFG, sort_keys=True, separators=(",", ":"))))
    for r in _rows(n):
        conn.execute("INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?)",
                     (rid, r.arch_key, r.arch_str, json.dumps(r.values, sort_keys=True), r.error, r.seconds))
    conn.commit()
    conn.close()
    return rid


def test_schema_1_store_read_as_legacy_then_migrated(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    rid = _make_v1_store(path)
    before = _digest(path)
    with ResultStore(path, readonly=True) as st:
        assert st.schema_version == 1
        assert [r.values for r in st.rows(rid)] == [r.values for r in _rows(4)]
        (note,) = st.verify()
        assert "4 rows carry no checksums (legacy, unverified)" in note
    with ResultStore(path) as st:  # opening writable does not migrate: only a write does
        assert st.schema_version == 1
        assert st.count(rid) == 4
    assert _digest(path) == before
    with ResultStore(path) as st:
        st.put_many(rid, _rows(2, start=4))
        assert st.schema_version == SCHEMA_VERSION == 2
        assert st.verify() == [] and st.count(rid) == 6
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM scores WHERE crc IS NULL").fetchone()[0] == 0
    conn.close()


def test_random_corruptions_are_refused_or_harmless(tmp_path: Path) -> None:
    """150 small random corruptions of a real store (1-4 flipped bits each, anywhere after the
    100-byte header): each one is refused when the store is opened or read, or every row it
    returns is identical to the original (the bits hit unused space)."""
    import random

    orig = tmp_path / "orig.sqlite"
    with ResultStore(orig, journal="delete") as st:
        a = st.run_id(CFG)
        b = st.run_id({**CFG, "seed": 1})
        st.put_many(a, [ScoreRow(f"k{i:04d}", f"arch-{i}", {"synflow": i * 0.25, "snip": -i / 3},
                                 None if i % 7 else "boom", 0.01 * i) for i in range(300)])
        st.put_many(b, [ScoreRow(f"k{i:04d}", f"arch-{i}", {"synflow": math.nan}, None, 0.0) for i in range(50)])
    with ResultStore(orig, readonly=True) as st:
        configs = st.runs()
        want = {rid: {r.arch_key: repr(r) for r in st.rows(rid)} for rid in configs}
    data = orig.read_bytes()
    rng = random.Random(11)
    outcome = {"refused at open": 0, "refused at read": 0, "harmless": 0}
    for t in range(150):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(100, len(buf))
            buf[pos] ^= 1 << rng.randrange(8)
        path = tmp_path / "c.sqlite"
        path.write_bytes(bytes(buf))
        try:
            st = ResultStore(path, readonly=True)
        except StoreError:
            outcome["refused at open"] += 1
            continue
        try:
            runs = st.runs()
            assert all(configs[rid] == cfg for rid, cfg in runs.items())
            for rid in runs:
                for row in st.rows(rid):
                    assert want[rid].get(row.arch_key) == repr(row), f"corruption {t} returned a changed row"
            outcome["harmless"] += 1
        except StoreError:
            outcome["refused at read"] += 1
        finally:
            st.close()
    assert sum(outcome.values()) == 150
    assert outcome["refused at open"] + outcome["refused at read"] > 0, outcome


# ---------------------------------------------------------------- export safety
def test_export_replaces_only_what_it_may(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "s.sqlite"
    rid = _make_store(path)
    with ResultStore(path) as st:
        out = tmp_path / "x.parquet"
        assert st.export_parquet(rid, out) == 5
        assert st.export_parquet(rid, out) == 5  # an earlier export of this run is replaced
        st.put_many(st.run_id({**CFG, "seed": 2}), _rows(2))
        with pytest.raises(StoreError, match="already exists and is not an export of this run"):
            st.export_parquet(st.run_id({**CFG, "seed": 2}), out)
        assert st.export_parquet(st.run_id({**CFG, "seed": 2}), out, overwrite=True) == 2
        (tmp_path / "notes.txt").write_text("keep me")
        with pytest.raises(StoreError, match="already exists"):
            st.export_parquet(rid, tmp_path / "notes.txt")
        assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    assert (out.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_export_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyarrow")
    import errno

    path = tmp_path / "s.sqlite"
    rid = _make_store(path)
    old = tmp_path / "old.parquet"
    with ResultStore(path) as st:
        st.export_parquet(rid, old)
        before = _digest(old)

        def full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(StoreError, match=r"cannot export run .* No space left on device$"):
            st.export_parquet(rid, tmp_path / "new.parquet")
        with pytest.raises(StoreError, match="No space left"):
            st.export_parquet(rid, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.parquet", "s.sqlite", "s.sqlite.lock"]
    assert _digest(old) == before  # the earlier export is intact


def test_shared_writers_coexist_exclusive_refused(tmp_path: Path) -> None:
    """correlate --shard style writers share the lock; a scan-style exclusive writer may not join."""
    path = tmp_path / "s.sqlite"
    a, b = ResultStore(path), ResultStore(path)
    a.acquire_writer(shared=True)
    b.acquire_writer(shared=True)
    rid = a.run_id(CFG)
    a.put_many(rid, _rows(3))
    b.put_many(rid, _rows(3, start=3))
    with ResultStore(path) as c:
        with pytest.raises(StoreError, match="being written by process"):
            c.acquire_writer()
        assert c.count(rid) == 6
    a.close()
    b.close()
    with ResultStore(path) as c:
        c.acquire_writer()
        with ResultStore(path) as d:
            with pytest.raises(StoreError, match="being written by process"):
                d.acquire_writer(shared=True)
