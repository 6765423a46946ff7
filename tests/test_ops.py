"""Tests of zcfast.ops: every op against its plain-PyTorch reference (zcfast.reference) and,
for jacob_cov, against the official numpy formula; edge cases; errors naming the argument;
torch.library.opcheck; torch.compile; CUDA (skipped without a GPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import zcfast.ops as ops
import zcfast.reference as ref
from zcfast.testing import (CPU_CHUNK, CUDA_CHUNK, CUDA_MAX_BLOCKS_PER_LAUNCH,
                            CUDA_MAX_TENSORS_PER_LAUNCH, DEVICES, DTYPES, boundary_sizes,
                            cuda_usable, make_tensor_list, saliency_tolerance, tiny_convnet)

KINDS = ops.SALIENCY_KINDS
needs_cuda = pytest.mark.skipif(not cuda_usable(), reason="needs zcfast's CUDA build and a GPU")


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_saliency(params, grads, kind):
    per, total = ops.saliency(params, grads, kind)
    per_ref, _ = ref.saliency(params, grads, kind)
    acc = _acc(params[0].dtype)
    assert per.dtype == acc and total.dtype == acc
    assert per.shape == (len(params),) and total.shape == ()
    assert per.device == params[0].device
    tol = saliency_tolerance([p.cpu() for p in params], [g.cpu() for g in grads], kind, acc)
    # compare against the float64 reference (before its cast to acc)
    exact = torch.stack([ref.saliency([p.cpu().double()], [g.cpu().double()], kind)[0][0]
                         for p, g in zip(params, grads)])
    err = (per.cpu().double() - exact).abs()
    assert bool((err <= tol).all()), f"max err {err.max()} tol {tol[err.argmax()]}"
    assert torch.allclose(per.cpu(), per_ref.cpu(), rtol=0, atol=float(tol.max()) * 2)
    # total = sum of per-tensor values (in the accumulation dtype)
    assert abs(float(total) - float(per.double().sum())) <= float(tol.sum()) + 1e-30
    return per, total


# ---- saliency -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_saliency_matches_reference_around_chunk_boundaries(dtype, kind):
    sizes = sorted(set(boundary_sizes(CPU_CHUNK) + boundary_sizes(CUDA_CHUNK)))
    shapes = [(n,) for n in sizes] + [(16, 8, 3, 3), (10, 16), (5,)]
    params = make_tensor_list(shapes, dtype, seed=1)
    grads = make_tensor_list(shapes, dtype, seed=2)
    _check_saliency(params, grads, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_saliency_more_tensors_than_one_launch(kind):
    shapes = [((i * 37) % 300 + 1,) for i in range(3 * CUDA_MAX_TENSORS_PER_LAUNCH + 5)]
    params = make_tensor_list(shapes, torch.float32, seed=3)
    grads = make_tensor_list(shapes, torch.float32, seed=4)
    per, _ = _check_saliency(params, grads, kind)
    assert per.shape == (len(shapes),)


def test_saliency_empty_scalar_and_noncontiguous():
    base = torch.randn(64, 48, dtype=torch.float64)
    gbase = torch.randn(48, 64, dtype=torch.float64)
    params = [torch.empty(0, dtype=torch.float64), torch.tensor(2.5, dtype=torch.float64),
              base.t(), base[::3, 1::2], torch.empty(3, 0, 4, dtype=torch.float64),
              base[:, :5]]
    grads = [torch.empty(0, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64),
             gbase, gbase.t()[::3, 1::2], torch.empty(3, 0, 4, dtype=torch.float64),
             gbase.t()[:, 3:8]]
    assert not params[2].is_contiguous() and not grads[3].is_contiguous()
    for kind in KINDS:
        per, _ = _check_saliency(params, grads, kind)
        assert per[0] == 0 and per[4] == 0
    per, _ = ops.saliency(params, grads, "abs_prod")
    assert per[1] == 10.0  # |2.5 * -4|
    per, _ = ops.saliency(params, grads, "prod")
    assert per[1] == -10.0


def test_saliency_exact_small_values():
    p = [torch.tensor([1.0, -2.0, 3.0]), torch.tensor([[0.5, 0.5]])]
    g = [torch.tensor([2.0, 2.0, -1.0]), torch.tensor([[4.0, -4.0]])]
    per, total = ops.saliency(p, g, "abs_prod")
    assert per.tolist() == [9.0, 4.0] and float(total) == 13.0
    per, total = ops.saliency(p, g, "prod")
    assert per.tolist() == [-5.0, 0.0] and float(total) == -5.0
    per, total = ops.saliency(p, g, "grad_norm")
    assert per.tolist() == pytest.approx([3.0, 32 ** 0.5]) and float(total) == pytest.approx(3 + 32 ** 0.5)
    per, total = ops.saliency(p, None, "param_sq")
    assert per.tolist() == [14.0, 0.5]
    per2, _ = ops.saliency(None, g, "grad_norm")
    assert per2.tolist() == pytest.approx([3.0, 32 ** 0.5])


def test_saliency_empty_list():
    per, total = ops.saliency([], [], "abs_prod")
    assert per.shape == (0,) and float(total) == 0.0 and per.dtype == torch.float32


def test_saliency_deterministic_across_thread_counts():
    shapes = [(40000,), (70000,), (16,), (3, 3, 64, 64), (100,)] * 5
    params = make_tensor_list(shapes, seed=5)
    grads = make_tensor_list(shapes, seed=6)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = ops.saliency(params, grads, "prod")
        torch.set_num_threads(max(2, old))
        b = ops.saliency(params, grads, "prod")
    finally:
        torch.set_num_threads(old)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_saliency_on_a_real_network_matches_the_per_parameter_loop():
    net = tiny_convnet(seed=0)
    x = torch.randn(4, 3, 8, 8)
    torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 3])).backward()
    params = [p for p in net.parameters()]
    grads = [p.grad for p in params]
    per, total = ops.saliency(params, grads, "abs_prod")
    loop = sum(float((p.detach() * p.grad).abs().sum()) for p in params)
    assert float(total) == pytest.approx(loop, rel=1e-5)


@pytest.mark.parametrize("bad, match", [
    ("kind", "kind must be one of"),
    ("none_grad", r"grads\[1\] is None"),
    ("length", r"len\(params\)=2 and len\(grads\)=1"),
    ("shape", r"grads\[1\] has shape \[3, 2\] but params\[1\] has shape \[2, 3\]"),
    ("dtype_grad", r"grads\[0\] has dtype"),
    ("dtype_list", r"params\[1\] has dtype"),
    ("int", r"params\[0\] must be float32"),
    ("device", r"grads\[1\] is on meta"),
    ("not_tensor", r"params\[1\] must be a Tensor"),
])
def test_saliency_bad_input_names_the_argument(bad, match):
    p = [torch.randn(4), torch.randn(2, 3)]
    g = [torch.randn(4), torch.randn(2, 3)]
    kind = "abs_prod"
    if bad == "kind":
        kind = "abs"
    elif bad == "none_grad":
        g[1] = None
    elif bad == "length":
        g = g[:1]
    elif bad == "shape":
        g[1] = torch.randn(3, 2)
    elif bad == "dtype_grad":
        g[0] = g[0].double()
    elif bad == "dtype_list":
        p[1], g[1] = p[1].double(), g[1].double()
    elif bad == "int":
        p[0], g[0] = torch.ones(4, dtype=torch.int64), torch.ones(4, dtype=torch.int64)
    elif bad == "device":
        g[1] = torch.empty(2, 3, device="meta")
    elif bad == "not_tensor":
        p[1] = [1.0, 2.0]
    with pytest.raises(ValueError, match=match):
        ops.saliency(p, g, kind)


def test_saliency_raw_op_checks_too():
    """Callers of torch.ops.zcfast.* directly get the same named errors from C++."""
    with pytest.raises(ValueError, match=r"grads\[0\] has shape"):
        torch.ops.zcfast.saliency_reduce([torch.randn(3)], [torch.randn(4)], "prod")
    with pytest.raises(ValueError, match=r"len\(params\)=1 and len\(grads\)=0"):
        torch.ops.zcfast.saliency_reduce([torch.randn(3)], [], "prod")
    with pytest.raises(ValueError, match="kind must be one of"):
        torch.ops.zcfast.saliency_reduce([torch.randn(3)], [torch.randn(3)], "nope")
    with pytest.raises(ValueError, match=r"params\[1\] has dtype"):
        torch.ops.zcfast.saliency_reduce([torch.randn(3), torch.randn(3).half()],
                                         [torch.randn(3), torch.randn(3).half()], "prod")


# ---- fisher -------------------------------------------------------------------------------------

FISHER_SHAPES = [(4, 3), (8, 16, 5, 5), (2, 4, 7), (3, 2, 1, 1), (2, 3, 181, 181), (1, 1, 1)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", FISHER_SHAPES, ids=str)
def test_fisher_matches_reference(dtype, shape):
    act = torch.randn(shape).to(dtype)
    grad = (torch.randn(shape) * 1e-2).to(dtype)
    per, total = ops.fisher(act, grad)
    per_ref, total_ref = ref.fisher(act, grad)
    acc = _acc(dtype)
    assert per.dtype == acc and per.shape == (shape[1],) and total.shape == ()
    rtol = 1e-12 if acc == torch.float64 else 2e-5
    assert torch.allclose(per, per_ref, rtol=rtol, atol=0)
    assert torch.allclose(total, total_ref, rtol=rtol, atol=0)


def test_fisher_hand_computed():
    act = torch.tensor([[[1.0, 2.0], [0.0, 1.0]], [[3.0, -1.0], [2.0, 2.0]]])  # [N=2, C=2, 2]
    grad = torch.tensor([[[1.0, 1.0], [5.0, 2.0]], [[1.0, 1.0], [0.5, 0.5]]])
    # s[n, c]: n0: c0 = 3, c1 = 2; n1: c0 = 2, c1 = 2
    per, total = ops.fisher(act, grad)
    assert per.tolist() == [0.5 * (9 + 4) / 2, 0.5 * (4 + 4) / 2]
    assert float(total) == 3.25 + 2.0


def test_fisher_noncontiguous_and_empty():
    act = torch.randn(4, 6, 5, 5).to(memory_format=torch.channels_last)
    grad = torch.randn(4, 5, 5, 6).permute(0, 3, 1, 2)
    assert not act.is_contiguous() and not grad.is_contiguous()
    per, _ = ops.fisher(act, grad)
    assert torch.allclose(per, ref.fisher(act, grad)[0], rtol=2e-5)
    per, total = ops.fisher(torch.randn(3, 0, 4), torch.randn(3, 0, 4))
    assert per.shape == (0,) and float(total) == 0.0
    per, total = ops.fisher(torch.randn(0, 2, 4), torch.randn(0, 2, 4))  # mean over no samples
    assert torch.isnan(per).all() and torch.isnan(total)
    per, _ = ops.fisher(torch.randn(2, 3, 0), torch.randn(2, 3, 0))  # nothing to sum: zero
    assert per.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("act, grad, match", [
    (torch.randn(4), torch.randn(4), r"act must have shape \[N, C, \.\.\.\]"),
    (torch.randn(2, 3), torch.randn(3, 2), r"grad has shape \[3, 2\] but act has shape \[2, 3\]"),
    (torch.randn(2, 3), torch.randn(2, 3).double(), "grad has dtype"),
    (torch.ones(2, 3, dtype=torch.int32), torch.ones(2, 3, dtype=torch.int32), "act must be float32"),
    (torch.randn(2, 3), torch.empty(2, 3, device="meta"), "grad is on meta"),
])
def test_fisher_bad_input(act, grad, match):
    with pytest.raises(ValueError, match=match):
        ops.fisher(act, grad)


# ---- jacob_cov ----------------------------------------------------------------------------------

def _official_jacob_cov(jac: np.ndarray, k: float = 1e-5) -> float:
    """The official formula (numpy corrcoef, general eigen-solver, NaN on failure)."""
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            corrs = np.corrcoef(jac)
            v, _ = np.linalg.eig(corrs)
            return float(np.real(-np.sum(np.log(v + k) + 1.0 / (v + k))))
    except Exception:  # noqa: BLE001 - the official code's catch-all, reproduced for comparison
        return float("nan")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_jacob_cov_matches_reference_and_official_formula(dtype):
    gen = torch.Generator().manual_seed(7)
    jac = torch.randn(3, 16, 300, generator=gen)
    jac[1] = jac[1] + 3.0 * torch.randn(1, 300, generator=gen)  # strongly correlated rows
    jac = jac.to(dtype)
    scores, eigs = ops.jacob_cov(jac)
    s_ref, e_ref = ref.jacob_cov(jac)
    acc = _acc(dtype)
    assert scores.dtype == acc and eigs.dtype == acc
    assert scores.shape == (3,) and eigs.shape == (3, 16)
    rtol = 1e-9 if acc == torch.float64 else 1e-5
    assert torch.allclose(scores, s_ref, rtol=rtol, atol=0)
    assert torch.allclose(eigs, e_ref, rtol=rtol, atol=1e-6)
    assert bool((eigs[:, 1:] >= eigs[:, :-1]).all())  # ascending
    for m in range(3):
        official = _official_jacob_cov(jac[m].double().numpy())
        assert float(scores[m]) == pytest.approx(official, rel=max(rtol, 1e-9))


def test_jacob_cov_rank_deficient_is_sensitive_and_still_matches():
    """N > D: the correlation matrix is singular, the score is dominated by 1/(0+k)."""
    jac = torch.randn(2, 12, 5, dtype=torch.float64)
    scores, eigs = ops.jacob_cov(jac)
    for m in range(2):
        assert float(scores[m]) == pytest.approx(_official_jacob_cov(jac[m].numpy()), rel=1e-6)
    assert float(eigs[0, 0]) == pytest.approx(0.0, abs=1e-10)


def test_jacob_cov_zero_variance_row_gives_nan_for_that_model_only():
    jac = torch.randn(3, 8, 40)
    jac[1, 5] = 0.25          # a constant row: zero variance
    jac[2, 0, 3] = float("inf")
    scores, eigs = ops.jacob_cov(jac)
    assert not torch.isnan(scores[0]) and not torch.isnan(eigs[0]).any()
    assert torch.isnan(scores[1]) and torch.isnan(eigs[1]).all()
    assert torch.isnan(scores[2]) and torch.isnan(eigs[2]).all()
    assert np.isnan(_official_jacob_cov(jac[1].double().numpy()))
    s_ref, _ = ref.jacob_cov(jac)
    assert torch.allclose(scores, s_ref, rtol=1e-5, equal_nan=True)


def test_jacob_cov_tiny_shapes_and_k():
    # one sample: numpy's corrcoef would give [[1]] and a meaningless -(log(1+k) + 1/(1+k));
    # the correlation of one row is undefined, so NaN (as the engine's reason says)
    scores, eigs = ops.jacob_cov(torch.randn(2, 1, 5))
    assert torch.isnan(scores).all() and torch.isnan(eigs).all()
    scores, eigs = ops.jacob_cov(torch.randn(2, 3, 0))   # no features: undefined, not -4e5
    assert torch.isnan(scores).all() and torch.isnan(eigs).all()
    k = 1e-3
    j = torch.randn(1, 2, 5, dtype=torch.float64)         # two samples: eigenvalues 1 ± |r|
    scores, eigs = ops.jacob_cov(j, k=k)
    lam = eigs[0].numpy()
    assert float(scores[0]) == pytest.approx(-(np.log(lam + k) + 1 / (lam + k)).sum(), rel=1e-12)
    scores, eigs = ops.jacob_cov(torch.randn(0, 4, 5))
    assert scores.shape == (0,) and eigs.shape == (0, 4)
    scores, eigs = ops.jacob_cov(torch.randn(2, 3, 1))   # one feature: zero variance
    assert torch.isnan(scores).all()
    base = torch.randn(2, 5, 9)
    scores, _ = ops.jacob_cov(base.transpose(1, 2).contiguous().transpose(1, 2))  # non-contiguous
    assert torch.allclose(scores, ops.jacob_cov(base.contiguous())[0], rtol=1e-6)


@pytest.mark.parametrize("jac, match", [
    (torch.randn(4, 5), r"jacobians must have shape \[M, N, D\]"),
    (torch.ones(1, 2, 3, dtype=torch.int64), "jacobians must be float32"),
])
def test_jacob_cov_bad_input(jac, match):
    with pytest.raises(ValueError, match=match):
        ops.jacob_cov(jac)


# ---- dispatcher / compile -----------------------------------------------------------------------

def test_opcheck_every_op():
    from torch.library import opcheck

    shapes = [(5, 3), (70000,), (), (0,)]
    for dtype in (torch.float64, torch.float16):  # one accumulation dtype each
        params = make_tensor_list(shapes, dtype, seed=1)
        grads = make_tensor_list(shapes, dtype, seed=2)
        for kind in KINDS:
            opcheck(torch.ops.zcfast.saliency_reduce.default, (params, grads, kind))
        opcheck(torch.ops.zcfast.fisher_reduce.default,
                (torch.randn(4, 3, 5, 5).to(dtype), torch.randn(4, 3, 5, 5).to(dtype)))
        opcheck(torch.ops.zcfast.jacob_cov_score.default, (torch.randn(2, 6, 20).to(dtype), 1e-5))


def test_outputs_never_require_grad_and_opcheck_with_grad_inputs():
    """Note [scores are not differentiable]: Parameters in, plain tensors out, no graph."""
    from torch.library import opcheck

    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    grads = [torch.randn(5, 3), torch.randn(7)]
    per, total = ops.saliency(params, grads, "abs_prod")
    assert not per.requires_grad and not total.requires_grad and total.grad_fn is None
    act = torch.randn(4, 3, 5, requires_grad=True)
    assert not any(t.requires_grad for t in ops.fisher(act, act * 2))
    assert not any(t.requires_grad for t in ops.jacob_cov(torch.randn(2, 4, 6, requires_grad=True)))
    opcheck(torch.ops.zcfast.saliency_reduce.default, (params, grads, "prod"))
    opcheck(torch.ops.zcfast.fisher_reduce.default, (act, torch.randn(4, 3, 5)))
    opcheck(torch.ops.zcfast.jacob_cov_score.default, (torch.randn(2, 4, 6, requires_grad=True), 1e-5))


def test_ops_work_under_torch_compile():
    @torch.compile(backend="aot_eager", fullgraph=True)
    def f(a, b, c, d, act, grad, jac):
        per, total = ops.saliency([a, b], [c, d], "abs_prod")
        fper, ftotal = ops.fisher(act, grad)
        scores, _ = ops.jacob_cov(jac)
        return total * 2, per, fper, ftotal + 1, scores

    args = [torch.randn(3, 4), torch.randn(5), torch.randn(3, 4), torch.randn(5),
            torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 4, 10)]
    out = f(*args)
    per, total = ref.saliency(args[:2], args[2:4], "abs_prod")
    assert torch.allclose(out[0], total * 2, rtol=1e-6) and torch.allclose(out[1], per, rtol=1e-6)
    assert torch.allclose(out[2], ref.fisher(args[4], args[5])[0], rtol=1e-5)
    assert torch.allclose(out[4], ref.jacob_cov(args[6])[0], rtol=1e-5)


def test_build_info_and_cuda_version():
    info = ops.build_info()
    assert info["mode"] in ("cpu", "cuda")
    assert ops.has_cuda() == (info["mode"] == "cuda") == (ops.cuda_version() != -1)
    if torch.version.cuda is None:
        assert not ops.has_cuda()


# ---- CUDA launch packing (host code of the CUDA kernel, checked without a GPU) -------------------

def _check_plan(numel, chunk, max_tensors, max_blocks):
    plan = torch.ops.zcfast._plan_list_launches(numel, chunk, max_tensors, max_blocks).tolist()
    expected = [(t, c) for t, n in enumerate(numel) for c in range(-(-n // chunk))]
    assert [(t, c) for _, _, t, c in plan] == expected  # global block order = (tensor, chunk)
    launches = {}
    for launch, block, t, _ in plan:
        launches.setdefault(launch, []).append((block, t))
    assert sorted(launches) == list(range(len(launches)))
    for blocks in launches.values():
        assert [b for b, _ in blocks] == list(range(len(blocks)))  # blocks 0..nb-1
        assert len(blocks) <= max_blocks
        assert len({t for _, t in blocks}) <= max_tensors
    return len(launches)


def test_cuda_launch_packing_covers_every_chunk_once():
    import random

    rng = random.Random(0)
    for _ in range(200):
        numel = [rng.choice([0, 1, 3, 4, 5, 8, 17, 40]) for _ in range(rng.randint(0, 30))]
        _check_plan(numel, rng.randint(1, 9), rng.randint(1, 5), rng.randint(1, 7))
    # the real limits (zcfast.testing mirrors csrc/cuda/multi_tensor_apply.cuh)
    nb201 = [p.numel() for p in tiny_convnet().parameters()] * 40
    assert _check_plan(nb201, CUDA_CHUNK, CUDA_MAX_TENSORS_PER_LAUNCH, CUDA_MAX_BLOCKS_PER_LAUNCH) == 1
    many = [1] * (3 * CUDA_MAX_TENSORS_PER_LAUNCH + 5)
    assert _check_plan(many, CUDA_CHUNK, CUDA_MAX_TENSORS_PER_LAUNCH, CUDA_MAX_BLOCKS_PER_LAUNCH) == 4
    big = [CUDA_CHUNK * 1000 + 1, 5, CUDA_CHUNK * 300]
    assert _check_plan(big, CUDA_CHUNK, CUDA_MAX_TENSORS_PER_LAUNCH, CUDA_MAX_BLOCKS_PER_LAUNCH) == 2
    with pytest.raises(ValueError, match="numel\\[1\\] is negative"):
        torch.ops.zcfast._plan_list_launches([1, -1], 4, 2, 2)


# ---- CUDA ---------------------------------------------------------------------------------------

@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_saliency_matches_reference_and_cpu(dtype, kind):
    sizes = sorted(set(boundary_sizes(CUDA_CHUNK) + boundary_sizes(CPU_CHUNK)))
    shapes = [(n,) for n in sizes] + [(0,), (), (16, 8, 3, 3)]
    shapes = shapes * 40  # > CUDA_MAX_TENSORS_PER_LAUNCH tensors: several launches
    params = make_tensor_list(shapes, dtype, device="cuda", seed=1)
    grads = make_tensor_list(shapes, dtype, device="cuda", seed=2)
    params[3] = params[3][::2].clone()[::1]
    grads[3] = grads[3][::2].clone()
    nc_p = torch.randn(64, 33, device="cuda").to(dtype).t()
    nc_g = torch.randn(33, 64, device="cuda").to(dtype)
    params.append(nc_p)
    grads.append(nc_g)
    per, total = _check_saliency(params, grads, kind)
    per_cpu, total_cpu = ops.saliency([p.cpu() for p in params], [g.cpu() for g in grads], kind)
    tol = saliency_tolerance([p.cpu() for p in params], [g.cpu() for g in grads], kind, per.dtype)
    assert bool(((per.cpu().double() - per_cpu.double()).abs() <= 2 * tol).all())
    again = ops.saliency(params, grads, kind)
    assert torch.equal(again[0], per) and torch.equal(again[1], total)  # deterministic


@needs_cuda
@pytest.mark.cuda
def test_cuda_saliency_uses_current_stream_and_checks_devices():
    params = make_tensor_list([(1000,), (70000,)], device="cuda")
    grads = make_tensor_list([(1000,), (70000,)], device="cuda", seed=1)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        per, total = ops.saliency(params, grads, "abs_prod")
    s.synchronize()
    assert torch.allclose(total.cpu(), ref.saliency(params, grads, "abs_prod")[1].cpu(), rtol=1e-5)
    with pytest.raises(ValueError, match=r"grads\[1\] is on cpu"):
        ops.saliency(params, [grads[0], grads[1].cpu()], "abs_prod")
    with pytest.raises(ValueError, match=r"params\[1\] is on cpu"):
        ops.saliency([params[0], params[1].cpu()], grads, "abs_prod")


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_fisher_and_jacob_cov_match_cpu(dtype):
    for shape in FISHER_SHAPES + [(0, 2, 3), (3, 0, 2)]:
        act = torch.randn(shape).to(dtype)
        grad = torch.randn(shape).to(dtype)
        per, total = ops.fisher(act.cuda(), grad.cuda())
        per_c, total_c = ops.fisher(act, grad)
        rtol = 1e-12 if dtype == torch.float64 else 2e-5
        assert torch.allclose(per.cpu(), per_c, rtol=rtol, equal_nan=True)
        assert torch.allclose(total.cpu(), total_c, rtol=rtol, equal_nan=True)
    jac = torch.randn(4, 16, 300).to(dtype)
    jac[2, 3] = 1.0
    s, e = ops.jacob_cov(jac.cuda())
    s_c, e_c = ops.jacob_cov(jac)
    assert torch.allclose(s.cpu(), s_c, rtol=1e-6, equal_nan=True)
    assert torch.allclose(e.cpu(), e_c, rtol=1e-6, atol=1e-7, equal_nan=True)


@needs_cuda
@pytest.mark.cuda
def test_cuda_opcheck():
    from torch.library import opcheck

    params = make_tensor_list([(5, 3), (70000,), (), (0,)], device="cuda")
    grads = make_tensor_list([(5, 3), (70000,), (), (0,)], device="cuda", seed=1)
    for kind in KINDS:
        opcheck(torch.ops.zcfast.saliency_reduce.default, (params, grads, kind))
    opcheck(torch.ops.zcfast.fisher_reduce.default,
            (torch.randn(4, 3, 5, 5, device="cuda"), torch.randn(4, 3, 5, 5, device="cuda")))
    opcheck(torch.ops.zcfast.jacob_cov_score.default, (torch.randn(2, 6, 20, device="cuda"), 1e-5))


# ---- CPU ISA copies / info command ---------------------------------------------------------------

_ISA_SCRIPT = """
import torch, zcfast.ops as ops
from zcfast.testing import make_tensor_list
shapes = [(40000,), (70001,), (16,), (3, 3, 64, 64), (37,)]
out = []
for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
    p = make_tensor_list(shapes, dtype, seed=5)
    g = make_tensor_list(shapes, dtype, seed=6)
    for kind in ops.SALIENCY_KINDS:
        per, total = ops.saliency(p, g, kind)
        out += per.double().tolist() + [float(total)]
    out += ops.fisher(torch.randn(8, 4, 33, generator=torch.Generator().manual_seed(1)).to(dtype),
                      torch.randn(8, 4, 33, generator=torch.Generator().manual_seed(2)).to(dtype))[0].double().tolist()
for dtype in (torch.float32, torch.float64):   # batch_norm_cl: AVX2 and baseline copies
    x = (torch.randn(4, 24, 17, 9, generator=torch.Generator().manual_seed(3)) * 3 + 1).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(24, generator=torch.Generator().manual_seed(4)).to(dtype)
    b = torch.randn(24, generator=torch.Generator().manual_seed(5)).to(dtype)
    y, m, v = ops.batch_norm_cl(x, w, b, 1e-5)
    gx, gw, gb = ops.batch_norm_cl_backward(torch.ones_like(x) + x, x, w, m, v, 1e-5)
    out += [t.double().flatten().tolist() for t in (y, m, v, gx, gw, gb)]
print(repr(out))
"""


def test_cpu_isa_copies_are_bit_identical():
    """The AVX-512 / AVX2 / baseline copies of the inner loop give the same bits (Note [ISA dispatch])."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = []
    for isa in ("0", "1", "2"):
        env = dict(os.environ, ZCFAST_CPU_ISA=isa, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run([sys.executable, "-c", _ISA_SCRIPT], env=env, capture_output=True,
                              text=True, timeout=120, check=True)
        results.append(proc.stdout)
    assert results[0] == results[1] == results[2]


def test_info_command(capsys):
    import json

    from zcfast.cli import main

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["extension"] == "ok" and info["build_mode"] in ("cpu", "cuda")
    assert info["torch"] == torch.__version__ and info["has_cuda"] == ops.has_cuda()


@pytest.mark.slow  # three fresh interpreters importing torch: ~10 s quiet, minutes on a busy machine
@pytest.mark.parametrize("env, rc, message", [
    ({"ZCFAST_FORCE_CPU": "1"}, 0, "building the CPU extension (ZCFAST_FORCE_CPU=1)"),
    ({"ZCFAST_FORCE_CPU": "1", "ZCFAST_FORCE_CUDA": "1"}, 1, "set at most one of"),
    ({"ZCFAST_FORCE_CUDA": "1", "CUDA_HOME": "/nonexistent"}, 1, "ZCFAST_FORCE_CUDA=1 but"),
])
def test_setup_build_mode_choice(env, rc, message):
    """setup.py prints its choice; impossible forced modes fail with a reason (nothing is built)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ZCFAST_FORCE")}
    full_env.update(env)
    proc = subprocess.run([sys.executable, "setup.py", "--version"], cwd=root, env=full_env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == rc, proc.stderr
    assert message in proc.stdout + proc.stderr
