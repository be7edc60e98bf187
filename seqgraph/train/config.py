"""The `train` block with its defaults (LANGUAGE.md section 7) and `--set` overrides.

Every key has a default, so a spec with no train block trains once it is given data.
Values keep the train block's own forms (numbers, strings, bare names such as `float32`,
calls such as `adam(lr = 0.002)`); `--set key=value` is read with the spec language's own
value syntax, so the command line and the file cannot disagree about what a value means.

Each value is checked on its own by `check_value` (ranges, choices, the optimiser's,
schedule's and loader's names and arguments), without reading any data: the elaborator
calls it for every entry of a spec's train block, so a bad value is a `SpecError` at its
place in the file (lang/elaborate.py), and `make_config` for `--set` values, which name
`--set key=...` instead. A `BadValue` says what is wrong, a hint (the valid range or
choices, or a did-you-mean) and where inside the value (`at`).
"""
from __future__ import annotations

import inspect
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import Pos, SpecError, UsageError, did_you_mean
from ..lang import ast as A
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


class BadValue(UsageError):
    """A train value that is wrong on its own. `message` says what is wrong, `hint` the
    valid range or choices (or "did you mean ...?"), `at` where inside the value: None
    (all of it), ("name",) (a call's name), ("kw", NAME) (a keyword argument) or
    ("arg", i) (the i-th positional argument)."""

    def __init__(self, message: str, hint: str = "", at: tuple | None = None):
        self.message, self.hint, self.at = message, hint, at
        super().__init__(f"{message}; {hint}" if hint else message)


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
    # the keys `--set` gave (their values are the user's, not the spec's); not saved
    from_set: frozenset = field(default=frozenset(), metadata={"saved": False})

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
        return {f.name: _show(getattr(self, f.name)) for f in fields(self)
                if f.metadata.get("saved", True)}


def _show(v):
    if isinstance(v, Decay) or hasattr(v, "name") and hasattr(v, "args"):
        return str(v)
    if isinstance(v, tuple) and v and v[0] == "linear":
        return f"linear({v[1]}, {v[2]})"
    return v


# --------------------------------------------------------------------- calls
def signature_text(fn, skip=()) -> str:
    """`lr = 0.001, beta1 = 0.9, ...`: the arguments a call takes, with their defaults."""
    out = []
    for p in _params(fn, skip).values():
        if p.default is inspect.Parameter.empty or p.default is None or p.default == ():
            out.append(p.name)
        else:
            d = p.default
            shown = str(d).lower() if isinstance(d, bool) else f"{d:g}" \
                if isinstance(d, float) else repr(d) if isinstance(d, str) else str(d)
            out.append(f"{p.name} = {shown}")
    return ", ".join(out)


def _params(fn, skip=()) -> dict:
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if n not in skip and p.kind is not inspect.Parameter.VAR_KEYWORD}


# the file each loader reads, as its example when the file is missing: `pairs()`
FILE_EXAMPLES = {"pairs": "file.tsv", "treepairs": "file.tsv", "labeled": "file.tsv",
                 "series": "file.csv"}


def check_call(call, fn, skip=(), name: str | None = None) -> inspect.BoundArguments:
    """The arguments of a train-block call (`adam(lr = 0.01)`, `chars("a.txt")`) bound to
    the parameters of `fn` (less `skip`), or a BadValue: an unknown keyword (with a
    did-you-mean and the accepted ones), too many values, one given twice, one missing."""
    name = name or getattr(call, "name", str(call))
    args, kwargs = tuple(getattr(call, "args", ())), dict(getattr(call, "kwargs", {}))
    params = _params(fn, skip)
    takes = f"{name}({signature_text(fn, skip)})"
    for k in kwargs:
        if k not in params:
            near = did_you_mean(k, params)
            accepted = f"{name}() takes {', '.join(params)}" if params else \
                f"{name}() takes no arguments"
            raise BadValue(f"{name}() has no argument '{k}'",
                           f"{near} ({accepted})" if near else accepted, ("kw", k))
    positional = [p for p in params.values() if p.kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if len(args) > len(positional):
        n = len(positional)
        raise BadValue(f"{name}() takes {n} value{'s' * (n != 1)} without a name, "
                       f"given {len(args)}", f"write {takes}", ("arg", n))
    for p, _ in zip(positional, args, strict=False):
        if p.name in kwargs:
            raise BadValue(f"{name}() is given '{p.name}' twice (by place and by name)",
                           f"write {takes}", ("kw", p.name))
    given = {p.name for p, _ in zip(positional, args, strict=False)} | set(kwargs)
    for p in params.values():
        if p.default is inspect.Parameter.empty and p.name not in given and \
                p.name == "path":             # a loader's file: not Python's words
            ex = FILE_EXAMPLES.get(name, "file.txt")
            raise BadValue(f'{name}() needs the file: {name}("{ex}")',
                           f"the file comes first, in quotes: {takes}", ("name",))
        if p.default is inspect.Parameter.empty and p.name not in given:
            raise BadValue(f"{name}(): missing 1 required positional argument: "
                           f"'{p.name}'", f"write {takes}", ("name",))
    bound = inspect.Signature(list(params.values())).bind(*args, **kwargs)
    return bound


def call_checked(call, fn, skip=(), name: str | None = None, replace: dict | None = None,
                 ranges: str = "", **extra):
    """`fn` called with the call's arguments (checked by `check_call`, then `replace`d,
    plus `extra`); a UsageError of `fn` (a value out of range) becomes a BadValue at the
    argument its message names, with the hint `ranges` (default: the arguments)."""
    name = name or getattr(call, "name", str(call))
    bound = check_call(call, fn, skip, name)
    arguments = {**bound.arguments, **(replace or {})}
    try:
        return fn(**arguments, **extra)
    except BadValue:
        raise
    except UsageError as e:
        raise BadValue(str(e), ranges or f"{name}() takes {signature_text(fn, skip)}",
                       _named_in(str(e), call, list(bound.arguments))) from None
    except (TypeError, ValueError):      # a value of a type `fn` does not compare
        given = ", ".join(f"{k} = {_repr(v)}" for k, v in bound.arguments.items())
        raise BadValue(f"{name}() cannot take {given}", ranges or
                       f"{name}() takes {signature_text(fn, skip)}", ("name",)) from None


def _named_in(message: str, call, names) -> tuple | None:
    """Where the argument a message is about stands in `call`: the first name of `names`
    the message holds as a word (after the `name():` it may start with)."""
    text = message.split("(): ", 1)[-1]
    args = tuple(getattr(call, "args", ()))
    kwargs = dict(getattr(call, "kwargs", {}))
    for i, n in enumerate(names):
        if re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", text):
            if n in kwargs:
                return ("kw", n)
            if i < len(args):
                return ("arg", i)
    return None


# --------------------------------------------------------------------- values
def _hint_default(key) -> str:
    d = DEFAULTS[key]
    return f"e.g. {key} = {d}" + (" (the default)" if d is not None else "")


def _number(key, v, lo=None, hi=None, integer=False, at=None, hint=None):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
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
        raise BadValue(f"{key} must be {kind}{rng}, not {_repr(v)}",
                       _hint_default(key) if hint is None else hint, at)
    return int(v) if integer else float(v)


def _repr(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return str(v) if hasattr(v, "name") and hasattr(v, "args") else repr(v)


def _choice(key, v, choices, extra=""):
    if isinstance(v, str) and v in choices:
        return v
    near = did_you_mean(v, choices) if isinstance(v, str) else ""
    hint = near or f"choices: {', '.join(choices)}"
    which = " or ".join(choices) if len(choices) == 2 else "one of " + ", ".join(choices)
    raise BadValue(f"{key} must be {which}{extra}, not {_repr(v)}", hint)


def _teacher(v):
    """A probability, or `linear(start, end)` over the run (scheduled sampling)."""
    if getattr(v, "name", None) == "linear":
        try:
            bound = check_call(v, lambda start, end: None, name="linear")
        except BadValue as e:
            near = f"; {e.hint}" if "did you mean" in e.hint else ""
            raise BadValue(f"teacher = {v}: expected linear(start, end), e.g. "
                           f"linear(1.0, 0.5)", f"{e.message}{near}", e.at) from None
        a, b = (_number("teacher", bound.arguments[k], 0, 1, hint="a probability in [0, 1]",
                        at=_named_in(k, v, ["start", "end"]))
                for k in ("start", "end"))
        return ("linear", a, b)
    if hasattr(v, "name"):
        near = did_you_mean(v.name, ["linear"])
        raise BadValue(f"teacher must be a probability or linear(start, end), not {v}",
                       near or "e.g. teacher = 1.0 or teacher = linear(1.0, 0.5)", ("name",))
    return _number("teacher", v, 0, 1, hint="a probability in [0, 1], or linear(start, "
                   "end), e.g. linear(1.0, 0.5)")


def _valid(v):
    if hasattr(v, "name"):
        return _loader(v, "valid")
    hint = 'a fraction in [0, 1) of the data, e.g. valid = 0.05, or a loader call such as ' \
        'chars("valid.txt")'
    frac = _number("valid", v, 0, hint=hint)
    if frac >= 1:
        raise BadValue(f"valid must be a fraction in [0, 1) or a loader call, not {_repr(v)}",
                       hint)
    return frac


def _data(v):
    if v is None:
        return v
    return _loader(v, "data")


def _loader(v, key):
    from .loaders import check_loader_call
    check_loader_call(v, key)
    return v


def _l2(v):
    """`l2 = 0.02` (every matrix) or `l2 = decay(0.02, E = 1e-4, T = 1e-3)`: the
    positional value for every matrix, each keyword for the parameter it names (a vector
    too). The names are checked against the model's parameters when training starts."""
    if getattr(v, "name", None) == "decay":
        if len(v.args) > 1:
            raise BadValue(f"l2 = {v}: decay() takes one positional value (the "
                           f"decay of every matrix), then NAME = value per parameter",
                           "e.g. decay(0.02, E = 1e-4)", ("arg", 1))
        hint = "a weight decay >= 0, e.g. decay(0.02, E = 1e-4)"
        default = _number("l2", v.args[0], 0, hint=hint, at=("arg", 0)) if v.args else 0.0
        per = {k: _number(f"l2 of {k}", x, 0, hint=hint, at=("kw", k))
               for k, x in v.kwargs.items()}
        return Decay(default, per)
    if hasattr(v, "name"):
        near = did_you_mean(v.name, ["decay"])
        raise BadValue(f"l2 must be a number >= 0 or decay(0.02, NAME = value, "
                       f"...), not {v}", near or "e.g. l2 = 0.0001, or decay(0.02, E = 1e-4)",
                       ("name",))
    return _number("l2", v, 0, hint="a weight decay >= 0, e.g. l2 = 0.0001 (0: none), or "
                   "decay(0.02, E = 1e-4)")


SELECT = ("root", "all", "loss")     # every kind's choices; loop.py checks the kind's


def _select(v):
    """What best.npz keeps: a bare name; whether it fits the kind of data is checked by
    the training loop (loop.py, `Selects`)."""
    if v is None:
        return v
    return _choice("select", v, SELECT, " (trees: root, all, loss; sequences: loss)")


def _on_nan(v):
    return _choice("on_nan", v, ("stop", "skip"))


def _keep(v):
    """`keep = all` also keeps every epoch's parameters (DIR/epochs/epoch_N.npz)."""
    return _choice("keep", v, ("best", "all"))


def _dtype(v):
    return _choice("dtype", v, ("float32", "float64"))


def _average(v):
    """`average = d`, 0 <= d < 1: the decay of the parameters' exponential moving average
    (loop.py, `Averages`); 0 keeps none. At d = 1 the average would never move."""
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1):
        raise BadValue(f"average must be a decay in [0, 1), e.g. 0.999 (0: no "
                       f"averaging), not {_repr(v)}", "a number d with 0 <= d < 1")
    return float(v)


def _optimizer(v):
    """Checked by building it (no parameters yet): its name, arguments and ranges."""
    from .optim import make_optimizer
    make_optimizer(v)
    return v


def known_name(v, table, what: str, plural: str) -> str:
    """The name of a bare name or a call `v`, one of `table`'s, or a BadValue at it with
    a did-you-mean and the known ones."""
    name = getattr(v, "name", v)
    if not isinstance(name, str) or name not in table:
        near = did_you_mean(name, table) if isinstance(name, str) else ""
        known = f"{plural}: {', '.join(table)}"
        raise BadValue(f"unknown {what} {_repr(name)}", f"{near} ({known})" if near
                       else known, ("name",) if hasattr(v, "name") else None)
    return name


def _schedule(v):
    from .schedules import SCHEDULES
    name = known_name(v, SCHEDULES, "schedule", "schedules")
    call_checked(v, SCHEDULES[name], name=name)
    return v


def _param_init(v):
    """`uniform(0.1)`, `normal(0.01)`, `orthogonal`, ...: one of the initialisers a
    parameter can name (lang/elaborate.py, INITS), with its scale if it takes one."""
    if v is None:
        return v
    from ..lang.elaborate import INITS, init_problem
    name = known_name(v, INITS, "initialiser", "initialisers")
    args, kwargs = tuple(getattr(v, "args", ())), dict(getattr(v, "kwargs", {}))
    if kwargs or len(args) != INITS[name]:
        raise BadValue(init_problem(name, ()) if INITS[name] else
                       f"initialiser '{name}' takes no argument",
                       f"e.g. param_init = {name}(0.1)" if INITS[name] else
                       f"write param_init = {name}", ("name",) if hasattr(v, "name") else None)
    if args:
        _number("param_init", args[0], hint=f"a scale > 0, e.g. {name}(0.1)", at=("arg", 0))
        problem = init_problem(name, args)
        if problem:
            raise BadValue(problem, f"e.g. {name}(0.1)", ("arg", 0))
    return v


CHECKS = {
    "data": _data,
    "valid": _valid,
    "optimizer": _optimizer,
    "clip": lambda v: _number("clip", 0 if v is None else v, 0, hint="a gradient norm "
                              ">= 0 (0: no clipping), e.g. clip = 5.0 (the default)"),
    "batch": lambda v: _number("batch", v, 1, None, True),
    "bptt": lambda v: _number("bptt", v, 1, None, True),
    "epochs": lambda v: _number("epochs", v, 1, None, True),
    "teacher": _teacher,
    "schedule": _schedule,
    "param_init": _param_init,
    "l2": _l2,
    "select": _select,
    "seed": lambda v: _number("seed", v, 0, None, True),
    "dtype": _dtype,
    "on_nan": _on_nan,
    "average": _average,
    "keep": _keep,
}


def check_value(key: str, value):
    """The checked form of one train value, or a BadValue (nothing is read from disk)."""
    return CHECKS[key](value)


# --------------------------------------------------------------------- --set
def parse_sets(items: list[str]) -> dict:
    """`["batch=8", "optimizer=sgd(lr=0.1)"]` -> {"batch": 8, "optimizer": Call(...)}."""
    out = SetValues()
    for item in items or ():
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"--set {item!r}: expected key=value, e.g. --set batch=16")
        _known(key, "--set")
        value = _read_set(key, text.strip())
        if key in out and out[key] != value:
            raise UsageError(f"--set {key} is given twice ({out.text[key]}, then "
                             f"{text.strip()}): give it once")
        out[key] = value
        out.text[key] = text.strip()
    return out


class SetValues(dict):
    """The values of `--set`, with `text`: each as the user typed it (for messages)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.text = {}


def value_error(e, text: str) -> tuple[str, str]:
    """The message and hint of `e`, a SpecError of parse_value(text), said of a value
    given on the command line: the column it stands at, no 'file'."""
    msg = e.message.replace("the end of the file", "the end of the value")
    if "column" not in msg:                 # (a bracket's message says where already)
        msg += f" (at column {min(max(e.pos.column, 1), len(text) + 1)} of the value)"
    return msg, e.hint


def _read_set(key: str, text: str):
    """A --set value read with the spec language's value syntax; a UsageError naming the
    flag and where in the value it cannot be read."""
    from ..lang.parse import parse_value
    where = f"--set {key}={text}: cannot read the value"
    if not text:
        raise UsageError(f"{where}: the value is empty")
    try:
        return parse_value(text)
    except SpecError as e:
        msg, hint = value_error(e, text)
        if key in ("data", "valid") and "(" not in text and "\"" not in text:
            fraction = "a fraction held out such as 0.1, or " if key == "valid" else ""
            hint = (f"{key} is {fraction}a loader call naming its file: --set "
                    f"'{key}=chars(\"{text}\")' (or words, pairs, labeled, tagged, series, "
                    f"trees, as the spec reads its data)")
        raise UsageError(f"{where}: {msg}" + (f"; {hint}" if hint else "")) from None


def _known(key: str, where: str) -> None:
    from ..lang.elaborate import optimizer_arg_hint
    if key not in DEFAULTS:
        near = optimizer_arg_hint(key) or did_you_mean(key, DEFAULTS)
        hint = f"; {near}" if near else f" (keys: {', '.join(DEFAULTS)})"
        raise UsageError(f"{where}: unknown train key '{key}'{hint}")


def _shown(v) -> str:
    if isinstance(v, str) and not v.isidentifier():
        return f'"{v}"'
    return _repr(v) if not isinstance(v, str) else v


def make_config(block: dict, sets: dict | None = None, spec_dir: str | Path = ".") -> TrainConfig:
    """Defaults, then the spec's train block, then `--set` overrides, checked. A bad
    `--set` value is a UsageError naming `--set key=...`; a bad block value a BadValue
    (a spec read by `read_spec` has had its block checked, with locations, already)."""
    for key in block:
        _known(key, "train block")
    sets = sets or {}
    v = {}
    for key, default in DEFAULTS.items():
        value = sets[key] if key in sets else block.get(key, default)
        try:
            v[key] = check_value(key, value)
        except BadValue as e:
            if key in sets:
                text = getattr(sets, "text", {}).get(key)
                flag = f"--set {key}={text}" if text is not None else \
                    f"--{key.replace('_', '-')} {_shown(value)}"   # --epochs, --on-nan
                raise UsageError(f"{flag}: {e}") from None
            raise
    here = os.getcwd()
    return TrainConfig(
        data=v["data"], valid=v["valid"], optimizer=v["optimizer"], clip=v["clip"],
        batch=v["batch"], bptt=v["bptt"], epochs=v["epochs"], teacher=v["teacher"],
        schedule=v["schedule"], param_init=v["param_init"], l2=v["l2"],
        select=v["select"], seed=v["seed"], dtype=v["dtype"], on_nan=v["on_nan"],
        average=v["average"], keep=v["keep"],
        base=here if "data" in sets else str(spec_dir),
        valid_base=here if "valid" in sets else str(spec_dir), from_set=frozenset(sets))


# --------------------------------------------------------------- the spec's train block
def check_train_block(spec: A.Spec, trees: bool) -> None:
    """Each train-block value of a parsed spec that is wrong on its own (a range, a
    choice, an optimiser's or a loader's name or argument: `check_value`) as a SpecError
    at its place in the file; what needs the data or the model is checked when training
    starts. A pass after elaboration (which checks the keys): the language front end
    knows nothing of training. `trees`: the model runs over a tree."""
    try:
        for block in (s for s in spec.stmts if isinstance(s, A.TrainBlock)):
            for e in block.entries:
                _check_entry(e, trees)
    except SpecError as e:
        raise e.located(spec.path, spec.source) from None


def _check_entry(e: A.TrainEntry, trees: bool) -> None:
    if e.key == "select" and not trees and e.value != "loss":
        raise SpecError(f"select = {e.value}: the best.npz of a sequence model is "
                        "chosen by its validation loss", e.value_pos,
                        hint="write select = loss, or leave select out (root and all "
                             "are the accuracies of a tree model)")
    try:
        check_value(e.key, e.value)
    except BadValue as b:
        raise SpecError(b.message, _value_pos(e, b.at), hint=b.hint) from None


def _value_pos(e: A.TrainEntry, at) -> Pos:
    """Where the part of a train entry's value that `at` names (config.BadValue) stands:
    ("name",) a call's name, ("kw", NAME) the keyword NAME of a call, ("arg", i) its i-th
    positional value (past the last: the last argument); else the value itself."""
    v = e.value
    if at is None or not isinstance(v, A.Call):
        return e.value_pos
    if at[0] == "name":
        return v.pos
    if at[0] == "kw":
        return v.kw_pos.get(at[1], e.value_pos)
    if at[0] == "arg" and at[1] < len(v.arg_pos):
        return v.arg_pos[at[1]]
    every = [*v.arg_pos, *v.kw_pos.values()]
    return max(every, key=lambda p: (p.line, p.column)) if every else e.value_pos
