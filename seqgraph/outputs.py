"""Output files named on the command line (`-o plot.png`, `--per-example f.csv`): checked
before any work, and written with the system's refusals said as UsageErrors. Below the
pipeline, so that render, jacobian and the commands share it."""
from __future__ import annotations

from .errors import UsageError


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


def plot_file(path: str | None, flag: str) -> str | None:
    """`path` for a plot drawn by matplotlib (`jacobian -o`, `sample --attention-plot`),
    checked as `output_file` and for a format matplotlib writes, before any work: a
    `.txt` was matplotlib's ValueError traceback once everything had been computed, and a
    name without one was written as NAME.png while the command said NAME."""
    if output_file(path, flag) is None:
        return None
    import os

    from matplotlib.backend_bases import FigureCanvasBase
    kinds = FigureCanvasBase.get_supported_filetypes()
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in kinds:
        what = f"'.{ext}' is not an image format" if ext else "no extension to say its format"
        raise UsageError(f"{flag} {path}: {what}; name a .png, .svg or .pdf file (or "
                         f"another of matplotlib's: {', '.join(sorted(kinds))})")
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
