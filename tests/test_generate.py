"""Generation (seqgraph/train/generate.py, seqgraph/cmd/sample.py) and the static check
that refuses to generate from a model reading the future (graph/generate_check.py).

Tiny models and the interpreter: the whole file runs in seconds."""
from __future__ import annotations

import json
import types
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import seqgraph
from seqgraph.cli import main
from seqgraph.graph.generate_check import can_generate
from seqgraph.train import checkpoint as ck
from seqgraph.train.binding import Binding
from seqgraph.train.evaluate import greedy_decode
from seqgraph.train.generate import Generator, Hyp, _beaten, log_softmax, make_plan
from seqgraph.train.loaders import Vocab

import conftest
from conftest import fails, sg

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"

SEQ2SEQ = ("model s2s\n" + (Path(__file__).parent / "data" / "tiny_s2s_body.sg").read_text() + """\
train {
  data = pairs("pairs.tsv")
  valid = pairs("pairs.tsv")
  optimizer = adam(lr = 0.05)
  batch = 8
}
""")

# the same with a bidirectional encoder: the source index is read ahead (g[t+1], g[1]),
# so each step runs the whole encoder again
BI_ENCODER = SEQ2SEQ.replace(
    "c    : H = tanh(Vc @ h[end])",
    "param Wg, Ug\ng[t] : H = tanh(Wg @ (E @ x[t]) + Ug @ g[t+1])\n"
    "c    : H = tanh(Vc @ [h[end]; g[1]])")

# the decoder reads a backward recurrence over the generated index
FUTURE = SEQ2SEQ.replace(
    "o[u] = Oh @ s[u]",
    "param Wb, Ub\nb[u] : H = tanh(Wb @ s[u] + Ub @ b[u+1])\no[u] = Oh @ b[u]")

LETTERS = "abcdef"


def reverse_pairs(n=40, seed=0) -> str:
    """A toy transduction: the source letters reversed and upper-cased."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        w = rng.choice(list(LETTERS), rng.integers(1, 5))
        lines.append(" ".join(w) + "\t" + " ".join(c.upper() for c in w[::-1]))
    return "\n".join(lines) + "\n"


def model(text: str, seed=1, scale=3.0, **dims):
    spec = seqgraph.read_spec("m.sg", text)
    m = seqgraph.Model(spec, dims=dims or {"Vx": 7, "Vy": 9}, dtype="float64", seed=seed,
                       start_ids={"y": 0})
    for p in m.params.values():
        p *= scale           # sharper distributions than at initialisation
    return m


def generator(m, **kw):
    return Generator(m, make_plan(m), start=0, eos=1, **kw)


SRC = {"x": np.array([2, 3, 4, 5, 6])}


# ---------------------------------------------------------------------- the check
def test_the_static_check_refuses_a_backward_recurrence_over_the_generated_index():
    ok, why = can_generate(seqgraph.read_spec("m.sg", FUTURE).graph)
    assert not ok
    assert "b[u] reads b[u+1] (line 14)" in why and "o[u] depends on it" in why


@pytest.mark.parametrize("line, read", [
    ("o[u] = Oh @ s[end] + Oy @ (F @ y[u-1]) + Oc @ c + bo", "s[end]"),
    ("o[u] = Oh @ s[u] + Oy @ (F @ y[u]) + Oc @ c + bo", "y[u]"),
])
def test_the_static_check_refuses_the_end_of_the_output_and_the_target_itself(line, read):
    text = SEQ2SEQ.replace("o[u] = Oh @ s[u] + Oy @ (F @ y[u-1]) + Oc @ c + bo", line)
    ok, why = can_generate(seqgraph.read_spec("m.sg", text).graph)
    assert not ok and f"reads {read} (line 13)" in why


@pytest.mark.parametrize("name", ["seq2seq", "conditional", "one_to_many", "jordan",
                                  "charlm", "elman"])
def test_the_static_check_accepts_the_generative_gallery(name):
    assert can_generate(seqgraph.read_spec(str(SPECS / f"{name}.sg")).graph) == (True, "")


def test_the_static_check_accepts_a_bidirectional_encoder_and_refuses_a_tagger():
    assert can_generate(seqgraph.read_spec("m.sg", BI_ENCODER).graph)[0]
    ok, why = can_generate(seqgraph.read_spec(str(SPECS / "bidirectional.sg")).graph)
    assert not ok and "g[t+1]" in why


ATTENTION = (SPECS / "attention.sg").read_text()


# weights over the decoder's steps u, read by the output alone (inside the recurrence,
# `a[u, t] = softmax over u (e[u, t])` is a cycle: refused by the check, test_errors.py)
OVER_U = ("o[u] = Oh @ s[u] + Oc @ ctx[u] + bo",
          "param Ob\nb[u, t] = softmax over u (e[u, t])\n"
          "o[u] = Oh @ s[u] + Oc @ ctx[u] + Ob @ (sum over t (b[u, t] * h[t])) + bo")


@pytest.mark.parametrize("old, new, message", [
    (*OVER_U,
     ("b[u, t] uses 'softmax over u' (line 26), a reduction over the generated index u: "
      "it normalises over every step of u, the steps not generated yet included; o[u] "
      "depends on it")),
    ("o[u] = Oh @ s[u] + Oc @ ctx[u] + bo",
     "param Om\no[u] = Oh @ s[u] + Oc @ ctx[u] + Om @ (mean over u (s[u])) + bo",
     ("o[u] uses 'mean over u' (line 26), a reduction over the generated index u: it "
      "averages every step of u")),
    ("init s = tanh(Wi @ h[1])",
     ("param Wm, Wn\nm : H = tanh(Wm @ (sum over u (F @ y[u-1])))\n"
      "init s = tanh(Wi @ h[1] + Wn @ m)"),
     "m uses 'sum over u' (line 21)"),                  # m feeds o through init s
])
def test_the_static_check_refuses_a_reduction_over_the_generated_index(old, new, message):
    assert old in ATTENTION
    ok, why = can_generate(seqgraph.read_spec("m.sg", ATTENTION.replace(old, new)).graph)
    assert not ok and why.startswith("cannot generate y[u]: ") and message in why, why
    assert "not sampled" in why


def test_sample_refuses_a_reduction_over_the_generated_index(tmp_path, capsys):
    text = ATTENTION.replace(*OVER_U)
    vocab = Vocab("words", ("<unk>", "a", "b"), Vocab("words", ("<unk>", "<s>", "</s>", "A")))
    spec, c = checkpoint_for(tmp_path, text, "att", vocab,
                             Binding("x", "y", True, {}, "pairs", {"y": 1}),
                             {"Vx": 3, "Vy": 4})
    err = fails(capsys, "sample", spec, "--checkpoint", c, "--input", "a b")
    assert "b[u, t] uses 'softmax over u' (line 26)" in err and len(err.splitlines()) == 1


def test_a_reduction_over_the_source_index_is_generated():
    assert can_generate(seqgraph.read_spec(str(SPECS / "attention.sg")).graph) == (True, "")
    assert can_generate(seqgraph.read_spec(str(SPECS / "luong.sg")).graph) == (True, "")


# ---------------------------------------------------------------------- decoding
LUONG = (SPECS / "luong.sg").read_text()      # attention over an encoder that looks back


@pytest.mark.parametrize("text", [SEQ2SEQ, BI_ENCODER, LUONG],
                         ids=["seq2seq", "bi-encoder", "attention"])
def test_greedy_is_deterministic_and_is_the_argmax_of_a_teacher_forced_run(text):
    m = model(text)
    g = generator(m)
    a = g.sample(g.context([SRC]), 12, greedy=True)[0]
    assert a == g.sample(g.context([SRC]), 12, greedy=True)[0]
    # fed its own output as the true target, the model's argmax at each step (<s>, never
    # an output, left out) is that output
    y = np.array([(a + [1])[:12]])
    o = np.array(m.run({"x": SRC["x"][None]}, {"y": y}).values["o"][0])
    if g.start is not None:
        o[:, g.start] = -np.inf
    assert o.argmax(-1).tolist() == y[0].tolist()


def test_generation_never_emits_the_start_token():
    m = model(SEQ2SEQ)
    g = generator(m)
    assert g.start is not None
    out = g.sample(g.context([SRC]), 30, temperature=5.0, rng=np.random.default_rng(0))[0]
    beams = g.beam(g.context([SRC]), 4, 12)
    assert g.start not in out and all(g.start not in h.tokens for h in beams)


def test_attention_runs_the_source_whole_at_each_step():
    """Review 20: luong.sg's encoder only looks back, so its source was run
    incrementally: each step fed the last source token alone with the encoder's carry,
    and the attention (`sum over t`) saw one source step instead of all of them."""
    assert not make_plan(model(LUONG)).incremental
    assert make_plan(model(SEQ2SEQ)).incremental


def test_incremental_and_whole_encoder_runs_agree():
    m = model(SEQ2SEQ)
    inc, whole = generator(m), generator(m, incremental=False)
    assert inc.incremental and not whole.incremental
    for src in (SRC, {"x": np.array([3])}):
        a, b = inc.context([src]), whole.context([src])
        la, _ = inc.step(a, np.zeros(1, int), inc._first_carry(a, 1), None, 0)
        lb, _ = whole.step(b, np.zeros(1, int), whole._first_carry(b, 1), None, 0)
        np.testing.assert_allclose(la, lb, rtol=1e-12)
        ha, hb = inc.beam(a, 3, 10), whole.beam(b, 3, 10)
        assert [h.tokens for h in ha] == [h.tokens for h in hb]
        assert [h.score for h in ha] == pytest.approx([h.score for h in hb], rel=1e-12)


def test_a_padded_batch_decodes_as_its_examples_one_at_a_time():
    m = model(BI_ENCODER)
    g = generator(m)
    srcs = [SRC, {"x": np.array([3, 2])}, {"x": np.array([6, 6, 1, 5])}]
    one = [g.sample(g.context([s]), 10, greedy=True)[0] for s in srcs]
    assert g.sample(g.context(srcs), 10, greedy=True) == one


def test_beams_of_a_padded_batch_are_the_beams_of_its_examples():
    m = model(BI_ENCODER, scale=1.5)
    g = generator(m)
    srcs = [SRC, {"x": np.array([3, 2])}, {"x": np.array([6, 6, 1, 5])}]
    many = g.beam_many(g.context(srcs), 4, 10)
    for src, hyps in zip(srcs, many, strict=True):
        one = g.beam(g.context([src]), 4, 10)
        assert [h.tokens for h in hyps] == [h.tokens for h in one]
        assert [h.score for h in hyps] == pytest.approx([h.score for h in one], rel=1e-9)


@pytest.mark.parametrize("text", [SEQ2SEQ, BI_ENCODER])
def test_beam_of_one_is_greedy(text):
    m = model(text)
    g = generator(m)
    for seed in range(3):
        src = {"x": np.random.default_rng(seed).integers(0, 7, 4)}
        hyps = g.beam(g.context([src]), 1, 12)
        assert len(hyps) == 1
        assert hyps[0].tokens == g.sample(g.context([src]), 12, greedy=True)[0]


def test_beam_hypotheses_are_sorted_and_scored_by_their_log_probability():
    m = model(SEQ2SEQ, scale=1.5)
    g = generator(m)
    hyps = g.beam(g.context([SRC]), 5, 15, alpha=0.6)
    assert len(hyps) == 5
    norm = [h.normalised for h in hyps]
    assert norm == sorted(norm, reverse=True)
    assert len({tuple(h.tokens) for h in hyps}) == 5
    for h in hyps:
        assert h.normalised == pytest.approx(h.score / h.length ** 0.6)
        y = np.array([h.tokens + [1] * h.finished])
        res = m.run({"x": SRC["x"][None]}, {"y": y})
        assert -res.loss == pytest.approx(h.score, rel=1e-9)
    # the best of the beam is at least as likely (normalised) as the greedy output
    greedy = g.sample(g.context([SRC]), 15, greedy=True)[0]
    res = m.run({"x": SRC["x"][None]}, {"y": np.array([greedy + [1]])})
    assert norm[0] >= -res.loss / (len(greedy) + 1) ** 0.6 - 1e-9


# A bigram decoder with chosen log-probabilities: R[next, prev], ids 0 <s>, 1 </s>, 2 a,
# 3 b, 4 c. After <s>: a (0.91), </s> (0.045), b (0.041); after a: c; after b or c: </s>.
BIGRAM = """model bigram
input  x[t] : onehot(Vx)
target y[u] : class(Vy)
param E, Z, R
c : 1 = sum over t (E @ x[t])
o[u] = R @ y[u-1] + Z @ c
loss xent(o[u], y[u])
"""


def bigram(first_start=False):
    m = seqgraph.Model(seqgraph.read_spec("b.sg", BIGRAM), dims={"Vx": 3, "Vy": 5},
                       dtype="float64", start_ids={"y": 0})
    for p in m.params.values():
        p[...] = 0.0
    R = np.full((5, 5), -50.0)
    R[2, 0], R[1, 0], R[3, 0], R[4, 2], R[1, 4], R[1, 3] = 5, 2, 1.9, 5, 5, 5
    if first_start:
        R[0, :] = 9.0                                   # <s> the likeliest everywhere
    m.params["R"][...] = R
    return m


def test_beam_search_goes_on_while_a_live_hypothesis_can_still_win():
    """K = 2: after two steps two outputs have finished ('' and 'b', both below 4%) while
    'a c' (91%) still lives; stopping at K finished returned '' (review 29: beam search
    below greedy). It ends only when no live score can beat the K-th finished one."""
    m = bigram()
    g = generator(m)
    src = {"x": np.array([1, 2])}
    greedy = g.sample(g.context([src]), 10, greedy=True)[0]
    assert greedy == [2, 4]
    for K in (1, 2, 3, 4):
        for alpha in (0.0, 0.6, 1.0):
            hyps = g.beam(g.context([src]), K, 10, alpha=alpha)
            assert hyps[0].tokens == [2, 4] and hyps[0].finished, (K, alpha, hyps)
            # '' (length 1, </s>) and 'b' (length 2) swap places once length counts
            best = [[2, 4], [], [3]] if alpha == 0 else [[2, 4], [3], []]
            assert [h.tokens for h in hyps][:3] == best[:K], (K, alpha, hyps)
    nxt = [(0, 2, -0.5)]                         # the bound: s / limit ** alpha
    done = [Hyp([], -1.0, True, 0.0), Hyp([3], -2.0, True, 0.0)]
    assert not _beaten(nxt, done, 2, 0.0, 10) and _beaten([(0, 2, -2.5)], done, 2, 0.0, 10)
    assert not _beaten(nxt, done, 3, 0.0, 10) and _beaten([], done, 3, 0.0, 10)
    assert not _beaten([(0, 2, -2.5)], done, 2, 1.0, 10)     # -2.5 / 10 > -2.0 / 2


def test_a_large_alpha_ranks_by_length_without_overflow():
    """length ** alpha overflowed a float (alpha 200 at length 100: an OverflowError
    traceback, review 31) and score / length ** alpha underflowed to 0, every output
    tied: ranks are compared in logs."""
    m = bigram()
    g = generator(m)
    src = {"x": np.array([1, 2])}
    hyps = g.beam(g.context([src]), 3, 100, alpha=200.0)
    # at that alpha length is all: the outputs cut at the 100 steps win, however unlikely
    assert [h.length for h in hyps] == [100, 100, 100], hyps
    assert hyps[0].rank <= hyps[1].rank <= hyps[2].rank
    assert all(h.normalised == 0.0 for h in hyps)          # what --nbest shows underflows
    at1 = g.beam(g.context([src]), 3, 10, alpha=1.0)        # and the ranks are the scores'
    assert [h.normalised for h in at1] == pytest.approx([h.score / h.length for h in at1])
    with pytest.raises(seqgraph.errors.UsageError, match="--alpha must be 0 or more"):
        g.beam(g.context([src]), 2, 10, alpha=-1.0)


def test_eval_greedy_decoding_never_chooses_the_start_symbol():
    """<s> is fed back before the first step, never an output: sample bans it, and so
    does eval's greedy decoder (review 29: it output <s> where the model favoured it)."""
    m = bigram(first_start=True)
    g = generator(m)
    src = {"x": np.array([1, 2])}
    out = greedy_decode(m, m.graph, types.SimpleNamespace(target="y"),
                        {"x": src["x"][None]}, 10, eos=1)
    assert out == [g.sample(g.context([src]), 10, greedy=True)[0]] == [[2, 4]]


def test_sampling_with_a_seed_is_reproducible():
    m = model(SEQ2SEQ, scale=1.0)
    g = generator(m)
    draw = lambda seed, T=1.0: g.sample(g.context([SRC]), 20, T, False,
                                        np.random.default_rng(seed))[0]
    assert draw(3) == draw(3)
    assert len({tuple(draw(s)) for s in range(6)}) > 1
    # a temperature near zero is the argmax
    assert draw(4, 1e-4) == g.sample(g.context([SRC]), 20, greedy=True)[0]


def test_top_k_and_top_p_draw_from_the_kept_tokens_renormalised():
    """--top-k K: the K likeliest; --top-p P: the fewest likeliest reaching P (the token
    crossing P kept); the rest renormalised; `<s>` stays banned; empirical frequencies
    over 20000 draws within 1.5% of the renormalised probabilities."""
    from seqgraph.train.generate import choose
    p = np.array([0.05, 0.4, 0.3, 0.15, 0.1])
    logits = np.log(np.tile(p, (20000, 1)))
    rng = np.random.default_rng(0)
    for kw, kept in (({"top_k": 2}, [1, 2]), ({"top_p": 0.6}, [1, 2]),
                     ({"top_p": 0.7}, [1, 2]), ({"top_p": 0.71}, [1, 2, 3]),
                     ({"top_k": 3, "top_p": 0.5}, [1, 2]), ({"top_k": 9}, [0, 1, 2, 3, 4]),
                     # top-p on what top-k kept, renormalised (.57, .43): Hugging Face's
                     # order (review 31: the nucleus of the whole kept both)
                     ({"top_k": 2, "top_p": 0.5}, [1])):
        tok = choose(logits, 1.0, False, rng, **kw)
        want = np.zeros(5)
        want[kept] = p[kept] / p[kept].sum()
        np.testing.assert_allclose(np.bincount(tok, minlength=5) / len(tok), want,
                                   atol=0.015, err_msg=str(kw))
    tok = choose(logits, 1.0, False, rng, banned=1, top_k=2)     # <s> is not kept
    assert set(np.unique(tok)) == {2, 3}
    T = 0.5                                                       # temperature, then top-k
    q = p[[1, 2, 3]] ** (1 / T)
    tok = choose(logits, T, False, rng, top_k=3)
    np.testing.assert_allclose(np.bincount(tok, minlength=5)[[1, 2, 3]] / len(tok),
                               q / q.sum(), atol=0.015)


def test_log_softmax_is_normalised():
    z = log_softmax(np.array([[1.0, 2.0, 1000.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(np.exp(z).sum(-1), 1.0)


# ---------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def s2s(tmp_path_factory):
    """A tiny seq2seq trained for a few steps by `seqgraph train` on pairs."""
    d = tmp_path_factory.mktemp("s2s")
    (d / "pairs.tsv").write_text(reverse_pairs())
    (d / "s2s.sg").write_text(SEQ2SEQ)
    assert main(["train", str(d / "s2s.sg"), "--out", str(d / "run"), "--executor", "interp",
                 "--quiet", "--steps", "6"]) == 0
    return d


def test_sample_input_writes_tokens_of_the_target_vocabulary(s2s, capsys):
    spec, run = s2s / "s2s.sg", s2s / "run"
    targets = set(LETTERS.upper())
    for extra in (["--greedy"], ["--seed", "1"], ["--beam", "3"]):
        code, out = sg(capsys, "sample", spec, "--checkpoint", run, "--input", "a b c",
                       "--length", 8, *extra)
        assert code == 0, out.err
        toks = out.out.split()
        assert len(toks) <= 8 and set(toks) <= targets | {"<unk>"}
    code, out = sg(capsys, "sample", spec, "--checkpoint", run, "--input", "a b c",
                   "--beam", 3, "--nbest", "--length", 8)
    rows = [line.split("\t") for line in out.out.splitlines()]
    assert code == 0 and len(rows) == 3
    code, out = sg(capsys, "sample", spec, "--checkpoint", run, "--input", "a b c",
                   "--nbest")                  # a sample is one: refused, not ignored
    assert code == 2 and "--nbest prints the beam's hypotheses: give --beam K" in out.err
    scores = [float(r[0]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    # a large --alpha makes the scores small numbers: shown in 5 digits, not as -0.0000
    code, out = sg(capsys, "sample", spec, "--checkpoint", run, "--input", "a b c",
                   "--beam", 3, "--nbest", "--length", 8, "--alpha", 8)
    small = [float(line.split("\t")[0]) for line in out.out.splitlines()]
    assert code == 0 and all(-1e-2 < x < 0 for x in small), out.out
    greedy = sg(capsys, "sample", spec, "--checkpoint", run, "--input", "a b c", "--greedy",
                "--length", 8)[1].out
    beam1 = sg(capsys, "sample", spec, "--checkpoint", run, "--input", "a b c", "--beam", 1,
               "--length", 8)[1].out
    assert greedy == beam1


@pytest.mark.parametrize("argv, message", [
    (["--input", "a z q"], r"'z', 'q' are not in the source vocabulary"),
    (["--input", "  "], r"--input is empty"),
    ([], r"this model reads 'x': give its text with --input"),
    (["--input", "a", "--prime", "a"], r"--prime is for language models"),
    (["--input", "a", "--beam", "0"], r"--beam must be at least 1"),
    (["--input", "a", "--temperature", "0"], r"--temperature must be positive"),
    # options of another way of choosing are refused, not ignored (review 29)
    (["--input", "a", "--greedy", "--temperature", "0.5"],
     r"--temperature shapes sampling; --greedy takes the most likely tokens"),
    (["--input", "a", "--beam", "2", "--temperature", "2"],
     r"--temperature shapes sampling; --beam 2 takes"),
    (["--input", "a", "--alpha", "1"], r"--alpha ranks a beam's outputs: give --beam K"),
    (["--input", "a", "--greedy", "--top-k", "3"], r"--top-k shapes sampling; --greedy"),
    (["--input", "a", "--beam", "3", "--top-p", "0.9"], r"--top-p shapes sampling; --beam"),
    (["--input", "a", "--top-k", "0"], r"--top-k must be at least 1"),
    (["--input", "a", "--top-p", "1.5"], r"--top-p must be in \(0, 1\]"),
    (["--input", "a", "--beam", "2", "--alpha", "-1"], r"--alpha must be 0 or more"),
])
def test_bad_input_exits_2_without_a_traceback(s2s, capsys, argv, message):
    import re
    err = fails(capsys, "sample", s2s / "s2s.sg", "--checkpoint", s2s / "run", *argv)
    assert re.search(message, err), err


def test_an_output_cut_by_length_is_said_on_stderr(s2s, capsys):
    """`--length` counts </s>: an output cut there looked like a finished one (review
    29); it is said, and not said of one that ended."""
    for how in (["--greedy"], ["--beam", "2"], ["--seed", "3"]):
        code, out = sg(capsys, "sample", s2s / "s2s.sg", "--checkpoint", s2s / "run",
                       "--input", "a b c", "--length", 1, *how)
        assert code == 0 and len(out.out.split()) <= 1, out
        cut = "the output was cut at --length 1" in out.err
        assert cut == (out.out.strip() != ""), out      # 1 token and no room for </s>
    code, out = sg(capsys, "sample", s2s / "s2s.sg", "--checkpoint", s2s / "run",
                   "--input", "a b c", "--greedy", "--length", 60)
    assert code == 0 and "cut at" not in out.err, out


def test_unknown_input_tokens_read_as_unk_on_request(s2s, capsys):
    code, out = sg(capsys, "sample", s2s / "s2s.sg", "--checkpoint", s2s / "run",
                   "--input", "a z", "--unk", "--greedy", "--length", 5)
    assert code == 0, out.err


def checkpoint_for(tmp_path, text: str, name: str, vocab: Vocab, binding: Binding,
                   dims: dict, **meta_extra) -> tuple[Path, Path]:
    """A spec and a checkpoint of its freshly initialised model, as training writes it
    (`meta_extra`: more of its meta, e.g. the loaders `--set` gave)."""
    spec = tmp_path / f"{name}.sg"
    spec.write_text(text)
    m = seqgraph.Model(seqgraph.read_spec(str(spec)), dims=dims, seed=3)
    meta = {"model": name, "dims": dims, "dtype": "float32", "vocab": vocab.to_json(),
            "binding": asdict(binding), **meta_extra}
    return spec, ck.save(tmp_path / f"{name}.npz", m.params, meta)


def test_a_model_reading_the_future_is_refused_with_the_reason(tmp_path, capsys):
    vocab = Vocab("words", ("<unk>", "a", "b"), Vocab("words", ("<unk>", "<s>", "</s>", "A")))
    spec, c = checkpoint_for(tmp_path, FUTURE, "future", vocab,
                             Binding("x", "y", True, {}, "pairs", {"y": 1}),
                             {"Vx": 3, "Vy": 4})
    err = fails(capsys, "sample", spec, "--checkpoint", c, "--input", "a b")
    assert "b[u] reads b[u+1] (line 14)" in err and len(err.splitlines()) == 1


def test_one_to_many_reads_a_vector_or_draws_one(tmp_path, capsys):
    text = (SPECS / "one_to_many.sg").read_text()
    vocab = Vocab("words", ("<unk>", "<s>", "</s>", "p", "q", "r"))
    spec, c = checkpoint_for(tmp_path, text, "otm", vocab,
                             Binding(None, "y", True, {}, "vectors", {"y": 1}), {"V": 6})
    args = ["sample", spec, "--checkpoint", c, "--length", 7]
    code, out = sg(capsys, *args, "--input", "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8", "--greedy")
    assert code == 0, out.err
    assert set(out.out.split()) <= set(vocab.tokens) and len(out.out.split()) <= 7
    a = sg(capsys, *args, "--seed", 5)[1]
    assert a.out == sg(capsys, *args, "--seed", 5)[1].out
    # the vector drawn is said (walk 11: a bare output could not be reproduced by hand)
    drawn = np.random.default_rng(5).standard_normal(8)
    assert a.err == f"c drawn from N(0, 1) (--seed 5): {' '.join(f'{x:.4g}' for x in drawn)}\n"
    err = fails(capsys, *args, "--input", "0.1,0.2")
    assert "--input must be 8 finite numbers for 'c' : vec(8); it has 2" in err
    err = fails(capsys, *args, "--input", "one,two")
    assert "--input must be 8 numbers" in err


def test_an_empty_output_is_a_line_and_said_why(tmp_path, capsys):
    """A model whose first choice is </s> writes an empty line (one an --input, for
    scripts), and says on stderr why it is empty (walk 11: a bare empty line)."""
    text = (SPECS / "one_to_many.sg").read_text()
    vocab = Vocab("words", ("<unk>", "<s>", "</s>", "p", "q", "r"))
    spec, c = checkpoint_for(tmp_path, text, "otm", vocab,
                             Binding(None, "y", True, {}, "vectors", {"y": 1}), {"V": 6})
    z = dict(np.load(c))
    z["bo"] = np.where(np.arange(6) == 2, 50.0, 0.0).astype(z["bo"].dtype)   # </s> first
    np.savez(c, **z)
    for how in (["--greedy"], ["--beam", "3"]):
        code, out = sg(capsys, "sample", spec, "--checkpoint", c, "--seed", 1, *how)
        assert code == 0 and out.out == "\n", out
        assert "the output is empty: the model's first choice was </s>" in out.err


def test_a_conditional_model_writes_one_output_per_input_step(tmp_path, capsys):
    text = (SPECS / "conditional.sg").read_text()
    vocab = Vocab("words", ("<unk>", "the", "cat", "sat"), Vocab("labels", ("D", "N", "V")))
    spec, c = checkpoint_for(tmp_path, text, "cond", vocab,
                             Binding("x", "y", True, {}, "tagged", {}), {"V": 4, "K": 3})
    for extra in (["--greedy"], ["--beam", "2"], ["--seed", "0"]):
        code, out = sg(capsys, "sample", spec, "--checkpoint", c, "--input", "the cat sat",
                       *extra)
        assert code == 0, out.err
        # word/TAG, as a one-pass tagger prints them (walk 14: bare tags)
        words, tags = zip(*(w.split("/") for w in out.out.split()), strict=True)
        assert words == ("the", "cat", "sat") and set(tags) <= {"D", "N", "V"}
        assert "cut" not in out.err
    # a tag a step of the input, and no </s>: a cut says the input's steps (walk 13)
    code, out = sg(capsys, "sample", spec, "--checkpoint", c, "--input", "the cat sat",
                   "--greedy", "--length", 2)
    assert code == 0 and [w.split("/")[0] for w in out.out.split()] == ["the", "cat"]
    assert out.err == "the output was cut at --length 2, before the input's 3 steps\n"
    # one that ended with </s> was not cut (review 33: said both)
    vocab = Vocab("words", ("<unk>", "the", "cat", "sat"), Vocab("labels", ("D", "N", "</s>")))
    spec, c = checkpoint_for(tmp_path, (SPECS / "conditional.sg").read_text(), "cnd", vocab,
                             Binding("x", "y", True, {}, "tagged", {}), {"V": 4, "K": 3})
    with np.load(c) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["Wo"][...], arrays["bo"][...] = 0, [0, 0, 5]      # </s> the likeliest always
    meta = json.loads(str(arrays.pop("__meta__")))
    arrays.pop("__meta_sha256__")
    ck.save(c, {k: v for k, v in arrays.items()}, meta)
    code, out = sg(capsys, "sample", spec, "--checkpoint", c, "--input", "the cat sat",
                   "--greedy", "--length", 2)
    assert code == 0 and out.out == "\n" and "cut" not in out.err, out


def test_a_language_model_beam_of_one_is_its_greedy_sample(tmp_path, capsys):
    text = (SPECS / "charlm.sg").read_text()
    chars = tuple("\n abc")
    spec, c = checkpoint_for(tmp_path, text, "lm", Vocab("chars", chars),
                             Binding("x", "y", False, {}), {"V": 5})
    meta = json.loads(str(np.load(c)["__meta__"]))
    assert meta["binding"]["kind"] == "stream"
    greedy = sg(capsys, "sample", spec, "--checkpoint", c, "--prime", "ab", "--greedy",
                "--length", 12)[1].out
    beam = sg(capsys, "sample", spec, "--checkpoint", c, "--prime", "ab", "--beam", 1,
              "--length", 12)[1].out
    assert greedy == beam and greedy.startswith("ab") and len(greedy) == 2 + 12 + 1
    nbest = sg(capsys, "sample", spec, "--checkpoint", c, "--prime", "ab", "--beam", 1,
               "--length", 12, "--nbest")[1].out
    score, _, text = nbest.rstrip("\n").partition("\t")        # the prime, a line a hypothesis
    assert float(score) <= 0 and text == greedy[:-1].replace("\n", "\\n")
    assert nbest.count("\n") == 1
    lines = sg(capsys, "sample", spec, "--checkpoint", c, "--prime", "a\nb", "--beam", 3,
               "--length", 12, "--nbest")[1].out.split("\n")[:-1]
    assert len(lines) == 3 and all(ln.split("\t")[1].startswith("a\\nb") for ln in lines)
    err = fails(capsys, "sample", spec, "--checkpoint", c, "--input", "ab")
    assert "a language model continues --prime" in err
    # a prime is read after a line start, as a line of the data begins (walk 13: from a
    # zero state, a model of one sentence a line continued it mid-word)
    assert sg(capsys, "sample", spec, "--checkpoint", c, "--prime", "\nab", "--greedy",
              "--length", 12)[1].out == "\n" + greedy
    err = fails(capsys, "sample", spec, "--checkpoint", c, "--prime", "aZ")
    assert err.startswith("--prime: 'Z' is not in the vocabulary of 5 tokens (\\n ' ' a b c)")


def test_a_prime_is_read_after_a_line_start():
    from seqgraph.train.generate import prime_ids
    chars = Vocab("chars", tuple("\n abc"))
    assert prime_ids(chars, [3, 4]) == [0, 3, 4] and prime_ids(chars, []) == [0]
    assert prime_ids(chars, [0, 3]) == [0, 3]                  # it starts a line already
    words = Vocab("words", ("<unk>", "</s>", "the", "cat"))
    assert prime_ids(words, [2, 3]) == [1, 2, 3]
    assert prime_ids(Vocab("chars", tuple("ab")), [1]) == [1]  # no line end to start after
    assert prime_ids(Vocab("chars", tuple("ab")), []) == [0]


def test_a_word_models_prime_refuses_unknown_words_unless_unk(tmp_path, capsys):
    """`--prime "the zebra"` read zebra as <unk> silently, where --input refuses it and a
    character model refuses an unknown character (walk 13)."""
    text = (SPECS / "charlm.sg").read_text()
    vocab = Vocab("words", ("<unk>", "</s>", "the", "cat"))
    spec, c = checkpoint_for(tmp_path, text, "wlm", vocab, Binding("x", "y", False, {}),
                             {"V": 4})
    err = fails(capsys, "sample", spec, "--checkpoint", c, "--prime", "the zebra")
    assert err.startswith("--prime: 'zebra' is not in the vocabulary of 4 tokens"), err
    assert err.endswith("--unk reads them as <unk>")
    code, out = sg(capsys, "sample", spec, "--checkpoint", c, "--prime", "the zebra",
                   "--unk", "--greedy", "--length", 3)
    assert code == 0 and out.out.startswith("the zebra "), out      # the prime as given


CLASSIFIER = """\
model cls
input  x[t] : onehot(V)
target y    : class(K)
param W, U, b, Wo, bo
h[t] : 6 = tanh(W @ x[t] + U @ h[t-1] + b)
o = Wo @ h[end] + bo
loss xent(o, y)
"""

TAGGER = "model tagger\n" + conftest.TAGGER


@pytest.mark.parametrize("text, kind", [(CLASSIFIER, "labeled"), (TAGGER, "tagged")],
                         ids=["classifier", "tagger"])
def test_labels_are_chosen_among_the_labels_when_k_is_larger(tmp_path, capsys, text, kind):
    """Trained with --dim K=5 on 2 labels: ids 2-4 name no label; sample never prints
    them, and its probabilities are the labels' (they sum to 1)."""
    labels = ("neg", "pos")
    vocab = Vocab("words", ("<unk>", "a", "b", "c"), Vocab("words", labels))
    spec, c = checkpoint_for(tmp_path, text, kind, vocab, Binding("x", "y", False, {}, kind),
                             {"V": 4, "K": 5})
    m = seqgraph.Model(seqgraph.read_spec(str(spec)), dims={"V": 4, "K": 5})
    ck.restore_params(ck.load(c), m.params)
    o = m.forward({"x": np.array([[1, 3, 2]])})["o"][0].astype(np.float64)[..., :2]
    p = np.exp(log_softmax(o))
    code, out = sg(capsys, "sample", spec, "--checkpoint", c, "--input", "a c b", "--nbest")
    assert code == 0, out.err
    if kind == "labeled":
        assert out.out == "".join(f"{labels[k]}\t{p[k]:.4f}\n" for k in np.argsort(-p))
    else:
        for row, pk in zip(out.out.splitlines(), p, strict=True):
            shown = dict(x.split(":") for x in row.split("\t")[1].split())
            assert set(shown) == set(labels) and float(shown[labels[pk.argmax()]]) == \
                pytest.approx(pk.max(), abs=1e-3)


@pytest.mark.parametrize("text, kind, labels", [
    (CLASSIFIER, "labeled", ("neg", "neu", "pos")),
    (TAGGER, "tagged", ("C", "V"))], ids=["classifier", "tagger"])
def test_sample_labels_the_input_of_a_classifier_or_a_tagger(tmp_path, capsys, text, kind,
                                                             labels):
    """A target not read back is labelled in one forward pass: the most likely label (a
    tagger: `word/TAG` per token), --nbest every label with its probability, best first;
    the options of step-by-step generation are refused with the reason."""
    vocab = Vocab("words", ("<unk>", "a", "b", "c"), Vocab("words", labels))
    spec, c = checkpoint_for(tmp_path, text, kind, vocab, Binding("x", "y", False, {}, kind),
                             {"V": 4, "K": len(labels)})
    m = seqgraph.Model(seqgraph.read_spec(str(spec)), dims={"V": 4, "K": len(labels)})
    ck.restore_params(ck.load(c), m.params)
    o = m.forward({"x": np.array([[1, 3, 2]])})["o"][0].astype(np.float64)
    p = np.exp(log_softmax(o))
    code, out = sg(capsys, "sample", spec, "--checkpoint", c, "--input", "a c b")
    assert code == 0, out.err
    if kind == "labeled":
        assert out.out == f"{labels[p.argmax()]}\t{p.max():.4f}\n"
    else:
        assert out.out.split() == [f"{w}/{labels[k]}"
                                   for w, k in zip("acb", p.argmax(-1), strict=True)]
    code, out = sg(capsys, "sample", spec, "--checkpoint", c, "--input", "a c b", "--nbest")
    rows = out.out.splitlines()
    if kind == "labeled":
        assert [r.split("\t")[0] for r in rows] == [labels[k] for k in np.argsort(-p)]
    else:
        assert [r.split("\t")[0] for r in rows] == ["a", "c", "b"]
        assert rows[1].split("\t")[1].split()[0] == f"{labels[p[1].argmax()]}:{p[1].max():.3f}"
    err = fails(capsys, "sample", spec, "--checkpoint", c, "--input", "a", "--beam", 2)
    does = "prints its most likely label" if kind == "labeled" else \
        "prints each token's most likely tag, word/TAG"           # walk 11: was 'label'
    assert "--beam is not for this model: 'y' is not read back, so it is not written one " \
           f"step at a time; sample {does}" in err


SERIES = """\
model ser
input  x[t] : vec(D)
target y[t] : vec(P)
param W, U, b, Wo, bo
h[t] : 5 = tanh(W @ x[t] + U @ h[t-1] + b)
o[t] = Wo @ h[t] + bo
loss mse(o[t], y[t])
"""


def test_sample_forecasts_with_a_series_model_in_the_datas_units(tmp_path, capsys):
    """A series model runs over --input (a number a step for one column, steps split by
    ';' for two): each step's prediction, the training data's scaling applied to the
    input and undone on the output, one line a step after a header."""
    stats = {"mean": [10.0, -1.0], "std": [2.0, 0.5], "target_mean": [100.0],
             "target_std": [4.0]}
    vocab = Vocab("series", ("a", "b"), Vocab("series", ("y",)), stats)
    spec, c = checkpoint_for(tmp_path, SERIES, "ser", vocab,
                             Binding("x", "y", False, {}, "series"), {"D": 2, "P": 1})
    m = seqgraph.Model(seqgraph.read_spec(str(spec)), dims={"D": 2, "P": 1})
    ck.restore_params(ck.load(c), m.params)
    raw = np.array([[12.0, -1.5], [8.0, 0.0], [10.0, -1.0]])
    x = ((raw - [10.0, -1.0]) / [2.0, 0.5])[None].astype(np.float32)
    want = m.forward({"x": x})["o"][0, :, 0] * 4.0 + 100.0
    code, out = sg(capsys, "sample", spec, "--checkpoint", c, "--input",
                   "12 -1.5; 8, 0; 10 -1")
    assert code == 0, out.err
    rows = [r.split("\t") for r in out.out.splitlines()]
    assert rows[0] == ["step", "a", "b", "y at t+1"]
    assert [r[:3] for r in rows[1:]] == [["1", "12", "-1.5"], ["2", "8", "0"],
                                         ["3", "10", "-1"]]
    assert np.allclose([float(r[3]) for r in rows[1:]], want, rtol=1e-5)
    err = fails(capsys, "sample", spec, "--checkpoint", c, "--input", "12 -1.5; 8")
    assert "--input step 2 must be 2 finite numbers for 'x' : vec(2); it has 1" in err
    # a number of float64 past float32's range: said, not numpy's overflow warning (fuzz 36)
    err = fails(capsys, "sample", spec, "--checkpoint", c, "--input", "1e300 1; 1 1")
    assert "--input holds a number beyond what the model's float32 holds (3.4e+38)" in err
    assert "Warning" not in err
    # trained with --set data=series(..., horizon=3): the header says what it forecasts
    (tmp_path / "s.csv").write_text("a,b,y\n")
    loaders = {"data": {"loader": "series", "args": [str(tmp_path / "s.csv")],
                        "kwargs": {"inputs": ["a", "b"], "targets": ["y"], "horizon": 3}}}
    spec, c = checkpoint_for(tmp_path, SERIES, "ser", vocab,
                             Binding("x", "y", False, {}, "series"), {"D": 2, "P": 1},
                             loaders=loaders)
    code, out = sg(capsys, "sample", spec, "--checkpoint", c, "--input", "12 -1.5; 8, 0")
    assert code == 0 and out.out.splitlines()[0].endswith("y at t+3"), out
    for flag in ("--nbest", "--greedy", "--unk"):                # not ignored: refused
        err = fails(capsys, "sample", spec, "--checkpoint", c, "--input", "1 2", flag)
        assert f"{flag} is not for this model: a forecast is one number a step, with no " \
            "labels to rank or choose among; sample forecasts each step" in err


def test_a_series_model_trained_at_the_last_step_forecasts_only_there(tmp_path, capsys):
    """`mse(o[end], y[end])` trains the last step's output alone: the other steps'
    would be untrained numbers, and are not written."""
    vocab = Vocab("series", ("a",), Vocab("series", ("y",)), {})
    text = SERIES.replace("mse(o[t], y[t])", "mse(o[end], y[end])")
    spec, c = checkpoint_for(tmp_path, text, "ser", vocab,
                             Binding("x", "y", False, {}, "series"), {"D": 1, "P": 1})
    m = seqgraph.Model(seqgraph.read_spec(str(spec)), dims={"D": 1, "P": 1})
    ck.restore_params(ck.load(c), m.params)
    want = m.forward({"x": np.array([[[1.0], [2.0], [3.0]]], np.float32)})["o"][0, -1, 0]
    code, out = sg(capsys, "sample", spec, "--checkpoint", c, "--input", "1 2 3")
    assert code == 0, out.err
    rows = [r.split("\t") for r in out.out.splitlines()]
    assert len(rows) == 2 and rows[1][:2] == ["3", "3"]
    assert np.isclose(float(rows[1][2]), want, rtol=1e-5)


def test_a_word_models_output_follows_its_prime_without_a_space_before_a_line_end():
    """`--prime a` on words data printed 'a ' then the line end (review 29)."""
    from seqgraph.cmd.sample import _after
    words, chars = Vocab("words", ["<unk>", "a", "b"]), Vocab("chars", ["a", "b"])
    assert _after("a", "\nb a", words) == "a\nb a"
    assert _after("a", "b", words) == "a b" and _after("a", "", words) == "a"
    assert _after("", "b", words) == "b" and _after("ab", "ba", chars) == "abba"
