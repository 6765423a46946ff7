"""PNG plots of the correlation study (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["scatter_grid", "rho_bars", "display_values"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def display_values(s: np.ndarray) -> tuple[np.ndarray, str]:
    """Scores as plotted: ``sign(x)·log10(1+|x|)`` when they span more than 4 decades (synflow
    reaches 1e30–1e60), else unchanged. Returns (``[n]`` values, axis label suffix)."""
    s = np.asarray(s, dtype=np.float64)
    fin = s[np.isfinite(s)]
    if fin.size and np.nanmax(np.abs(fin)) > 1e4:
        return np.sign(s) * np.log10(1.0 + np.abs(s)), " (sign·log10(1+|x|))"
    return s, ""


def scatter_grid(scores: Mapping[str, np.ndarray], acc: np.ndarray, path: str | Path, *,
                 title: str = "", rho: Mapping[str, float | None] | None = None) -> Path:
    """One panel per proxy: score ``[n]`` (x) against accuracy ``[n]`` (y). NaN points are left
    out and counted in the panel title. Returns the PNG path."""
    plt = _pyplot()
    names = list(scores)
    cols = min(3, max(1, len(names)))
    rows = int(math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    acc = np.asarray(acc, dtype=np.float64)
    for k, p in enumerate(names):
        ax = axes[k // cols][k % cols]
        v, suffix = display_values(scores[p])
        ok = np.isfinite(v) & np.isfinite(acc)
        ax.scatter(v[ok], acc[ok], s=4, alpha=0.4, linewidths=0)
        r = (rho or {}).get(p)
        nan = int((~np.isfinite(v) & np.isfinite(acc)).sum())
        head = p + (f"  ρ={r:.3f}" if r is not None else "") + (f"  ({nan} non-finite)" if nan else "")
        ax.set_title(head, fontsize=10)
        ax.set_xlabel("score" + suffix, fontsize=8)
        ax.set_ylabel("accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rho_bars(summary: Mapping[str, Any], path: str | Path) -> Path:
    """Grouped bars: our |Spearman ρ| per proxy beside the paper's (plus vote agreement and the
    reduced-training baseline when present). Returns the PNG path."""
    plt = _pyplot()
    labels, ours, paper = [], [], []
    for p, e in summary["proxies"].items():
        labels.append(p)
        ours.append(e["abs_spearman"] if e["abs_spearman"] is not None else np.nan)
        paper.append(e["paper_abs_spearman"] if e["paper_abs_spearman"] is not None else np.nan)
    v = summary.get("vote")
    if v and v.get("agreement") is not None:
        labels.append("vote (pairs)")
        ours.append(v["agreement"])
        paper.append(v["paper"] if v["paper"] is not None else np.nan)
    for label, b in summary.get("baselines", {}).items():
        if b.get("spearman") is not None:
            labels.append(label)
            ours.append(abs(b["spearman"]))
            paper.append(np.nan)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 3.8))
    ax.bar(x - 0.2, ours, 0.4, label=f"zcfast (n={summary.get('n', '?')})")
    ax.bar(x + 0.2, paper, 0.4, label="paper (all 15,625)")
    for xi, val in zip(x, ours):
        if not np.isnan(val):
            ax.text(xi - 0.2, val + 0.01, f"{val:.2f}", ha="center", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=20, fontsize=8)
    ax.set_ylabel("|Spearman ρ|  (vote: agreement)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"{summary.get('space', '')} / {summary.get('dataset', '')}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
