"""bench/official_style.py's NAS-Bench-Suite-Zero references (nwot, epe_nas, zen, zico, l2_norm,
params, flops, plain), each checked against a second, differently written computation of the
same formula on tiny seeded models, NB201's published FLOPs/params, the undefined cases, bad
options, and that the caller's model (and RNG) is untouched."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import zcfast
from zcfast.testing import ModelSnapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import official_style as o  # noqa: E402  (plain-PyTorch, official-style references)


def tiny_cnn(seed: int = 0, classes: int = 10) -> nn.Sequential:
    """Conv-BN-ReLU-Conv-BN-ReLU-pool-Linear: [N, 3, 6, 6] → [N, classes]."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, classes))


def batch(n: int = 12, seed: int = 1, classes: int = 10, hw: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, hw, hw, generator=g), torch.randint(0, classes, (n,), generator=g)


def hamming_by_identity(codes: list[torch.Tensor]) -> np.ndarray:
    """Σ over codes c [N, D] of 2·c·cᵀ − s·𝟙ᵀ − 𝟙·sᵀ + D (s = row sums), in int64."""
    out = None
    for c in codes:
        c = c.to(torch.int64)
        s = c.sum(1, keepdim=True)
        k = 2 * c @ c.t() - s - s.t() + c.shape[1]
        out = k if out is None else out + k
    return out.numpy().astype(np.float64)


# ------------------------------------------------------------------------------------------ nwot
def test_nwot_kernel_matches_identity_on_stepped_activations():
    net, (x, _) = tiny_cnn(), batch()
    K = o.nwot_kernel(net, x)
    # second computation: run the layers one by one (train mode), code each ReLU's input
    ref = tiny_cnn()
    ref.train()
    h, codes = x, []
    with torch.no_grad():
        for layer in ref:
            if isinstance(layer, nn.ReLU):
                codes.append((h.reshape(len(x), -1) > 0))
            h = layer(h)
    expected = hamming_by_identity(codes)
    assert np.array_equal(K, expected)
    assert np.all(np.diag(K) == sum(c.shape[1] for c in codes))
    sign, logdet = torch.linalg.slogdet(torch.from_numpy(expected))
    assert o.official_nwot(net, x, None) == pytest.approx(float(logdet), rel=1e-12, abs=1e-9)


class ReLUWrapped(nn.Module):
    """A class whose type name contains "ReLU" around a ReLU (as xautodl's ReLUConvBN)."""

    def __init__(self) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SideBranch(nn.Module):
    """conv → ReLUWrapped → pool → linear, plus a ReLU whose output is computed and thrown away."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.block = ReLUWrapped()
        self.unused = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        self.unused(h * 2.0 - 0.1)   # never reaches the output: the backward skips it
        return self.head(self.block(h))


def test_nwot_relu_selection_official_vs_naslib():
    net, (x, _) = SideBranch(), batch(10)
    with torch.no_grad():
        h = net.conv(x)
    code_block = h.reshape(len(x), -1) > 0                     # input of the wrapper = input of its ReLU
    code_unused = (h * 2.0 - 0.1).reshape(len(x), -1) > 0
    # official: wrapper + its inner ReLU (the same code twice), the unused ReLU not reached
    assert np.array_equal(o.nwot_kernel(net, x, "official"), hamming_by_identity([code_block, code_block]))
    # naslib: every ReLU-named module (a user's wrapper class is not NASLib's, so it counts), one forward
    assert np.array_equal(o.nwot_kernel(net, x, "naslib"),
                          hamming_by_identity([code_block, code_block, code_unused]))


def small_nb201(arch: str, classes: int = 10) -> nn.Module:
    space = zcfast.spaces.get("nb201")
    torch.manual_seed(5)
    return space.build(space.decode(arch), classes, channels=4, cells_per_stage=1)


ARCH_MIX = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"


def test_nwot_nb201_official_counts_relu_conv_bn_twice():
    net = small_nb201(ARCH_MIX)
    x, _ = batch(8, hw=8)
    calls: list[tuple[nn.Module, torch.Tensor]] = []
    copy = small_nb201(ARCH_MIX)                             # same seed: the same weights
    copy.load_state_dict(net.state_dict())
    hs = [m.register_forward_hook(lambda m, i, out: calls.append((m, i[0].reshape(len(x), -1) > 0)))
          for m in copy.modules() if type(m) is nn.ReLU]    # the torch ReLUs only, call by call
    copy.train()
    with torch.no_grad():
        copy(x)
    for h in hs:
        h.remove()
    last = copy.lastact[1]
    codes = [c for _, c in calls]
    in_wrappers = [c for m, c in calls if m is not last]
    assert len(in_wrappers) == len(codes) - 1 > 0
    assert np.array_equal(o.nwot_kernel(net, x, "naslib"), hamming_by_identity(codes))
    assert np.array_equal(o.nwot_kernel(net, x, "official"), hamming_by_identity(codes + in_wrappers))


def test_nwot_singular_kernel_is_minus_inf():
    net, (x, _) = tiny_cnn(), batch(6)
    x = torch.cat([x[:3], x[:3]])       # duplicated samples: identical rows of K
    assert o.official_nwot(net, x, None) == -math.inf


# --------------------------------------------------------------------------------------- epe_nas
def epe_loop(net: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> float:
    """Second computation: z-scored rows and a float64 GEMM per class, sorted class loop."""
    net = o._copy(net)
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xi).sum(), xi)
    jac = g.reshape(len(x), -1).double()
    terms = []
    for c in sorted(set(y.tolist())):
        rows = jac[y == c]
        if len(rows) == 1:
            if n_classes > 100:
                continue
            terms.append(math.log(1 + 1e-5))
            continue
        z = rows - rows.mean(1, keepdim=True)
        z = z / z.norm(dim=1, keepdim=True)
        corr = (z @ z.t()).clamp(-1, 1)
        s = torch.log(corr.abs() + 1e-5).sum().item()
        terms.append(s / len(rows) if n_classes > 100 else s)
    if n_classes <= 100:
        return sum(abs(t) for t in terms)
    return sum(abs(a - b) for a in terms for b in terms) / len(terms)


def test_epe_nas_official_branch_against_loop_over_classes():
    net = tiny_cnn()
    x, _ = batch(16)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3, 0, 1, 2, 2, 1, 0, 4])   # classes 3 and 4 single
    got = o.official_epe_nas(net, x, y)
    assert got == pytest.approx(epe_loop(net, x, y, 10), rel=1e-6)
    assert o.official_epe_nas(net, x, y, variant="naslib") == got      # logit width 10: same branch


def test_epe_nas_over_100_classes_branch():
    net = tiny_cnn(classes=120)
    x, _ = batch(16)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3, 0, 1, 2, 2, 1, 0, 4])
    got = o.official_epe_nas(net, x, y, variant="naslib")              # n_classes = logit width 120
    assert got == pytest.approx(epe_loop(net, x, y, 120), rel=1e-6)
    assert o.official_epe_nas(net, x, y) == pytest.approx(epe_loop(net, x, y, 10), rel=1e-6)  # official: 10
    # every class a singleton: none kept in the > 100 branch
    y1 = torch.arange(16)
    assert math.isnan(o.official_epe_nas(net, x, y1, n_classes=120))
    assert o.official_epe_nas(net, x, y1, variant="naslib") == 0.0


def test_epe_nas_constant_jacobian_is_nan():
    class Blind(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x.mean(dim=(2, 3)) * 0.0 + 1.0)
    x, y = batch(8)
    assert math.isnan(o.official_epe_nas(Blind(), x, y))


# ------------------------------------------------------------------------------------------- zen
def test_zen_against_functional_forward_and_running_variance_formula():
    net = tiny_cnn()
    x, _ = batch(10)
    got = o.official_zen(net, x, None, seed=7)
    # second computation: the same draws (conv1, conv2, linear weights in module order, then z, ε),
    # a functional forward with batch statistics, running_var = 0.81 + 0.09·var(z) + 0.1·var(z+γε)
    g = torch.Generator().manual_seed(7)
    w1 = torch.empty(4, 3, 3, 3).normal_(generator=g)
    w2 = torch.empty(5, 4, 3, 3).normal_(generator=g)
    torch.empty(10, 5).normal_(generator=g)
    z = torch.randn(x.shape, generator=g)
    e = torch.randn(x.shape, generator=g)

    def features(inp: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        variances = []
        h = F.conv2d(inp, w1, padding=1)                       # bias re-set to 0
        variances.append(h.var(dim=(0, 2, 3), unbiased=True))
        h = F.relu((h - h.mean((0, 2, 3), keepdim=True)) / torch.sqrt(h.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-3))
        h = F.conv2d(h, w2, padding=1)
        variances.append(h.var(dim=(0, 2, 3), unbiased=True))
        h = F.relu((h - h.mean((0, 2, 3), keepdim=True)) / torch.sqrt(h.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-3))
        return h, variances

    with torch.no_grad():
        f0, v0 = features(z)
        f1, v1 = features(z + 1e-2 * e)
    expected = math.log((f0 - f1).abs().flatten(1).sum(1).mean().item())
    for a, b in zip(v0, v1):
        rv = 0.81 * 1.0 + 0.09 * a + 0.1 * b
        expected += 0.5 * math.log(rv.mean().item())
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert o.official_zen(net, x, None, seed=7) == got                  # deterministic in seed
    assert o.official_zen(net, x, None, seed=8) != got


def test_zen_ignores_the_callers_running_stats_and_weights():
    a, b = tiny_cnn(0), tiny_cnn(1)
    x, _ = batch(8)
    b.train()
    with torch.no_grad():
        b(x * 5)                                              # move b's running statistics
    assert o.official_zen(a, x, None) == o.official_zen(b, x, None)


def test_zen_constant_features_and_missing_pool():
    x, _ = batch(6)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 10))
    assert o.official_zen(net, x, None, feature_module="3") == o.official_zen(net, x, None)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 36, 10))
    with pytest.raises(ValueError, match="feature_module"):
        o.official_zen(flat, x, None)
    with pytest.raises(ValueError, match="feature_module"):
        o.official_zen(net, x, None, feature_module="nope")

    class Mul0(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return t * 0.0

    dead = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), Mul0(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))                    # features identical for both inputs
    assert o.official_zen(dead, x, None) == -math.inf


# ------------------------------------------------------------------------------------------ zico
def weight_grads(net: nn.Module, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Per mini-batch, the Conv2d/Linear weight gradients (autograd.grad on a train-mode copy)."""
    net = o._copy(net)
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return [list(torch.autograd.grad(F.cross_entropy(net(xb), yb), weights)) for xb, yb in parts]


def test_zico_two_halves_against_closed_form():
    net, (x, y) = tiny_cnn(), batch(12)
    (g1, g2) = weight_grads(net, [(x[:6], y[:6]), (x[6:], y[6:])])
    expected = 0.0
    for a, b in zip(g1, g2):
        d = (a - b).abs()
        keep = d != 0
        s = ((a.abs() + b.abs())[keep] / d[keep]).double().sum().item()
        if s != 0:
            expected += math.log(s)
    got = o.official_zico(net, x, y)
    assert got == pytest.approx(expected, rel=1e-5)
    assert o.official_zico(net, x, y, batches=[(x[:6], y[:6]), (x[6:], y[6:])]) == got


def test_zico_three_batches_and_one_batch():
    net, (x, y) = tiny_cnn(), batch(12)
    parts = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]
    grads = weight_grads(net, parts)
    expected = 0.0
    for layer in zip(*grads):
        g = torch.stack([t.flatten() for t in layer]).double()
        std = g.std(0, unbiased=False)
        keep = std != 0
        s = (g.abs().mean(0)[keep] / std[keep]).sum().item()
        if s != 0:
            expected += math.log(s)
    assert o.official_zico(net, x, y, batches=parts) == pytest.approx(expected, rel=1e-4)
    assert o.official_zico(net, x, y, n_batches=3) == pytest.approx(expected, rel=1e-4)   # equal thirds
    assert o.official_zico(net, x, y, n_batches=1) == 0.0      # one batch: every std 0, no layer counts


# ----------------------------------------------------------------------- l2_norm, params, plain
def test_l2_norm_params_plain_against_numpy():
    net, (x, y) = tiny_cnn(), batch(8)
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    l2 = sum(np.sqrt(np.sum(m.weight.detach().double().numpy() ** 2)) for m in layers)
    assert o.official_l2_norm(net, x, y) == pytest.approx(l2, rel=1e-6)
    hand = (3 * 4 * 9 + 4) + (4 + 4) + (4 * 5 * 9) + (5 + 5) + (5 * 10 + 10)
    assert o.official_params(net, x, y) == hand
    assert o.official_params(net, x, y, millions=True) == pytest.approx(hand / 1e6)
    shared = nn.Linear(4, 4)
    assert o.official_params(nn.Sequential(shared, nn.ReLU(), shared), x, y) == 20  # a shared layer once
    grads = weight_grads(net, [(x, y)])[0]
    plain = sum((g.double() * m.weight.detach().double()).sum().item() for g, m in zip(grads, layers))
    assert o.official_plain(net, x, y) == pytest.approx(plain, rel=1e-4, abs=1e-7)


# ----------------------------------------------------------------------------------------- flops
def test_flops_hand_count_two_layers():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 2))
    x = torch.randn(7, 3, 5, 5)
    hand = (3 * 3 * 3 * 4 * 25 + 4 * 25) + (100 * 2 + 2)          # MACs + bias adds, per sample
    assert o.official_flops(net, x, None) == hand
    assert o.official_flops(net, x, None, millions=True) == pytest.approx(hand / 1e6)
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2, bias=False), nn.AvgPool2d(2), nn.BatchNorm2d(4))
    assert o.official_flops(grouped, torch.randn(2, 4, 6, 6), None) == 3 * 3 * 4 * 4 / 2 * 16   # pool, BN: 0
    shared = nn.Linear(4, 4, bias=False)
    assert o.official_flops(nn.Sequential(shared, shared), torch.randn(3, 4), None) == 32      # each call
    conv1d = nn.Conv1d(2, 3, 3)
    assert o.official_flops(conv1d, torch.randn(1, 2, 10), None) == 3 * 2 * 3 * 8 + 3 * 8


# Published NAS-Bench-201 cost figures (benchmark file v1_1, as quoted in public code and issues:
# index 0 from NASLib's test fixture and NATS-Bench#24; the min/max of each dataset from a script
# reading the benchmark's json; the 3-conv cell from NATS-Bench#36, hp=12 entry).
ARCH0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
THREE = "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
PUBLISHED = [  # (arch, classes, resolution, MFLOPs, Mparams or None)
    (ARCH0, 10, 32, 15.64737, 0.129306), (ARCH0, 100, 32, 15.65322, None), (ARCH0, 120, 16, 3.91948, None),
    (THREE, 10, 32, 113.95137, 0.802426),
    (NONE, 10, 32, 7.78305, 0.073306), (ALL3, 10, 32, 220.11969, 1.531546),
    (NONE, 100, 32, 7.7889, 0.079156), (ALL3, 100, 32, 220.12554, 1.537396),
    (NONE, 120, 16, 1.9534, 0.080456), (ALL3, 120, 16, 55.03756, 1.538696),
]


@pytest.mark.parametrize("arch,classes,res,mflops,mparams", PUBLISHED)
def test_nb201_published_flops_and_params(arch, classes, res, mflops, mparams):
    space = zcfast.spaces.get("nb201")
    net = space.build(space.decode(arch), classes)
    x = torch.zeros(2, 3, res, res)
    assert o.official_flops(net, x, None, millions=True) == pytest.approx(mflops, abs=5e-6)
    if mparams is not None:
        assert o.official_params(net, x, None, millions=True) == pytest.approx(mparams, abs=5e-7)


# ----------------------------------------------------------------- the caller's model, bad input
CALLS = [("nwot", {}), ("nwot", {"relus": "naslib"}), ("epe_nas", {}), ("epe_nas", {"variant": "naslib"}),
         ("zen", {}), ("zico", {}), ("l2_norm", {}), ("params", {}), ("flops", {}), ("plain", {})]


@pytest.mark.parametrize("name,opts", CALLS)
def test_callers_model_and_rng_unchanged(name, opts):
    net, (x, y) = tiny_cnn(), batch(8)
    net.eval()
    net[0].weight.grad = torch.ones_like(net[0].weight)
    snap = ModelSnapshot(net, x, y)
    value = o.MODERN_FUNCS[name](net, x, y, **opts)
    assert isinstance(value, float)
    snap.assert_unchanged()


def test_modern_scores_and_bad_options():
    net, (x, y) = tiny_cnn(), batch(8)
    got = o.official_modern_scores(net, x, y, proxies=("nwot", "params", "grad_norm"))
    assert set(got) == {"nwot", "params", "grad_norm"}
    assert len(o.SUITE_ZERO) == 13
    with pytest.raises(ValueError, match="proxies"):
        o.official_modern_scores(net, x, y, proxies=("meco",))
    with pytest.raises(ValueError, match="relus"):
        o.official_nwot(net, x, y, relus="all")
    with pytest.raises(ValueError, match="variant"):
        o.official_epe_nas(net, x, y, variant="v2")
    with pytest.raises(ValueError, match="n_batches"):
        o.official_zico(net, x, y, n_batches=0)
    with pytest.raises(ValueError, match="batches"):
        o.official_zico(net, x, y, batches=[])
    with pytest.raises(ValueError, match="gamma"):
        o.official_zen(net, x, y, gamma=0.0)
