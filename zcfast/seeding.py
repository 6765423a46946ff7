"""Per-architecture seeds (design.md §5): the one definition, below every module that seeds.

A network's initial weights depend only on (seed, architecture key), never on the order in
which architectures are scored. :mod:`zcfast.data` draws per-architecture batches with the same
hash (tagged ``batch:``), so this module imports nothing of zcfast.
"""
from __future__ import annotations

import hashlib

__all__ = ["arch_seed", "bias_seed"]


def arch_seed(seed: int, key: str) -> int:
    """The seed of one architecture's initial weights: depends only on (seed, key).

    ``int.from_bytes(sha256(f"{seed}:{key}").digest()[:8], "little") & (2**63 - 1)``.

    Raises:
        ValueError: ``seed`` not an int or ``key`` not a str.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not isinstance(key, str):
        raise ValueError(f"key must be a str, got {type(key).__name__}")
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def bias_seed(seed: int, key: str) -> int:
    """Seed of the generator that draws an ``official`` NB201 network's cell conv biases.

    ``arch_seed(seed, "conv_bias:" + key)``: independent of the weights' stream
    (``arch_seed(seed, key)``), so the variant's weights equal the benchmark network's.
    """
    return arch_seed(seed, "conv_bias:" + key)
