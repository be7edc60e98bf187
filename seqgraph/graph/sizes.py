"""Sizes as linear forms over dim names: 128, V, H+V, 2*H.

A size that the data binds (V) stays symbolic until it is bound, so a spec can be
checked before any data is read; concatenation adds sizes, so the forms are linear.
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_SIZE = 10_000_000      # units of a dim or a size: a matrix of two would not fit memory
TOO_LARGE_HINT = "a parameter of two such sizes would not fit in memory: give a smaller " \
    "one, such as 16 or 256"


@dataclass(frozen=True)
class Lin:
    const: int = 0
    terms: tuple = ()          # ((name, coeff), ...) sorted, no zero coefficients

    @staticmethod
    def of(x) -> Lin:
        return Lin(int(x)) if isinstance(x, int) else Lin(0, ((x, 1),))

    def _combine(self, other: Lin, sign: int) -> Lin:
        d = dict(self.terms)
        for n, c in other.terms:
            d[n] = d.get(n, 0) + sign * c
        return Lin(self.const + sign * other.const,
                   tuple(sorted((n, c) for n, c in d.items() if c)))

    def __add__(self, other):
        return self._combine(other, 1)

    def __sub__(self, other):
        return self._combine(other, -1)

    @property
    def is_int(self) -> bool:
        return not self.terms

    @property
    def names(self) -> set:
        return {n for n, _ in self.terms}

    def bind(self, dims: dict) -> Lin:
        out = Lin(self.const)
        for n, c in self.terms:
            out = out + (Lin(c * dims[n]) if n in dims else Lin(0, ((n, c),)))
        return out

    def __str__(self) -> str:
        parts = [n if c == 1 else f"{c}*{n}" for n, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return "+".join(parts).replace("+-", "-")

    def value(self):
        """An int when bound, else the text form."""
        return self.const if self.is_int else str(self)
