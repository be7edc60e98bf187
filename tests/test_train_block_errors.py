"""Bad values in the `train { ... }` block are located errors: `file:line:column`, the
source line, a caret under the value (or the part of it that is wrong) and a hint, from
both `seqgraph check` and `seqgraph train` (exit code 2, no traceback); the same values
given by `--set key=value` are one-line errors naming `--set key=...`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import seqgraph
from seqgraph import SpecError
from seqgraph.cli import main
from seqgraph.errors import UsageError
from seqgraph.train.config import make_config, parse_sets
from seqgraph.train.optim import SGD, Adagrad, Adam, make_optimizer

from conftest import ELMAN, cli_env

MODEL = "model elman\ndim H = 4\n" + ELMAN + """train {
  data = chars("tiny.txt")
"""                                   # the bad entry is line 11, indented by two
LINE = 11


@pytest.fixture
def spec(tmp_path, monkeypatch):
    """A writer of `spec.sg` (the model above, with one more train entry) next to a
    tiny text; the working directory is tmp_path."""
    (tmp_path / "tiny.txt").write_text("hello world\nhello there\n" * 4)
    (tmp_path / "j.jsonl").write_text('{"text": "hello"}\n')
    monkeypatch.chdir(tmp_path)

    def write(entry: str) -> str:
        (tmp_path / "spec.sg").write_text(MODEL + f"  {entry}\n}}\n")
        return "spec.sg"
    return write


def run(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err


# (entry, where the caret goes: the text it points at, words of the message, of the hint)
CASES = [
    ("batch = 3.5", "3.5", "batch must be an integer >= 1, not 3.5", "batch = 32"),
    ('epochs = "two"', '"two"', "epochs must be an integer >= 1", "epochs = 1"),
    ("bptt = 0", "0", "bptt must be an integer >= 1, not 0", "bptt = 64"),
    ("clip = -1", "-1", "clip must be a number >= 0", "0: no clipping"),
    ("select = rot", "rot", "select = rot: the best.npz of a sequence model is chosen by "
     "its validation loss", "write select = loss"),
    ("select = root", "root", "select = root: the best.npz of a sequence model", "loss"),
    ("dtype = float16", "float16", "dtype must be float32 or float64",
     "did you mean 'float64'?"),
    ("average = 2", "2", "average must be a decay in [0, 1)", "0 <= d < 1"),
    ("keep = some", "some", "keep must be best or all", "choices: best, all"),
    ("teacher = 2", "2", "teacher must be a number in [0, 1]", "linear(start, end)"),
    ("teacher = linear(1.0, 2)", "2)", "teacher must be a number in [0, 1]", "[0, 1]"),
    ("l2 = -1", "-1", "l2 must be a number >= 0", "weight decay >= 0"),
    ("l2 = decay(0.1, E = -1)", "E = -1", "l2 of E must be a number >= 0", "decay("),
    ("on_nan = skp", "skp", "on_nan must be stop or skip", "did you mean 'skip'?"),
    ("seed = -1", "-1", "seed must be an integer >= 0", "seed = 0"),
    ("valid = 1", "1", "valid must be a fraction in [0, 1) or a loader call", "valid = 0.05"),
    # optimisers: names, keywords, ranges
    ("optimizer = adamw(lr = 0.01)", "adamw", "unknown optimizer 'adamw'",
     "did you mean 'adam'?"),
    ("optimizer = adam(lr = 0.01, betta1 = 0.8)", "betta1", "adam() has no argument 'betta1'",
     "did you mean 'beta1'? (adam() takes lr, beta1, beta2, eps)"),
    ("optimizer = adam(beta1 = 1.5)", "beta1", "beta1 must be a number in [0, 1), not 1.5",
     "beta1 and beta2 in [0, 1)"),
    ("optimizer = adam(beta2 = 1)", "beta2", "beta2 must be a number in [0, 1)", "[0, 1)"),
    ("optimizer = adam(eps = 0)", "eps", "eps must be a number > 0", "eps > 0"),
    ("optimizer = adam(lr = -0.1)", "lr", "lr must be positive", "lr > 0"),
    ("optimizer = sgd(0.1, momentum = 1)", "momentum", "momentum must be a number in [0, 1)",
     "momentum in [0, 1)"),
    ("optimizer = sgd(-1)", "-1", "lr must be positive", "lr > 0"),
    ("optimizer = sgd", "sgd", "missing 1 required positional argument: 'lr'", "sgd(lr"),
    ("optimizer = adagrad(lr = 0.1, eps = -1)", "eps", "eps must be a number > 0", "eps > 0"),
    ("optimizer = adagrad(reset = 1.5)", "reset", "reset must be a whole number",
     "reset a whole number"),
    ("optimizer = adam(l2 = 0.1)", "l2", "adam() has no argument 'l2'", "l2 = 0.0001"),
    ("optimizer = adam(lr = 0.01, lr = 0.1)", "lr = 0.1", "'lr' is given twice in adam(...)",
     "keep one of them"),
    ("data = chars(t.txt)", ")", "unexpected ')'", 'a file name is a string: write it in '
     'quotes'),
    # loaders
    ('valid = chars("j.jsonl", feild = "text")', "feild", "chars() has no argument 'feild'",
     "did you mean 'field'?"),
    ('valid = pairz("x.tsv")', "pairz", "loader 'pairz' is not supported by training",
     "did you mean 'pairs'? (supported: chars, words, pairs, labeled, tagged, series, "
     "treepairs, trees)"),
    ('valid = words("tiny.txt", vocab = 2)', "vocab", "vocab must be an integer of at least 3",
     "words() takes"),
    ("valid = chars(3)", "3", "the file must be a string", 'chars("file.txt"'),
    # fuzz review: Python's "missing 1 required positional argument: 'path'"
    ("valid = pairs()", "pairs", 'pairs() needs the file: pairs("file.tsv")',
     "the file comes first, in quotes: pairs(path"),
    # schedules and initialisers
    ("schedule = stp(after = 2)", "stp", "unknown schedule 'stp'", "did you mean 'step'?"),
    ("schedule = step(aftr = 2)", "aftr", "step() has no argument 'aftr'",
     "did you mean 'after'?"),
    ("param_init = unifrm(0.1)", "unifrm", "unknown initialiser 'unifrm'",
     "did you mean 'uniform'?"),
]


@pytest.mark.parametrize("entry, at, message, hint", CASES, ids=[c[0] for c in CASES])
def test_check_and_train_locate_a_bad_value(spec, capsys, tmp_path, entry, at, message,
                                            hint):
    path = spec(entry)
    column = 3 + entry.index(at) if at in entry else 0
    for argv in (["check", path],
                 ["train", path, "--quiet", "--steps", "1", "--out", str(tmp_path / "r")]):
        code, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        lines = err.splitlines()
        assert lines[0] == f"spec.sg:{LINE}:{column}: error: {lines[0].split('error: ')[1]}"
        assert message in lines[0]
        assert lines[1] == f"  {LINE:4d} |   {entry}"
        assert lines[2] == "       | " + " " * (column - 1) + "^"
        assert lines[3].startswith("  hint: ") and hint in lines[3], lines[3]
        assert "Traceback" not in err and "TypeError" not in err
        assert "unexpected keyword" not in err
    assert not (tmp_path / "r").exists()


def test_a_call_over_several_lines_is_located_where_its_keyword_stands(spec, capsys):
    text = MODEL + '  optimizer = adam(lr = 0.01,   # a comment, ignored\n' \
        '                   betta1 = 0.8, beta2 = 0.99)\n}\n'
    Path("spec.sg").write_text(text)
    code, err = run(capsys, "check", "spec.sg")
    assert code == 2 and err.startswith(f"spec.sg:{LINE + 1}:20: error: adam() has no "
                                        "argument 'betta1'")
    assert "did you mean 'beta1'?" in err


def test_good_values_still_check(spec, capsys):
    for entry in ("optimizer = adam(lr = 0.01, beta1 = 0.8, beta2 = 0.99, eps = 1e-6)",
                  "optimizer = sgd(0.5, momentum = 0.9)",
                  "optimizer = adagrad(lr = 0.1, reset = 2)",
                  'valid = chars("j.jsonl", field = "text")',
                  "schedule = step(after = 2, factor = 0.5)", "param_init = uniform(0.1)",
                  "teacher = linear(1.0, 0.5)", "l2 = decay(0.01, E = 0)", "clip = 0",
                  "select = loss", "average = 0.999", "keep = all", "dtype = float64",
                  'valid = chars("not-there-yet.txt")'):    # no data is read by check
        code, err = run(capsys, "check", spec(entry))
        assert code == 0, (entry, err)
        assert ("warning: valid file" in err) == ("not-there-yet" in entry), err


def test_the_real_process_prints_no_traceback(spec, tmp_path):
    path = spec("optimizer = adam(lr = 0.01, betta1 = 0.8)")
    for cmd in ("check", "train"):
        p = subprocess.run([sys.executable, "-m", "seqgraph.cli", cmd, path], cwd=tmp_path,
                           capture_output=True, text=True, env=cli_env(), check=False)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert f"spec.sg:{LINE}:31: error: adam() has no argument 'betta1'" in p.stderr
        assert "did you mean 'beta1'?" in p.stderr


# ------------------------------------------------------------------------- --set
SETS = [
    ("batch=3.5", "--set batch=3.5: batch must be an integer >= 1, not 3.5"),
    ("epochs=two", "--set epochs=two: epochs must be an integer >= 1"),
    ("clip=-1", "--set clip=-1: clip must be a number >= 0"),
    ("dtype=float16", "--set dtype=float16: dtype must be float32 or float64"),
    ("optimizer=adamw(lr=0.01)", "--set optimizer=adamw(lr=0.01): unknown optimizer "
     "'adamw'; did you mean 'adam'?"),
    ("optimizer=adam(lr=0.01, betta1=0.8)", "--set optimizer=adam(lr=0.01, betta1=0.8): "
     "adam() has no argument 'betta1'; did you mean 'beta1'?"),
    ("optimizer=adam(beta1=1.5)", "beta1 must be a number in [0, 1), not 1.5"),
    ('data=chars("j.jsonl", feild="text")', "--set data=chars(\"j.jsonl\", feild=\"text\"): "
     "chars() has no argument 'feild'; did you mean 'field'?"),
    ('data=pairz("x.tsv")', "loader 'pairz' is not supported by training; did you mean "
     "'pairs'?"),
    ('data=pairs("pairs.tsv"', "--set data=pairs(\"pairs.tsv\": cannot read the value: "
     "'(' opened at column 6 of the value is never closed; add the matching ')'"),
    ('data=chars("x)', "the string opened at column 7 of the value is never closed"),
    ("batch=3 4", "unexpected '4'; expected the end of the value after '3' (at column 3 "
     "of the value)"),
    ('data=chars(t.txt)', "(at column 12 of the value); a file name is a string: write it "
     "in quotes"),
    ("batch=)", "')' has no matching '(' (at column 1 of the value)"),
]


@pytest.mark.parametrize("item, words", SETS, ids=[s[0] for s in SETS])
def test_a_bad_set_value_names_the_flag(spec, capsys, tmp_path, item, words):
    path = spec("epochs = 1")
    for argv in (["check", path], ["train", path, "--quiet", "--steps", "1", "--out",
                                   str(tmp_path / "r")]):
        code, err = run(capsys, *argv, "--set", item)
        assert code == 2 and words in err, (argv, err)
        assert len(err.strip().splitlines()) == 1            # one line, no spec location
        assert "spec.sg:" not in err and "line " not in err and "'}'" not in err
        assert "statement" not in err                       # no hint meant for a spec
        assert "Traceback" not in err and "unexpected keyword" not in err


def test_check_takes_set_values_into_its_report(spec, capsys):
    capsys.readouterr()
    assert main(["check", spec("bptt = 32"), "--set", "bptt=9", "--set", "batch=7"]) == 0
    out = capsys.readouterr().out
    assert "for T = 9 steps (--set bptt), B = 7 examples (--set batch)" in out
    assert "windows of 9 steps" in out


# ----------------------------------------------------------- files that are not there
def test_a_missing_data_file_is_located_in_the_spec(spec, capsys, tmp_path):
    """`train` stops at the path, in the spec, with the folder it was looked for in;
    `check` (which reads no data) says the same as a warning and passes."""
    path = spec('valid = chars("gone.txt")')
    (tmp_path / "tiny.txt").unlink()
    code, err = run(capsys, "train", path, "--quiet", "--out", str(tmp_path / "r"))
    lines = err.splitlines()
    assert code == 2 and lines[0] == \
        f"spec.sg:10:16: error: data file {tmp_path / 'tiny.txt'}: no such file", err
    assert lines[1:3] == ['    10 |   data = chars("tiny.txt")', "       |" + " " * 16 + "^"]
    assert lines[3] == f"  hint: a path in the spec is relative to the spec's folder " \
        f"({tmp_path}); another file can be given with --set 'data=chars(\"...\")'"

    code, err = run(capsys, "check", path)
    assert code == 0
    heads = [line for line in err.splitlines() if "warning" in line]
    assert heads == [f"spec.sg:10:16: warning: data file {tmp_path / 'tiny.txt'}: no such file",
                     f"spec.sg:{LINE}:17: warning: valid file {tmp_path / 'gone.txt'}: no "
                     "such file"], err
    # the hint keeps the loader's other options (walk 10: trees("...", vocab = 8737))
    Path(path).write_text(Path(path).read_text().replace('chars("gone.txt")',
                                             'words("gone.txt", vocab = 50, field = "t")'))
    assert "another file can be given with --set 'valid=words(\"...\", vocab = 50, " \
        "field = \"t\")'" in run(capsys, "check", path)[1]


def test_a_file_set_on_the_command_line_is_the_users_own(spec, capsys, tmp_path):
    """A `--set` file is not looked for in the spec's folder, nor shown in the spec."""
    path = spec('valid = chars("gone.txt")')
    code, err = run(capsys, "check", path, "--set", 'data=chars("nope.txt")',
                    "--set", 'valid=chars("tiny.txt")')
    assert code == 0 and err.strip() == \
        f"--set data: warning: {tmp_path / 'nope.txt'}: no such file", err
    code, err = run(capsys, "train", path, "--quiet", "--out", str(tmp_path / "r"),
                    "--set", 'data=chars("nope.txt")', "--set", 'valid=chars("tiny.txt")')
    assert code == 2 and err.strip() == f"{tmp_path / 'nope.txt'}: no such file", err


def test_flags_that_set_a_key_are_named_as_such(spec, capsys, tmp_path):
    code, err = run(capsys, "train", spec("epochs = 1"), "--quiet", "--epochs", "0",
                    "--out", str(tmp_path / "r"))
    assert code == 2 and err.startswith("--epochs 0: epochs must be an integer >= 1")


# ---------------------------------------------------------------------- the API
def test_optimizers_refuse_out_of_range_hyperparameters():
    for make, words in [(lambda: Adam(beta1=1.5), "beta1 must be a number in [0, 1)"),
                        (lambda: Adam(beta1=-0.1), "beta1"),
                        (lambda: Adam(beta2=1.0), "beta2 must be a number in [0, 1)"),
                        (lambda: Adam(eps=0), "eps must be a number > 0"),
                        (lambda: Adam(lr=float("nan")), "lr must be positive"),
                        (lambda: Adam(lr="x"), "lr must be positive"),
                        (lambda: SGD(0.1, momentum=1), "momentum must be a number in [0, 1)"),
                        (lambda: SGD(0.1, momentum=-0.5), "momentum"),
                        (lambda: Adagrad(eps=-1), "eps must be a number > 0"),
                        (lambda: Adagrad(lr=0), "lr must be positive")]:
        with pytest.raises(UsageError, match=words.replace("[", r"\[").replace(")", r"\)")):
            make()
    assert Adam(beta1=0, beta2=0.5).beta1 == 0 and SGD(0.1, momentum=0.99).momentum == 0.99


def test_make_optimizer_says_did_you_mean_and_never_typeerror():
    from seqgraph.lang.ast import Call
    with pytest.raises(UsageError) as e:
        make_optimizer(Call("adam", (), {"betta1": 0.8}))
    assert "did you mean 'beta1'?" in str(e.value) and "unexpected keyword" not in str(e.value)
    with pytest.raises(UsageError, match="did you mean 'adagrad'"):
        make_optimizer(Call("adagrd", (), {}))


def test_set_values_are_checked_by_make_config_too():
    with pytest.raises(UsageError, match=r"^--set batch=0: batch must be an integer >= 1"):
        make_config({}, parse_sets(["batch=0"]))
    with pytest.raises(UsageError, match="did you mean 'field'"):
        make_config({}, parse_sets(['data=chars("a.txt", feild="text")']))


def test_a_key_set_twice_with_two_values_is_refused():
    """The last would win silently; the same value twice is harmless."""
    with pytest.raises(UsageError) as e:
        parse_sets(["batch=8", "epochs=2", "batch = 16"])
    assert str(e.value) == "--set batch is given twice (8, then 16): give it once"
    assert parse_sets(["batch=8", "batch=8"]) == {"batch": 8}


def test_select_is_checked_against_the_kind_of_model(tmp_path):
    """A tree model chooses best.npz by root, all or loss (a misspelling gets a
    did-you-mean); a sequence model by loss alone (above)."""
    from conftest import TREE_SPEC
    with pytest.raises(SpecError) as e:
        seqgraph.read_spec("t.sg", TREE_SPEC.replace("batch = 2", "batch = 2\n  select = rot"))
    assert "select must be one of root, all, loss" in str(e.value)
    assert "did you mean 'root'?" in str(e.value)
    seqgraph.read_spec("t.sg", TREE_SPEC.replace("batch = 2", "batch = 2\n  select = all"))


@pytest.mark.parametrize("value, hint", [
    ("chars", 'a loader call names its file: chars("file.txt")'),
    ("charz", "did you mean 'chars'? (loaders: chars, words")])
def test_a_loader_named_without_its_file(value, hint):
    with pytest.raises(SpecError) as e:
        seqgraph.read_spec("m.sg", MODEL.replace('data = chars("tiny.txt")', f"data = {value}")
                           + "}\n")
    assert "data must be a loader call such as" in str(e.value) and hint in str(e.value)


@pytest.mark.parametrize("key", ["lr", "learning_rate", "momentum"])
def test_an_optimizer_argument_written_as_a_train_key_points_to_the_optimizer(key, tmp_path,
                                                                             capsys):
    elman = Path(__file__).resolve().parent.parent / "specs" / "elman.sg"
    spec = tmp_path / "m.sg"
    spec.write_text(elman.read_text() + f'train {{\n  data = chars("x.txt")\n  {key} = 0.1\n}}\n')
    assert main(["check", str(spec)]) == 2
    assert f"{key} is an argument of the optimizer: optimizer = adam(" in \
        capsys.readouterr().err
    assert main(["train", str(elman), "--dim", "V=5", "--set", f"{key}=0.1"]) == 2
    assert f"unknown train key '{key}'; {key} is an argument of the optimizer" in \
        capsys.readouterr().err
