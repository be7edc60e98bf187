"""`seqgraph sample --attention-plot`: the alignment matrix of a generated output
(seqgraph/attention_plot.py), on specs/attention.sg and specs/luong.sg with random
parameters (nothing is trained; the interpreter, a few seconds)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import seqgraph
from seqgraph.attention_plot import alignment, find_weights, plot_alignment
from seqgraph.cli import main
from seqgraph.errors import UsageError
from seqgraph.train import checkpoint as ck
from seqgraph.train.binding import Binding
from seqgraph.train.generate import Generator, make_plan
from seqgraph.train.loaders import Vocab

SPECS = Path(__file__).resolve().parents[1] / "specs"
SRC = Vocab("words", ("<unk>", "the", "cat", "sat", "on", "mat"),
            Vocab("words", ("<unk>", "<s>", "</s>", "le", "chat", "assis", "sur", "tapis")))


def checkpoint(tmp_path, name: str, seed=3, scale=2.0, text=None) -> tuple[Path, Path]:
    """The spec and a checkpoint of its model with random parameters, as training
    writes them (pairs data: Vx = 6 source words, Vy = 8 target words)."""
    spec = tmp_path / f"{name}.sg"
    spec.write_text(text if text is not None else (SPECS / f"{name}.sg").read_text())
    dims = {"Vx": len(SRC), "Vy": len(SRC.target)}
    m = seqgraph.Model(seqgraph.read_spec(str(spec)), dims=dims, seed=seed)
    for p in m.params.values():
        p *= scale                     # sharper weights than at initialisation
    binding = Binding("x", "y", True, dims, "pairs", {"y": 1})
    meta = {"model": name, "dims": dims, "dtype": "float32", "vocab": SRC.to_json(),
            "binding": asdict(binding)}
    return spec, ck.save(tmp_path / f"{name}.npz", m.params, meta)


def sample(capsys, *argv):
    code = main([str(a) for a in ("sample", *argv)])
    return code, capsys.readouterr()


@pytest.mark.parametrize("name", ["attention", "luong"])
def test_the_weights_are_the_rows_of_a_softmax_over_the_source(name):
    spec = seqgraph.read_spec(str(SPECS / f"{name}.sg"))
    m = seqgraph.Model(spec, dims={"Vx": 6, "Vy": 8}, dtype="float64", seed=1)
    plan = make_plan(m)
    w = find_weights(spec.graph, plan.index)
    assert (w.name, w.rows, w.cols, w.normalised) == ("a", "u", "t", "t")
    src = {"x": np.array([1, 2, 3, 4, 5])}
    gen = Generator(m, plan, start=1, eos=2)
    out = gen.sample(gen.context([src]), 6, greedy=True)[0]
    a = alignment(m, w, plan, src, out + [2], start=1)
    assert a.shape == (len(out) + 1, 5)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-12)
    assert (a >= 0).all()
    # the same weights as the generation's own steps: the logits of a teacher-forced
    # run are those greedy decoding chose its tokens from (the decoder is causal)
    res = m.run({"x": src["x"][None]}, {"y": np.array([out + [2]])},
                carry={"y": [np.array([1])]})
    assert list(res.values["o"][0].argmax(-1)[:len(out)]) == out


def test_sample_draws_the_alignment_matrix(tmp_path, capsys):
    spec, c = checkpoint(tmp_path, "attention")
    png = tmp_path / "a.png"
    code, out = sample(capsys, spec, "--checkpoint", c, "--input", "the cat sat on the mat",
                       "--greedy", "--length", 8, "--attention-plot", png)
    assert code == 0, out.err
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"attention weights 'a' drawn in {png}" in out.err
    assert set(out.out.split()) <= set(SRC.target.tokens)
    # with a beam (the best hypothesis), and choosing the variable by name
    png2 = tmp_path / "b.png"
    code, out = sample(capsys, spec, "--checkpoint", c, "--input", "the cat", "--beam", 2,
                       "--length", 5, "--attention-plot", png2, "--attention-var", "a")
    assert code == 0 and png2.is_file(), out.err


def test_the_picture_has_one_row_per_output_token_and_one_column_per_source_token(tmp_path):
    w = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    out = plot_alignment(w, ["le", "chat", "noir"], ["the", "</s>"], tmp_path / "m.png")
    from matplotlib.image import imread
    img = imread(out)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    with pytest.raises(ValueError, match="for 3 output and 3 source labels"):
        plot_alignment(w, ["a", "b", "c"], ["x", "y", "z"], tmp_path / "n.png")


def test_a_model_without_attention_is_refused_with_the_reason(tmp_path, capsys):
    from test_generate import SEQ2SEQ
    spec, c = checkpoint(tmp_path, "s2s", text=SEQ2SEQ.split("train {")[0])
    code, out = sample(capsys, spec, "--checkpoint", c, "--input", "the cat",
                       "--attention-plot", tmp_path / "a.png")
    assert code == 2 and "Traceback" not in out.err
    assert "model 's2s' has no attention weights to plot: no variable over two indexes " \
           "is defined by 'softmax over'" in out.err
    assert not (tmp_path / "a.png").exists()


def test_attention_var_must_name_a_variable_over_two_indexes(tmp_path, capsys):
    spec, c = checkpoint(tmp_path, "luong")
    for name, why in [("s", "'s' is not a variable over two indexes"),
                      ("nope", "'nope' is not a variable of the model")]:
        code, out = sample(capsys, spec, "--checkpoint", c, "--input", "the cat",
                           "--attention-plot", tmp_path / "a.png", "--attention-var", name)
        assert code == 2 and why in out.err and "e[u, t], a[u, t]" in out.err, out.err
    code, out = sample(capsys, spec, "--checkpoint", c, "--input", "the cat",
                       "--attention-var", "a")
    assert code == 2 and "give both" in out.err


def test_find_weights_takes_the_first_softmax_over_two_indexes():
    spec = seqgraph.read_spec(str(SPECS / "luong.sg"))
    assert find_weights(spec.graph, "u").name == "a"
    assert find_weights(spec.graph, "u", "e").name == "e"       # scores, by name
    with pytest.raises(UsageError, match="does not run over the generated index v"):
        find_weights(spec.graph, "v")
