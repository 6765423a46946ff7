"""DARTS / NAS-Bench-301 space: genotype text, choices, neighbours and the NB301 network."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import zcfast.spaces as spaces
from zcfast.spaces import darts
from zcfast.spaces.darts import OPS, from_nb301_config, make_genotype, to_nb301_config

SP = spaces.get("darts")


pytestmark = pytest.mark.usefixtures("one_torch_thread")
P = "NetworkSelectorDatasetInfo:darts:"

#: automl/nasbench301 @ 58ca2cba, nasbench301/surrogate_models/test/results_fidelity_0/results_0.json:
#: the architecture part of a real NB301 training record (init_channels 50, layers 20,
#: auxiliary True) whose info[0].model_parameters is 6,369,358.
NB301_RECORD_CONFIG = {
    P + "edge_normal_0": "skip_connect", P + "edge_normal_1": "sep_conv_3x3",
    P + "edge_normal_2": "sep_conv_3x3", P + "edge_normal_3": "skip_connect",
    P + "edge_normal_5": "dil_conv_3x3", P + "edge_normal_7": "dil_conv_5x5",
    P + "edge_normal_10": "sep_conv_3x3", P + "edge_normal_11": "skip_connect",
    P + "inputs_node_normal_3": "0_1", P + "inputs_node_normal_4": "0_2", P + "inputs_node_normal_5": "1_2",
    P + "edge_reduce_0": "max_pool_3x3", P + "edge_reduce_1": "avg_pool_3x3",
    P + "edge_reduce_2": "skip_connect", P + "edge_reduce_3": "dil_conv_5x5",
    P + "edge_reduce_6": "sep_conv_3x3", P + "edge_reduce_7": "sep_conv_5x5",
    P + "edge_reduce_11": "sep_conv_3x3", P + "edge_reduce_12": "dil_conv_3x3",
    P + "inputs_node_reduce_3": "0_1", P + "inputs_node_reduce_4": "1_2", P + "inputs_node_reduce_5": "2_3",
}

#: DARTS_V2 as published in quark0/darts genotypes.py (text in the DARTS repr).
DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
            "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
            "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
            "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
            "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")


def n_params(model: torch.nn.Module, aux: bool = True) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if aux or "auxiliary" not in name)


def test_nb301_record_param_count() -> None:
    """A real NB301 record (50 channels, 20 cells, auxiliary head) reports 6,369,358 parameters."""
    g = from_nb301_config(NB301_RECORD_CONFIG)
    assert to_nb301_config(g) == NB301_RECORD_CONFIG
    net = SP.build(g, channels=50, layers=20, auxiliary=True)
    assert n_params(net) == 6369358


def test_darts_v2_param_count() -> None:
    """DARTS paper/repo: DARTS_V2 at 36 channels, 20 cells has 3.349342 M parameters excluding
    the auxiliary head (the repo's count_parameters_in_MB skips 'auxiliary')."""
    net = SP.build(SP.decode(DARTS_V2), channels=36, layers=20, auxiliary=True)
    assert n_params(net, aux=False) == 3349342


def test_nb301_default_network() -> None:
    g = SP.sample(random.Random(0))
    net = SP.build(g)
    assert len(net.cells) == 8
    assert [c.reduction for c in net.cells] == [False, False, True, False, False, True, False, False]
    assert net.stem[0].out_channels == 96 and net.classifier.in_features == 4 * 128
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    aux = SP.build(g, num_classes=100, auxiliary=True, drop_path_prob=0.2).train()
    out = aux(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100) and aux.logits_aux is not None and aux.logits_aux.shape == (2, 100)


def test_text_format_round_trip() -> None:
    g = SP.decode(DARTS_V2)
    text = SP.encode(g)
    assert text.startswith("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1),")
    assert "normal_concat=range(2, 6)" in text and text.endswith("reduce_concat=range(2, 6))")
    assert SP.decode(text) == g
    # canonical: within a node the pairs are ordered by input index
    assert g.normal[4:6] == (("skip_connect", 0), ("sep_conv_3x3", 1))
    # the genotype is hashable and the key is stable
    assert len({g, SP.decode(text)}) == 1
    assert SP.key(g) == SP.key(SP.decode(DARTS_V2.replace("[2, 3, 4, 5]", "range(2, 6)")))


def test_choices_round_trip_and_sampling() -> None:
    rng = random.Random(4)
    a = [SP.sample(rng) for _ in range(50)]
    assert a == [SP.sample(r) for r in [random.Random(4)] for _ in range(50)]
    assert len({SP.key(g) for g in a}) == 50
    for g in a:
        c = SP.to_choices(g)
        assert len(c) == len(SP.num_choices) == 24
        assert SP.from_choices(c) == g
        assert SP.decode(SP.encode(g)) == g
        assert from_nb301_config(to_nb301_config(g)) == g
    assert SP.size() == (180 * 7 ** 8) ** 2
    first = next(iter(SP.enumerate()))
    assert SP.to_choices(first) == [0] * 24


def test_neighbours() -> None:
    g = SP.decode(DARTS_V2)
    nbrs = SP.neighbours(g)
    # ops: 2 cells × 8 edges × 6; inputs: per node k the k free inputs, per edge → 2·2·(0+1+2+3)
    assert len(nbrs) == 96 + 24 == len(set(nbrs))
    for n in nbrs:
        diffs = sum(x != y for x, y in zip(SP.to_choices(n), SP.to_choices(g)))
        assert 1 <= diffs <= 3  # an input change may re-sort a node's pair
        edits = sum(sorted(a) != sorted(b) for cell_n, cell_g in ((n.normal, g.normal), (n.reduce, g.reduce))
                    for a, b in zip(zip(cell_n[::2], cell_n[1::2]), zip(cell_g[::2], cell_g[1::2])))
        assert edits == 1
    m = SP.mutate(g, random.Random(0))
    assert m != g and m in nbrs


def test_graph() -> None:
    adj, feat = SP.graph(SP.decode(DARTS_V2))
    assert adj.shape == (22, 22) and feat.shape == (22, 9)
    assert np.all(feat.sum(1) == 1) and np.all(np.triu(adj, 1) == adj)
    # normal cell's last edge ('dil_conv_3x3', 2) reads node 2, i.e. op vertices 2 and 3
    assert adj[2, 9] == adj[3, 9] == 1
    assert adj[:11, 11:].sum() == 0  # block diagonal


@pytest.mark.parametrize("text, match", [
    ("Genotype(normal=[], normal_concat=range(2, 6), reduce=[], reduce_concat=range(2, 6))", "8"),
    ("Genotype(normal=[('conv_7x7', 0)] * 8)", "only literals"),
    ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)]", "not well formed"),
    ("Network(normal=[])", "must be 'Genotype"),
    (DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 7)"), "out of range"),
    (DARTS_V2.replace("('dil_conv_3x3', 2)", "('conv_7x7', 2)"), "unknown op"),
    (DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 0)"), "distinct"),
    (DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[4, 5]"), "range\\(2, 6\\)"),
    (DARTS_V2.replace(", reduce_concat=[2, 3, 4, 5]", ""), "missing"),
    (DARTS_V2.replace("reduce_concat", "reduce_concatx"), "unknown field"),
    ("__import__('os').system('true')", "must be 'Genotype"),
])
def test_bad_genotypes(text, match) -> None:
    with pytest.raises(ValueError, match=match):
        SP.decode(text)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="out of range"):
        SP.from_choices([1] + [0] * 23)
    with pytest.raises(ValueError, match="expected 24"):
        SP.from_choices([0] * 3)
    with pytest.raises(ValueError, match="missing"):
        from_nb301_config({})
    with pytest.raises(ValueError, match="Genotype"):
        SP.build(42)
    with pytest.raises(ValueError, match="entry 1 must be an \\(op, input\\) pair"):
        ok = SP.decode(DARTS_V2).normal
        make_genotype(ok, (ok[0], 3) + ok[2:])
    assert OPS == darts.OPS and "none" not in OPS
