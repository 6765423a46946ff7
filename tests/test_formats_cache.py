"""zcfast.formats.cache: the fingerprint that keys converted tables, and the cache folder rule."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from zcfast import safe_pickle
from zcfast.formats import cache


def test_file_fingerprint_follows_content(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 100)
    k1 = cache.fingerprint(f)
    f.write_bytes(b"y" * 100)
    assert cache.fingerprint(f) != k1
    g = tmp_path / "copy.bin"
    g.write_bytes(b"y" * 100)
    assert cache.fingerprint(g) == cache.fingerprint(f)  # a copy (same bytes) reuses the table
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(3 << 20))
    kb = cache.fingerprint(big)
    with open(big, "r+b") as fh:  # the last MiB is hashed
        fh.seek((3 << 20) - 10)
        fh.write(b"1")
    assert cache.fingerprint(big) != kb


def test_folder_fingerprint_names_sizes_and_meta(tmp_path: Path) -> None:
    d = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    d.mkdir()
    (d / "meta.pickle.pbz2").write_bytes(b"meta-1")
    (d / "000000.pickle.pbz2").write_bytes(b"aaaa")
    k = cache.fingerprint(d)
    (d / "000000.pickle.pbz2").write_bytes(b"bbbb")  # same size: not re-read (documented)
    assert cache.fingerprint(d) == k
    (d / "000000.pickle.pbz2").write_bytes(b"bbbbb")  # size changed
    k2 = cache.fingerprint(d)
    assert k2 != k
    (d / "meta.pickle.pbz2").write_bytes(b"meta-2")  # meta content is hashed
    assert cache.fingerprint(d) != k2
    (d / "000001.pickle.pbz2").write_bytes(b"c")
    assert cache.fingerprint(d) not in (k, k2)


def test_missing_source_and_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        cache.fingerprint(tmp_path / "nope.tfrecord")
    monkeypatch.setenv(cache.ENV_CACHE, str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c"
    assert cache.cache_dir(tmp_path / "o") == tmp_path / "o"
    f = tmp_path / "s.bin"
    f.write_bytes(b"1")
    assert cache.cached_path("nb101", f, "").parent == tmp_path / "c"
    assert cache.cached_path("nb101", f, "").name.startswith("nb101-")


def test_safe_pickle_latin1_encoding() -> None:
    # a Python 2 str (protocol 2 SHORT_BINSTRING) holding a non-ASCII byte
    data = b"\x80\x02U\x04caf\xe9q\x00."
    with pytest.raises(ValueError, match="not a readable pickle"):
        safe_pickle.loads(data)  # ASCII, the default, cannot decode it
    assert safe_pickle.loads(data, encoding="latin1") == "caf\xe9"
    assert pickle.loads(data, encoding="latin1") == "caf\xe9"  # the same as the plain unpickler
