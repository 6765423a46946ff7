"""zcfast.ops.batch_norm_cl / batch_norm_cl_backward / batch_norm_train_cl (train-mode BatchNorm2d
of channels_last tensors with float64 statistics, behind builtin_needs.channels_last_: the
channels_last private copies of TE-NAS's NTK): against the float64 plain-PyTorch reference
(zcfast/reference.py) forward and backward, determinism over thread counts, gradcheck, fake
kernels and opcheck, bad input; channels_last_ on an NB201 copy against the NCHW pass (values,
running statistics), the NTK against float64, what it leaves alone; CUDA (skipped without a GPU)."""
from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import zcfast
import zcfast.ops as ops
import zcfast.reference as ref
from zcfast.proxies.builtin_needs import channels_last_
from zcfast.testing import cuda_usable

needs_cuda = pytest.mark.skipif(not cuda_usable(), reason="needs zcfast's CUDA build and a GPU")

CL = torch.channels_last
SHAPES = [(8, 16, 9, 7), (2, 3, 1, 1), (1, 5, 40, 33), (64, 4, 4, 4)]   # rows from 2 to 1,320 (two row blocks)


def _inputs(shape, dtype, seed=0, affine=True):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3 + 1).to(dtype).contiguous(memory_format=CL)
    c = shape[1]
    w = torch.randn(c, generator=g).to(dtype) if affine else None
    b = torch.randn(c, generator=g).to(dtype) if affine else None
    return x, w, b


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("affine", [True, False])
def test_forward_and_backward_equal_the_float64_reference(dtype, shape, affine):
    x, w, b = _inputs(shape, dtype, sum(shape), affine)
    y, mean, var = ops.batch_norm_cl(x, w, b, 1e-5)
    xr = x.double().requires_grad_(True)
    wr = w.double().requires_grad_(True) if affine else None
    br = b.double().requires_grad_(True) if affine else None
    yr, mr, vr = ref.batch_norm_train(xr, wr, br, 1e-5)
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous(memory_format=CL)
    assert mean.dtype == var.dtype == torch.float64
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(mean, mr, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(var, vr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y.double(), yr.detach(), rtol=tol, atol=tol * 4)
    gy = torch.randn(shape, generator=torch.Generator().manual_seed(7)).to(dtype)
    yr.backward(gy.double())
    gx, gw, gb = ops.batch_norm_cl_backward(gy, x, w, mean, var, 1e-5)
    assert gx.is_contiguous(memory_format=CL) and gw.dtype == gb.dtype == dtype
    torch.testing.assert_close(gx.double(), xr.grad, rtol=tol * 10, atol=tol * 10)
    if affine:
        torch.testing.assert_close(gw.double(), wr.grad, rtol=tol * 10, atol=tol * 10)
        torch.testing.assert_close(gb.double(), br.grad, rtol=tol * 10, atol=tol * 10)


def test_float32_statistics_are_far_more_accurate_than_pytorchs_channels_last_kernel():
    # the reason for the op: PyTorch's channels_last CPU BatchNorm (one-pass float32 statistics)
    x, _, _ = _inputs((64, 16, 32, 32), torch.float32, 3)
    want = ref.batch_norm_train(x, None, None, 1e-5)[0]
    ours = (ops.batch_norm_cl(x, None, None, 1e-5)[0].double() - want).abs().max()
    nchw = (F.batch_norm(x.contiguous(), None, None, training=True).double() - want).abs().max()
    assert ours <= nchw * 1.01 and ours < 1e-6


def test_results_do_not_depend_on_the_thread_count():
    x, w, b = _inputs((16, 8, 32, 32), torch.float32, 5)   # 16 row blocks
    gy = torch.randn(x.shape).contiguous(memory_format=CL)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            y, m, v = ops.batch_norm_cl(x, w, b, 1e-5)
            outs.append((y, m, v) + tuple(ops.batch_norm_cl_backward(gy, x, w, m, v, 1e-5)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b_) for a, b_ in zip(*outs))


def test_reads_nchw_inputs_and_leaves_them():
    x, w, b = _inputs((4, 6, 5, 5), torch.float64, 2)
    nchw = x.contiguous()
    before = nchw.clone()
    for got, want in zip(ops.batch_norm_cl(nchw, w, b, 1e-3), ops.batch_norm_cl(x, w, b, 1e-3)):
        assert torch.equal(got, want)
    assert torch.equal(nchw, before)


def test_batch_norm_train_cl_gradcheck_and_once_differentiable():
    x, w, b = _inputs((3, 4, 5, 2), torch.float64, 9)
    for t in (x, w, b):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *a: ops.batch_norm_train_cl(*a, 1e-5)[0], (x, w, b))
    y = ops.batch_norm_train_cl(x, w, b, 1e-5)[0]
    (gx,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|does not require grad"):
        gx.sum().backward()


def test_fake_kernels_and_opcheck():
    from torch.library import opcheck

    x, w, b = _inputs((2, 3, 4, 5), torch.float32, 4)
    opcheck(torch.ops.zcfast.batch_norm_cl.default, (x, w, b, 1e-5))
    opcheck(torch.ops.zcfast.batch_norm_cl.default, (x.double(), None, None, 0.0))
    y, m, v = ops.batch_norm_cl(x, w, b, 1e-5)
    opcheck(torch.ops.zcfast.batch_norm_cl_backward.default, (torch.randn_like(x), x, w, m, v, 1e-5))


@pytest.mark.parametrize("call, match", [
    (lambda x, w: ops.batch_norm_cl(x.int(), None, None, 1e-5), "x must be float32 or float64"),
    (lambda x, w: ops.batch_norm_cl(x.half(), None, None, 1e-5), "x must be float32 or float64"),
    (lambda x, w: ops.batch_norm_cl(x[0], None, None, 1e-5), r"shape \[N, C, H, W\]"),
    (lambda x, w: ops.batch_norm_cl(x, w[:2], None, 1e-5), r"weight must have shape \[C\]"),
    (lambda x, w: ops.batch_norm_cl(x, None, w.double(), 1e-5), "bias has dtype"),
    (lambda x, w: ops.batch_norm_cl(x, w, None, -1.0), "eps must be finite"),
    (lambda x, w: ops.batch_norm_cl(x, w, None, float("nan")), "eps must be finite"),
    (lambda x, w: ops.batch_norm_cl(x[:, :, :0], w, None, 1e-5), "at least one channel and one value"),
    (lambda x, w: ops.batch_norm_cl("x", w, None, 1e-5), "x must be a Tensor"),
    (lambda x, w: ops.batch_norm_cl_backward(x[:1], x, w, torch.zeros(3, dtype=torch.float64),
                                             torch.ones(3, dtype=torch.float64), 1e-5), "gy must match x"),
    (lambda x, w: ops.batch_norm_cl_backward(x, x, w, torch.zeros(3), torch.ones(3), 1e-5), "float64"),
])
def test_bad_input_names_the_problem(call, match):
    x, w, _ = _inputs((2, 3, 4, 4), torch.float32, 1)
    with pytest.raises(ValueError, match=match):
        call(x, w)


def _nb201(arch, seed=0):
    return zcfast.scoring.build_seeded(zcfast.spaces.get("nb201"), arch, seed, 10)


def test_channels_last_copy_equals_the_nchw_pass_and_its_running_statistics():
    sp = zcfast.spaces.get("nb201")
    arch = sp.sample(random.Random(3))
    net = _nb201(arch).train()
    cl = copy.deepcopy(net)
    assert channels_last_(cl) is CL
    assert cl.stem[0].weight.is_contiguous(memory_format=CL)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref_net = copy.deepcopy(net).double()
    want = ref_net(x.double())
    got_nchw = net(x)
    got = cl(x.contiguous(memory_format=CL))

    def err(a, b):
        return float((a.detach().double() - b.detach()).abs().max() / b.detach().abs().max().clamp_min(1e-30))

    # within float32 rounding of the float64 pass, as the NCHW float32 pass
    assert err(got, want) < max(10 * err(got_nchw, want), 1e-5)
    for (name, a), (_, b), (_, c) in zip(cl.named_buffers(), ref_net.named_buffers(), net.named_buffers()):
        if a.is_floating_point():   # running statistics: no further from float64 than NCHW's
            assert err(a, b) <= max(2 * err(c, b), 1e-6), name
        else:
            assert torch.equal(a, b), name


def test_channels_last_leaves_undeclared_models_and_eval_mode_alone():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    before = copy.deepcopy(plain.state_dict())
    assert channels_last_(plain) is torch.contiguous_format
    assert plain[0].weight.is_contiguous() and plain[1].forward.__func__ is nn.BatchNorm2d.forward
    assert all(torch.equal(v, before[k]) for k, v in plain.state_dict().items())
    net = _nb201(("nor_conv_3x3",) * 6)
    channels_last_(net)
    net.eval()   # running statistics: the module's own forward, running stats untouched
    rm = [m.running_mean.clone() for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32).contiguous(memory_format=CL))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(rm, [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]))


def test_ntk_on_channels_last_copies_matches_float64():
    # Deep weight gradients can move more than the NCHW pass's in channels_last (through a
    # reduction block's cancelling paths: docs/proxies.md, "Channels-last private copies"), so the
    # check is on the proxy that uses it: the NTK's condition number within 2e-3 of float64
    # (measured over 8 archs: NCHW float32 up to 5.0e-4, channels_last 1.9e-4).
    from zcfast.proxies import te_nas

    sp = zcfast.spaces.get("nb201")
    rng = random.Random(11)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def cond(gram):
        e = torch.linalg.eigvalsh(gram.double())
        return float(e[-1] / e[0])
    for _ in range(3):
        net = _nb201(sp.sample(rng))
        cl_gram = te_nas.ntk_gram_of(copy.deepcopy(net), x)
        ref_gram = te_nas.ntk_gram_of(copy.deepcopy(net).double(), x.double())
        assert cond(cl_gram) == pytest.approx(cond(ref_gram), rel=2e-3)


def test_the_scored_model_keeps_its_layout_and_values():
    # ntk_cond converts only its private copy
    net = _nb201(zcfast.spaces.get("nb201").sample(random.Random(1)))
    state = copy.deepcopy(net.state_dict())
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    res = zcfast.score(net, x, y, ["az_expressivity", "az_trainability", "ntk_cond"])
    assert all(r == r for r in res.values())
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]) and v.is_contiguous(), k
    assert all(type(m).forward is m.forward.__func__ for m in net.modules() if isinstance(m, nn.BatchNorm2d))


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cuda_batch_norm_cl_matches_the_reference(dtype):
    x, w, b = _inputs((8, 40, 9, 7), dtype, 11)
    y, m, v = ops.batch_norm_cl(x.cuda(), w.cuda(), b.cuda(), 1e-5)
    yr, mr, vr = ref.batch_norm_train(x, w, b, 1e-5)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(m.cpu(), mr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(v.cpu(), vr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y.cpu().double(), yr, rtol=tol, atol=4 * tol)
    gy = torch.randn_like(x)
    cpu = ops.batch_norm_cl_backward(gy, x, w, *ops.batch_norm_cl(x, w, b, 1e-5)[1:], 1e-5)
    gpu = ops.batch_norm_cl_backward(gy.cuda(), x.cuda(), w.cuda(), m, v, 1e-5)
    for a, c in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu().double(), c.double(), rtol=10 * tol, atol=10 * tol)
    again = ops.batch_norm_cl(x.cuda(), w.cuda(), b.cuda(), 1e-5)
    assert all(torch.equal(p, q) for p, q in zip(again, (y, m, v)))   # deterministic


def test_the_environment_switch(monkeypatch):
    net = _nb201(("nor_conv_3x3",) * 6)
    monkeypatch.setenv("ZCFAST_CHANNELS_LAST", "0")
    assert channels_last_(net) is torch.contiguous_format and net.stem[0].weight.is_contiguous()
    monkeypatch.setenv("ZCFAST_CHANNELS_LAST", "yes")
    with pytest.raises(ValueError, match="ZCFAST_CHANNELS_LAST must be '0' or '1'"):
        channels_last_(net)
