"""Proxy engine: each proxy against an independent computation on tiny seeded models."""
from __future__ import annotations

import copy
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import zcfast
from zcfast.proxies import (PAPER_LAYER_TYPES, ProxyResult, available_proxies, register_proxy, score, score_detailed,
                            unregister_proxy)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import official_style  # noqa: E402  (plain-PyTorch, official-style baseline)

SIX = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # shared 2-core CI box: no OpenMP barrier stalls


def mlp(d_in: int = 5, hidden: int = 7, classes: int = 3, bias: bool = True, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, classes, bias=bias))


def small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))


def data(n: int = 8, shape=(5,), classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n,) + tuple(shape), generator=g), torch.randint(0, classes, (n,), generator=g)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


# ------------------------------------------------------------------------------------------
# every proxy by hand on a two-layer MLP (plain autograd / closed forms)
# ------------------------------------------------------------------------------------------
def _mlp_forward(w1, b1, w2, b2, x):
    h_pre = x @ w1.T + b1
    return h_pre, torch.relu(h_pre) @ w2.T + b2


def test_mlp_gradient_proxies_by_hand():
    net = mlp()
    x, y = data()
    w1, b1, w2, b2 = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    _, out = _mlp_forward(w1, b1, w2, b2, x)
    g1, g2 = torch.autograd.grad(F.cross_entropy(out, y), (w1, w2))
    expect = {
        "grad_norm": float(g1.norm() + g2.norm()),
        "snip": float((w1 * g1).abs().sum().detach() + (w2 * g2).abs().sum().detach()),
        "plain": float((w1 * g1).sum().detach() + (w2 * g2).sum().detach()),
    }
    got = score(net, x, y, proxies=tuple(expect))
    for k, v in expect.items():
        assert rel(got[k], v) < 1e-5, (k, got[k], v)


def test_mlp_grasp_with_explicit_hessian():
    # −W·(H g) with the full weight Hessian from autograd.functional, in float64
    net = mlp(d_in=3, hidden=4, classes=3)
    x, y = data(n=6, shape=(3,))
    xd = x.double()
    b1, b2 = net[0].bias.detach().double(), net[2].bias.detach().double()
    n1 = net[0].weight.numel()

    def loss64(flat: torch.Tensor) -> torch.Tensor:
        w1 = flat[:n1].reshape(net[0].weight.shape)
        w2 = flat[n1:].reshape(net[2].weight.shape)
        return F.cross_entropy(_mlp_forward(w1, b1, w2, b2, xd)[1], y)

    flat = torch.cat([net[0].weight.detach().flatten(), net[2].weight.detach().flatten()]).double()
    g = torch.autograd.functional.jacobian(loss64, flat)
    h = torch.autograd.functional.hessian(loss64, flat)
    expect = float(-(flat * (h @ g)).sum())
    got = score(net, x, y, proxies=("grasp",))["grasp"]
    assert rel(got, expect) < 1e-4, (got, expect)


def test_mlp_fisher_by_hand_with_inplace_relu():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(inplace=True), nn.Linear(7, 3))
    x, y = data()
    w1, b1, w2, b2 = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    h_pre = x @ w1.T + b1
    out = torch.relu(h_pre) @ w2.T + b2
    gh, go = torch.autograd.grad(F.cross_entropy(out, y), (h_pre, out))
    # official: per channel 0.5·mean_n(act·grad)², broadcast over fan-in (weight row) -> × fan-in
    f1 = 0.5 * (h_pre * gh).pow(2).mean(0) * 5
    f2 = 0.5 * (out * go).pow(2).mean(0) * 7
    expect = float((f1.sum() + f2.sum()).detach())
    got = score(net, x, y, proxies=("fisher",))["fisher"]
    assert rel(got, expect) < 1e-5, (got, expect)


def test_jacob_cov_by_hand():
    net = mlp()
    x, y = data(n=6)
    jac = torch.autograd.functional.jacobian(lambda inp: net(inp).sum(), x)  # [N, D]
    corr = np.corrcoef(jac.numpy().astype(np.float64))
    v = np.linalg.eigvalsh(corr)
    expect = float(-np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5)))
    got = score(net, x, None, proxies=("jacob_cov",))["jacob_cov"]
    assert rel(got, expect) < 1e-6, (got, expect)


def test_synflow_closed_form_positive_chain():
    # bias-free linear chain: with |W| and ones input, every layer's Σ|W⊙∂R/∂W| equals R
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Linear(6, 5, bias=False),
                        nn.ReLU(), nn.Linear(5, 3, bias=False))
    x, y = data(shape=(4,))
    r = torch.ones(1, 4, dtype=torch.float64)
    for m in (net[0], net[2], net[4]):
        r = r @ m.weight.detach().double().abs().T
    res = score_detailed(net, x, y, proxies=("synflow",), per_layer=True)["synflow"]
    assert rel(res.value, 3 * float(r.sum())) < 1e-12
    for v in res.per_layer.values():
        assert rel(v, float(r.sum())) < 1e-12
    assert abs(res.log_value - math.log(res.value)) < 1e-12
    assert res.error is None


def _log_chain_output(layers) -> float:
    """log R of a bias-free |W| chain on a ones input, computed in log space (no overflow)."""
    v = torch.ones(layers[0].weight.shape[1], dtype=torch.float64)
    log_scale = 0.0
    for m in layers:
        v = m.weight.detach().double().abs() @ v
        s = float(v.max())
        v = v / s
        log_scale += math.log(s)
    return log_scale + math.log(float(v.sum()))


def test_synflow_sum_overflow_reports_error_and_exact_log_value():
    # scale a 90-layer chain so that R ~ 1e307: each layer's value (= R) is finite in
    # float64 but their sum (90·R) overflows
    torch.manual_seed(0)
    layers = [nn.Linear(16, 16, bias=False) for _ in range(90)]
    c = math.exp((math.log(1e307) - _log_chain_output(layers)) / len(layers))
    with torch.no_grad():
        for m in layers:
            m.weight.mul_(c)
    x, y = data(n=4, shape=(16,), classes=16)
    res = score_detailed(nn.Sequential(*layers), x, y, proxies=("synflow",))["synflow"]
    assert res.value == math.inf
    assert "overflows float64" in res.error
    assert abs(res.log_value - (math.log(90) + _log_chain_output(layers))) < 1e-9


def test_synflow_forward_overflow_is_reported():
    layers = [nn.Linear(64, 64, bias=False) for _ in range(200)]
    with torch.no_grad():
        for m in layers:
            m.weight.fill_(10.0)
    x, y = data(n=4, shape=(64,), classes=64)
    res = score_detailed(nn.Sequential(*layers), x, y, proxies=("synflow",))["synflow"]
    assert not math.isfinite(res.value) and res.error and "synflow" in res.error


# ------------------------------------------------------------------------------------------
# against the official-style baseline (bench/official_style.py: plain PyTorch, own passes)
# ------------------------------------------------------------------------------------------
def test_cnn_all_six_match_official_style():
    net = small_cnn()
    x, y = data(n=8, shape=(3, 8, 8), classes=5)
    off = official_style.official_scores(net, x, y)
    got = score(net, x, y, proxies=SIX)
    for k in SIX:
        assert rel(got[k], off[k]) < 2e-5, (k, got[k], off[k])


def test_shared_passes_equal_each_proxy_alone():
    net = small_cnn(seed=4)
    x, y = data(n=8, shape=(3, 8, 8), classes=5)
    together = score(net, x, y, proxies=available_proxies())
    for name in available_proxies():
        alone = score(net, x, y, proxies=(name,))[name]
        if math.isnan(together[name]):   # undefined here (meco_opt: fewer than 8 channels) both ways
            assert math.isnan(alone), (name, alone)
            continue
        assert rel(together[name], alone) < 1e-6, (name, together[name], alone)


def test_grasp_first_gradient_equals_gradient_with_graph():
    # the engine drops the official no-graph pass because g == g_f on the same batch/weights
    net = small_cnn(seed=5).train()
    x, y = data(n=8, shape=(3, 8, 8), classes=5)
    ws = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    g = torch.autograd.grad(F.cross_entropy(net(x), y), ws)
    g_f = torch.autograd.grad(F.cross_entropy(net(x), y), ws, create_graph=True)
    for a, b in zip(g, g_f):
        torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------
# no mutation, determinism
# ------------------------------------------------------------------------------------------
def _snapshot(net: nn.Module):
    return ({k: v.detach().clone() for k, v in net.state_dict().items()},
            {n: m.training for n, m in net.named_modules()},
            {n: p.requires_grad for n, p in net.named_parameters()},
            {n: (None if p.grad is None else p.grad.clone()) for n, p in net.named_parameters()})


def test_never_mutates_model_inputs_or_rng():
    net = small_cnn(seed=6)
    net.eval()
    net[0].train()                       # mixed flags
    net[3].weight.requires_grad_(False)  # a frozen layer
    net[8].weight.grad = torch.full_like(net[8].weight, 0.5)
    x, y = data(n=8, shape=(3, 8, 8), classes=5)
    x.requires_grad_(True)
    before = _snapshot(net)
    rng = torch.get_rng_state()
    score(net, x, y, proxies=available_proxies())
    after = _snapshot(net)
    for k, v in before[0].items():
        assert torch.equal(v, after[0][k]), k
    assert before[1] == after[1] and before[2] == after[2]
    for k, v in before[3].items():
        assert (v is None and after[3][k] is None) or torch.equal(v, after[3][k]), k
    assert x.requires_grad and x.grad is None and y.grad is None
    assert torch.equal(rng, torch.get_rng_state())


def test_deterministic_including_dropout():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    x, y = data()
    a = score(net, x, y, proxies=available_proxies(), seed=7)
    b = score(net, x, y, proxies=available_proxies(), seed=7)
    assert a.keys() == b.keys()
    for k in a:   # NaN where undefined (zen: no AdaptiveAvgPool here) must be NaN both times
        assert a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])), k


# ------------------------------------------------------------------------------------------
# bad input, non-finite values
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case, match", [
    ("wrong_shape", "forward failed on inputs of shape"),
    ("targets_range", "targets out of range"),
    ("int_inputs", "integer inputs are for models that read them"),
    ("no_layers", "no weights to score"),
    ("nan", "NaN or inf"),
    ("inf", "NaN or inf"),
    ("unknown", "unknown proxy"),
    ("vote", "not a per-network proxy"),
    ("twice", "requested twice"),
    ("rows", "rows"),
])
def test_bad_input_names_the_problem(case, match):
    net = mlp()
    x, y = data()
    kw = {"proxies": ("snip",)}
    if case == "wrong_shape":
        x = torch.randn(8, 6)
    elif case == "targets_range":
        y = y.clone(); y[0] = 3
    elif case == "int_inputs":
        x = torch.ones(8, 5, dtype=torch.int64)
    elif case == "no_layers":
        net = nn.Sequential(nn.ReLU(), nn.Flatten())
    elif case == "nan":
        x = x.clone(); x[2, 1] = float("nan")
    elif case == "inf":
        x = x.clone(); x[0, 0] = float("inf")
    elif case == "unknown":
        kw = {"proxies": ("snip", "snipp")}
    elif case == "vote":
        kw = {"proxies": ("vote",)}
    elif case == "twice":
        kw = {"proxies": ("snip", "snip")}
    elif case == "rows":
        y = y[:5]
    with pytest.raises((ValueError, TypeError), match=match):
        score(net, x, y, **kw)


class _DeadSample(nn.Module):
    """Zeroes sample 0 before an MLP: its Jacobian row is zero (variance 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(x.shape[0], 1)
        keep[0] = 0
        return self.body(x * keep)


def test_jacob_cov_zero_variance_row_is_reported():
    x, y = data()
    res = score_detailed(_DeadSample(), x, y, proxies=("jacob_cov", "snip"))
    assert math.isnan(res["jacob_cov"].value)
    assert "zero variance" in res["jacob_cov"].error and "[0]" in res["jacob_cov"].error
    assert res["snip"].ok
    with pytest.warns(RuntimeWarning, match="zero variance"):
        score(_DeadSample(), x, y, proxies=("jacob_cov",))


# ------------------------------------------------------------------------------------------
# registry, layer types, per-layer
# ------------------------------------------------------------------------------------------
def test_register_custom_proxy():
    @register_proxy("test_grad_sq", needs=("grads",))
    def grad_sq(ctx):
        return sum(float((g * g).sum()) for g in ctx.grads if g is not None)

    try:
        assert "test_grad_sq" in available_proxies()
        net = mlp()
        x, y = data()
        got = score(net, x, y, proxies=("test_grad_sq", "grad_norm"))
        w = [net[0].weight, net[2].weight]
        g = torch.autograd.grad(F.cross_entropy(net(x), y), w)
        assert rel(got["test_grad_sq"], float(sum((gi * gi).sum() for gi in g))) < 1e-5
        with pytest.raises(ValueError, match="already registered"):
            register_proxy("test_grad_sq")(grad_sq)
    finally:
        unregister_proxy("test_grad_sq")
    with pytest.raises(ValueError, match="unknown needs"):
        register_proxy("test_bad", needs=("hessian",))
    with pytest.raises(ValueError, match="built-in"):
        unregister_proxy("snip")


def test_layer_types_and_per_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6, 4))
    x, y = data(shape=(2, 8), classes=4)
    paper = score_detailed(net, x, y, proxies=("snip",), per_layer=True, layer_types=PAPER_LAYER_TYPES)["snip"]
    assert list(paper.per_layer) == ["3"]  # the paper's rule: Conv2d and Linear only
    default = score_detailed(net, x, y, proxies=("snip",), per_layer=True)["snip"]
    assert list(default.per_layer) == ["0", "3"]  # default: every weight-bearing layer
    both = score_detailed(net, x, y, proxies=("snip",), per_layer=True,
                          layer_types=(nn.Conv1d, nn.Linear))["snip"]
    assert list(both.per_layer) == ["0", "3"]
    assert rel(both.value, sum(both.per_layer.values())) < 1e-6
    flat = score(net, x, y, proxies=("snip",), per_layer=True, layer_types=(nn.Conv1d, nn.Linear))
    assert set(flat) == {"snip", "snip/0", "snip/3"}
    res = score_detailed(net, x, y, proxies=("fisher",), layer_types=(nn.Conv1d, nn.Linear))["fisher"]
    assert res.ok and res.value > 0


def test_top_level_reexports():
    assert zcfast.score is score and zcfast.ProxyResult is ProxyResult
    assert set(SIX) <= set(zcfast.available_proxies())


@pytest.mark.skipif(not zcfast.ops.has_cuda() or not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    net = small_cnn(seed=2)
    x, y = data(n=8, shape=(3, 8, 8), classes=5)
    cpu = score(net, x, y, proxies=available_proxies())
    gpu = score(net.cuda(), x.cuda(), y.cuda(), proxies=available_proxies())
    for k in cpu:
        assert rel(gpu[k], cpu[k]) < 1e-4, (k, gpu[k], cpu[k])


class _LSTMClassifier(nn.Module):
    """[N, T, 4] -> logits [N, 3]; nn.LSTM keeps its weights in a list (deep-copy fallback)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = nn.LSTM(4, 6, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def test_model_clone_is_independent():
    from zcfast.proxies.engine import _fast_clonable, _main_copy, clone_module

    net = small_cnn()
    assert _fast_clonable(net)
    c = clone_module(net, _main_copy)
    c[0].register_forward_hook(lambda *a: None)
    c[1].running_mean.add_(1.0)
    c.eval()
    assert not net[0]._forward_hooks and torch.all(net[1].running_mean == 0) and net.training
    # own storage: an in-place write inside the copy cannot reach the caller's weights
    assert c[0].weight is not net[0].weight and c[0].weight.data_ptr() != net[0].weight.data_ptr()
    assert torch.equal(c[0].weight, net[0].weight)
    rnn = _LSTMClassifier()
    assert not _fast_clonable(rnn)
    x, y = data(n=6, shape=(5, 4))
    before = _snapshot(rnn)
    out = score_detailed(rnn, x, y, proxies=("snip", "grad_norm", "jacob_cov", "synflow"))
    assert all(r.ok for r in out.values())
    after = _snapshot(rnn)
    for k, v in before[0].items():
        assert torch.equal(v, after[0][k]), k


def test_a_proxy_needing_no_pass_sees_the_counted_weights() -> None:
    """A user proxy with needs=() gets the counted layers' weights (no passes run)."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])

    @zcfast.register_proxy("test_weight_sq_no_pass", needs=())
    def weight_sq(ctx):
        return float(zcfast.ops.saliency(ctx.weights, None, "param_sq")[1])

    try:
        value = zcfast.score(net, x, y, proxies=("test_weight_sq_no_pass",))["test_weight_sq_no_pass"]
    finally:
        zcfast.proxies.unregister_proxy("test_weight_sq_no_pass")
    expected = float(net[1].weight.double().pow(2).sum() + net[3].weight.double().pow(2).sum())
    assert value == pytest.approx(expected, rel=1e-6)
    assert expected > 0


class _TensorListModule(nn.Module):
    """A user module keeping tensors in a plain list attribute: needs a deep copy."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(5, 3)
        self.bn = nn.BatchNorm1d(5)
        self.scales = [torch.tensor(2.0)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(x) * self.scales[0])


@pytest.mark.parametrize("which", ["cnn", "tensor_list"])
def test_synflow_clone_equals_deepcopy_route(which: str) -> None:
    """The one-walk synflow copy equals deep copy + remove_batchnorms + |θ| float64, keeps
    the chosen BatchNorms, never touches the original, and is freed without the garbage
    collector (its recursive walker must not keep the copy alive through a cycle)."""
    import gc
    import weakref

    from zcfast.proxies.engine import (PAPER_LAYER_TYPES, _synflow_clone_slow, remove_batchnorms,
                                       synflow_clone)

    net = small_cnn() if which == "cnn" else _TensorListModule()
    net.eval()
    keep = ["1"] if which == "cnn" else None
    before = _snapshot(net)
    fast, layers = synflow_clone(net, keep, PAPER_LAYER_TYPES)
    slow, slow_layers = _synflow_clone_slow(net, keep, PAPER_LAYER_TYPES)
    assert [c.name for c in layers] == [c.name for c in slow_layers]
    assert all(c.module.weight.requires_grad and c.module.weight.dtype == torch.float64 for c in layers)
    assert fast.training and all(m.training for m in fast.modules())
    sd_fast, sd_slow = fast.state_dict(), slow.state_dict()
    assert sd_fast.keys() == sd_slow.keys()
    for k in sd_fast:
        assert torch.equal(sd_fast[k], sd_slow[k]), k
    if which == "cnn":
        assert isinstance(fast[1], nn.BatchNorm2d) and isinstance(fast[4], nn.Identity)
        assert fast[1].running_var.dtype == torch.float64
        ref = copy.deepcopy(net)
        remove_batchnorms(ref, keep)
        assert isinstance(ref[4], nn.Identity)
    x = torch.ones(1, 3, 8, 8, dtype=torch.float64) if which == "cnn" else torch.ones(2, 5, dtype=torch.float64)
    assert torch.equal(fast(x), slow(x))
    after = _snapshot(net)
    for k, v in before[0].items():
        assert torch.equal(v, after[0][k]), k
    assert not net.training
    gc.disable()
    try:
        ref_w = weakref.ref(layers[0].module.weight)
        del fast, layers
        assert ref_w() is None
    finally:
        gc.enable()
