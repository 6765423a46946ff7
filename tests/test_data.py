"""zcfast.data: shipped samples, user datasets, the paper's batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zcfast import data


def test_shipped_sets_load_with_true_shapes():
    x, y, nc = data.load_dataset("cifar10")
    assert x.shape == (200, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (200,) and y.dtype == np.int64 and nc == 10
    assert np.bincount(y, minlength=10).tolist() == [14, 28, 22, 21, 19, 19, 18, 21, 15, 23]
    x, y, nc = data.load_dataset("cifar100")
    assert x.shape == (20, 32, 32, 3) and nc == 100 and y.max() < 100
    x, y, nc = data.load_dataset("cifar10-test")
    assert x.shape == (20, 32, 32, 3) and nc == 10


def test_paper_batch_is_seeded_normalised_and_draws_real_images():
    x, y = data.paper_batch("cifar10", 64, 42)
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64
    x2, y2 = data.paper_batch("cifar10", 64, 42)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = data.paper_batch("cifar10", 64, 43)
    assert not torch.equal(x, x3)
    # unaugmented: exactly the normalised shipped images chosen by the seeded permutation
    imgs, labels, _ = data.load_dataset("cifar10")
    xa, ya = data.paper_batch("cifar10", 64, 42, augment=False)
    idx = torch.randperm(200, generator=torch.Generator().manual_seed(42))[:64].numpy()
    mean = torch.tensor(data.MEAN["cifar10"]).view(1, 3, 1, 1)
    std = torch.tensor(data.STD["cifar10"]).view(1, 3, 1, 1)
    ref = (torch.from_numpy(imgs[idx]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(xa, ref)
    assert ya.tolist() == labels[idx].tolist()
    assert ya.tolist() == y.tolist()  # augmentation keeps the labels
    # augmented images are crops/flips of the same images: each row equals a shifted window
    pad = torch.nn.functional.pad(torch.from_numpy(imgs[idx]).permute(0, 3, 1, 2), (4, 4, 4, 4))
    raw = torch.round((x * std + mean) * 255).to(torch.uint8)
    for i in range(8):
        found = any(
            torch.equal(raw[i], c) or torch.equal(raw[i], c.flip(-1))
            for t in range(9) for l in range(9) for c in [pad[i, :, t:t + 32, l:l + 32]]
        )
        assert found, f"batch row {i} is not a crop/flip of its source image"


def test_paper_batch_limits_are_explicit():
    with pytest.raises(ValueError, match="only 20 CIFAR-100"):
        data.paper_batch("cifar100", 64)
    x, y = data.paper_batch("cifar100", 20)
    assert x.shape == (20, 3, 32, 32)
    with pytest.raises(ValueError, match="no ImageNet16-120 images are shipped"):
        data.paper_batch("ImageNet16-120")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.paper_batch("mnist")


def test_user_npz_and_imagenet16_normalisation(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (80, 16, 16, 3), dtype=np.uint8)
    y = rng.integers(0, 120, 80)
    p = tmp_path / "in16.npz"
    np.savez(p, x=x, y=y)
    xb, yb = data.paper_batch("imagenet16-120", 64, 42, data=p, augment=False)
    assert xb.shape == (64, 3, 16, 16)
    idx = torch.randperm(80, generator=torch.Generator().manual_seed(42))[:64].numpy()
    mean = torch.tensor([122.68, 116.66, 104.01]).view(1, 3, 1, 1) / 255
    std = torch.tensor([63.22, 61.26, 65.09]).view(1, 3, 1, 1) / 255
    ref = (torch.from_numpy(x[idx]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(xb, ref)
    assert yb.tolist() == y[idx].tolist()
    # labels beyond the dataset's classes are refused
    np.savez(p, x=x, y=np.full(80, 150))
    with pytest.raises(ValueError, match="out of range for ImageNet16-120"):
        data.paper_batch("ImageNet16-120", 64, data=p)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": np.zeros((4, 32, 32, 3), np.float32), "y": np.zeros(4, int)}, "uint8"),
        ({"x": np.zeros((4, 3, 32, 32), np.uint8), "y": np.zeros(4, int)}, r"\[N, H, W, 3\]"),
        ({"x": np.zeros((4, 32, 32, 3), np.uint8), "y": np.zeros(5, int)}, "labels must have shape"),
        ({"x": np.zeros((4, 32, 32, 3), np.uint8), "y": -np.ones(4, int)}, ">= 0"),
        ({"x": np.zeros((4, 32, 32, 3), np.uint8), "y": np.full(4, 0.5)}, "integers"),
        ({"images": np.zeros((4, 32, 32, 3), np.uint8)}, "'y'"),
        ({"x": np.zeros((4, 32, 32, 3), np.uint8), "y": np.full(4, 3), "num_classes": 2}, "out of range"),
    ],
)
def test_bad_user_npz_is_refused(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(ValueError, match=match):
        data.load_dataset(p)


def test_missing_and_non_npz_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a shipped set"):
        data.load_dataset(tmp_path / "nope.npz")
    f = tmp_path / "x.txt"
    f.write_text("hello")
    with pytest.raises(ValueError, match=r"\.npz"):
        data.load_dataset(f)
    g = tmp_path / "fake.npz"
    g.write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        data.load_dataset(g)


def test_image_folder(tmp_path):
    from PIL import Image

    imgs, labels, _ = data.load_dataset("cifar10-test")
    for i in range(12):
        d = tmp_path / f"class_{labels[i]:02d}"
        d.mkdir(exist_ok=True)
        Image.fromarray(imgs[i]).save(d / f"{i}.png")
    x, y, nc = data.load_dataset(tmp_path)
    classes = sorted({f"class_{v:02d}" for v in labels[:12]})
    assert nc == len(classes) and x.shape == (12, 32, 32, 3)
    # PNG is lossless: every image comes back bit-exact, labelled by its folder's sorted position
    got = {(x[k].tobytes(), classes[y[k]]) for k in range(12)}
    want = {(imgs[i].tobytes(), f"class_{labels[i]:02d}") for i in range(12)}
    assert got == want
    # mixed sizes are refused with the offending file named
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / classes[0] / "small.png")
    with pytest.raises(ValueError, match="small.png"):
        data.load_dataset(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="sub-folder per class"):
        data.load_dataset(empty)


def test_batch_fingerprint_distinguishes_batches():
    x, y = data.paper_batch("cifar10", 8, 42)
    assert data.batch_fingerprint(x, y) == data.batch_fingerprint(x.clone(), y.clone())
    assert data.batch_fingerprint(x, y) != data.batch_fingerprint(x, (y + 1) % 10)
    assert data.batch_fingerprint(x, y) != data.batch_fingerprint(*data.paper_batch("cifar10", 8, 43))
