"""Recursive nets on the Sentiment Treebank: one training step (forward, backward, Adam)
of seqgraph's level-batched executor against PyTorch written (a) per node, recursing
over each tree as people usually write it, and (b) batched by level by hand (the same
schedule: one gather, one GEMM and one scatter per level), in the same process, 1 thread.
Run by hand, not by the tests:

    OPENBLAS_NUM_THREADS=1 python bench/trees.py                   # JSON on stdout
    OPENBLAS_NUM_THREADS=1 python bench/trees.py --append bench/RESULTS.md

H = 64, the SST training vocabulary, 25 trees a step (the same batches for all three).
seqgraph updates the embedding sparsely (lazy Adam on the words of the batch); both
PyTorch versions use torch.optim.Adam, dense, as usually written. The step time of each
includes building its batch (the forest and the level schedule from index arrays).
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
SST = os.path.join(os.path.dirname(ROOT), "shared", "data", "sst")

import numpy as np

H, BATCH, LR = 64, 25, 0.001

RNN = """
tree n
dim H = {H}
input  w[n] : onehot(V)
target y[n] : class(5)
param E, W, b, Ws, bs
h[n] : H = tanh(E @ w[n])                          if leaf
h[n] : H = tanh(W @ [h[n.left]; h[n.right]] + b)   otherwise
o[n] = Ws @ h[n] + bs
loss xent(o[n], y[n])
"""

RNTN = """
tree n
dim H = {H}
input  w[n] : onehot(V)
target y[n] : class(5)
param E, W, b, Ws, bs
param T init normal(0.01)
h[n] : H = tanh(E @ w[n])    if leaf
h[n] : H = tanh(bilinear(T, [h[n.left]; h[n.right]], [h[n.left]; h[n.right]])
                + W @ [h[n.left]; h[n.right]] + b)    otherwise
o[n] = Ws @ h[n] + bs
loss xent(o[n], y[n])
"""


def _limit():
    import scipy.linalg.cython_blas  # noqa: F401
    import torch
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
    torch.set_num_threads(1)


def load_sst():
    from seqgraph.train.trees import trees
    loader = trees(os.path.join(SST, "train.txt"))
    raw = loader.read()
    vocab = loader.vocab(raw)
    return loader.encode(raw, vocab), len(vocab)


# ------------------------------------------------------------------------ seqgraph
class Seqgraph:
    def __init__(self, spec, V, ts):
        import seqgraph
        from seqgraph.train.optim import Adam, clip_global_norm
        from seqgraph.train.trees import embedding_params, touched
        s = seqgraph.read_spec("bench.sg", text=spec)
        self.m = seqgraph.Model(s, dims={"V": V}, executor="compiled", seed=0)
        self.opt, self.clip = Adam(lr=LR), clip_global_norm
        self.sparse = embedding_params(s.graph, "w")
        self.touched, self.ts = touched, ts

    def step(self, idx):
        f, w, y = self.ts.batch(idx)
        res = self.m.run({"w": w}, {"y": y}, train=True, grads=True, forest=f)
        rows = self.touched(self.sparse, w)
        self.clip(res.grads, 5.0, rows)
        self.opt.step(self.m.params, res.grads, rows=rows)
        return res.loss


# ------------------------------------------------------------------------- pytorch
def _torch_params(m, tensor=False):
    import torch
    return {k: torch.nn.Parameter(torch.tensor(v)) for k, v in m.params.items()}


class TorchPerNode:
    """The usual recursive PyTorch: a function called on every node."""

    def __init__(self, params, ts, bilinear):
        import torch
        self.torch, self.p, self.ts, self.bil = torch, params, ts, bilinear
        self.opt = torch.optim.Adam(list(params.values()), lr=LR)

    def node(self, i, f, w, out):
        p, torch = self.p, self.torch
        if f.left[i] < 0:
            h = torch.tanh(p["E"][:, w[i]])
        else:
            a = torch.cat([self.node(f.left[i], f, w, out), self.node(f.right[i], f, w, out)])
            z = p["W"] @ a + p["b"]
            if self.bil:
                z = z + torch.einsum("i,kij,j->k", a, p["T"], a)
            h = torch.tanh(z)
        out.append((i, p["Ws"] @ h + p["bs"]))
        return h

    def step(self, idx):
        torch = self.torch
        f, w, y = self.ts.batch(idx)
        w, yt = w.tolist(), torch.tensor(y)
        self.opt.zero_grad()
        out = []
        for r in f.roots.tolist():
            self.node(r, f, w, out)
        ids = torch.tensor([i for i, _ in out])
        logits = torch.stack([o for _, o in out])
        loss = torch.nn.functional.cross_entropy(logits, yt[ids], reduction="sum") / len(idx)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.p.values()), 5.0)
        self.opt.step()
        return loss.item()


class TorchLevels:
    """PyTorch batched by level by hand: the level schedule of the batch (the same numpy
    index arrays as seqgraph's), one gather, one GEMM and one in-place scatter a level."""

    def __init__(self, params, ts, bilinear):
        import torch
        self.torch, self.p, self.ts, self.bil = torch, params, ts, bilinear
        self.opt = torch.optim.Adam(list(params.values()), lr=LR)

    def step(self, idx):
        from seqgraph.compile.trees import levels
        torch, p = self.torch, self.p
        f, w, y = self.ts.batch(idx)
        L = levels(f)
        wn = torch.from_numpy(w[L.perm])
        yn = torch.from_numpy(y[L.perm])
        left, right = torch.from_numpy(L.left), torch.from_numpy(L.right)
        lo = L.lo.tolist()
        self.opt.zero_grad()
        h = torch.zeros(L.size, p["W"].shape[0])
        h[:lo[1]] = torch.tanh(p["E"].t()[wn[:lo[1]]])
        for k in range(1, L.depth):
            a = torch.cat([h[left[lo[k]:lo[k + 1]]], h[right[lo[k]:lo[k + 1]]]], 1)
            z = a @ p["W"].t() + p["b"]
            if self.bil:
                K, I, J = p["T"].shape
                U = (a @ p["T"].reshape(K * I, J).t()).reshape(-1, K, I)
                z = z + torch.einsum("rki,ri->rk", U, a)
            h[lo[k]:lo[k + 1]] = torch.tanh(z)
        logits = h @ p["Ws"].t() + p["bs"]
        loss = torch.nn.functional.cross_entropy(logits, yn, reduction="sum") / len(idx)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.p.values()), 5.0)
        self.opt.step()
        return loss.item()


# --------------------------------------------------------------------------- timing
def timed(fn, batches, warm=2):
    for b in batches[:warm]:
        fn(b)
    t = time.perf_counter()
    for b in batches[warm:]:
        fn(b)
    return 1000 * (time.perf_counter() - t) / (len(batches) - warm)


def bench(name, spec, ts, V, steps, node_steps):
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(ts), BATCH, replace=False) for _ in range(steps + 2)]
    sg = Seqgraph(spec.format(H=H), V, ts)
    bil = "bilinear" in spec
    per_node = TorchPerNode(_torch_params(sg.m), ts, bil)
    by_level = TorchLevels(_torch_params(sg.m), ts, bil)
    # the three compute the same first loss
    l0 = [sg.step(batches[0]), per_node.step(batches[0]), by_level.step(batches[0])]
    nodes = np.mean([ts.off[b + 1].sum() - ts.off[b].sum() for b in batches])
    ms_sg = timed(sg.step, batches)
    ms_lv = timed(by_level.step, batches)
    ms_pn = timed(per_node.step, batches[:node_steps + 2])
    ms_sg2 = timed(sg.step, batches)          # again, after the PyTorch runs
    ms_sg = min(ms_sg, ms_sg2)
    return {"model": name, "H": H, "batch_trees": BATCH, "nodes_per_step": round(float(nodes)),
            "vocab": V, "first_loss": [round(x, 6) for x in l0],
            "seqgraph_ms_per_step": round(ms_sg, 2),
            "torch_levels_ms_per_step": round(ms_lv, 2),
            "torch_per_node_ms_per_step": round(ms_pn, 2),
            "ratio_vs_torch_levels": round(ms_lv / ms_sg, 2),
            "ratio_vs_torch_per_node": round(ms_pn / ms_sg, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--node-steps", type=int, default=6)
    ap.add_argument("--append", metavar="RESULTS.md")
    args = ap.parse_args(argv)
    if not os.path.isdir(SST):
        print(f"no SST data at {SST}", file=sys.stderr)
        return 1
    _limit()
    import torch
    ts, V = load_sst()
    rows = [bench("recursive", RNN, ts, V, args.steps, args.node_steps),
            bench("rntn", RNTN, ts, V, args.steps, args.node_steps)]
    out = {"threads": 1, "python": platform.python_version(), "numpy": np.__version__,
           "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
           "results": rows}
    print(json.dumps(out, indent=1))
    if args.append:
        append(args.append, out)
    return 0


def append(path, out):
    lines = ["", "## Trees", "",
             ("`python bench/trees.py` (one training step: forward, backward, clipping and "
              "Adam; H = 64, the SST vocabulary, 25 trees a step, 1 thread; seqgraph's "
              "embedding update is sparse, PyTorch's Adam dense as usually written):"), "",
             ("| model | nodes/step | seqgraph ms | PyTorch by level ms | PyTorch per node ms "
              "| vs by level | vs per node |"), "|---|---|---|---|---|---|---|"]
    for r in out["results"]:
        lines.append(f"| {r['model']} | {r['nodes_per_step']} | {r['seqgraph_ms_per_step']} "
                     f"| {r['torch_levels_ms_per_step']} | {r['torch_per_node_ms_per_step']} "
                     f"| {r['ratio_vs_torch_levels']}x | {r['ratio_vs_torch_per_node']}x |")
    lines += ["", "```json", json.dumps(out, indent=1), "```", ""]
    with open(path, "a") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
