"""seqgraph: recurrent and recursive nets written as the textbook's equations.

The top-level names are imported on first use (PEP 562), so that `seqgraph.cli` can set
the BLAS thread count before numpy loads its BLAS.
"""
from .errors import DataError, SeqgraphError, SpecError, UsageError

__all__ = ["DataError", "Model", "SeqgraphError", "Spec", "SpecError", "UsageError", "load",
           "read_spec", "restore"]
__version__ = "0.1.0"

_LAZY = {"load", "read_spec", "Model", "Spec"}


def __getattr__(name):
    if name in _LAZY:
        from . import model
        return getattr(model, name)
    if name == "restore":             # a trained model: spec + checkpoint (train/session.py)
        from .train.session import restore
        return restore
    raise AttributeError(f"module 'seqgraph' has no attribute {name!r}")
