"""The reference interpreter: the definition of what a spec means.

It walks the unfolded DAG in topological order, applies each op's forward from the
table in ops.py and records it on a tape; reverse mode walks the tape backwards with each
op's VJP (micrograd's scheme, over batch-major arrays). Small, obviously right, slow:
every other executor is tested against it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import given, ops
from .errors import UsageError
from .graph.folded import Apply, Num, ParamRef, Ref, ShiftKind
from .graph.unfold import Outside, Roots, case_at, env_of, position


@dataclass
class Result:
    loss: float
    grads: dict | None = None
    values: dict = field(default_factory=dict)
    carry: dict = field(default_factory=dict)
    terms: dict = field(default_factory=dict)   # loss line -> (sum, count of tokens)


class Tape:
    """Values and the ops that made them; `backward` accumulates gradients."""

    def __init__(self):
        self.vals, self.entries = [], []

    def leaf(self, value) -> int:
        self.vals.append(value)
        return len(self.vals) - 1

    def apply(self, op, args, attrs, ctx) -> int:
        out, saved = ops.forward(op, ctx, [self.vals[a] for a in args], attrs)
        i = self.leaf(out)
        self.entries.append((op, args, i, saved))
        return i

    def backward(self, seeds: dict, want=None) -> list:
        """Gradients of every value from the seeds {value: its gradient}. With `want`
        (a set of values), only theirs are computed: a gradient flows only into the
        wanted values and what is computed from them (no other path reaches them), and
        is dropped once passed on (a tape's worth of gradients never lives at once)."""
        grads = [None] * len(self.vals)
        for i, g in seeds.items():
            grads[i] = g if grads[i] is None else grads[i] + g
        live = None if want is None else self._downstream(want)
        for op, args, out, saved in reversed(self.entries):
            g = grads[out]
            if g is None or (live is not None and not any(a in live for a in args)):
                continue
            ds = ops.vjp(op, g, self.vals[out], saved, [self.vals[a] for a in args])
            for a, d in zip(args, ds, strict=True):
                if d is not None and (live is None or a in live):
                    grads[a] = d if grads[a] is None else grads[a] + d
            if live is not None and out not in want:
                grads[out] = None
        return grads

    def _downstream(self, want) -> set:
        """The values `want` and every value computed from one of them."""
        live = set(want)
        for _, args, out, _ in self.entries:
            if any(a in live for a in args):
                live.add(out)
        return live


class Interpreter:
    """Runs a Model (model.py) on one batch."""

    def __init__(self, model):
        self.m = model
        self.g = model.graph

    # ---------------------------------------------------------------- the batch
    def run(self, inputs, targets=None, carry=None, train=False, grads=False, rng=None,
            lengths=None, forest=None, teacher=1.0):
        m, g = self.m, self.g
        data = {**(inputs or {}), **(targets or {})}
        asked = lengths
        B, lengths = given.batch_shape(m, data, lengths, forest)
        self.ex_len = given.example_lengths(asked, B, lengths)
        self.teacher, self.fed = teacher, m.feedback() if teacher < 1 else {}
        self.forest = forest
        self.trees = {i for i, k in g.indexes if k == "tree"}
        tape, ctx = Tape(), ops.Ctx(train=train, rng=rng or np.random.default_rng(0))
        self.tape, self.ctx, self.B, self.lengths = tape, ctx, B, lengths
        self.carry_in = carry or {}
        self.pids = {p: tape.leaf(v) for p, v in m.params.items()}
        self.nodes, self.reduced, self.dropped = {}, {}, {}
        for v in g.vars:
            if v.role != "hidden" and v.name in data:
                self._leaf_data(v, data[v.name])
        for name, step in m.schedule(lengths, forest):
            v = g.var(name)
            expr = v.init if step == "init" else case_at(v, step, forest).expr
            env = env_of(v, step)
            self.nodes[(name, step)] = self._per_example(self._eval(expr, name, env), env)
        loss, seeds, terms = self._losses(targets or {})
        res = Result(loss, None, self._values(), self._carry_out(), terms)
        if grads:
            gs = tape.backward(seeds)
            res.grads = {p: (gs[i] if gs[i] is not None else np.zeros_like(m.params[p]))
                         for p, i in self.pids.items()}
        return res

    def _leaf_data(self, v, arr):
        arr = np.asarray(arr)
        if v.is_ids:
            arr = arr.astype(np.int64)
        else:
            arr = arr.astype(self.m.dtype)
        if v.index is None:
            self.nodes[(v.name, None)] = self.tape.leaf(arr)
            return
        if v.index in self.trees:       # one row per node, each a batch of one
            for s in range(arr.shape[0]):
                self.nodes[(v.name, s)] = self.tape.leaf(arr[s:s + 1])
            return
        for s in range(arr.shape[1]):
            self.nodes[(v.name, s)] = self.tape.leaf(np.ascontiguousarray(arr[:, s]))

    # ---------------------------------------------------------------- expressions
    def _eval(self, e, var, env: dict) -> int:
        """An expression at the index values `env` ({t: 3}, {u: 1, t: 3}, {})."""
        if isinstance(e, Num):
            return self.tape.leaf(e.value)
        if isinstance(e, ParamRef):
            return self.pids[e.name]
        if isinstance(e, Ref):
            return self._read(e, env)
        assert isinstance(e, Apply)
        if "over" in e.kw:
            return self._reduce(e, var, env)
        if e.op is ops.Op.REAL_STEPS:
            return self._real_steps(e, var, env)
        if e.op is ops.Op.DROPOUT:
            # one dropout drawn once at the same index values, wherever the expression
            # holds it (`softmax over t (dropout(x))` reads x twice: one mask)
            key = (id(e), tuple(sorted(env.items())))
            if key not in self.dropped:
                x = self._per_example(self._eval(e.args[0], var, env), env)
                self.dropped[key] = self.tape.apply(e.op, [x], e.attrs, self.ctx)
            return self.dropped[key]
        args = [self._eval(a, var, env) for a in e.args]
        attrs = e.attrs
        if e.op is ops.Op.ONEHOT:
            attrs = (("size", self.m.sizes[e.args[0].var]), ("dtype", self.m.dtype))
        return self.tape.apply(e.op, args, attrs, self.ctx)

    def _per_example(self, i: int, env: dict) -> int:
        """A value with no batch axis (made of parameters alone: `init h = tanh(I)`,
        `o[t] = b`) broadcast to [B, n], as every variable's value is: a dropout of it
        draws a mask per example, as the language says, and reductions, losses and root
        reads see one row an example. A tree node is a batch of one: [1, n]."""
        if np.ndim(self.tape.vals[i]) != 1:
            return i
        rows = 1 if any(k in self.trees for k in env) else self.B
        zeros = self.tape.leaf(np.zeros((rows, self.tape.vals[i].shape[0]), self.m.dtype))
        return self.tape.apply(ops.Op.ADD, [i, zeros], (), self.ctx)

    def _reduce(self, e: Apply, var, env: dict) -> int:
        """`sum over t (E)`: E at every step of t, reduced in one op (padded steps
        masked); computed once for the other index values (softmax over t reads it at
        every t)."""
        over = e.kw["over"]
        outer = tuple(sorted((k, v) for k, v in env.items() if k != over))
        key = (id(e), outer)
        if key not in self.reduced:
            args = [self._eval(e.args[0], var, {**env, over: s})
                    for s in range(self.lengths[over])]
            attrs = ()
            if over in self.ex_len:
                steps = np.arange(self.lengths[over])[:, None]
                attrs = (("mask", steps < self.ex_len[over][None, :]),)
            self.reduced[key] = self.tape.apply(e.op, args, attrs, self.ctx)
        return self.reduced[key]

    def _real_steps(self, e: Apply, var, env: dict) -> int:
        """E at the real steps of t, -inf at this step for the examples it pads (softmax
        over t weighs them 0); E itself where no example is padded here."""
        x = self._eval(e.args[0], var, env)
        over = e.kw["steps"]
        n = self.ex_len.get(over)
        if n is None or (env[over] < n).all():
            return x
        keep = (env[over] < n)[:, None]
        return self.tape.apply(e.op, [x], (("keep", keep),), self.ctx)

    def _read(self, r: Ref, env: dict) -> int:
        """The value r gives at `env`; where a tree meets per-example values, the rows
        that belong together: a tree node reads its own example's row of a per-example
        value (`z`, `x[end]`), and a per-example read of `h[root]` stacks every tree's
        root, in the batch's order."""
        i = self._read_at(r, env)
        node = next((env[k] for k in env if k in self.trees), None)
        v = self.g.var(r.var)
        if node is not None and v.index not in self.trees and \
                (v.is_ids or np.ndim(self.tape.vals[i]) > 1):   # [n]: no batch axis
            rows = (("rows", self.forest.tree[node:node + 1]),)
            return self.tape.apply(ops.Op.TAKE, [i], rows, self.ctx)
        return i

    def _read_at(self, r: Ref, env: dict) -> int:
        v = self.g.var(r.var)
        src = position(self.g, r, env, self.lengths, self.forest)
        if isinstance(src, Roots):
            return self.tape.apply(ops.Op.STACK, [self.nodes[n] for n in src.nodes], (),
                                   self.ctx)
        if isinstance(src, Outside):
            return self._outside(src)
        if src not in self.nodes:
            raise KeyError(f"no value for {src} (is '{r.var}' given in the batch?)")
        if v.index in self.ex_len and v.inner is None:
            padded = self._padded(r, src)
            if padded is not None:
                return padded
        if r.var in self.fed and r.shift.kind == ShiftKind.REL and r.shift.k < 0:
            return self._fed(r.var, src[1])
        return self.nodes[src]

    # ---------------------------------------------------------------- padding
    def _padded(self, r: Ref, src):
        """A read on an index with per-example lengths: h[end] is each example's own last
        step; an advance past an example's end reads what stands after the end (init or
        zero). None when the read is the same as without padding."""
        index = self.g.var(r.var).index
        n = self.ex_len[index]
        if r.shift.kind == ShiftKind.END:
            steps = range(self.lengths[index])
            if any((r.var, s) not in self.nodes for s in steps):
                raise UsageError(f"'{r.var}[end]' is read before all of {r.var}'s steps "
                                 f"exist: {r.var}'s steps read its reader, so with per-"
                                 f"example lengths (padding) the end of each example is "
                                 f"not known in time; run examples of one length at a "
                                 f"time (no lengths)")
            if self.g.var(r.var).is_ids:       # ids: picked, no gradient to carry
                ids = np.stack([self.tape.vals[self.nodes[(r.var, s)]] for s in steps])
                return self.tape.leaf(ids[n - 1, np.arange(len(n))])
            return self._select([n - 1 == s for s in steps],
                                [self.nodes[(r.var, s)] for s in steps])
        if r.shift.kind == ShiftKind.REL and r.shift.k > 0 and (src[1] >= n).any():
            after = self._outside(Outside(r.var, r.shift.k, False))
            return self._select([src[1] < n, src[1] >= n], [self.nodes[src], after])
        return None

    def _select(self, masks, ids) -> int:
        """sum_i masks[i] * value[i], row by row, on the tape (so gradients follow)."""
        total = None
        for mask, i in zip(masks, ids, strict=True):
            if not mask.any():
                continue
            w = self.tape.leaf(mask.astype(self.m.dtype)[:, None])
            term = self.tape.apply(ops.Op.MUL, [i, w], (), self.ctx)
            total = term if total is None else self.tape.apply(ops.Op.ADD, [total, term],
                                                               (), self.ctx)
        return total

    # ---------------------------------------------------------------- feedback
    def _fed(self, y: str, j: int) -> int:
        """Scheduled sampling: the true y[j] with probability `teacher`, else a sample
        from softmax(o[j]) of the output o that y's loss pairs it with (a constant for
        the gradient). Drawn once per (target, step) and example."""
        key = (y, j, "fed")
        if key not in self.nodes:
            o = (self.fed[y], j)
            if o not in self.nodes:
                raise RuntimeError(f"scheduled sampling reads {o} before it is computed")
            true = self.tape.vals[self.nodes[(y, j)]]
            p = ops.softmax(np.asarray(self.tape.vals[self.nodes[o]], dtype=np.float64))
            u = self.ctx.rng.random((len(true), 1))
            sampled = np.minimum((p.cumsum(axis=1) < u).sum(axis=1), p.shape[1] - 1)
            keep = self.ctx.rng.random(len(true)) < self.teacher
            ids = np.where(keep | (true < 0), true, sampled).astype(np.int64)
            self.nodes[key] = self.tape.leaf(ids)
        return self.nodes[key]

    def _outside(self, src: Outside) -> int:
        """A value outside the sequence: the carried state (before the start only), the
        init value, or the zero state / start token."""
        carried = self.carry_in.get(src.var, ()) if src.before else ()
        if src.steps <= len(carried):
            return self.tape.leaf(carried[src.steps - 1])
        if (src.var, "init") in self.nodes:
            return self.nodes[(src.var, "init")]
        key = (src.var, "zero")
        if key not in self.nodes:
            self.nodes[key] = self.tape.leaf(self.m.outside_value(self.g.var(src.var), self.B))
        return self.nodes[key]

    # ---------------------------------------------------------------- losses
    def _losses(self, targets):
        total, seeds, terms = 0.0, {}, {}
        for li, loss in enumerate(self.g.losses):
            if loss.target.var not in targets:
                continue
            s, n = 0.0, 0
            op = ops.LOSS_NAMES[loss.fn]
            index = self.g.var(loss.output.var).index
            # summed over the output's index; read at a fixed place (o[end], o[1],
            # o[root]) the loss is one term an example
            for step in [None] if loss.at_one_place else self._steps(loss.output.var):
                env = {} if step is None else {index: step}
                o = self._read(loss.output, env)
                y = self._read(loss.target, env)
                i = self.tape.apply(op, [o, y], (), self.ctx)
                live = self._live(self.tape.vals[y], index, step)
                per_ex = self.tape.vals[i] * live
                s += float(per_ex.sum())
                n += int(live.sum())
                seeds[i] = (live * (loss.weight / self.B)).astype(self.m.dtype)
            terms[li] = (s, n)
            total += loss.weight * s / self.B
        return total, seeds, terms

    def _live(self, y, index, step):
        """1 where a loss term counts: not a padding id, not past the example's end."""
        live = (y >= 0) if y.dtype.kind == "i" else np.ones(y.shape[0], dtype=bool)
        if index in self.ex_len and step is not None:
            live = live & (step < self.ex_len[index])
        return live.astype(np.float64)

    def _steps(self, name):
        v = self.g.var(name)
        return [None] if v.index is None else range(self.lengths[v.index])

    # ---------------------------------------------------------------- outputs
    def _values(self) -> dict:
        out = {}
        for v in self.g.vars:
            if v.role != "hidden":
                continue
            if v.index is None:
                out[v.name] = self._batched(self.tape.vals[self.nodes[(v.name, None)]])
            elif v.inner is not None:          # [B, U, T, n]
                U, T = self.lengths[v.index], self.lengths[v.inner]
                out[v.name] = np.stack([np.stack([self._batched(self.tape.vals[
                    self.nodes[(v.name, (a, b))]]) for b in range(T)], axis=1)
                    for a in range(U)], axis=1)
            else:            # zeros at the leaves of a value that has none there
                none = np.zeros((1, self.m.sizes[v.name]), self.m.dtype)
                rows = [self._batched(self.tape.vals[self.nodes[(v.name, s)]],
                                      v.index in self.trees) if (v.name, s) in self.nodes
                        else none for s in range(self.lengths[v.index])]
                out[v.name] = np.concatenate(rows) if v.index in self.trees else \
                    np.stack(rows, axis=1)
        return out

    def _carry_out(self) -> dict:
        """For every variable read with a delay of up to k steps, its values at steps
        L-1 ... L-k, newest first; a step before this window holds what a read there
        gives (the carry in, the init value or the zero state), so a window shorter than
        the delay carries the state on whole."""
        out = {}
        for name, k in self.m.carried.items():
            L = self.lengths.get(self.g.var(name).index)
            if L is None or (name, 0) not in self.nodes:
                continue
            ids = [self.nodes[(name, L - j)] if L - j >= 0 else
                   self._outside(Outside(name, j - L, True)) for j in range(1, k + 1)]
            if self.g.var(name).is_ids:           # a target fed back: ids [B], as they are
                out[name] = [np.array(self.tape.vals[i], copy=True) for i in ids]
            else:
                out[name] = [self._batched(self.tape.vals[i]).copy() for i in ids]
        return out

    def _batched(self, value, node: bool = False):
        """A value as the results give it: [B, n] (a tree node's [1, n]), also where it
        was computed once for the whole batch from parameters and numbers alone ([n],
        [1, n], a number: softmax over t (1))."""
        rows, value = 1 if node else self.B, np.asarray(value)
        if value.ndim == 2 and value.shape[0] == rows:
            return value
        return np.broadcast_to(value, (rows, value.shape[-1] if value.ndim else 1)).copy()
