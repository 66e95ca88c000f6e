"""A demo-like run on real services: ``smartzone simulate --backfill 1d`` at 23:47 UTC (the clock as a
parameter), then the live zone through mosquitto and the ingest worker for an hour (on a clock that waits
for nothing), the charter job (``smartzone charter run --once --now``) and the open-data API. The demo
publishes every dataset its catalogue lists, each listed column has values, counts are integers in every
format, and ``?fields=`` returns only rows that hold a named field."""

from __future__ import annotations

import csv
import io
import itertools
import threading
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from cli import main as cli
from cli import services
from cli.backfill import simulated_past
from datacharter.charter import Charter
from datacharter.job import WINDOW_COVERAGE
from gateways.publisher import Publisher, live
from gateways.simulator import SimulatedZone
from ingest.worker import Worker
from smartzone.quantities import CATEGORIES, QUANTITIES
from smartzone.registry import Registry
from storage.influx import Influx
from tests.conftest import REGISTRY, drop_zone_databases, settings_env, wait_for, zone_settings

# the demo starts 70 minutes before the wall clock (its live hour must not be in the future: the worker refuses
# device times ahead of its own clock); the whole UTC day before it is the day the charter publishes
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=70)
DAY = NOW.replace(hour=0, minute=0, second=0) - timedelta(days=1)
HOUR_NS = 3_600 * 10**9
CHARTER = Charter.load()


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now.timestamp()

    def time(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        return False


@pytest.fixture(scope="module")
def demo(tmp_path_factory, influxd):
    tmp = tmp_path_factory.mktemp("demo")
    broker = services.mosquitto(tmp / "mosquitto").start()
    # the charter with pseudonymised sightings kept 96 h, not 48: DAY's are still there shortly after midnight
    charter = tmp / "charter.yaml"
    text = CHARTER.path.read_text()  # type: ignore[union-attr]
    charter.write_text(text.replace("pseudonymous: 48h", "pseudonymous: 96h", 1))
    settings = zone_settings(
        tmp / "data", influxd.url, broker.port, name="demo", api={"rate_limit": 1000.0}, charter={"path": charter}
    )
    registry = Registry.load(REGISTRY)
    zone = SimulatedZone(registry, seed=5)
    worker = None
    try:
        backfilled = simulated_past(settings, zone, "1d", now=NOW)
        worker = Worker(settings, registry)
        worker.start()
        assert worker.wait_connected(10)
        # the live zone carries on after the backfill's last minute, for an hour, through broker and worker
        clock = _Clock(NOW)
        pub = Publisher("127.0.0.1", broker.port, client_id="demo-simulator")
        sent = pub.publish(
            live(zone, threading.Event(), 3600, after=backfilled.last, clock=clock.time, wait=clock.wait)
        )
        assert pub.wait_acked(60)
        pub.close()
        assert wait_for(lambda: worker.pipeline.stats.received >= sent, 60)
        last_live = int((backfilled.last + timedelta(hours=1)).timestamp()) * 10**9
        assert wait_for(lambda: _cars_at(worker.influx, settings.influx.raw_database, last_live) is not None, 60)
        with pytest.MonkeyPatch.context() as mp:
            for key, value in settings_env(settings).items():
                mp.setenv(key, value)
            mp.setenv("SMARTZONE_CHARTER__OPEN_DATABASE", settings.charter.open_database)
            mp.setenv("SMARTZONE_CHARTER__PATH", str(charter))
            assert cli.main(["charter", "run", "--once", "--now", (NOW + timedelta(hours=1)).isoformat()]) == 0
        with TestClient(create_app(settings, registry=registry)) as client:
            yield {
                "settings": settings,
                "registry": registry,
                "worker": worker,
                "client": client,
                "last": backfilled.last,
            }
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
        with Influx(settings.influx) as influx:
            drop_zone_databases(influx, settings)


def _cars_at(influx, db: str, t_ns: int) -> int | None:
    rows = influx.rows('SELECT sum("cars") AS cars FROM "traffic" WHERE time = $t', db, {"t": t_ns})
    return rows[0]["cars"] if rows else None


def _hourly(influx, db: str, measurement: str, field: str, start: datetime, end: datetime) -> dict[int, int]:
    q = (
        f'SELECT sum("{field}") AS v FROM "{measurement}" WHERE time >= $s AND time < $e '  # noqa: S608 - constants
        "GROUP BY time(1h) fill(0)"
    )
    rows = influx.rows(q, db, {"s": int(start.timestamp()) * 10**9, "e": int(end.timestamp()) * 10**9})
    return {r["time"]: r["v"] for r in rows}


def test_the_backfilled_day_is_whole_for_every_sensor(demo):
    s, influx = demo["settings"], demo["worker"].influx
    hours: dict[str, set[int]] = {}
    params = {"s": int(DAY.timestamp()) * 10**9, "e": int((DAY + timedelta(days=1)).timestamp()) * 10**9}
    for db in (s.influx.raw_database, s.influx.ops_database):
        for m in CATEGORIES:
            q = f'SELECT count(*) FROM "{m}" WHERE time >= $s AND time < $e GROUP BY time(1h), "sensor" fill(0)'  # noqa: S608
            for r in influx.rows(q, db, params):
                if any(v for k, v in r.items() if k.startswith("count_") and v):
                    hours.setdefault(r["sensor"], set()).add(r["time"])
    # 24 hours of readings for every registered sensor in the previous UTC day, not the 13 minutes since 23:47
    assert {sid: len(h) for sid, h in hours.items()} == {sid: 24 for sid in demo["registry"].sensors}


def test_the_hour_across_the_seam_is_an_hour_like_the_others(demo):
    s, influx = demo["settings"], demo["worker"].influx
    last = demo["last"]
    seam = last + timedelta(minutes=1)  # the first live minute
    cars = _hourly(influx, s.influx.raw_database, "traffic", "cars", DAY, DAY + timedelta(days=1))
    hours = [cars[h] for h in sorted(cars)]
    usual = max(max(x, y) / max(1, min(x, y)) for x, y in itertools.pairwise(hours))
    db, m = s.influx.raw_database, "traffic"
    before = sum(_hourly(influx, db, m, "cars", seam - timedelta(hours=1), seam).values())
    after = sum(_hourly(influx, db, m, "cars", seam, seam + timedelta(hours=1)).values())
    assert after > 0 and max(before, after) / max(1, min(before, after)) <= usual, (before, after, usual)


def _observations(client, dataset: str, **params) -> list[dict]:
    params = {"from": DAY.isoformat(), "to": (DAY + timedelta(days=1)).isoformat(), "limit": 100_000, **params}
    r = client.get(f"/v1/datasets/{dataset}/observations", params=params)
    assert r.status_code == 200, r.text
    return r.json()["observations"]


def test_every_listed_dataset_is_published_and_no_listed_column_is_always_empty(demo):
    client = demo["client"]
    listed = [d["id"] for d in client.get("/v1/datasets").json()["datasets"]]
    assert sorted(listed) == sorted(CHARTER.datasets)
    for name in listed:
        fields = [f["name"] for f in client.get(f"/v1/datasets/{name}").json()["fields"]]
        rows = _observations(client, name, level="all")
        assert rows, f"{name}: nothing published for {DAY:%Y-%m-%d}"
        empty = [f for f in fields if all(r.get(f) is None for r in rows)]
        assert not empty, f"{name}: listed columns without a value all day: {empty}"


def test_the_demo_s_whole_day_is_complete_for_every_dataset_that_measures_coverage(demo):
    """The backfilled day is whole (every sensor, every minute): no dataset's coverage of it is low, so the
    catalogue flags nothing (a partial day would be flagged once final: tests/datacharter/test_coverage.py)."""
    client = demo["client"]
    measured = 0
    for name in sorted(CHARTER.datasets):
        cov = client.get(f"/v1/datasets/{name}").json()["coverage"]
        if not cov["measured"]:
            continue
        measured += 1
        day = next(d for d in cov["days"] if d["day"] == f"{DAY:%Y-%m-%d}")
        assert day["coverage"] >= 0.99 and not day["low"], (name, day)
        assert f"{DAY:%Y-%m-%d}" not in cov["flagged_days"], name
    assert measured >= len(CHARTER.datasets) - 1  # all but the pedestrian sightings (events, not a schedule)


def _integer_columns(name: str) -> list[str]:
    ds = CHARTER.datasets[name]
    return sorted(ds.integer_fields & ds.allowed_fields)


@pytest.mark.parametrize("name", sorted(n for n in CHARTER.datasets if _integer_columns(n)))
def test_counts_are_integers_in_every_format(demo, name):
    client = demo["client"]
    ds = CHARTER.datasets[name]
    counts = _integer_columns(name)
    variants: list[dict] = [{"level": "all"}]
    if ds.time.bin != "1d":
        variants.append({"level": "all", "resolution": "1d"})  # derived: sums of counts
    for params in variants:
        base = {"from": DAY.isoformat(), "to": (DAY + timedelta(days=1)).isoformat(), "limit": 100_000, **params}
        url = f"/v1/datasets/{name}/observations"
        rows = client.get(url, params={**base, "format": "json"}).json()["observations"]
        features = client.get(url, params={**base, "format": "geojson"}).json()["features"]
        table = pq.read_table(io.BytesIO(client.get(url, params={**base, "format": "parquet"}).content))
        text = client.get(url, params={**base, "format": "csv"}).text
        assert rows, (name, params)
        for f in counts:
            present = [r[f] for r in rows if f in r]
            if not present:  # a count the coarser resolution cannot derive is not in that variant
                continue
            assert all(type(v) is int for v in present), (name, params, f, present[:5])
            assert all(type(x["properties"][f]) is int for x in features if f in x["properties"]), (name, f)
            assert str(table.schema.field(f).type) == "int64", (name, params, f, table.schema)
            cells = [r[f] for r in csv.DictReader(io.StringIO(text)) if r[f] != ""]
            assert cells and all(c.isdigit() for c in cells), (name, params, f, cells[:5])


def test_counts_are_stored_as_integers_and_levels_as_floats(demo):
    """Line-protocol types as the vocabulary says (simulator, ingest) and as the charter aggregates (a sum or
    count of counts is an integer, a mean or a level a float): one type per field, in raw and open."""
    s, influx = demo["settings"], demo["worker"].influx
    kinds = {"int": "integer", "float": "float", "bool": "boolean"}
    raw: dict[tuple[str, str], str] = {}
    for db in (s.influx.raw_database, s.influx.ops_database):
        for r in influx.rows("SHOW FIELD KEYS", db):
            raw[(r["_measurement"], r["fieldKey"])] = r["fieldType"]
    expected = {(q.category, q.field): kinds[q.kind] for q in QUANTITIES.values()}
    assert raw and {k: v for k, v in raw.items() if k in expected} == {k: expected[k] for k in raw if k in expected}
    stored = {
        (r["_measurement"], r["fieldKey"]): r["fieldType"]
        for r in influx.rows("SHOW FIELD KEYS", s.charter.open_database)
    }
    # the datasets, and the coverage of their windows (datacharter.job.WINDOW_COVERAGE)
    assert {m for m, _ in stored} == {*CHARTER.datasets, WINDOW_COVERAGE}
    window = {f: kind for (m, f), kind in stored.items() if m == WINDOW_COVERAGE}
    assert window == {"coverage": "float", "low": "boolean", "charter_version": "string"}
    for (m, f), kind in stored.items():
        if m != WINDOW_COVERAGE:
            assert kind == ("integer" if f in CHARTER.datasets[m].integer_fields else "float"), (m, f, kind)


def test_fields_returns_only_rows_that_hold_a_named_field(demo):
    client = demo["client"]
    every = _observations(client, "air_quality")
    with_o3 = [r for r in every if "o3_mean" in r]
    # the zone's air stations measure O3, its Zigbee and LoRaWAN particle sensors do not: rows of both kinds
    assert with_o3 and len(with_o3) < len(every)
    rows = _observations(client, "air_quality", fields="o3_mean")
    assert rows and all("o3_mean" in r for r in rows) and len(rows) == len(with_o3)
    # also in the streamed CSV, at a coarser resolution, and for several fields (one of them is enough)
    text = client.get(
        "/v1/datasets/air_quality/observations",
        params={
            "from": DAY.isoformat(),
            "to": (DAY + timedelta(days=1)).isoformat(),
            "fields": "o3_mean",
            "format": "csv",
        },
    ).text
    assert all(r["o3_mean"] != "" for r in csv.DictReader(io.StringIO(text)))
    hourly = _observations(client, "air_quality", fields="o3_mean", resolution="1h")
    assert hourly and all("o3_mean" in r for r in hourly)
    both = _observations(client, "air_quality", fields="o3_mean,voc_mean")
    assert all("o3_mean" in r or "voc_mean" in r for r in both) and len(both) < len(every)
