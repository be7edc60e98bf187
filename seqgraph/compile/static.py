"""Expressions evaluated for every step at once, forward and reverse.

A value is time-major: a sequence variable is [T, B, n] (ids [T, B]), a per-example one
[B, n] (ids [B]). An op of the table in ops.py works row by row, so an expression over
sequences runs on [T*B, n] rows: `W @ x[t]` for all t is one GEMM (or one gather for a
one-hot operand). Reads outside the sequence resolve exactly as the interpreter's
(`graph.unfold.resolve`): the carried state, else the `init` value, else zero or the start
token.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..graph.folded import Apply, Num, ParamRef, Ref
from ..ops import Op
from . import kernels


class V:
    """A value: `a` and its lead, 'seq' ([T, B, ...]) or 'ex' ([B, ...]); numbers and
    parameters have lead None."""
    __slots__ = ("a", "lead")

    def __init__(self, a, lead):
        self.a, self.lead = a, lead


class Env:
    """What an evaluation reads: values of variables, parameters, lengths, carry, inits."""

    def __init__(self, model, params, B, lengths, carry):
        self.m, self.g = model, model.graph
        self.params, self.B, self.lengths = params, B, lengths
        self.carry = carry or {}
        self.vals = {}            # var -> V
        self.inits = {}           # var -> [B, n] init value (vars with `init`)
        self.gvals = {}           # var -> gradient array, like vals
        self.ginits = {}          # var -> gradient of its init value
        self.gparams = {}

    def T(self, var):
        return self.lengths[self.g.var(var).index]

    def add_grad(self, var, g):
        cur = self.gvals.get(var)
        self.gvals[var] = g if cur is None else cur + g

    def add_pgrad(self, p, g):
        cur = self.gparams.get(p)
        self.gparams[p] = g if cur is None else cur + g

    def outside(self, var, steps, before):
        """The value a read `steps` before the start (or after the end) gives: [B, ...],
        and whether it is the init value (which takes a gradient)."""
        v = self.g.var(var)
        if before and var in self.carry and steps <= len(self.carry[var]):
            return np.asarray(self.carry[var][steps - 1]), False
        if var in self.inits:
            return self.inits[var], True
        return self.m.outside_value(v, self.B), False


# ----------------------------------------------------------------------------- reads
def shifted(env: Env, var: str, k: int):
    """var[t+k] for every t of var's own index: [T, B, ...] and the mask of the steps
    that read the init value."""
    src = env.vals[var].a
    T = src.shape[0]
    if k == 0:
        return src, None
    out = np.empty_like(src)
    init_rows = np.zeros(T, bool)
    for t in range(T):
        j = t + k
        if 0 <= j < T:
            out[t] = src[j]
        else:
            val, is_init = env.outside(var, -j if j < 0 else j - T + 1, j < 0)
            out[t] = val
            init_rows[t] = is_init
    return out, init_rows


def read(env: Env, r: Ref, ctx_index):
    v = env.g.var(r.var)
    s = r.shift
    val = env.vals[r.var]
    if s.kind == "none" or v.index is None:
        return V(val.a, "ex")
    if s.kind == "first":
        return V(val.a[0], "ex")
    if s.kind == "end":
        return V(val.a[-1], "ex")
    a, _ = shifted(env, r.var, s.k)
    return V(a, "seq")


def read_back(env: Env, r: Ref, g):
    """The reverse of `read`: g (like the read value) into the variable's gradient."""
    v = env.g.var(r.var)
    if v.is_ids:
        return
    s = r.shift
    if s.kind == "none" or v.index is None:
        env.add_grad(r.var, g)
        return
    T = env.T(r.var)
    if s.kind in ("first", "end"):
        full = np.zeros((T,) + g.shape, g.dtype)
        full[0 if s.kind == "first" else -1] = g
        env.add_grad(r.var, full)
        return
    if s.k == 0:
        env.add_grad(r.var, g)
        return
    full = np.zeros_like(g)
    for t in range(T):
        j = t + s.k
        if 0 <= j < T:
            full[j] += g[t]
        elif r.var in env.inits:
            _, is_init = env.outside(r.var, -j if j < 0 else j - T + 1, j < 0)
            if is_init:
                gi = env.ginits.get(r.var)
                env.ginits[r.var] = g[t].copy() if gi is None else gi + g[t]
    env.add_grad(r.var, full)


# ----------------------------------------------------------------------- evaluation
class Evaluation:
    """One expression evaluated in the context of an index (None: per example); keeps
    what its reverse pass needs."""

    def __init__(self, env: Env, expr, ctx_index, T=None):
        self.env, self.expr, self.ctx = env, expr, ctx_index
        self.T = T
        self.tape = []           # (expr, args [V], out V)
        self.out = self.ev(expr)

    def rows(self, x: V, lead):
        """x as rows [N, ...] for an op whose result has `lead`."""
        if x.lead is None:
            return x.a
        if lead == "seq" and x.lead == "ex":
            x = V(np.broadcast_to(x.a, (self.T,) + x.a.shape), "seq")
        if x.lead == "seq":
            return x.a.reshape((-1,) + x.a.shape[2:])
        return x.a

    def ev(self, e) -> V:
        env = self.env
        if isinstance(e, Num):
            return V(e.value, None)
        if isinstance(e, ParamRef):
            return V(env.params[e.name], None)
        if isinstance(e, Ref):
            return read(env, e, self.ctx)
        args = [self.ev(a) for a in e.args]
        leads = [a.lead for a in args if a.lead is not None]
        lead = "seq" if "seq" in leads else ("ex" if leads else None)
        if lead == "seq" and self.T is None:
            self.T = next(a.a.shape[0] for a in args if a.lead == "seq")
        xs = [self.rows(a, lead) for a in args]
        op = e.op
        if op is Op.MATMUL:
            out = kernels.matmul(xs[1], xs[0].T)
        elif op is Op.GATHER:
            out = kernels.gather(xs[0], xs[1])
        elif op is Op.ONEHOT:
            out = ops.onehot(xs[0], env.m.sizes[e.args[0].var], env.m.dtype)
        elif op is Op.DROPOUT:
            out = xs[0]          # evaluation mode (training with dropout is interpreted)
        else:
            out, _ = ops.forward(op, ops.Ctx(), xs, e.attrs)
        if lead == "seq":
            out = out.reshape((self.T, -1) + out.shape[1:])
        res = V(out, lead)
        self.tape.append((e, args, res, xs))
        return res

    def backward(self, g):
        """Gradients of the output g (like out.a) into env.gvals / gparams / ginits."""
        env = self.env
        grads = {id(self.out): g}
        root = self.expr
        if isinstance(root, Ref):
            read_back(env, root, g)
            return
        if isinstance(root, ParamRef):
            env.add_pgrad(root.name, g)
            return
        for e, args, out, xs in reversed(self.tape):
            go = grads.pop(id(out), None)
            if go is None:
                continue
            lead = out.lead
            gr = go.reshape((-1,) + go.shape[2:]) if lead == "seq" else go
            op = e.op
            if op is Op.MATMUL:
                W, v = xs
                ds = (kernels.matmul(_2d(gr).T, _2d(v)), kernels.matmul(gr, W))
            elif op is Op.GATHER:
                ds = (kernels.scatter(gr, xs[1], xs[0].shape), None)
            elif op is Op.ONEHOT:
                ds = (None,)
            elif op is Op.DROPOUT:
                ds = (gr,)
            else:
                ds = ops.vjp(op, gr, self.rows(out, lead), None, xs)
            for sub, a, d in zip(e.args, args, ds):
                if d is None or isinstance(sub, Num):
                    continue
                if a.lead == "ex" and lead == "seq":
                    d = d.reshape((self.T, -1) + d.shape[1:]).sum(axis=0)
                elif a.lead == "seq":
                    d = d.reshape((self.T, -1) + d.shape[1:])
                if isinstance(sub, ParamRef):
                    env.add_pgrad(sub.name, ops.unbroadcast(d, env.params[sub.name].shape))
                elif isinstance(sub, Ref):
                    read_back(env, sub, d)
                elif isinstance(sub, Apply):
                    key = id(a)
                    grads[key] = d if key not in grads else grads[key] + d


def _2d(a):
    return a if a.ndim == 2 else a.reshape(a.shape[0], -1)
