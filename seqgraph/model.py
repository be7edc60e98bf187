"""The Python API: a spec, read and checked (`read_spec`), and a Model with bound sizes,
parameters and an executor (`Model`, `load`). See docs/internals.md."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import networkx as nx
import numpy as np

from . import given, resources
from .errors import Pos, SpecError, UsageError, did_you_mean
from .graph.check import Checked, check
from .graph.folded import FoldedGraph, LossFn, ShiftKind, refs
from .graph.unfold import step_key, unfold
from .lang.elaborate import elaborate
from .lang.parse import parse
from .train.config import check_train_block


@dataclass(frozen=True)
class Spec:
    """A parsed, elaborated and checked spec; sizes may still name unbound dims."""
    path: str
    source: str
    graph: FoldedGraph
    checked: Checked

    @property
    def train(self) -> dict:
        return self.graph.train_config

    @property
    def name(self) -> str:
        return self.graph.name

    def unbound_dims(self) -> set:
        return self.checked.unbound()


def read_spec(path: str, text: str | None = None, dims: dict | None = None,
              bound: dict | None = None) -> Spec:
    """Parse, elaborate and check a .sg file (or `text`, reported as `path`). Its sizes
    are checked with the names the data binds left open; where that fails, with the
    sizes `dims` gives them (`--dim V=8`: `h[t] + x[t]` with h of 8, x : onehot(V)) over
    those a run `bound` (a checkpoint's: not named in an error, another model's run is
    said where it is restored)."""
    if text is None:
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise UsageError(f"{path}: cannot read the spec ({e.strerror})") from None
        # a byte-order mark (Windows editors write one) is no part of the spec
        text = _decode(raw, path).removeprefix("\ufeff")
    ast = parse(text, path)
    graph = elaborate(ast)
    check_train_block(ast, "tree" in graph.index_kinds.values())
    try:
        checked = check(graph)
    except SpecError:
        if not dims and not bound:
            raise
        check_dim_names(dims or {}, graph.size_names, path)  # `--dim v=8`: a slip
        ran = {k: v for k, v in (bound or {}).items() if k in graph.size_names}
        try:
            checked = check(graph, {**ran, **(dims or {})})
        except SpecError as e:
            if ran:                   # another model's checkpoint, most often
                shown = ", ".join(f"{k}={v}" for k, v in sorted(ran.items()))
                e.hint = (e.hint + "; " if e.hint else "") + f"the sizes {shown} are " \
                    f"the run's (its checkpoint): is it a run of this spec?"
            raise
    return Spec(path, text, graph, checked)


def _slip(graph, name: str) -> str:
    """Where an unbound size is written, and the declared dim it may be a slip for
    (`h[t] : HH` beside `dim H = 8`)."""
    at = next((v for v in graph.vars if v.size == name), None)
    where = f" ({at.name} : {name}, line {at.pos.line}" if at and at.pos.line else ""
    near = did_you_mean(name, [d for d, _ in graph.dims])
    if not where:
        return f"; {near}" if near else ""
    return where + (f"; {near})" if near else ")")


def check_dim_names(dims: dict, sizes: set, path: str) -> None:
    """A UsageError for a name of `dims` (`--dim v=8`) that is none of the spec's `sizes`,
    with a did-you-mean (`V` for `v`) or the sizes it has."""
    for name, size in dims.items():
        if name not in sizes:
            same = [n for n in sizes if n.lower() == name.lower()]
            near = f"did you mean '{same[0]}'?" if same else did_you_mean(name, sizes)
            known = f"its sizes: {', '.join(sorted(sizes))}" if sizes else \
                "it has no size names"
            raise UsageError(f"--dim {name}={size}: {path} has no size '{name}' "
                             f"({near or known})")


def _decode(raw: bytes, path: str) -> str:
    """UTF-8 text, or a SpecError at the first byte that is not UTF-8 (shown with the
    line it stands on, the byte replaced)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        start = raw.rfind(b"\n", 0, e.start) + 1
        line = raw[:e.start].count(b"\n") + 1
        column = len(raw[start:e.start].decode("utf-8", "replace")) + 1
        shown = raw.decode("utf-8", "replace")
        raise SpecError(f"the spec is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset "
                        f"{e.start}", Pos(line, column), hint="save the file as UTF-8",
                        file=path, source=shown) from None


class Model:
    """A spec with every size bound, parameters initialised, and an executor."""

    def __init__(self, spec: Spec, dims: dict | None = None, dtype="float32", seed=0,
                 executor: str = "interp", param_init=None, start_ids=None):
        self.spec = spec
        self.graph = spec.graph
        self.checked = check(spec.graph, given.whole_dims(dims))
        missing = self.checked.unbound()
        if missing and dims:                # `dims={"v": 5}`: a slip for V, said so
            check_dim_names(given.whole_dims(dims), spec.graph.size_names, spec.path)
        if missing:
            names = ", ".join(sorted(missing))
            raise UsageError(f"{spec.path}: the size{'s' * (len(missing) > 1)} {names} "
                             f"{'are' if len(missing) > 1 else 'is'} not bound: give "
                             f"--dim {min(missing)}=N (or dims=...), or data that "
                             f"binds it" + _slip(spec.graph, min(missing)))
        self.dtype = given.dtype_of(dtype)
        self.dims = dict(self.checked.dims)
        self.sizes = {v: int(s.const) for v, s in self.checked.sizes.items()}
        self.param_shapes = {p: tuple(int(d.const) for d in sh)
                             for p, sh in self.checked.param_shapes.items()}
        resources.check_params(spec.path, self.param_shapes, self.dtype.itemsize)
        self.start_ids = dict(start_ids or {})
        self.carried = dict(self.graph.carried)
        self.reads = set().union(*(v.reads for v in self.graph.hidden()))  # by equations
        self.params = init_params(self.graph, self.param_shapes, self.dtype, seed,
                                  given.init_rule(param_init))
        self._schedules = resources.LengthCache()
        self.executor_name = executor
        self.executor = _make_executor(self, executor)

    # ------------------------------------------------------------------ running
    def run(self, inputs, targets=None, carry=None, train=False, grads=False, rng=None,
            lengths=None, forest=None, teacher=1.0):
        """One batch forward (and backward with grads=True). `lengths` gives an index's
        length, or each example's ([B] array: the arrays are padded); `teacher` is the
        probability of feeding a delayed class target its true value rather than the
        model's own sample (docs/internals.md). Over a tree index, `forest`
        (graph/trees.py) gives the batch's trees and node arrays are [N] / [N, D]."""
        inputs, targets, carry, lengths = given.prepare(self, inputs, targets, carry,
                                                        lengths, grads, teacher)
        kw = {} if forest is None else {"forest": forest}
        if teacher < 1.0:
            kw["teacher"] = teacher
        return self.executor.run(inputs, targets, carry=carry, train=train, grads=grads,
                                 rng=rng, lengths=lengths, **kw)

    def forward(self, inputs, lengths=None, forest=None, *, targets=None) -> dict:
        """The values of every variable (train=False, no gradients); `targets` for a
        model that reads a target back (`R @ y[t-1]`: teacher forcing)."""
        return self.run(inputs, targets, lengths=lengths, forest=forest).values

    def loss_and_grads(self, inputs, targets, carry=None, train=False, rng=None,
                       lengths=None, forest=None):
        """(the loss, {parameter: its gradient}) of one batch: `run` with grads=True."""
        res = self.run(inputs, targets, carry=carry, train=train, grads=True, rng=rng,
                       lengths=lengths, forest=forest)
        return res.loss, res.grads

    # ------------------------------------------------------------------ helpers
    @cached_property
    def sampling_problem(self) -> str:
        """Why scheduled sampling (teacher < 1) cannot run this model ("": it can)."""
        if not self.feedback():
            return ""
        from .graph.generate_check import can_generate
        ok, why = can_generate(self.graph, not_sampled=False)
        return "" if ok else why

    def feedback(self) -> dict:
        """Class targets read with a delay inside an equation -> the output their loss
        pairs them with (what generation and scheduled sampling feed back)."""
        fed = {u for u, _, s in self.graph.nx().edges(data="shift")
               if s.kind == ShiftKind.REL and s.k < 0}
        return {l.target.var: l.output.var for l in self.graph.losses
                if l.fn == LossFn.XENT and l.target.var in fed}

    def schedule(self, lengths: dict, forest=None) -> list:
        if forest is not None:       # a new forest each batch: no cache
            return _schedule(self.graph, lengths, forest)
        key = tuple(sorted(lengths.items()))
        return self._schedules.get(key, lambda: _schedule(self.graph, dict(key)))

    def outside_value(self, v, B):
        """What a read before the first step gives without carry or init: zeros, or for a
        class target fed back, its start token (<s>) when the data has one."""
        if v.is_ids:
            return np.full(B, self.start_ids.get(v.name, -1), dtype=np.int64)
        return np.zeros((B, self.sizes[v.name]), dtype=self.dtype)


def _schedule(graph: FoldedGraph, lengths: dict, forest=None) -> list:
    """The hidden nodes of the unfolded DAG in a topological order."""
    g = unfold(graph, lengths, forest)
    hubs = _ends_wait(graph, g, lengths)
    # a reduction's node (unfold.Reduced) is a hub too: first as soon as it can, so its
    # readers come exactly when they would reading what it reads directly
    hubs |= {n for n, role in g.nodes(data="role") if role == "reduction"}
    roles = {v.name: v.role for v in graph.vars}
    order = {v.name: i for i, v in enumerate(graph.vars)}

    def key(n):         # a hub (no variable's node) first as soon as it can: it waits
        return ((-1, -1), -1) if n in hubs else (step_key(n[1]), order[n[0]])
    return [n for n in nx.lexicographical_topological_sort(g, key=key)
            if n not in hubs and roles[n[0]] == "hidden"]


def _ends_wait(graph: FoldedGraph, g, lengths: dict) -> set:
    """A read of x[end] waits for every step of x. The unfolded DAG reads the array's
    last step, but with per-example lengths `end` is each example's own last step, any
    of them: a recurrence backward in time computes its last step first, and its reader
    would otherwise run before the other steps exist. The schedule is the same for every
    batch of these lengths, padded or not. One hub node per reader and x (x's steps ->
    hub -> the reader's nodes: T + N edges); a hub that would close a cycle (x's steps
    read the reader) is left out. Returns the hubs, which are no variable's nodes."""
    hubs = set()
    for v in graph.hidden():
        ends = {r.var for e in v.exprs for r in refs(e) if r.shift.kind == ShiftKind.END} - {v.name}
        mine = [n for n in g if n[0] == v.name] if ends else []
        for x in sorted(ends):
            steps = [(x, s) for s in range(lengths.get(graph.var(x).index, 0))
                     if (x, s) in g]
            hub = ("end of", x, v.name)
            g.add_edges_from([(a, hub) for a in steps] + [(hub, b) for b in mine])
            if nx.is_directed_acyclic_graph(g):
                hubs.add(hub)
            else:
                g.remove_node(hub)
    return hubs


def _make_executor(model, name):
    if name == "interp":
        from .interp import Interpreter
        return Interpreter(model)
    if name == "compiled":
        from .compile import CompiledExecutor
        return CompiledExecutor(model)
    raise UsageError(f"executor must be 'interp' or 'compiled', not '{name}'")


# ---------------------------------------------------------------------- initialisers
def init_params(graph, shapes, dtype, seed, default=None) -> dict:
    """Initial values, in the spec's order, from one seeded generator."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in graph.params:
        shape = shapes.get(p.name, ())
        if not shape:
            continue
        how = p.init or default or (("xavier",) if len(shape) >= 2 else ("zeros",))
        out[p.name] = initialise(tuple(how), shape, rng).astype(dtype)
    return out


def initialise(how: tuple, shape: tuple, rng) -> np.ndarray:
    name, *args = how
    if name == "zeros":
        return np.zeros(shape)
    if name == "ones":
        return np.ones(shape)
    if name == "normal":
        return rng.normal(0.0, args[0], shape)
    if name == "uniform":
        return rng.uniform(-args[0], args[0], shape)
    if len(shape) == 1:
        return np.zeros(shape)
    fan_out, fan_in = shape[-2], shape[-1]
    if name == "orthogonal":
        flat = rng.normal(size=(int(np.prod(shape[:-1])), fan_in))
        q, r = np.linalg.qr(flat if flat.shape[0] >= fan_in else flat.T)
        q = q * np.sign(np.diag(r))
        q = q if flat.shape[0] >= fan_in else q.T
        return q.reshape(shape)
    a = np.sqrt(6.0 / (fan_in + fan_out))        # xavier (Glorot) uniform
    return rng.uniform(-a, a, shape)


def load(path: str, dims=None, dtype="float32", seed=0, executor="interp", **kw) -> Model:
    """read_spec + Model in one call."""
    return Model(read_spec(path, dims=dims), dims=dims, dtype=dtype, seed=seed,
                 executor=executor, **kw)
