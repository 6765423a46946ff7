"""CRC-32C (zcfast.ops.crc32c_segments against the bytewise reference and known vectors; opcheck,
fake kernel, bad inputs, both CPU copies) and TFRecord framing (zcfast.formats.tfrecord): round
trip over chunk boundaries, a wrong data CRC, a wrong length CRC, a truncated file, trailing junk,
an empty file, a foreign file, CRC checks switched off."""
from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
import torch

import zcfast.ops as ops
import zcfast.reference as ref
from zcfast.formats import tfrecord as tfr
from zcfast.testing import outputs_under_each_cpu_isa

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Known CRC-32C values (RFC 3720 B.4 and the classic check value).
KNOWN = [(b"", 0x00000000), (b"123456789", 0xE3069283), (bytes(32), 0x8A9136AA),
         (b"\xff" * 32, 0x62A8AB43), (bytes(range(32)), 0x46DD794E), (bytes(range(31, -1, -1)), 0x113FDB5C)]


def _rand_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


# ---- CRC-32C ---------------------------------------------------------------------------------

@pytest.mark.parametrize("data, want", KNOWN)
def test_crc32c_known_vectors(data, want):
    assert ops.crc32c(data) == want
    assert ref.crc32c(data) == want
    assert ops.crc32c(torch.tensor(list(data), dtype=torch.uint8)) == want


def test_crc32c_segments_match_reference_on_random_data():
    data = _rand_bytes(20_000, 1)
    rng = random.Random(2)
    offs, lens = [], []
    for _ in range(300):
        o = rng.randrange(len(data) + 1)
        n = rng.randrange(len(data) - o + 1) if rng.random() < 0.2 else min(rng.randrange(40), len(data) - o)
        offs.append(o)
        lens.append(n)
    offs += [0, len(data), 5]        # whole buffer, empty at the end, empty in the middle
    lens += [len(data), 0, 0]
    got = ops.crc32c_segments(data, torch.tensor(offs), torch.tensor(lens))
    assert got.dtype == torch.int64 and got.shape == (len(offs),)
    assert torch.equal(got, ref.crc32c_segments(data, offs, lens))
    assert got[-1] == 0 and got[-2] == 0
    # the threaded path (enough bytes) gives the same values
    big = _rand_bytes(1 << 20, 3)
    o = torch.arange(0, 1 << 20, 4096)
    n = torch.full_like(o, 4096)
    torch.set_num_threads(2)
    try:
        threaded = ops.crc32c_segments(big, o, n)
    finally:
        torch.set_num_threads(1)
    assert torch.equal(threaded, ops.crc32c_segments(big, o, n))
    assert int(threaded[7]) == ref.crc32c(big[7 * 4096:8 * 4096])


def test_crc32c_same_under_each_cpu_copy():
    """SSE4.2 instruction copy and slice-by-8 table copy: identical CRCs."""
    script = ("import random, torch; import zcfast.ops as o; d = random.Random(5).randbytes(100003); "
              "off = torch.arange(0, 100000, 997); n = torch.arange(len(off)) % 1000; "
              "print(o.crc32c_segments(d, off, n).tolist(), o.crc32c(d))")
    a, b = outputs_under_each_cpu_isa(script)
    assert a == b and a.strip()


def test_crc32c_strided_tensor_and_empty_buffer():
    base = torch.tensor(list(_rand_bytes(200, 4)), dtype=torch.uint8)
    strided = base[::2]
    want = ref.crc32c(bytes(strided.tolist()))
    assert ops.crc32c(strided) == want
    empty = ops.crc32c_segments(b"", torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))
    assert empty.tolist() == [0, 0]
    assert ops.crc32c_segments(b"abc", torch.zeros(0, dtype=torch.int64),
                               torch.zeros(0, dtype=torch.int64)).shape == (0,)


@pytest.mark.parametrize("args, match", [
    ((torch.zeros(4, dtype=torch.int32), torch.tensor([0]), torch.tensor([1])), "data must be uint8"),
    ((torch.zeros(4, dtype=torch.uint8), torch.tensor([0], dtype=torch.int32), torch.tensor([1])), "offsets must be int64"),
    ((torch.zeros(4, dtype=torch.uint8), torch.tensor([0]), torch.tensor([1.0])), "lengths must be int64"),
    ((torch.zeros(2, 2, dtype=torch.uint8), torch.tensor([0]), torch.tensor([1])), "data must be 1-D"),
    ((torch.zeros(4, dtype=torch.uint8), torch.tensor([0, 1]), torch.tensor([1])), "offsets has 2 entries"),
    ((torch.zeros(4, dtype=torch.uint8), torch.tensor([3]), torch.tensor([2])), "segment 0 .*outside data of 4 bytes"),
    ((torch.zeros(4, dtype=torch.uint8), torch.tensor([-1]), torch.tensor([1])), "segment 0"),
    ((torch.zeros(4, dtype=torch.uint8), torch.tensor([0]), torch.tensor([-1])), "segment 0"),
    ((torch.zeros(4, dtype=torch.uint8), torch.tensor([5]), torch.tensor([0])), "segment 0"),
])
def test_crc32c_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        ops.crc32c_segments(*args)


def test_crc32c_refuses_non_bytes():
    with pytest.raises(ValueError, match="bytes or a uint8 Tensor"):
        ops.crc32c("text")  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_crc32c_refuses_cuda_tensor():
    with pytest.raises(ValueError, match="CPU only"):
        ops.crc32c_segments(torch.zeros(4, dtype=torch.uint8, device="cuda"), torch.tensor([0]), torch.tensor([1]))


def test_crc32c_opcheck_and_fake():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.library import opcheck

    data = torch.tensor(list(_rand_bytes(100, 6)), dtype=torch.uint8)
    opcheck(torch.ops.zcfast.crc32c_segments.default, (data, torch.tensor([0, 10, 99]), torch.tensor([5, 0, 1])))
    with FakeTensorMode():
        out = torch.ops.zcfast.crc32c_segments(torch.empty(10, dtype=torch.uint8), torch.empty(3, dtype=torch.int64),
                                               torch.empty(3, dtype=torch.int64))
        assert out.shape == (3,) and out.dtype == torch.int64
        with pytest.raises(ValueError, match="data must be torch.uint8"):
            torch.ops.zcfast.crc32c_segments(torch.empty(10), torch.empty(3, dtype=torch.int64),
                                             torch.empty(3, dtype=torch.int64))


# ---- TFRecord framing ------------------------------------------------------------------------

def _records(n: int = 300, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.choice([0, 1, 7, 100, 1000, 5000])) for _ in range(n)]


def _frame(data: bytes) -> bytes:
    """An independent framing of one record (the CRCs from the plain-Python reference)."""
    head = struct.pack("<Q", len(data))
    return (head + struct.pack("<I", tfr.masked_crc(ref.crc32c(head))) + data
            + struct.pack("<I", tfr.masked_crc(ref.crc32c(data))))


def test_masked_crc_formula():
    c = 0xE3069283
    assert tfr.masked_crc(c) == ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    # an empty record, as TensorFlow writes it: length 0, masked CRC of 8 zero bytes, masked CRC 0
    assert _frame(b"").hex() == "000000000000000029039807d8ea82a2"


@pytest.mark.parametrize("chunk", [64, 1000, 4097, 8 << 20])
def test_round_trip_over_chunk_boundaries(tmp_path: Path, chunk: int):
    recs = _records()
    p = tmp_path / "r.tfrecord"
    assert tfr.write_records(p, recs) == len(recs)
    assert p.read_bytes() == b"".join(_frame(r) for r in recs)   # the writer frames as the reference does
    seen: list[int] = []
    assert list(tfr.iter_records(p, chunk_size=chunk, progress=seen.append)) == recs
    assert sum(seen) == p.stat().st_size
    assert list(tfr.iter_records(p, chunk_size=chunk, check_crc=False)) == recs


def _damaged(tmp_path: Path, name: str, edit) -> tuple[Path, list[bytes]]:
    recs = _records(50, seed=1)
    raw = bytearray(b"".join(_frame(r) for r in recs))
    p = tmp_path / name
    p.write_bytes(bytes(edit(raw, recs)))
    return p, recs


def _offset(recs: list[bytes], k: int) -> int:
    return sum(16 + len(r) for r in recs[:k])


@pytest.mark.parametrize("chunk", [100, 8 << 20])
def test_wrong_data_crc_names_file_record_offset(tmp_path: Path, chunk: int):
    def edit(raw, recs):
        k = next(i for i, r in enumerate(recs) if len(r) > 10 and i > 20)
        raw[_offset(recs, k) + 12 + 3] ^= 0x40
        return raw
    p, recs = _damaged(tmp_path, "data.tfrecord", edit)
    k = next(i for i, r in enumerate(recs) if len(r) > 10 and i > 20)
    with pytest.raises(tfr.TFRecordError, match=rf"data\.tfrecord.*record {k} at byte offset {_offset(recs, k)}: data CRC mismatch"):
        list(tfr.iter_records(p, chunk_size=chunk))
    # unchecked, the bytes come back as they are (one record differs)
    got = list(tfr.iter_records(p, check_crc=False, chunk_size=chunk))
    assert len(got) == len(recs) and sum(a != b for a, b in zip(got, recs)) == 1


def test_wrong_length_crc(tmp_path: Path):
    def edit(raw, recs):
        raw[_offset(recs, 7) + 9] ^= 1    # the stored length CRC of record 7
        return raw
    p, recs = _damaged(tmp_path, "len.tfrecord", edit)
    with pytest.raises(tfr.TFRecordError, match=rf"record 7 at byte offset {_offset(recs, 7)}: length CRC mismatch"):
        list(tfr.iter_records(p))


def test_corrupt_length_field(tmp_path: Path):
    def edit(raw, recs):
        raw[_offset(recs, 3) + 6] = 0x7F   # a huge length: beyond the file, and its CRC is wrong
        return raw
    p, recs = _damaged(tmp_path, "frame.tfrecord", edit)
    with pytest.raises(tfr.TFRecordError, match=rf"record 3 at byte offset {_offset(recs, 3)}: length CRC mismatch"):
        list(tfr.iter_records(p, chunk_size=500))
    with pytest.raises(tfr.TFRecordError, match=r"record 3 .*ends beyond the end of the file"):
        list(tfr.iter_records(p, check_crc=False))


def test_truncated_file_and_trailing_junk(tmp_path: Path):
    recs = _records(20, seed=2)
    whole = b"".join(_frame(r) for r in recs)
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(whole[:-2])
    with pytest.raises(tfr.TFRecordError, match=rf"cut\.tfrecord.*record 19 at byte offset {_offset(recs, 19)}: .*truncated"):
        list(tfr.iter_records(cut))
    head_only = tmp_path / "head.tfrecord"
    head_only.write_bytes(whole + _frame(b"x" * 50)[:7])
    with pytest.raises(tfr.TFRecordError, match=r"record 20 .*7 trailing bytes.*truncated file or trailing junk"):
        list(tfr.iter_records(head_only))
    junk = tmp_path / "junk.tfrecord"
    junk.write_bytes(whole + b"\0" * 30)
    with pytest.raises(tfr.TFRecordError, match=r"record 20 "):
        list(tfr.iter_records(junk))


def test_empty_and_foreign_files(tmp_path: Path):
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    assert list(tfr.iter_records(empty)) == []
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(0).randbytes(2000))
    with pytest.raises(tfr.TFRecordError, match=r"image\.png.*record 0 at byte offset 0: length CRC mismatch.*not a TFRecord"):
        list(tfr.iter_records(png))
    with pytest.raises(FileNotFoundError, match="missing.tfrecord"):
        list(tfr.iter_records(tmp_path / "missing.tfrecord"))


def test_write_is_atomic(tmp_path: Path):
    p = tmp_path / "out.tfrecord"
    tfr.write_records(p, [b"old"])

    def bad():
        yield b"ok"
        yield "not bytes"
    with pytest.raises(ValueError, match="record 1 must be bytes"):
        tfr.write_records(p, bad())  # type: ignore[arg-type]
    assert list(tfr.iter_records(p)) == [b"old"]
    assert [f.name for f in tmp_path.iterdir()] == ["out.tfrecord"]
