"""The abstract syntax tree: frozen dataclasses, each with its source position.

The parser builds these and nothing else; meaning (names, cells, shapes) is given by
later passes. Positions do not take part in equality, so two trees that say the same
thing compare equal.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import NOPOS, Pos

KEYWORDS = frozenset("model dim input target param init loss cell return train if otherwise "
                     "leaf tree end reverse bi stack over".split())


def _pos():
    return field(default=NOPOS, compare=False)


# ------------------------------------------------------------------------ expressions
@dataclass(frozen=True)
class Index:
    """One index of a reference: kind 'rel' (name+k), 'first' (1), 'end', 'child'
    (name.left / name.right, with `child` the side)."""
    kind: str
    name: str | None = None
    k: int = 0
    child: str | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class Name:
    """A name, indexed (`h[t-1]`) or not (`W`, `c`)."""
    name: str
    index: tuple | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class Number:
    value: float
    pos: Pos = _pos()


@dataclass(frozen=True)
class BinOp:
    op: str                   # '+', '-', '*', '/', '@'
    left: object
    right: object
    pos: Pos = _pos()


@dataclass(frozen=True)
class Neg:
    arg: object
    pos: Pos = _pos()


@dataclass(frozen=True)
class FnCall:
    """`tanh(v)`, `dropout(v, 0.5)`, or a cell use `rnn(x, 64)`."""
    name: str
    args: tuple
    pos: Pos = _pos()


@dataclass(frozen=True)
class Reduce:
    """`sum over t (expr)`: a reduction of expr over every step of index t."""
    fn: str                   # sum | max | mean | logsumexp | softmax
    index: str
    arg: object
    pos: Pos = _pos()


@dataclass(frozen=True)
class Concat:
    parts: tuple
    pos: Pos = _pos()


@dataclass(frozen=True)
class CellUse:
    """`reverse rnn(x, 64)`, `bi gru(x, 32)`, `stack(3) lstm(x, 128)`."""
    modifier: str             # 'reverse' | 'bi' | 'stack'
    cell: str
    args: tuple
    layers: int = 1
    pos: Pos = _pos()


# ------------------------------------------------------------------------- statements
@dataclass(frozen=True)
class ModelDecl:
    name: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class DimDecl:
    name: str
    value: int
    pos: Pos = _pos()


@dataclass(frozen=True)
class DataDecl:
    """`input x[t] : onehot(V)` or `target y : class(5)`."""
    role: str                 # 'input' | 'target'
    name: str
    index: tuple              # () for one value per example
    kind: str                 # onehot | vec | class | binary
    size: int | str
    pos: Pos = _pos()


@dataclass(frozen=True)
class ParamDecl:
    name: str
    shape: tuple | None = None
    init: tuple | None = None  # ('orthogonal',), ('normal', 0.01)
    pos: Pos = _pos()


@dataclass(frozen=True)
class TreeDecl:
    name: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class Equation:
    """`h[t] : H = expr if leaf`: `rhs` is an expression or a CellUse."""
    name: str
    index: tuple              # () for a per-example variable
    size: int | str | None
    rhs: object
    cond: str | None = None
    pos: Pos = _pos()


@dataclass(frozen=True)
class InitDecl:
    name: str
    expr: object
    pos: Pos = _pos()


@dataclass(frozen=True)
class LossDecl:
    fn: str
    args: tuple
    weight: float = 1.0
    pos: Pos = _pos()


@dataclass(frozen=True)
class Return:
    name: str
    pos: Pos = _pos()


@dataclass(frozen=True)
class CellDef:
    name: str
    params: tuple
    body: tuple
    pos: Pos = _pos()


@dataclass(frozen=True)
class Call:
    """A call in the train block: `adam(lr = 0.002)`, `chars("data/tiny.txt")`. Where
    its name, each positional value and each keyword stand (for errors) do not take
    part in comparisons."""
    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict, hash=False)
    pos: Pos = field(default_factory=_pos, compare=False, repr=False)
    arg_pos: tuple = field(default=(), compare=False, repr=False)
    kw_pos: dict = field(default_factory=dict, compare=False, repr=False)

    def __str__(self) -> str:
        parts = [repr(a) if isinstance(a, str) else str(a) for a in self.args]
        parts += [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                  for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"


@dataclass(frozen=True)
class TrainEntry:
    key: str
    value: object
    pos: Pos = _pos()                  # the key's
    value_pos: Pos = _pos()


@dataclass(frozen=True)
class TrainBlock:
    entries: tuple
    pos: Pos = _pos()


@dataclass(frozen=True)
class Spec:
    stmts: tuple
    path: str = "<spec>"
    source: str = ""
