"""A model's dataset: the train block's loaders read, encoded with one vocabulary, split
into training and validation text, and bound to the model's variables."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .batches import split_tail
from .binding import Binding, bind
from .loaders import TextLoader, Vocab, make_loader


@dataclass(frozen=True)
class Dataset:
    vocab: Vocab
    binding: Binding
    train: np.ndarray          # token ids
    valid: np.ndarray          # token ids (possibly empty)
    train_file: str
    valid_file: str


def need_data(cfg) -> None:
    if cfg.data is None:
        raise UsageError('the train block names no data; add data = chars("file.txt") to '
                         'it or pass --set data=\'chars("file.txt")\'')


def encode(loader: TextLoader, vocab: Vocab) -> np.ndarray:
    return vocab.encode(loader.tokens(), str(loader.path))


def load_dataset(graph, cfg, dims: dict | None = None, vocab: Vocab | None = None) -> Dataset:
    """Read `cfg.data` (and `cfg.valid`); `vocab` comes from a checkpoint when resuming,
    otherwise it is built from the training text; `dims` are the `--dim` bindings."""
    need_data(cfg)
    loader = make_loader(cfg.data, cfg.base)
    tokens = loader.tokens()
    vocab = vocab or loader.vocab(tokens)
    ids = vocab.encode(tokens, str(loader.path))
    binding = bind(graph, len(vocab), loader.kind, str(loader.path), dims)
    if hasattr(cfg.valid, "name"):
        vloader = make_loader(cfg.valid, cfg.valid_base)
        if vloader.kind != loader.kind:
            raise UsageError(f"valid is a {vloader.kind} loader but data is {loader.kind}; "
                             f"both must read the same kind of tokens")
        return Dataset(vocab, binding, ids, encode(vloader, vocab), str(loader.path),
                       str(vloader.path))
    train, valid = split_tail(ids, cfg.valid)
    return Dataset(vocab, binding, train, valid, str(loader.path), str(loader.path))


def feeds(binding: Binding, x: np.ndarray, y: np.ndarray) -> tuple[dict, dict]:
    """The model's (inputs, targets) for a window of ids: x[t] and y[t] = x[t+1]."""
    inputs = {binding.input: x} if binding.input else {}
    return inputs, {binding.target: y}
