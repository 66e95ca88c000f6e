"""The API's guard rails: injection, the open database only, rate limits, sizes, CORS, gzip, health, and a
property-based run over its OpenAPI schema (schemathesis)."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from api.app import create_app
from storage.influx import Influx
from tests.api.conftest import DAY

D0 = DAY.strftime("%Y-%m-%dT%H:%M:%SZ")
D1 = (DAY + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
INJECTIONS = [
    "x' OR 1=1 --",
    '"; DROP DATABASE "smartzone_raw"; --',
    'noise"; SELECT * FROM "sighting',
    "$start",
    "1; SHOW DATABASES",
    "/.*/",
    "smartzone_raw..air_quality",
    "\n\nSELECT",
    "' =~ /.*/ OR '",
    "%00",
    "🙂" * 5,
]


class Recorder:
    """Every database the app's InfluxDB client is asked to use."""

    def __init__(self, monkeypatch) -> None:
        self.databases: list[str] = []
        self.queries: list[str] = []
        for name in ("query", "frame", "rows"):
            real = getattr(Influx, name)

            def spy(inner_self, q, database=None, *args, _real=real, **kwargs):
                self.databases.append(database)
                self.queries.append(q)
                return _real(inner_self, q, database, *args, **kwargs)

            monkeypatch.setattr(Influx, name, spy)


@pytest.mark.parametrize(
    "parameter", ["from", "to", "resolution", "cells", "bbox", "fields", "level", "format", "limit", "cursor"]
)
def test_injection_attempts_in_every_parameter_get_a_400_and_reach_nothing(client, published, monkeypatch, parameter):
    rec = Recorder(monkeypatch)
    for attack in INJECTIONS:
        params = {"from": D0, "to": D1, parameter: attack}
        r = client.get("/v1/datasets/noise/observations", params=params)
        assert r.status_code == 400, (parameter, attack, r.text)
        assert r.json()["parameter"] == parameter
    for attack in INJECTIONS:
        r = client.get(f"/v1/datasets/{quote(attack, safe='')}/observations", params={"from": D0, "to": D1})
        assert r.status_code in (404, 400)
    # the only queries that ran name checked identifiers; no attack text reached InfluxDB
    assert not any(a.strip() and a.strip() in q for a in INJECTIONS for q in rec.queries if a not in ("$start",))
    assert set(rec.databases) <= {published.charter.open_database}


def test_every_query_the_api_can_issue_targets_the_open_database(client, published, monkeypatch):
    """Walk every endpoint and format (and, below, schemathesis's cases): the client is only ever asked for the
    open database. The app has no setting through which it could name another one."""
    rec = Recorder(monkeypatch)
    urls = [
        "/v1/datasets",
        "/v1/datasets/noise",
        "/v1/cells",
        "/v1/zone",
        "/v1/sensors",
        "/readyz",
        "/v1/sensors/noise-volkstraat-1",
    ]
    for name in ("noise", "traffic", "pedestrian_flow", "energy", "energy_profiles", "mobile_air_quality"):
        for fmt in ("json", "csv", "parquet", "geojson"):
            urls.append(f"/v1/datasets/{name}/observations?from={D0}&to={D1}&format={fmt}&limit=7")
        urls.append(f"/v1/datasets/{name}/observations?from={D0}&to={D1}&resolution=1d&level=rollups")
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert rec.databases and set(rec.databases) == {published.charter.open_database}
    for q in rec.queries:  # and never a statement that writes or administers
        assert re.match(r"(SELECT|SHOW (MEASUREMENTS|TAG VALUES))\b", q), q
    forbidden = {published.influx.raw_database, published.influx.pseudonymous_database, published.influx.ops_database}
    assert not any(db in q for q in rec.queries for db in forbidden)


def test_closed_windows_are_served_from_memory_the_second_time(client, monkeypatch):
    url = f"/v1/datasets/parking/observations?from={D0}&to={D1}&limit=50"
    first = client.get(url)
    assert first.status_code == 200 and first.headers["cache-control"].endswith("immutable")
    rec = Recorder(monkeypatch)
    again = client.get(url)
    assert (
        again.status_code == 200 and again.content == first.content and again.headers["etag"] == first.headers["etag"]
    )
    assert rec.queries == []  # no InfluxDB query: the response came from the cache
    assert client.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    # a window that may still change is reused only as long as its max-age allows (60 s)
    noise = f"/v1/datasets/noise/observations?from={D0}&to={D1}&limit=5"
    assert client.get(noise).headers["cache-control"] == "public, max-age=60"
    seen = len(rec.queries)
    assert client.get(noise).status_code == 200 and len(rec.queries) == seen
    monkeypatch.setattr("api.app.time.monotonic", lambda: 10**12)
    assert client.get(noise).status_code == 200 and len(rec.queries) > seen


def test_rate_limit_answers_429_with_retry_after(published):
    slow = published.model_copy(update={"api": published.api.model_copy(update={"rate_limit": 1.0, "rate_burst": 3})})
    with TestClient(create_app(slow)) as c:
        codes = [c.get("/v1/datasets").status_code for _ in range(6)]
        assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
        r = c.get("/v1/datasets")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["type"].endswith("rate-limited")
        assert c.get("/healthz").status_code == 200  # probes are never limited


def test_size_limits_cors_gzip_and_health(client):
    r = client.get("/v1/datasets/noise/observations", params={"fields": "x" * 5000})
    assert r.status_code == 414
    r = client.request("GET", "/v1/datasets", content=b"x" * 10)
    assert r.status_code == 413
    r = client.get("/v1/datasets", headers={"Origin": "https://lab.example.org"})
    assert r.headers["access-control-allow-origin"] == "*"
    r = client.options(
        "/v1/datasets", headers={"Origin": "https://lab.example.org", "Access-Control-Request-Method": "GET"}
    )
    assert r.status_code == 200 and "GET" in r.headers["access-control-allow-methods"]
    r = client.get(
        "/v1/datasets/noise/observations",
        params={"from": D0, "to": D1, "format": "csv"},
        headers={"Accept-Encoding": "gzip"},
    )
    assert r.headers["content-encoding"] == "gzip" and r.text.startswith("time,")
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"open_database": True, "registry": True}
    metrics = client.get("/metrics").text
    assert "smartzone_api_requests_total" in metrics and 'route="/v1/datasets"' in metrics


def test_readyz_fails_when_influxdb_is_away(published):
    away = published.model_copy(update={"influx": published.influx.model_copy(update={"url": "http://127.0.0.1:9"})})
    with TestClient(create_app(away)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["open_database"] is False
        r = c.get("/v1/datasets/noise/observations", params={"from": D0, "to": D1})
        assert r.status_code in (500, 503) and r.headers["content-type"] == "application/problem+json"


@pytest.fixture(scope="module")
def schema(published):
    app = create_app(published)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_schemathesis_finds_no_server_error(schema, published, monkeypatch):
    rec = Recorder(monkeypatch)
    failures = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case):
            response = case.call()
            if response.status_code >= 500:
                failures.append((case.path, case.query, response.status_code, response.text[:300]))

        run()
    assert not failures, failures[:5]
    assert set(rec.databases) <= {published.charter.open_database}
