"""`seqgraph render SPEC -o FILE.{svg,png,dot}`: draw the folded graph, or the unfolded
one over N steps (`--unfold N`)."""
from __future__ import annotations

import argparse
import math

from ..errors import UsageError, whole_number
from . import check_seed, parse_dims

HELP = "draw a model's folded graph (or its unfolding over N steps) as SVG, PNG or DOT"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the .sg file")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="FILE.svg, FILE.png (laid out by Graphviz) or FILE.dot")
    p.add_argument("--unfold", metavar="N",
                   help="draw the unfolded graph: N steps for every sequence index, "
                        "or one length per index: t=3,u=4")
    p.add_argument("--params", action="store_true",
                   help="show the parameters (with their shapes when known); the "
                        "folded graph only")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=SIZE",
                   help="bind a size name used but not declared (repeatable): --dim V=65")
    p.add_argument("--tree", metavar="TREE",
                   help='draw a tree model unfolded over one bracketed tree, e.g. '
                        '--tree "(3 (2 a) (3 film))"; a tree encoder with a decoder '
                        'takes its steps with --unfold N')
    p.add_argument("--overlay", choices=["jacobian"],
                   help="with --unfold: colour and label every edge from a state to a "
                        "later step with the measured Jacobian norm ||dv_t/du_k||")
    p.add_argument("--checkpoint", metavar="C",
                   help="for --overlay: the parameters to measure (default: the spec's "
                        "initialisation)")
    p.add_argument("--data", metavar="LOADER",
                   help="for --overlay: the text to measure on (default: the train "
                        "block's data, else random ids)")
    p.add_argument("--batch", type=int, metavar="B",
                   help="for --overlay: examples averaged over (default 8)")
    p.add_argument("--seed", type=int,
                   help="for --overlay: seed of the initialisation and of the batch")
    p.add_argument("--warmup", type=int, metavar="W",
                   help="for --overlay: run W steps of the text before the N drawn ones, "
                        "so the state is not the zero start (default 0)")


def parse_lengths(text: str, graph, tree: bool = False) -> dict:
    """`4` gives every sequence index 4 steps; `t=3,u=4` one length per index. A model
    over trees takes lengths only beside `--tree` (`tree`), for its sequence indexes."""
    seqs = [name for name, kind in graph.indexes if kind != "tree"]
    if any(kind == "tree" for _, kind in graph.indexes) and not tree:
        fix = "give a tree too, --tree \"(3 (2 a) (3 film))\" --unfold N" \
            if graph.tree_and_sequence else "draw one tree with --tree \"(3 (2 a) (3 film))\""
        raise UsageError("--unfold draws sequences; this model ranges over trees, "
                         f"which cannot be unfolded by a length: {fix}")
    text = text.strip()
    if whole_number(text):
        lengths = {name: int(text) for name in seqs}
    else:
        lengths = {}
        for part in filter(None, text.split(",")):
            name, eq, val = part.partition("=")
            name = name.strip()
            if not eq or not whole_number(val.strip()):
                raise UsageError(f"--unfold expects N or INDEX=N,..., got '{text}'")
            if name not in seqs:
                raise UsageError(f"--unfold: '{name}' is not a sequence index of this "
                                 f"model (its indexes: {', '.join(seqs) or 'none'})")
            lengths[name] = int(val)
        missing = [s for s in seqs if s not in lengths]
        if missing:
            raise UsageError(f"--unfold: no length for index {', '.join(missing)}")
    if any(n < 1 for n in lengths.values()):
        raise UsageError("--unfold: a length must be at least 1")
    if not lengths:
        raise UsageError("--unfold: this model has no sequence index to unfold")
    return lengths


def run(args) -> int:
    import seqgraph

    from .. import render

    render.check_output(args.output)          # a bad extension fails before any work
    _overlay_options_need_the_overlay(args)
    spec = seqgraph.read_spec(args.spec, dims=parse_dims(args.dim))
    dims = parse_dims(args.dim, spec)
    if args.params and (args.tree is not None or args.unfold):
        raise UsageError("--params draws the parameters on the folded graph; leave out "
                         f"{'--tree' if args.tree is not None else '--unfold'}")
    if args.tree is not None and args.overlay:
        raise UsageError("--overlay colours the Jacobian norms of a sequence model's "
                         "unfolding (a distance in time); --tree draws a tree without it")
    if args.tree is not None:                 # a tree model over one tree
        _tree_fits_an_image(args, spec.graph)
        lengths = parse_lengths(args.unfold, spec.graph, tree=True) if args.unfold else None
        render.write(render.tree_dot(spec, args.tree, lengths=lengths), args.output)
        print(f"wrote {args.output}")
        return 0
    if args.overlay and not args.unfold:
        raise UsageError("--overlay colours the unfolded graph: give --unfold N")
    if args.unfold:
        _fits_an_image(args, spec.graph, parse_lengths(args.unfold, spec.graph))
    if args.unfold and args.overlay:
        text = _overlay(args, spec, parse_lengths(args.unfold, spec.graph), dims)
    elif args.unfold:
        lengths = parse_lengths(args.unfold, spec.graph)
        text = render.unfolded_dot(spec, lengths)
    else:
        text = render.folded_dot(spec, params=args.params, dims=dims)
    render.write(text, args.output)
    print(f"wrote {args.output}")
    return 0


OVERLAY_OPTIONS = ("checkpoint", "data", "batch", "seed", "warmup")


def _overlay_options_need_the_overlay(args) -> None:
    """The options that say what the overlay measures draw nothing without it: a
    `--checkpoint` given to see a trained run's norms would otherwise draw the plain
    graph without a word (as `sample` refuses `--alpha` without `--beam`)."""
    if args.overlay:
        for name, default in (("batch", 8), ("seed", 0), ("warmup", 0)):
            if getattr(args, name) is None:
                setattr(args, name, default)
        check_seed(args.seed)
        return
    given = [f"--{name}" for name in OVERLAY_OPTIONS if getattr(args, name) is not None]
    if given:
        raise UsageError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for "
                         "--overlay jacobian, which measures the Jacobian norms it "
                         "draws: add --overlay jacobian --unfold N, or leave "
                         f"{'it' if len(given) == 1 else 'them'} out")


MAX_DRAWN = 400       # nodes of an unfolded graph laid out as an image


def _fits_an_image(args, graph, lengths: dict) -> None:
    """An unfolding too large to lay out as an image (minutes of layout, an unreadable
    picture: attention's e[u, t] grows as the square of the steps) is refused before
    the layout, with the number of steps that fits; a .dot file is written whatever its
    size."""
    if args.output.lower().endswith(".dot"):
        return
    n = _nodes(graph, lengths)
    if n <= MAX_DRAWN:
        return
    fit = _largest_fit(graph, lengths)
    show = ",".join(f"{i}={k}" for i, k in fit.items()) if len(set(fit.values())) > 1 \
        else str(next(iter(fit.values())))
    raise UsageError(f"--unfold {args.unfold} unfolds '{graph.name}' into {n} nodes, too "
                     f"many to lay out as a readable image (at most {MAX_DRAWN}): draw "
                     f"fewer steps (--unfold {show}), or write FILE.dot")


def _largest_fit(graph, lengths: dict) -> dict:
    """The longest unfolding that fits an image: every length scaled by m / K (K the
    longest; at least one step each), m the largest whose nodes fit. The nodes grow with
    m, so m is found by bisection (shrinking by a quarter at a time suggested 8 steps of
    attention.sg where 10 fit, and 90 of elman.sg where 100 do)."""
    K = max(lengths.values())

    def scaled(m: int) -> dict:
        return {i: max(1, k * m // K) for i, k in lengths.items()}
    lo, hi = 1, K              # scaled(1) is the smallest unfolding, fitting or not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _nodes(graph, scaled(mid)) <= MAX_DRAWN else (lo, mid - 1)
    return scaled(lo)


def _tree_fits_an_image(args, graph) -> None:
    """A tree too large to lay out as an image (measured: 67 s for a tree 120 deep, and
    a Graphviz time-out for 300) is refused before the layout; a .dot file is written
    whatever its size. Its nodes: one a bracket, each drawn once per variable over the
    tree and per loss line."""
    if args.output.lower().endswith(".dot"):
        return
    trees = {i for i, k in graph.indexes if k == "tree"}
    per_node = sum(v.index in trees for v in graph.vars) + \
        sum(graph.var(loss.output.var).index in trees for loss in graph.losses)
    nodes = args.tree.count("(")
    steps = 0                              # a decoder's steps (--unfold u=N) beside it
    if args.unfold:
        lengths = parse_lengths(args.unfold, graph, tree=True)
        steps = sum(math.prod(lengths.get(i, 1) for i in v.indexes) for v in graph.vars
                    if not set(v.indexes) & trees and v.indexes)
    if nodes * per_node + steps > MAX_DRAWN:
        raise UsageError(f"--tree: a tree of {nodes} nodes"
                         f"{f' and --unfold {args.unfold}' if steps else ''} unfolds "
                         f"'{graph.name}' into about {nodes * per_node + steps} nodes, too "
                         f"many to lay out as a readable image (at most {MAX_DRAWN}): draw "
                         f"a smaller tree{' or fewer steps' if steps else ''}, or write "
                         f"FILE.dot")


def _nodes(graph, lengths: dict) -> int:
    """The unfolded graph's nodes, counted without unfolding: a node per variable and
    step of each of its indexes (e[u, t]: U x T)."""
    return sum(math.prod(lengths.get(i, 1) for i in v.indexes) for v in graph.vars)


def _overlay(args, spec, lengths: dict, dims: dict) -> str:
    """The unfolded graph with every edge from a state to a later step coloured by
    the Jacobian norm measured on a batch of `lengths` steps."""
    from ..jacobian import edge_norms, open_params, overlay_dot, prepare
    if args.batch < 1:
        raise UsageError("--batch must be at least 1")
    if len(set(lengths.values())) > 1:
        raise UsageError("--overlay measures one length for every index: --unfold N")
    if args.warmup < 0:
        raise UsageError("--warmup must be 0 or more")
    steps = next(iter(lengths.values()))
    source = open_params(args.checkpoint, args.seed)
    setup = prepare(spec, [source], data=args.data, given=dims, steps=steps + args.warmup,
                    batch=args.batch, seed=args.seed)
    edges, states = edge_norms(setup.models[0], setup.inputs, setup.targets,
                               setup.lengths, first=args.warmup)
    if not edges:
        raise UsageError(f"{args.spec}: no edge from a state to another step to measure")
    warm = f", drawn from step {args.warmup + 1}" if args.warmup else ""
    note = f"batch: {setup.batch_from}{warm}\nparameters: {source.label}"
    return overlay_dot(spec, lengths, edges, states, note)
