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
from ..graph.folded import ENDS, Apply, Num, ParamRef, Ref, ShiftKind
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

    def __init__(self, model, params, B, lengths, carry, pool=None):
        self.m, self.g = model, model.graph
        self.pool = pool or kernels.Pool()
        self.ex_len = {}          # index -> each example's length [B] (padded batches)
        self.params, self.B, self.lengths = params, B, lengths
        self.carry = carry or {}
        self.vals = {}            # var -> V
        self.inits = {}           # var -> [B, n] init value (vars with `init`)
        self.gvals = {}           # var -> gradient array, like vals
        self.gdest = {}           # var -> where its gradient may be written (a loop's
                                  # gradient tape), while it has none yet
        self.ginits = {}          # var -> gradient of its init value
        self.gparams = {}

    def T(self, var):
        return self.lengths[self.g.var(var).index]

    def dest(self, sub, shape, dtype):
        """An output array for the whole gradient of the read `sub` ([T*B, n] rows), in
        the variable's gradient tape when the loop that made it offered one (`gdest`)
        and nothing has added to it yet; else a pooled array."""
        if isinstance(sub, Ref) and sub.shift.kind == ShiftKind.REL and sub.shift.k == 0 and \
                sub.var not in self.gvals:
            d = self.gdest.get(sub.var)
            if d is not None and d.dtype == dtype and d.size == shape[0] * shape[1]:
                return d.reshape(shape)
        return self.pool.empty(shape, dtype)

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
    n = env.ex_len.get(env.g.var(var).index) if k > 0 else None
    if n is not None:
        # padding: a read past an example's own end gives what stands after the end
        after, _ = env.outside(var, 1, False)
        after = np.broadcast_to(np.asarray(after), src.shape[1:])
        for t in range(max(T - k, 0)):
            dead = t + k >= n
            if dead.any():
                out[t][dead] = after[dead]
    return out, init_rows


def read(env: Env, r: Ref):
    v = env.g.var(r.var)
    s = r.shift
    val = env.vals[r.var]
    if s.kind == ShiftKind.NONE or v.index is None:
        return V(val.a, "ex")
    if s.kind == ShiftKind.FIRST:
        return V(val.a[0], "ex")
    if s.kind == ShiftKind.END:
        n = env.ex_len.get(v.index)
        if n is not None:       # each example's own last step
            return V(val.a[n - 1, np.arange(len(n))], "ex")
        return V(val.a[-1], "ex")
    a, _ = shifted(env, r.var, s.k)
    return V(a, "seq")


def read_back(env: Env, r: Ref, g):
    """The reverse of `read`: g (like the read value) into the variable's gradient."""
    v = env.g.var(r.var)
    if v.is_ids:
        return
    s = r.shift
    if s.kind == ShiftKind.NONE or v.index is None:
        env.add_grad(r.var, g)
        return
    T = env.T(r.var)
    if s.kind in ENDS:
        full = np.zeros((T,) + g.shape, g.dtype)
        n = env.ex_len.get(v.index)
        if s.kind == ShiftKind.END and n is not None:
            full[n - 1, np.arange(len(n))] = g
        else:
            full[0 if s.kind == ShiftKind.FIRST else -1] = g
        env.add_grad(r.var, full)
        return
    if s.k == 0:
        env.add_grad(r.var, g)
        return
    full = np.zeros_like(g)
    n = env.ex_len.get(v.index) if s.k > 0 else None
    for t in range(T):
        j = t + s.k
        if 0 <= j < T and n is not None and (j >= n).any():
            # padding: past this example's end the read gave the value after the end
            dead = j >= n
            full[j][~dead] += g[t][~dead]
            if r.var in env.inits:
                _, is_init = env.outside(r.var, 1, False)
                if is_init:
                    gd = np.where(dead.reshape((-1,) + (1,) * (g.ndim - 2)), g[t], 0)
                    gi = env.ginits.get(r.var)
                    env.ginits[r.var] = gd if gi is None else gi + gd
        elif 0 <= j < T:
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

    def __init__(self, env: Env, expr, ctx_index, T=None, draw=None):
        self.env, self.expr, self.ctx = env, expr, ctx_index
        self.T = T
        self.tape = []           # (expr, args [V], out V)
        self.draw = draw         # draw(e): the masks of dropout e (training)
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
            return read(env, e)
        if _affine(e, env):
            return self.affine(e)
        args = [self.ev(a) for a in e.args]
        leads = [a.lead for a in args if a.lead is not None]
        lead = "seq" if "seq" in leads else ("ex" if leads else None)
        if e.op is Op.DROPOUT and self.draw is not None and self.T is not None:
            lead = "seq"         # a mask per step, even for a value per example
        if lead == "seq" and self.T is None:
            self.T = next(a.a.shape[0] for a in args if a.lead == "seq")
        xs = [self.rows(a, lead) for a in args]
        op = e.op
        pool = env.pool
        if op is Op.MATMUL and lead is not None:
            out = kernels.matmul(xs[1], xs[0].T, out=pool.empty(
                (xs[1].shape[0], xs[0].shape[0]), xs[1].dtype) if xs[1].ndim == 2 else None)
        elif op is Op.GATHER:
            out = kernels.gather(xs[0], xs[1], pool=pool)
        elif op is Op.ONEHOT:
            out = ops.onehot(xs[0], env.m.sizes[e.args[0].var], env.m.dtype)
        elif op is Op.DROPOUT and self.draw is not None:       # training
            mask = self.draw(e)
            out, xs = xs[0] * mask, [xs[0], mask]
        elif op is Op.DROPOUT:
            out = xs[0]          # evaluation mode
        else:
            out, _ = ops.forward(op, ops.Ctx(), xs, e.attrs)
        if lead == "seq":
            out = out.reshape((self.T, -1) + out.shape[1:])
        res = V(out, lead)
        self.tape.append((e, args, res, xs))
        return res

    def affine(self, e) -> V:
        """`W @ x + b` (or `b + W @ x`): the product (a GEMM or a gather), then the bias
        added in place: no second array, no second numpy pass."""
        prod, bias = (e.args[0], e.args[1]) if isinstance(e.args[1], ParamRef) else \
            (e.args[1], e.args[0])
        inner = self.ev(prod)
        kernels.add_bias(inner.a.reshape(-1, inner.a.shape[-1]), self.env.params[bias.name])
        res = V(inner.a, inner.lead)
        self.tape.append((e, ("affine", inner, bias.name), res, None))
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
            if isinstance(args, tuple) and args and args[0] == "affine":
                _, inner, bias = args
                env.add_pgrad(bias, kernels.colsum(go))
                grads[id(inner)] = go
                continue
            gr = go.reshape((-1,) + go.shape[2:]) if lead == "seq" else go
            op = e.op
            if op is Op.MATMUL and lead is not None:
                W, v = xs
                g2, pool = _2d(gr), env.pool
                ds = (kernels.matmul(g2.T, _2d(v), out=pool.empty(W.shape, W.dtype)),
                      kernels.matmul(gr, W, out=env.dest(e.args[1], (gr.shape[0],
                                                                      W.shape[1]), W.dtype))
                      if gr.ndim == 2 else kernels.matmul(gr, W))
            elif op is Op.GATHER:
                ds = (kernels.scatter(gr, xs[1], xs[0].shape), None)
            elif op is Op.ONEHOT:
                ds = (None,)
            elif op is Op.DROPOUT:
                ds = (gr if len(xs) == 1 else gr * xs[1],)        # xs[1]: the mask
            else:
                ds = ops.vjp(op, gr, self.rows(out, lead), None, xs)
            for sub, a, d in zip(e.args, args, ds, strict=True):
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


def _affine(e, env) -> bool:
    """Is e `P @ x + b` with a vector parameter b (either order)?"""
    if not isinstance(e, Apply) or e.op is not Op.ADD:
        return False
    a, b = e.args
    if isinstance(a, ParamRef):
        a, b = b, a
    return (isinstance(b, ParamRef) and env.params[b.name].ndim == 1 and
            isinstance(a, Apply) and a.op in (Op.MATMUL, Op.GATHER) and
            env.params[a.args[0].name].shape[0] == env.params[b.name].shape[0])


def _2d(a):
    return a if a.ndim == 2 else a.reshape(a.shape[0], -1)
