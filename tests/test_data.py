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


def test_paper_batches_are_reproducible_distinct_and_start_with_the_paper_batch():
    batches = data.paper_batches("cifar10", 64, 42, 2)
    assert len(batches) == 2 and all(x.shape == (64, 3, 32, 32) and y.shape == (64,) for x, y in batches)
    again = data.paper_batches("cifar10", 64, 42, 2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    # batch 0 is the paper's batch, augmentation included
    x0, y0 = data.paper_batch("cifar10", 64, 42)
    assert torch.equal(batches[0][0], x0) and torch.equal(batches[0][1], y0)
    # the images are disjoint slices of one seeded permutation (checked unaugmented)
    imgs, labels, _ = data.load_dataset("cifar10")
    plain = data.paper_batches("cifar10", 64, 42, 3, augment=False)
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(42)).numpy()
    mean = torch.tensor(data.MEAN["cifar10"]).view(1, 3, 1, 1)
    std = torch.tensor(data.STD["cifar10"]).view(1, 3, 1, 1)
    for i, (x, y) in enumerate(plain):
        idx = perm[i * 64:(i + 1) * 64]
        ref = (torch.from_numpy(imgs[idx]).permute(0, 3, 1, 2).float() / 255 - mean) / std
        torch.testing.assert_close(x, ref)
        assert y.tolist() == labels[idx].tolist()
    assert len(set(perm[:192].tolist())) == 192
    assert not torch.equal(batches[0][0], batches[1][0])
    assert not torch.equal(data.paper_batches("cifar10", 64, 43, 2)[1][0], batches[1][0])
    one = data.paper_batches("cifar10", 8, 7, 1)
    assert len(one) == 1 and torch.equal(one[0][0], data.paper_batch("cifar10", 8, 7)[0])


@pytest.mark.parametrize("kwargs, match", [
    ({"n_batches": 4}, r"4 x 64 = 256 distinct images, but 'cifar10' holds 200"),
    ({"n_batches": 0}, "n_batches must be a positive integer"),
    ({"n_batches": True}, "n_batches must be a positive integer"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"dataset": "mnist"}, "unknown dataset"),
])
def test_paper_batches_bad_input(kwargs, match):
    args = {"dataset": "cifar10", "batch_size": 64, "seed": 42, "n_batches": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        data.paper_batches(**args)


def test_split_batch_equal_parts_and_remainder_rule():
    x, y = data.paper_batch("cifar10", 64, 42)
    halves = data.split_batch(x, y, 2)
    assert [h[0].shape[0] for h in halves] == [32, 32]
    assert torch.equal(torch.cat([h[0] for h in halves]), x) and torch.equal(torch.cat([h[1] for h in halves]), y)
    assert halves[1][0].data_ptr() == x[32:].data_ptr()  # views, no copy
    assert len(data.split_batch(x, y, 1)) == 1 and torch.equal(data.split_batch(x, y, 1)[0][0], x)
    with pytest.raises(ValueError, match=r"64 samples does not split into 3 equal parts \(64 % 3 = 1\)"):
        data.split_batch(x, y, 3)
    thirds = data.split_batch(x, y, 3, drop_remainder=True)  # the last 64 % 3 = 1 sample left out
    assert [t[0].shape[0] for t in thirds] == [21, 21, 21]
    assert torch.equal(torch.cat([t[0] for t in thirds]), x[:63])
    for parts, match in ((0, r"parts must be an integer in \[1, 64\]"), (65, r"in \[1, 64\]"),
                         (2.0, "parts must be an integer")):
        with pytest.raises(ValueError, match=match):
            data.split_batch(x, y, parts)
    with pytest.raises(ValueError, match="x holds 64 samples but y holds 63"):
        data.split_batch(x, y[:63], 2)
    assert [t for _, t in data.split_batch(x, None, 2)] == [None, None]  # inputs only
    with pytest.raises(ValueError, match="must be tensors"):
        data.split_batch(x, [0] * 64, 2)


def test_batches_fingerprint_single_equals_batch_fingerprint_and_keys_lists():
    b = data.paper_batches("cifar10", 8, 42, 2)
    assert data.batches_fingerprint(b[:1]) == data.batch_fingerprint(*b[0])
    two = data.batches_fingerprint(b)
    assert two == data.batches_fingerprint([(x.clone(), y.clone()) for x, y in b])
    assert two != data.batches_fingerprint(b[::-1]) and two != data.batch_fingerprint(*b[0])
    assert len(two) == 16
    for bad, match in (([], "non-empty list"), ("xy", "non-empty list"), ([b[0], (b[0][0],)], r"batches\[1\]")):
        with pytest.raises(ValueError, match=match):
            data.batches_fingerprint(bad)


def test_load_image_set_names_the_dataset_of_shipped_sets_only(tmp_path):
    assert data.load_image_set("cifar10").kind == "cifar10"
    assert data.load_image_set("cifar100-test").kind == "cifar100"
    p = tmp_path / "u.npz"
    np.savez(p, x=np.zeros((3, 8, 8, 3), np.uint8), y=np.arange(3))
    got = data.load_image_set(p)
    assert got.kind is None and got.num_classes == 3 and got.images.shape == (3, 8, 8, 3)
    x, y, nc = data.load_dataset(p)
    assert np.array_equal(x, got.images) and np.array_equal(y, got.labels) and nc == got.num_classes
