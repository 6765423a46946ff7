"""Tests of the NWOT and ZiCo kernels (zcfast.ops.hamming_kernel, moments_update, zico_reduce):
against their plain-PyTorch references (zcfast.reference) and the official codes' formulas
(numpy), around word and chunk boundaries, exactness of the counts, edge cases, errors naming
the argument, opcheck, fake kernels and torch.compile; CUDA (skipped without a GPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import zcfast.ops as ops
import zcfast.reference as ref
from zcfast.testing import (CPU_CHUNK, CUDA_CHUNK, CUDA_MAX_TENSORS_PER_LAUNCH, DTYPES,
                            boundary_sizes, cuda_usable, make_tensor_list)

needs_cuda = pytest.mark.skipif(not cuda_usable(), reason="needs zcfast's CUDA build and a GPU")


def _acts(n: int, feature_shapes, dtype=torch.float32, seed=0, device="cpu"):
    return make_tensor_list([(n, *s) for s in feature_shapes], dtype, device=device, seed=seed)


def _official_nwot_k(acts) -> np.ndarray:
    """The NWOT v2 hook's accumulation (float32 GEMMs on the 0/1 codes, as the official code)."""
    k = np.zeros((acts[0].shape[0],) * 2, dtype=np.float64)
    for a in acts:
        x = (a.reshape(a.shape[0], -1) > 0).float()
        k += (x @ x.t() + (1.0 - x) @ (1.0 - x.t())).double().numpy()
    return k


# ---- hamming_kernel -----------------------------------------------------------------------------

WORD_SIZES = [1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_hamming_matches_reference_around_word_boundaries(dtype):
    for n in (1, 2, 5, 17):
        acts = _acts(n, [(d,) for d in WORD_SIZES] + [(3, 5, 5), (16, 4, 4)], dtype, seed=n)
        k = ops.hamming_kernel(acts)
        assert k.dtype == torch.float64 and k.shape == (n, n)
        assert torch.equal(k, ref.hamming_kernel(acts))
        assert torch.equal(k, k.t())
        # the diagonal is every feature (each sample agrees with itself)
        assert bool((k.diagonal() == sum(a[0].numel() for a in acts)).all())


def test_hamming_matches_the_official_gemm_form_and_mixed_dtypes():
    acts = _acts(8, [(4, 6, 6), (70,), (2, 3)], seed=3)
    acts[1] = acts[1].half()
    acts[2] = acts[2].double()
    assert np.array_equal(ops.hamming_kernel(acts).numpy(), _official_nwot_k(acts))


def test_hamming_accumulates_into_out_float64_and_int64():
    acts = _acts(6, [(40,), (3, 9)], seed=4)
    out = torch.full((6, 6), 7.0, dtype=torch.float64)
    res = ops.hamming_kernel(acts, out)
    assert res is out
    assert torch.equal(out, ref.hamming_kernel(acts) + 7.0)
    out_i = torch.full((6, 6), 7, dtype=torch.int64)
    ops.hamming_kernel(acts[:1], out_i)
    ops.hamming_kernel(acts[1:], out_i)  # layer by layer = all at once
    assert out_i.dtype == torch.int64 and torch.equal(out_i.double(), out)


def test_hamming_is_exact_for_large_counts():
    d = (1 << 20) + 3
    a = torch.ones(3, d)
    a[1] = -1.0  # sample 1 disagrees everywhere with sample 0
    a[2, : d // 2] = 0.0  # zero is not > 0
    layers = [a] * 20  # total 20 * (2^20 + 3) > 2^24: a float32 accumulation would round
    k = ops.hamming_kernel(layers)
    total = 20 * d
    half = d // 2
    expected = torch.tensor([[total, 0, 20 * (d - half)],
                             [0, total, 20 * half],
                             [20 * (d - half), 20 * half, total]], dtype=torch.float64)
    assert torch.equal(k, expected)
    assert torch.equal(ops.hamming_kernel(layers, torch.zeros(3, 3, dtype=torch.int64)),
                       expected.long())


def test_hamming_thresholds_nan_zero_and_signed_zero_as_zero_codes():
    a = torch.tensor([[float("nan"), 0.0, -0.0, 1e-3, -1.0],
                      [-1.0, -1.0, -1.0, -1.0, -1.0]])
    # codes: [0, 0, 0, 1, 0] and [0, 0, 0, 0, 0]: they agree on 4 features
    assert ops.hamming_kernel([a]).tolist() == [[5.0, 4.0], [4.0, 5.0]]
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert ops.hamming_kernel([a.to(dtype)]).tolist() == [[5.0, 4.0], [4.0, 5.0]]


def test_hamming_noncontiguous_empty_and_no_samples():
    base = torch.randn(10, 6, 7)
    acts = [base.transpose(1, 2), base[:, ::2], torch.empty(10, 0), torch.randn(10, 3, 0, 2)]
    assert not acts[0].is_contiguous()
    assert torch.equal(ops.hamming_kernel(acts), ref.hamming_kernel(acts))
    out = torch.zeros(0, 0, dtype=torch.float64)
    assert ops.hamming_kernel([torch.randn(0, 5)], out).shape == (0, 0)
    out = torch.ones(4, 4, dtype=torch.float64)
    assert torch.equal(ops.hamming_kernel([], out), torch.ones(4, 4, dtype=torch.float64))
    v = torch.tensor([1.0, -1.0, 2.0])  # [N] = N samples of one feature
    assert ops.hamming_kernel([v]).tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]


def test_hamming_deterministic_across_thread_counts():
    acts = _acts(32, [(16, 16, 16), (8, 8, 8), (100,)], seed=7)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = ops.hamming_kernel(acts)
        torch.set_num_threads(max(2, old))
        b = ops.hamming_kernel(acts)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a, b)


@pytest.mark.parametrize("case, match", [
    ("samples", r"acts\[1\] has 3 samples \(dim 0\) but out has shape \[4, 4\]"),
    ("out_dtype", r"out must be float64 or int64, got Float"),
    ("out_shape", r"out must have shape \[N, N\], got shape \[4, 3\]"),
    ("int", r"acts\[0\] must be float32, float64, bfloat16 or float16"),
    ("zero_dim", r"acts\[1\] must have shape \[N, \.\.\.\]"),
    ("device", r"acts\[1\] is on meta but out is on cpu"),
    ("not_tensor", r"acts\[1\] must be a Tensor, got list"),
    ("not_list", r"acts must be a sequence of tensors, got Tensor"),
    ("empty", r"acts is empty and out is None"),
    ("out_type", r"out must be a Tensor or None, got int"),
    ("noncontig_out", r"out must be contiguous"),
])
def test_hamming_bad_input_names_the_argument(case, match):
    acts = [torch.randn(4, 5), torch.randn(4, 2, 3)]
    out = torch.zeros(4, 4, dtype=torch.float64)
    if case == "samples":
        acts[1] = torch.randn(3, 2)
    elif case == "out_dtype":
        out = out.float()
    elif case == "out_shape":
        out = torch.zeros(4, 3, dtype=torch.float64)
    elif case == "int":
        acts[0] = torch.ones(4, 5, dtype=torch.int64)
    elif case == "zero_dim":
        acts[1] = torch.tensor(1.0)
    elif case == "device":
        acts[1] = torch.empty(4, 2, device="meta")
    elif case == "not_tensor":
        acts[1] = [1.0]
    elif case == "not_list":
        acts = torch.randn(4, 5)
    elif case == "empty":
        acts, out = [], None
    elif case == "out_type":
        out = 3
    elif case == "noncontig_out":
        out = torch.zeros(4, 8, dtype=torch.float64)[:, ::2]
    with pytest.raises(ValueError, match=match):
        ops.hamming_kernel(acts, out)


def test_hamming_raw_op_checks_too():
    with pytest.raises(ValueError, match=r"acts\[0\] has 2 samples"):
        torch.ops.zcfast.hamming_kernel_([torch.randn(2, 3)], torch.zeros(3, 3, dtype=torch.float64))


# ---- moments_update / zico_reduce ---------------------------------------------------------------

def _run_moments(batches):
    state = None
    for g in batches:
        state = ops.moments_update(g, state)
    return state


def _official_zico(batches) -> float:
    """The official ZiCo score from per-layer gradient lists (numpy, as its getzico)."""
    score = 0.0
    for t in range(len(batches[0])):
        g = np.stack([b[t].double().numpy().reshape(-1) for b in batches])
        std = np.std(g, axis=0)
        nz = np.nonzero(std)[0]
        mean_abs = np.mean(np.abs(g), axis=0)
        tmp = np.sum(mean_abs[nz] / std[nz])
        if tmp != 0:
            score += np.log(tmp)
    return float(score)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nbatches", [1, 2, 3])
def test_moments_match_reference_around_chunk_boundaries(dtype, nbatches):
    sizes = sorted(set(boundary_sizes(CPU_CHUNK) + boundary_sizes(CUDA_CHUNK)))
    shapes = [(n,) for n in sizes] + [(16, 8, 3, 3), (10, 16), (5,)]
    batches = [make_tensor_list(shapes, dtype, seed=10 + b) for b in range(nbatches)]
    state = _run_moments(batches)
    assert state.count == nbatches
    ma, mu, m2 = ref.moments(batches)
    for t in range(len(shapes)):
        assert state.mean_abs[t].dtype == torch.float64 and state.mean_abs[t].shape == shapes[t]
        assert torch.allclose(state.mean_abs[t], ma[t], rtol=1e-14, atol=1e-300)
        assert torch.allclose(state.mean[t], mu[t], rtol=1e-13, atol=1e-15)
        assert torch.allclose(state.m2[t], m2[t], rtol=1e-12, atol=1e-15)
    z = ops.zico_reduce(state)
    z_ref = ref.zico_reduce(batches)
    assert z.dtype == torch.float64 and z.shape == (len(shapes),)
    if nbatches == 1:
        assert bool((z == 0).all())  # one batch: every std is 0, every element dropped
    assert torch.allclose(z, z_ref, rtol=1e-11, atol=0)


def test_zico_two_batch_formula_and_official_score():
    g1 = [torch.tensor([1.0, -2.0, 3.0, 0.0]), torch.tensor([[0.5, 0.5]])]
    g2 = [torch.tensor([3.0, -2.0, -1.0, 0.0]), torch.tensor([[0.5, 0.5]])]
    z = ops.zico_reduce(_run_moments([g1, g2]))
    # (|g1| + |g2|) / |g1 - g2| where g1 != g2; equal gradients (std 0) dropped; layer 1 all dropped
    assert z.tolist() == pytest.approx([(1 + 3) / 2 + (3 + 1) / 4, 0.0], rel=1e-15)
    batches = [make_tensor_list([(8, 3, 3, 3), (8,), (10, 8), (4, 4)], seed=s) for s in range(2)]
    batches[0][3] = batches[1][3].clone()  # a layer with zero std everywhere: skipped
    zs = ops.zico_reduce(_run_moments(batches))
    ours = float(sum(torch.log(v) for v in zs if v != 0))
    assert ours == pytest.approx(_official_zico(batches), rel=1e-12)


def test_zico_nan_std_is_kept_like_numpy():
    g1 = [torch.tensor([1.0, float("nan"), 2.0])]
    g2 = [torch.tensor([2.0, 1.0, 2.0])]
    z = ops.zico_reduce(_run_moments([g1, g2]))
    assert torch.isnan(z[0]) and torch.isnan(ref.zico_reduce([g1, g2])[0])


def test_moments_more_tensors_than_one_launch_empty_scalar_noncontiguous():
    shapes = [((i * 37) % 300 + 1,) for i in range(3 * CUDA_MAX_TENSORS_PER_LAUNCH + 5)]
    batches = [make_tensor_list(shapes, seed=20 + b) for b in range(2)]
    z = ops.zico_reduce(_run_moments(batches))
    assert z.shape == (len(shapes),)
    assert torch.allclose(z, ref.zico_reduce(batches), rtol=1e-11)
    base = [torch.randn(12, 7, dtype=torch.float64) for _ in range(2)]
    odd = [[torch.empty(0), torch.tensor(1.5 + b), base[b].t(), base[b][::2, 1::3], torch.empty(3, 0)]
           for b in range(2)]
    assert not odd[0][2].is_contiguous()
    odd = [[t.double() for t in b] for b in odd]
    state = _run_moments(odd)
    assert state.mean_abs[2].shape == (7, 12)
    z = ops.zico_reduce(state)
    assert z[0] == 0 and z[4] == 0 and z[1] == pytest.approx((1.5 + 2.5) / 2 / 0.5)
    assert torch.allclose(z, ref.zico_reduce(odd), rtol=1e-12)
    empty = _run_moments([[], []])
    assert empty.count == 2 and ops.zico_reduce(empty).shape == (0,)


def test_moments_mixed_dtypes_and_parameters_never_require_grad():
    batches = [[torch.randn(5, 3).half(), torch.randn(7).double(), torch.randn(9).bfloat16()]
               for _ in range(3)]
    state = _run_moments(batches)
    assert torch.allclose(ops.zico_reduce(state), ref.zico_reduce(batches), rtol=1e-11)
    params = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(2)]
    st = ops.moments_update(params)
    ops.moments_update([p * 2 for p in params], st)
    z = ops.zico_reduce(st)
    assert not z.requires_grad and z.grad_fn is None
    assert not any(t.requires_grad for t in st.mean_abs + st.mean + st.m2)


def test_fresh_state_is_overwritten_not_read_and_reusable():
    batches = [make_tensor_list([(70000,), (5, 3)], seed=50 + b) for b in range(2)]
    want = ops.zico_reduce(_run_moments(batches))
    st = ops.GradMoments.empty_like(batches[0])
    for t in st.mean_abs + st.mean + st.m2:
        t.fill_(float("nan"))  # garbage in a fresh state is never read
    for g in batches:
        ops.moments_update(g, st)
    assert torch.equal(ops.zico_reduce(st), want)
    st.reset()  # reuse for the next network: no zeroing, no allocation
    ptrs = [t.data_ptr() for t in st.m2]
    for g in batches:
        ops.moments_update(g, st)
    assert st.count == 2 and torch.equal(ops.zico_reduce(st), want)
    assert [t.data_ptr() for t in st.m2] == ptrs


def test_moments_deterministic_across_thread_counts():
    shapes = [(40000,), (70000,), (16,), (3, 3, 64, 64)] * 3
    batches = [make_tensor_list(shapes, seed=30 + b) for b in range(2)]
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = ops.zico_reduce(_run_moments(batches))
        torch.set_num_threads(max(2, old))
        b = ops.zico_reduce(_run_moments(batches))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a, b)


def _state(shapes, count=0):
    st = ops.GradMoments.empty_like([torch.zeros(s) for s in shapes])
    st.count = count
    return st


@pytest.mark.parametrize("case, match", [
    ("length", r"mean_abs and grads must have the same length, got len\(mean_abs\)=1 and len\(grads\)=2"),
    ("numel", r"m2\[1\] has 4 elements but grads\[1\] has 3"),
    ("state_dtype", r"mean\[0\] must be float64, got Float"),
    ("grad_dtype", r"grads\[1\] must be float32, float64, bfloat16 or float16"),
    ("count", r"count must be >= 0"),
    ("device", r"grads\[1\] is on meta but grads\[0\] is on cpu"),
    ("not_tensor", r"grads\[0\] must be a Tensor, got float"),
    ("state_type", r"state must be a GradMoments or None, got dict"),
    ("noncontig", r"m2\[0\] must be contiguous"),
])
def test_moments_update_bad_input_names_the_argument(case, match):
    grads = [torch.randn(2, 2), torch.randn(3)]
    state = _state([(2, 2), (3,)])
    if case == "length":
        state.mean_abs = state.mean_abs[:1]
    elif case == "numel":
        state.m2[1] = torch.zeros(4, dtype=torch.float64)
    elif case == "state_dtype":
        state.mean[0] = state.mean[0].float()
    elif case == "grad_dtype":
        grads[1] = torch.ones(3, dtype=torch.int32)
    elif case == "count":
        state.count = -1
    elif case == "device":
        grads[1] = torch.empty(3, device="meta")
    elif case == "not_tensor":
        grads[0] = 1.0
    elif case == "state_type":
        state = {}
    elif case == "noncontig":
        state.m2[0] = torch.zeros(2, 4, dtype=torch.float64)[:, ::2]
    with pytest.raises(ValueError, match=match):
        ops.moments_update(grads, state)


def test_zico_reduce_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"count must be >= 1"):
        ops.zico_reduce(_state([(3,)], count=0))
    with pytest.raises(ValueError, match=r"count must be >= 1"):
        ops.zico_reduce(ops.GradMoments(0, [], [], []))
    st = _state([(3,), (2,)], count=2)
    st.m2 = st.m2[:1]
    with pytest.raises(ValueError, match=r"m2 and mean_abs must have the same length"):
        ops.zico_reduce(st)
    with pytest.raises(ValueError, match=r"state must be a GradMoments, got list"):
        ops.zico_reduce([])
    with pytest.raises(ValueError, match=r"mean_abs\[0\] must be float64"):
        torch.ops.zcfast.zico_reduce([torch.zeros(2)], [torch.zeros(2, dtype=torch.float64)], 1)


# ---- dispatcher / compile -----------------------------------------------------------------------

def test_opcheck_modern_ops():
    from torch.library import opcheck

    for dtype in (torch.float32, torch.float16, torch.float64):
        acts = _acts(5, [(3, 4, 4), (70,)], dtype, seed=1)
        opcheck(torch.ops.zcfast.hamming_kernel_.default,
                (acts, torch.zeros(5, 5, dtype=torch.float64)))
        grads = make_tensor_list([(5, 3), (70000,), (), (0,)], dtype, seed=2)
        st = ops.GradMoments.empty_like(grads)
        ops.moments_update(make_tensor_list([(5, 3), (70000,), (), (0,)], dtype, seed=3), st)
        opcheck(torch.ops.zcfast.moments_update_.default,
                (grads, st.mean_abs, st.mean, st.m2, st.count))
        opcheck(torch.ops.zcfast.zico_reduce.default, (st.mean_abs, st.m2, 2))
        opcheck(torch.ops.zcfast.moments_update_.default,  # count 0: overwrite without reading
                (grads, st.mean_abs, st.mean, st.m2, 0))
    opcheck(torch.ops.zcfast.hamming_kernel_.default,
            ([torch.randn(3, 9)], torch.zeros(3, 3, dtype=torch.int64)))


def test_fake_kernels_give_shapes_and_named_errors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        st = ops.GradMoments.empty_like([torch.empty(4, 3), torch.empty(7)])
        ops.moments_update([torch.empty(4, 3), torch.empty(7)], st)
        ops.moments_update([torch.empty(4, 3), torch.empty(7)], st)
        z = ops.zico_reduce(st)
        assert z.shape == (2,) and z.dtype == torch.float64
        k = ops.hamming_kernel([torch.empty(6, 10), torch.empty(6, 2, 2).half()])
        assert k.shape == (6, 6) and k.dtype == torch.float64
        with pytest.raises(ValueError, match=r"acts\[1\] has shape \[5, 2\]"):
            ops.hamming_kernel([torch.empty(6, 10), torch.empty(5, 2)])
        with pytest.raises(ValueError, match=r"mean_abs\[1\] has 7 elements but grads\[1\] has 8"):
            ops.moments_update([torch.empty(4, 3), torch.empty(8)], st)


def test_modern_ops_work_under_torch_compile():
    @torch.compile(backend="aot_eager", fullgraph=True)
    def f(a, b, g1, g2, ma, mu, m2):
        k = torch.zeros(a.shape[0], a.shape[0], dtype=torch.float64)
        torch.ops.zcfast.hamming_kernel_([a, b], k)
        torch.ops.zcfast.moments_update_([g1], [ma], [mu], [m2], 0)
        torch.ops.zcfast.moments_update_([g2], [ma], [mu], [m2], 1)
        return k * 2, torch.ops.zcfast.zico_reduce([ma], [m2], 2) + 1

    a, b = torch.randn(4, 10), torch.randn(4, 3, 3)
    g1, g2 = torch.randn(30), torch.randn(30)
    zeros = [torch.zeros(30, dtype=torch.float64) for _ in range(3)]
    k2, z1 = f(a, b, g1, g2, *zeros)
    assert torch.equal(k2, 2 * ref.hamming_kernel([a, b]))
    assert torch.allclose(z1, ref.zico_reduce([[g1], [g2]]) + 1, rtol=1e-12)
    assert torch.allclose(zeros[2], ref.moments([[g1], [g2]])[2][0], rtol=1e-12)


# ---- CPU ISA copies -------------------------------------------------------------------------------

_ISA_SCRIPT = """
import torch, zcfast.ops as ops
from zcfast.testing import make_tensor_list
out = []
for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
    acts = make_tensor_list([(9, 130), (9, 4, 7, 7), (9, 64)], dtype, seed=1)
    out += ops.hamming_kernel(acts).flatten().tolist()
    b = [make_tensor_list([(40000,), (70001,), (37,)], dtype, seed=s) for s in (2, 3, 4)]
    st = None
    for g in b:
        st = ops.moments_update(g, st)
    out += ops.zico_reduce(st).tolist() + [float(t.sum()) for t in st.m2 + st.mean + st.mean_abs]
print(repr(out))
"""


def test_cpu_isa_copies_are_bit_identical():
    from zcfast.testing import outputs_under_each_cpu_isa

    results = outputs_under_each_cpu_isa(_ISA_SCRIPT)
    assert results[0] == results[1]


# ---- CUDA ---------------------------------------------------------------------------------------

@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_hamming_matches_cpu(dtype):
    for n in (1, 3, 64):
        acts = _acts(n, [(d,) for d in WORD_SIZES] + [(16, 8, 8), (0,)], dtype, seed=n)
        k = ops.hamming_kernel([a.cuda() for a in acts])
        assert k.is_cuda and torch.equal(k.cpu(), ops.hamming_kernel(acts))
        out = torch.full((n, n), 3, dtype=torch.int64, device="cuda")
        ops.hamming_kernel([a.cuda() for a in acts], out)
        assert torch.equal(out.cpu(), ops.hamming_kernel(acts).long() + 3)
    d = (1 << 20) + 3
    big = torch.ones(2, d, device="cuda")
    big[1, 5:] = -1
    assert ops.hamming_kernel([big] * 20).tolist() == [[20 * d, 100], [100, 20 * d]]


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_moments_match_cpu(dtype):
    sizes = sorted(set(boundary_sizes(CUDA_CHUNK) + boundary_sizes(CPU_CHUNK)))
    shapes = ([(n,) for n in sizes] + [(0,), (), (16, 8, 3, 3)]) * 30  # several launches
    batches = [make_tensor_list(shapes, dtype, seed=40 + b) for b in range(3)]
    cpu = _run_moments(batches)
    gpu = _run_moments([[g.cuda() for g in b] for b in batches])
    for name in ("mean_abs", "mean", "m2"):
        for x, y in zip(getattr(gpu, name), getattr(cpu, name)):
            assert torch.equal(x.cpu(), y)  # the same Welford step, --fmad=false
    z = ops.zico_reduce(gpu)
    assert z.is_cuda and torch.allclose(z.cpu(), ops.zico_reduce(cpu), rtol=1e-12)
    assert torch.equal(ops.zico_reduce(gpu), z)  # deterministic


@needs_cuda
@pytest.mark.cuda
def test_cuda_opcheck_modern():
    from torch.library import opcheck

    acts = _acts(5, [(3, 4, 4), (70,)], device="cuda")
    opcheck(torch.ops.zcfast.hamming_kernel_.default,
            (acts, torch.zeros(5, 5, dtype=torch.float64, device="cuda")))
    grads = make_tensor_list([(5, 3), (70000,), (), (0,)], device="cuda")
    st = ops.GradMoments.empty_like(grads)
    ops.moments_update(grads, st)
    opcheck(torch.ops.zcfast.moments_update_.default, (grads, st.mean_abs, st.mean, st.m2, 1))
    opcheck(torch.ops.zcfast.zico_reduce.default, (st.mean_abs, st.m2, 2))
