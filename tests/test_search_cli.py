"""``zcfast search`` command line (issue #6, item 4)."""
from __future__ import annotations

import json

import pytest

from zcfast.cli import main
from zcfast.search.toy import ToySpace


def _toy_trainer(arch: tuple[int, ...]) -> float:
    """A user trainer for the CLI: fails on one architecture, NaN on another."""
    if arch == (0, 0, 0, 0):
        raise RuntimeError("diverged")
    if arch == (1, 1, 1, 1):
        return float("nan")
    return ToySpace().ground_truth(arch)


@pytest.fixture()
def toy_table(tmp_path):
    path = tmp_path / "toy_synflow.csv"
    table = ToySpace().proxy_table(noise=2.0)
    path.write_text("arch_str,synflow\n" + "".join(f"{k},{v!r}\n" for k, v in table.items()))
    return str(path)


def test_cli_evolution_warmup_move_logs_and_summary(tmp_path, toy_table, capsys) -> None:
    out = tmp_path / "run"
    argv = ["search", "--space", "toy", "--algo", "evolution", "--warmup", toy_table,
            "--warmup-pool", "100", "--move", toy_table, "--budget", "30", "--seeds", "2",
            "--option", "population=8", "--option", "tournament=3", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "evolution on toy/cifar10" in text and "best accuracy: mean" in text
    logs = [json.loads((out / f"seed_{s}.json").read_text()) for s in (0, 1)]
    summary = json.loads((out / "summary.json").read_text())
    for log, best in zip(logs, summary["best_accuracy"]):
        recs = log["records"]
        assert [r["step"] for r in recs] == list(range(1, len(recs) + 1))
        assert recs[0]["source"] == "warmup" and recs[0]["proxy_score"] is not None
        assert log["best_accuracy"] == best == max(r["accuracy"] for r in recs)
        assert log["config"]["population"] == 8
    # deterministic: the same command again gives identical logs (apart from timings)
    out2 = tmp_path / "run2"
    assert main([*argv[:-3], "--out", str(out2), "--no-progress"]) == 0
    again = json.loads((out2 / "seed_1.json").read_text())
    strip = lambda log: [(r["arch_str"], r["accuracy"]) for r in log["records"]]  # noqa: E731
    assert strip(again) == strip(logs[1])


@pytest.mark.parametrize("algo", ["random", "rl", "brp"])
def test_cli_each_family_runs(tmp_path, algo, capsys) -> None:
    opts = ["--option", "hidden=16", "--option", "train_steps=10"] if algo == "brp" else []
    assert main(["search", "--space", "toy", "--algo", algo, "--budget", "12", "--out",
                 str(tmp_path), *opts]) == 0
    assert "best accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "seed_0.json").read_text())["trained"] == 12


def test_cli_user_trainer_errors_recorded(tmp_path, capsys) -> None:
    assert main(["search", "--space", "toy", "--algo", "random", "--budget", "256",
                 "--trainer", f"{__name__}:_toy_trainer", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert "failed trainings recorded: 2" in capsys.readouterr().out
    log = json.loads((tmp_path / "seed_0.json").read_text())
    errs = {r["arch_str"]: r["error"] for r in log["records"] if r["error"]}
    assert errs == {"toy:0-0-0-0": "RuntimeError: diverged",
                    "toy:1-1-1-1": "trainer returned a non-finite accuracy (nan)"}


@pytest.mark.parametrize("argv,message", [
    (["--algo", "annealing", "--budget", "5"], "unknown search algorithm 'annealing'"),
    (["--algo", "ae", "--budget", "5", "--space", "nb999"], "unknown search space 'nb999'"),
    (["--algo", "ae", "--budget", "5", "--space", "toy", "--warmup", "synfloww"],
     "unknown proxy 'synfloww'"),
    (["--algo", "ae", "--budget", "10", "--space", "toy", "--warmup", "synflow"],
     "budget 10 is smaller than the population of 64"),
    (["--algo", "rl", "--budget", "10", "--space", "toy", "--move", "synflow"],
     "--move applies to evolution only"),
    (["--algo", "random", "--budget", "0", "--space", "toy"], "argument --budget: must be an integer >= 1"),
    (["--algo", "random", "--budget", "5", "--space", "toy", "--trainer", "nomodule_xyz:f"],
     "cannot import trainer module"),
    (["--algo", "random", "--budget", "5", "--space", "toy", "--option", "oops"],
     "--option expects KEY=VALUE"),
])
def test_cli_bad_input(argv, message, capsys, tmp_path) -> None:
    assert main(["search", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_computed_proxy_cached_in_store(tmp_path, capsys) -> None:
    """--warmup with a registered proxy: computed by zcfast, cached in OUT/results.sqlite."""
    from zcfast.store import ResultStore
    argv = ["search", "--space", "toy", "--algo", "random", "--warmup", "synflow",
            "--warmup-pool", "6", "--budget", "3", "--dataset", "cifar100",
            "--proxy-batch-size", "8", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    log = json.loads((tmp_path / "seed_0.json").read_text())
    scores = [r["proxy_score"] for r in log["records"]]
    assert all(s is not None for s in scores) and scores == sorted(scores, reverse=True)
    with ResultStore(tmp_path / "results.sqlite", create=False) as st:
        (run, cfg), = st.runs().items()
        assert cfg["proxy"] == "synflow" and cfg["num_classes"] == 100 and st.count(run) == 6
