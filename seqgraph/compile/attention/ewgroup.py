"""Elementwise groups: the connected elementwise ops of a loop's step over the batch alone
(a GRU or LSTM cell around the attention: `sigmoid(A + B + c)`, `(1 - z) * n + z * s`)
run as one generated Numba loop over [B, n] forward and one backward, instead of one
numpy pass (and its temporary) per op.

A group is found once per program (`groups`): ops of codegen.KERNEL_FWD whose values are
per example (axes ()), joined where one reads another, kept only when nothing outside the
group reads a member before the group's last node (the group then runs at that node, in
the forward and, reversed, in the backward). At run time its inputs must be [B, n]
values, [n] vectors or numbers (`Group.plan`); any other shape runs the members one by one
as before. The values read outside the group or by the backward are written (`stored`),
the backward kernel computes the others again; it takes the gradients that reach the
members from outside the group and gives those of its inputs.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..codegen import COMMON, HELPERS, KERNEL_FWD, KERNEL_VJP, VJP_READS


class Group:
    """One elementwise group of a program: `members` (node ids, in program order),
    `inputs` (the nodes outside it that members read), `exported` (members read
    outside it or a variable's value)."""

    def __init__(self, members, nodes, keep, readers):
        self.members = members
        self.last = members[-1]
        mset = set(members)
        ins = []
        for i in members:
            for a in nodes[i].args:
                if a not in mset and a not in ins:
                    ins.append(a)
        self.inputs = ins
        self.exported = [i for i in members if i in keep or readers[i] - mset]
        # the values written: the exported ones and those the backward reads (each
        # array more keeps LLVM from vectorising the loop: 16 written took 7x as long
        # as 6); the backward kernel computes the others again
        stored = set(self.exported)
        for i in members:
            own, operands = VJP_READS[nodes[i].op]
            if own:
                stored.add(i)
            if operands:
                stored.update(a for a in nodes[i].args if a in mset)
        self.stored = [i for i in members if i in stored]
        self.nodes = nodes
        self.kernels = {}          # (dtype, input ranks) -> (forward, backward)

    def plan(self, vals, B, dt):
        """The inputs' ranks and n, or None when an input is none of these (the members
        then run one by one). Ranks: 2 a [B, n] value, 3 one parameter's columns of a
        stacked product [B, m] (a 'slice' node: the kernel reads the product's rows,
        contiguous, which LLVM vectorises, and not a strided view), 1 an [n] vector,
        0 one number, -1 a constant of the source."""
        n, ranks = None, []
        for a in self.inputs:
            v, node = vals[a], self.nodes[a]
            if node.kind == "num":
                ranks.append(-1)
                continue
            if not isinstance(v, np.ndarray) or v.dtype != dt or v.ndim > 2 or \
                    v.ndim == 2 and (v.shape[0] != B or v.shape[1] == 1):
                return None
            r = 0 if v.size == 1 and v.ndim < 2 else v.ndim
            if r:
                if n is not None and v.shape[-1] != n:
                    return None
                n = v.shape[-1]
            if r == 2 and not v.flags.c_contiguous and node.kind == "slice":
                G = vals[node.args[0]]
                if G.ndim == 2 and G.flags.c_contiguous and G.dtype == dt:
                    r = 3
            ranks.append(r)
        return None if n is None else (tuple(ranks), n)

    def arrays(self, vals, ranks):
        """The kernels' input arguments (`plan`'s ranks)."""
        out = []
        for a, r in zip(self.inputs, ranks, strict=True):
            v = vals[a]
            if r == 3:
                out += [vals[self.nodes[a].args[0]], self.nodes[a].off]
            elif r == 2:
                out.append(np.ascontiguousarray(v))
            elif r >= 0:
                out.append(v.reshape(1) if r == 0 else v)
        return out

    def kernel(self, dtype, ranks):
        key = (str(dtype), ranks)
        if key not in self.kernels:
            src = _source(self, str(dtype), ranks)
            mod = kernels.load_source(src)
            self.kernels[key] = (mod.fwd, mod.bwd)
        return self.kernels[key]


def groups(prog, keep) -> list:
    """The elementwise groups of a program (see the module's docstring)."""
    nodes = prog.nodes
    readers = [set() for _ in nodes]
    for n in nodes:
        for a in n.args:
            readers[a].add(n.id)
    ok = {n.id for n in nodes if n.kind == "op" and n.op in KERNEL_FWD and n.axes == ()}
    parent = {i: i for i in ok}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in ok:
        for a in nodes[i].args:
            if a in ok:
                parent[find(a)] = find(i)
    sets = {}
    for i in sorted(ok):
        sets.setdefault(find(i), []).append(i)
    out = []
    for members in sets.values():
        if len(members) < 2:
            continue
        mset, last = set(members), members[-1]
        early = any(r < last and r not in mset for i in members for r in readers[i])
        if not early:
            out.append(Group(members, nodes, keep, readers))
    return out


def _source(grp, dtype, ranks) -> str:
    """The forward and backward kernels of a group for inputs of these ranks."""
    nodes = grp.nodes
    xname, load = {}, []
    for j, (a, r) in enumerate(zip(grp.inputs, ranks, strict=True)):
        if r == -1:
            xname[a] = f"DT({float(nodes[a].expr.value)!r})"
            continue
        xname[a] = f"x{j}"
        load.append(f"x{j} = X{j}" + {3: "b[k]", 2: "b[k]", 1: "[k]", 0: "[0]"}[r])
    yi = {m: i for i, m in enumerate(grp.stored)}
    mset = set(grp.members)

    def val(a):
        return xname.get(a, f"v{a}")

    xs = [x for j, r in enumerate(ranks) if r != -1
          for x in ((f"X{j}", f"O{j}") if r == 3 else (f"X{j}",))]
    ys = [f"Y{i}" for i in range(len(grp.stored))]
    gs = [f"G{i}" for i in range(len(grp.exported))]
    # the gradients of [B, n] inputs in one array DP [inputs, B * n + pad] (its rows
    # not a multiple of 4 KB apart: kernels.StaggeredPool); those of vectors and numbers
    # summed into D<j>
    wide = [j for j, r in enumerate(ranks) if r in (2, 3)]
    ds = ["DP"] + [f"D{j}" for j, r in enumerate(ranks) if r in (0, 1)]
    deco = '@njit(error_model="numpy", fastmath=FAST, cache=True, nogil=True)'
    # (row views of 2-D arrays: the inner loops index 1-D arrays, which LLVM vectorises)
    rows = [f"X{j}b = X{j}[b]" if r == 2 else f"X{j}b = X{j}[b, O{j}:O{j} + N]"
            for j, r in enumerate(ranks) if r in (2, 3)]
    L = ["", "", deco, f"def fwd({', '.join(xs + ys)}):",
         "    B, N = Y0.shape", "    for b in range(B):"]
    L += ["        " + s for s in rows + [f"Y{i}b = Y{i}[b]" for i in range(len(ys))]]
    L += ["        for k in range(N):"]
    body = list(load)
    for m in grp.members:
        n = nodes[m]
        body.append(f"v{m} = {KERNEL_FWD[n.op]([val(a) for a in n.args])}")
        if m in yi:
            body.append(f"Y{yi[m]}b[k] = v{m}")
    L += ["            " + s for s in body]
    # backward: the members' values read back, their gradients as scalars in reverse
    L += ["", "", deco, f"def bwd({', '.join(xs + ys + gs + ds)}):",
          "    B, N = Y0.shape", "    for b in range(B):"]
    L += ["        " + s for s in rows + [f"Y{i}b = Y{i}[b]" for i in range(len(ys))]
          + [f"G{i}b = G{i}[b]" for i in range(len(gs))]
          + [f"D{j}b = DP[{i}, b * N:(b + 1) * N]" for i, j in enumerate(wide)]]
    L += ["        for k in range(N):"]
    body = list(load)
    body += [f"v{m} = Y{yi[m]}b[k]" if m in yi else
             f"v{m} = {KERNEL_FWD[nodes[m].op]([val(a) for a in nodes[m].args])}"
             for m in grp.members]
    ex = {m: i for i, m in enumerate(grp.exported)}
    body += [f"g{m} = " + (f"G{ex[m]}b[k]" if m in ex else "ZERO") for m in grp.members]
    body += [f"e{j} = ZERO" for j, r in enumerate(ranks) if r != -1]
    xj = {a: j for j, a in enumerate(grp.inputs)}
    for m in reversed(grp.members):
        n = nodes[m]
        for i, term in KERNEL_VJP[n.op](f"g{m}", [val(a) for a in n.args], f"v{m}"):
            a = n.args[i]
            if a in mset:
                body.append(f"g{a} += {term}")
            elif ranks[xj[a]] != -1:
                body.append(f"e{xj[a]} += {term}")
    for j, r in enumerate(ranks):
        if r != -1:
            body.append(f"D{j}" + {3: "b[k] = ", 2: "b[k] = ", 1: "[k] += ", 0: "[0] += "}[r]
                        + f"e{j}")
    L += ["            " + s for s in body]
    head = ["import math", "import numpy as np", "from numba import njit",
            HELPERS[dtype], COMMON, f"FAST = {dtype == 'float32'}"]
    return "\n".join(head + L) + "\n"
