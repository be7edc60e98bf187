"""The static report of `seqgraph check` (seqgraph/graph/report.py): BPTT memory,
whether a model can generate, and what truncated BPTT cuts."""
from pathlib import Path

import pytest

from seqgraph.cli import main
from seqgraph.graph.generate_check import can_generate
from seqgraph.graph.leaks import target_leaks
from seqgraph.graph.report import human, report, text
from seqgraph.model import read_spec

import conftest

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
    assert "can generate step by step over t" in text(r)


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
    r = _rep(tmp_path, body + TRAIN)                 # chars data: sample generates
    assert r.can_generate is False and r.sample == "generate"
    reason = r.generate_reasons[0]
    assert "backward recurrence g over t feeds the output o" in reason
    # and the sampler's own check (graph/generate_check.py) agrees, in its words
    assert any(s.startswith("seqgraph sample refuses it") and s.endswith("not sampled")
               for s in r.generate_reasons)
    assert [x.direction for x in r.recurrences] == ["forward in time", "backward in time"]
    assert "cannot generate step by step over t:" in text(r)
    # no data named: with tagged data sample would label it, so it does not say "refuses"
    r = _rep(tmp_path, body)
    assert r.sample is None and r.can_generate is False
    t = text(r)
    assert "seqgraph sample's own check, for chars or words data: cannot generate y[t]" in t
    assert "refuses" not in t and "not sampled" not in t
    assert "what seqgraph sample does depends on the data" in t


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


TAGGER = "\n" + conftest.TAGGER       # a bidirectional tagger, from line 2


def _data(loader: str) -> str:
    return f'\ntrain {{\n  data = {loader}("d.txt")\n}}\n'


def test_a_tagger_is_labelled_in_one_pass_not_refused(tmp_path):
    """seqgraph sample labels a model whose target is not read back, trained on example
    data, in one forward pass (cmd/sample.py `one_pass`): check says so, and keeps the
    reasons it cannot be generated step by step without saying sample refuses it."""
    for r in (_rep(tmp_path, TAGGER + _data("tagged")),
              report(read_spec(str(ROOT / "examples/tagging/tagger.sg")).checked)):
        assert r.sample == "one pass" and r.can_generate is False
        t = text(r)
        assert ("seqgraph sample labels --input in one pass (data = tagged(...)): its "
                "target y[t] is not read back (no y[t-1]), so it is not generated step by "
                "step") in t
        assert "cannot generate step by step over t, which labelling in one pass " in t
        assert "backward recurrence" in t                 # the reason stays
        assert "refuses" not in t and "not sampled" not in t


@pytest.mark.parametrize("path, says", [
    ("examples/series/sunspots.sg", "seqgraph sample forecasts each step of --input in "
                                    "one pass (data = series(...))"),
    ("examples/classify/sentiment.sg", "seqgraph sample labels --input in one pass (data "
                                       "= labeled(...)): y is one label for the whole"),
    ("examples/sst/rnn.sg", "seqgraph sample labels every node of the tree --input in one "
                            "pass (data = trees(...))"),
    ("specs/charlm.sg", "seqgraph sample continues --prime, generating y[t] step by step"),
    ("examples/g2p/attention.sg", "seqgraph sample writes y[u] for --input step by step "
                                  "(data = pairs(...)), each output read back as y[u-1]"),
    ("specs/bidirectional.sg", "what seqgraph sample does depends on the data"),
])
def test_check_says_what_sample_does(path, says):
    assert says in text(report(read_spec(str(ROOT / path)).checked))


def test_a_conditional_tagger_reading_its_tags_back_is_generated(tmp_path):
    """The rule of sample's `run`: example data whose target is read back (R @ y[t-1],
    the binding's feedback) is generated step by step, so the sampler's check holds."""
    body = (ROOT / "specs/conditional.sg").read_text() + _data("tagged")
    r = _rep(tmp_path, body)
    assert r.sample == "generate" and r.can_generate is True
    assert "seqgraph sample writes y[t] for --input step by step" in text(r)
    ahead = body.replace("U @ x[t]", "U @ x[t+1]")
    r = _rep(tmp_path, ahead)
    assert any(s.startswith("seqgraph sample refuses it") for s in r.generate_reasons)


def test_check_and_sample_agree_on_a_tagger(tmp_path, capsys):
    """What check says of a tagger is what sample does with its checkpoint."""
    from dataclasses import asdict

    import seqgraph
    from seqgraph.train import checkpoint as ck
    from seqgraph.train.binding import Binding
    from seqgraph.train.loaders import Vocab
    spec = tmp_path / "tagger.sg"
    spec.write_text(TAGGER + _data("tagged"))
    assert main(["check", str(spec)]) == 0
    assert "seqgraph sample labels --input in one pass" in capsys.readouterr().out
    dims = {"V": 4, "K": 2}
    m = seqgraph.Model(seqgraph.read_spec(str(spec)), dims=dims, seed=3)
    vocab = Vocab("words", ("<unk>", "a", "b", "c"), Vocab("words", ("C", "V")))
    meta = {"model": "tagger", "dims": dims, "dtype": "float32", "vocab": vocab.to_json(),
            "binding": asdict(Binding("x", "y", False, {}, "tagged"))}
    c = ck.save(tmp_path / "c.npz", m.params, meta)
    assert main(["sample", str(spec), "--checkpoint", str(c), "--input", "a c b"]) == 0
    tags = [w.split("/") for w in capsys.readouterr().out.split()]
    assert [w for w, _ in tags] == ["a", "c", "b"] and {t for _, t in tags} <= {"C", "V"}


@pytest.mark.parametrize("old, new, says, kind", [
    ("W @ x[t]", "W @ x[t+1]", "h[t] reads x[t+1] (line 5), the input of a later step of "
                               "t, which generation, one step at a time, has not reached "
                               "yet", "input"),
    ("Wo @ h[t]", "Wo @ h[t+1]", "o[t] reads h[t+1] (line 6), a later step of h, which "
                                 "generation, one step at a time, has not computed yet",
     "later"),
    ("U @ h[t-1]", "U @ h[t+1]", "h[t] reads h[t+1] (line 5), an advance over the "
                                 "generated index t: a backward recurrence reads steps", "bw"),
])
def test_reading_ahead_is_named_for_what_it_is(tmp_path, old, new, says, kind):
    """A forward recurrence reading x[t+1] is not a backward recurrence."""
    body = ELMAN.replace(old, new)
    ok, why = can_generate(read_spec("m.sg", body).graph)
    assert not ok and says in why, why
    assert ("backward" in why) == (kind == "bw")
    r = _rep(tmp_path, body + TRAIN)
    assert any(says in s for s in r.generate_reasons)
    if kind != "bw":
        assert not any("backward" in s for s in r.generate_reasons)


def test_backward_encoder_over_another_index_still_generates(tmp_path):
    spec = read_spec(str(ROOT / "specs/seq2seq.sg"))
    r = report(spec.checked)
    assert r.generated == "u" and r.can_generate is True
    # an encoder read backward (h[t+1]) and at its first step (h[1]): over t, which the
    # decoder does not generate, so nothing is in the way
    body = spec.source.replace("Ue @ h[t-1]", "Ue @ h[t+1]").replace("h[end]", "h[1]")
    r = _rep(tmp_path, body)
    assert [x.direction for x in r.recurrences] == ["backward in time", "forward in time"]
    assert r.can_generate is True and r.cuts == []
    assert r.window is None and "no stream (chars or words) can feed this model" in \
        r.no_window                    # x[t] and y[u]: only pairs fits, whole examples


def test_per_example_output_is_not_a_generator(tmp_path):
    r = report(read_spec(str(ROOT / "specs/many_to_one.sg")).checked)
    assert r.can_generate is None and r.window is None
    assert "no sequence output" in text(r)
    # a model with no loss at all: nothing is generated, for that reason (walk 10)
    r = report(read_spec("empty.sg", "# nothing yet\n").checked)
    assert "  nothing to generate: the model has no loss" in text(r)
    assert "no sequence output" not in text(r)


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


@pytest.mark.parametrize("loader", ["tagged", "pairs", "labeled"])
def test_example_data_is_reported_in_steps_an_example(tmp_path, loader):
    """Whole examples: T is an example's length, not a bptt window (bptt does not apply,
    even when the train block sets it)."""
    body = TAGGER + f'\ntrain {{\n  data = {loader}("d.txt")\n  bptt = 20\n}}\n'
    t = text(_rep(tmp_path, body))
    assert "for T = 64 steps an example (default; --steps), B = 32 examples" in t
    assert "truncated BPTT:\n  data = " in t and "windows of 64" not in t
    assert "bptt" not in t.split("generation:")[0]
    t = text(_rep(tmp_path, body, steps=12))
    assert "for T = 12 steps an example (--steps)" in t
    # a stream keeps its window
    assert "for T = 20 steps (the train block's bptt)" in text(_rep(tmp_path, ELMAN + TRAIN))


def test_a_series_is_reported_in_windows_of_rows():
    t = text(report(read_spec(str(ROOT / "examples/series/sunspots.sg")).checked))
    assert "for T = 40 steps an example (the series' window; --steps)" in t
    assert "truncated BPTT:\n  data = series(...) gives whole examples" in t


def test_check_set_data_changes_the_report(capsys):
    spec = str(ROOT / "specs/bidirectional.sg")
    assert main(["check", spec, "--set", 'data=tagged("d.txt")']) == 0
    out = capsys.readouterr().out
    assert "T = 64 steps an example (default; --steps)" in out
    assert "seqgraph sample labels --input in one pass (data = tagged(...))" in out


# ------------------------------------------------------------------ the command
def test_check_prints_the_report(capsys):
    assert main(["check", str(ROOT / "specs/charlm.sg"), "--dim", "V=65"]) == 0
    out = capsys.readouterr().out
    assert "h: over t, forward in time, delays -1" in out        # the summary stays
    assert ("memory BPTT keeps (estimate) for T = 64 steps (the train block's bptt), "
            "B = 32 examples (the train block's batch), float32:") in out
    assert "h (forward in time over t, delays -1): 1.0 MiB" in out   # 64*32*128*4
    assert "can generate step by step over t" in out
    assert main(["check", str(ROOT / "specs/charlm.sg"), "--dim", "V=65", "--steps",
                 "100", "--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "h (forward in time over t, delays -1): 400.0 KiB" in out  # 100*8*128*4
    assert main(["check", str(ROOT / "specs/bidirectional.sg")]) == 0
    out = capsys.readouterr().out
    assert "cannot generate step by step over t" in out and "the windowed index" in out


@pytest.mark.parametrize("flag", ["--steps", "--batch"])
def test_check_rejects_a_bad_size(flag, capsys):
    assert main(["check", str(ROOT / "specs/elman.sg"), flag, "0"]) == 2
    assert f"{flag} must be at least 1" in capsys.readouterr().err


def test_dump_unfolded_keeps_its_default_of_three_steps(capsys):
    assert main(["check", str(ROOT / "specs/elman.sg"), "--dump", "unfolded"]) == 0
    assert capsys.readouterr().out == (ROOT / "tests/golden/elman.unfolded3.txt").read_text()


# ------------------------------------------------------------------ target leaks
CHARLM = (ROOT / "specs/charlm.sg").read_text()
ANSWER = "x[t+1] is the target y[t] of a language model (chars data: y[t] = x[t+1])"


@pytest.mark.parametrize("old, new, says", [
    ("U @ h[t-1]", "U @ h[t+1]",
     "o[t] reads x at every later step (h[t] reads h[t+1], line 12): " + ANSWER +
     ", so the model sees the answer; did you mean h[t-1]?"),
    ("W @ x[t]", "W @ x[t+1]",
     "o[t] reads x[t+1] (h[t] reads x[t+1], line 12): " + ANSWER +
     ", so the model sees the answer; did you mean x[t]?"),
    ("W @ x[t]", "W @ x[t] + R @ y[t]",
     "o[t] reads y[t] (h[t] reads y[t], line 12): y is the target its loss compares o[t] "
     "with, so the model sees the answer; did you mean y[t-1]?"),
    ("Wo @ h[t]", "Wo @ h[end]",
     "o[t] reads x at every later step (o[t] reads h[end], line 13): " + ANSWER),
    ("Wo @ h[t]", "Wo @ (mean over t (h[t]))",
     "(o[t] reads h[t] inside a reduction over t, line 13): " + ANSWER),
    ("Wo @ h[t] + bo", "Wo @ h[t] + Wx @ x[t+1] + bo", "o[t] reads x[t+1] (line 13): "),
])
def test_a_language_model_reading_its_answer_is_warned_of(tmp_path, capsys, old, new, says):
    """The classic mistake (h[t+1] for h[t-1], x[t+1], y[t] read back at its own step):
    check passes, with a warning on stderr that names the read and the fix."""
    body = CHARLM.replace(old, new).replace("param W, U", "param R, Wx, W, U")
    assert body != CHARLM
    (leak,) = target_leaks(read_spec("m.sg", body).checked)
    assert says in leak, leak
    spec = tmp_path / "lm.sg"
    spec.write_text(body)
    assert main(["check", str(spec)]) == 0
    err = capsys.readouterr().err
    assert f"{spec}: warning: {leak}" in err.splitlines()


def test_a_leak_is_found_through_any_path_and_for_any_data(tmp_path):
    # a backward recurrence, one equation away from the output
    body = TAGGER + _data("words")
    (leak,) = target_leaks(read_spec("m.sg", body).checked)
    assert "(g[t] reads g[t+1], line 6)" in leak and "words data: y[t] = x[t+1]" in leak
    # the data `seqgraph train --set data=...` would use
    assert target_leaks(read_spec("m.sg", TAGGER).checked) == []        # K, V: a tagger
    from seqgraph.lang.parse import parse_value
    assert target_leaks(read_spec("m.sg", TAGGER).checked, parse_value('chars("a.txt")'))
    # no data named: x and y of one size make a language model
    (leak,) = target_leaks(read_spec("m.sg", ELMAN.replace("h[t-1]", "h[t+1]")).checked)
    assert "the train block names no data, and x and y share the size V" in leak
    # a cell read backward: the hint names the cell, not its inner variables
    cell = (ROOT / "examples/tagging/tagger.sg").read_text().replace(
        'tagged("data/train.txt", vocab = 12000)', 'chars("a.txt")')
    (leak,) = target_leaks(read_spec("m.sg", cell).checked)
    assert "a `bi` or `reverse` cell reads later steps" in leak
    # a classifier reading its own label; a series whose target column is an input
    cls = """
input  x[t] : onehot(V)
target y    : class(K)
param W, U, b, Wo, R, bo
h[t] : 6 = tanh(W @ x[t] + U @ h[t-1] + b)
o = Wo @ h[end] + R @ y + bo
loss xent(o, y)
"""
    assert target_leaks(read_spec("m.sg", cls).checked) == [
        "o reads its own target y (line 6), which its loss compares it with: the model "
        "sees the answer"]
    ser = """
input  x[t] : vec(D)
target y[t] : vec(P)
param W, U, b, Wo, bo
h[t] : 5 = tanh(W @ x[t] + U @ h[t+1] + b)
o[t] = Wo @ h[t] + bo
loss mse(o[t], y[t])
train {
  data = series("s.csv", inputs = ["a", "b"], targets = ["b"])
}
"""
    (leak,) = target_leaks(read_spec("m.sg", ser).checked)
    assert "x[t+1] holds the target y[t] (series data: b is an input, and a target" in leak
    assert target_leaks(read_spec("m.sg", ser.replace('["b"]', '["c"]')).checked) == []


@pytest.mark.parametrize("body", [
    TAGGER + _data("tagged"),                                   # a bidirectional tagger
    TAGGER.replace("Wh @ x[t]", "Wh @ x[t+1]") + _data("tagged"),   # reads the next word
    (ROOT / "specs/seq2seq.sg").read_text(),                    # teacher forcing y[u-1]
    (ROOT / "specs/many_to_one.sg").read_text(),                # a classifier on h[end]
    (ROOT / "specs/jordan.sg").read_text(),                     # output feedback y[t-1]
], ids=["tagger", "tagger-next-word", "seq2seq", "classifier", "jordan"])
def test_legitimate_models_are_not_warned_of(body):
    assert target_leaks(read_spec("m.sg", body).checked) == []


GALLERY = sorted([*ROOT.glob("specs/*.sg"), *ROOT.glob("examples/*/*.sg")])


@pytest.mark.parametrize("path", GALLERY, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_gallery_and_examples_check_without_a_leak_warning(path, capsys):
    assert target_leaks(read_spec(str(path)).checked) == []
    assert main(["check", str(path)]) == 0
    assert "sees the answer" not in capsys.readouterr().err


def test_the_check_report_and_the_loaders_name_the_same_streams():
    """graph/ keeps its own list of the token-stream loaders (it does not load train/);
    it must be the loaders' own."""
    from seqgraph.graph.report import STREAMS
    from seqgraph.train.loaders import STREAM_KINDS
    assert STREAMS == STREAM_KINDS


def test_check_says_where_the_loop_of_an_output_fed_back_runs(capsys):
    """Walk 11: the Jordan net (Fig. 10.4) was 'none (a feed-forward model)'; and a model
    sample refuses to generate was said to be generated, then not."""
    assert main(["check", str(ROOT / "specs/jordan.sg")]) == 0
    out = capsys.readouterr().out
    assert "  none in training: the only loop runs through the target y read back, which " \
        "the data gives (teacher forcing: every step at once)" in out
    assert main(["check", str(ROOT / "specs/bidirectional.sg"), "--set",
                 'data=chars("small.txt")']) == 0
    gen = capsys.readouterr().out.split("generation:")[1].split("\n\n")[0]
    assert "seqgraph sample refuses it (data = chars(...)): it would generate y[t] step " \
        "by step, which this model cannot (below)" in gen and "continues --prime" not in gen
