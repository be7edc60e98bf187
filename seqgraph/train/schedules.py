"""Learning-rate schedules of the `train` block: `constant`, `step(after, factor)`,
`plateau(factor, patience)` and `cosine`.

A schedule maps (step, epoch) to a multiple of the optimiser's base rate. `plateau` also
listens to the validation loss at each epoch end, so it has state, saved in checkpoints
like the optimiser's.
"""
from __future__ import annotations

import math

from ..errors import UsageError


class Schedule:
    name = "constant"

    def scale(self, step: int, epoch: int, total_steps: int) -> float:
        """The multiple of the base rate for the update after `step` updates, in
        0-based `epoch`, of a run of `total_steps` updates."""
        return 1.0

    def end_epoch(self, metric: float) -> None:
        """Called with the epoch's validation loss (training loss without validation)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        for key, value in d.items():
            setattr(self, key, value)


Constant = Schedule


class Step(Schedule):
    """The Penn Treebank recipe of Zaremba et al. 2014: the base rate for the first
    `after` epochs, then multiplied by `factor` at the start of every later epoch."""
    name = "step"

    def __init__(self, after: int = 4, factor: float = 0.5):
        if after < 0 or not 0 < factor <= 1:
            raise UsageError("step(after, factor) needs after >= 0 and 0 < factor <= 1")
        self.after, self.factor = int(after), float(factor)

    def scale(self, step, epoch, total_steps):
        return self.factor ** max(0, epoch - self.after + 1)


class Plateau(Schedule):
    """Multiply the rate by `factor` when the validation loss has not improved for more
    than `patience` epochs in a row (PyTorch's ReduceLROnPlateau)."""
    name = "plateau"

    def __init__(self, factor: float = 0.5, patience: int = 1):
        if not 0 < factor <= 1 or patience < 0:
            raise UsageError("plateau(factor, patience) needs 0 < factor <= 1 and patience >= 0")
        self.factor, self.patience = float(factor), int(patience)
        self.best, self.bad, self.current = math.inf, 0, 1.0

    def scale(self, step, epoch, total_steps):
        return self.current

    def end_epoch(self, metric):
        if metric < self.best:
            self.best, self.bad = float(metric), 0
            return
        self.bad += 1
        if self.bad > self.patience:
            self.current *= self.factor
            self.bad = 0

    def state_dict(self):
        return {"best": self.best if math.isfinite(self.best) else None,
                "bad": self.bad, "current": self.current}

    def load_state_dict(self, d):
        self.best = math.inf if d["best"] is None else d["best"]
        self.bad, self.current = d["bad"], d["current"]


class Cosine(Schedule):
    """Half a cosine from the base rate down to `floor` times it over the whole run
    (Loshchilov and Hutter 2017, without restarts); it moves every step."""
    name = "cosine"

    def __init__(self, floor: float = 0.0):
        if not 0 <= floor <= 1:       # below 0 the rate would turn negative: uphill
            raise UsageError("cosine(floor) needs 0 <= floor <= 1 (the last rate as a "
                             "fraction of the base rate)")
        self.floor = float(floor)

    def scale(self, step, epoch, total_steps):
        frac = min(step / max(total_steps, 1), 1.0)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * frac))


SCHEDULES = {"constant": Constant, "step": Step, "plateau": Plateau, "cosine": Cosine}


def make_schedule(call) -> Schedule:
    """A schedule from a train-block value: `step(after = 4, factor = 0.5)` or `cosine`."""
    name = getattr(call, "name", call)
    if name not in SCHEDULES:
        raise UsageError(f"unknown schedule {name!r} (known: {', '.join(SCHEDULES)})")
    try:
        return SCHEDULES[name](*getattr(call, "args", ()), **dict(getattr(call, "kwargs", {})))
    except TypeError as e:
        raise UsageError(f"bad schedule {name}(...): {str(e).split('__init__() ')[-1]}") from None
