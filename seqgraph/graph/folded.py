"""The folded graph: the intermediate representation every later stage reads.

A model is a set of variables, each defined by an expression over references to other
variables (with an index shift), parameters and numbers. Read as a graph, each variable
is a node and each reference an edge; a reference with a shift is an edge through a
*delay* (the black square of Deep Learning, Fig. 10.2). Everything here is frozen: passes
build new structures instead of editing these.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

import networkx as nx

from ..errors import NOPOS, Pos
from ..ops import Op


# ----------------------------------------------------------------------------- shifts
class ShiftKind(StrEnum):
    """Where a reference reads along its index."""
    REL = "rel"           # t+k (k = 0 same step, k < 0 a delay, k > 0 an advance)
    FIRST = "first"       # h[1]   (absolute positions of a sequence)
    END = "end"           # h[end]
    LEFT = "left"         # n.left  (children in a tree)
    RIGHT = "right"       # n.right
    ROOT = "root"         # h[root]
    NONE = "none"         # a per-example value (no index)


CHILD = (ShiftKind.LEFT, ShiftKind.RIGHT)
ENDS = (ShiftKind.FIRST, ShiftKind.END)


@dataclass(frozen=True)
class Shift:
    """How a reference moves along its index: `kind` (a ShiftKind; a misspelt kind fails
    here, where the Shift is made) and, for REL, the offset k."""
    kind: ShiftKind = ShiftKind.REL
    k: int = 0

    def __post_init__(self):
        object.__setattr__(self, "kind", ShiftKind(self.kind))

    @property
    def is_delay(self) -> bool:
        """True when the edge goes through a delay square (a recurrence may cross it)."""
        return (self.kind == ShiftKind.REL and self.k != 0) or self.kind in CHILD

    @property
    def direction(self) -> int:
        """-1: reads what came before (a forward recurrence, or children before parents);
        +1: reads what comes after (a backward recurrence); 0: not a delay."""
        if self.kind in CHILD:
            return -1
        if self.kind == ShiftKind.REL and self.k:
            return -1 if self.k < 0 else 1
        return 0

    def mirrored(self) -> Shift:
        """The shift of the same reference in a time-reversed instance (`reverse`)."""
        if self.kind == ShiftKind.REL:
            return Shift(ShiftKind.REL, -self.k)
        ends = {ShiftKind.FIRST: Shift(ShiftKind.END), ShiftKind.END: Shift(ShiftKind.FIRST)}
        return ends.get(self.kind, self)

    def show(self, index: str | None) -> str:
        """The textbook form: t, t-1, t+2, end, 1, n.left, root."""
        if self.kind == ShiftKind.NONE or index is None:
            return ""
        if self.kind == ShiftKind.REL:
            return index if self.k == 0 else f"{index}{self.k:+d}"
        if self.kind == ShiftKind.FIRST:
            return "1"
        if self.kind in CHILD:
            return f"{index}.{self.kind}"
        return str(self.kind)

    def label(self) -> str:
        """A short label for a delay square: -1, +2, L, R, end."""
        if self.kind == ShiftKind.REL:
            return f"{self.k:+d}" if self.k else "0"
        short = {ShiftKind.LEFT: "L", ShiftKind.RIGHT: "R", ShiftKind.FIRST: "1"}
        return short.get(self.kind, str(self.kind))


SAME = Shift(ShiftKind.REL, 0)
NONE = Shift(ShiftKind.NONE, 0)


# ----------------------------------------------------------------------- expressions
@dataclass(frozen=True)
class Ref:
    """A reference to a variable (input, target or defined) at a shifted index."""
    var: str
    shift: Shift = SAME
    pos: Pos = field(default=NOPOS, compare=False)
    shift2: Shift = NONE     # the shift on the variable's second index (attention)


@dataclass(frozen=True)
class ParamRef:
    name: str
    pos: Pos = field(default=NOPOS, compare=False)


@dataclass(frozen=True)
class Num:
    value: float
    pos: Pos = field(default=NOPOS, compare=False)


@dataclass(frozen=True)
class Apply:
    """An op of the table in ops.py applied to argument expressions."""
    op: Op
    args: tuple
    attrs: tuple = ()          # (("p", 0.5),): hashable keyword arguments
    pos: Pos = field(default=NOPOS, compare=False)

    @property
    def kw(self) -> dict:
        return dict(self.attrs)


Expr = Ref | ParamRef | Num | Apply


def walk(expr: Expr):
    """Every node of an expression, operands before the node that uses them."""
    if isinstance(expr, Apply):
        for a in expr.args:
            yield from walk(a)
    yield expr


def refs(expr: Expr) -> list[Ref]:
    return [e for e in walk(expr) if isinstance(e, Ref)]


# ----------------------------------------------------------------------------- softmax
def softmax_over(arg: Expr, index: str, pos: Pos = NOPOS) -> Apply:
    """`softmax over t (E)` at step t: exp(E' - logsumexp over t (E)), E' being E at the
    real steps of t and -inf at padded ones. The logsumexp runs over the real steps, so
    the weights of each example's real steps add up to 1, and a padded step weighs 0
    whatever E holds there (exp(E - logsumexp) itself would overflow to inf where E is
    far above the real steps, and inf times a masked 0 is NaN)."""
    lse = Apply(Op.LSE_OVER, (arg,), (("over", index),), pos)
    real = Apply(Op.REAL_STEPS, (arg,), (("steps", index),), pos)
    return Apply(Op.EXP, (Apply(Op.SUB, (real, lse), (), pos),), (), pos)


def softmax_parts(expr) -> tuple[str, Expr] | None:
    """(t, E) when `expr` is `softmax over t (E)` as softmax_over writes it; else None."""
    if not (isinstance(expr, Apply) and expr.op is Op.EXP and expr.args):
        return None
    arg = expr.args[0]
    if not (isinstance(arg, Apply) and arg.op is Op.SUB):
        return None
    real, lse = arg.args
    if isinstance(real, Apply) and real.op is Op.REAL_STEPS and \
            isinstance(lse, Apply) and lse.op is Op.LSE_OVER and \
            real.args == lse.args and real.kw["steps"] == lse.kw["over"]:
        return lse.kw["over"], lse.args[0]
    return None


def fed_back(graph, name: str) -> bool:
    """True when some equation (or init value) reads variable `name` with a delay: a
    target read so is fed back (teacher forcing; what generation feeds its samples to)."""
    for v in graph.vars:
        for e in v.exprs:
            if any(r.var == name and r.shift.is_delay for r in refs(e)):
                return True
    return False


def params_of(expr: Expr) -> list[str]:
    return [e.name for e in walk(expr) if isinstance(e, ParamRef)]


# ------------------------------------------------------------------------- variables
@dataclass(frozen=True)
class Case:
    """One defining equation of a variable; `cond` is None, 'leaf' or 'otherwise'."""
    expr: Expr
    cond: str | None = None
    pos: Pos = field(default=NOPOS, compare=False)


@dataclass(frozen=True)
class Var:
    """A variable of the model.

    role   'input' | 'target' | 'hidden'
    index  the index it ranges over ('t', 'u', 'n') or None for one value per example
    kind   inputs and targets: 'onehot' | 'vec' | 'class' | 'binary'; hidden: None
    size   the declared size: an int, a dim name, or None (inferred)
    """
    name: str
    role: str
    index: str | None
    kind: str | None = None
    size: int | str | None = None
    cases: tuple = ()
    init: Expr | None = None
    pos: Pos = field(default=NOPOS, compare=False)
    inner: str | None = None     # a second index: e[u, t] (attention scores)

    @property
    def indexes(self) -> tuple:
        return tuple(i for i in (self.index, self.inner) if i is not None)

    @property
    def exprs(self) -> list:
        """Its equations' expressions, then its init value's."""
        return [c.expr for c in self.cases] + ([self.init] if self.init is not None else [])

    @property
    def reads(self) -> set:
        """The names its equations and init value read."""
        return {r.var for e in self.exprs for r in refs(e)}

    @property
    def declaration(self) -> str:
        """A data variable as the spec declares it: `z[t] : vec(2)`, `y : class(K)`."""
        return f"{self.name}{f'[{self.index}]' if self.index else ''} : {self.kind}({self.size})"

    @property
    def is_ids(self) -> bool:
        """True when its values are integer ids (one-hot inputs, class targets)."""
        return self.kind in ("onehot", "class")

    @property
    def defined(self) -> bool:
        return self.role == "hidden"


@dataclass(frozen=True)
class ParamDef:
    """A trainable parameter; `shape` is declared (ints or dim names) or None."""
    name: str
    shape: tuple | None = None
    init: tuple | None = None        # ('orthogonal',) or ('normal', 0.01)
    pos: Pos = field(default=NOPOS, compare=False)


class LossFn(StrEnum):
    """A loss line's function: softmax cross-entropy over classes, binary cross-entropy,
    half the squared error. Equal to its name as a string ("xent"), so that a misspelt
    one fails where it is made, not as a comparison that is never true."""
    XENT = "xent"
    BCE = "bce"
    MSE = "mse"


@dataclass(frozen=True)
class Loss:
    """`weight * fn(output, target)`, summed over the index, averaged over examples."""
    fn: LossFn                 # a name is taken too: Loss("xent", ...)
    output: Ref
    target: Ref
    weight: float = 1.0
    pos: Pos = field(default=NOPOS, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "fn", LossFn(self.fn))   # "xnet": a ValueError here

    @property
    def at_one_place(self) -> bool:
        """Read at one place (`o[end]`, `o[1]`, `o[root]`): one term an example, not one
        a step or node (the executors' rule; a per-example output is one term too)."""
        return self.output.shift.kind in (ShiftKind.FIRST, ShiftKind.END, ShiftKind.ROOT)


@dataclass(frozen=True)
class FoldedGraph:
    """The whole model after elaboration: plain equations, no cells left."""
    name: str
    dims: tuple                 # declared dims: (("H", 128), ...)
    indexes: tuple              # (("t", "seq"), ("n", "tree")), in order of first use
    vars: tuple                 # Var, in source order
    params: tuple               # ParamDef, in source order
    losses: tuple               # Loss
    train: tuple = ()           # (("batch", 32), ...) from the train block
    expansions: tuple = ()      # (("e", "rnn", "forward"), ...) cell uses, for reports
    warnings: tuple = ()        # (message, Pos)
    path: str = "<spec>"
    source: str = ""

    # lookups ---------------------------------------------------------------------
    def var(self, name: str) -> Var:
        return self.var_map[name]

    @cached_property
    def var_map(self) -> dict:
        """{name: Var}, built once (the graph is immutable; executors look variables up
        by name many times a step)."""
        return {v.name: v for v in self.vars}

    @property
    def param_map(self) -> dict:
        return {p.name: p for p in self.params}

    @property
    def size_names(self) -> set:
        """The size names the spec writes: its dims, and the names in its declared sizes
        and shapes (V of `onehot(V)`, D of `param E : [D, V]`)."""
        named = [v.size for v in self.vars] + [d for p in self.params for d in p.shape or ()]
        return {n for n, _ in self.dims} | {s for s in named if isinstance(s, str)}

    @cached_property
    def internal_only(self) -> dict:
        """{name: the reference why} of each variable over a tree index that has no value
        at a leaf: its one equation (no `if leaf` case) reads a child, `n.left` or
        `n.right`, or such a variable at its own node. The RNTN's `a[n] = [h[n.left];
        h[n.right]]` is one, read in an `otherwise` equation only (graph/check.py)."""
        trees, out = {i for i, k in self.indexes if k == "tree"}, {}
        grew = True
        while grew:
            grew = False
            for v in self.vars:
                if v.name in out or v.index not in trees or len(v.cases) != 1:
                    continue
                why = next((r for r in refs(v.cases[0].expr)
                            if r.shift.kind in CHILD
                            or r.var in out and r.shift.kind == ShiftKind.REL), None)
                if why is not None:
                    out[v.name], grew = why, True
        return out

    @property
    def index_kinds(self) -> dict:
        return dict(self.indexes)

    @property
    def tree_and_sequence(self) -> tuple[str, str] | None:
        """(tree index, sequence index) of a model over both (a tree encoder feeding a
        decoder, leaves reading a sequence summary: compile/hybrid.py), else None."""
        tree = next((i for i, k in self.indexes if k == "tree"), None)
        seq = next((i for i, k in self.indexes if k != "tree"), None)
        return (tree, seq) if tree is not None and seq is not None else None

    @property
    def tree_encoder(self) -> bool:
        """A tree encoder and its decoder as `treepairs` data feeds them: over a tree
        and a sequence, its one input the words at the tree's nodes (`w[n] :
        onehot(V)`), its one target a class sequence (`y[u] : class(K)`). Other models
        over both (a sequence the leaves read, an input per decoder step) have no
        loader."""
        both = self.tree_and_sequence
        ins, tgs = self.inputs(), self.targets()
        return both is not None and len(ins) == len(tgs) == 1 and \
            (ins[0].kind, ins[0].index) == ("onehot", both[0]) and \
            tgs[0].kind == "class" and self.index_kinds.get(tgs[0].index) not in (None, "tree")

    @property
    def train_config(self) -> dict:
        return dict(self.train)

    def inputs(self) -> list[Var]:
        return [v for v in self.vars if v.role == "input"]

    def targets(self) -> list[Var]:
        return [v for v in self.vars if v.role == "target"]

    def hidden(self) -> list[Var]:
        return [v for v in self.vars if v.role == "hidden"]

    @cached_property
    def carried(self) -> dict:
        """{variable: its longest delay into the past} of the variables read with one:
        what a window carries to the next."""
        out = {}
        for u, _, s in self.nx().edges(data="shift"):
            if s.kind == ShiftKind.REL and s.k < 0:
                out[u] = max(out.get(u, 0), -s.k)
        return out

    # the graph ---------------------------------------------------------------------
    def nx(self) -> nx.MultiDiGraph:
        """Variables as nodes; an edge u -> v for each reference to u in v's equations,
        carrying its `shift` (and `init=True` for references made by an init expression)."""
        g = nx.MultiDiGraph()
        for v in self.vars:
            g.add_node(v.name, role=v.role, index=v.index, kind=v.kind)
        for v in self.vars:
            for case in v.cases:
                for r in refs(case.expr):
                    g.add_edge(r.var, v.name, shift=r.shift, cond=case.cond, pos=r.pos)
            if v.init is not None:
                for r in refs(v.init):
                    g.add_edge(r.var, v.name, shift=r.shift, init=True, pos=r.pos)
        return g
