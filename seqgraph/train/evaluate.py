"""Scoring a trained model: loss per token, perplexity, accuracy, and what each kind of
data is judged by.

A language model's stream is read window by window with the state carried across
windows, exactly as in training, but without gradients and with dropout off. Examples
(`pairs`, `labeled`, `tagged`, `series`, `treepairs`) are scored batch by batch with
padding masked:

- a class target: accuracy of the argmax (for `pairs`, teacher-forced: the token accuracy);
- `pairs` and `treepairs`: greedy decoding (`greedy_decode`: one step at a time, the
  argmax fed back) gives the exact-match rate, the edit-distance error rate over target
  tokens (phoneme or word error rate, Levenshtein distance / reference length) and the
  sequence error rate (the share of outputs with any error: the "word error rate" of
  grapheme-to-phoneme papers);
- `series`: the mean squared error of the output paired with the target by an `mse` loss,
  beside the persistence forecast's (the last known value repeated);
- baselines: the majority class (`labeled`), the most frequent tag of each word
  (`tagged`), persistence (`series`).
"""
from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..graph.folded import ENDS, LossFn, ShiftKind
from ..ops import log_softmax
from .batches import run_batch
from .data import feeds


@dataclass
class Score:
    loss_sum: float        # summed over every scored token (all loss lines)
    tokens: int            # tokens of the bound target that carry a loss
    correct: int | None    # argmax hits (None when no xent loss reads the target)
    extra: dict = field(default_factory=dict)   # kind-specific metrics (mse, exact_match)
    nll: bool = True       # every loss a negative log-likelihood (xent, bce): nats

    @property
    def loss(self) -> float:
        """Loss per token (in nats when `nll`)."""
        return self.loss_sum / max(self.tokens, 1)

    @property
    def perplexity(self) -> float | None:
        """exp(loss) of a likelihood loss (inf past float64's range, where it was shown
        as e^700); None for another (mse: no perplexity)."""
        if not self.nll:
            return None
        return math.exp(self.loss) if self.loss < 709.0 else math.inf

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else self.correct / max(self.tokens, 1)

    def as_dict(self) -> dict:
        return {"loss": self.loss, "perplexity": self.perplexity,
                "accuracy": self.accuracy, "tokens": self.tokens, **self.extra}


def shown(perplexity: float, digits: int = 2) -> str:
    """A perplexity as a line shows it: fixed-point, or in powers of ten once it is
    large (a diverged run's is about 1e304, 300 digits in fixed point)."""
    return f"{perplexity:.{digits}f}" if perplexity < 1e6 else f"{perplexity:.3e}"


def likelihood(graph) -> bool:
    """Is the loss a negative log-likelihood per token (xent, bce: one loss line, weight
    1), so that it is in nats and exp(loss) a perplexity? Not with an mse loss (half a
    squared error), nor with several lines or a weight: their sum is an objective that
    counts some tokens twice or scaled."""
    return len(graph.losses) == 1 and graph.losses[0].weight == 1 and \
        graph.losses[0].fn in (LossFn.XENT, LossFn.BCE)


def loss_on(graph, target: str, fn: LossFn):
    """The first `fn` loss line on `target`, or None."""
    return next((loss for loss in graph.losses if loss.fn == fn and loss.target.var == target),
                None)


def xent_output(graph, target: str) -> str | None:
    """The logits variable of the first `xent` loss on `target` (what accuracy reads)."""
    loss = loss_on(graph, target, LossFn.XENT)
    return None if loss is None else loss.output.var


def at_loss(graph, loss, o, y=None, lengths=None):
    """(outputs, targets) where `loss` compares them: at every step as the arrays hold
    them, or at one place an example (`o[end]`: each example's last real step, `o[1]`:
    its first), the target read there too unless it is per example (no `y`: None)."""
    def place(a, shift, var):
        index = graph.var(var).index
        if shift.kind not in ENDS or index is None:
            return a
        if shift.kind == ShiftKind.FIRST:
            return a[:, 0]
        n = (lengths or {}).get(index)
        last = np.asarray(n) - 1 if n is not None and np.ndim(n) else \
            np.full(len(a), a.shape[1] - 1)
        return a[np.arange(len(a)), last]
    return place(o, loss.output.shift, loss.output.var), \
        None if y is None else place(y, loss.target.shift, loss.target.var)


def token_terms(graph, res, target: str) -> tuple[float, int]:
    """(loss summed over tokens, tokens) of a result: the sums of all loss lines, over
    the tokens of the target the data binds (one count per token, however many lines)."""
    total, count = 0.0, 0
    for li, (s, n) in res.terms.items():
        loss = graph.losses[li]
        total += loss.weight * s
        if loss.target.var == target and not count:
            count = n
    return total, count


def iter_batches(batches, binding):
    """(index, Batch) of any batch source: example or stream batches, or an object with
    `windows()` (Streams and the like)."""
    if hasattr(batches, "batches"):
        return batches.batches()
    from .loop import stream_batch
    return ((i, stream_batch(binding, x, y)) for i, x, y in batches.windows())


def _mask(lengths, index, shape) -> np.ndarray:
    """[B, T] True at each example's real steps."""
    if not lengths or index not in lengths:
        return np.ones(shape[:2], dtype=bool)
    return np.arange(shape[1])[None, :] < np.asarray(lengths[index])[:, None]


class PerExample:
    """Each example's scores (`eval --per-example`), a CSV row each in the data's order:
    `example` (1-based), `line` (in the data file), and for a class target the `tokens`
    scored, the tokens right (`correct`) and their negative log-likelihood (`nll`, nats),
    with one class per example its `label` and `pred` too (by name, `names`, as sample
    prints them: `pos`, not 1); for a real-valued target the
    `values` scored and their summed squared error (`se`). For pairs, greedy decoding
    adds `exact` (1 when the decoded sequence is the reference), `edits` (their edit
    distance), the decoded text (`hypothesis`) and the reference's (`reference`)."""

    def __init__(self, lines, names=None):
        self.lines, self.rows, self.names = lines, {}, names

    def add_classes(self, rows, y, logits) -> None:
        x = np.asarray(logits, dtype=np.float64)
        ok = y >= 0
        lp = np.take_along_axis(log_softmax(x), np.maximum(y, 0)[..., None], -1)[..., 0]
        nll = np.where(ok, -lp, 0.0)
        pred = x.argmax(axis=-1)
        for i, r in enumerate(rows):
            row = {"tokens": int(ok[i].sum()), "correct": int(((pred == y) & ok)[i].sum()),
                   "nll": float(nll[i].sum())}
            if y.ndim == 1:
                label, guess = int(y[i]), int(pred[i])
                row.update(label=self._name(label), pred=self._name(guess))
            self.rows[int(r)] = row

    def _name(self, k: int):
        return self.names[k] if self.names is not None and k < len(self.names) else k

    def add_values(self, rows, y, o, mask) -> None:
        sq = ((o - y) ** 2) * mask
        n = np.broadcast_to(mask, y.shape)
        for i, r in enumerate(rows):
            self.rows[int(r)] = {"values": int(n[i].sum()), "se": float(sq[i].sum())}

    def add_decoded(self, hyps, refs, decode) -> None:
        """Greedy decoding: each example's hypothesis against its reference (`</s>` not
        counted), `decode` turning ids into text."""
        for i, (h, r) in enumerate(zip(hyps, refs, strict=True)):
            self.rows.setdefault(i, {}).update(
                exact=int(h == r), edits=edit_distance(h, r), hypothesis=decode(h),
                reference=decode(r))

    def write(self, path) -> None:
        keys = list(next(iter(self.rows.values()), {}))
        show = lambda v: repr(float(v)) if isinstance(v, float) else v   # shortest exact
        with open(path, "w", newline="") as f:
            w = csv.writer(f)                 # a hypothesis may hold commas or quotes
            w.writerow(["example", "line", *keys])
            w.writerows([i + 1, self.lines[i], *map(show, self.rows[i].values())]
                        for i in sorted(self.rows))


def score(model, graph, binding, batches, rng=None, per_example=None) -> Score:
    """One pass over `batches` in evaluation mode (each example's scores into
    `per_example`, a PerExample, when given)."""
    out, reg = loss_on(graph, binding.target, LossFn.XENT), \
        loss_on(graph, binding.target, LossFn.MSE)
    series = getattr(binding, "kind", "stream") == "series" and hasattr(batches, "examples")
    index = graph.var(binding.target).index
    carry, loss_sum, tokens, correct = None, 0.0, 0, 0
    se, se_persist, n_values = 0.0, 0.0, 0
    for _, b in iter_batches(batches, binding):
        res = run_batch(model, b, carry=carry if b.carry else None, train=False,
                        grads=False, rng=rng)
        carry = res.carry if b.carry else None
        s, n = token_terms(graph, res, binding.target)
        loss_sum, tokens = loss_sum + s, tokens + n
        target = np.asarray(b.targets[binding.target])
        if out is not None:
            o, y = at_loss(graph, out, np.asarray(res.values[out.output.var]), target,
                           b.lengths)
            pred = o.argmax(axis=-1)
            correct += int(((pred == y) & (y >= 0)).sum())
            if per_example is not None:
                per_example.add_classes(b.rows, y, o)
        if reg is not None:
            o, y = at_loss(graph, reg, np.asarray(res.values[reg.output.var], dtype=np.float64),
                           target, b.lengths)
            m = _mask(b.lengths, index, y.shape)[..., None] if y.ndim == 3 else True
            se += float((((o - y) ** 2) * m).sum())
            n_values += int(np.broadcast_to(m, y.shape).sum())
            if per_example is not None and out is None:
                per_example.add_values(b.rows, y, o, m)
            if series:
                p = at_loss(graph, reg, batches.examples.extra_batch("persistence", b.rows),
                            target, b.lengths)[0]
                se_persist += float((((p - y) ** 2) * m).sum())
    extra = {}
    if reg is not None and n_values:
        extra["mse"] = se / n_values
        if series:
            extra["persistence_mse"] = se_persist / n_values
    return Score(loss_sum, tokens, correct if out is not None else None, extra,
                 likelihood(graph))


# ------------------------------------------------------------------ greedy decoding
def greedy_decode(model, graph, binding, inputs: dict, max_len: int, eos: int | None,
                  lengths: dict | None = None, classes: int | None = None,
                  forest=None) -> list[list[int]]:
    """The argmax output sequence of each example, one step at a time: the state of the
    target's index is carried from step to step and the chosen token is fed back as the
    previous target (`F @ y[u-1]` reads it; `<s>` before the first step). Inputs on other
    indexes (the encoder's source) are given whole, with their `lengths` when padded;
    an input on the target's own index is given one step at a time. Stops at `eos`
    (not included in the result) or after `max_len` steps. Only the first `classes` ids
    name a token (a size above the vocabulary: the others are never chosen), and `<s>`
    (the id fed back before the first step) is never chosen, as `sample` never does. A
    tree source (`treepairs`) is given whole with its `forest`, its words an input by
    node."""
    y = binding.target
    u = graph.var(y).index
    out_var = xent_output(graph, y)
    on_u = {v.name for v in graph.vars if v.index == u}
    B = forest.batch if forest is not None else \
        len(next(iter(inputs.values()))) if inputs else 1
    fixed = {k: v for k, v in inputs.items() if k not in on_u}
    stepped = {k: np.asarray(v) for k, v in inputs.items() if k in on_u}
    if stepped:
        max_len = min(max_len, min(a.shape[1] for a in stepped.values()))
    kw = {"lengths": {i: n for i, n in (lengths or {}).items() if i != u}} if lengths else {}
    if forest is not None:
        kw["forest"] = forest
    delay = getattr(model, "carried", {}).get(y, 1)
    start = getattr(model, "start_ids", {}).get(y)
    banned = start if start is not None and start != eos else None
    carry, result, done = None, [[] for _ in range(B)], np.zeros(B, dtype=bool)
    for k in range(max_len):
        ins = {**fixed, **{n: a[:, k:k + 1] for n, a in stepped.items()}}
        res = model.run(ins, {y: np.full((B, 1), -1, dtype=np.int64)}, carry=carry,
                        train=False, **kw)
        logits = np.array(res.values[out_var][:, -1, :classes], dtype=np.float64)
        if banned is not None and banned < logits.shape[1]:
            logits[:, banned] = -np.inf
        tok = logits.argmax(axis=-1)
        carry = {n: c for n, c in res.carry.items() if n in on_u}
        if y in model.carried:
            old = list((carry or {}).get(y, []))
            carry[y] = [tok.astype(np.int64)] + old[:delay - 1]
        for i in np.flatnonzero(~done):
            if eos is not None and tok[i] == eos:
                done[i] = True
            else:
                result[i].append(int(tok[i]))
        if done.all():
            break
    return result


def edit_distance(a, b) -> int:
    """Levenshtein distance: insertions, deletions and substitutions, each costing 1."""
    a, b = list(a), list(b)
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, z in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != z)))
        prev = cur
    return prev[-1]


def decode_metrics(model, graph, binding, examples, vocab, batch: int = 64,
                   max_len: int | None = None) -> dict:
    """Greedy decoding of every `pairs` or `treepairs` example against its reference:
    exact_match, error_rate (edit distance / reference tokens, `</s>` not counted) and
    sequence_error_rate (1 - exact_match). Examples are decoded in groups of equal source
    length, so no source padding is needed (trees of `treepairs` in any groups: a batch
    of trees is one forest, unpadded)."""
    x, y = binding.input, binding.target
    eos = vocab.target.index.get("</s>") if vocab.target is not None else None
    src, ref = examples.fields[x], examples.fields[y]
    refs = [[int(t) for t in r if t != eos] for r in ref]
    longest = max((len(r) for r in ref), default=1)
    max_len = max_len or 2 * longest + 5
    trees = examples.ids[x] == "tree"
    groups = defaultdict(list)
    for i, s in enumerate(src):
        groups[0 if trees else len(s)].append(i)
    hyps = [None] * len(src)
    for L in sorted(groups):
        rows = groups[L]
        for j in range(0, len(rows), batch):
            chunk = rows[j:j + batch]
            kw = {}
            if trees:
                from .trees import forest_of
                kw["forest"], xs = forest_of([src[i] for i in chunk])
            else:
                xs = np.stack([np.asarray(src[i]) for i in chunk])
            for i, h in zip(chunk, greedy_decode(model, graph, binding, {x: xs}, max_len,
                                                 eos, classes=len(vocab.target or vocab),
                                                 **kw), strict=True):
                hyps[i] = h
    errors = sum(edit_distance(h, r) for h, r in zip(hyps, refs, strict=True))
    n_ref = sum(len(r) for r in refs)
    exact = sum(h == r for h, r in zip(hyps, refs, strict=True))
    n = max(len(refs), 1)
    return {"exact_match": exact / n, "error_rate": errors / max(n_ref, 1),
            "sequence_error_rate": 1 - exact / n, "decoded": len(refs),
            "hypotheses": hyps, "references": refs}


# --------------------------------------------------------------------------- baselines
def baselines(binding, train, data, graph=None) -> dict:
    """What a model must beat, from the training examples `train`, on `data`:
    majority_accuracy (labeled), most_frequent_tag_accuracy (tagged, on the tokens the
    model is scored on: each sentence's last or first for a loss read there)."""
    x, y = binding.input, binding.target
    loss = loss_on(graph, y, LossFn.XENT) if graph is not None else None
    place = {ShiftKind.END: slice(-1, None), ShiftKind.FIRST: slice(0, 1)}.get(
        loss.output.shift.kind if loss is not None else ShiftKind.REL, slice(None))
    kind = getattr(binding, "kind", "stream")
    if kind == "labeled":
        top = Counter(int(l) for l in train.fields[y]).most_common(1)[0][0]
        labels = [int(l) for l in data.fields[y]]
        return {"majority_class": top,
                "majority_accuracy": sum(l == top for l in labels) / max(len(labels), 1)}
    if kind == "tagged":
        per_word, overall = defaultdict(Counter), Counter()
        for ws, ts in zip(train.fields[x], train.fields[y], strict=True):
            for w, t in zip(ws, ts, strict=True):
                per_word[int(w)][int(t)] += 1
                overall[int(t)] += 1
        default = overall.most_common(1)[0][0]
        best = {w: c.most_common(1)[0][0] for w, c in per_word.items()}
        hit = total = 0
        for ws, ts in zip(data.fields[x], data.fields[y], strict=True):
            for w, t in list(zip(ws, ts, strict=True))[place]:
                hit += best.get(int(w), default) == int(t)
                total += 1
        return {"most_frequent_tag_accuracy": hit / max(total, 1)}
    return {}


__all__ = ["Score", "baselines", "decode_metrics", "edit_distance", "feeds", "greedy_decode",
           "score", "token_terms", "xent_output"]
