"""Syntax errors in words: what Lark reports (an unexpected token, character or end of
file) becomes a SpecError that says where, what was expected (`an expression`, `')'`),
and a hint: what to do about it, from the first of a list of small rules that applies
(a misspelt keyword, an operator without an operand, a loss with one argument, the
shape of the statement the error is in, ...)."""
from __future__ import annotations

import re

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..errors import Pos, SpecError, did_you_mean
from ..ops import LOSS_NAMES
from . import ast as A

_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "the end of the line",
    "$END": "the end of the file", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['",
    "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'", "EQUAL": "'='", "COLON": "':'",
    "COMMA": "','", "SEMICOLON": "';'", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "AT": "'@'", "DOT": "'.'",
}
_EXPR_START = {"NAME", "NUMBER", "LPAR", "LSQB", "MINUS"}
_OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "AT"}
_STATEMENTS = {"MODEL", "DIM", "INPUT", "TARGET", "PARAM", "TREE", "INIT", "LOSS", "TRAIN",
               "CELL", "RETURN"}
_MODIFIERS = {"BI", "REVERSE", "STACK"}
# (terminals, their word, a terminal the group needs, terminals the word also covers)
_GROUPS = ((_EXPR_START, "an expression", "NAME", _MODIFIERS),   # `bi rnn(x, H)` too
           (_OPERATORS, "an operator", "PLUS", set()),
           (_STATEMENTS, "a statement", "DIM", set()))


def _expected_words(expected: set) -> str:
    exp = set(expected)
    words = []
    for group, word, must, covered in _GROUPS:
        if must in exp and len(group & exp) >= 3:
            words.append(word)
            exp -= group | covered
    for t in sorted(exp, key=lambda t: (t not in _WORDS, t)):
        w = _WORDS.get(t)
        if w is None:
            w = f"'{t.lower()}'" if t.isalpha() else "another symbol"
        if w not in words:
            words.append(w)
    if len(words) > 5:
        words = words[:4] + ["something else"]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _describe(tok: Token) -> str:
    if tok.type == "_NL":
        return "the end of the line"
    if tok.type == "$END":
        return "the end of the file"
    return f"'{tok}'"


# Tokens no statement ends with: inside { } a newline after one continues the statement.
UNFINISHED = frozenset(("PLUS", "MINUS", "STAR", "SLASH", "AT", "EQUAL", "COMMA", "COLON"))


def syntax_error(e: UnexpectedInput, text: str, lexed, value: bool = False) -> SpecError:
    """Lark's error as a SpecError: where, what was expected in words, and a hint.
    `lexed` is the postlexer: `lexed.before(tok)` is the token before `tok` when Lark's
    history lacks it, `lexed.continued` a token whose newline it dropped; `value`: the
    text is one train value (`--set`), not a spec: no hint about statements or lines."""
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else "?"
        return SpecError(f"unexpected character {ch!r}", Pos(e.line, e.column),
                         hint=_char_hint(ch))
    if isinstance(e, UnexpectedEOF):
        return SpecError("unexpected end of the file; expected " +
                         _expected_words(e.expected), Pos(*_end_pos(text)),
                         hint="is a bracket or a block left open?")
    assert isinstance(e, UnexpectedToken)
    tok, before = e.token, lexed.before
    expected = _acceptable(e)
    prev = e.token_history[-1] if getattr(e, "token_history", None) else \
        before(tok)
    cont, resumed = getattr(lexed, "continued", None), getattr(lexed, "resumed", None)
    if cont is not None and tok.type != "RBRACE" and (
            tok is resumed or resumed is None or str(resumed) in _STATEMENT_WORDS
            or cont.type == "COMMA" and prev is resumed and "_NL" in expected):
        # (`param W, U,` then `h[t] : ...`: the list ended, the next line is a statement)
        return _not_continued(cont)      # the next line starts another statement
    keyword = _keyword_as_name(tok, prev, expected) or _modifiers_combined(prev, tok, text) or \
        _modifier_inside(prev)
    if keyword is not None:
        return keyword
    ends = tok.type in ("_NL", "$END")
    if tok.type == "RBRACE" and (prev is None or prev.type == "_NL"):
        last = before(tok)              # `batch =`, its newline dropped, then `}`
        if last is not None and last.type in UNFINISHED:
            prev, ends = last, True
    line, col = (tok.line, tok.column) if tok.line is not None else _end_pos(text)
    if ends and prev is not None and prev.end_line is not None:
        line, col = prev.end_line, prev.end_column
    after = f" after '{prev}'" if prev is not None and prev.type != "_NL" else ""
    msg = f"expected {_expected_words(expected)}{after}"
    if not ends:
        msg = f"unexpected {_describe(tok)}; " + msg
    return SpecError(msg, Pos(line, col),
                     hint=_hint(tok, prev, expected, _statement(e, value), text, value))


def _not_continued(tok) -> SpecError:
    """Inside { } a line ending in `tok` (`+`, `=`, `,`) went on to the next line, which
    did not complete it: said at `tok`, as a line that ends there."""
    what = {"EQUAL": "a value", "COMMA": "the next item", "COLON": "a size"}.get(
        tok.type, "an expression")
    return SpecError(f"expected {what} after '{tok}'", Pos(tok.end_line, tok.end_column),
                     hint=f"inside {{ }} a line ending with '{tok}' continues on the next "
                          f"line, and the next line does not complete it: finish this "
                          f"line, or remove the '{tok}'")


# ---------------------------------------------------------------------------- hints
# What a statement looks like, by its first token: the hint when nothing more precise
# applies. The keywords are the grammar's statement keywords (_stmt in grammar.lark).
_FORMS = {
    "MODEL": "a model statement is `model NAME`",
    "DIM": "a dim statement is `dim NAME = N`, e.g. dim H = 16",
    "INPUT": "an input is `input NAME[t] : TYPE(SIZE)`, e.g. input x[t] : onehot(V); "
             "types are onehot, vec, class, binary",
    "TARGET": "a target is `target NAME[t] : TYPE(SIZE)`, e.g. target y[t] : class(V); "
              "types are onehot, vec, class, binary",
    "PARAM": "a param statement lists names: `param W, U, b`, each optionally with a shape "
             "and an initialiser, `W : [H, H] init normal(0.1)`",
    "TREE": "a tree statement is `tree NAME`",
    "INIT": "an init statement is `init NAME = EXPRESSION`",
    "LOSS": "a loss is `loss FN(OUTPUT, TARGET)` with FN one of {losses}, "
            "e.g. loss xent({example})",
    "CELL": "a cell is `cell NAME(ARG, ...) {{` with its statements on the lines below, "
            "ending with `return NAME` and `}}`",
    "RETURN": "a return statement is `return NAME`",
    "TRAIN": "a train block holds one `NAME = VALUE` a line, e.g. epochs = 10, between "
             "`train {{` and `}}`",
    "NAME": "an equation is `NAME[t] = EXPRESSION`, optionally with a size, "
            "`h[t] : H = ...`",
}
_STATEMENT_WORDS = {t.lower() for t in _FORMS if t != "NAME"}
_BOUNDARY = re.compile(r"__(start|cell_def|train_block)_star")


class _Stmt(list):
    """The tokens and subtrees of the statement an error is in, from its first token;
    `block` is the block around it: 'TRAIN', 'CELL' or None (the top level)."""
    block = None


def _statement(e: UnexpectedToken, value: bool = False) -> _Stmt:
    """The statement the error is in (a lone train value, with `value`)."""
    stmt = _Stmt()
    try:
        stack = list(e.interactive_parser.parser_state.value_stack)
    except Exception:   # noqa: BLE001  (an older Lark)
        stack = []
    start = 0
    for i in range(len(stack) - 1, -1, -1):
        v = stack[i]
        if isinstance(v, Token) and v.type in ("_NL", "LBRACE") or \
                not isinstance(v, Token) and _BOUNDARY.match(str(getattr(v, "data", ""))):
            start = i + 1
            break
    stmt.extend(stack[start:])
    opened = [v.type for v in stack[:start] if isinstance(v, Token)]
    stmt.block = "TRAIN" if value else next((t for t in ("TRAIN", "CELL") if t in opened),
                                            None)
    return stmt


def _hint(tok: Token, prev, expected: set, stmt: list, text: str, value=False) -> str:
    """What to do about a syntax error: the first rule that has something to say (for a
    lone value, only the rules about values and expressions)."""
    for rule, for_values in _RULES:
        if value and not for_values:
            continue
        hint = rule(tok, prev, expected, stmt, text)
        if hint:
            return hint
    return ""


def _hint_slash_comment(tok, prev, expected, stmt, text):
    """`// a comment`, as C and Java write it."""
    at = getattr(tok, "start_pos", None)
    if str(tok) == "/" and at is not None and "//" in text[max(at - 1, 0):at + 2]:
        return "comments start with #, not //"
    return ""


def _hint_grandchild(tok, prev, expected, stmt, text):
    """`h[n.left.right]`: a node reads its own children only (a grandchild is not a
    cell's inner variable, which the next rule would say)."""
    at = getattr(prev, "start_pos", None)
    if tok.type != "DOT" or prev is None or str(prev) not in ("left", "right") or \
            at is None or not re.search(r"\[\s*\w+\s*\.\s*$", text[:at]):
        return ""
    after = re.match(r"\.\s*(left|right)\b", text[getattr(tok, "start_pos", 0) or 0:])
    kid = after.group(1) if after else "left"
    return (f"a node reads its own children only, n.left and n.right; for a grandchild, "
            f"define a variable that reads a child, g[n] = h[n.{kid}] otherwise (and "
            f"an 'if leaf' case, e.g. h[n]), and read g[n.{prev}]")


def _hint_inner_name(tok, prev, expected, stmt, text):
    """`h.fwd[end]`: a cell's inner variables have dotted names in checkpoints and
    messages, but an equation reads only the cell's own output."""
    if tok.type != "DOT" or prev is None or prev.type != "NAME" or \
            getattr(stmt, "block", None) == "TRAIN":
        return ""
    after = re.match(r"\.(\w+)", text[getattr(tok, "start_pos", 0) or 0:])
    name = f"{prev}.{after.group(1)}" if after else f"{prev}.NAME"
    return (f"'{name}' names a cell's inner variable (bi's fwd and bwd, an lstm's c) "
            f"in checkpoints and messages; an equation reads only the cell's output "
            f"'{prev}'. For each direction alone write two cells: f = rnn(x, 16) and "
            f"g = reverse rnn(x, 16)")


def _hint_keyword(tok, prev, expected, stmt, text):
    if str(tok) in A.KEYWORDS and "NAME" in expected:
        return f"'{tok}' is a keyword and cannot be a name"
    return ""


def _hint_open_bracket(tok, prev, expected, stmt, text):
    if tok.type in ("_NL", "$END") and expected & {"RPAR", "RSQB", "RBRACE"}:
        return "a bracket is left open"
    return ""


def _hint_unquoted_path(tok, prev, expected, stmt, text):
    """`data = chars(t.txt)`: a file name without quotes reads as a dotted keyword."""
    if getattr(stmt, "block", None) == "TRAIN" and expected <= {"DOT", "EQUAL"} and \
            any(isinstance(v, Token) and v.type == "DOT" for v in stmt):
        return 'a file name is a string: write it in quotes, e.g. chars("data.txt")'
    return ""


def _hint_operand(tok, prev, expected, stmt, text):
    """`o[t] = W @ x[t] + b +`: an operator with nothing on its right."""
    if prev is None or prev.type not in _OPERATORS or not expected & _EXPR_START:
        return ""
    if tok.type in ("_NL", "$END", "RPAR", "RSQB", "COMMA", "SEMICOLON"):
        more = "; to go on on the next line, put the expression in ( ) (a statement " \
            "continues inside brackets)" if tok.type == "_NL" else ""
        return f"an operator needs an operand on its right; remove the trailing " \
               f"'{prev}' or complete the expression{more}"
    return f"an operator needs an operand on its right: a name, a number or a " \
           f"bracketed expression after '{prev}'"


def _hint_keyword_typo(tok, prev, expected, stmt, text):
    """`parm W, b`: a statement keyword misspelt, so the word reads as a variable whose
    equation is missing its '='. Not for a word the spec defines as a variable."""
    if len(stmt) != 1 or stmt[0] is not prev or prev.type != "NAME" or \
            expected != {"EQUAL", "COLON", "LSQB"} or str(prev) in A.KEYWORDS:
        return ""
    if tok.type in ("_NL", "$END"):      # a word alone on its line: `tanh`
        return f"a statement starts with a keyword or defines a variable: " \
               f"{prev}[t] = EXPRESSION"
    if re.search(rf"^[ \t]*{re.escape(str(prev))}[ \t]*[\[:=]", text, re.MULTILINE):
        return ""                        # `parm[t] = ...` elsewhere: a variable, not a typo
    return did_you_mean(prev, _STATEMENT_WORDS) or \
        f"a statement starts with a keyword ({', '.join(sorted(_STATEMENT_WORDS))}) or " \
        f"defines a variable: {prev}[t] = EXPRESSION"


def _hint_loss_arguments(tok, prev, expected, stmt, text):
    """`loss xent(o[t])`: a loss with one argument, or three."""
    if not stmt or not isinstance(stmt[0], Token) or stmt[0].type != "LOSS":
        return ""
    names = [v for v in stmt if isinstance(v, Token) and v.type == "NAME"]
    lpar = next((v for v in stmt if isinstance(v, Token) and v.type == "LPAR"), None)
    if not names or lpar is None:
        return ""
    fn = str(names[0])
    if tok.type == "RPAR" and expected == {"COMMA"}:
        first = " ".join(text[lpar.end_pos:tok.start_pos].split()) or "o[t]"
        return f"{fn} takes two arguments: the output and the target, e.g. " \
               f"loss {fn}({first}, {_a_target(text)})"
    if tok.type == "COMMA" and expected == {"RPAR"}:
        return f"{fn} takes two arguments: the output and the target, e.g. " \
               f"loss {fn}(o[t], {_a_target(text)})"
    return ""


_TARGET = re.compile(r"^[ \t]*target[ \t]+([A-Za-z_]\w*)[ \t]*(\[[^\]\n]*\])?",
                     re.MULTILINE)


def _a_target(text: str) -> str:
    """The first target the spec declares, as a loss would read it (`y[t]`)."""
    m = _TARGET.search(text)
    if m is None:
        return "y[t]"
    return m.group(1) + "".join((m.group(2) or "").split())


def _hint_glued(tok, prev, expected, stmt, text):
    """A token written against the one before it, read as two: a number in
    another notation (`0x10`, `1_000`) or a name with a dash (`model my-model`)."""
    if prev is None or tok.line != prev.end_line or tok.column != prev.end_column \
            or "RSQB" in expected:        # `h[t-1t]`: an index, said by _hint_index
        return ""
    if prev.type == "NUMBER" and tok.type == "NAME":
        if expected & _OPERATORS and not re.fullmatch(r"[xX][0-9a-fA-F]+|_\w*", tok):
            return f"a product is written with *: {prev} * {tok}"      # `2b`, `2x`
        return f"a number is written in decimal digits, with . and e (16, 1000, " \
               f"0.5, 1e3): '{prev}{tok}' is not one"
    if prev.type == "NAME" and str(tok) == "-" and "_NL" in expected:
        return f"a name is letters, digits and _: write {prev}_... rather than {prev}-..."
    return ""


def _hint_one_statement_a_line(tok, prev, expected, stmt, text):
    if "_NL" in expected and (not expected & _OPERATORS or tok.type.lower() in
                              _STATEMENT_WORDS) and tok.type not in expected:
        start = getattr(tok, "start_pos", None)
        if tok.type in _OPERATORS and start is not None and \
                not text[text.rfind("\n", 0, start) + 1:start].strip():
            # a line that starts with `+ U @ h[t-1]`: the statement above, continued
            where = "put the expression in ( )" if stmt.block is None else \
                "end the line above with the operator, or put the expression in ( )"
            return f"a line cannot start with {_describe(tok)}: to go on with the " \
                   f"statement above, {where}"
        if str(tok) == ";":          # `dim H = 3; dim K = 4`: C's separator
            return "a statement ends at the end of its line: drop the ';' (it separates " \
                   "the parts of a concatenation, [a; b]) and start any next statement " \
                   "on a new line"
        return "one statement a line: start a new line before " + _describe(tok)
    return ""


def _hint_case(tok, prev, expected, stmt, text):
    """`if leef`, `otherwse`: a tree equation's case misspelt."""
    if tok.type != "NAME":
        return ""
    cases = "a tree equation's two cases end `if leaf` and `otherwise`"
    if "LEAF" in expected:
        return cases
    if "OTHERWISE" in expected and did_you_mean(str(tok), ["otherwise"]):
        return f"{did_you_mean(str(tok), ['otherwise'])} ({cases})"
    return ""


def _hint_missing_operator(tok, prev, expected, stmt, text):
    if tok.type == "NAME" and expected & _OPERATORS:
        return "is an operator missing, or a statement split across lines?"
    return ""


def _hint_shift_on_left(tok, prev, expected, stmt, text):
    read = any(isinstance(v, Token) and v.type in ("EQUAL", "LOSS") for v in stmt)
    if tok.type in ("MINUS", "PLUS", "DOT") and expected <= {"COMMA", "RSQB"} and read:
        # a reference, right of '=' or in a loss: `h[end-1]`, `h[1+t]`
        return "an index is the equation's own with a shift (t-1, t+2), 1 (the first " \
               "step) or end (the last); 1 and end take no shift"
    if tok.type in ("MINUS", "PLUS", "DOT") and expected <= {"COMMA", "RSQB"}:
        return "an equation defines its variable at every step, h[t]; shifts such as " \
               "t-1 belong on the right of '='"
    return ""


def _hint_index(tok, prev, expected, stmt, text):
    """`h[t-1t]`, `z[t/]`: something else inside an index."""
    if "RSQB" in expected and expected <= {"COMMA", "RSQB", "DOT", "MINUS", "PLUS"}:
        return "an index is a name with an optional shift (t, t-1, t+2), 1, end, or a " \
               "child of a tree node (n.left); several are separated by ','"
    return ""


def _hint_missing_value(tok, prev, expected, stmt, text):
    """Nothing (or a stray symbol) where an expression or a value must come."""
    if prev is None or not expected & _EXPR_START:
        return ""
    if prev.type == "EQUAL":
        return "write the value after '='"
    if prev.type == "COMMA":
        return "something is missing after ','; remove the ',' or add the next item"
    if prev.type in ("LPAR", "LSQB") and "LPAR" in expected:
        return f"write an expression inside '{prev}', or remove the brackets"
    return ""


def _hint_size_form(tok, prev, expected, stmt, text):
    """`q[t] : H+V = ...`: a size written after ':' is one name or number; sums are what
    seqgraph infers."""
    colon = any(isinstance(v, Token) and v.type == "COLON" for v in stmt)
    if not colon or tok.type not in _OPERATORS or "EQUAL" not in expected or \
            prev is None or prev.type not in ("NAME", "NUMBER"):
        return ""
    return "a size written after ':' is one dim name or a number; a size such as H+V " \
           "is inferred from the equation: leave it out (NAME[t] = ...), or declare a " \
           "dim for it"


def _hint_form(tok, prev, expected, stmt, text):
    """The shape of the statement the error is in."""
    head = stmt[0] if stmt and isinstance(stmt[0], Token) else None
    if getattr(stmt, "block", None) == "TRAIN" and (head is None or head.type == "NAME"):
        return _FORMS["TRAIN"].format()
    if head is None:
        return "a statement starts with a keyword (model, dim, input, target, param, " \
               "loss, train, ...) or defines a variable: NAME[t] = EXPRESSION"
    if head.type == "NAME" and any(isinstance(v, Token) and v.type == "EQUAL"
                                   for v in stmt[1:]) and expected & _EXPR_START:
        return "an expression combines names, numbers and calls with + - * / @"
    form = _FORMS.get(head.type)
    if form is None:
        return ""
    return form.format(losses=", ".join(LOSS_NAMES), example=f"o[t], {_a_target(text)}")


def _acceptable(e: UnexpectedToken) -> set:
    """What could come next, exactly: LALR states are shared between contexts, so Lark's
    `expected` also names closers and separators of other contexts."""
    try:
        return set(e.interactive_parser.accepts()) or set(e.expected)
    except Exception:   # noqa: BLE001  (an older Lark, or a parser state it cannot copy)
        return set(e.expected)


def _keyword_as_name(tok: Token, prev, expected: set):
    """`tree = ...`, `end[t] = ...`: a keyword where a name is wanted."""
    if prev is not None and str(prev) in A.KEYWORDS and prev.type != "NAME" and \
            tok.type in ("EQUAL", "LSQB", "COLON") and "NAME" in expected:
        return SpecError(f"'{prev}' is a keyword and cannot be a name",
                         Pos(prev.line, prev.column),
                         hint=f"choose another name (or is a name missing after '{prev}'?)")
    if str(tok) in A.KEYWORDS and tok.type != "NAME" and "NAME" in expected and \
            not (expected & {tok.type}):
        return SpecError(f"'{tok}' is a keyword and cannot be a name",
                         Pos(tok.line, tok.column), hint="choose another name")
    return None


_MODIFIER_BEFORE = re.compile(r"(?:^|[\s=])(bi|reverse|stack\s*\(\s*(\d+)\s*\))\s*$")
_STACK_AFTER = re.compile(r"(?:^|[\s=])(bi|reverse)\s+(stack\s*\(\s*(\d+)\s*\))\s*$")


def _modifiers_combined(prev, tok, text: str):
    """`d = stack(2) bi rnn(x, 4)`, `bi stack(3) rnn(...)`, `reverse bi`, `bi reverse`:
    a cell use takes one modifier; said so, with what to write instead."""
    if prev is None or prev.line is None:
        return None
    lines = text.split("\n")             # the parser's lines: a form feed ends none
    line = lines[prev.line - 1] if prev.line <= len(lines) else ""
    if prev.type == "NAME" and str(prev) in ("bi", "reverse", "stack"):
        m = _MODIFIER_BEFORE.search(line[:prev.column - 1])
        if m is None:
            return None
        first, second, layers = m.group(1).split("(")[0].strip(), str(prev), m.group(2)
        where, rest = Pos(prev.line, prev.column), line[prev.end_column - 1:]
    elif tok.type == "NAME" and tok.line == prev.line and tok.column is not None:
        m = _STACK_AFTER.search(line[:tok.column - 1])         # `bi stack(3) rnn`
        if m is None:
            return None
        first, second, layers = m.group(1), "stack", m.group(3)
        where, rest = Pos(prev.line, m.start(2) + 1), line[tok.column - 1:]
    else:
        return None
    var = (re.match(r"\s*([A-Za-z_]\w*)", line) or re.match("", "x")).group(0).strip() or "d"
    call = re.sub(r"^\s*stack\s*\(\s*\d+\s*\)", "", rest).split("#")[0].strip() \
        or "rnn(x, H)"
    return SpecError(f"the modifiers '{first}' and '{second}' cannot be combined: a cell "
                     f"use takes one modifier", where,
                     hint=_one_modifier_hint(first, second, layers, var, call))


def _one_modifier_hint(first, second, layers, var, call) -> str:
    """What to write instead of two modifiers: bi alone, one of two equal ones, or the
    stack's layers one a line, each with the other modifier."""
    if {first, second} == {"bi", "reverse"}:
        return f"bi already runs both ways, forward and reversed: write {var} = bi {call}"
    if first == second:
        return f"write '{first}' once"
    one = second if first == "stack" else first
    layers = layers if layers is not None else "N"
    below = re.sub(r"\(\s*[A-Za-z_]\w*", f"({var}1", call, count=1)
    return f"stack the {layers} '{one}' layers one a line: {var}1 = {one} {call}, then " \
        f"{var} = {one} {below}" + (" (and so on)" if layers not in ("2",) else "")


def _modifier_inside(prev):
    """`tanh(bi rnn(x, H))`: a cell use with a modifier inside an expression."""
    if prev is not None and prev.type == "NAME" and str(prev) in ("bi", "reverse", "stack"):
        return SpecError(f"a '{prev}' cell use stands on its own line: "
                         f"`v = {prev} CELL(...)`, then use v[t]", Pos(prev.line, prev.column),
                         hint=f"define the cell's output on a line of its own, "
                              f"e.g. e = {prev} rnn(x, H), then read e[t]")
    return None


# characters of typeset text (the book's PDF, a word processor) and what they stand for
LOOKALIKES = {"\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": "*", "\u22c5": "*",
              "\u00b7": "*", "\u201c": '"', "\u201d": '"', "\u2018": '"', "\u2019": '"',
              "\uff08": "(", "\uff09": ")", "\uff3b": "[", "\uff3d": "]"}


def _char_hint(ch: str) -> str:
    if ch in LOOKALIKES:
        return (f"did you mean '{LOOKALIKES[ch]}'? ('{ch}' is U+{ord(ch):04X}, as typeset "
                f"text writes it; type the plain character)")
    if ch == '"':
        return "a string ends with \" on the same line"
    if ch in "\t\v\f\r " or not ch.isprintable():
        return f"remove the invisible character {ch!r}"
    if ch.isalpha():                      # θ, é: letters, but not the spec's
        return f"names are ASCII letters, digits and _ ('{ch}' is U+{ord(ch):04X}, not " \
            f"ASCII); comments start with #"
    return "names are letters, digits and _; comments start with #"


def _end_pos(text: str):
    lines = text.rstrip("\n").split("\n")
    return len(lines), len(lines[-1]) + 1


# the rules in the order they are tried, and whether each applies to a lone train value
_RULES = ((_hint_slash_comment, True), (_hint_grandchild, False),
          (_hint_inner_name, True), (_hint_keyword, True),
          (_hint_open_bracket, False), (_hint_unquoted_path, True),
          (_hint_operand, True), (_hint_keyword_typo, False), (_hint_loss_arguments, False),
          (_hint_glued, True), (_hint_one_statement_a_line, False), (_hint_case, False),
          (_hint_missing_operator, True),
          (_hint_shift_on_left, False), (_hint_index, True), (_hint_missing_value, True),
          (_hint_size_form, False), (_hint_form, False))
