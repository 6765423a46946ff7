"""The batched NB201 backend's synflow pass in float32 with a float64 fallback
(zcfast.batched._synflow_need): its value equals the float64 definition within
SYNFLOW_FP32_RTOL over many NB201 architectures (dead edges, zero-output cells, every op), and a
pass outside float32's safe range is recomputed in float64 (then bit-identical to it).

Kept small for CI: 16×16 inputs (synflow reads only the input's shape: an all-ones [1, 3, H, W]
batch), one at 32×32.
"""
from __future__ import annotations

import math
import random

import pytest
import torch

import zcfast
import zcfast.batched as batched
from zcfast.batched import SYNFLOW_FP32_RTOL, score_batch, synflow_precision

SPACE = zcfast.spaces.get("nb201")
SPECIAL = [
    ("none",) * 6,                                                     # nothing reaches the output
    ("skip_connect", "none", "none", "none", "none", "nor_conv_3x3"),  # cell output identically 0
    ("nor_conv_3x3",) * 6,                                             # beyond float32
    ("skip_connect",) * 6,
    ("avg_pool_3x3",) * 6,
    ("nor_conv_1x1", "nor_conv_3x3", "none", "nor_conv_3x3", "nor_conv_3x3", "none"),  # dead node 2
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # conftest.py


def _passes(monkeypatch) -> list[torch.dtype]:
    """Record the dtype of every synflow pass the backend runs."""
    seen: list[torch.dtype] = []
    real = batched._synflow_pass

    def spy(net, x, ctxs, dtype=torch.float64):
        seen.append(dtype)
        return real(net, x, ctxs, dtype)

    monkeypatch.setattr(batched, "_synflow_pass", spy)
    return seen


def _score(monkeypatch, archs, precision: str, hw: int = 16) -> list[dict]:
    monkeypatch.setenv("ZCFAST_BATCHED_SYNFLOW", precision)
    x = torch.zeros(2, 3, hw, hw)   # synflow reads only the shape
    y = torch.zeros(2, dtype=torch.long)
    return [r["synflow"] for r in score_batch(SPACE, archs, x, y, ["synflow"], seed=5, detailed=True)]


def _assert_equal_within(got, ref, rtol: float, what: str) -> None:
    assert (got.error is None) == (ref.error is None), (what, got.error, ref.error)
    if ref.value == 0.0:
        assert got.value == 0.0, (what, got.value)
        return
    assert math.isfinite(ref.value), (what, ref.value)
    assert abs(got.value - ref.value) <= rtol * abs(ref.value), (what, got.value, ref.value)
    assert abs(got.log_value - ref.log_value) <= rtol, (what, got.log_value, ref.log_value)
    # per layer (where the backend keeps it): within the same tolerance of the total
    assert (got.per_layer is None) == (ref.per_layer is None)
    if got.per_layer is None:
        return
    diff = (got.per_layer.double() - ref.per_layer.double()).abs().max().item()
    assert diff <= rtol * abs(ref.value), (what, diff)


def test_float32_pass_equals_float64_over_many_archs(monkeypatch) -> None:
    rng = random.Random(0)
    archs = SPECIAL + [SPACE.sample(rng) for _ in range(34)]
    seen = _passes(monkeypatch)
    fast = _score(monkeypatch, archs, "auto")
    # every chunk (K = 1 on CPU) tries float32; the all-convolution cell's value (~1e39 here)
    # is beyond float32, so it, and only the few largest, rerun in float64
    assert seen.count(torch.float32) == len(archs)
    assert 1 <= seen.count(torch.float64) <= 3
    seen.clear()
    exact = _score(monkeypatch, archs, "float64")
    assert seen and all(d == torch.float64 for d in seen)
    for a, g, r in zip(archs, fast, exact):
        _assert_equal_within(g, r, SYNFLOW_FP32_RTOL, str(a))
    assert fast[0].value == 0.0 and fast[1].value == 0.0          # zero cells: exactly 0, as float64


def test_float32_pass_at_32x32(monkeypatch) -> None:
    archs = [SPECIAL[2], SPACE.sample(random.Random(3))]
    for g, r in zip(_score(monkeypatch, archs, "auto", 32), _score(monkeypatch, archs, "float64", 32)):
        _assert_equal_within(g, r, SYNFLOW_FP32_RTOL, "32x32")


def test_out_of_range_falls_back_to_float64_exactly(monkeypatch) -> None:
    archs = [SPECIAL[2], SPECIAL[5]]
    exact = _score(monkeypatch, archs, "float64")
    # a bound every real pass exceeds: each chunk runs float32, is refused, reruns in float64
    monkeypatch.setattr(batched, "SYNFLOW_FP32_MAX", 1.0)
    seen = _passes(monkeypatch)
    got = _score(monkeypatch, archs, "auto")
    assert seen == [torch.float32, torch.float64] * len(archs)
    for g, r in zip(got, exact):
        assert g.value == r.value and g.log_value == r.log_value and g.error == r.error


def test_overflow_in_float32_is_caught() -> None:
    ok = batched._synflow_fp32_ok
    finite = [[torch.ones(3)]]
    assert ok(torch.ones(1, 1, 10), finite)
    assert not ok(torch.full((1, 1, 10), float("inf")), finite)
    assert not ok(torch.ones(1, 1, 10), [[torch.tensor([1.0, float("inf")])]])
    assert not ok(torch.ones(1, 1, 10), [[torch.tensor([float("nan")])]])
    assert not ok(torch.ones(1, 1, 10), [[torch.ones(3), torch.tensor([float("nan")])]])  # NaN after a finite tensor
    assert not ok(torch.ones(1, 1, 10), [[torch.tensor([1e37])]])      # within 1 % of float32's max
    assert not ok(torch.ones(1, 1, 10), [[torch.tensor([1e-30, 0.0])]])  # near underflow
    assert ok(torch.ones(1, 1, 10), [[torch.zeros(4), None]])           # no path: exactly 0
    # where the norm bounds (max|g| <= ||g||_2, ||g||_2 / sqrt(numel) <= max|g|) leave the
    # decision open, the exact maximum decides: both of these are inside the safe range
    assert ok(torch.ones(1, 1, 10), [[torch.full((100,), 1e36)]])        # ||g||_2 = 1e37
    tiny = torch.zeros(10_000)
    tiny[7] = 1e-19                                                      # ||g||_2 / 100 = 1e-21
    assert ok(torch.ones(1, 1, 10), [[tiny]])
    assert not ok(torch.ones(1, 1, 10), [[torch.full((100,), 1e36), torch.tensor([1e37])]])
    # float64 copies (as the pass hands them over) decide the same
    assert not ok(torch.ones(1, 1, 10), [[torch.tensor([1e-30, 0.0], dtype=torch.float64)]])
    assert ok(torch.ones(1, 1, 10), [[torch.ones(3, dtype=torch.float64)], [None]])


def test_bad_precision_setting(monkeypatch) -> None:
    monkeypatch.setenv("ZCFAST_BATCHED_SYNFLOW", "float16")
    with pytest.raises(ValueError, match="ZCFAST_BATCHED_SYNFLOW must be 'auto' or 'float64'"):
        synflow_precision()
    monkeypatch.delenv("ZCFAST_BATCHED_SYNFLOW")
    assert synflow_precision() == "auto"
