"""`seqgraph check SPEC`: parse, elaborate and check a spec, and say what it is."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from ..errors import DataError, SpecError, UsageError
from ..graph import unfold as U
from ..graph.check import check
from ..graph.folded import fed_back
from ..graph.leaks import target_leaks
from ..graph.printer import folded_text
from ..graph.report import report
from ..graph.report import text as report_text
from ..model import read_spec
from ..train.config import make_config, parse_sets
from ..train.loaders import set_file_errors, spec_file_errors
from . import parse_dims

HELP = "check a spec and print its variables, parameters and recurrences"


def add_arguments(p):
    p.add_argument("spec", help="the .sg file")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="bind a size name (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="check a train-block override as `seqgraph train` would take it, "
                        "e.g. --set batch=16 (repeatable)")
    p.add_argument("--dump", choices=["folded", "unfolded"],
                   help="print the canonical text form of the folded or unfolded graph")
    p.add_argument("--explain", action="store_true",
                   help="say how the compiled executor runs each part, and what falls back "
                        "to the interpreter (unbound sizes default to 5)")
    p.add_argument("--steps", type=int, metavar="T",
                   help="steps of every sequence index: for --dump unfolded (default 3), "
                        "and the BPTT window of the report (default: the train block's "
                        "bptt, else 64); for example data (tagged, pairs, ...), an "
                        "example's length (default 64; a series' window); for a tree "
                        "model, the nodes of a tree")
    p.add_argument("--batch", type=int, metavar="B",
                   help="examples per batch for the report's memory estimate (default: "
                        "the train block's batch, else 32)")


def run(args) -> int:
    spec = read_spec(args.spec, dims=parse_dims(args.dim))
    checked = check(spec.graph, parse_dims(args.dim, spec))
    sets = parse_sets(args.set)
    cfg = make_config(spec.train, sets, Path(args.spec).resolve().parent)
    for msg, pos in spec.graph.warnings:
        where = f"{args.spec}:{pos.line}:{pos.column}: " if pos else f"{args.spec}: "
        print(f"{where}warning: {msg}", file=sys.stderr)
    for line in data_warnings(spec, cfg):
        print(line, file=sys.stderr)
    loader_fits(spec, cfg)
    for msg in target_leaks(checked, cfg.data):   # the data `--set` names, if it does
        print(f"{args.spec}: warning: {msg}", file=sys.stderr)
    if args.dump == "folded":
        sys.stdout.write(folded_text(checked))
    elif args.dump == "unfolded":
        steps = 3 if args.steps is None else args.steps
        if steps < 1:
            raise UsageError("--steps must be at least 1")
        lengths = {i: steps for i, k in spec.graph.indexes if k == "seq"}
        if any(k == "tree" for _, k in spec.graph.indexes):
            raise UsageError("--dump unfolded is for sequence models; render a tree with "
                             "`seqgraph render SPEC --tree ...`")
        sys.stdout.write(U.text(spec.graph, lengths))
    else:
        for name, value in (("--steps", args.steps), ("--batch", args.batch)):
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1")
        sys.stdout.write(summary(checked))
        sys.stdout.write(report_text(report(checked, args.steps, args.batch, sets)))
    if args.explain:
        sys.stdout.write(explain_text(spec, parse_dims(args.dim, spec)))
    return 0


def data_warnings(spec, cfg) -> list[str]:
    """The data files `train` would not find. `check` reads no data, so these are
    warnings: a spec may be checked on a machine without its data. A file the spec names
    is shown at its place in the spec; one `--set` names, with the flag."""
    return [e.render("warning") for e in spec_file_errors(spec.graph, cfg)] + \
        [f"--set {key}: warning: {e}" for key, e in set_file_errors(cfg)]


def loader_fits(spec, cfg) -> None:
    """The error `train` gives for a loader that cannot feed the model by the kinds of
    its variables (no file is read: that is train's); at the spec's `data = ...` line
    when it names the loader (not a --set)."""
    from ..train.binding import check_kind
    from ..train.trees import tree_vars
    name = getattr(cfg.data, "name", None)
    try:
        if name == "trees":
            tree_vars(spec.graph)
        elif name is not None:
            check_kind(spec.graph, name)
    except DataError as e:
        call = spec.train.get("data")
        if e.line is not None or call != cfg.data or not getattr(call, "pos", None) or \
                not call.pos.line:
            raise
        what, _, fits = e.message.partition("; the loaders that fit")
        raise SpecError(what, call.pos, file=spec.path, source=spec.source,
                        hint=f"the loaders that fit{fits}" if fits else "") from None


def explain_text(spec, dims) -> str:
    from ..compile import explain
    from ..model import Model
    bound = {n: 5 for n in spec.unbound_dims()}
    bound.update(dims)
    model = Model(spec, dims=bound, dtype="float32", executor="compiled")
    return "\ncompiled executor:\n" + "".join(f"  {line}\n" for line in explain(model))


def _count(shape) -> str:
    total, symbolic = 1, []
    for d in shape:
        if d.is_int:
            total *= d.const
        else:
            symbolic.append(f"({d})" if "+" in str(d) or "-" in str(d) else str(d))
    return "*".join(([str(total)] if total != 1 or not symbolic else []) + symbolic)


def summary(checked) -> str:
    g = checked.graph
    lines = [f"model {g.name} ({g.path})", "", "variables:"]
    outputs = {loss.output.var for loss in g.losses}
    for v in g.vars:
        ix = f"[{', '.join(v.indexes)}]" if v.index else ""
        role = "output" if v.role == "hidden" and v.name in outputs else v.role
        kind = f"{role} {v.kind}" if v.kind else role
        lines.append(f"  {v.name + ix:<16} {kind:<16} size {checked.sizes[v.name]}")
    lines += ["", "parameters:"]
    total, symbolic = 0, False
    for p in g.params:
        shape = checked.param_shapes.get(p.name, ())
        if not shape:           # declared but never used (a warning): it has no values
            lines.append(f"  {p.name:<16} unused".ljust(40) + " 0")
            continue
        n = _count(shape)
        # the count's constant term: all of it when bound; 4*(V+4) adds its 16, and
        # the terms in V are said after the total
        total += math.prod(d.const for d in shape)
        symbolic = symbolic or not n.isdigit()
        lines.append(f"  {p.name:<16} [{', '.join(map(str, shape))}]".ljust(40) + f" {n}")
    tail = " + terms in unbound sizes" if symbolic else ""
    lines.append(f"  total {total}{tail}")
    lines += ["", "recurrences:"]
    for r in checked.recurrences:
        way = "forward in time" if r.direction < 0 else "backward in time"
        if g.index_kinds.get(r.index) == "tree":
            way = "up the tree (children first)"
        lines.append(f"  {', '.join(r.vars)}: over {r.index}, {way}, delays "
                     f"{' '.join(r.delays)}; parameters {', '.join(r.params)}")
    fed = [v.name for v in g.targets() if fed_back(g, v.name)]
    if not checked.recurrences and fed:     # Fig. 10.4-10.6: the loop is the output's
        lines.append(f"  none in training: the only loop runs through the target "
                     f"{', '.join(fed)} read back, which the data gives (teacher forcing: "
                     f"every step at once); generation runs it step by step")
    elif not checked.recurrences:
        lines.append("  none (a feed-forward model)")
    unbound = checked.unbound()
    if unbound:
        lines += ["", f"unbound sizes: {', '.join(sorted(unbound))} (the data or --dim "
                  "binds them)"]
    return "\n".join(lines) + "\n"
