"""The stages: a compiled attention stage (`AttnBuilt`) and its runs in one batch, static
(`_Static`) or a loop over the cycle's index (`_Loop`)."""
from __future__ import annotations

import numpy as np

from ...graph.folded import Ref
from ...graph.printer import show
from ..kernels import StaggeredPool
from ..plan import AttnStage, Unsupported
from ..static import V, read_back
from . import ewgroup
from .execute import _buffered, _Exec
from .numerics import _align, _back
from .program import _Builder, _finish, _fuse


class AttnBuilt:
    """A compiled attention stage (plan.AttnStage): its programs, ready to run."""

    def __init__(self, graph, model, stage: AttnStage):
        self.stage, self.g, self.m = stage, graph, model
        self.shapes = {}             # (program, batch, lengths) -> its values' shapes
        self.pool = StaggeredPool()  # the buffers of its runs
        seq = [i for i, k in graph.indexes if k == "seq"]
        first = [stage.index] if stage.index is not None else []
        self.order = tuple(first + [i for i in seq if i not in first])
        if stage.cyclic:
            self.hb = _Builder(graph, model, self.order)
            self.sb = _Builder(graph, model, self.order, fixed=stage.index,
                               cyc=stage.vars, hoist=self.hb)
            for v in stage.vars:
                var = graph.var(v)
                if var.index != stage.index and var.inner != stage.index:
                    raise Unsupported(f"'{v}' does not run over the cycle's index")
                self.sb.owner = v
                self.sb.roots[v] = self.sb.build(var.cases[0].expr)
            self.K = max(self.sb.K, 1)
            keep = set(self.sb.roots.values())
            _fuse(self.sb.prog, keep)
            _finish(self.sb.prog)
            for grp in ewgroup.groups(self.sb.prog, keep):
                self.sb.prog.group_at[grp.last] = grp
                self.sb.prog.grouped.update(grp.members)
        else:
            (v,) = stage.vars
            self.hb = _Builder(graph, model, self.order)
            self.hb.owner = v
            self.root = self.hb.build(graph.var(v).cases[0].expr)
        _finish(self.hb.prog)

    # ------------------------------------------------------------ shapes
    def natural(self, v, fixed=None):
        """The axes a variable's stored values have (without the loop's index)."""
        var = self.g.var(v)
        return tuple(i for i in self.order if i in var.indexes and i != fixed)

    def store(self, ex, val, vaxes, axes, n):
        """A root value broadcast to the variable's full shape [*axes, B, n]."""
        shape = ex.lead(axes) + (n,)
        a = _align(np.asarray(val, ex.dt) if vaxes is None else val, vaxes, axes)
        return np.broadcast_to(a, shape)

    # ------------------------------------------------------------ running
    def forward(self, run):
        ex = _Exec(run, self)
        if self.stage.cyclic:
            state = _Loop(self, ex)
        else:
            state = _Static(self, ex)
        state.forward(run)
        return state

    def explain(self) -> list:
        st = self.stage
        idx = {v.name: (v.index, v.inner) if v.inner else v.index for v in self.g.vars}
        def sh(e):
            return show(e, idx.get)
        if not st.cyclic:
            prog = self.hb.prog
            ix = ", ".join(self.natural(st.vars[0]))
            where = f"every step of [{ix}] at once" if ix else "per example"
            return [f"{st.vars[0]}: attention, {where}: " + _summary(prog, prog.nodes, sh)]
        L = st.index
        lines = [(f"{', '.join(st.vars)}: attention recurrence, a loop over {L} with every "
                  "step of the other indexes at once")]
        for e, nid in self.sb.hoisted:
            if isinstance(e, Ref):           # a plain read
                continue
            ax = self.hb.prog.nodes[nid].axes
            kind = "per example" if not ax else "over [" + ", ".join(ax) + "]"
            lines.append(f"  hoisted, {kind}: {sh(e)}")
        if self.sb.hoisted:
            lines.append("  hoisted values computed before the loop for all steps ("
                         + _summary(self.hb.prog, self.hb.prog.nodes, sh)
                         + "); their gradients pushed back once after it")
        lines.append(f"  per step of {L}: " + _summary(self.sb.prog, self.sb.prog.nodes, sh)
                     + f"; backward: {L} in reverse over the saved steps, the weight "
                     "gradients of each product one GEMM over all steps after it")
        return lines


# what `--explain` says of a node of these kinds (sh: an expression as written)
_SAID = {
    "score": lambda n, sh: f"score {sh(n.expr)} over [{', '.join(n.axes) or '-'}] as one "
                           "fused kernel (the sum, tanh and one GEMV)",
    "softmax": lambda n, sh: f"softmax over {n.over} as one kernel (padded steps masked)",
    "real": lambda n, sh: f"softmax over {n.over} op by op (padded steps masked)",
    "contract": lambda n, sh: f"{n.op.value} {n.over} of a product as one contraction "
                              "(einsum; inside a loop, of weights over t alone, one kernel)",
    "reduce": lambda n, sh: f"{n.op.value} {n.over} (padded steps masked)",
}


def _summary(prog, nodes, sh) -> str:
    out = []
    gemms = [n for n in nodes if n.kind == "gemm"]
    if gemms:
        out.append(f"{len(gemms)} GEMM (" + "; ".join(
            f"[{', '.join(p for p, _, _ in n.parts)}] @ {sh(n.expr)}" for n in gemms) + ")")
    gathers = [n for n in nodes if n.kind == "gather"]
    if gathers:
        out.append(f"{len(gathers)} lookup(s)")
    dots = [n for n in nodes if n.kind == "dot"]
    for n in dots:
        a, b = (prog.nodes[i] for i in n.args)
        how = "one GEMV" if a.axes is None or b.axes is None else "one batched contraction"
        out.append(f"score {sh(n.expr)} over [{', '.join(n.axes) or '-'}] as {how}")
    for kinds in (("score", "softmax", "real"), ("contract", "reduce")):   # kernels first
        out += [_SAID[n.kind](n, sh) for n in nodes if n.kind in kinds]
    # (not those folded into a kernel; those of an elementwise group said as such)
    grouped = sum(len(grp.members) for grp in prog.group_at.values())
    ew = sum(1 for n in nodes if n.kind == "op") - grouped
    if grouped:
        out.append(f"{grouped} elementwise op(s) over the batch as {len(prog.group_at)} "
                   "generated loop(s)")
    if ew:
        out.append(f"{ew} elementwise op(s) broadcast over the indexes")
    return ", ".join(out) if out else "reads only"


class _Static:
    """A variable on no cycle: its whole program once."""

    def __init__(self, built, ex):
        self.b, self.ex = built, ex
        ex.st_nodes = built.hb.prog.nodes

    def forward(self, run):
        b, ex = self.b, self.ex
        (v,) = b.stage.vars
        self.init_ev = run.init_forward(v)
        self.vals, self.saved = ex.forward_all(b, b.hb.prog)
        rn = b.hb.prog.nodes[b.root]
        axes = b.natural(v)
        a = np.ascontiguousarray(b.store(ex, self.vals[b.root], rn.axes, axes, run.m.sizes[v]))
        self.axes = axes
        run.env.vals[v] = V(a, "seq" if axes else "ex")

    def backward(self):
        b, ex, env = self.b, self.ex, self.ex.env
        (v,) = b.stage.vars
        g = env.gvals.get(v)
        if g is not None:
            rn = b.hb.prog.nodes[b.root]
            d = _back(g, self.vals[b.root], rn.axes, self.axes)
            if d is not None:
                ex.backward(b.hb.prog, self.vals, self.saved, {b.root: d}, self.leaf)
                ex.flush()
        if self.init_ev is not None and v in env.ginits:
            _init_backward(self.init_ev, env.ginits[v])

    def leaf(self, n, g):
        _read_back(self.ex.env, n, g)


class _Loop:
    """An attention recurrence in one batch: hoisted values, the loop, its reverse."""

    def __init__(self, built, ex):
        self.b, self.ex = built, ex

    def forward(self, run):
        b, ex = self.b, self.ex
        env, m, dt = ex.env, run.m, ex.dt
        st, K = b.stage, b.K
        L = run.lengths[st.index]
        self.L = L
        # hoisted: every subexpression that does not read the cycle, all steps at once
        ex.st_nodes = b.hb.prog.nodes
        self.hvals, self.hsaved = ex.forward_all(b, b.hb.prog)
        self.H = [self.hvals[nid] for _, nid in b.sb.hoisted]
        self.start_tapes(run)
        # the loop
        ex.st_nodes = b.sb.prog.nodes
        sn = b.sb.prog.nodes
        pool = ex.pool
        self.tapes = []
        outs = None
        for u in range(L):
            self.u = ex.u = u
            step_outs = None if outs is None else \
                [None if o is None else o[u] for o in outs]
            vals, saved = ex.forward(b.sb.prog, self.hook, step_outs)
            if u == 0 and L > 1:
                # every later step writes its values into buffers [L, ...] from the pool
                outs = [pool.empty((L,) + vals[n.id].shape, dt) if _buffered(n, vals[n.id], dt)
                        else None for n in sn]
            for v in st.vars:
                r = b.sb.roots[v]
                self.S[v][K + u] = b.store(ex, vals[r], sn[r].axes, self.axes[v],
                                           m.sizes[v])
            self.tapes.append((vals, saved))
        for v in st.vars:
            a = self.S[v][K:]
            if self.b.g.var(v).index != st.index:      # e[t, u] in a loop over u: stored
                a = np.swapaxes(a, 0, 1)               # as [T, U, ...], its own order
            env.vals[v] = V(a, "seq")

    def start_tapes(self, run):
        """The state tapes [K + L, *other axes, B, n]: K rows of what stands before step 0
        (`init_rows`: those that are init values, for the backward), then one per step."""
        b, ex, env = self.b, self.ex, self.ex.env
        st, K, L = b.stage, b.K, self.L
        self.init_evs = [run.init_forward(v) for v in st.vars]
        self.S, self.init_rows, self.axes = {}, {}, {}
        for v in st.vars:
            ax = b.natural(v, st.index)
            self.axes[v] = ax
            S = ex.pool.empty((K + L,) + ex.lead(ax) + (run.m.sizes[v],), ex.dt)
            rows = []
            if not ax:
                for j in range(1, K + 1):
                    val, is_init = env.outside(v, j, True)
                    S[K - j] = val
                    if is_init:
                        rows.append(K - j)
            self.S[v], self.init_rows[v] = S, rows

    def hook(self, n):
        if n.kind == "state":
            return self.S[n.name][self.b.K + self.u - n.k]
        h = self.H[n.j]
        return h[self.u] if n.sliced else h

    def backward(self):
        b, ex = self.b, self.ex
        st, K, L = b.stage, b.K, self.L
        sn = b.sb.prog.nodes
        self.start_grads()
        ex.st_nodes = sn
        ex.steps = L
        ex.sink = self.sink
        # a variable's gradient tape is all zeros unless it has a gradient from outside
        # the stage or the loop reads it at an earlier step: no seeds from the others
        env = ex.env
        live = [v for v in st.vars if env.gvals.get(v) is not None or
                any(n.kind == "state" and n.name == v for n in sn)]
        for u in range(L - 1, -1, -1):
            self.u = ex.slot = u
            vals, saved = self.tapes[u]
            seeds = {}
            for v in live:
                r = b.sb.roots[v]
                d = _back(self.dS[v][K + u], vals[r], sn[r].axes, self.axes[v])
                if d is not None:
                    seeds[r] = d if r not in seeds else seeds[r] + d
            ex.backward(b.sb.prog, vals, saved, seeds, self.leaf)
            self.tapes[u] = None             # (its buffers free for the next run)
        ex.flush()
        ex.steps, ex.slot, ex.sink = 1, 0, None
        self.backward_hoisted()
        self.hvals = self.hsaved = self.H = self.dH = None
        self.backward_inits()

    def start_grads(self):
        """The gradient tapes dS (as the state tapes), holding the gradients the stage's
        variables got from outside it; dH, the hoisted values' gradients (made when first
        reached)."""
        b, ex, env = self.b, self.ex, self.ex.env
        st, K = b.stage, b.K
        self.dS = {}
        for v in st.vars:
            dS = ex.pool.zeros(self.S[v].shape, ex.dt)
            g = env.gvals.get(v)
            if g is not None:
                dS[K:] += g if b.g.var(v).index == st.index else np.swapaxes(g, 0, 1)
            self.dS[v] = dS
        self.dH = [None] * len(self.H)

    def backward_hoisted(self):
        """The hoisted values' gradients, accumulated by the loop, through their program
        once."""
        b, ex, env = self.b, self.ex, self.ex.env
        ex.st_nodes = b.hb.prog.nodes
        seeds = {}
        for j, (_, nid) in enumerate(b.sb.hoisted):
            if self.dH[j] is not None:
                seeds[nid] = self.dH[j] if nid not in seeds else seeds[nid] + self.dH[j]
        if seeds:
            ex.backward(b.hb.prog, self.hvals, self.hsaved, seeds,
                        lambda n, g: _read_back(env, n, g))
            ex.flush()

    def backward_inits(self):
        """The init values' gradients through their evaluations: those of the tape rows
        before step 0 that hold them, plus those of reads elsewhere (`env.ginits`)."""
        st, env = self.b.stage, self.ex.env
        for i, v in enumerate(st.vars):
            ev = self.init_evs[i]
            if ev is None:
                continue
            gi = None
            for r in self.init_rows[v]:
                gi = self.dS[v][r] if gi is None else gi + self.dS[v][r]
            extra = env.ginits.get(v)
            if extra is not None:
                gi = extra if gi is None else gi + extra
            if gi is not None:
                _init_backward(ev, gi)

    def sink(self, n):
        """Where a hoisted value's gradient at this step is summed (a kernel adds into
        it directly); None for other leaves."""
        if n.kind != "hoist":
            return None
        if self.dH[n.j] is None:
            self.dH[n.j] = self.ex.pool.zeros(np.shape(self.H[n.j]), self.ex.dt)
        return self.dH[n.j][self.u] if n.sliced else self.dH[n.j]

    def leaf(self, n, g):
        if n.kind == "state":
            self.dS[n.name][self.b.K + self.u - n.k] += g
            return
        if n.kind == "hoist":
            buf = self.sink(n)
            buf += g
            return
        raise AssertionError(n.kind)


def _read_back(env, n, g):
    r, v = n.expr, env.g.var(n.name)
    if v.is_ids:
        return
    if v.inner is not None:
        env.add_grad(r.var, g if n.axes == (v.index, v.inner) else np.swapaxes(g, 0, 1))
        return
    read_back(env, r, g)


def _init_backward(ev, g):
    """An init value's gradient [B, n] through its evaluation (static.Evaluation)."""
    if ev.out.lead is None:
        g = g.sum(axis=0)
    ev.backward(g)


def build(graph, model, stage: AttnStage) -> AttnBuilt:
    return AttnBuilt(graph, model, stage)
