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

    fallback = None           # why the whole model runs in the interpreter
    has_dropout, no_masks = False, None    # why training with dropout would

    @property
    def training_fallback(self) -> str | None:
        """Why training runs in the interpreter (None: it does not)."""
        if self.fallback or not (self.has_dropout and self.no_masks):
            return self.fallback
        return f"with dropout, {self.no_masks}"

    @property
    def interp(self):
        if self._interp is None:
            from ..interp import Interpreter
            self._interp = Interpreter(self.m)
        return self._interp


def has_dropout(graph) -> bool:
    """Does some equation or init value apply dropout with p > 0? (The executors' mask
    layouts refuse one in an init value: the run is then the interpreter's.)"""
    return any(sites(e) for v in graph.vars for e in v.exprs)
