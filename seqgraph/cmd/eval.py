"""`seqgraph eval SPEC --checkpoint C`: loss per token, perplexity, accuracy, and what the
data's kind is judged by (exact match and error rates for pairs, mse for series, the
baselines)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import UsageError
from ..graph.folded import LossFn
from . import output_file, writing

HELP = "score a trained model: loss per token, perplexity, accuracy, error rates, mse"


def add_arguments(p) -> None:
    p.add_argument("spec", help="the .sg file")
    p.add_argument("--checkpoint", required=True, help="a checkpoint.npz (or its run directory)")
    p.add_argument("--data", metavar="LOADER",
                   help='a loader such as \'chars("test.txt")\' or a file read like the '
                        "training data (default: the held-out validation data)")
    p.add_argument("--executor", choices=["interp", "compiled"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--per-example", metavar="FILE.csv",
                   help="also write each example's scores, a CSV row each (examples: "
                        "its line, tokens, tokens right, nll, label and prediction, for "
                        "pairs the greedy decoding; trees: nodes, nodes right, root label "
                        "and prediction, nll)")
    p.add_argument("--average", action="store_true",
                   help="a checkpoint.npz of a run with the train key average: its averaged "
                        "parameters instead of the raw ones (best.npz holds the averaged ones)")


def run(args) -> int:
    from ..train.session import restore

    output_file(args.per_example, "--per-example")
    t = restore(args.spec, args.checkpoint, args.executor, args.average)   # file or folder
    if getattr(t.binding, "kind", None) == "trees":     # recursive nets: train/trees.py
        return eval_tree_model(t, args)
    if getattr(t.binding, "examples", False):
        result, file = eval_examples(t, args.spec, args.data, args.per_example)
    elif args.per_example:
        raise UsageError("--per-example: a text stream (chars, words) has no examples; "
                         "per-example scores are for example data (pairs, labeled, "
                         "tagged, series) and trees")
    else:
        result, file = eval_stream(t, args.spec, args.data)
        result = {"kind": t.vocab.kind, **result}      # chars or words, as the data's
        if t.vocab.kind == "chars" and result.get("perplexity") is not None and \
                t.spec.graph.losses[0].fn == LossFn.XENT:
            # a character model's usual measure: the loss in bits (Graves 2013, enwik8)
            result["bits_per_char"] = result["loss"] / math.log(2)
    if args.json:
        print(json.dumps({**result, "file": file}))       # the file, as trees' eval says
        return 0
    print(report(result, file))
    return 0


def eval_tree_model(t, args) -> int:
    """A tree model's fine-grained accuracy at every node and at the root, and the
    binary one (train/trees.py: score_trees); with --per-example, each tree's counts."""
    from ..train.trees import eval_trees, score_trees, summary, write_per_tree
    ts, loader = eval_trees(t, args.spec, args.data)
    s = score_trees(t.model, t.spec.graph, t.binding, ts,
                    per_tree=args.per_example is not None)
    if args.per_example is not None:
        with writing(args.per_example, "--per-example"):
            write_per_tree(args.per_example, s.per_tree)
    d = {"kind": "trees", **s.as_dict(), "file": str(loader.path)}
    if args.json:
        print(json.dumps(d))
    else:
        nodes = "" if s.root_only else f", {d['nodes']} nodes"
        print(f"{summary(s)}  ({d['trees']} trees{nodes} of {loader.path})")
    return 0


def report(d: dict, file: str) -> str:
    """The human-readable lines of an evaluation."""
    from ..train.evaluate import shown
    acc = "" if d.get("accuracy") is None else f"  accuracy {d['accuracy']:.4f}"
    if "bits_per_char" in d:
        acc = f"  bits/char {d['bits_per_char']:.4f}" + acc
    unit = "example" if d.get("kind") == "labeled" else "token"
    nats = f"nats/{unit}  perplexity {shown(d['perplexity'], 3)}" \
        if d.get("perplexity") is not None else f"per {unit}"
    many = f"{d['tokens']} {unit}{'s' * (d['tokens'] != 1)}"
    lines = [f"loss {d['loss']:.4f} {nats}{acc}  ({many} of {file})"]
    if "greedy_accuracy" in d:
        lines[0] += "  (the true tags fed back)"
        lines.append(f"greedy decoding of {d['decoded']} sentences (its own tags fed back, "
                     f"as sample does): accuracy {d['greedy_accuracy']:.4f}  exact match "
                     f"{d['greedy_exact_match']:.4f}")
    if "exact_match" in d:
        lines.append(f"greedy decoding of {d['decoded']} examples: exact match "
                     f"{d['exact_match']:.4f}  error rate (edit distance / reference tokens) "
                     f"{d['error_rate']:.4f}  sequence error rate "
                     f"{d['sequence_error_rate']:.4f}")
    if "mse" in d:
        base = f"  persistence mse {d['persistence_mse']:.4f}" \
            if "persistence_mse" in d else ""
        lines.append(f"mse {d['mse']:.4f}{base}" + ("  (standardised units)"
                                                     if d.get("scaled") else ""))
    if "majority_accuracy" in d:
        lines.append(f"majority-class baseline accuracy {d['majority_accuracy']:.4f}")
    if "most_frequent_tag_accuracy" in d:
        lines.append(f"most-frequent-tag baseline accuracy "
                     f"{d['most_frequent_tag_accuracy']:.4f}")
    return "\n".join(lines)


def _config(t, spec_path):
    from ..train.session import trained_config
    return trained_config(t, spec_path)


def eval_stream(t, spec_path: str, data: str | None) -> tuple[dict, str]:
    from ..train.batches import StreamBatches, eval_streams
    from ..train.evaluate import score
    ids, file = eval_ids(t, spec_path, data)
    cfg = _config(t, spec_path)
    # a run on N ranks validated N x batch streams (docs/scaling.md): scored the same
    from ..train.session import run_cut
    ranks = run_cut(t.meta).get("ranks", 1)
    ranks = ranks if isinstance(ranks, int) and ranks >= 1 else 1
    b = StreamBatches(eval_streams(ids, ranks * cfg.batch, cfg.bptt, file), t.binding.input,
                      t.binding.target)
    return score(t.model, t.spec.graph, t.binding, b).as_dict(), file


def eval_examples(t, spec_path: str, data: str | None,
                  per_example: str | None = None) -> tuple[dict, str]:
    """Examples to score: `--data`, else the held-out validation examples; with the
    baselines of the data's kind and, for pairs, greedy decoding; each example's scores
    into the CSV `per_example` when given."""
    from ..train.batches import ExampleBatches
    from ..train.data import encode_examples, load_dataset
    from ..train.evaluate import PerExample, baselines, decode_metrics, score
    from ..train.loaders import data_call, make_loader, same_splits
    cfg = _config(t, spec_path)
    graph, b = t.spec.graph, t.binding
    ds = load_dataset(graph, cfg, t.meta.get("dims"), t.vocab)
    if data is None:
        if not len(ds.valid):
            raise UsageError("the train block holds out no validation data (valid = 0): "
                             "pass --data")
        examples, file = ds.valid, ds.valid_file
    else:
        from ..train.binding import fit_loader
        loader = fit_loader(graph, make_loader(data_call(data, cfg), Path.cwd()),
                            t.meta.get("dims"))
        if loader.kind != b.kind:
            raise UsageError(f"--data reads {loader.kind} but the model was trained on "
                             f"{b.kind} data")
        same_splits(cfg.data, data_call(data, cfg), "--data")
        file = str(loader.path)
        examples = encode_examples(graph, loader, loader.read(), t.vocab, b, file, cfg.bptt)
    batches = ExampleBatches(examples, cfg.batch, 0, False, ((b.input,), (b.target,)))
    names = t.vocab.target.tokens if t.vocab.target else None   # labels, tags, tokens
    each = PerExample(examples.lines, names) if per_example else None
    result = {"kind": b.kind, **score(t.model, graph, b, batches, per_example=each).as_dict()}
    result.update(baselines(b, ds.train, examples, graph))
    if names is not None and "majority_class" in result:      # its name, as sample says
        result["majority_label"] = names[result["majority_class"]]
    if b.kind == "tagged" and t.model.feedback():
        result.update(decoded_tags(t, examples, cfg.batch))
    if b.kind in ("pairs", "treepairs"):
        d = decode_metrics(t.model, graph, b, examples, t.vocab, cfg.batch)
        hyps, refs = d.pop("hypotheses"), d.pop("references")
        if each is not None:
            each.add_decoded(hyps, refs, t.vocab.target.decode)
        result.update(d)
    if b.kind == "series":
        result["scaled"] = bool(t.vocab.stats)
    if each is not None:
        with writing(per_example, "--per-example"):
            each.write(per_example)
    return result, file


def decoded_tags(t, examples, batch: int) -> dict:
    """A tagger that reads its tags back is scored above with the true tags fed back
    (teacher forcing); `sample` feeds it its own. Its greedy decoding, each sentence a
    tag a word, scored as tags: greedy_accuracy (tokens) and greedy_exact_match."""
    from ..train.evaluate import decode_metrics
    d = decode_metrics(t.model, t.spec.graph, t.binding, examples, t.vocab, batch)
    pairs = list(zip(d["hypotheses"], d["references"], strict=True))
    right = sum(int(a == b) for h, r in pairs for a, b in zip(h, r, strict=False))
    n = max(sum(len(r) for _, r in pairs), 1)
    return {"greedy_accuracy": right / n, "greedy_exact_match": d["exact_match"],
            "decoded": d["decoded"]}


def eval_ids(t, spec_path: str, data: str | None):
    """Token ids to score and their file: `--data`, else the validation text the
    training run held out (the same split, encoded with the checkpoint's vocabulary)."""
    from ..train.data import encode, load_dataset
    from ..train.loaders import data_call, make_loader
    cfg = _config(t, spec_path)
    if data is None:
        ds = load_dataset(t.spec.graph, cfg, t.meta.get("dims"), t.vocab)
        if len(ds.valid) < 2:
            raise UsageError("the train block holds out no validation text (valid = 0): "
                             "pass --data")
        return ds.valid, ds.valid_file
    loader = make_loader(data_call(data, cfg), Path.cwd())
    if loader.kind != t.vocab.kind:
        raise UsageError(f"--data reads {loader.kind} but the model was trained on "
                         f"{t.vocab.kind}")
    return encode(loader, t.vocab), str(loader.path)

