"""What the sequence and the tree executors share: the interpreter they hand a run to
when they cannot compile it (made on first use), and whether a model draws dropout masks
while training (the executors then draw the interpreter's masks themselves,
compile/masks.py, or hand the run to the interpreter, so that the results stay the
interpreter's)."""
from __future__ import annotations

from .masks import sites


class FallsBack:
    """A mixin: `self.m` is the model; `interp` its interpreter, made when first needed."""
    _interp = None

    @property
    def interp(self):
        if self._interp is None:
            from ..interp import Interpreter
            self._interp = Interpreter(self.m)
        return self._interp


def has_dropout(graph) -> bool:
    """Does some equation apply dropout with p > 0?"""
    return any(sites(c.expr) for v in graph.vars for c in v.cases)
