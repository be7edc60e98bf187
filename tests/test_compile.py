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
from seqgraph.compile import CompiledExecutor, explain

from conftest import ROOT, SPECS, random_batch, randomise_params

TOL = {"float64": 1e-9, "float32": 1e-4}


def _attention(path) -> bool:
    """Variables over two indexes (attention): interpreted for now."""
    return any(v.inner for v in seqgraph.read_spec(str(path)).graph.vars)


SEQ_SPECS = sorted(p.name for p in SPECS.glob("*.sg")
                   if "tree " not in p.read_text() and not _attention(p))
ATTENTION_SPECS = sorted(p.name for p in SPECS.glob("*.sg") if _attention(p))
TREE_SPECS = sorted(p.name for p in SPECS.glob("*.sg") if "tree " in p.read_text())


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
        for a, b in zip(rc.carry[k], ri.carry[k]):
            assert rel(a, b) < tol, k
    if grads:
        assert ri.grads.keys() == rc.grads.keys()
        for k in ri.grads:
            assert rc.grads[k].dtype == ri.grads[k].dtype
            assert rel(rc.grads[k], ri.grads[k]) < tol, k


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
def test_attention_falls_back_to_the_interpreter_exactly(name):
    spec = seqgraph.read_spec(str(SPECS / name))
    mi, mc = pair(spec, "float64")
    assert mc.executor.fallback is not None and explain(mc)[0].startswith("interpreted")
    ins, tgs = random_batch(mi, np.random.default_rng(2))
    assert_same(mi.run(ins, tgs, grads=True), mc.run(ins, tgs, grads=True), "float64")


@pytest.mark.parametrize("name", TREE_SPECS)
def test_trees_fall_back_to_the_interpreter_and_say_so(name):
    spec = seqgraph.read_spec(str(SPECS / name))
    m = seqgraph.Model(spec, dims={d: 5 for d in spec.unbound_dims()}, executor="compiled")
    assert m.executor.fallback
    assert explain(m)[0].startswith("interpreted: tree")


def test_explain_finds_stacked_gemm_of_gated_cells():
    m = seqgraph.load(str(SPECS / "lstm.sg"), dims={"V": 5}, executor="compiled")
    lines = explain(m)
    rec = next(line for line in lines if "compiled loop" in line)
    assert "1 GEMM" in rec and "1 fused pass" in rec
    assert "z: every step at once" in lines


def test_elman_hoists_the_input_product_out_of_the_loop():
    m = seqgraph.load(str(SPECS / "elman.sg"), dims={"V": 5}, executor="compiled")
    rec = next(s for s in m.executor.stages if not hasattr(s, "var"))
    assert [p for p, _, _ in rec.kernel.groups[0][1]] == ["U"]
    assert len(rec.step.hoisted) == 1          # W @ x[t] + b, for all steps at once


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
    assert_same(mi.run({"x": X}, {"y": Y}, grads=True), mc.run({"x": X}, {"y": Y}, grads=True),
                "float64")


def test_dropout_while_training_is_interpreted_with_the_same_masks():
    text = """
input x[t] : onehot(V)
target y[t] : class(V)
param W, U, b, Wo, bo
h[t] : 6 = tanh(W @ x[t] + U @ h[t-1] + b)
d[t] = dropout(h[t], 0.5)
o[t] = Wo @ d[t] + bo
loss xent(o[t], y[t])
"""
    mi, mc = pair(seqgraph.read_spec("drop.sg", text), "float64", dims={"V": 4})
    X, Y = _ids(2, 5, 4, 3)
    ri = mi.run({"x": X}, {"y": Y}, train=True, grads=True, rng=np.random.default_rng(7))
    rc = mc.run({"x": X}, {"y": Y}, train=True, grads=True, rng=np.random.default_rng(7))
    assert_same(ri, rc, "float64")
    assert_same(mi.run({"x": X}, {"y": Y}, grads=True), mc.run({"x": X}, {"y": Y}, grads=True),
                "float64")
    assert any("dropout" in line for line in explain(mc))


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
        core += " + m[t]" + (" * h[t{s}1]".format(s=sign) if gate else "")
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
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "SEQGRAPH_CACHE": str(tmp_path),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=str(ROOT))
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
