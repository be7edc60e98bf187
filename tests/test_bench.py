"""The benchmarks' PyTorch baselines compute the model seqgraph runs: the same loss at the
first step and again after two updates (so the clipping and Adam match too). A ratio
against a different model would mean nothing. The timings themselves are run by hand
(bench/RESULTS.md); here each baseline runs a few small steps. Skipped without torch."""
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import seq2seq  # bench/seq2seq.py
import tree2seq
import trees


def same_losses(models, batches):
    """Each model's loss at each batch, stepping all of them: equal to float32 rounding."""
    losses = np.array([[m.step(b) for b in batches] for m in models])
    np.testing.assert_allclose(losses, losses[:1].repeat(len(models), 0), rtol=2e-5)
    return losses


@pytest.mark.parametrize("name", sorted(seq2seq.SIZES))
def test_seq2seq_baselines_are_the_spec(name):
    z = dict(seq2seq.SIZES[name], B=3, Tx=5, Ty=4)
    sg = seq2seq.Seqgraph(z)
    baseline = (seq2seq.TorchSeq2seq if name == "seq2seq" else seq2seq.TorchAttention)
    same_losses([sg, baseline(sg.m.params)], seq2seq.batches(z, 3))


def test_tree2seq_baselines_are_the_spec(monkeypatch):
    monkeypatch.setattr(tree2seq, "BATCH", 3)
    monkeypatch.setattr(tree2seq, "LEAVES", 4)
    sg = tree2seq.Seqgraph()
    same_losses([sg, tree2seq.Torch(sg.m.params), tree2seq.TorchLevels(sg.m.params)],
                tree2seq.batches(3))


@pytest.mark.parametrize("bilinear", [False, True])
def test_tree_baselines_are_the_spec(tmp_path, bilinear):
    from seqgraph.train.trees import trees as loader
    data = tmp_path / "t.txt"
    data.write_text("(3 (2 a) (3 (4 good) (2 film)))\n(1 (1 bad) (2 (2 a) (2 plot)))\n"
                    "(2 (2 it) (2 is))\n(4 (3 (4 great) (2 fun)) (2 (2 and) (3 warm)))\n")
    ld = loader(str(data))
    raw = ld.read()
    vocab = ld.vocab(raw)
    ts = ld.encode(raw, vocab)
    spec = (trees.RNTN if bilinear else trees.RNN).format(H=6)
    sg = trees.Seqgraph(spec, len(vocab), ts)
    torch_params = [trees._torch_params(sg.m) for _ in range(2)]
    models = [sg, trees.TorchPerNode(torch_params[0], ts, bilinear),
              trees.TorchLevels(torch_params[1], ts, bilinear)]
    # lazy Adam (seqgraph's sparse update) and dense Adam agree while every word is seen
    same_losses(models, [np.arange(4)] * 3)
