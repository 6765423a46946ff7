"""NAS-Bench-301 glue (zcfast.formats.nb301, DartsSpace with --benchmark) against a fake
``nasbench301`` module injected into sys.modules: no surrogate models are needed.

The fake's ``load_ensemble(dir)`` returns a model whose ``predict`` computes a known function of
the genotype it is given (so the test checks what reaches the package, not just that something
came back), records each call's keyword arguments, and refuses a non-NB301 layout.
"""
from __future__ import annotations

import pickle
import random
import sys
import types

import pytest

import zcfast.formats.nb301 as nb301
from zcfast import options
from zcfast.spaces import darts


def _reference(genotype) -> float:
    """The fake surrogate's accuracy: 80 + one point per sep_conv_3x3 in the normal cell +
    a tenth of the sum of the reduce cell's inputs (an independent function of the genotype)."""
    return 80.0 + sum(op == "sep_conv_3x3" for op, _ in genotype.normal) + 0.1 * sum(j for _, j in genotype.reduce)


class _FakeModel:
    def __init__(self, folder: str, calls: list) -> None:
        self.folder, self.calls = folder, calls

    def predict(self, *, config, representation, with_noise):
        self.calls.append({"folder": self.folder, "representation": representation, "with_noise": with_noise,
                           "config": config})
        assert representation == "genotype"
        assert list(config.normal_concat) == [2, 3, 4, 5] and list(config.reduce_concat) == [2, 3, 4, 5]
        assert all(isinstance(p, tuple) and isinstance(p[0], str) and isinstance(p[1], int) for p in config.normal)
        if "runtime" in self.folder:
            return 3600.0 + len(config.normal)
        return _reference(config)


@pytest.fixture
def fake_nb301(monkeypatch, tmp_path):
    calls: list = []
    loads: list = []
    mod = types.ModuleType("nasbench301")

    def load_ensemble(folder: str):
        loads.append(folder)
        return _FakeModel(folder, calls)

    mod.load_ensemble = load_ensemble
    monkeypatch.setitem(sys.modules, "nasbench301", mod)
    monkeypatch.setattr(nb301, "_LOADED", {})
    models = tmp_path / "nb_models"
    for name in ("xgb_v1.0", "gnn_gin_v1.0", "lgb_runtime_v1.0"):
        (models / name).mkdir(parents=True)
    return types.SimpleNamespace(models=models, calls=calls, loads=loads)


def test_darts_with_models_folder_predicts_noise_free(fake_nb301):
    sp = options.resolve_space("darts", ground_truth_for="correlate", dataset="cifar10",
                               benchmark=str(fake_nb301.models))
    rng = random.Random(3)
    archs = [sp.sample(rng) for _ in range(5)]
    got = [sp.ground_truth(a) for a in archs]
    assert got == pytest.approx([_reference(a) for a in archs])
    assert all(c["with_noise"] is False for c in fake_nb301.calls)
    assert {c["folder"] for c in fake_nb301.calls} == {str(fake_nb301.models / "xgb_v1.0")}
    assert len(fake_nb301.loads) == 1                      # loaded once, reused
    assert sp.ground_truth(archs[0], metric="runtime") == 3600.0 + 8
    # the singleton of zcfast.spaces is untouched; a pickled copy keeps the folder
    import zcfast.spaces
    assert zcfast.spaces.get("darts").data_path is None
    assert pickle.loads(pickle.dumps(sp)).data_path == str(fake_nb301.models)


def test_one_model_folder_and_gnn_only(fake_nb301, tmp_path):
    one = fake_nb301.models / "gnn_gin_v1.0"
    g = darts.DartsSpace().sample(random.Random(0))
    assert nb301.predict(one, g) == pytest.approx(_reference(g))
    only = tmp_path / "only_gnn"
    (only / "gnn_gin_v0.9").mkdir(parents=True)
    assert nb301.models_in(only) == {"gnn_gin": only / "gnn_gin_v0.9"}
    assert nb301.predict(only, g) == pytest.approx(_reference(g))


def test_without_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nasbench301", None)   # import nasbench301 -> ImportError
    (tmp_path / "xgb_v1.0").mkdir()
    sp = darts.DartsSpace(data_path=tmp_path)
    why = sp.ground_truth_problem("cifar10")
    assert why and "pip install nasbench301" in why
    with pytest.raises(ValueError, match="needs benchmark ground truth.*nasbench301"):
        options.resolve_space("darts", ground_truth_for="search", benchmark=str(tmp_path))
    with pytest.raises(ValueError, match="nasbench301"):
        sp.ground_truth(sp.sample(random.Random(0)))


def test_bad_folders_and_arguments(fake_nb301, tmp_path):
    sp = darts.DartsSpace()
    assert "nasbench301" in sp.ground_truth_problem("cifar10")       # no folder: what to install
    with pytest.raises(FileNotFoundError, match="does not exist"):
        options.resolve_space("darts", benchmark=str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no NAS-Bench-301 surrogate model folder" in darts.DartsSpace(empty).ground_truth_problem()
    f = tmp_path / "file.json"
    f.write_text("{}")
    assert "not a file" in darts.DartsSpace(f).ground_truth_problem()
    sp = darts.DartsSpace(fake_nb301.models)
    g = sp.sample(random.Random(1))
    with pytest.raises(ValueError, match="only the cifar10"):
        sp.ground_truth(g, "cifar100")
    assert "only for cifar10" in sp.ground_truth_problem("cifar100")
    with pytest.raises(ValueError, match="unknown metric"):
        sp.ground_truth(g, metric="valid")
    with pytest.raises(ValueError, match="not a DARTS genotype"):
        nb301.as_nb301_genotype(("a", "b"))
