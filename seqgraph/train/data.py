"""A model's dataset: the train block's loaders read, encoded with one vocabulary, split
into training and validation data, and bound to the model's variables.

A text loader (`chars`, `words`) gives one token stream, read in truncated-BPTT windows
with the state carried. An example loader (`pairs`, `labeled`, `tagged`, `series`,
`treepairs`) gives whole examples, batched by length with padding and no state carried
between batches (a batch's trees: one forest).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import DataError, UsageError
from ..graph.folded import fed_back
from .batches import ExampleBatches, Examples, StreamBatches, Streams, eval_streams, split_tail
from .binding import (
    Binding,
    bind,
    bind_examples,
    check_kind,
    declared_size,
    fit_loader,
    size_source,
)
from .loaders import (
    BOS,
    EOS,
    EXAMPLE_KINDS,
    ExampleLoader,
    Raw,
    TextLoader,
    Vocab,
    header_warning,
    id_at_least,
    is_class_id,
    make_loader,
    quote_token,
    same_splits,
    spec_file_errors,
)

SPLIT_SEED = 0     # the held-out examples are the same whatever the training seed


@dataclass(frozen=True)
class Dataset:
    vocab: Vocab
    binding: Binding
    train: object              # token ids (a stream), or Examples
    valid: object              # token ids (possibly empty), or Examples (possibly empty)
    train_file: str
    valid_file: str
    notes: tuple = ()          # warnings about the data, said by `seqgraph train`

    def batches(self, cfg):
        """The training batches: BPTT windows of the stream, or batches of examples."""
        if self.binding.examples:
            return ExampleBatches(self.train, cfg.batch, cfg.seed, True, self._split())
        s = Streams.of(self.train, cfg.batch, cfg.bptt, self.train_file)
        return StreamBatches(s, self.binding.input, self.binding.target)

    def valid_batches(self, cfg):
        """The validation batches, or None when nothing is held out."""
        return eval_batches(self, self.valid, self.valid_file, cfg)

    def _split(self):
        return ((self.binding.input,) if self.binding.input else (), (self.binding.target,))


def eval_batches(ds: Dataset, data, file: str, cfg):
    """Batches for scoring `data` (ids or Examples) in a fixed order; None if empty."""
    if ds.binding.examples:
        if not len(data):
            return None
        return ExampleBatches(data, cfg.batch, 0, False, ds._split())
    if len(data) < 2:
        return None
    return StreamBatches(eval_streams(data, cfg.batch, cfg.bptt, file), ds.binding.input,
                         ds.binding.target)


def need_data(cfg, graph=None) -> None:
    """The train block's data, or an error naming a loader that fits the model."""
    if cfg.data is None:
        from .binding import loaders_for, trees_and_sequences
        if graph is not None:       # a tree beside a sequence that no loader reads
            trees_and_sequences(graph, "treepairs")
        fits = loaders_for(graph) if graph is not None else []
        call = f'{fits[0] if fits else "chars"}("file.txt")'
        if fits and fits[0] == "treepairs":       # a tree, a tab, the target
            call = 'treepairs("pairs.tsv")'
        if fits and fits[0] == "series":          # its columns are named
            call = 'series("file.csv", inputs = ["a"], targets = ["b"])'
        if graph is not None and not graph.train_config:
            raise UsageError(f"the spec has no train block: add one, train {{ data = "
                             f"{call} }}, or pass --set data='{call}'")
        raise UsageError(f"the train block names no data; add data = {call} to it or pass "
                         f"--set data='{call}'")


def training_labels(data) -> np.ndarray | None:
    """The class labels a dataset trains on (a classifier's, a tagger's tags, a tree
    model's node or root labels), None for data without labels (streams, pairs,
    series, treepairs)."""
    kind = data.binding.kind
    if kind == "trees":
        return data.train.labels(data.binding.root_target)
    if kind == "labeled":
        return np.asarray(data.train.fields[data.binding.target], dtype=np.int64)
    if kind == "tagged":
        tags = data.train.fields[data.binding.target]
        return np.concatenate(tags) if tags else None
    return None


def encode(loader: TextLoader, vocab: Vocab) -> np.ndarray:
    return loader.encode(vocab, loader.tokens())


def load_dataset(graph, cfg, dims: dict | None = None, vocab: Vocab | None = None) -> Dataset:
    """Read `cfg.data` (and `cfg.valid`); `vocab` comes from a checkpoint when resuming,
    otherwise it is built from the training data; `dims` are the `--dim` bindings."""
    need_data(cfg, graph)
    missing = spec_file_errors(graph, cfg)
    if missing:             # the first, at its place in the spec
        raise missing[0]
    if getattr(cfg.data, "name", None) == "trees":    # recursive nets: train/trees.py
        from .trees import load_tree_dataset
        return load_tree_dataset(graph, cfg, dims, vocab)
    loader = make_loader(cfg.data, cfg.base)
    check_kind(graph, loader.kind)      # a loader that cannot feed the model, before its data
    if loader.kind in EXAMPLE_KINDS:
        return load_examples(graph, cfg, loader, dims, vocab)
    tokens = loader.tokens()
    vocab = vocab or loader.vocab(tokens)
    ids = loader.encode(vocab, tokens)
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


# ------------------------------------------------------------------ example loaders
def _take(raw: Raw, rows) -> Raw:
    if isinstance(raw.source, np.ndarray):
        return Raw(raw.source[rows], raw.target[rows], [raw.lines[i] for i in rows])
    return Raw([raw.source[i] for i in rows], [raw.target[i] for i in rows],
               [raw.lines[i] for i in rows])


def split_examples(raw: Raw, fraction: float, file: str, series: bool) -> tuple[Raw, Raw]:
    """(train, valid): a series holds out its last `fraction` of rows (the future);
    other examples a fixed random `fraction` (the same for every seed), at least one."""
    n = len(raw.lines)
    if fraction <= 0:
        return raw, _take(raw, [])
    if series:
        n_valid = round(n * fraction)
        if n_valid < 2 or n - n_valid < 2:
            raise DataError(f"valid = {fraction} of a series of {n} rows leaves an empty "
                            f"split (each part needs at least 2 rows)", file=file)
        return _take(raw, list(range(n - n_valid))), _take(raw, list(range(n - n_valid, n)))
    n_valid = max(1, round(n * fraction))
    if n - n_valid < 1:
        raise DataError(f"valid = {fraction} of {n} example{'s' * (n != 1)} leaves no "
                        f"training examples (an empty split)", file=file)
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return _take(raw, sorted(perm[n_valid:])), _take(raw, sorted(perm[:n_valid]))


def load_examples(graph, cfg, loader: ExampleLoader, dims, vocab) -> Dataset:
    file = str(loader.path)
    loader = fit_loader(graph, loader, dims)        # pairs: a vector source reads numbers
    raw = loader.read()
    if hasattr(cfg.valid, "name"):
        vloader = fit_loader(graph, make_loader(cfg.valid, cfg.valid_base), dims)
        if vloader.kind != loader.kind:
            raise UsageError(f"valid is a {vloader.kind} loader but data is {loader.kind}; "
                             f"both must be read by the same loader")
        same_splits(cfg.data, cfg.valid, "valid")
        train_raw, valid_raw, vfile = raw, vloader.read(), str(vloader.path)
    else:
        train_raw, valid_raw = split_examples(raw, cfg.valid, file, loader.kind == "series")
        vfile = file
    vocab = vocab or unscaled_binary(graph, start_tag(graph, loader, loader.vocab(train_raw),
                                                      dims))
    check_labels(graph, loader, train_raw, vocab, file, dims)
    check_labels(graph, loader, valid_raw, vocab, vfile, dims)
    binding = bind_examples(graph, vocab, loader.kind, file, dims)
    train = encode_examples(graph, loader, train_raw, vocab, binding, file, cfg.bptt)
    valid = encode_examples(graph, loader, valid_raw, vocab, binding, vfile, cfg.bptt)
    notes = (header_warning(raw.target, raw.lines, file),) if loader.kind == "labeled" \
        else ()
    return Dataset(vocab, binding, train, valid, file, vfile, tuple(n for n in notes if n))


def start_tag(graph, loader, vocab: Vocab, dims) -> Vocab:
    """Tags read back (a Jordan net, `R @ y[t-1]`) read `<s>` before the first step, as
    LANGUAGE.md says of a class target: the tag vocabulary gets it, last, so that the
    tags keep their ids. Where the spec's class(K) has no room for it, the first step
    reads the zero vector (docs/language.md)."""
    if loader.kind != "tagged" or BOS in vocab.target.index:
        return vocab
    y = next((v for v in graph.targets() if v.kind == "class" and v.index is not None
              and fed_back(graph, v.name)), None)
    K = None if y is None else declared_size(graph, y, dims)
    if y is None or K is not None and K <= len(vocab.target):
        return vocab
    return replace(vocab, target=replace(vocab.target, tokens=(*vocab.target.tokens, BOS)))


def unscaled_binary(graph, vocab: Vocab) -> Vocab:
    """A series' binary target keeps its 0s and 1s, which bce reads as probabilities:
    standardised like a vec target (scale=true), they became numbers such as -0.9 and
    1.1, and the loss fell without bound. Its mean 0 and scale 1 leave it as it is."""
    st = vocab.stats
    ys = [v for v in graph.targets() if v.kind in ("vec", "binary") and v.index is not None]
    if not st or len(ys) != 1 or ys[0].kind != "binary":
        return vocab
    n = len(st["target_mean"])
    return replace(vocab, stats={**st, "target_mean": [0.0] * n, "target_std": [1.0] * n})


def check_labels(graph, loader, raw: Raw, vocab: Vocab, file: str, dims) -> None:
    """A label outside the classes the spec declares (`class(5)` but label 7) is an
    error naming its line: in the training split, a label past the K-th; in the
    held-out one, also a class id of K or more that training never saw."""
    if loader.kind != "labeled":
        return
    targets = [v for v in graph.targets() if v.kind == "class" and v.index is None]
    if len(targets) != 1:
        return                  # bind_examples says what is missing
    K = declared_size(graph, targets[0], dims)
    if K is None:
        return
    numeric = all(is_class_id(t) for t in vocab.target.tokens)
    for label, line in zip(raw.target, raw.lines, strict=True):
        i = vocab.target.index.get(label)
        if (i is not None and i >= K) or (i is None and numeric and is_class_id(label)
                                          and id_at_least(label, K)):
            what = f"class ids 0..{K - 1}" if numeric else f"at most {K} distinct labels"
            raise DataError(f"label {quote_token(label)} is outside the {K} classes of "
                            f"{size_source(graph, targets[0], dims)} ({what})",
                            file=file, line=line)


def _label_id(vocab: Vocab, label: str, file: str, line: int, what: str = "label") -> int:
    i = vocab.index.get(label) if label != BOS else None   # <s>: a start, no label
    if i is None:
        known = [t for t in vocab.tokens if t != BOS]
        shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        raise DataError(f"{what} {quote_token(label)} is not one of the {len(known)} the model was "
                        f"trained with ({shown})", file=file, line=line)
    return i


def encode_examples(graph, loader: ExampleLoader, raw: Raw, vocab: Vocab, binding: Binding,
                    file: str, bptt: int) -> Examples:
    """Examples as id / vector arrays keyed by the variables they feed."""
    x, y = binding.input, binding.target
    index = {x: graph.var(x).index, y: graph.var(y).index}
    kind = loader.kind
    if kind == "series":
        if graph.var(y).kind == "binary":
            _probabilities(raw, loader.targets, file)
        return series_windows(loader, raw, vocab, binding, index, file, bptt)
    if kind == "treepairs":         # a tree an example (trees.tree_rows), the target
        from .trees import leaf_ids, tree_rows
        src = [tree_rows(left, right, leaf_ids(words, lambda w: vocab.encode(w, file)))
               for left, right, words in raw.source]
        tgt = [vocab.target.encode(list(toks) + [EOS], file) for toks in raw.target]
        return Examples({x: src, y: tgt}, index, {x: "tree", y: True}, tuple(raw.lines),
                        file, {})
    src = [vocab.encode(toks, file) for toks in raw.source]
    if kind == "pairs":
        tgt = [vocab.target.encode(list(toks) + [EOS], file) for toks in raw.target]
        if index[x] == index[y]:
            for s, t, line in zip(src, tgt, raw.lines, strict=True):
                if len(s) != len(t):
                    raise DataError(f"the model reads {x} and {y} on one index "
                                    f"'{index[x]}', but this pair has {len(s)} source and "
                                    f"{len(t)} target tokens (with </s>)", file=file,
                                    line=line)
    elif kind == "labeled":
        tgt = [_label_id(vocab.target, lab, file, line)
               for lab, line in zip(raw.target, raw.lines, strict=True)]
    else:
        tgt = [np.array([_label_id(vocab.target, t, file, line, "tag") for t in tags],
                        dtype=np.int64) for tags, line in zip(raw.target, raw.lines, strict=True)]
    return Examples({x: src, y: tgt}, index, {x: True, y: True}, tuple(raw.lines), file, {})


def _probabilities(raw: Raw, columns, file: str) -> None:
    """A binary target is 0 or 1, or a probability between (LANGUAGE.md: 0-1 targets):
    bce's loss of another value has no minimum, and training would run it down."""
    Y = np.asarray(raw.target, dtype=np.float64).reshape(len(raw.lines), -1)
    bad = np.argwhere((Y < 0) | (Y > 1))
    if len(bad):
        r, c = bad[0]
        raise DataError(f"column '{columns[c]}' is {Y[r, c]:g}, and it feeds a binary "
                        f"target: 0, 1 or a probability between", file=file,
                        line=raw.lines[r])


def series_windows(loader, raw: Raw, vocab: Vocab, binding: Binding, index: dict, file: str,
                   bptt: int) -> Examples:
    """Windows of `window` rows every `stride` rows: x the inputs at rows r..r+W-1, y the
    targets at rows r+h..r+h+W-1; `persistence` the forecast that repeats the last known
    target (row r+h-1), the baseline evaluation reports."""
    x, y = binding.input, binding.target
    X = vocab.standardise(np.asarray(raw.source, dtype=np.float64))
    Y = vocab.standardise_target(np.asarray(raw.target, dtype=np.float64))
    W = loader.window or bptt
    S = loader.stride or W
    h = loader.horizon
    usable = len(X) - h
    xs, ys, ps, lines = [], [], [], []
    for r in range(0, max(usable, 0), S):
        n = min(W, usable - r)
        if n < 1:
            break
        xs.append(X[r:r + n])
        ys.append(Y[r + h:r + h + n])
        prev = np.arange(r + h - 1, r + h - 1 + n)
        ps.append(Y[np.maximum(prev, 0)])
        lines.append(raw.lines[r])
        if r + n >= usable:
            break
    if len(raw.lines) and not xs:
        raise DataError(f"{len(raw.lines)} rows are too few for horizon = {h}",
                        file=file)
    return Examples({x: xs, y: ys}, index, {x: False, y: False}, tuple(lines), file,
                    {"persistence": ps})


def feeds(binding: Binding, x: np.ndarray, y: np.ndarray) -> tuple[dict, dict]:
    """The model's (inputs, targets) for a window of ids: x[t] and y[t] = x[t+1]."""
    inputs = {binding.input: x} if binding.input else {}
    return inputs, {binding.target: y}
