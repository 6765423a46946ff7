"""The correlation study: pipeline, resumability, outputs and bad input."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import zcfast.correlate as corr
from zcfast import metrics, spaces
from zcfast.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


class FakeScorer:
    """Deterministic per-architecture scores (a function of the arch text only), counting calls."""

    def __init__(self, fail_at: int | None = None, exc: type[BaseException] = KeyboardInterrupt) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.fail_at = fail_at
        self.exc = exc
        self.attempts = 0

    def __call__(self, space, arch, x, y, proxies, seed, num_classes, device):
        self.attempts += 1
        if self.fail_at is not None and self.attempts == self.fail_at + 1:
            raise self.exc("stop here")
        s = space.encode(arch)
        self.calls.append((s, tuple(proxies)))
        h = int(hashlib.sha256(s.encode()).hexdigest()[:8], 16) / 2**32
        acc = space.ground_truth(arch, "cifar10")
        return {p: acc + 20.0 * h * (k + 1) for k, p in enumerate(proxies)}


@pytest.fixture
def fake_proxies(monkeypatch):
    """The paper's six and "plain" are registered proxies (kept as a fixture for the tests' signatures)."""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sample_is_uniform_prefix_and_all():
    sp = spaces.get("nb201")
    a = corr.sample_archs(sp, 10, 0)
    b = corr.sample_archs(sp, 30, 0)
    assert b[:10] == a and len({sp.encode(x) for x in b}) == 30
    assert corr.sample_archs(sp, 10, 1) != a
    every = corr.sample_archs(sp, None, 0)
    assert len(every) == 15625 and every[0] == sp.arch_at(0)
    with pytest.raises(ValueError, match="larger than"):
        corr.sample_archs(sp, 20000, 0)


def test_resume_after_interrupt_recomputes_nothing(tmp_path, fake_proxies):
    store = tmp_path / "s.sqlite"
    f1 = FakeScorer(fail_at=7)
    with pytest.raises(KeyboardInterrupt):
        corr.correlate("nb201", "cifar10", "snip,synflow", 20, 3, store=store, score_fn=f1,
                       time_sample=0, progress=False)
    assert len(f1.calls) == 7  # 7 architectures finished before the interrupt
    f2 = FakeScorer()
    r = corr.correlate("nb201", "cifar10", "snip,synflow", 20, 3, store=store, score_fn=f2,
                       time_sample=0, progress=False)
    done_first = {c[0] for c in f1.calls}
    assert len(f2.calls) == 13 and not done_first & {c[0] for c in f2.calls}
    assert r.summary["resumed_archs"] == 7 and r.summary["scored_archs"] == 13
    assert r.summary["store_rows"] == {"snip": 20, "synflow": 20}
    # identical to an uninterrupted run
    ref = corr.correlate("nb201", "cifar10", "snip,synflow", 20, 3, store=tmp_path / "ref.sqlite",
                         score_fn=FakeScorer(), time_sample=0, progress=False)
    for p in ("snip", "synflow"):
        np.testing.assert_array_equal(r.scores[p], ref.scores[p])
    assert r.summary["proxies"] == ref.summary["proxies"]


def test_store_is_shared_across_proxies_and_sizes(tmp_path, fake_proxies):
    store = tmp_path / "s.sqlite"
    f = FakeScorer()
    corr.correlate("nb201", "cifar10", "synflow", 30, 0, store=store, score_fn=f, time_sample=0, progress=False)
    assert len(f.calls) == 30
    f = FakeScorer()
    r = corr.correlate("nb201", "cifar10", "synflow,snip", 40, 0, store=store, score_fn=f, time_sample=0,
                       progress=False)
    # synflow reused for the first 30 (the 40-sample extends the 30-sample), snip computed for all
    assert len(f.calls) == 40
    assert sum(1 for _, ps in f.calls if ps == ("snip",)) == 30
    assert sum(1 for _, ps in f.calls if ps == ("synflow", "snip")) == 10
    assert r.summary["store_rows"] == {"synflow": 40, "snip": 40}
    # a different batch is a different run: nothing reused
    f = FakeScorer()
    corr.correlate("nb201", "cifar10", "synflow", 5, 0, store=store, score_fn=f, time_sample=0,
                   progress=False, batch_seed=7)
    assert len(f.calls) == 5


def test_scoring_errors_are_recorded_not_dropped(tmp_path, fake_proxies):
    f = FakeScorer(fail_at=2, exc=RuntimeError)
    r = corr.correlate("nb201", "cifar10", "snip", 5, 0, store=tmp_path / "s.sqlite", score_fn=f,
                       time_sample=0, progress=False)
    assert sum(1 for e in r.errors["snip"] if e) == 1
    assert np.isnan(r.scores["snip"]).sum() == 1
    assert r.summary["proxies"]["snip"]["n_error"] == 1 and r.summary["proxies"]["snip"]["n_used"] == 4
    assert "RuntimeError: stop here" in [e for e in r.errors["snip"] if e][0]


def test_summary_values_are_the_metrics(tmp_path, fake_proxies):
    r = corr.correlate("nb201", "cifar10", "paper", 60, 1, out=tmp_path / "o", score_fn=FakeScorer(),
                       time_sample=1, progress=False)
    s = r.summary
    for p in corr.PAPER_PROXIES:
        e = s["proxies"][p]
        assert e["spearman"] == pytest.approx(metrics.spearman(r.scores[p], r.acc))
        assert e["kendall"] == pytest.approx(metrics.kendall(r.scores[p], r.acc))
        assert e["paper_abs_spearman"] == corr.PAPER_SPEARMAN["cifar10"][p]
        assert e["seconds_per_arch_alone"] is not None
    assert s["vote"]["agreement"] == pytest.approx(
        metrics.vote_agreement([r.scores[p] for p in corr.VOTE_PROXIES], r.acc))
    assert s["ground_truth"] == {"metric": "valid", "column": "cifar10_val_nbsuitezero"}  # the cifar10-valid run
    sp0 = spaces.get("nb201")
    assert r.acc[0] == sp0.ground_truth(sp0.decode(r.archs[0]), "cifar10", "valid")
    # the reduced-training baseline is the benchmark's 12-epoch column, joined by arch
    sp = spaces.get("nb201")
    hp12 = np.array([sp.ground_truth(sp.decode(a), "cifar10", "hp12_valacc") for a in r.archs])
    assert s["baselines"]["train_12ep"]["spearman"] == pytest.approx(metrics.spearman(hp12, r.acc))
    assert s["baselines"]["train_12ep"]["cost_per_arch_mean"] > 0
    # outputs
    rows = list(csv.DictReader(open(r.files["csv"])))
    assert len(rows) == 60
    assert [int(x["index"]) for x in rows] == [sp.index(sp.decode(a)) for a in r.archs]
    assert float(rows[0]["snip"]) == r.scores["snip"][0]
    assert json.loads(r.files["json"].read_text())["n"] == 60
    for k in ("scatter", "bars"):
        assert r.files[k].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = r.files["table"].read_text()
    assert "0.737" in table and "vote" in table and "train_12ep" in table


def test_other_datasets_use_their_classes_and_ground_truth(tmp_path, fake_proxies):
    seen = {}

    def scorer(space, arch, x, y, proxies, seed, num_classes, device):
        seen["nc"], seen["shape"] = num_classes, tuple(x.shape)
        return {p: 1.0 for p in proxies}

    r = corr.correlate("nb201", "cifar100", "snip", 4, 0, store=tmp_path / "a.sqlite", batch_size=20,
                       score_fn=scorer, time_sample=0, progress=False)
    assert seen == {"nc": 100, "shape": (20, 3, 32, 32)}
    sp = spaces.get("nb201")
    assert r.acc[0] == sp.ground_truth(sp.decode(r.archs[0]), "cifar100")
    assert r.summary["baselines"] == {}
    rng = np.random.default_rng(0)
    p = tmp_path / "in16.npz"
    np.savez(p, x=rng.integers(0, 256, (70, 16, 16, 3), dtype=np.uint8), y=rng.integers(0, 120, 70))
    r = corr.correlate("nb201", "ImageNet16-120", "snip", 4, 0, store=tmp_path / "b.sqlite", data=p,
                       score_fn=scorer, time_sample=0, progress=False)
    assert seen == {"nc": 120, "shape": (64, 3, 16, 16)}
    assert r.summary["ground_truth"]["column"] == "imagenet16_120_test_nats"


class _OwnNB201:
    """A caller's own space object that calls itself nb201 but has no ``NB201Space.column_for``."""

    name = "nb201"

    def __init__(self) -> None:
        self.inner = spaces.get("nb201")

    def __getattr__(self, attr: str):
        if attr == "column_for" or attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.__dict__["inner"], attr)


def test_own_nb201_space_without_column_for_names_the_shipped_column(tmp_path):
    own = _OwnNB201()
    assert not hasattr(own, "column_for")

    def scorer(space, arch, x, y, proxies, seed, num_classes, device):
        return {p: float(len(space.encode(arch))) for p in proxies}

    r = corr.correlate(own, "cifar10", "snip", 4, 0, store=tmp_path / "a.sqlite", batch_size=8, metric="test",
                       score_fn=scorer, time_sample=0, progress=False)
    assert r.summary["ground_truth"] == {"metric": "test", "column": "cifar10_test_nats"}
    sp = spaces.get("nb201")
    assert list(r.acc) == [sp.ground_truth(sp.decode(a), "cifar10", "test") for a in r.archs]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--space", "nb999"], "unknown search space"),
        (["--dataset", "mnist"], "unknown dataset"),
        (["--proxies", "snip,bogus"], "unknown proxy 'bogus'"),
        (["--data", "/nonexistent/x.npz"], "nor an existing path"),
        (["--dataset", "ImageNet16-120"], "no ImageNet16-120 images are shipped"),
        (["--dataset", "cifar100"], "only 20 CIFAR-100"),
        (["--metric", "bogus"], "unknown metric"),
    ],
)
def test_cli_bad_input_is_a_clear_error_and_store_untouched(tmp_path, capsys, fake_proxies, argv, match):
    out = tmp_path / "o"
    out.mkdir()
    # an existing store with a finished run must come through byte-identical
    corr.correlate("nb201", "cifar10", "snip", 3, 0, out=out, score_fn=FakeScorer(), time_sample=0,
                   progress=False, plots=False)
    store = out / "results.sqlite"
    before = _sha(store)
    code = cli_main(["correlate", "--n", "5", "--out", str(out), "--proxies", "snip", "--quiet"] + argv)
    err = capsys.readouterr().err
    assert code == 2 and match in err and "Traceback" not in err
    assert _sha(store) == before


def test_bad_user_dataset_files(tmp_path, capsys, fake_proxies):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((70, 32, 32), np.uint8), y=np.zeros(70, int))
    code = cli_main(["correlate", "--n", "2", "--out", str(tmp_path / "o"), "--data", str(bad), "--quiet"])
    assert code == 2 and "[N, H, W, 3]" in capsys.readouterr().err
    np.savez(bad, x=np.zeros((70, 32, 32, 3), np.uint8), y=np.full(70, 12))
    code = cli_main(["correlate", "--n", "2", "--out", str(tmp_path / "o"), "--data", str(bad), "--quiet"])
    assert code == 2 and "out of range for cifar10" in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.sqlite").exists()


def test_foreign_file_as_store_is_refused_and_kept(tmp_path, capsys, fake_proxies):
    f = tmp_path / "notes.txt"
    f.write_text("my precious notes\n" * 20)
    before = _sha(f)
    code = cli_main(["correlate", "--n", "2", "--out", str(tmp_path / "o"), "--store", str(f),
                     "--proxies", "snip", "--quiet"])
    assert code == 2 and "store" in capsys.readouterr().err.lower()
    assert _sha(f) == before


# ------------------------------------------------------------------ real proxies (CI sample)
def _real_proxies_available() -> bool:
    try:
        import zcfast

        return set(corr.PAPER_PROXIES) <= set(zcfast.available_proxies())
    except Exception:
        return False


needs_proxies = pytest.mark.skipif(not _real_proxies_available(), reason="zcfast.score_arch not available")


@needs_proxies
def test_real_pipeline_matches_direct_score_arch(tmp_path):
    import zcfast
    from zcfast import data

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: oversubscribed threads make this 10x slower
    try:  # same thread count for both: grasp's signed sum is sensitive to reduction order
        r = corr.correlate("nb201", "cifar10", "paper", 2, 0, out=tmp_path / "o", time_sample=0, progress=False)
        sp = spaces.get("nb201")
        x, y = data.paper_batch("cifar10", 64, 42)
        direct = [zcfast.score_arch(sp, sp.decode(r.archs[i]), x, y, list(corr.PAPER_PROXIES), seed=42,
                                    num_classes=10) for i in (0, 1)]
    finally:
        torch.set_num_threads(threads)
    for i in (0, 1):
        for p in corr.PAPER_PROXIES:
            got, want = r.scores[p][i], direct[i][p]
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-6), (p, got, want)
    assert all(f.exists() for f in r.files.values())
    assert r.summary["proxies"]["synflow"]["n_nan"] == 0


@needs_proxies
def test_cli_killed_midrun_resumes_without_loss(tmp_path):
    """SIGKILL a real `zcfast correlate` run (synflow) mid-way; rerun; nothing lost or recomputed."""
    from zcfast.store import ResultStore

    out = tmp_path / "o"
    n = 400
    cmd = [sys.executable, "-m", "zcfast", "correlate", "--proxies", "synflow", "--n", str(n), "--seed", "5",
           "--out", str(out), "--time-sample", "0", "--no-plots", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = out / "results.sqlite"
    killed_at = 0
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.3)
            if store.exists():
                try:
                    with ResultStore(store, create=False) as st:
                        runs = list(st.runs())
                        killed_at = st.count(runs[0]) if runs else 0
                except Exception:
                    continue
                if killed_at >= 3:
                    proc.send_signal(signal.SIGKILL)
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if killed_at < 3 or killed_at >= n:
        pytest.skip(f"could not kill mid-run (rows at kill: {killed_at})")
    with ResultStore(store, create=False) as st:
        rid = list(st.runs())[0]
        kept = {r.arch_key: r.values["synflow"] for r in st.rows(rid)}
    assert len(kept) >= killed_at
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_archs"] == len(kept) and summary["scored_archs"] == n - len(kept)
    assert summary["store_rows"]["synflow"] == n
    with ResultStore(store, create=False) as st:
        after = {r.arch_key: r.values["synflow"] for r in st.rows(rid)}
    assert len(after) == n and all(after[k] == v for k, v in kept.items())


def test_report_only_reads_the_store_without_scoring_or_writing(tmp_path, fake_proxies):
    store = tmp_path / "s.sqlite"
    f = FakeScorer(fail_at=6)
    with pytest.raises(KeyboardInterrupt):
        corr.correlate("nb201", "cifar10", "snip,synflow", 20, 2, store=store, score_fn=f, time_sample=0,
                       progress=False)
    before = _sha(store)

    def never(*a, **k):
        raise AssertionError("report-only must not score")

    r = corr.correlate("nb201", "cifar10", "snip,synflow", 20, 2, store=store, score_fn=never, time_sample=3,
                       progress=False, compute=False)
    assert len(r.archs) == 6 and r.summary["missing_archs"] == 14 and r.summary["n"] == 6
    assert r.archs == [c[0] for c in f.calls]
    assert _sha(store) == before
    with pytest.raises(ValueError, match="no run of proxy grasp"):
        corr.correlate("nb201", "cifar10", "grasp", 20, 2, store=store, compute=False, progress=False)
    with pytest.raises(FileNotFoundError):
        corr.correlate("nb201", "cifar10", "snip", 20, 2, store=tmp_path / "none.sqlite", compute=False)


def test_export_table_roundtrips(tmp_path, fake_proxies):
    import gzip

    r = corr.correlate("nb201", "cifar10", "synflow,snip", 12, 0, store=tmp_path / "s.sqlite", score_fn=FakeScorer(),
                       time_sample=0, progress=False)
    p = corr.export_table(r, tmp_path / "t.csv.gz")
    rows = list(csv.DictReader(gzip.open(p, "rt")))
    assert [int(x["index"]) for x in rows] == sorted(int(i) for i in r.index)
    by_arch = {a: k for k, a in enumerate(r.archs)}
    for x in rows:
        k = by_arch[x["arch_str"]]
        assert float(x["synflow"]) == r.scores["synflow"][k] and float(x["snip"]) == r.scores["snip"][k]
        assert float(x["synflow_log"]) == pytest.approx(math.log(r.scores["synflow"][k]))
    assert "snip_log" not in rows[0]
    assert corr.export_table(r, tmp_path / "u.csv.gz").read_bytes() == p.read_bytes()  # reproducible bytes


def test_shards_split_the_sample_and_share_the_store(tmp_path, fake_proxies):
    store = tmp_path / "s.sqlite"
    f0, f1 = FakeScorer(), FakeScorer()
    r0 = corr.correlate("nb201", "cifar10", "snip", 20, 4, store=store, score_fn=f0, time_sample=0,
                        progress=False, shard=(0, 2))
    assert len(f0.calls) == 10 and r0.summary["missing_archs"] == 10 and len(r0.archs) == 10
    r1 = corr.correlate("nb201", "cifar10", "snip", 20, 4, store=store, score_fn=f1, time_sample=0,
                        progress=False, shard=(1, 2))
    assert len(f1.calls) == 10 and not {c[0] for c in f0.calls} & {c[0] for c in f1.calls}
    assert r1.summary["missing_archs"] == 0 and len(r1.archs) == 20  # sees shard 0's rows too
    ref = corr.correlate("nb201", "cifar10", "snip", 20, 4, store=tmp_path / "r.sqlite", score_fn=FakeScorer(),
                         time_sample=0, progress=False)
    np.testing.assert_array_equal(r1.scores["snip"], ref.scores["snip"])
    with pytest.raises(ValueError, match="shard"):
        corr.correlate("nb201", "cifar10", "snip", 20, 4, store=store, shard=(2, 2), progress=False)


def test_shards_write_one_store_together_but_an_exclusive_writer_is_refused(tmp_path, fake_proxies):
    # another shard process holds the store as a shared writer while this one runs
    from zcfast.store import ResultStore, StoreError

    store = tmp_path / "s.sqlite"
    other = ResultStore(store)
    other.acquire_writer(shared=True)
    try:
        r = corr.correlate("nb201", "cifar10", "snip", 20, 4, store=store, score_fn=FakeScorer(),
                           time_sample=0, progress=False, shard=(0, 2))
        assert len(r.archs) == 10
        with pytest.raises(StoreError, match="being written"):   # a plain (exclusive) writer
            corr.correlate("nb201", "cifar10", "snip", 20, 4, store=store, score_fn=FakeScorer(),
                           time_sample=0, progress=False)
    finally:
        other.close()


def test_subsample_spread():
    rng = np.random.default_rng(0)
    acc = rng.normal(size=3000)
    s = acc + rng.normal(size=3000)
    full = metrics.spearman(s, acc)
    sp = corr.subsample_spread(s, acc, 300, reps=50, seed=1)
    assert sp["p2.5"] <= full <= sp["p97.5"] and abs(sp["mean"] - full) < 0.03 and 0 < sp["std"] < 0.1
    # reproducible, and the whole set has no spread
    assert corr.subsample_spread(s, acc, 300, reps=50, seed=1) == sp
    assert corr.subsample_spread(s, acc, 3000, reps=3)["std"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="n must be"):
        corr.subsample_spread(s, acc, 5000)


def _fake_score_fn(space, arch, x, y, proxies, seed, num_classes, device):
    """Picklable deterministic scorer (for spawned workers): reports its process id."""
    h = int(hashlib.sha256(space.encode(arch).encode()).hexdigest()[:8], 16) / 2**32
    return {**{p: h * (k + 1) + float(x[0, 0, 0, 0]) for k, p in enumerate(proxies) if p != "plain"},
            **({"plain": float(os.getpid())} if "plain" in proxies else {})}


def test_worker_processes_match_inline_and_are_recycled(tmp_path, fake_proxies):
    kw = dict(time_sample=0, progress=False, score_fn=_fake_score_fn)
    ref = corr.correlate("nb201", "cifar10", "snip,synflow", 6, 0, store=tmp_path / "a.sqlite", **kw)
    got = corr.correlate("nb201", "cifar10", "snip,synflow,plain", 6, 0, store=tmp_path / "b.sqlite",
                         workers=1, recycle=3, **kw)
    for p in ("snip", "synflow"):
        np.testing.assert_array_equal(got.scores[p], ref.scores[p])
    pids = set(got.scores["plain"].tolist())
    assert len(pids) == 2 and os.getpid() not in pids  # 6 archs, a fresh worker every 3
    with pytest.raises(ValueError, match="recycle"):
        corr.correlate("nb201", "cifar10", "snip", 6, 0, store=tmp_path / "c.sqlite", workers=1, recycle=0)
