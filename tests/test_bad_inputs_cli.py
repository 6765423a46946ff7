"""Bad input to ``zcfast score|correlate|search|info`` and to the global parser (issue #11).

Each case runs ``python -m zcfast ...`` as a subprocess in a fresh folder and checks the exit
status, that the LAST line of stderr names the problem, and that no traceback is printed.
Every refusal happens before any work starts (no store, no output folder is created).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

MODULE = textwrap.dedent('''
    import torch.nn as nn

    def net(num_classes=10):
        return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, num_classes))

    def not_a_model(num_classes=10):
        return 42

    def needs_args(width, depth):
        return nn.Linear(width, depth)

    def raises(num_classes=10):
        raise RuntimeError("factory exploded")

    not_callable = 3

    def always_fails(arch):
        raise RuntimeError("GPU on fire")
''')

NB = ["--n", "2", "--proxies", "synflow", "--quiet", "--no-plots", "--time-sample", "0"]
TOY = ["search", "--space", "toy", "--algo", "random", "--budget", "3", "--no-progress"]

# (id, argv, exit status, text the last stderr line must contain)
CASES = [
    # ---- global parser
    ("no-command", [], 2, "give a command"),
    ("unknown-command", ["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ("unknown-option", ["score", "--nope"], 2, "unrecognized arguments: --nope"),
    ("info-unknown-option", ["info", "--bogus"], 2, "unrecognized arguments: --bogus"),
    # ---- score
    ("score-proxy-typo", ["score", "--proxies", "synflo"], 2, "unknown proxy 'synflo' (did you mean 'synflow'?)"),
    ("score-proxy-vote", ["score", "--proxies", "vote"], 2, "'vote' is not a per-network proxy"),
    ("score-proxies-empty", ["score", "--proxies", ","], 2, "--proxies is empty"),
    ("score-device-meta", ["score", "--device", "meta"], 2, "device type 'meta' is not supported"),
    ("score-device-junk", ["score", "--device", "banana"], 2, "'banana' is not a device"),
    ("score-threads-negative", ["score", "--threads", "-3"], 2, "argument --threads: must be an integer >= 1"),
    ("score-threads-text", ["score", "--threads", "many"], 2, "argument --threads: must be an integer"),
    ("score-batch-size-zero", ["score", "--batch-size", "0"], 2, "argument --batch-size: must be an integer >= 1"),
    ("score-bad-arch", ["score", "|bad~0|"], 2, "NB201 architecture string"),
    ("score-index-out-of-range", ["score", "99999"], 2, "out of range 0..15624"),
    ("score-dataset-unknown", ["score", "--dataset", "svhn"], 2, "unknown dataset 'svhn'"),
    ("score-data-missing", ["score", "--data", "/nonexistent/x.npz"], 2, "nor an existing path"),
    ("score-model-no-colon", ["score", "--model", "justaname"], 2, "--model must look like 'package.module:function'"),
    ("score-model-no-module", ["score", "--model", "nomodule_xyz:f"], 2, "cannot import model module 'nomodule_xyz'"),
    ("score-model-missing-attr", ["score", "--model", "userzoo:missing"], 2, "has no callable 'missing'"),
    ("score-model-not-callable", ["score", "--model", "userzoo:not_callable"], 2, "has no callable 'not_callable'"),
    ("score-model-not-module", ["score", "--model", "userzoo:not_a_model"], 2, "returned int, not an nn.Module"),
    ("score-model-needs-args", ["score", "--model", "userzoo:needs_args"], 2, "needs the argument(s) width, depth"),
    ("score-model-raises", ["score", "--model", "userzoo:raises"], 2, "failed while building the model: RuntimeError"),
    ("score-model-import-fails", ["score", "--model", "brokenzoo:f"], 2, "raised ZeroDivisionError"),
    ("score-model-and-archs", ["score", "--model", "userzoo:net", "0"], 2, "not both"),
    ("score-input-shape-without-model", ["score", "--input-shape", "3,32,32"], 2, "apply to --model only"),
    ("score-input-shape-bad", ["score", "--model", "userzoo:net", "--input-shape", "3,-1"], 2,
     "argument --input-shape: must be positive integers"),
    ("score-input-dtype-bad", ["score", "--model", "userzoo:net", "--input-shape", "3", "--input-dtype", "int8"],
     2, "argument --input-dtype: invalid choice: 'int8'"),
    ("score-input-dtype-without-shape", ["score", "--model", "userzoo:net", "--input-dtype", "int64"], 2,
     "--input-dtype applies with --input-shape only"),
    # ---- correlate
    ("correlate-darts-no-ground-truth", ["correlate", "--space", "darts", "--out", "o", *NB], 2,
     "darts space has none"),
    ("correlate-space-unknown", ["correlate", "--space", "nb999", "--out", "o", *NB], 2,
     "unknown search space 'nb999'"),
    ("correlate-proxy-typo", ["correlate", "--out", "o", *NB, "--proxies", "synflo"], 2, "unknown proxy 'synflo'"),
    ("correlate-proxy-vote", ["correlate", "--out", "o", *NB, "--proxies", "snip,vote"], 2,
     "'vote' is not a per-network proxy"),
    ("correlate-dataset-unknown", ["correlate", "--dataset", "svhn", "--out", "o", *NB], 2,
     "unknown dataset 'svhn'"),
    ("correlate-n-zero", ["correlate", "--out", "o", *NB, "--n", "0"], 2, "argument --n"),
    ("correlate-n-too-large", ["correlate", "--out", "o", *NB, "--n", "20000"], 2, "larger than the nb201 space"),
    ("correlate-out-is-a-file", ["correlate", "--out", "afile.txt", *NB], 2, "is an existing file"),
    ("correlate-out-missing", ["correlate", *NB], 2, "the following arguments are required: --out"),
    ("correlate-device-meta", ["correlate", "--out", "o", *NB, "--device", "meta"], 2,
     "device type 'meta' is not supported"),
    ("correlate-workers-negative", ["correlate", "--out", "o", *NB, "--workers", "-1"], 2,
     "argument --workers: must be an integer >= 0"),
    ("correlate-batch-size-zero", ["correlate", "--out", "o", *NB, "--batch-size", "0"], 2,
     "argument --batch-size"),
    ("correlate-shard-bad", ["correlate", "--out", "o", *NB, "--shard", "3/2"], 2, "--shard I/K needs 0 <= I < K"),
    ("correlate-store-foreign", ["correlate", "--out", "o", "--store", "afile.txt", *NB], 2,
     "is not a zcfast result store"),
    ("correlate-report-only-no-store", ["correlate", "--out", "o", *NB, "--report-only"], 2, "no result store"),
    ("correlate-metric-unknown", ["correlate", "--out", "o", *NB, "--metric", "bogus"], 2, "unknown metric"),
    # ---- search
    ("search-dataset-unknown", ["search", "--algo", "ae", "--budget", "5", "--dataset", "svhn", "--no-progress"], 2,
     "unknown dataset 'svhn'"),
    ("search-darts-no-ground-truth", ["search", "--space", "darts", "--algo", "random", "--budget", "2",
                                      "--no-progress"], 2, "search needs benchmark ground truth, but the darts"),
    ("search-space-unknown", ["search", "--space", "nb999", "--algo", "random", "--budget", "2", "--no-progress"],
     2, "unknown search space 'nb999'"),
    ("search-algo-unknown", ["search", "--algo", "annealing", "--budget", "5"], 2, "unknown search algorithm"),
    ("search-budget-negative", [*TOY, "--budget", "-1"], 2, "argument --budget: must be an integer >= 1"),
    ("search-seeds-zero", [*TOY, "--seeds", "0"], 2, "argument --seeds: must be an integer >= 1"),
    ("search-warmup-vote", [*TOY, "--warmup", "vote"], 2, "'vote' is not a per-network proxy"),
    ("search-warmup-typo", [*TOY, "--warmup", "synflo"], 2, "unknown proxy 'synflo'"),
    ("search-warmup-two", [*TOY, "--warmup", "synflow,snip"], 2, "--warmup takes one proxy"),
    ("search-move-not-evolution", [*TOY, "--move", "synflow"], 2, "--move applies to evolution only"),
    ("search-out-is-a-file", [*TOY, "--out", "afile.txt"], 2, "is an existing file"),
    ("search-device-meta", [*TOY, "--device", "meta"], 2, "device type 'meta' is not supported"),
    ("search-trainer-no-module", [*TOY, "--trainer", "nomodule_xyz:f"], 2, "cannot import trainer module"),
    ("search-option-malformed", [*TOY, "--option", "oops"], 2, "--option expects KEY=VALUE"),
    ("search-every-training-failed", [*TOY, "--trainer", "userzoo:always_fails"], 1,
     "every training failed (first: RuntimeError: GPU on fire)"),
    # ---- proxy sets and several mini-batches (issue #12)
    ("score-proxies-keyword-in-list", ["score", "--proxies", "paper,synflow"], 2,
     "'paper' is a proxy-set keyword: give it alone"),
    ("correlate-proxies-typo-names-sets", ["correlate", "--out", "o", *NB, "--proxies", "nwto"], 2,
     "or a proxy set: paper, all, suite-zero, every"),
    ("correlate-batches-zero", ["correlate", "--out", "o", *NB, "--batches", "0"], 2,
     "argument --batches: must be an integer >= 1, got '0'"),
    ("correlate-batches-too-many", ["correlate", "--out", "o", *NB, "--batches", "4"], 2,
     "4 x 64 = 256 distinct images, but 'cifar10' holds 200: use fewer batches (--batches)"),
    ("search-batches-zero", [*TOY, "--batches", "0"], 2, "argument --batches: must be an integer >= 1"),
    ("search-batches-too-many", ["search", "--algo", "random", "--budget", "2", "--warmup", "zico", "--batches", "4",
                                 "--out", "o", "--no-progress"], 2, "4 x 64 = 256 distinct images"),
    ("info-proxies-takes-no-value", ["info", "--proxies", "nwot"], 2, "unrecognized arguments: nwot"),
]

if torch.cuda.is_available():  # without a GPU, cuda is a user error; with one it works
    CUDA_CASES: list = []
else:
    CUDA_CASES = [("score-device-cuda-without-gpu", ["score", "--device", "cuda"], 2, "CUDA is not available here"),
                  ("correlate-device-cuda-without-gpu", ["correlate", "--out", "o", *NB, "--device", "cuda"], 2,
                   "CUDA is not available here")]


@pytest.mark.parametrize("argv, code, text", [c[1:] for c in CASES + CUDA_CASES],
                         ids=[c[0] for c in CASES + CUDA_CASES])
def test_bad_input_is_one_line_and_a_status(tmp_path, argv, code, text):
    (tmp_path / "userzoo.py").write_text(MODULE)
    (tmp_path / "brokenzoo.py").write_text("x = 1 / 0\n")
    (tmp_path / "afile.txt").write_text("my precious notes\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZCFAST_TRACEBACK")}
    env["PYTHONPATH"] = str(ROOT)
    env["OMP_NUM_THREADS"] = "1"
    p = subprocess.run([sys.executable, "-m", "zcfast", *argv], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    assert lines and text in lines[-1], p.stderr
    assert lines[-1].startswith("zcfast"), lines[-1]
    assert (tmp_path / "afile.txt").read_text() == "my precious notes\n"
    if code == 2:  # refused before any work: no output folder, no store
        assert not (tmp_path / "o").exists()
