"""Plots: axes chosen by the data's span, quantile y limits, bars with intervals and a vote
panel, and the search's best-so-far curve (values checked against plain numpy / scipy)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats

from zcfast import plots
from zcfast.cli import main as cli_main

PNG = b"\x89PNG\r\n\x1a\n"


def test_axis_scale_follows_the_span_of_decades():
    rng = np.random.default_rng(0)
    narrow = rng.uniform(1.0, 50.0, 200)                      # 1.7 decades: linear
    assert plots.axis_scale(narrow) == ("linear", {})
    wide = 10 ** rng.uniform(-1.0, 2.5, 200)                  # grad_norm-like, 3.5 decades, all > 0
    assert plots.axis_scale(wide) == ("log", {})
    with_zeros = np.concatenate([wide, np.zeros(5), [np.nan, np.inf]])
    assert plots.axis_scale(with_zeros) == ("log", {})       # zeros: drawn on the edge, not symlog
    signed = np.concatenate([wide, -wide[:50]])
    scale, kw = plots.axis_scale(signed)
    assert scale == "symlog"
    assert kw["linthresh"] == pytest.approx(np.percentile(np.abs(signed), 1.0))
    # below the threshold of DECADES decades (1st..99th percentile) it stays linear
    a = np.linspace(1.0, 10 ** (plots.DECADES - 0.2), 500)
    assert plots.axis_scale(a)[0] == "linear"
    assert plots.axis_scale([np.nan, 1.0])[0] == "linear"
    # the old promise holds too: synflow's 1e30-range scores get a log axis
    assert plots.axis_scale(10 ** rng.uniform(3, 46, 100))[0] == "log"


def test_y_limits_start_at_the_quantile_so_the_ten_percent_networks_do_not_squash():
    acc = np.concatenate([np.full(20, 10.0), np.linspace(60.0, 94.0, 980)])
    lo, hi = plots.y_limits(acc)
    q = np.quantile(acc, plots.Y_QUANTILE)
    assert lo == pytest.approx(q - 0.04 * (94.0 - q)) and hi == pytest.approx(94.0 + 0.04 * (94.0 - q))
    assert lo > 50.0                                          # the 10 % networks are below, on the edge
    assert plots.y_limits([np.nan, 3.0]) == (None, None)


def test_scatter_and_bars_write_pngs(tmp_path):
    rng = np.random.default_rng(1)
    acc = np.concatenate([np.full(5, 10.0), rng.uniform(70, 94, 95)])
    scores = {"wide": 10 ** rng.uniform(-2, 3, 100), "signed": rng.normal(size=100) * 10 ** rng.uniform(0, 4, 100),
              "plain": rng.normal(size=100)}
    scores["wide"][:3] = 0.0
    scores["plain"][0] = np.nan
    p = plots.scatter_grid(scores, acc, tmp_path / "s.png", title="t", rho={"wide": 0.5})
    assert p.read_bytes()[:8] == PNG
    summary = {"n": 100, "space": "nb201", "dataset": "cifar10",
               "proxies": {"a": {"abs_spearman": 0.6, "abs_spearman_ci95": [0.5, 0.7], "kendall": -0.4,
                                 "kendall_ci95": [-0.5, -0.3], "paper_abs_spearman": 0.59, "anchor": None},
                           "b": {"abs_spearman": None, "abs_spearman_ci95": None, "kendall": None,
                                 "kendall_ci95": None, "paper_abs_spearman": None, "anchor": 0.8}},
               "vote": {"agreement": 0.81, "paper": 0.817, "proxies": ["a", "b", "c"]},
               "baselines": {"train_12ep": {"spearman": 0.8, "spearman_ci95": [0.77, 0.83], "kendall": 0.63,
                                            "kendall_ci95": [0.6, 0.66]}}}
    assert plots.rho_bars(summary, tmp_path / "b.png").read_bytes()[:8] == PNG
    summary["vote"] = None
    assert plots.rho_bars(summary, tmp_path / "b2.png").read_bytes()[:8] == PNG


def test_best_so_far_curve_and_band_match_plain_numpy():
    c = plots.best_so_far_curve([None, 50.0, float("nan"), 40.0, 60.0], budget=7)
    np.testing.assert_array_equal(c[1:], [50.0, 50.0, 50.0, 60.0, 60.0, 60.0])
    assert np.isnan(c[0])
    rng = np.random.default_rng(2)
    curves = np.maximum.accumulate(rng.uniform(80, 94, (6, 30)), axis=1)
    mean, lo, hi, k = plots.curve_band(curves)
    sem = curves.std(axis=0, ddof=1) / np.sqrt(6)
    np.testing.assert_allclose(mean, curves.mean(axis=0))
    np.testing.assert_allclose(hi - mean, stats.t.ppf(0.975, 5) * sem)
    np.testing.assert_allclose(mean - lo, stats.t.ppf(0.975, 5) * sem)
    assert (k == 6).all()
    one = plots.curve_band(curves[:1])
    assert np.isnan(one[1]).all()                             # one seed: no interval


def test_search_cli_writes_the_curve_and_report_overlays_variants(tmp_path, capsys):
    for algo in ("random", "evolution"):
        assert cli_main(["search", "--space", "toy", "--algo", algo, "--budget", "12", "--seeds", "3",
                         "--out", str(tmp_path / algo), "--no-progress", "--option", "population=4",
                         "--option", "tournament=2"] if algo == "evolution" else
                        ["search", "--space", "toy", "--algo", algo, "--budget", "12", "--seeds", "3",
                         "--out", str(tmp_path / algo), "--no-progress"]) == 0
        assert (tmp_path / algo / "best_so_far.png").read_bytes()[:8] == PNG
    logs = [json.loads((tmp_path / "random" / f"seed_{s}.json").read_text()) for s in range(3)]
    want = np.stack([np.maximum.accumulate([r["accuracy"] for r in g["records"]]) for g in logs]).mean(axis=0)
    rows = list(csv.DictReader(open(tmp_path / "random" / "best_so_far.csv")))
    np.testing.assert_allclose([float(r["mean"]) for r in rows], want)
    capsys.readouterr()
    assert cli_main(["report", str(tmp_path / "random"), str(tmp_path / "evolution"), "--out",
                     str(tmp_path / "both")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "both" / "best_so_far.csv")))
    assert {r["variant"] for r in rows} == {"random, warmup -, move -", "evolution, warmup -, move -"}
    assert len(rows) == 24
