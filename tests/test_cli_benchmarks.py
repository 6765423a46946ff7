"""The benchmark and dataset files users have, through the command line (issue #14 items 4-6).

Every case runs ``zcfast`` as a subprocess on the files ``python -m zcfast.formats.fixtures``
writes from shipped data (an NB101 tfrecord and NASLib pickle of the 30 shipped records, NB201
v1.0 / v1.1 ``.pth`` and a NATS-tss folder of 12 entries, CIFAR-10 / CIFAR-100 / ImageNet16
folders), with ``$ZCFAST_CACHE`` in the test's folder. The ground truth each command uses is
checked against an independent reference: the shipped JSON records (NB101: mean over the 3 runs
of ``final_test_accuracy``, in percent) and the shipped NB201 table column the fixture took its
values from (``zcfast.formats.fixtures.NB201_SOURCES``). Errors: one line on stderr, status 2,
before any output folder is made.
"""
from __future__ import annotations

import csv
import gzip
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zcfast import options
from zcfast.formats import fixtures
from zcfast.spaces import nb101 as nb101_space

ZCFAST = [sys.executable, "-m", "zcfast"]
QUICK = ["--quiet", "--time-sample", "0", "--bootstrap", "0", "--no-plots"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fixtures")
    fixtures.write_all(folder)
    return folder


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", ZCFAST_CACHE=str(cache))
    for k in ("ZCFAST_NB101_PATH", "ZCFAST_NB201_PATH", "ZCFAST_NB301_PATH"):
        env.pop(k, None)
    return env


def zc(args: list[str], tmp: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(ZCFAST + [str(a) for a in args], cwd=tmp, env=_env(tmp / "cache"),
                          capture_output=True, text=True, timeout=timeout)


def _one_error_line(proc: subprocess.CompletedProcess, command: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "%|" not in ln]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"zcfast {command}: error:"), lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


def _nb101_reference() -> dict[str, float]:
    """arch encode text -> mean final test accuracy (%) of the shipped records."""
    sp = nb101_space.NB101Space()
    out = {}
    for r in fixtures.nb101_records():
        a = nb101_space.make_arch(r["module_adjacency"], r["module_operations"])
        out[sp.encode(a)] = 100.0 * float(np.mean([run["final_test_accuracy"] for run in r["results"]["108"]]))
    return out


def _shipped_nb201(column: str) -> dict[str, float]:
    path = Path(__file__).resolve().parents[1] / "zcfast" / "assets" / "nb201" / "nb201_groundtruth_merged.csv.gz"
    with gzip.open(path, "rt", newline="") as fh:
        return {r["arch_str"]: float(r[column]) for r in csv.DictReader(fh)}


def _scores(out: Path) -> list[dict[str, str]]:
    with open(out / "scores.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------- import
def test_import_every_benchmark_format(files, tmp_path):
    p = zc(["import", "nb101", files / "nasbench_only108.tfrecord", "--quiet"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("nb101: 30 architectures from ") and "rows 90" in p.stdout
    assert str(tmp_path / "cache") in p.stdout
    again = zc(["import", "nb101", files / "nasbench_only108.tfrecord", "--quiet"], tmp_path)
    assert again.returncode == 0 and "reused" in again.stdout
    forced = zc(["import", "nb101", files / "nasbench_only108.tfrecord", "--quiet", "--force"], tmp_path)
    assert forced.returncode == 0 and "reused" not in forced.stdout
    other = tmp_path / "elsewhere"
    p = zc(["import", "nb101", files / "nasbench_only108.tfrecord", "--quiet", "--cache", other], tmp_path)
    assert p.returncode == 0 and str(other) in p.stdout and any(other.iterdir())
    p = zc(["import", "nb101", files / "nb101_records_30.pkl"], tmp_path)
    assert p.returncode == 0 and p.stdout.startswith("nb101: 30 architectures in ") and "no conversion" in p.stdout
    for name in ("NAS-Bench-201-v1_0-e61699.pth", "NAS-Bench-201-v1_1-096897.pth", "NATS-tss-v1_0-3ffb9-simple"):
        p = zc(["import", "nb201", files / name, "--quiet"], tmp_path)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("nb201: 15,625 architectures from ") and "evaluated 12" in p.stdout


def test_import_refuses_missing_corrupt_and_foreign_files(files, tmp_path):
    line = _one_error_line(zc(["import", "nb101", tmp_path / "nope.tfrecord"], tmp_path), "import")
    assert "not found" in line and "nope.tfrecord" in line
    data = bytearray((files / "nasbench_only108.tfrecord").read_bytes())
    bad = tmp_path / "bad_crc.tfrecord"
    data[40] ^= 0xFF                              # inside the first record's data: its data CRC fails
    bad.write_bytes(bytes(data))
    line = _one_error_line(zc(["import", "nb101", bad, "--quiet"], tmp_path), "import")
    assert "CRC" in line and "bad_crc.tfrecord" in line
    short = tmp_path / "truncated.tfrecord"
    short.write_bytes((files / "nasbench_only108.tfrecord").read_bytes()[:-7])
    line = _one_error_line(zc(["import", "nb101", short, "--quiet"], tmp_path), "import")
    assert "truncated.tfrecord" in line
    # NB201 file given as NB101 and the reverse: refused, naming the file
    line = _one_error_line(zc(["import", "nb101", files / "NAS-Bench-201-v1_1-096897.pth", "--quiet"], tmp_path),
                           "import")
    assert "NAS-Bench-201-v1_1-096897.pth" in line
    line = _one_error_line(zc(["import", "nb201", files / "nasbench_only108.tfrecord", "--quiet"], tmp_path),
                           "import")
    assert "nasbench_only108.tfrecord" in line
    # a pickle that would run code is refused and never run
    evil = tmp_path / "evil.pkl"
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil.write_bytes(pickle.dumps({"x": Evil()}))
    line = _one_error_line(zc(["import", "nb101", evil], tmp_path), "import")
    assert "evil.pkl" in line and not marker.exists()
    line = _one_error_line(zc(["import", "nb301", files / "nasbench_only108.tfrecord"], tmp_path), "import")
    assert "invalid choice" in line


# ------------------------------------------------------------------------------ --benchmark
def test_correlate_nb201_benchmark_ranks_against_the_paper_column(files, tmp_path):
    out = tmp_path / "c"
    p = zc(["correlate", "--benchmark", files / "NAS-Bench-201-v1_1-096897.pth", "--n", "12",
            "--proxies", "grad_norm,synflow", "--batch-size", "8", "--out", out] + QUICK, tmp_path)
    assert p.returncode == 0, p.stderr
    summary = json.loads((out / "summary.json").read_text())
    gt = summary["ground_truth"]
    assert gt["metric"] == "paper" and gt["column"] == "cifar10valid_oritest_acc_hp200"
    assert gt["benchmark"].endswith("NAS-Bench-201-v1_1-096897.pth")
    assert "cifar10-valid run's 200-epoch test accuracy" in gt["note"]
    first = (out / "table.txt").read_text().splitlines()[0]
    assert "cifar10valid_oritest_acc_hp200 (the cifar10-valid run's 200-epoch test accuracy" in first
    ref = _shipped_nb201(fixtures.NB201_SOURCES[("cifar10-valid", 200, "ori-test")])
    rows = _scores(out)
    assert len(rows) == 12 and {int(r["index"]) for r in rows} == set(fixtures.NB201_INDICES)
    for r in rows:
        assert float(r["accuracy"]) == pytest.approx(ref[r["arch_str"]], abs=1e-9)
    # the NATS folder gives the same ground truth; the scores come from the store (arch-keyed)
    out2 = tmp_path / "c2"
    p = zc(["correlate", "--benchmark", files / "NATS-tss-v1_0-3ffb9-simple", "--n", "12",
            "--proxies", "grad_norm,synflow", "--batch-size", "8", "--out", out2, "--store", out / "results.sqlite"]
           + QUICK, tmp_path)
    assert p.returncode == 0, p.stderr
    assert "0 architectures scored now, 12 taken from the store" in p.stdout
    assert [r["accuracy"] for r in _scores(out2)] == [r["accuracy"] for r in rows]
    # an explicit metric wins; without a benchmark the shipped stand-in 'valid' is the default
    out3 = tmp_path / "c3"
    p = zc(["correlate", "--n", "12", "--proxies", "grad_norm", "--batch-size", "8", "--out", out3,
            "--store", out / "results.sqlite"] + QUICK, tmp_path)
    assert p.returncode == 0, p.stderr
    gt3 = json.loads((out3 / "summary.json").read_text())["ground_truth"]
    assert gt3 == {"metric": "valid", "column": "cifar10_val_nbsuitezero"}
    valid = _shipped_nb201("cifar10_val_nbsuitezero")
    for r in _scores(out3):
        assert float(r["accuracy"]) == pytest.approx(valid[r["arch_str"]], abs=1e-9)


@pytest.mark.parametrize("dataset,folder,classes,column", [
    ("cifar100", "cifar-100-python", 100, "cifar100_test_nats"),
    ("ImageNet16-120", "ImageNet16", 120, "imagenet16_120_test_nats"),
])
def test_correlate_other_datasets_with_official_data_folders(files, tmp_path, dataset, folder, classes, column):
    out = tmp_path / "o"
    p = zc(["correlate", "--dataset", dataset, "--data", files / folder, "--n", "12", "--proxies", "grad_norm",
            "--batch-size", "8", "--out", out] + QUICK, tmp_path)
    assert p.returncode == 0, p.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_classes"] == classes and summary["dataset"] == dataset
    assert summary["batch"]["data"] == str(files / folder)
    ref = _shipped_nb201(column)
    for r in _scores(out):
        assert float(r["accuracy"]) == pytest.approx(ref[r["arch_str"]], abs=1e-9)


def test_correlate_nb101_from_the_tfrecord(files, tmp_path):
    out = tmp_path / "o"
    p = zc(["correlate", "--space", "nb101", "--benchmark", files / "nasbench_only108.tfrecord", "--n", "10",
            "--proxies", "grad_norm", "--batch-size", "4", "--out", out] + QUICK, tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr
    ref = _nb101_reference()
    rows = _scores(out)
    assert len(rows) == 10
    for r in rows:
        assert float(r["accuracy"]) == pytest.approx(ref[r["arch_str"]], abs=1e-9)
    assert all(math.isfinite(float(r["grad_norm"])) for r in rows)


@pytest.mark.parametrize("algo,extra", [
    ("evolution", ["--option", "population=4", "--option", "tournament=2", "--warmup", "TABLE", "--warmup-pool",
                   "8", "--move", "TABLE"]),
    ("reinforce", ["--warmup", "TABLE", "--warmup-pool", "8", "--option", "warmup_top=4"]),
    ("brp", ["--warmup", "TABLE", "--warmup-pool", "8"]),
    ("random", []),
])
def test_nb101_searches_stay_inside_a_small_benchmark(files, tmp_path, algo, extra):
    ref = _nb101_reference()
    table = tmp_path / "scores.csv"
    with open(table, "w", newline="") as fh:   # a zero-cost score table: here, minus the arch text length
        w = csv.writer(fh)
        w.writerow(["arch_str", "score"])
        for s in ref:
            w.writerow([s, -len(s)])
    out = tmp_path / "s"
    args = ["search", "--space", "nb101", "--benchmark", files / "nasbench_only108.tfrecord", "--algo", algo,
            "--budget", "8", "--seeds", "2", "--no-progress", "--out", out]
    p = zc(args + [str(table) if a == "TABLE" else a for a in extra], tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr
    sp = nb101_space.NB101Space()
    keys = {sp.key(sp.decode(s)): acc for s, acc in ref.items()}
    for seed in (0, 1):
        log = json.loads((out / f"seed_{seed}.json").read_text())
        assert log["records"], log
        for rec in log["records"]:
            assert rec["error"] is None, rec
            key = sp.key(sp.decode(rec["arch_str"]))
            assert rec["accuracy"] == pytest.approx(keys[key], abs=1e-9)   # a benchmark architecture
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"].endswith("nasbench_only108.tfrecord") and summary["benchmark_archs"] == 30


def test_scan_enumerates_the_benchmark_file(files, tmp_path):
    p = zc(["scan", "--space", "nb101", "--benchmark", files / "nb101_records_30.pkl", "--proxies", "synflow",
            "--scorer", "zcfast.parallel:hash_scorer", "--backend", "serial", "--store", tmp_path / "r.sqlite",
            "--quiet"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert ": 30 candidates (30 scored now" in p.stdout


@pytest.mark.parametrize("command", [
    ["correlate", "--n", "3", "--out", "OUT"],
    ["correlate", "--space", "nb101", "--n", "3", "--out", "OUT"],
    ["search", "--space", "nb101", "--algo", "random", "--budget", "2", "--out", "OUT"],
    ["scan", "--space", "nb101", "--proxies", "synflow", "--n", "2", "--store", "OUT/r.sqlite", "--quiet"],
    ["score", "0"],
])
def test_missing_benchmark_is_one_line_before_any_work(tmp_path, command):
    args = [str(tmp_path / "OUT") if a == "OUT" else a.replace("OUT", str(tmp_path / "OUT")) for a in command]
    line = _one_error_line(zc(args + ["--benchmark", tmp_path / "missing.tfrecord"], tmp_path), command[0])
    assert "missing.tfrecord" in line and "does not exist" in line
    assert not (tmp_path / "OUT").exists()


def test_benchmark_refusals(files, tmp_path):
    line = _one_error_line(zc(["search", "--space", "toy", "--algo", "random", "--budget", "2",
                               "--benchmark", files / "nasbench_only108.tfrecord"], tmp_path), "search")
    assert "the toy space takes no --benchmark" in line
    data = bytearray((files / "nasbench_only108.tfrecord").read_bytes())
    data[40] ^= 0xFF
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(bytes(data))
    line = _one_error_line(zc(["correlate", "--space", "nb101", "--benchmark", bad, "--n", "3", "--out",
                               tmp_path / "o"] + QUICK, tmp_path), "correlate")
    assert "bad.tfrecord" in line and "CRC" in line
    line = _one_error_line(zc(["correlate", "--benchmark", files / "nasbench_only108.tfrecord", "--n", "3",
                               "--out", tmp_path / "o"] + QUICK, tmp_path), "correlate")
    assert "nasbench_only108.tfrecord" in line


# ------------------------------------------------------------------------------- in process
def test_resolve_space_configures_a_picklable_copy(files):
    import zcfast.spaces

    path = str(files / "nasbench_only108.tfrecord")
    sp = options.resolve_space("nb101", ground_truth_for="correlate", dataset="cifar10", benchmark=path)
    assert sp is not zcfast.spaces.get("nb101") and sp.ground_truth_problem("cifar10") is None
    assert zcfast.spaces.get("nb101")._records_path() in (None, os.environ.get("ZCFAST_NB101_PATH"))
    clone = pickle.loads(pickle.dumps(sp))         # what a worker process receives
    assert clone._records_path() == path
    nb201 = options.resolve_space("nb201", benchmark=str(files / "NATS-tss-v1_0-3ffb9-simple"))
    assert pickle.loads(pickle.dumps(nb201)).data_path == str(files / "NATS-tss-v1_0-3ffb9-simple")
    with pytest.raises(FileNotFoundError, match="--benchmark .*nothing.pth.* does not exist"):
        options.resolve_space("nb201", benchmark=str(files / "nothing.pth"))


def test_fixtures_command_prints_what_it_wrote(tmp_path):
    p = subprocess.run([sys.executable, "-m", "zcfast.formats.fixtures", str(tmp_path / "demo")],
                       capture_output=True, text=True, env=_env(tmp_path / "cache"), timeout=300)
    assert p.returncode == 0, p.stderr
    names = {"nasbench_only108.tfrecord", "nb101_records_30.pkl", "NAS-Bench-201-v1_0-e61699.pth",
             "NAS-Bench-201-v1_1-096897.pth", "NATS-tss-v1_0-3ffb9-simple", "cifar-10-batches-py",
             "cifar-100-python", "ImageNet16"}
    assert {Path(line.split()[-1]).name for line in p.stdout.splitlines()} == names
    assert {f.name for f in (tmp_path / "demo").iterdir()} == names
    assert fixtures.NB201_INDICES[:3] == tuple(fixtures.NB201_INDICES[:3])
    import random
    order = list(range(15625))
    random.Random(0).shuffle(order)
    assert fixtures.NB201_INDICES == tuple(order[:12])


def test_search_computed_proxy_reads_data_and_shares_correlates_run(files, tmp_path):
    """``search --data``: the computed warmup proxy is drawn from the user's CIFAR-100 folder, keyed
    in the store as ``correlate --data`` keys it (one run, scores shared); another dataset's folder
    is refused in one line before any work."""
    store = tmp_path / "s.sqlite"
    data = files / "cifar-100-python"
    p = zc(["correlate", "--dataset", "cifar100", "--data", data, "--n", "3", "--proxies", "synflow",
            "--batch-size", "8", "--store", store, "--out", tmp_path / "c"] + QUICK, tmp_path)
    assert p.returncode == 0, p.stderr
    p = zc(["search", "--dataset", "cifar100", "--data", data, "--algo", "random", "--warmup", "synflow", "--warmup-pool", "4",
            "--budget", "3", "--seeds", "1", "--proxy-batch-size", "8", "--store", store,
            "--out", tmp_path / "o", "--no-progress"], tmp_path)
    assert p.returncode == 0, p.stderr
    from zcfast.store import ResultStore
    with ResultStore(store) as st:
        runs = [c for c in st.runs().values() if c.get("proxy") == "synflow"]
    assert len(runs) == 1, runs                                 # the search reused correlate's run
    assert runs[0]["batch"]["data"] == str(data)
    bad = zc(["search", "--dataset", "cifar100", "--data", files / "cifar-10-batches-py", "--algo", "random",
              "--warmup", "synflow", "--budget", "3", "--proxy-batch-size", "8", "--out", tmp_path / "o2"], tmp_path)
    assert "holds cifar10" in _one_error_line(bad, "search")
    assert not (tmp_path / "o2").exists()
