"""The stacked NAS-Bench-201 backend runs NAS-Bench-Suite-Zero's proxies and ZiCo (zcfast.batched):
nwot, epe_nas, epe_nas_naslib, zen, zico, l2_norm, params and flops take the fast route
(``score_arch(fast=True)``, ``score_batch``) and equal the module backend (``fast=False``) on
the same weights, for K = 1 and K = 3, with the same reasons for undefined values.

Tolerances: params, flops, l2_norm and zen come out bit-identical (same tensors, same order;
zen's passes see the same weights and inputs); nwot's kernels are integer counts, equal unless
an activation lies within rounding of 0 (rel 1e-6). epe_nas and zico are ill-conditioned in
float32 (zico's mean|g|/std(g) over two mini-batches divides by |g₁ − g₂|): both routes move
~1e-3 from the float64 value at these sizes, so each fast value is held to the float64 network's
value as closely as the module route is (a factor 5 of its error, plus rel 1e-4 / 1e-3).

Kept small for CI: batch 8 of 16×16 inputs, seven architectures covering every op, dead edges
(into a node that never reaches the output; out of a node whose inputs are all ``none``) and
cells whose output is identically zero.
"""
from __future__ import annotations

import gc
import math

import pytest
import torch

import zcfast
from zcfast import batched
from zcfast.batched import SUPPORTED_NEEDS, fast_route_applies, score_batch
from zcfast.proxies import PAPER_LAYER_TYPES
from zcfast.scoring import build_seeded, score_arch
from zcfast.testing import live_tensor_count

SPACE = zcfast.spaces.get("nb201")
ARCHS = [
    SPACE.arch_at(0),
    ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none", "nor_conv_3x3"),
    ("nor_conv_1x1", "nor_conv_3x3", "none", "nor_conv_3x3", "nor_conv_3x3", "none"),     # dead edge 0->2
    ("skip_connect", "none", "none", "none", "none", "nor_conv_3x3"),     # node 2 all-none; cell output 0
    ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "none", "none", "none"),     # 'none' into node 3 only
    ("none", "nor_conv_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_3x3", "avg_pool_3x3"),  # node 1 zero
    ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "nor_conv_1x1", "nor_conv_1x1", "avg_pool_3x3"),
]
NEW = ["nwot", "epe_nas", "epe_nas_naslib", "zen", "zico", "l2_norm", "params", "flops"]
NEW_NEEDS = ("labels", "weights", "parameters", "flops_counts", "relu_kernels", "multi_grads", "zen_pass",
             "per_sample_grads")
SEED = 3
EXACT = ("params", "flops", "l2_norm")
#: (rtol against the module route) for the well-conditioned proxies
RTOL = {"nwot": 1e-6, "zen": 1e-4}
#: rtol added to the float64 rule of the ill-conditioned ones
F64_RTOL = {"epe_nas": 1e-4, "epe_nas_naslib": 1e-4, "zico": 1e-3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def module_route(nb201_batch) -> list[dict]:
    """Per architecture: the module backend's ProxyResults, plus the float64 network's values of
    the ill-conditioned proxies (``_f64`` keys)."""
    x, y = nb201_batch
    out = []
    for a in ARCHS:
        r: dict = dict(score_arch(SPACE, a, x, y, NEW, seed=SEED, detailed=True, fast=False))
        net64 = build_seeded(SPACE, a, SEED).double()
        r64 = zcfast.score_detailed(net64, x.double(), y, list(F64_RTOL), layer_types=PAPER_LAYER_TYPES, seed=SEED)
        r.update({f"{p}_f64": v.value for p, v in r64.items()})
        out.append(r)
    return out


def _check(got: dict, ref: dict, what: str) -> None:
    """One architecture's fast ProxyResults against the module route's (see the module docstring)."""
    for p in NEW:
        a, b = got[p], ref[p]
        assert a.error == b.error, f"{what} {p}: error {a.error!r} vs module {b.error!r}"
        if not math.isfinite(b.value):
            assert (math.isnan(a.value) and math.isnan(b.value)) or a.value == b.value, (what, p, a.value, b.value)
            continue
        if p in EXACT:
            assert a.value == b.value, (what, p, a.value, b.value)
        elif p in RTOL:
            assert a.value == pytest.approx(b.value, rel=RTOL[p]), (what, p, a.value, b.value)
        else:
            f64 = ref[f"{p}_f64"]
            assert abs(a.value - f64) <= 5 * abs(b.value - f64) + F64_RTOL[p] * abs(f64), \
                f"{what} {p}: {a.value!r}, module {b.value!r}, float64 {f64!r}"


def test_new_needs_are_supported() -> None:
    assert set(NEW_NEEDS) <= SUPPORTED_NEEDS
    assert fast_route_applies(SPACE, NEW)
    assert fast_route_applies(SPACE, ["nwot", "zico", "grasp", "synflow"])
    assert not fast_route_applies(SPACE, ["nwot", "gradsign_like_missing"])


def test_fast_route_equals_module_route_k1(nb201_batch, module_route) -> None:
    """score_arch(fast=True) (batched, K = 1) against fast=False, detailed."""
    x, y = nb201_batch
    for a, ref in zip(ARCHS, module_route):
        got = score_arch(SPACE, a, x, y, NEW, seed=SEED, detailed=True)
        _check(got, ref, f"K=1 {SPACE.encode(a)}")
        plain = score_arch(SPACE, a, x, y, NEW, seed=SEED)
        assert all(plain[p] == got[p].value or (math.isnan(plain[p]) and math.isnan(got[p].value)) for p in NEW)


def test_score_batch_k3_equals_module_route(nb201_batch, module_route) -> None:
    """score_batch(k=3): chunks of three candidates (3, 3, 1) through one stacked network."""
    x, y = nb201_batch
    got = score_batch(SPACE, ARCHS, x, y, NEW, seed=SEED, k=3, detailed=True)
    for a, g, ref in zip(ARCHS, got, module_route):
        _check(g, ref, f"K=3 {SPACE.encode(a)}")


def test_products_equal_the_module_needs(nb201_batch) -> None:
    """Each need's product on the fast route equals the module backend's: labels, weights (names
    and tensors, dead edges included), parameters, flops_counts (NAS-Bench-201's MACs per call),
    relu_kernels (same kernels in call order), zen_pass (features, BatchNorm names and running
    variances)."""
    x, y = nb201_batch
    name = "test_batched_sz_capture"
    seen: list[dict] = []

    # with "outputs" the main pass runs: a candidate without dead edges takes NWOT's kernels from
    # its forward (ARCHS[0]), the others from the all-edge forward
    @zcfast.register_proxy(name, needs=NEW_NEEDS + ("outputs",))
    def capture(ctx):
        d = ctx.data
        seen.append({
            "module": ctx.copier is not None,
            "labels": d["labels"].clone(),
            "weights": [(n, w.clone()) for n, w in d["weights"]],
            "parameters": {n: p.clone() for n, p in d["parameters"].items()},
            "flops_counts": list(d["flops_counts"]),
            "relu_kernels": [k.clone() for _, k in d["relu_kernels"]],
            "zen_features": [f.clone() for f in d["zen_pass"]["features"]],
            "zen_vars": [(n, v.clone()) for n, v in d["zen_pass"]["running_vars"]],
            "multi_grads": len(d["multi_grads"]),
        })
        return 0.0

    try:
        assert fast_route_applies(SPACE, [name])
        for a in (ARCHS[0], ARCHS[2], ARCHS[3], ARCHS[5]):
            seen.clear()
            score_arch(SPACE, a, x, y, [name], seed=SEED)
            score_arch(SPACE, a, x, y, [name], seed=SEED, fast=False)
            fast, mod = seen
            assert not fast["module"] and mod["module"]          # the first took the batched route
            assert torch.equal(fast["labels"], mod["labels"])
            assert [n for n, _ in fast["weights"]] == [n for n, _ in mod["weights"]]
            assert all(torch.equal(u, v) for (_, u), (_, v) in zip(fast["weights"], mod["weights"]))
            assert list(fast["parameters"]) == list(mod["parameters"])
            assert all(torch.equal(fast["parameters"][n], mod["parameters"][n]) for n in mod["parameters"])
            assert fast["flops_counts"] == mod["flops_counts"]
            assert len(fast["relu_kernels"]) == len(mod["relu_kernels"])
            for u, v in zip(fast["relu_kernels"], mod["relu_kernels"]):
                assert (u - v).abs().max() <= 2, "a kernel differs by more than a rounding flip"
            assert [n for n, _ in fast["zen_vars"]] == [n for n, _ in mod["zen_vars"]]
            for (_, u), (_, v) in zip(fast["zen_vars"], mod["zen_vars"]):
                torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
            for u, v in zip(fast["zen_features"], mod["zen_features"]):
                torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)
            assert fast["multi_grads"] == mod["multi_grads"] == 2
    finally:
        zcfast.unregister_proxy(name)


def test_user_proxy_of_new_needs_takes_the_fast_route(nb201_batch) -> None:
    """A user proxy built only from the new needs routes to the NB201 backend (by its needs, no
    name table) and equals the module route."""
    from zcfast import scoring
    from zcfast.proxies.registry import resolve
    x, y = nb201_batch
    name = "test_batched_sz_user"

    @zcfast.register_proxy(name, needs=("relu_kernels", "weights", "flops_counts", "labels"))
    def user(ctx):
        k = sum(kern for _, kern in ctx.data["relu_kernels"])
        w2 = sum(float((w.double() ** 2).sum()) for _, w in ctx.data["weights"])
        macs = sum(m for _, m in ctx.data["flops_counts"])
        return float(k.trace()) / 1e6 + w2 + macs / 1e9 + float(ctx.data["labels"].sum())

    try:
        assert fast_route_applies(SPACE, [name])
        assert scoring.route(SPACE, resolve([name])) is scoring.NB201_BACKEND
        for a in ARCHS[:3]:
            fast = score_arch(SPACE, a, x, y, [name], seed=SEED)[name]
            slow = score_arch(SPACE, a, x, y, [name], seed=SEED, fast=False)[name]
            assert fast == pytest.approx(slow, rel=1e-6)
            (viab,) = score_batch(SPACE, [a], x, y, [name], seed=SEED)
            assert viab[name] == fast
    finally:
        zcfast.unregister_proxy(name)


def test_contexts_list_every_module_layer_dead_edges_included(nb201_batch) -> None:
    """Each candidate's context lists the module network's counted layers (names, weights, and the
    gradient lists aligned with them, a dead edge's gradient 0), so a proxy of the weights alone
    (needs=()) or of every layer's gradient equals the module route, dead edges included."""
    x, y = nb201_batch
    seen: list = []

    @zcfast.register_proxy("test_batched_sz_layers", needs=("grads", "synflow", "fisher"))
    def layers(ctx):
        assert len(ctx.grads) == len(ctx.weights) == len(ctx.layer_names) == len(ctx.synflow_grads) \
            == len(ctx.fisher_pairs)
        seen.append(list(ctx.layer_names))
        return float(sum(float((w.double() ** 2).sum()) for w in ctx.weights)) + float(len(ctx.weights))

    @zcfast.register_proxy("test_batched_sz_weights_only", needs=())
    def weights_only(ctx):
        return float(zcfast.ops.saliency(ctx.weights, None, "param_sq")[1]) + float(len(ctx.weights))

    names = ["test_batched_sz_layers", "test_batched_sz_weights_only", "grad_norm", "fisher", "synflow"]
    try:
        assert fast_route_applies(SPACE, names)
        three = score_batch(SPACE, ARCHS[2:5], x, y, names, seed=SEED, k=3)
        for a, g3 in zip(ARCHS[2:5], three):
            seen.clear()
            fast = score_arch(SPACE, a, x, y, names, seed=SEED)
            slow = score_arch(SPACE, a, x, y, names, seed=SEED, fast=False)
            assert seen[0] == seen[1]
            for p in names:
                assert fast[p] == pytest.approx(slow[p], rel=1e-4) and g3[p] == pytest.approx(slow[p], rel=1e-4), p
    finally:
        zcfast.unregister_proxy("test_batched_sz_layers")
        zcfast.unregister_proxy("test_batched_sz_weights_only")


def test_per_sample_grads_equal_the_module_route(nb201_batch) -> None:
    """per_sample_grads (GradSign's one-sample forwards) on the fast route: a GradSign-style user
    proxy, Σ over weights of |Σ_i sign(∂ℓᵢ/∂θ)|, equals the module route (dead edges' zero
    gradients add 0), for K = 1 and K = 2."""
    x, y = nb201_batch
    name = "test_batched_sz_gradsign"

    @zcfast.register_proxy(name, needs=("per_sample_grads",))
    def gradsign(ctx):
        return float(sum(g.sign().sum(0).abs().sum() for g in ctx.data["per_sample_grads"]))

    try:
        assert fast_route_applies(SPACE, [name])
        archs = [ARCHS[1], ARCHS[2]]
        two = score_batch(SPACE, archs, x[:4], y[:4], [name], seed=SEED, k=2)
        for a, g in zip(archs, two):
            fast = score_arch(SPACE, a, x[:4], y[:4], [name], seed=SEED)[name]
            slow = score_arch(SPACE, a, x[:4], y[:4], [name], seed=SEED, fast=False)[name]
            assert fast == pytest.approx(slow, rel=1e-3) and g[name] == pytest.approx(slow, rel=1e-3)
    finally:
        zcfast.unregister_proxy(name)


def test_undefined_values_have_the_module_reasons(nb201_batch) -> None:
    """One sample (zico cannot split it; epe_nas's classes have one sample each) and inputs
    scaled by 1e30: every proxy's value kind and error text equal the module route's."""
    x, y = nb201_batch
    for xs, ys in ((x[:1], y[:1]), (x * 1e30, y), (x[:3], y[:3])):
        for a in (ARCHS[0], ARCHS[3]):
            fast = score_arch(SPACE, a, xs, ys, NEW, seed=SEED, detailed=True)
            slow = score_arch(SPACE, a, xs, ys, NEW, seed=SEED, detailed=True, fast=False)
            for p in NEW:
                assert fast[p].error == slow[p].error, (xs.shape, a, p, fast[p], slow[p])
                assert math.isfinite(fast[p].value) == math.isfinite(slow[p].value), (p, fast[p], slow[p])
    one = score_arch(SPACE, ARCHS[0], x[:1], y[:1], ["zico"], seed=SEED, detailed=True)["zico"]
    assert math.isnan(one.value) and "cannot be split into 2" in one.error


def test_several_batches_reach_multi_grads(nb201_batch) -> None:
    """score_batch(batches=[...]) gives zico every mini-batch (not the halves of the first), as
    the module route does; single-batch proxies read the first."""
    x, y = nb201_batch
    g = torch.Generator().manual_seed(11)
    extra = (torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g))
    bs = [(x, y), extra, (x.flip(0), y.flip(0))]
    for a in ARCHS[:2]:
        (got,) = score_batch(SPACE, [a], None, None, ["zico", "nwot"], seed=SEED, batches=bs, detailed=True)
        slow = score_arch(SPACE, a, None, None, ["zico", "nwot"], seed=SEED, batches=bs, detailed=True, fast=False)
        one = score_arch(SPACE, a, x, y, ["zico", "nwot"], seed=SEED, detailed=True, fast=False)
        assert got["zico"].value == pytest.approx(slow["zico"].value, rel=1e-2)
        assert abs(got["zico"].value - one["zico"].value) > 1e-2 * abs(one["zico"].value)
        assert got["nwot"].value == pytest.approx(one["nwot"].value, rel=1e-6)
    with pytest.raises(ValueError, match=r"batches\[1\]"):
        score_batch(SPACE, ARCHS[:1], None, None, ["zico"], batches=[(x, y), (x[:, :2], y)])


def test_a_proxy_writing_the_products_changes_no_other_value(nb201_batch) -> None:
    """A user proxy writes every tensor of the new needs' products (and its batches) in place:
    the caller's inputs are untouched and every built-in of every candidate of the chunk keeps
    its value (each candidate has its own copies; built-ins run before user proxies)."""
    x, y = nb201_batch
    x0, y0 = x.clone(), y.clone()
    needs = ("weights", "labels", "relu_kernels", "zen_pass", "parameters", "multi_grads")
    name = "test_batched_sz_writer"

    def tensors(v):
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, dict):
            for u in v.values():
                yield from tensors(u)
        elif isinstance(v, (list, tuple)):
            for u in v:
                yield from tensors(u)

    @zcfast.register_proxy(name, needs=needs)
    def writer(ctx):
        for t in list(tensors([ctx.data[n] for n in needs])) + list(tensors(ctx.batches)):
            t.add_(1) if not t.is_floating_point() else t.mul_(-3.0)
        return 0.0

    try:
        archs = ARCHS[:3]
        clean = score_batch(SPACE, archs, x, y, NEW, seed=SEED, k=3)
        got = score_batch(SPACE, archs, x, y, [name] + NEW, seed=SEED, k=3)
        for c, g in zip(clean, got):
            assert all(c[p] == g[p] or (math.isnan(c[p]) and math.isnan(g[p])) for p in NEW), (c, g)
        assert torch.equal(x, x0) and torch.equal(y, y0)
    finally:
        zcfast.unregister_proxy(name)


def test_no_tensor_outlives_a_call(nb201_batch) -> None:
    """Nothing the new needs produce (kernels, gradients, Zen networks, taps) survives a call."""
    x, y = nb201_batch
    score_batch(SPACE, ARCHS[:3], x, y, NEW, seed=SEED, k=3)           # warm caches
    gc.collect()
    before = live_tensor_count()
    for _ in range(2):
        score_batch(SPACE, ARCHS[:3], x, y, NEW, seed=SEED, k=3)
        score_arch(SPACE, ARCHS[3], x, y, NEW, seed=SEED)
    gc.collect()
    assert live_tensor_count() == before
    assert batched.supports_needs(NEW_NEEDS)


@pytest.mark.cuda
@pytest.mark.skipif(not zcfast.ops.has_cuda() or not torch.cuda.is_available(),
                    reason="needs a GPU and the CUDA build of zcfast")
def test_cuda_equals_the_module_route_on_cuda(nb201_batch) -> None:
    """On a GPU (both routes on CUDA: Zen-NAS's generator is a CUDA one in both), grouped and
    split convolutions, K = 3."""
    x, y = (t.cuda() for t in nb201_batch)
    for mode in ("grouped", "split"):
        got = score_batch(SPACE, ARCHS, x, y, NEW, seed=SEED, device="cuda", k=3, conv_mode=mode, detailed=True)
        for a, g in zip(ARCHS, got):
            ref = score_arch(SPACE, a, x, y, NEW, seed=SEED, device="cuda", detailed=True, fast=False)
            for p in NEW:
                assert g[p].error == ref[p].error, (mode, a, p, g[p], ref[p])
                if not math.isfinite(ref[p].value):
                    continue
                rel = 0.0 if p in ("params", "flops") else RTOL.get(p, 1e-2)
                assert g[p].value == pytest.approx(ref[p].value, rel=rel, abs=1e-12), (mode, a, p)


@pytest.mark.slow
def test_memory_flat_over_1000_calls() -> None:
    """1,000 calls of score_batch (K = 2, every new proxy, a tiny 4×4 batch): no more live tensors
    and gc-tracked objects than after the first few (minutes: marked slow)."""
    x, y = torch.randn(4, 3, 4, 4), torch.arange(4)
    archs = [ARCHS[0], ARCHS[3]]
    for _ in range(3):
        score_batch(SPACE, archs, x, y, NEW, seed=SEED, k=2)
    gc.collect()
    tensors, objects = live_tensor_count(), len(gc.get_objects())
    for _ in range(1000):
        score_batch(SPACE, archs, x, y, NEW, seed=SEED, k=2)
    gc.collect()
    assert live_tensor_count() <= tensors
    assert len(gc.get_objects()) <= objects + 50


def test_score_arch_with_several_batches_takes_the_stacked_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """score_arch(batches=[...]) with a multi-batch proxy runs on the stacked backend (zico reads
    every mini-batch there), single-batch proxies of the call on the first batch; the values equal
    the module route's (zico to its float32 conditioning, the others as above)."""
    g = torch.Generator().manual_seed(3)
    pb = [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]
    calls: list[int] = []
    real = batched.score_batch

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(len(kwargs.get("batches") or ()))
        return real(*args, **kwargs)

    monkeypatch.setattr(batched, "score_batch", spy)
    arch = ARCHS[1]
    fast = score_arch(SPACE, arch, None, None, ["zico", "grad_norm", "nwot"], batches=pb)
    assert calls == [3]                                   # one stacked call, all three mini-batches
    slow = score_arch(SPACE, arch, None, None, ["zico", "grad_norm", "nwot"], batches=pb, fast=False)
    assert fast["zico"] == pytest.approx(slow["zico"], rel=1e-3)
    assert fast["grad_norm"] == pytest.approx(slow["grad_norm"], rel=1e-3)   # batch 8 of noise: float32
    assert fast["nwot"] == pytest.approx(slow["nwot"], rel=1e-6)
    with pytest.raises(ValueError, match="NaN or inf"):
        score_arch(SPACE, arch, None, None, ["zico"], batches=[pb[0], (pb[1][0] * float("nan"), pb[1][1])])


@pytest.fixture(scope="module")
def per_sample_f64(nb201_batch) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
    """Per architecture of ARCHS: (stem weight float32, every Conv2d/Linear weight's per-sample
    gradients [N, *W.shape] float64) from the official loop on the module network in float64
    (train mode, one forward + backward of ``cross_entropy`` per sample, zeros where unused)."""
    import torch.nn.functional as F
    x, y = nb201_batch
    out = []
    for a in ARCHS:
        net = build_seeded(SPACE, a, SEED)
        stem = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d)).weight.detach().clone()
        net = net.double().train()
        layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        rows: list[list[torch.Tensor]] = [[] for _ in layers]
        for i in range(x.shape[0]):
            net.zero_grad()
            o = net(x[i:i + 1].double())
            F.cross_entropy(o[1] if isinstance(o, tuple) else o, y[i:i + 1]).backward()
            for r, m in zip(rows, layers):
                r.append(m.weight.grad.clone() if m.weight.grad is not None else torch.zeros_like(m.weight))
        out.append((stem, [torch.stack(r) for r in rows]))
    return out


def _worst_rel(grads: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    """max over tensors of max |g − ref| / max |ref| (tensors whose reference is 0: |g| itself)."""
    worst = 0.0
    for g, r in zip(grads, ref):
        assert g.shape == r.shape
        scale = float(r.abs().max())
        err = float((g.double() - r).abs().max())
        worst = max(worst, err / scale if scale > 0 else err)
    return worst


@pytest.mark.parametrize("k", [1, 3])
def test_stacked_per_sample_grads_as_close_as_the_one_sample_loop(nb201_batch, per_sample_f64, monkeypatch,
                                                                  k) -> None:
    """The stacked route of per_sample_grads (one forward of the batch with BatchNorm per sample,
    one backward, per-sample weight gradients from each layer's input and output gradient)
    against the official one-sample loop on the same batched network
    (``ZCFAST_BATCHED_PER_SAMPLE=loop``), on the seven architectures (dead edges, zero cells),
    K = 1 and K = 3, both held to the float64 module loop (an independent reference).

    At 8 samples of 16×16 the float32 per-sample gradients are ill-conditioned on some
    architectures (BatchNorm over one image's 4×4 positions in the last stage): *both* float32
    routes move up to ~1e-1 (relative to a tensor's largest entry) from float64 there, in
    different places. So each architecture's worst error on the stacked route is held to at
    most 2× the loop's plus 1e-4 (measured: arch 2 both 9.4e-2, arch 6 stacked 1.8e-4 vs loop
    6.6e-2, elsewhere both ≤ 4e-5), and gradsign's value to the loop's within rel 5e-4
    (measured worst 1.0e-4: near-zero entries whose sign flips)."""
    x, y = nb201_batch
    name = "test_batched_sz_capture_psg"
    seen: list[tuple[torch.Tensor, list[torch.Tensor]]] = []

    @zcfast.register_proxy(name, needs=("per_sample_grads",))
    def capture(ctx):
        seen.append((ctx.weights[0].detach().clone(), [g.clone() for g in ctx.data["per_sample_grads"]]))
        return 0.0

    try:
        runs = {}
        for route in ("loop", "stacked"):
            monkeypatch.setenv("ZCFAST_BATCHED_PER_SAMPLE", route)
            seen.clear()
            res = score_batch(SPACE, ARCHS, x, y, ["gradsign", name], seed=SEED, k=k, detailed=True)
            by_arch = []
            for stem, g64 in per_sample_f64:     # candidates identified by their stem and layer count
                hits = [g for w, g in seen if torch.equal(w, stem) and len(g) == len(g64)]
                assert len(hits) == 1
                by_arch.append(hits[0])
            runs[route] = (res, by_arch)
        (ref, ref_g), (got, got_g) = runs["loop"], runs["stacked"]
        for i, (gl, gs, (_, g64)) in enumerate(zip(ref_g, got_g, per_sample_f64)):
            assert all(g.shape[0] == x.shape[0] for g in gs)
            e_loop, e_stacked = _worst_rel(gl, g64), _worst_rel(gs, g64)
            assert e_stacked <= 2 * e_loop + 1e-4, (i, e_stacked, e_loop)
        for arch, r, s in zip(ARCHS, ref, got):
            assert s["gradsign"].error is None and r["gradsign"].error is None
            assert s["gradsign"].value == pytest.approx(r["gradsign"].value, rel=5e-4, abs=0.0), arch
        # the zero-output cells give 0 on both routes, exactly
        assert [r["gradsign"].value for r in got][3:5] == [0.0, 0.0]
    finally:
        zcfast.unregister_proxy(name)


def test_stacked_per_sample_grads_reasons_equal_the_loop(nb201_batch, monkeypatch) -> None:
    """Inputs scaled by 1e30 and 3e18 (float32 squares overflow): gradsign's value kind and reason
    on the stacked route equal the one-sample loop's and the module route's, values included."""
    x, y = nb201_batch
    for xs in (x * 1e30, x * 3e18):
        for a in (ARCHS[0], ARCHS[3]):
            vals = []
            for route in ("loop", "stacked"):
                monkeypatch.setenv("ZCFAST_BATCHED_PER_SAMPLE", route)
                vals.append(score_arch(SPACE, a, xs, y, ["gradsign"], seed=SEED, detailed=True)["gradsign"])
            vals.append(score_arch(SPACE, a, xs, y, ["gradsign"], seed=SEED, detailed=True, fast=False)["gradsign"])
            errs = {v.error for v in vals}
            assert len(errs) == 1, [v.error for v in vals]
            # (here the gradients are NaN wherever they are not 0: each route counts 0, as nansum)
            assert all(v.value == vals[-1].value or (math.isnan(v.value) and math.isnan(vals[-1].value))
                       for v in vals), [v.value for v in vals]
