"""The Python API: a spec, read and checked (`read_spec`), and a Model with bound sizes,
parameters and an executor (`Model`, `load`). See docs/internals.md."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx
import numpy as np

from . import resources
from .errors import Pos, SpecError, UsageError, did_you_mean
from .graph.check import Checked, check
from .graph.folded import FoldedGraph, refs
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


DTYPES = {"float32": np.float32, "float64": np.float64}


def _dtype(dtype) -> np.dtype:
    """float32 or float64, named as numpy or a string does ("float64", np.float64,
    np.dtype("f8"), "f8")."""
    try:
        d = None if dtype is None else np.dtype(dtype)
    except TypeError:
        d = None
    if d is None or d.name not in DTYPES:
        raise UsageError(f"dtype must be float32 or float64, not {dtype}")
    return np.dtype(DTYPES[d.name])          # native byte order (">f8" is float64 too)


def _dims(dims) -> dict:
    """`dims` with whole numbers (numpy's too: X.max() + 1) as ints; another value is a
    UsageError naming it."""
    out = {}
    for name, n in (dims or {}).items():
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) \
                or n < 1 or not isinstance(name, str):
            raise UsageError(f"dims[{name!r}] must be a whole number >= 1, not {n!r}")
        out[name] = int(n)
    return out


def _init_rule(rule):
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


def _mapping(what: str, d) -> dict:
    """`inputs`, `targets` or `lengths` as a dict (None: empty), or a UsageError saying
    what it must be."""
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        example = "{'t': [...]}" if what == "lengths" else "{'x': array}"
        raise UsageError(f"{what} must be a dict by name ({what}={example}), not a "
                         f"{type(d).__name__}")
    return dict(d)


def _ids(name: str, arr) -> np.ndarray:
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
        bad = next((v for v, w in zip(a.flat, f.flat) if not np.isfinite(w) or w != round(w)),
                   None) if f is not None else a.flat[0] if a.size else None
        bad = bad.item() if isinstance(bad, np.generic) else bad
        raise UsageError(f"'{name}' holds ids, integers; it was given {bad!r} "
                         f"({a.dtype} values)")
    return f


class Model:
    """A spec with every size bound, parameters initialised, and an executor."""

    def __init__(self, spec: Spec, dims: dict | None = None, dtype="float32", seed=0,
                 executor: str = "interp", param_init=None, start_ids=None):
        self.spec = spec
        self.graph = spec.graph
        self.checked = check(spec.graph, _dims(dims))
        missing = self.checked.unbound()
        if missing and dims:                # `dims={"v": 5}`: a slip for V, said so
            check_dim_names(_dims(dims), spec.graph.size_names, spec.path)
        if missing:
            names = ", ".join(sorted(missing))
            raise UsageError(f"{spec.path}: the size{'s' * (len(missing) > 1)} {names} "
                             f"{'are' if len(missing) > 1 else 'is'} not bound: give "
                             f"--dim {min(missing)}=N (or dims=...), or data that "
                             f"binds it" + _slip(spec.graph, min(missing)))
        self.dtype = _dtype(dtype)
        self.dims = dict(self.checked.dims)
        self.sizes = {v: int(s.const) for v, s in self.checked.sizes.items()}
        self.param_shapes = {p: tuple(int(d.const) for d in sh)
                             for p, sh in self.checked.param_shapes.items()}
        resources.check_params(spec.path, self.param_shapes, self.dtype.itemsize)
        self.start_ids = dict(start_ids or {})
        self.carried = dict(self.graph.carried)
        self.reads = set().union(*(v.reads for v in self.graph.hidden()))  # by equations
        self.params = init_params(self.graph, self.param_shapes, self.dtype, seed,
                                  _init_rule(param_init))
        self._schedules = {}
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
        if not 0.0 <= teacher <= 1.0:
            raise UsageError(f"teacher must be a probability in [0, 1], not {teacher}")
        if teacher < 1.0:
            self._check_sampling(teacher)
        inputs, targets = _mapping("inputs", inputs), _mapping("targets", targets)
        lengths = self._check_lengths(_mapping("lengths", lengths))
        self._own_params()
        self._check_names_and_ids({**inputs, **targets})
        self._check_roles(inputs, targets)
        carry = self._check_carry(carry, inputs, targets)
        self._check_given(inputs, targets, grads)
        self._check_padding(inputs, lengths)
        inputs, targets = self._zero_padding(inputs, lengths), \
            self._zero_padding(targets, lengths)
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
    def _own_params(self) -> None:
        """Every parameter of its shape, and an array of the model's dtype in C order:
        the compiled executor reads the memory of each as such (an array assigned in
        another dtype or layout gave wrong numbers, a wrong shape corrupted memory). One
        assigned otherwise (`params.update(np.load(f))`, a transposed view) is copied in
        the model's dtype; a wrong shape is refused."""
        for name, a in list(self.params.items()):
            shape = self.param_shapes.get(name)
            if shape is None:
                continue
            if not isinstance(a, np.ndarray) or a.dtype != self.dtype or \
                    not a.flags.c_contiguous or not a.flags.writeable:
                try:
                    a = np.asarray(a)
                except (TypeError, ValueError):
                    a = None
                if a is None or a.dtype.kind not in "iuf":
                    raise UsageError(f"params['{name}'] must be an array of numbers")
                if a.shape == shape:
                    self.params[name] = a = np.array(a, dtype=self.dtype, order="C")
            if a.shape != shape:
                raise UsageError(f"params['{name}'] has shape {list(a.shape)}; the model's "
                                 f"'{name}' is {list(shape)} (assign an array of that "
                                 f"shape, or into it: params['{name}'][...] = ...)")

    def _check_roles(self, inputs: dict, targets: dict) -> None:
        """An input given in `targets`, or a target in `inputs` (its loss silently 0)."""
        for where, role, other in (("inputs", "target", "targets"),
                                   ("targets", "input", "inputs")):
            for name in (inputs if where == "inputs" else targets):
                if self.graph.var(name).role == role:
                    raise UsageError(f"'{name}' is {'a' if role == 'target' else 'an'} "
                                     f"{role} of model '{self.graph.name}': give it in "
                                     f"{other}, not in {where}")

    def _check_sampling(self, teacher: float) -> None:
        """Scheduled sampling feeds a class target the model's own sample of it: each
        output must come before the next step reads it, as for generation (a backward
        recurrence reading y[t-1] makes it a cycle). Checked once a model."""
        if not hasattr(self, "_sampling_why"):
            from .graph.generate_check import can_generate
            ok, why = can_generate(self.graph, not_sampled=False) if self.feedback() \
                else (True, "")
            self._sampling_why = "" if ok else why
        if self._sampling_why:
            raise UsageError(f"teacher = {teacher:g}: scheduled sampling feeds the model "
                             f"its own outputs, each before the next step reads it; "
                             f"{self._sampling_why}")

    def _check_carry(self, carry, inputs: dict, targets: dict) -> dict | None:
        """A carry (`res.carry` of the previous window) names carried variables, each a
        list of [B, n] arrays of this batch's B ([B] ids of a variable of ids: a class
        target or a one-hot input read with a delay); returned as arrays of the model's
        dtype (ids as integers), which both executors read alike."""
        if carry is None:
            return None
        if not isinstance(carry, Mapping):
            raise UsageError(f"carry must be the carry of an earlier result (res.carry), "
                             f"not a {type(carry).__name__}")
        trees = {i for i, k in self.graph.indexes if k == "tree"}
        B = next((len(a) for name, a in (*inputs.items(), *targets.items())
                  if hasattr(a, "__len__") and self.graph.var(name).index not in trees),
                 None)
        out = {}
        for name, steps in carry.items():
            if name not in self.carried:
                raise UsageError(f"carry names '{name}', which model '{self.graph.name}' "
                                 f"does not carry (it carries: "
                                 f"{', '.join(self.carried) or 'nothing'})")
            if not isinstance(steps, (list, tuple)):     # an array's rows read as steps
                raise UsageError(f"carry['{name}'] must be a list of arrays, the newest "
                                 f"step first, as res.carry gives it ([h] for one step)")
            ids = self.graph.var(name).is_ids
            want = [B if B is not None else "B"] + ([] if ids else [self.sizes[name]])
            out[name] = []
            for a in steps:
                a = _ids(f"carry['{name}']", a) if ids else np.asarray(a, self.dtype)
                shape = list(a.shape)
                if len(shape) != len(want) or any(w != "B" and s != w
                                                  for s, w in zip(shape, want)):
                    raise UsageError(f"carry['{name}'] holds an array of shape {shape}; "
                                     f"this batch carries {want} (a carry is for the next "
                                     f"window of the same examples)")
                out[name].append(a.astype(np.int64) if ids else a)
        return out

    def _check_lengths(self, lengths: dict) -> dict:
        """`lengths` names sequence indexes, each with a length or B lengths (whole
        numbers): a misspelt index ran the padding as steps."""
        seqs = [i for i, k in self.graph.indexes if k != "tree"]
        out = {}
        for i, n in lengths.items():
            if i not in dict(self.graph.indexes):
                near = did_you_mean(str(i), seqs) or \
                    f"its indexes: {', '.join(seqs) or 'none'}"
                raise UsageError(f"lengths names '{i}', which is no index of model "
                                 f"'{self.graph.name}' ({near})")
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

    def _zero_padding(self, data: dict, lengths: dict) -> dict:
        """The values of vector arrays past each example's length set to 0 (on a copy):
        a NaN there (padded time series) reached the loss and every gradient, masked by a
        product with 0."""
        out = dict(data)
        for name, arr in data.items():
            v = self.graph.var_map.get(name)
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

    def _check_given(self, inputs: dict, targets: dict, grads: bool) -> None:
        """Every input the equations read, and every target they read back, is given;
        with grads, every target a loss reads too (without, its loss would be 0 and every
        gradient zero, silently)."""
        g, read = self.graph, self.reads
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

    def _check_padding(self, inputs: dict, lengths: dict) -> None:
        """Ids padded with -1 at the end of an example, no `lengths` for their index, and
        a reference that reads a later step of it (`h[end]`, `g[t+1]`, `sum over t`): the
        -1s would run as steps (zero inputs) into values of the real ones. Refused, where
        the same batch with `lengths` reads each example's own last step."""
        from .graph.leaks import read_past_end
        g = self.graph
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

    def _check_names_and_ids(self, data: dict) -> None:
        """Every array names a variable, and ids are ids of its size (-1: padding): an
        id past the size would index another row of a matrix, or none."""
        names = self.graph.var_map
        for name, arr in data.items():
            v = names.get(name)
            if v is None:
                given = [u.name for u in self.graph.inputs() + self.graph.targets()]
                near = did_you_mean(name, given) or f"its inputs and targets: " \
                    f"{', '.join(given)}"
                raise UsageError(f"'{name}' is not a variable of model "
                                 f"'{self.graph.name}' ({near})")
            if not v.is_ids:
                continue
            a, size = _ids(name, arr), self.sizes[name]
            if not a.size:
                continue
            lo, hi = int(a.min()), int(a.max())
            if hi >= size or lo < -1:
                raise UsageError(f"'{name}' holds the id {hi if hi >= size else lo}; its "
                                 f"ids are 0 to {size - 1} (its size), -1 for padding")

    def batch_shape(self, data: dict, lengths=None, forest=None):
        """The batch size and the length of every sequence index, from the arrays given
        (over a tree index: the number of trees, and of nodes in the forest)."""
        B = None
        lens = {i: int(n) for i, n in (lengths or {}).items() if np.ndim(n) == 0}
        trees = {i for i, k in self.graph.indexes if k == "tree"}
        if trees and forest is None:
            raise UsageError("a tree model runs on a forest: run(..., forest=...)")
        given = next((i for i in (lengths or {}) if i in trees), None)
        if given is not None:
            raise UsageError(f"lengths['{given}']: '{given}' is a tree index, sized by the "
                             f"forest; lengths are for sequence indexes")
        if forest is not None:
            B = forest.batch
            lens.update({i: forest.size for i in trees})
        for v in self.graph.vars:
            if v.name not in data:
                continue
            try:
                arr = np.asarray(data[v.name])
            except ValueError:                 # rows of different lengths
                raise UsageError(f"'{v.name}' must be one rectangular array (pad shorter "
                                 f"sequences, and give lengths)") from None
            if v.index in trees:
                self._check_tree_array(v, arr, forest)
                continue
            want = (2 if v.is_ids else 3) if v.index is not None else (1 if v.is_ids else 2)
            if arr.ndim != want:
                raise UsageError(f"'{v.name}' must be an array of {want} dimensions "
                                 f"([B{', T' if v.index else ''}"
                                 f"{'' if v.is_ids else ', ' + str(self.sizes[v.name])}])"
                                 f", not {arr.shape}")
            if not v.is_ids and arr.shape[-1] != self.sizes[v.name]:
                raise UsageError(f"'{v.name}' holds vectors of {arr.shape[-1]} numbers; "
                                 f"'{v.name}' is a vec({self.sizes[v.name]})")
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
        for v in self.graph.vars:
            if v.index is not None and v.index not in lens:
                raise UsageError(f"the length of index '{v.index}' is not known: give "
                                 f"'{v.name}' or lengths={{'{v.index}': T}}")
        return B, lens

    def example_lengths(self, lengths, B: int, lens: dict) -> dict:
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

    def feedback(self) -> dict:
        """Class targets read with a delay inside an equation -> the output their loss
        pairs them with (what generation and scheduled sampling feed back)."""
        fed = {u for u, _, s in self.graph.nx().edges(data="shift")
               if s.kind == "rel" and s.k < 0}
        return {l.target.var: l.output.var for l in self.graph.losses
                if l.fn == "xent" and l.target.var in fed}

    def _check_tree_array(self, v, arr, forest):
        want = 1 if v.is_ids else 2
        if arr.ndim != want or arr.shape[0] != forest.size:
            raise UsageError(f"'{v.name}' must be an array [{forest.size}"
                             f"{'' if v.is_ids else ', D'}] (one row per node), "
                             f"not {arr.shape}")

    def schedule(self, lengths: dict, forest=None) -> list:
        if forest is not None:       # a new forest each batch: no cache
            return _schedule(self.graph, lengths, forest)
        key = tuple(sorted(lengths.items()))
        if key not in self._schedules:
            self._schedules[key] = _schedule(self.graph, dict(key))
        return self._schedules[key]

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
        ends = {r.var for e in v.exprs for r in refs(e) if r.shift.kind == "end"} - {v.name}
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
