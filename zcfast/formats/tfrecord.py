"""TFRecord framing, read without TensorFlow: streamed, every CRC checked.

A TFRecord file is a sequence of records, each framed as::

    uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

with ``masked_crc(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8 (mod 2**32)`` and CRC-32C the
Castagnoli CRC (:func:`zcfast.ops.crc32c_segments`). :func:`iter_records` reads the file in large
chunks (memory bounded by the chunk and the largest record, never by the file) and checks the two
CRCs of every record of a chunk with one kernel call; a damaged file raises :class:`TFRecordError`
naming the file, the record number (0-based) and its byte offset. :func:`write_records` writes a
file (atomically) for tests and fixtures.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

__all__ = ["TFRecordError", "MASK_DELTA", "HEADER_BYTES", "FOOTER_BYTES", "masked_crc",
           "iter_records", "write_records"]

#: Added to the rotated CRC in a stored (masked) CRC.
MASK_DELTA = 0xA282EAD8
#: Bytes before a record's data (length + its masked CRC) and after it (the data's masked CRC).
HEADER_BYTES, FOOTER_BYTES = 12, 4
_DEFAULT_CHUNK = 4 << 20
_U32 = 0xFFFFFFFF


class TFRecordError(ValueError):
    """A TFRecord file is damaged or is not a TFRecord file (the message names the file, the record
    number and the byte offset)."""


def masked_crc(crc: np.ndarray | int) -> np.ndarray | int:
    """TFRecord's mask of CRC-32C values (ints in [0, 2**32), or an int64 array of them)."""
    if isinstance(crc, np.ndarray):
        c = crc.astype(np.int64)
        return ((((c >> 15) | (c << 17)) & _U32) + MASK_DELTA) & _U32
    c = int(crc)
    return ((((c >> 15) | (c << 17)) & _U32) + MASK_DELTA) & _U32


def _segment_crcs(buf: bytearray | memoryview, offsets: list[int], lengths: list[int]) -> np.ndarray:
    """Masked CRC-32C of each segment of ``buf`` (one kernel call)."""
    from .. import ops  # the compiled extension, loaded when a CRC is first needed

    data = torch.frombuffer(buf, dtype=torch.uint8) if len(buf) else torch.empty(0, dtype=torch.uint8)
    crc = ops.crc32c_segments(data, torch.tensor(offsets, dtype=torch.int64),
                              torch.tensor(lengths, dtype=torch.int64)).numpy()
    del data
    return masked_crc(crc)


def _check_chunk(path: str, buf: bytearray | memoryview, base: int, first: int, starts: list[int], sizes: list[int],
                 stored_len: list[int], stored_data: list[int]) -> None:
    """Check both CRCs of the records starting at ``starts`` (offsets in ``buf``, whose first byte is
    at file offset ``base``; record numbers from ``first``); raise for the earliest bad one."""
    if not starts:
        return
    n = len(starts)
    offsets = starts + [s + HEADER_BYTES for s in starts]
    lengths = [8] * n + sizes
    got = _segment_crcs(buf, offsets, lengths)
    want = np.array(stored_len + stored_data, dtype=np.int64)
    bad = np.flatnonzero(got != want)
    if bad.size == 0:
        return
    k = int(min(j % n for j in bad))
    which = "length" if got[k] != want[k] else "data"
    j = k if which == "length" else n + k
    hint = (" (corrupt framing, or not a TFRecord file)" if which == "length"
            else " (the record's bytes are corrupt)")
    raise TFRecordError(f"TFRecord file {path!r}: record {first + k} at byte offset {base + starts[k]}: "
                        f"{which} CRC mismatch (stored 0x{int(want[j]):08x}, computed 0x{int(got[j]):08x})"
                        f"{hint}")


def _length_crc_ok(buf: bytearray | memoryview, i: int) -> bool:
    stored = struct.unpack_from("<I", buf, i + 8)[0]
    return int(_segment_crcs(buf, [i], [8])[0]) == stored


def iter_records(path: str | os.PathLike[str], *, check_crc: bool = True,
                 progress: Callable[[int], object] | None = None,
                 chunk_size: int = _DEFAULT_CHUNK) -> Iterator[bytes]:
    """Yield the data of each record of a TFRecord file, in file order.

    Args:
        path: the file.
        check_crc: check both CRCs of every record (one kernel call per chunk); ``False`` trusts
            the framing (a wrong length is still refused where it leaves the file).
        progress: called with the number of bytes consumed after each chunk (e.g. ``tqdm.update``).
        chunk_size: bytes read at a time (a record larger than this is read whole).

    Raises:
        FileNotFoundError naming the path; TFRecordError (a ValueError) naming the file, the
        record number and its byte offset for a wrong CRC, a truncated record, a length beyond
        the end of the file, or trailing bytes too short for a record.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"TFRecord file not found: {str(p)!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"iter_records: chunk_size must be a positive int, got {chunk_size!r}")
    name = str(p)
    with open(p, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        # one buffer of chunk_size bytes, reused: the unread tail moves to its front and the next
        # bytes are read in after it (a record larger than the buffer grows it)
        store = bytearray(chunk_size)
        valid = fh.readinto(store)
        buf = memoryview(store)[:valid]
        base = 0          # file offset of buf[0]
        number = 0        # record number of the next record
        while len(buf):
            i = 0
            starts: list[int] = []
            sizes: list[int] = []
            stored_len: list[int] = []
            stored_data: list[int] = []
            need = 0      # bytes the next (incomplete) record needs in buf
            problem = None
            while True:
                rest = len(buf) - i
                if rest < HEADER_BYTES:
                    if base + len(buf) >= size and rest:
                        problem = ("short", i)
                    need = HEADER_BYTES
                    break
                n, lcrc = struct.unpack_from("<QI", buf, i)
                end = i + HEADER_BYTES + n + FOOTER_BYTES
                if base + end > size:
                    problem = ("beyond", i)
                    break
                if end > len(buf):
                    need = end - i
                    break
                starts.append(i)
                sizes.append(n)
                stored_len.append(lcrc)
                stored_data.append(struct.unpack_from("<I", buf, end - FOOTER_BYTES)[0])
                i = end
            if check_crc:
                _check_chunk(name, buf, base, number, starts, sizes, stored_len, stored_data)
            if problem is not None:
                kind, j = problem
                where = f"TFRecord file {name!r}: record {number + len(starts)} at byte offset {base + j}"
                if kind == "short":
                    raise TFRecordError(f"{where}: {len(buf) - j} trailing bytes, fewer than a record header "
                                        f"({HEADER_BYTES} bytes): truncated file or trailing junk")
                if check_crc and not _length_crc_ok(buf, j):
                    stored = struct.unpack_from("<I", buf, j + 8)[0]
                    raise TFRecordError(f"{where}: length CRC mismatch (stored 0x{stored:08x}) (corrupt "
                                        "framing, or not a TFRecord file)")
                n = struct.unpack_from("<Q", buf, j)[0]
                raise TFRecordError(f"{where}: record of {n} bytes ends beyond the end of the file "
                                    f"({size} bytes): truncated file")
            for s, n in zip(starts, sizes):
                yield bytes(buf[s + HEADER_BYTES:s + HEADER_BYTES + n])
            number += len(starts)
            if progress is not None and i:
                progress(i)
            rest = len(buf) - i
            buf.release()
            if i == 0 and need > len(store):
                grown = bytearray(need + chunk_size)
                grown[:rest] = store[:rest]
                store = grown
            elif i:
                store[:rest] = store[i:i + rest]
            got = fh.readinto(memoryview(store)[rest:]) or 0
            if not got and i == 0:
                # nothing consumed and nothing more to read: the tail cannot be a record
                raise TFRecordError(f"TFRecord file {name!r}: record {number} at byte offset {base}: "
                                    f"{rest} trailing bytes that are not a whole record: truncated file")
            base += i
            buf = memoryview(store)[:rest + got]


def write_records(path: str | os.PathLike[str], records: Iterable[bytes]) -> int:
    """Write ``records`` (each bytes) as a TFRecord file, atomically (a temporary file in the same
    folder, then ``os.replace``). Returns the number of records written."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    count = 0
    try:
        with open(tmp, "wb") as fh:
            block: list[bytes] = []

            def flush() -> None:
                if not block:
                    return
                heads = [struct.pack("<Q", len(r)) for r in block]
                joined = bytearray(b"".join(heads) + b"".join(block))
                offs, lens, pos = [8 * k for k in range(len(block))], [8] * len(block), 8 * len(block)
                for r in block:
                    offs.append(pos)
                    lens.append(len(r))
                    pos += len(r)
                crc = _segment_crcs(joined, offs, lens)
                m = len(block)
                for k, r in enumerate(block):
                    fh.write(heads[k] + struct.pack("<I", int(crc[k])) + r + struct.pack("<I", int(crc[m + k])))
                block.clear()

            for r in records:
                if not isinstance(r, (bytes, bytearray, memoryview)):
                    raise ValueError(f"write_records: record {count} must be bytes, got {type(r).__name__}")
                block.append(bytes(r))
                count += 1
                if len(block) >= 4096:
                    flush()
            flush()
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return count
