"""`seqgraph sample SPEC --checkpoint C`: generate text from a trained language model."""
from __future__ import annotations

import sys

import numpy as np

HELP = "generate text from a trained language model"


def add_arguments(p) -> None:
    p.add_argument("spec", help="the .sg file")
    p.add_argument("--checkpoint", required=True, help="a checkpoint.npz (or its run directory)")
    p.add_argument("--prime", help="text to start from (default: a line start)")
    p.add_argument("--length", type=int, default=500, help="tokens to generate (500)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="below 1: safer, above 1: wilder (1.0)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--seed", type=int, help="seed of the sampling (default: fresh entropy)")
    p.add_argument("--executor", choices=["interp", "compiled"])


def run(args) -> int:
    from ..errors import UsageError
    from ..train.generate import Sampler, prime_ids
    from ..train.session import restore
    from .train import _checkpoint_in

    if args.length < 0:
        raise UsageError("--length must be 0 or more")
    t = restore(args.spec, _checkpoint_in(args.checkpoint), args.executor)
    prime = prime_ids(t.vocab, args.prime)
    ids = Sampler(t.model, t.spec.graph, t.binding).sample(
        prime, args.length, args.temperature, args.greedy, np.random.default_rng(args.seed))
    text = t.vocab.decode(ids)
    if args.prime:
        sep = "" if t.vocab.kind == "chars" else " "
        text = args.prime + sep + text
    sys.stdout.write(text + "\n")
    return 0
