"""A tree encoder and its sequence decoder, each part run by its own executor.

In a model over a tree and a sequence whose sequence part reads the trees only through
per-example values (`c = h[root]`, or `h[root]` itself), the unfolded DAG has a cut: the
tree part (every variable over the tree, and the per-example ones computed from the
trees alone) comes entirely before the sequence part. So the model runs as two: the
tree part level-batched (trees.py), the sequence part compiled (CompiledExecutor), each
value at the cut handed to the sequence part as an input of its own [B, n].

Backward is the chain rule across the cut. With L = L_seq(c, theta) + L_tree(theta), the
sequence part's backward pass leaves the gradient of its input c, dL_seq/dc, where its
reads of c put it (static.read_back); that gradient seeds the tree part's buffer for c
before the tree part's own backward pass, which carries it down the trees to their
parameters. The parameter gradients of the two parts add.

A model this does not cut (leaves reading a sequence summary `e[end]`: the sequence comes
first), a part that either executor would run interpreted, a run that draws random
numbers (dropout while training, scheduled sampling) and a run the compiled executor
gives up on go to the interpreter, whose results these equal (to rounding).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx

from ..graph.folded import NONE, Apply, Case, Ref, Shift, Var
from ..model import Model, _carried
from .fallback import FallsBack, has_dropout
from .plan import Unsupported

__all__ = ["HybridExecutor", "split"]


# ------------------------------------------------------------------------------ the cut
@dataclass(frozen=True)
class Split:
    """The two graphs of a model cut after its trees, and what crosses the cut."""
    tree: object              # FoldedGraph: the tree part (one tree index)
    seq: object               # FoldedGraph: the sequence part, the cut's values as inputs
    cut: tuple                # names of the values at the cut (per example)
    made: tuple               # (name, var): a cut value made for a read of var[root]
    tree_losses: tuple        # the whole model's loss numbers, in each part's order
    seq_losses: tuple


def split(graph) -> Split:
    """Cut a model over a tree and a sequence after its trees, or raise Unsupported."""
    tree_i = graph.tree_and_sequence[0]
    if len(graph.indexes) != 2:
        raise Unsupported("the model has more than one sequence index beside its tree")
    vm, g = graph.var_map, graph.nx()
    # the sequence side: every variable over a sequence index and all that reads one
    seq_side = set()
    for v in graph.vars:
        if v.index not in (None, tree_i):
            seq_side |= {v.name} | nx.descendants(g, v.name)
    bad = next((v.name for v in graph.vars if v.name in seq_side and v.index == tree_i),
               None)
    if bad is not None:
        raise Unsupported(f"'{bad}' (over the tree) reads the sequence: the sequence "
                          "part would have to run first")
    tree_hidden = [v for v in graph.hidden() if v.name not in seq_side]
    seq_hidden = [v for v in graph.hidden() if v.name in seq_side]
    on_tree = {v.name for v in tree_hidden}

    made = {}                        # var -> the per-example value made for var[root]

    def cross(e):
        """An expression of the sequence part with its reads of the tree part made
        reads of the cut's inputs."""
        if isinstance(e, Ref) and e.var in on_tree:
            if vm[e.var].index is None:
                return e
            name = made.setdefault(e.var, f"{e.var}[root]")     # e.shift is root
            return Ref(name, NONE, e.pos)
        if isinstance(e, Apply):
            return replace(e, args=tuple(cross(a) for a in e.args))
        return e

    seq_hidden = [replace(v, cases=tuple(replace(c, expr=cross(c.expr)) for c in v.cases),
                          init=None if v.init is None else cross(v.init))
                  for v in seq_hidden]
    read = {r for v in seq_hidden for c in v.cases for r in _refs(c.expr)} | \
        {r for v in seq_hidden if v.init is not None for r in _refs(v.init)}
    cut = tuple(n for n in [*(v.name for v in tree_hidden), *made.values()] if n in read)
    extra = [Var(name, "hidden", None, cases=(Case(Ref(var, Shift("root"))),))
             for var, name in made.items()]
    tree_losses = tuple(i for i, loss in enumerate(graph.losses)
                        if loss.output.var in on_tree)
    seq_losses = tuple(i for i, loss in enumerate(graph.losses) if i not in tree_losses)
    tree_vars = _with_data(graph, tree_hidden + extra, [graph.losses[i] for i in tree_losses])
    inputs = [Var(n, "input", None, "vec", None) for n in cut]
    seq_vars = inputs + _with_data(graph, seq_hidden, [graph.losses[i] for i in seq_losses])
    return Split(
        tree=replace(graph, indexes=tuple(x for x in graph.indexes if x[0] == tree_i),
                     vars=tuple(tree_vars),
                     losses=tuple(graph.losses[i] for i in tree_losses)),
        seq=replace(graph, indexes=tuple(x for x in graph.indexes if x[0] != tree_i),
                    vars=tuple(seq_vars),
                    losses=tuple(graph.losses[i] for i in seq_losses)),
        cut=cut, made=tuple((n, v) for v, n in made.items()),
        tree_losses=tree_losses, seq_losses=seq_losses)


def _refs(expr) -> set:
    from ..graph.folded import refs
    return {r.var for r in refs(expr)}


def _with_data(graph, hidden, losses) -> list:
    """`hidden` with the inputs and targets they and `losses` read, in source order."""
    read = {n for v in hidden for c in v.cases for n in _refs(c.expr)}
    read |= {n for v in hidden if v.init is not None for n in _refs(v.init)}
    read |= {r.var for loss in losses for r in (loss.output, loss.target)}
    data = [v for v in graph.vars if v.role != "hidden" and v.name in read]
    order = {v.name: i for i, v in enumerate(graph.vars)}
    return sorted(data + hidden, key=lambda v: order.get(v.name, len(order)))


class Part(Model):
    """A model's view of one part of its graph: the model's parameters (the same
    arrays, so an update is seen), sizes, dtype and start tokens, another graph."""

    def __init__(self, whole, graph, sizes: dict):
        self.whole, self.graph = whole, graph
        self.sizes = {**whole.sizes, **sizes}
        self.carried = _carried(graph)
        self._schedules = {}

    def __getattr__(self, name):          # params, dtype, checked, ...: the whole's
        if name == "whole":
            raise AttributeError(name)
        return getattr(self.whole, name)


# ------------------------------------------------------------------------- the executor
class HybridExecutor(FallsBack):
    """The tree part level-batched, the sequence part compiled; the interpreter's
    signature and results (to rounding)."""

    def __init__(self, model):
        from . import CompiledExecutor
        from .trees import TreeExecutor
        self.m, self.g = model, model.graph
        self.fallback, self.parts = None, None
        self.has_dropout = has_dropout(self.g)
        try:
            self.parts = split(self.g)
            made = {n: model.sizes[v] for n, v in self.parts.made}
            self.tree = TreeExecutor(Part(model, self.parts.tree, made))
            self.seq = CompiledExecutor(Part(model, self.parts.seq, made))
            why = self.tree.fallback or self.seq.fallback
            if why:
                raise Unsupported(why)
        except Unsupported as e:
            self.fallback = str(e)

    def explain(self) -> list:
        if self.fallback:
            return [f"trees and sequence interpreted: {self.fallback}"]
        cut = ", ".join(self.parts.cut)
        return ([f"the trees first, then the sequence: {cut} handed from one to the other "
                 "(per example), its gradient back"]
                + [f"  {line}" for line in self.tree.explain()]
                + [f"  {line}" for line in self.seq.explain()]
                + (["training with dropout: interpreted (the two parts would draw the "
                    "masks in another order)"] if self.has_dropout else []))

    def run(self, inputs, targets=None, carry=None, train=False, grads=False, rng=None,
            lengths=None, forest=None, **kw):
        kw = {k: v for k, v in kw.items() if not (k == "teacher" and v >= 1.0)}
        if self.fallback or kw or forest is None or (train and self.has_dropout):
            return self.interp.run(inputs, targets, carry=carry, train=train, grads=grads,
                                   rng=rng, lengths=lengths, forest=forest, **kw)
        from . import _Run as SeqRun
        from .trees import _Run as TreeRun
        inputs, targets = inputs or {}, targets or {}
        self.m.batch_shape({**inputs, **targets}, lengths, forest)    # the whole's errors
        mine = lambda data, g: {k: a for k, a in data.items() if k in g.var_map}
        tree = TreeRun(self.tree, mine(inputs, self.parts.tree), mine(targets, self.parts.tree),
                       train, rng, forest)
        tres = tree.forward(grads)
        given = {**mine(inputs, self.parts.seq), **{n: tree.vals[n] for n in self.parts.cut}}
        try:
            scalar, ex_len = self.seq._lengths(given, targets, lengths)
            seq = SeqRun(self.seq, given, mine(targets, self.parts.seq), carry, scalar, ex_len)
            sres = seq.go(grads)
        except Unsupported:
            return self.interp.run(inputs, targets, carry=carry, train=train, grads=grads,
                                   rng=rng, lengths=lengths, forest=forest)
        return self._joined(tree, tres, seq, sres, grads)

    def _joined(self, tree, tres, seq, sres, grads):
        """One result of the two parts': losses summed (their terms under the whole
        model's loss numbers), the values of the whole's variables, the sequence's
        carry, and with grads the tree part's backward pass seeded across the cut."""
        p = self.parts
        terms = {p.tree_losses[i]: t for i, t in tres.terms.items()}
        terms.update({p.seq_losses[i]: t for i, t in sres.terms.items()})
        hidden = {v.name for v in self.g.hidden()}
        values = {k: a for k, a in {**tres.values, **sres.values}.items() if k in hidden}
        res = type(tres)(tres.loss + sres.loss, None, values, sres.carry, terms)
        if grads:
            seeds = {n: seq.env.gvals[n] for n in p.cut if n in seq.env.gvals}
            tgrads = tree.backward(seeds)
            res.grads = {k: tgrads[k] + sres.grads[k] for k in self.m.params}
        return res
