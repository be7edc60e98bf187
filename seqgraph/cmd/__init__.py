"""Subcommands of the `seqgraph` command line, one module each (see cli.py)."""
