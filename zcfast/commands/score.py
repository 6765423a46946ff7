"""``zcfast score``: zero-cost proxies of NB201 architectures or of any model, on a real batch.

With ``--model module:function`` any ``nn.Module`` factory is scored: on the shipped image
batch by default, or with ``--input-shape`` on a seeded random batch of that per-sample shape
(``--input-dtype float32|float64`` Gaussian, ``int64`` token ids in ``[0, --vocab)``), so audio,
sequence and token models can be scored too. The seed (``--seed``) is set before the model is
built, so a run is reproducible.
"""
from __future__ import annotations

import argparse
import inspect
import math
import sys
import time
from typing import Any

from zcfast.commands import PROXIES_HELP, count_type, load_callable

HELP = "score NB201 architectures (string or benchmark index) or a model (module:function) with the proxies"

#: ``--input-dtype`` choices -> torch dtype name.
INPUT_DTYPES = ("float32", "float64", "int64")


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"must be positive integers separated by commas (e.g. 3,32,32), "
                                         f"got {text!r}")
    return dims


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archs", nargs="*",
                        help="NB201 architecture strings (|op~0|+|op~0|op~1|+...) or benchmark indices "
                             "0..15624; default: the all-nor_conv_3x3 architecture")
    parser.add_argument("--model", default=None,
                        help="score a model instead: 'package.module:function', function(num_classes) -> "
                             "nn.Module (or a function of no arguments). The module is imported and its "
                             "code runs, as any plugin's; the current folder is importable")
    parser.add_argument("--proxies", default="paper", help=PROXIES_HELP + " (default paper)")
    parser.add_argument("--benchmark", default=None, metavar="PATH",
                        help="NB201 benchmark file for the printed accuracy (NAS-Bench-201-v1_*.pth or a "
                             "NATS-tss folder; default the shipped table)")
    parser.add_argument("--dataset", default="cifar10",
                        help="cifar10, cifar100 or ImageNet16-120: classes, normalisation and images")
    parser.add_argument("--data", default=None, help="images: a shipped set or a user .npz / image folder")
    parser.add_argument("--input-shape", type=_shape, default=None, metavar="D1,D2,...",
                        help="with --model: score on a seeded random batch of --batch-size inputs of this "
                             "per-sample shape instead of images, e.g. 1,16000 (audio), 3,64,64, or 128 "
                             "(a sequence of token ids with --input-dtype int64); targets are random "
                             "class indices in [0, --num-classes)")
    parser.add_argument("--input-dtype", default="float32", choices=INPUT_DTYPES,
                        help="with --input-shape: float32 / float64 (standard Gaussian; float64 also "
                             "converts the model) or int64 (token ids uniform in [0, --vocab)); jacob_cov "
                             "and synflow differentiate the input, so on int64 inputs they are NaN with "
                             "the reason")
    parser.add_argument("--vocab", type=count_type("--vocab"), default=1000,
                        help="with --input-dtype int64: token ids are drawn from [0, VOCAB) (default 1000)")
    parser.add_argument("--num-classes", type=count_type("--num-classes"), default=None,
                        help="classifier width passed to the --model factory and range of the targets "
                             "(default: the dataset's, 10 / 100 / 120)")
    parser.add_argument("--batch-size", type=count_type("--batch-size"), default=64, help="batch size (paper: 64)")
    parser.add_argument("--batch-seed", type=int, default=42, help="seed of the batch draw (paper: 42)")
    parser.add_argument("--batches", type=count_type("--batches"), default=1,
                        help="mini-batches (default 1): B disjoint batches of --batch-size (images: "
                             "zcfast.data.paper_batches; --input-shape: one random batch of B x --batch-size "
                             "split in B); multi-batch proxies (zico) read all, the others the first")
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of the initialisation: per architecture for NB201; for --model set "
                             "before the model is built (same seed, same values)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (refused when CUDA is not available)")
    parser.add_argument("--threads", type=count_type("--threads"), default=None,
                        help="torch CPU threads (default: torch's)")
    parser.add_argument("--format", default="table", choices=("table", "csv", "json"),
                        help="output: an aligned table (default), or CSV / JSON in the one column schema of "
                             "correlate's scores.csv (arch_str, index, key, accuracy = the NB201 200-epoch "
                             "test accuracy of --dataset, each proxy, its _error, seconds); then the batch "
                             "line and notes go to stderr")


def _load_model(spec: str, num_classes: int) -> Any:
    """Build the ``--model`` factory's module; ValueError naming the problem otherwise."""
    import torch.nn as nn

    fn = load_callable(spec, "--model", "model")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    kwargs: dict[str, Any] = {}
    if sig is not None:
        params = sig.parameters.values()
        takes_nc = "num_classes" in sig.parameters or any(p.kind is p.VAR_KEYWORD for p in params)
        required = [p.name for p in sig.parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                           p.KEYWORD_ONLY) and p.name != "num_classes"]
        if required:
            raise ValueError(f"--model {spec!r} is not a model factory: it needs the argument(s) "
                             f"{', '.join(required)}; give a function(num_classes) -> nn.Module or one "
                             "of no arguments")
        if takes_nc:
            kwargs["num_classes"] = num_classes
    try:
        net = fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 -- the user's factory failed: say so in one line
        first = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ValueError(f"--model {spec!r} failed while building the model: {first}") from None
    if not isinstance(net, nn.Module):
        raise ValueError(f"--model {spec!r} returned {type(net).__name__}, not an nn.Module; give a "
                         "function(num_classes) -> nn.Module")
    return net


def random_batch(shape: tuple[int, ...], batch_size: int, dtype: str, vocab: int, num_classes: int,
                 seed: int) -> tuple[Any, Any]:
    """A seeded random batch: x ``[batch_size, *shape]`` (Gaussian, or int64 ids in ``[0, vocab)``),
    y ``[batch_size]`` int64 class indices in ``[0, num_classes)``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if dtype == "int64":
        x = torch.randint(0, vocab, (batch_size, *shape), generator=g, dtype=torch.int64)
    else:
        x = torch.randn((batch_size, *shape), generator=g, dtype=getattr(torch, dtype))
    y = torch.randint(0, num_classes, (batch_size,), generator=g, dtype=torch.int64)
    return x, y


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
        return f"{v:.4e}"
    return f"{v:.4f}"


def run(args: argparse.Namespace) -> int:
    import torch

    from zcfast import options

    # the one front door: every argument is checked before any work starts
    proxies = options.resolve_proxies(args.proxies, option="--proxies")
    dataset = options.resolve_dataset(args.dataset)
    device = options.resolve_device(args.device, option="--device")
    if args.model and args.archs:
        raise ValueError("give either NB201 architectures or --model, not both")
    if not args.model and (args.input_shape is not None or args.num_classes is not None):
        raise ValueError("--input-shape and --num-classes apply to --model only")
    if args.input_shape is None and args.input_dtype != "float32":
        raise ValueError("--input-dtype applies with --input-shape only (images are float32)")
    if args.input_shape is not None and args.data is not None:
        raise ValueError("give --data (images) or --input-shape (a random batch), not both")
    num_classes = args.num_classes or options.num_classes(dataset)
    if args.benchmark is not None and args.model:
        raise ValueError("--benchmark applies to NB201 architectures, not to --model")
    nb201_space = options.resolve_space("nb201", benchmark=args.benchmark) if args.benchmark is not None else None
    if args.threads:
        torch.set_num_threads(args.threads)

    from zcfast.data import paper_batch, paper_batches, split_batch

    def images() -> list[tuple[Any, Any]]:
        if args.batches == 1:
            return [paper_batch(dataset, batch_size=args.batch_size, seed=args.batch_seed, data=args.data)]
        return paper_batches(dataset, args.batch_size, args.batch_seed, args.batches, data=args.data)

    def several(batches: list[tuple[Any, Any]]) -> dict[str, Any]:
        """The scorer's batch arguments: x, y for one batch, batches=[...] for several."""
        if len(batches) == 1:
            return {"inputs": batches[0][0], "targets": batches[0][1]}
        return {"inputs": None, "targets": None, "batches": batches}

    rows: list[tuple[str, dict, float]] = []
    info: list[tuple[str, int, str, float]] = []  # (arch_str, index, key, accuracy) per row
    if args.model:
        if args.input_shape is not None:
            x, y = random_batch(args.input_shape, args.batch_size * args.batches, args.input_dtype, args.vocab,
                                num_classes, args.batch_seed)
            batches = split_batch(x, y, args.batches)
            what = f"{args.batch_size} random {args.input_dtype} inputs of shape {list(args.input_shape)}"
        else:
            batches = images()
            what = f"{batches[0][0].shape[0]} {dataset} images"
        torch.manual_seed(args.seed)  # before building: the initial weights follow --seed
        net = _load_model(args.model, num_classes)
        if args.input_dtype == "float64":
            net = net.double()
        net = net.to(device)
        from zcfast.proxies import score_detailed
        t0 = time.perf_counter()
        batches = [(bx.to(device), by.to(device)) for bx, by in batches]
        res = score_detailed(model=net, proxies=proxies, seed=args.seed, **several(batches))
        rows.append((args.model, res, time.perf_counter() - t0))
        info.append((args.model, -1, "", math.nan))
    else:
        import zcfast.spaces
        from zcfast.scoring import score_arch

        space = nb201_space or zcfast.spaces.get("nb201")
        archs = [space.arch_at(int(text)) if text.strip().isdigit() else space.decode(text)
                 for text in (args.archs or ["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
                                             "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"])]
        batches = images()
        what = f"{batches[0][0].shape[0]} {dataset} images"
        for arch in archs:
            t0 = time.perf_counter()
            res = score_arch(space=space, arch=arch, proxies=proxies, seed=args.seed, num_classes=num_classes,
                             device=str(device), detailed=True, **several(batches))
            label = f"#{space.index(arch)} {space.encode(arch)}"
            rows.append((label, res, time.perf_counter() - t0))
            try:
                acc = float(space.ground_truth(arch, dataset, "test"))
            except (KeyError, ValueError, LookupError):
                acc = math.nan
            info.append((space.encode(arch), space.index(arch), space.key(arch), acc))

    what += f" x {args.batches} mini-batches" if args.batches > 1 else ""
    side = sys.stdout if args.format == "table" else sys.stderr
    print(f"batch: {what} (seed {args.batch_seed}); init seed {args.seed}; device {device}", file=side)
    header = ["model"] + list(proxies) + ["seconds"]
    table = [header]
    notes = []
    n_values = n_bad = 0
    for label, res, secs in rows:
        table.append([label] + [_fmt(res[p].value) for p in proxies] + [f"{secs:.2f}"])
        if "synflow" in res and res["synflow"].log_value is not None:
            notes.append(f"{label}: ln(synflow) = {res['synflow'].log_value:.4f}")
        for p in proxies:
            value, why = options.proxy_outcome(p, res[p])
            n_values += 1
            if why:
                n_bad += 1
                notes.append(f"{label}: {p}: {why}")
    if args.format == "table":
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        for r in table:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    else:
        _write_schema(args.format, proxies, rows, info)
    for n in notes:
        print(n, file=side)
    if n_values and n_bad == n_values:
        print("zcfast score: error: no proxy gave a finite value (reasons above)", file=sys.stderr)
        return 1
    return 0


def _write_schema(fmt: str, proxies: list[str], rows: list[tuple[str, dict, float]],
                  info: list[tuple[str, int, str, float]]) -> None:
    """Print the scores as CSV or JSON in :func:`zcfast.correlate.table_columns`' schema: a
    proxy's value where finite or its raw non-finite value, and the reason in ``<proxy>_error``."""
    import os
    import tempfile
    from pathlib import Path

    from zcfast import options
    from zcfast.correlate import table_columns, write_table

    records = []
    for (label, res, secs), (arch, index, key, acc) in zip(rows, info):
        r: dict[str, Any] = {"arch_str": arch, "index": index, "key": key, "accuracy": acc}
        for p in proxies:
            value, why = options.proxy_outcome(p, res[p])
            r[p] = float(value)
            r[f"{p}_error"] = (why or "").splitlines()[0] if why else ""
        r["seconds"] = float(secs)
        records.append(r)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_table(table_columns(proxies), records, os.path.join(tmp, f"scores.{fmt}"), fmt)
        sys.stdout.write(Path(path).read_text())
