"""NAS-Bench-201 (NATS-Bench topology search space): 15,625 cell architectures.

Architecture string (official format), edges in this order::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|
      e01    e02   e12    e03   e13   e23        (eSD: edge from node S to node D)

An ``Arch`` here is the tuple of the six op names in that string order. Ops:
``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3`` (``OPS``, the index used by
``to_choices``).

The network is the benchmark's own (NATS-Bench topology / AutoDL-Projects ``TinyNetwork``
with ``InferCell`` and ``ResNetBasicblock``), reimplemented: stem Conv3x3(3→C)+BN; three
stages of N cells at C, 2C, 4C channels separated by residual reduction blocks; final
BN-ReLU, global average pooling, linear classifier. BatchNorm is affine with running stats,
cell ops are ReLU-Conv-BN, average pooling does not count padding. Defaults C=16, N=5.

``NB201Space.build(arch, variant="official")`` builds instead the cell ops of the zero-cost-nas
paper's own NB201 model (``VARIANTS``): every cell conv has a bias and cell BatchNorms have no
affine parameters and no running statistics (see :func:`add_official_cell_form`).

Ground truth comes from the shipped table ``zcfast/assets/nb201/nb201_groundtruth_merged.csv.gz``
(see the README there for provenance); ``table()`` exposes it as numpy arrays. With a benchmark
file the user has (``NB201Space(data_path=...)``, ``set_data_path`` or ``$ZCFAST_NB201_PATH``:
``NAS-Bench-201-v1_0-e61699.pth``, ``NAS-Bench-201-v1_1-096897.pth`` or the NATS-Bench folder
``NATS-tss-v1_0-3ffb9-simple/``, converted once by :mod:`zcfast.formats.nb201`), every dataset,
split, hp (12 / 200 epochs) and seed of the benchmark is a metric too, among them ``paper`` (the
``cifar10-valid`` run's 200-epoch test accuracy, the column the zero-cost paper ranked against).
"""
from __future__ import annotations

import csv
import gzip
import io
import math
import os
import random
import re
import threading
from importlib import resources
from typing import Any, Iterator, Literal, Sequence, get_args

import numpy as np
import torch
import torch.nn as nn

from .base import SearchSpace, check_num_classes, check_rng, stable_digest

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (source node, destination node) of each position of the architecture string / tuple.
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
#: NASLib op ids (column ``naslib_op_indices``): 0=skip_connect 1=none 2=nor_conv_3x3 3=nor_conv_1x1 4=avg_pool_3x3.
NASLIB_OPS: tuple[str, ...] = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
#: NASLib position (edges (1,2),(1,3),(1,4),(2,3),(2,4),(3,4)) of each string position.
_STRING_TO_NASLIB = (0, 1, 3, 2, 4, 5)
NUM_ARCHS = 15625

_OP_INDEX = {op: i for i, op in enumerate(OPS)}
_NASLIB_INDEX = {op: i for i, op in enumerate(NASLIB_OPS)}

Arch201 = tuple  # tuple[str, str, str, str, str, str]

#: Network variants ``NB201Space.build`` offers (``variant=``):
#:   ``benchmark`` (default): the benchmark's own network (bias-free convs, affine BatchNorm);
#:   ``official``: the zero-cost-nas paper's NB201 model (``foresight/models/nasbench2``), whose
#:   cell ops are ReLU -> Conv2d(bias=True) -> BatchNorm2d(affine=False, track_running_stats=False).
Variant = Literal["benchmark", "official"]
VARIANTS: tuple[str, ...] = get_args(Variant)


def check_variant(variant: Any) -> str:
    """Validate an NB201 network variant name (``VARIANTS``); ValueError naming a bad one."""
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ValueError(f"unknown NB201 network variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return variant


# --------------------------------------------------------------------------------------------
# Architecture strings
# --------------------------------------------------------------------------------------------
def parse_arch_str(text: str) -> tuple[str, ...]:
    """Parse ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` into a 6-tuple of op names.

    Raises:
        ValueError naming the problem (type, node count, edge input index, unknown op).
    """
    if not isinstance(text, str):
        raise ValueError(f"NB201 architecture string must be str, got {type(text).__name__}")
    s = text.strip()
    nodes = s.split("+")
    if len(nodes) != 3:
        raise ValueError(f"NB201 architecture string must have 3 '+'-separated nodes, got {len(nodes)}: {text!r}")
    ops: list[str] = []
    for node, part in enumerate(nodes, start=1):
        if len(part) < 2 or not (part.startswith("|") and part.endswith("|")):
            raise ValueError(f"NB201 node {node} must be written '|op~i|...|', got {part!r} in {text!r}")
        items = part[1:-1].split("|")
        if len(items) != node:
            raise ValueError(f"NB201 node {node} must have {node} input edges, got {len(items)} in {text!r}")
        for expected_in, item in enumerate(items):
            op, sep, src = item.partition("~")
            if not sep:
                raise ValueError(f"NB201 edge {item!r} must be 'op~input' in {text!r}")
            if src != str(expected_in):
                raise ValueError(
                    f"NB201 edge {item!r} of node {node}: input index must be {expected_in} "
                    f"(edges are listed in input order), got {src!r} in {text!r}")
            if op not in _OP_INDEX:
                raise ValueError(f"NB201 unknown op {op!r} in {text!r}; expected one of {OPS}")
            ops.append(op)
    return tuple(ops)


def arch_str(arch: Sequence[str]) -> str:
    """The official string of a 6-tuple of op names (inverse of ``parse_arch_str``)."""
    a = check_arch(arch)
    return f"|{a[0]}~0|+|{a[1]}~0|{a[2]}~1|+|{a[3]}~0|{a[4]}~1|{a[5]}~2|"


def check_arch(arch: Any) -> tuple[str, ...]:
    """Validate and normalise an NB201 architecture (6-tuple of op names, or its string)."""
    if isinstance(arch, str):
        return parse_arch_str(arch)
    if not isinstance(arch, (tuple, list)):
        raise ValueError(f"NB201 architecture must be a tuple of 6 op names or a string, got {type(arch).__name__}")
    if len(arch) != 6:
        raise ValueError(f"NB201 architecture must have 6 edges, got {len(arch)}")
    for i, op in enumerate(arch):
        if op not in _OP_INDEX:
            raise ValueError(f"NB201 unknown op {op!r} on edge {i}; expected one of {OPS}")
    return tuple(arch)


def to_naslib(arch: Sequence[str]) -> tuple[int, ...]:
    """NASLib op-index tuple (edges (1,2),(1,3),(1,4),(2,3),(2,4),(3,4); 0=skip 1=none 2=conv3 3=conv1 4=pool)."""
    a = check_arch(arch)
    out = [0] * 6
    for s, n in enumerate(_STRING_TO_NASLIB):
        out[n] = _NASLIB_INDEX[a[s]]
    return tuple(out)


def from_naslib(indices: Sequence[int]) -> tuple[str, ...]:
    """Inverse of ``to_naslib``; ValueError on wrong length or an op id outside 0..4."""
    idx = list(indices)
    if len(idx) != 6:
        raise ValueError(f"NASLib NB201 op-index tuple must have 6 entries, got {len(idx)}")
    for i, v in enumerate(idx):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < 5:
            raise ValueError(f"NASLib NB201 op index {v!r} at position {i} out of range 0..4")
    return tuple(NASLIB_OPS[idx[n]] for n in _STRING_TO_NASLIB)


def live_edges(arch: Sequence[str]) -> tuple[bool, ...]:
    """For each edge: does it lie on an input→output path of non-``none`` edges?"""
    a = check_arch(arch)
    fwd = [True, False, False, False]
    for (s, d), op in zip(EDGES, a):
        if op != "none" and fwd[s]:
            fwd[d] = True
    bwd = [False, False, False, True]
    for (s, d), op in sorted(zip(EDGES, a), key=lambda e: -e[0][1]):
        if op != "none" and bwd[d]:
            bwd[s] = True
    return tuple(op != "none" and fwd[s] and bwd[d] for (s, d), op in zip(EDGES, a))


def prune(arch: Sequence[str]) -> tuple[str, ...]:
    """Replace the op of every edge that is not on an input→output path by ``none``."""
    a = check_arch(arch)
    return tuple(op if live else "none" for op, live in zip(a, live_edges(a)))


def unique_str(arch: Sequence[str]) -> str:
    """The benchmark's isomorphism-canonical text of a cell (exposed; ``key`` uses a coarsening).

    Same rule as NAS-Bench-201 / AutoDL-Projects ``Structure.to_unique_str(consider_zero=True)``,
    which the benchmark uses to count 6,466 unique cells among the 15,625 (reimplemented): node 0
    is ``0``; each incoming edge gives a term: ``#`` (zero) if the op is ``none`` or the source
    node's text is exactly ``#``, the source's text for ``skip_connect``, else
    ``(<source>)@<op>``; a node's text is its terms sorted and joined with ``+``. So the order
    of equivalent paths into a node is irrelevant, identity edges are transparent, and ops
    that only see a zero input are irrelevant. The output node's text is returned.
    """
    a = check_arch(arch)
    nodes = ["0", "", "", ""]
    for d in (1, 2, 3):
        terms = []
        for (s, dd), op in zip(EDGES, a):
            if dd != d:
                continue
            if op == "none" or nodes[s] == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(nodes[s])
            else:
                terms.append(f"({nodes[s]})@{op}")
        nodes[d] = "+".join(sorted(terms))
    return nodes[3]


def canonical_expr(arch: Sequence[str]) -> str:
    """The cell's function as a canonical expression (the basis of ``NB201Space.key``).

    This is the basis of ``NB201Space.key``. Rule:
    node 0 is ``x``; a node is the sum of its incoming terms; ``none`` and any edge whose
    source node is identically zero contribute nothing (the benchmark treats an op applied
    to a zero node as zero); ``skip_connect`` contributes its source's terms unchanged
    (sums are flattened, being associative); any other op contributes ``op(<source>)``.
    Terms of a sum are sorted, so equivalent paths in any order give the same text. A node
    with no terms is zero; a cell whose output is zero gives ``zero``. Edges that do
    not reach the output never appear, so ops on dead edges are irrelevant.
    """
    a = check_arch(arch)
    nodes: list[list[str] | None] = [["x"], None, None, None]
    for d in (1, 2, 3):
        terms: list[str] = []
        for (s, dd), op in zip(EDGES, a):
            if dd != d or op == "none" or nodes[s] is None:
                continue
            src = nodes[s]
            assert src is not None
            if op == "skip_connect":
                terms.extend(src)
            else:
                terms.append(f"{op}({'+'.join(src)})")
        nodes[d] = sorted(terms) if terms else None
    out = nodes[3]
    return "zero" if out is None else "+".join(out)


# --------------------------------------------------------------------------------------------
# Network (benchmark layout)
# --------------------------------------------------------------------------------------------
class ReLUConvBN(nn.Sequential):
    """ReLU → Conv2d (no bias) → affine BatchNorm2d, as ``Sequential(relu, conv, bn)`` (indices
    0, 1, 2, like the benchmark). [N, C_in, H, W] → [N, C_out, H/stride, W/stride].

    ``relu`` may be a ReLU instance shared by the whole network (it is stateless; sharing
    saves module construction time in ``build``).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 relu: nn.Module | None = None) -> None:
        super().__init__(
            nn.ReLU(inplace=False) if relu is None else relu,
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=True, track_running_stats=True),
        )


class Zero(nn.Module):
    """The ``none`` op: ``x * 0`` (same shape as x; keeps NaN/inf propagation of the benchmark)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def _shared_relu(shared: dict[str, nn.Module]) -> nn.Module:
    if "relu" not in shared:
        shared["relu"] = nn.ReLU(inplace=False)
    return shared["relu"]


def _make_op(op: str, c: int, shared: dict[str, nn.Module]) -> nn.Module:
    if op == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, 1, _shared_relu(shared))
    if op == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, 0, _shared_relu(shared))
    # parameter-free ops (they draw nothing from the RNG): one instance per network
    if op not in shared:
        if op == "avg_pool_3x3":
            shared[op] = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        elif op == "skip_connect":
            shared[op] = nn.Identity()
        elif op == "none":
            shared[op] = Zero()
        else:
            raise ValueError(f"NB201 unknown op {op!r}")
    return shared[op]


class NB201Cell(nn.Module):
    """The benchmark's ``InferCell`` (C_in == C_out, stride 1). [N, C, H, W] → [N, C, H, W].

    ``edges[i]`` is the op of edge ``EDGES[i]``; parameter-free ops (pool, identity, zero)
    are single instances shared across the network's cells.
    """

    def __init__(self, arch: tuple[str, ...], c: int, shared: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        shared = {} if shared is None else shared
        self.edges = nn.ModuleList([_make_op(op, c, shared) for op in arch])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.edges
        n1 = e[0](x)
        n2 = e[1](x) + e[2](n1)
        return e[3](x) + e[4](n1) + e[5](n2)


class ResNetBasicBlock(nn.Module):
    """The benchmark's residual reduction block ``ResNetBasicblock(C_in, C_out, stride=2)``.

    ``conv_a`` = ReLUConvBN 3x3 stride 2, ``conv_b`` = ReLUConvBN 3x3, shortcut = AvgPool2d(2, 2)
    then Conv1x1 (no bias, no BN). [N, C_in, H, W] → [N, C_out, H/2, W/2].
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NAS-Bench-201 network. Input [N, 3, H, W] → logits [N, num_classes].

    Attributes:
        arch: the 6-tuple of ops of every cell.
        variant: ``"benchmark"`` or ``"official"`` (see :func:`add_official_cell_form`).
        stem, cells (ModuleList: N cells, block, N cells, block, N cells), lastact, classifier.

    BatchNorm roles (for synflow's official quirk, which removes stem/cell/final BNs but keeps
    the BNs inside the residual reduction blocks): ``reduction_batchnorms()`` and
    ``cell_stem_final_batchnorms()`` partition all BatchNorm2d modules of the network.
    """

    #: its forward runs unchanged on channels_last tensors (no ``.view`` of a feature map), so the
    #: proxies' private copies may switch to that layout (``zcfast.proxies.builtin_needs.channels_last_``)
    zcfast_channels_last = True

    def __init__(self, arch: tuple[str, ...], num_classes: int = 10, channels: int = 16,
                 cells_per_stage: int = 5) -> None:
        super().__init__()
        self.arch = arch
        #: "benchmark", or "official" after :func:`add_official_cell_form`.
        self.variant: str = "benchmark"
        c = channels
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        layers: list[nn.Module] = []
        shared: dict[str, nn.Module] = {}
        c_prev = c
        for stage, width in enumerate((c, 2 * c, 4 * c)):
            if stage > 0:
                layers.append(ResNetBasicBlock(c_prev, width))
                c_prev = width
            for _ in range(cells_per_stage):
                layers.append(NB201Cell(arch, width, shared))
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.cells:
            x = layer(x)
        x = self.lastact(x)
        x = self.global_pooling(x).flatten(1)
        return self.classifier(x)

    def reduction_batchnorms(self) -> list[nn.BatchNorm2d]:
        """BatchNorms inside the residual reduction blocks (kept by the official NB201 synflow)."""
        return [m for layer in self.cells if isinstance(layer, ResNetBasicBlock)
                for m in layer.modules() if isinstance(m, nn.BatchNorm2d)]

    def cell_stem_final_batchnorms(self) -> list[nn.BatchNorm2d]:
        """Stem, cell and final BatchNorms (the ones the official NB201 synflow removes)."""
        keep = {id(m) for m in self.reduction_batchnorms()}
        return [m for m in self.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in keep]

    def cell_convs(self) -> list[nn.Conv2d]:
        """Every convolution inside the cells, in module order (reduction blocks excluded)."""
        return [m for layer in self.cells if isinstance(layer, NB201Cell)
                for m in layer.modules() if isinstance(m, nn.Conv2d)]

    def zcfast_cells(self) -> list[tuple[str, nn.Module]]:
        """The cells contract (:mod:`zcfast.proxies.cells`): the stem, then every cell and
        residual reduction block in forward order, under their qualified names (as AZ-NAS's
        ``extract_cell_features``: stem output + every ``cells`` output)."""
        return [("stem", self.stem)] + [(f"cells.{i}", layer) for i, layer in enumerate(self.cells)]


def add_official_cell_form(net: NB201Network, generator: torch.Generator | None = None) -> int:
    """Turn a benchmark network into the zero-cost-nas paper's NB201 model, in place.

    The official model (``foresight/models/nasbench2_ops.py``) builds cell ops as ReLU ->
    ``Conv2d(bias=not affine)`` -> ``BatchNorm2d(affine=False, track_running_stats=False)``:
    every cell conv gets a bias, initialised as PyTorch's default (uniform in
    ±1/sqrt(fan_in)), drawn here from ``generator`` (default: torch's global generator) in
    ``cell_convs()`` order, *after* every weight was drawn; every cell BatchNorm is replaced by
    an affine-free, statistics-free one. Stem, final and reduction-block layers are unchanged
    (as the official model). So the conv weights equal the benchmark network's, and only
    proxies that see the bias differ: fisher (it hooks the conv output Wx + b) and synflow
    (which removes cell BatchNorms, so |b| enters the flow); before a batch-statistics
    BatchNorm the bias cancels in the forward pass. (Whether the official cell BatchNorms
    track running statistics does not matter: every proxy runs in training mode, which uses
    batch statistics either way.)

    Returns:
        the number of convolutions that received a bias.
    """
    n = 0
    for conv in net.cell_convs():
        if conv.bias is not None:
            raise ValueError("add_official_cell_form: the network already has cell conv biases")
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] // conv.groups
        bound = 1.0 / math.sqrt(fan_in)
        bias = torch.empty(conv.out_channels, dtype=conv.weight.dtype)
        bias.uniform_(-bound, bound, generator=generator)
        conv.bias = nn.Parameter(bias.to(conv.weight.device))
        n += 1
    for layer in net.cells:
        if not isinstance(layer, NB201Cell):
            continue
        for op in layer.edges:
            if isinstance(op, ReLUConvBN) and isinstance(op[2], nn.BatchNorm2d):
                bn = op[2]
                # no parameters or buffers: nothing to move to the network's device
                op[2] = nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum,
                                       affine=False, track_running_stats=False)
    net.variant = "official"
    return n


# --------------------------------------------------------------------------------------------
# Ground-truth table
# --------------------------------------------------------------------------------------------
_TABLE_LOCK = threading.Lock()
_TABLE: dict[str, np.ndarray] | None = None
_INDEX: dict[tuple[str, ...], int] | None = None
TABLE_FILE = "nb201_groundtruth_merged.csv.gz"


def _read_table() -> dict[str, np.ndarray]:
    ref = resources.files("zcfast") / "assets" / "nb201" / TABLE_FILE
    raw = ref.read_bytes()
    text = gzip.decompress(raw).decode("utf-8")
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    rows = list(reader)
    if len(rows) != NUM_ARCHS:
        raise RuntimeError(f"{TABLE_FILE}: expected {NUM_ARCHS} rows, found {len(rows)}")
    cols = list(zip(*rows))
    out: dict[str, np.ndarray] = {}
    for name, col in zip(header, cols):
        if name == "index":
            out[name] = np.array(col, dtype=np.int64)
        elif name == "arch_str":
            out[name] = np.array(col, dtype=object)
        elif name == "naslib_op_indices":
            out[name] = np.array([[int(v) for v in s.strip("()").split(",")] for s in col], dtype=np.int64)
        else:
            out[name] = np.array([float(v) if v else np.nan for v in col], dtype=np.float64)
    if not np.array_equal(out["index"], np.arange(NUM_ARCHS)):
        raise RuntimeError(f"{TABLE_FILE}: 'index' column is not 0..{NUM_ARCHS - 1} in order")
    for arr in out.values():
        arr.setflags(write=False)
    return out


def table() -> dict[str, np.ndarray]:
    """The shipped NB201 ground-truth table, loaded once (thread-safe) and cached.

    Returns:
        column name → read-only array of length 15,625 in benchmark index order:
        ``index`` int64 [N]; ``arch_str`` object [N]; ``naslib_op_indices`` int64 [N, 6];
        every other column float64 [N] with NaN where the source has no value. Accuracies are
        percentages; ``cifar10valid_hp12_cost_robot`` is the 12-epoch training cost.
    """
    global _TABLE
    if _TABLE is None:
        with _TABLE_LOCK:
            if _TABLE is None:
                _TABLE = _read_table()
    return _TABLE


def _arch_index() -> dict[tuple[str, ...], int]:
    global _INDEX
    if _INDEX is None:
        t = table()
        with _TABLE_LOCK:
            if _INDEX is None:
                _INDEX = {parse_arch_str(s): i for i, s in enumerate(t["arch_str"])}
    return _INDEX


_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16_120": "imagenet16_120",
             "imagenet16-120": "imagenet16_120", "imagenet": "imagenet16_120"}

#: shipped-table metric → column template (``{d}``: cifar10 / cifar100 / imagenet16_120).
_SHIPPED_METRICS: dict[str, str] = {
    "test": "{d}_test_nats",
    "test_robot": "{d}_test_robot",
    "test_fewshotnas": "{d}_test_fewshotnas",
    "valid": "{d}_val_nbsuitezero",
    "hp12_valacc": "cifar10valid_hp12_valacc_robot",
    "hp12_cost": "cifar10valid_hp12_cost_robot",
}
#: the metrics that need a benchmark file (they are not in the shipped table) → (view of
#: :data:`VIEWS`, training epochs); the column is ``zcfast.formats.nb201.column_name`` of that
#: view's official dataset and split at those epochs (:func:`file_column`).
FILE_METRICS: dict[str, tuple[str, int]] = {
    "paper": ("paper_test", 200), "paper_valid": ("paper_valid", 200), "paper_train": ("paper_train", 200),
    **{f"{v}_hp{h}": (v, h) for v in ("test", "valid", "train") for h in (200, 12)},
}
#: every metric name of ``NB201Space.ground_truth``: the shipped table's, then the benchmark file's.
METRICS: tuple[str, ...] = (*_SHIPPED_METRICS, *FILE_METRICS)
#: dataset → view → the official (dataset, split) of a benchmark file's column.
#: ``test`` / ``valid`` / ``train``: the NATS-Bench API's own mapping of a dataset's test / valid /
#: train set (CIFAR-10: ``cifar10`` ori-test and train, ``cifar10-valid`` x-valid; the others:
#: x-test, x-valid, train of their own run). ``paper_*``: what the zero-cost paper's
#: ``get_more_info('cifar10-valid' if cifar10 else dataset, hp='200')`` reads (CIFAR-10: the
#: ``cifar10-valid`` run's ori-test / x-valid / train).
VIEWS: dict[str, dict[str, tuple[str, str]]] = {
    "cifar10": {"test": ("cifar10", "ori-test"), "valid": ("cifar10-valid", "x-valid"), "train": ("cifar10", "train"),
                "paper_test": ("cifar10-valid", "ori-test"), "paper_valid": ("cifar10-valid", "x-valid"),
                "paper_train": ("cifar10-valid", "train")},
    **{d: {"test": (o, "x-test"), "valid": (o, "x-valid"), "train": (o, "train"), "paper_test": (o, "x-test"),
           "paper_valid": (o, "x-valid"), "paper_train": (o, "train")}
       for d, o in (("cifar100", "cifar100"), ("imagenet16_120", "ImageNet16-120"))},
}
#: Environment variable naming the benchmark file of ``NB201Space()`` without ``data_path``.
ENV_PATH = "ZCFAST_NB201_PATH"
#: The benchmark files ``data_path`` takes, for messages.
BENCHMARK_FILES = ("NAS-Bench-201-v1_0-e61699.pth, NAS-Bench-201-v1_1-096897.pth or the NATS-Bench "
                   "folder NATS-tss-v1_0-3ffb9-simple/")
_FILE_COLUMN = re.compile(r"_hp\d+(_seed\d+)?$")
_NON_NUMERIC = ("index", "arch_str", "naslib_op_indices")


def _dataset(dataset: str) -> str:
    d = _DATASETS.get(str(dataset).lower())
    if d is None:
        raise ValueError(f"NB201 unknown dataset {dataset!r}; expected cifar10, cifar100 or imagenet16_120")
    return d


def _needs_file(metric: str) -> str:
    return (f"NB201 metric {metric!r} needs a benchmark file ({BENCHMARK_FILES}): pass "
            f"NB201Space(data_path=...), call set_data_path(...) or set ${ENV_PATH}; the shipped table's "
            f"metrics are {sorted(m for m in METRICS if m not in FILE_METRICS)}")


def file_column(dataset: str, metric: str) -> str:
    """The column of a benchmark file's table (:mod:`zcfast.formats.nb201`) that one of
    :data:`FILE_METRICS` reads: ``file_column("cifar10", "paper")`` → ``cifar10valid_oritest_acc_hp200``."""
    if metric not in FILE_METRICS:
        raise ValueError(f"NB201 metric {metric!r} is not a benchmark-file metric; expected one of "
                         f"{sorted(FILE_METRICS)}")
    from ..formats import nb201 as fmt

    view, epochs = FILE_METRICS[metric]
    return fmt.column_name(*VIEWS[_dataset(dataset)][view], epochs)


def column_for(dataset: str, metric: str = "test") -> str:
    """The shipped-table column that ``ground_truth(arch, dataset, metric)`` reads.

    ``metric`` is one of ``METRICS`` or a raw numeric column name of ``table()``. The
    :data:`FILE_METRICS` need a benchmark file: ``NB201Space(data_path=...).column_for``.
    """
    t = table()
    if metric in t and metric not in _NON_NUMERIC:
        return metric
    if metric in FILE_METRICS or (isinstance(metric, str) and _FILE_COLUMN.search(metric)):
        raise ValueError(_needs_file(metric))
    d = _dataset(dataset)
    if metric not in METRICS:
        raise ValueError(f"NB201 unknown metric {metric!r}; expected one of {sorted(METRICS)} or a column name")
    if metric.startswith("hp12") and d != "cifar10":
        raise ValueError(f"NB201 metric {metric!r} exists only for cifar10 (cifar10-valid, 12 epochs)")
    col = _SHIPPED_METRICS[metric].format(d=d)
    if col not in t:
        raise ValueError(f"NB201 metric {metric!r} is not available for dataset {d!r} (no column {col!r})")
    return col


_BENCH_LOCK = threading.Lock()
#: (realpath, mtime_ns, size) → converted benchmark table, shared by the spaces of one process
_BENCH: dict[tuple[str, int, int], dict[str, np.ndarray]] = {}


def load_benchmark(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The table of a benchmark file or folder (``zcfast.formats.nb201.load_table``: converted
    once into the cache, then reused), checked against the shipped benchmark order and kept for
    the process.

    Raises:
        FileNotFoundError: ``path`` does not exist. ValueError: not a NAS-Bench-201 benchmark
        (unreadable, foreign pickle, wrong layout, or architectures not in benchmark order).
    """
    from ..formats import nb201 as fmt

    p = os.path.realpath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(p):
        raise FileNotFoundError(f"NB201 benchmark file not found: {str(path)!r} (expected {BENCHMARK_FILES})")
    st = os.stat(p)
    key = (p, st.st_mtime_ns, st.st_size)
    with _BENCH_LOCK:
        hit = _BENCH.get(key)
    if hit is not None:
        return hit
    bench = fmt.load_table(p)
    shipped = table()["arch_str"]
    wrong = np.flatnonzero(bench["arch_str"] != shipped)
    if wrong.size:
        i = int(wrong[0])
        raise ValueError(f"{str(path)!r} is not NAS-Bench-201 in benchmark order: architecture {i} is "
                         f"{bench['arch_str'][i]!r}, the benchmark's is {shipped[i]!r}")
    with _BENCH_LOCK:
        _BENCH[key] = bench
    return bench


# --------------------------------------------------------------------------------------------
# The space
# --------------------------------------------------------------------------------------------
class NB201Space(SearchSpace):
    """NAS-Bench-201. ``Arch`` = tuple of 6 op names in string-edge order (``EDGES``).

    Methods also accept the official string wherever an arch is expected.

    Args:
        data_path: a benchmark file or folder (``BENCHMARK_FILES``; default ``$ZCFAST_NB201_PATH``)
            whose every column ``ground_truth`` can then read (the :data:`FILE_METRICS` and the
            raw columns of :mod:`zcfast.formats.nb201`). Without one, the shipped table answers
            alone, as always. Read (converted once, cached) on first use; a pickled space keeps
            the path only.
    """

    name = "nb201"
    num_choices = [len(OPS)] * 6
    #: network variants ``build`` accepts (``variant=``); the first is the default.
    variants: tuple[str, ...] = VARIANTS

    def __init__(self, data_path: str | os.PathLike[str] | None = None) -> None:
        self._data_path = data_path
        self._bench: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for worker processes): keeps the data path, drops the loaded table."""
        return {"_data_path": self._data_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.get("_data_path"))

    @property
    def data_path(self) -> str | None:
        """The benchmark file in use: ``data_path`` / ``set_data_path``, else ``$ZCFAST_NB201_PATH``,
        else ``None`` (shipped table only)."""
        p = self._data_path or os.environ.get(ENV_PATH) or None
        return None if p is None else os.fspath(p)

    def set_data_path(self, path: str | os.PathLike[str] | None) -> None:
        """Use ``path`` as the benchmark file (read on next use); ``None``: the shipped table only."""
        with self._lock:
            self._data_path, self._bench = path, None

    def benchmark_table(self) -> dict[str, np.ndarray] | None:
        """The configured benchmark file's table (:func:`load_benchmark`), or ``None`` without one.

        Raises:
            FileNotFoundError / ValueError: the configured file is missing or not NAS-Bench-201.
        """
        path = self.data_path
        if path is None:
            return None
        with self._lock:
            if self._bench is None:
                self._bench = load_benchmark(path)
            return self._bench

    def column_for(self, dataset: str, metric: str = "test") -> str:
        """The column ``ground_truth(arch, dataset, metric)`` reads: the shipped table's for its
        metrics and columns, and for any metric without a benchmark file (:func:`column_for`, the
        one rule, with its messages), else the benchmark file's (:data:`FILE_METRICS` via
        :func:`file_column`, or a raw column name of that table)."""
        shipped = table()
        on_file = not ((metric in shipped and metric not in _NON_NUMERIC)
                       or (metric in METRICS and metric not in FILE_METRICS))
        bench = self.benchmark_table() if on_file else None  # a shipped metric never reads the file
        if bench is None:
            return column_for(dataset, metric)
        if metric in bench and metric not in _NON_NUMERIC:
            return metric
        if metric not in FILE_METRICS:
            raise ValueError(f"NB201 unknown metric {metric!r}; expected one of {sorted(METRICS)}, a column of "
                             f"the shipped table or of the benchmark file {self.data_path!r}")
        col = file_column(dataset, metric)
        if col not in bench:
            raise ValueError(f"NB201 metric {metric!r} ({col}) is not in the benchmark file {self.data_path!r} "
                             "(NAS-Bench-201 v1.0 has 12-epoch results for cifar10-valid only)")
        return col

    def has_metric(self, dataset: str, metric: str) -> bool:
        """Whether ``ground_truth(arch, dataset, metric)`` has values here: the metric resolves to a
        column (shipped, or of the configured benchmark file) holding at least one finite value.
        ``False`` for a benchmark-file metric without a file.

        Raises:
            FileNotFoundError / ValueError: a configured benchmark file that is missing or damaged.
        """
        self.benchmark_table()  # a configured file that cannot be read is an error, not "no"
        try:
            col = self.column_for(dataset, metric)
        except ValueError:
            return False
        arr = table()[col] if col in table() else self.benchmark_table()[col]  # type: ignore[index]
        return bool(np.isfinite(arr).any())

    def size(self) -> int:
        return NUM_ARCHS

    def sample(self, rng: random.Random) -> tuple[str, ...]:
        """Uniform over all 5^6 architectures: one ``rng.randrange(5)`` per edge, in edge order."""
        check_rng(rng)
        return tuple(OPS[rng.randrange(len(OPS))] for _ in range(6))

    def enumerate(self) -> Iterator[tuple[str, ...]]:
        """All 15,625 architectures in official benchmark index order."""
        for s in table()["arch_str"]:
            yield parse_arch_str(s)

    def index(self, arch: Any) -> int:
        """Benchmark index (0..15624) of ``arch``."""
        return _arch_index()[check_arch(arch)]

    def arch_at(self, index: int) -> tuple[str, ...]:
        """Architecture at benchmark ``index``; ValueError if out of range."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < NUM_ARCHS:
            raise ValueError(f"NB201 index {index!r} out of range 0..{NUM_ARCHS - 1}")
        return parse_arch_str(table()["arch_str"][int(index)])

    def neighbours(self, arch: Any) -> list[tuple[str, ...]]:
        """The 24 one-edit neighbours (each edge × each other op), edge-major, ops in ``OPS`` order."""
        a = check_arch(arch)
        out = []
        for i in range(6):
            for op in OPS:
                if op != a[i]:
                    out.append(a[:i] + (op,) + a[i + 1:])
        return out

    def encode(self, arch: Any) -> str:
        return arch_str(arch)

    def decode(self, text: str) -> tuple[str, ...]:
        return parse_arch_str(text)

    def key(self, arch: Any) -> str:
        """32-hex SHA-256 prefix of ``canonical_expr(arch)`` (stable across runs and machines).

        Isomorphism rule: see ``canonical_expr``. It is a coarsening of the benchmark's own
        notion (``unique_str``, 6,466 classes): every pair of cells the benchmark calls
        isomorphic shares a key, and in addition ops on edges off every input→output path
        never matter (``key(a) == key(prune(a))``), which the benchmark's text rule misses
        for nodes that sum several zeros. 4,930 distinct keys over the 15,625 cells. Use
        ``encode`` or ``index`` to tell isomorphic cells apart.
        """
        return stable_digest("nb201:" + canonical_expr(arch))

    def to_choices(self, arch: Any) -> list[int]:
        return [_OP_INDEX[op] for op in check_arch(arch)]

    def from_choices(self, choices: Sequence[int]) -> tuple[str, ...]:
        return tuple(OPS[c] for c in self._check_choices(choices))

    def to_naslib(self, arch: Any) -> tuple[int, ...]:
        return to_naslib(arch)

    def from_naslib(self, indices: Sequence[int]) -> tuple[str, ...]:
        return from_naslib(indices)

    def graph(self, arch: Any) -> tuple[np.ndarray, np.ndarray]:
        """Ops-on-nodes DAG: V = 8 (input, the 6 edges' ops in string order, output).

        Returns:
            adjacency [8, 8] float32 (row → column), op one-hot [8, 7] float32 with columns
            ``OPS`` (0..4), input (5), output (6). Op vertex e feeds op vertex f when e's
            destination node is f's source node; edges leaving node 0 hang off the input
            vertex, edges entering node 3 feed the output vertex.
        """
        a = check_arch(arch)
        adj = np.zeros((8, 8), dtype=np.float32)
        feat = np.zeros((8, len(OPS) + 2), dtype=np.float32)
        feat[0, len(OPS)] = 1.0
        feat[7, len(OPS) + 1] = 1.0
        for e, ((s, d), op) in enumerate(zip(EDGES, a)):
            feat[e + 1, _OP_INDEX[op]] = 1.0
            if s == 0:
                adj[0, e + 1] = 1.0
            if d == 3:
                adj[e + 1, 7] = 1.0
            for f, (s2, _) in enumerate(EDGES):
                if s2 == d:
                    adj[e + 1, f + 1] = 1.0
        return adj, feat

    def build(self, arch: Any, num_classes: int = 10, *, channels: int = 16,
              cells_per_stage: int = 5, variant: Variant = "benchmark",
              bias_generator: torch.Generator | None = None) -> NB201Network:
        """The NB201 network (default 16 channels, 5 cells per stage; 10/100/120 classes).

        Args:
            variant: ``"benchmark"`` (default): the benchmark's own network, bias-free convs and
                affine BatchNorm everywhere. ``"official"``: the zero-cost-nas paper's model: cell
                convs with a bias, cell BatchNorms affine-free and statistics-free
                (:func:`add_official_cell_form`). The weights are drawn first, in the same order
                for both, so under the same seed the conv and linear weights are identical.
            bias_generator: where the ``official`` variant draws its cell conv biases (after
                all weights); default torch's global generator. ``zcfast.scoring.build_seeded``
                passes one seeded from (init seed, architecture).

        Raises:
            ValueError: bad architecture, ``num_classes``, ``channels``, ``cells_per_stage`` or
                an unknown ``variant`` (named in the message).
        """
        a = check_arch(arch)
        num_classes = check_num_classes(num_classes)
        variant = check_variant(variant)
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if not isinstance(cells_per_stage, int) or cells_per_stage < 0:
            raise ValueError(f"cells_per_stage must be a non-negative int, got {cells_per_stage!r}")
        net = NB201Network(a, num_classes, channels, cells_per_stage)
        if variant == "official":
            add_official_cell_form(net, bias_generator)
        return net

    def ground_truth_problem(self, dataset: str | None = None) -> str | None:
        """``None`` for the three NB201 datasets; the reason for any other ``dataset``, or when the
        configured benchmark file (``data_path`` / ``$ZCFAST_NB201_PATH``) does not exist (it is
        not read here: a damaged file is refused, naming it, when it is first used)."""
        if dataset is not None and str(dataset).lower() not in _DATASETS:
            return (f"NB201 has no ground truth for dataset {dataset!r}; it has cifar10, cifar100 and "
                    "ImageNet16-120")
        path = self.data_path
        if path is not None and not os.path.exists(os.path.expanduser(path)):
            source = "data_path" if self._data_path else f"${ENV_PATH}"
            return f"the NAS-Bench-201 benchmark file {path!r} (from {source}) does not exist"
        return None

    def ground_truth(self, arch: Any, dataset: str = "cifar10", metric: str = "test") -> float:
        """Benchmark accuracy (%) of ``arch`` (or the cost a metric names).

        Shipped metrics (column read, ``{d}`` = cifar10 / cifar100 / imagenet16_120):
          ``test`` (default): ``{d}_test_nats``, 200-epoch test accuracy, mean over seeds
          (for CIFAR-10 this is the run trained on train+valid, not the paper's cifar10-valid);
          ``test_robot``: ``{d}_test_robot``; ``test_fewshotnas``: cifar10 only;
          ``valid``: ``{d}_val_nbsuitezero`` (cifar10, imagenet16_120);
          ``hp12_valacc`` / ``hp12_cost``: cifar10-valid 12-epoch validation accuracy / cost;
          or any numeric column name of ``table()``.
        With a benchmark file (``data_path``; :data:`FILE_METRICS`, final epoch, mean over seeds):
          ``paper``: the zero-cost paper's column, ``get_more_info('cifar10-valid' if cifar10 else
          dataset, hp='200')['test-accuracy']`` (CIFAR-10: the cifar10-valid run's ori-test
          accuracy; CIFAR-100 / ImageNet16-120: x-test); ``paper_valid`` / ``paper_train``: the
          same call's valid / train accuracy;
          ``test_hp200`` / ``test_hp12``, ``valid_hp200`` / ``valid_hp12``, ``train_hp200`` /
          ``train_hp12``: the dataset's test / valid / train set at that many training epochs, by
          the NATS-Bench API's mapping (CIFAR-10 test: the ``cifar10`` run's ori-test; CIFAR-10
          valid: the ``cifar10-valid`` run's x-valid; others: their own run's x-test / x-valid);
          or any column of the converted file (``zcfast.formats.nb201``: e.g.
          ``cifar10valid_oritest_acc_hp200_seed777``, ``cifar100_flops_hp200``), whatever
          ``dataset`` is. Returns NaN where the source has no value.

        Raises:
            ValueError: unknown dataset or metric; a benchmark-file metric without a file (the
            message names the files that work).
        """
        col = self.column_for(dataset, metric)
        t = table()
        if col in t:
            return float(t[col][self.index(arch)])
        return float(self.benchmark_table()[col][self.index(arch)])  # type: ignore[index]
