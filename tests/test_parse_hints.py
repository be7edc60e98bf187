"""Every syntax error a new user meets gets a hint line, not only a caret.

Each row is a bad spec (the Elman gallery spec with one line changed), the position of
the caret and the words its hint must contain. The rendering must carry
`bad.sg:LINE:COL: error:`, the source line, a caret under the column and `  hint: ...`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import seqgraph
from seqgraph import SpecError
from seqgraph.cli import main

import conftest

ROOT = Path(__file__).resolve().parent.parent

ELMAN = "model elman\ndim H = 16\n" + conftest.ELMAN
LINES = ELMAN.splitlines(keepends=True)


def change(line: int, new: str) -> str:
    """ELMAN with its line `line` (1-based) replaced by `new`."""
    return "".join(LINES[:line - 1] + [new + "\n"] + LINES[line:])


def case(id, text, line, column, hint):
    return pytest.param(text, line, column, hint, id=id)


TREE = (ROOT / "specs" / "recursive.sg").read_text()
CELL = "cell mine(x, H) {{\n  param W, U\n  {body}  return h\n}}\n"     # lines 9-12

CASES = [
    # a misspelt statement keyword: the word is compared with the statement keywords
    case("parm", change(5, "parm W, U, b, Wo, bo"), 5, 6, "did you mean 'param'?"),
    # characters of typeset text (the book's PDF): the plain character they stand for
    case("minus-sign", change(6, "h[t] : H = tanh(W @ x[t] + U @ h[t\u22121] + b)"), 6, 35,
         "did you mean '-'? ('\u2212' is U+2212, as typeset text writes it"),
    case("times-sign", change(7, "o[t] = Wo \u00d7 h[t] + bo"), 7, 11, "did you mean '*'?"),
    # a name in other case, a longer name of a known one (Keras' xavier_uniform)
    case("LSTM", change(6, "h = LSTM(x, H)"), 6, 5, "did you mean 'lstm'?"),
    case("b_o", change(7, "o[t] = Wo @ h[t] + b_o"), 7, 20, "did you mean 'bo'?"),
    case("per-example-variable", ELMAN + "z = mean over t (h[t])\nparam Q\nq[t] = Q @ zz\n",
         11, 12, "did you mean 'z'?"),
    case("cell-of-a-step", change(6, "h = gru(x[t], H)"), 6, 9,
         "write x, not x[...]: the cell reads every step of it"),
    case("xavier_uniform", change(5, "param W, U, b, Wo, bo init xavier_uniform"), 5, 28,
         "did you mean 'xavier'?"),
    case("identity-init", change(5, "param W, U, b, Wo, bo init identity"), 5, 28,
         "there is no identity initialiser; 'orthogonal' is a random orthogonal matrix"),
    case("xavier_normal", change(5, "param W, U, b, Wo, bo init xavier_normal"), 5, 28,
         "'xavier' is Glorot's uniform form (the same variance as xavier_normal)"),
    case("inptu", change(3, "inptu x[t] : onehot(V)"), 3, 7, "did you mean 'input'?"),
    case("trian", ELMAN + "trian {\n  epochs = 3\n}\n", 9, 7, "did you mean 'train'?"),
    case("modle", change(1, "modle elman"), 1, 7, "did you mean 'model'?"),
    case("dimm", change(2, "dimm H = 16"), 2, 6, "did you mean 'dim'?"),
    case("targte", change(4, "targte y[t] : class(V)"), 4, 8, "did you mean 'target'?"),
    case("los", change(8, "los xent(o[t], y[t])"), 8, 5, "did you mean 'loss'?"),
    case("parm-in-cell",
         ELMAN + "cell foo(x, H) {\n  parm A\n  g[t] : H = A @ x[t]\n  return g\n}\n",
         10, 8, "did you mean 'param'?"),
    # a word that is no keyword's misspelling: what a statement looks like
    case("no-keyword-near", change(5, "zzz W, U"), 5, 5,
         "a statement starts with a keyword"),
    # an operator without its right operand
    case("trailing-plus", change(7, "o[t] = Wo @ h[t] + bo +"), 7, 24,
         "an operator needs an operand on its right; remove the trailing '+' or complete "
         "the expression"),
    case("trailing-matmul-in-call", change(6, "h[t] : H = tanh(W @)"), 6, 20,
         "remove the trailing '@'"),
    case("operator-then-operator", change(7, "o[t] = Wo @ * h[t]"), 7, 13,
         "an operator needs an operand on its right"),
    # a loss with one argument, or three
    case("loss-one-argument", change(8, "loss xent(o[t])"), 8, 15,
         "xent takes two arguments: the output and the target, e.g. loss xent(o[t], y[t])"),
    case("loss-one-argument-mse", change(8, "loss mse(o[t])"), 8, 14,
         "mse takes two arguments: the output and the target, e.g. loss mse(o[t], y[t])"),
    case("loss-three-arguments", change(8, "loss xent(o[t], y[t], h[t])"), 8, 21,
         "xent takes two arguments"),
    case("loss-other-mistake", change(8, "loss xent o[t], y[t]"), 8, 11,
         "a loss is `loss FN(OUTPUT, TARGET)`"),
    # other syntax errors get a hint too
    case("two-statements-a-line", change(3, "input  x[t] : onehot(V) param A"), 3, 25,
         "one statement a line"),
    case("bad-index", change(6, "h[t] : H = tanh(W @ x[t] + U @ h[t-1t] + b)"), 6, 37,
         "an index is a name with an optional shift"),
    case("comma-then-nothing", change(5, "param W, U, b, Wo, bo,"), 5, 23,
         "something is missing after ','"),
    case("dim-form", change(2, "dim H 16"), 2, 7, "dim NAME = N"),
    case("train-entry", ELMAN + "train {\n  epochs 3\n}\n", 10, 10, "NAME = VALUE"),
    case("fractional-dim", change(2, "dim H = 1.5"), 2, 9, "write a whole number such as 2"),
    case("zero-size", change(6, "h[t] : 0 = tanh(W @ x[t] + U @ h[t-1] + b)"), 6, 8,
         "give a positive whole number"),
    # a cell use with the wrong number of arguments: the use written correctly
    case("gru-three-arguments", change(6, "h = gru(x, 16, 3)"), 6, 5,
         "write h = gru(x, 16)"),
    case("lstm-one-argument", change(6, "h = bi lstm(x)"), 6, 5, "write h = bi lstm(x, H)"),
    # a tree equation's cases misspelt
    case("if-leef", TREE.replace("if leaf", "if leef"), 12, 55,
         "cases end `if leaf` and `otherwise`"),
    case("otherwse", TREE.replace("   otherwise", "   otherwse"), 13, 52,
         "did you mean 'otherwise'?"),
    # inside { } a line ending in an operator, '=' or ',' continues on the next line;
    # where the next line does not complete it, the error is said at the line's end
    case("block-line-ends-in-plus", ELMAN + CELL.format(body="h[t] : H = W @ x[t] +\n"),
         11, 24, "inside { } a line ending with '+' continues on the next line"),
    case("block-param-ends-in-comma", ELMAN + CELL.format(body="h[t] : H = W @ x[t]\n")
         .replace("param W, U", "param W, U,"), 10, 14,
         "inside { } a line ending with ',' continues on the next line"),
    # a continued line that completes the statement, then a stray token: said there
    # (review 26: blamed the '+')
    case("block-stray-token-after-a-continuation", ELMAN + CELL.format(
        body="h[t] : H = W @ x[t] +\n    U @ h[t-1] b\n"), 12, 16,
        "is an operator missing"),
    case("train-value-missing", ELMAN + "train {\n  batch =\n}\n", 10, 10,
         "write the value after '='"),
    # walk 14: C's comments, and a cell's inner variable read in an equation
    case("slash-comment-line", "// an Elman RNN\n" + ELMAN, 1, 1,
         "comments start with #, not //"),
    case("slash-comment-after", change(7, "o[t] = Wo @ h[t] + bo  // the logits"), 7, 25,
         "comments start with #, not //"),
    # a grandchild read as a chain of children (its hint was the cells' inner variables)
    case("grandchild", TREE.replace("+ b)   otherwise", "+ h[n.left.right])   otherwise"),
         13, 55, "for a grandchild, define a variable that reads a child, g[n] = "
         "h[n.right] otherwise (and an 'if leaf' case, e.g. h[n]), and read g[n.left]"),
    case("inner-variable", change(6, "h = bi rnn(x, H)") + "param Q\nz[t] = Q @ h.fwd[t]\n",
         10, 13, "'h.fwd' names a cell's inner variable (bi's fwd and bwd, an lstm's c)"),
    # C's statement separator: the hint said "start a new line before ';'"
    case("semicolon", change(2, "dim H = 16; dim D = 8"), 2, 11, "drop the ';'"),
    case("trailing-semicolon", change(7, "o[t] = Wo @ h[t] + bo;"), 7, 22, "drop the ';'"),
    # a shifted end is read on the right of '=' (the hint said shifts belong there)
    case("shifted-end", change(7, "o[t] = Wo @ h[end-1] + bo"), 7, 18,
         "1 and end take no shift"),
    case("shifted-end-in-loss", change(8, "loss xent(o[end-1], y[t])"), 8, 16,
         "1 and end take no shift"),
    # read as a use of a cell named stack, then "start a new line before 'rnn'"
    case("bi-stack", change(6, "h = bi stack(2) rnn(x, H)"), 6, 8,
         "stack the 2 'bi' layers one a line: h1 = bi rnn(x, H), then h = bi rnn(h1, H)"),
    # a statement continued by a line that starts with its operator: "one statement a
    # line: start a new line before '+'"
    case("line-starts-with-operator", change(6, "h[t] : H = tanh(W @ x[t] + U @ h[t-1])\n"
                                                "  + b"), 7, 3,
         "a line cannot start with '+': to go on with the statement above, put the "
         "expression in ( )"),
]


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        seqgraph.read_spec("bad.sg", text)
    return info.value


@pytest.mark.parametrize("text,line,column,hint", CASES)
def test_hint(text, line, column, hint):
    e = _error(text)
    out = str(e)
    assert (e.line, e.column) == (line, column), out
    assert f"bad.sg:{line}:{column}: error: " in out
    lines = out.splitlines()
    assert lines[1] == f"  {line:4d} | {text.splitlines()[line - 1]}", out
    assert lines[2] == "       | " + " " * (column - 1) + "^", out
    assert lines[3].startswith("  hint: ") and hint in lines[3], out
    assert len(lines) == 4, out


def test_the_cli_shows_the_hint(tmp_path, capsys):
    spec = tmp_path / "typo_kw.sg"
    spec.write_text(change(5, "parm W, U, b, Wo, bo"))
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:5:6: error: unexpected 'W'" in err
    assert "     5 | parm W, U, b, Wo, bo\n       |      ^\n" in err
    assert "  hint: did you mean 'param'?" in err


# ------------------------------------------------------------------ no false hints
def test_a_variable_named_like_a_keyword_is_legal():
    """`parm[t] = ...` is an equation defining a variable named parm."""
    text = change(7, "parm[t] = Wo @ h[t] + bo").replace("xent(o[t]", "xent(parm[t]")
    spec = seqgraph.read_spec("ok.sg", text)
    assert spec is not None


def test_no_keyword_hint_for_a_word_the_spec_defines():
    """`parm` is a variable here, so `parm W` is not taken for a misspelt `param`."""
    text = change(7, "parm[t] = Wo @ h[t] + bo").replace("xent(o[t]", "xent(parm[t]")
    text += "parm W\n"
    e = _error(text)
    assert (e.line, e.column) == (9, 6), str(e)
    assert "did you mean" not in e.hint and "param" not in e.hint.split(":")[0], str(e)


def test_no_keyword_hint_for_a_word_alone_on_its_line():
    """`tanh` alone is not a misspelt `train`."""
    e = _error(ELMAN + "tanh\n")
    assert "did you mean" not in e.hint and e.hint, str(e)


def test_an_exact_keyword_in_a_train_block_is_not_a_typo():
    e = _error(ELMAN + "train {\n  init c\n}\n")
    assert "did you mean" not in e.hint and "NAME = VALUE" in e.hint, str(e)


@pytest.mark.parametrize("name, hint", [
    ("xx", "hint: did you mean 'x'?"),
    ("qqq", "hint: declare it with input, or define it by an equation (anywhere in the "
            "spec)")])
def test_an_undefined_cell_argument_suggests_a_name_or_says_how_to_define_it(name, hint):
    with pytest.raises(SpecError) as e:
        seqgraph.read_spec("u.sg", f"model m\ninput x[t] : onehot(V)\nh = bi gru({name}, 4)\n")
    assert str(e.value).splitlines()[-1] == f"  {hint}"


def test_a_statement_continues_inside_a_block_after_an_operator_or_equals(tmp_path):
    """LANGUAGE.md section 2: inside ( ), [ ] and { } a statement may continue on the
    next line. Inside a block a newline ends a statement, so it continues where the line
    cannot end: after an operator, '=', ',' or ':' (review 25: refused)."""
    blocks = CELL.format(body="h[t] : H = tanh(W @ x[t] + U @ h[t-1])\n") + \
        "e = mine(x, 4)\ntrain {\n  batch = 4\n  optimizer = sgd(lr = 0.1)\n}\n"
    split = blocks.replace("W @ x[t] +", "W @ x[t] +\n      ").replace(
        "param W, U", "param W,\n    U").replace("batch =", "batch =\n   ").replace(
        "h[t] : H", "h[t] :\n  H")
    assert split.count("\n") == blocks.count("\n") + 4
    a, b = (seqgraph.read_spec("s.sg", ELMAN + text) for text in (blocks, split))
    assert a.graph.vars == b.graph.vars and a.graph.params == b.graph.params
    assert a.graph.train_config == b.graph.train_config
