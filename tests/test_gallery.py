"""The gallery (LANGUAGE.md section 8): every spec in specs/ reads cleanly, builds, runs
forward on random data and passes a float64 central-difference gradient check; the
explicit and cell forms of the same figure agree; dropout is the identity in evaluation."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import seqgraph
from seqgraph.graph.folded import Apply, walk
from seqgraph.ops import Op

from conftest import (
    LENGTHS,
    SMALL_DIM,
    SPECS,
    B,
    gradcheck,
    random_batch,
    random_tree_batch,
    randomise_params,
)

SPEC_FILES = sorted(SPECS.glob("*.sg"))
GALLERY = ["dynamical", "elman", "jordan", "many_to_one", "one_to_many", "conditional",
           "bidirectional", "bidirectional_cell", "seq2seq", "deep_stacked",
           "deep_stacked_cell", "deep_transition", "deep_skip", "recursive", "rntn",
           "lstm", "gru", "charlm"]


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return seqgraph.read_spec(str(path))


def _is_tree(spec):
    return "tree" in spec.graph.index_kinds.values()


def _model(spec, seed=0):
    dims = {d: SMALL_DIM for d in spec.unbound_dims()}
    return seqgraph.Model(spec, dims=dims, dtype="float64", seed=seed)


def _load(name, seed=0):
    return _model(_read(SPECS / f"{name}.sg"), seed)


def test_gallery_files_exist():
    have = {p.stem for p in SPEC_FILES}
    missing = [n for n in GALLERY if n not in have]
    assert not missing, f"gallery specs missing from specs/: {missing}"


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_reads_cleanly(path):
    spec = _read(path)
    assert not spec.graph.warnings, spec.graph.warnings
    assert spec.source.lstrip().startswith("#"), "a gallery spec starts with a header comment"


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_forward_and_gradcheck(path):
    spec = _read(path)
    rng = np.random.default_rng(sum(path.stem.encode()))
    m = _model(spec)
    randomise_params(m, rng)
    kw, N = {}, None
    if _is_tree(spec):
        try:
            ins, tgs, forest = random_tree_batch(m, rng)
            kw, N = {"forest": forest}, forest.size
            m.run(ins, tgs, **kw)
        except (ImportError, NotImplementedError) as e:
            pytest.skip(f"tree execution is not available: {e}")
    else:
        ins, tgs = random_batch(m, rng)

    # forward (targets given: output feedback reads them, teacher forcing): every hidden
    # variable has its batch-major shape ([N, n] over a tree's nodes) and is finite
    vals = m.run(ins, tgs, **kw).values
    trees = {i for i, k in spec.graph.indexes if k == "tree"}
    for v in spec.graph.hidden():
        if v.index is None:
            want = (B, m.sizes[v.name])
        elif v.index in trees:
            want = (N, m.sizes[v.name])
        else:
            want = (B,) + tuple(LENGTHS[i] for i in v.indexes) + (m.sizes[v.name],)
        if v.name in vals:
            assert vals[v.name].shape == want, (v.name, vals[v.name].shape, want)
            assert np.isfinite(vals[v.name]).all(), v.name

    res = m.run(ins, tgs, grads=True, **kw)
    assert np.isfinite(res.loss) and res.loss > 0
    assert set(res.grads) == set(m.params)
    for p, g in res.grads.items():
        assert g.shape == m.params[p].shape and g.dtype == np.float64, p

    def loss():
        return m.run(ins, tgs, **kw).loss
    assert loss() == pytest.approx(res.loss, rel=1e-14)
    bad = gradcheck(m, loss, res.grads, rng, entries=4)
    assert not bad, "gradient check failed:\n" + "\n".join(map(str, bad))


def test_seq2seq_lengths_differ(rng):
    m = _load("seq2seq")
    ins, tgs = random_batch(m, rng, lengths={"t": 5, "u": 2})
    vals = m.run(ins, tgs).values
    assert vals["h"].shape[1] == 5 and vals["s"].shape[1] == 2 and vals["o"].shape[1] == 2
    assert vals["c"].shape == (B, 128)


def test_gallery_embeddings_are_gathers():
    """`W @ x[t]` with x one-hot is an embedding lookup (GATHER), never a V-wide MATMUL."""
    spec = _read(SPECS / "elman.sg")
    ops_used = [e.op for v in spec.graph.hidden() for c in v.cases for e in walk(c.expr)
                if isinstance(e, Apply)]
    assert Op.GATHER in ops_used
    assert Op.ONEHOT not in ops_used


# ------------------------------------------------------ explicit forms vs cell forms
def _copy_and_compare(explicit, cell, name_map, outputs, rng):
    """Copy explicit's weights into the cell form (cell name -> explicit name) and compare
    the outputs, the loss and every gradient."""
    a, b = _load(explicit), _load(cell, seed=1)
    randomise_params(a, rng)
    assert set(b.params) == set(name_map), sorted(b.params)
    assert set(a.params) == set(name_map.values())
    for cn, en in name_map.items():
        assert b.params[cn].shape == a.params[en].shape, (cn, en)
        b.params[cn] = a.params[en].copy()
    ins, tgs = random_batch(a, rng)
    ra, rb = a.run(ins, tgs, grads=True), b.run(ins, tgs, grads=True)
    for oa, ob in outputs:
        np.testing.assert_allclose(rb.values[ob], ra.values[oa], rtol=1e-13, atol=1e-14)
    assert rb.loss == pytest.approx(ra.loss, rel=1e-13)
    for cn, en in name_map.items():
        np.testing.assert_allclose(rb.grads[cn], ra.grads[en], rtol=1e-12, atol=1e-14,
                                   err_msg=f"{cn} vs {en}")


def test_bidirectional_explicit_equals_cell(rng):
    name_map = {"h.fwd.W": "Wh", "h.fwd.U": "Uh", "h.fwd.b": "bh",
                "h.bwd.W": "Wg", "h.bwd.U": "Ug", "h.bwd.b": "bg", "Wo": "Wo", "bo": "bo"}
    _copy_and_compare("bidirectional", "bidirectional_cell", name_map,
                      [("o", "o"), ("h", "h.fwd"), ("g", "h.bwd")], rng)


def test_deep_stacked_explicit_equals_cell(rng):
    name_map = {"d.1.W": "W1", "d.1.U": "U1", "d.1.b": "b1",
                "d.2.W": "W2", "d.2.U": "U2", "d.2.b": "b2", "Wo": "Wo", "bo": "bo"}
    _copy_and_compare("deep_stacked", "deep_stacked_cell", name_map,
                      [("o", "o"), ("h1", "d.1"), ("h2", "d")], rng)


def _cell_spec(tmp_path, cell, logits):
    text = (f"# the prelude's {cell} cell\nmodel {cell}_cell\ndim H = 16\n"
            "input x[t] : onehot(V)\ntarget y[t] : class(V)\nparam Wy, by\n"
            f"h = {cell}(x, H)\n{logits}[t] = Wy @ h[t] + by\nloss xent({logits}[t], y[t])\n")
    p = tmp_path / f"{cell}_cell.sg"
    p.write_text(text)
    return p


@pytest.mark.parametrize("cell,logits", [("lstm", "z"), ("gru", "q")])
def test_gated_equations_equal_prelude_cell(cell, logits, tmp_path, rng):
    """lstm.sg / gru.sg written out are the prelude's cells, parameter for parameter."""
    a = _load(cell)
    b = _model(_read(_cell_spec(tmp_path, cell, logits)), seed=1)
    randomise_params(a, rng)
    name_map = {("" if n in ("Wy", "by") else "h.") + n: n for n in a.params}
    assert set(b.params) == set(name_map)
    for cn, en in name_map.items():
        b.params[cn] = a.params[en].copy()
    ins, tgs = random_batch(a, rng)
    ra, rb = a.run(ins, tgs, grads=True), b.run(ins, tgs, grads=True)
    np.testing.assert_allclose(rb.values["h"], ra.values["h"], rtol=1e-13, atol=1e-14)
    assert rb.loss == pytest.approx(ra.loss, rel=1e-13)
    for cn, en in name_map.items():
        np.testing.assert_allclose(rb.grads[cn], ra.grads[en], rtol=1e-12, atol=1e-14)


def test_lstm_forget_bias_starts_at_one():
    m = _load("lstm")
    assert (m.params["b_f"] == 1).all() and (m.params["b_i"] == 0).all()


# ------------------------------------------------------------------------ dropout
DROPOUT_SPEC = """# dropout between the recurrent state and the output
model drop
dim H = 16
input  x[t] : onehot(V)
target y[t] : class(V)
param W, U, b, Wo, bo
h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b)
o[t] = Wo @ {h} + bo
loss xent(o[t], y[t])
"""


def test_dropout_is_identity_in_eval(tmp_path, rng):
    with_drop = _model(seqgraph.read_spec(str(tmp_path / "drop.sg"),
                                          DROPOUT_SPEC.format(h="dropout(h[t], 0.5)")))
    plain = _model(seqgraph.read_spec(str(tmp_path / "plain.sg"),
                                      DROPOUT_SPEC.format(h="h[t]")))
    randomise_params(plain, rng)
    for p in plain.params:
        with_drop.params[p] = plain.params[p].copy()
    ins, tgs = random_batch(plain, rng)
    r0 = plain.run(ins, tgs, grads=True)
    r1 = with_drop.run(ins, tgs, grads=True, train=False)
    np.testing.assert_array_equal(r1.values["o"], r0.values["o"])
    assert r1.loss == r0.loss
    for p in plain.params:
        np.testing.assert_array_equal(r1.grads[p], r0.grads[p])

    # in training it is not the identity, and a fixed mask is still differentiable
    rt = with_drop.run(ins, tgs, train=True, grads=True, rng=np.random.default_rng(7))
    assert not np.allclose(rt.values["o"], r0.values["o"])

    def loss():
        return with_drop.run(ins, tgs, train=True, rng=np.random.default_rng(7)).loss
    assert loss() == rt.loss
    bad = gradcheck(with_drop, loss, rt.grads, rng)
    assert not bad, bad


DEEP_TRANSITION_RELU = """\
dim H = 8
input x[t] : onehot(V)
target y[t] : class(V)
param W, U, b, Wz, bz, Vo, c
z[t] : H = relu(Wz @ h[t-1] + bz)
h[t] : H = tanh(b + W @ z[t] + U @ x[t])
o[t] = c + Vo @ h[t]
loss xent(o[t], y[t])
"""


def test_gradcheck_moves_constant_parameters_off_relu_kinks(tmp_path, capsys):
    """Fig. 10.13b with a ReLU transition (walk 14): at its initialisation the state and
    bz are zero, so every ReLU input of the first step is exactly 0, its kink; the
    central difference there is half a slope and bz failed with a right gradient (the
    check at init, through the API, shows it). `seqgraph gradcheck` moves parameters
    that hold one value off it, says so, and passes; its JSON holds plain booleans
    (a numpy bool of a failed check was a traceback)."""
    import json

    from seqgraph import gradcheck as gc
    from seqgraph.cli import main
    spec = tmp_path / "deep_b.sg"
    spec.write_text(DEEP_TRANSITION_RELU)
    m = seqgraph.load(str(spec), dims={"V": 5}, dtype="float64")
    at_init = gc.gradcheck(m)
    assert [c.name for c in at_init if not c.ok] == ["bz"], at_init
    json.dumps([c.__dict__ for c in at_init])            # plain floats and booleans
    assert gc.off_kinks(m, np.random.default_rng(1)) == ["b", "bz", "c"]
    assert all(c.ok for c in gc.gradcheck(m))
    assert main(["gradcheck", str(spec)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("b, bz, c: constant at initialisation") and "all passed" in out
    assert main(["gradcheck", str(spec), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["moved_off_constant"] == ["b", "bz", "c"]


def test_gradcheck_of_a_non_finite_loss_says_so(tmp_path, capsys):
    """A log of a negative number makes the loss NaN: gradcheck printed numpy's warnings
    with their paths and 'rel error nan FAIL' for every parameter (review 35)."""
    from seqgraph.cli import main
    spec = tmp_path / "nan.sg"
    spec.write_text(DEEP_TRANSITION_RELU.replace("tanh(b + W @ z[t] + U @ x[t])",
                                                 "log(b + W @ z[t] + U @ x[t])"))
    assert main(["gradcheck", str(spec), "--dim", "V=4"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "Warning" not in out.err, out
    assert "the loss is nan at the point checked" in out.err


def test_gradcheck_tells_rounding_from_a_wrong_gradient(monkeypatch):
    """luong.sg's h.Uo has a gradient of 1e-5 on a loss of 7.45: its central difference
    differs by 3e-11 from rounding alone, which the relative test took for a failure
    (review 24). A gradient 1% off is still a failure."""
    from seqgraph import gradcheck as gc
    spec = seqgraph.read_spec(str(SPECS / "luong.sg"))
    m = seqgraph.Model(spec, dims={n: 5 for n in spec.unbound_dims()}, dtype="float64",
                       executor="compiled")
    assert all(c.ok for c in gc.gradcheck(m)), gc.gradcheck(m)
    run = m.run

    def off(*a, **k):                      # every gradient 1% too large
        res = run(*a, **k)
        if res.grads:
            res.grads = {p: g * 1.01 for p, g in res.grads.items()}
        return res
    monkeypatch.setattr(m, "run", off)
    bad = [c.name for c in gc.gradcheck(m) if not c.ok]
    assert len(bad) >= len(m.params) - 2, bad


def test_gradcheck_of_a_model_without_a_loss_says_so(tmp_path, capsys):
    """No loss: every gradient and every difference is 0, and gradcheck said 'all
    passed' for parameters it could not check."""
    from seqgraph.cli import main
    spec = tmp_path / "noloss.sg"
    spec.write_text("input x[t] : vec(3)\nparam W\nh[t] : 3 = tanh(W @ x[t])\n")
    assert main(["gradcheck", str(spec)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "the model has no loss line, so no gradient to check" in out.err
