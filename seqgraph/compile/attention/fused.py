"""Fused kernels of an attention step: the additive score `v @ tanh(p + q)`, the softmax
over the source index and the context `sum over t (a[u, t] * h[t])`, each one Numba pass
forward and one backward instead of a chain of numpy passes over [T, B, A] temporaries.

The source is generated per dtype with the generated loops' own `_tanh` (codegen.HELPERS:
float32's vectorises, float64's is exact to a few ulps) and imported through the kernel
cache (kernels.load_source), so Numba compiles it once per machine.

Shapes: R the steps of the reduced (source) index, B the batch, A or N the features; every
array C-contiguous (the callers make them so).
"""
from __future__ import annotations

from .. import kernels
from ..codegen import HELPERS

SOURCE = '''

@njit(error_model="numpy", fastmath=FAST, cache=True, nogil=True)
def score_fwd(p, q, v, y, sc):
    """y[r, b] = tanh(p[b] + q[r, b]) and sc[r, b] = y[r, b] . v."""
    R, B, A = q.shape
    for r in range(R):
        for b in range(B):
            pb, qb, yb = p[b], q[r, b], y[r, b]
            acc = ZERO
            for k in range(A):
                t = _tanh(pb[k] + qb[k])
                yb[k] = t
                acc += t * v[k]
            sc[r, b] = acc


@njit(error_model="numpy", fastmath=FAST, cache=True, nogil=True)
def score_bwd(g, y, v, dq, add, dp, dv):
    """From g[r, b], the score's gradient: d = g v (1 - y^2), the gradient of p + q;
    dq = d (dq += d when `add`), dp[b] = sum over r of d, dv = sum over r, b of g y."""
    R, B, A = y.shape
    dp[:] = ZERO
    dv[:] = ZERO
    for r in range(R):
        for b in range(B):
            gb, yb, dqb, dpb = g[r, b], y[r, b], dq[r, b], dp[b]
            for k in range(A):
                yk = yb[k]
                d = gb * v[k] * (ONE - yk * yk)
                if add:
                    dqb[k] += d
                else:
                    dqb[k] = d
                dpb[k] += d
                dv[k] += gb * yk


@njit(error_model="numpy", cache=True, nogil=True)
def softmax_fwd(x, n, a):
    """a[r, b] = exp(x[r, b] - lse[b]) at the real steps r < n[b], lse their logsumexp;
    0 at padded steps (graph/folded.softmax_over)."""
    R, B = x.shape
    for b in range(B):
        top = -np.inf
        for r in range(n[b]):
            top = max(top, x[r, b])
        tot = ZERO
        for r in range(n[b]):
            tot += math.exp(x[r, b] - top)
        lse = top + math.log(tot)
        for r in range(R):
            a[r, b] = math.exp(x[r, b] - lse) if r < n[b] else ZERO


@njit(error_model="numpy", cache=True, nogil=True)
def softmax_bwd(g, a, dx):
    """dx = a (g - sum over r of g a): the reverse of a softmax (0 at padded steps, as
    a is)."""
    R, B = g.shape
    for b in range(B):
        tot = ZERO
        for r in range(R):
            tot += g[r, b] * a[r, b]
        for r in range(R):
            dx[r, b] = a[r, b] * (g[r, b] - tot)


@njit(error_model="numpy", fastmath=FAST, cache=True, nogil=True)
def contract_fwd(p, q, w, out):
    """out[b] = sum over r of p[r, b] w[r, b] q[r, b]."""
    R, B, N = q.shape
    out[:] = ZERO
    for r in range(R):
        for b in range(B):
            c = p[r, b] * w[r, b]
            qb, ob = q[r, b], out[b]
            for k in range(N):
                ob[k] += c * qb[k]


@njit(error_model="numpy", fastmath=FAST, cache=True, nogil=True)
def contract_bwd(g, p, q, w, dp, dq, add):
    """dp[r, b] = w[r, b] g[b] . q[r, b]; dq[r, b] = g[b] p[r, b] w[r, b] (added into
    dq when `add`)."""
    R, B, N = q.shape
    for r in range(R):
        for b in range(B):
            gb, qb, dqb = g[b], q[r, b], dq[r, b]
            wb = w[r, b]
            c = p[r, b] * wb
            acc = ZERO
            for k in range(N):
                acc += gb[k] * qb[k]
                if add:
                    dqb[k] += gb[k] * c
                else:
                    dqb[k] = gb[k] * c
            dp[r, b] = acc * wb
'''

_MODS: dict = {}


def module(dtype):
    """The kernels for one dtype (float32 or float64)."""
    name = str(dtype)
    mod = _MODS.get(name)
    if mod is None:
        head = ["import math", "import numpy as np", "from numba import njit",
                HELPERS[name], f"FAST = {name == 'float32'}"]
        mod = _MODS[name] = kernels.load_source("\n".join(head) + SOURCE)
    return mod
