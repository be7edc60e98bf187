"""A trained run is scored and sampled as it was trained: with the sizes `--dim` gave,
on the data `--set data=...` gave, and never choosing an id that names no token."""
from __future__ import annotations

import json

import pytest

from seqgraph.cli import main
from seqgraph.train.session import restore, trained_config

from test_train_cli import LM, tiny_text


@pytest.fixture
def work(tmp_path, monkeypatch):
    (tmp_path / "tiny.txt").write_text(tiny_text())
    (tmp_path / "lm.sg").write_text(LM)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def train(capsys, out, *extra):
    code, _, err = run(capsys, "train", "lm.sg", "--out", out, "--quiet", "--steps", 6,
                       *extra)
    assert code == 0, err


def test_a_size_given_by_dim_is_the_size_eval_sample_and_resume_use(work, capsys):
    train(capsys, "h8", "--dim", "H=8")                       # the spec says H = 12
    t = restore("lm.sg", "h8/checkpoint.npz")
    assert t.model.params["U"].shape == (8, 8)
    code, out, err = run(capsys, "eval", "lm.sg", "--checkpoint", "h8", "--json")
    assert code == 0, err
    code, out, err = run(capsys, "sample", "lm.sg", "--checkpoint", "h8", "--length", 20,
                         "--seed", 1)
    assert code == 0 and len(out.strip()) > 0, err
    code, _, err = run(capsys, "train", "lm.sg", "--resume", "h8", "--quiet", "--steps", 8)
    assert code == 0, err
    assert restore("lm.sg", "h8/checkpoint.npz").model.params["U"].shape == (8, 8)


def test_eval_scores_the_data_the_run_was_trained_on(work, capsys):
    (work / "other.txt").write_text(tiny_text(seed=3))
    words = 'data=words("other.txt", vocab=30)'
    train(capsys, "w", "--set", words)
    code, out, err = run(capsys, "eval", "lm.sg", "--checkpoint", "w", "--json")
    assert code == 0, err
    implicit = json.loads(out)
    code, out, err = run(capsys, "eval", "lm.sg", "--checkpoint", "w", "--json", "--data",
                         'words("other.txt", vocab=30)')
    held_out_of_all = json.loads(out)
    assert implicit["file"].endswith("other.txt") and implicit["tokens"] > 0
    # the held-out tail of other.txt, read as words: its tokens are words, not characters
    assert implicit["tokens"] < held_out_of_all["tokens"] < 400
    # a run trained on the spec's own data keeps the spec's configuration (and locations)
    train(capsys, "c")
    t = restore("lm.sg", "c/checkpoint.npz")
    assert trained_config(t, "lm.sg").from_set == frozenset()
    assert trained_config(restore("lm.sg", "w/checkpoint.npz"), "lm.sg").from_set == {"data"}


def test_sampling_never_chooses_an_id_that_names_no_token(work, capsys):
    train(capsys, "v", "--dim", "V=100")                 # the text has 13 symbols
    alphabet = set(tiny_text())
    for flags in ((), ("--greedy",), ("--temperature", 5)):
        code, out, err = run(capsys, "sample", "lm.sg", "--checkpoint", "v", "--length",
                             200, "--seed", 2, *flags)
        assert code == 0, err
        assert set(out) <= alphabet | {"\n"}, out


def test_train_warns_of_a_model_that_reads_its_answer_even_when_quiet(work, capsys):
    (work / "leak.sg").write_text(LM.replace("U @ h[t-1]", "U @ h[t+1]"))
    code, _, err = run(capsys, "train", "leak.sg", "--out", "r", "--quiet", "--steps", 2)
    assert code == 0, err
    assert "leak.sg: warning: o[t] reads x at every later step (h[t] reads h[t+1], line " \
        "6): x[t+1] is the target y[t] of a language model (chars data: y[t] = x[t+1]), " \
        "so the model sees the answer; did you mean h[t-1]?" in err.splitlines(), err
    code, _, err = run(capsys, "train", "lm.sg", "--out", "r2", "--quiet", "--steps", 2)
    assert code == 0 and "warning: o[t]" not in err, err


def test_small_things_a_new_user_met(work, capsys):
    """A run folder replaced is said; --dim twice is refused; a bare path in --set gets
    the loader call to write; a checkpoint is as readable as the other files of a run."""
    import os
    import stat
    train(capsys, "r")
    code, _, err = run(capsys, "train", "lm.sg", "--out", "r", "--quiet", "--steps", 2)
    assert code == 0 and "warning: r holds a run already" in err, err
    mode = stat.S_IMODE(os.stat("r/checkpoint.npz").st_mode)
    assert mode == stat.S_IMODE(os.stat("r/metrics.csv").st_mode), oct(mode)
    code, _, err = run(capsys, "check", "lm.sg", "--dim", "H=3", "--dim", "H=4")
    assert code == 2 and "--dim H is given twice (H=3 and H=4)" in err
    code, _, err = run(capsys, "train", "lm.sg", "--set", "data=tiny.txt")
    assert code == 2 and "--set 'data=chars(\"tiny.txt\")'" in err, err
    (work / "ds.sg").write_text(LM.replace("o[t] = Wo @ dropout(h[t], 0.1) + bo",
                                           "o[t] = softmax(Wo @ h[t] + bo)"))
    code, _, err = run(capsys, "check", "ds.sg")
    assert code == 0 and "ds.sg:7:1: warning: o is a softmax and xent applies a softmax " \
        "to it again: xent takes logits" in err, err


def test_an_output_in_a_folder_that_is_not_there_is_refused_first(work, capsys):
    train(capsys, "r")
    for argv in (["render", "lm.sg", "-o", "no/g.dot"], ["render", "lm.sg", "-o", "no/g.png"],
                 ["jacobian", "lm.sg", "-o", "no/j.png"],
                 ["eval", "lm.sg", "--checkpoint", "r", "--per-example", "no/p.csv"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "the folder 'no' does not exist" in err, (argv, err)
        assert "Traceback" not in err
