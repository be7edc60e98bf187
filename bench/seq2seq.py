"""Encoder-decoders: one training step (forward, backward, clipping, Adam) of seqgraph's
compiled executor against PyTorch in the same process, 1 thread. Two models:

- `seq2seq`: specs/seq2seq.sg as it stands (LANGUAGE.md's model: an RNN encoder whose last
  state makes the context c, an RNN decoder reading c and the previous target);
- `attention`: examples/g2p/attention.sg as it stands (a bidirectional GRU encoder, a GRU
  decoder reading every encoder state through additive attention weights, Bahdanau et al.).

PyTorch is written as people write these models: nn.Embedding and nn.RNN / nn.GRU over
whole sequences (the plain decoder too: with teacher forcing its inputs are known), the
attention decoder a loop of nn.GRUCell steps around the attention. The weights are copied
from seqgraph's, and the first step's losses are printed side by side (they agree to
float32 rounding). Run by hand:

    OPENBLAS_NUM_THREADS=1 python bench/seq2seq.py            # JSON on stdout

The data is random and fixed by the seed, every example of full length (no padding).
Times are CPU time (a shared machine disturbs it much less than the wall clock): the mean
per step of each run, the median over `--repeat` runs.
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

LR = 0.001
# the sizes of each model's step: batch, source and target lengths, vocabularies
SIZES = {"seq2seq": dict(B=32, Tx=20, Ty=20, Vx=100, Vy=100, spec="specs/seq2seq.sg"),
         "attention": dict(B=64, Tx=10, Ty=10, Vx=30, Vy=75,
                           spec="examples/g2p/attention.sg")}


def batches(z: dict, steps: int, seed: int = 0) -> list:
    """(x [B, Tx], y [B, Ty]) of each step; id 1 is <s>, never a target."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(2, z["Vx"], (z["B"], z["Tx"])),
             rng.integers(2, z["Vy"], (z["B"], z["Ty"]))) for _ in range(steps)]


class Seqgraph:
    def __init__(self, z: dict):
        import seqgraph
        from seqgraph.train.optim import Adam, clip_global_norm
        with open(os.path.join(ROOT, z["spec"])) as f:
            text = f.read().split("train {")[0]
        spec = seqgraph.read_spec(os.path.basename(z["spec"]), text=text)
        self.m = seqgraph.Model(spec, dims={"Vx": z["Vx"], "Vy": z["Vy"]}, seed=0,
                                executor="compiled", start_ids={"y": 1})
        self.opt, self.clip = Adam(lr=LR), clip_global_norm

    def step(self, b):
        x, y = b
        res = self.m.run({"x": x}, {"y": y}, train=True, grads=True)
        self.clip(res.grads, 5.0)
        self.opt.step(self.m.params, res.grads)
        return res.loss


class TorchModel:
    """What both PyTorch models share: the modules' weights set from seqgraph's arrays,
    the loss (summed over steps, averaged over the batch, as seqgraph's), the update."""

    def __init__(self, P: dict):
        import torch
        self.torch, self.P = torch, {k: torch.tensor(v) for k, v in P.items()}
        self.build()
        self.params = [p for mod in self.modules for p in mod.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=LR)

    def set(self, mod, **weights):
        """mod.<name> = the tensor given (a seqgraph name, or a tensor made from them)."""
        with self.torch.no_grad():
            for name, value in weights.items():
                t = self.P[value] if isinstance(value, str) else value
                getattr(mod, name).copy_(t.reshape(getattr(mod, name).shape))

    def cat(self, *names, dim=0):
        return self.torch.cat([self.P[n] for n in names], dim)

    def zeros(self, n):
        return self.torch.zeros(n)

    def only(self, bias, first: int):
        """PyTorch has two biases where seqgraph has one: keep the part of `bias` from
        `first` on trained (GRU's b_hn), the rest at 0, so that the two models stay one
        (a second copy of a bias would double its steps and its share of the clip)."""
        mask = self.torch.zeros_like(bias)
        mask[first:] = 1
        bias.register_hook(lambda g: g * mask)

    def step(self, b):
        torch = self.torch
        x, y = torch.from_numpy(b[0]), torch.from_numpy(b[1])
        self.opt.zero_grad()
        prev = torch.cat([torch.ones_like(y[:, :1]), y[:, :-1]], 1)       # <s>, y[u-1]
        logits = self.forward(x, prev)                                     # [B, Ty, Vy]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum") / len(y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.opt.step()
        return loss.item()


class TorchSeq2seq(TorchModel):
    def build(self):
        nn, P = self.torch.nn, self.P
        D, Vx = P["E"].shape
        H, Vy = P["Ue"].shape[0], P["F"].shape[1]
        self.E, self.F = nn.Embedding(Vx, D), nn.Embedding(Vy, D)
        self.set(self.E, weight=P["E"].T), self.set(self.F, weight=P["F"].T)
        self.enc = nn.RNN(D, H, batch_first=True)
        self.set(self.enc, weight_ih_l0="We", weight_hh_l0="Ue", bias_ih_l0="be",
                 bias_hh_l0=self.zeros(H))
        self.only(self.enc.bias_hh_l0, H)
        self.Vc, self.Vi = nn.Linear(H, H, bias=False), nn.Linear(H, H, bias=False)
        self.set(self.Vc, weight="Vc"), self.set(self.Vi, weight="Vi")
        # s[u] = tanh(Wd s[u-1] + [Ud Cd] [F y[u-1]; c] + bd): an RNN over [F y; c]
        self.dec = nn.RNN(D + H, H, batch_first=True)
        self.set(self.dec, weight_ih_l0=self.cat("Ud", "Cd", dim=1), weight_hh_l0="Wd",
                 bias_ih_l0="bd", bias_hh_l0=self.zeros(H))
        self.only(self.dec.bias_hh_l0, H)
        self.out = nn.Linear(2 * H + D, Vy)
        self.set(self.out, weight=self.cat("Oh", "Oy", "Oc", dim=1), bias="bo")
        self.modules = [self.E, self.F, self.enc, self.Vc, self.Vi, self.dec, self.out]

    def forward(self, x, prev):
        torch = self.torch
        _, last = self.enc(self.E(x))
        c = torch.tanh(self.Vc(last[0]))                                   # [B, H]
        fy = self.F(prev)
        cs = c[:, None].expand(-1, prev.shape[1], -1)
        s, _ = self.dec(torch.cat([fy, cs], 2), torch.tanh(self.Vi(c))[None])
        return self.out(torch.cat([s, fy, cs], 2))


class TorchAttention(TorchModel):
    def build(self):
        nn, P = self.torch.nn, self.P
        D, Vx = P["e.E"].shape
        H, S, Vy = P["f.Ur"].shape[0], P["Ur"].shape[0], P["F"].shape[1]
        self.E, self.F = nn.Embedding(Vx, D), nn.Embedding(Vy, D)
        self.set(self.E, weight=P["e.E"].T), self.set(self.F, weight=P["F"].T)
        self.enc = nn.GRU(D, H, batch_first=True, bidirectional=True)
        for d, sfx in (("f", ""), ("g", "_reverse")):         # f forward, g reverse
            self.set(self.enc, **{
                f"weight_ih_l0{sfx}": self.cat(f"{d}.Wr", f"{d}.Wz", f"{d}.Wn"),
                f"weight_hh_l0{sfx}": self.cat(f"{d}.Ur", f"{d}.Uz", f"{d}.Un"),
                f"bias_ih_l0{sfx}": self.cat(f"{d}.b_r", f"{d}.b_z", f"{d}.b_n"),
                f"bias_hh_l0{sfx}": self.torch.cat([self.zeros(2 * H), P[f"{d}.b_hn"]])})
            self.only(getattr(self.enc, f"bias_hh_l0{sfx}"), 2 * H)
        A = P["va"].shape[0]
        self.Wa, self.Ua = nn.Linear(S, A, bias=False), nn.Linear(2 * H, A, bias=False)
        self.va, self.Vi = nn.Linear(A, 1, bias=False), nn.Linear(2 * H, S)
        self.set(self.Wa, weight="Wa"), self.set(self.Ua, weight="Ua")
        self.set(self.va, weight="va"), self.set(self.Vi, weight="Vi", bias="b_i")
        # the decoder's GRU reads [F y[u-1]; ctx[u]]: W* and C* side by side
        self.cell = nn.GRUCell(D + 2 * H, S)
        self.set(self.cell, weight_ih=self.torch.cat(
            [self.cat(w, c, dim=1) for w, c in (("Wr", "Cr"), ("Wz", "Cz"), ("Wn", "Cn"))]),
            weight_hh=self.cat("Ur", "Uz", "Un"), bias_ih=self.cat("b_r", "b_z", "b_n"),
            bias_hh=self.torch.cat([self.zeros(2 * S), P["b_hn"]]))
        self.only(self.cell.bias_hh, 2 * S)
        self.out = nn.Linear(S + D + 2 * H, Vy)
        self.set(self.out, weight=self.cat("Oh", "Oy", "Oc", dim=1), bias="bo")
        self.modules = [self.E, self.F, self.enc, self.Wa, self.Ua, self.va, self.Vi,
                        self.cell, self.out]

    def forward(self, x, prev):
        torch = self.torch
        h, _ = self.enc(self.E(x))                                         # [B, Tx, 2H]
        H = h.shape[2] // 2
        s = torch.tanh(self.Vi(torch.cat([h[:, -1, :H], h[:, 0, H:]], 1)))
        uh, fy, logits = self.Ua(h), self.F(prev), []
        for u in range(prev.shape[1]):
            a = torch.softmax(self.va(torch.tanh(self.Wa(s)[:, None] + uh))[..., 0], 1)
            ctx = torch.bmm(a[:, None], h)[:, 0]                           # [B, 2H]
            s = self.cell(torch.cat([fy[:, u], ctx], 1), s)
            logits.append(self.out(torch.cat([s, fy[:, u], ctx], 1)))
        return torch.stack(logits, 1)


def bench(name: str, steps: int, repeat: int) -> dict:
    z = SIZES[name]
    bs = batches(z, steps + 2)
    sg = Seqgraph(z)
    th = (TorchSeq2seq if name == "seq2seq" else TorchAttention)(sg.m.params)
    first = [round(m.step(bs[0]), 5) for m in (sg, th)]                  # the same loss
    runs = []
    for _ in range(repeat):
        s, t = timed(sg.step, bs)[1], timed(th.step, bs)[1]
        runs.append({"seqgraph_ms_cpu": s, "torch_ms_cpu": t, "ratio": t / s})
    med = {k: round(float(np.median([r[k] for r in runs])), 2) for k in runs[0]}
    return {"model": name, **{k: v for k, v in z.items() if k != "spec"},
            "first_loss": first, **med}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5, help="runs; the medians are reported")
    ap.add_argument("--only", choices=sorted(SIZES))
    args = ap.parse_args(argv)
    if min(args.steps, args.repeat) < 1:
        ap.error("--steps and --repeat must be at least 1 (steps are timed)")
    _limit()
    import torch
    rows = [bench(n, args.steps, args.repeat) for n in SIZES if args.only in (None, n)]
    out = {"results": rows, "repeats": args.repeat, "threads": 1,
           "python": platform.python_version(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg()}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        sys.exit("this benchmark measures against PyTorch, which is not installed: "
                 "pip install torch==2.13.0 (the pinned CPU build)")
    sys.exit(main())
