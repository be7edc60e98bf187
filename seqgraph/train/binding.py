"""How a text dataset plugs into a model: by the kinds of its declared variables.

A `chars` or `words` loader supplies one token stream. It binds the model's one-hot
sequence input (`x[t]`, whatever its name) to the tokens and its class target on the same
index (`y[t]`) to the next token, and binds the size name of both (`V`) to the vocabulary
size. A model whose target is fed back (`R @ y[t-1]`, output-to-hidden recurrence) may
have no input at all: it reads its own previous target.

An example loader (`pairs`, `labeled`, `tagged`, `series`) binds one input and one target
by their kinds too: a one-hot sequence input to the source tokens (a `vec` sequence input
to a series' input columns), and the target that fits the loader: a class sequence on its
own index for `pairs` (y[u]), a per-example class for `labeled` (y), a class sequence on
the input's index for `tagged` (y[t]), a `vec` sequence for `series`.

The kind of the model's input also decides how `pairs` reads its source column: tokens
for a one-hot sequence input (seq2seq, x[t]), numbers for a per-example vector input
(one-to-many, `c : vec(D)`, Fig. 10.9: one vector, then a sequence). `fit_loader` tells
the loader which before it reads a line.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import DataError, UsageError
from ..graph.folded import FoldedGraph, refs


@dataclass(frozen=True)
class Binding:
    """Which variables the token stream feeds, and the dims the data binds."""
    input: str | None          # the one-hot input x (None: the model reads only y)
    target: str                # the class target y, y[t] = x[t+1]
    feedback: bool             # the target is read with a delay (R @ y[t-1])
    dims: dict = field(default_factory=dict)   # size names bound by the vocabulary
    kind: str = "stream"       # the loader: 'stream' (chars, words) or an example loader
    start_ids: dict = field(default_factory=dict)   # fed-back target -> id of <s>

    @property
    def examples(self) -> bool:
        """True for example-batched data (no state carried between batches)."""
        return self.kind != "stream"


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


def declared_size(graph: FoldedGraph, var, given: dict | None = None) -> int | None:
    """The size of `var` when the spec (or `--dim`) fixes it, else None."""
    size = var.size
    if isinstance(size, int):
        return size
    return dict(graph.dims).get(size, (given or {}).get(size))


def size_source(graph: FoldedGraph, var, given: dict | None = None) -> str:
    """Where a fixed size comes from, for messages: `y : class(5) of m.sg`, ..."""
    size, declared = var.size, dict(graph.dims)
    if isinstance(size, int):
        return f"{var.name} : {var.kind}({size}) of {graph.path}"
    if size in declared:
        return f"dim {size} = {declared[size]} of {graph.path}"
    return f"--dim {size}={(given or {}).get(size)}"


def _size(graph: FoldedGraph, var, vocab: int, given: dict, data_file: str,
          what: str = "distinct symbols", exact: bool = False) -> dict:
    """Check the vocabulary fits the declared size of `var` (equals it, for a vector of
    columns); bind it if unbound."""
    size = var.size
    value = declared_size(graph, var, given)
    if value is None:
        return {size: vocab} if isinstance(size, str) else {}
    if vocab > value or (exact and vocab != value):
        where = size_source(graph, var, given)
        verb = "do not match" if exact else "do not fit"
        raise DataError(f"{vocab} {what} {verb} {where} (the size of "
                        f"{var.name}); leave that size to the data, or "
                        f"{'change' if exact else 'raise'} it", file=data_file)
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


# ---------------------------------------------------------------- example loaders
def vector_source(graph: FoldedGraph, loader: str):
    """The per-example `vec` input a `pairs` source feeds (one_to_many's `c : vec(D)`),
    or None when the model reads a token sequence (or the loader is another kind)."""
    if loader != "pairs" or any(v.kind == "onehot" and v.index is not None
                                for v in graph.inputs()):
        return None
    vecs = [v for v in graph.inputs() if v.kind == "vec" and v.index is None]
    return vecs[0] if len(vecs) == 1 else None


def fit_loader(graph: FoldedGraph, loader, given: dict | None = None):
    """`loader` told what the model's source is before it reads: a `pairs` loader whose
    model reads one vector per example reads its source column as that vector's numbers
    (checked against its size when the spec or `--dim` fixes it)."""
    x = vector_source(graph, getattr(loader, "kind", None))
    if x is None:
        return loader
    if loader.source_chars:
        raise UsageError(f"pairs(): source_chars reads the source as characters, but "
                         f"model '{graph.name}' reads it as numbers ({x.name} : "
                         f"vec({x.size}), one vector per example)")
    return replace(loader, vector=x.name, width=declared_size(graph, x, given))


TARGETS = {
    "pairs": ("a sequence target on an index of its own such as y[u] : class(Vy)",
              lambda v, x: v.kind == "class" and v.index is not None),
    "labeled": ("a per-example class target such as y : class(K)",
                lambda v, x: v.kind == "class" and v.index is None),
    "tagged": ("a sequence target such as y[t] : class(K)",
               lambda v, x: v.kind == "class" and v.index is not None),
    "series": ("a sequence target such as y[t] : vec(D)",
               lambda v, x: v.kind in ("vec", "binary") and v.index is not None),
}


def bind_examples(graph: FoldedGraph, vocab, loader: str, data_file: str,
                  given: dict | None = None) -> Binding:
    """The binding of an example loader's data (`vocab` holds the source vocabulary,
    `vocab.target` the target's) to `graph`."""
    given = given or {}
    what, fits = TARGETS[loader]
    want = "vec" if loader == "series" else "onehot"
    if getattr(vocab, "kind", None) == "vectors":      # pairs read as vector -> sequence
        x = vector_source(graph, loader)
        if x is None:
            raise DataError(f"the data's sources are vectors; model '{graph.name}' has no "
                            f"per-example input such as c : vec(D) to read them",
                            file=graph.path)
    else:
        xs = [v for v in graph.inputs() if v.kind == want and v.index is not None]
        x = _one(xs, f"a {want} sequence input such as x[t] : "
                     f"{'vec(D)' if want == 'vec' else 'onehot(V)'}"
                     + (" (or a per-example c : vec(D))" if loader == "pairs" else ""),
                 graph, loader)
    target = _one([v for v in graph.targets() if fits(v, x)], what, graph, loader)
    if loader in ("tagged", "series") and target.index != x.index:
        raise DataError(f"a {loader} loader gives {x.name} and {target.name} one step each: "
                        f"declare them on one index ({x.name}[{x.index}], "
                        f"{target.name}[{x.index}])", file=graph.path)
    for v in graph.inputs() + graph.targets():
        if v is not x and v is not target:
            raise DataError(f"a {loader} loader supplies only {x.name} and {target.name}; it "
                            f"cannot supply {v.role} '{v.name}' ({v.kind})", file=graph.path)
    dims = {}
    if getattr(vocab, "kind", None) == "vectors":
        dims.update(_size(graph, x, len(vocab), given, data_file, "numbers per source",
                          True))
        dims.update(_size(graph, target, len(vocab.target), {**given, **dims}, data_file))
    elif loader == "series":
        dims.update(_size(graph, x, len(vocab), given, data_file, "input columns", True))
        dims.update(_size(graph, target, len(vocab.target), {**given, **dims}, data_file,
                          "target columns", True))
    else:
        dims.update(_size(graph, x, len(vocab), given, data_file))
        what = {"labeled": "classes", "tagged": "distinct tags"}.get(loader,
                                                                     "distinct symbols")
        dims.update(_size(graph, target, len(vocab.target), {**given, **dims}, data_file,
                          what))
    feedback = fed_back(graph, target.name)
    start = {}
    if feedback and vocab.target is not None and "<s>" in vocab.target.index:
        start = {target.name: vocab.target.index["<s>"]}
    return Binding(x.name, target.name, feedback, dims, loader, start)
