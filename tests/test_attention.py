"""Attention as equations over two indexes (issue 11): variables e[u, t], reductions
`sum over t (...)`, `softmax over t (...)`, masking of padded steps, gradients, and the
same equations written in PyTorch."""
from pathlib import Path

import numpy as np
import pytest

import seqgraph
from seqgraph.gradcheck import gradcheck
from seqgraph.graph.printer import folded_text

from conftest import random_batch

SPECS = Path(__file__).resolve().parent.parent / "specs"
DIMS = {"Vx": 5, "Vy": 6}

# attention alone: the encoder states are given, the decoder is a plain recurrence
ADDITIVE = """
input  h[t] : vec(6)
target y[u] : class(4)
param va : [5]
param Wa, Ua, Wd, Cd, F, bd, Wo, bo
e[u, t] = va @ tanh(Wa @ s[u-1] + Ua @ h[t])
a[u, t] = softmax over t (e[u, t])
ctx[u]  = sum over t (a[u, t] * h[t])
s[u] : 5 = tanh(Wd @ s[u-1] + Cd @ ctx[u] + F @ y[u-1] + bd)
o[u] = Wo @ s[u] + bo
loss xent(o[u], y[u])
"""


def _model(text=ADDITIVE, seed=0):
    spec = seqgraph.read_spec("att.sg", text)
    return seqgraph.Model(spec, dims=DIMS, dtype="float64", seed=seed,
                          param_init=("normal", 0.5))


def _batch(B=3, T=4, U=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"h": rng.normal(size=(B, T, 6))}, {"y": rng.integers(0, 4, (B, U))}


def test_scores_are_numbers_and_weights_sum_to_one_over_t():
    m = _model()
    assert m.sizes["e"] == m.sizes["a"] == 1 and m.sizes["ctx"] == 6
    ins, tgs = _batch()
    a = m.run(ins, tgs).values["a"]
    assert a.shape == (3, 3, 4, 1)
    np.testing.assert_allclose(a.sum(axis=2), 1.0, rtol=1e-12)


def test_softmax_is_shown_as_written():
    """`softmax over t (E)` is three ops (graph/folded.softmax_over), printed as one."""
    m = seqgraph.Model(seqgraph.read_spec(str(SPECS / "attention.sg")), dims=DIMS)
    assert "a[u, t] : 1 = softmax over t (e[u, t])\n" in folded_text(m.checked)


def test_gradients_match_central_differences():
    assert all(c.ok for c in gradcheck(_model()))


@pytest.mark.parametrize("name", ["attention.sg", "luong.sg"])
def test_gallery_attention_gradients(name):
    spec = seqgraph.read_spec(str(SPECS / name))
    m = seqgraph.Model(spec, dims=DIMS, dtype="float64")
    checks = gradcheck(m)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_padded_encoder_steps_change_nothing():
    m = _model()
    ins, tgs = _batch(B=2, T=5)
    lengths = {"t": np.array([5, 2])}
    res = m.run(ins, tgs, grads=True, lengths=lengths)
    # the weights over an example's real steps sum to one, padded ones weigh 0
    np.testing.assert_allclose(res.values["a"][1, :, :2].sum(axis=1), 1.0, rtol=1e-12)
    assert (res.values["a"][1, :, 2:] == 0).all()
    one = m.run({"h": ins["h"][1:, :2]}, {"y": tgs["y"][1:]}, grads=True)
    np.testing.assert_allclose(res.values["ctx"][1], one.values["ctx"][0], rtol=1e-12)
    ins["h"][1, 2:] = 100.0                          # padding values do not matter
    again = m.run(ins, tgs, grads=True, lengths=lengths)
    assert again.loss == res.loss
    for p in res.grads:
        np.testing.assert_array_equal(again.grads[p], res.grads[p])


def _shared_score(score, executor):
    """ADDITIVE with a[u, t] = softmax over t (score), score one value for the batch."""
    text = ADDITIVE.replace("va @ tanh(Wa @ s[u-1] + Ua @ h[t])",
                            f"{score} + 0 * (va @ tanh(Wa @ s[u-1] + Ua @ h[t]))")
    text = text.replace("a[u, t] = softmax over t (e[u, t])",
                        f"a[u, t] = softmax over t ({score})")
    return seqgraph.Model(seqgraph.read_spec("att.sg", text), dims=DIMS, dtype="float64",
                          seed=0, executor=executor)


@pytest.mark.parametrize("score", ["1", "va @ va"])
@pytest.mark.parametrize("executor", ["interp", "compiled"])
def test_a_softmax_of_a_value_every_example_shares(score, executor):
    """softmax over t of a number or of parameters alone (one value for the whole batch,
    not [B, n]) weighs each real step 1/n and a padded one 0, in an unpadded batch and
    then a padded one of the same length. The compiled softmax, op by op, kept its
    value's buffer by the lengths alone, shaped by the unpadded run (no step of t), and
    the padded run's value did not fit it. The interpreter's reductions stacked every step
    in the first one's shape (an IndexError unpadded, where every step is a number, a
    broadcast error padded, where a padded step is [B, 1]), which the compiled model's
    hoisted `va @ va` met too; a value over [u, t] is given [B, U, T, n] (it was [1, ...]
    unpadded)."""
    m = _shared_score(score, executor)
    ins, tgs = _batch(B=3, T=5)
    for lengths in (None, {"t": np.array([5, 2, 4])}):
        res = m.run(ins, tgs, grads=True, lengths=lengths)
        n = [5, 5, 5] if lengths is None else lengths["t"]
        want = np.zeros((3, 3, 5, 1))
        for b, k in enumerate(n):
            want[b, :, :k] = 1 / k
        np.testing.assert_allclose(res.values["a"], want, rtol=1e-12)
        assert np.isfinite(res.loss) and all(np.isfinite(g).all() for g in res.grads.values())


def test_reductions_sum_max_mean():
    text = """
input  h[t] : vec(3)
target y : vec(3)
s = sum over t (h[t])
m = max over t (h[t])
a = mean over t (h[t])
param W
o = W @ [s; m; a]
loss mse(o, y)
"""
    m = seqgraph.Model(seqgraph.read_spec("r.sg", text), dtype="float64")
    h = np.random.default_rng(0).normal(size=(2, 4, 3))
    v = m.run({"h": h}, {"y": np.zeros((2, 3))}).values
    np.testing.assert_allclose(v["s"], h.sum(axis=1))
    np.testing.assert_allclose(v["m"], h.max(axis=1))
    np.testing.assert_allclose(v["a"], h.mean(axis=1))
    v = m.run({"h": h}, {"y": np.zeros((2, 3))}, lengths={"t": np.array([4, 2])}).values
    np.testing.assert_allclose(v["a"][1], h[1, :2].mean(axis=0))
    np.testing.assert_allclose(v["m"][1], h[1, :2].max(axis=0))


@pytest.mark.parametrize("bad, fragment", [
    ("c[u] = sum over q (h[t])", "'q' is not a sequence index"),
    ("c[u] = median over t (h[t])", "unknown reduction 'median'"),
    ("c[u] = softmax over t (h[t])", "softmax over t gives one weight per step"),
    ("c[u] = sum over t (e[u-1, t])", "read at the current steps only"),
    ("c[u] = h[t]", "'h' runs over 't' and this equation over 'u'"),
])
def test_errors(bad, fragment):
    text = ("input  h[t] : vec(3)\ntarget y[u] : vec(3)\nparam va : [3]\n"
            "e[u, t] = va @ h[t]\n" + bad + "\n")
    with pytest.raises(seqgraph.SpecError, match=fragment.replace("[", r"\[")
                       .replace("(", r"\(")):
        seqgraph.read_spec("bad.sg", text)


def test_same_equations_in_pytorch():
    torch = pytest.importorskip("torch")
    m = _model(seed=3)
    ins, tgs = _batch(B=2, T=4, U=3, seed=4)
    res = m.run(ins, tgs, grads=True)
    P = {k: torch.tensor(v, requires_grad=True) for k, v in m.params.items()}
    h = torch.tensor(ins["h"])
    y = torch.tensor(tgs["y"])
    B, U = y.shape
    s = torch.zeros(B, 5, dtype=torch.float64)
    prev = torch.zeros(B, 4, dtype=torch.float64)          # y[0]: no start token
    loss = 0
    for u in range(U):
        e = torch.tanh((s @ P["Wa"].T)[:, None, :] + torch.einsum("btd,kd->btk", h, P["Ua"]))
        score = e @ P["va"]                                  # [B, T]
        a = torch.softmax(score, dim=1)
        ctx = (a[:, :, None] * h).sum(dim=1)
        s = torch.tanh(s @ P["Wd"].T + ctx @ P["Cd"].T + prev @ P["F"].T + P["bd"])
        o = s @ P["Wo"].T + P["bo"]
        loss = loss + torch.nn.functional.cross_entropy(o, y[:, u], reduction="sum") / B
        prev = torch.nn.functional.one_hot(y[:, u], 4).double()
    loss.backward()
    assert res.loss == pytest.approx(loss.item(), rel=1e-12)
    for k, v in P.items():
        np.testing.assert_allclose(res.grads[k], v.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_a_dropout_read_twice_at_one_step_is_one_mask():
    """`softmax over t (dropout(e[u, t], p))` reads the dropped value twice (in exp and in
    the logsumexp it is written as): one mask per (u, t), so the weights still sum to 1
    over t while training."""
    text = (SPECS / "attention.sg").read_text().replace(
        "a[u, t] = softmax over t (e[u, t])", "a[u, t] = softmax over t (dropout(e[u, t], 0.5))")
    m = seqgraph.Model(seqgraph.read_spec("d.sg", text), dims={"Vx": 5, "Vy": 6},
                       executor="interp", seed=1)
    ins, tgs = random_batch(m, np.random.default_rng(0), B=3, lengths={"t": 4, "u": 3})
    res = m.run(ins, tgs, train=True, grads=True, rng=np.random.default_rng(2))
    a = np.asarray(res.values["a"])
    assert np.allclose(a.sum(axis=2), 1.0)
    plain = m.run(ins, tgs).values["a"]
    assert not np.allclose(a, plain)                       # the masks did something


# ------------------------------------------------------------- the unfolded DAG's size
def _edges(spec, n):
    from seqgraph.graph.unfold import unfold
    return unfold(spec.graph, {"t": n, "u": n}).number_of_edges()


@pytest.mark.parametrize("name", ["attention.sg", "luong.sg"])
def test_the_unfolded_dag_of_attention_grows_as_u_times_t(name):
    """a[u, t] = softmax over t (e[u, t]) reads every e[u, t'] (through the logsumexp it
    is written as): joined directly, U x T^2 edges (T = U = 300: 27 million, 12 GB and
    two minutes on the interpreter). One node per (reduction, u) reads e[u, t'] for every
    t' and is read by every a[u, t]: twice the steps, four times the edges, not eight."""
    spec = seqgraph.read_spec(str(SPECS / name))
    small, large = _edges(spec, 20), _edges(spec, 40)
    assert large < 4.3 * small


def test_a_reductions_node_is_read_by_every_step_and_reads_every_step():
    from seqgraph.graph.unfold import Reduced, direct, unfold
    spec = seqgraph.read_spec(str(SPECS / "attention.sg"))
    dag = unfold(spec.graph, {"t": 4, "u": 3})
    hubs = [n for n in dag if isinstance(n[0], Reduced)]
    assert sorted(n[1] for n in hubs) == [0, 1, 2]          # one per step of u
    for hub in hubs:
        assert hub[0].label == "logsumexp over t"
        assert {p for p in dag.predecessors(hub)} == {("e", (hub[1], t)) for t in range(4)}
        assert set(dag.successors(hub)) == {("a", (hub[1], t)) for t in range(4)}
    # joined directly again (for a text of a few steps): a[u, t] reads every e[u, t']
    flat = direct(dag)
    assert not any(isinstance(n[0], Reduced) for n in flat)
    assert set(flat.predecessors(("a", (1, 2)))) == {("e", (1, t)) for t in range(4)}


@pytest.mark.parametrize("name", ["specs/attention.sg", "specs/luong.sg",
                                  "examples/g2p/attention.sg"])
def test_reductions_nodes_change_no_number(name, monkeypatch):
    """The interpreter runs a schedule of the unfolded DAG: with a reduction's node, its
    readers come exactly where they came reading e[u, t'] directly, so the schedule, the
    loss and the gradients (padding, scheduled sampling) are the same to the bit."""
    from seqgraph import model as model_mod
    from seqgraph.graph.unfold import direct, unfold
    spec = seqgraph.read_spec(str(SPECS.parent / name))

    def run():
        m = seqgraph.Model(spec, dims={"Vx": 7, "Vy": 6}, dtype="float64", seed=1)
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 7, (3, 6)), rng.integers(0, 6, (3, 5))
        lengths = {"t": np.array([6, 4, 1]), "u": np.array([5, 2, 4])}
        res = m.run({"x": x}, {"y": y}, grads=True, lengths=lengths, train=True,
                    teacher=0.5, rng=np.random.default_rng(5))
        return m.schedule({"t": 6, "u": 5}), res
    schedule, res = run()
    monkeypatch.setattr(model_mod, "unfold", lambda *a: direct(unfold(*a)))
    schedule_direct, res_direct = run()
    assert schedule == schedule_direct
    assert res.loss == res_direct.loss
    for p in res.grads:
        np.testing.assert_array_equal(res.grads[p], res_direct.grads[p])
