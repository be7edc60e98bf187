"""Shared helpers for the gallery, ops and PyTorch-equivalence tests: random batches for a
model's declared inputs and targets, and a float64 central-difference gradient check."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

B = 2                                  # examples per batch
LENGTHS = {"t": 4, "u": 3}             # sequence lengths, distinct per index
SMALL_DIM = 5                          # every size the data would bind (V, K, Vx, Vy)
EPS = 1e-5
RTOL = 1e-6


ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                               "NUMBA_NUM_THREADS")}


def cli_env(**extra) -> dict:
    """The environment of a `python -m seqgraph.cli ...` subprocess: this checkout first on
    the path, one thread for every pool (a 2-core machine runs other work), and `extra`."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **ONE_THREAD, **extra}


def csv_rows(path) -> list[dict]:
    """The rows of a CSV file (a run's metrics.csv), one dict of strings each. Read at
    once, its last line dropped when not whole: a training process may be writing it."""
    with open(path, newline="") as f:
        text = f.read()
    return list(csv.DictReader(io.StringIO(text[:text.rfind("\n") + 1])))


def update_rows(run) -> list[dict]:
    """The rows of RUN/metrics.csv that record an update (not a validation), if any."""
    path = Path(run) / "metrics.csv"
    return [r for r in csv_rows(path) if r["train_loss"]] if path.exists() else []


def _default_sigint():
    """In the child: SIGINT handled by default even if the tests run as a background job
    (which inherits SIGINT ignored, and seqgraph leaves an ignored signal ignored)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def signal_after(cmd, cwd, env, run, sig, updates=5, timeout=120) -> tuple[int, str]:
    """Start `cmd` (a `seqgraph train ... --out RUN`), send it `sig` once RUN/metrics.csv
    records `updates` updates (or it ended, or `timeout` s passed); (exit code, stderr)."""
    import subprocess
    import time
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)  # noqa: PLW1509  (only resets SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and \
            len(update_rows(run)) < updates:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


# ------------------------------------------------------------ tiny specs shared by tests
# four labelled trees, and a recursive net that trains on them (train.txt)
TREES = """(3 (2 It) (4 (2 's) (3 fine)))
(1 (0 bad) (2 film))
(4 (3 (3 a) (4 lovely)) (2 film))
(2 ok)
"""

TREE_SPEC = """
model treenet
tree n
dim H = 6
input  words[n] : onehot(V)
target sentiment[n] : class(K)
param E, W, b, Ws, bs
h[n] : H = tanh(E @ words[n])                      if leaf
h[n] : H = tanh(W @ [h[n.left]; h[n.right]] + b)   otherwise
o[n] = Ws @ h[n] + bs
loss xent(o[n], sentiment[n])
train {
  data = trees("train.txt")
  valid = trees("train.txt")
  optimizer = adagrad(lr = 0.1)
  batch = 2
  epochs = 3
}
"""

# the Elman net of specs/elman.sg without its dims (a spec adds `dim H = ...`)
ELMAN = """\
input  x[t] : onehot(V)
target y[t] : class(V)
param W, U, b, Wo, bo
h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b)
o[t] = Wo @ h[t] + bo
loss xent(o[t], y[t])
"""

# a bidirectional tagger without a model line or data: its own tags K, words V
TAGGER = """\
input  x[t] : onehot(V)
target y[t] : class(K)
param Wh, Uh, Wg, Ug, Wo, bo
h[t] : 5 = tanh(Wh @ x[t] + Uh @ h[t-1])
g[t] : 5 = tanh(Wg @ x[t] + Ug @ g[t+1])
o[t] = Wo @ [h[t]; g[t]] + bo
loss xent(o[t], y[t])
"""

# TREES and three others: validation trees whose scores peak at different epochs of a
# run of TREE_SPEC (seed 1: root accuracy at epoch 2, all nodes at 3, loss at 4 of 6)
VALID_TREES = TREES + """(1 (2 It) (1 (2 's) (0 bad)))
(3 (3 lovely) (2 film))
(0 (0 bad) (1 (2 's) (1 fine)))
"""


def tree_run_spec(tmp_path, text: str):
    """`text` (a TREE_SPEC variant) written as m.sg beside train.txt (TREES three times)
    and valid.txt (VALID_TREES); its path."""
    (tmp_path / "train.txt").write_text(TREES * 3)
    (tmp_path / "valid.txt").write_text(VALID_TREES)
    p = tmp_path / "m.sg"
    p.write_text(text)
    return p


def train_quiet(spec, out, *more) -> int:
    """`seqgraph train SPEC --out OUT --quiet --executor interp MORE...` in this process:
    its exit code."""
    from seqgraph.cli import main
    return main(["train", str(spec), "--out", str(out), "--quiet", "--executor", "interp",
                 *more])


def npz_meta(path) -> dict:
    """The __meta__ of a checkpoint or best.npz."""
    import json
    with np.load(path) as z:
        return json.loads(str(z["__meta__"]))


def nan_on(monkeypatch, calls):
    """Model.run patched so that the training runs numbered in `calls` (1-based) report a
    NaN loss. Returns (the counter of training runs, a list of one int; the real run)."""
    import seqgraph
    real = seqgraph.Model.run
    count = [0]

    def poisoned(self, *a, **kw):
        res = real(self, *a, **kw)
        if kw.get("train"):
            count[0] += 1
            if count[0] in calls:
                res.loss = float("nan")
        return res
    monkeypatch.setattr(seqgraph.Model, "run", poisoned)
    return count, real


@pytest.fixture
def no_plots(monkeypatch):
    """Runs that skip their plots (matplotlib costs a second an epoch)."""
    from seqgraph.train import metrics
    monkeypatch.setattr(metrics.MetricsLog, "plot", lambda self, wait=True: None)


# a character LM with a train block (tiny.txt)
TINY_LM = "\nmodel lm\ndim H = 6\n" + ELMAN + """\
train {
  data = chars("tiny.txt")
  valid = 0.1
  optimizer = adam(lr = 0.05)
  batch = 4
  bptt = 10
}
"""


def random_batch(model, rng, B=B, lengths=LENGTHS):
    """(inputs, targets): ids [B, T] / [B], floats [B, T, D] / [B, D] per declared kind."""
    ins, tgs = {}, {}
    for v in model.graph.vars:
        if v.role == "hidden":
            continue
        shape = (B,) if v.index is None else (B, lengths.get(v.index, 4))
        n = model.sizes[v.name]
        if v.is_ids:
            a = rng.integers(0, n, size=shape)
        elif v.kind == "binary":
            a = (rng.random(shape + (n,)) < 0.5).astype(np.float64)
        else:
            a = rng.normal(size=shape + (n,))
        (ins if v.role == "input" else tgs)[v.name] = a
    return ins, tgs


def random_forest(rng, B=6, max_leaves=9):
    """B random binary trees of 1 to max_leaves leaves (payload 0 everywhere)."""
    from seqgraph.graph.trees import Node, forest

    def tree(k):
        if k == 1:
            return 0
        cut = int(rng.integers(1, k))
        return Node(0, (tree(cut), tree(k - cut)))
    return forest([tree(int(rng.integers(1, max_leaves + 1))) for _ in range(B)])[0]


def random_tree_batch(model, rng):
    """(inputs, targets, forest) over two small binary trees: ids [N] (inputs only at the
    leaves, -1 elsewhere), floats [N, D]; per-example values as in random_batch."""
    from seqgraph.graph.trees import Node, forest
    trees = [Node(0, (Node(0, (1, 2)), 3)), Node(0, (4, Node(0, (Node(0, (0, 1)), 2))))]
    f, _ = forest(trees)
    tree_idx = {i for i, k in model.graph.indexes if k == "tree"}
    ins, tgs = {}, {}
    for v in model.graph.vars:
        if v.role == "hidden":
            continue
        shape = (len(trees),) if v.index is None else \
            (f.size,) if v.index in tree_idx else (len(trees), LENGTHS.get(v.index, 4))
        n = model.sizes[v.name]
        if v.is_ids:
            a = rng.integers(0, n, size=shape)
            if v.role == "input" and v.index in tree_idx:
                a[~f.is_leaf] = -1
        else:
            a = rng.normal(size=shape + (n,))
        (ins if v.role == "input" else tgs)[v.name] = a
    return ins, tgs, f


def randomise_params(model, rng, scale=0.5):
    """Every parameter random (biases too), so that no gradient is trivially zero."""
    for p, w in model.params.items():
        model.params[p] = rng.normal(scale=scale / np.sqrt(max(w.shape[-1], 1)),
                                     size=w.shape).astype(model.dtype)
        if w.ndim == 1:
            model.params[p] = rng.normal(scale=0.3, size=w.shape).astype(model.dtype)


def rel_err(a, n, atol=1e-9):
    """|a - n| relative to their size; 0 when both are below `atol` in absolute value."""
    d = abs(a - n)
    if d <= atol:
        return 0.0
    return d / max(abs(a), abs(n))


def gradcheck(model, loss_fn, grads, rng, entries=3, eps=EPS, rtol=RTOL):
    """Central differences of `loss_fn()` (reads model.params) against `grads`: a random
    direction per parameter, then `entries` random single entries. Returns the failures."""
    bad = []

    def fd(p, d):
        w = model.params[p]
        model.params[p] = w + eps * d
        lp = loss_fn()
        model.params[p] = w - eps * d
        lm = loss_fn()
        model.params[p] = w
        return (lp - lm) / (2 * eps)

    for p in sorted(model.params):
        w = model.params[p]
        d = rng.normal(size=w.shape)
        a, n = float((grads[p] * d).sum()), fd(p, d)
        if rel_err(a, n) >= rtol:
            bad.append((p, "direction", a, n, rel_err(a, n)))
    names = sorted(model.params)
    for _ in range(entries):
        p = names[rng.integers(len(names))]
        w = model.params[p]
        idx = tuple(int(rng.integers(s)) for s in w.shape)
        d = np.zeros_like(w)
        d[idx] = 1.0
        a, n = float(grads[p][idx]), fd(p, d)
        if rel_err(a, n) >= rtol:
            bad.append((p, idx, a, n, rel_err(a, n)))
    return bad


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# CI runs the property tests on a fixed set of examples (the same on every run, so a red
# CI always reproduces); elsewhere they explore afresh each run and may find new inputs.
from hypothesis import settings as _settings

_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    _settings.load_profile("ci")


def sg(capsys, *argv):
    """`seqgraph ARGV...` in this process: (exit code, captured out and err)."""
    from seqgraph.cli import main
    code = main([str(a) for a in argv])
    return code, capsys.readouterr()


def fails(capsys, *argv) -> str:
    """`seqgraph ARGV...` exits 2 with a message and no traceback: the message."""
    code, out = sg(capsys, *argv)
    assert code == 2, out
    assert "Traceback" not in out.err
    return out.err.strip()
