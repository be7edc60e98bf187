"""seqgraph against PyTorch on copied weights, in float64: elman.sg against nn.RNN +
nn.Linear + cross-entropy, and the prelude's cells (rnn, lstm, gru; plain, bi, stacked)
against nn.RNN / nn.LSTM / nn.GRU: forward outputs, the loss and every gradient.
Weights move with seqgraph.interop (docs/interop.md)."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import seqgraph
from seqgraph import interop

from conftest import SPECS

B, T = 2, 4
TOL = dict(rtol=1e-10, atol=1e-12)


def _dense(ids, V):
    X = np.zeros(ids.shape + (V,))
    ok = ids >= 0
    X[ok, ids[ok]] = 1
    return torch.tensor(X, dtype=torch.float64)


def _torch_grads(module):
    return {n: p.grad.detach().numpy() for n, p in module.named_parameters()}


def _compare_grads(sg, module, prefix, rename=None):
    want = _torch_grads(module)
    got = interop.grads_to_torch(sg, module, prefix, rename)
    assert set(got) == set(want), (sorted(got), sorted(want))
    for n in want:
        np.testing.assert_allclose(got[n], want[n], err_msg=n, **TOL)


# ------------------------------------------------------------------------ elman.sg
def test_elman_vs_torch_rnn_linear_xent():
    V = 5
    torch.manual_seed(0)
    m = seqgraph.load(str(SPECS / "elman.sg"), dims={"V": V}, dtype="float64")
    H = m.sizes["h"]
    rnn = torch.nn.RNN(V, H, batch_first=True).double()
    lin = torch.nn.Linear(H, V).double()
    interop.from_torch(rnn, m, "")
    interop.from_torch(lin, m, ("Wo", "bo"))

    rng = np.random.default_rng(0)
    x = rng.integers(0, V, size=(B, T))
    y = rng.integers(0, V, size=(B, T))
    res = m.run({"x": x}, {"y": y}, grads=True)

    h, _ = rnn(_dense(x, V))
    o = lin(h)
    loss = torch.nn.functional.cross_entropy(o.reshape(-1, V), torch.tensor(y).reshape(-1),
                                             reduction="sum") / B
    loss.backward()
    np.testing.assert_allclose(res.values["h"], h.detach().numpy(), **TOL)
    np.testing.assert_allclose(res.values["o"], o.detach().numpy(), **TOL)
    assert res.loss == pytest.approx(loss.item(), rel=1e-12)
    _compare_grads(res.grads, rnn, "")
    _compare_grads(res.grads, lin, ("Wo", "bo"))


def test_bidirectional_equations_vs_torch_with_rename():
    """bidirectional.sg, written out with names of its own, against a bidirectional
    nn.RNN + nn.Linear: `rename` maps the generated names to the spec's."""
    V, K = 5, 3
    torch.manual_seed(1)
    m = seqgraph.load(str(SPECS / "bidirectional.sg"), dims={"V": V, "K": K},
                      dtype="float64")
    H = m.sizes["h"]
    rename = {"fwd.W": "Wh", "fwd.U": "Uh", "fwd.b": "bh",
              "bwd.W": "Wg", "bwd.U": "Ug", "bwd.b": "bg"}
    rnn = torch.nn.RNN(V, H, bidirectional=True, batch_first=True).double()
    lin = torch.nn.Linear(2 * H, K).double()
    interop.from_torch(rnn, m, "", rename)
    interop.from_torch(lin, m, ("Wo", "bo"))
    rng = np.random.default_rng(3)
    x = rng.integers(0, V, size=(B, T))
    y = rng.integers(0, K, size=(B, T))
    res = m.run({"x": x}, {"y": y}, grads=True)
    hg, _ = rnn(_dense(x, V))
    o = lin(hg)
    loss = torch.nn.functional.cross_entropy(o.reshape(-1, K), torch.tensor(y).reshape(-1),
                                             reduction="sum") / B
    loss.backward()
    np.testing.assert_allclose(res.values["h"], hg[..., :H].detach().numpy(), **TOL)
    np.testing.assert_allclose(res.values["g"], hg[..., H:].detach().numpy(), **TOL)
    assert res.loss == pytest.approx(loss.item(), rel=1e-12)
    _compare_grads(res.grads, rnn, "", rename)
    _compare_grads(res.grads, lin, ("Wo", "bo"))


# ------------------------------------------------------------- the prelude's cells
TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
H, D, V = 4, 3, 5
SHAPES = {"plain": (1, False), "bi": (1, True), "stack2": (2, False), "bi_stack2": (2, True)}


def _spec(cell, shape, onehot, tmp_path):
    layers, bi = SHAPES[shape]
    out = 2 * H if bi else H
    if shape == "plain":
        uses, prefix = [f"h = {cell}(x, H)"], "h"
    elif shape == "bi":
        uses, prefix = [f"h = bi {cell}(x, H)"], "h"
    elif shape == "stack2":
        uses, prefix = [f"h = stack(2) {cell}(x, H)"], "h"
    else:   # two bidirectional layers, the second reading both directions of the first
        uses, prefix = [f"h1 = bi {cell}(x, H)", f"h = bi {cell}(h1, H)"], ["h1", "h"]
    text = "\n".join([f"# {cell} {shape} against torch", f"model {cell}_{shape}",
                      f"dim H = {H}",
                      f"input x[t] : {'onehot(V)' if onehot else f'vec({D})'}",
                      f"target y[t] : vec({out})", *uses, "loss mse(h[t], y[t])", ""])
    path = tmp_path / f"{cell}_{shape}.sg"
    path.write_text(text)
    m = seqgraph.Model(seqgraph.read_spec(str(path)), dims={"V": V}, dtype="float64")
    module = TORCH[cell](V if onehot else D, H, num_layers=layers, bidirectional=bi,
                         batch_first=True).double()
    return m, module, prefix, out


def _run_both(m, module, x, xt, y):
    res = m.run({"x": x}, {"y": y}, grads=True)
    module.zero_grad()
    out, _ = module(xt)
    loss = 0.5 * ((out - torch.tensor(y)) ** 2).sum() / B
    loss.backward()
    return res, out.detach().numpy(), loss.item()


@pytest.mark.parametrize("onehot", [True, False], ids=["onehot", "vec"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("cell", list(TORCH))
def test_cell_vs_torch(cell, shape, onehot, tmp_path):
    torch.manual_seed(zlib.crc32(f"{cell}-{shape}".encode()))
    m, module, prefix, out = _spec(cell, shape, onehot, tmp_path)
    rng = np.random.default_rng(1)
    if onehot:
        x = rng.integers(0, V, size=(B, T))
        xt = _dense(x, V)
    else:
        x = rng.normal(size=(B, T, D))
        xt = torch.tensor(x)
    y = rng.normal(size=(B, T, out))

    # torch -> seqgraph: torch's own random init, both biases non-zero
    written = interop.from_torch(module, m, prefix)
    assert set(written) == set(m.params), set(m.params) ^ set(written)
    res, want, loss = _run_both(m, module, x, xt, y)
    np.testing.assert_allclose(res.values["h"], want, **TOL)
    assert res.loss == pytest.approx(loss, rel=1e-12)
    _compare_grads(res.grads, module, prefix)

    # seqgraph -> torch: new weights, each summed bias split as (b, 0)
    for p, w in m.params.items():
        m.params[p] = rng.normal(scale=0.5, size=w.shape)
    interop.to_torch(m, module, prefix)
    for n, t in module.named_parameters():
        if n.startswith("bias_hh"):
            hh = t.detach().numpy()
            if cell == "gru":    # b_hn stays apart: the n chunk is the model's b_hn
                assert not hh[:2 * H].any() and hh[2 * H:].any()
            else:
                assert not hh.any()
    res, want, loss = _run_both(m, module, x, xt, y)
    np.testing.assert_allclose(res.values["h"], want, **TOL)
    assert res.loss == pytest.approx(loss, rel=1e-12)
    _compare_grads(res.grads, module, prefix)


# -------------------------------------------------------------- interop's edges
def test_round_trip_and_names(tmp_path):
    m, module, prefix, _ = _spec("gru", "bi_stack2", False, tmp_path)
    names = {e.torch_name: e.name for e in interop.mapping(module, prefix) if e.chunk == 2}
    assert names["weight_ih_l0_reverse"] == "h1.bwd.Wn"
    assert names["bias_hh_l1"] == "h.fwd.b_hn"
    assert names["bias_ih_l1"] == "h.fwd.b_n"
    m2, module2, _, _ = _spec("gru", "bi_stack2", False, tmp_path)
    interop.from_torch(module, m, prefix)
    interop.to_torch(m, module2, prefix)
    interop.from_torch(module2, m2, prefix)
    for p in m.params:
        np.testing.assert_allclose(m2.params[p], m.params[p], rtol=1e-15, atol=1e-15)

    lstm = torch.nn.LSTM(D, H, num_layers=2)
    got = {e.torch_name + f"[{e.chunk}]": e.name for e in interop.mapping(lstm, "d")}
    assert got["weight_ih_l0[0]"] == "d.1.Wi" and got["weight_hh_l1[2]"] == "d.2.Ug"
    assert got["bias_ih_l1[3]"] == "d.2.b_o"


def test_errors(tmp_path):
    m, module, _, _ = _spec("lstm", "plain", False, tmp_path)
    with pytest.raises(KeyError, match="no parameter 'enc.Wi'"):
        interop.from_torch(module, m, "enc")
    with pytest.raises(KeyError):
        interop.from_torch(torch.nn.GRU(D, H).double(), m, "h")
    m, _, _, _ = _spec("rnn", "plain", False, tmp_path)
    with pytest.raises(ValueError, match="nonlinearity='relu'"):
        interop.from_torch(torch.nn.RNN(D, H, nonlinearity="relu"), m, "h")
    with pytest.raises(TypeError):
        interop.from_torch(torch.nn.Conv1d(1, 1, 1), m, "h")


def test_no_bias_module_and_embedding(tmp_path):
    path = tmp_path / "emb.sg"
    path.write_text("# embed then gru\nmodel emb\ndim H = 4\ndim E = 3\n"
                    "input x[t] : onehot(V)\ntarget y[t] : vec(4)\n"
                    "e = embed(x, E)\nh = gru(e, H)\nloss mse(h[t], y[t])\n")
    m = seqgraph.Model(seqgraph.read_spec(str(path)), dims={"V": V}, dtype="float64")
    emb = torch.nn.Embedding(V, 3).double()
    gru = torch.nn.GRU(3, H, bias=False, batch_first=True).double()
    interop.from_torch(emb, m, "e.E")
    interop.from_torch(gru, m, "h")
    assert not m.params["h.b_hn"].any() and not m.params["h.b_r"].any()
    rng = np.random.default_rng(2)
    x = rng.integers(0, V, size=(B, T))
    y = rng.normal(size=(B, T, H))
    res = m.run({"x": x}, {"y": y}, grads=True)
    out, _ = gru(emb(torch.tensor(x)))
    loss = 0.5 * ((out - torch.tensor(y)) ** 2).sum() / B
    loss.backward()
    np.testing.assert_allclose(res.values["h"], out.detach().numpy(), **TOL)
    _compare_grads(res.grads, emb, "e.E")
    _compare_grads(res.grads, gru, "h")
    m.params["h.b_z"][:] = 1.0
    with pytest.raises(ValueError, match="no biases"):
        interop.to_torch(m, gru, "h")
    # a bias-free Linear given a bias name zeroes it, as a bias-free RNN does (review 32)
    spec = seqgraph.read_spec(str(SPECS / "elman.sg"))
    lm = seqgraph.Model(spec, dims={"V": V}, dtype="float64")
    lm.params["bo"][:] = 1.0
    out_layer = torch.nn.Linear(16, V, bias=False).double()
    interop.from_torch(out_layer, lm, ("Wo", "bo"))
    assert not lm.params["bo"].any()
    np.testing.assert_array_equal(lm.params["Wo"], out_layer.weight.detach().numpy())
    lm.params["bo"][:] = 1.0
    with pytest.raises(ValueError, match="no biases but 'bo' is not zero"):
        interop.to_torch(lm, out_layer, ("Wo", "bo"))
