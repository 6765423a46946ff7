"""Time the search-space operations that searches and scans call thousands of times.

Re-run with one command (from the repository root)::

    python bench/bench_spaces.py            # writes bench/results/spaces.{json,md}

Per space: build one network (default benchmark configuration, default PyTorch init, CPU),
and the cheap operations (sample, encode, decode, key, neighbours, mutate). Each timing is
the median over distinct seeded architectures, after a warm-up. The machine's load average
and torch thread count are recorded with the numbers, since shared machines distort them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import zcfast.spaces as spaces  # noqa: E402
from zcfast.spaces import nb201  # noqa: E402


def _median_ms(fn: Callable[[Any], Any], items: list[Any], warmup: int = 3) -> tuple[float, float, float]:
    """(median wall, 90th-percentile wall, median process CPU) time in ms of fn(item) over items.

    Process CPU time is less distorted than wall time when other jobs share the cores.
    """
    for it in items[:warmup]:
        fn(it)
    times, cpu = [], []
    for it in items:
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn(it)
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))], statistics.median(cpu)


def _nb101_records() -> list[Any]:
    path = Path(__file__).resolve().parents[1] / "tests" / "assets" / "nb101_records_30.json"
    sp = spaces.get("nb101")
    return [sp.spec(r["module_adjacency"], r["module_operations"]) for r in json.loads(path.read_text())]


def run(n: int, seed: int) -> dict[str, Any]:
    results: dict[str, Any] = {
        "load_avg_before": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "n": n,
        "seed": seed,
        "spaces": {},
    }
    t0 = time.perf_counter()
    nb201.table()
    results["nb201_table_load_ms"] = (time.perf_counter() - t0) * 1e3
    for name in ("nb201", "nb101", "darts"):
        sp = spaces.get(name)
        rng = random.Random(seed)
        archs = [sp.sample(rng) for _ in range(n)]
        if name == "nb101":
            archs = (_nb101_records() + archs)[:n]
        texts = [sp.encode(a) for a in archs]
        row: dict[str, Any] = {}
        with torch.no_grad():
            row["build_ms"] = _median_ms(lambda a: sp.build(a), archs)
        row["params_median"] = statistics.median(sum(p.numel() for p in sp.build(a).parameters()) for a in archs[:5])
        row["sample_ms"] = _median_ms(lambda r: sp.sample(r), [random.Random(i) for i in range(n)])
        row["encode_ms"] = _median_ms(sp.encode, archs)
        row["decode_ms"] = _median_ms(sp.decode, texts)
        row["key_ms"] = _median_ms(sp.key, archs)
        row["neighbours_ms"] = _median_ms(sp.neighbours, archs)
        row["mutate_ms"] = _median_ms(lambda a: sp.mutate(a, random.Random(0)), archs)
        results["spaces"][name] = row
    results["load_avg_after"] = os.getloadavg()
    return results


def to_markdown(res: dict[str, Any]) -> str:
    la0, la1 = res["load_avg_before"], res["load_avg_after"]
    lines = [
        "# Search-space timings (bench/bench_spaces.py)",
        "",
        f"CPU, torch {res['torch']}, {res['torch_threads']} torch threads, {res['cpu_count']} cores; "
        f"load average {la0[0]:.2f}/{la0[1]:.2f}/{la0[2]:.2f} before, {la1[0]:.2f}/{la1[1]:.2f}/{la1[2]:.2f} after; "
        f"{res['n']} seeded architectures per space (seed {res['seed']}); NB201 table load "
        f"{res['nb201_table_load_ms']:.0f} ms (first use).",
        "",
        "| space | build wall (median / p90 ms) | build CPU (median ms) | params (median of 5) | sample | encode | decode | key | neighbours | mutate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["spaces"].items():
        cells = [f"{r['build_ms'][0]:.2f} / {r['build_ms'][1]:.2f}", f"{r['build_ms'][2]:.2f}",
                 f"{r['params_median']:,.0f}"]
        cells += [f"{r[k][0] * 1e3:.0f} µs" for k in ("sample_ms", "encode_ms", "decode_ms", "key_ms", "neighbours_ms", "mutate_ms")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Operation columns are median wall time per call. Build = construct the default benchmark "
              "network with default PyTorch init on CPU. Target: NB201 build ≤ 10 ms on a 2-core CPU.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="architectures per space")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    res = run(args.n, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "spaces.json").write_text(json.dumps(res, indent=2))
    md = to_markdown(res)
    (args.out / "spaces.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
