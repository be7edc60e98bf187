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
