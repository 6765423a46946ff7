"""Shared test helpers for zcfast's tests (import from tests, not from library code).

- ``DEVICES``: ``["cpu"]`` plus ``"cuda"`` when the CUDA kernels are built *and* a GPU is visible.
- ``DTYPES``: the input dtypes every op accepts.
- ``CPU_CHUNK`` / ``CUDA_CHUNK``: the kernels' chunk sizes (mirrors of the constants in
  csrc/cpu/saliency_cpu.cpp and csrc/cuda/saliency_cuda.cu), for sizes around chunk boundaries.
- ``CUDA_MAX_TENSORS_PER_LAUNCH`` / ``CUDA_MAX_BLOCKS_PER_LAUNCH``: what one saliency launch holds on CUDA.
- ``boundary_sizes()``, ``make_tensor_list()``, ``saliency_tolerance()``, ``tiny_convnet()``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
CPU_CHUNK = 1 << 15
CUDA_CHUNK = 1 << 16
CUDA_MAX_TENSORS_PER_LAUNCH = 320
CUDA_MAX_BLOCKS_PER_LAUNCH = 1280


def cuda_usable() -> bool:
    """True when zcfast's CUDA kernels are built and a GPU is visible."""
    try:
        import zcfast.ops as ops
    except ImportError:
        return False
    return ops.has_cuda() and torch.cuda.is_available()


DEVICES: tuple[str, ...] = ("cpu", "cuda") if cuda_usable() else ("cpu",)


def boundary_sizes(chunk: int) -> list[int]:
    """Sizes that straddle the chunking: 1, odd small, chunk±1, chunk, 2·chunk+7."""
    return [1, 7, 33, chunk - 1, chunk, chunk + 1, 2 * chunk + 7]


def make_tensor_list(shapes: Sequence[Sequence[int]], dtype: torch.dtype = torch.float32,
                     device: str | torch.device = "cpu", seed: int = 0) -> list[Tensor]:
    """Seeded standard-normal tensors of the given shapes (values exactly representable in dtype)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(tuple(s), generator=gen, dtype=torch.float32).to(dtype).to(device)
            for s in shapes]


def saliency_tolerance(params: Sequence[Tensor], grads: Sequence[Tensor], kind: str,
                       acc: torch.dtype) -> Tensor:
    """Per-tensor absolute tolerance for a fused sum against the float64 reference.

    A float32 (float64) accumulation of n terms errs by at most about n·eps·Σ|term|; the kernels
    sum in short runs and lanes, so 64·eps·Σ|term| (+ a tiny floor) is a safe, still tight bound.
    The per-element products of float16/bfloat16/float32 inputs are exact in the accumulator
    (or rounded once), so the same bound holds for every input dtype.
    """
    eps = torch.finfo(acc).eps
    bounds = []
    for p, g in zip(params, grads):
        p64, g64 = p.double(), g.double()
        if kind in ("abs_prod", "prod"):
            mag = (p64 * g64).abs().sum()
        elif kind == "grad_norm":
            mag = (g64 * g64).sum().sqrt()
        else:
            mag = (p64 * p64).sum()
        bounds.append(64 * eps * mag + 1e-30)
    return torch.stack(bounds) if bounds else torch.zeros(0, dtype=torch.float64)


def tiny_convnet(seed: int = 0, channels: int = 8, num_classes: int = 10) -> nn.Module:
    """A seeded 2-conv network with BatchNorm and a linear head, for [N, 3, H, W] inputs."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes),
    )


def live_tensor_count() -> int:
    """Number of ``torch.Tensor`` objects the garbage collector tracks (call ``gc.collect()``
    first): a leak test compares it before and after many scoring calls."""
    import gc

    n = 0
    for o in gc.get_objects():
        try:
            n += isinstance(o, torch.Tensor)
        except Exception:  # noqa: BLE001  (lazy module proxies can raise on isinstance)
            pass
    return n
