"""`seqgraph jacobian SPEC`: norms of dh_t/dh_k against the distance t - k, for every
recurrent state, beside the textbook bound (Deep Learning, section 10.7).

The batch is real data when there is some: `--data LOADER`, else the data of the spec's
train block (windows of a token stream, or examples cut to `--steps`); a spec with neither
is measured on random ids. `--checkpoint C` measures a
trained model (its dims and vocabulary come from the checkpoint), `--compare C2` measures
a second parameter set on the same batch and draws both on one plot (without
`--checkpoint`, the first is the spec's initialisation)."""
from __future__ import annotations

import json
import sys

from ..jacobian import measure, open_params, plot, plot_compare, prepare
from ..model import read_spec
from ..outputs import plot_file
from . import check_seed, parse_dims, writing

HELP = "measure how gradients vanish or explode: norms of dh_t/dh_k by distance t-k"


def add_arguments(p):
    p.add_argument("spec")
    p.add_argument("--checkpoint", metavar="C",
                   help="a checkpoint of seqgraph train (or its run directory), or a "
                        ".npz of parameters named as in the spec (default: the spec's "
                        "initialisation)")
    p.add_argument("--compare", metavar="C2",
                   help="measure a second checkpoint on the same batch and plot both "
                        "(e.g. initialisation against trained)")
    p.add_argument("--data", metavar="LOADER",
                   help="real data for the batch: a loader call such as "
                        "'chars(\"file.txt\")', or a path read like the training data "
                        "(default: the train block's data, else random ids)")
    p.add_argument("--random", action="store_true",
                   help="measure on random ids even when the spec names data")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="bind a size name (unbound names default to 5)")
    p.add_argument("--steps", type=int, default=None, metavar="T",
                   help="sequence length (default 20, or the longest example's when "
                        "example data has none so long)")
    p.add_argument("--batch", type=int, default=4, metavar="B",
                   help="examples in the batch (default 4)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initialisation and of the batch")
    p.add_argument("-o", "--output", metavar="PLOT.png",
                   help="write a log-scale plot of norm against distance")
    p.add_argument("--json", action="store_true", help="print every number as JSON")


def run(args) -> int:
    from ..errors import UsageError
    if args.steps is not None and args.steps < 2:
        raise UsageError("--steps must be at least 2 (a distance needs two steps)")
    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    if args.random and args.data:
        raise UsageError("--random and --data exclude each other")
    check_seed(args.seed)
    plot_file(args.output, "-o")
    sources = [open_params(args.checkpoint, args.seed)]
    if args.compare:
        sources.append(open_params(args.compare, args.seed))
    from ..train.checkpoint import run_dims  # the data's sizes and --dim's
    bound = {k: v for s in sources
             for k, v in (run_dims(s.ckpt) if s.ckpt is not None else {}).items()}
    spec = read_spec(args.spec, dims=parse_dims(args.dim), bound=bound)
    setup = prepare(spec, sources, data=args.data, given=parse_dims(args.dim, spec),
                    steps=args.steps, batch=args.batch, seed=args.seed,
                    use_train_data=not args.random)
    runs = [(s.label, measure(m, setup.inputs, setup.targets, setup.lengths))
            for s, m in zip(setup.sources, setup.models, strict=True)]
    reports = runs[0][1]
    if not reports:
        fed = [t.name for t in spec.graph.targets() if t.name in spec.graph.carried]
        why = f"; the target {', '.join(fed)} read back is data under teacher forcing, " \
            f"not a state" if fed else ""
        print(f"{args.spec}: no recurrent state (no hidden variable read with a "
              f"delay{why})", file=sys.stderr)
    if args.output:
        title = f"{spec.name}: Jacobian norms (B={args.batch}, T={setup.steps})"
        with writing(args.output, "-o"):
            if args.compare:
                plot_compare(runs, args.output, title=title)
            else:
                plot(reports, args.output, title=title)
    if args.json:
        out = {"spec": args.spec, "model": spec.name, "steps": setup.steps,
               "batch": args.batch, "seed": args.seed, "checkpoint": args.checkpoint,
               "label": runs[0][0], "data": setup.batch_from, "dims": setup.dims,
               "plot": args.output, "states": [r.to_json() for r in reports]}
        if args.compare:
            out["compare"] = {"checkpoint": args.compare, "label": runs[1][0],
                              "states": [r.to_json() for r in runs[1][1]]}
        print(json.dumps(out, indent=2))
        return 0
    print(f"batch: {setup.batch_from}")
    for label, reps in runs:
        if args.compare:
            print(f"\n== {label}")
        _print_reports(reps)
    if args.output:
        print(f"wrote {args.output}")
    return 0


def _print_reports(reports) -> None:
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
