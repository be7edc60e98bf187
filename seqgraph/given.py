"""What `Model.run` is given, checked and made what both executors read: the arrays by
name (ids as integers within their size, vectors of their width, padding zeroed), the
lengths, a carry, the parameters (the model's dtype, C order). An input error is a
UsageError saying what was wrong and what is wanted, never a wrong number or a crash
inside an executor. `prepare` is the order `Model.run` applies them in."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import UsageError, did_you_mean

DTYPES = {"float32": np.float32, "float64": np.float64}


def prepare(m, inputs, targets, carry, lengths, grads: bool, teacher: float):
    """(inputs, targets, carry, lengths) of one `Model.run`, each checked against model
    `m` (a UsageError otherwise) and in the form its executors read."""
    if not 0.0 <= teacher <= 1.0:
        raise UsageError(f"teacher must be a probability in [0, 1], not {teacher}")
    if teacher < 1.0:
        check_sampling(m, teacher)
    inputs, targets = mapping("inputs", inputs), mapping("targets", targets)
    lengths = check_lengths(m, mapping("lengths", lengths))
    own_params(m)
    check_names_and_ids(m, {**inputs, **targets})
    check_roles(m, inputs, targets)
    carry = check_carry(m, carry, inputs, targets)
    check_given(m, inputs, targets, grads)
    check_padding(m, inputs, lengths)
    return zero_padding(m, inputs, lengths), zero_padding(m, targets, lengths), carry, lengths


# ------------------------------------------------------------------ the model's options
def dtype_of(dtype) -> np.dtype:
    """float32 or float64, named as numpy or a string does ("float64", np.float64,
    np.dtype("f8"), "f8")."""
    try:
        d = None if dtype is None else np.dtype(dtype)
    except TypeError:
        d = None
    if d is None or d.name not in DTYPES:
        raise UsageError(f"dtype must be float32 or float64, not {dtype}")
    return np.dtype(DTYPES[d.name])          # native byte order (">f8" is float64 too)


def whole_dims(dims) -> dict:
    """`dims` with whole numbers (numpy's too: X.max() + 1) as ints; another value is a
    UsageError naming it."""
    out = {}
    for name, n in (dims or {}).items():
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) \
                or n < 1 or not isinstance(name, str):
            raise UsageError(f"dims[{name!r}] must be a whole number >= 1, not {n!r}")
        out[name] = int(n)
    return out


def init_rule(rule):
    """`param_init` as an initialiser tuple: ("uniform", 0.1), or a name alone ("xavier",
    "orthogonal"; a string was read as its characters and fell back to xavier)."""
    if rule is None:
        return None
    from .lang.elaborate import init_problem
    rule = (rule,) if isinstance(rule, str) else tuple(rule)
    name, *args = rule or ("",)
    problem = init_problem(str(name), args)
    if problem:
        raise UsageError(f"param_init must be an initialiser such as ('uniform', 0.1) or "
                         f"'orthogonal', not {rule!r}: {problem}")
    return rule


def mapping(what: str, d) -> dict:
    """`inputs`, `targets` or `lengths` as a dict (None: empty), or a UsageError saying
    what it must be."""
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        example = "{'t': [...]}" if what == "lengths" else "{'x': array}"
        raise UsageError(f"{what} must be a dict by name ({what}={example}), not a "
                         f"{type(d).__name__}")
    return dict(d)


def as_ids(name: str, arr) -> np.ndarray:
    """`arr` as ids: integers (or floats, or objects, holding whole numbers), else a
    UsageError naming the first value that is no id (0.5, inf, nan, a string)."""
    try:
        a = np.asarray(arr)
    except ValueError:                     # rows of different lengths
        raise UsageError(f"'{name}' must be one rectangular array of ids (pad shorter "
                         f"rows with -1)") from None
    if a.dtype.kind in "iub":
        return a
    f = None
    if a.dtype.kind in "fO":
        try:
            f = np.asarray(a, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            f = None
    if f is None or not (np.isfinite(f).all() and np.array_equal(f, np.round(f))):
        bad = next((v for v, w in zip(a.flat, f.flat, strict=True)
                    if not np.isfinite(w) or w != round(w)),
                   None) if f is not None else a.flat[0] if a.size else None
        bad = bad.item() if isinstance(bad, np.generic) else bad
        raise UsageError(f"'{name}' holds ids, integers; it was given {bad!r} "
                         f"({a.dtype} values)")
    return f


# ------------------------------------------------------------------ one run's arrays
def own_params(m) -> None:
    """Every parameter of its shape, and an array of the model's dtype in C order:
    the compiled executor reads the memory of each as such (an array assigned in
    another dtype or layout gave wrong numbers, a wrong shape corrupted memory). One
    assigned otherwise (`params.update(np.load(f))`, a transposed view) is copied in
    the model's dtype; a wrong shape is refused."""
    for name, a in list(m.params.items()):
        shape = m.param_shapes.get(name)
        if shape is None:
            continue
        if not isinstance(a, np.ndarray) or a.dtype != m.dtype or \
                not a.flags.c_contiguous or not a.flags.writeable:
            try:
                a = np.asarray(a)
            except (TypeError, ValueError):
                a = None
            if a is None or a.dtype.kind not in "iuf":
                raise UsageError(f"params['{name}'] must be an array of numbers")
            if a.shape == shape:
                m.params[name] = a = np.array(a, dtype=m.dtype, order="C")
        if a.shape != shape:
            raise UsageError(f"params['{name}'] has shape {list(a.shape)}; the model's "
                             f"'{name}' is {list(shape)} (assign an array of that "
                             f"shape, or into it: params['{name}'][...] = ...)")


def check_roles(m, inputs: dict, targets: dict) -> None:
    """An input given in `targets`, or a target in `inputs` (its loss silently 0)."""
    for where, role, other in (("inputs", "target", "targets"),
                               ("targets", "input", "inputs")):
        for name in (inputs if where == "inputs" else targets):
            if m.graph.var(name).role == role:
                raise UsageError(f"'{name}' is {'a' if role == 'target' else 'an'} "
                                 f"{role} of model '{m.graph.name}': give it in "
                                 f"{other}, not in {where}")


def check_sampling(m, teacher: float) -> None:
    """Scheduled sampling feeds a class target the model's own sample of it: each
    output must come before the next step reads it, as for generation (a backward
    recurrence reading y[t-1] makes it a cycle)."""
    if m.sampling_problem:
        raise UsageError(f"teacher = {teacher:g}: scheduled sampling feeds the model "
                         f"its own outputs, each before the next step reads it; "
                         f"{m.sampling_problem}")


def check_carry(m, carry, inputs: dict, targets: dict) -> dict | None:
    """A carry (`res.carry` of the previous window) names carried variables, each a
    list of [B, n] arrays of this batch's B ([B] ids of a variable of ids: a class
    target or a one-hot input read with a delay); returned as arrays of the model's
    dtype (ids as integers), which both executors read alike."""
    if carry is None:
        return None
    if not isinstance(carry, Mapping):
        raise UsageError(f"carry must be the carry of an earlier result (res.carry), "
                         f"not a {type(carry).__name__}")
    trees = {i for i, k in m.graph.indexes if k == "tree"}
    B = next((len(a) for name, a in (*inputs.items(), *targets.items())
              if hasattr(a, "__len__") and m.graph.var(name).index not in trees),
             None)
    out = {}
    for name, steps in carry.items():
        if name not in m.carried:
            raise UsageError(f"carry names '{name}', which model '{m.graph.name}' "
                             f"does not carry (it carries: "
                             f"{', '.join(m.carried) or 'nothing'})")
        if not isinstance(steps, (list, tuple)):     # an array's rows read as steps
            raise UsageError(f"carry['{name}'] must be a list of arrays, the newest "
                             f"step first, as res.carry gives it ([h] for one step)")
        ids = m.graph.var(name).is_ids
        want = [B if B is not None else "B"] + ([] if ids else [m.sizes[name]])
        out[name] = []
        for a in steps:
            a = as_ids(f"carry['{name}']", a) if ids else np.asarray(a, m.dtype)
            shape = list(a.shape)
            if len(shape) != len(want) or any(w != "B" and s != w
                                              for s, w in zip(shape, want, strict=True)):
                raise UsageError(f"carry['{name}'] holds an array of shape {shape}; "
                                 f"this batch carries {want} (a carry is for the next "
                                 f"window of the same examples)")
            out[name].append(a.astype(np.int64) if ids else a)
    return out


def check_lengths(m, lengths: dict) -> dict:
    """`lengths` names sequence indexes, each with a length or B lengths (whole
    numbers): a misspelt index ran the padding as steps."""
    seqs = [i for i, k in m.graph.indexes if k != "tree"]
    out = {}
    for i, n in lengths.items():
        if i not in dict(m.graph.indexes):
            near = did_you_mean(str(i), seqs) or \
                f"its indexes: {', '.join(seqs) or 'none'}"
            raise UsageError(f"lengths names '{i}', which is no index of model "
                             f"'{m.graph.name}' ({near})")
        try:
            arr = np.asarray(n)
        except (TypeError, ValueError):
            arr = np.asarray(None)
        if arr.dtype.kind not in "iu" and not (
                arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and
                np.all(arr == np.round(arr))) or arr.ndim > 1:
            raise UsageError(f"lengths['{i}'] must be a whole number or one per "
                             f"example, not {n!r}")
        out[i] = int(arr) if arr.ndim == 0 else arr.astype(np.int64)
    return out


def zero_padding(m, data: dict, lengths: dict) -> dict:
    """The values of vector arrays past each example's length set to 0 (on a copy):
    a NaN there (padded time series) reached the loss and every gradient, masked by a
    product with 0."""
    out = dict(data)
    for name, arr in data.items():
        v = m.graph.var_map.get(name)
        n = lengths.get(getattr(v, "index", None))
        if v is None or v.is_ids or n is None or np.ndim(n) == 0:
            continue
        try:
            a = np.asarray(arr)
        except ValueError:                # ragged: batch_shape says so
            continue
        if a.ndim != 3 or a.shape[0] != len(n):
            continue                      # batch_shape says what is wrong
        past = np.arange(a.shape[1])[None, :] >= np.asarray(n)[:, None]
        if past.any() and a.dtype.kind in "fc":
            a = a.copy()
            a[past] = 0
            out[name] = a
    return out


def check_given(m, inputs: dict, targets: dict, grads: bool) -> None:
    """Every input the equations read, and every target they read back, is given;
    with grads, every target a loss reads too (without, its loss would be 0 and every
    gradient zero, silently)."""
    g, read = m.graph, m.reads
    for v in g.inputs():
        if v.name in read and v.name not in inputs:
            raise UsageError(f"'{v.name}' is an input of model '{g.name}': give it in "
                             f"inputs")
    for v in g.targets():
        if v.name in read and v.name not in targets:
            raise UsageError(f"the model reads its target '{v.name}' back: give it in "
                             f"targets (-1 where a value is not known, as generation "
                             f"gives; forward(..., targets=...))")
    if grads:
        missing = [t for t in dict.fromkeys(loss.target.var for loss in g.losses)
                   if g.var(t).role == "target" and t not in targets]
        if missing:
            raise UsageError(f"the loss reads the target{'s' * (len(missing) > 1)} "
                             f"{', '.join(repr(t) for t in missing)}: give "
                             f"{'them' if len(missing) > 1 else 'it'} in targets "
                             f"(without, its loss would be 0 and every gradient zero)")


def check_padding(m, inputs: dict, lengths: dict) -> None:
    """Ids padded with -1 at the end of an example, no `lengths` for their index, and
    a reference that reads a later step of it (`h[end]`, `g[t+1]`, `sum over t`): the
    -1s would run as steps (zero inputs) into values of the real ones. Refused, where
    the same batch with `lengths` reads each example's own last step."""
    from .graph.leaks import read_past_end
    g = m.graph
    for v in g.inputs():
        if not v.is_ids or v.index is None or v.index in lengths or v.name not in inputs:
            continue
        a = np.asarray(inputs[v.name])
        short = np.flatnonzero(a[:, -1] == -1) if a.ndim == 2 and a.size else ()
        if not len(short):
            continue
        found = read_past_end(g, v.index)
        if found is None:
            continue
        ahead, shown = found
        b = int(short[0])
        n = int(np.flatnonzero(a[b] != -1)[-1]) + 1 if (a[b] != -1).any() else 0
        line = f" (line {ahead.pos.line})" if ahead.pos and ahead.pos.line else ""
        raise UsageError(
            f"'{v.name}' is padded with -1 (example {b} has {n} of {a.shape[1]} "
            f"steps) and {shown}{line} would read the -1s: give each example's "
            f"length, lengths={{'{v.index}': [...]}} (a loader's batch has them: "
            f"b.lengths); lengths={{'{v.index}': {a.shape[1]}}} runs the -1s as steps")


def check_names_and_ids(m, data: dict) -> None:
    """Every array names a variable, and ids are ids of its size (-1: padding): an
    id past the size would index another row of a matrix, or none."""
    names = m.graph.var_map
    for name, arr in data.items():
        v = names.get(name)
        if v is None:
            given = [u.name for u in m.graph.inputs() + m.graph.targets()]
            near = did_you_mean(name, given) or f"its inputs and targets: " \
                f"{', '.join(given)}"
            raise UsageError(f"'{name}' is not a variable of model "
                             f"'{m.graph.name}' ({near})")
        if not v.is_ids:
            continue
        a, size = as_ids(name, arr), m.sizes[name]
        if not a.size:
            continue
        lo, hi = int(a.min()), int(a.max())
        if hi >= size or lo < -1:
            raise UsageError(f"'{name}' holds the id {hi if hi >= size else lo}; its "
                             f"ids are 0 to {size - 1} (its size), -1 for padding")


def batch_shape(m, data: dict, lengths=None, forest=None):
    """The batch size and the length of every sequence index, from the arrays given
    (over a tree index: the number of trees, and of nodes in the forest)."""
    B = None
    lens = {i: int(n) for i, n in (lengths or {}).items() if np.ndim(n) == 0}
    trees = {i for i, k in m.graph.indexes if k == "tree"}
    if trees and forest is None:
        raise UsageError("a tree model runs on a forest: run(..., forest=...)")
    given = next((i for i in (lengths or {}) if i in trees), None)
    if given is not None:
        raise UsageError(f"lengths['{given}']: '{given}' is a tree index, sized by the "
                         f"forest; lengths are for sequence indexes")
    if forest is not None:
        B = forest.batch
        lens.update({i: forest.size for i in trees})
    for v in m.graph.vars:
        if v.name not in data:
            continue
        try:
            arr = np.asarray(data[v.name])
        except ValueError:                 # rows of different lengths
            raise UsageError(f"'{v.name}' must be one rectangular array (pad shorter "
                             f"sequences, and give lengths)") from None
        if v.index in trees:
            check_tree_array(v, arr, forest)
            continue
        want = (2 if v.is_ids else 3) if v.index is not None else (1 if v.is_ids else 2)
        if arr.ndim != want:
            raise UsageError(f"'{v.name}' must be an array of {want} dimensions "
                             f"([B{', T' if v.index else ''}"
                             f"{'' if v.is_ids else ', ' + str(m.sizes[v.name])}])"
                             f", not {arr.shape}")
        if not v.is_ids and arr.shape[-1] != m.sizes[v.name]:
            raise UsageError(f"'{v.name}' holds vectors of {arr.shape[-1]} numbers; "
                             f"'{v.name}' is a vec({m.sizes[v.name]})")
        if B is not None and arr.shape[0] != B:
            raise UsageError(f"'{v.name}' has {arr.shape[0]} examples, others {B}")
        B = arr.shape[0]
        if v.index is not None:
            if lens.get(v.index, arr.shape[1]) != arr.shape[1]:
                raise UsageError(f"'{v.name}' has {arr.shape[1]} steps on index "
                                 f"'{v.index}', others {lens[v.index]}")
            lens[v.index] = arr.shape[1]
    if B is None:
        raise UsageError("the batch has no inputs")
    if B == 0:
        raise UsageError("the batch has no examples (B = 0)")
    empty = next((i for i, n in lens.items() if n < 1 and i not in trees), None)
    if empty is not None:
        raise UsageError(f"index '{empty}' has 0 steps in this batch: a sequence needs "
                         f"at least one")
    for i, n in (lengths or {}).items():
        if np.ndim(n) and i not in lens:
            lens[i] = int(np.max(n))
    for v in m.graph.vars:
        if v.index is not None and v.index not in lens:
            raise UsageError(f"the length of index '{v.index}' is not known: give "
                             f"'{v.name}' or lengths={{'{v.index}': T}}")
    return B, lens


def example_lengths(lengths, B: int, lens: dict) -> dict:
    """Each example's length [B] on the indexes given as arrays, where some example
    is shorter than the arrays (the rest is padding)."""
    out = {}
    for i, n in (lengths or {}).items():
        if np.ndim(n) == 0:
            continue
        arr = np.asarray(n, dtype=np.int64)
        if arr.shape != (B,) or arr.min() < 1 or arr.max() > lens[i]:
            raise UsageError(f"lengths['{i}'] must hold {B} lengths in 1..{lens[i]}, "
                             f"not {arr.tolist()}")
        if (arr < lens[i]).any():
            out[i] = arr
    return out


def check_tree_array(v, arr, forest) -> None:
    """A node array over a tree index: one row per node of the forest."""
    want = 1 if v.is_ids else 2
    if arr.ndim != want or arr.shape[0] != forest.size:
        raise UsageError(f"'{v.name}' must be an array [{forest.size}"
                         f"{'' if v.is_ids else ', D'}] (one row per node), "
                         f"not {arr.shape}")
