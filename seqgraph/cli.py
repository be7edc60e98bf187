"""The `seqgraph` command: a dispatcher over the subcommands in seqgraph/cmd/.

Each subcommand is a module with `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Errors meant for a user (SeqgraphError) print one clear message and exit with code 2;
no traceback reaches the user for an input error.

BLAS threads: one per process unless `--threads N` or OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS / MKL_NUM_THREADS say otherwise. A recurrent step is many small
products; OpenBLAS's threads then spin against each other (and against other processes
on a shared machine): one step of the G2P model took 5.7 s of CPU with its default
threads against 0.21 s with one. Set before numpy loads its BLAS: this module imports
nothing that imports numpy until `main` has read the flag.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from .errors import SeqgraphError

COMMANDS = ["check", "train", "eval", "sample", "render", "gradcheck", "jacobian"]


def _version() -> str:
    """The installed distribution's version (pyproject.toml), else "unknown"."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("seqgraph")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _module(name: str):
    return importlib.import_module(f"seqgraph.cmd.{name}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqgraph", allow_abbrev=False,
                                description="Recurrent and recursive nets from equations.")
    p.add_argument("--threads", type=int, metavar="N",
                   help="BLAS threads of this process (default 1, or what "
                        "OPENBLAS_NUM_THREADS, OMP_NUM_THREADS or MKL_NUM_THREADS say)")
    p.add_argument("--version", action="version", version=f"seqgraph {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = _module(name)
        except ModuleNotFoundError:
            continue  # a subcommand not built yet
        sp = sub.add_parser(name, help=mod.HELP, allow_abbrev=False,
                            description=getattr(mod, "DESCRIPTION", mod.HELP),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def _unknown(parser, args, unknown: list[str]):
    """An argument no option takes: said with the subcommand's usage (argparse's own
    message shows the top level's) and the option nearest a misspelt one (--epoch:
    '--epochs'; prefixes are not accepted, so that a later option cannot change what an
    old command line means)."""
    from .errors import did_you_mean
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
               None)
    sp = sub.choices.get(args.command) if sub is not None and args.command else None
    sp = sp or parser
    flags = [o for a in sp._actions for o in a.option_strings]
    near = did_you_mean(unknown[0].split("=")[0], flags) if unknown[0].startswith("-") \
        else ""
    sp.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" ({near})" if near else ""))


THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def set_threads(argv: list[str]) -> list[str]:
    """Read `--threads N` off the front of the command line and fix the BLAS thread
    count for this process (default 1, or OMP_NUM_THREADS; an environment variable already
    set wins over the default, `--threads` over both). Returns the remaining arguments."""
    # prog: under `python -m seqgraph` argparse would name __main__.py in the usage line
    pre = argparse.ArgumentParser(prog="seqgraph", add_help=False, allow_abbrev=False)
    pre.add_argument("--threads", type=int, metavar="N")
    known, rest = pre.parse_known_args(argv)
    if known.threads is not None and known.threads < 1:
        _usage_error("--threads must be at least 1")
    if rest and rest[0].startswith("-") and rest[0] not in ("-h", "--help", "--version"):
        from .errors import did_you_mean  # before the command: only these options
        near = did_you_mean(rest[0].split("=")[0], ["--threads", "--help", "--version"])
        _usage_error(f"unknown option {rest[0]} before the command"
                     + (f" ({near})" if near else "") + "; see seqgraph --help")
    # OpenBLAS and MKL read OMP_NUM_THREADS when their own variable is not set: so does
    # the default, or OMP_NUM_THREADS=2 alone would give one thread
    default = os.environ.get("OMP_NUM_THREADS", "").strip() or "1"
    for var in THREAD_VARS:
        if known.threads is not None:
            os.environ[var] = str(known.threads)
        else:
            os.environ.setdefault(var, default)
    _check_numba_threads()
    return rest


def _check_numba_threads():
    """NUMBA_NUM_THREADS=0 (or below) made importing numba raise ValueError, a traceback
    before any command ran, `--version` included. Said as a usage error instead; seqgraph
    runs no parallel loops of its own, so the variable can simply be unset."""
    raw = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    try:
        bad = int(raw) < 1
    except ValueError:
        return                                  # numba warns of it and ignores it
    if bad:
        _usage_error(f"NUMBA_NUM_THREADS={raw} in the environment: numba needs at least "
                     "1 thread (seqgraph runs none of its own; unset it, or give 1)")


def _usage_error(message: str):
    """A bad command line, as argparse says one: on stderr, exit code 2."""
    print(f"seqgraph: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    try:                   # Ctrl-C while the subcommands load (numpy, numba) too
        return _main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt as e:     # 128 + the signal: SIGINT, or a second SIGTERM
        print("interrupted", file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)


def _main(argv: list[str]) -> int:
    argv = set_threads(argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _unknown(parser, args, unknown)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except SeqgraphError as e:
        if e.render():             # under MPI, rank 0 says every rank's error (Said)
            print(e.render(), file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`seqgraph check ... | head -1`): stop quietly, as Unix
        # tools do, and keep Python's exit-time flush of stdout from failing again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
