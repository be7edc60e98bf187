"""Optimisers of the `train` block: sgd, adam, adagrad (Deep Learning, chapter 8), global
gradient-norm clipping (section 10.11.1) and L2 weight decay (section 7.1).

Parameters are a dict of numpy arrays updated in place, so the model sees new values
without copying. Each optimiser keeps its per-parameter state in named slots
(`m`, `v`, ...), arrays shaped like the parameter; `state_dict()` is those arrays plus the
step count, which is all a checkpoint needs to continue bit for bit.

The whole update of one parameter is one rule, `rule(p, g, lr, **state)`, in place. A
sparse update (embeddings: `step(..., rows={"E": (1, ids)})`) applies the same rule to
the touched rows of the parameter, its gradient and its state, and to nothing else:
AdaGrad (Socher et al.'s optimiser) and plain SGD give exactly the dense result without
`l2` (with it, untouched rows are not decayed), Adam and SGD with momentum their lazy
form (a row's moments decay only at steps that touch it).

Weight decay is one `l2` for every matrix (`l2 = 0.02`), or per parameter:
`l2 = decay(0.02, E = 1e-4, T = 1e-3)` (`Decay`) decays every matrix by 0.02 but `E` by
1e-4 and `T` by 1e-3; a parameter named there decays even if it is a vector.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError, did_you_mean


@dataclass(frozen=True)
class Decay:
    """`decay(0.02, E = 1e-4)`: L2 weight decay `default` for every matrix, and `per`
    {parameter: value} for the parameters named (vectors included)."""
    default: float = 0.0
    per: dict = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        return "decay(" + ", ".join([f"{self.default:g}"] +
                                    [f"{k}={v:g}" for k, v in self.per.items()]) + ")"


class Optimizer:
    """The common part: the step counter, weight decay and the state slots."""
    name = "?"
    slots: tuple = ()
    ranges = "lr > 0"          # the valid hyper-parameters, for error hints

    def __init__(self, lr: float, l2: float | Decay = 0.0):
        self.lr, self.t = self.hyperparameter("lr", lr, 0, None, low_open=True), 0
        # l2: the decay of every matrix; l2_per: {parameter: decay} of those named
        if isinstance(l2, Decay):
            self.l2, self.l2_per = float(l2.default), {k: float(v) for k, v in l2.per.items()}
        else:
            self.l2, self.l2_per = float(l2), {}
        self.state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slots}

    def hyperparameter(self, key: str, v, lo=None, hi=None, low_open=False,
                       high_open=True) -> float:
        """`v` as a float, or a UsageError naming the range, e.g. "adam(): beta1 must be
        a number in [0, 1), not 1.5" (a decay of 1 would never forget: training
        diverges)."""
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if ok and lo is not None:
            ok = v > lo if low_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if high_open else v <= hi
        if not ok:
            if key == "lr":
                rule = "positive (a number > 0)"
            elif hi is None:
                rule = f"a number {'>' if low_open else '>='} {lo:g}"
            else:
                rule = f"a number in {'(' if low_open else '['}{lo:g}, {hi:g}" \
                       f"{')' if high_open else ']'}"
            shown = str(v).lower() if isinstance(v, bool) else repr(v)
            raise UsageError(f"{self.name}(): {key} must be {rule}, not {shown}")
        return float(v)

    def slot(self, slot: str, name: str, p: np.ndarray) -> np.ndarray:
        """The state array `slot` of parameter `name`, zeros on first use."""
        table = self.state[slot]
        if name not in table:
            table[name] = np.zeros_like(p)
        return table[name]

    def l2_of(self, name: str, ndim: int) -> float:
        """The decay of parameter `name`: its own (`decay(..., name = v)`), else `l2` for
        a weight matrix (ndim >= 2) and 0 for a vector: the book's section 7.1 leaves
        biases unregularised, since they control one unit each."""
        own = self.l2_per.get(name)
        if own is not None:
            return own
        return self.l2 if ndim >= 2 else 0.0

    def decayed(self, name: str, p: np.ndarray, g: np.ndarray, ndim: int | None = None) \
            -> np.ndarray:
        """The gradient of loss + l2/2 |p|^2, with parameter `name`'s l2 (`ndim`: of the
        whole parameter, when `p` is some of its rows)."""
        l2 = self.l2_of(name, p.ndim if ndim is None else ndim)
        if l2:
            return g + l2 * p
        return g

    def end_epoch(self, epochs_done: int) -> None:
        """Called by the training loop when an epoch ends (before the checkpoint)."""

    def step(self, params: dict, grads: dict, lr: float | None = None,
             rows: dict | None = None) -> None:
        """One update of every parameter that has a gradient. `rows` = {name: (axis,
        ids)} marks sparse gradients (embeddings): only those rows along `axis` are
        updated, with their state (lazy: an untouched row's moments stand still)."""
        self.t += 1
        lr = self.lr if lr is None else lr
        rows = rows or {}
        for name, p in params.items():
            g = grads.get(name)
            if g is None:
                continue
            if name in rows:
                axis, ids = rows[name]
                self.update_rows(name, p, g, lr, ids, axis)
            else:
                self.update(name, p, self.decayed(name, p, g).astype(p.dtype, copy=False), lr)

    def update(self, name: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        self.rule(p, g, lr, **{s: self.slot(s, name, p) for s in self.used_slots()})

    def update_rows(self, name: str, p: np.ndarray, g: np.ndarray, lr: float, ids,
                    axis: int = 0) -> None:
        """The same rule on the rows `ids` (along `axis`) of the parameter, its gradient
        and its state; nothing else is read or written."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return
        pv = np.moveaxis(p, axis, 0)
        sub = pv[ids]
        gsub = self.decayed(name, sub, np.moveaxis(g, axis, 0)[ids],
                             p.ndim).astype(p.dtype, copy=False)
        views = {s: np.moveaxis(self.slot(s, name, p), axis, 0) for s in self.used_slots()}
        state = {s: v[ids] for s, v in views.items()}
        self.rule(sub, gsub, lr, **state)
        pv[ids] = sub
        for s, v in views.items():
            v[ids] = state[s]

    def used_slots(self) -> tuple:
        return self.slots

    def rule(self, p: np.ndarray, g: np.ndarray, lr: float, **state) -> None:
        """The update of `p` (and its state arrays) in place."""
        raise NotImplementedError

    # --- checkpoints ---------------------------------------------------------------
    def hyper(self) -> dict:
        h = {"lr": self.lr, "l2": self.l2}
        if self.l2_per:
            h["l2_per"] = dict(self.l2_per)
        return h

    def state_dict(self) -> dict:
        """{"name", "step", "hyper", "arrays": {"slot/param": array}}."""
        arrays = {f"{s}/{n}": a for s, table in self.state.items() for n, a in table.items()}
        return {"name": self.name, "step": self.t, "hyper": self.hyper(), "arrays": arrays}

    def load_state_dict(self, d: dict) -> None:
        if d["name"] != self.name:
            raise UsageError(f"the checkpoint's optimiser is {d['name']}, this run's is "
                             f"{self.name}; resume with the same optimizer")
        self.t = int(d["step"])
        self.state = {s: {} for s in self.slots}
        for key, a in d["arrays"].items():
            slot, _, name = key.partition("/")
            self.state[slot][name] = np.array(a)


class SGD(Optimizer):
    """Algorithm 8.2: v <- momentum v - lr g; p <- p + v (plain SGD when momentum = 0)."""
    name, slots = "sgd", ("v",)
    ranges = "lr > 0, momentum in [0, 1)"

    def __init__(self, lr: float, momentum: float = 0.0, l2: float = 0.0):
        super().__init__(lr, l2)
        self.momentum = self.hyperparameter("momentum", momentum, 0, 1)

    def used_slots(self):
        return self.slots if self.momentum else ()

    def rule(self, p, g, lr, v=None):
        if v is None:
            p -= lr * g
            return
        v *= self.momentum
        v -= lr * g
        p += v

    def hyper(self):
        return {**super().hyper(), "momentum": self.momentum}


class Adam(Optimizer):
    """Algorithm 8.7 (Kingma and Ba): bias-corrected first and second moments."""
    name, slots = "adam", ("m", "v")
    ranges = "lr > 0, beta1 and beta2 in [0, 1), eps > 0"

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, l2: float = 0.0):
        super().__init__(lr, l2)
        self.beta1 = self.hyperparameter("beta1", beta1, 0, 1)
        self.beta2 = self.hyperparameter("beta2", beta2, 0, 1)
        self.eps = self.hyperparameter("eps", eps, 0, None, low_open=True)

    def rule(self, p, g, lr, m=None, v=None):
        """Dense, or lazy on the rows a batch touched (the bias correction counts every
        step, as TensorFlow's LazyAdam). A C-contiguous parameter and moments of one float
        dtype take one fused pass (compile/kernels.adam_update: 0.3 ns an element against
        ten numpy passes), whatever the gradient's layout (an embedding's gradient from a
        lookup's scatter is F-ordered); the numpy form below is the same arithmetic."""
        if _fusable(p, m, v) and g.dtype == p.dtype and g.shape == p.shape:
            from ..compile import kernels
            f = p.dtype.type
            kernels.adam_update(p, g, m, v, f(lr), f(self.beta1), f(self.beta2),
                                f(self.eps), f(1 - self.beta1 ** self.t),
                                f(1 - self.beta2 ** self.t))
            return
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        t = g * g                       # two temporaries in all: a big T stays cheap
        t *= 1 - self.beta2
        v += t
        # lr m_hat / (sqrt(v_hat) + eps), with v_hat = v / (1 - beta2^t)
        np.sqrt(v, out=t)
        t *= 1 / math.sqrt(1 - self.beta2 ** self.t)
        t += self.eps
        np.divide(m, t, out=t)
        t *= lr / (1 - self.beta1 ** self.t)
        p -= t

    def hyper(self):
        return {**super().hyper(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


def _fusable(*arrays) -> bool:
    dt = arrays[0].dtype
    return dt.kind == "f" and dt.itemsize in (4, 8) and \
        all(a.dtype == dt and a.flags.c_contiguous for a in arrays)


class Adagrad(Optimizer):
    """Algorithm 8.4 (Duchi et al.): each coordinate's rate shrinks with its history.
    `reset = k` zeroes the accumulated squared gradients every k epochs (the Stanford
    CoreNLP sentiment trainer's `adagradResetFrequency`; 0: never)."""
    name, slots = "adagrad", ("r",)
    ranges = "lr > 0, eps > 0, reset a whole number of epochs >= 0 (0: never)"

    def __init__(self, lr: float = 0.01, eps: float = 1e-8, reset: int = 0,
                 l2: float | Decay = 0.0):
        super().__init__(lr, l2)
        self.eps = self.hyperparameter("eps", eps, 0, None, low_open=True)
        if isinstance(reset, bool) or not isinstance(reset, (int, float)) or reset < 0 \
                or float(reset) != int(reset):
            raise UsageError(f"adagrad(): reset must be a whole number of epochs >= 0 "
                             f"(0: never), not {reset!r}")
        self.reset = int(reset)

    def end_epoch(self, epochs_done: int) -> None:
        """Every `reset` epochs the accumulators start again from zero (in place)."""
        if self.reset and epochs_done % self.reset == 0:
            for a in self.state["r"].values():
                a.fill(0)

    def rule(self, p, g, lr, r=None):
        """Sparse and dense agree exactly: an untouched row has g = 0."""
        r += g * g
        p -= lr * g / (np.sqrt(r) + self.eps)

    def hyper(self):
        return {**super().hyper(), "eps": self.eps, "reset": self.reset}


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adagrad": Adagrad}


def make_optimizer(call, l2: float | Decay = 0.0, params=None) -> Optimizer:
    """An optimiser from a train-block value: `adam(lr = 0.002)` or a bare `sgd`. With
    `params` (the model's names), a `decay(...)` naming another parameter is refused.
    A bad name or argument is a `config.BadValue` (a UsageError) with a did-you-mean,
    the accepted arguments and their ranges, never Python's TypeError text."""
    from .config import BadValue, call_checked, known_name
    if isinstance(l2, Decay) and params is not None:
        check_decay(l2, params)
    name = known_name(call, OPTIMIZERS, "optimizer", "optimizers")
    if "l2" in getattr(call, "kwargs", {}):
        raise BadValue(f"{name}() has no argument 'l2'", "weight decay is a train setting "
                       "of its own: l2 = 0.0001", ("kw", "l2"))
    cls = OPTIMIZERS[name]
    from .config import signature_text
    return call_checked(call, cls, skip=("l2",), name=name, l2=l2,
                        ranges=f"{name}() takes {cls.ranges}; the defaults: "
                               f"{name}({signature_text(cls, ('l2',))})")


def check_decay(l2: Decay, params) -> None:
    """Every parameter `decay(...)` names must be one of the model's."""
    names = list(params)
    for key in l2.per:
        if key not in params:
            near = did_you_mean(key, names)
            hint = f"; {near}" if near else f" (parameters: {', '.join(names)})"
            raise UsageError(f"train: l2 = {l2}: the model has no parameter '{key}'{hint}")


def _part(name, g, rows):
    """The part of a gradient that can be nonzero: the touched rows of a sparse one."""
    if name not in rows:
        return g
    axis, ids = rows[name]
    return np.moveaxis(g, axis, 0)[np.asarray(ids, dtype=np.int64)]


def global_norm(grads: dict, rows: dict | None = None) -> float:
    """sqrt of the sum of every gradient component squared (in float64); a sparse
    gradient (`rows`, as in `Optimizer.step`) counts only its touched rows."""
    rows = rows or {}
    total = 0.0
    for name, g in grads.items():
        if g is not None:
            part = np.ravel(_part(name, g, rows))
            s = float(np.vdot(part, part))
            if not math.isfinite(s) and np.isfinite(part).all():
                # squares of float32 overflow from |g| ~ 1.8e19 on: summed again in
                # float64 a finite gradient has a finite norm (up to 1e154), and clipping
                # can act on it (a copy on every step cost 4x, more with BLAS threads)
                wide = part.astype(np.float64)
                s = float(np.dot(wide, wide))
            total += s
    return math.sqrt(total)


def clip_global_norm(grads: dict, max_norm: float | None, rows: dict | None = None) -> float:
    """Scale all gradients together so their global norm is at most `max_norm` (the
    direction is kept, only the step shrinks: Pascanu et al. 2013). Returns the norm
    before clipping; a non-finite norm is left for the caller to report."""
    rows = rows or {}
    norm = global_norm(grads, rows)
    if max_norm and math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for name, g in grads.items():
            if g is None:
                continue
            if name in rows:
                axis, ids = rows[name]
                np.moveaxis(g, axis, 0)[np.asarray(ids, dtype=np.int64)] *= scale
            else:
                g *= scale
    return norm
