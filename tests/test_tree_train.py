"""Trees in training: the trees() loader and its errors, forests built from index arrays,
binding by kind, sparse updates of embeddings, `seqgraph train` / `eval` on trees, and
the Stanford Sentiment Treebank when ../shared/data/sst exists."""
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

import seqgraph
from seqgraph.cli import main
from seqgraph.errors import DataError, UsageError
from seqgraph.graph.trees import Node, forest
from seqgraph.train.optim import SGD, Adagrad, Adam, clip_global_norm
from seqgraph.train.trees import TreeScore, bind_trees, embedding_params, parse_tree, trees

from conftest import TREE_SPEC, TREES, cli_env, nan_on, signal_after

ROOT = Path(__file__).resolve().parent.parent
SST = ROOT.parent / "shared" / "data" / "sst"

SPEC = TREE_SPEC


def _file(tmp_path, text, name="t.txt"):
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------ the loader
def test_loader_reads_post_order_arrays_and_a_vocabulary(tmp_path):
    loader = trees(str(_file(tmp_path, TREES)))
    raw = loader.read()
    vocab = loader.vocab(raw)
    ts = loader.encode(raw, vocab)
    assert len(ts) == 4 and ts.nodes == 5 + 3 + 5 + 1
    assert vocab.tokens[0] == "<unk>" and vocab.tokens[1] == "film"   # by frequency
    # tree 0: It, 's, fine, (4 's fine), root
    assert list(ts.label[:5]) == [2, 2, 3, 4, 3]
    assert list(ts.left[:5]) == [-1, -1, -1, 1, 0] and list(ts.right[:5]) == [-1, -1, -1, 2, 3]
    assert list(ts.height[:5]) == [0, 0, 0, 1, 2]
    assert [vocab.tokens[i] for i in ts.word[:3]] == ["It", "'s", "fine"]
    assert (ts.word[3:5] == -1).all()
    small = trees(str(tmp_path / "t.txt"), vocab=3)
    v3 = small.vocab(small.read())
    assert len(v3) == 3
    enc = small.encode(small.read(), v3)
    assert (enc.word[enc.word >= 0] <= 2).all() and (enc.word == 0).sum() > 0   # <unk>


def test_batch_is_the_forest_of_its_trees(tmp_path):
    loader = trees(str(_file(tmp_path, TREES)))
    ts = loader.load(loader.vocab(loader.read()))
    f, w, y = ts.batch([2, 0, 3])
    t2 = Node(4, (Node(3, (3, 4)), 2))
    t0 = Node(3, (2, Node(4, (2, 3))))
    ref, pay = forest([t2, t0, 2])
    assert np.array_equal(f.left, ref.left) and np.array_equal(f.right, ref.right)
    assert np.array_equal(f.tree, ref.tree) and np.array_equal(f.roots, ref.roots)
    assert np.array_equal(f.height(), ref.height())
    labels = [p.label if isinstance(p, Node) else p for p in pay]
    assert list(y) == labels
    assert ((w >= 0) == f.is_leaf).all()


@pytest.mark.parametrize("text, message, column", [
    ("(3 (2 a) (2 b)", "'(' never closed", 1),
    ("(3 (2 a) (2 b)))", "')' with no open '('", 16),
    ("(3 (2 a) ((2 b) (2 c)))", "missing label", 11),
    ("(3 (2 a) (good b))", "missing label", 11),
    ("(3 (2 a) (\u0663 b))", "missing label", 11),     # an Arabic-Indic 3: int() reads it
    ("(3 (2 a) ())", "empty tree '()'", 10),
    ("(3 (2 a) (2))", "empty tree", 10),
    ("(3 (2 a) (2 b) (2 c))", "3 children", 1),
    ("(3 (2 a) (2 b)) (2 b)", "after the end of the tree", 17),
    ("word (2 a)", "outside brackets", 1),
])
def test_loader_errors_name_file_line_and_character(tmp_path, text, message, column):
    p = _file(tmp_path, "(2 fine)\n" + text + "\n")
    with pytest.raises(DataError) as e:
        trees(str(p)).read()
    msg = str(e.value)
    assert msg.startswith(f"{p}:2: character {column}: ")
    assert message in msg


def test_a_tree_line_ends_at_a_newline_only(tmp_path):
    """Fuzz 36: str.splitlines ended a line at a form feed or U+0085, inside a line of
    text: the wrong line in messages, a valid tree refused."""
    p = _file(tmp_path, "(2 fine)\n(2 a\x0cb)\n(3 (2 a) (2 b)\n")
    with pytest.raises(DataError) as e:
        trees(str(p)).read()
    assert str(e.value).startswith(f"{p}:3: character 1: ")
    p = _file(tmp_path, "(2 fine)\n(3 (2 caf\u0085) (1 b))\n")
    assert len(trees(str(p)).read()[0]) == 3          # two trees, offsets 0, 1, 4


def test_binarize_collapses_unary_and_right_branches_wide_nodes():
    left, right, words, labels = parse_tree("(3 (2 a) (1 b) (4 (4 c)))", binarize=True)
    # a, b, c (collapsed under label 4), (3 b c), (3 a (3 b c))
    assert words == ["a", "b", "c", None, None] and labels == [2, 1, 4, 3, 3]
    assert left[3:] == [1, 0] and right[3:] == [2, 3]
    with pytest.raises(DataError, match="1 child.*binarize = true"):
        parse_tree("(3 (2 a))")


def test_binding_by_kind_and_errors(tmp_path):
    spec = seqgraph.read_spec("s.sg", text=SPEC.split("train {")[0])
    b = bind_trees(spec.graph, 10, 5, "x.txt")
    assert (b.input, b.target, b.dims) == ("words", "sentiment", {"V": 10, "K": 5})
    seq = seqgraph.read_spec(str(ROOT / "specs" / "elman.sg"))
    with pytest.raises(DataError, match="no 'tree n' index"):
        bind_trees(seq.graph, 10, 5, "x.txt")
    fixed = seqgraph.read_spec(str(ROOT / "specs" / "recursive.sg"))
    with pytest.raises(DataError, match="7 distinct symbols do not fit"):
        bind_trees(fixed.graph, 10, 7, "x.txt")
    assert embedding_params(spec.graph, "words") == ["E"]


def test_scores_fine_grained_and_binary():
    logits = np.array([[0, 5, 0, 0, 0],     # label 1: fine hit, negative: binary hit
                       [0, 0, 9, 1, 0],     # label 2: fine hit, neutral: dropped
                       [3, 0, 0, 0, 2],     # label 4: fine miss, binary miss
                       [0, 0, 9, 0, 1]],    # label 3: fine miss, binary hit (4 > 0)
                      dtype=float)
    s = TreeScore()
    s.add(logits, np.array([1, 2, 4, 3]), np.array([1, 3]), 2.0)
    d = s.as_dict()
    assert d["fine_all"] == 0.5 and d["fine_root"] == 0.5
    assert d["binary_all"] == pytest.approx(2 / 3) and d["binary_root"] == 1.0
    assert d["loss"] == 0.5


# -------------------------------------------------------------------- sparse updates
@pytest.mark.parametrize("opt", [Adagrad(lr=0.1), Adagrad(lr=0.1, l2=0.01)])
def test_sparse_adagrad_equals_dense(opt):
    import copy
    rng = np.random.default_rng(0)
    E = rng.normal(size=(3, 8))
    dense, sparse = {"E": E.copy()}, {"E": E.copy()}
    o1, o2 = copy.deepcopy(opt), copy.deepcopy(opt)
    for _ in range(4):
        cols = rng.choice(8, size=3, replace=False)
        g = np.zeros_like(E)
        g[:, cols] = rng.normal(size=(3, 3))
        if opt.l2:      # weight decay is lazy too: only the touched rows decay
            o1.l2 = 0
            o2.l2 = 0
        o1.step(dense, {"E": g.copy()})
        o2.step(sparse, {"E": g.copy()}, rows={"E": (1, np.sort(cols))})
    assert np.allclose(dense["E"], sparse["E"], atol=1e-15, rtol=0)
    assert np.allclose(o1.state["r"]["E"], o2.state["r"]["E"])


def test_lazy_adam_touches_only_the_rows_of_the_batch():
    rng = np.random.default_rng(1)
    E = rng.normal(size=(4, 10))
    W = rng.normal(size=(2, 2))
    p = {"E": E.copy(), "W": W.copy()}
    opt = Adam(lr=0.01)
    g = {"E": np.zeros_like(E), "W": np.ones_like(W)}
    g["E"][:, [2, 5]] = 1.0
    opt.step(p, g, rows={"E": (1, np.array([2, 5]))})
    untouched = [i for i in range(10) if i not in (2, 5)]
    assert np.array_equal(p["E"][:, untouched], E[:, untouched])
    assert not np.allclose(p["E"][:, [2, 5]], E[:, [2, 5]])
    assert not np.allclose(p["W"], W)                       # dense params as before
    assert (opt.state["m"]["E"][:, untouched] == 0).all()
    # the touched rows get exactly the dense Adam step of their first update
    ref = {"E": E.copy()}
    Adam(lr=0.01).step(ref, {"E": g["E"]})
    assert np.allclose(p["E"][:, [2, 5]], ref["E"][:, [2, 5]])
    # momentum sgd, lazily
    s = {"E": E.copy()}
    SGD(lr=0.1, momentum=0.9).step(s, g, rows={"E": (1, np.array([2, 5]))})
    assert np.array_equal(s["E"][:, untouched], E[:, untouched])


def test_clip_counts_only_touched_rows():
    g = {"E": np.zeros((2, 6)), "W": np.full((2, 2), 2.0)}
    g["E"][:, 1] = 3.0
    g2 = {k: v.copy() for k, v in g.items()}
    n1 = clip_global_norm(g, 1.0)
    n2 = clip_global_norm(g2, 1.0, rows={"E": (1, np.array([1]))})
    assert n1 == pytest.approx(n2)
    assert np.allclose(g["E"], g2["E"]) and np.allclose(g["W"], g2["W"])


# -------------------------------------------------------------------- the commands
def _setup(tmp_path):
    (tmp_path / "train.txt").write_text(TREES * 3)
    spec = tmp_path / "m.sg"
    spec.write_text(SPEC)
    return spec


@pytest.mark.parametrize("executor", ["interp", "compiled"])
def test_train_and_eval_on_trees(tmp_path, capsys, executor):
    spec = _setup(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(out), "--executor", executor]) == 0
    assert (out / "checkpoint.npz").is_file() and (out / "best.npz").is_file()
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("finished: ") and f"; best {out / 'best.npz'} (valid_fine_" in last
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) > 12
    capsys.readouterr()
    assert main(["eval", str(spec), "--checkpoint", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["trees"] == 12 and d["nodes"] == 42 and d["kind"] == "trees"
    assert set(d) >= {"fine_all", "fine_root", "binary_all", "binary_root", "loss"}
    assert d["fine_all"] > 0.5          # it learnt something on its training trees
    assert main(["eval", str(spec), "--checkpoint", str(out), "--data",
                 str(tmp_path / "train.txt")]) == 0
    assert "fine-grained all" in capsys.readouterr().out
    if executor == "interp":
        return
    # a loader call given to --data is checked as the spec's are
    assert main(["eval", str(spec), "--checkpoint", str(out), "--data",
                 f'trees("{tmp_path / "train.txt"}", binarise = true)']) == 2
    err = capsys.readouterr().err
    assert err.startswith("bad loader call: trees() has no argument 'binarise'") and \
        "did you mean 'binarize'?" in err, err
    # the spec's validation trees missing: located in the spec
    (tmp_path / "train.txt").rename(tmp_path / "moved.txt")
    assert main(["eval", str(spec), "--checkpoint", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{spec}:") and f"data file {tmp_path / 'train.txt'}: no such " \
        "file" in err and "relative to the spec's folder" in err, err


def test_set_data_overrides_and_resume_is_exact(tmp_path):
    spec = _setup(tmp_path)
    other = tmp_path / "sub"
    other.mkdir()
    (other / "more.txt").write_text(TREES * 2)
    a, b = tmp_path / "a", tmp_path / "b"
    data = f'data=trees("{other / "more.txt"}")'
    assert main(["train", str(spec), "--set", data, "--out", str(a), "--quiet"]) == 0
    assert main(["train", str(spec), "--set", data, "--out", str(b), "--quiet",
                 "--steps", "5"]) == 0
    assert main(["train", str(spec), "--set", data, "--resume", str(b), "--quiet"]) == 0
    za, zb = np.load(a / "checkpoint.npz"), np.load(b / "checkpoint.npz")
    for k in ("E", "W", "Ws"):
        assert np.array_equal(za[k], zb[k])


# An RNTN with dropout and lazy Adam: a resumed run must restore the parameters, the
# Adam moments of the touched embedding columns, the dropout generator and the position.
RNTN_SPEC = SPEC.replace("param E, W, b, Ws, bs", "param E, W, b, Ws, bs, T").replace(
    "tanh(W @ [h[n.left]; h[n.right]] + b)",
    "tanh(bilinear(T, [h[n.left]; h[n.right]], [h[n.left]; h[n.right]])\n"
    "                + W @ [h[n.left]; h[n.right]] + b)").replace(
    "o[n] = Ws @ h[n] + bs", "o[n] = Ws @ dropout(h[n], 0.2) + bs").replace(
    "adagrad(lr = 0.1)", "adam(lr = 0.01)")


def _arrays(path) -> dict:
    """Every array of a checkpoint: parameters, optimiser state, metadata but the
    parts that name the run (its directory, the time spent)."""
    with np.load(path) as z:
        out = {k: z[k] for k in z.files if not k.startswith("__meta")}
        meta = json.loads(str(z["__meta__"]))
    state = meta.get("state", {})
    state.pop("seconds", None)
    state.pop("metrics_rows", None)     # a stopped run logged its stop's validation too
    return {**out, "state": json.dumps(state, sort_keys=True),
            "best": json.dumps(meta.get("best"), sort_keys=True)}


def _rows(run):
    import csv
    with open(run / "metrics.csv", newline="") as f:
        return [(r["step"], r["train_loss"], r["grad_norm"], r.get("grad_norm.E"))
                for r in csv.DictReader(f) if r["train_loss"]]


@pytest.mark.parametrize("executor", ["interp", "compiled"])
@pytest.mark.parametrize("dropout", [True, False], ids=["dropout", "no-dropout"])
def test_tree_resume_is_bit_identical(tmp_path, executor, dropout):
    """Stopped mid-epoch (step 4 of 6 an epoch) and resumed, a run of trees ends with the
    arrays of one that never stopped: parameters, lazy Adam moments, position, generator,
    schedule; best.npz and the training curve (with each parameter's norm) agree too."""
    text = RNTN_SPEC if dropout else RNTN_SPEC.replace("dropout(h[n], 0.2)", "h[n]")
    spec = _setup(tmp_path)
    spec.write_text(text)
    a, b = tmp_path / "a", tmp_path / "b"
    run = lambda out, *more: main(["train", str(spec), "--out", str(out), "--quiet",
                                   "--executor", executor, *more])
    assert run(a) == 0
    assert run(b, "--steps", "4") == 0
    assert main(["train", str(spec), "--resume", str(b), "--quiet", "--executor",
                 executor]) == 0
    za, zb = _arrays(a / "checkpoint.npz"), _arrays(b / "checkpoint.npz")
    assert za.keys() == zb.keys() and any(k.startswith("__optim__/") for k in za)
    for k in za:
        assert np.array_equal(za[k], zb[k]), k
    ba, bb = _arrays(a / "best.npz"), _arrays(b / "best.npz")
    assert all(np.array_equal(ba[k], bb[k]) for k in ba)
    assert _rows(a) == _rows(b) and len(_rows(a)) == 18


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_trees_with_a_checkpoint_and_resume_is_exact(tmp_path, signame):
    """Ctrl-C or SIGTERM during `seqgraph train` of trees: the update in progress ends, a
    checkpoint is written, exit 128 + the signal; resuming ends where a run that was
    never stopped ends."""
    import signal
    import subprocess
    import sys
    spec = _setup(tmp_path)
    spec.write_text(RNTN_SPEC.replace("epochs = 3", "epochs = 1000"))
    env = cli_env()
    cmd = [sys.executable, "-m", "seqgraph.cli", "train", str(spec), "--quiet",
           "--executor", "compiled"]
    run = tmp_path / "int"
    sig = getattr(signal, signame)
    code, err = signal_after(cmd + ["--out", str(run)], tmp_path, env, run, sig)
    assert code == 128 + sig, err
    assert f"{signame}: stopped at step" in err and "Traceback" not in err
    from seqgraph.train import checkpoint as ck
    step = ck.load(run / "checkpoint.npz").meta["state"]["position"]["step"]
    assert step >= 5 and [int(r[0]) for r in _rows(run)] == list(range(1, step + 1))
    more = ["--steps", str(step + 7)]
    for args in (["--resume", str(run)], ["--out", str(tmp_path / "straight")]):
        p = subprocess.run(cmd + args + more, cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120, check=False)
        assert p.returncode == 0, p.stderr
    za = _arrays(run / "checkpoint.npz")
    zb = _arrays(tmp_path / "straight" / "checkpoint.npz")
    assert all(np.array_equal(za[k], zb[k]) for k in za)
    assert _rows(run) == _rows(tmp_path / "straight")


def test_trees_on_nan_minutes_and_divergence(tmp_path, monkeypatch, capsys):
    """--on-nan skip, the divergence message and --minutes behave for trees as for
    sequences (one loop)."""
    spec = _setup(tmp_path)
    count, real = nan_on(monkeypatch, {2, 5})
    assert main(["train", str(spec), "--out", str(tmp_path / "skip"), "--on-nan", "skip",
                 "--executor", "compiled"]) == 0
    err = capsys.readouterr().err
    assert err.count("batches skipped") == 1       # once an epoch, with the count
    assert "epoch 1: 2 of 6 batches skipped for a non-finite loss or gradient" in err
    assert "the first: batch 2, after update 1" in err
    assert len(_rows(tmp_path / "skip")) == 18 - 2      # 6 batches an epoch, 3 epochs
    count[0] = 0
    assert main(["train", str(spec), "--out", str(tmp_path / "stop"), "--quiet"]) == 2
    assert "training diverged at step 2 (epoch 1)" in capsys.readouterr().err
    monkeypatch.setattr(seqgraph.Model, "run", real)
    assert main(["train", str(spec), "--out", str(tmp_path / "min"), "--quiet",
                 "--minutes", "1e-9"]) == 0
    from seqgraph.train import checkpoint as ck
    assert ck.load(tmp_path / "min" / "checkpoint.npz").meta["state"]["position"]["step"] == 0


def test_a_sequence_model_refuses_trees(tmp_path, capsys):
    spec = _setup(tmp_path)
    code = main(["train", str(ROOT / "specs" / "elman.sg"), "--dim", "V=5", "--set",
                 f'data=trees("{tmp_path / "train.txt"}")', "--quiet",
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "no 'tree n' index" in capsys.readouterr().err
    del spec


def test_bad_loader_options(tmp_path):
    p = _file(tmp_path, TREES)
    with pytest.raises(UsageError, match="vocab"):
        trees(str(p), vocab=1)
    with pytest.raises(DataError, match="no such file"):
        trees(str(tmp_path / "missing.txt"))


# ------------------------------------------------------------- the sentiment treebank
sst = pytest.mark.skipif(not SST.is_dir(), reason="../shared/data/sst is absent")


@sst
def test_sst_reads_with_the_readme_counts():
    loader = trees(str(SST / "train.txt"))
    raw = loader.read()
    ts = loader.encode(raw, loader.vocab(raw))
    roots = ts.off[1:] - 1
    assert len(ts) == 8544
    assert list(np.bincount(ts.label[roots])) == [1092, 2218, 1624, 2322, 1288]
    dev = trees(str(SST / "dev.txt")).load(loader.vocab(raw))
    assert len(dev) == 1101


@sst
@pytest.mark.parametrize("name", ["rnn.sg", "rntn.sg"])
def test_sst_example_trains_a_few_steps(tmp_path, capsys, name):
    spec = ROOT / "examples" / "sst" / name
    out = tmp_path / "run"
    assert main(["train", str(spec), "--steps", "3", "--out", str(out), "--quiet"]) == 0
    assert main(["eval", str(spec), "--checkpoint", str(out), "--json", "--data",
                 f'trees("{SST / "dev.txt"}")']) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["trees"] == 1101 and 0 <= d["fine_root"] <= 1


# ------------------------------------------------------------------------- rendering
def test_render_tree(tmp_path, capsys):
    out = tmp_path / "t.dot"
    assert main(["render", str(ROOT / "specs" / "rntn.sg"), "--tree", "(3 (2 a) (3 film))",
                 "-o", str(out)]) == 0
    text = out.read_text()
    assert text.count("subgraph \"cluster_") == 3
    assert "w[1] = 'a'" in text and "y[3] = 3" in text and 'label="L[3]"' in text
    assert main(["render", str(ROOT / "specs" / "elman.sg"), "--tree", "(3 (2 a) (3 b))",
                 "-o", str(out)]) == 2
    assert "no 'tree n' index" in capsys.readouterr().err
    assert main(["render", str(ROOT / "specs" / "recursive.sg"), "--tree", "(3 (2 a)",
                 "-o", str(out)]) == 2
    assert "--tree:1: character 1: unbalanced" in capsys.readouterr().err


def _deep(n: int) -> str:
    """A tree n levels deep, each level a word and the rest of the tree."""
    return "(1 (1 cat) " * n + "(1 dog)" + ")" * n


def test_a_deep_tree_renders_as_dot_and_is_refused_as_an_image(tmp_path, capsys):
    """A tree 300 deep took Graphviz past its time-out (a traceback; walk 12): a tree
    too large to read as an image is refused before the layout, a .dot is written."""
    spec = str(ROOT / "specs" / "recursive.sg")
    assert main(["render", spec, "--tree", _deep(300), "-o", str(tmp_path / "t.png")]) == 2
    assert "--tree: a tree of 601 nodes unfolds 'recursive' into about 3005 nodes, too " \
        "many to lay out as a readable image (at most 400)" in capsys.readouterr().err
    assert not (tmp_path / "t.png").exists()
    assert main(["render", spec, "--tree", _deep(300), "-o", str(tmp_path / "t.dot")]) == 0
    assert (tmp_path / "t.dot").read_text().count("cluster_") == 601
    capsys.readouterr()                     # a decoder's steps count too (review 27)
    assert main(["render", str(ROOT / "specs" / "tree2seq.sg"), "--tree", "(1 (2 a) (3 b))",
                 "--unfold", "u=3000", "-o", str(tmp_path / "t.svg")]) == 2
    assert "--tree: a tree of 3 nodes and --unfold u=3000 unfolds 'tree2seq' into about" \
        in capsys.readouterr().err


def test_sample_labels_a_tree_deeper_than_pythons_recursion(tmp_path, capsys):
    """sample printed a labelled tree recursively: RecursionError past 1000 levels
    (walk 12; training reads such trees)."""
    spec = tmp_path / "rec.sg"
    spec.write_text((ROOT / "specs" / "recursive.sg").read_text())
    (tmp_path / "train.txt").write_text(TREES)
    assert main(["train", str(spec), "--set", f'data=trees("{tmp_path / "train.txt"}")',
                 "--set", "valid=0.2", "--out", str(tmp_path / "r"), "--steps", "1",
                 "--quiet"]) == 0
    deep = _deep(1500).replace("cat", "film").replace("dog", "bad")   # words it knows
    capsys.readouterr()
    assert main(["sample", str(spec), "--checkpoint", str(tmp_path / "r"), "--input",
                 deep]) == 0
    out = capsys.readouterr().out.strip()
    assert out.count("(") == 3001 and out.endswith(")" * 1501)


def test_a_rendered_tree_has_its_leaves_on_one_row_in_the_sentences_order(tmp_path):
    """The nodes of a variable at one height of the tree share a row (rank=same across
    the node boxes), kept in the sentence's order by invisible edges: `a very good` with
    `very good` a subtree draws w[1] 'a', w[2] 'very', w[3] 'good' left to right."""
    import re
    out = tmp_path / "t.dot"
    assert main(["render", str(ROOT / "specs" / "rntn.sg"), "--tree",
                 "(3 (2 a) (3 (2 very) (3 good)))", "-o", str(out)]) == 0
    text = out.read_text()
    ids = {label: n for n, label in re.findall(r'"(n\d+)" \[label="([^"]*)"', text)}
    w = [ids[f"w[{k}] = '{word}'"] for k, word in ((1, "a"), (2, "very"), (3, "good"))]
    h = [ids[f"h[{k}]"] for k in (1, 2, 3)]
    rows = [r.strip() for r in re.findall(r"rank=same; ([^}]*)\}", text)]
    assert " ".join(f'"{n}";' for n in w) in rows and " ".join(f'"{n}";' for n in h) in rows
    for a, b in itertools.pairwise(w):
        assert f'"{a}" -> "{b}" [style="invis"]' in text
    assert f'"{ids["h[4]"]}" -> "{ids["h[5]"]}"' in text        # a parent above its child


def test_a_label_the_class_target_cannot_hold_names_its_line(tmp_path, capsys):
    """A node label 7 under `class(5)`: the file, the line of its tree (blank lines
    counted), the label and the range; exit code 2 and no traceback."""
    from conftest import TREE_SPEC, TREES, train_quiet, tree_run_spec
    spec = tree_run_spec(tmp_path, TREE_SPEC.replace("class(K)", "class(5)"))
    (tmp_path / "train.txt").write_text(TREES + "\n(1 (7 bad) (2 film))\n")
    assert train_quiet(spec, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'train.txt'}:6: label 7 does not fit sentiment : class(5)" in err
    assert "the labels of sentiment are 0 to 4" in err and "Traceback" not in err


def test_labels_that_share_the_words_size_are_checked_against_it(tmp_path, capsys):
    """`sentiment[n] : class(V)` with `words[n] : onehot(V)`: the words bind V, the
    labels must fit it; a label past it names the size the words bound."""
    from conftest import TREE_SPEC, TREES, train_quiet, tree_run_spec
    spec = tree_run_spec(tmp_path, TREE_SPEC.replace("class(K)", "class(V)"))
    assert train_quiet(spec, tmp_path / "run") == 0             # 9 words, labels 0-4
    (tmp_path / "train.txt").write_text(TREES + "(1 (12 bad) (2 film))\n")
    assert train_quiet(spec, tmp_path / "run2") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'train.txt'}:5: label 12 does not fit V = " in err, err
    assert "bound by the distinct symbols in the data of words" in err and "Traceback" not in err


def test_sample_labels_every_node_of_a_given_tree(tmp_path, capsys):
    """`sample --input "(3 (2 a) (3 film))"` with a tree model: the tree with the
    predicted labels (its own labels are not read); --nbest a line per node, root first,
    each label with its probability; an unknown word is refused, or <unk> with --unk."""
    from seqgraph.graph.trees import Forest
    from seqgraph.train.session import restore

    from conftest import TREE_SPEC, train_quiet, tree_run_spec
    spec = tree_run_spec(tmp_path, TREE_SPEC)
    assert train_quiet(spec, tmp_path / "run") == 0
    capsys.readouterr()
    argv = ["sample", str(spec), "--checkpoint", str(tmp_path / "run")]
    assert main([*argv, "--input", "(0 (0 a) (0 (0 lovely) (0 film)))"]) == 0
    shown = capsys.readouterr().out.strip()
    t = restore(str(spec), str(tmp_path / "run" / "checkpoint.npz"), "interp")
    ids = [t.vocab.index[w] for w in ("a", "lovely", "film")]
    w = np.array([ids[0], ids[1], ids[2], -1, -1])               # post-order
    f = Forest.one([-1, -1, -1, 1, 0], [-1, -1, -1, 2, 3])
    k = t.model.run({"words": w}, forest=f).values["o"].argmax(axis=-1)
    assert shown == f"({k[4]} ({k[0]} a) ({k[3]} ({k[1]} lovely) ({k[2]} film)))"
    assert main([*argv, "--input", "(0 (0 a) (0 (0 lovely) (0 film)))", "--nbest"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split("\t")[0] for r in rows] == ["a lovely film", "a", "lovely film",
                                                "lovely", "film"]
    assert rows[0].split("\t")[1].split()[0].startswith(f"{k[4]}:")
    assert main([*argv, "--input", "(1 (1 a) (1 zzz))"]) == 2
    assert "'zzz' is not in the source vocabulary" in capsys.readouterr().err
    assert main([*argv, "--input", "(1 (1 a) (1 zzz))", "--unk"]) == 0
    capsys.readouterr()
    assert main([*argv, "--input", "(x (x a) (x (x lovely) (x film)))"]) == 0   # not read
    assert capsys.readouterr().out.strip() == shown


def test_a_tree_on_the_command_line_is_read_as_the_specs_data(tmp_path, capsys):
    """`sample --input` and `render --tree` read a tree as the spec's `trees(...)` reads
    its data: a node of three children is refused, unless the data is binarised."""
    from conftest import TREE_SPEC, train_quiet, tree_run_spec
    spec = tree_run_spec(tmp_path, TREE_SPEC)
    assert train_quiet(spec, tmp_path / "run") == 0
    wide = "(3 (2 a) (3 lovely) (2 film))"
    sample = ["sample", str(spec), "--checkpoint", str(tmp_path / "run"), "--input", wide]
    render = ["render", str(spec), "--tree", wide, "-o", str(tmp_path / "t.dot")]
    capsys.readouterr()
    for argv in (sample, render):
        assert main(argv) == 2
        assert "a node with 3 children: recursive nets read binary trees" in \
            capsys.readouterr().err
    spec.write_text(TREE_SPEC.replace('trees("train.txt")', 'trees("train.txt", binarize = '
                                      'true)', 1))
    assert main(sample) == 0
    assert capsys.readouterr().out.count("(") == 5          # a (lovely film): 5 nodes
    assert main(render) == 0
    # eval --data PATH reads it with the spec's binarize, given by name or by place
    (tmp_path / "wide.txt").write_text(wide + "\n")
    for call in ('trees("train.txt", binarize = true)', 'trees("train.txt", 100, true)'):
        spec.write_text(TREE_SPEC.replace('trees("train.txt")', call, 1))
        capsys.readouterr()
        assert main(["eval", str(spec), "--checkpoint", str(tmp_path / "run"), "--data",
                     str(tmp_path / "wide.txt")]) == 0, capsys.readouterr().err


# a tree classifier: one label a tree, the root's (`target sentiment : class(K)`)
CLASSIFIER_SPEC = TREE_SPEC.replace("target sentiment[n]", "target sentiment").replace(
    "o[n] = Ws @ h[n] + bs", "o = Ws @ h[root] + bs").replace(
    "xent(o[n], sentiment[n])", "xent(o, sentiment)").replace("epochs = 3", "epochs = 12")


def test_trees_bind_a_per_example_target_to_the_roots_label(tmp_path):
    spec = seqgraph.read_spec("s.sg", text=CLASSIFIER_SPEC.split("train {")[0])
    b = bind_trees(spec.graph, 10, 5, "x.txt")
    assert (b.input, b.target, b.root_target) == ("words", "sentiment", True)
    assert not bind_trees(seqgraph.read_spec("s.sg", text=SPEC.split("train {")[0]).graph,
                          10, 5, "x.txt").root_target


# the same classifier with its output at every node, the loss reading the root's
CLASSIFIER_AT_NODES = CLASSIFIER_SPEC.replace("o = Ws @ h[root] + bs", "o[n] = Ws @ h[n] + bs") \
    .replace("xent(o, sentiment)", "xent(o[root], sentiment)")
assert "o[n] = Ws @ h[n]" in CLASSIFIER_AT_NODES and "xent(o[root]," in CLASSIFIER_AT_NODES
# every node predicts its sentence's label (scored, and sampled, at the root)
CLASSIFIER_EVERY_NODE = CLASSIFIER_AT_NODES.replace("xent(o[root], sentiment)",
                                                    "xent(o[n], sentiment)")


@pytest.mark.parametrize("executor", ["interp", "compiled"])
@pytest.mark.parametrize("text", [CLASSIFIER_SPEC, CLASSIFIER_AT_NODES,
                                  CLASSIFIER_EVERY_NODE],
                         ids=["per_example", "at_nodes", "every_node"])
def test_a_tree_classifier_trains_evaluates_and_labels_the_root(tmp_path, capsys, executor,
                                                                text):
    from seqgraph.graph.trees import Forest
    from seqgraph.train.session import restore

    from conftest import tree_run_spec
    spec = tree_run_spec(tmp_path, text)
    out = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(out), "--quiet", "--executor",
                 executor]) == 0
    capsys.readouterr()
    assert main(["eval", str(spec), "--checkpoint", str(out), "--data",
                 str(tmp_path / "train.txt"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["trees"] == 12 and d["fine_root"] > 0.5         # it learnt its training roots
    assert d["nodes"] is d["fine_all"] is d["binary_all"] is None   # the roots alone
    assert main(["eval", str(spec), "--checkpoint", str(out)]) == 0
    shown = capsys.readouterr().out
    unit = "/node" if text is CLASSIFIER_EVERY_NODE else "/tree"   # as training counts
    assert "fine-grained root" in shown and "grained all" not in shown
    assert shown.split()[1].endswith(unit), shown
    # the label of the root, from the per-example output
    assert main(["sample", str(spec), "--checkpoint", str(out), "--input",
                 "(0 (0 a) (0 (0 lovely) (0 film)))"]) == 0
    label, prob, sentence = capsys.readouterr().out.strip().split("\t")
    t = restore(str(spec), str(out / "checkpoint.npz"), "interp")
    w = np.array([t.vocab.index[x] for x in ("a", "lovely", "film")] + [-1, -1])
    f = Forest.one([-1, -1, -1, 1, 0], [-1, -1, -1, 2, 3])
    o = t.model.run({"words": w}, forest=f).values["o"]
    assert o.shape == ((1, 5) if text is CLASSIFIER_SPEC else (5, 5))
    assert (int(label), sentence) == (int(o[-1].argmax()), "a lovely film")   # the root's
    p = np.exp(o[-1] - o[-1].max())
    assert float(prob) == pytest.approx(p.max() / p.sum(), abs=1e-4)
    # a tree of one word: its root is its leaf
    assert main(["sample", str(spec), "--checkpoint", str(out), "--input", "(0 film)"]) == 0
    assert capsys.readouterr().out.strip().split("\t")[2] == "film"
    assert main(["sample", str(spec), "--checkpoint", str(out)]) == 2       # no tree
    assert "give its tree, bracketed" in capsys.readouterr().err


def test_render_tree_draws_a_root_loss_once_at_the_root(tmp_path):
    spec, out = tmp_path / "r.sg", tmp_path / "t.dot"
    spec.write_text((ROOT / "specs" / "recursive.sg").read_text().replace(
        "loss xent(o[n], y[n])", "loss xent(o[n], y[n])\nloss 2 * xent(o[root], y[root])"))
    assert main(["render", str(spec), "--tree", "(3 (2 a) (4 film))", "-o", str(out)]) == 0
    labels = re.findall(r'label="(L[^"]*)"', out.read_text())
    assert sorted(x for x in labels if x.startswith("L2")) == ["L2[3] x 2"]   # the root
    assert sorted(x for x in labels if x.startswith("L1")) == ["L1[1]", "L1[2]", "L1[3]"]


def test_render_a_tree_classifier_and_a_tree_with_a_sequence(tmp_path, capsys):
    from test_trees import TREE_TO_SEQUENCE
    spec, out = tmp_path / "c.sg", tmp_path / "t.dot"
    spec.write_text(CLASSIFIER_SPEC)
    assert main(["render", str(spec), "--tree", "(3 (2 a) (4 film))", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.count("subgraph \"cluster_") == 3 and 'label="sentiment = 3"' in text
    spec.write_text(TREE_TO_SEQUENCE)
    assert main(["render", str(spec), "--tree", "(3 (2 a) (4 film))", "-o", str(out)]) == 2
    assert "over a tree and its sequence index 'u' too: give the steps with --unfold N" in \
        capsys.readouterr().err
    assert main(["render", str(spec), "--tree", "(3 (2 a) (4 film))", "--unfold", "2",
                 "-o", str(out)]) == 0
    text = out.read_text()
    assert 'label="x[2]"' in text and text.count("subgraph \"cluster_") == 3
    assert main(["render", str(spec), "-o", str(out)]) == 0       # the folded graph
    assert "label=\"root\"" in out.read_text()          # the edge h -> c reads the root


def test_a_tree_classifier_reads_only_the_roots_labels(tmp_path, capsys):
    """Inner nodes' labels are not the classifier's: class(2) with roots 0/1 trains
    whatever the inner labels; an unbound K is the roots' labels; a root label the
    target cannot hold is refused with its line."""
    from conftest import train_quiet
    text = "(1 (3 good) (4 film))\n(0 (2 bad) (0 film))\n"
    (tmp_path / "train.txt").write_text(text)
    spec = tmp_path / "c.sg"
    spec.write_text(CLASSIFIER_SPEC.replace('valid = trees("train.txt")', "valid = 0")
                    .replace("class(K)", "class(2)"))
    assert train_quiet(spec, tmp_path / "run", "--set", "epochs=1") == 0
    spec.write_text(CLASSIFIER_SPEC.replace('valid = trees("train.txt")', "valid = 0"))
    assert train_quiet(spec, tmp_path / "run2", "--set", "epochs=1") == 0
    from seqgraph.train.session import restore
    assert restore(str(spec), str(tmp_path / "run2" / "checkpoint.npz")).model.sizes[
        "sentiment"] == 2                                       # K: the roots' labels 0, 1
    (tmp_path / "train.txt").write_text(text + "(3 (1 ok) (1 film))\n")
    spec.write_text(spec.read_text().replace("class(K)", "class(2)"))
    capsys.readouterr()
    assert train_quiet(spec, tmp_path / "run3", "--set", "epochs=1") == 2
    assert f"{tmp_path / 'train.txt'}:3: label 3 does not fit sentiment : class(2)" in \
        capsys.readouterr().err


def test_a_checkpoint_reading_its_labels_otherwise_is_refused(tmp_path, capsys):
    """The classifier and the node-labelled net have the same parameters: a checkpoint of
    one given with the other's spec is refused, naming how each reads the labels."""
    from conftest import TREE_SPEC, train_quiet, tree_run_spec
    spec = tree_run_spec(tmp_path, CLASSIFIER_SPEC.replace("epochs = 12", "epochs = 1"))
    assert train_quiet(spec, tmp_path / "run") == 0
    other = tmp_path / "nodes.sg"
    other.write_text(TREE_SPEC)
    capsys.readouterr()
    for argv in (["eval", str(other)],
                 ["sample", str(other), "--input", "(0 (0 a) (0 film))"]):
        assert main([*argv, "--checkpoint", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert "read sentiment as one label a tree (its root's)" in err and \
            "reads it as a label at every node" in err, err


def test_eval_data_with_a_label_the_model_cannot_hold_names_its_line(tmp_path, capsys):
    from conftest import TREE_SPEC, TREES, train_quiet, tree_run_spec
    spec = tree_run_spec(tmp_path, TREE_SPEC.replace("epochs = 3", "epochs = 1"))
    assert train_quiet(spec, tmp_path / "run") == 0
    (tmp_path / "bad.txt").write_text(TREES + "(1 (9 bad) (2 film))\n")
    capsys.readouterr()
    assert main(["eval", str(spec), "--checkpoint", str(tmp_path / "run"), "--data",
                 str(tmp_path / "bad.txt")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bad.txt'}:5: label 9 does not fit the trained model's sentiment" \
        in err and "the labels of sentiment are 0 to 4" in err, err


def test_select_all_is_refused_for_a_tree_classifier(tmp_path, capsys):
    from conftest import train_quiet, tree_run_spec
    spec = tree_run_spec(tmp_path, CLASSIFIER_SPEC)
    assert train_quiet(spec, tmp_path / "run", "--set", "select=all") == 2
    assert "a tree classifier's labels are its roots'" in capsys.readouterr().err


def test_a_tree_beside_a_sequence_that_treepairs_cannot_feed_says_so(tmp_path, capsys):
    """A tree encoder whose decoder also reads an input x[u] is no model treepairs feeds
    (tests/test_treepairs.py): it runs from Python only. train says so, given trees data
    or none; check says what sample and truncation do."""
    from test_trees import TREE_TO_SEQUENCE
    spec = tmp_path / "t2s.sg"
    spec.write_text(TREE_TO_SEQUENCE)
    (tmp_path / "t.txt").write_text(TREES)
    for more in ([], ["--set", f'data=trees("{tmp_path / "t.txt"}")'],
                 ["--set", f'data=treepairs("{tmp_path / "t.txt"}")']):
        assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--quiet",
                     *more]) == 2
        err = capsys.readouterr().err
        assert "runs over a tree ('n') and a sequence ('u'), but it is not a tree encoder " \
               "with a decoder, which treepairs feeds" in err and \
               "Model.run with forest=" in err, err
    assert main(["check", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "seqgraph sample does not run it: no loader reads its data" in out
    assert "so is its sequence (no loader cuts it into windows)" in out
    assert "add data = trees" not in out and "can generate" not in out
    assert main(["render", str(spec), "--unfold", "3", "-o", str(tmp_path / "u.png")]) == 2
    assert 'give a tree too, --tree "(3 (2 a) (3 film))" --unfold N' in \
        capsys.readouterr().err


def test_no_data_suggests_a_loader_that_fits(tmp_path, capsys):
    spec = tmp_path / "c.sg"
    spec.write_text(CLASSIFIER_SPEC.split("train {")[0])
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert 'no train block: add one, train { data = trees("file.txt") }' in \
        capsys.readouterr().err


def test_jacobian_and_the_overlay_refuse_a_tree_model_for_its_reason(tmp_path, capsys):
    """A tree's recurrence has no distance in time: said first, whatever the spec's data
    (it used to blame the trees loader), and --overlay with --tree is refused, not
    ignored."""
    from conftest import tree_run_spec
    spec = tree_run_spec(tmp_path, CLASSIFIER_SPEC)
    for argv in (["jacobian", str(spec)], ["jacobian", str(spec), "--random"]):
        assert main(argv) == 2
        assert "runs over a tree ('n'), whose recurrence has no distance in time" in \
            capsys.readouterr().err
    assert main(["render", str(spec), "--tree", "(3 (2 a) (3 film))", "--overlay",
                 "jacobian", "-o", str(tmp_path / "t.png")]) == 2
    assert "--tree draws a tree without it" in capsys.readouterr().err
    assert not (tmp_path / "t.png").exists()


def test_the_api_restores_a_tree_run_and_reads_bracketed_trees(tmp_path, capsys):
    """seqgraph.restore(spec, run folder) and Trained.trees(texts): the batch `eval`
    scores, so that the API gives eval's numbers; forward and loss_and_grads take the
    forest."""
    import seqgraph

    from conftest import TREE_SPEC, TREES, train_quiet, tree_run_spec
    spec = tree_run_spec(tmp_path, TREE_SPEC.replace("epochs = 3", "epochs = 2"))
    assert train_quiet(spec, tmp_path / "run") == 0
    t = seqgraph.restore(str(spec), str(tmp_path / "run"))       # a folder, as the CLI
    assert "treenet" in repr(t) and len(repr(t)) < 300
    ins, tgs, f = t.trees(TREES.splitlines())
    assert f.batch == 4 and f.size == 14 and set(ins) == {"words"}
    res = t.model.run(ins, tgs, forest=f)
    o = t.model.forward(ins, forest=f)["o"]
    hits = o.argmax(-1) == tgs["sentiment"]
    assert np.array_equal(res.values["o"], o)
    loss, grads = t.model.loss_and_grads(ins, tgs, forest=f)
    assert loss == pytest.approx(res.loss) and set(grads) == set(t.model.params)
    (tmp_path / "four.txt").write_text(TREES)
    capsys.readouterr()
    assert main(["eval", str(spec), "--checkpoint", str(tmp_path / "run"), "--json",
                 "--data", str(tmp_path / "four.txt")]) == 0
    assert json.loads(capsys.readouterr().out)["fine_all"] == pytest.approx(hits.mean())
    ins, _, _ = t.trees(["(2 (2 zzz) (2 film))"])               # an unknown word: <unk>
    assert ins["words"][0] == t.vocab.index["<unk>"]


def test_check_refuses_a_loader_that_cannot_feed_the_model(tmp_path, capsys):
    """What train refuses by the kinds of the model's variables, check refuses too (no
    file is read): chars data for a tree model, trees data for a sequence model."""
    spec = tmp_path / "c.sg"
    spec.write_text(CLASSIFIER_SPEC)
    assert main(["check", str(spec), "--set", 'data=chars("x.txt")']) == 2
    assert "a chars loader reads a token stream, but model 'treenet' runs over trees" in \
        capsys.readouterr().err
    assert main(["check", str(ROOT / "specs" / "elman.sg"), "--set",
                 'data=trees("x.txt")']) == 2
    assert "declares no 'tree n' index; the loaders that fit it: chars(...), words(...) " \
        "or tagged(...)" in capsys.readouterr().err
    spec.write_text(CLASSIFIER_SPEC.replace("param E,", "input z : vec(3)\nparam E,"))
    assert main(["check", str(spec)]) == 2                     # trees feed no z
    assert "it cannot supply input 'z' (vec)" in capsys.readouterr().err
    spec.write_text(CLASSIFIER_SPEC)
    assert main(["check", str(spec)]) == 0                     # its own trees: fine


def test_render_tree_labels_child_edges_apart_from_the_loss(tmp_path):
    """The child edges read `left` and `right` (`L` is the loss); a tree classifier's
    boxes show the root's data label alone, the only one it reads."""
    out = tmp_path / "t.dot"
    assert main(["render", str(ROOT / "specs" / "recursive.sg"), "--tree",
                 "(3 (2 a) (4 film))", "-o", str(out)]) == 0
    text = out.read_text()
    assert 'label="left"' in text and 'label="right"' in text and "label 2" in text
    spec = tmp_path / "c.sg"
    spec.write_text(CLASSIFIER_SPEC)
    assert main(["render", str(spec), "--tree", "(3 (2 a) (4 film))", "-o", str(out)]) == 0
    text = out.read_text()
    assert "label 3" in text and "label 2" not in text and "label 4" not in text


def test_restore_names_both_models_when_the_checkpoint_leaves_a_size_unbound(tmp_path):
    """Another model's checkpoint that does not bind this spec's sizes (the decoder's K)
    is said as another model's, not as a missing --dim."""
    import seqgraph

    from conftest import train_quiet, tree_run_spec
    from test_trees import TREE_TO_SEQUENCE
    spec = tree_run_spec(tmp_path, CLASSIFIER_SPEC.replace("epochs = 12", "epochs = 1"))
    assert train_quiet(spec, tmp_path / "run") == 0
    for text in (TREE_TO_SEQUENCE, TREE_TO_SEQUENCE.replace("(K)", "(Q)")):  # Q: unbound
        (tmp_path / "t2s.sg").write_text(text)
        with pytest.raises(seqgraph.SeqgraphError, match="was saved from model 'treenet'"
                           r"(.*)?, not from model 'recursive'"):
            seqgraph.restore(str(tmp_path / "t2s.sg"), str(tmp_path / "run"))


@pytest.mark.parametrize("swap, unit", [
    (("o[n] = Ws @ h[n] + bs\nloss xent(o[n], sentiment[n])",
      "o = Ws @ h[root] + bs\nloss xent(o, sentiment[root])"), "/tree"),
    (("xent(o[n], sentiment[n])", "xent(o[root], sentiment[root])"), "/tree"),
    (("xent(o[n], sentiment[n])", "xent(o[n], sentiment[root])"), "/node")],
    ids=["per_example_at_root", "root_loss_alone", "every_node_on_the_root"])
def test_a_node_labelled_model_whose_loss_reads_the_root_is_scored_there(tmp_path, capsys,
                                                                         swap, unit):
    """With a label at every node in the data, a loss that reads only the root's label
    is scored at the roots, and train and validation count the loss alike (per tree for
    one term a tree, per node for a sum over the nodes)."""
    from conftest import TREE_SPEC, tree_run_spec
    text = TREE_SPEC.replace(*swap)
    assert text != TREE_SPEC
    spec = tree_run_spec(tmp_path, text)                 # valid: the training trees
    assert main(["train", str(spec), "--out", str(tmp_path / "run")]) == 0
    last = [x for x in capsys.readouterr().err.splitlines() if x.startswith("epoch 3/3")][-1]
    train, valid = (float(v) for v in
                    re.search(r"train ([\d.]+)(/\w+); valid loss ([\d.]+)\2", last).group(1, 3))
    assert f"{unit};" in last and "fine-grained root" in last and "grained all" not in last
    assert abs(train - valid) < 0.5 * max(train, valid)     # the same trees, the same unit
    assert main(["eval", str(spec), "--checkpoint", str(tmp_path / "run"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["fine_all"] is None and d["fine_root"] is not None


def test_a_resume_with_a_spec_reading_its_labels_otherwise_is_refused(tmp_path, capsys):
    from conftest import TREE_SPEC, train_quiet, tree_run_spec
    spec = tree_run_spec(tmp_path, TREE_SPEC.replace("epochs = 3", "epochs = 1"))
    assert train_quiet(spec, tmp_path / "run") == 0
    spec.write_text(CLASSIFIER_SPEC.replace("epochs = 12", "epochs = 2"))
    capsys.readouterr()
    assert main(["train", str(spec), "--resume", str(tmp_path / "run"), "--quiet"]) == 2
    assert "its run read sentiment as a label at every node; this spec reads it as one " \
        "label a tree" in capsys.readouterr().err


def test_train_keys_a_tree_model_has_no_use_for_are_warned_of(tmp_path, capsys):
    from conftest import tree_run_spec
    spec = tree_run_spec(tmp_path, CLASSIFIER_SPEC)
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--quiet", "--steps",
                 "1", "--set", "bptt=5"]) == 0
    err = capsys.readouterr().err
    assert "warning: bptt does nothing for model 'treenet': a tree is processed whole" in \
        err and "teacher" not in err
    assert main(["train", str(spec), "--out", str(tmp_path / "run3"), "--quiet", "--steps",
                 "1", "--set", "teacher=0.5"]) == 0
    assert "warning: teacher does nothing for model 'treenet': it reads no target back" in \
        capsys.readouterr().err
    assert main(["train", str(spec), "--out", str(tmp_path / "run2"), "--quiet", "--steps",
                 "1"]) == 0
    assert "does nothing" not in capsys.readouterr().err


def test_a_checkpoint_whose_target_the_spec_renamed(tmp_path, capsys):
    """The same parameters, the target renamed: eval names the variable the run fed; a
    resume binds the spec's own name and continues (no traceback either way)."""
    from conftest import train_quiet, tree_run_spec
    spec = tree_run_spec(tmp_path, CLASSIFIER_SPEC.replace("epochs = 12", "epochs = 1"))
    assert train_quiet(spec, tmp_path / "run") == 0
    renamed = tmp_path / "r.sg"
    renamed.write_text(spec.read_text().replace("sentiment", "mood").replace(
        "epochs = 1", "epochs = 2"))
    capsys.readouterr()
    assert main(["eval", str(renamed), "--checkpoint", str(tmp_path / "run")]) == 2
    assert "fed 'sentiment', which" in capsys.readouterr().err
    assert main(["train", str(renamed), "--resume", str(tmp_path / "run"), "--quiet"]) == 0
