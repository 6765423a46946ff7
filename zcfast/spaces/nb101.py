"""NAS-Bench-101: cell DAGs of ≤ 7 vertices and ≤ 9 edges, 423,624 unique models.

An ``Arch`` is an ``NB101Arch`` (frozen dataclass): an upper-triangular 0/1 adjacency matrix
(tuple of tuples, row = source) and the op of each vertex (``input``, interior ops from
``OPS``, ``output``). Architectures are always kept *pruned* as the benchmark does: vertices
that are not on an input→output path are removed (``make_arch``).

``key`` is the benchmark's own graph hash (``hash_module``): an md5 fingerprint, invariant
to vertex relabelling, that reproduces the ``hash`` of the benchmark records.

The network is the benchmark's (reimplemented): stem Conv3x3-BN-ReLU with 128 channels;
3 stacks of 3 cells; 2x2 max-pool and channel doubling before stacks 2 and 3; global average
pooling and a dense layer. Inside a cell, vertices feeding the output split the output
channels (concatenated), the input is projected by Conv1x1-BN-ReLU wherever it feeds a vertex
or the output, and other vertices take the largest channel count of their successors.

Ground truth is read from a user-supplied file (``NB101Space(data_path=...)``, ``set_data_path``
or the ``ZCFAST_NB101_PATH`` environment variable), any of (:func:`zcfast.formats.nb101.load`):

- the benchmark's own ``nasbench_only108.tfrecord`` or ``nasbench_full.tfrecord`` (epochs 4, 12,
  36, 108; 3 runs each), converted once into a memory-mapped table in the cache
  (``zcfast.formats.cache``) on first use, then reused;
- such a converted table folder;
- JSON (or pickle) holding a list of records, or a dict hash → record, each with ``hash`` and
  ``results["108"]`` = list of runs with ``final_test_accuracy`` etc. (the format of NASLib's nb101
  records, see tests/assets).

A ``.pkl``/``.pickle`` file is read with :func:`zcfast.safe_pickle.load`, which admits only plain
containers and numpy arrays: a pickle that would run code is refused, never executed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..formats import nb101 as _formats_nb101
from .base import SearchSpace, check_num_classes, check_rng

INPUT, OUTPUT = "input", "output"
OPS: tuple[str, ...] = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")
MAX_VERTICES = 7
MAX_EDGES = 9
NUM_MODELS = 423624
ENV_PATH = "ZCFAST_NB101_PATH"
_OP_INDEX = {op: i for i, op in enumerate(OPS)}
_TRIU = [(i, j) for i in range(MAX_VERTICES) for j in range(i + 1, MAX_VERTICES)]


@dataclasses.dataclass(frozen=True)
class NB101Arch:
    """A pruned NB101 cell. ``matrix[i][j] == 1``: edge i → j (i < j). ``ops[0] == 'input'``,
    ``ops[-1] == 'output'``. Build with ``make_arch`` (validates and prunes)."""

    matrix: tuple[tuple[int, ...], ...]
    ops: tuple[str, ...]

    @property
    def num_vertices(self) -> int:
        return len(self.ops)

    @property
    def num_edges(self) -> int:
        return sum(map(sum, self.matrix))

    def np_matrix(self) -> np.ndarray:
        """Adjacency as int64 array [V, V]."""
        return np.array(self.matrix, dtype=np.int64).reshape(len(self.ops), len(self.ops))


# --------------------------------------------------------------------------------------------
# Validation, pruning, hashing
# --------------------------------------------------------------------------------------------
def _as_matrix(matrix: Any) -> np.ndarray:
    try:
        m = np.asarray(matrix)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"NB101 matrix is not a rectangular array: {exc}") from exc
    if m.dtype == object or m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"NB101 matrix must be square 2-D, got shape {m.shape}")
    if m.dtype == bool:
        m = m.astype(np.int64)
    if not np.issubdtype(m.dtype, np.number) or not np.all((m == 0) | (m == 1)):
        raise ValueError("NB101 matrix entries must be 0 or 1")
    m = m.astype(np.int64)
    if np.any(np.tril(m) != 0):
        raise ValueError("NB101 matrix must be strictly upper-triangular (edges go from lower to higher vertex)")
    return m


def _check_ops(ops: Any, n: int) -> list[str]:
    if isinstance(ops, np.ndarray):
        ops = ops.tolist()
    if isinstance(ops, str) or not isinstance(ops, (list, tuple)):
        raise ValueError(f"NB101 ops must be a list of op names, got {type(ops).__name__}")
    ops = list(ops)
    if len(ops) != n:
        raise ValueError(f"NB101 ops has {len(ops)} entries but the matrix has {n} vertices")
    if ops[0] != INPUT:
        raise ValueError(f"NB101 first op must be 'input', got {ops[0]!r}")
    if ops[-1] != OUTPUT:
        raise ValueError(f"NB101 last op must be 'output', got {ops[-1]!r}")
    for i, op in enumerate(ops[1:-1], start=1):
        if op not in _OP_INDEX:
            raise ValueError(f"NB101 unknown op {op!r} at vertex {i}; expected one of {OPS}")
    return ops


def prune(matrix: np.ndarray, ops: list[str]) -> tuple[np.ndarray, list[str]] | None:
    """Remove vertices not on an input→output path (the benchmark's ``ModelSpec._prune``).

    Returns None when the output is not reachable from the input (an invalid spec).
    """
    n = matrix.shape[0]
    fwd = {0}
    for j in range(1, n):
        if any(matrix[i, j] and i in fwd for i in range(j)):
            fwd.add(j)
    bwd = {n - 1}
    for i in range(n - 2, -1, -1):
        if any(matrix[i, j] and j in bwd for j in range(i + 1, n)):
            bwd.add(i)
    keep = sorted(fwd & bwd)
    if 0 not in keep or n - 1 not in keep:
        return None
    return matrix[np.ix_(keep, keep)], [ops[k] for k in keep]


def make_arch(matrix: Any, ops: Sequence[str]) -> NB101Arch:
    """Validate, prune and freeze a spec; ValueError naming the problem.

    Checks: square 0/1 strictly upper-triangular matrix of ≤ 7 vertices, ops match, output
    reachable from input, and after pruning ≤ 9 edges (the benchmark's limits).
    """
    m = _as_matrix(matrix)
    n = m.shape[0]
    if n < 2:
        raise ValueError(f"NB101 spec needs at least 2 vertices (input, output), got {n}")
    if n > MAX_VERTICES:
        raise ValueError(f"NB101 spec has {n} vertices; the benchmark allows at most {MAX_VERTICES}")
    op_list = _check_ops(ops, n)
    pruned = prune(m, op_list)
    if pruned is None:
        raise ValueError("NB101 spec is invalid: no path from the input to the output")
    pm, pops = pruned
    if int(pm.sum()) > MAX_EDGES:
        raise ValueError(f"NB101 spec has {int(pm.sum())} edges after pruning; the benchmark allows at most {MAX_EDGES}")
    return NB101Arch(tuple(tuple(int(v) for v in row) for row in pm), tuple(pops))


def check_arch(arch: Any) -> NB101Arch:
    """Accept an ``NB101Arch`` (re-validated and pruned), a (matrix, ops) pair or a dict
    with ``matrix``/``module_adjacency`` and ``ops``/``module_operations``."""
    if isinstance(arch, NB101Arch):
        return make_arch(arch.matrix, arch.ops)
    if isinstance(arch, dict):
        m = arch.get("matrix", arch.get("module_adjacency"))
        o = arch.get("ops", arch.get("module_operations"))
        if m is None or o is None:
            raise ValueError("NB101 spec dict needs 'matrix' (or 'module_adjacency') and 'ops' (or 'module_operations')")
        return make_arch(m, o)
    if isinstance(arch, (tuple, list)) and len(arch) == 2:
        return make_arch(arch[0], arch[1])
    raise ValueError(f"NB101 architecture must be an NB101Arch, (matrix, ops) or spec dict, got {type(arch).__name__}")


def graph_hash(matrix: np.ndarray, ops: Sequence[str]) -> str:
    """The benchmark's ``hash_module`` fingerprint (md5 hex) of a (pruned) spec.

    Vertex labels: input -1, output -2, interior ops their index in ``OPS``. Initial vertex
    hash = md5 of ``str((out_degree, in_degree, label))``; then, as many rounds as vertices,
    each vertex hash = md5(sorted in-neighbour hashes joined + '|' + sorted out-neighbour
    hashes joined + '|' + own hash); fingerprint = md5 of ``str(sorted(vertex hashes))``.
    """
    n = matrix.shape[0]
    labels = [-1] + [_OP_INDEX[o] for o in ops[1:-1]] + [-2]
    in_deg = matrix.sum(axis=0).tolist()
    out_deg = matrix.sum(axis=1).tolist()
    hashes = [hashlib.md5(str((out_deg[v], in_deg[v], labels[v])).encode()).hexdigest() for v in range(n)]
    rows = matrix.tolist()
    preds = [[w for w in range(n) if rows[w][v]] for v in range(n)]
    succs = [[w for w in range(n) if rows[v][w]] for v in range(n)]
    for _ in range(n):
        hashes = [
            hashlib.md5(("".join(sorted(hashes[w] for w in preds[v])) + "|"
                         + "".join(sorted(hashes[w] for w in succs[v])) + "|" + hashes[v]).encode()).hexdigest()
            for v in range(n)]
    return hashlib.md5(str(sorted(hashes)).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Network (benchmark layout)
# --------------------------------------------------------------------------------------------
class ConvBnRelu(nn.Sequential):
    """Conv2d ('same' padding, no bias) → BatchNorm2d (affine, TF defaults eps 1e-5, decay 0.997)
    → ReLU. [N, C_in, H, W] → [N, C_out, H, W]."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride=1, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.003),
            nn.ReLU(inplace=False),
        )


def vertex_channels(c_in: int, c_out: int, matrix: np.ndarray) -> list[int]:
    """The benchmark's channel rule for each vertex of a cell.

    Vertices feeding the output share ``c_out`` (the first ``c_out % k`` of them, in vertex
    order, get one extra channel; k = the output's in-degree counting interior vertices
    only); other interior vertices take the maximum over their interior successors,
    computed backwards. Vertex 0 has ``c_in``, the output ``c_out``.
    """
    n = matrix.shape[0]
    ch = [0] * n
    ch[0], ch[n - 1] = c_in, c_out
    if n == 2:
        return ch
    in_degree = matrix[1:].sum(axis=0)
    k = int(in_degree[n - 1])
    interior, extra = (c_out // k, c_out % k) if k else (0, 0)
    for v in range(1, n - 1):
        if matrix[v, n - 1]:
            ch[v] = interior + (1 if extra else 0)
            extra = max(extra - 1, 0)
    for v in range(n - 3, 0, -1):
        if not matrix[v, n - 1]:
            for dst in range(v + 1, n - 1):
                if matrix[v, dst]:
                    ch[v] = max(ch[v], ch[dst])
        if ch[v] <= 0:
            raise ValueError(f"NB101 vertex {v} gets no channels (spec not pruned?)")
    return ch


class NB101Cell(nn.Module):
    """One benchmark module. [N, C_in, H, W] → [N, C_out, H, W]."""

    def __init__(self, arch: NB101Arch, c_in: int, c_out: int) -> None:
        super().__init__()
        m = arch.np_matrix()
        self.n = n = m.shape[0]
        self.matrix = m
        self.channels = ch = vertex_channels(c_in, c_out, m)
        ops: list[nn.Module] = [nn.Identity()]
        proj: list[nn.Module] = [nn.Identity()]
        for v in range(1, n - 1):
            op = arch.ops[v]
            if op == "conv3x3-bn-relu":
                ops.append(ConvBnRelu(ch[v], ch[v], 3))
            elif op == "conv1x1-bn-relu":
                ops.append(ConvBnRelu(ch[v], ch[v], 1))
            else:
                ops.append(nn.MaxPool2d(3, stride=1, padding=1))
            proj.append(ConvBnRelu(c_in, ch[v], 1) if m[0, v] else nn.Identity())
        proj.append(ConvBnRelu(c_in, c_out, 1) if m[0, n - 1] else nn.Identity())
        self.vertex_ops = nn.ModuleList(ops)
        self.input_proj = nn.ModuleList(proj)
        self._inputs = [[s for s in range(1, v) if m[s, v]] for v in range(n)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, ch, m = self.n, self.channels, self.matrix
        states: list[torch.Tensor] = [x]
        for v in range(1, n - 1):
            terms = [states[s][:, :ch[v]] for s in self._inputs[v]]
            if m[0, v]:
                terms.append(self.input_proj[v](x))
            h = terms[0]
            for t in terms[1:]:
                h = h + t
            states.append(self.vertex_ops[v](h))
        outs = [states[s] for s in self._inputs[n - 1]]
        if not outs:
            return self.input_proj[n - 1](x)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        if m[0, n - 1]:
            out = out + self.input_proj[n - 1](x)
        return out


class NB101Network(nn.Module):
    """The NAS-Bench-101 network. Input [N, 3, H, W] → logits [N, num_classes]."""

    def __init__(self, arch: NB101Arch, num_classes: int = 10, stem_channels: int = 128,
                 num_stacks: int = 3, cells_per_stack: int = 3) -> None:
        super().__init__()
        self.arch = arch
        self.stem = ConvBnRelu(3, stem_channels, 3)
        layers: list[nn.Module] = []
        c_in = c = stem_channels
        for stack in range(num_stacks):
            if stack > 0:
                layers.append(nn.MaxPool2d(2, stride=2))
                c *= 2
            for _ in range(cells_per_stack):
                layers.append(NB101Cell(arch, c_in, c))
                c_in = c
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.classifier(x.mean(dim=(2, 3)))

    def zcfast_cells(self) -> list[tuple[str, nn.Module]]:
        """The cells contract (:mod:`zcfast.proxies.cells`): the stem, then every cell in forward
        order. The max-pools between stacks are parameter-free layers, not cells: they are not
        listed (the gradient across one is part of the next cell's trainability term)."""
        return [("stem", self.stem)] + [(f"layers.{i}", m) for i, m in enumerate(self.layers)
                                         if isinstance(m, NB101Cell)]


# --------------------------------------------------------------------------------------------
# Ground truth from a user file
# --------------------------------------------------------------------------------------------
_METRIC_FIELDS = {
    "test": "final_test_accuracy", "valid": "final_validation_accuracy", "train": "final_train_accuracy",
    "halfway_test": "halfway_test_accuracy", "halfway_valid": "halfway_validation_accuracy",
    "halfway_train": "halfway_train_accuracy", "training_time": "final_training_time",
    "halfway_training_time": "halfway_training_time",
}


PICKLE_SUFFIXES = (".pkl", ".pickle")


def load_records(path: str | os.PathLike[str]) -> Mapping[str, dict[str, Any]]:
    """Open an NB101 ground-truth source as a Mapping hash → record (NASLib's record format), via
    :func:`zcfast.formats.nb101.load`: the official ``nasbench_only108.tfrecord`` /
    ``nasbench_full.tfrecord`` (converted once into the cache, then memory-mapped), a converted
    table folder, a JSON records file (list of records or dict hash → record) or NASLib's pickle.

    A pickle (``.pkl`` / ``.pickle``) is read with the restricted unpickler
    (:func:`zcfast.safe_pickle.load`): plain containers and numpy arrays only, never code.

    Raises:
        FileNotFoundError naming the path; ValueError naming the file if the content is not
        records (not JSON, a refused or unreadable pickle, records without a string ``hash``, a
        damaged tfrecord).
    """
    return _formats_nb101.load(path)


_NOT_CONFIGURED = ("no NAS-Bench-101 ground-truth file configured: pass NB101Space(data_path=...), "
                   f"call set_data_path(...) or set ${ENV_PATH} to the benchmark's file "
                   "(nasbench_only108.tfrecord / nasbench_full.tfrecord, a converted table, JSON or pickle)")


class NB101Space(SearchSpace):
    """NAS-Bench-101. ``Arch`` = pruned ``NB101Arch``.

    Args:
        data_path: records file for ``ground_truth``/``enumerate`` (default: $ZCFAST_NB101_PATH).
    """

    name = "nb101"
    #: 21 upper-triangular edge bits of a 7-vertex matrix (row-major) + 5 interior ops.
    num_choices = [2] * len(_TRIU) + [len(OPS)] * (MAX_VERTICES - 2)

    def __init__(self, data_path: str | os.PathLike[str] | None = None) -> None:
        self._data_path = data_path
        self._records: Mapping[str, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for worker processes): keeps the data path, drops the loaded records."""
        return {"_data_path": self._data_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_data_path"])

    def set_data_path(self, path: str | os.PathLike[str]) -> None:
        """Use ``path`` as the ground-truth records file (reloaded on next use)."""
        with self._lock:
            self._data_path, self._records = path, None

    def _records_path(self) -> str | os.PathLike[str] | None:
        return self._data_path or os.environ.get(ENV_PATH) or None

    def records(self) -> Mapping[str, dict[str, Any]]:
        """hash → record of the configured file, loaded once (a dict for JSON / pickle; for a tfrecord
        or a converted table a memory-mapped :class:`zcfast.formats.nb101.NB101Table` whose records
        are built per lookup)."""
        with self._lock:
            if self._records is None:
                path = self._records_path()
                if not path:
                    raise FileNotFoundError(_NOT_CONFIGURED)
                self._records = load_records(path)
            return self._records

    def ground_truth_problem(self, dataset: str | None = None) -> str | None:
        """Why ``ground_truth(arch, dataset)`` cannot answer, or ``None`` when it can.

        ``None`` when ``dataset`` is ``None`` or cifar10 and a records file is configured
        (``data_path`` / ``set_data_path`` / ``$ZCFAST_NB101_PATH``) and exists; the file is not
        read here (a damaged file is refused, naming it, when it is first used).
        """
        if dataset is not None and str(dataset).lower() != "cifar10":
            return f"NB101 has ground truth only for cifar10, not {dataset!r}"
        path = self._records_path()
        if not path:
            return _NOT_CONFIGURED
        p = Path(path)
        source = "data_path" if self._data_path else f"${ENV_PATH}"
        if p.is_dir():
            if not (p / "meta.json").is_file():
                return (f"the NAS-Bench-101 path {str(p)!r} (from {source}) is a folder but not a converted "
                        "table (no meta.json)")
            return None
        if not p.is_file():
            return f"the NAS-Bench-101 records file {str(path)!r} (from {source}) does not exist"
        if not os.access(p, os.R_OK):
            return f"the NAS-Bench-101 records file {str(path)!r} (from {source}) cannot be read (permissions)"
        return None

    def size(self) -> int:
        """The benchmark's 423,624 unique models (``enumerate`` yields the records file's)."""
        return NUM_MODELS

    def spec(self, matrix: Any, ops: Sequence[str]) -> NB101Arch:
        """Validated, pruned architecture from a matrix and op list."""
        return make_arch(matrix, ops)

    def sample(self, rng: random.Random) -> NB101Arch:
        """The benchmark's random spec: each of the 21 upper-triangular bits of a 7x7 matrix
        and each interior op uniform, redrawn until valid (≤ 9 edges after pruning)."""
        check_rng(rng)
        while True:
            arch = self._try_choices([rng.randrange(n) for n in self.num_choices])
            if arch is not None:
                return arch

    def enumerate(self) -> Iterator[NB101Arch]:
        """Architectures of the configured records file, in file order (hash order for a tfrecord
        or a converted table, whose records are built one at a time: never all in memory).

        Raises:
            ValueError naming the file and the record's hash when a record has no valid
            ``module_adjacency`` / ``module_operations``.
        """
        for h, rec in self.records().items():
            try:
                arch = make_arch(rec["module_adjacency"], rec["module_operations"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"NAS-Bench-101 file {str(self._records_path())!r}: record {h} has no valid "
                                 f"module_adjacency/module_operations ({type(exc).__name__}: {exc})") from None
            yield arch

    def neighbours(self, arch: Any) -> list[NB101Arch]:
        """Valid specs one edge flip or one interior op change away, distinct by ``key`` and
        different from ``arch`` (edges row-major first, then ops).

        Only when no such spec exists (e.g. input → output alone, where the one flip
        disconnects the cell) the edit "insert one vertex on a new path u → v → w" is used
        instead, so every valid arch has a neighbour and ``mutate`` never fails.
        """
        a = check_arch(arch)
        out = self._one_edit(a)
        return out if out else self._insertions(a)

    def _insertions(self, a: NB101Arch) -> list[NB101Arch]:
        m = a.np_matrix()
        n = m.shape[0]
        seen = {self.key(a)}
        out = []
        if n >= MAX_VERTICES:
            return out
        for p in range(1, n):  # new vertex index: between old vertices p-1 and p
            big = np.insert(np.insert(m, p, 0, axis=0), p, 0, axis=1)
            for u in range(p):
                for w in range(p + 1, n + 1):
                    for op in OPS:
                        m2 = big.copy()
                        m2[u, p] = m2[p, w] = 1
                        ops = list(a.ops[:p]) + [op] + list(a.ops[p:])
                        self._add_new(m2, ops, seen, out)
        return out

    def _one_edit(self, a: NB101Arch) -> list[NB101Arch]:
        m = a.np_matrix()
        n = m.shape[0]
        cands: list[tuple[np.ndarray, list[str]]] = []
        for i in range(n):
            for j in range(i + 1, n):
                m2 = m.copy()
                m2[i, j] ^= 1
                cands.append((m2, list(a.ops)))
        for v in range(1, n - 1):
            for op in OPS:
                if op != a.ops[v]:
                    ops = list(a.ops)
                    ops[v] = op
                    cands.append((m, ops))
        seen = {self.key(a)}
        out: list[NB101Arch] = []
        for m2, ops in cands:
            self._add_new(m2, ops, seen, out)
        return out

    def _add_new(self, matrix: np.ndarray, ops: list[str], seen: set[str], out: list[NB101Arch]) -> None:
        """Append the arch (matrix, ops) to ``out`` when it is valid and its key is not in ``seen``."""
        try:
            b = make_arch(matrix, ops)
        except ValueError:
            return
        k = self.key(b)
        if k not in seen:
            seen.add(k)
            out.append(b)

    def encode(self, arch: Any) -> str:
        """Compact JSON ``{"matrix":[[...]],"ops":[...]}`` of the pruned spec."""
        a = check_arch(arch)
        return json.dumps({"matrix": [list(r) for r in a.matrix], "ops": list(a.ops)}, separators=(",", ":"))

    def decode(self, text: str) -> NB101Arch:
        if not isinstance(text, str):
            raise ValueError(f"NB101 text must be str, got {type(text).__name__}")
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"NB101 text is not JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise ValueError("NB101 text must be a JSON object with 'matrix' and 'ops'")
        return check_arch(d)

    def key(self, arch: Any) -> str:
        """The benchmark's graph hash (32 hex md5), identical to the records' ``hash``."""
        a = check_arch(arch)
        return graph_hash(a.np_matrix(), a.ops)

    def to_choices(self, arch: Any) -> list[int]:
        """Padded 7-vertex form: vertex k < V-1 stays k, the output moves to 6, padding
        vertices are unconnected ``conv3x3-bn-relu`` (pruned away by ``from_choices``)."""
        a = check_arch(arch)
        n = a.num_vertices
        pos = list(range(n - 1)) + [MAX_VERTICES - 1]
        big = np.zeros((MAX_VERTICES, MAX_VERTICES), dtype=np.int64)
        big[np.ix_(pos, pos)] = a.np_matrix()
        ops = [OPS[0]] * (MAX_VERTICES - 2)
        for k in range(1, n - 1):
            ops[k - 1] = a.ops[k]
        return [int(big[i, j]) for i, j in _TRIU] + [_OP_INDEX[o] for o in ops]

    def _try_choices(self, c: Sequence[int]) -> NB101Arch | None:
        m = np.zeros((MAX_VERTICES, MAX_VERTICES), dtype=np.int64)
        for (i, j), bit in zip(_TRIU, c):
            m[i, j] = bit
        ops = [INPUT] + [OPS[k] for k in c[len(_TRIU):]] + [OUTPUT]
        try:
            return make_arch(m, ops)
        except ValueError:
            return None

    def from_choices(self, choices: Sequence[int]) -> NB101Arch:
        """Inverse of ``to_choices``; ValueError if out of range or the spec is invalid."""
        c = self._check_choices(choices)
        m = np.zeros((MAX_VERTICES, MAX_VERTICES), dtype=np.int64)
        for (i, j), bit in zip(_TRIU, c):
            m[i, j] = bit
        return make_arch(m, [INPUT] + [OPS[k] for k in c[len(_TRIU):]] + [OUTPUT])

    def graph(self, arch: Any) -> tuple[np.ndarray, np.ndarray]:
        """(adjacency [7, 7], one-hot [7, 5]) float32, the pruned spec padded with zero rows
        at the end. One-hot columns: input, conv3x3, conv1x1, maxpool3x3, output."""
        a = check_arch(arch)
        n = a.num_vertices
        adj = np.zeros((MAX_VERTICES, MAX_VERTICES), dtype=np.float32)
        adj[:n, :n] = a.np_matrix()
        feat = np.zeros((MAX_VERTICES, len(OPS) + 2), dtype=np.float32)
        cols = {INPUT: 0, OUTPUT: len(OPS) + 1, **{o: i + 1 for i, o in enumerate(OPS)}}
        for v, op in enumerate(a.ops):
            feat[v, cols[op]] = 1.0
        return adj, feat

    def build(self, arch: Any, num_classes: int = 10, *, stem_channels: int = 128,
              num_stacks: int = 3, cells_per_stack: int = 3) -> NB101Network:
        """The benchmark network (128-channel stem, 3 stacks × 3 cells)."""
        a = check_arch(arch)
        num_classes = check_num_classes(num_classes)
        for name, v in (("stem_channels", stem_channels), ("num_stacks", num_stacks),
                        ("cells_per_stack", cells_per_stack)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        return NB101Network(a, num_classes, stem_channels, num_stacks, cells_per_stack)

    def ground_truth(self, arch: Any, dataset: str = "cifar10", metric: str = "test",
                     epochs: int = 108) -> float:
        """Mean over the records' training runs of ``metric`` at ``epochs`` (4, 12, 36 or 108; the
        first three only in ``nasbench_full.tfrecord``), in percent (training times in seconds).
        Metrics: test, valid, train, halfway_test, halfway_valid, halfway_train, training_time,
        halfway_training_time. Only ``cifar10`` exists in NB101.

        Raises:
            FileNotFoundError naming the missing file; KeyError if ``arch`` is not in it;
            ValueError naming the epochs present when the file has none at ``epochs``.
        """
        if str(dataset).lower() != "cifar10":
            raise ValueError(f"NB101 has only the cifar10 dataset, got {dataset!r}")
        if metric not in _METRIC_FIELDS:
            raise ValueError(f"NB101 unknown metric {metric!r}; expected one of {sorted(_METRIC_FIELDS)}")
        h = self.key(arch)
        rec = self.records().get(h)
        if rec is None:
            raise KeyError(f"NB101 architecture with hash {h} is not in the ground-truth file")
        results = rec.get("results")
        runs = results.get(str(epochs)) if isinstance(results, dict) else None
        if not runs:
            present = sorted(int(k) for k in results if str(k).isdigit() and results[k]) if isinstance(results, dict) else []
            table_epochs = getattr(self.records(), "epochs", None)
            where = f"file {str(self._records_path())!r}"
            raise ValueError(f"NAS-Bench-101 {where} has no results at {epochs} epochs for record {h}; epochs "
                             f"present: {table_epochs if table_epochs is not None else present} (the full "
                             "benchmark, nasbench_full.tfrecord, has 4, 12, 36 and 108)")
        field = _METRIC_FIELDS[metric]
        try:
            values = [float(r[field]) for r in runs]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"NAS-Bench-101 file {str(self._records_path())!r}: record {h} has a run "
                             f"without a numeric {field!r} at {epochs} epochs") from None
        value = float(np.mean(values))
        return value if metric.endswith("training_time") else 100.0 * value
