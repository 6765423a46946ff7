"""bench/suite_cost.py at toy size: every proxy alone and all in one call, values checked first."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import zcfast

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture()
def suite_cost(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sys.modules.pop("suite_cost", None)
    import suite_cost as mod

    return mod


def test_writes_each_proxy_alone_and_all_in_one(suite_cost, tmp_path) -> None:
    rc = suite_cost.main(["--archs", "2", "--batch", "4", "--proxies", "grad_norm,params,l2_norm",
                          "--out-dir", str(tmp_path), "--out", "c"])
    assert rc == 0
    res = json.loads((tmp_path / "c.json").read_text())
    assert res["proxies"] == ["grad_norm", "params", "l2_norm"] and res["batch"] == 4 and len(res["archs"]) == 2
    assert all(len(res["alone_s"][p]) == 2 and min(res["alone_s"][p]) > 0 for p in res["proxies"])
    assert len(res["together_s"]) == 2 and res["max_rel_diff"]["params"] == 0.0
    md = (tmp_path / "c.md").read_text()
    assert "| grad_norm |" in md and "all in one call" in md


def test_a_value_that_differs_fails_before_writing(suite_cost, tmp_path, monkeypatch, capsys) -> None:
    real = zcfast.score_arch

    def skewed(space, arch, x, y, proxies, **kw):
        out = dict(real(space, arch, x, y, proxies, **kw))
        if len(proxies) > 1:   # the all-in-one call only
            out["params"] = out["params"] * 1.5
        return out

    monkeypatch.setattr(zcfast, "score_arch", skewed)
    rc = suite_cost.main(["--archs", "1", "--batch", "4", "--proxies", "params,l2_norm",
                          "--out-dir", str(tmp_path), "--out", "c"])
    assert rc == 1
    assert "arch 0 params: all-in-one" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
