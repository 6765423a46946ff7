"""Peak memory of `zcfast.scan` against the number of scanned candidates (issue #7, item 4).

Each size runs in a fresh Python process (so peaks do not carry over) scanning into a fresh
store; this script samples the resident memory of that process and its pool workers every
0.1 s (psutil) and the child reports its own ``ru_maxrss`` and its RSS right before the scan
started (after imports, data and space set-up). Claim checked: peak memory at the largest
size is within 10% of the smallest.

Re-run (one command; writes bench/results/scan_memory.{json,md}):

    nice -n 10 python bench/bench_scan_memory.py                      # machinery, DARTS, 10k vs 100k
    nice -n 10 python bench/bench_scan_memory.py --space nb201 --scorer real --proxies synflow \\
        --sizes 500 4930 --backend local --tag nb201-synflow            # real scoring, all NB201 keys

``--scorer hash`` (default) uses ``zcfast.parallel.hash_scorer`` (instant, deterministic) so
the figure measures the scan machinery (stream, dedup, store, buffers, backend), whose memory
is what could grow with the candidate count; ``--scorer real`` uses ``zcfast.score_arch``.
NB201 has only 4,930 distinct keys, so 100,000 candidates need a larger space (DARTS).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def child(args: argparse.Namespace) -> None:
    """Run one scan and print a JSON line with its own memory figures."""
    sys.path.insert(0, str(ROOT))
    import psutil
    import torch

    from zcfast.parallel import hash_scorer
    from zcfast.scan import scan
    from zcfast.spaces import get

    space = get(args.space)
    if args.scorer == "hash":
        data = (torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
        scorer = hash_scorer
    else:
        from zcfast.data import paper_batch
        data = paper_batch("cifar10", args.batch_size, 42)
        scorer = None
    rss_before = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    res = scan(space, args.proxies, args.n, store=args.store, data=data, scorer=scorer,
               batch_scorer=None, backend=args.backend, workers=args.workers,
               order="enumerate" if args.order == "enumerate" else "sample", progress=False)
    wall = time.perf_counter() - t0
    print(json.dumps({
        "total": res.total, "scored": res.scored, "errors": res.errors, "wall_s": wall,
        "rss_before_scan_mb": rss_before / 2**20,
        "ru_maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "store_mb": os.path.getsize(args.store) / 2**20,
    }), flush=True)


def _tree_rss(pid: int) -> tuple[int, int]:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    total = 0
    own = 0
    for q in procs:
        try:
            rss = q.memory_info().rss
        except psutil.NoSuchProcess:
            continue
        total += rss
        if q.pid == pid:
            own = rss
    return total, own


def measure(args: argparse.Namespace, n: int, workdir: Path) -> dict:
    store = workdir / f"scan-{n}.sqlite"
    cmd = [sys.executable, __file__, "--child", "--n", str(n), "--store", str(store),
           "--space", args.space, "--scorer", args.scorer, "--proxies", args.proxies,
           "--backend", args.backend, "--workers", str(args.workers), "--order", args.order,
           "--batch-size", str(args.batch_size)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak_tree = peak_main = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_tree, peak_main
        while not stop.is_set():
            tree, own = _tree_rss(proc.pid)
            peak_tree, peak_main = max(peak_tree, tree), max(peak_main, own)
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"child for n={n} failed with {proc.returncode}")
    res = json.loads(out.strip().splitlines()[-1])
    res.update(n=n, peak_tree_rss_mb=peak_tree / 2**20, peak_main_rss_sampled_mb=peak_main / 2**20)
    res["growth_mb"] = res["ru_maxrss_self_mb"] - res["rss_before_scan_mb"]
    print(f"n={n:>7}: scored {res['scored']} in {res['wall_s']:.1f} s; main ru_maxrss "
          f"{res['ru_maxrss_self_mb']:.1f} MB (before scan {res['rss_before_scan_mb']:.1f} MB, growth "
          f"{res['growth_mb']:.1f} MB); peak tree RSS {res['peak_tree_rss_mb']:.1f} MB; store "
          f"{res['store_mb']:.1f} MB", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--space", default="darts")
    ap.add_argument("--scorer", choices=("hash", "real"), default="hash")
    ap.add_argument("--proxies", default="synflow")
    ap.add_argument("--backend", choices=("serial", "local"), default="serial")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--order", choices=("sample", "enumerate"), default="sample")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tag", default="scan_memory", help="result file stem under bench/results/")
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            rows.append(measure(args, n, Path(tmp)))
    load_after = os.getloadavg()
    lo, hi = rows[0], rows[-1]
    ratio_main = hi["ru_maxrss_self_mb"] / lo["ru_maxrss_self_mb"]
    ratio_tree = hi["peak_tree_rss_mb"] / lo["peak_tree_rss_mb"]
    flat = ratio_main <= 1.10 and ratio_tree <= 1.10
    summary = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
        "space": args.space, "scorer": args.scorer, "proxies": args.proxies,
        "backend": args.backend, "workers": args.workers if args.backend == "local" else 1,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
        "load_before": load, "load_after": load_after, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": rows, "ratio_main_ru_maxrss": ratio_main, "ratio_tree_peak_rss": ratio_tree,
        "flat_within_10pct": flat,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# Scan peak memory: {args.space}, {args.scorer} scorer ({args.proxies}), "
             f"{args.backend} backend", "",
             f"Command: `{summary['command']}`  ",
             f"Machine: {summary['machine']}; load average before {load[0]:.2f}, after "
             f"{load_after[0]:.2f}; {summary['date']}", "",
             "| candidates | scored | wall s | main RSS before scan MB | main peak (ru_maxrss) MB "
             "| growth MB | peak RSS main+workers MB | store MB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['scored']:,} | {r['wall_s']:.1f} | {r['rss_before_scan_mb']:.1f} "
                     f"| {r['ru_maxrss_self_mb']:.1f} | {r['growth_mb']:.1f} | {r['peak_tree_rss_mb']:.1f} "
                     f"| {r['store_mb']:.1f} |")
    lines += ["", f"Peak ratio largest/smallest: main {ratio_main:.3f}, main+workers {ratio_tree:.3f} "
                  f"-> {'flat within 10%' if flat else 'NOT flat within 10%'}.", ""]
    (RESULTS / f"{args.tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
