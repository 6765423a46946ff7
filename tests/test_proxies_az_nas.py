"""AZ-NAS's four measures (zcfast/proxies/az_nas.py) and the cells contract
(zcfast/proxies/cells.py): each measure against an independent plain-PyTorch/numpy restatement
of the official ``compute_az_nas_score.py`` (cvlab-yonsei/AZ-NAS@5e6683a2) on small seeded
NAS-Bench-201 networks and a hand-made model with ``zcfast_cells``; the official −inf/NaN cases
with their reasons; NB101 and DARTS networks listing their cells; routing (score_arch on NB201
runs these on the module backend, az_complexity alone on the stacked one); clean-up (no hook
left, the caller's model and RNG unchanged); determinism; clear errors on models where the
measures are undefined."""
from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

import zcfast
from zcfast import scoring
from zcfast.proxies import score_detailed
from zcfast.proxies.az_nas import AZ_NAS, rademacher_like
from zcfast.proxies.cells import CellsError, model_cells, record_cells
from zcfast.proxies.registry import resolve
from zcfast.scoring import build_seeded
from zcfast.spaces.nb201 import NB201Network, parse_arch_str
from zcfast.testing import ModelSnapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")

THREE = ("az_expressivity", "az_progressivity", "az_trainability")
ARCHS = ("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
         "|avg_pool_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|nor_conv_1x1~1|none~2|")
ZERO_CELL = "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"        # node 3 = 0
IDENTITY_CELL = "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"    # node 3 = x


# ------------------------------------------------------------------------------------------
# the official computation, restated (plain PyTorch for the forward and the vector-Jacobian
# products, numpy float64 for the statistics)
# ------------------------------------------------------------------------------------------
def official_init(net: nn.Module) -> None:
    """kaiming_norm_fanin: N(0, 2/fan_in) on Conv2d/Linear weights, biases 0, affine BN2d/GN 1/0."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0.0, math.sqrt(2.0 / m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()


def chain_features(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The official extract_cell_features: stem, then each cell on the previous output."""
    feats = [net.stem(x)]
    for cell in net.cells:
        feats.append(cell(feats[-1]))
    return feats


def official_az(net: nn.Module, shape: tuple[int, ...], seed: int, features=chain_features) -> dict:
    torch.manual_seed(seed)
    m = copy.deepcopy(net).train()
    for p in m.parameters():
        p.requires_grad_(True)
    official_init(m)
    x = torch.randn(shape)
    feats = features(m, x)
    ent = []
    for f in feats:
        b, c, h, w = f.shape
        z = f.detach().permute(0, 2, 3, 1).reshape(b * h * w, c).double().numpy()
        z = z - z.mean(axis=0, keepdims=True)
        s = np.linalg.eigvalsh(z.T @ z / z.shape[0])
        p = s / s.sum()
        ent.append(float(np.sum(-p * np.log(p + 1e-8))))
    ent_a = np.array(ent)
    prog = float(np.min(ent_a[1:] - ent_a[:-1]))
    expr = float(np.sum(ent_a))
    scores = []
    for i in reversed(range(1, len(feats))):
        f_out, f_in = feats[i], feats[i - 1]
        g_out = (torch.bernoulli(torch.ones_like(f_out) * 0.5) - 0.5) * 2
        g_in = torch.autograd.grad(f_out, f_in, g_out, retain_graph=True)[0]
        if g_out.shape == g_in.shape and bool(torch.all(g_in == g_out)):
            scores.append(-np.inf)
            continue
        go, gi = g_out.double().numpy(), g_in.double().numpy()
        bo, co, ho, wo = go.shape
        if gi.shape[2] != ho:
            s_ = gi.shape[2] // ho     # space-to-depth (channel order does not change singular values)
            bi, ci, hi, wi = gi.shape
            gi = gi.reshape(bi, ci, ho, s_, wo, s_).transpose(0, 1, 3, 5, 2, 4).reshape(bi, ci * s_ * s_, ho, wo)
        a = gi.transpose(0, 2, 3, 1).reshape(-1, gi.shape[1])
        bm = go.transpose(0, 2, 3, 1).reshape(-1, co)
        smax = float(np.linalg.svd(a.T @ bm / (bo * ho * wo), compute_uv=False).max())
        scores.append(-smax - 1 / (smax + 1e-6) + 2)
    train = float(np.mean(scores))
    nan_inf = lambda v: -np.inf if np.isnan(v) else v  # noqa: E731  (the official info dict)
    return {"az_expressivity": nan_inf(expr), "az_progressivity": nan_inf(prog), "az_trainability": nan_inf(train),
            "entropies": ent, "cell_scores": scores[::-1]}


def close(a: float, b: float, rtol: float = 1e-7) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rtol * max(1.0, abs(b))


def small_nb201(arch: str, seed: int = 0) -> NB201Network:
    torch.manual_seed(seed)
    return NB201Network(parse_arch_str(arch), num_classes=5, channels=4, cells_per_stage=1)


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Tiny(nn.Module):
    """Stem, a cell, a stride-2 cell (4 → 6 channels: pixel-unshuffle), optionally an identity cell."""

    def __init__(self, identity: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        cells: list[nn.Module] = [Block(4, 4, 1), Block(4, 6, 2)]
        if identity:
            cells.append(nn.Identity())
        self.cells = nn.ModuleList(cells)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for c in self.cells:
            x = c(x)
        return self.head(x.mean(dim=(2, 3)))

    def zcfast_cells(self) -> list[tuple[str, nn.Module]]:
        return [("stem", self.stem)] + [(f"cells.{i}", c) for i, c in enumerate(self.cells)]


def data(n: int = 8, hw: int = 8, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, hw, hw, generator=g), torch.randint(0, classes, (n,), generator=g)


def _hooks(net: nn.Module) -> int:
    return sum(len(d) for m in net.modules() for d in (m._forward_hooks, m._forward_pre_hooks,
                                                       m._backward_hooks, m._backward_pre_hooks))


# ------------------------------------------------------------------------------------------
# values
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1,), (3, 5), (4, 16, 8, 8), (2, 3, 7, 9)])
def test_rademacher_like_draws_the_official_bernoulli_numbers(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    """Bit for bit the official ``(bernoulli(ones_like(t) * .5) - .5) * 2``, and the generator left
    in the same state (the next cell's draw and anything after it unchanged)."""
    t = torch.zeros(shape, dtype=dtype)
    for seed in (0, 1, 12345):
        g_ref, g_ours = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        for _ in range(3):   # consecutive draws from one stream, as the cells make them
            want = (torch.bernoulli(torch.ones_like(t) * 0.5, generator=g_ref) - 0.5) * 2
            got = rademacher_like(t, g_ours)
            assert got.dtype == dtype and got.shape == t.shape
            assert torch.equal(got, want)
        assert torch.equal(torch.rand(4, generator=g_ref), torch.rand(4, generator=g_ours))
    assert set(got.unique().tolist()) <= {-1.0, 1.0}


def test_rademacher_like_global_rng_and_other_layouts() -> None:
    """``generator=None`` reads the global RNG as the official does; a non-contiguous or float16
    tensor takes ``torch.bernoulli`` itself (same numbers by definition)."""
    t = torch.zeros(2, 4, 5, 5)
    torch.manual_seed(7)
    want = (torch.bernoulli(torch.ones_like(t) * 0.5) - 0.5) * 2
    torch.manual_seed(7)
    assert torch.equal(rademacher_like(t, None), want)
    for other in (t.permute(0, 2, 3, 1), t.half()):
        g_ref, g_ours = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        want = (torch.bernoulli(torch.full_like(other, 0.5), generator=g_ref) - 0.5) * 2
        got = rademacher_like(other, g_ours)
        assert got.dtype == other.dtype and torch.equal(got, want)


@pytest.mark.parametrize("arch", ARCHS)
def test_nb201_matches_the_official_restatement(arch: str) -> None:
    net = small_nb201(arch)
    x, y = data(hw=16)
    got = score_detailed(net, x, y, THREE, per_layer=True, seed=3)
    want = official_az(net, tuple(x.shape), 3)
    for k in THREE:
        assert got[k].ok, (k, got[k].error)
        assert close(got[k].value, want[k]), (k, got[k].value, want[k])
    # per_layer: stem + 5 features (3 cells, 2 reduction blocks), keyed by qualified names
    ent = got["az_expressivity"].per_layer
    assert list(ent) == ["stem"] + [f"cells.{i}" for i in range(5)]
    assert all(close(a, b) for a, b in zip(ent.values(), want["entropies"]))
    assert list(got["az_trainability"].per_layer) == [f"cells.{i}" for i in range(5)]
    assert all(close(a, b) for a, b in zip(got["az_trainability"].per_layer.values(), want["cell_scores"]))
    assert close(got["az_progressivity"].value, min(got["az_progressivity"].per_layer.values()))


def test_hand_model_with_zcfast_cells_matches_the_official_restatement() -> None:
    torch.manual_seed(0)
    net = Tiny()
    x, y = data(hw=8, classes=3)
    got = score_detailed(net, x, y, THREE, seed=5)
    want = official_az(net, tuple(x.shape), 5)
    for k in THREE:
        assert got[k].ok and close(got[k].value, want[k]), (k, got[k], want[k])


def test_identity_cell_scores_minus_inf_with_the_reason() -> None:
    torch.manual_seed(0)
    net = Tiny(identity=True)
    x, y = data(hw=8, classes=3)
    got = score_detailed(net, x, y, THREE, seed=5)
    want = official_az(net, tuple(x.shape), 5)
    assert want["az_trainability"] == -math.inf
    r = got["az_trainability"]
    assert r.value == -math.inf and "cells.2" in r.error and "unchanged" in r.error
    assert got["az_expressivity"].ok and close(got["az_expressivity"].value, want["az_expressivity"])
    # NB201: a cell whose only live path is skip_connect
    net = small_nb201(IDENTITY_CELL)
    got = score_detailed(net, *data(hw=16), ("az_trainability",), seed=3)["az_trainability"]
    assert got.value == -math.inf and "unchanged" in got.error
    assert official_az(net, (8, 3, 16, 16), 3)["az_trainability"] == -math.inf


def test_constant_features_are_minus_inf_as_the_official_nan() -> None:
    net = small_nb201(ZERO_CELL)
    x, y = data(hw=16)
    got = score_detailed(net, x, y, THREE, seed=3)
    with np.errstate(invalid="ignore"):   # the official 0/0
        want = official_az(net, tuple(x.shape), 3)
    for k in ("az_expressivity", "az_progressivity"):
        assert want[k] == -math.inf
        assert got[k].value == -math.inf and "constant" in got[k].error and "NaN" in got[k].error, got[k]
    # the zero cells' input gradient is 0: σmax = 0, a finite -1e6 + 2 term, as the official
    assert got["az_trainability"].ok and close(got["az_trainability"].value, want["az_trainability"], 1e-9)


def test_score_arch_on_nb201_routes_to_the_module_backend_and_matches() -> None:
    space = zcfast.spaces.get("nb201")
    assert scoring.route(space, resolve(list(AZ_NAS))) is scoring.MODULE_BACKEND
    assert scoring.route(space, resolve(["az_expressivity"])) is scoring.MODULE_BACKEND
    assert scoring.route(space, resolve(["az_complexity"])) is scoring.NB201_BACKEND   # flops_counts only
    arch = parse_arch_str(ARCHS[0])
    x, y = data(n=4, hw=32, classes=10)
    got = zcfast.score_arch("nb201", arch, x, y, proxies=list(AZ_NAS), seed=11, detailed=True)
    want = official_az(build_seeded(space, arch, 11, 10), tuple(x.shape), 11)
    for k in THREE:
        assert got[k].ok and close(got[k].value, want[k]), (k, got[k], want[k])
    flops = zcfast.score_arch("nb201", arch, x, y, proxies=["flops"], seed=11)["flops"]
    assert got["az_complexity"].value == pytest.approx(flops, rel=1e-12)
    alone = zcfast.score_arch("nb201", arch, x, y, proxies=["az_complexity"], seed=11)["az_complexity"]
    assert alone == pytest.approx(flops, rel=1e-12)


def test_values_do_not_depend_on_the_other_proxies_of_the_call() -> None:
    # a need run before az_pass that draws from the global RNG must not move AZ-NAS's draws
    def drawing(ctx) -> None:
        ctx.data["test_az_draws"] = torch.rand(1000)

    zcfast.register_need(zcfast.Need("test_az_draws", run=drawing, reads_inputs=False))
    zcfast.register_proxy("test_az_drawer", needs=("test_az_draws",))(lambda ctx: float(ctx.data["test_az_draws"][0]))
    try:
        torch.manual_seed(0)
        net = Tiny()
        x, y = data(hw=8, classes=3)
        alone = zcfast.score(net, x, y, proxies=THREE, seed=2)
        mixed = zcfast.score(net, x, y, proxies=("test_az_drawer",) + THREE, seed=2)
        for k in THREE:
            assert alone[k] == mixed[k], k
    finally:
        zcfast.unregister_proxy("test_az_drawer")
        zcfast.unregister_need("test_az_draws")


def test_deterministic_and_seed_dependent() -> None:
    torch.manual_seed(0)
    net = Tiny()
    x, y = data(hw=8, classes=3)
    a = zcfast.score(net, x, y, proxies=THREE, seed=7)
    b = zcfast.score(net, x, y, proxies=THREE, seed=7)
    c = zcfast.score(net, x, y, proxies=THREE, seed=8)
    assert a == b
    assert all(a[k] != c[k] for k in THREE)


# ------------------------------------------------------------------------------------------
# the cells contract on the three spaces
# ------------------------------------------------------------------------------------------
def test_nb101_and_darts_networks_list_their_cells() -> None:
    nb101 = zcfast.spaces.get("nb101")
    darts = zcfast.spaces.get("darts")
    rng = random.Random(0)
    torch.manual_seed(0)
    n1 = nb101.build(nb101.sample(rng), num_classes=5, stem_channels=4, num_stacks=2, cells_per_stack=1)
    names = [n for n, _ in model_cells(n1)]
    assert names == ["stem", "layers.0", "layers.2"]            # the max-pool (layers.1) is not a cell
    torch.manual_seed(0)
    n2 = darts.build(darts.sample(rng), num_classes=5, channels=2, layers=3)
    assert [n for n, _ in model_cells(n2)] == ["stem", "cells.0", "cells.1", "cells.2"]
    assert [n for n, _ in model_cells(small_nb201(ARCHS[0]))] == ["stem"] + [f"cells.{i}" for i in range(5)]
    x, y = data(n=4, hw=8)
    for net in (n1, n2):
        got = score_detailed(net, x, y, THREE, seed=1, per_layer=True)
        for k in THREE:
            assert got[k].error is None or math.isinf(got[k].value), (type(net).__name__, k, got[k])
        assert list(got["az_expressivity"].per_layer) == [n for n, _ in model_cells(net)]
    # NB101 (a plain chain): the restatement over its listed cells agrees
    cells = [m for _, m in model_cells(n1)]

    def nb101_features(m: nn.Module, xx: torch.Tensor) -> list[torch.Tensor]:
        feats = [m.stem(xx)]
        h = feats[0]
        for layer in m.layers:
            h = layer(h)
            if type(layer).__name__ == "NB101Cell":
                feats.append(h)
        return feats

    got = score_detailed(n1, x, y, THREE, seed=1)
    want = official_az(n1, tuple(x.shape), 1, nb101_features)
    assert len(cells) == 3
    for k in THREE:
        assert close(got[k].value, want[k]), (k, got[k], want[k])

    # DARTS: each cell reads (s0, s1); its trainability term differentiates w.r.t. s1 only
    def darts_features(m: nn.Module, xx: torch.Tensor) -> list[torch.Tensor]:
        feats = [m.stem(xx)]
        s0 = s1 = feats[0]
        for cell in m.cells:
            s0, s1 = s1, cell(s0, s1)
            feats.append(s1)
        return feats

    got = score_detailed(n2, x, y, THREE, seed=1)
    want = official_az(n2, tuple(x.shape), 1, darts_features)
    for k in THREE:
        assert close(got[k].value, want[k]), (k, got[k], want[k])


# ------------------------------------------------------------------------------------------
# undefined cases, clear messages
# ------------------------------------------------------------------------------------------
def test_model_without_cells_is_undefined_with_what_to_add() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x, y = data(hw=8, classes=3)
    got = score_detailed(net, x, y, list(AZ_NAS))
    for k in THREE:
        assert math.isnan(got[k].value) and "zcfast_cells" in got[k].error and "Sequential" in got[k].error
    assert got["az_complexity"].ok   # FLOPs need no cells


class _Bad(Tiny):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.flat = nn.Flatten()

    def zcfast_cells(self):  # type: ignore[override]
        if self.kind == "one":
            return [("stem", self.stem)]
        if self.kind == "copy":
            return [("stem", copy.deepcopy(self.stem)), ("cells.0", self.cells[0])]
        if self.kind == "twice":
            return [("stem", self.stem), ("again", self.stem)]
        if self.kind == "order":
            return [("cells.0", self.cells[0]), ("stem", self.stem)]
        if self.kind == "unused":
            return [("stem", self.stem), ("flat", self.flat)]
        return 3


@pytest.mark.parametrize("kind, words", [("one", "at least the stem and one cell"), ("copy", "not a submodule"),
                                         ("twice", "listed twice"), ("order", "listed order"),
                                         ("unused", "listed order"), ("int", "must return")])
def test_bad_cell_lists_give_clear_reasons(kind: str, words: str) -> None:
    net = _Bad(kind)
    x, y = data(hw=8, classes=3)
    snap = ModelSnapshot(net, x, y)
    r = score_detailed(net, x, y, ("az_expressivity",))["az_expressivity"]
    assert math.isnan(r.value) and words in r.error, r.error
    snap.assert_unchanged("a failing az_pass")
    with pytest.raises(CellsError, match=words):
        record_cells(net, x)
    assert _hooks(net) == 0


def test_non_4d_features_and_integer_inputs_are_refused() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.cell = nn.Linear(5, 4), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.cell(self.stem(x))

        def zcfast_cells(self):
            return [("stem", self.stem), ("cell", self.cell)]

    r = score_detailed(Flat(), torch.randn(4, 5), torch.zeros(4, dtype=torch.long), ("az_expressivity",))
    assert "[B, C, H, W]" in r["az_expressivity"].error
    emb = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    r = score_detailed(emb, torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long), THREE)
    assert all(math.isnan(v.value) and v.error for v in r.values())


# ------------------------------------------------------------------------------------------
# clean-up
# ------------------------------------------------------------------------------------------
def test_leaves_no_hook_and_the_model_unchanged() -> None:
    net = small_nb201(ARCHS[1])
    net.eval()
    x, y = data(hw=16)
    snap = ModelSnapshot(net, x, y)
    got = score_detailed(net, x, y, list(AZ_NAS), seed=4)
    assert all(r.ok for r in got.values()), got
    snap.assert_unchanged("the AZ-NAS measures")
    assert _hooks(net) == 0 and all(p.grad is None for p in net.parameters())
    # record_cells on a model it is handed: the hooks go, the forward stopped at the last cell
    feats = record_cells(net, x)
    assert _hooks(net) == 0 and len(feats) == 6 and feats[-1][1].shape == (8, 16, 4, 4)


def test_no_tensor_survives_the_calls() -> None:
    import gc

    from zcfast.testing import live_tensor_count

    torch.manual_seed(0)
    net = Tiny(identity=True)
    x, y = data(hw=8, classes=3)
    score_detailed(net, x, y, list(AZ_NAS), seed=1)   # warm-up (lazy module state)
    gc.collect()
    before = live_tensor_count()
    for s in range(3):
        score_detailed(net, x, y, list(AZ_NAS), seed=s)
    gc.collect()
    assert live_tensor_count() == before
