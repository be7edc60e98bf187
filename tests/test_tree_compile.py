"""The level-batched tree executor (compile/trees.py) against the interpreter: values,
loss and every gradient in float64, on the gallery's tree specs and on recursions the
gallery does not have (two variables, a root read); the O(nodes) level schedule."""
from pathlib import Path

import numpy as np
import pytest

import seqgraph
from seqgraph.compile import interpreted
from seqgraph.compile.trees import levels, tree_executor
from seqgraph.gradcheck import gradcheck
from seqgraph.graph.unfold import unfold

from conftest import random_forest, random_tree_batch, randomise_params

SPECS = Path(__file__).resolve().parent.parent / "specs"

# a tree of words, 3 classes at every node
HEAD = """
tree n
dim H = 4
input  w[n] : onehot(V)
target y[n] : class(3)
"""

TREE_LSTM = HEAD + """\
param E, Wl, Wr, Wu, Wo, bo
c[n] : H = E @ w[n]                                                       if leaf
c[n] : H = (sigmoid(Wl @ [h[n.left]; h[n.right]]) * c[n.left]
           + sigmoid(Wr @ [h[n.left]; h[n.right]]) * c[n.right]
           + tanh(Wu @ [h[n.left]; h[n.right]]))                          otherwise
h[n] : H = tanh(c[n])
o[n] = Wo @ [h[n]; h[root]] + bo
loss xent(o[n], y[n])
"""

TWO_LOSSES = """
tree n
dim H = 3
input  w[n] : onehot(V)
target y[n] : class(4)
param E, W, b, Ws, bs, U
h[n] : H = relu(E @ w[n])                                 if leaf
h[n] : H = tanh(W @ [h[n.left]; h[n.right]] + b) / 2      otherwise
g[n] : H = h[n] * 0.5                                     if leaf
g[n] : H = h[n.left] - h[n.right]                         otherwise
o[n] = Ws @ (h[n] + g[n]) + bs
p[n] = U @ g[n]
loss xent(o[n], y[n])
loss 0.5 * xent(p[n], y[n])
"""

# bilinear(T, a, b) with a and b different, and a parameter read both ways (the RNTN's
# bilinear(T, a, a) has its own path in the executor)
BILINEAR_FORMS = """
tree n
dim H = 3
input  w[n] : onehot(V)
target y[n] : class(4)
param E, W, b, Ws, bs
param T init normal(0.3)
param U init normal(0.3)
h[n] : H = tanh(E @ w[n])                                        if leaf
h[n] : H = tanh(bilinear(T, h[n.left], h[n.right])
                + bilinear(U, [h[n.left]; h[n.right]], [h[n.left]; h[n.right]])
                + W @ [h[n.left]; h[n.right]] + b)               otherwise
g[n] : H = bilinear(T, h[n], h[n]) + bilinear(T, h[n], h[n] * 2)
o[n] = Ws @ (h[n] + g[n]) + bs
loss xent(o[n], y[n])
"""


# where trees meet per-example values: a classifier of the root alone (a per-example
# output and target), a per-example input and a per-example hidden variable read at every
# node, a root loss beside the nodes' (one term a tree), a per-example variable reading
# another
TREE_CLASSIFIER = """
tree n
dim H = 4
input  w[n] : onehot(V)
input  z : vec(3)
target y : class(3)
target yn[n] : class(3)
param E, W, b, Z, Wr, Ws, bs, Wn
c = tanh(Z @ z)
h[n] : H = tanh(E @ w[n] + c)                                          if leaf
h[n] : H = tanh(W @ [h[n.left]; h[n.right]] + b + Z @ z)               otherwise
r : 5 = tanh(Wr @ h[root])
o = Ws @ [r; c] + bs
p[n] = Wn @ [h[n]; r]
loss xent(o, y)
loss 0.5 * xent(p[n], yn[n])
loss 2 * xent(p[root], yn[root])
"""


# LANGUAGE.md section 6 writes the RNTN with a helper, `a[n] = [h[n.left]; h[n.right]]`:
# a value with none at a leaf (its one equation reads children), read in the `otherwise`
# equation only, and one more made from it (b). The interpreter read node -1 for a
# leaf's children, the last node of the forest (review 25); both executors now give
# such values zeros at leaves and compute them at internal nodes only.
INTERNAL_ONLY = HEAD + """\
param E, W, b, Ws, bs, V2, b2
param T init normal(0.3)
a[n] = [h[n.left]; h[n.right]]
c[n] = tanh(V2 @ a[n] + b2)
h[n] : H = tanh(E @ w[n])                                      if leaf
h[n] : H = tanh(bilinear(T, a[n], a[n]) + W @ a[n] + c[n] + b) otherwise
o[n] = Ws @ h[n] + bs
loss xent(o[n], y[n])
"""


# a leaf made of parameters alone, its roots read per example: the interpreter stacked
# the [n] roots of the batch into one example's value (review 24)
PARAMS_ONLY_ROOTS = HEAD + """\
target yc : class(2)
param b1, W4, E, Wo, bo, Wc
h[n] : H = relu(b1)                              if leaf
h[n] : H = tanh(W4 @ [h[n.left]; h[n.right]])    otherwise
oc = Wc @ [h[root]; h[root]]
o[n] = Wo @ (h[n] + E @ w[n]) + bo
loss xent(oc, yc)
loss xent(o[n], y[n])
"""


# parameters read as values, alone or in products (review 24: IndexError and ValueError
# in the level-batched executor, which took a vector parameter for one row)
PARAM_OPERANDS = HEAD + """\
param E, W, b, Ws, bs, b1, b2, W3, b9
param b4 : [5]
param b7 : [4]
param W8 : [2, 4]
param T init normal(0.3)
h[n] : H = tanh(b1 * b2 + W3 @ b4 + E @ w[n])                               if leaf
h[n] : H = tanh(W @ [h[n.left]; h[n.right]] + b
                + bilinear(T, b7, W8 @ h[n.left] + b9))                     otherwise
o[n] = Ws @ h[n] + bs
loss xent(o[n], y[n])
"""


def _pair(spec_text_or_path, V=7, **kw):
    if str(spec_text_or_path).endswith(".sg"):
        spec = seqgraph.read_spec(str(spec_text_or_path))
    else:
        spec = seqgraph.read_spec("t.sg", text=spec_text_or_path)
    mi = seqgraph.Model(spec, dims={"V": V}, dtype="float64", **kw)
    mc = seqgraph.Model(spec, dims={"V": V}, dtype="float64", executor="compiled", **kw)
    return mi, mc


def _data(m, f, rng):
    ins, tgs = {}, {}
    for v in m.graph.vars:
        if v.role == "hidden":
            continue
        if v.index is None:                   # per example
            a = rng.integers(0, m.sizes[v.name], size=f.batch) if v.is_ids else \
                rng.normal(size=(f.batch, m.sizes[v.name]))
            (ins if v.role == "input" else tgs)[v.name] = a
            continue
        a = rng.integers(0, m.sizes[v.name], size=f.size)
        if v.role == "input":
            a[~f.is_leaf] = -1
        (ins if v.role == "input" else tgs)[v.name] = a
    return ins, tgs


def _same(a, b, tol=1e-9):
    assert abs(a.loss - b.loss) < tol * max(1, abs(a.loss))
    assert a.terms.keys() == b.terms.keys()
    assert a.values.keys() == b.values.keys() and a.grads.keys() == b.grads.keys()
    for k in a.values:
        assert np.abs(a.values[k] - b.values[k]).max() < tol, k
    for k in a.grads:
        assert np.abs(a.grads[k] - b.grads[k]).max() < tol, k


# H = 20: 2H = 40 is wide enough for the symmetric blocks of the RNTN's weight gradient
RNTN_WIDE = (SPECS / "rntn.sg").read_text().replace("dim H = 8", "dim H = 20")
assert "dim H = 20" in RNTN_WIDE


@pytest.mark.parametrize("spec", [SPECS / "recursive.sg", SPECS / "rntn.sg", RNTN_WIDE,
                                  TREE_LSTM, TWO_LOSSES, BILINEAR_FORMS, TREE_CLASSIFIER,
                                  INTERNAL_ONLY, PARAMS_ONLY_ROOTS, PARAM_OPERANDS],
                         ids=["recursive", "rntn", "rntn_wide", "tree_lstm", "two_losses",
                              "bilinear", "classifier", "internal_only", "params_only",
                              "param_operands"])
def test_compiled_equals_interpreted(spec):
    rng = np.random.default_rng(0)
    mi, mc = _pair(spec)
    randomise_params(mi, rng)
    mc.params.update({k: v.copy() for k, v in mi.params.items()})
    assert tree_executor(mc.executor).fallback is None
    for f in [random_forest(rng), random_forest(rng, B=1, max_leaves=1),
              random_tree_batch(mi, rng)[2]]:
        ins, tgs = _data(mi, f, rng)
        a = mi.run(ins, tgs, grads=True, forest=f)
        b = mc.run(ins, tgs, grads=True, forest=f)
        _same(a, b)
    assert mc.executor._tree_executor._interp is None      # never fell back


def test_a_value_with_none_at_a_leaf_is_zero_there_and_not_a_node():
    rng = np.random.default_rng(1)
    mi, mc = _pair(INTERNAL_ONLY)
    randomise_params(mi, rng)               # b2 != 0: c would be tanh(b2) at a leaf
    mc.params.update({k: v.copy() for k, v in mi.params.items()})
    assert set(mi.graph.internal_only) == {"a", "c"}
    f = random_forest(rng, B=3, max_leaves=5)
    ins, tgs = _data(mi, f, rng)
    for m in (mi, mc):
        v = m.run(ins, tgs, forest=f).values
        assert v["a"].shape == (f.size, 8) and v["c"].shape == (f.size, 4)
        for name in "ac":
            assert not v[name][f.is_leaf].any() and v[name][~f.is_leaf].all()
    g = unfold(mi.graph, {"n": f.size}, f)
    assert {s for name, s in g.nodes if name == "a"} == set(np.flatnonzero(~f.is_leaf))
    for seed in range(3):
        report = gradcheck(mi, seed=seed, B=3)
        assert all(c.ok for c in report), report


def test_levels_are_a_schedule():
    rng = np.random.default_rng(3)
    f = random_forest(rng, B=20, max_leaves=30)
    L = levels(f)
    h = f.height()
    assert np.array_equal(h[L.perm], np.sort(h))           # rows by height
    for k in range(L.depth):
        rows = np.arange(L.lo[k], L.lo[k + 1])
        assert (h[L.perm[rows]] == k).all()
        if k:
            kids = np.concatenate([L.left[rows], L.right[rows]])
            assert (kids < L.lo[k]).all() and len(set(kids)) == len(kids)
    assert np.array_equal(L.perm[L.roots], f.roots)
    assert np.array_equal(L.perm[L.left[L.left >= 0]], f.left[L.perm[L.left >= 0]])


# dropout everywhere the interpreter draws: at a leaf, inside the recursion, twice the
# same expression (two masks), after the recursion over all nodes, with p = 0 (no draw);
# g comes first in the spec but reads h at its node (the order at a node is the reads')
DROPOUTS = HEAD + """\
param E, W, b, Ws, bs, U
g[n] : H = dropout(h[n], 0.3) * 2
h[n] : H = dropout(tanh(E @ w[n]), 0.25)                                    if leaf
h[n] : H = (tanh(W @ dropout([h[n.left]; h[n.right]], 0.5) + b)
            + dropout(h[n.left], 0.5) - dropout(h[n.left], 0.5))           otherwise
o[n] = Ws @ dropout(g[n] + h[n], 0.2) + U @ dropout(h[n], 0.0) + bs
loss xent(o[n], y[n])
"""

TREE_LSTM_DROPOUT = TREE_LSTM.replace("c[n] : H = E @ w[n]",
                                      "c[n] : H = dropout(E @ w[n], 0.4)") \
    .replace("+ tanh(Wu @", "+ dropout(tanh(Wu @", 1).replace(
        "h[n.right]]))                          otherwise",
        "h[n.right]]), 0.3))                          otherwise") \
    .replace("o[n] = Wo @ [h[n]; h[root]] + bo", "o[n] = Wo @ dropout([h[n]; h[n]], 0.5) + bo")
RNTN_DROPOUT = (SPECS / "rntn.sg").read_text().replace(
    "o[n] = Ws @ h[n] + bs", "o[n] = Ws @ dropout(h[n], 0.5) + bs")


# a tree classifier whose nodes drop out: the per-example variables draw nothing, and
# the nodes' draws keep the interpreter's order
# a value with none at a leaf draws at internal nodes only (review 26: the compiled
# executor drew at leaves too)
INTERNAL_ONLY_DROPOUT = INTERNAL_ONLY.replace("tanh(V2 @ a[n] + b2)",
                                              "tanh(V2 @ dropout(a[n], 0.4) + b2)")
CLASSIFIER_DROPOUT = TREE_CLASSIFIER.replace(
    "h[n] : H = tanh(E @ w[n] + c)", "h[n] : H = dropout(tanh(E @ w[n] + c), 0.3)").replace(
    "W @ [h[n.left]; h[n.right]]", "W @ dropout([h[n.left]; h[n.right]], 0.4)")


@pytest.mark.parametrize("spec", [DROPOUTS, TREE_LSTM_DROPOUT, RNTN_DROPOUT,
                                  CLASSIFIER_DROPOUT, INTERNAL_ONLY_DROPOUT],
                         ids=["dropouts", "tree_lstm", "rntn", "classifier",
                              "internal_only"])
def test_training_with_dropout_draws_the_interpreters_masks(spec):
    """Compiled equals interpreted while training with dropout: the same masks (values,
    loss and gradients to 1e-9), and the random generator left in the same state."""
    assert TREE_LSTM_DROPOUT.count("dropout") == 3 and "dropout(h[n], 0.5)" in RNTN_DROPOUT
    assert CLASSIFIER_DROPOUT.count("dropout") == 2
    rng = np.random.default_rng(5)
    mi, mc = _pair(spec)
    randomise_params(mi, rng)
    mc.params.update({k: v.copy() for k, v in mi.params.items()})
    assert tree_executor(mc.executor).mask_plan is not None
    for f in [random_forest(rng), random_forest(rng, B=1, max_leaves=1),
              random_tree_batch(mi, rng)[2]]:
        ins, tgs = _data(mi, f, rng)
        ri, rc = np.random.default_rng(1), np.random.default_rng(1)
        a = mi.run(ins, tgs, train=True, grads=True, forest=f, rng=ri)
        b = mc.run(ins, tgs, train=True, grads=True, forest=f, rng=rc)
        _same(a, b)
        assert ri.bit_generator.state == rc.bit_generator.state
        plain = mc.run(ins, tgs, grads=True, forest=f)      # the masks did something
        if spec is not INTERNAL_ONLY_DROPOUT or (~f.is_leaf).any():   # (leaves draw none)
            assert abs(plain.loss - b.loss) > 1e-6
    assert mc.executor._tree_executor._interp is None      # never fell back


def test_explain_and_fallback():
    _, mc = _pair(SPECS / "rntn.sg")
    lines = tree_executor(mc.executor).explain()
    assert lines[0].startswith("h: level by level") and "o: all nodes" in lines[1]
    assert not any("dropout" in line for line in lines)
    _, mc = _pair(RNTN_DROPOUT)
    assert "masks drawn as the interpreter" in tree_executor(mc.executor).explain()[-1]


# dropouts whose draws the mask plan does not lay out (it knows a node's draws only):
# a node reading its tree's root waits for the whole tree, so the interpreter's draws
# interleave the trees' nodes; a per-example variable draws after all of them
ROOT_DROPOUT = TREE_LSTM.replace("o[n] = Wo @", "o[n] = Wo @ dropout(") \
    .replace("h[root]] + bo", "h[root]], 0.5) + bo")
EXAMPLE_DROPOUT = TREE_CLASSIFIER.replace("o = Ws @ [r; c] + bs",
                                          "o = Ws @ dropout([r; c], 0.5) + bs")
# a node reading a per-example value that reads the root: it waits for the trees too
LATE_DROPOUT = HEAD + """\
param E, W, b, Ws, bs, A
h[n] : H = dropout(tanh(E @ w[n]), 0.3)                          if leaf
h[n] : H = tanh(W @ dropout([h[n.left]; h[n.right]], 0.4) + b)   otherwise
c : H = tanh(A @ h[root])
o[n] : 3 = Ws @ dropout(h[n] + c, 0.5) + bs
loss xent(o[n], y[n])
"""


@pytest.mark.parametrize("text, why", [
    (ROOT_DROPOUT, "interpreted ('o' reads the root"),
    (EXAMPLE_DROPOUT, "interpreted ('o', a per-example variable, has a dropout)"),
    (LATE_DROPOUT, "interpreted ('o' reads 'c', which waits for the trees)")],
    ids=["root", "per_example", "late"])
def test_dropouts_the_mask_plan_cannot_lay_out_train_interpreted(text, why):
    assert "dropout" in text
    mi, mc = _pair(text)
    te = tree_executor(mc.executor)
    assert te.has_dropout and te.fallback is None and te.mask_plan is None
    assert why in te.explain()[-1]
    assert interpreted(mc) is None and \
        interpreted(mc, training=True).startswith("with dropout, ")   # train notes it
    rng = np.random.default_rng(0)
    randomise_params(mi, rng)
    mc.params.update({k: v.copy() for k, v in mi.params.items()})
    f = random_forest(rng)
    ins, tgs = _data(mc, f, rng)
    a = mc.run(ins, tgs, train=True, grads=True, forest=f, rng=np.random.default_rng(1))
    b = mi.run(ins, tgs, train=True, grads=True, forest=f, rng=np.random.default_rng(1))
    _same(a, b)
    assert te._interp is not None


@pytest.mark.parametrize("I", [5, 37, 128])
def test_outer_sum_equals_the_einsum(I):
    """dT = sum_r g_k a_i b_j, and with b = a by symmetric blocks (a few sizes, so that
    the blocks are uneven or absent)."""
    from seqgraph.compile.trees import outer_sum
    rng = np.random.default_rng(I)
    g, a, b = rng.normal(size=(23, 4)), rng.normal(size=(23, I)), rng.normal(size=(23, 3))
    assert np.allclose(outer_sum(g, a), np.einsum("rk,ri,rj->kij", g, a, a), atol=1e-12)
    assert np.allclose(outer_sum(g, a, b), np.einsum("rk,ri,rj->kij", g, a, b), atol=1e-12)

