"""Speed of zcfast's readers of the official benchmark files (issue #14), values checked first.

NAS-Bench-101 (``zcfast.formats.nb101``): a synthetic tfrecord in the official format (the 30
shipped records' cells under new hashes, random metrics, 3 runs at 108 epochs) is written, then
imported with and without the CRC checks; the framing and CRC pass alone is timed too. Before any
timing, the table must return every written value exactly for a sample of hashes. Baseline in the
same run: what the official API (google-research/nasbench ``api.py``) does per row without
TensorFlow: JSON + base64 + the protobuf decode into Python dicts, and no CRC check.

NAS-Bench-201 (``zcfast.formats.nb201``): the three real NATS-Bench architecture files shipped in
tests/assets, converted (checked against the shipped table first), against the official API's
``pickle_load`` (bz2 + plain pickle, which would run code) of the same files.

    python bench/bench_formats.py [--rows 100002] [--repeats 3]

Writes bench/results/formats.{json,md}.
"""
from __future__ import annotations

import argparse
import base64
import bz2
import hashlib
import json
import pickle
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine_info, markdown_table, timed_median, write_results  # noqa: E402

from zcfast.formats import nb101 as fnb101  # noqa: E402
from zcfast.formats import nb201 as fnb201  # noqa: E402
from zcfast.formats import tfrecord  # noqa: E402
from zcfast.spaces import nb201  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECORDS = json.loads((ROOT / "zcfast" / "assets" / "nb101" / "nb101_records_30.json").read_text())
NATS = ROOT / "tests" / "assets" / "NATS-tss-v1_0-3ffb9-simple"
RUN_FIELDS = ("halfway_training_time", "halfway_train_accuracy", "halfway_validation_accuracy",
              "halfway_test_accuracy", "final_training_time", "final_train_accuracy",
              "final_validation_accuracy", "final_test_accuracy")


def synthetic(n_hashes: int, runs: int = 3) -> list[dict]:
    rng = random.Random(0)
    out = []
    for i in range(n_hashes):
        base = RECORDS[i % len(RECORDS)]
        out.append({"hash": hashlib.md5(str(i).encode()).hexdigest(),
                    "module_adjacency": base["module_adjacency"], "module_operations": base["module_operations"],
                    "trainable_parameters": rng.randrange(10 ** 7),
                    "results": {"108": [{k: float(np.float32(rng.random())) for k in RUN_FIELDS}
                                        for _ in range(runs)]}})
    return out


def official_style_rows(path: Path) -> int:
    """nasbench api.py's per-row work (json, base64, protobuf -> dicts), framing unchecked."""
    fixed, computed = {}, {}
    with open(path, "rb") as fh:
        data = fh.read()
    pos, n = 0, 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 8], "little")
        row = data[pos + 12:pos + 12 + length]
        pos += 16 + length
        module_hash, epochs, raw_adjacency, raw_operations, raw_metrics = json.loads(row.decode("utf-8"))
        dim = int(np.sqrt(len(raw_adjacency)))
        adjacency = np.array([int(e) for e in raw_adjacency], dtype=np.int8).reshape(dim, dim)
        metrics = fnb101.decode_model_metrics(base64.b64decode(raw_metrics))
        if module_hash not in fixed:
            fixed[module_hash] = {"module_adjacency": adjacency, "module_operations": raw_operations.split(","),
                                  "trainable_parameters": metrics.trainable_parameters}
        ev = metrics.evaluation_data
        computed.setdefault(module_hash, {}).setdefault(epochs, []).append(
            {"halfway_training_time": ev[1].training_time, "halfway_test_accuracy": ev[1].test_accuracy,
             "final_training_time": ev[2].training_time, "final_test_accuracy": ev[2].test_accuracy})
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_002, help="tfrecord rows (3 per hash)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="zcfast-bench-formats-"))
    recs = synthetic(max(1, args.rows // 3))
    src = work / "synthetic.tfrecord"
    rows = fnb101.write_tfrecord(src, recs)
    size_mb = src.stat().st_size / 1e6

    # values first: every field of a sample of hashes, exactly
    table = fnb101.open_table(fnb101.import_file(src, cache=work / "check", progress=False).table)
    for r in random.Random(1).sample(recs, min(200, len(recs))):
        got = table[r["hash"]]
        assert got["trainable_parameters"] == r["trainable_parameters"]
        for want, have in zip(r["results"]["108"], got["results"]["108"]):
            assert all(have[k] == want[k] for k in RUN_FIELDS), (r["hash"], want, have)
    converted, _ = fnb201.read_benchmark(NATS)
    shipped = nb201.table()
    for i in (0, 11, 284):
        assert abs(converted["cifar10_oritest_acc_hp200"][i] - shipped["cifar10_test_nats"][i]) < 5e-7

    k = iter(range(10 ** 6))
    t_import, _ = timed_median(lambda: fnb101.import_file(src, cache=work / f"c{next(k)}", progress=False), args.repeats)
    t_nocrc, _ = timed_median(lambda: fnb101.import_file(src, cache=work / f"c{next(k)}", progress=False,
                                                         check_crc=False), args.repeats)
    t_frame, _ = timed_median(lambda: sum(1 for _ in tfrecord.iter_records(src)), args.repeats)
    t_official, n_off = timed_median(lambda: official_style_rows(src), args.repeats)
    assert n_off == rows
    files = sorted(NATS.glob("0*.pickle.pbz2"))
    t_nats, _ = timed_median(lambda: fnb201.read_benchmark(NATS), args.repeats)

    def plain_load() -> None:
        for f in files:
            with bz2.open(f, "rb") as fh:
                pickle.load(fh)  # the official pickle_load; only on the repository's own files
    t_nats_plain, _ = timed_median(plain_load, args.repeats)

    res = {
        "nb101_rows": rows, "nb101_file_mb": round(size_mb, 1),
        "nb101_import_rows_per_s": rows / t_import, "nb101_import_nocrc_rows_per_s": rows / t_nocrc,
        "nb101_framing_crc_records_per_s": rows / t_frame, "nb101_framing_mb_per_s": size_mb / t_frame,
        "nb101_official_style_rows_per_s": rows / t_official,
        "nb201_nats_files": len(files), "nb201_convert_s_per_file": t_nats / len(files),
        "nb201_plain_pickle_s_per_file": t_nats_plain / len(files),
    }
    table_md = markdown_table(
        ["what", "zcfast", "baseline (same run)", "note"],
        [["NB101 tfrecord import (rows/s)", f"{res['nb101_import_rows_per_s']:,.0f}",
          f"{res['nb101_official_style_rows_per_s']:,.0f} (api.py's per-row decode into dicts, no CRC)",
          f"{rows:,} rows, {size_mb:.1f} MB; CRCs checked"],
         ["NB101 import without CRC (rows/s)", f"{res['nb101_import_nocrc_rows_per_s']:,.0f}", "", ""],
         ["TFRecord framing + CRC-32C (records/s)", f"{res['nb101_framing_crc_records_per_s']:,.0f}", "",
          f"{res['nb101_framing_mb_per_s']:.0f} MB/s"],
         ["NATS-Bench -simple folder of 3 files -> table, per file (includes the fixed cost of the "
          "15,625-row table)", f"{res['nb201_convert_s_per_file'] * 1e3:.1f} ms",
          f"{res['nb201_plain_pickle_s_per_file'] * 1e3:.1f} ms (bz2 + plain pickle.load only)",
          f"{len(files)} real files (tests/assets), restricted unpickler"]])
    payload = {"command": command_line(), "machine": machine_info(), "repeats": args.repeats, "results": res}
    md = f"# Benchmark-file readers\n\n`{command_line()}` (median of {args.repeats})\n\n{table_md}"
    paths = write_results("formats", payload, md)
    print(md)
    print("wrote", *paths)


if __name__ == "__main__":
    main()
