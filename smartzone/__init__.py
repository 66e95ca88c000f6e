"""Smart Zone core: the canonical reading model, the quantity vocabulary, settings and the CLI."""

__version__ = "0.1.0"
