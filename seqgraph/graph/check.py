"""The checks: sizes (inferred in both directions) and causality.

Sizes. Every variable, every parameter dimension and every intermediate value gets a
size variable; the op table's shape rules state equalities and sums between them
(ops.py), declarations and dims give values, and a union-find with linear-form values
solves them. A size nothing determines asks for an annotation at its line.

Causality (Deep Learning, section 10.1). Every cycle of the folded graph must pass
through a delay: with the delay edges removed the graph must be acyclic (else an
algebraic loop), and the delays inside one strongly connected component must all point
the same way (else the recurrence can run neither forward nor backward in time).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import networkx as nx

from ..errors import NOPOS, SpecError, too_deep
from ..ops import REDUCTIONS, TABLE, Op
from .components import components
from .folded import Apply, FoldedGraph, Num, ParamRef, Ref, ShiftKind, params_of, refs, walk
from .generate_check import softmax_index
from .printer import show
from .sizes import Lin


@dataclass(frozen=True)
class Recurrence:
    """A strongly connected component with delays: the variables that run step by step."""
    vars: tuple
    index: str | None
    direction: int          # -1 forward in time (reads the past), +1 backward
    delays: tuple           # distinct shifts on its edges, e.g. ('-1',)
    params: tuple           # parameters its equations use


@dataclass(frozen=True)
class Checked:
    graph: FoldedGraph
    sizes: dict             # var -> Lin
    param_shapes: dict      # param -> tuple[Lin]
    recurrences: tuple
    order: tuple            # variables in an order where each comes after what it reads
    dims: dict              # the dims that were bound (declared and given)
    dropouts: dict = field(default_factory=dict)  # dropout Apply -> its size (None: not a vector)

    def unbound(self) -> set:
        out = set()
        for s in list(self.sizes.values()) + [d for sh in self.param_shapes.values()
                                              for d in sh]:
            out |= s.names
        return out


def check(graph: FoldedGraph, dims: dict | None = None) -> Checked:
    """Sizes and causality of a folded graph; raises SpecError located in its file."""
    try:
        return _check(graph, dims or {})
    except SpecError as e:
        raise e.located(graph.path, graph.source) from None
    except RecursionError:
        raise too_deep(graph.source, graph.path) from None


def _check(graph: FoldedGraph, given: dict) -> Checked:
    dims = {**dict(graph.dims), **given}
    recurrences, order = _causality(graph)
    _leaves(graph)
    sizes, shapes, dropouts = _Sizes(graph, dims).solve()
    return Checked(graph, sizes, shapes, recurrences, order, dims, dropouts)


# -------------------------------------------------------------------------- sizes
class _Sizes:
    def __init__(self, graph: FoldedGraph, dims: dict):
        self.g, self.dims = graph, dims
        self.parent, self.val, self.label = [], [], []
        self.origin = []        # root -> the label of what gave its class its value
        self.sums = []          # (out, parts, pos)
        self.where = NOPOS
        self.var_size = {}
        self.param_shape = {}
        self.param_first_use = {}
        self.dropouts = {}      # dropout Apply -> its size variable (None: not a vector)
        self.stars = {}         # equation pos -> a `W * x[t]` in it (a hint for @)

    # union-find with values -----------------------------------------------------
    def new(self, label="", value=None) -> int:
        self.parent.append(len(self.parent))
        self.val.append(value)
        self.label.append(label)
        self.origin.append(label if value is not None else "")
        return len(self.parent) - 1

    def find(self, a):
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def eq(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        va, vb = self.val[ra], self.val[rb]
        if va is not None and vb is not None and va != vb:
            raise SpecError(f"size mismatch: {self.label[a] or 'one side'} has size {va}"
                            f"{self._from(a)}, {self.label[b] or 'the other'} has size "
                            f"{vb}{self._from(b)}", self.where,
                            hint="the terms of a sum, the operands of * and the two "
                                 "sides of an equation have one size; a matrix @ v "
                                 "changes it" + _open_hint(va, vb) + self._star_hint())
        self.parent[rb] = ra
        self.val[ra] = va if va is not None else vb
        self.origin[ra] = self.origin[ra] if va is not None else self.origin[rb]
        if not self.label[ra]:
            self.label[ra] = self.label[rb]

    def _star_hint(self) -> str:
        star = self.stars.get(self.where)
        w = None if star is None else star.args[0].name
        return "" if star is None else f"; `{w} * ...` multiplies elementwise, which " \
            f"makes {w} a vector: a matrix times a vector is written `{w} @ ...`"

    def _from(self, x) -> str:
        """What gave x's class its size, when that is another value: ` (from 'x')`."""
        origin, label = self.origin[self.find(x)], self.label[x]
        one = re.fullmatch(r"'([\w.]+)\[[^\]]*\]'", label)      # 'x[t]' comes from 'x'
        same = f"'{one.group(1)}'" if one else label
        return f" (from {origin})" if origin and origin not in (label, same) else ""

    def sum(self, out, parts):
        self.sums.append((out, list(parts), self.where))

    def error(self, msg):
        raise SpecError(msg, self.where)

    def value(self, x):
        return self.val[self.find(x)]

    def fixed(self, x, label="") -> int:
        """A size variable for a declared size: an int or a dim name."""
        if isinstance(x, str) and x in self.dims:
            x = self.dims[x]
        if not isinstance(x, str) and (x < 1 or x != int(x)):
            self.error(f"the size of {label} must be a whole number of at least 1, not {x:g}")
        return self.new(label, Lin.of(x))

    # walking the model ---------------------------------------------------------
    def solve(self):
        g = self.g
        for v in g.vars:
            self.where = v.pos
            self.var_size[v.name] = self.new(f"'{v.name}'") if v.size is None else \
                self.fixed(v.size, f"'{v.name}'")
        for p in g.params:
            self.where = p.pos
            if p.shape is not None:
                self.param_shape[p.name] = tuple(self.fixed(d, f"'{p.name}'")
                                                 for d in p.shape)
        self.scalars = self._scalar_vars()
        for v in g.vars:
            for case in v.cases:
                self._define(v, case.expr, case.pos)
            if v.init is not None:             # said at the init value, not the equation
                at = getattr(v.init, "pos", None)
                self._define(v, v.init, at if at and at.line else v.pos, init=True)
        for loss in g.losses:
            self.where = loss.pos
            self.eq(self.var_size[loss.output.var], self.var_size[loss.target.var])
        self._solve_sums()
        return self._results()

    def _scalar_vars(self) -> set:
        """Variables defined by one number per example (an attention score v @ x): they
        broadcast like numbers, and have size 1. Found by a fixpoint, since a variable
        defined from scalars is a scalar."""
        scalars, changed = set(), True
        while changed:
            changed = False
            for v in self.g.hidden():
                if v.name not in scalars and all(self._rank(c.expr, scalars) == 0
                                                 for c in v.cases):
                    scalars.add(v.name)
                    changed = True
        return scalars

    def _rank(self, e, scalars) -> int:
        if isinstance(e, Num):
            return 0
        if isinstance(e, Ref):
            return 0 if e.var in scalars else 1
        if isinstance(e, ParamRef):
            return 1
        out = TABLE[e.op].out
        return out if out is not None else max(self._rank(a, scalars) for a in e.args)

    def _define(self, v, expr, pos, init: bool = False):
        star = _param_times_value(expr)
        if star is not None and self.g.param_map[star.args[0].name].shape is None:
            self.stars[pos] = star      # an undeclared W: said with a size mismatch here
        shape = self.shape(expr)
        self.where = pos
        if len(shape) > 1:
            raise SpecError(f"'{v.name}' is defined as a matrix, not a vector", pos)
        declared = self.value(self.var_size[v.name])
        if not shape and declared is not None and declared != Lin(1):
            if init:
                raise SpecError(f"init {v.name} is a number, and '{v.name}' a vector of "
                                f"size {declared}", pos,
                                hint=f"an init is a vector of {v.name}'s size, such as "
                                     f"tanh(I) with `param I`; without one, a delay before "
                                     f"the first step reads zero")
            raise SpecError(f"'{v.name}' is defined as a number, not a vector of size "
                            f"{declared}", pos, hint="a number per example has size 1")
        self.eq(self.var_size[v.name], shape[0] if shape else self.new("", Lin(1)))

    def shape(self, e, rank=None) -> tuple:
        if isinstance(e, Num):
            return ()
        if isinstance(e, Ref):
            return () if e.var in self.scalars else (self.var_size[e.var],)
        if isinstance(e, ParamRef):
            return self._param(e, 1 if rank is None else rank)
        assert isinstance(e, Apply)
        d = TABLE[e.op]
        ranks = d.ranks if d.ranks else (1,) * len(e.args)
        args = [self.shape(a, r) for a, r in zip(e.args, ranks, strict=True)]
        self.where = e.pos
        for a, r, sh in zip(e.args, ranks, args, strict=True):
            if (r is None and len(sh) > 1) or (r is not None and len(sh) != r):
                want = {0: "a number", 1: "a vector", 2: "a matrix", 3: "a tensor",
                        None: "a vector or a number"}[r]
                raise SpecError(f"'{self.show(a)}' must be {want} here", e.pos)
        label = self.show(e)
        for a, sh in zip(e.args, args, strict=True):
            if len(sh) == 1 and not self.label[sh[0]]:
                self.label[sh[0]] = f"'{self.show(a)}'"
        rank = d.out if d.out is not None else max((len(a) for a in args), default=0)
        out = (self.new(f"'{label}'"),) if rank == 1 else ()
        d.shape(self, out, args)
        if e.op is Op.DROPOUT:
            self.dropouts[e] = out[0] if out else None
        return out

    def show(self, e) -> str:
        """An expression as the spec writes it, its references with their steps:
        `x[t]`, `h[t-1]`, not `x`, `h` (an error names what the user wrote)."""
        def index_of(name):
            v = self.g.var_map.get(name)
            if v is None:
                return None
            return (v.index, v.inner) if getattr(v, "inner", None) else v.index
        return show(e, index_of)

    def _param(self, e: ParamRef, rank: int) -> tuple:
        self.param_first_use.setdefault(e.name, e.pos)
        shape = self.param_shape.get(e.name)
        if shape is None:
            shape = tuple(self.new(f"'{e.name}'") for _ in range(rank))
            self.param_shape[e.name] = shape
        if len(shape) != rank:
            kinds = {1: "a vector", 2: "a matrix", 3: "a tensor"}
            raise SpecError(f"parameter '{e.name}' is used as {kinds.get(rank)} here but "
                            f"is {kinds.get(len(shape))} elsewhere", e.pos)
        return shape

    def _solve_sums(self):
        changed = True
        while changed:
            changed = False
            for out, parts, pos in self.sums:
                self.where = pos
                vals = [self.value(p) for p in parts]
                known = [v for v in vals if v is not None]
                total = self.value(out)
                if len(known) == len(vals):
                    s = sum(known, Lin())
                    if total is None or total != s:
                        self.eq(out, self.new("the sum of its parts", s))
                        changed = changed or total is None
                elif total is not None and len(known) == len(vals) - 1:
                    missing = parts[vals.index(None)]
                    self.eq(missing, self.new("", total - sum(known, Lin())))
                    changed = True

    def _results(self):
        sizes = {}
        for v in self.g.vars:
            val = self.value(self.var_size[v.name])
            if val is None:
                ix = f"[{', '.join(v.indexes)}]" if v.index else ""
                hint = f"state it: {v.name}{ix} : SIZE = ..."
                # an output (read by no other variable) of a model with no loss line:
                # the loss xent(o, y) would size it as y
                readers = {u for _, u in self.g.nx().out_edges(v.name)} - {v.name}
                if not self.g.losses and not readers:
                    y = next(iter(self.g.targets()), None)
                    at = f"{y.name}[{', '.join(y.indexes)}]" if y is not None and y.index \
                        else y.name if y is not None else f"y{ix}"
                    hint += (f"; or add the loss line, e.g. loss xent({v.name}{ix}, {at}): "
                             f"the model has none")
                raise SpecError(f"the size of '{v.name}' is not determined by anything",
                                v.pos, hint=hint)
            sizes[v.name] = val
        shapes = {}
        for p in self.g.params:
            if p.name not in self.param_shape:
                shapes[p.name] = ()   # unused: reported as a warning by elaboration
                continue
            dims = [self.value(d) for d in self.param_shape[p.name]]
            if any(d is None for d in dims):
                known = ", ".join("?" if d is None else str(d) for d in dims)
                raise SpecError(f"the shape of parameter '{p.name}' is not determined: "
                                f"[{known}]", self.param_first_use.get(p.name, p.pos),
                                hint=f"declare it with its sizes (a dim name or a number "
                                     f"for each ?): param {p.name} : [{known}]")
            shapes[p.name] = tuple(dims)
            _matrix_init(p, dims, self.g.params)
        dropouts = {e: None if x is None else self.value(x) for e, x in self.dropouts.items()}
        return sizes, shapes, dropouts


def _matrix_init(p, shape, params) -> None:
    """xavier and orthogonal draw a matrix from its fan-in and fan-out; a vector has
    neither, and would silently start at zero: refused where the parameter is declared.
    Each name of a param line takes its own init: in `param W, U, b init orthogonal` it
    is b's alone, which the hint says (W and U take the default)."""
    if not (p.init and p.init[0] in ("xavier", "orthogonal") and len(shape) < 2):
        return
    before = [q.name for q in params if q.pos.line == p.pos.line and q.init is None
              and q.pos.column < p.pos.column]
    hint = "a vector takes zeros (the default), ones, normal(s) or uniform(s)"
    if before:
        hint = f"each name takes its own init: here it is {p.name}'s alone, not " \
            f"{', '.join(before)}'s (write `{before[0]} init {p.init[0]}, ...`); " + hint
    raise SpecError(f"parameter '{p.name}' is a vector of size {shape[0]}: the "
                    f"initialiser '{p.init[0]}' is for a matrix", p.pos, hint=hint)


# ---------------------------------------------------------------------- causality
def _causality(graph: FoldedGraph):
    """The recurrences (one per component with delays, in the order of their first
    variable) and an order of the variables; raises an algebraic loop or a recurrence
    whose delays point both ways."""
    g = graph.nx()
    lines = {v.name: v.pos.line for v in graph.vars}
    instant = nx.DiGraph()
    instant.add_nodes_from(g.nodes)
    instant.add_edges_from((u, v) for u, v, s in g.edges(data="shift") if not s.is_delay)
    _algebraic_loop(graph, g, instant, lines)
    comps = components(graph)
    recs = [r for r in (_recurrence(graph, c, lines) for c in comps) if r]
    for c in comps:
        _reduced_on_recurrence(graph, c)
    order = tuple(nx.lexicographical_topological_sort(
        instant, key=lambda n: (lines.get(n, 0), n)))
    recs.sort(key=lambda r: order.index(r.vars[0]))
    return tuple(recs), order


def _algebraic_loop(graph: FoldedGraph, g, instant, lines) -> None:
    """Raises a cycle of the graph without its delays, named read by read."""
    try:
        cycle = nx.find_cycle(instant)
    except nx.NetworkXNoCycle:
        return
    names = [u for u, _ in cycle]
    at = {e[1]: _edge_pos(g, e) for e in cycle}     # the line of the read, where known
    steps = [f"{n} (line {at[n].line if at.get(n) and at[n].line else lines[n]})"
             for n in names[:12]]
    steps += [f"... ({len(names) - 12} more)"] if len(names) > 12 else []
    path = " -> ".join(steps + steps[:1])
    first = graph.var(names[0])
    tree = graph.index_kinds.get(first.index) == "tree"
    raise SpecError(f"algebraic loop: {path}", _edge_pos(g, cycle[-1]) or first.pos,
                    hint="every cycle must pass through a delay, such as " +
                    (f"{first.name}[{first.index}.left] (a child)" if tree else "h[t-1]"))


def _recurrence(graph: FoldedGraph, comp, lines) -> Recurrence | None:
    """The recurrence of a component with delays (None without), whose delays must all
    point one way."""
    delays = comp.delays
    if not delays:
        return None
    dirs = {e.shift.direction for e in delays}
    if len(dirs) > 1:
        names = ", ".join(sorted(comp.members, key=lambda n: lines[n]))
        where = [f"{e.dst} reads {e.src}[{e.shift.show(graph.var(e.src).index)}] "
                 f"(line {lines[e.dst]})" for e in delays]
        raise SpecError(f"mixed directions on one recurrence ({names}): "
                        + "; ".join(sorted(set(where))),
                        graph.var(min(comp.members, key=lambda n: lines[n])).pos,
                        hint="a cycle runs forward (t-1) or backward (t+1), not both")
    ordered = comp.members
    params = sorted({p for n in ordered for c in graph.var(n).cases
                     for p in params_of(c.expr)})
    return Recurrence(ordered, graph.var(ordered[0]).index, dirs.pop(),
                      tuple(sorted({e.shift.label() for e in delays})), tuple(params))


def _reduced_on_recurrence(graph: FoldedGraph, comp) -> None:
    """A reduction over a recurrence's own index that reads a variable of the recurrence
    (`a[u, t] = softmax over u (e[u, t])` with e computed from s[u-1], s from a): its
    references look like same-step reads, but a[u, t] reads e at every step of u, the
    later ones computed from a[u, t] itself, a cycle no order of steps runs (the unfolder
    met it as a networkx error)."""
    over = {graph.var(e.src).index for e in comp.delays} - {None}
    members = set(comp.members)
    for name in comp.members:
        for case in graph.var(name).cases:
            written = {}                  # a softmax is written exp(E - logsumexp (E))
            for e in walk(case.expr):
                t = softmax_index(e)
                written.update({id(x): ("softmax", e.pos) for x in walk(e) if t is not None
                                and isinstance(x, Apply) and x.op is Op.LSE_OVER
                                and x.kw["over"] == t})
            for e in walk(case.expr):
                index = e.kw.get("over") if isinstance(e, Apply) else None
                read = next((r for r in refs(e.args[0]) if r.var in members), None) \
                    if index in over else None
                if read is not None:
                    raise _reduction_in_loop(graph, comp, name, e, read, written)


def _reduction_in_loop(graph, comp, name, e, read, written) -> SpecError:
    v, u = graph.var(name), e.kw["over"]
    fn, pos = written.get(id(e), (next(k for k, o in REDUCTIONS.items() if o is e.op), e.pos))
    lhs = f"{name}[{', '.join(v.indexes)}]" if v.indexes else name
    loop = ", ".join(comp.members)
    both = f"{read.var} and {name} are" if read.var != name else f"{name} is"
    return SpecError(f"{lhs} reads '{read.var}' at every step of {u} ('{fn} over {u}'), "
                     f"but {both} on one recurrence over {u} ({loop}): the later steps "
                     f"of {read.var} are computed from {lhs} itself", pos,
                     hint=f"reduce over another index (attention normalises over the "
                          f"source's index, not the decoder's {u}), or over values "
                          f"computed before the recurrence")


# ------------------------------------------------------------------------- leaves
def _leaves(graph: FoldedGraph) -> None:
    """A variable with no value at a leaf (graph.internal_only: its one equation reads
    the children) is read only where no leaf is: at its own node in an `otherwise`
    equation, or by another such variable. A child may be a leaf, and so may a root (a
    one-word sentence); an `if leaf` equation and a loss over every node run at leaves."""
    inner = graph.internal_only
    if not inner:
        return
    for v in graph.vars:
        for case in v.cases:
            for r in refs(case.expr):
                if r.var in inner and (r.shift.kind != ShiftKind.REL or case.cond == "leaf"):
                    raise _at_leaf(graph, r, v, case.cond)
        for r in refs(v.init) if v.init is not None else ():   # one per example: a root
            if r.var in inner:
                raise _at_leaf(graph, r, v, "init")
    for loss in graph.losses:
        if loss.output.var in inner and loss.output.shift.kind != ShiftKind.NONE:
            raise _at_leaf(graph, loss.output, None, "loss")


def _at_leaf(graph, r: Ref, reader, where) -> SpecError:
    u = graph.var(r.var)
    why = graph.internal_only[u.name]
    at = f"{r.var}[{r.shift.show(u.index)}]"
    said = f"{why.var}[{why.shift.show(graph.var(why.var).index)}]"
    line = f", line {why.pos.line}" if why.pos and why.pos.line else ""
    none = f"'{u.name}' has no value at a leaf: its one equation reads {said}{line}"
    if reader is not None and reader.name == u.name:
        return SpecError(f"'{u.name}' over the tree '{u.index}' reads its children and has "
                         f"no 'if leaf' equation: a leaf has no children", r.pos,
                         hint=f"give it two equations, `{u.name}[{u.index}] = ... if leaf`"
                              f" (from the leaf's word) and `{u.name}[{u.index}] = ... "
                              f"otherwise`")
    place = {ShiftKind.LEFT: "a child may be a leaf", ShiftKind.RIGHT: "a child may be a leaf",
             ShiftKind.ROOT: "the root of a one-word tree is a leaf"}.get(r.shift.kind)
    if where == "loss" and place is None:
        msg = f"the loss sums over every node of '{u.index}', leaves too, and {none}"
    elif where == "leaf":
        msg = f"the 'if leaf' equation reads {at}, and {none}"
    else:
        msg = f"{at} is read where {place}, and {none}"
    hint = f"give {u.name} an 'if leaf' equation" if where == "loss" else \
        f"read {u.name}[{u.index}] in an 'otherwise' equation only, or give {u.name} an " \
        f"'if leaf' equation"
    return SpecError(msg, r.pos or u.pos, hint=hint)


def _edge_pos(g, edge):
    """The position of the undelayed reference behind a folded edge."""
    u, v = edge[0], edge[1]
    data = g.get_edge_data(u, v)
    for d in (data or {}).values():
        if not d["shift"].is_delay:
            return d.get("pos")
    return None


def _param_times_value(expr):
    """`W * x[t]`, a parameter multiplied elementwise by a variable: the book's W x[t]
    written with * (the size hint alone would lead a user to make W a vector)."""
    for e in walk(expr):
        if isinstance(e, Apply) and e.op is Op.MUL and isinstance(e.args[0], ParamRef) \
                and (isinstance(e.args[1], Ref) or getattr(e.args[1], "op", None) is Op.ONEHOT):
            return e
    return None


def _open_hint(a, b) -> str:
    """A size left open (V, bound by the data) against a number: how to say they agree."""
    for x, y in ((a, b), (b, a)):
        if x.is_int and len(y.terms) == 1 and y.const == 0 and y.terms[0][1] == 1:
            name = y.terms[0][0]
            return (f"; the spec does not give {name} a size, so it may be any: if it is "
                    f"{x.const} here, say so (`dim {name} = {x.const}` in the spec, or "
                    f"--dim {name}={x.const})")
    return ""
