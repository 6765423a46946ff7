"""``zcfast scan``: score many candidates into a resumable SQLite store.

Exit status: 0 done; 1 every candidate scored by this call failed (or, with nothing left to
do, every row of the run is an error); 2 a user error, refused before any work (one line);
130 interrupted (scored candidates are kept: run the same command again).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from zcfast.commands import load_callable

HELP = "score many candidates of a search space into a resumable SQLite store (local cores or Ray)"


def _n(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    try:
        v = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--n must be a non-negative integer or 'all', got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"--n must be a non-negative integer or 'all', got {text!r}")
    return v


def _load_callable(spec: str) -> Callable[..., Any]:
    return load_callable(spec, "--scorer", "scorer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", default="nb201", help="search space (nb201, nb101, darts); default nb201")
    parser.add_argument("--benchmark", default=None, metavar="PATH",
                        help="the space's benchmark file (NB101 tfrecord / table / records: --order "
                             "enumerate then scans the file's architectures; NB201 .pth / NATS folder); "
                             "scores do not depend on it")
    parser.add_argument("--proxies", required=True,
                        help="comma-separated proxy names, e.g. synflow,jacob_cov, or 'all' (the paper's six)")
    parser.add_argument("--n", type=_n, default=None,
                        help="distinct candidates the run should hold, or 'all' (default: enumerate the space)")
    parser.add_argument("--store", default="results.sqlite", help="SQLite result store (default results.sqlite); "
                        "run the same command again to resume")
    parser.add_argument("--order", choices=("sample", "enumerate"), default=None,
                        help="candidate stream: seeded uniform samples or the space's enumeration "
                             "(default: sample when --n is given, else enumerate)")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the sampled stream (default 0)")
    parser.add_argument("--dataset", default="cifar10", help="cifar10, cifar100 or ImageNet16-120")
    parser.add_argument("--batch-size", type=int, default=64, help="scoring batch size (paper: 64)")
    parser.add_argument("--batch-seed", type=int, default=42, help="seed of the batch draw (paper: 42)")
    parser.add_argument("--batches", type=int, default=1, metavar="B",
                        help="mini-batches of --batch-size drawn by zcfast.data.paper_batches (default 1, the "
                             "paper batch; the first is always it): multi-batch proxies (zico) read all B, the "
                             "others the first; with 1, a multi-batch proxy splits the one batch")
    parser.add_argument("--seed", type=int, default=42, help="per-architecture init seed (default 42)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--backend", choices=("local", "ray", "serial"), default="local",
                        help="local process pool (default, every core), ray, or serial")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes / Ray actors (default: every core / every cluster CPU)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address HOST:PORT (ray backend; ray://HOST:PORT needs ray[client]); "
                             "default a local instance")
    parser.add_argument("--chunk-size", type=int, default=None, help="candidates per worker task")
    parser.add_argument("--no-batched", action="store_true", help="score one architecture at a time")
    parser.add_argument("--scorer", default=None,
                        help="module:function with zcfast.score_arch's signature (default zcfast.score_arch); "
                             "importing the module runs its code; zcfast.parallel:hash_scorer is an instant "
                             "synthetic scorer for testing")
    parser.add_argument("--commit-rows", type=int, default=256, help="rows per store transaction (default 256)")
    parser.add_argument("--commit-seconds", type=float, default=5.0,
                        help="longest a scored row waits before it is committed (default 5)")
    parser.add_argument("--export", default=None,
                        help="also write the run to this Parquet file (never the store; an existing file "
                             "only with --overwrite, or when it is an earlier export of the same run)")
    parser.add_argument("--overwrite", action="store_true", help="let --export replace an existing file")
    parser.add_argument("--retry-errors", action="store_true",
                        help="rescore the run's rows stored with an error (and damaged rows), in place")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _start_workers_early(args: argparse.Namespace) -> bool:
    """For the local backend, start the forkserver the workers fork from *before* this process
    imports torch (``zcfast.forkserver`` imports neither), so the server's imports overlap ours
    instead of following them; the scan's pool then finds it ready. Its modules: the default
    preload plus the space's own module (a name that is not a module is skipped by the server).
    Returns whether it started the server (then :func:`run` ends it if the command fails)."""
    if args.backend != "local":
        return False
    from zcfast.forkserver import start_forkserver

    space = str(args.space)
    return start_forkserver([f"zcfast.spaces.{space}"] if space.isidentifier() else [])


def run(args: argparse.Namespace) -> int:
    started = _start_workers_early(args)
    try:
        return _run(args)
    except BaseException:
        if started:  # refused (or failed): do not leave the server importing torch in the background
            from zcfast.forkserver import stop_forkserver
            stop_forkserver()
        raise


def _run(args: argparse.Namespace) -> int:
    from zcfast.options import check_count
    from zcfast.scan import scan

    for option, value in (("--workers", args.workers), ("--chunk-size", args.chunk_size)):
        check_count(value, option, allow_none=True)
    check_count(args.batch_size, "--batch-size")
    check_count(args.batches, "--batches")
    check_count(args.commit_rows, "--commit-rows")
    if not args.commit_seconds > 0:
        raise ValueError(f"--commit-seconds must be a number > 0, got {args.commit_seconds}")
    if args.address is not None and args.backend != "ray":
        raise ValueError("--address only applies to --backend ray")
    if args.overwrite and not args.export:
        raise ValueError("--overwrite only applies with --export")
    scorer = _load_callable(args.scorer) if args.scorer else None
    order = args.order or ("sample" if args.n is not None else "enumerate")
    space = args.space
    if args.benchmark is not None:  # the configured space is pickled to the workers with its path
        from zcfast.options import resolve_space

        space = resolve_space(args.space, benchmark=args.benchmark)
    try:
        res = scan(space, args.proxies, args.n, store=args.store, dataset=args.dataset,
                   batch_size=args.batch_size, data_seed=args.batch_seed, n_batches=args.batches, seed=args.seed,
                   order=order, sample_seed=args.sample_seed, device=args.device,
                   backend=args.backend, workers=args.workers, address=args.address,
                   chunk_size=args.chunk_size, scorer=scorer,
                   batch_scorer=None if args.no_batched else "auto",
                   commit_rows=args.commit_rows, commit_seconds=args.commit_seconds,
                   progress=not args.quiet, export=args.export, overwrite=args.overwrite,
                   retry_errors=args.retry_errors)
    except KeyboardInterrupt:
        print("\nzcfast scan: interrupted; scored candidates are in the store. "
              "Run the same command again to continue.", file=sys.stderr)
        return 130
    rate = res.scored / res.seconds if res.seconds > 0 else 0.0
    retried = f", {res.retried} rescored" if res.retried else ""
    print(f"run {res.run_id} in {res.store}: {res.total} candidates "
          f"({res.scored} scored now, {res.errors} with errors{retried}) in {res.seconds:.1f} s, {rate:.1f} arch/s")
    if res.exhausted:
        print(f"the candidate stream ended before {res.target} distinct candidates "
              f"(the space has no more)", file=sys.stderr)
    if args.export:
        print(f"exported to {args.export}")
    for ens in res.ensembles:   # an ensemble ranks the whole run (zcfast.scan.rank_by)
        from zcfast.scan import rank_by
        top = rank_by(res.store, res.run_id, ens, k=5)
        print(f"top {len(top)} by ensemble {ens} (over all {res.total} rows of the run): "
              + ", ".join(f"{a} ({v:.4g})" for a, v in top))
    if res.total_errors and not res.all_failed:
        print(f"{res.total_errors} rows of the run hold an error; --retry-errors rescores them", file=sys.stderr)
    if res.all_failed:
        which = (f"all {res.scored} candidates scored now failed" if res.scored
                 else f"every one of the run's {res.total} rows is an error")
        first = f" (first: {res.first_error})" if res.first_error else ""
        print(f"zcfast scan: {which}{first}; nothing usable was scored (fix the cause, then "
              "--retry-errors rescores them)", file=sys.stderr)
        return 1
    return 0
