"""Seeing inside a recurrence: the Jacobians dh_t/dh_k of its state across time.

For every recurrent state variable (a variable of a recurrence that the recurrence reads
with a delay: `h` of an Elman net, `h` and `c` of an LSTM written as equations) and every
pair of steps (t, k), the Jacobian J = dh_t/dh_k is computed exactly, per example, by
reverse mode on the reference interpreter's tape: the output node (h, t) is seeded with
the unit vector e_i (the same for every example of the batch), one backward per component
i, and row i of J is the gradient read at node (h, k). That is the total derivative of h_t
with respect to the value of h_k with every later step recomputed; for a state of several
variables (an LSTM's h and c) it is the partial Jacobian with the other variables at step
k held fixed.

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

import numpy as np

from .errors import UsageError
from .graph.folded import Apply, ParamRef, Ref, refs, walk
from .ops import Op

BETA_H = {Op.TANH: 1.0, Op.SIGMOID: 0.25, Op.RELU: 1.0, None: 1.0}
NONLINEARITY = {Op.TANH: "tanh", Op.SIGMOID: "sigmoid", Op.RELU: "relu", None: "linear"}


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
                   if u in members and v in members and s.kind == "rel" and s.k != 0}
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
            and e.args[1].var == state and e.args[1].shift.kind == "rel"
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
    if len(inner_refs) != 1 or inner_refs[0].var != st.name:
        st.bound_note = (f"'{st.name}' is not of the form f(U @ {st.name}[t-1] + ...): "
                         "it reads other variables of its recurrence")
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
    model first (`model.run(...)` with the interpreter): the tape of that run is read."""
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
        for (t, k), J in jacobians(model, st):
            d = abs(t - k)
            spec.setdefault(d, []).extend(np.linalg.norm(J, 2, axis=(1, 2)))
            frob.setdefault(d, []).extend(np.linalg.norm(J, "fro", axis=(1, 2)))
            pairs[d] = pairs.get(d, 0) + 1
        for d in sorted(spec):
            rep.distances.append({"distance": d, "pairs": pairs[d],
                                  "samples": len(spec[d]),
                                  "spectral": _stats(spec[d]),
                                  "frobenius": _stats(frob[d])})
        out.append(rep)
    return out


def load_checkpoint(model, path: str) -> None:
    """Copy a `.npz` of parameter arrays (named as in the spec) into model.params;
    keys starting with `__` (a training checkpoint's metadata) are ignored."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot read the checkpoint ({e})") from None
    with z:
        for key in z.files:
            if key.startswith("__"):
                continue
            if key not in model.params:
                raise UsageError(f"{path}: the checkpoint has parameter '{key}', which "
                                 "the spec does not declare")
            arr = z[key]
            if arr.shape != model.params[key].shape:
                raise UsageError(f"{path}: parameter '{key}' has shape "
                                 f"{list(arr.shape)} in the checkpoint but "
                                 f"{list(model.params[key].shape)} in the spec")
            model.params[key][...] = arr.astype(model.dtype)


def checkpoint_dims(path: str) -> dict:
    """The dims a training checkpoint's `__meta__` records, if any."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "__meta__" not in z.files:
                return {}
            meta = json.loads(str(z["__meta__"]))
    except Exception:        # unreadable: load_checkpoint reports it
        return {}
    dims = meta.get("dims") if isinstance(meta, dict) else None
    return {k: int(v) for k, v in dims.items()} if isinstance(dims, dict) else {}


# ------------------------------------------------------------------------ plot
def plot(reports: list[StateReport], path: str, title: str = "") -> None:
    """Spectral norm against distance (log scale), one line per state with its
    min-max band, the textbook bound dashed in the same colour."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))

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
    ax.set_xlabel("distance d = t - k (steps)")
    ax.set_ylabel("spectral norm of the Jacobian")
    ax.set_title(title or "Jacobian norms across time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
