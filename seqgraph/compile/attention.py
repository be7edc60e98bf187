"""Attention stages: variables over two indexes (`e[u, t]`) and reductions over an index
(`sum over t (...)`), compiled.

Values here carry *axes*: the sequence indexes they vary over, in the stage's canonical
order (the stage's own index first, then the model's other indexes), followed by the
batch and the feature axis. `Ua @ h[t]` is [T, B, A], `Wa @ s[u-1]` is [U, B, A] (or
[B, A] inside a loop over u), and `Wa @ s[u-1] + Ua @ h[t]` broadcasts to [U, T, B, A]
(resp. [T, B, A]): every subexpression is computed once over the indexes it depends on.
A reduction over t removes the axis t, with the padding mask of t.

Two kinds of stage (plan.AttnStage):
- *static* (a variable on no cycle: luong.sg's e, a, ctx): the whole expression for all
  steps of every index at once: `s[u] @ (Wa @ h[t])` is one GEMM for `Wa @ h[t]` over
  [T*B, H] and one batched contraction (einsum) for the scores [U, T, B];
- *attention recurrence* (a cycle that contains them: attention.sg's {e, a, ctx, s}):
  a Python loop over the cycle's index u, every step of the other indexes at once. Each
  equation is split as in plan.lower: every maximal subexpression that does not read the
  cycle is *hoisted* (the terms of a sum that do not read the cycle join one hoisted
  term): `Ua @ h[t]` ([T, B, A], one GEMM over [T*B, 2H]) and `Ud @ (F @ y[u-1]) + bd`
  ([U, B, H], one lookup and one GEMM over [U*B, D]) are computed before the loop, their
  gradients accumulated by the backward loop and pushed through once after it (weight
  gradients one GEMM each). Per step u: the products of one operand by several
  parameters (`Wa @ s[u-1]`, `Wd @ s[u-1]`) are one GEMM of stacked weights, broadcast
  onto the hoisted arrays; the score for all t is one GEMV over [T*B, A] (`va @ ...`) or
  one batched contraction (`s[u] @ ...`); `sum over t (a[u, t] * h[t])` is one
  contraction (einsum) with the padding mask folded in. The backward loop runs u in
  reverse over the saved per-step values (BPTT); the weight gradients of the per-step
  GEMMs are one GEMM over all steps after it.

Memory: the values a step saves for the backward loop, the hoisted values, the state
tapes and the per-step gradients of the products are written into buffers from the
stage's arena (`_Arena`: flat buffers by power-of-two size, reused from run to run and
from one pair of lengths to the next), so a training step does not fault in fresh pages
(measured: 8000 page faults and a third of the stage's time without).

Anything else raises plan.Unsupported with the reason, and the whole model runs in the
interpreter: never a different answer.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from .. import ops
from ..graph.folded import Apply, Num, ParamRef, Ref
from ..graph.printer import show
from ..ops import Op
from . import kernels
from .plan import AttnStage, Unsupported, _terms, _walk, signed_sum
from .static import V, read, read_back

REDUCE = (Op.SUM_OVER, Op.MEAN_OVER, Op.MAX_OVER, Op.LSE_OVER)
GENERIC = set(ops.ELEMENTWISE_BINARY) | set(ops.ELEMENTWISE_UNARY) | {
    Op.SOFTMAX, Op.CONCAT, Op.BILINEAR, Op.DROPOUT}
LETTERS = "abcdefghijklmnopqrstuvwxy"


# ------------------------------------------------------------------------ buffers
class _Arena:
    """Buffers kept from run to run, as kernels.Pool, but flat and binned by size (the
    next power of two) and reshaped to the shape asked for: the lengths of a training
    batch change from batch to batch, and a pool keyed by shape would keep a set of
    buffers for every pair (U, T) it has seen (measured: 800 MB after 60 G2P-sized
    batches and growing). A buffer is handed out again only when nothing outside the
    arena holds it (a view keeps its base alive), so an array a caller still has is
    never overwritten."""

    KEEP = 64             # buffers per size

    def __init__(self):
        self.free = {}

    def empty(self, shape, dtype):
        shape = tuple(int(n) for n in shape)
        n = 1
        for d in shape:
            n *= d
        cap = 1 << max(n - 1, 0).bit_length()
        key = (cap, np.dtype(dtype).str)
        lst = self.free.setdefault(key, [])
        for a in lst:
            if sys.getrefcount(a) <= 3:      # the list, `a` and the call: free
                return a[:n].reshape(shape)
        a = np.empty(cap, dtype)
        if len(lst) < self.KEEP:
            lst.append(a)
        return a[:n].reshape(shape)

    def zeros(self, shape, dtype):
        a = self.empty(shape, dtype)
        a.fill(0)
        return a


# ------------------------------------------------------------------------ programs
@dataclass
class Node:
    """One value of a program.

    kind  'num' 'param'          a number, a parameter (axes None: no batch axis)
          'read'                 a variable outside the cycle (all steps at once)
          'state'                a cycle variable `k` steps back (inside a loop)
          'hoist'                hoisted value j (sliced at the step when `sliced`)
          'op'                   an op of ops.py applied with broadcasting over axes
          'gemm'                 x @ [P1; P2; ...]^T: the stacked product of one operand
          'slice'                one parameter's columns of a 'gemm'
          'gather' 'onehot'      a lookup / a one-hot vector of ids
          'dot'                  v @ x: a GEMV (v a parameter) or a batched contraction
          'reduce'               sum / mean / max / logsumexp over an index, masked
          'contract'             sum / mean over an index of a product, one einsum
    """
    id: int
    kind: str
    axes: tuple | None
    args: tuple = ()
    op: Op | None = None
    attrs: tuple = ()
    expr: object = None
    name: str | None = None
    k: int = 0
    j: int = -1
    sliced: bool = False
    over: str | None = None
    ids: bool = False
    parts: list | None = None     # gemm: [(param, offset, rows)]
    off: int = 0
    size: int = 0
    aaxes: tuple = ()             # the axes of the arguments (set when built)
    aligned: bool = True          # every argument has the node's axes (or none)


class Prog:
    def __init__(self):
        self.nodes: list = []
        self.memo: dict = {}


class _Builder:
    """Expressions to a program. `fixed` is the index a loop runs over (its axis is absent
    from every value: one step at a time) and `cyc` the variables of that loop; without
    them (all steps at once) every variable is a read."""

    def __init__(self, graph, model, order, fixed=None, cyc=(), hoist=None):
        self.g, self.m = graph, model
        self.order = order
        self.fixed = fixed
        self.cyc = set(cyc)
        self.prog = Prog()
        self.hb = hoist              # the builder of the hoisted program
        self.hoisted = []            # [(expr, node id in hb.prog)]
        self.hoist_ids = {}
        self.roots = {}
        self.K = 0
        self.groups = {}             # operand node id -> gemm node id

    # ---------------------------------------------------------------- helpers
    def add(self, kind, axes, **kw) -> int:
        n = Node(len(self.prog.nodes), kind, axes, **kw)
        self.prog.nodes.append(n)
        return n.id

    def axes(self, names) -> tuple:
        return tuple(i for i in self.order if i in names and i != self.fixed)

    def union(self, ids):
        got = [self.prog.nodes[i].axes for i in ids]
        got = [a for a in got if a is not None]
        if not got:
            return None
        return self.axes({x for a in got for x in a})

    def dynamic(self, e) -> bool:
        return any(isinstance(r, Ref) and r.var in self.cyc for r in _walk(e))

    def build(self, e) -> int:
        if isinstance(e, Ref) and e.var in self.cyc and e.shift.kind == "rel" and \
                e.shift.k == 0:
            if e.var not in self.roots:
                raise Unsupported(f"'{e.var}' read at the same step before it is computed")
            return self.roots[e.var]
        nid = self.prog.memo.get(e)
        if nid is None:
            nid = self.prog.memo[e] = self._build(e)
        return nid

    # ---------------------------------------------------------------- building
    def _build(self, e) -> int:
        if isinstance(e, Num):
            return self.add("num", None, expr=e)
        if isinstance(e, ParamRef):
            return self.add("param", None, name=e.name, expr=e)
        if self.fixed is not None and not self.dynamic(e):
            return self.hoist(e)
        if isinstance(e, Ref):
            return self.ref(e)
        op = e.op
        if self.fixed is not None and op in (Op.ADD, Op.SUB):
            return self.sum(e)
        if op in REDUCE:
            return self.reduce(e)
        if op is Op.MATMUL:
            if not isinstance(e.args[0], ParamRef):
                raise Unsupported(f"a product by a non-parameter ({show(e)})")
            x = self.build(e.args[1])
            return self.matmul(e.args[0].name, x, e)
        if op is Op.GATHER:
            x = self.build(e.args[1])
            return self.add("gather", self.prog.nodes[x].axes, args=(x,),
                            name=e.args[0].name, expr=e)
        if op is Op.ONEHOT:
            x = self.build(e.args[0])
            return self.add("onehot", self.prog.nodes[x].axes, args=(x,), expr=e,
                            size=self.m.sizes[e.args[0].var])
        if op is Op.DOT:
            a, b = (self.build(x) for x in e.args)
            if self.prog.nodes[a].axes is None and self.prog.nodes[b].axes is None:
                raise Unsupported(f"a dot product of two parameters ({show(e)})")
            return self.add("dot", self.union((a, b)), args=(a, b), expr=e)
        if op in GENERIC:
            args = tuple(self.build(a) for a in e.args)
            return self.add("op", self.union(args), args=args, op=op, attrs=e.attrs,
                            expr=e)
        raise Unsupported(f"op '{op.value}' in an attention stage")

    def ref(self, e: Ref) -> int:
        v = self.g.var(e.var)
        if e.var in self.cyc:
            s = e.shift
            if s.kind != "rel" or s.k > 0:
                raise Unsupported(f"'{e.var}' read at {s.show(v.index)} inside its own "
                                  "attention cycle")
            if v.inner is not None:
                raise Unsupported(f"'{e.var}' over two indexes read with a delay")
            self.K = max(self.K, -s.k)
            return self.add("state", (), name=e.var, k=-s.k, expr=e)
        if v.inner is not None:
            axes = self.axes({v.index, v.inner})
        elif v.index is None or e.shift.kind in ("none", "first", "end"):
            axes = ()
        else:
            if self.g.index_kinds.get(v.index) != "seq":
                raise Unsupported(f"'{e.var}' over a tree index in an attention stage")
            axes = self.axes({v.index})
        return self.add("read", axes, expr=e, name=e.var, ids=v.is_ids)

    def hoist(self, e) -> int:
        j = self.hoist_ids.get(e)
        if j is None:
            j = self.hoist_ids[e] = len(self.hoisted)
            self.hoisted.append((e, self.hb.build(e)))
        hax = self.hb.prog.nodes[self.hoisted[j][1]].axes
        axes = None if hax is None else tuple(a for a in hax if a != self.fixed)
        return self.add("hoist", axes, j=j, sliced=hax is not None and self.fixed in hax,
                        expr=e)

    def sum(self, e) -> int:
        """A sum inside the loop: its terms that read the cycle, plus one hoisted term for
        all the others (as plan.lower)."""
        terms = _terms(e)
        stat = [(s, t) for s, t in terms if not self.dynamic(t)]
        dyn = [(s, t) for s, t in terms if self.dynamic(t)]
        parts = [(s, self.build(t)) for s, t in dyn]
        if any(not isinstance(t, Num) for _, t in stat):
            parts.append((1, self.hoist(signed_sum(stat))))
        else:
            parts += [(s, self.build(t)) for s, t in stat]
        s0, node = parts[0]
        if s0 < 0:
            node = self.add("op", self.prog.nodes[node].axes, args=(node,), op=Op.NEG)
        for s, n in parts[1:]:
            node = self.add("op", self.union((node, n)), args=(node, n),
                            op=Op.ADD if s > 0 else Op.SUB)
        return node

    def matmul(self, P, x, e) -> int:
        """`P @ x`: a slice of the one stacked product of x by every parameter applied to
        it in this program."""
        g = self.groups.get(x)
        rows = self.m.param_shapes[P][0]
        if g is None:
            g = self.groups[x] = self.add("gemm", self.prog.nodes[x].axes, args=(x,),
                                          parts=[], expr=e.args[1])
        gn = self.prog.nodes[g]
        for p, off, n in gn.parts:
            if p == P:
                break
        else:
            off = sum(n for _, _, n in gn.parts)
            gn.parts.append((P, off, rows))
        return self.add("slice", gn.axes, args=(g,), name=P, off=off, size=rows, expr=e)

    def reduce(self, e) -> int:
        over = e.kw["over"]
        if over == self.fixed:
            raise Unsupported(f"a reduction over '{over}' inside the loop over '{over}'")
        if self.g.index_kinds.get(over) != "seq":
            raise Unsupported(f"a reduction over the tree index '{over}'")
        arg = e.args[0]
        if e.op in (Op.SUM_OVER, Op.MEAN_OVER) and isinstance(arg, Apply) and \
                arg.op is Op.MUL:
            p, q = (self.build(a) for a in arg.args)
            ap, aq = self.prog.nodes[p].axes, self.prog.nodes[q].axes
            if ap is not None and aq is not None and over in ap + aq:
                axes = tuple(a for a in self.union((p, q)) if a != over)
                return self.add("contract", axes, args=(p, q), op=e.op, over=over, expr=e)
        x = self.build(arg)
        ax = self.prog.nodes[x].axes or ()
        return self.add("reduce", tuple(a for a in ax if a != over), args=(x,), op=e.op,
                        over=over, expr=e)


# ------------------------------------------------------------------- numerics
def _align(a, frm, to):
    """A value with axes `frm` reshaped for broadcasting against axes `to` (a size-1
    axis for each one it lacks); numbers and parameters broadcast as they are."""
    if frm is None or frm == to:
        return a
    lead = len(frm)
    shape = [a.shape[frm.index(x)] if x in frm else 1 for x in to] + list(a.shape[lead:])
    return a.reshape(shape)


def _sum_to(g, shape):
    """g summed down to `shape` (the reverse of numpy broadcasting)."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    ax = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if ax:
        g = g.sum(axis=ax, keepdims=True)
    return g


def _back(g, a, frm, to):
    """The gradient of a value `a` (axes frm) from g of its aligned broadcast (axes to)."""
    if frm is None:
        if np.ndim(a) == 0:
            return None
        return _sum_to(g, np.shape(a))
    return _sum_to(g, _align(a, frm, to).shape).reshape(a.shape)


def _rows(a):
    a = np.ascontiguousarray(a)
    return a.reshape(-1, a.shape[-1])


def _product(x, W, out=None):
    """x [M, K] @ W [K, N], both C-contiguous, into out [M, N] (C-contiguous, or None):
    for a batch of rows (a step's product) in column blocks that OpenBLAS runs on its
    small-matrix path (kernels.blocks)."""
    M, K = x.shape
    N = W.shape[1]
    if 0 < M <= 128 and M * N * K > kernels.SMALL_GEMM and x.dtype == W.dtype and \
            x.flags.c_contiguous and W.flags.c_contiguous:
        if out is None:
            out = np.empty((M, N), x.dtype)
        nb, kb = kernels.blocks(M, N, K)
        kernels.mm_blocks(M, N, K, x, 0, K, W, 0, N, out, 0, N, 0.0, nb, kb)
        return out
    return kernels.matmul(x, W, out=out)


def _einsum(spec, *xs, out_shape=None):
    """np.einsum, and a result broadcast to `out_shape` over output labels that no
    operand has (a gradient that is the same at every step of an index)."""
    ins, out = spec.split("->")
    have = set(ins.replace(",", ""))
    keep = "".join(c for c in out if c in have)
    r = np.einsum(f"{ins}->{keep}", *xs)
    if keep != out:
        r = r.reshape([r.shape[keep.index(c)] if c in keep else 1 for c in out])
        r = np.broadcast_to(r, out_shape)
    return r


def _sigmoid(xs, out, f32):
    if f32:                       # as the generated loops (codegen): through tanh
        r = np.multiply(xs[0], 0.5, out=out)
        np.tanh(r, out=r)
        r *= 0.5
        r += 0.5
        return r
    r = ops.sigmoid(xs[0])              # the interpreter's own (stable) sigmoid
    if out is None:
        return r
    np.copyto(out, r)
    return out


def _ufunc(f, *const):
    return lambda xs, out, f32: f(*xs, *const, out=out)


# elementwise forwards into `out` (None: a new array)
_EW = {Op.ADD: _ufunc(np.add), Op.SUB: _ufunc(np.subtract), Op.MUL: _ufunc(np.multiply),
       Op.DIV: _ufunc(np.divide), Op.NEG: _ufunc(np.negative), Op.TANH: _ufunc(np.tanh),
       Op.SIGMOID: _sigmoid, Op.EXP: _ufunc(np.exp), Op.RELU: _ufunc(np.maximum, 0),
       Op.LOG: _ufunc(np.log), Op.SOFTPLUS: lambda xs, out, f32: np.logaddexp(
           0, xs[0], out=out)}

def _dtanh(g, y):
    d = np.multiply(y, y)             # g * (1 - y^2), one array
    np.subtract(1, d, out=d)
    d *= g
    return d


def _dsigmoid(g, y):
    d = np.subtract(1, y)             # g * y * (1 - y), one array
    d *= y
    d *= g
    return d


# the gradients of the (aligned) arguments, broadcast as the output: (g, y, xs)
_EW_VJP = {
    Op.ADD: lambda g, y, xs: (g, g),
    Op.SUB: lambda g, y, xs: (g, -g),
    Op.MUL: lambda g, y, xs: (g * xs[1], g * xs[0]),
    Op.DIV: lambda g, y, xs: (g / xs[1], -g * xs[0] / (np.asarray(xs[1]) ** 2)),
    Op.NEG: lambda g, y, xs: (-g,),
    Op.TANH: lambda g, y, xs: (_dtanh(g, y),),
    Op.SIGMOID: lambda g, y, xs: (_dsigmoid(g, y),),
    Op.EXP: lambda g, y, xs: (g * y,),
    Op.RELU: lambda g, y, xs: (g * (xs[0] > 0),),
    Op.LOG: lambda g, y, xs: (g / xs[0],),
    Op.SOFTPLUS: lambda g, y, xs: (g * ops.sigmoid(xs[0]),),
}


# ------------------------------------------------------------------- execution
class _Exec:
    """Runs programs in one batch: forward values and saves, reverse gradients."""

    def __init__(self, run, stage_built):
        self.env = run.env           # (not the run: a cycle would keep the buffers)
        self.pool = stage_built.arena
        self.steps, self.slot = 1, 0  # deferred products: how many steps, this one
        self.st = stage_built
        self.B, self.dt = run.B, run.m.dtype
        self.f32 = self.dt == np.float32
        self.lengths = run.lengths
        self.params = run.m.params
        self.letter = {ix: LETTERS[i] for i, ix in enumerate(stage_built.order)}
        self.masks = {}
        self.stacked = {}            # (program, gemm node) -> stacked weights
        self.pgrads = {}
        self.defer = {}              # (program, node) -> [node, param node, [(dG, x)]]
        self.st_nodes = []           # the nodes of the program running

    # ------------------------------------------------------------- padding
    def weights(self, over, op):
        """The weights of a masked sum / mean over `over`: [L, B] (None: plain sum)."""
        key = (over, op)
        if key not in self.masks:
            n = self.env.ex_len.get(over)
            L = self.lengths[over]
            w = None
            if n is not None:
                w = (np.arange(L)[:, None] < n[None, :]).astype(self.dt)
                if op is Op.MEAN_OVER:
                    w = w / n[None, :].astype(self.dt)
            elif op is Op.MEAN_OVER:
                w = np.full((L, self.B), 1.0 / L, self.dt)
            self.masks[key] = w
        return self.masks[key]

    def mask(self, over):
        """The real (unpadded) steps of `over`: [L, B] bool, or None (no padding)."""
        key = (over, "mask")
        if key not in self.masks:
            n = self.env.ex_len.get(over)
            self.masks[key] = None if n is None else \
                np.arange(self.lengths[over])[:, None] < n[None, :]
        return self.masks[key]

    def labels(self, axes):
        return "".join(self.letter[a] for a in axes)

    # ------------------------------------------------------------- forward
    def forward(self, prog, hook=None, outs=None):
        """Every node's value (and what its reverse needs); `hook(node)` gives the values
        of the loop's leaves (state, hoist); `outs[node id]` where to write a value (a
        buffer kept from run to run: no fresh pages each step)."""
        vals, saved = [None] * len(prog.nodes), [None] * len(prog.nodes)
        if outs is None:
            for n in prog.nodes:
                vals[n.id], saved[n.id] = self.fwd(n, vals, hook)
        else:
            for n in prog.nodes:
                vals[n.id], saved[n.id] = self.fwd(n, vals, hook, outs[n.id])
        return vals, saved

    def forward_all(self, built, prog):
        """`forward` of a program over all steps at once, its values written into
        buffers from the pool, shaped as the last run with the same sizes gave them."""
        key = (id(prog), self.B, tuple(sorted(self.lengths.items())))
        shapes = built.shapes.get(key)
        outs = None if shapes is None else \
            [None if sh is None else self.pool.empty(sh, self.dt) for sh in shapes]
        vals, saved = self.forward(prog, outs=outs)
        if shapes is None:
            built.shapes[key] = [vals[n.id].shape if _buffered(n, vals[n.id], self.dt)
                                 else None for n in prog.nodes]
        return vals, saved

    def fwd(self, n, vals, hook, out=None):
        k = n.kind
        if k == "num":
            return n.expr.value, None
        if k == "param":
            return self.params[n.name], None
        if k in ("state", "hoist"):
            return hook(n), None
        if k == "read":
            return self.read(n), None
        args = [vals[a] for a in n.args]
        if k == "op":
            return self.fwd_op(n, args, n.aaxes, out)
        if k == "gemm":
            x = _rows(args[0])
            W, WT = self.stack(n)
            r = _product(x, WT, None if out is None else out.reshape(x.shape[0], -1))
            return r.reshape(np.shape(args[0])[:-1] + (W.shape[0],)), x
        if k == "slice":
            G = args[0]
            if G.shape[-1] == n.size:
                return G, None
            return G[..., n.off:n.off + n.size], None
        if k == "gather":
            ids = np.asarray(args[0])
            out = kernels.gather(self.params[n.name], ids.reshape(-1), pool=self.pool)
            return out.reshape(ids.shape + (out.shape[-1],)), None
        if k == "onehot":
            ids = np.asarray(args[0])
            return ops.onehot(ids.reshape(-1), n.size, self.dt).reshape(
                ids.shape + (n.size,)), None
        if k == "dot":
            return self.fwd_dot(n, args, out)
        if k == "reduce":
            return self.fwd_reduce(n, args[0])
        if k == "contract":
            return self.fwd_contract(n, args, out)
        raise AssertionError(k)

    def read(self, n):
        r, v = n.expr, self.env.g.var(n.name)
        if v.inner is not None:
            a = self.env.vals[r.var].a          # stored [index, inner, B, n]
            return a if n.axes == (v.index, v.inner) else np.swapaxes(a, 0, 1)
        return read(self.env, r, v.index).a

    def stack(self, n):
        key = (id(self.st_nodes), n.id)
        W = self.stacked.get(key)
        if W is None:
            if len(n.parts) == 1:
                W = self.params[n.parts[0][0]]
            else:
                W = np.concatenate([self.params[p] for p, _, _ in n.parts], axis=0)
            W = np.ascontiguousarray(W)
            W = self.stacked[key] = (W, np.ascontiguousarray(W.T))
        return W

    def fwd_op(self, n, args, axes, out=None):
        op = n.op
        xs = args if n.aligned else [_align(a, ax, n.axes) for a, ax in zip(args, axes)]
        f = _EW.get(op)
        if f is not None:
            return f(xs, out, self.f32), xs
        if op is Op.DROPOUT:             # evaluation (training with dropout: interpreted)
            return args[0], None
        if op in (Op.CONCAT, Op.BILINEAR):
            lead = self.lead(n.axes)
            xs = [x if ax is None else np.broadcast_to(x, lead + x.shape[-1:])
                  for x, ax in zip(xs, axes)]
            if op is Op.BILINEAR:
                rows = [x if ax is None else x.reshape(-1, x.shape[-1])
                        for x, ax in zip(xs, axes)]
                out, s = ops.forward(op, ops.Ctx(), rows, n.attrs)
                return out.reshape(lead + out.shape[-1:]), (xs, rows, s)
        out, s = ops.forward(op, ops.Ctx(), xs, n.attrs)
        return out, (xs, s)

    def lead(self, axes):
        return tuple(self.lengths[a] for a in (axes or ())) + (self.B,)

    def fwd_dot(self, n, args, out=None):
        (a, b), nodes = args, self.st_nodes
        aa, ab = nodes[n.args[0]].axes, nodes[n.args[1]].axes
        if aa is None or ab is None:            # a parameter vector: one GEMV
            v, x = (a, b) if aa is None else (b, a)
            x2 = _rows(x)
            r = kernels.matmul(x2, np.asarray(v).reshape(-1, 1),
                               out=None if out is None else out.reshape(-1, 1))
            return r.reshape(np.shape(x)[:-1] + (1,)), x2
        la, lb, lo = self.labels(aa), self.labels(ab), self.labels(n.axes)
        r = np.einsum(f"{la}ZN,{lb}ZN->{lo}Z", a, b,
                      out=None if out is None else out[..., 0])
        return r[..., None], None

    def fwd_reduce(self, n, x):
        ax = self.st_nodes[n.args[0]].axes
        full = self.union_over(n.axes, n.over)
        if ax is None:                           # a number or parameter: per example
            x = np.broadcast_to(np.asarray(x, self.dt), (self.B,) + (np.shape(x) or (1,)))
            ax = ()
        xa = _align(x, ax, full)
        pos = full.index(n.over)
        L = self.lengths[n.over]
        m = self.mask(n.over)
        if m is not None:
            m = _align(m[..., None], (n.over,), full)
        if n.op in (Op.SUM_OVER, Op.MEAN_OVER):
            w = self.weights(n.over, n.op)
            if w is None:
                if xa.shape[pos] == L:
                    return xa.sum(axis=pos), None
                w = np.ones((L, self.B), self.dt)
            w = _align(w[..., None], (n.over,), full)
            return (xa * w).sum(axis=pos), w
        if xa.shape[pos] != L:
            xa = np.broadcast_to(xa, xa.shape[:pos] + (L,) + xa.shape[pos + 1:])
        z = xa if m is None else np.where(m, xa, -np.inf)
        if n.op is Op.MAX_OVER:
            first = z.argmax(axis=pos)
            w = (np.arange(L).reshape((L,) + (1,) * (z.ndim - pos - 1)) ==
                 np.expand_dims(first, pos)).astype(self.dt)
            return z.max(axis=pos), w
        top = z.max(axis=pos, keepdims=True)
        out = top + np.log(np.exp(z - top).sum(axis=pos, keepdims=True))
        return np.squeeze(out, axis=pos), np.exp(z - out)

    def union_over(self, axes, over):
        s = set(axes) | {over}
        return tuple(i for i in self.st.order if i in s)

    def contract_spec(self, n, p, q):
        nodes = self.st_nodes
        ap, aq = nodes[n.args[0]].axes, nodes[n.args[1]].axes
        fp, fq = p.shape[-1] != 1, q.shape[-1] != 1
        lp = self.labels(ap) + "Z" + ("N" if fp else "")
        lq = self.labels(aq) + "Z" + ("N" if fq else "")
        lo = self.labels(n.axes) + "Z" + ("N" if fp or fq else "")
        return lp, lq, lo, fp, fq

    def fwd_contract(self, n, args, out=None):
        p, q = args
        lp, lq, lo, fp, fq = self.contract_spec(n, p, q)
        w = self.weights(n.over, n.op)
        ps, qs = (p if fp else p[..., 0]), (q if fq else q[..., 0])
        o = None if out is None else (out if fp or fq else out[..., 0])
        if w is None:
            r = np.einsum(f"{lp},{lq}->{lo}", ps, qs, out=o)
        else:
            r = np.einsum(f"{lp},{lq},{self.letter[n.over]}Z->{lo}", ps, qs, w, out=o)
        return (r if fp or fq else r[..., None]), None

    # ------------------------------------------------------------- reverse
    def backward(self, prog, vals, saved, seeds, leaf):
        """Gradients from `seeds` ({node id: gradient}) back through the program; leaves
        (state, hoist, read) go to `leaf(node, g)`."""
        grads = dict(seeds)
        nodes = prog.nodes
        for n in reversed(nodes):
            g = grads.pop(n.id, None)
            if g is None:
                continue
            k = n.kind
            if k == "num":
                continue
            if k == "param":
                self.pgrad(n.name, _sum_to(g, self.params[n.name].shape))
                continue
            if k in ("state", "hoist", "read"):
                leaf(n, g)
                continue
            for a, d in zip(n.args, self.vjp(n, g, vals, saved[n.id])):
                if d is None or nodes[a].kind == "num":
                    continue
                if isinstance(d, tuple):                     # a slice of a gemm output
                    off, size, gs = d
                    G = grads.get(a)
                    if G is None:
                        G = grads[a] = np.zeros(np.shape(vals[a]), self.dt)
                    G[..., off:off + size] += gs
                elif a in grads:
                    grads[a] = grads[a] + d
                else:
                    grads[a] = d

    def pgrad(self, p, g):
        cur = self.pgrads.get(p)
        self.pgrads[p] = g if cur is None else cur + g

    def vjp(self, n, g, vals, s):
        k, nodes = n.kind, self.st_nodes
        args = [vals[a] for a in n.args]
        if k == "op":
            return self.vjp_op(n, g, vals[n.id], s, args)
        if k == "gemm":
            W, _ = self.stack(n)
            g2 = _rows(g)
            self.later(n, None, g2, s)
            return (_product(g2, W).reshape(np.shape(args[0])),)
        if k == "slice":
            if args[0].shape[-1] == n.size:
                return (g,)
            return ((n.off, n.size, g),)
        if k == "gather":
            ids = np.asarray(args[0]).reshape(-1)
            P = self.params[n.name]
            self.pgrad(n.name, kernels.scatter(_rows(g), ids, P.shape))
            return (None,)
        if k == "onehot":
            return (None,)
        if k == "dot":
            aa, ab = nodes[n.args[0]].axes, nodes[n.args[1]].axes
            a, b = args
            if aa is None or ab is None:
                pi = 0 if aa is None else 1
                v = args[pi]
                self.later(n, nodes[n.args[pi]], _rows(g), s)
                dx = g * np.asarray(v)
                return (None, dx) if pi == 0 else (dx, None)
            la, lb, lo = self.labels(aa), self.labels(ab), self.labels(n.axes)
            g0 = g[..., 0]
            return (_einsum(f"{lo}Z,{lb}ZN->{la}ZN", g0, b, out_shape=a.shape),
                    _einsum(f"{lo}Z,{la}ZN->{lb}ZN", g0, a, out_shape=b.shape))
        if k == "reduce":
            x, ax = args[0], nodes[n.args[0]].axes
            full = self.union_over(n.axes, n.over)
            pos = full.index(n.over)
            gx = np.expand_dims(g, pos)
            if s is not None:
                d = gx * s
            elif ax is None:
                d = gx
            else:
                d = np.broadcast_to(gx, _align(x, ax, full).shape)
            if ax is None:
                return (_back(d, x, None, full) if np.ndim(x) else None,)
            return (_back(d, x, ax, full),)
        if k == "contract":
            p, q = args
            lp, lq, lo, fp, fq = self.contract_spec(n, p, q)
            w = self.weights(n.over, n.op)
            ps, qs = (p if fp else p[..., 0]), (q if fq else q[..., 0])
            gs = g if fp or fq else g[..., 0]
            if w is None:
                dp = _einsum(f"{lo},{lq}->{lp}", gs, qs, out_shape=ps.shape)
                dq = _einsum(f"{lo},{lp}->{lq}", gs, ps, out_shape=qs.shape)
            else:
                lw = f"{self.letter[n.over]}Z"
                dp = _einsum(f"{lo},{lq},{lw}->{lp}", gs, qs, w, out_shape=ps.shape)
                dq = _einsum(f"{lo},{lp},{lw}->{lq}", gs, ps, w, out_shape=qs.shape)
            return (dp if fp else dp[..., None], dq if fq else dq[..., None])
        raise AssertionError(k)

    def vjp_op(self, n, g, out, s, args):
        axes = n.aaxes
        f = _EW_VJP.get(n.op)
        if f is not None:
            ds = f(g, out, s)
            if n.aligned:                # a size-1 value or a parameter: summed back
                return tuple(None if d is None or np.ndim(a) == 0 else _sum_to(d, a.shape)
                             for d, a in zip(ds, args))
            return tuple(None if d is None else _back(d, a, ax, n.axes)
                         for d, a, ax in zip(ds, args, axes))
        if n.op is Op.DROPOUT:
            return (g,)
        if n.op is Op.BILINEAR:
            xs, rows, sv = s
            ds = ops.vjp(n.op, g.reshape(-1, g.shape[-1]), out.reshape(-1, out.shape[-1]),
                         sv, rows)
            ds = [None if d is None else (d if ax is None else d.reshape(x.shape))
                  for d, x, ax in zip(ds, xs, axes)]
        else:
            xs, sv = s
            ds = ops.vjp(n.op, g, out, sv, xs)
        return tuple(None if d is None else _back(d, a, ax, n.axes)
                     for d, a, ax in zip(ds, args, axes))

    def later(self, n, pnode, g2, x2):
        """A product's weight gradient G^T X, deferred: one GEMM over all steps. The
        step's rows of G and X are kept in buffers [steps, rows, ...] from the pool."""
        key = (id(self.st_nodes), n.id)
        d = self.defer.get(key)
        if d is None:
            if self.steps == 1:
                self.defer[key] = [n, pnode, g2, x2, None]
                return
            d = self.defer[key] = [n, pnode,
                                   self.pool.empty((self.steps,) + g2.shape, self.dt),
                                   self.pool.empty((self.steps,) + x2.shape, self.dt),
                                   np.zeros(self.steps, bool)]
        d[2][self.slot] = g2
        d[3][self.slot] = x2
        d[4][self.slot] = True

    def flush(self):
        """The deferred weight gradients (one GEMM over every saved step per product) and
        the parameter gradients, into the run's."""
        for node, pnode, G, X, done in self.defer.values():
            if done is not None:
                if not done.all():           # steps that passed no gradient to it
                    G[~done] = 0
                G, X = G.reshape(-1, G.shape[-1]), X.reshape(-1, X.shape[-1])
            dW = kernels.matmul(G.T, X, out=self.pool.empty((G.shape[1], X.shape[1]),
                                                            self.dt))
            if pnode is None:                           # a stacked product
                for p, off, rows in node.parts:
                    self.pgrad(p, dW[off:off + rows])
            else:                                       # a dot with a parameter vector
                self.pgrad(pnode.name, dW.reshape(self.params[pnode.name].shape))
        self.defer = {}
        for p, g in self.pgrads.items():
            self.env.add_pgrad(p, np.asarray(g, self.dt))
        self.pgrads = {}


# -------------------------------------------------------------------- the stages
def _finish(prog):
    """What running a program needs of each node, decided once."""
    for n in prog.nodes:
        n.aaxes = tuple(prog.nodes[a].axes for a in n.args)
        n.aligned = all(ax is None or ax == n.axes for ax in n.aaxes)


class AttnBuilt:
    """A compiled attention stage (plan.AttnStage): its programs, ready to run."""

    def __init__(self, graph, model, stage: AttnStage):
        self.stage, self.g, self.m = stage, graph, model
        self.shapes = {}             # (program, batch, lengths) -> its values' shapes
        self.arena = _Arena()        # the buffers of its runs
        seq = [i for i, k in graph.indexes if k == "seq"]
        first = [stage.index] if stage.index is not None else []
        self.order = tuple(first + [i for i in seq if i not in first])
        if stage.cyclic:
            self.hb = _Builder(graph, model, self.order)
            self.sb = _Builder(graph, model, self.order, fixed=stage.index,
                               cyc=stage.vars, hoist=self.hb)
            for v in stage.vars:
                var = graph.var(v)
                if var.index != stage.index and var.inner != stage.index:
                    raise Unsupported(f"'{v}' does not run over the cycle's index")
                self.sb.roots[v] = self.sb.build(var.cases[0].expr)
            self.K = max(self.sb.K, 1)
            _finish(self.sb.prog)
        else:
            (v,) = stage.vars
            self.hb = _Builder(graph, model, self.order)
            self.root = self.hb.build(graph.var(v).cases[0].expr)
        _finish(self.hb.prog)

    # ------------------------------------------------------------ shapes
    def natural(self, v, fixed=None):
        """The axes a variable's stored values have (without the loop's index)."""
        var = self.g.var(v)
        return tuple(i for i in self.order if i in var.indexes and i != fixed)

    def store(self, ex, val, vaxes, axes, n):
        """A root value broadcast to the variable's full shape [*axes, B, n]."""
        shape = ex.lead(axes) + (n,)
        a = _align(np.asarray(val, ex.dt) if vaxes is None else val, vaxes, axes)
        return np.broadcast_to(a, shape)

    # ------------------------------------------------------------ running
    def forward(self, run):
        ex = _Exec(run, self)
        if self.stage.cyclic:
            state = _Loop(self, ex)
        else:
            state = _Static(self, ex)
        state.forward(run)
        return state

    def explain(self) -> list:
        st = self.stage
        idx = {v.name: (v.index, v.inner) if v.inner else v.index for v in self.g.vars}
        def sh(e):
            return show(e, idx.get)
        if not st.cyclic:
            prog = self.hb.prog
            ix = ", ".join(self.natural(st.vars[0]))
            where = f"every step of [{ix}] at once" if ix else "per example"
            return [f"{st.vars[0]}: attention, {where}: " + _summary(prog, prog.nodes, sh)]
        L = st.index
        lines = [(f"{', '.join(st.vars)}: attention recurrence, a loop over {L} with every "
                  "step of the other indexes at once")]
        for e, nid in self.sb.hoisted:
            if isinstance(e, Ref):           # a plain read
                continue
            ax = self.hb.prog.nodes[nid].axes
            kind = "per example" if not ax else "over [" + ", ".join(ax) + "]"
            lines.append(f"  hoisted, {kind}: {sh(e)}")
        if self.sb.hoisted:
            lines.append("  hoisted values computed before the loop for all steps ("
                         + _summary(self.hb.prog, self.hb.prog.nodes, sh)
                         + "); their gradients pushed back once after it")
        lines.append(f"  per step of {L}: " + _summary(self.sb.prog, self.sb.prog.nodes, sh)
                     + f"; backward: {L} in reverse over the saved steps, the weight "
                     "gradients of each product one GEMM over all steps after it")
        return lines


def _summary(prog, nodes, sh) -> str:
    out = []
    gemms = [n for n in nodes if n.kind == "gemm"]
    if gemms:
        out.append(f"{len(gemms)} GEMM (" + "; ".join(
            f"[{', '.join(p for p, _, _ in n.parts)}] @ {sh(n.expr)}" for n in gemms) + ")")
    gathers = [n for n in nodes if n.kind == "gather"]
    if gathers:
        out.append(f"{len(gathers)} lookup(s)")
    dots = [n for n in nodes if n.kind == "dot"]
    for n in dots:
        a, b = (prog.nodes[i] for i in n.args)
        how = "one GEMV" if a.axes is None or b.axes is None else "one batched contraction"
        out.append(f"score {sh(n.expr)} over [{', '.join(n.axes) or '-'}] as {how}")
    for n in nodes:
        if n.kind == "contract":
            out.append(f"{n.op.value} {n.over} of a product as one contraction (einsum)")
        elif n.kind == "reduce":
            out.append(f"{n.op.value} {n.over} (padded steps masked)")
    ew = sum(1 for n in nodes if n.kind == "op")
    if ew:
        out.append(f"{ew} elementwise op(s) broadcast over the indexes")
    return ", ".join(out) if out else "reads only"


class _Static:
    """A variable on no cycle: its whole program once."""

    def __init__(self, built, ex):
        self.b, self.ex = built, ex
        ex.st_nodes = built.hb.prog.nodes

    def forward(self, run):
        b, ex = self.b, self.ex
        (v,) = b.stage.vars
        self.init_ev = run.init_forward(v)
        self.vals, self.saved = ex.forward_all(b, b.hb.prog)
        rn = b.hb.prog.nodes[b.root]
        axes = b.natural(v)
        a = np.ascontiguousarray(b.store(ex, self.vals[b.root], rn.axes, axes, run.m.sizes[v]))
        self.axes = axes
        run.env.vals[v] = V(a, "seq" if axes else "ex")

    def backward(self):
        b, ex, env = self.b, self.ex, self.ex.env
        (v,) = b.stage.vars
        g = env.gvals.get(v)
        if g is not None:
            rn = b.hb.prog.nodes[b.root]
            d = _back(g, self.vals[b.root], rn.axes, self.axes)
            if d is not None:
                ex.backward(b.hb.prog, self.vals, self.saved, {b.root: d}, self.leaf)
                ex.flush()
        if self.init_ev is not None and v in env.ginits:
            _init_backward(self.init_ev, env.ginits[v])

    def leaf(self, n, g):
        _read_back(self.ex.env, n, g)


class _Loop:
    """An attention recurrence in one batch: hoisted values, the loop, its reverse."""

    def __init__(self, built, ex):
        self.b, self.ex = built, ex

    def forward(self, run):
        b, ex = self.b, self.ex
        env, m, dt = ex.env, run.m, ex.dt
        st, K = b.stage, b.K
        L = run.lengths[st.index]
        self.L = L
        # hoisted: every subexpression that does not read the cycle, all steps at once
        ex.st_nodes = b.hb.prog.nodes
        self.hvals, self.hsaved = ex.forward_all(b, b.hb.prog)
        self.H = [self.hvals[nid] for _, nid in b.sb.hoisted]
        # state tapes [K + L, *other axes, B, n]: K rows of what stands before step 0
        self.init_evs = [run.init_forward(v) for v in st.vars]
        self.S, self.init_rows, self.axes = {}, {}, {}
        pool = ex.pool
        for v in st.vars:
            ax = b.natural(v, st.index)
            self.axes[v] = ax
            S = pool.empty((K + L,) + ex.lead(ax) + (m.sizes[v],), dt)
            rows = []
            if not ax:
                for j in range(1, K + 1):
                    val, is_init = env.outside(v, j, True)
                    S[K - j] = val
                    if is_init:
                        rows.append(K - j)
            self.S[v], self.init_rows[v] = S, rows
        # the loop
        ex.st_nodes = b.sb.prog.nodes
        sn = b.sb.prog.nodes
        self.tapes = []
        outs = None
        for u in range(L):
            self.u = u
            step_outs = None if outs is None else \
                [None if o is None else o[u] for o in outs]
            vals, saved = ex.forward(b.sb.prog, self.hook, step_outs)
            if u == 0 and L > 1:
                # every later step writes its values into buffers [L, ...] from the pool
                outs = [pool.empty((L,) + vals[n.id].shape, dt) if _buffered(n, vals[n.id], dt)
                        else None for n in sn]
            for v in st.vars:
                r = b.sb.roots[v]
                self.S[v][K + u] = b.store(ex, vals[r], sn[r].axes, self.axes[v],
                                           m.sizes[v])
            self.tapes.append((vals, saved))
        for v in st.vars:
            a = self.S[v][K:]
            if self.b.g.var(v).index != st.index:      # e[t, u] in a loop over u: stored
                a = np.swapaxes(a, 0, 1)               # as [T, U, ...], its own order
            env.vals[v] = V(a, "seq")

    def hook(self, n):
        if n.kind == "state":
            return self.S[n.name][self.b.K + self.u - n.k]
        h = self.H[n.j]
        return h[self.u] if n.sliced else h

    def backward(self):
        b, ex, env = self.b, self.ex, self.ex.env
        st, K, L = b.stage, b.K, self.L
        dt = ex.dt
        sn = b.sb.prog.nodes
        self.dS = {}
        pool = ex.pool
        for v in st.vars:
            dS = pool.zeros(self.S[v].shape, dt)
            g = env.gvals.get(v)
            if g is not None:
                dS[K:] += g if b.g.var(v).index == st.index else np.swapaxes(g, 0, 1)
            self.dS[v] = dS
        self.dH = [None] * len(self.H)
        ex.st_nodes = sn
        ex.steps = L
        for u in range(L - 1, -1, -1):
            self.u = ex.slot = u
            vals, saved = self.tapes[u]
            seeds = {}
            for v in st.vars:
                r = b.sb.roots[v]
                d = _back(self.dS[v][K + u], vals[r], sn[r].axes, self.axes[v])
                if d is not None:
                    seeds[r] = d if r not in seeds else seeds[r] + d
            ex.backward(b.sb.prog, vals, saved, seeds, self.leaf)
            self.tapes[u] = None             # (its buffers free for the next run)
        ex.flush()
        ex.steps, ex.slot = 1, 0
        # hoisted: their accumulated gradients through their program once
        ex.st_nodes = b.hb.prog.nodes
        seeds = {}
        for j, (_, nid) in enumerate(b.sb.hoisted):
            if self.dH[j] is not None:
                seeds[nid] = self.dH[j] if nid not in seeds else seeds[nid] + self.dH[j]
        if seeds:
            ex.backward(b.hb.prog, self.hvals, self.hsaved, seeds,
                        lambda n, g: _read_back(env, n, g))
            ex.flush()
        self.hvals = self.hsaved = self.H = self.dH = None
        # the init values
        for i, v in enumerate(st.vars):
            ev = self.init_evs[i]
            if ev is None:
                continue
            gi = None
            for r in self.init_rows[v]:
                gi = self.dS[v][r] if gi is None else gi + self.dS[v][r]
            extra = env.ginits.get(v)
            if extra is not None:
                gi = extra if gi is None else gi + extra
            if gi is not None:
                _init_backward(ev, gi)

    def leaf(self, n, g):
        if n.kind == "state":
            self.dS[n.name][self.b.K + self.u - n.k] += g
            return
        if n.kind == "hoist":
            h = self.H[n.j]
            if self.dH[n.j] is None:
                self.dH[n.j] = self.ex.pool.zeros(np.shape(h), self.ex.dt)
            if n.sliced:
                self.dH[n.j][self.u] += g
            else:
                self.dH[n.j] += g
            return
        raise AssertionError(n.kind)


def _buffered(n, val, dt) -> bool:
    """Does this node write its value into a given buffer (`out`)?"""
    if n.kind == "op":
        ok = n.op in _EW
    else:
        ok = n.kind in ("gemm", "contract", "dot")
    return ok and isinstance(val, np.ndarray) and val.dtype == dt and val.ndim > 0


def _read_back(env, n, g):
    r, v = n.expr, env.g.var(n.name)
    if v.is_ids:
        return
    if v.inner is not None:
        env.add_grad(r.var, g if n.axes == (v.index, v.inner) else np.swapaxes(g, 0, 1))
        return
    read_back(env, r, g)


def _init_backward(ev, g):
    """An init value's gradient [B, n] through its evaluation (static.Evaluation)."""
    if ev.out.lead is None:
        g = g.sum(axis=0)
    ev.backward(g)


def build(graph, model, stage: AttnStage) -> AttnBuilt:
    return AttnBuilt(graph, model, stage)


__all__ = ["AttnBuilt", "build"]
