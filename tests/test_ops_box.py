"""zcfast.ops.box_sum (the stride-1 window sums behind box_avg_pools_: NB201's 3x3 average pools
on the private copies of TE-NAS, SWAP and AZ-NAS): CPU against the plain-PyTorch reference
(zcfast/reference.py) and against PyTorch's avg_pool2d bit for bit; ops.avg_pool_same (double
backward, vmap); fake kernel and opcheck; bad input; CUDA (skipped without a GPU)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zcfast.ops as ops
import zcfast.reference as ref

from zcfast.testing import DTYPES, cuda_usable

needs_cuda = pytest.mark.skipif(not cuda_usable(), reason="needs zcfast's CUDA build and a GPU")

SHAPES = [(2, 3, 9, 7), (4, 6, 6), (5, 1), (1, 5), (2, 1, 2, 2), (3, 2, 2, 4, 5), (1, 1, 0, 3), (0, 2, 4, 4)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("k", [(1, 1), (3, 3), (5, 3), (3, 7)], ids=str)
def test_box_sum_equals_the_reference(dtype, shape, k):
    g = torch.Generator().manual_seed(sum(shape) + k[0])
    z = torch.randn(shape, generator=g).to(dtype)
    got = ops.box_sum(z, *k)
    want = ref.box_sum(z, *k)
    assert got.dtype == dtype and got.shape == z.shape and got.is_contiguous()
    assert torch.equal(got, want)            # the same additions in the same order


def test_box_sum_reads_any_strides_and_leaves_its_input():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(3, 8, 10, 6, generator=g)
    for z in (base.transpose(2, 3), base[:, ::2, 1:-1], base.to(memory_format=torch.channels_last)):
        before = z.clone()
        assert torch.equal(ops.box_sum(z, 3, 3), ref.box_sum(z.contiguous(), 3, 3))
        assert torch.equal(z, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("include_pad", [False, True])
def test_box_pool_is_pytorchs_avg_pool_bit_for_bit_with_double_backward(dtype, include_pad):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 9, 8, generator=g, dtype=dtype, requires_grad=True)
    v = torch.randn(2, 4, 9, 8, generator=g, dtype=dtype)
    native = F.avg_pool2d(x, 3, 1, 1, count_include_pad=include_pad)
    fast = ops.avg_pool_same(x, 3, 3, include_pad)
    assert torch.equal(fast, native)
    gn = torch.autograd.grad(native, x, v, create_graph=True)[0]
    gf = torch.autograd.grad(fast, x, v, create_graph=True)[0]
    assert torch.equal(gf, gn)
    w = torch.randn(2, 4, 9, 8, generator=g, dtype=dtype)
    # second order: d<grad, w>/dv through the backward (grasp-style double backward stays available)
    v2 = v.clone().requires_grad_(True)
    hn = torch.autograd.grad((torch.autograd.grad(F.avg_pool2d(x, 3, 1, 1, count_include_pad=include_pad), x, v2,
                                                  create_graph=True)[0] * w).sum(), v2)[0]
    hf = torch.autograd.grad((torch.autograd.grad(ops.avg_pool_same(x, 3, 3, include_pad), x, v2, create_graph=True)[0]
                              * w).sum(), v2)[0]
    assert torch.allclose(hf, hn, rtol=1e-6, atol=1e-7)


def test_box_sum_under_vmap_is_the_per_sample_sum():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(4, 2, 5, 6, generator=g)
    for dim in (0, 1, 2):
        got = torch.vmap(lambda t: ops.box_sum(t, 3, 3), in_dims=dim)(z.movedim(0, dim))
        want = torch.stack([ref.box_sum(z[i], 3, 3) for i in range(4)])
        assert torch.equal(got, want)


def test_box_sum_fake_and_opcheck():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.library import opcheck
    z = torch.randn(2, 3, 7, 5)
    opcheck(torch.ops.zcfast.box_sum.default, (z, 3, 3))
    opcheck(torch.ops.zcfast.box_sum.default, (torch.randn(6, 4, dtype=torch.float64), 1, 5))
    with FakeTensorMode():
        out = torch.ops.zcfast.box_sum.default(torch.empty(2, 3, 7, 5), 3, 3)
        assert out.shape == (2, 3, 7, 5) and out.dtype == torch.float32
    assert torch.equal(torch.compile(lambda t: ops.box_sum(t, 3, 3), fullgraph=True)(z), ref.box_sum(z, 3, 3))


@pytest.mark.parametrize("args,match", [
    ((torch.zeros(3, dtype=torch.float32), 3, 3), "at least 2 dims"),
    ((torch.zeros(3, 3, dtype=torch.int64), 3, 3), "must be float32, float64, bfloat16 or float16"),
    ((torch.zeros(3, 3), 2, 3), "odd and >= 1"),
    ((torch.zeros(3, 3), 3, 0), "odd and >= 1"),
    ((torch.zeros(3, 3), 3.0, 3), "kh must be an int"),
    (([[1.0]], 3, 3), "z must be a Tensor"),
])
def test_box_sum_bad_input_names_the_problem(args, match):
    with pytest.raises(ValueError, match=match):
        ops.box_sum(*args)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_box_sum_matches_cpu(dtype):
    for shape in SHAPES:
        z = torch.randn(shape).to(dtype)
        for k in ((3, 3), (5, 1)):
            got = ops.box_sum(z.cuda(), *k)
            assert got.is_cuda and torch.equal(got.cpu(), ops.box_sum(z, *k))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k", [(3, 3), (1, 5), (5, 3)], ids=str)
def test_box_sum_keeps_channels_last_with_the_same_bits(dtype, k):
    # the channels_last private copies (builtin_needs.channels_last_) pool in their own layout
    z = torch.randn(3, 5, 9, 7, generator=torch.Generator().manual_seed(k[0])).to(dtype)
    cl = z.contiguous(memory_format=torch.channels_last)
    got = ops.box_sum(cl, *k)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, ops.box_sum(z, *k)) and torch.equal(got, ref.box_sum(z, *k))
    if dtype not in (torch.float32, torch.float64):   # PyTorch's pool: bit for bit in these two
        return
    x = cl.clone().requires_grad_(True)
    y = ops.avg_pool_same(x, *k)
    want = F.avg_pool2d(z, k, 1, (k[0] // 2, k[1] // 2), count_include_pad=False)
    assert torch.equal(y, want)
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    x2 = z.clone().requires_grad_(True)
    (gx2,) = torch.autograd.grad(F.avg_pool2d(x2, k, 1, (k[0] // 2, k[1] // 2), count_include_pad=False), x2,
                                 torch.ones_like(want))
    assert torch.equal(gx, gx2)
