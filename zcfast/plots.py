"""PNG plots of the correlation study and of searches (matplotlib, Agg backend: no display needed).

- :func:`scatter_grid`: each proxy's score against accuracy, one panel per proxy. The x axis is
  chosen by the span of the data (:func:`axis_scale`): logarithmic when the positive scores span
  :data:`DECADES` decades or more (exact zeros are then drawn on the left edge and counted),
  symmetric-log when such a span has negative values (grasp, jacob_cov), linear otherwise
  (grad_norm, snip, fisher, synflow all take a log axis on NB201). The y
  axis starts at the :data:`Y_QUANTILE` quantile of the accuracies, so the few ~10 %-accuracy
  networks do not squash the rest: those below are drawn as triangles on the bottom edge and
  counted in the panel (the caption says so).
- :func:`rho_bars`: |Spearman ρ| and |Kendall τ| per proxy with their bootstrap 95 % intervals,
  the paper's and the published anchors' |ρ| as markers; the pairwise vote on a panel of its own
  (its scale is agreement, not a correlation).
- :func:`best_so_far`: a search's best accuracy so far against the number of trained
  architectures, the mean over seeds with a 95 % interval, one line per variant.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["scatter_grid", "rho_bars", "display_values", "axis_scale", "y_limits", "best_so_far",
           "best_so_far_curve", "curve_band", "DECADES", "Y_QUANTILE"]

#: Span (decades, between the 1st and 99th percentile of the non-zero |score|) from which an
#: axis is logarithmic (symmetric-log with zeros or both signs).
DECADES: float = 2.0
#: Lower limit of a scatter's y axis: this quantile of the accuracies (lower points: on the edge).
Y_QUANTILE: float = 0.02


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def axis_scale(values: Sequence[float] | np.ndarray) -> tuple[str, dict[str, float]]:
    """The axis scale for values ``[n]``, by their span (non-finite values ignored).

    Returns ``("log", {})`` when no finite value is negative and the 1st..99th percentile of the
    non-zero ones spans at least :data:`DECADES` decades (zeros cannot sit on a log axis: the
    plots draw them on its left edge); ``("symlog", {"linthresh": t})`` when the non-zero
    |values| span that much and negative values occur (``t`` = the 1st percentile of the
    non-zero |values|: linear below it); ``("linear", {})`` otherwise.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    nz = np.abs(v[v != 0])
    if nz.size < 2:
        return "linear", {}
    lo, hi = np.percentile(nz, [1.0, 99.0])
    if lo <= 0 or math.log10(hi / lo) < DECADES:
        return "linear", {}
    if (v >= 0).all():
        return "log", {}
    return "symlog", {"linthresh": float(lo)}


def display_values(s: np.ndarray) -> tuple[np.ndarray, str]:
    """Scores transformed for an axis of linear scale: ``sign(x)·log10(1+|x|)`` when
    :func:`axis_scale` would choose a log or symlog axis, else unchanged. Returns (``[n]``
    values, axis label suffix). The plots here set the axis scale instead, so ticks show the
    scores themselves."""
    s = np.asarray(s, dtype=np.float64)
    if axis_scale(s)[0] != "linear":
        return np.sign(s) * np.log10(1.0 + np.abs(s)), " (sign·log10(1+|x|))"
    return s, ""


def y_limits(acc: Sequence[float] | np.ndarray) -> tuple[float | None, float | None]:
    """The scatter's y range for accuracies ``[n]``: from the :data:`Y_QUANTILE` quantile to the
    maximum, each widened by 4 % of that span; ``(None, None)`` with fewer than 2 finite values."""
    a = np.asarray(acc, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size < 2:
        return None, None
    q, top = float(np.quantile(a, Y_QUANTILE)), float(a.max())
    pad = 0.04 * max(top - q, 1e-9)
    return q - pad, top + pad


def _marker_size(n: int) -> float:
    return 14.0 if n <= 2000 else 7.0 if n <= 8000 else 4.0


def scatter_grid(scores: Mapping[str, np.ndarray], acc: np.ndarray, path: str | Path, *,
                 title: str = "", rho: Mapping[str, float | None] | None = None) -> Path:
    """One panel per proxy: score ``[n]`` (x) against accuracy ``[n]`` (y), axes chosen by the
    data (module docstring). Non-finite scores are left out and counted in the panel title.
    Returns the PNG path."""
    plt = _pyplot()
    names = list(scores)
    cols = min(3, max(1, len(names)))
    rows = int(math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows + 0.5), squeeze=False)
    acc = np.asarray(acc, dtype=np.float64)
    y_lo, y_hi = y_limits(acc)
    clipped_any = zeros_any = False
    for k, p in enumerate(names):
        ax = axes[k // cols][k % cols]
        v = np.asarray(scores[p], dtype=np.float64)
        ok = np.isfinite(v) & np.isfinite(acc)
        scale, kw = axis_scale(v[ok])
        low = ok & (acc < y_lo) if y_lo is not None else np.zeros_like(ok)
        zero = ok & (v == 0) if scale == "log" else np.zeros_like(ok)
        x = v.copy()
        x_edge = None
        if zero.any():
            x_edge = float(v[ok & (v > 0)].min()) / 10 ** 0.5
            x[zero] = x_edge
            zeros_any = True
        y = np.where(low, y_lo if y_lo is not None else 0.0, acc)
        high = ok & ~low & ~zero
        size = _marker_size(int(ok.sum()))
        ax.scatter(x[high], y[high], s=size, alpha=0.45, linewidths=0, color="tab:blue")
        edge = ok & (low | zero)
        if edge.any():
            clipped_any = clipped_any or bool(low.any())
            ax.scatter(x[edge & ~zero], y[edge & ~zero], s=size * 1.5, marker="v", alpha=0.6,
                       linewidths=0, color="tab:red", clip_on=False, zorder=3)
            ax.scatter(x[zero], y[zero], s=size * 1.5, marker="<", alpha=0.6,
                       linewidths=0, color="tab:red", clip_on=False, zorder=3)
        if scale == "symlog":
            ax.set_xscale("symlog", linthresh=kw["linthresh"])
        elif scale == "log":
            ax.set_xscale("log")
            if x_edge is not None:
                ax.set_xlim(left=x_edge)
        if y_lo is not None:
            ax.set_ylim(y_lo, y_hi)
        r = (rho or {}).get(p)
        nan = int((~np.isfinite(v) & np.isfinite(acc)).sum())
        head = p + (f"  ρ={r:+.3f}" if r is not None else "") + (f"  ({nan} non-finite)" if nan else "")
        ax.set_title(head, fontsize=10)
        sub = (f"; {int(low.sum())} below" if low.any() else "") + (f"; {int(zero.sum())} zeros" if zero.any() else "")
        ax.set_xlabel(f"score ({scale} axis{sub})", fontsize=8)
        ax.set_ylabel("accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25, linewidth=0.5)
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].axis("off")
    caption = (f"x axis: log/symlog when the scores span ≥ {DECADES:g} decades (1st-99th percentile), else linear. "
               f"\ny axis from the {100 * Y_QUANTILE:g}% quantile of accuracy"
               + ("; lower networks drawn as red ▼ on the bottom edge" if clipped_any else "")
               + ("; zero scores (log axis) as red ◄ on the left edge" if zeros_any else "") + ".")
    fig.suptitle((title + "\n" if title else "") + caption, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _err(val: float, ci: Sequence[float] | None) -> tuple[float, float]:
    if ci is None or not np.isfinite(val):
        return 0.0, 0.0
    return max(0.0, val - ci[0]), max(0.0, ci[1] - val)


def rho_bars(summary: Mapping[str, Any], path: str | Path) -> Path:
    """|Spearman ρ| and |Kendall τ| per proxy (and reduced-training baseline) with their
    bootstrap 95 % intervals as error bars, the paper's |ρ| (black bar marker) and the
    published anchors' (diamond) beside them; the vote agreement on a panel of its own.
    Returns the PNG path."""
    plt = _pyplot()
    labels: list[str] = []
    rho, rho_ci, tau, tau_ci, paper, anchor = [], [], [], [], [], []
    for p, e in summary["proxies"].items():
        labels.append(p)
        r = e.get("abs_spearman")
        rho.append(np.nan if r is None else r)
        rho_ci.append(e.get("abs_spearman_ci95"))
        t = e.get("kendall")
        tau.append(np.nan if t is None else abs(t))
        tc = e.get("kendall_ci95")
        tau_ci.append(None if tc is None else sorted([abs(tc[0]), abs(tc[1])]) if tc[0] * tc[1] > 0
                      else [0.0, max(abs(tc[0]), abs(tc[1]))])
        paper.append(np.nan if e.get("paper_abs_spearman") is None else e["paper_abs_spearman"])
        anchor.append(np.nan if e.get("anchor") is None else e["anchor"])
    for label, b in summary.get("baselines", {}).items():
        if b.get("spearman") is None:
            continue
        labels.append(label)
        rho.append(abs(b["spearman"]))
        ci = b.get("spearman_ci95")
        rho_ci.append(None if ci is None else sorted([abs(ci[0]), abs(ci[1])]))
        tau.append(np.nan if b.get("kendall") is None else abs(b["kendall"]))
        tc = b.get("kendall_ci95")
        tau_ci.append(None if tc is None else sorted([abs(tc[0]), abs(tc[1])]))
        paper.append(np.nan)
        anchor.append(np.nan)
    v = summary.get("vote")
    has_vote = bool(v and v.get("agreement") is not None)
    widths = [max(4.0, 0.75 * len(labels) + 1.5)] + ([1.6] if has_vote else [])
    fig, axes = plt.subplots(1, len(widths), figsize=(sum(widths) + 0.6, 4.2), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    ax = axes[0][0]
    x = np.arange(len(labels))
    rho_a, tau_a = np.array(rho, dtype=float), np.array(tau, dtype=float)
    re = np.array([_err(a, c) for a, c in zip(rho_a, rho_ci)]).T.reshape(2, -1)
    te = np.array([_err(a, c) for a, c in zip(tau_a, tau_ci)]).T.reshape(2, -1)
    ax.bar(x - 0.2, rho_a, 0.4, yerr=re, capsize=2, label=f"|Spearman ρ| (n={summary.get('n', '?')})",
           color="tab:blue", error_kw={"linewidth": 0.8})
    ax.bar(x + 0.2, tau_a, 0.4, yerr=te, capsize=2, label="|Kendall τ|", color="tab:orange",
           error_kw={"linewidth": 0.8})
    if np.isfinite(paper).any():
        ax.scatter(x - 0.2, paper, marker="_", s=260, color="black", linewidths=2, zorder=4,
                   label="paper |ρ| (all 15,625)")
    if np.isfinite(anchor).any():
        ax.scatter(x - 0.2, anchor, marker="D", s=22, color="black", zorder=4, label="published anchor |ρ|")
    for xi, val in zip(x, rho_a):
        if np.isfinite(val):
            ax.text(xi - 0.2, 0.02, f"{val:.2f}", ha="center", va="bottom", fontsize=6, color="white",
                    rotation=90)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("rank correlation with accuracy")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3, linewidth=0.5)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    ax.set_title(f"{summary.get('space', '')} / {summary.get('dataset', '')}: error bars = bootstrap 95% "
                 "interval", fontsize=9)
    if has_vote:
        vx = axes[0][1]
        vals = [v["agreement"], v.get("paper") if v.get("paper") is not None else np.nan]
        vx.bar([0, 1], vals, 0.6, color=["tab:green", "tab:gray"])
        for xi, val in zip([0, 1], vals):
            if np.isfinite(val):
                vx.text(xi, val + 0.005, f"{val:.3f}", ha="center", fontsize=7)
        vx.set_xticks([0, 1])
        vx.set_xticklabels(["zcfast", "paper"], fontsize=8)
        vx.set_ylim(0.5, 1.0)
        vx.set_ylabel("pairs ordered right (0.5 = chance)", fontsize=8)
        vx.set_title("pairwise vote:\n" + ", ".join(v.get("proxies", [])), fontsize=8)
        vx.grid(axis="y", alpha=0.3, linewidth=0.5)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def best_so_far_curve(accuracies: Sequence[float | None], budget: int | None = None) -> np.ndarray:
    """Best accuracy after each trained architecture: ``[budget]`` float64 (NaN before the
    first successful training; a failed training, NaN or None, changes nothing; a run that
    stopped early keeps its last best up to ``budget``)."""
    a = np.array([np.nan if v is None else float(v) for v in accuracies], dtype=np.float64)
    n = a.shape[0] if budget is None else int(budget)
    out = np.full(n, np.nan)
    best = np.nan
    for i in range(n):
        if i < a.shape[0] and np.isfinite(a[i]) and not (a[i] <= best):
            best = a[i]
        out[i] = best
    return out


def curve_band(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds of ``[seeds, steps]`` best-so-far curves and its 95 % interval
    (mean ± t₀.₉₇₅(k−1)·sd/√k over the k seeds with a value at that step; no interval for one
    seed). Returns ``(mean, low, high, k)``, each ``[steps]``."""
    from scipy import stats

    c = np.asarray(curves, dtype=np.float64)
    k = np.isfinite(c).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(c, axis=0)
            sd = np.nanstd(c, axis=0, ddof=1)
        half = np.where(k > 1, stats.t.ppf(0.975, np.maximum(k - 1, 1)) * sd / np.sqrt(np.maximum(k, 1)), np.nan)
    return mean, mean - half, mean + half, k


def best_so_far(curves: Mapping[str, np.ndarray], path: str | Path, *, title: str = "",
                ylabel: str = "best accuracy so far (%)") -> Path:
    """One line per variant: the mean over seeds of its ``[seeds, budget]`` best-so-far
    curves (:func:`best_so_far_curve`) with a shaded 95 % interval (:func:`curve_band`);
    colours and line styles differ, so no variant hides another. Returns the PNG path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = ["-", "--", "-.", ":"]
    cmap = plt.get_cmap("tab10")
    for j, (label, c) in enumerate(curves.items()):
        c = np.atleast_2d(np.asarray(c, dtype=np.float64))
        mean, lo, hi, k = curve_band(c)
        steps = np.arange(1, mean.shape[0] + 1)
        color = cmap(j % 10)
        final = mean[-1] if mean.size and np.isfinite(mean[-1]) else float("nan")
        ax.plot(steps, mean, styles[j % len(styles)], color=color, linewidth=1.6,
                label=f"{label} ({c.shape[0]} seed{'s' if c.shape[0] != 1 else ''}; final {final:.2f})")
        if np.isfinite(lo).any():
            ax.fill_between(steps, lo, hi, color=color, alpha=0.18, linewidth=0)
    ax.set_xlabel("architectures trained")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title((title + "\n" if title else "") + "mean over seeds, band = 95% interval of the mean", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
