"""A tree encoder and its decoder (specs/tree2seq.sg at H = 64): one training step
(forward, backward, Adam) of seqgraph against PyTorch written as people usually write it
(a recursive function over each tree's nodes, then an RNN cell loop over the target), in
the same process, 1 thread. seqgraph runs such a model in its interpreter (its level-
batched executor runs trees alone): this measures what that costs. Run by hand:

    OPENBLAS_NUM_THREADS=1 python bench/tree2seq.py            # JSON on stdout

The data is random and fixed by the seed: 25 binary trees of 19 leaves a step over a
vocabulary of 500 words, each with a target of 20 tokens over 300. Times are CPU time (a
shared machine disturbs it much less than the wall clock): the mean per step of each run,
the median over `--repeat` runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np
from trees import _limit, timed  # bench/trees.py, beside this file

H, BATCH, LEAVES, T, V, K, LR = 64, 25, 19, 20, 500, 300, 0.001


def random_tree(rng, leaves: int) -> np.ndarray:
    """A random binary tree of `leaves` words as trees.tree_rows (post-order)."""
    from seqgraph.train.trees import tree_rows
    left, right = [], []

    def build(k):
        if k == 1:
            left.append(-1), right.append(-1)
            return len(left) - 1
        m = int(rng.integers(1, k))
        a, b = build(m), build(k - m)
        left.append(a), right.append(b)
        return len(left) - 1
    build(leaves)
    ids = np.where(np.array(left) < 0, rng.integers(0, V, len(left)), -1)
    return tree_rows(left, right, ids)


def batches(steps: int, seed: int = 0) -> list:
    """(forest, words, targets) of each step."""
    from seqgraph.train.trees import forest_of
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        f, w = forest_of([random_tree(rng, LEAVES) for _ in range(BATCH)])
        out.append((f, w, rng.integers(0, K, (BATCH, T))))
    return out


class Seqgraph:
    def __init__(self):
        import seqgraph
        from seqgraph.train.optim import Adam, clip_global_norm
        with open(os.path.join(ROOT, "specs", "tree2seq.sg")) as f:
            text = f.read().split("train {")[0]
        spec = seqgraph.read_spec("tree2seq.sg", text=text.replace("dim H = 32", f"dim H = {H}"))
        self.m = seqgraph.Model(spec, dims={"V": V, "K": K}, executor="compiled", seed=0,
                                start_ids={"y": 1})
        self.opt, self.clip = Adam(lr=LR), clip_global_norm

    def step(self, b):
        f, w, y = b
        res = self.m.run({"w": w}, {"y": y}, train=True, grads=True, forest=f)
        self.clip(res.grads, 5.0)
        self.opt.step(self.m.params, res.grads)
        return res.loss


class Torch:
    """The same model, as usually written: the encoder a function called on every node,
    the decoder a loop of one RNN step a token, the previous target fed back."""

    def __init__(self, params):
        import torch
        self.torch = torch
        self.p = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
        self.opt = torch.optim.Adam(list(self.p.values()), lr=LR)

    def node(self, i, f, w):
        p, torch = self.p, self.torch
        if f.left[i] < 0:
            return torch.tanh(p["E"][:, w[i]])
        a = torch.cat([self.node(f.left[i], f, w), self.node(f.right[i], f, w)])
        return torch.tanh(p["W"] @ a + p["b"])

    def step(self, b):
        torch, p = self.torch, self.p
        f, w, y = b
        w, yt = w.tolist(), torch.from_numpy(y)
        self.opt.zero_grad()
        c = torch.stack([self.node(r, f, w) for r in f.roots.tolist()])     # [B, H]
        s = torch.zeros(BATCH, p["U"].shape[0])
        prev = torch.full((BATCH,), 1, dtype=torch.long)                     # <s>
        logits = []
        for u in range(T):
            s = torch.tanh(p["F"].t()[prev] + s @ p["U"].t() + c @ p["C"].t() + p["bd"])
            logits.append(s @ p["Wo"].t() + p["bo"])
            prev = yt[:, u]
        loss = torch.nn.functional.cross_entropy(torch.stack(logits, 1).reshape(-1, K),
                                                 yt.reshape(-1), reduction="sum") / BATCH
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(p.values()), 5.0)
        self.opt.step()
        return loss.item()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3, help="runs; the medians are reported")
    args = ap.parse_args(argv)
    _limit()
    import torch
    bs = batches(args.steps + 2)
    sg = Seqgraph()
    th = Torch(sg.m.params)
    first = [round(sg.step(bs[0]), 6), round(th.step(bs[0]), 6)]    # the same loss
    runs = []
    for _ in range(args.repeat):
        s, t = timed(sg.step, bs), timed(th.step, bs)
        runs.append({"seqgraph_ms_cpu": s[1], "torch_ms_cpu": t[1], "ratio_cpu": t[1] / s[1]})
    med = {k: round(float(np.median([r[k] for r in runs])), 2) for k in runs[0]}
    out = {"model": "tree2seq", "H": H, "batch": BATCH, "leaves": LEAVES, "target_steps": T,
           "V": V, "K": K, "first_loss": first, "repeats": args.repeat, **med,
           "threads": 1, "python": platform.python_version(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg()}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
