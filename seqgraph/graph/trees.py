"""A batch of binary trees as flat index arrays (a forest), built in O(nodes).

Nodes of all trees are numbered children first (post-order), so that a walk in number
order meets every child before its parent; `left`/`right` are -1 at leaves, `tree` says
which example a node belongs to, `roots` lists each tree's root, `height` is 0 at leaves.
Executors read these arrays; nothing walks a networkx graph per batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit


@njit(cache=True)
def _heights(left, right):
    h = np.zeros(left.shape[0], dtype=np.int64)
    for i in range(left.shape[0]):       # children are numbered before their parents
        if left[i] >= 0:
            h[i] = 1 + max(h[left[i]], h[right[i]])
    return h


def heights(left, right) -> np.ndarray:
    """Each node's height, 0 at leaves, of nodes in post-order (children first): one
    compiled pass (every batch's level schedule needs them, and a loader's trees)."""
    return _heights(np.ascontiguousarray(left, dtype=np.int64),
                    np.ascontiguousarray(right, dtype=np.int64))


@dataclass(frozen=True)
class Forest:
    left: np.ndarray        # [N] child ids, -1 at leaves
    right: np.ndarray
    tree: np.ndarray        # [N] example index of each node
    roots: np.ndarray       # [B] root node of each example

    @property
    def size(self) -> int:
        return len(self.left)

    @property
    def batch(self) -> int:
        return len(self.roots)

    @property
    def is_leaf(self) -> np.ndarray:
        return self.left < 0

    @classmethod
    def one(cls, left, right) -> Forest:
        """The forest of one tree, its nodes in post-order (as train.trees.parse_tree
        gives them: the root last)."""
        n = len(left)
        arr = lambda x: np.asarray(x, dtype=np.int64)
        return cls(arr(left), arr(right), np.zeros(n, dtype=np.int64), arr([n - 1]))

    def height(self) -> np.ndarray:
        return heights(self.left, self.right)


def forest(trees) -> tuple[Forest, list]:
    """Nested tuples -> (Forest, node payloads in node order). A tree is a leaf payload or
    a `Node(payload, (left, right))`, numbered children first (post-order)."""
    left, right, owner, roots, payload = [], [], [], [], []

    def add(t, b):
        if isinstance(t, Node):
            l, r = add(t.children[0], b), add(t.children[1], b)
            left.append(l), right.append(r)
            payload.append(t.label)
        else:
            left.append(-1), right.append(-1)
            payload.append(t)
        owner.append(b)
        return len(left) - 1

    for b, t in enumerate(trees):
        roots.append(add(t, b))
    arr = lambda x: np.asarray(x, dtype=np.int64)
    return Forest(arr(left), arr(right), arr(owner), arr(roots)), payload


@dataclass(frozen=True)
class Node:
    """An internal node: a label (or any payload) and exactly two children."""
    label: object
    children: tuple
