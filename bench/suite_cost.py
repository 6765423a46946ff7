"""What every built-in proxy costs per NB201 architecture: each alone, and all in one call.

For ``--archs`` architectures sampled from NAS-Bench-201 (``random.Random(--seed)``) and the
paper's CIFAR-10 batch of ``--batch`` images, this times ``zcfast.score_arch(space, arch, x, y,
[p])`` for every proxy ``p`` of the ``all`` set, one call each per architecture (build included,
as a scan pays it), and then one call with all of them. Values are checked first, in the same
run: the all-in-one call must give each proxy's value alone (NaN where alone is NaN), within
``--rtol`` (the two calls can take different backends, whose float32 rounding differs by ~1e-3
for zico and epe_nas). The baseline is the sum of the proxies alone: what computing each one with
its own passes costs, against the shared passes of one call.

Writes ``bench/results/<--out>.json`` and ``.md`` (median seconds per architecture per proxy).
Run it with one thread (``OMP_NUM_THREADS=1``) on a quiet machine: timings move with the load.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zcfast  # noqa: E402
from common import RESULTS_DIR, command_line, machine_info, markdown_table, write_results  # noqa: E402
from zcfast.data import paper_batch  # noqa: E402
from zcfast.options import PROXY_SETS, proxy_set  # noqa: E402


def _close(a: float, b: float, rtol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=3, help="NB201 architectures (default 3)")
    ap.add_argument("--seed", type=int, default=3, help="sample seed (default 3)")
    ap.add_argument("--batch", type=int, default=32, help="images per batch (default 32)")
    ap.add_argument("--proxies", default="all", help="comma-separated names, or a proxy set (default all)")
    ap.add_argument("--rtol", type=float, default=2e-2, help="all-in-one vs alone (default 2e-2)")
    ap.add_argument("--out", default="suite_cost", help="result name (default suite_cost)")
    ap.add_argument("--out-dir", default=RESULTS_DIR, help="folder of the result files (default bench/results)")
    args = ap.parse_args(argv)
    if args.archs < 1 or args.batch < 2:
        ap.error("--archs must be >= 1 and --batch >= 2")
    names = (list(proxy_set(args.proxies)) if args.proxies in PROXY_SETS
             else [p.strip() for p in args.proxies.split(",") if p.strip()])
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        return _run(args, names)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, names: list[str]) -> int:
    space = zcfast.spaces.get("nb201")
    rng = random.Random(args.seed)
    archs = [space.sample(rng) for _ in range(args.archs)]
    x, y = paper_batch("cifar10", args.batch)
    zcfast.score_arch(space, archs[0], x, y, ["grad_norm"])  # warm-up: imports, first build

    alone: dict[str, list[float]] = {p: [] for p in names}
    together: list[float] = []
    worst: dict[str, float] = {p: 0.0 for p in names}
    bad: list[str] = []
    for i, arch in enumerate(archs):
        values: dict[str, float] = {}
        for p in names:
            t0 = time.perf_counter()
            values[p] = float(zcfast.score_arch(space, arch, x, y, [p])[p])
            alone[p].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        both = zcfast.score_arch(space, arch, x, y, names)
        together.append(time.perf_counter() - t0)
        for p in names:
            a, b = float(both[p]), values[p]
            if not _close(a, b, args.rtol):
                bad.append(f"arch {i} {p}: all-in-one {a!r} vs alone {b!r}")
            elif math.isfinite(a) and math.isfinite(b):
                worst[p] = max(worst[p], abs(a - b) / max(abs(a), abs(b), 1e-12))
        print(f"arch {i + 1}/{len(archs)}: all in one {together[-1]:.2f} s, alone summed "
              f"{sum(alone[p][-1] for p in names):.2f} s", flush=True)
    if bad:
        print("values differ:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1

    med = {p: statistics.median(alone[p]) for p in names}
    total_alone = statistics.median([sum(alone[p][i] for p in names) for i in range(len(archs))])
    total_one = statistics.median(together)
    rows = [[p, f"{med[p]:.3f}", f"{min(alone[p]):.3f}–{max(alone[p]):.3f}", f"{worst[p]:.1e}"] for p in names]
    rows.append(["**all in one call**", f"**{total_one:.3f}**", f"{min(together):.3f}–{max(together):.3f}", ""])
    rows.append(["each alone, summed (baseline)", f"{total_alone:.3f}", "", ""])
    info = machine_info()
    md = (f"# Cost of every proxy per NB201 architecture (generated by bench/suite_cost.py)\n\n"
          f"`{command_line()}`; {len(archs)} architectures (`random.Random({args.seed})`), the paper's CIFAR-10 "
          f"batch of {args.batch}, `score_arch` (build included), torch threads {info['torch_threads']}, load "
          f"{info['loadavg_1_5_15']} at the end, {info['date_utc']} UTC, {info['cpu']}.\n\n"
          f"Values checked in the same run (a difference fails it before anything is written): the all-in-one "
          f"call gives each proxy's value alone within {args.rtol:g} relative (largest difference in the last "
          f"column).\n\n"
          + markdown_table(["proxy", "s / arch (median)", "range", "all-in-one vs alone"], rows)
          + f"\nAll in one call: {total_one:.2f} s per architecture against {total_alone:.2f} s for each "
          f"alone summed ({total_alone / total_one:.2f}x).\n")
    payload = {"command": command_line(), "machine": info, "archs": [str(a) for a in archs], "batch": args.batch,
               "proxies": names, "alone_s": alone, "together_s": together, "max_rel_diff": worst,
               "median_alone_s": med, "median_together_s": total_one, "median_alone_summed_s": total_alone}
    js, mdp = write_results(args.out, payload, md, args.out_dir)
    print(md)
    print(f"wrote {js} and {mdp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
