"""Subcommands of the `seqgraph` command line, one module each (see cli.py)."""
from __future__ import annotations

from ..errors import UsageError, whole_number
from ..graph.sizes import MAX_SIZE, TOO_LARGE_HINT
from ..outputs import output_file, writing

__all__ = ["check_seed", "output_file", "parse_dims", "writing"]


def parse_dims(items: list[str] | None, spec=None) -> dict:
    """`--dim V=65 --dim H=32` (or `--dim V=65,H=32`) -> {"V": 65, "H": 32}: every
    command's way of binding a size the spec leaves open (or overriding a declared one).
    With `spec`, a name it has no size for is refused (a did-you-mean: `v` for `V`)."""
    dims = {}
    for item in items or ():
        for part in filter(None, item.split(",")):
            name, eq, val = part.partition("=")
            if not eq or not name.strip().isidentifier() or not whole_number(val.strip()) \
                    or int(val) < 1:
                raise UsageError(f"--dim {part!r}: expected NAME=SIZE with SIZE a whole "
                                 f"number of at least 1, e.g. --dim V=65")
            name = name.strip()
            if int(val) > MAX_SIZE:
                raise UsageError(f"--dim {part.strip()}: at most {MAX_SIZE} units ("
                                 f"{TOO_LARGE_HINT})")
            if name in dims and dims[name] != int(val):
                raise UsageError(f"--dim {name} is given twice ({name}={dims[name]} and "
                                 f"{part.strip()}); keep one of them")
            dims[name] = int(val)
    if spec is not None:
        from ..model import check_dim_names
        check_dim_names(dims, set(spec.unbound_dims()) | spec.graph.size_names, spec.path)
    return dims


def check_seed(seed: int | None) -> None:
    """`--seed` of sample, jacobian, gradcheck and render's overlay: numpy's generators
    take a whole number of 0 or more (a negative one was numpy's ValueError traceback), as
    the train key `seed` does."""
    if seed is not None and seed < 0:
        raise UsageError(f"--seed must be a whole number of 0 or more, not {seed}")
