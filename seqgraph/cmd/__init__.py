"""Subcommands of the `seqgraph` command line, one module each (see cli.py)."""
from __future__ import annotations

from ..errors import UsageError


def parse_dims(items: list[str] | None) -> dict:
    """`--dim V=65 --dim H=32` (or `--dim V=65,H=32`) -> {"V": 65, "H": 32}: every
    command's way of binding a size the spec leaves open."""
    dims = {}
    for item in items or ():
        for part in filter(None, item.split(",")):
            name, eq, val = part.partition("=")
            if not eq or not name.strip().isidentifier() or not val.strip().isdigit() \
                    or int(val) < 1:
                raise UsageError(f"--dim {part!r}: expected NAME=SIZE with SIZE a whole "
                                 f"number of at least 1, e.g. --dim V=65")
            dims[name.strip()] = int(val)
    return dims

