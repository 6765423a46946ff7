"""|Spearman ρ| of every proxy in a `zcfast correlate` output under the protocols the published
anchors use, from the run's ``scores.csv`` and the shipped NAS-Bench-201 table.

The protocol alone moves ρ by up to ~0.09 (which entries, which accuracy column, how NaN
scores are treated), so each anchor is compared under its own:

- ``all/valid``: every sampled benchmark entry (isomorphic cells scored separately) against
  ``cifar10_val_nbsuitezero`` (NAS-Bench-Suite-Zero's validation accuracy; correlate's default);
- ``nbsz-cells/valid``: only the sampled entries among the 9,445 cells NAS-Bench-Suite-Zero
  scored (those with an ImageNet16-120 value in its data), against the same column: the
  NAS-Bench-Suite-Zero anchors' protocol (it used batch 32; say the batch you ran);
- ``all/test``: every sampled entry against ``cifar10_test_nats`` (200-epoch test accuracy).

Non-finite scores are omitted (``--nan omit``, counted) or ranked last (``--nan worst``, as
NASLib maps NaN/inf to -1e8, the NAS-Bench-Suite-Zero protocol). Each ρ carries a bootstrap 95% interval (1,000 resamples of
the architectures, seed 0).

    python bench/correlation_protocols.py RUN_DIR [--nan omit|worst] [--json OUT.json]

Prints a markdown table (proxy, n, ρ per protocol with interval) and writes JSON when asked.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from zcfast import metrics
from zcfast.spaces import nb201

PROTOCOLS = (("all/valid", False, "cifar10_val_nbsuitezero"),
             ("nbsz-cells/valid", True, "cifar10_val_nbsuitezero"),
             ("all/test", False, "cifar10_test_nats"))
#: published anchors (|ρ|, NB201 CIFAR-10) with their protocol: /work/shared/docs/modern-proxies.md
ANCHORS = {"nwot": (0.792, "nbsz-cells/valid"), "epe_nas": (0.787, "nbsz-cells/valid"),
           "zen": (0.101, "nbsz-cells/valid"), "l2_norm": (0.720, "nbsz-cells/valid"),
           "params": (0.747, "nbsz-cells/valid"), "flops": (0.714, "nbsz-cells/valid"),
           "jacob_cov": (0.818, "nbsz-cells/valid"), "zico": (0.802, "VKDNW re-run, official code")}
META = {"index", "arch_str", "key", "accuracy", "train_12ep_acc", "train_12ep_cost", "seconds"}


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def bootstrap_ci(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of Spearman ρ over ``n_boot`` resamples of the pairs (x [n], y [n]):
    the one definition, :func:`zcfast.metrics.bootstrap_ci`."""
    return metrics.bootstrap_ci(x, y, "spearman", n_boot=n_boot, seed=seed)


def analyse(run_dir: Path, nan: str = "omit") -> dict:
    """``{proxy: {protocol: {n, n_nan, rho, abs_rho, ci}}}`` for the run in ``run_dir``."""
    path = run_dir / "scores.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (give the --out folder of a zcfast correlate run)")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    proxies = [c for c in rows[0] if c not in META and not c.endswith("_error")]
    table = nb201.table()
    cells = {i for i, v in enumerate(table["imagenet16_120_val_nbsuitezero"]) if not math.isnan(float(v))}
    out: dict = {}
    for p in proxies:
        out[p] = {}
        for name, only_cells, col in PROTOCOLS:
            xs, ys, nan_count = [], [], 0
            for r in rows:
                i = int(r["index"])
                if only_cells and i not in cells:
                    continue
                v = _float(r[p])
                if not math.isfinite(v):
                    nan_count += 1
                    if nan == "omit":
                        continue
                    v = -math.inf
                xs.append(v)
                ys.append(float(table[col][i]))
            x, y = np.array(xs), np.array(ys)
            if nan == "worst" and np.isinf(x).any():
                finite = x[np.isfinite(x)]
                x[~np.isfinite(x)] = (finite.min() - 1.0) if finite.size else 0.0
            rho = float(stats.spearmanr(x, y).statistic) if len(x) > 2 else math.nan
            ci = bootstrap_ci(x, y) if len(x) > 2 else (math.nan, math.nan)
            out[p][name] = {"n": len(x), "n_nan": nan_count, "rho": rho, "abs_rho": abs(rho), "ci95": ci, "column": col}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--nan", choices=("omit", "worst"), default="omit",
                    help="non-finite scores: omit them, or rank them last (NASLib / NAS-Bench-Suite-Zero)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    res = analyse(args.run_dir, args.nan)
    head = "| proxy | " + " | ".join(f"{n} (n) | ρ {n} [95% CI]" for n, _, _ in PROTOCOLS) + " | anchor |ρ| (protocol) |"
    print(head)
    print("|" + "---|" * (2 + 2 * len(PROTOCOLS)))
    for p, per in res.items():
        cells = []
        for n, _, _ in PROTOCOLS:
            d = per[n]
            cells += [f"{d['n']} ({d['n_nan']} NaN {'ranked last' if args.nan == 'worst' else 'omitted'})",
                      f"{d['rho']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"]
        a = ANCHORS.get(p)
        print(f"| {p} | " + " | ".join(cells) + f" | {f'{a[0]:.3f} ({a[1]})' if a else '-'} |")
    if args.json:
        args.json.write_text(json.dumps({"protocols": [p[0] for p in PROTOCOLS], "nan": args.nan, "anchors": ANCHORS,
                                         "proxies": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
