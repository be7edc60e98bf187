"""Dropout masks for the compiled executors, drawn as the interpreter draws them.

The interpreter defines what a run with dropout computes, including which random numbers
make each mask. It visits the nodes of a forest in their order (children before parents,
node by node), at each node the variables in dependency order (ties by their order in
the spec), and in each equation the dropouts as it evaluates them: operands first, left
to right, a dropout written twice drawn twice. Each draw is one row of `rng.random`, as
wide as the value dropped, and a mask is (u >= p) / (1 - p).

Trees. At one node the draws form a segment whose layout depends only on the node's case
(leaf or not): the same sites, the same widths. The stream of a batch is the nodes'
segments one after another. `MaskPlan` lays out the two segments once per model, and per
batch draws the whole stream in one call (the same numbers, and the generator left in
the same state, as the interpreter's many small draws) and hands each block of rows its
masks by index arithmetic (`Masks`): O(nodes), no per-node Python.

Sequences. The interpreter visits (variable, step) in the order of the unfolded DAG's
schedule (model.schedule), each draw [B, width]. `SequenceLayout` reads that schedule
once per set of lengths and keeps each dropout's offset at each step; a batch draws the
stream in one call and a variable evaluated for all steps at once takes its [T, B, width]
masks by index arithmetic, as do the terms of a recurrence hoisted out of its loop
(`W @ dropout(x[t], p)`, in either direction of time) and the masks of a dropout inside
the loop, which plan.lower makes a hoisted input; each dropout object knows which of the
interpreter's draws it is (`sequence_sites`). Attention stages take them the same way,
for a variable over one index: all its steps at once, or in its loop this step's rows;
inside a reduction a dropout draws at every step reduced (`draw_order`).
"""
from __future__ import annotations

import networkx as nx
import numpy as np

from ..graph.folded import Apply, Ref, ShiftKind, walk
from ..graph.unfold import case_at
from ..ops import Op


class NoMasks(Exception):
    """The model draws masks in an order this module does not reproduce."""


def sites(expr) -> list:
    """The dropouts of an equation that draw (p > 0), in the interpreter's order."""
    return [e for e in walk(expr) if getattr(e, "op", None) is Op.DROPOUT
            and e.kw.get("p", 0) > 0]


def case_for(v, leaf: bool):
    """The case of a tree variable that a leaf (or an inner node) evaluates."""
    if len(v.cases) == 1:
        return v.cases[0]
    return next(c for c in v.cases if (c.cond == "leaf") == leaf)


def node_order(hidden, leaf: bool) -> list:
    """The hidden variables as the interpreter evaluates them at one node: a topological
    order of the same-node reads, the spec's order breaking ties (model._schedule sorts
    the unfolded DAG by (node, spec order))."""
    order = {v.name: i for i, v in enumerate(hidden)}
    g = nx.DiGraph()
    g.add_nodes_from(order)
    for v in hidden:
        for r in (e for e in walk(case_for(v, leaf).expr) if isinstance(e, Ref)):
            if r.var not in order:
                continue
            if r.shift.kind == ShiftKind.ROOT:
                raise NoMasks(f"'{v.name}' reads the root: its node waits for the tree")
            if r.shift.kind == ShiftKind.REL:
                g.add_edge(r.var, v.name)
    return list(nx.lexicographical_topological_sort(g, key=order.get))


def _draws_at_nodes_only(graph, hidden) -> None:
    """NoMasks unless every draw sits in a node's segment in the order `node_order`
    gives: no per-example variable draws, and no node variable that draws waits for the
    trees (reading, directly or through other node variables, a per-example variable
    that reads a tree: the interpreter evaluates it after all the trees' nodes; a direct
    root read is node_order's)."""
    g = graph.nx()
    tree_vars = {v.name for v in hidden}
    late = set()                      # variables evaluated once the trees are done
    for v in graph.vars:
        if v.role != "hidden" or v.index is not None:
            continue
        if sites(v.cases[0].expr):
            raise NoMasks(f"'{v.name}', a per-example variable, has a dropout")
        if tree_vars & nx.ancestors(g, v.name):
            late.add(v.name)
    grew = bool(late)
    while grew:                       # and the node variables that read those
        grew = False
        for name in tree_vars - late:
            if late & set(g.predecessors(name)):
                late.add(name)
                grew = True
    for v in hidden:
        if v.name in late and any(sites(c.expr) for c in v.cases):
            why = next(u for u in g.predecessors(v.name) if u in late)
            raise NoMasks(f"'{v.name}' reads '{why}', which waits for the trees")


class MaskPlan:
    """Where each dropout's draws sit in a node's segment, for leaves and inner nodes.
    `at[id(e)]` for the dropout object e: (its width, [its offset in an inner node's
    segment, in a leaf's]); the executor evaluates these very objects."""

    def __init__(self, graph, sizes: dict):
        hidden = [v for v in graph.vars if v.role == "hidden" and v.index is not None]
        _draws_at_nodes_only(graph, hidden)
        self.at, self.seg = {}, [0, 0]              # seg[1]: a leaf's length
        inner = graph.internal_only           # no value at a leaf: no draws there
        for leaf in (False, True):
            off, seen = 0, set()
            at = [v for v in hidden if not (leaf and v.name in inner)]
            for name in node_order(at, leaf):
                for e in sites(case_for(graph.var(name), leaf).expr):
                    width = sizes.get(e)
                    if width is None or not width.is_int:
                        raise NoMasks(f"dropout of '{name}' is not of a vector")
                    if id(e) in seen:
                        raise NoMasks(f"'{name}' reaches one dropout twice")
                    seen.add(id(e))
                    w, offs = self.at.setdefault(id(e), (int(width.const), [0, 0]))
                    offs[leaf] = off
                    off += w
            self.seg[leaf] = off

    def draw(self, rng, is_leaf: np.ndarray) -> Masks:
        """The uniform draws of one batch, nodes in the forest's order."""
        seg = np.where(is_leaf, self.seg[1], self.seg[0])
        start = np.concatenate([[0], np.cumsum(seg)[:-1]]).astype(np.int64)
        return Masks(self, rng.random(int(seg.sum())), start, is_leaf)


class Masks:
    """One batch's masks: `mask(e, nodes, dtype)`, those of dropout e for the rows of
    `nodes` (in the forest's numbering)."""

    def __init__(self, plan: MaskPlan, u, start, is_leaf):
        self.plan, self.u, self.start, self.is_leaf = plan, u, start, is_leaf

    def mask(self, e, nodes: np.ndarray, dtype) -> np.ndarray:
        p = e.kw["p"]
        w, offs = self.plan.at[id(e)]
        first = self.start[nodes] + np.where(self.is_leaf[nodes], offs[1], offs[0])
        u = self.u[first[:, None] + np.arange(w)]
        return (u >= p).astype(dtype) / (1.0 - p)    # as ops._dropout_fwd


# ---------------------------------------------------------------------------- sequences
def sequence_sites(graph, static: set, sizes: dict, recurrent: set,
                   attention: set = frozenset()) -> dict:
    """{id(dropout): (variable, k)}: which draw of the interpreter's each dropout object
    is, the k-th drawing dropout of that variable's equation. The executor evaluates
    these very objects (or copies that know them, Step.original): a variable of `static`
    for all its steps at once, and in a `recurrent` one the terms that do not read the
    cycle, hoisted out of the loop, and the masks of a dropout inside it (a hoisted
    input); in an `attention` stage, a variable over one index (or none): each step's
    masks, and inside a reduction each step's of the reduced index too
    (attention/program.py). NoMasks for a dropout in an init value, in a variable over two
    indexes, of a parameter or a number, or written once and reached twice."""
    out = {}
    for v in graph.vars:
        if v.init is not None and sites(v.init):
            raise NoMasks(f"'{v.name}' has a dropout in its init value")
        for case in v.cases:
            _attention_sites(v, case.expr, attention)
        for k, e in enumerate(s for case in v.cases for s in sites(case.expr)):
            if v.name not in static and v.name not in recurrent and \
                    v.name not in attention:
                raise NoMasks(f"'{v.name}' has a dropout in an attention stage")
            width = sizes.get(e)
            if width is None or not width.is_int:
                raise NoMasks(f"'{v.name}' has a dropout of something not a vector")
            if not any(isinstance(r, Ref) for r in walk(e.args[0])):
                raise NoMasks(f"'{v.name}' has a dropout of a parameter or a number")
            if id(e) in out:
                raise NoMasks(f"'{v.name}' reaches one dropout twice")
            out[id(e)] = (v.name, k)
    return out


def _attention_sites(v, expr, attention: set):
    """Refuse the dropouts of an attention variable over two indexes (its draws are not
    laid out by step)."""
    if v.name in attention and v.inner is not None and sites(expr):
        raise NoMasks(f"'{v.name}' has a dropout and is over two indexes")


def draw_order(expr, lengths: dict) -> list:
    """The interpreter's draws in one evaluation of `expr`, in its order: (k, iteration)
    for the k-th drawing dropout (`sites` order) and the steps of the reductions around
    it, outermost first (`sum over t (... dropout(h[t]) ...)` draws at every t). As the
    interpreter, an op over an index is evaluated once per value of the other indexes
    (interp.Interpreter._reduce)."""
    ks = {id(e): k for k, e in enumerate(sites(expr))}
    out, done = [], set()

    def visit(e, env: tuple):
        if not isinstance(e, Apply):
            return
        over = e.kw.get("over")
        if over is not None:
            key = (id(e), tuple(kv for kv in env if kv[0] != over))
            if key not in done:
                done.add(key)
                for s in range(lengths[over]):
                    visit(e.args[0], env + ((over, s),))
            return
        for a in e.args:
            visit(a, env)
        if id(e) in ks:
            out.append((ks[id(e)], env))

    visit(expr, ())
    return out


class SequenceLayout:
    """Where the interpreter's draws for one set of lengths fall in the stream, per
    example: `at[(var, k)]` = (width, offsets [steps, *reduced steps], the indexes of
    those axes) of the k-th drawing dropout of `var` (the variable's own index first,
    None for a value per example, then the reductions around the dropout, outermost
    first); `width` the stream's length per example."""

    def __init__(self, model, lengths: dict):
        at, off = {}, 0
        for name, step in model.schedule(lengths):
            v = model.graph.var(name)
            if step == "init":
                continue                  # no dropout in init values (checked)
            expr = case_at(v, step).expr
            ks = sites(expr)
            for k, env in draw_order(expr, lengths):
                w = int(model.checked.dropouts[ks[k]].const)
                entry = at.setdefault((name, k), (w, {}, tuple(i for i, _ in env)))
                entry[1][(_step(step), tuple(s for _, s in env))] = off
                off += w
        self.at = {}
        for (name, k), (w, offs, overs) in at.items():
            # offsets in step order (the schedule may visit a variable's steps in
            # another: after a recurrence that runs backward in time, say)
            keys = sorted(offs)
            shape = (len({s for s, _ in keys}),) + tuple(
                1 + max(it[j] for _, it in keys) for j in range(len(overs)))
            flat = np.asarray([offs[key] for key in keys], np.int64).reshape(shape)
            self.at[(name, k)] = (w, flat, (model.graph.var(name).index, *overs))
        self.width = off
        self.size = 1 + sum(flat.size for _, flat, _ in self.at.values())  # (LengthCache)

    def draw(self, rng, B: int, dtype, site_of: dict) -> SequenceMasks:
        return SequenceMasks(self, rng.random(self.width * B), B, dtype, site_of)


def _step(s):
    return -1 if s is None else s


class SequenceMasks:
    """One batch's masks: `mask(var, k, p)` is [T*B, width] for a variable over an index
    (time-major, as the executor's rows), [B, width] for one per example; `of(e)` those
    of the dropout object e (`sequence_sites`)."""

    def __init__(self, layout: SequenceLayout, u, B: int, dtype, site_of: dict):
        self.layout, self.u, self.B, self.dtype = layout, u, B, dtype
        self.site_of = site_of

    def of(self, e) -> np.ndarray:
        return self.mask(*self.site_of[id(e)], e.kw["p"])

    def shaped(self, e) -> tuple:
        """The masks of dropout e as [steps, *reduced steps, B, width], and the indexes of
        the leading axes (layout.at)."""
        var, k = self.site_of[id(e)]
        w, offs, names = self.layout.at[(var, k)]
        return self.mask(var, k, e.kw["p"]).reshape(offs.shape + (self.B, w)), names

    def mask(self, var: str, k: int, p: float) -> np.ndarray:
        """[steps * (reduced steps) * B, width], rows in that order."""
        w, offs, _ = self.layout.at[(var, k)]
        offs = offs.reshape(-1)
        # a draw at stream offset o (per example) is u[o*B : (o+w)*B] as [B, w]
        if len(offs) == 1 or (np.diff(offs) == w).all():     # one block: a view
            u = self.u[offs[0] * self.B:(offs[0] + len(offs) * w) * self.B].reshape(-1, w)
        else:
            first = offs[:, None] * self.B + np.arange(self.B)[None, :] * w
            u = self.u[first[:, :, None] + np.arange(w)].reshape(-1, w)
        return (u >= p).astype(self.dtype) / (1.0 - p)    # as ops._dropout_fwd
