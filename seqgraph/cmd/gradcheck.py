"""`seqgraph gradcheck SPEC`: every parameter's gradient against central differences."""
from __future__ import annotations

import json

import numpy as np

from ..errors import UsageError
from ..gradcheck import gradcheck, off_kinks
from ..model import Model, read_spec
from . import check_seed, parse_dims

HELP = "check every parameter's gradient against float64 central differences"
DESCRIPTION = """\
Checks the gradient of every parameter of a float64 model, at its initialisation, on
one random batch: along one random unit direction d per parameter, <grad, d> against
(L(p + eps d) - L(p - eps d)) / 2 eps, eps = 1e-5. A parameter initialised to one
value throughout (a zero bias) is first moved by N(0, 0.01) noise, so that no ReLU sits
on its kink (a zero state through a zero bias), where a central difference measures a
slope no derivative has. A difference within the float64 rounding of the loss passes
whatever --tol is. Exit code 0: all passed; 1: a parameter failed."""


def add_arguments(p):
    p.add_argument("spec")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="bind a size name (unbound names default to 5)")
    p.add_argument("--executor", default="interp", choices=["interp", "compiled"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-6,
                   help="largest relative error (default 1e-6)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    check_seed(args.seed)
    if not 0 < args.tol < float("inf"):     # nan too: a test nothing could fail said pass
        raise UsageError(f"--tol must be a relative error above 0, e.g. --tol 1e-6 (the "
                         f"default), not {args.tol}")
    spec = read_spec(args.spec, dims=parse_dims(args.dim))
    dims = {n: 5 for n in spec.unbound_dims()}
    dims.update(parse_dims(args.dim, spec))
    if not spec.graph.losses:         # every gradient 0 = every difference: "all passed"
        raise UsageError(f"{args.spec}: the model has no loss line, so no gradient to "
                         f"check; add one, e.g. loss xent(o[t], y[t])")
    model = Model(spec, dims=dims, dtype="float64", seed=args.seed, executor=args.executor)
    moved = off_kinks(model, np.random.default_rng(args.seed + 1))
    checks = gradcheck(model, seed=args.seed, tol=args.tol)
    ok = all(c.ok for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "tolerance": args.tol, "moved_off_constant": moved,
                          "params": [
            {"name": c.name, "analytic": c.analytic, "numeric": c.numeric,
             "rel_error": c.rel_error, "ok": c.ok} for c in checks]}, indent=2))
    else:
        if moved:
            print(f"{', '.join(moved)}: constant at initialisation, checked at it plus "
                  f"N(0, 0.01) noise (off ReLU kinks)")
        width = max((len(c.name) for c in checks), default=4)
        for c in checks:
            print(f"{c.name:<{width}}  rel error {c.rel_error:.2e}  "
                  f"{'ok' if c.ok else 'FAIL'}")
        print(f"{'all passed' if ok else 'FAILED'}: {len(checks)} parameters, "
              f"tolerance {args.tol:g}")
    return 0 if ok else 1
