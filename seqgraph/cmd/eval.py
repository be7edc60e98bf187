"""`seqgraph eval SPEC --checkpoint C`: loss per token, perplexity and accuracy."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import SpecError, UsageError

HELP = "score a trained model: loss per token, perplexity, accuracy"


def add_arguments(p) -> None:
    p.add_argument("spec", help="the .sg file")
    p.add_argument("--checkpoint", required=True, help="a checkpoint.npz (or its run directory)")
    p.add_argument("--data", metavar="LOADER",
                   help='a loader such as \'chars("test.txt")\' or a file read like the '
                        "training data (default: the held-out validation text)")
    p.add_argument("--executor", choices=["interp", "compiled"])
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from ..train.batches import eval_streams
    from ..train.evaluate import score
    from ..train.session import restore
    from .train import _checkpoint_in

    t = restore(args.spec, _checkpoint_in(args.checkpoint), args.executor)
    ids, file = eval_ids(t, args.spec, args.data)
    cfg = _config(t, args.spec)
    s = score(t.model, t.spec.graph, t.binding, eval_streams(ids, cfg.batch, cfg.bptt, file))
    if args.json:
        print(json.dumps(s.as_dict()))
        return 0
    acc = "" if s.accuracy is None else f"  accuracy {s.accuracy:.4f}"
    print(f"loss {s.loss:.4f} nats/token  perplexity {s.perplexity:.3f}{acc}  "
          f"({s.tokens} tokens of {file})")
    return 0


def _config(t, spec_path):
    from ..train.config import make_config
    return make_config(t.spec.train, {}, Path(spec_path).resolve().parent)


def eval_ids(t, spec_path: str, data: str | None):
    """Token ids to score and their file: `--data`, else the validation text the
    training run held out (the same split, encoded with the checkpoint's vocabulary)."""
    from ..train.data import encode, load_dataset
    from ..train.loaders import make_loader
    cfg = _config(t, spec_path)
    if data is None:
        ds = load_dataset(t.spec.graph, cfg, t.meta.get("dims"), t.vocab)
        if len(ds.valid) < 2:
            raise UsageError("the train block holds out no validation text (valid = 0): "
                             "pass --data")
        return ds.valid, ds.valid_file
    loader = make_loader(_loader_value(data, cfg), Path.cwd())
    if loader.kind != t.vocab.kind:
        raise UsageError(f"--data reads {loader.kind} but the model was trained on "
                         f"{t.vocab.kind}")
    return encode(loader, t.vocab), str(loader.path)


def _loader_value(text: str, cfg):
    """`chars("f.txt")` as a call; a bare path is read with the training loader's kind
    and options (e.g. the same jsonl field)."""
    from ..lang.parse import parse_value
    try:
        value = parse_value(text)
        if hasattr(value, "name"):
            return value
    except SpecError:
        pass
    base = cfg.data
    if base is None:
        raise UsageError(f"--data {text}: give a loader call such as 'chars(\"{text}\")'")
    return type(base)(base.name, (text, *base.args[1:]), dict(base.kwargs))
