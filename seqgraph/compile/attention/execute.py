"""Execution: a program's forward values and saves, and its reverse (`_Exec`)."""
from __future__ import annotations

import numpy as np

from ... import ops
from ...ops import Op
from .. import kernels
from ..static import read
from . import fused
from .numerics import _EW, _EW_VJP, _align, _back, _einsum, _product, _rows, _sum_to

LETTERS = "abcdefghijklmnopqrstuvwxy"


class _Exec:
    """Runs programs in one batch: forward values and saves, reverse gradients."""

    def __init__(self, run, stage_built):
        self.env = run.env           # (not the run: a cycle would keep the buffers)
        self.pool = stage_built.pool
        self.steps, self.slot = 1, 0  # deferred products: how many steps, this one
        self.st = stage_built
        self.B, self.dt = run.B, run.m.dtype
        self.f32 = self.dt == np.float32
        self.lengths = run.lengths
        self.params = run.m.params
        self.letter = {ix: LETTERS[i] for i, ix in enumerate(stage_built.order)}
        self.masks = {}
        self.drops = run.masks       # this batch's dropout masks (None: evaluation)
        self.u = 0                   # the loop's step (a sliced dropout's masks)
        self.stacked = {}            # (program, gemm node) -> stacked weights
        self.pgrads = {}
        self.defer = {}              # (program, node) -> [node, param node, [(dG, x)]]
        self.st_nodes = []           # the nodes of the program running
        self.fk = fused.module(self.dt)
        self.sink = None             # sink(node): where its gradient may be added, or None

    # ------------------------------------------------------------- padding
    def weights(self, over, op):
        """The weights of a masked sum / mean over `over`: [L, B] (None: plain sum)."""
        key = (over, op)
        if key not in self.masks:
            n = self.env.ex_len.get(over)
            L = self.lengths[over]
            w = None
            if n is not None:
                w = (np.arange(L)[:, None] < n[None, :]).astype(self.dt)
                if op is Op.MEAN_OVER:
                    w = w / n[None, :].astype(self.dt)
            elif op is Op.MEAN_OVER:
                w = np.full((L, self.B), 1.0 / L, self.dt)
            self.masks[key] = w
        return self.masks[key]

    def mask(self, over):
        """The real (unpadded) steps of `over`: [L, B] bool, or None (no padding)."""
        key = (over, "mask")
        if key not in self.masks:
            n = self.env.ex_len.get(over)
            self.masks[key] = None if n is None else \
                np.arange(self.lengths[over])[:, None] < n[None, :]
        return self.masks[key]

    def labels(self, axes):
        return "".join(self.letter[a] for a in axes)

    # ------------------------------------------------------------- forward
    def forward(self, prog, hook=None, outs=None):
        """Every node's value (and what its reverse needs); `hook(node)` gives the values
        of the loop's leaves (state, hoist); `outs[node id]` where to write a value (a
        buffer kept from run to run: no fresh pages each step)."""
        vals, saved = [None] * len(prog.nodes), [None] * len(prog.nodes)
        grouped, at = prog.grouped, prog.group_at
        for n in prog.nodes:
            i = n.id
            if i in grouped:             # an elementwise group's member: run at its last
                if i in at:
                    self.fwd_group(at[i], vals, saved, hook, outs)
                continue
            vals[i], saved[i] = self.fwd(n, vals, hook, None if outs is None else outs[i])
        return vals, saved

    def fwd_group(self, grp, vals, saved, hook, outs):
        """An elementwise group (ewgroup.py) in one kernel, the values it stores written
        into their `outs` buffers when there are some; the members one by one when its
        inputs are not all [B, n], [n] or numbers."""
        nodes = self.st_nodes
        plan = grp.plan(vals, self.B, self.dt)
        if plan is None:
            for m in grp.members:
                vals[m], saved[m] = self.fwd(nodes[m], vals, hook,
                                             None if outs is None else outs[m])
            return
        ranks, N = plan
        shape = (self.B, N)
        xs = grp.arrays(vals, ranks)
        ys = []
        for m in grp.stored:
            o = None if outs is None else outs[m]
            ys.append(o if o is not None and o.shape == shape else np.empty(shape, self.dt))
        grp.kernel(self.dt, ranks)[0](*xs, *ys)
        for m, y in zip(grp.stored, ys, strict=True):
            vals[m] = y
        saved[grp.last] = _GroupRan(ranks, xs)

    def bwd_group(self, grp, vals, ran, grads):
        """The reverse of `fwd_group`: the gradients reaching the members from outside the
        group in, those of its inputs out (into `grads`)."""
        shape = vals[grp.stored[0]].shape
        gs = [grads.pop(m, None) for m in grp.exported]
        if all(g is None for g in gs):
            return
        zero = None
        for i, g in enumerate(gs):
            if g is None:
                if zero is None:
                    zero = np.zeros(shape, self.dt)
                gs[i] = zero
            elif g.shape != shape or g.dtype != self.dt:
                gs[i] = np.ascontiguousarray(np.broadcast_to(g, shape), self.dt)
        wide = [a for a, r in zip(grp.inputs, ran.ranks, strict=True) if r >= 2]
        DP = self.pool.empty((len(wide), shape[0] * shape[1] + _PAD), self.dt)
        small = [(a, np.zeros(shape[1] if r == 1 else 1, self.dt))
                 for a, r in zip(grp.inputs, ran.ranks, strict=True) if r in (0, 1)]
        grp.kernel(self.dt, ran.ranks)[1](*ran.xs, *(vals[m] for m in grp.stored), *gs, DP,
                                          *(d for _, d in small))
        rows = [d[:shape[0] * shape[1]].reshape(shape) for d in DP]
        for a, d in list(zip(wide, rows, strict=True)) + small:
            if d.size == 1 and np.ndim(vals[a]) != 1:
                d = d.reshape(np.shape(vals[a]))
            grads[a] = grads[a] + d if a in grads else d

    def forward_all(self, built, prog):
        """`forward` of a program over all steps at once, its values written into
        buffers from the pool, shaped as the last run with the same sizes gave them."""
        key = (id(prog), self.B, tuple(sorted(self.lengths.items())))
        shapes = built.shapes.get(key)
        outs = None if shapes is None else \
            [None if sh is None else self.pool.empty(sh, self.dt) for sh in shapes]
        vals, saved = self.forward(prog, outs=outs)
        if shapes is None:
            built.shapes[key] = [vals[n.id].shape if _buffered(n, vals[n.id], self.dt)
                                 else None for n in prog.nodes]
        return vals, saved

    def fwd(self, n, vals, hook, out=None):
        k = n.kind
        if k == "num":
            return n.expr.value, None
        if k == "param":
            return self.params[n.name], None
        if k in ("state", "hoist"):
            return hook(n), None
        if k == "fused":                         # folded into a later node
            return None, None
        if k == "read":
            return self.read(n), None
        args = [vals[a] for a in n.args]
        if k == "op":
            return self.fwd_op(n, args, n.aaxes, out)
        if k == "gemm":
            x = _rows(args[0])
            W, WT = self.stack(n)
            r = _product(x, WT, None if out is None else out.reshape(x.shape[0], -1))
            return r.reshape(np.shape(args[0])[:-1] + (W.shape[0],)), x
        if k == "slice":
            G = args[0]
            if G.shape[-1] == n.size:
                return G, None
            return G[..., n.off:n.off + n.size], None
        if k == "gather":
            ids = np.asarray(args[0])
            out = kernels.gather(self.params[n.name], ids.reshape(-1), pool=self.pool)
            return out.reshape(ids.shape + (out.shape[-1],)), None
        if k == "onehot":
            ids = np.asarray(args[0])
            return ops.onehot(ids.reshape(-1), n.size, self.dt).reshape(
                ids.shape + (n.size,)), None
        if k == "dot":
            return self.fwd_dot(n, args, out)
        if k == "reduce":
            return self.fwd_reduce(n, args[0])
        if k == "contract":
            return self.fwd_contract(n, args, out)
        if k == "score":
            return self.fwd_score(args, out)
        if k == "softmax":
            return self.fwd_softmax(n, args[0], out)
        if k == "real":
            return self.fwd_real(n, args[0])
        raise AssertionError(k)

    def read(self, n):
        r, v = n.expr, self.env.g.var(n.name)
        if v.inner is not None:
            a = self.env.vals[r.var].a          # stored [index, inner, B, n]
            return a if n.axes == (v.index, v.inner) else np.swapaxes(a, 0, 1)
        return read(self.env, r).a

    def stack(self, n):
        key = (id(self.st_nodes), n.id)
        W = self.stacked.get(key)
        if W is None:
            if len(n.parts) == 1:
                W = self.params[n.parts[0][0]]
            else:
                W = np.concatenate([self.params[p] for p, _, _ in n.parts], axis=0)
            W = np.ascontiguousarray(W)
            W = self.stacked[key] = (W, np.ascontiguousarray(W.T))
        return W

    def fwd_op(self, n, args, axes, out=None):
        op = n.op
        xs = args if n.aligned else [_align(a, ax, n.axes)
                                     for a, ax in zip(args, axes, strict=True)]
        f = _EW.get(op)
        if f is not None:
            return f(xs, out, self.f32), xs
        if op is Op.DROPOUT:
            return self.fwd_dropout(n, args[0], out)
        if op in (Op.CONCAT, Op.BILINEAR):
            lead = self.lead(n.axes)
            xs = [x if ax is None else np.broadcast_to(x, lead + x.shape[-1:])
                  for x, ax in zip(xs, axes, strict=True)]
            if op is Op.BILINEAR:
                rows = [x if ax is None else x.reshape(-1, x.shape[-1])
                        for x, ax in zip(xs, axes, strict=True)]
                out, s = ops.forward(op, ops.Ctx(), rows, n.attrs)
                return out.reshape(lead + out.shape[-1:]), (xs, rows, s)
        out, s = ops.forward(op, ops.Ctx(), xs, n.attrs)
        return out, (xs, s)

    def fwd_dropout(self, n, x, out):
        """x times its masks while training, x itself in evaluation. The masks come as
        [steps, *reduced steps, B, width] over the indexes `names` (masks.SequenceLayout);
        the node is over the same indexes (program._Builder.dropout), in the loop over
        the variable's index this step's: x is broadcast to them."""
        if not n.aligned:
            x = _align(x, n.aaxes[0], n.axes)
        if self.drops is None:
            return (x if n.aligned else
                    np.broadcast_to(x, self.lead(n.axes) + x.shape[-1:])), None
        m, names = self.drops.shaped(n.expr)
        if names[0] is None or n.sliced:          # one value per example, or this step's
            m, names = m[0 if names[0] is None else self.u], names[1:]
        m = np.moveaxis(m, [names.index(a) for a in n.axes], range(len(n.axes)))
        if out is None or out.shape != m.shape:
            out = None
        return np.multiply(x, m, out=out), m

    def lead(self, axes):
        return tuple(self.lengths[a] for a in (axes or ())) + (self.B,)

    def fwd_dot(self, n, args, out=None):
        (a, b), nodes = args, self.st_nodes
        aa, ab = nodes[n.args[0]].axes, nodes[n.args[1]].axes
        if aa is None or ab is None:            # a parameter vector: one GEMV
            v, x = (a, b) if aa is None else (b, a)
            x2 = _rows(x)
            r = kernels.matmul(x2, np.asarray(v).reshape(-1, 1),
                               out=None if out is None else out.reshape(-1, 1))
            return r.reshape(np.shape(x)[:-1] + (1,)), x2
        la, lb, lo = self.labels(aa), self.labels(ab), self.labels(n.axes)
        r = np.einsum(f"{la}ZN,{lb}ZN->{lo}Z", a, b,
                      out=None if out is None else out[..., 0])
        return r[..., None], None

    def fwd_reduce(self, n, x):
        ax = self.st_nodes[n.args[0]].axes
        full = self.union_over(n.axes, n.over)
        if ax is None:                           # a number or parameter: per example
            x = np.broadcast_to(np.asarray(x, self.dt), (self.B,) + (np.shape(x) or (1,)))
            ax = ()
        xa = _align(x, ax, full)
        pos = full.index(n.over)
        L = self.lengths[n.over]
        m = self.mask(n.over)
        if m is not None:
            m = _align(m[..., None], (n.over,), full)
        if n.op in (Op.SUM_OVER, Op.MEAN_OVER):
            w = self.weights(n.over, n.op)
            if w is None:
                if xa.shape[pos] == L:
                    return xa.sum(axis=pos), None
                w = np.ones((L, self.B), self.dt)
            w = _align(w[..., None], (n.over,), full)
            return (xa * w).sum(axis=pos), w
        if xa.shape[pos] != L:
            xa = np.broadcast_to(xa, xa.shape[:pos] + (L,) + xa.shape[pos + 1:])
        z = xa if m is None else np.where(m, xa, -np.inf)
        if n.op is Op.MAX_OVER:
            first = z.argmax(axis=pos)
            w = (np.arange(L).reshape((L,) + (1,) * (z.ndim - pos - 1)) ==
                 np.expand_dims(first, pos)).astype(self.dt)
            return z.max(axis=pos), w
        top = z.max(axis=pos, keepdims=True)
        out = top + np.log(np.exp(z - top).sum(axis=pos, keepdims=True))
        return np.squeeze(out, axis=pos), np.exp(z - out)

    def union_over(self, axes, over):
        s = set(axes) | {over}
        return tuple(i for i in self.st.order if i in s)

    def contract_spec(self, n, p, q):
        nodes = self.st_nodes
        ap, aq = nodes[n.args[0]].axes, nodes[n.args[1]].axes
        fp, fq = p.shape[-1] != 1, q.shape[-1] != 1
        lp = self.labels(ap) + "Z" + ("N" if fp else "")
        lq = self.labels(aq) + "Z" + ("N" if fq else "")
        lo = self.labels(n.axes) + "Z" + ("N" if fp or fq else "")
        return lp, lq, lo, fp, fq

    def fwd_contract(self, n, args, out=None):
        p, q = args
        fast = self.contract_fast(n, p, q)
        if fast is not None:
            p2, q3, w, _ = fast
            o = out if out is not None else np.empty((self.B, q3.shape[-1]), self.dt)
            self.fk.contract_fwd(p2, q3, w, o)
            return o, fast
        lp, lq, lo, fp, fq = self.contract_spec(n, p, q)
        w = self.weights(n.over, n.op)
        ps, qs = (p if fp else p[..., 0]), (q if fq else q[..., 0])
        o = None if out is None else (out if fp or fq else out[..., 0])
        if w is None:
            r = np.einsum(f"{lp},{lq}->{lo}", ps, qs, out=o)
        else:
            r = np.einsum(f"{lp},{lq},{self.letter[n.over]}Z->{lo}", ps, qs, w, out=o)
        return (r if fp or fq else r[..., None]), None

    # ------------------------------------------------------------- fused (fused.py)
    def contract_fast(self, n, p, q):
        """`sum / mean over t (a[t] * h[t])` inside a loop step, a [R, B, 1] and h
        [R, B, N] both over t alone: (a [R, B], h [R, B, N], the weights [R, B], whether
        the operands came swapped) for the contraction kernels; None otherwise."""
        if n.axes != () or n.aaxes != ((n.over,), (n.over,)):
            return None
        swap = p.shape[-1] != 1
        if swap:
            p, q = q, p
        R = self.lengths[n.over]
        if not (isinstance(p, np.ndarray) and isinstance(q, np.ndarray)) or \
                p.shape != (R, self.B, 1) or q.ndim != 3 or q.shape[:2] != (R, self.B) or \
                q.shape[2] == 1 or p.dtype != self.dt or q.dtype != self.dt:
            return None
        w = self.weights(n.over, n.op)
        if w is None:
            w = self.weights_ones(n.over)
        return (np.ascontiguousarray(p[..., 0]), np.ascontiguousarray(q), w, swap)

    def weights_ones(self, over):
        key = (over, "ones")
        if key not in self.masks:
            self.masks[key] = np.ones((self.lengths[over], self.B), self.dt)
        return self.masks[key]

    def real_lengths(self, over):
        """The real steps of `over` per example: int64 [B]."""
        key = (over, "n")
        if key not in self.masks:
            n = self.env.ex_len.get(over)
            self.masks[key] = np.full(self.B, self.lengths[over], np.int64) if n is None \
                else np.ascontiguousarray(n, np.int64)
        return self.masks[key]

    def sunk(self, node, shape):
        """The buffer a leaf's gradient may be added into (`sink`), if it has `shape`."""
        if self.sink is None:
            return None
        buf = self.sink(node)
        ok = buf is not None and buf.shape == shape and buf.dtype == self.dt and \
            buf.flags.c_contiguous
        return buf if ok else None

    def fwd_score(self, args, out):
        """v @ tanh(p + q): one pass (fused.score_fwd); saves tanh(p + q)."""
        v, p, q = args
        B, A = self.B, q.shape[-1]
        q3 = np.ascontiguousarray(q).reshape(-1, B, A)
        p = np.ascontiguousarray(p if p.shape == (B, A) else np.broadcast_to(p, (B, A)))
        y = self.pool.empty(q3.shape, self.dt)
        sc = np.empty(q3.shape[:2], self.dt) if out is None else out.reshape(q3.shape[:2])
        self.fk.score_fwd(p, q3, np.ascontiguousarray(v).reshape(-1), y, sc)
        return sc.reshape(q.shape[:-1] + (1,)), y

    def vjp_score(self, n, g, args, y):
        """dp, dq (added straight into q's leaf buffer when it has one) and dv (into the
        parameter's gradient), one pass (fused.score_bwd)."""
        v, p, q = args
        vn, qn = self.st_nodes[n.args[0]], self.st_nodes[n.args[2]]
        g2 = np.ascontiguousarray(np.broadcast_to(g[..., 0], q.shape[:-1]),
                                  dtype=self.dt).reshape(y.shape[:2])
        dq = self.sunk(qn, q.shape)
        into = dq.reshape(y.shape) if dq is not None else self.pool.empty(y.shape, self.dt)
        dp = np.empty((self.B, y.shape[2]), self.dt)
        dv = np.empty(y.shape[2], self.dt)
        self.fk.score_bwd(g2, y, np.ascontiguousarray(v).reshape(-1), into, dq is not None, dp, dv)
        self.pgrad(vn.name, dv.reshape(np.shape(v)))
        if p.shape != dp.shape:
            dp = _sum_to(dp, p.shape)
        return None, dp, (None if dq is not None else into.reshape(q.shape))

    def fwd_softmax(self, n, x, out):
        """softmax over t (graph/folded.softmax_over): exp(x - logsumexp over the real
        steps of t (x)) at the real steps, 0 at padded ones, one pass (fused.softmax_fwd).
        Its reverse needs only the value."""
        L = self.lengths[n.over]
        x2 = x[..., 0]
        if x2.shape != (L, self.B):
            x2 = np.broadcast_to(x2, (L, self.B))
        x2 = np.ascontiguousarray(x2, dtype=self.dt)
        a = np.empty_like(x2) if out is None else out[..., 0]
        self.fk.softmax_fwd(x2, self.real_lengths(n.over), a)
        return a[..., None], None

    def vjp_softmax(self, g, a):
        dx = np.empty(a.shape[:-1], self.dt)
        g2 = np.ascontiguousarray(np.broadcast_to(g[..., 0], dx.shape), dtype=self.dt)
        self.fk.softmax_bwd(g2, np.ascontiguousarray(a[..., 0]), dx)
        return (dx[..., None],)

    def fwd_real(self, n, x):
        """x at the real steps of `over`, -inf at padded ones (softmax over t, op by op);
        saves the mask (None: no padding)."""
        ax = n.aaxes[0]
        if ax is None:                           # a number or parameter: per example
            x = np.broadcast_to(np.asarray(x, self.dt), (self.B,) + (np.shape(x) or (1,)))
            ax = ()
        xa = _align(x, ax, n.axes)
        m = self.mask(n.over)
        if m is None:   # x, over every step of `over` as masked it would be: forward_all
            lead = [self.lengths[n.over] if a == n.over else 1 for a in n.axes]
            shape = np.broadcast_shapes(xa.shape, (*lead, self.B, 1))   # keeps buffers
            return np.broadcast_to(xa, shape), None    # by the lengths, padded or not
        m = _align(m[..., None], (n.over,), n.axes)
        return np.where(m, xa, -np.inf).astype(self.dt, copy=False), m

    def vjp_real(self, n, g, x, m):
        d = g if m is None else np.where(m, g, 0)
        ax = n.aaxes[0]
        if ax is None:
            return (_back(d, x, None, n.axes) if np.ndim(x) else None,)
        return (_back(d, x, ax, n.axes),)

    # ------------------------------------------------------------- reverse
    def backward(self, prog, vals, saved, seeds, leaf):
        """Gradients from `seeds` ({node id: gradient}) back through the program; leaves
        (state, hoist, read) go to `leaf(node, g)`."""
        grads = dict(seeds)
        nodes = prog.nodes
        at = prog.group_at
        for n in reversed(nodes):
            if n.id in at and isinstance(saved[n.id], _GroupRan):
                self.bwd_group(at[n.id], vals, saved[n.id], grads)
                continue
            g = grads.pop(n.id, None)
            if g is None:
                continue
            k = n.kind
            if k == "num":
                continue
            if k == "param":
                self.pgrad(n.name, _sum_to(g, self.params[n.name].shape))
                continue
            if k in ("state", "hoist", "read"):
                leaf(n, g)
                continue
            for a, d in zip(n.args, self.vjp(n, g, vals, saved[n.id]), strict=True):
                if d is None or nodes[a].kind == "num":
                    continue
                if isinstance(d, tuple):                     # a slice of a gemm output
                    off, size, gs = d
                    G = grads.get(a)
                    if G is None:
                        G = grads[a] = self.pool.zeros(np.shape(vals[a]), self.dt)
                    G[..., off:off + size] += gs
                elif a in grads:
                    grads[a] = grads[a] + d
                else:
                    grads[a] = d

    def pgrad(self, p, g):
        cur = self.pgrads.get(p)
        self.pgrads[p] = g if cur is None else cur + g

    def vjp(self, n, g, vals, s):
        k = n.kind
        args = [vals[a] for a in n.args]
        if k == "op":
            return self.vjp_op(n, g, vals[n.id], s, args)
        if k == "gemm":
            W, _ = self.stack(n)
            g2 = _rows(g)
            self.later(n, None, g2, s)
            return (_product(g2, W).reshape(np.shape(args[0])),)
        if k == "slice":
            if args[0].shape[-1] == n.size:
                return (g,)
            return ((n.off, n.size, g),)
        if k == "gather":
            ids = np.asarray(args[0]).reshape(-1)
            P = self.params[n.name]
            self.pgrad(n.name, kernels.scatter(_rows(g), ids, P.shape))
            return (None,)
        if k == "onehot":
            return (None,)
        if k == "dot":
            return self.vjp_dot(n, g, args, s)
        if k == "reduce":
            return self.vjp_reduce(n, g, args[0], s)
        if k == "contract":
            return self.vjp_contract(n, g, args, s)
        if k == "score":
            return self.vjp_score(n, g, args, s)
        if k == "softmax":
            return self.vjp_softmax(g, vals[n.id])
        if k == "real":
            return self.vjp_real(n, g, args[0], s)
        raise AssertionError(k)

    def vjp_dot(self, n, g, args, s):
        """v @ x with v a parameter: dx = g v, the weight gradient deferred (`later`); a
        batched contraction: each operand's gradient is g contracted with the other."""
        nodes = self.st_nodes
        aa, ab = nodes[n.args[0]].axes, nodes[n.args[1]].axes
        a, b = args
        if aa is None or ab is None:
            pi = 0 if aa is None else 1
            v = args[pi]
            self.later(n, nodes[n.args[pi]], _rows(g), s)
            dx = g * np.asarray(v)
            return (None, dx) if pi == 0 else (dx, None)
        la, lb, lo = self.labels(aa), self.labels(ab), self.labels(n.axes)
        g0 = g[..., 0]
        return (_einsum(f"{lo}Z,{lb}ZN->{la}ZN", g0, b, out_shape=a.shape),
                _einsum(f"{lo}Z,{la}ZN->{lb}ZN", g0, a, out_shape=b.shape))

    def vjp_reduce(self, n, g, x, s):
        """g spread back along the reduced axis, times what the forward saved: the mask
        weights of a sum or mean, the one-hot argmax of a max, the softmax of a
        logsumexp (None: a plain sum)."""
        ax = self.st_nodes[n.args[0]].axes
        full = self.union_over(n.axes, n.over)
        pos = full.index(n.over)
        gx = np.expand_dims(g, pos)
        if s is not None:
            d = gx * s
        elif ax is None:
            d = gx
        else:
            d = np.broadcast_to(gx, _align(x, ax, full).shape)
        if ax is None:
            return (_back(d, x, None, full) if np.ndim(x) else None,)
        return (_back(d, x, ax, full),)

    def vjp_contract(self, n, g, args, fast):
        """A sum or mean over an index of p * q, weighted by w (`weights`: the padding mask,
        over n for a mean; None: a plain sum): dp = g q w and dq = g p w, each one einsum
        onto its operand's axes (or one kernel: `contract_fast`)."""
        p, q = args
        if fast is not None:
            p2, q3, w, swap = fast
            R, B = q3.shape[:2]
            qn = self.st_nodes[n.args[0 if swap else 1]]
            dq = self.sunk(qn, q3.shape)
            dp = np.empty((R, B), self.dt)
            g2 = np.ascontiguousarray(g, dtype=self.dt)
            into = dq if dq is not None else self.pool.empty(q3.shape, self.dt)
            self.fk.contract_bwd(g2, p2, q3, w, dp, into, dq is not None)
            dp, dq = dp[..., None], (None if dq is not None else into)
            return (dq, dp) if swap else (dp, dq)
        lp, lq, lo, fp, fq = self.contract_spec(n, p, q)
        w = self.weights(n.over, n.op)
        ps, qs = (p if fp else p[..., 0]), (q if fq else q[..., 0])
        gs = g if fp or fq else g[..., 0]
        if w is None:
            dp = _einsum(f"{lo},{lq}->{lp}", gs, qs, out_shape=ps.shape)
            dq = _einsum(f"{lo},{lp}->{lq}", gs, ps, out_shape=qs.shape)
        else:
            lw = f"{self.letter[n.over]}Z"
            dp = _einsum(f"{lo},{lq},{lw}->{lp}", gs, qs, w, out_shape=ps.shape)
            dq = _einsum(f"{lo},{lp},{lw}->{lq}", gs, ps, w, out_shape=qs.shape)
        return (dp if fp else dp[..., None], dq if fq else dq[..., None])

    def vjp_op(self, n, g, out, s, args):
        axes = n.aaxes
        f = _EW_VJP.get(n.op)
        if f is not None:
            ds = f(g, out, s)
            if n.aligned:                # a size-1 value or a parameter: summed back
                return tuple(None if d is None or np.ndim(a) == 0 else _sum_to(d, a.shape)
                             for d, a in zip(ds, args, strict=True))
            return tuple(None if d is None else _back(d, a, ax, n.axes)
                         for d, a, ax in zip(ds, args, axes, strict=True))
        if n.op is Op.DROPOUT:                   # s: the masks (None: evaluation)
            d = g if s is None else g * s
            return (d if n.aligned else _back(d, args[0], axes[0], n.axes),)
        if n.op is Op.BILINEAR:
            xs, rows, sv = s
            ds = ops.vjp(n.op, g.reshape(-1, g.shape[-1]), out.reshape(-1, out.shape[-1]),
                         sv, rows)
            ds = [None if d is None else (d if ax is None else d.reshape(x.shape))
                  for d, x, ax in zip(ds, xs, axes, strict=True)]
        else:
            xs, sv = s
            ds = ops.vjp(n.op, g, out, sv, xs)
        return tuple(None if d is None else _back(d, a, ax, n.axes)
                     for d, a, ax in zip(ds, args, axes, strict=True))

    def later(self, n, pnode, g2, x2):
        """A product's weight gradient G^T X, deferred: one GEMM over all steps. The
        step's rows of G and X are kept in buffers [steps, rows, ...] from the pool."""
        key = (id(self.st_nodes), n.id)
        d = self.defer.get(key)
        if d is None:
            if self.steps == 1:
                self.defer[key] = [n, pnode, g2, x2, None]
                return
            d = self.defer[key] = [n, pnode,
                                   self.pool.empty((self.steps,) + g2.shape, self.dt),
                                   self.pool.empty((self.steps,) + x2.shape, self.dt),
                                   np.zeros(self.steps, bool)]
        d[2][self.slot] = g2
        d[3][self.slot] = x2
        d[4][self.slot] = True

    def flush(self):
        """The deferred weight gradients (one GEMM over every saved step per product) and
        the parameter gradients, into the run's."""
        for node, pnode, G, X, done in self.defer.values():
            if done is not None:
                if not done.all():           # steps that passed no gradient to it
                    G[~done] = 0
                G, X = G.reshape(-1, G.shape[-1]), X.reshape(-1, X.shape[-1])
            dW = kernels.matmul(G.T, X, out=self.pool.empty((G.shape[1], X.shape[1]),
                                                            self.dt))
            if pnode is None:                           # a stacked product
                for p, off, rows in node.parts:
                    self.pgrad(p, dW[off:off + rows])
            else:                                       # a dot with a parameter vector
                self.pgrad(pnode.name, dW.reshape(self.params[pnode.name].shape))
        self.defer = {}
        for p, g in self.pgrads.items():
            self.env.add_pgrad(p, np.asarray(g, self.dt))
        self.pgrads = {}


# DP's rows 16 elements more than B x n apart (64 bytes in float32, 128 in float64): rows
# a multiple of 4 KB long would alias in the L1 cache, as kernels.StaggeredPool says
_PAD = 16


class _GroupRan:
    """What a group's forward kernel ran with (`fwd_group`): its inputs' ranks and the
    arrays it read."""

    def __init__(self, ranks, xs):
        self.ranks, self.xs = ranks, xs


def _buffered(n, val, dt) -> bool:
    """Does this node write its value into a given buffer (`out`)?"""
    if n.kind == "op":
        ok = n.op in _EW
    else:
        ok = n.kind in ("gemm", "contract", "dot", "score", "softmax")
    return ok and isinstance(val, np.ndarray) and val.dtype == dt and val.ndim > 0
