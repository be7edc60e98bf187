"""Phoneme and word error rates of a trained G2P model, greedy and beam decoding.

    python examples/g2p/evaluate.py --checkpoint examples/g2p/run [--beam 5] [--limit N]

Each held-out word is decoded from its letters (seqgraph/train/generate.py: greedy
decoding in padded batches of words, beam search one word at a time, its K hypotheses
the batch). A word with several pronunciations in the dictionary is scored against the
closest one (the usual convention on CMUdict):
- PER: the summed edit distance (substitutions, insertions, deletions) between each
  output and its closest pronunciation, over the summed length of those pronunciations;
- WER: the fraction of words whose output is none of their pronunciations.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import OrderedDict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from seqgraph.train.evaluate import edit_distance
from seqgraph.train.generate import Generator, make_plan
from seqgraph.train.session import checkpoint_in, restore


def read_words(path: Path) -> OrderedDict[tuple, list[list[str]]]:
    """letters -> the word's pronunciations, in file order."""
    out: OrderedDict = OrderedDict()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            src, tgt = line.split("\t")
            out.setdefault(tuple(src.split()), []).append(tgt.split())
    return out


def score(hyps: list[list[str]], refs: list[list[list[str]]]) -> dict:
    errors = length = wrong = 0
    for h, rs in zip(hyps, refs, strict=True):
        d, r = min((edit_distance(h, r), len(r)) for r in rs)
        errors, length, wrong = errors + d, length + r, wrong + (d > 0)
    return {"per": errors / max(length, 1), "wer": wrong / max(len(hyps), 1),
            "words": len(hyps), "phonemes": length}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(HERE / "g2p.sg"))
    ap.add_argument("--checkpoint", default=str(HERE / "run"))
    ap.add_argument("--data", default="examples/g2p/data/test.tsv")
    ap.add_argument("--beam", type=int, default=0, help="also decode with a beam of K")
    ap.add_argument("--alpha", type=float, default=0.6)
    ap.add_argument("--limit", type=int, help="the first N held-out words only")
    ap.add_argument("--batch", type=int, default=256, help="words per greedy batch")
    ap.add_argument("--length", type=int, default=30, help="most phonemes an output has")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--executor", default="interp", choices=["interp", "compiled"])
    args = ap.parse_args(argv)

    t = restore(args.spec, checkpoint_in(args.checkpoint), args.executor)
    src_vocab, tgt_vocab = t.vocab, t.vocab.target
    plan = make_plan(t.model, t.binding.target)
    gen = Generator(t.model, plan, start=t.binding.start_ids.get(t.binding.target),
                    eos=tgt_vocab.index["</s>"])
    words = read_words(Path(args.data))
    items = list(words.items())[:args.limit]
    sources = [{plan.source_inputs[0]: src_vocab.encode(list(w))} for w, _ in items]
    refs = [rs for _, rs in items]
    decode = lambda ids: [tgt_vocab.tokens[i] for i in ids]
    state = t.meta.get("state") or {}
    results = {"checkpoint": str(args.checkpoint), "data": str(args.data),
               "step": (state.get("position") or {}).get("step"),
               "epoch": (state.get("position") or {}).get("epoch")}

    t0 = time.perf_counter()
    hyps = []
    for i in range(0, len(sources), args.batch):
        out = gen.sample(gen.context(sources[i:i + args.batch]), args.length, greedy=True)
        hyps += [decode(o) for o in out]
    results["greedy"] = {**score(hyps, refs), "seconds": time.perf_counter() - t0}
    print(f"greedy: PER {100 * results['greedy']['per']:.2f}%  WER "
          f"{100 * results['greedy']['wer']:.2f}%  ({len(hyps)} words, "
          f"{results['greedy']['seconds']:.0f} s)", flush=True)
    for (w, rs), h in list(zip(items, hyps, strict=True))[:8]:
        print(f"  {''.join(w):16s} {' '.join(h):28s} ref {' / '.join(' '.join(r) for r in rs)}")

    if args.beam:
        t0 = time.perf_counter()
        bh = []
        for i in range(0, len(sources), max(args.batch // args.beam, 1)):
            ctx = gen.context(sources[i:i + max(args.batch // args.beam, 1)])
            bh += [decode(hyps[0].tokens)
                   for hyps in gen.beam_many(ctx, args.beam, args.length, args.alpha)]
        results[f"beam{args.beam}"] = {**score(bh, refs), "alpha": args.alpha,
                                       "seconds": time.perf_counter() - t0}
        r = results[f"beam{args.beam}"]
        print(f"beam {args.beam} (alpha {args.alpha}): PER {100 * r['per']:.2f}%  WER "
              f"{100 * r['wer']:.2f}%  ({len(bh)} words, {r['seconds']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
