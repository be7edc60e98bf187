"""The compiled executor: the schedule of plan.py run with Numba kernels.

`CompiledExecutor(model).run(...)` has the interpreter's signature and gives its results
(to rounding). Variables on no cycle run for all steps at once (static.py); each cycle
runs as one generated Numba loop forward and one backward (codegen.py). A construct the
compiler does not run falls back to the interpreter for the whole model, and `explain`
says which and why: never a different answer.

Per run: buffers come from a pool kept across runs (kernels.Pool: no fresh pages each
step, never a buffer a caller still holds); two independent recurrences (the directions
of a bi layer) run their loops at once on two threads; per-example lengths (padding) are
compiled (losses masked, h[end] per example, loops on reversed time started at each
example's end); dropout while training draws the interpreter's masks (masks.py),
in the loops too (a hoisted input of masks), except in attention stages, init values
and of parameters, where the run is interpreted; scheduled sampling (teacher < 1) is interpreted.
"""
from __future__ import annotations

import os

import numpy as np

from .. import given, ops
from ..graph.folded import LossFn
from ..resources import LengthCache
from . import kernels
from .attention import AttnBuilt
from .attention import build as build_attention
from .codegen import generate
from .fallback import FallsBack, has_dropout
from .masks import NoMasks, SequenceLayout, sequence_sites
from .plan import AttnStage, StaticStage, Unsupported, affine, fused_outputs, lower, schedule
from .static import Env, Evaluation, V, read, read_back

__all__ = ["CompiledExecutor", "explain"]


class _Rec:
    """A recurrence ready to run: its step program and its generated kernels."""

    def __init__(self, stage, step, kernel, module):
        self.stage, self.step, self.kernel, self.mod = stage, step, kernel, module


class CompiledExecutor(FallsBack):
    masks_padding = True       # padded batches are compiled (train/batches.run_batch)

    def __init__(self, model):
        self.m = model
        self.g = model.graph
        self.fallback = None          # why the whole model runs in the interpreter
        self.notes = []
        self.pool = kernels.Pool()
        self._worker = None
        try:
            self.stages = self._build()
        except Unsupported as e:
            self.fallback = str(e)
            self.stages = []
        self.partner = self._partners()
        self.fused_out = {} if self.fallback else \
            fused_outputs(self.g, self.m.param_shapes)
        self.has_dropout = has_dropout(self.g)
        self.no_masks, self.site_of = None, {}
        self._layouts = LengthCache(lambda layout: layout.size)
        if self.has_dropout and not self.fallback:
            static = {st.var for st in self.stages if isinstance(st, StaticStage)}
            recurrent = {v for st in self.stages if isinstance(st, _Rec)
                         for v in st.stage.vars}
            attention = {v for st in self.stages if isinstance(st, AttnBuilt)
                         for v in st.stage.vars}
            try:
                self.site_of = sequence_sites(self.g, static, model.checked.dropouts,
                                              recurrent, attention)
            except NoMasks as e:
                self.no_masks = str(e)

    def masks(self, train, rng, lengths: dict, B: int):
        """This batch's dropout masks (None when not training or no dropout draws)."""
        if not (train and self.has_dropout):
            return None
        key = tuple(sorted(lengths.items()))
        layout = self._layouts.get(key, lambda: SequenceLayout(self.m, dict(key)))
        return layout.draw(rng, B, self.m.dtype, self.site_of)

    # ------------------------------------------------------------------ building
    def _build(self):
        out = []
        dtype = self.m.dtype.name
        for loss in self.g.losses:
            if self.g.var(loss.output.var).inner is not None:
                raise Unsupported(f"a loss on '{loss.output.var}', a variable over two "
                                  "indexes")
        g = self.g.nx()
        for st in schedule(self.g):
            if isinstance(st, StaticStage):
                out.append(st)
                continue
            if isinstance(st, AttnStage):    # attention (compile/attention/)
                out.append(build_attention(self.g, self.m, st))
                continue
            step = lower(self.g, st, self.m.sizes, self.m.param_shapes, g)
            kern = generate(step, dtype)
            mod = kernels.load_source(kern.source)
            out.append(_Rec(st, step, kern, mod))
        return out

    def _partners(self) -> dict:
        """{i: j}: recurrence j (later in the schedule) reads nothing computed from
        recurrence i on, so both loops can run at once."""
        if (os.cpu_count() or 1) < 2 or os.environ.get("SEQGRAPH_SERIAL"):
            return {}
        g = self.g.nx()
        out, taken = {}, set()
        for i, a in enumerate(self.stages):
            if not isinstance(a, _Rec) or i in taken:
                continue
            later = set()
            for j in range(i, len(self.stages)):
                b = self.stages[j]
                names = [b.var] if isinstance(b, StaticStage) else list(b.stage.vars)
                if j > i and isinstance(b, _Rec) and j not in taken:
                    reads = {u for v in names for u in g.predecessors(v)} - set(names)
                    if not reads & later:
                        out[i] = j
                        taken.update((i, j))
                        break
                later.update(names)
        return out

    def drive(self, gens):
        """Run recurrence generators: each yields its kernel call after its preparation
        and finishes after it; two calls run at once (the kernels release the GIL)."""
        calls = [next(gen) for gen in gens]
        live = [c for c in calls if c is not None]
        if len(live) == 2:
            if self._worker is None:
                from concurrent.futures import ThreadPoolExecutor
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="seqgraph")
            other = self._worker.submit(live[1][0], *live[1][1])
            try:
                live[0][0](*live[0][1])
            finally:
                other.result()
        else:
            for f, args in live:
                f(*args)
        for gen in gens:
            for _ in gen:
                pass

    def explain(self) -> list:
        if self.fallback:
            return [f"interpreted: {self.fallback}"]
        lines = []
        for st in self.stages:
            if isinstance(st, StaticStage):
                lines.append(f"{st.var}: every step at once" + self._fused_note(st.var))
            elif isinstance(st, AttnBuilt):
                lines += st.explain()
            else:
                k = st.kernel
                gemms = ", ".join(f"[{'; '.join(p for p, _, _ in parts)}]"
                                  for _, parts in k.groups)
                passes = sum(1 for kind, _ in k.info["stages"] if kind == "ew")
                d = "backward in time" if st.stage.direction > 0 else "forward in time"
                lines.append(f"{', '.join(st.stage.vars)}: one compiled loop {d}, per step "
                             f"{len(k.groups)} GEMM ({gemms}) and {passes} fused pass(es)")
                for gi, js in k.info["prefill"].items():
                    if gi in k.info["gatherable"] and self._one_hot_inputs(st, gi, js):
                        lines.append(f"  their inputs of GEMM {gi} ({len(js)} hoisted "
                                     "sum(s) P @ x[t] + b of a one-hot x): the rows of P "
                                     "and b gathered in the loop, step by step")
                    else:
                        lines.append(f"  their inputs of GEMM {gi} ({len(js)} hoisted "
                                     "sum(s)) computed for all steps before the loop, the "
                                     "products accumulated onto them")
        for i, j in self.partner.items():
            a, b = self.stages[i].stage.vars, self.stages[j].stage.vars
            lines.append(f"{', '.join(a)} and {', '.join(b)}: independent loops, run at once "
                         "(one per core), forward and backward")
        if self.no_masks:
            lines.append(f"training with dropout: interpreted ({self.no_masks})")
        elif self.has_dropout:
            lines.append("training with dropout: compiled, the masks drawn as the "
                         "interpreter draws them")
        lines.append("per-example lengths (padding): compiled; a loop on reversed time "
                     "starts each example at its own end, losses and h[end] masked")
        if self.m.feedback():
            lines.append("scheduled sampling (teacher < 1): interpreted")
        return lines

    def _fused_note(self, var) -> str:
        """How an output layer runs in training when it is fused with its loss."""
        f = self.fused_out.get(var)
        if f is None or kernels.output_tile(*self.m.params[f["W"]].shape) is None:
            return ""
        drop = ", its input's dropout masks applied before" if f["drop"] is not None else ""
        return ("; in training, fused with its xent loss tile by tile (logits, loss, "
                f"their gradient, dW and dh made while the tile is in cache{drop})")

    def _one_hot_inputs(self, rec, gi, js) -> bool:
        """Are group gi's hoisted sums `P_j @ x[t] + b_j` of one one-hot x, stacked (what
        _Run.per_step_gather gathers in the loop)?"""
        parts = [(rec.step.hoisted[j], off) for j, off in js.items()]
        M = sum(n for _, _, n in rec.kernel.groups[gi][1])
        stacked = _stacked(parts, self.m.params, M)
        return stacked is not None and self.g.var(stacked[0].var).is_ids

    # ------------------------------------------------------------------ running
    def run(self, inputs, targets=None, carry=None, train=False, grads=False, rng=None,
            lengths=None, **kw):
        if kw.get("forest") is not None:       # recursive nets: level-batched (trees.py)
            from .trees import tree_executor
            return tree_executor(self).run(inputs, targets, carry=carry, train=train,
                                           grads=grads, rng=rng, lengths=lengths, **kw)
        kw = {k: v for k, v in kw.items()
              if not (k == "forest" and v is None) and not (k == "teacher" and v >= 1.0)}
        if self.fallback or kw or (train and self.has_dropout and self.no_masks):
            return self.interp.run(inputs, targets, carry=carry, train=train, grads=grads,
                                   rng=rng, lengths=lengths, **kw)
        rng = rng or np.random.default_rng(0)
        before = rng.bit_generator.state
        try:
            scalar, ex_len = self._lengths(inputs, targets, lengths)
            run = _Run(self, inputs, targets, carry, scalar, ex_len)
            run.masks = self.masks(train, rng, run.lengths, run.B)
            return run.go(grads)
        except Unsupported as e:
            self.notes.append(str(e))
            rng.bit_generator.state = before     # the interpreter draws the same masks
            return self.interp.run(inputs, targets, carry=carry, train=train, grads=grads,
                                   rng=rng, lengths=lengths)

    def _lengths(self, inputs, targets, lengths):
        """(every index's length as an int, {index: each example's length [B]} where some
        example is shorter than the arrays: a padded batch)."""
        if not lengths or all(np.ndim(n) == 0 for n in lengths.values()):
            return lengths, {}
        data = {**(inputs or {}), **(targets or {})}
        B, lens = given.batch_shape(self.m, data, lengths)
        ex_len = given.example_lengths(lengths, B, lens)
        return {i: int(lens[i]) if np.ndim(n) else int(n) for i, n in lengths.items()}, ex_len


def _runner(model):
    """The executor that runs `model` compiled: the sequence executor, or for a model
    over trees the level-batched one it hands forests to."""
    ex = model.executor if isinstance(getattr(model, "executor", None), CompiledExecutor) \
        else CompiledExecutor(model)
    if any(kind == "tree" for _, kind in model.graph.indexes):
        from .trees import tree_executor  # recursive nets run level by level
        return tree_executor(ex)
    return ex


def explain(model) -> list:
    """How the compiled executor runs each part of a model (for `seqgraph check`)."""
    return _runner(model).explain()


def interpreted(model, training: bool = False) -> str | None:
    """Why the compiled executor runs `model` (with `training`, its training steps) in
    its interpreter, or None when it runs it compiled (`seqgraph train` says so)."""
    runner = _runner(model)
    return runner.training_fallback if training else runner.fallback


class _Run:
    """One batch through the compiled schedule."""

    def __init__(self, ex, inputs, targets, carry, lengths, ex_len=None):
        from ..interp import Result
        self.Result = Result
        self.ex, self.m, self.g = ex, ex.m, ex.g
        self.targets = targets or {}
        data = {**(inputs or {}), **self.targets}
        B, lens = given.batch_shape(self.m, data, lengths)
        self.B, self.lengths = B, lens
        self.carry_in = carry or {}
        self.env = Env(self.m, self.m.params, B, lens, carry, ex.pool)
        self.env.ex_len = self.ex_len = dict(ex_len or {})
        dt = self.m.dtype
        for v in self.g.vars:
            if v.role == "hidden" or v.name not in data:
                continue
            a = np.asarray(data[v.name])
            a = a.astype(np.int64) if v.is_ids else a.astype(dt)
            if v.index is not None:
                a = np.ascontiguousarray(np.swapaxes(a, 0, 1))
                self.env.vals[v.name] = V(a, "seq")
            else:
                self.env.vals[v.name] = V(a, "ex")
        self.program = []
        self.masks = None          # this batch's dropout masks (set by the executor)

    @property
    def draw(self):
        """What evaluations call for a dropout's masks (None: no masks, evaluation)."""
        return self.masks.of if self.masks is not None else None

    def hoisted_draw(self, step):
        """The same for a recurrence's hoisted terms (copies lowering made)."""
        if self.masks is None:
            return None
        return lambda e: self.masks.of(step.original(e))

    def go(self, want_grads):
        res = self.forward(want_grads)
        if want_grads:
            res.grads = self.backward()
        return res

    def forward(self, want_grads):
        """Every stage, then the losses (with want_grads, their gradients into the
        environment the backward pass reads)."""
        self.want_grads = want_grads
        stages, partner, done = self.ex.stages, self.ex.partner, set()
        for i, st in enumerate(stages):
            if i in done:
                continue
            if isinstance(st, StaticStage):
                if self.fuses(st.var):
                    continue             # run with its loss (losses: _output_xent)
                self.static_forward(st.var)
            elif isinstance(st, AttnBuilt):     # attention (compile/attention/)
                self.program.append(("attn", st.forward(self)))
            elif i in partner:
                # two independent recurrences (the directions of a bi layer): both loops
                # at once, one per core
                j = partner[i]
                done.add(j)
                self.ex.drive([self.rec_forward(st), self.rec_forward(stages[j])])
                self.program[-2:] = [("pair", (self.program[-2][1], self.program[-1][1]))]
            else:
                self.ex.drive([self.rec_forward(st)])
        loss, terms = self.losses(want_grads)
        return self.Result(loss, None, self.values(), self.carry_out(), terms)

    def backward(self, seeds=None) -> dict:
        """The parameters' gradients; `seeds` adds gradients reaching variables from
        outside this run (a tree part reading them, hybrid.py)."""
        env = self.env
        for name, g in (seeds or {}).items():
            env.add_grad(name, g)
        for kind, item in reversed(self.program):
            if kind == "static":
                self.static_backward(item)
            elif kind == "attn":
                item.backward()
            elif kind == "pair":
                self.ex.drive([self.rec_backward(item[1]), self.rec_backward(item[0])])
            else:
                self.ex.drive([self.rec_backward(item)])
        return {p: np.asarray(env.gparams[p], dtype=w.dtype).reshape(w.shape)
                if p in env.gparams else np.zeros_like(w) for p, w in self.m.params.items()}

    # ---------------------------------------------------------------- static
    def init_forward(self, var):
        v = self.g.var(var)
        if v.init is None:
            return None
        ev = Evaluation(self.env, v.init, None)
        self.env.inits[var] = self.broadcast(ev.out, None, self.m.sizes[var])
        return ev

    def broadcast(self, out: V, T, n):
        """A value as [T, B, n] (T given) or [B, n]."""
        a = out.a
        shape = (self.B, n) if T is None else (T, self.B, n)
        if T is not None and out.lead == "seq":
            return a
        return np.ascontiguousarray(np.broadcast_to(np.asarray(a, self.m.dtype), shape))

    def static_forward(self, var):
        v = self.g.var(var)
        init_ev = self.init_forward(var)
        T = self.lengths[v.index] if v.index is not None else None
        ev = Evaluation(self.env, v.cases[0].expr, v.index, T=T, draw=self.draw)
        a = self.broadcast(ev.out, T, self.m.sizes[var])
        self.env.vals[var] = V(a, "seq" if T is not None else "ex")
        self.program.append(("static", (var, ev, init_ev, ev.out.lead)))

    def static_backward(self, item):
        var, ev, init_ev, lead = item
        env = self.env
        g = env.gvals.get(var)
        if g is not None:
            v = self.g.var(var)
            ev.backward(_unbroadcast_lead(g, v.index is not None, lead))
        if init_ev is not None and var in env.ginits:
            init_ev.backward(_unbroadcast_lead(env.ginits[var], False, init_ev.out.lead))

    # ---------------------------------------------------------------- recurrences
    def rec_forward(self, rec: _Rec):
        """One recurrence forward: its arguments, then (yielded to `drive`) the loop."""
        st, step, k = rec.stage, rec.step, rec.kernel
        T = self.lengths[st.index]
        flip = st.direction > 0
        init_evs = [self.init_forward(v) for v in step.vars]
        n = self.ex_len.get(st.index)
        # padding: a loop on reversed time starts each example at its own end
        args = {"T": T, "pad": bool(flip and n is not None),
                "start": (T - n).astype(np.int64) if flip and n is not None
                else np.zeros(self.B, np.int64)}
        init_rows = self.state_tapes(rec, T, args)
        hoist_evs = self.hoisted_inputs(rec, T, args)
        self.loop_weights(rec, args)
        stacks = self.gemm_tapes(rec, T, args)
        # the loop itself: run by _drive (with an independent recurrence beside it, on
        # the other core)
        yield (rec.mod.forward, [args[a] for a in k.fwd_args]) if T > 0 else None
        self.publish_states(rec, args)
        self.program.append(("rec", (rec, args, init_evs, hoist_evs, init_rows, T, stacks)))

    def state_tapes(self, rec, T, args) -> list:
        """S_i [T + K, B, n]: each cycle variable's values, its first K rows the values
        before the first step. Returns, per variable, the rows that came from its init
        (their gradient goes to the init's expression)."""
        step, flip, K = rec.step, rec.stage.direction > 0, rec.step.K
        init_rows = []
        for i, v in enumerate(step.vars):
            S = self.ex.pool.empty((T + K, self.B, self.m.sizes[v]), self.m.dtype)
            rows = []
            for j in range(1, K + 1):
                val, is_init = self.env.outside(v, j, not flip)
                S[K - j] = val
                if is_init:
                    rows.append(K - j)
            init_rows.append(rows)
            args[f"S{i}"] = S
        args["init_grad"] = any(init_rows)
        return init_rows

    def hoisted_inputs(self, rec, T, args) -> list:
        """X_j [T, B, n]: every hoisted term evaluated for all steps before the loop, in
        the loop's time order (not the prefilled ones: they are written into G)."""
        step, dt, pool = rec.step, self.m.dtype, self.ex.pool
        prefilled = {j for js in rec.kernel.info["prefill"].values() for j in js}
        hoist_evs = []
        for j, e in enumerate(step.hoisted):
            if j in prefilled:
                hoist_evs.append(None)
                continue
            ev = Evaluation(self.env, e, rec.stage.index, T=T, draw=self.hoisted_draw(step))
            X = self.broadcast(ev.out, T, _size(ev.out, step, j))
            if rec.stage.direction > 0:
                X = _copy(pool, X[::-1])
            args[f"X{j}"] = X if X.dtype == dt and X.flags.c_contiguous else \
                np.ascontiguousarray(X, dtype=dt)
            hoist_evs.append(ev)
        return hoist_evs

    def loop_weights(self, rec, args):
        """The stacked weights of each GEMM group (and their transpose, and the blocking
        of both products), and the parameter vectors the loop reads."""
        k, params, pool, dt = rec.kernel, self.m.params, self.ex.pool, self.m.dtype
        for gi, (_, parts) in enumerate(k.groups):
            M, kin = sum(s for _, _, s in parts), k.info["operand_sizes"][gi]
            if len(parts) == 1:
                WS = params[parts[0][0]]
            else:
                WS = pool.empty((M, kin), dt)
                np.concatenate([params[p] for p, _, _ in parts], axis=0, out=WS)
            args[f"WS{gi}"] = WS
            args[f"W{gi}"] = _copy(pool, WS.T)
            args[f"NB{gi}"], args[f"KB{gi}"] = kernels.blocks(self.B, M, kin)
            args[f"NBb{gi}"], args[f"KBb{gi}"] = kernels.blocks(self.B, kin, M)
        for i, p in enumerate(k.pvecs):
            args[f"P_{i}"] = params[p]

    def gemm_tapes(self, rec, T, args) -> dict:
        """The tapes the backward pass reads (N_i, G_g) and the prefilled groups: a
        one-hot gate input gathered per step when it can be, else written into G.
        Returns {group: how it was filled}, for the backward pass."""
        k, pool, dt = rec.kernel, self.ex.pool, self.m.dtype
        prefill = k.info["prefill"]
        for name, n in k.tapes.items():
            args[name] = pool.empty((T, self.B, n), dt)
        stacks = {}
        for gi, js in prefill.items():      # one-hot gate inputs: gathered per step
            if gi in k.info["gatherable"]:
                got = self.per_step_gather(rec, gi, js, T, args)
                if got is not None:
                    stacks[gi] = got
        for gi in k.gtapes:
            M = sum(s for _, _, s in k.groups[gi][1])
            if gi not in stacks:
                args[f"G{gi}"] = pool.empty((T, self.B, M), dt)
        for gi, js in prefill.items():
            if gi not in stacks:
                stacks[gi] = self.prefill(rec, args[f"G{gi}"], js, T)
        return stacks

    def publish_states(self, rec, args):
        """After the loop: each cycle variable's values into the environment (in true
        time), and, when training, its gradient tape offered to the static pass."""
        step, k, pool, K = rec.step, rec.kernel, self.ex.pool, rec.step.K
        flip = rec.stage.direction > 0
        for i, v in enumerate(step.vars):
            a = args[f"S{i}"][K:]
            self.env.vals[v] = V(_copy(pool, a[::-1]) if flip else a, "seq")
            if getattr(self, "want_grads", False) and not flip and \
                    i not in k.info["internal"]:
                # the gradient tape, its step rows offered to the static pass that
                # reads v (static.Env.dest): the output layer's product writes dh
                # there, not into an array the loop then copies
                dS = pool.empty(args[f"S{i}"].shape, self.m.dtype)
                dS[:K] = 0
                args[f"dS{i}"] = dS
                self.env.gdest[v] = dS[K:]

    def per_step_gather(self, rec, gi, js, T, args):
        """The kernel's arguments for a prefilled group whose hoisted sums are all
        `P_j @ x[t] + b_j` of one one-hot operand x: the ids in the loop's time order,
        the stacked weights (transposed) and biases; the loop gathers each step's rows
        itself (PG = 1) and no tape of all steps is written. Else PG = 0 and the
        group is prefilled (None)."""
        env, pool, B, dt = self.env, self.ex.pool, self.B, self.m.dtype
        step, flip = rec.step, rec.stage.direction > 0
        M = sum(s for _, _, s in rec.kernel.groups[gi][1])
        parts = [(step.hoisted[j], off) for j, off in sorted(js.items(), key=lambda x: x[1])]
        stacked = _stacked(parts, self.m.params, M)
        opv = None
        if stacked is not None:
            opv = Evaluation(env, stacked[0], rec.stage.index, T=T)
        if opv is None or opv.out.lead != "seq" or opv.out.a.dtype.kind != "i" or \
                opv.out.a.shape[:2] != (T, B):
            args.update({f"PG{gi}": 0, f"XI{gi}": _NO_IDS, f"WT{gi}": np.zeros((1, M), dt),
                         f"BI{gi}": np.zeros(M, dt)})
            return None
        _, layout = stacked
        xk = np.ascontiguousarray(opv.out.a[::-1] if flip else opv.out.a)
        WT = pool.empty((layout[0][4], M), dt)
        b = pool.empty((M,), dt)
        for P, bias, off, n, _ in layout:
            WT[:, off:off + n] = self.m.params[P].T
            b[off:off + n] = self.m.params[bias]
        args.update({f"PG{gi}": 1, f"XI{gi}": xk, f"WT{gi}": WT, f"BI{gi}": b,
                     f"G{gi}": _NO_TAPE[np.dtype(dt).str]})
        # (the backward of a lookup reads only W's shape: WT.T, a view, not a copy of
        # the whole table every step)
        return ("stacked", opv, xk, WT.T, layout, True)

    def prefill(self, rec, G, js, T):
        """The hoisted sums of a prefilled GEMM group written into G ([T, B, M], in the
        loop's time order) before the loop: `P_j @ x[t] + b_j` for every gate at once (one
        gather or GEMM of the stacked P_j, one bias pass) when they share their operand,
        else each evaluated and copied into its columns. What the backward needs."""
        env, pool, B = self.env, self.ex.pool, self.B
        step, flip = rec.step, rec.stage.direction > 0
        parts = [(step.hoisted[j], off) for j, off in sorted(js.items(), key=lambda x: x[1])]
        M = G.shape[-1]
        stacked = _stacked(parts, self.m.params, M)
        if stacked is not None:
            operand, layout = stacked
            opv = Evaluation(env, operand, rec.stage.index, T=T)
            x = opv.out
            if x.lead == "seq" and x.a.shape[:2] == (T, B):
                xk = np.ascontiguousarray(x.a[::-1] if flip else x.a)
                dt = G.dtype
                W = pool.empty((M, layout[0][4]), dt)
                b = pool.empty((M,), dt)
                for P, bias, off, n, _ in layout:
                    W[off:off + n] = self.m.params[P]
                    b[off:off + n] = self.m.params[bias]
                G2 = G.reshape(T * B, M)
                ids = xk.dtype.kind == "i"
                if ids:          # the lookup and the biases in one pass
                    kernels.gather_bias(np.ascontiguousarray(W.T), xk.reshape(-1), b, G2)
                else:
                    kernels.matmul(xk.reshape(T * B, -1), W.T, out=G2)
                    kernels.add_bias(G2, b)
                return ("stacked", opv, xk, W, layout, ids)
        evs = []
        for e, off in parts:
            ev = Evaluation(env, e, rec.stage.index, T=T, draw=self.hoisted_draw(step))
            n = _size(ev.out, step, 0)
            X = self.broadcast(ev.out, T, n)
            G[:, :, off:off + n] = X[::-1] if flip else X
            evs.append((ev, off, n))
        return ("each", evs)

    def prefill_backward(self, stack, dG, flip):
        env = self.env
        if stack[0] == "each":
            for ev, off, n in stack[1]:
                d = dG[:, :, off:off + n]
                ev.backward(_unbroadcast_lead(d[::-1] if flip else d, True, ev.out.lead))
            return
        _, opv, xk, W, layout, ids = stack
        T, B, M = dG.shape
        dG2 = dG.reshape(T * B, M)
        if ids:              # the scatter and the bias sums in one pass
            dWT = np.zeros((W.shape[1], W.shape[0]), dG.dtype)
            db = np.empty(M, dG.dtype)
            kernels.scatter_colsum(dG2, np.ascontiguousarray(xk).reshape(-1), dWT, db)
            dW = dWT.T
        else:
            x2 = xk.reshape(T * B, -1)
            dW = kernels.matmul(dG2.T, x2)
            dx = kernels.matmul(dG2, W).reshape(xk.shape)
            opv.backward(dx[::-1] if flip else dx)
            db = kernels.colsum(dG2)
        for P, bias, off, n, _ in layout:
            env.add_pgrad(P, dW[off:off + n])
            env.add_pgrad(bias, db[off:off + n])

    def rec_backward(self, item):
        """One recurrence backward: the gradient arguments, then (yielded to `drive`)
        the BPTT loop, then the gradients of the weights, hoisted terms and inits."""
        rec, args, init_evs, hoist_evs, init_rows, T, stacks = item
        k, B, pool, dt = rec.kernel, self.B, self.ex.pool, self.m.dtype
        self.state_grads(rec, args)
        for gi, (_, parts) in enumerate(k.groups):
            M = sum(s for _, _, s in parts)
            args[f"dG{gi}"] = (pool.empty if gi in k.info["dg_assigned"] else pool.zeros)(
                (T, B, M), dt)
        self.hoisted_grads(rec, args, hoist_evs)
        for i, p in enumerate(k.pvecs):
            args[f"dP_{i}"] = np.zeros_like(self.m.params[p])
        yield (rec.mod.backward, [args[a] for a in k.bwd_args]) if T > 0 else None
        if T == 0:
            for gi in range(len(k.groups)):
                args[f"dG{gi}"].fill(0)
        self.weight_grads(rec, args, T)
        for gi, stack in stacks.items():
            self.prefill_backward(stack, args[f"dG{gi}"], rec.stage.direction > 0)
        for j, ev in enumerate(hoist_evs):
            if ev is not None:
                dX = args[f"dX{j}"]
                if rec.stage.direction > 0:
                    dX = dX[::-1]
                ev.backward(_unbroadcast_lead(dX, True, ev.out.lead))
        self.init_grads(rec, args, init_evs, init_rows)

    def state_grads(self, rec, args):
        """dS_i: the gradient reaching each cycle variable from outside the loop, in
        the loop's time order (zeros when none; left alone when the static pass wrote
        it in place; none at all for a variable whose gradient lives in the step)."""
        step, K, pool, dt = rec.step, rec.step.K, self.ex.pool, self.m.dtype
        flip, env = rec.stage.direction > 0, self.env
        for i, v in enumerate(step.vars):
            S = args[f"S{i}"]
            g = env.gvals.get(v)
            if i in rec.kernel.info["internal"]:
                assert g is None, v
                args[f"dS{i}"] = _NO_TAPE[np.dtype(dt).str]
                continue
            dS = args.get(f"dS{i}")
            if dS is not None and _same(g, env.gdest.get(v)):
                continue                 # written in place by the static pass
            if g is None:
                dS = pool.zeros(S.shape, dt)
            else:
                if dS is None:
                    dS = pool.empty(S.shape, dt)
                    dS[:K] = 0
                np.copyto(dS[K:], g[::-1] if flip else g)
            args[f"dS{i}"] = dS

    def hoisted_grads(self, rec, args, hoist_evs):
        """dX_j: a view of its GEMM slot's gradient when aliased, else zeros."""
        alias = rec.kernel.info["alias"]
        for j, ev in enumerate(hoist_evs):
            if ev is None:
                continue
            if j in alias:
                gi, off = alias[j]
                n = args[f"X{j}"].shape[-1]
                dG = args[f"dG{gi}"]
                args[f"dX{j}"] = dG if off == 0 and n == dG.shape[-1] else \
                    dG[:, :, off:off + n]
            else:
                args[f"dX{j}"] = self.ex.pool.zeros(args[f"X{j}"].shape, self.m.dtype)

    def weight_grads(self, rec, args, T):
        """dW = dG^T X: one GEMM over all steps per stacked product, split by part."""
        k, B, env = rec.kernel, self.B, self.env
        for gi, (opnd, parts) in enumerate(k.groups):
            X = self.operand_rows(rec, args, opnd, T)
            dG = args[f"dG{gi}"].reshape(T * B, -1)
            dW = kernels.matmul(dG.T, X.reshape(T * B, -1),
                                out=self.ex.pool.empty((dG.shape[1], X.shape[-1]),
                                                       self.m.dtype))
            if len(parts) == 1:
                env.add_pgrad(parts[0][0], dW)
            else:
                for p, off, m in parts:
                    env.add_pgrad(p, dW[off:off + m])
        for i, p in enumerate(k.pvecs):
            env.add_pgrad(p, args[f"dP_{i}"])

    def init_grads(self, rec, args, init_evs, init_rows):
        """The gradient of each init expression: the sum of its rows of dS (one per
        delay that read it) plus what reached it from elsewhere."""
        for i, v in enumerate(rec.step.vars):
            ev = init_evs[i]
            if ev is None or i in rec.kernel.info["internal"]:
                continue
            gi = None
            for r in init_rows[i]:
                gi = args[f"dS{i}"][r] if gi is None else gi + args[f"dS{i}"][r]
            extra = self.env.ginits.get(v)
            if extra is not None:
                gi = extra if gi is None else gi + extra
            if gi is not None:
                ev.backward(_unbroadcast_lead(gi, False, ev.out.lead))

    def operand_rows(self, rec, args, opnd, T):
        node = rec.step.nodes[opnd]
        K = rec.step.K
        if node.kind == "state":
            i = rec.step.vars.index(node.var)
            return args[f"S{i}"][K - node.k:K - node.k + T]
        roots = {nid: v for v, nid in rec.step.roots.items()}
        if opnd in roots:
            i = rec.step.vars.index(roots[opnd])
            return args[f"S{i}"][K:K + T]
        return args[f"N{opnd}"]

    # ---------------------------------------------------------------- losses
    def losses(self, want_grads):
        env, B = self.env, self.B
        total, terms = 0.0, {}
        self.loss_grads = []
        for li, loss in enumerate(self.g.losses):
            if loss.target.var not in self.targets:
                continue
            if self.fuses(loss.output.var):
                s, n = self.output_xent(loss)
                terms[li] = (s, n)
                total += loss.weight * s / B
                continue
            ov = self.g.var(loss.output.var)
            o = read(env, loss.output)
            y = read(env, loss.target)
            orows = o.a.reshape(-1, o.a.shape[-1])
            yrows = y.a.reshape(-1) if y.a.ndim == o.a.ndim - 1 else \
                y.a.reshape(-1, y.a.shape[-1])
            scale = loss.weight / B
            n_ex = self.ex_len.get(ov.index)
            live = None
            if n_ex is not None and o.lead == "seq":     # padding: no loss past the end
                live = (np.arange(o.a.shape[0])[:, None] < n_ex[None, :]).reshape(-1)
            if loss.fn == LossFn.XENT:
                if live is not None:
                    yrows = np.where(live, yrows, -1)
                s, n, d = kernels.xent(orows, yrows, scale, want_grads,
                                       out=self.ex.pool.empty(orows.shape, orows.dtype))
            else:
                op = ops.LOSS_NAMES[loss.fn]
                per, _ = ops.forward(op, ops.Ctx(), [orows, yrows])
                lv = np.ones(per.shape[0]) if live is None else live.astype(np.float64)
                lv = lv.reshape((-1,) + (1,) * (per.ndim - 1))
                s, n = float((per * lv).sum()), int(lv.sum())
                d = ops.vjp(op, (lv * scale).astype(self.m.dtype) * np.ones_like(per), per,
                            None, [orows, yrows])[0] if want_grads else None
            terms[li] = (float(s), int(n))
            total += loss.weight * float(s) / B
            if want_grads:
                read_back(env, loss.output,
                          d.reshape(o.a.shape).astype(self.m.dtype, copy=False))
        return total, terms

    def fuses(self, var) -> bool:
        """Is var an output layer run fused with its loss in this run (training, its
        target given, a tile that pays)?"""
        f = self.ex.fused_out.get(var)
        if f is None or not getattr(self, "want_grads", False) or \
                f["target"] not in self.targets:
            return False
        P = self.m.params[f["W"]]
        return kernels.output_tile(*P.shape) is not None

    def output_xent(self, loss):
        """`o = W @ h[t] + b` and `xent(o[t], y[t])` forward and backward in one tiled
        kernel (kernels._output_xent): the logits, dlogits, dW, db and dh of a tile are
        made while it is in cache; dh goes straight into the recurrence's gradient tape
        when it offered one (Env.dest). With `W @ dropout(h[t], p) + b` the kernel reads
        m * h and dh is m times what it gives (m: the masks, scaled by 1 / (1 - p))."""
        f, env, pool = self.ex.fused_out[loss.output.var], self.env, self.ex.pool
        W, b = self.m.params[f["W"]], self.m.params[f["b"]]
        x = read(env, f["x"]).a                      # [T, B, K]
        mask = self.masks.of(f["drop"]) if f["drop"] is not None and \
            self.masks is not None else None               # [T * B, K]
        if mask is not None:
            x = np.multiply(x, mask.reshape(x.shape), out=pool.empty(x.shape, x.dtype))
        y = read(env, loss.target).a.reshape(-1)     # [T * B]
        T, B, K = x.shape
        n_ex = self.ex_len.get(self.g.var(loss.output.var).index)
        if n_ex is not None:                               # padding: no loss past the end
            live = (np.arange(T)[:, None] < n_ex[None, :]).reshape(-1)
            y = np.where(live, y, -1)
        nv, dt = W.shape[0], W.dtype
        logits = pool.empty((T * B, nv), dt)
        dW, db = np.empty_like(W), np.empty_like(b)
        dX = env.dest(f["x"], (T * B, K), dt)
        s, n = kernels.output_xent(np.ascontiguousarray(x).reshape(T * B, K), W, b,
                                   np.ascontiguousarray(y, dtype=np.int64),
                                   loss.weight / self.B, logits, dW, db, dX,
                                   kernels.output_tile(nv, K))
        env.vals[loss.output.var] = V(logits.reshape(T, B, nv), "seq")
        env.add_pgrad(f["W"], dW)
        env.add_pgrad(f["b"], db)
        if mask is not None:
            dX *= mask
        read_back(env, f["x"], dX.reshape(T, B, K))
        return float(s), int(n)

    # ---------------------------------------------------------------- outputs
    def value(self, name):
        """A per-example value this run computed ([B, n]; hybrid.py)."""
        return self.env.vals[name].a

    def input_grad(self, name):
        """The gradient this run's backward pass left for input `name` (None: none)."""
        return self.env.gvals.get(name)

    def values(self):
        out = {}
        for v in self.g.vars:
            if v.role != "hidden":
                continue
            a = self.env.vals[v.name].a
            if v.inner is not None:              # [U, T, B, n] -> [B, U, T, n]
                out[v.name] = np.moveaxis(a, 2, 0)
                continue
            out[v.name] = np.swapaxes(a, 0, 1) if v.index is not None else a
        return out

    def carry_out(self):
        out = {}
        for name, k in self.m.carried.items():
            v = self.g.var(name)
            if v.index is None or name not in self.env.vals:
                continue
            L = self.lengths[v.index]
            a = self.env.vals[name].a
            vals = []
            for j in range(1, k + 1):
                # before this window: the carry in, the init value or the zero state
                val = a[L - j] if L - j >= 0 else self.env.outside(name, j - L, True)[0]
                vals.append(np.array(val, copy=True))
            out[name] = vals
        return out


def _stacked(parts, params, M):
    """(operand, [(P, b, offset, size, operand size)]) when every hoisted sum of a
    prefilled group is `P @ x + b` with the same operand x (a variable read) and shapes
    that stack into [M, D]; else None."""
    operand, layout, key = None, [], None
    for e, off in parts:
        found = affine(e)
        if found is None:
            return None
        a, b = found
        P, x = a.args[0].name, a.args[1]
        k = (x.var, x.shift, a.op)
        if key is None:
            key, operand = k, x
        elif k != key:
            return None
        W, bias = params[P], params[b.name]
        if W.ndim != 2 or bias.shape != (W.shape[0],):
            return None
        layout.append((P, b.name, off, W.shape[0], W.shape[1]))
    if sum(n for _, _, _, n, _ in layout) != M or len({d for *_, d in layout}) != 1:
        return None
    return operand, layout


def _same(a, b) -> bool:
    """a and b are views of the same memory with the same layout."""
    return a is not None and b is not None and a.shape == b.shape and \
        a.strides == b.strides and a.ctypes.data == b.ctypes.data


# the gradient-tape argument of a variable the kernel keeps in a per-step row, and the
# tape argument of a group whose inputs the loop gathers per step
_NO_TAPE = {np.dtype(t).str: np.zeros((1, 1, 1), t) for t in (np.float32, np.float64)}
_NO_IDS = np.zeros((1, 1), np.int64)


def _copy(pool, a):
    """A contiguous copy of a in a pooled buffer."""
    out = pool.empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


def _size(out: V, step, j):
    """The width of hoisted value j: its array's, or its node's for a number (the
    masks of a dropout in the loop, ones when not training)."""
    a = np.asarray(out.a)
    if a.ndim == 0:
        return next(n.size for n in step.nodes if n.kind == "hoist" and n.hoist == j)
    return a.shape[-1]


def _unbroadcast_lead(g, is_seq, lead):
    """A gradient shaped like the stored value, summed back to the evaluated value."""
    if is_seq and lead == "ex":
        return g.sum(axis=0)
    if is_seq and lead is None:
        return g.sum(axis=(0, 1))
    if not is_seq and lead is None:
        return g.sum(axis=0)
    return g
