"""Names and flags, as a new user met them: a stacked cell's parameters named in `decay`, a
did-you-mean for a short misspelt name, `--dim` making an open size a number before the
sizes are checked, and the command line's flags."""
from pathlib import Path

import pytest

import seqgraph
from seqgraph.errors import did_you_mean

from conftest import fails, sg

ROOT = Path(__file__).resolve().parent.parent
TEXT = "abcdefg " * 300            # 8 symbols: a, ..., g and the space

STACKED = """\
input  x[t] : onehot(V)
target y[t] : class(V)
param Wo, bo
h = stack(2) lstm(x, 6)
o[t] = Wo @ h[t] + bo
loss xent(o[t], y[t])
train {
  data  = chars("t.txt")
  batch = 4
  bptt  = 8
  l2    = decay(0.01, h.1.Ui = 0, h.2.b_f = 0.5)
}
"""

# the sum reads x[t] itself: its size V must be 8, which the data decides
OPEN_SIZE = """\
dim H = 8
input  x[t] : onehot(V)
target y[t] : class(V)
param W, U, Wo
h[t] : H = tanh(W @ x[t] + U @ h[t-1])
g[t] = h[t] + x[t]
o[t] = Wo @ g[t]
loss xent(o[t], y[t])
train {
  data  = chars("t.txt")
  batch = 4
  bptt  = 8
}
"""


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text(TEXT, newline="")
    (tmp_path / "stacked.sg").write_text(STACKED)
    (tmp_path / "open.sg").write_text(OPEN_SIZE)
    return tmp_path


def test_decay_names_the_parameters_of_a_stacks_layers(work, capsys):
    code, out = sg(capsys, "train", "stacked.sg", "--out", "r", "--steps", 2, "--quiet")
    assert code == 0, out.err
    err = fails(capsys, "train", "stacked.sg", "--out", "r2", "--steps", 2,
                "--set", "l2=decay(0.01, h.3.Ui = 0)")
    assert "the model has no parameter 'h.3.Ui'; did you mean 'h.2.Ui'?" in err


def test_a_short_name_one_letter_off_is_suggested():
    assert did_you_mean("W0", ["Wo", "bo", "h.1.Wi"]) == "did you mean 'Wo'?"
    assert did_you_mean("oW", ["Wo"]) == "did you mean 'Wo'?"             # two swapped
    assert did_you_mean("x", ["W", "b"]) == ""        # one letter: any other is one off
    assert did_you_mean("-q", ["-h", "--quiet"]) == ""     # an option's dashes not counted
    assert did_you_mean("Qz", ["Wo", "bo"]) == ""


def test_dim_makes_an_open_size_a_number_before_the_check(work, capsys):
    err = fails(capsys, "check", "open.sg")
    assert "'x[t]' has size V" in err and "the spec does not give V a size, so it may be " \
        "any: if it is 8 here, say so (`dim V = 8` in the " \
        "spec, or --dim V=8)" in err
    code, out = sg(capsys, "check", "open.sg", "--dim", "V=8")
    assert code == 0 and "x[t]             input onehot     size 8" in out.out
    # a misspelt name is said as such, not as the size mismatch its check fails with
    err = fails(capsys, "check", "open.sg", "--dim", "v=8")
    assert "--dim v=8: open.sg has no size 'v' (did you mean 'V'?)" in err, err
    assert "has size V" not in err
    # a size a matrix of two would not fit in memory is refused, as in a spec (review 35)
    err = fails(capsys, "check", "open.sg", "--dim", "V=99999999999")
    assert "--dim V=99999999999: at most 10000000 units (a parameter of two such sizes " \
        "would not fit in memory" in err, err
    code, out = sg(capsys, "train", "open.sg", "--dim", "V=8", "--out", "r", "--steps", 2,
                   "--quiet")
    assert code == 0, out.err
    # eval, train --resume and jacobian read the sizes the run bound from its checkpoint
    code, out = sg(capsys, "eval", "open.sg", "--checkpoint", "r")
    assert code == 0 and "perplexity" in out.out, out.err
    code, out = sg(capsys, "train", "open.sg", "--resume", "r", "--steps", 3, "--quiet")
    assert code == 0, out.err
    code, out = sg(capsys, "jacobian", "open.sg", "--checkpoint", "r", "--steps", 4)
    assert code == 0 and "state h" in out.out, out.err
    code, out = sg(capsys, "gradcheck", "open.sg", "--dim", "V=8")
    assert code == 0 and "all passed" in out.out
    # another model's run: its sizes are not said as a --dim the user gave (review 26)
    (work / "other.sg").write_text(OPEN_SIZE.replace("dim H = 8", "dim H = 6"))
    err = fails(capsys, "eval", "other.sg", "--checkpoint", "r")
    assert "--dim" not in err and "r/checkpoint.npz: was saved from model 'open', not " \
        "from model 'other' of other.sg" in err, err
    with pytest.raises(seqgraph.SpecError) as e:       # a run's sizes that do not fit
        seqgraph.read_spec("open.sg", bound={"V": 9})
    assert "the sizes V=9 are the run's (its checkpoint): is it a run of this spec?" in \
        str(e.value) and "--dim" not in str(e.value)


def test_a_prefix_of_an_option_is_refused_with_the_subcommands_usage(work, capsys):
    """argparse took `--epoch 3` for `--epochs 3`, and said an unknown option with the
    top level's usage; --resume and --overwrite were both accepted."""
    for argv, said in ((["train", "open.sg", "--epoch", "3"],
                        "unrecognized arguments: --epoch 3 (did you mean '--epochs'?)"),
                       (["check", "open.sg", "--bogus"], "unrecognized arguments: --bogus"),
                       (["train", "open.sg", "--resume", "r", "--overwrite"],
                        "argument --overwrite: not allowed with argument --resume")):
        with pytest.raises(SystemExit) as e:
            sg(capsys, *argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and said in err and f"usage: seqgraph {argv[0]} " in err


@pytest.mark.parametrize("field", ['field = "text"', '"text"'], ids=["keyword", "by place"])
def test_a_bare_path_to_eval_a_model_of_json_lines_reads_plain_text(work, capsys, field):
    """`eval --data f.txt` of a model trained on chars("d.jsonl", field = "text") read the
    text file as JSON lines ("not a JSON line")."""
    import json
    (work / "d.jsonl").write_text("".join(json.dumps({"text": TEXT[i:i + 40]}) + "\n"
                                          for i in range(0, len(TEXT), 40)))
    (work / "j.sg").write_text(OPEN_SIZE.replace("g[t] = h[t] + x[t]", "g[t] = h[t]")
                               .replace('chars("t.txt")', f'chars("d.jsonl", {field})'))
    code, out = sg(capsys, "train", "j.sg", "--out", "r", "--steps", 2, "--quiet")
    assert code == 0, out.err
    code, out = sg(capsys, "eval", "j.sg", "--checkpoint", "r", "--data", "t.txt")
    assert code == 0 and "tokens of " in out.out and out.out.rstrip().endswith("t.txt)"), out.err


def test_a_folder_that_cannot_be_written_before_any_checkpoint_says_so(work, capsys,
                                                                        monkeypatch):
    """It said "the last good checkpoint is none yet", as if a run had gone wrong."""
    from seqgraph.train.loop import Trainer

    def fit(self, *a, **k):
        raise OSError(2, "No such file or directory", "/proc/nope")
    monkeypatch.setattr(Trainer, "fit", fit)
    err = fails(capsys, "train", "stacked.sg", "--out", "r", "--steps", 2)
    assert err == "cannot write /proc/nope (No such file or directory); no checkpoint " \
        "was written"


def test_an_option_misspelt_before_the_command_gets_a_suggestion(capsys):
    """`--thread 2 check` was taken for --threads by prefix; refused now, it said
    "invalid choice: '2'" (review 21)."""
    from seqgraph.cli import main
    with pytest.raises(SystemExit) as e:
        main(["--thread", "2", "check", "x.sg"])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == (
        "seqgraph: error: unknown option --thread before the command (did you mean "
        "'--threads'?); see seqgraph --help")
    with pytest.raises(SystemExit) as e:         # argparse takes no `--` before a command
        main(["--", "check", str(ROOT / "specs" / "elman.sg")])
    assert e.value.code == 2 and "unknown option -- before the command" in \
        capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["jacobian", "open.sg", "--dim", "V=5", "--steps", "3"],
    ["gradcheck", "open.sg", "--dim", "V=8"],
    ["render", "open.sg", "--unfold", "3", "--overlay", "jacobian", "--dim", "V=8",
     "-o", "o.dot"],
    ["sample", "open.sg", "--checkpoint", "r", "--length", "3"],
])
def test_a_negative_seed_is_a_usage_error(work, capsys, argv):
    """`--seed -1` reached numpy's generator, a ValueError traceback ("expected
    non-negative integer"); the train key `seed` was refused as it should be."""
    if argv[0] == "sample":
        assert sg(capsys, "train", "open.sg", "--dim", "V=8", "--out", "r", "--steps", 1,
                  "--quiet")[0] == 0
    assert fails(capsys, *argv, "--seed", "-1") == \
        "--seed must be a whole number of 0 or more, not -1"


@pytest.mark.parametrize("tol", ["-1", "0", "nan", "inf"])
def test_gradcheck_refuses_a_tolerance_nothing_could_fail_or_pass(work, capsys, tol):
    """`--tol -1` or `--tol nan` printed 'all passed: ..., tolerance nan' (a difference
    within the loss's rounding passes whatever the tolerance)."""
    assert fails(capsys, "gradcheck", "open.sg", "--dim", "V=8", "--tol", tol) == \
        f"--tol must be a relative error above 0, e.g. --tol 1e-6 (the default), not " \
        f"{float(tol)}"


@pytest.mark.parametrize("t", ["nan", "0", "-1"])
def test_sample_refuses_a_temperature_that_is_not_above_0(work, capsys, t):
    """`--temperature nan` was let through and drew token 0 at every step (the softmax of
    nan): a character model printed a line of newlines, exit 0."""
    assert sg(capsys, "train", "open.sg", "--dim", "V=8", "--out", "r", "--steps", 1,
              "--quiet")[0] == 0
    assert fails(capsys, "sample", "open.sg", "--checkpoint", "r", "--length", 5,
                 "--temperature", t) == \
        "--temperature must be positive (use --greedy for argmax)"


@pytest.mark.parametrize("name, said", [
    ("plot.txt", "'.txt' is not an image format"),
    ("plot", "no extension to say its format"),
])
def test_a_plot_named_without_an_image_format_is_refused_before_any_work(work, capsys,
                                                                          name, said):
    """`jacobian -o plot.txt` measured everything, then died in matplotlib's savefig
    (ValueError: Format 'txt' is not supported), a traceback; `-o plot` wrote plot.png
    and said 'wrote plot'. `sample --attention-plot` did the same after generating."""
    err = fails(capsys, "jacobian", "open.sg", "--dim", "V=8", "--steps", 3, "-o", name)
    assert err.startswith(f"-o {name}: {said}; name a .png, .svg or .pdf file"), err
    assert not list(work.glob("plot*"))
    assert sg(capsys, "train", "open.sg", "--dim", "V=8", "--out", "r", "--steps", 1,
              "--quiet")[0] == 0
    err = fails(capsys, "sample", "open.sg", "--checkpoint", "r", "--length", 3,
                "--attention-plot", name)
    assert err.startswith(f"--attention-plot {name}: {said}"), err
