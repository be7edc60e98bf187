"""`python -m seqgraph ...`: the `seqgraph` command (cli.py), for a checkout that is not
installed (no console script) or a venv whose scripts are not on PATH."""
import sys

from .cli import main

sys.exit(main())
