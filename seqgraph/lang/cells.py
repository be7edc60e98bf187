"""Cell expansion: `e = rnn(x, 64)`, `reverse`, `bi` and `stack(n)` become plain equations.

A cell is a template (LANGUAGE.md section 5). Each use instantiates it: its locals and
parameters are renamed after the variable the use defines (`e.W`, `e.c`; the returned
variable becomes `e` itself), its size arguments are substituted, and its index (`t`
inside the cell) binds to the index of its variable argument. `reverse` mirrors every
shift of the instance (t-k <-> t+k, 1 <-> end); `bi` concatenates a forward and a
reverse instance at every step (`e.fwd`, `e.bwd`); `stack(n)` chains n instances
(`e.1` ... `e.n`), each reading the one below. This pass works on the AST and returns new
AST statements with no cell use left.
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass, replace

from ..errors import SpecError, did_you_mean
from ..graph.sizes import MAX_SIZE, TOO_LARGE_HINT
from . import ast as A


def is_cell_use(eq: A.Equation, cells: dict) -> bool:
    rhs = eq.rhs
    return isinstance(rhs, A.CellUse) or (isinstance(rhs, A.FnCall) and rhs.name in cells)


def _use_parts(rhs):
    """(modifier, layers, cell name, args, pos) of a cell use."""
    if isinstance(rhs, A.CellUse):
        return rhs.modifier, rhs.layers, rhs.cell, rhs.args, rhs.pos
    return None, 1, rhs.name, rhs.args, rhs.pos


def _names_used(node, acc: set):
    """Names read by an expression (not index names)."""
    if isinstance(node, A.Name):
        acc.add(node.name)
    for child in _children(node):
        _names_used(child, acc)
    return acc


def _children(node):
    if isinstance(node, A.BinOp):
        return (node.left, node.right)
    if isinstance(node, A.Neg):
        return (node.arg,)
    if isinstance(node, (A.FnCall, A.CellUse)):
        return node.args
    if isinstance(node, A.Concat):
        return node.parts
    if isinstance(node, A.Reduce):
        return (node.arg,)
    return ()


def _index_names_of(node, var: str, acc: set):
    """The index names `var` is read with inside an expression (`x[t]` gives t)."""
    if isinstance(node, A.Name) and node.name == var and node.index:
        acc.update(i.name for i in node.index if i.kind in ("rel", "child") and i.name)
    for child in _children(node):
        _index_names_of(child, var, acc)
    return acc


def _first_runs_over(cell, param, first, index, layers) -> None:
    """A stack feeds each layer's sequence to the next through the first variable
    argument (`param` of the cell): one that is a value per example (`cond(z, x, H)`, z
    a context) cannot take it."""
    if layers > 1 and index is None:
        raise SpecError(f"stack({layers}) feeds each layer to the next through the first "
                        f"variable argument ('{param}' of cell '{cell.name}'), and "
                        f"'{first.name}' is one value an example", first.pos,
                        hint=f"make the sequence the first variable argument of cell "
                             f"'{cell.name}' and of this use")


class _Also:
    """An `index_of` that also knows the names in `known` (name -> index): the layers a
    stack has made so far, which the next layer reads before any equation declares them."""

    def __init__(self, index_of, known: dict):
        self.index_of, self.known = index_of, known

    def __call__(self, name):
        return self.known[name] if name in self.known else self.index_of(name)

    def is_local(self, name) -> bool:
        return name in self.known or getattr(self.index_of, "is_local",
                                             lambda n: False)(name)


def _arity_error(cell, args, pos, var, mod=None, layers=1) -> SpecError:
    """`h = gru(x, 16, 3)`: the message, and a hint with the use written correctly (the
    arguments given where they are simple, the cell's parameter names elsewhere)."""
    shown = [_arg_text(a) for a in args[:len(cell.params)]]
    shown += [None] * (len(cell.params) - len(shown))
    form = ", ".join(s or p for s, p in zip(shown, cell.params, strict=True))
    prefix = {"bi": "bi ", "reverse": "reverse ", "stack": f"stack({layers}) "}.get(mod, "")
    n = len(cell.params)
    return SpecError(f"cell '{cell.name}' takes {n} argument{'s' if n != 1 else ''} "
                     f"({', '.join(cell.params)}), given {len(args)}", pos,
                     hint=f"write {var} = {prefix}{cell.name}({form})")


def _arg_text(a) -> str | None:
    """A cell argument as written, when it is a plain name or number."""
    if isinstance(a, A.Name) and a.index is None:
        return a.name
    if isinstance(a, A.Number):
        return f"{a.value:g}"
    return None


class Expander:
    """Expands every cell use of a list of statements (recursively, nested cells too)."""

    def __init__(self, cells: dict, index_of, variables: set, foreign=frozenset()):
        self.cells = cells
        self.foreign = foreign            # cells written in another file (the prelude)
        self.index_of = index_of          # name -> index name or None (global scope)
        self.variables = variables        # every variable name of the global scope

    def is_var(self, name, index_of) -> bool:
        return name in self.variables or getattr(index_of, "is_local", lambda n: False)(name)

    # ------------------------------------------------------------------ entry point
    def expand_use(self, eq: A.Equation, mirror=False, stack=(), local_index=None):
        mod, layers, cell_name, args, pos = _use_parts(eq.rhs)
        cell = self._cell(cell_name, pos)
        if cell.name in stack:
            raise SpecError(f"cell '{cell.name}' uses itself (through "
                            f"{' -> '.join(stack + (cell.name,))})", pos,
                            hint="cells are templates and cannot be recursive")
        stack = stack + (cell.name,)
        if len(args) != len(cell.params):
            raise _arity_error(cell, args, pos, eq.name, mod, layers)
        index_of = local_index or self.index_of
        if mod == "bi":
            idx = self._arg_index(cell, args, index_of, pos)
            out = self.instantiate(cell, f"{eq.name}.fwd", args, mirror, stack, index_of)
            out += self.instantiate(cell, f"{eq.name}.bwd", args, not mirror, stack, index_of)
            both = A.Concat((A.Name(f"{eq.name}.fwd", (A.Index("rel", idx),), pos),
                             A.Name(f"{eq.name}.bwd", (A.Index("rel", idx),), pos)), pos)
            return out + [A.Equation(eq.name, (idx,), None, both, None, eq.pos)]
        if mod == "stack":
            return self._stack(eq, cell, args, layers, mirror, stack, index_of, pos)
        return self.instantiate(cell, eq.name, args, mirror ^ (mod == "reverse"), stack,
                                index_of)

    def _stack(self, eq, cell, args, layers, mirror, stack, index_of, pos):
        idx = self._arg_index(cell, args, index_of, pos)
        var_pos = self._var_arg_positions(cell, args, index_of)
        first = var_pos[0]
        _first_runs_over(cell, cell.params[first], args[first], index_of(args[first].name),
                         layers)
        out, below = [], None
        layer_index = _Also(index_of, {})     # a layer runs over its argument's index
        for k in range(1, layers + 1):
            layer_args = list(args)
            if below is not None:
                layer_args[var_pos[0]] = A.Name(below, None, pos)
            name = f"{eq.name}.{k}"
            out += self.instantiate(cell, name, tuple(layer_args), mirror, stack,
                                    layer_index)
            layer_index.known[name] = idx
            below = name
        top = A.Name(below, (A.Index("rel", idx),), pos)
        return out + [A.Equation(eq.name, (idx,), None, top, None, eq.pos)]

    def _cell(self, name, pos) -> A.CellDef:
        if name not in self.cells:
            raise SpecError(f"unknown cell '{name}'", pos,
                            hint=did_you_mean(name, self.cells) or
                            "cells: " + ", ".join(sorted(self.cells)))
        return self.cells[name]

    # --------------------------------------------------------------- argument roles
    def _var_arg_positions(self, cell, args, index_of) -> list:
        """The arguments that name a variable (the others are sizes or numbers)."""
        return [i for i, a in enumerate(args) if isinstance(a, A.Name) and a.index is None
                and self.is_var(a.name, index_of)]

    def _arg_index(self, cell, args, index_of, pos):
        for i in self._var_arg_positions(cell, args, index_of):
            idx = index_of(args[i].name)
            if idx is not None:
                return idx
        undefined = getattr(self.index_of, "undefined", lambda n: None)
        for a in args:                  # an argument the use of an undefined name defines
            if isinstance(a, A.Name) and a.index is None and self.is_var(a.name, index_of):
                a = undefined(a.name) or a
            if isinstance(a, A.Name) and not self.is_var(a.name, index_of) and \
                    a.name[:1].islower():
                raise SpecError(f"undefined name '{a.name}'", a.pos,
                                hint=did_you_mean(a.name, self.variables) or
                                "declare it with input, or define it by an equation "
                                "(anywhere in the spec)")
        self._over_one_index(cell, args)          # a per-example argument: said so
        raise SpecError(f"cell '{cell.name}' needs a sequence argument to run over", pos)

    # --------------------------------------------------------------- instantiation
    def instantiate(self, cell: A.CellDef, inst: str, args, mirror, stack, index_of):
        pos = args[0].pos if args else cell.pos
        if len(args) != len(cell.params):
            raise _arity_error(cell, args, pos, inst)
        ret = [s for s in cell.body if isinstance(s, A.Return)]
        if not ret:
            raise SpecError(f"cell '{cell.name}' has no return", cell.pos,
                            hint="end the cell with `return NAME`")
        bind = self._bind(cell, args)
        self._over_one_index(cell, args)
        local_vars = [s.name for s in cell.body if isinstance(s, A.Equation)]
        if ret[-1].name not in local_vars:
            raise SpecError(f"cell '{cell.name}' returns '{ret[-1].name}', which it does "
                            "not define", ret[-1].pos)
        local_params = [s.name for s in cell.body if isinstance(s, A.ParamDecl)]
        rename = {n: f"{inst}.{n}" for n in local_vars + local_params}
        rename[ret[-1].name] = inst
        idx_map = self._index_map(cell, bind, index_of)
        sub = _Subst(rename, bind, idx_map, mirror,
                     {q: a.pos for q, a in zip(cell.params, args, strict=True)
                      if isinstance(a, A.Number)})
        local_index = self._local_index_of(cell, sub, index_of)
        out = []
        for s in cell.body:
            out += self._instantiate_stmt(s, cell, sub, mirror, stack, local_index)
        if cell.name in self.foreign:     # its positions are in another file: use the use's
            out = [relocate(s, pos) for s in out]
        return out

    def _bind(self, cell, args) -> dict:
        """Parameter -> variable or dim name (a str) or number (a size or a constant)."""
        bind = {}
        for p, a in zip(cell.params, args, strict=True):
            if isinstance(a, A.Number):
                bind[p] = int(a.value) if a.value == int(a.value) else a.value
            elif isinstance(a, A.Name) and a.index is None:
                bind[p] = a.name
            elif isinstance(a, A.Name):          # gru(x[t], 16): the sequence is x
                raise SpecError(f"argument '{p}' of cell '{cell.name}' is a whole "
                                f"sequence, named without a step", a.pos,
                                hint=f"write {a.name}, not {a.name}[...]: the cell reads "
                                     f"every step of it")
            else:
                raise SpecError(f"argument '{p}' of cell '{cell.name}' must be a name or "
                                "a number", a.pos,
                                hint="define the expression as a variable first")
        return bind

    def _over_one_index(self, cell, args):
        """An argument the cell reads at a step (x[t]) must run over one index: a value
        of one per example, or over two indexes, has no steps for the cell to run on."""
        indexes = getattr(self.index_of, "indexes", lambda n: None)
        for p, a in zip(cell.params, args, strict=True):
            if not isinstance(a, A.Name) or a.index is not None or \
                    a.name not in self.variables:
                continue
            have = indexes(a.name)
            read = set()
            for s in cell.body:
                for e in (getattr(s, "rhs", None), getattr(s, "expr", None)):
                    if e is not None:
                        _index_names_of(e, p, read)
            if have is None or not read or len(have) == 1:
                continue
            if not have:
                raise SpecError(f"cell '{cell.name}' runs over a sequence, and '{a.name}' "
                                f"is one value an example (it has no index)", a.pos,
                                hint=f"pass a variable over an index (e.g. x of input "
                                     f"x[t]); read {a.name} in an equation instead, e.g. "
                                     f"h[t] : H = tanh(W @ x[t] + V @ {a.name} + b)")
            raise SpecError(f"cell '{cell.name}' runs over one index, and '{a.name}' has "
                            f"two ({', '.join(have)})", a.pos,
                            hint=f"pass a variable over one index, e.g. "
                                 f"s[{have[0]}] = sum over {have[1]} ({a.name}"
                                 f"[{', '.join(have)}]), then {cell.name}(s, ...)")

    def _index_map(self, cell, bind, index_of) -> dict:
        idx_map = {}
        for p, val in bind.items():
            if not isinstance(val, str):
                continue
            names = set()
            for s in cell.body:
                for e in (getattr(s, "rhs", None), getattr(s, "expr", None)):
                    if e is not None:
                        _index_names_of(e, p, names)
            outer = index_of(val)
            for n in names:
                if outer is not None:
                    idx_map.setdefault(n, outer)
        return idx_map

    def _local_index_of(self, cell, sub, index_of):
        """The index of each local of an instance (a nested use runs over its argument's)."""
        local, uses = {}, {}
        for s in cell.body:
            if isinstance(s, A.Equation) and is_cell_use(s, self.cells):
                uses[sub.name(s.name)] = s
            elif isinstance(s, A.Equation):
                local[sub.name(s.name)] = sub.index_name(s.index[0]) if s.index else None

        def look(name, seen=()):
            if name in local:
                return local[name]
            if name in uses and name not in seen:
                for a in _use_parts(uses[name].rhs)[3]:
                    if isinstance(a, A.Name) and a.index is None:
                        idx = look(sub.name(a.name), seen + (name,))
                        if idx is not None:
                            return idx
                return None
            return index_of(name)
        outer_local = getattr(index_of, "is_local", lambda n: False)
        look.is_local = lambda n: n in local or n in uses or outer_local(n)
        return look

    def _instantiate_stmt(self, s, cell, sub, mirror, stack, local_index):
        if isinstance(s, A.Return):
            return []
        if isinstance(s, A.ParamDecl):
            shape = None if s.shape is None else tuple(sub.size(x) for x in s.shape)
            return [replace(s, name=sub.name(s.name), shape=shape)]
        if isinstance(s, A.InitDecl):
            return [replace(s, name=sub.name(s.name), expr=sub.expr(s.expr))]
        if isinstance(s, A.Equation) and is_cell_use(s, self.cells):
            mod, layers, name, args, pos = _use_parts(s.rhs)
            new_args = tuple(sub.expr(a) for a in args)
            rhs = A.CellUse(mod or "", name, new_args, layers, pos) if mod else \
                A.FnCall(name, new_args, pos)
            eq = replace(s, name=sub.name(s.name), rhs=rhs)
            return self.expand_use(eq, mirror, stack, local_index)
        if isinstance(s, A.Equation):
            return [replace(s, name=sub.name(s.name),
                            index=tuple(sub.index_name(i) for i in s.index),
                            size=sub.size(s.size), rhs=sub.expr(s.rhs))]
        what = type(s).__name__.replace("Decl", "").lower()
        raise SpecError(f"a cell cannot contain a '{what}' statement", s.pos,
                        hint="cells hold param, equations, init and return")


def relocate(node, pos):
    """The same AST with every position replaced by `pos`."""
    if isinstance(node, tuple):
        return tuple(relocate(x, pos) for x in node)
    if not is_dataclass(node) or isinstance(node, type):
        return node
    changes = {f.name: relocate(getattr(node, f.name), pos) for f in fields(node)}
    if "pos" in changes:
        changes["pos"] = pos
    return replace(node, **changes)


class _Subst:
    """Renames, binds arguments, maps index names and mirrors shifts in expressions."""

    def __init__(self, rename, bind, idx_map, mirror, numbers=None):
        self.rename, self.bind, self.idx_map, self.mirror = rename, bind, idx_map, mirror
        self.numbers = numbers or {}      # a parameter given a number -> where it is

    def name(self, n):
        if n in self.rename:
            return self.rename[n]
        v = self.bind.get(n, n)
        return v if isinstance(v, str) else n

    def size(self, s):
        """A size of the cell's body with its arguments bound; a number given for it is
        checked where it is written (as a size written in place is, parse._size)."""
        if not isinstance(s, str):
            return s
        v = self.bind.get(s, s)
        if s in self.numbers:
            pos = self.numbers[s]
            if v < 1 or v != int(v):
                raise SpecError(f"a size must be a whole number of at least 1, not {v:g}",
                                pos, hint="a size counts units: give a positive whole "
                                "number, e.g. 16")
            if v > MAX_SIZE:
                raise SpecError(f"a size of {v} units is too large (at most {MAX_SIZE})",
                                pos, hint=TOO_LARGE_HINT)
        return v

    def index_name(self, i):
        return self.idx_map.get(i, i)

    def index(self, ix: A.Index) -> A.Index:
        ix = replace(ix, name=self.index_name(ix.name) if ix.name else ix.name)
        if not self.mirror:
            return ix
        if ix.kind == "rel":
            return replace(ix, k=-ix.k)
        return replace(ix, kind={"first": "end", "end": "first"}.get(ix.kind, ix.kind))

    def expr(self, e):
        if isinstance(e, A.Name):
            if e.name in self.bind and not isinstance(self.bind[e.name], str):
                return A.Number(float(self.bind[e.name]), e.pos)
            index = None if e.index is None else tuple(self.index(i) for i in e.index)
            return A.Name(self.name(e.name), index, e.pos)
        if isinstance(e, A.BinOp):
            return replace(e, left=self.expr(e.left), right=self.expr(e.right))
        if isinstance(e, A.Neg):
            return replace(e, arg=self.expr(e.arg))
        if isinstance(e, A.FnCall):
            return replace(e, args=tuple(self.expr(a) for a in e.args))
        if isinstance(e, A.Concat):
            return replace(e, parts=tuple(self.expr(a) for a in e.parts))
        if isinstance(e, A.Reduce):
            return replace(e, index=self.index_name(e.index), arg=self.expr(e.arg))
        return e
