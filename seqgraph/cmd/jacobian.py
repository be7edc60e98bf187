"""`seqgraph jacobian SPEC`: norms of dh_t/dh_k against the distance t - k, for every
recurrent state, beside the textbook bound (Deep Learning, section 10.7)."""
from __future__ import annotations

import json
import sys

import numpy as np

from ..gradcheck import random_batch
from ..jacobian import checkpoint_dims, load_checkpoint, measure, plot
from ..model import Model, read_spec
from .check import parse_dims

HELP = "measure how gradients vanish or explode: norms of dh_t/dh_k by distance t-k"


def add_arguments(p):
    p.add_argument("spec")
    p.add_argument("--checkpoint", metavar="C",
                   help="a .npz of parameters named as in the spec (default: the "
                        "spec's initialisation)")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="bind a size name (unbound names default to 5)")
    p.add_argument("--steps", type=int, default=20, metavar="T",
                   help="sequence length (default 20)")
    p.add_argument("--batch", type=int, default=4, metavar="B",
                   help="examples in the random batch (default 4)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initialisation and of the random batch")
    p.add_argument("-o", "--output", metavar="PLOT.png",
                   help="write a log-scale plot of norm against distance")
    p.add_argument("--json", action="store_true", help="print every number as JSON")


def run(args) -> int:
    from ..errors import UsageError
    if args.steps < 2:
        raise UsageError("--steps must be at least 2 (a distance needs two steps)")
    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    spec = read_spec(args.spec)
    given = parse_dims(args.dim)
    dims = {n: 5 for n in spec.unbound_dims()}
    if args.checkpoint:
        dims.update({k: v for k, v in checkpoint_dims(args.checkpoint).items()
                     if k in dims})
    dims.update(given)
    model = Model(spec, dims=dims, dtype="float64", seed=args.seed, executor="interp")
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    rng = np.random.default_rng(args.seed)
    inputs, targets, lengths, forest = random_batch(model, rng, B=args.batch,
                                                    T=args.steps)
    if forest is not None:
        raise UsageError(f"{args.spec}: a tree model has no distance in time; "
                         "jacobian measures sequence recurrences")
    reports = measure(model, inputs, targets, lengths)
    if not reports:
        print(f"{args.spec}: no recurrent state (no variable read with a delay)",
              file=sys.stderr)
    if args.output:
        plot(reports, args.output, title=f"{spec.name}: Jacobian norms "
                                         f"(B={args.batch}, T={args.steps})")
    if args.json:
        print(json.dumps({
            "spec": args.spec, "model": spec.name, "steps": args.steps,
            "batch": args.batch, "seed": args.seed, "checkpoint": args.checkpoint,
            "dims": {k: int(v) for k, v in model.dims.items()
                     if isinstance(v, (int, np.integer))},
            "plot": args.output,
            "states": [r.to_json() for r in reports]}, indent=2))
        return 0
    for r in reports:
        s = r.state
        print(f"state {s.name} (size {r.size}, recurrence {', '.join(s.recurrence)})")
        for m in r.matrices:
            rad = "n/a" if m["spectral_radius"] is None else f"{m['spectral_radius']:.4g}"
            print(f"  recurrent matrix {m['name']}: ||.||_2 = {m['spectral_norm']:.4g}, "
                  f"spectral radius {rad}")
        if r.beta_w is not None:
            print(f"  bound (beta_W beta_h)^d with beta_W = {r.beta_w:.4g}, beta_h = "
                  f"{s.beta_h:g} ({s.nonlinearity})")
        else:
            print(f"  no textbook bound: {s.bound_note}")
        print(f"  {'d':>3} {'mean':>10} {'std':>10} {'min':>10} {'max':>10} "
              f"{'frob mean':>10} {'bound':>10}")
        for d in r.distances:
            sp, b = d["spectral"], r.bound(d["distance"])
            print(f"  {d['distance']:>3} {sp['mean']:>10.3e} {sp['std']:>10.3e} "
                  f"{sp['min']:>10.3e} {sp['max']:>10.3e} "
                  f"{d['frobenius']['mean']:>10.3e} "
                  f"{'' if b is None else format(b, '.3e'):>10}")
    if args.output:
        print(f"wrote {args.output}")
    return 0
