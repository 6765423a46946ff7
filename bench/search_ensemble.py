"""The held-out ensemble as zero-cost warmup and move in the NB201 searches (issue #13, item 6).

The ensemble chosen on the selection half of bench/ensemble_selection.py
(docs/results/nb201_cifar10_ensemble_heldout/selection.json: members, signs, method) is
compared with synflow, in the searches of bench/search_experiments.py, over the SAME
architectures: a uniform random sample scored with the ensemble's four proxies, minus every
architecture of the ensemble's selection half (the ensemble is never searched where it was
chosen). The search runs inside that subset (``search_experiments run --subset``).

Steps::

    # 1. the subset's tables: the ensemble (and its members), and synflow for C10 and C100
    python bench/search_ensemble.py tables --store runs/ens.sqlite
    # 2. the searches (30 seeds, Issue #6's budgets); one dataset per process is fine
    python bench/search_ensemble.py run --datasets cifar10 --seeds 30
    python bench/search_ensemble.py run --datasets cifar100 --seeds 30
    # 3. the side-by-side factor table and plots
    python bench/search_ensemble.py report

Protocol:

- Rows: the store's ``correlate`` runs of the ensemble's members (NB201, 10 classes, one run
  per member; rows keyed by ``arch_str``), or score CSVs (``--scores``, joined on ``index``
  with bench/ensemble_selection.py's ``load``). An architecture is kept when every member has a
  row for it; a member's error row is NaN. Benchmark index = ``space.index(arch)``.
- Exclusion: every benchmark index of selection.json's ``selection_half_index`` is dropped.
- Ensemble value: ``zcfast.ensemble.aggregate`` of the selected ensemble over the remaining
  subset (the population is the subset; NaN members ranked worst, as in the selection).
- synflow: bench/results/search_nb201_cifar10_synflow.csv.gz (10-class head) for CIFAR-10 and
  bench/results/search_nb201_cifar100_synflow.csv.gz (100-class head) for CIFAR-100, the tables
  of Issue #6, restricted to the subset. The ensemble's members are CIFAR-10 proxies (10-class
  head, CIFAR-10 batch): on CIFAR-100 the same ensemble table is used, a transfer.
- Search: ``search_experiments run --subset --seeds S --brp-steps 50 100`` (budget 300, BRP 100,
  pools scaled to the subset), baselines run once per dataset (they use no proxy and the two
  tables cover the same architectures, so they would be identical); oracle = test accuracy.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import ensemble_selection  # noqa: E402
import search_experiments as se  # noqa: E402

from zcfast import ensemble  # noqa: E402
from zcfast.ensemble import Ensemble  # noqa: E402
from zcfast.metrics import spearman  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")
OUT_DIR = os.path.join(RESULTS, "search_ensemble")
SELECTION = os.path.join(ROOT, "docs", "results", "nb201_cifar10_ensemble_heldout", "selection.json")
SYNFLOW = {ds: os.path.join(RESULTS, f"search_nb201_{ds}_synflow.csv.gz") for ds in ("cifar10", "cifar100")}
DATASETS = ("cifar10", "cifar100")
PROXIES = ("synflow", "ensemble")
#: the variants that use the proxy (the others are the baselines, run once per dataset)
PROXIED = [label for label, _fam, opts in se.VARIANTS if opts]


@dataclass
class Subset:
    """The searched architectures and their scores (A = architectures kept).

    Attributes:
        index: benchmark indices [A], ascending. arch: ``arch_str`` [A].
        cols: member -> raw scores [A] (NaN: failed). values: the ensemble [A].
        info: counts for the report (rows read, complete, dropped, NaNs per member).
    """

    index: np.ndarray
    arch: list[str]
    cols: dict[str, np.ndarray]
    values: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def load_selection(path: str = SELECTION) -> tuple[Ensemble, set[int], dict[str, Any]]:
    """(the selected ensemble, the selection half's benchmark indices, its held-out figures)."""
    with open(path) as fh:
        doc = json.load(fh)
    held = doc["selected"]["heldout"]
    ens = Ensemble("heldout_ensemble", tuple(held["members"]), tuple(held["signs"]), held["method"],
                   doc["selected"]["name"])
    return ens, {int(i) for i in doc["selection_half_index"]}, doc


def rows_from_store(path: str, members: Sequence[str]) -> tuple[dict[int, str], dict[str, dict[int, float]], dict[str, Any]]:
    """Read each member's correlate run from a zcfast store (read-only, no lock).

    Returns ``(arch_str by index, {member: {index: value}}, info)``; an error row is NaN.
    Raises SystemExit when a member has no run, or several (say which one to use).
    """
    from zcfast import spaces
    from zcfast.store import ResultStore

    sp = spaces.get("nb201")
    arch: dict[int, str] = {}
    vals: dict[str, dict[int, float]] = {}
    info: dict[str, Any] = {"store": path, "runs": {}}
    with ResultStore(path, create=False, readonly=True, check=False) as store:
        runs = store.runs()
        for m in members:
            ids = [rid for rid, c in runs.items() if c.get("proxy") == m and c.get("space") == "nb201"
                   and c.get("num_classes") == 10 and c.get("row_key") == "arch_str"]
            if len(ids) != 1:
                raise SystemExit(f"{path}: {len(ids)} nb201 10-class runs of {m!r} ({ids}); expected one")
            info["runs"][m] = {"run_id": ids[0], "config": runs[ids[0]]}
            vals[m] = {}
            reasons: dict[str, int] = {}
            for r in store.rows(ids[0]):
                i = sp.index(sp.decode(r.arch_str))
                arch[i] = r.arch_str
                v = r.values.get(m, math.nan) if r.error is None else math.nan
                vals[m][i] = float(v) if v is not None else math.nan
                if r.error is not None:
                    head = r.error.split(":", 1)[-1].strip()[:80]
                    reasons[head] = reasons.get(head, 0) + 1
            info["runs"][m]["rows"] = len(vals[m])
            info["runs"][m]["errors"] = reasons      # first 80 characters of each reason: count
    return arch, vals, info


def rows_from_csvs(paths: Sequence[str], members: Sequence[str]) -> tuple[dict[int, str], dict[str, dict[int, float]], dict[str, Any]]:
    """The same from score CSVs, joined on ``index`` by bench/ensemble_selection.py's ``load``."""
    index, arch, _acc, cols = ensemble_selection.load(paths)
    missing = [m for m in members if m not in cols]
    if missing:
        raise SystemExit(f"the score CSVs lack {missing}")
    idx = [int(i) for i in index]
    return (dict(zip(idx, arch)), {m: dict(zip(idx, map(float, cols[m]))) for m in members},
            {"scores": list(paths)})


def isolated(arch_strs: Sequence[str]) -> list[str]:
    """The architectures to remove so that every remaining one has a one-edit NB201 neighbour
    among the remaining ones (removing one can isolate another: repeated to a fixed point).
    Evolution mutates a parent to a neighbour inside the searched subset, and cannot mutate an
    isolated one (``SearchSpace.mutate`` raises)."""
    from zcfast import spaces

    sp = spaces.get("nb201")
    keep = set(arch_strs)
    near = {a: {sp.encode(n) for n in sp.neighbours(sp.decode(a))} for a in keep}
    removed: list[str] = []
    while True:
        alone = sorted(a for a in keep if not (near[a] & keep))
        if not alone:
            return removed
        keep.difference_update(alone)
        removed += alone


def compare_with_selection(doc: Mapping[str, Any], arch: Mapping[int, str],
                           vals: Mapping[str, Mapping[int, float]], info: Mapping[str, Any]) -> dict[str, Any]:
    """Per member: is the store's run the configuration the selection's scores came from (same
    run id in the ``summary.json`` next to that score CSV), the batch of each, and, on the
    architectures both hold, the largest difference of their values."""
    out: dict[str, Any] = {}
    for m, run in info.get("runs", {}).items():
        for p in doc["scores"]:
            summary = os.path.join(ROOT, os.path.dirname(p), "summary.json")
            if not os.path.exists(summary):
                continue
            with open(summary) as fh:
                s = json.load(fh)
            if m not in s.get("run_ids", {}):
                continue
            _i, _a, _acc, cols = ensemble_selection.load([os.path.join(ROOT, p)])
            shared = [(int(i), float(v)) for i, v in zip(_i, cols[m]) if int(i) in vals[m]]
            both = [(v, vals[m][i]) for i, v in shared if math.isfinite(v) and math.isfinite(vals[m][i])]
            rel = [abs(a - b) / max(abs(a), abs(b), 1e-300) for a, b in both]
            out[m] = {"same_config": s["run_ids"][m] == run["run_id"],
                      "selection_batch": s.get("batch"), "store_batch": run["config"].get("batch"),
                      "shared_archs": len(shared), "finite_on_both": len(both),
                      "max_rel_diff_on_shared": max(rel) if rel else None,
                      "spearman_on_shared": (float(spearman(np.array([a for a, _ in both]), np.array([b for _, b in both])))
                                             if len(both) >= 3 else None)}
            break
    return out


def build_subset(ens: Ensemble, arch: Mapping[int, str], vals: Mapping[str, Mapping[int, float]],
                 selection: set[int]) -> Subset:
    """Keep the indices every member has, drop the selection half and then the architectures
    with no neighbour left in the subset (:func:`isolated`), aggregate the ensemble over the rest."""
    complete = set(arch)
    for m in ens.members:
        complete &= set(vals[m])
    dropped = sorted(complete & selection)
    rest = complete - selection
    alone = set(isolated([arch[i] for i in rest]))
    keep = np.array(sorted(i for i in rest if arch[i] not in alone), dtype=np.int64)
    if keep.size == 0:
        raise SystemExit("no architecture left after dropping the selection half and the isolated ones")
    cols = {m: np.array([vals[m][int(i)] for i in keep], dtype=np.float64) for m in ens.members}
    values = ensemble.aggregate(ens, cols)
    info = {"rows_per_member": {m: len(vals[m]) for m in ens.members}, "complete": len(complete),
            "dropped_selection_half": len(dropped), "dropped_isolated": len(alone), "size": int(keep.size),
            "nan_per_member": {m: int((~np.isfinite(c)).sum()) for m, c in cols.items()},
            "archs_with_any_nan": int((~np.isfinite(np.stack(list(cols.values())))).any(0).sum())}
    return Subset(keep, [arch[int(i)] for i in keep], cols, values, info)


def check_heldout(ens: Ensemble, doc: Mapping[str, Any]) -> dict[str, float]:
    """Recompute the ensemble on the shipped held-out half: our aggregate's ρ against the
    one bench/ensemble_selection.py reported (the same arithmetic must give the same number)."""
    index, _arch, acc, cols = ensemble_selection.load([os.path.join(ROOT, p) for p in doc["scores"]])
    pos = {int(i): k for k, i in enumerate(index)}
    held = np.array([pos[int(i)] for i in doc["heldout_half_index"]])
    values = ensemble.aggregate(ens, {m: cols[m][held] for m in ens.members})
    rho = spearman(values, acc[held], nan_policy="worst")
    return {"spearman": float(rho), "reported": float(doc["selected"]["heldout"]["spearman"]), "n": int(held.size)}


def write_table(path: str, index: Sequence[int], arch: Sequence[str], columns: Mapping[str, np.ndarray]) -> None:
    """search_experiments' --table format: ``index,arch_str,<columns...>`` as CSV.gz."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    lines = [",".join(["index", "arch_str", *columns]) + "\n"]
    for k, (i, a) in enumerate(zip(index, arch)):
        lines.append(",".join([str(int(i)), a] + [repr(float(c[k])) for c in columns.values()]) + "\n")
    with gzip.GzipFile(path, "wb", mtime=0) as fh:
        fh.write("".join(lines).encode())


def table_paths(out_dir: str = OUT_DIR) -> dict[str, str]:
    return {"ensemble": os.path.join(out_dir, "tables", "ensemble.csv.gz"),
            **{f"synflow_{ds}": os.path.join(out_dir, "tables", f"synflow_{ds}.csv.gz") for ds in DATASETS}}


def cmd_tables(args: argparse.Namespace) -> None:
    from zcfast import spaces
    from zcfast.search import load_score_table

    ens, selection, doc = load_selection(args.selection)
    check = check_heldout(ens, doc)
    print(f"check: {ens.description} on the shipped held-out half: rho {check['spearman']:.6f} "
          f"(selection.json: {check['reported']:.6f})")
    if abs(check["spearman"] - check["reported"]) > 1e-9:
        raise SystemExit("the ensemble does not reproduce selection.json's held-out rho")
    read_at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    if args.scores:
        arch, vals, source = rows_from_csvs(args.scores, ens.members)
    else:
        arch, vals, source = rows_from_store(args.store, ens.members)
    sub = build_subset(ens, arch, vals, selection)
    versus = compare_with_selection(doc, arch, vals, source) if not args.scores else {}
    for m, c in versus.items():
        print(f"{m}: store run {'=' if c['same_config'] else '!='} the selection's config; "
              f"{c['shared_archs']} shared archs, max relative diff {c['max_rel_diff_on_shared']}, "
              f"rho {c['spearman_on_shared']}")
    paths = table_paths(args.out_dir)
    write_table(paths["ensemble"], sub.index, sub.arch, {"ensemble": sub.values, **sub.cols})
    sp = spaces.get("nb201")
    gt: dict[str, Any] = {}
    for ds in DATASETS:
        syn = load_score_table(SYNFLOW[ds], "synflow")
        col = np.array([syn[a] for a in sub.arch])
        write_table(paths[f"synflow_{ds}"], sub.index, sub.arch, {"synflow": col})
        acc = np.array([sp.ground_truth(sp.decode(a), ds, "test") for a in sub.arch])
        gt[ds] = {"ensemble": float(spearman(sub.values, acc, nan_policy="worst")),
                  "synflow": float(spearman(col, acc, nan_policy="worst"))}
    meta = {"ensemble": {"name": ens.description, "members": list(ens.members), "signs": list(ens.signs),
                         "method": ens.method, "selection": _rel(os.path.abspath(args.selection))},
            "check_heldout": check, "source": source, "versus_selection_scores": versus, "subset": sub.info,
            "spearman_on_subset_vs_test": gt, "tables": {k: _rel(os.path.abspath(v)) for k, v in paths.items()},
            "synflow_tables": {ds: _rel(p) for ds, p in SYNFLOW.items()},
            "command": " ".join(["python", "bench/search_ensemble.py", *sys.argv[1:]]),
            "read_at_utc": read_at}
    with open(os.path.join(args.out_dir, "subset.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    print(json.dumps({k: meta[k] for k in ("subset", "spearman_on_subset_vs_test")}, indent=1))


def _rel(path: str) -> str:
    """``path`` relative to the repository when it lies inside it (for recorded commands)."""
    inside = os.path.isabs(path) and os.path.commonpath([ROOT, path]) == ROOT
    return os.path.relpath(path, ROOT) if inside else path


def run_path(out_dir: str, ds: str, proxy: str) -> str:
    return os.path.join(out_dir, "runs", f"{ds}_{proxy}.json")


def cmd_run(args: argparse.Namespace) -> None:
    paths = table_paths(args.out_dir)
    os.makedirs(os.path.join(args.out_dir, "runs"), exist_ok=True)
    for ds in args.datasets:
        for proxy in args.proxies:
            table = paths["ensemble"] if proxy == "ensemble" else paths[f"synflow_{ds}"]
            out = run_path(args.out_dir, ds, proxy)
            if os.path.exists(out):
                os.remove(out)       # a fresh run, never merged with an older one
            argv = ["run", "--dataset", ds, "--table", table, "--column", proxy, "--subset",
                    "--seeds", str(args.seeds), "--brp-steps", "50", "100", "--out", out]
            if proxy != "synflow":       # the baselines use no proxy: run once, with synflow's
                argv += ["--only", *PROXIED]
            print(f"== {ds} {proxy}: search_experiments {' '.join(argv)}", flush=True)
            se.main(argv)
            with open(out) as fh:
                doc = json.load(fh)
            # the search_experiments command this run is (runnable: labels quoted), and ours
            doc["command"] = shlex.join(["python", "bench/search_experiments.py", *map(_rel, argv)])
            doc["via"] = shlex.join(["python", "bench/search_ensemble.py", *sys.argv[1:]])
            with open(out, "w") as fh:
                json.dump(doc, fh)


def merged_doc(out_dir: str, ds: str) -> dict[str, Any]:
    """Baselines once, then each proxied variant as ``"<label> [<proxy>]"``: one doc for
    search_experiments' factor_rows and plot_curves."""
    docs = {}
    for proxy in PROXIES:
        with open(run_path(out_dir, ds, proxy)) as fh:
            docs[proxy] = json.load(fh)
    variants: dict[str, Any] = {}
    for label, v in docs["synflow"]["variants"].items():
        if label not in PROXIED:
            variants[label] = v
    for proxy in PROXIES:
        for label, v in docs[proxy]["variants"].items():
            if label in PROXIED:
                variants[f"{label} [{proxy}]"] = v
    seeds = {d["seeds"] for d in docs.values()}
    if len(seeds) != 1 or docs["synflow"]["space"]["size"] != docs["ensemble"]["space"]["size"]:
        raise SystemExit(f"{ds}: the two runs differ in seeds or subset: "
                         f"{[(d['seeds'], d['space']) for d in docs.values()]}")
    return {"variants": variants, "seeds": seeds.pop(), "space": docs["synflow"]["space"],
            "budgets": docs["synflow"]["budgets"], "brp_options": docs["synflow"]["brp_options"],
            "metric": docs["synflow"]["metric"],
            "commands": {p: d["command"] for p, d in docs.items()},
            "load_average_at_end": {p: d.get("load_average_at_end") for p, d in docs.items()},
            "seconds_per_run": {k: v["seconds_per_run"] for k, v in variants.items()}}


def _fmt_n(r: Mapping[str, Any] | None) -> str:
    if r is None:
        return "-"
    n = r["n_to_target"] if r["n_to_target"] else f"> {r['budget']}"
    fac = f"{r['factor']:.2f}×" if r["factor"] else "not reached"
    return f"{n} ({fac})"


def _fmt_final(r: Mapping[str, Any] | None) -> str:
    return "-" if r is None else f"{r['final_mean']:.2f} ± {r['final_std']:.2f}"


def cmd_report(args: argparse.Namespace) -> None:
    os.makedirs(args.report_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "subset.json")) as fh:
        meta = json.load(fh)
    rows: dict[str, dict[str, Any]] = {}
    full: dict[str, dict[str, Any]] = {}
    docs = {}
    for ds in DATASETS:
        docs[ds] = merged_doc(args.out_dir, ds)
        rows[ds] = {r["variant"]: r for r in se.factor_rows(docs[ds])}
        ref = os.path.join(RESULTS, f"search_{ds}.json")     # Issue #6: synflow, all 15,625
        if os.path.exists(ref):
            with open(ref) as fh:
                full[ds] = {r["variant"]: r for r in se.factor_rows(json.load(fh))}
    sub = meta["subset"]
    src = meta["source"]
    md = ["# The held-out ensemble vs synflow as zero-cost warmup and move, NB201 (generated by "
          "bench/search_ensemble.py report)", "",
          f"Ensemble: **{meta['ensemble']['name']}**, chosen on the selection half of "
          f"`{meta['ensemble']['selection']}`; recomputed here on the shipped held-out half: ρ "
          f"{meta['check_heldout']['spearman']:.4f} (selection.json: {meta['check_heldout']['reported']:.4f}).", "",
          f"Searched subset: {sub['size']} NB201 architectures = {sub['complete']} with all four members scored "
          f"({'store ' + src['store'] + ' as read at ' + str(meta.get('read_at_utc')) + ' UTC' if 'store' in src else 'CSVs ' + ', '.join(src['scores'])}) minus "
          f"{sub['dropped_selection_half']} of the ensemble's selection half, minus {sub['dropped_isolated']} left "
          "with no one-edit neighbour in the subset (evolution could not mutate them; removed to a fixed point). Non-finite member scores (ranked "
          f"worst): {sub['nan_per_member']} ({sub['archs_with_any_nan']} architectures with any)"
          + ("; the store's reasons (all its rows): " + "; ".join(
              f"{m}: {n} × \"{why}…\"" for m, r in src["runs"].items() for why, n in r.get("errors", {}).items())
             if "runs" in src else "") + ". The ensemble "
          "is aggregated over the subset; synflow is Issue #6's table for each dataset (10-class head for "
          "CIFAR-10, 100-class for CIFAR-100) restricted to the same architectures. The ensemble's members are "
          "CIFAR-10 proxies (10-class head, CIFAR-10 batch), so on **CIFAR-100 the ensemble is a transfer**.", "",
          *_versus_lines(meta.get("versus_selection_scores", {})),
          "Spearman ρ on the subset against the search's oracle (200-epoch test accuracy): "
          + "; ".join(f"{ds}: ensemble {g['ensemble']:.3f}, synflow {g['synflow']:.3f}"
                      for ds, g in meta["spearman_on_subset_vs_test"].items()) + ".", "",
          f"Search: {docs['cifar10']['seeds']} seeds, budgets {docs['cifar10']['budgets']} (Issue #6's), BRP "
          f"{docs['cifar10']['brp_options']}, warmup pools scaled to the subset ({docs['cifar10']['space']['warmup_pool']}; "
          f"BRP {docs['cifar10']['space']['brp_warmup_pool']}). Baselines (no proxy) run once per dataset. "
          "n = trained architectures at which the variant's mean curve first reaches its family baseline's "
          "final mean; factor = baseline n / n. Cells: n (factor).", "",
          "| variant | C10 synflow | C10 ensemble | C100 synflow | C100 ensemble | C10 synflow, full space (Issue #6) | C100 synflow, full space (Issue #6) |",
          "|---|---|---|---|---|---|---|"]
    labels = [label for label, _f, _o in se.VARIANTS]
    for label in labels:
        if label in PROXIED:
            cells = [_fmt_n(rows[ds].get(f"{label} [{p}]")) for ds in DATASETS for p in PROXIES]
        else:
            cells = [_fmt_n(rows[ds].get(label)) for ds in DATASETS for _p in PROXIES]
        cells += [_fmt_n(full.get(ds, {}).get(label)) for ds in DATASETS]
        md.append(f"| {label} | " + " | ".join(cells) + " |")
    md += ["", "Final best test accuracy after the whole budget (mean ± std over seeds):", "",
           "| variant | C10 synflow | C10 ensemble | C100 synflow | C100 ensemble |", "|---|---|---|---|---|"]
    for label in labels:
        if label in PROXIED:
            cells = [_fmt_final(rows[ds].get(f"{label} [{p}]")) for ds in DATASETS for p in PROXIES]
        else:
            cells = [_fmt_final(rows[ds].get(label)) for ds in DATASETS for _p in PROXIES]
        md.append(f"| {label} | " + " | ".join(cells) + " |")
    md += ["", "Per dataset, every column of search_experiments' factor table:", ""]
    for ds in DATASETS:
        d = docs[ds]
        md += [f"### {ds}", "", f"Commands: `{d['commands']['synflow']}`; `{d['commands']['ensemble']}`. "
               f"Load average at end: {d['load_average_at_end']}.", "",
               "| variant | best@10 | best@50 | final (mean ± std) | target | n to target | baseline n | factor | n to RS | stalled runs | s/run |",
               "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows[ds].values():
            fac = f"{r['factor']:.2f}×" if r["factor"] else "not reached"
            n = r["n_to_target"] if r["n_to_target"] else f"> {r['budget']}"
            md.append(f"| {r['variant']} | {r['at_10']:.2f} | {r['at_50']:.2f} | {r['final_mean']:.2f} ± "
                      f"{r['final_std']:.2f} | {r['target']:.2f} | {n} | {r['n_baseline']} | {fac} | "
                      f"{r['n_to_rs'] or '> ' + str(r['budget'])} | {r['stalled']} | "
                      f"{d['seconds_per_run'][r['variant']]:.2f} |")
        png = os.path.join(args.report_dir, f"search_ensemble_{ds}.png")
        se.plot_curves(d, ds, png, styles=_styles(d["variants"]))
        md += ["", f"![{ds}](search_ensemble_{ds}.png)", ""]
        print(f"wrote {png}")
    md += [f"Tables: {', '.join('`' + p + '`' for p in meta['tables'].values())}; search logs: "
           f"`{_rel(os.path.abspath(os.path.join(args.out_dir, 'runs')))}/`; subset facts: "
           f"`{_rel(os.path.abspath(os.path.join(args.out_dir, 'subset.json')))}`. Table command: `{meta['command']}`."]
    out = {"subset": meta, "datasets": {ds: {"space": docs[ds]["space"], "seeds": docs[ds]["seeds"],
                                             "budgets": docs[ds]["budgets"], "commands": docs[ds]["commands"],
                                             "load_average_at_end": docs[ds]["load_average_at_end"],
                                             "factor_rows": list(rows[ds].values()),
                                             "full_space_synflow_issue6": list(full.get(ds, {}).values())}
                                        for ds in DATASETS}}
    with open(os.path.join(args.report_dir, "search_ensemble.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    with open(os.path.join(args.report_dir, "search_ensemble.md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))


def _versus_lines(versus: Mapping[str, Any]) -> list[str]:
    """The report's sentence on how the store's member scores relate to the selection's."""
    if not versus:
        return []
    parts = []
    for m, c in versus.items():
        sb, tb = c["selection_batch"] or {}, c["store_batch"] or {}
        how = ("the selection's configuration" if c["same_config"]
               else f"NOT the selection's configuration (batch {sb.get('size')} there, {tb.get('size')} here)")
        rel = c["max_rel_diff_on_shared"]
        parts.append(f"{m}: {how}; on the {c['finite_on_both']} architectures both score, max relative "
                     f"difference {rel:.2g}, ρ {c['spearman_on_shared']:.4f}" if rel is not None
                     else f"{m}: {how}; no architecture scored by both")
    return ["Member scores against those the ensemble was selected on: " + "; ".join(parts) + ".", ""]


def _styles(variants: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Baselines black; a variant's synflow and ensemble lines share a colour, the ensemble dashed."""
    colours = {label: f"C{k}" for k, label in enumerate(PROXIED)}
    out: dict[str, dict[str, Any]] = {}
    for label in variants:
        base, _, proxy = label.partition(" [")
        if base in colours:
            out[label] = {"color": colours[base], "linestyle": "--" if proxy.startswith("ensemble") else "-"}
        else:
            out[label] = {"color": "black", "linewidth": 1.2}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=OUT_DIR, help="tables, search logs and subset.json")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tables", help="the subset's ensemble and synflow tables")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", help="zcfast store with a correlate run of each member")
    src.add_argument("--scores", nargs="+", help="score CSVs (joined on index) instead of a store")
    t.add_argument("--selection", default=SELECTION)
    r = sub.add_parser("run", help="the searches (search_experiments run --subset)")
    r.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    r.add_argument("--proxies", nargs="+", default=list(PROXIES), choices=PROXIES)
    r.add_argument("--seeds", type=int, default=30)
    p = sub.add_parser("report", help="side-by-side factor table (.md, .json) and plots")
    p.add_argument("--report-dir", default=RESULTS,
                   help="where search_ensemble.md, .json and search_ensemble_<dataset>.png go")
    args = ap.parse_args(argv)
    {"tables": cmd_tables, "run": cmd_run, "report": cmd_report}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
