"""Smart Zone core, the ground floor: the canonical reading model, the quantity vocabulary, the registry,
settings, names and errors. It imports no stage and no storage; the command line is ``cli``."""

__version__ = "0.1.0"
