"""Fault tests: SIGKILL a `zcfast scan` process at random moments, resume each time; the store
ends with every candidate exactly once and the values of an uninterrupted run.

No timing is assumed: each run may score only a bounded number of candidates before the hash
scorer waits (``ZCFAST_HASH_SCORER_HOLD[_AFTER]``: a backstop short of the end), and the test
kills it a random delay after it has stored a random number of rows. So every kill lands
mid-scan however loaded the machine: anywhere in the scoring/commit cycle, or at the backstop.
(SIGKILL inside a transaction is also tested directly in tests/test_store.py.)"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from zcfast.parallel import hash_scorer
from zcfast.scan import scan
from zcfast.store import ResultStore
from zcfast.testing import committed_rows

ROOT = Path(__file__).resolve().parents[1]
N = 300
PROXIES = "snip,synflow"


def _cmd(store: Path, backend: str) -> list[str]:
    return [sys.executable, "-m", "zcfast", "scan", "--space", "nb201", "--proxies", PROXIES,
            "--n", str(N), "--store", str(store), "--scorer", "zcfast.parallel:hash_scorer",
            "--backend", backend, "--workers", "2", "--batch-size", "8", "--quiet",
            "--commit-rows", "4", "--commit-seconds", "0.05"]


def _env(hold: Path | None = None, backstop: int = 0) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "ZCFAST_HASH_SCORER_SLEEP": "0.004", "ZCFAST_HASH_SCORER_FAIL": "1"}
    if hold is not None:
        env["ZCFAST_HASH_SCORER_HOLD"] = str(hold)
        env["ZCFAST_HASH_SCORER_HOLD_AFTER"] = str(backstop)
    return env


def _rows(store: Path) -> dict[str, tuple]:
    with ResultStore(store) as st:
        st.verify()
        (rid,) = st.runs()
        rows = list(st.rows(rid))
        raw = st.conn.execute("SELECT count(*), count(DISTINCT arch_key) FROM scores").fetchone()
    assert raw[0] == raw[1] == len(rows), "duplicate rows"
    return {r.arch_key: (r.arch_str, r.values, r.error) for r in rows}


def _reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple]:
    monkeypatch.setenv("ZCFAST_HASH_SCORER_FAIL", "1")
    ref = tmp_path / "ref.sqlite"
    scan("nb201", PROXIES, N, store=ref, batch_size=8, backend="serial", scorer=hash_scorer,
         progress=False)
    return _rows(ref)


def _kill_and_resume(tmp_path: Path, backend: str, kills: int, seed: int) -> tuple[Path, list[int]]:
    rng = random.Random(seed)
    store = tmp_path / f"faulted-{backend}.sqlite"
    hold = tmp_path / "hold"
    seen: list[tuple[int, int]] = []   # (rows before the run, rows after its kill)
    for _ in range(kills):
        before = committed_rows(store)
        workers = 1 if backend == "serial" else 2
        assert N - before > 30 * workers
        # kill a random delay after the scan has written a random number of further rows (at most
        # half of what is left); the backstop (candidates each process may score before it waits:
        # enough to commit the threshold, in chunks of 4, not enough to finish) guarantees it lands
        threshold = before + rng.randint(1, max(1, (N - before) // 2))
        backstop = -(-(threshold - before) // workers) + 12
        hold.touch()
        proc = subprocess.Popen(_cmd(store, backend), env=_env(hold, backstop), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        while committed_rows(store) < threshold:
            if proc.poll() is not None:
                pytest.fail(f"the scan ended (status {proc.returncode}) before {threshold} rows: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.08))
        children = []
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it finished (and was reaped) before the kill
            pass
        proc.wait()
        proc.stderr.close()
        hold.unlink()
        # orphaned pool workers must go away by themselves (their pipe to the parent closed)
        _, alive = psutil.wait_procs(children, timeout=60)
        for p in alive:
            p.kill()
        assert not alive, f"{len(alive)} worker processes outlived their killed parent"
        seen.append((before, committed_rows(store)))
        _rows(store)  # integrity + no duplicates after every crash
    done = subprocess.run(_cmd(store, backend), env=_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return store, seen


@pytest.mark.timeout(600)
def test_sigkill_serial_scan_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _reference(tmp_path, monkeypatch)
    assert len(ref) == N and any(e for _, _, e in ref.values())
    store, seen = _kill_and_resume(tmp_path, "serial", kills=4, seed=1)
    assert len(seen) == 4 and all(b < c < N for b, c in seen), seen  # every kill landed mid-scan
    assert _rows(store) == ref


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_local_pool_scan_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _reference(tmp_path, monkeypatch)
    store, seen = _kill_and_resume(tmp_path, "local", kills=2, seed=2)
    assert len(seen) == 2 and all(b < c < N for b, c in seen), seen
    assert _rows(store) == ref
