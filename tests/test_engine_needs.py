"""The open engine: needs as plug-ins, routing by needs, multi-batch input, the cycle-free layout."""
from __future__ import annotations

import ast
import gc
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import zcfast
from zcfast.proxies import Need, NeedError, register_need, register_proxy, score, score_detailed, unregister_need
from zcfast.proxies.needs import available_needs
from zcfast.testing import live_tensor_count, tiny_convnet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1] / "zcfast"


def _net() -> nn.Module:
    return tiny_convnet(seed=0, channels=4, num_classes=5)


def _xy(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 4, 4, generator=g), torch.arange(n) % 5


# ------------------------------------------------------------------------------------------
# the cycle-free layout
# ------------------------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _import_graph() -> dict[str, set[str]]:
    """Every import statement of every zcfast module (function-level ones included), as edges to
    zcfast modules; ``from a import b`` counts as ``a.b`` when that is a module. A package's own
    ``__init__`` is not an edge of its submodules (Python runs it first, but it imports them);
    ``if TYPE_CHECKING:`` imports never run and are not edges."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:  # type-only imports never run
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("zcfast") and t != "zcfast":
                    graph[mod].add(t)
    return graph


def test_no_import_cycle_anywhere_in_zcfast() -> None:
    graph = _import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_layers_the_issue_names() -> None:
    graph = _import_graph()
    assert "zcfast.seeding" in graph["zcfast.data"] and not any(t.startswith("zcfast.proxies") for t in graph["zcfast.data"])
    # the proxies package imports neither backend above it nor the scoring layer above both
    assert not any(t.startswith("zcfast.batched") or t == "zcfast.scoring"
                   for m in graph if m == "zcfast.proxies" or m.startswith("zcfast.proxies.") for t in graph[m])
    assert "zcfast.proxies.builtin" not in graph["zcfast.proxies.registry"]
    assert not any(t == "zcfast.scoring" for t in graph["zcfast.batched"])


# ------------------------------------------------------------------------------------------
# needs
# ------------------------------------------------------------------------------------------
def test_builtin_needs_registered() -> None:
    for n in ("grads", "hessian_grad", "fisher", "jacobian", "outputs", "synflow", "parameters",
              "relu_inputs", "relu_outputs", "layer_outputs", "multi_grads", "gaussian_pass",
              "labels", "weights", "relu_kernels", "zen_pass", "flops_counts", "per_sample_grads"):
        assert n in available_needs()
    with pytest.raises(ValueError, match="built-in need"):
        unregister_need("grads")


@pytest.mark.parametrize("need,check", [
    ("relu_inputs", lambda v: len(v) >= 1 and all(isinstance(t, torch.Tensor) and t.shape[0] == 8 for _, t in v)),
    ("relu_outputs", lambda v: all(bool((t >= 0).all()) for _, t in v)),
    ("layer_outputs", lambda v: len(v) >= 2 and all(t.shape[0] == 8 for _, t in v)),
    ("parameters", lambda v: any("bias" in k for k in v)),
    ("multi_grads", lambda v: len(v) == 2 and len(v[0]) >= 2 and len(v[1]) == len(v[0])),
    ("gaussian_pass", lambda v: v["input"].shape == (8, 3, 4, 4) and v["logits"].shape == (8, 5)),
])
def test_each_new_need_fills_its_product_and_frees_it(need: str, check) -> None:
    seen: dict[str, object] = {}
    name = f"test_need_{need}"

    @register_proxy(name, needs=(need,))
    def probe(ctx):
        seen["ok"] = check(ctx.data[need])
        return 1.0

    try:
        net, (x, y) = _net(), _xy()
        before_hooks = sum(len(m._forward_hooks) for m in net.modules())
        assert score(net, x, y, proxies=(name,))[name] == 1.0
        assert seen["ok"]
        gc.collect()
        base = live_tensor_count()
        for _ in range(20):
            score(net, x, y, proxies=(name,))
        gc.collect()
        assert live_tensor_count() <= base
        assert sum(len(m._forward_hooks) for m in net.modules()) == before_hooks
    finally:
        zcfast.unregister_proxy(name)


def test_relu_inputs_are_the_inputs_of_every_relu() -> None:
    """Against a plain forward hook on the ReLUs of the same model (train mode)."""
    net, (x, y) = _net(), _xy()
    ref = []
    hs = [m.register_forward_hook(lambda m, a, o: ref.append(a[0].detach().clone()))
          for m in net.modules() if isinstance(m, nn.ReLU)]
    net.train()
    with torch.no_grad():
        net(x)
    for h in hs:
        h.remove()
    got: list = []

    @register_proxy("test_relu_in", needs=("relu_inputs",))
    def rin(ctx):
        got.extend(t.clone() for _, t in ctx.data["relu_inputs"])
        return 0.0

    try:
        score(net, x, y, proxies=("test_relu_in",))
    finally:
        zcfast.unregister_proxy("test_relu_in")
    assert len(got) == len(ref) and all(torch.equal(a, b) for a, b in zip(got, ref))


def test_multi_batch_input_and_the_two_halves() -> None:
    """batches=[...] reaches a multi-batch need; one batch is split in two halves; single-batch
    proxies use the first batch."""
    net, (x, y) = _net(), _xy(8)
    sizes: list = []

    @register_proxy("test_mb", needs=("multi_grads",))
    def mb(ctx):
        sizes.append(len(ctx.data["multi_grads"]))
        return float(sum(float(g.abs().sum()) for gs in ctx.data["multi_grads"] for g in gs if g is not None))

    try:
        halves = [(x[:4], y[:4]), (x[4:], y[4:])]
        one = score(net, x, y, proxies=("test_mb", "snip"))
        two = score(net, None, None, proxies=("test_mb", "snip"), batches=halves)
        three = score(net, None, None, proxies=("test_mb",), batches=halves + [(x[:2], y[:2])])
        assert sizes == [2, 2, 3]
        assert one["test_mb"] == pytest.approx(two["test_mb"], rel=1e-6)
        assert two["snip"] == pytest.approx(score(net, x[:4], y[:4], proxies=("snip",))["snip"], rel=1e-6)
        assert math.isfinite(three["test_mb"])
        with pytest.raises(ValueError, match="batches"):
            score(net, x, y, proxies=("snip",), batches=halves)
        with pytest.raises(ValueError, match="batches"):
            score(net, None, None, proxies=("snip",), batches=[])
    finally:
        zcfast.unregister_proxy("test_mb")


def test_user_need_and_user_proxy_and_its_failure_is_its_own() -> None:
    def run(ctx):
        ctx.data["test_sq"] = [w.pow(2).sum() for w in ctx.weights]

    def broken(ctx):
        raise NeedError("this need cannot run here")

    register_need(Need("test_sq", run=run, reads_inputs=False))
    register_need(Need("test_broken", run=broken))

    @register_proxy("test_sq_proxy", needs=("test_sq",))
    def sq(ctx):
        return float(sum(ctx.data["test_sq"]))

    @register_proxy("test_broken_proxy", needs=("test_broken",))
    def bp(ctx):
        return 1.0

    try:
        net, (x, y) = _net(), _xy()
        res = score_detailed(net, x, y, proxies=("test_sq_proxy", "test_broken_proxy", "snip"))
        ref = sum(float(m.weight.detach().pow(2).sum()) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        assert res["test_sq_proxy"].value == pytest.approx(ref, rel=1e-6)
        assert math.isnan(res["test_broken_proxy"].value) and "cannot run here" in res["test_broken_proxy"].error
        assert res["snip"].ok
        with pytest.raises(ValueError, match="already registered"):
            register_need(Need("test_sq", run=run))
        with pytest.raises(ValueError, match="requires unknown needs"):
            register_need(Need("test_x", run=run, requires=("nope",)))
        with pytest.raises(ValueError, match="give run=callable"):
            register_need(Need("test_y"))
        with pytest.raises(ValueError, match="needed by registered proxies"):
            unregister_need("test_sq")
    finally:
        zcfast.unregister_proxy("test_sq_proxy")
        zcfast.unregister_proxy("test_broken_proxy")
        unregister_need("test_sq")
        unregister_need("test_broken")


def test_user_proxy_of_supported_needs_takes_the_fast_route() -> None:
    """Routing asks the backends: a user proxy of needs the NB201 backend supports is routed
    there (and equals the module backend within float32 rounding); one of another need is not."""
    from zcfast import scoring
    from zcfast.data import paper_batch
    from zcfast.proxies.registry import resolve

    space = zcfast.spaces.get("nb201")

    @register_proxy("test_fast_gsq", needs=("grads",))
    def gsq(ctx):
        return sum(float((g.double() ** 2).sum()) for g in ctx.grads if g is not None)

    @register_proxy("test_fast_loss", needs=("outputs",))
    def floss(ctx):
        return float(ctx.loss) + float(ctx.logits.double().abs().mean())

    try:
        assert scoring.route(space, resolve(["test_fast_loss"])) is scoring.NB201_BACKEND
        assert scoring.route(space, resolve(["test_fast_gsq", "snip"])) is scoring.NB201_BACKEND
        assert scoring.route(space, resolve(["test_fast_gsq", "relu_inputs" and "snip"])) is scoring.NB201_BACKEND
        assert scoring.route(space, resolve(["plain"])) is scoring.NB201_BACKEND
        x, y = paper_batch("cifar10", batch_size=8, seed=1)
        arch = space.arch_at(77)
        fast = zcfast.score_arch(space, arch, x, y, ("test_fast_gsq", "test_fast_loss"))
        slow = zcfast.score_arch(space, arch, x, y, ("test_fast_gsq", "test_fast_loss"), fast=False)
        assert fast["test_fast_gsq"] == pytest.approx(slow["test_fast_gsq"], rel=1e-4)
        assert fast["test_fast_loss"] == pytest.approx(slow["test_fast_loss"], rel=1e-5)
    finally:
        zcfast.unregister_proxy("test_fast_gsq")
        zcfast.unregister_proxy("test_fast_loss")
    from zcfast.proxies.registry import ProxySpec
    assert scoring.route(space, [ProxySpec("x", lambda c: 0.0, ("relu_inputs",))]) is scoring.MODULE_BACKEND


def test_new_needs_leave_the_callers_model_unchanged() -> None:
    from zcfast.testing import ModelSnapshot

    names = []
    for need in ("relu_inputs", "layer_outputs", "parameters", "multi_grads", "gaussian_pass"):
        name = f"test_unchanged_{need}"

        def fn(ctx, _need=need):
            for v in (ctx.data[_need].values() if isinstance(ctx.data[_need], dict) else ctx.data[_need]):
                for t in (v if isinstance(v, (list, tuple)) else [v]):
                    if isinstance(t, torch.Tensor) and t.is_floating_point():
                        t.mul_(0.0)        # writing a product must not reach the caller
            return 0.0

        register_proxy(name, needs=(need,))(fn)
        names.append(name)
    try:
        net, (x, y) = _net(), _xy()
        snap = ModelSnapshot(net, x, y)
        res = score_detailed(net, x, y, proxies=names)
        assert all(r.ok for r in res.values()), {k: r.error for k, r in res.items()}
        snap.assert_unchanged("score with the new needs")
    finally:
        for n in names:
            zcfast.unregister_proxy(n)


def test_gaussian_pass_reinitialises_a_copy_and_is_seeded() -> None:
    got = []

    @register_proxy("test_gauss", needs=("gaussian_pass",))
    def g(ctx):
        d = ctx.data["gaussian_pass"]
        convs = [m for m in d["model"].modules() if isinstance(m, nn.Conv2d)]
        got.append((d["input"].clone(), float(convs[0].weight.std())))
        return float(d["logits"].double().pow(2).mean())

    try:
        net, (x, y) = _net(), _xy()
        a = score(net, x, y, proxies=("test_gauss",), seed=3)
        b = score(net, x, y, proxies=("test_gauss",), seed=3)
        assert a == b and torch.equal(got[0][0], got[1][0])
        assert abs(float(got[0][0].std()) - 1.0) < 0.2 and got[0][1] > 0.5
    finally:
        zcfast.unregister_proxy("test_gauss")


def test_no_tensor_or_hook_survives_1000_calls_of_every_new_need() -> None:
    """Each plug-in need's clean-up: the live tensor count and the hooks of the caller's model
    are the same after 1,000 calls as after the first (tiny model: seconds)."""
    needs = ("relu_inputs", "relu_outputs", "layer_outputs", "parameters", "multi_grads", "gaussian_pass")
    names = [f"test_k_{n}" for n in needs]
    for n, name in zip(needs, names):
        register_proxy(name, needs=(n,))(lambda ctx: 0.0)
    try:
        net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 5))
        x, y = torch.randn(4, 3, 4, 4), torch.arange(4)
        score(net, x, y, proxies=names)
        gc.collect()
        base = live_tensor_count()
        for _ in range(1000):
            score(net, x, y, proxies=names)
        gc.collect()
        assert live_tensor_count() <= base
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    finally:
        for name in names:
            zcfast.unregister_proxy(name)


def test_score_arch_and_score_batch_take_batches() -> None:
    from zcfast.batched import score_batch
    from zcfast.data import paper_batch

    space = zcfast.spaces.get("nb201")
    x, y = paper_batch("cifar10", batch_size=12, seed=1)
    arch = space.arch_at(5)
    three = [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]

    @register_proxy("test_nb", needs=("multi_grads",))
    def nb(ctx):
        return float(len(ctx.data["multi_grads"]))

    try:
        r = zcfast.score_arch(space, arch, None, None, ("test_nb", "snip"), batches=three)
        assert r["test_nb"] == 3.0
        assert r["snip"] == pytest.approx(zcfast.score_arch(space, arch, x[:4], y[:4], ("snip",))["snip"], rel=1e-5)
        assert zcfast.score_arch(space, arch, x, y, ("test_nb",))["test_nb"] == 2.0   # two halves
        rows = score_batch(space, [arch, space.arch_at(6)], None, None, ["snip", "test_nb"], batches=three)
        assert [row["test_nb"] for row in rows] == [3.0, 3.0]
        assert rows[0]["snip"] == pytest.approx(r["snip"], rel=1e-5)
    finally:
        zcfast.unregister_proxy("test_nb")


def test_context_model_copies_and_mini_batches() -> None:
    """ctx.model is one private copy per call, ctx.fresh_copy() a new one each time; writing them
    never reaches the caller; mini_batches refuses more parts than samples."""
    seen = {}

    def run(ctx):
        a, b = ctx.model, ctx.model
        c = ctx.fresh_copy()
        seen["same"] = a is b and c is not a
        seen["train"] = a.training and not any(p.requires_grad for p in a.parameters())
        for p in list(a.parameters()) + list(c.parameters()):
            p.data.zero_()
        ctx.data["test_ctx"] = 1.0
        with pytest.raises(ValueError, match="cannot be split into 9 mini-batches"):
            ctx.mini_batches(9)

    register_need(Need("test_ctx", run=run))
    register_proxy("test_ctx_proxy", needs=("test_ctx",))(lambda ctx: ctx.data["test_ctx"])
    try:
        from zcfast.testing import ModelSnapshot

        net, (x, y) = _net(), _xy()
        net.eval()
        snap = ModelSnapshot(net, x, y)
        assert score(net, x, y, proxies=("test_ctx_proxy",))["test_ctx_proxy"] == 1.0
        snap.assert_unchanged("a need writing its copies")
        assert seen == {"same": True, "train": True}
    finally:
        zcfast.unregister_proxy("test_ctx_proxy")
        unregister_need("test_ctx")


# ------------------------------------------------------------------------------------------
# NAS-Bench-Suite-Zero's needs (zcfast/proxies/suite_zero.py)
# ------------------------------------------------------------------------------------------
SUITE_ZERO_NEEDS = [
    ("labels", lambda v, x, y: torch.equal(v, y)),
    ("weights", lambda v, x, y: [n for n, _ in v] == ["0", "3", "8"] and v[0][1].shape == (4, 3, 3, 3)),
    ("relu_kernels", lambda v, x, y: [n for n, _ in v] == ["2", "5"]
     and all(k.dtype == torch.float64 and k.shape == (8, 8) for _, k in v)
     and float(v[0][1][0, 0]) == 4 * 16 and float(v[1][1][0, 0]) == 4 * 16),
    ("zen_pass", lambda v, x, y: v["features"][0].shape == (8, 4, 4, 4) and len(v["running_vars"]) == 2),
    ("flops_counts", lambda v, x, y: [n for n, _ in v] == ["0", "3", "8"]
     and v[0][1] == 3 * 3 * 3 * 4 * 16 and v[2][1] == 4 * 5 + 5),
    ("per_sample_grads", lambda v, x, y: len(v) == 3 and v[0].shape == (8, 4, 3, 3, 3)),
]


@pytest.mark.parametrize("need,check", SUITE_ZERO_NEEDS, ids=[n for n, _ in SUITE_ZERO_NEEDS])
def test_suite_zero_needs_fill_their_product_and_release_leaves_nothing(need: str, check) -> None:
    """Each need's product as its contract says (suite_zero's docstring), its release() drops
    it from the context, and nothing survives 20 calls (tensors, hooks)."""
    from zcfast.proxies.needs import get_need

    seen: dict[str, object] = {}
    name = f"test_sz_need_{need}"

    @register_proxy(name, needs=(need,))
    def probe(ctx):
        seen["ok"] = check(ctx.data[need], ctx.batches[0][0], ctx.batches[0][1])
        get_need(need).release(ctx)
        seen["released"] = need not in ctx.data
        return 1.0

    try:
        net, (x, y) = _net(), _xy()
        r = score_detailed(net, x, y, proxies=(name,), layer_types=(nn.Conv2d, nn.Linear))[name]
        assert r.ok, r.error
        assert seen == {"ok": True, "released": True}
        gc.collect()
        base = live_tensor_count()
        for _ in range(20):
            score(net, x, y, proxies=(name,))
        gc.collect()
        assert live_tensor_count() <= base
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    finally:
        zcfast.unregister_proxy(name)
