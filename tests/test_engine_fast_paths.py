"""The module backend's no-pass fast path (zcfast.proxies.engine.score_detailed): l2_norm and
params alone read the caller's tensors through aliases (one module walk, no copies), while a
user proxy, a parametrized weight or any pass still gets private copies. Every guarantee holds:
values equal a plain re-statement, the caller's model is unchanged, bad input errors, the
skipped-parameter warning is given."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn as nn

import zcfast
from zcfast.proxies import ProxyResult, register_proxy, unregister_proxy


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def _state(net: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _unchanged(net: nn.Module, before: dict) -> None:
    after = net.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    for m in net.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    assert all(p.grad is None and p.requires_grad for p in net.parameters())


def test_l2_norm_and_params_equal_plain_and_leave_the_model_alone(monkeypatch) -> None:
    from zcfast.proxies import engine

    def no_copy(*args, **kwargs):
        raise AssertionError("the no-pass fast path copied the weights")

    monkeypatch.setattr(engine, "_weight_copies", no_copy)
    net = _net()
    before = _state(net)
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    got = zcfast.score_detailed(net, x, y, ["l2_norm", "params"], per_layer=True)
    w = [net[0].weight.detach(), net[4].weight.detach()]
    assert got["l2_norm"].value == pytest.approx(float(w[0].norm() + w[1].norm()), rel=1e-6)
    assert got["params"].value == sum(p.numel() for p in net.parameters()) / 1e6
    assert set(got["params"].per_layer) == {n for n, _ in net.named_parameters()}
    assert list(got["l2_norm"].per_layer) == ["0", "4"]
    _unchanged(net, before)


def test_shared_parameters_are_counted_once() -> None:
    net = _net()
    net.append(nn.Linear(5, 5))
    net.append(nn.Linear(5, 5))
    net[6].weight = net[5].weight          # tied: named_parameters lists it once
    got = zcfast.score_detailed(net, torch.randn(2, 3, 8, 8), torch.tensor([0, 1]), ["params"], per_layer=True)
    assert got["params"].value == sum(p.numel() for p in net.parameters()) / 1e6
    assert list(got["params"].per_layer) == [n for n, _ in net.named_parameters()]


def test_a_user_proxy_writing_the_weights_gets_copies() -> None:
    @register_proxy("h6_writer", needs=("weights",))
    def writer(ctx) -> ProxyResult:
        for _, w in ctx.data["weights"]:
            w.mul_(0.0)
        return ProxyResult("h6_writer", 1.0)

    try:
        net = _net()
        before = _state(net)
        x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
        ref = zcfast.score(net, x, y, ["l2_norm"])["l2_norm"]
        got = zcfast.score(net, x, y, ["h6_writer", "l2_norm"])   # the user proxy runs after l2_norm
        assert got["l2_norm"] == ref and got["h6_writer"] == 1.0
        _unchanged(net, before)
    finally:
        unregister_proxy("h6_writer")


def test_parametrized_weights_take_the_copy_path() -> None:
    net = _net()
    torch.nn.utils.parametrizations.weight_norm(net[4])
    before = _state(net)
    got = zcfast.score(net, torch.randn(2, 3, 8, 8), torch.tensor([0, 1]), ["l2_norm"])
    eff = float(net[0].weight.detach().norm() + net[4].weight.detach().norm())   # the effective weight
    assert got["l2_norm"] == pytest.approx(eff, rel=1e-6)
    _unchanged(net, before)


def test_checks_still_run_on_the_fast_path() -> None:
    with pytest.raises(ValueError, match="meta tensor"):
        zcfast.score(_net().to("meta"), torch.randn(2, 3, 8, 8), None, ["l2_norm"])
    net = _net()
    net.register_parameter("raw", nn.Parameter(torch.ones(3)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        zcfast.score(net, torch.randn(2, 3, 8, 8), None, ["params"])
    assert any("not counted by the default rule" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="unknown"):
        zcfast.score(net, torch.randn(2, 3, 8, 8), None, ["no_such_proxy"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_one_sum_finite_and_nan_checks_equal_the_elementwise_ones(dtype) -> None:
    """reductions.all_finite / has_nan (the hot-path checks of the input check, SWAP and TE-NAS's
    linear regions) equal torch's element-wise tests on every case: clean, one NaN, +inf, -inf,
    inf and -inf together (a NaN sum without a NaN), finite values whose sum overflows, empty."""
    from zcfast.proxies.reductions import all_finite, has_nan

    big = torch.finfo(dtype).max
    base = torch.rand(7, 33, dtype=torch.float64).to(dtype)
    cases = {"clean": base, "empty": base[:0]}
    for name, vals in {"nan": [math.nan], "inf": [math.inf], "-inf": [-math.inf], "both-infs": [math.inf, -math.inf],
                       "overflow": [big, big, big], "nan-and-inf": [math.nan, math.inf]}.items():
        t = base.clone()
        t.view(-1)[torch.arange(len(vals)) * 17] = torch.tensor(vals, dtype=torch.float64).to(dtype)
        cases[name] = t
    cases["transposed view"] = cases["nan"].t()
    for name, t in cases.items():
        assert all_finite(t) == bool(torch.isfinite(t).all()), name
        assert has_nan(t) == bool(torch.isnan(t).any()), name
    assert all_finite(cases["overflow"]) and not has_nan(cases["both-infs"])   # the fallbacks decided these
