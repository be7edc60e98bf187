"""`seqgraph jacobian`: exact Jacobians of recurrent states across time."""
import json

import numpy as np
import pytest

from seqgraph.cli import main
from seqgraph.gradcheck import random_batch
from seqgraph.jacobian import jacobians, measure, recurrent_states
from seqgraph.model import Model, read_spec

from conftest import ELMAN, TINY_LM

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


def test_why_there_is_no_state_or_no_textbook_bound_is_said_rightly(tmp_path, capsys):
    """Walk 14: a Jordan net (Fig. 10.4: y[t-1] read back) was said to read nothing with
    a delay; h reading h[t-1] and h[t-2] was said to read other variables."""
    jordan = tmp_path / "jordan.sg"
    jordan.write_text("dim H = 4\ninput x[t] : onehot(V)\ntarget y[t] : class(K)\n"
                      "param W, R, b, Wo, bo\nh[t] : H = tanh(W @ x[t] + R @ y[t-1] + b)\n"
                      "o[t] = Wo @ h[t] + bo\nloss xent(o[t], y[t])\n")
    assert main(["jacobian", str(jordan), "--dim", "V=5", "--dim", "K=3", "--steps", "3",
                 "--batch", "2"]) == 0
    assert "no recurrent state (no hidden variable read with a delay; the target y read " \
           "back is data under teacher forcing, not a state)" in capsys.readouterr().err
    two = tmp_path / "two.sg"
    two.write_text(TANH.replace("U @ h[t-1]", "U @ h[t-1] + U2 @ h[t-2]").replace(
        "param W,", "param U2, W,"))
    assert main(["jacobian", str(two), "--dim", "V=7", "--steps", "3", "--batch", "2"]) == 0
    assert "'h' is not of the form f(U @ h[t-1] + ...): it reads h at 2 places (t-1, t-2)" \
        in capsys.readouterr().out


def test_cli_bad_checkpoint_is_a_usage_error(tmp_path, capsys):
    spec, _ = _model(tmp_path, TANH, dims={"V": 7})
    ckpt = tmp_path / "c.npz"
    np.savez(ckpt, U=np.zeros((3, 3)))
    assert main(["jacobian", str(spec), "--dim", "V=7", "--checkpoint", str(ckpt)]) == 2
    assert "shape" in capsys.readouterr().err


def test_a_damaged_checkpoint_is_said_as_eval_says_it(tmp_path, capsys):
    """A member in a compression method zipfile cannot read: eval says 'not a readable
    checkpoint'; jacobian's probe raised NotImplementedError (review 31)."""
    import struct
    spec, _ = _model(tmp_path, TANH, dims={"V": 7})
    good = tmp_path / "c.npz"
    np.savez(good, U=np.zeros((3, 3)), __meta__=np.array('{"format": "x"}'))
    data = bytearray(good.read_bytes())
    for sig, method_at, name_len_at, head in ((b"PK\x03\x04", 8, 26, 30),
                                              (b"PK\x01\x02", 10, 28, 46)):
        i = data.find(sig)
        while i != -1:
            n = struct.unpack("<H", data[i + name_len_at:i + name_len_at + 2])[0]
            if data[i + head:i + head + n] == b"__meta__.npy":
                data[i + method_at:i + method_at + 2] = struct.pack("<H", 99)
            i = data.find(sig, i + 4)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    assert main(["jacobian", str(spec), "--dim", "V=7", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.npz: not a readable checkpoint" in err and "Traceback" not in err, err


@pytest.mark.parametrize("command", ["jacobian", "render"])
def test_a_plain_npz_with_a_damaged_member_is_a_usage_error(tmp_path, capsys, command):
    """A plain .npz of parameters (no __meta__) whose array cannot be read, an object
    array or a bad CRC, raised ValueError or BadZipFile from `z[key]`: a traceback
    (review 39), for jacobian and render --overlay jacobian alike."""
    spec, _ = _model(tmp_path, TANH, dims={"V": 7})
    objects = tmp_path / "objects.npz"
    np.savez(objects, U=np.array([{"a": 1}], dtype=object))
    crc = tmp_path / "crc.npz"
    np.savez(crc, U=np.zeros((5, 5)))
    data = bytearray(crc.read_bytes())
    data[data.find(b"\x93NUMPY") + 150] ^= 0xFF        # inside U's numbers
    crc.write_bytes(bytes(data))
    extra = ["--unfold", "3", "--overlay", "jacobian", "-o", str(tmp_path / "o.dot")] \
        if command == "render" else ["--steps", "3"]
    for bad, why in ((objects, "Object arrays cannot be loaded"), (crc, "Bad CRC-32")):
        assert main([command, str(spec), "--dim", "V=7", "--checkpoint", str(bad),
                     *extra]) == 2
        err = capsys.readouterr().err
        assert f"{bad}: cannot read the checkpoint (" in err and why in err, err


# ------------------------------------------------------------------ real data, checkpoints
LM = TINY_LM
TEXT = "in the beginning god created the heaven and the earth.\n" * 20


@pytest.fixture
def lm(tmp_path, monkeypatch):
    """A tiny character LM with a train block, and two checkpoints of `seqgraph train`:
    the initialisation (0 steps) and after 20 updates."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.txt").write_text(TEXT)
    spec = tmp_path / "lm.sg"
    spec.write_text(LM)
    for name, steps in (("init", "0"), ("trained", "20")):
        assert main(["train", str(spec), "--steps", steps, "--quiet", "--executor",
                     "interp", "--out", str(tmp_path / name)]) == 0
    return spec


def _json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_train_block_data_is_the_default_batch(lm, capsys):
    out = _json(capsys, ["jacobian", str(lm), "--steps", "5", "--batch", "3", "--json"])
    assert "tiny.txt" in out["data"] and "3 windows of 5 tokens" in out["data"]
    assert out["dims"]["V"] == len(set(TEXT))        # bound by the text's vocabulary
    rand = _json(capsys, ["jacobian", str(lm), "--steps", "5", "--dim", "V=9",
                          "--random", "--json"])
    assert rand["data"].startswith("4 random sequences") and rand["dims"]["V"] == 9


def test_data_loader_call_and_checkpoint_vocabulary(lm, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text("the earth and the heaven\n" * 5)
    # without a checkpoint the vocabulary is the text's own
    out = _json(capsys, ["jacobian", str(lm), "--data", f'chars("{other}")',
                         "--steps", "4", "--json"])
    assert "other.txt" in out["data"] and out["dims"]["V"] == len(set(other.read_text()))
    # with one, the checkpoint's vocabulary and dims (the text is encoded with them)
    out = _json(capsys, ["jacobian", str(lm), "--data", str(other), "--checkpoint",
                         str(tmp_path / "trained"), "--steps", "4", "--json"])
    assert out["dims"]["V"] == len(set(TEXT)) and out["label"] == "trained (step 20)"
    # a character outside the checkpoint's vocabulary is a data error, not a traceback
    bad = tmp_path / "bad.txt"
    bad.write_text("xyz QQQ\n" * 5)
    assert main(["jacobian", str(lm), "--data", str(bad), "--checkpoint",
                 str(tmp_path / "trained")]) == 2
    assert "vocabulary" in capsys.readouterr().err


# the Elman net as a tagger: its own tags K
TAGGER = "model tagger\ndim H = 5\n" + ELMAN.replace("class(V)", "class(K)") + """\
train {
  data  = tagged("tags.txt")
  batch = 2
}
"""


def test_example_data_is_measured_on_examples_cut_to_the_steps(tmp_path, capsys,
                                                                monkeypatch):
    """Walk 10: a tagger's or a classifier's data was refused ("jacobian reads a token
    stream"); now B examples of T steps or more, cut to T (no padding to mix in)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tags.txt").write_text("a/D b/N c/V d/N\nb/N c/V\nd/N a/D b/N c/V a/D\n")
    (tmp_path / "tagger.sg").write_text(TAGGER)
    out = _json(capsys, ["jacobian", "tagger.sg", "--steps", "4", "--batch", "3", "--json"])
    assert out["data"] == "2 examples of tagged('tags.txt'), cut to 4 steps"
    (h,) = out["states"]
    assert [d["distance"] for d in h["distances"]] == [1, 2, 3]
    assert h["distances"][0]["samples"] == 2 * 3              # 2 examples, 3 pairs
    assert main(["jacobian", "tagger.sg", "--steps", "6"]) == 2
    assert "tagged('tags.txt'): no example has 6 steps in each of its sequences (the most " \
        "is 5): give --steps 5 or fewer" in capsys.readouterr().err
    # without --steps: 20, or the longest example's steps (walk 13: the default failed)
    out = _json(capsys, ["jacobian", "tagger.sg", "--json"])
    assert out["steps"] == 5 and out["data"].endswith("cut to 5 steps"), out["data"]
    # a trained tagger, and another model's checkpoint said as such before any data
    assert main(["train", "tagger.sg", "--steps", "2", "--quiet", "--out", "run"]) == 0
    out = _json(capsys, ["jacobian", "tagger.sg", "--checkpoint", "run", "--steps", "2",
                         "--json"])
    assert out["label"].startswith("run (step ")
    (tmp_path / "other.sg").write_text(TAGGER.replace("model tagger", "model other")
                                       .replace("dim H = 5", "dim H = 6"))
    assert main(["jacobian", "other.sg", "--checkpoint", "run"]) == 2
    assert "was saved from model 'tagger'" in capsys.readouterr().err
    # a language model's checkpoint with example data: said, not a traceback (review 21)
    (tmp_path / "t.txt").write_text("a b c d a b c d a b " * 20)
    (tmp_path / "lm.sg").write_text(TAGGER.replace("target y[t] : class(K)",
                                                   "target y[t] : class(V)")
                                    .replace('tagged("tags.txt")', 'chars("t.txt")'))
    assert main(["train", "lm.sg", "--steps", "2", "--quiet", "--out", "lm"]) == 0
    assert main(["jacobian", "lm.sg", "--checkpoint", "lm", "--data",
                 'tagged("tags.txt")']) == 2
    assert "these are tagged examples, but the checkpoint's model was trained on a token " \
        "stream (chars)" in capsys.readouterr().err


def test_checkpoint_parameters_are_measured(lm, tmp_path, capsys):
    from seqgraph.train import checkpoint as ck
    out = _json(capsys, ["jacobian", str(lm), "--checkpoint", str(tmp_path / "trained"),
                         "--steps", "4", "--json"])
    U = ck.load(tmp_path / "trained" / "checkpoint.npz").params["U"].astype(np.float64)
    (h,) = out["states"]
    assert h["recurrent_matrices"][0]["spectral_norm"] == pytest.approx(
        np.linalg.norm(U, 2), rel=1e-6)


def test_a_run_trained_with_dim_is_measured_with_its_sizes(lm, tmp_path, capsys):
    """`train --dim H=4` over the spec's `dim H = 6`: jacobian builds the model with the
    run's H, as eval does, without --dim again (review 30: a shape mismatch)."""
    assert main(["train", str(lm), "--steps", "2", "--quiet", "--executor", "interp",
                 "--dim", "H=4", "--out", str(tmp_path / "small")]) == 0
    out = _json(capsys, ["jacobian", str(lm), "--checkpoint", str(tmp_path / "small"),
                         "--steps", "4", "--json"])
    assert out["dims"]["H"] == 4 and out["label"] == "small (step 2)"
    out = _json(capsys, ["jacobian", str(lm), "--checkpoint", str(tmp_path / "small"),
                         "--compare", str(tmp_path / "small"), "--steps", "4", "--json"])
    assert out["dims"]["H"] == 4


def test_compare_measures_both_on_one_batch(lm, tmp_path, capsys):
    png = tmp_path / "cmp.png"
    out = _json(capsys, ["jacobian", str(lm), "--checkpoint", str(tmp_path / "init"),
                         "--compare", str(tmp_path / "trained"), "--steps", "6",
                         "-o", str(png), "--json"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["label"] == "init (step 0)"
    assert out["compare"]["label"] == "trained (step 20)"
    a, b = out["states"][0], out["compare"]["states"][0]
    assert len(a["distances"]) == len(b["distances"]) == 5
    assert a["distances"][0]["spectral"]["mean"] != b["distances"][0]["spectral"]["mean"]
    # the initialisation checkpoint is the spec's initialisation with the train seed:
    # comparing it with no checkpoint (seed 0) gives the same numbers, on the same batch
    out2 = _json(capsys, ["jacobian", str(lm), "--compare", str(tmp_path / "init"),
                          "--steps", "6", "--json"])
    assert out2["label"] == "initialisation (seed 0)"
    for x, y in zip(out2["states"][0]["distances"], out2["compare"]["states"][0]["distances"],
                    strict=True):
        assert x["spectral"]["mean"] == pytest.approx(y["spectral"]["mean"], rel=1e-5)
    # the text report lists both
    capsys.readouterr()
    assert main(["jacobian", str(lm), "--compare", str(tmp_path / "trained"),
                 "--steps", "4"]) == 0
    text = capsys.readouterr().out
    assert "== initialisation (seed 0)" in text and "== trained (step 20)" in text


def test_text_batch_windows_are_next_token_pairs():
    from seqgraph.jacobian import TextData, text_batch
    from seqgraph.train.binding import Binding
    ids = np.arange(100)
    td = TextData(ids, None, Binding("x", "y", False), "chars('t')")
    inputs, targets = text_batch(td, 5, 7, np.random.default_rng(0))
    x, y = inputs["x"], targets["y"]
    assert x.shape == y.shape == (5, 7)
    np.testing.assert_array_equal(y, x + 1)          # y[t] = x[t+1] in the stream
    with pytest.raises(Exception, match="too few"):
        text_batch(TextData(np.arange(5), None, Binding("x", "y", False), "t"), 2, 7,
                   np.random.default_rng(0))


# ------------------------------------------------------------------ edge norms (overlay)
def test_edge_norms_of_a_linear_recurrence(tmp_path):
    from seqgraph.jacobian import edge_norms
    _, m = _model(tmp_path, LINEAR)
    rng = np.random.default_rng(2)
    inputs, targets, lengths, _ = random_batch(m, rng, B=2, T=5)
    edges, states = edge_norms(m, inputs, targets, lengths)
    U = m.params["U"]
    assert set(edges) == {(("h", k), ("h", k + 1)) for k in range(4)}
    for s in edges.values():                         # dh_t/dh_{t-1} = U
        assert s["mean"] == pytest.approx(np.linalg.norm(U, 2), rel=1e-12)
    for t in range(1, 5):                            # dh_t/dh_1 = U^(t-1)
        assert states[("h", t)]["from"] == 0
        assert states[("h", t)]["mean"] == pytest.approx(
            np.linalg.norm(np.linalg.matrix_power(U, t), 2), rel=1e-12)
    # a warm-up: steps before `first` are run, not measured, and keys count from it
    edges2, states2 = edge_norms(m, inputs, targets, lengths, first=2)
    assert set(edges2) == {(("h", 0), ("h", 1)), (("h", 1), ("h", 2))}
    assert states2[("h", 2)]["mean"] == pytest.approx(
        np.linalg.norm(np.linalg.matrix_power(U, 2), 2), rel=1e-12)


def test_edge_norms_match_the_jacobians_and_cover_every_cross_step_edge(tmp_path):
    from seqgraph.jacobian import edge_norms
    text = TANH.replace("h[t] : 5 = tanh(W @ x[t] + U @ h[t-1] + b)",
                        "param R\nh[t] : 5 = tanh(W @ x[t] + U @ h[t-1] + R @ h[t-2] + b)")
    _, m = _model(tmp_path, text, dims={"V": 7})
    x = np.random.default_rng(4).integers(0, 7, (3, 5))
    edges, _ = edge_norms(m, {"x": x})
    (st,) = recurrent_states(m)
    exact = dict(jacobians(m, st))
    want = {(("h", k), ("h", t)) for t in range(5) for k in (t - 1, t - 2) if k >= 0}
    assert set(edges) == want                        # the delay-2 edges too
    for ((_, k), (_, t)), s in edges.items():
        norms = np.linalg.norm(exact[(t, k)], 2, axis=(1, 2))
        assert s["mean"] == pytest.approx(norms.mean(), rel=1e-10)
        assert s["max"] == pytest.approx(norms.max(), rel=1e-10)


def test_lstm_edges_include_gates_and_cell(tmp_path):
    from seqgraph.jacobian import edge_norms
    text = """
input  x[t] : onehot(V)
target y[t] : class(V)
param Wy, by
h = lstm(x, 3)
z[t] = Wy @ h[t] + by
loss xent(z[t], y[t])
"""
    _, m = _model(tmp_path, text, dims={"V": 4})
    x = np.random.default_rng(0).integers(0, 4, (2, 3))
    edges, states = edge_norms(m, {"x": x})
    pairs = {(a[0], b[0]) for a, b in edges}
    assert pairs == {("h", "h.i"), ("h", "h.f"), ("h", "h.o"), ("h", "h.g"),
                     ("h.c", "h.c")}
    # c[t-1] -> c[t]: the derivative along every path (through h[t-1] and the gates
    # too), the one `jacobians` measures for the state h.c at distance 1
    st = next(s for s in recurrent_states(m) if s.name == "h.c")
    for (t, k), J in jacobians(m, st):
        if t - k == 1:
            norms = np.linalg.norm(J, 2, axis=(1, 2))
            assert edges[(("h.c", k), ("h.c", t))]["mean"] == pytest.approx(norms.mean())
    assert {k[0] for k in states} == {"h", "h.c"}


def test_an_lstms_cell_jacobian_moves_h_with_c_and_hs_holds_c(tmp_path):
    """What the module's docstring says for a state of two variables (review 24: it said
    the other variable was held fixed, which is true of dh_t/dh_k only): dc_t/dc_k is the
    run from step k+1 on a carry whose c_k is moved and whose h_k = o_k tanh(c_k) moves
    with it; dh_t/dh_k moves h_k alone. Both against central differences."""
    from pathlib import Path
    spec = read_spec(str(Path(__file__).resolve().parents[1] / "specs" / "lstm.sg"))
    m = Model(spec, dims={"V": 5, "H": 3}, dtype="float64", seed=0)
    ins, tgs, _, _ = random_batch(m, np.random.default_rng(0), B=1, T=4)
    full = m.run(ins, tgs)
    k, t, eps = 1, 3, 1e-6
    cut = lambda d, a, b: {key: v[:, a:b] for key, v in d.items()}
    carry = m.run(cut(ins, 0, k + 1), cut(tgs, 0, k + 1)).carry
    o_k = full.values["o"][:, k]
    for name in ("c", "h"):
        m.run(ins, tgs)                     # jacobians reads the last run's tape
        J = dict(jacobians(m, next(s for s in recurrent_states(m) if s.name == name)))
        cols = []
        for j in range(3):
            ends = []
            for sign in (1, -1):
                c = {key: [x.copy() for x in v] for key, v in carry.items()}
                c[name][0][:, j] += sign * eps
                if name == "c":
                    c["h"][0] = o_k * np.tanh(c["c"][0])
                ends.append(m.run(cut(ins, k + 1, 4), cut(tgs, k + 1, 4),
                                  carry=c).values[name][:, t - k - 1])
            cols.append((ends[0] - ends[1]) / (2 * eps))
        np.testing.assert_allclose(J[(t, k)][0], np.stack(cols, -1)[0], atol=1e-8)


# ------------------------------------------------------------------ the tiled path
# `measure` reads `jacobians_tiled`: the batch repeated once per row (t, i), a few
# backwards in all where `jacobians` (the reference) takes one per row, n*(T-1) of them
# (T = 200 on lstm.sg: 147 s). The same numbers to rounding, on every kind of state.
def _gallery(name, B=3, T=6, lengths=None):
    from conftest import SPECS
    spec = read_spec(str(SPECS / name))
    dims = {**{d: 4 for d in spec.unbound_dims()}, "H": 4}
    m = Model(spec, dims=dims, dtype="float64", seed=0)
    inputs, targets, lens, _ = random_batch(m, np.random.default_rng(1), B=B, T=T,
                                            lengths=lengths)
    return m, inputs, targets, lens


def _same_as_reference(m, inputs, targets, lengths, memory=None):
    from seqgraph.jacobian import jacobians_tiled
    states = recurrent_states(m)
    assert states
    for st in states:
        m.run(inputs, targets, lengths=lengths)
        want = list(jacobians(m, st))
        got = list(jacobians_tiled(m, st, inputs, targets, lengths, memory=memory))
        assert [tk for tk, _ in got] == [tk for tk, _ in want]        # pairs, in order
        for (_, a), (_, b) in zip(want, got, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.abs(a).max())


@pytest.mark.parametrize("name", ["elman.sg", "lstm.sg", "gru.sg", "bidirectional.sg",
                                  "bidirectional_cell.sg", "attention.sg"])
def test_the_tiled_jacobians_are_the_reference_ones(name):
    """Elman, the LSTM as equations (two states, c and h), the GRU, states backward in
    time (g[t+1], h.bwd) and a decoder state over a second index (attention's s)."""
    _same_as_reference(*_gallery(name))


@pytest.mark.parametrize("copies", [1, 3, 9])
def test_the_tiled_jacobians_in_chunks_are_the_reference_ones(copies):
    """Too little memory for every row at once: C copies a backward, C less than the
    state's size n = 4 (a step's rows over two backwards) or not a multiple of it."""
    from seqgraph.jacobian import _tape_bytes
    m, inputs, targets, lengths = _gallery("lstm.sg")
    m.run(inputs, targets, lengths=lengths)
    memory = (2 * _tape_bytes(m.executor) + 1) * copies
    _same_as_reference(m, inputs, targets, lengths, memory=memory)


def test_the_tiled_jacobians_with_padding_are_the_reference_ones():
    """Examples of 6, 3 and 4 steps in one batch ([B] lengths, tiled with the batch)."""
    m, inputs, targets, _ = _gallery("elman.sg")
    lengths = {"t": np.array([6, 3, 4])}
    for x in (inputs["x"], targets["y"]):
        x[1, 3:], x[2, 4:] = -1, -1
    _same_as_reference(m, inputs, targets, lengths)
    m, inputs, targets, _ = _gallery("bidirectional.sg")     # g[t+1] past an end
    _same_as_reference(m, inputs, targets, {"t": [6, 2, 5]})


def _backwards(monkeypatch) -> list:
    """A list that grows by one at every interpreter backward from now on."""
    from seqgraph.interp import Tape
    calls, backward = [], Tape.backward
    monkeypatch.setattr(Tape, "backward",
                        lambda self, *a, **kw: calls.append(1) or backward(self, *a, **kw))
    return calls


def test_measure_takes_one_backward_a_state_not_one_a_row(tmp_path, monkeypatch):
    """The cost: 5 x 5 rows on the reference path (n = 5, T = 6) were 25 backwards; with
    memory for every row, one."""
    _, m = _model(tmp_path, TANH, dims={"V": 7})
    x = np.random.default_rng(3).integers(0, 7, (3, 6))
    calls = _backwards(monkeypatch)
    measure(m, {"x": x})
    assert len(calls) == 1


def test_edge_norms_take_one_backward_not_one_a_row(tmp_path, monkeypatch):
    """render --overlay jacobian: every edge's and every state's Jacobian by one tiled
    backward (--unfold 50 on lstm.sg: 45 s); they were 4 edges x 5 rows + 4 states x 5
    rows = 40 backwards of the run's own batch."""
    from seqgraph.jacobian import edge_norms
    _, m = _model(tmp_path, TANH, dims={"V": 7})
    x = np.random.default_rng(4).integers(0, 7, (3, 5))
    calls = _backwards(monkeypatch)
    edges, states = edge_norms(m, {"x": x})
    assert len(calls) == 1 and len(edges) == len(states) == 4
