"""Dropout masks for the level-batched tree executor, drawn as the interpreter draws them.

The interpreter defines what a run with dropout computes, including which random numbers
make each mask. It visits the nodes of a forest in their order (children before parents,
node by node), at each node the variables in dependency order (ties by their order in
the spec), and in each equation the dropouts as it evaluates them: operands first, left
to right, a dropout written twice drawn twice. Each draw is one row of `rng.random`, as
wide as the value dropped, and a mask is (u >= p) / (1 - p).

So at one node the draws form a segment whose layout depends only on the node's case
(leaf or not): the same sites, the same widths. The stream of a batch is the nodes'
segments one after another. This module lays out the two segments once per model
(`MaskPlan`), and per batch draws the whole stream in one call (the same numbers, and the
generator left in the same state, as the interpreter's many small draws) and hands each
block of rows its masks by index arithmetic (`Masks`): O(nodes), no per-node Python.
"""
from __future__ import annotations

import networkx as nx
import numpy as np

from ..graph.folded import Ref, walk
from ..ops import Op


class NoMasks(Exception):
    """The model draws masks in an order this module does not reproduce."""


def sites(expr) -> list:
    """The dropouts of an equation that draw (p > 0), in the interpreter's order."""
    return [e for e in walk(expr) if getattr(e, "op", None) is Op.DROPOUT
            and e.kw.get("p", 0) > 0]


def case_for(v, leaf: bool):
    """The case of a tree variable that a leaf (or an inner node) evaluates."""
    if len(v.cases) == 1:
        return v.cases[0]
    return next(c for c in v.cases if (c.cond == "leaf") == leaf)


def node_order(hidden, leaf: bool) -> list:
    """The hidden variables as the interpreter evaluates them at one node: a topological
    order of the same-node reads, the spec's order breaking ties (model._schedule sorts
    the unfolded DAG by (node, spec order))."""
    order = {v.name: i for i, v in enumerate(hidden)}
    g = nx.DiGraph()
    g.add_nodes_from(order)
    for v in hidden:
        for r in (e for e in walk(case_for(v, leaf).expr) if isinstance(e, Ref)):
            if r.var not in order:
                continue
            if r.shift.kind == "root":
                raise NoMasks(f"'{v.name}' reads the root: its node waits for the tree")
            if r.shift.kind == "rel":
                g.add_edge(r.var, v.name)
    return list(nx.lexicographical_topological_sort(g, key=order.get))


class MaskPlan:
    """Where each dropout's draws sit in a node's segment, for leaves and inner nodes.
    `at[(id(case.expr), k)]` is the k-th drawing dropout of that equation:
    (its width, its offset in a leaf's segment, its offset in an inner node's)."""

    def __init__(self, graph, sizes: dict):
        hidden = [v for v in graph.vars if v.role == "hidden"]
        self.at, self.seg = {}, [0, 0]              # seg[1]: a leaf's length
        for leaf in (False, True):
            off = 0
            for name in node_order(hidden, leaf):
                case = case_for(graph.var(name), leaf)
                for k, e in enumerate(sites(case.expr)):
                    width = sizes.get(e)
                    if width is None or not width.is_int:
                        raise NoMasks(f"dropout of '{name}' is not of a vector")
                    w, offs = self.at.get((id(case.expr), k), (int(width.const), [0, 0]))
                    offs[leaf] = off
                    self.at[(id(case.expr), k)] = (w, offs)
                    off += int(width.const)
            self.seg[leaf] = off

    def draw(self, rng, is_leaf: np.ndarray) -> Masks:
        """The uniform draws of one batch, nodes in the forest's order."""
        seg = np.where(is_leaf, self.seg[1], self.seg[0])
        start = np.concatenate([[0], np.cumsum(seg)[:-1]]).astype(np.int64)
        return Masks(self, rng.random(int(seg.sum())), start, is_leaf)


class Masks:
    """One batch's masks: `mask(expr, k, nodes, p, dtype)` for the rows of `nodes`."""

    def __init__(self, plan: MaskPlan, u, start, is_leaf):
        self.plan, self.u, self.start, self.is_leaf = plan, u, start, is_leaf

    def mask(self, expr, k: int, nodes: np.ndarray, p: float, dtype) -> np.ndarray:
        w, offs = self.plan.at[(id(expr), k)]
        first = self.start[nodes] + np.where(self.is_leaf[nodes], offs[1], offs[0])
        u = self.u[first[:, None] + np.arange(w)]
        return (u >= p).astype(dtype) / (1.0 - p)    # as ops._dropout_fwd
