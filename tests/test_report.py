"""Bootstrap intervals, the minimum of points, the one score-table schema (CSV / JSON / Parquet),
``zcfast score --format`` and ``zcfast report`` (store, table) recomputing nothing."""
from __future__ import annotations

import builtins
import csv
import hashlib
import importlib.util
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import zcfast.correlate as corr
from zcfast import metrics, spaces
from zcfast.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def _scorer(space, arch, x, y, proxies, seed, num_classes, device):
    """Deterministic scores from the arch text (no network), NaN for one arch in 7."""
    s = space.encode(arch)
    h = int(hashlib.sha256(s.encode()).hexdigest()[:8], 16) / 2**32
    acc = space.ground_truth(arch, "cifar10")
    out = {p: acc + 30.0 * h * (k + 1) for k, p in enumerate(proxies)}
    if int(h * 7) == 0:
        out[proxies[0]] = math.nan
    return out


def _official_bootstrap(x, y, n_boot, seed, stat):
    """Independent statement: the same resamples (numpy default_rng(seed).integers), scipy's
    statistic, numpy percentiles."""
    o = np.lexsort((x, y))                                   # pairs sorted by (accuracy, score)
    x, y = x[o], y[o]
    rng = np.random.default_rng(seed)
    f = stats.spearmanr if stat == "spearman" else stats.kendalltau
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        vals.append(f(x[i], y[i]).statistic)
    return tuple(np.percentile(np.array(vals), [2.5, 97.5]))


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("stat", ["spearman", "kendall"])
def test_bootstrap_ci_matches_scipy_restatement(stat, ties, loop, monkeypatch):
    if loop:
        monkeypatch.setattr(metrics, "KENDALL_MATMUL_LIMIT", 5)  # the one-tau-per-resample route
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = x + rng.normal(size=60)
    if ties:                                                 # tied scores and accuracies (dead networks)
        x[:6] = x[6]
        y = np.round(y, 1)
        x[7], x[8] = np.inf, -np.inf                         # ordinary extremes for ranking
    x[3] = np.nan                                            # omitted, as the statistic itself
    lo, hi = metrics.bootstrap_ci(x, y, stat, n_boot=200, seed=3)
    ok = ~np.isnan(x)
    assert (lo, hi) == pytest.approx(_official_bootstrap(x[ok], y[ok], 200, 3, stat), abs=1e-12)
    perm = np.random.default_rng(9).permutation(60)
    assert metrics.bootstrap_ci(x[perm], y[perm], stat, n_boot=200, seed=3) == (lo, hi)  # order-free
    point = metrics.spearman(x, y) if stat == "spearman" else metrics.kendall(x, y)
    assert lo < point < hi
    assert all(math.isnan(v) for v in metrics.bootstrap_ci(x[:metrics.MIN_POINTS], y[:metrics.MIN_POINTS]))
    assert all(math.isnan(v) for v in metrics.bootstrap_ci(x, y, n_boot=0))
    with pytest.raises(ValueError, match="unknown statistic"):
        metrics.bootstrap_ci(x, y, "pearson")


def test_bench_protocols_uses_the_one_bootstrap():
    spec = importlib.util.spec_from_file_location("cp", ROOT / "bench" / "correlation_protocols.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x, y = np.arange(30.0), np.arange(30.0) ** 1.5 + np.sin(np.arange(30.0)) * 40
    assert mod.bootstrap_ci(x, y, 100, 0) == metrics.bootstrap_ci(x, y, "spearman", n_boot=100, seed=0)
    assert "def bootstrap_ci" in (ROOT / "zcfast" / "metrics.py").read_text()
    assert "rng.integers" not in (ROOT / "bench" / "correlation_protocols.py").read_text()


def test_too_few_points_print_a_dash_not_minus_one():
    rng = np.random.default_rng(1)
    acc = rng.uniform(60, 94, 15)                            # top 10 % = 2 architectures
    s = {"p": acc + rng.normal(size=15)}
    summ = corr.summarize(s, acc, n_boot=50)
    e = summ["proxies"]["p"]
    assert e["n_top10"] == 2
    assert e["spearman_top10"] is None and e["kendall_top10"] is None and e["top10_overlap"] is None
    assert e["spearman"] is not None and e["spearman_ci95"][0] < e["spearman"] < e["spearman_ci95"][1]
    assert summ["min_points"] == metrics.MIN_POINTS
    table = corr.format_table(summ)
    row = next(line for line in table.splitlines() if line.startswith("p "))
    assert "-1.000" not in row and "1.000" not in row.split("|")[11]
    assert row.split("|")[11].strip() == "-"
    assert f"fewer than {metrics.MIN_POINTS}" in table
    # fewer than MIN_POINTS in all: no statistic at all
    tiny = corr.summarize({"p": acc[:5]}, acc[:5], n_boot=10)["proxies"]["p"]
    assert tiny["spearman"] is None and tiny["kendall"] is None and tiny["spearman_ci95"] is None


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "o"
    res = corr.correlate("nb201", "cifar10", "synflow,snip,jacob_cov", 40, 0, out=out, score_fn=_scorer,
                         time_sample=0, progress=False, n_boot=100)
    return res, out


def test_one_schema_across_csv_json_parquet(study):
    res, out = study
    want = ["arch_str", "index", "key", "accuracy", "train_12ep_acc", "train_12ep_cost", "synflow", "snip",
            "jacob_cov", "synflow_error", "snip_error", "jacob_cov_error", "seconds"]
    assert corr.table_columns(["synflow", "snip", "jacob_cov"], ["train_12ep"]) == want
    sp = spaces.get("nb201")
    tables = {fmt: corr.read_table(out / f"scores.{fmt}") for fmt in ("csv", "json", "parquet")}
    for fmt, (cols, rows) in tables.items():
        assert cols == want, fmt
        assert [r["arch_str"] for r in rows] == res.archs
        assert [r["index"] for r in rows] == [sp.index(sp.decode(a)) for a in res.archs]
        assert [r["key"] for r in rows] == [sp.key(sp.decode(a)) for a in res.archs]
        np.testing.assert_array_equal([r["accuracy"] for r in rows], res.acc)
        np.testing.assert_array_equal([r["synflow"] for r in rows], res.scores["synflow"])  # NaN == NaN here
        assert [r["synflow_error"] for r in rows] == res.errors["synflow"]
    assert any(math.isnan(v) for v in res.scores["synflow"])
    raw = json.loads((out / "scores.json").read_text())
    nan_row = next(r for r in raw if r["synflow"] is None)
    assert nan_row["synflow_error"]                           # a null value carries its reason
    # the summary carries every interval
    e = res.summary["proxies"]["snip"]
    for k in ("spearman_ci95", "kendall_ci95", "abs_spearman_ci95"):
        assert len(e[k]) == 2
    assert e["spearman_ci95"] == list(metrics.bootstrap_ci(res.scores["snip"], res.acc, n_boot=100))


def test_parquet_without_pyarrow_is_a_clear_message(tmp_path, monkeypatch):
    real = builtins.__import__

    def no_pyarrow(name, *a, **k):
        if name.startswith("pyarrow"):
            raise ImportError("No module named 'pyarrow'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    rows = [{"arch_str": "a", "index": 0, "key": "k", "accuracy": 1.0, "p": 2.0, "p_error": "", "seconds": 0.0}]
    with pytest.raises(ValueError, match="Parquet output needs pyarrow"):
        corr.write_table(corr.table_columns(["p"]), rows, tmp_path / "x.parquet")
    assert corr.write_table(corr.table_columns(["p"]), rows, tmp_path / "x.csv").is_file()


def test_report_renders_a_store_and_a_table_as_correlate(study, tmp_path, capsys):
    res, out = study
    # from the store (read only, nothing recomputed): the same statistics as correlate
    assert cli_main(["report", str(out / "results.sqlite"), "--out", str(tmp_path / "r"), "--bootstrap", "100"]) == 0
    printed = capsys.readouterr().out
    assert "rho 95% CI" in printed and "vote" in printed
    got = json.loads((tmp_path / "r" / "summary.json").read_text())
    for p in ("synflow", "snip", "jacob_cov"):
        for k in ("spearman", "kendall", "spearman_ci95", "kendall_ci95", "n_nan", "n_error"):
            assert got["proxies"][p][k] == pytest.approx(res.summary["proxies"][p][k]), (p, k)
    assert got["vote"]["agreement"] == pytest.approx(res.summary["vote"]["agreement"])
    base = res.summary["baselines"]["train_12ep"]
    assert got["baselines"]["train_12ep"]["spearman"] == pytest.approx(base["spearman"])
    for f in ("scores.csv", "scores.json", "scatter.png", "rho_vs_paper.png", "table.txt"):
        assert (tmp_path / "r" / f).is_file()
    # the rows are the same set (the store orders them by benchmark index)
    _, rows = corr.read_table(tmp_path / "r" / "scores.csv")
    assert sorted(r["arch_str"] for r in rows) == sorted(res.archs)
    # from the table: same numbers again, as JSON on stdout
    assert cli_main(["report", str(out / "scores.csv"), "--format", "json", "--bootstrap", "100"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["arch_str"] for r in rows] == res.archs
    assert cli_main(["report", str(out), "--format", "csv", "--bootstrap", "0"]) == 0   # a correlate folder
    assert capsys.readouterr().out.splitlines()[0].startswith("arch_str,index,key,accuracy")
    t = corr.study_from_table(out / "scores.parquet", n_boot=100)
    assert t.summary["proxies"]["snip"]["kendall_ci95"] == pytest.approx(res.summary["proxies"]["snip"]["kendall_ci95"])


def test_report_of_a_scan_run_joins_the_ground_truth(tmp_path):
    from zcfast.store import BatchKey, ResultStore, RunConfig, ScoreRow

    sp = spaces.get("nb201")
    archs = [sp.arch_at(i) for i in range(0, 15625, 700)]
    cfg = RunConfig(kind="scan", space="nb201", proxies=("a", "b"), num_classes=100,
                    batch=BatchKey("f", "shipped:cifar100", 8, 1), init_seed=0, device="cpu", dataset="cifar100",
                    candidates="enumerate", scorer="zcfast")
    with ResultStore(tmp_path / "s.sqlite") as st:
        rid = st.run_id(cfg)
        st.put_many(rid, [ScoreRow(sp.key(a), sp.encode(a), {"a": float(i), "b": -float(i)})
                          for i, a in enumerate(archs)])
    res = corr.study_from_store(tmp_path / "s.sqlite", n_boot=20)
    assert res.summary["dataset"] == "cifar100" and res.summary["n"] == len(archs)
    acc = np.array([sp.ground_truth(a, "cifar100", "test") for a in archs])
    np.testing.assert_array_equal(res.acc, acc)               # stored in index order, as archs
    assert res.summary["proxies"]["a"]["spearman"] == pytest.approx(metrics.spearman(np.arange(len(archs)), acc))
    assert "rendered from" in corr.format_table(res.summary)


def test_report_of_a_store_with_an_nb201_benchmark_file_names_its_column(tmp_path, monkeypatch):
    from zcfast.formats import fixtures
    from zcfast.formats import nb201 as fmt
    from zcfast.spaces import nb201 as space_nb201
    from zcfast.store import BatchKey, ResultStore, RunConfig, ScoreRow

    pth = fmt.write_pth(tmp_path / "NAS-Bench-201-v1_1-096897.pth", fixtures.nb201_entries(), "v1_1")
    monkeypatch.setenv("ZCFAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ZCFAST_NB201_PATH", str(pth))
    sp = spaces.get("nb201")
    archs = [sp.arch_at(i) for i in fixtures.NB201_INDICES]
    cfg = RunConfig(kind="scan", space="nb201", proxies=("a",), num_classes=10,
                    batch=BatchKey("f", "shipped:cifar10", 8, 1), init_seed=0, device="cpu", dataset="cifar10",
                    candidates="enumerate", scorer="zcfast")
    with ResultStore(tmp_path / "s.sqlite") as st:
        rid = st.run_id(cfg)
        st.put_many(rid, [ScoreRow(sp.key(a), sp.encode(a), {"a": float(i)}) for i, a in enumerate(archs)])
    res = corr.study_from_store(tmp_path / "s.sqlite", n_boot=0)
    assert res.summary["ground_truth"] == {"metric": "paper", "column": "cifar10valid_oritest_acc_hp200"}
    # the fixture file's paper column holds the shipped cifar10_test_nats (formats.fixtures)
    shipped = space_nb201.table()["cifar10_test_nats"]
    np.testing.assert_array_equal(np.sort(res.acc), np.sort(shipped[list(fixtures.NB201_INDICES)]))


def test_report_bad_input_is_one_line(tmp_path, capsys, study):
    _, out = study
    assert cli_main(["report", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such" in err
    assert cli_main(["report", str(out / "results.sqlite"), "--run", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    bad = tmp_path / "t.csv"
    bad.write_text("a,b\n1,2\n")
    assert cli_main(["report", str(bad)]) == 2
    assert "no arch_str column" in capsys.readouterr().err
    assert cli_main(["report", str(out / "scores.csv"), "--out", str(out)]) == 2
    assert "would overwrite" in capsys.readouterr().err


def test_score_format_csv_and_json_share_the_schema(capsys):
    argv = ["score", "0", "--proxies", "snip,params", "--batch-size", "4"]
    assert cli_main(argv + ["--format", "csv"]) == 0
    cap = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(cap.out)))
    assert list(rows[0]) == corr.table_columns(["snip", "params"])
    assert "batch:" in cap.err and "batch:" not in cap.out
    sp = spaces.get("nb201")
    a = sp.arch_at(0)
    assert rows[0]["arch_str"] == sp.encode(a) and rows[0]["index"] == "0" and rows[0]["key"] == sp.key(a)
    assert float(rows[0]["accuracy"]) == sp.ground_truth(a, "cifar10", "test")
    assert cli_main(argv + ["--format", "json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert list(j[0]) == list(rows[0]) and j[0]["snip"] == float(rows[0]["snip"])


def test_correlate_reports_an_ensemble_as_a_column_of_its_members(tmp_path):
    ens = pytest.importorskip("zcfast.ensemble")
    from zcfast import options

    if not hasattr(options, "resolve_scoring") or not ens.is_ensemble("majority_vote"):
        pytest.skip("zcfast.ensemble has no majority_vote / options.resolve_scoring yet")
    res = corr.correlate("nb201", "cifar10", "synflow,majority_vote", 30, 0, out=tmp_path / "o", score_fn=_scorer,
                         time_sample=0, progress=False, n_boot=20)
    members = ens.expand(["majority_vote"])[0]
    assert set(members) <= set(res.scores)                    # the members were scored as proxies
    want = ens.aggregate("majority_vote", {p: res.scores[p] for p in members})
    np.testing.assert_array_equal(res.scores["majority_vote"], want)
    e = res.summary["proxies"]["majority_vote"]
    assert e["spearman"] == pytest.approx(metrics.spearman(want, res.acc))
    assert res.summary["ensembles"]["majority_vote"]["members"] == list(members)
    cols, _ = corr.read_table(tmp_path / "o" / "scores.csv")
    assert "majority_vote" in cols and "majority_vote_error" in cols


def test_report_joins_tables_of_one_sample(study, tmp_path, capsys):
    """Several correlate folders / score tables of the same architectures report as one table:
    each proxy's statistics are those of its own run, rows are the ones every table holds."""
    res, out = study
    other = tmp_path / "other"
    res2 = corr.correlate("nb201", "cifar10", "grad_norm,snip", 40, 0, out=other, score_fn=_scorer,
                          time_sample=0, progress=False, n_boot=100)
    assert res2.archs == res.archs                                # the same seed-0 sample
    assert cli_main(["report", str(out), str(other / "scores.json"), "--out", str(tmp_path / "j"),
                     "--bootstrap", "100", "--no-plots"]) == 0
    assert "2 joined tables" in capsys.readouterr().out
    got = json.loads((tmp_path / "j" / "summary.json").read_text())
    assert list(got["proxies"]) == ["synflow", "snip", "jacob_cov", "grad_norm"]   # snip once: equal values
    for p, src in (("synflow", res), ("jacob_cov", res), ("grad_norm", res2)):
        for k in ("spearman", "kendall", "spearman_ci95", "n_nan"):
            assert got["proxies"][p][k] == pytest.approx(src.summary["proxies"][p][k]), (p, k)
    assert got["source"]["joined_rows"] == 40
    cols, rows = corr.read_table(tmp_path / "j" / "scores.csv")
    assert cols == corr.table_columns(["synflow", "snip", "jacob_cov", "grad_norm"], ["train_12ep"])
    np.testing.assert_array_equal([r["grad_norm"] for r in rows], res2.scores["grad_norm"])

    # only the rows every table holds, in the first table's order
    cols2, rows2 = corr.read_table(other / "scores.csv")
    part = tmp_path / "part.csv"
    corr.write_table(cols2, rows2[5:30][::-1], part)
    jc, jr, _ = corr.join_tables([out / "scores.csv", part])
    assert [r["arch_str"] for r in jr] == res.archs[5:30]

    # a differing ground truth, or one proxy with two different columns: an error naming both tables
    bad = [dict(r) for r in rows2]
    bad[3]["accuracy"] += 1.0
    corr.write_table(cols2, bad, tmp_path / "acc.csv")
    with pytest.raises(ValueError, match=r"acc\.csv hold different values of accuracy"):
        corr.join_tables([out / "scores.csv", tmp_path / "acc.csv"])
    bad = [dict(r) for r in rows2]
    bad[0]["snip"] += 1.0
    corr.write_table(cols2, bad, tmp_path / "snip.csv")
    with pytest.raises(ValueError, match=r"column 'snip'"):
        corr.join_tables([out / "scores.csv", tmp_path / "snip.csv"])
    corr.write_table(cols2, rows2 + rows2[:1], tmp_path / "twice.csv")
    with pytest.raises(ValueError, match="in two rows"):
        corr.join_tables([out / "scores.csv", tmp_path / "twice.csv"])

    # bad input on the command line: one line each
    assert cli_main(["report", str(out), str(out / "results.sqlite")]) == 2
    assert "a store is reported alone" in capsys.readouterr().err
    assert cli_main(["report", str(out), str(other), "--out", str(other)]) == 2
    assert "would overwrite" in capsys.readouterr().err
    assert cli_main(["report", str(out), str(tmp_path / "none")]) == 2
    assert "no such score table" in capsys.readouterr().err
