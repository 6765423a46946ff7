"""The caller's model is never modified (issue #11, class 8), checked after EVERY public scoring
call with :class:`zcfast.testing.ModelSnapshot`: parameter and buffer values, storage pointers,
``_version`` counters, dtypes, ``requires_grad``, ``.grad``, every module's ``training`` flag,
children and hook dicts, the inputs and targets, and the global RNG state.

The models are chosen to try to break the promise: a forward that writes its weights in place
(``weight.data.clamp_()``), BatchNorm whose running statistics a training-mode forward updates,
a user proxy writing ``ctx.weights``, frozen weights, a pre-existing ``.grad``, a registered
hook, an eval-mode submodule, an LSTM (flat weights), weight_norm, attention.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrizations

import zcfast
from zcfast.batched import score_batch
from zcfast.testing import ModelSnapshot, tiny_convnet

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIX = zcfast.proxies.PAPER_PROXIES
ALL = SIX + ("plain",)


class ClampsInPlace(nn.Module):
    """A forward that clamps its own weights in place (``weight.data.clamp_``) each call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.conv.weight.data.clamp_(-0.05, 0.05)
        self.fc.weight.data.mul_(0.5)
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.mean((2, 3)))


class Hooked(nn.Module):
    """Frozen first conv, a weight with a stale .grad, an eval-mode BN and a forward hook."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_convnet(seed=2, channels=4, num_classes=5)
        self.body[0].weight.requires_grad_(False)
        self.body[3].weight.grad = torch.full_like(self.body[3].weight, 0.25)
        self.body[4].eval()
        self.calls = 0
        self.body[8].register_forward_hook(self._count)

    def _count(self, module, args, out) -> None:
        self.calls += 0  # a hook that runs but changes nothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.rnn = nn.LSTM(3, 6, batch_first=True)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x.flatten(2).transpose(1, 2))[0][:, -1])


class WeightNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv = parametrizations.weight_norm(nn.Conv2d(3, 4, 3, padding=1))
        self.fc = parametrizations.spectral_norm(nn.Linear(4, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class AttentionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.proj = nn.Linear(3, 8)
        self.enc = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1, batch_first=True)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x.flatten(2).transpose(1, 2))
        return self.head(self.enc(h).mean(1))


MODELS = {
    "tiny_convnet_bn": lambda: tiny_convnet(seed=0, channels=4, num_classes=5),
    "clamps_in_place": ClampsInPlace,
    "frozen_grad_hook_eval": Hooked,
    "lstm": LSTMNet,
    "weight_norm_spectral": WeightNormNet,
    "attention": AttentionNet,
}


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, 4, 4, generator=g), torch.randint(0, 5, (6,), generator=g)


def _calls():
    """(id, fn(model, x, y)) for every public call on a caller's model."""
    yield "score_default", lambda m, x, y: zcfast.score(m, x, y)
    yield "score_all_per_layer", lambda m, x, y: zcfast.score(m, x, y, proxies=ALL, per_layer=True)
    yield "score_detailed", lambda m, x, y: zcfast.score_detailed(m, x, y, proxies=ALL)
    yield "score_detailed_per_layer", lambda m, x, y: zcfast.score_detailed(m, x, y, per_layer=True)
    yield "paper_layer_types", lambda m, x, y: zcfast.score(m, x, y, layer_types=zcfast.proxies.PAPER_LAYER_TYPES)
    yield "seed_none", lambda m, x, y: zcfast.score(m, x, y, proxies=("snip", "synflow"), seed=None)
    for p in ALL:
        yield f"alone_{p}", (lambda p: lambda m, x, y: zcfast.score(m, x, y, proxies=(p,)))(p)


CALLS = list(_calls())
SEED_NONE = dict(CALLS)["seed_none"]


@pytest.mark.parametrize("call", [c for _, c in CALLS], ids=[i for i, _ in CALLS])
@pytest.mark.parametrize("model", list(MODELS), ids=list(MODELS))
def test_every_call_leaves_the_model_unchanged(model: str, call, batch) -> None:
    net = MODELS[model]()
    x, y = batch
    if model == "weight_norm_spectral":
        net(x)  # spectral_norm's first training-mode forward updates its u/v: do it before the snapshot
    snap = ModelSnapshot(net, x, y, rng=call is not SEED_NONE)  # seed=None draws from the global RNG
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        call(net, x, y)
    snap.assert_unchanged()


@pytest.mark.parametrize("needs", [(), ("grads",), ("synflow",)], ids=["no_pass", "grads", "synflow"])
def test_a_proxy_writing_ctx_tensors_cannot_reach_the_caller(needs, batch) -> None:
    """A user proxy writes every tensor of the context in place: the caller's model is untouched
    and the built-in proxies computed in the same call keep their values."""
    name = f"test_writer_{'_'.join(needs) or 'none'}"

    @zcfast.register_proxy(name, needs=needs)
    def writer(ctx):
        for t in ctx.weights + list(ctx.synflow_weights or []) + [g for g in (ctx.grads or []) if g is not None]:
            t.add_(1.0)
        return 0.0

    try:
        for model in ("tiny_convnet_bn", "clamps_in_place"):
            net = MODELS[model]()
            x, y = batch
            clean = zcfast.score(net, x, y, proxies=("snip", "synflow"))
            snap = ModelSnapshot(net, x, y)
            got = zcfast.score(net, x, y, proxies=(name, "snip", "synflow"))
            snap.assert_unchanged(f"a proxy writing ctx tensors ({model})")
            assert got["snip"] == clean["snip"] and got["synflow"] == clean["synflow"]
    finally:
        zcfast.unregister_proxy(name)


class AppendsToItsLists(nn.Module):
    """A forward that records into plain Python containers of the module."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.fc = nn.Linear(48, 5)
        self.history: list = []
        self.stats: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.history.append(x.shape)
        self.stats[len(self.stats)] = x.dtype
        return self.fc(x.flatten(1))


def test_plain_containers_of_the_model_are_not_shared_with_the_copies(batch) -> None:
    net = AppendsToItsLists()
    x, y = batch
    zcfast.score(net, x, y)
    assert net.history == [] and net.stats == {}


def test_snapshot_sees_every_kind_of_change(batch) -> None:
    """ModelSnapshot itself: each kind of change is reported."""
    changes = {
        "values": lambda n: n[0].weight.data.add_(1),
        "_version": lambda n: n[0].weight.detach().mul_(1.0),   # same values, version bumped
        "requires_grad": lambda n: n[0].weight.requires_grad_(False),
        ".grad": lambda n: setattr(n[0].weight, "grad", torch.zeros_like(n[0].weight)),
        "training flag": lambda n: n[1].eval(),
        "_forward_hooks": lambda n: n[2].register_forward_hook(lambda *a: None),
        "buffer": lambda n: n[1].running_mean.add_(1),
        "RNG": lambda n: torch.rand(1),
    }
    for what, change in changes.items():
        net = tiny_convnet(channels=4, num_classes=5)
        snap = ModelSnapshot(net)
        change(net)
        with pytest.raises(AssertionError):
            snap.assert_unchanged(what)


def test_score_arch_and_batched_leave_inputs_and_rng_unchanged(batch) -> None:
    """score_arch (both routes, detailed or not) and batched.score_batch own their networks:
    the inputs, targets and the caller's RNG state are unchanged."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)
    space = zcfast.spaces.get("nb201")
    arch = ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none", "nor_conv_3x3")
    calls = [
        lambda: zcfast.score_arch(space, arch, x, y, SIX),
        lambda: zcfast.score_arch(space, arch, x, y, SIX, fast=False),
        lambda: zcfast.score_arch(space, arch, x, y, SIX, detailed=True),
        lambda: zcfast.score_arch(space, arch, x, y, SIX, per_layer=True),
        lambda: score_batch(space, [arch, arch[::-1]], x, y, list(ALL)),
        lambda: score_batch(space, [arch], x, y, ["snip"], detailed=True),
    ]
    for i, call in enumerate(calls):
        snap = ModelSnapshot(nn.Module(), x, y)
        call()
        snap.assert_unchanged(f"score_arch/score_batch call {i}")


# ------------------------------------------------------------------------------------------
# NAS-Bench-Suite-Zero's proxies and needs (zcfast/proxies/suite_zero.py)
# ------------------------------------------------------------------------------------------
SUITE_ZERO_NEW = ("nwot", "epe_nas", "epe_nas_naslib", "zen", "zico", "l2_norm", "params", "flops")


@pytest.mark.parametrize("proxies", [(p,) for p in SUITE_ZERO_NEW] + [SUITE_ZERO_NEW],
                         ids=list(SUITE_ZERO_NEW) + ["together"])
@pytest.mark.parametrize("model", list(MODELS), ids=list(MODELS))
def test_every_suite_zero_proxy_leaves_the_model_unchanged(model: str, proxies, batch) -> None:
    """On every model above (where a proxy is undefined, e.g. nwot without a ReLU module, it is
    NaN with a reason; the model is unchanged either way)."""
    net = MODELS[model]()
    x, y = batch
    if model == "weight_norm_spectral":
        net(x)
    snap = ModelSnapshot(net, x, y)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = zcfast.score_detailed(net, x, y, proxies=proxies, per_layer=True)
    assert all(r.ok or r.error for r in res.values())
    snap.assert_unchanged(f"score({proxies})")


def test_a_proxy_writing_suite_zero_products_cannot_reach_the_caller(batch) -> None:
    """A user proxy writes every tensor of the suite-zero needs' products in place (weights,
    labels, ReLU kernels, Zen features and running variances, per-sample gradients): the
    caller's model and tensors are untouched, and the built-ins of the same call keep their values."""
    needs = ("weights", "labels", "relu_kernels", "zen_pass", "flops_counts", "per_sample_grads")

    def tensors(v):
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, dict):
            for u in v.values():
                yield from tensors(u)
        elif isinstance(v, (list, tuple)):
            for u in v:
                yield from tensors(u)

    @zcfast.register_proxy("test_writer_suite_zero", needs=needs)
    def writer(ctx):
        for need in needs:
            for t in tensors(ctx.data[need]):
                t.add_(1) if not t.is_floating_point() else t.mul_(-3.0)
        return 0.0

    builtins = ("nwot", "zen", "l2_norm", "epe_nas", "flops")
    try:
        net = MODELS["tiny_convnet_bn"]()
        x, y = batch
        clean = zcfast.score(net, x, y, proxies=builtins)
        snap = ModelSnapshot(net, x, y)
        got = zcfast.score(net, x, y, proxies=("test_writer_suite_zero",) + builtins)
        snap.assert_unchanged("a proxy writing the suite-zero products")
        assert {p: got[p] for p in builtins} == clean
    finally:
        zcfast.unregister_proxy("test_writer_suite_zero")
