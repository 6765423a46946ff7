"""Benchmark: NAS-Bench-Suite-Zero's 13 proxies in one zcfast call against each one computed
by its own official-style implementation in sequence (issue #12, item 8).

For each NB201 architecture (the all-``nor_conv_3x3`` cell first, then uniform samples), with
the per-architecture seeded network ``build_seeded(space, arch, seed, 10)`` and the paper batch
``zcfast.data.paper_batch("cifar10", batch, seed)``, in one run:

1. **values first**: ``zcfast.score_arch`` of the 13 proxies of ``official_style.SUITE_ZERO``
   plus ``zico`` must equal ``official_style.official_modern_scores`` (a deep copy and its own
   passes per proxy, NASLib's predictor's way) within ``--rtol``; a mismatch aborts before any
   timing. Matched settings: synflow keeps NB201's reduction-block BatchNorms
   (``synflow_bn_rule``), zen's generator is seeded with score_arch's ``seed`` (zcfast sets
   ``ctx.seed`` to it), zico splits the batch into the same two halves, params/flops in
   millions (zcfast's units).
2. **(a) all 13 per architecture**: ``score_arch(space, arch, x, y, SUITE_ZERO)`` (one call:
   builds the seeded network, shares passes between proxies, takes the NB201 fast route when
   ``zcfast.batched.SUPPORTED_NEEDS`` covers the needs) against ``build_seeded`` +
   ``official_modern_scores`` in sequence. Target: >= 3x.
3. **(b) each new proxy alone** (``zcfast.score(net, x, y, (p,))``, the module engine on the
   caller's network, which it copies) against the bare passes that proxy needs, in plain PyTorch
   (:func:`bare_passes`, each stated there). Target: <= 1.2x.
4. ``--profile``: cProfile of one 13-proxy ``score_arch`` call (the top functions by own time and
   by cumulative time go into the JSON and the table), to find where zcfast spends it.

    python bench/bench_suite_zero.py                       # 3 architectures, 1 thread
    python bench/bench_suite_zero.py --n-archs 1 --repeats 1 --no-alone   # quick

Writes ``<out>/suite_zero.{json,md}`` (default bench/results/) with the machine, the torch
thread count and the load average before and after, because figures on a shared machine depend
on its load. Works whichever backend score_arch routes to (the route is recorded).
"""
from __future__ import annotations

import argparse
import copy
import cProfile
import io
import math
import os
import pstats
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
    RESULTS_DIR, command_line, machine_info, markdown_table, timed_median as _timed, write_results)

import zcfast  # noqa: E402
import zcfast.spaces  # noqa: E402
from zcfast import ops  # noqa: E402
from zcfast.data import paper_batch  # noqa: E402
from zcfast.proxies.registry import resolve  # noqa: E402
from zcfast.scoring import build_seeded, route, synflow_bn_rule  # noqa: E402

SUITE = official_style.SUITE_ZERO
CHECKED = SUITE + ("zico",)
NEW = ("nwot", "epe_nas", "zen", "zico", "l2_norm", "params", "flops")
ALL_CONV = ("nor_conv_3x3",) * 6
#: what each bare baseline of part (b) contains (printed with the table)
BARE_DESC = {
    "nwot": "deep copy + 1 no-grad forward, ops.hamming_kernel of every ReLU-typed module's input, summed, slogdet",
    "epe_nas": "deep copy + 1 forward + backward of Σ logits to the input",
    "zen": "deep copy + N(0,1) re-init of Conv/Linear + 2 no-grad forwards of Gaussian inputs",
    "zico": "deep copy + 2 half-batch forward+backward (∂CE/∂W of Conv/Linear)",
    "l2_norm": "Σ ‖W‖_F over the Conv/Linear weights (no copy)",
    "params": "Σ numel over net.parameters() (no copy)",
    "flops": "deep copy + 1 no-grad eval forward of one sample, no hooks",
}


def _weights(net: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def bare_passes(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """The bare work each new proxy needs, in plain PyTorch (:data:`BARE_DESC`): the passes on a
    private copy (zcfast.score copies the caller's network too), no checks, no per-layer
    bookkeeping, no NaN reasons. x: [N, 3, H, W] float32, y: [N] int64."""
    relu_types = tuple({type(m) for m in net.modules() if "ReLU" in type(m).__name__})
    half = x.shape[0] // 2

    def nwot() -> float:
        c = copy.deepcopy(net).train()
        acts: list[torch.Tensor] = []
        hs = [m.register_forward_hook(lambda m, a, o: acts.append(a[0])) for m in c.modules()
              if isinstance(m, relu_types)]
        with torch.no_grad():
            c(x)
        for h in hs:
            h.remove()
        return float(torch.linalg.slogdet(ops.hamming_kernel(acts))[1])

    def epe() -> torch.Tensor:
        c = copy.deepcopy(net).train()
        xi = x.clone().requires_grad_(True)
        out = c(xi)
        return torch.autograd.grad(out, xi, torch.ones_like(out))[0]

    def zen() -> torch.Tensor:
        c = copy.deepcopy(net).train()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for w in _weights(c):
                w.normal_(generator=g)
            z = torch.randn(x.shape, generator=g)
            e = torch.randn(x.shape, generator=g)
            return c(z) - c(z + 1e-2 * e)

    def zico() -> list:
        c = copy.deepcopy(net).train()
        ws = _weights(c)
        return [torch.autograd.grad(F.cross_entropy(c(xb), yb), ws, allow_unused=True)
                for xb, yb in ((x[:half], y[:half]), (x[half:2 * half], y[half:2 * half]))]

    def l2() -> float:
        with torch.no_grad():
            return float(sum(w.norm() for w in _weights(net)))

    def params() -> int:
        return sum(p.numel() for p in net.parameters())

    def flops() -> torch.Tensor:
        c = copy.deepcopy(net).eval()
        with torch.no_grad():
            return c(torch.rand((1,) + tuple(x.shape[1:])))

    return {"nwot": nwot, "epe_nas": epe, "zen": zen, "zico": zico, "l2_norm": l2, "params": params,
            "flops": flops}


def rel(a: float, b: float) -> float:
    """|a − b| / |b| (0 when both are NaN or equal infinities)."""
    if (math.isnan(a) and math.isnan(b)) or a == b:
        return 0.0
    return abs(a - b) / max(abs(b), 1e-30)


def official(net: nn.Module, x: torch.Tensor, y: torch.Tensor, proxies: tuple[str, ...], seed: int
             ) -> dict[str, float]:
    """The official-style values under zcfast's matched settings (module docstring, item 1)."""
    return official_style.official_modern_scores(net, x, y, proxies, synflow_keep_bn=synflow_bn_rule("nb201", net),
                                                 zen_seed=seed, millions=True)


def profile_call(fn: Callable[[], Any], top: int = 15) -> dict[str, list[dict[str, Any]]]:
    """cProfile of one call: the ``top`` functions by own time and by cumulative time."""
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    st = pstats.Stats(pr, stream=io.StringIO())
    rows = []
    for (path, line, func), (cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
        where = os.path.relpath(path) if path.startswith(os.getcwd()) else os.path.basename(path)
        rows.append({"function": f"{where}:{line}({func})", "calls": nc, "own_s": tt, "cumulative_s": ct})
    return {"by_own": sorted(rows, key=lambda r: -r["own_s"])[:top],
            "by_cumulative": sorted(rows, key=lambda r: -r["cumulative_s"])[:top]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-archs", type=int, default=3, help="architectures (first: all nor_conv_3x3); default 3")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as stored scores)")
    ap.add_argument("--out", default=RESULTS_DIR, help="folder of suite_zero.{json,md} (default bench/results/)")
    ap.add_argument("--batch", type=int, default=64, help="batch size (paper: 64)")
    ap.add_argument("--seed", type=int, default=42, help="init seed, data seed and sample seed (default 42)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per measurement, median (default 1)")
    ap.add_argument("--rtol", type=float, default=2e-3,
                    help="relative tolerance of the value check (score_arch may route NB201 to the batched "
                         "backend: another float32 operation order); grasp relative to max(|value|, 1), x5")
    ap.add_argument("--no-alone", action="store_true", help="skip part (b), each new proxy alone")
    ap.add_argument("--profile", action="store_true", help="cProfile one 13-proxy score_arch call per arch")
    args = ap.parse_args(argv)
    for opt in ("n_archs", "threads", "batch", "repeats"):
        if getattr(args, opt) < 1:
            ap.error(f"--{opt.replace('_', '-')} must be >= 1, got {getattr(args, opt)}")
    torch.set_num_threads(args.threads)
    load_before = [round(v, 2) for v in os.getloadavg()]

    space = zcfast.spaces.get("nb201")
    x, y = paper_batch("cifar10", batch_size=args.batch, seed=args.seed)
    rng = random.Random(args.seed)
    archs = [ALL_CONV] + [space.sample(rng) for _ in range(args.n_archs - 1)]
    backend = route(space, resolve(SUITE)).name
    backend_new = {p: route(space, resolve((p,))).name for p in NEW}
    zcfast.score_arch(space, archs[0], x, y, ("l2_norm",), seed=args.seed)  # one-time imports out of the timings

    rows: list[dict[str, Any]] = []
    for a in archs:
        text = space.encode(a)
        net = build_seeded(space, a, args.seed, 10)
        got = zcfast.score_arch(space, a, x, y, CHECKED, seed=args.seed, detailed=True)
        ref = official(net, x, y, CHECKED, args.seed)
        diff = {p: (abs(got[p].value - ref[p]) / max(abs(ref[p]), 1.0) if p == "grasp" else rel(got[p].value, ref[p]))
                for p in CHECKED}
        bad = {p: d for p, d in diff.items() if not d <= args.rtol * (5 if p == "grasp" else 1)}
        if bad:
            print(f"VALUE MISMATCH on {text}: {bad}\n zcfast {({p: r.value for p, r in got.items()})}\n"
                  f" errors {({p: r.error for p, r in got.items() if r.error})}\n official {ref}", file=sys.stderr)
            return 1

        def ours() -> Any:
            return zcfast.score_arch(space, a, x, y, SUITE, seed=args.seed)

        def theirs() -> Any:
            return official(build_seeded(space, a, args.seed, 10), x, y, SUITE, args.seed)

        t_ours, _ = _timed(ours, args.repeats)
        t_theirs, _ = _timed(theirs, args.repeats)
        row: dict[str, Any] = {"arch": text, "zcfast_s": t_ours, "official_s": t_theirs, "speedup": t_theirs / t_ours,
                               "max_rel_diff": max(diff.values()), "rel_diff": diff,
                               "values": {p: got[p].value for p in CHECKED}, "official_values": ref}
        if not args.no_alone:
            bare = bare_passes(net, x, y)
            alone = {}
            for p in NEW:
                t_p, _ = _timed(lambda: zcfast.score(net, x, y, (p,), seed=args.seed), args.repeats)
                t_b, _ = _timed(bare[p], args.repeats)
                alone[p] = {"zcfast_s": t_p, "bare_s": t_b, "ratio": t_p / t_b}
            row["alone"] = alone
        if args.profile:
            row["profile"] = profile_call(ours)
        rows.append(row)
        print(f"{text}: zcfast {t_ours:.2f} s, official-style {t_theirs:.2f} s ({row['speedup']:.2f}x), "
              f"max rel diff {row['max_rel_diff']:.1e}"
              + ("" if args.no_alone else "; alone " + ", ".join(f"{p} {v['ratio']:.2f}x"
                                                                   for p, v in row["alone"].items())), flush=True)

    info = machine_info()
    summary: dict[str, Any] = {
        "speedup_median": statistics.median(r["speedup"] for r in rows),
        "speedup_of_means": statistics.mean(r["official_s"] for r in rows) / statistics.mean(r["zcfast_s"] for r in rows),
        "zcfast_s_median": statistics.median(r["zcfast_s"] for r in rows),
        "official_s_median": statistics.median(r["official_s"] for r in rows),
        "max_rel_diff": {p: max(r["rel_diff"][p] for r in rows) for p in CHECKED}}
    if not args.no_alone:
        summary["alone_ratio_median"] = {p: statistics.median(r["alone"][p]["ratio"] for r in rows) for p in NEW}
    payload = {"command": command_line(), "machine": info, "load_before_1_5_15": load_before,
               "backend_suite": backend, "backend_alone": backend_new,
               "supported_needs": sorted(getattr(__import__("zcfast.batched", fromlist=["x"]), "SUPPORTED_NEEDS", ())),
               "data": f"zcfast.data.paper_batch('cifar10', batch_size={args.batch}, seed={args.seed})",
               "archs": len(rows), "summary": summary, "rows": rows}
    md = [f"# NAS-Bench-Suite-Zero's 13 proxies: zcfast vs official-style in sequence (NB201, batch {args.batch})\n\n",
          f"Command: `{command_line()}`  \nMachine: {info['cpu']}, {info['logical_cpus']} logical CPUs, torch "
          f"{info['torch']} with {info['torch_threads']} thread(s); load average {load_before} before, "
          f"{info['loadavg_1_5_15']} after ({info['date_utc']} UTC).  \n"
          f"score_arch's route for the 13: `{backend}`; for each new proxy alone: "
          + ", ".join(f"{p} `{b}`" for p, b in backend_new.items())
          + " (part (b) times zcfast.score on a built network: the module backend).  \n"
          f"Values checked first: the 13 and zico within rtol {args.rtol:g} of the official-style values "
          f"(grasp: {5 * args.rtol:g} of max(|value|, 1)); worst: "
          + ", ".join(f"{p} {d:.1e}" for p, d in summary["max_rel_diff"].items()) + ".\n\n",
          "## (a) all 13 per architecture (score_arch: build + one call; official-style: build + 13 copies, "
          "each with its own passes)\n\n",
          markdown_table(["architecture", "official-style s", "zcfast s", "speed-up"],
                         [[r["arch"].replace("|", "\\|"), f"{r['official_s']:.2f}", f"{r['zcfast_s']:.2f}",
                           f"{r['speedup']:.2f}x"] for r in rows]),
          f"\nMedian speed-up {summary['speedup_median']:.2f}x (ratio of means {summary['speedup_of_means']:.2f}x); "
          f"target >= 3x.\n"]
    if not args.no_alone:
        md.append("\n## (b) each new proxy alone: zcfast.score(net, x, y, (p,)) / its bare passes (median over "
                  "architectures; target <= 1.2x)\n\n")
        md.append(markdown_table(["proxy", "bare passes (plain PyTorch)", "zcfast s", "bare s", "ratio"],
                                 [[p, BARE_DESC[p], f"{statistics.median(r['alone'][p]['zcfast_s'] for r in rows):.4f}",
                                   f"{statistics.median(r['alone'][p]['bare_s'] for r in rows):.4f}",
                                   f"{summary['alone_ratio_median'][p]:.2f}x"] for p in NEW]))
    if args.profile:
        prof = rows[0]["profile"]
        md.append(f"\n## Profile of one 13-proxy score_arch call ({rows[0]['arch']}), top by own time\n\n")
        md.append(markdown_table(["function", "calls", "own s", "cumulative s"],
                                 [[f"`{r['function']}`", r["calls"], f"{r['own_s']:.3f}", f"{r['cumulative_s']:.3f}"]
                                  for r in prof["by_own"][:12]]))
        md.append("\nTop by cumulative time:\n\n")
        md.append(markdown_table(["function", "calls", "own s", "cumulative s"],
                                 [[f"`{r['function']}`", r["calls"], f"{r['own_s']:.3f}", f"{r['cumulative_s']:.3f}"]
                                  for r in prof["by_cumulative"][:20]]))
    write_results("suite_zero", payload, "".join(md), out_dir=args.out)
    print("".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
