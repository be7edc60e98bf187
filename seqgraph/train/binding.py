"""How a text dataset plugs into a model: by the kinds of its declared variables.

A `chars` or `words` loader supplies one token stream. It binds the model's one-hot
sequence input (`x[t]`, whatever its name) to the tokens and its class target on the same
index (`y[t]`) to the next token, and binds the size name of both (`V`) to the vocabulary
size. A model whose target is fed back (`R @ y[t-1]`, output-to-hidden recurrence) may
have no input at all: it reads its own previous target.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DataError
from ..graph.folded import FoldedGraph, refs


@dataclass(frozen=True)
class Binding:
    """Which variables the token stream feeds, and the dims the data binds."""
    input: str | None          # the one-hot input x (None: the model reads only y)
    target: str                # the class target y, y[t] = x[t+1]
    feedback: bool             # the target is read with a delay (R @ y[t-1])
    dims: dict = field(default_factory=dict)   # size names bound by the vocabulary


def fed_back(graph: FoldedGraph, name: str) -> bool:
    """True when some equation reads variable `name` with a delay."""
    for v in graph.vars:
        exprs = [c.expr for c in v.cases] + ([v.init] if v.init is not None else [])
        for e in exprs:
            if any(r.var == name and r.shift.is_delay for r in refs(e)):
                return True
    return False


def _one(found: list, what: str, graph: FoldedGraph, loader: str):
    if len(found) == 1:
        return found[0]
    where = f"model '{graph.name}'"
    if not found:
        raise DataError(f"a {loader} loader needs {what}; {where} declares none",
                        file=graph.path)
    names = ", ".join(v.name for v in found)
    raise DataError(f"a {loader} loader binds one {what}; {where} declares several ({names})",
                    file=graph.path)


def _size(graph: FoldedGraph, var, vocab: int, given: dict, data_file: str) -> dict:
    """Check the vocabulary fits the declared size of `var`; bind it if unbound."""
    size, declared = var.size, dict(graph.dims)
    value = size if isinstance(size, int) else declared.get(size, given.get(size))
    if value is None:
        return {size: vocab} if isinstance(size, str) else {}
    if vocab > value:
        if isinstance(size, int):
            where = f"{var.name} : {var.kind}({size}) of {graph.path}"
        elif size in declared:
            where = f"dim {size} = {value} of {graph.path}"
        else:
            where = f"--dim {size}={value}"
        raise DataError(f"{vocab} distinct symbols do not fit {where} (the size of "
                        f"{var.name}); leave that size to the data, or raise it",
                        file=data_file)
    return {}


def bind(graph: FoldedGraph, vocab_size: int, loader: str, data_file: str,
         given: dict | None = None) -> Binding:
    """The binding of a token stream to `graph`; `given` are dims from `--dim`."""
    given = given or {}
    target = _one([v for v in graph.targets() if v.kind == "class" and v.index is not None],
                  "a sequence target such as y[t] : class(V)", graph, loader)
    feedback = fed_back(graph, target.name)
    inputs = [v for v in graph.inputs() if v.kind == "onehot" and v.index == target.index]
    x = None
    if inputs or not feedback:
        x = _one(inputs, f"a one-hot input such as x[{target.index}] : onehot(V)", graph, loader)
    for v in graph.inputs() + graph.targets():
        if v is not x and v is not target:
            fed = " and ".join(u.name for u in (x, target) if u is not None)
            raise DataError(f"a {loader} loader supplies only {fed}; it cannot supply "
                            f"{v.role} '{v.name}' ({v.kind})", file=graph.path)
    dims = {}
    for v in ([x] if x else []) + [target]:
        dims.update(_size(graph, v, vocab_size, {**given, **dims}, data_file))
    return Binding(x.name if x else None, target.name, feedback, dims)
