"""Architectures per second: batched NB201 scoring vs one architecture at a time.

One run measures, on NB201 with one batch of 64 (the paper's NB201 setting), for three proxy
sets -- synflow alone; the gradient proxies grad_norm, snip, fisher, jacob_cov; all six
(those + grasp + synflow) --

* ``batched``: ``zcfast.batched.score_batch`` with K candidates per pass (each K in --k);
* ``plain``: one architecture at a time, plain PyTorch (bench/plain_baseline.py);
* ``score_arch``: one architecture at a time through zcfast's own engine.

Before timing, every method's scores are compared with score_arch on the first architectures
(rtol --check-rtol); a mismatch aborts. Every method scores the same architectures, sampled
with a fixed seed, and pays for building its networks (seeded init) inside the timing.

Usage (one command, re-runnable)::

    python bench/bench_throughput.py                      # CPU, the committed figures
    python bench/bench_throughput.py --device cuda --k 16,32,64 --n-grad 512 ...

Writes bench/results/throughput.<device>.json (+ a Markdown table on stdout and in
throughput.<device>.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

import zcfast  # noqa: E402
from zcfast.batched import score_batch  # noqa: E402
from zcfast.scoring import score_arch  # noqa: E402
from plain_baseline import plain_score_arch  # noqa: E402

SETS = {
    "synflow": ("synflow",),
    "grad": ("grad_norm", "snip", "fisher", "jacob_cov"),
    "all6": ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow"),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _close(a: float, b: float, rtol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-30)


def _batch(device: torch.device, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from zcfast.data import paper_batch
        x, y = paper_batch("cifar10", batch_size=batch, seed=42)
    except Exception as exc:  # the shipped sample may be smaller than the batch
        print(f"# paper_batch unavailable ({exc}); using a seeded random batch", file=sys.stderr)
        g = torch.Generator().manual_seed(42)
        x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
    return x.to(device), y.to(device)


def _time(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` (wall seconds, process CPU seconds) of fn(), synchronised.

    The CPU seconds tell how the figure would move on a quiet machine: on a shared, loaded
    box the wall time grows with contention while the process's own CPU time barely does.
    """
    best = (math.inf, math.inf)
    for _ in range(repeats):
        _sync(device)
        t, c = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        cur = (time.perf_counter() - t, time.process_time() - c)
        best = min(best, cur)
    return best


def _timed(row: dict, key: str, n: int, fn: Callable[[], object], device: torch.device, repeats: int,
           name: str) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    wall, cpu = _time(fn, device, repeats)
    row[key] = n / wall
    row[key + "_cpu_time"] = n / cpu if cpu > 0 else float("nan")
    if device.type == "cuda":
        row[key + "_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    _progress(name, key, row[key], row[key + "_cpu_time"])


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        # every method in strict float32 (score_batch enforces it; PyTorch's default lets cuDNN
        # convolutions use TF32, which would move score_arch/plain by ~1e-3 and time a different
        # computation)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    space = zcfast.spaces.get("nb201")
    x, y = _batch(device, args.batch)
    ks = [int(k) for k in args.k.split(",")]
    sets = args.sets.split(",")
    rng = random.Random(args.arch_seed)
    pool = [space.sample(rng) for _ in range(max(args.n_synflow, args.n_grad, args.n_all, args.n_single))]
    load = os.getloadavg()
    threads = torch.get_num_threads()
    out: dict = {
        "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "threads": threads, "batch": args.batch, "loadavg_start": load,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "command": " ".join([sys.executable] + sys.argv), "results": {},
    }
    for name in sets:
        proxies = SETS[name]
        n_batched = {"synflow": args.n_synflow, "grad": args.n_grad, "all6": args.n_all}[name]
        archs = pool[:n_batched]
        single = pool[:min(args.n_single, n_batched)]
        # -- correctness first: every method against score_arch on the first architectures
        check = pool[:args.n_check]
        ref = [score_arch(space, a, x, y, proxies, device=device) for a in check]
        for k in ks:
            got = score_batch(space, check, x, y, proxies, device=device, k=k)
            _compare(ref, got, proxies, args.check_rtol, f"batched k={k}")
        _compare(ref, [plain_score_arch(space, a, x, y, proxies) for a in check], proxies,
                 args.check_rtol, "plain")
        row: dict = {"proxies": proxies, "archs_batched": len(archs), "archs_single": len(single)}
        for k in ks:
            _timed(row, f"batched_k{k}", len(archs),
                   lambda: score_batch(space, archs, x, y, proxies, device=device, k=k), device, args.repeats, name)
        if not args.skip_single:
            _timed(row, "plain", len(single), lambda: [plain_score_arch(space, a, x, y, proxies) for a in single],
                   device, args.repeats, name)
            _timed(row, "score_arch", len(single),
                   lambda: [score_arch(space, a, x, y, proxies, device=device) for a in single],
                   device, args.repeats, name)
        best_k = max(ks, key=lambda k: row[f"batched_k{k}"])
        row["best_k"] = best_k
        row["batched_best"] = row[f"batched_k{best_k}"]
        if "plain" in row:
            row["speedup_vs_plain"] = row["batched_best"] / row["plain"]
            row["speedup_vs_score_arch"] = row["batched_best"] / row["score_arch"]
            row["speedup_vs_plain_cpu_time"] = row[f"batched_k{best_k}_cpu_time"] / row["plain_cpu_time"]
        out["results"][name] = row
    out["loadavg_end"] = os.getloadavg()
    return out


def _progress(name: str, method: str, rate: float, cpu_rate: float) -> None:
    print(f"# {name:8s} {method:14s} {rate:8.2f} archs/s wall, {cpu_rate:8.2f} per CPU-second  "
          f"(load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)


def _compare(ref: Sequence[dict], got: Sequence[dict], proxies: Sequence[str], rtol: float, what: str) -> None:
    for i, (r, g) in enumerate(zip(ref, got)):
        for p in proxies:
            tol = 10 * rtol if p in ("jacob_cov", "grasp") else rtol
            if not _close(r[p], g[p], tol):
                raise SystemExit(f"{what}: arch #{i} {p} = {g[p]!r} but score_arch gives {r[p]!r} "
                                 f"(rtol {tol}); not timing a wrong result")


def table(res: dict) -> str:
    ks = sorted({int(k[len("batched_k"):].split("_")[0]) for r in res["results"].values() for k in r
                 if k.startswith("batched_k")})
    head = ["proxies"] + [f"batched K={k}" for k in ks] + ["plain (1 at a time)", "score_arch (1 at a time)",
                                                            "best batched / plain"]

    def cell(r: dict, key: str) -> str:
        if key not in r:
            return "-"
        txt = f"{r[key]:.2f} ({r[key + '_cpu_time']:.2f})"
        if key + "_peak_mib" in r:
            txt += f" [{r[key + '_peak_mib']:.0f} MiB]"
        return txt

    lines = [f"NB201, batch {res['batch']}, device {res['device']}"
             + (f" ({res['gpu']})" if res.get("gpu") else f" ({res['cores']} cores, {res['threads']} threads)")
             + f", torch {res['torch']}; load average at start {res['loadavg_start'][0]:.2f}, "
             f"at end {res['loadavg_end'][0]:.2f}.",
             "Architectures per second, wall clock (in parentheses: per CPU-second of this process"
             + ("; in brackets: CUDA peak memory" if res.get("gpu") else "") + "). "
             "Every method builds its networks (seeded init) inside the timing.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in res["results"].items():
        cells = [f"{name}: {','.join(r['proxies'])}"]
        cells += [cell(r, f"batched_k{k}") for k in ks]
        cells += [cell(r, "plain"), cell(r, "score_arch"),
                  f"{r['speedup_vs_plain']:.2f}x (K={r['best_k']})" if "speedup_vs_plain" in r else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{res['command']}`"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--k", default="1,4,8", help="comma-separated K values for the batched path")
    p.add_argument("--sets", default="synflow,grad,all6", help=f"comma-separated from {list(SETS)}")
    p.add_argument("--n-synflow", type=int, default=64, help="architectures timed for synflow")
    p.add_argument("--n-grad", type=int, default=16, help="architectures timed for the gradient proxies")
    p.add_argument("--n-all", type=int, default=8, help="architectures timed for all six")
    p.add_argument("--n-single", type=int, default=8, help="architectures timed one at a time (each set)")
    p.add_argument("--n-check", type=int, default=3, help="architectures checked against score_arch first")
    p.add_argument("--check-rtol", type=float, default=1e-3)
    p.add_argument("--repeats", type=int, default=1, help="timing repeats (best of)")
    p.add_argument("--arch-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--skip-single", action="store_true", help="time the batched path only")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/throughput.<device>.json)")
    args = p.parse_args(argv)
    bad = [s for s in args.sets.split(",") if s not in SETS]
    if bad:
        p.error(f"unknown sets {bad}; known {list(SETS)}")
    res = run(args)
    text = table(res)
    print(text)
    dev = torch.device(args.device).type
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"throughput.{dev}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(text + "\n")
    print(f"# wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
