"""The language core end to end: LANGUAGE.md's examples, text forms, unfolding
invariants, the API's conventions, truncated BPTT's carry."""
import re
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqgraph
from seqgraph.cli import main
from seqgraph.graph.check import check
from seqgraph.graph.printer import folded_text
from seqgraph.graph.unfold import text as unfolded_text
from seqgraph.graph.unfold import unfold

ROOT = Path(__file__).resolve().parent.parent
# the contract lives beside the project (../shared); a copy in tests/data keeps its
# examples checked where it is absent (a clean clone in CI), and a test below says when
# the copy falls behind it
SHARED_LANGUAGE = ROOT.parent / "shared" / "LANGUAGE.md"
LANGUAGE_COPY = Path(__file__).parent / "data" / "LANGUAGE.md"
LANGUAGE = SHARED_LANGUAGE if SHARED_LANGUAGE.exists() else LANGUAGE_COPY
GOLDEN = Path(__file__).parent / "golden"

PREAMBLE = "input x[t] : onehot(V)\n"   # section 5's fragment uses x without declaring it


def language_examples():
    return re.findall(r"```\n(.*?)```", LANGUAGE.read_text(), re.DOTALL)


@pytest.mark.skipif(not SHARED_LANGUAGE.exists(), reason="../shared/LANGUAGE.md not present")
def test_the_copy_of_the_contract_is_current():
    assert LANGUAGE_COPY.read_text() == SHARED_LANGUAGE.read_text(), \
        "LANGUAGE.md changed: copy it to tests/data/LANGUAGE.md (and check its examples)"


@pytest.mark.parametrize("i", range(len(language_examples())))
def test_language_examples_check(i, tmp_path, capsys):
    """Every example checks as `seqgraph check` does: the whole models verbatim, the
    two fragments with what is around them: section 5's cell uses after the inputs they
    read, section 7's train block as the train block of section 1's model."""
    text = language_examples()[i]
    if "model charlm" not in text and "cell rnn" in text and "input x" not in text:
        text = PREAMBLE + text
    if text.startswith("train {"):
        first = language_examples()[0]
        text = first[:first.index("train {")] + text
    (tmp_path / "example.sg").write_text(text)
    assert main(["check", str(tmp_path / "example.sg")]) == 0, capsys.readouterr().err
    assert seqgraph.read_spec(str(tmp_path / "example.sg")).graph.vars


def test_golden_folded():
    spec = seqgraph.read_spec(str(ROOT / "specs/elman.sg"))
    assert folded_text(spec.checked) == (GOLDEN / "elman.folded.txt").read_text()


def test_golden_unfolded():
    spec = seqgraph.read_spec(str(ROOT / "specs/elman.sg"))
    assert unfolded_text(spec.graph, {"t": 3}) == \
        (GOLDEN / "elman.unfolded3.txt").read_text()


def test_cli_check_dumps_match_golden(capsys):
    assert main(["check", str(ROOT / "specs/elman.sg"), "--dump", "folded"]) == 0
    assert capsys.readouterr().out == (GOLDEN / "elman.folded.txt").read_text()


def test_cli_check_summary(capsys):
    assert main(["check", str(ROOT / "specs/charlm.sg"), "--dim", "V=65"]) == 0
    out = capsys.readouterr().out
    assert "h: over t, forward in time, delays -1" in out
    assert "[128, 65]" in out and "total 33217" in out   # 2*128*65 + 128*128 + 128 + 65
    # what a loss reads is an output, not hidden (walk 14)
    assert "  h[t]             hidden           size 128\n" in out
    assert "  o[t]             output           size 65\n" in out


def test_cli_check_counts_an_unused_parameter_as_none(tmp_path, capsys):
    spec = tmp_path / "unused.sg"        # Z is declared and never used: no shape, no values
    spec.write_text("input x[t] : vec(3)\ntarget y[t] : vec(2)\nparam W, Z\n"
                    "h[t] = W @ x[t]\nloss mse(h[t], y[t])\n")
    assert main(["check", str(spec)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Z +unused +0\n", out) and "total 6\n" in out


def test_cli_check_total_keeps_the_constant_of_a_form_in_an_unbound_size(tmp_path, capsys):
    spec = tmp_path / "concat.sg"        # W : [4, V+4] counts 4*V + 16: the 16 was lost
    spec.write_text("input x[t] : onehot(V)\ntarget y[t] : class(V)\nparam W, A\n"
                    "h[t] : 4 = tanh(W @ [x[t]; h[t-1]])\no[t] = A @ h[t]\n"
                    "loss xent(o[t], y[t])\n")
    assert main(["check", str(spec)]) == 0
    assert "total 16 + terms in unbound sizes" in capsys.readouterr().out


def test_cli_check_bad_spec_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.sg"
    bad.write_text("param W\nh[t] = tanh(W @ h[t])\n")
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.sg:2:" in err and "Traceback" not in err


# ------------------------------------------------------------------ unfolding
SPEC3 = """
input x[t] : onehot(V)
target y[t] : class(V)
param W, U, R, b, Wo, bo
h[t] : 5 = tanh(W @ x[t] + U @ h[t-1] + R @ h[t-3] + b)
g[t] : 5 = tanh(W @ x[t] + U @ g[t+1] + b)
o[t] = Wo @ [h[t]; g[t]] + bo
loss xent(o[t], y[t])
"""


@pytest.mark.parametrize("T", [1, 2, 5])
def test_unfolding_gives_T_copies_and_a_dag(T):
    spec = seqgraph.read_spec("s.sg", SPEC3)
    g = unfold(spec.graph, {"t": T})
    assert nx.is_directed_acyclic_graph(g)
    for v in spec.graph.vars:
        assert sum(1 for n in g if n[0] == v.name) == T
    for (u, su), (v, sv), shift in g.edges(data="shift"):
        # no shifted edge survives: each joins two concrete steps, su = sv + k
        assert isinstance(su, int) and isinstance(sv, int)
        assert su - sv == (shift.k if shift.kind == "rel" else su - sv)


def test_unfolded_text_shows_initial_states():
    spec = seqgraph.read_spec("s.sg", SPEC3)
    text = unfolded_text(spec.graph, {"t": 2})
    assert "h[1] <- x[1], h[0], h[-2]" in text
    assert "g[2] <- x[2], g[T+1]" in text


# ------------------------------------------------------------------ the API
def _data(B=3, T=6, V=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


def test_loss_is_summed_over_steps_and_averaged_over_batch():
    m = seqgraph.load(str(ROOT / "specs/elman.sg"), dims={"V": 5}, dtype="float64")
    X, Y = _data()
    whole = m.run({"x": X}, {"y": Y}).loss
    each = [m.run({"x": X[i:i + 1]}, {"y": Y[i:i + 1]}).loss for i in range(3)]
    assert whole == pytest.approx(np.mean(each), rel=1e-12)


def test_padding_ids_change_nothing():
    m = seqgraph.load(str(ROOT / "specs/elman.sg"), dims={"V": 5}, dtype="float64")
    X, Y = _data(B=1)
    Y2 = Y.copy()
    Y2[0, -1] = -1
    full, cut = m.run({"x": X}, {"y": Y2}), m.run({"x": X[:, :-1]}, {"y": Y[:, :-1]})
    assert full.loss == pytest.approx(cut.loss, rel=1e-12)
    assert full.terms[0][1] == cut.terms[0][1] == 5


def test_carry_continues_a_sequence_exactly():
    m = seqgraph.load(str(ROOT / "specs/elman.sg"), dims={"V": 5}, dtype="float64")
    X, Y = _data(T=6)
    whole = m.run({"x": X}, {"y": Y})
    a = m.run({"x": X[:, :3]}, {"y": Y[:, :3]})
    b = m.run({"x": X[:, 3:]}, {"y": Y[:, 3:]}, carry=a.carry)
    assert a.loss + b.loss == pytest.approx(whole.loss, rel=1e-12)
    np.testing.assert_allclose(b.values["h"], whole.values["h"][:, 3:], rtol=1e-12)


def test_carry_with_a_delay_of_three():
    spec = seqgraph.read_spec("s.sg", SPEC3.replace("U @ g[t+1]", "U @ x[t]")
                              .replace("g[t] : 5 = tanh(W @ x[t] + U @ x[t] + b)",
                                       "g[t] : 5 = tanh(W @ x[t] + b)"))
    m = seqgraph.Model(spec, dims={"V": 4}, dtype="float64")
    X, Y = _data(T=7, V=4)
    whole = m.run({"x": X}, {"y": Y})
    a = m.run({"x": X[:, :4]}, {"y": Y[:, :4]})
    b = m.run({"x": X[:, 4:]}, {"y": Y[:, 4:]}, carry=a.carry)
    np.testing.assert_allclose(b.values["h"], whole.values["h"][:, 4:], rtol=1e-12)


def test_params_named_as_in_the_spec_and_shaped_like_torch_linear():
    m = seqgraph.load(str(ROOT / "specs/elman.sg"), dims={"V": 7})
    assert list(m.params) == ["W", "U", "b", "Wo", "bo"]
    assert m.params["W"].shape == (16, 7) and m.params["Wo"].shape == (7, 16)
    assert m.params["W"].dtype == np.float32


def test_unbound_dim_is_a_clear_error():
    with pytest.raises(seqgraph.UsageError, match="V is not bound"):
        seqgraph.load(str(ROOT / "specs/elman.sg"))
    # a slip for a declared dim: where it is written, and the dim (walk 12: neither)
    text = "dim H = 8\n" + PREAMBLE + "target y[t] : class(3)\nparam W, Wo\n" \
        "h[t] : HH = tanh(W @ x[t])\no[t] = Wo @ h[t]\nloss xent(o[t], y[t])\n"
    with pytest.raises(seqgraph.UsageError) as e:
        seqgraph.Model(seqgraph.read_spec("hh.sg", text), dims={"V": 4})
    assert str(e.value).endswith("binds it (h : HH, line 5; did you mean 'H'?)"), e.value


@pytest.mark.parametrize("executor", ["interp", "compiled"])
def test_the_api_refuses_ids_past_the_size_and_unknown_names(executor):
    """An id past V would gather another matrix's column, or none (a raw IndexError, or
    worse in a compiled kernel): refused with the range, as is a misspelt input."""
    m = seqgraph.load(str(ROOT / "specs/elman.sg"), dims={"V": 7}, executor=executor)
    X = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(seqgraph.UsageError, match=r"'x' holds the id 7; its ids are 0 to "
                                                  r"6 \(its size\), -1 for padding"):
        m.forward({"x": X + 7})
    with pytest.raises(seqgraph.UsageError, match=r"'y' holds the id -2"):
        m.loss_and_grads({"x": X}, {"y": X - 2})
    with pytest.raises(seqgraph.UsageError, match=r"'xx' is not a variable of model "
                                                  r"'elman' \(did you mean 'x'\?\)"):
        m.forward({"xx": X})
    assert m.forward({"x": X})["o"].shape == (2, 3, 7)
    with pytest.raises(seqgraph.UsageError, match=r"'x' holds ids, integers; it was given "
                                                  r"0.5 \(float64 values\)"):
        m.forward({"x": X + 0.5})
    assert m.forward({"x": X.astype(float)})["o"].shape == (2, 3, 7)   # whole numbers
    assert m.forward({"x": X.astype(object)})["o"].shape == (2, 3, 7)  # ints as objects
    with pytest.raises(seqgraph.UsageError, match=r"'x' holds ids, integers; it was given "
                                                  r"nan"):
        m.forward({"x": np.full((2, 3), np.nan)})
    with pytest.raises(seqgraph.UsageError, match=r"'x' must be one rectangular array of "
                                                  r"ids \(pad shorter rows with -1\)"):
        m.forward({"x": [np.array([1, 2, 3]), np.array([1, 2])]})
    with pytest.raises(seqgraph.UsageError, match=r"'x' holds ids, integers; it was given "
                                                  r"'1'"):
        m.forward({"x": np.full((2, 3), "1")})
    with pytest.raises(seqgraph.UsageError, match=r"index 't' has 0 steps in this batch"):
        m.forward({"x": np.zeros((2, 0), dtype=np.int64)})
    with pytest.raises(seqgraph.UsageError, match=r"the loss reads the target 'y': give it "
                                                  r"in targets"):
        m.loss_and_grads({"x": X}, {})          # a loss of 0 and zero gradients, else
    assert m.run({"x": X}, {}).loss == 0.0      # a forward pass reads no target


def test_same_seed_same_parameters():
    a = seqgraph.load(str(ROOT / "specs/elman.sg"), dims={"V": 7}, seed=3)
    b = seqgraph.load(str(ROOT / "specs/elman.sg"), dims={"V": 7}, seed=3)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_cells_name_parameters_after_the_variable():
    spec = seqgraph.read_spec("s.sg", PREAMBLE + "e = rnn(x, 4)\nd = stack(2) gru(e, 3)\n"
                              "h = bi lstm(d, 2)\n")
    names = [p.name for p in spec.graph.params]
    assert "e.W" in names and "d.1.Wr" in names and "d.2.Wr" in names
    assert "h.fwd.Wi" in names and "h.bwd.b_f" in names
    assert check(spec.graph, {"V": 3}).param_shapes["d.2.Wr"][1].const == 3
    bwd = [r for r in spec.checked.recurrences if "h.bwd" in r.vars]
    assert bwd and bwd[0].direction == 1


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_stack_runs_over_its_arguments_index(cell):
    """LANGUAGE.md section 5: `t` in a cell binds to its argument's index. Layers 2 and
    up of a stack over u ran over t (review 25: a decoder's stack was refused)."""
    text = ("input x[u] : vec(3)\ntarget y[u] : class(4)\nparam Wo\n"
            f"d = stack(3) {cell}(x, 5)\no[u] = Wo @ d[u]\nloss xent(o[u], y[u])\n")
    spec = seqgraph.read_spec("s.sg", text)
    layers = [v for v in spec.graph.vars if v.name.startswith("d.")]
    assert layers and {v.index for v in layers} == {"u"}
    over_t = seqgraph.read_spec("t.sg", text.replace("[u]", "[t]"))
    m, mt = seqgraph.Model(spec, dtype="float64"), seqgraph.Model(over_t, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    y = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    assert m.run({"x": x}, {"y": y}).loss == mt.run({"x": x}, {"y": y}).loss


def test_lstm_forget_bias_starts_at_one():
    spec = seqgraph.read_spec("s.sg", PREAMBLE + "h = lstm(x, 4)\n")
    m = seqgraph.Model(spec, dims={"V": 3})
    np.testing.assert_array_equal(m.params["h.b_f"], np.ones(4))
    np.testing.assert_array_equal(m.params["h.b_i"], np.zeros(4))


# ------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 4), H=st.integers(1, 4), k=st.integers(1, 3),
       fn=st.sampled_from(["tanh", "sigmoid", "relu", "softplus"]),
       direction=st.sampled_from(["-", "+"]))
def test_random_recurrences_unfold_and_differentiate(T, H, k, fn, direction):
    text = (f"input x[t] : onehot(V)\ntarget y[t] : class(V)\nparam W, U, b, Wo, bo\n"
            f"h[t] : {H} = {fn}(W @ x[t] + U @ h[t{direction}{k}] + b)\n"
            "o[t] = Wo @ h[t] + bo\nloss xent(o[t], y[t])\n")
    m = seqgraph.Model(seqgraph.read_spec("p.sg", text), dims={"V": 3}, dtype="float64")
    g = unfold(m.graph, {"t": T})
    assert sum(1 for n in g if n[0] == "h") == T
    X, Y = _data(B=2, T=T, V=3)
    res = m.run({"x": X}, {"y": Y}, grads=True)
    d = {p: np.random.default_rng(1).normal(size=v.shape) for p, v in m.params.items()}
    eps = 1e-6
    for p in m.params:
        m.params[p] += eps * d[p]
    up = m.run({"x": X}, {"y": Y}).loss
    for p in m.params:
        m.params[p] -= 2 * eps * d[p]
    down = m.run({"x": X}, {"y": Y}).loss
    fd = (up - down) / (2 * eps)
    an = sum(float((res.grads[p] * d[p]).sum()) for p in m.params)
    assert abs(fd - an) <= 1e-6 * max(1.0, abs(fd))


def test_cli_check_explains_the_compiled_plan(capsys):
    assert main(["check", str(ROOT / "specs/lstm.sg"), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "one compiled loop forward in time" in out and "1 GEMM ([Ui; Uf; Uo; Ug])" in out
    assert main(["check", str(ROOT / "specs/recursive.sg"), "--explain"]) == 0
    assert "h: level by level (one gather, GEMM and scatter per level)" in \
        capsys.readouterr().out


@pytest.mark.parametrize("executor", ["interp", "compiled"])
def test_windows_shorter_than_the_delay_carry_the_state_whole(executor):
    spec = seqgraph.read_spec("s.sg", SPEC3.replace("U @ g[t+1]", "U @ x[t]")
                              .replace("g[t] : 5 = tanh(W @ x[t] + U @ x[t] + b)",
                                       "g[t] : 5 = tanh(W @ x[t] + b)"))
    m = seqgraph.Model(spec, dims={"V": 4}, dtype="float64", executor=executor)
    X, Y = _data(T=7, V=4)
    whole = m.run({"x": X}, {"y": Y})
    carry, total = None, 0.0
    for t in range(7):                       # seven windows of one step, delay 3
        res = m.run({"x": X[:, t:t + 1]}, {"y": Y[:, t:t + 1]}, carry=carry)
        assert len(res.carry["h"]) == 3
        np.testing.assert_allclose(res.values["h"][:, 0], whole.values["h"][:, t],
                                   rtol=1e-12)
        carry, total = res.carry, total + res.loss
    assert total == pytest.approx(whole.loss, rel=1e-12)


def test_given_dims_override_declared_ones():
    m = seqgraph.load(str(ROOT / "specs/elman.sg"), dims={"V": 5, "H": 3})
    assert m.sizes["h"] == 3 and m.params["U"].shape == (3, 3)


def test_train_keys_of_the_language_and_of_the_training_config_agree():
    from seqgraph.lang.elaborate import TRAIN_KEYS
    from seqgraph.train.config import DEFAULTS
    assert set(TRAIN_KEYS) == set(DEFAULTS)


def test_the_docs_list_every_train_key():
    """docs/language.md's list of keys and docs/training.md's table name each key."""
    import re

    from seqgraph.lang.elaborate import TRAIN_KEYS
    text = (ROOT / "docs/language.md").read_text()
    listed = re.search(r"Keys: `([^`]*)`", text).group(1).split()
    assert listed == list(TRAIN_KEYS)
    table = (ROOT / "docs/training.md").read_text()
    assert [k for k in TRAIN_KEYS if f"| `{k}` |" not in table] == []


# a loss read at one place (o[end], o[1]) is one term an example, not one a step
END_LOSS = """
dim H = 4
input x[t] : onehot(V)
target y[t] : class(V)
target c : class(V)
param W, U, b, Wo, bo
h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b)
o[t] = Wo @ h[t] + bo
"""


def _xent(o, y):
    return np.log(np.exp(o).sum(-1)) - np.take_along_axis(o, y[..., None], -1)[..., 0]


@pytest.mark.parametrize("executor", ["interp", "compiled"])
@pytest.mark.parametrize("lengths", [None, [6, 3, 4]], ids=["full", "padded"])
def test_a_loss_read_at_one_place_is_one_term_an_example(executor, lengths):
    text = END_LOSS + "loss xent(o[end], y[end])\nloss 0.5 * xent(o[1], c)\n"
    m = seqgraph.Model(seqgraph.read_spec("e.sg", text), dims={"V": 5}, dtype="float64",
                       executor=executor)
    X, Y = _data()
    C = np.array([1, 4, 0])
    kw = {} if lengths is None else {"lengths": {"t": np.array(lengths)}}
    res = m.run({"x": X}, {"y": Y, "c": C}, grads=True, **kw)
    o = res.values["o"]
    last = np.array(lengths or [6] * 3) - 1
    end = _xent(o[np.arange(3), last], Y[np.arange(3), last])
    want = end.mean() + 0.5 * _xent(o[:, 0], C).mean()
    assert res.loss == pytest.approx(want, rel=1e-12)
    assert res.terms[0] == (pytest.approx(end.sum(), rel=1e-12), 3)
    if executor == "compiled":
        ref = seqgraph.Model(m.spec, dims={"V": 5}, dtype="float64")
        ref.params = m.params
        want = ref.run({"x": X}, {"y": Y, "c": C}, grads=True, **kw).grads
        for p, g in res.grads.items():
            assert np.abs(g - want[p]).max() < 1e-10, p


def test_a_loss_at_one_place_against_a_target_at_every_step_is_refused():
    with pytest.raises(seqgraph.SpecError) as e:
        seqgraph.read_spec("e.sg", END_LOSS + "loss xent(o[end], y[t])\n")
    assert "at one place an example" in str(e.value) and "y[end]" in str(e.value)


@pytest.mark.parametrize("lines, message, hint", [
    ("c_o = Wo @ h[end] + bo\nloss xent(c_o, y[t])",
     "xent reads 'c_o' per example and 'y' at every step of t",
     "a per-example target (y without an index)"),
    ("loss xent(o[1], y[t])", "xent reads 'o' at one place an example and 'y' at every "
     "step of t", "y[1]"),
    # a per-step output against one target an example (the tree form is allowed)
    ("loss xent(o[t], c)", "xent reads 'o' at every step of t and 'c' once an example",
     "o[end]"),
    ("loss xent(o[t], y[end])", "xent reads 'o' at every step of t and 'y' once an "
     "example", "o[end]"),
    # a shifted read: the executors and eval would take other steps
    ("loss xent(o[t], y[t-1])", "xent reads 'y' at t-1", "p[t] = o[t+1], then xent(p[t]"),
    ("loss xent(o[t+1], y[t])", "xent reads 'o' at t+1", "p[t] = o[t+1], then xent(p[t]"),
    # a language model's y[t+1] (walk 14): chars and words data shift the target already
    ("loss xent(o[t], y[t+1])", "xent reads 'y' at t+1",
     "write xent(o[t], y[t]): with chars or words data the target y[t] is already the "
     "next symbol, x[t+1]; for other data, shift the output instead: p[t] = o[t-1]")])
def test_a_per_example_or_one_place_output_against_every_step_is_refused(lines, message,
                                                                          hint):
    with pytest.raises(seqgraph.SpecError) as e:
        seqgraph.read_spec("e.sg", END_LOSS + lines + "\n")
    assert message in str(e.value) and hint in str(e.value), str(e.value)


def test_the_unfolded_views_show_a_one_place_loss_once_where_it_reads(tmp_path):
    """The dump and the drawing of the unfolding: `xent(o[end], y[end])` one term at the
    last step, `0.5 * xent(o[1], c)` at the first, its weight drawn."""
    from seqgraph.render import unfolded_dot
    spec = seqgraph.read_spec("e.sg", END_LOSS + "loss xent(o[end], y[end])\n"
                              "loss 0.5 * xent(o[1], c)\n")
    lines = [x for x in unfolded_text(spec.graph, {"t": 3}).splitlines()
             if x.startswith("loss")]
    assert lines == ["loss1 <- o[3], y[3]", "loss2 <- o[1], c  (x 0.5)"]
    dot = unfolded_dot(spec.graph, {"t": 3}, {"V": 5})
    assert re.findall(r'label="(L\d[^"]*)"', dot) == ["L1[3]", "L2[1] x 0.5"]


def test_a_spec_with_a_byte_order_mark_reads_as_without(tmp_path):
    text = (ROOT / "specs" / "elman.sg").read_text()
    (tmp_path / "bom.sg").write_bytes(b"\xef\xbb\xbf" + text.encode())
    a, b = seqgraph.read_spec(str(tmp_path / "bom.sg")), seqgraph.read_spec(
        str(ROOT / "specs" / "elman.sg"))
    assert folded_text(a.checked) == folded_text(b.checked)


# an init value made of parameters alone has no batch axis: its product U @ s[0] is one
# row, and dU is the outer product g s^T (not the inner product of two vectors); the
# products, concatenations and bilinear forms inside it are of one row too
CONST_INIT = """
model m
dim H = 4
input c : vec(4)
target y[u] : class(K)
param U, C, bd, Wo, bo, F
{params}
init s = {init}
s[u] : H = tanh(F @ y[u-1] + U @ s[u-1] + C @ c + bd)
o[u] = Wo @ s[u] + bo
loss xent(o[u], y[u])
"""


@pytest.mark.parametrize("executor", ["interp", "compiled"])
@pytest.mark.parametrize("init, params", [
    ("tanh(bk)", "param bk"),
    ("tanh(Wi @ tanh(bk))", "param bk : [3]\nparam Wi"),
    ("tanh(Wi @ [bk; b2])", "param bk : [3]\nparam b2 : [3]\nparam Wi"),
    ("tanh(bilinear(T, bk, b2))", "param bk : [3]\nparam b2 : [3]\nparam T : [4, 3, 3]")],
    ids=["vector", "product", "concatenation", "bilinear"])
def test_an_init_value_without_a_batch_axis_has_the_right_gradient(executor, init, params):
    from conftest import gradcheck, randomise_params
    text = CONST_INIT.format(init=init, params=params)
    m = seqgraph.Model(seqgraph.read_spec("m.sg", text=text), dims={"K": 5},
                       dtype="float64", start_ids={"y": 1}, executor=executor)
    rng = np.random.default_rng(1)
    randomise_params(m, rng)
    ins, tgs = {"c": rng.normal(size=(5, 4))}, {"y": rng.integers(0, 5, (5, 4))}
    grads = m.run(ins, tgs, grads=True).grads
    assert not gradcheck(m, lambda: m.run(ins, tgs).loss, grads, rng)


DROPPED_CONST = """
input x[t] : onehot(V)
target y[t] : class(K)
param W, U, I, Wo, bk, Wk
{lines}
o[t] = Wo @ h[t] + Wk @ k
loss xent(o[t], y[t])
"""


@pytest.mark.parametrize("lines", [
    "h[t] : 3 = tanh(W @ x[t] + U @ dropout(h[t-1], 0.5))\ninit h = I\nk : 3 = tanh(bk)",
    "h[t] : 3 = tanh(W @ x[t] + U @ dropout(h[t+1], 0.5))\ninit h = I\nk : 3 = tanh(bk)",
    "h[t] : 3 = tanh(W @ x[t] + U @ h[t-1] + I)\nk : 3 = dropout(tanh(bk), 0.5)"],
    ids=["init", "init-backward", "per-example"])
def test_a_dropout_of_a_value_of_parameters_alone_draws_per_example(lines):
    """Review 18: the interpreter drew one mask [n] for all examples where the compiled
    executor draws one per example ([B, n]), as the language says: they differed while
    training. The values of such variables are [B, n] from both (it was [n])."""
    from conftest import randomise_params
    spec = seqgraph.read_spec("d.sg", text=DROPPED_CONST.format(lines=lines))
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (3, 2)), rng.integers(0, 3, (3, 2))
    res, states = [], []
    for executor in ("interp", "compiled"):
        m = seqgraph.Model(spec, dims={"V": 4, "K": 3}, dtype="float64", seed=1,
                           executor=executor)
        randomise_params(m, np.random.default_rng(2))
        draws = np.random.default_rng(7)
        res.append(m.run({"x": x}, {"y": y}, train=True, grads=True, rng=draws))
        states.append(draws.random())
    a, b = res
    assert a.loss == pytest.approx(b.loss, rel=1e-12) and states[0] == states[1]
    for p in a.grads:
        np.testing.assert_allclose(a.grads[p], b.grads[p], rtol=1e-10, atol=1e-14)
    assert a.values["k"].shape == b.values["k"].shape == (3, 3)
    masks = a.values["k"] / np.tanh(m.params["bk"])
    if "dropout(tanh" in lines:                  # one mask an example: rows differ
        assert len({tuple(r) for r in masks}) > 1


def test_a_carried_state_of_parameters_alone_is_per_example():
    spec = seqgraph.read_spec("c.sg", text=DROPPED_CONST.format(
        lines="h[t] : 3 = tanh(W @ x[t] + U @ h[t-2])\ninit h = tanh(I)\nk : 3 = bk"))
    x, y = np.zeros((2, 1), int), np.zeros((2, 1), int)
    shapes = [[c.shape for c in seqgraph.Model(spec, dims={"V": 4, "K": 3}, executor=ex)
               .run({"x": x}, {"y": y}).carry["h"]] for ex in ("interp", "compiled")]
    assert shapes[0] == shapes[1] == [(2, 3), (2, 3)]


@pytest.mark.parametrize("executor", ["interp", "compiled"])
def test_an_input_or_a_target_read_back_missing_from_the_batch_is_named(executor):
    """Both executors used to raise a bare KeyError ('y', or "no value for ('y', 0)")."""
    m = seqgraph.load(str(ROOT / "specs" / "seq2seq.sg"), dims={"Vx": 5, "Vy": 6},
                      executor=executor)
    x = np.zeros((2, 3), int)
    with pytest.raises(seqgraph.UsageError) as e:
        m.run({"x": x}, lengths={"u": 4})
    assert str(e.value) == "the model reads its target 'y' back: give it in targets (-1 " \
        "where a value is not known, as generation gives; forward(..., targets=...))"
    with pytest.raises(seqgraph.UsageError) as e:
        m.run({}, {"y": np.zeros((2, 4), int)}, lengths={"t": 3})
    assert str(e.value) == "'x' is an input of model 'seq2seq': give it in inputs"
    assert m.run({"x": x}, {"y": np.full((2, 4), -1)}).loss == 0.0


def test_a_loss_function_is_one_of_three_named_ones():
    """Loss.fn is a LossFn: equal to its name ("xent"), and a misspelt one is refused
    where the Loss is made rather than compared with, never equal, in 14 places."""
    from seqgraph.graph.folded import Loss, LossFn, Ref
    loss = Loss("xent", Ref("o"), Ref("y"))
    assert loss.fn is LossFn.XENT and loss.fn == "xent" and f"{loss.fn}" == "xent"
    with pytest.raises(ValueError, match="xnet"):
        Loss("xnet", Ref("o"), Ref("y"))
    spec = seqgraph.read_spec("m.sg", "input x[t] : vec(3)\ntarget y[t] : vec(2)\n"
                                      "param W\no[t] = W @ x[t]\nloss mse(o[t], y[t])\n")
    assert spec.graph.losses[0].fn is LossFn.MSE
