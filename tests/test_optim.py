"""Optimisers against PyTorch's, clipping, weight decay, schedules and saved state."""
import math

import numpy as np
import pytest

from seqgraph.errors import UsageError
from seqgraph.lang.ast import Call
from seqgraph.train.optim import SGD, Adagrad, Adam, clip_global_norm, global_norm, make_optimizer
from seqgraph.train.schedules import make_schedule

torch = pytest.importorskip("torch")


def problem(seed=0):
    """Two parameters (a matrix and a vector) and a stream of gradients for them."""
    rng = np.random.default_rng(seed)
    params = {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(6)]
    return params, grads


def run_ours(opt, params, grads):
    params = {k: v.copy() for k, v in params.items()}
    for g in grads:
        opt.step(params, {k: v.copy() for k, v in g.items()})
    return params


def run_torch(make, params, grads):
    ts = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = make(list(ts.values()))
    for g in grads:
        for k, t in ts.items():
            t.grad = torch.tensor(g[k])
        opt.step()
    return {k: t.detach().numpy() for k, t in ts.items()}


@pytest.mark.parametrize("ours, theirs", [
    (lambda: SGD(0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda: SGD(0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    (lambda: Adam(0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    (lambda: Adam(0.02, beta1=0.8, beta2=0.99, eps=1e-6),
     lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6)),
    (lambda: Adagrad(0.1, eps=1e-10), lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-10)),
])
def test_matches_pytorch(ours, theirs):
    params, grads = problem()
    a, b = run_ours(ours(), params, grads), run_torch(theirs, params, grads)
    for k in params:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-10, atol=1e-12)


def test_l2_decays_weights_not_biases():
    params, grads = problem()
    zero = [{k: np.zeros_like(v) for k, v in g.items()} for g in grads[:1]]
    out = run_ours(SGD(0.5, l2=0.1), params, zero)
    np.testing.assert_allclose(out["W"], params["W"] * (1 - 0.05))
    np.testing.assert_array_equal(out["b"], params["b"])


def test_l2_matrix_matches_pytorch_weight_decay():
    params, grads = problem()
    only_w = {"W": params["W"]}
    gw = [{"W": g["W"]} for g in grads]
    a = run_ours(Adam(0.01, l2=0.01), only_w, gw)
    b = run_torch(lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01), only_w, gw)
    np.testing.assert_allclose(a["W"], b["W"], rtol=1e-10)


def test_state_round_trip_continues_exactly():
    params, grads = problem()
    straight = run_ours(Adam(0.01), params, grads)
    first = Adam(0.01)
    half = run_ours(first, params, grads[:3])
    state = first.state_dict()
    assert state["step"] == 3 and set(state["arrays"]) == {"m/W", "m/b", "v/W", "v/b"}
    second = Adam(0.01)
    second.load_state_dict({**state, "arrays": {k: v.copy() for k, v in state["arrays"].items()}})
    resumed = run_ours(second, half, grads[3:])
    for k in params:
        np.testing.assert_array_equal(resumed[k], straight[k])


def test_loading_another_optimisers_state_is_refused():
    with pytest.raises(UsageError, match="optimiser is adam"):
        SGD(0.1).load_state_dict(Adam().state_dict())


def test_updates_are_in_place():
    params, grads = problem()
    W = params["W"]
    Adam(0.1).step(params, grads[0])
    assert params["W"] is W and not np.array_equal(W, problem()[0]["W"])


def test_clip_global_norm_scales_all_together_and_returns_the_norm():
    _, grads = problem()
    g = {k: v.copy() for k, v in grads[0].items()}
    norm = math.sqrt(sum((v ** 2).sum() for v in g.values()))
    assert clip_global_norm(g, 1.0) == pytest.approx(norm)
    clipped = math.sqrt(sum((v ** 2).sum() for v in g.values()))
    assert clipped == pytest.approx(1.0)
    np.testing.assert_allclose(g["W"] / grads[0]["W"], 1.0 / norm)
    small = {k: v * 1e-3 for k, v in grads[0].items()}
    before = {k: v.copy() for k, v in small.items()}
    clip_global_norm(small, 1.0)
    np.testing.assert_array_equal(small["W"], before["W"])


def test_a_huge_float32_gradient_has_its_finite_norm_and_is_clipped():
    """Components of 1e25 square past float32's 3.4e38: the norm is summed in float64
    (it was inf, so clipping was skipped and the run called diverged)."""
    _, grads = problem()
    g = {k: (v * 1e25).astype(np.float32) for k, v in grads[0].items()}
    norm = math.sqrt(sum((v.astype(np.float64) ** 2).sum() for v in g.values()))
    assert global_norm(g) == pytest.approx(norm, rel=1e-6) and math.isfinite(norm)
    assert global_norm(g, {"W": (0, [0, 2])}) == pytest.approx(math.sqrt(
        (g["W"][[0, 2]].astype(np.float64) ** 2).sum() + (g["b"].astype(np.float64) ** 2).sum()))
    assert clip_global_norm(g, 1.0) == pytest.approx(norm, rel=1e-6)
    assert global_norm(g) == pytest.approx(1.0, rel=1e-5)


def test_make_optimizer_from_calls():
    opt = make_optimizer(Call("adam", (), {"lr": 0.002}), l2=0.5)
    assert (opt.name, opt.lr, opt.l2, opt.beta1) == ("adam", 0.002, 0.5, 0.9)
    assert make_optimizer(Call("sgd", (0.3,), {"momentum": 0.5})).momentum == 0.5
    assert make_optimizer("adam").lr == 0.001
    with pytest.raises(UsageError, match="missing 1 required positional argument: 'lr'"):
        make_optimizer("sgd")
    with pytest.raises(UsageError, match="unknown optimizer 'rmsprop'"):
        make_optimizer(Call("rmsprop", (), {}))
    with pytest.raises(UsageError, match="lr must be positive"):
        make_optimizer(Call("adam", (), {"lr": 0}))


# ------------------------------------------------------------------------ schedules
def test_step_schedule_halves_after_the_given_epochs():
    s = make_schedule(Call("step", (), {"after": 2, "factor": 0.5}))
    assert [s.scale(0, e, 100) for e in range(5)] == [1, 1, 0.5, 0.25, 0.125]


def test_cosine_goes_from_one_to_the_floor():
    s = make_schedule("cosine")
    assert s.scale(0, 0, 10) == 1 and s.scale(5, 0, 10) == pytest.approx(0.5)
    assert s.scale(10, 0, 10) == pytest.approx(0)
    assert make_schedule(Call("cosine", (), {"floor": 0.1})).scale(10, 0, 10) == pytest.approx(0.1)
    for floor in (-1, 2):            # a negative last rate would train uphill (walk 10)
        with pytest.raises(UsageError, match=r"cosine\(floor\) needs 0 <= floor <= 1"):
            make_schedule(Call("cosine", (), {"floor": floor}))


def test_plateau_reduces_after_patience_and_saves_state():
    s = make_schedule(Call("plateau", (), {"factor": 0.1, "patience": 1}))
    for loss in [3.0, 2.0, 2.5, 2.4]:
        s.end_epoch(loss)
    assert s.scale(0, 0, 0) == pytest.approx(0.1)
    t = make_schedule(Call("plateau", (), {"factor": 0.1, "patience": 1}))
    t.load_state_dict(s.state_dict())
    t.end_epoch(1.0)
    assert (t.best, t.current) == (1.0, pytest.approx(0.1))


def test_constant_and_unknown_schedules():
    assert make_schedule("constant").scale(7, 3, 10) == 1
    with pytest.raises(UsageError, match="unknown schedule 'linear'"):
        make_schedule("linear")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_takes_the_fused_pass_whatever_the_gradients_layout(dtype, monkeypatch):
    """An embedding's gradient comes from a lookup's scatter F-ordered, and a gate's
    rows of a one-hot input's stacked gradient have contiguous columns only: both take
    the fused pass (the numpy form was 20x slower at [64, 12000]), with the same numbers
    as a C-ordered gradient."""
    from seqgraph.compile import kernels
    rng = np.random.default_rng(0)
    shape = (37, 70)                                  # not a multiple of the 32-tiles
    p0 = rng.normal(size=shape).astype(dtype)
    gs = [rng.normal(size=shape).astype(dtype) for _ in range(3)]

    def middle_rows(g):               # g as the middle rows of an F-ordered [3n, m]
        wide = np.zeros((3 * shape[0], shape[1]), dtype, order="F")
        wide[shape[0]:2 * shape[0]] = g
        return wide[shape[0]:2 * shape[0]]
    layouts = {"C": gs, "F": [np.asfortranarray(g) for g in gs],
               "column-contiguous rows": [middle_rows(g) for g in gs]}
    assert not layouts["column-contiguous rows"][0].flags.f_contiguous
    calls = []
    fused = kernels.adam_update
    monkeypatch.setattr(kernels, "adam_update", lambda *a: calls.append(1) or fused(*a))
    out = {}
    for name, grads in layouts.items():
        opt, p = Adam(lr=0.01), p0.copy()
        for g in grads:
            opt.step({"W": p}, {"W": g})
        out[name] = (p, opt.state["m"]["W"], opt.state["v"]["W"])
    assert len(calls) == 9
    for name in ("F", "column-contiguous rows"):
        for a, b in zip(out[name], out["C"], strict=True):
            np.testing.assert_array_equal(a, b)
