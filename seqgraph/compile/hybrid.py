"""A model over a tree and a sequence, each part run by its own executor.

When one part reads the other only through per-example values, the unfolded DAG has a
cut. A tree encoder: the decoder reads `c = h[root]` (or `h[root]` itself), so the tree
part (every variable over the tree, and the per-example ones computed without the
sequence) comes entirely before the sequence part. Leaves reading a sequence's summary
(`e[end]`): the sequence part comes first. So the model runs as two: the trees
level-batched (trees.py), the sequence compiled (CompiledExecutor), each value at the
cut computed by the first part and given to the second as an input of its own [B, n].

Backward is the chain rule across the cut. With L = L_2(c, theta) + L_1(theta), c the
first part's values at the cut, the second part's backward pass leaves dL_2/dc in the
gradient of its input c (where its reads of c put it); that gradient seeds the first
part's buffer for c before the first part's own backward pass, which carries it on to
its parameters. The parameter gradients of the two parts add.

Training with dropout runs in two parts where the part that draws makes the masks the
interpreter would (`_no_masks`). What this does not cut (trees and sequence reading each
other), a part that either executor would run interpreted, dropout draws the
interpreter interleaves between the parts, scheduled sampling and a run the compiled
executor gives up on go to the interpreter, whose results these equal (to rounding).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx
import numpy as np

from .. import given
from ..graph.folded import ENDS, NONE, Apply, Case, Ref, ShiftKind, Var, refs
from ..model import Model
from ..resources import LengthCache
from .fallback import FallsBack, has_dropout
from .plan import Unsupported

__all__ = ["HybridExecutor", "split"]


# ------------------------------------------------------------------------------ the cut
@dataclass(frozen=True)
class Split:
    """The two graphs of a model cut between its trees and its sequence, and what
    crosses the cut."""
    first: str                # "tree" (a tree encoder) or "seq" (leaves read a sequence)
    tree: object              # FoldedGraph: the tree part (one tree index)
    seq: object               # FoldedGraph: the sequence part
    cut: tuple                # the values at the cut (per example): the second part's
                              # inputs, computed by the first
    made: tuple               # (name, var, shift): a cut value made for a read var[root]
                              # (or var[end], var[1]) across the cut
    rebuilt: dict             # a second-part expression rewritten -> the whole's
    tree_losses: tuple        # the whole model's loss numbers, in each part's order
    seq_losses: tuple


def split(graph) -> Split:
    """Cut a model over a tree and a sequence where one part reads the other only
    through per-example values, or raise Unsupported."""
    first, first_i, second_i, second = _order(graph)
    later = [v for v in graph.hidden() if v.name in second]
    earlier = [v for v in graph.hidden() if v.name not in second]
    # a loss that reads the second part (its output, or a target over that index) is run
    # there
    seconds = tuple(i for i, loss in enumerate(graph.losses)
                    if {loss.output.var, loss.target.var} & second)
    firsts = tuple(i for i in range(len(graph.losses)) if i not in seconds)
    cross, made, rebuilt = _crossing(graph.var_map, first, first_i)
    later = [replace(v, cases=tuple(replace(c, expr=cross(c.expr)) for c in v.cases),
                     init=None if v.init is None else cross(v.init)) for v in later]
    losses = {i: replace(graph.losses[i], output=cross(graph.losses[i].output),
                         target=cross(graph.losses[i].target)) for i in seconds}
    read = {n for v in later for n in v.reads} | \
        {r.var for loss in losses.values() for r in (loss.output, loss.target)}
    cut = tuple(n for n in [*(v.name for v in earlier), *made.values()] if n in read)
    extra = [Var(name, "hidden", None, cases=(Case(Ref(var, shift)),))
             for (var, shift), name in made.items()]
    one = _part(graph, [x for x in graph.indexes if x[0] != second_i], earlier + extra,
                [graph.losses[i] for i in firsts], ())
    two = _part(graph, [x for x in graph.indexes if x[0] == second_i], later,
                [losses[i] for i in seconds],
                [Var(n, role="input", index=None, kind="vec") for n in cut])
    tree, seq = (one, two) if first == "tree" else (two, one)
    return Split(first, tree, seq, cut,
                 tuple((n, var, shift) for (var, shift), n in made.items()), rebuilt,
                 firsts if first == "tree" else seconds,
                 seconds if first == "tree" else firsts)


def _order(graph) -> tuple:
    """(first, its index, the second's index, the second part): "tree" when the
    sequence reads the trees (or neither reads the other), "seq" when the trees read
    the sequence; the second part is every variable reading the second's index, itself
    included (transitively)."""
    if len(graph.indexes) != 2:
        raise Unsupported("the model has more than one sequence index beside its tree")
    tree_i, seq_i = graph.tree_and_sequence
    g = graph.nx()
    after = {i: set() for i in (tree_i, seq_i)}   # what reads each index, transitively
    for v in graph.vars:
        if v.index in after:
            after[v.index] |= {v.name} | nx.descendants(g, v.name)

    def reads(i, j):
        """The first variable over index i that reads index j (transitively)."""
        return next((v.name for v in graph.vars if v.name in after[j] and v.index == i),
                    None)
    tree_reads, seq_reads = reads(tree_i, seq_i), reads(seq_i, tree_i)
    if tree_reads and seq_reads:
        raise Unsupported(f"the trees and the sequence read each other ('{tree_reads}' "
                          f"over the tree reads the sequence, '{seq_reads}' over the "
                          "sequence the trees)")
    if tree_reads:
        return "seq", seq_i, tree_i, after[tree_i]
    return "tree", tree_i, seq_i, after[seq_i]


def _crossing(index: dict, first: str, first_i: str):
    """(cross, made, rebuilt): `cross(expr)` is an expression of the second part with
    each read over the first part's index `first_i` made a read of a per-example value
    made for it (`h[root]` of the trees, `e[end]` or `e[1]` of the sequence), recorded
    in `made` {(var, shift): name}; per-example values are read as they are; `rebuilt`
    maps each rewritten expression to the whole's (what the checker knows of it: a
    dropout's width). Data over `first_i` read by the second part is Unsupported."""
    made, rebuilt = {}, {}
    places = {"tree": (ShiftKind.ROOT,), "seq": ENDS}[first]

    def cross(e):
        if isinstance(e, Apply):
            new = replace(e, args=tuple(cross(a) for a in e.args))
            if new != e:
                rebuilt[new] = e
            return new
        if not isinstance(e, Ref) or index[e.var].index != first_i:
            return e
        v = index[e.var]
        at = f"{e.var}[{e.shift.show(v.index)}]"
        if v.role != "hidden":
            raise Unsupported(f"the {'sequence' if first == 'tree' else 'trees'} read "
                              f"{at}, data over the {'tree' if first == 'tree' else 'sequence'}")
        if e.shift.kind not in places:
            raise Unsupported(f"{at} is read across the cut (only "
                              f"{' and '.join(places)} are)")
        made.setdefault((e.var, e.shift), at)
        return Ref(made[(e.var, e.shift)], NONE, e.pos)
    return cross, made, rebuilt


def _part(graph, indexes, hidden, losses, inputs):
    """The graph of one part: `hidden` with the inputs and targets they and their
    `losses` read, and those over the part's index that nothing reads (they give its
    batch its size and length), in source order, after `inputs` (the cut)."""
    losses = tuple(losses)
    read = {n for v in hidden for n in v.reads}
    read |= {r.var for loss in losses for r in (loss.output, loss.target)}
    own_index, anywhere = {i for i, _ in indexes}, _read_anywhere(graph)
    data = [v for v in graph.vars if v.role != "hidden"
            and (v.name in read or v.index in own_index and v.name not in anywhere)]
    order = {v.name: i for i, v in enumerate(graph.vars)}
    own = sorted(data + hidden, key=lambda v: order.get(v.name, len(order)))
    return replace(graph, indexes=tuple(indexes), vars=tuple(inputs) + tuple(own),
                   losses=losses)


def _read_anywhere(graph) -> set:
    """The data variables any equation or loss of the whole model reads."""
    return {n for v in graph.hidden() for n in v.reads} | \
        {r.var for loss in graph.losses for r in (loss.output, loss.target)}


def _waits(graph, v, cut) -> bool:
    """Does every instance of `v` (every step or node) depend on every value at the cut
    (inputs of `graph`)? Each case of v must read, at its own step or node (or at a
    child, at the root, at an end), each cut value or a variable that waits; a read
    through a delay does not count (the first step reads the value before it)."""
    def covers(w, x, seen) -> bool:
        if w.name == x:
            return True
        if w.name in seen:                   # itself at a child: by induction on height
            return True
        if w.role != "hidden":
            return False
        return all(any(_same_step(r) and covers(graph.var(r.var), x, seen | {w.name})
                       for r in refs(c.expr)) for c in w.cases)

    return all(covers(v, x, frozenset()) for x in cut)


def _same_step(r) -> bool:
    """A read that depends on an instance at every instance: no delay or advance."""
    return r.shift.kind != ShiftKind.REL or r.shift.k == 0


class Part(Model):
    """A model's view of one part of its graph: the model's parameters (the same
    arrays, so an update is seen), sizes, dtype and start tokens, another graph (its
    rewritten expressions' dropout widths as the whole's: `rebuilt`)."""

    def __init__(self, whole, graph, sizes: dict, rebuilt: dict):
        self.whole, self.graph = whole, graph
        self.sizes = {**whole.sizes, **sizes}
        widths = whole.checked.dropouts
        self.checked = replace(whole.checked, dropouts={
            **widths, **{new: widths[old] for new, old in rebuilt.items() if old in widths}})
        self.carried = graph.carried
        self._schedules = LengthCache()   # Model.schedule's: this graph's, not the whole's

    def __getattr__(self, name):          # params, dtype, checked, ...: the whole's
        if name == "whole":
            raise AttributeError(name)
        return getattr(self.whole, name)


# ------------------------------------------------------------------------- the executor


class HybridExecutor(FallsBack):
    """The tree part level-batched, the sequence part compiled, in the order of the
    cut; the interpreter's signature and results (to rounding)."""

    def __init__(self, model):
        from . import CompiledExecutor
        from .trees import TreeExecutor
        self.m, self.g = model, model.graph
        self.fallback, self.parts = None, None
        self.has_dropout = has_dropout(self.g)
        try:
            self.parts = p = split(self.g)
            made = {n: model.sizes[v] for n, v, _ in p.made}
            self.tree = TreeExecutor(Part(model, p.tree, made, p.rebuilt),
                                     cut_inputs=p.cut if p.first == "seq" else ())
            self.seq = CompiledExecutor(Part(model, p.seq, made, p.rebuilt))
            why = self.tree.fallback or self.seq.fallback
            if why:
                raise Unsupported(why)
        except Unsupported as e:
            self.fallback = str(e)
        self.no_masks = None if self.fallback or not self.has_dropout else self._no_masks()

    def _no_masks(self) -> str | None:
        """Why training with dropout cannot draw the interpreter's masks part by part
        (None: it can). The interpreter draws node by node in its schedule, a greedy
        topological order (the smallest step first). The first part's nodes never wait
        for the second's, so its draws keep their order whatever comes between them;
        so do the second part's when every one of its nodes waits for every value at
        the cut (`_waits`), since none can come before the cut is complete. Then one
        part may draw; when both do, the interpreter interleaves their draws."""
        why = self.tree.no_masks or self.seq.no_masks
        if why:
            return why
        p = self.parts
        one, two = (p.tree, p.seq) if p.first == "tree" else (p.seq, p.tree)
        if has_dropout(one) and has_dropout(two):
            return "both parts draw dropout masks, and the interpreter interleaves " \
                "their draws"
        if has_dropout(two):
            early = next((v.name for v in two.hidden() if not _waits(two, v, p.cut)), None)
            if early is not None:
                return f"'{early}' does not wait for every value at the cut, so the " \
                    "interpreter draws some masks before the cut is complete"
        return None

    @property
    def order(self) -> tuple:
        return ("tree", "seq") if self.parts.first == "tree" else ("seq", "tree")

    def explain(self) -> list:
        if self.fallback:
            return [f"trees and sequence interpreted: {self.fallback}"]
        names = {"tree": "the trees", "seq": "the sequence"}
        a, b = self.order
        parts = {"tree": self.tree, "seq": self.seq}
        cut = self.parts.cut
        head = f"{names[a]} first, then {names[b]}: {', '.join(cut)} handed from one to " \
            "the other (per example), its gradient back" if cut else \
            f"{names[a]} and {names[b]} apart: nothing read from one by the other"
        drop = [f"training with dropout: interpreted ({self.no_masks})"] \
            if self.no_masks else ["training with dropout: each part draws the "
                                   "interpreter's masks, the first part's first"] \
            if self.has_dropout else []
        return ([head]
                + [f"  {line}" for kind in self.order for line in parts[kind].explain()
                   if not line.startswith("training with dropout")] + drop)

    def run(self, inputs, targets=None, carry=None, train=False, grads=False, rng=None,
            lengths=None, forest=None, **kw):
        kw = {k: v for k, v in kw.items() if not (k == "teacher" and v >= 1.0)}
        if self.fallback or kw or forest is None or \
                (train and self.has_dropout and self.no_masks):
            return self.interp.run(inputs, targets, carry=carry, train=train, grads=grads,
                                   rng=rng, lengths=lengths, forest=forest, **kw)
        rng = rng or np.random.default_rng(0)
        before = rng.bit_generator.state       # what the interpreter starts from, if needed
        data = (inputs or {}, targets or {}, carry, lengths, train, rng, forest)
        given.batch_shape(self.m, {**data[0], **data[1]}, lengths, forest)    # the whole's errors
        try:
            runs, results, cut = [], [], {}
            for kind in self.order:           # the first part, then the second
                run = self._begin(kind, data, cut)
                results.append(run.forward(grads))
                runs.append(run)
                cut = {n: run.value(n) for n in self.parts.cut}
            return self._joined(runs, results, grads)
        except Unsupported:                   # the compiled executor gave up
            rng.bit_generator.state = before  # the interpreter draws the same masks
            return self.interp.run(inputs, targets, carry=carry, train=train, grads=grads,
                                   rng=rng, lengths=lengths, forest=forest)

    def _begin(self, kind, data, cut):
        """A part's run over the batch; `cut`: the cut's values (the second part)."""
        from . import _Run as SeqRun
        from .trees import _Run as TreeRun
        inputs, targets, carry, lengths, train, rng, forest = data
        g = self.parts.tree if kind == "tree" else self.parts.seq
        ins = {**{k: a for k, a in inputs.items() if k in g.var_map}, **cut}
        tgs = {k: a for k, a in targets.items() if k in g.var_map}
        if kind == "tree":
            return TreeRun(self.tree, ins, tgs, train, rng, forest)
        scalar, ex_len = self.seq._lengths(ins, tgs, lengths)
        run = SeqRun(self.seq, ins, tgs, carry, scalar, ex_len)
        run.masks = self.seq.masks(train, rng, run.lengths, run.B)
        return run

    def _joined(self, runs, results, grads):
        """One result of the two parts': losses summed (their terms under the whole
        model's loss numbers), the values of the whole's variables, the sequence's
        carry, and with grads the second part's backward pass, then the first's seeded
        with the gradient of the cut's values (the chain rule across the cut)."""
        p = self.parts
        by_kind = dict(zip(self.order, results, strict=True))
        terms = {p.tree_losses[i]: t for i, t in by_kind["tree"].terms.items()}
        terms.update({p.seq_losses[i]: t for i, t in by_kind["seq"].terms.items()})
        terms = dict(sorted(terms.items()))                 # the whole's loss order
        got = {k: a for r in results for k, a in r.values.items()}
        values = {v.name: got[v.name] for v in self.g.hidden()}
        res = type(results[0])(sum(r.loss for r in results), None, values,
                               by_kind["seq"].carry, terms)
        if grads:
            first, second = runs
            g2 = second.backward()
            seeds = {n: g for n in p.cut if (g := second.input_grad(n)) is not None}
            g1 = first.backward(seeds)
            res.grads = {k: g1[k] + g2[k] for k in self.m.params}
        return res

