"""The fixed Numba kernels of compile/kernels.py against numpy, at the sizes where their
fast paths switch on (the gallery's small specs never reach them), and the executor's
choices that rest on them actually taken."""
from pathlib import Path

import numpy as np
import pytest

import seqgraph
from seqgraph.compile import kernels

RNG = np.random.default_rng(0)
SPECS = Path(__file__).resolve().parents[1] / "specs"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,K,N,ta,tb", [
    (2048, 128, 65, False, False),    # logits: row tiles
    (2048, 65, 128, False, False),    # their gradient
    (65, 2048, 128, True, False),     # a weight gradient over all steps: K tiles
    (300, 700, 100, True, True),      # both operands transposed views
    (2048, 128, 512, False, True),    # a wide output: no tiles
])
def test_matmul_tiles_equal_numpy(M, K, N, ta, tb, dtype):
    a = RNG.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    b = RNG.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    a, b = (a.T if ta else a), (b.T if tb else b)
    tiled = (N <= 128) == (kernels.tiles(M, N, K) is not None)
    assert tiled
    ref = a.astype(np.float64) @ b.astype(np.float64)
    got = kernels.matmul(a, b)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_output_layer_equals_its_parts_over_several_tiles(dtype):
    R, K, V = 200, 12, 7
    X = RNG.standard_normal((R, K)).astype(dtype)
    W = RNG.standard_normal((V, K)).astype(dtype)
    b = RNG.standard_normal(V).astype(dtype)
    y = RNG.integers(-1, V, R)                      # -1: padding, no loss
    out = [np.empty(s, dtype) for s in ((R, V), (V, K), (V,), (R, K))]
    s, n = kernels.output_xent(X, W, b, y, 0.25, *out, 48)    # 5 tiles, the last short
    logits, dW, db, dX = out
    L = X @ W.T + b
    s2, n2, d = kernels.xent(L, y, 0.25)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert n == n2 == int((y >= 0).sum()) and s == pytest.approx(s2, rel=tol)
    for got, ref in ((logits, L), (dW, d.T @ X), (db, d.sum(0)), (dX, d @ W)):
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


def _xent_all_ways(L, y):
    """(loss, logits) of logits L [R, V] against y by the three softmax kernels: _xent
    without and with the gradient, and the fused output layer (W = I, b = 0: its logits
    are L, but for an infinity, which the product makes NaN as numpy's does)."""
    R, V = L.shape
    dt = L.dtype
    out = [np.empty(s, dt) for s in ((R, V), (V, V), (V,), (R, V))]
    fused, _ = kernels.output_xent(L, np.eye(V, dtype=dt), np.zeros(V, dt), y, 1.0, *out,
                                   kernels.output_tile(V, V))
    return [(kernels.xent(L, y, 1.0, False)[0], L), (kernels.xent(L, y, 1.0, True)[0], L),
            (fused, out[0])]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [None, np.inf, -np.inf, np.nan])
def test_xent_of_huge_or_nonfinite_logits_is_the_interpreters(dtype, bad):
    """Logits of 1e30 (a diverging run) whose largest is the target's lose 0; the loss is
    the sum of the other rows', not 0 (fastmath reassociating total + (m - o_t) into
    (total + m) - o_t, which is m - o_t = 0). An inf or NaN logit gives the interpreter's
    inf or NaN (here the target's: -inf gives inf, inf and NaN give NaN)."""
    from seqgraph.ops import log_softmax
    R, V = 96, 5
    huge = np.arange(R) % 3 == 2
    L = RNG.standard_normal((R, V)) * np.where(huge, 1e30, 3.0)[:, None]
    y = RNG.integers(0, V, R)
    L[huge, y[huge]] = 3e30                       # the target's logit the largest: loss 0
    if bad is not None:
        L[R - 2, y[R - 2]] = bad
    for got, logits in _xent_all_ways(L.astype(dtype), y):
        with np.errstate(invalid="ignore"):
            ref = -log_softmax(logits)[np.arange(R), y].astype(np.float64).sum()
        if bad is None:
            assert got == pytest.approx(ref, rel=1e-6) and ref > R / 3
        else:
            assert not np.isfinite(ref)
            np.testing.assert_equal(got, ref)


def test_gather_bias_and_its_gradient():
    W = RNG.standard_normal((6, 5)).astype(np.float32)       # [M, V]
    b = RNG.standard_normal(6).astype(np.float32)
    ids = np.array([0, 4, -1, 4, 2])
    out = np.empty((5, 6), np.float32)
    kernels.gather_bias(np.ascontiguousarray(W.T), ids, b, out)
    onehot = np.zeros((5, 5), np.float32)
    onehot[ids >= 0, ids[ids >= 0]] = 1
    np.testing.assert_allclose(out, onehot @ W.T + b, rtol=1e-6)
    g = RNG.standard_normal((5, 6)).astype(np.float32)
    dWT, db = np.zeros((5, 6), np.float32), np.empty(6, np.float32)
    kernels.scatter_colsum(g, ids, dWT, db)
    np.testing.assert_allclose(dWT.T, g.T @ onehot, rtol=1e-6)
    np.testing.assert_allclose(db, g.sum(0), rtol=1e-6)


def test_an_lstm_takes_the_fast_paths_and_equals_the_interpreter():
    """lstm.sg compiled: its output layer fused with the loss, its gate inputs gathered
    per step, its gates' gradients in per-step rows; and still the interpreter's answer."""
    spec = seqgraph.read_spec(str(SPECS / "lstm.sg"))
    mc = seqgraph.Model(spec, dims={"V": 7}, dtype="float64", seed=1, executor="compiled")
    mi = seqgraph.Model(spec, dims={"V": 7}, dtype="float64", seed=1, executor="interp")
    ex = mc.executor
    assert ex.fallback is None and ex.fused_out
    rec = next(st for st in ex.stages if hasattr(st, "kernel"))
    assert rec.kernel.info["gatherable"] and len(rec.kernel.info["internal"]) >= 4
    x = RNG.integers(0, 7, (3, 9))
    y = RNG.integers(0, 7, (3, 9))
    a = mc.run({"x": x}, {"y": y}, grads=True, lengths={"t": np.array([9, 4, 6])})
    b = mi.run({"x": x}, {"y": y}, grads=True, lengths={"t": np.array([9, 4, 6])})
    assert a.loss == pytest.approx(b.loss, rel=1e-10)
    for k in b.grads:
        np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-9, atol=1e-12)


def test_check_explain_names_the_fast_paths_it_takes():
    """`seqgraph check --explain` says the char LM's one-hot input is gathered in the loop
    and its output layer fused with the loss; a model whose input is a real vector says
    neither, and gets the prefilled inputs instead."""
    from seqgraph.compile import explain
    spec = seqgraph.read_spec(str(SPECS / "charlm.sg"))
    lines = explain(seqgraph.Model(spec, dims={"V": 65}, executor="compiled"))
    assert any("gathered in the loop" in s for s in lines), lines
    assert any(s.startswith("o: ") and "fused with its xent loss" in s for s in lines)
    text = (SPECS / "charlm.sg").read_text().replace("onehot(V)", "vec(5)")
    m = seqgraph.Model(seqgraph.read_spec("vec.sg", text), dims={"V": 65},
                       executor="compiled")
    lines = explain(m)
    assert not any("gathered in the loop" in s for s in lines), lines
    assert any("computed for all steps before the loop" in s for s in lines)


def test_a_gate_block_of_a_pooled_array_is_read_in_place():
    """A pooled array's base is its flat buffer (kernels.Pool): column_block finds the
    wider array's rows from the block's strides, not the base's shape (review 33: every
    block of a pooled gradient was copied)."""
    from seqgraph.compile.kernels import Pool, column_block
    pool = Pool()
    wide = pool.empty((3, 4, 12), np.float64)
    wide[...] = np.arange(wide.size).reshape(wide.shape)
    for lo in (0, 4, 8):
        g = wide[..., lo:lo + 4]
        rows, c0 = column_block(g)
        assert np.shares_memory(rows, wide) and c0 == lo and rows.shape == (12, 12)
        np.testing.assert_array_equal(rows[:, c0:c0 + 4].reshape(g.shape), g)
    other = np.arange(60.0).reshape(5, 12)[1:4, 2:6]          # a plain 2-D base
    rows, c0 = column_block(other)
    assert np.shares_memory(rows, other) and c0 == 2
    np.testing.assert_array_equal(rows[:, 2:6], other)
