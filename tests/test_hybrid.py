"""Models over a tree and a sequence run by two executors (compile/hybrid.py): the trees
level-batched, the sequence compiled, the per-example values at the cut handed across (a
tree encoder's c, or a sequence summary the leaves read). Against the interpreter in
float64 (values, loss, terms, carry, every gradient), against finite differences, and
the models it does not cut, which the interpreter runs."""
from pathlib import Path

import numpy as np
import pytest

import seqgraph
from seqgraph.compile import explain, interpreted
from seqgraph.compile.hybrid import split
from seqgraph.compile.trees import tree_executor
from seqgraph.train.optim import Adam

from conftest import gradcheck, random_forest, randomise_params

SPECS = Path(__file__).resolve().parent.parent / "specs"
TREE2SEQ = (SPECS / "tree2seq.sg").read_text()

# everything the cut meets: node losses on the trees beside the decoder's; a per-example
# input both parts read; the decoder reading c, h[root] itself (a value made at the cut)
# and an input of its own; an init value reading c; the previous target fed back
BOTH = """
model both
tree n
dim H = 4
input  w[n] : onehot(V)
input  z : vec(3)
input  x[u] : onehot(K)
target yn[n] : class(3)
target y[u] : class(K)
param E, W, b, Z, Wn, Wc, Wd, Ud, Cd, Rd, Zd, Fd, bd, Wo, bo, Wi
h[n] : H = tanh(E @ w[n] + Z @ z)                     if leaf
h[n] : H = tanh(W @ [h[n.left]; h[n.right]] + b)      otherwise
p[n] = Wn @ h[n]
c : 5 = tanh(Wc @ h[root])
init s = tanh(Wi @ c)
s[u] : 6 = tanh(Wd @ x[u] + Ud @ s[u-1] + Cd @ c + Rd @ h[root] + Zd @ z
                + Fd @ y[u-1] + bd)
o[u] = Wo @ s[u] + bo
loss 0.5 * xent(p[n], yn[n])
loss xent(o[u], y[u])
"""

# the leaves read a sequence's summary (e[end], directly and through a per-example
# variable), the root its first step: the sequence runs first; a tagger's loss on the
# sequence beside the trees'
SEQUENCE_FIRST = """
model seqfirst
tree n
dim H = 4
input  w[n] : onehot(V)
input  x[t] : onehot(K)
target y[n] : class(3)
target g[t] : class(K)
param E, W, b, Wx, Ux, Q, Ws, bs, P, Wg, R
e[t] : 3 = tanh(Wx @ x[t] + Ux @ e[t-1])
q = tanh(P @ e[end])
h[n] : H = tanh(E @ w[n] + Q @ e[end] + R @ q)               if leaf
h[n] : H = tanh(W @ [h[n.left]; h[n.right]] + b + R @ e[1])  otherwise
o[n] = Ws @ h[n] + bs
r[t] = Wg @ e[t]
loss xent(o[n], y[n])
loss 0.5 * xent(r[t], g[t])
"""

# leaves reading a per-example value of parameters alone (no batch axis: every tree
# reads the same)
CONSTANT = SEQUENCE_FIRST.replace("Q @ e[end]", "Q @ e[end] + K @ k").replace(
    "param E,", "param K, bk, E,") + "k : 3 = tanh(bk)\n"

# the trees read the sequence and the sequence the trees: no cut
EACH_OTHER = SEQUENCE_FIRST.replace("r[t] = Wg @ e[t]", "r[t] = Wg @ e[t] + Wq @ h[root]") \
    .replace("param E,", "param Wq, E,")


def _pair(text, dims=None):
    spec = seqgraph.read_spec("t.sg", text=text.split("train {")[0])
    dims = dims or {"V": 7, "K": 5}
    mi = seqgraph.Model(spec, dims=dims, dtype="float64", start_ids={"y": 1})
    mc = seqgraph.Model(spec, dims=dims, dtype="float64", start_ids={"y": 1},
                        executor="compiled")
    randomise_params(mi, np.random.default_rng(0))
    mc.params.update({k: v.copy() for k, v in mi.params.items()})
    return mi, mc


def _data(m, f, rng, U=4):
    ins, tgs = {}, {}
    for v in m.graph.vars:
        if v.role == "hidden":
            continue
        n = m.sizes[v.name]
        if v.index == "n" and not v.is_ids:
            a = rng.normal(size=(f.size, n))
        elif v.index == "n":
            a = rng.integers(0, n, f.size)
            if v.role == "input":
                a[~f.is_leaf] = -1
        elif v.index is None:
            a = rng.normal(size=(f.batch, n))
        else:
            a = rng.integers(0, n, (f.batch, U))
        (ins if v.role == "input" else tgs)[v.name] = a
    return ins, tgs


def _same(a, b, tol=1e-9):
    assert abs(a.loss - b.loss) < tol * max(1.0, abs(a.loss))
    assert list(a.terms) == list(b.terms) and list(a.values) == list(b.values)
    for k, (s, n) in a.terms.items():
        assert abs(s - b.terms[k][0]) < tol * max(1.0, abs(s)) and n == b.terms[k][1]
    assert a.values.keys() == b.values.keys()
    for k in a.values:
        assert np.abs(a.values[k] - b.values[k]).max() < tol, k
    assert a.carry.keys() == b.carry.keys()
    for k in a.carry:
        for x, y in zip(a.carry[k], b.carry[k], strict=True):
            assert np.abs(np.asarray(x) - np.asarray(y)).max() < tol, k
    assert (a.grads is None) == (b.grads is None)
    if a.grads is not None:
        assert a.grads.keys() == b.grads.keys()
        for k in a.grads:
            assert np.abs(a.grads[k] - b.grads[k]).max() < tol, k


@pytest.mark.parametrize("text", [TREE2SEQ, BOTH, SEQUENCE_FIRST, CONSTANT],
                         ids=["tree2seq", "both", "sequence_first", "constant"])
def test_the_hybrid_equals_the_interpreter(text):
    mi, mc = _pair(text)
    hx = tree_executor(mc.executor)
    assert hx.fallback is None and interpreted(mc) is None
    rng = np.random.default_rng(1)
    for f in [random_forest(rng, 5), random_forest(rng, 1, max_leaves=1), random_forest(rng, 3)]:
        ins, tgs = _data(mi, f, rng)
        _same(mi.run(ins, tgs, grads=True, forest=f), mc.run(ins, tgs, grads=True, forest=f))
        # padding: each example's own length on the sequence index
        seq = "t" if text in (SEQUENCE_FIRST, CONSTANT) else "u"
        lengths = {seq: rng.integers(1, 5, f.batch)}
        lengths[seq][0] = 4
        _same(mi.run(ins, tgs, grads=True, forest=f, lengths=lengths),
              mc.run(ins, tgs, grads=True, forest=f, lengths=lengths))
        _same(mi.run(ins, tgs, forest=f), mc.run(ins, tgs, forest=f))      # no grads
    assert hx._interp is None and mc.executor._interp is None    # never fell back


def test_the_cut_of_a_decoder_reading_the_root_and_a_per_example_input():
    parts = split(seqgraph.read_spec("t.sg", text=BOTH).graph)
    assert parts.first == "tree" and parts.cut == ("c", "h[root]")
    assert [(n, v, s.kind) for n, v, s in parts.made] == [("h[root]", "h", "root")]
    assert [v.name for v in parts.tree.vars] == ["w", "z", "yn", "h", "p", "c", "h[root]"]
    assert [(v.name, v.role) for v in parts.seq.vars][:2] == [("c", "input"),
                                                             ("h[root]", "input")]
    assert {v.name for v in parts.seq.vars} >= {"z", "x", "y", "s", "o"}
    assert parts.tree_losses == (0,) and parts.seq_losses == (1,)
    assert [i for i, _ in parts.tree.indexes] == ["n"] and \
        [i for i, _ in parts.seq.indexes] == ["u"]


@pytest.mark.parametrize("text", [BOTH, SEQUENCE_FIRST], ids=["both", "sequence_first"])
def test_the_hybrid_gradients_against_finite_differences(text):
    _, mc = _pair(text)
    rng = np.random.default_rng(4)
    f = random_forest(rng, 3)
    ins, tgs = _data(mc, f, rng)
    grads = mc.run(ins, tgs, grads=True, forest=f).grads
    bad = gradcheck(mc, lambda: mc.run(ins, tgs, forest=f).loss, grads, rng)
    assert not bad, bad
    assert tree_executor(mc.executor)._interp is None


def test_the_hybrid_carries_the_decoder_as_generation_does():
    """One decoder step at a time with the carry in (what sample does), each step's
    logits and carry as the interpreter's."""
    mi, mc = _pair(TREE2SEQ)
    rng = np.random.default_rng(5)
    f = random_forest(rng, 4)
    ins, _ = _data(mi, f, rng)
    carry_i = carry_c = None
    for _ in range(3):
        tgs = {"y": np.full((f.batch, 1), -1)}
        a = mi.run(ins, tgs, carry=carry_i, forest=f)
        b = mc.run(ins, tgs, carry=carry_c, forest=f)
        _same(a, b)
        pick = a.values["o"][:, -1].argmax(axis=1)
        carry_i = {**a.carry, "y": [pick]}
        carry_c = {**b.carry, "y": [pick]}
    assert tree_executor(mc.executor)._interp is None


def test_training_steps_update_both_parts_as_the_interpreter_does():
    mi, mc = _pair(TREE2SEQ)
    rng = np.random.default_rng(6)
    opts = Adam(lr=0.01), Adam(lr=0.01)
    for _ in range(3):
        f = random_forest(rng, 4)
        ins, tgs = _data(mi, f, rng)
        for m, opt in zip((mi, mc), opts, strict=True):
            opt.step(m.params, m.run(ins, tgs, grads=True, train=True, forest=f).grads)
    for k in mi.params:
        assert np.abs(mi.params[k] - mc.params[k]).max() < 1e-9, k


@pytest.mark.parametrize("text, change", [
    (TREE2SEQ, ("Wo @ s[u]", "Wo @ dropout(s[u], 0.3)")),              # after the loop
    (TREE2SEQ, ("U @ s[u-1]", "U @ dropout(s[u-1], 0.3)")),            # in the loop
    (TREE2SEQ, ("C @ c", "C @ dropout(c, 0.2)")),                      # of the cut
    (TREE2SEQ, ("tanh(E @ w[n])", "dropout(tanh(E @ w[n]), 0.4)")),    # at the leaves
    (BOTH, ("Cd @ c", "Cd @ dropout(c, 0.3)")),
    (BOTH, ("Rd @ h[root]", "Rd @ dropout(h[root], 0.3)")),       # a rewritten read
    (SEQUENCE_FIRST, ("Ux @ e[t-1]", "Ux @ dropout(e[t-1], 0.3)")),   # sequence first
    (BOTH, ("p[n] = Wn @ h[n]", "p[n] = Wn @ dropout(h[n], 0.3)")),   # not for the cut
    (SEQUENCE_FIRST, ("r[t] = Wg @ e[t]", "r[t] = Wg @ dropout(e[t], 0.3)"))],
    ids=["output", "loop", "cut", "leaves", "both", "root", "seq_loop", "node_outputs",
         "tagger"])
def test_training_with_dropout_draws_the_interpreters_masks_part_by_part(text, change):
    """One part draws: the first part anywhere (its nodes never wait for the second's,
    so its draws keep their order), or the second where each of its variables waits
    for every value at the cut. The part draws its masks as its executor does, from the
    run's generator. Values, loss and gradients as the interpreter's, the generator
    left in the same state."""
    mi, mc = _pair(text.replace(*change))
    rng = np.random.default_rng(3)
    for f in [random_forest(rng, 3), random_forest(rng, 4)]:
        ins, tgs = _data(mi, f, rng)
        gi, gc = np.random.default_rng(5), np.random.default_rng(5)
        _same(mi.run(ins, tgs, grads=True, train=True, forest=f, rng=gi),
              mc.run(ins, tgs, grads=True, train=True, forest=f, rng=gc))
        assert gi.bit_generator.state == gc.bit_generator.state
    assert tree_executor(mc.executor)._interp is None and \
        interpreted(mc, training=True) is None
    assert explain(mc)[-1] == "training with dropout: each part draws the interpreter's " \
        "masks, the first part's first"


BOTH_DRAW = "both parts draw dropout masks, and the interpreter interleaves their draws"
# a decoder variable that reads a per-example value of an input, not the trees' c
EARLY = TREE2SEQ.replace("input  w[n] : onehot(V)", "input  w[n] : onehot(V)\ninput z : vec(3)") \
    .replace("param E,", "param Wk, Wm, Wq, E,").replace(
        "o[u] = Wo @ s[u] + bo", "k : 3 = tanh(Wk @ z)\nm[u] : 3 = Wm @ dropout(k, 0.3)\n"
                                 "o[u] = Wo @ s[u] + Wq @ m[u] + bo")


@pytest.mark.parametrize("text, change, why", [
    (BOTH.replace("Wo @ s[u]", "Wo @ dropout(s[u], 0.3)"),
     ("p[n] = Wn @ h[n]", "p[n] = Wn @ dropout(h[n], 0.3)"), BOTH_DRAW),
    (TREE2SEQ.replace("Wo @ s[u]", "Wo @ dropout(s[u], 0.3)"),
     ("tanh(E @ w[n])", "dropout(tanh(E @ w[n]), 0.4)"), BOTH_DRAW),
    (SEQUENCE_FIRST.replace("Ws @ h[n]", "Ws @ dropout(h[n], 0.3)"),
     ("r[t] = Wg @ e[t]", "r[t] = Wg @ dropout(e[t], 0.3)"), BOTH_DRAW),
    (EARLY, ("m[u]", "m[u]"), "'s' does not wait for every value at the cut, so the "
     "interpreter draws some masks before the cut is complete"),
    (SEQUENCE_FIRST, ("o[n] = Ws @ h[n]", "o[n] = Ws @ dropout(h[n], 0.3)"),
     "'h' does not wait for every value at the cut, so the interpreter draws some masks "
     "before the cut is complete"),
    (TREE2SEQ, ("init s", "init s"), None)],
    ids=["node_outputs_and_decoder", "leaves_and_decoder", "tagger_and_nodes",
         "decoder_early", "nodes_early", "teacher"])
def test_runs_whose_draws_interleave_are_the_interpreters(text, change, why):
    """Masks the interpreter draws interleaved between the parts (both parts draw, or
    the second draws before the cut is complete), and sampled feedback (teacher < 1),
    are drawn by the interpreter itself: such a run goes to it whole, the same numbers
    drawn, and train says why."""
    mi, mc = _pair(text.replace(*change))
    kw = {"train": True} if why else {"teacher": 0.5}
    rng = np.random.default_rng(7)
    f = random_forest(rng, 3)
    ins, tgs = _data(mi, f, rng)
    a = mi.run(ins, tgs, grads=True, forest=f, rng=np.random.default_rng(8), **kw)
    b = mc.run(ins, tgs, grads=True, forest=f, rng=np.random.default_rng(8), **kw)
    _same(a, b)
    assert tree_executor(mc.executor)._interp is not None
    if why:
        assert interpreted(mc) is None and interpreted(mc, training=True) == \
            f"with dropout, {why}"
        assert explain(mc)[-1] == f"training with dropout: interpreted ({why})"
        _same(mi.run(ins, tgs, forest=f, grads=True), mc.run(ins, tgs, forest=f, grads=True))


# a loss on the trees' side read against the decoder's target (y[1]): the loss goes
# to the sequence part, q across the cut
LOSS_ACROSS = TREE2SEQ.split("train {")[0].replace("param E,", "param Wq, E,") + \
    "q = Wq @ c\nloss xent(q, y[1])\n"
# the decoder reads nothing of the trees
APART = TREE2SEQ.replace(" + C @ c", "").replace("param E, W, b, F, U, C,",
                                                  "param E, W, b, F, U, Ws, bs,") \
    .replace("c = h[root]", "r : 3 = Ws @ h[root] + bs")


# a sequence made of parameters alone beside an input nothing reads: its part's batch
# takes its size and length from that input (review 24: "the batch has no inputs")
UNREAD_INPUT = """
tree n
input w[n] : onehot(5)
input xs[t] : onehot(3)
target y[n] : class(2)
param T5, W6, b7, U2, W4, W8
param b3 : [4]
h1[t] : 4 = tanh(b3 + U2 @ h1[t-1])
q = h1[end]
h[n] : 4 = tanh(W4 @ w[n])    if leaf
h[n] : 4 = tanh(W6 @ [h[n.left]; h[n.right]] + b7)    otherwise
o[n] = W8 @ h[n]
loss xent(o[n], y[n])
"""


@pytest.mark.parametrize("text", [LOSS_ACROSS, APART, UNREAD_INPUT],
                         ids=["loss_across", "apart", "unread_input"])
def test_losses_across_the_cut_and_parts_apart(text):
    mi, mc = _pair(text)
    rng = np.random.default_rng(11)
    for f in [random_forest(rng, 4), random_forest(rng, 1, max_leaves=1)]:
        ins, tgs = _data(mi, f, rng)
        _same(mi.run(ins, tgs, grads=True, forest=f), mc.run(ins, tgs, grads=True, forest=f))
    assert tree_executor(mc.executor)._interp is None
    if text is APART:
        assert explain(mc)[0] == "the trees and the sequence apart: nothing read from one " \
            "by the other"


@pytest.mark.parametrize("change, why", [
    (("+ C @ c", "+ C @ z[root]"), "the sequence read z[root], data over the tree"),
    (("loss xent(o[u], y[u])", "loss xent(o[u], y[u])\nq = Wq @ s[end]\n"
                               "loss xent(q, yn[root])"),
     "the sequence read yn[root], data over the tree")], ids=["input", "target"])
def test_data_over_the_tree_read_by_the_decoder_is_interpreted(change, why):
    text = TREE2SEQ.split("train {")[0].replace(*change).replace(
        "param E,", "param Wq, E,").replace(
        "target y[u] : class(K)", "target y[u] : class(K)\ntarget yn[n] : class(3)\n"
                                   "input z[n] : vec(4)")
    text = text.replace("C @ z[root]", "Z @ z[root]").replace("param Wq,", "param Z, Wq,")
    mi, mc = _pair(text)
    assert interpreted(mc) == why
    rng = np.random.default_rng(12)
    f = random_forest(rng, 3)
    ins, tgs = _data(mi, f, rng)
    _same(mi.run(ins, tgs, grads=True, forest=f), mc.run(ins, tgs, grads=True, forest=f))


def test_explain_names_the_cut_and_each_parts_executor():
    _, mc = _pair(TREE2SEQ)
    lines = explain(mc)
    assert lines[0].startswith("the trees first, then the sequence: c handed")
    assert "  h: level by level (one gather, GEMM and scatter per level)" in lines
    assert any(line.startswith("  s: one compiled loop forward in time") for line in lines)
