"""zcfast.formats.nb201 on REAL NATS-Bench files (tests/assets/NATS-tss-v1_0-3ffb9-simple: the three
architectures the NATS-Bench repository ships as its own test data), not files zcfast wrote.

The converted values must equal the shipped ground-truth table (zcfast/assets/nb201, from other
dumps of the same benchmark, rounded to 6 decimals): the 200-epoch test accuracy of each dataset
(NATS-Bench's "test": ori-test for cifar10, x-test for cifar100 and ImageNet16-120) and the
12-epoch cifar10-valid validation accuracy.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from zcfast.formats import nb201 as fmt
from zcfast.spaces import nb201

REAL = Path(__file__).resolve().parent / "assets" / "NATS-tss-v1_0-3ffb9-simple"
INDICES = (0, 11, 284)
#: converted column -> shipped column
SAME = {
    "cifar10_oritest_acc_hp200": "cifar10_test_nats",
    "cifar100_test_acc_hp200": "cifar100_test_nats",
    "imagenet16_120_test_acc_hp200": "imagenet16_120_test_nats",
    "cifar10valid_valid_acc_hp12": "cifar10valid_hp12_valacc_robot",
}


@pytest.fixture(scope="module")
def converted() -> tuple[dict[str, np.ndarray], dict]:
    return fmt.read_benchmark(REAL)


def test_real_files_match_the_shipped_table(converted: tuple[dict[str, np.ndarray], dict]) -> None:
    table, details = converted
    assert details["format"] == "nats-simple"
    assert details["evaluated"] == len(INDICES)
    shipped = nb201.table()
    assert list(table["arch_str"]) == list(shipped["arch_str"])  # benchmark order, all 15,625
    for col, ref in SAME.items():
        for i in INDICES:
            assert table[col][i] == pytest.approx(shipped[ref][i], abs=5e-7), (col, i)
    # the other 15,622 architectures have no file here: NaN, never a made-up value
    others = np.setdiff1d(np.arange(nb201.NUM_ARCHS), INDICES)
    assert np.isnan(table["cifar10_oritest_acc_hp200"][others]).all()


def test_paper_column_is_the_mean_of_the_cifar10_valid_seeds(converted) -> None:
    table, _ = converted
    for i in INDICES:
        seeds = [table[f"cifar10valid_oritest_acc_hp200_seed{s}"][i] for s in (777, 888, 999)]
        assert all(math.isfinite(v) for v in seeds)
        assert table["cifar10valid_oritest_acc_hp200"][i] == pytest.approx(np.mean(seeds), rel=1e-12)


def test_space_answers_the_paper_metric_from_the_real_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ZCFAST_CACHE", str(tmp_path / "cache"))
    sp = nb201.NB201Space(data_path=REAL)
    assert sp.has_metric("cifar10", "paper")
    arch = sp.arch_at(11)
    table, _ = fmt.read_benchmark(REAL)
    assert sp.ground_truth(arch, "cifar10", "paper") == pytest.approx(
        table["cifar10valid_oritest_acc_hp200"][11], rel=1e-12)
    # without the file, the shipped default is unchanged
    assert nb201.NB201Space().ground_truth(arch, "cifar10") == pytest.approx(91.583333, abs=5e-7)
