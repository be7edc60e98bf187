"""A tree encoder and its decoder (specs/tree2seq.sg at H = 64): one training step
(forward, backward, Adam) of seqgraph against PyTorch (a) written as people usually write
it (a recursive function over each tree's nodes, then an RNN cell loop over the target)
and (b) with the encoder batched by level by hand, in the same process, 1 thread.
seqgraph runs such a model in two parts (compile/hybrid.py: the trees level-batched, the
decoder a compiled loop); its interpreter's time is given too. Run by hand:

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
    def __init__(self, executor="compiled"):
        import seqgraph
        from seqgraph.train.optim import Adam, clip_global_norm
        with open(os.path.join(ROOT, "specs", "tree2seq.sg")) as f:
            text = f.read().split("train {")[0]
        spec = seqgraph.read_spec("tree2seq.sg", text=text.replace("dim H = 32", f"dim H = {H}"))
        self.m = seqgraph.Model(spec, dims={"V": V, "K": K}, executor=executor, seed=0,
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

    def encode(self, f, w):
        """c [B, H]: each tree's root, a recursive call a node."""
        return self.torch.stack([self.node(r, f, w.tolist()) for r in f.roots.tolist()])

    def node(self, i, f, w):
        p, torch = self.p, self.torch
        if f.left[i] < 0:
            return torch.tanh(p["E"][:, w[i]])
        a = torch.cat([self.node(f.left[i], f, w), self.node(f.right[i], f, w)])
        return torch.tanh(p["W"] @ a + p["b"])

    def step(self, b):
        torch, p = self.torch, self.p
        f, w, y = b
        yt = torch.from_numpy(y)
        self.opt.zero_grad()
        c = self.encode(f, w)                                                # [B, H]
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


class TorchLevels(Torch):
    """The encoder batched by level by hand (the level schedule seqgraph uses: one
    gather, one GEMM and one scatter a level), the same decoder loop."""

    def encode(self, f, w):
        from seqgraph.compile.trees import levels
        torch, p = self.torch, self.p
        L = levels(f)
        wn = torch.from_numpy(w[L.perm])
        left, right = torch.from_numpy(L.left), torch.from_numpy(L.right)
        lo = L.lo.tolist()
        h = torch.zeros(L.size, p["W"].shape[0])
        h[:lo[1]] = torch.tanh(p["E"].t()[wn[:lo[1]]])
        for k in range(1, L.depth):
            a = torch.cat([h[left[lo[k]:lo[k + 1]]], h[right[lo[k]:lo[k + 1]]]], 1)
            h[lo[k]:lo[k + 1]] = torch.tanh(a @ p["W"].t() + p["b"])
        return h[torch.from_numpy(L.roots)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3, help="runs; the medians are reported")
    args = ap.parse_args(argv)
    if min(args.steps, args.repeat) < 1:
        ap.error("--steps and --repeat must be at least 1 (steps are timed)")
    _limit()
    import torch
    bs = batches(args.steps + 2)
    sg, si = Seqgraph(), Seqgraph("interp")
    th, tl = Torch(sg.m.params), TorchLevels(sg.m.params)
    first = [round(m.step(bs[0]), 6) for m in (sg, si, th, tl)]      # the same loss
    runs = []
    for _ in range(args.repeat):
        s, i = timed(sg.step, bs)[1], timed(si.step, bs[:4])[1]
        t, lv = timed(th.step, bs)[1], timed(tl.step, bs)[1]
        runs.append({"seqgraph_ms_cpu": s, "interpreted_ms_cpu": i, "torch_node_ms_cpu": t,
                     "torch_levels_ms_cpu": lv, "ratio_node": t / s, "ratio_levels": lv / s})
    med = {k: round(float(np.median([r[k] for r in runs])), 2) for k in runs[0]}
    out = {"model": "tree2seq", "H": H, "batch": BATCH, "leaves": LEAVES, "target_steps": T,
           "V": V, "K": K, "first_loss": first, "repeats": args.repeat, **med,
           "threads": 1, "python": platform.python_version(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg()}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
