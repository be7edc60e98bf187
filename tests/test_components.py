"""The one schedule of the folded graph (seqgraph/graph/components.py)."""
from seqgraph.graph.components import components
from seqgraph.lang.elaborate import elaborate
from seqgraph.lang.parse import parse


def _graph(text):
    return elaborate(parse(text, "t.sg"))


def _hidden(text):
    return [(c.hidden, c.cyclic) for c in components(_graph(text)) if c.hidden]


def test_a_cycle_runs_same_step_reads_first_and_is_after_what_it_reads():
    lstm = """model m
dim H = 4
input x[t] : onehot(5)
param W, U, V, Wy
z[t] : H = W @ x[t]
h[t] : H = tanh(c[t]) + U @ h[t-1]
c[t] : H = tanh(z[t] + V @ h[t-1])
y[t] = Wy @ h[t]
"""
    assert _hidden(lstm) == [(("z",), False), (("c", "h"), True), (("y",), False)]
    cyc = next(c for c in components(_graph(lstm)) if c.cyclic)
    assert cyc.members == ("h", "c")                    # file order
    assert {(e.src, e.dst, e.shift.label()) for e in cyc.delays} == \
        {("h", "h", "-1"), ("h", "c", "-1")}


def test_independent_components_come_in_file_order_after_the_inputs():
    text = """model m
dim H = 4
param W, U
b[t] : H = tanh(W @ x[t])
a[t] : H = tanh(U @ x[t])
c[t] : H = a[t] + b[t]
input x[t] : vec(3)
"""
    comps = components(_graph(text))
    assert [c.members for c in comps] == [("x",), ("b",), ("a",), ("c",)]
    assert not any(c.cyclic for c in comps)


def test_a_tree_recursion_is_one_cyclic_component_over_its_children():
    text = """model m
dim H = 4
tree n
input w[n] : onehot(5)
param E, W
h[n] : H = tanh(E @ w[n]) if leaf
h[n] : H = tanh(W @ [h[n.left]; h[n.right]]) otherwise
"""
    comp = components(_graph(text))[-1]
    assert comp.hidden == ("h",) and comp.cyclic
    assert {e.shift.kind for e in comp.delays} == {"left", "right"}


def test_the_compiler_runs_the_components_in_their_order():
    """compile/plan.schedule is the components' order: a cell's gates step in file order
    (i f o g of the lstm cell as written), not sorted by name."""
    from seqgraph.compile.plan import RecStage, StaticStage, schedule
    graph = _graph("""model m
dim H = 4
input x[t] : onehot(5)
param Wo
h = lstm(x, H)
o[t] = Wo @ h[t]
""")
    stages = schedule(graph)
    rec = next(s for s in stages if isinstance(s, RecStage))
    cyc = next(c for c in components(graph) if c.cyclic)
    assert rec.vars == cyc.hidden == ("h.i", "h.f", "h.o", "h.g", "h.c", "h")
    assert rec.direction == -1 and rec.index == "t"
    assert stages[-1] == StaticStage("o")


def test_a_shift_of_an_unknown_kind_fails_where_it_is_made():
    import pytest

    from seqgraph.graph.folded import Shift, ShiftKind
    assert Shift("end") == Shift(ShiftKind.END) and Shift("end").kind is ShiftKind.END
    assert hash(Shift("rel", -1)) == hash(Shift(ShiftKind.REL, -1))
    with pytest.raises(ValueError, match="ends"):
        Shift("ends")
