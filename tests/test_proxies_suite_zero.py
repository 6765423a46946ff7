"""NAS-Bench-Suite-Zero's proxies on the module backend (zcfast/proxies/suite_zero.py): nwot,
epe_nas, epe_nas_naslib, zen, zico, l2_norm, params and flops, each against
bench/official_style.py's official-style reference (its own copy and passes, plain
PyTorch/numpy) on tiny seeded models and on NAS-Bench-201 networks; NB201's published FLOPs and
parameter counts; the undefined cases (NaN / -inf with the reason); several mini-batches; the
per_sample_grads need; clean-up (no hook, no tensor left, the caller's model unchanged); and a
user need + user proxy built on these needs without editing zcfast."""
from __future__ import annotations

import gc
import math
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import zcfast
from zcfast.proxies import Need, register_need, register_proxy, score_detailed, unregister_need
from zcfast.proxies.needs import available_needs, get_need
from zcfast.proxies.suite_zero import per_sample_grads_need
from zcfast.scoring import build_seeded
from zcfast.testing import ModelSnapshot, live_tensor_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import official_style as o  # noqa: E402  (plain-PyTorch, official-style references)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEW = ("nwot", "epe_nas", "epe_nas_naslib", "zen", "zico", "l2_norm", "params", "flops")
#: relative tolerance of each proxy against its official-style reference
RTOL = {"nwot": 1e-9, "epe_nas": 1e-9, "epe_nas_naslib": 1e-9, "l2_norm": 1e-9, "params": 1e-9,
        "flops": 1e-9, "zen": 1e-6, "zico": 1e-5}
PAPER_TYPES = (nn.Conv2d, nn.Linear)


# ------------------------------------------------------------------------------------------
# tiny seeded models
# ------------------------------------------------------------------------------------------
def tiny_cnn(seed: int = 0, classes: int = 10) -> nn.Module:
    """Conv-BN-ReLU-Conv-BN-ReLU-pool-Linear: [N, 3, 6, 6] -> [N, classes]."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, classes))


class ReLUConvBlock(nn.Module):
    """A class whose type name contains "ReLU" around a ReLU (as NB201's ReLUConvBN)."""

    def __init__(self, cin: int, cout: int, inplace: bool = False) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(inplace=inplace), nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Wrapped(nn.Module):
    """stem conv -> two ReLUConvBlock wrappers -> ReLU -> pool -> linear."""

    def __init__(self, seed: int = 1, inplace: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
        self.b1 = ReLUConvBlock(4, 4, inplace)
        self.b2 = ReLUConvBlock(4, 6, inplace)
        self.act = nn.ReLU(inplace=inplace)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + self.b1(h)
        return self.head(self.act(self.b2(h)))


class InPlace(nn.Module):
    """Plain modules with in-place ReLUs (the ReLU's input tensor is overwritten by its output)."""

    def __init__(self, seed: int = 2) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                                  nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class SideBranch(nn.Module):
    """conv -> ReLU wrapper -> head, plus a ReLU whose output is computed and thrown away (the
    backward never reaches it), and a ReLU module shared by a used and an unused call."""

    def __init__(self, seed: int = 3) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.block = ReLUConvBlock(4, 4)
        self.unused = nn.ReLU()
        self.shared = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        self.unused(h * 2.0 - 0.1)          # never reaches the output
        self.shared(h - 0.2)                # this call does not reach it either...
        return self.head(self.shared(self.block(h)))   # ...but this one does


MODELS = {"cnn_bn_pool": tiny_cnn, "relu_wrapper": Wrapped, "inplace_relu": InPlace, "unreachable_relu": SideBranch}


def batch(n: int = 12, seed: int = 1, classes: int = 10, hw: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, hw, hw, generator=g), torch.randint(0, classes, (n,), generator=g)


def official(name: str, net: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    """The official-style value of ``name`` in zcfast's units (params in millions, MFLOPs)."""
    if name == "epe_nas_naslib":
        return o.official_epe_nas(net, x, y, variant="naslib")
    if name == "zen":
        return o.official_zen(net, x, y, seed=seed)
    if name in ("params", "flops"):
        return o.MODERN_FUNCS[name](net, x, y, millions=True)
    return o.MODERN_FUNCS[name](net, x, y)


def assert_close(name: str, got: float, want: float) -> None:
    assert got == pytest.approx(want, rel=RTOL[name], abs=1e-12), f"{name}: {got} != {want}"


# ------------------------------------------------------------------------------------------
# against the official-style references
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", list(MODELS))
def test_every_new_proxy_equals_its_official_reference_on_tiny_models(model: str) -> None:
    net, (x, y) = MODELS[model](), batch()
    res = score_detailed(net, x, y, NEW, layer_types=PAPER_TYPES, seed=5)
    for name in NEW:
        assert res[name].ok, (name, res[name].error)
        assert_close(name, res[name].value, official(name, net, x, y, seed=5))


def _kernel_sum(net: nn.Module, x: torch.Tensor) -> tuple[list[str], np.ndarray]:
    """The relu_kernels need's calls (module names) and their summed K, via a user proxy."""
    got: dict[str, object] = {}

    @register_proxy("test_sz_kernels", needs=("relu_kernels",))
    def probe(ctx):
        kernels = ctx.data["relu_kernels"]
        got["names"] = [n for n, _ in kernels]
        got["K"] = sum(k for _, k in kernels).numpy().copy()
        return 0.0

    try:
        res = score_detailed(net, x, None, ("test_sz_kernels",))
        assert res["test_sz_kernels"].ok, res["test_sz_kernels"].error
    finally:
        zcfast.unregister_proxy("test_sz_kernels")
    return got["names"], got["K"]  # type: ignore[return-value]


def test_nwot_selects_the_calls_official_v2_selects() -> None:
    """The graph walk keeps what official v2's backward marks: the wrapper and its inner ReLU (the
    same code twice), a shared module's every call once one call is reached (the official flag is
    per module), never a ReLU whose output is thrown away; the kernel sums are identical."""
    net, (x, _) = SideBranch(), batch(10)
    names, K = _kernel_sum(net, x)
    assert names == ["shared", "block.op.0", "block", "shared"]   # call order: the inner ReLU returns first
    assert np.array_equal(K, o.nwot_kernel(net, x, "official"))
    # NASLib's selection differs: every ReLU-named module, one forward, no backward filter
    assert not np.array_equal(K, o.nwot_kernel(net, x, "naslib"))
    for model in ("relu_wrapper", "inplace_relu"):
        net = MODELS[model]()
        names, K = _kernel_sum(net, x)
        assert np.array_equal(K, o.nwot_kernel(net, x, "official")), model
    assert _kernel_sum(Wrapped(), x)[0] == ["b1.op.0", "b1", "b2.op.0", "b2", "act"]


def test_nwot_inplace_relu_codes_the_input() -> None:
    """An in-place ReLU overwrites its input, but (relu(a) > 0) == (a > 0): the codes, and so K,
    equal those of the same network with out-of-place ReLUs; inside a wrapper class too (the
    wrapper's hook sees its input after the inner ReLU overwrote it), as official v2."""
    import copy

    x, _ = batch(8)
    a = InPlace(seed=4)
    b = copy.deepcopy(a)
    b.body[2], b.body[5] = nn.ReLU(), nn.ReLU()
    assert np.array_equal(_kernel_sum(a, x)[1], _kernel_sum(b, x)[1])
    w = Wrapped(seed=4, inplace=True)
    names, K = _kernel_sum(w, x)
    assert names == ["b1.op.0", "b1", "b2.op.0", "b2", "act"]
    assert np.array_equal(K, o.nwot_kernel(w, x, "official"))
    assert _one(w, x, None, "nwot").value == pytest.approx(o.official_nwot(w, x), rel=1e-9)


ARCHS = [0, 6111]   # index 0 (avg_pool / 1x1 / skip) and a cell with 3x3 convs, every proxy finite


@pytest.fixture(scope="module")
def nb201_batch() -> tuple[torch.Tensor, torch.Tensor]:
    from zcfast.data import paper_batch

    return paper_batch("cifar10", batch_size=16, seed=42)


@pytest.mark.parametrize("index", ARCHS)
def test_every_new_proxy_equals_its_official_reference_on_nb201(index: int, nb201_batch) -> None:
    space = zcfast.spaces.get("nb201")
    arch = space.arch_at(index)
    x, y = nb201_batch
    res = zcfast.score_arch(space, arch, x, y, NEW, seed=42, detailed=True, fast=False)
    net = build_seeded(space, arch, 42, 10)
    for name in NEW:
        assert res[name].ok, (name, res[name].error)
        assert_close(name, res[name].value, official(name, net, x, y, seed=42))


# Published NAS-Bench-201 figures (tests/test_official_style_modern.py gives the sources)
ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
PUBLISHED = [  # (arch, classes, resolution, MFLOPs, Mparams)
    (ARCH0, 10, 32, 15.64737, 0.129306), (ARCH0, 100, 32, 15.65322, None), (ARCH0, 120, 16, 3.91948, None),
    (NONE, 10, 32, 7.78305, 0.073306), (ALL3, 10, 32, 220.11969, 1.531546),
    (NONE, 120, 16, 1.9534, 0.080456), (ALL3, 100, 32, 220.12554, 1.537396),
]


@pytest.mark.parametrize("arch,classes,res,mflops,mparams", PUBLISHED)
def test_score_arch_reproduces_nb201_published_flops_and_params(arch, classes, res, mflops, mparams) -> None:
    space = zcfast.spaces.get("nb201")
    x = torch.zeros(2, 3, res, res)
    got = zcfast.score_arch(space, space.decode(arch), x, torch.zeros(2, dtype=torch.long), ["flops", "params"],
                            num_classes=classes)
    assert got["flops"] == pytest.approx(mflops, abs=5e-6)
    if mparams is not None:
        assert got["params"] == pytest.approx(mparams, abs=5e-7)


# ------------------------------------------------------------------------------------------
# undefined cases: NaN / -inf with a reason naming the problem
# ------------------------------------------------------------------------------------------
def _one(net: nn.Module, x: torch.Tensor, y: torch.Tensor | None, name: str, **kw):
    return score_detailed(net, x, y, (name,), **kw)[name]


def test_nwot_without_relu_is_nan_with_reason() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    r = _one(net, *batch(6), "nwot")
    assert math.isnan(r.value) and "ReLU" in r.error


def test_nwot_duplicated_samples_is_minus_inf_singular() -> None:
    x, y = batch(6)
    x = torch.cat([x[:3], x[:3]])
    r = _one(tiny_cnn(), x, y, "nwot")
    assert r.value == -math.inf and "singular" in r.error
    assert o.official_nwot(tiny_cnn(), x) == -math.inf


class TokenNet(nn.Module):
    """Token ids [N, T] -> embedding -> ReLU -> mean -> linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.emb = nn.Embedding(20, 8)
        self.act = nn.ReLU()
        self.fc = nn.Linear(8, 10)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.emb(t)).mean(1))


def test_integer_inputs_nwot_and_zen_nan_with_reason_others_defined() -> None:
    t = torch.randint(0, 20, (6, 5), generator=torch.Generator().manual_seed(0))
    y = torch.arange(6) % 10
    res = score_detailed(TokenNet(), t, y, ("nwot", "zen", "l2_norm", "params", "flops"))
    for name in ("nwot", "zen"):
        assert math.isnan(res[name].value) and "int64" in res[name].error, name
    assert "floating inputs" in res["nwot"].error and "Gaussian noise" in res["zen"].error
    for name in ("l2_norm", "params", "flops"):
        assert res[name].ok, (name, res[name].error)
    assert res["flops"].value == pytest.approx((8 * 10 + 10) / 1e6)   # the Linear (the embedding counts 0)


def test_zen_without_adaptive_pool_is_nan_with_reason() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10))
    r = _one(net, *batch(6), "zen")
    assert math.isnan(r.value) and "AdaptiveAvgPool" in r.error


def test_zen_constant_features_is_minus_inf_with_reason() -> None:
    class Mul0(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return t * 0.0

    dead = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), Mul0(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))
    r = _one(dead, *batch(6), "zen")
    assert r.value == -math.inf and "perturbation" in r.error
    assert o.official_zen(dead, *batch(6)) == -math.inf


def test_zico_one_sample_and_identical_mini_batches_are_nan_where_official_gives_zero() -> None:
    net = tiny_cnn()
    x, y = batch(6)
    r = _one(net, x[:1], y[:1], "zico")
    assert math.isnan(r.value) and "cannot be split into 2 mini-batches" in r.error
    # both halves identical: every gradient equal, no std > 0: official 0.0, zcfast NaN with the reason
    xx, yy = torch.cat([x[:3], x[:3]]), torch.cat([y[:3], y[:3]])
    r = _one(net, xx, yy, "zico")
    assert math.isnan(r.value) and "varies across the 2 mini-batch" in r.error and "0.0" in r.error
    assert o.official_zico(net, xx, yy) == 0.0
    # batches=[one batch] is the same as passing it: its two halves (not one mini-batch)
    one = _one(net, None, None, "zico", batches=[(x, y)])
    assert one.ok and one.value == _one(net, x, y, "zico").value


def test_epe_nas_one_sample_class_and_the_over_100_branch() -> None:
    x, _ = batch(16)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3, 0, 1, 2, 2, 1, 0, 4])   # classes 3 and 4 have one sample
    net = tiny_cnn()
    r = _one(net, x, y, "epe_nas")
    assert r.ok and r.value == pytest.approx(o.official_epe_nas(net, x, y), rel=1e-9)
    wide = tiny_cnn(classes=120)
    for name, variant in (("epe_nas", "official"), ("epe_nas_naslib", "naslib")):
        r = _one(wide, x, y, name)
        assert r.ok and r.value == pytest.approx(o.official_epe_nas(wide, x, y, variant=variant), rel=1e-9), name
    # every class a single sample: the > 100-class branch keeps none (NASLib gives 0)
    r = _one(wide, x, torch.arange(16), "epe_nas_naslib")
    assert math.isnan(r.value) and "no class with two or more samples" in r.error
    assert o.official_epe_nas(wide, x, torch.arange(16), variant="naslib") == 0.0
    # class probabilities [N, C] are read by their argmax (NASLib)
    probs = F.one_hot(y, 10).float()
    assert _one(net, x, probs, "epe_nas").value == pytest.approx(o.official_epe_nas(net, x, y), rel=1e-9)


def test_epe_nas_constant_jacobian_is_nan_with_reason() -> None:
    class Blind(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x.mean(dim=(2, 3)) * 0.0 + 1.0)

    x, y = batch(8)
    for name in ("epe_nas", "epe_nas_naslib"):
        r = _one(Blind(), x, y, name)
        assert math.isnan(r.value) and "constant" in r.error, name
    assert math.isnan(o.official_epe_nas(Blind(), x, y))


class Signal1d(nn.Module):
    """Conv1d -> ReLU -> pool -> Linear on [N, 2, 10]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.conv = nn.Conv1d(2, 3, 3)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


def test_flops_params_l2_norm_on_a_conv1d_linear_model() -> None:
    net = Signal1d()
    x, y = torch.randn(5, 2, 10), torch.arange(5) % 4
    res = score_detailed(net, x, y, ("flops", "params", "l2_norm"))          # default rule: Conv1d counts
    assert res["flops"].value == pytest.approx((3 * 2 * 3 * 8 + 3 * 8 + 3 * 4 + 4) / 1e6, rel=1e-12)
    assert res["flops"].value == pytest.approx(o.official_flops(net, x, millions=True), rel=1e-12)
    assert res["params"].value == pytest.approx((2 * 3 * 3 + 3 + 3 * 4 + 4) / 1e6, rel=1e-12)
    l2 = sum(np.linalg.norm(m.weight.detach().double().numpy()) for m in (net.conv, net.fc))
    assert res["l2_norm"].value == pytest.approx(l2, rel=1e-6)
    # the paper's rule (Conv2d + Linear), as the official l2_norm: only the Linear
    paper = _one(net, x, y, "l2_norm", layer_types=PAPER_TYPES)
    assert paper.value == pytest.approx(o.official_l2_norm(net), rel=1e-9)


def test_flops_outside_the_nb201_convention_is_nan_with_reason() -> None:
    net = nn.Sequential(nn.Conv3d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2, 4))
    x, y = torch.randn(3, 1, 5, 5, 5), torch.arange(3)
    res = score_detailed(net, x, y, ("flops", "params"))
    assert math.isnan(res["flops"].value) and "Conv3d" in res["flops"].error
    assert res["params"].ok


# ------------------------------------------------------------------------------------------
# several mini-batches
# ------------------------------------------------------------------------------------------
def test_zico_three_batches_equals_official_and_one_batch_its_two_halves() -> None:
    net, (x, y) = tiny_cnn(), batch(12)
    three = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]
    got = _one(net, None, None, "zico", batches=three)
    assert got.ok and got.value == pytest.approx(o.official_zico(net, x, y, batches=three), rel=1e-5)
    halves = _one(net, x, y, "zico")
    assert halves.value == pytest.approx(o.official_zico(net, x, y), rel=1e-5)
    # odd N: zcfast's equal parts drop the last sample (official tensor_split gives 6 + 5)
    x11, y11 = x[:11], y[:11]
    odd = _one(net, x11, y11, "zico")
    assert odd.value == pytest.approx(o.official_zico(net, x11, y11, batches=[(x[:5], y[:5]), (x[5:10], y[5:10])]),
                                      rel=1e-5)
    assert odd.value != pytest.approx(o.official_zico(net, x11, y11), rel=1e-5)


def test_single_batch_proxies_use_the_first_of_several_batches() -> None:
    net, (x, y) = tiny_cnn(), batch(12)
    two = [(x[:6], y[:6]), (x[6:], y[6:])]
    several = score_detailed(net, None, None, ("nwot", "epe_nas", "zen", "flops"), batches=two)
    first = score_detailed(net, x[:6], y[:6], ("nwot", "epe_nas", "zen", "flops"))
    assert {k: r.value for k, r in several.items()} == {k: r.value for k, r in first.items()}


# ------------------------------------------------------------------------------------------
# the per_sample_grads need
# ------------------------------------------------------------------------------------------
def _loop_per_sample(net: nn.Module, x: torch.Tensor, y: torch.Tensor, one_per_forward: bool) -> list[torch.Tensor]:
    """Plain loop on a train-mode copy: ∂ℓ_i/∂W per Conv2d/Linear weight, [N, *W.shape]."""
    import copy

    net = copy.deepcopy(net).train()
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    rows = []
    logits = None if one_per_forward else net(x)
    for i in range(len(x)):
        out = net(x[i:i + 1]) if one_per_forward else logits[i:i + 1]
        rows.append(torch.autograd.grad(F.cross_entropy(out, y[i:i + 1]), weights, retain_graph=not one_per_forward))
    return [torch.stack([r[t] for r in rows]) for t in range(len(weights))]


@pytest.mark.parametrize("one_per_forward", [True, False])
def test_per_sample_grads_need_equals_a_plain_loop(one_per_forward: bool) -> None:
    net, (x, y) = tiny_cnn(), batch(5)
    need = "per_sample_grads" if one_per_forward else "test_sz_psg_batched"
    if not one_per_forward:
        register_need(per_sample_grads_need(need, one_per_forward=False))
    got: list[torch.Tensor] = []

    @register_proxy("test_sz_psg", needs=(need,))
    def probe(ctx):
        got.extend(t.clone() for t in ctx.data[need])
        return float(sum(float(t.abs().sum()) for t in ctx.data[need]))

    try:
        snap = ModelSnapshot(net, x, y)
        assert score_detailed(net, x, y, ("test_sz_psg",), layer_types=PAPER_TYPES)["test_sz_psg"].ok
        snap.assert_unchanged("the per_sample_grads need")
    finally:
        zcfast.unregister_proxy("test_sz_psg")
        if not one_per_forward:
            unregister_need(need)
    want = _loop_per_sample(net, x, y, one_per_forward)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert need not in available_needs() or one_per_forward


# ------------------------------------------------------------------------------------------
# clean-up: no hook, no tensor left, the caller's model unchanged
# ------------------------------------------------------------------------------------------
def _hooks(net: nn.Module) -> int:
    return sum(len(d) for m in net.modules() for d in (m._forward_hooks, m._forward_pre_hooks,
                                                       m._backward_hooks, m._backward_pre_hooks))


@pytest.mark.parametrize("name", NEW)
def test_each_new_proxy_leaves_no_hook_and_the_model_unchanged(name: str) -> None:
    net, (x, y) = Wrapped(), batch(8)
    net.eval()
    net.stem[0].weight.grad = torch.ones_like(net.stem[0].weight)
    snap = ModelSnapshot(net, x, y)
    before = _hooks(net)
    r = score_detailed(net, x, y, (name,))[name]
    assert r.ok, r.error
    assert _hooks(net) == before == 0
    snap.assert_unchanged(f"score({name!r})")


def _flat(names: tuple[str, ...], calls: int, net: nn.Module, x: torch.Tensor, y: torch.Tensor,
          traced: bool) -> None:
    """After ``calls`` more calls, no more live tensors and gc-tracked objects than after the first
    few, and (``traced``) Python's traced memory (tracemalloc, which slows every allocation)
    within 64 KiB; no hook left on the model."""
    for _ in range(3):
        score_detailed(net, x, y, names)
    gc.collect()
    tensors, objects = live_tensor_count(), len(gc.get_objects())
    if traced:
        tracemalloc.start()
    try:
        score_detailed(net, x, y, names)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0] if traced else 0
        for _ in range(calls):
            score_detailed(net, x, y, names)
        gc.collect()
        end = tracemalloc.get_traced_memory()[0] if traced else 0
    finally:
        if traced:
            tracemalloc.stop()
    assert live_tensor_count() <= tensors
    assert len(gc.get_objects()) <= objects + 50, f"{names}: gc objects grew over {calls} calls"
    assert end - base < 64 * 1024, f"{names}: Python memory grew by {end - base} bytes over {calls} calls"
    assert _hooks(net) == 0


def test_memory_flat_over_1000_calls_of_l2_norm_params_flops() -> None:
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 5))
    _flat(("l2_norm", "params", "flops"), 1000, net, torch.randn(4, 3, 4, 4), torch.arange(4), traced=False)


def test_memory_flat_over_100_calls_of_nwot_zen_zico_epe_and_per_sample_grads() -> None:
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(2, 5))
    register_proxy("test_sz_psg_sum", needs=("per_sample_grads",))(
        lambda ctx: float(sum(float(g.sum()) for g in ctx.data["per_sample_grads"])))
    try:
        _flat(("nwot", "zen", "zico", "epe_nas", "test_sz_psg_sum"), 100, net, torch.randn(6, 3, 4, 4),
              torch.arange(6) % 5, traced=True)
    finally:
        zcfast.unregister_proxy("test_sz_psg_sum")


# ------------------------------------------------------------------------------------------
# a user need and a user proxy on the new needs, without editing zcfast
# ------------------------------------------------------------------------------------------
def test_user_need_on_relu_kernels_and_user_proxy_register_and_unregister() -> None:
    """A user need (the mean diagonal of K, requiring the built-in relu_kernels) and a user proxy
    reading it: the diagonal is Σ over the kept calls of the features each codes."""
    def kdiag(ctx):
        kernels = ctx.data["relu_kernels"]
        ctx.data["test_sz_kdiag"] = float(sum(k for _, k in kernels).diagonal().mean())

    for _ in range(2):   # registers, unregisters, and registers again cleanly
        register_need(Need("test_sz_kdiag", run=kdiag, requires=("relu_kernels",), floating_input=True,
                           description="mean diagonal of NWOT's K"))

        @register_proxy("test_sz_kdiag_proxy", needs=("test_sz_kdiag",))
        def proxy(ctx):
            return ctx.data["test_sz_kdiag"]

        try:
            net, (x, y) = Wrapped(), batch(6)
            res = score_detailed(net, x, y, ("test_sz_kdiag_proxy", "nwot"))
            # stem out 4x6x6 (b1 and its ReLU), b2's input 4x6x6 (twice), act's input 6x6x6
            assert res["test_sz_kdiag_proxy"].value == 4 * 4 * 36 + 6 * 36
            assert res["nwot"].ok
            with pytest.raises(ValueError, match="needed by registered proxies"):
                zcfast.unregister_need("test_sz_kdiag")
        finally:
            zcfast.unregister_proxy("test_sz_kdiag_proxy")
            zcfast.unregister_need("test_sz_kdiag")
        assert "test_sz_kdiag" not in available_needs()
        assert "test_sz_kdiag_proxy" not in zcfast.available_proxies()


def test_new_proxies_are_registered_and_their_needs_listed() -> None:
    for name in NEW:
        assert name in zcfast.available_proxies()
    for need in ("labels", "weights", "relu_kernels", "zen_pass", "flops_counts", "per_sample_grads"):
        assert get_need(need).description


def test_all_thirteen_and_zico_in_one_call_equal_each_alone() -> None:
    """Sharing passes changes no value: NAS-Bench-Suite-Zero's 13 and zico in one call equal each
    proxy computed alone; per_layer of the additive proxies sums to the value."""
    from zcfast.proxies.suite_zero import SUITE_ZERO

    net, (x, y) = Wrapped(), batch(8)
    names = SUITE_ZERO + ("zico", "epe_nas_naslib")
    together = score_detailed(net, x, y, names, layer_types=PAPER_TYPES, per_layer=True)
    for name in names:
        alone = score_detailed(net, x, y, (name,), layer_types=PAPER_TYPES)[name]
        assert together[name].ok, (name, together[name].error)
        assert together[name].value == pytest.approx(alone.value, rel=1e-6, abs=1e-9), name
    for name in ("zico", "l2_norm", "params", "flops"):
        per = together[name].per_layer
        assert per and sum(per.values()) == pytest.approx(together[name].value, rel=1e-6), name
    assert set(together["zen"].per_layer) == {n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}


def test_nwot_leaves_out_a_relu_whose_input_is_not_one_row_per_sample() -> None:
    """A ReLU on [N·T, D] rows: the official K of another shape fails to add and is dropped."""
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(8)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.rows = nn.ReLU()
            self.fc = nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.act(self.conv(x))                                      # [N, 4, H, W]: counted
            r = self.rows(h.flatten(2).transpose(1, 2).reshape(-1, 4))     # [N·H·W, 4]: left out
            return self.fc(r.reshape(x.shape[0], -1, 4).mean(1))

    net, (x, y) = Tokens(), batch(6)
    names, K = _kernel_sum(net, x)
    assert names == ["act"] and K[0, 0] == 4 * 36
    assert _one(net, x, y, "nwot").ok


def test_epe_nas_both_branches_on_an_nb201_imagenet16_network() -> None:
    """NB201 with 120 classes (ImageNet16-120's head, 16x16 inputs): epe_nas keeps the official
    script's <= 100-class branch, epe_nas_naslib takes the > 100 one, each equal to its reference."""
    space = zcfast.spaces.get("nb201")
    arch = space.arch_at(0)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 3, 16, 16, generator=g)
    y = torch.tensor([5, 7, 5, 119, 7, 5, 0, 119, 0, 7, 64, 5])        # one single-sample class (64)
    res = zcfast.score_arch(space, arch, x, y, ("epe_nas", "epe_nas_naslib"), num_classes=120, detailed=True,
                            fast=False)
    net = build_seeded(space, arch, 42, 120)
    assert res["epe_nas"].value == pytest.approx(o.official_epe_nas(net, x, y), rel=1e-9)
    assert res["epe_nas_naslib"].value == pytest.approx(o.official_epe_nas(net, x, y, variant="naslib"), rel=1e-9)
    assert res["epe_nas"].value != pytest.approx(res["epe_nas_naslib"].value, rel=1e-3)


def test_zen_seed_none_draws_from_the_global_rng_and_seeds_differ() -> None:
    net, (x, y) = tiny_cnn(), batch(8)
    torch.manual_seed(3)
    a = _one(net, x, y, "zen", seed=None).value
    torch.manual_seed(3)
    b = _one(net, x, y, "zen", seed=None).value
    assert a == b
    assert _one(net, x, y, "zen", seed=1).value != _one(net, x, y, "zen", seed=2).value
    assert _one(net, x, y, "zen", seed=2).value == pytest.approx(o.official_zen(net, x, y, seed=2), rel=1e-6)


def test_zico_non_finite_mini_batch_loss_is_nan_with_reason() -> None:
    class Huge(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.mean(dim=(2, 3))) * torch.where(x.abs().amax() > 100, float("inf"), 1.0)

    x, y = batch(8)
    r = _one(Huge(), None, None, "zico", batches=[(x, y), (x * 1e3, y)])
    assert math.isnan(r.value) and "not finite" in r.error
