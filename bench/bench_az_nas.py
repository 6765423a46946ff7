"""AZ-NAS's four measures: zcfast (one ``score_arch`` call, the ``az_pass`` need + ``flops``)
against an official-style implementation (plain PyTorch float32, the order and formulas of
cvlab-yonsei/AZ-NAS@5e6683a2 ``compute_az_nas_score.py``, FLOPs by the official-style counter of
bench/official_style.py), on the same NB201 architectures, seeds and batch shape.

Values are checked first (each measure to 1e-4 relative: the official statistics are float32,
zcfast's float64). Then A (zcfast) and B (official style) run in turn, A B A B ..., and the
ratio is taken pair by pair (median quoted), so a drifting machine moves both alike.

    .venv/bin/python bench/bench_az_nas.py --archs 3 --repeats 3 --batch 64

``--correlation N`` instead scores N random NB201 architectures (``random.Random(1)``) with the
four and prints each one's Spearman ρ, and that of the official log-rank aggregate
Σ log(rank/N), against CIFAR-10 test accuracy (200 epochs, ``ground_truth(arch, "cifar10")``).

``--phases`` instead checks ``rademacher_like`` against ``torch.bernoulli`` on one
[batch, 16, 32, 32] draw (equal first, then both timed), and times each step of zcfast's call
(wrappers around the steps of ``zcfast.proxies.az_nas``; the ``flops`` need alone as its own call),
per architecture over ``--archs`` architectures x ``--repeats`` rounds.

``--bare`` instead times the three ``az_pass`` measures in one ``zcfast.score`` call against
their bare passes alone (copy, init, Gaussian input, forward to the last cell, one
vector-Jacobian product per cell; no statistics), in alternating pairs.
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import official_style as o  # noqa: E402

import zcfast  # noqa: E402
from zcfast.proxies.az_nas import AZ_NAS  # noqa: E402
from zcfast.scoring import build_seeded  # noqa: E402


def official_style_az(net: nn.Module, shape: tuple[int, ...], seed: int) -> dict[str, float]:
    """The official computation on a deep copy, float32 throughout, global RNG after manual_seed."""
    import copy

    torch.manual_seed(seed)
    m = copy.deepcopy(net).train()
    for p in m.parameters():
        p.requires_grad_(True)
    for mod in m.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(mod.weight, mode="fan_in", nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, (nn.BatchNorm2d, nn.GroupNorm)) and mod.affine:
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)
    x = torch.randn(shape)
    feats = [m.stem(x)]
    for cell in m.cells:
        feats.append(cell(feats[-1]))
    ent = []
    for f in feats:
        b, c, h, w = f.shape
        z = f.detach().clone().permute(0, 2, 3, 1).contiguous().view(b * h * w, c)
        z = z - z.mean(dim=0, keepdim=True)
        s = torch.linalg.eigvalsh(z.t() @ z / z.shape[0])
        p = s / s.sum()
        ent.append(float((-p * torch.log(p + 1e-8)).sum()))
    scores = []
    for i in reversed(range(1, len(feats))):
        f_out, f_in = feats[i], feats[i - 1]
        g_out = (torch.bernoulli(torch.ones_like(f_out) * 0.5) - 0.5) * 2
        g_in = torch.autograd.grad(f_out, f_in, g_out, retain_graph=False)[0]
        if g_out.shape == g_in.shape and bool(torch.all(g_in == g_out)):
            scores.append(-math.inf)
            continue
        if g_out.shape[2] != g_in.shape[2]:
            g_in = nn.PixelUnshuffle(g_in.shape[2] // g_out.shape[2])(g_in)
        bo, co, ho, wo = g_out.shape
        a = g_in.permute(0, 2, 3, 1).contiguous().view(bo * ho * wo, -1)
        bm = g_out.permute(0, 2, 3, 1).contiguous().view(bo * ho * wo, co)
        mat = a.t() @ bm / (bo * ho * wo)
        if mat.shape[0] < mat.shape[1]:
            mat = mat.t()
        smax = float(torch.linalg.svdvals(mat).max())
        scores.append(-smax - 1 / (smax + 1e-6) + 2)
    nan_inf = lambda v: -math.inf if math.isnan(v) else v  # noqa: E731
    return {"az_expressivity": nan_inf(sum(ent)),
            "az_progressivity": nan_inf(min(b - a for a, b in zip(ent, ent[1:]))),
            "az_trainability": nan_inf(sum(scores) / len(scores)),
            "az_complexity": o.official_flops(net, torch.randn(shape), millions=True)}


def correlation(n: int, batch: int, seed: int) -> None:
    import numpy as np
    from scipy import stats

    space = zcfast.spaces.get("nb201")
    rng = random.Random(1)
    archs = [space.sample(rng) for _ in range(n)]
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    t0 = time.perf_counter()
    v = np.array([[zcfast.score_arch(space, a, x, y, proxies=list(AZ_NAS), seed=seed)[k] for k in AZ_NAS]
                  for a in archs])
    print(f"{(time.perf_counter() - t0) / n:.2f} s per architecture (batch {batch}, one torch thread)")
    acc = np.array([space.ground_truth(a, "cifar10", "test") for a in archs])
    for j, k in enumerate(AZ_NAS):
        print(f"{k:18s} rho {stats.spearmanr(v[:, j], acc)[0]:.3f}")
    agg = sum(np.log(stats.rankdata(v[:, j]) / n) for j in range(len(AZ_NAS)))
    print(f"log-rank aggregate rho {stats.spearmanr(agg, acc)[0]:.3f} over {n} architectures")


def bare_passes(net: nn.Module, shape: tuple[int, ...], seed: int) -> None:
    """What az_pass cannot avoid: the copy, the init, the input, the forward, the VJPs."""
    import copy

    from zcfast.proxies.az_nas import az_init, rademacher_like

    gen = torch.Generator().manual_seed(seed)
    m = copy.deepcopy(net).train()
    az_init(m, gen)
    x = torch.randn(shape, generator=gen)
    feats = [m.stem(x)]
    for cell in m.cells:
        feats.append(cell(feats[-1]))
    for i in reversed(range(1, len(feats))):
        g = rademacher_like(feats[i].detach(), gen)   # bernoulli(0.5)'s numbers, its cheapest draw
        torch.autograd.grad(feats[i], feats[i - 1], g, retain_graph=True)


def bare(n_archs: int, repeats: int, batch: int, seed: int) -> None:
    space = zcfast.spaces.get("nb201")
    rng = random.Random(0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    three = [k for k in AZ_NAS if k != "az_complexity"]
    ratios = []
    for arch in [space.sample(rng) for _ in range(n_archs)]:
        net = build_seeded(space, arch, seed, 10)
        for _ in range(repeats):
            t0 = time.perf_counter()
            zcfast.score(net, x, y, proxies=three, seed=seed)
            ta = time.perf_counter() - t0
            t0 = time.perf_counter()
            bare_passes(net, tuple(x.shape), seed)
            tb = time.perf_counter() - t0
            ratios.append(ta / tb)
    print(f"az_pass measures / bare passes, median of {len(ratios)} pairs: {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}); batch {batch}, one torch thread")


def phases(n_archs: int, repeats: int, batch: int, seed: int) -> None:
    """``--phases``: the draw against ``torch.bernoulli``, then ms per architecture of each step."""
    from collections import defaultdict

    from zcfast.proxies import az_nas, engine

    t = torch.zeros(batch, 16, 32, 32)
    for dtype in (torch.float32, torch.float64):
        t = t.to(dtype)
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        if not torch.equal((torch.bernoulli(torch.full_like(t, 0.5), generator=g1) - 0.5) * 2,
                           az_nas.rademacher_like(t, g2)):
            raise SystemExit(f"rademacher_like differs from torch.bernoulli in {dtype}")
        ms = []
        for f in (lambda: (torch.bernoulli(torch.full_like(t, 0.5), generator=g1) - 0.5) * 2,
                  lambda: az_nas.rademacher_like(t, g2)):
            f()
            t0 = time.perf_counter()
            for _ in range(20):
                f()
            ms.append((time.perf_counter() - t0) / 20 * 1e3)
        print(f"{list(t.shape)} {str(dtype).replace('torch.', '')}: bernoulli {ms[0]:.2f} ms, "
              f"rademacher_like {ms[1]:.2f} ms (equal)")
    spent: dict[str, float] = defaultdict(float)

    def timed(owner: object, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t0
        setattr(owner, name, wrapper)

    for name, label in (("record_cells", "forward to the last cell"), ("rademacher_like", "draws"),
                        ("trainability_score", "trainability matrices + SVD"), ("az_init", "AZ init")):
        timed(az_nas, name, label)
    timed(az_nas.ops, "channel_spectra", "channel_spectra")
    timed(engine, "_private_copy", "private copies")
    timed(az_nas.torch.autograd, "grad", "per-cell vector-Jacobian products")
    space = zcfast.spaces.get("nb201")
    rng = random.Random(0)
    nets = [build_seeded(space, space.sample(rng), seed, 10) for _ in range(n_archs)]
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    whole, flops = "AZ-NAS's four", "the flops need alone"
    calls = {whole: list(AZ_NAS), flops: ["flops"]}
    for net in nets:   # untimed first calls
        for props in calls.values():
            zcfast.score(net, x, y, props, seed=seed)
    totals = {}
    for label, props in calls.items():
        spent.clear()
        t0 = time.perf_counter()
        for _ in range(repeats):
            for net in nets:
                zcfast.score(net, x, y, props, seed=seed)
        totals[label] = (time.perf_counter() - t0) / (repeats * len(nets)) * 1e3
        if label == whole:
            steps = sorted(spent.items(), key=lambda kv: -kv[1])
    print(f"ms per architecture, batch {batch}, {n_archs} archs x {repeats} rounds, one torch thread:")
    print(f"  {whole}, whole call: {totals[whole]:.1f}")
    for label, s_ in steps:
        print(f"    {label}: {s_ / (repeats * len(nets)) * 1e3:.1f}")
    print(f"  {flops} (a flops call): {totals[flops]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--correlation", type=int, default=0, metavar="N")
    ap.add_argument("--bare", action="store_true")
    ap.add_argument("--phases", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.phases:
        phases(args.archs, args.repeats, args.batch, args.seed)
        return
    if args.bare:
        bare(args.archs, args.repeats, args.batch, args.seed)
        return
    if args.correlation:
        correlation(args.correlation, args.batch, args.seed)
        return
    space = zcfast.spaces.get("nb201")
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(args.archs)]
    x = torch.randn(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    ratios = []
    for arch in archs:
        net = build_seeded(space, arch, args.seed, 10)
        got = zcfast.score_arch(space, arch, x, y, proxies=list(AZ_NAS), seed=args.seed)
        want = official_style_az(net, tuple(x.shape), args.seed)
        for k in AZ_NAS:
            a, b = got[k], want[k]
            same = a == b if math.isinf(a) or math.isinf(b) else abs(a - b) <= 1e-4 * max(1.0, abs(b))
            if not same:
                raise SystemExit(f"{space.encode(arch)}: {k} zcfast {a} != official style {b}")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            zcfast.score_arch(space, arch, x, y, proxies=list(AZ_NAS), seed=args.seed)
            ta = time.perf_counter() - t0
            t0 = time.perf_counter()
            official_style_az(build_seeded(space, arch, args.seed, 10), tuple(x.shape), args.seed)
            tb = time.perf_counter() - t0
            ratios.append(ta / tb)
        print(f"{space.encode(arch)}  values equal; last pair zcfast {ta:.3f} s, official style {tb:.3f} s")
    print(f"zcfast / official style, median of {len(ratios)} pairs: {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}); batch {args.batch}, one torch thread")


if __name__ == "__main__":
    main()
