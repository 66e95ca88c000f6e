"""Stages built from settings, for the commands and ``up``: the registry and the ingest pipeline."""

from __future__ import annotations

from datetime import timedelta

from smartzone.registry import Registry
from smartzone.settings import Settings


def registry(settings: Settings) -> Registry:
    return Registry.load(settings.registry)


def pipeline(settings: Settings):
    """The ingest pipeline as the worker runs it: the registry, routes, limits, the charter's raw retention
    as the oldest accepted reading, and the pseudonymiser of passers-by's identifiers."""
    from datacharter.charter import Charter
    from ingest.pipeline import Pipeline
    from ingest.worker import pseudonymiser

    charter = Charter.load(settings.charter.path)
    return Pipeline(
        registry(settings), settings.ingest.routes,
        max_payload_bytes=settings.ingest.max_payload_bytes,
        max_future=timedelta(seconds=settings.ingest.max_future),
        max_age=timedelta(seconds=charter.retention_s["raw"]),
        pseudonymiser=pseudonymiser(settings, charter),
    )
