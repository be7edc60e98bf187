"""Fuzzing the front end (issue 9, item 1): any text gets a clear answer.

Every input, whether generated from the grammar (seqgraph/lang/grammar.lark) or made by
mutating a gallery spec (tokens deleted or inserted, lines swapped, random bytes, huge
numbers, deep nesting, a 10 MB file, bytes that are not UTF-8), must either check or fail
with `seqgraph.SpecError` carrying a position (line and column >= 1); an unreadable file
is a `UsageError`. Nothing else may escape, and no input may take longer than
`TIME_LIMIT` seconds (a SIGALRM timer turns a hang into a failure).

The generators below are plain functions of a `random.Random`, so the long campaign
(tests/fuzz_campaign.py, run by hand) uses the very same inputs as these tests, which
keep to a few hundred examples (about 20 s on one core).
"""
from __future__ import annotations

import random
import re
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqgraph
from seqgraph import SpecError, UsageError

ROOT = Path(__file__).resolve().parent.parent
GALLERY = {p.name: p.read_text() for p in sorted((ROOT / "specs").glob("*.sg"))}
TIME_LIMIT = 10.0          # seconds per input; a 5 MB spec checks in about 2 s


# ------------------------------------------------------------------ the oracle
class Hang(Exception):
    """An input took longer than TIME_LIMIT."""


@contextmanager
def time_limit(seconds: float):
    """Raise Hang in the main thread after `seconds` (no-op off the main thread)."""
    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")
    try:
        old = signal.signal(signal.SIGALRM, on_alarm)
    except ValueError:                       # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def outcome(data: str | bytes, tmp: Path | None = None, name: str = "fuzz.sg") -> str:
    """Check one input, as text (`read_spec(name, text)`) or as bytes written to a file
    and read back (`read_spec(path)`). Returns "ok" or "error"; raises AssertionError
    for anything the front end must never do."""
    try:
        with time_limit(TIME_LIMIT):
            if isinstance(data, bytes):
                assert tmp is not None
                path = tmp / name
                path.write_bytes(data)
                seqgraph.read_spec(str(path))
            else:
                seqgraph.read_spec(name, data)
        return "ok"
    except SpecError as e:
        assert e.line >= 1 and e.column >= 1, f"no position: {e.render()}"
        head = e.render().splitlines()[0]
        assert re.match(rf".*{re.escape(name)}:{e.line}:{e.column}: error: ", head), head
        return "error"
    except UsageError as e:                  # only for a file that cannot be read
        assert isinstance(data, bytes) and "cannot read" in str(e), str(e)
        return "error"


# ------------------------------------------------------------- grammar generator
NAMES = ["t", "u", "n", "h", "g", "x", "y", "o", "c", "W", "U", "b", "Wo", "bo", "V", "H",
         "K", "D", "tanh", "sigmoid", "relu", "softmax", "dropout", "xent", "mse", "bce",
         "onehot", "class", "vec", "binary", "rnn", "lstm", "gru", "enc", "dec", "zeros",
         "ones", "uniform", "normal", "xavier", "orthogonal", "data", "batch", "bptt",
         "epochs", "optimizer", "adam", "sgd", "chars", "words", "lr", "seed", "l", "r",
         "foo", "_", "end", "leaf", "tree"]
NUMBERS = ["0", "1", "2", "3", "16", "0.5", "1.", ".5", "1e3", "1e-3", "2.5e1", "1e400",
           "1e-400", "99999999999999999999", "4294967296", "1e308", "007", "0.0"]
STRINGS = ['"tiny.txt"', '""', '"a b"', '"pkg:bible/data/kjv.jsonl"', '"/dev/null"']


class Grammar:
    """Random sentences of the Lark grammar, one token at a time: each nonterminal picks
    an expansion at random, the shortest one once `depth` is reached."""

    def __init__(self):
        from lark.lexer import PatternStr

        from seqgraph.lang.parse import _parser
        p = _parser()
        self.rules: dict[str, list[list]] = {}
        for r in p.rules:
            self.rules.setdefault(r.origin.name, []).append(list(r.expansion))
        self.literal = {t.name: t.pattern.value for t in p.terminals
                        if isinstance(t.pattern, PatternStr)}
        # the fewest derivation steps each nonterminal needs to end (a fixed point)
        cost = {n: float("inf") for n in self.rules}
        for _ in range(len(cost)):
            for n, exps in self.rules.items():
                cost[n] = min(1 + max([cost[s.name] for s in e if not s.is_term] or [0])
                              for e in exps)
        self.cost = cost

    def terminal(self, name: str, rnd: random.Random) -> str:
        if name in self.literal:
            return self.literal[name]
        if name == "NAME":
            return rnd.choice(NAMES)
        if name == "NUMBER":
            return rnd.choice(NUMBERS)
        if name == "LAYER":                 # a stack's layer in a dotted name: h.1.Wi
            return rnd.choice(["1", "2"])
        if name == "STRING":
            return rnd.choice(STRINGS)
        if name == "_NL":
            return "\n"
        raise AssertionError(name)

    def sentence(self, rnd: random.Random, start: str = "start", depth: int = 12) -> str:
        out: list[str] = []
        budget = [400]                        # nonterminals expanded, at most

        def expand(sym, d):
            if sym.is_term:
                out.append(self.terminal(sym.name, rnd))
                return
            exps = self.rules[sym.name]
            budget[0] -= 1
            if d >= depth or budget[0] <= 0:
                best = min(max([self.cost[s.name] for s in e if not s.is_term] or [0])
                           for e in exps)
                exps = [e for e in exps
                        if max([self.cost[s.name] for s in e if not s.is_term] or [0]) == best]
            for s in rnd.choice(exps):
                expand(s, d + 1)

        from lark.grammar import NonTerminal
        expand(NonTerminal(start), 0)
        text = ""
        for tok in out:                      # spaces between tokens, none around newlines
            text += tok if (tok == "\n" or text.endswith("\n") or not text) else " " + tok
        return text

    def expression(self, rnd: random.Random, depth: int = 6) -> str:
        return self.sentence(rnd, "expr", depth)


GRAMMAR = Grammar()


# ---------------------------------------------------------------------- mutators
_TOKEN = re.compile(r'"[^"\n]*"|[A-Za-z_]\w*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\n|[ \t]+|.')
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")
EXTRA = ["(", ")", "[", "]", "{", "}", "#", '"', ",", ";", ":", "=", "@", "+", "-", "*",
         "/", ".", "end", "leaf", "if", "otherwise", "t-1", "t+1", "\x00", "é", "\t",
         "\r", "\ufeff", "\u2028", "model", "cell", "return", "train", "bi", "stack(2)",
         "reverse", "init", "tree", "loss", "param", "dim", "input", "target"]


def _tokens(text):
    return _TOKEN.findall(text)


def m_delete_tokens(rnd, text):
    toks = _tokens(text)
    for _ in range(rnd.randint(1, 3)):
        if toks:
            del toks[rnd.randrange(len(toks))]
    return "".join(toks)


def m_insert_tokens(rnd, text):
    toks = _tokens(text)
    pool = sorted(set(toks)) + EXTRA
    for _ in range(rnd.randint(1, 3)):
        toks.insert(rnd.randint(0, len(toks)), rnd.choice(pool))
    return "".join(toks)


def m_replace_token(rnd, text):
    toks = _tokens(text)
    if toks:
        toks[rnd.randrange(len(toks))] = rnd.choice(sorted(set(toks)) + EXTRA + NAMES)
    return "".join(toks)


def m_swap_lines(rnd, text):
    lines = text.split("\n")
    if len(lines) > 1:
        i, j = rnd.randrange(len(lines)), rnd.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def m_delete_or_duplicate_line(rnd, text):
    lines = text.split("\n")
    i = rnd.randrange(len(lines))
    if rnd.random() < 0.5:
        del lines[i]
    else:
        lines.insert(rnd.randrange(len(lines) + 1), lines[i])
    return "\n".join(lines)


def m_huge_number(rnd, text):
    nums = list(_NUMBER.finditer(text))
    big = rnd.choice(["1e400", "99999999999999999999", "1e308", "1e-400", "0", "0.5",
                      "4294967297", "9" * 400, "1" + "0" * 30, "2147483648"])
    if not nums:
        return text + f"\ndim Z = {big}\n"
    m = rnd.choice(nums)
    return text[:m.start()] + big + text[m.end():]


def m_random_bytes(rnd, text) -> bytes:
    raw = bytearray(text.encode("utf-8"))
    for _ in range(rnd.randint(1, 4)):
        raw.insert(rnd.randint(0, len(raw)), rnd.randrange(256))
    return bytes(raw)


def m_flip_bytes(rnd, text) -> bytes:
    raw = bytearray(text.encode("utf-8"))
    for _ in range(rnd.randint(1, 4)):
        if raw:
            raw[rnd.randrange(len(raw))] ^= 1 << rnd.randrange(8)
    return bytes(raw)


def m_random_chars(rnd, text):
    toks = _tokens(text)
    for _ in range(rnd.randint(1, 3)):
        ch = chr(rnd.choice([rnd.randrange(32), rnd.randrange(32, 127), rnd.randrange(127, 0x3000),
                             0xFEFF, 0x2028, 0x85, 0xD7FF, 0x10FFFF]))
        toks.insert(rnd.randint(0, len(toks)), ch)
    return "".join(toks)


def _nest(rnd, n):
    """An expression nested `n` deep in one of several ways: brackets, calls, or (with
    no brackets at all) chains of unary minus, `@`, `+` and `*`."""
    kind = rnd.choice(["paren", "call", "concat", "neg", "matmul", "sum", "product"])
    if kind == "paren":
        return "(" * n + "h[t]" + ")" * n
    if kind == "call":
        return "tanh(" * n + "h[t]" + ")" * n
    if kind == "concat":
        return "[" * n + "h[t]" + "]" * n
    if kind == "neg":
        return "- " * n + "h[t]"
    if kind == "matmul":
        return " @ ".join(["U"] * n) + " @ h[t-1]"
    if kind == "sum":
        return " + ".join(["h[t-1]"] * n)
    return " * ".join(["h[t-1]"] * n)


def m_deep_nesting(rnd, text):
    n = rnd.choice([10, 49, 50, 51, 200, 1000, 5000])
    lines = text.split("\n")
    eqs = [i for i, l in enumerate(lines) if "=" in l and "[t]" in l.split("=")[0]]
    expr = _nest(rnd, n)
    if eqs and rnd.random() < 0.8:
        i = rnd.choice(eqs)
        lhs = lines[i].split("=")[0]
        lines[i] = f"{lhs}= {expr}"
    else:
        lines.append(f"deep[t] : 4 = {expr}")
    return "\n".join(lines)


def m_deep_cells(rnd, text):
    """Cells that use cells: a chain (`c0` uses `c1` uses ...) or one that uses itself."""
    n = rnd.choice([3, 30, 200])
    if rnd.random() < 0.3:
        return text + "\ncell loop(x, H) {\n  h = loop(x, H)\n  return h\n}\nq = loop(x, 4)\n"
    cells = [f"cell c{i}(x, H) {{\n  h = c{i + 1}(x, H)\n  return h\n}}" for i in range(n)]
    cells.append(f"cell c{n}(x, H) {{\n  param A\n  h[t] : H = A @ x[t]\n  return h\n}}")
    return text + "\n" + "\n".join(cells) + "\nq = c0(x, 4)\n"


def m_grammar_expression(rnd, text):
    """Replace the right-hand side of an equation with an expression of the grammar."""
    lines = text.split("\n")
    eqs = [i for i, l in enumerate(lines) if re.match(r"\s*\w+(\[[^\]]*\])?\s*(:\s*\w+\s*)?=", l)]
    if not eqs:
        return text + "\n" + GRAMMAR.sentence(rnd, depth=8)
    i = rnd.choice(eqs)
    lhs = lines[i].split("=")[0]
    lines[i] = f"{lhs}= {GRAMMAR.expression(rnd)}"
    return "\n".join(lines)


def m_grammar_statement(rnd, text):
    """Insert a whole statement of the grammar at a random line."""
    lines = text.split("\n")
    stmt = GRAMMAR.sentence(rnd, "_stmt", depth=8)
    lines.insert(rnd.randint(0, len(lines)), stmt)
    return "\n".join(lines)


def m_crlf_or_tabs(rnd, text):
    return rnd.choice([text.replace("\n", "\r\n"), text.replace("  ", "\t"),
                       "\ufeff" + text, text.replace("\n", "\r"), text + "\x00"])


def m_splice(rnd, text):
    """Half of this spec and half of another gallery spec."""
    other = GALLERY[rnd.choice(sorted(GALLERY))].split("\n")
    lines = text.split("\n")
    return "\n".join(lines[:rnd.randint(0, len(lines))] + other[rnd.randint(0, len(other)):])


MUTATORS = [m_delete_tokens, m_insert_tokens, m_replace_token, m_swap_lines,
            m_delete_or_duplicate_line, m_huge_number, m_random_bytes, m_flip_bytes,
            m_random_chars, m_deep_nesting, m_deep_cells, m_grammar_expression,
            m_grammar_statement, m_crlf_or_tabs, m_splice]


def mutate(rnd: random.Random, text: str, rounds: int | None = None) -> str | bytes:
    """One to three mutations of `text`; bytes once a byte-level mutation has run."""
    data: str | bytes = text
    for _ in range(rounds or rnd.randint(1, 3)):
        if isinstance(data, bytes):
            break
        data = rnd.choice(MUTATORS)(rnd, data)
    return data


def generate(rnd: random.Random) -> tuple[str, str | bytes]:
    """(label, input): a grammar sentence, or a mutated gallery spec."""
    if rnd.random() < 0.25:
        return "grammar", GRAMMAR.sentence(rnd, depth=rnd.choice([6, 10, 16]))
    name = rnd.choice(sorted(GALLERY))
    return name, mutate(rnd, GALLERY[name])


# ------------------------------------------------------------------------- tests
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.randoms(use_true_random=False))
def test_grammar_sentences_check_or_fail_with_a_position(rnd):
    outcome(GRAMMAR.sentence(rnd, depth=rnd.choice([6, 10, 16])))


@pytest.mark.parametrize("name", sorted(GALLERY))
def test_gallery_specs_check(name):
    assert outcome(GALLERY[name], name=name) == "ok"


@settings(FUZZ, max_examples=300)
@given(st.randoms(use_true_random=False))
def test_mutated_gallery_specs_check_or_fail_with_a_position(tmp_path_factory, rnd):
    tmp = tmp_path_factory.getbasetemp()
    name = rnd.choice(sorted(GALLERY))
    outcome(mutate(rnd, GALLERY[name]), tmp)


@pytest.mark.parametrize("mutator", MUTATORS, ids=lambda m: m.__name__[2:])
def test_each_mutator_on_each_gallery_spec(tmp_path, mutator):
    """Every mutator, once per gallery spec, with fixed seeds: a crash reproduces."""
    for i, name in enumerate(sorted(GALLERY)):
        rnd = random.Random(i)
        outcome(mutator(rnd, GALLERY[name]), tmp_path)


# ------------------------------------------------------------- the named extremes
ELMAN = GALLERY["elman.sg"]


@pytest.mark.parametrize("number", ["1e400", "99999999999999999999", "1e-400", "0", "2.5",
                                    "1e308", "9" * 400, "-1"])
def test_huge_and_odd_numbers_as_dims(number):
    for text in (ELMAN.replace("dim H = 16", f"dim H = {number}"),
                 ELMAN.replace("h[t] : H", f"h[t] : {number}"),
                 ELMAN.replace("param W, U", f"param W : [{number}, {number}], U"),
                 ELMAN.replace("U @ h[t-1]", f"U @ h[t-{number}]"),
                 ELMAN.replace("+ b)", f"+ {number} * b)"),
                 ELMAN + f"\ntrain {{\n  batch = {number}\n}}\n"):
        outcome(text)


def test_a_huge_dim_is_refused_with_its_position():
    with pytest.raises(SpecError) as e:
        seqgraph.read_spec("big.sg", ELMAN.replace("dim H = 16", "dim H = 1e400"))
    assert (e.value.line, e.value.column) == (5, 9)


@pytest.mark.parametrize("n", [50, 51, 400, 5000])
@pytest.mark.parametrize("kind", ["paren", "call", "concat", "neg", "matmul", "sum",
                                  "product"])
def test_deep_nesting(kind, n):
    class Fixed(random.Random):
        def choice(self, seq):
            return kind if kind in seq else seq[0]
    outcome(ELMAN + f"\ndeep[t] : 4 = {_nest(Fixed(), n)}\n")


@pytest.mark.parametrize("n", [350, 450, 700])
@pytest.mark.parametrize("op", ["U @ ", "- "])
def test_a_chain_too_deep_for_a_later_pass_is_shown_at_its_line(n, op):
    """Chains the parser takes but the elaboration or the size check cannot recurse
    through were reported at 1:1, "the spec nests too deeply" (walk 10), as
    docs/reliability.md says they are not."""
    text = ELMAN.replace("param W, U, b, Wo, bo", "param W, U, b, Wo, bo, Q") + \
        "q[t] : 16 = " + op * n + "Q @ x[t]\n"
    with pytest.raises(SpecError) as e:
        seqgraph.read_spec("deep.sg", text)
    line = text.count("\n")
    assert (e.value.line, e.value.column) == (line, 1)
    assert "too many operators in a row" in e.value.render()


def test_a_long_line_is_shown_around_the_caret():
    from seqgraph.errors import Pos
    src = "h = " + "a + " * 2000 + "b$c" + " + d" * 2000
    shown = SpecError("bad", Pos(1, src.index("$") + 1), file="f.sg", source=src) \
        .render().splitlines()
    assert len(shown[1]) < 200 and shown[1].index("$") == shown[2].index("^")
    assert shown[1].startswith("     1 | ...") and shown[1].endswith("...")


def test_ten_megabyte_file_is_refused_quickly(tmp_path):
    p = tmp_path / "big.sg"
    p.write_bytes(ELMAN.encode() * (10_000_000 // len(ELMAN) + 1))
    with pytest.raises(SpecError, match="limit") as e, time_limit(5):
        seqgraph.read_spec(str(p))
    assert (e.value.line, e.value.column) == (1, 1)


def test_ten_megabytes_of_random_bytes(tmp_path):
    rnd = random.Random(0)
    outcome(rnd.randbytes(10_000_000), tmp_path)


def test_just_under_the_size_limit_answers_in_time():
    from seqgraph.lang.parse import MAX_SOURCE
    line = "# " + "x" * 97 + "\n"
    assert outcome(ELMAN + line * ((MAX_SOURCE - len(ELMAN)) // len(line))) == "ok"
    eqs = "".join(f"q{i}[t] : H = tanh(W @ x[t] + U @ q{i}[t-1] + b)\n" for i in range(300))
    assert outcome(ELMAN + eqs) == "ok"


@pytest.mark.parametrize("raw", [b"\xff\xfe" + "dim H = 4\n".encode("utf-16-le"),
                                 b"dim H = 16\n\x80\n", b"\xc3", b"\xed\xa0\x80",
                                 b"\x00" * 100, b"model m\r\ndim H = 4\r\n"])
def test_non_utf8_and_binary_files(tmp_path, raw):
    outcome(raw, tmp_path)


def test_unreadable_files_are_usage_errors(tmp_path):
    for path in (tmp_path / "missing.sg", tmp_path):           # no file; a directory
        with pytest.raises(UsageError, match="cannot read the spec"):
            seqgraph.read_spec(str(path))


def test_the_oracle_catches_a_hang(monkeypatch):
    """The time limit works: a front end that hangs fails the test."""
    import time
    monkeypatch.setattr(seqgraph, "read_spec", lambda *a: time.sleep(5))
    monkeypatch.setattr(sys.modules[__name__], "TIME_LIMIT", 0.2)
    with pytest.raises(Hang):
        outcome("model m\n")


@pytest.mark.parametrize("layers, fragment", [("99999999999999999999", "more than 1000 layers"),
                                              ("1e308", "more than 1000 layers"),
                                              ("1e400", "is too large")])
def test_campaign_finding_stack_of_huge_depth(layers, fragment):
    """Found by the campaign: `stack(1e308)` expanded layer after layer (a hang), and
    1e400 anywhere raised OverflowError from inside the parser."""
    text = GALLERY["deep_stacked_cell.sg"].replace("stack(2)", f"stack({layers})")
    with pytest.raises(SpecError, match=fragment) as e, time_limit(TIME_LIMIT):
        seqgraph.read_spec("s.sg", text)
    assert e.value.line >= 1 and e.value.column >= 1
