"""Issue #13 item 7: each modern proxy in zcfast against its official-style implementation
(bench/official_style.py; AZ-NAS's four from bench/bench_az_nas.py) on the same NB201
architectures (``random.Random(0)`` samples, built by ``build_seeded``) and the same batch.

Values are checked first (max relative difference per proxy over the architectures, in the
report), then each side is timed in-process, A then B per architecture (1 torch thread). The
JSON and markdown tables go to bench/results/modern_speed.{json,md}.

    .venv/bin/python bench/bench_modern_speed.py --proxies ntk_cond gradsign --archs 5 --batch 32

``--side zcfast|official`` only computes that side (no check, no files): for timing the two as
whole processes, pair by pair, with an external timer.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import official_style as o  # noqa: E402
from bench_az_nas import official_style_az  # noqa: E402

import zcfast  # noqa: E402
from zcfast.proxies.az_nas import AZ_NAS  # noqa: E402
from zcfast.scoring import build_seeded  # noqa: E402

PROXIES = ("gradsign", "ntk_cond", "linear_regions", "az_nas")


def official(proxy: str, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, float]:
    """The official-style value(s) of ``proxy`` ("az_nas": the four AZ measures)."""
    if proxy == "az_nas":
        return official_style_az(net, tuple(x.shape), seed)
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
    ap.add_argument("--proxies", nargs="+", default=list(PROXIES), choices=PROXIES)
    ap.add_argument("--archs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--side", choices=("zcfast", "official"), default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "modern_speed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    space = zcfast.spaces.get("nb201")
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(args.archs)]
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
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
        rows = sorted(kept + rows, key=lambda r: PROXIES.index(r["proxy"]) if r["proxy"] in PROXIES else len(PROXIES))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| proxy | archs | batch | official-style s/arch | zcfast s/arch | ratio | max rel diff |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['proxy']} | {r['archs']} | {r['batch']} | {r['official_s_per_arch']:.3f} | "
              f"{r['zcfast_s_per_arch']:.3f} | {r['ratio']:.2f}x | {r['max_rel_diff']:.1e} |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
