"""Generation: sampling, greedy decoding and beam search, one step at a time.

**What is generated.** The class target y over its index u that an xent loss pairs with
logits o (`generated_targets` in graph/generate_check.py, which also refuses a model whose
o[u] reads the future over u: an advance, `s[end]`, or a reduction such as `sum over u`,
which a window of one step would compute over that one step, silently wrong). Every model
kind runs the same loop: the generated index is run as a window of one step (y given as
[rows, 1] of -1, so no loss), and the model's `carry` holds its state from one step to
the next (the last k values of every variable read with a delay of up to k). A fed-back
target (`R @ y[u-1]`) reads its carry, so the chosen token is written there: y's carry
is the model's own previous output, and before the first step the start token `<s>`
(the binding's `start_ids`).

**What is given** (the `source`: everything the model reads that is not generated):
- a language model (`chars`/`words` data, `lm_input`): the input on u is the previous
  token; a prime is read once, in one window, and its carry starts the sampling;
- a conditional model (x[t], y[t] on one index, Fig. 10.10): x[u] is the given input at
  step u; the output has the input's length at most;
- a per-example input (`c : vec(D)`, one_to_many, Fig. 10.9): the same value every step;
- a source sequence on an index of its own (seq2seq, x[t] and y[u], Fig. 10.12). The
  per-example variables that join the two indexes (`c = tanh(Vc @ h[end])`, `init s`)
  are not carried: each step recomputes them, so each step must run the encoder. Two ways:
  * *incremental*, when every reference over the source index looks back (delays, the
    same step, `end`): the source but its last token is run once, and each step runs the
    last token alone with that run's carry (the encoder's state before the last token):
    one encoder step, `c`, `init s` and one decoder step per generated token;
  * *whole*, when the encoder reads ahead (`g[t+1]`, `h[1]`: a bidirectional encoder)
    or the decoder reads every source step (attention: `sum over t`, `e[u, t]`):
    each step runs the whole encoder again, O(T_x) work per generated token, O(T_x T_y)
    per output. Both ways give the same numbers (tests/test_generate.py).
  Cost in the interpreter: one `Model.run` per generated token, whatever the number of
  hypotheses or sources, since they are the rows of the batch: sources of different
  lengths are padded, with per-example `lengths` on the source index (whole runs only).
- a tree (a tree encoder, `treepairs` data, `c = h[root]`): run whole each step, as a
  source that reads ahead; the hypotheses' trees are one forest, each row its own tree.

**Beam search** keeps the K best hypotheses as the K rows of the batch. Each step scores
every extension of every live hypothesis by its summed log-probability; of the 2K best,
those ending in `</s>` (among the first K) are finished, and the first K others live on:
their rows of the carry are gathered from their parents (`advance`). Finished hypotheses
are ranked by the length-normalised score `score / len ** alpha` (len counts `</s>`; Wu
et al. 2016, without their +5 smoothing), `alpha` = 0.6 by default: 0 ranks by raw
log-probability, which favours short outputs, 1 by the mean log-probability per token.
The search of a source ends when no live hypothesis can still beat the K-th finished
one: a log-probability only falls as tokens are added, so a live score s < 0 ends, at
most L = `length` tokens on (or the input's length for a conditional model), no better
than s / L ** alpha (s itself at alpha 0, where the bound is exact; ranks are compared in
logs, `Hyp.rank`); or at `length` steps, the live ones then returned unfinished. (Stopping
as soon as K have finished, as some toolkits do, let an `</s>` ranked among the first K
of a step's few candidates end the search below greedy decoding's output.) K = 1 is
greedy decoding. `beam_many` runs the beams of several sources together, K rows each.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import ops
from ..errors import UsageError
from ..graph.folded import Apply, ShiftKind, walk
from ..graph.generate_check import can_generate, generated_targets
from .loaders import EOS


# ----------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class Plan:
    """What generation feeds where, read from the graph."""
    target: str                  # y, generated
    out: str                     # o, the logits its xent loss reads
    index: str                   # u, the generated index
    lm_input: str | None         # the input on u fed the previous token (language models)
    step_inputs: tuple           # other inputs on u: given, one value a step (conditional)
    fixed_inputs: tuple          # per-example inputs (c : vec(D))
    source_inputs: tuple         # inputs on other sequence indexes (the encoder's)
    source_indexes: tuple
    tree_inputs: tuple           # inputs over a tree index (a tree encoder's words)
    gen_vars: frozenset          # carried variables over u
    fed: bool                    # y is read with a delay (output feedback)
    incremental: bool            # the source indexes are read by delays only


def _reads_ahead(graph, indexes) -> bool:
    """True when some reference over one of `indexes` reads a later or the first step, or
    some value reads every step of one (a reduction `sum over t`, a variable over two
    indexes such as attention's scores e[u, t]): then the source is run whole."""
    g = graph.nx()
    for src, _, s in g.edges(data="shift"):
        if graph.var(src).index in indexes and (
                (s.kind == ShiftKind.REL and s.k > 0) or s.kind == ShiftKind.FIRST):
            return True
    return any(_reads_every_step(v, indexes) for v in graph.vars)


def _reads_every_step(v, indexes) -> bool:
    """v is over two indexes, one of them in `indexes`, or reduces over one of them."""
    if v.inner in indexes or (v.inner is not None and v.index in indexes):
        return True
    return any(isinstance(e, Apply) and e.kw.get("over") in indexes
               for x in v.exprs for e in walk(x))


def make_plan(model, target: str | None = None, lm_input: str | None = None) -> Plan:
    """The plan of `model`: refuses (UsageError) a model that cannot be generated."""
    graph = model.graph
    found = generated_targets(graph)
    if target is None and len(found) > 1:
        raise UsageError(f"{graph.path}: several targets could be generated "
                         f"({', '.join(y for y, _ in found)})")
    ok, why = can_generate(graph, target or (found[0][0] if found else None))
    if not ok:
        raise UsageError(f"{graph.path}: {why}")
    y, o = next((y, o) for y, o in found if target in (None, y))
    u = graph.var(y).index
    inputs = graph.inputs()
    on_u = [v.name for v in inputs if v.index == u and v.name != lm_input]
    fixed = [v.name for v in inputs if v.index is None]
    seq = {i for i, k in graph.indexes if k == "seq"}
    source = [v for v in inputs if v.index in seq and v.index != u]
    trees = tuple(v.name for v in inputs if v.index is not None and v.index not in seq)
    src_idx = tuple(dict.fromkeys(v.index for v in source))
    other = tuple(i for i in seq if i != u)
    return Plan(y, o, u, lm_input, tuple(on_u), tuple(fixed), tuple(v.name for v in source),
                src_idx, trees, frozenset(n for n in model.carried if graph.var(n).index == u),
                y in model.carried, not _reads_ahead(graph, set(other)))


# ------------------------------------------------------------------------- choosing
def log_softmax(logits: np.ndarray) -> np.ndarray:
    """ops.log_softmax in float64: scores of long outputs are sums of many of them."""
    return ops.log_softmax(np.asarray(logits, dtype=np.float64))


def choose(logits: np.ndarray, temperature: float, greedy: bool, rng,
           banned: int | None = None, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """One token per row: the argmax, or a draw from softmax(logits / temperature);
    never `banned`. With `top_k` the draw is among the k likeliest tokens only (Fan et
    al. 2018), with `top_p` < 1 among the fewest likeliest whose probabilities add up
    to p (nucleus sampling, Holtzman et al. 2020); both after the temperature, as
    Hugging Face's generate applies them, the rest renormalised."""
    logp = log_softmax(logits)
    if banned is not None:
        logp[:, banned] = -np.inf
    if greedy:
        return logp.argmax(axis=-1)
    logp = log_softmax(logp / temperature)
    if top_k or top_p < 1.0:
        logp = log_softmax(_truncate(logp, top_k, top_p))
    p = np.exp(logp)
    u = rng.random((p.shape[0], 1))
    return np.minimum((p.cumsum(axis=1) < u).sum(axis=1), p.shape[1] - 1)


def _truncate(logp: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """`logp` with -inf outside each row's k likeliest tokens (ties at the k-th kept),
    then outside the nucleus of what is left, renormalised: the likeliest tokens, in
    order, up to and including the one where their probabilities first reach `top_p`
    (Hugging Face's order: top-k, then top-p on the filtered distribution)."""
    logp = logp.copy()
    order = np.argsort(-logp, axis=1, kind="stable")
    ranked = np.take_along_axis(logp, order, axis=1)
    keep = np.ones_like(ranked, dtype=bool)
    if top_k:
        keep &= ranked >= ranked[:, min(top_k, ranked.shape[1]) - 1:][:, :1]
    if top_p < 1.0:
        p = np.exp(log_softmax(np.where(keep, ranked, -np.inf)))      # renormalised
        before = np.cumsum(p, axis=1) - p                             # mass ahead of each
        keep &= before < top_p - 1e-9 * top_p      # (mass that reaches p in rounding)
    drop = np.zeros_like(keep)
    np.put_along_axis(drop, order, ~keep, axis=1)
    logp[drop] = -np.inf
    return logp


@dataclass
class Hyp:
    """A beam hypothesis: its tokens (without `</s>`), summed log-probability, and
    whether it ended with `</s>`."""
    tokens: list
    score: float
    finished: bool = False
    alpha: float = 0.6

    @property
    def length(self) -> int:
        return len(self.tokens) + int(self.finished)

    @property
    def normalised(self) -> float:
        """score / length ** alpha (shown by --nbest)."""
        return -math.exp(self.rank) if self.score < 0 else self.score

    @property
    def rank(self) -> float:
        """What hypotheses are ranked by, smallest best: log(-normalised), computed in
        logs (length ** alpha overflows a float for a large alpha, 200 at length 100,
        and the normalised score underflows to 0, every output tied)."""
        return _rank(self.score, self.length, self.alpha)


def _rank(score: float, length: int, alpha: float) -> float:
    if score >= 0:                       # a certain output: nothing ranks above it
        return -math.inf
    return math.log(-score) - alpha * math.log(max(length, 1))


def _beaten(nxt: list, finished: list, K: int, alpha: float, limit: int) -> bool:
    """Can none of the live extensions `nxt` ((parent, token, score)) end better than
    the K-th best of `finished`? A score s < 0 only falls, and its length is at most
    `limit`: s / limit ** alpha bounds what it can reach (module docstring)."""
    if len(finished) < K:
        return not nxt
    if not nxt:
        return True
    kth = sorted(h.rank for h in finished)[K - 1]
    best = max(sc for _, _, sc in nxt)
    return _rank(best, limit, alpha) > kth


# ---------------------------------------------------------------------- the context
@dataclass
class Context:
    """The given part of a generation, for B sources (rows): arrays fed at every step,
    the source's carried state (incremental), per-step inputs, and lengths."""
    fixed: dict                          # name -> [B, ...] fed as is every step
    carry: dict = field(default_factory=dict)     # source-index carry, rows of B
    steps: dict = field(default_factory=dict)     # name -> [B, T] one column a step
    lengths: dict = field(default_factory=dict)   # source index -> [B] (padded batches)
    limit: int | None = None             # steps the per-step inputs allow
    gen_carry: dict = field(default_factory=dict)  # the carry the first step starts from
    prev: np.ndarray | None = None       # the token the LM input reads first [B]
    trees: dict = field(default_factory=dict)     # name -> B trees (trees.tree_rows)
    forests: dict = field(default_factory=dict)   # rows -> their forest (Generator._forest)


def _rows(d: dict, rows: np.ndarray) -> dict:
    return {k: v[rows] for k, v in d.items()}


class Generator:
    """Sampling, greedy decoding and beam search from a Model (see the module docstring).

    `start`: the id the fed-back target reads before the first step (`<s>`), or None for
    the model's own rule; `eos`: the id that ends an output (`</s>`), or None; `classes`:
    how many ids name a token (a size declared or given by --dim above the vocabulary
    leaves ids that name none: they are never chosen, and the distribution is the
    vocabulary's), or None for all of the output."""

    def __init__(self, model, plan: Plan, start: int | None = None, eos: int | None = None,
                 incremental: bool | None = None, classes: int | None = None):
        self.m, self.p = model, plan
        self.start, self.eos, self.classes = start, eos, classes
        self.incremental = plan.incremental if incremental is None else \
            (incremental and plan.incremental)
        self.delay = model.carried.get(plan.target, 1)

    # ------------------------------------------------------------------ running
    def _run(self, inputs: dict, n: int, carry: dict, lengths: dict | None = None,
             forest=None):
        targets = {self.p.target: np.full((n, 1), -1, dtype=np.int64)}
        return self.m.run(inputs, targets, carry=carry or None, train=False,
                          lengths=lengths or None, forest=forest)

    def context(self, sources: list[dict]) -> Context:
        """The context of B sources. A source maps input names to one example's value:
        a sequence ([T] ids, [T, D] vectors), or a per-example value ([D], or an id)."""
        p, B = self.p, len(sources)
        if B == 0:
            raise UsageError("nothing to generate from: no source")
        for name in (*p.fixed_inputs, *p.source_inputs, *p.step_inputs, *p.tree_inputs):
            if any(name not in s for s in sources):
                raise UsageError(f"the model reads input '{name}': give it (--input)")
        fixed = {n: np.stack([np.asarray(s[n]) for s in sources]) for n in p.fixed_inputs}
        steps, limit = {}, None
        for n in p.step_inputs:
            arrs = [np.asarray(s[n]) for s in sources]
            limit = min(len(a) for a in arrs)
            steps[n] = np.stack([a[:limit] for a in arrs])
        ctx = Context(fixed, steps=steps, limit=limit,
                      trees={n: [s[n] for s in sources] for n in p.tree_inputs})
        if not p.source_inputs:
            return ctx
        lens = {i: np.array([len(s[n]) for s in sources]) for n in p.source_inputs
                for i in [self.m.graph.var(n).index]}
        if any((L < 1).any() for L in lens.values()):
            raise UsageError("the source is empty: give at least one token (--input)")
        if self.incremental and B == 1:
            return self._incremental(ctx, sources[0])
        for n in p.source_inputs:              # whole: padded to the longest
            T = max(len(s[n]) for s in sources)
            fixed[n] = np.stack([_pad(np.asarray(s[n]), T) for s in sources])
        ctx.lengths = {i: L for i, L in lens.items() if (L < L.max()).any()}
        return ctx

    def _incremental(self, ctx: Context, source: dict) -> Context:
        """Run the source but its last token once; each step then reads the last token
        with that run's carry (the source indexes' carried state)."""
        p = self.p
        head = {n: np.asarray(source[n])[None, :-1] for n in p.source_inputs}
        if all(a.shape[1] > 0 for a in head.values()):
            inputs = {**ctx.fixed, **head, **self._step_feeds(ctx, np.zeros(1, int), 0,
                                                              self._first_prev(ctx, 1))}
            res = self._run(inputs, 1, self._first_carry(ctx, 1))
            src_vars = {n for n in self.m.carried
                        if self.m.graph.var(n).index in p.source_indexes}
            ctx.carry = {k: v for k, v in res.carry.items() if k in src_vars}
        for n in p.source_inputs:
            ctx.fixed[n] = np.asarray(source[n])[None, -1:]
        return ctx

    def _step_feeds(self, ctx: Context, rows, i: int, prev) -> dict:
        out = {n: a[rows, i:i + 1] for n, a in ctx.steps.items()}
        if self.p.lm_input is not None:
            out[self.p.lm_input] = np.asarray(prev, dtype=np.int64)[:, None]
        return out

    def _first_prev(self, ctx: Context, n: int):
        if ctx.prev is not None:
            return ctx.prev[:n] if len(ctx.prev) >= n else np.repeat(ctx.prev[:1], n)
        return np.full(n, self.start if self.start is not None else 0, dtype=np.int64)

    def _first_carry(self, ctx: Context, n: int) -> dict:
        carry = dict(ctx.gen_carry)
        if self.p.fed and self.p.target not in carry and self.start is not None:
            carry[self.p.target] = [np.full(n, self.start, dtype=np.int64)]
        return carry

    def step(self, ctx: Context, rows: np.ndarray, carry: dict, prev, i: int):
        """Logits [len(rows), V] of step i for hypotheses whose sources are `rows` of
        the context, and the carry over u after it (before a token is chosen)."""
        inputs = {**_rows(ctx.fixed, rows), **self._step_feeds(ctx, rows, i, prev)}
        full = {k: [a[rows] for a in v] for k, v in ctx.carry.items()}
        full.update(carry)
        lengths = _rows(ctx.lengths, rows)
        forest, words = self._forest(ctx, rows)
        inputs.update(words)
        res = self._run(inputs, len(rows), full, lengths, forest)
        logits = np.asarray(res.values[self.p.out])[:, -1, :self.classes]
        return logits, {k: v for k, v in res.carry.items() if k in self.p.gen_vars}

    def _forest(self, ctx: Context, rows: np.ndarray) -> tuple:
        """(forest, {input: words}) of the rows' trees, each row its source's tree: one
        forest, built once for each set of rows (a beam's rows settle after its first
        steps); (None, {}) without a tree source."""
        if not ctx.trees:
            return None, {}
        key = rows.tobytes()
        if key not in ctx.forests:
            from .trees import forest_of  # trees.py builds on this package
            name, trees = next(iter(ctx.trees.items()))   # one tree input (treepairs)
            forest, words = forest_of([trees[r] for r in rows])
            ctx.forests = {key: (forest, {name: words})}  # the last rows only
        return ctx.forests[key]

    @property
    def banned(self):
        """`<s>`: a class of the target vocabulary (fed back before the first step) but
        never an output. It is not chosen; scores stay the model's log-probabilities."""
        return self.start if self.start is not None and self.start != self.eos else None

    def advance(self, carry: dict, tokens, parents) -> dict:
        """The carry of the chosen hypotheses: rows gathered from their parents, and the
        fed-back target's newest value replaced by the chosen token."""
        parents = np.asarray(parents, dtype=np.int64)
        out = {k: [a[parents] for a in v] for k, v in carry.items()}
        y = self.p.target
        if y in out:
            out[y] = [np.asarray(tokens, dtype=np.int64)] + out[y][1:]
        return out

    def _limit(self, ctx: Context, length: int) -> int:
        return length if ctx.limit is None else min(length, ctx.limit)

    # ------------------------------------------------------------------ decoding
    def sample(self, ctx: Context, length: int, temperature: float = 1.0,
               greedy: bool = False, rng=None, top_k: int = 0,
               top_p: float = 1.0) -> list[list[int]]:
        """One output per source of `ctx` (token ids, `</s>` not included): drawn from
        softmax(o / temperature) (cut to its `top_k` or `top_p` likeliest: `choose`), or
        the argmax with greedy; all rows step together."""
        if temperature <= 0:
            raise UsageError("--temperature must be positive (use --greedy for argmax)")
        if top_k < 0 or not 0 < top_p <= 1:
            raise UsageError(f"top_k must be 0 (off) or more and top_p in (0, 1], not "
                             f"{top_k} and {top_p}")
        rng = rng if rng is not None else np.random.default_rng()
        B = _batch(ctx)
        rows = np.arange(B)
        carry, prev = self._first_carry(ctx, B), self._first_prev(ctx, B)
        out, done = [[] for _ in range(B)], np.zeros(B, dtype=bool)
        for i in range(self._limit(ctx, length)):
            logits, c = self.step(ctx, rows, carry, prev, i)
            tok = choose(logits, temperature, greedy, rng, self.banned, top_k, top_p)
            for b in np.flatnonzero(~done):
                if self.eos is not None and tok[b] == self.eos:
                    done[b] = True
                else:
                    out[b].append(int(tok[b]))
            if done.all():
                break
            carry, prev = self.advance(c, tok, rows), tok
        return out

    def beam(self, ctx: Context, K: int, length: int, alpha: float = 0.6) -> list[Hyp]:
        """The K best outputs of the context's one source, best first (module docstring)."""
        if _batch(ctx) != 1:
            raise UsageError("beam() decodes one source; beam_many() several")
        return self.beam_many(ctx, K, length, alpha)[0]

    def beam_many(self, ctx: Context, K: int, length: int,
                  alpha: float = 0.6) -> list[list[Hyp]]:
        """A beam of K for each source of the context, all hypotheses of all sources
        the rows of one batch (grouped by source); each list best first."""
        if K < 1:
            raise UsageError("--beam must be at least 1")
        if not alpha >= 0:
            raise UsageError("--alpha must be 0 or more")
        B = _batch(ctx)
        live = [[Hyp([], 0.0, False, alpha)] for _ in range(B)]
        rows = np.arange(B)                        # the source of each row
        carry, prev = self._first_carry(ctx, B), self._first_prev(ctx, B)
        finished: list[list[Hyp]] = [[] for _ in range(B)]
        limit = self._limit(ctx, length)
        for i in range(limit):
            if not rows.size:
                break
            logits, c = self.step(ctx, rows, carry, prev, i)
            logp = log_softmax(logits)
            if self.banned is not None:
                logp[:, self.banned] = -np.inf
            parents, toks, new_rows, first = [], [], [], 0
            for b in dict.fromkeys(rows.tolist()):
                n = len(live[b])
                nxt = self._extend(live[b], logp[first:first + n], K, finished[b])
                if _beaten(nxt, finished[b], K, alpha, limit):
                    nxt = []
                live[b] = [Hyp(live[b][r].tokens + [t], sc, False, alpha)
                           for r, t, sc in nxt]
                if live[b]:
                    parents += [first + r for r, _, _ in nxt]
                    toks += [t for _, t, _ in nxt]
                    new_rows += [b] * len(nxt)
                first += n
            toks = np.array(toks, dtype=np.int64)
            carry, prev, rows = self.advance(c, toks, parents), toks, np.array(new_rows, int)
        out = []
        for b in range(B):
            hyps = finished[b] + live[b]
            hyps.sort(key=lambda h: h.rank)
            out.append(hyps[:K])
        return out

    def _extend(self, live: list, logp: np.ndarray, K: int, finished: list) -> list:
        """One beam step for one source: of the 2K best extensions by summed
        log-probability, those ending in </s> among the first K join `finished`; the
        first K others are returned as (parent, token, score)."""
        cand = np.array([h.score for h in live])[:, None] + logp
        V = cand.shape[1]
        flat = cand.ravel()
        nxt = []
        for rank, idx in enumerate(np.argsort(-flat, kind="stable")[:2 * K]):
            if not np.isfinite(flat[idx]):
                break
            r, tok = divmod(int(idx), V)
            if self.eos is not None and tok == self.eos:
                if rank < K:
                    finished.append(Hyp(list(live[r].tokens), float(flat[idx]), True,
                                        live[r].alpha))
                continue
            nxt.append((r, tok, float(flat[idx])))
            if len(nxt) == K:
                break
        return nxt

    # ------------------------------------------------------------------ language models
    def primed(self, prime: list[int]) -> Context:
        """A language model's context after reading `prime` (at least one token): the
        prime but its last token is one window, whose carry starts the sampling."""
        ctx = Context({})
        if len(prime) > 1:
            inputs = {self.p.lm_input: np.array([prime[:-1]])} if self.p.lm_input else {}
            res = self.m.run(inputs, {self.p.target: np.array([prime[1:]])}, train=False)
            ctx.gen_carry = {k: v for k, v in res.carry.items() if k in self.p.gen_vars}
        elif self.p.fed:
            ctx.gen_carry = {self.p.target: [np.array([prime[-1]])]}
        ctx.prev = np.array([prime[-1]], dtype=np.int64)
        return ctx


def _batch(ctx: Context) -> int:
    for a in (*ctx.fixed.values(), *ctx.steps.values(), *ctx.trees.values()):
        return len(a)
    return 1 if ctx.prev is None else len(ctx.prev)


def _pad(a: np.ndarray, T: int) -> np.ndarray:
    if len(a) == T:
        return a
    pad = np.zeros((T - len(a),) + a.shape[1:], dtype=a.dtype)
    return np.concatenate([a, pad])


# -------------------------------------------------------------- language-model helpers
def line_start(vocab) -> int | None:
    """The token a line of the data starts after: a line end (`\\n`, or `</s>` for words),
    if the vocabulary has one."""
    index = vocab.index
    return next((index[tok] for tok in ("\n", EOS) if tok in index), None)


def prime_ids(vocab, ids) -> list[int]:
    """What a language model reads before it samples: a line start, then the prime's
    `ids` (a line of the data begins after one: a prime is read as a line's start, and
    no prime is the line start alone); id 0 when the vocabulary has no line end."""
    start, ids = line_start(vocab), [int(i) for i in ids]
    if start is None:
        return ids or [0]
    return ids if ids and ids[0] == start else [start, *ids]
