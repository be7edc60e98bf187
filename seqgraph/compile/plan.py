"""The schedule: which variables run for all steps at once, which run step by step.

The folded graph is condensed into strongly connected components (networkx). A component
without a cycle is *static*: its expression is evaluated for every step at once (one GEMM
over [T*B, n], one gather for a one-hot operand). A component with a cycle is a
*recurrence*: its equations are lowered to a small step program (`Step`) that codegen.py
turns into one Numba loop forward and one BPTT loop backward.

Lowering splits each equation of a recurrence into the part that reads the cycle (the
*dynamic* part, run per step) and the maximal parts that do not (*hoisted*: evaluated
before the loop for all steps, their gradients after it). Sums are flattened so that every
term that does not read the cycle joins one hoisted term: `W @ x[t] + U @ h[t-1] + b`
runs `W @ x[t] + b` once for all steps and only `U @ h[t-1]` in the loop. Products of the
same dynamic operand by several parameters (the gates of an LSTM or a GRU) become one GEMM
of stacked weights, found from the equations.

Attention (variables over two indexes, reductions over an index) makes an *attention
stage* (`AttnStage`, run by attention/): a variable on no cycle evaluated for all steps
of all its indexes at once, or a cycle that contains them (a decoder reading every encoder
state), run step by step over its own index with every step of the other indexes at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..graph.components import Component, components
from ..graph.folded import Apply, FoldedGraph, LossFn, Num, ParamRef, Ref, Shift, ShiftKind, walk
from ..ops import ELEMENTWISE_BINARY, ELEMENTWISE_UNARY, Op
from .masks import sites

EW_OPS = set(ELEMENTWISE_BINARY) | set(ELEMENTWISE_UNARY)


class Unsupported(Exception):
    """A construct the compiler does not run; the executor falls back to the interpreter."""


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class StaticStage:
    var: str                   # one variable, evaluated for all its steps at once


@dataclass(frozen=True)
class RecStage:
    vars: tuple                # the variables of the cycle, in step order
    index: str
    direction: int             # -1: reads the past (runs forward); +1: runs backward


@dataclass(frozen=True)
class AttnStage:
    """Variables over two indexes or with a reduction over an index (attention).
    cyclic: a cycle run step by step over `index` (every step of the other indexes at
    once); else one variable on no cycle (`index` its own index, or None), all at once."""
    vars: tuple
    index: str | None
    direction: int
    cyclic: bool


def _attention(v) -> bool:
    """A variable over two indexes, or one whose equation reduces over an index."""
    return v.inner is not None or any(isinstance(e, Apply) and "over" in e.kw
                                      for c in v.cases for e in walk(c.expr))


def schedule(graph: FoldedGraph) -> list:
    """Stages in an order where every stage reads only what earlier stages computed: the
    components of graph/components.py (the causality check's), in their order."""
    if any(kind == "tree" for _, kind in graph.indexes):
        raise Unsupported("tree indexes (recursive nets) run in the interpreter")
    for v in graph.hidden():
        if len(v.cases) != 1 or v.cases[0].cond is not None:
            raise Unsupported(f"'{v.name}' has several cases")
    return [_stage(graph, c) for c in components(graph) if c.hidden]


def _stage(graph: FoldedGraph, c: Component):
    """The stage that runs one component's hidden variables."""
    if not c.cyclic:
        v = graph.var(c.hidden[0])
        return AttnStage((v.name,), v.index, 0, False) if _attention(v) \
            else StaticStage(v.name)
    names = sorted(c.hidden)
    for e in c.edges:
        if e.init:
            raise Unsupported(f"an init of {names} reads its own cycle")
        if e.shift.kind != ShiftKind.REL:
            raise Unsupported(f"cycle {names} reads '{e.shift.kind}'")
    dirs = {e.shift.direction for e in c.delays} - {0}
    if len(dirs) != 1:
        raise Unsupported(f"cycle {names} mixes directions")
    direction = dirs.pop()
    if not any(_attention(graph.var(m)) for m in c.hidden):
        return RecStage(c.hidden, graph.var(c.hidden[0]).index, direction)
    common = set.intersection(*(set(graph.var(m).indexes) for m in c.hidden))
    if len(common) != 1:
        raise Unsupported(f"attention cycle {names} has no one index "
                          "that all its variables run over")
    if direction > 0:
        raise Unsupported(f"attention cycle {names} runs backward in "
                          "time (an advance): only delays are compiled")
    return AttnStage(c.hidden, common.pop(), direction, True)


# ---------------------------------------------------------------------- step programs
@dataclass
class Node:
    """One value per step of a recurrence, shape [B, size].

    kind  'state'  a cycle variable read through a delay (`var`, `k` steps back)
          'hoist'  hoisted[i], precomputed for all steps
          'pvec'   a parameter vector broadcast over the batch
          'num'    a number
          'gemm'   `param @ args[0]`, one slice of a stacked product
          'ew'     an elementwise op
          'softmax', 'concat'
    """
    id: int
    kind: str
    size: int
    op: Op | None = None
    args: tuple = ()
    var: str | None = None
    k: int = 0
    param: str | None = None
    value: float = 0.0
    hoist: int = -1


@dataclass
class Step:
    """The lowered equations of one recurrence (time always runs forward here: an
    advance recurrence is lowered with mirrored shifts and run on time-reversed arrays)."""
    vars: tuple                         # cycle variables
    sizes: dict                         # var -> size
    nodes: list = field(default_factory=list)
    roots: dict = field(default_factory=dict)     # var -> node id of its value at step t
    hoisted: list = field(default_factory=list)   # Exprs evaluated for all steps
    K: int = 1                          # the longest delay: rows of init before step 0
    read_outside: frozenset = frozenset()  # vars read after the loop (other stages,
                                           # losses, inits): those get outside gradients
    copies: dict = field(default_factory=dict)  # id(dropout made here) -> (it, the spec's)

    def original(self, e):
        """The spec's own dropout object behind e (one lowering made: a mirrored copy, or
        the masks of a dropout in the loop) or e: which of the interpreter's draws it is
        (compile/masks.py)."""
        m = self.copies.get(id(e))
        return m[1] if m is not None and m[0] is e else e


def _size_of(expr, sizes, pshapes):
    """The vector size of an expression (None for a number)."""
    if isinstance(expr, Num):
        return None
    if isinstance(expr, ParamRef):
        return pshapes[expr.name][0]
    if isinstance(expr, Ref):
        return sizes[expr.var]
    if expr.op in (Op.MATMUL, Op.GATHER):
        return pshapes[expr.args[0].name][0]
    if expr.op is Op.BILINEAR:
        return pshapes[expr.args[0].name][0]
    if expr.op is Op.DOT:                  # one number per example
        return 1
    if expr.op is Op.CONCAT:
        return sum(_size_of(a, sizes, pshapes) for a in expr.args)
    if expr.op is Op.ONEHOT:
        return sizes[expr.args[0].var]
    for a in expr.args:
        s = _size_of(a, sizes, pshapes)
        if s is not None:
            return s
    return None


def _terms(expr, sign=1):
    """A sum flattened: [(sign, term)]."""
    if isinstance(expr, Apply) and expr.op in (Op.ADD, Op.SUB):
        a, b = expr.args
        return _terms(a, sign) + _terms(b, sign if expr.op is Op.ADD else -sign)
    return [(sign, expr)]


def signed_sum(terms):
    """[(sign, expr)] as one expression: t1 + t2 - t3 ..."""
    acc = None
    for s, t in terms:
        if acc is None:
            acc = t if s > 0 else Apply(Op.NEG, (t,))
        else:
            acc = Apply(Op.ADD if s > 0 else Op.SUB, (acc, t))
    return acc


def affine(e):
    """(`P @ x` or the lookup `P[x]`, `b`) when e is `P @ x + b` (either order) with
    P and b parameters and x a variable read; else None."""
    if not (isinstance(e, Apply) and e.op is Op.ADD and len(e.args) == 2):
        return None
    a, b = e.args
    if isinstance(a, ParamRef):
        a, b = b, a
    if isinstance(b, ParamRef) and isinstance(a, Apply) and \
            a.op in (Op.MATMUL, Op.GATHER) and isinstance(a.args[0], ParamRef) and \
            isinstance(a.args[1], Ref):
        return a, b
    return None


def fused_outputs(graph: FoldedGraph, pshapes: dict) -> dict:
    """{o: {W, b, x, drop, target}} for each output layer `o[t] = W @ x[t] + b` or
    `o[t] = W @ dropout(x[t], p) + b` (either order) whose only reader is one xent loss
    `xent(o[t], y[t])`, with x a real sequence variable read at the same step: run fused
    with its loss when training (compile/__init__.py, _Run.output_xent). `drop` is the
    dropout (its masks multiply x before the tiles, and dh after), or None."""
    g = graph.nx()
    out = {}
    for loss in graph.losses:
        o = graph.var(loss.output.var)
        if loss.fn != LossFn.XENT or o.role != "hidden" or o.index is None or \
                len(o.cases) != 1 or o.cases[0].cond is not None or o.init is not None or \
                list(g.successors(o.name)) or \
                sum(other.output.var == o.name for other in graph.losses) != 1 or \
                loss.output.shift.kind != ShiftKind.REL or loss.output.shift.k != 0 or \
                loss.target.shift.kind != ShiftKind.REL or loss.target.shift.k != 0:
            continue
        found = _output_layer(o.cases[0].expr)
        if found is None:
            continue
        W, x, b, drop = found
        xv = graph.var(x.var)
        if x.shift.kind != ShiftKind.REL or x.shift.k != 0 or xv.index != o.index or \
                xv.is_ids or xv.inner is not None or len(pshapes[W.name]) != 2 or \
                tuple(pshapes[b.name]) != (pshapes[W.name][0],):
            continue
        out[o.name] = {"W": W.name, "b": b.name, "x": x, "drop": drop,
                       "target": loss.target.var}
    return out


def _output_layer(e):
    """(W, x, b, dropout or None) when e is `W @ x + b` or `W @ dropout(x, p) + b`
    (either order), W and b parameters and x a variable read; else None."""
    if not (isinstance(e, Apply) and e.op is Op.ADD and len(e.args) == 2):
        return None
    a, b = e.args
    if isinstance(a, ParamRef):
        a, b = b, a
    if not (isinstance(b, ParamRef) and isinstance(a, Apply) and a.op is Op.MATMUL and
            isinstance(a.args[0], ParamRef)):
        return None
    x, drop = a.args[1], None
    if isinstance(x, Apply) and x.op is Op.DROPOUT and x.kw.get("p", 0) > 0:
        x, drop = x.args[0], x
    return (a.args[0], x, b, drop) if isinstance(x, Ref) else None


def _mirror(expr, copies: dict | None = None):
    """The same expression with every shift mirrored (runs a backward recurrence forward
    on reversed time); each dropout copied is entered in `copies` with the spec's object
    it copies (Step.original)."""
    if isinstance(expr, Ref):
        return Ref(expr.var, expr.shift.mirrored(), expr.pos)
    if isinstance(expr, Apply):
        new = Apply(expr.op, tuple(_mirror(a, copies) for a in expr.args), expr.attrs,
                    expr.pos)
        if copies is not None and expr.op is Op.DROPOUT:
            seen = copies.get(id(expr))
            copies[id(new)] = (new, seen[1] if seen and seen[0] is expr else expr)
        return new
    return expr


def lower(graph: FoldedGraph, stage: RecStage, sizes: dict, pshapes: dict,
          g=None) -> Step:
    """The step program of one recurrence; `g` is graph.nx(), given by a caller that
    lowers every recurrence of a graph (built per recurrence, it made the build
    quadratic in them: 248 s for stack(1000))."""
    return _Lowering(graph, stage, sizes, pshapes, g).run()


class _Lowering:
    """Builds a Step from the equations of one recurrence: each expression becomes a node
    (memoised, so equal subexpressions are one node), and every maximal subexpression
    that does not read the cycle becomes one hoisted input."""

    def __init__(self, graph: FoldedGraph, stage: RecStage, sizes: dict, pshapes: dict,
                 g=None):
        self.graph, self.stage, self.sizes, self.pshapes = graph, stage, sizes, pshapes
        self.cyc = set(stage.vars)
        g = graph.nx() if g is None else g
        lossed = {r.var for loss in graph.losses for r in (loss.output, loss.target)}
        outside = frozenset(v for v in stage.vars
                            if v in lossed or any(w not in self.cyc for w in g.successors(v)))
        self.step = Step(stage.vars, {v: sizes[v] for v in stage.vars},
                         read_outside=outside)
        self.memo: dict = {}
        self.hoist_ids: dict = {}
        self.flip = stage.direction > 0       # a backward recurrence is lowered mirrored

    def run(self) -> Step:
        step = self.step
        for v in self.stage.vars:
            expr = self.graph.var(v).cases[0].expr
            if self.flip:
                expr = _mirror(expr, step.copies)
            node = self.build(expr)
            if step.nodes[node].kind not in ("ew", "softmax", "concat") or \
                    node in step.roots.values():
                # a value that lives elsewhere (a delay, a GEMM slice, another variable):
                # copy it so that every cycle variable has its own row in the state tape
                node = self.add(("copy", v), kind="ew", size=step.nodes[node].size,
                                op=None, args=(node,))
            step.roots[v] = node
        return step

    def add(self, key, **kw) -> int:
        if key in self.memo:
            return self.memo[key]
        n = Node(len(self.step.nodes), **kw)
        self.step.nodes.append(n)
        self.memo[key] = n.id
        return n.id

    def size(self, node: int) -> int:
        return self.step.nodes[node].size

    def dynamic(self, e) -> bool:
        return any(r.var in self.cyc for r in _refs(e))

    def hoist(self, e) -> int:
        # equal terms are evaluated once, except one holding a dropout: each time it is
        # written it draws its own masks (compile/masks.py)
        step = self.step
        i = None if sites(e) else self.hoist_ids.get(e)
        if i is None:
            i = len(step.hoisted)
            step.hoisted.append(_mirror(e, step.copies) if self.flip else e)  # true time
            if not sites(e):
                self.hoist_ids[e] = i
        return self.add(("hoist", i), kind="hoist",
                        size=_size_of(e, self.sizes, self.pshapes), hoist=i)

    def masks(self, e, size) -> int:
        """dropout(a, p) of a cycle value is a * m in the loop, m the masks of the spec's
        dropout for every step: a hoisted value, `dropout(1, p)` naming that dropout
        (Step.original); ones when not training."""
        step = self.step
        m = Apply(Op.DROPOUT, (Num(1.0),), e.attrs, e.pos)
        step.copies[id(m)] = (m, step.original(e))
        step.hoisted.append(m)                   # no shift to mirror: already true time
        i = len(step.hoisted) - 1
        return self.add(("hoist", i), kind="hoist", size=size, hoist=i)

    def build(self, e) -> int:
        if isinstance(e, Num):
            return self.add(("num", e.value), kind="num", size=0, value=float(e.value))
        if isinstance(e, ParamRef):
            if len(self.pshapes[e.name]) != 1:
                raise Unsupported(f"parameter '{e.name}' used as a vector")
            return self.add(("pvec", e.name), kind="pvec", size=self.pshapes[e.name][0],
                            param=e.name)
        if not self.dynamic(e):
            return self.hoist(e)
        if isinstance(e, Ref):
            return self.ref(e)
        return self.apply(e)

    def ref(self, e: Ref) -> int:
        """A cycle variable read in the loop: this step's value, or a delayed state."""
        sh = e.shift
        if sh.kind != ShiftKind.REL:
            raise Unsupported(f"'{e.var}[{sh.kind}]' inside its own cycle")
        if sh.k == 0:
            return self.step.roots[e.var]
        if sh.k > 0:
            raise Unsupported("a cycle that reads ahead after lowering")
        self.step.K = max(self.step.K, -sh.k)
        return self.add(("state", e.var, -sh.k), kind="state", size=self.sizes[e.var],
                        var=e.var, k=-sh.k)

    def apply(self, e: Apply) -> int:
        op = e.op
        if op in (Op.ADD, Op.SUB):
            return self.build_sum(e)
        if op is Op.MATMUL:
            p = e.args[0].name
            a = self.build(e.args[1])
            if self.step.nodes[a].kind == "gemm":    # W2 @ (W3 @ h[t-1]): the inner
                a = self.add(("copy", a), kind="ew", size=self.size(a),  # product gets
                             op=None, args=(a,))                         # a row of its own
            return self.add(("gemm", p, a), kind="gemm", size=self.pshapes[p][0], param=p,
                            args=(a,))
        if op in EW_OPS:
            args = tuple(self.build(a) for a in e.args)
            return self.ew(op, args)
        if op is Op.SOFTMAX:
            a = self.build(e.args[0])
            return self.add(("softmax", a), kind="softmax", size=self.size(a), args=(a,))
        if op is Op.CONCAT:
            args = tuple(self.build(a) for a in e.args)
            return self.add(("concat", args), kind="concat",
                            size=sum(self.size(a) for a in args), args=args)
        if op is Op.DROPOUT:
            a = self.build(e.args[0])
            if e.kw.get("p", 0) <= 0:
                return a
            return self.ew(Op.MUL, (a, self.masks(e, self.size(a))))
        raise Unsupported(f"op '{op.value}' inside a cycle")

    def ew(self, op, args) -> int:
        sizes = {self.size(a) for a in args} - {0}        # 0: a number, broadcast
        if len(sizes) > 1:        # a value of size 1 (a dot product) beside a vector
            raise Unsupported("a value of size 1 (one number per example, such as a dot "
                              "product) broadcast against a vector inside a cycle")
        size = max(self.size(a) for a in args)
        return self.add(("ew", op, args), kind="ew", size=size, op=op, args=args)

    def build_sum(self, e) -> int:
        terms = _terms(e)
        stat = [(s, t) for s, t in terms if not self.dynamic(t)]
        dyn = [(s, t) for s, t in terms if self.dynamic(t)]
        parts = []              # (sign, node)
        if any(not isinstance(t, Num) for _, t in stat):
            # one hoisted term: the sum of every term that does not read the cycle
            parts.append((1, self.hoist(signed_sum(stat))))
        else:
            parts += [(s, self.build(t)) for s, t in stat]
        parts = [(s, self.build(t)) for s, t in dyn] + parts
        s0, node = parts[0]
        if s0 < 0:
            node = self.ew(Op.NEG, (node,))
        for s, n in parts[1:]:
            node = self.ew(Op.ADD if s > 0 else Op.SUB, (node, n))
        return node


def _refs(e):
    if isinstance(e, Ref):
        return [e]
    if isinstance(e, Apply):
        return [r for a in e.args for r in _refs(a)]
    return []


__all__ = [
    "AttnStage",
    "Node",
    "RecStage",
    "Shift",
    "StaticStage",
    "Step",
    "Unsupported",
    "lower",
    "schedule",
]
