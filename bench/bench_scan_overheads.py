"""Where a scan's time goes: per-candidate overheads of ``zcfast scan`` against bare scoring.

One run measures, on the scan's own candidates (the first ``--n`` distinct NB201 keys of the
stream ``sample:0``, what ``zcfast scan --space nb201 --n N`` scores into an empty store):

* ``score_arch`` and ``score_batch`` (chunks of 8, what a worker runs) in this process, one
  torch thread: the bare scoring rate, for scale (wall and CPU time);
* in-process costs per candidate: network construction (the batched scorer's seeded weights,
  and for comparison the seeded ``space.build``), key + encode, the
  dedup look-up (``has_keys`` per block of 256), store writes (``put_many`` per 256 rows) and
  pickling a chunk's tasks and rows both ways (the IPC payload);
* the command itself, each in a fresh process as a user runs it (``zcfast scan ... --quiet``):
  with the instant ``hash_scorer`` (everything but scoring: worker start-up, IPC, dedup,
  store) and with the real scorer, for each start method (``--start-methods``) and serially;
* with ``forkserver`` among the methods, a scan in this process while the server is already
  running (a second scan in one process: start-up hidden, what a warm server gives), and the
  A/B of the CLI's early forkserver start: the same commands with it turned off, so the pool
  starts the server after the parent's own ``import torch`` (``--no-late-server`` skips them);
* with synflow among the proxies, the A/B of the batched backend's float32 synflow pass: the
  in-process ``score_batch`` rate and the real scan again with ``ZCFAST_BATCHED_SYNFLOW=float64``
  (the float64 pass it replaced; ``--no-synflow-ab`` skips them), whose stored values must equal
  the others within ``zcfast.batched.SYNFLOW_FP32_RTOL``.

Values are checked before any figure is written: every real-scorer run must store the same
values (bit-identical across backends and start methods), and the first 3 candidates must
equal ``score_arch`` within ``--check-rtol``.

Usage::

    python bench/bench_scan_overheads.py                       # the committed figures
    python bench/bench_scan_overheads.py --n 100 --n-single 20 --start-methods forkserver

Writes bench/results/<tag>.json and .md (default tag ``scan_overheads``).
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402

import zcfast  # noqa: E402
from common import command_line, machine_info, markdown_table, write_results  # noqa: E402
from zcfast.batched import score_batch  # noqa: E402
from zcfast.data import paper_batch  # noqa: E402
from zcfast.scoring import score_arch  # noqa: E402
from zcfast.store import ResultStore, ScoreRow  # noqa: E402

try:  # issue #12 moves the per-architecture seed to its own module
    from zcfast.seeding import arch_seed  # noqa: E402
except ImportError:
    from zcfast.proxies import arch_seed  # noqa: E402

LATE_INSTANT = "instant scorer, local, forkserver started by the pool (the CLI's early start off)"
LATE_REAL = "real scorer, local, forkserver started by the pool (the CLI's early start off)"
F64_REAL = "real scorer, local, float64 synflow pass (ZCFAST_BATCHED_SYNFLOW=float64, the pass before)"
CHUNK = 8      # the scan's default chunk with the batched scorer
BLOCK = 256    # the scan's dedup look-up block and default commit size


def candidates(space: Any, n: int, sample_seed: int = 0) -> list[Any]:
    """The first ``n`` distinct keys of the scan's stream ``sample:<sample_seed>``."""
    rng, seen, out = random.Random(sample_seed), set(), []
    while len(out) < n:
        a = space.sample(rng)
        k = space.key(a)
        if k not in seen:
            seen.add(k)
            out.append(a)
    return out


def _timed(fn: Any) -> tuple[float, float, Any]:
    t, c = time.perf_counter(), time.process_time()
    res = fn()
    return time.perf_counter() - t, time.process_time() - c, res


def in_process(space: Any, archs: list[Any], proxies: list[str], n_single: int,
               synflow_ab: bool = False) -> dict[str, Any]:
    """Bare scoring rates (per second, per CPU-second) and the parent-side costs per candidate (s)."""
    x, y = paper_batch("cifar10", 64, 42)
    out: dict[str, Any] = {}
    single = archs[:n_single]
    torch.set_num_threads(1)
    score_arch(space, single[0], x, y, proxies)  # warm-up
    wall, cpu, _ = _timed(lambda: [score_arch(space, a, x, y, proxies, detailed=True) for a in single])
    out["score_arch_per_s"], out["score_arch_per_cpu_s"] = len(single) / wall, len(single) / cpu
    wall, cpu, _ = _timed(lambda: [score_batch(space, single[i:i + CHUNK], x, y, proxies, detailed=True)
                                   for i in range(0, len(single), CHUNK)])
    out["score_batch_per_s"], out["score_batch_per_cpu_s"] = len(single) / wall, len(single) / cpu
    if synflow_ab:   # the float64 synflow pass, as before the float32 one
        os.environ["ZCFAST_BATCHED_SYNFLOW"] = "float64"
        try:
            wall, cpu, _ = _timed(lambda: [score_batch(space, single[i:i + CHUNK], x, y, proxies, detailed=True)
                                           for i in range(0, len(single), CHUNK)])
        finally:
            del os.environ["ZCFAST_BATCHED_SYNFLOW"]
        out["score_batch_f64_per_s"], out["score_batch_f64_per_cpu_s"] = len(single) / wall, len(single) / cpu

    from zcfast.batched.nb201 import fast_weights

    def weights_all() -> None:
        for a in single:
            fast_weights(tuple(a), 10, generator=torch.Generator().manual_seed(arch_seed(42, space.key(a))))

    def build_all() -> None:
        for a in single:
            torch.manual_seed(arch_seed(42, space.key(a)))
            space.build(a, num_classes=10)
    wall, _, _ = _timed(weights_all)
    costs = {"seeded weights (`fast_weights`: what the scan's scorer constructs)": wall / len(single)}
    wall, _, _ = _timed(build_all)
    costs["seeded `space.build` (nn.Modules: the general engine's; the scan's scorer skips it)"] = wall / len(single)
    wall, _, _ = _timed(lambda: [(space.key(a), space.encode(a)) for a in archs])
    costs["key + encode"] = wall / len(archs)
    rows = [ScoreRow(space.key(a), space.encode(a), {p: 0.5 for p in proxies}, None, 0.01) for a in archs]
    with tempfile.TemporaryDirectory() as tmp, ResultStore(os.path.join(tmp, "s.sqlite")) as st:
        rid = st.run_id({"bench": "scan_overheads"})
        wall, _, _ = _timed(lambda: [st.put_many(rid, rows[i:i + BLOCK]) for i in range(0, len(rows), BLOCK)])
        costs[f"store write (put_many per {BLOCK})"] = wall / len(rows)
        keys = [r.arch_key for r in rows]
        wall, _, _ = _timed(lambda: [st.has_keys(rid, keys[i:i + BLOCK]) for i in range(0, len(keys), BLOCK)])
        costs[f"dedup look-up (has_keys per {BLOCK})"] = wall / len(keys)
    tasks = [(space.key(a), space.encode(a), a) for a in archs[:CHUNK]]
    res_rows = rows[:CHUNK]
    reps = 200
    wall, _, _ = _timed(lambda: [pickle.loads(pickle.dumps(tasks)) for _ in range(reps)])
    wall2, _, _ = _timed(lambda: [pickle.loads(pickle.dumps(res_rows)) for _ in range(reps)])
    costs[f"pickling (a chunk of {CHUNK} tasks + its rows)"] = (wall + wall2) / reps / CHUNK
    out["ipc_bytes_per_chunk"] = len(pickle.dumps(tasks)) + len(pickle.dumps(res_rows))
    out["costs_s"] = costs
    return out


#: ``zcfast scan`` as before the CLI started the forkserver early: the pool starts it (A/B only)
_LATE_SERVER = ("import sys, zcfast.commands.scan as c; c._start_workers_early = lambda args: None; "
                "from zcfast.cli import main; sys.exit(main(sys.argv[1:]))")


def run_cli(n: int, proxies: str, workers: int, backend: str, method: str | None, scorer: str | None,
            store: str, early: bool = True, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """``zcfast scan`` in a fresh process; the scan's own seconds and the command's wall time.
    ``early=False``: the command with its early forkserver start turned off (:data:`_LATE_SERVER`)."""
    head = [sys.executable, "-m", "zcfast"] if early else [sys.executable, "-c", _LATE_SERVER]
    cmd = head + ["scan", "--space", "nb201", "--proxies", proxies, "--n", str(n),
                  "--store", store, "--quiet", "--backend", backend]
    if backend == "local":
        cmd += ["--workers", str(workers)]
    if scorer:
        cmd += ["--scorer", scorer]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if method:
        env["ZCFAST_START_METHOD"] = method
    env.update(extra_env or {})
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    m = re.search(r"in ([0-9.]+) s, ([0-9.]+) arch/s", done.stdout + done.stderr)
    if m is None:
        raise SystemExit(f"cannot read the scan's rate from: {done.stdout.strip()[-300:]}")
    secs = float(m.group(1))
    return {"scan_s": secs, "scan_per_s": n / secs, "command_wall_s": wall, "load_start": load0,
            "load_end": os.getloadavg()[0],
            "command": "zcfast " + " ".join(cmd[len(head):]).replace(store, "S.sqlite")
            + (f"  (ZCFAST_START_METHOD={method})" if method else "")
            + ("" if early else "  (early forkserver start turned off: the pool starts the server)")
            + "".join(f"  ({k}={v})" for k, v in (extra_env or {}).items())}


def stored_values(store: str) -> dict[str, dict[str, float]]:
    with ResultStore(store, readonly=True) as st:
        (rid,) = st.runs()
        return {r.arch_key: r.values for r in st.rows(rid)}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def check(space: Any, runs: dict[str, str], archs: list[Any], proxies: list[str], rtol: float) -> str:
    """All real-scorer stores hold identical values; the first 3 equal score_arch within rtol."""
    vals = {name: stored_values(path) for name, path in runs.items()}
    names = list(vals)
    ref = vals[names[0]]
    for name in names[1:]:
        if set(vals[name]) != set(ref):
            raise SystemExit(f"{name} stored other candidates than {names[0]}")
        for k, v in ref.items():
            if not all(_same(v[p], vals[name][k][p]) for p in proxies):
                raise SystemExit(f"{name}: {k} = {vals[name][k]} but {names[0]} stored {v}; not reporting")
    x, y = paper_batch("cifar10", 64, 42)
    worst = 0.0
    for a in archs[:3]:
        want = score_arch(space, a, x, y, proxies)
        got = ref[space.key(a)]
        for p in proxies:
            err = abs(got[p] - want[p]) / max(abs(want[p]), 1e-30)
            if not err <= rtol:
                raise SystemExit(f"stored {p} of {space.encode(a)} = {got[p]} but score_arch gives {want[p]}")
            worst = max(worst, err)
    return (f"{len(ref)} candidates, runs {', '.join(names)} bit-identical; first 3 against score_arch: "
            f"largest relative difference {worst:.1e} (rtol {rtol})")


def check_f64(real: dict[str, str], f64_store: str, proxies: list[str]) -> str:
    """The float64-synflow store equals the (float32-pass) stores within SYNFLOW_FP32_RTOL."""
    from zcfast.batched import SYNFLOW_FP32_RTOL
    ref = stored_values(next(iter(real.values())))
    got = stored_values(f64_store)
    if set(got) != set(ref):
        raise SystemExit("the float64-synflow run stored other candidates")
    worst = 0.0
    for k, v in ref.items():
        for p in proxies:
            a, b = v[p], got[k][p]
            if _same(a, b):
                continue
            err = abs(a - b) / max(abs(b), 1e-300)
            if not err <= SYNFLOW_FP32_RTOL:
                raise SystemExit(f"{k}: {p} = {a} (float32 pass) but {b} with the float64 pass; not reporting")
            worst = max(worst, err)
    return (f"the float64-synflow run equals them within {SYNFLOW_FP32_RTOL:g} (largest relative "
            f"difference {worst:.1e})")


def table(res: dict[str, Any]) -> str:
    ip = res["in_process"]
    n, w = res["n"], res["workers"]
    lines = [f"NB201, {res['proxies']}, n = {n} distinct candidates, {w} workers; "
             f"{res['machine']['logical_cpus']} logical CPUs, load average "
             f"{res['load_start']:.2f} at start, {res['load_end']:.2f} at end ({res['machine']['date_utc']} UTC).", "",
             f"Bare scoring in one process, one thread (first {res['n_single']} candidates): `score_arch` "
             f"{ip['score_arch_per_s']:.1f}/s ({ip['score_arch_per_cpu_s']:.1f} per CPU-second), `score_batch` "
             f"in chunks of {CHUNK} {ip['score_batch_per_s']:.1f}/s ({ip['score_batch_per_cpu_s']:.1f} per CPU-second). "
             f"Ideal for {w} workers on an otherwise idle machine: {w * ip['score_batch_per_cpu_s']:.0f}/s."
             + (f" With the float64 synflow pass (`ZCFAST_BATCHED_SYNFLOW=float64`, the pass before): "
                f"`score_batch` {ip['score_batch_f64_per_s']:.1f}/s ({ip['score_batch_f64_per_cpu_s']:.1f} per "
                f"CPU-second); float32 pass / float64 pass CPU time "
                f"{ip['score_batch_f64_per_cpu_s'] / ip['score_batch_per_cpu_s']:.2f}."
                if "score_batch_f64_per_s" in ip else ""), "",
             "Costs per candidate, measured in this process (the two constructions are inside the workers' "
             "scoring; the rest is the parent's):", ""]
    lines.append(markdown_table(["cost", "per candidate", "share of one bare scoring (`score_batch`)"],
                                [[k, f"{v * 1e3:.3f} ms", f"{100 * v * ip['score_batch_per_s']:.1f} %"]
                                 for k, v in ip["costs_s"].items()]))
    lines += [f"IPC payload: {ip['ipc_bytes_per_chunk']} bytes per chunk of {CHUNK} (tasks + rows).", "",
              "The command (`zcfast scan`, fresh process each; scan rate = n / the scan's own seconds, "
              "as it prints; the command's wall time adds the parent's own start-up):", ""]
    rows = []
    for name, r in res["runs"].items():
        rows.append([name, f"{r['scan_s']:.2f} s", f"**{r['scan_per_s']:.1f}**", f"{r['command_wall_s']:.2f} s",
                     f"{r['load_start']:.1f}→{r['load_end']:.1f}"])
    lines.append(markdown_table(["run", "scan time", "arch/s", "command wall", "load"], rows))
    lines += ["Where the time goes (from the runs above): " + res["where"], "",
              "Values: " + res["check"], "", f"Command: `{res['command']}`", ""]
    for name, r in res["runs"].items():
        lines.append(f"- {name}: `{r['command']}`")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--n-single", type=int, default=64, help="candidates scored in process for the bare rates")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--proxies", default="synflow")
    p.add_argument("--start-methods", default="spawn,forkserver")
    p.add_argument("--check-rtol", type=float, default=1e-3)
    p.add_argument("--tag", default="scan_overheads")
    p.add_argument("--no-serial", action="store_true", help="skip the serial real-scorer run")
    p.add_argument("--no-synflow-ab", action="store_true",
                   help="skip the float64-synflow A/B (in-process rate and one more real scan)")
    p.add_argument("--no-late-server", action="store_true",
                   help="skip the A/B runs with the CLI's early forkserver start turned off")
    args = p.parse_args(argv)
    space = zcfast.spaces.get("nb201")
    proxies = args.proxies.split(",")
    archs = candidates(space, args.n)
    load_start = os.getloadavg()[0]
    print(f"# in-process costs (load {load_start:.2f})", file=sys.stderr, flush=True)
    synflow_ab = "synflow" in proxies and not args.no_synflow_ab
    ip = in_process(space, archs, proxies, args.n_single, synflow_ab)
    runs: dict[str, dict[str, Any]] = {}
    real: dict[str, str] = {}
    methods = [m for m in args.start_methods.split(",") if m]
    with tempfile.TemporaryDirectory() as tmp:
        late = "forkserver" in methods and not args.no_late_server
        plan = [(f"instant scorer, local, {m}", "local", m, "zcfast.parallel:hash_scorer", True, None)
                for m in methods]
        if late:
            plan += [(LATE_INSTANT, "local", "forkserver", "zcfast.parallel:hash_scorer", False, None)]
        if not args.no_serial:
            plan += [("real scorer, serial", "serial", None, None, True, None)]
        plan += [(f"real scorer, local, {m}", "local", m, None, True, None) for m in methods]
        if late:
            plan += [(LATE_REAL, "local", "forkserver", None, False, None)]
        if synflow_ab:
            plan += [(F64_REAL, "local", methods[-1] if methods else None, None, True,
                      {"ZCFAST_BATCHED_SYNFLOW": "float64"})]
        f64_store = None
        for i, (name, backend, method, scorer, early, extra_env) in enumerate(plan):
            store = os.path.join(tmp, f"run{i}.sqlite")
            print(f"# {name} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
            runs[name] = run_cli(args.n, args.proxies, args.workers, backend, method, scorer, store, early,
                                 extra_env)
            print(f"#   {runs[name]['scan_per_s']:.1f} arch/s", file=sys.stderr, flush=True)
            if name == F64_REAL:
                f64_store = store
            elif scorer is None:
                real[name] = store
        if "forkserver" in methods:  # the server already running: a second scan in one process
            name = "real scorer, local, forkserver already running (second scan in this process)"
            print(f"# {name} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
            warm = os.path.join(tmp, "warm.sqlite")
            zcfast.scan(space, proxies, 8, store=os.path.join(tmp, "warmup.sqlite"), backend="local",
                        workers=args.workers, start_method="forkserver", progress=False)
            load0 = os.getloadavg()[0]
            t = time.perf_counter()
            r = zcfast.scan(space, proxies, args.n, store=warm, backend="local", workers=args.workers,
                            start_method="forkserver", progress=False)
            runs[name] = {"scan_s": r.seconds, "scan_per_s": args.n / r.seconds,
                          "command_wall_s": time.perf_counter() - t, "load_start": load0,
                          "load_end": os.getloadavg()[0],
                          "command": f"zcfast.scan('nb201', {proxies!r}, {args.n}, backend='local', "
                                     f"workers={args.workers}, start_method='forkserver') after a first scan"}
            print(f"#   {runs[name]['scan_per_s']:.1f} arch/s", file=sys.stderr, flush=True)
            real[name] = warm
        checked = check(space, real, archs, proxies, args.check_rtol)
        if f64_store is not None:
            checked += "; " + check_f64(real, f64_store, proxies)
    parts = []
    for m in methods:
        inst = runs[f"instant scorer, local, {m}"]["scan_s"]
        tot = runs[f"real scorer, local, {m}"]["scan_s"]
        parts.append(f"{m}: everything but scoring (instant scorer) {inst:.2f} s of the real scan's {tot:.2f} s "
                     f"({100 * inst / tot:.0f} %)")
    if "forkserver" in methods and LATE_INSTANT in runs:
        for kind, late_name in (("instant", LATE_INSTANT), ("real", LATE_REAL)):
            a, b = runs[f"{kind} scorer, local, forkserver"], runs[late_name]
            parts.append(f"{kind} scorer, forkserver started early by the CLI vs by the pool: scan "
                         f"{a['scan_s']:.2f} s vs {b['scan_s']:.2f} s, command {a['command_wall_s']:.2f} s vs "
                         f"{b['command_wall_s']:.2f} s")
    if F64_REAL in runs and methods:
        a, b = runs[f"real scorer, local, {methods[-1]}"], runs[F64_REAL]
        parts.append(f"real scan with the float32 synflow pass vs the float64 pass: {a['scan_s']:.2f} s vs "
                     f"{b['scan_s']:.2f} s ({b['scan_s'] / a['scan_s']:.2f}x)")
    serial = runs.get("real scorer, serial", {}).get("scan_s")
    where = "; ".join(parts) + ("" if serial is None else f". Serial (no workers, no IPC) {serial:.2f} s") + (
        ". The parent's costs above (key, encode, dedup, store, pickling) are each far below 1 % of one "
        "scoring, so what the instant-scorer runs measure is worker start-up.")
    res = {"n": args.n, "n_single": args.n_single, "workers": args.workers, "proxies": args.proxies,
           "machine": machine_info(), "load_start": load_start, "load_end": os.getloadavg()[0],
           "in_process": ip, "runs": runs, "check": checked, "where": where, "command": command_line()}
    text = table(res)
    print(text)
    js, md = write_results(args.tag, res, text)
    print(f"# wrote {js} and {md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
