"""The language: grammar, AST, parser, and elaboration into a folded graph."""
