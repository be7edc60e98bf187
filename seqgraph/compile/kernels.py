"""Fixed Numba kernels (products, lookups, the fused softmax cross-entropy) and the disk
cache of generated kernels.

Every product goes through `np.dot` inside njit code, so all BLAS calls of the compiled
executor use one OpenBLAS (the one Numba links through scipy), never two thread pools.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys

import numpy as np
from numba import njit


# ------------------------------------------------------------------------- products
@njit(cache=True)
def _dot(a, b, out):
    np.dot(a, b, out)


def matmul(a, b):
    """a @ b through Numba's BLAS (both 2-D, any of C or F order)."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    if a.shape[0] == 0 or b.shape[1] == 0:
        return out
    if a.shape[1] == 0:
        out[:] = 0
        return out
    _dot(_c_or_f(a), _c_or_f(b), out)
    return out


def _c_or_f(a):
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return a
    return np.ascontiguousarray(a)


# -------------------------------------------------------------------------- lookups
@njit(cache=True)
def _gather(WT, ids, out):
    # out[r] = W[:, ids[r]] (a zero row for id -1): the one-hot product as a lookup
    n = out.shape[1]
    for r in range(ids.shape[0]):
        i = ids[r]
        if i >= 0:
            for k in range(n):
                out[r, k] = WT[i, k]
        else:
            for k in range(n):
                out[r, k] = 0


def gather(W, ids):
    out = np.empty((ids.shape[0], W.shape[0]), dtype=W.dtype)
    _gather(np.ascontiguousarray(W.T), np.ascontiguousarray(ids), out)
    return out


@njit(cache=True)
def _scatter(g, ids, dWT):
    # the VJP of the lookup: rows of g added into the columns they were read from
    n = g.shape[1]
    for r in range(ids.shape[0]):
        i = ids[r]
        if i >= 0:
            for k in range(n):
                dWT[i, k] += g[r, k]


def scatter(g, ids, shape):
    dWT = np.zeros((shape[1], shape[0]), dtype=g.dtype)
    _scatter(np.ascontiguousarray(g), np.ascontiguousarray(ids), dWT)
    return dWT.T


# ---------------------------------------------------------------- softmax x-entropy
@njit(cache=True, error_model="numpy")
def _xent(o, y, scale, grad, want_grad):
    """Per-row softmax cross-entropy of logits o [N, V] against ids y [N] (-1: none);
    returns the summed loss and the count, and writes scale * (softmax - onehot)."""
    N, V = o.shape
    total = 0.0
    count = 0
    for r in range(N):
        t = y[r]
        if t < 0:
            if want_grad:
                for v in range(V):
                    grad[r, v] = 0
            continue
        m = o[r, 0]
        for v in range(1, V):
            m = max(m, o[r, v])
        s = o[r, 0] * 0      # the accumulator in the logits' dtype
        if want_grad:
            for v in range(V):
                e = np.exp(o[r, v] - m)
                grad[r, v] = e
                s += e
        else:
            for v in range(V):
                s += np.exp(o[r, v] - m)
        total += np.log(s) + m - o[r, t]
        count += 1
        if want_grad:
            f = scale / s
            for v in range(V):
                grad[r, v] *= f
            grad[r, t] -= scale
    return total, count


def xent(o, y, scale, want_grad=True):
    o = np.ascontiguousarray(o)
    grad = np.empty_like(o) if want_grad else np.empty((1, 1), o.dtype)
    total, count = _xent(o, np.ascontiguousarray(y), scale, grad, want_grad)
    return total, count, (grad if want_grad else None)


@njit(cache=True, fastmath=True)
def adam_update(p, g, m, v, lr, b1, b2, eps, c1, c2):
    """One Adam step in one pass (bias corrections c1 = 1 - b1^t, c2 = 1 - b2^t)."""
    pf = p.ravel()
    gf = g.ravel()
    mf = m.ravel()
    vf = v.ravel()
    for i in range(pf.size):
        gi = gf[i]
        mi = b1 * mf[i] + (1 - b1) * gi
        vi = b2 * vf[i] + (1 - b2) * gi * gi
        mf[i] = mi
        vf[i] = vi
        pf[i] -= lr * (mi / c1) / (np.sqrt(vi / c2) + eps)


# ------------------------------------------------------------- generated kernels
def cache_dir() -> str:
    d = os.environ.get("SEQGRAPH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "seqgraph")
    os.makedirs(d, exist_ok=True)
    return d


_MODULES: dict = {}


def load_source(source: str):
    """Import generated source from the cache dir, named by its hash, so that Numba's
    cache=True keeps the compiled kernels for the next process."""
    key = hashlib.sha256(source.encode()).hexdigest()[:20]
    if key in _MODULES:
        return _MODULES[key]
    d = cache_dir()
    name = f"sg_{key}"
    path = os.path.join(d, name + ".py")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    _MODULES[key] = mod
    return mod
