"""Datasets as their users have them: torchvision's CIFAR-10 / CIFAR-100 folders and the
NAS-Bench-201 authors' ImageNet16 batches (zcfast.formats.images, zcfast.data.load_dataset).

Each test writes a folder in the official format from the shipped images (zcfast/assets/cifar),
reads it back through zcfast and checks exact equality with the shipped arrays, and against an
independent reading of the same files the way the official loaders do it (plain
``pickle.load(f, encoding="latin1")`` of these trusted, self-written files, then torchvision's /
the NB201 authors' reshape, transpose and class filter). Bad files: tests/test_bad_inputs_data.py.
"""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zcfast import correlate as corr
from zcfast import data
from zcfast.formats import images as fi

torch.set_num_threads(1)


# ------------------------------------------------------------------------------ reference readers
def _ref_unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")   # trusted: written by this test


def _ref_cifar(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's CIFAR10/CIFAR100 __init__: vstack 'data', extend labels, [N,3,32,32] -> NHWC."""
    xs, ys = [], []
    for name in files:
        e = _ref_unpickle(folder / name)
        xs.append(e["data"])
        ys.extend(e[label_key])
    return np.vstack(xs).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(ys)


def _ref_imagenet16(folder: Path, train: bool, keep: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """The NB201 authors' ImageNet16(root, train, None, keep): 1 <= L <= keep kept, target L - 1."""
    files = [f"train_data_batch_{i}" for i in range(1, 11)] if train else ["val_data"]
    xs, ys = [], []
    for name in files:
        e = _ref_unpickle(folder / name)
        xs.append(e["data"])
        ys.extend(e["labels"])
    x = np.vstack(xs).reshape(-1, 3, 16, 16).transpose(0, 2, 3, 1)
    kept = [(img, lab) for img, lab in zip(x, ys) if 1 <= lab <= keep]
    return np.stack([k[0] for k in kept]), np.asarray([k[1] - 1 for k in kept])


# ------------------------------------------------------------------------------ shipped images, folders
C10_X, C10_Y, _ = data.load_dataset("cifar10")          # 200 training images
C10T_X, C10T_Y, _ = data.load_dataset("cifar10-test")   # 20 test images
C100_X, C100_Y, _ = data.load_dataset("cifar100")       # 20 images, fine labels


def _in16_arrays() -> tuple[np.ndarray, np.ndarray]:
    """400 16x16 images from the shipped 32x32 ones (centre crops, then 2x subsamples) with 1-based
    labels 1..200 (about 40 % above 120, spread over every batch)."""
    x = np.concatenate([C10_X[:, 8:24, 8:24], C10_X[:, ::2, ::2]])
    y = (np.arange(400) * 37) % 200 + 1
    return np.ascontiguousarray(x), y


IN16_X, IN16_Y = _in16_arrays()
IN16_VX, IN16_VY = np.ascontiguousarray(C10T_X[:, ::2, ::2]), (np.arange(20) * 13) % 150 + 1


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """NAS-Bench-201's layout: cifar.python/ holding the three folders, train and test splits."""
    r = tmp_path_factory.mktemp("cifar.python")
    fi.write_cifar10_folder(r / "cifar-10-batches-py", C10_X, C10_Y)
    fi.write_cifar10_folder(r / "cifar-10-batches-py", C10T_X, C10T_Y, split="test")
    fi.write_cifar100_folder(r / "cifar-100-python", C100_X, C100_Y)
    fi.write_cifar100_folder(r / "cifar-100-python", C100_X[::-1], C100_Y[::-1], split="test")
    fi.write_imagenet16_folder(r / "ImageNet16", IN16_X, IN16_Y)
    fi.write_imagenet16_folder(r / "ImageNet16", IN16_VX, IN16_VY, split="valid")
    return r


def _only(root: Path, name: str, tmp_path: Path) -> Path:
    """A copy of one official folder, alone under a fresh parent."""
    dst = tmp_path / "only" / name
    shutil.copytree(root / name, dst)
    return dst


# ------------------------------------------------------------------------------ exact round trips
def test_cifar10_folder_reads_the_shipped_images_exactly(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"])
    for path in (folder, folder.parent):
        x, y, nc = data.load_dataset(path, dataset="cifar10")
        assert x.dtype == np.uint8 and x.shape == (200, 32, 32, 3) and x.flags.c_contiguous
        assert np.array_equal(x, C10_X) and y.dtype == np.int64 and np.array_equal(y, C10_Y) and nc == 10
    ref_x, ref_y = _ref_cifar(folder, [f"data_batch_{i}" for i in range(1, 6)], "labels")
    assert np.array_equal(ref_x, C10_X) and np.array_equal(ref_y, C10_Y)
    x, y, nc = data.load_dataset(folder, split="test")
    assert np.array_equal(x, C10T_X) and np.array_equal(y, C10T_Y) and nc == 10
    got = fi.read_cifar10_folder(folder)
    assert got.kind == "cifar10" and got.num_classes == 10
    # the files are Python-2-style protocol-2 pickles with numpy 1's module names, as the originals
    raw = (folder / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02" and b"numpy.core.multiarray\n_reconstruct" in raw and b"numpy._core" not in raw
    e = _ref_unpickle(folder / "data_batch_1")
    assert sorted(e) == ["batch_label", "data", "filenames", "labels"]
    assert e["data"].dtype == np.uint8 and e["data"].shape == (40, 3072) and isinstance(e["labels"], list)
    assert _ref_unpickle(folder / "batches.meta")["label_names"][:3] == ["airplane", "automobile", "bird"]
    # the 3072 values of a row are the red, green, blue 32x32 planes
    assert np.array_equal(e["data"][0, :1024].reshape(32, 32), C10_X[0, :, :, 0])
    assert np.array_equal(e["data"][0, 2048:].reshape(32, 32), C10_X[0, :, :, 2])


def test_cifar100_folder_reads_fine_labels_exactly(root: Path) -> None:
    folder = root / "cifar-100-python"
    for path in (folder, root):
        x, y, nc = data.load_dataset(path, dataset="cifar100")
        assert np.array_equal(x, C100_X) and np.array_equal(y, C100_Y) and nc == 100
    x, y, _ = data.load_dataset(folder, split="test")
    assert np.array_equal(x, C100_X[::-1]) and np.array_equal(y, C100_Y[::-1])
    ref_x, ref_y = _ref_cifar(folder, ["train"], "fine_labels")
    assert np.array_equal(ref_x, C100_X) and np.array_equal(ref_y, C100_Y)
    e = _ref_unpickle(folder / "train")
    assert sorted(e) == ["batch_label", "coarse_labels", "data", "filenames", "fine_labels"]
    # coarse labels: the official superclass of each fine label (e.g. 0 apple -> 4 fruit_and_vegetables)
    assert e["coarse_labels"] == [fi.CIFAR100_COARSE_OF_FINE[v] for v in C100_Y]
    meta = _ref_unpickle(folder / "meta")
    assert len(set(meta["fine_label_names"])) == 100 and len(set(meta["coarse_label_names"])) == 20
    assert meta["fine_label_names"][0] == "apple" and meta["coarse_label_names"][4] == "fruit_and_vegetables"
    assert sorted(set(fi.CIFAR100_COARSE_OF_FINE)) == list(range(20))
    assert all(fi.CIFAR100_COARSE_OF_FINE.count(c) == 5 for c in range(20))


def test_imagenet16_keeps_the_first_120_classes_shifted_to_0(root: Path) -> None:
    folder = root / "ImageNet16"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"])
    keep = IN16_Y <= 120
    assert 0 < keep.sum() < 400 and IN16_Y.max() == 200   # some images are dropped
    for path in (folder, root):
        x, y, nc = data.load_dataset(path, dataset="ImageNet16-120")
        assert x.shape == (int(keep.sum()), 16, 16, 3) and nc == 120
        assert np.array_equal(x, IN16_X[keep]) and np.array_equal(y, IN16_Y[keep] - 1)
        assert y.min() == 0 and y.max() == 119
    ref_x, ref_y = _ref_imagenet16(folder, True)
    assert np.array_equal(ref_x, IN16_X[keep]) and np.array_equal(ref_y, IN16_Y[keep] - 1)
    for split in ("valid", "test"):   # val_data: NB201 loads it as its ImageNet16 test set
        x, y, _ = data.load_dataset(folder, split=split)
        vk = IN16_VY <= 120
        assert np.array_equal(x, IN16_VX[vk]) and np.array_equal(y, IN16_VY[vk] - 1)
    ref_x, ref_y = _ref_imagenet16(folder, False)
    assert np.array_equal(ref_x, IN16_VX[IN16_VY <= 120])
    got = fi.read_imagenet16_folder(folder)
    assert got.kind == "ImageNet16-120" and got.num_classes == 120
    wide = fi.read_imagenet16_folder(folder, num_classes=200)   # the authors' ImageNet16-200
    assert np.array_equal(wide.images, IN16_X) and np.array_equal(wide.labels, IN16_Y - 1)
    e = _ref_unpickle(folder / "train_data_batch_1")
    assert sorted(e) == ["data", "labels", "mean"] and e["data"].shape == (40, 768)


def test_several_datasets_under_one_root_are_chosen_by_the_dataset(root: Path, tmp_path: Path) -> None:
    assert fi.find_image_folders(root) == {"cifar10": root / "cifar-10-batches-py",
                                          "cifar100": root / "cifar-100-python",
                                          "ImageNet16-120": root / "ImageNet16"}
    with pytest.raises(ValueError, match="holds several datasets.*--dataset"):
        data.load_dataset(root)
    x, _, nc = data.load_dataset(root, dataset="cifar-100")
    assert nc == 100 and np.array_equal(x, C100_X)
    only = _only(root, "cifar-100-python", tmp_path)
    assert fi.find_image_folders(only.parent) == {"cifar100": only}
    assert np.array_equal(data.load_dataset(only.parent)[0], C100_X)
    # a root holding no official folder stays an image-class folder (here: none, a clear error)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="one sub-folder per class"):
        data.load_dataset(empty)


# ------------------------------------------------------------------------------ the paper's batch
def _npz(tmp_path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    p = tmp_path / "same.npz"
    np.savez(p, x=x, y=y)
    return p


@pytest.mark.parametrize("ds, folder, x, y, size", [
    ("cifar100", "cifar-100-python", C100_X, C100_Y, 16),
    ("ImageNet16-120", "ImageNet16", IN16_X[IN16_Y <= 120], IN16_Y[IN16_Y <= 120] - 1, 64),
    ("cifar10", "cifar-10-batches-py", C10_X, C10_Y, 64),
])
def test_paper_batch_from_a_folder_equals_the_npz_of_the_same_arrays(root, tmp_path, ds, folder, x, y, size):
    npz = _npz(tmp_path, x, y)
    for src in (root, root / folder):
        for augment in (True, False):
            a = data.paper_batch(ds, size, 42, data=src, augment=augment)
            b = data.paper_batch(ds, size, 42, data=npz, augment=augment)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    two = data.paper_batches(ds, size // 2, 7, 2, data=root)
    ref = data.paper_batches(ds, size // 2, 7, 2, data=npz)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(two, ref))
    pb = data.PaperBatches(ds, size, 42, data=root)
    assert torch.equal(pb.for_arch("k")[0], data.PaperBatches(ds, size, 42, data=npz).for_arch("k")[0])
    if ds == "cifar10":   # the shipped set is the same 200 images: the same batch as the default
        assert torch.equal(data.paper_batch("cifar10", 64, 42, data=root)[0], data.paper_batch("cifar10", 64, 42)[0])


def test_normalisation_and_augmentation_per_dataset_are_the_official_ones(root: Path) -> None:
    """The paper's code (zero-cost-nas get_cifar_dataloaders): CIFAR mean/std shared by CIFAR-10 and
    CIFAR-100, ImageNet16's mean/std of the NB201 authors; RandomCrop(32, 4) / (16, 2) + flip."""
    assert data.MEAN["cifar10"] == data.MEAN["cifar100"] == (0.4914, 0.4822, 0.4465)
    assert data.STD["cifar10"] == data.STD["cifar100"] == (0.2023, 0.1994, 0.2010)
    assert data.MEAN["ImageNet16-120"] == tuple(v / 255 for v in (122.68, 116.66, 104.01))
    assert data.STD["ImageNet16-120"] == tuple(v / 255 for v in (63.22, 61.26, 65.09))
    imgs, labels, _ = data.load_dataset(root, dataset="ImageNet16-120")
    x, y = data.paper_batch("ImageNet16-120", 64, 42, data=root)
    assert x.shape == (64, 3, 16, 16)
    idx = torch.randperm(imgs.shape[0], generator=torch.Generator().manual_seed(42))[:64].numpy()
    assert y.tolist() == labels[idx].tolist()
    mean = torch.tensor(data.MEAN["ImageNet16-120"]).view(1, 3, 1, 1)
    std = torch.tensor(data.STD["ImageNet16-120"]).view(1, 3, 1, 1)
    raw = torch.round((x * std + mean) * 255).to(torch.uint8)
    src = torch.from_numpy(imgs[idx]).permute(0, 3, 1, 2)
    pad = torch.nn.functional.pad(src, (2, 2, 2, 2))
    shifted = 0
    for i in range(64):   # each row is a 16x16 window of the image zero-padded by 2, maybe flipped
        hits = [(t, l) for t in range(5) for l in range(5) for c in [pad[i, :, t:t + 16, l:l + 16]]
                if torch.equal(raw[i], c) or torch.equal(raw[i], c.flip(-1))]
        assert hits, f"row {i} is not a padding-2 crop/flip of its image"
        shifted += (2, 2) not in hits
    assert shifted > 0   # the crops do move


# ------------------------------------------------------------------------------ dataset identity
@pytest.mark.parametrize("folder, ds, match", [
    ("cifar-100-python", "cifar10", r"holds cifar100 \(100 classes, 32x32 images, labels up to \d+\), "
                                    r"but the dataset is cifar10 \(10 classes"),
    ("cifar-10-batches-py", "cifar100", "holds cifar10 .* but the dataset is cifar100"),
    ("cifar-10-batches-py", "ImageNet16-120", "holds cifar10 .*16x16 images.*--dataset cifar10"),
    ("ImageNet16", "cifar10", "holds ImageNet16-120 .* but the dataset is cifar10"),
])
def test_data_of_another_dataset_is_refused(root, tmp_path, folder, ds, match):
    only = _only(root, folder, tmp_path)
    for src in (only, only.parent):
        with pytest.raises(ValueError, match=match):
            data.paper_batch(ds, 8, data=src)


def test_identity_checks_on_other_data_and_shipped_sets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds 32x32 images, but ImageNet16-120 images are 16x16"):
        data.paper_batch("ImageNet16-120", 8, data=_npz(tmp_path, C10_X, C10_Y))
    with pytest.raises(ValueError, match="holds cifar10 .* but the dataset is cifar100"):
        data.paper_batch("cifar100", 8, data="cifar10")
    with pytest.raises(ValueError, match="no ImageNet16-120 images are shipped.*ImageNet16 folder"):
        data.paper_batch("ImageNet16-120")


def test_splits_each_format_has(root: Path, tmp_path: Path) -> None:
    for folder, bad in (("cifar-10-batches-py", "valid"), ("cifar-100-python", "valid"), ("ImageNet16", "val")):
        with pytest.raises(ValueError, match=f"no split '{bad}'; use one of"):
            data.load_dataset(root / folder, split=bad)
    with pytest.raises(ValueError, match="split='test' applies to CIFAR-10"):
        data.load_dataset(_npz(tmp_path, C10_X, C10_Y), split="test")
    with pytest.raises(ValueError, match="shipped set 'cifar10' is one set"):
        data.load_dataset("cifar10", split="test")
    half = _only(root, "cifar-10-batches-py", tmp_path)
    (half / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch: file not found"):
        data.load_dataset(half, split="test")
    assert data.load_dataset(half)[0].shape == (200, 32, 32, 3)   # the training split is whole


def test_writers_refuse_bad_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"uint8 \[N, 32, 32, 3\]"):
        fi.write_cifar10_folder(tmp_path / "a", C10_X[:, :16], C10_Y)
    with pytest.raises(ValueError, match=r"labels must lie in 0..9"):
        fi.write_cifar10_folder(tmp_path / "a", C100_X, C100_Y + 10)
    with pytest.raises(ValueError, match=r"labels must lie in 1..1000"):
        fi.write_imagenet16_folder(tmp_path / "b", IN16_X, IN16_Y - 1)
    with pytest.raises(ValueError, match="split must be one of 'train', 'valid'"):
        fi.write_imagenet16_folder(tmp_path / "b", IN16_X, IN16_Y, split="test")


# ------------------------------------------------------------------------------ front doors
def test_correlate_scores_the_batch_of_the_folder(root: Path, tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    def scorer(space, arch, x, y, proxies, seed, num_classes, device):
        seen["nc"], seen["x"], seen["y"] = num_classes, x, y
        return {p: 1.0 for p in proxies}

    r = corr.correlate("nb201", "ImageNet16-120", "snip", 3, 0, store=tmp_path / "s.sqlite", data=root,
                       score_fn=scorer, time_sample=0, progress=False)
    x, y = data.paper_batch("ImageNet16-120", 64, 42, data=root / "ImageNet16")
    assert seen["nc"] == 120 and torch.equal(seen["x"], x) and torch.equal(seen["y"], y)
    assert r.summary["ground_truth"]["column"] == "imagenet16_120_test_nats"


def test_cli_foreign_pickle_in_a_cifar100_folder_is_refused(root: Path, tmp_path: Path) -> None:
    """score --data a CIFAR-100 folder whose train file is an os.system pickle: exit 2, one line
    naming the file and the global, and the payload never ran."""
    only = _only(root, "cifar-100-python", tmp_path)
    marker = tmp_path / "EXECUTED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (only / "train").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "zcfast", "score", "--data", str(only.parent), "--dataset",
                           "cifar100", "--batch-size", "8", "--proxies", "synflow"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "refusing to unpickle" in last and "system" in last and str(only / "train") in last
    assert not marker.exists()


def test_imagenet16_is_read_batch_by_batch_keeping_only_the_kept_classes(tmp_path: Path) -> None:
    """Peak memory of reading the training split stays near one batch plus the kept images, far
    below the whole split (tracemalloc sees numpy's buffers): 10 batches x 3,000 images, 12 % kept."""
    import tracemalloc

    rng = np.random.default_rng(3)
    n = 30_000
    x = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    y = rng.integers(1, 1001, n)
    folder = fi.write_imagenet16_folder(tmp_path / "ImageNet16", x, y)
    del x
    total = n * 768
    tracemalloc.start()
    try:
        got = fi.read_imagenet16_folder(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kept = int((y <= 120).sum())
    assert got.images.shape == (kept, 16, 16, 3) and np.array_equal(got.labels, y[y <= 120] - 1)
    assert peak < 0.6 * total, f"peak {peak / 1e6:.1f} MB for a {total / 1e6:.1f} MB split"


def test_an_image_class_tree_named_like_an_official_folder_stays_an_image_folder(root, tmp_path) -> None:
    from PIL import Image

    tree = tmp_path / "ImageNet16"
    for i in range(4):
        (tree / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(IN16_X[i]).save(tree / f"c{i % 2}" / f"{i}.png")
    x, y, nc = data.load_dataset(tree)
    assert nc == 2 and x.shape == (4, 16, 16, 3) and sorted(y.tolist()) == [0, 0, 1, 1]
    two = tmp_path / "two"
    shutil.copytree(root / "cifar-100-python", two / "cifar-100-python")
    shutil.copytree(root / "ImageNet16", two / "ImageNet16")
    with pytest.raises(ValueError, match=r"holds CIFAR-100 \(cifar-100-python/\), ImageNet16 \(ImageNet16/\), "
                                         "but no cifar10 folder"):
        data.paper_batch("cifar10", 8, data=two)
