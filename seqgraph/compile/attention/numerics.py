"""Numerics on values with axes: broadcasting and its reverse, products, einsum, and the
elementwise forwards and gradients."""
from __future__ import annotations

import numpy as np

from ... import ops
from ...ops import Op
from .. import kernels


def _align(a, frm, to):
    """A value with axes `frm` reshaped for broadcasting against axes `to` (a size-1
    axis for each one it lacks); numbers and parameters broadcast as they are."""
    if frm is None or frm == to:
        return a
    lead = len(frm)
    shape = [a.shape[frm.index(x)] if x in frm else 1 for x in to] + list(a.shape[lead:])
    return a.reshape(shape)


def _sum_to(g, shape):
    """g summed down to `shape` (the reverse of numpy broadcasting)."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    ax = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if ax:
        g = g.sum(axis=ax, keepdims=True)
    return g


def _back(g, a, frm, to):
    """The gradient of a value `a` (axes frm) from g of its aligned broadcast (axes to)."""
    if frm is None:
        if np.ndim(a) == 0:
            return None
        return _sum_to(g, np.shape(a))
    return _sum_to(g, _align(a, frm, to).shape).reshape(a.shape)


def _rows(a):
    a = np.ascontiguousarray(a)
    return a.reshape(-1, a.shape[-1])


def _product(x, W, out=None):
    """x [M, K] @ W [K, N], both C-contiguous, into out [M, N] (C-contiguous, or None):
    for a batch of rows (a step's product) in column blocks that OpenBLAS runs on its
    small-matrix path (kernels.blocks)."""
    M, K = x.shape
    N = W.shape[1]
    if 0 < M <= 128 and M * N * K > kernels.SMALL_GEMM and x.dtype == W.dtype and \
            x.flags.c_contiguous and W.flags.c_contiguous:
        if out is None:
            out = np.empty((M, N), x.dtype)
        nb, kb = kernels.blocks(M, N, K)
        kernels.mm_blocks(M, N, K, x, 0, K, W, 0, N, out, 0, N, 0.0, nb, kb)
        return out
    return kernels.matmul(x, W, out=out)


def _einsum(spec, *xs, out_shape=None):
    """np.einsum, and a result broadcast to `out_shape` over output labels that no
    operand has (a gradient that is the same at every step of an index)."""
    ins, out = spec.split("->")
    have = set(ins.replace(",", ""))
    keep = "".join(c for c in out if c in have)
    r = np.einsum(f"{ins}->{keep}", *xs)
    if keep != out:
        r = r.reshape([r.shape[keep.index(c)] if c in keep else 1 for c in out])
        r = np.broadcast_to(r, out_shape)
    return r


def _sigmoid(xs, out, f32):
    if f32:                       # as the generated loops (codegen): through tanh
        r = np.multiply(xs[0], 0.5, out=out)
        np.tanh(r, out=r)
        r *= 0.5
        r += 0.5
        return r
    r = ops.sigmoid(xs[0])              # the interpreter's own (stable) sigmoid
    if out is None:
        return r
    np.copyto(out, r)
    return out


def _ufunc(f, *const):
    return lambda xs, out, f32: f(*xs, *const, out=out)


# elementwise forwards into `out` (None: a new array)
_EW = {Op.ADD: _ufunc(np.add), Op.SUB: _ufunc(np.subtract), Op.MUL: _ufunc(np.multiply),
       Op.DIV: _ufunc(np.divide), Op.NEG: _ufunc(np.negative), Op.TANH: _ufunc(np.tanh),
       Op.SIGMOID: _sigmoid, Op.EXP: _ufunc(np.exp), Op.RELU: _ufunc(np.maximum, 0),
       Op.LOG: _ufunc(np.log), Op.SOFTPLUS: lambda xs, out, f32: np.logaddexp(
           0, xs[0], out=out)}

def _dtanh(g, y):
    d = np.multiply(y, y)             # g * (1 - y^2), one array
    np.subtract(1, d, out=d)
    d *= g
    return d


def _dsigmoid(g, y):
    d = np.subtract(1, y)             # g * y * (1 - y), one array
    d *= y
    d *= g
    return d


# the gradients of the (aligned) arguments, broadcast as the output: (g, y, xs)
_EW_VJP = {
    Op.ADD: lambda g, y, xs: (g, g),
    Op.SUB: lambda g, y, xs: (g, -g),
    Op.MUL: lambda g, y, xs: (g * xs[1], g * xs[0]),
    Op.DIV: lambda g, y, xs: (g / xs[1], -g * xs[0] / (np.asarray(xs[1]) ** 2)),
    Op.NEG: lambda g, y, xs: (-g,),
    Op.TANH: lambda g, y, xs: (_dtanh(g, y),),
    Op.SIGMOID: lambda g, y, xs: (_dsigmoid(g, y),),
    Op.EXP: lambda g, y, xs: (g * y,),
    Op.RELU: lambda g, y, xs: (g * (xs[0] > 0),),
    Op.LOG: lambda g, y, xs: (g / xs[0],),
    Op.SOFTPLUS: lambda g, y, xs: (g * ops.sigmoid(xs[0]),),
}
