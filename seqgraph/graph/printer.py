"""Canonical text forms: expressions as the spec writes them, fully determined, so that
golden tests can pin the folded and the unfolded graph (`seqgraph check --dump`)."""
from __future__ import annotations

from ..ops import Op
from .folded import Apply, Num, ParamRef, Ref

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
        ix = e.shift.show(index_of(e.var))
        return f"{e.var}[{ix}]" if ix else e.var
    assert isinstance(e, Apply)
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
    inner = ", ".join([show(a, index_of) for a in args] + [f"{v:g}" for _, v in e.attrs])
    return f"{e.op.value}({inner})"
