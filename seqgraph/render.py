"""Folded and unfolded graphs as pictures: DOT text, laid out by Graphviz into SVG or PNG.

The folded graph is drawn the way Deep Learning draws it (Fig. 10.2 to 10.14): a node per
variable, bottom to top from inputs to losses, and every reference with a shift routed
through a small black square, the *delay*, labelled with its shift (`-1`, `+1`, `L`,
`R`). A recurrence that runs backward in time (`g[t+1]`) is drawn in red.

The unfolded graph is the computation DAG over concrete lengths (Fig. 10.3, right): one
column per step, left to right; per-example values and init values get columns of their
own, placed between the sequences they read from and the ones that read them.

DOT is written here as text; `write` calls the system `dot`, or `graphviz-pure` (a port
of `dot` with the same command line) when there is no system Graphviz.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import networkx as nx

from .errors import SeqgraphError, UsageError
from .graph.folded import CHILD, FoldedGraph, ShiftKind, Var, params_of, refs
from .graph.unfold import loss_terms, node_name

FONT = "Helvetica"
BACKWARD = "#c62828"      # a recurrence reading the future: g[t+1]
FORWARD = "#1f3f8f"       # a recurrence edge in the unfolded graph
TREE = "#2e7d32"          # children of a tree node

# role -> node attributes; a per-example variable adds a double border
STYLE = {
    "input": dict(shape="box", style="rounded,filled", fillcolor="#cfe3ff"),
    "target": dict(shape="box", style="rounded,filled", fillcolor="#d4efd0"),
    "hidden": dict(shape="ellipse", style="filled", fillcolor="#fff4cc"),
    "loss": dict(shape="octagon", style="filled", fillcolor="#f9cfcf"),
    "param": dict(shape="box", style="filled", fillcolor="#eeeeee", fontsize="10",
                  color="#888888", fontcolor="#333333", height="0.3"),
    "init": dict(shape="ellipse", style="dashed,filled", fillcolor="#fffbea"),
    # a reduction read at every step of its own index: `logsumexp over t` in a[u, t]
    "reduction": dict(shape="box", style="rounded,dashed", fontsize="10", color="#888888",
                      fontcolor="#333333", height="0.3"),
    "delay": dict(shape="square", style="filled", fillcolor="black", fontcolor="white",
                  fontsize="9", width="0.28", height="0.28", fixedsize="true",
                  margin="0"),
}


# ------------------------------------------------------------------------ DOT writing
class Html(str):
    """An HTML-like label (a table, a colour bar): written between < > in DOT."""


def quote(s) -> str:
    """A DOT string literal; real newlines become DOT's centred line breaks."""
    if isinstance(s, Html):
        return f"<{s}>"
    s = str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def _attrs(d: dict) -> str:
    items = [f"{k}={quote(v)}" for k, v in d.items() if v is not None]
    return f" [{', '.join(items)}]" if items else ""


class Dot:
    """A small DOT text builder: nodes, edges and `rank=same` groups, in insertion order."""

    def __init__(self, name: str, **graph_attrs):
        self.name = name
        # nodes drawn over the edges: an edge the layout routes across a node (graphviz-
        # pure does, past a black delay square) goes behind it, not over its label ("-1"
        # read as "1")
        self.graph_attrs = {"outputorder": "edgesfirst", **graph_attrs}
        self.nodes: list[str] = []
        self.edges: list[str] = []
        self.groups: list[tuple[str, list[str], dict]] = []

    def node(self, nid: str, **attrs) -> str:
        self.nodes.append(f"  {quote(nid)}{_attrs(attrs)};")
        return nid

    def edge(self, a: str, b: str, **attrs) -> None:
        self.edges.append(f"  {quote(a)} -> {quote(b)}{_attrs(attrs)};")

    def same_rank(self, name: str, ids: list[str], **attrs) -> None:
        self.groups.append((name, ids, attrs))

    def text(self) -> str:
        out = [f"digraph {quote(self.name)} {{"]
        out += [f"  {k}={quote(v)};" for k, v in self.graph_attrs.items()]
        out.append(f"  node [fontname={quote(FONT)}, fontsize=\"12\"];")
        out.append(f"  edge [fontname={quote(FONT)}, fontsize=\"10\", arrowsize=\"0.7\"];")
        out += self.nodes
        for name, ids, attrs in self.groups:
            extra = "".join(f" {k}={quote(v)};" for k, v in attrs.items())
            members = " ".join(f"{quote(i)};" for i in ids)
            out.append(f"  subgraph {quote(name)} {{ rank=same;{extra} {members} }}")
        out += self.edges
        out.append("}")
        return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- sizes
def _graph_and_sizes(spec_or_graph, sizes):
    """Accept a FoldedGraph or anything with `.graph` (what `read_spec` returns); sizes
    passed in win over the ones the object carries."""
    if isinstance(spec_or_graph, FoldedGraph):
        graph, known = spec_or_graph, {}
    else:
        graph = getattr(spec_or_graph, "graph", None)
        if not isinstance(graph, FoldedGraph):
            raise UsageError(f"cannot render {type(spec_or_graph).__name__}: "
                             "expected a FoldedGraph or a spec read by seqgraph.read_spec")
        known = _sizes_of_spec(spec_or_graph)
    return graph, {**known, **(sizes or {})}


def _sizes_of_spec(spec) -> dict:
    """Whatever sizes the checker left on a spec: variable sizes and parameter shapes."""
    out: dict = {}
    for holder in (spec, getattr(spec, "checked", None)):
        if holder is None:
            continue
        for attr in ("param_shapes", "shapes", "sizes"):
            val = getattr(holder, attr, None)
            if isinstance(val, dict):
                out.update(val)
    return out


def _dims(graph: FoldedGraph, dims: dict | None) -> dict:
    return {**dict(graph.dims), **(dims or {})}


def _show_size(size, dims: dict) -> str:
    """128, or a dim name resolved through dims, or the name itself when unbound."""
    if size is None:
        return ""
    if hasattr(size, "bind"):                     # a linear form from the checker: H+V
        size = size.bind({k: v for k, v in dims.items() if isinstance(v, int)}).value()
    if isinstance(size, str):
        return str(dims.get(size, size))
    return str(size)


def _var_size(v: Var, sizes: dict, dims: dict) -> str:
    size = sizes.get(v.name, v.size)
    if isinstance(size, (tuple, list)):          # a shape (n,) for a vector
        size = size[0] if len(size) == 1 else "x".join(map(str, size))
    return _show_size(size, dims)


def _param_shape(p, sizes: dict, dims: dict) -> str:
    shape = sizes.get(p.name, p.shape)
    if not shape:                                 # unknown, or unused (no shape)
        return ""
    if not isinstance(shape, (tuple, list)):
        shape = (shape,)
    return "[" + ", ".join(_show_size(s, dims) for s in shape) + "]"


def var_label(v: Var, sizes: dict, dims: dict) -> str:
    """`h[t] : 128`, `x[t] : onehot(65)`, `c : 128` (per example), `e[u, t] : 1`."""
    ix = [i for i in (v.index, v.inner) if i]
    head = f"{v.name}[{', '.join(ix)}]" if ix else v.name
    size = _var_size(v, sizes, dims)
    if v.kind and v.role in ("input", "target"):
        return f"{head} : {v.kind}({size})" if size else f"{head} : {v.kind}"
    return f"{head} : {size}" if size else head


def _var_attrs(v: Var) -> dict:
    attrs = dict(STYLE[v.role])
    if v.index is None:
        attrs["peripheries"] = "2"            # one value per example (a context c)
    return attrs


def _loss_label(i: int, loss, graph: FoldedGraph) -> str:
    def show(r):
        return f"{r.var}[{r.shift.show(graph.var(r.var).index)}]" \
            if graph.var(r.var).index else r.var
    w = "" if loss.weight == 1 else f"{loss.weight:g} * "
    name = "L" if len(graph.losses) == 1 else f"L{i + 1}"
    return f"{name} = {w}{loss.fn}({show(loss.output)}, {show(loss.target)})"


# ---------------------------------------------------------------------- folded graph
def _delay_attrs(shift) -> tuple[dict, dict]:
    """(square attributes, edge attributes) for a delay: +k squares and edges are red."""
    square = dict(STYLE["delay"], label=shift.label())
    edge: dict = {}
    if shift.kind in CHILD:
        edge = dict(color=TREE)
    elif shift.direction > 0:
        square.update(color=BACKWARD, penwidth="2.5")
        edge = dict(color=BACKWARD, penwidth="1.4")
    return square, edge


def folded_dot(spec_or_graph, params: bool = False, sizes: dict | None = None,
               dims: dict | None = None) -> str:
    """The folded graph as DOT text (Fig. 10.2 style): variables, delays, losses and,
    with `params`, the parameters feeding the variables that use them."""
    graph, sizes = _graph_and_sizes(spec_or_graph, sizes)
    dims = _dims(graph, dims)
    dot = Dot(graph.name, rankdir="BT", nodesep="0.35", ranksep="0.45",
              label=f"{graph.name} (folded)", labelloc="t", fontname=FONT)
    vid = {v.name: f"var:{v.name}" for v in graph.vars}
    for v in graph.vars:
        dot.node(vid[v.name], label=var_label(v, sizes, dims), **_var_attrs(v))

    beside: dict[str, list[str]] = {}   # variable -> delay squares drawn beside it
    delays_from = _folded_delays(dot, graph, vid, beside)
    seen = set()
    for u, v, data in graph.nx().edges(data=True):
        shift = data["shift"]
        if data.get("init") or shift.is_delay or (u, v, shift) in seen:
            continue                     # inits drawn below, into the `init` node
        seen.add((u, v, shift))
        label = None if shift.kind in (ShiftKind.REL, ShiftKind.NONE) \
            else shift.show(graph.var(u).index)
        dot.edge(vid[u], vid[v], label=label)
    beside = {vid[v]: ds for v, ds in beside.items()}
    _folded_inits(dot, graph, vid, delays_from)
    for i, loss in enumerate(graph.losses):
        lid = dot.node(f"loss:{i}", label=_loss_label(i, loss, graph), **STYLE["loss"])
        dot.edge(vid[loss.output.var], lid)
        dot.edge(vid[loss.target.var], lid, style="dashed")
    if params:
        for user, pids in _folded_params(dot, graph, vid, sizes, dims).items():
            beside.setdefault(user, []).extend(pids)
    for node, others in beside.items():
        dot.same_rank(f"beside:{node}", [node, *others])
    return dot.text()


def _folded_delays(dot: Dot, graph: FoldedGraph, vid: dict, beside: dict) -> dict:
    """A square per delayed value (`h[t-1]`), as the book draws it, with an edge to every
    variable that reads it (a GRU's r, z, n and h read one h[t-1]; it was a square per
    reader). A square read once sits beside its reader; one read by several is laid out
    below the lowest of them. Same-step edges decide the layers (they form a DAG: every
    cycle crosses a delay). Returns {u: its squares}."""
    readers: dict = {}                  # (u, shift) -> the variables reading it
    for u, v, data in graph.nx().edges(data=True):
        if data["shift"].is_delay and not data.get("init"):
            vs = readers.setdefault((u, data["shift"]), [])
            if v not in vs:
                vs.append(v)
    delays_from: dict[str, list[str]] = {}
    for i, ((u, shift), vs) in enumerate(readers.items()):
        d = f"delay:{i}"
        square, eattrs = _delay_attrs(shift)
        dot.node(d, **square)
        dot.edge(vid[u], d, arrowhead="none", constraint="false", **eattrs)
        for v in vs:
            dot.edge(d, vid[v], **eattrs)
        if len(vs) == 1:
            beside.setdefault(vs[0], []).append(d)
        delays_from.setdefault(u, []).append(d)
    return delays_from


def _folded_inits(dot: Dot, graph: FoldedGraph, vid: dict, delays_from: dict) -> None:
    """`init s = tanh(Vi @ c)`: a dashed node fed by what the init reads, feeding every
    delay square on s (the value those delays give before the first step)."""
    for v in graph.vars:
        if v.init is None:
            continue
        nid = dot.node(f"init:{v.name}", label=f"init {v.name}", **STYLE["init"])
        vid[f"init {v.name}"] = nid
        for r in {r.var for r in refs(v.init)}:
            dot.edge(vid[r], nid, style="dashed")
        for d in delays_from.get(v.name, []) or [vid[v.name]]:
            dot.edge(nid, d, style="dashed", constraint="false")


def _folded_params(dot: Dot, graph: FoldedGraph, vid: dict, sizes: dict,
                   dims: dict) -> dict:
    """A node per parameter, beside the first variable that uses it (so parameters do
    not add layers), with a dotted edge to every user. Returns {user: [param nodes]}."""
    users: dict[str, list[str]] = {}
    for v in graph.vars:
        for e in [c.expr for c in v.cases]:
            for p in params_of(e):
                users.setdefault(p, []).append(vid[v.name])
        if v.init is not None:
            for p in params_of(v.init):
                users.setdefault(p, []).append(f"init:{v.name}")
    declared = {p.name: p for p in graph.params}
    placed: dict[str, list[str]] = {}
    for name in list(declared) + [p for p in users if p not in declared]:
        shape = _param_shape(declared[name], sizes, dims) if name in declared else ""
        pid = dot.node(f"param:{name}", label=f"{name} {shape}".strip(), **STYLE["param"])
        mine = list(dict.fromkeys(users.get(name, [])))
        for user in mine:
            dot.edge(pid, user, color="#999999", arrowsize="0.5", style="dotted",
                     constraint="false")
        if mine:
            placed.setdefault(mine[0], []).append(pid)
    return placed


# --------------------------------------------------------------------- unfolded graph
@dataclass(frozen=True)
class Column:
    """One column of the unfolded picture: a step of an index, or a column of
    per-example / init values (`index` None) at a position between the sequences."""
    level: int
    order: int
    index: str | None
    step: int | None


def _node_var(node):
    return node[0] if isinstance(node, tuple) else str(node)


def _node_step(node):
    return node[1] if isinstance(node, tuple) and len(node) > 1 else None


def _block(graph: FoldedGraph, dag: nx.DiGraph, node):
    """The index a node belongs to (its sequence), or the node itself when it is a free
    value (per example, init) to be placed between sequences."""
    attrs = dag.nodes[node]
    if "index" in attrs and attrs.get("step", _node_step(node)) not in (None, "init"):
        return ("index", attrs["index"])
    step = _node_step(node)
    var = graph.var_map.get(_node_var(node))
    if isinstance(step, int) and var is not None and var.index is not None:
        return ("index", var.index)
    return ("free", node)


def _backward(graph: FoldedGraph, var: str) -> bool:
    """True when every delay on `var`'s own recurrence reads the future (g[t+1])."""
    v = graph.var_map.get(var)
    if v is None:
        return False
    dirs = {r.shift.direction for c in v.cases for r in refs(c.expr)
            if r.var == var and r.shift.is_delay}
    return dirs == {1}


def layout_columns(graph: FoldedGraph, dag: nx.DiGraph) -> dict:
    """node -> Column. Sequences are blocks of columns; a free value goes right after
    the blocks it reads and, when it reads none, right before the first one it feeds.
    The init of a backward recurrence goes after its sequence (it is read at the end)."""
    blocks = nx.DiGraph()
    block_of = {n: _block(graph, dag, n) for n in dag.nodes}
    blocks.add_nodes_from(block_of.values())
    late_init = {n for n in dag.nodes if dag.nodes[n].get("late")
                 or (_node_step(n) == "init" and _backward(graph, _node_var(n)))}
    for a, b in dag.edges:
        ba, bb = block_of[a], block_of[b]
        if ba != bb and a not in late_init:
            blocks.add_edge(ba, bb)
    cond = nx.condensation(blocks)
    level = {}
    for c in nx.topological_sort(cond):
        preds = [level[p] for p in cond.predecessors(c)]
        level[c] = max(preds) + 1 if preds else 0
    blevel = {b: level[cond.graph["mapping"][b]] for b in blocks.nodes}
    for b in blocks.nodes:                  # sources: as late as their first consumer
        succ = [blevel[s] for s in blocks.successors(b)]
        if b[0] == "free" and not list(blocks.predecessors(b)) and succ:
            blevel[b] = min(succ) - 1
    for n in late_init:
        var = graph.var_map[_node_var(n)]
        blevel[block_of[n]] = blevel.get(("index", var.index), 0) + 1
    index_order = {name: i for i, (name, _) in enumerate(graph.indexes)}
    cols = {}
    for n, b in block_of.items():
        if b[0] == "index":
            step = dag.nodes[n].get("step", _node_step(n))
            if isinstance(step, tuple):     # e[u, t] stands in the column of its u
                step = step[0]
            cols[n] = Column(2 * blevel[b], index_order.get(b[1], 99), b[1], step)
        else:
            # free values sit on odd levels, between the blocks at even levels
            cols[n] = Column(2 * blevel[b] + 1 if blevel[b] >= 0 else -1, 0, None, None)
    return cols


def _unfold(graph: FoldedGraph, lengths: dict):
    from .graph.unfold import unfold
    return unfold(graph, lengths)


def _step_label(node, attrs: dict) -> str:
    if "label" in attrs:
        return str(attrs["label"])
    if _node_step(node) == "init":
        return f"init {_node_var(node)}"       # as the statement writes it
    return node_name(node)


def _node_style(graph: FoldedGraph, dag: nx.DiGraph, node) -> dict:
    if dag.nodes[node].get("loss") is not None:
        return dict(STYLE["loss"])
    if _node_step(node) == "init":
        return dict(STYLE["init"])
    if dag.nodes[node].get("role") == "reduction":
        return dict(STYLE["reduction"])
    if dag.nodes[node].get("initial_state"):
        return dict(shape="plaintext", fontcolor="#666666")
    v = graph.var_map.get(_node_var(node))
    return _var_attrs(v) if v is not None else {}


def _add_losses(graph: FoldedGraph, dag: nx.DiGraph, lengths: dict,
                forest=None) -> nx.DiGraph:
    """The loss terms as nodes fed by output and target (Fig. 10.3's L): one per step of
    the output, or one an example where a loss read at one place reads (`o[end]`,
    `o[root]`: unfold.loss_terms); its weight shown when not 1. The unfolder's DAG stops
    at the outputs."""
    if any(d.get("loss") is not None for _, d in dag.nodes(data=True)):
        return dag
    g = dag.copy()
    for i, loss in enumerate(graph.losses):
        name = "L" if len(graph.losses) == 1 else f"L{i + 1}"
        weight = "" if loss.weight == 1 else f" x {loss.weight:g}"
        index = graph.var(loss.output.var).index
        for o, t in loss_terms(graph, loss, lengths, forest):
            step = _node_step(o)
            ln = (f"loss:{i}", step)
            label = (f"{name}[{step + 1}]" if isinstance(step, int) else name) + weight
            g.add_node(ln, loss=i, index=index, step=step, label=label, role="loss")
            g.add_edge(o, ln)
            if t in g:
                g.add_edge(t, ln, target=True)
    return g


def _add_outside(dag: nx.DiGraph) -> nx.DiGraph:
    """The initial state a recurrence reads before its first step (h[0], zero or the
    carried state; h[T+1] past the end for a backward one), as a dotted node."""
    g = dag
    for n, d in dag.nodes(data=True):
        for o in d.get("outside", ()):
            if g is dag:
                g = dag.copy()
            name = f"{o.var}[{1 - o.steps}]" if o.before else f"{o.var}[T+{o.steps}]"
            key = (o.var, f"outside:{name}")
            g.add_node(key, label=name, initial_state=True, late=not o.before)
            g.add_edge(key, n, init=True)
    return g


def unfolded_dot(graph, lengths: dict, sizes: dict | None = None,
                 dag: nx.DiGraph | None = None, edge_attrs: dict | None = None,
                 node_attrs: dict | None = None, decorate=None) -> str:
    """The unfolded DAG over `lengths` ({"t": 4}) as DOT text: one column per step.
    `dag` (the unfolder's output) is computed when not given. An overlay passes
    `edge_attrs` ({(node, node): attributes} over the DAG's nodes, e.g. a colour and a
    label per edge), `node_attrs` ({node: attributes}) and `decorate(dot)` to add nodes
    such as a legend."""
    graph, sizes = _graph_and_sizes(graph, sizes)
    if dag is None:
        dag = _unfold(graph, lengths)
    dag = _add_outside(_add_losses(graph, dag, lengths))
    cols = layout_columns(graph, dag)
    ids = {n: f"n{i}" for i, n in enumerate(dag.nodes)}
    title = ", ".join(f"{k} = {v}" for k, v in lengths.items())
    dot = Dot(graph.name, rankdir="LR", nodesep="0.3", ranksep="0.55", newrank="true",
              label=f"{graph.name} unfolded ({title})", labelloc="t", fontname=FONT)
    for n in dag.nodes:
        dot.node(ids[n], **{"label": _step_label(n, dag.nodes[n]),
                            **_node_style(graph, dag, n), **(node_attrs or {}).get(n, {})})
    ordered = sorted(set(cols.values()),
                     key=lambda c: (c.level, c.order, c.step if c.step is not None else -1))
    rank = {c: i for i, c in enumerate(ordered)}
    members: dict = {c: [] for c in ordered}     # one pass: a column's nodes, in DAG order
    for n in dag.nodes:
        members[cols[n]].append(ids[n])
    for c in ordered:
        dot.same_rank(f"col{rank[c]}", members[c])
    _order_columns(dot, dag, cols, rank, ids)
    for a, b, data in dag.edges(data=True):
        tail, head, attrs = _unfolded_edge(ids, cols, rank, a, b, data)
        dot.edge(tail, head, **{**attrs, **(edge_attrs or {}).get((a, b), {})})
    if decorate is not None:
        decorate(dot)
    return dot.text()


def _order_columns(dot: Dot, dag, cols, rank, ids) -> None:
    """Invisible edges: step k of a variable to step k+1 (rows stay straight, columns in
    order; e[k, t] to e[k+1, t]), and, between two neighbour columns no edge of the graph
    joins left to right, one from the first node of the first to the first node of the
    second. Only there: such an edge pulls the two nodes level, and the first node of a
    decoder's column is its target, drawn at the top (an edge from `init s` dragged y[1]
    down)."""
    rows: dict = {}
    for n in dag.nodes:
        c = cols[n]
        if c.index is not None and isinstance(c.step, int):
            # e[u, t]: a row per t across the columns of u (a chain through the whole
            # of e would join e[1, T] to e[2, 1], a staircase down the picture)
            step = dag.nodes[n].get("step", _node_step(n))
            inner = step[1:] if isinstance(step, tuple) else ()
            rows.setdefault((_node_var(n), inner), []).append((c.step, n))
    for chain in rows.values():
        chain.sort(key=lambda p: p[0])
        for (_, a), (_, b) in pairwise(chain):
            dot.edge(ids[a], ids[b], style="invis", weight="10")
    firsts = {}
    for n in dag.nodes:
        firsts.setdefault(rank[cols[n]], n)
    joined = {(rank[cols[a]], rank[cols[b]]) for a, b in dag.edges}
    # a column read only from its left (g[T+1] past a backward recurrence's end): its
    # edge runs between the two nodes it joins, so it stays level with what it feeds
    read_back = {}
    for a, b in dag.edges:
        read_back.setdefault((rank[cols[b]], rank[cols[a]]), (b, a))
    for k, j in pairwise(sorted(firsts)):
        if (k, j) not in joined:
            a, b = read_back.get((k, j), (firsts[k], firsts[j]))
            dot.edge(ids[a], ids[b], style="invis", weight="1")


def _unfolded_edge(ids, cols, rank, a, b, data):
    """Same-column edges are drawn bottom-up (inputs low, losses high) by writing them
    reversed with dir=back; edges into an earlier column do not constrain the ranks."""
    ra, rb = rank[cols[a]], rank[cols[b]]
    attrs: dict = {}
    if data.get("target"):
        attrs["style"] = "dashed"
    shift = data.get("shift")
    if ra != rb and cols[a].index is not None and cols[a].index == cols[b].index:
        back = ra > rb or (shift is not None and shift.direction > 0)
        attrs.update(color=BACKWARD if back else FORWARD, penwidth="1.4")
    if data.get("init") or _node_step(a) == "init":
        attrs["style"] = "dashed"
    if ra == rb and not data.get("target"):
        return ids[b], ids[a], dict(attrs, dir="back")
    if ra > rb:
        attrs["constraint"] = "false"
    return ids[a], ids[b], attrs


# ---------------------------------------------------------------------------- output
FORMATS = ("dot", "svg", "png")


def layout_engine() -> str | None:
    """The Graphviz `dot` on PATH, else `graphviz-pure` (same command line; a dependency,
    so also found beside this Python: `.venv/bin/seqgraph` run without activating the
    venv has it there but not on PATH), else None."""
    return shutil.which("dot") or shutil.which("graphviz-pure") or \
        shutil.which("graphviz-pure", path=str(Path(sys.executable).parent))


def check_output(path) -> str:
    """The format of an output path ('dot', 'svg', 'png'); a UsageError for an unknown
    extension, or for an image when no layout engine is installed."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise UsageError(f"cannot render to '{path}': unknown extension "
                         f"'{'.' + ext if ext else '(none)'}'; "
                         f"use one of {', '.join('.' + f for f in FORMATS)}")
    from .outputs import output_file
    output_file(path, "-o")
    if ext != "dot" and layout_engine() is None:
        raise UsageError(f"cannot write '{path}': no Graphviz layout engine found "
                         "(install Graphviz for `dot`, or `pip install graphviz-pure`); "
                         "a .dot file needs none")
    return ext


def write(dot_text: str, path) -> str:
    """Write DOT text to `path`; `.svg` and `.png` are laid out by Graphviz."""
    path = os.fspath(path)
    ext = check_output(path)
    if ext == "dot":
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(dot_text)
        except OSError as e:
            raise UsageError(f"cannot write '{path}': {e.strerror}") from None
        return path
    engine = layout_engine()
    proc = subprocess.run([engine, f"-T{ext}", "-o", path], input=dot_text.encode(),
                          capture_output=True, timeout=120, check=False)
    if proc.returncode != 0 or not os.path.exists(path) or os.path.getsize(path) == 0:
        msg = proc.stderr.decode(errors="replace").strip()
        raise SeqgraphError(f"{os.path.basename(engine)} failed to write '{path}'"
                            + (f": {msg}" if msg else ""))
    return path


# ------------------------------------------------------------------- one tree unfolded
def tree_dot(spec_or_graph, tree: str, sizes: dict | None = None,
             lengths: dict | None = None) -> str:
    """The unfolded graph of a tree model over one bracketed tree, `(3 (2 a) (3 film))`:
    a box per tree node (its phrase and label) holding that node's variables, leaves at
    the bottom, the root on top; child edges (`h[n.left]`, `h[n.right]`) in green. A tree
    encoder with a decoder (a sequence index beside the tree) is drawn over `lengths`
    steps of its sequence too, each variable's steps a row above the tree."""
    graph, n, t, dag = _one_tree(spec_or_graph, tree, sizes, lengths)
    ids = {v: f"n{k}" for k, v in enumerate(dag.nodes)}
    # newrank: the rank groups below hold across the node boxes (clusters); mclimit: few
    # crossing-minimisation passes, which would reorder the leaves (the rows keep them)
    steps = "".join(f", {k} = 1..{v}" for k, v in (lengths or {}).items())
    dot = Dot(graph.name, rankdir="BT", nodesep="0.25", ranksep="0.4", compound="true",
              newrank="true", mclimit="0.01",
              label=f"{graph.name} unfolded over {tree}{steps}", labelloc="t", fontname=FONT)
    clusters: dict = {}
    for v in dag.nodes:
        dot.node(ids[v], label=_tree_node_label(graph, n, t, dag, v),
                 **_node_style(graph, dag, v))
        if dag.nodes[v].get("index") in (n, None) and isinstance(_node_step(v), int):
            clusters.setdefault(_node_step(v), []).append(ids[v])
    _tree_rows(dot, dag, ids, t.forest.height(), n)
    _node_boxes(dot, graph, n, t, clusters)
    for a, b, data in dag.edges(data=True):
        shift = data.get("shift")
        attrs: dict = {}
        if shift is not None and shift.kind in CHILD:   # not "L": the loss's
            attrs.update(color=TREE, penwidth="1.6", label=shift.kind, fontcolor=TREE)
        elif shift is not None and shift.is_delay:    # a decoder's s[u-1], as unfolded
            attrs.update(color=BACKWARD if shift.direction > 0 else FORWARD, penwidth="1.4")
        if data.get("target") or data.get("init") or _node_step(a) == "init":
            attrs["style"] = "dashed"       # (an initial state: as unfolded_dot draws it)
        dot.edge(ids[a], ids[b], **attrs)
    return dot.text()


@dataclass(frozen=True)
class _Tree:
    """One tree as `--tree` gives it: its forest, words and labels, post-order."""
    forest: object
    words: list
    labels: list

    @property
    def size(self) -> int:
        return len(self.words)


def _one_tree(spec_or_graph, tree: str, sizes, lengths):
    """(graph, tree index, _Tree, the unfolded DAG with its losses) of `tree_dot`, or the
    UsageError of a model it cannot draw so."""
    from .graph.trees import Forest
    from .graph.unfold import unfold
    from .train.trees import binarizes, parse_tree
    graph, known = _graph_and_sizes(spec_or_graph, sizes)
    n = next((i for i, k in graph.indexes if k == "tree"), None)
    if n is None:
        raise UsageError("--tree draws tree models; this model has no 'tree n' index")
    both = graph.tree_and_sequence
    if both and not lengths:          # a tree encoder: how many decoder steps to draw
        raise UsageError(f"--tree draws this model over a tree and its sequence index "
                         f"'{both[1]}' too: give the steps with --unfold N")
    if lengths and not both:
        raise UsageError("--unfold with --tree draws a decoder's steps; this model runs "
                         "over a tree alone (leave --unfold out)")
    data = dict(getattr(spec_or_graph, "train", None) or {}).get("data")
    left, right, words, labels = parse_tree(tree, "--tree", 1, binarizes(data),
                                            getattr(data, "name", "trees"))
    _labels_fit(graph, n, labels, known)
    t = _Tree(Forest.one(left, right), words, labels)
    dims = {n: t.size, **(lengths or {})}
    # with a decoder's first step's s[0] and y[0] (the start), as the unfolded graph
    dag = _add_outside(_add_losses(graph, unfold(graph, dims, t.forest), dims, t.forest))
    dag.remove_nodes_from([v for v in list(dag.nodes) if dag.degree(v) == 0])
    return graph, n, t, dag


def _labels_fit(graph, n: str, labels, sizes) -> None:
    """The labels of `--tree` are classes of the model's target over the tree (a
    `class(5)` target: 0 to 4): a larger one would be drawn as a label the model has no
    class for (the loader refuses it in the data)."""
    target = next((v for v in graph.vars if v.role == "target" and v.index == n and
                   v.kind == "class"), None)
    K = None if target is None else sizes.get(target.name, target.size)
    if getattr(K, "terms", None) == ():         # a checked size (Lin) with no open name
        K = K.const
    if not isinstance(K, int):
        return
    bad = next((y for y in labels if not 0 <= y < K), None)
    if bad is not None:
        raise UsageError(f"--tree: the label {bad} is not a class of '{target.name}', "
                         f"which has {K} (0 to {K - 1})")


def _tree_node_label(graph, n: str, t: _Tree, dag, v) -> str:
    """A node's label: `w[2] = 'film'` for a word, `y[2] = 3` for a label (the root's
    for one label a tree); a decoder's step as any unfolded step, `s[2]`."""
    label, step = _step_label(v, dag.nodes[v]), _node_step(v)
    gv = graph.var_map.get(_node_var(v))
    if dag.nodes[v].get("index") not in (n, None) or gv is None:
        return label
    if isinstance(step, int) and gv.role == "input":
        return f"{label} = {t.words[step]!r}"
    if isinstance(step, int) and gv.role == "target":
        return f"{label} = {t.labels[step]}"
    if step is None and gv.role == "target":
        return f"{label} = {t.labels[-1]}"                 # one label a tree: the root's
    return label


def _node_boxes(dot: Dot, graph, n: str, t: _Tree, clusters: dict) -> None:
    """A box around each tree node's variables: its number, leaf or internal, its
    phrase, and the data's label of every node (a target at every node), of the root
    alone (a tree classifier), or of none (a tree encoder: its target is a sequence)."""
    left, right, words = t.forest.left, t.forest.right, t.words
    phrase = {}
    for i in range(t.size):
        phrase[i] = words[i] if left[i] < 0 else f"{phrase[left[i]]} {phrase[right[i]]}"
    indexes = {graph.var_map[v.name].index for v in graph.targets()}
    shown = set(range(t.size)) if n in indexes else {t.size - 1} if None in indexes else set()
    for step, members in sorted(clusters.items()):
        kind = "leaf" if left[step] < 0 else "internal"
        text = phrase[step] if len(phrase[step]) <= 28 else phrase[step][:25] + "..."
        lab = f"  label {t.labels[step]}" if step in shown else ""
        body = "".join(f" {quote(m)};" for m in members)
        dot.nodes.append(f"  subgraph {quote(f'cluster_{step}')} {{ label="
                         f"{quote(f'node {step + 1} ({kind}): {text!r}{lab}')};"
                         f" labelloc=\"b\"; style=\"rounded\"; color=\"#999999\";"
                         f" fontsize=\"10\";{body} }}")


def _tree_rows(dot: Dot, dag, ids: dict, height, n: str) -> None:
    """A variable's nodes at the same height of the tree on one row: the leaves at the
    bottom in the sentence's order, each parent above its children. Nodes of one height
    never nest, so their post-order is their left-to-right order; invisible edges inside
    a row keep it. A variable over a sequence index (a decoder's) has its steps on one
    row, in order."""
    rows: dict = {}
    for v in sorted((v for v in dag.nodes if isinstance(_node_step(v), int)), key=_node_step):
        index = dag.nodes[v].get("index")
        at = index if index not in (n, None) else height[_node_step(v)]
        rows.setdefault((_node_var(v), at), []).append(ids[v])
    for v in dag.nodes:                  # s[0], y[0]: before the first step, on its row
        if dag.nodes[v].get("initial_state") and not dag.nodes[v].get("late"):
            row = next((r for r in rows if r[0] == _node_var(v) and isinstance(r[1], str)),
                       None)
            if row is not None:
                dot.edge(ids[v], rows[row][0], style="invis")
                rows[row].insert(0, ids[v])
    for k, ((_, at), members) in enumerate(sorted(rows.items(), key=lambda kv: str(kv[0]))):
        if len(members) > 1:
            dot.same_rank(f"row{k}", members)
            if isinstance(at, str):      # steps: their own edges order them (invisible
                continue                 # ones here reorder the leaves of graphviz-pure)
            for a, b in pairwise(members):
                dot.edge(a, b, style="invis")
