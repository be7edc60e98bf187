"""Numba source for one recurrence: a forward step loop and a BPTT loop.

Generated from a `plan.Step`, never from names. Per step, the forward loop runs its
stages in order: a *GEMM stage* multiplies one operand by the stacked weights of every
parameter applied to it (`np.dot`, BLAS), an *elementwise stage* is one fused loop over
[B, n] whose intermediate values are scalars, softmax and concatenation are row passes.
The backward loop runs the stages in reverse and carries only state gradients (the grad
tapes `dS`); gradients of GEMM outputs are saved per step (`dG`) so that the weight
gradients are one GEMM over all steps after the loop, and gradients of hoisted inputs are
saved (`dX`) for the static pass to finish.

Products go through `kernels.mm_blocks` (xgemm with leading dimensions and beta, cut into
blocks OpenBLAS runs with its small-matrix kernels). A GEMM group whose slots each have a
hoisted input added (`W_j @ x[t] + U_j @ h[t-1] + b_j`) is *prefilled*: the executor
writes the hoisted sums into G and the product accumulates onto them.

Memory: state tapes `S[i]` are [T+K, B, n] with K rows of initial values before step 0.
Hoisted inputs `X[j]` are [T, B, n]. Values the backward pass needs and that live nowhere
else are saved in tapes `N<id>` ([T, B, n]) or `G<g>` (a whole GEMM output).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ops import Op
from .plan import Step

HELPERS = {
    "float32": '''
DT = np.float32
ZERO = DT(0.0)
ONE = DT(1.0)
HALF = DT(0.5)
_LIM = DT(7.90531110763549805)
_SAT = DT(9.010914)
_A13 = DT(-2.76076847742355e-16)
_A11 = DT(2.00018790482477e-13)
_A9 = DT(-8.60467152213735e-11)
_A7 = DT(5.12229709037114e-08)
_A5 = DT(1.48572235717979e-05)
_A3 = DT(6.37261928875436e-04)
_A1 = DT(4.89352455891786e-03)
_B6 = DT(1.19825839466702e-06)
_B4 = DT(1.18534705686654e-04)
_B2 = DT(2.26843463243900e-03)
_B0 = DT(4.89352518554385e-03)


@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def _tanh(x):
    # a rational approximation (13/6, as in Eigen) that vectorises; |error| < 4e-7.
    # From |x| = _SAT on, 1 - tanh(x) < 2^-25 and float32 rounds tanh to exactly +-1;
    # the quotient, clamped at _LIM, stays at 1 - 2^-24, whose 1 - y^2 = 1.2e-7 would
    # floor the derivative (times a weight of 1e9: a gradient of 1e2 where it is 0)
    c = min(max(x, -_LIM), _LIM)
    x2 = c * c
    p = ((((((_A13 * x2 + _A11) * x2 + _A9) * x2 + _A7) * x2 + _A5) * x2 + _A3) * x2 + _A1) * c
    q = ((_B6 * x2 + _B4) * x2 + _B2) * x2 + _B0
    return p / q if abs(x) < _SAT else (ONE if x > ZERO else -ONE)


@njit(error_model="numpy", fastmath=True, cache=True, inline="always")
def _sigmoid(x):
    # exactly 0 (and 1) where _tanh is -1 (1): no floor of 3e-8 under y (1 - y)
    return HALF + HALF * _tanh(HALF * x)
''',
    "float64": '''
DT = np.float64
ZERO = DT(0.0)
ONE = DT(1.0)
HALF = DT(0.5)


@njit(error_model="numpy", cache=True, inline="always")
def _tanh(x):
    # from expm1: exact to a few ulps everywhere, and no libm tanh call
    e = math.expm1(-2.0 * abs(x))
    r = -e / (2.0 + e)
    return r if x >= 0 else -r


@njit(error_model="numpy", cache=True, inline="always")
def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
''',
}

COMMON = '''

@njit(error_model="numpy", cache=True, inline="always")
def _softplus(x):
    return max(x, ZERO) + math.log1p(math.exp(-abs(x)))
'''


@dataclass
class Kernel:
    """What the executor needs to call a generated kernel."""
    source: str
    fwd_args: list            # names, in order
    bwd_args: list
    groups: list              # per GEMM group: (operand node id, [(param, offset, size)])
    tapes: dict               # 'N<id>' -> size (forward-saved per-step values)
    gtapes: set               # GEMM groups whose output is saved ('G<g>')
    pvecs: list               # parameter vectors read inside the loop
    info: dict = field(default_factory=dict)


def generate(step: Step, dtype: str) -> Kernel:
    return _Gen(step, dtype).run()


class _Gen:
    def __init__(self, step: Step, dtype: str):
        self.s = step
        self.dtype = dtype
        self.nodes = step.nodes
        self.state_ix = {v: i for i, v in enumerate(step.vars)}
        self.root_of = {nid: self.state_ix[v] for v, nid in step.roots.items()}
        self.consts = {}

    # -------------------------------------------------------------- analysis
    def analyse(self):
        """Where each node runs (stages) and where its value lives (homes), and which
        gradients can be assigned, aliased or prefilled instead of accumulated."""
        nodes = self.nodes
        self.consumers = {n.id: set() for n in nodes}
        self.uses = {n.id: 0 for n in nodes}
        for n in nodes:
            for a in n.args:
                self.consumers[a].add(n.id)
                self.uses[a] += 1
        self._stages()
        self._groups()
        self._homes(self._needed())
        self.pvecs = sorted({n.param for n in nodes if n.kind == "pvec"})
        self._assigned()
        self._prefill(self._aliases())
        # cycle variables whose gradient comes from inside the step alone (read by no
        # later step, no other stage, no loss: an LSTM's gates): a per-step scratch
        # row instead of a zero-filled gradient tape over all steps
        delayed = {n.var for n in nodes if n.kind == "state"}
        self.internal = {i for i, v in enumerate(self.s.vars)
                         if v not in delayed and v not in self.s.read_outside}

    def _stages(self):
        """GEMMs stack by operand; elementwise nodes join the earliest fused pass that
        runs after all their operands."""
        self.stages = []          # [kind, [node ids], size]
        stage_of = self.stage_of = {}
        gemm_stage_by_operand = {}
        for n in self.nodes:
            if n.kind in ("state", "hoist", "pvec", "num"):
                continue
            dep = max((stage_of[a] for a in n.args if a in stage_of), default=-1)
            if n.kind == "gemm":
                st = gemm_stage_by_operand.get(n.args[0])
                if st is None:
                    st = gemm_stage_by_operand[n.args[0]] = len(self.stages)
                    self.stages.append(["gemm", [], None])
            elif n.kind == "ew":
                for st in range(max(dep, 0), len(self.stages)):
                    kind, _, size = self.stages[st]
                    if kind == "ew" and size == n.size:
                        break
                else:
                    st = len(self.stages)
                    self.stages.append(["ew", [], n.size])
            else:
                st = len(self.stages)
                self.stages.append([n.kind, [], n.size])
            self.stages[st][1].append(n.id)
            stage_of[n.id] = st

    def _groups(self):
        """GEMM groups: operand, [(param, offset, size)], and each node's slice."""
        self.groups = []
        self.gemm_slot = {}
        for st, (kind, ids, _) in enumerate(self.stages):
            if kind != "gemm":
                continue
            g = len(self.groups)
            off, parts = 0, []
            for nid in ids:
                n = self.nodes[nid]
                parts.append((n.param, off, n.size))
                self.gemm_slot[nid] = (g, off)
                off += n.size
            self.groups.append((self.nodes[ids[0]].args[0], parts, st))

    def _needed(self) -> set:
        """The nodes whose values the backward pass reads."""
        needed = set()
        for n in self.nodes:
            if n.kind == "ew" and n.op is not None:
                out, args = VJP_READS[n.op]
                if out:
                    needed.add(n.id)
                if args:
                    needed.update(a for a in n.args if self.nodes[a].kind != "num")
            elif n.kind == "softmax":
                needed.add(n.id)
        needed.update(operand for operand, _, _ in self.groups)
        return needed

    def _homes(self, needed: set):
        """Where each value lives: a tape over all steps when the backward pass reads
        it, a scratch row when another pass does, else a scalar of its fused pass."""
        self.home = {}
        self.tapes = {}
        self.gtapes = set()
        for n in self.nodes:
            if n.kind in ("state", "hoist", "pvec", "num"):
                self.home[n.id] = n.kind
            elif n.id in self.root_of:
                self.home[n.id] = "root"
            elif n.kind == "gemm":
                g, _ = self.gemm_slot[n.id]
                self.home[n.id] = "gemm"
                if n.id in needed:
                    self.gtapes.add(g)
            elif n.id in needed:
                self.home[n.id] = "tape"
                self.tapes[f"N{n.id}"] = n.size
            elif n.kind != "ew" or any(self.stage_of.get(c) != self.stage_of[n.id]
                                       for c in self.consumers[n.id]):
                self.home[n.id] = "scratch"
            else:
                self.home[n.id] = "scalar"

    def _assigned(self):
        """Gradients written once per step: a GEMM slot whose only consumer is one use
        in an elementwise pass is assigned (`=`), so its dG needs no zeroing."""
        self.assign = {m for m in self.gemm_slot
                       if self.uses[m] == 1 and all(self.nodes[c].kind == "ew"
                                                    for c in self.consumers[m])}
        self.dg_assigned = {g for g, (_, parts, st) in enumerate(self.groups)
                            if all(nid in self.assign for nid in self.stages[st][1])}

    def _aliases(self) -> dict:
        """A hoisted input added to a GEMM slot (`W @ x[t] + U @ h[t-1]`) has exactly the
        slot's gradient: its dX is a view of dG, never written by the loop. Returns
        {hoisted input: (the add node, the slot node)}."""
        nodes = self.nodes
        self.alias = {}
        alias_add = {}
        for n in nodes:
            if n.kind != "ew" or n.op is not Op.ADD or len(set(n.args)) != 2:
                continue
            a, b = n.args
            for j, m in ((a, b), (b, a)):
                if nodes[j].kind == "hoist" and m in self.assign and self.uses[j] == 1 and \
                        nodes[j].size == nodes[m].size and nodes[j].hoist not in self.alias \
                        and self.gemm_slot[m][0] in self.dg_assigned:
                    self.alias[nodes[j].hoist] = self.gemm_slot[m]
                    alias_add[nodes[j].hoist] = (n.id, m)
        return alias_add

    def _prefill(self, alias_add: dict):
        """A GEMM group whose every slot has its hoisted input aliased (the gates of an
        LSTM: `Wi @ x[t] + Ui @ h[t-1] + b_i`, ...) is *prefilled*: the executor writes
        the hoisted sums into G (one stacked gather or GEMM for all gates) and the
        step's product accumulates onto them (beta = 1); the pass reads G alone."""
        by_group = {}
        for j, (g, off) in self.alias.items():
            by_group.setdefault(g, {})[off] = j
        self.prefill = {}
        for g, (_, parts, _) in enumerate(self.groups):
            if g in by_group and set(by_group[g]) == {off for _, off, _ in parts}:
                self.prefill[g] = {j: off for off, j in by_group[g].items()}
        self.prefilled = {j for js in self.prefill.values() for j in js}
        self.prefill_add = {alias_add[j][0]: alias_add[j][1] for j in self.prefilled}
        # a prefilled group the backward pass does not read can take its inputs per
        # step (`gather`: a one-hot operand's rows of the stacked weights plus the
        # biases, written into a scratch row block that stays in cache) instead of from
        # a tape prefilled for all steps (8 MB written, then read back, for an LSTM-128
        # step of 64 x 32)
        self.gatherable = {g for g in self.prefill if g not in self.gtapes}
        self.gtapes |= set(self.prefill)

    # ------------------------------------------------------------- accessors
    def const(self, v):
        if v not in self.consts:
            self.consts[v] = f"C{len(self.consts)}"
        return self.consts[v]

    def val(self, nid, b="b", c="c", group=None):
        """The value of node nid at row b, column c during step t."""
        n = self.nodes[nid]
        h = self.home[nid]
        if group is not None and nid in group:
            return f"v{nid}"
        if h == "state":
            return f"s{self.state_ix[n.var]}_{n.k}[{b}, {c}]"
        if h == "hoist":
            return f"x{n.hoist}[{b}, {c}]"
        if h == "pvec":
            return f"P_{self.pvecs.index(n.param)}[{c}]"
        if h == "num":
            return self.const(n.value)
        if h == "root":
            return f"s{self.root_of[nid]}_0[{b}, {c}]"
        if h == "gemm":
            g, off = self.gemm_slot[nid]
            return f"g{g}[{b}, {off} + {c}]" if off else f"g{g}[{b}, {c}]"
        if h == "tape":
            return f"n{nid}[{b}, {c}]"
        if h == "scratch":
            return f"n{nid}[{b}, {c}]"
        raise AssertionError(h)

    def dest(self, nid, b="b", c="c"):
        """Where the gradient of node nid accumulates (None: no gradient)."""
        n = self.nodes[nid]
        h = self.home[nid]
        if h == "num":
            return None
        if h == "state":
            return f"ds{self.state_ix[n.var]}_{n.k}[{b}, {c}]"
        if h == "hoist":
            return f"dx{n.hoist}[{b}, {c}]"
        if h == "pvec":
            return f"dP_{self.pvecs.index(n.param)}[{c}]"
        if h == "root":
            return f"ds{self.root_of[nid]}_0[{b}, {c}]"
        if h == "gemm":
            g, off = self.gemm_slot[nid]
            return f"dg{g}[{b}, {off} + {c}]" if off else f"dg{g}[{b}, {c}]"
        return f"gn{nid}[{b}, {c}]"

    # --------------------------------------------------------------- emitting
    def run(self) -> Kernel:
        self.analyse()
        nS = len(self.s.vars)
        nX = len(self.s.hoisted)
        arrays = [f"S{i}" for i in range(nS)]
        arrays += [f"X{j}" for j in range(nX) if j not in self.prefilled]
        arrays += [f"W{g}" for g in range(len(self.groups))]
        arrays += [f"P_{i}" for i in range(len(self.pvecs))]
        arrays += sorted(self.tapes, key=lambda s: int(s[1:]))
        arrays += [f"G{g}" for g in sorted(self.gtapes)]
        for g in sorted(self.gatherable):
            arrays += [f"PG{g}", f"XI{g}", f"WT{g}", f"BI{g}"]
        ng = len(self.groups)
        fwd_args = ["T", "init_grad", "pad", "start"] + arrays
        fwd_args += [f"{b}{g}" for g in range(ng) for b in ("NB", "KB")]
        bwd_args = fwd_args + [f"WS{g}" for g in range(ng)]
        bwd_args += [f"{b}{g}" for g in range(ng) for b in ("NBb", "KBb")]
        bwd_args += [f"dS{i}" for i in range(nS)]
        bwd_args += [f"dX{j}" for j in range(nX) if j not in self.alias]
        bwd_args += [f"dG{g}" for g in range(len(self.groups))]
        bwd_args += [f"dP_{i}" for i in range(len(self.pvecs))]
        fwd = self.emit_forward(fwd_args)
        bwd = self.emit_backward(bwd_args)
        head = ["import math", "import numpy as np", "from numba import njit",
                "from seqgraph.compile.kernels import mm_blocks",
                HELPERS[self.dtype], COMMON]
        consts = [f"{name} = DT({float(v)!r})" for v, name in self.consts.items()]
        src = "\n".join(head + consts + ["", ""] + fwd + ["", ""] + bwd) + "\n"
        return Kernel(src, fwd_args, bwd_args,
                      [(op, parts) for op, parts, _ in self.groups],
                      dict(self.tapes), set(self.gtapes), list(self.pvecs),
                      {"stages": [(k, len(ids)) for k, ids, _ in self.stages],
                       "alias": dict(self.alias), "dg_assigned": set(self.dg_assigned),
                       "prefill": {g: dict(js) for g, js in self.prefill.items()},
                       "internal": set(self.internal),
                       "gatherable": set(self.gatherable),
                       "operand_sizes": [self.nodes[op].size for op, _, _ in self.groups]})

    def step_views(self, backward):
        """Per-step 2-D views of the arrays (helps LLVM vectorise the inner loops)."""
        L = []
        K = self.s.K
        reads = sorted({(self.state_ix[n.var], n.k) for n in self.nodes if n.kind == "state"})
        for i in range(len(self.s.vars)):
            L.append(f"s{i}_0 = S{i}[{K} + t]")
            if backward and i not in self.internal:
                L.append(f"ds{i}_0 = dS{i}[{K} + t]")
        for i, k in reads:
            L.append(f"s{i}_{k} = S{i}[{K - k} + t]")
            if backward:
                L.append(f"ds{i}_{k} = dS{i}[{K - k} + t]")
        for j in range(len(self.s.hoisted)):
            if j in self.prefilled:
                continue
            L.append(f"x{j} = X{j}[t]")
            if backward and j not in self.alias:
                L.append(f"dx{j} = dX{j}[t]")
        for g in range(len(self.groups)):
            if g in self.gatherable:       # the backward pass does not read it
                if not backward:
                    L += [f"if PG{g}:", f"    g{g} = gs{g}", "else:", f"    g{g} = G{g}[t]"]
            elif g in self.gtapes:
                L.append(f"g{g} = G{g}[t]")
            if backward:
                L.append(f"dg{g} = dG{g}[t]")
        for name in self.tapes:
            L.append(f"n{name[1:]} = {name}[t]")
        return L

    def scratch_alloc(self, backward):
        L = []
        for nid, h in self.home.items():
            if h == "scratch":
                L.append(f"n{nid} = np.empty((B, {self.nodes[nid].size}), DT)")
        for g, (_, parts, _) in enumerate(self.groups):
            if g not in self.gtapes:
                L.append(f"g{g} = np.empty((B, {sum(p[2] for p in parts)}), DT)")
            if g in self.gatherable and not backward:
                L.append(f"gs{g} = np.empty((B, {sum(p[2] for p in parts)}), DT)")
        if backward:
            for nid in self.grad_scratch():
                L.append(f"gn{nid} = np.zeros((B, {self.nodes[nid].size}), DT)")
            for i in sorted(self.internal):
                L.append(f"ds{i}_0 = np.zeros((B, {self.s.sizes[self.s.vars[i]]}), DT)")
            for nid in sorted({a for n in self.nodes if n.kind == "ew" for a in n.args
                               if self.home[a] == "state"}):
                L.append(f"acc{nid} = np.empty((B, {self.nodes[nid].size}), DT)")
        return L

    def grad_scratch(self):
        return [nid for nid, h in self.home.items() if h in ("tape", "scratch")]

    def emit_forward(self, args):
        L = [(f'@njit(error_model="numpy", fastmath={self.dtype == "float32"}, cache=True, '
              'nogil=True)'),
             f"def forward({', '.join(args)}):",
             "    B = S0.shape[1]"]
        L += ["    " + x for x in self.scratch_alloc(False)]
        L.append("    for t in range(T):")
        body = self.step_views(False)
        for st, (kind, ids, size) in enumerate(self.stages):
            body.append(f"# stage {st}: {kind}")
            body += getattr(self, f"fwd_{kind}")(st, ids, size)
        # padding (a loop run on reversed time): before an example's first real step
        # (t < start[b]) its state is the value after the end (init or zero), the row
        # before step 0
        K = self.s.K
        body += ["if pad:", "    for b in range(B):", "        if t < start[b]:"]
        # (element loops, not `a[b, :] = c[b, :]`: an array assignment compiles
        # Numba's shape-mismatch error path, seconds of a cold start)
        for i, v in enumerate(self.s.vars):
            body += [f"            for c in range({self.s.sizes[v]}):",
                     f"                s{i}_0[b, c] = S{i}[{K - 1}, b, c]"]
        L += ["        " + x for x in body]
        L.append("    return 0")
        return L

    def emit_backward(self, args):
        K = self.s.K
        L = [(f'@njit(error_model="numpy", fastmath={self.dtype == "float32"}, cache=True, '
              'nogil=True)'),
             f"def backward({', '.join(args)}):",
             "    B = S0.shape[1]"]
        L += ["    " + x for x in self.scratch_alloc(True)]
        L.append("    for t in range(T - 1, -1, -1):")
        body = self.step_views(True)
        # padding: a padded step's state was the constant after the end: its gradient
        # goes to that row, and the step itself passes nothing back
        body += ["if pad:", "    for b in range(B):", "        if t < start[b]:"]
        for i, v in enumerate(self.s.vars):
            if i in self.internal:     # nothing after the step reads it: no gradient
                continue
            body += [f"            for c in range({self.s.sizes[v]}):",
                     f"                dS{i}[{K - 1}, b, c] += ds{i}_0[b, c]",
                     f"                ds{i}_0[b, c] = ZERO"]
        for nid in self.grad_scratch():
            body.append(f"gn{nid}[:] = ZERO")
        for i in sorted(self.internal):
            body.append(f"ds{i}_0[:] = ZERO")
        for st in range(len(self.stages) - 1, -1, -1):
            kind, ids, size = self.stages[st]
            body.append(f"# stage {st}: {kind} (reverse)")
            body += getattr(self, f"bwd_{kind}")(st, ids, size, K)
        L += ["        " + x for x in body]
        L.append("    return 0")
        return L

    # GEMM: one product of the operand by the stacked weights
    def fwd_gemm(self, st, ids, size):
        g = next(i for i, grp in enumerate(self.groups) if grp[2] == st)
        op, parts, _ = self.groups[g]
        M, k = sum(p[2] for p in parts), self.nodes[op].size
        beta = "1.0" if g in self.prefill else "0.0"
        pre = []
        if g in self.gatherable:
            # this step's inputs of every slot: rows of the stacked one-hot weights plus
            # the biases (id -1, padding: the biases alone)
            pre = [f"if PG{g}:",
                   "    for b in range(B):",
                   f"        i = XI{g}[t, b]",
                   f"        r = g{g}[b]",
                   f"        bi = BI{g}",
                   "        if i >= 0:",
                   f"            w = WT{g}[i]",
                   f"            for c in range({M}):",
                   "                r[c] = w[c] + bi[c]",
                   "        else:",
                   f"            for c in range({M}):",
                   "                r[c] = bi[c]"]
        return pre + [(f"mm_blocks(B, {M}, {k}, {self.row_view(op)}, 0, {k}, W{g}, 0, {M}, g{g}, "
                 f"0, {M}, {beta}, NB{g}, KB{g})")]

    def row_view(self, nid, grad=False):
        n = self.nodes[nid]
        h = self.home[nid]
        p = "d" if grad else ""
        if h == "state":
            return f"{p}s{self.state_ix[n.var]}_{n.k}"
        if h == "root":
            return f"{p}s{self.root_of[nid]}_0"
        if h == "hoist":
            return f"{p}x{n.hoist}"
        if h in ("tape", "scratch"):
            return f"gn{nid}" if grad else f"n{nid}"
        raise AssertionError(h)

    def bwd_gemm(self, st, ids, size, K):
        g = next(i for i, grp in enumerate(self.groups) if grp[2] == st)
        op = self.groups[g][0]
        n = self.nodes[op]
        h = self.home[op]
        if h == "num" or h == "pvec":
            return []
        dst = self.row_view(op, grad=True)
        L = []
        ind = ""
        if h == "state":
            L.append(f"if init_grad or t >= {n.k}:")
            ind = "    "
        M, k = sum(p[2] for p in self.groups[g][1]), n.size
        # the state gradient accumulated in place (beta = 1)
        L.append(f"{ind}mm_blocks(B, {k}, {M}, dg{g}, 0, {M}, WS{g}, 0, {k}, {dst}, 0, {k}, "
                 f"1.0, NBb{g}, KBb{g})")
        return L

    # elementwise: one fused pass; intermediate values are scalars
    def fwd_ew(self, st, ids, size):
        group = set(ids)
        L = ["for b in range(B):", f"    for c in range({size}):"]
        for nid in ids:
            n = self.nodes[nid]
            if nid in self.prefill_add:        # G holds the hoisted sum already
                L.append(f"        v{nid} = {self.val(self.prefill_add[nid])}")
            else:
                a = [self.val(x, group=group) for x in n.args]
                L.append(f"        v{nid} = {_expr(n.op, a)}")
            h = self.home[nid]
            if h != "scalar":
                L.append(f"        {self.val(nid)} = v{nid}")
        return L

    def bwd_ew(self, st, ids, size, K):
        group = set(ids)
        L = ["for b in range(B):", f"    for c in range({size}):"]
        I = "        "
        accs = []
        # gradient of every node of the pass, from outside the pass
        for nid in ids:
            outside = self.home[nid] != "scalar"
            L.append(f"{I}gv{nid} = {self.dest(nid) if outside else 'ZERO'}")
        for nid in reversed(ids):
            n = self.nodes[nid]
            g = f"gv{nid}"
            for ai, term in _vjp(n.op, g, [self.val(x) if x not in group or
                                            self.home[x] != "scalar" else f"v{x}"
                                            for x in n.args],
                                 self.val(nid) if self.home[nid] != "scalar" else None):
                a = n.args[ai]
                if self.nodes[a].kind == "num":
                    continue
                if self.nodes[a].kind == "hoist" and self.nodes[a].hoist in self.alias:
                    continue                   # its gradient is its GEMM slot's
                if a in group:
                    L.append(f"{I}gv{a} += {term}")
                elif a in self.assign and self.gemm_slot[a][0] in self.dg_assigned:
                    L.append(f"{I}{self.dest(a)} = {term}")
                elif self.home[a] == "state":
                    # the gradient of a delayed state (a row of dS before this step's,
                    # which the pass also reads): accumulated in scratch and added
                    # after the pass, or LLVM cannot prove the rows apart and the
                    # pass runs scalar (measured: 2.9 ms against 0.85 ms, LSTM-128)
                    if a not in accs:
                        accs.append(a)
                    L.append(f"{I}acc{a}[b, c] += {term}")
                else:
                    L.append(f"{I}{self.dest(a)} += {term}")
        pre = [f"acc{a}[:] = ZERO" for a in accs]
        post = []
        for a in accs:
            post += ["for b in range(B):", f"    for c in range({size}):",
                     f"        {self.dest(a)} += acc{a}[b, c]"]
        return pre + L + post

    def fwd_softmax(self, st, ids, size):
        (nid,) = ids
        a = self.nodes[nid].args[0]
        out = self.val(nid, "b", "c")
        return ["for b in range(B):",
                f"    m = {self.val(a, 'b', '0')}",
                f"    for c in range(1, {size}):",
                f"        m = max(m, {self.val(a)})",
                "    z = ZERO",
                f"    for c in range({size}):",
                f"        e = math.exp({self.val(a)} - m)",
                f"        {out} = e",
                "        z += e",
                "    r = ONE / z",
                f"    for c in range({size}):",
                f"        {out} = {out} * r"]

    def bwd_softmax(self, st, ids, size, K):
        (nid,) = ids
        a = self.nodes[nid].args[0]
        y, g = self.val(nid), self.dest(nid)
        da = self.dest(a)
        L = ["for b in range(B):",
             "    dot = ZERO",
             f"    for c in range({size}):",
             f"        dot += {g} * {y}"]
        if da:
            L += [f"    for c in range({size}):",
                  f"        {da} += {y} * ({g} - dot)"]
        return L

    def fwd_concat(self, st, ids, size):
        (nid,) = ids
        L, off = [], 0
        for a in self.nodes[nid].args:
            m = self.nodes[a].size
            L += ["for b in range(B):", f"    for c in range({m}):",
                  f"        {self.val(nid, 'b', f'{off} + c')} = {self.val(a)}"]
            off += m
        return L

    def bwd_concat(self, st, ids, size, K):
        (nid,) = ids
        L, off = [], 0
        for a in self.nodes[nid].args:
            m = self.nodes[a].size
            da = self.dest(a)
            if da:
                L += ["for b in range(B):", f"    for c in range({m}):",
                      f"        {da} += {self.dest(nid, 'b', f'{off} + c')}"]
            off += m
        return L


# The kernels' scalar code of each elementwise op (ops.ELEMENTWISE_*), beside ops.TABLE's
# numpy rows: the forward of arguments `a` (expressions), and the VJP, [(argument index,
# gradient term)] for the output's gradient g and value y. tests/test_ops.py evaluates
# both against ops.TABLE for every op.
KERNEL_FWD = {
    Op.ADD: lambda a: f"{a[0]} + {a[1]}",
    Op.SUB: lambda a: f"{a[0]} - {a[1]}",
    Op.MUL: lambda a: f"{a[0]} * {a[1]}",
    Op.DIV: lambda a: f"{a[0]} / {a[1]}",
    Op.NEG: lambda a: f"-{a[0]}",
    Op.TANH: lambda a: f"_tanh({a[0]})",
    Op.SIGMOID: lambda a: f"_sigmoid({a[0]})",
    Op.RELU: lambda a: f"max({a[0]}, ZERO)",
    Op.EXP: lambda a: f"math.exp({a[0]})",
    Op.LOG: lambda a: f"math.log({a[0]})",
    Op.SOFTPLUS: lambda a: f"_softplus({a[0]})",
}
KERNEL_VJP = {
    Op.ADD: lambda g, a, y: [(0, g), (1, g)],
    Op.SUB: lambda g, a, y: [(0, g), (1, f"-{g}")],
    Op.MUL: lambda g, a, y: [(0, f"{g} * {a[1]}"), (1, f"{g} * {a[0]}")],
    Op.DIV: lambda g, a, y: [(0, f"{g} / {a[1]}"),
                             (1, f"-{g} * {a[0]} / ({a[1]} * {a[1]})")],
    Op.NEG: lambda g, a, y: [(0, f"-{g}")],
    Op.TANH: lambda g, a, y: [(0, f"{g} * (ONE - {y} * {y})")],
    Op.SIGMOID: lambda g, a, y: [(0, f"{g} * {y} * (ONE - {y})")],
    Op.RELU: lambda g, a, y: [(0, f"{g} if {a[0]} > ZERO else ZERO")],
    Op.EXP: lambda g, a, y: [(0, f"{g} * {y}")],
    Op.LOG: lambda g, a, y: [(0, f"{g} / {a[0]}")],
    Op.SOFTPLUS: lambda g, a, y: [(0, f"{g} * _sigmoid({a[0]})")],
}


def _vjp_reads(op) -> tuple[bool, bool]:
    """(its own value, its operands): what op's VJP reads, and so what the forward pass
    keeps for the backward one, read off its KERNEL_VJP terms written with marked names."""
    terms = " ".join(t for _, t in KERNEL_VJP[op]("@g", ["@a0", "@a1"], "@y"))
    return "@y" in terms, "@a" in terms


VJP_READS = {op: _vjp_reads(op) for op in KERNEL_VJP}


def _expr(op, a):
    return a[0] if op is None else KERNEL_FWD[op](a)


def _vjp(op, g, a, y):
    """[(argument index, gradient term)] of y = op(a...) for output gradient g."""
    return [(0, g)] if op is None else KERNEL_VJP[op](g, a, y)


__all__ = ["Kernel", "generate", "np"]
