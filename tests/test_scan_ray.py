"""The Ray backend against a local Ray instance on loopback: same store rows as the serial
and local backends."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from zcfast.parallel import hash_scorer
from zcfast.scan import scan
from zcfast.store import ResultStore

# Keep the local Ray instance on loopback: with this flag off Ray takes 127.0.0.1 as the node
# address and its gRPC servers bind there instead of the machine's external interface.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def ray_local():
    """A Ray instance on 127.0.0.1 only, 2 CPUs, no dashboard; workers import this checkout."""
    if ray.is_initialized():
        ray.shutdown()
    from ray._private import ray_constants

    mp = pytest.MonkeyPatch()
    mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # in case ray was imported earlier
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", runtime_env={"env_vars": {"PYTHONPATH": path}})
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    yield
    ray.shutdown()
    mp.undo()


def _rows(path: Path) -> dict[str, tuple]:
    with ResultStore(path) as st:
        (rid,) = st.runs()
        return {r.arch_key: (r.arch_str, r.values, r.error) for r in st.rows(rid)}


def test_ray_backend_equals_serial(tmp_path: Path, ray_local: None) -> None:
    data = (torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
    kw = dict(data=data, scorer=hash_scorer, progress=False)
    r_ray = scan("nb201", "synflow,snip", 120, store=tmp_path / "ray.sqlite", backend="ray",
                 chunk_size=8, **kw)
    assert r_ray.total == 120 and r_ray.errors == 0
    scan("nb201", "synflow,snip", 120, store=tmp_path / "serial.sqlite", backend="serial", **kw)
    assert _rows(tmp_path / "ray.sqlite") == _rows(tmp_path / "serial.sqlite")
    # resume a ray run from a serial partial run: same run id, same rows
    scan("nb201", "synflow,snip", 50, store=tmp_path / "mixed.sqlite", backend="serial", **kw)
    r = scan("nb201", "synflow,snip", 120, store=tmp_path / "mixed.sqlite", backend="ray", **kw)
    assert (r.scored, r.run_id) == (70, r_ray.run_id)
    assert _rows(tmp_path / "mixed.sqlite") == _rows(tmp_path / "serial.sqlite")
    assert ray.is_initialized()  # the backend leaves an instance it did not start running


def test_ray_backend_real_scorer(tmp_path: Path, ray_local: None) -> None:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([3, 1, 4, 1])
    kw = dict(data=(x, y), batch_scorer=None, progress=False)
    try:
        scan("nb201", ["synflow", "snip"], 4, store=tmp_path / "s.sqlite", backend="serial", **kw)
    except ImportError:
        pytest.skip("zcfast.score_arch not available yet")
    scan("nb201", ["synflow", "snip"], 4, store=tmp_path / "r.sqlite", backend="ray", **kw)
    serial, on_ray = _rows(tmp_path / "s.sqlite"), _rows(tmp_path / "r.sqlite")
    assert len(serial) == 4 and serial.keys() == on_ray.keys()
    assert all(v[2] is None for v in serial.values())
    assert serial == on_ray  # bit-identical: same seeding, one thread per worker


@pytest.mark.slow
def test_ray_actor_death_recorded(tmp_path: Path, ray_local: None) -> None:
    """An actor that dies (SIGKILL, as the OOM killer would) is replaced; the candidate that
    killed it twice is recorded with an error, every other one is scored."""
    from zcfast.parallel import RayBackend, WorkerSpec
    from zcfast.spaces import get

    space = get("nb201")
    archs = list(space.enumerate())[:40]
    tasks = [(space.key(a), space.encode(a), a) for a in archs]
    tasks = list({t[0]: t for t in tasks}.values())
    victim = tasks[5][0]
    spec = WorkerSpec(space, ("synflow",), torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long),
                      scorer=hash_scorer)
    backend = RayBackend(spec, workers=2, actor_options={
        "runtime_env": {"env_vars": {"ZCFAST_HASH_SCORER_KILL": victim}}})
    try:
        chunks = [tasks[i:i + 4] for i in range(0, len(tasks), 4)]
        rows = {r.arch_key: r for out in backend.imap_unordered(chunks) for r in out}
    finally:
        backend.close()
    assert set(rows) == {t[0] for t in tasks}
    assert rows[victim].error.startswith("worker process died") and rows[victim].values == {}
    for key, row in rows.items():
        if key != victim:
            assert row.error is None
            assert row.values == hash_scorer(space, space.decode(row.arch_str), None, None, ["synflow"])


def test_backend_started_local_instance_listens_on_loopback() -> None:
    """RayBackend with no address starts its own Ray instance bound to 127.0.0.1."""
    from zcfast.parallel import RayBackend, WorkerSpec

    if ray.is_initialized():
        ray.shutdown()
    from zcfast.spaces import get

    spec = WorkerSpec(get("nb201"), ("synflow",), torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long),
                      scorer=hash_scorer)
    backend = RayBackend(spec, workers=1, init_kwargs={"num_cpus": 1})
    try:
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    finally:
        backend.close()
    assert not ray.is_initialized()
