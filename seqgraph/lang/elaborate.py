"""Elaboration: AST -> FoldedGraph. Expands cells, resolves every name, turns indexes
into shifts and expressions into ops of the table. Shapes and causality are checked by
graph/check.py afterwards; this pass only makes sure every name means something.
"""
from __future__ import annotations

import os
import re
from functools import cache
from importlib import resources

from ..errors import Pos, SpecError, did_you_mean, too_deep
from ..graph.folded import (
    CHILD,
    ENDS,
    NONE,
    SAME,
    Apply,
    Case,
    FoldedGraph,
    Loss,
    LossFn,
    Num,
    ParamDef,
    ParamRef,
    Ref,
    Shift,
    ShiftKind,
    Var,
    refs,
    softmax_over,
)
from ..ops import FUNCTIONS, LOSS_NAMES, REDUCTIONS, Op
from . import ast as A
from .cells import Expander, _use_parts, is_cell_use
from .parse import parse

# the train block's keys (seqgraph/train/config.py gives each its default and meaning;
# tests/test_core.py keeps the two lists equal)
TRAIN_KEYS = ("data", "valid", "optimizer", "clip", "batch", "bptt", "epochs", "teacher",
              "schedule", "param_init", "l2", "select", "seed", "dtype", "on_nan",
              "average", "keep")


# an optimiser's own arguments, which a user may write as train keys (Keras' habit):
# they are arguments of the `optimizer` call
OPTIMIZER_ARGS = ("lr", "learning_rate", "momentum", "beta1", "beta2", "eps", "reset")


def optimizer_arg_hint(key: str) -> str:
    """The hint for a train key that is an optimiser's argument, else ''."""
    if key not in OPTIMIZER_ARGS:
        return ""
    arg = "lr" if key == "learning_rate" else key
    return (f"{key} is an argument of the optimizer: optimizer = adam({arg} = ...) "
            f"(or sgd, adagrad)")


# Keras' and PyTorch's names of the initialisers: the hint each gets (not a second
# spelling; identity is no random orthogonal matrix, xavier_normal no xavier)
_SAME_VARIANCE = "'xavier' is Glorot's uniform form (the same variance as {name}); " \
    "normal(s) draws N(0, s^2)"
INIT_ALIASES = {
    "glorot_uniform": "did you mean 'xavier'? (Keras' glorot_uniform)",
    "xavier_uniform": "did you mean 'xavier'? (PyTorch's xavier_uniform_)",
    "glorot_normal": _SAME_VARIANCE, "xavier_normal": _SAME_VARIANCE,
    "random_normal": "did you mean 'normal'? (Keras' random_normal)",
    "random_uniform": "did you mean 'uniform'? (Keras' random_uniform)",
    "zero": "did you mean 'zeros'?", "orthogonal_": "did you mean 'orthogonal'?",
    "identity": "there is no identity initialiser; 'orthogonal' is a random orthogonal "
                "matrix, 'ones' a matrix of ones"}
INITS = {"xavier": 0, "orthogonal": 0, "zeros": 0, "ones": 0, "normal": 1, "uniform": 1}
# the largest scale an initialiser takes: normal(s) draws reach about 6s, and float32's
# largest number is 3.4e38 (normal(1e300) would fill W with inf, and train)
MAX_INIT_SCALE = 1e30
# the longest delay (or advance) a reference may have: no sequence is that long (its
# steps are kept beside every window, and the executors run over them one by one; train
# refuses far shorter ones for memory), so a longer one is a slip, said at its index
MAX_DELAY = 1_000_000


def init_problem(name: str, args) -> str | None:
    """What is wrong with the initialiser `name(*args)`, or None: the one rule of a
    parameter's `init`, the train block's `param_init` and `Model(param_init=...)`
    (each caller says an unknown name with its own hint first)."""
    if name not in INITS:
        return f"unknown initialiser '{name}' (initialisers: {', '.join(INITS)})"
    if len(args) != INITS[name]:
        return f"initialiser '{name}' takes " + (
            f"a scale, e.g. {name}(0.01)" if INITS[name] else "no argument")
    scale = args[0] if args else 1.0
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or \
            not 0 < scale <= MAX_INIT_SCALE:
        return f"{name}()'s scale must be a positive number up to {MAX_INIT_SCALE:g}, " \
               f"not {scale!r}"
    return None


@cache
def prelude_cells() -> dict:
    text = resources.files("seqgraph.lang").joinpath("prelude.sg").read_text()
    spec = parse(text, "<prelude>")
    return {s.name: s for s in spec.stmts if isinstance(s, A.CellDef)}


def elaborate(spec: A.Spec) -> FoldedGraph:
    """The folded graph of a parsed spec; raises SpecError located in the spec's file."""
    try:
        return _Elaborator(spec).run()
    except SpecError as e:
        raise e.located(spec.path, spec.source) from None
    except RecursionError:
        raise too_deep(spec.source, spec.path) from None


class _Elaborator:
    def __init__(self, spec: A.Spec):
        self.spec = spec
        self.stmts = list(spec.stmts)
        self.warnings = []
        self.starred = set()         # parameters warned of as `W * ...` (_matrix_times)

    # ------------------------------------------------------------------ statements
    def run(self) -> FoldedGraph:
        cells = dict(prelude_cells())
        for c in self._of(A.CellDef):
            if c.name in cells and c.name not in prelude_cells():
                raise SpecError(f"cell '{c.name}' is defined twice", c.pos)
            cells[c.name] = c
        self.cells = cells
        self._collect_top()
        eqs = self._expand()
        return self._build(eqs)

    def _of(self, kind):
        return [s for s in self.stmts if isinstance(s, kind)]

    def _collect_top(self):
        for s in self.stmts:
            if isinstance(s, A.Return):
                raise SpecError("'return' belongs inside a cell", s.pos)
        self.trees = {}
        for t in self._of(A.TreeDecl):
            if t.name == "root":         # h[root] is the root: every read would be one
                raise SpecError("a tree index cannot be named 'root': h[root] reads the "
                                "tree's root, so every reference over it would", t.pos,
                                hint="name the index n (tree n), and read h[n], h[n.left], "
                                     "h[root]")
            if t.name in self.trees:     # as a dim or a param declared twice
                raise SpecError(f"tree '{t.name}' is declared twice (first at line "
                                f"{self.trees[t.name].pos.line})", t.pos,
                                hint="keep one `tree` line an index")
            self.trees[t.name] = t
        self.dims, self.dim_decls = {}, {}
        for d in self._of(A.DimDecl):
            if d.name in self.dims:
                raise SpecError(f"dim '{d.name}' is declared twice", d.pos)
            self.dims[d.name] = d.value
            self.dim_decls[d.name] = d
        self.data = {}
        for d in self._of(A.DataDecl):
            if len(d.index) > 1:
                raise SpecError("an input or target has at most one index", d.pos)
            self._declare(d.name, d.pos)
            self.data[d.name] = d
        self.params = {}
        for group in self._of(tuple):
            for p in group:
                self._declare(p.name, p.pos)
                self.params[p.name] = p

    def _declare(self, name, pos):
        """`name` declared at `pos` must be neither a dim, an input/target nor a
        parameter yet (dims are declared first, then inputs and targets, then
        parameters)."""
        if name in self.dim_decls:            # a size and a value: `+ H` would read one
            raise SpecError(f"'{name}' is declared twice (first at line "
                            f"{self.dim_decls[name].pos.line} as a dim)", pos,
                            hint="a name is a size (dim) or a value, not both: rename one")
        for other in (self.data, getattr(self, "params", {})):
            if name in other:
                raise SpecError(f"'{name}' is declared twice (first at line "
                                f"{other[name].pos.line})", pos)

    # ------------------------------------------------------------------ cells
    def _expand(self) -> list:
        eqs = [s for s in self.stmts if isinstance(s, A.Equation)]
        inits = self._of(A.InitDecl)
        uses = {e.name: e for e in eqs if is_cell_use(e, self.cells)}
        plain = {e.name: e for e in eqs if not is_cell_use(e, self.cells)}
        variables = set(self.data) | {e.name for e in eqs}

        def index_of(name, seen=()):
            if name in self.data:
                return self.data[name].index[0] if self.data[name].index else None
            if name in plain:
                return plain[name].index[0] if plain[name].index else None
            if name in uses and name not in seen:
                for a in _use_parts(uses[name].rhs)[3]:
                    if isinstance(a, A.Name) and a.index is None and a.name in variables:
                        idx = index_of(a.name, seen + (name,))
                        if idx is not None:
                            return idx
            return None

        def undefined(name, seen=()):
            """The first undefined name a cell use reads, through the uses it reads:
            `e = embed(x, 8)` with x never declared, for `h = bi gru(e, 8)`."""
            if name not in uses or name in seen:
                return None
            for a in _use_parts(uses[name].rhs)[3]:
                if isinstance(a, A.Name) and a.index is None:
                    if a.name not in variables and a.name[:1].islower() and \
                            a.name not in self.dims and a.name not in self.params:
                        return a
                    found = undefined(a.name, seen + (name,))
                    if found is not None:
                        return found
            return None
        index_of.undefined = undefined

        def indexes(name):
            """The indexes of an input, target or variable defined by an equation (not a
            cell use): () for one value per example; None when unknown."""
            if name in self.data:
                return tuple(self.data[name].index)
            return tuple(plain[name].index) if name in plain else None
        index_of.indexes = indexes

        first = {}
        for e in eqs:                   # a cell use defines its variable whole: once
            if e.name in first and (is_cell_use(e, self.cells) or
                                    is_cell_use(first[e.name], self.cells)):
                raise SpecError(f"'{e.name}' is defined twice (first at line "
                                f"{first[e.name].pos.line})", e.pos,
                                hint="each variable is defined once")
            first.setdefault(e.name, e)

        prelude = prelude_cells()
        exp = Expander(self.cells, index_of, variables,
                       {n for n, c in self.cells.items() if prelude.get(n) is c})
        out = []
        for e in eqs:
            if is_cell_use(e, self.cells):
                if e.index or e.cond:
                    raise SpecError("a cell use defines a whole variable: write "
                                    f"'{e.name} = ...' without an index", e.pos)
                out += exp.expand_use(e)
            else:
                out.append(e)
        for s in out:
            if isinstance(s, A.ParamDecl):
                if s.name in self.params:
                    raise SpecError(f"'{s.name}' is declared twice", s.pos)
                self.params[s.name] = s
        self.inits = inits + [s for s in out if isinstance(s, A.InitDecl)]
        return [s for s in out if isinstance(s, A.Equation)]

    # ------------------------------------------------------------------ the graph
    def _build(self, eqs) -> FoldedGraph:
        self.defs = {}
        for e in eqs:
            self._declare(e.name, e.pos)
            if e.name in self.params:
                raise SpecError(f"'{e.name}' is a parameter and cannot be defined by an "
                                "equation", e.pos)
            self.defs.setdefault(e.name, []).append(e)
        self.indexes = {}
        for d in self.data.values():
            for i in d.index:
                self._index(i, d.pos)
        for name, group in self.defs.items():
            self._check_cases(name, group)
        self._check_inits()
        self.used_params = set()
        vars_ = [self._data_var(d) for d in self.data.values()]
        vars_ += [self._hidden_var(name, group) for name, group in self.defs.items()]
        self._unread_inits(vars_)
        losses = tuple(self._loss(l) for l in self._of(A.LossDecl))
        self._unread_data(vars_, losses)
        for loss in losses:                         # `loss 0 * ...`: trains nothing
            if loss.weight == 0:
                self.warnings.append(("this loss has weight 0: it adds nothing to what "
                                      "training minimises: "
                                      "remove the line or give it a weight above 0",
                                      loss.pos))
        for i, loss in enumerate(losses):           # the same line twice counts twice
            first = next((m for m in losses[:i] if (m.fn, m.output, m.target) ==
                          (loss.fn, loss.output, loss.target)), None)
            if first is not None:
                self.warnings.append((f"this loss repeats the one of line {first.pos.line}: "
                                      f"the two add up (a weight says so: `loss 2 * "
                                      f"{loss.fn}(...)`)", loss.pos))
        if not losses:
            self.warnings.append(("the model has no loss: it can run but not train",
                                  Pos(1, 1)))
        params = tuple(self._param(p) for p in self.params.values())
        for p in self.params.values():
            if p.name not in self.used_params:
                self.warnings.append((f"parameter '{p.name}' is declared but never used",
                                      p.pos))
        model = self._of(A.ModelDecl)
        if len(model) > 1:                # (the second would be ignored)
            raise SpecError(f"the model is named twice (first at line {model[0].pos.line})",
                            model[1].pos, hint="keep one `model NAME` line")
        name = model[0].name if model else _stem(self.spec.path)
        return FoldedGraph(
            name=name, dims=tuple(self.dims.items()), indexes=tuple(self.indexes.items()),
            vars=tuple(vars_), params=params, losses=losses, train=self._train(),
            warnings=tuple(self.warnings), path=self.spec.path, source=self.spec.source)

    def _index(self, name, pos):
        kind = "tree" if name in self.trees else "seq"
        if name in self.dims or name in self.params or name in self.data:
            decl, what = (self.params[name], "a parameter") if name in self.params else \
                (self.dim_decls[name], "a dim") if name in self.dims else \
                (self.data[name], _a(self.data[name].role))
            word = what.split()[-1]
            raise SpecError(f"'{name}' is declared as {what} and used as an index (line "
                            f"{pos.line})", decl.pos,
                            hint=f"an index needs no declaration: rename the {word} (or "
                                 f"the index)")
        self.indexes.setdefault(name, kind)
        return kind

    def _check_cases(self, name, group):
        first = group[0]
        if len(first.index) > 2:
            raise SpecError("a variable has at most two indexes", first.pos)
        if len(first.index) == 2 and (first.index[0] == first.index[1] or
                                      set(first.index) & set(self.trees)):
            raise SpecError("a variable over two indexes needs two different sequence "
                            "indexes, like e[u, t]", first.pos)
        conds = [e.cond for e in group]
        is_tree = bool(first.index) and first.index[0] in self.trees
        cased = next((e for e in group if e.cond is not None), None)
        if not is_tree and cased is not None:       # `tree n` forgotten: not "twice"
            raise SpecError(f"'{cased.cond}' cases are for tree indexes", cased.pos,
                            hint=f"declare the index with `tree {first.index[0]}`"
                            if first.index else "declare the index with `tree n`")
        if not is_tree or len(group) == 1 and conds == [None]:
            if len(group) > 1:
                raise SpecError(f"'{name}' is defined twice (first at line "
                                f"{first.pos.line})", group[1].pos,
                                hint="each variable is defined once")
            if conds[0] is not None:
                raise SpecError(f"'{conds[0]}' cases are for tree indexes", first.pos,
                                hint="declare the index with `tree n`")
            return
        for e in group[1:]:                         # each case is written over the same
            if e.index == first.index:              # index: h[n] ... if leaf, h[n] ...
                continue
            pairs = zip(e.index, first.index, strict=False)
            wrong = next((i for i, j in pairs if i != j), None) or \
                (e.index[len(first.index)] if len(e.index) > len(first.index) else None)
            over = f"its equation of line {first.pos.line} runs over " \
                f"'{', '.join(first.index)}'"
            raise SpecError(f"wrong index '{wrong}' on '{name}': {over}" if wrong else
                            f"wrong index on '{name}': it has none here, and {over}",
                            self._word_pos(e.pos, wrong) if wrong else e.pos,
                            hint=f"write {name}[{', '.join(first.index)}] in each of its "
                                 f"equations")
        if sorted(c or "" for c in conds) != ["leaf", "otherwise"]:
            self._case_twice(name, first.index[0], group)
            missing = [c for c in ("leaf", "otherwise") if c not in conds]
            what = f"has no '{'if leaf' if missing[0] == 'leaf' else 'otherwise'}' " \
                "equation" if len(missing) == 1 else "has its cases wrong"
            raise SpecError(f"'{name}' over the tree '{first.index[0]}' {what}",
                            group[-1].pos, hint="a tree variable needs one 'if leaf' "
                            "equation and one 'otherwise' equation")

    @staticmethod
    def _case_twice(name, tree, group):
        """A case or a plain equation written twice, or a plain equation beside both
        cases: said there (at the second of two), with the line of the other."""
        seen, conds = {}, [e.cond for e in group]
        for e in group:
            if e.cond is None and None in seen:      # as a variable over a sequence
                raise SpecError(f"'{name}' is defined twice (first at line "
                                f"{seen[None].pos.line})", e.pos,
                                hint="each variable is defined once: over a tree, by one "
                                     "plain equation, or by one 'if leaf' equation and "
                                     "one 'otherwise' equation")
            if e.cond is not None and e.cond in seen:
                what = f"two '{'if leaf' if e.cond == 'leaf' else 'otherwise'}' " \
                    f"equations (the other at line {seen[e.cond].pos.line})"
            elif e.cond is None and "leaf" in conds and "otherwise" in conds:
                what = "a plain equation beside its 'if leaf' and 'otherwise' equations"
            else:
                seen[e.cond] = e
                continue
            raise SpecError(f"'{name}' over the tree '{tree}' has {what}", e.pos,
                            hint="a tree variable has one plain equation, or one 'if "
                                 "leaf' equation and one 'otherwise' equation")

    def _check_inits(self):
        for i in self.inits:
            if i.name not in self.defs:
                what = f"'{i.name}' is {_a(self.data[i.name].role)}" if i.name in \
                    self.data else f"no equation defines '{i.name}'"
                raise SpecError(f"init for '{i.name}', but {what}", i.pos,
                                hint="init gives the value a delayed reference reads "
                                     "before the first step of a defined variable")

    def _unread_inits(self, vars_) -> None:
        """An init value is what a delay (h[t-1]) or an advance (g[t+1]) reads past the
        ends; with no such reference of its variable, it is never read: a warning, as an
        unused parameter is (`init o = ...` meant for the recurrence `h`, say)."""
        shifted = {r.var for v in vars_ for e in v.exprs for r in refs(e)
                   if r.shift.kind == ShiftKind.REL and r.shift.k != 0}
        for v in vars_:
            if v.init is not None and v.name not in shifted:
                at = next(i.pos for i in self.inits if i.name == v.name)
                self.warnings.append((f"init {v.name} is never read: no equation reads "
                                      f"{v.name} with a delay ({v.name}[{v.index}-1]) or an "
                                      f"advance ({v.name}[{v.index}+1])", at))

    def _unread_data(self, vars_, losses) -> None:
        """An input no equation reads, a target no loss and no equation reads: warnings,
        as an unused parameter is (the data would be read, and change nothing)."""
        read = set().union(*(v.reads for v in vars_)) | {l.target.var for l in losses}
        for d in self.data.values():
            if d.name not in read:
                what = "equation" if d.role == "input" else "loss or equation"
                self.warnings.append((f"{d.role} '{d.name}' is declared but no {what} "
                                      f"reads it", d.pos))

    def _data_var(self, d: A.DataDecl) -> Var:
        return Var(d.name, d.role, d.index[0] if d.index else None, d.kind, d.size,
                   pos=d.pos)

    def _hidden_var(self, name, group) -> Var:
        first = group[0]
        for i in first.index:
            self._index(i, first.pos)
        index, inner = (first.index + (None, None))[:2]
        size = next((e.size for e in group if e.size is not None), None)
        cases = tuple(Case(self._expr(e.rhs, first.index, e.cond), e.cond, e.pos)
                      for e in group)
        inits = [i for i in self.inits if i.name == name]
        if len(inits) > 1:
            raise SpecError(f"'{name}' has two init values", inits[1].pos)
        init = None
        if inits:
            if index is None:
                raise SpecError(f"init gives the value before the first step; '{name}' "
                                "has no index", inits[0].pos)
            if index in self.trees:      # a leaf reads no child: nothing would read it
                raise SpecError(f"init gives the value before the first step; '{name}' "
                                f"runs over the tree '{index}', which has none",
                                inits[0].pos, hint=f"a leaf's value is its 'if leaf' "
                                                   f"equation: {name}[{index}] = ... if leaf")
            init = self._expr(inits[0].expr, (), None, in_init=True)
        return Var(name, "hidden", index, None, size, cases, init, first.pos, inner)

    # ------------------------------------------------------------------ expressions
    def _expr(self, e, bound, cond, in_init=False):
        """AST expression -> IR; `bound` are the indexes in scope: the equation's own
        (() for a per-example value) and those of enclosing reductions."""
        rec = lambda x: self._expr(x, bound, cond, in_init)
        if isinstance(e, A.Number):
            return Num(e.value, e.pos)
        if isinstance(e, A.Name):
            return self._name(e, bound, cond, in_init)
        if isinstance(e, A.Reduce):
            return self._reduce(e, bound, cond, in_init)
        if isinstance(e, A.Neg):
            return Apply(Op.NEG, (rec(e.arg),), (), e.pos)
        if isinstance(e, A.Concat):
            return Apply(Op.CONCAT, tuple(rec(p) for p in e.parts), (), e.pos)
        if isinstance(e, A.BinOp) and e.op == "@":
            return self._matmul(e, rec)
        if isinstance(e, A.BinOp) and e.op == "/" and isinstance(e.right, A.Number) and \
                e.right.value == 0:      # every value inf or nan: a slip, said where it is
            raise SpecError("division by the number 0", e.right.pos,
                            hint="it makes every value inf or nan; divide by a number "
                                 "other than 0")
        if isinstance(e, A.BinOp):
            if e.op == "*":
                self._matrix_times(e)
            op = {"+": Op.ADD, "-": Op.SUB, "*": Op.MUL, "/": Op.DIV}[e.op]
            return Apply(op, (rec(e.left), rec(e.right)), (), e.pos)
        if isinstance(e, A.FnCall):
            return self._call(e, rec)
        if isinstance(e, A.CellUse):
            raise SpecError("a cell use stands on its own line: `e = "
                            f"{e.modifier} {e.cell}(...)`", e.pos)
        raise SpecError("this is not an expression", getattr(e, "pos", None))

    def _matrix_times(self, e: A.BinOp) -> None:
        """`U * h[t-1]` typed for the book's U h(t-1): `*` multiplies elementwise, which
        makes U a vector (one weight per unit: a diagonal recurrence), and when the sizes
        fit nothing else says so. A warning, once a parameter, for one named as the book
        names matrices (a capital first letter) whose shape is not declared."""
        for p, other in ((e.left, e.right), (e.right, e.left)):
            if not (isinstance(p, A.Name) and p.index is None and p.name in self.params
                    and self.params[p.name].shape is None and p.name[:1].isupper()
                    and not isinstance(other, A.Number) and p.name not in self.starred):
                continue
            self.starred.add(p.name)
            self.warnings.append((
                f"`{p.name} * ...` multiplies elementwise, which makes {p.name} a vector "
                f"(one weight per unit); a matrix times a vector is written "
                f"`{p.name} @ ...` (declare `param {p.name} : [n]` if a vector is meant)",
                p.pos))

    def _declared_rank(self, param: str):
        shape = self.params[param].shape
        return None if shape is None else len(shape)

    def _reduce(self, e: A.Reduce, bound, cond, in_init):
        """`sum over t (E)`: E with t bound, at every step of t. `softmax over t (E)` is
        exp(E - logsumexp over t (E)), normalised over t (graph/folded.softmax_over)."""
        if e.index not in self.indexes:
            raise SpecError(f"'{e.index}' is not a sequence index of this model", e.pos,
                            hint="a reduction runs over an index that some variable uses")
        if self.indexes.get(e.index) == "tree":
            raise SpecError("reductions run over sequence indexes, not trees", e.pos)
        fns = dict(REDUCTIONS, softmax=None)
        if e.fn not in fns:
            raise SpecError(f"unknown reduction '{e.fn}'", e.pos,
                            hint=did_you_mean(e.fn, fns) or "sum, max, mean, logsumexp, "
                            "softmax over INDEX (...)")
        inner = tuple(i for i in bound if i != e.index) + (e.index,)
        arg = self._expr(e.arg, inner, cond, in_init)
        over = (("over", e.index),)
        if e.fn != "softmax":
            return Apply(REDUCTIONS[e.fn], (arg,), over, e.pos)
        if e.index not in bound:
            raise SpecError(f"softmax over {e.index} gives one weight per step of "
                            f"{e.index}: define it on a variable over {e.index}, like "
                            f"a[u, {e.index}]", e.pos)
        return softmax_over(arg, e.index, e.pos)

    def _matmul(self, e, rec):
        left, right = rec(e.left), rec(e.right)
        if isinstance(right, ParamRef) and not isinstance(left, ParamRef):
            raise SpecError(f"the right side of '@' is the parameter '{right.name}'", e.pos,
                            hint=f"a matrix goes on the left: {right.name} @ v")
        if not isinstance(left, ParamRef) or self._declared_rank(left.name) == 1:
            # v @ x with v a vector (a value, or a parameter declared [n]): v^T x
            return Apply(Op.DOT, (left, right), (), e.pos)
        if isinstance(right, Apply) and right.op is Op.ONEHOT:
            return Apply(Op.GATHER, (left, right.args[0]), (), e.pos)   # a lookup
        return Apply(Op.MATMUL, (left, right), (), e.pos)

    def _call(self, e: A.FnCall, rec):
        if e.name in self.cells:
            raise SpecError(f"cell '{e.name}' is used inside an expression", e.pos,
                            hint=f"give it its own line: `v = {e.name}(...)`, then use v[t]")
        if e.name not in FUNCTIONS:
            hint = did_you_mean(e.name, set(FUNCTIONS) | set(self.cells))
            if e.name in LOSS_NAMES:
                hint = f"a loss is its own statement: `loss {e.name}(o[t], y[t])`"
            raise SpecError(f"unknown function '{e.name}'", e.pos, hint=hint)
        arity = {"dropout": 2, "bilinear": 3}.get(e.name, 1)
        if len(e.args) != arity:
            raise SpecError(f"{e.name} takes {arity} argument{'s' * (arity > 1)}, "
                            f"given {len(e.args)}", e.pos)
        if e.name == "dropout":
            p = e.args[1]
            if not isinstance(p, A.Number) or not 0 <= p.value < 1:
                raise SpecError("dropout's rate must be a number in [0, 1)", p.pos)
            return Apply(Op.DROPOUT, (rec(e.args[0]),), (("p", p.value),), e.pos)
        args = tuple(rec(a) for a in e.args)
        if e.name == "bilinear" and not isinstance(args[0], ParamRef):
            raise SpecError("bilinear's first argument must be a parameter tensor", e.pos)
        return Apply(FUNCTIONS[e.name], args, (), e.pos)

    def _unknown_hint(self, e: A.Name) -> str:
        """A name without an index (`Uh @ h`, `+ bo`) is most likely a parameter: the
        nearest parameter, else how to declare one; an indexed name, the nearest
        variable."""
        # the names an equation can write: a cell's instances (`e.Wx`) are not among them;
        # inside a cell, its own names are, as written there (`Wx` for a misspelt `Wxx`)
        variables = {v for v in set(self.data) | set(self.defs) if "." not in v}
        params = {p for p in self.params if "." not in p} | self._cell_locals(e.pos)
        if e.index is None:              # a parameter, or a variable of one per example
            unindexed = {v for v in variables if not self._var_indexes(v, e.pos)}
            declare = f"a parameter is declared on a param line: param ..., {e.name}"
            near = did_you_mean(e.name, params | unindexed)
            return f"{near} (or, if it is a new one: {declare})" if near else declare
        return did_you_mean(e.name, variables | params) or \
            "declare it with param, input, target, or define it"

    def _cell_locals(self, pos) -> set:
        """The names a cell of the spec writes in its body (its arguments, params and
        variables), when `pos` is in that body: instances rename them (`e.Wx`), so a
        misspelt `Wxx` there is nearest to the cell's `Wx`. Empty at the top level."""
        cells = [c for c in self._of(A.CellDef) if c.pos.line <= pos.line]
        if not cells:
            return set()
        cell = max(cells, key=lambda c: c.pos.line)
        lines = [getattr(s, "pos", None) or s[0].pos for s in self.stmts]  # a param line:
        if any(cell.pos.line < at.line <= pos.line for at in lines):      # a tuple of them
            return set()                 # a top-level statement after the cell holds pos
        return set(cell.params) | {s.name for s in cell.body
                                   if isinstance(s, (A.ParamDecl, A.Equation))}

    def _name(self, e: A.Name, bound, cond, in_init):
        if e.name in self.params and e.index is None:
            self.used_params.add(e.name)
            return ParamRef(e.name, e.pos)
        var = self._var_indexes(e.name, e.pos)
        if var is _UNKNOWN:
            raise SpecError(f"undefined name '{e.name}'", e.pos, hint=self._unknown_hint(e))
        shift, shift2 = self._shifts(e, var, bound, cond, in_init)
        ref = Ref(e.name, shift, e.pos, shift2)
        if e.name in self.data and self.data[e.name].kind in ("onehot", "class"):
            return Apply(Op.ONEHOT, (ref,), (), e.pos)    # ids used as one-hot vectors
        return ref

    def _var_indexes(self, name, pos):
        if name in self.data:
            return self.data[name].index
        if name in self.defs:
            return self.defs[name][0].index
        if name in self.params:
            raise SpecError(f"parameter '{name}' has no index", pos)
        if name in self.dims:
            raise SpecError(f"'{name}' is a size, not a value", pos)
        return _UNKNOWN

    def _shifts(self, e: A.Name, var_indexes, bound, cond, in_init) -> tuple:
        """The shifts of a reference on each of its variable's indexes."""
        if not var_indexes:
            if e.index:
                raise SpecError(f"'{e.name}' has one value per example and no index",
                                e.pos, hint=f"write {e.name} without [...]")
            return NONE, NONE
        if not e.index:
            i = var_indexes[0]
            if (in_init or not bound or i not in bound) and len(var_indexes) == 1:
                # read where its index does not run (a per-example value): one place
                one = f"{e.name}[root]" if self.indexes.get(i) == "tree" else \
                    f"{e.name}[end] or {e.name}[1]"
                raise SpecError(f"'{e.name}' runs over '{i}': read it at one place, "
                                f"{one}", e.pos)
            raise SpecError(f"'{e.name}' runs over '{', '.join(var_indexes)}': write "
                            f"{e.name}[{', '.join(var_indexes)}]", e.pos)
        if len(e.index) != len(var_indexes):
            raise SpecError(f"'{e.name}' has {len(var_indexes)} index"
                            f"{'es' * (len(var_indexes) > 1)}: write "
                            f"{e.name}[{', '.join(var_indexes)}]", e.pos)
        shifts = tuple(self._shift(e, vi, ix, bound, cond, in_init)
                       for vi, ix in zip(var_indexes, e.index, strict=True))
        if len(shifts) == 2 and shifts != (SAME, SAME):
            raise SpecError(f"a variable over two indexes is read at the current steps "
                            f"only: {e.name}[{', '.join(var_indexes)}]", e.pos)
        return shifts[0], (shifts[1] if len(shifts) > 1 else NONE)

    def _shift(self, e: A.Name, var_index, ix, bound, cond, in_init) -> Shift:
        is_tree = self.indexes.get(var_index) == "tree" or var_index in self.trees
        if ix.kind in ("first", "end"):
            if is_tree:
                raise SpecError("a tree has no first or last step: use root", ix.pos)
            return Shift(ix.kind)
        if ix.kind == "rel" and ix.name == "root" and is_tree and ix.k == 0:
            return Shift(ShiftKind.ROOT)
        one = f"{e.name}[root]" if is_tree else f"{e.name}[end] or {e.name}[1]"
        if in_init or not bound:
            raise SpecError(f"this value is one per example, so it cannot read '{e.name}' "
                            f"at step '{ix.name}'", ix.pos, hint=f"use {one}")
        if var_index not in bound:
            raise SpecError(f"'{e.name}' runs over '{var_index}' and this equation over "
                            f"'{', '.join(bound)}'", ix.pos,
                            hint=(f"use {one}" if ix.name in self.indexes else   # s[u]
                                  f"use {e.name}[{var_index}] or {one}") if is_tree else
                            f"use {one} to read one step, or a reduction: sum over "
                            f"{var_index} (...)")
        if ix.name != var_index:
            where = "this equation runs" if len(bound) == 1 else "it runs"
            raise SpecError(f"wrong index '{ix.name}' on '{e.name}': {where} over "
                            f"'{var_index}'", ix.pos,
                            hint=f"write {e.name}[{var_index}], {e.name}[{var_index}-1], "
                                 f"{e.name}[end] ...")
        if ix.kind == "child":
            if not is_tree:
                raise SpecError(f"'{ix.name}' is a sequence index; children are for "
                                "trees", ix.pos, hint=f"declare `tree {ix.name}`")
            if ix.child not in ("left", "right"):
                raise SpecError(f"a node has children 'left' and 'right', not "
                                f"'{ix.child}'", ix.pos,
                                hint=f"write {e.name}[{ix.name}.left] or "
                                     f"{e.name}[{ix.name}.right]")
            if cond == "leaf":
                raise SpecError("a leaf has no children", ix.pos,
                                hint="read the children in the 'otherwise' equation; the "
                                     "'if leaf' one reads the leaf's own values, such as "
                                     "its word")
            return Shift(ix.child)
        if is_tree and ix.k:
            raise SpecError("a tree index has no shifts: use n.left, n.right", ix.pos)
        if abs(ix.k) > MAX_DELAY:
            raise SpecError(f"{e.name} is read {abs(ix.k)} steps away, longer than any "
                            f"sequence can be (at most {MAX_DELAY} steps): shorten that "
                            f"{'delay' if ix.k < 0 else 'advance'}", ix.pos,
                            hint=f"e.g. {e.name}[{var_index}{'-' if ix.k < 0 else '+'}1]")
        return Shift(ShiftKind.REL, ix.k)

    # ------------------------------------------------------------------ the rest
    def _loss(self, l: A.LossDecl) -> Loss:
        if l.fn not in LOSS_NAMES:
            raise SpecError(f"unknown loss '{l.fn}'", l.pos,
                            hint=did_you_mean(l.fn, LOSS_NAMES) or "losses: xent, bce, mse")
        refs = []
        for k, a in enumerate(l.args):
            if not isinstance(a, A.Name):
                raise SpecError("a loss compares two variables: define the expression "
                                "as a variable first", a.pos)
            r = self._name(a, tuple(i.name for i in a.index or () if i.name), None, False)
            r = r.args[0] if isinstance(r, Apply) else r
            if not isinstance(r, Ref):           # a parameter: no value to compare
                raise SpecError(f"'{a.name}' is a parameter; a loss compares two variables,"
                                f" the model's output and a target", a.pos,
                                hint=f"e.g. loss {l.fn}(o[t], y[t]) with o[t] = "
                                     f"{a.name} @ h[t] + ... defined by an equation"
                                if k == 0 else "the second argument is a target, declared "
                                "as `target y[t] : class(K)`")
            refs.append(r)
        out, tgt = refs
        if out.var in self.data:
            raise SpecError(f"the first argument of {l.fn} is the model's output; "
                            f"'{out.var}' is {_a(self.data[out.var].role)}", l.args[0].pos)
        if tgt.var not in self.data or self.data[tgt.var].role != "target":
            raise SpecError(f"the second argument of {l.fn} must be a target",
                            l.args[1].pos)
        kind = self.data[tgt.var].kind
        want = {LossFn.XENT: ("class",), LossFn.BCE: ("binary", "vec"),
                LossFn.MSE: ("vec", "binary")}
        if kind not in want[l.fn]:
            raise SpecError(f"{l.fn} needs a {' or '.join(want[l.fn])} target; "
                            f"'{tgt.var}' is {kind}", l.args[1].pos)
        self._one_place(l, out, tgt)
        self._squashed_twice(l, out.var)
        return Loss(l.fn, out, tgt, l.weight, l.pos)

    def _one_place(self, l: A.LossDecl, out: Ref, tgt: Ref) -> None:
        """Where a loss compares its output and target. Summed over the output's steps
        (nodes), both are read at the current one; read at one place (`o[end]`, `o[1]`,
        `o[root]`, a per-example `o`) it is one term an example, its target read at one
        place too or per example. Over a tree, every node may also be compared with one
        label a tree (`xent(o[n], y)`: the sentence's). Refused: a shifted read (the
        executors and eval would disagree on the step), a child (every leaf would read
        past its tree), and a per-step output against one target an example."""
        for ref, arg in ((out, l.args[0]), (tgt, l.args[1])):
            k = ref.shift
            if k.kind in CHILD or (k.kind == ShiftKind.REL and k.k):
                i = self._index_of(ref.var)
                # a shift moves to the output (a variable; a target cannot be defined)
                shift = k.k if ref is out else -k.k
                hint = f"read {ref.var}[{i}]" if k.kind != ShiftKind.REL else \
                    f"shift the output instead: p[{i}] = {out.var}[{i}{shift:+d}], then " \
                    f"{l.fn}(p[{i}], {tgt.var}[{i}])"
                # a language model's habit
                if ref is tgt and k.kind == ShiftKind.REL and k.k > 0:
                    hint = f"write {l.fn}({out.var}[{i}], {tgt.var}[{i}]): with chars or " \
                        f"words data the target {tgt.var}[{i}] is already the next " \
                        f"symbol, x[{i}+1]; for other data, {hint}"
                raise SpecError(f"{l.fn} reads '{ref.var}' at {k.show(i)}: a loss "
                                f"compares its output and target where it reads them, "
                                f"at every step (node) or at one place", arg.pos, hint=hint)
        one = (*ENDS, ShiftKind.ROOT, ShiftKind.NONE)
        if out.shift.kind in one and tgt.shift.kind == ShiftKind.REL:
            index = self.data[tgt.var].index[0]
            every = "node" if self.indexes.get(index) == "tree" else f"step of {index}"
            where = "at one place an example" if out.shift.kind != ShiftKind.NONE else "per example"
            fix = f"{tgt.var}[{out.shift.show(index)}]" if out.shift.kind != ShiftKind.NONE else \
                f"a per-example target ({tgt.var} without an index)"
            raise SpecError(f"{l.fn} reads '{out.var}' {where} and '{tgt.var}' at every "
                            f"{every}", l.args[1].pos,
                            hint=f"read the target where the output is: {fix}")
        index = self._index_of(out.var)
        if out.shift.kind == ShiftKind.REL and tgt.shift.kind in one and \
                self.indexes.get(index) != "tree":
            raise SpecError(f"{l.fn} reads '{out.var}' at every step of {index} and "
                            f"'{tgt.var}' once an example", l.args[0].pos,
                            hint=f"read the output where the target is: {out.var}[end] "
                                 f"(or a per-example output, {out.var} = W @ h[end] + b)")

    def _index_of(self, name: str):
        """The index a variable runs over (its first), or None."""
        ix = self._var_indexes(name, None)
        return ix[0] if ix and ix is not _UNKNOWN else None

    def _squashed_twice(self, l: A.LossDecl, out: str) -> None:
        """xent applies a softmax to its logits and bce a sigmoid: an output that is
        already one is squashed twice (Keras' `from_logits` mistake). It trains, badly:
        a warning, at the output's equation."""
        squash = {LossFn.XENT: "softmax", LossFn.BCE: "sigmoid"}.get(l.fn)
        for eq in self.defs.get(out, ()):
            rhs = eq.rhs
            if isinstance(rhs, A.FnCall) and rhs.name == squash:
                self.warnings.append((
                    f"{out} is a {squash} and {l.fn} applies a {squash} to it again: "
                    f"{l.fn} takes logits; define {out} without the {squash}", eq.pos))

    def _param(self, p: A.ParamDecl) -> ParamDef:
        if p.init is not None:
            name = p.init[0]
            if name not in INITS:
                known = INIT_ALIASES.get(name.lower())
                raise SpecError(f"unknown initialiser '{name}'", self._word_pos(p.pos, name),
                                hint=known.format(name=name) if known
                                else did_you_mean(name, INITS) or ", ".join(INITS))
            problem = init_problem(name, p.init[1:])
            if problem:
                scale = len(p.init) - 1 == INITS[name]          # the arity is right
                raise SpecError(problem, self._word_pos(p.pos, name),
                                hint=f"e.g. {name}(0.01) (the train block's param_init "
                                     f"takes the same)" if scale else "")
        return ParamDef(p.name, p.shape, p.init, p.pos)

    def _word_pos(self, pos, word):
        """Where `word` first stands after `pos` on its line (the AST keeps no position
        for an initialiser's name); `pos` itself when it cannot be found."""
        lines = (self.spec.source or "").split("\n")
        if not 0 < pos.line <= len(lines):
            return pos
        m = re.compile(rf"\b{re.escape(word)}\b").search(lines[pos.line - 1],
                                                          max(pos.column - 1, 0))
        return Pos(pos.line, m.start() + 1) if m else pos

    def _train(self) -> tuple:
        blocks = self._of(A.TrainBlock)
        if len(blocks) > 1:
            raise SpecError("there is more than one train block", blocks[1].pos)
        out = {}
        for e in (blocks[0].entries if blocks else ()):
            if e.key not in TRAIN_KEYS:
                raise SpecError(f"unknown train setting '{e.key}'", e.pos,
                                hint=optimizer_arg_hint(e.key) or
                                did_you_mean(e.key, TRAIN_KEYS) or
                                "settings: " + ", ".join(TRAIN_KEYS))
            if e.key in out:
                raise SpecError(f"train setting '{e.key}' is given twice", e.pos,
                                hint="keep one of them")
            out[e.key] = e.value
        return tuple(out.items())


_UNKNOWN = object()


def _a(word: str) -> str:
    """'an input', 'a target'."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0] if path else "model"

