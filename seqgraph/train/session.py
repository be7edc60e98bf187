"""What `train`, `eval` and `sample` share: choosing an executor, and
rebuilding a trained model (spec + checkpoint) with the dims and vocabulary it was
trained with."""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from ..errors import UsageError
from . import checkpoint as ck
from .binding import Binding
from .loaders import Vocab


def choose_executor(requested: str | None, quiet: bool = False) -> str:
    """The requested executor; by default the compiled one when this build has it,
    else the interpreter (with a note, since it is much slower)."""
    if requested:
        return requested
    try:
        mod = importlib.import_module("seqgraph.compile")
        if hasattr(mod, "CompiledExecutor"):
            return "compiled"
    except ImportError:
        pass
    if not quiet:
        print("note: the compiled executor is not available; using the interpreter",
              file=sys.stderr)
    return "interp"


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


def restore(spec_path: str, ckpt_path: str, executor: str | None = None,
            average: bool = False) -> Trained:
    """The model of `spec_path` with the parameters of `ckpt_path` (checked to belong
    to it), its bound dims, dtype and vocabulary; `average`: the moving averages a
    checkpoint.npz keeps (train key `average`) instead of its raw parameters."""
    from .. import Model, read_spec
    spec = read_spec(spec_path)
    c = ck.load(ckpt_path)
    meta = c.meta
    if "vocab" not in meta or "binding" not in meta:
        raise UsageError(f"{ckpt_path}: this checkpoint has no vocabulary; it was not "
                         f"written by seqgraph train")
    # only the sizes the spec leaves open come from the checkpoint: a size the spec now
    # declares differently must show up as a shape mismatch, not be overridden
    open_dims = spec.unbound_dims()
    dims = {k: v for k, v in meta.get("dims", {}).items() if k in open_dims}
    model = Model(spec, dims=dims, dtype=meta.get("dtype", "float32"),
                  executor=choose_executor(executor, quiet=True),
                  start_ids=(meta.get("binding") or {}).get("start_ids"))
    ck.restore_params(c, model.params, average)
    return Trained(spec, model, Vocab.from_json(meta["vocab"]), Binding(**meta["binding"]),
                   meta, c)
