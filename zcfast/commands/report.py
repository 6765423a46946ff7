"""``zcfast report PATH``: render stored results into the table, files and plots of correlate,
recomputing no proxy.

PATH is one of:

- a result store (``results.sqlite`` of correlate, search or scan): the runs that report
  together (:func:`zcfast.correlate.store_groups`; ``--run`` picks one, default the largest) are
  joined with the space's ground truth;
- a score table (``scores.csv`` / ``.json`` / ``.parquet`` of correlate, score or report): its
  scores and ``accuracy`` column (and the ``summary.json`` beside it, when there is one);
- a ``zcfast search --out`` folder (``seed_*.json``; several folders: one line each): the
  best-so-far curve (``best_so_far.png`` / ``.csv``);
- a ``zcfast correlate --out`` folder: its ``scores.csv`` (else ``.json``, ``.parquet``, else
  its ``results.sqlite``);
- several score tables or correlate folders of the same architectures (e.g. runs of different
  proxies on one sample): joined into one table (:func:`zcfast.correlate.join_tables`: on the
  benchmark index, the rows every table holds, each proxy once; different ground truths are
  an error) and reported as one study.

Example::

    zcfast report runs/c10/results.sqlite --out runs/c10_report
    zcfast report docs/results/nb201_cifar10_1000/scores.csv --out /tmp/r --format json
    zcfast report docs/results/nb201_cifar10_1000 docs/results/nb201_cifar10_modern_1000 --no-plots
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from zcfast.commands import check_out_dir, count_type

HELP = "render a stored run (store, score table or search folder) into the correlate table, files and plots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="a result store (.sqlite), a score table (.csv/.json/.parquet), a correlate "
                             "--out folder, several tables / correlate folders of one sample (joined), or "
                             "search --out folder(s)")
    parser.add_argument("--out", default=None,
                        help="write scores.csv/.json/.parquet, summary.json, table.txt and the PNGs here "
                             "(default: print only)")
    parser.add_argument("--run", default=None, help="store: a run id of the group to report (default the largest)")
    parser.add_argument("--dataset", default=None,
                        help="ground truth dataset (default: the run's or the table's summary.json)")
    parser.add_argument("--metric", default=None, help="store: ground-truth metric (default as correlate)")
    parser.add_argument("--space", default=None, help="table: the space (default its summary.json's, else nb201)")
    parser.add_argument("--nan-policy", default=None, choices=("omit", "worst", "raise"),
                        help="NaN scores (default: the table's summary.json, else omit)")
    parser.add_argument("--bootstrap", type=count_type("--bootstrap", 0), default=1000,
                        help="bootstrap resamples of each 95%% interval (default 1000; 0: none)")
    parser.add_argument("--format", default="table", choices=("table", "csv", "json"),
                        help="what is printed: the table (default), or the score table as CSV or JSON")
    parser.add_argument("--no-plots", action="store_true", help="with --out: skip the PNG plots")


def _is_search_dir(path: Path) -> bool:
    return path.is_dir() and any(path.glob("seed_*.json"))


def _search_report(paths: list[Path], out: str | None) -> int:
    from zcfast.commands.search import write_curves

    runs = {}
    for p in paths:
        if not _is_search_dir(p):
            raise ValueError(f"{p}: not a zcfast search --out folder (no seed_*.json); give one store or table, "
                             "or search folders only")
        runs[p] = [json.loads(f.read_text()) for f in sorted(p.glob("seed_*.json"))]
    target = Path(out) if out else paths[0]
    target.mkdir(parents=True, exist_ok=True)
    files = write_curves(runs, target)
    for name, path in files.items():
        print(f"  {name:8s} {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    from zcfast import correlate as corr

    paths = [Path(p) for p in args.paths]
    check_out_dir(args.out)
    if len(paths) == 1 and paths[0].is_dir() and not _is_search_dir(paths[0]):
        # a correlate --out folder: its score table (with summary.json), else its store
        found = _files_in(paths[0], SCORE_TABLES + ("results.sqlite",))
        if not found:
            raise ValueError(f"{paths[0]}: no seed_*.json, scores.csv/.json/.parquet or results.sqlite to report")
        paths = found[:1]
    if all(p.is_dir() for p in paths) and any(_is_search_dir(p) for p in paths):
        return _search_report(paths, args.out)
    if len(paths) > 1:   # several correlate folders / score tables of one sample: joined into one table
        tables = [_table_in(p) for p in paths]
        if args.out and any(Path(args.out).resolve() == t.parent.resolve() for t in tables):
            raise ValueError(f"--out {args.out} would overwrite a table being read; give another folder")
        res = corr.study_from_table(tables, space=args.space, dataset=args.dataset, nan_policy=args.nan_policy,
                                    n_boot=args.bootstrap)
        return _render(res, args)
    path = paths[0]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such store, table or folder")
    if path.suffix in (".csv", ".json", ".parquet"):
        res = corr.study_from_table(path, space=args.space, dataset=args.dataset, nan_policy=args.nan_policy,
                                    n_boot=args.bootstrap)
    else:
        res = corr.study_from_store(path, run=args.run, dataset=args.dataset, metric=args.metric,
                                    nan_policy=args.nan_policy or "omit", n_boot=args.bootstrap)
    if args.out and Path(args.out).resolve() == path.parent.resolve() and path.name.startswith("scores."):
        raise ValueError(f"--out {args.out} would overwrite the table being read; give another folder")
    return _render(res, args)


#: the score tables a correlate ``--out`` folder may hold, in the order they are preferred
SCORE_TABLES = ("scores.csv", "scores.json", "scores.parquet")


def _files_in(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """The files of ``names`` that ``folder`` holds, in the order of ``names``."""
    return [folder / n for n in names if (folder / n).is_file()]


def _table_in(path: Path) -> Path:
    """A score table given as itself or as the correlate ``--out`` folder holding it."""
    if path.is_dir():
        found = _files_in(path, SCORE_TABLES)
        if not found:
            raise ValueError(f"{path}: no scores.csv/.json/.parquet to join (several PATHs: score tables, or "
                             "search --out folders)")
        return found[0]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such score table or folder")
    if path.suffix not in (".csv", ".json", ".parquet"):
        raise ValueError(f"{path}: several PATHs are joined as score tables (.csv/.json/.parquet); a store is "
                         "reported alone")
    return path


def _render(res, args: argparse.Namespace) -> int:
    """Write (with ``--out``) and print a study as ``--format`` says."""
    from zcfast import correlate as corr

    if args.out:
        res.files = corr.write_outputs(res, args.out, plots=not args.no_plots)
    if args.format == "table":
        print(corr.format_table(res.summary))
        for name, p in res.files.items():
            print(f"  {name:11s} {p}")
    else:
        cols, rows = corr.result_records(res)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            f = corr.write_table(cols, rows, os.path.join(tmp, f"scores.{args.format}"), args.format)
            sys.stdout.write(Path(f).read_text())
    return 0
