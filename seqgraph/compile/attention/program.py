"""Programs: an attention stage's expressions as a list of nodes over axes (`_Builder`)."""
from __future__ import annotations

from dataclasses import dataclass

from ... import ops
from ...graph.folded import Apply, Num, ParamRef, Ref, ShiftKind, walk
from ...graph.printer import show
from ...ops import Op
from ..masks import sites
from ..plan import Unsupported, _terms, signed_sum

REDUCE = (Op.SUM_OVER, Op.MEAN_OVER, Op.MAX_OVER, Op.LSE_OVER)
GENERIC = set(ops.ELEMENTWISE_BINARY) | set(ops.ELEMENTWISE_UNARY) | {
    Op.SOFTMAX, Op.CONCAT, Op.BILINEAR, Op.DROPOUT}


@dataclass
class Node:
    """One value of a program.

    kind  'num' 'param'          a number, a parameter (axes None: no batch axis)
          'read'                 a variable outside the cycle (all steps at once)
          'state'                a cycle variable `k` steps back (inside a loop)
          'hoist'                hoisted value j (sliced at the step when `sliced`)
          'op'                   an op of ops.py applied with broadcasting over axes
          'gemm'                 x @ [P1; P2; ...]^T: the stacked product of one operand
          'slice'                one parameter's columns of a 'gemm'
          'gather' 'onehot'      a lookup / a one-hot vector of ids
          'dot'                  v @ x: a GEMV (v a parameter) or a batched contraction
          'reduce'               sum / mean / max / logsumexp over an index, masked
          'contract'             sum / mean over an index of a product, one einsum
          'score'                v @ tanh(p + q), v a parameter vector, p per example
                                 (no axes), q over the node's axes: one fused kernel
          'real'                 x at the real steps of `over`, -inf at padded ones
          'softmax'              exp(x - logsumexp over x's one index (x)) at the real
                                 steps, 0 at padded ones: one kernel
          'fused'                folded into a later 'score' or 'softmax': not run
    """
    id: int
    kind: str
    axes: tuple | None
    args: tuple = ()
    op: Op | None = None
    attrs: tuple = ()
    expr: object = None
    name: str | None = None
    k: int = 0
    j: int = -1
    sliced: bool = False
    over: str | None = None
    ids: bool = False
    parts: list | None = None     # gemm: [(param, offset, rows)]
    off: int = 0
    size: int = 0
    aaxes: tuple = ()             # the axes of the arguments (set when built)
    aligned: bool = True          # every argument has the node's axes (or none)


class Prog:
    def __init__(self):
        self.nodes: list = []
        self.memo: dict = {}
        self.group_at: dict = {}      # last member's id -> its elementwise group
        self.grouped: set = set()     # the members of every group (ewgroup.py)


class _Builder:
    """Expressions to a program. `fixed` is the index a loop runs over (its axis is absent
    from every value: one step at a time) and `cyc` the variables of that loop; without
    them (all steps at once) every variable is a read."""

    def __init__(self, graph, model, order, fixed=None, cyc=(), hoist=None):
        self.g, self.m = graph, model
        self.order = order
        self.fixed = fixed
        self.cyc = set(cyc)
        self.prog = Prog()
        self.hb = hoist              # the builder of the hoisted program
        self.hoisted = []            # [(expr, node id in hb.prog)]
        self.hoist_ids = {}
        self.roots = {}
        self.K = 0
        self.groups = {}             # operand node id -> gemm node id
        self.owner = None            # the variable whose equation is being built
        self.overs = ()              # the indexes of the reductions around this point

    # ---------------------------------------------------------------- helpers
    def add(self, kind, axes, **kw) -> int:
        n = Node(len(self.prog.nodes), kind, axes, **kw)
        self.prog.nodes.append(n)
        return n.id

    def show(self, e) -> str:
        """An expression as written (each variable read with its own index)."""
        return show(e, lambda v: (self.g.var(v).index, self.g.var(v).inner)
                    if self.g.var(v).inner else self.g.var(v).index)

    def axes(self, names) -> tuple:
        return tuple(i for i in self.order if i in names and i != self.fixed)

    def union(self, ids):
        got = [self.prog.nodes[i].axes for i in ids]
        got = [a for a in got if a is not None]
        if not got:
            return None
        return self.axes({x for a in got for x in a})

    def dynamic(self, e) -> bool:
        return any(isinstance(r, Ref) and r.var in self.cyc for r in walk(e))

    def build(self, e) -> int:
        if isinstance(e, Ref) and e.var in self.cyc and e.shift.kind == ShiftKind.REL and \
                e.shift.k == 0:
            if e.var not in self.roots:
                raise Unsupported(f"'{e.var}' read at the same step before it is computed")
            return self.roots[e.var]
        # equal expressions are one node, except one holding a dropout: each draws its
        # own masks (the same object is never reached twice: compile/masks.py)
        key = ("draws", id(e)) if sites(e) else e
        nid = self.prog.memo.get(key)
        if nid is None:
            nid = self.prog.memo[key] = self._build(e)
        return nid

    # ---------------------------------------------------------------- building
    def _build(self, e) -> int:
        if isinstance(e, Num):
            return self.add("num", None, expr=e)
        if isinstance(e, ParamRef):
            return self.add("param", None, name=e.name, expr=e)
        if self.fixed is not None and not self.dynamic(e):
            return self.hoist(e)
        if isinstance(e, Ref):
            return self.ref(e)
        op = e.op
        if self.fixed is not None and op in (Op.ADD, Op.SUB):
            return self.sum(e)
        if op in REDUCE:
            return self.reduce(e)
        if op is Op.REAL_STEPS:
            x = self.build(e.args[0])
            over = e.kw["steps"]
            axes = self.axes(set(self.prog.nodes[x].axes or ()) | {over})
            return self.add("real", axes, args=(x,), over=over, expr=e)
        if op is Op.MATMUL:
            if not isinstance(e.args[0], ParamRef):
                raise Unsupported(f"a product by a non-parameter ({self.show(e)})")
            x = self.build(e.args[1])
            return self.matmul(e.args[0].name, x, e)
        if op is Op.GATHER:
            x = self.build(e.args[1])
            return self.add("gather", self.prog.nodes[x].axes, args=(x,),
                            name=e.args[0].name, expr=e)
        if op is Op.ONEHOT:
            x = self.build(e.args[0])
            return self.add("onehot", self.prog.nodes[x].axes, args=(x,), expr=e,
                            size=self.m.sizes[e.args[0].var])
        if op is Op.DROPOUT and e.kw.get("p", 0) > 0:
            return self.dropout(e, self.build(e.args[0]))
        if op is Op.DOT:
            a, b = (self.build(x) for x in e.args)
            if self.prog.nodes[a].axes is None and self.prog.nodes[b].axes is None:
                raise Unsupported(f"a dot product of two parameters ({self.show(e)})")
            return self.add("dot", self.union((a, b)), args=(a, b), expr=e)
        if op in GENERIC:
            args = tuple(self.build(a) for a in e.args)
            return self.add("op", self.union(args), args=args, op=op, attrs=e.attrs,
                            expr=e)
        raise Unsupported(f"op '{op.value}' in an attention stage")

    def ref(self, e: Ref) -> int:
        v = self.g.var(e.var)
        if e.var in self.cyc:
            s = e.shift
            if s.kind != ShiftKind.REL or s.k > 0:
                raise Unsupported(f"'{e.var}' read at {s.show(v.index)} inside its own "
                                  "attention cycle")
            if v.inner is not None:
                raise Unsupported(f"'{e.var}' over two indexes read with a delay")
            self.K = max(self.K, -s.k)
            return self.add("state", (), name=e.var, k=-s.k, expr=e)
        if v.inner is not None:
            axes = self.axes({v.index, v.inner})
        elif v.index is None or e.shift.kind in (ShiftKind.NONE, ShiftKind.FIRST, ShiftKind.END):
            axes = ()
        else:
            if self.g.index_kinds.get(v.index) != "seq":
                raise Unsupported(f"'{e.var}' over a tree index in an attention stage")
            axes = self.axes({v.index})
        return self.add("read", axes, expr=e, name=e.var, ids=v.is_ids)

    def dropout(self, e, x) -> int:
        """dropout(a, p): a times the masks the interpreter draws for this equation at
        each step of its variable and, inside reductions, at each step of the indexes
        reduced (compile/masks.py): a node over those indexes (a broadcast to them: a
        value per example dropped at every step), in the loop over the variable's index
        (`sliced`) this step's. The value's own indexes are among them (the checker binds
        every index a read uses). A variable over two indexes (e[u, t]) trains interpreted
        (masks.py: its masks are not laid out), so here its dropout is evaluation's
        identity, over the axes of its argument."""
        v = self.g.var(self.owner)
        if v.inner is not None:
            return self.add("op", self.prog.nodes[x].axes, args=(x,), op=Op.DROPOUT,
                            attrs=e.attrs, expr=e, sliced=False)
        axes = self.axes({v.index, *self.overs} - {None})
        return self.add("op", axes, args=(x,), op=Op.DROPOUT, attrs=e.attrs, expr=e,
                        sliced=self.fixed is not None and v.index == self.fixed)

    def hoist(self, e) -> int:
        key = ("draws", id(e)) if sites(e) else e
        j = self.hoist_ids.get(key)
        if j is None:
            j = self.hoist_ids[key] = len(self.hoisted)
            self.hb.owner, self.hb.overs = self.owner, self.overs
            self.hoisted.append((e, self.hb.build(e)))
        hax = self.hb.prog.nodes[self.hoisted[j][1]].axes
        axes = None if hax is None else tuple(a for a in hax if a != self.fixed)
        return self.add("hoist", axes, j=j, sliced=hax is not None and self.fixed in hax,
                        expr=e)

    def sum(self, e) -> int:
        """A sum inside the loop: its terms that read the cycle, plus one hoisted term for
        all the others (as plan.lower)."""
        terms = _terms(e)
        stat = [(s, t) for s, t in terms if not self.dynamic(t)]
        dyn = [(s, t) for s, t in terms if self.dynamic(t)]
        parts = [(s, self.build(t)) for s, t in dyn]
        if any(not isinstance(t, Num) for _, t in stat):
            parts.append((1, self.hoist(signed_sum(stat))))
        else:
            parts += [(s, self.build(t)) for s, t in stat]
        s0, node = parts[0]
        if s0 < 0:
            node = self.add("op", self.prog.nodes[node].axes, args=(node,), op=Op.NEG)
        for s, n in parts[1:]:
            node = self.add("op", self.union((node, n)), args=(node, n),
                            op=Op.ADD if s > 0 else Op.SUB)
        return node

    def matmul(self, P, x, e) -> int:
        """`P @ x`: a slice of the one stacked product of x by every parameter applied to
        it in this program."""
        g = self.groups.get(x)
        rows = self.m.param_shapes[P][0]
        if g is None:
            g = self.groups[x] = self.add("gemm", self.prog.nodes[x].axes, args=(x,),
                                          parts=[], expr=e.args[1])
        gn = self.prog.nodes[g]
        for p, off, n in gn.parts:
            if p == P:
                break
        else:
            off = sum(n for _, _, n in gn.parts)
            gn.parts.append((P, off, rows))
        return self.add("slice", gn.axes, args=(g,), name=P, off=off, size=rows, expr=e)

    def reduce(self, e) -> int:
        over = e.kw["over"]
        if over == self.fixed:
            raise Unsupported(f"a reduction over '{over}' inside the loop over '{over}'")
        if self.g.index_kinds.get(over) != "seq":
            raise Unsupported(f"a reduction over the tree index '{over}'")
        arg = e.args[0]
        outer, self.overs = self.overs, self.overs + (over,)
        try:
            return self._reduce(e, over, arg)
        finally:
            self.overs = outer

    def _reduce(self, e, over, arg) -> int:
        if e.op in (Op.SUM_OVER, Op.MEAN_OVER) and isinstance(arg, Apply) and \
                arg.op is Op.MUL:
            p, q = (self.build(a) for a in arg.args)
            ap, aq = self.prog.nodes[p].axes, self.prog.nodes[q].axes
            if ap is not None and aq is not None and over in ap + aq:
                axes = tuple(a for a in self.union((p, q)) if a != over)
                return self.add("contract", axes, args=(p, q), op=e.op, over=over, expr=e)
        x = self.build(arg)
        ax = self.prog.nodes[x].axes or ()
        return self.add("reduce", tuple(a for a in ax if a != over), args=(x,), op=e.op,
                        over=over, expr=e)


def _finish(prog):
    """What running a program needs of each node, decided once."""
    for n in prog.nodes:
        n.aaxes = tuple(prog.nodes[a].axes for a in n.args)
        n.aligned = all(ax is None or ax == n.axes for ax in n.aaxes)


def _fuse(prog, keep):
    """Chains of a loop's step folded into one kernel each (fused.py): `v @ tanh(p + q)`
    becomes a 'score' node and softmax over t (graph/folded.softmax_over) a 'softmax'
    node, in place of the chain's last node; the nodes folded in become
    'fused' (not run). Only nodes whose value nothing else reads, and that are no
    variable's value (`keep`), are folded."""
    uses = [0] * len(prog.nodes)
    for n in prog.nodes:
        for a in n.args:
            uses[a] += 1
    nodes = prog.nodes

    def inner(i, kind, op):
        m = nodes[i]
        return m.kind == kind and m.op is op and uses[i] == 1 and i not in keep

    for n in nodes:
        if n.kind == "dot":
            _fuse_score(nodes, n, inner)
        elif n.kind == "op" and n.op is Op.EXP:
            _fuse_softmax(nodes, n, inner)


def _fuse_score(nodes, n, inner):
    v, t = n.args if nodes[n.args[0]].axes is None else reversed(n.args)
    if nodes[v].kind != "param" or nodes[t].axes is None or not inner(t, "op", Op.TANH):
        return
    (s,) = nodes[t].args
    if not inner(s, "op", Op.ADD):
        return
    p, q = nodes[s].args
    if nodes[p].axes != ():
        p, q = q, p
    if nodes[p].axes != () or nodes[q].axes != n.axes:
        return
    n.kind, n.args = "score", (v, p, q)
    nodes[t].kind = nodes[s].kind = "fused"


def _fuse_softmax(nodes, n, inner):
    (d,) = n.args
    if not inner(d, "op", Op.SUB):
        return
    k, m = nodes[d].args
    real, r = nodes[k], nodes[m]
    if not (inner(k, "real", None) and inner(m, "reduce", Op.LSE_OVER) and
            real.args == r.args and real.over == r.over):
        return
    (x,) = r.args
    if not (nodes[x].axes == (r.over,) and n.axes == (r.over,)):
        return
    n.kind, n.args, n.over = "softmax", (x,), r.over
    nodes[d].kind = real.kind = r.kind = "fused"
