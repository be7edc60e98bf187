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
the input's index for `tagged` (y[t]), a `vec` sequence for `series`. `treepairs` feeds a
tree encoder and its decoder (`FoldedGraph.tree_encoder`): the words at the tree's nodes
(w[n]) and the target sequence (y[u]).

The kind of the model's input also decides how `pairs` reads its source column: tokens
for a one-hot sequence input (seq2seq, x[t]), numbers for a per-example vector input
(one-to-many, `c : vec(D)`, Fig. 10.9: one vector, then a sequence). `fit_loader` tells
the loader which before it reads a line.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import DataError, UsageError
from ..graph.folded import FoldedGraph, fed_back
from .loaders import EXAMPLE_KINDS, STREAM_KINDS


@dataclass(frozen=True)
class Binding:
    """Which variables the token stream feeds, and the dims the data binds."""
    input: str | None          # the one-hot input x (None: the model reads only y)
    target: str                # the class target y, y[t] = x[t+1]
    feedback: bool             # the target is read with a delay (R @ y[t-1])
    dims: dict = field(default_factory=dict)   # size names bound by the vocabulary
    kind: str = "stream"       # the loader: 'stream' (chars, words) or an example loader
    start_ids: dict = field(default_factory=dict)   # fed-back target -> id of <s>
    root_target: bool = False  # trees: the target is one label a tree, its root's

    @property
    def examples(self) -> bool:
        """True for example-batched data (no state carried between batches)."""
        return self.kind != "stream"


def _one(found: list, what: str, graph: FoldedGraph, loader: str, role: str = "input"):
    """The one variable of `role` a loader binds, or a DataError saying what is there."""
    if len(found) == 1:
        return found[0]
    where = f"model '{graph.name}'"
    if not found:
        have = [v.declaration for v in (graph.targets() if role == "target" else
                                       graph.inputs())]
        none = f"none (its {role}{'s' * (len(have) > 1)}: {', '.join(have)})" if have \
            else "none"
        raise DataError(f"a {loader} loader needs {what}; {where} declares {none}",
                        file=graph.path)
    names = ", ".join(v.name for v in found)
    one = what.removeprefix("a ").removeprefix("an ")     # "one sequence target", not "one a"
    raise DataError(f"a {loader} loader binds one {one}; {where} declares several ({names})",
                    file=graph.path)


def declared_size(graph: FoldedGraph, var, given: dict | None = None) -> int | None:
    """The size of `var` when the spec (or `--dim`) fixes it, else None."""
    size = var.size
    if isinstance(size, int):
        return size
    return (given or {}).get(size, dict(graph.dims).get(size))    # --dim overrides a dim


def size_source(graph: FoldedGraph, var, given: dict | None = None,
                bound: dict | None = None) -> str:
    """Where a fixed size comes from, for messages: `y : class(5) of m.sg`, `dim V = 65
    of m.sg`, `--dim V=65` (only a size the user gave), or the variable whose data bound
    it (`bound`: size -> (value, what the data gave))."""
    size, declared = var.size, dict(graph.dims)
    if isinstance(size, int):
        return f"{var.name} : {var.kind}({size}) of {graph.path}"
    if size in declared:
        return f"dim {size} = {declared[size]} of {graph.path}"
    if size in (given or {}):
        return f"--dim {size}={given[size]}"
    value, source = (bound or {}).get(size, ("?", "its value"))
    return f"{size} = {value}, {source}"


def _size(graph: FoldedGraph, var, vocab: int, given: dict, data_file: str,
          what: str = "distinct symbols", exact: bool = False,
          bound: dict | None = None) -> dict:
    """Check the vocabulary fits the declared size of `var` (equals it, for a vector of
    columns); bind it if unbound. `given`: --dim; `bound`: size -> (value, what the data
    gave), sizes this data bound through another variable."""
    size = var.size
    value = declared_size(graph, var, {**given, **{k: v for k, (v, _) in (bound or {}).items()}})
    if value is None:
        return {size: vocab} if isinstance(size, str) else {}
    if vocab > value or (exact and vocab != value):
        where = size_source(graph, var, given, bound)
        verb = "do not match" if exact else "do not fit"
        # a size the data bound through another variable is no setting to raise
        fix = f"give {var.name} a size name of its own" \
            if size in (bound or {}) and size not in given else \
            f"leave that size to the data, or {'change' if exact else 'raise'} it"
        raise DataError(f"{vocab} {what} {verb} {where} (the size of {var.name}); {fix}",
                        file=data_file)
    return {}


def _sizes(graph: FoldedGraph, given: dict, data_file: str, counts) -> dict:
    """The dims the data binds: `counts` are (var, count, what, exact), each checked
    against the spec, --dim, or the size the data gave an earlier variable."""
    dims, bound = {}, {}
    for var, n, what, exact in counts:
        new = _size(graph, var, n, given, data_file, what, exact, bound)
        bound.update({k: (v, f"bound by the {what} in the data of {var.name}")
                      for k, v in new.items()})
        dims.update(new)
    return dims


# ------------------------------------------------- which data fits which model, by kind
STREAMS, EXAMPLES = STREAM_KINDS, EXAMPLE_KINDS


def trees_and_sequences(graph: FoldedGraph, loader: str) -> None:
    """A tree beside a sequence index: a tree encoder and its decoder read `treepairs`,
    a tree and a target sequence an example (`FoldedGraph.tree_encoder`); no loader
    reads another such model. Said before any other loader's own complaint."""
    both = graph.tree_and_sequence
    if not both or (loader == "treepairs" and graph.tree_encoder):
        return
    where = f"model '{graph.name}' runs over a tree ('{both[0]}') and a sequence ('{both[1]}')"
    if graph.tree_encoder:
        raise DataError(f"{where}: train it on treepairs(\"FILE\"), a bracketed tree, a "
                        f"tab and the target tokens a line, such as (3 (2 a) (3 film))"
                        f"<TAB>un film", file=graph.path)
    raise DataError(f"{where}, but it is not a tree encoder with a decoder, which "
                    f"treepairs feeds (its one input the words at the tree's nodes, its "
                    f"one target a class sequence): no loader reads its data; run it from "
                    f"Python (Model.run with forest=..., docs/language.md, \"Trees\")",
                    file=graph.path)


def _not_a_tree(graph: FoldedGraph, loader: str) -> None:
    """A tree model reads only `trees` data (a tree and a sequence: `treepairs`); said
    first, since its variables also have the kinds of a sequence model's (w[n] :
    onehot(V), y[n] : class(K)). `treepairs` reads only a tree and a sequence."""
    trees_and_sequences(graph, loader)
    n = next((i for i, k in graph.indexes if k == "tree"), None)
    if loader == "treepairs" and not graph.tree_and_sequence:
        what = f"its 'tree {n}' index but no sequence index" if n else "no 'tree n' index"
        raise DataError(f"a treepairs loader reads a tree and a target sequence an "
                        f"example; model '{graph.name}' has {what}", file=graph.path)
    if n is not None and loader != "treepairs":
        what = "a token stream" if loader in STREAMS else "examples that are sequences"
        raise DataError(f"a {loader} loader reads {what}, but model '{graph.name}' runs "
                        f"over trees (its 'tree {n}' index): train it on trees(\"FILE\"), "
                        f"one bracketed tree a line such as (3 (2 It) (4 fine))",
                        file=graph.path)


def stream_vars(graph: FoldedGraph, loader: str):
    """(x or None, target, fed back): what a token stream feeds, by kind; else the
    DataError naming what the model lacks or has too much of."""
    _not_a_tree(graph, loader)
    target = _one([v for v in graph.targets() if v.kind == "class" and v.index is not None],
                  "a sequence target such as y[t] : class(V)", graph, loader, "target")
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
    return x, target, feedback


def loaders_for(graph: FoldedGraph) -> list[str]:
    """The loaders whose data fits `graph` by the kinds of its variables."""
    if graph.tree_and_sequence:
        return ["treepairs"] if graph.tree_encoder else []
    if any(k == "tree" for _, k in graph.indexes):
        return ["trees"]
    out = []
    for name in STREAMS + EXAMPLES:
        try:
            _vars(graph, name)
        except DataError:
            continue
        out.append(name)
    return out


def _vars(graph: FoldedGraph, loader: str, vectors: bool | None = None):
    """stream_vars or example_vars, as `loader` reads (a token stream unless examples)."""
    if loader not in EXAMPLES:
        return stream_vars(graph, loader)
    if vectors is None:
        vectors = vector_source(graph, loader) is not None
    return example_vars(graph, loader, vectors)


def check_kind(graph: FoldedGraph, loader: str, vectors: bool | None = None):
    """The variables `loader`'s data feeds in `graph`, by kind (checked before any file
    is read or size compared: the wrong loader is the cause, not the data); else the
    error, with the loaders that fit the model. `vectors`: pairs whose sources are
    vectors (None: as the model reads them)."""
    try:
        return _vars(graph, loader, vectors)
    except DataError as e:
        fit = loaders_for(graph)
        if fit in ([], [loader], ["trees"], ["treepairs"]):  # said
            raise
        raise DataError(f"{e.message}; the loaders that fit model '{graph.name}': "
                        f"{listed(fit)}", file=e.file, line=e.line) from None


def listed(loaders: list[str]) -> str:
    """`chars(...), words(...) or tagged(...)`."""
    calls = [f"{n}(...)" for n in loaders]
    return calls[0] if len(calls) == 1 else ", ".join(calls[:-1]) + f" or {calls[-1]}"


def bind(graph: FoldedGraph, vocab_size: int, loader: str, data_file: str,
         given: dict | None = None) -> Binding:
    """The binding of a token stream to `graph`; `given` are dims from `--dim`."""
    x, target, feedback = check_kind(graph, loader)
    dims = _sizes(graph, given or {}, data_file,
                  [(v, vocab_size, "distinct symbols", False) for v in (x, target) if v])
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
              lambda v, x: v.kind == "class" and v.index is not None and v.index != x.index),
    "labeled": ("a per-example class target such as y : class(K)",
                lambda v, x: v.kind == "class" and v.index is None),
    "tagged": ("a sequence target such as y[t] : class(K)",
               lambda v, x: v.kind == "class" and v.index is not None),
    "series": ("a sequence target such as y[t] : vec(D)",
               lambda v, x: v.kind in ("vec", "binary") and v.index is not None),
    "treepairs": ("a sequence target such as y[u] : class(K)",
                  lambda v, x: v.kind == "class" and v.index is not None
                  and v.index != x.index),
}


def example_vars(graph: FoldedGraph, loader: str, vectors: bool = False):
    """(x, target): what an example loader feeds, by kind; `vectors`: pairs whose
    sources are vectors (one_to_many's c : vec(D))."""
    _not_a_tree(graph, loader)
    what, fits = TARGETS[loader]
    want = "vec" if loader == "series" else "onehot"
    if vectors:                                    # pairs read as vector -> sequence
        x = vector_source(graph, loader)
        if x is None:
            raise DataError(f"the data's sources are vectors; model '{graph.name}' has no "
                            f"per-example input such as c : vec(D) to read them",
                            file=graph.path)
    elif loader == "treepairs":                    # the words at the tree's leaves
        n = graph.tree_and_sequence[0]
        x = _one([v for v in graph.inputs() if v.kind == "onehot" and v.index == n],
                 f"a one-hot input over the tree such as w[{n}] : onehot(V)", graph, loader)
    else:
        xs = [v for v in graph.inputs() if v.kind == want and v.index is not None]
        x = _one(xs, f"a {want} sequence input such as x[t] : "
                     f"{'vec(D)' if want == 'vec' else 'onehot(V)'}"
                     + (" (or a per-example c : vec(D))" if loader == "pairs" else ""),
                 graph, loader)
    found = [v for v in graph.targets() if fits(v, x)]
    same = [v for v in graph.targets()
            if v.kind == "class" and x.index is not None and v.index == x.index]
    if loader == "pairs" and not found and same:   # a language model, a tagger
        y = same[0]
        raise DataError(f"a pairs loader needs {what}; model '{graph.name}' reads its "
                        f"target {y.name}[{y.index}] on the index of its input "
                        f"{x.name}[{x.index}]", file=graph.path)
    target = _one(found, what, graph, loader, "target")
    if loader in ("tagged", "series") and target.index != x.index:
        raise DataError(f"a {loader} loader gives {x.name} and {target.name} one step each: "
                        f"declare them on one index ({x.name}[{x.index}], "
                        f"{target.name}[{x.index}])", file=graph.path)
    for v in graph.inputs() + graph.targets():
        if v is not x and v is not target:
            raise DataError(f"a {loader} loader supplies only {x.name} and {target.name}; it "
                            f"cannot supply {v.role} '{v.name}' ({v.kind})", file=graph.path)
    return x, target


def bind_examples(graph: FoldedGraph, vocab, loader: str, data_file: str,
                  given: dict | None = None) -> Binding:
    """The binding of an example loader's data (`vocab` holds the source vocabulary,
    `vocab.target` the target's) to `graph`."""
    vectors = getattr(vocab, "kind", None) == "vectors"
    x, target = check_kind(graph, loader, vectors)
    n, m = len(vocab), len(vocab.target)
    if vectors:
        counts = [(x, n, "numbers per source", True), (target, m, "distinct symbols", False)]
    elif loader == "series":
        counts = [(x, n, "input columns", True), (target, m, "target columns", True)]
    else:
        what = {"labeled": "classes", "tagged": "distinct tags"}.get(loader,
                                                                     "distinct symbols")
        counts = [(x, n, "distinct symbols", False), (target, m, what, False)]
    dims = _sizes(graph, given or {}, data_file, counts)
    feedback = fed_back(graph, target.name)
    start = {}
    if feedback and vocab.target is not None and "<s>" in vocab.target.index:
        start = {target.name: vocab.target.index["<s>"]}
    return Binding(x.name, target.name, feedback, dims, loader, start)
