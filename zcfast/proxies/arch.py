"""Compatibility: the names that lived here now live in :mod:`zcfast.scoring` (routing, seeded
builds) and :mod:`zcfast.seeding` (seeds). Nothing in zcfast imports this module."""
from __future__ import annotations

from zcfast.scoring import build_seeded, check_space_variant, score_arch, synflow_bn_rule
from zcfast.seeding import arch_seed, bias_seed

__all__ = ["arch_seed", "bias_seed", "build_seeded", "check_space_variant", "score_arch", "synflow_bn_rule"]
