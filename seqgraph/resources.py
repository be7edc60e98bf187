"""Memory bounds: refuse up front what the machine cannot hold.

A model whose sizes make its parameters, or whose unfolding over a training window makes
its stored values, larger than the memory the machine has available would otherwise fail
deep inside numpy (MemoryError, "array is too big") or drive the machine into swap. The
estimate is made before anything large is allocated:

- parameters: every parameter shape, at the dtype's width; training adds their
  gradients and the optimiser's state slots (adam 2, sgd with momentum 1, adagrad 1);
- the unfolding: every variable's size x batch x bptt (one value per example for a
  variable without an index) x STORED copies: the value kept for back-propagation, its
  gradient and the intermediates of the operations that compute it.

It is an estimate, deliberately on the high side of what the executors hold at once; the
check only refuses a run that needs more than the memory available (MemAvailable of
/proc/meminfo). SEQGRAPH_MEMORY_AVAILABLE=BYTES replaces the machine's figure (for
tests, or to leave room for other jobs). docs/reliability.md lists the guarantee.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import UsageError
from .graph.folded import ShiftKind

STORED = 4                      # copies kept per unfolded value (see above)
SLOTS = {"adam": 2, "sgd": 1, "adagrad": 1}
ENV = "SEQGRAPH_MEMORY_AVAILABLE"


def available_memory() -> int | None:
    """Bytes the machine can give without swapping (MemAvailable), or None where that
    is unknown (not Linux)."""
    raw = os.environ.get(ENV, "").strip()
    if raw:
        try:
            return int(float(raw))
        except ValueError:
            raise UsageError(f"{ENV}={raw!r}: expected a number of bytes") from None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def human(n: float) -> str:
    """1536 -> '1.5 KB'; powers of 1024."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.1f} PB"            # pragma: no cover


def param_bytes(shapes: dict, itemsize: int) -> int:
    """Bytes of all parameters (Python ints: no overflow for absurd sizes)."""
    return sum(math.prod(int(d) for d in shape) for shape in shapes.values()) * int(itemsize)


@dataclass
class Estimate:
    params: int                 # the parameters themselves
    training_state: int         # gradients and optimiser slots
    unfolded: int               # values stored over one window
    batch: int
    bptt: int
    reach: tuple = ()           # (variable, steps) of the longest delay, past bptt

    @property
    def total(self) -> int:
        return self.params + self.training_state + self.unfolded

    def describe(self) -> str:
        return (f"about {human(self.total)} (parameters {human(self.params)}, their "
                f"gradients and optimiser state {human(self.training_state)}, values "
                f"unfolded over batch {self.batch} x bptt {self.bptt} "
                f"{human(self.unfolded)})")


def estimate(graph, sizes: dict, shapes: dict, itemsize: int, batch: int, bptt: int,
             optimizer: str = "adam") -> Estimate:
    """The memory of training `graph` with these bound sizes, one window at a time."""
    p = param_bytes(shapes, itemsize)
    slots = SLOTS.get(str(optimizer), 2)
    unfolded = 0
    reach = {}                  # the longest delay (or advance) each variable is read at:
    for u, _, shift in graph.nx().edges(data="shift"):     # that many steps of it are
        if shift.kind == ShiftKind.REL and shift.k:         # kept beside the window
            reach[u] = max(reach.get(u, 0), abs(int(shift.k)))
    for v in graph.vars:
        steps = bptt ** len(v.indexes) + reach.get(v.name, 0)
        unfolded += int(sizes.get(v.name, 1)) * batch * steps * STORED
    far = max(reach.items(), key=lambda kv: kv[1], default=None)
    return Estimate(p, p * (1 + slots), unfolded * int(itemsize), batch, bptt,
                    far if far and far[1] > bptt else ())


def check_params(spec_path: str, shapes: dict, itemsize: int) -> None:
    """Refuse parameters larger than the memory available, before allocating them."""
    need = param_bytes(shapes, itemsize)
    have = available_memory()
    if have is not None and need > have:
        big = max(shapes, key=lambda k: math.prod(int(d) for d in shapes[k]))
        raise UsageError(
            f"{spec_path}: the parameters alone need {human(need)} of memory (the largest, "
            f"'{big}', has shape {list(shapes[big])}), but this machine has "
            f"{human(have)} available; use smaller sizes")


def check_training(model, batch: int, bptt: int, optimizer: str = "adam") -> Estimate:
    """Refuse a training run whose estimate exceeds the memory available; returns the
    estimate. Called by the training session before the first step."""
    est = estimate(model.graph, model.sizes, model.param_shapes, model.dtype.itemsize,
                   batch, bptt, optimizer)
    have = available_memory()
    if have is not None and est.total > have:
        raise UsageError(
            f"{model.spec.path}: training needs {est.describe()} of memory, but this "
            f"machine has {human(have)} available; " + (
                f"{est.reach[0]} is read {est.reach[1]} steps away, and as many of its "
                f"steps are kept: shorten that delay" if est.reach else
                "lower batch or bptt (--set batch=N --set bptt=N) or the sizes of the "
                "model"))
    return est


# ------------------------------------------------------------------ caches by length
CACHE_ENTRIES = 1_000_000       # entries kept by one LengthCache (a schedule: ~90 bytes each)


class LengthCache:
    """Values computed once per set of lengths (a batch's `{"t": 37}`) and kept: the
    schedule of the unfolded DAG (Model.schedule), a dropout layout (compile/masks.py).
    Their size grows with the lengths, and data of many lengths (padded batches of
    examples, each as long as its longest) would keep one per length for the whole run:
    0.8 MB a schedule of lstm.sg at T = 1,100, thousands of lengths in a corpus of long
    documents. So at most `budget` entries are kept in all (`size(value)` each), the least
    recently used dropped first; the newest value is always kept."""

    def __init__(self, size=len, budget: int | None = None):
        self.size, self.budget = size, CACHE_ENTRIES if budget is None else budget
        self.values: dict = {}          # in order of use, the oldest first
        self.total = 0

    def get(self, key, make):
        """The value for `key`, made by `make()` when it is not kept."""
        if key in self.values:
            value = self.values.pop(key)        # re-inserted: now the newest
        else:
            value = make()
            self.total += self.size(value)
        self.values[key] = value
        while self.total > self.budget and len(self.values) > 1:
            oldest = next(iter(self.values))
            self.total -= self.size(self.values.pop(oldest))
        return value

    def __len__(self) -> int:
        return len(self.values)
