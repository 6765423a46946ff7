"""NAS-Bench-101 space: hashes and parameter counts against 30 genuine benchmark records."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import zcfast.spaces as spaces
from zcfast.spaces import nb101
from zcfast.spaces.nb101 import NB101Space, make_arch

RECORDS_PATH = Path(__file__).parent / "assets" / "nb101_records_30.json"
RECORDS = json.loads(RECORDS_PATH.read_text())
SP = spaces.get("nb101")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def arch_of(rec: dict) -> nb101.NB101Arch:
    return SP.spec(rec["module_adjacency"], rec["module_operations"])


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("i", range(len(RECORDS)))
def test_hash_matches_benchmark(i) -> None:
    rec = RECORDS[i]
    assert SP.key(arch_of(rec)) == rec["hash"]


@pytest.mark.parametrize("i", range(len(RECORDS)))
def test_param_count_matches_benchmark(i) -> None:
    rec = RECORDS[i]
    assert n_params(SP.build(arch_of(rec))) == rec["trainable_parameters"]


def test_hash_invariant_to_vertex_relabelling() -> None:
    """Permuting interior vertices (keeping a topological order) keeps the hash."""
    rec = next(r for r in RECORDS if len(r["module_operations"]) == 7)
    m = np.array(rec["module_adjacency"])
    ops = rec["module_operations"]
    rng = random.Random(0)
    found = 0
    for _ in range(200):
        perm = [0] + rng.sample(range(1, 6), 5) + [6]
        pm = m[np.ix_(perm, perm)]
        if np.any(np.tril(pm)):
            continue
        found += 1
        assert SP.key(SP.spec(pm, [ops[p] for p in perm])) == rec["hash"]
    assert found >= 1


def test_pruning() -> None:
    # vertex 2 has no path to the output, vertex 3 no path from the input: both pruned
    m = [[0, 1, 1, 0, 0],
         [0, 0, 0, 0, 1],
         [0, 0, 0, 0, 0],
         [0, 0, 0, 0, 1],
         [0, 0, 0, 0, 0]]
    ops = ["input", "conv3x3-bn-relu", "maxpool3x3", "conv1x1-bn-relu", "output"]
    a = SP.spec(m, ops)
    assert a.ops == ("input", "conv3x3-bn-relu", "output")
    assert a.matrix == ((0, 1, 0), (0, 0, 1), (0, 0, 0))
    assert SP.key(a) == SP.key(SP.spec([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv3x3-bn-relu", "output"]))


def test_vertex_channel_rule() -> None:
    """Three vertices feed the output of a 128→256 cell: 256 = 86 + 85 + 85 (remainder first)."""
    m = np.array([[0, 1, 1, 1, 0],
                  [0, 0, 0, 0, 1],
                  [0, 0, 0, 0, 1],
                  [0, 0, 0, 0, 1],
                  [0, 0, 0, 0, 0]])
    assert nb101.vertex_channels(128, 256, m) == [128, 86, 85, 85, 256]
    # a vertex not feeding the output takes the max of its successors
    m2 = np.array([[0, 1, 0, 1, 0],
                   [0, 0, 1, 0, 0],
                   [0, 0, 0, 0, 1],
                   [0, 0, 0, 0, 1],
                   [0, 0, 0, 0, 0]])
    assert nb101.vertex_channels(128, 128, m2) == [128, 64, 64, 64, 128]


def test_output_shapes_and_forward() -> None:
    net = SP.build(arch_of(RECORDS[0]))
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    for rec in RECORDS[1:6]:  # structure only: narrow stem keeps this fast
        assert SP.build(arch_of(rec), stem_channels=8)(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    small = SP.build(arch_of(RECORDS[0]), num_classes=7, stem_channels=8)
    assert small(torch.randn(1, 3, 16, 16)).shape == (1, 7)
    # input → output only: the cell is a 1x1 projection
    direct = SP.spec([[0, 1], [0, 0]], ["input", "output"])
    assert SP.build(direct, stem_channels=4)(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_round_trips() -> None:
    for rec in RECORDS:
        a = arch_of(rec)
        assert SP.decode(SP.encode(a)) == a
        c = SP.to_choices(a)
        assert len(c) == len(SP.num_choices) == 26
        assert SP.from_choices(c) == a
        adj, feat = SP.graph(a)
        assert adj.shape == (7, 7) and feat.shape == (7, 5)
        assert feat[: a.num_vertices].sum() == a.num_vertices and adj.sum() == a.num_edges


def test_sample_limits_and_seed() -> None:
    s1 = [SP.sample(random.Random(5)) for _ in range(2)]
    assert s1 == [SP.sample(random.Random(5)) for _ in range(2)]
    rng = random.Random(0)
    for _ in range(200):
        a = SP.sample(rng)
        assert a.num_vertices <= 7 and a.num_edges <= 9
        assert make_arch(a.matrix, a.ops) == a  # already pruned and valid


def test_neighbours_and_mutate() -> None:
    rng = random.Random(2)
    for rec in RECORDS[:10]:
        a = arch_of(rec)
        nbrs = SP.neighbours(a)
        assert nbrs
        keys = [SP.key(b) for b in nbrs]
        assert len(set(keys)) == len(keys) and SP.key(a) not in keys
        for b in nbrs:
            assert b.num_edges <= 9 and b.num_vertices <= 7
            # one edit: same vertex count with one edge/op changed, or pruning removed vertices
            if b.num_vertices == a.num_vertices:
                diff = int(np.abs(b.np_matrix() - a.np_matrix()).sum()) + sum(x != y for x, y in zip(a.ops, b.ops))
                assert diff == 1
            else:
                assert b.num_vertices < a.num_vertices
        m = SP.mutate(a, rng)
        assert SP.key(m) != SP.key(a)


def test_ground_truth_from_file(tmp_path, monkeypatch) -> None:
    space = NB101Space(RECORDS_PATH)
    rec = RECORDS[0]
    runs = rec["results"]["108"]
    want = 100 * sum(r["final_test_accuracy"] for r in runs) / len(runs)
    assert space.ground_truth(arch_of(rec)) == pytest.approx(want, rel=1e-12)
    want_v = 100 * sum(r["final_validation_accuracy"] for r in runs) / len(runs)
    assert space.ground_truth(arch_of(rec), metric="valid") == pytest.approx(want_v, rel=1e-12)
    assert len(list(space.enumerate())) == 30
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        NB101Space(missing).ground_truth(arch_of(rec))
    monkeypatch.delenv(nb101.ENV_PATH, raising=False)
    with pytest.raises(FileNotFoundError, match="ZCFAST_NB101_PATH"):
        NB101Space().ground_truth(arch_of(rec))
    monkeypatch.setenv(nb101.ENV_PATH, str(RECORDS_PATH))
    assert NB101Space().ground_truth(arch_of(rec)) == pytest.approx(want, rel=1e-12)
    other = space.spec([[0, 1], [0, 0]], ["input", "output"])
    with pytest.raises(KeyError, match="not in the ground-truth file"):
        space.ground_truth(other)
    with pytest.raises(ValueError, match="cifar10"):
        space.ground_truth(arch_of(rec), dataset="cifar100")


@pytest.mark.parametrize("matrix, ops, match", [
    ([[0, 1], [1, 0]], ["input", "output"], "upper-triangular"),
    ([[0, 1, 0], [0, 0, 1]], ["input", "conv3x3-bn-relu", "output"], "square"),
    ([[0, 2], [0, 0]], ["input", "output"], "0 or 1"),
    ([[0, 1], [0, 0]], ["input", "conv3x3-bn-relu"], "last op"),
    ([[0, 1], [0, 0]], ["conv3x3-bn-relu", "output"], "first op"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv5x5", "output"], "unknown op"),
    ([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", "conv3x3-bn-relu", "output"], "no path"),
    ([[0, 1], [0, 0]], ["input", "conv3x3-bn-relu", "output"], "2 vertices"),
    (np.triu(np.ones((8, 8), dtype=int), 1), ["input"] + ["maxpool3x3"] * 6 + ["output"], "at most 7"),
    (np.triu(np.ones((7, 7), dtype=int), 1), ["input"] + ["maxpool3x3"] * 5 + ["output"], "at most 9"),
])
def test_bad_specs(matrix, ops, match) -> None:
    with pytest.raises(ValueError, match=match):
        SP.spec(matrix, ops)


def test_bad_text_and_choices() -> None:
    with pytest.raises(ValueError, match="JSON"):
        SP.decode("[[0,1]")
    with pytest.raises(ValueError, match="'matrix'"):
        SP.decode('{"adj": 1}')
    with pytest.raises(ValueError, match="out of range"):
        SP.from_choices([2] + [0] * 25)
    with pytest.raises(ValueError, match="no path"):
        SP.from_choices([0] * 26)


def test_direct_cell_has_insertion_neighbours() -> None:
    """input → output alone has no valid edge flip; the fallback inserts one vertex."""
    a = SP.spec([[0, 1], [0, 0]], ["input", "output"])
    nbrs = SP.neighbours(a)
    assert {b.ops[1] for b in nbrs} == set(nb101.OPS)
    assert all(b.matrix == ((0, 1, 1), (0, 0, 1), (0, 0, 0)) for b in nbrs)
    assert SP.mutate(a, random.Random(0)) in nbrs


def test_spaces_pickle_for_worker_processes() -> None:
    """Scans send the space to worker processes: every space must pickle."""
    import pickle

    for name in spaces.available():
        sp = spaces.get(name)
        clone = pickle.loads(pickle.dumps(sp))
        arch = sp.sample(random.Random(0))
        assert clone.key(arch) == sp.key(arch)
    loaded = NB101Space(RECORDS_PATH)
    loaded.records()
    clone = pickle.loads(pickle.dumps(loaded))
    assert clone.ground_truth(arch_of(RECORDS[0])) == loaded.ground_truth(arch_of(RECORDS[0]))


class _WritesMarker:
    """A pickle payload that would create a file when unpickled by the plain unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_records_are_never_executed(tmp_path) -> None:
    """A records .pkl whose __reduce__ would write a file is refused, naming it; nothing runs."""
    marker = tmp_path / "EXECUTED"
    bad = tmp_path / "records.pkl"
    import pickle

    bad.write_bytes(pickle.dumps([{"hash": "x", "payload": _WritesMarker(marker)}]))
    with pytest.raises(ValueError, match=r"refusing to unpickle pathlib\.Path.*records\.pkl"):
        NB101Space(bad).ground_truth(arch_of(RECORDS[0]))
    assert not marker.exists()


def test_pickled_records_round_trip(tmp_path) -> None:
    """The same records as a plain pickle (dict hash -> record, numpy values) load as from JSON."""
    import pickle

    by_hash = {r["hash"]: {k: v for k, v in r.items() if k != "hash"} for r in RECORDS}
    rec0 = by_hash[RECORDS[0]["hash"]]
    rec0["module_adjacency"] = np.asarray(rec0["module_adjacency"], dtype=np.int8)
    p = tmp_path / "records.pickle"
    p.write_bytes(pickle.dumps(by_hash, protocol=pickle.HIGHEST_PROTOCOL))
    space = NB101Space(p)
    assert len(list(space.enumerate())) == len(RECORDS)
    assert space.ground_truth(arch_of(RECORDS[0])) == NB101Space(RECORDS_PATH).ground_truth(arch_of(RECORDS[0]))


def test_ground_truth_problem(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(nb101.ENV_PATH, raising=False)
    assert "ZCFAST_NB101_PATH" in NB101Space().ground_truth_problem("cifar10")
    assert "data_path" in NB101Space().ground_truth_problem(None)
    why = NB101Space(tmp_path / "gone.json").ground_truth_problem("cifar10")
    assert "gone.json" in why and "does not exist" in why and "data_path" in why
    assert NB101Space(RECORDS_PATH).ground_truth_problem("cifar10") is None
    assert NB101Space(RECORDS_PATH).ground_truth_problem(None) is None
    assert "cifar10" in NB101Space(RECORDS_PATH).ground_truth_problem("cifar100")
    monkeypatch.setenv(nb101.ENV_PATH, str(tmp_path / "env.json"))
    assert "$ZCFAST_NB101_PATH" in NB101Space().ground_truth_problem("cifar10")
    monkeypatch.setenv(nb101.ENV_PATH, str(RECORDS_PATH))
    assert NB101Space().ground_truth_problem("CIFAR10") is None
