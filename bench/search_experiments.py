"""The paper's search experiments on NAS-Bench-201 (issue #6, item 3), re-runnable in one command.

Two steps::

    # 1. synflow of all 15,625 NB201 architectures, computed by zcfast (resumable store)
    python bench/search_experiments.py table --dataset cifar100 \\
        --out bench/results/search_nb201_cifar100_synflow.csv.gz

    # 2. every family with / without zero-cost warmup (and move for evolution), 30 seeds
    python bench/search_experiments.py run --dataset cifar10 \\
        --table zcfast/assets/scores/nb201_cifar10_synflow.csv.gz --seeds 30
    python bench/search_experiments.py report      # factor table + PNGs from the JSON

Ground truth: NB201 200-epoch test accuracy (``space.ground_truth(arch, dataset, "test")``,
the ``*_test_nats`` columns), used both to select and to report (docs/search.md).
Results go to bench/results/search_<dataset>.json, search_<dataset>.png, search_factors.md.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "bench", "results")

# (label, family, options): the variants compared per dataset.
VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("random", "random", {}),
    ("random + warmup", "random", {"warmup": True}),
    ("evolution", "evolution", {}),
    ("evolution + warmup", "evolution", {"warmup": True}),
    ("evolution + move", "evolution", {"move": True}),
    ("evolution + warmup + move", "evolution", {"warmup": True, "move": True}),
    ("reinforce", "reinforce", {}),
    ("reinforce + warmup", "reinforce", {"warmup": True}),
    ("brp", "brp", {}),
    ("brp + warmup", "brp", {"warmup": True}),
]
BASELINE = {"random": "random", "evolution": "evolution", "reinforce": "reinforce", "brp": "brp"}


# ---------------------------------------------------------------------------------------------
# 1. score table
# ---------------------------------------------------------------------------------------------

def make_table(args: argparse.Namespace) -> None:
    import torch

    from zcfast import data, spaces
    from zcfast.batched import score_batch
    from zcfast.store import ResultStore, ScoreRow

    torch.set_num_threads(args.threads)
    sp = spaces.get("nb201")
    num_classes = data.NUM_CLASSES[data.canonical_dataset(args.dataset)]
    # synflow feeds a tensor of ones (only the batch's shape matters), so the shipped CIFAR-10
    # batch of 64 serves every dataset; the classifier width follows the dataset.
    x, y = data.paper_batch("cifar10", 64, 42)
    config = {"study": "search-table", "space": "nb201", "num_classes": num_classes,
              "proxy": "synflow", "init_seed": args.seed, "batch": "cifar10 paper batch 64/42",
              "row_key": "arch_str"}
    archs = list(sp.enumerate())
    reuse = _ReuseStore(args.reuse, num_classes, args.seed) if args.reuse else None
    with ResultStore(args.store, create=True) as store:
        run = store.run_id(config)
        done = store.done_keys(run)
        todo = [a for a in archs if sp.encode(a) not in done]
        if reuse is not None and not done:
            # check, on a few architectures, that the reused scores are what we compute
            sample = [a for a in archs[:2000] if sp.encode(a) in reuse.values()][:8]
            mine = score_batch(sp, sample, x, y, ["synflow"], seed=args.seed, num_classes=num_classes)
            for a, v in zip(sample, mine):
                theirs = reuse.values()[sp.encode(a)]
                if not math.isclose(v["synflow"], theirs, rel_tol=1e-9):
                    raise SystemExit(f"reused store disagrees on {sp.encode(a)}: {theirs} vs {v}")
            print(f"reuse: {len(sample)} architectures agree with {args.reuse}", flush=True)
        if args.reverse:      # e.g. while another process scores in benchmark order
            todo.reverse()
        t0 = time.time()
        n = 0
        for s in range(0, len(todo), args.chunk):
            chunk = todo[s:s + args.chunk]
            if reuse is not None:
                have = reuse.values()
                chunk = [a for a in chunk if sp.encode(a) not in have]
                if not chunk:
                    continue
            t = time.perf_counter()
            vals = score_batch(sp, chunk, x, y, ["synflow"], seed=args.seed, num_classes=num_classes)
            dt = (time.perf_counter() - t) / len(chunk)
            store.put_many(run, [ScoreRow(sp.encode(a), sp.encode(a), {"synflow": v["synflow"]},
                                          None, dt) for a, v in zip(chunk, vals)])
            n += len(chunk)
            print(f"{s + args.chunk}/{len(todo)} archs seen, {n} computed, "
                  f"{(time.time() - t0) / n:.3f} s/arch", flush=True)
        scores = {r.arch_str: r.values.get("synflow", math.nan) for r in store.rows(run)}
    if reuse is not None:
        reused = {k: v for k, v in reuse.values(refresh=True).items() if k not in scores}
        print(f"reused {len(reused)} scores from {args.reuse}")
        scores.update(reused)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with gzip.GzipFile(args.out, "wb", mtime=0) as raw:
        fh = raw
        lines = ["index,arch_str,synflow\n"]
        for i, a in enumerate(archs):
            text = sp.encode(a)
            lines.append(f"{i},{text},{scores[text]!r}\n")
        fh.write("".join(lines).encode())
    print(f"wrote {args.out} ({len(archs)} rows)")


class _ReuseStore:
    """Read-only view of synflow scores in another zcfast store (e.g. a running correlation
    study with the same init seed and classifier width), opened with SQLite ``mode=ro``."""

    def __init__(self, path: str, num_classes: int, seed: int) -> None:
        import sqlite3
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        self.runs = []
        for run_id, cfg in self.conn.execute("SELECT run_id, config FROM runs"):
            c = json.loads(cfg)
            if (c.get("space") == "nb201" and c.get("proxy") == "synflow"
                    and c.get("num_classes") == num_classes and c.get("init_seed") == seed
                    and c.get("row_key") == "arch_str"):
                self.runs.append(run_id)
        if not self.runs:
            raise SystemExit(f"{path} holds no nb201 synflow run with {num_classes} classes, seed {seed}")
        self._cache: dict[str, float] | None = None
        self._last = 0.0

    def values(self, refresh: bool = False) -> dict[str, float]:
        if self._cache is None or refresh or time.time() - self._last > 60:
            out: dict[str, float] = {}
            for run_id in self.runs:
                for key, vals, err in self.conn.execute(
                        "SELECT arch_key, vals, error FROM scores WHERE run_id=?", (run_id,)):
                    v = json.loads(vals).get("synflow")
                    if err is None and v is not None:
                        out[key] = float(v)
            self._cache, self._last = out, time.time()
        return self._cache


def export_partial(args: argparse.Namespace) -> None:
    """Write the synflow scores computed so far (own store + a reused one) as a table."""
    from zcfast import spaces
    from zcfast.store import ResultStore
    sp = spaces.get("nb201")
    scores: dict[str, float] = {}
    if args.reuse:
        scores.update(_ReuseStore(args.reuse, 10 if args.dataset == "cifar10" else 100, args.seed).values())
    with ResultStore(args.store, create=False) as store:
        for run_id, cfg in store.runs().items():
            if cfg.get("proxy") == "synflow" and cfg.get("init_seed") == args.seed:
                for r in store.rows(run_id):
                    if r.error is None and "synflow" in r.values:
                        scores[r.arch_str] = r.values["synflow"]
    rows = ["index,arch_str,synflow\n"]
    for i, a in enumerate(sp.enumerate()):
        text = sp.encode(a)
        if text in scores:
            rows.append(f"{i},{text},{scores[text]!r}\n")
    with gzip.GzipFile(args.out, "wb", mtime=0) as fh:
        fh.write("".join(rows).encode())
    print(f"wrote {args.out}: {len(rows) - 1} of 15625 architectures")


# ---------------------------------------------------------------------------------------------
# 2. runs
# ---------------------------------------------------------------------------------------------

def run_experiments(args: argparse.Namespace) -> None:
    import torch

    from zcfast import spaces
    from zcfast.search import TableProxy, load_score_table, search

    torch.set_num_threads(1)
    sp = spaces.get("nb201")
    if args.subset:
        # restrict the space to the architectures the (partial) table covers
        from zcfast.search.subset import SubsetSpace
        sp = SubsetSpace(sp, load_score_table(args.table, args.column))
    proxy = (TableProxy(sp, load_score_table(args.table, args.column), name=os.path.basename(args.table))
             if args.table else None)
    out_path = args.out or os.path.join(RESULTS, f"search_{args.dataset}.json")
    doc_space = {"name": "nb201", "size": sp.size(),
                 "subset_of_table": bool(args.subset),
                 "warmup_pool": round(3000 * sp.size() / 15625),
                 "brp_warmup_pool": round(256 * sp.size() / 15625)}
    doc: dict[str, Any] = {}
    if os.path.exists(out_path):
        with open(out_path) as fh:
            doc = json.load(fh)
    doc.setdefault("variants", {})
    if args.table:
        doc["table"] = os.path.relpath(args.table, ROOT)
    doc.update({"dataset": args.dataset, "space": doc_space,
                "seeds": args.seeds, "metric": "test (200-epoch, *_test_nats)",
                "budgets": {"random": args.budget, "evolution": args.budget,
                            "reinforce": args.budget, "brp": args.brp_budget},
                "brp_options": {"hidden": args.brp_hidden, "steps": args.brp_steps},
                "command": " ".join([os.path.basename(sys.executable)] + sys.argv)})
    wanted = [v for v in VARIANTS if not args.only or v[0] in args.only]
    for label, family, opts in wanted:
        if label in doc["variants"] and not args.force:
            print(f"skip {label} (already recorded)")
            continue
        if (opts.get("warmup") or opts.get("move")) and proxy is None:
            print(f"skip {label} (needs --table)")
            continue
        budget = args.brp_budget if family == "brp" else args.budget
        kw: dict[str, Any] = {}
        if opts.get("warmup"):
            kw["warmup"] = proxy
            # the paper's pools (3,000 of 15,625; BRP 256) scaled to the searched space
            default = 256 if family == "brp" else 3000
            kw["warmup_pool"] = max(64 if family == "evolution" else 2,
                                    round(default * sp.size() / 15625))
        if opts.get("move"):
            kw["move"] = proxy
        if family == "brp":
            kw["hidden"] = args.brp_hidden
            if args.brp_steps:
                kw["train_steps"], kw["warmup_steps"] = args.brp_steps
        curves, trained, stalled, secs = [], [], [], []
        for seed in range(args.seeds):
            t = time.perf_counter()
            res = search(sp, family, budget, seed=seed, dataset=args.dataset, metric="test", **kw)
            secs.append(time.perf_counter() - t)
            curves.append(res.curve().tolist())
            trained.append(res.trained)
            stalled.append(res.stalled)
        c = np.array(curves)
        doc["variants"][label] = {"family": family, "budget": budget, "curves": curves,
                                  "trained": trained, "stalled": stalled,
                                  "seconds_per_run": float(np.median(secs)),
                                  "final_mean": float(c[:, -1].mean()),
                                  "final_std": float(c[:, -1].std(ddof=1))}
        print(f"{args.dataset} {label}: final {c[:, -1].mean():.3f} ± {c[:, -1].std(ddof=1):.3f}"
              f" ({np.median(secs):.2f} s/run)", flush=True)
        with open(out_path, "w") as fh:
            json.dump(doc, fh)
    doc["load_average_at_end"] = os.getloadavg()
    with open(out_path, "w") as fh:
        json.dump(doc, fh)


# ---------------------------------------------------------------------------------------------
# 3. report: factor table + plots
# ---------------------------------------------------------------------------------------------

def first_reach(mean_curve: np.ndarray, target: float) -> int | None:
    """1-based number of trained architectures at which ``mean_curve`` first reaches target."""
    hit = np.flatnonzero(mean_curve >= target - 1e-9)
    return int(hit[0]) + 1 if hit.size else None


def factor_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per variant: trained archs to reach its family baseline's final mean accuracy."""
    rows = []
    variants = doc["variants"]
    for label, v in variants.items():
        base = variants.get(BASELINE[v["family"]])
        if base is None:
            continue
        c = np.array(v["curves"])
        b = np.array(base["curves"])
        target = float(b.mean(axis=0)[-1])
        n_base = first_reach(b.mean(axis=0), target)
        n = first_reach(c.mean(axis=0), target)
        rs = variants.get("random")
        rs_target = float(np.array(rs["curves"]).mean(axis=0)[-1]) if rs else math.nan
        rows.append({"variant": label, "family": v["family"], "budget": v["budget"],
                     "rs_target": rs_target, "n_to_rs": first_reach(c.mean(axis=0), rs_target),
                     "target": target, "n_to_target": n, "n_baseline": n_base,
                     "factor": (n_base / n) if n else None,
                     "final_mean": float(c[:, -1].mean()), "final_std": float(c[:, -1].std(ddof=1)),
                     "at_10": float(c[:, min(9, c.shape[1] - 1)].mean()),
                     "at_50": float(c[:, min(49, c.shape[1] - 1)].mean()),
                     "stalled": int(sum(v["stalled"]))})
    return rows


def report(args: argparse.Namespace) -> None:
    md = ["# Search experiments on NAS-Bench-201 (generated by bench/search_experiments.py report)", ""]
    for ds in args.datasets:
        path = os.path.join(RESULTS, f"search_{ds}.json")
        if not os.path.exists(path):
            print(f"no results for {ds} ({path})")
            continue
        with open(path) as fh:
            doc = json.load(fh)
        rows = factor_rows(doc)
        space = doc.get("space", {})
        md += [f"## {ds} ({doc['seeds']} seeds, space: {space.get('name', 'nb201')}"
               + (f" restricted to the {space['size']} architectures of the partial table"
                  if space.get("subset_of_table") else "") + f", proxy table {doc.get('table')}, metric {doc['metric']})", "",
               f"Command: `{doc.get('command', '?')}`; load average at end: {doc.get('load_average_at_end')}", "",
               "Target = the family baseline's final mean accuracy (mean over seeds of the best "
               "test accuracy after its whole budget). *n* = trained architectures at which the "
               "variant's mean curve first reaches it; factor = baseline n / variant n. "
               "*n to RS* = trained architectures to reach random search's final mean "
               f"({rows[0]['rs_target']:.2f}, a target shared by all families).", "",
               "| variant | budget | best@10 | best@50 | final (mean ± std) | target | n to target | baseline n | factor | n to RS | stalled runs |",
               "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            fac = f"{r['factor']:.2f}×" if r["factor"] else "not reached"
            n = r["n_to_target"] if r["n_to_target"] else f"> {r['budget']}"
            md.append(f"| {r['variant']} | {r['budget']} | {r['at_10']:.2f} | {r['at_50']:.2f} | "
                      f"{r['final_mean']:.2f} ± {r['final_std']:.2f} | {r['target']:.2f} | {n} | "
                      f"{r['n_baseline']} | {fac} | {r['n_to_rs'] or '> ' + str(r['budget'])} | {r['stalled']} |")
        md.append("")
        png = os.path.join(RESULTS, f"search_{ds}.png")
        plot_curves(doc, ds, png)
        print(f"wrote {png}")
    out = os.path.join(RESULTS, "search_factors.md")
    with open(out, "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))


def plot_curves(doc: dict[str, Any], ds: str, png: str,
                styles: dict[str, dict[str, Any]] | None = None) -> None:
    """One panel per family, one line per variant of ``doc["variants"]`` (mean best-so-far
    over seeds, 25-75% band), log x axis; written to ``png``. ``styles``: optional
    matplotlib line keywords per variant label (e.g. colour, linestyle)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = ["random", "evolution", "reinforce", "brp"]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5), sharey=True)
    for ax, fam in zip(axes, fams):
        for label, v in doc["variants"].items():
            if v["family"] != fam:
                continue
            c = np.array(v["curves"])
            x = np.arange(1, c.shape[1] + 1)
            m = c.mean(axis=0)
            lo, hi = np.percentile(c, 25, axis=0), np.percentile(c, 75, axis=0)
            (line,) = ax.plot(x, m, label=label, **(styles or {}).get(label, {}))
            ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())
        ax.set_title(f"{fam} ({ds})")
        ax.set_xlabel("trained architectures")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("test accuracy of best found (%)\nmean, 25–75% band")
    all_final = [np.array(v["curves"])[:, -1] for v in doc["variants"].values()]
    top = max(float(np.max(a)) for a in all_final)
    axes[0].set_ylim(top - 6 if ds == "cifar10" else top - 10, top + 0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table", help="synflow of all NB201 architectures -> CSV.gz")
    t.add_argument("--dataset", default="cifar100")
    t.add_argument("--out", required=True)
    t.add_argument("--store", default="/tmp/zcfast_search_table.sqlite")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--chunk", type=int, default=64)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--reverse", action="store_true", help="score in reverse benchmark order")
    t.add_argument("--reuse", default=None,
                   help="another zcfast store (read-only) whose synflow rows with the same "
                        "seed and classes are reused instead of recomputed")
    r = sub.add_parser("run", help="run the variants for one dataset")
    r.add_argument("--dataset", default="cifar10")
    r.add_argument("--table", default=None,
                   help="synflow score table (CSV.gz) for this dataset; without it only the baselines run")
    r.add_argument("--seeds", type=int, default=30)
    r.add_argument("--budget", type=int, default=300)
    r.add_argument("--brp-budget", type=int, default=100)
    r.add_argument("--brp-hidden", type=int, default=64)
    r.add_argument("--subset", action="store_true",
                   help="search only the architectures the table covers (a partial table)")
    r.add_argument("--brp-steps", type=int, nargs=2, default=None, metavar=("TRAIN", "WARMUP"),
                   help="predictor train_steps per iteration and warmup_steps")
    r.add_argument("--column", default="synflow", help="the table's score column")
    r.add_argument("--out", default=None, help="results JSON (default bench/results/search_<dataset>.json)")
    r.add_argument("--only", nargs="*", default=None, help="variant labels to (re)run")
    r.add_argument("--force", action="store_true", help="re-run variants already recorded")
    e = sub.add_parser("export", help="write the partial synflow table scored so far")
    e.add_argument("--dataset", default="cifar10")
    e.add_argument("--store", required=True)
    e.add_argument("--reuse", default=None)
    e.add_argument("--seed", type=int, default=42)
    e.add_argument("--out", required=True)
    p = sub.add_parser("report", help="factor table and PNGs from the recorded JSON")
    p.add_argument("--datasets", nargs="*", default=["cifar10", "cifar100"])
    args = parser.parse_args(argv)
    {"table": make_table, "export": export_partial, "run": run_experiments, "report": report}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
