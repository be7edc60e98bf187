"""One vector in, a sequence out (Deep Learning, Fig. 10.9; specs/one_to_many.sg) from the
command line: `pairs` reads its source column as the numbers of the model's per-example
`c : vec(D)`, `seqgraph train` learns the gallery spec's own data, `seqgraph sample
--input "..."` reads the vector the same way. The interpreter; a few seconds."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

import seqgraph
from seqgraph.cli import main
from seqgraph.errors import DataError, UsageError
from seqgraph.train.binding import fit_loader
from seqgraph.train.config import make_config
from seqgraph.train.data import load_dataset
from seqgraph.train.loaders import BOS, EOS, pairs

from conftest import sg

SPECS = Path(__file__).resolve().parents[1] / "specs"
SPEC = SPECS / "one_to_many.sg"


def graph(text: str | None = None, path: Path = SPEC):
    return seqgraph.read_spec(str(path), text).graph


@pytest.fixture
def work(tmp_path):
    """The gallery spec and its data, copied so the test writes nothing in specs/."""
    (tmp_path / "data").mkdir()
    shutil.copy(SPECS / "data" / "one_to_many.tsv", tmp_path / "data")
    shutil.copy(SPEC, tmp_path / "one_to_many.sg")
    return tmp_path


def write(d: Path, name: str, text: str) -> Path:
    (d / name).write_text(text)
    return d / name


# --------------------------------------------------------------------------- reading
def test_pairs_reads_the_source_as_the_vector_the_model_declares(work):
    spec = seqgraph.read_spec(str(work / "one_to_many.sg"))
    cfg = make_config(spec.train, {}, work)
    ds = load_dataset(spec.graph, cfg)
    b, v = ds.binding, ds.vocab
    assert (b.input, b.target, b.kind, b.feedback) == ("c", "y", "pairs", True)
    assert v.kind == "vectors" and len(v) == 8
    assert v.target.tokens[:3] == ("<unk>", BOS, EOS) and "big" in v.target.tokens
    assert b.dims == {"V": len(v.target)} and b.start_ids == {"y": v.target.index[BOS]}
    first = ds.train.fields["c"][0]
    assert first.dtype == np.float64 and first.shape == (8,)
    line = (work / "data" / "one_to_many.tsv").read_text().splitlines()[0]
    np.testing.assert_allclose(first, [float(x) for x in line.split("\t")[0].split()])
    assert v.target.decode(ds.train.fields["y"][0][:-1]) == line.split("\t")[1]
    batch = next(iter(ds.batches(cfg).batches()))[1]
    assert batch.inputs["c"].shape == (cfg.batch, 8) and batch.targets["y"].shape[0] == 16


@pytest.mark.parametrize("text, msg", [
    ("1 2 3 4 5 6 7 8\ta b\n1 2 3 4 5 6 7\ta\n",
     r"f\.tsv:2: expected the source as 8 numbers for c : vec\(8\), found 7"),
    ("1 2 x 4 5 6 7 8\ta b\n",
     (r"f\.tsv:1: expected the source as 8 numbers for c : vec\(8\); value 3 is 'x', "
      r"not a number")),
    ("1 2 3 4 5 6 7 nan\ta b\n", r"f\.tsv:1: .*value 8 is 'nan', not a number"),
    ("1,2,3,4,5,6,7,8\t \n", r"f\.tsv:1: expected source<TAB>target, the target is empty"),
])
def test_a_bad_vector_names_file_line_and_what_was_expected(tmp_path, text, msg):
    write(tmp_path, "f.tsv", text)
    loader = fit_loader(graph(), pairs("f.tsv", base=tmp_path))
    assert (loader.vector, loader.width) == ("c", 8)
    with pytest.raises(DataError, match=msg):
        loader.read()


def test_an_undeclared_size_is_bound_by_the_first_line(tmp_path):
    text = SPEC.read_text().replace("dim D = 8 ", "")
    g = graph(text, tmp_path / "m.sg")
    write(tmp_path, "f.tsv", "1 2 3\ta b\n4, 5, 6\tb\n7 8\ta\n")
    loader = fit_loader(g, pairs("f.tsv", base=tmp_path))
    assert loader.width is None
    with pytest.raises(DataError, match=r"f\.tsv:3: expected the source as 3 numbers for "
                                        r"c : vec\(D\) \(as on the first line\), found 2"):
        loader.read()
    write(tmp_path, "f.tsv", "1 2 3\ta b\n4, 5, 6\tb\n")
    raw = loader.read()
    assert len(loader.vocab(raw)) == 3                   # D = 3, from the data
    np.testing.assert_allclose(raw.source[1], [4, 5, 6])
    # --dim fixes it as the spec would
    assert fit_loader(g, pairs("f.tsv", base=tmp_path), {"D": 4}).width == 4


def test_the_loader_reads_tokens_for_a_token_source_and_refuses_source_chars_here(tmp_path):
    write(tmp_path, "f.tsv", "1 2\ta\n")
    s2s = graph((SPECS / "seq2seq.sg").read_text(), tmp_path / "s.sg")
    assert fit_loader(s2s, pairs("f.tsv", base=tmp_path)).vector is None
    with pytest.raises(UsageError, match=r"source_chars reads the source as characters, "
                                         r"but model 'one_to_many' reads it as numbers"):
        fit_loader(graph(), pairs("f.tsv", source_chars=True, base=tmp_path))


# ------------------------------------------------------------------ the command line
def valid_losses(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r["valid_loss"]) for r in csv.DictReader(f) if r["valid_loss"]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The gallery spec trained from its own train block, 5 epochs, the interpreter."""
    d = tmp_path_factory.mktemp("otm")
    (d / "data").mkdir()
    shutil.copy(SPECS / "data" / "one_to_many.tsv", d / "data")
    shutil.copy(SPEC, d / "one_to_many.sg")
    assert main(["train", str(d / "one_to_many.sg"), "--out", str(d / "run"), "--executor",
                 "interp", "--quiet", "--epochs", "5"]) == 0
    return d


def test_seqgraph_train_reduces_the_loss(trained):
    losses = valid_losses(trained / "run")
    assert len(losses) == 5
    assert losses[-1] < 0.5 * losses[0], losses
    assert losses[-1] < 0.5                 # nats per token: most captions are right


def test_seqgraph_sample_reads_the_vector_and_writes_a_caption(trained, capsys):
    args = ["sample", trained / "one_to_many.sg", "--checkpoint", trained / "run"]
    code, out = sg(capsys, *args, "--input", "0 0 1 0 0 2 0 0", "--greedy")
    assert code == 0, out.err
    words = out.out.split()
    vocab = {"a", "big", "red", "green", "blue", "yellow", "ball", "box", "cup", "hat"}
    assert 1 <= len(words) <= 6 and set(words) <= vocab, out.out
    assert out.out.strip() == "a big blue box"
    code, out = sg(capsys, *args, "--input", "1,0,0,0, 1,0,0,0", "--beam", "3")
    assert code == 0 and out.out.strip() == "a red ball", out
    code, out = sg(capsys, *args, "--input", "0 0 1 0 0 2 0")
    assert code == 2 and "--input must be 8 finite numbers for 'c' : vec(8); it has 7" \
        in out.err
    code, out = sg(capsys, *args, "--input", "0 0 1 0 0 2 0 x")
    assert code == 2 and "value 8 is 'x'" in out.err


def test_seqgraph_eval_decodes_the_held_out_captions(trained, capsys):
    code, out = sg(capsys, "eval", trained / "one_to_many.sg", "--checkpoint",
                   trained / "run", "--json")
    assert code == 0, out.err
    import json
    r = json.loads(out.out)
    assert r["kind"] == "pairs" and r["decoded"] == 20 and r["exact_match"] > 0.5
