"""`seqgraph sample SPEC --checkpoint C`: generate from a trained model.

Language models (chars/words data) continue `--prime`. Conditional and seq2seq models
(tagged/pairs data) read `--input "..."`, tokenised as in training (characters, or
whitespace tokens), and write the target one step at a time, feeding each output back.
A model with a per-example vector input (one_to_many, `c : vec(D)`) reads `--input` as D
numbers ("0.1,0.3,...") or draws them from N(0, 1) with `--seed`. `--greedy`,
`--temperature T` and `--beam K` choose the decoding (seqgraph/train/generate.py).
"""
from __future__ import annotations

import re
import sys

import numpy as np

HELP = "generate from a trained model (language, conditional, seq2seq, one-to-many)"


def add_arguments(p) -> None:
    p.add_argument("spec", help="the .sg file")
    p.add_argument("--checkpoint", required=True, help="a checkpoint.npz (or its run directory)")
    p.add_argument("--prime", help="language models: text to start from (default: a line start)")
    p.add_argument("--input", help="conditional and seq2seq models: the source text; "
                                   "a per-example vector input: its numbers, '0.1,0.3,...'")
    p.add_argument("--length", type=int, default=None,
                   help="most tokens to generate (500 for a language model, else 100); "
                        "an output also ends at </s>")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="below 1: safer, above 1: wilder (1.0)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--beam", type=int, metavar="K",
                   help="beam search with K hypotheses (deterministic)")
    p.add_argument("--alpha", type=float, default=0.6,
                   help="beam: rank finished outputs by score / length**alpha (0.6)")
    p.add_argument("--nbest", action="store_true",
                   help="beam: print all K outputs, best first, each after its score")
    p.add_argument("--unk", action="store_true",
                   help="map --input tokens outside the vocabulary to <unk> (default: error)")
    p.add_argument("--seed", type=int, help="seed of the sampling (default: fresh entropy)")
    p.add_argument("--executor", choices=["interp", "compiled"],
                   help="interp by default: a window of one step gains nothing from "
                        "compiled loops")


def run(args) -> int:
    from ..errors import UsageError
    from ..train.generate import Generator, make_plan, prime_ids
    from ..train.session import restore
    from .train import _checkpoint_in

    if args.length is not None and args.length < 0:
        raise UsageError("--length must be 0 or more")
    if args.beam is not None and args.beam < 1:
        raise UsageError("--beam must be at least 1")
    if args.beam is not None and args.greedy:
        raise UsageError("--beam and --greedy exclude each other (--beam 1 is greedy)")
    if args.temperature <= 0:
        raise UsageError("--temperature must be positive (use --greedy for argmax)")
    t = restore(args.spec, _checkpoint_in(args.checkpoint), args.executor or "interp")
    b = t.binding
    lm = getattr(b, "kind", "stream") == "stream"
    rng = np.random.default_rng(args.seed)
    if lm:
        if args.input is not None:
            raise UsageError("--input is for conditional and seq2seq models; a language "
                             "model continues --prime")
        plan = make_plan(t.model, b.target, b.input)
        gen = Generator(t.model, plan)
        ctx = gen.primed(prime_ids(t.vocab, args.prime))
        out_vocab, length = t.vocab, 500 if args.length is None else args.length
    else:
        if args.prime is not None:
            raise UsageError("--prime is for language models; this model reads --input")
        plan = make_plan(t.model, b.target)
        out_vocab = t.vocab.target if getattr(t.vocab, "target", None) is not None \
            else t.vocab
        start = getattr(b, "start_ids", {}).get(b.target, t.model.start_ids.get(b.target))
        eos = out_vocab.index.get("</s>")
        gen = Generator(t.model, plan, start=start, eos=eos)
        ctx = gen.context([source(t, plan, args, rng)])
        length = 100 if args.length is None else args.length
    if args.beam is not None:
        hyps = gen.beam(ctx, args.beam, length, args.alpha)
        if args.nbest:
            for h in hyps:
                sys.stdout.write(f"{h.normalised:.4f}\t{_text(out_vocab, h.tokens)}\n")
            return 0
        ids = hyps[0].tokens
    else:
        ids = gen.sample(ctx, length, args.temperature, args.greedy, rng)[0]
    text = _text(out_vocab, ids)
    if lm and args.prime:
        text = args.prime + ("" if t.vocab.kind == "chars" else " ") + text
    sys.stdout.write(text + "\n")
    return 0


def _text(vocab, ids) -> str:
    return vocab.decode(ids)


def source(t, plan, args, rng) -> dict:
    """The given part of a generation from `--input`: tokens for a one-hot input (over
    a source index, or over the generated index: a conditional model), numbers for a
    per-example vector input (drawn from N(0, 1) when --input is absent)."""
    from ..errors import UsageError
    graph, out = t.model.graph, {}
    tokens = [n for n in (*plan.source_inputs, *plan.step_inputs)]
    vectors = [n for n in plan.fixed_inputs if not graph.var(n).is_ids]
    ids = [n for n in plan.fixed_inputs if graph.var(n).is_ids]
    if len(tokens) + len(vectors) + len(ids) > 1:
        names = ", ".join(tokens + vectors + ids)
        raise UsageError(f"the model reads several inputs ({names}); --input gives one")
    for name in tokens + ids:
        if args.input is None:
            raise UsageError(f"this model reads '{name}': give its text with --input")
        toks = encode_input(t.vocab, args.input, args.unk)
        out[name] = toks if name in tokens else toks[0]
        if name in ids and len(toks) != 1:
            raise UsageError(f"'{name}' is one token per example; --input has {len(toks)}")
    for name in vectors:
        D = t.model.sizes[name]
        if args.input is None:
            out[name] = rng.standard_normal(D)
            continue
        parts = [p for p in re.split(r"[,\s]+", args.input.strip()) if p]
        try:
            vals = np.array([float(p) for p in parts])
        except ValueError:
            raise UsageError(f"--input must be {D} numbers such as '0.1,0.3,...' for "
                             f"'{name}' : vec({D}), not {args.input!r}") from None
        if len(vals) != D or not np.isfinite(vals).all():
            raise UsageError(f"--input must be {D} finite numbers for '{name}' : vec({D});"
                             f" it has {len(vals)}")
        out[name] = vals
    return out


def encode_input(vocab, text: str, unk: bool = False) -> np.ndarray:
    """--input as ids of the source vocabulary: characters for a character vocabulary,
    else whitespace tokens. A token outside it is an error, or `<unk>` with --unk."""
    from ..errors import UsageError
    tokens = list(text.strip()) if vocab.kind == "chars" else text.split()
    if not tokens:
        raise UsageError("--input is empty: give at least one token")
    index = vocab.index
    bad = [tok for tok in dict.fromkeys(tokens) if tok not in index]
    if bad and not (unk and "<unk>" in index):
        shown = ", ".join(repr(b) for b in bad[:5])
        known = " ".join(tok for tok in vocab.tokens[:30])
        more = " ..." if len(vocab) > 30 else ""
        hint = "; --unk reads them as <unk>" if "<unk>" in index else ""
        raise UsageError(f"--input: {shown} {'is' if len(bad) == 1 else 'are'} not in the "
                         f"source vocabulary of {len(vocab)} tokens ({known}{more}){hint}")
    return np.array([index.get(tok, index.get("<unk>", -1)) for tok in tokens],
                     dtype=np.int64)
