"""Experiment (not part of the zcfast package): the official zero-cost-nas NB201 model builds its cell
convolutions with bias=True (cells use affine=False BatchNorm, and ReLUConvBN sets bias=not affine).
The benchmark network zcfast builds has no conv bias. A bias before a batch-statistics BatchNorm
does not change the forward, but it enters (a) fisher (the conv output act = Wx + b is hooked) and
(b) synflow (cell BatchNorms are removed and |b| is added to the flow). This scorer adds PyTorch's
default-initialised bias to every cell conv of the seeded benchmark network and scores it."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from zcfast.proxies import arch_seed, score_detailed
from zcfast.proxies.arch import build_seeded, synflow_bn_rule
from zcfast.spaces.nb201 import NB201Cell


def add_cell_conv_bias(net: nn.Module, seed: int) -> int:
    g = torch.Generator().manual_seed(seed)
    n = 0
    for cell in net.modules():
        if isinstance(cell, NB201Cell):
            for m in cell.modules():
                if isinstance(m, nn.Conv2d) and m.bias is None:
                    fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                    bound = 1.0 / math.sqrt(fan_in)
                    m.bias = nn.Parameter(torch.empty(m.out_channels).uniform_(-bound, bound, generator=g))
                    n += 1
    return n


def bias_score(space, arch, x, y, proxies, seed, num_classes, device):
    net = build_seeded(space, arch, seed, num_classes)
    add_cell_conv_bias(net, arch_seed(seed + 1, space.key(arch)))
    keep = synflow_bn_rule("nb201", net)
    res = score_detailed(net, x, y, list(proxies), synflow_keep_bn=keep, seed=seed)


def bias_score(space, arch, x, y, proxies, seed, num_classes, device):
    """A ``correlate`` score function: the seeded benchmark network plus cell-conv biases."""
    net = build_seeded(space, arch, seed, num_classes)
    add_cell_conv_bias(net, arch_seed(seed + 1, space.key(arch)))
    keep = synflow_bn_rule("nb201", net)
    res = score_detailed(net, x, y, list(proxies), synflow_keep_bn=keep, seed=seed)
    return {k: r.value for k, r in res.items()}


if __name__ == "__main__":
    # python bench/experiments/fisher_conv_bias.py N STORE   (docs/correlation.md, item 3: N=150)
    import sys

    import zcfast.correlate as corr

    n, store = int(sys.argv[1]), sys.argv[2]
    r = corr.correlate("nb201", "cifar10", "synflow,fisher", n, 0, store=store, score_fn=bias_score,
                       workers=0, time_sample=0, progress=True)
    print(corr.format_table(r.summary))
