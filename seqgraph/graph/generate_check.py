"""Can a model be generated from, one step at a time? A static check on the folded graph.

Generation (`seqgraph sample`) writes the target y over its index u step by step: the
logits o[u] that the target's xent loss reads must be computable from what exists when
step u is generated: the given sources, and the generated index up to u, with y itself
only through a delay (y[u-1], output feedback). The check walks every equation that o
depends on (its ancestors in the folded graph, init expressions included) and refuses:
- an advance over the generated index (`g[u+1]`: a backward recurrence, which reads steps
  not generated yet);
- `s[end]` of the generated index (the last step is known only once generation ends);
- `s[1]` of the generated index (the first step, which a window of one step cannot
  keep; rare, and refused rather than computed wrongly);
- the target read without a delay (`y[u]`, or `y[u+1]`: the answer itself);
- a reduction over the generated index (`sum over u (...)`, `softmax over u (...)`,
  `max`, `mean`, `logsumexp`): it reads every step of u, the ones not generated yet
  included. (Its references, `s[u]` inside the reduction, look like same-step reads, so
  the reductions are found in the expressions, not on the graph's edges.)

The references over other indexes are free: a bidirectional encoder over the source
index t (`g[t+1]`, `h[1]`) reads a sequence given whole.

Whether `seqgraph sample` generates at all is another question (`sample_mode`): a model
whose target is not read back (a classifier, a tagger, a tree or series model trained on
example data) is labelled in one forward pass over `--input`, and never meets this check.
"""
from __future__ import annotations

import networkx as nx

from .folded import ENDS, Apply, FoldedGraph, LossFn, Shift, ShiftKind, fed_back, softmax_parts


def generated_targets(graph: FoldedGraph) -> list:
    """Class targets over a sequence index that an xent loss pairs with logits: what
    generation can write, as (target, output) variable names."""
    seq = {i for i, k in graph.indexes if k == "seq"}
    out = []
    for loss in graph.losses:
        v = graph.var(loss.target.var)
        if loss.fn == LossFn.XENT and v.kind == "class" and v.index in seq \
                and (v.name, loss.output.var) not in out:
            out.append((v.name, loss.output.var))
    return out


def _where(graph: FoldedGraph, var: str, pos) -> str:
    line = pos.line if pos and pos.line else graph.var(var).pos.line
    return f"line {line}" if line else "its equation"


def _advance(graph: FoldedGraph, g, src: str, dst: str, u: str) -> str:
    """Why `dst` reading `src` at a later step of u is in the way, in the model's terms:
    only a reference on a cycle (dst feeds src back) is a backward recurrence."""
    if src == dst or nx.has_path(g, dst, src):
        return (f"an advance over the generated index {u}: a backward recurrence "
                f"reads steps that are not generated yet")
    if graph.var(src).role == "input":
        return (f"the input of a later step of {u}, which generation, one step at a "
                f"time, has not reached yet")
    return (f"a later step of {src}, which generation, one step at a time, has not "
            f"computed yet")


def _future(shift: Shift) -> str | None:
    """Why a reference over the generated index reads what is not there yet, or None."""
    if shift.kind == ShiftKind.REL and shift.k > 0:
        return "an advance"
    if shift.kind == ShiftKind.END:
        return "the last step"
    if shift.kind == ShiftKind.FIRST:
        return "the first step"
    return None


def softmax_index(expr) -> str | None:
    """t when `expr` is `softmax over t (E)` (graph/folded.softmax_over); else None."""
    parts = softmax_parts(expr)
    return None if parts is None else parts[0]


def reductions(expr):
    """(name, index, pos) of every reduction in an expression, outermost first, named as
    written (a softmax over t is one softmax, not its exp and logsumexp)."""
    if not isinstance(expr, Apply):
        return
    parts = softmax_parts(expr)
    if parts is not None:
        yield "softmax", parts[0], expr.pos
        yield from reductions(parts[1])
        return
    if "over" in expr.kw:
        yield expr.op.value.split()[0], expr.kw["over"], expr.pos
    for a in expr.args:
        yield from reductions(a)


_VERBS = {"softmax": "normalises over", "sum": "adds up", "mean": "averages",
          "max": "takes the largest of", "logsumexp": "adds up (in log space)"}


def _reduction_over(graph: FoldedGraph, needed: set, target: str, output: str,
                    u: str) -> str | None:
    """Why one of the `needed` variables cannot be generated because it reduces over the
    generated index u, or None."""
    for v in graph.vars:
        if v.name not in needed:
            continue
        exprs = [(c.expr, v.name) for c in v.cases] + \
            ([(v.init, f"init {v.name}")] if v.init is not None else [])
        for expr, lhs in exprs:
            for fn, index, pos in reductions(expr):
                if index != u:
                    continue
                if lhs == v.name and v.indexes:
                    lhs = f"{v.name}[{', '.join(v.indexes)}]"
                at = _where(graph, v.name, pos)
                return (f"cannot generate {target}[{u}]: {lhs} uses '{fn} over {u}' "
                        f"({at}), a reduction over the generated index {u}: it "
                        f"{_VERBS[fn]} every step of {u}, the steps not generated yet "
                        f"included; {output}[{u}] depends on it (attention reduces "
                        f"over the source's index instead)")
    return None


def check_target(graph: FoldedGraph, target: str, output: str) -> tuple[bool, str]:
    """(True, "") when o can be generated step by step over y's index, else (False, why)."""
    u = graph.var(target).index
    g = graph.nx()
    needed = nx.ancestors(g, output) | {output}
    for src, dst, data in g.edges(data=True):
        if dst not in needed:
            continue
        shift, pos = data["shift"], data.get("pos")
        sv = graph.var(src)
        ref = f"{src}[{shift.show(sv.index)}]" if sv.index else src
        reader = graph.var(dst)
        lhs = f"init {dst}" if data.get("init") else (
            f"{dst}[{reader.index}]" if reader.index else dst)
        at = _where(graph, dst, pos)
        if src == target and shift.direction >= 0 and \
                shift.kind in (ShiftKind.REL, *ENDS):
            return False, (f"cannot generate {target}[{u}]: {lhs} reads {ref} ({at}), the "
                           f"target itself, which generation is still writing; a generated "
                           f"target may only be read with a delay, {target}[{u}-1]")
        if sv.index != u:
            continue
        why = _future(shift)
        if why is None:
            continue
        if why == "an advance":
            detail = _advance(graph, g, src, dst, u)
        elif why == "the last step":
            detail = (f"the last step of the generated index {u}, which is known only "
                      f"once generation has ended")
        else:
            detail = (f"the first step of the generated index {u}; step-by-step "
                      f"generation keeps only the last steps (delays)")
        return False, (f"cannot generate {target}[{u}]: {lhs} reads {ref} ({at}), "
                       f"{detail}; {output}[{u}] depends on it")
    why = _reduction_over(graph, needed, target, output, u)
    return (False, why) if why else (True, "")


NOT_SAMPLED = "Such a model can be trained and scored (seqgraph eval), not sampled"


def can_generate(graph: FoldedGraph, target: str | None = None,
                 not_sampled: bool = True) -> tuple[bool, str]:
    """(True, "") when the model's generated targets (or `target` alone) can be written
    one step at a time; else (False, the reason, naming the variable and its line).
    `not_sampled` ends a refusal with its consequence for `seqgraph sample`, which
    refuses the model; the report of `seqgraph check` leaves it off where the sampler
    would label the model in one pass instead (`sample_mode`)."""
    found = generated_targets(graph)
    if target is not None:
        found = [(y, o) for y, o in found if y == target]
    if not found:
        what = f"'{target}'" if target else "target"
        return False, (f"model '{graph.name}' has no {what} to generate: generation "
                       f"writes a class target over a sequence index, such as y[t] : "
                       f"class(V), that an xent loss reads")
    for y, o in found:
        ok, why = check_target(graph, y, o)
        if not ok:
            return ok, f"{why}. {NOT_SAMPLED}" if not_sampled else why
    return True, ""


# -------------------------------------------------------------- what sample does


def sample_mode(graph: FoldedGraph, loader: str | None) -> str | None:
    """How `seqgraph sample` runs the model once trained on `loader` data (the name of
    the train block's loader call; None: not named), by the rule of its `run`
    (cmd/sample.py):
    - 'generate': step by step, each output fed to the next (this module's check then
      applies): chars or words data (a language model continues --prime), or example
      data whose target is read back with a delay (`R @ y[u-1]`: the binding's
      `feedback`, from the same `folded.fed_back`), and a tree encoder's decoder
      (treepairs data: a sequence for a tree, written until `</s>`);
    - 'one pass': example data (pairs, labeled, tagged, series, trees; they always bind
      an input) whose target is not read back: one forward pass labels or forecasts
      --input;
    - None: it depends on data `loader` does not name.
    Every loader binds one target and refuses a model with more (train/binding.py), so
    the model's targets are the one the binding would take."""
    from .report import STREAMS  # here: report imports this module

    if loader in STREAMS or graph.tree_encoder:      # a tree encoder: treepairs data
        return "generate"
    if any(fed_back(graph, v.name) for v in graph.targets()):
        return "generate"
    # unnamed data: a stream would bind a class target over a sequence index
    if loader is None and generated_targets(graph):
        return None
    return "one pass"
