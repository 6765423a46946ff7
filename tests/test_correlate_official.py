"""The official zero-cost-nas options of the correlation study: the paper's NB201 model
(``variant="official"``) and a new batch per architecture (``batch_per_arch=True``)."""
from __future__ import annotations

import hashlib
import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

import zcfast.correlate as corr
from zcfast import data, spaces
from zcfast.cli import main as cli_main
from zcfast.scoring import build_seeded, score_arch, synflow_bn_rule
from zcfast.spaces import nb201
from zcfast.store import config_id

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SP = spaces.get("nb201")
# two conv edges of each kind, a pool, a skip: 15 cells x 4 convs
ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_1x1~2|"
PAPER = ("grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov")


# ------------------------------------------------------------------------------------------
# the official NB201 model
# ------------------------------------------------------------------------------------------
def test_official_variant_has_cell_conv_biases_and_affine_free_stat_free_cell_bns():
    net = SP.build(ARCH, variant="official")
    bench = SP.build(ARCH)
    assert net.variant == "official" and bench.variant == "benchmark"
    convs = net.cell_convs()
    assert len(convs) == 15 * 4
    assert all(c.bias is not None and c.bias.shape == (c.out_channels,) for c in convs)
    assert all(c.bias is None for c in bench.cell_convs())
    cell_bns = [m for layer in net.cells if isinstance(layer, nb201.NB201Cell)
                for m in layer.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(cell_bns) == 60
    for bn in cell_bns:
        assert not bn.affine and not bn.track_running_stats
        assert bn.weight is None and bn.running_mean is None
    # stem, reduction blocks and final BN are the benchmark's: affine, running stats, no conv bias
    for bn in net.reduction_batchnorms() + [net.stem[1], net.lastact[0]]:
        assert bn.affine and bn.track_running_stats
    cell_ids = {id(c) for c in convs}
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d) and id(m) not in cell_ids)
    # PyTorch's default bias init: uniform in +-1/sqrt(fan_in)
    for c in convs:
        bound = 1.0 / math.sqrt(c.in_channels * c.kernel_size[0] * c.kernel_size[1])
        assert float(c.bias.detach().abs().max()) <= bound


def test_official_weights_equal_benchmark_weights_for_the_same_seed():
    state = torch.random.get_rng_state()
    bench = build_seeded(SP, ARCH, 42)
    off = build_seeded(SP, ARCH, 42, variant="official")
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched
    weights = {n: p for n, p in bench.named_parameters() if n.endswith("weight") and p.dim() > 1}
    off_params = dict(off.named_parameters())
    assert len(weights) > 60
    for n, w in weights.items():
        assert torch.equal(off_params[n], w), n
    # biases: reproducible, and another init seed gives other biases (and other weights)
    again = build_seeded(SP, ARCH, 42, variant="official")
    other = build_seeded(SP, ARCH, 43, variant="official")
    b1 = torch.cat([c.bias for c in off.cell_convs()])
    assert torch.equal(b1, torch.cat([c.bias for c in again.cell_convs()]))
    assert not torch.equal(b1, torch.cat([c.bias for c in other.cell_convs()]))
    # the forward pass (training mode, batch statistics) is the same up to float rounding
    x, _ = data.paper_batch("cifar10", 8, 0)
    bench.train(), off.train()
    with torch.no_grad():
        torch.testing.assert_close(off(x), bench(x), rtol=1e-4, atol=1e-5)


def test_bad_variant_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="'oficial'"):
        SP.build(ARCH, variant="oficial")
    with pytest.raises(ValueError, match="'oficial'.*benchmark, official"):
        build_seeded(SP, ARCH, 42, variant="oficial")
    nb101 = spaces.get("nb101")
    with pytest.raises(ValueError, match="'official' for the nb101 space"):
        build_seeded(nb101, nb101.sample(random.Random(0)), 42, variant="official")
    store = tmp_path / "s.sqlite"
    with pytest.raises(ValueError, match="'oficial'"):
        corr.correlate("nb201", "cifar10", "synflow", 2, 0, store=store, variant="oficial")
    with pytest.raises(ValueError, match="score_fn"):
        corr.correlate("nb201", "cifar10", "synflow", 2, 0, store=store, variant="official",
                       score_fn=lambda *a, **k: {})
    assert not store.exists()


def test_synflow_keeps_the_same_reduction_batchnorms_for_both_variants():
    bench = build_seeded(SP, ARCH, 42)
    off = build_seeded(SP, ARCH, 42, variant="official")
    kept = synflow_bn_rule("nb201", off)
    assert kept == synflow_bn_rule("nb201", bench) and len(kept) == 4  # 2 blocks x (conv_a, conv_b)


def test_proxies_that_do_not_see_the_bias_agree_between_variants():
    x, y = data.paper_batch("cifar10", 64, 42)
    # both through the general engine (fast=False), so only the network differs
    b = score_arch(SP, ARCH, x, y, list(PAPER), seed=42, fast=False)
    o = score_arch(SP, ARCH, x, y, list(PAPER), seed=42, variant="official", fast=False)
    # a bias before a batch-statistics BatchNorm cancels: equal up to float rounding
    for p, rel in (("grad_norm", 1e-3), ("snip", 1e-3), ("jacob_cov", 1e-4), ("grasp", 5e-3)):
        assert o[p] == pytest.approx(b[p], rel=rel), (p, o[p], b[p])
    # fisher hooks the conv output Wx + b; synflow sees |b| (cell BNs removed)
    assert abs(o["fisher"] - b["fisher"]) > 3e-3 * abs(b["fisher"]), (o["fisher"], b["fisher"])
    assert o["synflow"] != pytest.approx(b["synflow"], rel=1e-4)


def test_variant_is_part_of_the_store_key_and_never_mixes(tmp_path):
    store = tmp_path / "s.sqlite"
    kw = dict(store=store, time_sample=0, progress=False)
    rb = corr.correlate("nb201", "cifar10", "synflow", 3, 0, **kw)
    ro = corr.correlate("nb201", "cifar10", "synflow", 3, 0, variant="official", **kw)
    assert rb.summary["run_ids"]["synflow"] != ro.summary["run_ids"]["synflow"]
    assert ro.summary["scored_archs"] == 3 and ro.summary["resumed_archs"] == 0  # nothing reused
    assert ro.summary["variant"] == "official" and rb.summary["variant"] == "benchmark"
    assert not np.array_equal(rb.scores["synflow"], ro.scores["synflow"])
    again = corr.correlate("nb201", "cifar10", "synflow", 3, 0, variant="official", **kw)
    assert again.summary["scored_archs"] == 0
    np.testing.assert_array_equal(again.scores["synflow"], ro.scores["synflow"])


def test_default_run_key_is_unchanged_by_the_new_options(tmp_path):
    """Stores written before the options existed keep their run ids (they resume)."""
    r = corr.correlate("nb201", "cifar10", "synflow", 2, 0, store=tmp_path / "s.sqlite", time_sample=0,
                       progress=False)
    x, y = data.paper_batch("cifar10", 64, 42)
    old = {"study": "correlate", "space": "nb201", "num_classes": 10,
           "batch": {"fingerprint": data.batch_fingerprint(x, y), "data": "shipped:cifar10", "size": 64,
                     "seed": 42, "augment": True, "norm": "cifar10"},
           "init_seed": 42, "device": "cpu", "row_key": "arch_str", "proxy": "synflow"}
    assert r.summary["run_ids"]["synflow"] == config_id(old)


def test_cli_variant_flag_on_a_tiny_run(tmp_path, capsys):
    out = tmp_path / "o"
    rc = cli_main(["correlate", "--proxies", "synflow,fisher", "--n", "3", "--variant", "official",
                   "--out", str(out), "--time-sample", "0", "--no-plots", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "network variant official" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["variant"] == "official" and summary["n"] == 3
    sp = spaces.get("nb201")
    x, y = data.paper_batch("cifar10", 64, 42)
    arch = corr.sample_archs(sp, 3, 0)[0]
    want = score_arch(sp, arch, x, y, ["fisher"], seed=42, variant="official")["fisher"]
    got = corr.correlate("nb201", "cifar10", "fisher", 1, 0, store=out / "results.sqlite", variant="official",
                         compute=False, progress=False).scores["fisher"][0]
    assert got == pytest.approx(want, rel=1e-6)
    rc = cli_main(["correlate", "--proxies", "synflow", "--n", "3", "--variant", "nope",
                   "--out", str(tmp_path / "bad"), "--quiet"])
    assert rc != 0
    assert "'nope'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# one batch per architecture
# ------------------------------------------------------------------------------------------
def test_per_arch_batches_are_deterministic_and_differ_between_architectures():
    src = data.PaperBatches("cifar10", 64, 42)
    fx, fy = src.fixed()
    px, py = data.paper_batch("cifar10", 64, 42)
    assert torch.equal(fx, px) and torch.equal(fy, py)
    a, b = corr.sample_archs(SP, 2, 0)
    xa, ya = src.for_arch(SP.key(a))
    xa2, ya2 = data.PaperBatches("cifar10", 64, 42).for_arch(SP.key(a))
    assert torch.equal(xa, xa2) and torch.equal(ya, ya2)
    xb, _ = src.for_arch(SP.key(b))
    assert not torch.equal(xa, xb) and not torch.equal(xa, fx)
    assert xa.shape == fx.shape and xa.dtype == fx.dtype
    # same images and augmentation: make_batch with the architecture's own seed
    s = data.arch_batch_seed(42, SP.key(a))
    mx, my = data.make_batch(src.images, src.labels, 64, s, data.MEAN["cifar10"], data.STD["cifar10"])
    assert torch.equal(mx, xa) and torch.equal(my, ya)
    assert data.arch_batch_seed(43, SP.key(a)) != s
    with pytest.raises(ValueError, match="batch seed"):
        data.arch_batch_seed("42", SP.key(a))  # type: ignore[arg-type]


def _batch_score_fn(space, arch, x, y, proxies, seed, num_classes, device):
    """Scores that identify the batch the scorer was given (module level: picklable)."""
    h = int(hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:12], 16) / 2**48
    return {p: h + k for k, p in enumerate(proxies)}


@pytest.fixture
def fake_proxies(monkeypatch):
    """The paper's six are registered proxies (kept as a fixture for the tests' signatures)."""


def test_correlate_batch_per_arch_inline_workers_and_store_key(tmp_path, fake_proxies):
    kw = dict(time_sample=0, progress=False, score_fn=_batch_score_fn)
    fixed = corr.correlate("nb201", "cifar10", "snip", 6, 0, store=tmp_path / "s.sqlite", **kw)
    per = corr.correlate("nb201", "cifar10", "snip", 6, 0, store=tmp_path / "s.sqlite", batch_per_arch=True, **kw)
    assert len(set(fixed.scores["snip"].tolist())) == 1  # one batch for all
    assert len(set(per.scores["snip"].tolist())) == 6  # a batch of its own for each
    assert per.summary["run_ids"]["snip"] != fixed.summary["run_ids"]["snip"]
    assert per.summary["scored_archs"] == 6 and per.summary["batch_per_arch"] is True
    src = data.PaperBatches("cifar10", 64, 42)
    for s, v in zip(per.archs, per.scores["snip"]):
        x, y = src.for_arch(SP.key(SP.decode(s)))
        assert v == _batch_score_fn(SP, None, x, y, ["snip"], 42, 10, "cpu")["snip"]
    work = corr.correlate("nb201", "cifar10", "snip", 6, 0, store=tmp_path / "w.sqlite", batch_per_arch=True,
                          workers=1, recycle=3, **kw)
    np.testing.assert_array_equal(work.scores["snip"], per.scores["snip"])
    assert work.summary["run_ids"] == per.summary["run_ids"]


def test_cli_batch_per_arch_flag(tmp_path, capsys, fake_proxies, monkeypatch):
    monkeypatch.setattr(corr, "_default_score_fn", lambda sp, a, x, y, proxies, seed, num_classes, device,
                        variant="benchmark": _batch_score_fn(sp, a, x, y, proxies, seed, num_classes, device))
    out = tmp_path / "o"
    rc = cli_main(["correlate", "--proxies", "snip", "--n", "3", "--batch-per-arch", "--out", str(out),
                   "--time-sample", "0", "--no-plots", "--quiet"])
    assert rc == 0
    assert "one batch per architecture" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batch_per_arch"] is True and "per_arch" in summary["batch"]
