"""GradSign (``gradsign``) and TE-NAS's two measures (``ntk_cond``, ``linear_regions``), each held
to an independent plain-PyTorch/numpy restatement of its official code (written below, after
cmu-catalyst/GradSign@26412be8 ``get_grad_conflict``, VITA-Group/TENAS@9df78ffd ``get_ntk_n`` and
``LinearRegionCount``) on tiny seeded models and a small NAS-Bench-201 network; the quirks that
decide the numbers (one image per forward for GradSign, BatchNorm weights in the NTK, NaN κ ->
1e5, the own Gaussian input of linear_regions); the undefined cases with their reasons; the
caller's model and hooks untouched; determinism; the route score_arch takes on nb201.
Kept small for CI (batches of 6-8 samples of 6×6 or 8×8 inputs)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import zcfast
from zcfast.proxies.gradsign import gradsign_reduce
from zcfast.proxies.te_nas import NTK_NAN_VALUE, ntk_condition
from zcfast.spaces.nb201 import NB201Network
from zcfast.testing import ModelSnapshot

NEW = ("gradsign", "ntk_cond", "linear_regions")


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # conftest.py
NB201_ARCH = ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none", "nor_conv_3x3")


def tiny_cnn(seed: int = 0, classes: int = 10) -> nn.Sequential:
    """Conv-BN-ReLU-Conv-BN-ReLU-pool-Linear: [N, 3, H, W] -> [N, classes]."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, classes))


def batch(n: int = 8, seed: int = 1, classes: int = 10, hw: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, hw, hw, generator=g), torch.randint(0, classes, (n,), generator=g)


def nb201(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return NB201Network(NB201_ARCH, num_classes=10, channels=4, cells_per_stage=1)


def no_hooks(net: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in net.modules())


# ---------------------------------------------------------------- official restatements
def official_gradsign(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """get_grad_conflict: train mode, per sample a forward of inputs[[i]] and a backward of its
    cross-entropy; Conv2d/Linear weight grads (zeros when None) flattened and concatenated in
    numpy; np.sign, |Σ over samples|, np.nansum."""
    net = copy.deepcopy(net)
    net.train()
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    rows = []
    for i in range(x.shape[0]):
        net.zero_grad()
        F.cross_entropy(net(x[[i]]), y[[i]]).backward()
        rows.append(np.concatenate([(m.weight.grad if m.weight.grad is not None else torch.zeros_like(m.weight))
                                    .detach().numpy().ravel() for m in layers]))
    return float(np.nansum(np.abs(np.sign(np.stack(rows)).sum(axis=0))))


def official_ntk_cond(net: nn.Module, x: torch.Tensor) -> float:
    """get_ntk_n (train_mode=True, one batch): one forward, per sample backward(ones) of its
    logits row with the graph retained, W.grad of every named_parameters entry with 'weight' in
    its name, einsum Gram, ascending symmetric eigenvalues, λ[-1]/λ[0], NaN -> 1e5."""
    net = copy.deepcopy(net)
    net.train()
    net.zero_grad()
    logit = net(x.clone())
    grads = []
    for i in range(len(x)):
        logit[i:i + 1].backward(torch.ones_like(logit[i:i + 1]), retain_graph=True)
        grads.append(torch.cat([W.grad.view(-1).detach() for name, W in net.named_parameters()
                                if "weight" in name and W.grad is not None], -1))
        net.zero_grad()
    g = torch.stack(grads, 0)
    ntk = torch.einsum("nc,mc->nm", g, g)
    eig = torch.linalg.eigvalsh(ntk)
    return float(np.nan_to_num((eig[-1] / eig[0]).item(), copy=True, nan=100000.0))


def official_linear_regions(net: nn.Module, z: torch.Tensor) -> float:
    """Linear_Region_Collector + LinearRegionCount.calc_LR on the inputs z: train mode, no grad,
    the outputs of every nn.ReLU call on a 4-D input concatenated per sample, sign, then
    Σ_i 1 / #{j: pattern j == pattern i} from A(1 − B)ᵀ + its transpose (float32 here, the
    official half precision gives the same zero pattern)."""
    net = copy.deepcopy(net)
    net.train()
    feats: list[torch.Tensor] = []
    hs = [m.register_forward_hook(lambda m, i, o: feats.append(o.detach()) if len(i[0].size()) == 4 else None)
          for m in net.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        net(z)
    for h in hs:
        h.remove()
    a = torch.sign(torch.cat([f.reshape(len(z), -1) for f in feats], 1))
    res = a @ (1 - a).T
    res = res + res.T
    res = (1 - torch.sign(res)).sum(1)
    return float((1.0 / res.float()).sum())


def gaussian_like(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The input linear_regions draws: N(0, 1) of x's shape from a generator seeded with the call's seed."""
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)


def count_distinct(rows: np.ndarray) -> int:
    return len({r.tobytes() for r in rows})


# ---------------------------------------------------------------- values vs the official code
@pytest.mark.parametrize("make,hw", [(tiny_cnn, 6), (nb201, 8)], ids=["tiny_cnn", "nb201"])
def test_values_match_the_official_restatements(make, hw) -> None:
    net = make()
    x, y = batch(n=6, hw=hw)
    snap = ModelSnapshot(net, x, y)
    r = zcfast.score_detailed(net, x, y, proxies=list(NEW), seed=0, per_layer=True)
    snap.assert_unchanged()
    assert no_hooks(net)
    assert all(r[p].ok for p in NEW), {p: r[p].error for p in NEW}
    # gradsign: integer counts, float64 in zcfast, float32 officially: equal at these sizes
    assert r["gradsign"].value == official_gradsign(net, x, y)
    assert sum(r["gradsign"].per_layer.values()) == r["gradsign"].value
    # ntk_cond: float32 Gram and eigenvalues on both sides (different GEMM kernels)
    assert r["ntk_cond"].value == pytest.approx(official_ntk_cond(net, x), rel=2e-3)
    # linear_regions: the official float sum of 1/multiplicity is the distinct count
    z = gaussian_like(x, seed=0)
    assert r["linear_regions"].value == pytest.approx(official_linear_regions(net, z), abs=1e-4)
    assert float(r["linear_regions"].value).is_integer() and 1 <= r["linear_regions"].value <= len(x)


def test_gradsign_is_one_image_per_forward_not_one_batched_forward() -> None:
    """BatchNorm over one image (official) gives other per-sample gradients than a batched forward."""
    net, (x, y) = tiny_cnn(), batch()
    got = zcfast.score(net, x, y, proxies=["gradsign"])["gradsign"]
    batched = copy.deepcopy(net).train()
    out = batched(x)
    rows = []
    for i in range(len(x)):
        gs = torch.autograd.grad(F.cross_entropy(out[i:i + 1], y[i:i + 1]),
                                 [m.weight for m in batched.modules() if isinstance(m, (nn.Conv2d, nn.Linear))],
                                 retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in gs]))
    other = float(torch.sign(torch.stack(rows)).sum(0).abs().sum())
    assert got == official_gradsign(net, x, y) and got != other


def test_gradsign_reduce_signs_zero_and_nan_as_official() -> None:
    """sign(0) = 0 (np.sign); a column with a NaN for any sample is dropped (np.nansum), not
    summed over its other samples."""
    g = torch.tensor([[1.0, 0.0, -2.0, float("nan"), 3.0],
                      [2.0, 0.0, 1.0, 1.0, 0.0],
                      [5.0, -0.0, -1.0, 1.0, 0.0]])
    official = float(np.nansum(np.abs(np.sign(g.numpy()).sum(axis=0))))
    assert official == 3 + 0 + 1 + 1
    got = gradsign_reduce([g, g[:, :2].reshape(3, 2, 1)])
    assert got.dtype == torch.float64 and got.tolist() == [official, 3.0]


def test_gradsign_unreached_weight_counts_zero() -> None:
    """A Linear the loss never reaches: zero gradients, sign 0, its term is 0 (official zeros_like)."""
    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.body, self.unused = tiny_cnn(), nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    net, (x, y) = Branch(), batch()
    r = zcfast.score_detailed(net, x, y, proxies=["gradsign"], per_layer=True)["gradsign"]
    assert r.per_layer["unused"] == 0.0 and r.value == official_gradsign(net, x, y)


# ---------------------------------------------------------------- ntk_cond quirks
def test_ntk_includes_batchnorm_weights() -> None:
    """Every parameter named 'weight' enters the NTK: without BatchNorm's the value differs."""
    net, (x, _) = tiny_cnn(), batch()
    got = zcfast.score(net, x, None, proxies=["ntk_cond"])["ntk_cond"]
    ref = copy.deepcopy(net).train()
    logits = ref(x)
    ws = [m.weight for m in ref.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(logits[i].sum(), ws, retain_graph=True)])
            for i in range(len(x))]
    g = torch.stack(rows).double()
    eig = np.linalg.eigvalsh((g @ g.T).numpy())
    assert got != pytest.approx(eig[-1] / eig[0], rel=1e-2)
    assert got == pytest.approx(official_ntk_cond(net, x), rel=2e-3)


def test_ntk_cond_nan_is_1e5_and_singular_is_inf_with_reason() -> None:
    """All weights 0: every gradient is 0, κ = 0/0, reported 1e5 as the official nan_to_num."""
    net, (x, y) = tiny_cnn(), batch()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "weight" in name:
                p.zero_()
    r = zcfast.score_detailed(net, x, y, proxies=["ntk_cond"])["ntk_cond"]
    assert r.value == NTK_NAN_VALUE == official_ntk_cond(net, x) and r.error is None
    value, reason = ntk_condition(torch.diag(torch.tensor([0.0, 2.0])))
    assert value == math.inf and "singular" in reason
    assert ntk_condition(torch.diag(torch.tensor([0.5, 2.0]))) == (4.0, None)


# ---------------------------------------------------------------- linear_regions quirks
def test_linear_regions_reads_its_own_gaussian_input() -> None:
    """The batch gives only the shape: other values, same count; another seed, other noise."""
    net, (x, y) = tiny_cnn(), batch(n=8)
    a = zcfast.score(net, x, y, proxies=["linear_regions"], seed=0)["linear_regions"]
    b = zcfast.score(net, 3 * x + 5, y, proxies=["linear_regions"], seed=0)["linear_regions"]
    assert a == b
    # the count is the distinct rows of the sign codes (numpy restatement on the same noise)
    ref = copy.deepcopy(net).train()
    codes = []
    hs = [m.register_forward_hook(lambda m, i, o: codes.append((o > 0).reshape(8, -1).numpy()))
          for m in ref.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        ref(gaussian_like(x, seed=0))
    for h in hs:
        h.remove()
    assert a == count_distinct(np.concatenate(codes, axis=1))


def test_linear_regions_skips_relus_on_non_4d_inputs() -> None:
    """A ReLU after the pool (2-D input) is not recorded; a model with only such ReLUs is undefined."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, 10))
    x, y = batch()
    r = zcfast.score_detailed(mlp, x, y, proxies=["linear_regions"])["linear_regions"]
    assert math.isnan(r.value) and "4-D" in r.error
    torch.manual_seed(0)
    mixed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    got = zcfast.score(mixed, x, y, proxies=["linear_regions"])["linear_regions"]
    assert got == pytest.approx(official_linear_regions(mixed, gaussian_like(x)), abs=1e-4)


# ---------------------------------------------------------------- undefined cases, determinism, routing
def test_undefined_cases_give_reasons() -> None:
    x, y = batch()
    torch.manual_seed(0)
    no_relu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(64, 10))
    r = zcfast.score_detailed(no_relu, x, y, proxies=list(NEW))
    assert r["gradsign"].ok and r["ntk_cond"].ok
    assert math.isnan(r["linear_regions"].value) and "no nn.ReLU" in r["linear_regions"].error
    # integer inputs (token ids): linear_regions cannot feed its Gaussian noise
    torch.manual_seed(0)
    emb = nn.Sequential(nn.Embedding(20, 4), nn.Flatten(), nn.ReLU(), nn.Linear(12, 10))
    ids = torch.randint(0, 20, (6, 3), generator=torch.Generator().manual_seed(0))
    r = zcfast.score_detailed(emb, ids, y[:6], proxies=list(NEW))
    assert math.isnan(r["linear_regions"].value) and "int64" in r["linear_regions"].error
    assert r["ntk_cond"].ok
    # gradsign needs targets
    with pytest.raises((TypeError, ValueError), match="targets"):
        zcfast.score(tiny_cnn(), x, None, proxies=["gradsign"])
    # one image per forward through a BatchNorm1d on [1, C]: undefined, as the official crashes
    torch.manual_seed(0)
    bn1d = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(4),
                         nn.Linear(4, 10))
    r = zcfast.score_detailed(bn1d, x, y, proxies=["gradsign"])["gradsign"]
    assert math.isnan(r.value) and "more than 1 value per channel" in r.error


def test_deterministic_and_clean() -> None:
    net, (x, y) = tiny_cnn(), batch()
    snap = ModelSnapshot(net, x, y)
    a = zcfast.score(net, x, y, proxies=list(NEW), seed=5)
    b = zcfast.score(net, x, y, proxies=list(NEW), seed=5)
    snap.assert_unchanged()
    assert a == b and no_hooks(net)


def test_score_arch_routes_on_nb201() -> None:
    """ntk_cond and linear_regions read needs zcfast.batched does not produce: the module backend;
    gradsign's per_sample_grads is on the fast route, and it equals the module route at 16×16
    (at 8×8 many NB201 gradient entries are at rounding level and the two routes' totals differ
    by ~0.8%: a float32 property of the measure, not of either route)."""
    from zcfast import scoring
    from zcfast.proxies.registry import resolve
    space = zcfast.spaces.get("nb201")
    assert scoring.route(space, resolve(["ntk_cond"])) is scoring.MODULE_BACKEND
    assert scoring.route(space, resolve(["linear_regions"])) is scoring.MODULE_BACKEND
    assert scoring.route(space, resolve(["gradsign", "ntk_cond"])) is scoring.MODULE_BACKEND
    assert scoring.route(space, resolve(["gradsign"])) is scoring.NB201_BACKEND
    x, y = batch(n=2, hw=16)
    arch = space.arch_at(0)
    fast = zcfast.score_arch(space, arch, x, y, ["gradsign"], seed=3)["gradsign"]
    slow = zcfast.score_arch(space, arch, x, y, ["gradsign"], seed=3, fast=False)["gradsign"]
    assert fast == pytest.approx(slow, rel=1e-3)


def test_bench_official_style_functions_agree() -> None:
    """bench/official_style.py's official_gradsign / official_ntk_cond / official_linear_regions
    (the benchmarks' baselines, reachable through official_modern_scores) give zcfast's values."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import official_style as o

    net, (x, y) = tiny_cnn(seed=2), batch(n=6)
    got = zcfast.score(net, x, y, proxies=list(NEW), seed=0)
    off = o.official_modern_scores(net, x, y, proxies=list(NEW))
    assert got["gradsign"] == off["gradsign"] and got["linear_regions"] == pytest.approx(off["linear_regions"])
    assert got["ntk_cond"] == pytest.approx(off["ntk_cond"], rel=2e-3)


# ---------------------------------------------------------------- speed paths keep the values
@pytest.mark.parametrize("k,include_pad,shape", [(3, False, (3, 4, 9, 7)), (3, True, (2, 5, 8, 8)),
                                                 (5, False, (2, 3, 7, 5)), (3, False, (4, 6, 6))])
def test_box_avg_pools_bit_exact_with_pytorch(k, include_pad, shape) -> None:
    """box_avg_pools_ (the average pools of the NTK, AZ-NAS, SWAP and linear regions): forward, backward and batched
    backward equal PyTorch's CPU kernels bit for bit; other pools are left alone."""
    from zcfast.proxies.builtin_needs import box_avg_pools_
    native = nn.AvgPool2d(k, stride=1, padding=k // 2, count_include_pad=include_pad)
    fast = copy.deepcopy(native)
    assert box_avg_pools_(fast) == 1
    g = torch.Generator().manual_seed(k)
    x = torch.randn(*shape, generator=g, requires_grad=True)
    v = torch.randn(3, *shape, generator=g)
    y_ref, y = native(x), fast(x)
    assert torch.equal(y, y_ref)
    assert torch.equal(torch.autograd.grad(y, x, v[0])[0], torch.autograd.grad(y_ref, x, v[0])[0])
    batched = torch.autograd.grad(fast(x), x, v, is_grads_batched=True)[0]
    y_ref = native(x)
    rows = torch.stack([torch.autograd.grad(y_ref, x, v[i], retain_graph=True)[0] for i in range(3)])
    assert torch.equal(batched, rows)
    assert box_avg_pools_(nn.Sequential(nn.AvgPool2d(2, 2), nn.AvgPool2d(3), nn.AvgPool2d(3, 1, 0))) == 0


@pytest.mark.parametrize("rows", [1, 2, 4, 8])
def test_ntk_gram_rows_per_backward_same_gram(rows) -> None:
    """Batched backwards of a few one-hot rows give the official per-row Gram (NB201 with an
    average pool, BatchNorm coupling the batch), within float32 rounding."""
    from zcfast.proxies.te_nas import ntk_gram_of
    net = nb201(seed=4)
    x, _ = batch(n=6, hw=8)
    ref = copy.deepcopy(net).train()
    ws = [p for n, p in ref.named_parameters() if "weight" in n]
    logit = ref(x)
    logit = logit[1] if isinstance(logit, tuple) else logit
    g = torch.stack([torch.cat([t.reshape(-1) for t in torch.autograd.grad(logit[i].sum(), ws, retain_graph=True)])
                     for i in range(len(x))])
    gram = ntk_gram_of(copy.deepcopy(net), x, rows_per_backward=rows)
    torch.testing.assert_close(gram, g @ g.t(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="rows_per_backward"):
        ntk_gram_of(copy.deepcopy(net), x, rows_per_backward=0)
