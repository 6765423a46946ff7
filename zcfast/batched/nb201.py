"""K NAS-Bench-201 networks evaluated as one batched network.

Layout: every activation is one tensor ``[N, K·C, H, W]`` whose channels ``k·C:(k+1)·C`` belong
to candidate ``k`` (candidate-major). With that layout

* a convolution over all candidates is one grouped convolution (``groups=K``) whose weight is the
  concatenation of the candidates' weights, or (``conv_mode="split"``) K plain convolutions over
  the channel chunks; which one is faster depends on the device (``default_conv_mode``);
* training-mode BatchNorm over ``K·C`` channels normalises each channel with its own batch
  statistics, i.e. per candidate, exactly as each candidate's own BatchNorm would;
* ReLU / average pooling / global pooling are per channel, so they batch for free;
* the classifier is one ``einsum`` over ``[K, N, C]`` features and ``[K, classes, C]`` weights.

Cell edges are grouped by op: on each edge, the candidates using ``nor_conv_3x3`` form one group,
those using ``nor_conv_1x1`` another, and so on; a group gathers only its candidates' channel
slices, so no op is computed for a candidate that does not use it. Edges that cannot change any
proxy are skipped too (``zcfast.spaces.nb201.live_edges``): an edge whose input node is identically zero (every edge
into it is ``none``) or whose output node never reaches the cell output except through ``none``
edges. Such an op in the reference network receives a zero input or a zero gradient, so its
weights get exactly zero gradient and contribute exactly 0 to every proxy; leaving it out
changes no score. (One deliberate difference: the benchmark's ``none`` op is ``x * 0``, which
turns an inf/NaN activation into NaN; a skipped edge cannot. Only non-finite networks differ.)
Needs that read every module call rather than gradients (NWOT's ReLU inputs, Zen-NAS's
BatchNorm statistics) build the network with ``edges="all"``, which runs dead edges too.

Candidates' parameters are disjoint and the candidates never mix (every op is per channel
group), so the sum of the K candidates' losses has, for each candidate's weights, exactly that
candidate's gradient, and each candidate's copy of the input gets exactly its own input Jacobian.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from zcfast.spaces.nb201 import EDGES, OPS, NB201Cell, NB201Network, ResNetBasicBlock, live_edges

CONV_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


@dataclasses.dataclass
class BN:
    """One BatchNorm's affine parameters (None when not affine) and eps."""

    weight: Tensor | None
    bias: Tensor | None
    eps: float = 1e-5


@dataclasses.dataclass
class ConvBN:
    """A ReLU → Conv → BN block (NB201's ReLUConvBN): conv weight [Cout, Cin, k, k]."""

    conv: Tensor
    bn: BN
    stride: int = 1
    padding: int = 0


@dataclasses.dataclass
class ResBlock:
    """NB201's residual reduction block: ``down(x) + conv_b(conv_a(x))``.

    ``down`` is AvgPool2d(2, 2) followed by a 1×1 conv weight [Cout, Cin, 1, 1].
    """

    conv_a: ConvBN
    conv_b: ConvBN
    down: Tensor


@dataclasses.dataclass
class NB201Weights:
    """Every tensor of one NB201 network, in a module-structure-independent form.

    Attributes:
        arch: the 6 op names.
        stem: 3×3 conv [C, 3, 3, 3] + BN (no ReLU before it; ``ConvBN`` is reused for storage).
        stages: the body in order, each item either a list of cells (each cell a dict
            edge index → ConvBN for its convolution edges) or a ``ResBlock``.
        last_bn: the BN of ``lastact`` (followed by ReLU).
        fc_weight [classes, C_last], fc_bias [classes] (or None).
    """

    arch: tuple[str, ...]
    stem: ConvBN
    stages: list
    last_bn: BN
    fc_weight: Tensor
    fc_bias: Tensor | None


class Layer:
    """One batched conv/linear layer: the stacked weights of its candidates and its output.

    Attributes:
        owners: candidate index of each group, in channel order (G groups).
        weight: one tensor holding every group's weight: conv [G·Cout, Cin, k, k]
            (group g = rows g·Cout:(g+1)·Cout), classifier [K, classes, C].
        act: the layer's output of the last forward (conv: [N, G·Cout, H, W];
            classifier: the logits [K, N, classes]), kept for the Fisher proxy.
        inp: the layer's input of the last forward when ``BatchedNB201.record_inputs`` is set
            (conv: [N, G·Cin, H, W], after the ReLU; classifier: the pooled features
            [N, K, C]), else None: with ``act``'s gradient it gives per-sample weight gradients.
        stride, padding: the convolution's (1, 0 for the shortcut and the classifier).
    """

    def __init__(self, owners: list[int], weight: Tensor, stride: int = 1, padding: int = 0) -> None:
        self.owners = owners
        self.weight = weight
        self.stride = stride
        self.padding = padding
        self.act: Tensor | None = None
        self.inp: Tensor | None = None

    def split(self, t: Tensor) -> list[Tensor]:
        """Per-group views of ``t`` (the weight or its gradient), each [Cout, ...]."""
        return list(t.chunk(len(self.owners), 0)) if t.dim() == 4 else list(t.unbind(0))

    def fan_in(self) -> int:
        """Number of weights feeding one output channel (weight[0].numel() of one candidate)."""
        return self.weight[0].numel() if self.weight.dim() == 4 else self.weight.shape[-1]


class _Conv:
    """A batched ReLU? → conv → BN? over a group of candidates.

    ``name``: the qualified name of the module it stands for in ``NB201Network`` (``stem``,
    ``cells.{i}.edges.{e}``, ``cells.{i}.conv_a``...: a ``ReLUConvBN`` whose ReLU is ``.0``, conv
    ``.1``, BatchNorm ``.2``; the stem's conv is ``.0`` and BatchNorm ``.1``). ``running_mean`` /
    ``running_var`` [G·Cout]: BatchNorm running statistics, ``None`` unless
    :meth:`BatchedNB201.track_running_stats` allocated them.
    """

    def __init__(self, owners: list[int], blocks: list[ConvBN], relu: bool, keep_bn_for_synflow: bool,
                 name: str = "") -> None:
        self.stride = blocks[0].stride
        self.padding = blocks[0].padding
        self.layer = Layer(owners, torch.cat([b.conv.detach() for b in blocks]), self.stride, self.padding)
        self.relu = relu
        self.keep_bn_for_synflow = keep_bn_for_synflow
        self.name = name
        bns = [b.bn for b in blocks]
        self.bn_eps = bns[0].eps
        self.bn_weight = _cat_opt([b.weight for b in bns])
        self.bn_bias = _cat_opt([b.bias for b in bns])
        self.running_mean: Tensor | None = None
        self.running_var: Tensor | None = None
        self.bn_momentum = 0.0

    def bn_name(self) -> str:
        """The qualified name of this block's BatchNorm2d in ``NB201Network``."""
        return f"{self.name}.1" if self.name == "stem" else f"{self.name}.2"


class BatchedNB201:
    """K NB201 candidates as one network (see the module docstring).

    Build with ``BatchedNB201(weights)``; ``forward(x)`` takes ``x [N, K·3, H, W]`` (each
    candidate's own copy of the input, candidate-major) and returns logits ``[K, N, classes]``.
    ``layers()`` lists every conv/linear layer for the proxies; ``Layer.split`` gives each
    candidate's weight (or gradient) as a view of the stacked tensor.

    ``edges``: ``"live"`` (default) runs only the edges that can change a gradient proxy
    (``live_edges``); ``"all"`` runs every edge whose op is not ``none``, as the module network
    does (its ``none`` is ``x * 0``), so every node holds the module network's features: what
    needs reading activations or BatchNorm statistics of *every* module call take (NWOT's ReLU
    inputs, Zen-NAS's running variances).

    Taps (``None`` by default; set them before a forward, no autograd needed):

    * ``relu_tap(x, owners, names, key)``: called at each batched call of a ReLU-typed module of
      ``NB201Network`` with its input ``x [N, G·C, H, W]`` (group g: candidate ``owners[g]``),
      ``names`` the qualified names of the ReLU-typed modules that call passes through (a
      ``ReLUConvBN`` wrapper and its inner ``nn.ReLU``: ``(f"{wrapper}.0", wrapper)``; the final
      ``("lastact.1",)``), and ``key`` the tensor ``x`` was gathered from ([N, K·C, H, W]; the
      same ``key`` object means the same features, e.g. one node feeding several edges);
    * ``feature_tap(h)``: the pre-global-pool features ``h [N, K·C, H, W]`` (after the final
      BatchNorm and ReLU).
    """

    def __init__(self, cands: Sequence[NB201Weights], conv_mode: str = "grouped", edges: str = "live") -> None:
        if not cands:
            raise ValueError("BatchedNB201 needs at least one candidate")
        if conv_mode not in ("grouped", "split"):
            raise ValueError(f"conv_mode must be 'grouped' or 'split', got {conv_mode!r}")
        if edges not in ("live", "all"):
            raise ValueError(f"edges must be 'live' or 'all', got {edges!r}")
        self.K = len(cands)
        self.conv_mode = conv_mode
        self.edges = edges
        self._index_cache: dict = {}   # (owners, C, device) -> channel index (built once per shape)
        self.archs = [c.arch for c in cands]
        if edges == "live":
            self.live = [live_edges(a) for a in self.archs]
        else:
            self.live = [tuple(op != "none" for op in a) for a in self.archs]
        self.relu_tap = None
        self.feature_tap = None
        self.record_inputs = False
        allk = list(range(self.K))
        self.stem = _Conv(allk, [c.stem for c in cands], relu=False, keep_bn_for_synflow=False, name="stem")
        self.stem_cout = cands[0].stem.conv.shape[0]
        # body (one item per NB201Network.cells entry): ("cell", edges) with edges[e] a list of
        # (op, owners, _Conv | None) groups, or ("res", _Conv a, _Conv b, Layer down)
        self.body: list = []
        for si, stage in enumerate(cands[0].stages):
            if isinstance(stage, ResBlock):
                i = len(self.body)
                blocks = [c.stages[si] for c in cands]
                a = _Conv(allk, [b.conv_a for b in blocks], relu=True, keep_bn_for_synflow=True,
                          name=f"cells.{i}.conv_a")
                b = _Conv(allk, [b.conv_b for b in blocks], relu=True, keep_bn_for_synflow=True,
                          name=f"cells.{i}.conv_b")
                down = Layer(allk, torch.cat([b.down.detach() for b in blocks]))
                self.body.append(("res", a, b, down))
            else:
                for ci in range(len(stage)):
                    i = len(self.body)
                    cell_edges: list[list[tuple[str, list[int], _Conv | None]]] = []
                    for e in range(6):
                        groups = []
                        for op in OPS[1:]:
                            owners = [k for k in allk if self.archs[k][e] == op and self.live[k][e]]
                            if not owners:
                                continue
                            conv = None
                            if op in CONV_KERNEL:
                                conv = _Conv(owners, [cands[k].stages[si][ci][e] for k in owners], relu=True,
                                             keep_bn_for_synflow=False, name=f"cells.{i}.edges.{e}")
                            groups.append((op, owners, conv))
                        cell_edges.append(groups)
                    self.body.append(("cell", cell_edges))
        self.last_bn_weight = _cat_opt([c.last_bn.weight for c in cands])
        self.last_bn_bias = _cat_opt([c.last_bn.bias for c in cands])
        self.last_bn_eps = cands[0].last_bn.eps
        self.last_running_mean: Tensor | None = None
        self.last_running_var: Tensor | None = None
        self.last_bn_momentum = 0.0
        self.fc = Layer(allk, torch.stack([c.fc_weight.detach() for c in cands]))
        self.fc_bias = None if cands[0].fc_bias is None else torch.stack([c.fc_bias.detach() for c in cands])

    def track_running_stats(self, momentum: float = 0.1) -> None:
        """Give every BatchNorm running statistics (mean 0, var 1, as a fresh ``BatchNorm2d``),
        updated by each training-mode forward with ``momentum`` exactly as torch's BatchNorm
        (running_var ← (1 − m)·running_var + m·unbiased batch variance)."""
        for c in self._convs():
            n, ref = c.layer.weight.shape[0], c.layer.weight
            c.running_mean = torch.zeros(n, dtype=ref.dtype, device=ref.device)
            c.running_var = torch.ones(n, dtype=ref.dtype, device=ref.device)
            c.bn_momentum = momentum
        ref = self.fc.weight
        n = self.K * ref.shape[-1]
        self.last_running_mean = torch.zeros(n, dtype=ref.dtype, device=ref.device)
        self.last_running_var = torch.ones(n, dtype=ref.dtype, device=ref.device)
        self.last_bn_momentum = momentum

    def running_vars(self) -> list[list[tuple[str, Tensor]]]:
        """Per candidate, ``[(BatchNorm2d name, running_var [C]), ...]`` in ``NB201Network``'s
        module order (stem, each cell's edges in edge order, reduction blocks' conv_a and conv_b,
        lastact), views of the buffers; only the BatchNorms this network runs (``edges="all"``:
        all of them). Requires :meth:`track_running_stats`."""
        if self.last_running_var is None:
            raise ValueError("running_vars: call track_running_stats() before the forwards")
        out: list[list[tuple[str, Tensor]]] = [[] for _ in range(self.K)]

        def add(c: _Conv) -> None:
            assert c.running_var is not None
            for part, k in zip(c.running_var.chunk(len(c.layer.owners)), c.layer.owners):
                out[k].append((c.bn_name(), part))

        add(self.stem)
        for item in self.body:
            if item[0] == "res":
                add(item[1])
                add(item[2])
            else:
                for groups in item[1]:
                    for _, _, conv in groups:
                        if conv is not None:
                            add(conv)
        for k, part in enumerate(self.last_running_var.chunk(self.K)):
            out[k].append(("lastact.0", part))
        return out

    # ------------------------------------------------------------------ structure
    def layers(self) -> list[Layer]:
        """Every conv/linear layer, in forward order (stem, cells, residual blocks, classifier)."""
        out = [self.stem.layer]
        for item in self.body:
            if item[0] == "res":
                out += [item[1].layer, item[2].layer, item[3]]
            else:
                for groups in item[1]:
                    out += [conv.layer for _, _, conv in groups if conv is not None]
        out.append(self.fc)
        return out

    def _convs(self) -> list[_Conv]:
        convs = [self.stem] + [c for item in self.body if item[0] == "res" for c in item[1:3]]
        convs += [conv for item in self.body if item[0] == "cell" for g in item[1] for _, _, conv in g if conv]
        return convs

    def map_tensors(self, fn) -> None:
        """Replace every tensor ``t`` of the network by ``fn(t)`` (e.g. device/dtype/abs/leaf)."""
        for layer in self.layers():
            layer.weight = fn(layer.weight)
        for c in self._convs():
            c.bn_weight = None if c.bn_weight is None else fn(c.bn_weight)
            c.bn_bias = None if c.bn_bias is None else fn(c.bn_bias)
        for name in ("last_bn_weight", "last_bn_bias", "fc_bias"):
            t = getattr(self, name)
            setattr(self, name, None if t is None else fn(t))

    # ------------------------------------------------------------------ forward
    def _conv(self, c: _Conv, x: Tensor, bn: str, key: Tensor | None = None) -> Tensor:
        """x [N, G·Cin, H, W] → [N, G·Cout, H', W'] for the group of ``c``; records the conv output.
        ``key``: the [N, K·Cin, H, W] tensor ``x`` was gathered from (``relu_tap``)."""
        if c.relu:
            if self.relu_tap is not None:
                self.relu_tap(x, c.layer.owners, (f"{c.name}.0", c.name), x if key is None else key)
            x = F.relu(x)
        c.layer.inp = x if self.record_inputs else None
        w = c.layer.weight
        G = len(c.layer.owners)
        if G == 1 or self.conv_mode == "grouped":
            y = F.conv2d(x, w, None, c.stride, c.padding, 1, G)
        else:
            y = torch.cat([F.conv2d(xi, wi, None, c.stride, c.padding)
                           for xi, wi in zip(x.chunk(G, 1), w.chunk(G, 0))], 1)
        c.layer.act = y
        if bn == "all" or (bn == "reduction" and c.keep_bn_for_synflow):
            y = F.batch_norm(y, c.running_mean, c.running_var, c.bn_weight, c.bn_bias, True, c.bn_momentum,
                             c.bn_eps)
        elif bn == "sample":
            y = _per_sample_bn(y, c.bn_weight, c.bn_bias, c.bn_eps)
        return y

    def forward(self, x: Tensor, bn: str = "all") -> Tensor:
        """Run the K candidates.

        Args:
            x: [N, K·3, H, W], channels ``3k:3k+3`` are candidate k's input.
            bn: "all" (training-mode BatchNorm everywhere, the default), "reduction" (synflow's
                NB201 network: only the residual blocks keep their BatchNorm) or "sample" (every
                BatchNorm normalises each sample over its own H·W positions: what a training-mode
                forward of that sample *alone* gives, GradSign's official loop; the N samples
                are then independent. No running statistics are updated.)

        Returns:
            logits [K, N, classes].
        """
        if bn not in ("all", "reduction", "sample"):
            raise ValueError(f"bn must be 'all', 'reduction' or 'sample', got {bn!r}")
        K = self.K
        if x.dim() != 4 or x.shape[1] % K != 0:
            raise ValueError(f"x must be [N, K*C, H, W] with K={K}, got {tuple(x.shape)}")
        h = self._conv(self.stem, x, bn)
        for item in self.body:
            if item[0] == "res":
                _, a, b, down = item
                ra = self._conv(a, h, bn)
                r = self._conv(b, ra, bn)
                d = F.avg_pool2d(h, 2, 2)
                down.inp = d if self.record_inputs else None
                if K == 1 or self.conv_mode == "grouped":
                    d = F.conv2d(d, down.weight, None, 1, 0, 1, K)
                else:
                    d = torch.cat([F.conv2d(di, wi) for di, wi in zip(d.chunk(K, 1), down.weight.chunk(K, 0))], 1)
                down.act = d
                h = d + r
            else:
                h = self._cell(item[1], h, bn)
        C = h.shape[1] // K
        if bn == "all":
            h = F.batch_norm(h, self.last_running_mean, self.last_running_var, self.last_bn_weight,
                             self.last_bn_bias, True, self.last_bn_momentum, self.last_bn_eps)
        elif bn == "sample":
            h = _per_sample_bn(h, self.last_bn_weight, self.last_bn_bias, self.last_bn_eps)
        if self.relu_tap is not None:
            self.relu_tap(h, list(range(K)), ("lastact.1",), h)
        h = F.relu(h)
        if self.feature_tap is not None:
            self.feature_tap(h)
        feat = h.mean((2, 3)).view(h.shape[0], K, C)                      # [N, K, C]
        self.fc.inp = feat if self.record_inputs else None
        logits = torch.einsum("nkc,koc->kno", feat, self.fc.weight)      # [K, N, O]
        if self.fc_bias is not None:
            logits = logits + self.fc_bias.unsqueeze(1)
        self.fc.act = logits                                              # [K, N, O]
        return logits

    def _cell(self, edges: list, x: Tensor, bn: str) -> Tensor:
        K = self.K
        C = x.shape[1] // K
        nodes: list[Tensor] = [x]
        for j in (1, 2, 3):
            full: list[Tensor] = []
            part_idx: list[Tensor] = []
            part: list[Tensor] = []
            for e, (i, jj) in enumerate(EDGES):
                if jj != j:
                    continue
                for op, owners, conv in edges[e]:
                    src = nodes[i]
                    idx = None
                    if len(owners) < K:
                        key = (tuple(owners), C, src.device)
                        idx = self._index_cache.get(key)
                        if idx is None:
                            idx = self._index_cache[key] = _channel_index(owners, C, src.device)
                        src = src.index_select(1, idx)
                    if op == "skip_connect":
                        y = src
                    elif op == "avg_pool_3x3":
                        y = _avg_pool_3x3(src)
                    else:
                        y = self._conv(conv, src, bn, nodes[i])
                    if idx is None:
                        full.append(y)
                    else:
                        part_idx.append(idx)
                        part.append(y)
            if full:
                node = full[0]
                for y in full[1:]:
                    node = node + y
            else:
                node = x.new_zeros(x.shape)
            if part:
                node = node.index_add(1, torch.cat(part_idx), torch.cat(part, 1) if len(part) > 1 else part[0])
            nodes.append(node)
        return nodes[3]


def _avg_pool_3x3(x: Tensor) -> Tensor:
    """``AvgPool2d(3, 1, 1, count_include_pad=False)`` of x [N, C, H, W] as separable shifted
    sums of the zero-padded input times 1/count.

    Same values up to summation order (a few ulp), and on CPU in float32 faster
    forward+backward than the pooling kernel. (A depthwise convolution with a ones kernel was
    faster still but is *not* exact: oneDNN's kernel moved an NB201 architecture's fisher by
    1.5e-3 relative against float64, where the pooling kernel and these sums stay at 1e-7.)
    Other devices/dtypes use the pooling kernel.
    """
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    H, W = x.shape[2], x.shape[3]
    p = F.pad(x, (1, 1, 1, 1))                                          # [N, C, H+2, W+2]
    rows = p[:, :, :, :-2] + p[:, :, :, 1:-1] + p[:, :, :, 2:]          # [N, C, H+2, W]
    total = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]         # [N, C, H, W]
    return total * _inv_count_3x3(H, W, x.dtype)


_INV_COUNT: dict[tuple[int, int, torch.dtype], Tensor] = {}


def _inv_count_3x3(H: int, W: int, dtype: torch.dtype) -> Tensor:
    """[1, 1, H, W] of 1 / (number of in-bounds cells of each 3×3 window), CPU, cached."""
    key = (H, W, dtype)
    inv = _INV_COUNT.get(key)
    if inv is None:
        rows = torch.full((H,), 3.0, dtype=torch.float64)
        cols = torch.full((W,), 3.0, dtype=torch.float64)
        rows[0] -= 1
        rows[-1] -= 1
        cols[0] -= 1
        cols[-1] -= 1
        inv = _INV_COUNT[key] = (1.0 / torch.outer(rows, cols)).to(dtype).view(1, 1, H, W)
    return inv


def _per_sample_bn(y: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """Training-mode BatchNorm of each sample of y [N, C, H, W] on its own (mean and biased
    variance over its H·W positions per channel, then the affine ``weight``/``bias`` [C]): what
    ``F.batch_norm(y[i:i+1], ..., training=True)`` gives sample i. ``F.instance_norm`` without
    running statistics is exactly that (it runs the batch-norm kernel on y viewed as [1, N·C, H, W])."""
    return F.instance_norm(y, None, None, weight, bias, True, 0.0, eps)


def per_sample_weight_grads(layer: Layer, delta: Tensor) -> list[Tensor]:
    """Per-sample gradients of ``layer``'s weight from its recorded input and its output gradient.

    Valid when the samples are independent (``forward(bn="sample")``) and the loss is a sum of
    per-sample losses: then sample n's ∂ℓₙ/∂W is its own input and output gradient alone.

    Args:
        layer: a layer of the last forward with ``inp`` recorded (``record_inputs``).
        delta: ∂(Σₙ ℓₙ)/∂(layer output), shaped as ``layer.act``: conv [N, G·Cout, H', W'],
            classifier [K, N, classes].

    Returns:
        one tensor per group (``layer.owners`` order): conv [N, Cout, Cin, kh, kw]
        (gₙ = δₙ [Cout, H'W'] @ unfold(xₙ)ᵀ [H'W', Cin·kh·kw], computed as one grouped
        convolution weight gradient with a group per sample), classifier [N, classes, C]
        (gₙ = δₙ ⊗ featₙ).
    """
    x = layer.inp
    if x is None:
        raise ValueError("per_sample_weight_grads: the layer's input was not recorded (record_inputs)")
    G = len(layer.owners)
    w = layer.weight
    if w.dim() == 3:                                                    # classifier [K, O, C], x [N, K, C]
        g = delta.transpose(0, 1).unsqueeze(-1) * x.unsqueeze(2)       # [N, K, O, C]
        return list(g.unbind(1))
    N = x.shape[0]
    cout, cin, kh, kw = w.shape[0] // G, w.shape[1], w.shape[2], w.shape[3]
    # the N samples' (and G groups') weight gradients as ONE grouped convolution's weight
    # gradient: x viewed as [1, N·G·Cin, H, W] with N·G groups, each its own sample and group
    # (measured on CPU, 1 thread, [32, 16, 32, 32] 3×3: 17 ms, where unfold + batched matmul
    # took 49 ms and 32 batch-1 weight gradients 32 ms). Only the weight's shape is read.
    shape = x.new_empty((N * G * cout, cin, kh, kw))
    g = torch.ops.aten.convolution_backward(
        delta.reshape((1, N * G * cout) + tuple(delta.shape[2:])), x.reshape((1, N * G * cin) + tuple(x.shape[2:])),
        shape, None, [layer.stride] * 2, [layer.padding] * 2, [1, 1], False, [0, 0], N * G,
        [False, True, False])[1]                                        # [N·G·Cout, Cin, kh, kw]
    return list(g.view(N, G, cout, cin, kh, kw).unbind(1))


def _cat_opt(ts: list[Tensor | None]) -> Tensor | None:
    return None if ts[0] is None else torch.cat(ts)


def _channel_index(owners: list[int], C: int, device: torch.device) -> Tensor:
    """Channel indices of the candidates ``owners`` in a candidate-major [.., K·C, ..] tensor."""
    base = torch.tensor(owners, dtype=torch.long, device=device).unsqueeze(1) * C
    return (base + torch.arange(C, device=device)).reshape(-1)


def _bn(m: nn.Module) -> BN:
    if not isinstance(m, nn.BatchNorm2d):
        raise TypeError(f"expected BatchNorm2d, got {type(m).__name__}")
    return BN(m.weight, m.bias, m.eps)


def _relu_conv_bn(m: nn.Module) -> ConvBN:
    conv, bn = m[1], m[2]
    return ConvBN(conv.weight, _bn(bn), conv.stride[0], conv.padding[0])


def extract(net: NB201Network) -> NB201Weights:
    """The tensors of a network built by ``zcfast.spaces.get("nb201").build`` (shared, not copied).

    Raises:
        TypeError: ``net`` is not an ``NB201Network`` (another layout has no batched path).
    """
    if not isinstance(net, NB201Network):
        raise TypeError(f"batched NB201 scoring needs an NB201Network, got {type(net).__name__}")
    stem_conv, stem_bn = net.stem[0], net.stem[1]
    stem = ConvBN(stem_conv.weight, _bn(stem_bn), stem_conv.stride[0], stem_conv.padding[0])
    stages: list = []
    for layer in net.cells:
        if isinstance(layer, ResNetBasicBlock):
            stages.append(ResBlock(_relu_conv_bn(layer.conv_a), _relu_conv_bn(layer.conv_b),
                                   layer.downsample[1].weight))
        elif isinstance(layer, NB201Cell):
            if not stages or isinstance(stages[-1], ResBlock):
                stages.append([])
            stages[-1].append({e: _relu_conv_bn(m) for e, m in enumerate(layer.edges)
                               if isinstance(m, nn.Sequential)})
        else:
            raise TypeError(f"unexpected NB201 body module {type(layer).__name__}")
    return NB201Weights(tuple(net.arch), stem, stages, _bn(net.lastact[0]), net.classifier.weight,
                        net.classifier.bias)


# ------------------------------------------------------------------------------------------
# Fast initialisation: the same random draws as building the network, without the modules
# ------------------------------------------------------------------------------------------
def _kaiming_uniform(shape: tuple[int, ...], gen: torch.Generator | None) -> Tensor:
    """``nn.init.kaiming_uniform_(w, a=sqrt(5))`` of a fresh tensor, as Conv2d/Linear init."""
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
    std = gain / math.sqrt(fan_in)
    bound = math.sqrt(3.0) * std
    return torch.empty(shape).uniform_(-bound, bound, generator=gen)


def _bn_init(c: int) -> BN:
    return BN(torch.ones(c), torch.zeros(c), 1e-5)


def fast_weights(arch: Sequence[str], num_classes: int = 10, channels: int = 16,
                 cells_per_stage: int = 5, generator: torch.Generator | None = None) -> NB201Weights:
    """The tensors ``NB201Network(arch, num_classes, channels, cells_per_stage)`` would get.

    Draws from the global torch RNG in exactly the order module construction does (stem conv,
    each cell's conv edges in edge order, each reduction block's conv_a, conv_b, shortcut conv,
    classifier weight then bias; BatchNorms draw nothing), so under the same seed the tensors
    are bit-identical to the built network's, at a fraction of the cost (no modules).
    ``zcfast.batched`` checks that equality once per process and layout before relying on it
    (``fast_init_matches``) and builds the networks otherwise.

    ``generator``: draw from this CPU generator instead of the global one (a fresh
    ``torch.Generator().manual_seed(s)`` gives the same stream as ``torch.manual_seed(s)``),
    so several candidates can be initialised in parallel threads.
    """
    g = generator
    c = channels
    stem = ConvBN(_kaiming_uniform((c, 3, 3, 3), g), _bn_init(c), 1, 1)
    stages: list = []
    c_prev = c
    for stage, width in enumerate((c, 2 * c, 4 * c)):
        if stage > 0:
            a = ConvBN(_kaiming_uniform((width, c_prev, 3, 3), g), _bn_init(width), 2, 1)
            b = ConvBN(_kaiming_uniform((width, width, 3, 3), g), _bn_init(width), 1, 1)
            stages.append(ResBlock(a, b, _kaiming_uniform((width, c_prev, 1, 1), g)))
            c_prev = width
        cells = []
        for _ in range(cells_per_stage):
            cell = {}
            for e, op in enumerate(arch):
                if op in CONV_KERNEL:
                    kk = CONV_KERNEL[op]
                    cell[e] = ConvBN(_kaiming_uniform((width, width, kk, kk), g), _bn_init(width), 1, kk // 2)
            cells.append(cell)
        stages.append(cells)
    fc_w = _kaiming_uniform((num_classes, c_prev), g)
    bound = 1 / math.sqrt(c_prev)
    fc_b = torch.empty(num_classes).uniform_(-bound, bound, generator=g)
    return NB201Weights(tuple(arch), stem, stages, _bn_init(c_prev), fc_w, fc_b)


def weights_equal(a: NB201Weights, b: NB201Weights) -> bool:
    """Bit-exact equality of every tensor of two candidates (and of their layout)."""
    def flat(w: NB201Weights) -> list:
        out = [w.stem.conv, w.stem.bn.weight, w.stem.bn.bias, w.stem.stride, w.stem.padding]
        for st in w.stages:
            if isinstance(st, ResBlock):
                for cb in (st.conv_a, st.conv_b):
                    out += [cb.conv, cb.bn.weight, cb.bn.bias, cb.stride, cb.padding, cb.bn.eps]
                out.append(st.down)
            else:
                for cell in st:
                    out.append(tuple(sorted(cell)))
                    for e in sorted(cell):
                        cb = cell[e]
                        out += [cb.conv, cb.bn.weight, cb.bn.bias, cb.stride, cb.padding, cb.bn.eps]
            out.append("|")
        out += [w.last_bn.weight, w.last_bn.bias, w.last_bn.eps, w.fc_weight, w.fc_bias, w.arch]
        return out
    fa, fb = flat(a), flat(b)
    if len(fa) != len(fb):
        return False
    for x, y in zip(fa, fb):
        if isinstance(x, Tensor) or isinstance(y, Tensor):
            if not (isinstance(x, Tensor) and isinstance(y, Tensor) and x.shape == y.shape
                    and torch.equal(x.detach(), y.detach())):
                return False
        elif x != y:
            return False
    return True


# ------------------------------------------------------------------------------------------
# One candidate's tensors as NB201Network names them (the module backend's products)
# ------------------------------------------------------------------------------------------
def _named_blocks(w: NB201Weights) -> list[tuple[str, ConvBN | Tensor]]:
    """``(qualified module name, block)`` of every conv-bearing module of ``NB201Network`` in its
    ``modules()`` order: the stem (``stem``: conv ``.0``, BatchNorm ``.1``), each cell's conv edges
    in edge order (``cells.{i}.edges.{e}``, ReLUConvBN: conv ``.1``, BatchNorm ``.2``), each
    reduction block's ``conv_a``, ``conv_b`` and shortcut conv (``cells.{i}.downsample.1``, a bare
    weight [Cout, Cin, 1, 1]). Every edge counts, dead ones included."""
    out: list[tuple[str, ConvBN | Tensor]] = [("stem", w.stem)]
    i = 0
    for stage in w.stages:
        if isinstance(stage, ResBlock):
            out += [(f"cells.{i}.conv_a", stage.conv_a), (f"cells.{i}.conv_b", stage.conv_b),
                    (f"cells.{i}.downsample.1", stage.down)]
            i += 1
        else:
            for cell in stage:
                out += [(f"cells.{i}.edges.{e}", cell[e]) for e in sorted(cell)]
                i += 1
    return out


def _conv_name(name: str) -> str:
    return "stem.0" if name == "stem" else f"{name}.1"


def named_weights(w: NB201Weights) -> list[tuple[str, Tensor]]:
    """``[(module name, weight), ...]`` of every Conv2d and Linear of the candidate's
    ``NB201Network`` in module order (dead edges included; the classifier last), as the module
    backend's counted weights under the paper's Conv2d + Linear rule. Detached, not copied."""
    out = [(name if isinstance(b, Tensor) else _conv_name(name), (b if isinstance(b, Tensor) else b.conv).detach())
           for name, b in _named_blocks(w)]
    out.append(("classifier", w.fc_weight.detach()))
    return out


def live_mask(w: NB201Weights, live: Sequence[bool]) -> list[bool]:
    """For each entry of :func:`named_weights` (same order), whether the batched network with
    ``live`` (its per-edge flags, ``BatchedNB201.live[k]``) has that layer: the stem, reduction
    blocks and classifier always; a cell's conv edge when its edge is live."""
    out = [True]
    for stage in w.stages:
        if isinstance(stage, ResBlock):
            out += [True, True, True]
        else:
            for cell in stage:
                out += [bool(live[e]) for e in sorted(cell)]
    out.append(True)
    return out


def named_parameters(w: NB201Weights) -> dict[str, Tensor]:
    """``{parameter name: tensor}`` of every parameter of the candidate's ``NB201Network``, as
    its ``named_parameters()`` (convs, every BatchNorm's affine weight and bias, the classifier's
    weight and bias; dead edges included). Detached, not copied."""
    out: dict[str, Tensor] = {}

    def bn(prefix: str, b: BN) -> None:
        if b.weight is not None:
            out[f"{prefix}.weight"] = b.weight.detach()
        if b.bias is not None:
            out[f"{prefix}.bias"] = b.bias.detach()

    for name, b in _named_blocks(w):
        if isinstance(b, Tensor):
            out[f"{name}.weight"] = b.detach()
            continue
        out[f"{_conv_name(name)}.weight"] = b.conv.detach()
        bn("stem.1" if name == "stem" else f"{name}.2", b.bn)
    bn("lastact.0", w.last_bn)
    out["classifier.weight"] = w.fc_weight.detach()
    if w.fc_bias is not None:
        out["classifier.bias"] = w.fc_bias.detach()
    return out


def call_macs(w: NB201Weights, hw: tuple[int, int]) -> list[tuple[str, float]]:
    """``[(module name, multiply-accumulates), ...]`` of every Conv2d / Linear call of the
    candidate's ``NB201Network`` on one ``[1, 3, H, W]`` sample, in call order (a reduction block
    runs its shortcut first), NAS-Bench-201's convention (xautodl's counter, as the module
    backend's ``zcfast.proxies.suite_zero.conv_linear_macs``): a conv k_h·k_w·C_in·C_out·H_out·W_out
    (no conv has a bias), the classifier in·out + out. Every edge counts, dead ones included (the
    module network calls them: its ``none`` is ``x * 0``)."""
    out: list[tuple[str, float]] = []

    def conv(name: str, weight: Tensor, stride: int, padding: int, hw_in: tuple[int, int]) -> tuple[int, int]:
        co, ci, kh, kw = weight.shape
        ho = (hw_in[0] + 2 * padding - kh) // stride + 1
        wo = (hw_in[1] + 2 * padding - kw) // stride + 1
        out.append((name, float(kh * kw * ci * co * ho * wo)))
        return ho, wo

    hw = conv("stem.0", w.stem.conv, w.stem.stride, w.stem.padding, hw)
    i = 0
    for stage in w.stages:
        if isinstance(stage, ResBlock):
            pooled = ((hw[0] - 2) // 2 + 1, (hw[1] - 2) // 2 + 1)      # AvgPool2d(2, 2), then the 1x1 conv
            conv(f"cells.{i}.downsample.1", stage.down, 1, 0, pooled)
            mid = conv(f"cells.{i}.conv_a.1", stage.conv_a.conv, stage.conv_a.stride, stage.conv_a.padding, hw)
            hw = conv(f"cells.{i}.conv_b.1", stage.conv_b.conv, stage.conv_b.stride, stage.conv_b.padding, mid)
            i += 1
            continue
        for cell in stage:
            for e in sorted(cell):
                conv(f"cells.{i}.edges.{e}.1", cell[e].conv, cell[e].stride, cell[e].padding, hw)
            i += 1
    classes, c = w.fc_weight.shape
    out.append(("classifier", float(c * classes + (classes if w.fc_bias is not None else 0))))
    return out


def gaussian_weights(w: NB201Weights, generator: torch.Generator | None, bn_eps: float,
                     device: torch.device | str = "cpu") -> NB201Weights:
    """Zen-NAS's re-initialisation of a candidate (``zcfast.proxies.suite_zero.zen_init`` on its
    ``NB201Network``): every Conv2d / Linear weight N(0, 1) drawn from ``generator`` in module
    order (stem, each cell's conv edges in edge order *dead ones included*, each reduction block's
    conv_a, conv_b, shortcut, the classifier), biases 0, BatchNorm weight 1, bias 0, eps
    ``bn_eps``; on ``device`` (the generator's)."""
    def normal(t: Tensor) -> Tensor:
        return torch.empty(t.shape, dtype=t.dtype, device=device).normal_(0.0, 1.0, generator=generator)

    def bn(c: int) -> BN:
        return BN(torch.ones(c, device=device), torch.zeros(c, device=device), bn_eps)

    def convbn(b: ConvBN) -> ConvBN:
        return ConvBN(normal(b.conv), bn(b.conv.shape[0]), b.stride, b.padding)

    stem = convbn(w.stem)
    stages: list = []
    for stage in w.stages:
        if isinstance(stage, ResBlock):
            a = convbn(stage.conv_a)
            b = convbn(stage.conv_b)
            stages.append(ResBlock(a, b, normal(stage.down)))
        else:
            stages.append([{e: convbn(cell[e]) for e in sorted(cell)} for cell in stage])
    fc_w = normal(w.fc_weight)
    fc_b = None if w.fc_bias is None else torch.zeros(w.fc_bias.shape, dtype=w.fc_bias.dtype, device=device)
    return NB201Weights(w.arch, stem, stages, bn(w.last_bn.weight.shape[0] if w.last_bn.weight is not None
                                                 else w.fc_weight.shape[1]), fc_w, fc_b)
