"""Subcommands of the `seqgraph` command line, one module each (see cli.py)."""
from __future__ import annotations

from ..errors import UsageError


def output_file(path: str | None, flag: str) -> str | None:
    """`path` for an output option (`-o plot.png`, `--per-example f.csv`), or a
    UsageError before any work: its folder does not exist, or it is a folder."""
    import os
    folder = os.path.dirname(path) if path else "."
    if path and folder and not os.path.isdir(folder):
        raise UsageError(f"{flag} {path}: the folder '{folder}' does not exist (make it "
                         f"first, e.g. mkdir -p {folder})")
    if path and os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a folder; name a file in it")
    return path


def writing(path: str, flag: str):
    """A context for writing an output file: a refusal of the system (no permission, a
    read-only disk) is a UsageError naming the option, not a traceback."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except OSError as e:
            raise UsageError(f"{flag} {path}: cannot write it ({e.strerror or e})") from None
    return guard()


def parse_dims(items: list[str] | None, spec=None) -> dict:
    """`--dim V=65 --dim H=32` (or `--dim V=65,H=32`) -> {"V": 65, "H": 32}: every
    command's way of binding a size the spec leaves open (or overriding a declared one).
    With `spec`, a name it has no size for is refused (a did-you-mean: `v` for `V`)."""
    dims = {}
    for item in items or ():
        for part in filter(None, item.split(",")):
            name, eq, val = part.partition("=")
            if not eq or not name.strip().isidentifier() or not val.strip().isdigit() \
                    or int(val) < 1:
                raise UsageError(f"--dim {part!r}: expected NAME=SIZE with SIZE a whole "
                                 f"number of at least 1, e.g. --dim V=65")
            name = name.strip()
            if name in dims and dims[name] != int(val):
                raise UsageError(f"--dim {name} is given twice ({name}={dims[name]} and "
                                 f"{part.strip()}); keep one of them")
            dims[name] = int(val)
    if spec is not None:
        from ..model import check_dim_names
        check_dim_names(dims, set(spec.unbound_dims()) | spec.graph.size_names, spec.path)
    return dims
