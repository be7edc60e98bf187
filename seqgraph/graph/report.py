"""The static report of `seqgraph check`: what training and generation will meet, read
off the equations alone (no data, no parameters).

For each recurrence: its direction, delays and parameters, and an estimate of the memory
back-propagation through time keeps: the backward pass needs the value of every variable
at every step of the window, so each hidden variable costs T x B x size x dtype bytes
(the intermediates inside an equation, the gradients and the optimiser come on top; the
number is an estimate, not a measurement).

Whether the model can generate: a sequence output is produced one step at a time, so
nothing it depends on may read a later step of the generated index (the index of its
target): not a backward recurrence over that index, not x[t+1], not h[end], and not the
target itself at the same step. Whether `seqgraph sample` generates at all follows its
own rule (`sample_mode` in graph/generate_check.py): a model whose target is not read
back, trained on example data (a tagger, a classifier, a series model), is labelled in
one forward pass instead, for which none of this matters.

Whether truncated BPTT cuts a dependency the loss needs: training cuts the generated
index (the target's, which a chars or words loader streams) into windows of `bptt`
steps and carries the state of a forward recurrence from one window into the next. A
delay longer than the window then always reads a carried value, which no gradient
crosses; a backward recurrence cannot be carried in from the window that follows, so it
restarts at the end of every window; `h[end]` and `h[1]` name the window's last and first
step, not the sequence's. Example data (`pairs`, `labeled`, `tagged`, `series`) is
not cut: each example is a whole sequence, T its length.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from .folded import ENDS, Shift, ShiftKind, fed_back
from .generate_check import sample_mode
from .sizes import Lin

DTYPE_BYTES = {"float32": 4, "float64": 8}
STREAMS = ("chars", "words")       # loaders whose token stream is cut into bptt windows


@dataclass
class Memory:
    """Bytes as a linear form in unbound size names: const + sum(coeff * name)."""
    const: int = 0
    terms: dict = field(default_factory=dict)

    def add(self, size: Lin, factor: int) -> None:
        self.const += size.const * factor
        for n, c in size.terms:
            self.terms[n] = self.terms.get(n, 0) + c * factor

    def __str__(self) -> str:
        parts = [human(self.const)] if self.const or not self.terms else []
        parts += [f"{human(c)} x {n}" for n, c in sorted(self.terms.items())]
        return " + ".join(parts)


def human(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


@dataclass
class RecurrenceInfo:
    vars: tuple
    index: str | None
    direction: str           # 'forward in time' | 'backward in time' | 'up the tree ...'
    delays: tuple
    params: tuple
    memory: Memory           # its variables' values over T steps and B examples


@dataclass(kw_only=True)
class Report:
    steps: int
    batch: int
    dtype: str
    steps_from: str           # 'train block bptt' | '--steps' | 'default'
    batch_from: str
    recurrences: list
    memory: Memory            # every hidden variable
    generated: str | None     # the index a sequence output is generated over
    can_generate: bool | None     # None: no sequence output
    generate_reasons: list     # why not
    window: str | None         # the index truncated BPTT cuts into windows
    cuts: list                 # dependencies truncated BPTT cuts (sentences)
    no_window: str = ""        # why nothing is cut into windows
    tree: bool = False         # a recursive net: steps are the nodes of a tree
    loader: str | None = None  # the data's loader (chars, tagged, ...), None: not named
    sample: str | None = None  # what `seqgraph sample` does: 'generate' | 'one pass' | None
    sample_says: str = ""      # the same, in a sentence
    node_labels: bool = False  # a target at every node of a tree (else one a tree)
    no_loader: bool = False    # a tree beside a sequence, not as treepairs feeds it
    both: bool = False         # a tree beside a sequence: N counts nodes and steps
    stream_fits: bool = True   # a token stream could feed it (else only examples)
    has_loss: bool = True      # a model without a loss trains nothing and generates nothing

    @property
    def examples(self) -> bool:
        """Example data: whole sequences, not one stream cut into bptt windows (the data
        named, or, when none is, the only data that fits the model)."""
        return self.loader not in STREAMS and (self.loader is not None or
                                               not self.stream_fits)


def _direction(graph, r) -> str:
    if graph.index_kinds.get(r.index) == "tree":
        return "up the tree (children first)"
    return "forward in time" if r.direction < 0 else "backward in time"


def _train_int(train: dict, sets: dict, key: str, default: int) -> tuple[int, str]:
    v = sets.get(key, train.get(key))
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
        return v, f"--set {key}" if key in sets else f"the train block's {key}"
    return default, "default"


def _steps(train: dict, sets: dict, loader) -> tuple[int, str]:
    """T and where it comes from: a stream's bptt window; a series' window of rows (its
    `window`, else bptt, as the loader reads it); other example data is whole sequences
    of the data's lengths, which the report cannot know: 64."""
    name = getattr(loader, "name", None)
    if name in (None, *STREAMS, "trees"):         # a tree's nodes: as before, bptt or 64
        return _train_int(train, sets, "bptt", 64)
    window = loader_args(loader).get("window") if name == "series" else None
    if isinstance(window, int) and window >= 1:
        return window, "the series' window"
    if name == "series":
        return _train_int(train, sets, "bptt", 64)
    return 64, "default"


def report(checked, steps: int | None = None, batch: int | None = None,
           sets: dict | None = None) -> Report:
    """`steps` and `batch` from the command line, else `sets` (`--set` values over the
    train block), else the train block, else the defaults."""
    g = checked.graph
    train, sets = g.train_config, sets or {}
    data = sets.get("data", train.get("data"))
    loader = getattr(data, "name", None)
    if steps is None:
        steps, steps_from = _steps(train, sets, data)
    else:
        steps_from = "--steps"
    if batch is None:
        batch, batch_from = _train_int(train, sets, "batch", 32)
    else:
        batch_from = "--batch"
    dtype = str(sets.get("dtype", train.get("dtype", "float32")))
    nbytes = DTYPE_BYTES.get(dtype, 4)

    def var_memory(names) -> Memory:
        m = Memory()
        for n in names:
            v = g.var(n)
            if v.role != "hidden":
                continue
            per = batch * nbytes * (steps if v.index is not None else 1)
            m.add(checked.sizes[n], per)
        return m

    recs = [RecurrenceInfo(r.vars, r.index, _direction(g, r), r.delays, r.params,
                           var_memory(r.vars)) for r in checked.recurrences]
    total = var_memory([v.name for v in g.hidden()])
    mode = sample_mode(g, loader)       # what `seqgraph sample` does with the model
    generated, ok, reasons = _generation(checked, mode)
    window, cuts = _truncation(checked, steps)
    no_window = "no sequence target: nothing is cut into windows"
    if window is not None and loader is not None and loader not in STREAMS:
        no_window = (f"data = {loader}(...) gives whole examples, not one stream cut "
                     f"into windows (this check is for {' and '.join(STREAMS)} streams)")
        window, cuts = None, []
    elif window is not None and loader is None and not _stream_fits(g):
        no_window = (f"no stream ({' or '.join(STREAMS)}) can feed this model, and the "
                     f"example data that can gives whole examples, not windows")
        window, cuts = None, []
    tree = "tree" in g.index_kinds.values()
    if tree:
        no_window = "a tree is processed whole (back-propagation through structure)"
        if g.tree_and_sequence:             # and a sequence: whole examples, or no data
            window, cuts = None, []
            no_window += "; so is its sequence (" + (
                "treepairs gives whole examples)" if g.tree_encoder else
                "no loader cuts it into windows)")
    return Report(
        steps=steps, batch=batch, dtype=dtype, steps_from=steps_from, batch_from=batch_from,
        recurrences=recs, memory=total, generated=generated, can_generate=ok,
        generate_reasons=reasons, window=window, cuts=cuts, no_window=no_window, tree=tree,
        loader=loader, sample=mode, sample_says=_sample_says(g, loader, mode, ok),
        node_labels=any(g.index_kinds.get(v.index) == "tree" for v in g.targets()),
        no_loader=g.tree_and_sequence is not None and not g.tree_encoder,
        both=g.tree_and_sequence is not None, stream_fits=_stream_fits(g),
        has_loss=bool(g.losses))


def loader_args(call) -> dict:
    """The arguments of a loader call by name (`series("s.csv", ["a"])` ->
    {"path": "s.csv", "inputs": ["a"]}), as the loader function would take them."""
    import inspect

    from ..train.loaders import LOADERS
    from ..train.trees import trees
    fn = {**LOADERS, "trees": trees}.get(getattr(call, "name", None))
    if fn is None:
        return {}
    return {**dict(zip(inspect.signature(fn).parameters, call.args, strict=False)), **call.kwargs}


# ------------------------------------------------------------------------ generation
def _seq_targets(g) -> list:
    """(output, target) of every loss whose target runs over a sequence index."""
    out = []
    for loss in g.losses:
        y = g.var(loss.target.var)
        if y.index is not None and g.index_kinds.get(y.index) == "seq":
            out.append((loss.output.var, y))
    return out


def _reads_future(shift: Shift) -> bool:
    return (shift.kind == ShiftKind.REL and shift.k > 0) or shift.kind == ShiftKind.END


def _generation(checked, mode: str | None):
    """(generated index, can generate, reasons): an output over index I must not depend
    on a later step of I, nor on its own target at the same step. `mode`: what sample
    does (`_sample_mode`), which decides what the sampler's own check says."""
    g = checked.graph
    pairs = _seq_targets(g)
    if not pairs:
        return None, None, []
    G = g.nx()
    reasons = []
    index = pairs[0][1].index
    for out, y in pairs:
        I = y.index
        up = nx.ancestors(G, out) | {out}
        for r in checked.recurrences:
            if r.index == I and r.direction > 0 and up & set(r.vars):
                reasons.append(f"the backward recurrence {', '.join(r.vars)} over {I} "
                               f"feeds the output {out}: {out}[{I}] would read steps not "
                               "generated yet")
        in_backward = {v for r in checked.recurrences if r.direction > 0 for v in r.vars}
        for u, v, s in G.edges(data="shift"):
            if v not in up or g.var(u).index != I:
                continue
            if _reads_future(s) and not (u in in_backward and v in in_backward):
                reasons.append(f"{v} reads {u}[{s.show(I)}], a later step of {I}, and "
                               f"feeds the output {out}")
            elif u == y.name and not s.is_delay and s.kind == ShiftKind.REL:
                reasons.append(f"{v} reads the target {u}[{I}] of its own step and feeds "
                               f"the output {out}: it would read the answer it is asked for")
    reasons += _sampler_check(g, mode)
    return index, not reasons, list(dict.fromkeys(reasons))


def _sample_says(g, loader: str | None, mode: str | None, ok: bool | None) -> str:
    """What `seqgraph sample` does with the model, in a sentence (cmd/sample.py); a
    model to generate that cannot be generated step by step (`ok` False) it refuses."""
    if g.tree_and_sequence and not g.tree_encoder:
        return ("seqgraph sample does not run it: no loader reads its data (the Python "
                "API runs it: Model.run with forest=...)")
    y = next((v for v in g.targets() if v.index is not None), None) or \
        next(iter(g.targets()), None)
    if y is None or (mode != "one pass" and y.index is None):    # nothing to generate
        return ""
    at = f"{y.name}[{y.index}]" if y.index else y.name
    data = f"data = {loader}(...)" if loader else "the train block names no data"
    if mode == "one pass":
        tree = g.index_kinds.get(y.index) == "tree"
        verb = "labels every node of the tree" if tree else \
            "labels the tree's root" if "tree" in g.index_kinds.values() else \
            "labels" if y.kind == "class" else "forecasts each step of"
        why = f"{at} is one label for the whole example" if y.index is None else \
            f"its target {at} is not read back" + ("" if tree else
                                                  f" (no {y.name}[{y.index}-1])")
        return (f"seqgraph sample {verb} --input in one pass ({data}): {why}, so it is not "
                f"generated step by step")
    if mode == "generate" and ok is False:
        return (f"seqgraph sample refuses it ({data}): it would generate {at} step by "
                f"step, which this model cannot (below)")
    if mode == "generate" and loader in STREAMS:
        return (f"seqgraph sample continues --prime, generating {at} step by step "
                f"({data}: a language model)")
    if mode == "generate" and g.tree_encoder:           # treepairs data
        fed = f", each output read back as {y.name}[{y.index}-1] by the next step" \
            if fed_back(g, y.name) else ""
        return (f"seqgraph sample writes {at} for the tree --input step by step "
                f"({data}){fed}")
    if mode == "generate":
        return (f"seqgraph sample writes {at} for --input step by step ({data}), each "
                f"output read back as {y.name}[{y.index}-1] by the next step")
    return (f"what seqgraph sample does depends on the data, and the train block names "
            f"none: with chars or words data (a language model) it generates {at} step "
            f"by step; with example data (tagged, pairs, ...) it labels --input in one "
            f"pass, as {at} is not read back")


def _sampler_check(g, mode: str | None) -> list:
    """The reason `seqgraph sample` would refuse to generate the model
    (graph/generate_check.py, its own check of the class targets it writes), so the
    report never says more than the sampler allows. A model it labels in one pass never
    meets that check; one whose data is not named may or may not (a stream generates,
    example data labels), so neither says the sampler refuses it."""
    from .generate_check import can_generate, generated_targets
    if mode == "one pass" or not generated_targets(g):
        return []
    ok, why = can_generate(g, not_sampled=mode == "generate")
    if ok:
        return []
    return [f"seqgraph sample refuses it: {why}" if mode == "generate" else
            f"seqgraph sample's own check, for chars or words data: {why}"]


# ------------------------------------------------------------------------ truncation
def _stream_fits(g) -> bool:
    """Could a token stream feed the model (the rule of train/binding.py's stream_vars,
    by kinds)? One class target over a sequence index, and one one-hot input on that
    same index, or none when the target is read back (`R @ y[t-1]`)."""
    ys = [v for v in g.targets() if v.kind == "class" and v.index is not None]
    if len(ys) != 1 or len(g.targets()) != 1:
        return False
    ins = g.inputs()
    if not ins:
        return fed_back(g, ys[0].name)
    return len(ins) == 1 and ins[0].kind == "onehot" and ins[0].index == ys[0].index


def _truncation(checked, bptt: int):
    """(windowed index, sentences): what cutting the target's index into windows of
    `bptt` steps does to the dependencies the loss needs."""
    g = checked.graph
    pairs = _seq_targets(g)
    if not pairs:
        return None, []
    I = pairs[0][1].index
    G = g.nx()
    need = set()
    for out, _ in pairs:
        need |= nx.ancestors(G, out) | {out}
    cuts = []
    for u, v, s in G.edges(data="shift"):
        if v not in need or g.var(u).index != I or g.var(v).index != I:
            continue
        if s.kind == ShiftKind.REL and abs(s.k) > bptt and s.k < 0:
            cuts.append(f"{v} reads {u}[{s.show(I)}]: a delay of {-s.k} steps is longer "
                        f"than the bptt window of {bptt}, so it always reads the state "
                        f"carried from an earlier window and no gradient flows along it")
        elif s.kind in ENDS:
            which = "last" if s.kind == ShiftKind.END else "first"
            cuts.append(f"{v} reads {u}[{s.show(I)}]: in training that is the {which} "
                        f"step of each window of {bptt}, not of the whole sequence")
    for r in checked.recurrences:
        if r.index == I and r.direction > 0 and need & set(r.vars):
            cuts.append(f"the backward recurrence {', '.join(r.vars)} runs over {I}, "
                        f"the windowed index: it cannot be carried in from the next window, "
                        f"so it restarts at the end of every window of {bptt} steps and "
                        f"sees only the rest of its window")
    return I, list(dict.fromkeys(cuts))


# ------------------------------------------------------------------------ text
def text(rep: Report) -> str:
    """The report as lines for `seqgraph check`."""
    steps, examples, T, step = \
        ("nodes a tree and as many steps of its sequence", "examples", "N",
         "node and step") if rep.both else \
        ("nodes a tree", "trees", "N", "node") if rep.tree else \
        ("steps an example", "examples", "T", "step") if rep.examples else \
        ("steps", "examples", "T", "step")
    steps_from = f"{rep.steps_from}; --steps" if rep.examples and not rep.tree and \
        rep.steps_from != "--steps" else rep.steps_from
    lines = ["", f"memory BPTT keeps (estimate) for {T} = {rep.steps} {steps} "
                 f"({steps_from}), B = {rep.batch} {examples} ({rep.batch_from}), "
                 f"{rep.dtype}:"]
    for r in rep.recurrences:
        lines.append(f"  {', '.join(r.vars)} ({r.direction} over {r.index}, delays "
                     f"{' '.join(r.delays)}): {r.memory}")
    lines.append(f"  all variables: {rep.memory}")
    if rep.memory.terms:
        names = ", ".join(sorted(rep.memory.terms))
        lines.append(f"  ({names} unbound: --dim binds {'them' if ',' in names else 'it'})")
    lines += [f"  counted: every hidden variable's value at every {step}, {T} x B x size x "
              f"{DTYPE_BYTES.get(rep.dtype, 4)} bytes;",
              "  the intermediates inside each equation, the gradients and the optimiser "
              "come on top"]
    lines += ["", "generation:"] + ([f"  {rep.sample_says}"] if rep.sample_says else [])
    if rep.no_loader:
        pass                                   # sample_says it all
    elif rep.can_generate is None:
        lines.append("  no sequence output: the loss reads a target at every node of a "
                     "tree" if rep.node_labels else
                     "  no sequence output: the loss reads a per-example target"
                     if rep.has_loss else "  nothing to generate: the model has no loss")
    elif rep.can_generate:
        lines.append(f"  can generate step by step over {rep.generated}: no output reads "
                     f"a later step of {rep.generated} or its own target")
    else:
        unneeded = ", which labelling in one pass does not need" \
            if rep.sample == "one pass" else ""
        lines.append(f"  cannot generate step by step over {rep.generated}{unneeded}:")
        lines += [f"    {r}" for r in rep.generate_reasons]
    lines += ["", "truncated BPTT:" if rep.tree or rep.examples else
              f"truncated BPTT (windows of {rep.steps} steps):"]
    if rep.window is None:
        lines.append(f"  {rep.no_window}")
    elif not rep.cuts:
        lines.append(f"  cuts no dependency the loss needs over {rep.window}: forward "
                     f"recurrences are carried from window to window, and gradients reach "
                     f"back at most {rep.steps} steps")
    else:
        lines.append(f"  cuts dependencies the loss needs over {rep.window}:")
        lines += [f"    {c}" for c in rep.cuts]
    return "\n".join(lines) + "\n"
