"""seqgraph: recurrent and recursive nets written as the textbook's equations."""
from .errors import DataError, SeqgraphError, SpecError, UsageError
from .model import Model, Spec, load, read_spec

__all__ = ["load", "read_spec", "Model", "Spec", "SpecError", "DataError", "UsageError",
           "SeqgraphError"]
__version__ = "0.1.0"
