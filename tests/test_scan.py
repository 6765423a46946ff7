"""Tests of zcfast.scan / zcfast.parallel / `zcfast scan`: dedup, first-n semantics, resume,
error rows, backends agree, worker death, bad input. Scoring is injected (hash_scorer or small
module-level scorers) so the machinery is tested independently of the proxies; one test uses
the real zcfast.score_arch."""
from __future__ import annotations

import hashlib
import math
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import zcfast
from zcfast.parallel import WorkerSpec, hash_scorer, score_chunk
from zcfast.scan import scan
from zcfast.spaces import get as get_space
from zcfast.store import ResultStore, StoreError

SPACE = get_space("nb201")
DATA = (torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
PROXIES = ["synflow", "snip"]


def _expected_value(key: str, proxy: str, seed: int = 42) -> float:
    """hash_scorer's value, recomputed here independently."""
    h = hashlib.sha256(f"{seed}:{key}:{proxy}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2.0**63 - 1.0


def _first_distinct(n: int, sample_seed: int = 0) -> dict[str, str]:
    """key -> arch string of the first n distinct keys of the sampled stream (independent)."""
    rng = random.Random(sample_seed)
    out: dict[str, str] = {}
    while len(out) < n:
        arch = SPACE.sample(rng)
        out.setdefault(SPACE.key(arch), SPACE.encode(arch))
    return out


def _run_rows(path: Path) -> dict[str, tuple[str, dict, str | None]]:
    with ResultStore(path) as st:
        (rid,) = st.runs()
        rows = list(st.rows(rid))
        assert len(rows) == len({r.arch_key for r in rows})
        return {r.arch_key: (r.arch_str, r.values, r.error) for r in rows}


def _scan(path: Path, n: int | None, **kw):
    kw.setdefault("backend", "serial")
    kw.setdefault("scorer", hash_scorer)
    kw.setdefault("progress", False)
    return scan(SPACE, PROXIES, n, store=path, data=DATA, **kw)


def test_first_n_distinct_candidates_scored_once(tmp_path: Path) -> None:
    res = _scan(tmp_path / "s.sqlite", 300, commit_rows=7)
    assert (res.total, res.scored, res.errors, res.exhausted) == (300, 300, 0, False)
    rows = _run_rows(tmp_path / "s.sqlite")
    expected = _first_distinct(300)
    assert set(rows) == set(expected)
    for key, (text, values, error) in rows.items():
        assert text == expected[key] and error is None
        assert values == {p: _expected_value(key, p) for p in PROXIES}


def test_resume_extends_to_same_result(tmp_path: Path) -> None:
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    r1 = _scan(a, 120)
    r2 = _scan(a, 120)  # nothing to do
    r3 = _scan(a, 250)
    assert (r1.scored, r2.scored, r3.scored, r3.total) == (120, 0, 130, 250)
    assert r1.run_id == r3.run_id
    _scan(b, 250)
    assert _run_rows(a) == _run_rows(b)


def test_enumerate_whole_space_dedups_by_key(tmp_path: Path) -> None:
    res = _scan(tmp_path / "s.sqlite", None, chunk_size=64, commit_rows=1000)
    keys: dict[str, str] = {}
    for arch in SPACE.enumerate():
        keys.setdefault(SPACE.key(arch), SPACE.encode(arch))
    assert res.target == SPACE.size() and res.exhausted
    assert res.total == len(keys) < SPACE.size()
    rows = _run_rows(tmp_path / "s.sqlite")
    assert {k: v[0] for k, v in rows.items()} == keys  # first representative of each key


def test_sampled_stream_of_finite_space_ends(tmp_path: Path) -> None:
    n_keys = len({SPACE.key(a) for a in SPACE.enumerate()})
    res = _scan(tmp_path / "s.sqlite", n_keys + 1000, chunk_size=64, commit_rows=1000)
    assert res.exhausted and res.total == n_keys  # every key found, then the cap stops it


def test_configs_never_mix(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    ids = {_scan(path, 20).run_id, _scan(path, 20, seed=1).run_id,
           _scan(path, 20, sample_seed=5).run_id, _scan(path, 20, order="enumerate").run_id,
           scan(SPACE, ["synflow"], 20, store=path, data=DATA, backend="serial",
                scorer=hash_scorer, progress=False).run_id}
    assert len(ids) == 5
    with ResultStore(path) as st:
        assert all(st.count(r) == 20 for r in ids)
        cfg = st.config(_scan(path, 20, seed=1).run_id)
        assert cfg["seed"] == 1 and cfg["proxies"] == ["snip", "synflow"]
        assert cfg["candidates"] == "sample:0" and cfg["space"] == "nb201"


def _nan_scorer(space, arch, inputs, targets, proxies, seed=42, num_classes=10, device="cpu"):
    key = space.key(arch)
    if key.startswith("0"):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
    if key.startswith("1"):
        raise ValueError("bad arch\nsecond line")
    vals = hash_scorer(space, arch, inputs, targets, proxies, seed, num_classes, device)
    if key.startswith("2"):
        vals["snip"] = math.nan
    if key.startswith("3"):
        vals["synflow"] = math.inf
    if key.startswith("4"):
        del vals["snip"]
    return vals


def test_failures_recorded_and_scan_goes_on(tmp_path: Path) -> None:
    res = _scan(tmp_path / "s.sqlite", 400, scorer=_nan_scorer)
    rows = _run_rows(tmp_path / "s.sqlite")
    assert res.total == 400 and set(rows) == set(_first_distinct(400))
    n_err = 0
    for key, (_, values, error) in rows.items():
        c = key[0]
        if c == "0":
            assert error.startswith("out of memory: RuntimeError: CUDA out of memory") and values == {}
        elif c == "1":
            assert error == "ValueError: bad arch second line" and values == {}
        elif c == "2":
            assert error == "non-finite value: snip=nan (no reason given by the scorer)" and math.isnan(values["snip"])
            assert values["synflow"] == _expected_value(key, "synflow")
        elif c == "3":
            assert error == "non-finite value: synflow=inf (no reason given by the scorer)" and values["synflow"] == math.inf
        elif c == "4":
            assert error == "bad scorer output: missing snip"
        else:
            assert error is None and values == {p: _expected_value(key, p) for p in PROXIES}
            continue
        n_err += 1
    assert res.errors == n_err > 40  # ~5/16 of 400


def _batch_ok(space, archs, inputs, targets, proxies, seed=42, device="cpu"):
    return [{p: -_expected_value(space.key(a), p, seed) for p in proxies} for a in archs]


def _batch_fails(space, archs, inputs, targets, proxies, seed=42, device="cpu"):
    raise RuntimeError("batched path unavailable")


def _batch_unsupported(space, archs, inputs, targets, proxies, seed=42, device="cpu"):
    raise NotImplementedError(f"no batched path for {space.name}")


def test_batch_scorer_used_and_fallback_per_arch(tmp_path: Path) -> None:
    chunk = [(SPACE.key(a), SPACE.encode(a), a) for a in list(SPACE.enumerate())[:5]]
    spec = WorkerSpec(SPACE, tuple(PROXIES), *DATA, scorer=hash_scorer, batch_scorer=_batch_ok)
    rows = score_chunk(spec, chunk)
    assert [r.arch_key for r in rows] == [t[0] for t in chunk]
    assert all(r.values == {p: -_expected_value(r.arch_key, p) for p in PROXIES} for r in rows)
    spec.batch_scorer = _batch_fails  # whole-batch failure -> rescored one at a time
    rows = score_chunk(spec, chunk)
    assert all(r.values == {p: _expected_value(r.arch_key, p) for p in PROXIES} and r.error is None
               for r in rows)
    spec.batch_scorer = _batch_unsupported  # NotImplementedError: batched path switched off
    rows = score_chunk(spec, chunk)
    assert spec.batch_scorer is None
    assert all(r.values == {p: _expected_value(r.arch_key, p) for p in PROXIES} for r in rows)


def test_local_pool_matches_serial_and_survives_worker_death(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    expected = list(_first_distinct(150))
    prefix = expected[20][:3]  # a worker SIGKILLs itself on keys with this prefix (~1 key)
    monkeypatch.setenv("ZCFAST_HASH_SCORER_FAIL", "1")
    monkeypatch.setenv("ZCFAST_HASH_SCORER_KILL", prefix)
    # (serial would kill the test process itself: compare against expected values instead)
    res = _scan(tmp_path / "p.sqlite", 150, backend="local", workers=2, chunk_size=8)
    rows = _run_rows(tmp_path / "p.sqlite")
    assert res.total == 150 and set(rows) == set(expected)
    died = 0
    for key, (_, values, error) in rows.items():
        if key.startswith(prefix):
            assert error.startswith("worker process died") and values == {}
            died += 1
        elif key.startswith("f"):
            assert error == f"RuntimeError: synthetic failure for {key}"
        else:
            assert error is None and values == {p: _expected_value(key, p) for p in PROXIES}
    assert died > 0


def test_local_pool_equals_serial_exactly_real_scorer(tmp_path: Path) -> None:
    pytest.importorskip("zcfast.proxies")
    if not _real_scorer_available():
        pytest.skip("zcfast.score_arch not available yet")
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([5, 1, 0, 9])
    kw = dict(data=(x, y), batch_scorer=None, progress=False, chunk_size=1)
    scan(SPACE, ["synflow", "snip"], 5, store=tmp_path / "a.sqlite", backend="serial", **kw)
    scan(SPACE, ["synflow", "snip"], 5, store=tmp_path / "b.sqlite", backend="local", workers=2, **kw)
    a = _run_rows(tmp_path / "a.sqlite")
    assert len(a) == 5 and all(e is None for _, _, e in a.values())
    assert a == _run_rows(tmp_path / "b.sqlite")  # bit-identical values


def test_export_parquet_from_scan(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    _scan(tmp_path / "s.sqlite", 30, export=tmp_path / "x.parquet")
    table = pq.read_table(tmp_path / "x.parquet").to_pydict()
    assert len(table["arch_key"]) == 30
    for i, key in enumerate(table["arch_key"]):
        assert table["synflow"][i] == _expected_value(key, "synflow")


def test_bad_input_named(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with pytest.raises(ValueError, match="order"):
        _scan(path, 5, order="random")
    with pytest.raises(ValueError, match="n must be"):
        _scan(path, -1)
    with pytest.raises(ValueError, match="backend"):
        _scan(path, 5, backend="threads")
    with pytest.raises(ValueError, match="proxies"):
        scan(SPACE, [], 5, store=path, data=DATA, scorer=hash_scorer)
    with pytest.raises(ValueError, match="data must be"):
        scan(SPACE, PROXIES, 5, store=path, data=(torch.zeros(3, 8), torch.zeros(3)), scorer=hash_scorer)
    with pytest.raises(ValueError, match="num_classes"):
        _scan(path, 5, dataset="mnist")
    with pytest.raises(ValueError, match="unknown"):
        scan("nope", PROXIES, 5, store=path, data=DATA, scorer=hash_scorer)
    with pytest.raises(ValueError, match="scorer .* cannot be sent to local workers"):
        _scan(path, 5, backend="local", scorer=lambda *a, **k: {})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            _scan(path, 5, device="cuda")
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="another application"):
        _scan(foreign, 5)
    assert foreign.read_bytes() == before


def test_cli_scan_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zcfast.cli import main

    store = tmp_path / "c.sqlite"
    args = ["scan", "--space", "nb201", "--proxies", "synflow,snip", "--n", "40", "--store", str(store),
            "--scorer", "zcfast.parallel:hash_scorer", "--backend", "serial", "--quiet",
            "--export", str(tmp_path / "c.parquet")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "40 candidates (40 scored now, 0 with errors)" in out
    assert main(args[:6] + ["60"] + args[7:]) == 0
    assert "60 candidates (20 scored now" in capsys.readouterr().out
    assert main(["scan", "--proxies", "synflow", "--scorer", "nomodule:f", "--store", str(store)]) == 2
    assert "cannot be loaded" in capsys.readouterr().err
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database, keep me")
    assert main(["scan", "--proxies", "synflow", "--n", "3", "--store", str(bad),
                 "--scorer", "zcfast.parallel:hash_scorer", "--quiet"]) == 2
    assert "not an SQLite database" in capsys.readouterr().err
    assert bad.read_text() == "not a database, keep me"


def _real_scorer_available() -> bool:
    try:
        from zcfast.scoring import score_arch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _real_scorer_available(), reason="zcfast.score_arch not available yet")
def test_real_scorer_synflow_matches_score_arch(tmp_path: Path) -> None:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])
    res = scan("nb201", ["synflow", "grad_norm"], 6, store=tmp_path / "r.sqlite", data=(x, y),
               backend="serial", batch_scorer=None, progress=False)
    assert res.total == 6
    rows = _run_rows(tmp_path / "r.sqlite")
    assert set(rows) == set(_first_distinct(6))
    torch.set_num_threads(1)
    for key, (text, values, error) in rows.items():
        want = zcfast.score_arch(SPACE, SPACE.decode(text), x, y, ["grad_norm", "synflow"], seed=42)
        assert error is None or "non-finite" in error
        for p in ("synflow", "grad_norm"):
            assert values[p] == pytest.approx(float(want[p]), rel=1e-6, nan_ok=True)


def _batched_available() -> bool:
    try:
        from zcfast.batched import score_batch  # noqa: F401
    except ImportError:
        return False
    return _real_scorer_available()


@pytest.mark.skipif(not _batched_available(), reason="zcfast.batched.score_batch not available yet")
def test_default_batched_scorer_matches_score_arch(tmp_path: Path) -> None:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([7, 2, 2, 0])
    res = scan("nb201", ["synflow", "grad_norm"], 6, store=tmp_path / "b.sqlite", data=(x, y),
               backend="serial", progress=False, chunk_size=3)  # batch_scorer="auto"
    rows = _run_rows(tmp_path / "b.sqlite")
    assert res.total == 6 and set(rows) == set(_first_distinct(6))
    from zcfast.batched import score_batch

    torch.set_num_threads(1)
    for key, (text, values, error) in rows.items():
        arch = SPACE.decode(text)
        (alone,) = score_batch(SPACE, [arch], x, y, ["grad_norm", "synflow"], seed=42)
        want = zcfast.score_arch(SPACE, arch, x, y, ["grad_norm", "synflow"], seed=42)
        for p in ("synflow", "grad_norm"):
            # the scan routes through score_batch (chunking does not change its values) ...
            assert values[p] == pytest.approx(alone[p], rel=1e-6, nan_ok=True)
            # ... which agrees with score_arch up to float32 reduction order (measured up to
            # 8e-4 relative for grad_norm at this 4-image batch)
            assert values[p] == pytest.approx(float(want[p]), rel=5e-3, nan_ok=True)


# ---------------------------------------------------------------- issue #11: reliability
ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}


def test_scan_run_ids_are_pinned(tmp_path: Path) -> None:
    """The run key is store.RunConfig(kind="scan") now; the ids of earlier stores are unchanged."""
    from zcfast.scan import run_config
    from zcfast.store import RunConfig

    res = scan("nb201", "synflow,jacob_cov", 0, store=tmp_path / "s.sqlite", backend="serial", progress=False)
    assert res.run_id == "c714900d124130ff"
    res = scan("nb201", ["synflow", "snip"], 0, store=tmp_path / "s.sqlite", backend="serial", progress=False,
               scorer=hash_scorer, order="enumerate", dataset="cifar100", batch_size=8, seed=3)
    assert res.run_id == "f0c614d5d347fe6b"
    cfg = run_config("nb201", ["synflow", "jacob_cov"], dataset="cifar10", batch_size=64, data_seed=42,
                     data_fingerprint="6344d164ca622c10", seed=42, num_classes=10, device="cpu",
                     order="sample", sample_seed=0, scorer="zcfast")
    assert isinstance(cfg, RunConfig) and cfg.kind == "scan" and cfg.run_id() == "c714900d124130ff"


def _scan_cmd(store: Path, n: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "zcfast", "scan", "--space", "nb201", "--proxies", "synflow,snip",
            "--n", str(n), "--store", str(store), "--scorer", "zcfast.parallel:hash_scorer",
            "--backend", "serial", "--quiet", "--commit-rows", "1", *extra]


def test_two_scans_of_one_store_second_refused_count_exact(tmp_path: Path) -> None:
    store, hold = tmp_path / "s.sqlite", tmp_path / "hold"
    hold.touch()  # the first scan takes the store, then waits at its first candidate
    first = subprocess.Popen(_scan_cmd(store, 60), env=_env(ZCFAST_HASH_SCORER_HOLD=str(hold)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = Path(str(store) + ".lock")
        while not (lock.exists() and lock.read_text().startswith(f"{first.pid}\n")):
            assert first.poll() is None, first.communicate()
            time.sleep(0.02)
        second = subprocess.run(_scan_cmd(store, 60), env=_env(), capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        (line,) = second.stderr.strip().splitlines()
        assert f"is being written by process {first.pid} (python -m zcfast scan --space nb201" in line
        hold.unlink()
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    with ResultStore(store) as st:
        (rid,) = st.runs()
        assert st.count(rid) == 60
        assert st.conn.execute("SELECT count(*) FROM scores").fetchone()[0] == 60
    again = subprocess.run(_scan_cmd(store, 60), env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "(0 scored now" in again.stdout


_flaky_calls: dict[str, int] = {}


def _flaky_scorer(space, arch, inputs, targets, proxies, seed=42, num_classes=10, device="cpu"):
    """Fails the first time it sees a key starting with 0-3, succeeds afterwards."""
    key = space.key(arch)
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if key[0] in "0123" and _flaky_calls[key] == 1:
        raise RuntimeError("transient failure")
    return hash_scorer(space, arch, inputs, targets, proxies, seed, num_classes, device)


def test_retry_errors_rescores_error_rows_in_place(tmp_path: Path) -> None:
    _flaky_calls.clear()
    path = tmp_path / "s.sqlite"
    first = _scan(path, 80, scorer=_flaky_scorer)
    assert 0 < first.errors == first.total_errors < 80 and first.first_error == "RuntimeError: transient failure"
    again = _scan(path, 80, scorer=_flaky_scorer)
    assert (again.scored, again.total_errors) == (0, first.errors)  # a rerun keeps error rows
    fixed = _scan(path, 80, scorer=_flaky_scorer, retry_errors=True)
    assert fixed.retried == first.errors == fixed.scored and fixed.errors == 0
    assert fixed.total == 80 and fixed.total_errors == 0 and fixed.run_id == first.run_id
    rows = _run_rows(path)
    assert set(rows) == set(_first_distinct(80))
    assert all(v == {p: _expected_value(k, p) for p in PROXIES} and e is None for k, (_, v, e) in rows.items())


def test_damaged_row_refuses_the_scan_until_retried(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    res = _scan(path, 30)
    key = sorted(_first_distinct(30))[3]
    with ResultStore(path) as st:  # change one stored value behind the store's back
        st.conn.execute("UPDATE scores SET vals='{\"snip\": 0.5, \"synflow\": 0.5}' WHERE arch_key=?", (key,))
    with pytest.raises(StoreError, match=rf"1 damaged row.*{key!r}.*--retry-errors"):
        _scan(path, 40)
    fixed = _scan(path, 40, retry_errors=True)
    assert fixed.total == 40 and fixed.run_id == res.run_id
    rows = _run_rows(path)
    assert rows[key][1] == {p: _expected_value(key, p) for p in PROXIES}


def test_nan_reason_reaches_the_stored_row(tmp_path: Path) -> None:
    """jacob_cov of a cell whose output ignores its input is NaN: the row says why."""
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])
    dead = SPACE.decode("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    task = [(SPACE.key(dead), SPACE.encode(dead), dead)]
    for batch_scorer in (None, "auto"):
        from zcfast.scan import _default_batch_scorer

        spec = WorkerSpec(SPACE, ("jacob_cov", "synflow"), x, y,
                          batch_scorer=_default_batch_scorer() if batch_scorer else None)
        (row,) = score_chunk(spec, task * 2 if batch_scorer else task)[:1]
        assert math.isnan(row.values["jacob_cov"])
        assert row.error.startswith("non-finite value: jacob_cov=nan (") and len(row.error) > 40, row.error


def test_export_onto_the_store_refused_before_any_work(tmp_path: Path) -> None:
    from zcfast.cli import main

    store = tmp_path / "s.sqlite"
    for target in (store, tmp_path / "." / "s.sqlite"):
        with pytest.raises(StoreError, match="is the store"):
            _scan(store, 5, export=target)
    assert not store.exists()  # refused before the store was even created
    _scan(store, 5)
    (tmp_path / "hard.sqlite").hardlink_to(store)
    (tmp_path / "soft.sqlite").symlink_to(store)
    before = store.read_bytes()
    for alias in ("hard.sqlite", "soft.sqlite", "s.sqlite-wal", "s.sqlite.lock"):
        assert main(["scan", "--proxies", "synflow,snip", "--n", "9", "--store", str(store), "--backend", "serial",
                     "--scorer", "zcfast.parallel:hash_scorer", "--quiet", "--export", str(tmp_path / alias)]) == 2
    assert store.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_readonly_store_exports_a_complete_run_and_refuses_more(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "media"
    folder.mkdir()
    store = folder / "s.sqlite"
    _scan(store, 20)
    store.chmod(0o444)
    folder.chmod(0o555)
    try:
        out = tmp_path / "x.parquet"
        res = _scan(store, 20, export=out)
        assert res.scored == 0 and pq.read_table(out).num_rows == 20
        with pytest.raises(StoreError, match="read-only: this scan would add rows"):
            _scan(store, 30)
    finally:
        folder.chmod(0o755)
        store.chmod(0o644)


def _unguarded_script(tmp_path: Path, guard: bool) -> Path:
    body = ("import zcfast\n"
            "from zcfast.parallel import hash_scorer\n"
            + ("if __name__ == '__main__':\n    " if guard else "")
            + f"res = zcfast.scan('nb201', 'synflow', 6, store={str(tmp_path / 'g.sqlite')!r}, workers=1, "
              "scorer=hash_scorer, progress=False, batch_size=2)\n"
            + ("    " if guard else "") + "print('total', res.total)\n")
    script = tmp_path / ("guarded.py" if guard else "unguarded.py")
    script.write_text(body)
    return script


def test_unguarded_script_is_refused_naming_the_guard(tmp_path: Path) -> None:
    script = _unguarded_script(tmp_path, guard=False)
    done = subprocess.run([sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"at {script}:3 starts worker processes" in done.stderr and '__name__ == "__main__"' in done.stderr
    assert not (tmp_path / "g.sqlite").exists()  # refused before any work


@pytest.mark.slow
def test_guarded_script_scans_with_spawned_workers(tmp_path: Path) -> None:
    script = _unguarded_script(tmp_path, guard=True)
    done = subprocess.run([sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "total 6" in done.stdout, done.stderr


class _DiesInWorkers:
    """A space that cannot be unpickled in a worker: every worker dies as it starts."""

    def __init__(self) -> None:
        self.parent = os.getpid()
        self.inner = SPACE
        self.name = "nb201"

    def __setstate__(self, state: dict) -> None:
        if state["parent"] != os.getpid():
            os._exit(3)
        self.__dict__.update(state)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["inner"], name)


def test_workers_dying_at_start_raise_instead_of_storing_error_rows(tmp_path: Path) -> None:
    from zcfast.parallel import WorkerStartError

    path = tmp_path / "s.sqlite"
    with pytest.raises(WorkerStartError, match="die as they start.*__name__ == \"__main__\""):
        scan(_DiesInWorkers(), PROXIES, 8, store=path, data=DATA, scorer=hash_scorer, backend="local",
             workers=1, progress=False)
    with ResultStore(path) as st:
        (rid,) = st.runs()
        assert st.count(rid) == 0  # no "worker process died" rows


def test_cli_all_candidates_failed_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zcfast.cli import main

    store = tmp_path / "s.sqlite"
    args = ["scan", "--proxies", "synflow", "--n", "4", "--store", str(store), "--backend", "serial",
            "--scorer", "zcfast.parallel:hash_scorer", "--quiet"]
    done = subprocess.run([sys.executable, "-m", "zcfast", *args], env=_env(ZCFAST_HASH_SCORER_FAIL="all"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "all 4 candidates scored now failed (first: RuntimeError: synthetic failure for" in done.stderr
    assert "Traceback" not in done.stderr
    monkeypatch.setenv("ZCFAST_HASH_SCORER_FAIL", "all")
    assert main(args) == 1  # a rerun with nothing to do: every row of the run is an error
    monkeypatch.delenv("ZCFAST_HASH_SCORER_FAIL")
    assert main(args + ["--retry-errors"]) == 0  # the cause fixed, the rows rescored


def test_ray_client_address_needs_ray_client(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("grpc") is not None:
        pytest.skip("needs ray installed without ray[client]")
    with pytest.raises(ValueError, match=r"ray://head:10001.*pip install 'ray\[client\]'"):
        _scan(tmp_path / "s.sqlite", 5, backend="ray", address="ray://head:10001")
    assert not (tmp_path / "s.sqlite").exists()


def test_local_pool_starts_workers_from_a_preloaded_forkserver() -> None:
    from zcfast import parallel

    if "forkserver" not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip("no forkserver on this platform")
    old = os.environ.pop("ZCFAST_START_METHOD", None)
    try:
        assert parallel.resolve_start_method() == "forkserver"
    finally:
        if old is not None:
            os.environ["ZCFAST_START_METHOD"] = old
    assert parallel.resolve_start_method("spawn") == "spawn"
    spec = WorkerSpec(SPACE, tuple(PROXIES), *DATA, scorer=hash_scorer)
    mods = parallel._preload_modules(spec)
    assert mods[:len(parallel.FORKSERVER_PRELOAD)] == list(parallel.FORKSERVER_PRELOAD)
    assert type(SPACE).__module__ in mods and "zcfast.parallel" in mods
    spec.scorer = _DiesInWorkers.__setstate__  # a user's module is never preloaded in the server
    assert all(m.startswith("zcfast") or m in ("__main__", "torch") for m in parallel._preload_modules(spec))


def test_cli_starts_the_forkserver_before_importing_torch(tmp_path: Path) -> None:
    # zcfast.forkserver imports neither torch nor zcfast's heavy modules, and `zcfast scan`
    # (local backend) starts the server from it before its own `import torch`; the scan's pool
    # then forks from that server (its pid), and the rows are those of a serial scan
    if "forkserver" not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip("no forkserver on this platform")
    code = (
        "import sys, zcfast.forkserver as f\n"
        "assert 'torch' not in sys.modules, 'zcfast.forkserver imported torch'\n"
        "import zcfast.commands.scan as c\n"
        "from multiprocessing import forkserver\n"
        "seen = []\n"
        "real = c._start_workers_early\n"
        "def early(args):\n"
        "    real(args)\n"
        "    seen.append(('torch' in sys.modules, forkserver._forkserver._forkserver_pid))\n"
        "c._start_workers_early = early\n"
        "from zcfast.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "assert seen and seen[0][0] is False and seen[0][1] is not None, seen\n"
        "assert forkserver._forkserver._forkserver_pid == seen[0][1]  # the pool used that server\n"
        "sys.exit(rc)\n")
    args = ["scan", "--proxies", "synflow,snip", "--n", "12", "--scorer", "zcfast.parallel:hash_scorer",
            "--workers", "2", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "ZCFAST_START_METHOD"}
    done = subprocess.run([sys.executable, "-c", code, *args, "--store", str(tmp_path / "l.sqlite")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    from zcfast.cli import main
    assert main(args + ["--store", str(tmp_path / "s.sqlite"), "--backend", "serial"]) == 0
    assert _run_rows(tmp_path / "l.sqlite") == _run_rows(tmp_path / "s.sqlite")


def test_cli_refused_scan_ends_the_forkserver_it_started(tmp_path: Path) -> None:
    # a command refused at the front door kills the server it started early (which would
    # otherwise finish importing torch in the background) and leaves no store
    if "forkserver" not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip("no forkserver on this platform")
    code = (
        "import os, sys\n"
        "import zcfast.commands.scan as c\n"
        "from multiprocessing import forkserver\n"
        "pids = []\n"
        "real = c._start_workers_early\n"
        "def early(args):\n"
        "    started = real(args)\n"
        "    pids.append(forkserver._forkserver._forkserver_pid)\n"
        "    return started\n"
        "c._start_workers_early = early\n"
        "from zcfast.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "assert pids and pids[0] is not None and forkserver._forkserver._forkserver_pid is None, pids\n"
        "try:\n"
        "    os.kill(pids[0], 0)\n"
        "except ProcessLookupError:\n"
        "    sys.exit(rc)\n"
        "sys.exit(99)  # the server is still alive\n")
    env = {k: v for k, v in os.environ.items() if k != "ZCFAST_START_METHOD"}
    done = subprocess.run([sys.executable, "-c", code, "scan", "--proxies", "synflo", "--n", "3", "--store",
                           str(tmp_path / "s.sqlite")], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "did you mean 'synflow'" in done.stderr and not (tmp_path / "s.sqlite").exists()


def test_forkserver_workers_see_the_parents_environment_now(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # the server is started by the first pool (in this process perhaps by an earlier test) and
    # keeps the environment it started with; the workers must see the parent's at each scan
    _scan(tmp_path / "a.sqlite", 8, backend="local", workers=1, start_method="forkserver")
    monkeypatch.setenv("ZCFAST_HASH_SCORER_FAIL", "all")
    res = _scan(tmp_path / "b.sqlite", 8, backend="local", workers=1, start_method="forkserver")
    assert res.errors == 8 and res.first_error.startswith("RuntimeError: synthetic failure")
    monkeypatch.delenv("ZCFAST_HASH_SCORER_FAIL")
    res = _scan(tmp_path / "c.sqlite", 8, backend="local", workers=1, start_method="forkserver")
    assert res.errors == 0 and _run_rows(tmp_path / "c.sqlite") == _run_rows(tmp_path / "a.sqlite")


def test_forkserver_worker_watchdog_notices_a_dead_owner() -> None:
    from zcfast.parallel import _parent_gone

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    gone_pid = int(dead.stdout)  # exited and reaped: no such process
    assert not _parent_gone(os.getppid(), None)            # a direct child of its owner
    assert _parent_gone(os.getpid(), None)                 # getppid is not the owner
    assert not _parent_gone(os.getpid(), os.getppid())     # a server's child, owner alive
    assert _parent_gone(gone_pid, os.getppid())            # owner gone
    assert _parent_gone(os.getpid(), os.getppid() + 10**6)  # server gone (reparented)


def _batches_scorer(space, arch, inputs, targets, proxies, seed=42, num_classes=10, device="cpu", batches=None):
    """hash_scorer's values + 1000 per mini-batch received (1 when given none); several batches
    come instead of ``inputs, targets`` (zcfast.score_arch's convention)."""
    assert (batches is None) == (inputs is not None) == (targets is not None)
    count = 1 if batches is None else len(batches)
    return {p: v + 1000 * count for p, v in hash_scorer(space, arch, inputs, targets, proxies, seed).items()}


def _two_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(4, 3, 8, 8, generator=g), torch.tensor([0, 1, 2, 3])) for _ in range(2)]


def test_scan_with_several_batches_passes_them_and_keys_the_run(tmp_path: Path) -> None:
    two = _two_batches()
    kw = dict(scorer=_batches_scorer, backend="serial", progress=False)
    res = scan(SPACE, PROXIES, 6, store=tmp_path / "s.sqlite", batches=two, **kw)
    res_local = scan(SPACE, PROXIES, 6, store=tmp_path / "l.sqlite", batches=two,
                     **{**kw, "backend": "local", "workers": 1})
    rows = _run_rows(tmp_path / "s.sqlite")
    assert res.total == 6 and res.errors == 0 and rows == _run_rows(tmp_path / "l.sqlite")
    assert res.run_id == res_local.run_id
    for key, (_, values, _) in rows.items():
        assert values == {p: _expected_value(key, p) + 2000 for p in PROXIES}
    one = scan(SPACE, PROXIES, 6, store=tmp_path / "s.sqlite", batches=two[:1], **kw)
    same = scan(SPACE, PROXIES, 6, store=tmp_path / "d.sqlite", data=two[0], **kw)
    assert one.run_id == same.run_id != res.run_id  # one batch: the data= run, same id
    assert _run_rows(tmp_path / "d.sqlite") == {k: (s, {p: _expected_value(k, p) + 1000 for p in PROXIES}, None)
                                                for k, (s, _, _) in rows.items()}
    drawn = scan(SPACE, PROXIES, 4, store=tmp_path / "n.sqlite", n_batches=2, **kw)  # paper_batches(.., 2)
    assert drawn.errors == 0 and all(v[PROXIES[0]] > 1500 for _, v, _ in _run_rows(tmp_path / "n.sqlite").values())
    single = scan(SPACE, PROXIES, 4, store=tmp_path / "n.sqlite", n_batches=1, **kw)
    assert single.run_id != drawn.run_id


@pytest.mark.parametrize("kwargs, match", [
    (dict(data=DATA, batches=[DATA, DATA]), "not two of them"),
    (dict(batches=[DATA, DATA], n_batches=2), "not both"),
    (dict(batches=[]), "non-empty list"),
    (dict(batches=DATA[0]), "non-empty list|batches\\[0\\] must be a pair"),
    (dict(batches=[DATA, (DATA[0],)]), r"batches\[1\] must be a pair"),
    (dict(batches=[DATA, (torch.zeros(2, 3, 4, 4), DATA[1])]), r"batches\[1\]: x is \[2, 3, 4, 4\]"),
    (dict(n_batches=0), "n_batches"),
    (dict(batches=[DATA, DATA], scorer=hash_scorer), "batches: the scorer zcfast.parallel.hash_scorer has no "
                                                      "batches parameter"),
], ids=["data-and-batches", "batches-and-n", "empty", "not-a-list", "not-a-pair", "shapes", "n-0", "scorer"])
def test_bad_batches_refused_before_any_work(tmp_path: Path, kwargs: dict, match: str) -> None:
    kwargs = {"scorer": _batches_scorer, **kwargs}
    with pytest.raises(ValueError, match=match):
        scan(SPACE, PROXIES, 4, store=tmp_path / "s.sqlite", backend="serial", progress=False, **kwargs)
    assert not (tmp_path / "s.sqlite").exists()


def test_real_scorer_with_two_batches_single_batch_proxy_uses_the_first(tmp_path: Path) -> None:
    # paper_batches' first batch is the paper batch, and a single-batch proxy scores the first
    # batch: the same values as the one-batch run, under another run id
    kw = dict(backend="serial", progress=False)
    two = scan(SPACE, ["synflow"], 4, store=tmp_path / "s.sqlite", n_batches=2, **kw)
    one = scan(SPACE, ["synflow"], 4, store=tmp_path / "s.sqlite", **kw)
    assert two.run_id != one.run_id and two.errors == one.errors == 0
    with ResultStore(tmp_path / "s.sqlite") as st:
        rows = {rid: {r.arch_key: r.values for r in st.rows(rid)} for rid in (two.run_id, one.run_id)}
    assert rows[two.run_id] == rows[one.run_id] and len(rows[one.run_id]) == 4


def test_cli_batches_zico_reads_every_mini_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `zcfast scan --batches B`: B draws of zcfast.data.paper_batches reach the scorer, so ZiCo
    # (a multi-batch proxy) equals score_arch on those batches, not on the two halves of one.
    # --no-batched: the per-architecture scorer, so the values are score_arch's exactly (the
    # batched backend's agreement with it is tested with the backend)
    from zcfast.cli import main
    from zcfast.data import batches_fingerprint, paper_batches
    from zcfast.options import scoring_threads
    from zcfast.scan import run_config

    store = tmp_path / "z.sqlite"
    base = ["scan", "--proxies", "zico", "--n", "2", "--store", str(store), "--batch-size", "8",
            "--backend", "serial", "--quiet", "--no-batched"]
    assert main(base + ["--batches", "2"]) == 0 and main(base) == 0
    capsys.readouterr()
    assert main(base + ["--batches", "0"]) == 2
    assert "--batches" in capsys.readouterr().err
    two = paper_batches("cifar10", 8, 42, 2)
    with ResultStore(store) as st:
        runs = {cfg["data"]: rid for rid, cfg in st.runs().items()}  # the batch fingerprint
        assert set(runs) == {batches_fingerprint(two), batches_fingerprint(two[:1])}
        multi = {r.arch_str: r.values["zico"] for r in st.rows(runs[batches_fingerprint(two)])}
        single = {r.arch_str: r.values["zico"] for r in st.rows(runs[batches_fingerprint(two[:1])])}
    # B = 1 keeps the single-batch run id (the key of every scan before --batches)
    one_id = run_config("nb201", ["zico"], dataset="cifar10", batch_size=8, data_seed=42,
                        data_fingerprint=batches_fingerprint(two[:1]), seed=42, num_classes=10, device="cpu",
                        order="sample", sample_seed=0, scorer="zcfast").run_id()
    assert runs[batches_fingerprint(two[:1])] == one_id
    assert len(multi) == len(single) == 2
    for text, value in multi.items():
        arch = SPACE.decode(text)
        with scoring_threads():  # stored scores are computed with SCORING_THREADS threads
            want = zcfast.score_arch(SPACE, arch, None, None, ("zico",), batches=two)["zico"]
            halves = zcfast.score_arch(SPACE, arch, *two[0], ("zico",))["zico"]
        assert value == want and single[text] == halves and math.isfinite(value) and value != halves
