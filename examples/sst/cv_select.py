"""The cross-validated development score S of examples/sst/SEARCHES.md (the second
search): train with `seqgraph train` while keeping every epoch's development counts per
tree, then score a run's epoch rule on development trees it was not chosen on.

    python examples/sst/cv_select.py train examples/sst/rnn.sg --out /tmp/sst/run [--set ...]
    python examples/sst/cv_select.py score /tmp/sst/run [/tmp/sst/run2 ...] [--select all]

`train` is `seqgraph train` with the same arguments and `--set keep=all` (the same
updates, the same checkpoints and best.npz, and every epoch's parameters in
RUN/epochs/); then `seqgraph eval --per-example` of each epoch on the development trees
gives RUN/epochs.npz: per epoch and development tree, the nodes right, the nodes, the root
right and the loss (the same counts as the trainer's validation pass: the same trees in
the same batches of 64).
`score` prints S: for 200 fixed random splits of the development trees into halves A and
B, the epoch chosen on A by the rule (`root`, `all` or `loss`; first epoch on ties, as
the trainer) scored on B as 100 x (all-node + root accuracy), and A and B swapped; S is
the mean of the 400.
"""
from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

KEYS = ("node_correct", "nodes", "root_correct", "loss")
COLUMNS = ("correct", "nodes", "root_correct", "nll")      # of eval --per-example


def train(argv: list[str]) -> int:
    from seqgraph.cli import main
    code = main(["train", *argv, "--set", "keep=all"])
    if code != 0:
        return code
    out = Path(argv[argv.index("--out") + 1])
    valid = [a[len("valid="):] for a in argv if a.startswith("valid=")]
    epochs = [per_tree(argv[0], f, valid[-1] if valid else None)
              for f in sorted((out / "epochs").glob("epoch_*.npz"))]
    np.savez(out / "epochs.npz", **{k: np.stack([e[c] for e in epochs])
                                    for k, c in zip(KEYS, COLUMNS, strict=True)})
    return 0


def per_tree(spec: str, checkpoint: Path, valid: str | None = None) -> dict:
    """`seqgraph eval SPEC --checkpoint C --per-example` on the development trees (the
    spec's, or `--set valid=...`'s): {column: [trees]}."""
    from seqgraph.cli import main
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "trees.csv"
        data = ["--data", valid] if valid else []
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["eval", spec, "--checkpoint", str(checkpoint), "--json",
                         "--per-example", str(csv), *data]) == 0
        lines = csv.read_text().splitlines()
    head = lines[0].split(",")
    rows = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
    return {c: rows[:, head.index(c)] for c in COLUMNS}


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
