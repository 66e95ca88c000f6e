"""The open-data API against a real influxd: one simulated day of the zone (yesterday, UTC) ingested
through the pipeline and published by the charter job; the app runs in-process (``TestClient``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from cli.backfill import backfill
from datacharter.charter import Charter
from datacharter.job import CharterJob
from gateways.simulator import SimulatedZone
from ingest.pipeline import Pipeline
from ingest.worker import ensure_databases
from smartzone.registry import Registry
from smartzone.settings import Settings
from storage.influx import Influx
from tests.conftest import REGISTRY, drop_zone_databases, zone_settings

NOW = datetime.now(UTC)
DAY = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC) - timedelta(days=1)  # yesterday, UTC: published
CHARTER = Charter.load()


@pytest.fixture(scope="session")
def published(tmp_path_factory, influxd) -> Iterator[Settings]:
    """Settings whose open database holds one published day (DAY) of the simulated zone."""
    tmp = tmp_path_factory.mktemp("api")
    settings = zone_settings(
        tmp / "data",
        influxd.url,
        api={"rate_limit": 1000.0, "rate_burst": 10_000, "base_url": "http://testserver"},  # TestClient's origin
    )
    registry = Registry.load(REGISTRY)
    influx = Influx(settings.influx)
    ensure_databases(influx, settings, CHARTER)
    pipe = Pipeline.from_settings(settings, registry, CHARTER)
    backfill(SimulatedZone(registry, 11), pipe, influx, settings, DAY, 1440)
    job = CharterJob(settings, CHARTER, registry, influx)
    job.run_once(now=DAY + timedelta(days=1, minutes=5))
    job.store.close()
    yield settings
    drop_zone_databases(influx, settings)
    influx.close()


@pytest.fixture(scope="session")
def client(published) -> Iterator[TestClient]:
    with TestClient(create_app(published)) as c:
        yield c
