"""Batches for truncated back-propagation through time.

A language model reads one long token stream. Cut into B contiguous streams laid side by
side, the stream is read window by window, `bptt` steps at a time: the state a window ends
in is where the next window starts (the model's `carry`), so the net sees unbroken text
while gradients flow back at most `bptt` steps. Every epoch starts again from the first
window with a fresh state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


def split_tail(ids: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid): the last `fraction` of the stream is held out, so validation text
    is text the model never trained on, not a random sample of its neighbours."""
    if fraction <= 0:
        return ids, ids[:0]
    n_valid = int(round(len(ids) * fraction))
    n_valid = min(max(n_valid, 2), len(ids) - 2)
    return ids[:len(ids) - n_valid], ids[len(ids) - n_valid:]


@dataclass(frozen=True)
class Streams:
    """`ids` as B parallel streams of inputs and next-token targets (y[t] = x[t+1])."""
    x: np.ndarray          # int [B, L]
    y: np.ndarray          # int [B, L]
    bptt: int

    @staticmethod
    def of(ids: np.ndarray, batch: int, bptt: int, file: str = "<data>",
           what: str = "training") -> "Streams":
        """The streams; too little text for `batch` streams is an error naming the file."""
        length = (len(ids) - 1) // batch
        if length < 1:
            raise DataError(f"{len(ids)} tokens of {what} text are too few for batch = "
                            f"{batch} (need at least {batch + 1})", file=file)
        used = ids[:batch * length + 1]
        return Streams(used[:-1].reshape(batch, length), used[1:].reshape(batch, length), bptt)

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def tokens(self) -> int:
        return self.x.size

    def __len__(self) -> int:
        """Windows per epoch (the last one may be shorter than `bptt`)."""
        return -(-self.x.shape[1] // self.bptt)

    def window(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The i-th window: inputs and targets, both int [B, <= bptt]."""
        s = slice(i * self.bptt, (i + 1) * self.bptt)
        return self.x[:, s], self.y[:, s]

    def windows(self, start: int = 0):
        """(index, x, y) from window `start` on; a resumed run starts mid-epoch."""
        for i in range(start, len(self)):
            yield (i, *self.window(i))


def eval_streams(ids: np.ndarray, batch: int, bptt: int, file: str = "<data>") -> Streams:
    """Streams for a validation or evaluation pass: as many as the text allows, up to
    `batch`, so a short held-out tail is still scored."""
    return Streams.of(ids, max(1, min(batch, len(ids) - 1)), bptt, file, "evaluation")
