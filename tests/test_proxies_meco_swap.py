"""MeCo (meco, meco_opt) and SWAP (swap, swap_reg) on the module backend
(zcfast/proxies/meco.py, zcfast/proxies/swap.py): each against an independent numpy/plain-PyTorch
re-statement of the official code (HamsterMimi/MeCo@0d830dd2 ``correlation/NAS_Bench_201.py``
and its packaged ``measures/meco.py``; pym1024/SWAP@f6049f7c ``src/metrics/swap.py`` +
``correlation.py``) written below, on tiny seeded CNNs and NAS-Bench-201 networks; the
undefined cases (NaN with the reason); determinism under ``seed``; clean-up and the caller's
model unchanged; routing of score_arch on NB201 to the module backend."""
from __future__ import annotations

import copy
import math
import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import zcfast
from zcfast.proxies import ProxyResult, register_proxy, score_detailed, unregister_need, unregister_proxy
from zcfast.proxies import meco as meco_mod
from zcfast.proxies import swap as swap_mod
from zcfast.proxies.needs import register_need
from zcfast.proxies.registry import resolve
from zcfast.spaces.nb201 import NB201Network
from zcfast.testing import ModelSnapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------
# independent re-statements of the official code (numpy, own copy, own hooks)
# ------------------------------------------------------------------------------------------
def meco_official(net: nn.Module, x: torch.Tensor, *, opt: bool = False, rng: random.Random | None = None) -> float:
    """The official NB201 script's get_score on a deep copy in train mode: a hook on every
    module, output[0] reshaped to [C, -1], numpy corrcoef (NaN/inf -> 0), min real eigenvalue of
    the general solver; meco_opt: rng.sample(range(C), 8) rows, × C / 8; NaN/inf dropped, summed."""
    net = copy.deepcopy(net).train()
    results: list[float] = []

    def hook(module: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        fea = out[0].detach().double().numpy()
        n = fea.shape[0]
        fea = fea.reshape(n, -1)
        if opt:
            assert rng is not None
            fea = fea[rng.sample(range(n), 8), :]
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            corr = np.corrcoef(fea)
        corr[~np.isfinite(corr)] = 0
        value = float(np.min(np.real(np.linalg.eigvals(corr))))
        results.append(value * n / 8 if opt else value)

    handles = [m.register_forward_hook(hook) for _, m in net.named_modules()]
    net(x)
    for h in handles:
        h.remove()
    arr = np.array(results)
    return float(np.sum(arr[np.isfinite(arr)]))


def swap_official(net: nn.Module, x: torch.Tensor, *, repeats: int, seed: int, mu: float | None = None,
                  sigma: float | None = None) -> float:
    """SWAP's correlation loop on a deep copy in train mode: torch.manual_seed(seed) (the global
    RNG, restored afterwards), then per repeat the Gaussian init (nn.init, global RNG) and a
    no-grad forward with hooks on nn.ReLU whose input is 4-D; np.unique over the transposed sign
    matrix; mean over repeats (× exp(-(P - mu)^2 / sigma), P in thousands, when mu/sigma given)."""
    net = copy.deepcopy(net).train()
    feats: list[torch.Tensor] = []

    def hook(module: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if len(inp[0].size()) == 4:
            feats.append(out.detach().clone())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    scores = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(repeats):
            with torch.no_grad():
                for m in net.modules():
                    if isinstance(m, (nn.Conv2d, nn.Linear)):
                        nn.init.normal_(m.weight)
                        if m.bias is not None:
                            nn.init.zeros_(m.bias)
                    elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                        nn.init.ones_(m.weight)
                        nn.init.zeros_(m.bias)
                feats.clear()
                net(x)
            acts = np.concatenate([f.reshape(x.shape[0], -1).numpy() for f in feats], axis=1)
            scores.append(np.unique(np.sign(acts).T, axis=0).shape[0])
    for h in handles:
        h.remove()
    value = float(np.mean(scores))
    if mu is not None and sigma is not None:
        p = np.sum([np.prod(v.size()) for n, v in net.named_parameters() if "auxiliary" not in n]) / 1e3
        value *= float(np.exp(-((p - mu) ** 2) / sigma))
    return value


# ------------------------------------------------------------------------------------------
# tiny seeded models
# ------------------------------------------------------------------------------------------
def tiny_cnn(seed: int = 0) -> nn.Module:
    """Conv-BN-ReLU-Conv-ReLU-pool-Linear with >= 8 channels everywhere: [N, 3, 6, 6] -> [N, 10]."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 9, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(9, 10))


def nb201(index: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return NB201Network(zcfast.spaces.get("nb201").arch_at(index))


def batch(n: int = 6, hw: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, hw, hw, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.fixture
def user_swap():
    """A 2-repeat swap need (swap_patterns_need) and a proxy on it, removed afterwards."""
    register_need(swap_mod.swap_patterns_need("swap_patterns_2", repeats=2))

    @register_proxy("swap_2", needs=("swap_patterns_2",))
    def _swap2(ctx):
        d = ctx.data["swap_patterns_2"]
        return ProxyResult("swap_2", sum(d["counts"]) / len(d["counts"]), {"params_k": d["params_k"]})

    yield
    unregister_proxy("swap_2")
    unregister_need("swap_patterns_2")


# ------------------------------------------------------------------------------------------
# meco / meco_opt
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 5])
def test_meco_and_meco_opt_equal_the_official_restatement_on_a_tiny_cnn(seed: int) -> None:
    net = tiny_cnn(seed)
    x, y = batch(seed=seed + 1)
    r = score_detailed(net, x, y, proxies=("meco", "meco_opt"), seed=seed, per_layer=True)
    ref = meco_official(net, x[:1])
    ref_opt = meco_official(net, x[:1], opt=True, rng=random.Random(seed))
    assert r["meco"].ok and r["meco_opt"].ok
    assert r["meco"].value == pytest.approx(ref, rel=1e-5, abs=1e-6)
    assert r["meco_opt"].value == pytest.approx(ref_opt, rel=1e-5, abs=1e-6)
    # the container (root Sequential) gives [K, 1]: adds 0; conv and its BN correlate alike
    assert set(r["meco"].per_layer) == {"0", "1", "2", "3", "4"}
    assert r["meco"].per_layer["0"] == pytest.approx(r["meco"].per_layer["1"], rel=1e-5)
    assert sum(r["meco"].per_layer.values()) == pytest.approx(r["meco"].value, rel=1e-9)


@pytest.mark.parametrize("index", [0, 4321])
def test_meco_equals_the_official_restatement_on_nb201(index: int) -> None:
    net = nb201(index)
    x, y = batch(n=2, hw=8)
    r = score_detailed(net, x, y, proxies=("meco", "meco_opt"), seed=3)
    assert r["meco"].ok and r["meco_opt"].ok, (r["meco"].error, r["meco_opt"].error)
    assert r["meco"].value == pytest.approx(meco_official(net, x[:1]), rel=1e-5, abs=1e-5)
    assert r["meco_opt"].value == pytest.approx(meco_official(net, x[:1], opt=True, rng=random.Random(3)),
                                                rel=1e-5, abs=1e-5)



def test_meco_features_share_a_containers_unchanged_tensor_but_not_an_in_place_change() -> None:
    """Sequential(conv, BN, ReLU(inplace)): the ReLU returns BN's tensor changed in place (a new
    copy), the root Sequential returns the ReLU's unchanged tensor (the same copy); every call
    still counts, so the value equals the official restatement."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True))
    x, y = batch()
    captured = {}

    @register_proxy("meco_probe", needs=("meco_features",))
    def _probe(c):
        captured["feats"] = list(c.data["meco_features"])
        return ProxyResult("meco_probe", 0.0)

    try:
        score_detailed(net, x, y, proxies=("meco_probe",))
    finally:
        unregister_proxy("meco_probe")
    feats = captured["feats"]
    assert [n for n, _ in feats] == ["0", "1", "2", ""]
    f = {n: t for n, t in feats}
    assert f["2"] is f[""]                   # the root returns the ReLU's tensor, unchanged
    assert f["1"] is not f["2"]              # the ReLU changed BN's tensor in place
    assert (f["1"] < 0).any() and (f["2"] >= 0).all()
    r = score_detailed(net, x, y, proxies=("meco",))["meco"]
    assert r.value == pytest.approx(meco_official(net, x[:1]), rel=1e-5, abs=1e-6)


def test_meco_lambda_min_is_zero_without_a_solve_when_positions_do_not_exceed_channels(monkeypatch) -> None:
    """P <= C: the centred rows span <= P - 1 dimensions, so corrcoef is singular and λmin = 0
    exactly; numpy's solver gives rounding noise there. P > C, [C, 1] and non-finite F as before."""
    g = torch.Generator().manual_seed(5)
    wide = torch.randn(6, 40, generator=g, dtype=torch.float64)          # P > C: solved
    square = torch.randn(8, 8, generator=g, dtype=torch.float64)         # P == C: 0
    tall = torch.randn(12, 5, generator=g, dtype=torch.float64)          # P < C: 0
    tall_degenerate = tall.clone()
    tall_degenerate[3] = 2.0                                             # a zero-variance row: still 0
    bad = torch.randn(6, 4, generator=g, dtype=torch.float64)
    bad[1, 2] = float("nan")                                             # non-finite: solved
    feats = [wide, square, tall, tall_degenerate, bad, torch.randn(4, 1, generator=g, dtype=torch.float64)]
    solved = []
    real = meco_mod.ops.channel_spectra
    monkeypatch.setattr(meco_mod.ops, "channel_spectra", lambda fs, kind: solved.extend(fs) or real(fs, kind))
    got = meco_mod._lambda_min(feats)
    assert [id(f) for f in solved] == [id(wide), id(bad)]
    for f, v in zip(feats, got):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            corr = np.corrcoef(f.numpy())
        corr[~np.isfinite(corr)] = 0
        want = float(np.min(np.real(np.linalg.eigvals(np.atleast_2d(corr)))))
        assert v == pytest.approx(want, abs=1e-12)
    assert got[1] == got[2] == got[3] == got[5] == 0.0

def test_meco_reads_the_first_sample_only() -> None:
    net = tiny_cnn()
    x, y = batch()
    x2 = x.clone()
    x2[1:] = torch.randn_like(x2[1:])
    a = score_detailed(net, x, y, proxies=("meco",))["meco"].value
    b = score_detailed(net, x2, y, proxies=("meco",))["meco"].value
    assert a == b


def test_meco_packaged_gaussian_input_via_the_need_factory() -> None:
    register_need(meco_mod.meco_features_need("meco_features_packaged", gaussian_shape=meco_mod.MECO_PACKAGED_SHAPE))

    @register_proxy("meco_packaged", needs=("meco_features_packaged",))
    def _meco_packaged(ctx):
        return ProxyResult("meco_packaged", meco_mod.meco_score(ctx.data["meco_features_packaged"])[0])

    try:
        net = tiny_cnn()
        x, y = batch()
        v = score_detailed(net, x, y, proxies=("meco_packaged",), seed=7)["meco_packaged"].value
        z = torch.randn(meco_mod.MECO_PACKAGED_SHAPE, generator=torch.Generator().manual_seed(7))
        assert v == pytest.approx(meco_official(net, z), rel=1e-5, abs=1e-6)
        # the batch's values play no part
        assert score_detailed(net, x * 3 + 1, y, proxies=("meco_packaged",), seed=7)["meco_packaged"].value == v
    finally:
        unregister_proxy("meco_packaged")
        unregister_need("meco_features_packaged")


def test_meco_without_feature_maps_is_nan_with_reason() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(108, 16), nn.ReLU(), nn.Linear(16, 10))
    x, y = batch()
    r = score_detailed(mlp, x, y, proxies=("meco", "meco_opt"))
    for name in ("meco", "meco_opt"):
        assert math.isnan(r[name].value)
        assert "feature maps" in r[name].error and "channels x positions" in r[name].error


def test_meco_opt_with_fewer_than_8_channels_is_nan_with_reason() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 10))
    x, y = batch()
    r = score_detailed(net, x, y, proxies=("meco", "meco_opt"))
    assert r["meco"].ok
    assert math.isnan(r["meco_opt"].value) and "fewer than 8 channels" in r["meco_opt"].error
    assert "'0'" in r["meco_opt"].error


def test_meco_opt_is_deterministic_under_seed() -> None:
    net = tiny_cnn()
    x, y = batch()
    a = score_detailed(net, x, y, proxies=("meco_opt",), seed=11)["meco_opt"].value
    b = score_detailed(net, x, y, proxies=("meco_opt",), seed=11)["meco_opt"].value
    c = score_detailed(net, x, y, proxies=("meco_opt",), seed=12)["meco_opt"].value
    assert a == b and a != c
    assert math.isfinite(score_detailed(net, x, y, proxies=("meco_opt",), seed=None)["meco_opt"].value)


# ------------------------------------------------------------------------------------------
# swap / swap_reg
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 9])
def test_swap_and_swap_reg_equal_the_official_restatement_on_a_tiny_cnn(seed: int) -> None:
    net = tiny_cnn(seed)
    x, y = batch(n=8, seed=seed)
    r = score_detailed(net, x, y, proxies=("swap", "swap_reg"), seed=seed)
    ref = swap_official(net, x, repeats=swap_mod.SWAP_REPEATS, seed=seed)
    assert r["swap"].ok and r["swap"].value == ref
    ref_reg = swap_official(net, x, repeats=swap_mod.SWAP_REPEATS, seed=seed, mu=swap_mod.SWAP_REG_MU,
                            sigma=swap_mod.SWAP_REG_SIGMA)
    assert r["swap_reg"].value == pytest.approx(ref_reg, rel=1e-12)
    assert 1 <= r["swap"].value <= 2 ** x.shape[0]


def test_swap_reg_reads_mu_and_sigma_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    net = tiny_cnn()
    x, y = batch()
    monkeypatch.setattr(swap_mod, "SWAP_REG_MU", 1.0)
    monkeypatch.setattr(swap_mod, "SWAP_REG_SIGMA", 2.0)
    r = score_detailed(net, x, y, proxies=("swap", "swap_reg"), seed=0)
    p = sum(q.numel() for q in net.parameters()) / 1e3
    assert r["swap_reg"].value == pytest.approx(r["swap"].value * math.exp(-((p - 1.0) ** 2) / 2.0), rel=1e-12)


@pytest.mark.parametrize("index", [0, 4321])
def test_swap_equals_the_official_restatement_on_nb201(index: int, user_swap) -> None:
    net = nb201(index)
    x, y = batch(n=16, hw=8)
    r = score_detailed(net, x, y, proxies=("swap_2",), seed=4, per_layer=True)["swap_2"]
    assert r.ok, r.error
    assert r.value == swap_official(net, x, repeats=2, seed=4)
    assert r.per_layer["params_k"] == sum(p.numel() for p in net.parameters()) / 1e3


def test_swap_without_a_relu_on_4d_input_is_nan_with_reason() -> None:
    torch.manual_seed(0)
    x, y = batch()
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(108, 16), nn.ReLU(), nn.Linear(16, 10))
    no_relu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    for net in (mlp, no_relu):
        r = score_detailed(net, x, y, proxies=("swap", "swap_reg"))
        for name in ("swap", "swap_reg"):
            assert math.isnan(r[name].value) and "no nn.ReLU module was called on a 4-D input" in r[name].error


def test_swap_is_deterministic_under_seed() -> None:
    net = tiny_cnn()
    x, y = batch(n=8)
    a = score_detailed(net, x, y, proxies=("swap",), seed=2)["swap"].value
    assert a == score_detailed(net, x, y, proxies=("swap",), seed=2)["swap"].value
    assert math.isfinite(score_detailed(net, x, y, proxies=("swap",), seed=None)["swap"].value)


def test_swap_patterns_need_refuses_zero_repeats() -> None:
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        swap_mod.swap_patterns_need("x", repeats=0)


# ------------------------------------------------------------------------------------------
# purity, clean-up, routing
# ------------------------------------------------------------------------------------------
def test_the_callers_model_is_unchanged_and_no_hook_survives() -> None:
    net = tiny_cnn()
    x, y = batch()
    snap = ModelSnapshot(net, x, y)
    r = score_detailed(net, x, y, proxies=("meco", "meco_opt", "swap", "swap_reg"), seed=1)
    assert all(v.ok for v in r.values()), {k: v.error for k, v in r.items()}
    snap.assert_unchanged()
    for m in net.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_score_arch_on_nb201_routes_these_needs_to_the_module_backend() -> None:
    from zcfast.scoring import MODULE_BACKEND, route

    space = zcfast.spaces.get("nb201")
    for names in (("meco",), ("meco_opt",), ("swap",), ("swap_reg",), ("meco", "synflow")):
        assert route(space, resolve(names)) is MODULE_BACKEND
    x, y = batch(n=2, hw=8)
    arch = space.arch_at(7)
    got = zcfast.score_arch(space, arch, x, y, ("meco",), seed=42)["meco"]
    net = zcfast.scoring.build_seeded(space, arch, seed=42)
    assert got == pytest.approx(meco_official(net, x[:1]), rel=1e-5, abs=1e-5)


def test_bench_official_style_meco_and_swap_agree(user_swap) -> None:
    """bench/official_style.py's meco_official / swap_official (float32 torch, the official
    ops) against zcfast on an NB201 network: the benchmark's baseline computes the same values."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import official_style as o

    net = nb201(4321)
    x, y = batch(n=16, hw=8)
    r = score_detailed(net, x, y, proxies=("meco", "meco_opt", "swap_2"), seed=5)
    assert r["meco"].value == pytest.approx(o.meco_official(net, x), rel=1e-4)
    assert r["meco_opt"].value == pytest.approx(o.meco_official(net, x, opt=True, seed=5), rel=1e-4)
    assert r["swap_2"].value == o.swap_official(net, x, repeats=2, seed=5)
