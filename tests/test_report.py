"""The static report of `seqgraph check` (seqgraph/graph/report.py): BPTT memory,
whether a model can generate, and what truncated BPTT cuts."""
from pathlib import Path

import pytest

from seqgraph.cli import main
from seqgraph.graph.report import human, report, text
from seqgraph.model import read_spec

ROOT = Path(__file__).resolve().parents[1]

ELMAN = """
input  x[t] : onehot(V)
target y[t] : class(V)
param W, U, b, Wo, bo
h[t] : 16 = tanh(W @ x[t] + U @ h[t-1] + b)
o[t] = Wo @ h[t] + bo
loss xent(o[t], y[t])
"""
TRAIN = """
train {
  data = chars("tiny.txt")
  batch = 8
  bptt = 20
  dtype = float64
}
"""


def _rep(tmp_path, body, steps=None, batch=None, dims=None):
    from seqgraph.graph.check import check
    p = tmp_path / "m.sg"
    p.write_text(body)
    spec = read_spec(str(p))
    return report(check(spec.graph, dims or {}), steps, batch)


# ------------------------------------------------------------------ memory
def test_memory_counts_every_hidden_variable_over_T_and_B(tmp_path):
    r = _rep(tmp_path, ELMAN, steps=10, batch=3, dims={"V": 7})
    (rec,) = r.recurrences
    assert rec.vars == ("h",) and rec.direction == "forward in time"
    assert rec.delays == ("-1",) and set(rec.params) == {"U", "W", "b"}
    assert rec.memory.const == 10 * 3 * 16 * 4 and not rec.memory.terms
    # h and o (o has size V = 7); the inputs and targets are ids and not counted
    assert r.memory.const == 10 * 3 * (16 + 7) * 4
    assert (r.steps_from, r.batch_from, r.dtype) == ("--steps", "--batch", "float32")


def test_memory_defaults_and_unbound_sizes(tmp_path):
    r = _rep(tmp_path, ELMAN)                       # no train block: 64 and 32
    assert (r.steps, r.batch) == (64, 32) and r.steps_from == "default"
    assert r.memory.const == 64 * 32 * 16 * 4
    assert r.memory.terms == {"V": 64 * 32 * 4}     # o's size V is left open
    out = text(r)
    assert "all variables: 128.0 KiB + 8.0 KiB x V" in out and "V unbound" in out
    assert "estimate" in out
    # the train block's bptt, batch and dtype
    r = _rep(tmp_path, ELMAN + TRAIN, dims={"V": 7})
    assert (r.steps, r.batch, r.dtype) == (20, 8, "float64")
    assert r.steps_from == "the train block's bptt"
    assert r.memory.const == 20 * 8 * (16 + 7) * 8


def test_per_example_variables_count_once(tmp_path):
    body = """
input  x[t] : onehot(V)
target y : class(K)
param W, U, b, Wo, bo
h[t] : 16 = tanh(W @ x[t] + U @ h[t-1] + b)
o = Wo @ h[end] + bo
loss xent(o, y)
"""
    r = _rep(tmp_path, body, steps=10, batch=2, dims={"V": 5, "K": 3})
    assert r.memory.const == 10 * 2 * 16 * 4 + 2 * 3 * 4


def test_human():
    assert human(100) == "100 bytes" and human(1536) == "1.5 KiB"
    assert human(3 * 1024 ** 3) == "3.0 GiB"


# ------------------------------------------------------------------ generation
def test_elman_can_generate(tmp_path):
    r = _rep(tmp_path, ELMAN)
    assert r.generated == "t" and r.can_generate is True and not r.generate_reasons
    assert "can generate over t" in text(r)


def test_backward_recurrence_feeding_the_output_cannot_generate(tmp_path):
    body = """
input  x[t] : onehot(V)
target y[t] : class(V)
param W, U, b, Wg, Ug, Wo, bo
h[t] : 8 = tanh(W @ x[t] + U @ h[t-1] + b)
g[t] : 8 = tanh(Wg @ x[t] + Ug @ g[t+1])
o[t] = Wo @ [h[t]; g[t]] + bo
loss xent(o[t], y[t])
"""
    r = _rep(tmp_path, body)
    assert r.can_generate is False
    reason = r.generate_reasons[0]
    assert "backward recurrence g over t feeds the output o" in reason
    # and the sampler's own check (graph/generate_check.py) agrees, in its words
    assert any(s.startswith("seqgraph sample refuses it") for s in r.generate_reasons)
    assert [x.direction for x in r.recurrences] == ["forward in time", "backward in time"]
    assert "cannot generate over t" in text(r)


def test_reading_a_later_input_or_the_own_target_cannot_generate(tmp_path):
    ahead = ELMAN.replace("o[t] = Wo @ h[t] + bo",
                          "param Wx\no[t] = Wo @ h[t] + Wx @ x[t+1] + bo")
    r = _rep(tmp_path, ahead)
    assert r.can_generate is False
    assert any("o reads x[t+1], a later step of t" in s for s in r.generate_reasons)
    own = ELMAN.replace("h[t] : 16 = tanh(W @ x[t] + U @ h[t-1] + b)",
                        "param R\nh[t] : 16 = tanh(W @ x[t] + R @ y[t] + U @ h[t-1] + b)")
    r = _rep(tmp_path, own)
    assert r.can_generate is False
    assert any("reads the target y[t] of its own step" in s for s in r.generate_reasons)
    # the target read with a delay (teacher forcing, Fig. 10.4) is what generation feeds
    fed = ELMAN.replace("h[t] : 16 = tanh(W @ x[t] + U @ h[t-1] + b)",
                        "param R\nh[t] : 16 = tanh(W @ x[t] + R @ y[t-1] + U @ h[t-1] + b)")
    assert _rep(tmp_path, fed).can_generate is True


def test_backward_encoder_over_another_index_still_generates(tmp_path):
    spec = read_spec(str(ROOT / "specs/seq2seq.sg"))
    r = report(spec.checked)
    assert r.generated == "u" and r.can_generate is True
    # an encoder read backward (h[t+1]) and at its first step (h[1]): over t, which the
    # decoder does not generate, so nothing is in the way
    body = spec.source.replace("Ue @ h[t-1]", "Ue @ h[t+1]").replace("h[end]", "h[1]")
    r = _rep(tmp_path, body)
    assert [x.direction for x in r.recurrences] == ["backward in time", "forward in time"]
    assert r.can_generate is True and r.window == "u" and r.cuts == []


def test_per_example_output_is_not_a_generator(tmp_path):
    r = report(read_spec(str(ROOT / "specs/many_to_one.sg")).checked)
    assert r.can_generate is None and r.window is None
    assert "no sequence output" in text(r)


def test_a_tree_model_is_reported_in_nodes_and_trees():
    r = report(read_spec(str(ROOT / "specs/recursive.sg")).checked, 40, 25)
    assert r.tree and r.can_generate is None and r.window is None
    t = text(r)
    assert "for N = 40 nodes a tree (--steps), B = 25 trees (--batch)" in t
    assert "every hidden variable's value at every node, N x B x size" in t
    assert "the loss reads a target at every node of a tree" in t
    assert "truncated BPTT:\n  a tree is processed whole" in t and "windows of" not in t


# ------------------------------------------------------------------ truncated BPTT
def test_plain_forward_recurrence_cuts_nothing(tmp_path):
    r = _rep(tmp_path, ELMAN + TRAIN)
    assert r.window == "t" and r.cuts == []
    assert "cuts no dependency the loss needs over t" in text(r)
    assert "gradients reach back at most 20 steps" in text(r)


def test_delay_longer_than_the_window_is_cut(tmp_path):
    body = ELMAN.replace("U @ h[t-1] + b", "U @ h[t-1] + R @ h[t-30] + b") \
        .replace("param W, U", "param R, W, U")
    (cut,) = _rep(tmp_path, body + TRAIN).cuts          # bptt 20 < 30
    assert "h reads h[t-30]: a delay of 30 steps is longer than the bptt window of 20" in cut
    assert "no gradient flows along it" in cut
    assert _rep(tmp_path, body + TRAIN, steps=30).cuts == []    # a window of 30 holds it


def test_backward_recurrence_over_the_windowed_index_is_cut(tmp_path):
    body = """
input  x[t] : onehot(V)
target y[t] : class(V)
param Wg, Ug, Wo, bo
g[t] : 8 = tanh(Wg @ x[t] + Ug @ g[t+1])
o[t] = Wo @ g[t] + bo
loss xent(o[t], y[t])
"""
    (cut,) = _rep(tmp_path, body).cuts
    assert "backward recurrence g runs over t, the windowed index" in cut
    assert "restarts at the end of every window of 64 steps" in cut
    assert "cuts dependencies the loss needs over t" in text(_rep(tmp_path, body))


def test_end_read_over_the_windowed_index_is_the_window_end(tmp_path):
    body = ELMAN.replace("o[t] = Wo @ h[t] + bo", "o[t] = Wo @ h[end] + bo")
    (cut,) = _rep(tmp_path, body).cuts
    assert "o reads h[end]: in training that is the last step of each window" in cut


def test_example_loaders_are_not_windowed(tmp_path):
    body = ELMAN.replace("o[t] = Wo @ h[t] + bo", "o[t] = Wo @ h[end] + bo") + \
        '\ntrain {\n  data = pairs("p.tsv")\n}\n'
    r = _rep(tmp_path, body)
    assert r.window is None and r.cuts == []
    assert "pairs(...) gives whole examples" in text(r)


# ------------------------------------------------------------------ the command
def test_check_prints_the_report(capsys):
    assert main(["check", str(ROOT / "specs/charlm.sg"), "--dim", "V=65"]) == 0
    out = capsys.readouterr().out
    assert "h: over t, forward in time, delays -1" in out        # the summary stays
    assert ("memory BPTT keeps (estimate) for T = 64 steps (the train block's bptt), "
            "B = 32 examples (the train block's batch), float32:") in out
    assert "h (forward in time over t, delays -1): 1.0 MiB" in out   # 64*32*128*4
    assert "can generate over t" in out
    assert main(["check", str(ROOT / "specs/charlm.sg"), "--dim", "V=65", "--steps",
                 "100", "--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "h (forward in time over t, delays -1): 400.0 KiB" in out  # 100*8*128*4
    assert main(["check", str(ROOT / "specs/bidirectional.sg")]) == 0
    out = capsys.readouterr().out
    assert "cannot generate over t" in out and "the windowed index" in out


@pytest.mark.parametrize("flag", ["--steps", "--batch"])
def test_check_rejects_a_bad_size(flag, capsys):
    assert main(["check", str(ROOT / "specs/elman.sg"), flag, "0"]) == 2
    assert f"{flag} must be at least 1" in capsys.readouterr().err


def test_dump_unfolded_keeps_its_default_of_three_steps(capsys):
    assert main(["check", str(ROOT / "specs/elman.sg"), "--dump", "unfolded"]) == 0
    assert capsys.readouterr().out == (ROOT / "tests/golden/elman.unfolded3.txt").read_text()
