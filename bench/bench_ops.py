"""Benchmark of zcfast.ops against plain-PyTorch baselines (issue #2).

saliency("abs_prod") (the snip / synflow reduction) against
  (i)  the per-parameter loop ``sum((p * p.grad).abs().sum() for p in params)`` and
  (ii) the fastest ``torch._foreach_*`` composition found (several are timed),
on the parameters of the NAS-Bench-201 network with every edge nor_conv_3x3 (built by
``zcfast.spaces.get("nb201").build``: 291 tensors, 1.53 M parameters) and on the ResNet-50
parameter set (161 tensors, 25.6 M parameters), plus the time to read both buffers once at the
memory bandwidth measured here (the fastest pure read: torch.sum, torch.amax or a single-buffer
zcfast param_sq over an equally large buffer)
and the per-call overhead floor. Then fisher and jacob_cov against their references and against
the official-style computations. Results are checked equal before anything is timed.

    python bench/bench_ops.py                 # full run, writes bench/results/ops.{json,md}
    python bench/bench_ops.py --quick         # shorter timing windows
    python bench/bench_ops.py --device cuda   # on a GPU (needs the CUDA build)
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import zcfast.ops as ops  # noqa: E402
import zcfast.reference as ref  # noqa: E402
from common import (command_line, fmt_time, machine_info, markdown_table, time_rounds,  # noqa: E402
                    write_results)

ROUNDS = 5  # interleaved timing rounds (set by --rounds)

NB201_ALL_CONV3 = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                   "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")


# ---- parameter sets -----------------------------------------------------------------------------

def nb201_params(device: str) -> tuple[list[torch.Tensor], str]:
    """The real NB201 network (all edges nor_conv_3x3), its parameters with .grad set."""
    import zcfast.spaces as spaces

    space = spaces.get("nb201")
    torch.manual_seed(0)
    net = space.build(space.decode(NB201_ALL_CONV3)).to(device)
    params = [p for p in net.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    return params, "zcfast.spaces nb201, all edges nor_conv_3x3"


def resnet50_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of torchvision's ResNet-50 (25,557,032 parameters, 161 tensors)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,),
                       (planes, planes, 3, 3), (planes,), (planes,),
                       (planes * 4, planes, 1, 1), (planes * 4,), (planes * 4,)]
            if b == 0:
                shapes += [(planes * 4, inplanes, 1, 1), (planes * 4,), (planes * 4,)]
            inplanes = planes * 4
    shapes += [(1000, 2048), (1000,)]
    return shapes


def resnet50_params(device: str) -> tuple[list[torch.Tensor], str]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for s in resnet50_shapes():
        p = torch.randn(s, generator=gen).to(device).requires_grad_()
        p.grad = torch.randn(s, generator=gen).to(device)
        params.append(p)
    return params, "ResNet-50 parameter shapes"


# ---- saliency -----------------------------------------------------------------------------------

def loop_baseline(params: list[torch.Tensor]) -> torch.Tensor:
    return sum((p * p.grad).abs().sum() for p in params)


def foreach_candidates(params: list[torch.Tensor], grads: list[torch.Tensor]) -> dict[str, Callable[[], torch.Tensor]]:
    def mul_norm1():
        return torch.stack(torch._foreach_norm(torch._foreach_mul(params, grads), 1)).sum()

    def mul_abs_norm1():
        prods = torch._foreach_mul(params, grads)
        torch._foreach_abs_(prods)
        return torch.stack(torch._foreach_norm(prods, 1)).sum()

    def mul_abs_sum_loop():
        prods = torch._foreach_mul(params, grads)
        torch._foreach_abs_(prods)
        return torch.stack([t.sum() for t in prods]).sum()

    return {"_foreach_mul + _foreach_norm(ord=1)": mul_norm1,
            "_foreach_mul + _foreach_abs_ + _foreach_norm(ord=1)": mul_abs_norm1,
            "_foreach_mul + _foreach_abs_ + per-tensor sum": mul_abs_sum_loop}


def read_bandwidth(nbytes: int, device: str, min_time: float) -> dict[str, Any]:
    """Best read bandwidth (bytes/s) of simple full reductions over one buffer of nbytes."""
    buf = torch.randn(nbytes // 4, device=device)
    # Pure streaming reads of the same number of bytes; the fastest sets the achievable bandwidth.
    # (zcfast's param_sq over one buffer is a plain read-and-accumulate, like torch.sum.)
    t = time_rounds({"torch.sum": lambda: buf.sum(), "torch.amax": lambda: buf.amax(),
                     "zcfast param_sq": lambda: ops.saliency([buf], None, "param_sq")},
                    ROUNDS, min_time)
    best = min(((k, v["median_s"]) for k, v in t.items()), key=lambda kv: kv[1])
    del buf
    return {"bytes": nbytes, "via": best[0], "seconds": best[1], "bytes_per_s": nbytes / best[1]}


def bench_saliency(name: str, params: list[torch.Tensor], desc: str, device: str,
                   min_time: float, with_bandwidth: bool) -> dict[str, Any]:
    grads = [p.grad for p in params]
    numel = sum(p.numel() for p in params)
    with torch.no_grad():
        fused = lambda: ops.saliency(params, grads, "abs_prod")[1]  # noqa: E731
        want = float(ref.saliency(params, grads, "abs_prod")[1])
        got = float(fused())
        loop_v = float(loop_baseline(params))
        # The fused sum must match the float64 reference tightly; the baselines accumulate long
        # float32 sums (torch's per-tensor reductions), so they get a looser bound.
        if abs(got - want) > 1e-5 * abs(want):
            raise AssertionError(f"{name}: fused = {got} but reference = {want}")
        if abs(loop_v - want) > 1e-3 * abs(want):
            raise AssertionError(f"{name}: loop = {loop_v} but reference = {want}")
        cands = foreach_candidates(params, grads)
        for label, fn in cands.items():
            v = float(fn())
            if abs(v - want) > 1e-3 * abs(want):
                raise AssertionError(f"{name}: {label} = {v} but reference = {want}")
        fns = {"fused": fused, "loop": lambda: loop_baseline(params), **cands}
        t = time_rounds(fns, ROUNDS, min_time)
        t_fused, t_loop = t["fused"], t["loop"]
        t_foreach = {label: t[label] for label in cands}
    best_label = min(t_foreach, key=lambda k: t_foreach[k]["median_s"])
    out: dict[str, Any] = {
        "set": name, "description": desc, "tensors": len(params), "parameters": numel,
        "dtype": str(params[0].dtype), "device": device, "value": got,
        "fused": t_fused, "loop": t_loop, "foreach": t_foreach, "foreach_best": best_label,
        "speedup_vs_loop": t_loop["median_s"] / t_fused["median_s"],
        "speedup_vs_foreach": t_foreach[best_label]["median_s"] / t_fused["median_s"],
    }
    if with_bandwidth:
        nbytes = 2 * numel * params[0].element_size()
        bw = read_bandwidth(nbytes, device, min_time)
        out["bandwidth"] = bw
        out["read_both_once_s"] = nbytes / bw["bytes_per_s"]
        out["fused_over_read_time"] = t_fused["median_s"] / out["read_both_once_s"]
    return out


def bench_overhead(device: str, min_time: float) -> dict[str, Any]:
    """Per-call cost of saliency with (almost) no data: the overhead floor."""
    one_p = [torch.ones(1, device=device)]
    one_g = [torch.ones(1, device=device)]
    many_p = [torch.ones(1, device=device) for _ in range(291)]
    many_g = [torch.ones(1, device=device) for _ in range(291)]
    with torch.no_grad():
        return time_rounds({
            "one_tensor_of_1_element": lambda: ops.saliency(one_p, one_g, "abs_prod"),
            "291_tensors_of_1_element": lambda: ops.saliency(many_p, many_g, "abs_prod"),
            "raw_op_291_tensors": lambda: torch.ops.zcfast.saliency_reduce.default(many_p, many_g, "abs_prod"),
        }, ROUNDS, min_time)


# ---- fisher / jacob_cov -------------------------------------------------------------------------

def fisher_torch(act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Official-style fisher in plain torch (float32): 0.5·mean_n (Σ_spatial act·grad)²."""
    s = (act * grad).sum(dim=tuple(range(2, act.dim())))
    return 0.5 * (s * s).mean(0)


def bench_fisher(device: str, min_time: float) -> list[dict[str, Any]]:
    rows = []
    for shape in ((64, 16, 32, 32), (64, 64, 8, 8), (64, 64, 32, 32)):
        gen = torch.Generator().manual_seed(1)
        act = torch.randn(shape, generator=gen).to(device)
        grad = (torch.randn(shape, generator=gen) * 1e-3).to(device)
        per, _ = ops.fisher(act, grad)
        per_ref, _ = ref.fisher(act, grad)
        torch.testing.assert_close(per, per_ref, rtol=2e-5, atol=0)
        torch.testing.assert_close(per, fisher_torch(act, grad), rtol=1e-4, atol=0)
        t = time_rounds({"fused": lambda: ops.fisher(act, grad),
                         "reference_float64": lambda: ref.fisher(act, grad),
                         "torch_float32": lambda: fisher_torch(act, grad)}, ROUNDS, min_time)
        rows.append({"shape": list(shape), **t,
                     "speedup_vs_reference": t["reference_float64"]["median_s"] / t["fused"]["median_s"],
                     "speedup_vs_torch": t["torch_float32"]["median_s"] / t["fused"]["median_s"]})
    return rows


def jacob_cov_official(jac: np.ndarray, k: float = 1e-5) -> np.ndarray:
    """The official computation, one model at a time (numpy corrcoef + general eig)."""
    out = np.empty(jac.shape[0])
    for m in range(jac.shape[0]):
        v, _ = np.linalg.eig(np.corrcoef(jac[m]))
        out[m] = np.real(-np.sum(np.log(v + k) + 1.0 / (v + k)))
    return out


def bench_jacob_cov(device: str, min_time: float) -> list[dict[str, Any]]:
    rows = []
    for shape in ((1, 64, 3072), (16, 64, 3072)):
        gen = torch.Generator().manual_seed(2)
        jac = torch.randn(shape, generator=gen)
        jac = jac + 0.5 * torch.randn(shape[0], 1, shape[2], generator=gen)  # correlated rows
        jac_np = jac.double().numpy()
        jac = jac.to(device)
        scores, _ = ops.jacob_cov(jac)
        s_ref, _ = ref.jacob_cov(jac)
        torch.testing.assert_close(scores, s_ref, rtol=1e-5, atol=0)
        np.testing.assert_allclose(scores.double().cpu().numpy(), jacob_cov_official(jac_np), rtol=1e-5)
        t = time_rounds({"fused": lambda: ops.jacob_cov(jac),
                         "reference": lambda: ref.jacob_cov(jac),
                         "official_numpy": lambda: jacob_cov_official(jac.double().cpu().numpy())},
                        ROUNDS, min_time)
        rows.append({"shape": list(shape), **t,
                     "speedup_vs_reference": t["reference"]["median_s"] / t["fused"]["median_s"],
                     "speedup_vs_official": t["official_numpy"]["median_s"] / t["fused"]["median_s"]})
    return rows


# ---- report -------------------------------------------------------------------------------------

def to_markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = ["# zcfast.ops benchmark", "",
             f"Command: `{res['command']}`  ", f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, "
             f"{m.get('mem_total_gib', '?')} GiB; torch {m['torch']} with {m['torch_threads']} threads"
             + (f"; GPU {m['gpu']}" if "gpu" in m else "") + "  ",
             f"Load average (1/5/15 min) at start: {m['loadavg_1_5_15']}, at end: {res['loadavg_end']}  ",
             f"Date (UTC): {m['date_utc']}. Timing: {res['rounds']} interleaved rounds per comparison, each a "
             "torch.utils.benchmark blocked_autorange median; the best round is reported (the least-disturbed "
             "estimate on a shared machine; every round is in the JSON).", "",
             "## saliency(\"abs_prod\") (snip / synflow reduction)", ""]
    rows = []
    for s in res["saliency"]:
        rows.append([f"{s['set']} ({s['tensors']} tensors, {s['parameters'] / 1e6:.2f} M)",
                     fmt_time(s["fused"]["median_s"]), fmt_time(s["loop"]["median_s"]),
                     fmt_time(s["foreach"][s["foreach_best"]]["median_s"]),
                     f"{s['speedup_vs_loop']:.1f}×", f"{s['speedup_vs_foreach']:.1f}×",
                     (f"{fmt_time(s['read_both_once_s'])} ({s['bandwidth']['bytes_per_s'] / 1e9:.1f} GB/s, "
                      f"{s['bandwidth']['via']}); fused = {s['fused_over_read_time']:.2f}×")
                     if "bandwidth" in s else "n/a"])
    lines.append(markdown_table(["parameter set", "fused", "(i) loop", "(ii) best foreach", "vs (i)",
                                 "vs (ii)", "read both buffers once"], rows))
    for s in res["saliency"]:
        lines.append(f"- {s['set']}: best foreach composition = `{s['foreach_best']}`; all foreach "
                     "variants: " + ", ".join(f"`{k}` {fmt_time(v['median_s'])}" for k, v in s["foreach"].items()))
    lines += ["", "Targets (issue #2, 2-core CPU):", ""]
    for s in res["saliency"]:
        if s["set"] == "nb201":
            lines.append(f"- NB201 set: ≥ 10× faster than (i): {s['speedup_vs_loop']:.1f}× "
                         f"({'met' if s['speedup_vs_loop'] >= 10 else 'MISSED'}); ≥ 3× faster than (ii): "
                         f"{s['speedup_vs_foreach']:.1f}× ({'met' if s['speedup_vs_foreach'] >= 3 else 'MISSED'})")
        elif "fused_over_read_time" in s and s["parameters"] > 10e6:
            r = s["fused_over_read_time"]
            lines.append(f"- {s['set']} set ({s['parameters'] / 1e6:.1f} M): within 1.5× of reading both buffers "
                         f"once: {r:.2f}× ({'met' if r <= 1.5 else 'MISSED'})")
    ov = res["overhead"]
    lines += ["", "Per-call overhead floor: " + "; ".join(f"{k.replace('_', ' ')}: {fmt_time(v['median_s'])}"
                                                         for k, v in ov.items()), "",
              "## fisher (one layer, float32)", ""]
    lines.append(markdown_table(
        ["act shape", "fused", "reference (float64)", "torch float32 ops", "vs reference", "vs torch"],
        [[str(r["shape"]), fmt_time(r["fused"]["median_s"]), fmt_time(r["reference_float64"]["median_s"]),
          fmt_time(r["torch_float32"]["median_s"]), f"{r['speedup_vs_reference']:.1f}×",
          f"{r['speedup_vs_torch']:.1f}×"] for r in res["fisher"]]))
    lines += ["", "## jacob_cov ([M models, N samples, D features], float32 in, float64 inside)", ""]
    lines.append(markdown_table(
        ["jacobians", "fused", "reference (torch loop)", "official (numpy corrcoef + eig)", "vs reference",
         "vs official"],
        [[str(r["shape"]), fmt_time(r["fused"]["median_s"]), fmt_time(r["reference"]["median_s"]),
          fmt_time(r["official_numpy"]["median_s"]), f"{r['speedup_vs_reference']:.1f}×",
          f"{r['speedup_vs_official']:.1f}×"] for r in res["jacob_cov"]]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="short timing windows (noisier)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (best round kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--sets", default="nb201,resnet50", help="comma list of nb201, resnet50")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: fisher, jacob_cov")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    parser.add_argument("--name", default=None, help="result file stem (default ops, or ops_cuda)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not (ops.has_cuda() and torch.cuda.is_available()):
        parser.error("--device cuda needs zcfast's CUDA build and a GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    global ROUNDS
    ROUNDS = args.rounds
    min_time = 0.05 if args.quick else 0.25
    res: dict[str, Any] = {"command": command_line(), "machine": machine_info(args.device),
                           "build": ops.build_info(), "rounds": ROUNDS, "saliency": []}
    print(f"machine: {res['machine']}", flush=True)
    for name in [s for s in args.sets.split(",") if s]:
        params, desc = {"nb201": nb201_params, "resnet50": resnet50_params}[name](args.device)
        r = bench_saliency(name, params, desc, args.device, min_time, with_bandwidth=True)
        res["saliency"].append(r)
        print(f"saliency {name}: fused {fmt_time(r['fused']['median_s'])}, loop {r['speedup_vs_loop']:.1f}× "
              f"slower, best foreach {r['speedup_vs_foreach']:.1f}× slower, "
              f"fused/read-time {r.get('fused_over_read_time', float('nan')):.2f}", flush=True)
        del params
    res["overhead"] = bench_overhead(args.device, min_time)
    skip = set(args.skip.split(","))
    res["fisher"] = [] if "fisher" in skip else bench_fisher(args.device, min_time)
    res["jacob_cov"] = [] if "jacob_cov" in skip else bench_jacob_cov(args.device, min_time)
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    md = to_markdown(res)
    name = args.name or ("ops" if args.device == "cpu" else "ops_cuda")
    kwargs = {"out_dir": args.out} if args.out else {}
    paths = write_results(name, res, md, **kwargs)
    print(md)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
