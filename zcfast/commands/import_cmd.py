"""``zcfast import``: convert a benchmark file the user has into zcfast's cached table, once.

Example::

    zcfast import nb101 nasbench_only108.tfrecord
    zcfast import nb201 NAS-Bench-201-v1_1-096897.pth --cache /data/zcfast-cache

The converted table goes under ``--cache DIR`` (default ``$ZCFAST_CACHE``, else
``~/.cache/zcfast``), named by a fingerprint of the source, so importing the same file again
reuses it (``--force`` converts again). Commands given ``--benchmark PATH`` use the same table
(and convert on first use when no import was run). Prints :meth:`ImportResult.summary`.
Exit status: 0 done; 2 a missing, unreadable or corrupt file (one line naming it).
"""
from __future__ import annotations

import argparse

HELP = "convert a benchmark file you have (NB101 tfrecord / pickle, NB201 .pth / NATS folder) into the cache, once"

#: The spaces with an importer: name -> module of ``zcfast.formats`` (its ``import_file``).
IMPORTERS: dict[str, str] = {"nb101": "zcfast.formats.nb101", "nb201": "zcfast.formats.nb201"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("space", choices=tuple(IMPORTERS),
                        help="nb101 (nasbench_only108.tfrecord, nasbench_full.tfrecord, NASLib's pickle) or "
                             "nb201 (NAS-Bench-201-v1_0-e61699.pth / -v1_1-096897.pth, a NATS-tss-v1_0-3ffb9 "
                             "folder or file)")
    parser.add_argument("path", help="the benchmark file or folder")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="where the converted table goes (default $ZCFAST_CACHE, else ~/.cache/zcfast)")
    parser.add_argument("--force", action="store_true", help="convert again even when a table for this file exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import importlib
    import os

    if not os.path.exists(os.path.expanduser(args.path)):
        raise FileNotFoundError(f"{args.space} benchmark file not found: {args.path!r}")
    if args.cache is not None and os.path.exists(args.cache) and not os.path.isdir(args.cache):
        raise ValueError(f"--cache {args.cache!r} is an existing file, not a directory")
    module = importlib.import_module(IMPORTERS[args.space])
    result = module.import_file(os.path.expanduser(args.path), cache=args.cache, progress=not args.quiet,
                                force=args.force)
    print(result.summary())
    return 0
