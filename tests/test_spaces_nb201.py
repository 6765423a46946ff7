"""NAS-Bench-201 space: encodings, benchmark order, networks and ground truth against real data."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import math
import random
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn as nn

import zcfast.spaces as spaces
from zcfast.spaces import nb201
from zcfast.spaces.nb201 import OPS, canonical_expr, prune, unique_str

SP = spaces.get("nb201")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    """The shipped CSV read directly (independently of nb201.table())."""
    raw = (resources.files("zcfast") / "assets" / "nb201" / nb201.TABLE_FILE).read_bytes()
    return list(csv.DictReader(io.StringIO(gzip.decompress(raw).decode())))


@pytest.fixture(scope="module")
def all_archs() -> list[tuple[str, ...]]:
    return list(SP.enumerate())


def conv_params(op: str, c: int) -> int:
    """Parameters of one cell edge at width c: 3x3 conv 9c² + BN 2c; 1x1 conv c² + BN 2c; others 0."""
    return {"nor_conv_3x3": 9 * c * c + 2 * c, "nor_conv_1x1": c * c + 2 * c}.get(op, 0)


def expected_params(arch: tuple[str, ...], num_classes: int = 10) -> int:
    """Hand count from the benchmark's layer shapes (C = 16, N = 5).

    Fixed part: stem conv 3·16·9 = 432 + BN 32; reduction 16→32: conv_a 16·32·9 + BN 64,
    conv_b 32·32·9 + BN 64, shortcut 1x1 16·32 (no BN) = 14,464; reduction 32→64: 18,432 + 128
    + 36,864 + 128 + 2,048 = 57,600; final BN 128; classifier 64·k + k.
    Cells: 5 per stage, each the sum of its edges' ``conv_params`` at 16, 32, 64 channels.
    """
    fixed = 432 + 32 + 14464 + 57600 + 128 + 64 * num_classes + num_classes
    cells = sum(5 * conv_params(op, c) for c in (16, 32, 64) for op in arch)
    return fixed + cells


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry() -> None:
    assert set(spaces.available()) == {"nb201", "nb101", "darts"}
    assert spaces.get("nb201") is SP
    with pytest.raises(ValueError, match="unknown search space"):
        spaces.get("nb999")


def test_enumerate_matches_benchmark_index_order(rows, all_archs) -> None:
    assert len(rows) == 15625 == SP.size() == len(all_archs)
    assert len(set(all_archs)) == 15625
    for i, (row, arch) in enumerate(zip(rows, all_archs)):
        assert int(row["index"]) == i
        assert SP.encode(arch) == row["arch_str"]
    assert set(all_archs) == set(itertools.product(OPS, repeat=6))
    # index lookup both ways
    for i in (0, 1, 2, 777, 15624):
        assert SP.index(all_archs[i]) == i
        assert SP.arch_at(i) == all_archs[i]
    assert SP.index(rows[5]["arch_str"]) == 5


def test_edge_order_in_string() -> None:
    a = SP.decode("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|nor_conv_3x3~1|skip_connect~2|")
    assert a == ("avg_pool_3x3", "nor_conv_1x1", "skip_connect", "none", "nor_conv_3x3", "skip_connect")
    assert nb201.EDGES == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


def test_naslib_indices_match_table(rows, all_archs) -> None:
    for row, arch in zip(rows, all_archs):
        t = tuple(int(v) for v in row["naslib_op_indices"].strip("()").split(","))
        assert SP.to_naslib(arch) == t
        assert SP.from_naslib(t) == arch


def test_round_trips(all_archs) -> None:
    for arch in all_archs[::7]:
        assert SP.decode(SP.encode(arch)) == arch
        c = SP.to_choices(arch)
        assert all(0 <= v < n for v, n in zip(c, SP.num_choices))
        assert SP.from_choices(c) == arch


@pytest.mark.parametrize("arch", [
    ("nor_conv_3x3",) * 6, ("none",) * 6, ("skip_connect",) * 6, ("nor_conv_1x1",) * 6, ("avg_pool_3x3",) * 6,
    ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect"),
    ("nor_conv_1x1", "none", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_1x1"),
])
def test_param_counts(arch) -> None:
    assert n_params(SP.build(arch)) == expected_params(arch)


def test_param_counts_literal() -> None:
    """Literal values: all-3x3 is the benchmark's 1,531,546; no-conv cells leave 73,306 (fixed
    part only); all-1x1 adds 5·(288+1088+4224)·6 = 168,000; index 1 (three 3x3 convs per cell)
    adds 5·3·(2336+9280+36992) = 729,120; 100 classes add 90·64 + 90 = 5,850."""
    assert n_params(SP.build(("nor_conv_3x3",) * 6)) == 1531546
    assert n_params(SP.build(("none",) * 6)) == 73306
    assert n_params(SP.build(("skip_connect",) * 6)) == 73306
    assert n_params(SP.build(("avg_pool_3x3",) * 6)) == 73306
    assert n_params(SP.build(("nor_conv_1x1",) * 6)) == 241306
    assert n_params(SP.build(SP.arch_at(1))) == 802426
    assert n_params(SP.build(SP.arch_at(1), num_classes=100)) == 802426 + 5850


def test_output_shapes() -> None:
    arch = SP.arch_at(1)
    for k, hw in ((10, 32), (100, 32), (120, 16)):
        net = SP.build(arch, num_classes=k)
        assert net(torch.randn(1, 3, hw, hw)).shape == (1, k)


def test_network_structure() -> None:
    net = SP.build(SP.arch_at(0))
    assert len(net.cells) == 17
    pools = [m for m in net.modules() if isinstance(m, nn.AvgPool2d) and m.kernel_size == 3]
    assert pools and all(m.count_include_pad is False and m.padding == 1 for m in pools)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.affine and m.track_running_stats for m in bns)
    red = net.reduction_batchnorms()
    rest = net.cell_stem_final_batchnorms()
    assert len(red) == 4
    assert {id(m) for m in red} | {id(m) for m in rest} == {id(m) for m in bns}
    assert not ({id(m) for m in red} & {id(m) for m in rest})
    # cell ops are ReLU -> Conv -> BN
    conv_edge = net.cells[0].edges[1]  # nor_conv_1x1
    assert [type(m) for m in conv_edge] == [nn.ReLU, nn.Conv2d, nn.BatchNorm2d]
    assert conv_edge[1].kernel_size == (1, 1) and conv_edge[1].bias is None
    # parameter-free modules may be shared, parameters never are
    params = list(net.parameters())
    assert len({id(p) for p in params}) == len(params)


def test_construction_order_is_rng_order() -> None:
    """Weights are drawn in forward order: stem conv, cell conv edges in edge order, reduction
    block conv_a, conv_b, shortcut conv, ..., classifier (BatchNorms draw nothing)."""
    arch = ("nor_conv_3x3", "avg_pool_3x3", "nor_conv_1x1", "none", "skip_connect", "nor_conv_3x3")
    torch.manual_seed(7)
    net = SP.build(arch)
    torch.manual_seed(7)
    order = [net.stem[0]]
    for layer in net.cells:
        if isinstance(layer, nb201.ResNetBasicBlock):
            order += [layer.conv_a[1], layer.conv_b[1], layer.downsample[1]]
        else:
            order += [m[1] for m in layer.edges if isinstance(m, nn.Sequential)]
    for conv in order:
        ref = torch.empty_like(conv.weight)
        nn.init.kaiming_uniform_(ref, a=math.sqrt(5))
        assert torch.equal(ref, conv.weight)
    w = torch.empty_like(net.classifier.weight)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    assert torch.equal(w, net.classifier.weight)


def test_none_cells_give_classifier_bias() -> None:
    """With every edge ``none`` the cells output zeros, so (eval mode) logits = classifier bias."""
    net = SP.build(("none",) * 6).eval()
    with torch.no_grad():
        out = net(torch.randn(3, 3, 32, 32))
    assert torch.allclose(out, net.classifier.bias.expand(3, -1))


def test_skip_cells_are_identity() -> None:
    """All-skip cells compute x + x + 2x = 4x per cell: compare with a hand composition."""
    net = SP.build(("skip_connect",) * 6).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = net.stem(x)
        for layer in net.cells:
            h = layer(h) if isinstance(layer, nb201.ResNetBasicBlock) else 4 * h
        ref = net.classifier(net.lastact(h).mean((2, 3)))
        assert torch.allclose(net(x), ref, rtol=1e-5, atol=1e-5)


def test_key_isomorphism(all_archs) -> None:
    keys = [SP.key(a) for a in all_archs]
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in keys)
    assert len(set(keys)) == 4930
    # the benchmark's own notion gives its published 6,466 unique cells ...
    bench = [unique_str(a) for a in all_archs]
    assert len(set(bench)) == 6466
    # ... and key is a coarsening of it
    by_bench: dict[str, str] = {}
    for b, k in zip(bench, keys):
        assert by_bench.setdefault(b, k) == k
    # dead edges never matter
    for a, k in zip(all_archs[::5], keys[::5]):
        assert SP.key(prune(a)) == k


def test_key_examples() -> None:
    # swapping nodes 1 and 2 when there is no edge between them
    a = ("nor_conv_3x3", "avg_pool_3x3", "none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
    b = ("avg_pool_3x3", "nor_conv_3x3", "none", "skip_connect", "nor_conv_3x3", "nor_conv_1x1")
    assert SP.key(a) == SP.key(b)
    # a dead edge (node 2 does not reach the output)
    c = ("nor_conv_3x3", "nor_conv_1x1", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "none")
    d = ("nor_conv_3x3", "avg_pool_3x3", "skip_connect", "skip_connect", "nor_conv_3x3", "none")
    assert SP.key(c) == SP.key(d)
    assert SP.key(a) != SP.key(c)
    # stability: the digest of a hand-written expression
    e = ("nor_conv_3x3", "none", "none", "none", "skip_connect", "none")
    assert canonical_expr(e) == "nor_conv_3x3(x)"
    assert SP.key(e) == hashlib.sha256(b"nb201:nor_conv_3x3(x)").hexdigest()[:32]
    assert canonical_expr(("none",) * 6) == "zero"


def test_sample_seeded_and_uniform() -> None:
    s1 = [SP.sample(random.Random(3)) for _ in range(3)]
    s2 = [SP.sample(random.Random(3)) for _ in range(3)]
    assert s1 == s2
    rng = random.Random(0)
    draws = [SP.sample(rng) for _ in range(3000)]
    counts = np.array([[sum(d[e] == op for d in draws) for op in OPS] for e in range(6)])
    assert np.all(np.abs(counts - 600) < 120)
    with pytest.raises(TypeError):
        SP.sample(0)


def test_neighbours_and_mutate(all_archs) -> None:
    rng = random.Random(1)
    for arch in all_archs[:50]:
        nbrs = SP.neighbours(arch)
        assert len(nbrs) == 24 == len(set(nbrs))
        for n in nbrs:
            assert sum(x != y for x, y in zip(n, arch)) == 1
        m = SP.mutate(arch, rng)
        assert m != arch and m in nbrs


def test_graph() -> None:
    adj, feat = SP.graph(("nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "none"))
    assert adj.shape == (8, 8) and feat.shape == (8, 7)
    assert np.all(feat.sum(1) == 1)
    assert np.all(np.triu(adj, 1) == adj)
    assert adj[0, 1] == adj[0, 2] == adj[0, 4] == 1  # input feeds e01, e02, e03
    assert adj[1, 3] == adj[1, 5] == 1                # e01 (node 1) feeds e12, e13
    assert adj[4, 7] == adj[5, 7] == adj[6, 7] == 1   # edges into node 3 feed the output
    assert adj[1, 7] == 0
    assert feat[1, OPS.index("nor_conv_3x3")] == 1 and feat[0, 5] == 1 and feat[7, 6] == 1


def test_ground_truth(rows) -> None:
    for i in (0, 1, 3, 15624):
        arch = SP.arch_at(i)
        r = rows[i]
        assert SP.ground_truth(arch) == float(r["cifar10_test_nats"])
        assert SP.ground_truth(arch, "cifar100", "test") == float(r["cifar100_test_nats"])
        assert SP.ground_truth(arch, "ImageNet16-120") == float(r["imagenet16_120_test_nats"])
        assert SP.ground_truth(arch, "cifar10", "hp12_valacc") == float(r["cifar10valid_hp12_valacc_robot"])
        assert SP.ground_truth(arch, "cifar10", "hp12_cost") == float(r["cifar10valid_hp12_cost_robot"])
        assert SP.ground_truth(arch, "cifar10", "valid") == float(r["cifar10_val_nbsuitezero"])
    assert math.isnan(SP.ground_truth(SP.arch_at(3), "imagenet16_120", "valid"))  # empty in source
    t = nb201.table()
    assert t["cifar10valid_hp12_valacc_robot"].shape == (15625,) and t["naslib_op_indices"].shape == (15625, 6)
    assert nb201.table() is t  # cached
    with pytest.raises(ValueError, match="dataset"):
        SP.ground_truth(SP.arch_at(0), "mnist")
    with pytest.raises(ValueError, match="metric"):
        SP.ground_truth(SP.arch_at(0), "cifar10", "train")
    with pytest.raises(ValueError, match="cifar10"):
        SP.ground_truth(SP.arch_at(0), "cifar100", "hp12_valacc")
    with pytest.raises(ValueError, match="not available"):
        SP.ground_truth(SP.arch_at(0), "cifar100", "valid")


@pytest.mark.parametrize("bad, match", [
    ("", "3 '\\+'-separated"),
    ("|nor_conv_3x3~0|+|none~0|none~1|", "3 '\\+'-separated"),
    ("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|", "3 input edges"),
    ("|nor_conv_3x3~0|+|none~0|none~2|+|none~0|none~1|none~2|", "input index"),
    ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op"),
    ("nor_conv_3x3~0+|none~0|none~1|+|none~0|none~1|none~2|", "node 1"),
    ("|nor_conv_3x3|+|none~0|none~1|+|none~0|none~1|none~2|", "op~input"),
])
def test_bad_strings(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        SP.decode(bad)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="6 edges"):
        SP.build(("none",) * 5)
    with pytest.raises(ValueError, match="unknown op"):
        SP.build(("none",) * 5 + ("conv",))
    with pytest.raises(ValueError, match="num_classes"):
        SP.build(("none",) * 6, num_classes=0)
    with pytest.raises(ValueError, match="out of range"):
        SP.from_choices([0, 1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="expected 6"):
        SP.from_choices([0, 1])
    with pytest.raises(ValueError, match="out of range"):
        SP.from_naslib((0, 0, 0, 0, 0, 7))
    with pytest.raises(ValueError, match="out of range"):
        SP.arch_at(15625)
    with pytest.raises(ValueError):
        SP.encode(123)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_build_on_cuda() -> None:
    net = SP.build(SP.arch_at(1)).cuda()
    assert net(torch.randn(2, 3, 32, 32, device="cuda")).shape == (2, 10)


def test_networks_deepcopy() -> None:
    """Proxies score deep copies: a copy must compute the same function with its own tensors."""
    import copy

    for name, kwargs in (("nb201", {}), ("nb101", {"stem_channels": 8}), ("darts", {"channels": 8})):
        sp = spaces.get(name)
        net = sp.build(sp.sample(random.Random(1)), **kwargs).eval()
        twin = copy.deepcopy(net)
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            assert torch.equal(net(x), twin(x))
        assert not ({id(p) for p in net.parameters()} & {id(p) for p in twin.parameters()})


def test_isomorphic_cells_compute_the_same_function() -> None:
    """Two cells with one key (nodes 1 and 2 swapped, no edge between them) give the same
    network output once the weights are mapped edge to edge (e01↔e02, e13↔e23)."""
    a = ("nor_conv_3x3", "nor_conv_1x1", "none", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3")
    b = ("nor_conv_1x1", "nor_conv_3x3", "none", "avg_pool_3x3", "nor_conv_3x3", "nor_conv_1x1")
    assert SP.key(a) == SP.key(b)
    swap = {0: 1, 1: 0, 4: 5, 5: 4}
    net_a, net_b = SP.build(a).eval(), SP.build(b)
    sa = net_a.state_dict()
    mapped = {}
    for name, tensor in sa.items():
        parts = name.split(".")
        if parts[0] == "cells" and parts[2] == "edges":
            parts[3] = str(swap.get(int(parts[3]), int(parts[3])))
        mapped[".".join(parts)] = tensor
    net_b.load_state_dict(mapped)
    net_b.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net_a(x), net_b(x), rtol=1e-4, atol=1e-5)
