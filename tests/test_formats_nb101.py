"""NAS-Bench-101's official tfrecord (zcfast.formats.nb101): the ModelMetrics wire codec (against the
``protobuf`` package where it is importable), the 30 shipped records through an official-format
tfrecord and back exactly, all epoch budgets, the cache (reuse, changed source, force), the
routes of ``load`` (tfrecord, table, JSON, pickle) and of NB101Space, damaged and foreign inputs,
and the import's memory against the same records as Python objects."""
from __future__ import annotations

import base64
import hashlib
import json
import pickle
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from zcfast.formats import cache as fcache
from zcfast.formats import nb101 as f
from zcfast.formats import tfrecord as tfr
from zcfast.spaces.nb101 import NB101Space

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent
RECORDS = json.loads((ROOT / "assets" / "nb101_records_30.json").read_text())
SPACE = NB101Space()


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Every test converts into its own cache folder (never the user's ~/.cache)."""
    monkeypatch.setenv(fcache.ENV_CACHE, str(tmp_path / "cache"))


def _arch(rec):
    return SPACE.spec(rec["module_adjacency"], rec["module_operations"])


def _full_records() -> list[dict]:
    """The shipped records with runs at 4, 12 and 36 epochs too (values derived, exact floats)."""
    out = []
    for rec in RECORDS:
        r = json.loads(json.dumps(rec))
        for k, ep in enumerate((4, 12, 36)):
            r["results"][str(ep)] = [{m: v * (0.25 + 0.25 * k) for m, v in run.items()} for run in rec["results"]["108"]]
        out.append(r)
    return out


# ---- protobuf wire codec -----------------------------------------------------------------------

def _metrics() -> f.ModelMetrics:
    return f.ModelMetrics([f.EvaluationData(0.0, 0.0, 0.1, 0.11, 0.09, ""),
                           f.EvaluationData(54.0, 697.96, 0.81, 0.76, 0.761, "/m/model.ckpt-1"),
                           f.EvaluationData(108.0, 1396.1, 1.0, 0.9256, 0.9232, "")], 6315018, 1500.5)


def test_codec_round_trip_and_unknown_fields():
    m = _metrics()
    blob = f.encode_model_metrics(m)
    assert f.decode_model_metrics(blob) == m
    # unknown fields of every wire type are skipped (a newer writer), known ones still read
    extra = bytes([(9 << 3) | 0, 0x96, 0x01, (10 << 3) | 1]) + bytes(8) + bytes([(11 << 3) | 2, 3]) + b"abc" \
        + bytes([(12 << 3) | 5]) + bytes(4)
    assert f.decode_model_metrics(extra + blob + extra) == m
    # negative int32 (10-byte varint) and absent fields (protobuf defaults)
    neg = f.decode_model_metrics(bytes([(2 << 3) | 0]) + f._enc_varint(-5))
    assert neg.trainable_parameters == -5 and neg.evaluation_data == [] and neg.total_time == 0.0


@pytest.mark.parametrize("blob, match", [
    (bytes([0x08]), "truncated varint"),
    (bytes([(3 << 3) | 1, 1, 2]), "truncated 64-bit"),
    (bytes([(1 << 3) | 2, 50, 1]), "overruns"),
    (bytes([(1 << 3) | 3]), "wire type 3"),
    (bytes([(3 << 3) | 0, 1]), "total_time has wire type 0"),
    (bytes([0x00, 0x01]), "field number 0"),
    (bytes([(1 << 3) | 2, 2, (1 << 3) | 0, 1]), "current_epoch has wire type 0"),
])
def test_codec_malformed(blob, match):
    with pytest.raises(ValueError, match=match):
        f.decode_model_metrics(blob)


def _protobuf_class():
    pytest.importorskip("google.protobuf", reason="the protobuf package is not installed")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="zcfast_test_model_metrics.proto", package="zcfast_test_nb",
                                             syntax="proto2")
    ev = fdp.message_type.add(name="EvaluationData")
    for i, n in enumerate(("current_epoch", "training_time", "train_accuracy", "validation_accuracy",
                           "test_accuracy"), start=1):
        ev.field.add(name=n, number=i, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    ev.field.add(name="checkpoint_path", number=6, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    mm = fdp.message_type.add(name="ModelMetrics")
    mm.field.add(name="evaluation_data", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                 type_name=".zcfast_test_nb.EvaluationData")
    mm.field.add(name="trainable_parameters", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    mm.field.add(name="total_time", number=3, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("zcfast_test_nb.ModelMetrics"))


def test_codec_against_protobuf_package():
    MM = _protobuf_class()
    m = _metrics()
    parsed = MM.FromString(f.encode_model_metrics(m))
    assert parsed.trainable_parameters == m.trainable_parameters and parsed.total_time == m.total_time
    for got, want in zip(parsed.evaluation_data, m.evaluation_data, strict=True):
        for name in ("current_epoch", "training_time", "train_accuracy", "validation_accuracy", "test_accuracy",
                     "checkpoint_path"):
            assert getattr(got, name) == getattr(want, name)
    msg = MM(trainable_parameters=-7, total_time=3.25)
    e = msg.evaluation_data.add()
    e.test_accuracy, e.checkpoint_path = 0.5, "ckpt"
    msg.evaluation_data.add().current_epoch = 2.0
    back = f.decode_model_metrics(msg.SerializeToString())
    assert back.trainable_parameters == -7 and back.total_time == 3.25
    assert back.evaluation_data == [f.EvaluationData(test_accuracy=0.5, checkpoint_path="ckpt"),
                                    f.EvaluationData(current_epoch=2.0)]


# ---- the 30 shipped records through the official format ----------------------------------------

def test_round_trip_30_records_exact(tmp_path: Path):
    src = tmp_path / "nasbench_only108.tfrecord"
    assert f.write_tfrecord(src, RECORDS) == 90
    # the rows are the official layout: [hash, epochs, adjacency digits, ops, base64 ModelMetrics]
    row = json.loads(next(tfr.iter_records(src)))
    assert row[0] == RECORDS[0]["hash"] and row[1] == 108 and set(row[2]) <= {"0", "1"}
    assert row[3].split(",") == RECORDS[0]["module_operations"]
    mm = f.decode_model_metrics(base64.b64decode(row[4]))
    assert len(mm.evaluation_data) == 3 and mm.evaluation_data[2].current_epoch == 108.0
    assert mm.evaluation_data[2].test_accuracy == RECORDS[0]["results"]["108"][0]["final_test_accuracy"]
    res = f.import_file(src, progress=False)
    assert not res.cached and res.entries == 30 and res.details == {"rows": 90, "epochs": [108]}
    table = f.open_table(res.table)
    assert len(table) == 30 and sorted(table) == sorted(r["hash"] for r in RECORDS)
    for rec in RECORDS:
        assert rec["hash"] in table
        assert table[rec["hash"]] == rec          # every field, every run, bit for bit
    assert "0" * 32 not in table and 7 not in table
    with pytest.raises(KeyError):
        table["f" * 32]
    meta = json.loads((Path(res.table) / "meta.json").read_text())
    assert meta["fingerprint"] == fcache.fingerprint(src) and meta["entries"] == 30
    arr = np.load(Path(res.table) / "metrics.npy", mmap_mode="r")
    assert isinstance(arr, np.memmap) and arr.shape == (30, 1, 3, 8)
    # pickles as its folder (workers reopen it)
    clone = pickle.loads(pickle.dumps(table))
    assert clone[RECORDS[3]["hash"]] == RECORDS[3]


def test_import_file_reads_a_records_file_as_it_is(tmp_path: Path):
    src = tmp_path / "nb101_dict.pkl"
    src.write_bytes(pickle.dumps({r["hash"]: r for r in RECORDS}))
    for path in (ROOT / "assets" / "nb101_records_30.json", src):
        res = f.import_file(path, cache=tmp_path / "c", progress=False, force=True)
        assert isinstance(res, fcache.ImportResult)
        assert (res.space, res.source, res.table, res.entries, res.seconds, res.cached, res.details) == \
            ("nb101", str(path), str(path), 30, 0.0, True, {})
        assert res.summary() == (f"nb101: 30 architectures in {path} (a records file: used directly by "
                                 "--benchmark, no conversion needed)")
    assert not (tmp_path / "c").exists()            # nothing converted, nothing cached
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="string 'hash'"):
        f.import_file(bad, progress=False)


def test_space_reads_tfrecord_like_json(tmp_path: Path, monkeypatch):
    src = tmp_path / "nb.tfrecord"
    f.write_tfrecord(src, RECORDS)
    via_tf, via_json = NB101Space(src), NB101Space(ROOT / "assets" / "nb101_records_30.json")
    assert via_tf.ground_truth_problem("cifar10") is None
    for rec in RECORDS[:10]:
        for metric in ("test", "valid", "train", "halfway_test", "training_time", "halfway_training_time"):
            assert via_tf.ground_truth(_arch(rec), metric=metric) == via_json.ground_truth(_arch(rec), metric=metric)
    assert sorted(SPACE.key(a) for a in via_tf.enumerate()) == sorted(r["hash"] for r in RECORDS)
    # a tfrecord is served by the memory-mapped table, whose records are built one lookup at a time
    assert isinstance(via_tf.records(), f.NB101Table)
    items = via_tf.records().items()
    assert not isinstance(items, (list, dict)) and len(items) == 30
    assert dict(items) == {r["hash"]: r for r in RECORDS} and len(list(via_tf.records().values())) == 30
    # the converted table folder and $ZCFAST_NB101_PATH work too; pickling keeps the path only
    table = f.import_file(src, progress=False)
    assert table.cached
    monkeypatch.setenv("ZCFAST_NB101_PATH", table.table)
    env_space = NB101Space()
    assert env_space.ground_truth(_arch(RECORDS[5])) == via_json.ground_truth(_arch(RECORDS[5]))
    via_tf.records()
    state = pickle.dumps(via_tf)
    assert len(state) < 1000
    assert pickle.loads(state).ground_truth(_arch(RECORDS[0])) == via_tf.ground_truth(_arch(RECORDS[0]))


def test_epochs_present_and_absent(tmp_path: Path):
    full = tmp_path / "nasbench_full.tfrecord"
    recs = _full_records()
    assert f.write_tfrecord(full, recs) == 30 * 4 * 3
    res = f.import_file(full, progress=False)
    assert res.details["epochs"] == [4, 12, 36, 108]
    table = f.open_table(res.table)
    assert all(table[r["hash"]] == r for r in recs)
    space = NB101Space(full)
    rec = recs[2]
    for ep in (4, 12, 36, 108):
        runs = rec["results"][str(ep)]
        want = 100 * float(np.mean([r["final_test_accuracy"] for r in runs]))
        assert space.ground_truth(_arch(rec), epochs=ep) == pytest.approx(want, rel=1e-15)
    only = tmp_path / "nasbench_only108.tfrecord"
    f.write_tfrecord(only, RECORDS)
    with pytest.raises(ValueError, match=r"no results at 12 epochs.*epochs present: \[108\]"):
        NB101Space(only).ground_truth(_arch(RECORDS[0]), epochs=12)
    with pytest.raises(ValueError, match=r"no results at 36 epochs.*present: \[108\]"):
        NB101Space(ROOT / "assets" / "nb101_records_30.json").ground_truth(_arch(RECORDS[0]), epochs=36)


def test_cache_reuse_changed_source_and_force(tmp_path: Path):
    src = tmp_path / "a.tfrecord"
    f.write_tfrecord(src, RECORDS[:10])
    first = f.import_file(src, progress=False)
    second = f.import_file(src, progress=False)
    assert not first.cached and second.cached and second.table == first.table and second.seconds == 0.0
    copy = tmp_path / "copy.tfrecord"
    copy.write_bytes(src.read_bytes())
    assert f.import_file(copy, progress=False).table == first.table       # same bytes, same table
    f.write_tfrecord(src, RECORDS[:12])                                     # changed source -> new table
    third = f.import_file(src, progress=False)
    assert not third.cached and third.table != first.table and third.entries == 12
    forced = f.import_file(src, progress=False, force=True)
    assert not forced.cached and forced.table == third.table and len(f.open_table(forced.table)) == 12
    # no temporary folders left behind
    assert not [p for p in Path(first.table).parent.iterdir() if p.name.startswith(".")]
    other = tmp_path / "elsewhere"
    assert Path(f.import_file(src, cache=other, progress=False).table).parent == other


def test_crc_check_can_be_disabled(tmp_path: Path):
    src = tmp_path / "crc.tfrecord"
    f.write_tfrecord(src, RECORDS[:3])
    raw = bytearray(src.read_bytes())
    raw[-1] ^= 0xFF                              # the last record's stored data CRC
    src.write_bytes(bytes(raw))
    with pytest.raises(tfr.TFRecordError, match=r"crc\.tfrecord.*record 8 .*data CRC mismatch"):
        f.import_file(src, progress=False)
    res = f.import_file(src, progress=False, check_crc=False)
    assert f.open_table(res.table)[RECORDS[2]["hash"]] == RECORDS[2]


# ---- damaged and foreign inputs ----------------------------------------------------------------

def _row(*fields) -> bytes:
    return json.dumps(list(fields)).encode()


GOOD_METRICS = base64.b64encode(f.encode_model_metrics(_metrics())).decode()


@pytest.mark.parametrize("row, match", [
    (b"\xff\xfe", "not UTF-8 JSON"),
    (_row("a" * 32, 108), "expected a JSON list"),
    (_row("xyz", 108, "01", "input,output", GOOD_METRICS), "32 hex digits"),
    (_row("a" * 32, "108", "0100", "input,output", GOOD_METRICS), "epochs"),
    (_row("a" * 32, 108, "012", "input,output", GOOD_METRICS), "0/1 digits"),
    (_row("a" * 32, 108, "010", "input,output", GOOD_METRICS), "square"),
    (_row("a" * 32, 108, "0100", "input,conv,output", GOOD_METRICS), "3 operations for a 2x2"),
    (_row("a" * 32, 108, "0100", "input,conv5", GOOD_METRICS), "unknown operation 'conv5'"),
    (_row("a" * 32, 108, "0100", "input,output", "!!"), "not base64"),
    (_row("a" * 32, 108, "0100", "input,output", base64.b64encode(b"\x0b").decode()), "not a ModelMetrics"),
    (_row("a" * 32, 108, "0100", "input,output", base64.b64encode(b"").decode()), "0 evaluation_data entries"),
])
def test_bad_rows_name_file_and_record(tmp_path: Path, row: bytes, match: str):
    good = _row("b" * 32, 108, "0100", "input,output", GOOD_METRICS)
    src = tmp_path / "bad.tfrecord"
    tfr.write_records(src, [good, row])
    with pytest.raises(ValueError, match=rf"bad\.tfrecord.*record 1: .*{match}"):
        f.import_file(src, progress=False)


def test_too_many_runs_empty_foreign_and_missing(tmp_path: Path):
    good = _row("b" * 32, 108, "0100", "input,output", GOOD_METRICS)
    four = tmp_path / "four.tfrecord"
    tfr.write_records(four, [good] * 4)
    with pytest.raises(ValueError, match=r"record 3: a run 4 of hash b{32} at 108 epochs"):
        f.import_file(four, progress=False)
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.tfrecord.*holds no records"):
        NB101Space(empty).ground_truth(_arch(RECORDS[0]))
    png = tmp_path / "picture.tfrecord"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(500))
    with pytest.raises(tfr.TFRecordError, match=r"picture\.tfrecord.*record 0 at byte offset 0"):
        NB101Space(png).ground_truth(_arch(RECORDS[0]))
    with pytest.raises(FileNotFoundError, match="gone.tfrecord"):
        f.import_file(tmp_path / "gone.tfrecord")
    why = NB101Space(tmp_path / "gone.tfrecord").ground_truth_problem("cifar10")
    assert "gone.tfrecord" in why and "does not exist" in why
    folder = tmp_path / "not_a_table"
    folder.mkdir()
    assert "not a converted table" in NB101Space(folder).ground_truth_problem("cifar10")
    with pytest.raises(ValueError, match=r"not_a_table.*meta\.json"):
        f.load(folder)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_routes(tmp_path: Path):
    # NASLib's pickle (dict hash -> record, numpy adjacency) through the restricted unpickler
    by_hash = {r["hash"]: dict(r, module_adjacency=np.asarray(r["module_adjacency"], dtype=np.int8))
               for r in RECORDS}
    good = tmp_path / "nb101_dict.pkl"
    good.write_bytes(pickle.dumps(by_hash, protocol=pickle.HIGHEST_PROTOCOL))
    loaded = f.load(good)
    assert len(loaded) == 30 and loaded[RECORDS[1]["hash"]]["trainable_parameters"] == RECORDS[1]["trainable_parameters"]
    # a pickle without the suffix is recognised by its first byte, still restricted
    marker = tmp_path / "EXECUTED"
    evil = tmp_path / "nb101_records"
    evil.write_bytes(pickle.dumps([{"hash": "h", "x": _Evil(marker)}]))
    with pytest.raises(ValueError, match=r"refusing to unpickle pathlib\.Path.*nb101_records"):
        f.load(evil)
    foreign = tmp_path / "model.pkl"
    foreign.write_bytes(pickle.dumps({"weights": _Evil(marker)}))
    with pytest.raises(ValueError, match=r"refusing to unpickle.*model\.pkl"):
        NB101Space(foreign).ground_truth(_arch(RECORDS[0]))
    assert not marker.exists()
    old_protocol = tmp_path / "records_p0"
    old_protocol.write_bytes(pickle.dumps(RECORDS[:3], protocol=0))
    assert len(f.load(old_protocol)) == 3
    json_no_suffix = tmp_path / "records_json"
    json_no_suffix.write_text(json.dumps(RECORDS[:2]))
    assert len(f.load(json_no_suffix)) == 2


# ---- memory ------------------------------------------------------------------------------------

def _synthetic(n_hashes: int, runs: int, seed: int = 0):
    rng = random.Random(seed)
    for i in range(n_hashes):
        base = RECORDS[i % len(RECORDS)]
        yield {"hash": hashlib.md5(f"{seed}-{i}".encode()).hexdigest(), "module_adjacency": base["module_adjacency"],
               "module_operations": base["module_operations"], "trainable_parameters": rng.randrange(10**7),
               "results": {"108": [{m: rng.random() for m in f.METRICS} for _ in range(runs)]}}


def test_import_memory_is_bounded_by_the_table(tmp_path: Path):
    src = tmp_path / "synthetic.tfrecord"
    rows = f.write_tfrecord(src, _synthetic(6_700, 3))
    assert rows == 20_100
    tracemalloc.start()
    try:
        res = f.import_file(src, progress=False, chunk_size=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        table = f.open_table(res.table)
        base, _ = tracemalloc.get_traced_memory()
        as_objects = {h: table[h] for h in table}      # the same records as Python objects
        objects_bytes = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(as_objects) == 6_700
    table_bytes = sum(p.stat().st_size for p in Path(res.table).glob("*.npy"))
    # the import holds one read chunk (1 MiB), the hash index and the table as it grows (in blocks,
    # then its sorted copy as it is written), never the file or the records as objects
    assert peak < objects_bytes / 3, (peak, objects_bytes)
    assert peak < (1 << 20) + 3 * table_bytes + 200 * len(table), (peak, table_bytes)
    assert peak < src.stat().st_size
