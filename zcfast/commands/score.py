"""``zcfast score``: zero-cost proxies of NB201 architectures or of any model, on a real batch."""
from __future__ import annotations

import argparse
import math
import time

from zcfast.commands import load_callable

HELP = "score NB201 architectures (string or benchmark index) or a model (module:function) with the proxies"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archs", nargs="*",
                        help="NB201 architecture strings (|op~0|+|op~0|op~1|+...) or benchmark indices "
                             "0..15624; default: the all-nor_conv_3x3 architecture")
    parser.add_argument("--model", default=None,
                        help="score a model instead: 'package.module:function', function(num_classes) -> nn.Module")
    parser.add_argument("--proxies", default="all",
                        help="'all' (grad_norm,snip,grasp,fisher,jacob_cov,synflow), 'every' (+plain and "
                             "user-registered) or a comma-separated list")
    parser.add_argument("--dataset", default="cifar10", help="cifar10 or cifar100 (classes, normalisation, images)")
    parser.add_argument("--data", default=None, help="images: a shipped set or a user .npz / image folder")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (paper: 64)")
    parser.add_argument("--batch-seed", type=int, default=42, help="seed of the batch draw (paper: 42)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the per-architecture initialisation")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def _proxies(text: str) -> tuple[str, ...]:
    from zcfast.proxies import DEFAULT_PROXIES, available_proxies

    if text == "all":
        return DEFAULT_PROXIES
    if text == "every":
        return tuple(available_proxies())
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise ValueError("--proxies is empty")
    return names


def _load_model(spec: str, num_classes: int):
    import torch.nn as nn

    fn = load_callable(spec, "--model", "model")
    try:
        net = fn(num_classes=num_classes)
    except TypeError:
        net = fn()
    if not isinstance(net, nn.Module):
        raise ValueError(f"--model: {spec} returned {type(net).__name__}, not an nn.Module")
    return net


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
        return f"{v:.4e}"
    return f"{v:.4f}"


def run(args: argparse.Namespace) -> int:
    import torch

    import zcfast.spaces
    from zcfast.data import paper_batch
    from zcfast.proxies import score_arch, score_detailed

    if args.threads:
        torch.set_num_threads(args.threads)
    proxies = _proxies(args.proxies)
    x, y = paper_batch(args.dataset, batch_size=args.batch_size, seed=args.batch_seed, data=args.data)
    num_classes = {"cifar10": 10, "cifar100": 100, "imagenet16-120": 120}.get(args.dataset.lower(), int(y.max()) + 1)

    rows: list[tuple[str, dict, float]] = []
    if args.model:
        if args.archs:
            raise ValueError("give either NB201 architectures or --model, not both")
        net = _load_model(args.model, num_classes).to(args.device)
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        res = score_detailed(net, x.to(args.device), y.to(args.device), proxies)
        rows.append((args.model, res, time.perf_counter() - t0))
    else:
        space = zcfast.spaces.get("nb201")
        specs = args.archs or ["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"]
        for text in specs:
            arch = space.arch_at(int(text)) if text.strip().isdigit() else space.decode(text)
            t0 = time.perf_counter()
            res = score_arch(space, arch, x, y, proxies, seed=args.seed, num_classes=num_classes,
                             device=args.device, detailed=True)
            label = f"#{space.index(arch)} {space.encode(arch)}"
            rows.append((label, res, time.perf_counter() - t0))

    print(f"batch: {x.shape[0]} {args.dataset} images (seed {args.batch_seed}); init seed {args.seed}; device {args.device}")
    header = ["model"] + list(proxies) + ["seconds"]
    table = [header]
    notes = []
    for label, res, secs in rows:
        table.append([label] + [_fmt(res[p].value) for p in proxies] + [f"{secs:.2f}"])
        if "synflow" in res and res["synflow"].log_value is not None:
            notes.append(f"{label}: ln(synflow) = {res['synflow'].log_value:.4f}")
        for p in proxies:
            if res[p].error:
                notes.append(f"{label}: {p}: {res[p].error}")
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    for n in notes:
        print(n)
    return 0
