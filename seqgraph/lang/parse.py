"""Text to AST. The Lark grammar ships as package data (grammar.lark); the Transformer
below only builds the dataclasses of ast.py with positions. Syntax errors become a
SpecError with the line, a caret and what was expected, in words.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, \
    UnexpectedToken, VisitError
from lark.lark import PostLex

from ..errors import Pos, SpecError
from . import ast as A

MAX_SOURCE = 5_000_000     # characters; a larger spec is refused, not parsed


class _BracketNewlines(PostLex):
    """Drop newlines inside ( ) and [ ]: a statement continues on the next line there."""
    always_accept = ()

    def process(self, stream):
        depth = 0
        for tok in stream:
            if tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(depth - 1, 0)
            elif tok.type == "_NL" and depth:
                continue
            yield tok


@lru_cache(maxsize=None)
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


def _int(tok: Token, what: str) -> int:
    v = float(tok)
    if v != int(v) or v < 0:
        raise SpecError(f"{what} must be a whole number, not {tok}", _pos(tok))
    return int(v)


def _size(x):
    return _int(x, "a size") if x.type == "NUMBER" else _name(x)


@v_args(meta=True)
class _Build(Transformer):
    """Parse tree -> ast.py dataclasses (positions from Lark's meta)."""

    def start(self, meta, items):
        return tuple(i for i in items if i is not None)

    def model_stmt(self, meta, c):
        return A.ModelDecl(_name(c[0]), _pos(meta))

    def dim_stmt(self, meta, c):
        return A.DimDecl(_name(c[0]), _int(c[1], "a dim"), _pos(meta))

    def _data(self, role, meta, c):
        name, index, (kind, size) = c
        return A.DataDecl(role, _name(name), index or (), kind, size, _pos(meta))

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
        return str(kind), _size(size)

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
        return float(c[0])

    def negative(self, meta, c):
        return -float(c[0])

    def tree_stmt(self, meta, c):
        return A.TreeDecl(_name(c[0]), _pos(meta))

    def init_stmt(self, meta, c):
        return A.InitDecl(_name(c[0]), c[1], _pos(meta))

    def loss_stmt(self, meta, c):
        weight, fn, a, b = c
        return A.LossDecl(str(fn), (a, b), 1.0 if weight is None else float(weight),
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
            raise SpecError("stack needs at least one layer", _pos(c[0]))
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
        return A.Number(float(c[0]), _pos(c[0]))

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
            raise SpecError(f"'{c[0]}' is not an index: use 1 (the first step), end, "
                            "or a shift like t-1", _pos(c[0]))
        return A.Index("first", pos=_pos(meta))

    def idx_end(self, meta, c):
        return A.Index("end", pos=_pos(meta))

    # train block ------------------------------------------------------------------
    def train_block(self, meta, c):
        return A.TrainBlock(tuple(e for e in c if e is not None), _pos(meta))

    def train_entry(self, meta, c):
        return A.TrainEntry(str(c[0]), c[1], _pos(c[0]))

    def v_number(self, meta, c):
        v = float(c[0])
        return int(v) if v == int(v) and "." not in c[0] and "e" not in c[0].lower() else v

    def v_negative(self, meta, c):
        return -self.v_number(meta, c)

    def v_string(self, meta, c):
        return str(c[0])[1:-1]

    def v_name(self, meta, c):
        return {"true": True, "false": False}.get(str(c[0]), str(c[0]))

    def v_call(self, meta, c):
        name, *args = c
        pos = [a for a in args if a is not None and not isinstance(a, _Kw)]
        kw = {a.key: a.value for a in args if isinstance(a, _Kw)}
        return A.Call(str(name), tuple(pos), kw)

    def kwarg(self, meta, c):
        return _Kw(str(c[0]), c[1])

    def v_list(self, meta, c):
        return [x for x in c if x is not None]


class _Kw:
    def __init__(self, key, value):
        self.key, self.value = key, value


def _flatten(items):
    out = []
    for i in items:
        if i is None:
            continue
        out.extend(i if isinstance(i, tuple) else (i,))
    return tuple(out)


# --------------------------------------------------------------------------- errors
_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "the end of the line",
    "$END": "the end of the file", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['",
    "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'", "EQUAL": "'='", "COLON": "':'",
    "COMMA": "','", "SEMICOLON": "';'", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "AT": "'@'", "DOT": "'.'",
}
_EXPR_START = {"NAME", "NUMBER", "LPAR", "LSQB", "MINUS"}


def _expected_words(expected: set) -> str:
    exp = set(expected)
    words = []
    if _EXPR_START <= exp or {"NAME", "NUMBER", "LPAR"} <= exp:
        words.append("an expression")
        exp -= _EXPR_START
    for t in sorted(exp):
        w = _WORDS.get(t)
        if w is None:
            w = f"'{t.lower()}'" if t.isalpha() else t
        words.append(w)
    if len(words) > 6:
        words = words[:6] + ["..."]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _describe(tok: Token) -> str:
    if tok.type == "_NL":
        return "the end of the line"
    if tok.type == "$END":
        return "the end of the file"
    return f"'{tok}'"


def _syntax_error(e: UnexpectedInput, text: str) -> SpecError:
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else "?"
        return SpecError(f"unexpected character {ch!r}", Pos(e.line, e.column),
                         hint="names are letters, digits and _; comments start with #")
    if isinstance(e, UnexpectedEOF):
        lines = text.rstrip("\n").splitlines() or [""]
        return SpecError("unexpected end of the file; expected " +
                         _expected_words(e.expected), Pos(len(lines), len(lines[-1]) + 1),
                         hint="is a bracket or a block left open?")
    assert isinstance(e, UnexpectedToken)
    tok, expected = e.token, set(e.expected)
    prev = e.token_history[-1] if getattr(e, "token_history", None) else None
    words = _expected_words(expected)
    line, col = (tok.line, tok.column) if tok.line is not None else _end_pos(text)
    if tok.type == "_NL" and prev is not None:
        line, col = prev.end_line, prev.end_column
    after = f" after '{prev}'" if prev is not None and prev.type != "_NL" else ""
    msg = f"expected {words}{after}"
    if tok.type not in ("_NL", "$END"):
        msg = f"unexpected {_describe(tok)}; " + msg
    hint = ""
    if str(tok) in A.KEYWORDS:
        hint = f"'{tok}' is a keyword and cannot be a name"
    elif tok.type == "_NL" and "RPAR" in expected or "RSQB" in expected:
        hint = "a bracket is left open"
    return SpecError(msg, Pos(line, col), hint=hint)


def _end_pos(text: str):
    lines = text.rstrip("\n").splitlines() or [""]
    return len(lines), len(lines[-1]) + 1


def parse(text: str, path: str = "<spec>") -> A.Spec:
    """Parse a whole .sg text. Raises SpecError (located in `path`) on any bad input."""
    try:
        return A.Spec(_parse_stmts(text), path, text)
    except SpecError as e:
        raise e.located(path, text) from None


def _parse_stmts(text: str) -> tuple:
    if len(text) > MAX_SOURCE:
        raise SpecError(f"the spec is {len(text)} characters long; the limit is "
                        f"{MAX_SOURCE}", Pos(1, 1))
    try:
        tree = _parser().parse(text + "\n")
        return _Build().transform(tree)
    except UnexpectedInput as e:
        raise _syntax_error(e, text) from None
    except VisitError as e:
        if isinstance(e.orig_exc, SpecError):
            raise e.orig_exc from None
        raise
    except RecursionError:
        raise SpecError("the spec nests too deeply", Pos(1, 1)) from None


def parse_value(text: str):
    """A train-block value from the command line (`--set optimizer=adam(lr=0.01)`)."""
    spec = parse(f"train {{\n  v = {text}\n}}\n", "<--set>")
    return spec.stmts[0].entries[0].value
