"""Batched multi-architecture scoring (zcfast.batched): every candidate's scores equal
scoring it alone with score_arch (same per-architecture seed, so the same weights; same batch).

Kept small for CI: 16×16 inputs (the ImageNet16-120 size), batch 8, a handful of
architectures chosen to cover every op, dead edges and a cell whose output is identically zero.
"""
from __future__ import annotations

import gc
import math
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import zcfast
from zcfast.batched import SUPPORTED_NEEDS, choose_k, fast_init_matches, score_batch, supports, supports_needs
from zcfast.batched.nb201 import BatchedNB201, extract, fast_weights, weights_equal
from zcfast.scoring import build_seeded, score_arch

ROOT = Path(__file__).resolve().parents[1]
SPACE = zcfast.spaces.get("nb201")
ARCHS = [
    ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none", "nor_conv_3x3"),
    ("skip_connect", "avg_pool_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3"),
    ("nor_conv_1x1", "nor_conv_3x3", "none", "nor_conv_3x3", "nor_conv_3x3", "none"),   # dead node 2
    ("skip_connect", "none", "none", "none", "none", "nor_conv_3x3"),   # cell output identically 0
    ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "nor_conv_1x1", "nor_conv_1x1", "avg_pool_3x3"),
]
ALL = ["grad_norm", "snip", "fisher", "jacob_cov", "synflow", "grasp", "plain"]
# float32 proxies: rtol 1e-4 plus twice the float32 reference's own error (see `reference`);
# synflow 1e-5 (a float32 pass with a float64 fallback: zcfast.batched.SYNFLOW_FP32_RTOL).
# plain is a signed sum that can cancel, so its error is measured against the matching sum of
# magnitudes (snip).
RTOL = {"grad_norm": 1e-4, "snip": 1e-4, "fisher": 1e-4, "jacob_cov": 1e-4, "synflow": 1e-5,
        "grasp": 1e-4, "plain": 1e-4}


# One intra-op thread (conftest.one_torch_thread): on a shared, oversubscribed CPU, OpenMP's
# two-thread barriers made float64 convolutions ~100x slower (measured: 0.46 ms → 174 ms).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference(nb201_batch) -> list[dict[str, float]]:
    """score_arch (float32) per architecture, plus the same network scored in float64
    (``_f64`` keys): the float32 reference's own rounding error, which some architectures'
    ill-conditioned BatchNorms (4×4 maps at batch 8) amplify to ~1e-3, is then known."""
    x, y = nb201_batch
    out = []
    for a in ARCHS:
        r = score_arch(SPACE, a, x, y, ALL, seed=3, fast=False)  # the general engine
        r64 = zcfast.score(build_seeded(SPACE, a, 3).double(), x.double(), y, [p for p in ALL if p != "synflow"])
        r.update({f"{p}_f64": v for p, v in r64.items()})
        out.append(r)
    return out


def _assert_close(got: dict, ref: dict, name: str, what: str, extra_rtol: float = 0.0) -> None:
    """|batched − score_arch| ≤ rtol·|score_arch| + 2·|score_arch − float64 score|."""
    a, b = got[name], ref[name]
    if math.isnan(b):
        assert math.isnan(a), f"{what} {name}: {a} but score_arch gives NaN"
        return
    scale = abs(b)
    if name == "plain":
        scale = max(scale, abs(ref["snip"]))
    ref_err = abs(b - ref[f"{name}_f64"]) if f"{name}_f64" in ref else 0.0
    assert abs(a - b) <= (RTOL[name] + extra_rtol) * scale + 2 * ref_err + 1e-12, \
        f"{what} {name}: {a!r} vs score_arch {b!r} (float64: {ref.get(f'{name}_f64')!r})"


def test_supports_and_choose_k() -> None:
    assert supports(SPACE)
    assert not supports(zcfast.spaces.get("nb101"))
    assert choose_k(3, 64, "cpu") == 1          # measured fastest on CPU (see choose_k)
    assert choose_k(0, 64, "cpu") == 1


@pytest.mark.parametrize("num_classes", [10, 120])
def test_fast_init_is_bit_identical_to_build(num_classes: int) -> None:
    rng = random.Random(5)
    archs = ARCHS + [SPACE.sample(rng) for _ in range(5)]
    for a in archs:
        torch.manual_seed(11)
        built = extract(SPACE.build(a, num_classes))
        torch.manual_seed(11)
        assert weights_equal(built, fast_weights(a, num_classes)), a
        assert weights_equal(built, fast_weights(a, num_classes, generator=torch.Generator().manual_seed(11))), a
    assert fast_init_matches(SPACE, num_classes)
    # and the check is not vacuous: another seed differs
    torch.manual_seed(12)
    assert not weights_equal(extract(SPACE.build(ARCHS[0])), fast_weights(ARCHS[0]))


@pytest.mark.parametrize("mode", ["grouped", "split"])
def test_forward_equals_each_network(mode: str) -> None:
    nets = [build_seeded(SPACE, a, 3) for a in ARCHS[:3]]
    x = torch.randn(4, 3, 16, 16)
    bn = BatchedNB201([extract(n) for n in nets], conv_mode=mode)
    out = bn.forward(x.repeat(1, len(nets), 1, 1))
    assert out.shape == (len(nets), 4, 10)
    for k, net in enumerate(nets):
        torch.testing.assert_close(out[k], net.train()(x), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("mode", ["split", "grouped"])
def test_every_proxy_equals_score_arch(nb201_batch, reference, mode: str) -> None:
    x, y = nb201_batch
    names = ALL if mode == "split" else [p for p in ALL if p != "grasp"]   # grasp once (slow)
    got = score_batch(SPACE, ARCHS, x, y, names, seed=3, k=len(ARCHS), conv_mode=mode)
    assert len(got) == len(ARCHS)
    # grouped convolutions of several candidates on CPU (oneDNN) are less accurate than plain
    # ones: fisher of the all-convolution cell moved 4.1e-4 relative against split mode (and
    # float64) on the 2-core AMD EPYC box; grouped is the CUDA layout (the CPU default is split)
    extra = 1e-3 if mode == "grouped" else 0.0
    for a, g, r in zip(ARCHS, got, reference):
        assert list(g) == names
        for name in names:
            _assert_close(g, r, name, f"{mode} {a}", extra)
    # the zero-output cell: everything 0 but the classifier's fisher, jacob_cov undefined
    dead = got[3]
    assert dead["grad_norm"] == 0.0 and dead["synflow"] == 0.0 and math.isnan(dead["jacob_cov"])
    assert dead["fisher"] > 0


def test_chunks_and_order_do_not_change_scores(nb201_batch, reference) -> None:
    x, y = nb201_batch
    order = [4, 1, 3, 0, 2]
    got = score_batch(SPACE, [ARCHS[i] for i in order], x, y, ["snip", "synflow", "jacob_cov"], seed=3, k=2)
    for i, g in zip(order, got):
        for name in ("snip", "synflow", "jacob_cov"):
            _assert_close(g, reference[i], name, f"k=2 arch {i}")


def test_seed_changes_weights(nb201_batch, reference) -> None:
    x, y = nb201_batch
    got = score_batch(SPACE, ARCHS[:1], x, y, ["snip"], seed=4)
    assert abs(got[0]["snip"] - reference[0]["snip"]) > 1e-3 * abs(reference[0]["snip"])


def test_proxies_outside_the_batched_set_fall_back(nb201_batch) -> None:
    """Routing by needs: a user proxy whose needs the batched backend supports runs its own
    function on each candidate's context (the fast route); one with a need it does not support
    (here ``relu_outputs``) is scored by the module backend per candidate, in the order asked."""
    fast, slow = "test_batched_grad_sq", "test_batched_relu_count"

    @zcfast.register_proxy(fast, needs=("grads",))
    def grad_sq(ctx):
        return sum(float((g.double() ** 2).sum()) for g in ctx.grads if g is not None)

    @zcfast.register_proxy(slow, needs=("relu_outputs",))
    def relu_count(ctx):
        return float(sum(t.numel() for _, t in ctx.data["relu_outputs"]))

    try:
        assert supports_needs(("grads",)) and not supports_needs(("relu_outputs",))
        assert "grads" in SUPPORTED_NEEDS
        x, y = nb201_batch
        names = ["snip", fast, slow]
        got = score_batch(SPACE, ARCHS[:2], x, y, names, seed=3)
        detailed = score_batch(SPACE, ARCHS[:2], x, y, names, seed=3, detailed=True)
        for a, g, d in zip(ARCHS[:2], got, detailed):
            r = score_arch(SPACE, a, x, y, names, seed=3, fast=False)
            assert list(g) == names and list(d) == names
            assert g[fast] == pytest.approx(r[fast], rel=1e-4) and g[fast] > 0
            assert g[slow] == r[slow] > 0
            assert g["snip"] == pytest.approx(r["snip"], rel=1e-4)
            assert d[fast].ok and d[fast].value == g[fast]
    finally:
        zcfast.unregister_proxy(fast)
        zcfast.unregister_proxy(slow)


def test_detailed_gives_the_engines_reasons(nb201_batch) -> None:
    """score_batch(detailed=True) / score_arch(detailed=True) on the fast route: ProxyResult with
    the general engine's reason for every undefined value (one sample; inputs overflowing)."""
    x, y = nb201_batch
    six = ["grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov"]
    for xs, ys in ((x[:1], y[:1]), (x * 1e30, y)):
        fast = score_arch(SPACE, ARCHS[0], xs, ys, six, seed=3, detailed=True)
        slow = score_arch(SPACE, ARCHS[0], xs, ys, six, seed=3, detailed=True, fast=False)
        for p in six:
            assert (fast[p].error is None) == (slow[p].error is None), (p, fast[p], slow[p])
            assert fast[p].error == slow[p].error, p
            if fast[p].error is not None:
                assert math.isnan(fast[p].value) and math.isnan(slow[p].value)
    one = score_batch(SPACE, ARCHS[:2], x[:1], y[:1], ["jacob_cov"], seed=3, detailed=True)
    assert all("at least 2 samples" in d["jacob_cov"].error for d in one)
    over = score_batch(SPACE, ARCHS[:2], x * 1e30, y, ["grad_norm", "snip"], seed=3, detailed=True)
    assert all("overflowed" in d["snip"].error and math.isnan(d["grad_norm"].value) for d in over)


def test_space_without_batched_path_loops_score_arch() -> None:
    from zcfast.search.toy import ToySpace
    space = ToySpace(3, 3)
    archs = [(0, 1, 2), (2, 2, 1)]
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
    try:
        ref = [score_arch(space, a, x, y, ["snip", "synflow"], seed=1) for a in archs]
    except Exception as exc:  # the toy space may have no network
        pytest.skip(f"toy space cannot be scored: {exc}")
    got = score_batch(space, archs, x, y, ["snip", "synflow"], seed=1)
    assert got == ref


def test_out_of_memory_halves_the_chunk(nb201_batch, reference, monkeypatch) -> None:
    """On (simulated) out-of-memory a chunk is split in halves until it fits; scores unchanged."""
    import zcfast.batched as zb
    real = zb._score_chunk
    sizes: list[int] = []

    def fake(space, archs, *a, **kw):
        sizes.append(len(archs))
        if len(archs) > 2:
            raise torch.OutOfMemoryError("simulated")
        return real(space, archs, *a, **kw)

    monkeypatch.setattr(zb, "_score_chunk", fake)
    x, y = nb201_batch
    got = score_batch(SPACE, ARCHS, x, y, ["snip"], seed=3, k=5)
    assert sizes == [5, 2, 3, 1, 2]          # 5 fails -> 2 ok + 3 fails -> 1 ok + 2 ok
    for g, r in zip(got, reference):
        _assert_close(g, r, "snip", "after OOM split")


def test_bad_input_is_rejected(nb201_batch) -> None:
    x, y = nb201_batch
    with pytest.raises(ValueError, match="unknown proxies"):
        score_batch(SPACE, ARCHS[:1], x, y, ["snip", "nope"])
    with pytest.raises(ValueError, match="inputs"):
        score_batch(SPACE, ARCHS[:1], x[0], y, ["snip"])
    with pytest.raises(ValueError, match="targets"):
        score_batch(SPACE, ARCHS[:1], x, y[:3], ["snip"])
    with pytest.raises(ValueError, match="k must be"):
        score_batch(SPACE, ARCHS[:1], x, y, ["snip"], k=0)
    with pytest.raises(ValueError, match="conv_mode"):
        score_batch(SPACE, ARCHS[:1], x, y, ["snip"], conv_mode="fft")
    with pytest.raises(ValueError):
        score_batch(SPACE, [("bogus",) * 6], x, y, ["snip"])
    assert score_batch(SPACE, [], x, y, ["snip"]) == []


def test_no_tensor_outlives_a_call(nb201_batch) -> None:
    """The evaluator keeps nothing between calls (a scan of millions must stay flat)."""
    x, y = nb201_batch
    names = ["grad_norm", "fisher", "jacob_cov", "synflow", "grasp"]
    score_batch(SPACE, ARCHS[:2], x, y, names, k=2)          # warm caches (fast-init check)

    def live_tensors() -> int:
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    before = live_tensors()
    for _ in range(2):
        score_batch(SPACE, ARCHS[:2], x, y, names, k=2)
    assert live_tensors() == before


def test_bench_script_runs_on_cpu(tmp_path) -> None:
    """The Python part of bench/gpu_throughput.sh, at toy size: checks, times, writes JSON."""
    out = tmp_path / "t.json"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_throughput.py"), "--device", "cpu", "--batch", "8",
           "--sets", "synflow", "--k", "1,2", "--n-synflow", "2", "--n-single", "1", "--n-check", "1",
           "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")   # CI boxes are shared; avoid OpenMP oversubscription
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json
    res = json.loads(out.read_text())
    row = res["results"]["synflow"]
    assert row["batched_k1"] > 0 and row["batched_k2"] > 0 and row["plain"] > 0
    assert "| synflow: synflow |" in out.with_suffix(".md").read_text()


def test_gpu_script_runs_on_cpu(tmp_path) -> None:
    """bench/gpu_throughput.sh end to end with the device and sizes overridden (no GPU here)."""
    out = tmp_path / "g.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable, ZCFAST_BENCH_DEVICE="cpu",
               ZCFAST_SKIP_BUILD="1", ZCFAST_BENCH_ARGS=f"--batch 8 --sets grad --k 2 --n-grad 2 "
                                                        f"--n-single 1 --n-check 1 --out {out} "
                                                        # batch 8: the float32 routes differ by up to
                                                        # ~4e-3 (docs/proxies.md, Speed), beyond the
                                                        # default 1e-3 (measured 1.6e-3)
                                                        "--check-rtol 5e-3")
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_throughput.sh")], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "== done in" in proc.stdout
    import json
    assert json.loads(out.read_text())["results"]["grad"]["batched_k2"] > 0


@pytest.mark.cuda
@pytest.mark.skipif(not zcfast.ops.has_cuda() or not torch.cuda.is_available(),
                    reason="needs a GPU and the CUDA build of zcfast")
def test_cuda_matches_cpu(nb201_batch, reference) -> None:
    x, y = nb201_batch
    names = ["grad_norm", "snip", "fisher", "jacob_cov", "synflow"]
    for mode in ("grouped", "split"):
        got = score_batch(SPACE, ARCHS, x.cuda(), y.cuda(), names, seed=3, device="cuda", conv_mode=mode)
        for a, g, r in zip(ARCHS, got, reference):
            for name in names:
                _assert_close(g, r, name, f"cuda {mode} {a}")


def test_score_arch_fast_route_equals_general_engine_and_frees_everything() -> None:
    """score_arch on NB201 (fast=True, the default) runs score_one: same values as the general
    engine (float32 rounding), the same input errors, no tensor left behind."""
    import gc

    from zcfast.batched import fast_route_applies, score_one

    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])
    assert fast_route_applies(SPACE, ALL) and not fast_route_applies(SPACE, ["grad_norm", "nope"])
    six = ["grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow"]
    for a in ARCHS[:3]:
        fast = score_arch(SPACE, a, x, y, six, seed=3)
        assert fast == score_one(SPACE, a, x, y, six, seed=3)
        slow = score_arch(SPACE, a, x, y, six, seed=3, fast=False)
        for p in six:
            tol = 5e-3 * max(abs(slow[p]), 1.0) if p == "grasp" else 1e-3 * abs(slow[p])
            assert abs(fast[p] - slow[p]) <= tol + 1e-12, (a, p, fast[p], slow[p])
    # detailed takes the fast route too (same values, ProxyResult); per_layer takes the engine
    det = score_arch(SPACE, ARCHS[0], x, y, ["snip"], seed=3, detailed=True)["snip"]
    assert det.ok and det.value == score_arch(SPACE, ARCHS[0], x, y, ["snip"], seed=3)["snip"]
    per = score_arch(SPACE, ARCHS[0], x, y, ["snip"], seed=3, per_layer=True)
    assert per["snip"] == score_arch(SPACE, ARCHS[0], x, y, ["snip"], seed=3, fast=False)["snip"]
    # the general engine's input errors
    with pytest.raises(ValueError, match="targets out of range"):
        score_arch(SPACE, ARCHS[0], x, torch.full((8,), 10), ["snip"])
    with pytest.raises(ValueError, match="NaN or inf"):
        score_arch(SPACE, ARCHS[0], torch.full_like(x, float("nan")), y, ["snip"])
    with pytest.raises(ValueError, match="floating-point"):
        score_arch(SPACE, ARCHS[0], x.long(), y, ["snip"])
    # jacob_cov / synflow need no targets
    assert math.isfinite(score_arch(SPACE, ARCHS[0], x, None, ["synflow", "jacob_cov"])["synflow"])
    # no tensor survives (a hook closing over its own tensor would leak a network per call)
    from zcfast.testing import live_tensor_count as live_tensors

    gc.collect()
    before = live_tensors()
    for a in ARCHS:
        score_arch(SPACE, a, x, y, six, seed=3)
    gc.collect()
    assert live_tensors() == before
