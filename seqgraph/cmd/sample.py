"""`seqgraph sample SPEC --checkpoint C`: generate from a trained model.

Language models (chars/words data) continue `--prime`. Conditional and seq2seq models
(tagged/pairs data) read `--input "..."`, tokenised as in training (characters, or
whitespace tokens), and write the target one step at a time, feeding each output back.
A model with a per-example vector input (one_to_many, `c : vec(D)`) reads `--input` as D
numbers ("0.1 0.3 ...", or with commas), as `pairs` reads its source column, or draws
them from N(0, 1) with `--seed`. `--greedy`, `--temperature T` (with `--top-k K`,
`--top-p P`) and `--beam K` choose the decoding (seqgraph/train/generate.py).
`--attention-plot a.png` draws the output's attention weights against the source
(seqgraph/attention_plot.py). A classifier or a tagger (its
target not read back) labels `--input` in one forward pass: the most likely label, or each
token's tag (`label`); a tree model every node of the bracketed tree `--input`
(`label_tree`); a series model predicts at every step of the series `--input`
(`forecast`). `one_pass` chooses.
"""
from __future__ import annotations

import sys

import numpy as np

from ..graph.folded import LossFn, ShiftKind
from ..outputs import plot_file
from . import check_seed

HELP = ("generate from a trained model (language, conditional, seq2seq, one-to-many); "
        "label --input with a classifier, a tagger or a tree model; forecast a series")


def add_arguments(p) -> None:
    p.add_argument("spec", help="the .sg file")
    p.add_argument("--checkpoint", required=True, help="a checkpoint.npz (or its run directory)")
    p.add_argument("--prime", help="language models: text to start from (default: a line start)")
    p.add_argument("--input", help="conditional and seq2seq models, classifiers and "
                                   "taggers: the source text; a per-example vector input: "
                                   "its numbers, '0.1 0.3 ...'; a tree model: a bracketed "
                                   "tree, '(3 (2 a) (3 film))' (its labels are not read); "
                                   "a series model: the series, '12 30.5 41' (steps split "
                                   "by ';' for several columns)")
    p.add_argument("--length", type=int, default=None,
                   help="most tokens to generate, </s> included (500 for a language "
                        "model, else 100); an encoder-decoder's output also ends at </s>, "
                        "a language model's goes on past it")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling: below 1 safer, above 1 wilder (1.0)")
    p.add_argument("--top-k", type=int, metavar="K", default=None,
                   help="sampling: draw among the K likeliest tokens only")
    p.add_argument("--top-p", type=float, metavar="P", default=None,
                   help="sampling: draw among the fewest likeliest tokens whose "
                        "probabilities add up to P (nucleus sampling)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--beam", type=int, metavar="K",
                   help="beam search with K hypotheses (deterministic)")
    p.add_argument("--alpha", type=float, default=None,
                   help="beam: rank outputs by score / length**alpha, length counting "
                        "</s> (0.6; 0: by log-probability)")
    p.add_argument("--nbest", action="store_true",
                   help="beam: print all K outputs, best first, each after its score; a "
                        "classifier, tagger or tree model: every label with its "
                        "probability")
    p.add_argument("--unk", action="store_true",
                   help="map --input (or a word model's --prime) tokens outside the vocabulary "
                        "to <unk> (default: error)")
    p.add_argument("--seed", type=int, help="seed of the sampling (default: fresh entropy)")
    p.add_argument("--attention-plot", metavar="PNG",
                   help="draw the attention weights of the output against the source "
                        "(the alignment matrix of Bahdanau et al. 2015) into this PNG")
    p.add_argument("--attention-var", metavar="NAME",
                   help="the variable over two indexes to draw (default: the first "
                        "defined by 'softmax over', e.g. a[u, t])")
    p.add_argument("--average", action="store_true",
                   help="a checkpoint.npz of a run with the train key average: its averaged "
                        "parameters instead of the raw ones (best.npz holds the averaged ones)")
    p.add_argument("--executor", choices=["interp", "compiled"],
                   help="interp by default: a window of one step gains nothing from "
                        "compiled loops")


def run(args) -> int:
    from ..errors import UsageError
    from ..train.session import restore
    _check_options(args)
    check_seed(args.seed)
    t = restore(args.spec, args.checkpoint, args.executor or "interp", args.average)
    rng = np.random.default_rng(args.seed)
    if getattr(t.binding, "kind", "stream") == "stream":
        return _continue(t, args, rng)
    if args.prime is not None:
        raise UsageError("--prime is for language models; this model reads --input")
    if not t.binding.feedback and t.binding.input is not None and \
            t.binding.kind != "treepairs":      # a tree encoder's decoder writes y[u]
        return one_pass(t, args)
    return _transduce(t, args, rng)


def _check_options(args) -> None:
    from ..errors import UsageError
    if args.length is not None and args.length < 0:
        raise UsageError("--length must be 0 or more")
    if args.beam is not None and args.beam < 1:
        raise UsageError("--beam must be at least 1")
    if args.beam is not None and args.greedy:
        raise UsageError("--beam and --greedy exclude each other (--beam 1 is greedy)")
    if args.temperature is not None and not args.temperature > 0:   # nan too: it drew
        # token 0 at every step (softmax of nan), a line of newlines for a character model
        raise UsageError("--temperature must be positive (use --greedy for argmax)")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError("--top-k must be at least 1 (--top-k 1 draws among the likeliest "
                         "tokens only: --greedy, but for ties)")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UsageError("--top-p must be in (0, 1] (1 keeps every token)")
    # options of another way of choosing are refused, not ignored
    for flag, given in (("--temperature", args.temperature), ("--top-k", args.top_k),
                        ("--top-p", args.top_p)):
        if given is not None and (args.greedy or args.beam is not None):
            raise UsageError(f"{flag} shapes sampling; {_chooser(args)} takes the most "
                             f"likely tokens and samples none")
    if args.alpha is not None and args.beam is None:
        raise UsageError("--alpha ranks a beam's outputs: give --beam K")
    if args.alpha is not None and not args.alpha >= 0:
        raise UsageError("--alpha must be 0 or more (0 ranks by log-probability, 1 by "
                         "the mean log-probability per token)")
    if args.attention_var is not None and args.attention_plot is None:
        raise UsageError("--attention-var chooses what --attention-plot draws; give both")
    plot_file(args.attention_plot, "--attention-plot")


def _continue(t, args, rng) -> int:
    """A language model continues --prime (500 tokens by default)."""
    from ..errors import UsageError
    from ..train.generate import Generator, make_plan, prime_ids
    if args.input is not None:
        raise UsageError("--input is for conditional and seq2seq models; a language "
                         "model continues --prime")
    if args.attention_plot is not None:
        raise UsageError("--attention-plot draws an output against its source; a "
                         "language model has no source (it continues --prime)")
    gen = Generator(t.model, make_plan(t.model, t.binding.target, t.binding.input),
                    classes=len(t.vocab))
    prime = list(args.prime or "") if t.vocab.kind == "chars" else (args.prime or "").split()
    ids = encode_tokens(t.vocab, prime, args.unk, "--prime") if prime else []
    ctx = gen.primed(prime_ids(t.vocab, ids))
    ids, _ = _decode(args, gen, ctx, 500 if args.length is None else args.length, t.vocab,
                     rng, args.prime or "")
    if args.beam is None or not args.nbest:
        sys.stdout.write(_after(args.prime or "", _text(t.vocab, ids), t.vocab) + "\n")
    return 0


def _after(prime: str, text: str, vocab) -> str:
    """The generated text after the prime: words a space apart, but none before a line
    end or after nothing; characters as they are."""
    if vocab.kind == "chars" or not prime or not text or text.startswith("\n"):
        return prime + text
    return f"{prime} {text}"


def _transduce(t, args, rng) -> int:
    """A conditional, seq2seq or one-to-many model writes its target for --input, one
    step at a time, each output fed back (100 tokens at most by default, or </s>)."""
    from ..train.generate import Generator, make_plan
    b = t.binding
    plan = make_plan(t.model, b.target)
    out_vocab = t.vocab.target if getattr(t.vocab, "target", None) is not None else t.vocab
    start = getattr(b, "start_ids", {}).get(b.target, t.model.start_ids.get(b.target))
    eos = out_vocab.index.get("</s>")
    gen = Generator(t.model, plan, start=start, eos=eos, classes=len(out_vocab))
    weights = None
    if args.attention_plot is not None:           # refuse before generating, not after
        from ..attention_plot import find_weights
        weights = find_weights(t.model.graph, plan.index, args.attention_var)
    src = source(t, plan, args, rng)
    ctx, length = gen.context([src]), 100 if args.length is None else args.length
    ids, ended = _decode(args, gen, ctx, length, out_vocab, rng)
    if weights is not None:
        out = _plot(t, plan, weights, src, args, ids + ([eos] if ended else []), out_vocab,
                    start)
        sys.stderr.write(f"attention weights '{weights.name}' drawn in {out}\n")
    if args.beam is None or not args.nbest:
        sys.stdout.write(_tagged(t, args, out_vocab, ids) + "\n")
        if not ids and ended:         # the line stays (one a --input), but is explained
            sys.stderr.write("the output is empty: the model's first choice was </s>\n")
    if ctx.limit is not None and length < ctx.limit and not ended:
        # a conditional model writes a token a step of its input, and no </s>
        sys.stderr.write(f"the output was cut at --length {length}, before the input's "
                         f"{ctx.limit} steps\n")
    elif not ended and ctx.limit is None and eos is not None:
        sys.stderr.write(f"the output was cut at --length {length} (</s> counts as one "
                         f"of them) before it ended with </s>\n")
    return 0


def one_pass(t, args) -> int:
    """A model that does not read its output back is not written one step at a time:
    one forward pass over --input labels it (a classifier, a tagger: `label`; a tree
    model: `label_tree`) or forecasts (a series model: `forecast`)."""
    from ..errors import UsageError
    b, graph = t.binding, t.model.graph
    loss = next((loss for loss in graph.losses if loss.target.var == b.target), None)
    series = loss is not None and loss.fn == LossFn.MSE and getattr(t.vocab, "kind", "") == "series"
    tree = any(kind == "tree" for _, kind in graph.indexes)
    tagger = not tree and graph.var(b.target).index is not None
    _refuse_generation_options(args, b.target, "forecasts each step" if series else
                               "prints each token's most likely tag, word/TAG (--nbest: "
                               "every tag)" if tagger else
                               "prints its most likely label (--nbest: every label)",
                               series)
    if args.input is None:
        what = "tree, bracketed with a label at every node as the data writes it (the " \
            "labels are not read): --input '(2 (2 a) (2 film))'" if tree else \
            f"{'series' if series else 'text'} with --input"
        raise UsageError(f"this model reads '{b.input}': give its {what}")
    if series:
        return forecast(t, args, loss)
    if loss is None or loss.fn != LossFn.XENT:
        raise UsageError(f"'{b.target}' is not a class target read by an xent loss: "
                         "nothing to label (seqgraph eval scores such a model)")
    if tree:
        return label_tree(t, args, loss.output.var)
    return label(t, args, loss.output.var)


def label(t, args, output: str) -> int:
    """A classifier's most likely label for --input, or a tagger's tag of each token
    (`word/TAG`, as `tagged` reads); --nbest: every label with its probability (a
    tagger: a line per token)."""
    from ..ops import softmax
    from ..train.evaluate import at_loss, loss_on
    ids = encode_input(t.vocab, args.input, args.unk)
    names = t.vocab.target.tokens
    o = t.model.forward({t.binding.input: ids[None, :]})[output]
    o = at_loss(t.spec.graph, loss_on(t.spec.graph, t.binding.target, LossFn.XENT), o)[0][0]
    # the labels' distribution: a size above them (--dim K=6 for 2 labels) leaves ids
    # that name none, never chosen
    probs = softmax(np.asarray(o, dtype=np.float64)[..., :len(names)])   # [K], [T, K]
    if probs.ndim == 1:
        order = np.argsort(-probs, kind="stable")[:len(names) if args.nbest else 1]
        for k in order:
            sys.stdout.write(f"{names[k]}\t{probs[k]:.4f}\n")
        return 0
    tokens = input_tokens(t.vocab, args.input)
    if not args.nbest:
        sys.stdout.write(" ".join(f"{w}/{names[int(k)]}" for w, k in
                                  zip(tokens, probs.argmax(axis=-1), strict=True)) + "\n")
        return 0
    for w, p in zip(tokens, probs, strict=True):
        order = np.argsort(-p, kind="stable")
        sys.stdout.write(w + "\t" + " ".join(f"{names[k]}:{p[k]:.3f}" for k in order)
                         + "\n")
    return 0


def _chooser(args) -> str:
    return "--greedy" if args.greedy else f"--beam {args.beam}"


def _refuse_generation_options(args, target: str, does: str, series: bool) -> None:
    """The options of step-by-step generation (and, for a forecast, of labels) refused
    with the reason, not ignored."""
    from ..errors import UsageError
    given = [("--beam", args.beam is not None),
             ("--temperature", args.temperature is not None),
             ("--top-k", args.top_k is not None), ("--top-p", args.top_p is not None),
             ("--attention-plot", args.attention_plot is not None),
             ("--length", args.length is not None), ("--greedy", args.greedy and series),
             ("--nbest", args.nbest and series), ("--unk", args.unk and series)]
    for flag, on in given:
        if not on:
            continue
        why = "a forecast is one number a step, with no labels to rank or choose among" \
            if flag in ("--nbest", "--greedy", "--unk") else \
            f"'{target}' is not read back, so it is not written one step at a time"
        raise UsageError(f"{flag} is not for this model: {why}; sample {does}")


def forecast(t, args, loss) -> int:
    """A series model (`series` data, an mse loss) run over the series --input: a number
    a step for one input column (`"12 30.5 41"`, separated by spaces, commas or ';'),
    else the steps' values separated by ';' (`"1 2; 3 4"`). Each step's prediction of
    the target (`horizon` steps ahead: the last line forecasts past the end), one line a
    step, in the data's own units (the training data's scaling applied to the input and
    undone on the output): a table with a header, the step, its input and the
    prediction. A loss read at one step (`mse(o[end], y[end])`) trains no other
    step's output: only that step's line is written."""
    from ..errors import UsageError
    from ..graph.report import loader_args
    from ..train.loaders import number_problem, split_numbers
    from ..train.session import trained_config
    output = loss.output.var
    name = t.binding.input
    D = t.model.sizes[name]
    steps = [p for p in args.input.split(";") if p.strip()] if D > 1 else \
        args.input.replace(";", " ").replace(",", " ").split()
    rows = []
    for k, text in enumerate(steps, 1):
        vals, n, bad = split_numbers(text)
        if vals is None or n != D:
            what = f"it has {n}" if vals is not None else \
                f"{bad!r} is {number_problem(bad)}" if D == 1 else \
                f"value {n} is {bad!r}, {number_problem(bad)}"
            raise UsageError(f"--input step {k} must be {D} finite number"
                             f"{'s' * (D != 1)} for '{name}' : vec({D}); {what}")
        rows.append(vals)
    if not rows:
        raise UsageError("--input is empty: give the series, a number a step")
    x = in_range(t.model, t.vocab.standardise(np.asarray(rows)))
    o = np.asarray(t.model.forward({name: x[None]})[output][0],
                   dtype=np.float64)                              # [T, P]
    o = t.vocab.unstandardise_target(o)
    ahead = loader_args(trained_config(t, args.spec).data).get("horizon", 1)
    names = t.vocab.target.tokens if t.vocab.target else [output] * o.shape[1]
    sys.stdout.write("\t".join(["step", *t.vocab.tokens,
                                *(f"{n} at t+{ahead}" for n in names)]) + "\n")
    only = {ShiftKind.END: len(rows), ShiftKind.FIRST: 1}.get(loss.output.shift.kind)
    for k, (given, row) in enumerate(zip(rows, o, strict=True), 1):
        if only is not None and k != only:
            continue
        sys.stdout.write("\t".join([str(k), *(f"{v:.6g}" for v in given),
                                    *(f"{v:.6g}" for v in row)]) + "\n")
    return 0


def label_tree(t, args, output: str) -> int:
    """A tree model labels every node of the bracketed tree --input (as the data writes
    trees, `(3 (2 a) (3 film))`; its labels are not read): the tree with the predicted
    labels, or with --nbest a line per node, root first: its phrase and every label with
    its probability. A tree classifier (one label a tree) labels the root alone: the
    label, its probability and the sentence, or with --nbest the sentence and every
    label with its probability."""
    from ..graph.trees import Forest
    from ..ops import softmax
    from ..train.trees import root_rows, roots_scored
    rows, words = input_tree(t, args.input, args.unk)
    left, right, ids, N = rows[:, 0], rows[:, 1], rows[:, 2], len(rows)
    f = Forest.one(left, right)
    o = t.model.run({t.binding.input: ids}, forest=f).values[output]
    probs = softmax(np.asarray(o, dtype=np.float64))           # [N, K], post-order

    # no recursion and memory linear in the tree, however deep (post-order: a node's
    # leaves are a run of the sentence's words, its children numbered before it)
    leaves, lo, hi = [], np.zeros(N, int), np.zeros(N, int)
    for i in range(N):
        if left[i] < 0:
            lo[i], hi[i] = len(leaves), len(leaves) + 1
            leaves.append(words[i])
        else:
            lo[i], hi[i] = lo[left[i]], hi[right[i]]

    def phrase(i) -> str:
        return " ".join(leaves[lo[i]:hi[i]])

    def show(root) -> str:               # the bracketed tree with each node's label
        out, stack = [], [root]
        while stack:
            i = stack.pop()
            if isinstance(i, str):
                out.append(i)
                continue
            k = int(probs[i].argmax())
            if left[i] < 0:
                out.append(f"({k} {words[i]})")
            else:
                out.append(f"({k} ")
                stack += [")", int(right[i]), " ", int(left[i])]
        return "".join(out)

    if roots_scored(t.spec.graph, t.binding):     # one label a tree: the root's
        p = probs[root_rows(t.spec.graph, output, f)[0]]
        best = f"{int(p.argmax())}\t{p.max():.4f}\t{phrase(N - 1)}"
        sys.stdout.write((_ranked(phrase(N - 1), p) if args.nbest else best) + "\n")
        return 0
    if not args.nbest:
        sys.stdout.write(show(N - 1) + "\n")
        return 0
    stack = [N - 1]
    while stack:                                               # pre-order: root first
        i = stack.pop()
        sys.stdout.write(_ranked(phrase(i), probs[i]) + "\n")
        if left[i] >= 0:
            stack += [right[i], left[i]]
    return 0


def _ranked(phrase: str, p) -> str:
    """A phrase and every label with its probability, the likeliest first."""
    order = np.argsort(-p, kind="stable")
    return phrase + "\t" + " ".join(f"{k}:{p[k]:.3f}" for k in order)


def _decode(args, gen, ctx, length: int, out_vocab, rng,
            prefix: str = "") -> tuple[list, bool]:
    """The output (ids without `</s>`) and whether it ended with `</s>`; with --nbest
    the K hypotheses of the beam are printed here, a line each: the score, a tab and
    the text after `prefix` (a language model's prime), its line ends written `\\n`."""
    if args.beam is None:
        if args.nbest:              # a sample is one hypothesis: a beam keeps K
            from ..errors import UsageError
            raise UsageError("--nbest prints the beam's hypotheses: give --beam K")
        ids = gen.sample(ctx, length, args.temperature or 1.0, args.greedy, rng,
                         args.top_k or 0, 1.0 if args.top_p is None else args.top_p)[0]
        limit = length if ctx.limit is None else min(length, ctx.limit)
        return ids, len(ids) < limit              # a sample stops early only at </s>
    hyps = gen.beam(ctx, args.beam, length, 0.6 if args.alpha is None else args.alpha)
    if args.nbest:
        for h in hyps:
            text = _after(prefix, _text(out_vocab, h.tokens), out_vocab).replace("\n", "\\n")
            # (5 digits, not 4 places: with a large --alpha the scores are small numbers)
            sys.stdout.write(f"{h.normalised:.5g}\t{text}\n")
    return hyps[0].tokens, hyps[0].finished


def _text(vocab, ids) -> str:
    return vocab.decode(ids)


def _tagged(t, args, out_vocab, ids) -> str:
    """The output as text; a tagger's that reads its tags back (tagged data) as
    `word/TAG`, as a one-pass tagger prints it and `tagged` reads it (a cut output:
    its first words)."""
    if getattr(t.binding, "kind", None) != "tagged":
        return _text(out_vocab, ids)
    words = input_tokens(t.vocab, args.input)
    return " ".join(f"{w}/{out_vocab.tokens[int(k)]}"
                    for w, k in zip(words, ids, strict=False))


def _plot(t, plan, weights, src: dict, args, output: list, out_vocab, start):
    """The alignment matrix of `output` (ids, `</s>` included when it ended there)
    against the source given by --input, drawn into --attention-plot."""
    from ..attention_plot import alignment, plot_alignment
    graph = t.model.graph
    w = alignment(t.model, weights, plan, src, output, start)
    on_cols = [n for n in plan.source_inputs if graph.var(n).index == weights.cols]
    if on_cols and graph.var(on_cols[0]).is_ids and args.input is not None:
        cols = input_tokens(t.vocab, args.input)
    else:
        cols = [str(i) for i in range(1, w.shape[1] + 1)]
    rows = [out_vocab.tokens[int(i)] for i in output]
    title = f"{weights.name}[{weights.rows}, {weights.cols}] of {graph.name}"
    return plot_alignment(w, cols, rows, args.attention_plot, title)


def source(t, plan, args, rng) -> dict:
    """The given part of a generation from `--input`: tokens for a one-hot input (over
    a source index, or over the generated index: a conditional model), numbers for a
    per-example vector input (drawn from N(0, 1) when --input is absent)."""
    from ..errors import UsageError
    from ..train.loaders import number_problem, split_numbers
    graph, out = t.model.graph, {}
    tokens = [n for n in (*plan.source_inputs, *plan.step_inputs)]
    vectors = [n for n in plan.fixed_inputs if not graph.var(n).is_ids]
    ids = [n for n in plan.fixed_inputs if graph.var(n).is_ids]
    if len(tokens) + len(vectors) + len(ids) + len(plan.tree_inputs) > 1:
        names = ", ".join(tokens + vectors + ids + list(plan.tree_inputs))
        raise UsageError(f"the model reads several inputs ({names}); --input gives one")
    for name in plan.tree_inputs:               # a tree encoder (treepairs data)
        if args.input is None:
            raise UsageError(f"this model reads the tree '{name}': give it with --input, "
                             f"bracketed as the data writes trees, '(3 (2 a) (3 film))'")
        out[name] = input_tree(t, args.input, args.unk)[0]
    for name in tokens + ids:
        if args.input is None:
            raise UsageError(f"this model reads '{name}': give its text with --input")
        toks = encode_input(t.vocab, args.input, args.unk)
        out[name] = toks if name in tokens else toks[0]
        if name in ids and len(toks) != 1:
            raise UsageError(f"'{name}' is one token per example; --input has {len(toks)}")
    for name in vectors:
        D = t.model.sizes[name]
        if args.input is None:             # said, so that the output can be reproduced
            out[name] = rng.standard_normal(D)
            shown = " ".join(f"{x:.4g}" for x in out[name])
            how = f"--seed {args.seed}" if args.seed is not None else "--seed N repeats a draw"
            sys.stderr.write(f"{name} drawn from N(0, 1) ({how}): {shown}\n")
            continue
        vals, n, bad = split_numbers(args.input)      # as a pairs source column reads
        if vals is None:
            raise UsageError(f"--input must be {D} numbers such as '0.1 0.3 ...' for "
                             f"'{name}' : vec({D}); value {n} is {bad!r}, "
                             f"{number_problem(bad)}")
        if len(vals) != D:
            raise UsageError(f"--input must be {D} finite numbers for '{name}' : vec({D});"
                             f" it has {len(vals)}")
        out[name] = in_range(t.model, vals)
    return out


def in_range(model, values: np.ndarray) -> np.ndarray:
    """--input's numbers in the model's dtype, or a UsageError for those past its range
    (1e39 is inf in float32: numpy's overflow warning, then an inf model)."""
    from ..errors import UsageError
    with np.errstate(over="ignore"):
        x = np.asarray(values).astype(model.dtype)
    if not np.isfinite(x).all():
        big = float(np.finfo(model.dtype).max)
        raise UsageError(f"--input holds a number beyond what the model's {model.dtype} "
                         f"holds ({big:.2g}), after the data's scaling where it has one")
    return x


def input_tree(t, text: str, unk: bool = False) -> tuple[np.ndarray, list]:
    """--input read as the data reads a tree (`binarize` too): its rows (trees.tree_rows:
    children, word ids, heights; post-order) and its words (None inside). A word outside
    the vocabulary is an error, or `<unk>` with --unk."""
    from ..train.trees import binarizes, leaf_ids, parse_tree, tree_rows
    data = t.data_call()               # its labels are not read: any token is one
    left, right, words, _ = parse_tree(text, "--input", 1, binarizes(data),
                                       getattr(data, "name", "trees"), class_ids=False)
    ids = leaf_ids(words, lambda w: encode_tokens(t.vocab, w, unk))
    return tree_rows(left, right, ids), words


def input_tokens(vocab, text: str) -> list[str]:
    """--input split as the source was in training: characters for a character
    vocabulary (`pairs(chars=true)` or `source_chars=true`), else whitespace tokens."""
    return list(text.strip()) if vocab.kind == "chars" else text.split()


def encode_input(vocab, text: str, unk: bool = False) -> np.ndarray:
    """--input as ids of the source vocabulary: characters for a character vocabulary,
    else whitespace tokens. A token outside it is an error, or `<unk>` with --unk."""
    return encode_tokens(vocab, input_tokens(vocab, text), unk)


def _visible(tok: str) -> str:
    """A vocabulary's token as a message lists it: a line end `\\n`, a space `' '`."""
    return "' '" if tok == " " else tok.encode("unicode_escape").decode() \
        if not tok.isprintable() else tok


def encode_tokens(vocab, tokens: list, unk: bool = False, flag: str = "--input") -> np.ndarray:
    """Tokens of --input (or --prime) as ids; one outside the vocabulary is an error
    naming it, or `<unk>` with --unk."""
    from ..errors import UsageError
    if not tokens:
        raise UsageError(f"{flag} is empty: give at least one token")
    index = vocab.index
    bad = [tok for tok in dict.fromkeys(tokens) if tok not in index]
    if bad and not (unk and "<unk>" in index):
        shown = ", ".join(repr(b) for b in bad[:5])
        known = " ".join(_visible(tok) for tok in vocab.tokens[:30])
        more = " ..." if len(vocab) > 30 else ""
        hint = "; --unk reads them as <unk>" if "<unk>" in index else ""
        which = "source vocabulary" if flag == "--input" else "vocabulary"
        raise UsageError(f"{flag}: {shown} {'is' if len(bad) == 1 else 'are'} not in the "
                         f"{which} of {len(vocab)} tokens ({known}{more}){hint}")
    return np.array([index.get(tok, index.get("<unk>", -1)) for tok in tokens],
                     dtype=np.int64)
