"""The one front door (issue #11, classes 2, 4, 5, 10, 11, 12 for score/correlate/search).

- names are resolved by ``zcfast.options`` before any work starts, identically in the CLI and
  in ``zcfast.correlate.correlate`` / ``zcfast.search.search``;
- a space without ground truth is refused up front, with its reason; sampling is lazy;
- correlate and search share one store run definition (``store.RunConfig``) and its cached
  scores, computed under one thread count (``options.scoring_threads``) however executed;
- a NaN carries its reason into the store, scores.csv and the search log;
- ``zcfast score --model``: seed before build, the current folder importable, input shape /
  dtype, token ids;
- ``cli.main``: one line and a status for every error, never a traceback.
"""
from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import zcfast.correlate as corr
from zcfast import cli, options, spaces
from zcfast.search import ComputedProxy, search
from zcfast.spaces.darts import DartsSpace
from zcfast.store import BatchKey, ResultStore, RunConfig, config_id

ROOT = Path(__file__).resolve().parents[1]
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


# ------------------------------------------------------------------ ground truth and sampling
def test_ground_truth_problem_of_each_space():
    assert spaces.get("nb201").ground_truth_problem("cifar100") is None
    assert spaces.get("nb201").ground_truth_problem(None) is None
    assert "svhn" in spaces.get("nb201").ground_truth_problem("svhn")
    why = spaces.get("darts").ground_truth_problem("cifar10")
    assert "NAS-Bench-301" in why and "not installed" in why
    with pytest.raises(ValueError, match="correlate needs benchmark ground truth.*darts"):
        options.resolve_space("darts", ground_truth_for="correlate", dataset="cifar10")
    assert options.resolve_space("darts").name == "darts"  # scan needs none


def test_correlate_and_search_refuse_darts_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="darts space has none.*NAS-Bench-301"):
        corr.correlate("darts", "cifar10", "synflow", 2, 0, out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="search needs benchmark ground truth"):
        search("darts", "random", 2)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        search("nb201", "random", 2, dataset="svhn")
    # a user trainer needs no ground truth
    res = search("darts", "random", 2, oracle=lambda arch: 50.0)
    assert res.trained == 2 and res.best_accuracy == 50.0


def test_sampling_a_huge_space_is_lazy_and_memory_flat(monkeypatch):
    sp = DartsSpace()

    def no_enumeration():
        raise AssertionError("sample_archs enumerated a 1e18-sized space")

    monkeypatch.setattr(sp, "enumerate", no_enumeration)
    tracemalloc.start()
    try:
        two = corr.sample_archs(sp, 2, 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len({sp.encode(a) for a in two}) == 2
    assert peak < 5 * 2**20, peak
    five = corr.sample_archs(sp, 5, 0)
    assert five[:2] == two  # a larger n extends a smaller one with the same seed
    with pytest.raises(ValueError, match="too large to enumerate"):
        corr.sample_archs(sp, None, 0)


# ------------------------------------------------------------------ one store contract
def test_run_config_keeps_the_old_correlate_run_ids():
    """RunConfig.to_dict reproduces the dict correlate built by hand, so stores keep their ids."""
    from zcfast import data

    x, y = data.paper_batch("cifar10", 64, 42)
    fp = data.batch_fingerprint(x, y)
    old = {"study": "correlate", "space": "nb201", "num_classes": 10,
           "batch": {"fingerprint": fp, "data": "shipped:cifar10", "size": 64, "seed": 42,
                     "augment": True, "norm": "cifar10"},
           "init_seed": 42, "device": "cpu", "row_key": "arch_str", "proxy": "synflow"}
    batch = BatchKey(fingerprint=fp, data="shipped:cifar10", size=64, seed=42, augment=True, norm="cifar10")
    cfg = RunConfig(kind="proxy", space="nb201", proxies=("synflow",), num_classes=10, batch=batch,
                    init_seed=42, device="cpu")
    assert cfg.to_dict() == old
    assert cfg.run_id() == config_id(old) == "6b0eee437f4c320b"   # pinned: the paper batch's run
    per_arch = RunConfig(kind="proxy", space="nb201", proxies=("synflow",), num_classes=10,
                         batch=BatchKey(fp, "shipped:cifar10", 64, 42, True, "cifar10", data.PER_ARCH_SCHEME),
                         init_seed=42, device="cpu", variant="official")
    assert per_arch.run_id() == "bd43eafe96f82ee6"
    # search's computed proxy builds the very same run
    assert ComputedProxy(spaces.get("nb201"), "synflow").run_config() == cfg


def _nb201_archs(n: int) -> list:
    sp = spaces.get("nb201")
    return corr.sample_archs(sp, n, 0)


def test_correlate_then_search_reuses_cached_scores(tmp_path):
    sp = spaces.get("nb201")
    store = tmp_path / "s.sqlite"
    r = corr.correlate("nb201", "cifar10", "synflow", 3, 0, store=store, batch_size=8, time_sample=0,
                       progress=False)
    with ResultStore(store) as st:
        proxy = ComputedProxy(sp, "synflow", batch_size=8, store=st)
        got = proxy.scores(_nb201_archs(3))
    assert proxy.computed == 0           # every score came from correlate's rows
    np.testing.assert_array_equal(got, r.scores["synflow"])


def test_search_then_correlate_reuses_cached_scores(tmp_path):
    sp = spaces.get("nb201")
    store = tmp_path / "s.sqlite"
    with ResultStore(store) as st:
        proxy = ComputedProxy(sp, "synflow", batch_size=8, store=st)
        got = proxy.scores(_nb201_archs(3))
    assert proxy.computed == 3
    r = corr.correlate("nb201", "cifar10", "synflow", 3, 0, store=store, batch_size=8, time_sample=0,
                       progress=False)
    assert r.summary["scored_archs"] == 0 and r.summary["resumed_archs"] == 3
    np.testing.assert_array_equal(r.scores["synflow"], got)


def test_inline_and_workers_give_identical_values_under_one_run_id(tmp_path):
    """Values under one run id do not depend on the execution: both score with one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)   # the caller's setting must not leak into stored values
    try:
        kw = dict(batch_size=8, time_sample=0, progress=False)
        inline = corr.correlate("nb201", "cifar10", "grasp", 2, 0, store=tmp_path / "a.sqlite", **kw)
        assert torch.get_num_threads() == 2   # restored
        pooled = corr.correlate("nb201", "cifar10", "grasp", 2, 0, store=tmp_path / "b.sqlite",
                                workers=1, **kw)
    finally:
        torch.set_num_threads(before)
    assert inline.summary["run_ids"] == pooled.summary["run_ids"]
    np.testing.assert_array_equal(inline.scores["grasp"], pooled.scores["grasp"])


# ------------------------------------------------------------------ a NaN keeps its reason
class _Result:
    def __init__(self, value, error=None):
        self.value, self.error = value, error


def _nan_scorer(space, arch, x, y, proxies, seed, num_classes, device):
    """First sampled arch: NaN with a reason; others: bare NaN (no reason) for jacob_cov."""
    out = {}
    for p in proxies:
        if p == "jacob_cov":
            out[p] = _Result(math.nan, "jacob_cov: a zero-variance Jacobian row")
        elif p == "snip":
            out[p] = math.nan
        else:
            out[p] = _Result(1.0)
    return out


def test_nan_reason_reaches_store_and_scores_csv(tmp_path):
    r = corr.correlate("nb201", "cifar10", "jacob_cov,snip,synflow", 3, 0, out=tmp_path / "o",
                       score_fn=_nan_scorer, time_sample=0, progress=False, plots=False)
    assert all(e == "jacob_cov: a zero-variance Jacobian row" for e in r.errors["jacob_cov"])
    assert all("snip is nan (no reason given by the scorer)" == e for e in r.errors["snip"])
    assert r.errors["synflow"] == ["", "", ""]
    with open(tmp_path / "o" / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {row["jacob_cov_error"] for row in rows} == {"jacob_cov: a zero-variance Jacobian row"}
    assert all(row["snip_error"] for row in rows) and not any(row["synflow_error"] for row in rows)
    with ResultStore(tmp_path / "o" / "results.sqlite", create=False) as st:
        for rid, cfg in st.runs().items():
            for row in st.rows(rid):
                if cfg["proxy"] == "synflow":
                    assert row.error is None and row.values == {"synflow": 1.0}
                else:
                    assert row.error and math.isnan(row.values[cfg["proxy"]])


def test_real_nan_jacob_cov_has_its_reason_in_store_and_search_log(tmp_path):
    """An architecture whose output ignores its input: jacob_cov NaN, with the engine's reason."""
    sp = spaces.get("nb201")
    arch = sp.decode(ALL_NONE)
    with ResultStore(tmp_path / "s.sqlite") as st:
        proxy = ComputedProxy(sp, "jacob_cov", batch_size=8, store=st)
        (value,) = proxy.scores([arch])
        assert math.isnan(value) and proxy.errors[ALL_NONE]
        (row,) = list(st.rows(proxy._run_id))
        assert row.error == proxy.errors[ALL_NONE]


# ------------------------------------------------------------------ zcfast score --model
MODELS = textwrap.dedent('''
    import torch.nn as nn

    def net(num_classes=10):
        return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, num_classes))

    def audio(num_classes=10):
        return nn.Sequential(nn.Conv1d(1, 4, 9, stride=8), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                             nn.Flatten(), nn.Linear(4, num_classes))

    class _Tok(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.emb = nn.Embedding(50, 8)
            self.head = nn.Linear(8, num_classes)

        def forward(self, ids):
            return self.head(self.emb(ids).mean(1))

    def tokens(num_classes=10):
        return _Tok(num_classes)
''')


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    (tmp_path / "zcf_front_models.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("zcf_front_models", None)
    while str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def _value(out: str, column: str) -> str:
    head, row = [line.split() for line in out.splitlines()[1:3]]
    return row[head.index(column)]


def test_score_model_seed_is_set_before_the_model_is_built(models_dir, capsys):
    seen = set()
    for _ in range(3):
        torch.randn(7)  # moves the global RNG: the model must not depend on it
        assert cli.main(["score", "--model", "zcf_front_models:net", "--batch-size", "8", "--seed", "7",
                         "--proxies", "synflow,snip"]) == 0
        seen.add(_value(capsys.readouterr().out, "synflow"))
    assert len(seen) == 1


def test_score_model_from_the_current_folder_without_pythonpath(models_dir):
    """The README example: `zcfast score --model mymodels:make_net` from the model's folder."""
    exe = Path(sys.executable).with_name("zcfast")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from zcfast.cli import main; "
                                                                "sys.path.remove('') if '' in sys.path else None; "
                                                                "sys.exit(main())"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run(cmd + ["score", "--model", "zcf_front_models:net", "--batch-size", "8", "--proxies",
                              "synflow"], cwd=models_dir, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "zcf_front_models:net" in p.stdout


def test_score_model_with_input_shape_audio_and_token_ids(models_dir, capsys):
    assert cli.main(["score", "--model", "zcf_front_models:audio", "--input-shape", "1,256", "--batch-size",
                     "8", "--proxies", "grad_norm,synflow,jacob_cov"]) == 0
    out = capsys.readouterr().out
    assert "random float32 inputs of shape [1, 256]" in out
    assert _value(out, "grad_norm") not in ("nan", "0.0000")
    # token ids: the proxies that never differentiate the input are computed
    code = cli.main(["score", "--model", "zcf_front_models:tokens", "--input-shape", "12", "--input-dtype",
                     "int64", "--vocab", "50", "--batch-size", "8", "--proxies", "grad_norm,snip,synflow"])
    out = capsys.readouterr().out
    assert code == 0
    assert _value(out, "grad_norm") != "nan" and _value(out, "snip") != "nan"
    assert re.search(r"synflow: .*int", out)   # NaN with the reason (integer input)
    # float64 converts the model too
    assert cli.main(["score", "--model", "zcf_front_models:audio", "--input-shape", "1,64", "--input-dtype",
                     "float64", "--batch-size", "4", "--proxies", "snip"]) == 0


# ------------------------------------------------------------------ cli.main: status and one line
@pytest.mark.parametrize("exc, code, text", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (PermissionError(13, "Permission denied", "/ro/x"), 2, "Permission denied: '/ro/x'"),
    (IsADirectoryError(21, "Is a directory", "out"), 2, "Is a directory"),
    (ValueError("first line\nsecond line"), 2, "first line second line"),
    (KeyError("no such column"), 2, "no such column"),
    (RuntimeError("boom"), 1, "RuntimeError: boom (unexpected; ZCFAST_TRACEBACK=1"),
    (MemoryError(), 1, "out of memory"),
], ids=["ctrl-c", "permission", "is-a-directory", "multi-line", "key-error", "unexpected", "memory"])
def test_main_turns_every_error_into_a_status_and_one_line(monkeypatch, capsys, exc, code, text):
    from zcfast.commands import info

    def boom(args):
        raise exc

    monkeypatch.setattr(info, "run", boom)
    monkeypatch.delenv("ZCFAST_TRACEBACK", raising=False)
    assert cli.main(["info"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert text in err[-1] and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("zcfast info:")


def test_commands_share_the_one_resolver(monkeypatch):
    """No command keeps its own proxy/space/dataset tables."""
    import zcfast.commands.score as score_cmd
    import zcfast.search.common as common

    assert not hasattr(score_cmd, "_proxies")
    assert corr.resolve_proxies is options.resolve_proxies
    assert corr.PAPER_PROXIES is options.PAPER_PROXIES
    for src in (ROOT / "zcfast" / "commands" / "score.py", ROOT / "zcfast" / "search" / "common.py",
                ROOT / "zcfast" / "correlate.py"):
        text = src.read_text()
        assert '"imagenet16-120": 120' not in text and "NUM_CLASSES[" not in text, src
    assert common.make_proxy("synflow", spaces.get("nb201")).num_classes == 10


def test_correlate_exits_1_when_every_architecture_failed(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("scorer is broken")

    monkeypatch.setattr(corr, "_default_score_fn", broken)
    code = cli.main(["correlate", "--n", "2", "--proxies", "synflow", "--out", str(tmp_path / "o"), "--quiet",
                     "--no-plots", "--time-sample", "0", "--batch-size", "8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "every architecture failed to score (RuntimeError: scorer is broken)" in err[-1]
    with ResultStore(tmp_path / "o" / "results.sqlite", create=False) as st:  # the errors are kept
        (rid,) = st.runs()
        assert [r.error for r in st.rows(rid)] == ["RuntimeError: scorer is broken"] * 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(proxies=None), "proxies must be one of 'paper', 'all', 'suite-zero', 'every'"),
    (dict(proxies=["snip", 3]), "proxy names must be strings"),
    (dict(proxies="vote"), "'vote' is not a per-network proxy"),
    (dict(workers=-1), "workers must be an integer >= 0"),
    (dict(recycle=0), "recycle must be an integer >= 1"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(device="meta"), "device type 'meta' is not supported"),
    (dict(space=None), "space must be a search-space name"),
    (dict(dataset="svhn"), "unknown dataset 'svhn'"),
], ids=["proxies-none", "proxies-non-str", "proxies-vote", "workers", "recycle", "batch-size", "device",
        "space-none", "dataset"])
def test_correlate_api_refuses_before_any_work(tmp_path, kwargs, match):
    args = dict(space="nb201", dataset="cifar10", proxies="synflow", n=2, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(match)):
        corr.correlate(**args, out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ --benchmark (issue #14)
def test_benchmark_path_configures_a_copy_before_any_work(tmp_path):
    from zcfast.search import resolve_search_space
    from zcfast.spaces.nb101 import NB101Space

    records = ROOT / "zcfast" / "assets" / "nb101" / "nb101_records_30.json"
    mine = NB101Space()
    sp = options.resolve_space(mine, ground_truth_for="correlate", dataset="cifar10", benchmark=str(records))
    assert sp is not mine and mine._records_path() in (None, os.environ.get("ZCFAST_NB101_PATH"))
    assert len(sp.records()) == 30
    with pytest.raises(ValueError, match="the toy space takes no --benchmark"):
        resolve_search_space("toy", benchmark=str(records))
    with pytest.raises(FileNotFoundError, match="--benchmark .*absent.json.* does not exist"):
        options.resolve_space("nb101", benchmark=str(tmp_path / "absent.json"))
    with pytest.raises(ValueError, match="nb101_records_30.json"):   # not an NB201 file: refused, named
        options.resolve_space("nb201", benchmark=str(records))
    # the search over a 30-record benchmark stays inside it, and says how many it holds
    sub = resolve_search_space("nb101", ground_truth_for="search", dataset="cifar10", benchmark=str(records))
    assert sub.size() == 30 and sub.name == "nb101"
    res = search(sub, "random", 5, seed=0)
    assert all(r.error is None and math.isfinite(r.accuracy) for r in res.records)
