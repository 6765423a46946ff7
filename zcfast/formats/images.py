"""Image datasets as their users have them: torchvision's CIFAR folders and the NB201 ImageNet16 batches.

Three official on-disk formats, all folders of Python pickles (the CIFAR ones written by Python 2
``cPickle``, protocol 2, so they are read with ``encoding="latin1"`` as torchvision and the
NAS-Bench-201 authors read them), read through :mod:`zcfast.safe_pickle`'s restricted unpickler
(only plain containers and numpy arrays; anything else is refused before it runs):

- **CIFAR-10** (torchvision ``cifar-10-batches-py/``): ``data_batch_1`` .. ``data_batch_5`` (the
  training set), ``test_batch``, ``batches.meta``. Each batch is a dict with ``data`` uint8
  ``[n, 3072]`` (one image per row: the 1024 red, then green, then blue values of a 32x32 image,
  row-major) and ``labels`` (a list of ``n`` ints in 0..9); ``batches.meta`` holds ``label_names``.
- **CIFAR-100** (torchvision ``cifar-100-python/``): files ``train``, ``test``, ``meta``; the data
  files hold ``data`` uint8 ``[n, 3072]`` as CIFAR-10, ``fine_labels`` (0..99, the 100 classes
  used here) and ``coarse_labels`` (0..19); ``meta`` holds ``fine_label_names`` and
  ``coarse_label_names``.
- **ImageNet16** (the NAS-Bench-201 authors' ``ImageNet16/``, the 16x16 Downsampled ImageNet):
  ``train_data_batch_1`` .. ``train_data_batch_10`` and ``val_data``, dicts with ``data`` uint8
  ``[n, 768]`` (3 planes of 16x16) and ``labels`` (1-based, 1..1000). ImageNet16-120 is what the
  authors' loader (``ImageNet16(root, train, transform, use_num_of_class_only=120)``) keeps: the
  images whose label is in 1..120, in file order, labels shifted to 0..119. It is read batch by
  batch, keeping only those images (the full training set is 1.28 M images; 151,700 are kept).

Splits: ``"train"`` (default: the proxies' batch is drawn from training images, as the paper) and
``"test"`` for the CIFAR folders; ``"train"`` and ``"valid"`` (``val_data``; ``"test"`` names the
same file, which NAS-Bench-201 loads as its ImageNet16 test set) for ImageNet16. The training
batches read are ``<prefix>1`` up to the highest number present (the official 5 / 10); one missing
in between is an error naming it.

Each reader returns an :class:`ImageSet` ``(images uint8 [N, H, W, 3] RGB, labels int64 [N],
num_classes, kind)``, ``kind`` the benchmark dataset name (``cifar10``, ``cifar100``,
``ImageNet16-120``). :func:`find_image_folders` finds these folders at a path or directly under
it (e.g. NAS-Bench-201's ``$TORCH_HOME/cifar.python`` holds all three).

The writers (:func:`write_cifar10_folder`, :func:`write_cifar100_folder`,
:func:`write_imagenet16_folder`) write small folders in the same formats, for tests and fixtures:
Python-2-style protocol-2 pickles (byte strings as ``BINSTRING``, ``numpy.core.multiarray``
globals) with the official keys and numpy arrays, which the official loaders read as they read
the originals.

Layering: imports only ``zcfast.safe_pickle``, numpy and the standard library.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import struct
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from zcfast import safe_pickle

__all__ = [
    "KINDS",
    "FOLDER_NAMES",
    "SPLITS",
    "CIFAR100_COARSE_OF_FINE",
    "ImageSet",
    "find_image_folders",
    "read_cifar10_folder",
    "read_cifar100_folder",
    "read_imagenet16_folder",
    "read_image_folder",
    "write_cifar10_folder",
    "write_cifar100_folder",
    "write_imagenet16_folder",
]

#: The dataset each format holds (benchmark dataset names, as ``zcfast.data.DATASETS``).
KINDS: tuple[str, ...] = ("cifar10", "cifar100", "ImageNet16-120")
#: The folder names the official tools use (torchvision; NAS-Bench-201's ``cifar.python/``).
FOLDER_NAMES: dict[str, str] = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python",
                                "ImageNet16-120": "ImageNet16"}
#: The splits each format has.
SPLITS: dict[str, tuple[str, ...]] = {"cifar10": ("train", "test"), "cifar100": ("train", "test"),
                                      "ImageNet16-120": ("train", "valid", "test")}
_DESC = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "ImageNet16-120": "ImageNet16"}

#: CIFAR-100's superclass (coarse label, 0..19) of each fine label 0..99, as in the official files.
CIFAR100_COARSE_OF_FINE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)
_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR100_FINE_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel "
    "can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur "
    "dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion "
    "lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree "
    "pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea "
    "seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table "
    "tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman "
    "worm").split()
_CIFAR100_COARSE_NAMES = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes "
    "large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals "
    "trees vehicles_1 vehicles_2").split()


class ImageSet(NamedTuple):
    """Images read from an official folder."""

    images: np.ndarray   #: uint8 ``[N, H, W, 3]`` RGB (C-contiguous)
    labels: np.ndarray   #: int64 ``[N]``, 0-based
    num_classes: int     #: 10, 100 or 120 (the ImageNet16 classes kept)
    kind: str | None     #: ``cifar10`` / ``cifar100`` / ``ImageNet16-120`` (None: not an official format)


# ------------------------------------------------------------------------------ reading pickles
def _unpickle(path: Path) -> Any:
    """The plain data in pickle ``path``; FileNotFoundError / UnsafePickleError / ValueError naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            # Python 2 byte strings as latin-1, as torchvision and NAS-Bench-201 read these files
            # (numpy arrays pickled by Python 2 need it); the restricted unpickler admits no code
            return safe_pickle.RestrictedUnpickler(f, str(path), encoding="latin1").load()
    except safe_pickle.UnsafePickleError:
        raise
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError, OverflowError, UnicodeDecodeError) as exc:
        msg = f"{path}: not a readable pickle of plain data ({type(exc).__name__}: {exc})"
        raise ValueError(msg.splitlines()[0]) from None


def _entry(path: Path, obj: Any, what: str, keys: Sequence[str]) -> dict[str, Any]:
    """``obj`` as a dict with str keys holding ``keys``; ValueError naming the file otherwise."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a valid {what} file: it holds a {type(obj).__name__}, not a dict")
    out = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    missing = [k for k in keys if k not in out]
    if missing:
        found = ", ".join(repr(k) for k in sorted(map(str, out))) or "nothing"
        raise ValueError(f"{path}: not a valid {what} file: missing key(s) {', '.join(map(repr, missing))} "
                         f"(found {found})")
    return out


def _planes(path: Path, data: Any, side: int, what: str) -> np.ndarray:
    """``data`` uint8 ``[n, 3*side*side]`` (RGB planes) as ``[n, side, side, 3]`` (a view)."""
    row = 3 * side * side
    if not isinstance(data, np.ndarray):
        raise ValueError(f"{path}: {what} 'data' must be a numpy array, got {type(data).__name__}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        raise ValueError(f"{path}: {what} 'data' must be uint8 [N, {row}] ({side}x{side} RGB planes), "
                         f"got {data.dtype} {list(data.shape)}")
    return data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1)


def _labels(path: Path, value: Any, key: str, n: int, lo: int, hi: int) -> np.ndarray:
    """Labels ``value`` (a list or array of ``n`` ints in ``[lo, hi]``) as int64 ``[n]``."""
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(f"{path}: {key!r} must be a list of integers, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise ValueError(f"{path}: {key!r} must be a list of integers") from None
    if arr.ndim != 1 or arr.shape[0] != n:
        held = arr.shape[0] if arr.ndim == 1 else list(arr.shape)
        raise ValueError(f"{path}: {key!r} holds {held} values for {n} images; they must match")
    if n and not (np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_):
        raise ValueError(f"{path}: {key!r} must be integers, got {arr.dtype}")
    arr = arr.astype(np.int64)
    if n and (arr.min() < lo or arr.max() > hi):
        bad = int(arr.min()) if arr.min() < lo else int(arr.max())
        note = " (the ImageNet16 files' labels are 1-based)" if lo == 1 else ""
        raise ValueError(f"{path}: {key!r} holds {bad}, outside {lo}..{hi}{note}")
    return arr


def _numbered(folder: Path, prefix: str, what: str, official: int) -> list[Path]:
    """``<prefix>1`` .. ``<prefix>K`` in ``folder``, K the highest present; a gap is an error."""
    pat = re.compile(re.escape(prefix) + r"([1-9][0-9]*)$")
    nums = sorted(int(m.group(1)) for p in folder.iterdir() if p.is_file() and (m := pat.match(p.name)))
    if not nums:
        raise FileNotFoundError(f"{folder}: no {what} training batches ({prefix}1 .. {prefix}{official})")
    for k in range(1, nums[-1] + 1):
        if k not in nums:
            raise FileNotFoundError(f"{folder / f'{prefix}{k}'}: missing ({what}'s training set is "
                                    f"{prefix}1 .. {prefix}{nums[-1]}; the official one has {official})")
    return [folder / f"{prefix}{k}" for k in range(1, nums[-1] + 1)]


def _check_split(kind: str, split: str) -> str:
    if split not in SPLITS[kind]:
        extra = (" (NAS-Bench-201's 'valid' split of CIFAR is a subset of these files, not a file)"
                 if split == "valid" else "")
        raise ValueError(f"{_DESC[kind]} has no split {split!r}; use one of "
                         f"{', '.join(map(repr, SPLITS[kind]))}{extra}")
    return split


def _meta_classes(path: Path, key: str, expected: int, what: str) -> None:
    """Check an optional meta file: ``key`` lists ``expected`` class names."""
    if not path.exists():
        return
    meta = _entry(path, _unpickle(path), what, (key,))
    names = meta[key]
    if not isinstance(names, (list, tuple)) or len(names) != expected:
        count = len(names) if isinstance(names, (list, tuple)) else type(names).__name__
        raise ValueError(f"{path}: {key!r} must list {expected} class names, got {count}")


def _resolve(path: str | os.PathLike, kind: str) -> Path:
    """The ``kind`` folder at ``path`` or directly under it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such folder")
    found = find_image_folders(p)
    if kind in found:
        return found[kind]
    if not p.is_dir():
        raise ValueError(f"{p}: not a folder (a {_DESC[kind]} dataset is a folder of pickles)")
    raise FileNotFoundError(f"{p}: no {_DESC[kind]} files here or in a sub-folder "
                            f"(expected {FOLDER_NAMES[kind]}/ with {_MARKERS[kind][0]}, ...)")


def _concat(parts: list[np.ndarray], side: int) -> np.ndarray:
    if not parts:
        return np.zeros((0, side, side, 3), np.uint8)
    return np.ascontiguousarray(np.concatenate(parts)) if len(parts) > 1 else np.ascontiguousarray(parts[0])


def _nonempty(folder: Path, x: np.ndarray, what: str, split: str) -> None:
    if x.shape[0] == 0:
        raise ValueError(f"{folder}: the {what} {split} split holds no images")


def read_cifar10_folder(path: str | os.PathLike, split: str = "train") -> ImageSet:
    """torchvision's CIFAR-10 python folder (``cifar-10-batches-py/``, or a folder holding it).

    Args:
        path: the folder or its parent.
        split: ``"train"`` (``data_batch_1`` .. ``data_batch_5``, in that order) or ``"test"``
            (``test_batch``).

    Returns:
        :class:`ImageSet` of uint8 ``[N, 32, 32, 3]`` images, labels 0..9, 10 classes, kind ``cifar10``.

    Raises:
        FileNotFoundError: no such folder, or a batch file missing (named).
        ValueError: a file that is not a CIFAR-10 batch (a refused global, not a pickle, wrong
            keys, shapes or labels), named with the problem.
    """
    _check_split("cifar10", split)
    folder = _resolve(path, "cifar10")
    _meta_classes(folder / "batches.meta", "label_names", 10, "CIFAR-10 batches.meta")
    files = _numbered(folder, "data_batch_", "CIFAR-10", 5) if split == "train" else [folder / "test_batch"]
    xs, ys = [], []
    for f in files:
        e = _entry(f, _unpickle(f), "CIFAR-10 batch", ("data", "labels"))
        x = _planes(f, e["data"], 32, "CIFAR-10")
        ys.append(_labels(f, e["labels"], "labels", x.shape[0], 0, 9))
        xs.append(x)
    x = _concat(xs, 32)
    _nonempty(folder, x, "CIFAR-10", split)
    return ImageSet(x, np.concatenate(ys), 10, "cifar10")


def read_cifar100_folder(path: str | os.PathLike, split: str = "train") -> ImageSet:
    """torchvision's CIFAR-100 python folder (``cifar-100-python/``, or a folder holding it).

    Args:
        path: the folder or its parent.
        split: ``"train"`` (file ``train``) or ``"test"`` (file ``test``).

    Returns:
        :class:`ImageSet` of uint8 ``[N, 32, 32, 3]`` images, the **fine** labels 0..99, 100
        classes, kind ``cifar100``.

    Raises:
        FileNotFoundError / ValueError: as :func:`read_cifar10_folder`.
    """
    _check_split("cifar100", split)
    folder = _resolve(path, "cifar100")
    _meta_classes(folder / "meta", "fine_label_names", 100, "CIFAR-100 meta")
    f = folder / split
    e = _entry(f, _unpickle(f), "CIFAR-100 data", ("data", "fine_labels"))
    x = _planes(f, e["data"], 32, "CIFAR-100")
    y = _labels(f, e["fine_labels"], "fine_labels", x.shape[0], 0, 99)
    if "coarse_labels" in e:
        _labels(f, e["coarse_labels"], "coarse_labels", x.shape[0], 0, 19)
    x = np.ascontiguousarray(x)
    _nonempty(folder, x, "CIFAR-100", split)
    return ImageSet(x, y, 100, "cifar100")


def read_imagenet16_folder(path: str | os.PathLike, split: str = "train", num_classes: int = 120) -> ImageSet:
    """The NAS-Bench-201 authors' ImageNet16 folder (``ImageNet16/``, or a folder holding it),
    restricted to the first ``num_classes`` classes as their loader does.

    Their ``ImageNet16(root, train, transform, use_num_of_class_only=120)`` keeps the images with
    1-based label ``1 <= L <= 120`` in file order and returns ``L - 1``; so does this reader,
    loading one batch at a time and keeping only those images.

    Args:
        path: the folder or its parent.
        split: ``"train"`` (``train_data_batch_1`` .. ``train_data_batch_10``) or ``"valid"``
            (``val_data``; ``"test"`` is the same file, NAS-Bench-201's ImageNet16 test set).
        num_classes: classes kept (120 for ImageNet16-120; 1..999 as the authors' loader allows).

    Returns:
        :class:`ImageSet` of uint8 ``[N, 16, 16, 3]`` images, labels ``0 .. num_classes - 1``,
        ``num_classes``, kind ``ImageNet16-120`` (for 120 classes; ``ImageNet16-<n>`` otherwise).

    Raises:
        FileNotFoundError / ValueError: as :func:`read_cifar10_folder`; also labels outside
            1..1000 (the files are 1-based) and a split with no image of the kept classes.
    """
    _check_split("ImageNet16-120", split)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 0 < num_classes < 1000:
        raise ValueError(f"num_classes must be an integer in 1..999, got {num_classes!r}")
    folder = _resolve(path, "ImageNet16-120")
    files = (_numbered(folder, "train_data_batch_", "ImageNet16", 10) if split == "train"
             else [folder / "val_data"])
    xs, ys = [], []
    for f in files:
        e = _entry(f, _unpickle(f), "ImageNet16 batch", ("data", "labels"))
        x = _planes(f, e["data"], 16, "ImageNet16")
        y = _labels(f, e["labels"], "labels", x.shape[0], 1, 1000)
        keep = y <= num_classes   # labels are >= 1 (checked)
        xs.append(np.ascontiguousarray(x[keep]))   # a copy of the kept rows; the batch is dropped
        ys.append(y[keep] - 1)
        del e, x
    x = _concat(xs, 16)
    if x.shape[0] == 0:
        raise ValueError(f"{folder}: the ImageNet16 {split} split holds no image of classes 1..{num_classes}")
    kind = "ImageNet16-120" if num_classes == 120 else f"ImageNet16-{num_classes}"
    return ImageSet(x, np.concatenate(ys), num_classes, kind)


_MARKERS: dict[str, tuple[str, ...]] = {
    "cifar10": ("data_batch_1", "test_batch", "batches.meta"),
    "cifar100": ("train", "test", "meta"),
    "ImageNet16-120": ("train_data_batch_1", "val_data"),
}


def _kind_of(folder: Path, scan: bool = False) -> str | None:
    """The format of ``folder`` itself (by its marker files, else its official name; ``scan``:
    also any numbered training batch, e.g. a folder whose first batch is missing), or None."""
    for kind in ("ImageNet16-120", "cifar10", "cifar100"):
        if any((folder / m).is_file() for m in _MARKERS[kind]):
            return kind
    for kind, name in FOLDER_NAMES.items():   # an official name (and only files, not class
        if folder.name == name and not any(q.is_dir() for q in folder.iterdir()):   # folders)
            return kind                      # : its reader names what is missing
    if not scan:
        return None
    if any(p.is_file() and p.name.startswith("train_data_batch_") for p in folder.iterdir()):
        return "ImageNet16-120"
    if any(p.is_file() and p.name.startswith("data_batch_") for p in folder.iterdir()):
        return "cifar10"
    return None


def find_image_folders(path: str | os.PathLike) -> dict[str, Path]:
    """The official dataset folders at ``path``: ``{kind: folder}``.

    ``path`` itself if its files are one of the formats (e.g. ``cifar-100-python/``), else each
    sub-folder of ``path`` whose files are (e.g. NAS-Bench-201's ``cifar.python/`` holding
    ``cifar-10-batches-py/``, ``cifar-100-python/`` and ``ImageNet16/``; when two sub-folders
    hold one format, the one with the official name wins). Empty for anything else (a file,
    an image-class folder tree).
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        return {}
    own = _kind_of(p, scan=True)
    if own is not None:
        return {own: p}
    found: dict[str, Path] = {}
    for sub in sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith(".")):
        kind = _kind_of(sub)
        if kind is not None and (kind not in found or sub.name == FOLDER_NAMES[kind]):
            found[kind] = sub
    return found


def read_image_folder(path: str | os.PathLike, split: str = "train", dataset: str | None = None) -> ImageSet:
    """The official dataset folder at ``path`` (see :func:`find_image_folders`), read.

    Args:
        path: a CIFAR-10 / CIFAR-100 / ImageNet16 folder, or a folder holding some of them.
        split: as the format's reader.
        dataset: which one to read when ``path`` holds several (``cifar10``, ``cifar100``,
            ``ImageNet16-120``); ignored when it holds one (the caller checks the kind).

    Raises:
        FileNotFoundError: no such path; ValueError: no official folder at ``path``, several and
            no (or an absent) ``dataset`` to choose, or a bad file (named).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such folder")
    found = find_image_folders(p)
    if not found:
        raise ValueError(f"{p}: not a CIFAR-10, CIFAR-100 or ImageNet16 folder")
    if len(found) == 1:
        kind = next(iter(found))
    elif dataset in found:
        kind = dataset
    else:
        held = ", ".join(f"{_DESC[k]} ({found[k].name}/)" for k in KINDS if k in found)
        if dataset is not None:
            raise ValueError(f"{p}: holds {held}, but no {dataset} folder")
        raise ValueError(f"{p}: holds several datasets ({held}); choose one with the dataset "
                         "(--dataset) or pass its folder")
    reader = {"cifar10": read_cifar10_folder, "cifar100": read_cifar100_folder,
              "ImageNet16-120": read_imagenet16_folder}[kind]
    return reader(found[kind], split)


# ------------------------------------------------------------------------------ writing (tests, fixtures)
class _Py2Pickler(pickle._Pickler):
    """Protocol 2 written the way Python 2's ``cPickle`` wrote these datasets: ``str`` and
    ``bytes`` as byte strings (``SHORT_BINSTRING`` / ``BINSTRING``, read back as ``str`` with
    ``encoding="latin1"``) and numpy's globals under their numpy 1 module ``numpy.core``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        n = len(raw)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + raw if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + raw)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None) or pickle.whichmodule(obj, name)
        name = name or obj.__qualname__
        if module.startswith("numpy._core"):
            module = "numpy.core" + module[len("numpy._core"):]
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[type] = save_global


def _dump(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _as_images(x: Any, side: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (side, side, 3):
        raise ValueError(f"{what}: images must be uint8 [N, {side}, {side}, 3], got {x.dtype} {list(x.shape)}")
    return x


def _as_labels(y: Any, n: int, lo: int, hi: int, what: str) -> list[int]:
    y = np.asarray(y)
    if y.shape != (n,) or (n and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"{what}: labels must be integers [N] = [{n}], got {y.dtype} {list(y.shape)}")
    if n and (y.min() < lo or y.max() > hi):
        raise ValueError(f"{what}: labels must lie in {lo}..{hi}, got {int(y.min())}..{int(y.max())}")
    return [int(v) for v in y]   # the originals hold Python lists of ints


def _rows(x: np.ndarray) -> np.ndarray:
    """uint8 ``[n, H, W, 3]`` as the files' ``[n, 3*H*W]`` planes."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(x.shape[0], -1)


def _writer_start(folder: str | os.PathLike, x: np.ndarray, y: Sequence[int] | np.ndarray, *, size: int,
                  labels: tuple[int, int], split: str, allowed: tuple[str, ...], batches: int | None,
                  what: str) -> tuple[np.ndarray, list[int], Path]:
    """A writer's checks (split, images of ``size`` x ``size``, labels in ``labels``, ``batches``)
    and its folder (created with its parents): ``(x, labels, folder)``."""
    if split not in allowed:
        raise ValueError(f"split must be one of {', '.join(map(repr, allowed))}, got {split!r}")
    x = _as_images(x, size, what)
    out_labels = _as_labels(y, x.shape[0], labels[0], labels[1], what)
    if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 1):
        raise ValueError(f"batches must be a positive integer, got {batches!r}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    return x, out_labels, out


def write_cifar10_folder(folder: str | os.PathLike, x: np.ndarray, y: Sequence[int] | np.ndarray, *,
                         split: str = "train", batches: int = 5) -> Path:
    """Write ``x`` (uint8 ``[N, 32, 32, 3]``), ``y`` (0..9) as a torchvision CIFAR-10 folder.

    ``split="train"`` writes ``data_batch_1`` .. ``data_batch_<batches>`` (the images in order,
    split as ``np.array_split``), ``"test"`` writes ``test_batch``; ``batches.meta`` is written
    when absent. Keys as the originals: ``batch_label``, ``labels``, ``data``, ``filenames``.
    Returns the folder (created with its parents).
    """
    x, labels, out = _writer_start(folder, x, y, size=32, labels=(0, 9), split=split, allowed=("train", "test"),
                                   batches=batches, what="write_cifar10_folder")
    if not (out / "batches.meta").exists():
        _dump({"num_cases_per_batch": 10000, "label_names": list(_CIFAR10_NAMES), "num_vis": 3072},
              out / "batches.meta")
    chunks = np.array_split(np.arange(x.shape[0]), batches if split == "train" else 1)
    for k, idx in enumerate(chunks, start=1):
        name = f"data_batch_{k}" if split == "train" else "test_batch"
        label = f"training batch {k} of {batches}" if split == "train" else "testing batch 1 of 1"
        _dump({"batch_label": label, "labels": [labels[i] for i in idx], "data": _rows(x[idx]),
               "filenames": [f"{_CIFAR10_NAMES[labels[i]]}_s_{i:06d}.png" for i in idx]}, out / name)
    return out


def write_cifar100_folder(folder: str | os.PathLike, x: np.ndarray, y_fine: Sequence[int] | np.ndarray,
                          y_coarse: Sequence[int] | np.ndarray | None = None, *, split: str = "train") -> Path:
    """Write ``x`` (uint8 ``[N, 32, 32, 3]``), fine labels (0..99) and coarse labels (0..19;
    default the official superclass of each fine label, :data:`CIFAR100_COARSE_OF_FINE`) as a
    torchvision CIFAR-100 folder: the file ``train`` or ``test`` (keys ``filenames``,
    ``batch_label``, ``fine_labels``, ``coarse_labels``, ``data``) and ``meta`` when absent.
    Returns the folder.
    """
    x, fine, out = _writer_start(folder, x, y_fine, size=32, labels=(0, 99), split=split,
                                 allowed=("train", "test"), batches=None, what="write_cifar100_folder")
    coarse = ([CIFAR100_COARSE_OF_FINE[v] for v in fine] if y_coarse is None
              else _as_labels(y_coarse, x.shape[0], 0, 19, "write_cifar100_folder (coarse)"))
    if not (out / "meta").exists():
        _dump({"fine_label_names": list(_CIFAR100_FINE_NAMES), "coarse_label_names": list(_CIFAR100_COARSE_NAMES)},
              out / "meta")
    _dump({"filenames": [f"{_CIFAR100_FINE_NAMES[v]}_s_{i:06d}.png" for i, v in enumerate(fine)],
           "batch_label": f"{'training' if split == 'train' else 'testing'} batch 1 of 1",
           "fine_labels": fine, "coarse_labels": coarse, "data": _rows(x)}, out / split)
    return out


def write_imagenet16_folder(folder: str | os.PathLike, x: np.ndarray, y_1based: Sequence[int] | np.ndarray, *,
                            split: str = "train", batches: int = 10) -> Path:
    """Write ``x`` (uint8 ``[N, 16, 16, 3]``) with 1-based labels (1..1000) as the NAS-Bench-201
    authors' ImageNet16 folder.

    ``split="train"`` writes ``train_data_batch_1`` .. ``train_data_batch_<batches>`` (keys
    ``data`` ``[n, 768]``, ``labels``, ``mean``: the float64 mean training row); ``"valid"``
    writes ``val_data`` (``data``, ``labels``). Returns the folder.
    """
    x, labels, out = _writer_start(folder, x, y_1based, size=16, labels=(1, 1000), split=split,
                                   allowed=("train", "valid"), batches=batches, what="write_imagenet16_folder")
    rows = _rows(x)
    if split == "valid":
        _dump({"data": rows, "labels": labels}, out / "val_data")
        return out
    mean = rows.mean(axis=0) if rows.shape[0] else np.zeros(rows.shape[1])
    for k, idx in enumerate(np.array_split(np.arange(x.shape[0]), batches), start=1):
        _dump({"data": rows[idx], "labels": [labels[i] for i in idx], "mean": mean}, out / f"train_data_batch_{k}")
    return out
