"""Benchmark of the NWOT and ZiCo kernels (zcfast.ops.hamming_kernel, moments_update + zico_reduce)
against plain-PyTorch baselines, on one NAS-Bench-201 network (all edges nor_conv_3x3, built by
``zcfast.spaces.get("nb201").build``).

hamming_kernel: NWOT's K over the inputs of every ReLU module (189 of them, 1.80 M features per
sample) of a batch of 64 Gaussian 3x32x32 images, against
  (i)  the official hook's loop: per ReLU, ``x = (a > 0).float(); K += x @ x.T + (1 - x) @ (1 - x).T``
  (ii) the fastest plain-PyTorch loop found: one GEMM per ReLU on ±1 codes,
       ``s = 2x - 1; K += (D + s @ s.T) / 2``.
The activations are captured once beforehand; only the kernel-matrix work is timed.

moments_update + zico_reduce: ZiCo's gradient statistics over 2 mini-batches on the network's
291 parameter tensors (1.53 M parameters; float32 gradients, float64 state), against the fastest
``torch._foreach_*`` composition found (several are timed), and, for scale, the official code's
route (every gradient copied to numpy, np.std / np.mean per layer).

The #13 kernels (``--only signs``), each against its plain-PyTorch composition:
  sign_pattern_count  SWAP's distinct sign patterns of 65,536 neurons over a batch of 64 (x = the
                      activations transposed, a view), vs ``torch.unique((x > 0), dim=0)``; and
                      TE-NAS's linear regions (1,024 samples x 8,192 neurons), the same way;
  sign_sum            GradSign on NB201's 291 parameter shapes with 8 per-sample gradients each,
                      vs ``sign(g).sum(0).abs().sum()`` per tensor;
  channel_spectra     MeCo's per-layer channel correlation spectra over NB201's 189 ReLU inputs
                      (one image), vs ``eigvalsh(nan_to_num(corrcoef(F)))`` per layer; and AZ-NAS
                      expressivity's covariance spectra of the 17 cell outputs of a batch of 64
                      ([C, 64·H·W]), vs a float64 covariance and ``eigvalsh`` per cell;
  box_sum             NB201's stride-1 3x3 average pool on [32, 16, 32, 32] (box_avg_pools_), vs
                      nine shifted adds and ``F.avg_pool2d``, all bit-identical;
  batch_norm_cl       (CPU) train-mode BatchNorm2d forward + backward on a channels_last
                      [32, 16, 32, 32] map (the channels_last_ copies of TE-NAS's NTK), vs
                      ``F.batch_norm`` on the same tensor and on its NCHW copy; the error of each
                      against float64 is recorded (checked first: zcfast's within 1e-5).

Results are checked equal before anything is timed.

    python bench/bench_ops_modern.py            # writes bench/results/ops_modern.{json,md}
    python bench/bench_ops_modern.py --quick    # shorter timing windows
    python bench/bench_ops_modern.py --device cuda
    python bench/bench_ops_modern.py --only signs --quick   # the #13 kernels only
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import zcfast.ops as ops  # noqa: E402
import zcfast.reference as ref  # noqa: E402
from common import (command_line, fmt_time, machine_info, markdown_table, time_rounds,  # noqa: E402
                    write_results)

NB201_ALL_CONV3 = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                   "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")


def nb201_net(device: str) -> torch.nn.Module:
    import zcfast.spaces as spaces

    space = spaces.get("nb201")
    torch.manual_seed(0)
    return space.build(space.decode(NB201_ALL_CONV3)).to(device)


def _train_forward(net: torch.nn.Module, hooks: list, batch: int, seed: int, device: str) -> None:
    """One no-grad train-mode forward of N(0, 1) images ``[batch, 3, 32, 32]`` (seeded), then the
    hooks removed."""
    try:
        net.train()
        with torch.no_grad():
            net(torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).to(device))
    finally:
        for h in hooks:
            h.remove()


def relu_inputs(net: torch.nn.Module, batch: int, device: str) -> list[torch.Tensor]:
    """The input of every module whose type name contains "ReLU" (NWOT v2's hooks), train mode."""
    acts: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _m, inp: acts.append(inp[0].detach()))
             for m in net.modules() if "ReLU" in type(m).__name__]
    _train_forward(net, hooks, batch, 1, device)
    return acts


# ---- NWOT ---------------------------------------------------------------------------------------

def nwot_official_loop(acts: list[torch.Tensor]) -> torch.Tensor:
    n = acts[0].shape[0]
    k = torch.zeros(n, n, device=acts[0].device)
    for a in acts:
        x = (a.reshape(n, -1) > 0).float()
        k += x @ x.t() + (1.0 - x) @ (1.0 - x.t())
    return k


def nwot_pm1_loop(acts: list[torch.Tensor]) -> torch.Tensor:
    n = acts[0].shape[0]
    k = torch.zeros(n, n, device=acts[0].device)
    for a in acts:
        s = (a.reshape(n, -1) > 0).float() * 2.0 - 1.0
        k += (s.shape[1] + s @ s.t()) * 0.5
    return k


def bench_nwot(device: str, batch: int, rounds: int, min_time: float) -> dict[str, Any]:
    acts = relu_inputs(nb201_net(device), batch, device)
    features = sum(a[0].numel() for a in acts)
    want = ref.hamming_kernel(acts)
    got = ops.hamming_kernel(acts)
    if not torch.equal(got, want):
        raise AssertionError("hamming_kernel differs from the reference")
    for label, fn in (("official", nwot_official_loop), ("pm1", nwot_pm1_loop)):
        v = fn(acts).double()
        if not torch.equal(v, want):  # 0/1 products: exact in float32 below 2^24
            raise AssertionError(f"NWOT {label} loop differs from the reference by "
                                 f"{float((v - want).abs().max())}")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            fn()
            sync()
        return run

    fns = {"zcfast hamming_kernel": timed(lambda: ops.hamming_kernel(acts)),
           "official loop (two GEMMs per ReLU)": timed(lambda: nwot_official_loop(acts)),
           "±1 codes, one GEMM per ReLU": timed(lambda: nwot_pm1_loop(acts))}
    t = time_rounds(fns, rounds, min_time)
    fused = t["zcfast hamming_kernel"]["median_s"]
    base = {k: v for k, v in t.items() if k != "zcfast hamming_kernel"}
    best = min(base, key=lambda k: base[k]["median_s"])
    return {"layers": len(acts), "batch": batch, "features_per_sample": features,
            "timings": t, "fused_s": fused,
            "speedup_vs_official_loop": t["official loop (two GEMMs per ReLU)"]["median_s"] / fused,
            "fastest_plain": best, "speedup_vs_fastest_plain": base[best]["median_s"] / fused}


# ---- ZiCo ---------------------------------------------------------------------------------------

def foreach_buffers(grads: list[torch.Tensor], k: int) -> list[list[torch.Tensor]]:
    return [[torch.zeros_like(g, dtype=torch.float64) for g in grads] for _ in range(k)]


def zico_foreach_welford(batches: list[list[torch.Tensor]],
                         bufs: list[list[torch.Tensor]] | None = None) -> torch.Tensor:
    """Welford in float64 with foreach ops; ``bufs`` (4 lists) reused after _foreach_zero_."""
    if bufs is None:
        bufs = foreach_buffers(batches[0], 4)
    else:
        for b in bufs:
            torch._foreach_zero_(b)
    ma, mu, m2, zeros = bufs
    for b, grads in enumerate(batches):
        n = b + 1
        g = torch._foreach_add(zeros, grads)  # float64 copies of the gradients
        a = torch._foreach_abs(g)
        torch._foreach_lerp_(ma, a, 1.0 / n)
        d = torch._foreach_sub(g, mu)
        torch._foreach_add_(mu, d, alpha=1.0 / n)
        e = torch._foreach_sub(g, mu)
        torch._foreach_addcmul_(m2, d, e)
    std = torch._foreach_sqrt(torch._foreach_div(m2, float(len(batches))))
    ratio = torch._foreach_div(ma, std)
    return torch.stack([torch.where(s != 0, r, 0.0).sum() for r, s in zip(ratio, std)])


def _foreach_power_sums(batches: list[list[torch.Tensor]]
                        ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Σ|g|, Σg and Σg² over the batches, per tensor, in float64, with foreach ops."""
    s_abs = [torch.zeros_like(g, dtype=torch.float64) for g in batches[0]]
    s = [torch.zeros_like(g, dtype=torch.float64) for g in batches[0]]
    sq = [torch.zeros_like(g, dtype=torch.float64) for g in batches[0]]
    zeros = [torch.zeros_like(g, dtype=torch.float64) for g in batches[0]]
    for grads in batches:
        g = torch._foreach_add(zeros, grads)  # float64 copies of the gradients
        torch._foreach_add_(s, g)
        torch._foreach_addcmul_(sq, g, g)
        torch._foreach_abs_(g)
        torch._foreach_add_(s_abs, g)
    return s_abs, s, sq


def zico_foreach_sums(batches: list[list[torch.Tensor]]) -> torch.Tensor:
    """Σ|g|, Σg, Σg² in float64 with foreach ops; std from them; per-tensor masked sums."""
    s_abs, s, sq = _foreach_power_sums(batches)
    n = float(len(batches))
    mean = torch._foreach_div(s, n)
    var = torch._foreach_div(sq, n)
    torch._foreach_addcmul_(var, mean, mean, value=-1.0)
    torch._foreach_clamp_min_(var, 0.0)
    std = torch._foreach_sqrt(var)
    ratio = torch._foreach_div(torch._foreach_div(s_abs, n), std)
    return torch.stack([torch.where(d != 0, r, 0.0).sum() for r, d in zip(ratio, std)])


def zico_foreach_sums_cat(batches: list[list[torch.Tensor]]) -> torch.Tensor:
    """As zico_foreach_sums, but the masked ratio and the per-tensor sums on one flat buffer."""
    s_abs, s, sq = _foreach_power_sums(batches)
    n = float(len(batches))
    flat = [torch.cat([t.reshape(-1) for t in x]) for x in (s_abs, s, sq)]
    mean = flat[1] / n
    std = (flat[2] / n - mean * mean).clamp_min_(0.0).sqrt_()
    ratio = torch.where(std != 0, flat[0] / n / std, 0.0)
    seg = torch.repeat_interleave(torch.arange(len(s), device=ratio.device),
                                  torch.tensor([t.numel() for t in s], device=ratio.device))
    return torch.zeros(len(s), dtype=torch.float64, device=ratio.device).index_add_(0, seg, ratio)


def zico_official_numpy(batches: list[list[torch.Tensor]]) -> np.ndarray:
    out = []
    for t in range(len(batches[0])):
        g = np.stack([b[t].cpu().numpy().reshape(-1) for b in batches])
        std = np.std(g, axis=0)
        nz = np.nonzero(std)[0]
        out.append(np.sum(np.mean(np.abs(g), axis=0)[nz] / std[nz]))
    return np.array(out)


def zico_fused(batches: list[list[torch.Tensor]], state: ops.GradMoments | None = None) -> torch.Tensor:
    """A fresh state per call when ``state`` is None, else ``state`` reused after reset()."""
    if state is not None:
        state.reset()
    for grads in batches:
        state = ops.moments_update(grads, state)
    return ops.zico_reduce(state)


def bench_zico(device: str, rounds: int, min_time: float) -> dict[str, Any]:
    net = nb201_net(device)
    shapes = [p.shape for p in net.parameters()]
    gen = torch.Generator().manual_seed(2)
    batches = [[torch.randn(s, generator=gen).to(device) for s in shapes] for _ in range(2)]
    want = ref.zico_reduce(batches).to(device)
    got = zico_fused(batches)
    if not torch.allclose(got, want, rtol=1e-10, atol=0):
        raise AssertionError("moments_update + zico_reduce differ from the reference")
    cands = {"foreach Welford + per-tensor masked sum": zico_foreach_welford,
             "foreach Σ|g|, Σg, Σg² + per-tensor masked sum": zico_foreach_sums,
             "foreach Σ|g|, Σg, Σg² + one flat masked sum": zico_foreach_sums_cat}
    for label, fn in cands.items():
        if not torch.allclose(fn(batches), want, rtol=1e-6, atol=0):
            raise AssertionError(f"ZiCo {label} differs from the reference")
    # The official route computes in float32 (numpy on float32 gradients): per tensor within 1e-3
    # (a near-equal gradient pair has a tiny std with few correct float32 digits), and the score
    # (Σ log) within 1e-6.
    official = zico_official_numpy(batches)
    w = want.cpu().numpy()
    if not (np.allclose(official, w, rtol=1e-3)
            and abs(np.log(official).sum() - np.log(w).sum()) <= 1e-6 * abs(np.log(w).sum())):
        raise AssertionError("the official numpy route differs from the reference")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn: Callable[[Any], Any]) -> Callable[[], None]:
        def run() -> None:
            fn(batches)
            sync()
        return run

    state = ops.GradMoments.empty_like(batches[0])
    bufs = foreach_buffers(batches[0], 4)
    if not torch.equal(zico_fused(batches, state), got) or not torch.allclose(
            zico_foreach_welford(batches, bufs), want, rtol=1e-6, atol=0):
        raise AssertionError("a reused state gives another result")
    fused_label, reused_label = "zcfast moments_update ×2 + zico_reduce", "zcfast, reused state (reset())"
    fw_reused = "foreach Welford, reused buffers (_foreach_zero_)"
    fns = {fused_label: timed(zico_fused)}
    fns.update({k: timed(v) for k, v in cands.items()})
    fns[reused_label] = timed(lambda b: zico_fused(b, state))
    fns[fw_reused] = timed(lambda b: zico_foreach_welford(b, bufs))
    fns["official route (gradients to numpy, np.std)"] = timed(zico_official_numpy)
    t = time_rounds(fns, rounds, min_time)
    fused = t[fused_label]["median_s"]
    best = min(cands, key=lambda k: t[k]["median_s"])
    return {"tensors": len(shapes), "parameters": sum(int(np.prod(s)) for s in shapes),
            "batches": 2, "timings": t, "fused_s": fused, "fastest_foreach": best,
            "speedup_vs_fastest_foreach": t[best]["median_s"] / fused,
            "speedup_reused_vs_foreach_reused": t[fw_reused]["median_s"] / t[reused_label]["median_s"],
            "speedup_vs_official_numpy": t["official route (gradients to numpy, np.std)"]["median_s"] / fused}


# ---- #13: sign patterns (SWAP, TE-NAS), sign sums (GradSign), channel spectra (MeCo) ------------

def patterns_plain(x: torch.Tensor) -> int:
    """Distinct rows of the sign matrix, as SWAP's / TE-NAS's official code (torch.unique)."""
    return int(torch.unique(x > 0, dim=0).shape[0])


def sign_sum_plain(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([torch.sign(g).sum(0).abs().sum() for g in grads]).double()


def meco_plain(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.linalg.eigvalsh(torch.nan_to_num(torch.corrcoef(f.double()), nan=0.0, posinf=0.0,
                                                   neginf=0.0)) for f in feats]


def az_cov_plain(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """AZ-NAS expressivity's spectra, plain PyTorch: float64 ddof-1 covariance, eigvalsh, per cell."""
    out = []
    for f in feats:
        d = f.double()
        d = d - d.mean(1, keepdim=True)
        out.append(torch.linalg.eigvalsh(d @ d.T / max(d.shape[1] - 1, 1)))
    return out


def cell_outputs(net: torch.nn.Module, batch: int, device: str) -> list[torch.Tensor]:
    """Every NB201 cell's (and reduction block's) output as AZ-NAS reads it: [C, N·H·W], train mode."""
    feats: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: feats.append(
                 out.detach().transpose(0, 1).reshape(out.shape[1], -1))) for m in net.cells]
    _train_forward(net, hooks, batch, 2, device)
    return feats


def bench_signs(device: str, rounds: int, min_time: float) -> dict[str, Any]:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            fn()
            sync()
        return run

    gen = torch.Generator().manual_seed(3)
    out: dict[str, Any] = {}
    # SWAP: [B, neurons] activations, patterns of each neuron over the batch (a transposed view).
    acts = torch.randn(64, 65536, generator=gen)
    acts[:, ::3] = acts[:, :1]  # repeated neurons, so not every pattern is distinct
    acts = acts.to(device)
    # TE-NAS: patterns of each sample over all neurons, few distinct (a binary-ish ReLU net).
    base = torch.randn(96, 8192, generator=gen)
    regions = base[torch.randint(0, 96, (1024,), generator=gen)].to(device)
    for name, x in (("swap", acts.t()), ("te_nas", regions)):
        want = ref.distinct_rows(ref.sign_pack(x))
        if ops.sign_pattern_count(x) != want or patterns_plain(x) != want or \
                ops.distinct_rows(ops.sign_pack(x)) != want:
            raise AssertionError(f"{name}: pattern counts differ from the reference")
        fns = {"zcfast sign_pattern_count": timed(lambda x=x: ops.sign_pattern_count(x)),
               "zcfast distinct_rows(sign_pack)": timed(lambda x=x: ops.distinct_rows(ops.sign_pack(x))),
               "torch.unique(x > 0, dim=0)": timed(lambda x=x: patterns_plain(x))}
        t = time_rounds(fns, rounds, min_time)
        out[name] = {"shape": list(x.shape), "patterns": want, "timings": t,
                     "fused_s": t["zcfast sign_pattern_count"]["median_s"],
                     "speedup_vs_plain": t["torch.unique(x > 0, dim=0)"]["median_s"]
                     / t["zcfast sign_pattern_count"]["median_s"]}
    # GradSign: 8 per-sample gradients of each of NB201's parameter tensors.
    shapes = [p.shape for p in nb201_net("cpu").parameters()]
    grads = [torch.randn((8, *s), generator=gen).to(device) for s in shapes]
    want = ref.sign_sum(grads).to(device)
    if not torch.equal(ops.sign_sum(grads), want) or not torch.equal(sign_sum_plain(grads), want):
        raise AssertionError("gradsign: sign sums differ from the reference")
    fns = {"zcfast sign_sum": timed(lambda: ops.sign_sum(grads)),
           "sign(g).sum(0).abs().sum() per tensor": timed(lambda: sign_sum_plain(grads))}
    t = time_rounds(fns, rounds, min_time)
    out["gradsign"] = {"tensors": len(grads), "per_sample": 8,
                       "elements": sum(g.numel() for g in grads), "timings": t,
                       "fused_s": t["zcfast sign_sum"]["median_s"],
                       "speedup_vs_plain": t["sign(g).sum(0).abs().sum() per tensor"]["median_s"]
                       / t["zcfast sign_sum"]["median_s"]}
    # MeCo: every ReLU input of one image, [C, H*W] per layer.
    feats = [a[0].reshape(a.shape[1], -1) for a in relu_inputs(nb201_net(device), 1, device)]
    want_s = ref.channel_spectra(feats, "corr")
    for label, got in (("zcfast", ops.channel_spectra(feats, "corr")), ("plain", meco_plain(feats))):
        for g_, w_ in zip(got, want_s):
            if not torch.allclose(g_, w_, rtol=1e-9, atol=1e-9):
                raise AssertionError(f"meco: {label} spectra differ from the reference")
    fns = {"zcfast channel_spectra": timed(lambda: ops.channel_spectra(feats, "corr")),
           "eigvalsh(nan_to_num(corrcoef)) per layer": timed(lambda: meco_plain(feats))}
    t = time_rounds(fns, rounds, min_time)
    out["meco"] = {"layers": len(feats), "channels": sorted({f.shape[0] for f in feats}),
                   "timings": t, "fused_s": t["zcfast channel_spectra"]["median_s"],
                   "speedup_vs_plain": t["eigvalsh(nan_to_num(corrcoef)) per layer"]["median_s"]
                   / t["zcfast channel_spectra"]["median_s"]}
    # box_sum: the 3x3 average pool of an NB201 stage-1 cell on a batch of 32, as box_avg_pools_ runs it
    z = torch.randn(32, 16, 32, 32, generator=gen).to(device)
    cnt = F.avg_pool2d(torch.ones(1, 1, 32, 32, device=device), 3, 1, 1, count_include_pad=False, divisor_override=1)
    native = F.avg_pool2d(z, 3, 1, 1, count_include_pad=False)
    if not torch.equal(ops.box_sum(z, 3, 3), ref.box_sum(z, 3, 3)) or not torch.equal(ops.box_sum(z, 3, 3) / cnt, native):
        raise AssertionError("box_sum: differs from the shifted adds or from avg_pool2d")
    fns = {"zcfast box_sum / count": timed(lambda: ops.box_sum(z, 3, 3) / cnt),
           "9 shifted adds / count (the previous route)": timed(lambda: ref.box_sum(z, 3, 3) / cnt),
           "F.avg_pool2d(count_include_pad=False)": timed(lambda: F.avg_pool2d(z, 3, 1, 1, count_include_pad=False))}
    t = time_rounds(fns, rounds, min_time)
    out["box_sum"] = {"shape": list(z.shape), "timings": t, "fused_s": t["zcfast box_sum / count"]["median_s"],
                      "speedup_vs_plain": t["9 shifted adds / count (the previous route)"]["median_s"]
                      / t["zcfast box_sum / count"]["median_s"]}
    # batch_norm_cl: train-mode BatchNorm2d forward + backward on a channels_last NB201 stage-1
    # feature map of a batch of 32 (the channels_last_ copies of ntk_gram)
    if device == "cpu":
        xb = (torch.randn(32, 16, 32, 32, generator=gen) * 3 + 1).contiguous(memory_format=torch.channels_last)
        wb, bb = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
        gyb = torch.randn(32, 16, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
        want = ref.batch_norm_train(xb, wb, bb, 1e-5)[0]
        got = ops.batch_norm_cl(xb, wb, bb, 1e-5)[0]
        if float((got.double() - want).abs().max()) > 1e-5:
            raise AssertionError("batch_norm_cl: differs from the float64 reference")

        def fwd_bwd(fn, x) -> Callable[[], None]:
            def run() -> None:
                xr, wr = x.clone().requires_grad_(True), wb.clone().requires_grad_(True)
                torch.autograd.grad(fn(xr, wr), (xr, wr), gyb if x.is_contiguous(memory_format=torch.channels_last)
                                    and not x.is_contiguous() else gyb.contiguous())
            return run
        fns = {"zcfast batch_norm_train_cl": fwd_bwd(lambda x, w: ops.batch_norm_train_cl(x, w, bb, 1e-5)[0], xb),
               "F.batch_norm, channels_last": fwd_bwd(lambda x, w: F.batch_norm(x, None, None, w, bb, True), xb),
               "F.batch_norm, NCHW": fwd_bwd(lambda x, w: F.batch_norm(x, None, None, w, bb, True), xb.contiguous())}
        t = time_rounds(fns, rounds, min_time)
        err = {"zcfast": float((got.double() - want).abs().max()),
               "F.batch_norm, channels_last": float((F.batch_norm(xb, None, None, wb, bb, True).double() - want).abs().max()),
               "F.batch_norm, NCHW": float((F.batch_norm(xb.contiguous(), None, None, wb, bb, True).double()
                                            - want).abs().max())}
        out["batch_norm_cl"] = {"shape": list(xb.shape), "timings": t, "max_abs_err_vs_float64": err,
                                "errors": ", ".join(f"{k} {v:.1e}" for k, v in err.items()),
                                "fused_s": t["zcfast batch_norm_train_cl"]["median_s"],
                                "speedup_vs_plain": t["F.batch_norm, channels_last"]["median_s"]
                                / t["zcfast batch_norm_train_cl"]["median_s"]}
    # AZ-NAS expressivity: every cell's output of a batch of 64, [C, 64·H·W] (up to 65,536 positions).
    feats = cell_outputs(nb201_net(device), 64, device)
    want_s = az_cov_plain(feats)
    for g_, w_ in zip(ops.channel_spectra(feats, "cov"), want_s):
        if not torch.allclose(g_, w_, rtol=1e-9, atol=1e-9 * float(w_.abs().max())):
            raise AssertionError("az_nas: zcfast spectra differ from the plain float64 covariance")
    fns = {"zcfast channel_spectra": timed(lambda: ops.channel_spectra(feats, "cov")),
           "float64 cov + eigvalsh per cell": timed(lambda: az_cov_plain(feats))}
    t = time_rounds(fns, rounds, min_time)
    out["az_nas"] = {"layers": len(feats), "channels": sorted({f.shape[0] for f in feats}),
                     "positions": sorted({f.shape[1] for f in feats}), "timings": t,
                     "fused_s": t["zcfast channel_spectra"]["median_s"],
                     "speedup_vs_plain": t["float64 cov + eigvalsh per cell"]["median_s"]
                     / t["zcfast channel_spectra"]["median_s"]}
    return out


def signs_markdown(sg: dict[str, Any]) -> list[str]:
    titles = {"swap": "sign_pattern_count: SWAP, {shape[0]:,} neurons × batch {shape[1]} (a transposed view)",
              "te_nas": "sign_pattern_count: TE-NAS linear regions, {shape[0]:,} samples × {shape[1]:,} neurons",
              "gradsign": "sign_sum: GradSign, {tensors} tensors × {per_sample} per-sample gradients "
                          "({elements:,} elements)",
              "meco": "channel_spectra: MeCo, {layers} layers (channels {channels})",
              "az_nas": "channel_spectra: AZ-NAS expressivity, {layers} cells (channels {channels}, "
                        "positions {positions})",
              "box_sum": "box_sum: NB201's 3×3 average pool on {shape} (box_avg_pools_), bit-identical to avg_pool2d",
              "batch_norm_cl": "batch_norm_cl: train-mode BatchNorm2d forward + backward on channels_last {shape} "
                               "(max |error| vs float64: {errors})"}
    lines: list[str] = []
    for key, title in titles.items():
        if key not in sg:
            continue
        r = sg[key]
        lines += [f"## {title.format(**r)}", ""]
        rows = [[k, fmt_time(v["median_s"]), f"{v['median_s'] / r['fused_s']:.2f}×"]
                for k, v in r["timings"].items()]
        lines.append(markdown_table(["computation", "time", "vs fused"], rows))
        lines += [f"Fused vs the plain composition: **{r['speedup_vs_plain']:.2f}×**.", ""]
    return lines


# ---- report -------------------------------------------------------------------------------------

def to_markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"# NWOT / ZiCo / #13 kernels ({res['device']})", "",
             f"Command: `{res['command']}`  ", f"Machine: {m.get('cpu')} ({m.get('logical_cpus')} logical CPUs, "
             f"{m.get('torch_threads')} torch threads), load average at start {m.get('loadavg_1_5_15')}, "
             f"at end {res['loadavg_end']}; best of {res['rounds']} interleaved rounds.", ""]
    if "signs" in res:
        lines += signs_markdown(res["signs"])
    if "nwot" not in res:
        return "\n".join(lines)
    nw = res["nwot"]
    lines += [f"## hamming_kernel: NWOT's K on NB201 (all nor_conv_3x3), batch {nw['batch']}, "
              f"{nw['layers']} ReLU inputs, {nw['features_per_sample']:,} features per sample", ""]
    rows = [[k, fmt_time(v["median_s"]), f"{v['median_s'] / nw['fused_s']:.1f}×"]
            for k, v in nw["timings"].items()]
    lines.append(markdown_table(["computation", "time", "vs fused"], rows))
    lines += [f"Fused vs the official loop: **{nw['speedup_vs_official_loop']:.1f}×** (target ≥ 5×); "
              f"vs the fastest plain loop ({nw['fastest_plain']}): **{nw['speedup_vs_fastest_plain']:.1f}×**.", ""]
    zc = res["zico"]
    lines += [f"## moments_update + zico_reduce: ZiCo over {zc['batches']} mini-batches on NB201's "
              f"{zc['tensors']} gradient tensors ({zc['parameters']:,} parameters)", ""]
    rows = [[k, fmt_time(v["median_s"]), f"{v['median_s'] / zc['fused_s']:.1f}×"]
            for k, v in zc["timings"].items()]
    lines.append(markdown_table(["computation", "time", "vs fused"], rows))
    lines += [f"Fused vs the fastest `torch._foreach_*` composition ({zc['fastest_foreach']}), each "
              f"allocating its state: **{zc['speedup_vs_fastest_foreach']:.1f}×** (target ≥ 3×); both "
              f"reusing their buffers: **{zc['speedup_reused_vs_foreach_reused']:.1f}×**; fused vs the "
              f"official numpy route: **{zc['speedup_vs_official_numpy']:.1f}×**.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="short timing windows (noisier)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (best round kept)")
    parser.add_argument("--batch", type=int, default=64, help="NWOT batch size (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    parser.add_argument("--name", default=None, help="result file stem (default ops_modern[_cuda], "
                        "ops_signs[_cuda] with --only signs)")
    parser.add_argument("--only", choices=("all", "nwot_zico", "signs"), default="all",
                        help="which kernels to time (default all)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not (ops.has_cuda() and torch.cuda.is_available()):
        parser.error("--device cuda needs zcfast's CUDA build and a GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    min_time = 0.05 if args.quick else 0.25
    res: dict[str, Any] = {"command": command_line(), "device": args.device,
                           "machine": machine_info(args.device), "build": ops.build_info(),
                           "rounds": args.rounds}
    print(f"machine: {res['machine']}", flush=True)
    if args.only in ("all", "nwot_zico"):
        res["nwot"] = bench_nwot(args.device, args.batch, args.rounds, min_time)
        print(f"nwot: fused {fmt_time(res['nwot']['fused_s'])}, "
              f"{res['nwot']['speedup_vs_official_loop']:.1f}× the official loop", flush=True)
        res["zico"] = bench_zico(args.device, args.rounds, min_time)
        print(f"zico: fused {fmt_time(res['zico']['fused_s'])}, "
              f"{res['zico']['speedup_vs_fastest_foreach']:.1f}× the fastest foreach", flush=True)
    if args.only in ("all", "signs"):
        res["signs"] = bench_signs(args.device, args.rounds, min_time)
        print("signs: " + ", ".join(f"{k} {v['speedup_vs_plain']:.2f}×" for k, v in res["signs"].items()),
              flush=True)
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    md = to_markdown(res)
    stem = "ops_signs" if args.only == "signs" else "ops_modern"
    name = args.name or (stem if args.device == "cpu" else stem + "_cuda")
    kwargs = {"out_dir": args.out} if args.out else {}
    paths = write_results(name, res, md, **kwargs)
    print(md)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
