"""Rendering: folded graphs with delay squares, unfolded graphs with a column per step,
and the files written (DOT text, SVG, PNG)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import seqgraph
from seqgraph import render
from seqgraph.errors import UsageError
from seqgraph.graph.folded import (
    NONE,
    Apply,
    Case,
    FoldedGraph,
    Loss,
    ParamDef,
    ParamRef,
    Ref,
    Shift,
    Var,
)
from seqgraph.graph.unfold import unfold
from seqgraph.ops import Op

from conftest import ELMAN, ROOT


# ------------------------------------------------------------ hand-built folded graphs
def mm(p, x):
    return Apply(Op.MATMUL, (ParamRef(p), x))


def add(*xs):
    e = xs[0]
    for x in xs[1:]:
        e = Apply(Op.ADD, (e, x))
    return e


def tanh(x):
    return Apply(Op.TANH, (x,))


def R(var, k=0, kind="rel"):
    return Ref(var, Shift(kind, k))


def graph(name, vars, params, losses, indexes=(("t", "seq"),), dims=(("H", 8),)):
    return FoldedGraph(name=name, dims=dims, indexes=indexes, vars=tuple(vars),
                       params=tuple(ParamDef(p) for p in params), losses=tuple(losses))


def elman():
    return graph("elman", [
        Var("x", "input", "t", "onehot", "V"),
        Var("y", "target", "t", "class", "V"),
        Var("h", "hidden", "t", size="H", cases=(Case(tanh(add(
            mm("W", R("x")), mm("U", R("h", -1)), ParamRef("b")))),)),
        Var("o", "hidden", "t", cases=(Case(add(mm("Wo", R("h")), ParamRef("bo"))),)),
    ], ["W", "U", "b", "Wo", "bo"], [Loss("xent", R("o"), R("y"))])


def bidirectional():
    return graph("bidirectional", [
        Var("x", "input", "t", "vec", 3),
        Var("y", "target", "t", "class", 4),
        Var("h", "hidden", "t", size="H", cases=(Case(tanh(add(
            mm("Wh", R("x")), mm("Uh", R("h", -1))))),)),
        Var("g", "hidden", "t", size="H", cases=(Case(tanh(add(
            mm("Wg", R("x")), mm("Ug", R("g", +1))))),)),
        Var("o", "hidden", "t", cases=(Case(add(
            mm("Vo", Apply(Op.CONCAT, (R("h"), R("g")))), ParamRef("bo"))),)),
    ], ["Wh", "Uh", "Wg", "Ug", "Vo", "bo"], [Loss("xent", R("o"), R("y"))])


def seq2seq():
    return graph("seq2seq", [
        Var("x", "input", "t", "onehot", "Vx"),
        Var("y", "target", "u", "class", "Vy"),
        Var("h", "hidden", "t", size="H", cases=(Case(tanh(add(
            mm("We", R("x")), mm("Ue", R("h", -1))))),)),
        Var("c", "hidden", None, size="H", cases=(Case(tanh(mm("Vc", R("h", 0, "end")))),)),
        Var("s", "hidden", "u", size="H", init=tanh(mm("Vi", Ref("c", NONE))),
            cases=(Case(tanh(add(mm("Wd", R("s", -1)), mm("Ud", R("y", -1)),
                                 mm("Cd", Ref("c", NONE))))),)),
        Var("o", "hidden", "u", cases=(Case(add(mm("Oh", R("s")), mm("Oc", Ref("c", NONE)))),)),
    ], ["We", "Ue", "Vc", "Vi", "Wd", "Ud", "Cd", "Oh", "Oc"],
        [Loss("xent", R("o"), R("y"))], indexes=(("t", "seq"), ("u", "seq")))


def deep(layers=3):
    vars = [Var("x", "input", "t", "vec", 5), Var("y", "target", "t", "vec", 5)]
    below = "x"
    for i in range(1, layers + 1):
        vars.append(Var(f"h{i}", "hidden", "t", size="H", cases=(Case(tanh(add(
            mm(f"W{i}", R(below)), mm(f"U{i}", R(f"h{i}", -1))))),)))
        below = f"h{i}"
    vars.append(Var("o", "hidden", "t", cases=(Case(mm("V", R(below))),)))
    params = [p for i in range(1, layers + 1) for p in (f"W{i}", f"U{i}")] + ["V"]
    return graph("deep", vars, params, [Loss("mse", R("o"), R("y"))])


def recursive():
    return graph("recursive", [
        Var("w", "input", "n", "onehot", "V"),
        Var("y", "target", "n", "class", 5),
        Var("h", "hidden", "n", size="H", cases=(
            Case(tanh(mm("E", R("w"))), "leaf"),
            Case(tanh(mm("W", Apply(Op.CONCAT, (R("h", 0, "left"), R("h", 0, "right"))))),
                 "otherwise"))),
        Var("o", "hidden", "n", cases=(Case(mm("Ws", R("h"))),)),
    ], ["E", "W", "Ws"], [Loss("xent", R("o"), R("y"))], indexes=(("n", "tree"),))


def jordan():
    """Output-to-hidden recurrence (Fig. 10.4): the target read with a delay."""
    return graph("jordan", [
        Var("x", "input", "t", "onehot", "V"),
        Var("y", "target", "t", "class", "V"),
        Var("h", "hidden", "t", size="H", cases=(Case(tanh(add(
            mm("W", R("x")), mm("R", R("y", -1))))),)),
        Var("o", "hidden", "t", cases=(Case(mm("V", R("h"))),)),
    ], ["W", "R", "V"], [Loss("xent", R("o"), R("y"))])


def many_to_one():
    """One output after the whole sequence (Fig. 10.5), read from h[end]."""
    return graph("many_to_one", [
        Var("x", "input", "t", "vec", 3),
        Var("y", "target", None, "class", 2),
        Var("h", "hidden", "t", size="H", cases=(Case(tanh(add(
            mm("W", R("x")), mm("U", R("h", -1))))),)),
        Var("o", "hidden", None, cases=(Case(mm("V", R("h", 0, "end"))),)),
    ], ["W", "U", "V"], [Loss("xent", Ref("o", NONE), Ref("y", NONE))])


def one_to_many():
    """A fixed vector mapped to a sequence (Fig. 10.9)."""
    return graph("one_to_many", [
        Var("x", "input", None, "vec", 3),
        Var("y", "target", "t", "vec", 2),
        Var("h", "hidden", "t", size="H", cases=(Case(tanh(add(
            mm("R", Ref("x", NONE)), mm("W", R("h", -1))))),)),
        Var("o", "hidden", "t", cases=(Case(mm("V", R("h"))),)),
    ], ["R", "W", "V"], [Loss("mse", R("o"), R("y"))])


GRAPHS = {"elman": elman, "jordan": jordan, "many_to_one": many_to_one,
          "one_to_many": one_to_many, "bidirectional": bidirectional, "seq2seq": seq2seq,
          "deep": deep, "recursive": recursive}


# --------------------------------------------------------------------- DOT inspection
NODE = re.compile(r'^\s+"([^"]+)" \[(.*)\];$', re.MULTILINE)
EDGE = re.compile(r'^\s+"([^"]+)" -> "([^"]+)"(?: \[(.*)\])?;$', re.MULTILINE)
RANK = re.compile(r'subgraph "([^"]+)" \{ rank=same;(.*)\}')


def attrs(text):
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', text or ""))


def nodes(dot):
    return {n: attrs(a) for n, a in NODE.findall(dot)}


def edges(dot):
    return [(a, b, attrs(x)) for a, b, x in EDGE.findall(dot)]


def delayed_refs(g):
    """(u, v, label) for each distinct reference with a delay in g's equations."""
    return {(u, v, d["shift"].label()) for u, v, d in g.nx().edges(data=True)
            if d["shift"].is_delay and not d.get("init")}


# ------------------------------------------------------------------------ folded graph
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_a_delay_square_for_each_delayed_value(name):
    """One square per delayed value (h[t-1]), with an edge to each of its readers."""
    g = GRAPHS[name]()
    dot = render.folded_dot(g)
    ns, es = nodes(dot), edges(dot)
    delays = {n: a for n, a in ns.items() if n.startswith("delay:")}
    found = set()
    for d, a in delays.items():
        assert a["shape"] == "square" and a["fillcolor"] == "black"
        (u,) = [x for x, y, _ in es if y == d and x.startswith("var:")]
        readers = [y for x, y, _ in es if x == d]
        assert readers and len(set(readers)) == len(readers)
        found |= {(u[4:], v[4:], a["label"]) for v in readers}
    assert len(delays) == len({(u, label) for u, _, label in delayed_refs(g)})
    assert found == delayed_refs(g)


def test_a_gru_reads_one_square_of_h_from_four_places():
    """The book's picture: one -1 square on h, read by the gates r, z, the candidate n
    and h itself (it was four squares, one per reader)."""
    from seqgraph.lang.elaborate import elaborate
    from seqgraph.lang.parse import parse
    g = elaborate(parse("""model g
input x[t] : onehot(5)
target y[t] : class(5)
param Wy
h = gru(x, 8)
o[t] = Wy @ h[t]
loss xent(o[t], y[t])
""", "g.sg"))
    ns, es = nodes(render.folded_dot(g)), edges(render.folded_dot(g))
    (d,) = [n for n in ns if n.startswith("delay:")]
    assert sorted(y[4:] for x, y, _ in es if x == d) == ["h", "h.n", "h.r", "h.z"]


def test_delay_labels_and_directions():
    dot = render.folded_dot(bidirectional())
    ns, es = nodes(dot), edges(dot)
    labels = {a["label"]: n for n, a in ns.items() if n.startswith("delay:")}
    assert set(labels) == {"-1", "+1"}
    into = {n: [a for x, y, a in es if x == n] for n in labels.values()}
    assert into[labels["+1"]][0]["color"] == render.BACKWARD      # g[t+1] stands out
    assert "color" not in into[labels["-1"]][0]
    tree = nodes(render.folded_dot(recursive()))
    assert sorted(a["label"] for n, a in tree.items() if n.startswith("delay:")) == ["L", "R"]


def test_variables_roles_sizes_and_losses():
    ns = nodes(render.folded_dot(seq2seq(), dims={"Vx": 30}))
    assert ns["var:h"]["label"] == "h[t] : 8"
    assert ns["var:x"]["label"] == "x[t] : onehot(30)"
    assert ns["var:y"]["label"] == "y[u] : class(Vy)"          # unbound: the name
    assert ns["var:c"]["peripheries"] == "2" and ns["var:c"]["label"] == "c : 8"
    assert ns["init:s"]["label"] == "init s"
    shapes = {ns[f"var:{v}"]["fillcolor"] for v in ("x", "y", "h")}
    assert len(shapes) == 3                                      # roles are told apart
    assert ns["loss:0"]["label"] == "L = xent(o[u], y[u])"
    es = edges(render.folded_dot(seq2seq()))
    assert ("var:o", "loss:0") in [(a, b) for a, b, _ in es]
    assert ("var:y", "loss:0") in [(a, b) for a, b, _ in es]
    assert [x.get("label") for a, b, x in es if (a, b) == ("var:h", "var:c")] == ["end"]


def test_a_variable_over_two_indexes_is_labelled_with_both():
    ns = nodes(render.folded_dot(seqgraph.read_spec(str(ROOT / "specs/attention.sg")),
                                 dims={"Vx": 5, "Vy": 6}))
    assert ns["var:e"]["label"] == "e[u, t] : 1" and ns["var:a"]["label"] == "a[u, t] : 1"
    assert ns["var:ctx"]["label"] == "ctx[u] : 16"


def test_sizes_override_and_params():
    g = elman()
    dot = render.folded_dot(g, params=True, sizes={"o": 65, "W": (8, 65)})
    ns, es = nodes(dot), edges(dot)
    assert ns["var:o"]["label"] == "o[t] : 65"
    assert ns["param:W"]["label"] == "W [8, 65]" and ns["param:U"]["label"] == "U"
    assert {b for a, b, _ in es if a == "param:W"} == {"var:h"}
    assert {b for a, b, _ in es if a == "param:bo"} == {"var:o"}
    assert not any(n.startswith("param:") for n in nodes(render.folded_dot(g)))


def test_params_of_an_init_feed_the_init_node():
    es = edges(render.folded_dot(seq2seq(), params=True))
    assert ("param:Vi", "init:s") in [(a, b) for a, b, _ in es]


def test_rejects_what_is_not_a_graph():
    with pytest.raises(UsageError):
        render.folded_dot(42)


# ---------------------------------------------------------------------- unfolded graph
def columns(dot):
    return [(name, re.findall(r'"([^"]+)"', members)) for name, members in RANK.findall(dot)]


def step_columns(dot):
    """The columns of steps 1..T (not those of initial states h[0], g[T+1], c, init s)."""
    ns = nodes(dot)
    return [(c, m) for c, m in columns(dot)
            if any(re.search(r"\[[1-9]\d*\]$", ns[x]["label"]) for x in m)]


def extra_nodes(dag):
    """Nodes the picture adds to the unfolder's DAG: initial states read from outside."""
    return len({(o.var, o.steps, o.before) for _, d in dag.nodes(data=True)
                for o in d.get("outside", ())})


@pytest.mark.parametrize("name,n", [("elman", 1), ("elman", 4), ("bidirectional", 5),
                                    ("deep", 3)])
def test_unfolded_has_a_column_per_step(name, n):
    g = GRAPHS[name]()
    dag = unfold(g, {"t": n})
    dot = render.unfolded_dot(g, {"t": n})
    cols = step_columns(dot)
    assert len(cols) == n
    per_step = len(g.vars) + len(g.losses)              # each variable, and the loss
    assert [len(m) for _, m in cols] == [per_step] * n
    assert len(nodes(dot)) == dag.number_of_nodes() + n * len(g.losses) + extra_nodes(dag)
    labels = {a["label"] for a in nodes(dot).values()}
    assert {"h[0]", "h1[0]"} & labels                   # the initial state, before step 1
    labels = [nodes(dot)[m]["label"] for m in cols[-1][1]]
    assert f"h[{n}]" in labels or f"h3[{n}]" in labels  # steps shown from 1


def test_unfolded_edges_follow_the_dag():
    g = bidirectional()
    dag = unfold(g, {"t": 3})
    dot = render.unfolded_dot(g, {"t": 3}, dag=dag)
    ns, es = nodes(dot), edges(dot)
    label = {n: a["label"] for n, a in ns.items()}
    drawn = set()
    for a, b, x in es:
        if x.get("style") == "invis":
            continue
        if x.get("dir") == "back":
            a, b = b, a
        drawn.add((label[a], label[b]))
    want = {(f"{u}[{s + 1}]", f"{v}[{t + 1}]") for (u, s), (v, t) in dag.edges}
    assert want <= drawn
    g_edges = [x for a, b, x in es if (label[a], label[b]) == ("g[3]", "g[2]")]
    assert g_edges[0]["color"] == render.BACKWARD


def test_unfolded_per_example_and_init_columns():
    g = seq2seq()
    lengths = {"t": 3, "u": 2}
    dag = unfold(g, lengths)
    dot = render.unfolded_dot(g, lengths, dag=dag)
    ns = nodes(dot)
    order = [[ns[m]["label"] for m in members] for _, members in columns(dot)]
    assert len(step_columns(dot)) == 3 + 2
    assert len(order) == 1 + 3 + 1 + 1 + 2      # h[0], t steps, c, (init s, y[0]), u steps
    flat = [lab for col in order for lab in col]
    assert flat.index("h[0]") < flat.index("h[1]")
    assert flat.index("h[3]") < flat.index("c") < flat.index("init s") < flat.index("s[1]")
    assert ["c"] in order and sorted(order[5]) == ["init s", "y[0]"]


def test_columns_are_chained_only_where_no_edge_joins_them():
    """The invisible edge ordering two neighbour columns pulls its ends level: drawn from
    `init s` to the decoder's first column it dragged y[1] down among the states. It is
    drawn only between columns no edge of the graph joins (here c -> init s -> s[1])."""
    g = seq2seq()
    dot = render.unfolded_dot(g, {"t": 3, "u": 2})
    label = {n: a["label"] for n, a in nodes(dot).items()}
    col = {m: k for k, (_, members) in enumerate(columns(dot)) for m in members}
    drawn = edges(dot)
    joined = {(col[a], col[b]) for a, b, x in drawn if x.get("style") != "invis"}
    joined |= {(j, i) for i, j in joined}
    chain = [(a, b) for a, b, x in drawn if x.get("style") == "invis" and col[a] != col[b]
             and x.get("weight") == "1"]
    assert [(col[a], col[b]) for a, b in chain if (col[a], col[b]) in joined] == []
    assert not [b for _, b in chain if label[b] == "y[1]"]


def test_the_state_past_a_backward_recurrence_stays_level_with_what_it_feeds():
    """g[T+1] has a column of its own, right of the last step, read from its left: the
    edge ordering the columns ran from x[3] and pulled it to the bottom corner, a long
    diagonal to g[3]. It runs from g[3] now, the node g[T+1] feeds."""
    dot = render.unfolded_dot(bidirectional(), {"t": 3})
    label = {n: a["label"] for n, a in nodes(dot).items()}
    into = [label[a] for a, b, x in edges(dot)
            if label[b] == "g[T+1]" and x.get("style") == "invis"]
    assert into == ["g[3]"]


def test_a_variable_over_two_indexes_has_a_row_per_inner_step():
    """e[u, t] stands in the column of u: its rows run e[1, t] -> e[2, t] -> e[3, t]. A
    chain through all of e joined e[1, 3] to e[2, 1], and the decoder's columns slid
    down the picture as a staircase."""
    spec = seqgraph.read_spec(str(ROOT / "specs/attention.sg"))
    dot = render.unfolded_dot(spec, {"t": 3, "u": 3})
    label = {n: a["label"] for n, a in nodes(dot).items()}
    rows = {(label[a], label[b]) for a, b, x in edges(dot)
            if x.get("style") == "invis" and label[a].startswith(("e[", "a["))}
    want = {(f"{v}[{u}, {t}]", f"{v}[{u + 1}, {t}]") for v in "ea" for u in (1, 2)
            for t in (1, 2, 3)}
    assert rows == want


def test_a_softmax_over_t_is_drawn_as_one_node_a_decoder_step():
    """a[u, t] reads every e[u, t'] through the logsumexp its softmax is written as: one
    dashed box `logsumexp over t` in the column of each u, fed by e[u, 1..T] and feeding
    a[u, 1..T] (a reader sees a[u, t] depends on every e[u, t']), not T^2 crossing
    edges."""
    import networkx as nx
    spec = seqgraph.read_spec(str(ROOT / "specs/attention.sg"))
    dot = render.unfolded_dot(spec, {"t": 3, "u": 2})
    ns = nodes(dot)
    label = {n: a["label"] for n, a in ns.items()}
    hubs = [n for n in ns if label[n] == "logsumexp over t"]
    assert len(hubs) == 2 and all(ns[n]["style"] == "rounded,dashed" for n in hubs)
    drawn = nx.DiGraph()
    for a, b, x in edges(dot):
        if x.get("style") != "invis":
            drawn.add_edge(*((b, a) if x.get("dir") == "back" else (a, b)))
    by = {v: k for k, v in label.items()}
    column = {m: c for c, members in columns(dot) for m in members}
    for u in (1, 2):
        hub = next(h for h in hubs if column[h] == column[by[f"a[{u}, 1]"]])
        assert {label[p] for p in drawn.predecessors(hub)} == {f"e[{u}, {t}]" for t in (1, 2, 3)}
        assert {label[p] for p in drawn.successors(hub)} == {f"a[{u}, {t}]" for t in (1, 2, 3)}
        assert all(nx.has_path(drawn, by[f"e[{u}, {j}]"], by[f"a[{u}, {t}]"])
                   for t in (1, 2, 3) for j in (1, 2, 3))


def test_a_trees_labels_are_classes_of_its_target():
    """`--tree "(9 ...)"` for a `class(5)` target drew a label 9 the model has no class
    for (review 49); a tree encoder's labels are not classes of its sequence target."""
    spec = seqgraph.read_spec(str(ROOT / "specs/recursive.sg"))
    with pytest.raises(UsageError, match=r"--tree: the label 9 is not a class of 'y', "
                                         r"which has 5 \(0 to 4\)"):
        render.tree_dot(spec, "(9 (2 a) (3 film))")
    assert "y[3] = 4" in render.tree_dot(spec, "(4 (2 a) (3 film))")
    t2s = seqgraph.read_spec(str(ROOT / "specs/tree2seq.sg"))
    render.tree_dot(t2s, "(9 (2 cat) (2 dog))", lengths={"u": 2})


def test_a_tree_encoders_decoder_steps_are_coloured_as_unfolded():
    """tree2seq drawn over a tree: the decoder's s[1] -> s[2] and y[1] -> s[2] (reads of
    u-1) are the blue of every unfolded recurrence, the tree's children green."""
    spec = seqgraph.read_spec(str(ROOT / "specs/tree2seq.sg"))
    dot = render.tree_dot(spec, "(2 (2 cat) (2 dog))", lengths={"u": 2})
    label = {n: a["label"] for n, a in nodes(dot).items()}
    colour = {(label[a], label[b]): x.get("color") for a, b, x in edges(dot)}
    assert colour[("s[1]", "s[2]")] == colour[("y[1]", "s[2]")] == render.FORWARD
    assert colour[("h[1]", "h[3]")] == render.TREE
    assert colour[("s[1]", "o[1]")] is None


def test_a_tree_encoders_decoder_starts_from_its_initial_state_and_word(tmp_path):
    """tree2seq over a tree: s[1] reads s[0] and y[0] (the start), drawn as the unfolded
    graph draws them (grey, dashed into s[1]), each on its row before step 1; they were
    left out, and s[1] seemed to read nothing before it. `init s`'s edge is dashed too."""
    spec = seqgraph.read_spec(str(ROOT / "specs/tree2seq.sg"))
    dot = render.tree_dot(spec, "(2 (2 cat) (2 dog))", lengths={"u": 2})
    ns = nodes(dot)
    label = {n: a["label"] for n, a in ns.items()}
    into = {(label[a], label[b]): x for a, b, x in edges(dot)}
    for start in ("s[0]", "y[0]"):
        assert into[(start, "s[1]")]["style"] == "dashed", into
        assert next(a for a in ns.values() if a["label"] == start)["shape"] == "plaintext"
        row = next(m for _, m in columns(dot) if any(label[x] == start for x in m))
        assert sorted(label[x] for x in row) == [start, start[0] + "[1]", start[0] + "[2]"]
    source = (ROOT / "specs/tree2seq.sg").read_text().replace(
        "c = h[root]", "c = h[root]\ninit s = tanh(Vi @ c)").replace("bo\n", "bo, Vi\n", 1)
    (tmp_path / "init.sg").write_text(source)
    dot = render.tree_dot(seqgraph.read_spec(str(tmp_path / "init.sg")), "(2 (2 cat) (2 dog))",
                          lengths={"u": 2})
    label = {n: a["label"] for n, a in nodes(dot).items()}
    into = {(label[a], label[b]): x for a, b, x in edges(dot)}
    assert into[("init s", "s[1]")]["style"] == "dashed" and ("s[0]", "s[1]") not in into


# ------------------------------------------------------------------------------ files
def test_graphviz_pure_is_found_beside_python_off_path(monkeypatch):
    """`.venv/bin/seqgraph render` run without activating the venv: the dependency
    graphviz-pure is in the venv's bin, not on PATH; it is found there."""
    import sys
    beside = Path(sys.executable).parent / "graphviz-pure"
    if not beside.is_file():
        pytest.skip("graphviz-pure is not installed beside this Python")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert render.layout_engine() == str(beside)


@pytest.mark.parametrize("ext", ["dot", "svg", "png"])
def test_write_formats(tmp_path, ext):
    out = tmp_path / f"elman.{ext}"
    render.write(render.folded_dot(elman()), out)
    data = out.read_bytes()
    assert data
    if ext == "png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    elif ext == "svg":
        assert b"<svg" in data
    else:
        assert data.startswith(b"digraph")


def test_write_unfolded_png(tmp_path):
    g = seq2seq()
    out = tmp_path / "s2s.png"
    render.write(render.unfolded_dot(g, {"t": 2, "u": 2}), out)
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["model.jpg", "model", "model.pdf"])
def test_bad_extension(tmp_path, name):
    with pytest.raises(UsageError, match="extension"):
        render.write("digraph x {}", tmp_path / name)


def test_no_layout_engine(tmp_path, monkeypatch):
    monkeypatch.setattr(render.shutil, "which", lambda name, path=None: None)
    with pytest.raises(UsageError, match="layout engine"):
        render.write("digraph x {}", tmp_path / "a.svg")
    render.write("digraph x {}", tmp_path / "a.dot")      # DOT text needs none
    assert (tmp_path / "a.dot").read_text().startswith("digraph")


def test_nodes_are_drawn_over_the_edges():
    """graphviz-pure routes some edges across a delay square: drawn after the nodes, the
    edge hid the square's "-" (g2p's folded graph showed a "1"). Every picture draws its
    edges first, so a node and its label stay on top."""
    for dot in (render.folded_dot(elman()), render.unfolded_dot(elman(), {"t": 2})):
        assert re.search(r'^\s+outputorder="edgesfirst";$', dot, re.MULTILINE)


def test_dot_quotes_names():
    assert render.quote('a "b"\nc') == '"a \\"b\\"\\nc"'


# -------------------------------------------------------------------------- the command
def _fake_read_spec(monkeypatch, g):
    """read_spec giving the hand-built graph g, as a spec: its sizes all left open."""
    import types

    from seqgraph.graph.check import check
    monkeypatch.setattr(seqgraph, "read_spec", lambda path, dims=None: types.SimpleNamespace(
        graph=g, path=path, unbound_dims=lambda: check(g).unbound()), raising=False)


@pytest.mark.parametrize("unfold", ["\u00b2", "t=\u00b2"])
def test_an_unfold_of_a_digit_int_cannot_read_is_a_usage_error(tmp_path, capsys, unfold):
    """str.isdigit holds for '\u00b2', which int() refuses: a ValueError traceback."""
    from seqgraph import cli
    assert cli.main(["render", str(ROOT / "specs/elman.sg"), "--unfold", unfold, "--dim",
                     "V=5", "-o", str(tmp_path / "e.dot")]) == 2
    err = capsys.readouterr().err
    assert f"--unfold expects N or INDEX=N,..., got '{unfold}'" in err and "Traceback" not in err


def test_cli_folded(tmp_path, monkeypatch, capsys):
    from seqgraph import cli
    _fake_read_spec(monkeypatch, elman())
    out = tmp_path / "elman.png"
    assert cli.main(["render", "elman.sg", "-o", str(out), "--params", "--dim", "V=65"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    dot = tmp_path / "elman.dot"
    assert cli.main(["render", "elman.sg", "-o", str(dot), "--dim", "V=65"]) == 0
    assert "x[t] : onehot(65)" in dot.read_text()


@pytest.mark.parametrize("argv,message", [
    (["-o", "m.jpg"], "unknown extension"),
    (["-o", "m.dot", "--dim", "V"], "NAME=SIZE"),
    (["-o", "m.dot", "--unfold", "q=3"], "not a sequence index"),
    (["-o", "m.dot", "--unfold", "0"], "at least 1"),
    (["-o", "m.dot", "--unfold", "3", "--params"],
     "--params draws the parameters on the folded graph; leave out --unfold"),
    (["-o", "m.dot", "--tree", "(1 a)", "--params"], "leave out --tree"),
])
def test_cli_errors(tmp_path, monkeypatch, capsys, argv, message):
    from seqgraph import cli
    _fake_read_spec(monkeypatch, elman())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["render", "elman.sg", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_lengths():
    from seqgraph.cmd.render import parse_lengths
    assert parse_lengths("4", seq2seq()) == {"t": 4, "u": 4}
    assert parse_lengths("t=3,u=5", seq2seq()) == {"t": 3, "u": 5}
    with pytest.raises(UsageError, match="no length for index u"):
        parse_lengths("t=3", seq2seq())
    with pytest.raises(UsageError, match="trees"):
        parse_lengths("3", recursive())


# ------------------------------------------------------------------ real specs, end to end
SPECS = {
    "elman": "\ndim H = 16\n" + ELMAN,
    "bidirectional": """
input  x[t] : vec(3)
target y[t] : class(4)
param Wh, Uh, Wg, Ug, V, c
h[t] : 8 = tanh(Wh @ x[t] + Uh @ h[t-1])
g[t] : 8 = tanh(Wg @ x[t] + Ug @ g[t+1])
o[t] = V @ [h[t]; g[t]] + c
loss xent(o[t], y[t])
""",
    "seq2seq": """
dim H = 8
input  x[t] : onehot(Vx)
target y[u] : class(Vy)
param We, Ue, Vc, Vi, Wd, Ud, Cd, Oh, Oc
h[t] : H = tanh(We @ x[t] + Ue @ h[t-1])
c    : H = tanh(Vc @ h[end])
init s = tanh(Vi @ c)
s[u] : H = tanh(Wd @ s[u-1] + Ud @ y[u-1] + Cd @ c)
o[u] = Oh @ s[u] + Oc @ c
loss xent(o[u], y[u])
""",
    "stacked": """
input  x[t] : onehot(V)
target y[t] : class(V)
param Wo
d = stack(3) rnn(x, 8)
o[t] = Wo @ d[t]
loss xent(o[t], y[t])
""",
    "recursive": """
tree n
input  w[n] : onehot(V)
target y[n] : class(5)
param E, W, Ws
h[n] : 8 = tanh(E @ w[n])                   if leaf
h[n] : 8 = tanh(W @ [h[n.left]; h[n.right]])   otherwise
o[n] = Ws @ h[n]
loss xent(o[n], y[n])
""",
}


def read(name):
    import seqgraph
    return seqgraph.read_spec(f"{name}.sg", text=SPECS[name])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_folded(name, tmp_path):
    spec = read(name)
    dot = render.folded_dot(spec, params=True, dims={"V": 65, "Vx": 30, "Vy": 40})
    ns = nodes(dot)
    delays = [a["label"] for n, a in ns.items() if n.startswith("delay:")]
    assert sorted(delays) == sorted(lab for _, _, lab in delayed_refs(spec.graph))
    assert {f"param:{p.name}" for p in spec.graph.params} <= set(ns)
    render.write(dot, tmp_path / f"{name}.svg")
    assert b"<svg" in (tmp_path / f"{name}.svg").read_bytes()


def test_spec_sizes_from_the_checker():
    ns = nodes(render.folded_dot(read("elman"), params=True, dims={"V": 65}))
    assert ns["var:h"]["label"] == "h[t] : 16"
    assert ns["var:o"]["label"] == "o[t] : 65"                  # inferred from the loss
    assert ns["param:W"]["label"] == "W [16, 65]"
    assert nodes(render.folded_dot(read("elman")))["var:o"]["label"] == "o[t] : V"


@pytest.mark.parametrize("name,lengths,columns_", [
    ("elman", {"t": 4}, 4), ("bidirectional", {"t": 3}, 3),
    ("seq2seq", {"t": 3, "u": 2}, 5), ("stacked", {"t": 2}, 2)])
def test_spec_unfolded(name, lengths, columns_):
    spec = read(name)
    dot = render.unfolded_dot(spec, lengths)
    assert len(step_columns(dot)) == columns_
    dag = unfold(spec.graph, lengths)
    n_loss = sum(1 for n in dag if n[0] == spec.graph.losses[0].output.var)
    assert len(nodes(dot)) == dag.number_of_nodes() + n_loss + extra_nodes(dag)


def test_cli_on_a_spec_file(tmp_path, capsys):
    from seqgraph import cli
    path = tmp_path / "seq2seq.sg"
    path.write_text(SPECS["seq2seq"])
    for out, extra in [("s.png", ["--params", "--dim", "Vx=30,Vy=40"]),
                       ("u.svg", ["--unfold", "t=3,u=2"]), ("u.dot", ["--unfold", "2"])]:
        assert cli.main(["render", str(path), "-o", str(tmp_path / out), *extra]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    dot = (tmp_path / "u.dot").read_text()
    assert len(step_columns(dot)) == 2 + 2


def test_cli_trees_have_no_length(tmp_path, capsys):
    from seqgraph import cli
    path = tmp_path / "rec.sg"
    path.write_text(SPECS["recursive"])
    assert cli.main(["render", str(path), "-o", str(tmp_path / "r.dot")]) == 0
    assert cli.main(["render", str(path), "-o", str(tmp_path / "r.dot"), "--unfold", "3"]) == 2
    assert "trees" in capsys.readouterr().err


GALLERY = sorted((Path(__file__).parent.parent / "specs").glob("*.sg"))


@pytest.mark.parametrize("path", GALLERY, ids=[p.stem for p in GALLERY])
def test_gallery_renders(path, tmp_path):
    import seqgraph
    spec = seqgraph.read_spec(str(path))
    dot = render.folded_dot(spec, params=True)
    squares = {(u, label) for u, _, label in delayed_refs(spec.graph)}
    assert sum(1 for n in nodes(dot) if n.startswith("delay:")) == len(squares)
    render.write(dot, tmp_path / "f.png")
    if all(kind == "seq" for _, kind in spec.graph.indexes) and spec.graph.indexes:
        lengths = {name: 3 for name, _ in spec.graph.indexes}
        render.write(render.unfolded_dot(spec, lengths), tmp_path / "u.png")


def test_an_unfolding_too_large_for_an_image_is_refused_with_the_steps_that_fit(
        tmp_path, capsys):
    """attention's e[u, t] grows as the square of the steps: 200 steps are 83,000 nodes,
    minutes of layout for an unreadable picture. Refused at once (counted, not unfolded)
    with a number of steps that fits; a .dot file is written whatever its size."""
    from seqgraph.cli import main

    from conftest import fails
    err = fails(capsys, "render", ROOT / "specs" / "attention.sg", "--unfold", "200",
                "-o", tmp_path / "a.png")
    assert "--unfold 200 unfolds 'attention' into 83000 nodes, too many to lay out as a " \
        "readable image (at most 400): draw fewer steps (--unfold 10), or write FILE.dot" \
        in err
    assert not (tmp_path / "a.png").exists()
    assert main(["render", str(ROOT / "specs" / "elman.sg"), "--unfold", "120", "-o",
                 str(tmp_path / "e.dot")]) == 0
    err = fails(capsys, "render", ROOT / "specs" / "elman.sg", "--unfold", "120", "-o",
                tmp_path / "e.svg")
    assert "into 480 nodes" in err and "(--unfold 100)" in err      # 400 nodes: the most
    err = fails(capsys, "render", ROOT / "specs" / "attention.sg", "--unfold", "20", "-o",
                tmp_path / "a.png")
    assert "(--unfold 10)" in err          # 10 fits (it said 8: shrunk by quarters)
    err = fails(capsys, "render", ROOT / "specs" / "attention.sg", "--unfold", "11", "-o",
                tmp_path / "a.png")
    assert "into 4" in err and "(--unfold 10)" in err          # and 11 does not


def test_a_long_unfolding_to_dot_takes_time_linear_in_its_nodes(monkeypatch):
    """A .dot file takes any number of steps, so its writer must stay linear: grouping
    nodes into columns once looked every node's column up for every column (T steps:
    T x nodes lookups; --unfold 4000 of lstm.sg took 75 s, 20,000 steps hours). Counted
    here: the column lookups of twice the steps are twice as many (quadratic: four times),
    and a small multiple of the nodes (and edges: the column order reads each edge's)."""
    class Counting(dict):
        lookups = 0

        def __getitem__(self, key):
            Counting.lookups += 1
            return super().__getitem__(key)

    layout = render.layout_columns
    monkeypatch.setattr(render, "layout_columns", lambda g, d: Counting(layout(g, d)))
    spec = read("elman")
    counts = []
    for T in (300, 600):
        Counting.lookups = 0
        dag = unfold(spec.graph, {"t": T})
        render.unfolded_dot(spec, {"t": T}, dag=dag)
        counts.append(Counting.lookups)
        assert Counting.lookups < 20 * dag.number_of_nodes()
    assert counts[1] < 2.2 * counts[0]
