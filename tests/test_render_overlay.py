"""`seqgraph render SPEC --unfold N --overlay jacobian`: the unfolded graph with every
edge from a state to a later step coloured and labelled by its Jacobian norm."""
import re

import numpy as np
import pytest

from seqgraph import render
from seqgraph.cli import main
from seqgraph.jacobian import color, legend_html, scale_range

TANH = """
model tanh_rnn
input  x[t] : onehot(V)
target y[t] : class(V)
param W, b, Wo, bo
param U : [4, 4]
h[t] : 4 = tanh(W @ x[t] + U @ h[t-1] + b)
o[t] = Wo @ h[t] + bo
loss xent(o[t], y[t])
"""


def _spec(tmp_path, text=TANH):
    p = tmp_path / "m.sg"
    p.write_text(text)
    return p


def test_scale_is_blue_below_one_grey_at_one_red_above():
    assert color(1.0, 2) == "#6e6e6e"
    assert color(1e-2, 2) == "#08306b" and color(1e-9, 2) == "#08306b"    # clipped
    assert color(1e2, 2) == "#a50f15" and color(0.0, 2) == "#08306b"
    rgb = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5))
           for c in (color(10.0 ** e, 2) for e in np.linspace(-2, 2, 9))]
    assert all(b > r for r, _, b in rgb[:4]) and all(r > b for r, _, b in rgb[5:])
    assert scale_range([0.5, 2.0]) == 1 and scale_range([1e-5, 3.0]) == 5
    assert scale_range([1e-40]) == 8
    html = legend_html(1, ["a note"])
    assert html.count("BGCOLOR") == 5 and "vanishing" in html and "a note" in html


def test_html_labels_are_written_unquoted():
    assert render.quote(render.Html("<B>x</B>")) == "<<B>x</B>>"
    assert render.quote("<B>") == '"<B>"'


def test_overlay_dot_colours_and_labels_every_recurrent_edge(tmp_path, capsys):
    spec = _spec(tmp_path)
    out = tmp_path / "o.dot"
    # U = 0.5 I: every dh_t/dh_{t-1} = diag(1 - h_t^2) 0.5, of norm <= 0.5
    ckpt = tmp_path / "u.npz"
    np.savez(ckpt, U=0.5 * np.eye(4))
    assert main(["render", str(spec), "--unfold", "4", "--overlay", "jacobian",
                 "--dim", "V=5", "--checkpoint", str(ckpt), "-o", str(out)]) == 0
    dot = out.read_text()
    edges = re.findall(r'"(n\d+)" -> "(n\d+)" \[([^\]]*)\]', dot)
    rec = [attrs for _, _, attrs in edges if 'penwidth="2.4"' in attrs]
    assert len(rec) == 3                       # h[1]->h[2], h[2]->h[3], h[3]->h[4]
    for attrs in rec:
        value = float(re.search(r'label="([^"]+)"', attrs).group(1))
        assert 0 < value <= 0.5
        assert re.search(r'color="#[0-9a-f]{6}"', attrs)
    assert "<TABLE" in dot and "legend" in dot                  # the colour bar
    assert "initialisation" not in dot and "u.npz" in dot       # what was measured
    assert "|d/dh[1]|" in dot                                   # the states' second line


def test_overlay_on_the_train_data_with_a_warmup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("abcab cabba\n" * 30)
    spec = _spec(tmp_path, TANH + '\ntrain {\n  data = chars("t.txt")\n}\n')
    out = tmp_path / "o.dot"
    assert main(["render", str(spec), "--unfold", "3", "--overlay", "jacobian",
                 "--warmup", "5", "--batch", "2", "-o", str(out)]) == 0
    dot = out.read_text()
    assert "chars('t.txt')" in dot and "drawn from step 6" in dot
    assert "h[4]" not in dot                                    # 3 steps drawn


def test_overlay_png(tmp_path):
    if render.layout_engine() is None:
        pytest.skip("no Graphviz layout engine")
    out = tmp_path / "o.png"
    assert main(["render", str(_spec(tmp_path)), "--unfold", "3", "--overlay",
                 "jacobian", "--dim", "V=5", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overlay_needs_unfold(tmp_path, capsys):
    assert main(["render", str(_spec(tmp_path)), "--overlay", "jacobian", "--dim", "V=5",
                 "-o", str(tmp_path / "o.dot")]) == 2
    assert "--unfold" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--checkpoint", "runs/m"], ["--data", 'chars("a.txt")'],
                                   ["--warmup", "20"], ["--batch", "4"], ["--seed", "1"]])
def test_an_overlay_option_without_the_overlay_is_refused(tmp_path, capsys, extra):
    """`--unfold 5 --checkpoint C` drew the plain graph, the checkpoint unread: a user
    who wanted the trained run's norms got the picture without them and no word."""
    out = tmp_path / "o.dot"
    assert main(["render", str(_spec(tmp_path)), "--unfold", "3", "--dim", "V=5", *extra,
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{extra[0]} is for --overlay jacobian" in err and "Traceback" not in err
    assert not out.exists()


def test_overlay_of_a_feed_forward_model_is_an_error(tmp_path, capsys):
    ff = """
input  x[t] : onehot(V)
target y[t] : class(V)
param W, Wo
h[t] : 4 = tanh(W @ x[t])
o[t] = Wo @ h[t]
loss xent(o[t], y[t])
"""
    assert main(["render", str(_spec(tmp_path, ff)), "--unfold", "3", "--overlay",
                 "jacobian", "--dim", "V=5", "-o", str(tmp_path / "o.dot")]) == 2
    assert "no edge from a state" in capsys.readouterr().err


def test_an_overlay_colours_the_steps_a_softmax_over_its_own_index_joins(tmp_path):
    """a[t] = softmax over t (e[t]) reads e at every step (a[1] <- e[3]): those edges
    are measured and drawn, as for any edge between steps; the unfolder's node for the
    logsumexp over t (a value no Jacobian is taken of) is not in the overlay."""
    spec = _spec(tmp_path, TANH.replace("o[t] = Wo @ h[t] + bo",
                                        "param va : [4]\ne[t] = va @ h[t]\n"
                                        "a[t] = softmax over t (e[t])\n"
                                        "o[t] = Wo @ (a[t] * h[t]) + bo"))
    out = tmp_path / "o.dot"
    assert main(["render", str(spec), "--unfold", "3", "--overlay", "jacobian",
                 "--dim", "V=5", "-o", str(out)]) == 0
    dot = out.read_text()
    label = {n: text.split("\\n")[0]             # a state's 2nd line: its norm
             for n, text in re.findall(r'"(n\d+)" \[label="([^"]+)"', dot)}
    measured = {(label[a], label[b]) for a, b, attrs in
                re.findall(r'"(n\d+)" -> "(n\d+)" \[([^\]]*)\]', dot) if 'penwidth="2.4"' in attrs}
    assert {("e[3]", "a[1]"), ("e[1]", "a[3]"), ("h[1]", "h[2]")} <= measured
    assert "logsumexp over t" not in dot
