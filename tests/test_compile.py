"""The compiled executor against the interpreter (the definition): every gallery spec,
forward values and every gradient, float64 and float32; carry across windows; random
small specs (hypothesis); the kernels once as plain Python (NUMBA_DISABLE_JIT=1)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqgraph
from seqgraph.compile import CompiledExecutor, explain, interpreted, kernels
from seqgraph.gradcheck import gradcheck

from conftest import ELMAN, ROOT, SPECS, cli_env, random_batch, randomise_params

TOL = {"float64": 1e-9, "float32": 1e-4}


def _attention(path) -> bool:
    """Variables over two indexes (attention): interpreted for now."""
    return any(v.inner for v in seqgraph.read_spec(str(path)).graph.vars)


SEQ_SPECS = sorted(p.name for p in SPECS.glob("*.sg")
                   if "tree " not in p.read_text() and not _attention(p))
ATTENTION_SPECS = sorted(p.name for p in SPECS.glob("*.sg") if _attention(p))
TREE_SPECS = sorted(p.name for p in SPECS.glob("*.sg") if "tree " in p.read_text()
                    and not seqgraph.read_spec(str(p)).graph.tree_and_sequence)  # below


def rel(a, b):
    """max |a - b| relative to max |b| (normwise: one number per array)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if b.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def pair(spec, dtype, dims=None, seed=1):
    """The same model twice, interpreted and compiled, with the same random parameters."""
    dims = dims if dims is not None else {d: 5 for d in spec.unbound_dims()}
    mi = seqgraph.Model(spec, dims=dims, dtype=dtype, executor="interp")
    mc = seqgraph.Model(spec, dims=dims, dtype=dtype, executor="compiled")
    randomise_params(mi, np.random.default_rng(seed))
    for p in mi.params:
        mc.params[p][...] = mi.params[p]
    return mi, mc


def assert_same(ri, rc, dtype, grads=True):
    tol = TOL[dtype]
    assert abs(ri.loss - rc.loss) <= tol * max(1.0, abs(ri.loss))
    assert ri.terms.keys() == rc.terms.keys()
    for k, (s, n) in ri.terms.items():
        assert rc.terms[k][1] == n
        assert abs(rc.terms[k][0] - s) <= tol * max(1.0, abs(s))
    assert ri.values.keys() == rc.values.keys()
    for k in ri.values:
        assert rc.values[k].shape == ri.values[k].shape, k
        assert rel(rc.values[k], ri.values[k]) < tol, k
    assert ri.carry.keys() == rc.carry.keys()
    for k in ri.carry:
        for a, b in zip(rc.carry[k], ri.carry[k], strict=True):
            assert rel(a, b) < tol, k
    if grads:
        assert ri.grads.keys() == rc.grads.keys()
        # float32: a gradient far smaller than the others can be a sum that cancels, and
        # then float32 itself cannot give it to 1e-4 (measured: a hypothesis spec's dU of
        # 1e-5 among gradients of 0.3, both executors 4e-4 and 6e-4 from the float64
        # value); so it is measured against 1% of the largest gradient at least
        floor = 0.0 if dtype == "float64" else \
            1e-2 * max((float(np.max(np.abs(g))) for g in ri.grads.values() if g.size),
                       default=0.0)
        for k in ri.grads:
            assert rc.grads[k].dtype == ri.grads[k].dtype
            a, b = np.asarray(rc.grads[k], np.float64), np.asarray(ri.grads[k], np.float64)
            err = float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), floor, 1e-12) \
                if b.size else 0.0
            assert err < tol, k


# ------------------------------------------------------------------- the gallery
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", SEQ_SPECS)
def test_gallery_compiled_equals_interpreted(name, dtype):
    spec = seqgraph.read_spec(str(SPECS / name))
    mi, mc = pair(spec, dtype)
    assert mc.executor.fallback is None, explain(mc)
    ins, tgs = random_batch(mi, np.random.default_rng(2))
    assert_same(mi.run(ins, tgs, grads=True), mc.run(ins, tgs, grads=True), dtype)


@pytest.mark.parametrize("name", ATTENTION_SPECS)
def test_attention_compiles_and_equals_the_interpreter(name):
    spec = seqgraph.read_spec(str(SPECS / name))
    mi, mc = pair(spec, "float64")
    assert mc.executor.fallback is None
    assert not any(line.startswith("interpreted") for line in explain(mc))
    ins, tgs = random_batch(mi, np.random.default_rng(2))
    assert_same(mi.run(ins, tgs, grads=True), mc.run(ins, tgs, grads=True), "float64")


@pytest.mark.parametrize("name", TREE_SPECS)
def test_trees_are_not_sequence_loops_and_say_how_they_run(name):
    """Tree indexes are not compiled as sequence loops (the plan refuses them); they run
    level by level (trees.py), and explain says so."""
    spec = seqgraph.read_spec(str(SPECS / name))
    m = seqgraph.Model(spec, dims={d: 5 for d in spec.unbound_dims()}, executor="compiled")
    assert m.executor.fallback.startswith("tree indexes")
    assert any("level by level" in line for line in explain(m))


def test_a_tree_encoder_with_a_decoder_runs_in_two_parts_and_says_so():
    """The sequence executor refuses the tree index and hands forests on: to the hybrid
    of tests/test_hybrid.py, which explain describes."""
    spec = seqgraph.read_spec(str(SPECS / "tree2seq.sg"))
    m = seqgraph.Model(spec, dims={"V": 5, "K": 5}, executor="compiled")
    assert m.executor.fallback == "tree indexes (recursive nets) run in the interpreter"
    assert explain(m)[0].startswith("the trees first, then the sequence: c handed")


def test_explain_finds_stacked_gemm_of_gated_cells():
    m = seqgraph.load(str(SPECS / "lstm.sg"), dims={"V": 5}, executor="compiled")
    lines = explain(m)
    rec = next(line for line in lines if "compiled loop" in line)
    assert "1 GEMM" in rec and "1 fused pass" in rec
    assert any(line.startswith("z: every step at once") for line in lines)


def test_elman_hoists_the_input_product_out_of_the_loop():
    m = seqgraph.load(str(SPECS / "elman.sg"), dims={"V": 5}, executor="compiled")
    rec = next(s for s in m.executor.stages if not hasattr(s, "var"))
    assert [p for p, _, _ in rec.kernel.groups[0][1]] == ["U"]
    assert len(rec.step.hoisted) == 1          # W @ x[t] + b, for all steps at once


@pytest.mark.parametrize("f", ["tanh", "sigmoid"])
def test_saturated_float32_cells_have_the_interpreters_gradients(f):
    """Weights of 1e9 saturate every step past the first: float32 tanh is exactly +-1
    there (sigmoid 0 or 1) and 1 - y^2 (y (1 - y)) exactly 0, so nothing flows back
    through U. A compiled tanh stuck at 1 - 2^-24 left 1.2e-7 of it, times 1e9: gradients
    of 1e17 where the interpreter's are ~1."""
    spec = seqgraph.read_spec("sat.sg", ELMAN.replace("tanh", f).replace(" H ", " 8 "))
    mi, mc = pair(spec, "float32", dims={"V": 5})
    for m in (mi, mc):
        m.params["U"] *= np.float32(2e9)
    X, Y = _ids(4, 9, 5, 0)
    ri, rc = (m.run({"x": X}, {"y": Y}, grads=True) for m in (mi, mc))
    assert abs(ri.loss - rc.loss) <= 1e-4 * abs(ri.loss)
    for p in ri.grads:
        assert rel(rc.grads[p], ri.grads[p]) < 1e-4, p


# ------------------------------------------------------------------- windows
def _ids(B, T, V, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


SPEC3 = """
input x[t] : onehot(V)
target y[t] : class(V)
param W, U, R, b, Wo, bo
h[t] : 5 = tanh(W @ x[t] + U @ h[t-1] + R @ h[t-3] + b)
o[t] = Wo @ h[t] + bo
loss xent(o[t], y[t])
"""


@pytest.mark.parametrize("text", ["elman", SPEC3])
def test_carry_across_windows_like_the_interpreter(text):
    spec = seqgraph.read_spec(str(SPECS / "elman.sg")) if text == "elman" else \
        seqgraph.read_spec("d3.sg", text)
    mi, mc = pair(spec, "float64", dims={"V": 4})
    X, Y = _ids(3, 7, 4, 0)
    for m in (mi, mc):
        m.a = m.run({"x": X[:, :2]}, {"y": Y[:, :2]})
        m.b = m.run({"x": X[:, 2:]}, {"y": Y[:, 2:]}, carry=m.a.carry, grads=True)
    assert_same(mi.a, mc.a, "float64", grads=False)
    assert_same(mi.b, mc.b, "float64")


def test_padding_and_single_step():
    spec = seqgraph.read_spec(str(SPECS / "bidirectional.sg"))
    mi, mc = pair(spec, "float64")
    X, Y = _ids(3, 1, 5, 1)
    assert_same(mi.run({"x": X}, {"y": Y}, grads=True), mc.run({"x": X}, {"y": Y}, grads=True),
                "float64")
    X, Y = _ids(3, 6, 5, 2)
    X[0, 3:] = -1
    Y[0, 3:] = -1
    ex = {"t": np.array([3, 6, 6])}                       # padding: the live values
    assert_same_live(mi.run({"x": X}, {"y": Y}, grads=True, lengths=ex),
                     mc.run({"x": X}, {"y": Y}, grads=True, lengths=ex), mi, ex, "float64")
    assert_same(mi.run({"x": X}, {"y": Y}, grads=True, lengths={"t": 6}),   # the -1s as
                mc.run({"x": X}, {"y": Y}, grads=True, lengths={"t": 6}), "float64")  # steps


# dropouts on no cycle: twice the same expression (two masks), on a value per example
# (c: one draw), on that value read at every step (a draw per step), after the loop
DROPOUTS = """
input x[t] : onehot(V)
target y[t] : class(V)
param W, U, b, Wo, bo, Wc
h[t] : 6 = tanh(W @ x[t] + U @ h[t-1] + b)
d[t] = dropout(h[t], 0.5) + dropout(h[t], 0.5)
c = dropout(h[end], 0.3)
o[t] = Wo @ d[t] + Wc @ dropout(c, 0.2) + bo
loss xent(o[t], y[t])
"""


# dropout between the layers of an LSTM (Zaremba et al. 2014): the masks of d[t], made
# for all steps at once, are drawn between the cell's variables in the interpreter
ZAREMBA = """
input x[t] : onehot(V)
target y[t] : class(V)
param Wo, bo
e = embed(x, 5)
d[t] = dropout(e[t], 0.3)
h = lstm(d, 4)
o[t] = Wo @ dropout(h[t], 0.5) + bo
loss xent(o[t], y[t])
"""


# a bidirectional tagger: the dropout reads a recurrence that runs backward in time
BIDROP = (SPECS / "bidirectional.sg").read_text().replace(
    "o[t] = Wo @ [h[t]; g[t]] + bo", "o[t] = Wo @ dropout([h[t]; g[t]], 0.5) + bo")

# dropouts in terms of a recurrence that do not read it (hoisted out of the loop): of a
# one-hot input; of an embedding, two in one hoisted sum, and the same sum written again
# in a second gate (equal terms, but each draws its own masks: not merged)
HOISTED = DROPOUTS.replace("W @ x[t]", "W @ dropout(x[t], 0.5)")
HOISTED_TWICE = ZAREMBA.replace("h = lstm(d, 4)", """\
param Wh, Vh, Uh, Gh, bh
h[t] : 4 = (tanh(Wh @ dropout(e[t], 0.3) + Vh @ dropout(e[t], 0.3) + Uh @ h[t-1] + bh)
            * sigmoid(Wh @ dropout(e[t], 0.3) + Vh @ dropout(e[t], 0.3) + Gh @ h[t-1] + bh))""")
# ... and out of a recurrence that runs backward in time (lowered on reversed time)
BACKWARD_HOISTED = DROPOUTS.replace("U @ h[t-1]", "U @ h[t+1]").replace(
    "W @ x[t]", "W @ dropout(x[t], 0.5)").replace("h[t] :", "g[t] :").replace(
    "h[t+1]", "g[t+1]").replace("h[t]", "g[t]").replace("h[end]", "g[end]")


# dropouts of cycle values, inside the loop: of a delayed state, forward and backward
# in time, and of a gate read at the same step in a cycle of two variables
IN_LOOP = DROPOUTS.replace("U @ h[t-1]", "U @ dropout(h[t-1], 0.5)")
IN_LOOP_BACKWARD = BACKWARD_HOISTED.replace("U @ g[t+1]", "U @ dropout(g[t+1], 0.4)")
IN_LOOP_GATE = DROPOUTS.replace("param W, U, b, Wo, bo, Wc", "param W, U, b, Wo, bo, Wc, A") \
    .replace("h[t] : 6 = tanh(W @ x[t] + U @ h[t-1] + b)", """\
m[t] : 6 = sigmoid(A @ dropout(h[t-1], 0.2))
h[t] : 6 = tanh(W @ x[t] + U @ h[t-1] + b) * dropout(m[t], 0.3)""")


@pytest.mark.parametrize("text", [DROPOUTS, ZAREMBA, BIDROP, HOISTED, HOISTED_TWICE,
                                  BACKWARD_HOISTED, IN_LOOP, IN_LOOP_BACKWARD, IN_LOOP_GATE],
                         ids=["dropouts", "lstm", "bidirectional", "hoisted",
                              "hoisted-twice", "hoisted-backward", "in-loop",
                              "in-loop-backward", "in-loop-gate"])
def test_dropout_while_training_is_compiled_with_the_interpreters_masks(text):
    """Compiled equals interpreted while training with dropout (the same masks: values,
    loss, gradients), full and padded batches, the generator left in the same state."""
    dims = {"V": 4, **({"K": 4} if "class(K)" in text else {})}
    mi, mc = pair(seqgraph.read_spec("drop.sg", text), "float64", dims=dims)
    X, Y = _ids(3, 5, 4, 3)
    Xp, Yp = X.copy(), Y.copy()
    Xp[0, 2:], Yp[0, 2:] = -1, -1
    padded = {"t": np.array([2, 5, 5])}
    for x, y, lens in [(X, Y, None), (Xp, Yp, padded), (X[:, :1], Y[:, :1], None)]:
        gi, gc = np.random.default_rng(7), np.random.default_rng(7)
        ri = mi.run({"x": x}, {"y": y}, train=True, grads=True, rng=gi, lengths=lens)
        rc = mc.run({"x": x}, {"y": y}, train=True, grads=True, rng=gc, lengths=lens)
        if lens is None:
            assert_same(ri, rc, "float64")
        else:
            assert_same_live(ri, rc, mi, lens, "float64")
        assert gi.bit_generator.state == gc.bit_generator.state
        plain = mc.run({"x": x}, {"y": y}, grads=True, lengths=lens)   # the masks did something
        assert abs(plain.loss - rc.loss) > 1e-6
    assert mc.executor._interp is None                      # never fell back
    assert "masks drawn as the interpreter" in explain(mc)[-2]


def test_an_output_layer_reading_a_dropout_is_fused_with_its_loss_and_the_same_masks(
        monkeypatch):
    """`o[t] = Wo @ dropout(h[t], p) + bo` runs in the fused output kernel while training:
    it reads m * h and gives m * dh, equal to the interpreter (full and padded batches)."""
    text = "dim H = 5\n" + ELMAN.replace("Wo @ h[t]", "Wo @ dropout(h[t], 0.4)")
    mi, mc = pair(seqgraph.read_spec("drop.sg", text), "float64", dims={"V": 4})
    assert "its input's dropout masks applied before" in " ".join(explain(mc))
    calls = []
    fused = kernels.output_xent
    monkeypatch.setattr(kernels, "output_xent", lambda *a: calls.append(1) or fused(*a))
    X, Y = _ids(3, 6, 4, 5)
    Xp, Yp = X.copy(), Y.copy()
    Xp[1, 3:], Yp[1, 3:] = -1, -1
    for x, y in [(X, Y), (Xp, Yp)]:
        gi, gc = np.random.default_rng(3), np.random.default_rng(3)
        ri = mi.run({"x": x}, {"y": y}, train=True, grads=True, rng=gi)
        rc = mc.run({"x": x}, {"y": y}, train=True, grads=True, rng=gc)
        assert_same(ri, rc, "float64")
        assert gi.bit_generator.state == gc.bit_generator.state
    assert len(calls) == 2 and mc.executor._interp is None


@pytest.mark.parametrize("change, why", [
    (("+ bo", "+ dropout(bo, 0.5)"),
     "dropout: interpreted ('o' has a dropout of a parameter or a number)")],
    ids=["of-a-parameter"])
def test_dropout_the_compiler_does_not_draw_is_interpreted(change, why):
    text = DROPOUTS.replace(*change)
    assert text != DROPOUTS
    mi, mc = pair(seqgraph.read_spec("drop.sg", text), "float64", dims={"V": 4})
    assert why in " ".join(explain(mc))
    assert interpreted(mc) is None and interpreted(mc, training=True) == \
        "with dropout, 'o' has a dropout of a parameter or a number"   # train notes it
    X, Y = _ids(2, 5, 4, 3)
    ri = mi.run({"x": X}, {"y": Y}, train=True, grads=True, rng=np.random.default_rng(7))
    rc = mc.run({"x": X}, {"y": Y}, train=True, grads=True, rng=np.random.default_rng(7))
    assert_same(ri, rc, "float64")
    assert mc.executor._interp is not None
    assert_same(mi.run({"x": X}, {"y": Y}, grads=True), mc.run({"x": X}, {"y": Y}, grads=True),
                "float64")


# ------------------------------------------------------------------- random specs
@st.composite
def specs(draw):
    """A small random model: one or two cycle variables, delays 1-3 either way, a
    same-step read inside the cycle, an optional init, elementwise gates."""
    H = draw(st.integers(1, 4))
    k = draw(st.integers(1, 3))
    sign = draw(st.sampled_from(["-", "+"]))
    fn = draw(st.sampled_from(["tanh", "sigmoid", "relu", "softplus", "exp"]))
    two = draw(st.booleans())
    gate = draw(st.booleans())
    init = draw(st.booleans())
    lines = ["input x[t] : onehot(V)", "input c : vec(3)", "target y[t] : class(V)",
             "param W, U, b, Wo, bo, A, Q, Ci"]
    core = f"W @ x[t] + U @ h[t{sign}{k}] + b"
    if two:
        lines.append(f"m[t] : {H} = sigmoid(A @ h[t{sign}1] - Q @ x[t])")
        core += " + m[t]" + (f" * h[t{sign}1]" if gate else "")
    elif gate:
        core = f"{core} - 0.5 * h[t{sign}1] / 2"
    expr = f"{fn}({core})" if fn != "exp" else f"tanh({core}) * exp(0.1 * b)"
    lines.append(f"h[t] : {H} = {expr}")
    if init:
        lines.append("init h = tanh(Ci @ c)")
    lines += ["o[t] = Wo @ [h[t]; x[t]] + bo", "loss xent(o[t], y[t])"]
    T = draw(st.integers(1, 5))
    return "\n".join(lines) + "\n", T


@settings(max_examples=12, deadline=None)
@given(case=specs(), dtype=st.sampled_from(["float64", "float32"]))
def test_random_specs_compiled_equals_interpreted(case, dtype):
    text, T = case
    spec = seqgraph.read_spec("rand.sg", text)
    mi, mc = pair(spec, dtype, dims={"V": 3})
    assert mc.executor.fallback is None, explain(mc)
    X, Y = _ids(2, T, 3, T)
    c = np.random.default_rng(0).normal(size=(2, 3))
    ins = {"x": X, "c": c}
    assert_same(mi.run(ins, {"y": Y}, grads=True), mc.run(ins, {"y": Y}, grads=True), dtype)


# ------------------------------------------------------------------- plain Python
def test_kernels_run_without_jit(tmp_path):
    """The generated and fixed kernels, run as Python (coverage, debugging)."""
    code = f"""
import numpy as np, seqgraph, sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_compile import pair, assert_same
from conftest import random_batch
for name in ("elman.sg", "lstm.sg", "bidirectional.sg"):
    spec = seqgraph.read_spec({str(SPECS)!r} + "/" + name)
    mi, mc = pair(spec, "float64")
    ins, tgs = random_batch(mi, np.random.default_rng(2))
    assert_same(mi.run(ins, tgs, grads=True), mc.run(ins, tgs, grads=True), "float64")
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=str(ROOT), env=cli_env(NUMBA_DISABLE_JIT="1",
                                                  SEQGRAPH_CACHE=str(tmp_path)), check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("ok")


def test_generated_kernels_are_cached_by_content(tmp_path, monkeypatch):
    from seqgraph.compile import kernels
    monkeypatch.setenv("SEQGRAPH_CACHE", str(tmp_path))
    m = seqgraph.load(str(SPECS / "elman.sg"), dims={"V": 3}, executor="compiled")
    assert isinstance(m.executor, CompiledExecutor)
    src = next(s for s in m.executor.stages if not hasattr(s, "var")).kernel.source
    kernels._MODULES.clear()
    mod = kernels.load_source(src)
    assert os.path.dirname(mod.__file__) == str(tmp_path)
    assert kernels.load_source(src) is mod


def test_a_kernel_cache_that_cannot_be_written_is_said_and_replaced(tmp_path, monkeypatch,
                                                                    capsys):
    """A read-only home or a file where the cache folder goes failed every compiled
    run with a traceback (walk 12): the kernels go to a temporary folder, said once."""
    from seqgraph.compile import kernels
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("SEQGRAPH_CACHE", str(blocker))
    monkeypatch.setattr(kernels, "_CACHE_DIRS", {})
    d = kernels.cache_dir()
    assert os.path.isdir(d) and d != str(blocker) and kernels.cache_dir() == d
    err = capsys.readouterr().err
    assert err.count("cannot write the kernel cache") == 1 and str(blocker) in err
    m = seqgraph.load(str(SPECS / "elman.sg"), dims={"V": 3}, executor="compiled")
    x = np.array([[0, 1, 2]])
    assert np.isfinite(m.run({"x": x}, {"y": x}).loss)


# ------------------------------------------------------------------- padding, teacher
def assert_same_live(ri, rc, m, ex, dtype):
    """assert_same where values at padded steps are unspecified: values compared at each
    example's own steps only."""
    tol = TOL[dtype]
    for k in ri.values:
        index = m.graph.var(k).index
        a, b = np.array(rc.values[k], np.float64), np.array(ri.values[k], np.float64)
        if index in ex:
            for e, n in enumerate(ex[index]):
                a[e, n:] = b[e, n:] = 0
        assert rel(a, b) < tol, k
    ri.values, rc.values = {}, {}
    ri.carry, rc.carry = {}, {}
    assert_same(ri, rc, dtype)


PADDED = ["bidirectional.sg", "bidirectional_cell.sg", "many_to_one.sg", "seq2seq.sg",
          "deep_stacked_cell.sg", "elman.sg", "lstm.sg", "conditional.sg", "dynamical.sg"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", PADDED)
def test_padded_batches_compiled_equal_the_interpreter(name, dtype, monkeypatch):
    """Per-example lengths shorter than the arrays (docs/internals.md, "Variable
    lengths"), compiled: losses masked, h[end] each example's own, loops on reversed time
    started at each example's end; loss, gradients and live values as interpreted."""
    spec = seqgraph.read_spec(str(SPECS / name))
    mi, mc = pair(spec, dtype)
    ins, tgs = random_batch(mi, np.random.default_rng(3))
    ex = {}
    for k, a in {**ins, **tgs}.items():
        index = mi.graph.var(k).index
        if index is not None and index not in ex:
            T = np.asarray(a).shape[1]
            ex[index] = np.array([T] + [max(T - 1 - b, 1) for b in range(1, len(a))])
    monkeypatch.setattr(type(mc.executor), "interp",
                        property(lambda self: pytest.fail("interpreted")))
    rc = mc.run(ins, tgs, grads=True, lengths=ex)
    ri = mi.run(ins, tgs, grads=True, lengths=ex)
    assert_same_live(ri, rc, mi, ex, dtype)
    assert any("padding" in line for line in explain(mc))


def test_full_length_arrays_in_lengths_stay_compiled(monkeypatch):
    spec = seqgraph.read_spec(str(SPECS / "elman.sg"))
    mi, mc = pair(spec, "float64")
    X, Y = _ids(3, 6, 5, 4)
    monkeypatch.setattr(type(mc.executor), "interp",
                        property(lambda self: pytest.fail("interpreted")))
    rc = mc.run({"x": X}, {"y": Y}, grads=True, lengths={"t": np.array([6, 6, 6])})
    assert_same(mi.run({"x": X}, {"y": Y}, grads=True), rc, "float64")


def test_scheduled_sampling_runs_in_the_interpreter_with_its_answer():
    spec = seqgraph.read_spec(str(SPECS / "jordan.sg"))
    mi, mc = pair(spec, "float64")
    ins, tgs = random_batch(mi, np.random.default_rng(5))
    ri = mi.run(ins, tgs, grads=True, teacher=0.5, rng=np.random.default_rng(9))
    rc = mc.run(ins, tgs, grads=True, teacher=0.5, rng=np.random.default_rng(9))
    assert_same(ri, rc, "float64")
    assert any("scheduled sampling" in line for line in explain(mc))
    # teacher = 1 is teacher forcing: compiled, and the interpreter's answer
    assert_same(mi.run(ins, tgs, grads=True), mc.run(ins, tgs, grads=True, teacher=1.0),
                "float64")


# ------------------------------------------------------------------- blocks, buffers
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_products_cut_into_blocks_equal_the_interpreter(dtype):
    """B x H large enough that each step's product is cut into column and (accumulated)
    row blocks (kernels.blocks), with ragged last blocks."""
    from seqgraph.compile import kernels
    assert kernels.blocks(16, 4 * 160, 160) != (640, 160)
    assert kernels.blocks(16, 160, 4 * 160)[1] < 640
    text = """
input x[t] : onehot(V)
target y[t] : class(V)
param Wo, bo
h = lstm(x, 160)
o[t] = Wo @ h[t] + bo
loss xent(o[t], y[t])
"""
    mi, mc = pair(seqgraph.read_spec("big.sg", text), dtype, dims={"V": 7})
    X, Y = _ids(16, 3, 7, 8)
    assert_same(mi.run({"x": X}, {"y": Y}, grads=True), mc.run({"x": X}, {"y": Y}, grads=True),
                dtype)


def test_results_kept_by_the_caller_are_not_overwritten_by_the_next_run():
    """The executor reuses its buffers from run to run (kernels.Pool), but never one
    that a result still holds."""
    spec = seqgraph.read_spec(str(SPECS / "lstm.sg"))
    mi, mc = pair(spec, "float32")
    X1, Y1 = _ids(3, 6, 5, 10)
    X2, Y2 = _ids(3, 6, 5, 11)
    a = mc.run({"x": X1}, {"y": Y1}, grads=True)
    keep = {k: v.copy() for k, v in a.values.items()}
    gkeep = {k: v.copy() for k, v in a.grads.items()}
    for _ in range(3):
        mc.run({"x": X2}, {"y": Y2}, grads=True)
    for k, v in keep.items():
        np.testing.assert_array_equal(a.values[k], v)
    for k, v in gkeep.items():
        np.testing.assert_array_equal(a.grads[k], v)
    assert_same(mi.run({"x": X1}, {"y": Y1}, grads=True), a, "float32")


def test_pool_hands_out_only_free_buffers():
    from seqgraph.compile.kernels import Pool
    pool = Pool()
    a = pool.empty((4, 3), np.float32)
    b = pool.empty((4, 3), np.float32)
    assert not np.shares_memory(a, b)
    view = a[1:]
    del a
    c = pool.empty((4, 3), np.float32)
    assert not np.shares_memory(c, view) and not np.shares_memory(c, b)
    del view, b, c
    at = lambda x: x.__array_interface__["data"][0]
    kept = [at(x) for x in pool.free[(16, "<f4")]]      # 12 numbers: the bin of 16
    assert at(pool.empty((4, 3), np.float32)) == kept[0]
    # other shapes of the same bin reuse it: a padded batch's lengths change (review 30)
    d = pool.empty((2, 7), np.float32)
    assert d.shape == (2, 7) and d.flags.c_contiguous and at(d) == kept[0]
    assert len(pool.free) == 1


PREFILL = {
    # the hoisted sum is not `P @ x + b`: each hoist evaluated, copied into G
    "each": ("""
input x[t] : onehot(V)
input c : vec(3)
target y[t] : class(V)
param W, U, Q, Wo, bo
h[t] : 4 = tanh(W @ x[t] + Q @ c + U @ h[t-1])
o[t] = Wo @ h[t] + bo
loss xent(o[t], y[t])
""", 1),
    # a dense operand computed by the model (its gradient flows back), an advance
    "dense_reverse": ("""
input x[t] : vec(3)
target y[t] : class(V)
param W, U, b, W2, U2, b2, W3, Wo, bo
e[t] : 5 = tanh(W @ x[t])
h[t] : 4 = tanh(W3 @ e[t] + U @ h[t+1] + b)
g[t] : 4 = sigmoid(U2 @ h[t+1] + W2 @ x[t] + b2)
o[t] = Wo @ [h[t]; g[t]] + bo
loss xent(o[t], y[t])
""", 1),
    # four gates from one gather, both directions
    "bi_lstm": ("""
input x[t] : onehot(V)
target y[t] : class(V)
param Wo, bo
h = bi lstm(x, 4)
o[t] = Wo @ h[t] + bo
loss xent(o[t], y[t])
""", 4),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(PREFILL))
def test_prefilled_gate_products_equal_the_interpreter(name, dtype):
    text, gates = PREFILL[name]
    mi, mc = pair(seqgraph.read_spec(name + ".sg", text), dtype, dims={"V": 5})
    rng = np.random.default_rng(1)
    X, Y = _ids(3, 6, 5, 1)
    ins = {"x": rng.normal(size=(3, 6, 3)) if name == "dense_reverse" else X}
    if name == "each":
        ins["c"] = rng.normal(size=(3, 3))
    assert_same(mi.run(ins, {"y": Y}, grads=True), mc.run(ins, {"y": Y}, grads=True), dtype)
    recs = [st for st in mc.executor.stages if hasattr(st, "kernel")]
    assert recs and all(len(r.kernel.info["prefill"][0]) == gates for r in recs)


@pytest.mark.parametrize("name", ["bidirectional.sg", "bidirectional_cell.sg"])
def test_the_two_directions_run_at_once_with_the_same_answer(name, monkeypatch):
    spec = seqgraph.read_spec(str(SPECS / name))
    mi, mc = pair(spec, "float64")
    assert len(mc.executor.partner) == 1
    assert any("run at once" in line for line in explain(mc))
    ins, tgs = random_batch(mi, np.random.default_rng(4))
    rc = mc.run(ins, tgs, grads=True)
    assert_same(mi.run(ins, tgs, grads=True), rc, "float64")
    monkeypatch.setenv("SEQGRAPH_SERIAL", "1")
    ms = seqgraph.Model(spec, dims={d: 5 for d in spec.unbound_dims()}, dtype="float64",
                        executor="compiled")
    assert not ms.executor.partner
    for p in mi.params:
        ms.params[p][...] = mi.params[p]
    assert_same(rc, ms.run(ins, tgs, grads=True), "float64")


def test_compiled_padding_values_do_not_matter():
    m = seqgraph.load(str(SPECS / "bidirectional.sg"), dims={"V": 5, "K": 3},
                      dtype="float64", executor="compiled")
    X, Y = _ids(2, 6, 5, 6)
    Y %= 3
    ex = {"t": np.array([6, 3])}
    a = m.run({"x": X}, {"y": Y}, grads=True, lengths=ex)
    X[1, 3:] = (X[1, 3:] + 1) % 5
    Y[1, 3:] = -1
    b = m.run({"x": X}, {"y": Y}, grads=True, lengths=ex)
    assert a.loss == pytest.approx(b.loss, rel=1e-13)
    for p in a.grads:
        np.testing.assert_allclose(a.grads[p], b.grads[p], rtol=1e-12, atol=1e-14)


def test_a_dropout_only_in_an_init_value_trains_interpreted():
    """The mask layouts refuse a dropout in an init value; a model whose only dropout is
    there used to be taken for one without dropout, and trained compiled without its
    masks (another loss, the generator left elsewhere)."""
    text = """
model m
input  z : vec(3)
input  x[t] : onehot(K)
target y[t] : class(K)
param Wi, W, U, Wo
init s = dropout(tanh(Wi @ z), 0.5)
s[t] : 4 = tanh(W @ x[t] + U @ s[t-1])
o[t] = Wo @ s[t]
loss xent(o[t], y[t])
"""
    mi, mc = pair(seqgraph.read_spec("init.sg", text), "float64", dims={"K": 5})
    assert interpreted(mc, training=True) == "with dropout, 's' has a dropout in its init value"
    r = np.random.default_rng(0)
    ins = {"z": r.normal(size=(2, 3)), "x": r.integers(0, 5, (2, 3))}
    tgs = {"y": r.integers(0, 5, (2, 3))}
    gi, gc = np.random.default_rng(1), np.random.default_rng(1)
    assert_same(mi.run(ins, tgs, train=True, grads=True, rng=gi),
                mc.run(ins, tgs, train=True, grads=True, rng=gc), "float64")
    assert gi.bit_generator.state == gc.bit_generator.state


def test_a_dot_product_beside_a_vector_in_a_cycle_runs_as_interpreted():
    """`v @ z[t]` is one number per example; added to a vector inside a recurrence it was
    hoisted into a buffer of z's size, so the compiled run read past it: a wrong loss and
    a corrupted heap (review 24). It now runs as the interpreter does, with the reason."""
    spec = seqgraph.read_spec("dot.sg", text="""
input z[t] : vec(2)
target y[t] : vec(3)
param v : [2]
param U
h[t] : 3 = tanh(v @ z[t] + U @ h[t-1])
loss mse(h[t], y[t])
""")
    mi, mc = pair(spec, "float64")
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(2, 3, 2)), rng.normal(size=(2, 3, 3))
    ri, rc = mi.run({"z": z}, {"y": y}, grads=True), mc.run({"z": z}, {"y": y}, grads=True)
    assert_same(ri, rc, "float64")
    h, loss = np.zeros((2, 3)), 0.0                    # by hand
    for t in range(3):
        h = np.tanh((z[:, t] @ mi.params["v"])[:, None] + h @ mi.params["U"].T)
        loss += 0.5 * ((h - y[:, t]) ** 2).sum() / 2
    assert ri.loss == pytest.approx(loss, rel=1e-12)
    assert any("a value of size 1" in line for line in explain(mc))


def test_a_product_of_a_product_in_a_cycle_is_compiled():
    """`W2 @ (W3 @ h[t-1])` failed in code generation (an AssertionError; review 24): the
    inner product now gets a row of its own, and the loop is compiled."""
    spec = seqgraph.read_spec("gg.sg", text="""
input z[t] : vec(3)
target y[t] : vec(3)
param W2 : [3, 2]
param W3 : [2, 3]
param W
h[t] : 3 = tanh(W2 @ (W3 @ h[t-1]) + W @ z[t])
g[t] : 3 = tanh(W2 @ (W3 @ (W2 @ (W3 @ g[t+1]))) + W @ z[t])
loss mse(h[t], y[t])
loss mse(g[t], y[t])
""")
    mi, mc = pair(spec, "float64")
    rng = np.random.default_rng(2)
    z, y = rng.normal(size=(3, 5, 3)), rng.normal(size=(3, 5, 3))
    for lens in (None, {"t": np.array([5, 2, 4])}):
        ri = mi.run({"z": z}, {"y": y}, grads=True, lengths=lens)
        rc = mc.run({"z": z}, {"y": y}, grads=True, lengths=lens)
        assert_same_live(ri, rc, mi, lens or {"t": np.full(3, 5)}, "float64")
    assert mc.executor._interp is None


PARAMS_ONLY = """
input x[t] : onehot(3)
target y : class(2)
param b : [2]
param I : [2]
param U : [2, 2]
param Wo : [2, 2]
h[t] : 2 = tanh(b + U @ h[t-1])
init h = tanh(I)
s = sum over t (h[t])
o = Wo @ s
loss xent(o, y)
"""


@pytest.mark.parametrize("B, T", [(2, 2), (3, 2), (3, 4)])
def test_values_made_of_parameters_alone_have_a_row_an_example(B, T):
    """A variable of parameters alone (`h[t] = tanh(b + U @ h[t-1])`) had no batch axis in
    the interpreter: `sum over t` stacked its steps as examples (silently wrong where
    T == B) or failed (review 24). Every variable's value is [B, n] now; both executors
    give the value computed by hand, in every row."""
    mi, mc = pair(seqgraph.read_spec("p.sg", text=PARAMS_ONLY), "float64")
    x, y = np.zeros((B, T), int), np.array([0, 1, 1][:B])
    ri, rc = mi.run({"x": x}, {"y": y}, grads=True), mc.run({"x": x}, {"y": y}, grads=True)
    assert_same(ri, rc, "float64")
    p = mi.params
    h, s = np.tanh(p["I"]), np.zeros(2)
    for _ in range(T):
        h = np.tanh(p["b"] + p["U"] @ h)
        s += h
    np.testing.assert_allclose(ri.values["s"], np.tile(s, (B, 1)), rtol=1e-12)
    o = p["Wo"] @ s
    lse = np.log(np.exp(o).sum())
    assert ri.loss == pytest.approx(np.mean([lse - o[k] for k in y]), rel=1e-12)


@pytest.mark.parametrize("text", [
    "input x[t] : onehot(3)\ntarget y[t] : class(3)\nparam b\no[t] = b\nloss xent(o[t], y[t])\n",
    "input x[t] : onehot(3)\ntarget y[t] : class(3)\nparam W : [2, 3]\nparam b : [1]\n"
    "o[t] = [W @ x[t]; b]\nloss xent(o[t], y[t])\n"], ids=["unigram", "concat"])
def test_an_output_or_a_part_made_of_parameters_alone(text):
    """A unigram model's output `o[t] = b` failed in the interpreter's xent, and
    `[W @ x[t]; b]` in both executors' concatenation (review 24)."""
    mi, mc = pair(seqgraph.read_spec("u.sg", text=text), "float64")
    x = np.array([[0, 1, 2], [2, 2, 1]])
    ri, rc = mi.run({"x": x}, {"y": x}, grads=True), mc.run({"x": x}, {"y": x}, grads=True)
    assert_same(ri, rc, "float64")
    assert all(c.ok for c in gradcheck(mi)), gradcheck(mi)


def test_building_a_deep_stack_reads_the_graph_once(monkeypatch):
    """Lowering each recurrence built the whole graph's networkx view again: quadratic
    in the layers (stack(300) lstm: 37 s to build, stack(1000): 248 s, against 8 s for
    the interpreter). The build now makes it a fixed number of times, whatever the
    depth."""
    from seqgraph.graph.folded import FoldedGraph
    made = {"n": 0}
    nx_view = FoldedGraph.nx

    def counted(self):
        made["n"] += 1
        return nx_view(self)
    monkeypatch.setattr(FoldedGraph, "nx", counted)
    counts = []
    for layers in (2, 12):
        text = (f"model s\ndim H = 4\ninput x[t] : onehot(V)\ntarget y[t] : class(V)\n"
                f"param Wo, bo\nh = stack({layers}) rnn(x, H)\no[t] = Wo @ h[t] + bo\n"
                "loss xent(o[t], y[t])\n")
        spec = seqgraph.read_spec("s.sg", text=text, dims={"V": 3})
        made["n"] = 0
        seqgraph.Model(spec, dims={"V": 3}, executor="compiled")
        counts.append(made["n"])
    assert counts[0] == counts[1], counts
