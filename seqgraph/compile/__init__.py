"""The compiled executor: the schedule of plan.py run with Numba kernels.

`CompiledExecutor(model).run(...)` has the interpreter's signature and gives its results
(to rounding). Variables on no cycle run for all steps at once (static.py); each cycle
runs as one generated Numba loop forward and one backward (codegen.py). A construct the
compiler does not run falls back to the interpreter for the whole model, and `explain`
says which and why: never a different answer.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..graph.folded import walk
from ..ops import Op
from . import kernels
from .codegen import generate
from .plan import StaticStage, Unsupported, lower, schedule
from .static import Env, Evaluation, V, read, read_back

__all__ = ["CompiledExecutor", "explain"]


class _Rec:
    """A recurrence ready to run: its step program and its generated kernels."""

    def __init__(self, stage, step, kernel, module):
        self.stage, self.step, self.kernel, self.mod = stage, step, kernel, module


class CompiledExecutor:
    def __init__(self, model):
        self.m = model
        self.g = model.graph
        self.fallback = None          # why the whole model runs in the interpreter
        self.notes = []
        self._interp = None
        self.pool = kernels.Pool()
        try:
            self.stages = self._build()
        except Unsupported as e:
            self.fallback = str(e)
            self.stages = []
        self.has_dropout = any(getattr(e, "op", None) is Op.DROPOUT
                               and dict(e.attrs).get("p", 0) > 0
                               for v in self.g.vars for c in v.cases for e in walk(c.expr))

    # ------------------------------------------------------------------ building
    def _build(self):
        out = []
        dtype = self.m.dtype.name
        for v in self.g.vars:        # attention: two indexes, reductions over an index
            if v.inner is not None or any("over" in getattr(e, "kw", {}) for c in v.cases
                                          for e in walk(c.expr)):
                raise Unsupported(f"attention ('{v.name}' over two indexes or a reduction "
                                  "over an index)")
        for st in schedule(self.g):
            if isinstance(st, StaticStage):
                out.append(st)
                continue
            step = lower(self.g, st, self.m.sizes, self.m.param_shapes)
            kern = generate(step, dtype)
            mod = kernels.load_source(kern.source)
            out.append(_Rec(st, step, kern, mod))
        return out

    @property
    def interp(self):
        if self._interp is None:
            from ..interp import Interpreter
            self._interp = Interpreter(self.m)
        return self._interp

    def explain(self) -> list:
        if self.fallback:
            return [f"interpreted: {self.fallback}"]
        lines = []
        for st in self.stages:
            if isinstance(st, StaticStage):
                lines.append(f"{st.var}: every step at once")
            else:
                k = st.kernel
                gemms = ", ".join(f"[{'; '.join(p for p, _, _ in parts)}]"
                                  for _, parts in k.groups)
                passes = sum(1 for kind, _ in k.info["stages"] if kind == "ew")
                d = "backward in time" if st.stage.direction > 0 else "forward in time"
                lines.append(f"{', '.join(st.stage.vars)}: one compiled loop {d}, per step "
                             f"{len(k.groups)} GEMM ({gemms}) and {passes} fused pass(es)")
        if self.has_dropout:
            lines.append("training with dropout: interpreted (the masks follow the "
                         "interpreter's random stream)")
        lines.append("a batch with per-example lengths shorter than its arrays "
                     "(padding): interpreted")
        if self.m.feedback():
            lines.append("scheduled sampling (teacher < 1): interpreted")
        return lines

    # ------------------------------------------------------------------ running
    def run(self, inputs, targets=None, carry=None, train=False, grads=False, rng=None,
            lengths=None, **kw):
        if kw.get("forest") is not None:       # recursive nets: level-batched (trees.py)
            from .trees import tree_executor
            return tree_executor(self).run(inputs, targets, carry=carry, train=train,
                                           grads=grads, rng=rng, lengths=lengths, **kw)
        kw = {k: v for k, v in kw.items()
              if not (k == "forest" and v is None) and not (k == "teacher" and v >= 1.0)}
        lengths = self._scalar_lengths(inputs, targets, lengths)
        if self.fallback or kw or lengths is _PADDED or (train and self.has_dropout):
            # scheduled sampling (teacher < 1) and per-example lengths shorter than the
            # arrays run in the interpreter: never a different answer
            if lengths is _PADDED:
                lengths = self._given_lengths
            return self.interp.run(inputs, targets, carry=carry, train=train, grads=grads,
                                   rng=rng, lengths=lengths, **kw)
        try:
            return _Run(self, inputs, targets, carry, lengths).go(grads)
        except Unsupported as e:
            self.notes.append(str(e))
            return self.interp.run(inputs, targets, carry=carry, train=train, grads=grads,
                                   rng=rng, lengths=lengths)

    def _scalar_lengths(self, inputs, targets, lengths):
        """`lengths` with every per-example array that pads nothing made an int; _PADDED
        when some example is shorter than the arrays (that batch is interpreted)."""
        if not lengths or all(np.ndim(n) == 0 for n in lengths.values()):
            return lengths
        self._given_lengths = lengths
        data = {**(inputs or {}), **(targets or {})}
        B, lens = self.m.batch_shape(data, lengths)
        if self.m.example_lengths(lengths, B, lens):
            return _PADDED
        return {i: int(lens[i]) if np.ndim(n) else int(n) for i, n in lengths.items()}


_PADDED = object()


def explain(model) -> list:
    """How the compiled executor runs each part of a model (for `seqgraph check`)."""
    ex = model.executor if isinstance(getattr(model, "executor", None), CompiledExecutor) \
        else CompiledExecutor(model)
    return ex.explain()


class _Run:
    """One batch through the compiled schedule."""

    def __init__(self, ex, inputs, targets, carry, lengths):
        from ..interp import Result
        self.Result = Result
        self.ex, self.m, self.g = ex, ex.m, ex.g
        self.targets = targets or {}
        data = {**(inputs or {}), **self.targets}
        B, lens = self.m.batch_shape(data, lengths)
        self.B, self.lengths = B, lens
        self.carry_in = carry or {}
        self.env = Env(self.m, self.m.params, B, lens, carry, ex.pool)
        dt = self.m.dtype
        for v in self.g.vars:
            if v.role == "hidden" or v.name not in data:
                continue
            a = np.asarray(data[v.name])
            a = a.astype(np.int64) if v.is_ids else a.astype(dt)
            if v.index is not None:
                a = np.ascontiguousarray(np.swapaxes(a, 0, 1))
                self.env.vals[v.name] = V(a, "seq")
            else:
                self.env.vals[v.name] = V(a, "ex")
        self.program = []

    def go(self, want_grads):
        for st in self.ex.stages:
            if isinstance(st, StaticStage):
                self.static_forward(st.var)
            else:
                self.rec_forward(st)
        loss, terms = self.losses(want_grads)
        res = self.Result(loss, None, self.values(), self.carry_out(), terms)
        if want_grads:
            for kind, item in reversed(self.program):
                (self.static_backward if kind == "static" else self.rec_backward)(item)
            env = self.env
            res.grads = {p: np.asarray(env.gparams[p], dtype=w.dtype).reshape(w.shape)
                         if p in env.gparams else np.zeros_like(w)
                         for p, w in self.m.params.items()}
        return res

    # ---------------------------------------------------------------- static
    def init_forward(self, var):
        v = self.g.var(var)
        if v.init is None:
            return None
        ev = Evaluation(self.env, v.init, None)
        self.env.inits[var] = self.broadcast(ev.out, None, self.m.sizes[var])
        return ev

    def broadcast(self, out: V, T, n):
        """A value as [T, B, n] (T given) or [B, n]."""
        a = out.a
        shape = (self.B, n) if T is None else (T, self.B, n)
        if T is not None and out.lead == "seq":
            return a
        return np.ascontiguousarray(np.broadcast_to(np.asarray(a, self.m.dtype), shape))

    def static_forward(self, var):
        v = self.g.var(var)
        init_ev = self.init_forward(var)
        T = self.lengths[v.index] if v.index is not None else None
        ev = Evaluation(self.env, v.cases[0].expr, v.index, T=T)
        a = self.broadcast(ev.out, T, self.m.sizes[var])
        self.env.vals[var] = V(a, "seq" if T is not None else "ex")
        self.program.append(("static", (var, ev, init_ev, ev.out.lead)))

    def static_backward(self, item):
        var, ev, init_ev, lead = item
        env = self.env
        g = env.gvals.get(var)
        if g is not None:
            v = self.g.var(var)
            ev.backward(_unbroadcast_lead(g, v.index is not None, lead))
        if init_ev is not None and var in env.ginits:
            init_ev.backward(_unbroadcast_lead(env.ginits[var], False, init_ev.out.lead))

    # ---------------------------------------------------------------- recurrences
    def rec_forward(self, rec: _Rec):
        st, step, k = rec.stage, rec.step, rec.kernel
        env, B, dt, pool = self.env, self.B, self.m.dtype, self.ex.pool
        T = self.lengths[st.index]
        K = step.K
        flip = st.direction > 0
        init_evs = [self.init_forward(v) for v in step.vars]
        args = {"T": T}
        init_rows = []
        for i, v in enumerate(step.vars):
            n = self.m.sizes[v]
            S = pool.empty((T + K, B, n), dt)
            rows = []
            for j in range(1, K + 1):
                val, is_init = env.outside(v, j, not flip)
                S[K - j] = val
                if is_init:
                    rows.append(K - j)
            init_rows.append(rows)
            args[f"S{i}"] = S
        args["init_grad"] = any(init_rows)
        hoist_evs = []
        for j, e in enumerate(step.hoisted):
            ev = Evaluation(env, e, st.index, T=T)
            X = self.broadcast(ev.out, T, _size(ev.out, step, j, self.m))
            if flip:
                X = _copy(pool, X[::-1])
            args[f"X{j}"] = X if X.dtype == dt and X.flags.c_contiguous else \
                np.ascontiguousarray(X, dtype=dt)
            hoist_evs.append(ev)
        params = self.m.params
        for gi, (opnd, parts) in enumerate(k.groups):
            M, kin = sum(s for _, _, s in parts), k.info["operand_sizes"][gi]
            if len(parts) == 1:
                WS = params[parts[0][0]]
            else:
                WS = pool.empty((M, kin), dt)
                np.concatenate([params[p] for p, _, _ in parts], axis=0, out=WS)
            args[f"WS{gi}"] = WS
            args[f"W{gi}"] = _copy(pool, WS.T)
            args[f"NB{gi}"], args[f"KB{gi}"] = kernels.blocks(B, M, kin)
            args[f"NBb{gi}"], args[f"KBb{gi}"] = kernels.blocks(B, kin, M)
        for i, p in enumerate(k.pvecs):
            args[f"P_{i}"] = params[p]
        for name, n in k.tapes.items():
            args[name] = pool.empty((T, B, n), dt)
        for gi in k.gtapes:
            M = sum(s for _, _, s in k.groups[gi][1])
            args[f"G{gi}"] = pool.empty((T, B, M), dt)
        if T > 0:
            rec.mod.forward(*[args[a] for a in k.fwd_args])
        for i, v in enumerate(step.vars):
            a = args[f"S{i}"][K:]
            env.vals[v] = V(_copy(pool, a[::-1]) if flip else a, "seq")
        self.program.append(("rec", (rec, args, init_evs, hoist_evs, init_rows, T)))

    def rec_backward(self, item):
        rec, args, init_evs, hoist_evs, init_rows, T = item
        st, step, k = rec.stage, rec.step, rec.kernel
        env, B, dt, pool = self.env, self.B, self.m.dtype, self.ex.pool
        K, flip = step.K, st.direction > 0
        for i, v in enumerate(step.vars):
            S = args[f"S{i}"]
            g = env.gvals.get(v)
            if g is None:
                dS = pool.zeros(S.shape, dt)
            else:
                dS = pool.empty(S.shape, dt)
                dS[:K] = 0
                np.copyto(dS[K:], g[::-1] if flip else g)
            args[f"dS{i}"] = dS
        for gi, (_, parts) in enumerate(k.groups):
            M = sum(s for _, _, s in parts)
            args[f"dG{gi}"] = (pool.empty if gi in k.info["dg_assigned"] else pool.zeros)(
                (T, B, M), dt)
        alias = k.info["alias"]
        for j in range(len(step.hoisted)):
            if j in alias:
                gi, off = alias[j]
                n = args[f"X{j}"].shape[-1]
                dG = args[f"dG{gi}"]
                args[f"dX{j}"] = dG if off == 0 and n == dG.shape[-1] else \
                    dG[:, :, off:off + n]
            else:
                args[f"dX{j}"] = pool.zeros(args[f"X{j}"].shape, dt)
        for i, p in enumerate(k.pvecs):
            args[f"dP_{i}"] = np.zeros_like(self.m.params[p])
        if T > 0:
            rec.mod.backward(*[args[a] for a in k.bwd_args])
        else:
            for gi in range(len(k.groups)):
                args[f"dG{gi}"].fill(0)
        # weight gradients: one GEMM over all steps per stacked product
        for gi, (opnd, parts) in enumerate(k.groups):
            X = self.operand_rows(rec, args, opnd, T)
            dG = args[f"dG{gi}"].reshape(T * B, -1)
            dW = kernels.matmul(dG.T, X.reshape(T * B, -1),
                                out=pool.empty((dG.shape[1], X.shape[-1]), dt))
            if len(parts) == 1:
                env.add_pgrad(parts[0][0], dW)
            else:
                for p, off, m in parts:
                    env.add_pgrad(p, dW[off:off + m])
        for i, p in enumerate(k.pvecs):
            env.add_pgrad(p, args[f"dP_{i}"])
        for j, ev in enumerate(hoist_evs):
            dX = args[f"dX{j}"]
            if flip:
                dX = dX[::-1]
            ev.backward(_unbroadcast_lead(dX, True, ev.out.lead))
        for i, v in enumerate(step.vars):
            ev = init_evs[i]
            if ev is None:
                continue
            gi = None
            for r in init_rows[i]:
                gi = args[f"dS{i}"][r] if gi is None else gi + args[f"dS{i}"][r]
            extra = env.ginits.get(v)
            if extra is not None:
                gi = extra if gi is None else gi + extra
            if gi is not None:
                ev.backward(_unbroadcast_lead(gi, False, ev.out.lead))

    def operand_rows(self, rec, args, opnd, T):
        node = rec.step.nodes[opnd]
        K = rec.step.K
        if node.kind == "state":
            i = rec.step.vars.index(node.var)
            return args[f"S{i}"][K - node.k:K - node.k + T]
        roots = {nid: v for v, nid in rec.step.roots.items()}
        if opnd in roots:
            i = rec.step.vars.index(roots[opnd])
            return args[f"S{i}"][K:K + T]
        return args[f"N{opnd}"]

    # ---------------------------------------------------------------- losses
    def losses(self, want_grads):
        env, B = self.env, self.B
        total, terms = 0.0, {}
        self.loss_grads = []
        for li, loss in enumerate(self.g.losses):
            if loss.target.var not in self.targets:
                continue
            ov = self.g.var(loss.output.var)
            o = read(env, loss.output, ov.index)
            y = read(env, loss.target, ov.index)
            orows = o.a.reshape(-1, o.a.shape[-1])
            yrows = y.a.reshape(-1) if y.a.ndim == o.a.ndim - 1 else \
                y.a.reshape(-1, y.a.shape[-1])
            scale = loss.weight / B
            if loss.fn == "xent":
                s, n, d = kernels.xent(orows, yrows, scale, want_grads)
            else:
                op = ops.LOSS_NAMES[loss.fn]
                per, _ = ops.forward(op, ops.Ctx(), [orows, yrows])
                s, n = float(per.sum()), int(yrows.shape[0])
                d = ops.vjp(op, np.full(per.shape, scale, dtype=self.m.dtype), per, None,
                            [orows, yrows])[0] if want_grads else None
            terms[li] = (float(s), int(n))
            total += loss.weight * float(s) / B
            if want_grads:
                read_back(env, loss.output, d.reshape(o.a.shape).astype(self.m.dtype))
        return total, terms

    # ---------------------------------------------------------------- outputs
    def values(self):
        out = {}
        for v in self.g.vars:
            if v.role != "hidden":
                continue
            a = self.env.vals[v.name].a
            out[v.name] = np.swapaxes(a, 0, 1) if v.index is not None else a
        return out

    def carry_out(self):
        out = {}
        for name, k in self.m.carried.items():
            v = self.g.var(name)
            if v.index is None or name not in self.env.vals:
                continue
            L = self.lengths[v.index]
            a = self.env.vals[name].a
            vals = []
            for j in range(1, k + 1):
                # before this window: the carry in, the init value or the zero state
                val = a[L - j] if L - j >= 0 else self.env.outside(name, j - L, True)[0]
                vals.append(np.array(val, copy=True))
            out[name] = vals
        return out


def _copy(pool, a):
    """A contiguous copy of a in a pooled buffer."""
    out = pool.empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


def _size(out: V, step, j, m):
    a = np.asarray(out.a)
    return a.shape[-1]


def _unbroadcast_lead(g, is_seq, lead):
    """A gradient shaped like the stored value, summed back to the evaluated value."""
    if is_seq and lead == "ex":
        return g.sum(axis=0)
    if is_seq and lead is None:
        return g.sum(axis=(0, 1))
    if not is_seq and lead is None:
        return g.sum(axis=0)
    return g
