"""Shared helpers for zcfast's benchmark scripts: timing, machine description, result files.

Timing uses ``torch.utils.benchmark.Timer`` (which synchronises CUDA) and reports the median of
``blocked_autorange`` runs. Every result file records the machine, torch's thread count and the
load average at the time, because figures taken on a busy machine are not comparable with
figures from a quiet one.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Any, Callable

import torch
import torch.utils.benchmark as tbench

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def time_fn(fn: Callable[[], Any], min_run_time: float = 0.5) -> dict[str, float]:
    """Median seconds per call of ``fn`` (after a warm-up call), with the IQR and run count."""
    fn()
    m = tbench.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time)
    return {"median_s": float(m.median), "iqr_s": float(m.iqr), "runs": int(len(m.times)),
            "number_per_run": int(m.number_per_run)}


def time_rounds(fns: dict[str, Callable[[], Any]], rounds: int = 5,
                min_run_time: float = 0.2) -> dict[str, dict[str, Any]]:
    """Interleaved timing for a busy machine: ``rounds`` rounds, each timing every function once
    (median of a ``blocked_autorange`` of ``min_run_time`` s). Reports, per function, the best
    (lowest) round median as ``median_s`` -- the least-disturbed estimate when other processes
    compete for the cores -- and every round's median in ``round_medians_s``. Interleaving makes
    all functions see the same mix of quiet and busy moments, so their ratios stay fair.
    """
    out: dict[str, dict[str, Any]] = {name: {"round_medians_s": []} for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            m = tbench.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time)
            out[name]["round_medians_s"].append(float(m.median))
    for name in fns:
        meds = out[name]["round_medians_s"]
        out[name]["median_s"] = min(meds)
        out[name]["worst_round_median_s"] = max(meds)
    return out


def timed_median(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall seconds of ``repeats`` plain calls of ``fn`` (no warm-up, no CUDA sync: for
    whole proxy calls that take milliseconds or more) and the last call's result."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Where and under what load a figure was measured."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            info["mem_total_gib"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def command_line() -> str:
    """The command that produced a result (to re-run it on a quiet machine)."""
    return " ".join(shlex.quote(a) for a in ["python"] + sys.argv)


def write_results(name: str, payload: dict[str, Any], markdown: str, out_dir: str = RESULTS_DIR) -> tuple[str, str]:
    """Writes ``<out_dir>/<name>.json`` and ``<name>.md`` (atomically) and returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for ext, text in (("json", json.dumps(payload, indent=2, sort_keys=False) + "\n"), ("md", markdown)):
        path = os.path.join(out_dir, f"{name}.{ext}")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        paths.append(path)
    return paths[0], paths[1]


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
