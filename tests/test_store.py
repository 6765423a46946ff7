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
        time.sleep(delay)
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
