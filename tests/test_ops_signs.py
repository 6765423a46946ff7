"""The #13 kernels (zcfast.ops.sign_pack, distinct_rows, sign_pattern_count, sign_sum,
channel_spectra): CPU against the plain-PyTorch references (zcfast/reference.py) and numpy
re-statements of the official code (exact for the integer ops; eigenvalues to 1e-10 for float64
input), dtypes, strides, empty inputs, bad input naming the argument, opcheck, fake kernels and
torch.compile; CUDA against CPU (skipped without a GPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import zcfast.ops as ops
import zcfast.reference as ref
from zcfast.testing import DTYPES, cuda_usable

needs_cuda = pytest.mark.skipif(not cuda_usable(), reason="needs zcfast's CUDA build and a GPU")

LENGTHS = [0, 1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 300]


def _signed(shape, dtype=torch.float32, seed=0) -> torch.Tensor:
    """Gaussian values with exact zeros, a NaN and a -0.0 mixed in."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    x[x.abs() < 0.2] = 0.0
    flat = x.view(-1)
    if flat.numel() > 2:
        flat[1] = float("nan")
        flat[2] = -0.0
    return x.to(dtype)


def _numpy_patterns(x: torch.Tensor) -> int:
    """SWAP's official count: np.unique over the rows of the 0/1 sign matrix."""
    if x.shape[0] == 0:
        return 0
    return int(np.unique((x.float().numpy() > 0).astype(np.int8), axis=0).shape[0])


# ---- sign_pack / distinct_rows / sign_pattern_count ---------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sign_pack_matches_reference_around_word_boundaries(dtype):
    for length in LENGTHS:
        x = _signed((7, length), dtype, seed=length)
        got = ops.sign_pack(x)
        assert got.dtype == torch.int64 and got.shape == (7, (length + 63) // 64)
        assert torch.equal(got, ref.sign_pack(x)), length
        # transposed view (SWAP's [neurons, B] from [B, neurons]): read in place, same words
        xt = _signed((length, 7), dtype, seed=length + 1).t()
        assert torch.equal(ops.sign_pack(xt), ref.sign_pack(xt.contiguous()))
        # neither dimension contiguous
        xs = _signed((7, 2 * length), dtype, seed=3)[:, ::2]
        assert torch.equal(ops.sign_pack(xs), ref.sign_pack(xs.contiguous()))


def test_sign_pack_bit_layout_nan_and_sign_bit():
    x = torch.full((2, 65), -1.0)
    x[0, 0] = 1.0
    x[0, 63] = 2.0       # bit 63: the int64's sign bit
    x[0, 64] = 3.0       # word 1, bit 0
    x[1, :] = float("nan")
    x[1, 5] = float("inf")
    assert ops.sign_pack(x).tolist() == [[1 - 2 ** 63, 1], [1 << 5, 0]]
    assert ops.sign_pack(torch.zeros(3, 0)).shape == (3, 0)
    assert ops.sign_pack(torch.zeros(0, 70)).shape == (0, 2)


def test_sign_pack_large_parallel_matches_reference():
    x = _signed((3000, 70), seed=5)  # enough work for the threaded path
    assert torch.equal(ops.sign_pack(x), ref.sign_pack(x))
    xt = _signed((70, 3000), seed=6).t()
    assert torch.equal(ops.sign_pack(xt), ref.sign_pack(xt.contiguous()))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pattern_counts_match_numpy_unique(dtype):
    g = torch.Generator().manual_seed(1)
    for rows, length in [(0, 5), (1, 1), (50, 3), (200, 64), (300, 65), (40, 200), (5, 0)]:
        # few distinct patterns: rows repeated, with ties to exercise the hash table
        base = torch.randn(max(rows // 4, 1), length, generator=g).to(dtype)
        x = base[torch.randint(0, base.shape[0], (rows,), generator=g)]
        expect = _numpy_patterns(x) if length else min(rows, 1)
        assert ops.sign_pattern_count(x) == expect == ref.sign_pattern_count(x)
        assert ops.distinct_rows(ops.sign_pack(x)) == expect
        assert ops.distinct_rows(ops.sign_pack(x)) == ref.distinct_rows(ref.sign_pack(x))
        assert ops.sign_pattern_count(x.t().contiguous().t()) == expect  # column-major copy


def test_distinct_rows_of_arbitrary_words_and_views():
    g = torch.Generator().manual_seed(2)
    p = torch.randint(-3, 3, (500, 3), generator=g, dtype=torch.int64)
    p[:, 1] = torch.iinfo(torch.int64).min  # sign bit set everywhere
    assert ops.distinct_rows(p) == len({tuple(r) for r in p.tolist()})
    assert ops.distinct_rows(p[::3]) == len({tuple(r) for r in p[::3].tolist()})
    assert ops.distinct_rows(torch.zeros(0, 4, dtype=torch.int64)) == 0
    assert ops.distinct_rows(torch.zeros(4, 0, dtype=torch.int64)) == 1
    big = torch.arange(20000, dtype=torch.int64).view(-1, 1) % 7777  # threaded hashing
    assert ops.distinct_rows(big) == 7777


@pytest.mark.parametrize("distinct", [1, 511, 512, 513, 2048, 60000])
def test_distinct_rows_across_the_table_growth(distinct):
    """The CPU table starts small and grows 4x when half full: counts at and around each growth
    (the rows repeated in a shuffled order, two words each) equal Python's set of tuples."""
    g = torch.Generator().manual_seed(distinct)
    rows = torch.randint(-2**62, 2**62, (distinct, 2), generator=g, dtype=torch.int64)
    p = rows[torch.randint(0, distinct, (3 * distinct,), generator=g)]
    p = torch.cat([rows, p])[torch.randperm(4 * distinct, generator=g)]
    assert ops.distinct_rows(p) == len({tuple(r) for r in p.tolist()}) == distinct
    assert ops.distinct_rows(p[:, :1]) == len(set(p[:, 0].tolist()))


# ---- sign_sum -------------------------------------------------------------------------------------

def _numpy_sign_sum(grads) -> list[float]:
    """GradSign's official reduction: per tensor sum(|sum_i sign(g_i)|) in numpy."""
    out = []
    for g in grads:
        a = np.nan_to_num(g.double().numpy().reshape(g.shape[0], int(np.prod(g.shape[1:]))), nan=0.0)
        out.append(float(np.abs(np.sign(a).sum(axis=0)).sum()))
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sign_sum_matches_reference_and_numpy(dtype):
    shapes = [(8, 3, 3, 3), (5, 2047), (5, 2048), (5, 2049), (3, 10000), (2,), (0, 4), (4, 0),
              (1, 7)]
    grads = [_signed(s, dtype, seed=i) for i, s in enumerate(shapes)]
    got = ops.sign_sum(grads)
    assert got.dtype == torch.float64 and got.shape == (len(shapes),)
    assert torch.equal(got, ref.sign_sum(grads))
    assert got.tolist() == _numpy_sign_sum(grads)


def test_sign_sum_counts_beyond_int16_and_mixed_dtypes_and_strides():
    n = 40000  # N >= 2^15: the int32 counters
    g = torch.ones(n, 3)
    g[:, 1] = -1.0
    g[: n // 2, 2] = -1.0
    assert ops.sign_sum([g]).tolist() == [2.0 * n]
    mixed = [_signed((6, 50), torch.float16, seed=1), _signed((6, 4, 4), torch.float64, seed=2),
             _signed((6, 9), torch.bfloat16, seed=3)]
    assert torch.equal(ops.sign_sum(mixed), ref.sign_sum(mixed))
    nc = _signed((30, 40), seed=4).t()  # [40, 30] non-contiguous
    assert torch.equal(ops.sign_sum([nc]), ref.sign_sum([nc]))
    assert ops.sign_sum([]).shape == (0,)
    many = [_signed((4, 3000), seed=s) for s in range(40)]  # threaded, several blocks per tensor
    assert torch.equal(ops.sign_sum(many), ref.sign_sum(many))


def test_sign_sum_parameters_never_require_grad():
    w = torch.nn.Parameter(torch.randn(4, 5))
    out = ops.sign_sum([w])
    assert not out.requires_grad and out.grad_fn is None


# ---- channel_spectra ------------------------------------------------------------------------------

def _numpy_spectrum(f: torch.Tensor, kind: str) -> np.ndarray:
    """MeCo's official matrix: np.nan_to_num(np.corrcoef(F)); AZ-NAS's: np.cov(F) (ddof 1)."""
    a = f.double().numpy()
    with np.errstate(all="ignore"):
        m = np.nan_to_num(np.corrcoef(a), nan=0.0, posinf=0.0, neginf=0.0) if kind == "corr" else np.cov(a)
    return np.linalg.eigvalsh(np.atleast_2d(m))


@pytest.mark.parametrize("kind", ["corr", "cov"])
def test_channel_spectra_matches_reference_and_numpy(kind):
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 10), (4, 10), (3, 7), (4, 12), (8, 64), (1, 5), (16, 3)]
    feats = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    feats[1][2] = 1.0  # a zero-variance channel
    got = ops.channel_spectra(feats, kind)
    want = ref.channel_spectra(feats, kind)
    assert len(got) == len(feats)
    for f, x, y in zip(feats, got, want):
        assert x.dtype == torch.float64 and x.shape == (f.shape[0],)
        assert torch.allclose(x, y, rtol=1e-10, atol=1e-10)
        if f.shape[0] > 1:
            np.testing.assert_allclose(x.numpy(), _numpy_spectrum(f, kind), rtol=1e-10, atol=1e-10)
        assert torch.all(x[1:] >= x[:-1])  # ascending


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_channel_spectra_low_precision_inputs_are_read_in_float64(dtype):
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(6, 20, generator=g).to(dtype), torch.randn(6, 30, generator=g).to(dtype)]
    for kind in ("corr", "cov"):
        for x, y in zip(ops.channel_spectra(feats, kind), ref.channel_spectra(feats, kind)):
            assert torch.allclose(x, y, rtol=1e-10, atol=1e-10)  # same float64 values in


def test_channel_spectra_degenerate_channels_empty_and_views():
    f = torch.randn(5, 9, dtype=torch.float64)
    f[0] = 0.0
    f[3, 4] = float("nan")
    f[4, 2] = float("inf")
    corr = ops.channel_spectra([f], "corr")[0]
    assert torch.allclose(corr, ref.channel_spectra([f], "corr")[0], atol=1e-12)
    np.testing.assert_allclose(corr.numpy(), _numpy_spectrum(f, "corr"), atol=1e-12)
    assert (corr.abs() < 1e-12).sum() >= 3  # three zeroed channels: three zero eigenvalues
    cov = ops.channel_spectra([f, torch.randn(5, 9, dtype=torch.float64)], "cov")
    assert torch.isnan(cov[0]).all() and torch.isfinite(cov[1]).all()  # the others unaffected
    out = ops.channel_spectra([torch.zeros(0, 4), torch.randn(3, 0), torch.randn(2, 1)], "corr")
    assert [t.shape for t in out] == [(0,), (3,), (2,)]
    assert out[1].tolist() == [0.0, 0.0, 0.0] and out[2].tolist() == [0.0, 0.0]
    assert ops.channel_spectra([], "cov") == []
    x = torch.randn(12, 6, dtype=torch.float64)
    assert torch.allclose(ops.channel_spectra([x.t()])[0], ref.channel_spectra([x.t().contiguous()])[0],
                          atol=1e-12)



def test_channel_spectra_solves_a_repeated_tensor_once_and_returns_separate_results(monkeypatch):
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(6, 20, generator=g, dtype=torch.float64), torch.randn(4, 9, generator=g, dtype=torch.float64)
    seen = []
    real = torch.ops.zcfast.channel_spectra.default

    class Spy:
        @staticmethod
        def default(feats, kind):
            seen.append(len(feats))
            return real(feats, kind)

    monkeypatch.setattr(torch.ops.zcfast, "channel_spectra", Spy)
    got = ops.channel_spectra([a, b, a, a.clone()], "corr")
    assert seen == [3]                       # a, b and the clone (a different object)
    want = ref.channel_spectra([a, b, a, a], "corr")
    for x, y in zip(got, want):
        assert torch.allclose(x, y, rtol=1e-10, atol=1e-10)
    assert got[0] is not got[2] and got[0].data_ptr() != got[2].data_ptr()
    got[2].zero_()                           # each place owns its result
    assert torch.allclose(got[0], want[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["corr", "cov"])
def test_channel_spectra_across_scratch_segments_and_a_feature_larger_than_one(kind):
    """The CPU kernel writes its float64 rows into segments of at most 2**21 values: features of
    one (C, P) split across segments, and one feature larger than a segment, match the
    reference like any other."""
    g = torch.Generator().manual_seed(3)
    shapes = [(16, 65536)] * 3 + [(4, 600_000), (8, 64), (16, 65536), (3, 7)]   # 2**20 each; 2.4e6
    feats = [torch.randn(s, generator=g) for s in shapes]
    feats[3][1] = 0.5                                                      # a constant row in the large one
    got = ops.channel_spectra(feats, kind)
    want = ref.channel_spectra(feats, kind)
    for f, x, y in zip(feats, got, want):
        assert x.shape == (f.shape[0],)
        assert torch.allclose(x, y, rtol=1e-9, atol=1e-12), (f.shape, (x - y).abs().max())

# ---- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda: ops.sign_pack(torch.randn(3)), r"sign_pack: x must have shape \[R, L\]"),
    (lambda: ops.sign_pack(torch.ones(2, 2, dtype=torch.int32)), r"sign_pack: x must be float32"),
    (lambda: ops.sign_pack([1.0]), r"sign_pack: x must be a Tensor"),
    (lambda: ops.sign_pattern_count(torch.randn(2, 2, 2)), r"sign_pattern_count: x must have shape"),
    (lambda: ops.distinct_rows(torch.zeros(2, 2)), r"distinct_rows: packed must be int64"),
    (lambda: ops.distinct_rows(torch.zeros(2, dtype=torch.int64)), r"packed must have shape \[R, W\]"),
    (lambda: ops.sign_sum(torch.randn(3, 3)), r"sign_sum: grads must be a sequence"),
    (lambda: ops.sign_sum([torch.randn(2), None]), r"sign_sum: grads\[1\] must be a Tensor"),
    (lambda: ops.sign_sum([torch.randn(2, 2), torch.tensor(1.0)]), r"grads\[1\] must have shape \[N, \.\.\.\]"),
    (lambda: ops.sign_sum([torch.ones(2, dtype=torch.int64)]), r"grads\[0\] must be float32"),
    (lambda: ops.channel_spectra([torch.randn(2, 2)], "eig"), r"kind must be 'corr' or 'cov'"),
    (lambda: ops.channel_spectra([], "eig"), r"kind must be 'corr' or 'cov'"),
    (lambda: ops.channel_spectra([torch.randn(2, 2), torch.randn(2, 2, 2)]), r"feats\[1\] must have shape \[C, P\]"),
    (lambda: ops.channel_spectra([torch.randn(2, 2), torch.randn(2, 2).double()]), r"feats\[1\] has dtype"),
    (lambda: ops.channel_spectra([torch.randn(2, 2), "x"]), r"feats\[1\] must be a Tensor"),
])
def test_bad_input_names_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_raw_ops_check_too():
    with pytest.raises(ValueError, match=r"channel_spectra: kind must be"):
        torch.ops.zcfast.channel_spectra([torch.randn(2, 2)], "x")
    with pytest.raises(ValueError, match=r"sign_sum: grads\[0\] must be float32"):
        torch.ops.zcfast.sign_sum([torch.ones(3, dtype=torch.int32)])


# ---- dispatcher / compile -------------------------------------------------------------------------

def test_opcheck_sign_ops():
    from torch.library import opcheck

    for dtype in (torch.float32, torch.float16, torch.float64):
        x = _signed((9, 70), dtype, seed=1)
        opcheck(torch.ops.zcfast.sign_pack.default, (x,))
        opcheck(torch.ops.zcfast.sign_pack.default, (x.t(),))
        opcheck(torch.ops.zcfast.sign_pattern_count.default, (x,))
        opcheck(torch.ops.zcfast.sign_sum.default, ([_signed((4, 3, 3), dtype), _signed((4, 0), dtype)],))
        feats = [torch.randn(3, 8).to(dtype), torch.randn(3, 8).to(dtype), torch.randn(5, 4).to(dtype)]
        for kind in ("corr", "cov"):
            opcheck(torch.ops.zcfast.channel_spectra.default, (feats, kind))
    opcheck(torch.ops.zcfast.distinct_rows.default, (ops.sign_pack(_signed((20, 130))),))


def test_fake_kernels_give_shapes_and_named_errors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        p = torch.ops.zcfast.sign_pack(torch.empty(5, 130))
        assert p.shape == (5, 3) and p.dtype == torch.int64
        assert torch.ops.zcfast.distinct_rows(p).shape == ()
        assert torch.ops.zcfast.sign_pattern_count(torch.empty(4, 2).half()).dtype == torch.int64
        s = torch.ops.zcfast.sign_sum([torch.empty(3, 4), torch.empty(3)])
        assert s.shape == (2,) and s.dtype == torch.float64
        sp = torch.ops.zcfast.channel_spectra([torch.empty(4, 9), torch.empty(2, 3)], "corr")
        assert [t.shape for t in sp] == [(4,), (2,)] and sp[0].dtype == torch.float64
        with pytest.raises(ValueError, match=r"feats\[1\] must have shape \[C, P\]"):
            torch.ops.zcfast.channel_spectra([torch.empty(4, 9), torch.empty(2)], "cov")
        with pytest.raises(ValueError, match=r"distinct_rows: packed must be int64"):
            torch.ops.zcfast.distinct_rows(torch.empty(2, 2))


def test_sign_ops_work_under_torch_compile():
    @torch.compile(backend="aot_eager", fullgraph=True)
    def f(x, g1, g2, feat):
        packed = torch.ops.zcfast.sign_pack(x)
        n = torch.ops.zcfast.distinct_rows(packed) + torch.ops.zcfast.sign_pattern_count(x.t())
        s = torch.ops.zcfast.sign_sum([g1, g2])
        (eig,) = torch.ops.zcfast.channel_spectra([feat], "corr")
        return packed, n, s * 2, eig[0]

    x, g1, g2 = _signed((6, 70), seed=2), _signed((5, 4), seed=3), _signed((5, 2, 2), seed=4)
    feat = torch.randn(4, 16, dtype=torch.float64)
    packed, n, s2, e0 = f(x, g1, g2, feat)
    assert torch.equal(packed, ref.sign_pack(x))
    assert int(n) == ref.distinct_rows(ref.sign_pack(x)) + ref.distinct_rows(ref.sign_pack(x.t()))
    assert torch.equal(s2, 2 * ref.sign_sum([g1, g2]))
    assert torch.allclose(e0, ref.channel_spectra([feat])[0][0], atol=1e-12)


# ---- CPU ISA copies and threads -------------------------------------------------------------------

_ISA_SCRIPT = """
import torch, zcfast.ops as ops
g = torch.Generator().manual_seed(0)
out = []
for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
    x = torch.randn(33, 200, generator=g).to(dtype)
    out += ops.sign_pack(x).flatten().tolist() + [ops.sign_pattern_count(x)]
    out += ops.sign_sum([x, x[:, :7]]).tolist()
print(repr(out))
"""


def test_cpu_isa_copies_agree():
    from zcfast.testing import outputs_under_each_cpu_isa

    results = outputs_under_each_cpu_isa(_ISA_SCRIPT)
    assert results[0] == results[1]


def test_results_do_not_depend_on_the_thread_count():
    x = _signed((4000, 80), seed=7)
    grads = [_signed((6, 20000), seed=8), _signed((3, 5000), seed=9)]
    feats = [torch.randn(16, 300, generator=torch.Generator().manual_seed(s)) for s in range(20)]
    before = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append((ops.sign_pack(x), ops.sign_pattern_count(x.t()), ops.sign_sum(grads),
                         torch.cat(ops.channel_spectra(feats, "cov"))))
    finally:
        torch.set_num_threads(before)
    a, b = runs
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and torch.equal(a[2], b[2])
    assert torch.allclose(a[3], b[3], rtol=1e-12, atol=1e-12)  # row passes fixed; BLAS may split


# ---- CUDA -----------------------------------------------------------------------------------------

@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_sign_ops_match_cpu(dtype):
    for length in LENGTHS:
        x = _signed((37, length), dtype, seed=length)
        got = ops.sign_pack(x.cuda())
        assert got.is_cuda and torch.equal(got.cpu(), ops.sign_pack(x))
        xt = _signed((length, 37), dtype, seed=length).t()
        assert torch.equal(ops.sign_pack(xt.cuda()).cpu(), ops.sign_pack(xt))
        assert ops.sign_pattern_count(x.cuda()) == ops.sign_pattern_count(x)
        assert ops.distinct_rows(ops.sign_pack(x).cuda()) == ops.distinct_rows(ops.sign_pack(x))
    shapes = [(8, 3, 3, 3), (5, 2047), (5, 2049), (3, 100000), (2,), (0, 4), (4, 0), (40000, 3)] * 50
    grads = [_signed(s, dtype, seed=i) for i, s in enumerate(shapes)]  # several launches
    got = ops.sign_sum([g.cuda() for g in grads])
    assert got.is_cuda and torch.equal(got.cpu(), ops.sign_sum(grads))


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["corr", "cov"])
def test_cuda_channel_spectra_match_cpu(kind):
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(s, generator=g, dtype=torch.float64)
             for s in [(4, 10), (4, 10), (3, 7), (64, 256), (1, 5), (0, 3), (2, 0)] * 100]
    feats[1][2] = 1.0
    got = ops.channel_spectra([f.cuda() for f in feats], kind)
    for x, y in zip(got, ops.channel_spectra(feats, kind)):
        assert x.is_cuda and torch.allclose(x.cpu(), y, rtol=1e-9, atol=1e-9)


@needs_cuda
@pytest.mark.cuda
def test_cuda_opcheck_sign_ops():
    from torch.library import opcheck

    x = _signed((9, 70), seed=1).cuda()
    opcheck(torch.ops.zcfast.sign_pack.default, (x,))
    opcheck(torch.ops.zcfast.sign_pattern_count.default, (x.t(),))
    opcheck(torch.ops.zcfast.distinct_rows.default, (ops.sign_pack(x),))
    opcheck(torch.ops.zcfast.sign_sum.default, ([_signed((4, 3, 3)).cuda()],))
    opcheck(torch.ops.zcfast.channel_spectra.default, ([torch.randn(3, 8, device="cuda")], "corr"))
