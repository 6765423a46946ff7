"""``zcfast search``: NAS search with zero-cost warmup and move proposal (issue #6).

Example::

    zcfast search --space nb201 --dataset cifar10 --algo evolution --warmup synflow \\
        --warmup-pool 3000 --move synflow --budget 100 --seeds 30 --out runs/ae

writes ``OUT/seed_<k>.json`` (every trained architecture in order, with its accuracy, source
and proxy score), ``OUT/summary.json`` and the best-so-far curve ``OUT/best_so_far.png`` /
``.csv`` (mean over seeds with a 95 % interval; ``zcfast report OUT1 OUT2 ...`` draws several
runs, one line each), and prints a summary. Deterministic per seed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from zcfast.commands import check_out_dir, count_type, load_callable

HELP = "NAS search (random, evolution, reinforce, brp) with zero-cost warmup / move proposal"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", default="nb201",
                        help="search space: nb201, nb101 (with --benchmark), toy (synthetic, for "
                             "demos); darts with a --trainer or NAS-Bench-301 (--benchmark MODELS_DIR)")
    parser.add_argument("--benchmark", default=None, metavar="PATH",
                        help="the benchmark file of the training oracle: NB101 nasbench_only108.tfrecord "
                             "/ nasbench_full.tfrecord / NASLib pickle / converted table (a file with "
                             "fewer architectures than the space is searched inside); NB201 .pth or "
                             "NATS-tss folder; DARTS: NAS-Bench-301's models folder")
    parser.add_argument("--dataset", default="cifar10",
                        help="benchmark dataset of the training oracle and of computed proxies")
    parser.add_argument("--metric", default=None,
                        help="ground-truth metric of space.ground_truth (NB201 default: test)")
    parser.add_argument("--algo", required=True,
                        help="random | evolution | reinforce | brp (aliases rs, ae, rl, bp)")
    parser.add_argument("--budget", type=count_type("--budget"), required=True, help="trained architectures per run")
    parser.add_argument("--seeds", type=count_type("--seeds"), default=1, help="number of seeds (runs)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (runs use seed..seed+seeds-1)")
    parser.add_argument("--warmup", default=None,
                        help="zero-cost warmup proxy: a registered proxy name or a score table "
                             "(CSV/CSV.gz with arch_str and one score column)")
    parser.add_argument("--warmup-pool", type=count_type("--warmup-pool"), default=None,
                        help="architectures scored by the warmup (default 3000; brp: 256 NB201, 512 NB101)")
    parser.add_argument("--move", default=None,
                        help="zero-cost move proposal proxy (evolution only)")
    parser.add_argument("--move-explore", type=float, default=None,
                        help="probability of a random neighbour instead of the proxy's best (default 0.25)")
    parser.add_argument("--proxy-column", default=None, help="score column of a score table")
    parser.add_argument("--proxy-batch-size", type=count_type("--proxy-batch-size"), default=64,
                        help="batch of computed proxies (paper: 64 on NB201; zcfast ships only 20 "
                             "CIFAR-100 images: give --data)")
    parser.add_argument("--data", default=None,
                        help="images of computed proxies' batch, as correlate --data: a shipped set or a user "
                             ".npz / image folder / torchvision CIFAR-10 or CIFAR-100 folder / ImageNet16 folder "
                             "(docs/benchmarks.md); default the dataset's shipped set")
    parser.add_argument("--batches", type=count_type("--batches"), default=1,
                        help="mini-batches of computed proxies (default 1): B disjoint batches of "
                             "--proxy-batch-size (zcfast.data.paper_batches); multi-batch proxies (zico) read "
                             "all, the others the first; keyed in the store as correlate --batches")
    parser.add_argument("--store", default=None,
                        help="result store caching computed proxy scores (default OUT/results.sqlite)")
    parser.add_argument("--trainer", default=None,
                        help="user training oracle 'module:function' (arch -> accuracy) instead of the "
                             "benchmark lookup; the module is imported and its code runs, as any "
                             "plugin's (the current folder is importable)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="algorithm option, e.g. population=64, tournament=10, hidden=600, lr=0.1")
    parser.add_argument("--device", default="cpu",
                        help="device for computed proxies: cpu or cuda[:N] (refused when CUDA is not available)")
    parser.add_argument("--out", default=None, help="output directory for the JSON logs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        value: Any = text
        for conv in (int, float):
            try:
                value = conv(text)
                break
            except ValueError:
                continue
        out[key.strip().replace("-", "_")] = value
    return out


def _load_trainer(spec: str) -> Any:
    return load_callable(spec, "--trainer", "trainer")


def run(args: argparse.Namespace) -> int:
    from zcfast import options
    from zcfast import search as zsearch

    # the one front door: every argument is checked before a store is opened or work starts
    algo = zsearch.resolve_algo(args.algo)
    dataset = options.resolve_dataset(args.dataset)
    trainer = _load_trainer(args.trainer) if args.trainer else None
    space = zsearch.resolve_search_space(args.space, ground_truth_for=None if trainer else "search",
                                         dataset=dataset, benchmark=args.benchmark)
    if args.move is not None and algo not in zsearch.MOVE_ALGORITHMS:
        raise ValueError(f"--move applies to {', '.join(zsearch.MOVE_ALGORITHMS)} only, not {algo}")
    options.resolve_device(args.device, option="--device")
    options_ = _parse_options(args.option)
    check_out_dir(args.out)
    computed = [(opt, p) for opt, p in (("--warmup", args.warmup), ("--move", args.move))
                if p is not None and not os.path.exists(p) and not p.endswith((".csv", ".csv.gz"))]
    for opt, p in computed:  # validate the names before opening (and possibly creating) a store
        zsearch.make_proxy(p, space, dataset, option=opt, device=args.device,
                           batch_size=args.proxy_batch_size, n_batches=args.batches, data=args.data)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    store = None
    if computed:
        store_path = args.store or (os.path.join(args.out, "results.sqlite") if args.out else None)
        if store_path:
            from zcfast.store import ResultStore
            store = ResultStore(store_path, create=True)
    results = []
    bar = None
    try:
        # Proxy sources are built once and shared by all seeds (table / cache reuse).
        warm = zsearch.make_proxy(args.warmup, space, dataset, store, column=args.proxy_column,
                                  device=args.device, batch_size=args.proxy_batch_size, option="--warmup",
                                  n_batches=args.batches, data=args.data)
        move = (warm if args.move is not None and args.move == args.warmup else
                zsearch.make_proxy(args.move, space, dataset, store, column=args.proxy_column,
                                   device=args.device, batch_size=args.proxy_batch_size, option="--move",
                                   n_batches=args.batches, data=args.data))
        if not args.no_progress:
            from tqdm import tqdm
            bar = tqdm(total=args.budget * args.seeds, unit="arch", desc=f"{algo} search",
                       file=sys.stderr)
        for seed in range(args.seed, args.seed + args.seeds):
            if bar is not None:
                bar.set_postfix(seed=seed)
            result = zsearch.search(space, algo, args.budget, seed=seed, oracle=trainer,
                                    dataset=dataset, metric=args.metric, warmup=warm,
                                    warmup_pool=args.warmup_pool, move=move,
                                    move_explore=args.move_explore,
                                    on_train=(lambda r: bar.update(1)) if bar is not None else None,
                                    **options_)
            if bar is not None:
                bar.update(args.budget - result.trained)   # stalled / exhausted runs
            results.append(result)
            if args.out:
                with open(os.path.join(args.out, f"seed_{seed}.json"), "w") as fh:
                    json.dump(result.to_json(), fh, indent=1)
    finally:
        if bar is not None:
            bar.close()
        if store is not None:
            store.close()
    summary = summarise(results)
    summary.update({"space": space.name, "dataset": dataset, "algo": algo,
                    "budget": args.budget, "warmup": args.warmup, "warmup_pool": args.warmup_pool,
                    "move": args.move, "options": options_, "n_batches": args.batches,
                    "trainer": args.trainer or "benchmark lookup", "benchmark": args.benchmark,
                    "benchmark_archs": space.size() if hasattr(space, "choice_table") else None})
    if args.out:
        with open(os.path.join(args.out, "summary.json"), "w") as fh:
            json.dump(summary, fh, indent=1)
    print(format_summary(summary))
    if args.out and summary["mean"] is not None:
        for name, path in write_curves({variant_label(summary): [r.to_json() for r in results]}, args.out).items():
            print(f"  {name:8s} {path}")
    if summary["mean"] is None:
        first = next((rec.error for r in results for rec in r.records if rec.error), None)
        print("zcfast search: error: every training failed" + (f" (first: {first})" if first else ""),
              file=sys.stderr)
        return 1
    return 0


def summarise(results: list[Any]) -> dict[str, Any]:
    """Per-seed best accuracies and their mean / std / min / max."""
    import numpy as np
    best = np.array([r.best_accuracy for r in results], dtype=np.float64)
    ok = best[~np.isnan(best)]
    return {
        "seeds": [r.seed for r in results],
        "best_accuracy": [None if math.isnan(b) else float(b) for b in best],
        "best_arch_str": [r.best_arch_str for r in results],
        "trained": [r.trained for r in results],
        "errors": [sum(rec.error is not None for rec in r.records) for r in results],
        "stalled": [r.stalled for r in results],
        "proxy_evaluations": [r.proxy_evaluations for r in results],
        "mean": float(ok.mean()) if ok.size else None,
        "std": float(ok.std(ddof=1)) if ok.size > 1 else None,
        "min": float(ok.min()) if ok.size else None,
        "max": float(ok.max()) if ok.size else None,
    }


def format_summary(summary: dict[str, Any]) -> str:
    n = len(summary["seeds"])
    lines = [f"{summary['algo']} on {summary['space']}/{summary['dataset']}: budget "
             f"{summary['budget']}, {n} seed(s), warmup={summary['warmup']}, move={summary['move']}"]
    if summary["mean"] is not None:
        std = f" ± {summary['std']:.3f}" if summary["std"] is not None else ""
        lines.append(f"best accuracy: mean {summary['mean']:.3f}{std} "
                     f"(min {summary['min']:.3f}, max {summary['max']:.3f})")
    else:
        lines.append("best accuracy: none (every training failed)")
    errors = sum(summary["errors"])
    if errors:
        lines.append(f"failed trainings recorded: {errors}")
    if any(summary["stalled"]):
        lines.append(f"runs that stopped early (only already-trained proposals left): "
                     f"{sum(summary['stalled'])}")
    if n == 1:
        lines.append(f"best architecture: {summary['best_arch_str'][0]}")
    return "\n".join(lines)


def variant_label(summary: dict[str, Any]) -> str:
    """A search run's line label: algorithm, warmup and move (``-`` for none)."""
    return (f"{summary.get('algo', '?')}, warmup {summary.get('warmup') or '-'}, "
            f"move {summary.get('move') or '-'}")


def write_curves(runs: dict[Any, list[dict[str, Any]]], out: str | os.PathLike) -> dict[str, Any]:
    """Write ``best_so_far.png`` (one line per variant: mean over its seeds with a 95 % interval,
    :func:`zcfast.plots.best_so_far`) and ``best_so_far.csv`` (``variant, step, mean, low, high,
    seeds``) into ``out``. ``runs``: variant -> its seeds' JSON logs (``SearchResult.to_json``);
    a variant that is a search ``--out`` folder is labelled from its ``summary.json``."""
    import csv
    from pathlib import Path

    import numpy as np

    from zcfast import plots

    curves: dict[str, Any] = {}
    for variant, logs in runs.items():
        label = str(variant)
        if isinstance(variant, Path):
            side = variant / "summary.json"
            label = variant_label(json.loads(side.read_text())) if side.is_file() else variant.name
            if label in curves:
                label = f"{label} ({variant})"
        budget = max([int(g.get("budget") or len(g["records"])) for g in logs] or [0])
        if not budget:
            continue
        curves[label] = np.stack([plots.best_so_far_curve([r.get("accuracy") for r in g["records"]], budget)
                                  for g in logs])
    if not curves:
        raise ValueError("no search run with trained architectures to plot")
    width = max(c.shape[1] for c in curves.values())
    curves = {k: np.pad(c, ((0, 0), (0, width - c.shape[1])), mode="edge") for k, c in curves.items()}
    out = Path(out)
    files = {"curve": plots.best_so_far(curves, out / "best_so_far.png",
                                        title=f"best-so-far accuracy, {len(curves)} variant(s)")}
    with open(out / "best_so_far.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["variant", "step", "mean", "low", "high", "seeds"])
        for label, c in curves.items():
            mean, lo, hi, k = plots.curve_band(c)
            for i in range(c.shape[1]):
                w.writerow([label, i + 1] + [repr(float(v)) for v in (mean[i], lo[i], hi[i])] + [int(k[i])])
    files["curve_csv"] = out / "best_so_far.csv"
    return files
