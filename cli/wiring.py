"""Stages built from settings, for the commands and ``up``: the registry and the ingest pipeline."""

from __future__ import annotations

from smartzone.registry import Registry
from smartzone.settings import Settings


def registry(settings: Settings) -> Registry:
    return Registry.load(settings.registry)


def pipeline(settings: Settings):
    """The ingest pipeline as the worker runs it (``Pipeline.from_settings``): the registry, routes, limits,
    the charter's raw retention as the oldest accepted reading, and the pseudonymiser of passers-by's
    identifiers."""
    from datacharter.charter import Charter
    from ingest.pipeline import Pipeline

    return Pipeline.from_settings(settings, registry(settings), Charter.load(settings.charter.path))
