"""The `seqgraph` command: a dispatcher over the subcommands in seqgraph/cmd/.

Each subcommand is a module with `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Errors meant for a user (SeqgraphError) print one clear message and exit with code 2;
no traceback reaches the user for an input error.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import SeqgraphError

COMMANDS = ["check", "train", "eval", "sample", "render", "gradcheck", "jacobian"]


def _module(name: str):
    return importlib.import_module(f"seqgraph.cmd.{name}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqgraph",
                                description="Recurrent and recursive nets from equations.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = _module(name)
        except ModuleNotFoundError:
            continue  # a subcommand not built yet
        sp = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except SeqgraphError as e:
        print(e.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
