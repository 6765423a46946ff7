"""Small files in every official benchmark / dataset format, written from data zcfast ships.

``python -m zcfast.formats.fixtures DIR`` (or :func:`write_all`) writes, under ``DIR``, files
named as their users have them::

    nasbench_only108.tfrecord          NAS-Bench-101 tfrecord of the 30 shipped records
                                       (zcfast/assets/nb101; 90 rows: 30 models x 3 runs at 108 epochs)
    nb101_records_30.pkl               the same records as NASLib's pickle (a dict hash -> record)
    NAS-Bench-201-v1_0-e61699.pth      NAS-Bench-201 v1.0 (torch's legacy container) of 12 entries
    NAS-Bench-201-v1_1-096897.pth      NAS-Bench-201 v1.1 (zip container) of the same 12 entries
    NATS-tss-v1_0-3ffb9-simple/        NATS-Bench topology "simple" folder of the same 12 entries
    cifar-10-batches-py/               torchvision CIFAR-10 folder: the 200 shipped training images
                                       (data_batch_1..5) and the 20 shipped test images (test_batch)
    cifar-100-python/                  torchvision CIFAR-100 folder: the 20 shipped CIFAR-100 images
                                       (as ``train`` and as ``test``)
    ImageNet16/                        the NAS-Bench-201 authors' ImageNet16 batches: the 200 shipped
                                       CIFAR-10 training images box-downsampled to 16x16, labels
                                       CIFAR class + 1 (1..10, inside the first 120 classes);
                                       ``val_data`` from the 20 test images. A format fixture: the
                                       pixels are not ImageNet's.

The 12 NB201 entries are the architectures ``zcfast correlate --space nb201 --seed 0 --n 12``
samples (the first 12 of ``random.Random(0).shuffle`` of the 15,625 indices), so a study of
``--n 12`` or fewer on these files has ground truth for every architecture. Their values come
from the shipped table (``zcfast/assets/nb201``), one seed (777) per run, as
:data:`NB201_SOURCES` lists; the paper's own column (the ``cifar10-valid`` run's ``ori-test``
accuracy, which zcfast cannot ship) is filled with the shipped ``cifar10_test_nats`` as a
stand-in, so it is a real accuracy of the architecture but not the benchmark's value for it.
Train accuracies are not shipped either: they are ``min(100, x-valid + 5)``.

Layering: imports ``zcfast.formats`` writers and numpy only (never a space or a command).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import pickle
import random
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["NB201_INDICES", "NB201_SOURCES", "nb101_records", "nb201_entries", "write_all", "main"]

#: How many NB201 architectures the fixture files hold.
NB201_COUNT = 12
#: Their benchmark indices: the first 12 of the seed-0 shuffle (zcfast.correlate.sample_archs).
NB201_INDICES: tuple[int, ...] = tuple((lambda order: (random.Random(0).shuffle(order), order)[1])(
    list(range(15625)))[:NB201_COUNT])
#: (official dataset, hp, split) -> shipped column the fixture's final-epoch value is taken from.
NB201_SOURCES: dict[tuple[str, int, str], str] = {
    ("cifar10-valid", 200, "x-valid"): "cifar10_val_nbsuitezero",
    ("cifar10-valid", 200, "ori-test"): "cifar10_test_nats",      # stand-in for the paper's column
    ("cifar10-valid", 12, "x-valid"): "cifar10valid_hp12_valacc_robot",
    ("cifar10", 200, "ori-test"): "cifar10_test_nats",
    ("cifar100", 200, "x-valid"): "cifar100_test_robot",
    ("cifar100", 200, "x-test"): "cifar100_test_nats",
    ("cifar100", 200, "ori-test"): "cifar100_test_nats",
    ("ImageNet16-120", 200, "x-valid"): "imagenet16_120_val_nbsuitezero",
    ("ImageNet16-120", 200, "x-test"): "imagenet16_120_test_nats",
    ("ImageNet16-120", 200, "ori-test"): "imagenet16_120_test_nats",
}
_SEED = 777


def _asset(*parts: str) -> bytes:
    return (resources.files("zcfast").joinpath("assets", *parts)).read_bytes()


def nb101_records() -> list[dict[str, Any]]:
    """The 30 shipped NAS-Bench-101 records (NASLib format: ``hash``, ``module_adjacency``,
    ``module_operations``, ``trainable_parameters``, ``results["108"]`` = 3 runs)."""
    return json.loads(_asset("nb101", "nb101_records_30.json").decode("utf-8"))


def _shipped_nb201_rows(indices: Sequence[int]) -> dict[int, dict[str, str]]:
    reader = csv.DictReader(io.StringIO(gzip.decompress(_asset("nb201", "nb201_groundtruth_merged.csv.gz"))
                                        .decode("utf-8")))
    wanted = set(indices)
    return {int(r["index"]): r for r in reader if int(r["index"]) in wanted}


def _num(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def nb201_entries(indices: Sequence[int] = NB201_INDICES) -> list[dict[str, Any]]:
    """Writer entries (:data:`zcfast.formats.nb201.Entry`) of the NB201 architectures ``indices``,
    with the values :data:`NB201_SOURCES` names (splits whose shipped value is NaN are left out)."""
    rows = _shipped_nb201_rows(indices)
    entries = []
    for i in indices:
        row = rows[int(i)]
        runs: dict[tuple[str, int], dict[str, Any]] = {}
        for (ds, hp, split), col in NB201_SOURCES.items():
            v = _num(row[col])
            if math.isfinite(v):
                runs.setdefault((ds, hp), {"dataset": ds, "hp": hp, "seed": _SEED, "acc": {}})["acc"][split] = v
        for (ds, hp), run in runs.items():
            ref = run["acc"].get("x-valid", next(iter(run["acc"].values())))
            run["acc"]["train"] = min(100.0, ref + 5.0)
            if (ds, hp) == ("cifar10-valid", 12):
                cost = _num(row["cifar10valid_hp12_cost_robot"])
                if math.isfinite(cost):
                    run["epoch_time"] = cost / 12.0
        entries.append({"index": int(i), "arch_str": row["arch_str"], "runs": list(runs.values())})
    return entries


def _downsample16(x: np.ndarray) -> np.ndarray:
    """uint8 [N, 32, 32, 3] -> uint8 [N, 16, 16, 3], the mean of each 2x2 block (rounded)."""
    f = x.astype(np.float64).reshape(x.shape[0], 16, 2, 16, 2, 3).mean(axis=(2, 4))
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def write_all(folder: str | Path) -> dict[str, Path]:
    """Write every fixture under ``folder`` (created); returns name -> path of what was written."""
    from . import images, nb101, nb201

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    wrote: dict[str, Path] = {}
    records = nb101_records()
    path = out / "nasbench_only108.tfrecord"
    nb101.write_tfrecord(path, records)
    wrote["nb101 tfrecord"] = path
    path = out / "nb101_records_30.pkl"
    with open(path, "wb") as fh:  # plain dicts, lists and floats: what the restricted unpickler admits
        pickle.dump({r["hash"]: r for r in records}, fh, protocol=4)
    wrote["nb101 NASLib pickle"] = path
    entries = nb201_entries()
    wrote["nb201 v1.0 .pth"] = Path(nb201.write_pth(out / "NAS-Bench-201-v1_0-e61699.pth", entries, "v1_0"))
    wrote["nb201 v1.1 .pth"] = Path(nb201.write_pth(out / "NAS-Bench-201-v1_1-096897.pth", entries, "v1_1"))
    wrote["NATS-tss simple folder"] = Path(nb201.write_nats_simple(out / "NATS-tss-v1_0-3ffb9-simple", entries))
    c10 = np.load(io.BytesIO(_asset("cifar", "cifar10_train_200_png_kaggle_raywu60kg.npz")))
    c10t = np.load(io.BytesIO(_asset("cifar", "cifar10_test_first20_png_foolbox.npz")))
    c100 = np.load(io.BytesIO(_asset("cifar", "cifar100_test_first20_png_foolbox.npz")))
    folder10 = out / "cifar-10-batches-py"
    images.write_cifar10_folder(folder10, c10["x"], c10["y"], split="train")
    wrote["CIFAR-10 folder"] = Path(images.write_cifar10_folder(folder10, c10t["x"], c10t["y"], split="test"))
    folder100 = out / "cifar-100-python"
    images.write_cifar100_folder(folder100, c100["x"], c100["y"], split="train")
    wrote["CIFAR-100 folder"] = Path(images.write_cifar100_folder(folder100, c100["x"], c100["y"], split="test"))
    folder16 = out / "ImageNet16"
    images.write_imagenet16_folder(folder16, _downsample16(c10["x"]), c10["y"] + 1, split="train")
    wrote["ImageNet16 folder"] = Path(images.write_imagenet16_folder(folder16, _downsample16(c10t["x"]),
                                                                     c10t["y"] + 1, split="valid"))
    return wrote


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zcfast.formats.fixtures",
                                     description="write small files in every official benchmark / dataset "
                                                 "format from zcfast's shipped data")
    parser.add_argument("folder", help="where to write them (created)")
    args = parser.parse_args(argv)
    try:
        wrote = write_all(args.folder)
    except (OSError, ValueError) as exc:
        print(f"python -m zcfast.formats.fixtures: error: {exc}", file=sys.stderr)
        return 2
    for name, path in wrote.items():
        print(f"{name:24s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
