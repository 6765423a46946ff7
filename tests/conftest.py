"""Shared pytest fixtures for zcfast."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same RNG state, so failures reproduce."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Single-threaded torch for a test module: tiny forwards stall on OpenMP barriers on a
    shared, loaded CPU. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def nb201_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded batch at ImageNet16-120's size for NB201 networks: x [8, 3, 16, 16] float32
    (standard normal), y [8] int64 labels in [0, 10). The same tensors in every module."""
    g = torch.Generator().manual_seed(7)
    return torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
