"""Proxy engine on NB201 networks: score_arch, seeding, the synflow BatchNorm quirk, memory, vote."""
from __future__ import annotations

import gc
import hashlib
import itertools
import math
import random
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import torch.nn as nn

import zcfast.spaces
from zcfast.metrics import vote_agreement
from zcfast.proxies import arch_seed, score_detailed
from zcfast.scoring import build_seeded, score_arch, synflow_bn_rule
from zcfast.proxies.vote import pairwise_vote, rank_vote

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import official_style  # noqa: E402

SIX = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow")
ALL_CONV = ("nor_conv_3x3",) * 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def space():
    return zcfast.spaces.get("nb201")


class _Small:
    """NB201 space whose networks are narrow and shallow (fast tests), same code path."""

    name = "nb201"

    def __init__(self, space, channels: int = 4, cells: int = 1) -> None:
        self.space, self.channels, self.cells = space, channels, cells

    def key(self, arch):
        return self.space.key(arch)

    def build(self, arch, num_classes: int = 10):
        return self.space.build(arch, num_classes, channels=self.channels, cells_per_stage=self.cells)


def batch(n: int = 8, hw: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, hw, hw, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_arch_seed_formula():
    key = "0123abcd"
    expect = int.from_bytes(hashlib.sha256(b"42:0123abcd").digest()[:8], "little") & (2**63 - 1)
    assert arch_seed(42, key) == expect
    assert arch_seed(42, key) != arch_seed(43, key)
    with pytest.raises(ValueError):
        arch_seed("42", key)  # type: ignore[arg-type]


def test_score_arch_independent_of_order_and_rng(space):
    small = _Small(space)
    x, y = batch()
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(3)]
    first = [score_arch(small, a, x, y, proxies=("snip", "synflow")) for a in archs]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    second = [score_arch(small, a, x, y, proxies=("snip", "synflow")) for a in reversed(archs)][::-1]
    assert first == second
    assert torch.equal(state, torch.get_rng_state())


def test_synflow_keeps_reduction_block_batchnorms(space):
    net = build_seeded(space, ALL_CONV)
    kept = synflow_bn_rule("nb201", net)
    names = {n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
    expect = {n for n, m in net.named_modules()
              if isinstance(m, nn.BatchNorm2d) and any(m is r for r in net.reduction_batchnorms())}
    assert set(kept) == expect and 0 < len(expect) < len(names)
    assert {n.split(".")[1] for n in kept} == {"5", "11"}  # cells.5 and cells.11: the two blocks
    assert synflow_bn_rule("nb101", net) is None


def test_nb201_all_six_match_official_style_with_quirk(space):
    small = _Small(space, channels=8, cells=1)
    x, y = batch(n=16, hw=16)
    net = build_seeded(small, ALL_CONV)
    keep = synflow_bn_rule("nb201", net)
    off = official_style.official_scores(net, x, y, synflow_keep_bn=keep)
    got = score_arch(small, ALL_CONV, x, y, proxies=SIX)
    for k in SIX:
        assert abs(got[k] - off[k]) <= 2e-5 * abs(off[k]), (k, got[k], off[k])
    # the quirk matters: removing every BatchNorm gives a different synflow
    all_removed = score_detailed(net, x, y, proxies=("synflow",))["synflow"].value
    assert abs(all_removed - got["synflow"]) > 1e-6 * abs(got["synflow"])


def test_nb201_sample_scores_finitely(space):
    small = _Small(space, channels=8, cells=1)
    x, y = batch(n=16, hw=16)
    rng = random.Random(1)
    archs = [ALL_CONV] + [space.sample(rng) for _ in range(5)]
    for a in archs:
        res = score_arch(small, a, x, y, proxies=SIX, detailed=True)
        live = any(op in ("nor_conv_1x1", "nor_conv_3x3", "skip_connect", "avg_pool_3x3")
                   for op in a)
        for name, r in res.items():
            if r.error is not None:  # only allowed for a genuinely degenerate network
                assert name == "jacob_cov" and "zero variance" in r.error, (a, name, r.error)
            else:
                assert math.isfinite(r.value), (a, name)
        assert res["synflow"].log_value is not None
        assert live or res["snip"].value >= 0


@pytest.mark.skipif(not Path(__file__).resolve().parents[1].joinpath("zcfast", "assets").exists(),
                    reason="no shipped data")
def test_full_size_all_conv_on_paper_batch(space):
    from zcfast.data import paper_batch

    x, y = paper_batch(batch_size=16)
    res = score_arch(space, ALL_CONV, x, y, proxies=SIX, detailed=True)
    for name, r in res.items():
        assert r.ok, (name, r)
    assert 1e10 < res["synflow"].value < 1e80


from zcfast.testing import live_tensor_count as _live_tensors  # noqa: E402


def test_no_tensor_survives_a_call(space):
    # strict leak check: a hook closing over its own tensor makes a cycle through autograd's
    # C++ nodes that gc cannot free (this caught a real fisher leak of ~100 MB per full-size call)
    small = _Small(space, channels=4, cells=1)
    x, y = batch(n=8, hw=8)
    score_arch(small, ALL_CONV, x, y, proxies=SIX)
    gc.collect()
    before = _live_tensors()
    for a in (ALL_CONV, ("skip_connect",) * 6, ("none", "avg_pool_3x3", "nor_conv_1x1") * 2):
        score_arch(small, a, x, y, proxies=SIX)
    gc.collect()
    assert _live_tensors() == before


def test_no_tensor_accumulates_over_many_architectures(space):
    """Memory-flat over many architectures, counted robustly: live tensor objects (not RSS,
    which moves with the allocator and the machine's load) are the same after 30 more calls."""
    small = _Small(space, channels=4, cells=1)
    x, y = batch(n=8, hw=8)
    archs = list(itertools.islice(space.enumerate(), 0, 15625, 15625 // 40))[:40]
    for a in archs[:10]:
        score_arch(small, a, x, y, proxies=SIX)
    gc.collect()
    before = _live_tensors()
    for a in archs[10:]:
        score_arch(small, a, x, y, proxies=SIX)
    gc.collect()
    assert _live_tensors() == before


@pytest.mark.slow  # RSS depends on the allocator and the machine's load: not in the default suite
def test_memory_stays_flat_over_many_architectures(space):
    small = _Small(space, channels=4, cells=1)
    x, y = batch(n=8, hw=8)
    archs = list(itertools.islice(space.enumerate(), 0, 15625, 15625 // 200))[:200]
    proc = psutil.Process()

    def run(chunk):
        for a in chunk:
            score_arch(small, a, x, y, proxies=SIX)

    run(archs[:40])  # warm-up: allocator pools, lazy imports
    gc.collect()
    rss0 = proc.memory_info().rss
    run(archs[40:])
    gc.collect()
    grown = proc.memory_info().rss - rss0
    assert grown < 30 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over {len(archs) - 40} architectures"


# ------------------------------------------------------------------------------------------
# vote
# ------------------------------------------------------------------------------------------
def test_pairwise_vote_brute_force():
    rng = np.random.default_rng(0)
    n = 30
    acc = rng.normal(size=n)
    scores = {p: acc + rng.normal(scale=s, size=n) for p, s in
              (("synflow", 0.5), ("jacob_cov", 1.0), ("snip", 2.0))}
    scores["snip"][3] = np.nan
    right = total = 0
    for i in range(n):
        for j in range(n):
            if i == j or acc[i] == acc[j]:
                continue
            votes = sum(scores[p][i] - scores[p][j] > 0 for p in ("synflow", "jacob_cov", "snip"))
            better = votes >= 1.5
            right += better == (acc[i] > acc[j])
            total += 1
    assert pairwise_vote(scores, acc) == pytest.approx(right / total, abs=1e-15)
    assert pairwise_vote(scores, acc) == vote_agreement([scores["synflow"], scores["jacob_cov"], scores["snip"]], acc)
    with pytest.raises(ValueError, match="missing"):
        pairwise_vote({"snip": acc}, acc)


def test_rank_vote():
    s = {"synflow": [1.0, 3.0, 2.0, np.nan], "jacob_cov": [1.0, 2.0, 3.0, 0.0], "snip": [3.0, 2.0, 1.0, 0.0]}
    r = rank_vote(s)
    # normalised ranks (0 worst, 1 best), NaN worst
    expect = np.array([(1/3 + 1/3 + 1.0), (1.0 + 2/3 + 2/3), (2/3 + 1.0 + 1/3), (0 + 0 + 0)]) / 3
    np.testing.assert_allclose(r, expect)
    c = rank_vote(s, method="copeland")
    brute = np.zeros(4)
    for i in range(4):
        for j in range(4):
            if i != j:
                v = sum((np.nan_to_num(np.array(s[p]), nan=-np.inf)[i] >
                         np.nan_to_num(np.array(s[p]), nan=-np.inf)[j]) for p in s)
                brute[i] += v >= 2
    np.testing.assert_allclose(c, brute / 3)
    with pytest.raises(ValueError, match="method"):
        rank_vote(s, method="borda")
