"""Recursive nets on the Sentiment Treebank: one training step (forward, backward, Adam)
of seqgraph's level-batched executor against PyTorch written (a) per node, recursing
over each tree as people usually write it, and (b) batched by level by hand (the same
schedule: one gather, one GEMM and one scatter per level), in the same process, 1 thread.
Run by hand, not by the tests:

    OPENBLAS_NUM_THREADS=1 python bench/trees.py                   # JSON on stdout
    OPENBLAS_NUM_THREADS=1 python bench/trees.py --append bench/RESULTS.md   # its Trees section

H = 64, the SST training vocabulary, 25 trees a step (the same batches for all three).
seqgraph updates the embedding sparsely (lazy Adam on the words of the batch); both
PyTorch versions use torch.optim.Adam, dense, as usually written. The step time of each
includes building its batch (the forest and the level schedule from index arrays).

Each step is timed twice: by the wall clock and by the CPU time of the process (which a
machine shared with other jobs disturbs much less: a descheduled process uses none). The
ratios are given for both; `--repeat N` runs everything N times and reports the medians.
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
    """(wall ms, CPU ms) per step, after `warm` steps."""
    for b in batches[:warm]:
        fn(b)
    t, c = time.perf_counter(), time.process_time()
    for b in batches[warm:]:
        fn(b)
    n = len(batches) - warm
    return 1000 * (time.perf_counter() - t) / n, 1000 * (time.process_time() - c) / n


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
    sg_a = timed(sg.step, batches)
    lv = timed(by_level.step, batches)
    pn = timed(per_node.step, batches[:node_steps + 2])
    sg_b = timed(sg.step, batches)            # again, after the PyTorch runs
    sg_t = [min(x, y) for x, y in zip(sg_a, sg_b, strict=True)]
    out = {"model": name, "H": H, "batch_trees": BATCH, "nodes_per_step": round(float(nodes)),
           "vocab": V, "first_loss": [round(x, 6) for x in l0]}
    for i, clock in enumerate(("wall", "cpu")):
        out.update({f"seqgraph_ms_per_step_{clock}": round(sg_t[i], 2),
                    f"torch_levels_ms_per_step_{clock}": round(lv[i], 2),
                    f"torch_per_node_ms_per_step_{clock}": round(pn[i], 2),
                    f"ratio_vs_torch_levels_{clock}": round(lv[i] / sg_t[i], 2),
                    f"ratio_vs_torch_per_node_{clock}": round(pn[i] / sg_t[i], 1)})
    return out


def medians(runs: list[dict]) -> dict:
    """The median of every timing over repeated runs (the other fields of the first)."""
    out = dict(runs[0])
    for k, v in out.items():
        if isinstance(v, float) and ("_ms_" in k or k.startswith("ratio")):
            out[k] = round(float(np.median([r[k] for r in runs])), 2)
    out["repeats"] = len(runs)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--node-steps", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=1,
                    help="run everything N times, report the medians")
    ap.add_argument("--only", choices=["recursive", "rntn"])
    ap.add_argument("--append", metavar="RESULTS.md")
    args = ap.parse_args(argv)
    if min(args.steps, args.node_steps, args.repeat) < 1:
        ap.error("--steps, --node-steps and --repeat must be at least 1 (steps are timed)")
    if not os.path.isdir(SST):
        print(f"no SST data at {SST}: the benchmark reads the Stanford Sentiment "
              f"Treebank's train.txt there (PTB-bracketed trees, one a line; the official "
              f"splits, as examples/sst/README.md uses)", file=sys.stderr)
        return 1
    _limit()
    import torch
    ts, V = load_sst()
    models = [(n, s) for n, s in (("recursive", RNN), ("rntn", RNTN))
              if args.only in (None, n)]
    rows = [medians([bench(n, s, ts, V, args.steps, args.node_steps)
                     for _ in range(args.repeat)]) for n, s in models]
    out = {"threads": 1, "python": platform.python_version(), "numpy": np.__version__,
           "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
           "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg(),
           "results": rows}
    print(json.dumps(out, indent=1))
    if args.append:
        append(args.append, out)
    return 0


def append(path, out):
    lines = ["", "## Trees", "",
             ("`python bench/trees.py` (one training step: forward, backward, clipping and "
              "Adam; H = 64, the SST vocabulary, 25 trees a step, 1 thread; seqgraph's "
              "embedding update is sparse, PyTorch's Adam dense as usually written; "
              f"{out['date']}, load average {out['load_average'][0]:.2f}; ms per step in "
              "CPU time, ratios in CPU time and wall time):"), "",
             ("| model | nodes/step | seqgraph ms | PyTorch by level ms | PyTorch per node ms "
              "| vs by level | vs per node | vs by level (wall) | vs per node (wall) |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for r in out["results"]:
        cpu = [r[f"{k}_cpu"] for k in ("seqgraph_ms_per_step", "torch_levels_ms_per_step",
                                        "torch_per_node_ms_per_step", "ratio_vs_torch_levels",
                                        "ratio_vs_torch_per_node")]
        lines.append(f"| {r['model']} | {r['nodes_per_step']} | {cpu[0]} | {cpu[1]} | {cpu[2]} "
                     f"| {cpu[3]}x | {cpu[4]}x | {r['ratio_vs_torch_levels_wall']}x "
                     f"| {r['ratio_vs_torch_per_node_wall']}x |")
    lines += ["", "```json", json.dumps(out, indent=1), "```", ""]
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    start = text.find("\n## Trees\n")               # replace the section, else append
    if start < 0:
        text += "\n".join(lines)
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + "\n".join(lines) + (text[end:] if end >= 0 else "")
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        sys.exit("this benchmark measures against PyTorch, which is not installed: "
                 "pip install '.[torch]' (the pinned CPU build, torch==2.13.0)")
    sys.exit(main())
