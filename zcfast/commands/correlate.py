"""``zcfast correlate``: the paper's correlation study on a search space's ground truth."""
from __future__ import annotations

import argparse
import signal
import sys

from zcfast.commands import PROXIES_HELP, check_out_dir, count_type

HELP = "rank-correlate zero-cost proxies with benchmark accuracy (the paper's Table 1), resumable"


def _n(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--n must be a positive integer or 'all', got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"--n must be a positive integer or 'all', got {text!r}")
    return v


def _shard(text: str) -> tuple[int, int]:
    try:
        i, k = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like I/K (e.g. 0/2), got {text!r}") from None
    if not 0 <= i < k:
        raise argparse.ArgumentTypeError(f"--shard I/K needs 0 <= I < K, got {text!r}")
    return i, k


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", default="nb201",
                        help="search space with ground truth: nb201 (shipped, or --benchmark) or nb101 "
                             "(with --benchmark); darts only with NAS-Bench-301 (--benchmark MODELS_DIR); "
                             "default nb201")
    parser.add_argument("--benchmark", default=None, metavar="PATH",
                        help="the benchmark file you have: NB101 nasbench_only108.tfrecord / "
                             "nasbench_full.tfrecord / NASLib pickle / converted table; NB201 "
                             "NAS-Bench-201-v1_*.pth or a NATS-tss folder; DARTS: NAS-Bench-301's models "
                             "folder (converted once into $ZCFAST_CACHE; see zcfast import)")
    parser.add_argument("--dataset", default="cifar10",
                        help="ground truth: cifar10, cifar100 or ImageNet16-120 (sets classes and normalisation)")
    parser.add_argument("--proxies", default="paper", help=PROXIES_HELP + " (default paper)")
    parser.add_argument("--n", type=_n, default=1000, help="architectures to sample uniformly, or 'all' (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--out", required=True,
                        help="output directory: scores.csv/.json/.parquet, summary.json, table.txt, PNGs, "
                             "results.sqlite")
    parser.add_argument("--store", default=None, help="result store (default OUT/results.sqlite); rerun to resume")
    parser.add_argument("--data", default=None,
                        help="images for the batch: a shipped set (cifar10, cifar10-test, cifar100) or a user "
                             ".npz (uint8 NHWC 'x', labels 'y') / image folder; default the dataset's shipped set")
    parser.add_argument("--batch-size", type=count_type("--batch-size"), default=64, help="batch size (paper: 64)")
    parser.add_argument("--batch-seed", type=int, default=42, help="seed of the batch draw (paper: 42)")
    parser.add_argument("--batches", type=count_type("--batches"), default=1,
                        help="mini-batches per architecture (default 1): B disjoint batches of --batch-size "
                             "(zcfast.data.paper_batches); multi-batch proxies (zico) read all B, the others the "
                             "first; with 1 a multi-batch proxy splits it (zico: two halves); a separate run in "
                             "the store")
    parser.add_argument("--no-augment", action="store_true", help="no random crop/flip on the batch")
    parser.add_argument("--init-seed", type=int, default=42, help="seed of the per-architecture initialisation")
    parser.add_argument("--variant", default="benchmark",
                        help="network built for each architecture: benchmark (default: the benchmark's own "
                             "network) or, for nb201, official (the zero-cost-nas paper's model: a bias on "
                             "every cell conv, affine-free cell BatchNorms); a separate run in the store")
    parser.add_argument("--batch-per-arch", action="store_true",
                        help="a new batch for every architecture, as the official loop, drawn reproducibly "
                             "from (--batch-seed, architecture); default one batch for all; a separate run "
                             "in the store")
    parser.add_argument("--metric", default=None,
                        help="ground-truth metric (NB201: test, test_robot, test_fewshotnas, valid, paper "
                             "(with a --benchmark file: the cifar10-valid run's test accuracy), or a column "
                             "name; NB101: test, valid, train, halfway_*, training_time). Default: the "
                             "paper's: NB201 cifar10 -> paper when the benchmark has it, else valid (the "
                             "shipped cifar10-valid validation accuracy); otherwise test")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (refused when CUDA is not available)")
    parser.add_argument("--nan-policy", default="omit", choices=("omit", "worst", "raise"),
                        help="NaN scores: omit from the correlation (official), rank worst, or fail")
    parser.add_argument("--time-sample", type=count_type("--time-sample", 0), default=5,
                        help="architectures on which each proxy is timed alone (default 5; 0 skips)")
    parser.add_argument("--bootstrap", type=count_type("--bootstrap", 0), default=1000,
                        help="bootstrap resamples of the 95%% interval of every rho and tau (default 1000; "
                             "0: none)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--shard", type=_shard, default=None,
                        help="I/K: score only sample positions p with p %% K == I; run K such processes on "
                             "one store to use K cores, then --report-only for the whole sample")
    parser.add_argument("--workers", type=count_type("--workers", 0), default=0,
                        help="score in N worker processes (0: in this process); this process writes the store")
    parser.add_argument("--recycle", type=count_type("--recycle"), default=10,
                        help="with --workers: replace each worker after this many architectures (bounds memory)")
    parser.add_argument("--report-only", action="store_true",
                        help="score nothing: report on the sampled architectures already in the store "
                             "(e.g. while a long run is still going)")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop like Ctrl-C, committing the scores computed so far


def run(args: argparse.Namespace) -> int:
    from zcfast import correlate as corr

    signal.signal(signal.SIGTERM, _terminate)
    check_out_dir(args.out)
    try:
        res = corr.correlate(
            args.space, args.dataset, args.proxies, args.n, args.seed,
            out=args.out, store=args.store, data=args.data, batch_size=args.batch_size,
            batch_seed=args.batch_seed, augment=not args.no_augment, init_seed=args.init_seed,
            metric=args.metric, device=args.device, nan_policy=args.nan_policy,
            time_sample=args.time_sample, progress=not args.quiet, plots=not args.no_plots,
            compute=not args.report_only, shard=args.shard,
            workers=args.workers, recycle=args.recycle,
            variant=args.variant, batch_per_arch=args.batch_per_arch, n_batches=args.batches,
            n_boot=args.bootstrap, benchmark=args.benchmark,
        )
    except KeyboardInterrupt:
        print("\nzcfast correlate: interrupted; finished architectures are in the store. "
              "Run the same command again to continue.", file=sys.stderr)
        return 130
    s = res.summary
    print(corr.format_table(s))
    print(f"\n{s['scored_archs']} architectures scored now, {s['resumed_archs']} taken from the store; "
          f"wall {s['wall_seconds']:.1f} s")
    if s.get("missing_archs"):
        print(f"{s['missing_archs']} sampled architectures are not in the store yet and were left out")
    for name, path in res.files.items():
        print(f"  {name:8s} {path}")
    failed = all_failed(res)
    if failed:
        print(f"zcfast correlate: error: every architecture failed to score ({failed}); the errors are in "
              "the store and scores.csv", file=sys.stderr)
        return 1
    return 0


def all_failed(res: object) -> str | None:
    """The first error when every (architecture, proxy) of the study failed, else ``None``."""
    errors = getattr(res, "errors", {})
    if not errors or not res.archs or not all(all(e) for e in errors.values()):
        return None
    return next(iter(errors.values()))[0]
