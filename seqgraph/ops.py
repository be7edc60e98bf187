"""The one table of ops: for each, its shape rule, its forward and its vector-Jacobian
product (VJP), side by side.

Values are batch-major: a vector variable is an array [B, n], ids are int arrays [B]
(-1 meaning "no token": a zero one-hot vector, a masked loss), parameters keep their own
shapes ([m, n] matrices in PyTorch's `Linear.weight` layout, [m] vectors), numbers are
Python floats. A VJP receives the output's gradient `g` and returns one gradient per
argument (None where none flows: ids, numbers); broadcasting is undone by the caller.

Shape rules speak of one example: an argument's shape is a tuple of size variables
(() a number, (n,) a vector, (m, n) a matrix, (k, a, b) a tensor), and a rule states
equalities (`S.eq`) and sums (`S.sum`) between them for the checker to solve.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np


class Op(Enum):
    # products
    MATMUL = "@"          # W @ v: a matrix times a vector
    DOT = "@dot"          # v @ x with v a vector (parameter or value): v^T x, a number
    GATHER = "@gather"    # W @ onehot(ids): an embedding lookup, never a V-wide product
    BILINEAR = "bilinear"  # k_i = a^T T[i] b (Socher et al. 2013)
    # elementwise, binary (a number broadcasts)
    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"
    # elementwise, unary
    NEG = "neg"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    RELU = "relu"
    EXP = "exp"
    LOG = "log"
    SOFTPLUS = "softplus"
    # vector ops
    SOFTMAX = "softmax"
    DROPOUT = "dropout"
    CONCAT = "concat"
    ONEHOT = "onehot"
    # reductions over an index (attention): the argument evaluated at every step of the
    # index is stacked [T, B, n]; `mask` [T, B] marks the real (unpadded) steps
    SUM_OVER = "sum over"
    MAX_OVER = "max over"
    MEAN_OVER = "mean over"
    LSE_OVER = "logsumexp over"
    # x at the real steps of an index and -inf at its padded ones (`keep` [B, 1] true at
    # the real ones), so that softmax over t, exp(x - logsumexp over t (x)), weighs a
    # padded step 0 whatever x holds there (graph/folded.softmax_over)
    REAL_STEPS = "at the real steps"
    # losses: per-example values [B] for one step
    XENT = "xent"
    BCE = "bce"
    MSE = "mse"
    # rows of a batch, for values of other shapes meeting (executors only, no syntax):
    # a tree node reads its example's row of a per-example value, a per-example value
    # gathers each tree's root
    TAKE = "take rows"    # x[rows]: `rows` an attribute
    STACK = "stack rows"  # the arguments' rows, one after the other


ELEMENTWISE_BINARY = (Op.ADD, Op.SUB, Op.MUL, Op.DIV)
ELEMENTWISE_UNARY = (Op.NEG, Op.TANH, Op.SIGMOID, Op.RELU, Op.EXP, Op.LOG, Op.SOFTPLUS)
LOSSES = (Op.XENT, Op.BCE, Op.MSE)
REDUCTIONS = {"sum": Op.SUM_OVER, "max": Op.MAX_OVER, "mean": Op.MEAN_OVER,
              "logsumexp": Op.LSE_OVER}
FUNCTIONS = {"tanh": Op.TANH, "sigmoid": Op.SIGMOID, "relu": Op.RELU, "exp": Op.EXP,
             "log": Op.LOG, "softplus": Op.SOFTPLUS, "softmax": Op.SOFTMAX,
             "dropout": Op.DROPOUT, "bilinear": Op.BILINEAR}
LOSS_NAMES = {"xent": Op.XENT, "bce": Op.BCE, "mse": Op.MSE}


@dataclass
class Ctx:
    """What a forward pass may depend on besides its arguments."""
    train: bool = False
    rng: np.random.Generator | None = None


# ------------------------------------------------------------------ numerics helpers
def sigmoid(x):
    # split by sign so that exp never overflows
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def log_softmax(o):
    m = o.max(axis=-1, keepdims=True)
    z = o - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(o):
    z = np.exp(o - o.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def onehot(ids, n, dtype):
    out = np.zeros((ids.shape[0], n), dtype=dtype)
    ok = ids >= 0
    out[np.nonzero(ok)[0], ids[ok]] = 1
    return out


def gather_cols(W, ids):
    """Columns W[:, ids] as rows [B, m]; id -1 gives a zero row."""
    ok = ids >= 0
    out = W.T[np.where(ok, ids, 0)]
    return out * ok[:, None].astype(W.dtype)


def unbroadcast(g, shape):
    """Sum a gradient back down to the shape of the operand that was broadcast."""
    if np.shape(g) == tuple(shape):
        return g
    if len(shape) == 0:
        return None  # a number: no gradient
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


# ---------------------------------------------------------------------- forward/VJP
def concat(*xs):
    """[a; b] along the last axis; a part with no batch axis (`[W @ x[t]; b]`, b a
    parameter) is broadcast to the others' rows."""
    lead = np.broadcast_shapes(*(np.shape(x)[:-1] for x in xs))
    return np.concatenate([np.broadcast_to(x, lead + np.shape(x)[-1:]) for x in xs],
                          axis=-1)


def _concat_vjp(g, out, saved, xs):
    cuts = np.cumsum([x.shape[-1] for x in xs])[:-1]
    return tuple(unbroadcast(d, np.shape(x))
                 for d, x in zip(np.split(g, cuts, axis=-1), xs, strict=True))


def _take_vjp(g, out, rows, xs):
    dx = np.zeros(np.shape(xs[0]), dtype=g.dtype)
    np.add.at(dx, rows, g)
    return (dx,)


def _stack_vjp(g, out, saved, xs):
    cuts = np.cumsum([len(x) for x in xs])[:-1]
    return tuple(np.split(g, cuts, axis=0))


def _gather_vjp(g, out, saved, xs):
    W, ids = xs
    ok = ids >= 0
    dWT = np.zeros((W.shape[1], W.shape[0]), dtype=g.dtype)
    np.add.at(dWT, ids[ok], g[ok])
    return dWT.T, None


def _dropout_fwd(ctx, x, p):
    if not ctx.train or p <= 0:
        return x, None
    mask = (ctx.rng.random(x.shape) >= p).astype(x.dtype) / (1.0 - p)
    return x * mask, mask


def _xent_fwd(ctx, o, y):
    ok = y >= 0
    lp = log_softmax(o)
    loss = -lp[np.arange(len(y)), np.where(ok, y, 0)]
    return np.where(ok, loss, 0.0).astype(o.dtype), None


def _xent_vjp(g, out, saved, xs):
    o, y = xs
    ok = y >= 0
    d = softmax(o)
    d[np.nonzero(ok)[0], y[ok]] -= 1
    return d * (g * ok)[:, None], None


def _bce_fwd(ctx, o, y):
    # -y log s(o) - (1-y) log(1-s(o)) = softplus(o) - y o, summed over components
    return (np.logaddexp(0, o) - y * o).sum(axis=-1), None


def _mse_fwd(ctx, o, y):
    return 0.5 * ((o - y) ** 2).sum(axis=-1), None


# rows [B, n], or one value with no batch axis [n] (made of parameters alone): `...`
def _bilinear_fwd(ctx, T, a, b):
    return np.einsum("kij,...i,...j->...k", T, a, b, optimize=True), None


def _bilinear_vjp(g, out, saved, xs):
    T, a, b = xs
    return (np.einsum("...k,...i,...j->kij", g, a, b, optimize=True),
            np.einsum("...k,kij,...j->...i", g, T, b, optimize=True),
            np.einsum("...k,kij,...i->...j", g, T, a, optimize=True))


def _stack(xs, mask):
    """The steps as one [T, B, n] array (B or n 1 where every example reads one value: a
    number, a parameter) and the mask of the real steps [T, B, 1]. The steps may differ
    in shape: softmax over t (1) reads 1 at a step every example has, [B, 1] at one
    some pad (REAL_STEPS)."""
    shape = np.broadcast_shapes(*(np.shape(a) for a in xs))
    shape = (1,) * (2 - len(shape)) + shape           # a number or a vector: one row
    x = np.stack([np.broadcast_to(a, shape) for a in xs])                # [T, B, n]
    m = np.ones(x.shape[:2], dtype=bool) if mask is None else np.asarray(mask, bool)
    return x, m[:, :, None]


# Each reduction saves the weights w_t of its local linearisation, d out = sum_t w_t dx_t,
# which are 0 at padded steps; its VJP is then g * w_t for every step.
def _sum_over(ctx, *xs, mask=None):
    x, m = _stack(xs, mask)
    w = m.astype(x.dtype)
    return (x * w).sum(axis=0), w


def _mean_over(ctx, *xs, mask=None):
    x, m = _stack(xs, mask)
    w = (m / m.sum(axis=0)).astype(x.dtype)      # (a bool mask divides in float64)
    return (x * w).sum(axis=0), w


def _max_over(ctx, *xs, mask=None):
    x, m = _stack(xs, mask)
    z = np.where(m, x, -np.inf)
    first = z.argmax(axis=0)          # the gradient flows to the first maximum
    w = (np.arange(len(xs))[:, None, None] == first).astype(x.dtype)
    return z.max(axis=0), w


def _lse_over(ctx, *xs, mask=None):
    # log sum_t exp(x_t) over the real steps: the normaliser of softmax over t; its
    # weights are that softmax
    x, m = _stack(xs, mask)
    z = np.where(m, x, -np.inf)
    top = z.max(axis=0)
    out = top + np.log(np.exp(z - top).sum(axis=0))
    return out, np.exp(z - out)


def _over_vjp(g, y, w, xs):
    return tuple(g * w[t] for t in range(len(xs)))


def _real_steps(ctx, x, keep):
    return np.where(keep, x, -np.inf).astype(np.result_type(x), copy=False), keep


def _plain(f):
    """A forward that saves nothing."""
    return lambda ctx, *xs, **kw: (f(*xs, **kw), None)


# ------------------------------------------------------------------------ shape rules
def _same(S, out, args):
    """Elementwise: every vector argument has the output's size; numbers broadcast."""
    vecs = [a for a in args if len(a) == 1]
    for a in vecs:
        S.eq(out[0], a[0])


def _matmul(S, out, args):
    (m, n), (v,) = args
    S.eq(n, v)
    S.eq(out[0], m)


def _dot(S, out, args):
    (v,), (x,) = args
    S.eq(v, x)


def _concat(S, out, args):
    S.sum(out[0], [a[0] for a in args])


def _bilinear(S, out, args):
    (k, i, j), (a,), (b,) = args
    S.eq(i, a)
    S.eq(j, b)
    S.eq(out[0], k)


def _loss(S, out, args):
    (o,), (y,) = args
    S.eq(o, y)


@dataclass(frozen=True)
class OpDef:
    """One row of the table.

    ranks  the rank each argument must have: 0 a number, 1 a vector, 2 a matrix,
           3 a tensor, None a number or a vector. A parameter takes the rank of its place.
    out    the rank of the result: 1 a vector, 0 one number per example (a dot product,
           a loss), None the largest rank of its arguments (elementwise ops: a number
           times a number is a number). Per-example numbers run as arrays [B, 1].
    """
    op: Op
    ranks: tuple
    out: int
    shape: Callable
    fwd: Callable
    vjp: Callable


def _outer_rows(g, v):
    """dW of y = W @ v: sum over rows of g v^T, [B, m] x [B, n] -> [m, n]; a value with
    no batch axis (an init value made of parameters alone) is one row, g v^T itself."""
    return np.outer(g, v) if np.ndim(g) == 1 and np.ndim(v) == 1 else g.T @ v


def _unary(op, f, df):
    """df(g, x, y) is the VJP of y = f(x)."""
    return OpDef(op, (None,), None, _same, _plain(f),
                 lambda g, y, s, xs: (df(g, xs[0], y),))


TABLE: dict[Op, OpDef] = {d.op: d for d in [
    OpDef(Op.MATMUL, (2, 1), 1, _matmul, _plain(lambda W, v: v @ W.T),
          lambda g, y, s, xs: (_outer_rows(g, xs[1]), g @ xs[0])),
    OpDef(Op.GATHER, (2, 1), 1, _matmul, _plain(gather_cols), _gather_vjp),
    OpDef(Op.DOT, (1, 1), 0, _dot, _plain(lambda v, x: (x * v).sum(axis=-1, keepdims=True)),
          lambda g, y, s, xs: (g * xs[1], g * xs[0])),
    OpDef(Op.BILINEAR, (3, 1, 1), 1, _bilinear, _bilinear_fwd, _bilinear_vjp),
    OpDef(Op.ADD, (None, None), None, _same, _plain(lambda a, b: a + b),
          lambda g, y, s, xs: (g, g)),
    OpDef(Op.SUB, (None, None), None, _same, _plain(lambda a, b: a - b),
          lambda g, y, s, xs: (g, -g)),
    OpDef(Op.MUL, (None, None), None, _same, _plain(lambda a, b: a * b),
          lambda g, y, s, xs: (g * xs[1], g * xs[0])),
    OpDef(Op.DIV, (None, None), None, _same, _plain(lambda a, b: a / b),
          lambda g, y, s, xs: (g / xs[1], -g * xs[0] / (np.asarray(xs[1]) ** 2))),
    _unary(Op.NEG, lambda x: -x, lambda g, x, y: -g),
    _unary(Op.TANH, np.tanh, lambda g, x, y: g * (1 - y * y)),
    _unary(Op.SIGMOID, sigmoid, lambda g, x, y: g * y * (1 - y)),
    _unary(Op.RELU, lambda x: np.maximum(x, 0), lambda g, x, y: g * (x > 0)),
    _unary(Op.EXP, np.exp, lambda g, x, y: g * y),
    _unary(Op.LOG, np.log, lambda g, x, y: g / x),
    _unary(Op.SOFTPLUS, lambda x: np.logaddexp(0, x), lambda g, x, y: g * sigmoid(x)),
    _unary(Op.SOFTMAX, softmax,
           lambda g, x, y: y * (g - (g * y).sum(axis=-1, keepdims=True))),
    OpDef(Op.DROPOUT, (None,), None, _same, _dropout_fwd,
          lambda g, y, s, xs: (g if s is None else g * s,)),
    OpDef(Op.CONCAT, (), 1, _concat, _plain(concat), _concat_vjp),
    OpDef(Op.ONEHOT, (1,), 1, _same,
          _plain(lambda ids, size, dtype: onehot(ids, size, dtype)),
          lambda g, y, s, xs: (None,)),
    OpDef(Op.SUM_OVER, (None,), None, _same, _sum_over, _over_vjp),
    OpDef(Op.MEAN_OVER, (None,), None, _same, _mean_over, _over_vjp),
    OpDef(Op.MAX_OVER, (None,), None, _same, _max_over, _over_vjp),
    OpDef(Op.LSE_OVER, (None,), None, _same, _lse_over, _over_vjp),
    OpDef(Op.REAL_STEPS, (None,), None, _same, _real_steps,
          lambda g, y, keep, xs: (np.where(keep, g, 0),)),
    OpDef(Op.TAKE, (None,), None, _same,
          lambda ctx, x, rows: (np.asarray(x)[rows], rows), _take_vjp),
    OpDef(Op.STACK, (), None, _same, _plain(lambda *xs: np.concatenate(xs, axis=0)),
          _stack_vjp),
    OpDef(Op.XENT, (1, 1), 0, _loss, _xent_fwd, _xent_vjp),
    OpDef(Op.BCE, (1, 1), 0, _loss, _bce_fwd,
          lambda g, y, s, xs: (g[:, None] * (sigmoid(xs[0]) - xs[1]), None)),
    OpDef(Op.MSE, (1, 1), 0, _loss, _mse_fwd,
          lambda g, y, s, xs: (g[:, None] * (xs[0] - xs[1]), None)),
]}

assert set(TABLE) == set(Op), "every op needs its row in the table"


def forward(op: Op, ctx: Ctx, args, attrs=()):
    """Apply an op: returns (value, saved) where `saved` is what its VJP needs."""
    return TABLE[op].fwd(ctx, *args, **dict(attrs))


def _no_grad(a) -> bool:
    """Numbers and ids have no gradient."""
    return np.ndim(a) == 0 or (isinstance(a, np.ndarray) and a.dtype.kind in "iub")


def vjp(op: Op, g, out, saved, args):
    """Gradients of the arguments, each summed back to its argument's shape."""
    grads = TABLE[op].vjp(g, out, saved, args)
    return tuple(None if d is None or _no_grad(a) else unbroadcast(d, np.shape(a))
                 for d, a in zip(grads, args, strict=True))
