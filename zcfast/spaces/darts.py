"""The DARTS search space (as used by NAS-Bench-301 and NDS-DARTS).

A genotype has a normal and a reduction cell, each with 4 intermediate nodes (2..5); node
``i`` sums two ops applied to two *distinct* earlier states (0 = output of cell k-2, 1 =
output of cell k-1, 2.. = earlier nodes); the cell outputs the concatenation of nodes 2..5.
Ops (``OPS``): max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5,
dil_conv_3x3, dil_conv_5x5 (no ``none``).

Text format (the DARTS repository's ``Genotype`` repr)::

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=range(2, 6),
             reduce=[...], reduce_concat=range(2, 6))

Canonical form: within each node the two (op, input) pairs are ordered by input index (the
sum is commutative, so this does not change the network's function). ``Genotype`` here is a
namedtuple of tuples (hashable). The network is the DARTS ``NetworkCIFAR`` (reimplemented)
as NAS-Bench-301 trained it: 32 initial channels, 8 cells (reductions at cells 2 and 5),
stem multiplier 3, affine BatchNorm, CIFAR-10; the auxiliary head (used in NB301 training,
weight 0.4) and drop-path (0.2 there) are optional and off by default.
"""
from __future__ import annotations

import ast
import itertools
import os
import random
import sys
from collections import namedtuple
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from .base import SearchSpace, check_num_classes, check_rng, stable_digest

OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                        "dil_conv_3x3", "dil_conv_5x5")
_OP_INDEX = {op: i for i, op in enumerate(OPS)}
NUM_NODES = 4
CONCAT: tuple[int, ...] = (2, 3, 4, 5)
#: input pairs of node k (k = 0..3, node id k + 2), in lexicographic order.
_PAIRS = [list(itertools.combinations(range(k + 2), 2)) for k in range(NUM_NODES)]
#: NB301 ConfigSpace edge index of (node k, input j) = _EDGE_OFFSET[k] + j.
_EDGE_OFFSET = (0, 2, 5, 9)
_NB301_PREFIX = "NetworkSelectorDatasetInfo:darts:"
#: Environment variable naming the NAS-Bench-301 surrogate models folder (as ``--benchmark``).
ENV_PATH = "ZCFAST_NB301_PATH"

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
Genotype.__doc__ = """DARTS genotype: ``normal``/``reduce`` = tuple of 8 (op, input) pairs (two per
node, node 2 first), ``*_concat`` = (2, 3, 4, 5). Build with ``make_genotype``."""


# --------------------------------------------------------------------------------------------
# Validation and text format
# --------------------------------------------------------------------------------------------
def _check_cell(cell: Any, name: str) -> tuple[tuple[str, int], ...]:
    if isinstance(cell, (str, bytes)) or not isinstance(cell, (list, tuple)):
        raise ValueError(f"DARTS {name} cell must be a list of (op, input) pairs, got {type(cell).__name__}")
    if len(cell) != 2 * NUM_NODES:
        raise ValueError(f"DARTS {name} cell must have {2 * NUM_NODES} (op, input) pairs, got {len(cell)}")
    out: list[tuple[str, int]] = []
    for k in range(NUM_NODES):
        pair = []
        for e in (0, 1):
            item = cell[2 * k + e]
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ValueError(f"DARTS {name} cell entry {2 * k + e} must be an (op, input) pair, got {item!r}")
            op, j = item
            if op not in _OP_INDEX:
                raise ValueError(f"DARTS unknown op {op!r} in {name} cell (node {k + 2}); expected one of {OPS}")
            if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= j < k + 2:
                raise ValueError(f"DARTS {name} cell node {k + 2}: input {j!r} out of range 0..{k + 1}")
            pair.append((str(op), int(j)))
        if pair[0][1] == pair[1][1]:
            raise ValueError(f"DARTS {name} cell node {k + 2}: both edges take input {pair[0][1]}; "
                             "the NB301 space requires two distinct inputs")
        out.extend(sorted(pair, key=lambda p: p[1]))
    return tuple(out)


def _check_concat(concat: Any, name: str) -> tuple[int, ...]:
    try:
        c = tuple(int(v) for v in concat)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"DARTS {name}_concat must be a sequence of ints, got {concat!r}") from exc
    if c != CONCAT:
        raise ValueError(f"DARTS {name}_concat must be range(2, 6) (all intermediate nodes), got {list(c)}")
    return CONCAT


def make_genotype(normal: Sequence, reduce: Sequence, normal_concat: Sequence[int] = CONCAT,
                  reduce_concat: Sequence[int] = CONCAT) -> Genotype:
    """Validated, canonical (pairs ordered by input) hashable genotype; ValueError naming the problem."""
    return Genotype(_check_cell(normal, "normal"), _check_concat(normal_concat, "normal"),
                    _check_cell(reduce, "reduce"), _check_concat(reduce_concat, "reduce"))


def check_genotype(g: Any) -> Genotype:
    """Accept a genotype-like object (namedtuple from any DARTS codebase, or its text)."""
    if isinstance(g, str):
        return parse_genotype(g)
    try:
        return make_genotype(g.normal, g.reduce, g.normal_concat, g.reduce_concat)
    except AttributeError as exc:
        raise ValueError(f"DARTS architecture must be a Genotype or its text, got {type(g).__name__}") from exc


def _literal(node: ast.AST, what: str) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        if node.keywords or not 1 <= len(node.args) <= 3:
            raise ValueError(f"DARTS {what}: malformed range(...)")
        return range(*[_literal(a, what) for a in node.args])
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise ValueError(f"DARTS {what}: only literals and range(...) are allowed") from exc


def parse_genotype(text: str) -> Genotype:
    """Parse ``Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)``.

    Safe: the text is parsed, never evaluated. ValueError naming the problem.
    """
    if not isinstance(text, str):
        raise ValueError(f"DARTS genotype text must be str, got {type(text).__name__}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"DARTS genotype text is not well formed: {exc.msg}") from exc
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
        raise ValueError("DARTS genotype text must be 'Genotype(normal=..., normal_concat=..., reduce=..., reduce_concat=...)'")
    if call.args:
        raise ValueError("DARTS genotype fields must be given by keyword (normal=..., reduce=...)")
    fields = {}
    for kw in call.keywords:
        if kw.arg not in Genotype._fields:
            raise ValueError(f"DARTS genotype has unknown field {kw.arg!r}")
        if kw.arg in fields:
            raise ValueError(f"DARTS genotype field {kw.arg!r} given twice")
        fields[kw.arg] = _literal(kw.value, kw.arg)
    missing = [f for f in Genotype._fields if f not in fields]
    if missing:
        raise ValueError(f"DARTS genotype is missing field(s) {missing}")
    return make_genotype(fields["normal"], fields["reduce"], fields["normal_concat"], fields["reduce_concat"])


def genotype_str(g: Any) -> str:
    """The DARTS repr of a genotype, lists for cells and ``range(2, 6)`` for concats."""
    g = check_genotype(g)
    n = ", ".join(f"({op!r}, {j})" for op, j in g.normal)
    r = ", ".join(f"({op!r}, {j})" for op, j in g.reduce)
    return f"Genotype(normal=[{n}], normal_concat=range(2, 6), reduce=[{r}], reduce_concat=range(2, 6))"


def to_nb301_config(g: Any) -> dict[str, str]:
    """The NB301 ConfigSpace keys (``NetworkSelectorDatasetInfo:darts:edge_normal_<e>``,
    ``inputs_node_normal_<n>`` = "a_b", same for reduce) of a genotype."""
    g = check_genotype(g)
    out: dict[str, str] = {}
    for name, cell in (("normal", g.normal), ("reduce", g.reduce)):
        for k in range(NUM_NODES):
            (op0, j0), (op1, j1) = cell[2 * k], cell[2 * k + 1]
            out[f"{_NB301_PREFIX}edge_{name}_{_EDGE_OFFSET[k] + j0}"] = op0
            out[f"{_NB301_PREFIX}edge_{name}_{_EDGE_OFFSET[k] + j1}"] = op1
            if k > 0:
                out[f"{_NB301_PREFIX}inputs_node_{name}_{k + 2}"] = f"{j0}_{j1}"
    return out


def from_nb301_config(config: dict[str, Any]) -> Genotype:
    """Genotype of an NB301 configuration dict (other keys are ignored)."""
    cells = {}
    for name in ("normal", "reduce"):
        cell = []
        for k in range(NUM_NODES):
            if k == 0:
                inputs = (0, 1)
            else:
                key = f"{_NB301_PREFIX}inputs_node_{name}_{k + 2}"
                if key not in config:
                    raise ValueError(f"NB301 config is missing {key!r}")
                try:
                    inputs = tuple(int(v) for v in str(config[key]).split("_"))
                except ValueError as exc:
                    raise ValueError(f"NB301 config {key!r} must be 'a_b', got {config[key]!r}") from exc
                if len(inputs) != 2:
                    raise ValueError(f"NB301 config {key!r} must name two inputs, got {config[key]!r}")
            for j in inputs:
                key = f"{_NB301_PREFIX}edge_{name}_{_EDGE_OFFSET[k] + j}"
                if key not in config:
                    raise ValueError(f"NB301 config is missing {key!r}")
                cell.append((config[key], j))
        cells[name] = cell
    return make_genotype(cells["normal"], cells["reduce"])


# --------------------------------------------------------------------------------------------
# Network (DARTS NetworkCIFAR layout)
# --------------------------------------------------------------------------------------------
class ReLUConvBN(nn.Sequential):
    """ReLU → Conv2d (no bias) → BN. [N, C_in, H, W] → [N, C_out, H', W']."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
                         nn.BatchNorm2d(c_out))


class DilConv(nn.Sequential):
    """ReLU → dilated depthwise conv → pointwise conv → BN."""

    def __init__(self, c: int, kernel: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c, c, kernel, stride=stride, padding=padding, dilation=dilation, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False),
                         nn.BatchNorm2d(c))


class SepConv(nn.Sequential):
    """Two stacked (ReLU → depthwise conv → pointwise conv → BN); stride on the first."""

    def __init__(self, c: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c, c, kernel, stride=stride, padding=padding, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False),
                         nn.BatchNorm2d(c),
                         nn.ReLU(inplace=False),
                         nn.Conv2d(c, c, kernel, stride=1, padding=padding, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False),
                         nn.BatchNorm2d(c))


class FactorizedReduce(nn.Module):
    """ReLU, two stride-2 1x1 convs (second on the input shifted by one pixel), concat, BN.
    [N, C_in, H, W] → [N, C_out, H/2, W/2]; C_out must be even."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def _make_op(op: str, c: int, stride: int) -> nn.Module:
    if op == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if op == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if op == "sep_conv_3x3":
        return SepConv(c, 3, stride, 1)
    if op == "sep_conv_5x5":
        return SepConv(c, 5, stride, 2)
    if op == "dil_conv_3x3":
        return DilConv(c, 3, stride, 2, 2)
    if op == "dil_conv_5x5":
        return DilConv(c, 5, stride, 4, 2)
    raise ValueError(f"DARTS unknown op {op!r}")


def _drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x / keep * mask


class DartsCell(nn.Module):
    """One DARTS cell. Inputs s0 [N, C_pp, H0, W0], s1 [N, C_p, H, W] → [N, 4·C, H', W']
    (H' = H/2 for a reduction cell)."""

    def __init__(self, cell: tuple[tuple[str, int], ...], c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.indices = [j for _, j in cell]
        self.ops = nn.ModuleList(_make_op(op, c, 2 if reduction and j < 2 else 1) for op, j in cell)
        self.drop_prob = 0.0

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        drop = self.training and self.drop_prob > 0.0
        for k in range(NUM_NODES):
            hs = []
            for e in (2 * k, 2 * k + 1):
                op = self.ops[e]
                h = op(states[self.indices[e]])
                if drop and not isinstance(op, nn.Identity):
                    h = _drop_path(h, self.drop_prob)
                hs.append(h)
            states.append(hs[0] + hs[1])
        return torch.cat(states[2:], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS auxiliary classifier on the 8x8 features after cell 2·L/3. [N, C, 8, 8] → [N, classes]."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class DartsNetwork(nn.Module):
    """DARTS ``NetworkCIFAR``. Input [N, 3, H, W] → logits [N, num_classes].

    With ``auxiliary=True`` the auxiliary head exists; in training mode its logits are left in
    ``self.logits_aux`` (forward still returns the main logits only).
    """

    def __init__(self, genotype: Genotype, num_classes: int = 10, channels: int = 32, layers: int = 8,
                 auxiliary: bool = False, drop_path_prob: float = 0.0) -> None:
        super().__init__()
        self.genotype = genotype
        self._layers = layers
        self.drop_path_prob = drop_path_prob
        stem_c = 3 * channels
        self.stem = nn.Sequential(nn.Conv2d(3, stem_c, 3, padding=1, bias=False), nn.BatchNorm2d(stem_c))
        c_pp, c_p, c = stem_c, stem_c, channels
        cells: list[DartsCell] = []
        reduction_prev = False
        self._aux_pos = 2 * layers // 3
        c_aux = 0
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c *= 2
            cell = DartsCell(genotype.reduce if reduction else genotype.normal, c_pp, c_p, c,
                             reduction, reduction_prev)
            cell.drop_prob = drop_path_prob
            cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, len(CONCAT) * c
            if i == self._aux_pos:
                c_aux = c_p
        self.cells = nn.ModuleList(cells)
        self.auxiliary_head = AuxiliaryHeadCIFAR(c_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        self.logits_aux: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        self.logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self._aux_pos and self.auxiliary_head is not None and self.training:
                self.logits_aux = self.auxiliary_head(s1)
        return self.classifier(self.global_pooling(s1).flatten(1))

    def zcfast_cells(self) -> list[tuple[str, nn.Module]]:
        """The cells contract (:mod:`zcfast.proxies.cells`): the stem, then every normal and
        reduction cell in forward order. A DARTS cell reads the two previous features; the
        measures pair each cell with the one before it (its ``s1``)."""
        return [("stem", self.stem)] + [(f"cells.{i}", c) for i, c in enumerate(self.cells)]


# --------------------------------------------------------------------------------------------
# The space
# --------------------------------------------------------------------------------------------
class DartsSpace(SearchSpace):
    """DARTS / NAS-Bench-301 space. ``Arch`` = canonical ``Genotype`` (the text is accepted too)."""

    name = "darts"
    #: per cell (normal, then reduce), per node k: [input pair index in C(k+2, 2), op of the
    #: lower input, op of the higher input]; every choice vector is a valid genotype.
    num_choices = [n for _cell in range(2) for k in range(NUM_NODES) for n in (len(_PAIRS[k]), len(OPS), len(OPS))]

    def size(self) -> int:
        """(Π_k C(k+2, 2) · 7²)² = (180 · 7⁸)² ≈ 1.1e18 genotypes."""
        per_cell = 1
        for k in range(NUM_NODES):
            per_cell *= len(_PAIRS[k]) * len(OPS) ** 2
        return per_cell ** 2

    def sample(self, rng: random.Random) -> Genotype:
        """NB301-style: per node two distinct inputs (``rng.sample``) and two uniform ops."""
        check_rng(rng)
        cells = []
        for _ in range(2):
            cell = []
            for k in range(NUM_NODES):
                for j in rng.sample(range(k + 2), 2):
                    cell.append((OPS[rng.randrange(len(OPS))], j))
            cells.append(cell)
        return make_genotype(cells[0], cells[1])

    def __init__(self, data_path: str | os.PathLike[str] | None = None) -> None:
        self._data_path = data_path

    @property
    def data_path(self) -> str | None:
        """The NAS-Bench-301 surrogate models folder (``data_path`` / ``set_data_path``, else
        ``$ZCFAST_NB301_PATH``), or ``None``."""
        p = self._data_path or os.environ.get(ENV_PATH) or None
        return None if p is None else os.fspath(p)

    def set_data_path(self, path: str | os.PathLike[str] | None) -> None:
        """Use NAS-Bench-301's surrogate models in ``path`` (``nb_models``, or one model's folder)
        as ground truth (:mod:`zcfast.formats.nb301`; needs the ``nasbench301`` package)."""
        self._data_path = path

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (worker processes): the models folder only, never a loaded model."""
        return {"_data_path": self._data_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.get("_data_path"))

    def ground_truth_problem(self, dataset: str | None = None) -> str | None:
        """Why ``ground_truth`` cannot answer (None: it can): DARTS ships no ground truth; with a
        NAS-Bench-301 models folder (``--benchmark``) and the ``nasbench301`` package installed,
        the surrogate answers for CIFAR-10."""
        if dataset is not None and str(dataset).lower() != "cifar10":
            return f"NAS-Bench-301 has ground truth only for cifar10, not {dataset!r}"
        from ..formats import nb301

        if self.data_path is None:
            import importlib.util

            try:
                have = importlib.util.find_spec("nasbench301") is not None
            except (ValueError, ImportError):  # a module object without a spec (e.g. injected)
                have = sys.modules.get("nasbench301") is not None
            return ("no accuracy table is shipped for DARTS; its ground truth comes from the NAS-Bench-301 "
                    f"surrogate (nasbench301 {'is installed' if have else 'not installed'}): {nb301.INSTALL} "
                    f"(or ${ENV_PATH}); `zcfast scan --space darts` scores it without ground truth, and "
                    "`zcfast search` takes a user --trainer")
        return nb301.problem(self.data_path)

    def ground_truth(self, arch: Any, dataset: str = "cifar10", metric: str = "test") -> float:
        """NAS-Bench-301's noise-free surrogate prediction for ``arch``: ``test`` (default; the
        predicted CIFAR-10 test accuracy, percent, from the xgb model, else gnn_gin) or
        ``runtime`` (predicted training time, s, lgb_runtime). Needs a models folder
        (``data_path``) and the ``nasbench301`` package.

        Raises:
            ValueError naming what is missing (package, folder, model) or a bad dataset/metric.
        """
        if str(dataset).lower() != "cifar10":
            raise ValueError(f"NAS-Bench-301 has only the cifar10 dataset, got {dataset!r}")
        kinds = {"test": "accuracy", "accuracy": "accuracy", "runtime": "runtime"}
        if metric not in kinds:
            raise ValueError(f"NAS-Bench-301 unknown metric {metric!r}; expected test or runtime")
        from ..formats import nb301

        if self.data_path is None:
            raise ValueError(self.ground_truth_problem(dataset))
        return nb301.predict(self.data_path, check_genotype(arch), kinds[metric])

    def enumerate(self) -> Iterator[Genotype]:
        """Lazy enumeration in ``to_choices`` lexicographic order (≈1.1e18 items)."""
        for c in itertools.product(*(range(n) for n in self.num_choices)):
            yield self.from_choices(c)

    def neighbours(self, arch: Any) -> list[Genotype]:
        """Every genotype one edit away: one edge's op changed (8 × 6 per cell) or one edge's
        input changed to another input not used by the node's other edge."""
        g = check_genotype(arch)
        out: list[Genotype] = []
        for ci, cell in enumerate((g.normal, g.reduce)):
            for e, (op, j) in enumerate(cell):
                k = e // 2
                other = cell[e ^ 1][1]
                variants = [(o, j) for o in OPS if o != op] + [(op, jj) for jj in range(k + 2) if jj not in (j, other)]
                for v in variants:
                    new = list(cell)
                    new[e] = v
                    cells = [g.normal, g.reduce]
                    cells[ci] = tuple(new)
                    out.append(make_genotype(cells[0], cells[1]))
        return out

    def encode(self, arch: Any) -> str:
        return genotype_str(arch)

    def decode(self, text: str) -> Genotype:
        return parse_genotype(text)

    def key(self, arch: Any) -> str:
        """32-hex SHA-256 prefix of the canonical text (pairs ordered by input within nodes).

        Permutations of intermediate nodes are not merged (NB301 treats them as distinct).
        """
        return stable_digest("darts:" + genotype_str(arch))

    def to_choices(self, arch: Any) -> list[int]:
        g = check_genotype(arch)
        out = []
        for cell in (g.normal, g.reduce):
            for k in range(NUM_NODES):
                (op0, j0), (op1, j1) = cell[2 * k], cell[2 * k + 1]
                out += [_PAIRS[k].index((j0, j1)), _OP_INDEX[op0], _OP_INDEX[op1]]
        return out

    def from_choices(self, choices: Sequence[int]) -> Genotype:
        c = self._check_choices(choices)
        cells = []
        for ci in range(2):
            cell = []
            for k in range(NUM_NODES):
                p, o0, o1 = c[(ci * NUM_NODES + k) * 3: (ci * NUM_NODES + k) * 3 + 3]
                j0, j1 = _PAIRS[k][p]
                cell += [(OPS[o0], j0), (OPS[o1], j1)]
            cells.append(cell)
        return make_genotype(cells[0], cells[1])

    def to_nb301_config(self, arch: Any) -> dict[str, str]:
        return to_nb301_config(arch)

    def from_nb301_config(self, config: dict[str, Any]) -> Genotype:
        return from_nb301_config(config)

    def graph(self, arch: Any) -> tuple[np.ndarray, np.ndarray]:
        """Ops-on-nodes DAG of both cells, block-diagonal: per cell 11 vertices (input c_{k-2},
        input c_{k-1}, the 8 ops in genotype order, output), normal cell first → V = 22.

        Returns adjacency [22, 22] and one-hot [22, 9] float32 (columns: ``OPS`` 0..6,
        input 7, output 8). An op vertex feeds every op vertex that reads its node; ops of all
        four nodes feed the output (concatenation).
        """
        g = check_genotype(arch)
        v_cell = 2 * NUM_NODES + 3
        adj = np.zeros((2 * v_cell, 2 * v_cell), dtype=np.float32)
        feat = np.zeros((2 * v_cell, len(OPS) + 2), dtype=np.float32)
        for ci, cell in enumerate((g.normal, g.reduce)):
            b = ci * v_cell
            feat[b, len(OPS)] = feat[b + 1, len(OPS)] = 1.0
            out_v = b + v_cell - 1
            feat[out_v, len(OPS) + 1] = 1.0
            for e, (op, j) in enumerate(cell):
                v = b + 2 + e
                feat[v, _OP_INDEX[op]] = 1.0
                if j < 2:
                    adj[b + j, v] = 1.0
                else:
                    for src in (2 * (j - 2), 2 * (j - 2) + 1):
                        adj[b + 2 + src, v] = 1.0
                adj[v, out_v] = 1.0
        return adj, feat

    def build(self, arch: Any, num_classes: int = 10, *, channels: int = 32, layers: int = 8,
              auxiliary: bool = False, drop_path_prob: float = 0.0) -> DartsNetwork:
        """NB301's network: 32 initial channels, 8 cells, CIFAR-10 (options for other sizes)."""
        g = check_genotype(arch)
        num_classes = check_num_classes(num_classes)
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if not isinstance(layers, int) or layers < 3:
            raise ValueError(f"layers must be an int ≥ 3 (two reduction cells), got {layers!r}")
        if not 0.0 <= float(drop_path_prob) < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_path_prob!r}")
        return DartsNetwork(g, num_classes, channels, layers, bool(auxiliary), float(drop_path_prob))
