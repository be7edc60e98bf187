"""The strongly connected components of a folded graph: the one schedule every executor
and the causality check read (DESIGN.md, "Strongly connected components").

A component without a cycle holds one variable that can be computed for every step at
once; a cyclic one is a recurrence, whose variables run step by step. Inside one step a
variable comes after the variables it reads at the same step (`h[t]` reading `c[t]`), in
file order among those that do not read each other. The components come in a
topological order (each after every component it reads), in file order among
independent ones. What each caller refuses, and which stage it builds, is its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from .folded import FoldedGraph, Shift, ShiftKind


@dataclass(frozen=True)
class Edge:
    """One reference inside a component: `dst`'s equation (or init, `init`) reads `src`."""
    src: str
    dst: str
    shift: Shift
    init: bool = False


@dataclass(frozen=True)
class Component:
    members: tuple      # every variable in it, in file order
    hidden: tuple       # its hidden variables in the order of one step
    cyclic: bool        # several variables, or one that reads itself
    edges: tuple        # the Edges between its members

    @property
    def delays(self) -> tuple:
        """The edges through a delay (t-1, t+1, a child)."""
        return tuple(e for e in self.edges if e.shift.is_delay)


def components(graph: FoldedGraph) -> list[Component]:
    """The components of `graph.nx()`, every component after those it reads."""
    g = graph.nx()
    file = {v.name: i for i, v in enumerate(graph.vars)}
    cond = nx.condensation(g)
    return [_component(graph, g, file, cond.nodes[c]["members"])
            for c in _ordered(cond, g, file)]


def _ordered(cond, g, file) -> list:
    """The condensation's nodes topologically sorted: first the variables with no
    equation (inputs, targets: nothing comes before them), then the rest by the file
    position of their first member among the independent ones."""
    def key(c):
        members = cond.nodes[c]["members"]
        computed = any(g.nodes[m]["role"] == "hidden" for m in members)
        return computed, min(file[m] for m in members)
    return list(nx.lexicographical_topological_sort(cond, key=key))


def _component(graph, g, file, members) -> Component:
    names = tuple(sorted(members, key=file.__getitem__))
    edges = tuple(Edge(u, v, d["shift"], bool(d.get("init")))
                  for u, v, d in g.subgraph(names).edges(data=True))
    cyclic = len(names) > 1 or g.has_edge(names[0], names[0])
    return Component(names, _step_order(graph, names, edges, file), cyclic, edges)


def _step_order(graph, names, edges, file) -> tuple:
    """The hidden members in the order one step computes them: a same-step read (`t`,
    not an init, which is read before the first step) first, else file order."""
    hidden = [n for n in names if graph.var(n).role == "hidden"]
    same = nx.DiGraph()
    same.add_nodes_from(hidden)
    same.add_edges_from((e.src, e.dst) for e in edges if not e.init and
                        e.shift.kind == ShiftKind.REL and e.shift.k == 0 and
                        e.src in same and e.dst in same)
    return tuple(nx.lexicographical_topological_sort(same, key=file.__getitem__))
