"""Level-batched execution of recursive nets (DESIGN.md, "Trees batch by level").

A node's height is 0 at a leaf and 1 + its taller child's otherwise; every node of a given
height depends only on lower ones. So the nodes of a whole batch of trees, renumbered by
height, fall into contiguous blocks of rows (levels), and each equation of the recursion
runs once per level over all of that level's nodes: the children's rows gathered (one
gather), the products of the level done at once (one GEMM per matrix), the result
written as one block (one scatter). The backward pass walks the levels top down with
each op's VJP from ops.py, scattering gradients into the children's rows; the weight
gradients of a level are GEMMs too. Variables on no recursion (`o[n] = Ws @ h[n] + bs`)
run over all nodes at once, the loss too.

The RNTN's term bilinear(T, a, a) (Socher et al. 2013) is most of an RNTN's work: per
level it is one GEMM of the rows a with S = T + T^T laid out [2H, H*2H] (a^T T[k] a =
a^T S[k] a / 2, and with U = S a the gradient of a is sum_k g_k U[k], so the backward pass
needs no GEMM for it); its weight gradient sum_r g_k a a^T is one GEMM over all levels, computed by
symmetric blocks (dT[k] is symmetric).

The plan (which variables recurse, in which order) is read once from the folded graph;
the per-batch schedule is numpy index arrays built in O(nodes) (a counting sort of the
heights). Per-example variables (a tree classifier's `o = Ws @ h[root] + bs`) run once
the trees are done, over the batch's examples. A sequence index beside the tree is
hybrid.py's (the trees here, the sequence compiled); anything else this executor does not
run goes to the interpreter, which defines the results. Dropout while training
runs here with the interpreter's masks (compile/masks.py).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .. import given, ops
from ..graph.components import components
from ..graph.folded import CHILD, ENDS, Num, ParamRef, Ref, ShiftKind, walk
from ..graph.trees import heights
from ..ops import Op
from .fallback import FallsBack, has_dropout
from .masks import MaskPlan, NoMasks, sites

__all__ = ["TreeExecutor", "levels", "tree_executor"]


class Unsupported(Exception):
    pass


# ------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Stage:
    """Variables evaluated together: `recursive` ones level by level (in `vars` order at
    each level), the others over all nodes at once, or (`example`) over the batch's
    examples: per-example variables, which may read the trees' roots."""
    vars: tuple
    recursive: bool
    example: bool = False


def plan(graph) -> list[Stage]:
    """The stages of a tree model in dependency order, or Unsupported."""
    trees = [i for i, k in graph.indexes if k == "tree"]
    if len(trees) != 1 or len(graph.indexes) != 1:
        raise Unsupported("only models over one tree index (no sequence index) are "
                          "level-batched")
    for v in graph.vars:
        if v.init is not None:
            raise Unsupported(f"'{v.name}' has an init value")
    _reads(graph)
    return [_stage(graph, c) for c in components(graph) if c.hidden]


def _reads(graph) -> None:
    """Refuses a read this executor has no rows for: a variable reads its own node, its
    children, the root or a per-example value, and a per-example variable reads only the
    last two of the variables computed here."""
    names = {v.name for v in graph.hidden()}
    for v in graph.hidden():
        for c in v.cases:
            for r in (e for e in walk(c.expr) if isinstance(e, Ref)):
                kind = r.shift.kind
                if kind in ENDS or (kind == ShiftKind.REL and r.shift.k != 0):
                    raise Unsupported(f"'{v.name}' reads {r.var} with a shift {kind}")
                if r.var in names and v.index is None and \
                        kind not in (ShiftKind.ROOT, ShiftKind.NONE):
                    raise Unsupported(f"'{v.name}' reads {r.var} with a shift {kind}")


def _stage(graph, comp) -> Stage:
    """A component's stage: level by level when it reads its own children (or root, or
    per-example values: those need the whole tree first), which refuses a recursion that
    reads its own root."""
    rec = any(e.shift.kind in (*CHILD, ShiftKind.ROOT, ShiftKind.NONE) for e in comp.edges)
    if rec:
        for m in comp.members:
            if any(e.dst == m and e.shift.kind == ShiftKind.ROOT for e in comp.edges):
                raise Unsupported(f"'{m}' reads the root of its own recursion")
    vs = comp.hidden
    example = {graph.var(m).index is None for m in vs}
    if len(example) > 1:
        raise Unsupported(f"{', '.join(vs)} mix per-example and per-node values in "
                          "one cycle")
    return Stage(vs, rec, example.pop())


# -------------------------------------------------------------------- the batch schedule
@dataclass(frozen=True)
class Levels:
    """A forest renumbered by height: new row r is old node perm[r]; level k is rows
    lo[k]:lo[k+1]; left/right/root/tree are in new rows."""
    perm: np.ndarray
    inv: np.ndarray
    lo: np.ndarray
    left: np.ndarray
    right: np.ndarray
    root: np.ndarray       # the root row of each row's tree
    tree: np.ndarray       # the example of each row
    roots: np.ndarray      # [B] new rows of the roots

    @property
    def size(self) -> int:
        return len(self.perm)

    @property
    def depth(self) -> int:
        return len(self.lo) - 1


def levels(forest) -> Levels:
    """The level schedule of a forest in O(nodes): heights (given by the loader, or one
    compiled pass over the post-order arrays), a counting sort by height."""
    h = getattr(forest, "heights", None)
    if h is None:
        h = heights(forest.left, forest.right)
    h = np.asarray(h)
    N = len(h)
    counts = np.bincount(h) if N else np.zeros(0, np.int64)
    lo = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    key = h.astype(np.int16) if N and h.max() < 32767 else h
    perm = np.argsort(key, kind="stable")       # a radix sort for 16-bit keys: O(N)
    inv = np.empty(N, dtype=np.int64)
    inv[perm] = np.arange(N)
    remap = lambda a: np.where(a >= 0, inv[np.maximum(a, 0)], -1)
    left, right = remap(forest.left[perm]), remap(forest.right[perm])
    tree = np.asarray(forest.tree)[perm]
    roots = inv[np.asarray(forest.roots)]
    return Levels(perm, inv, lo, left, right, roots[tree], tree, roots)


# ------------------------------------------------------------------------ one equation
class _Eval:
    """One expression over a block of rows: a small tape forward (shared subexpressions
    evaluated once), and a backward that routes gradients to the rows read and to the
    parameters."""

    def __init__(self, run, expr, rows: slice, example=False):
        self.run, self.rows, self.example = run, rows, example
        self.vals, self.entries, self.routes = [], [], []
        self.param_at = {}                  # tape index -> parameter name
        self.canon = run.ex.canonical(expr)
        # while masks are drawn, a subexpression holding a dropout is evaluated each
        # time it is written (each draws its own mask, as in the interpreter)
        self.drawing = run.ex.drawing(expr) if run.masks is not None else frozenset()
        self.out = self._eval(expr, {})

    def _leaf(self, value, route=None) -> int:
        self.vals.append(value)
        if route is not None:
            self.routes.append((len(self.vals) - 1, route))
        return len(self.vals) - 1

    def _eval(self, e, memo) -> int:
        key = self.canon[id(e)]
        if key in memo and id(e) not in self.drawing:
            return memo[key]
        run = self.run
        if isinstance(e, Num):
            i = self._leaf(e.value)
        elif isinstance(e, ParamRef):
            value = run.m.params[e.name]
            if value.ndim == 1:     # a vector read as a value: a row a node, as every
                n = self.rows.stop - self.rows.start     # value (its gradient summed
                value = np.broadcast_to(value, (n, value.shape[0]))    # back by route)
            i = self._leaf(value, ("param", e.name, None))
            self.param_at[i] = e.name
        elif isinstance(e, Ref):
            value, route = run.read(e, self.rows, self.example)
            i = self._leaf(value, route)
        else:
            args = [self._eval(a, memo) for a in e.args]
            xs = [self.vals[a] for a in args]
            attrs = e.attrs
            if e.op is Op.ONEHOT:
                attrs = (("size", run.m.sizes[e.args[0].var]), ("dtype", run.m.dtype))
            if e.op is Op.BILINEAR:
                same = args[1] == args[2]       # bilinear(T, a, a): the RNTN's term
                M = run.bilinear_operand(e.args[0], xs[0], same)
                out, saved = _bilinear_fwd(xs[0], xs[1], xs[2], M, same)
            elif id(e) in self.drawing and e.op is Op.DROPOUT:
                saved = run.masks.mask(e, run.L.perm[self.rows], xs[0].dtype)
                out = xs[0] * saved
            else:
                out, saved = ops.forward(e.op, run.ctx, xs, attrs)
            i = self._leaf(out)
            self.entries.append((e.op, args, i, saved))
        memo[key] = i
        return i

    def backward(self, g) -> None:
        grads = [None] * len(self.vals)
        grads[self.out] = g
        run = self.run
        for op, args, out, saved in reversed(self.entries):
            d = grads[out]
            if d is None:
                continue
            xs = [self.vals[a] for a in args]
            param = self.param_at.get(args[0])
            if op is Op.GATHER and param:           # a scatter-add of rows
                run.scatter_cols(param, xs[1], d)
                continue
            if op is Op.MATMUL and param:           # dW: one GEMM after all levels
                run.defer(param, d, xs[1])
                ds = (None, d @ xs[0])
            elif op is Op.BILINEAR:
                ds = _bilinear_vjp(d, saved, xs, args[1] == args[2],
                                   run if param else None, param)
            else:
                ds = ops.vjp(op, d, self.vals[out], saved, xs)
            for a, da in zip(args, ds, strict=True):
                if da is not None:
                    grads[a] = da if grads[a] is None else grads[a] + da
        for i, route in self.routes:
            if grads[i] is not None:
                run.route(route, grads[i])



def _bilinear_fwd(T, a, b, M, same):
    """k_i = a^T T[i] b for a block of rows: U = b M (one GEMM, M = T laid out [J, K*I],
    see `_Run.bilinear_operand`), U[r,k,i] = sum_j T[k,i,j] b[r,j], then a row-wise dot
    with a. For bilinear(T, a, a), M is S = T + T^T instead: a^T T[k] a = a^T S[k] a / 2,
    and U = S a is all that the backward pass needs for da (no GEMM there)."""
    K, I, _ = T.shape
    U = (b @ M).reshape(-1, K, I)
    out = np.matmul(U, a[:, :, None])[:, :, 0]
    return (0.5 * out if same else out), U


def _bilinear_vjp(g, U, xs, same, run=None, param=None):
    """(dT, da, db); with `run`, dT is deferred to one GEMM over all levels. With `same`
    (bilinear(T, a, a)) da is the whole gradient of a and db is None."""
    T, a, b = xs
    K, I, J = T.shape
    da = np.matmul(g[:, None, :], U)[:, 0, :]          # sum_k g_k U[k]
    dT = None
    if run is not None:
        run.defer_outer(param, g, a, None if same else b)
    else:
        dT = outer_sum(g, a, b)
    if same:
        return dT, da, None
    db = (g[:, :, None] * a[:, None, :]).reshape(-1, K * I) @ T.reshape(K * I, J)
    return dT, da, db


def outer_sum(g, a, b=None):
    """dT[k,i,j] = sum_r g[r,k] a[r,i] b[r,j] as GEMMs of the [rows, K*I] products
    g_k a_i with b. With b = a (None) each dT[k] is symmetric: it is computed by blocks of
    i for j >= the block's first i only (about 5/8 of the products for 4 blocks), and
    mirrored."""
    K, I = g.shape[1], a.shape[1]
    if b is not None:
        ga = (g[:, :, None] * a[:, None, :]).reshape(-1, K * I)
        return (ga.T @ b).reshape(K, I, b.shape[1])
    out = np.empty((K, I, I), dtype=np.result_type(g, a))
    edges = [I * p // SYM_BLOCKS for p in range(SYM_BLOCKS + 1)] if I >= 8 * SYM_BLOCKS \
        else [0, I]
    for lo, hi in itertools.pairwise(edges):
        ga = (g[:, :, None] * a[:, None, lo:hi]).reshape(-1, K * (hi - lo))
        blk = (ga.T @ a[:, lo:]).reshape(K, hi - lo, I - lo)   # rows lo:hi, columns lo:
        out[:, lo:hi, lo:] = blk
        out[:, hi:, lo:hi] = blk[:, :, hi - lo:].transpose(0, 2, 1)
    return out


SYM_BLOCKS = 4


def zeros(shape, dtype) -> np.ndarray:
    """np.zeros by writing the zeros: a large np.zeros is fresh pages from the kernel
    (calloc), each faulted in when first written, which costs more than the writing
    (several ms a step for a 20k-word embedding's gradient); these come from the
    allocator's free memory."""
    out = np.empty(shape, dtype)
    out.fill(0)
    return out


def scatter_add(target, idx, g) -> None:
    """target[idx] += g with repeated indexes summed: the rows sorted by index, summed per
    run (np.add.reduceat), then added once per distinct index (np.add.at is slower)."""
    if len(idx) == 0:
        return
    order = np.argsort(idx, kind="stable")
    s = idx[order]
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    target[s[starts]] += np.add.reduceat(g[order], starts, axis=0)


# ------------------------------------------------------------------------------ a batch
class _Run:
    def __init__(self, ex, inputs, targets, train, rng, forest):
        from ..interp import Result
        self.Result = Result
        self.ex, self.m, self.g = ex, ex.m, ex.g
        data = {**(inputs or {}), **(targets or {})}
        self.targets = targets or {}
        self.B, _ = given.batch_shape(self.m, data, None, forest)
        self.L = levels(forest)
        self.ctx = ops.Ctx(train=train, rng=rng or np.random.default_rng(0))
        self.masks = ex.mask_plan.draw(self.ctx.rng, np.asarray(forest.left) < 0) \
            if train and ex.mask_plan is not None else None
        self.vals, self.gvals, self.gparams, self.deferred = {}, {}, {}, {}
        self.operands, self.outer = {}, {}
        dt = self.m.dtype
        for v in self.g.vars:
            if v.role == "hidden" or v.name not in data:
                continue
            a = np.asarray(data[v.name])
            a = a.astype(np.int64) if v.is_ids else a.astype(dt)
            self.vals[v.name] = a if v.index is None else np.ascontiguousarray(a[self.L.perm])
        self.program = []

    # ---------------------------------------------------------------- reads
    def read(self, r: Ref, rows: slice, example=False):
        """The value a reference gives over `rows` (of nodes, or with `example` of the
        batch's examples), and where its gradient goes."""
        v = self.ex.var_map[r.var]
        buf = self.vals[r.var]
        hidden = v.role == "hidden" or r.var in self.ex.cut_inputs   # takes a gradient
        kind = r.shift.kind
        if example:             # per example: its own row, or its tree's root
            if kind == ShiftKind.NONE:
                return buf[rows], ("slice", r.var, rows) if hidden else None
            idx = self.L.roots[rows]
            return buf[idx], ("rows", r.var, idx) if hidden else None
        if kind == ShiftKind.NONE:
            idx = self.L.tree[rows]
            return buf[idx], ("add_at", r.var, idx) if hidden else None
        if kind == ShiftKind.REL:
            return buf[rows], ("slice", r.var, rows) if hidden else None
        if kind == ShiftKind.ROOT:
            idx = self.L.root[rows]
            return buf[idx], ("add_at", r.var, idx) if hidden else None
        idx = (self.L.left if kind == ShiftKind.LEFT else self.L.right)[rows]
        # each node has one parent: a level's children are distinct rows
        return buf[idx], ("rows", r.var, idx) if hidden else None

    def route(self, route, g) -> None:
        kind, name, where = route
        if kind == "param":
            p = self.m.params[name]
            if name in self.gparams:
                self.gparams[name] += ops.unbroadcast(g, p.shape)
            else:
                self.gparams[name] = np.array(ops.unbroadcast(g, p.shape), dtype=p.dtype)
            return
        gb = self.gbuf(name)
        if kind == "add_at":
            scatter_add(gb, where, g)
        else:
            gb[where] += g

    def gbuf(self, name):
        if name not in self.gvals:
            rows = self.B if self.ex.var_map[name].index is None else self.L.size
            self.gvals[name] = np.zeros((rows, self.m.sizes[name]), self.m.dtype)
        return self.gvals[name]

    def bilinear_operand(self, expr, T, same) -> np.ndarray:
        """T [K, I, J] as the right operand of `b @ M` for every level: M [J, K*I] with
        M[j, k*I + i] = T[k,i,j], or (`same`) that of S = T + T^T, which is symmetric in
        (i, j) so M[j, k*I + i] = T[k,j,i] + T[k,i,j]. Made once a batch for a parameter."""
        key = (expr.name, same) if isinstance(expr, ParamRef) else None
        M = self.operands.get(key)
        if M is None:
            K, I, J = T.shape
            M = (T.transpose(1, 0, 2) + T.transpose(2, 0, 1)) if same else \
                np.ascontiguousarray(T.transpose(2, 0, 1))
            M = M.reshape(J, K * I)
            if key is not None:
                self.operands[key] = M
        return M

    def defer(self, name, d, x) -> None:
        """A weight gradient d^T x of one level, summed over all levels at the end as one
        GEMM (DESIGN.md: weight gradients after the loop)."""
        self.deferred.setdefault(name, []).append((d, x))

    def defer_outer(self, name, g, a, b) -> None:
        """A bilinear weight's gradient sum_r g_k a_i b_j over one level's rows (b None:
        b = a), summed over all levels at the end: one GEMM for the levels of each form."""
        self.outer.setdefault((name, b is None), []).append((g, a, b))

    def flush_deferred(self) -> None:
        cat = lambda xs: xs[0] if len(xs) == 1 else np.concatenate(xs)
        for name, parts in self.deferred.items():
            D, X = cat([d for d, _ in parts]), cat([x for _, x in parts])
            self._add_grad(name, (D.T @ X).reshape(self.m.params[name].shape))
        for (name, same), parts in self.outer.items():
            g, a = cat([p[0] for p in parts]), cat([p[1] for p in parts])
            self._add_grad(name, outer_sum(g, a, None if same else cat([p[2] for p in parts])))
        self.deferred, self.outer = {}, {}

    def _add_grad(self, name, dW) -> None:
        if name in self.gparams:
            self.gparams[name] += dW
        else:
            self.gparams[name] = dW              # fresh: no copy

    def scatter_cols(self, name, ids, g) -> None:
        """d(W @ onehot(ids)) into W's gradient: rows of W^T, kept as a transposed array
        so that the scatter touches only the rows of the words read."""
        p = self.m.params[name]
        if name not in self.gparams:
            self.gparams[name] = zeros((p.shape[1], p.shape[0]), p.dtype).T
        ok = ids >= 0
        scatter_add(self.gparams[name].T, ids[ok], g[ok])

    # ---------------------------------------------------------------- forward
    def go(self, want_grads):
        res = self.forward(want_grads)
        if want_grads:
            res.grads = self.backward()
        return res

    def forward(self, want_grads):
        """Every stage level by level (or at once), then the losses (with want_grads,
        their gradients into the buffers the backward pass reads)."""
        L, N = self.L, self.L.size
        inner = self.g.internal_only          # rows sorted by height: leaves first
        for st in self.ex.stages:
            for name in st.vars:
                rows = self.B if st.example else N
                self.vals[name] = np.zeros((rows, self.m.sizes[name]), self.m.dtype)
            if st.example:
                for name in st.vars:
                    self.eval_block(name, slice(0, self.B), None, example=True)
            elif st.recursive:
                for k in range(L.depth):
                    for name in st.vars:
                        if k or name not in inner:    # none at a leaf: zeros there
                            self.eval_block(name, slice(L.lo[k], L.lo[k + 1]), k == 0)
            else:
                nleaf = int(L.lo[1]) if L.depth else 0
                for name in st.vars:
                    v = self.ex.var_map[name]
                    if name in inner:
                        self.eval_block(name, slice(nleaf, N), None)
                    elif len(v.cases) == 1:
                        self.eval_block(name, slice(0, N), None)
                    else:
                        self.eval_block(name, slice(0, nleaf), True)
                        self.eval_block(name, slice(nleaf, N), False)
        loss, terms = self.losses(want_grads)
        return self.Result(loss, None, self.values(), {}, terms)

    def backward(self, seeds=None) -> dict:
        """The parameters' gradients; `seeds` adds gradients reaching per-example
        variables from outside this run (a decoder's, hybrid.py)."""
        for name, g in (seeds or {}).items():
            self.gbuf(name)[...] += g
        for name, rows, ev in reversed(self.program):
            g = self.gvals.get(name)
            if g is not None:
                ev.backward(g[rows])
        self.flush_deferred()
        return {p: self._grad(p, w) for p, w in self.m.params.items()}

    def _grad(self, p, w):
        g = self.gparams.get(p)
        if g is None:
            return np.zeros_like(w)
        return g.reshape(w.shape) if g.dtype == w.dtype else g.astype(w.dtype)

    def eval_block(self, name, rows: slice, leaf, example=False) -> None:
        if rows.stop <= rows.start:
            return
        v = self.ex.var_map[name]
        case = v.cases[0] if len(v.cases) == 1 else \
            next(c for c in v.cases if (c.cond == "leaf") == leaf)
        ev = _Eval(self, case.expr, rows, example)
        out = ev.vals[ev.out]
        self.vals[name][rows] = out
        self.program.append((name, rows, ev))

    # ---------------------------------------------------------------- losses
    def losses(self, want_grads):
        total, terms = 0.0, {}
        allrows = slice(0, self.L.size)
        for li, loss in enumerate(self.g.losses):
            if loss.target.var not in self.targets:
                continue
            # every node's term, or one an example: a per-example output, or one read
            # at the root
            ov = self.ex.var_map[loss.output.var]
            example = ov.index is None or loss.at_one_place
            rows = slice(0, self.B) if example else allrows
            o, oroute = self.read(loss.output, rows, example)
            y, _ = self.read(loss.target, rows, example)
            op = ops.LOSS_NAMES[loss.fn]
            per, saved = ops.forward(op, self.ctx, [o, y])
            s = float(per.sum())
            n = int((y >= 0).sum()) if y.dtype.kind == "i" else int(y.shape[0])
            terms[li] = (s, n)
            total += loss.weight * s / self.B
            if want_grads and oroute is not None:
                seed = np.full(per.shape, loss.weight / self.B, dtype=self.m.dtype)
                d = ops.vjp(op, seed, per, saved, [o, y])[0]
                self.route(oroute, d)
        return total, terms

    def value(self, name):
        """A per-example value this run computed ([B, n]; hybrid.py)."""
        return self.vals[name]

    def input_grad(self, name):
        """The gradient this run's backward pass left for input `name` (None: none)."""
        return self.gvals.get(name)

    def values(self) -> dict:
        return {v.name: self.vals[v.name] if v.index is None else
                self.vals[v.name][self.L.inv] for v in self.g.vars if v.role == "hidden"}


# ------------------------------------------------------------------------- the executor
class TreeExecutor(FallsBack):
    """Runs a tree model on a forest, level by level; the interpreter's signature and
    results (to rounding)."""

    def __init__(self, model, cut_inputs=()):
        self.m, self.g = model, model.graph
        self.var_map = model.graph.var_map
        self.fallback = None
        try:
            self.stages = plan(self.g)
        except Unsupported as e:
            self.fallback, self.stages = str(e), []
        self.has_dropout = has_dropout(self.g)
        self.cut_inputs = frozenset(cut_inputs)   # inputs that take a gradient (hybrid)
        self.mask_plan, self.no_masks = None, None
        if self.has_dropout and not self.fallback:
            try:
                self.mask_plan = MaskPlan(self.g, model.checked.dropouts)
            except NoMasks as e:
                self.no_masks = str(e)
        self._canon, self._drawing = {}, {}

    def canonical(self, expr) -> dict:
        """id(subexpression) -> one key per distinct subexpression (structural equality),
        so that `[h[n.left]; h[n.right]]` written three times is evaluated once."""
        out = self._canon.get(id(expr))
        if out is None:
            seen = {}
            out = {id(e): seen.setdefault(e, len(seen)) for e in walk(expr)}
            self._canon[id(expr)] = out
        return out

    def drawing(self, expr) -> frozenset:
        """The ids of the subexpressions of `expr` that hold a dropout drawing a mask."""
        out = self._drawing.get(id(expr))
        if out is None:
            out = set()
            for e in walk(expr):
                if sites(e):
                    out.add(id(e))
            out = self._drawing[id(expr)] = frozenset(out)
        return out

    def explain(self) -> list:
        if self.fallback:
            return [f"trees interpreted: {self.fallback}"]
        out = []
        for st in self.stages:
            how = "per example, all at once" if st.example else \
                "level by level (one gather, GEMM and scatter per level)" \
                if st.recursive else "all nodes at once"
            out.append(f"{', '.join(st.vars)}: {how}")
        if self.no_masks:
            out.append(f"training with dropout: interpreted ({self.no_masks})")
        elif self.has_dropout:
            out.append("training with dropout: level by level, the masks drawn as the "
                       "interpreter draws them")
        return out

    def run(self, inputs, targets=None, carry=None, train=False, grads=False, rng=None,
            lengths=None, forest=None, **kw):
        kw = {k: v for k, v in kw.items() if not (k == "teacher" and v >= 1.0)}
        if self.fallback or kw or carry or lengths or forest is None or \
                (train and self.has_dropout and self.mask_plan is None):
            return self.interp.run(inputs, targets, carry=carry, train=train, grads=grads,
                                   rng=rng, lengths=lengths, forest=forest, **kw)
        return _Run(self, inputs, targets, train, rng, forest).go(grads)


def tree_executor(owner):
    """The executor a compiled executor hands forests to (made on first use): this
    module's, or for a model over a tree and a sequence the hybrid (hybrid.py)."""
    ex = getattr(owner, "_tree_executor", None)
    if ex is None:
        if owner.m.graph.tree_and_sequence:
            from .hybrid import HybridExecutor
            ex = HybridExecutor(owner.m)
        else:
            ex = TreeExecutor(owner.m)
        owner._tree_executor = ex
    return ex
