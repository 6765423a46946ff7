"""Table-driven bad input for the Python API and the ops (issue #11, classes 3, 9, 10, 11, 12).

``BAD`` lists calls that must raise: each case checks the exception type AND that the message
names the problem. ``test_undefined_values_*`` check the value cases: an undefined or
overflowed value is NaN with its reason, the same text on every route (general engine,
batched NB201, ops), and one proxy's failure never takes the others down.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn as nn

import zcfast
from zcfast import ops
from zcfast.batched import score_batch
from zcfast.proxies import PAPER_LAYER_TYPES, register_proxy, score, score_detailed, unregister_proxy
from zcfast.proxies.builtin_needs import activation_need, gaussian_need, is_relu
from zcfast.testing import tiny_convnet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NB201 = zcfast.spaces.get("nb201")
ARCH = ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none", "nor_conv_3x3")
SIX = zcfast.proxies.PAPER_PROXIES
GRAD_PROXIES = ("grad_norm", "snip", "grasp", "fisher")


def _net() -> nn.Module:
    return tiny_convnet(seed=0, channels=4, num_classes=5)


def _x(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(0))


def _y(n: int = 6) -> torch.Tensor:
    return torch.arange(n) % 5


class _ReturnsTuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(48, 5)

    def forward(self, x):
        return self.fc(x.flatten(1)), None


class _WrongRows(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(48, 5)

    def forward(self, x):
        return self.fc(x.flatten(1))[:2]


def _meta_net() -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(nn.Flatten(), nn.Linear(48, 5))


def _register(name, needs=("grads",)):
    return lambda: register_proxy(name, needs=needs)(lambda ctx: 0.0)


# (id, call, exception type, regex the message must match)
BAD = [
    # proxies
    ("proxies_none", lambda: score(_net(), _x(), _y(), proxies=None), ValueError, "proxies must be a proxy name"),
    ("proxies_typo", lambda: score(_net(), _x(), _y(), proxies=("synflo",)), ValueError, "did you mean 'synflow'"),
    ("proxies_vote", lambda: score(_net(), _x(), _y(), proxies="vote"), ValueError, "not a per-network proxy"),
    ("proxies_twice", lambda: score(_net(), _x(), _y(), proxies=("snip", "snip")), ValueError, "requested twice"),
    ("proxies_empty", lambda: score(_net(), _x(), _y(), proxies=()), ValueError, "no proxies requested"),
    ("proxies_not_strings", lambda: score(_net(), _x(), _y(), proxies=[1]), ValueError, "must be strings"),
    # model
    ("model_not_module", lambda: score(lambda x: x, _x(), _y()), TypeError, "model must be an nn.Module"),
    ("model_no_weights", lambda: score(nn.Sequential(nn.Flatten()), _x(), _y()), ValueError, "no weights to score"),
    ("model_lazy", lambda: score(nn.Sequential(nn.Flatten(), nn.LazyLinear(5)), _x(), _y()), ValueError,
     r"uninitialised \(a lazy module\): run one forward pass"),
    ("model_meta", lambda: score(_meta_net(), _x(), _y()), ValueError, "meta tensor"),
    ("model_returns_tuple", lambda: score(_ReturnsTuple(), _x(), _y(), proxies=("snip",)), ValueError,
     "must return a logits tensor"),
    ("model_wrong_rows", lambda: score(_WrongRows(), _x(), _y(), proxies=("snip",)), ValueError, r"logits \[N, C\]"),
    ("model_forward_fails", lambda: score(_net(), torch.randn(6, 5, 4, 4), _y(), proxies=("snip",)), ValueError,
     "forward failed on inputs of shape"),
    # layer_types
    ("layer_types_string", lambda: score(_net(), _x(), _y(), layer_types="Conv2d"), ValueError,
     "layer_types must be None"),
    ("layer_types_empty", lambda: score(_net(), _x(), _y(), layer_types=()), ValueError, "layer_types must be None"),
    ("layer_types_not_modules", lambda: score(_net(), _x(), _y(), layer_types=(int,)), ValueError,
     "layer_types must be None"),
    ("layer_types_matches_nothing", lambda: score(_net(), _x(), _y(), layer_types=nn.Conv3d), ValueError,
     r"no weights to score.*Conv3d"),
    # inputs / targets
    ("inputs_list", lambda: score(_net(), [[1.0]], _y()), TypeError, "inputs must be a torch.Tensor"),
    ("inputs_meta", lambda: score(_net(), torch.empty(6, 3, 4, 4, device="meta"), _y()), ValueError, "meta tensor"),
    ("inputs_nan", lambda: score(_net(), _x().masked_fill(_x() > 1, float("nan")), _y()), ValueError, "NaN or inf"),
    ("inputs_complex", lambda: score(_net(), _x().to(torch.complex64), _y()), ValueError, "floating-point"),
    ("inputs_0dim", lambda: score(_net(), torch.tensor(1.0), _y()), ValueError, r"batch \[N, \.\.\.\]"),
    ("inputs_int_float_model", lambda: score(_net(), torch.ones(6, 3, 4, 4, dtype=torch.long), _y(),
                                             proxies=("snip",)), ValueError, "integer inputs are for models"),
    ("targets_0dim", lambda: score(_net(), _x(), torch.tensor(3)), ValueError, "0-dim tensor"),
    ("targets_rows", lambda: score(_net(), _x(), _y(4)), ValueError, "targets has 4 rows but inputs has 6"),
    ("targets_range", lambda: score(_net(), _x(), _y() + 5), ValueError, "targets out of range"),
    ("targets_2d", lambda: score(_net(), _x(), _y().view(6, 1)), ValueError, r"1-D \[N\]"),
    ("targets_none_needed", lambda: score(_net(), _x(), None, proxies=("snip",)), TypeError,
     "targets must be a torch.Tensor"),
    ("loss_not_scalar", lambda: score(_net(), _x(), _y(), proxies=("snip",),
                                      loss_fn=lambda o, t: o.sum(1)), ValueError, "scalar tensor"),
    ("loss_fn_fails", lambda: score(_net(), _x(), _y(), proxies=("snip",),
                                    loss_fn=lambda o, t: o @ t), ValueError, "loss_fn failed"),
    # registry
    ("register_vote", _register("vote"), ValueError, "reserved"),
    ("register_all", _register("all"), ValueError, "reserved"),
    ("register_every", _register("every"), ValueError, "reserved"),
    ("register_paper", _register("paper"), ValueError, "reserved"),
    ("register_suite_zero", _register("suite-zero"), ValueError, "reserved"),
    ("register_empty_name", _register(""), ValueError, "non-empty string"),
    ("register_comma", _register("a,b"), ValueError, "commas"),
    ("register_builtin_name", _register("snip"), ValueError, "already registered"),
    ("register_needs_int", _register("test_bad_needs", needs=5), ValueError, "needs must be a sequence"),
    ("register_needs_not_strings", _register("test_bad_needs", needs=[1]), ValueError, "needs must be strings"),
    ("register_needs_unknown", _register("test_bad_needs", needs=("grad",)), ValueError, "unknown needs"),
    ("register_needs_none", _register("test_bad_needs", needs=None), ValueError, "needs must be a sequence"),
    ("unregister_builtin", lambda: unregister_proxy("snip"), ValueError, "cannot be unregistered"),
    ("unregister_unknown", lambda: unregister_proxy("test_never_registered"), ValueError, "no proxy named"),
    # needs and several mini-batches
    ("register_need_not_need", lambda: zcfast.register_need("grads"), ValueError, "must be a zcfast.proxies.Need"),
    ("register_need_duplicate", lambda: zcfast.register_need(zcfast.Need("grads", run=print)), ValueError,
     "already registered"),
    ("register_need_no_run", lambda: zcfast.register_need(zcfast.Need("test_bad_need")), ValueError,
     "give run=callable"),
    ("register_need_batches", lambda: zcfast.register_need(zcfast.Need("test_bad_need", run=print, batches=0)),
     ValueError, "batches must be an int >= 1"),
    ("register_need_requires", lambda: zcfast.register_need(zcfast.Need("test_bad_need", run=print,
                                                                        requires=("nope",))),
     ValueError, "requires unknown needs"),
    ("unregister_need_builtin", lambda: zcfast.unregister_need("grads"), ValueError, "built-in need"),
    ("unregister_need_unknown", lambda: zcfast.unregister_need("test_never_registered"), ValueError,
     "no need named"),
    ("batches_and_inputs", lambda: score(_net(), _x(), _y(), batches=[(_x(), _y())]), ValueError,
     "either inputs/targets or batches"),
    ("batches_empty", lambda: score(_net(), None, None, batches=[]), ValueError, "non-empty list"),
    ("batches_not_pairs", lambda: score(_net(), None, None, batches=[_x()]), ValueError, r"\(inputs, targets\) pairs"),
    ("batches_tensor", lambda: score(_net(), None, None, batches=_x()), ValueError, r"\(inputs, targets\) pairs"),
    ("batches_bad_second", lambda: score(_net(), None, None, batches=[(_x(), _y()), (_x(), _y(4))]), ValueError,
     "targets has 4 rows"),
    # score_arch / batched
    ("score_arch_variant", lambda: zcfast.score_arch(NB201, ARCH, _x(), _y(), variant="fast"), ValueError,
     "unknown network variant"),
    ("score_arch_layer_types", lambda: zcfast.score_arch(NB201, ARCH, _x(), _y(), layer_types="conv"), ValueError,
     "layer_types must be None"),
    ("score_arch_targets_0dim", lambda: zcfast.score_arch(NB201, ARCH, _x(), torch.tensor(1)), ValueError, "0-dim"),
    ("score_batch_unknown_proxy", lambda: score_batch(NB201, [ARCH], _x(), _y(), ["snip", "nope"]), ValueError,
     "unknown proxies"),
    ("score_batch_k", lambda: score_batch(NB201, [ARCH], _x(), _y(), ["snip"], k=0), ValueError, "k must be"),
    # ops
    ("jacob_cov_k_negative", lambda: ops.jacob_cov(torch.randn(1, 3, 5), -1.0), ValueError, "k must be a finite"),
    ("jacob_cov_k_nan", lambda: ops.jacob_cov(torch.randn(1, 3, 5), float("nan")), ValueError, "k must be a finite"),
    ("jacob_cov_k_inf", lambda: ops.jacob_cov(torch.randn(1, 3, 5), float("inf")), ValueError, "k must be a finite"),
    ("jacob_cov_k_zero", lambda: ops.jacob_cov(torch.randn(1, 3, 5), 0.0), ValueError, "k must be a finite"),
    ("jacob_cov_k_string", lambda: ops.jacob_cov(torch.randn(1, 3, 5), "1e-5"), ValueError, "k must be a finite"),
    ("jacob_cov_k_cpp_schema", lambda: torch.ops.zcfast.jacob_cov_score(torch.randn(1, 3, 5), -1.0), ValueError,
     "k must be a finite number > 0"),
    ("jacob_cov_k_fake_kernel", lambda: ops.jacob_cov(torch.empty(1, 3, 5, device="meta"), -1.0), ValueError,
     "k must be a finite"),
    ("jacob_cov_2d", lambda: ops.jacob_cov(torch.randn(3, 5)), ValueError, r"\[M, N, D\]"),
    ("jacob_cov_int", lambda: ops.jacob_cov(torch.ones(1, 3, 5, dtype=torch.long)), ValueError, "must be float32"),
    ("saliency_none_entry", lambda: ops.saliency([torch.ones(2)], [None], "prod"), ValueError, r"grads\[0\] is None"),
    ("saliency_kind", lambda: ops.saliency([torch.ones(2)], [torch.ones(2)], "l1"), ValueError, "kind must be one of"),
    ("saliency_shape", lambda: ops.saliency([torch.ones(2)], [torch.ones(3)], "prod"), ValueError, "has shape"),
    ("fisher_1d", lambda: ops.fisher(torch.ones(4), torch.ones(4)), ValueError, r"\[N, C, \.\.\.\]"),
    # NAS-Bench-Suite-Zero's proxies and needs
    ("epe_nas_targets_none", lambda: score(_net(), _x(), None, proxies=("epe_nas",)), TypeError,
     "targets must be a torch.Tensor"),
    ("zico_targets_none", lambda: score(_net(), _x(), None, proxies=("zico",)), TypeError,
     "targets must be a torch.Tensor"),
    ("zico_batches_bad_second", lambda: score(_net(), None, None, proxies=("zico",),
                                              batches=[(_x(), _y()), (_x(), _y(4))]), ValueError, "targets has 4 rows"),
    ("zico_batches_nan_second", lambda: score(_net(), None, None, proxies=("zico",),
                                              batches=[(_x(), _y()), (_x() / 0.0, _y())]), ValueError, "NaN or inf"),
    ("score_arch_zico_batches_empty", lambda: zcfast.score_arch(NB201, ARCH, None, None, ("zico",), batches=[]),
     ValueError, "non-empty list"),
    ("nwot_typo", lambda: score(_net(), _x(), _y(), proxies=("nwott",)), ValueError, "did you mean 'nwot'"),
    ("register_suite_zero_name", _register("zico"), ValueError, "already registered"),
    ("register_need_suite_zero_name", lambda: zcfast.register_need(zcfast.Need("relu_kernels", run=print)),
     ValueError, "already registered"),
    ("unregister_need_suite_zero", lambda: zcfast.unregister_need("zen_pass"), ValueError, "built-in need"),
    ("unregister_suite_zero_proxy", lambda: unregister_proxy("nwot"), ValueError, "cannot be unregistered"),
    ("activation_need_where", lambda: activation_need("test_bad_act", is_relu, "middle"), ValueError,
     "where must be one of input, output"),
    ("gaussian_need_where", lambda: gaussian_need("test_bad_gauss", where="inside"), ValueError,
     "where must be one of input, output"),
    ("mini_batches_parts", lambda: zcfast.proxies.PassContext(batches=((_x(2), _y(2)),)).mini_batches(3), ValueError,
     "cannot be split into 3 mini-batches"),
]


@pytest.mark.parametrize("call, exc, match", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_refused_with_a_message_naming_it(call, exc, match) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc, match=match) as info:
            call()
    assert "\n" not in str(info.value).strip(), "one line"


def test_the_table_is_big_enough() -> None:
    assert len(BAD) >= 30 and len({c[0] for c in BAD}) == len(BAD)


# ------------------------------------------------------------------------------------------
# value cases: NaN (or inf) with the reason, identical on every route
# ------------------------------------------------------------------------------------------
def _nb201_x(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _both_routes(x, y, proxies=SIX):
    fast = zcfast.score_arch(NB201, ARCH, x, y, proxies, seed=3, detailed=True)
    slow = zcfast.score_arch(NB201, ARCH, x, y, proxies, seed=3, detailed=True, fast=False)
    batch = score_batch(NB201, [ARCH], x, y, list(proxies), seed=3, detailed=True)[0]
    return fast, slow, batch


def test_undefined_values_one_sample_jacob_cov_nan_on_every_route() -> None:
    """NB201 with a batch of 1: jacob_cov was -1.00000000005 on the fast route; NaN with one reason."""
    x, y = _nb201_x(1), _y(1)
    fast, slow, batch = _both_routes(x, y, ("jacob_cov", "snip"))
    for r in (fast, slow, batch):
        assert math.isnan(r["jacob_cov"].value) and "at least 2 samples" in r["jacob_cov"].error
        assert r["snip"].ok
    assert fast["jacob_cov"].error == slow["jacob_cov"].error == batch["jacob_cov"].error
    v, err = zcfast.proxies.reductions.jacob_cov_score(torch.randn(1, 7))
    assert math.isnan(v) and err == fast["jacob_cov"].error
    s, e = ops.jacob_cov(torch.randn(3, 1, 5))
    assert torch.isnan(s).all() and torch.isnan(e).all()
    s, e = ops.jacob_cov(torch.randn(2, 4, 0))
    assert torch.isnan(s).all()


def test_undefined_values_overflowed_inputs_nan_on_every_route() -> None:
    """Inputs scaled by 1e30: BatchNorm's variance overflows, every gradient is exactly 0;
    grad_norm/snip/grasp/fisher were 0.0 with no word. Now NaN with the overflow reason."""
    x, y = _nb201_x(6) * 1e30, _y(6)
    fast, slow, batch = _both_routes(x, y)
    for p in GRAD_PROXIES:
        for r in (fast, slow, batch):
            assert math.isnan(r[p].value) and "overflowed" in r[p].error, (p, r[p])
        assert fast[p].error == slow[p].error == batch[p].error
    assert fast["synflow"].ok and slow["synflow"].ok     # synflow's input is all ones
    eng = score_detailed(_net(), _x(6) * 1e30, y)
    for p in GRAD_PROXIES:
        assert math.isnan(eng[p].value) and eng[p].error == slow[p].error
    with pytest.warns(RuntimeWarning, match="overflowed"):
        vals = score(_net(), _x(6) * 1e30, y, proxies=("snip",))
    assert math.isnan(vals["snip"])


def test_undefined_values_non_finite_loss_gives_nan_with_reason() -> None:
    class Inf(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(48, 5)

        def forward(self, x):
            return self.fc(x.flatten(1)) * float("inf")

    r = score_detailed(Inf(), _x(), _y(), proxies=("snip", "grad_norm", "synflow"))
    for p in ("snip", "grad_norm"):
        assert math.isnan(r[p].value) and "loss is not finite" in r[p].error
    assert not r["synflow"].ok


def _user_proxy_case(fn, needs=("grads",)):
    name = "test_user_case"
    register_proxy(name, needs=needs)(fn)
    try:
        return score_detailed(_net(), _x(), _y(), proxies=(name, "snip", "synflow"))
    finally:
        unregister_proxy(name)


@pytest.mark.parametrize("fn, text", [
    (lambda ctx: None, "returned None"),
    (lambda ctx: "fast", "returned str"),
    (lambda ctx: torch.ones(3), "returned Tensor"),
    (lambda ctx: 1 / 0, "raised ZeroDivisionError"),
    (lambda ctx: ctx.no_such_field, "raised AttributeError"),
], ids=["none", "string", "tensor", "raises", "attribute_error"])
def test_a_failing_user_proxy_is_its_own_failure(fn, text) -> None:
    r = _user_proxy_case(fn)
    assert math.isnan(r["test_user_case"].value) and text in r["test_user_case"].error
    assert r["snip"].ok and r["synflow"].ok


class _OnceDifferentiable(torch.autograd.Function):
    """x * 2 whose backward cannot itself be differentiated: it raises when run with
    create_graph (grad mode on inside backward), as ops without a double backward do."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        if torch.is_grad_enabled():
            raise RuntimeError("the derivative of this backward is not implemented (double backward)")
        return g * 2


class _NoDoubleBackward(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(48, 8)
        self.fc2 = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc2(_OnceDifferentiable.apply(torch.tanh(self.fc1(x.flatten(1)))))


def test_a_failing_pass_marks_only_the_proxies_that_need_it() -> None:
    r = score_detailed(_NoDoubleBackward(), _x(), _y())
    assert math.isnan(r["grasp"].value) and "double backward" in r["grasp"].error
    for p in ("grad_norm", "snip", "fisher", "synflow", "jacob_cov"):
        assert r[p].ok, (p, r[p])


class _Float32Only(nn.Module):
    """Refuses float64 inputs: synflow's pass fails, the main pass works."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(48, 5)

    def forward(self, x):
        if x.dtype != torch.float32:
            raise TypeError(f"float32 only, got {x.dtype}")
        return self.fc(x.flatten(1))


def test_a_failing_synflow_pass_leaves_the_others() -> None:
    r = score_detailed(_Float32Only(), _x(), _y())
    assert math.isnan(r["synflow"].value) and "synflow pass" in r["synflow"].error
    assert "float32 only" in r["synflow"].error
    assert all(r[p].ok for p in ("grad_norm", "snip", "grasp", "fisher", "jacob_cov"))


def test_transformer_encoder_scores_every_proxy_including_grasp() -> None:
    """grasp's double backward is not implemented for the fused attention kernels: the engine
    runs that pass on the math kernel, so all six are computed (it used to fail the call)."""
    torch.manual_seed(0)

    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 16)
            self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 2,
                                             enable_nested_tensor=False)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            return self.head(self.enc(self.proj(x)).mean(1))

    r = score_detailed(Enc(), torch.randn(5, 7, 4), torch.tensor([0, 1, 2, 0, 1]), per_layer=True)
    assert all(v.ok for v in r.values()), r
    assert "enc.layers.0.self_attn.in_proj_weight" in r["snip"].per_layer
    assert "enc.layers.1.self_attn.out_proj" in r["snip"].per_layer


class _TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 8)
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        return self.head(self.rnn(self.emb(ids))[0][:, -1])


def test_integer_inputs_work_for_proxies_that_do_not_differentiate_the_input() -> None:
    ids = torch.randint(0, 50, (5, 6), generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1])
    r = score_detailed(_TokenModel(), ids, y, per_layer=True)
    for p in ("grad_norm", "snip", "grasp", "fisher"):
        assert r[p].ok, (p, r[p])
    assert set(r["snip"].per_layer) == {"emb", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "head"}
    assert math.isnan(r["jacob_cov"].value) and "needs floating inputs" in r["jacob_cov"].error
    assert math.isnan(r["synflow"].value) and "synflow needs a floating input" in r["synflow"].error


def _audio_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 16, 9, stride=2), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Conv1d(16, 32, 9, stride=2), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Conv1d(32, 64, 5), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, 10))


def test_default_rule_counts_every_weight_bearing_layer_of_an_audio_model() -> None:
    """The old default (Conv2d + Linear) counted only the head of a Conv1d model; the default
    now counts every conv and linear weight; the paper's rule stays on request."""
    net = _audio_model()
    x, y = torch.randn(6, 1, 100, generator=torch.Generator().manual_seed(0)), _y(6) % 10
    counted = zcfast.proxies.engine.counted_weights(net)
    weight_params = sum(m.weight.numel() for m in net if isinstance(m, (nn.Conv1d, nn.Linear)))
    assert sum(getattr(c.module, c.attr).numel() for c in counted) == weight_params == 640 + 16 * 9 + 16 * 32 * 9 + 32 * 64 * 5
    default = score_detailed(net, x, y, proxies=("snip", "fisher"), per_layer=True)
    assert list(default["snip"].per_layer) == ["0", "3", "6", "10"]
    assert default["fisher"].ok and all(v > 0 for v in default["fisher"].per_layer.values())
    paper = score_detailed(net, x, y, proxies=("snip",), per_layer=True, layer_types=PAPER_LAYER_TYPES)
    assert list(paper["snip"].per_layer) == ["10"]
    one = score_detailed(net, x, y, proxies=("snip",), layer_types=nn.Conv1d, per_layer=True)  # one class
    assert list(one["snip"].per_layer) == ["0", "3", "6"]


def test_parametrized_weights_count_by_their_effective_weight() -> None:
    """weight_norm: snip/grad_norm equal those of a plain model holding the effective weight
    (gradients are taken with respect to the effective weight)."""
    from torch.nn.utils import parametrizations
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))
    wn = nn.Sequential(parametrizations.weight_norm(nn.Conv2d(3, 4, 3, padding=1)), nn.ReLU(), nn.Flatten(),
                       parametrizations.weight_norm(nn.Linear(64, 5)))
    with torch.no_grad():
        for i in (0, 3):
            plain[i].weight.copy_(wn[i].weight)
            plain[i].bias.copy_(wn[i].bias)
    a = score(plain, _x(), _y(), proxies=("snip", "grad_norm", "grasp"), per_layer=True)
    b = score(wn, _x(), _y(), proxies=("snip", "grad_norm", "grasp"), per_layer=True)
    assert set(a) == set(b)
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), k


def test_skipped_parameters_are_named_in_a_warning() -> None:
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(48, 8))
            self.act = nn.PReLU()
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            return self.head(self.act(x.flatten(1) @ self.w))

    with pytest.warns(UserWarning, match=r"2 parameter tensor\(s\) \(385 parameters\).*w \(384\), act.weight \(1\)"):
        score(Custom(), _x(), _y(), proxies=("snip",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score(Custom(), _x(), _y(), proxies=("snip",), layer_types=nn.Linear)  # explicit rule: no warning


def test_undefined_values_suite_zero_nan_with_reason_on_every_route() -> None:
    """NB201, the new proxies' undefined cases on score_arch's two routes and score_batch: one
    sample (zico cannot split it into two mini-batches), duplicated samples (nwot's K is
    singular: -inf); the other proxies of the call are still computed."""
    x, y = _nb201_x(1), _y(1)
    for r in _both_routes(x, y, ("zico", "params", "flops")):
        assert math.isnan(r["zico"].value) and "cannot be split into 2 mini-batches" in r["zico"].error
        assert r["params"].ok and r["flops"].ok
    x = _nb201_x(3).repeat(2, 1, 1, 1)
    for r in _both_routes(x, _y(6), ("nwot", "l2_norm")):
        assert r["nwot"].value == -math.inf and "singular" in r["nwot"].error
        assert r["l2_norm"].ok
    with pytest.warns(RuntimeWarning, match="singular"):
        vals = score(_net(), _x(3).repeat(2, 1, 1, 1), _y(6), proxies=("nwot",))
    assert vals["nwot"] == -math.inf
