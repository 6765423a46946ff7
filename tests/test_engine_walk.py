"""The engine's one walk of a model (``engine._walk`` / ``engine._fast_walk``) and the read-only
no-pass proxies (l2_norm, params) it serves.

The fast walk must give exactly what the general functions give (``counted_weights``,
``skipped_parameters``, ``named_parameters``: the references here), on every kind of
weight-bearing layer, with shared modules and tied weights, for the default rule and for
``layer_types``; it must hand the models it does not handle (meta, lazy, parametrized, an
overridden ``named_modules``) to the general path, whose errors are unchanged. l2_norm and
params are checked against plain-PyTorch values, the skipped-parameter warning still fires,
and the caller's model and RNG stay as they were.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import zcfast
from zcfast.proxies import PAPER_LAYER_TYPES, score, score_detailed
from zcfast.proxies import engine
from zcfast.scoring import build_seeded
from zcfast.testing import ModelSnapshot, tiny_convnet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Raw(nn.Module):
    """A custom layer with a raw parameter (not counted by the default rule: skipped)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.bias_shift = nn.Parameter(torch.zeros(4))   # a "bias" name: never reported

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.bias_shift


class _Zoo(nn.Module):
    """Every weight kind of the default rule, a shared module, a tied weight and a None child."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(7, 4)
        self.conv1d = nn.Conv1d(4, 4, 3, padding=1)
        self.convt = nn.ConvTranspose1d(4, 4, 1, bias=False)
        self.attn = nn.MultiheadAttention(4, 2)
        self.attn_kv = nn.MultiheadAttention(4, 2, kdim=3, vdim=3)   # q/k/v_proj_weight
        self.lstm = nn.LSTM(4, 4, num_layers=2)
        self.cell = nn.GRUCell(4, 4)
        self.bil = nn.Bilinear(4, 4, 3)
        self.norm = nn.LayerNorm(4)
        self.bn = nn.BatchNorm1d(4)
        self.prelu = nn.PReLU()
        self.raw = _Raw()
        self.shared = nn.Linear(4, 4)
        self.again = self.shared                  # the same module twice: walked once
        self.head = nn.Linear(4, 7)
        self.tied = nn.Linear(4, 7, bias=False)
        self.tied.weight = self.head.weight       # one tensor, two modules
        self.missing = None                       # a None child

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never run
        raise NotImplementedError


def _nb201() -> nn.Module:
    return build_seeded(zcfast.spaces.get("nb201"), ("nor_conv_3x3",) * 6, 42, 10)


MODELS = {"tiny_convnet": lambda: tiny_convnet(seed=0), "zoo": _Zoo, "nb201": _nb201}
LAYER_TYPES = {"default": None, "paper": PAPER_LAYER_TYPES, "linear": nn.Linear, "raw": (_Raw, nn.LSTM)}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("lt", list(LAYER_TYPES))
def test_fast_walk_equals_the_general_functions(model: str, lt: str) -> None:
    net, layer_types = MODELS[model](), LAYER_TYPES[lt]
    types = engine.normalise_layer_types(layer_types)
    try:
        want = engine.counted_weights(net, layer_types)
    except ValueError as exc:   # no counted weight: the fast walk declines, the general path raises
        assert "no weights to score" in str(exc)
        assert engine._fast_walk(net, types, True, True) is None
        return
    walk = engine._fast_walk(net, types, True, True)
    assert walk is not None and not walk.parametrized
    assert [(c.name, c.module, c.attr, c.fisher_dim) for c in walk.counted] == \
        [(c.name, c.module, c.attr, c.fisher_dim) for c in want]
    assert all(type(c) is engine.Counted for c in walk.counted)
    got_params = [(n, id(p)) for n, p in walk.parameters]
    assert got_params == [(n, id(p)) for n, p in net.named_parameters()]
    assert walk.skipped == engine.skipped_parameters(net, want)
    assert engine._walk(net, layer_types, want_parameters=True, want_skipped=True) == walk


def test_zoo_counts_every_weight_kind_once() -> None:
    walk = engine._walk(_Zoo(), None, want_parameters=True, want_skipped=True)
    names = [c.name for c in walk.counted]
    assert names == ["emb", "conv1d", "convt", "attn.in_proj_weight", "attn.out_proj",
                     "attn_kv.q_proj_weight", "attn_kv.k_proj_weight", "attn_kv.v_proj_weight", "attn_kv.out_proj",
                     "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l1", "lstm.weight_hh_l1",
                     "cell.weight_ih", "cell.weight_hh", "bil", "shared", "head", "tied"]
    assert [c.fisher_dim for c in walk.counted if c.name in ("conv1d", "convt", "bil", "head", "emb")] == \
        [None, 1, 1, -1, -1]
    assert walk.skipped == [("prelu.weight", 1), ("raw.scale", 4)]


def _meta() -> nn.Module:
    with torch.device("meta"):
        return tiny_convnet(seed=0)


class _OwnWalk(nn.Sequential):
    def named_modules(self, *args, **kwargs):  # type: ignore[override]
        return super().named_modules(*args, **kwargs)


def _instance_override() -> nn.Module:
    net = tiny_convnet(seed=0)
    net.named_modules = net.named_modules   # an instance attribute: what model.named_modules() calls
    return net


DECLINED = {
    "meta": _meta,
    "lazy": lambda: nn.Sequential(nn.Flatten(), nn.LazyLinear(5)),
    "weight_norm": lambda: nn.Sequential(nn.Flatten(), nn.utils.parametrizations.weight_norm(nn.Linear(48, 5))),
    "own_named_modules": lambda: _OwnWalk(nn.Flatten(), nn.Linear(48, 5)),
    "instance_named_modules": _instance_override,
    "no_weights": lambda: nn.Sequential(nn.Flatten(), _Raw()),
}


@pytest.mark.parametrize("case", list(DECLINED))
def test_fast_walk_declines_what_the_general_path_decides(case: str) -> None:
    net = DECLINED[case]()
    assert engine._fast_walk(net, None, True, True) is None


@pytest.mark.parametrize("proxy", ["l2_norm", "params"])
@pytest.mark.parametrize("case, message", [("meta", "meta tensor"), ("lazy", r"uninitialised \(a lazy module\)"),
                                           ("no_weights", "no weights to score")])
def test_declined_models_keep_their_errors(proxy: str, case: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score(DECLINED[case](), torch.randn(2, 3, 4, 4), torch.zeros(2, dtype=torch.long), (proxy,))


def test_meta_is_reported_before_bad_layer_types() -> None:
    with pytest.raises(ValueError, match="meta tensor"):
        score(_meta(), torch.randn(2, 3, 4, 4), None, ("params",), layer_types="Conv2d")
    with pytest.raises(ValueError, match="layer_types must be None"):
        score(tiny_convnet(seed=0), torch.randn(2, 3, 4, 4), None, ("params",), layer_types="Conv2d")


@pytest.mark.parametrize("case", ["weight_norm", "own_named_modules", "instance_named_modules"])
def test_declined_models_score_as_the_general_path(case: str) -> None:
    net = DECLINED[case]()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    got = score_detailed(net, x, None, ("l2_norm", "params"), per_layer=True)
    ws = [w.detach() for w in (engine._weights_of(engine.counted_weights(net)))]
    assert got["l2_norm"].value == pytest.approx(float(sum(float(w.norm()) for w in ws)), rel=1e-6)
    assert got["params"].value == sum(p.numel() for p in net.parameters()) / 1e6
    assert list(got["params"].per_layer) == [n for n, _ in net.named_parameters()]


def _reference_l2(net: nn.Module, layer_types=None) -> tuple[float, dict[str, float]]:
    """Σ‖W‖_F, float32 per-layer norms summed in order (NASLib's sum_arr), in plain PyTorch."""
    per = {c.name: float(np.float32(torch.linalg.vector_norm(c.module._parameters[c.attr].detach().double())))
           for c in engine.counted_weights(net, layer_types)}
    total = np.float32(0)
    for v in per.values():
        total = np.float32(total + np.float32(v))
    return float(total), per


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("lt", ["default", "paper"])
def test_l2_norm_and_params_equal_plain_pytorch(model: str, lt: str) -> None:
    net, layer_types = MODELS[model](), LAYER_TYPES[lt]
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # the zoo's skipped parameters (tested below)
        got = score_detailed(net, x, None, ("l2_norm", "params"), layer_types=layer_types, per_layer=True)
    want_l2, want_per = _reference_l2(net, layer_types)
    assert got["l2_norm"].value == pytest.approx(want_l2, rel=1e-6)
    assert got["l2_norm"].per_layer == pytest.approx(want_per, rel=1e-6)
    assert list(got["l2_norm"].per_layer) == list(want_per)
    uniq = {n: p for n, p in net.named_parameters()}
    assert got["params"].value == sum(p.numel() for p in uniq.values()) / 1e6
    assert got["params"].per_layer == {n: p.numel() / 1e6 for n, p in uniq.items()}
    if model == "nb201":
        assert got["params"].value == pytest.approx(1.531546, abs=1e-6)   # 1,531,546 parameters


def test_l2_norm_mixed_dtypes_converts_each_norm() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3)).eval()
    net[1].double()
    got = score_detailed(net, torch.randn(2, 4), None, ("l2_norm",), per_layer=True)["l2_norm"]
    want, per = _reference_l2(net)
    assert got.value == pytest.approx(want, rel=1e-6) and got.per_layer == pytest.approx(per, rel=1e-6)


@pytest.mark.parametrize("proxy", ["l2_norm", "params"])
def test_skipped_parameter_warning_still_fires(proxy: str) -> None:
    net = nn.Sequential(nn.Linear(4, 4), _Raw(), nn.PReLU())
    with pytest.warns(UserWarning, match=r"2 parameter tensor\(s\) \(5 parameters\) are not counted by the "
                                         r"default rule.*1\.scale \(4\), 2\.weight \(1\)"):
        score(net, torch.randn(2, 4), None, (proxy,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score(net, torch.randn(2, 4), None, (proxy,), layer_types=nn.Linear)   # a chosen rule: no warning


@pytest.mark.parametrize("proxies", [("l2_norm",), ("params",), ("l2_norm", "params")])
def test_read_only_calls_leave_model_and_rng_unchanged(proxies: tuple[str, ...]) -> None:
    net = _nb201()
    x, y = torch.randn(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
    torch.manual_seed(123)
    snap = ModelSnapshot(net, x, y)
    a = score(net, x, y, proxies, seed=0)
    b = score(net, x, y, proxies, seed=None)
    snap.assert_unchanged()
    assert a == b
    assert float(torch.rand(())) == float(torch.rand((), generator=torch.Generator().manual_seed(123)))


def test_class_rules_follow_layer_types() -> None:
    net = _Zoo()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        default = [c.name for c in engine._walk(net, None, want_parameters=False, want_skipped=False).counted]
    only_linear = [c.name for c in engine._walk(net, nn.Linear, want_parameters=False, want_skipped=False).counted]
    assert "emb" in default and only_linear == ["attn.out_proj", "attn_kv.out_proj", "shared", "head", "tied"]
    again = [c.name for c in engine._walk(net, None, want_parameters=False, want_skipped=False).counted]
    assert again == default


def test_parametrized_classes_stay_out_of_the_rule_cache() -> None:
    for _ in range(3):   # each parametrization makes its module's class anew
        net = DECLINED["weight_norm"]()
        score(net, torch.randn(2, 3, 4, 4), None, ("params",))
    cached = [cls for rules in engine._CLASS_RULES.values() for cls in rules]
    assert nn.Flatten in cached and not [cls for cls in cached if cls.__name__.startswith("Parametrized")]
