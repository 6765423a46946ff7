"""Bad data files: malicious or foreign pickles, bad .npz, bad image folders, bad NB101 records.

Table-driven: each case builds a file in a fresh folder, loads it through the public entry
point (``zcfast.safe_pickle.load``, ``zcfast.spaces.nb101.NB101Space``,
``zcfast.data.load_dataset``) and checks the error type AND that the one-line message names the
file and the problem. Pickle cases also check that nothing in the pickle ran (a marker file
its payload would create never appears). Two cases go through the CLI as a subprocess
(exit 2, one line, no traceback).
"""
from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from zcfast import safe_pickle
from zcfast.data import load_dataset
from zcfast.formats.images import write_cifar10_folder, write_cifar100_folder, write_imagenet16_folder
from zcfast.spaces.nb101 import NB101Space

ROOT = Path(__file__).resolve().parents[1]
RECORDS = json.loads((ROOT / "tests" / "assets" / "nb101_records_30.json").read_text())
MARKER = "EXECUTED"


# ------------------------------------------------------------------------------ payloads
class _Reduce:
    """Unpickles as ``fn(*args)``: what a malicious pickle does."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


class _Plain:
    """An ordinary user class: pickled by reference to its module, so foreign to zcfast."""

    def __init__(self) -> None:
        self.x = 1


def _marker(d: Path) -> str:
    return str(d / MARKER)


def _pk(obj: Any, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def _write(name: str, data: bytes | str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return p
    return make


def _write_fn(name: str, fn: Callable[[Path], bytes]) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        p.write_bytes(fn(d))
        return p
    return make


def _npz(name: str, **arrays: Any) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        p = d / name
        np.savez(p, **arrays)
        return p
    return make


def _npz_with_object_array(d: Path) -> Path:
    """An .npz whose 'x' member is a pickled object array (np.save with allow_pickle)."""
    p = d / "objects.npz"
    buf = io.BytesIO()
    np.save(buf, np.array([_Reduce(os.system, f"touch {_marker(d)}")], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.npy", buf.getvalue())
        z.writestr("y.npy", _npy(np.zeros(1, dtype=np.int64)))
    return p


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _truncated_npz(d: Path) -> Path:
    full = d / "full.npz"
    np.savez(full, x=np.zeros((4, 8, 8, 3), np.uint8), y=np.zeros(4, np.int64))
    p = d / "truncated.npz"
    p.write_bytes(full.read_bytes()[:-40])
    full.unlink()
    return p


def _folder(spec: dict[str, dict[str, bytes | tuple[int, int]]]) -> Callable[[Path], Path]:
    """An image folder: {class: {file: bytes | (w, h) of a PNG to draw}}."""
    def make(d: Path) -> Path:
        from PIL import Image

        root = d / "images"
        root.mkdir()
        for cls, files in spec.items():
            (root / cls).mkdir()
            for fname, content in files.items():
                if isinstance(content, tuple):
                    Image.new("RGB", content, (10, 20, 30)).save(root / cls / fname)
                else:
                    (root / cls / fname).write_bytes(content)
        return root
    return make


def _records(name: str, records: Any) -> Callable[[Path], Path]:
    return _write(name, json.dumps(records))


def _rec(**override: Any) -> dict[str, Any]:
    r = dict(RECORDS[0])
    r.update(override)
    return r


def _arch():
    return NB101Space().spec(RECORDS[0]["module_adjacency"], RECORDS[0]["module_operations"])


_RNG = np.random.default_rng(14)
_X32 = _RNG.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
_X16 = _RNG.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)
_FORMATS = {  # official folder name, writer of a small valid folder
    "cifar10": ("cifar-10-batches-py", lambda f: write_cifar10_folder(f, _X32, np.arange(12) % 10)),
    "cifar100": ("cifar-100-python", lambda f: write_cifar100_folder(f, _X32, np.arange(12) * 7 % 100)),
    "in16": ("ImageNet16", lambda f: write_imagenet16_folder(f, _X16, np.arange(30) * 9 % 200 + 1)),
}


def _official(fmt: str, victim: str | None = None, content: Callable[[Path], bytes] | bytes | None = None,
              drop: bool = False) -> Callable[[Path], Path]:
    """A valid folder of format ``fmt`` under ``d/root/``, with file ``victim`` replaced by
    ``content`` (bytes, or made from ``d``) or deleted (``drop``); returns the parent ``root``."""
    def make(d: Path) -> Path:
        name, write = _FORMATS[fmt]
        folder = write(d / "root" / name)
        if victim is not None:
            if drop:
                (folder / victim).unlink()
            else:
                (folder / victim).write_bytes(content(d) if callable(content) else content)
        return d / "root"
    return make


def _batch(**entry: Any) -> bytes:
    """A protocol-2 pickle of a dict (plain data, as a batch file)."""
    return _pk(entry, 2)


# ------------------------------------------------------------------------------ loaders
def load_pickle(p: Path) -> Any:
    return safe_pickle.load(p)


def nb101_truth(p: Path) -> Any:
    return NB101Space(p).ground_truth(_arch())


def nb101_enumerate(p: Path) -> Any:
    return list(NB101Space(p).enumerate())


def dataset(p: Path) -> Any:
    return load_dataset(str(p))


UNSAFE = safe_pickle.UnsafePickleError

# (id, make file in dir, loader, error type, texts the message must contain; "{name}" = file name)
CASES: list[Any] = [
    # ---- malicious / foreign pickles, straight through the restricted unpickler
    ("pickle-os-system", _write_fn("evil.pkl", lambda d: _pk(_Reduce(os.system, f"touch {_marker(d)}"))),
     load_pickle, UNSAFE, ("refusing to unpickle", "system", "{name}", "plain containers")),
    ("pickle-eval", _write_fn("eval.pkl", lambda d: _pk(_Reduce(builtins.eval, f"open({_marker(d)!r}, 'w')"))),
     load_pickle, UNSAFE, ("builtins.eval", "{name}")),
    ("pickle-exec-protocol0", _write_fn("exec0.pkl", lambda d: _pk(_Reduce(builtins.exec, f"open({_marker(d)!r}, 'w')"), 0)),
     load_pickle, UNSAFE, ("builtins.exec", "{name}")),
    ("pickle-getattr-gadget", _write("getattr.pkl", _pk(_Reduce(getattr, _Reduce(builtins.__import__, "os"), "system"))),
     load_pickle, UNSAFE, ("builtins.getattr", "{name}")),
    ("pickle-subprocess", _write_fn("popen.pkl", lambda d: _pk(_Reduce(subprocess.Popen, ["touch", _marker(d)]))),
     load_pickle, UNSAFE, ("subprocess.Popen", "{name}")),
    ("pickle-user-class", _write("user_class.pkl", _pk(_Plain())),
     load_pickle, UNSAFE, ("_Plain", "{name}")),
    ("pickle-torch-tensor", _write_fn("tensor.pkl", lambda d: __import__("pickle").dumps(__import__("torch").zeros(2))),
     load_pickle, UNSAFE, ("refusing to unpickle torch.", "{name}")),
    ("pickle-evil-inside-object-array",
     _write_fn("objarr.pkl", lambda d: _pk({"a": np.array([_Reduce(os.system, f"touch {_marker(d)}")], dtype=object)})),
     load_pickle, UNSAFE, ("system", "{name}")),
    ("pickle-truncated", _write("truncated.pkl", _pk(list(range(100)))[:-5]),
     load_pickle, ValueError, ("{name}", "not a readable pickle")),
    ("pickle-not-a-pickle", _write("text.pkl", "hello, I am text\n"),
     load_pickle, ValueError, ("{name}", "not a readable pickle")),
    ("pickle-empty-file", _write("empty.pkl", b""),
     load_pickle, ValueError, ("{name}", "not a readable pickle")),
    ("pickle-missing-file", lambda d: d / "absent.pkl", load_pickle, FileNotFoundError, ("absent.pkl",)),
    # ---- NAS-Bench-101 records files
    ("nb101-pickle-os-system", _write_fn("records.pkl", lambda d: _pk([{"hash": "h", "x": _Reduce(os.system, f"touch {_marker(d)}")}])),
     nb101_truth, UNSAFE, ("NAS-Bench-101", "system", "{name}")),
    ("nb101-pickle-not-records", _write("records2.pickle", _pk([1, 2, 3])),
     nb101_truth, ValueError, ("{name}", "'hash'")),
    ("nb101-json-truncated", _write("records.json", json.dumps(RECORDS[:2])[:-20]),
     nb101_truth, ValueError, ("{name}", "not valid JSON")),
    ("nb101-json-binary", _write("binary.json", b"\x80\x04\x95garbage\xff"),
     nb101_truth, ValueError, ("{name}", "not valid JSON")),
    ("nb101-json-a-number", _records("number.json", 42),
     nb101_truth, ValueError, ("{name}", "must hold records")),
    ("nb101-json-no-hash", _records("nohash.json", [{"module_operations": []}]),
     nb101_truth, ValueError, ("{name}", "'hash'")),
    ("nb101-json-hash-not-str", _records("inthash.json", [{"hash": 7}]),
     nb101_truth, ValueError, ("{name}", "string 'hash'")),
    ("nb101-record-bad-matrix", _records("badmatrix.json", [_rec(module_adjacency=[[0, 1], [1, 0]])]),
     nb101_enumerate, ValueError, ("{name}", RECORDS[0]["hash"], "module_adjacency")),
    ("nb101-record-no-ops", _records("noops.json", [{k: v for k, v in RECORDS[0].items() if k != "module_operations"}]),
     nb101_enumerate, ValueError, ("{name}", "module_operations")),
    ("nb101-run-without-accuracy",
     _records("noacc.json", [_rec(results={"108": [{"final_validation_accuracy": 0.9}]})]),
     nb101_truth, ValueError, ("{name}", "final_test_accuracy")),
    ("nb101-missing-file", lambda d: d / "no_records.json", nb101_truth, FileNotFoundError, ("no_records.json",)),
    # ---- user .npz datasets
    ("npz-not-a-zip", _write("fake.npz", "x,y\n1,2\n"), dataset, ValueError, ("{name}", "not a zip")),
    ("npz-a-pickle", _write_fn("pickle.npz", lambda d: _pk(_Reduce(os.system, f"touch {_marker(d)}"))),
     dataset, ValueError, ("{name}", "not a zip")),
    ("npz-truncated", _truncated_npz, dataset, ValueError, ("{name}",)),
    ("npz-missing-arrays", _npz("wrongnames.npz", a=np.zeros((2, 8, 8, 3), np.uint8), b=np.zeros(2)),
     dataset, ValueError, ("{name}", "'x'", "'y'")),
    ("npz-float-images", _npz("float.npz", x=np.zeros((2, 8, 8, 3), np.float32), y=np.zeros(2, np.int64)),
     dataset, ValueError, ("{name}", "uint8")),
    ("npz-nchw-images", _npz("nchw.npz", x=np.zeros((2, 3, 8, 8), np.uint8), y=np.zeros(2, np.int64)),
     dataset, ValueError, ("{name}", "[N, H, W, 3]")),
    ("npz-label-count", _npz("count.npz", x=np.zeros((3, 8, 8, 3), np.uint8), y=np.zeros(2, np.int64)),
     dataset, ValueError, ("{name}", "labels must have shape")),
    ("npz-negative-label", _npz("neg.npz", x=np.zeros((2, 8, 8, 3), np.uint8), y=np.array([0, -1])),
     dataset, ValueError, ("{name}", ">= 0")),
    ("npz-label-out-of-range", _npz("range.npz", x=np.zeros((2, 8, 8, 3), np.uint8), y=np.array([0, 5]),
                                    num_classes=np.array(3)),
     dataset, ValueError, ("{name}", "out of range", "num_classes=3")),
    ("npz-fractional-labels", _npz("frac.npz", x=np.zeros((2, 8, 8, 3), np.uint8), y=np.array([0.5, 1.0])),
     dataset, ValueError, ("{name}", "integers")),
    ("npz-object-array-inside", _npz_with_object_array, dataset, ValueError, ("{name}", "pickle")),
    # ---- image folders
    ("folder-no-classes", _folder({}), dataset, ValueError, ("images", "one sub-folder per class")),
    ("folder-no-images", _folder({"cat": {"notes.txt": b"hi"}}), dataset, ValueError, ("images", "no images")),
    ("folder-unreadable-image", _folder({"cat": {"a.png": (8, 8), "b.png": b"not a png"}}),
     dataset, ValueError, ("b.png", "not a readable image")),
    ("folder-mixed-sizes", _folder({"cat": {"a.png": (8, 8)}, "dog": {"b.png": (16, 8)}}),
     dataset, ValueError, ("b.png", "one size")),
    ("dataset-missing-path", lambda d: d / "nowhere.npz", dataset, FileNotFoundError, ("nowhere.npz",)),
    # ---- official dataset folders: torchvision CIFAR-10 / CIFAR-100, the NB201 authors' ImageNet16
    ("cifar10-os-system", _official("cifar10", "data_batch_3", lambda d: _pk(_Reduce(os.system, f"touch {_marker(d)}"), 2)),
     dataset, UNSAFE, ("refusing to unpickle", "system", "data_batch_3", "plain containers")),
    ("cifar100-os-system-inside", _official("cifar100", "train", lambda d: _batch(
        data=_Reduce(os.system, f"touch {_marker(d)}"), fine_labels=[0])),
     dataset, UNSAFE, ("refusing to unpickle", "system", "cifar-100-python/train")),
    ("in16-os-system", _official("in16", "train_data_batch_2", lambda d: _pk(_Reduce(os.system, f"touch {_marker(d)}"), 2)),
     dataset, UNSAFE, ("refusing to unpickle", "system", "train_data_batch_2")),
    ("in16-user-class", _official("in16", "train_data_batch_7", _pk(_Plain(), 2)),
     dataset, UNSAFE, ("_Plain", "train_data_batch_7")),
    ("cifar10-meta-eval", _official("cifar10", "batches.meta", lambda d: _pk(_Reduce(builtins.eval, f"open({_marker(d)!r}, 'w')"), 2)),
     dataset, UNSAFE, ("builtins.eval", "batches.meta")),
    ("cifar10-truncated", _official("cifar10", "data_batch_5", _batch(data=np.zeros((2, 3072), np.uint8), labels=[0, 1])[:-9]),
     dataset, ValueError, ("data_batch_5", "not a readable pickle")),
    ("cifar100-truncated", _official("cifar100", "train", _batch(data=np.zeros((2, 3072), np.uint8), fine_labels=[0, 1])[:40]),
     dataset, ValueError, ("cifar-100-python/train", "not a readable pickle")),
    ("in16-not-a-pickle", _official("in16", "train_data_batch_1", b"PK\x03\x04 a zip, not a pickle"),
     dataset, ValueError, ("train_data_batch_1", "not a readable pickle")),
    ("cifar10-missing-batch", _official("cifar10", "data_batch_2", drop=True),
     dataset, FileNotFoundError, ("data_batch_2", "missing", "data_batch_1 .. data_batch_5")),
    ("in16-missing-batch", _official("in16", "train_data_batch_4", drop=True),
     dataset, FileNotFoundError, ("train_data_batch_4", "missing", "the official one has 10")),
    ("cifar100-missing-train", _official("cifar100", "train", drop=True),
     dataset, FileNotFoundError, ("cifar-100-python/train", "not found")),
    ("cifar10-wrong-shape", _official("cifar10", "data_batch_1", _batch(data=np.zeros((2, 1024), np.uint8), labels=[0, 1])),
     dataset, ValueError, ("data_batch_1", "uint8 [N, 3072]", "[2, 1024]")),
    ("cifar10-float-data", _official("cifar10", "data_batch_1", _batch(data=np.zeros((2, 3072)), labels=[0, 1])),
     dataset, ValueError, ("data_batch_1", "uint8 [N, 3072]", "float64")),
    ("in16-imagenet32-rows", _official("in16", "train_data_batch_3", _batch(data=np.zeros((2, 3072), np.uint8), labels=[1, 2])),
     dataset, ValueError, ("train_data_batch_3", "uint8 [N, 768]", "16x16")),
    ("cifar10-wrong-keys", _official("cifar10", "data_batch_4", _batch(images=np.zeros((2, 3072), np.uint8), labels=[0, 1])),
     dataset, ValueError, ("data_batch_4", "missing key(s) 'data'", "'images'")),
    ("cifar100-coarse-only", _official("cifar100", "train", _batch(data=np.zeros((2, 3072), np.uint8), labels=[0, 1])),
     dataset, ValueError, ("cifar-100-python/train", "missing key(s) 'fine_labels'")),
    ("in16-not-a-dict", _official("in16", "val_data", _pk([1, 2, 3], 2)),
     lambda p: load_dataset(p, split="valid"), ValueError, ("val_data", "not a valid ImageNet16 batch file", "list")),
    ("cifar10-label-count", _official("cifar10", "data_batch_1", _batch(data=np.zeros((3, 3072), np.uint8), labels=[0, 1])),
     dataset, ValueError, ("data_batch_1", "'labels' holds 2 values for 3 images")),
    ("cifar10-label-range", _official("cifar10", "data_batch_1", _batch(data=np.zeros((2, 3072), np.uint8), labels=[0, 10])),
     dataset, ValueError, ("data_batch_1", "holds 10, outside 0..9")),
    ("cifar100-label-text", _official("cifar100", "train", _batch(data=np.zeros((2, 3072), np.uint8), fine_labels=["a", "b"])),
     dataset, ValueError, ("cifar-100-python/train", "'fine_labels' must be integers")),
    ("in16-zero-based-labels", _official("in16", "train_data_batch_1", _batch(data=np.zeros((2, 768), np.uint8), labels=[0, 5])),
     dataset, ValueError, ("train_data_batch_1", "holds 0, outside 1..1000", "1-based")),
    ("cifar100-meta-wrong-count", _official("cifar100", "meta", _batch(fine_label_names=["apple"] * 10)),
     dataset, ValueError, ("cifar-100-python/meta", "must list 100 class names, got 10")),
    ("in16-no-kept-class", _official("in16", "val_data", _batch(data=np.zeros((2, 768), np.uint8), labels=[121, 500])),
     lambda p: load_dataset(p, split="valid"), ValueError, ("ImageNet16", "no image of classes 1..120")),
    ("cifar10-data-a-file-path", lambda d: _official("cifar10")(d) / "cifar-10-batches-py" / "data_batch_1",
     dataset, ValueError, ("data_batch_1", "must be an .npz", "folders")),
]


def _case_id(c: Any) -> str:
    return (c.values if hasattr(c, "values") else c)[0]


def _as_param(c: Any) -> Any:
    if hasattr(c, "values"):  # a pytest.param with marks
        return pytest.param(*c.values[1:], marks=c.marks, id=c.values[0])
    return pytest.param(*c[1:], id=c[0])


@pytest.mark.parametrize("make, loader, error, texts", [_as_param(c) for c in CASES])
def test_bad_data_file(make, loader, error, texts, tmp_path: Path) -> None:
    path = make(tmp_path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(error) as info:
        loader(path)
    msg = str(info.value)
    if isinstance(info.value, (KeyError, FileNotFoundError)) and msg.startswith(("'", '"')):
        msg = msg.strip("'\"")
    assert "\n" not in msg, f"message is not one line: {msg!r}"
    for text in texts:
        assert text.replace("{name}", path.name) in msg, f"{text!r} not in {msg!r}"
    assert not (tmp_path / MARKER).exists(), "the pickle's payload ran"
    if before is not None:
        assert path.read_bytes() == before, "the loader changed the file"


def test_case_count() -> None:
    assert len(CASES) >= 15 and len({_case_id(c) for c in CASES}) == len(CASES)


def test_plain_data_pickles_round_trip(tmp_path: Path) -> None:
    """What the restricted unpickler admits: plain containers and numpy values, every protocol."""
    import collections

    obj = {"list": [1, 2.5, None, True, "s", b"b"], "tuple": (1, 2), "set": {1, 2}, "frozen": frozenset([3]),
           "complex": 1 + 2j, "bytearray": bytearray(b"ab"), "od": collections.OrderedDict(a=1),
           "f32": np.arange(6, dtype=np.float32).reshape(2, 3), "fortran": np.asfortranarray(np.ones((2, 3))),
           "i64": np.int64(7), "f64": np.float64(0.25), "bool": np.bool_(True), "str": np.array(["ab", "c"]),
           "record": np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]), "objects": np.array([{"k": 1}, [2]], dtype=object)}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        p = tmp_path / f"ok{protocol}.pkl"
        p.write_bytes(pickle.dumps(obj, protocol=protocol))
        got = safe_pickle.load(p)
        assert got.keys() == obj.keys()
        for k, v in obj.items():
            if isinstance(v, np.ndarray):
                assert got[k].dtype == v.dtype and got[k].shape == v.shape
                assert all(a == b for a, b in zip(got[k].ravel().tolist(), v.ravel().tolist()))
            else:
                assert got[k] == v and type(got[k]) is type(v), k
        with open(p, "rb") as f:  # a file object works too
            assert safe_pickle.load(f).keys() == obj.keys()


def _cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ)
    e.pop("PYTHONPATH", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "zcfast", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_cli_malicious_nb101_records_refused(tmp_path: Path) -> None:
    """correlate --space nb101 with $ZCFAST_NB101_PATH naming a malicious pickle: exit 2, one
    line naming the file and the refused global; the payload never runs; no output written."""
    evil = tmp_path / "records.pkl"
    evil.write_bytes(_pk([{"hash": "h", "x": _Reduce(os.system, f"touch {_marker(tmp_path)}")}]))
    proc = _cli(["correlate", "--space", "nb101", "--dataset", "cifar10", "--proxies", "synflow", "--n", "2",
                 "--out", str(tmp_path / "out"), "--quiet", "--no-plots", "--time-sample", "0"],
                tmp_path, {"ZCFAST_NB101_PATH": str(evil)})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "refusing to unpickle" in last and "records.pkl" in last and "system" in last
    assert not (tmp_path / MARKER).exists()


def test_cli_bad_npz_refused(tmp_path: Path) -> None:
    """score --data naming a file that is not an .npz: exit 2, one line naming it."""
    bad = tmp_path / "fake.npz"
    bad.write_text("not a zip\n")
    proc = _cli(["score", "--data", str(bad), "--proxies", "synflow"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "fake.npz" in last and "not a" in last
