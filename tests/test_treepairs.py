"""A tree encoder and a sequence decoder trained from the command line: the `treepairs`
loader (`tree<TAB>target` a line), its batches (a forest and padded targets), training,
evaluation with greedy decoding, and generation from a tree (specs/tree2seq.sg)."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

import seqgraph
from seqgraph.cli import main
from seqgraph.errors import DataError
from seqgraph.gradcheck import gradcheck
from seqgraph.graph.trees import Node, forest
from seqgraph.train.loaders import treepairs
from seqgraph.train.trees import parse_tree

from conftest import fails, sg

SPECS = Path(__file__).resolve().parent.parent / "specs"
SPEC = (SPECS / "tree2seq.sg").read_text()
DATA = "(2 (2 (2 cat) (2 dog)) (2 owl))\towl dog cat\n" \
       "(2 (2 fox) (2 bee))\tbee fox\n" \
       "\n" \
       "(2 (2 ant) (2 (2 elk) (2 (2 yak) (2 cat))))\tcat yak elk ant\n"


def _spec(tmp_path, data=DATA, text=SPEC, epochs=None):
    """specs/tree2seq.sg reading `data` from d.tsv beside it (no validation split)."""
    (tmp_path / "d.tsv").write_text(data)
    text = text.replace('treepairs("data/tree2seq.tsv")', 'treepairs("d.tsv")') \
        .replace("valid     = 0.1", "valid     = 0")
    if epochs is not None:
        text = text.replace("epochs    = 30", f"epochs    = {epochs}")
    p = tmp_path / "t2s.sg"
    p.write_text(text)
    return p


# ----------------------------------------------------------------------------- reading
def test_treepairs_reads_a_tree_and_its_target_a_line(tmp_path):
    (tmp_path / "d.tsv").write_text(DATA)
    loader = treepairs("d.tsv", base=tmp_path)
    raw = loader.read()
    assert raw.lines == [1, 2, 4]                          # the blank line is skipped
    left, right, words = raw.source[0]
    assert words == ["cat", "dog", None, "owl", None]      # post-order, the root last
    assert (left, right) == ([-1, -1, 0, -1, 2], [-1, -1, 1, -1, 3])
    assert raw.target[1] == ["bee", "fox"]
    v = loader.vocab(raw)
    assert v.tokens[0] == "<unk>" and v.target.tokens[:3] == ("<unk>", "<s>", "</s>")
    assert set(v.tokens) == {"<unk>", "cat", "dog", "owl", "fox", "bee", "ant", "elk", "yak"}


@pytest.mark.parametrize("line, where, what", [
    ("(2 (2 a) (2 b))", "d.tsv:2", "expected tree<TAB>target, found no tab"),
    ("(2 (2 a) (2 b))\t  ", "d.tsv:2", "expected tree<TAB>target, the target is empty"),
    ("(2 (2 a) (2 b)\ta b", "d.tsv:2", "character 1: unbalanced brackets"),
    ("(2 ((2 a) (2 b)))\ta b", "d.tsv:2", "character 5: missing label"),
    ("(2 (2 a) (2 b) (2 c))\ta b c", "d.tsv:2", "a node with 3 children: recursive nets "
     "read binary trees (write it as nested pairs, or read it with treepairs(..., "
     "binarize = true)"),
    ("(2 (2 a) (2 b))\ta </s> b", "d.tsv:2", "the target holds '</s>', which the loader "
     "adds itself"),
])
def test_bad_lines_are_named_with_their_line_and_character(tmp_path, line, where, what):
    (tmp_path / "d.tsv").write_text("(2 (2 a) (2 b))\tb a\n" + line + "\n")
    with pytest.raises(DataError) as e:
        treepairs("d.tsv", base=tmp_path).read()
    assert str(e.value).startswith(str(tmp_path / where)) and what in str(e.value), e.value


def test_any_label_is_read_since_treepairs_does_not_feed_them(tmp_path):
    """A parse tree's labels (S, NP, ...) are no sentiment classes: treepairs reads them
    (binarize collapses a unary ROOT), as the words they hold."""
    (tmp_path / "d.tsv").write_text("(ROOT (S (NP (DT the) (NN cat)) (VP sat)))\tsat cat\n")
    _, _, words = treepairs("d.tsv", binarize=True, base=tmp_path).read().source[0]
    assert [w for w in words if w] == ["the", "cat", "sat"] and len(words) == 5
    with pytest.raises(DataError) as e:
        parse_tree("(S (NP cat) (VP dog))", "t.txt")
    assert "missing label: a node must start with its label, a class id as in '(3 ...', " \
           "not 'S'" in str(e.value)


def test_binarize_reads_wider_nodes_as_trees_does(tmp_path):
    (tmp_path / "d.tsv").write_text("(2 (2 a) (2 b) (2 c))\tc b a\n")
    _, _, words = treepairs("d.tsv", binarize=True, base=tmp_path).read().source[0]
    assert [w for w in words if w] == ["a", "b", "c"] and len(words) == 5


def test_a_batch_is_one_forest_with_padded_targets(tmp_path):
    """Rows in the order a shuffled, bucketed batch gives them: each tree and its target
    stay together."""
    from seqgraph.train.config import make_config
    from seqgraph.train.data import load_dataset
    spec = seqgraph.read_spec(str(_spec(tmp_path)))
    ds = load_dataset(spec.graph, make_config(spec.train, {}, tmp_path))
    b = ds.train.batch([2, 0, 1])
    v, tv = ds.vocab.index, ds.vocab.target.index
    f, pay = forest([Node(2, ((2, "ant"), Node(2, ((2, "elk"), Node(2, ((2, "yak"),
                                                                       (2, "cat"))))))),
                     Node(2, (Node(2, ((2, "cat"), (2, "dog"))), (2, "owl"))),
                     Node(2, ((2, "fox"), (2, "bee")))])
    assert list(b.forest.left) == list(f.left) and list(b.forest.right) == list(f.right)
    assert list(b.forest.roots) == list(f.roots) and list(b.forest.tree) == list(f.tree)
    assert list(b.forest.height()) == list(f.height())
    assert list(b.inputs["w"]) == [-1 if isinstance(p, int) else v[p[1]] for p in pay]
    eos = tv["</s>"]
    assert b.inputs["y"].tolist() == [          # one dict: ExampleBatches splits it
        [tv["cat"], tv["yak"], tv["elk"], tv["ant"], eos],
        [tv["owl"], tv["dog"], tv["cat"], eos, -1],
        [tv["bee"], tv["fox"], eos, -1, -1]]
    assert list(b.lengths) == ["u"] and list(b.lengths["u"]) == [5, 4, 3]


# ----------------------------------------------------------------------------- binding
def test_a_tree_beside_a_sequence_is_told_to_read_treepairs(tmp_path, capsys):
    spec = _spec(tmp_path)
    (tmp_path / "t.txt").write_text("(2 (2 a) (2 b))\n")
    err = fails(capsys, "train", spec, "--out", tmp_path / "run", "--quiet",
                "--set", f'data=trees("{tmp_path / "t.txt"}")')
    assert "runs over a tree ('n') and a sequence ('u'): train it on treepairs(\"FILE\")" \
        in err, err
    text = spec.read_text().split("train {")[0]
    spec.write_text(text)
    err = fails(capsys, "train", spec, "--out", tmp_path / "run", "--quiet")
    assert "add one, train { data = treepairs(\"pairs.tsv\") }" in err, err


def test_treepairs_feeds_only_a_tree_and_a_sequence(tmp_path, capsys):
    rec = (SPECS / "recursive.sg").read_text()
    (tmp_path / "d.tsv").write_text(DATA)
    (tmp_path / "r.sg").write_text(rec)
    err = fails(capsys, "train", tmp_path / "r.sg", "--out", tmp_path / "run", "--quiet",
                "--set", f'data=treepairs("{tmp_path / "d.tsv"}")')
    assert "a treepairs loader reads a tree and a target sequence an example; model " \
           "'recursive' has its 'tree n' index but no sequence index" in err, err
    (tmp_path / "s.sg").write_text((SPECS / "seq2seq.sg").read_text())
    err = fails(capsys, "train", tmp_path / "s.sg", "--out", tmp_path / "run", "--quiet",
                "--set", f'data=treepairs("{tmp_path / "d.tsv"}")')
    assert "has no 'tree n' index" in err, err


def test_check_report_of_a_tree_encoder(capsys):
    code, out = sg(capsys, "check", SPECS / "tree2seq.sg")
    assert code == 0
    assert "seqgraph sample writes y[u] for the tree --input step by step (data = " \
           "treepairs(...)), each output read back as y[u-1]" in out.out
    assert "can generate step by step over u" in out.out
    assert "treepairs gives whole examples" in out.out


# ----------------------------------------------------------------------------- training
def test_the_gallery_tree_encoder_passes_gradcheck():
    spec = seqgraph.read_spec(str(SPECS / "tree2seq.sg"))
    m = seqgraph.Model(spec, dims={"V": 5, "K": 4}, dtype="float64", start_ids={"y": 1})
    assert all(c.ok for c in gradcheck(m))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """specs/tree2seq.sg trained 12 epochs on its own data (60 trees held out)."""
    d = tmp_path_factory.mktemp("t2s")
    assert main(["train", str(SPECS / "tree2seq.sg"), "--out", str(d / "run"), "--quiet",
                 "--epochs", "12"]) == 0
    return d / "run"


def test_training_learns_to_mirror_a_tree(trained, capsys):
    rows = (trained / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    valid = [float(r.split(",")[head.index("valid_loss")]) for r in rows[1:]
             if r.split(",")[head.index("valid_loss")]]
    assert valid[-1] < 0.6 * valid[0], valid
    _, out = sg(capsys, "eval", SPECS / "tree2seq.sg", "--checkpoint", trained, "--json")
    d = json.loads(out.out)
    assert d["kind"] == "treepairs" and d["decoded"] == 60 and d["tokens"] > 60
    assert d["accuracy"] > 0.5 and d["exact_match"] > 0.15, d


def test_greedy_decoding_reads_back_what_it_chose(trained, tmp_path):
    """eval's greedy outputs for a batch of different trees are the argmax of the model
    run once over each output as its target (teacher forcing), step by step."""
    from seqgraph.train.evaluate import decode_metrics
    t = seqgraph.restore(str(SPECS / "tree2seq.sg"), str(trained))
    lines = [line for line in (SPECS / "data" / "tree2seq.tsv").read_text().splitlines()[:7]]
    b = t.examples(lines)
    ex_vocab = t.vocab
    from seqgraph.train.data import encode_examples
    from seqgraph.train.loaders import treepairs as tp
    (tmp_path / "x.tsv").write_text("\n".join(lines) + "\n")
    loader = tp(str(tmp_path / "x.tsv"))
    ex = encode_examples(t.spec.graph, loader, loader.read(), ex_vocab, t.binding,
                         "x.tsv", 64)
    d = decode_metrics(t.model, t.spec.graph, t.binding, ex, ex_vocab, batch=3)
    eos = ex_vocab.target.index["</s>"]
    hyps = [h + [eos] for h in d["hypotheses"]]
    T = max(len(h) for h in hyps)
    y = np.full((len(hyps), T), -1)
    for i, h in enumerate(hyps):
        y[i, :len(h)] = h
    res = t.model.run(b.inputs, {"y": y}, forest=b.forest,
                      lengths={"u": np.array([len(h) for h in hyps])})
    pred = np.asarray(res.values["o"]).argmax(-1)
    for i, h in enumerate(hyps):
        assert list(pred[i, :len(h)]) == h


def test_sample_writes_what_eval_decodes_for_each_tree(trained, capsys, tmp_path):
    """sample --greedy for a tree is eval's greedy hypothesis for the same tree in a
    batch of others, and it depends on the tree."""
    spec = SPECS / "tree2seq.sg"
    trees = ["(2 (2 (2 cat) (2 dog)) (2 owl))", "(2 (2 bee) (2 (2 fox) (2 yak)))",
             "(2 (2 ant) (2 elk))"]
    (tmp_path / "t.tsv").write_text("".join(f"{t}\towl\n" for t in trees))
    assert sg(capsys, "eval", spec, "--checkpoint", trained, "--data", tmp_path / "t.tsv",
              "--per-example", tmp_path / "e.csv")[0] == 0
    with open(tmp_path / "e.csv", newline="") as f:
        hyp = [r["hypothesis"] for r in csv.DictReader(f)]
    outs = [sg(capsys, "sample", spec, "--checkpoint", trained, "--input", t,
               "--greedy")[1].out.strip() for t in trees]
    assert outs == hyp and len(set(outs)) == 3, (outs, hyp)
    tree = trees[0]
    args = ["sample", spec, "--checkpoint", trained, "--input", tree]
    code, greedy = sg(capsys, *args, "--greedy")
    assert code == 0, greedy.err
    assert sg(capsys, *args, "--beam", "1")[1].out == greedy.out
    code, nbest = sg(capsys, *args, "--beam", "3", "--nbest")
    assert code == 0 and len(nbest.out.splitlines()) == 3
    scores = [float(line.split("\t")[0]) for line in nbest.out.splitlines()]
    assert scores == sorted(scores, reverse=True)
    a = sg(capsys, *args, "--seed", "4")[1].out
    assert a == sg(capsys, *args, "--seed", "4")[1].out
    # the greedy output is eval's for the same tree
    t = seqgraph.restore(str(spec), str(trained))
    from seqgraph.train.evaluate import greedy_decode
    b = t.examples([f"{tree}\towl"])
    ids = greedy_decode(t.model, t.spec.graph, t.binding, b.inputs, 100,
                        t.vocab.target.index["</s>"], classes=len(t.vocab.target),
                        forest=b.forest)[0]
    assert t.vocab.target.decode(ids) == greedy.out.strip()


def test_sample_refuses_bad_trees_with_the_reason(trained, capsys):
    spec = SPECS / "tree2seq.sg"
    args = ["sample", spec, "--checkpoint", trained]
    assert "give it with --input" in fails(capsys, *args)
    err = fails(capsys, *args, "--input", "(2 (2 cat) (2 zebra))")
    assert "'zebra' is not in the source vocabulary" in err and "--unk" in err, err
    assert sg(capsys, *args, "--input", "(2 (2 cat) (2 zebra))", "--unk")[0] == 0
    err = fails(capsys, *args, "--input", "(2 (2 cat) (2 dog)")
    assert "--input:1: character 1: unbalanced brackets" in err, err


def test_a_run_resumes_and_eval_takes_other_data(tmp_path, capsys):
    spec = _spec(tmp_path, DATA * 4, epochs=4)           # 12 trees: one batch an epoch
    out = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(out), "--quiet", "--steps", "2"]) == 0
    assert main(["train", str(spec), "--resume", str(out), "--quiet"]) == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    assert [r.split(",")[head.index("step")] for r in rows[1:]] == ["1", "2", "3", "4"]
    (tmp_path / "test.tsv").write_text("(2 (2 cat) (2 zebra))\tzebra cat\n")
    code, res = sg(capsys, "eval", spec, "--checkpoint", out, "--data",
                   tmp_path / "test.tsv", "--json", "--per-example", tmp_path / "e.csv")
    assert code == 0, res.err
    d = json.loads(res.out)
    assert d["decoded"] == 1 and d["tokens"] == 3      # zebra is <unk>: scored, not refused
    assert (tmp_path / "e.csv").read_text().splitlines()[1].startswith("1,1,3,")


def test_the_python_api_reads_tree_lines_as_examples(trained):
    t = seqgraph.restore(str(SPECS / "tree2seq.sg"), str(trained))
    with pytest.raises(seqgraph.UsageError) as e:
        t.trees(["(2 (2 cat) (2 dog))"])
    assert "was trained on treepairs" in str(e.value) and "examples(" in str(e.value)
    b = t.examples(["(2 (2 cat) (2 dog))\tdog cat", "(2 (2 owl) (2 (2 fox) (2 ant)))\tant"])
    assert b.forest.batch == 2 and list(b.forest.roots) == [2, 7]
    assert b.targets["y"].shape == (2, 3) and list(b.lengths["u"]) == [3, 2]
    loss = t.model.run(b.inputs, b.targets, forest=b.forest, lengths=b.lengths).loss
    assert np.isfinite(loss) and loss > 0


# ----------------------------------------------------------------------------- render
def test_render_draws_the_tree_and_the_decoders_steps(capsys):
    from seqgraph import render
    spec = seqgraph.read_spec(str(SPECS / "tree2seq.sg"))
    dot = render.tree_dot(spec, "(2 (2 (2 cat) (2 dog)) (2 owl))", lengths={"u": 3})
    assert "unfolded over (2 (2 (2 cat) (2 dog)) (2 owl)), u = 1..3" in dot
    for label in ("w[1] = 'cat'", "w[4] = 'owl'", "h[5]", "s[1]", "s[3]", "o[3]", "L[3]",
                  "y[3]", "node 5 (internal): 'cat dog owl'"):
        assert f'label="{label}"' in dot or f"label=\"{label}" in dot, label
    assert "label 2" not in dot          # a tree encoder's labels are no targets
    with pytest.raises(seqgraph.UsageError) as e:
        render.tree_dot(spec, "(2 (2 cat) (2 dog))")
    assert "give the steps with --unfold N" in str(e.value)
    rec = seqgraph.read_spec(str(SPECS / "recursive.sg"))
    with pytest.raises(seqgraph.UsageError) as e:
        render.tree_dot(rec, "(2 (2 cat) (2 dog))", lengths={"u": 3})
    assert "runs over a tree alone" in str(e.value)


def test_render_cli_writes_a_tree_encoder_unfolded(tmp_path, capsys):
    out = tmp_path / "t.dot"
    code, res = sg(capsys, "render", SPECS / "tree2seq.sg", "--tree",
                   "(2 (2 cat) (2 dog))", "--unfold", "u=2", "-o", out)
    assert code == 0, res.err
    text = out.read_text()
    # s[1], s[2] and the start s[0] (with y[0]) the first step reads
    assert text.count('label="s[') == 3 and "w[2] = 'dog'" in text
    assert 'label="s[0]"' in text and 'label="y[0]"' in text
    err = fails(capsys, "render", SPECS / "tree2seq.sg", "--tree", "(2 (2 cat) (2 dog))",
                "-o", out)
    assert "give the steps with --unfold N" in err


# ------------------------------------------------------------------------ options, notes
def test_sample_reads_a_tree_as_the_runs_loader_did(tmp_path, capsys):
    """binarize given by --set (recorded in the checkpoint, not in the spec) reads a wide
    --input tree too, as the data was read."""
    spec = tmp_path / "t2s.sg"
    spec.write_text(SPEC.split("train {")[0])
    (tmp_path / "w.tsv").write_text("(2 (2 cat) (2 dog) (2 owl))\towl dog cat\n" * 4)
    out = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(out), "--quiet", "--steps", "1", "--set",
                 f'data=treepairs("{tmp_path / "w.tsv"}", binarize = true)', "--set",
                 "valid=0"]) == 0
    code, res = sg(capsys, "sample", spec, "--checkpoint", out, "--greedy", "--input",
                   "(2 (2 cat) (2 dog) (2 owl))", "--length", "3")
    assert code == 0, res.err


def test_valid_and_eval_data_must_split_tokens_as_the_training_data(tmp_path, capsys):
    spec = _spec(tmp_path, DATA * 4, epochs=1)
    err = fails(capsys, "train", spec, "--out", tmp_path / "run", "--quiet", "--set",
                f'valid=treepairs("{tmp_path / "d.tsv"}", chars = true)')
    assert "valid reads with chars = true, the training data with chars = false" in err
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    err = fails(capsys, "eval", spec, "--checkpoint", tmp_path / "run", "--data",
                f'treepairs("{tmp_path / "d.tsv"}", chars = true)')
    assert "--data reads with chars = true, the training data with chars = false" in err


def test_train_runs_a_tree_encoder_compiled_and_notes_one_it_cannot(tmp_path, capsys):
    """The gallery's model runs compiled (the trees level-batched, the decoder a compiled
    loop: compile/hybrid.py), without a note; a decoder the compiler does not run
    (bilinear in its loop) trains in the interpreter, and train says so."""
    spec = _spec(tmp_path, DATA * 4, epochs=1)
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--steps", "1",
                 "--executor", "compiled"]) == 0
    assert "in the interpreter" not in capsys.readouterr().err
    err = fails(capsys, "jacobian", spec, "--checkpoint", tmp_path / "run")
    assert "also runs over a tree ('n') beside its sequence ('u')" in err
    spec = _spec(tmp_path, DATA * 4, epochs=1, text=SPEC.replace(
        "U @ s[u-1]", "bilinear(T, s[u-1], c)").replace("param E,", "param T, E,"))
    assert main(["train", str(spec), "--out", str(tmp_path / "run2"), "--steps", "1",
                 "--executor", "compiled"]) == 0
    err = capsys.readouterr().err
    assert "note: this model trains in the interpreter (op 'bilinear' inside a cycle)" in err


def test_teacher_forcing_applies_to_a_tree_encoders_decoder(tmp_path, capsys):
    """teacher = p feeds the decoder its own sample with probability 1 - p (a tree model
    has no use for it, a tree encoder's decoder has): no warning, and another loss."""
    spec = _spec(tmp_path, DATA * 4, epochs=2)                 # one update an epoch
    losses = []
    for p in ("1.0", "0.0"):
        assert main(["train", str(spec), "--out", str(tmp_path / p), "--quiet", "--steps",
                     "2", "--set", f"teacher={p}"]) == 0
        assert "warning" not in capsys.readouterr().err
        rows = (tmp_path / p / "metrics.csv").read_text().splitlines()
        losses.append(rows[2].split(",")[2])        # the second update's training loss
    assert losses[0] != losses[1]


def test_a_folded_graph_draws_a_tree_as_its_data_reads_it():
    """render.tree_dot takes a spec or its folded graph: both read the train block's
    binarize; a label that only looks like a digit (²) is no class id and no crash."""
    from seqgraph import render
    spec = seqgraph.read_spec("t.sg", text=SPEC.replace(
        'treepairs("data/tree2seq.tsv")', 'treepairs("data/tree2seq.tsv", binarize = true)'))
    wide = "(2 (2 cat) (2 dog) (2 owl))"
    for given in (spec, spec.graph):
        assert "w[3] = 'owl'" in render.tree_dot(given, wide, lengths={"u": 2})
    assert parse_tree("(² (x a) (x b))", "t", 1, False, "treepairs")[3] == [-1, -1, -1]
    with pytest.raises(DataError, match="missing label"):
        parse_tree("(² (2 a) (2 b))", "t.txt")
