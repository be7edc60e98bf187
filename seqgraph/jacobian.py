"""Seeing inside a recurrence: the Jacobians dh_t/dh_k of its state across time.

For every recurrent state variable (a variable of a recurrence that the recurrence reads
with a delay: `h` of an Elman net, `h` and `c` of an LSTM written as equations) and every
pair of steps (t, k), the Jacobian J = dh_t/dh_k is computed exactly, per example, by
reverse mode on the reference interpreter's tape: the output node (h, t) is seeded with
the unit vector e_i, and row i of J is the gradient read at node (h, k). `jacobians` does
it on the run's own batch, one backward per component i and step t (n*T backwards of
O(T) each: the reference); `jacobians_tiled`, which `measure` uses, on the batch repeated
once per row (t, i), every copy seeded with its own e_i at its own step, so that one
backward gives many rows (a few backwards in all; the same numbers to rounding, tests/
test_jacobian.py compares them). That is the total derivative of h_t
with respect to the value of h_k with everything computed from it recomputed: every
later step, and for a state of several variables (an LSTM's h and c) the values of step k
that read it. So dc_t/dc_k of an LSTM moves h_k = o_k * tanh(c_k) with c_k, while dh_t/dh_k
holds c_k fixed (h_k is computed from c_k, not the other way); a value of step k that
h_k does not feed is held fixed (tests/test_jacobian.py checks both against finite
differences).

Norms are summarised by distance d = |t - k| (1..T-1): spectral and Frobenius norm, mean,
std, min and max over the examples and every pair (t, k) at that distance. Beside them
sits the textbook bound of Deep Learning section 10.7: for h[t] = f(U @ h[t-1] + ...),
||dh_t/dh_k|| <= (beta_W beta_h)^d with beta_W = ||U||_2 and beta_h = max |f'|
(1 for tanh and relu, 1/4 for sigmoid, 1 for no nonlinearity), and the spectral radius of
every recurrent matrix (a parameter multiplying a delayed state, `U @ h[t-1]`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from . import given
from .errors import DataError, UsageError
from .graph.folded import Apply, ParamRef, Ref, ShiftKind, refs, walk
from .ops import Op

BETA_H = {Op.TANH: 1.0, Op.SIGMOID: 0.25, Op.RELU: 1.0, None: 1.0}
NONLINEARITY = {Op.TANH: "tanh", Op.SIGMOID: "sigmoid", Op.RELU: "relu", None: "linear"}

DEFAULT_STEPS = 20          # T of a batch when --steps is not given


# ------------------------------------------------------------------------ structure
@dataclass
class State:
    """A recurrent state variable and what the equations say about its recurrence."""
    name: str
    recurrence: tuple          # every variable of its recurrence
    index: str
    direction: int             # -1 forward in time (reads h[t-1]), +1 backward
    matrices: list             # names of parameters P in `P @ name[t-1]` (any equation)
    bound_matrix: str | None = None    # U when the equation is f(U @ h[t-1] + ...)
    nonlinearity: str | None = None
    beta_h: float | None = None
    bound_note: str = ""


def recurrent_states(model) -> list[State]:
    """Every recurrent state of every sequence recurrence, in the spec's order."""
    g = model.graph
    edges = list(g.nx().edges(data="shift"))
    kinds = g.index_kinds
    out = []
    for rec in model.checked.recurrences:
        if rec.index is None or kinds.get(rec.index) != "seq":
            continue               # tree recurrences: no distance in time
        members = set(rec.vars)
        delayed = {u for u, v, s in edges
                   if u in members and v in members and s.kind == ShiftKind.REL and s.k != 0}
        for name in rec.vars:
            if name not in delayed:
                continue
            st = State(name, rec.vars, rec.index, rec.direction,
                       _matrices(g, rec, name))
            _textbook_form(g, rec, st)
            out.append(st)
    return out


def _matrices(g, rec, state) -> list:
    """Parameters P with `P @ state[t-1]` (or t+1 backward) in the recurrence."""
    out = []
    for v in rec.vars:
        for case in g.var(v).cases:
            for e in walk(case.expr):
                if _is_recurrent_matmul(e, state, rec.direction) and \
                        e.args[0].name not in out:
                    out.append(e.args[0].name)
    return out


def _is_recurrent_matmul(e, state, direction) -> bool:
    return (isinstance(e, Apply) and e.op is Op.MATMUL
            and isinstance(e.args[0], ParamRef) and isinstance(e.args[1], Ref)
            and e.args[1].var == state and e.args[1].shift.kind == ShiftKind.REL
            and e.args[1].shift.k != 0 and e.args[1].shift.direction == direction)


def _terms(e):
    """The terms of a sum (signs dropped: norms do not see them)."""
    if isinstance(e, Apply) and e.op in (Op.ADD, Op.SUB):
        return [t for a in e.args for t in _terms(a)]
    return [e]


def _textbook_form(g, rec, st: State) -> None:
    """Fill the bound fields when st's equation is f(U @ h[t-1] + terms without the
    recurrence), f elementwise (tanh, sigmoid, relu) or absent; else say why not."""
    v = g.var(st.name)
    if len(v.cases) != 1:
        st.bound_note = "several defining cases"
        return
    expr = v.cases[0].expr
    inner_refs = [r for r in refs(expr) if r.var in rec.vars]
    others = sorted({r.var for r in inner_refs} - {st.name})
    if others or len(inner_refs) != 1:
        why = f"it reads {', '.join(others)} of its recurrence" if others else \
            f"it reads {st.name} at {len(inner_refs)} places " \
            f"({', '.join(sorted({r.shift.show('t') for r in inner_refs}))})"
        st.bound_note = f"'{st.name}' is not of the form f(U @ {st.name}[t-1] + ...): {why}"
        return
    r = inner_refs[0]
    if abs(r.shift.k) != 1:
        st.bound_note = f"a delay of {abs(r.shift.k)} steps, not 1"
        return
    f = None
    if isinstance(expr, Apply) and expr.op in BETA_H:
        f, expr = expr.op, expr.args[0]
    hits = [t for t in _terms(expr) if _is_recurrent_matmul(t, st.name, st.direction)]
    if len(hits) != 1:
        st.bound_note = f"'{st.name}' is not of the form f(U @ {st.name}[t-1] + ...)"
        return
    st.bound_matrix = hits[0].args[0].name
    st.nonlinearity = NONLINEARITY[f]
    st.beta_h = BETA_H[f]


# ------------------------------------------------------------------------ Jacobians
def jacobians(model, state: State):
    """Yield ((t, k), J) with J of shape [B, n, n], J[b] = d state_t / d state_k of
    example b, for every pair with k before t in the recurrence's direction. Run the
    model first (`model.run(...)` with the interpreter): the tape of that run is read.
    One backward per row (t, i): the reference `jacobians_tiled` is checked against."""
    ex = model.executor
    if not hasattr(ex, "tape"):
        raise UsageError("Jacobians need the interpreter (executor='interp') after a run")
    tape, nodes, B = ex.tape, ex.nodes, ex.B
    T = ex.lengths[state.index]
    n = model.sizes[state.name]
    for t in range(T):
        ks = list(range(t)) if state.direction < 0 else list(range(t + 1, T))
        if not ks:
            continue
        out = nodes[(state.name, t)]
        J = {k: np.zeros((B, n, n), dtype=np.float64) for k in ks}
        for i in range(n):
            seed = np.zeros((B, n), dtype=model.dtype)
            seed[:, i] = 1.0
            grads = tape.backward({out: seed})
            for k in ks:
                gk = grads[nodes[(state.name, k)]]
                if gk is not None:
                    J[k][:, i, :] = gk
        for k in ks:
            yield (t, k), J[k]


MEMORY = 512 * 2**20     # bytes, about, that the tiled batch of `tiled_rows` may take


def jacobians_tiled(model, state: State, inputs, targets=None, lengths=None,
                    memory: int | None = None):
    """The same ((t, k), J) as `jacobians`, in the same order, from a few backward
    passes (`tiled_rows`) instead of one per row. Run the model on the same batch
    first, as for `jacobians`."""
    ex = _tape_of(model)
    T = ex.lengths[state.index]
    before = (lambda t: range(t)) if state.direction < 0 else (lambda t: range(t + 1, T))
    ts = [t for t in range(T) if before(t)]
    outs = [((state.name, t), [(state.name, k) for k in before(t)]) for t in ts]
    for j, J in tiled_rows(model, outs, inputs, targets, lengths, memory):
        yield from (((ts[j], k), Jk) for (_, k), Jk in J.items())


def tiled_rows(model, outs, inputs, targets=None, lengths=None, memory=None):
    """(j, {source: J [B, n_out, n_source]}) for every (out, sources) of `outs`, j in
    order: nodes (name, step) of the last run, J[b] = d out / d source of example b (along
    every path from the source; the other values of its step held fixed).

    The batch is repeated C times (copy c is rows c*B .. c*B+B-1) and run once, on an
    interpreter of its own (the model's keeps its tape); every copy stands for one row
    (j, i): seeded with e_i at out j, its gradient at a source is row i of that source's
    J. No op mixes the rows of two examples, so one backward gives C rows, of one out or
    of several, where the reference (`jacobians`) takes one backward per row. C is every
    row, or as many copies as `memory` bytes (MEMORY if None) hold, estimated from the
    last run's tape, at least one."""
    from .interp import Interpreter
    ex, size = _tape_of(model), model.sizes
    B = ex.B
    rows = [(j, i) for j, (out, _) in enumerate(outs) for i in range(size[out[0]])]
    if not rows:
        return
    C = max(1, min(len(rows), (memory or MEMORY) // (2 * _tape_bytes(ex) + 1)))
    tiled = Interpreter(model)
    ins, tgs, _, lens = given.prepare(model, _tile(inputs, C), _tile(targets, C), None,
                                      _tile(lengths, C), False, 1.0)
    tiled.run(ins, tgs, lengths=lens)
    nodes = tiled.nodes
    wanted = {nodes[a] for _, sources in outs for a in sources}
    done: dict = {}                   # j -> {source: J}, rows filled as the chunks come
    for start in range(0, len(rows), C):
        chunk = rows[start:start + C]
        runs = _runs(chunk)
        seeds: dict = {}
        for j, c0, c1 in runs:        # copy c0 + r seeded with e_(i0 + r) at out j
            out = outs[j][0]
            if nodes[out] not in seeds:   # (one array for outs that are one value)
                seeds[nodes[out]] = np.zeros((C, B, size[out[0]]), model.dtype)
            seeds[nodes[out]][np.arange(c0, c1), :, np.arange(c1 - c0) + chunk[c0][1]] = 1.0
        grads = tiled.tape.backward({i: v.reshape(C * B, -1) for i, v in seeds.items()},
                                    want=wanted)
        for j, c0, c1 in runs:
            (name, _), sources = outs[j]
            i0, i1 = chunk[c0][1], chunk[c1 - 1][1] + 1
            J = done.setdefault(j, {a: np.zeros((B, size[name], size[a[0]]))
                                    for a in sources})
            for a, Ja in J.items():
                g = grads[nodes[a]]
                if g is not None:         # copy c0 + r, example b: J[b, i0 + r]
                    Ja[:, i0:i1] = g[c0 * B:c1 * B].reshape(c1 - c0, B, -1).swapaxes(0, 1)
            if i1 == size[name]:      # every row of out j
                yield j, done.pop(j)


def _tape_of(model):
    """The interpreter whose last run is read."""
    ex = model.executor
    if not hasattr(ex, "tape"):
        raise UsageError("Jacobians need the interpreter (executor='interp') after a run")
    return ex


def _runs(chunk) -> list:
    """(j, c0, c1): the copies c0 .. c1-1 of a chunk of rows (j, i) that have one j
    (rows come j by j, i rising)."""
    out = []
    for c, (j, _) in enumerate(chunk):
        if out and out[-1][0] == j:
            out[-1][2] = c + 1
        else:
            out.append([j, c, c + 1])
    return out


def _tile(data, C):
    """Every array of a batch (or a [B] of lengths) C times along the batch axis; a
    whole-batch length stays as it is."""
    if data is None:
        return None
    return {k: v if np.ndim(v) == 0 else np.concatenate([np.asarray(v)] * C)
            for k, v in data.items()}


def _tape_bytes(ex) -> int:
    """What the values of the last run take, parameters left out: about what a copy of
    the batch takes on the tiled tape (the gradients kept, one per step of the state,
    and those in flight are a fraction of it: 2 times this is allowed a copy)."""
    params = set(ex.pids.values())
    return sum(np.asarray(v).nbytes for j, v in enumerate(ex.tape.vals) if j not in params)


def _stats(xs) -> dict:
    a = np.asarray(xs, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "max": float(a.max())}


@dataclass
class StateReport:
    state: State
    size: int
    distances: list = field(default_factory=list)      # dicts, d = 1..T-1
    matrices: list = field(default_factory=list)       # dicts: name, norm, radius
    beta_w: float | None = None

    def bound(self, d: int) -> float | None:
        if self.beta_w is None:
            return None
        return float((self.beta_w * self.state.beta_h) ** d)

    def to_json(self) -> dict:
        s = self.state
        bound = None
        if self.beta_w is not None:
            bound = {"matrix": s.bound_matrix, "nonlinearity": s.nonlinearity,
                     "beta_W": self.beta_w, "beta_h": s.beta_h,
                     "values": [self.bound(d["distance"]) for d in self.distances]}
        return {"name": s.name, "size": self.size, "recurrence": list(s.recurrence),
                "index": s.index,
                "direction": "forward" if s.direction < 0 else "backward",
                "recurrent_matrices": self.matrices, "bound": bound,
                "bound_note": s.bound_note if bound is None else "",
                "distances": self.distances}


def _matrix_info(model, name) -> dict:
    P = np.asarray(model.params[name], dtype=np.float64)
    info = {"name": name, "shape": list(P.shape),
            "spectral_norm": float(np.linalg.norm(P, 2)), "spectral_radius": None}
    if P.ndim == 2 and P.shape[0] == P.shape[1]:
        info["spectral_radius"] = float(np.max(np.abs(np.linalg.eigvals(P))))
    return info


def measure(model, inputs, targets=None, lengths=None, states=None) -> list[StateReport]:
    """Run the model on one batch and measure every recurrent state's Jacobians."""
    model.run(inputs, targets, lengths=lengths)
    out = []
    for st in (states if states is not None else recurrent_states(model)):
        rep = StateReport(st, model.sizes[st.name])
        rep.matrices = [_matrix_info(model, p) for p in st.matrices]
        if st.bound_matrix is not None:
            rep.beta_w = next(m["spectral_norm"] for m in rep.matrices
                              if m["name"] == st.bound_matrix)
        spec, frob, pairs = {}, {}, {}
        for t, ks, Js in _by_step(jacobians_tiled(model, st, inputs, targets, lengths)):
            norms2 = np.linalg.norm(Js, 2, axis=(-2, -1))       # one SVD call a step
            normsf = np.linalg.norm(Js, "fro", axis=(-2, -1))
            for k, n2, nf in zip(ks, norms2, normsf, strict=True):
                d = abs(t - k)
                spec.setdefault(d, []).extend(n2)
                frob.setdefault(d, []).extend(nf)
                pairs[d] = pairs.get(d, 0) + 1
        for d in sorted(spec):
            rep.distances.append({"distance": d, "pairs": pairs[d],
                                  "samples": len(spec[d]),
                                  "spectral": _stats(spec[d]),
                                  "frobenius": _stats(frob[d])})
        out.append(rep)
    return out


def _by_step(pairs):
    """((t, k), J) as `jacobians` yields them, t by t: (t, [k, ...], J stacked
    [len(ks), B, n, n])."""
    t, ks, Js = None, [], []
    for (t1, k), J in pairs:
        if ks and t1 != t:
            yield t, ks, np.stack(Js)
            ks, Js = [], []
        t = t1
        ks.append(k)
        Js.append(J)
    if ks:
        yield t, ks, np.stack(Js)


def load_checkpoint(model, path: str) -> None:
    """Copy a `.npz` of parameter arrays (named as in the spec) into model.params;
    keys starting with `__` (a training checkpoint's metadata) are ignored."""
    from .train.checkpoint import DAMAGED, not_numbers
    try:
        with np.load(path, allow_pickle=False) as z:    # (a member is read when asked)
            arrays = {k: z[k] for k in z.files if not k.startswith("__")}
    except DAMAGED as e:   # an object array, a bad CRC: said as for a training checkpoint
        raise UsageError(f"{path}: cannot read the checkpoint ({e})") from None
    for key, arr in arrays.items():
        if key not in model.params:
            raise UsageError(f"{path}: the checkpoint has parameter '{key}', which "
                             "the spec does not declare")
        if arr.shape != model.params[key].shape:
            raise UsageError(f"{path}: parameter '{key}' has shape "
                             f"{list(arr.shape)} in the checkpoint but "
                             f"{list(model.params[key].shape)} in the spec")
        not_numbers(f"parameter '{key}'", arr, path)
        model.params[key][...] = arr.astype(model.dtype)


# ------------------------------------------------------------------------ plot
def plot(reports: list[StateReport], path: str, title: str = "") -> None:
    """Spectral norm against distance (log scale), one line per state with its
    min-max band, the textbook bound dashed in the same colour."""
    from .train.metrics import figure
    fig, ax = figure((7, 4.5))

    def pos(x):             # zeros cannot sit on a log scale: leave a gap
        return x if x > 0 else np.nan
    for i, rep in enumerate(reports):
        color = f"C{i}"
        ds = [d["distance"] for d in rep.distances]
        if not ds:
            continue
        mean = [pos(d["spectral"]["mean"]) for d in rep.distances]
        lo = [pos(d["spectral"]["min"]) for d in rep.distances]
        hi = [pos(d["spectral"]["max"]) for d in rep.distances]
        ax.plot(ds, mean, "o-", color=color, ms=3,
                label=f"||d{rep.state.name}_t/d{rep.state.name}_k||_2")
        ax.fill_between(ds, lo, hi, color=color, alpha=0.15)
        if rep.beta_w is not None:
            b = rep.beta_w * rep.state.beta_h
            ax.plot(ds, [pos(rep.bound(d)) for d in ds], "--", color=color,
                    label=f"bound ({b:.3g})^d: ||{rep.state.bound_matrix}||_2="
                          f"{rep.beta_w:.3g}, {rep.state.nonlinearity}' <= "
                          f"{rep.state.beta_h:g}")
    ax.set_yscale("log")
    _finish(fig, ax, path, title)


# ------------------------------------------------------------------------ parameters
@dataclass
class Params:
    """Where the measured parameters come from: a checkpoint written by `seqgraph
    train` (checked against the spec, with its dims and vocabulary), a plain `.npz` of
    parameter arrays (any subset, named as in the spec), or None: the spec's
    initialisation with the given seed."""
    path: str | None = None
    ckpt: object = None         # train.checkpoint.Checkpoint, for seqgraph's own files
    seed: int = 0

    @property
    def meta(self) -> dict:
        return self.ckpt.meta if self.ckpt is not None else {}

    @property
    def step(self) -> int | None:
        pos = (self.meta.get("state") or {}).get("position") or {}
        return pos.get("step")

    @property
    def label(self) -> str:
        if self.path is None:
            return f"initialisation (seed {self.seed})"
        from pathlib import Path
        p = Path(self.path)
        name = p.parent.name if p.name == "checkpoint.npz" and p.parent.name else p.name
        return name if self.step is None else f"{name} (step {self.step})"

    def dims(self, open_dims) -> dict:
        """The sizes its model is built with (of those the spec leaves open, and those
        `--dim` gave its run: train/checkpoint.model_dims); a plain .npz gives none."""
        if self.ckpt is None:
            return {}
        from .train import checkpoint as ck
        return ck.model_dims(self.ckpt, open_dims)

    def overrides(self) -> dict:
        """The sizes `--dim` gave its run, over the spec's own declared ones."""
        return dict(self.meta.get("dim_overrides") or {})

    def vocab(self):
        if self.ckpt is None or "vocab" not in self.meta:
            return None
        from .train.loaders import Vocab
        return Vocab.from_json(self.meta["vocab"])

    def apply(self, model) -> None:
        """Copy the parameters into the model (a float64 copy of what was trained)."""
        if self.ckpt is not None:
            from .train import checkpoint as ck
            ck.restore_params(self.ckpt, model.params)
        elif self.path is not None:
            load_checkpoint(model, self.path)


def open_params(path: str | None, seed: int = 0) -> Params:
    """A checkpoint file or run directory (its checkpoint.npz); None: initialisation."""
    if path is None:
        return Params(None, None, seed)
    from pathlib import Path

    from .train import checkpoint as ck
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoint.npz"
    if not p.is_file():
        raise UsageError(f"{p}: no such checkpoint")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z[ck.META])) if ck.META in z.files else {}
    except ck.DAMAGED:
        return Params(str(p), ck.load(p), seed)   # says why, as eval does
    if isinstance(meta, dict) and meta.get("format") == ck.FORMAT:
        return Params(str(p), ck.load(p), seed)
    return Params(str(p), None, seed)


# ------------------------------------------------------------------------ real batches
@dataclass
class TextData:
    """A token stream for measuring: ids in the vocabulary, and how they bind."""
    ids: np.ndarray
    vocab: object
    binding: object
    describe: str


@dataclass
class ExampleData:
    """Examples for measuring (a tagger's sentences, a classifier's texts): B of them
    drawn at random among those of T steps or more, each cut to its first T."""
    examples: object         # batches.Examples
    spec_inputs: list        # the model's inputs (Var): the batch's other arrays are targets
    vocab: object
    binding: object
    describe: str


def text_data(spec, data: str | None, vocab=None, dims: dict | None = None):
    """The token stream or the examples of `--data` (a loader call such as
    chars("f.txt"), or a path read like the training data), else the spec's own
    train-block data, else None (no data: random ids). `vocab` is a checkpoint's (the ids
    the model was trained with); without one the vocabulary is built from the data, as
    `seqgraph train` does."""
    from pathlib import Path

    from .train.binding import bind
    from .train.config import make_config
    from .train.loaders import make_loader
    cfg = make_config(spec.train, {}, Path(spec.path).resolve().parent)
    if data is None:
        if cfg.data is None:
            return None
        loader = make_loader(cfg.data, cfg.base)
    else:
        from .train.loaders import data_call
        loader = make_loader(data_call(data, cfg), Path.cwd())
    if not hasattr(loader, "tokens"):
        return example_data(spec, loader, cfg, vocab, dims or {})
    tokens = loader.tokens()
    if vocab is not None and vocab.kind != loader.kind:
        raise UsageError(f"the data reads {loader.kind} but the checkpoint's model was "
                         f"trained on {vocab.kind}")
    vocab = vocab or loader.vocab(tokens)
    ids = loader.encode(vocab, tokens)
    binding = bind(spec.graph, len(vocab), loader.kind, str(loader.path), dims or {})
    return TextData(ids, vocab, binding, f"{loader.kind}({Path(loader.path).name!r})")


def example_data(spec, loader, cfg, vocab, dims: dict) -> ExampleData:
    """The examples of an example loader, encoded as `seqgraph train` encodes them."""
    from pathlib import Path

    from .train.binding import bind_examples, fit_loader
    from .train.data import encode_examples
    if loader.kind in ("treepairs", "trees"):
        raise UsageError(f"{loader.describe()}: jacobian measures sequences; these are "
                         f"trees")
    if vocab is not None and getattr(vocab, "target", None) is None:
        raise UsageError(f"{loader.describe()}: these are {loader.kind} examples, but the "
                         f"checkpoint's model was trained on a token stream "
                         f"({vocab.kind}); give --data {vocab.kind}(\"...\")")
    loader = fit_loader(spec.graph, loader, dims)
    raw, file = loader.read(), str(loader.path)
    vocab = vocab or loader.vocab(raw)
    binding = bind_examples(spec.graph, vocab, loader.kind, file, dims)
    ex = encode_examples(spec.graph, loader, raw, vocab, binding, file, cfg.bptt)
    return ExampleData(ex, spec.graph.inputs(), vocab, binding,
                       f"{loader.kind}({Path(file).name!r})")


def example_batch(data: ExampleData, B: int, T: int | None, rng) -> tuple[dict, dict, int]:
    """B examples of T steps or more, at random, cut to their first T steps (every
    sequence the same length: no padding, whose steps a Jacobian would mix in); T None:
    20, or the longest example's steps when it has fewer. Returns the inputs, the
    targets and T."""
    from .train.batches import Examples
    ex = data.examples
    if T is None:
        most = max((min(ex.lengths(i).values(), default=0) for i in range(len(ex))),
                   default=0)
        T = min(DEFAULT_STEPS, max(most, 2))
    long = [i for i in range(len(ex)) if min(ex.lengths(i).values(), default=T) >= T]
    if not long:
        most = max(min(ex.lengths(i).values(), default=0) for i in range(len(ex)))
        raise DataError(f"no example has {T} steps in each of its sequences (the most is "
                        f"{most}): give --steps {most} or fewer", file=data.describe)
    rows = rng.choice(long, min(B, len(long)), replace=False)
    cut = {v: [a[:T] if ex.index[v] is not None else a for a in items]
           for v, items in ex.fields.items()}
    b = Examples(cut, ex.index, ex.ids, ex.lines, ex.file, ex.extra).batch(rows)
    inputs = {v.name for v in data.spec_inputs}
    return ({k: v for k, v in b.inputs.items() if k in inputs},
            {k: v for k, v in b.inputs.items() if k not in inputs}, len(rows), T)


def text_batch(data: TextData, B: int, T: int, rng) -> tuple[dict, dict]:
    """B windows of T tokens at random places in the stream: inputs x and next-token
    targets y[t] = x[t+1], each window starting from the zero state."""
    from .train.data import feeds
    n = len(data.ids)
    if n < T + 2:
        raise DataError(f"{n} tokens are too few for windows of {T} steps",
                        file=data.describe)
    starts = rng.integers(0, n - T, B)
    x = np.stack([data.ids[s:s + T] for s in starts])
    y = np.stack([data.ids[s + 1:s + T + 1] for s in starts])
    return feeds(data.binding, x, y)


@dataclass
class Setup:
    """Models built for one measurement: one per parameter source, one shared batch."""
    spec: object
    sources: list            # Params
    models: list             # Model, float64, interpreter
    inputs: dict
    targets: dict
    lengths: dict | None
    batch_from: str          # what the batch is: 'random ids' or the loader
    dims: dict
    steps: int = DEFAULT_STEPS   # T, the batch's steps


def prepare(spec, sources: list, data: str | None = None, given: dict | None = None,
            steps: int | None = None, batch: int = 4, seed: int = 0,
            use_train_data: bool = True) -> Setup:
    """Models for every parameter source (same dims and vocabulary) and one batch of
    `steps` steps (None: 20, or fewer for examples that have fewer): real text when
    `data` is given or the spec's train block names data, else random."""
    from .gradcheck import random_batch
    from .model import Model
    from .train import checkpoint as ck
    tree = next((i for i, k in spec.graph.indexes if k == "tree"), None)
    both = spec.graph.tree_and_sequence
    if both:                      # said first: the data a tree model reads is no text
        raise UsageError(f"{spec.path}: jacobian measures sequence models on a batch of "
                         f"sequences; model '{spec.graph.name}' also runs over a tree "
                         f"('{both[0]}') beside its sequence ('{both[1]}'), which it does "
                         f"not measure")
    if tree is not None:
        raise UsageError(f"{spec.path}: jacobian measures how far back in time a sequence "
                         f"recurrence remembers; model '{spec.graph.name}' runs over a tree "
                         f"('{tree}'), whose recurrence has no distance in time")
    given = dict(given or {})
    open_dims = spec.unbound_dims()
    vocabs = [v for v in (s.vocab() for s in sources) if v is not None]
    if any(v != vocabs[0] for v in vocabs[1:]):
        raise UsageError("the checkpoints were trained with different vocabularies; "
                         "their Jacobians cannot be measured on the same batch")
    vocab = vocabs[0] if vocabs else None
    for s in sources:             # another model's checkpoint: said before its data is read
        if s.ckpt is not None:
            ck.check_resume(s.ckpt, spec, {**s.overrides(), **given},
                            fix="give the checkpoint of a run of this spec")
    dims = {}
    for s in reversed(sources):
        dims.update(s.dims(open_dims))
    td = None
    if data is not None or use_train_data:
        td = text_data(spec, data, vocab, {**dims, **given})
    if td is not None:
        dims.update(td.binding.dims)
    dims = {**{n: 5 for n in open_dims}, **dims, **given}
    models = []
    for s in sources:
        m = Model(spec, dims=dims, dtype="float64", seed=s.seed, executor="interp")
        s.apply(m)
        models.append(m)
    rng = np.random.default_rng(seed)
    if isinstance(td, ExampleData):
        inputs, targets, n, steps = example_batch(td, batch, steps, rng)
        lengths, what = None, f"{n} examples of {td.describe}, cut to {steps} steps"
    elif td is not None:
        steps = steps or DEFAULT_STEPS
        inputs, targets = text_batch(td, batch, steps, rng)
        lengths, what = None, f"{batch} windows of {steps} tokens of {td.describe}"
    else:
        steps = steps or DEFAULT_STEPS
        inputs, targets, lengths, _ = random_batch(models[0], rng, B=batch, T=steps)
        what = f"{batch} random sequences of {steps} steps"
    return Setup(spec, list(sources), models, inputs, targets, lengths, what,
                 {k: int(v) for k, v in models[0].dims.items()
                  if isinstance(v, (int, np.integer))}, steps)


# ------------------------------------------------------------------------ edge norms
def _cross_edges(model, lengths) -> dict:
    """{(v, t): [(u, k), ...]}: the edges of the unfolded graph from a hidden variable at
    one step to a hidden variable at another step of the same index."""
    from .graph.unfold import direct, unfold
    dag = direct(unfold(model.graph, lengths))     # a[1] reads e[3] through a softmax
    hidden = {v.name: v.index for v in model.graph.hidden() if v.index is not None}
    into: dict = {}
    for a, b in dag.edges:
        if a[0] in hidden and b[0] in hidden and hidden[a[0]] == hidden[b[0]] \
                and isinstance(a[1], int) and isinstance(b[1], int) and a[1] != b[1]:
            into.setdefault(b, []).append(a)
    return into


def edge_norms(model, inputs, targets=None, lengths=None, first: int = 0):
    """Norms for an overlay of the unfolded graph, from one run of the model.

    edges: {((u, k), (v, t)): stats} for every edge of the unfolded graph from a hidden
    variable at step k to one at another step t of the same index (h[t-1] -> h[t],
    h[t-1] -> i[t], c[t-1] -> c[t], h[t-3] -> h[t]): the spectral norm of dv_t/du_k per
    example (along every path from u_k to v_t: the values of step k that u_k does not
    feed held fixed, as for `jacobians`), summarised over the batch.
    states: {(h, t): stats} for every recurrent state h: the norm of dh_t/dh_s, s the
    first measured step of its recurrence (the last one for a backward recurrence), so
    a row of the graph shows how far a gradient from step t reaches back.
    Steps before `first` are run (a warm-up from the zero state) but not measured; the
    keys count steps from `first`."""
    model.run(inputs, targets, lengths=lengths)
    ex = _tape_of(model)

    def shift(node):
        return (node[0], node[1] - first)
    outs = []                         # (out, sources), every J by one tiled_rows
    for b, srcs in _cross_edges(model, ex.lengths).items():
        srcs = [a for a in srcs if a[1] >= first]
        if b[1] >= first and srcs:
            outs.append((b, srcs))
    edges_end = len(outs)
    for st in recurrent_states(model):
        T = ex.lengths[st.index]
        s = first if st.direction < 0 else T - 1
        outs += [((st.name, t), [(st.name, s)]) for t in range(first, T) if t != s]
    rows = dict(tiled_rows(model, outs, inputs, targets, lengths))
    edges, states = {}, {}
    for j, (b, srcs) in enumerate(outs):
        for a in srcs:
            stats = _stats(np.linalg.norm(rows[j][a], 2, axis=(1, 2)))
            if j < edges_end:
                edges[(shift(a), shift(b))] = stats
            else:
                states[shift(b)] = {**stats, "from": a[1] - first}
    return edges, states


# ------------------------------------------------------------------------ overlay
# a diverging scale on log10 of the norm: blue (vanishing) - grey (1) - red (exploding)
SCALE = [(-1.0, (8, 48, 107)), (-0.5, (49, 130, 189)), (0.0, (110, 110, 110)),
         (0.5, (230, 120, 30)), (1.0, (165, 15, 21))]


def scale_range(values) -> float:
    """R: the scale runs from 10^-R to 10^R, R a whole number of decades (1 to 8)."""
    logs = [abs(np.log10(v)) for v in values if v > 0 and np.isfinite(v)]
    return float(min(8, max(1, int(np.ceil(max(logs, default=1) - 1e-9)))))


def color(value: float, R: float) -> str:
    """The colour of a norm on the scale 10^-R .. 10^R (clipped at both ends)."""
    x = -1.0 if value <= 0 else float(np.clip(np.log10(value) / R, -1, 1))
    for (x0, c0), (x1, c1) in pairwise(SCALE):
        if x <= x1:
            w = (x - x0) / (x1 - x0)
            rgb = [round(a + w * (b - a)) for a, b in zip(c0, c1, strict=True)]
            return "#" + "".join(f"{c:02x}" for c in rgb)
    return "#" + "".join(f"{c:02x}" for c in SCALE[-1][1])


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if 0.01 <= abs(v) < 1000:
        return f"{v:.2g}" if abs(v) < 10 else f"{v:.0f}"
    m, e = f"{v:.1e}".split("e")
    return f"{m}e{int(e)}"


def legend_html(R: float, notes: list) -> str:
    """A colour bar: one cell per half decade (per decade beyond 2), labelled."""
    step = 0.5 if R <= 2 else 1.0
    exps = np.arange(-R, R + step / 2, step)
    cells = "".join(f'<TD BGCOLOR="{color(10.0 ** e, R)}" WIDTH="34" HEIGHT="14"></TD>'
                    for e in exps)
    labels = "".join(f'<TD><FONT POINT-SIZE="9">{_fmt(10.0 ** e)}</FONT></TD>'
                     for e in exps)
    n = len(exps)
    head = "".join(f'<TR><TD COLSPAN="{n}" ALIGN="LEFT"><FONT POINT-SIZE="10">'
                   f'{_escape(note)}</FONT></TD></TR>' for note in notes)
    ends = (f'<TR><TD COLSPAN="{n // 2}" ALIGN="LEFT"><FONT POINT-SIZE="9" COLOR="'
            f'{color(10.0 ** -R, R)}">vanishing</FONT></TD><TD COLSPAN="{n - n // 2}" '
            f'ALIGN="RIGHT"><FONT POINT-SIZE="9" COLOR="{color(10.0 ** R, R)}">'
            f'exploding</FONT></TD></TR>')
    return (f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="1">{head}'
            f'<TR>{cells}</TR><TR>{labels}</TR>{ends}</TABLE>')


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def overlay_dot(spec, lengths: dict, edges: dict, states: dict | None = None,
                note: str = "") -> str:
    """The unfolded graph (render.unfolded_dot) with every measured edge coloured and
    labelled by its mean norm, every recurrent state's node outlined in the colour of
    ||dh_t/dh_1|| (its value on a second line), and a colour bar."""
    from . import render
    states = states or {}
    R = scale_range([s["mean"] for s in edges.values()]
                    + [s["mean"] for s in states.values()])
    attrs = {}
    for edge, s in edges.items():
        c = color(s["mean"], R)
        attrs[edge] = dict(color=c, fontcolor=c, penwidth="2.4", label=_fmt(s["mean"]),
                           fontsize="10")
    nodes = {}
    for (name, t), s in states.items():
        c = color(s["mean"], R)
        nodes[(name, t)] = dict(color=c, penwidth="3",
                                label=f"{name}[{t + 1}]\n|d/d{name}[{s['from'] + 1}]| "
                                      f"{_fmt(s['mean'])}")
    lines = ["edge u[k] -> v[t]: ||dv[t]/du[k]||_2 (mean over the batch)"]
    if states:
        lines.append("state h[t], 2nd line and outline: ||dh[t]/dh[1]||_2")
    lines += [ln for ln in note.split("\n") if ln]

    def legend(dot):
        dot.node("legend", shape="plaintext", label=render.Html(legend_html(R, lines)))
        dot.same_rank("legend", ["legend"], rank="sink")
    # drawn with the edges measured: a reduction's node (unfold.Reduced) has no value to
    # differentiate, so its readers are joined to what it reads (a[1] <- e[3])
    from .graph.unfold import direct, unfold
    dag = direct(unfold(getattr(spec, "graph", spec), lengths))
    return render.unfolded_dot(spec, lengths, dag=dag, edge_attrs=attrs, node_attrs=nodes,
                               decorate=legend)


def _finish(fig, ax, path, title):
    """The axes, title, grid and legend both Jacobian plots share; the PNG written."""
    ax.set_xlabel("distance d = t - k (steps)")
    ax.set_ylabel("spectral norm of the Jacobian")
    ax.set_title(title or "Jacobian norms across time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------ comparison plot
def plot_compare(runs: list, path: str, title: str = "") -> None:
    """Like `plot`, for several parameter sets measured on the same batch: one colour
    per parameter set, one line style per state, the bound dotted. The y range follows
    the measured norms (a bound far above them runs off the top)."""
    from .train.metrics import figure
    fig, ax = figure((8, 5))
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    styles = [dict(ls="-", marker="o"), dict(ls="--", marker="s"),
              dict(ls="-.", marker="^"), dict(ls=":", marker="v")]

    def pos(x):
        return x if x > 0 else np.nan
    names, seen = [], []
    for _, reports in runs:
        for rep in reports:
            if rep.state.name not in names:
                names.append(rep.state.name)
    for r, (label, reports) in enumerate(runs):
        c = colors[r % len(colors)]
        for rep in reports:
            st = styles[names.index(rep.state.name) % len(styles)]
            ds = [d["distance"] for d in rep.distances]
            if not ds:
                continue
            lo = [pos(d["spectral"]["min"]) for d in rep.distances]
            hi = [pos(d["spectral"]["max"]) for d in rep.distances]
            seen += [v for v in lo + hi if not np.isnan(v)]
            ax.plot(ds, [pos(d["spectral"]["mean"]) for d in rep.distances], color=c,
                    ms=3.5, lw=1.6, **st,
                    label=f"||d{rep.state.name}_t/d{rep.state.name}_k||_2, {label}")
            ax.fill_between(ds, lo, hi, color=c, alpha=0.12)
            if rep.beta_w is not None:
                b = rep.beta_w * rep.state.beta_h
                ax.plot(ds, [pos(rep.bound(d)) for d in ds], ":", color=c, lw=1.2,
                        label=f"bound ({b:.3g})^d, {label}")
    ax.set_yscale("log")
    if seen:
        ax.set_ylim(max(min(seen) / 3, 1e-300), max(seen) * 3)
    _finish(fig, ax, path, title)
