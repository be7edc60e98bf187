"""Variable lengths and scheduled sampling in the interpreter (docs/internals.md)."""
from pathlib import Path

import numpy as np
import pytest

import seqgraph
from seqgraph.gradcheck import random_batch

SPECS = Path(__file__).resolve().parent.parent / "specs"
DIMS = {"V": 5, "K": 3, "Vx": 5, "Vy": 6}


def _cut(m, arrays, ex, b):
    out = {}
    for k, a in arrays.items():
        index = m.graph.var(k).index
        out[k] = a[b:b + 1] if index is None else a[b:b + 1, :ex[index][b]]
    return out


@pytest.mark.parametrize("name", ["seq2seq.sg", "bidirectional.sg", "many_to_one.sg",
                                  "conditional.sg", "deep_stacked_cell.sg", "dynamical.sg"])
def test_a_padded_batch_equals_its_examples_one_at_a_time(name):
    m = seqgraph.load(str(SPECS / name), dims=DIMS, dtype="float64")
    rng = np.random.default_rng(0)
    inputs, targets, lens, _ = random_batch(m, rng, B=3, T=5)
    ex = {i: np.array([L, 1, max(L - 2, 1)]) for i, L in lens.items()}
    full = m.run(inputs, targets, grads=True, lengths=ex)
    loss, grads = 0.0, {p: 0.0 for p in m.params}
    for b in range(3):
        one = m.run(_cut(m, inputs, ex, b), _cut(m, targets, ex, b), grads=True,
                    lengths={i: int(n[b]) for i, n in ex.items()})
        loss += one.loss / 3
        grads = {p: grads[p] + one.grads[p] / 3 for p in grads}
    assert full.loss == pytest.approx(loss, rel=1e-12)
    for p in grads:
        np.testing.assert_allclose(full.grads[p], grads[p], rtol=1e-10, atol=1e-13)


def test_padding_values_do_not_matter():
    m = seqgraph.load(str(SPECS / "bidirectional.sg"), dims=DIMS, dtype="float64")
    rng = np.random.default_rng(1)
    inputs, targets, _, _ = random_batch(m, rng, B=2, T=6)
    ex = {"t": np.array([6, 3])}
    a = m.run(inputs, targets, grads=True, lengths=ex)
    inputs["x"][1, 3:] = (inputs["x"][1, 3:] + 1) % 5
    targets["y"][1, 3:] = -1
    b = m.run(inputs, targets, grads=True, lengths=ex)
    assert a.loss == b.loss
    for p in a.grads:
        np.testing.assert_array_equal(a.grads[p], b.grads[p])


def test_bad_lengths_are_refused():
    m = seqgraph.load(str(SPECS / "elman.sg"), dims=DIMS)
    x = np.zeros((2, 4), dtype=int)
    with pytest.raises(seqgraph.UsageError, match="lengths"):
        m.run({"x": x}, {"y": x}, lengths={"t": np.array([5, 1])})


@pytest.mark.parametrize("executor", ["interp", "compiled"])
def test_ids_padded_without_lengths_are_refused_where_a_later_step_is_read(executor):
    """-1s at the end of an example, no lengths, and h[end]: the -1s would run as steps
    (zero inputs) into the value read. The same batch with lengths runs; a model that
    reads no later step (a tagger: the padded steps have no target) needs none."""
    m = seqgraph.load(str(SPECS / "many_to_one.sg"), dims=DIMS, dtype="float64",
                      executor=executor)
    x = np.array([[1, 2, 3, 4], [1, 2, -1, -1]])
    with pytest.raises(seqgraph.UsageError) as e:
        m.forward({"x": x})
    assert str(e.value) == (
        "'x' is padded with -1 (example 1 has 2 of 4 steps) and h[end] (line 13) would "
        "read the -1s: give each example's length, lengths={'t': [...]} (a loader's "
        "batch has them: b.lengths); lengths={'t': 4} runs the -1s as steps")
    o = m.forward({"x": x}, lengths={"t": np.array([4, 2])})["o"]
    np.testing.assert_allclose(o[1], m.forward({"x": x[1:, :2]})["o"][0], rtol=1e-12)
    m.forward({"x": x}, lengths={"t": 4})            # said: the -1s are steps
    m.forward({"x": x[:, ::-1].copy()})              # -1 not at the end: no padding
    loss_end = (SPECS / "many_to_one.sg").read_text().replace(
        "o = Wo @ h[end] + bo\nloss xent(o, y)", "o[t] = Wo @ h[t] + bo\nloss xent(o[end], y)")
    assert "xent(o[end], y)" in loss_end          # a loss at the end (review 26: missed)
    with pytest.raises(seqgraph.UsageError, match=r"o\[end\] \(line 14\) would read the -1s"):
        seqgraph.Model(seqgraph.read_spec("e.sg", loss_end), dims=DIMS,
                       executor=executor).run({"x": x}, {"y": np.array([0, 1])})
    lm = seqgraph.load(str(SPECS / "elman.sg"), dims=DIMS, executor=executor)
    lm.forward({"x": x})
    with pytest.raises(seqgraph.UsageError, match=r"g\[t\+1\] \(line \d+\) would"):
        seqgraph.load(str(SPECS / "bidirectional.sg"), dims=DIMS,
                      executor=executor).forward({"x": x})


JORDAN_LIKE = """
input x[t] : onehot(V)
target y[t] : class(V)
param W, R, b, Wo, bo
h[t] : 6 = tanh(W @ x[t] + R @ y[t-1] + b)
o[t] = Wo @ h[t] + bo
loss xent(o[t], y[t])
"""


def _feedback_model():
    return seqgraph.Model(seqgraph.read_spec("j.sg", JORDAN_LIKE), dims={"V": 4},
                          dtype="float64")


def test_teacher_one_is_teacher_forcing_and_zero_feeds_samples():
    m = _feedback_model()
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (8, 6)), rng.integers(0, 4, (8, 6))
    forced = m.run({"x": x}, {"y": y}).loss
    assert m.run({"x": x}, {"y": y}, teacher=1.0).loss == forced
    own = [m.run({"x": x}, {"y": y}, teacher=0.0, rng=np.random.default_rng(s)).loss
           for s in (0, 0, 1)]
    assert own[0] == own[1] != forced and own[0] != own[2]


def test_sampled_feedback_is_a_constant_for_the_gradient():
    m = _feedback_model()
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 4, (3, 5)), rng.integers(0, 4, (3, 5))

    def run(grads=False):
        return m.run({"x": x}, {"y": y}, teacher=0.5, grads=grads,
                     rng=np.random.default_rng(7))
    res = run(True)
    d = {p: rng.normal(size=v.shape) for p, v in m.params.items()}
    eps = 1e-6
    for p in m.params:
        m.params[p] += eps * d[p]
    up = run().loss
    for p in m.params:
        m.params[p] -= 2 * eps * d[p]
    down = run().loss
    analytic = sum(float((res.grads[p] * d[p]).sum()) for p in m.params)
    assert (up - down) / (2 * eps) == pytest.approx(analytic, rel=1e-6)


def test_teacher_outside_zero_one_is_refused():
    m = _feedback_model()
    x = np.zeros((1, 2), dtype=int)
    with pytest.raises(seqgraph.UsageError, match="teacher"):
        m.run({"x": x}, {"y": x}, teacher=1.5)


BACKWARD_END = """\
input x[t] : onehot(V)
target yc : class(K)
param W, U, Wq
g[t] : 3 = tanh(W @ x[t] + U @ g[t+1])
q = Wq @ {read}
loss xent(q, yc)
"""


@pytest.mark.parametrize("executor", ["interp", "compiled"])
def test_the_end_of_a_backward_recurrence_in_a_padded_batch(executor):
    """g[end] of g running backward in time is each example's own last step, which such
    a recurrence computes first: q waits for every step (it used to be scheduled after
    the array's last step only, and the interpreter failed with a KeyError)."""
    spec = seqgraph.read_spec("b.sg", BACKWARD_END.format(read="g[end]"))
    m = seqgraph.Model(spec, dims={"V": 4, "K": 3}, dtype="float64", executor=executor)
    x, yc = np.array([[1, 2, 3], [0, 1, 2]]), np.array([0, 2])
    full = m.run({"x": x}, {"yc": yc}, grads=True, lengths={"t": np.array([3, 1])})
    W, Wq = m.params["W"], m.params["Wq"]
    # g[L] = tanh(W x[L]): what stands past an example's end is zero
    np.testing.assert_allclose(full.values["q"], [Wq @ np.tanh(W[:, 3]), Wq @ np.tanh(W[:, 0])])
    one = m.run({"x": x[1:, :1]}, {"yc": yc[1:]}, grads=True)
    np.testing.assert_allclose(full.values["q"][1], one.values["q"][0])


def test_the_end_of_a_backward_recurrence_with_dropout_compiled_as_interpreted():
    spec = seqgraph.read_spec("b.sg", BACKWARD_END.format(read="dropout(g[end], 0.5)")
                              .replace("U @ g[t+1]", "U @ dropout(g[t+1], 0.3)"))
    x, yc = np.array([[1, 2, 3], [0, 1, 2], [3, 3, 0]]), np.array([0, 2, 1])
    res = []
    for ex in ("interp", "compiled"):
        m = seqgraph.Model(spec, dims={"V": 4, "K": 3}, dtype="float64", executor=ex, seed=0)
        for lengths in ({"t": np.array([3, 1, 2])}, None):
            rng = np.random.default_rng(5)
            res.append((m.run({"x": x}, {"yc": yc}, grads=True, train=True, rng=rng,
                              lengths=lengths), rng.random()))
    for (a, ra), (b, rb) in zip(res[:2], res[2:], strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-12) and ra == rb
        for p in a.grads:
            np.testing.assert_allclose(a.grads[p], b.grads[p], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("executor", ["interp", "compiled"])
def test_the_end_waits_even_beside_a_reader_whose_wait_would_close_a_cycle(executor):
    """Review 21: r reads z[end] while z reads r (z[v] <- r[v+1]): that wait cannot be
    added; it used to take every other wait (q's on g) away with it."""
    spec = seqgraph.read_spec("c.sg", """\
input x[t] : onehot(V)
input w[v] : onehot(V)
target yc : class(K)
param W, U, Wq, Wz, Uz, Q, Wr, Ur, Wp
g[t] : 3 = tanh(W @ x[t] + U @ g[t+1])
z[v] : 3 = tanh(Wz @ w[v] + Uz @ z[v+1] + Q @ r[v+1])
r[v] : 3 = tanh(Wr @ z[end] + Ur @ w[v])
q = Wq @ g[end] + Wp @ r[end]
loss xent(q, yc)
""")
    m = seqgraph.Model(spec, dims={"V": 4, "K": 3}, dtype="float64", executor=executor)
    x, w, yc = np.array([[1, 2, 3], [0, 1, 2]]), np.array([[1, 2], [3, 0]]), np.array([0, 2])
    full = m.run({"x": x, "w": w}, {"yc": yc}, grads=True, lengths={"t": np.array([3, 1])})
    one = m.run({"x": x[1:, :1], "w": w[1:]}, {"yc": yc[1:]}, grads=True)
    np.testing.assert_allclose(full.values["q"][1], one.values["q"][0], rtol=1e-12)


@pytest.mark.parametrize("executor", ["interp", "compiled"])
def test_an_end_whose_steps_read_its_reader_is_refused_when_padded(executor):
    """Review 23: v reads b[end] while b's steps read v: per example that is well defined
    (b's end first), but a padded batch cannot order it; a KeyError became this error.
    Unpadded, it runs."""
    spec = seqgraph.read_spec("c.sg", """\
input x[t] : vec(3)
target y[t] : vec(2)
param W, U, A, B, C, Wo
b[t] : 4 = tanh(W @ x[t] + U @ b[t+1] + C @ v[t+1])
v[t] : 4 = tanh(A @ x[t] + B @ b[end])
o[t] = Wo @ v[t]
loss mse(o[t], y[t])
""")
    m = seqgraph.Model(spec, dtype="float64", executor=executor)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 5, 3)), rng.normal(size=(3, 5, 2))
    with pytest.raises(seqgraph.UsageError, match=r"'b\[end\]' is read before all of b's "
                                                  r"steps exist"):
        m.run({"x": x}, {"y": y}, lengths={"t": np.array([5, 2, 3])})
    assert np.isfinite(m.run({"x": x}, {"y": y}).loss)
