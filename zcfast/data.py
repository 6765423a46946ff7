"""Data for the proxies: shipped CIFAR samples, user datasets and the paper's batch.

The paper (Abdelfattah et al., ICLR 2021) scores every NAS-Bench-201 network on one random
minibatch of 64 training images (seed 42) with the training transform of its code
(SamsungLabs/zero-cost-nas ``foresight/dataset.py``, ``get_cifar_dataloaders``), which
:func:`make_batch` reproduces per dataset:

- cifar10 and cifar100: mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010) (RGB, of
  x/255), RandomCrop(32, padding=4) and a horizontal flip;
- ImageNet16-120: mean (122.68, 116.66, 104.01)/255, std (63.22, 61.26, 65.09)/255,
  RandomCrop(16, padding=2) and a horizontal flip.

(The benchmark's own training code, D-X-Y/AutoDL-Projects ``get_datasets``, has the same crops,
flips and ImageNet16 values, but other CIFAR ones: CIFAR-10 (125.3, 123.0, 113.9)/255 and
(63.0, 62.1, 66.7)/255, CIFAR-100 (129.3, 124.1, 112.4)/255 and (68.2, 65.4, 70.4)/255. zcfast
keeps the paper's, which its stored run ids and published figures were computed with.)

Shipped (``zcfast/assets/cifar``, see its README for provenance and licence):

- ``"cifar10"``: the first 200 CIFAR-10 training images (lossless);
- ``"cifar10-test"``: the first 20 CIFAR-10 test images;
- ``"cifar100"``: the first 20 CIFAR-100 test images (fine labels). Only 20: a batch of 64 needs a
  user dataset;
- ImageNet16-120: no images; pass the NAS-Bench-201 authors' ``ImageNet16/`` folder or a user
  dataset (16x16 images, labels 0..119).

User datasets (:func:`load_dataset`, ``--data PATH``), as their users have them:

- torchvision's CIFAR-10 folder ``cifar-10-batches-py/`` and CIFAR-100 folder ``cifar-100-python/``
  (fine labels), and the NAS-Bench-201 authors' ``ImageNet16/`` batches (restricted to the first
  120 classes as their loader does), each given as the folder itself or a folder holding it
  (NAS-Bench-201's ``$TORCH_HOME/cifar.python`` holds all three: the ``dataset`` chooses). Read by
  :mod:`zcfast.formats.images` through the restricted unpickler (nothing in a file is run);
  ``split="train"`` (default) or the format's test / valid split;
- an ``.npz`` file holding ``x`` (or ``images``) uint8 ``[N, H, W, 3]`` and ``y`` (or ``labels``)
  integer ``[N]`` (optionally ``num_classes``), read with ``allow_pickle=False``;
- a folder with one sub-folder of images per class (sorted sub-folder names give labels 0, 1, ...).

The data must fit the benchmark dataset it is scored for (:func:`paper_batch`'s ``dataset``): an
official folder is that dataset (CIFAR-100 files for ``cifar10`` are refused, naming both), other
data must have labels below its class count, and ImageNet16-120 data 16x16 images.

Proxies that need several mini-batches (ZiCo) get :func:`paper_batches` (n disjoint batches of
one seeded permutation; the first is :func:`paper_batch`), or split the one batch they are given
with :func:`split_batch` (equal consecutive parts). :func:`batches_fingerprint` keys a list of
batches in a store run, equal to :func:`batch_fingerprint` for one batch.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from zcfast.formats.images import ImageSet

__all__ = [
    "PER_ARCH_SCHEME",
    "PaperBatches",
    "per_arch_scheme",
    "arch_batch_seed",
    "DATASETS",
    "MEAN",
    "STD",
    "NUM_CLASSES",
    "SHIPPED",
    "canonical_dataset",
    "load_dataset",
    "load_image_set",
    "IMAGE_SIZE",
    "make_batch",
    "paper_batch",
    "paper_batches",
    "split_batch",
    "batch_fingerprint",
    "batches_fingerprint",
]

ASSETS = Path(__file__).resolve().parent / "assets" / "cifar"

#: Canonical ground-truth dataset names (NAS-Bench-201 naming).
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "ImageNet16-120")

_ALIASES = {
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
    "cifar10-valid": "cifar10",
    "cifar100": "cifar100",
    "cifar-100": "cifar100",
    "imagenet16-120": "ImageNet16-120",
    "imagenet16_120": "ImageNet16-120",
    "imagenet16": "ImageNet16-120",
    "in16": "ImageNet16-120",
}

#: Per-channel normalisation, RGB order, for images scaled to [0, 1] (the paper's code,
#: zero-cost-nas ``get_cifar_dataloaders``; see the module docstring for AutoDL-Projects').
MEAN: dict[str, tuple[float, float, float]] = {
    "cifar10": (0.4914, 0.4822, 0.4465),
    "cifar100": (0.4914, 0.4822, 0.4465),
    "ImageNet16-120": (122.68 / 255, 116.66 / 255, 104.01 / 255),
}
STD: dict[str, tuple[float, float, float]] = {
    "cifar10": (0.2023, 0.1994, 0.2010),
    "cifar100": (0.2023, 0.1994, 0.2010),
    "ImageNet16-120": (63.22 / 255, 61.26 / 255, 65.09 / 255),
}
NUM_CLASSES: dict[str, int] = {"cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}
#: Image side length of each benchmark dataset (the augmentation pads by side // 8).
IMAGE_SIZE: dict[str, int] = {"cifar10": 32, "cifar100": 32, "ImageNet16-120": 16}

#: Shipped sets: name -> (file under zcfast/assets/cifar, number of classes).
SHIPPED: dict[str, tuple[str, int]] = {
    "cifar10": ("cifar10_train_200_png_kaggle_raywu60kg.npz", 10),
    "cifar10-train": ("cifar10_train_200_png_kaggle_raywu60kg.npz", 10),
    "cifar10-test": ("cifar10_test_first20_png_foolbox.npz", 10),
    "cifar100": ("cifar100_test_first20_png_foolbox.npz", 100),
    "cifar100-test": ("cifar100_test_first20_png_foolbox.npz", 100),
}
#: The shipped set ``paper_batch`` uses for each ground-truth dataset when no data is given.
_DEFAULT_DATA = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": None}

_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def canonical_dataset(name: str) -> str:
    """Canonical ground-truth dataset name (``cifar10``, ``cifar100``, ``ImageNet16-120``).

    Raises ValueError naming the unknown dataset and the known ones.
    """
    if not isinstance(name, str):
        raise ValueError(f"dataset must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return _ALIASES[key]


def _check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if x.dtype != np.uint8:
        raise ValueError(f"{where}: images must be uint8 [N, H, W, 3], got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{where}: images must have shape [N, H, W, 3] (uint8 NHWC RGB), got {list(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{where}: the dataset holds no images")
    if min(x.shape[1], x.shape[2]) < 4:
        raise ValueError(f"{where}: images of {x.shape[1]}x{x.shape[2]} pixels are too small (need >= 4x4)")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{where}: labels must have shape [N] = [{x.shape[0]}] to match the images, got {list(y.shape)}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{where}: labels must be >= 0, found {int(y.min())}")
    return np.ascontiguousarray(x), y.astype(np.int64)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    if not zipfile.is_zipfile(path):  # np.load would otherwise try to unpickle it
        raise ValueError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            xk = "x" if "x" in keys else "images" if "images" in keys else None
            yk = "y" if "y" in keys else "labels" if "labels" in keys else None
            if xk is None or yk is None:
                raise ValueError(
                    f"{path}: an .npz dataset needs arrays 'x' (or 'images') and 'y' (or 'labels'); "
                    f"found {sorted(keys)}"
                )
            x, y = f[xk], f[yk]
            nc = int(f["num_classes"]) if "num_classes" in keys else None
    except (OSError, EOFError) as exc:  # not an npz / corrupt zip
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # an object array: loading it would unpickle
            raise ValueError(f"{path}: the .npz holds an object array, which only a pickle load could "
                             "read; zcfast never unpickles data files: store plain uint8/int arrays") from None
        raise
    x, y = _check_arrays(x, y, str(path))
    if nc is None:
        nc = int(y.max()) + 1
    elif y.max() >= nc:
        raise ValueError(f"{path}: label {int(y.max())} is out of range for num_classes={nc}")
    return x, y, nc


def _load_folder(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow ships with matplotlib
        raise ValueError("reading an image folder needs Pillow (pip install pillow)") from exc
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{path}: an image-folder dataset needs one sub-folder per class; found none")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        for f in sorted((path / cls).iterdir()):
            if f.suffix.lower() not in _IMAGE_EXTS or not f.is_file():
                continue
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            except Exception as exc:  # PIL raises many types for a bad file
                raise ValueError(f"{f}: not a readable image ({exc})") from exc
            if images and arr.shape != images[0].shape:
                raise ValueError(
                    f"{f}: image is {arr.shape[1]}x{arr.shape[0]}, but the others are "
                    f"{images[0].shape[1]}x{images[0].shape[0]}; resize them to one size"
                )
            images.append(arr)
            labels.append(label)
    if not images:
        raise ValueError(f"{path}: no images ({', '.join(sorted(_IMAGE_EXTS))}) in its class folders")
    x, y = _check_arrays(np.stack(images), np.asarray(labels, dtype=np.int64), str(path))
    return x, y, len(classes)


#: The benchmark dataset each shipped set holds.
_SHIPPED_KIND = {"cifar10": "cifar10", "cifar10-train": "cifar10", "cifar10-test": "cifar10",
                 "cifar100": "cifar100", "cifar100-test": "cifar100"}


def load_image_set(name_or_path: str | os.PathLike, *, split: str = "train",
                   dataset: str | None = None) -> "ImageSet":
    """:func:`load_dataset` with the identity of the data: an
    :class:`zcfast.formats.images.ImageSet` ``(images uint8 [N, H, W, 3], labels int64 [N],
    num_classes, kind)``, ``kind`` the benchmark dataset an official folder or a shipped set holds
    (``cifar10``, ``cifar100``, ``ImageNet16-120``), None for an ``.npz`` or an image folder.

    Args and errors: as :func:`load_dataset`.
    """
    from zcfast.formats.images import ImageSet, find_image_folders, read_image_folder

    if not isinstance(split, str):
        raise ValueError(f"split must be a string, got {type(split).__name__}")
    if dataset is not None:
        dataset = canonical_dataset(dataset)
    if isinstance(name_or_path, str) and name_or_path.lower() in SHIPPED:
        name = name_or_path.lower()
        if split != "train":
            raise ValueError(f"split={split!r}: the shipped set {name_or_path!r} is one set of images "
                             f"(shipped sets: {', '.join(SHIPPED)}); splits apply to CIFAR / ImageNet16 folders")
        fname, nc = SHIPPED[name]
        x, y, _ = _load_npz(ASSETS / fname)
        return ImageSet(x, y, nc, _SHIPPED_KIND[name])
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"dataset {str(name_or_path)!r} is neither a shipped set ({', '.join(SHIPPED)}) nor an existing path"
        )
    if path.is_dir() and find_image_folders(path):
        got = read_image_folder(path, split, dataset)
        return ImageSet(*_check_arrays(got.images, got.labels, str(path)), got.num_classes, got.kind)
    if split != "train":
        raise ValueError(f"{path}: split={split!r} applies to CIFAR-10 / CIFAR-100 / ImageNet16 folders; "
                         "an .npz or an image-class folder is one set of images (use split='train')")
    if path.is_dir():
        return ImageSet(*_load_folder(path), None)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{path}: a dataset file must be an .npz (uint8 NHWC 'x' and labels 'y'); "
                         "datasets in pickled batches are folders (cifar-10-batches-py/, cifar-100-python/, "
                         "ImageNet16/)")
    return ImageSet(*_load_npz(path), None)


def load_dataset(name_or_path: str | os.PathLike, *, split: str = "train",
                 dataset: str | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Load a shipped sample or a user dataset.

    Args:
        name_or_path: a shipped name (``cifar10``, ``cifar10-test``, ``cifar100``; see
            :data:`SHIPPED`); torchvision's CIFAR-10 / CIFAR-100 python folder or the NAS-Bench-201
            authors' ImageNet16 folder (the folder or a folder holding it, see
            :mod:`zcfast.formats.images`); an ``.npz`` file; or an image folder (one sub-folder
            per class).
        split: for the official folders, ``"train"`` (default) or ``"test"`` (CIFAR) /
            ``"valid"`` (ImageNet16 ``val_data``, also named ``"test"``); other data has only
            ``"train"``.
        dataset: the benchmark dataset wanted, which chooses among several official folders under
            one path (e.g. NAS-Bench-201's ``cifar.python/``).

    Returns:
        ``(images, labels, num_classes)``: images uint8 ``[N, H, W, 3]`` (RGB), labels int64
        ``[N]``, and the number of classes (10 / 100 / 120 for the official folders, the first
        120 ImageNet16 classes with labels 0..119; ``num_classes`` stored in an ``.npz``, the
        number of class folders, or ``max(label) + 1``).

    Raises:
        FileNotFoundError: a path that does not exist, or a missing batch file (named).
        ValueError: wrong array names, keys, shape, dtype or labels, a pickle that is not plain
            data, or a split the data lacks (the message names the file and the problem).
    """
    x, y, nc, _ = load_image_set(name_or_path, split=split, dataset=dataset)
    return x, y, nc


def make_batch(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    mean: Sequence[float],
    std: Sequence[float],
    augment: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``batch_size`` distinct images at random and normalise them.

    The draw uses ``torch.Generator().manual_seed(seed)``: a random permutation of the N images,
    first ``batch_size`` taken; then (``augment``) per image a RandomCrop(H, padding=H//8) with
    zero padding and a horizontal flip with probability 1/2, from the same generator.

    Args:
        images: uint8 ``[N, H, W, 3]``.
        labels: int ``[N]``.
    Returns:
        ``x`` float32 ``[B, 3, H, W]`` normalised as ``(x/255 - mean) / std``, ``y`` int64 ``[B]``.
    """
    images, labels = _check_arrays(np.asarray(images), np.asarray(labels), "make_batch")
    n = images.shape[0]
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the dataset ({n} images)")
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=g)[:batch_size]
    return _augment_normalise(images, labels, idx, g, mean, std, augment)


def _augment_normalise(images: np.ndarray, labels: np.ndarray, idx: torch.Tensor, g: torch.Generator,
                       mean: Sequence[float], std: Sequence[float],
                       augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``idx`` (int64 ``[B]``) of uint8 ``images [N, H, W, 3]``, augmented from ``g`` (per
    image a RandomCrop(H, padding=H//8) with zero fill, then a flip with probability 1/2: tops
    ``[B]``, lefts ``[B]``, flips ``[B]`` drawn in that order) and normalised.

    Returns ``x`` float32 ``[B, 3, H, W]`` = ``(x/255 - mean) / std`` and ``y`` int64 ``[B]``.
    """
    x = torch.from_numpy(images[idx.numpy()]).permute(0, 3, 1, 2).contiguous()  # uint8 [B,3,H,W]
    y = torch.from_numpy(labels[idx.numpy()]).long()
    if augment:
        b, _, h, w = x.shape
        pad = max(1, h // 8)
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # zero fill, as torchvision
        out = torch.empty_like(x)
        tops = torch.randint(0, 2 * pad + 1, (b,), generator=g)
        lefts = torch.randint(0, 2 * pad + 1, (b,), generator=g)
        flips = torch.rand(b, generator=g) < 0.5
        for i in range(b):
            t, l = int(tops[i]), int(lefts[i])
            crop = padded[i, :, t : t + h, l : l + w]
            out[i] = crop.flip(-1) if bool(flips[i]) else crop
        x = out
    xf = x.float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (xf - m) / s, y


def _paper_images(ds: str, batch_size: int, data: str | os.PathLike | None,
                  n_batches: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The training images and labels the paper's batch(es) of dataset ``ds`` are drawn from,
    validated against ``ds`` (an official folder must be ``ds``, labels below its class count,
    ImageNet16-120 images 16x16; ``n_batches`` disjoint batches of ``batch_size`` must fit)."""
    if data is None:
        data = _DEFAULT_DATA[ds]
        if data is None:
            raise ValueError(
                f"no {ds} images are shipped with zcfast; pass the NAS-Bench-201 authors' ImageNet16 folder "
                f"(train_data_batch_1..10, val_data) or a dataset of {IMAGE_SIZE[ds]}x{IMAGE_SIZE[ds]} images "
                f"with labels 0..{NUM_CLASSES[ds] - 1} (an .npz or an image folder), e.g. --data PATH"
            )
    images, labels, _, kind = load_image_set(data, dataset=ds)
    if kind is not None and kind != ds:
        h, w = images.shape[1:3]
        raise ValueError(
            f"{str(data)!r} holds {kind} ({NUM_CLASSES.get(kind, '?')} classes, {h}x{w} images, labels up to "
            f"{int(labels.max())}), but the dataset is {ds} ({NUM_CLASSES[ds]} classes, "
            f"{IMAGE_SIZE[ds]}x{IMAGE_SIZE[ds]} images): pass --dataset {kind}, or {ds} data")
    if ds == "ImageNet16-120" and images.shape[1:3] != (16, 16):
        raise ValueError(f"{str(data)!r} holds {images.shape[1]}x{images.shape[2]} images, but ImageNet16-120 "
                         "images are 16x16 (pass the ImageNet16 folder or 16x16 images)")
    if batch_size > images.shape[0]:
        hint = (
            " (zcfast ships only 20 CIFAR-100 images: use batch_size <= 20 or pass a dataset)"
            if data == "cifar100" else ""
        )
        raise ValueError(f"batch_size {batch_size} is larger than the {images.shape[0]} images of {str(data)!r}{hint}")
    if n_batches * batch_size > images.shape[0]:
        raise ValueError(f"n_batches x batch_size = {n_batches} x {batch_size} = {n_batches * batch_size} distinct "
                         f"images, but {str(data)!r} holds {images.shape[0]}: use fewer batches (--batches) or "
                         "smaller ones, or pass a larger dataset")
    if labels.max() >= NUM_CLASSES[ds]:
        raise ValueError(
            f"label {int(labels.max())} in {str(data)!r} is out of range for {ds} "
            f"({NUM_CLASSES[ds]} classes, labels 0..{NUM_CLASSES[ds] - 1})"
        )
    return images, labels


def paper_batch(
    dataset: str = "cifar10",
    batch_size: int = 64,
    seed: int = 42,
    *,
    data: str | os.PathLike | None = None,
    augment: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's minibatch: ``batch_size`` random training images, seed 42, normalised.

    Args:
        dataset: ground-truth dataset (``cifar10``, ``cifar100``, ``ImageNet16-120``): chooses the
            normalisation, the default images and the label range (10 / 100 / 120 classes).
        batch_size: images in the batch (the paper: 64 for NB201).
        seed: generator seed for the draw and the augmentation (the paper: 42).
        data: images to draw from: a shipped name or a user dataset path (an official CIFAR /
            ImageNet16 folder, whose training split is used, an ``.npz`` or an image folder; see
            :func:`load_dataset`); default the shipped set of ``dataset``.
        augment: apply the official training augmentation (random crop with padding + flip).

    Returns:
        ``x`` float32 ``[B, 3, H, W]`` and ``y`` int64 ``[B]``.

    Raises:
        ValueError: no shipped data for the dataset (ImageNet16-120), too few images (shipped
            CIFAR-100 has 20), an official folder or shipped set of another dataset (CIFAR-100
            files for ``cifar10``), ImageNet16-120 images that are not 16x16, or labels outside
            ``[0, num_classes)`` of the dataset.
    """
    ds = canonical_dataset(dataset)
    images, labels = _paper_images(ds, batch_size, data)
    return make_batch(images, labels, batch_size, seed, MEAN[ds], STD[ds], augment=augment)


def paper_batches(
    dataset: str = "cifar10",
    batch_size: int = 64,
    seed: int = 42,
    n_batches: int = 2,
    *,
    data: str | os.PathLike | None = None,
    augment: bool = True,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` reproducible mini-batches of distinct images, for multi-batch proxies.

    The draw is one epoch of a shuffled loader, reproducibly: ``torch.Generator().manual_seed(seed)``
    permutes the N images once and batch ``i`` takes positions ``[i*B, (i+1)*B)`` of that
    permutation, so no image appears twice (in one batch or across batches). After each batch's
    draw its augmentation is drawn from the same generator, as :func:`make_batch` does. Hence
    **batch 0 equals** ``paper_batch(dataset, batch_size, seed, ...)`` exactly: a single-batch
    proxy scored on the first batch sees the paper's batch. The official ZiCo NB201 port takes
    2 batches of 64 (``n_batches=2, batch_size=64``, which the 200 shipped CIFAR-10 images hold).

    Args:
        dataset, batch_size, seed, data, augment: as :func:`paper_batch`.
        n_batches: number of batches, >= 1.

    Returns:
        ``[(x float32 [B, 3, H, W], y int64 [B]), ...]`` of length ``n_batches``.

    Raises:
        ValueError: as :func:`paper_batch`, a bad ``n_batches``, or
            ``n_batches * batch_size`` larger than the dataset (the message names the sizes).
    """
    ds = canonical_dataset(dataset)
    _check_n_batches(n_batches)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    images, labels = _paper_images(ds, batch_size, data, n_batches)
    return _draw_batches(images, labels, ds, batch_size, seed, n_batches, augment)


def _check_n_batches(n_batches: object) -> int:
    """``n_batches`` as a positive int, else ValueError naming it."""
    if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches < 1:
        raise ValueError(f"n_batches must be a positive integer, got {n_batches!r}")
    return n_batches


def _draw_batches(images: np.ndarray, labels: np.ndarray, ds: str, batch_size: int, seed: int,
                  n_batches: int, augment: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`paper_batches`' draw from validated images: one permutation of ``seed``, batch ``i``
    its positions ``[i*B, (i+1)*B)``, each batch's augmentation drawn after it from the same generator."""
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(images.shape[0], generator=g)
    return [_augment_normalise(images, labels, perm[i * batch_size:(i + 1) * batch_size], g,
                               MEAN[ds], STD[ds], augment)
            for i in range(n_batches)]


def split_batch(x: torch.Tensor, y: torch.Tensor | None, parts: int, *,
                drop_remainder: bool = False) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Split one batch into ``parts`` equal, consecutive mini-batches (views, no copy).

    The rule a multi-batch proxy applies when it is given a single batch (ZiCo: two halves):
    part ``i`` is samples ``[i*B//parts, (i+1)*B//parts)`` in their order. When ``B`` is not a
    multiple of ``parts`` the split is refused (ValueError naming ``B`` and ``parts``), unless
    ``drop_remainder=True``: then the last ``B % parts`` samples are left out of every part.

    Args:
        x: inputs ``[B, ...]``.
        y: targets ``[B, ...]`` (same ``B``), or None (then every part's targets are None).
        parts: number of mini-batches, ``1 <= parts <= B``.
        drop_remainder: leave out the last ``B % parts`` samples instead of refusing.

    Returns:
        ``[(x_i [B // parts, ...], y_i [B // parts, ...] or None), ...]`` of length ``parts``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or (y is not None and (
            not isinstance(y, torch.Tensor) or y.dim() < 1)):
        raise ValueError("split_batch: x (and y unless None) must be tensors with a batch dimension [B, ...]")
    b = int(x.shape[0])
    if y is not None and int(y.shape[0]) != b:
        raise ValueError(f"split_batch: x holds {b} samples but y holds {int(y.shape[0])}; they must match")
    if isinstance(parts, bool) or not isinstance(parts, int) or not 1 <= parts <= b:
        raise ValueError(f"parts must be an integer in [1, {b}] (the batch size), got {parts!r}")
    if b % parts and not drop_remainder:
        raise ValueError(f"a batch of {b} samples does not split into {parts} equal parts ({b} % {parts} = "
                         f"{b % parts}); use a batch size divisible by {parts}, pass several batches, "
                         "or drop_remainder=True")
    step = b // parts
    return [(x[i * step:(i + 1) * step], None if y is None else y[i * step:(i + 1) * step])
            for i in range(parts)]


#: How :meth:`PaperBatches.for_arch` draws a batch, as recorded in a store run's batch key
#: (``store.BatchKey.per_arch``; this exact text keeps earlier stores' run ids).
PER_ARCH_SCHEME: str = "make_batch(seed=sha256(f'{seed}:batch:{space.key(arch)}'))"


def per_arch_scheme(n_batches: int = 1) -> str:
    """The per-architecture scheme text of ``n_batches`` batches per architecture
    (:meth:`PaperBatches.for_arch_batches`): :data:`PER_ARCH_SCHEME` for one batch (earlier run
    ids unchanged), else the :func:`paper_batches` draw with the architecture's seed."""
    n = _check_n_batches(n_batches)
    if n == 1:
        return PER_ARCH_SCHEME
    return f"paper_batches(seed=sha256(f'{{seed}}:batch:{{space.key(arch)}}'), n_batches={n})"


def arch_batch_seed(seed: int, key: str) -> int:
    """Seed of one architecture's batch (``PaperBatches.for_arch``): depends only on (seed, key).

    ``int.from_bytes(sha256(f"{seed}:batch:{key}").digest()[:8], "little") & (2**63 - 1)`` (the
    ``batch:`` tag keeps it apart from the architecture's weight seed, design.md §5).
    """
    from zcfast.seeding import arch_seed

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"batch seed must be an int, got {seed!r}")
    if not isinstance(key, str):
        raise ValueError(f"architecture key must be a str, got {type(key).__name__}")
    return arch_seed(seed, "batch:" + key)  # the same hash as the weights' seed, tagged


class PaperBatches:
    """The paper's batch (or ``n_batches`` of them), fixed or drawn anew for each architecture,
    from images loaded once.

    ``fixed()`` is :func:`paper_batch` (one batch for every architecture, zcfast's default).
    ``for_arch(key)`` mimics the official zero-cost-nas loop, which calls
    ``iter(train_loader)`` once per architecture so every architecture sees a new random,
    augmented batch; here the draw is reproducible: ``make_batch`` with the seed
    :func:`arch_batch_seed` ``(seed, key)``, same images, augmentation and normalisation.
    ``fixed_batches()`` / ``for_arch_batches(key)`` are the ``n_batches`` disjoint mini-batches of
    :func:`paper_batches` with the same seeds (their first batch is ``fixed()`` / ``for_arch(key)``),
    for proxies that need several mini-batches (ZiCo).
    Picklable (holds numpy arrays), so worker processes can draw the same batches.

    Raises:
        ValueError / FileNotFoundError: as :func:`paper_batch` / :func:`paper_batches`, at
            construction (``n_batches * batch_size`` images must fit).
    """

    def __init__(self, dataset: str = "cifar10", batch_size: int = 64, seed: int = 42, *,
                 data: str | os.PathLike | None = None, augment: bool = True, n_batches: int = 1) -> None:
        self.dataset = canonical_dataset(dataset)
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.n_batches = _check_n_batches(n_batches)
        self.images, self.labels = _paper_images(self.dataset, batch_size, data, self.n_batches)

    def _draw(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.dataset
        return make_batch(self.images, self.labels, self.batch_size, seed, MEAN[ds], STD[ds],
                          augment=self.augment)

    def _draw_all(self, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.n_batches == 1:
            return [self._draw(seed)]
        return _draw_batches(self.images, self.labels, self.dataset, self.batch_size, seed, self.n_batches,
                             self.augment)

    def fixed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one batch of seed ``seed`` (equals ``paper_batch(dataset, batch_size, seed, ...)``)."""
        return self._draw(self.seed)

    def for_arch(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of the architecture with key ``key`` (e.g. ``space.key(arch)``)."""
        return self._draw(arch_batch_seed(self.seed, key))

    def fixed_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``paper_batches(dataset, batch_size, seed, n_batches, ...)``: ``[(x [B, 3, H, W], y [B]), ...]``;
        one batch: ``[fixed()]``."""
        return self._draw_all(self.seed)

    def for_arch_batches(self, key: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The ``n_batches`` batches of architecture ``key``: :func:`paper_batches`' draw with seed
        ``arch_batch_seed(seed, key)`` (scheme :func:`per_arch_scheme`); one batch: ``[for_arch(key)]``."""
        return self._draw_all(arch_batch_seed(self.seed, key))


def batch_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """A short sha256 of a batch (its shape, dtype and values): identifies the batch in a run's config."""
    h = hashlib.sha256()
    xc = x.detach().cpu().contiguous()
    h.update(f"{tuple(xc.shape)}|{xc.dtype}|".encode())
    h.update(xc.numpy().tobytes())
    h.update(y.detach().cpu().long().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def batches_fingerprint(batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """A short sha256 of a list of batches, for store keys.

    One batch: exactly :func:`batch_fingerprint` of it (so single-batch run ids are unchanged).
    Several: sha256 of ``"batches:<n>:"`` and each batch's fingerprint in order (order matters).

    Raises:
        ValueError: an empty list, or an element that is not an ``(x, y)`` pair of tensors.
    """
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Sequence) or len(batches) == 0:
        raise ValueError("batches must be a non-empty list of (inputs, targets) tensor pairs")
    prints = []
    for i, pair in enumerate(batches):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                and all(isinstance(t, torch.Tensor) for t in pair)):
            raise ValueError(f"batches[{i}] must be an (inputs, targets) pair of tensors")
        prints.append(batch_fingerprint(pair[0], pair[1]))
    if len(prints) == 1:
        return prints[0]
    return hashlib.sha256(f"batches:{len(prints)}:{','.join(prints)}".encode()).hexdigest()[:16]
