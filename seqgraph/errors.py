"""One error type for everything a user can get wrong in a spec or in data.

A `SpecError` knows where it happened (file, line, column) and prints itself the way
compilers do: ``file:line:column: message``, the source line, a caret, and a hint.
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass


def whole_number(text: str) -> bool:
    """Is `text` a whole number written in ASCII digits, as the user's inputs must be
    (flags, class ids, a metrics step)? str.isdigit alone also holds for '\u00b2', which
    int() refuses (a ValueError traceback), and for '\u0663', which int() reads as 3."""
    return text.isascii() and text.isdigit()


def did_you_mean(name, known) -> str:
    """"did you mean 'x'?" for the known name nearest to a misspelt `name`, or "": the
    same name in other case first (`LSTM`: 'lstm'), then the nearest by spelling."""
    name, known = str(name), sorted(known)
    same = [k for k in known if k.lower() == name.lower()]
    near = same or difflib.get_close_matches(name, known, 1)
    if not near:        # short names: difflib's ratio misses one wrong letter (W0: Wo)
        near = [k for k in known if _one_edit(name, k)][:1]
    return f"did you mean '{near[0]}'?" if near else ""


def _one_edit(a: str, b: str) -> bool:
    """True when one letter replaced, added, removed, or two neighbours swapped turn a
    into b, both of two letters or more, an option's dashes not counted (any one-letter
    name is one edit from another: -q is not a slip for -h)."""
    a, b = a.lstrip("-"), b.lstrip("-")
    if a == b or abs(len(a) - len(b)) > 1 or min(len(a), len(b)) < 2:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


@dataclass(frozen=True)
class Pos:
    """A position in a source text: 1-based line and column."""
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


NOPOS = Pos(0, 0)


class SeqgraphError(Exception):
    """Base of every error meant for a user (exit code 2, no traceback)."""

    def render(self) -> str:
        return str(self)


class SpecError(SeqgraphError):
    """An error in a `.sg` source, with its position, the line, a caret and a hint."""

    def __init__(self, message: str, pos: Pos | None = None, hint: str = "",
                 file: str = "<spec>", source: str | None = None):
        super().__init__(message)
        self.message = message
        self.pos = pos or NOPOS
        self.hint = hint
        self.file = file
        self.source = source

    def located(self, file: str, source: str) -> SpecError:
        """The same error, attached to a file and its text (keeps an existing location)."""
        if self.source is not None:
            return self
        return SpecError(self.message, self.pos, self.hint, file, source)

    @property
    def line(self) -> int:
        return self.pos.line

    @property
    def column(self) -> int:
        return self.pos.column

    def render(self, kind: str = "error") -> str:
        head = f"{self.file}:{self.pos.line}:{self.pos.column}: {kind}: {self.message}"
        out = [head]
        # lines as the parser counts them: at '\n' only (str.splitlines would also break
        # at a form feed or U+2028, and show the wrong line); other control characters
        # are shown as one space each, so the caret stays under its column
        lines = self.source.split("\n") if self.source is not None else []
        if 0 < self.pos.line <= len(lines):
            text = "".join(c if c.isprintable() else " "
                           for c in lines[self.pos.line - 1].rstrip("\r"))
            text, col = _around(text, max(self.pos.column - 1, 0))
            out.append(f"  {self.pos.line:4d} | {text}")
            out.append("       | " + " " * col + "^")
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


class DataError(SeqgraphError):
    """Bad data: names the file, the line (when there is one) and what was expected."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.message, self.file, self.line = message, file, line
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        super().__init__(f"{where}{message}")


class UsageError(SeqgraphError):
    """A command-line or API misuse (a missing dim, an unknown option value)."""


def _around(text: str, col: int, width: int = 160) -> tuple[str, int]:
    """A long line cut to `width` characters around the caret's column (a 5 MB line is
    not shown whole), '...' where it was cut; the caret's column in what is shown."""
    if len(text) <= width:
        return text, col
    start = max(0, min(col - width // 2, len(text) - width))
    pre = "..." if start > 0 else ""
    post = "..." if start + width < len(text) else ""
    return pre + text[start:start + width] + post, col - start + len(pre)


def too_deep(text: str, path: str | None = None):
    """An expression too deep for a recursion (the parser's, or a later pass's: a chain
    of hundreds of operators; brackets are limited before): a SpecError at the line with
    the most operators."""
    lines = text.split("\n")
    n = max(range(len(lines)), key=lambda i: sum(map(lines[i].count, "+-*/@")))
    col = len(lines[n]) - len(lines[n].lstrip()) + 1
    e = SpecError("this expression nests too deeply (too many operators in a row)",
                  Pos(n + 1, col), hint="define parts of the expression as variables")
    return e if path is None else e.located(path, text)


@contextmanager
def named(path):
    """An OSError inside names `path` when it names no file: a write that fails for a
    full disk (ENOSPC, or EFBIG past `ulimit -f`) says only its reason, and the run's
    error would name the folder instead of the file it could not write."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise
