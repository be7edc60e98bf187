"""`seqgraph jacobian`: exact Jacobians of recurrent states across time."""
import json

import numpy as np
import pytest

from seqgraph.cli import main
from seqgraph.gradcheck import random_batch
from seqgraph.jacobian import jacobians, measure, recurrent_states
from seqgraph.model import Model, read_spec

LINEAR = """
input  x[t] : vec(3)
target y[t] : vec(4)
param U : [4, 4]
param W
h[t] : 4 = U @ h[t-1] + W @ x[t]
loss mse(h[t], y[t])
"""

TANH = """
input  x[t] : onehot(V)
target y[t] : class(V)
param W, b, Wo, bo
param U init normal(0.4)
h[t] : 5 = tanh(W @ x[t] + U @ h[t-1] + b)
o[t] = Wo @ h[t] + bo
loss xent(o[t], y[t])
"""


def _model(tmp_path, text, name="m.sg", dims=None):
    path = tmp_path / name
    path.write_text(text)
    return path, Model(read_spec(str(path)), dims=dims or {}, dtype="float64", seed=0)


def test_linear_recurrence_is_powers_of_U(tmp_path):
    _, m = _model(tmp_path, LINEAR)
    states = recurrent_states(m)
    assert [s.name for s in states] == ["h"]
    assert states[0].bound_matrix == "U" and states[0].nonlinearity == "linear"
    rng = np.random.default_rng(1)
    inputs, targets, lengths, _ = random_batch(m, rng, B=3, T=6)
    reps = measure(m, inputs, targets, lengths)
    U = m.params["U"]
    # the matrices themselves: dh_t/dh_k = U^(t-k), for every example
    for (t, k), J in jacobians(m, states[0]):
        for b in range(3):
            np.testing.assert_allclose(J[b], np.linalg.matrix_power(U, t - k),
                                       rtol=1e-12, atol=1e-14)
    (rep,) = reps
    assert [d["distance"] for d in rep.distances] == [1, 2, 3, 4, 5]
    for d in rep.distances:
        want = np.linalg.norm(np.linalg.matrix_power(U, d["distance"]), 2)
        assert d["pairs"] == 6 - d["distance"] and d["samples"] == 3 * d["pairs"]
        for key in ("mean", "min", "max"):
            assert d["spectral"][key] == pytest.approx(want, rel=1e-12)
        assert d["spectral"]["std"] < 1e-12 * want
        assert d["spectral"]["mean"] <= rep.bound(d["distance"]) * (1 + 1e-12)
    assert rep.beta_w == pytest.approx(np.linalg.norm(U, 2))
    radius = rep.matrices[0]["spectral_radius"]
    assert radius == pytest.approx(max(abs(np.linalg.eigvals(U))))


def _h_from(m, x, k, hk):
    """h at steps k+1.. of every example, starting from h_k = hk (through the carry)."""
    return m.run({"x": x[:, k + 1:]}, carry={"h": [hk]}).values["h"]


@pytest.mark.parametrize("dist", [1, 2])
def test_tanh_jacobian_matches_finite_differences(tmp_path, dist):
    _, m = _model(tmp_path, TANH, dims={"V": 7})
    (st,) = recurrent_states(m)
    assert st.bound_matrix == "U" and st.beta_h == 1.0
    rng = np.random.default_rng(3)
    B, T = 3, 5
    x = rng.integers(0, 7, (B, T))
    res = m.run({"x": x})
    h = res.values["h"]
    reps = measure(m, {"x": x})
    exact = {tk: J for tk, J in jacobians(m, st)}
    eps, n = 1e-6, 5
    norms = []
    for t in range(dist, T):
        k = t - dist
        num = np.zeros((B, n, n))
        for j in range(n):
            e = np.zeros(n)
            e[j] = eps
            up = _h_from(m, x, k, h[:, k] + e)[:, t - k - 1]
            down = _h_from(m, x, k, h[:, k] - e)[:, t - k - 1]
            num[:, :, j] = (up - down) / (2 * eps)
        np.testing.assert_allclose(exact[(t, k)], num, rtol=1e-6, atol=1e-9)
        norms.extend(np.linalg.norm(num[b], 2) for b in range(B))
    d = reps[0].distances[dist - 1]
    assert d["distance"] == dist
    assert d["spectral"]["mean"] == pytest.approx(np.mean(norms), rel=1e-6)
    assert d["spectral"]["max"] == pytest.approx(np.max(norms), rel=1e-6)
    assert d["spectral"]["mean"] <= reps[0].bound(dist)


def test_lstm_states_and_no_bound(tmp_path):
    text = """
input  x[t] : onehot(V)
target y[t] : class(V)
param Wy, by
h = lstm(x, 4)
z[t] = Wy @ h[t] + by
loss xent(z[t], y[t])
"""
    _, m = _model(tmp_path, text, dims={"V": 5})
    states = {s.name: s for s in recurrent_states(m)}
    assert set(states) == {"h", "h.c"}
    assert states["h"].matrices == ["h.Ui", "h.Uf", "h.Uo", "h.Ug"]
    assert states["h.c"].matrices == [] and states["h"].bound_matrix is None
    rng = np.random.default_rng(0)
    inputs, targets, lengths, _ = random_batch(m, rng, B=2, T=4)
    reps = measure(m, inputs, targets, lengths)
    for r in reps:
        assert r.bound(1) is None and len(r.distances) == 3
        assert all(d["spectral"]["mean"] > 0 for d in r.distances)


def test_cli_writes_png_and_json(tmp_path, capsys):
    spec, _ = _model(tmp_path, TANH, dims={"V": 7})
    png = tmp_path / "j.png"
    assert main(["jacobian", str(spec), "--dim", "V=7", "--steps", "5", "--batch", "2",
                 "-o", str(png), "--json"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 5 and out["batch"] == 2 and out["plot"] == str(png)
    (h,) = out["states"]
    assert h["name"] == "h" and h["size"] == 5 and h["direction"] == "forward"
    assert h["recurrent_matrices"][0]["name"] == "U"
    assert {"spectral_norm", "spectral_radius"} <= set(h["recurrent_matrices"][0])
    assert h["bound"]["beta_h"] == 1.0 and len(h["bound"]["values"]) == 4
    assert [d["distance"] for d in h["distances"]] == [1, 2, 3, 4]
    for d in h["distances"]:
        for norm in ("spectral", "frobenius"):
            assert set(d[norm]) == {"mean", "std", "min", "max"}
    # the text report, and a checkpoint's parameters replacing the initialisation
    ckpt = tmp_path / "c.npz"
    np.savez(ckpt, U=np.zeros((5, 5)), __meta__=np.array("{}"))
    assert main(["jacobian", str(spec), "--dim", "V=7", "--steps", "3",
                 "--checkpoint", str(ckpt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (h,) = out["states"]
    assert h["recurrent_matrices"][0]["spectral_norm"] == 0.0
    assert all(d["spectral"]["max"] == 0.0 for d in h["distances"])
    assert main(["jacobian", str(spec), "--dim", "V=7", "--steps", "3"]) == 0
    assert "state h" in capsys.readouterr().out


def test_cli_bad_checkpoint_is_a_usage_error(tmp_path, capsys):
    spec, _ = _model(tmp_path, TANH, dims={"V": 7})
    ckpt = tmp_path / "c.npz"
    np.savez(ckpt, U=np.zeros((3, 3)))
    assert main(["jacobian", str(spec), "--dim", "V=7", "--checkpoint", str(ckpt)]) == 2
    assert "shape" in capsys.readouterr().err
