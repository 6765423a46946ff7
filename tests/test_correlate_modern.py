"""The front door for the proxies after the paper: proxy-set keywords, published anchors,
several mini-batches in correlate and search (``--batches``), and ``zcfast info --proxies``."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

import zcfast
import zcfast.correlate as corr
from zcfast import data, ensemble, options, scoring, spaces
from zcfast.cli import main as cli_main
from zcfast.proxies.registry import PAPER_PROXIES, available_proxies, resolve
from zcfast.proxies.suite_zero import SUITE_ZERO
from zcfast.search import ComputedProxy, make_proxy
from zcfast.store import BatchKey, ResultStore, RunConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SP = spaces.get("nb201")


class BatchScorer:
    """A deterministic scorer that takes ``batches``: the value of proxy k is k + 1 plus the
    number of batches it was given / 10 (so the test sees which call it got), recording calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool]] = []   # (arch text, batches given, inputs given)

    def __call__(self, space, arch, x, y, proxies, seed, num_classes, device, batches=None):
        n = 1 if batches is None else len(batches)
        self.calls.append((space.encode(arch), n, x is not None))
        acc = space.ground_truth(arch, "cifar10")
        return {p: acc + (k + 1) + n / 10 for k, p in enumerate(proxies)}


def _plain_scorer(space, arch, x, y, proxies, seed, num_classes, device):
    return {p: 1.0 for p in proxies}


# ------------------------------------------------------------------ proxy-set keywords
def test_proxy_sets_select_what_they_say():
    builtin = [s.name for s in resolve(available_proxies()) if s.builtin]
    assert options.resolve_proxies("paper") == PAPER_PROXIES
    everything = options.resolve_proxies("all")
    assert everything[:6] == PAPER_PROXIES and set(everything) == set(builtin)
    assert everything[6:9] == ("plain", "nwot", "epe_nas")       # registry order after the six
    assert options.resolve_proxies("suite-zero") == SUITE_ZERO and len(SUITE_ZERO) == 13
    assert options.resolve_proxies(" Suite-Zero ") == SUITE_ZERO  # case and spaces do not matter
    assert options.resolve_proxies("every") == everything        # no user proxy registered


def test_every_adds_user_proxies_and_all_does_not():
    @zcfast.register_proxy("front_door_user", needs=())
    def _user(ctx):
        return 1.0

    try:
        assert "front_door_user" not in options.resolve_proxies("all")
        assert options.resolve_proxies("every")[-1] == "front_door_user"
        assert options.proxy_set("every")[:-1] == options.proxy_set("all")
    finally:
        zcfast.unregister_proxy("front_door_user")


@pytest.mark.parametrize("spec, match", [
    ("all,synflow", r"'all' is a proxy-set keyword: give it alone"),
    ("synflw", r"did you mean 'synflow'.*or a proxy set: paper, all, suite-zero, every"),
    ("", r"give a proxy set \(paper, all, suite-zero, every; 'paper' = grad_norm"),
    (3, r"proxies must be one of 'paper', 'all', 'suite-zero', 'every'"),
])
def test_bad_proxy_specs_name_the_sets(spec, match):
    with pytest.raises(ValueError, match=match):
        options.resolve_proxies(spec)
    with pytest.raises(ValueError, match="unknown proxy set 'most'; choose from paper, all, suite-zero, every"):
        options.proxy_set("most")


def test_cli_help_names_every_proxy_set():
    from zcfast.commands import PROXIES_HELP

    for key in options.PROXY_SETS:
        assert f"'{key}'" in PROXIES_HELP


def test_default_is_the_papers_six_with_unchanged_run_ids(tmp_path):
    r = corr.correlate("nb201", "cifar10", n=3, seed=0, store=tmp_path / "s.sqlite", score_fn=_plain_scorer,
                       time_sample=0, progress=False)
    assert tuple(r.scores) == PAPER_PROXIES and r.summary["n_batches"] == 1
    x, y = data.paper_batch("cifar10", 64, 42)
    key = BatchKey(data.batch_fingerprint(x, y), "shipped:cifar10", 64, 42, True, "cifar10")
    for p in PAPER_PROXIES:
        cfg = RunConfig(kind="proxy", space="nb201", proxies=(p,), num_classes=10, batch=key, init_seed=42,
                        device="cpu")
        assert r.summary["run_ids"][p] == cfg.run_id()
    assert r.summary["run_ids"]["synflow"] == "6b0eee437f4c320b"  # pinned (tests/test_front_door.py)


# ------------------------------------------------------------------ anchors
def test_anchors_sit_beside_the_paper_column_with_their_source():
    import numpy as np

    acc = np.arange(20, dtype=np.float64)
    scores = {p: acc + np.random.default_rng(1).normal(0, 3, 20) for p in ("jacob_cov", "nwot", "zico", "synflow")}
    s = corr.summarize(scores, acc, dataset="cifar10")
    jc, nw, zi, sf = (s["proxies"][p] for p in ("jacob_cov", "nwot", "zico", "synflow"))
    assert jc["paper_abs_spearman"] == 0.731 and jc["anchor"] == 0.818 and jc["anchor_source"] == "suite-zero"
    assert nw["paper_abs_spearman"] is None and nw["anchor"] == 0.792
    assert nw["delta_vs_anchor"] == pytest.approx(nw["abs_spearman"] - 0.792)
    assert zi["anchor"] == 0.802 and zi["anchor_source"] == "vkdnw"
    assert sf["anchor"] is None and sf["anchor_source"] is None and sf["paper_abs_spearman"] == 0.737
    assert s["anchor_sources"] == {"suite-zero": corr.ANCHOR_SOURCES["suite-zero"],
                                   "vkdnw": corr.ANCHOR_SOURCES["vkdnw"]}
    assert "9,445 unique cells, validation accuracy, batch 32" in s["anchor_sources"]["suite-zero"]
    table = corr.format_table({**s, "space": "nb201", "dataset": "cifar10", "n": 20})
    head = table.splitlines()[1]
    assert "paper" in head and "anchor" in head and "source" in head
    assert "source suite-zero: NAS-Bench-Suite-Zero" in table and "source vkdnw: VKDNW" in table
    # another space: no NB201 anchor; ImageNet16-120: NASLib's epe_nas branch only
    assert corr.summarize(scores, acc, dataset="cifar10", space="nb101")["proxies"]["nwot"]["anchor"] is None
    im = corr.summarize({"epe_nas": acc, "epe_nas_naslib": acc}, acc, dataset="ImageNet16-120")["proxies"]
    assert im["epe_nas"]["anchor"] is None and im["epe_nas_naslib"]["anchor"] == 0.319


def test_every_anchor_names_a_registered_proxy_and_a_source():
    for (space, ds), table in corr.PUBLISHED_ANCHORS.items():
        assert space == "nb201" and ds in data.DATASETS
        for p, (value, source) in table.items():
            named = p in available_proxies() or ensemble.is_ensemble(p)   # te_nas, az_nas: ensembles
            assert named and source in corr.ANCHOR_SOURCES and 0 < value < 1


# ------------------------------------------------------------------ several mini-batches
def test_batches_reach_the_scorer_and_key_the_run(tmp_path):
    f = BatchScorer()
    r = corr.correlate("nb201", "cifar10", "zico,synflow", 4, 0, store=tmp_path / "s.sqlite", score_fn=f,
                       time_sample=0, progress=False, n_batches=2)
    assert {(n, given) for _, n, given in f.calls} == {(2, False)}     # batches= instead of x, y
    want = data.batches_fingerprint(data.paper_batches("cifar10", 64, 42, 2))
    assert r.summary["batch"]["fingerprint"] == want and r.summary["n_batches"] == 2
    one = corr.correlate("nb201", "cifar10", "zico,synflow", 4, 0, store=tmp_path / "s.sqlite", score_fn=f,
                         time_sample=0, progress=False)
    assert f.calls[-1][1:] == (1, True)                                 # one batch: as before
    assert set(one.summary["run_ids"].values()).isdisjoint(r.summary["run_ids"].values())
    assert "2 mini-batches" in corr.format_table(r.summary) and "mini-batches" not in corr.format_table(one.summary)


def test_batches_per_architecture(tmp_path):
    f = BatchScorer()
    r = corr.correlate("nb201", "cifar10", "zico", 2, 0, store=tmp_path / "s.sqlite", score_fn=f,
                       time_sample=0, progress=False, n_batches=2, batch_per_arch=True)
    assert r.summary["batch"]["per_arch"] == data.per_arch_scheme(2) != data.PER_ARCH_SCHEME
    src = data.PaperBatches("cifar10", 64, 42, n_batches=2)
    first, second = src.for_arch_batches(SP.key(SP.decode(r.archs[0])))
    assert torch.equal(first[0], src.for_arch(SP.key(SP.decode(r.archs[0])))[0])
    assert not torch.equal(first[0], src.fixed()[0]) and first[0].shape == second[0].shape


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_batches=0), r"n_batches \(--batches\) must be an integer >= 1, got 0"),
    (dict(n_batches=4), r"n_batches x batch_size = 4 x 64 = 256 distinct images, but 'cifar10' holds 200: use fewer batches \(--batches\)"),
    (dict(n_batches=2, score_fn=_plain_scorer), r"--batches\) = 2: the score_fn has no batches parameter"),
])
def test_bad_batches_are_refused_before_the_store(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        corr.correlate("nb201", "cifar10", "zico", 2, 0, store=tmp_path / "s.sqlite", time_sample=0,
                       progress=False, **kwargs)
    assert not (tmp_path / "s.sqlite").exists()


def test_zico_with_two_batches_stores_score_arch_on_paper_batches(tmp_path, capsys):
    out = tmp_path / "o"
    code = cli_main(["correlate", "--proxies", "zico,synflow", "--batches", "2", "--n", "2", "--out", str(out),
                     "--time-sample", "0", "--no-plots", "--quiet"])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(out / "scores.csv")))
    batches = data.paper_batches("cifar10", 64, 42, 2)
    x, y = data.paper_batch("cifar10", 64, 42)
    for row in rows:
        arch = SP.decode(row["arch_str"])
        want = zcfast.score_arch(SP, arch, None, None, ["zico", "synflow"], seed=42, num_classes=10,
                                 batches=batches)
        assert float(row["zico"]) == pytest.approx(want["zico"], rel=1e-6)
        assert float(row["synflow"]) == pytest.approx(want["synflow"], rel=1e-6)
        # a single-batch proxy reads the first batch: the one-batch value
        assert want["synflow"] == pytest.approx(zcfast.score_arch(SP, arch, x, y, ["synflow"])["synflow"], rel=1e-6)
        # and zico read both: not its split-batch value
        assert want["zico"] != pytest.approx(zcfast.score_arch(SP, arch, x, y, ["zico"])["zico"], rel=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_batches"] == 2 and summary["proxies"]["zico"]["anchor"] == 0.802
    # search computes the same run: every score comes from correlate's rows
    with ResultStore(out / "results.sqlite") as st:
        proxy = ComputedProxy(SP, "zico", store=st, n_batches=2)
        got = proxy.scores([SP.decode(row["arch_str"]) for row in rows])
    assert proxy.computed == 0 and list(got) == pytest.approx([float(row["zico"]) for row in rows])


def test_search_proxy_batches_key(tmp_path):
    one = ComputedProxy(SP, "synflow")
    assert make_proxy("synflow", SP, n_batches=1).run_config() == one.run_config()
    two = make_proxy("zico", SP, n_batches=2)
    assert two.run_config().batch.fingerprint == data.batches_fingerprint(data.paper_batches("cifar10", 64, 42, 2))
    assert len(two.batches()) == 2 and torch.equal(two.inputs()[0], one.inputs()[0])
    with pytest.raises(ValueError, match=r"4 x 64 = 256 distinct images"):
        make_proxy("zico", SP, n_batches=4)
    with pytest.raises(ValueError, match=r"n_batches \(--batches\) must be an integer >= 1, got 0"):
        zcfast.search.search("toy", "random", 2, n_batches=0)


@pytest.mark.parametrize("argv, match", [
    (["correlate", "--batches", "0", "--out", "{tmp}"], "argument --batches: must be an integer >= 1, got '0'"),
    (["correlate", "--proxies", "zico", "--batches", "4", "--out", "{tmp}"],
     "4 x 64 = 256 distinct images, but 'cifar10' holds 200: use fewer batches (--batches)"),
    (["search", "--algo", "random", "--budget", "2", "--warmup", "zico", "--batches", "4"],
     "4 x 64 = 256 distinct images, but 'cifar10' holds 200: use fewer batches (--batches)"),
    (["correlate", "--proxies", "all,zico", "--out", "{tmp}"], "'all' is a proxy-set keyword"),
])
def test_cli_refuses_bad_batches_in_one_line(tmp_path, capsys, argv, match):
    argv = [a.replace("{tmp}", str(tmp_path / "o")) for a in argv]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]
    assert not (tmp_path / "o" / "results.sqlite").exists()


# ------------------------------------------------------------------ zcfast info --proxies
def test_info_lists_every_proxy_with_its_route(capsys):
    from zcfast.commands import info
    from zcfast.proxies.needs import Need, register_need, unregister_need

    register_need(Need("front_door_need", run=lambda ctx: ctx.data.__setitem__("front_door_need", 1.0)))
    zcfast.register_proxy("front_door_user", needs=("front_door_need",))(lambda ctx: ctx.data["front_door_need"])
    try:
        rows = {r["name"]: r for r in info.proxies()}
        assert list(rows) == available_proxies()
        for spec in resolve(available_proxies()):
            assert rows[spec.name]["nb201_backend"] == scoring.route(SP, [spec]).name
            assert rows[spec.name]["needs"] == list(spec.needs)
        assert rows["front_door_user"]["nb201_backend"] == "module" and not rows["front_door_user"]["builtin"]
        assert rows["zico"]["batches"] > 1 and rows["synflow"]["batches"] == 1
        assert rows["synflow"]["sets"] == ["paper", "all", "suite-zero", "every"]
        assert rows["front_door_user"]["sets"] == ["every"]
        assert cli_main(["info", "--proxies"]) == 0
        text = capsys.readouterr().out
        assert "front_door_user (user)" in text and "relu_kernels" in text
        assert cli_main(["info", "--proxies", "--json"]) == 0
        assert [r["name"] for r in json.loads(capsys.readouterr().out)["proxies"]] == available_proxies()
    finally:
        zcfast.unregister_proxy("front_door_user")
        unregister_need("front_door_need")


def _multi_batch_score_fn(space, arch, x, y, proxies, seed, num_classes, device, batches=None):
    """Picklable (for spawned workers): each value reads every batch's first pixel, so the test
    sees which batches reached the scorer."""
    batches = [(x, y)] if batches is None else batches
    v = sum(float(bx[0, 0, 0, 0]) * 10 ** k for k, (bx, _) in enumerate(batches))
    return {p: v + i for i, p in enumerate(proxies)}


@pytest.mark.parametrize("per_arch", [False, True])
def test_worker_processes_get_the_same_batches(tmp_path, per_arch):
    kw = dict(time_sample=0, progress=False, score_fn=_multi_batch_score_fn, n_batches=2, batch_per_arch=per_arch)
    inline = corr.correlate("nb201", "cifar10", "zico", 4, 0, store=tmp_path / "a.sqlite", **kw)
    work = corr.correlate("nb201", "cifar10", "zico", 4, 0, store=tmp_path / "b.sqlite", workers=1, **kw)
    assert list(work.scores["zico"]) == list(inline.scores["zico"])
    assert work.summary["run_ids"] == inline.summary["run_ids"]
    src = data.PaperBatches("cifar10", 64, 42, n_batches=2)
    for s, v in zip(inline.archs, inline.scores["zico"]):
        batches = src.for_arch_batches(SP.key(SP.decode(s))) if per_arch else src.fixed_batches()
        assert v == _multi_batch_score_fn(SP, None, None, None, ["zico"], 42, 10, "cpu", batches)["zico"]
