"""Every way a spec can be wrong, as a table of (message fragments, bad spec, caret).

In the manner of Lark's own error table: each row is a bad input, the words its message
must contain, and the exact line and column of the caret. Each goes through
`seqgraph.read_spec("bad.sg", text)`, which must raise `SpecError` and nothing else, and
whose rendering must carry `bad.sg:LINE:COL`, the source line and a caret under the column.
A property test then mutates a gallery spec at random: it must either check or raise a
located SpecError, never another exception.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqgraph
from seqgraph import SpecError

HEAD = """dim H = 16
input  x[t] : onehot(V)
target y[t] : class(V)
param W, U, b, Wo, bo
"""                                           # 4 lines: a statement after it is line 5
H = "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b)\n"
OUT = "o[t] = Wo @ h[t] + bo\nloss xent(o[t], y[t])\n"
TREE = """tree n
dim H = 8
input  w[n] : onehot(V)
target y[n] : class(5)
param E, W, b, Ws, bs
"""                                           # 5 lines
TREE_OUT = "o[n] = Ws @ h[n] + bs\nloss xent(o[n], y[n])\n"
CELL = "cell foo(x, H) {\n  param A\n"     # lines 5-6 after HEAD


def bad(id, text, line, column, *fragments):
    return pytest.param(text, line, column, fragments, id=id)


TABLE = [
    # ------------------------------------------------------------------- syntax
    bad("nothing-after-equals", HEAD + "h[t] : H = \n" + OUT, 5, 11,
        "expected an expression after '='"),
    bad("unclosed-paren", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b\n" + OUT, 5, 16,
        "'(' opened at line 5, column 16 is never closed"),
    bad("unclosed-paren-in-loss", HEAD + H + "o[t] = Wo @ h[t] + bo\nloss xent(o[t], y[t]\n",
        7, 10, "'(' opened at line 7, column 10 is never closed"),
    bad("unclosed-square", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1 + b)\n" + OUT, 5, 41,
        "')' does not match '[' opened at line 5, column 33"),
    bad("stray-closer", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b))\n" + OUT, 5, 43,
        "')' has no matching '('"),
    bad("mismatched-closer", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b]\n" + OUT, 5, 42,
        "']' does not match '(' opened at line 5, column 16"),
    bad("hex-number", HEAD + H + OUT + "train {\n  batch = 0x10\n}\n", 9, 12,
        "unexpected 'x10'", "a number is written in decimal digits", "'0x10' is not one"),
    bad("underscore-number", HEAD + H + OUT + "train {\n  steps = 1_000\n}\n", 9, 12,
        "a number is written in decimal digits", "'1_000' is not one"),
    bad("number-glued-to-name", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + 2b)\n" + OUT,
        5, 42, "a product is written with *: 2 * b"),
    bad("number-glued-to-x", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + 2x[t])\n" + OUT,
        5, 42, "a product is written with *: 2 * x"),        # not a hex number
    bad("size-written-as-a-sum", HEAD + H + "q[t] : H+V = [h[t]; x[t]]\n" + OUT, 6, 9,
        "unexpected '+'", "a size written after ':' is one dim name or a number"),
    bad("operator-ends-a-line", HEAD + H + "o[t] = Wo @ h[t] +\n       bo\nloss xent(o[t], y[t])\n",
        6, 19, "expected an expression after '+'", "put the expression in ( )"),
    bad("dash-in-model-name", "model my-model\n" + HEAD + H + OUT, 1, 9,
        "a name is letters, digits and _: write my_... rather than my-..."),
    bad("train-block-unclosed", HEAD + H + OUT + "train {\n  batch = 3\n", 8, 7,
        "'{' opened at line 8, column 7 is never closed"),
    bad("cell-unclosed", CELL + "  h[t] : H = A @ x[t]\n  return h\n", 1, 16,
        "'{' opened at line 1, column 16 is never closed"),
    bad("unclosed-string", HEAD + H + OUT + 'train {\n  data = chars("a.txt)\n}\n', 9, 16,
        "the string opened at line 9, column 16 is never closed"),
    bad("unexpected-character", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1] $ b)\n" + OUT,
        5, 39, "unexpected character '$'"),
    bad("nul-byte", HEAD + "\x00\n" + H + OUT, 5, 1, "unexpected character '\\x00'"),
    bad("keyword-as-variable", HEAD + "end[t] : H = tanh(W @ x[t])\n" + OUT, 5, 1,
        "'end' is a keyword and cannot be a name"),
    bad("keyword-in-expression", HEAD + "h[t] : H = tanh(W @ end + b)\n" + OUT, 5, 21,
        "'end' is a keyword and cannot be a name"),
    bad("keyword-as-param", HEAD + "param Z, end\n" + H + OUT, 5, 10,
        "'end' is a keyword and cannot be a name"),
    bad("keyword-statement-as-name", HEAD + "tree = x[t]\n", 5, 1,
        "'tree' is a keyword and cannot be a name"),
    bad("missing-operator", HEAD + "h[t] : H = tanh(W x[t])\n" + OUT, 5, 19,
        "unexpected 'x'; expected an operator", "after 'W'"),
    bad("operator-without-operand", HEAD + "h[t] : H = tanh(W @ x[t] +)\n" + OUT, 5, 27,
        "unexpected ')'; expected an expression after '+'"),
    bad("missing-equals", HEAD + "h[t] : H tanh(W @ x[t])\n" + OUT, 5, 10,
        "unexpected 'tanh'; expected '=' after 'H'"),
    bad("loss-one-argument", HEAD + H + "o[t] = Wo @ h[t] + bo\nloss xent(o[t])\n", 7, 15,
        "unexpected ')'; expected ','"),
    bad("trailing-semicolon", HEAD + "h[t] : H = tanh(W @ x[t]);\n" + OUT, 5, 26,
        "unexpected ';'; expected the end of the line"),
    bad("shift-on-the-left", HEAD + "h[t-1] : H = tanh(W @ x[t])\n" + OUT, 5, 4,
        "unexpected '-'"),
    bad("dim-not-whole", "dim H = 1.5\n", 1, 9, "a dim must be a whole number, not 1.5"),
    bad("dim-zero", "dim H = 0\n", 1, 9, "a dim must be at least 1"),
    bad("dim-negative", "dim H = -3\n", 1, 9, "unexpected '-'; expected a number after '='"),
    bad("size-zero", HEAD + "param Q : [H, 0]\n" + H + OUT, 5, 15, "a size must be at least 1"),
    bad("unknown-type", "input x[t] : foo(V)\n", 1, 14, "unknown type 'foo'"),
    bad("model-without-name", "model\n", 1, 6, "expected a name after 'model'"),
    bad("absolute-index-3", HEAD + H + "o[t] = Wo @ h[3] + bo\nloss xent(o[t], y[t])\n",
        6, 15, "index 3 is not allowed", "1 (the first step) and end"),
    bad("shift-not-whole", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1.5] + b)\n" + OUT,
        5, 36, "a shift must be a whole number, not 1.5"),
    bad("too-deep", HEAD + "h[t] : H = " + "tanh(" * 60 + "x[t]" + ")" * 60 + "\n", 5, 266,
        "brackets nest more than 50 deep"),
    bad("bi-inside-expression", HEAD + "h[t] : H = tanh(bi rnn(x, H))\n" + OUT, 5, 17,
        "a 'bi' cell use stands on its own line"),
    # fuzz review: `d = stack(2) bi rnn(x, 4)` was told it must stand on its own line
    # fuzz review: the same cell use twice said "'d.W' is declared twice", an inner name
    bad("cell-use-twice", HEAD + "h = rnn(x, H)\nh = rnn(x, H)\n" + OUT, 6, 1,
        "'h' is defined twice (first at line 5)", "each variable is defined once"),
    # fuzz review: `param ..., t` pointed at the first use of the index, with no hint
    bad("index-declared-as-param", HEAD.replace("bo\n", "bo, t\n") + H + OUT, 4, 24,
        "'t' is declared as a parameter and used as an index (line 2)",
        "an index needs no declaration: rename the parameter"),
    bad("stack-bi", HEAD + "h = stack(2) bi rnn(x, H)\n" + OUT, 5, 14,
        "the modifiers 'stack' and 'bi' cannot be combined",
        "h1 = bi rnn(x, H), then h = bi rnn(h1, H)"),
    # a form feed in a comment ends no line of the parser's (review 38: read a line off)
    bad("stack-bi-after-a-form-feed", "# a comment\x0c with a form feed\n" + HEAD +
        "h = stack(2) bi rnn(x, H)\n" + OUT, 6, 14,
        "the modifiers 'stack' and 'bi' cannot be combined"),
    # the stack after the other modifier (review 35: the generic "unexpected 'rnn'")
    bad("bi-stack", HEAD + "h = bi stack(3) rnn(x, H)\n" + OUT, 5, 8,
        "the modifiers 'bi' and 'stack' cannot be combined",
        "h1 = bi rnn(x, H), then h = bi rnn(h1, H) (and so on)"),
    bad("reverse-stack", HEAD + "h =reverse  stack( 2 ) gru(x, H)  # two\n" + OUT, 5, 13,
        "the modifiers 'reverse' and 'stack' cannot be combined",
        "stack the 2 'reverse' layers one a line: h1 = reverse gru(x, H), then "
        "h = reverse gru(h1, H)"),
    bad("reverse-bi", HEAD + "h = reverse bi rnn(x, H)\n" + OUT, 5, 13,
        "the modifiers 'reverse' and 'bi' cannot be combined", "write h = bi rnn(x, H)"),
    bad("bi-reverse", HEAD + "h = bi reverse rnn(x, H)\n" + OUT, 5, 8,
        "the modifiers 'bi' and 'reverse' cannot be combined", "bi already runs both ways"),
    # ------------------------------------------------------------------- names
    bad("undefined-did-you-mean", HEAD + "param Wx\nh[t] : H = tanh(Wxx @ x[t] + U @ h[t-1] + b)\n"
        + OUT, 6, 17, "undefined name 'Wxx'", "did you mean 'Wx'?"),
    bad("undefined-no-suggestion", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + qqq)\n" + OUT,
        5, 41, "undefined name 'qqq'", "a parameter is declared on a param line: param ..., qqq"),
    bad("undefined-indexed", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + qqq[t])\n" + OUT,
        5, 41, "undefined name 'qqq'", "declare it with param, input, target, or define it"),
    bad("undefined-parameter-near-one", HEAD + "h[t] : H = tanh(W @ x[t] + Uh @ h[t-1])\n"
        + OUT, 5, 28, "undefined name 'Uh'", "did you mean 'U'?"),
    bad("defined-twice", HEAD + H + "h[t] : H = tanh(W @ x[t])\n" + OUT, 6, 1,
        "'h' is defined twice (first at line 5)"),
    # found by the fuzz test: a cell use and a plain equation for one name
    bad("cell-use-defined-twice", HEAD + "h = rnn(x, 4)\nh = 0\n" + OUT, 6, 1,
        "'h' is defined twice (first at line 5)"),
    bad("declared-twice", HEAD + "param W\n" + H + OUT, 5, 7,
        "'W' is declared twice (first at line 4)"),
    bad("dim-twice", HEAD + "dim H = 3\n" + H + OUT, 5, 1, "dim 'H' is declared twice"),
    bad("unknown-function", HEAD + "h[t] : H = tanhh(W @ x[t] + U @ h[t-1] + b)\n" + OUT, 5, 12,
        "unknown function 'tanhh'", "did you mean 'tanh'?"),
    bad("loss-as-function", HEAD + "h[t] : H = softmax(xent(x[t], y[t]))\n" + OUT, 5, 20,
        "unknown function 'xent'", "a loss is its own statement"),
    bad("function-arity", HEAD + "h[t] : H = tanh(U @ h[t-1], b)\n" + OUT, 5, 12,
        "tanh takes 1 argument, given 2"),
    bad("size-as-value", HEAD + "h[t] : H = tanh(H)\n" + OUT, 5, 17, "'H' is a size, not a value"),
    bad("param-with-index", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b[t])\n" + OUT,
        5, 41, "parameter 'b' has no index"),
    bad("return-outside-cell", HEAD + "return h\n", 5, 8, "'return' belongs inside a cell"),
    # ------------------------------------------------------------------- indexes
    bad("wrong-index", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[u] + b)\n" + OUT, 5, 34,
        "wrong index 'u' on 'h': this equation runs over 't'"),
    bad("other-sequence-index", HEAD + H + "o[u] = Wo @ h[t] + bo\nloss xent(o[t], y[t])\n",
        6, 15, "'h' runs over 't' and this equation over 'u'", "h[end]"),
    bad("sequence-without-index", HEAD + "h[t] : H = tanh(W @ x + U @ h[t-1] + b)\n" + OUT,
        5, 21, "'x' runs over 't': write x[t]"),
    bad("sequence-without-index-per-example", HEAD + H + "param Wc, bc\nc = Wc @ h + bc\n"
        + OUT, 7, 10, "'h' runs over 't': read it at one place, h[end] or h[1]"),
    bad("per-example-with-index", HEAD + "param Vc\nc : H = tanh(Vc @ b)\n" + H
        + "g[t] : H = tanh(c[t] + h[t])\n" + OUT, 8, 17,
        "'c' has one value per example and no index"),
    bad("per-example-reads-sequence", HEAD + "init h = tanh(h[t])\n" + H + OUT, 5, 17,
        "this value is one per example, so it cannot read 'h' at step 't'", "h[end]"),
    bad("two-indexes", HEAD + "h[t] : H = tanh(W @ x[t, u])\n" + OUT, 5, 21,
        "'x' has 1 index: write x[t]"),
    # ------------------------------------------------------------------- init
    bad("init-without-index", HEAD + H + "param Vc\ninit c = tanh(b)\nc : H = tanh(Vc @ b)\n"
        + OUT, 7, 1, "init gives the value before the first step; 'c' has no index"),
    bad("init-of-nothing", HEAD + "init q = b\n" + H + OUT, 5, 1,
        "init for 'q', but no equation defines 'q'"),
    bad("init-of-input", HEAD + "init x = b\n" + H + OUT, 5, 1,
        "init for 'x', but 'x' is an input"),
    bad("init-twice", HEAD + "init h = b\ninit h = b\n" + H + OUT, 6, 1,
        "'h' has two init values"),
    # ------------------------------------------------------------------- sizes
    bad("size-undetermined", HEAD + "h[t] = tanh(W @ x[t] + U @ h[t-1] + b)\n"
        "o[t] = Wo @ h[t] + bo\n", 5, 1,
        "the size of 'h' is not determined by anything", "h[t] : SIZE"),
    bad("size-undetermined-no-loss", HEAD + H + "o[t] = Wo @ h[t] + bo\n", 6, 1,
        "the size of 'o' is not determined by anything",
        "or add the loss line, e.g. loss xent(o[t], y[t]): the model has none"),
    bad("size-mismatch-loss", HEAD + H + "o[t] : 7 = Wo @ h[t] + bo\nloss xent(o[t], y[t])\n",
        7, 6, "size mismatch: 'o' has size 7, 'y' has size V"),
    bad("size-mismatch-add", HEAD + H + "z[t] : 8 = h[t] + x[t]\n" + OUT, 6, 12,
        "size mismatch: 'h[t] + x[t]' has size 16 (from 'h'), 'x[t]' has size V",
        "the terms of a sum"),
    bad("size-mismatch-matmul", HEAD + "param Q : [H, 5]\n" + H + "g[t] = Q @ h[t]\n" + OUT,
        7, 8, "size mismatch: 'Q' has size 5, 'h' has size 16"),
    bad("size-mismatch-concat", HEAD + H + "g[t] : 20 = [h[t]; h[t]]\n" + OUT, 6, 13,
        "size mismatch", "has size 20", "the sum of its parts has size 32"),
    bad("param-matrix-and-vector", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + W)\n" + OUT,
        5, 41, "parameter 'W' is used as a vector here but is a matrix elsewhere"),
    bad("number-as-variable", HEAD + "h[t] : H = 3\n" + OUT, 5, 1,
        "'h' is defined as a number, not a vector"),
    bad("matmul-left-not-param", HEAD + H + "o[t] = h[t] @ Wo\nloss xent(o[t], y[t])\n", 6, 8,
        "the right side of '@' is the parameter 'Wo'", "Wo @ v"),
    # ------------------------------------------------------------------- causality
    bad("algebraic-loop", HEAD + "h[t] : H = tanh(W @ h[t] + b)\n" + OUT, 5, 21,
        "algebraic loop: h (line 5) -> h (line 5)", "pass through a delay"),
    bad("algebraic-loop-two", HEAD + "h[t] : H = tanh(W @ g[t] + b)\n"
        "g[t] : H = tanh(U @ h[t] + b)\n" + OUT, 5, 21,
        "algebraic loop: h (line 5) -> g (line 6) -> h (line 5)"),
    bad("mixed-directions", HEAD + "h[t] : H = tanh(W @ h[t-1] + U @ h[t+1] + b)\n" + OUT, 5, 1,
        "mixed directions on one recurrence (h)", "h reads h[t+1] (line 5)",
        "h reads h[t-1] (line 5)"),
    # a reduction over a recurrence's own index reading the recurrence: a cycle of the
    # unfolded graph (it was a networkx traceback when the model first ran)
    bad("reduction-over-own-recurrence", HEAD + "g[t] : H = tanh(U @ h[t-1] + b)\n"
        "h[t] : H = tanh(W @ x[t] + sum over t (g[t]))\n" + OUT, 6, 28,
        "h[t] reads 'g' at every step of t ('sum over t'), but g and h are on one "
        "recurrence over t (g, h): the later steps of g are computed from h[t] itself",
        "or over values computed before the recurrence"),
    bad("softmax-over-the-decoders-index", "input h[t] : vec(6)\ntarget y[u] : class(4)\n"
        "param va : [5]\nparam Wa, Ua, Wd, Cd, F, bd, Wo, bo\n"
        "e[u, t] = va @ tanh(Wa @ s[u-1] + Ua @ h[t])\n"
        "a[u, t] = softmax over u (e[u, t])\nctx[u] = sum over t (a[u, t] * h[t])\n"
        "s[u] : 5 = tanh(Wd @ s[u-1] + Cd @ ctx[u] + F @ y[u-1] + bd)\n"
        "o[u] = Wo @ s[u] + bo\nloss xent(o[u], y[u])\n", 6, 11,
        "a[u, t] reads 'e' at every step of u ('softmax over u'), but e and a are on one "
        "recurrence over u (e, a, ctx, s): the later steps of e are computed from a[u, t] "
        "itself", "attention normalises over the source's index, not the decoder's u"),
    # ------------------------------------------------------------------- cells
    bad("unknown-cell", HEAD + "h = rnnn(x, H)\n" + OUT, 5, 5, "unknown function 'rnnn'",
        "did you mean 'rnn'?"),
    bad("unknown-cell-with-modifier", HEAD + "h = bi rnnn(x, H)\n" + OUT, 5, 5,
        "unknown cell 'rnnn'", "did you mean 'rnn'?"),
    bad("cell-argument-count", HEAD + "h = rnn(x, H, 3)\n" + OUT, 5, 5,
        "cell 'rnn' takes 2 arguments (x, H), given 3"),
    bad("cell-recursive", HEAD + CELL + "  h = foo(x, H)\n  return h\n}\nh = foo(x, H)\n" + OUT,
        7, 7, "cell 'foo' uses itself (through foo -> foo)"),
    bad("cell-returns-undefined", HEAD + CELL + "  g[t] : H = A @ x[t]\n  return h\n}\n"
        "h = foo(x, H)\n" + OUT, 8, 10, "cell 'foo' returns 'h', which it does not define"),
    # instances rename a cell's names (h.A): a misspelt one was near none of them
    bad("cell-misspelt-parameter", HEAD + CELL + "  g[t] : H = AA @ x[t]\n  return g\n}\n"
        "h = foo(x, H)\n" + OUT, 7, 14, "undefined name 'AA'", "did you mean 'A'?"),
    bad("cell-misspelt-variable", HEAD + CELL + "  g[t] : H = A @ x[t] + gg[t-1]\n  return g\n"
        "}\nh = foo(x, H)\n" + OUT, 7, 25, "undefined name 'gg'", "did you mean 'g'?"),
    # a stack feeds layer k-1 to layer k through the first variable argument: here a
    # context, which said "'e.1' runs over 't': write e.1[t]" inside the cell
    bad("stack-through-a-context", HEAD + "input z : vec(3)\ncell cond(c, x, H) {\n"
        "  param A, C\n  g[t] : H = tanh(A @ x[t] + C @ c)\n  return g\n}\n"
        "h = stack(2) cond(z, x, H)\n" + OUT, 11, 19, "stack(2) feeds each layer to the next "
        "through the first variable argument ('c' of cell 'cond'), and 'z' is one value",
        "make the sequence the first variable argument"),
    bad("cell-no-return", HEAD + CELL + "  g[t] : H = A @ x[t]\n}\nh = foo(x, H)\n" + OUT, 5, 1,
        "cell 'foo' has no return", "return NAME"),
    bad("cell-defined-twice", HEAD + "cell foo(x, H) {\n  return x\n}\n"
        "cell foo(x, H) {\n  return x\n}\n" + H + OUT, 8, 1, "cell 'foo' is defined twice"),
    bad("cell-bad-statement", HEAD + CELL + "  dim Q = 3\n  g[t] : H = A @ x[t]\n  return g\n}\n"
        "h = foo(x, H)\n" + OUT, 7, 3, "a cell cannot contain a 'dim' statement"),
    bad("cell-use-with-index", HEAD + "h[t] = bi rnn(x, H)\n" + OUT, 5, 1,
        "a cell use defines a whole variable"),
    bad("cell-inside-expression", HEAD + "h[t] : H = tanh(rnn(x, H))\n" + OUT, 5, 17,
        "cell 'rnn' is used inside an expression"),
    bad("cell-expression-argument", HEAD + "h = rnn(x + x, H)\n" + OUT, 5, 9,
        "argument 'x' of cell 'rnn' must be a name or a number"),
    bad("stack-zero", HEAD + "h = stack(0) rnn(x, H)\n" + OUT, 5, 11,
        "stack needs at least one layer"),
    bad("prelude-error-at-use", HEAD + "param Vc\nc : H = tanh(Vc @ b)\nh = rnn(c, H)\n" + OUT,
        7, 9, "cell 'rnn' runs over a sequence, and 'c' is one value an example",
        "pass a variable over an index"),     # not "write c without [...]": it is so
    bad("bi-over-a-per-example-value", HEAD + "param Vc\nc : H = tanh(Vc @ b)\n"
        "h = bi rnn(c, H)\n" + OUT, 7, 12, "cell 'rnn' runs over a sequence, and 'c'"),
    # "write e[t, u]", then "write e, not e[...]": the advice looped
    bad("cell-over-two-indexes", HEAD + "input z[u] : onehot(V)\ne[t, u] : H = W @ x[t]\n"
        "h = rnn(e, H)\n" + OUT, 7, 9, "cell 'rnn' runs over one index, and 'e' has two "
        "(t, u)", "s[t] = sum over u (e[t, u]), then rnn(s, ...)"),
    # a size given to a cell is checked where it is written, as one written in place is
    bad("cell-size-zero", HEAD + "h = rnn(x, 0)\n" + OUT, 5, 12,
        "a size must be a whole number of at least 1, not 0", "a size counts units"),
    bad("cell-size-fraction", HEAD + "h = stack(2) gru(x, 2.5)\n" + OUT, 5, 21,
        "a size must be a whole number of at least 1, not 2.5"),
    bad("cell-size-huge", HEAD + "h = bi lstm(x, 99999999999)\n" + OUT, 5, 16,
        "a size of 99999999999 units is too large (at most 10000000)",
        "would not fit in memory"),
    bad("error-inside-user-cell", HEAD + CELL + "  g[t] : H = A @ x[t] + q\n  return g\n}\n"
        "h = foo(x, H)\n" + OUT, 7, 25, "undefined name 'q'"),
    # ------------------------------------------------------------------- losses
    bad("loss-on-input", HEAD + H + "o[t] = Wo @ h[t] + bo\nloss xent(x[t], y[t])\n", 7, 11,
        "the first argument of xent is the model's output; 'x' is an input"),
    bad("xent-vec-target", HEAD + "target z[t] : vec(V)\n" + H
        + "o[t] = Wo @ h[t] + bo\nloss xent(o[t], z[t])\n", 8, 17,
        "xent needs a class target; 'z' is vec"),
    bad("loss-against-output", HEAD + H + "o[t] = Wo @ h[t] + bo\nloss xent(o[t], o[t])\n",
        7, 17, "the second argument of xent must be a target"),
    bad("loss-of-expression", HEAD + H + "o[t] = Wo @ h[t] + bo\nloss xent(o[t] + 1, y[t])\n",
        7, 11, "a loss compares two variables"),
    bad("unknown-loss", HEAD + H + "o[t] = Wo @ h[t] + bo\nloss xentt(o[t], y[t])\n", 7, 6,
        "unknown loss 'xentt'", "did you mean 'xent'?"),
    # a parameter as a loss argument (walk 12: an AttributeError)
    bad("loss-of-a-parameter", HEAD + H + "o[t] = Wo @ h[t] + bo\nloss xent(Wo, y[t])\n",
        7, 11, "'Wo' is a parameter; a loss compares two variables", "o[t] = Wo @ h[t]"),
    bad("loss-against-a-parameter", HEAD + H + "o[t] = Wo @ h[t] + bo\nloss xent(o[t], Wo)\n",
        7, 17, "'Wo' is a parameter", "the second argument is a target"),
    # ------------------------------------------------------------------- params, train
    bad("unknown-initialiser", HEAD + "param Q : [H, H] init orthogonall\n" + H + OUT, 5, 23,
        "unknown initialiser 'orthogonall'", "did you mean 'orthogonal'?"),
    # xavier and orthogonal have no fan-in on a vector: it started at zero, silently
    bad("matrix-initialiser-on-a-vector", HEAD + "param c : [H] init orthogonal\n" + H
        + "o[t] = Wo @ (h[t] + c) + bo\nloss xent(o[t], y[t])\n", 5, 7,
        "parameter 'c' is a vector of size 16: the initialiser 'orthogonal' is for a matrix",
        "a vector takes zeros"),
    # every value inf or nan, found by gradcheck or training at best
    bad("division-by-zero", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b) / 0\n" + OUT,
        5, 46, "division by the number 0"),
    # every x[root] read the root: a model over nodes trained on roots alone, silently
    bad("tree-named-root", TREE.replace("tree n", "tree root").replace("[n]", "[root]")
        + "h[root] : H = tanh(E @ w[root]) if leaf\n"
        "h[root] : H = tanh(W @ [h[root.left]; h[root.right]] + b) otherwise\n"
        "o[root] = Ws @ h[root] + bs\nloss xent(o[root], y[root])\n", 1, 1,
        "a tree index cannot be named 'root'"),
    # never read (a leaf reads no child); accepted in silence
    bad("init-over-a-tree", TREE + "init h = b\nh[n] : H = tanh(E @ w[n]) if leaf\n"
        "h[n] : H = tanh(W @ [h[n.left]; h[n.right]] + b) otherwise\n" + TREE_OUT, 6, 1,
        "'h' runs over the tree 'n', which has none", "its 'if leaf' equation"),
    bad("tree-declared-twice", TREE + "tree n\n" + "h[n] : H = tanh(E @ w[n]) if leaf\n"
        "h[n] : H = tanh(W @ [h[n.left]; h[n.right]] + b) otherwise\n" + TREE_OUT, 6, 1,
        "tree 'n' is declared twice (first at line 1)"),
    # LANGUAGE.md section 3's types by role: no loader feeds a class input, no loss
    # reads a onehot target; both checked, and failed later or never
    bad("class-input", "input x[t] : class(V)\n", 1, 14,
        "class(...) is the type of targets; an input is onehot(V) or vec(D)"),
    bad("onehot-target", HEAD.replace("target y[t] : class(V)", "target y[t] : onehot(V)")
        + H + OUT, 3, 15, "onehot(...) is the type of inputs; a target is class(K)"),
    bad("init-a-number", HEAD + "init h = 0\n" + H + OUT, 5, 10,       # walk 12: line 6
        "init h is a number, and 'h' a vector of size 16", "without one, a delay before the "
        "first step reads zero"),
    bad("initialiser-negative-scale", HEAD + "param Q : [H, H] init uniform(-1)\n" + H + OUT,
        5, 23, "uniform()'s scale must be a positive number up to 1e+30, not -1"),  # a crash
    bad("initialiser-overflowing-scale", HEAD + "param Q : [H, H] init normal(1e300)\n" + H
        + OUT, 5, 23, "normal()'s scale must be a positive number up to 1e+30, not 1e+300"),
    bad("param-init-overflowing-scale", HEAD + H + OUT + "train {\n  param_init = "
        "uniform(1e39)\n}\n", 9, 24, "uniform()'s scale must be a positive number up to 1e+30"),
    bad("initialiser-arity", HEAD + "param Q : [H, H] init normal\n" + H + OUT, 5, 23,
        "initialiser 'normal' takes a scale"),
    bad("unknown-train-key", HEAD + H + OUT + "train {\n  batchh = 3\n}\n", 9, 3,
        "unknown train setting 'batchh'", "did you mean 'batch'?"),
    bad("duplicate-train-key", HEAD + H + OUT + "train {\n  batch = 3\n  batch = 4\n}\n", 10, 3,
        "train setting 'batch' is given twice"),
    bad("two-train-blocks", HEAD + H + OUT + "train {\n  batch = 3\n}\ntrain {\n  seed = 1\n}\n",
        11, 1, "there is more than one train block"),
    bad("dropout-rate", HEAD + "h[t] : H = dropout(tanh(W @ x[t] + U @ h[t-1] + b), 1.5)\n"
        + OUT, 5, 53, "dropout's rate must be a number in [0, 1)"),
    # ------------------------------------------------------------------- trees
    bad("leaf-reads-child", TREE + "h[n] : H = tanh(W @ [h[n.left]; h[n.right]] + b) if leaf\n"
        "h[n] : H = tanh(E @ w[n]) otherwise\n" + TREE_OUT, 6, 24, "a leaf has no children",
        "hint: read the children in the 'otherwise' equation"),
    bad("tree-missing-otherwise", TREE + "h[n] : H = tanh(E @ w[n]) if leaf\n" + TREE_OUT, 6, 1,
        "'h' over the tree 'n' has no 'otherwise' equation"),
    bad("tree-missing-leaf", TREE + "h[n] : H = tanh(W @ [h[n.left]; h[n.right]] + b) otherwise\n"
        + TREE_OUT, 6, 1, "'h' over the tree 'n' has no 'if leaf' equation"),
    bad("tree-bad-child", TREE + "h[n] : H = tanh(E @ w[n]) if leaf\n"
        "h[n] : H = tanh(W @ h[n.middle] + b) otherwise\n" + TREE_OUT, 7, 23,
        "a node has children 'left' and 'right', not 'middle'",
        "hint: write h[n.left] or h[n.right]"),
    bad("tree-leaf-case-twice", TREE + "h[n] : H = tanh(E @ w[n]) if leaf\n"
        "h[n] : H = tanh(b) if leaf\nh[n] : H = tanh(W @ h[n.left] + b) otherwise\n"
        + TREE_OUT, 7, 1, "'h' over the tree 'n' has two 'if leaf' equations (the other "
        "at line 6)"),
    bad("tree-plain-beside-cases", TREE + "h[n] : H = tanh(E @ w[n]) if leaf\n"
        "h[n] : H = tanh(W @ h[n.left] + b) otherwise\nh[n] : H = tanh(b)\n" + TREE_OUT,
        8, 1, "has a plain equation beside its 'if leaf' and 'otherwise' equations"),
    # (it said "has its cases wrong", and that it needs an 'if leaf' and an 'otherwise')
    bad("tree-plain-equation-twice", TREE + "h[n] : H = tanh(E @ w[n])\n"
        "h[n] : H = tanh(b)\n" + TREE_OUT, 7, 1, "'h' is defined twice (first at line 6)",
        "hint: each variable is defined once: over a tree, by one plain equation"),
    bad("tree-shift", TREE + "h[n] : H = tanh(E @ w[n]) if leaf\n"
        "h[n] : H = tanh(W @ h[n-1] + b) otherwise\n" + TREE_OUT, 7, 23,
        "a tree index has no shifts"),
    # a value with no value at a leaf (its one equation reads children; review 25: the
    # executors read node -1 there, the last node, and disagreed)
    bad("plain-tree-equation-reads-children", TREE + "h[n] : H = tanh(W @ [h[n.left]; "
        "h[n.right]] + b)\n" + TREE_OUT, 6, 22, "'h' over the tree 'n' reads its children "
        "and has no 'if leaf' equation", "`h[n] = ... if leaf`"),
    bad("leaf-reads-children-through-a-variable", TREE + "a[n] = [h[n.left]; h[n.right]]\n"
        "h[n] : H = tanh(E @ w[n] + W @ a[n]) if leaf\n"
        "h[n] : H = tanh(W @ a[n] + b) otherwise\n" + TREE_OUT, 7, 32,
        "the 'if leaf' equation reads a[n], and 'a' has no value at a leaf: its one "
        "equation reads h[n.left], line 6", "read a[n] in an 'otherwise' equation only"),
    bad("child-of-an-internal-only-variable", TREE + "a[n] = [h[n.left]; h[n.right]]\n"
        "h[n] : H = tanh(E @ w[n]) if leaf\n"
        "h[n] : H = tanh(W @ a[n] + b + W @ a[n.left]) otherwise\n" + TREE_OUT, 8, 36,
        "a[n.left] is read where a child may be a leaf, and 'a' has no value at a leaf"),
    bad("root-of-an-internal-only-variable", TREE + "a[n] = [h[n.left]; h[n.right]]\n"
        "h[n] : H = tanh(E @ w[n]) if leaf\nh[n] : H = tanh(W @ a[n] + b) otherwise\n"
        "param Wr\nr = Wr @ a[root]\n" + TREE_OUT, 10, 10,
        "a[root] is read where the root of a one-word tree is a leaf"),
    bad("loss-over-an-internal-only-variable", TREE + "a[n] = [h[n.left]; h[n.right]]\n"
        "h[n] : H = tanh(E @ w[n]) if leaf\nh[n] : H = tanh(W @ a[n] + b) otherwise\n"
        "o[n] = Ws @ a[n] + bs\nloss xent(o[n], y[n])\n", 10, 11,
        "the loss sums over every node of 'n', leaves too, and 'o' has no value at a leaf: "
        "its one equation reads a[n], line 9"),
    bad("root-loss-of-an-internal-only-variable", TREE + "a[n] = [h[n.left]; h[n.right]]\n"
        "h[n] : H = tanh(E @ w[n]) if leaf\nh[n] : H = tanh(W @ a[n] + b) otherwise\n"
        "o[n] = Ws @ a[n] + bs\ntarget yr : class(5)\nloss xent(o[root], yr)\n", 11, 11,
        "o[root] is read where the root of a one-word tree is a leaf",
        "give o an 'if leaf' equation"),
    bad("init-reads-an-internal-only-root", TREE + "a[n] = [h[n.left]; h[n.right]]\n"
        "h[n] : H = tanh(E @ w[n]) if leaf\nh[n] : H = tanh(W @ a[n] + b) otherwise\n"
        "input x[t] : onehot(5)\nparam Vi, U\ns[t] : 16 = tanh(U @ s[t-1] + E @ x[t])\n"
        "init s = tanh(Vi @ a[root])\n" + TREE_OUT, 12, 20,
        "a[root] is read where the root of a one-word tree is a leaf"),   # review 26
    # walk 12: `tree n` forgotten was "defined twice"; a tree's loop hinted h[t-1]
    bad("tree-not-declared", TREE.replace("tree n\n", "") + "h[n] : H = tanh(E @ w[n]) "
        "if leaf\nh[n] : H = tanh(W @ [h[n.left]; h[n.right]] + b) otherwise\n" + TREE_OUT,
        5, 1, "'leaf' cases are for tree indexes", "declare the index with `tree n`"),
    bad("tree-loop-without-a-child", TREE + "h[n] : H = tanh(E @ w[n]) if leaf\n"
        "h[n] : H = tanh(W @ [h[n]; h[n.right]] + b) otherwise\n" + TREE_OUT, 7, 22,
        "algebraic loop: h (line 7) -> h (line 7)", "such as h[n.left] (a child)"),
    # walk 12: a second model line was ignored; a non-ASCII letter was "not a letter"
    bad("model-twice", "model a\nmodel b\n" + HEAD + H + OUT, 2, 1,
        "the model is named twice (first at line 1)", "keep one `model NAME` line"),
    bad("non-ascii-name", HEAD + "h\u00e9[t] : H = tanh(W @ x[t])\n" + OUT, 5, 2,
        "unexpected character", "names are ASCII letters, digits and _ ('\u00e9' is "
        "U+00E9, not ASCII)"),
    # `W * x[t]` for the book's W x[t]: the size hint alone made W a vector (walk 12)
    bad("param-times-value", HEAD + "h[t] : H = tanh(W * x[t] + U @ h[t-1] + b)\n" + OUT,
        5, 1, "size mismatch", "`W * ...` multiplies elementwise, which makes W a vector: a "
        "matrix times a vector is written `W @ ...`"),
    bad("children-of-sequence", HEAD + "h[t] : H = tanh(W @ x[t] + U @ h[t.left] + b)\n" + OUT,
        5, 34, "'t' is a sequence index; children are for trees"),
    bad("cases-without-tree", HEAD + "h[t] : H = W @ x[t] otherwise\n" + OUT, 5, 1,
        "'otherwise' cases are for tree indexes"),
    # a product of two parameters: the shape it knows, ? for what nothing determines
    bad("param-shape-open", HEAD.replace("param W,", "param P, W,") +
        "h[t] : H = tanh(W @ (P @ x[t]) + U @ h[t-1] + b)\n" + OUT, 5, 22,
        "the shape of parameter 'P' is not determined: [?, V]",
        "param P : [?, V]"),
    # fuzz review: a huge delay checked, then the executors crashed or ran for ever
    bad("delay-longer-than-any-sequence", HEAD + "h[t] : H = tanh(W @ x[t] + U @ "
        "h[t-99999999999999999999] + b)\n" + OUT, 5, 34,
        "h is read 100000000000000000000 steps away, longer than any sequence can be",
        "shorten that delay", "e.g. h[t-1]"),
    bad("advance-longer-than-any-sequence", HEAD + "h[t] : H = tanh(W @ x[t] + U @ "
        "h[t+1000001] + b)\n" + OUT, 5, 34, "h is read 1000001 steps away",
        "shorten that advance"),
    # fuzz review: the index on the left of a tree case was ignored (read as h[n])
    bad("tree-case-wrong-index", TREE + "h[n] : H = tanh(E @ w[n]) if leaf\n"
        "h[zz, q] : H = tanh(W @ [h[n.left]; h[n.right]] + b) otherwise\n" + TREE_OUT, 7, 3,
        "wrong index 'zz' on 'h': its equation of line 6 runs over 'n'",
        "write h[n] in each of its equations"),
    bad("tree-case-without-index", TREE + "h[n] : H = tanh(E @ w[n]) if leaf\n"
        "h : H = tanh(W @ [h[n.left]; h[n.right]] + b) otherwise\n" + TREE_OUT, 7, 1,
        "wrong index on 'h': it has none here", "write h[n] in each of its equations"),
    # fuzz review: bi and stack said "needs a sequence argument" for an undefined name
    bad("bi-over-an-undefined-name", "target y[t] : class(K)\nparam Wo, bo\n"
        "e = embed(x, 8)\nh = bi gru(e, 8)\n" + OUT, 3, 11,
        "undefined name 'x'", "declare it with input"),
    bad("stack-over-an-undefined-name", "target y[t] : class(K)\nparam Wo, bo\n"
        "e = embed(x, 8)\nh = stack(2) gru(e, 8)\n" + OUT, 3, 11, "undefined name 'x'"),
    # fuzz review: a dim and a parameter (or variable) of one name were both accepted
    bad("dim-and-param", HEAD.replace("bo\n", "bo, H\n") + H + OUT, 4, 24,
        "'H' is declared twice (first at line 1 as a dim)", "a size (dim) or a value"),
    bad("dim-and-variable", "dim h = 4\n" + HEAD + H + OUT, 6, 1,
        "'h' is declared twice (first at line 1 as a dim)"),
    bad("dim-and-input", "dim x = 4\n" + HEAD + H + OUT, 3, 1,
        "'x' is declared twice (first at line 1 as a dim)"),
    # fuzz review: check listed U [1e20, 1e20]; the other commands then ran out of memory
    bad("dim-too-large", HEAD.replace("16", "99999999999999999999") + H + OUT, 1, 9,
        "a dim of 99999999999999999999 units is too large (at most 10000000)",
        "would not fit in memory"),
    bad("size-too-large", HEAD + H.replace(": H", ": 10000001") + OUT, 5, 8,
        "a size of 10000001 units is too large"),
]


def _read_bad(text):
    try:
        seqgraph.read_spec("bad.sg", text)
    except SpecError as e:
        return e
    # any other exception propagates and fails the test: only SpecError may escape
    pytest.fail("the spec was accepted")


@pytest.mark.parametrize("text,line,column,fragments", TABLE)
def test_bad_spec(text, line, column, fragments):
    e = _read_bad(text)
    out = e.render()
    for f in fragments:
        assert f in out, out
    assert (e.line, e.column) == (line, column), out
    assert f"bad.sg:{line}:{column}: error: " in out
    src = "".join(c if c.isprintable() else " " for c in text.split("\n")[line - 1])
    shown, caret = out.splitlines()[1:3]
    assert caret.endswith("^")
    if len(src) <= 160:
        assert shown == f"  {line:4d} | {src}" and len(caret) - len("       | ") == column
    else:                        # a long line is shown around the caret
        col = len(caret) - len("       | ")
        assert "..." in shown and shown[9 + col - 1:].startswith(src[column - 1:][:20]), out
    assert len(e.message.splitlines()) == 1, "a message is one line"


def test_an_instance_name_is_never_suggested_outside_its_cell():
    # `h.A` cannot be written in an equation: the hint names no dotted name
    e = _read_bad(HEAD + "cell foo(x, H) {\n  param Wxy\n  g[t] : H = Wxy @ x[t]\n"
                  "  return g\n}\nh = foo(x, H)\no[t] = Wxy @ h[t] + bo\n"
                  "loss xent(o[t], y[t])\n")
    assert "undefined name 'Wxy'" in e.message and "h.Wxy" not in e.render()


def test_table_is_large_and_distinct():
    assert len(TABLE) >= 40
    assert len({p.values[0] for p in TABLE}) == len(TABLE)


_LARK_NAMES = re.compile(r"__ANON|\b(RPAR|LPAR|RSQB|LSQB|RBRACE|LBRACE|_NL|EQUAL|COMMA)\b|"
                         r"\$END|Token\(|Tree\(")


@pytest.mark.parametrize("text,line,column,fragments", TABLE)
def test_no_lark_internals(text, line, column, fragments):
    e = _read_bad(text)
    assert not _LARK_NAMES.search(e.message + " " + e.hint), e.render()


# --------------------------------------------------------------------------- files
def test_non_utf8_file_is_a_spec_error(tmp_path):
    p = tmp_path / "latin.sg"
    p.write_bytes(b"dim H = 16\n# caf\xe9\n")
    with pytest.raises(SpecError) as info:
        seqgraph.read_spec(str(p))
    assert (info.value.line, info.value.column) == (2, 6)
    shown = info.value.render()
    assert "not UTF-8" in shown and "byte 0xe9" in shown
    assert "# caf\ufffd" in shown and "\n       |      ^" in shown   # the line, a caret


@pytest.mark.parametrize("ending", ["\r", "\r\n"])
def test_old_mac_and_windows_line_endings(tmp_path, ending):
    """A lone CR ends a line as LF does (walk 12: an old Mac file was one line, a comment
    swallowing the rest); an error is placed on its line."""
    good = HEAD + "# the state\n" + H + OUT
    p = tmp_path / "cr.sg"
    p.write_bytes(good.replace("\n", ending).encode())
    assert seqgraph.read_spec(str(p)).graph.vars == seqgraph.read_spec("g.sg", good).graph.vars
    p.write_bytes((HEAD + "# the state\nh[t] = tanh(W @ x[t]\n").replace("\n", ending).encode())
    with pytest.raises(SpecError) as e:
        seqgraph.read_spec(str(p))
    assert e.value.line == HEAD.count("\n") + 2 and "never closed" in str(e.value)


@pytest.mark.parametrize("text", ["", "# only a comment\n# and another\n", "\n\n  \n"])
def test_empty_specs_check_with_a_warning(tmp_path, text):
    """Decided: a file with no statements is a model with nothing in it; it checks, and
    the missing loss is a warning (it cannot train), not an error."""
    p = tmp_path / "empty.sg"
    p.write_text(text)
    spec = seqgraph.read_spec(str(p))
    assert any("no loss" in w[0] for w in spec.graph.warnings)


def test_a_vector_declared_as_one_gets_no_hint_for_at():
    """`a * x[t]` with `param a : [H]` means an elementwise gate: a size mismatch in its
    equation does not suggest @ (review of walk 12's hint)."""
    text = HEAD.replace("param W, U, b, Wo, bo", "param W, U, b, Wo, bo\nparam a : [H]") + \
        "g[t] : 5 = a * h[t]\n" + H + OUT
    with pytest.raises(SpecError) as e:
        seqgraph.read_spec("g.sg", text)
    assert "'g' has size 5" in str(e.value), e.value
    assert "multiplies elementwise" not in str(e.value)
    undeclared = text.replace("\nparam a : [H]", "\nparam a")     # there, it is said
    with pytest.raises(SpecError) as e:
        seqgraph.read_spec("g.sg", undeclared)
    assert "`a * ...` multiplies elementwise, which makes a a vector" in str(e.value)


def test_a_matrix_named_parameter_times_a_value_is_a_warning():
    """`U * h[t-1]` for the book's U h(t-1) fits the sizes when U is taken for a vector:
    it trained a diagonal recurrence without a word (walk 14). A warning, once, at the
    parameter; not for a declared shape, a vector's name or a number times a matrix."""
    text = HEAD + "h[t] : H = tanh(W @ x[t] + U * h[t-1] + h[t-1] * U + b)\n" + OUT
    spec = seqgraph.read_spec("d.sg", text)
    assert [m for m, _ in spec.graph.warnings] == [
        "`U * ...` multiplies elementwise, which makes U a vector (one weight per unit); "
        "a matrix times a vector is written `U @ ...` (declare `param U : [n]` if a vector "
        "is meant)"]
    pos = spec.graph.warnings[0][1]
    assert (pos.line, pos.column) == (5, 28)
    quiet = [text.replace("param W, U, b", "param W, b\nparam U : [H]").replace(
                 "h[t] :", "\nh[t] :"),
             text.replace("U", "u"),
             HEAD + "h[t] : H = tanh(2 * W @ x[t] + U @ h[t-1] + b)\n" + OUT]
    for t in quiet:
        assert not seqgraph.read_spec("d.sg", t).graph.warnings, t


def test_a_matrix_initialiser_after_a_list_is_the_last_names_alone():
    """`param W, U, b init orthogonal` gives orthogonal to b alone (each name of a param
    line takes its own init; W and U take the default): b a vector, it is refused, and
    the hint says whose init it is."""
    text = HEAD.replace("param W, U, b, Wo, bo", "param Wo, bo\nparam W, U, b init "
                        "orthogonal") + "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b)\n" + OUT
    with pytest.raises(SpecError) as e:
        seqgraph.read_spec("g.sg", text)
    assert "parameter 'b' is a vector of size 16" in str(e.value)
    assert "each name takes its own init: here it is b's alone, not W, U's (write `W init " \
        "orthogonal, ...`)" in str(e.value)


def test_a_loss_line_repeated_is_a_warning():
    """Two equal loss lines add up, silently doubling the loss (walk 12)."""
    spec = seqgraph.read_spec("d.sg", HEAD + H + OUT + "loss xent(o[t], y[t])\n")
    assert [m for m, _ in spec.graph.warnings] == [
        "this loss repeats the one of line 7: the two add up (a weight says so: "
        "`loss 2 * xent(...)`)"]
    assert spec.graph.warnings[0][1].line == 8


def test_an_init_nothing_reads_is_a_warning():
    """`init o` where only h[t-1] is read: accepted in silence, as if it did something."""
    spec = seqgraph.read_spec("i.sg", HEAD + "init o = bo\n" + H + OUT)
    assert [(m, at.line) for m, at in spec.graph.warnings] == [
        ("init o is never read: no equation reads o with a delay (o[t-1]) or an advance "
         "(o[t+1])", 5)]
    read = seqgraph.read_spec("r.sg", HEAD + "init h = b\n" + H + OUT)
    assert not read.graph.warnings


def test_data_nothing_reads_is_a_warning():
    """An input or a target declared and never read: the unused parameter's warning."""
    spec = seqgraph.read_spec("d.sg", HEAD + "input q[t] : vec(3)\ntarget z : class(2)\n"
                              + H + OUT)
    assert [(m, at.line) for m, at in spec.graph.warnings] == [
        ("input 'q' is declared but no equation reads it", 5),
        ("target 'z' is declared but no loss or equation reads it", 6)]


def test_a_loss_of_weight_0_is_a_warning():
    """`loss 0 * xent(...)` was accepted silently (review 50): its gradient is 0."""
    spec = seqgraph.read_spec("d.sg", HEAD + H + OUT.replace("loss ", "loss 0 * "))
    assert [(m, p.line) for m, p in spec.graph.warnings] == [
        ("this loss has weight 0: it adds nothing to what training minimises: remove the "
         "line or give it a weight above 0", 7)]
    assert not seqgraph.read_spec("d.sg", HEAD + H + OUT.replace("loss ", "loss 0.5 * ")
                                  ).graph.warnings


def test_model_without_loss_is_a_warning():
    spec = seqgraph.read_spec("ok.sg", HEAD + H)
    assert any("no loss" in w[0] for w in spec.graph.warnings)


def test_long_algebraic_loop_is_shortened():
    eqs = "".join(f"h{i}[t] : H = tanh(U @ h{(i + 1) % 40}[t])\n" for i in range(40))
    e = _read_bad(HEAD + eqs)
    assert "algebraic loop" in e.message and "(28 more)" in e.message


# --------------------------------------------------------------------------- property
ELMAN = (Path(__file__).parent.parent / "specs" / "elman.sg").read_text()
_TOKENS = re.compile(r'"[^"\n]*"|[A-Za-z_]\w*|\d+(?:\.\d*)?|\n|[ \t]+|.')
TOKENS = _TOKENS.findall(ELMAN)
VOCAB = sorted(set(TOKENS)) + ["(", ")", "[", "]", "{", "}", "#", '"', "end", "leaf", "1",
                               "t-1", "\x00", "é"]
EDIT = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, len(TOKENS)), st.just("")),
    st.tuples(st.just("insert"), st.integers(0, len(TOKENS)), st.sampled_from(VOCAB)),
    st.tuples(st.just("insert"), st.integers(0, len(TOKENS)), st.characters()),
)


def _mutate(edits):
    toks = list(TOKENS)
    for kind, i, tok in edits:
        i = min(i, len(toks))
        if kind == "delete" and toks:
            del toks[min(i, len(toks) - 1)]
        else:
            toks.insert(i, tok)
    return "".join(toks)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EDIT, min_size=1, max_size=4))
def test_mutated_elman_checks_or_raises_a_located_spec_error(edits):
    text = _mutate(edits)
    try:
        seqgraph.read_spec("elman.sg", text)
    except SpecError as e:
        assert e.line >= 1 and e.column >= 1, e.render()
        assert e.render().startswith(f"elman.sg:{e.line}:{e.column}: error: ")


def test_the_line_shown_is_the_parsers_line_after_a_form_feed():
    """Lines are counted at '\\n' only, as the parser counts them: a form feed (which
    str.splitlines would break at) does not shift the line shown; control characters
    and tabs show as one space each, so the caret stays under its column."""
    text = "model m\n# a comment \x0c with a form feed\ninput x[t] : onehot(V)\n" \
           "h[t] : 4 =\ttanh(W @ x[t] +)\n"
    with pytest.raises(SpecError) as e:
        seqgraph.read_spec("ff.sg", text)
    shown = str(e.value).splitlines()
    assert shown[0].startswith("ff.sg:4:27: error:")
    assert shown[1] == "     4 | h[t] : 4 = tanh(W @ x[t] +)"
    assert shown[2].index("^") == shown[1].index("+)") + 1


def test_a_whole_number_is_written_in_ascii_digits():
    """One test of the user's whole numbers (flags, class ids, a metrics step): '²' and
    '٣' are digits to str.isdigit, but int() refuses the one and reads the other as 3."""
    from seqgraph.errors import whole_number
    assert whole_number("0") and whole_number("0042") and whole_number("65")
    for text in ("", "\u00b2", "\u0663", "１２", "-1", "+1", "1.0", " 1", "1e3"):
        assert not whole_number(text), text
