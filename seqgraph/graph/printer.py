"""Canonical text forms: expressions as the spec writes them, fully determined, so that
golden tests can pin the folded and the unfolded graph (`seqgraph check --dump`)."""
from __future__ import annotations

from ..ops import Op
from .folded import Apply, Num, ParamRef, Ref, softmax_parts

_INFIX = {Op.ADD: "+", Op.SUB: "-", Op.MUL: "*", Op.DIV: "/", Op.MATMUL: "@",
          Op.GATHER: "@"}
_PREC = {Op.ADD: 1, Op.SUB: 1, Op.MUL: 2, Op.DIV: 2, Op.MATMUL: 3, Op.GATHER: 3}


def show(e, index_of=lambda v: None, prec: int = 0) -> str:
    """An expression in the language's own syntax (minimal parentheses)."""
    if isinstance(e, Num):
        return f"{e.value:g}"
    if isinstance(e, ParamRef):
        return e.name
    if isinstance(e, Ref):
        idx = index_of(e.var)
        if isinstance(idx, tuple):          # a variable over two indexes: e[u, t]
            return f"{e.var}[{e.shift.show(idx[0])}, {e.shift2.show(idx[1])}]"
        ix = e.shift.show(idx)
        return f"{e.var}[{ix}]" if ix else e.var
    assert isinstance(e, Apply)
    soft = softmax_parts(e)
    if soft is not None:
        return f"softmax over {soft[0]} ({show(soft[1], index_of)})"
    args = e.args
    if e.op in _INFIX:
        p = _PREC[e.op]
        right_p = p if e.op in (Op.MATMUL, Op.GATHER) else p + 1
        left_p = p + 1 if e.op in (Op.MATMUL, Op.GATHER) else p
        text = f"{show(args[0], index_of, left_p)} {_INFIX[e.op]} " \
               f"{show(args[1], index_of, right_p)}"
        return f"({text})" if p < prec else text
    if e.op is Op.NEG:
        return f"-{show(args[0], index_of, 4)}"
    if e.op is Op.CONCAT:
        return "[" + "; ".join(show(a, index_of) for a in args) + "]"
    if e.op is Op.ONEHOT:
        return show(args[0], index_of, prec)
    if "over" in e.kw:
        return f"{e.op.value} {e.kw['over']} ({show(args[0], index_of)})"
    if e.op is Op.DOT:
        text = f"{show(args[0], index_of, 4)} @ {show(args[1], index_of, 3)}"
        return f"({text})" if 3 < prec else text
    inner = ", ".join([show(a, index_of) for a in args] +
                      [f"{v:g}" for _, v in e.attrs if isinstance(v, (int, float))])
    return f"{e.op.value}({inner})"


def _size(s) -> str:
    return str(s)


def folded_text(checked) -> str:
    """The canonical text form of a checked folded graph: declarations, one equation a
    line with every size, the edges with their shifts, and the recurrences."""
    g = checked.graph
    idx = {v.name: (v.index, v.inner) if v.inner else v.index for v in g.vars}
    index_of = idx.get
    out = [f"model {g.name}"]
    out += [f"dim {n} = {v}" for n, v in g.dims]
    out += [f"index {n} : {k}" for n, k in g.indexes]
    for v in g.vars:
        ix = f"[{v.index}]" if v.index else ""
        size = _size(checked.sizes[v.name])
        if v.role != "hidden":
            out.append(f"{v.role} {v.name}{ix} : {v.kind}({size})")
    for p in g.params:
        shape = ", ".join(_size(d) for d in checked.param_shapes.get(p.name, ()))
        init = f" init {p.init[0]}" + (f"({p.init[1]:g})" if len(p.init) > 1 else "") \
            if p.init else ""
        out.append(f"param {p.name} : [{shape}]{init}")
    for v in g.hidden():
        ix = f"[{', '.join(v.indexes)}]" if v.index else ""
        if v.init is not None:
            out.append(f"init {v.name} = {show(v.init, index_of)}")
        for c in v.cases:
            cond = f" if {c.cond}" if c.cond == "leaf" else (" otherwise" if c.cond else "")
            out.append(f"{v.name}{ix} : {_size(checked.sizes[v.name])} = "
                       f"{show(c.expr, index_of)}{cond}")
    for l in g.losses:
        out.append(f"loss {l.weight:g} * {l.fn}({show(l.output, index_of)}, "
                   f"{show(l.target, index_of)})")
    out.append("edges:")
    edges = sorted({(u, v, s.show(g.var(u).index) or "-", s.is_delay)
                    for u, v, s in g.nx().edges(data="shift")})
    out += [f"  {u} -> {v} [{s}]{' delay' if d else ''}" for u, v, s, d in edges]
    out.append("recurrences:")
    for r in checked.recurrences:
        way = "forward" if r.direction < 0 else "backward"
        out.append(f"  {', '.join(r.vars)} over {r.index}, {way}, delays "
                   f"{' '.join(r.delays)}")
    return "\n".join(out) + "\n"
