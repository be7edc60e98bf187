"""The cross-validated development score S of examples/sst/README.md ("How the shipped
models were chosen"): train with `seqgraph train` while keeping every epoch's development
counts per tree, then score a run's epoch rule on development trees it was not chosen on.

    python examples/sst/cv_select.py train examples/sst/rnn.sg --out /tmp/sst/run [--set ...]
    python examples/sst/cv_select.py score /tmp/sst/run [/tmp/sst/run2 ...] [--select all]

`train` is `seqgraph train` with the same arguments (the same updates, the same
checkpoints and best.npz); the trainer's own validation pass also writes RUN/epochs.npz:
per epoch and development tree, the nodes right, the nodes, the root right and the loss.
`score` prints S: for 200 fixed random splits of the development trees into halves A and
B, the epoch chosen on A by the rule (`root`, `all` or `loss`; first epoch on ties, as
the trainer) scored on B as 100 x (all-node + root accuracy), and A and B swapped; S is
the mean of the 400.
"""
from __future__ import annotations

import sys

import numpy as np

KEYS = ("node_correct", "nodes", "root_correct", "loss")


def train(argv: list[str]) -> int:
    from seqgraph.cli import main
    from seqgraph.train import loop, trees
    from seqgraph.train.data import feeds
    from seqgraph.train.evaluate import xent_output

    def score(self, model, valid):
        """trees.score_trees, keeping the counts of each tree."""
        graph, binding = self.graph, self.data.binding
        out = xent_output(graph, binding.target)
        sc, parts, batch = trees.TreeScore(), [], max(self.cfg.batch, 64)
        for i in range(0, len(valid), batch):
            f, w, y = valid.batch(np.arange(i, min(i + batch, len(valid))))
            ins, tgs = feeds(binding, w, y)
            res = model.run(ins, tgs, train=False, grads=False, forest=f)
            s = sum(graph.losses[li].weight * t for li, (t, _) in res.terms.items())
            logits = np.asarray(res.values[out], dtype=np.float64)
            sc.add(logits, y, f.roots, s)
            roots = np.asarray(f.roots)          # each tree's last row (post-order)
            starts = np.concatenate([[0], roots[:-1] + 1])
            hit = (logits.argmax(-1) == y).astype(np.int64)
            m = logits.max(-1)
            nll = np.log(np.exp(logits - m[:, None]).sum(-1)) + m \
                - logits[np.arange(len(y)), y]
            parts.append((np.add.reduceat(hit, starts), np.diff(np.append(starts, len(y))),
                          hit[roots], np.add.reduceat(nll, starts)))
        self.per_tree = [np.concatenate([p[k] for p in parts]) for k in range(4)]
        assert self.per_tree[0].sum() == sc.correct
        return sc

    keep_best = loop.Trainer._keep_best

    def keep(self, v):
        keep_best(self, v)
        self.epochs = getattr(self, "epochs", []) + [self.kind.per_tree]
        np.savez(self.out / "epochs.npz", **{k: np.stack([e[i] for e in self.epochs])
                                              for i, k in enumerate(KEYS)})

    trees.TreeKind.score = score
    loop.Trainer._keep_best = keep
    return main(["train", *argv])


def pick(rec: dict, mask, rule: str) -> int:
    nc, nn, rc, loss = (rec[k][:, mask].sum(1) for k in KEYS)
    if rule == "root":
        return int(np.argmax(rc))
    if rule == "all":
        return int(np.argmax(nc / nn))
    return int(np.argmin(loss / nn))


def cv_score(rec: dict, rule: str, splits: int = 200) -> float:
    n = rec["nodes"].shape[1]
    rng = np.random.default_rng(0)
    vals = []
    for _ in range(splits):
        a = rng.permutation(n) < n // 2
        for sel, held in ((a, ~a), (~a, a)):
            e = pick(rec, sel, rule)
            nc, nn, rc = (rec[k][e, held].sum() for k in KEYS[:3])
            vals.append(100 * (nc / nn + rc / held.sum()))
    return float(np.mean(vals))


def score(argv: list[str]) -> int:
    rule = "all"
    if "--select" in argv:
        i = argv.index("--select")
        rule = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    for run in argv:
        rec = dict(np.load(f"{run}/epochs.npz"))
        full = np.ones(rec["nodes"].shape[1], dtype=bool)
        print(f"{run}: S {cv_score(rec, rule):.2f} (select = {rule}; epoch "
              f"{pick(rec, full, rule) + 1} of {rec['nodes'].shape[0]} on all of dev)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("train", "score"):
        sys.exit(__doc__)
    sys.exit((train if sys.argv[1] == "train" else score)(sys.argv[2:]))
