"""Attention compiled (seqgraph/compile/attention/) against the interpreter (the
definition): the gallery's attention.sg and luong.sg and variants written here (dot and
additive scores inside and outside a cycle, max / mean / logsumexp / sum over, a
reduction over the outer index, concatenation, bilinear, softmax, a delay of 2, a GRU
decoder, init from the encoder, scores declared [t, u]), padded batches with per-example
lengths on both indexes, windows with carry (generation), float64 and float32: loss,
values, carry and every parameter gradient (float64 to 1e-9, float32 to 1e-4 relative,
test_compile.assert_same)."""
from __future__ import annotations

import numpy as np
import pytest

import seqgraph
from seqgraph.compile import explain
from seqgraph.graph.generate_check import softmax_index

from conftest import SPECS, random_batch
from test_compile import TOL, assert_same, pair, rel

DIMS = {"Vx": 5, "Vy": 6}

VARIANTS = {
    # dot-product scores inside the decoder's cycle (Luong with input feeding), the
    # decoder started from a reduction over the encoder (init from the encoder)
    "dot_in_cycle": """
dim D = 4
dim H = 5
input  x[t] : onehot(Vx)
target y[u] : class(Vy)
param E : [D, Vx]
param F : [D, Vy]
param Wi, Wd, Ud, Cd, bd, Wc, bc, Oh, bo
emb[t] : D = E @ x[t]
h = rnn(emb, H)
c = mean over t (h[t])
init s = tanh(Wi @ c)
e[u, t] = s[u-1] @ h[t]
a[u, t] = softmax over t (e[u, t])
ctx[u] = sum over t (a[u, t] * h[t])
s[u] : H = tanh(Wd @ s[u-1] + Ud @ (F @ y[u-1]) + Cd @ ctx[u] + bd)
z[u] : H = tanh(Wc @ [ctx[u]; s[u]] + bc)
o[u] = Oh @ z[u] + bo
loss xent(o[u], y[u])
""",
    # every reduction inside the cycle; a sum over t of a value that does not depend on t
    "reductions": """
dim H = 5
input  h[t] : vec(4)
target y[u] : class(Vy)
param va : [3]
param Wa, Ua, Wm, Wq, Wk, Wd, Cd, Cg, bd, Oh, bo
e[u, t] = va @ tanh(Wa @ s[u-1] + Ua @ h[t])
a[u, t] = softmax over t (e[u, t])
m[u] : 3 = max over t (Wm @ h[t] * sigmoid(Wq @ s[u-1]))
l[u] = logsumexp over t (e[u, t])
g[u] = mean over t (a[u, t] * h[t])
k[u] : H = sum over t (Wk @ s[u-1])
s[u] : H = tanh(Wd @ s[u-1] + Cd @ m[u] + Cg @ g[u] + l[u] * bd + k[u])
o[u] = Oh @ s[u] + bo
loss xent(o[u], y[u])
""",
    # an MLP score over a concatenation, numbers, a delay of 2
    "concat_delay2": """
dim H = 5
dim A = 3
input  x[t] : onehot(Vx)
target y[u] : class(Vy)
param E : [4, Vx]
param va : [A]
param Wa, ba, Wd, Wd2, Cd, F, Oh, Oc, bo
h[t] = tanh(E @ x[t])
e[u, t] = va @ relu(Wa @ [s[u-1]; h[t]] + ba) - 0.5 * (va @ (Wa @ [s[u-2]; h[t]]))
a[u, t] = softmax over t (e[u, t])
ctx[u] = sum over t (a[u, t] * h[t])
s[u] : H = tanh(Wd @ s[u-1] + Wd2 @ s[u-2] + Cd @ ctx[u] + F @ y[u-1])
o[u] = Oh @ s[u] + Oc @ ctx[u] + bo
loss xent(o[u], y[u])
""",
    # no cycle: scores over (u, t) at once, softmax over the outer index u, a reduction
    # over u into a variable over t, and a max over t into a per-example value
    "static_over_u": """
input  h[t] : vec(4)
input  g[u] : vec(3)
target y[u] : class(Vy)
target w : vec(2)
param va : [4]
param P, Q, Wo, bo, R
k[u, t] = va @ (P @ g[u] * h[t])
b[u, t] = softmax over u (k[u, t])
r[t] : 3 = sum over u (b[u, t] * (Q @ g[u]))
c = max over t (r[t])
o[u] = Wo @ [g[u]; c] + bo
q = R @ c
loss xent(o[u], y[u])
loss mse(q, w)
""",
    # a bilinear score, a softmax over features, concatenation, softplus in the loop
    "bilinear_softmax": """
dim H = 4
input  h[t] : vec(3)
target y[u] : class(Vy)
param va : [2]
param T3 : [2, 4, 3]
param Wd, Cd, Oh, bo, Q
e[u, t] = va @ tanh(bilinear(T3, s[u-1], h[t]))
a[u, t] = softmax over t (e[u, t])
ctx[u] = sum over t (a[u, t] * h[t])
s[u] : H = tanh(Wd @ s[u-1] + Cd @ softmax(ctx[u]) + Q @ [ctx[u]; softplus(s[u-1])])
o[u] = Oh @ s[u] + bo
loss xent(o[u], y[u])
""",
    # scores declared over [t, u] (the encoder's index first) inside the loop over u
    "swapped_indexes": """
input  h[t] : vec(4)
target y[u] : class(Vy)
param va : [3]
param Wa, Ua, Wd, Cd, bd, Oh, bo
e[t, u] = va @ tanh(Wa @ s[u-1] + Ua @ h[t])
a[u, t] = softmax over t (e[t, u])
ctx[u] = sum over t (a[u, t] * h[t])
s[u] : 5 = tanh(Wd @ s[u-1] + Cd @ ctx[u] + bd)
o[u] = Oh @ s[u] + bo
loss xent(o[u], y[u])
""",
    # the G2P decoder: a GRU fed the context, over a bidirectional encoder
    "gru_decoder": """
dim D = 4
dim H = 3
dim S = 5
dim A = 4
input  x[t] : onehot(Vx)
target y[u] : class(Vy)
param F : [D, Vy]
param va : [A] init uniform(0.1)
param Wa, Ua, Vi, b_i
param Wr, Ur, Cr, b_r, Wz, Uz, Cz, b_z, Wn, Un, Cn, b_n, b_hn
param Oh, Oy, Oc, bo
e = embed(x, D)
f = gru(e, H)
g = reverse gru(e, H)
h[t] = [f[t]; g[t]]
init s = tanh(Vi @ [f[end]; g[1]] + b_i)
sc[u, t] = va @ tanh(Wa @ s[u-1] + Ua @ h[t])
a[u, t]  = softmax over t (sc[u, t])
ctx[u]   = sum over t (a[u, t] * h[t])
r[u] : S = sigmoid(Wr @ (F @ y[u-1]) + Cr @ ctx[u] + Ur @ s[u-1] + b_r)
z[u] : S = sigmoid(Wz @ (F @ y[u-1]) + Cz @ ctx[u] + Uz @ s[u-1] + b_z)
n[u] : S = tanh(Wn @ (F @ y[u-1]) + Cn @ ctx[u] + r[u] * (Un @ s[u-1] + b_hn) + b_n)
s[u] : S = (1 - z[u]) * n[u] + z[u] * s[u-1]
o[u] = Oh @ s[u] + Oy @ (F @ y[u-1]) + Oc @ ctx[u] + bo
loss xent(o[u], y[u])
""",
}

# a decoder that runs backward in time (reads s[u+1]): not compiled, and says why
BACKWARD = """
input  h[t] : vec(4)
target y[u] : class(Vy)
param va : [3]
param Wa, Ua, Wd, Cd, bd, Oh, bo
e[u, t] = va @ tanh(Wa @ s[u+1] + Ua @ h[t])
a[u, t] = softmax over t (e[u, t])
ctx[u] = sum over t (a[u, t] * h[t])
s[u] : 5 = tanh(Wd @ s[u+1] + Cd @ ctx[u] + bd)
o[u] = Oh @ s[u] + bo
loss xent(o[u], y[u])
"""

GALLERY = ["attention.sg", "luong.sg"]
ALL = [("gallery", n) for n in GALLERY] + [("variant", n) for n in VARIANTS]
LENGTHS = {"t": 6, "u": 5}
EX_LEN = {"t": np.array([6, 2, 4, 1]), "u": np.array([3, 5, 1, 2])}


def _spec(kind, name):
    if kind == "gallery":
        return seqgraph.read_spec(str(SPECS / name))
    return seqgraph.read_spec(f"{name}.sg", VARIANTS[name])


def _compiled_only(mc, monkeypatch):
    """The compiled model may not hand any run to the interpreter."""
    assert mc.executor.fallback is None, explain(mc)
    monkeypatch.setattr(type(mc.executor), "interp",
                        property(lambda self: pytest.fail("interpreted")))


def _same(ri, rc, dtype, m, ex=None):
    """assert_same (test_compile.py) in the model's dtype. The interpreter's `mean over`
    makes its weights float64 (a bool mask divided by a count), so its float32 gradients
    of a model with it come out float64: the compiled ones must be float32, and those of
    the interpreter are compared in float32. With per-example lengths `ex`, values are
    compared at each example's own steps on each of their indexes only (values at padded
    steps are unspecified), and the carry is not compared."""
    if ri.grads is not None:
        for k in ri.grads:
            assert rc.grads[k].dtype == np.dtype(dtype), k
            ri.grads[k] = ri.grads[k].astype(dtype)
    for k, v in rc.values.items():
        assert v.dtype == np.dtype(dtype), k
    if ex is not None:
        for k in ri.values:
            var = m.graph.var(k)
            a = np.array(rc.values[k], np.float64)
            b = np.array(ri.values[k], np.float64)
            assert a.shape == b.shape, k
            for axis, index in enumerate(var.indexes):
                for e, n in enumerate(ex.get(index, ())):
                    cut = (e,) + (slice(None),) * axis + (slice(n, None),)
                    a[cut] = b[cut] = 0
            assert rel(a, b) < TOL[dtype], k
        ri.values, rc.values, ri.carry, rc.carry = {}, {}, {}, {}
    assert_same(ri, rc, dtype, grads=ri.grads is not None)


# ------------------------------------------------------------------ equivalence
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind, name", ALL)
def test_compiled_equals_interpreted(kind, name, dtype, monkeypatch):
    mi, mc = pair(_spec(kind, name), dtype, dims=DIMS)
    _compiled_only(mc, monkeypatch)
    ins, tgs = random_batch(mi, np.random.default_rng(2), B=3, lengths=LENGTHS)
    _same(mi.run(ins, tgs, grads=True), mc.run(ins, tgs, grads=True), dtype, mi)
    # the forward alone (no gradients) too
    ri, rc = mi.run(ins, tgs), mc.run(ins, tgs)
    assert rc.grads is None
    _same(ri, rc, dtype, mi)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind, name", ALL)
def test_padded_on_both_indexes(kind, name, dtype, monkeypatch):
    """Per-example lengths on the encoder's index (the reductions over t masked) and on
    the decoder's (the losses masked)."""
    mi, mc = pair(_spec(kind, name), dtype, dims=DIMS)
    _compiled_only(mc, monkeypatch)
    ins, tgs = random_batch(mi, np.random.default_rng(3), B=4, lengths=LENGTHS)
    ex = {i: n for i, n in EX_LEN.items() if i in {j for j, _ in mi.graph.indexes}}
    _same(mi.run(ins, tgs, grads=True, lengths=ex), mc.run(ins, tgs, grads=True, lengths=ex),
          dtype, mi, ex)


def test_padding_values_do_not_matter():
    m = seqgraph.Model(_spec("gallery", "attention.sg"), dims=DIMS, dtype="float64",
                       executor="compiled")
    ins, tgs = random_batch(m, np.random.default_rng(4), B=4, lengths=LENGTHS)
    a = m.run(ins, tgs, grads=True, lengths=EX_LEN)
    for b, (t, u) in enumerate(zip(EX_LEN["t"], EX_LEN["u"], strict=True)):
        ins["x"][b, t:] = (ins["x"][b, t:] + 1) % DIMS["Vx"]
        tgs["y"][b, u:] = (tgs["y"][b, u:] + 1) % DIMS["Vy"]
    b = m.run(ins, tgs, grads=True, lengths=EX_LEN)
    assert a.loss == pytest.approx(b.loss, rel=1e-13)
    for p in a.grads:
        np.testing.assert_allclose(a.grads[p], b.grads[p], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind, name, weights", [("gallery", "attention.sg", "a"),
                                                 ("variant", "static_over_u", "b")])
def test_a_padded_step_far_above_the_real_ones_weighs_nothing(kind, name, weights, dtype,
                                                              monkeypatch):
    """Scores scaled by 1e5 put some padded step's score far above its example's real
    steps: exp of the difference overflows in both dtypes, and inf times the context's
    masked 0 was NaN in both executors. A padded step weighs 0 (graph/folded.softmax_over):
    loss and gradients finite, each example's real weights add up to 1, compiled equals
    interpreted (the fused softmax of attention.sg, the op-by-op one of a softmax over
    [u, t] at once), and what the padded steps hold does not matter."""
    mi, mc = pair(_spec(kind, name), dtype, dims=DIMS)
    _compiled_only(mc, monkeypatch)
    for m in (mi, mc):
        m.params["va"] *= 1e5
    ins, tgs = random_batch(mi, np.random.default_rng(4), B=4, lengths=LENGTHS)
    ex = {i: n for i, n in EX_LEN.items() if i in {j for j, _ in mi.graph.indexes}}
    ri, rc = (m.run(ins, tgs, grads=True, lengths=ex) for m in (mi, mc))
    over = softmax_index(mi.graph.var(weights).cases[0].expr)
    for r in (ri, rc):
        assert np.isfinite(r.loss) and all(np.isfinite(g).all() for g in r.grads.values())
        w = np.moveaxis(np.asarray(r.values[weights], np.float64)[..., 0],
                        1 + mi.graph.var(weights).indexes.index(over), -1)   # [B, ., T]
        for b, n in enumerate(ex[over]):
            assert (w[b, ..., n:] == 0).all()
            np.testing.assert_allclose(w[b, ..., :n].sum(axis=-1), 1, rtol=1e-5)
    _same(ri, rc, dtype, mi, ex)
    for name_, a in ins.items():            # other values at the padded steps
        ix = mi.graph.var(name_).index
        for b, n in enumerate(ex.get(ix, ())):
            a[b, n:] = a[b, n:] * 3 + 1 if a.dtype.kind == "f" else (a[b, n:] + 1) % 5
    again = mc.run(ins, tgs, grads=True, lengths=ex)
    assert again.loss == pytest.approx(rc.loss, rel=1e-6)


@pytest.mark.parametrize("kind, name", [("gallery", "attention.sg"),
                                        ("gallery", "luong.sg"),
                                        ("variant", "gru_decoder")])
def test_windows_with_carry(kind, name, monkeypatch):
    """The decoder's index cut in windows of 1, 1 and 3 steps, the state carried (as
    generation runs a window of one step at a time)."""
    mi, mc = pair(_spec(kind, name), "float64", dims=DIMS)
    _compiled_only(mc, monkeypatch)
    ins, tgs = random_batch(mi, np.random.default_rng(5), B=3, lengths=LENGTHS)
    y = tgs["y"]
    carry = [None, None]
    for cut in (slice(0, 1), slice(1, 2), slice(2, None)):
        res = [m.run(ins, {"y": y[:, cut]}, carry=c, grads=True)
               for m, c in zip((mi, mc), carry, strict=True)]
        assert "s" in res[1].carry
        carry = [r.carry for r in res]
        _same(*res, "float64", mi)


# ------------------------------------------------------------------ how it runs
def test_explain_attention_recurrence():
    m = seqgraph.Model(_spec("gallery", "attention.sg"), dims=DIMS, executor="compiled")
    lines = explain(m)
    head = next(i for i, line in enumerate(lines) if "attention recurrence" in line)
    assert lines[head].startswith("e, a, ctx, s: attention recurrence, a loop over u")
    block = lines[head + 1:head + 6]
    assert "  hoisted, over [t]: Ua @ h[t]" in block
    assert any(line.startswith("  hoisted, over [u]: Ud @ F @ y[u-1] + bd") for line in block)
    step = next(line for line in block if line.startswith("  per step of u:"))
    assert "[Wa, Wd] @ s[u-1]" in step and "one GEMV" in step
    # the score, the softmax and the context are one kernel each (attention/fused.py)
    assert "as one fused kernel (the sum, tanh and one GEMV)" in step
    assert "softmax over t as one kernel" in step
    assert "sum over t of a product as one contraction" in step


def test_explain_static_attention():
    m = seqgraph.Model(_spec("gallery", "luong.sg"), dims=DIMS, executor="compiled")
    lines = explain(m)
    e = next(line for line in lines if line.startswith("e: "))
    assert "every step of [u, t] at once" in e and "[Wa] @ h[t]" in e
    assert "one batched contraction" in e
    assert any(line.startswith("ctx: ") and "one contraction" in line for line in lines)
    assert any(line.startswith("s: one compiled loop") for line in lines)


def test_explain_a_softmax_op_by_op():
    """A softmax over [u, t] at once is not the fused kernel's (x over t alone): said as
    op by op, beside its logsumexp."""
    m = seqgraph.Model(_spec("variant", "static_over_u"), dims=DIMS, executor="compiled")
    b = next(line for line in explain(m) if "softmax over u" in line)
    assert "softmax over u op by op (padded steps masked)" in b
    assert "logsumexp over u (padded steps masked)" in b


def test_unsupported_attention_falls_back_with_its_reason():
    spec = seqgraph.read_spec("backward.sg", BACKWARD)
    mi, mc = pair(spec, "float64", dims=DIMS)
    assert "runs backward in time" in mc.executor.fallback
    lines = explain(mc)
    assert lines[0].startswith("interpreted: attention cycle") and \
        "runs backward in time" in lines[0]
    ins, tgs = random_batch(mi, np.random.default_rng(6), B=2, lengths=LENGTHS)
    assert_same(mi.run(ins, tgs, grads=True), mc.run(ins, tgs, grads=True), "float64")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_decoder_step_runs_its_kernels(dtype, monkeypatch):
    """The GRU decoder's step: the score, the softmax and the context one kernel each
    (attention/fused.py), the GRU's elementwise ops one generated loop (ewgroup.py),
    forward and backward, with per-example lengths: the interpreter's numbers."""
    from seqgraph.compile.attention import AttnBuilt, execute
    mi, mc = pair(_spec("variant", "gru_decoder"), dtype, dims=DIMS)
    _compiled_only(mc, monkeypatch)
    (st,) = [s for s in mc.executor.stages if isinstance(s, AttnBuilt) and s.stage.cyclic]
    kinds = [n.kind for n in st.sb.prog.nodes]
    assert "score" in kinds and "softmax" in kinds
    (grp,) = st.sb.prog.group_at.values()
    assert len(grp.members) == 16 and len(grp.stored) < len(grp.members)
    # said by check --explain as one loop, not as ops broadcast one by one
    step = next(line for line in explain(mc) if line.startswith("  per step of u:"))
    assert "16 elementwise op(s) over the batch as 1 generated loop(s)" in step and \
        "broadcast over the indexes" not in step, step
    ran = []
    for name in ("fwd_group", "bwd_group", "fwd_score", "vjp_score", "contract_fast"):
        real = getattr(execute._Exec, name)
        monkeypatch.setattr(execute._Exec, name, lambda self, *a, _r=real, _n=name:
                            (ran.append(_n), _r(self, *a))[1])
    plan = type(grp).plan
    monkeypatch.setattr(type(grp), "plan", lambda self, *a: plan(self, *a) or
                        pytest.fail("the group's inputs fell back"))
    ins, tgs = random_batch(mi, np.random.default_rng(5), B=4, lengths=LENGTHS)
    ex = {i: n for i, n in EX_LEN.items() if i in {j for j, _ in mi.graph.indexes}}
    _same(mi.run(ins, tgs, grads=True, lengths=ex), mc.run(ins, tgs, grads=True, lengths=ex),
          dtype, mi, ex)
    assert set(ran) == {"fwd_group", "bwd_group", "fwd_score", "vjp_score", "contract_fast"}


def test_staggered_pool_buffers():
    """The attention stage's pool (kernels.StaggeredPool): buffers of one size start
    64 bytes apart modulo 4 KB, one is handed out again only once freed, and a buffer
    is its bin's size and 4 KB (a power of two does not take the next bin)."""
    from seqgraph.compile.kernels import StaggeredPool
    pool = StaggeredPool()
    a, b = pool.empty((64, 256), np.float32), pool.empty((64, 256), np.float32)
    assert a.shape == (64, 256) and a.flags.c_contiguous
    assert (b.ctypes.data - a.ctypes.data) % 4096 != 0
    assert not np.shares_memory(a, b)
    addr = a.ctypes.data
    del a
    c = pool.empty((64, 256), np.float32)      # a's buffer, at another offset
    assert not np.shares_memory(b, c)
    assert c.base is not None and c.ctypes.data != addr
    assert c.base.size == 64 * 256 + 1024          # its bin, and 4 KB: not the next bin


def test_training_step_runs_compiled(monkeypatch):
    """A few SGD steps through the compiled stages lower the loss (float32)."""
    m = seqgraph.Model(_spec("gallery", "attention.sg"), dims=DIMS, executor="compiled",
                       seed=1)
    _compiled_only(m, monkeypatch)
    ins, tgs = random_batch(m, np.random.default_rng(7), B=8, lengths=LENGTHS)
    ex = {i: np.concatenate([n, n]) for i, n in EX_LEN.items()}
    losses = []
    for _ in range(20):
        res = m.run(ins, tgs, grads=True, lengths=ex)
        losses.append(res.loss)
        for p, g in res.grads.items():
            m.params[p] -= 0.5 * g
    assert losses[-1] < 0.8 * losses[0]


ATTN = (SPECS / "attention.sg").read_text()
GRU_DECODER = VARIANTS["gru_decoder"]
STATIC_OVER_U = VARIANTS["static_over_u"]


@pytest.mark.parametrize("text, old, new", [
    # the output layer (on no cycle: its masks drawn around the decoder's steps)
    (ATTN, "o[u] = Oh @ s[u] + Oc @ ctx[u] + bo",
     "o[u] = Oh @ dropout(s[u], 0.3) + Oc @ dropout(ctx[u], 0.4) + bo"),
    # the decoder's input, hoisted out of the loop; the context and the state in it
    (ATTN, "Ud @ (F @ y[u-1])", "Ud @ dropout(F @ y[u-1], 0.3)"),
    (ATTN, "sum over t (a[u, t] * h[t])", "dropout(sum over t (a[u, t] * h[t]), 0.25)"),
    (ATTN, "Wd @ s[u-1])", "Wd @ dropout(s[u-1], 0.2))"),
    # a GRU decoder: the same input dropped three times (three draws), a gate dropped
    (GRU_DECODER, "(F @ y[u-1])", "dropout(F @ y[u-1], 0.2)"),
    (GRU_DECODER, "r[u] * (Un", "dropout(r[u], 0.3) * (Un"),
    # on no cycle: a variable over t (a reduction over u inside), one per example
    (STATIC_OVER_U, "sum over u (b[u, t] * (Q @ g[u]))",
     "dropout(sum over u (b[u, t] * (Q @ g[u])), 0.3)"),
    (STATIC_OVER_U, "max over t (r[t])", "dropout(max over t (r[t]), 0.4)"),
    # inside reductions: a draw at every step reduced, for every step of the variable
    # (in the decoder's loop, hoisted out of it, on no cycle); two interleaved
    (ATTN, "sum over t (a[u, t] * h[t])", "sum over t (a[u, t] * dropout(h[t], 0.2))"),
    (ATTN, "sum over t (a[u, t] * h[t])",
     "sum over t (a[u, t] * (dropout(h[t], 0.2) + dropout(h[t], 0.3)))"),
    (STATIC_OVER_U, "sum over u (b[u, t] * (Q @ g[u]))",
     "sum over u (b[u, t] * dropout(Q @ g[u], 0.3))"),
    (STATIC_OVER_U, "max over t (r[t])", "max over t (dropout(r[t], 0.25))"),
    # nested reductions into a value per example, the inner over t, the outer over u
    # (the masks' axes come as (u, t), the program's as (t, u))
    (STATIC_OVER_U, "q = R @ c", "param P2 : [4, 3]\nparam R2 : [2, 4]\n"
     "d = sum over u (sum over t (dropout((P2 @ g[u]) * h[t], 0.3)))\nq = R @ c + R2 @ d"),
    # a value without the step's index, dropped at every step of the decoder
    (ATTN, "tanh(Ud @ (F @ y[u-1])", "tanh(Ud @ (F @ y[u-1]) + Wi @ dropout(h[1], 0.5)"),
], ids=["output-layer", "decoder-input", "context", "state", "gru-input-thrice",
        "gru-gate", "over-t", "per-example", "inside-a-sum", "two-inside-a-sum",
        "inside-a-sum-on-no-cycle", "inside-a-max-per-example", "nested-sums",
        "per-example-in-the-loop"])
def test_dropout_in_an_attention_stage_is_compiled_with_the_interpreters_masks(
        text, old, new, monkeypatch):
    """Dropout on the output layer or in an attention stage (in the decoder's loop with
    this step's masks, hoisted out of it, on no cycle, inside reductions with a mask per
    step reduced) compiled with the interpreter's masks: values, loss and gradients
    equal, padded batches too, the generator left in the same state; and equal in
    evaluation, where a dropout broadcast to more indexes is the value broadcast."""
    assert old in text
    mi, mc = pair(seqgraph.read_spec("drop.sg", text.replace(old, new)), "float64",
                  dims=DIMS)
    _compiled_only(mc, monkeypatch)
    assert "masks drawn as the interpreter draws them" in " ".join(explain(mc))
    ins, tgs = random_batch(mi, np.random.default_rng(2), B=3, lengths=LENGTHS)
    for ex in (None, {i: n[:3] for i, n in EX_LEN.items()}):
        gi, gc = np.random.default_rng(5), np.random.default_rng(5)
        ri = mi.run(ins, tgs, grads=True, train=True, rng=gi, lengths=ex)
        rc = mc.run(ins, tgs, grads=True, train=True, rng=gc, lengths=ex)
        _same(ri, rc, "float64", mi, ex)
        assert gi.bit_generator.state == gc.bit_generator.state
        plain = mc.run(ins, tgs, grads=True, lengths=ex)      # the masks did something
        assert abs(plain.loss - rc.loss) > 1e-6
        _same(mi.run(ins, tgs, grads=True, lengths=ex), plain, "float64", mi, ex)  # eval


@pytest.mark.parametrize("old, new, why", [
    ("e[u, t] = va @ tanh(Wa @ s[u-1]", "e[u, t] = va @ tanh(Wa @ dropout(s[u-1], 0.2)",
     "'e' has a dropout and is over two indexes"),
    # softmax over t is written exp(x - logsumexp over t (x)): one dropout read twice
    ("sum over t (a[u, t] * h[t])", "sum over t (a[u, t] * softmax over t "
     "(dropout(h[t], 0.2)))", "'ctx' reaches one dropout twice"),
    # the two-index value itself dropped; in evaluation the compiled run used to fail
    # on it (the node lacked the index t: review 20)
    ("e[u, t] = va @ tanh(Wa @ s[u-1] + Ua @ h[t])",
     "e[u, t] = dropout(va @ tanh(Wa @ s[u-1] + Ua @ h[t]), 0.3)",
     "'e' has a dropout and is over two indexes"),
    ("a[u, t] = softmax over t (e[u, t])", "a[u, t] = softmax over t (dropout(e[u, t], 0.3))",
     "'a' has a dropout and is over two indexes"),
    ("e[u, t] = va @ tanh(Wa @ s[u-1] + Ua @ h[t])",
     "param be : [A]\ne[u, t] = va @ tanh(Wa @ s[u-1] + Ua @ h[t] + dropout(tanh(be), 0.3))",
     "'e' has a dropout and is over two indexes"),
], ids=["two-indexes", "inside-softmax-over", "a-two-index-value", "softmax-of-dropped",
        "of-parameters-alone"])
def test_dropout_the_layout_does_not_describe_is_interpreted(old, new, why):
    """Where the compiled executor does not lay out the interpreter's draws (a variable
    over two indexes, one dropout read twice), training is interpreted and `check
    --explain` says why."""
    assert old in ATTN
    mi, mc = pair(seqgraph.read_spec("drop.sg", ATTN.replace(old, new)), "float64",
                  dims=DIMS)
    assert f"training with dropout: interpreted ({why})" in explain(mc)
    ins, tgs = random_batch(mi, np.random.default_rng(2), B=3, lengths=LENGTHS)
    ri = mi.run(ins, tgs, grads=True, train=True, rng=np.random.default_rng(5))
    rc = mc.run(ins, tgs, grads=True, train=True, rng=np.random.default_rng(5))
    _same(ri, rc, "float64", mi)
    assert mc.executor._interp is not None
    _same(mi.run(ins, tgs, grads=True), mc.run(ins, tgs, grads=True), "float64", mi)
