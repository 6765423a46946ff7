"""Shared test helpers for zcfast's tests (import from tests, not from library code).

- ``DEVICES``: ``["cpu"]`` plus ``"cuda"`` when the CUDA kernels are built *and* a GPU is visible.
- ``DTYPES``: the input dtypes every op accepts.
- ``CPU_CHUNK`` / ``CUDA_CHUNK``: the kernels' chunk sizes (mirrors of the constants in
  csrc/cpu/saliency_cpu.cpp and csrc/cuda/saliency_cuda.cu), for sizes around chunk boundaries.
- ``CUDA_MAX_TENSORS_PER_LAUNCH`` / ``CUDA_MAX_BLOCKS_PER_LAUNCH``: what one saliency launch holds on CUDA.
- ``boundary_sizes()``, ``make_tensor_list()``, ``saliency_tolerance()``, ``tiny_convnet()``.
- ``ModelSnapshot(model, *tensors).assert_unchanged()``: the caller's model (and RNG) is untouched.
"""
from __future__ import annotations

import os
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


def outputs_under_each_cpu_isa(script: str, timeout: float = 120.0) -> list[str]:
    """The stdout of ``python -c script`` run once per CPU kernel copy (``ZCFAST_CPU_ISA=0``: the
    portable loop, ``1``: the vectorised one), with this checkout first on ``PYTHONPATH``: a test
    asserts the copies print the same."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = []
    for isa in ("0", "1"):
        env = dict(os.environ, ZCFAST_CPU_ISA=isa, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              timeout=timeout, check=True)
        results.append(proc.stdout)
    return results


def committed_rows(store: str | os.PathLike[str]) -> int:
    """Rows committed in a result store's ``scores`` table, read through a read-only SQLite
    connection that never blocks or changes the writer (0 before the file or its tables exist)."""
    import sqlite3

    path = os.fspath(store)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM scores").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


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


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")


class ModelSnapshot:
    """Everything about a model (and the RNG) that a scoring call promises not to change.

    Taken at construction; :meth:`assert_unchanged` raises ``AssertionError`` naming the first
    difference. Per parameter and buffer (``named_parameters``/``named_buffers`` with
    duplicates): the tensor object, its values (bit-exact), storage pointer, ``_version``
    (an in-place write bumps it even when the values come back equal), dtype, device,
    ``requires_grad`` and ``.grad`` (None, or its values); per module: the ``training`` flag,
    the set of submodules and the keys of every hook dict; the CPU RNG state (and every CUDA
    device's when CUDA is initialised). Optional extra tensors (e.g. the inputs) are checked
    the same way. ``rng=False`` leaves the RNG out (a call with ``seed=None`` draws from it).
    """

    def __init__(self, model: nn.Module, *tensors: Tensor, rng: bool = True) -> None:
        self.model = model
        self.tensors = tensors
        self.rng = rng
        self._state = self._take()

    def _take(self) -> dict:
        def tensor_state(t: Tensor) -> tuple:
            grad = t.grad
            return (id(t), t.detach().clone(), t.data_ptr(), t._version, t.dtype, t.device, t.requires_grad,
                    None if grad is None else (id(grad), grad.detach().clone()))

        state: dict = {}
        for name, p in self.model.named_parameters(remove_duplicate=False):
            state[f"parameter {name}"] = tensor_state(p)
        for name, b in self.model.named_buffers(remove_duplicate=False):
            state[f"buffer {name}"] = tensor_state(b)
        for i, t in enumerate(self.tensors):
            state[f"tensor argument {i}"] = tensor_state(t)
        for name, m in self.model.named_modules(remove_duplicate=False):
            key = name or "<root>"
            state[f"module {key} training flag"] = m.training
            state[f"module {key} children"] = tuple((k, id(c)) for k, c in m._modules.items())
            for h in _HOOK_DICTS:
                d = getattr(m, h, None)
                if d is not None:
                    state[f"module {key} {h}"] = tuple(d.keys())
        if not self.rng:
            return state
        state["CPU RNG state"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["CUDA RNG states"] = tuple(torch.cuda.get_rng_state_all())
        return state

    def changes(self) -> list[str]:
        """What differs from the snapshot (empty when nothing changed)."""
        now = self._take()
        out = []
        for key in sorted(set(self._state) | set(now)):
            if key not in now or key not in self._state:
                out.append(f"{key}: {'added' if key in now else 'removed'}")
                continue
            a, b = self._state[key], now[key]
            if not _same(a, b):
                out.append(f"{key}: {_diff(a, b)}")
        return out

    def assert_unchanged(self, what: str = "the call") -> None:
        """Raise ``AssertionError`` listing every change since the snapshot."""
        changed = self.changes()
        if changed:
            raise AssertionError(f"{what} changed the model: " + "; ".join(changed[:8])
                                 + (f" (+{len(changed) - 8} more)" if len(changed) > 8 else ""))


_TENSOR_FIELDS = ("object", "values", "storage", "_version", "dtype", "device", "requires_grad", ".grad")


def _same(a: object, b: object) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype \
            and bool(torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                           and torch.equal(a.nan_to_num(), b.nan_to_num())))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _diff(a: object, b: object) -> str:
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) == len(_TENSOR_FIELDS):
        return ", ".join(f"{f} changed" for f, x, y in zip(_TENSOR_FIELDS, a, b) if not _same(x, y))
    return f"{a!r} -> {b!r}"[:200]
