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
- the target read without a delay (`y[u]`, or `y[u+1]`: the answer itself).

The references over other indexes are free: a bidirectional encoder over the source
index t (`g[t+1]`, `h[1]`) reads a sequence given whole.
"""
from __future__ import annotations

import networkx as nx

from .folded import FoldedGraph, Shift


def generated_targets(graph: FoldedGraph) -> list:
    """Class targets over a sequence index that an xent loss pairs with logits: what
    generation can write, as (target, output) variable names."""
    seq = {i for i, k in graph.indexes if k == "seq"}
    out = []
    for loss in graph.losses:
        v = graph.var(loss.target.var)
        if loss.fn == "xent" and v.kind == "class" and v.index in seq \
                and (v.name, loss.output.var) not in out:
            out.append((v.name, loss.output.var))
    return out


def _where(graph: FoldedGraph, var: str, pos) -> str:
    line = pos.line if pos and pos.line else graph.var(var).pos.line
    return f"line {line}" if line else "its equation"


def _future(shift: Shift) -> str | None:
    """Why a reference over the generated index reads what is not there yet, or None."""
    if shift.kind == "rel" and shift.k > 0:
        return "an advance"
    if shift.kind == "end":
        return "the last step"
    if shift.kind == "first":
        return "the first step"
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
        if src == target and shift.direction >= 0 and shift.kind in ("rel", "end", "first"):
            return False, (f"cannot generate {target}[{u}]: {lhs} reads {ref} ({at}), the "
                           f"target itself, which generation is still writing; a generated "
                           f"target may only be read with a delay, {target}[{u}-1]")
        if sv.index != u:
            continue
        why = _future(shift)
        if why is None:
            continue
        if why == "an advance":
            detail = (f"an advance over the generated index {u}: a backward recurrence "
                      f"reads steps that are not generated yet")
        elif why == "the last step":
            detail = (f"the last step of the generated index {u}, which is known only "
                      f"once generation has ended")
        else:
            detail = (f"the first step of the generated index {u}; step-by-step "
                      f"generation keeps only the last steps (delays)")
        return False, (f"cannot generate {target}[{u}]: {lhs} reads {ref} ({at}), "
                       f"{detail}; {output}[{u}] depends on it. Such a model can be "
                       f"trained and scored (seqgraph eval), not sampled")
    return True, ""


def can_generate(graph: FoldedGraph, target: str | None = None) -> tuple[bool, str]:
    """(True, "") when the model's generated targets (or `target` alone) can be written
    one step at a time; else (False, the reason, naming the variable and its line)."""
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
            return ok, why
    return True, ""
