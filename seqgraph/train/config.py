"""The `train` block with its defaults (LANGUAGE.md section 7) and `--set` overrides.

Every key has a default, so a spec with no train block trains once it is given data.
Values keep the train block's own forms (numbers, strings, bare names such as `float32`,
calls such as `adam(lr = 0.002)`); `--set key=value` is read with the spec language's own
value syntax, so the command line and the file cannot disagree about what a value means.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import SpecError, UsageError, did_you_mean
from .optim import Decay

DEFAULTS = {
    "data": None,           # a loader call; required
    "valid": 0.05,          # a held-out fraction of the tail, or a loader call
    "optimizer": "adam",    # adam(lr = 0.001)
    "clip": 5.0,            # global gradient norm; 0 turns clipping off
    "batch": 32,
    "bptt": 64,
    "epochs": 1,
    "teacher": 1.0,         # teacher-forcing probability, or linear(start, end)
    "schedule": "constant",
    "param_init": None,     # None: each parameter's own default (xavier / zeros)
    "l2": 0.0,              # a number (every matrix), or decay(0.02, E = 1e-4, ...)
    "select": None,         # what best.npz keeps: root | all | loss (None: the kind's)
    "seed": 0,
    "dtype": "float32",
    "on_nan": "stop",       # stop | skip: a non-finite loss or gradient skips the batch
    "average": 0.0,         # decay d of a moving average of the parameters; 0: none
    "keep": "best",         # best: best.npz and checkpoint.npz; all: also every epoch's
}


@dataclass(frozen=True)
class TrainConfig:
    """The checked train configuration. `base` is the directory data paths are
    relative to: the spec's directory, or the current one for a `--set data=...`."""
    data: object
    valid: object
    optimizer: object
    clip: float
    batch: int
    bptt: int
    epochs: int
    teacher: float
    schedule: object
    param_init: object
    l2: float | Decay
    seed: int
    dtype: str
    on_nan: str = "stop"
    select: str | None = None
    average: float = 0.0
    keep: str = "best"
    base: str = "."
    valid_base: str = "."

    def teacher_at(self, step: int, total: int) -> float:
        """The teacher-forcing probability of update `step` (0-based) of `total`:
        constant, or `linear(a, b)`: from a at the first update to b at the last."""
        t = self.teacher
        if isinstance(t, tuple):
            a, b = t[1], t[2]
            frac = step / max(total - 1, 1)
            return float(a + (b - a) * min(max(frac, 0.0), 1.0))
        return float(t)

    @property
    def teacher_min(self) -> float:
        t = self.teacher
        return float(min(t[1], t[2])) if isinstance(t, tuple) else float(t)

    def as_dict(self) -> dict:
        """Plain JSON-able values, for the checkpoint and the run's report."""
        return {f.name: _show(getattr(self, f.name)) for f in fields(self)}


def _show(v):
    if isinstance(v, Decay) or hasattr(v, "name") and hasattr(v, "args"):
        return str(v)
    if isinstance(v, tuple) and v and v[0] == "linear":
        return f"linear({v[1]}, {v[2]})"
    return v


def _teacher(v):
    """A probability, or `linear(start, end)` over the run (scheduled sampling)."""
    if getattr(v, "name", None) == "linear":
        args = list(v.args) + [v.kwargs[k] for k in ("start", "end") if k in v.kwargs]
        if len(args) != 2 or set(v.kwargs) - {"start", "end"}:
            raise UsageError(f"train: teacher = {v}: expected linear(start, end), e.g. "
                             f"linear(1.0, 0.5)")
        a, b = (_number("teacher", x, 0, 1) for x in args)
        return ("linear", a, b)
    if hasattr(v, "name"):
        raise UsageError(f"train: teacher must be a probability or linear(start, end), "
                         f"not {v}")
    return _number("teacher", v, 0, 1)


def parse_sets(items: list[str]) -> dict:
    """`["batch=8", "optimizer=sgd(lr=0.1)"]` -> {"batch": 8, "optimizer": Call(...)}."""
    from ..lang.parse import parse_value
    out = {}
    for item in items or ():
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"--set {item!r}: expected key=value, e.g. --set batch=16")
        _known(key, "--set")
        try:
            out[key] = parse_value(text.strip())
        except SpecError as e:
            raise UsageError(f"--set {item}: cannot read the value: {e.message}") from None
    return out


def _known(key: str, where: str) -> None:
    if key not in DEFAULTS:
        near = did_you_mean(key, DEFAULTS)
        hint = f"; {near}" if near else f" (keys: {', '.join(DEFAULTS)})"
        raise UsageError(f"{where}: unknown train key '{key}'{hint}")


def _number(key, v, lo=None, hi=None, integer=False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if ok and integer:
        ok = float(v) == int(v)
    if ok and lo is not None:
        ok = v >= lo
    if ok and hi is not None:
        ok = v <= hi
    if not ok:
        kind = "an integer" if integer else "a number"
        rng = f" >= {lo}" if hi is None and lo is not None else (
            f" in [{lo}, {hi}]" if hi is not None else "")
        raise UsageError(f"train: {key} must be {kind}{rng}, not {v!r}")
    return int(v) if integer else float(v)


def _valid(v):
    if hasattr(v, "name"):
        return v
    frac = _number("valid", v, 0, 1)
    if frac >= 1:
        raise UsageError("train: valid must be a fraction below 1 or a loader call")
    return frac


def _l2(v):
    """`l2 = 0.02` (every matrix) or `l2 = decay(0.02, E = 1e-4, T = 1e-3)`: the
    positional value for every matrix, each keyword for the parameter it names (a vector
    too). The names are checked against the model's parameters when training starts."""
    if getattr(v, "name", None) == "decay":
        if len(v.args) > 1:
            raise UsageError(f"train: l2 = {v}: decay() takes one positional value (the "
                             f"decay of every matrix), then NAME = value per parameter, "
                             f"e.g. decay(0.02, E = 1e-4)")
        default = _number("l2", v.args[0], 0) if v.args else 0.0
        per = {k: _number(f"l2 of {k}", x, 0) for k, x in v.kwargs.items()}
        return Decay(default, per)
    if hasattr(v, "name"):
        near = did_you_mean(v.name, ["decay"])
        hint = f"; {near}" if near else ""
        raise UsageError(f"train: l2 must be a number >= 0 or decay(0.02, NAME = value, "
                         f"...), not {v}{hint}")
    return _number("l2", v, 0)


SELECT = ("root", "all", "loss")     # every kind's choices; loop.py checks the kind's


def _select(v):
    """What best.npz keeps: a bare name; whether it fits the kind of data is checked by
    the training loop (loop.py, `Selects`)."""
    if v is None or v in SELECT:
        return v
    near = did_you_mean(v, SELECT)
    hint = f"; {near}" if near else ""
    raise UsageError(f"train: select must be one of {', '.join(SELECT)} (trees: root, "
                     f"all, loss; sequences: loss), not {v!r}{hint}")


def _on_nan(v):
    if v not in ("stop", "skip"):
        raise UsageError(f"train: on_nan must be stop or skip, not {v!r}")
    return v


def _keep(v):
    """`keep = all` also keeps every epoch's parameters (DIR/epochs/epoch_N.npz)."""
    if v not in ("best", "all"):
        raise UsageError(f"train: keep must be best or all, not {v!r}")
    return v


def _average(v):
    """`average = d`, 0 <= d < 1: the decay of the parameters' exponential moving average
    (loop.py, `Averages`); 0 keeps none. At d = 1 the average would never move."""
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1):
        raise UsageError(f"train: average must be a decay in [0, 1), e.g. 0.999 (0: no "
                         f"averaging), not {v!r}")
    return float(v)


def make_config(block: dict, sets: dict | None = None, spec_dir: str | Path = ".") -> TrainConfig:
    """Defaults, then the spec's train block, then `--set` overrides, checked."""
    for key in block:
        _known(key, "train block")
    sets = sets or {}
    v = {**DEFAULTS, **block, **sets}
    here = os.getcwd()
    dtype = str(v["dtype"])
    if dtype not in ("float32", "float64"):
        raise UsageError(f"train: dtype must be float32 or float64, not {v['dtype']!r}")
    return TrainConfig(
        data=v["data"], valid=_valid(v["valid"]), optimizer=v["optimizer"],
        clip=_number("clip", v["clip"] or 0, 0), batch=_number("batch", v["batch"], 1, None, True),
        bptt=_number("bptt", v["bptt"], 1, None, True),
        epochs=_number("epochs", v["epochs"], 1, None, True),
        teacher=_teacher(v["teacher"]), schedule=v["schedule"],
        param_init=v["param_init"], l2=_l2(v["l2"]), select=_select(v["select"]),
        seed=_number("seed", v["seed"], 0, None, True), dtype=dtype,
        on_nan=_on_nan(v["on_nan"]), average=_average(v["average"]), keep=_keep(v["keep"]),
        base=here if "data" in sets else str(spec_dir),
        valid_base=here if "valid" in sets else str(spec_dir))
