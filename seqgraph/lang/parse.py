"""Text to AST. The Lark grammar ships as package data (grammar.lark); the Transformer
below only builds the dataclasses of ast.py with positions. Syntax errors become a
SpecError with the line, a caret, what was expected and a hint (syntax_errors.py).
"""
from __future__ import annotations

import math
import re
from functools import cache
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, VisitError
from lark.lark import PostLex

from ..errors import Pos, SpecError, too_deep
from ..graph.sizes import MAX_SIZE, TOO_LARGE_HINT
from . import ast as A
from .syntax_errors import UNFINISHED, syntax_error

MAX_SOURCE = 5_000_000     # characters; a larger spec is refused, not parsed
MAX_NESTING = 50           # brackets inside brackets; deeper would exhaust the recursion
MAX_LAYERS = 1000          # stack(N): each layer is expanded into equations



# the types of each role (LANGUAGE.md section 3): token ids or vectors in, classes,
# vectors or 0-1 values to be predicted
_KINDS = {"input": {"onehot": "onehot(V)", "vec": "vec(D)"},
          "target": {"class": "class(K)", "vec": "vec(D)", "binary": "binary(D)"}}
_KIND_HINT = {"input": "token ids: input x[t] : onehot(V); numbers: input x[t] : vec(D)",
              "target": "a class id: target y[t] : class(K) (a loss or an equation reads "
                        "it as its one-hot vector)"}

class _BracketNewlines(PostLex):
    """Drop newlines inside ( ) and [ ]: a statement continues on the next line there.
    Inside { } (a cell, the train block) newlines end statements, so a statement
    continues only after a token no statement ends with: an operator, `=`, `,`, `:`."""
    always_accept = ("_NL",)   # so the contextual lexer always sees newlines

    def process(self, stream):
        depth = braces = 0
        self.prev = self.last = None      # for error messages: "... after '='"
        self.continued = None             # `+` whose newline was dropped, in this statement
        self.resumed = None               # the token after that newline
        for tok in stream:
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(depth - 1, 0)
            elif tok.type == "LBRACE":
                braces += 1
            elif tok.type == "RBRACE":
                braces = max(braces - 1, 0)
            elif tok.type == "_NL" and depth:
                continue
            elif tok.type == "_NL" and braces and self.last is not None \
                    and self.last.type in UNFINISHED:
                self.continued, self.resumed = self.last, None
                continue
            elif tok.type == "_NL":
                self.continued = None
            if self.continued is not None and self.resumed is None:
                self.resumed = tok
            self.prev, self.last = self.last, tok
            yield tok

    def before(self, tok):
        """The token yielded before `tok` (None when unknown): `tok` is the last one
        yielded, or one the lexer refused after it."""
        if tok is self.last:
            return self.prev
        if self.last is not None and (tok.start_pos or 0) > (self.last.start_pos or 0):
            return self.last
        return None


@cache
def _parser(start: str = "start") -> Lark:
    text = resources.files("seqgraph.lang").joinpath("grammar.lark").read_text()
    return Lark(text, parser="lalr", start=start, propagate_positions=True,
                postlex=_BracketNewlines(), maybe_placeholders=True)


def _pos(x) -> Pos:
    if isinstance(x, Token):
        return Pos(x.line, x.column)
    meta = getattr(x, "meta", x)
    return Pos(getattr(meta, "line", 0), getattr(meta, "column", 0))


def _name(tok: Token) -> str:
    if str(tok) in A.KEYWORDS:
        raise SpecError(f"'{tok}' is a keyword and cannot be a name", _pos(tok),
                        hint="choose another name")
    return str(tok)


def _float(tok: Token) -> float:
    """A number token as a float; one beyond the float range (1e400) is an error."""
    v = float(tok)
    if not math.isfinite(v):
        shown = str(tok) if len(tok) <= 24 else f"{str(tok)[:20]}... ({len(tok)} digits)"
        raise SpecError(f"the number {shown} is too large", _pos(tok),
                        hint="numbers must fit a 64-bit float (at most about 1.8e308)")
    return v


def _int(tok: Token, what: str) -> int:
    v = _float(tok)
    if v != int(v) or v < 0:
        raise SpecError(f"{what} must be a whole number, not {tok}", _pos(tok),
                        hint=f"write a whole number such as {max(round(abs(v)), 1)}")
    return int(v)


def _size(x):
    if x.type != "NUMBER":
        return _name(x)
    if _int(x, "a size") < 1:
        raise SpecError(f"a size must be at least 1, not {x}", _pos(x),
                        hint="a size counts units: give a positive whole number, e.g. 16")
    return _not_huge(int(float(x)), x, "a size")


def _not_huge(value: int, tok: Token, what: str) -> int:
    """A dim or size up to MAX_SIZE units; a larger one is refused where it is written
    (check listed U [1e20, 1e20], and every other command ran out of memory)."""
    if value > MAX_SIZE:
        shown = str(tok) if len(tok) <= 24 else f"{str(tok)[:20]}... ({len(tok)} digits)"
        raise SpecError(f"{what} of {shown} units is too large (at most {MAX_SIZE})",
                        _pos(tok), hint=TOO_LARGE_HINT)
    return value


@v_args(meta=True)
class _Build(Transformer):
    """Parse tree -> ast.py dataclasses (positions from Lark's meta)."""

    def start(self, meta, items):
        return tuple(i for i in items if i is not None)

    def model_stmt(self, meta, c):
        return A.ModelDecl(_name(c[0]), _pos(meta))

    def dim_stmt(self, meta, c):
        value = _int(c[1], "a dim")
        if value < 1:
            raise SpecError(f"a dim must be at least 1, not {c[1]}", _pos(c[1]),
                            hint=f"give a positive whole number, e.g. dim {c[0]} = 16")
        return A.DimDecl(_name(c[0]), _not_huge(value, c[1], "a dim"), _pos(meta))

    def _data(self, role, meta, c):
        name, index, (kind, size) = c
        kinds = _KINDS[role]
        if str(kind) not in kinds:       # class(K) is a target's, onehot(V) an input's
            other = "target" if role == "input" else "input"
            raise SpecError(f"{kind}(...) is the type of {other}s; an {role} is "
                            f"{' or '.join(kinds.values())}"
                            if role == "input" else
                            f"{kind}(...) is the type of {other}s; a {role} is "
                            f"{', '.join(kinds.values())}", _pos(kind), hint=_KIND_HINT[role])
        return A.DataDecl(role, _name(name), index or (), str(kind), size, _pos(meta))

    def input_stmt(self, meta, c):
        return self._data("input", meta, c)

    def target_stmt(self, meta, c):
        return self._data("target", meta, c)

    def decl_index(self, meta, c):
        return tuple(_name(n) for n in c)

    def type_spec(self, meta, c):
        kind, size = c
        if str(kind) not in ("onehot", "vec", "class", "binary"):
            raise SpecError(f"unknown type '{kind}'", _pos(kind),
                            hint="types are onehot(V), vec(D), class(K), binary(D)")
        return kind, _size(size)

    def param_stmt(self, meta, c):
        return tuple(c)

    def param_item(self, meta, c):
        name, shape, init = c
        return A.ParamDecl(_name(name), shape, init, _pos(meta))

    def shape(self, meta, c):
        return tuple(_size(s) for s in c)

    def init_spec(self, meta, c):
        name, arg = c
        return (str(name),) if arg is None else (str(name), arg)

    def signed(self, meta, c):
        return _float(c[0])

    def negative(self, meta, c):
        return -_float(c[0])

    def tree_stmt(self, meta, c):
        return A.TreeDecl(_name(c[0]), _pos(meta))

    def init_stmt(self, meta, c):
        return A.InitDecl(_name(c[0]), c[1], _pos(meta))

    def loss_stmt(self, meta, c):
        weight, fn, a, b = c
        return A.LossDecl(str(fn), (a, b), 1.0 if weight is None else _float(weight),
                          _pos(fn) if weight is None else _pos(meta))

    def return_stmt(self, meta, c):
        return A.Return(_name(c[0]), _pos(c[0]))

    def cell_def(self, meta, c):
        name, *rest = c
        params = []
        while rest and (isinstance(rest[0], Token) or rest[0] is None):
            tok = rest.pop(0)
            if tok is not None:
                params.append(_name(tok))
        return A.CellDef(_name(name), tuple(params), _flatten(rest), _pos(meta))

    def equation(self, meta, c):
        name, index, size, rhs, cond = c
        return A.Equation(_name(name), index or (),
                          None if size is None else _size(size), rhs, cond, _pos(name))

    def cell_use(self, meta, c):
        (mod, layers), cell, *args = c
        return A.CellUse(mod, _name(cell), tuple(a for a in args if a is not None), layers,
                         _pos(meta))

    def reverse(self, meta, c):
        return ("reverse", 1)

    def bi(self, meta, c):
        return ("bi", 1)

    def stack(self, meta, c):
        n = _int(c[0], "a number of layers")
        if n < 1:
            raise SpecError("stack needs at least one layer", _pos(c[0]),
                            hint="write stack(2) or more; one layer is the cell alone")
        if n > MAX_LAYERS:
            raise SpecError(f"stack({c[0]}) has more than {MAX_LAYERS} layers", _pos(c[0]),
                            hint=f"use at most stack({MAX_LAYERS})")
        return ("stack", n)

    def leaf(self, meta, c):
        return "leaf"

    def otherwise(self, meta, c):
        return "otherwise"

    # expressions ------------------------------------------------------------------
    def add(self, meta, c):
        return A.BinOp("+", c[0], c[1], _pos(meta))

    def sub(self, meta, c):
        return A.BinOp("-", c[0], c[1], _pos(meta))

    def mul(self, meta, c):
        return A.BinOp("*", c[0], c[1], _pos(meta))

    def div(self, meta, c):
        return A.BinOp("/", c[0], c[1], _pos(meta))

    def matmul(self, meta, c):
        return A.BinOp("@", c[0], c[1], _pos(meta))

    def neg(self, meta, c):
        return A.Neg(c[0], _pos(meta))

    def number(self, meta, c):
        return A.Number(_float(c[0]), _pos(c[0]))

    def reduce(self, meta, c):
        fn, index, arg = c
        return A.Reduce(str(fn), _name(index), arg, _pos(fn))

    def concat(self, meta, c):
        return A.Concat(tuple(c), _pos(meta))

    def ref(self, meta, c):
        name, *index = c
        return A.Name(_name(name), tuple(index) if index else None, _pos(name))

    def call(self, meta, c):
        name, *args = c
        return A.FnCall(str(name), tuple(a for a in args if a is not None), _pos(name))

    def idx_same(self, meta, c):
        return A.Index("rel", _name(c[0]), 0, pos=_pos(meta))

    def idx_minus(self, meta, c):
        return A.Index("rel", _name(c[0]), -_int(c[1], "a shift"), pos=_pos(meta))

    def idx_plus(self, meta, c):
        return A.Index("rel", _name(c[0]), _int(c[1], "a shift"), pos=_pos(meta))

    def idx_child(self, meta, c):
        return A.Index("child", _name(c[0]), 0, str(c[1]), pos=_pos(meta))

    def idx_first(self, meta, c):
        if float(c[0]) != 1:
            raise SpecError(f"index {c[0]} is not allowed: the only absolute indexes "
                            "are 1 (the first step) and end", _pos(c[0]),
                            hint="use a shift such as t-1, or h[1], or h[end]")
        return A.Index("first", pos=_pos(meta))

    def idx_end(self, meta, c):
        return A.Index("end", pos=_pos(meta))

    # train block ------------------------------------------------------------------
    def train_block(self, meta, c):
        return A.TrainBlock(tuple(e for e in c if e is not None), _pos(meta))

    def train_entry(self, meta, c):
        value, at = c[1]
        return A.TrainEntry(str(c[0]), value, _pos(c[0]), at)

    def placed(self, meta, c):
        return c[0], _pos(meta)

    def v_number(self, meta, c):
        v = _float(c[0])
        return int(v) if v == int(v) and "." not in c[0] and "e" not in c[0].lower() else v

    def v_negative(self, meta, c):
        return -self.v_number(meta, c)

    def v_string(self, meta, c):
        return str(c[0])[1:-1]

    def v_name(self, meta, c):
        return {"true": True, "false": False}.get(str(c[0]), str(c[0]))

    def v_call(self, meta, c):
        name, *args = c
        placed = [a for a in args if a is not None and not isinstance(a, _Kw)]
        kw = [a for a in args if isinstance(a, _Kw)]
        seen = set()
        for a in kw:
            if a.key in seen:
                raise SpecError(f"'{a.key}' is given twice in {name}(...)", a.pos,
                                hint="keep one of them")
            seen.add(a.key)
        return A.Call(str(name), tuple(v for v, _ in placed), {a.key: a.value for a in kw},
                      _pos(name), tuple(at for _, at in placed), {a.key: a.pos for a in kw})

    def kwarg(self, meta, c):
        *name, value = c
        return _Kw(".".join(map(str, name)), value, _pos(meta))

    def v_list(self, meta, c):
        return [x for x in c if x is not None]


class _Kw:
    def __init__(self, key, value, pos):
        self.key, self.value, self.pos = key, value, pos


def _flatten(items):
    out = []
    for i in items:
        if i is None:
            continue
        out.extend(i if isinstance(i, tuple) else (i,))
    return tuple(out)


# --------------------------------------------------------------------------- brackets
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}


def _at_line(line: int, col: int) -> str:
    return f"line {line}, column {col}"


def _check_brackets(text: str, at=_at_line):
    """Unbalanced ( [ { outside comments and strings, found before Lark parses: a bracket
    left open swallows the rest of the file, so report where it was opened. A stray or
    mismatched closer and an unterminated string are reported where they are. `at`
    words a position (a spec's line and column; a --set value's column)."""
    stack = []                                  # (bracket, line, column)
    for ch, line, col in _bracket_chars(text, at):
        if ch in _OPEN:
            stack.append((ch, line, col))
            if len(stack) > MAX_NESTING:
                raise SpecError(f"brackets nest more than {MAX_NESTING} deep", Pos(line, col),
                                hint="define parts of the expression as variables")
        elif stack and _OPEN[stack[-1][0]] == ch:
            stack.pop()
        else:
            _bad_closer(ch, line, col, stack, at)
    if stack:
        o, ol, oc = stack[-1]
        raise SpecError(f"'{o}' opened at {at(ol, oc)} is never closed",
                        Pos(ol, oc), hint=f"add the matching '{_OPEN[o]}'")


def _bad_closer(ch, line, col, stack, at):
    if not stack:
        raise SpecError(f"'{ch}' has no matching '{_CLOSE[ch]}'", Pos(line, col),
                        hint="remove it, or open it earlier")
    o, ol, oc = stack[-1]
    raise SpecError(f"'{ch}' does not match '{o}' opened at {at(ol, oc)}",
                    Pos(line, col), hint=f"close '{o}' with '{_OPEN[o]}' first")


def _bracket_chars(text: str, at=_at_line):
    """(bracket, line, column) of every bracket outside comments and strings."""
    for n, line in enumerate(text.split("\n"), 1):
        quoted = 0
        for c, ch in enumerate(line, 1):
            if ch == '"':
                quoted = 0 if quoted else c
            elif ch == "#" and not quoted:
                break
            elif not quoted and (ch in _OPEN or ch in _CLOSE):
                yield ch, n, c
        if quoted:
            raise SpecError(f"the string opened at {at(n, quoted)} is never closed",
                            Pos(n, quoted), hint='a string ends with " on the same line')


_LONE_CR = re.compile(r"\r(?!\n)")


def parse(text: str, path: str = "<spec>") -> A.Spec:
    """Parse a whole .sg text. Raises SpecError (located in `path`) on any bad input."""
    # a lone CR ends a line too (old Mac files: read as one line, a comment would swallow
    # the rest of the spec); one character for one, so positions stay
    text = _LONE_CR.sub("\n", text)
    try:
        return A.Spec(_parse_stmts(text), path, text)
    except SpecError as e:
        raise e.located(path, text) from None


def _parse_stmts(text: str) -> tuple:
    if len(text) > MAX_SOURCE:
        raise SpecError(f"the spec is {len(text)} characters long; the limit is "
                        f"{MAX_SOURCE}", Pos(1, 1))
    _check_brackets(text)
    try:
        tree = _parser().parse(text + "\n")
        return _Build().transform(tree)
    except UnexpectedInput as e:
        raise syntax_error(e, text, _parser().options.postlex) from None
    except VisitError as e:
        if isinstance(e.orig_exc, SpecError):
            raise e.orig_exc from None
        if isinstance(e.orig_exc, RecursionError):
            raise too_deep(text) from None
        raise
    except RecursionError:
        raise too_deep(text) from None


def parse_value(text: str):
    """A train-block value from the command line (`--set optimizer=adam(lr=0.01)`),
    parsed alone: a SpecError's position is a column of `text` (line 1)."""
    if len(text) > MAX_SOURCE:
        raise SpecError(f"the value is {len(text)} characters long; the limit is "
                        f"{MAX_SOURCE}", Pos(1, 1))
    _check_brackets(text, lambda line, col: f"column {col} of the value")
    parser = _parser("placed")
    try:
        value, _ = _Build().transform(parser.parse(text))
        return value
    except UnexpectedInput as e:
        raise syntax_error(e, text, parser.options.postlex, value=True) from None
    except VisitError as e:
        if isinstance(e.orig_exc, SpecError):
            raise e.orig_exc from None
        raise
