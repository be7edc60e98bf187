"""Gradient checks: reverse mode against float64 central differences.

For each parameter p, with a random unit direction d, the directional derivative
<grad_p L, d> from the executor is compared with (L(p + eps d) - L(p - eps d)) / 2 eps
(run it on a float64 model: in float32 the difference is rounding). Random batches fit
any spec: ids for one-hot inputs and class targets, normals for vectors, 0/1 for binary
targets, random binary trees.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UsageError
from .graph.trees import Node, forest


@dataclass(frozen=True)
class ParamCheck:
    name: str
    analytic: float
    numeric: float
    rel_error: float
    ok: bool


def random_tree(rng, leaves: int):
    if leaves == 1:
        return "leaf"
    k = int(rng.integers(1, leaves))
    return Node("node", (random_tree(rng, k), random_tree(rng, leaves - k)))


def random_batch(model, rng, B=2, T=4, lengths=None):
    """(inputs, targets, lengths, forest) with random values of the right kinds."""
    g = model.graph
    lengths = dict(lengths or {})
    for i, k in g.indexes:
        if k == "seq":
            lengths.setdefault(i, T + len(lengths) % 2)   # distinct lengths for t and u
    f = None
    if any(k == "tree" for _, k in g.indexes):
        f, _ = forest([random_tree(rng, int(rng.integers(1, 5))) for _ in range(B)])
    inputs, targets = {}, {}
    for v in g.vars:
        if v.role == "hidden":
            continue
        n = model.sizes[v.name]
        rows = (f.size,) if f is not None and g.index_kinds.get(v.index) == "tree" else \
            ((B, lengths[v.index]) if v.index is not None else (B,))
        if v.is_ids:
            val = rng.integers(0, n, rows)
        elif v.kind == "binary":
            val = rng.integers(0, 2, rows + (n,)).astype(float)
        else:
            val = rng.normal(size=rows + (n,))
        (inputs if v.role == "input" else targets)[v.name] = val
    return inputs, targets, lengths, f


def gradcheck(model, seed=0, eps=1e-5, tol=1e-6, B=2, T=4) -> list[ParamCheck]:
    """Check every parameter of a float64 model on one random batch."""
    rng = np.random.default_rng(seed)
    inputs, targets, lengths, f = random_batch(model, rng, B, T)

    def loss():
        with np.errstate(all="ignore"):
            return model.run(inputs, targets, lengths=lengths, forest=f).loss
    with np.errstate(all="ignore"):       # a non-finite loss is said once, below
        res = model.run(inputs, targets, grads=True, lengths=lengths, forest=f)
    if not np.isfinite(res.loss):
        raise UsageError(f"the loss is {res.loss} at the point checked (a random batch at "
                         f"the initialisation, --seed {seed}): no gradient can be checked. "
                         f"A log or a division of a value that reaches 0 or below, or an "
                         f"exp that overflows, computes it")
    # the rounding of a central difference: the loss's last bits over 2 eps (a loss of
    # 7.45 at eps 1e-5 differs by ~1e-10 from rounding alone); a difference within it
    # says nothing against the gradient, however small the gradient
    noise = 8 * np.finfo(np.float64).eps * max(1.0, abs(res.loss)) / (2 * eps)
    out = []
    for name, p in model.params.items():
        d = rng.normal(size=p.shape)
        d /= np.linalg.norm(d) or 1.0
        analytic = float((res.grads[name] * d).sum())
        p += eps * d
        up = loss()
        p -= 2 * eps * d
        down = loss()
        p += eps * d
        numeric = (up - down) / (2 * eps)
        err = abs(analytic - numeric) / max(abs(analytic) + abs(numeric), 1e-7)
        out.append(ParamCheck(name, analytic, numeric, float(err),
                              bool(err < tol or abs(analytic - numeric) <= noise)))
    return out


def off_kinks(model, rng, scale: float = 0.1) -> list[str]:
    """Move every parameter holding one value throughout (a bias at 0, a forget gate's
    at 1) by N(0, scale^2) noise, in place; returns the names moved. At a zero state
    and a zero bias a ReLU's input is exactly 0 at the first step: its kink, where the
    central difference measures half a slope while the derivative takes one side's, and
    a right gradient fails the check. A generic point is off every kink (almost surely;
    the difference's eps is 1e-5)."""
    moved = []
    for name, p in model.params.items():
        if p.size > 0 and np.ptp(p) == 0:
            p += scale * rng.normal(size=p.shape)
            moved.append(name)
    return moved
