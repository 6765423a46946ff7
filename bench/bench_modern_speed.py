"""Issue #13 item 7: each modern proxy in zcfast against its official-style implementation
(bench/official_style.py; AZ-NAS's four from bench/bench_az_nas.py) on the same NB201
architectures (``random.Random(0)`` samples, built by ``build_seeded``) and the same batch.

Values are checked first (max relative difference per proxy over the architectures, in the
report), then each side is timed in-process, A then B per architecture (1 torch thread). The
JSON and markdown tables go to bench/results/modern_speed.{json,md}.

    .venv/bin/python bench/bench_modern_speed.py --proxies ntk_cond gradsign --archs 5 --batch 32

``--side zcfast|official`` only computes that side (no check, no files): for timing the two as
whole processes, pair by pair, with an external timer.

``--alone`` times, instead, each proxy alone through ``zcfast.score(net, x, y, [p])`` (the module
backend on the built network, as bench/bench_suite_zero.py's part (b)) against the **bare passes**
it needs in plain PyTorch (:func:`bare_passes`: a deep copy and the passes, no checks, no
reduction beyond what the passes return, no NaN reasons): issue #13 item 7's "each alone
<= 1.2x its bare passes". zcfast's value is checked against the official-style value first.
Tables: bench/results/modern_alone.{json,md}.

    .venv/bin/python bench/bench_modern_speed.py --alone --archs 3 --batch 32
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import official_style as o  # noqa: E402
from bench_az_nas import official_style_az  # noqa: E402

import zcfast  # noqa: E402
from zcfast.proxies.az_nas import AZ_NAS  # noqa: E402
from zcfast.scoring import build_seeded  # noqa: E402

PROXIES = ("gradsign", "ntk_cond", "linear_regions", "az_nas")
#: also against official-style code, only when asked for (its official side takes ~1 min per architecture)
EXTRA = ("swap",)
#: the proxies of ``--alone`` (az_nas: its four measures in one call, against one bare pass)
ALONE = ("meco", "meco_opt", "swap", "gradsign", "ntk_cond", "linear_regions", "az_nas")
#: what each bare baseline of ``--alone`` contains (printed with the table)
BARE_DESC = {
    "meco": "deep copy + 1 no-grad train-mode forward of x[:1], every module's output[0] kept",
    "meco_opt": "the same as meco (its sampled rows are a reduction)",
    "swap": "deep copy + 32 x (N(0,1) re-init of Conv/Linear + 1 no-grad forward keeping every nn.ReLU output)",
    "gradsign": "deep copy + per sample: 1 forward of x[[i]] (BatchNorm over one image) + autograd.grad of its CE "
                "to the Conv/Linear weights",
    "ntk_cond": "deep copy + 1 train-mode forward + N autograd.grad calls (one logits row each) to the 'weight' "
                "parameters",
    "linear_regions": "deep copy + 1 no-grad train-mode forward of N(0,1) inputs keeping every nn.ReLU output",
    "az_nas": "deep copy + AZ init + 1 forward of N(0,1) inputs to the last cell + one autograd.grad per cell "
              "(Rademacher cotangent by rademacher_like, as zcfast) + 1 no-grad eval forward of one sample (FLOPs)",
}


def bare_passes(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """The bare passes of each ``--alone`` proxy in plain PyTorch (:data:`BARE_DESC`), on a
    private copy of ``net`` (x: [N, 3, H, W] float32, y: [N] int64)."""
    import copy

    import torch.nn as nn
    import torch.nn.functional as F

    def relu_forward(c: nn.Module, inp: torch.Tensor) -> list[torch.Tensor]:
        acts: list[torch.Tensor] = []
        hs = [m.register_forward_hook(lambda m, a, o: acts.append(o)) for m in c.modules() if isinstance(m, nn.ReLU)]
        with torch.no_grad():
            c(inp)
        for h in hs:
            h.remove()
        return acts

    def meco() -> list[torch.Tensor]:
        c = copy.deepcopy(net).train()
        outs: list[torch.Tensor] = []
        hs = [m.register_forward_hook(lambda m, a, o: outs.append(o[0])) for m in c.modules()]
        with torch.no_grad():
            c(x[:1])
        for h in hs:
            h.remove()
        return outs

    def swap() -> list[torch.Tensor]:
        c = copy.deepcopy(net).train()
        g = torch.Generator().manual_seed(0)
        acts: list[torch.Tensor] = []
        for _ in range(32):
            with torch.no_grad():
                for m in c.modules():
                    if isinstance(m, (nn.Conv2d, nn.Linear)):
                        m.weight.normal_(generator=g)
            acts = relu_forward(c, x)
        return acts

    def gradsign() -> list:
        c = copy.deepcopy(net).train()
        ws = [m.weight for m in c.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        return [torch.autograd.grad(F.cross_entropy(c(x[[i]]), y[[i]]), ws, allow_unused=True)
                for i in range(x.shape[0])]

    def ntk() -> list:
        c = copy.deepcopy(net).train()
        ws = [p for n, p in c.named_parameters() if "weight" in n]
        out = c(x)
        rows = []
        for i in range(x.shape[0]):
            v = torch.zeros_like(out)
            v[i] = 1
            rows.append(torch.autograd.grad(out, ws, v, retain_graph=i + 1 < x.shape[0], allow_unused=True))
        return rows

    def linear_regions() -> list[torch.Tensor]:
        c = copy.deepcopy(net).train()
        return relu_forward(c, torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))

    def az() -> list:
        from zcfast.proxies.az_nas import az_init, rademacher_like
        from zcfast.proxies.cells import record_cells

        c = copy.deepcopy(net).train()
        g = torch.Generator().manual_seed(0)
        az_init(c, g)
        z = torch.randn(x.shape, generator=g).requires_grad_(True)
        feats = record_cells(c, z)
        gs = []
        for i in reversed(range(1, len(feats))):
            f_out, f_in = feats[i][1], feats[i - 1][1]
            cot = rademacher_like(f_out.detach(), g)   # bernoulli(0.5)'s numbers, as cheap as zcfast draws them
            gs.append(torch.autograd.grad(f_out, f_in, cot, retain_graph=True, allow_unused=True))
        e = copy.deepcopy(net).eval()
        with torch.no_grad():
            e(x[:1])
        return gs

    return {"meco": meco, "meco_opt": meco, "swap": swap, "gradsign": gradsign, "ntk_cond": ntk,
            "linear_regions": linear_regions, "az_nas": az}


def _paired_medians(a: Callable[[], Any], b: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b`` over ``repeats`` interleaved pairs (a, b, a, b, ...),
    so that a change of the machine's load falls on both sides alike."""
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        ta.append(t1 - t0)
        tb.append(time.perf_counter() - t1)
    return statistics.median(ta), statistics.median(tb)


def alone(args: argparse.Namespace, space, archs, x: torch.Tensor, y: torch.Tensor) -> None:
    """``--alone``: each proxy alone in zcfast.score against its bare passes (values checked first).

    ``--proxies`` picks some of them; their rows replace the same proxies' rows of an existing
    ``modern_alone.json`` (each row keeps the command that measured it)."""
    names = {p: (list(AZ_NAS) if p == "az_nas" else [p]) for p in ALONE}
    command = " ".join(["python", "bench/bench_modern_speed.py", *sys.argv[1:]])
    rows = []
    for p in args.proxies:
        ratios, ts, tb, worst = [], [], [], 0.0
        for arch in archs:
            net = build_seeded(space, arch, args.seed, 10)
            got = zcfast.score(net, x, y, names[p], seed=args.seed)
            if p == "meco":
                want = {p: o.meco_official(net, x, y)}
            elif p == "meco_opt":   # its 8 sampled channels from random.Random(seed), as zcfast draws them
                want = {p: o.meco_official(net, x, y, opt=True, seed=args.seed)}
            else:
                want = official(p, net, x, y, args.seed)
            for k, b in want.items():
                worst = max(worst, rel(float(got[k]), float(b)))
            bare = bare_passes(net, x, y)[p]
            t_z, t_b = _paired_medians(lambda: zcfast.score(net, x, y, names[p], seed=args.seed), bare,
                                       args.repeats)
            ts.append(t_z)
            tb.append(t_b)
            ratios.append(t_z / t_b)
        if worst > args.rtol:
            print(f"VALUE MISMATCH: {p} differs from its official-style value by {worst:.2e} (> {args.rtol})",
                  file=sys.stderr)
            raise SystemExit(1)
        rows.append({"proxy": p, "command": command, "archs": len(archs), "batch": args.batch, "bare": BARE_DESC[p],
                     "zcfast_s": statistics.median(ts), "bare_s": statistics.median(tb),
                     "ratio_median": statistics.median(ratios), "ratios": ratios, "max_rel_diff": worst})
        r = rows[-1]
        print(f"{p}: zcfast {r['zcfast_s']:.3f} s, bare {r['bare_s']:.3f} s, {r['ratio_median']:.2f}x "
              f"(per arch {', '.join(f'{v:.2f}' for v in ratios)}), max rel diff {worst:.1e}", flush=True)
    out = args.out.with_name("modern_alone")
    old = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else []
    mine = {r["proxy"]: r for r in rows}
    kept = {r["proxy"]: r for r in old if r.get("proxy") in ALONE and r["proxy"] not in mine}
    rows = [mine.get(p) or kept[p] for p in ALONE if p in mine or p in kept]
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["Each row: the command that measured it (time: the median of interleaved zcfast/bare pairs "
             "per architecture, then the median over architectures).", "",
             "| proxy | bare passes (plain PyTorch) | zcfast s | bare s | ratio (median over archs) | per arch | "
             "max rel diff vs official-style | command |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['proxy']} | {r['bare']} | {r['zcfast_s']:.3f} | {r['bare_s']:.3f} | {r['ratio_median']:.2f}x | "
              f"{', '.join(f'{v:.2f}' for v in r['ratios'])} | {r['max_rel_diff']:.1e} | "
              f"`{r.get('command', 'python bench/bench_modern_speed.py --alone --archs 3 --batch 32')}` |"
              for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def official(proxy: str, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, float]:
    """The official-style value(s) of ``proxy`` ("az_nas": the four AZ measures)."""
    if proxy == "az_nas":
        return official_style_az(net, tuple(x.shape), seed)
    if proxy == "swap":      # the official init after torch.manual_seed(seed), as zcfast seeds it
        return {proxy: o.swap_official(net, x, y, seed=seed)}
    return {proxy: o.MODERN_FUNCS[proxy](net, x, y)}


def ours(proxy: str, space, arch, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, float]:
    """zcfast's value(s) of ``proxy``: one ``score_arch`` call (its own route)."""
    names = list(AZ_NAS) if proxy == "az_nas" else [proxy]
    return dict(zcfast.score_arch(space, arch, x, y, proxies=names, seed=seed))


def rel(a: float, b: float) -> float:
    if a == b or (math.isinf(a) and math.isinf(b) and a == b):
        return 0.0
    return abs(a - b) / max(abs(b), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxies", nargs="+", default=None, choices=sorted(set(PROXIES) | set(EXTRA) | set(ALONE)),
                    help=f"default: {' '.join(PROXIES)}, also {' '.join(EXTRA)} (with --alone: {' '.join(ALONE)})")
    ap.add_argument("--archs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--side", choices=("zcfast", "official"), default=None)
    ap.add_argument("--alone", action="store_true",
                    help="each proxy alone in zcfast.score against its bare passes (bench/results/modern_alone.*)")
    ap.add_argument("--repeats", type=int, default=1, help="--alone: timed calls per side and arch (median)")
    ap.add_argument("--rtol", type=float, default=2e-3, help="--alone: value check tolerance (default 2e-3)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "modern_speed")
    args = ap.parse_args()
    if args.proxies is None:
        args.proxies = list(ALONE if args.alone else PROXIES)
    elif not args.alone and not set(args.proxies) <= set(PROXIES) | set(EXTRA):
        ap.error(f"--proxies: without --alone, choose from {', '.join(PROXIES + EXTRA)}")
    torch.set_num_threads(1)
    space = zcfast.spaces.get("nb201")
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(args.archs)]
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    if args.alone:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        alone(args, space, archs, x, y)
        return
    if args.side is not None:
        for proxy in args.proxies:
            for arch in archs:
                if args.side == "zcfast":
                    ours(proxy, space, arch, x, y, args.seed)
                else:
                    official(proxy, build_seeded(space, arch, args.seed, 10), x, y, args.seed)
        return
    rows = []
    for proxy in args.proxies:
        ta = tb = 0.0
        worst = 0.0
        # one untimed call of each side first (lazy imports, first-call set-up on both sides)
        ours(proxy, space, archs[0], x, y, args.seed)
        official(proxy, build_seeded(space, archs[0], args.seed, 10), x, y, args.seed)
        for arch in archs:
            t0 = time.perf_counter()
            got = ours(proxy, space, arch, x, y, args.seed)
            ta += time.perf_counter() - t0
            t0 = time.perf_counter()
            want = official(proxy, build_seeded(space, arch, args.seed, 10), x, y, args.seed)
            tb += time.perf_counter() - t0
            for k, b in want.items():
                worst = max(worst, rel(float(got[k]), float(b)))
        rows.append({"proxy": proxy, "archs": len(archs), "batch": args.batch,
                     "official_s_per_arch": tb / len(archs), "zcfast_s_per_arch": ta / len(archs),
                     "ratio": tb / ta, "max_rel_diff": worst})
        r = rows[-1]
        print(f"{proxy}: official {r['official_s_per_arch']:.3f} s/arch, zcfast {r['zcfast_s_per_arch']:.3f} s/arch, "
              f"{r['ratio']:.2f}x, max rel diff {worst:.2e}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # rows of proxies not run this time are kept (a run of some proxies updates only theirs)
    old = args.out.with_suffix(".json")
    if old.exists():
        ran = {r["proxy"] for r in rows}
        kept = [r for r in json.loads(old.read_text()) if r["proxy"] not in ran]
        order = PROXIES + EXTRA
        rows = sorted(kept + rows, key=lambda r: order.index(r["proxy"]) if r["proxy"] in order else len(order))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| proxy | archs | batch | official-style s/arch | zcfast s/arch | ratio | max rel diff |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['proxy']} | {r['archs']} | {r['batch']} | {r['official_s_per_arch']:.3f} | "
              f"{r['zcfast_s_per_arch']:.3f} | {r['ratio']:.2f}x | {r['max_rel_diff']:.1e} |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
