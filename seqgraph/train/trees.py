"""Trees in training (LANGUAGE.md sections 6-7): the `trees(path)` loader, batches of
trees as forests, training and evaluation of a recursive net.

A file holds one PTB-bracketed tree a line with a label at every node, words at the
leaves: `(3 (2 It) (4 (2 's) (3 fine)))`. Each tree is read once into post-order arrays
(children before parents, the root last); a batch of trees is the concatenation of
their arrays with the child ids shifted, built with numpy in O(nodes), never a Python
walk per batch. The model's tree-indexed one-hot input (`w[n]`) is bound to the words
(-1 at internal nodes) and its tree-indexed class target (`y[n]`) to the labels, whatever
their names, as the text loaders bind `x[t]` and `y[t]` by kind.

Evaluation reports what Socher et al. (2013) report: fine-grained (5-class) accuracy
at all nodes and at the root, and binary accuracy with the neutral label dropped.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import DataError, UsageError, whole_number
from ..graph.folded import LossFn, ShiftKind
from ..graph.trees import Forest, heights
from ..ops import log_softmax
from .binding import (
    Binding,
    _size,
    declared_size,
    listed,
    loaders_for,
    size_source,
    trees_and_sequences,
)
from .evaluate import loss_on, token_terms, xent_output
from .loaders import (
    UNK,
    Vocab,
    data_call,
    read_text,
    resolve_path,
    spec_file_errors,
    text_lines,
)
from .loop import Selects

_TOKEN = re.compile(r"\(|\)|[^\s()]+")


# ------------------------------------------------------------------------------ parsing
@dataclass(frozen=True)
class LeveledForest(Forest):
    """A forest that knows each node's height (0 at leaves), so that the level-batched
    executor need not compute it."""
    heights: np.ndarray | None = None

    def height(self) -> np.ndarray:
        return self.heights


@dataclass(frozen=True)
class TreeSet:
    """Trees as flat post-order arrays: tree i owns rows off[i]:off[i+1]; `left`/`right`
    are tree-local row numbers (-1 at leaves); `word` token ids (-1 inside); `label`."""
    off: np.ndarray          # [T+1]
    left: np.ndarray         # [N] local child rows
    right: np.ndarray
    word: np.ndarray         # [N] ids, -1 at internal nodes
    label: np.ndarray        # [N]
    height: np.ndarray       # [N] 0 at leaves
    file: str = "<trees>"

    def __len__(self) -> int:
        return len(self.off) - 1

    @property
    def nodes(self) -> int:
        return int(self.off[-1])

    def labels(self, roots_only: bool = False) -> np.ndarray:
        """Every node's label, or (a tree classifier's data) each tree's root's: a tree's
        last row in post-order."""
        return self.label[self.off[1:] - 1] if roots_only else self.label

    def batch(self, idx) -> tuple[Forest, np.ndarray, np.ndarray]:
        """The trees `idx` as one forest with their words and labels, in O(nodes)."""
        idx = np.asarray(idx, dtype=np.int64)
        starts, sizes = self.off[idx], self.off[idx + 1] - self.off[idx]
        rows = np.repeat(starts, sizes) + (np.arange(sizes.sum()) -
                                           np.repeat(np.cumsum(sizes) - sizes, sizes))
        f = joined(sizes, self.left[rows], self.right[rows], self.height[rows])
        return f, self.word[rows], self.label[rows]


def joined(sizes, left, right, heights) -> LeveledForest:
    """Trees of `sizes` nodes side by side, their tree-local child rows `left`, `right`
    (-1 at leaves) concatenated: one forest, each child id shifted by its tree's first
    row, in O(nodes)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    off = np.concatenate([[0], np.cumsum(sizes)])
    base = np.repeat(off[:-1], sizes)
    kid = lambda a: np.where(a >= 0, a + base, -1)
    owner = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    return LeveledForest(kid(left), kid(right), owner, off[1:] - 1, heights)


def tree_rows(left, right, ids) -> np.ndarray:
    """One tree of an example (`treepairs`) as int rows [nodes, 4]: left and right child
    (tree-local, -1 at leaves), word id (-1 inside) and height, in post-order."""
    return np.column_stack([left, right, ids, heights(left, right)]).astype(np.int64)


def forest_of(trees: list) -> tuple[LeveledForest, np.ndarray]:
    """Trees as `tree_rows` side by side: one forest and its words."""
    rows = np.concatenate(trees)
    return joined([len(t) for t in trees], rows[:, 0], rows[:, 1], rows[:, 3]), rows[:, 2]


def leaf_ids(words: list, encode) -> np.ndarray:
    """A tree's word ids, -1 inside (where `words` has None): `encode` maps the leaves'
    words, in order, to ids (the vocabulary's rule for an unknown one)."""
    ids = np.full(len(words), -1, dtype=np.int64)
    leaves = [i for i, w in enumerate(words) if w is not None]
    ids[leaves] = encode([words[i] for i in leaves])
    return ids


def _error(msg, file, line, col, text):
    start = 0 if len(text) <= 80 else max(0, col - 40)      # a window of a long line
    shown, caret = text[start:start + 80].replace("\t", " "), col - 1 - start  # a tab: 1
    return DataError(f"character {col}: {msg}\n  {shown}\n  {' ' * caret}^", file=file,
                     line=line)


def parse_tree(text: str, file: str = "<tree>", line: int = 1, binarize: bool = False,
               loader: str = "trees", class_ids: bool | None = None):
    """One bracketed tree -> post-order (left, right, words, labels) lists; a DataError
    with the file, line and character for unbalanced brackets, a missing label, an
    empty tree, a non-binary node (unless `binarize`: the hint names `loader`'s). The
    labels of `trees` are class ids (0, 1, ...); `treepairs` does not feed them, so any
    token is a label there (`(S (NP cat) (VP dog))`; -1 when not an integer), and so
    with `class_ids = False` (a tree to label: `sample --input`)."""
    if class_ids is None:
        class_ids = loader == "trees"
    left, right, words, labels = [], [], [], []
    stack = []          # open nodes: [label, column, children (node ids), words]
    done = None
    for m in _TOKEN.finditer(text):
        tok, col = m.group(), m.start() + 1
        if done is not None:
            raise _error("unbalanced brackets: ')' with no open '('" if tok == ")" else
                         "text after the end of the tree (one tree a line)", file, line,
                         col, text)
        if tok == "(":
            nxt = _TOKEN.match(text, _skip(text, m.end()))
            if nxt is None or nxt.group() == ")":
                raise _error("empty tree '()'" if nxt else "unbalanced brackets: '(' "
                             "never closed", file, line, col, text)
            lab = nxt.group()
            # a class id in ASCII digits: str.isdecimal holds for '\u0663', int() reads 3
            if lab == "(" or (class_ids and not whole_number(lab)):
                what = "its label, a class id as in '(3 ...'" if class_ids else \
                    "its label, as in '(3 ...' or '(NP ...'"
                raise _error(f"missing label: a node must start with {what}, not {lab!r}",
                             file, line, col + 1, text)
            stack.append([int(lab) if whole_number(lab) else -1, col, [], [], True])
            continue
        if not stack:
            raise _error("unbalanced brackets: ')' with no open '('" if tok == ")" else
                         f"{tok!r} outside brackets: a tree starts with '('",
                         file, line, col, text)
        node = stack[-1]
        if tok != ")":
            if node[4]:                     # the label token itself
                node[4] = False
            else:
                node[3].append((tok, col))
            continue
        stack.pop()
        nid = _close(node, left, right, words, labels, file, line, col, text, binarize,
                     loader)
        if stack:
            stack[-1][2].append(nid)
        else:
            done = nid
    if stack:
        raise _error(f"unbalanced brackets: {len(stack)} '(' never closed (the node "
                     f"opened here)", file, line, stack[-1][1], text)
    if done is None:
        raise _error("no tree on this line", file, line, 1, text)
    return left, right, words, labels


def _skip(text, i):
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _close(node, left, right, words, labels, file, line, col, text, binarize, loader):
    lab, start, kids, toks, _ = node
    if toks and kids:
        raise _error("a node holds both words and subtrees", file, line, toks[0][1], text)
    if toks:       # SST has a few words with a space inside: (2 8 1\/2)
        return _emit(left, right, words, labels, -1, -1, " ".join(t for t, _ in toks), lab)
    if not kids:
        raise _error("empty tree: a label with no word and no subtree", file, line, start,
                     text)
    if len(kids) != 2 and not binarize:
        raise _error(f"a node with {len(kids)} child{'ren' * (len(kids) > 1)}: recursive "
                     f"nets read binary trees (write it as nested pairs, or read it with "
                     f"{loader}(..., binarize = true), which collapses unary nodes and "
                     f"right-branches wider ones)", file, line, start, text)
    if len(kids) == 1:              # collapse: the child's subtree under this label
        labels[kids[0]] = lab
        return kids[0]
    right_id = kids[-1]
    for k in reversed(kids[1:-1]):  # (L a b c) -> (L a (L b c))
        right_id = _emit(left, right, words, labels, k, right_id, None, lab)
    return _emit(left, right, words, labels, kids[0], right_id, None, lab)


def _emit(left, right, words, labels, l, r, word, lab):
    left.append(l), right.append(r), words.append(word), labels.append(lab)
    return len(left) - 1


def read_trees(path: Path, binarize: bool = False):
    """Every tree of a file: (offsets, left, right, words, labels, heights), arrays but
    the words (strings). Blank lines are skipped."""
    file = str(path)
    return tree_arrays(text_lines(read_text(path)), file, binarize)


def tree_arrays(lines, file: str, binarize: bool = False):
    """`read_trees` of lines of text (the n-th line is line n of `file`)."""
    off, L, R, W, Y, H = [0], [], [], [], [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        left, right, words, labels = parse_tree(line, file, n, binarize)
        L += left
        R += right
        W += words
        Y += labels
        H.extend(heights(left, right).tolist())
        off.append(len(L))
    if len(off) == 1:
        raise DataError("holds no tree", file=file)
    i64 = lambda x: np.asarray(x, dtype=np.int64)
    return i64(off), i64(L), i64(R), W, i64(Y), i64(H)


# ------------------------------------------------------------------------------ loader
@dataclass(frozen=True)
class TreeLoader:
    """`trees(path, vocab=N, binarize=false)` with its path resolved."""
    path: Path
    vocab_size: int | None = None
    binarize: bool = False
    kind = "trees"

    def read(self):
        return read_trees(self.path, self.binarize)

    def vocab(self, raw) -> Vocab:
        """Words by falling frequency (ties: first seen), `<unk>` first; at most
        `vocab_size` entries in all (default: every word of the file)."""
        words = [w for w in raw[3] if w is not None]
        counts = Counter(words)
        counts.pop(UNK, None)
        first = {}
        for i, w in enumerate(words):
            first.setdefault(w, i)
        ranked = sorted(counts, key=lambda w: (-counts[w], first[w]))
        keep = ranked if self.vocab_size is None else ranked[:self.vocab_size - 1]
        return Vocab("trees", (UNK, *keep))

    def encode(self, raw, vocab: Vocab) -> TreeSet:
        off, left, right, words, labels, heights = raw
        index, unk = vocab.index, vocab.index[UNK]
        ids = np.fromiter((-1 if w is None else index.get(w, unk) for w in words),
                          dtype=np.int64, count=len(words))
        return TreeSet(off, left, right, ids, labels, heights, str(self.path))

    def load(self, vocab: Vocab) -> TreeSet:
        return self.encode(self.read(), vocab)

    def describe(self) -> str:
        return f"trees({str(self.path)!r})"


def binarizes(data) -> bool:
    """Whether tree data is binarised: `data`, a loader call, is `trees(..., binarize =
    true)` or `treepairs`' (None: no data named). A tree given on the command line
    (`sample --input`, `render --tree`) is read the same way."""
    at = {"trees": 2, "treepairs": 3}.get(getattr(data, "name", None))
    if at is None:
        return False
    args = tuple(data.args)
    return bool(data.kwargs.get("binarize", args[at] if len(args) > at else False))


def trees(path: str, vocab: int | None = None, binarize: bool = False, *,
          base: str | Path | None = None) -> TreeLoader:
    """One bracketed tree a line, a label at every node, words at the leaves."""
    if vocab is not None and (isinstance(vocab, bool) or not isinstance(vocab, int)
                              or vocab < 2):
        raise UsageError(f"trees(): vocab must be an integer of at least 2, not {vocab!r}")
    if not isinstance(binarize, bool):
        raise UsageError(f"trees(): binarize must be true or false, not {binarize!r}")
    return TreeLoader(resolve_path(str(path), base), vocab, binarize)


def is_trees(call) -> bool:
    return getattr(call, "name", None) == "trees"


def make_tree_loader(call, base) -> TreeLoader:
    if not is_trees(call):
        raise UsageError(f"a tree model reads trees: data must be trees(\"file.txt\"), "
                         f"not {call}")
    from .config import BadValue, call_checked
    try:
        return call_checked(call, trees, skip=("base",), name="trees", base=base)
    except BadValue as e:                  # from `eval --data`; a spec's is checked
        raise UsageError(f"bad loader call: {e}") from None


# ----------------------------------------------------------------------------- binding
def tree_index(graph) -> str | None:
    return next((i for i, k in graph.indexes if k == "tree"), None)


def tree_vars(graph):
    """(x, y): what a trees loader feeds, by kind (no data read): the tree-indexed one-hot
    input (words) and the class target (labels), a label at every node (`y[n]`) or a
    tree classifier's one label a tree (`y`, the root's); else the DataError."""
    trees_and_sequences(graph, "trees")
    n = tree_index(graph)
    where = f"model '{graph.name}'"
    if n is None:
        fit = loaders_for(graph)
        shown = f"; the loaders that fit it: {listed(fit)}" if fit else ""
        raise DataError(f"a trees loader feeds a tree model; {where} declares no "
                        f"'tree n' index{shown}", file=graph.path)
    ins = [v for v in graph.inputs() if v.kind == "onehot" and v.index == n]
    tgs = [v for v in graph.targets() if v.kind == "class" and v.index == n] or \
        [v for v in graph.targets() if v.kind == "class" and v.index is None]
    for found, what in ((ins, f"one-hot input such as w[{n}] : onehot(V)"),
                        (tgs, f"class target such as y[{n}] : class(5) (a label at "
                              f"every node) or y : class(5) (the root's)")):
        if len(found) != 1:
            raise DataError(f"a trees loader binds one {what}; {where} declares "
                            f"{len(found) or 'none'}", file=graph.path)
    x, y = ins[0], tgs[0]
    for v in graph.inputs() + graph.targets():
        if v is not x and v is not y:
            raise DataError(f"a trees loader supplies only {x.name} and {y.name}; it "
                            f"cannot supply {v.role} '{v.name}' ({v.kind})", file=graph.path)
    return x, y


def bind_trees(graph, vocab_size: int, n_labels: int, data_file: str,
               given: dict | None = None, sets=()) -> Binding:
    """`tree_vars` bound: the sizes the words and labels give; a label of `sets` the
    declared class target cannot hold names its line."""
    given = given or {}
    x, y = tree_vars(graph)
    dims = dict(_size(graph, x, vocab_size, given, data_file))
    bound = {k: (v, f"bound by the distinct symbols in the data of {x.name}")
             for k, v in dims.items()}       # a size the labels share with the words
    _check_labels(graph, y, sets, given, bound)
    dims.update(_size(graph, y, n_labels, given, data_file, bound=bound))
    return Binding(x.name, y.name, False, dims, "trees", root_target=y.index is None)


def roots_scored(graph, binding: Binding) -> bool:
    """Are the labels scored at the roots alone? For a tree classifier (one label a tree)
    and for a loss that reads one place of a tree (`xent(o[root], y[root])`, a
    per-example `o`) or compares every node with the root's label (`y[root]`); else
    every node is scored against its own label."""
    loss = loss_on(graph, binding.target, LossFn.XENT)
    return binding.root_target or loss_unit(graph, binding) == "/tree" or (
        loss is not None and loss.target.shift.kind == ShiftKind.ROOT)


def loss_unit(graph, binding: Binding) -> str:
    """What the loss is counted in, as training counts its terms: "/tree" for a loss read
    at one place of a tree, "/node" for one summed over the nodes."""
    loss = loss_on(graph, binding.target, LossFn.XENT)
    one = loss is not None and (loss.at_one_place or graph.var(loss.output.var).index is None)
    return "/tree" if one else "/node"


def root_rows(graph, output: str, f: Forest) -> np.ndarray:
    """The rows of `output` a tree classifier's label is scored on, one a tree: the
    roots' rows of an output at every node (`loss xent(o[root], y)`), else (a
    per-example `o`) every row."""
    return np.asarray(f.roots) if graph.var(output).index is not None else \
        np.arange(f.batch)


def tree_feeds(binding: Binding, f: Forest, w, y) -> tuple[dict, dict]:
    """(inputs, targets) of a batch of trees: the words at the nodes, and the labels at
    the nodes, or the roots' for a target of one label a tree."""
    return {binding.input: w}, {binding.target: y[f.roots] if binding.root_target else y}


def _check_labels(graph, y, sets, given: dict, bound: dict):
    """A label the class target y cannot hold (0 to size - 1), at a node (or for a tree
    classifier, at a root): a DataError with the file, the line of the first tree
    holding one, and the label. `given`: --dim; `bound`: the sizes the words bound
    (size_source)."""
    size = declared_size(graph, y, {**given, **{k: v for k, (v, _) in bound.items()}})
    if size is not None:
        labels_fit(sets, size, size_source(graph, y, given, bound), y)


def labels_fit(sets, size: int, source: str, y) -> None:
    """`_check_labels` for a known size: `source` says where it comes from."""
    roots = y.index is None
    for ts in sets:
        if ts is None or len(ts.label) == 0 or ts.labels(roots).max() < size:
            continue
        for n, line in enumerate(text_lines(read_text(Path(ts.file))), 1):
            read = parse_tree(line, ts.file, n, True)[3] if line.strip() else []
            bad = [lab for lab in (read[-1:] if roots else read) if lab >= size]
            if bad:
                raise DataError(f"label {bad[0]} does not fit {source}: the labels of "
                                f"{y.name} are 0 to {size - 1}", file=ts.file, line=n)


@dataclass(frozen=True)
class TreeDataset:
    vocab: Vocab
    binding: Binding
    train: TreeSet
    valid: TreeSet | None
    train_file: str
    valid_file: str
    kind = "trees"


def split_trees(ts: TreeSet, fraction: float) -> tuple[TreeSet, TreeSet | None]:
    """The last `fraction` of the trees held out (at least one, when asked for)."""
    if fraction <= 0 or len(ts) < 2:
        return ts, None
    k = min(max(round(len(ts) * fraction), 1), len(ts) - 1)
    return subset(ts, np.arange(len(ts) - k)), subset(ts, np.arange(len(ts) - k, len(ts)))


def subset(ts: TreeSet, idx) -> TreeSet:
    f, w, y = ts.batch(idx)
    off = np.concatenate([[0], np.cumsum(ts.off[np.asarray(idx) + 1] - ts.off[idx])])
    local = lambda a: np.where(a >= 0, a - np.repeat(off[:-1], np.diff(off)), -1)
    return TreeSet(off, local(f.left), local(f.right), w, y, f.heights, ts.file)


def load_tree_dataset(graph, cfg, dims: dict | None = None,
                      vocab: Vocab | None = None) -> TreeDataset:
    """`cfg.data` (and `cfg.valid`) read as trees; `vocab` from a checkpoint, else built
    from the training trees."""
    loader = make_tree_loader(cfg.data, cfg.base)
    y = tree_vars(graph)[1]         # a model trees cannot feed is refused before reading
    roots = y.index is None         # one label a tree: the roots'
    raw = loader.read()
    vocab = vocab or loader.vocab(raw)
    train = loader.encode(raw, vocab)
    if hasattr(cfg.valid, "name"):
        vl = make_tree_loader(cfg.valid, cfg.valid_base)
        valid, vfile = vl.load(vocab), str(vl.path)
    else:
        train, valid = split_trees(train, cfg.valid)
        vfile = str(loader.path)
    labels = int(max(train.labels(roots).max(),
                     -1 if valid is None else valid.labels(roots).max())) + 1
    binding = bind_trees(graph, len(vocab), labels, str(loader.path), dims,
                         (train, valid))
    return TreeDataset(vocab, binding, train, valid, str(loader.path), vfile)


# --------------------------------------------------------------------------- evaluation
@dataclass
class TreeScore:
    """Counts over a set of trees; accuracies as Socher et al. (2013) report them. The
    loss is the training objective per term, as training counts them (per node, or per
    tree for a loss read at one place)."""
    loss_sum: float = 0.0
    terms: int = 0
    nodes: int = 0
    roots: int = 0
    correct: int = 0             # fine-grained, all nodes
    root_correct: int = 0        # fine-grained, roots
    bin_nodes: int = 0           # nodes whose label is not neutral
    bin_correct: int = 0
    bin_roots: int = 0
    bin_root_correct: int = 0
    per_tree: list | None = None  # with a list: each batch's per-tree counts (PER_TREE)
    root_only: bool = False      # scored at the roots alone (roots_scored)
    unit: str = "/node"          # the loss's terms (loss_unit)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.terms, 1)

    def as_dict(self) -> dict:
        """The scores; a tree classifier's (`root_only`) have no all-node figures: its
        only labels are the roots' (None, as `nodes`)."""
        r = lambda a, b: a / b if b and not self.root_only else None
        return {"loss": self.loss, "nodes": None if self.root_only else self.nodes,
                "trees": self.roots,
                "fine_all": r(self.correct, self.nodes),
                "fine_root": self.root_correct / self.roots if self.roots else None,
                "binary_all": r(self.bin_correct, self.bin_nodes),
                "binary_root": self.bin_root_correct / self.bin_roots
                if self.bin_roots else None}

    def add(self, logits, labels, roots, loss_sum: float, terms: int | None = None) -> None:
        """One batch: logits [N, K], labels [N], the roots' rows (each tree's last row:
        a forest is its trees' nodes one tree after another, post-order), the objective
        and its count of terms (default: a term a label)."""
        pred = logits.argmax(axis=-1)
        hit = pred == labels
        if self.per_tree is not None:
            self.per_tree.append(_per_tree(logits, labels, pred, hit, np.asarray(roots)))
        self.loss_sum += loss_sum
        self.terms += len(labels) if terms is None else terms
        self.nodes += len(labels)
        self.roots += len(roots)
        self.correct += int(hit.sum())
        self.root_correct += int(hit[roots].sum())
        if logits.shape[-1] != 5:
            return
        # binary: labels 0-1 negative, 3-4 positive, 2 (neutral) dropped; the prediction
        # is the argmax over {0, 1} against {3, 4}
        keep = labels != 2
        pos = logits[:, 3:5].max(axis=-1) > logits[:, 0:2].max(axis=-1)
        bhit = (pos == (labels > 2)) & keep
        self.bin_nodes += int(keep.sum())
        self.bin_correct += int(bhit.sum())
        self.bin_roots += int(keep[roots].sum())
        self.bin_root_correct += int(bhit[roots].sum())


PER_TREE = ("nodes", "correct", "root_label", "root_pred", "root_correct", "nll")


def _per_tree(logits, labels, pred, hit, roots) -> np.ndarray:
    """[trees, len(PER_TREE)] of one batch: its nodes, the nodes right, the root's label,
    prediction and hit, and the tree's negative log-likelihood of its labels (nats)."""
    starts = np.concatenate([[0], roots[:-1] + 1])
    nll = -log_softmax(logits.astype(np.float64))[np.arange(len(labels)), labels]
    return np.stack([np.diff(np.append(starts, len(labels))),
                     np.add.reduceat(hit.astype(np.int64), starts),
                     labels[roots], pred[roots], hit[roots], np.add.reduceat(nll, starts)],
                    axis=1)


def score_trees(model, graph, binding: Binding, ts: TreeSet, batch: int = 64,
                per_tree: bool = False) -> TreeScore:
    """One pass over `ts` in evaluation mode (no gradients, dropout off); with
    `per_tree`, `.per_tree` keeps each tree's counts (PER_TREE)."""
    out = xent_output(graph, binding.target)
    if out is None:
        raise UsageError(f"accuracy needs an xent loss on {binding.target} (such as "
                         f"xent(o[n], {binding.target}[n])); the model has none")
    roots = roots_scored(graph, binding)
    sc = TreeScore(per_tree=[] if per_tree else None, root_only=roots,
                   unit=loss_unit(graph, binding))
    for i in range(0, len(ts), batch):
        f, w, y = ts.batch(np.arange(i, min(i + batch, len(ts))))
        ins, tgs = tree_feeds(binding, f, w, y)
        res = model.run(ins, tgs, train=False, grads=False, forest=f)
        s, n = token_terms(graph, res, binding.target)     # as training counts them
        if roots:                    # one label a tree: its logits, each a root
            logits = np.asarray(res.values[out])[root_rows(graph, out, f)]
            labels = tgs[binding.target] if binding.root_target else y[f.roots]
            sc.add(logits, labels, np.arange(f.batch), s, n)
        else:
            sc.add(np.asarray(res.values[out]), y, f.roots, s, n)
    return sc


def summary(s: TreeScore) -> str:
    d = s.as_dict()
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"
    if s.root_only:             # the roots are the only labels scored
        return (f"loss {d['loss']:.4f}{s.unit}  fine-grained root {pct(d['fine_root'])}  "
                f"binary root {pct(d['binary_root'])}")
    return (f"loss {d['loss']:.4f}{s.unit}  fine-grained all {pct(d['fine_all'])} root "
            f"{pct(d['fine_root'])}  binary all {pct(d['binary_all'])} root "
            f"{pct(d['binary_root'])}")


def write_per_tree(path: str, parts: list) -> None:
    """A CSV, a row per tree in the data's order: `tree` (1-based) and PER_TREE."""
    rows = np.concatenate(parts) if parts else np.zeros((0, len(PER_TREE)))
    with open(path, "w", newline="") as f:
        f.write(",".join(("tree",) + PER_TREE) + "\n")
        f.writelines(f"{i}," + ",".join(str(int(v)) for v in r[:-1]) +
                     f",{float(r[-1])!r}\n"        # nll: the shortest repr that is exact
                     for i, r in enumerate(rows, 1))


# ---------------------------------------------------------------------- sparse updates
def embedding_params(graph, input_name: str) -> list[str]:
    """Parameters used only as `E @ w[n]` lookups of the input: a batch touches only the
    columns of its words, so the optimiser updates only those (sparse updates)."""
    from ..graph.folded import Apply, ParamRef, Ref, walk
    from ..ops import Op
    lookups, other = Counter(), Counter()
    for v in graph.vars:
        exprs = [c.expr for c in v.cases] + ([v.init] if v.init is not None else [])
        for e in exprs:
            for node in walk(e):
                if isinstance(node, ParamRef):
                    other[node.name] += 1
                if isinstance(node, Apply) and node.op is Op.GATHER \
                        and isinstance(node.args[0], ParamRef) \
                        and isinstance(node.args[1], Ref) and node.args[1].var == input_name:
                    lookups[node.args[0].name] += 1
    return [p for p in lookups if lookups[p] == other[p]]


def touched(names, w) -> dict:
    """{param: (axis, columns)}: the words of this batch, once each."""
    if not names:
        return {}
    cols = np.unique(w[w >= 0])
    return {p: (1, cols) for p in names}


# ------------------------------------------------------------------------------ training
@dataclass
class TreeBatch:
    """One update's worth of trees, ready for `model.run`: the forest, its feeds, and the
    embedding columns its words touch (sparse updates)."""
    inputs: dict
    targets: dict
    forest: Forest
    tokens: int                # nodes (for nodes per second)
    rows: dict                 # {param: (axis, columns)}
    carry = False              # no state carries between batches of trees
    lengths = None


@dataclass(frozen=True)
class TreeBatches:
    """Batches of whole trees, shuffled each epoch by (seed, epoch): a pure function of
    (seed, epoch), so a resumed run sees the same batches."""
    trees: TreeSet
    batch_size: int
    seed: int
    binding: Binding
    sparse: tuple = ()         # parameters updated sparsely (embedding_params)

    def __len__(self) -> int:
        return math.ceil(len(self.trees) / self.batch_size)

    @property
    def tokens(self) -> int:
        return self.trees.nodes

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.trees))

    def batches(self, start: int = 0, epoch: int = 0):
        """(index, TreeBatch) from batch `start` of `epoch` on."""
        order, B = self.order(epoch), self.batch_size
        for i in range(start, len(self)):
            yield i, self.batch(order[i * B:(i + 1) * B])

    def batch(self, idx) -> TreeBatch:
        f, w, y = self.trees.batch(idx)
        ins, tgs = tree_feeds(self.binding, f, w, y)
        return TreeBatch(ins, tgs, f, len(y), touched(self.sparse, w))


class TreeKind(Selects):
    """The training loop's pieces for trees (loop.py, `SequenceKind` for the others):
    batches of trees with sparse updates of embeddings, validation reported as Socher et
    al. (2013) report it, and best.npz kept by the validation root accuracy, or by
    `select = all` (accuracy at all nodes) or `select = loss` (the lowest loss)."""
    unit = "/node"
    resume_keys = ("batch",)
    counts = "trees"
    selects: ClassVar[dict] = {"root": ("valid_fine_root", True),
                               "all": ("valid_fine_all", True),
                               "loss": ("valid_loss", False)}
    default_select = "root"
    what = "a tree model"

    def __init__(self, graph, data: TreeDataset, cfg):
        self.graph, self.data, self.cfg = graph, data, cfg
        self.unit = loss_unit(graph, data.binding)            # a term a tree, or a node
        if roots_scored(graph, data.binding) and getattr(cfg, "select", None) == "all":
            raise UsageError("train: select = all scores every node; a tree classifier's "
                             "labels are its roots': select = root (the default) or loss")
        self.choose(cfg)
        self.sparse = tuple(embedding_params(graph, data.binding.input))

    def batches(self) -> TreeBatches:
        return TreeBatches(self.data.train, self.cfg.batch, self.cfg.seed,
                           self.data.binding, self.sparse)

    def valid_batches(self) -> TreeSet | None:
        return self.data.valid

    def run(self, model, batch: TreeBatch, **kw):
        return model.run(batch.inputs, batch.targets, forest=batch.forest, **kw)

    def rows(self, batch: TreeBatch) -> dict:
        return batch.rows

    def score(self, model, valid: TreeSet) -> TreeScore:
        return score_trees(model, self.graph, self.data.binding, valid,
                           max(self.cfg.batch, 64))

    def describe(self, v: TreeScore) -> str:
        return f"; valid {summary(v)}"

    def read(self, v: TreeScore, select: str) -> float:
        return v.loss if select == "loss" else v.as_dict()[f"fine_{select}"]


# ------------------------------------------------------------------------ evaluation data
def eval_trees(t, spec_path: str, data: str | None):
    """The trees `seqgraph eval` scores a trained tree model on, and their loader:
    `--data` (a trees(...) call, or a path read with the training loader's options),
    else the train block's validation trees; their labels checked against the model."""
    from .session import trained_config
    cfg = trained_config(t, spec_path)
    if data is None:
        missing = spec_file_errors(t.spec.graph, cfg)
        if missing:             # the first, at its place in the spec
            raise missing[0]
        if hasattr(cfg.valid, "name"):
            loader = make_tree_loader(cfg.valid, cfg.valid_base)
            ts = loader.load(t.vocab)
        else:
            loader = make_tree_loader(cfg.data, cfg.base)
            _, ts = split_trees(loader.load(t.vocab), cfg.valid)
            if ts is None:
                raise UsageError("the train block holds out no validation trees: pass --data")
    else:                        # a call, or a path read with the training loader's options
        loader = make_tree_loader(data_call(data, cfg), Path.cwd())
        ts = loader.load(t.vocab)
    y = t.spec.graph.var(t.binding.target)
    labels_fit([ts], t.model.sizes[y.name], f"the trained model's {y.name} "
               f"({t.model.sizes[y.name]} labels)", y)
    return ts, loader
