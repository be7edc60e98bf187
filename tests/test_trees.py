"""Recursive nets in the interpreter: forests, leaf/otherwise cases, gradients."""
from pathlib import Path

import numpy as np
import pytest

import seqgraph
from seqgraph.cli import main
from seqgraph.gradcheck import gradcheck
from seqgraph.graph.trees import Forest, Node, forest
from seqgraph.graph.unfold import unfold

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _batch():
    t1 = Node(3, ((2, 1), Node(4, ((2, 3), (1, 5)))))
    t2 = Node(1, ((0, 2), (3, 4)))
    f, pay = forest([t1, t2])
    w = np.array([-1 if isinstance(p, int) else p[1] for p in pay])
    y = np.array([p if isinstance(p, int) else p[0] for p in pay])
    return f, w, y


def test_forest_numbers_children_before_parents():
    f, _, _ = _batch()
    assert list(f.roots) == [4, 7] and list(f.tree) == [0] * 5 + [1] * 3
    for i in range(f.size):
        if f.left[i] >= 0:
            assert f.left[i] < i and f.right[i] < i
    assert list(f.height()) == [0, 0, 0, 1, 2, 0, 0, 1]


def test_unfolded_tree_reads_children():
    spec = seqgraph.read_spec(str(SPECS / "recursive.sg"))
    f, _, _ = _batch()
    g = unfold(spec.graph, {"n": f.size}, f)
    assert set(g.predecessors(("h", 3))) == {("h", 1), ("h", 2)}
    assert set(g.predecessors(("h", 0))) == {("w", 0)}


@pytest.mark.parametrize("name", ["recursive.sg", "rntn.sg"])
def test_tree_gallery_gradients(name):
    spec = seqgraph.read_spec(str(SPECS / name))
    m = seqgraph.Model(spec, dims={"V": 6}, dtype="float64")
    assert all(c.ok for c in gradcheck(m)), gradcheck(m)


def test_tree_loss_averages_over_trees_and_matches_a_manual_computation():
    spec = seqgraph.read_spec(str(SPECS / "recursive.sg"))
    m = seqgraph.Model(spec, dims={"V": 6}, dtype="float64")
    f, w, y = _batch()
    res = m.run({"w": w}, {"y": y}, forest=f)
    P = m.params
    h = {}
    for i in range(f.size):
        if f.left[i] < 0:
            h[i] = np.tanh(P["E"][:, w[i]])
        else:
            h[i] = np.tanh(P["W"] @ np.concatenate([h[f.left[i]], h[f.right[i]]]) + P["b"])
    total = 0.0
    for i in range(f.size):
        o = P["Ws"] @ h[i] + P["bs"]
        total += np.log(np.exp(o).sum()) - o[y[i]]
    assert res.loss == pytest.approx(total / 2, rel=1e-12)


def test_gradcheck_cli(capsys):
    assert main(["gradcheck", str(SPECS / "recursive.sg")]) == 0
    assert "all passed" in capsys.readouterr().out
    assert main(["gradcheck", str(SPECS / "elman.sg"), "--json"]) == 0
    assert '"ok": true' in capsys.readouterr().out


def test_the_forest_of_one_tree_in_post_order():
    """(a (b c)) in post-order: a, b, c, (b c), root; one example, its root the last."""
    f = Forest.one([-1, -1, -1, 1, 0], [-1, -1, -1, 2, 3])
    assert f.batch == 1 and list(f.roots) == [4] and list(f.tree) == [0] * 5
    assert list(f.height()) == [0, 0, 0, 1, 2]


# ------------------------------------------------- where trees meet per-example values
def _h(P, f, w, extra=lambda i: 0):
    """The recursive net's node vectors by hand (specs/recursive.sg)."""
    h = {}
    for i in range(f.size):
        pre = P["E"][:, w[i]] if f.left[i] < 0 else \
            P["W"] @ np.concatenate([h[f.left[i]], h[f.right[i]]]) + P["b"]
        h[i] = np.tanh(pre + extra(i))
    return h


def _xent(o, y):
    return np.log(np.exp(o).sum()) - o[y]


def _model(text, **dims):
    return seqgraph.Model(seqgraph.read_spec("t.sg", text=text), dims={"V": 6, **dims},
                          dtype="float64")


RECURSIVE = (SPECS / "recursive.sg").read_text()


def test_a_tree_classifier_reads_each_trees_root():
    """`o = Ws @ h[root] + bs` per example: row b is tree b's root; the loss against a
    per-example label is one term a tree."""
    m = _model(RECURSIVE.replace("target y[n]", "target y").replace(
        "o[n] = Ws @ h[n] + bs", "o = Ws @ h[root] + bs").replace(
        "xent(o[n], y[n])", "xent(o, y)"))
    f, w, _ = _batch()
    y = np.array([3, 1])
    res = m.run({"w": w}, {"y": y}, forest=f)
    h, P = _h(m.params, f, w), m.params
    o = [P["Ws"] @ h[r] + P["bs"] for r in f.roots]
    assert np.abs(res.values["o"] - np.array(o)).max() < 1e-12
    assert res.loss == pytest.approx(np.mean([_xent(o[b], y[b]) for b in range(2)]),
                                     rel=1e-12)
    assert all(c.ok for c in gradcheck(m))


def test_a_loss_at_the_root_is_one_term_a_tree():
    m = _model(RECURSIVE.replace("loss xent(o[n], y[n])",
                                 "loss xent(o[n], y[n])\nloss 3 * xent(o[root], y[root])"))
    f, w, y = _batch()
    res = m.run({"w": w}, {"y": y}, forest=f)
    h, P = _h(m.params, f, w), m.params
    o = {i: P["Ws"] @ h[i] + P["bs"] for i in range(f.size)}
    nodes = sum(_xent(o[i], y[i]) for i in range(f.size))
    roots = sum(_xent(o[r], y[r]) for r in f.roots)
    assert res.loss == pytest.approx((nodes + 3 * roots) / 2, rel=1e-12)
    assert res.terms[1][1] == 2                       # one term a tree


def test_a_node_reads_its_own_examples_row_of_a_per_example_value():
    m = _model(RECURSIVE.replace("param E,", "input z : vec(3)\nparam Z, E,").replace(
        "tanh(E @ w[n])", "tanh(E @ w[n] + Z @ z)"))
    f, w, y = _batch()
    z = np.random.default_rng(1).normal(size=(2, 3))
    res = m.run({"w": w, "z": z}, {"y": y}, forest=f)
    P = m.params
    h = _h(P, f, w, lambda i: P["Z"] @ z[f.tree[i]] if f.left[i] < 0 else 0)
    o = {i: P["Ws"] @ h[i] + P["bs"] for i in range(f.size)}
    assert res.loss == pytest.approx(sum(_xent(o[i], y[i]) for i in range(f.size)) / 2,
                                     rel=1e-12)


# a tree encoder feeding a sequence decoder (LANGUAGE.md section 6: h[root] "a tree
# classifier or an encoder"), and a sequence read by the trees' leaves
TREE_TO_SEQUENCE = RECURSIVE.split("o[n]")[0].replace("target y[n] : class(5)", """\
input  x[u] : onehot(K)
target y[u] : class(K)""").replace("param E, W, b, Ws, bs",
                                   "param E, W, b, Wd, Ud, Cd, bd, Wo, bo") + """\
c = h[root]
s[u] : H = tanh(Wd @ x[u] + Ud @ s[u-1] + Cd @ c + bd)
o[u] = Wo @ s[u] + bo
loss xent(o[u], y[u])
"""
SEQUENCE_TO_TREE = RECURSIVE.replace("param E,", """\
input  x[t] : onehot(K)
param Wx, Ux, Z, E,""").replace("tanh(E @ w[n])", "tanh(E @ w[n] + Z @ e[end])") + """\
e[t] : 3 = tanh(Wx @ x[t] + Ux @ e[t-1])
"""


def test_a_node_read_at_a_sequence_step_is_hinted_at_the_root():
    with pytest.raises(seqgraph.SpecError) as e:
        seqgraph.read_spec("t.sg", text=TREE_TO_SEQUENCE.replace("Cd @ c", "Cd @ h[n]"))
    assert "'h' runs over 'n' and this equation over 'u'" in str(e.value)
    assert str(e.value).endswith("hint: use h[root]"), str(e.value)


def test_a_tree_encoder_feeds_a_sequence_decoder():
    m = _model(TREE_TO_SEQUENCE, K=3)
    f, w, _ = _batch()
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 3, (2, 4)), rng.integers(0, 3, (2, 4))
    res = m.run({"w": w, "x": x}, {"y": y}, forest=f)
    h, P = _h(m.params, f, w), m.params
    total = 0.0
    for b, r in enumerate(f.roots):
        s = np.zeros(P["Ud"].shape[0])
        for u in range(4):
            s = np.tanh(P["Wd"][:, x[b, u]] + P["Ud"] @ s + P["Cd"] @ h[r] + P["bd"])
            total += _xent(P["Wo"] @ s + P["bo"], y[b, u])
    assert res.loss == pytest.approx(total / 2, rel=1e-12)
    assert res.values["s"].shape == (2, 4, m.sizes["s"])
    assert all(c.ok for c in gradcheck(m))


def test_tree_leaves_read_a_sequence_summary():
    m = _model(SEQUENCE_TO_TREE, K=3)
    f, w, y = _batch()
    x = np.random.default_rng(3).integers(0, 3, (2, 5))
    res = m.run({"w": w, "x": x}, {"y": y}, forest=f)
    P = m.params
    e = []
    for b in range(2):
        v = np.zeros(3)
        for t in range(5):
            v = np.tanh(P["Wx"][:, x[b, t]] + P["Ux"] @ v)
        e.append(v)
    h = _h(P, f, w, lambda i: P["Z"] @ e[f.tree[i]] if f.left[i] < 0 else 0)
    o = {i: P["Ws"] @ h[i] + P["bs"] for i in range(f.size)}
    assert res.loss == pytest.approx(sum(_xent(o[i], y[i]) for i in range(f.size)) / 2,
                                     rel=1e-12)
    assert all(c.ok for c in gradcheck(m))


@pytest.mark.parametrize("swap, message", [
    (("o[n] = Ws @ h[n] + bs\nloss xent(o[n], y[n])",
      "o = Ws @ h[root] + bs\nloss xent(o, y[n])"), "'o' per example and 'y' at every node"),
    (("xent(o[n], y[n])", "xent(o[n.left], y[n.left])"), "xent reads 'o' at n.left"),
    (("xent(o[n], y[n])", "xent(o[n], y[n.right])"), "xent reads 'y' at n.right"),
    (("xent(o[n], y[n])", "xent(o[root], y[n])"), "at one place an example and 'y' at "
     "every node"),
    (("xent(o[n], y[n])", "xent(o[rot], y[rot])"), "hint: use o[n] or o[root]")])
def test_a_tree_loss_read_elsewhere_than_its_target_is_refused(swap, message):
    with pytest.raises(seqgraph.SpecError) as e:
        seqgraph.read_spec("t.sg", text=RECURSIVE.replace(*swap))
    assert message in str(e.value), str(e.value)


def test_lengths_on_a_tree_index_are_refused():
    """A tree's size is its forest's: lengths on it would mean nothing (the interpreter
    used to mask nodes by number, the level-batched executors ignored them)."""
    m = _model(TREE_TO_SEQUENCE, K=3)
    f, w, _ = _batch()
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 3, (2, 4)), rng.integers(0, 3, (2, 4))
    for lengths in ({"n": np.array([5, 3]), "u": 4}, {"n": f.size}):
        with pytest.raises(seqgraph.UsageError) as e:
            m.run({"w": w, "x": x}, {"y": y}, forest=f, lengths=lengths)
        assert str(e.value) == "lengths['n']: 'n' is a tree index, sized by the forest; " \
            "lengths are for sequence indexes"
    assert m.run({"w": w, "x": x}, {"y": y}, forest=f, lengths={"u": np.array([4, 2])})
