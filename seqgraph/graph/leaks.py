"""Whether an output can read the answer its loss asks for (`target_leaks`).

o[t] must not read its target y[t] (nor a later step of it), and with a language model's
data, where y[t] is the next input x[t+1], no later step of x. The classic mistake, h[t+1]
for h[t-1], trains to a suspiciously low loss; `seqgraph check` and `seqgraph train` warn
of it. The analysis follows every path from the output: for each variable, the latest
step of the target's index that o[t] can read of it (a backward recurrence, `h[end]` and
a reduction over the index read every step).
"""
from __future__ import annotations

import networkx as nx

from .folded import Apply, Ref, ShiftKind
from .report import STREAMS, loader_args

INF = float("inf")


def target_leaks(checked, data=None) -> list[str]:
    """Warnings, one a line (without 'warning: '), for every output a loss compares with
    a target y that can read y itself (y[t], or a later y[t+k]) or, when the data makes
    y[t] a later input (chars or words: y[t] = x[t+1]), that input: the model sees the
    answer and trains to a suspiciously low loss. `data` is the loader call the model is
    trained on (the train config's `data`, `--set` included); None: the train block's.
    Any path counts, a backward recurrence (h[t+1]), `h[end]` and a `sum over t` too."""
    g = getattr(checked, "graph", checked)
    data = data if data is not None else g.train_config.get("data")
    out = []
    for loss in g.losses:
        o, y = loss.output.var, g.var(loss.target.var)
        if y.index is None:
            out += _example_leak(g, o, y)
        if y.index is None or g.index_kinds.get(y.index) != "seq":
            continue
        latest = _latest(g, o, y.index)
        if latest.get(y.name, -INF) >= 0:
            out.append(_leak(g, o, y, y, latest, f"{y.name} is the target its loss "
                             f"compares {o}[{y.index}] with"))
        answer = _answer(g, y, data)
        if answer is not None and latest.get(answer[0].name, -INF) >= answer[1]:
            out.append(_leak(g, o, y, answer[0], latest, answer[2]))
    return list(dict.fromkeys(out))


def read_past_end(g, index: str):
    """The first reference of an equation or a loss that reads a later step of `index`
    than its reader's (`h[end]`, `g[t+1]`, `sum over t (...)`, a loss at `o[end]`), as
    `(reference, shown)`, or None: what padding at an example's end would flow into."""
    refs = [(r, over) for _, r, over, _ in _reads(g)] + \
        [(r, frozenset()) for loss in g.losses for r in (loss.output, loss.target)]
    ahead = next((r for r, over in refs if _step(g, r, over, index, 0) > 0), None)
    return None if ahead is None else (ahead, _show(g, ahead))


def _example_leak(g, o: str, y) -> list:
    """A per-example target (a classifier's y) read by its own output, on any path."""
    needed = nx.ancestors(g.nx(), o) | {o}
    if y.name not in needed:
        return []
    reader, ref, _, _ = next(r for r in _reads(g) if r[0] in needed and r[1].var == y.name)
    line = f"line {ref.pos.line}" if ref.pos and ref.pos.line else "its equation"
    via = line if reader == o else f"{reader} reads {y.name}, {line}"
    return [f"{o} reads its own target {y.name} ({via}), which its loss compares it "
            f"with: the model sees the answer"]


def _answer(g, y, data):
    """(x, k, said) when the data makes the target y[t] the input x[t+k]: a stream (chars,
    words: the next token), a series whose target columns are inputs too (`horizon`
    rows ahead); with no data named, a model shaped like a language model (x[t] and
    y[t] of one size). None otherwise: a tag, a translation, a label is not an input."""
    name = getattr(data, "name", None)
    xs = [v for v in g.inputs() if v.index == y.index]
    if name in STREAMS or (data is None and len(xs) == 1 and xs[0].kind == "onehot"
                           and y.size is not None and xs[0].size == y.size):
        x = [v for v in xs if v.kind == "onehot"]
        if len(x) != 1:
            return None
        rule = f"{y.name}[{y.index}] = {x[0].name}[{y.index}+1]"
        said = f"{name} data: {rule}" if name else \
            (f"chars or words data: {rule}; the train block names no data, and "
             f"{x[0].name} and {y.name} share the size {y.size}")
        return x[0], 1, (f"{x[0].name}[{y.index}+1] is the target {y.name}[{y.index}] "
                         f"of a language model ({said})")
    if name == "series" and len(xs) == 1:
        args = loader_args(data)
        h, ins, outs = args.get("horizon", 1), args.get("inputs", ()), args.get("targets", ())
        ins, outs = ([c] if isinstance(c, str) else list(c) for c in (ins, outs))
        both = [c for c in outs if c in ins]
        if isinstance(h, int) and h >= 1 and both:
            return xs[0], h, (f"{xs[0].name}[{y.index}+{h}] holds the target "
                              f"{y.name}[{y.index}] (series data: {', '.join(both)} is an "
                              f"input, and a target {h} row{'s' * (h != 1)} ahead)")
    return None


def _refs_over(expr, over=frozenset()):
    """(reference, the indexes of the reductions around it) of every reference."""
    if isinstance(expr, Ref):
        yield expr, over
    elif isinstance(expr, Apply):
        inner = over | {expr.kw["over"]} if "over" in expr.kw else over
        for a in expr.args:
            yield from _refs_over(a, inner)


def _reads(g) -> list:
    """(reader, reference, reductions around it, in an init) of every reference."""
    out = []
    for v in g.vars:
        exprs = [(c.expr, False) for c in v.cases] + \
            ([(v.init, True)] if v.init is not None else [])
        for expr, init in exprs:
            out += [(v.name, r, over, init) for r, over in _refs_over(expr)]
    return out


def _step(g, ref, over, index: str, at):
    """The step of `index` that `ref` reads when its reader is at step t+`at`, as an
    offset from t: at+k for a relative reference, INF (no bound) for `end` or inside a
    reduction over the index, 0 for the first step (never after t), `at` for a variable
    not over the index (one value for every step)."""
    v = g.var(ref.var)
    shift = ref.shift if v.index == index else ref.shift2 if v.inner == index else None
    if shift is None:
        return at
    if index in over or shift.kind == ShiftKind.END:
        return INF
    if shift.kind == ShiftKind.FIRST:
        return 0
    return at + shift.k if shift.kind == ShiftKind.REL else at


def _latest(g, out: str, index: str) -> dict:
    """{variable: the latest step of `index` that out[t] can read of it, as an offset
    from t}, over every path: the longest paths from `out`. No simple path goes further
    than the sum of the advances, so beyond it a cycle reads ever later steps (a backward
    recurrence): INF."""
    by_reader = {}
    for reader, ref, over, _ in _reads(g):
        by_reader.setdefault(reader, []).append((ref, over))
    bound = sum(max(r.shift.k, 0) + max(r.shift2.k, 0)
                for reads in by_reader.values() for r, _ in reads)
    latest, todo = {out: 0}, [out]
    while todo:                          # each value only grows, to `bound`, then INF
        reader = todo.pop()
        for ref, over in by_reader.get(reader, ()):
            at = _step(g, ref, over, index, latest[reader])
            at = INF if at > bound else at
            if at > latest.get(ref.var, -INF):
                latest[ref.var] = at
                todo.append(ref.var)
    return latest


def _show(g, ref) -> str:
    v = g.var(ref.var)
    steps = [s.show(i) for s, i in ((ref.shift, v.index), (ref.shift2, v.inner)) if i]
    return f"{ref.var}[{', '.join(steps)}]" if steps else ref.var


def _culprit(g, leaked: str, index: str, latest: dict):
    """The reference to blame for o[t] reading `leaked` too late: one that reads ahead
    over the index on the way to `leaked` (itself first), reaching furthest; else the
    read of `leaked` itself."""
    G = g.nx()
    reach = {r for r in latest if r == leaked or leaked in nx.ancestors(G, r)}
    on_way = [r for r in _reads(g) if r[0] in latest and r[1].var in reach]

    def ahead(r) -> float:
        return _step(g, r[1], r[2], index, latest[r[0]])

    forward = [r for r in on_way if _step(g, r[1], r[2], index, 0) > 0]
    pick = [r for r in forward if r[1].var == leaked] or forward or \
        [r for r in on_way if r[1].var == leaked]
    return max(pick, key=ahead)


def _leak(g, o: str, y, leaked, latest: dict, why: str) -> str:
    """`o[t] reads x[t+1] (h[t] reads x[t+1], line 5): <why>, so the model sees the
    answer; did you mean x[t]?`"""
    I = y.index
    at = latest[leaked.name]
    seen = f"{leaked.name}[{I}{at:+d}]" if at != INF else \
        f"{leaked.name} at every later step"
    seen = f"{leaked.name}[{I}]" if at == 0 else seen
    reader, ref, over, init = _culprit(g, leaked.name, I, latest)
    line = ref.pos.line if ref.pos and ref.pos.line else None
    where = f"line {line}" if line else "its equation"
    rv = g.var(reader)
    lhs = f"init {reader}" if init else \
        f"{reader}[{', '.join(rv.indexes)}]" if rv.indexes else reader
    inside = f" inside a reduction over {I}" if I in over else ""
    via = where if reader == o and ref.var == leaked.name and not inside else \
        f"{lhs} reads {_show(g, ref)}{inside}, {where}"
    return f"{o}[{I}] reads {seen} ({via}): {why}, so the model sees the answer" + \
        _hint(g, ref, over, I, y)


def _hint(g, ref, over, index: str, y) -> str:
    """'; did you mean h[t-1]?' for the reference to blame, when a fix is likely."""
    s, v = ref.shift, g.var(ref.var)
    if index in over or v.index != index:
        return ""
    if "." in v.name and s.kind == ShiftKind.REL and s.k > 0:   # in a cell: h.bwd[t+1]
        return "; a `bi` or `reverse` cell reads later steps: did you mean a forward one?"
    if v.name == y.name:
        return f"; did you mean {y.name}[{index}-1]?"
    if s.kind == ShiftKind.REL and s.k > 0:
        return f"; did you mean {v.name}[{index}]?" if v.role == "input" else \
            f"; did you mean {v.name}[{index}-{s.k}]?"
    if s.kind == ShiftKind.END:
        return f"; did you mean {v.name}[{index}]?"
    return ""
