"""Errors that must blame the right thing (a new user's walkthrough found them), and `--on-nan
skip`. Resuming another model's checkpoint names both models before any data, batch or
setting; a loader that cannot feed the model says so (and which loaders fit) before any
size; a size names where it came from; skipped batches are said once an epoch, --quiet
or not, and a run that skips every batch ends with an error."""
import re

import pytest

from seqgraph import read_spec
from seqgraph.cli import main
from seqgraph.errors import DataError
from seqgraph.train import checkpoint as ck

from conftest import ELMAN, TREE_SPEC, TREES, nan_on, train_quiet, update_rows

TEXT = "the cat sat on the mat. a dog ran far away home. " * 12    # 600 characters

LM = "\nmodel lm\ndim H = 6\n" + ELMAN + """\
train {
  data = chars("lm.txt")
  valid = 0.1
  optimizer = adam(lr = 0.05)
  batch = 4
  bptt = 10
  epochs = 1
}
"""

# another model (other parameters, batch, bptt and optimiser) on the same text
GRU = """\
model grulm
dim H = 5
input  x[t] : onehot(V)
target y[t] : class(V)
param Wr, Ur, b_r, Wy, by
h[t] : H = tanh(Wr @ x[t] + Ur @ h[t-1] + b_r)
q[t] = Wy @ h[t] + by
loss xent(q[t], y[t])
train {
  data = chars("lm.txt")
  optimizer = sgd(lr = 0.5)
  batch = 8
  bptt = 12
  epochs = 1
}
"""

# a sequence-to-sequence model whose source and target share one size name, V
SHARED_V = """\
model s2s
dim H = 5
input  x[t] : onehot(V)
target y[u] : class(V)
param W, U, b, R, S, Wo, bo
h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b)
s[u] : H = tanh(R @ y[u-1] + S @ s[u-1] + b)
init s = h[end]
o[u] = Wo @ s[u] + bo
loss xent(o[u], y[u])
train {
  data = pairs("rev.tsv")
  batch = 4
  epochs = 1
}
"""


def _files(d):
    (d / "lm.txt").write_text(TEXT)
    (d / "rev.tsv").write_text("ab\tb a\ncd\td c\nef\tf e x y z\n")
    (d / "train.txt").write_text(TREES)
    for name, text in (("lm.sg", LM), ("gru.sg", GRU), ("s2s.sg", SHARED_V),
                       ("tree.sg", TREE_SPEC)):
        (d / name).write_text(text)
    return d


def _data(d, loader: str, file: str) -> list:
    """--set data=LOADER("d/FILE") --out d/x."""
    path = d / file
    return ["--set", f'data={loader}("{path}")', "--out", d / "x"]


def _fails(capsys, *argv) -> str:
    """The stderr of `seqgraph train ARGV --quiet --executor interp`, which must exit 2."""
    code = main(["train", *map(str, argv), "--quiet", "--executor", "interp"])
    err = capsys.readouterr().err
    assert code == 2, err
    return err


# ------------------------------------------------------- 1. resume: the model first
def test_resuming_another_models_checkpoint_names_both_models_first(tmp_path, capsys):
    d = _files(tmp_path)
    assert train_quiet(d / "gru.sg", d / "gru", "--steps", "1") == 0
    capsys.readouterr()
    err = _fails(capsys, d / "lm.sg", "--resume", d / "gru", "--out", d / "x")
    # before: "resume with the same data, batch and bptt", then a settings warning
    assert "resume with the same" not in err and "other settings" not in err
    assert "was saved from model 'grulm' (parameters Wr, Ur, b_r, Wy, by), not from " \
           f"model 'lm' of {d / 'lm.sg'}: the spec's parameter 'W' is not in this " \
           "checkpoint" in err
    assert "start a new run (no --resume)" in err


def test_an_edited_spec_says_which_shape_changed(tmp_path, capsys):
    d = _files(tmp_path)
    assert train_quiet(d / "lm.sg", d / "run", "--steps", "1") == 0
    (d / "lm7.sg").write_text(LM.replace("dim H = 6", "dim H = 7")
                              .replace("batch = 4", "batch = 2"))
    err = _fails(capsys, d / "lm7.sg", "--resume", d / "run", "--out", d / "x")
    assert "was saved from model 'lm' with parameters other than" in err
    assert "parameter 'W' has shape [7, " in err and "resume with the same" not in err


def test_check_resume_runs_before_the_data(tmp_path):
    """`check_resume` (for seqgraph train, before it reads the data with the
    checkpoint's vocabulary): another model's checkpoint is refused, the same model's
    accepted with the sizes its data bound (V is left to the data by the spec)."""
    d = _files(tmp_path)
    assert train_quiet(d / "gru.sg", d / "gru", "--steps", "1") == 0
    c = ck.load(d / "gru" / "checkpoint.npz")
    ck.check_resume(c, read_spec(str(d / "gru.sg")))
    with pytest.raises(DataError, match="not from model 'lm'"):
        ck.check_resume(c, read_spec(str(d / "lm.sg")))
    with pytest.raises(DataError, match=r"parameter 'Wr' has shape \[5, 3\]"):
        ck.check_resume(c, read_spec(str(d / "gru.sg")), {"V": 3})


# --------------------------------------------- 2. the loader's kind before any size
def test_pairs_on_a_language_model_names_the_index_not_a_size(tmp_path, capsys):
    d = _files(tmp_path)
    err = _fails(capsys, d / "lm.sg", *_data(d, "pairs", "rev.tsv"))
    assert "a pairs loader needs a sequence target on an index of its own such as " \
           "y[u] : class(Vy); model 'lm' reads its target y[t] on the index of its " \
           "input x[t]" in err
    assert "the loaders that fit model 'lm': chars(...), words(...) or tagged(...)" in err
    assert "do not fit" not in err and "--dim" not in err


def test_the_kind_is_checked_before_the_file_is_read(tmp_path, capsys):
    """lm.txt has no tabs: the loader is the mistake, not the file's lines."""
    d = _files(tmp_path)
    err = _fails(capsys, d / "lm.sg", *_data(d, "pairs", "lm.txt"))
    assert "on an index of its own" in err and "tab" not in err


def test_chars_on_a_tree_model_says_it_needs_trees(tmp_path, capsys):
    d = _files(tmp_path)
    err = _fails(capsys, d / "tree.sg", *_data(d, "chars", "lm.txt"))
    assert "a chars loader reads a token stream, but model 'treenet' runs over trees " \
           "(its 'tree n' index): train it on trees(" in err
    assert "distinct symbols" not in err
    err = _fails(capsys, d / "tree.sg", *_data(d, "pairs", "rev.tsv"))
    assert "a pairs loader reads examples that are sequences, but model 'treenet' " in err


def test_another_mismatch_lists_the_loaders_that_fit(tmp_path, capsys):
    d = _files(tmp_path)
    (d / "lab.tsv").write_text("pos\tgood film\nneg\tbad film\n")
    err = _fails(capsys, d / "lm.sg", *_data(d, "labeled", "lab.tsv"))
    assert "a labeled loader needs a per-example class target such as y : class(K); " \
           "model 'lm' declares none (its target: y[t] : class(V)); the loaders that fit " \
           "model 'lm': chars(...), " \
           "words(...) or tagged(...)" in err


def test_the_specs_own_loader_of_another_kind_is_said_at_its_line(tmp_path, capsys):
    """The spec's `data = labeled(...)` on a language model: check and train said it
    without a line, a caret or an `error:` (review 35); a --set of it stays unlocated."""
    d = _files(tmp_path)
    (d / "lab.tsv").write_text("pos\tgood film\nneg\tbad film\n")
    (d / "lm.sg").write_text(LM.replace('data = chars("lm.txt")', 'data = labeled("lab.tsv")'))
    line = LM.splitlines().index('  data = chars("lm.txt")') + 1
    for argv in (["check", str(d / "lm.sg")],
                 ["train", str(d / "lm.sg"), "--out", str(d / "x"), "--quiet"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{d / 'lm.sg'}:{line}:10: error: a labeled loader needs a "
                              f"per-example class target"), err
        assert '  data = labeled("lab.tsv")\n' in err and "\n       |          ^\n" in err
        assert "  hint: the loaders that fit model 'lm': chars(...), words(...) or " \
               "tagged(...)" in err


def test_a_size_names_where_it_came_from(tmp_path, capsys):
    """No --dim given: a size the source's data bound is not called --dim."""
    d = _files(tmp_path)
    err = _fails(capsys, d / "s2s.sg", "--out", d / "x")
    assert re.search(r"rev.tsv: \d+ distinct symbols do not fit V = 3, bound by the "
                     r"distinct symbols in the data of x \(the size of y\); give y a size name "
                     r"of its own", err)
    assert "--dim" not in err
    err = _fails(capsys, d / "s2s.sg", "--dim", "V=2", "--out", d / "x")
    assert "3 distinct symbols do not fit --dim V=2 (the size of x); leave that size " \
           "to the data, or raise it" in err


# ----------------------------------------------------------------- 3. --on-nan skip
def _skip_run(d, capsys, *more) -> tuple[int, str]:
    code = main(["train", str(d / "lm.sg"), "--out", str(d / "run"), "--executor",
                 "interp", "--on-nan", "skip", "--overwrite", *more])
    return code, capsys.readouterr().err


def test_skipped_batches_are_said_once_an_epoch_with_their_count(tmp_path, monkeypatch,
                                                                 capsys, no_plots):
    d = _files(tmp_path)
    nan_on(monkeypatch, {2, 3, 4, 9})
    code, err = _skip_run(d, capsys, "--set", "epochs=2")
    assert code == 0, err
    said = re.findall(r"warning: epoch (\d): (\d) of (\d+) batches skipped for a "
                      r"non-finite loss or gradient \(on_nan = skip; the first: batch "
                      r"(\d), after update (\d)\)", err)
    n = int(said[0][2])
    assert said == [("1", "4", str(n), "2", "1")]       # one line, epoch 1 only
    assert "warning: step" not in err and "so far" not in err
    assert len(update_rows(d / "run")) == 2 * n - 4


def test_skipped_batches_are_said_with_quiet_too(tmp_path, monkeypatch, capsys, no_plots):
    d = _files(tmp_path)
    nan_on(monkeypatch, {3})
    code, err = _skip_run(d, capsys, "--quiet")
    assert code == 0, err
    assert "warning: epoch 1: 1 of" in err and "the first: batch 3, after update 2" in err


def test_a_run_that_skips_every_batch_is_an_error(tmp_path, monkeypatch, capsys, no_plots):
    d = _files(tmp_path)
    nan_on(monkeypatch, set(range(1, 10_000)))
    code, err = _skip_run(d, capsys, "--quiet", "--set", "epochs=3")
    assert code == 2
    assert re.search(r"every batch of this run \(\d+\) had a non-finite loss or gradient "
                     r"and was skipped \(on_nan = skip\): no update was made\. Last "
                     r"checkpoint: none yet\. Try a smaller lr, or clip", err)
    assert not (d / "run" / "checkpoint.npz").exists()


def test_a_run_stuck_after_one_update_is_an_error(tmp_path, monkeypatch, capsys, no_plots):
    """One update, then every batch skipped: at the end of a one-epoch run (more
    skipped than updated) and, with more epochs, once an epoch's worth were skipped."""
    d = _files(tmp_path)
    count, _ = nan_on(monkeypatch, set(range(2, 10_000)))
    code, err = _skip_run(d, capsys, "--quiet")
    assert code == 2, err
    assert "every batch since update 1 (" in err and "the parameters no longer change" in err
    n = int(re.search(r"\d+ of (\d+) batches skipped", err)[1])     # batches an epoch
    count[0] = 0
    code, err = _skip_run(d, capsys, "--quiet", "--set", "epochs=5")
    assert code == 2 and f"every batch since update 1 ({n} in a row)" in err
    assert count[0] == n + 1                # stopped in epoch 2, not after 5 epochs


def test_a_huge_learning_rate_with_skip_ends_with_the_error(tmp_path, capsys, no_plots):
    """The walkthrough's reproduction: sgd(lr = 1e30) on a linear recurrence overflows
    from the second batch on."""
    d = _files(tmp_path)
    (d / "lm.sg").write_text(LM.replace("tanh(W @ x[t] + U @ h[t-1] + b)",
                                        "W @ x[t] + U @ h[t-1] + b"))
    code, err = _skip_run(d, capsys, "--set", "optimizer=sgd(lr=1e30)", "--set", "clip=0",
                          "--set", "epochs=2")
    assert code == 2 and "had a non-finite loss or gradient" in err
    assert "RuntimeWarning" not in err


# ------------------------------------------------------ 4. labelled data's tab fields
def test_labeled_refuses_three_tab_fields_as_pairs_does(tmp_path):
    from seqgraph.train.loaders import labeled
    (tmp_path / "lab.tsv").write_text("pos\tgood film\nneg\tbad\textra\n")
    with pytest.raises(DataError, match="lab.tsv:2: expected label<TAB>text, found 3 "
                                        "tab-separated fields"):
        labeled("lab.tsv", base=tmp_path).read()


def test_a_run_that_ends_skipping_as_many_batches_as_it_updated_is_not_stuck(
        tmp_path, monkeypatch, capsys, no_plots):
    """The rule's boundary (docs/training.md): an error only when the skipped batches
    since the last update are more than the updates."""
    d = _files(tmp_path)
    count, _ = nan_on(monkeypatch, set())
    assert _skip_run(d, capsys, "--quiet")[0] == 0
    n = count[0]                                   # batches of the one epoch
    for updates in (n // 2, n // 2 - 1):           # then n - updates batches skipped
        count[0] = 0
        nan_on(monkeypatch, set(range(updates + 1, n + 1)))
        code, err = _skip_run(d, capsys, "--quiet")
        assert (code == 2) == (n - updates > updates), (n, updates, err)
