"""The op table (seqgraph.ops.TABLE): every op's VJP against float64 central differences
of its forward, one table row per op; GATHER is the one-hot product without the one-hot."""
from __future__ import annotations

import time
import tracemalloc
import zlib

import numpy as np
import pytest

from seqgraph import ops
from seqgraph.ops import Op

B, M, N = 3, 4, 5
EPS = 1e-6


def _vec(rng, n=N):
    return rng.normal(size=(B, n))


def _away_from_zero(rng, n=N):
    """Values with |x| >= 0.2: no kink of relu is within eps."""
    x = rng.normal(size=(B, n))
    return np.sign(x) * (0.2 + np.abs(x))


def _ids(rng, n=N):
    ids = rng.integers(0, n, size=B)
    ids[-1] = -1                      # padding: a zero one-hot row, no loss
    return ids


# One row per case: (name, op, make args from rng, attrs, ctx kwargs, tolerance).
# Several rows may test one op (broadcast numbers, padding ids).
ROWS = [
    ("matmul", Op.MATMUL, lambda r: [r.normal(size=(M, N)), _vec(r)], (), {}, 1e-8),
    ("gather", Op.GATHER, lambda r: [r.normal(size=(M, N)), _ids(r)], (), {}, 1e-8),
    ("bilinear", Op.BILINEAR,
     lambda r: [r.normal(size=(M, N, 3)), _vec(r), _vec(r, 3)], (), {}, 1e-8),
    ("add", Op.ADD, lambda r: [_vec(r), _vec(r)], (), {}, 1e-8),
    ("add_number", Op.ADD, lambda r: [_vec(r), 2.5], (), {}, 1e-8),
    ("add_param", Op.ADD, lambda r: [_vec(r), r.normal(size=N)], (), {}, 1e-8),
    ("sub", Op.SUB, lambda r: [_vec(r), _vec(r)], (), {}, 1e-8),
    ("sub_from_number", Op.SUB, lambda r: [1.0, _vec(r)], (), {}, 1e-8),
    ("mul", Op.MUL, lambda r: [_vec(r), _vec(r)], (), {}, 1e-8),
    ("mul_number", Op.MUL, lambda r: [0.3, _vec(r)], (), {}, 1e-8),
    ("div", Op.DIV, lambda r: [_vec(r), _away_from_zero(r) * 2], (), {}, 1e-7),
    ("div_number", Op.DIV, lambda r: [_vec(r), 2.0], (), {}, 1e-8),
    ("neg", Op.NEG, lambda r: [_vec(r)], (), {}, 1e-8),
    ("tanh", Op.TANH, lambda r: [_vec(r)], (), {}, 1e-8),
    ("sigmoid", Op.SIGMOID, lambda r: [_vec(r) * 3], (), {}, 1e-8),
    ("relu", Op.RELU, lambda r: [_away_from_zero(r)], (), {}, 1e-8),
    ("exp", Op.EXP, lambda r: [_vec(r)], (), {}, 1e-8),
    ("log", Op.LOG, lambda r: [np.exp(_vec(r))], (), {}, 1e-7),       # positives only
    ("softplus", Op.SOFTPLUS, lambda r: [_vec(r) * 3], (), {}, 1e-8),
    ("softmax", Op.SOFTMAX, lambda r: [_vec(r) * 2], (), {}, 1e-8),
    ("dropout_train", Op.DROPOUT, lambda r: [_vec(r)], (("p", 0.5),), {"train": True},
     1e-8),
    ("dropout_eval", Op.DROPOUT, lambda r: [_vec(r)], (("p", 0.5),), {"train": False},
     1e-8),
    ("concat", Op.CONCAT, lambda r: [_vec(r, 2), _vec(r, 3), _vec(r, 1)], (), {}, 1e-8),
    ("onehot", Op.ONEHOT, lambda r: [_ids(r)], (("size", N), ("dtype", np.float64)), {},
     1e-8),
    ("xent", Op.XENT, lambda r: [_vec(r) * 2, _ids(r)], (), {}, 1e-8),
    ("bce", Op.BCE, lambda r: [_vec(r) * 2, (r.random((B, N)) < 0.5) * 1.0], (), {}, 1e-8),
    ("bce_soft", Op.BCE, lambda r: [_vec(r) * 2, r.random((B, N))], (), {}, 1e-8),
    ("mse", Op.MSE, lambda r: [_vec(r), _vec(r)], (), {}, 1e-8),
    # a vector parameter on the left of @: one number per example, kept as [B, 1]
    ("dot", Op.DOT, lambda r: [r.normal(size=N), _vec(r)], (), {}, 1e-8),
    ("mul_by_scores", Op.MUL, lambda r: [_vec(r, 1), _vec(r)], (), {}, 1e-8),
    # reductions over an index: one argument per step; the mask drops padded steps
    ("sum_over", Op.SUM_OVER, lambda r: [_vec(r) for _ in range(4)], (), {}, 1e-8),
    ("sum_over_masked", Op.SUM_OVER, lambda r: [_vec(r) for _ in range(4)],
     (("mask", np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 0, 0]], bool)),), {}, 1e-8),
    ("mean_over", Op.MEAN_OVER, lambda r: [_vec(r) for _ in range(3)], (), {}, 1e-8),
    ("max_over", Op.MAX_OVER, lambda r: [_vec(r) + 3 * t for t in range(3)], (), {}, 1e-8),
    # rows where a tree meets per-example values: a node's row (repeated rows add up in
    # the gradient), and a tree's root rows stacked
    ("take_rows", Op.TAKE, lambda r: [_vec(r)], (("rows", np.array([2, 0, 2, 2])),), {},
     1e-8),
    ("stack_rows", Op.STACK, lambda r: [_vec(r)[:1], _vec(r)[:2], _vec(r)[:1]], (), {},
     1e-8),
    ("logsumexp_over", Op.LSE_OVER, lambda r: [_vec(r, 1) for _ in range(5)],
     (("mask", np.array([[1, 1, 1]] * 3 + [[1, 0, 1]] * 2, bool)),), {}, 1e-8),
    # a step every example of which is real (test_real_steps_at_padded_ones: the others)
    ("real_steps", Op.REAL_STEPS, lambda r: [_vec(r, 1)], (("keep", np.ones((B, 1), bool)),),
     {}, 1e-8),
]

# arguments that carry no gradient: ids, numbers, and the targets of a loss
NO_GRAD_ARGS = {Op.XENT: {1}, Op.BCE: {1}, Op.MSE: {1}}


def _ctx(kw):
    # a fixed seed: every call of a training dropout draws the same mask
    return ops.Ctx(rng=np.random.default_rng(99), **kw)


def _differentiable(op, i, a):
    return i not in NO_GRAD_ARGS.get(op, ()) and isinstance(a, np.ndarray) \
        and a.dtype.kind == "f"


def test_every_op_has_a_row():
    assert {r[1] for r in ROWS} == set(Op)
    assert set(ops.TABLE) == set(Op)
    for op, d in ops.TABLE.items():
        assert d.op is op


def test_real_steps_at_padded_ones():
    """softmax over t's mask (graph/folded.softmax_over): -inf where an example is padded,
    whatever its value (inf and NaN too), and no gradient there; x and g elsewhere."""
    x = np.array([[0.5], [np.inf], [np.nan], [1e300]])
    keep = np.array([[True], [False], [False], [True]])
    y, saved = ops.forward(Op.REAL_STEPS, ops.Ctx(), [x], (("keep", keep),))
    np.testing.assert_array_equal(y, [[0.5], [-np.inf], [-np.inf], [1e300]])
    (d,) = ops.vjp(Op.REAL_STEPS, np.full((4, 1), 2.0), y, saved, [x])
    np.testing.assert_array_equal(d, [[2.0], [0.0], [0.0], [2.0]])
    y32, _ = ops.forward(Op.REAL_STEPS, ops.Ctx(), [x[:3].astype(np.float32)],
                         (("keep", keep[:3]),))
    assert y32.dtype == np.float32


ELEMENTWISE = ops.ELEMENTWISE_UNARY + ops.ELEMENTWISE_BINARY


def _kernel_scalar(expr: str, **names) -> float:
    """A kernel's scalar expression (compile/codegen.py) evaluated in float64, with its
    helpers as the generated module defines them."""
    import math
    env = {"_tanh": math.tanh, "_sigmoid": lambda x: 1 / (1 + math.exp(-x)),
           "_softplus": lambda x: float(np.logaddexp(0, x)), "math": math, "max": max,
           "ONE": 1.0, "ZERO": 0.0, **names}
    return eval(expr, env)


def test_every_elementwise_op_has_a_kernel_and_an_attention_rule():
    """The compiled loops (codegen's scalar code) and the attention executor (numpy into
    buffers) each write the elementwise ops again: each has every op, and each computes
    what ops.TABLE does, forward and VJP (a new op fails here, not at run time)."""
    from seqgraph.compile.attention.numerics import _EW, _EW_VJP
    from seqgraph.compile.codegen import KERNEL_FWD, KERNEL_VJP
    assert set(KERNEL_FWD) == set(KERNEL_VJP) == set(_EW) == set(_EW_VJP) == set(ELEMENTWISE)
    rng = np.random.default_rng(5)
    for op in ELEMENTWISE:
        n = 1 if op in ops.ELEMENTWISE_UNARY else 2
        xs = [rng.uniform(0.3, 2.0, 6) * rng.choice([-1, 1], 6) for _ in range(n)]
        if op is Op.LOG:
            xs = [np.abs(xs[0])]
        g = rng.normal(size=6)
        y, _ = ops.TABLE[op].fwd(None, *xs)
        want = ops.TABLE[op].vjp(g, y, None, xs)
        np.testing.assert_allclose(_EW[op]([x.copy() for x in xs], None, False), y,
                                   rtol=1e-12, err_msg=str(op))
        for a, b in zip(_EW_VJP[op](g, y, xs), want, strict=True):
            np.testing.assert_allclose(np.broadcast_to(a, b.shape), b, rtol=1e-12,
                                       err_msg=str(op))
        names = [f"a{i}" for i in range(n)]
        for k in range(6):
            at = {nm: float(x[k]) for nm, x in zip(names, xs, strict=True)}
            assert _kernel_scalar(KERNEL_FWD[op](names), **at) == pytest.approx(y[k],
                                                                                rel=1e-12)
            terms = KERNEL_VJP[op]("g", names, "y")
            for i, term in terms:
                got = _kernel_scalar(term, g=float(g[k]), y=float(y[k]), **at)
                assert got == pytest.approx(np.broadcast_to(want[i], y.shape)[k],
                                            rel=1e-12), (op, i)
            assert sorted(i for i, _ in terms) == list(range(n)), op


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_op_gradient(row):
    name, op, make, attrs, ctx_kw, tol = row
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    args = make(rng)
    out, saved = ops.forward(op, _ctx(ctx_kw), args, attrs)
    out = np.asarray(out)
    assert out.dtype == np.float64
    assert out.shape == ((B,) if op in ops.LOSSES else out.shape)
    assert np.isfinite(out).all()
    g = rng.normal(size=out.shape)                 # L = sum(g * op(args))
    grads = ops.vjp(op, g, out, saved, args)
    assert len(grads) == len(args)

    def L(xs):
        return float((np.asarray(ops.forward(op, _ctx(ctx_kw), xs, attrs)[0]) * g).sum())

    checked = 0
    for i, a in enumerate(args):
        if not _differentiable(op, i, a):
            assert grads[i] is None, f"{name}: argument {i} should get no gradient"
            continue
        assert grads[i] is not None and np.shape(grads[i]) == a.shape, (name, i)
        # a random direction
        d = rng.normal(size=a.shape)
        plus = [x if j != i else a + EPS * d for j, x in enumerate(args)]
        minus = [x if j != i else a - EPS * d for j, x in enumerate(args)]
        num = (L(plus) - L(minus)) / (2 * EPS)
        ana = float((grads[i] * d).sum())
        assert abs(ana - num) <= tol * max(1.0, abs(num)), (name, i, ana, num)
        # every entry (the arguments are small)
        for idx in np.ndindex(a.shape):
            e = np.zeros_like(a)
            e[idx] = 1
            plus = [x if j != i else a + EPS * e for j, x in enumerate(args)]
            minus = [x if j != i else a - EPS * e for j, x in enumerate(args)]
            num = (L(plus) - L(minus)) / (2 * EPS)
            assert abs(grads[i][idx] - num) <= tol * max(1.0, abs(num)), \
                (name, i, idx, grads[i][idx], num)
        checked += 1
    if op not in (Op.ONEHOT,):
        assert checked, f"{name}: nothing to differentiate"


# ------------------------------------------------------------------ forward values
def test_forward_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, N))
    c = ops.Ctx()
    f = lambda op, *a, at=(): ops.forward(op, c, list(a), at)[0]
    np.testing.assert_allclose(f(Op.SIGMOID, x), 1 / (1 + np.exp(-x)), rtol=1e-15)
    np.testing.assert_allclose(f(Op.SOFTPLUS, x), np.log1p(np.exp(x)), rtol=1e-14)
    np.testing.assert_allclose(f(Op.SOFTMAX, x).sum(-1), 1, rtol=1e-15)
    # extreme inputs stay finite
    big = np.array([[-800.0, 0.0, 800.0]])
    assert np.isfinite(f(Op.SIGMOID, big)).all() and np.isfinite(f(Op.SOFTMAX, big)).all()
    assert np.isfinite(ops.forward(Op.XENT, c, [big, np.array([0])])[0]).all()
    # xent: -log softmax(o)[y], 0 for padding
    y = np.array([1, 4, -1])
    want = -np.log(f(Op.SOFTMAX, x))[np.arange(B), y]
    want[2] = 0
    np.testing.assert_allclose(f(Op.XENT, x, y), want, rtol=1e-14)
    # bce: the slides' -y log s - (1 - y) log(1 - s), summed over components
    t = rng.random((B, N))
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(f(Op.BCE, x, t),
                               (-t * np.log(s) - (1 - t) * np.log(1 - s)).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(f(Op.MSE, x, t), 0.5 * ((x - t) ** 2).sum(-1), rtol=1e-14)
    # bilinear: k_i = a^T T[i] b
    T, a, b = rng.normal(size=(M, N, 3)), rng.normal(size=(B, N)), rng.normal(size=(B, 3))
    want = np.array([[a[e] @ T[k] @ b[e] for k in range(M)] for e in range(B)])
    np.testing.assert_allclose(f(Op.BILINEAR, T, a, b), want, rtol=1e-12)


def test_dropout_eval_is_identity_and_train_is_inverted():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 50))
    y, _ = ops.forward(Op.DROPOUT, ops.Ctx(train=False), [x], (("p", 0.5),))
    assert y is x or np.array_equal(y, x)
    y, mask = ops.forward(Op.DROPOUT, ops.Ctx(train=True, rng=rng), [x], (("p", 0.25),))
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.75)
    np.testing.assert_allclose(y, x * mask)            # the saved mask is the one applied
    assert abs(kept.mean() - 0.75) < 0.02


# ------------------------------------------------------------------------ gather
def _dense(W, ids):
    return ops.onehot(ids, W.shape[1], W.dtype)


def test_gather_equals_onehot_matmul():
    rng = np.random.default_rng(3)
    V = 37
    W = rng.normal(size=(M, V))
    ids = rng.integers(0, V, size=8)
    ids[[2, 5]] = ids[0]                     # repeated ids: the scatter must add
    ids[-1] = -1
    c = ops.Ctx()
    xg, sg = ops.forward(Op.GATHER, c, [W, ids])
    X = _dense(W, ids)
    xm, sm = ops.forward(Op.MATMUL, c, [W, X])
    np.testing.assert_allclose(xg, xm, rtol=0, atol=1e-15)
    g = rng.normal(size=xg.shape)
    dWg, dids = ops.vjp(Op.GATHER, g, xg, sg, [W, ids])
    dWm, _ = ops.vjp(Op.MATMUL, g, xm, sm, [W, X])
    assert dids is None
    np.testing.assert_allclose(dWg, dWm, rtol=1e-14, atol=1e-15)


def test_gather_never_builds_a_vocabulary_wide_batch():
    """With V large, the lookup allocates [B, m] (forward) and [m, V] (the gradient of W,
    W's own size) but never a [B, V] one-hot matrix."""
    rng = np.random.default_rng(4)
    V, m, Bb = 200_000, 8, 256
    W = rng.normal(size=(m, V))
    ids = rng.integers(0, V, size=Bb)
    c = ops.Ctx()
    bv = Bb * V * 8                            # bytes of one dense [B, V] float64 array

    tracemalloc.start()
    t0 = time.perf_counter()
    out, saved = ops.forward(Op.GATHER, c, [W, ids])
    fwd_time = time.perf_counter() - t0
    _, peak_fwd = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    g = rng.normal(size=out.shape)
    dW, _ = ops.vjp(Op.GATHER, g, out, saved, [W, ids])
    _, peak_bwd = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert out.shape == (Bb, m)
    np.testing.assert_array_equal(out, W[:, ids].T)
    assert peak_fwd < 0.01 * bv, f"forward peaked at {peak_fwd} bytes"
    assert peak_bwd < 3 * W.nbytes < 0.2 * bv, f"backward peaked at {peak_bwd} bytes"
    assert fwd_time < 0.05, fwd_time
    want = np.zeros_like(W)
    np.add.at(want.T, ids, g)
    np.testing.assert_allclose(dW, want, rtol=1e-14)
