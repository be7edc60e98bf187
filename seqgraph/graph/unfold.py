"""Unfolding: the folded graph over concrete lengths becomes a DAG of (variable, step).

A reference `h[t-1]` at step s names the node (h, s-1); one that reaches before the
first step (or past the last, for an advance) names what stands there instead: the
carried state of the previous window, the `init` value (node (h, "init")), or zero.
`Source` says which, so that both executors read the same thing.

A reduction evaluated at a step of its own index (`softmax over t (e[u, t])` in a[u, t],
elaborated as exp(E - logsumexp over t (E))) has one value per values of the other
indexes, read at every step: it is one node, (Reduced, u), that reads e[u, t'] for every
t' and is read by every a[u, t]. Joined directly, every a[u, t] would read every e[u, t']:
U x T^2 edges (T = U = 300: 27 million, 12 GB and two minutes to unfold). `direct` gives
those edges back for a small picture or text.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from ..ops import REDUCTIONS
from .folded import CHILD, Apply, FoldedGraph, Ref, ShiftKind, walk


@dataclass(frozen=True)
class Roots:
    """`h[root]` read where no node is current (a per-example value, a loss counted once
    a tree): every tree's root, in the batch's order."""
    var: str
    nodes: tuple


@dataclass(frozen=True)
class Reduced:
    """A reduction read at several steps of its own index, as an unfolded node's variable:
    the `k`-th such reduction (`op` over `over`) in `var`'s expression. Its node is
    (Reduced, step of the other index), or (Reduced, None) when there is none; it is no
    variable's value (role "reduction"): the executors evaluate it where it is read."""
    var: str
    k: int
    op: str
    over: str
    expr: Apply = field(compare=False, repr=False)      # the reduction itself

    @property
    def label(self) -> str:
        return f"{self.op} over {self.over}"


@dataclass(frozen=True)
class Outside:
    """A read that falls outside the sequence: `steps` before the start (or after the end)."""
    var: str
    steps: int
    before: bool


def resolve(ref: Ref, step, length: int | None, forest=None):
    """The node a reference reads at `step` of its equation's index: a (var, step) key,
    (var, None) for a per-example value, or an Outside. Over a tree index, steps are the
    forest's node numbers and `n.left`, `n.right`, `root` follow its arrays; `root` read
    where no node is current gives the Roots of the batch."""
    s = ref.shift
    if s.kind == ShiftKind.NONE:
        return (ref.var, None)
    if s.kind in CHILD:
        return (ref.var, int((forest.left if s.kind == ShiftKind.LEFT else forest.right)[step]))
    if s.kind == ShiftKind.ROOT:
        if step is None:
            return Roots(ref.var, tuple((ref.var, int(r)) for r in forest.roots))
        return (ref.var, int(forest.roots[forest.tree[step]]))
    if s.kind == ShiftKind.FIRST:
        return (ref.var, 0)
    if s.kind == ShiftKind.END:
        return (ref.var, length - 1)
    j = step + s.k
    if j < 0:
        return Outside(ref.var, -j, True)
    if j >= length:
        return Outside(ref.var, j - length + 1, False)
    return (ref.var, j)


def lengths_ok(graph: FoldedGraph, lengths: dict):
    for v in graph.vars:
        if v.index is not None and graph.index_kinds.get(v.index) == "seq" \
                and v.index not in lengths:
            raise KeyError(f"no length for index '{v.index}' (variable '{v.name}')")


def unfold(graph: FoldedGraph, lengths: dict, forest=None) -> nx.DiGraph:
    """The computation DAG over `lengths` ({index: T}). Nodes: (var, step) with step
    0-based, (var, None) per example, (var, "init") for an init value, (Reduced, step)
    for a reduction read at every step of its own index (see the top); every edge
    carries the `shift` of the reference it comes from. No shifted edge survives: an edge
    always joins two concrete nodes."""
    lengths_ok(graph, lengths)
    g = nx.DiGraph()
    inner = graph.internal_only           # no value at a leaf: no node there
    for v in graph.vars:
        for step in _steps(v, lengths, forest if v.name in inner else None):
            g.add_node((v.name, step), var=v.name, step=step, role=v.role, index=v.index)
    for v in graph.vars:
        reduced = reductions(v)
        if v.init is not None:
            g.add_node((v.name, "init"), var=v.name, step="init", role="init", index=None)
            _add_reads(g, graph, v.init, {}, (v.name, "init"), lengths, forest, reduced)
        for step in _steps(v, lengths, forest if v.name in inner else None) \
                if v.cases else ():
            _add_reads(g, graph, case_at(v, step, forest).expr, env_of(v, step),
                       (v.name, step), lengths, forest, reduced)
    return g


def _add_reads(g, graph, expr, env, node, lengths, forest, reduced) -> None:
    """The edges into `node` from what `expr` reads at `env`; a reduction read at a step
    of its own index through its node (made, with its own reads, the first time)."""
    for r, at in reads(expr, env, lengths, reduced):
        if isinstance(r, Reduced):              # `at`: the other indexes' values
            hub = (r, _outer_step(at))
            if hub not in g:                    # it reads E at every step of its index
                one = len(at) == 1              # drawn in the column of u's step
                g.add_node(hub, var=None, step=hub[1] if one else None, role="reduction",
                           label=r.label, index=next(iter(at)) if one else None)
                _add_reads(g, graph, r.expr, at, hub, lengths, forest, reduced)
            g.add_edge(hub, node, shift=None)
            continue
        src = position(graph, r, at, lengths, forest)
        if isinstance(src, Roots):
            g.add_edges_from(((n, node) for n in src.nodes), shift=r.shift)
        elif isinstance(src, Outside):
            if graph.var(src.var).init is not None:
                g.add_edge((src.var, "init"), node, shift=r.shift)
            else:   # the initial state: zero, a start token, or the carry
                g.nodes[node].setdefault("outside", []).append(src)
        else:
            g.add_edge(src, node, shift=r.shift)


def direct(g: nx.DiGraph) -> nx.DiGraph:
    """A copy of the DAG without reductions' nodes: what one reads joined to each of its
    readers (a[u, t] reads every e[u, t'] again; U x T^2 edges for attention, for a
    text of a few steps)."""
    g = g.copy()
    for n in [n for n, role in g.nodes(data="role") if role == "reduction"]:
        for b in g.successors(n):
            g.add_edges_from((a, b, data) for a, _, data in g.in_edges(n, data=True))
            if g.nodes[n].get("outside"):
                g.nodes[b].setdefault("outside", []).extend(g.nodes[n]["outside"])
        g.remove_node(n)
    return g


def env_of(v, step) -> dict:
    """The index values at a node: {} per example, {t: 3}, or {u: 1, t: 3}."""
    if v.index is None or step == "init":
        return {}
    if v.inner is not None:
        return {v.index: step[0], v.inner: step[1]}
    return {v.index: step}


def reads(expr, env: dict, lengths: dict, reduced=None):
    """Every (reference, index values) an expression reads at `env`; a reduction
    `sum over t (E)` reads E at every step of t. One of `reduced` ({id: Reduced}) read at
    a step of its own index (`env` holds t) gives (Reduced, the other indexes' values):
    it is read through its node."""
    if isinstance(expr, Ref):
        yield expr, env
    elif isinstance(expr, Apply):
        over = expr.kw.get("over")
        if over is not None and over in env and reduced and id(expr) in reduced:
            yield reduced[id(expr)], {k: s for k, s in env.items() if k != over}
            return
        for a in expr.args:
            if over is None:
                yield from reads(a, env, lengths, reduced)
            else:
                for s in range(lengths[over]):
                    yield from reads(a, {**env, over: s}, lengths, reduced)


def reductions(v) -> dict:
    """{id(reduction): Reduced} for the reductions in v's expressions (its init value
    and its cases), numbered in reading order."""
    out = {}
    for expr in ([v.init] if v.init is not None else []) + [c.expr for c in v.cases]:
        for e in walk(expr):
            if isinstance(e, Apply) and "over" in e.kw and id(e) not in out:
                out[id(e)] = Reduced(v.name, len(out), _op_name(e.op), e.kw["over"], e)
    return out


def _op_name(op) -> str:
    """A reduction op by its name in the language: `logsumexp`, `sum`."""
    return next((name for name, o in REDUCTIONS.items() if o is op), str(op.value))


def _outer_step(env: dict):
    """The step of a reduction's node: the other index's value ({u: 2}: 2), None for
    none, a tuple of (index, value) for several."""
    if not env:
        return None
    if len(env) == 1:
        return next(iter(env.values()))
    return tuple(sorted(env.items()))


def position(graph, r: Ref, env: dict, lengths: dict, forest=None):
    """The node a reference reads at the index values `env` (see `resolve`)."""
    v = graph.var(r.var)
    if v.inner is not None:        # read at the current steps only (checked)
        return (r.var, (env[v.index], env[v.inner]))
    return resolve(r, env.get(v.index), lengths.get(v.index), forest)


def case_at(v, step, forest=None):
    """The equation that defines `v` at `step`: its only one, or over a tree the `if leaf`
    case at leaves and the `otherwise` case at internal nodes."""
    if len(v.cases) == 1:
        return v.cases[0]
    leaf = bool(forest.left[step] < 0)
    return next(c for c in v.cases if (c.cond == "leaf") == leaf)


def _steps(v, lengths, internal=None):
    """The steps (nodes) of v; with a forest `internal`, its internal nodes only."""
    if v.index is None:
        return [None]
    if internal is not None:
        return [int(i) for i in np.flatnonzero(internal.left >= 0)]
    if v.inner is not None:
        return [(a, b) for a in range(lengths[v.index]) for b in range(lengths[v.inner])]
    return range(lengths[v.index])


def step_key(step) -> tuple:
    """A sort key for steps of any kind: per example and init first, then by step."""
    if step is None or step == "init":
        return (-1, -1)
    return tuple(step) if isinstance(step, tuple) else (step, -1)


def loss_terms(graph: FoldedGraph, loss, lengths: dict, forest=None) -> list:
    """The terms of a loss line over an unfolding, as (output node, target node): one
    at each step (node) of its output, or read at one place (`o[end]`, `o[1]`,
    `o[root]`) one an example, there (the executors' rule, interp.py `_losses`)."""
    v = graph.var(loss.output.var)
    if not loss.at_one_place:                # the target where this step reads it
        return [((v.name, s), position(graph, loss.target, env_of(v, s), lengths, forest))
                for s in _steps(v, lengths)]

    def nodes(ref):
        src = position(graph, ref, {}, lengths, forest)
        return list(src.nodes) if isinstance(src, Roots) else [src]
    outs, tgts = nodes(loss.output), nodes(loss.target)
    return list(zip(outs, tgts * len(outs) if len(tgts) == 1 else tgts, strict=True))


def text(graph: FoldedGraph, lengths: dict) -> str:
    """The canonical text form of the unfolded DAG: one node a line, in a topological
    order, with what it reads (steps shown 1-based, as the textbook counts): a[u, t]
    reads every e[u, t'] its softmax over t reads."""
    g = direct(unfold(graph, lengths))
    order = {v.name: i for i, v in enumerate(graph.vars)}

    def key(n):
        return (step_key(n[1]), order[n[0]])
    lines = []
    for n in nx.lexicographical_topological_sort(g, key=key):
        preds = [node_name(p) for p in sorted(g.predecessors(n), key=key)]
        preds += [_outside_name(o) for o in g.nodes[n].get("outside", [])]
        if g.nodes[n]["role"] in ("input", "target") and not preds:
            continue
        lines.append(f"{node_name(n)} <- " + (", ".join(preds) or "()"))
    for i, loss in enumerate(graph.losses):
        for o, t in loss_terms(graph, loss, lengths):
            step = o[1] if loss.output.shift.kind == ShiftKind.REL else None
            weight = "" if loss.weight == 1 else f"  (x {loss.weight:g})"
            lines.append(f"loss{i + 1}{'' if step is None else f'[{step + 1}]'} <- "
                         f"{node_name(o)}, {node_name(t)}{weight}")
    return "\n".join(lines) + "\n"


def _outside_name(o: Outside) -> str:
    """The initial state h[0] (h[-1] for a delay of 2), or h[T+1] past the end."""
    return f"{o.var}[{1 - o.steps}]" if o.before else f"{o.var}[T+{o.steps}]"


def node_name(n) -> str:
    """An unfolded node as text: `h[3]` (the language counts steps from 1), `e[2, 1]`,
    `init(h)`, or the variable alone for a value per example."""
    var, step = (n[0], n[1] if len(n) > 1 else None) if isinstance(n, tuple) else (n, None)
    if step is None:
        return var
    if step == "init":
        return f"init({var})"
    if isinstance(step, tuple):
        return f"{var}[{', '.join(str(s + 1) for s in step)}]"
    return f"{var}[{step + 1}]"
