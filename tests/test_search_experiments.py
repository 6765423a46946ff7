"""The factor table of bench/search_experiments.py on hand-made curves."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "bench", "search_experiments.py")


@pytest.fixture(scope="module")
def exp():
    spec = importlib.util.spec_from_file_location("search_experiments", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_first_reach(exp) -> None:
    curve = np.array([90.0, 91.0, 91.0, 93.0, 94.0])
    assert exp.first_reach(curve, 91.0) == 2
    assert exp.first_reach(curve, 93.5) == 5
    assert exp.first_reach(curve, 95.0) is None


def test_factor_rows(exp) -> None:
    # baseline reaches its final mean (93) at 4 trained archs; the variant at 2 -> factor 2
    base = [[90, 91, 92, 93, 93], [90, 91, 92, 93, 93]]
    warm = [[92, 93, 93, 93, 94], [92, 93, 93, 93, 94]]
    slow = [[80, 81, 82, 83, 84], [80, 81, 82, 83, 84]]
    doc = {"variants": {
        "random": {"family": "random", "budget": 5, "curves": base, "stalled": [False, False]},
        "random + warmup": {"family": "random", "budget": 5, "curves": warm, "stalled": [False, True]},
        "evolution": {"family": "evolution", "budget": 5, "curves": base, "stalled": [False, False]},
        "evolution + move": {"family": "evolution", "budget": 5, "curves": slow, "stalled": [False, False]},
    }}
    rows = {r["variant"]: r for r in exp.factor_rows(doc)}
    assert rows["random"]["n_baseline"] == 4 and rows["random"]["factor"] == 1.0
    assert rows["random + warmup"]["n_to_target"] == 2 and rows["random + warmup"]["factor"] == 2.0
    assert rows["random + warmup"]["stalled"] == 1
    assert rows["evolution + move"]["n_to_target"] is None and rows["evolution + move"]["factor"] is None
    assert rows["random + warmup"]["final_mean"] == 94.0
