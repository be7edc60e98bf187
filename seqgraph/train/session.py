"""What `train`, `eval` and `sample` share: choosing an executor, and
rebuilding a trained model (spec + checkpoint) with the dims and vocabulary it was
trained with."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SpecError, UsageError
from . import checkpoint as ck
from .binding import Binding
from .loaders import Vocab


def choose_executor(requested: str | None) -> str:
    """The requested executor; by default the compiled one (numba is a dependency: a
    broken install fails loudly, not with a silent 10-100x slower interpreter)."""
    return requested or "compiled"


def init_rule(value):
    """`param_init = uniform(0.1)` as the model's initialiser tuple ('uniform', 0.1)."""
    if value is None:
        return None
    name = getattr(value, "name", value)
    args = tuple(getattr(value, "args", ()))
    if not isinstance(name, str) or getattr(value, "kwargs", None):
        raise UsageError(f"param_init must be an initialiser such as uniform(0.1), "
                         f"not {value}")
    return (name, *args)


@dataclass
class Trained:
    """A model restored from a checkpoint, with what the data bound when it was trained."""
    spec: object
    model: object
    vocab: Vocab
    binding: Binding
    meta: dict
    checkpoint: ck.Checkpoint

    def trees(self, texts: list[str]) -> tuple[dict, dict, object]:
        """Bracketed trees, `["(3 (2 a) (3 film))", ...]`, as this tree model's batch:
        (inputs, targets, forest) for `model.run(inputs, targets, forest=forest)`, the
        words encoded with the run's vocabulary (an unknown one is `<unk>`), the trees
        read as its data was (`binarize`)."""
        from .trees import TreeLoader, binarizes, tree_arrays, tree_feeds
        if isinstance(texts, str):     # one tree
            texts = [texts]
        if self.binding.kind == "treepairs":
            raise UsageError(f"trees(): model '{self.spec.graph.name}' was trained on "
                             f"treepairs, a tree and a target a line: read such lines "
                             f"with examples([\"TREE\\tTARGET\", ...])")
        if self.binding.kind != "trees":
            raise UsageError(f"trees(): model '{self.spec.graph.name}' was not trained on "
                             f"trees")
        raw = tree_arrays(list(texts), "<trees>", binarizes(self.data_call()))
        ts = TreeLoader(Path("<trees>")).encode(raw, self.vocab)
        f, w, y = ts.batch(np.arange(len(ts)))
        inputs, targets = tree_feeds(self.binding, f, w, y)
        return inputs, targets, f

    def examples(self, lines: list[str]):
        """Lines written as this run's example data (`label<TAB>text`, `word/TAG ...`,
        `source<TAB>target`, `tree<TAB>target`; a series: its CSV, header first) as one
        batch in their order, read with the run's loader options and vocabulary:
        `.inputs`, `.targets` and `.lengths` for `model.run(b.inputs, b.targets,
        lengths=b.lengths)` (ids padded with -1; `.lengths` None when no example is
        shorter), and for trees (`treepairs`) `.forest`: `forest=b.forest`. A blank line
        is refused (each line is a row); an error names `<examples>` and the line."""
        import tempfile

        from ..errors import DataError
        from .binding import fit_loader
        from .data import encode_examples
        from .loaders import make_loader
        if isinstance(lines, str):
            lines = lines.splitlines()
        if not self.binding.examples or self.binding.kind == "trees":
            what = "trees: use trees(texts)" if self.binding.kind == "trees" else \
                "a token stream: encode its text with vocab.encode(tokens)"
            raise UsageError(f"examples(): model '{self.spec.graph.name}' was trained on "
                             f"{what}")
        blank = next((n for n, line in enumerate(lines, 1) if not line.strip()), None)
        if blank is not None or not lines:
            raise DataError("a blank line: each line is a row of the batch" if lines else
                            "no lines", file="<examples>", line=blank)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "examples.txt"
            path.write_text("".join(f"{line}\n" for line in lines))
            try:
                loader = fit_loader(self.spec.graph, make_loader(self._data_call(path), d),
                                    self.meta.get("dims"))
                bptt = ((self.meta.get("state") or {}).get("config") or {}).get("bptt", 64)
                ex = encode_examples(self.spec.graph, loader, loader.read(), self.vocab,
                                     self.binding, "<examples>", bptt)  # a series' window
            except DataError as e:          # the temporary file is no name to give
                raise DataError(e.message, file="<examples>", line=e.line) from None
        b = ex.batch(np.arange(len(ex)))
        data = b.inputs                   # the input, and the targets (as training splits)
        b.inputs = {k: v for k, v in data.items() if k == self.binding.input}
        b.targets = {k: v for k, v in data.items() if k != self.binding.input}
        return b

    def data_call(self):
        """The run's data loader call: the one `--set` gave (recorded in the checkpoint),
        else the spec's; None when neither names one."""
        from ..lang.ast import Call
        r = (self.meta.get("loaders") or {}).get("data")
        return Call(r["loader"], tuple(r["args"]), dict(r["kwargs"])) \
            if isinstance(r, dict) else dict(self.spec.train or {}).get("data")

    def _data_call(self, path: Path):
        """The run's data loader call reading `path` instead: its options without its
        file, which need not be there."""
        from ..lang.ast import Call
        call = self.data_call()
        if call is None:
            raise UsageError("examples(): the run names no data loader")
        args, kwargs = tuple(call.args), dict(call.kwargs)
        if "path" in kwargs:
            kwargs["path"] = str(path)
        else:
            args = (str(path), *args[1:])
        return Call(call.name, args, kwargs)

    def __repr__(self) -> str:       # the vocabulary and the arrays are long
        return (f"Trained(model '{self.spec.graph.name}' of {self.spec.path}, "
                f"{len(self.vocab)} symbols, checkpoint {self.checkpoint.path})")


def checkpoint_in(path: str) -> str:
    """A run's checkpoint: DIR/checkpoint.npz for a run folder (or a path without a
    suffix), else the file given."""
    p = Path(path)
    if p.is_file():
        return str(p)
    return str(p / "checkpoint.npz") if p.is_dir() or not p.suffix else str(p)


def restore(spec_path: str, ckpt_path: str, executor: str | None = None,
            average: bool = False) -> Trained:
    """The model of `spec_path` with the parameters of `ckpt_path` (checked to belong
    to it), its bound dims, dtype and vocabulary; `average`: the moving averages a
    checkpoint.npz keeps (train key `average`) instead of its raw parameters."""
    from .. import Model, read_spec
    ckpt_path = checkpoint_in(str(ckpt_path))
    c = ck.load(ckpt_path)
    spec = read_spec(spec_path, bound=ck.run_dims(c))   # what its sizes are, if need be
    meta = c.meta
    if "vocab" not in meta or "binding" not in meta:
        raise UsageError(f"{ckpt_path}: this checkpoint has no vocabulary; it was not "
                         f"written by seqgraph train")
    dims = ck.model_dims(c, spec.unbound_dims())
    try:
        model = Model(spec, dims=dims, dtype=meta.get("dtype", "float32"),
                      executor=choose_executor(executor),
                      start_ids=(meta.get("binding") or {}).get("start_ids"))
    except (UsageError, SpecError):
        was = meta.get("model", "?")
        if was == spec.name:
            raise
        # a size the checkpoint does not bind, or sizes that do not fit the spec:
        # another model's, said as such
        raise UsageError(f"{ckpt_path}: was saved from model '{was}', not from model "
                         f"'{spec.name}' of {spec_path}: give the checkpoint of a run of "
                         f"this spec") from None
    ck.check_model(c, spec.name, {k: p.shape for k, p in model.params.items()}, spec_path,
                   fix="give the checkpoint of a run of this spec")   # another model: said
    ck.restore_params(c, model.params, average)
    binding = Binding(**meta["binding"])
    _same_targets(spec, binding, ckpt_path, meta.get("model", "?"))
    return Trained(spec, model, Vocab.from_json(meta["vocab"]), binding, meta, c)


def _same_targets(spec, binding: Binding, ckpt_path: str, was: str) -> None:
    """The data's variables are the spec's, with the same kind of target: a model with
    the same parameters may read its labels otherwise (one a tree against one a node),
    and would be run on arrays of the wrong shape."""
    graph = spec.graph
    names = [n for n in (binding.input, binding.target) if n]
    missing = [n for n in names if n not in graph.var_map]
    if missing:
        raise UsageError(f"{ckpt_path}: its run (model '{was}') fed '{missing[0]}', which "
                         f"{spec.path} does not declare: give the checkpoint of a run of "
                         f"this spec")
    said = reads_labels(graph, binding)
    if said is not None:
        raise UsageError(f"{ckpt_path}: its run (model '{was}') read {binding.target} as "
                         f"{said[0]}; {spec.path} reads it as {said[1]}: give the "
                         f"checkpoint of a run of this spec")


def reads_labels(graph, binding: Binding) -> tuple[str, str] | None:
    """None when `graph` reads the binding's target as its run did (one label an example
    or tree, or one a step or node); else (how the run read it, how `graph` does)."""
    if binding.target not in graph.var_map:     # renamed: nothing to compare here
        return None
    tree = binding.kind == "trees"
    was = binding.root_target if tree else binding.kind == "labeled"
    now = graph.var(binding.target).index is None
    if was == now:
        return None
    one = "one label a tree (its root's)" if tree else "one label an example"
    every = "a label at every node" if tree else "a label at every step"
    return (one, every) if was else (every, one)


# ------------------------------------------------------------ the data a run read
def loader_record(value, base) -> object:
    """A train-block `data` or `valid` value as the checkpoint keeps it: a loader call as
    JSON with its file made absolute (the run's own file, wherever it is scored from),
    a held-out fraction as itself."""
    if not hasattr(value, "name"):
        return value
    args, kwargs = list(value.args), dict(value.kwargs)

    def absolute(p):
        if not isinstance(p, str) or p.startswith("pkg:") or Path(p).is_absolute():
            return p
        return str((Path(base) / p).resolve())
    if "path" in kwargs:
        kwargs["path"] = absolute(kwargs["path"])
    elif args:
        args[0] = absolute(args[0])
    return {"loader": value.name, "args": args, "kwargs": kwargs}


def set_loaders(cfg) -> dict:
    """What the checkpoint keeps of the data and valid values `--set` gave (those the
    spec names stay the spec's, relative to it, so a project folder can move)."""
    return {key: loader_record(getattr(cfg, key), base)
            for key, base in (("data", cfg.base), ("valid", cfg.valid_base))
            if key in cfg.from_set}


def recorded_sets(meta: dict, checkpoint: str, given=()) -> dict:
    """The `--set` data and valid a run was trained with (`set_loaders`), as values for
    `make_config`, but those `given` again; a recorded file that is not there is said as
    the checkpoint's."""
    from ..lang.ast import Call
    from .loaders import DataError, loader_path, resolve_path
    out = {}
    for key, r in (meta.get("loaders") or {}).items():
        if key in given:
            continue
        if not isinstance(r, dict):
            out[key] = r                       # a held-out fraction
            continue
        call = Call(r["loader"], tuple(r["args"]), r["kwargs"])
        path = loader_path(call)
        try:
            resolve_path(str(path))
        except DataError as e:
            raise UsageError(f"{checkpoint}: this run was trained with --set {key}="
                             f"{call.name}(\"{path}\", ...), and that file cannot be read "
                             f"({e.message}); give --set {key}=... again (train --resume) "
                             f"or --data (eval)") from None
        out[key] = call
    return out


def run_cut(meta: dict) -> dict:
    """How a run's validation cut a text: its `batch`, `bptt` and `ranks` (an MPI run
    validated ranks x batch streams), from a checkpoint's state or a best.npz's or an
    epoch file's `cut`; ranks 1 alone for a checkpoint that records neither (eval then
    takes the spec's batch and bptt)."""
    if isinstance(meta.get("cut"), dict):
        return meta["cut"]
    cfg = (meta.get("state") or {}).get("config") or {}
    ranks = (meta.get("distributed") or {}).get("ranks", 1)
    return {**{k: cfg[k] for k in ("batch", "bptt") if k in cfg}, "ranks": ranks}


def trained_config(t: Trained, spec_path: str):
    """The train configuration of the spec, with the data and valid loaders the run was
    trained on when `--set` gave them: `eval` scores what that run held out, not another
    file read with another vocabulary."""
    from .config import make_config
    cfg = make_config(t.spec.train, recorded_sets(t.meta, t.checkpoint.path),
                      Path(spec_path).resolve().parent)
    # a text is validated as `batch` streams of `bptt` windows, each stream starting
    # from zero: its score depends on them, so eval cuts it as the run did, with the
    # values it trained with (`--set batch=4` too, not the spec's)
    ran = run_cut(t.meta)
    cut = {k: ran[k] for k in ("batch", "bptt") if isinstance(ran.get(k), int)
           and not isinstance(ran.get(k), bool) and ran[k] >= 1}
    return dataclasses.replace(cfg, **cut)
