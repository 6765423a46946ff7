"""NAS-Bench-201 / NATS-Bench benchmark files: the official layouts, written here from the shipped
table's values, read back exactly; foreign, damaged and wrong files refused with clear errors."""
from __future__ import annotations

import bz2
import importlib.util
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from zcfast import safe_pickle
from zcfast.formats import nb201 as fmt
from zcfast.spaces import nb201
from zcfast.spaces.nb201 import NB201Space

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = nb201.table()
IDX = (0, 11, 284, 7000, 15624)
ABSENT = 1  # an architecture no file below has


def _entry(i: int) -> dict:
    """One architecture whose final-epoch values are the shipped table's (others derived)."""
    c10 = float(T["cifar10_test_nats"][i])
    val = float(T["cifar10_val_nbsuitezero"][i])
    return {"index": i, "arch_str": T["arch_str"][i], "runs": [
        {"dataset": "cifar10", "hp": 200, "seed": 777, "acc": {"train": 99.5, "ori-test": c10},
         "loss": {"train": 0.02, "ori-test": 0.3}, "params": 1.5 + i / 1e5, "flops": 200.0 + i,
         "latency": 0.01 + i / 1e7, "epoch_time": 10.0 + i / 1e4},
        # two seeds of cifar10-valid: ori-test = the shipped robot column -/+ 0.5, mean is it
        {"dataset": "cifar10-valid", "hp": 200, "seed": 777,
         "acc": {"train": 98.0, "x-valid": val, "ori-test": float(T["cifar10_test_robot"][i]) - 0.5},
         "params": 1.5 + i / 1e5, "flops": 200.0 + i, "epoch_time": 6.0},
        {"dataset": "cifar10-valid", "hp": 200, "seed": 888,
         "acc": {"train": 97.0, "x-valid": val, "ori-test": float(T["cifar10_test_robot"][i]) + 0.5},
         "params": 1.5 + i / 1e5, "flops": 200.0 + i, "epoch_time": 8.0},
        {"dataset": "cifar100", "hp": 200, "seed": 777,
         "acc": {"train": 80.0, "x-valid": 60.0, "x-test": float(T["cifar100_test_nats"][i]), "ori-test": 61.0}},
        {"dataset": "ImageNet16-120", "hp": 200, "seed": 888,
         "acc": {"train": 40.0, "x-valid": 30.0, "x-test": float(T["imagenet16_120_test_nats"][i]),
                 "ori-test": 31.0}},
        {"dataset": "cifar10-valid", "hp": 12, "seed": 111,
         "acc": {"train": 70.0, "x-valid": float(T["cifar10valid_hp12_valacc_robot"][i]), "ori-test": 69.0},
         "epoch_time": float(T["cifar10valid_hp12_cost_robot"][i]) / 12},
    ]}


ENTRIES = [_entry(i) for i in IDX]


def _check_values(t: dict[str, np.ndarray]) -> None:
    """The table holds exactly the written values (NaN for what was not written)."""
    assert list(t)[:2] == ["index", "arch_str"]
    assert np.array_equal(t["index"], np.arange(nb201.NUM_ARCHS))
    assert np.array_equal(t["arch_str"], T["arch_str"])
    i = list(IDX)
    assert t["cifar10_oritest_acc_hp200"][i].tolist() == T["cifar10_test_nats"][i].tolist()
    assert t["cifar10_oritest_acc_hp200_seed777"][i].tolist() == T["cifar10_test_nats"][i].tolist()
    assert t["cifar100_test_acc_hp200"][i].tolist() == T["cifar100_test_nats"][i].tolist()
    assert t["imagenet16_120_test_acc_hp200_seed888"][i].tolist() == T["imagenet16_120_test_nats"][i].tolist()
    assert t["cifar10valid_valid_acc_hp12"][i].tolist() == T["cifar10valid_hp12_valacc_robot"][i].tolist()
    assert t["cifar10valid_valid_acc_hp200"][i].tolist() == T["cifar10_val_nbsuitezero"][i].tolist()
    # the paper's column: mean of the two seeds (x - 0.5, x + 0.5), each seed kept
    lo, hi = T["cifar10_test_robot"][i] - 0.5, T["cifar10_test_robot"][i] + 0.5
    assert t["cifar10valid_oritest_acc_hp200_seed777"][i].tolist() == lo.tolist()
    assert t["cifar10valid_oritest_acc_hp200_seed888"][i].tolist() == hi.tolist()
    np.testing.assert_allclose(t["cifar10valid_oritest_acc_hp200"][i], (lo + hi) / 2, rtol=1e-15)
    assert t["cifar10valid_train_acc_hp200"][i].tolist() == [97.5] * len(i)
    # costs: params / flops as written, latency, total / per-epoch training time
    assert t["cifar10_params_hp200"][i].tolist() == [1.5 + k / 1e5 for k in i]
    assert t["cifar10_flops_hp200"][i].tolist() == [200.0 + k for k in i]
    assert t["cifar10_latency_hp200"][i].tolist() == [0.01 + k / 1e7 for k in i]
    np.testing.assert_allclose(t["cifar10_epoch_time_hp200"][i], [10.0 + k / 1e4 for k in i], rtol=1e-12)
    np.testing.assert_allclose(t["cifar10valid_train_time_hp200"][i], [1400.0] * len(i), rtol=1e-12)
    np.testing.assert_allclose(t["cifar10valid_train_time_hp12"][i], T["cifar10valid_hp12_cost_robot"][i],
                               rtol=1e-12)
    assert t["cifar10_oritest_loss_hp200"][i].tolist() == [0.3] * len(i)
    # absent: an architecture without results, a loss never written, a run without latency
    others = np.setdiff1d(np.arange(nb201.NUM_ARCHS), i)
    for name, col in t.items():
        if name not in ("index", "arch_str"):
            assert col.dtype == np.float64
            assert np.isnan(col[others]).all(), name
    assert np.isnan(t["cifar100_test_loss_hp200"][i]).all()
    assert "cifar100_latency_hp200" not in t and "cifar10_oritest_acc_hp12" not in t
    assert "cifar10valid_test_acc_hp200" not in t  # cifar10-valid has no x-test split


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("nb201")
    return {"v1_0": fmt.write_pth(d / "NAS-Bench-201-v1_0-e61699.pth", ENTRIES, "v1_0"),
            "v1_1": fmt.write_pth(d / "NAS-Bench-201-v1_1-096897.pth", ENTRIES, "v1_1"),
            "nats": fmt.write_nats_simple(d / "NATS-tss-v1_0-3ffb9-simple", ENTRIES)}


@pytest.mark.parametrize("kind", ["v1_0", "v1_1", "nats"])
def test_each_format_reads_back_exactly(files, kind) -> None:
    table, details = fmt.read_benchmark(files[kind])
    _check_values(table)
    assert details["evaluated"] == len(IDX)
    assert details["datasets"] == ["cifar10-valid", "cifar10", "cifar100", "ImageNet16-120"]
    assert details["hps"] == [12, 200]
    assert details["seeds"]["cifar10-valid@hp200"] == [777, 888]
    assert details["format"] == {"v1_0": "pth", "v1_1": "pth", "nats": "nats-simple"}[kind]


def test_containers_are_the_official_ones(files) -> None:
    assert not zipfile.is_zipfile(files["v1_0"])  # torch's legacy container, as the 2020 file
    assert zipfile.is_zipfile(files["v1_1"])
    names = sorted(p.name for p in files["nats"].iterdir())
    assert names == sorted([f"{i:06d}.pickle.pbz2" for i in IDX] + ["meta.pickle.pbz2"])
    # the official loaders' view of them (torch.load on our own, trusted file; bz2 + pickle)
    obj = torch.load(files["v1_0"], weights_only=False)
    assert set(obj) >= {"meta_archs", "arch2infos", "evaluated_indexes"}
    assert set(obj["arch2infos"][11]) == {"less", "full"}
    with bz2.open(files["nats"] / "000011.pickle.pbz2") as fh:
        assert list(pickle.load(fh)) == ["12", "200"]


def test_nats_single_file_and_unpadded_names(files, tmp_path, capsys) -> None:
    """NATS-Bench's single-file form (``NATS-tss-v1_0-3ffb9.pickle.pbz2``: the .pth's dict with hp
    keys) and per-architecture files named without zero padding (``11.pickle.pbz2``)."""
    arch2infos = {}
    for i in IDX:
        with bz2.open(files["nats"] / f"{i:06d}.pickle.pbz2") as fh:
            arch2infos[i] = pickle.load(fh)  # our own file
    single = tmp_path / "NATS-tss-v1_0-3ffb9.pickle.pbz2"
    with bz2.open(single, "wb") as fh:
        pickle.dump({"meta_archs": list(T["arch_str"]), "arch2infos": arch2infos,
                     "evaluated_indexes": set(IDX)}, fh, protocol=4)
    res = fmt.import_file(single, cache=tmp_path / "cache", progress=True)
    assert res.details["format"] == "nats-file" and "import nb201" in capsys.readouterr().err
    _check_values(fmt.load_table(single, cache=tmp_path / "cache"))
    folder = fmt.write_nats_simple(tmp_path / "unpadded-simple", ENTRIES)
    (folder / "000011.pickle.pbz2").rename(folder / "11.pickle.pbz2")
    _check_values(fmt.read_benchmark(folder)[0])


def test_v1_0_less_is_cifar10_valid_only(tmp_path) -> None:
    bad = {"index": 3, "runs": [{"dataset": "cifar100", "hp": 12, "seed": 111, "acc": {"train": 1.0}}]}
    with pytest.raises(ValueError, match="cifar10-valid"):
        fmt.write_pth(tmp_path / "x.pth", [bad], "v1_0")
    fmt.write_pth(tmp_path / "y.pth", [bad], "v1_1")


def test_cache_written_once_and_reused(files, tmp_path) -> None:
    cache = tmp_path / "cache"
    first = fmt.import_file(files["nats"], cache=cache, progress=False)
    assert not first.cached and Path(first.table).parent == cache
    assert first.table == str(fmt.cached_path("nb201", files["nats"], ".csv.gz", cache))
    assert first.details["evaluated"] == len(IDX)
    mtime = os.stat(first.table).st_mtime_ns
    again = fmt.import_file(files["nats"], cache=cache, progress=False)
    assert again.cached and again.table == first.table and os.stat(first.table).st_mtime_ns == mtime
    assert [p.name for p in cache.iterdir()] == [Path(first.table).name]  # no temporary left
    loaded = fmt.load_table(files["nats"], cache=cache)
    _check_values(loaded)
    direct, _ = fmt.read_benchmark(files["v1_1"])
    assert list(loaded) == list(direct)
    for name in direct:
        if name != "arch_str":
            np.testing.assert_array_equal(loaded[name], direct[name])  # repr floats round-trip
    assert fmt.import_file(files["nats"], cache=cache, progress=False, force=True).cached is False
    assert "reused" in again.summary() and "15,625 architectures" in again.summary()


# ---------------------------------------------------------------------------------------------
# refused inputs
# ---------------------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_foreign_pickle_never_runs(files, tmp_path) -> None:
    marker = tmp_path / "ran"
    # a NATS folder whose architecture file is a payload
    evil = fmt.write_nats_simple(tmp_path / "evil-simple", ENTRIES[:1])
    with bz2.open(evil / "000000.pickle.pbz2", "wb") as fh:
        pickle.dump({"12": _Payload(marker)}, fh, protocol=4)
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"os\.system|posix\.system"):
        fmt.read_benchmark(evil)
    # .pth in both torch containers
    for z in (True, False):
        p = tmp_path / f"evil{z}.pth"
        torch.save({"meta_archs": [], "x": _Payload(marker)}, p, _use_new_zipfile_serialization=z)
        with pytest.raises(safe_pickle.UnsafePickleError, match="system"):
            fmt.read_benchmark(p)
    # the meta file too
    meta_evil = fmt.write_nats_simple(tmp_path / "evil2-simple", ENTRIES[:1])
    with bz2.open(meta_evil / "meta.pickle.pbz2", "wb") as fh:
        pickle.dump(_Payload(marker), fh)
    with pytest.raises(safe_pickle.UnsafePickleError):
        fmt.import_file(meta_evil, cache=tmp_path / "c", progress=False)
    assert not marker.exists()
    assert not (tmp_path / "c").exists()  # nothing written for a refused source


def test_tensors_are_refused(tmp_path) -> None:
    p = tmp_path / "weights.pth"
    torch.save({"meta_archs": [], "w": torch.zeros(3)}, p)
    with pytest.raises(safe_pickle.UnsafePickleError, match="tensor"):
        fmt.read_benchmark(p)
    full = fmt.write_nats_simple(tmp_path / "NATS-tss-v1_0-3ffb9-full", ENTRIES[:1])
    with bz2.open(full / "000000.pickle.pbz2", "wb") as fh:  # a '-full' file: weights pickled in
        pickle.dump({"200": {"net_state_dict": {"w": torch.zeros(2)}}}, fh, protocol=4)
    with pytest.raises(safe_pickle.UnsafePickleError, match="-simple"):
        fmt.read_benchmark(full)


def test_truncated_and_corrupt_files(files, tmp_path) -> None:
    for kind in ("v1_0", "v1_1"):
        data = files[kind].read_bytes()
        cut = tmp_path / f"cut_{kind}.pth"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match=str(cut.name)):
            fmt.read_benchmark(cut)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00\x01not a torch file" * 100)
    with pytest.raises(ValueError, match="not a torch.save file"):
        fmt.read_benchmark(junk)
    folder = fmt.write_nats_simple(tmp_path / "cut-simple", ENTRIES[:2])
    arch = folder / "000011.pickle.pbz2"
    arch.write_bytes(arch.read_bytes()[:-200])
    with pytest.raises(ValueError, match=r"000011\.pickle\.pbz2.*(truncated|corrupt)"):
        fmt.read_benchmark(folder)
    arch.write_bytes(b"BZh9" + b"\x00" * 64)
    with pytest.raises(ValueError, match=r"000011\.pickle\.pbz2"):
        fmt.read_benchmark(folder)
    with pytest.raises(FileNotFoundError, match="gone"):
        fmt.read_benchmark(tmp_path / "gone.pth")
    with pytest.raises(FileNotFoundError, match="meta.pickle.pbz2"):
        fmt.read_benchmark(tmp_path)


def test_wrong_layouts(tmp_path) -> None:
    p = tmp_path / "list.pth"
    torch.save([1, 2, 3], p)
    with pytest.raises(ValueError, match="layout"):
        fmt.read_benchmark(p)
    torch.save({"meta_archs": ["|a~0|"] * 32768, "arch2infos": {}}, p)
    with pytest.raises(ValueError, match="size search space"):
        fmt.read_benchmark(p)
    meta = list(T["arch_str"])
    torch.save({"meta_archs": meta, "arch2infos": {5: {"full": {"arch_str": meta[6]}}}}, p)
    with pytest.raises(ValueError, match=r"differs from meta_archs\[5\]"):
        fmt.read_benchmark(p)
    torch.save({"meta_archs": meta, "arch2infos": {5: {"full": {"arch_str": meta[5]}}}}, p)
    with pytest.raises(ValueError, match="not an ArchResults state dict"):
        fmt.read_benchmark(p)
    torch.save({"meta_archs": meta, "arch2infos": {5: {"full": {"arch_str": meta[5], "dataset_seed": {"svhn": [1]},
                                                                  "all_results": {}}}}}, p)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        fmt.read_benchmark(p)
    torch.save({"meta_archs": meta, "arch2infos": {5: {"full": {
        "arch_str": meta[5], "dataset_seed": {"cifar10": [777]}, "all_results": {("cifar10", 777): {"epochs": 3}}}}}}, p)
    with pytest.raises(ValueError, match="ResultsCount layout"):
        fmt.read_benchmark(p)
    folder = fmt.write_nats_simple(tmp_path / "x-simple", ENTRIES[:1])
    with bz2.open(folder / "000000.pickle.pbz2", "wb") as fh:
        pickle.dump([1, 2], fh)
    with pytest.raises(ValueError, match="expected a dict hp"):
        fmt.read_benchmark(folder)


# ---------------------------------------------------------------------------------------------
# the space with a benchmark file
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def cache_env(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ZCFAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(nb201.ENV_PATH, raising=False)
    monkeypatch.setattr(nb201, "_BENCH", {})  # the process-wide table cache starts empty
    return tmp_path / "cache"


def test_space_reads_the_benchmark_file(files, cache_env) -> None:
    sp = NB201Space(files["v1_0"])
    for i in IDX:
        a = sp.arch_at(i)
        lo, hi = T["cifar10_test_robot"][i] - 0.5, T["cifar10_test_robot"][i] + 0.5
        assert sp.ground_truth(a, "cifar10", "paper") == pytest.approx((lo + hi) / 2, rel=1e-15)
        assert sp.ground_truth(a, "cifar100", "paper") == T["cifar100_test_nats"][i]
        assert sp.ground_truth(a, "ImageNet16-120", "paper") == T["imagenet16_120_test_nats"][i]
        assert sp.ground_truth(a, "cifar10", "test_hp200") == T["cifar10_test_nats"][i]
        assert sp.ground_truth(a, "cifar10", "valid_hp12") == T["cifar10valid_hp12_valacc_robot"][i]
        assert sp.ground_truth(a, "cifar10", "paper_valid") == T["cifar10_val_nbsuitezero"][i]
        assert sp.ground_truth(a, "cifar10", "cifar10valid_oritest_acc_hp200_seed888") == hi
        assert sp.ground_truth(a, "cifar100", "cifar10_flops_hp200") == 200.0 + i  # raw: any dataset
        # shipped metrics are untouched by the file
        assert sp.ground_truth(a, "cifar10", "test") == T["cifar10_test_nats"][i]
        assert sp.ground_truth(a, "cifar10", "valid") == T["cifar10_val_nbsuitezero"][i]
    assert np.isnan(sp.ground_truth(sp.arch_at(ABSENT), "cifar10", "paper"))
    assert sp.column_for("cifar10", "paper") == "cifar10valid_oritest_acc_hp200"
    assert sp.column_for("cifar10", "test") == "cifar10_test_nats"
    assert sp.has_metric("cifar10", "paper") and sp.has_metric("cifar10", "test")
    assert not sp.has_metric("cifar100", "test_hp12")  # v1.0: 12 epochs on cifar10-valid only
    with pytest.raises(ValueError, match="cifar10-valid only"):
        sp.ground_truth(sp.arch_at(0), "cifar100", "test_hp12")
    with pytest.raises(ValueError, match="unknown metric 'nope'.*benchmark file"):
        sp.ground_truth(sp.arch_at(0), "cifar10", "nope")
    assert sp.ground_truth_problem("cifar10") is None and sp.ground_truth_problem("svhn") is not None
    assert len(list(cache_env.iterdir())) == 1  # converted once into the cache


def test_every_file_metric_reads_a_column_the_converter_writes(files) -> None:
    """spaces.nb201.file_column names its columns with formats.nb201.column_name (one naming
    scheme): every 200-epoch benchmark-file metric of every dataset is a column of a converted
    file, with the entries' values; the fixture has 12-epoch results on cifar10-valid only."""
    table, _ = fmt.read_benchmark(files["v1_1"])
    for d in ("cifar10", "cifar100", "imagenet16_120"):
        for metric, (view, epochs) in nb201.FILE_METRICS.items():
            col = nb201.file_column(d, metric)
            assert col == fmt.column_name(*nb201.VIEWS[d][view], epochs)
            if epochs == 200:
                assert col in table and np.isfinite(table[col][list(IDX)]).all(), (d, metric, col)
    assert nb201.file_column("cifar10", "valid_hp12") in table


def test_space_without_a_file_is_unchanged(files, cache_env) -> None:
    sp = NB201Space()
    a = sp.arch_at(11)
    assert sp.data_path is None and sp.benchmark_table() is None
    assert sp.ground_truth(a, "cifar10") == T["cifar10_test_nats"][11]
    assert sp.column_for("cifar10", "valid") == nb201.column_for("cifar10", "valid")
    assert not sp.has_metric("cifar10", "paper") and sp.has_metric("cifar10", "valid")
    for metric in ("paper", "test_hp200", "cifar10valid_oritest_acc_hp200"):
        with pytest.raises(ValueError, match=r"needs a benchmark file \(NAS-Bench-201-v1_0-e61699\.pth"):
            sp.ground_truth(a, "cifar10", metric)
        with pytest.raises(ValueError, match="ZCFAST_NB201_PATH"):
            nb201.column_for("cifar10", metric)
    assert not cache_env.exists()


def test_space_path_options_and_pickling(files, cache_env, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(nb201.ENV_PATH, str(files["nats"]))
    sp = NB201Space()
    assert sp.data_path == str(files["nats"])
    assert sp.ground_truth(sp.arch_at(0), "cifar100", "paper") == T["cifar100_test_nats"][0]
    clone = pickle.loads(pickle.dumps(sp))
    assert clone.__getstate__() == {"_data_path": None} and clone._bench is None  # the path only
    assert len(pickle.dumps(sp)) < 300
    monkeypatch.delenv(nb201.ENV_PATH)
    own = NB201Space()
    own.set_data_path(files["v1_1"])
    back = pickle.loads(pickle.dumps(own))
    assert back.data_path == str(files["v1_1"])
    assert back.ground_truth(back.arch_at(7000), "cifar10", "test_hp200") == T["cifar10_test_nats"][7000]
    own.set_data_path(None)
    assert own.data_path is None
    gone = NB201Space(tmp_path / "missing.pth")
    assert "does not exist" in gone.ground_truth_problem("cifar10")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        gone.ground_truth(gone.arch_at(0), "cifar10", "paper")


def test_space_refuses_a_file_in_another_order(cache_env, tmp_path) -> None:
    meta = list(T["arch_str"])
    meta[3], meta[4] = meta[4], meta[3]
    p = fmt.write_pth(tmp_path / "shuffled.pth", ENTRIES[:1], "v1_1", meta_archs=meta)
    sp = NB201Space(p)
    with pytest.raises(ValueError, match="not NAS-Bench-201 in benchmark order: architecture 3"):
        sp.ground_truth(sp.arch_at(0), "cifar10", "paper")
    with pytest.raises(ValueError, match="benchmark order"):
        sp.has_metric("cifar10", "paper")


# ---------------------------------------------------------------------------------------------
# the official packages, where they are installed (optional; never a requirement)
# ---------------------------------------------------------------------------------------------
_API_ITEMS = {  # get_more_info key → column template per dataset kind
    "cifar10-valid": {"train-accuracy": "train", "valid-accuracy": "valid", "test-accuracy": "oritest"},
    "cifar10": {"train-accuracy": "train", "test-accuracy": "oritest"},
    "cifar100": {"train-accuracy": "train", "valid-accuracy": "valid", "test-accuracy": "test",
                 "valtest-accuracy": "oritest"},
}
_API_ITEMS["ImageNet16-120"] = _API_ITEMS["cifar100"]


def _compare_with_api(api, table) -> int:
    n = 0
    for i in IDX:
        for ds, d in fmt.DATASETS.items():
            hps = ("12", "200") if ds == "cifar10-valid" else ("200",)
            for hp in hps:
                info = api.get_more_info(i, ds, hp=hp, is_random=False)
                for key, split in _API_ITEMS[ds].items():
                    assert info[key] == pytest.approx(table[f"{d}_{split}_acc_hp{hp}"][i], rel=1e-14), (i, ds, hp, key)
                    n += 1
                if ds == "cifar10-valid":
                    assert info["train-all-time"] == pytest.approx(table[f"{d}_train_time_hp{hp}"][i], rel=1e-12)
    return n


@pytest.mark.skipif(importlib.util.find_spec("nats_bench") is None, reason="nats_bench is not installed")
def test_nats_bench_package_agrees(files) -> None:
    from nats_bench import create

    api = create(str(files["nats"]), "tss", fast_mode=True, verbose=False)
    table, _ = fmt.read_benchmark(files["nats"])
    assert _compare_with_api(api, table) > 50
    cost = api.get_cost_info(11, "cifar10", hp="200")
    assert cost["flops"] == table["cifar10_flops_hp200"][11] and cost["latency"] == table["cifar10_latency_hp200"][11]


@pytest.mark.skipif(importlib.util.find_spec("nas_201_api") is None, reason="nas_201_api is not installed")
def test_nas_201_api_package_agrees(files) -> None:
    from nas_201_api import NASBench201API

    # nas_201_api calls torch.load, whose weights_only default refuses numpy scalars: hand it the
    # dict of our own (trusted) file instead
    api = NASBench201API(torch.load(files["v1_1"], weights_only=False), verbose=False)
    table, _ = fmt.read_benchmark(files["v1_1"])
    assert _compare_with_api(api, table) > 50
