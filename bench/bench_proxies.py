"""Benchmark: zcfast's shared-pass engine against the official-style baseline on NB201.

For each architecture (the all-nor_conv_3x3 one, then random ones; per-architecture seeded
weights), on one batch of 64 32×32 images (the shipped CIFAR-10 paper batch when available):

1. values: the engine's six proxies must equal the official-style ones (bench/official_style.py:
   a deep copy and its own passes per proxy) to ``--rtol``; a mismatch aborts;
2. time per architecture: all six, official-style vs ``zcfast.score`` (the general engine for
   any ``nn.Module``: copies the caller's model, shared passes) and vs ``zcfast.score_arch``
   (builds the architecture itself; for NB201 it runs the specialised path of
   ``zcfast.batched`` with one candidate: no module tree, edges that cannot affect any proxy
   skipped, pooling as shifted sums);
3. each proxy alone (``zcfast.score(proxies=(p,))``) against the plain-autograd passes that
   proxy needs (e.g. snip: one forward + backward), i.e. the engine's overhead.

    python bench/bench_proxies.py                 # 10 architectures, 1 thread
    python bench/bench_proxies.py --archs 3 --repeats 1   # quick
    python bench/bench_proxies.py --f64                   # also each value's error vs float64

Writes bench/results/proxies.{json,md}. Figures on a shared machine depend on its load: the
load average is recorded with them.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import random
import statistics
import sys
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import official_style  # noqa: E402
from common import (  # noqa: E402
    command_line, machine_info, markdown_table, timed_median as _timed, write_results)

import zcfast  # noqa: E402
import zcfast.spaces  # noqa: E402
from zcfast.proxies import score  # noqa: E402
from zcfast.scoring import build_seeded, score_arch, synflow_bn_rule  # noqa: E402
from zcfast.proxies.engine import remove_batchnorms  # noqa: E402

SIX = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow")
ALL_CONV = ("nor_conv_3x3",) * 6


def _weights(net: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def raw_passes(net: nn.Module, x: torch.Tensor, y: torch.Tensor, keep: list[str] | None
               ) -> dict[str, Callable[[], Any]]:
    """The bare autograd passes each proxy needs (no copies, hooks or reductions)."""
    net = copy.deepcopy(net).train()
    ws = _weights(net)
    syn = copy.deepcopy(net)
    remove_batchnorms(syn, keep)
    syn = syn.double()
    with torch.no_grad():
        for t in list(syn.parameters()) + list(syn.buffers()):
            if t.is_floating_point():
                t.abs_()
    sws = _weights(syn)
    ones = torch.ones((1,) + tuple(x.shape[1:]), dtype=torch.float64)

    def fb():
        return torch.autograd.grad(F.cross_entropy(net(x), y), ws, allow_unused=True)

    def grasp():
        g = torch.autograd.grad(F.cross_entropy(net(x), y), ws, create_graph=True, allow_unused=True)
        z = torch.stack([(gi.detach() * gi).sum() for gi in g if gi is not None]).sum()
        return torch.autograd.grad(z, ws, allow_unused=True)

    def jac():
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        return torch.autograd.grad(out, xi, torch.ones_like(out))

    def synflow():
        return torch.autograd.grad(syn(ones).sum(), sws, allow_unused=True)

    return {"grad_norm": fb, "snip": fb, "fisher": fb, "grasp": grasp, "jacob_cov": jac,
            "synflow": synflow}


def rel(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b) / max(abs(b), 1e-30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", type=int, default=10, help="architectures (first: all nor_conv_3x3)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per measurement (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared box)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance of the value check")
    ap.add_argument("--rtol-grasp", type=float, default=1e-4,
                    help="grasp is a signed sum whose per-layer terms cancel: float32 rounding is "
                         "amplified relative to the total (seen: 3.3e-5)")
    ap.add_argument("--rtol-arch", type=float, default=2e-3,
                    help="relative tolerance of score_arch's values (NB201: another float32 operation "
                         "order, so rounding differs; grasp: relative to max(|value|, 1), x5)")
    ap.add_argument("--f64", action="store_true",
                    help="also compute the official-style values in float64 and report each path's "
                         "float32 error against them (about 15 s more per architecture)")
    ap.add_argument("--no-alone", action="store_true", help="skip the per-proxy overhead part")
    ap.add_argument("--alone-repeats", type=int, default=None,
                    help="timed runs per measurement in the per-proxy part (default --repeats): "
                         "synflow's pass takes 4-50 ms, so its ratio needs more runs to settle")
    ap.add_argument("--out", default="proxies", help="result name under bench/results/")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    space = zcfast.spaces.get("nb201")
    try:
        from zcfast.data import paper_batch

        x, y = paper_batch(batch_size=args.batch, seed=args.seed)
        data_desc = f"zcfast.data.paper_batch(batch_size={args.batch}, seed={args.seed}) (shipped CIFAR-10)"
    except Exception as exc:  # no shipped data: a seeded random batch of the same shape
        g = torch.Generator().manual_seed(args.seed)
        x, y = torch.randn(args.batch, 3, 32, 32, generator=g), torch.randint(0, 10, (args.batch,), generator=g)
        data_desc = f"random normal batch ({exc})"
    rng = random.Random(args.seed)
    archs = [ALL_CONV] + [space.sample(rng) for _ in range(args.archs - 1)]

    rows = []
    for a in archs:
        net = build_seeded(space, a, args.seed)
        keep = synflow_bn_rule("nb201", net)
        t_off, off = _timed(lambda: official_style.official_scores(net, x, y, SIX, keep), args.repeats)
        t_eng, eng = _timed(lambda: score(net, x, y, SIX, synflow_keep_bn=keep), args.repeats)
        t_arch, eng2 = _timed(lambda: score_arch(space, a, x, y, SIX, seed=args.seed), args.repeats)
        worst = {p: rel(eng[p], off[p]) for p in SIX}
        bad = {p: v for p, v in worst.items() if v > (args.rtol_grasp if p == "grasp" else args.rtol)}
        # score_arch on NB201 runs another float32 operation order (zcfast.batched), so it is
        # checked with its own tolerance. grasp is a signed sum whose layer terms cancel (values
        # near 0 occur): its difference is taken relative to max(|value|, 1).
        worst_arch = {p: (abs(eng2[p] - off[p]) / max(abs(off[p]), 1.0) if p == "grasp" else rel(eng2[p], off[p]))
                      for p in SIX}
        bad.update({f"score_arch:{p}": v for p, v in worst_arch.items()
                    if v > args.rtol_arch * (5 if p == "grasp" else 1)})
        if bad:
            print(f"VALUE MISMATCH on {space.encode(a)}: {bad}\n official {off}\n engine {eng}\n arch {eng2}",
                  file=sys.stderr)
            return 1
        row: dict[str, Any] = {"arch": space.encode(a), "official_s": t_off, "score_s": t_eng,
                               "score_arch_s": t_arch, "speedup_score": t_off / t_eng,
                               "speedup_score_arch": t_off / t_arch,
                               "max_rel_diff": max(worst.values()), "max_rel_diff_arch": max(worst_arch.values()),
                               "rel_diff": worst, "rel_diff_arch": worst_arch,
                               "values": eng, "values_arch": eng2}
        if args.f64:
            ref = official_style.official_scores(copy.deepcopy(net).double(), x.double(), y, SIX, keep)

            def err(v: dict[str, float]) -> dict[str, float]:
                return {p: abs(v[p] - ref[p]) / (max(abs(ref[p]), 1.0) if p == "grasp" else max(abs(ref[p]), 1e-30))
                        for p in SIX}
            row["f64_values"] = ref
            row["f64_error"] = {"official_style": err(off), "score": err(eng), "score_arch": err(eng2)}
        if not args.no_alone:
            passes = raw_passes(net, x, y, keep)
            alone = {}
            reps = args.alone_repeats or args.repeats
            for p in SIX:
                t_p, _ = _timed(lambda: score(net, x, y, (p,), synflow_keep_bn=keep), reps)
                t_raw, _ = _timed(passes[p], reps)
                alone[p] = {"engine_s": t_p, "passes_s": t_raw, "ratio": t_p / t_raw}
            row["alone"] = alone
        rows.append(row)
        print(f"{row['arch']}: official {t_off:.2f} s, score {t_eng:.2f} s ({row['speedup_score']:.2f}x), "
              f"score_arch {t_arch:.2f} s ({row['speedup_score_arch']:.2f}x), max rel diff "
              f"{row['max_rel_diff']:.1e} / {row['max_rel_diff_arch']:.1e}", flush=True)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    info = machine_info()
    summary = {"official_s": med("official_s"), "score_s": med("score_s"), "score_arch_s": med("score_arch_s"),
               "speedup_score": med("speedup_score"), "speedup_score_arch": med("speedup_score_arch"),
               "mean_official_s": statistics.mean(r["official_s"] for r in rows),
               "mean_score_s": statistics.mean(r["score_s"] for r in rows),
               "mean_score_arch_s": statistics.mean(r["score_arch_s"] for r in rows)}
    if args.f64:
        summary["max_f64_error"] = {path: {p: max(r["f64_error"][path][p] for r in rows) for p in SIX}
                                    for path in ("official_style", "score", "score_arch")}
    if not args.no_alone:
        summary["alone_ratio_median"] = {p: statistics.median(r["alone"][p]["ratio"] for r in rows) for p in SIX}
    payload = {"command": command_line(), "machine": info, "data": data_desc, "archs": len(rows),
               "summary": summary, "rows": rows}
    md = [f"# Proxy engine vs official-style baseline (NB201, batch {args.batch}, all six proxies)\n",
          f"Command: `{command_line()}`  \nMachine: {info['cpu']}, {info['logical_cpus']} logical CPUs, "
          f"torch {info['torch']} with {info['torch_threads']} thread(s); load average "
          f"{info['loadavg_1_5_15']} at the end ({info['date_utc']} UTC).  \nData: {data_desc}.  \n"
          f"Values checked first: every proxy of `zcfast.score` within rtol {args.rtol} (grasp "
          f"{args.rtol_grasp}) of the official-style value; `score_arch` within rtol {args.rtol_arch} "
          f"(grasp: {5 * args.rtol_arch:g} of max(|value|, 1)).\n\n",
          markdown_table(["architecture", "official-style s", "zcfast.score s", "speed-up",
                          "score_arch s", "speed-up", "max rel diff score", "max rel diff score_arch"],
                         [[r["arch"].replace("|", "\\|"), f"{r['official_s']:.2f}", f"{r['score_s']:.2f}",
                           f"{r['speedup_score']:.2f}x", f"{r['score_arch_s']:.2f}", f"{r['speedup_score_arch']:.2f}x",
                           f"{r['max_rel_diff']:.1e}", f"{r['max_rel_diff_arch']:.1e}"]
                          for r in rows]),
          f"\nMedian per architecture: official-style {summary['official_s']:.2f} s, zcfast.score "
          f"{summary['score_s']:.2f} s ({summary['speedup_score']:.2f}x), score_arch "
          f"{summary['score_arch_s']:.2f} s ({summary['speedup_score_arch']:.2f}x). Mean: official-style "
          f"{summary['mean_official_s']:.2f} s, score {summary['mean_score_s']:.2f} s "
          f"({summary['mean_official_s'] / summary['mean_score_s']:.2f}x), score_arch "
          f"{summary['mean_score_arch_s']:.2f} s ({summary['mean_official_s'] / summary['mean_score_arch_s']:.2f}x).\n"]
    if args.f64:
        md.append("\n## float32 error against float64 (official-style computation in float64), max over "
                  "architectures\n\nRelative error (grasp: relative to max(|value|, 1)).\n\n")
        md.append(markdown_table(["path"] + list(SIX),
                                 [[path] + [f"{summary['max_f64_error'][path][p]:.1e}" for p in SIX]
                                  for path in ("official_style", "score", "score_arch")]))
    if not args.no_alone:
        md.append("\n## Each proxy alone vs the bare passes it needs (median ratio over architectures)\n\n")
        md.append(markdown_table(["proxy", "passes", "engine / passes"],
                                 [[p, {"grasp": "F + B(create_graph) + B(H·g)", "jacob_cov": "F + B to inputs",
                                       "synflow": "F + B, batch 1, float64"}.get(p, "F + B"),
                                   f"{summary['alone_ratio_median'][p]:.2f}"] for p in SIX]))
    write_results(args.out, payload, "".join(md))
    print("".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
