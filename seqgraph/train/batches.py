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
    n_valid = round(len(ids) * fraction)
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
           what: str = "training") -> Streams:
        """The streams; too little text for `batch` streams is an error naming the file."""
        length = (len(ids) - 1) // batch
        if length < 1:
            have = f"{len(ids)} token{'s' if len(ids) != 1 else ''} of {what} text"
            raise DataError(f"{have} {'are' if len(ids) != 1 else 'is'} too few for batch = "
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
        return (self.x.shape[1] + self.bptt - 1) // self.bptt        # rounded up

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


# ----------------------------------------------------------------- example batches
@dataclass
class Batch:
    """One update's worth of data, ready for `model.run`."""
    inputs: dict
    targets: dict
    lengths: dict | None       # per-example lengths by index (None: no padding)
    tokens: int                # positions read (for tokens per second)
    carry: bool                # the state carries into the next batch (LM windows)
    rows: np.ndarray | None = None   # which examples (indexes into the example set)
    forest: object = None      # the examples' trees (treepairs), their nodes the rows

    @property
    def size(self) -> int:
        """Positions read (as `x.size` of a window)."""
        return self.tokens


@dataclass(frozen=True)
class Examples:
    """Examples as arrays by variable name: a sequence variable holds one array per
    example (ids [T] or floats [T, D]), a per-example variable one id or vector each.
    `index` names each variable's sequence index (None: one per example); `lines` is each
    example's line in its file; `extra` holds arrays evaluation needs (a series'
    persistence forecast). A variable over a tree index (`treepairs`' w[n], `ids` "tree")
    holds a tree an example (trees.tree_rows); a batch joins them into one forest."""
    fields: dict
    index: dict
    ids: dict                  # variable -> True: ids (padded with -1), False: floats,
                               # "tree": a tree an example (never padded)
    lines: tuple
    file: str = "<data>"
    extra: dict = None

    def __len__(self) -> int:
        return len(self.lines)

    def subset(self, rows) -> Examples:
        rows = list(rows)
        pick = lambda seq: [seq[i] for i in rows]
        return Examples({k: pick(v) for k, v in self.fields.items()}, self.index, self.ids,
                        tuple(self.lines[i] for i in rows), self.file,
                        {k: pick(v) for k, v in (self.extra or {}).items()})

    def lengths(self, i: int) -> dict:
        """Example i's length on each sequence index."""
        return {ix: len(self.fields[v][i]) for v, ix in self.index.items()
                if ix is not None and self.ids[v] != "tree"}

    def size(self, i: int) -> int:
        """What bucketing sorts by: the example's steps over all its indexes, and the
        nodes of its tree."""
        return sum(self.lengths(i).values()) + sum(
            len(self.fields[v][i]) for v in self.index if self.ids[v] == "tree")

    def batch(self, rows, carry=False) -> Batch:
        """Examples `rows` padded to the longest on each index: ids with -1, vectors with
        0, and each example's lengths (only for an index where some example is shorter)."""
        from .trees import forest_of  # trees.py builds on this module
        rows = np.asarray(rows)
        arrays, lengths, tokens, forest = {}, {}, 0, None
        for v, ix in self.index.items():
            items = [self.fields[v][i] for i in rows]
            if ix is None:
                arrays[v] = np.asarray(items)
                continue
            if self.ids[v] == "tree":          # one forest, unpadded
                forest, arrays[v] = forest_of(items)
                continue
            lens = np.array([len(a) for a in items], dtype=np.int64)
            arrays[v] = pad(items, self.ids[v])
            tokens = max(tokens, int(lens.sum()))
            if (lens < lens.max()).any():
                lengths[ix] = lens
        return Batch(arrays, {}, lengths or None, tokens, carry, rows, forest)

    def extra_batch(self, name: str, rows) -> np.ndarray:
        return pad([self.extra[name][i] for i in rows], False)


def pad(items: list, ids: bool) -> np.ndarray:
    """[B, T] ids padded with -1, or [B, T, D] floats padded with 0."""
    T = max(len(a) for a in items)
    first = np.asarray(items[0])
    if ids:
        out = np.full((len(items), T), -1, dtype=np.int64)
    else:
        out = np.zeros((len(items), T) + first.shape[1:], dtype=np.float64)
    for i, a in enumerate(items):
        out[i, :len(a)] = a
    return out


BUCKET = 50        # batches per bucketing pool


@dataclass(frozen=True)
class ExampleBatches:
    """Batches of whole examples, no state carried between them.

    Training order: each epoch the examples are shuffled by (seed, epoch), cut into
    pools of `BUCKET` batches, each pool sorted by length and cut into batches (so a
    batch holds examples of similar lengths and little padding), and the batches are
    shuffled. A pure function of (seed, epoch): a resumed run sees the same batches.
    Evaluation order (`shuffle=False`): sorted by length, then cut."""
    examples: Examples
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    split: tuple = ()          # (inputs, targets) variable names

    @property
    def batch(self) -> int:
        return self.batch_size

    @property
    def tokens(self) -> int:
        return sum(self.examples.size(i) for i in range(len(self.examples)))

    def __len__(self) -> int:
        return (len(self.examples) + self.batch_size - 1) // self.batch_size   # rounded up

    def order(self, epoch: int = 0) -> list:
        """The rows of every batch of `epoch`, in the order they are read."""
        n, B = len(self.examples), self.batch_size
        sizes = np.array([self.examples.size(i) for i in range(n)])
        if not self.shuffle:
            perm = np.argsort(sizes, kind="stable")
            return [perm[i:i + B] for i in range(0, n, B)]
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(n)
        out = []
        for start in range(0, n, B * BUCKET):
            pool = perm[start:start + B * BUCKET]
            pool = pool[np.argsort(sizes[pool], kind="stable")]
            out.extend(pool[i:i + B] for i in range(0, len(pool), B))
        return [out[i] for i in rng.permutation(len(out))]

    def batches(self, start: int = 0, epoch: int = 0):
        """(index, Batch) from batch `start` of `epoch` on."""
        inputs = set(self.split[0]) if self.split else set()
        for i, rows in enumerate(self.order(epoch)):
            if i < start:
                continue
            b = self.examples.batch(rows)
            data = b.inputs
            b.inputs = {k: v for k, v in data.items() if k in inputs}
            b.targets = {k: v for k, v in data.items() if k not in inputs}
            yield i, b


@dataclass(frozen=True)
class StreamBatches:
    """Truncated-BPTT windows of a token stream as Batches (the state carries)."""
    streams: Streams
    input: str | None
    target: str

    @property
    def batch(self) -> int:
        return self.streams.batch

    @property
    def tokens(self) -> int:
        return self.streams.tokens

    def __len__(self) -> int:
        return len(self.streams)

    def batches(self, start: int = 0, epoch: int = 0):
        for i, x, y in self.streams.windows(start):
            inputs = {self.input: x} if self.input else {}
            yield i, Batch(inputs, {self.target: y}, None, x.size, True)


def run_batch(model, batch: Batch, **kw):
    """`model.run` on a Batch (its per-example lengths included). An executor that does
    not say it masks padding (`masks_padding = True`) runs a padded batch through its
    reference interpreter instead, so padding never changes a result silently."""
    carry = kw.pop("carry", None)
    if batch.forest is not None:
        kw["forest"] = batch.forest
    if not batch.lengths:
        return model.run(batch.inputs, batch.targets, carry=carry, **kw)
    ex = model.executor
    if type(ex).__name__ == "Interpreter" or getattr(ex, "masks_padding", False):
        return model.run(batch.inputs, batch.targets, carry=carry, lengths=batch.lengths, **kw)
    interp = getattr(ex, "interp", None)
    if interp is None:
        from ..interp import Interpreter
        interp = Interpreter(model)
    teacher = kw.pop("teacher", 1.0)
    if not 0.0 <= teacher <= 1.0:
        from ..errors import UsageError
        raise UsageError(f"teacher must be a probability in [0, 1], not {teacher}")
    extra = {"teacher": teacher} if teacher < 1.0 else {}
    return interp.run(batch.inputs, batch.targets, carry=carry, lengths=batch.lengths,
                      **kw, **extra)
