"""How complete each published window is (issue 14, section 5), on a real influxd: two simulated days of the
zone, the first whole, the second with only its first 12 hours (half its readings missing), published by the
charter job with ``now`` as a parameter. The coverage is in the audit (with the counts), on every point, in the
catalogue per day, and a filter of the API; a final day with low coverage is flagged everywhere. And the job's
run line says what that run did, not the running total of the day."""

from __future__ import annotations

import logging
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from cli import main as cli
from cli.backfill import backfill
from datacharter.charter import Charter
from datacharter.job import WINDOW_COVERAGE, CharterJob
from gateways.simulator import SimulatedZone
from ingest.pipeline import Pipeline
from ingest.worker import ensure_databases
from smartzone.registry import Registry
from storage.influx import Influx
from tests.conftest import REGISTRY, drop_zone_databases, zone_settings

CHARTER = Charter.load()
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
FULL = TODAY - timedelta(days=3)  # every sensor every 5 minutes, all day
HALF = TODAY - timedelta(days=2)  # the same, 00:00 to 12:00 only
STEP = 300  # seconds between rounds: the demo registry's traffic and weather sensors report every 5 minutes
DATASETS = ["traffic", "weather"]  # traffic: frozen days (about people); weather: re-published (environment)


def day(t: datetime) -> str:
    return t.date().isoformat()


@pytest.fixture(scope="module")
def zone(tmp_path_factory, influxd):
    tmp = tmp_path_factory.mktemp("coverage")
    settings = zone_settings(tmp / "data", influxd.url, api={"rate_limit": 1000.0, "rate_burst": 10_000})
    registry = Registry.load(REGISTRY)
    influx = Influx(settings.influx)
    ensure_databases(influx, settings, CHARTER)
    pipe = Pipeline.from_settings(settings, registry, CHARTER)
    sim = SimulatedZone(registry, 5)
    backfill(sim, pipe, influx, settings, FULL, 86_400 // STEP, STEP)
    backfill(sim, pipe, influx, settings, HALF, 43_200 // STEP, STEP, first_round=86_400 // STEP)
    job = CharterJob(settings, CHARTER, registry, influx)
    reports = job.run_once(now=HALF + timedelta(days=1, minutes=5), datasets=DATASETS)
    yield {"settings": settings, "influx": influx, "job": job, "reports": reports}
    drop_zone_databases(influx, settings)
    job.close()


def test_the_coverage_of_each_window_is_in_the_audit_with_its_counts(zone):
    by = {(r.dataset, r.start): r.coverage for r in zone["reports"]}
    ns = lambda t: int(t.timestamp()) * 1_000_000_000  # noqa: E731
    full, half = by[("traffic", ns(FULL))], by[("traffic", ns(HALF))]
    assert full is not None and half is not None
    # 4 counters every 5 minutes: 1152 readings a day
    assert (full.expected, full.arrived, full.value, full.low) == (1152, 1152, 1.0, False)
    assert (half.expected, half.arrived, half.value, half.low) == (1152, 576, 0.5, True)
    weather = by[("weather", ns(HALF))]
    assert weather is not None and weather.low and 0.45 <= weather.value <= 0.55
    assert by[("weather", ns(FULL))].value == 1.0  # type: ignore[union-attr]
    audit = {(r["dataset"], r["window_start"]): r for r in zone["job"].store.audit(limit=100)}
    rec = audit[("traffic", ns(HALF))]
    assert (rec["expected_readings"], rec["arrived_readings"], rec["coverage"], rec["low_coverage"]) == (
        1152,
        576,
        0.5,
        True,
    )
    assert audit[("traffic", ns(FULL))]["low_coverage"] is False


def test_every_point_and_the_open_database_carry_the_window_coverage(zone):
    settings, influx = zone["settings"], zone["influx"]
    rows = influx.rows('SELECT "coverage" FROM "traffic"', settings.charter.open_database)
    per_day = {}
    for r in rows:
        per_day.setdefault(datetime.fromtimestamp(r["time"] / 1e9, UTC).date().isoformat(), set()).add(r["coverage"])
    assert per_day == {day(FULL): {1.0}, day(HALF): {0.5}}
    windows = influx.rows(
        f'SELECT "coverage", "low" FROM "{WINDOW_COVERAGE}" WHERE "dataset" = \'traffic\'',  # noqa: S608
        settings.charter.open_database,
    )
    assert [(r["coverage"], r["low"]) for r in windows] == [(1.0, False), (0.5, True)]


def test_the_api_filters_on_coverage_and_flags_a_final_low_day(zone):
    with TestClient(create_app(zone["settings"])) as client:
        span = {"from": FULL.isoformat(), "to": (HALF + timedelta(days=1)).isoformat(), "level": "all"}
        every = client.get("/v1/datasets/traffic/observations", params=span).json()
        assert {o["time"][:10] for o in every["observations"]} == {day(FULL), day(HALF)}
        assert {o["coverage"] for o in every["observations"]} == {1.0, 0.5}
        meta = {w["day"]: w for w in every["windows"]}
        assert meta[day(HALF)] == {"day": day(HALF), "coverage": 0.5, "low": True, "final": True, "flagged": True}
        assert meta[day(FULL)]["flagged"] is False

        kept = client.get("/v1/datasets/traffic/observations", params=span | {"min_coverage": "0.9"}).json()
        assert kept["observations"] and {o["time"][:10] for o in kept["observations"]} == {day(FULL)}
        csv = client.get("/v1/datasets/traffic/observations", params=span | {"format": "csv", "min_coverage": 0.9})
        lines = csv.text.splitlines()
        assert "coverage" in lines[0].split(",") and all(day(FULL) in line for line in lines[1:])
        assert csv.headers["Low-Coverage-Days"] == day(HALF)
        daily = client.get(
            "/v1/datasets/traffic/observations", params=span | {"resolution": "1d", "min_coverage": 0.4}
        ).json()
        assert {o["coverage"] for o in daily["observations"]} == {1.0, 0.5}
        wrong = client.get("/v1/datasets/traffic/observations", params={"min_coverage": 2})
        assert wrong.status_code == 400 and wrong.json()["parameter"] == "min_coverage"
        refused = client.get("/v1/datasets/pedestrian_flow/observations", params={"min_coverage": 0.5})
        assert refused.status_code == 400 and refused.json()["parameter"] == "min_coverage"

        cat = client.get("/v1/datasets/traffic").json()["coverage"]
        assert cat["measured"] and cat["threshold"] == 0.8 and cat["flagged_days"] == [day(HALF)]
        assert [(d["day"], d["coverage"]) for d in cat["days"]] == [(day(FULL), 1.0), (day(HALF), 0.5)]
        assert "share of the readings" in cat["explanation"]
        weather = client.get("/v1/datasets/weather").json()["coverage"]  # low, but late data may still come
        half = next(d for d in weather["days"] if d["day"] == day(HALF))
        assert half["low"] and not half["final"] and not half["flagged"]
        ld = client.get("/v1/datasets/traffic", params={"format": "jsonld"}).json()
        measured = {m["dct:temporal"]["@value"]: m for m in ld["dqv:hasQualityMeasurement"]}
        assert measured[day(HALF)]["dqv:value"]["@value"] == 0.5 and measured[day(HALF)]["sz:lowCoverage"] is True
        assert client.get("/v1/datasets/pedestrian_flow").json()["coverage"]["measured"] is False


def test_the_run_line_says_what_that_run_published(tmp_path, influxd, monkeypatch, capsys):
    """Two runs on the same (open) day with different ``--now``: the second line reports only the bins that
    closed between the two runs, not the day so far."""
    settings = zone_settings(tmp_path / "data", influxd.url)
    registry = Registry.load(REGISTRY)
    influx = Influx(settings.influx)
    try:
        ensure_databases(influx, settings, CHARTER)
        pipe = Pipeline.from_settings(settings, registry, CHARTER)
        backfill(SimulatedZone(registry, 3), pipe, influx, settings, HALF, 43_200 // STEP, STEP)
        for key, value in {
            "SMARTZONE_DATA_DIR": str(settings.data_dir),
            "SMARTZONE_INFLUX__URL": settings.influx.url,
            "SMARTZONE_INFLUX__RAW_DATABASE": settings.influx.raw_database,
            "SMARTZONE_INFLUX__OPS_DATABASE": settings.influx.ops_database,
            "SMARTZONE_INFLUX__PSEUDONYMOUS_DATABASE": settings.influx.pseudonymous_database,
            "SMARTZONE_CHARTER__OPEN_DATABASE": settings.charter.open_database,
        }.items():
            monkeypatch.setenv(key, value)
        weather_cells = len({registry.cell_of(s) for s, x in registry.sensors.items() if x.category == "weather"})

        def run(now: datetime) -> str:
            assert cli.main(["charter", "run", "weather", "--once", "--now", now.isoformat()]) == 0
            return capsys.readouterr().out.strip().splitlines()[-1]

        first = run(HALF + timedelta(hours=3, minutes=5))  # bins 00:00-03:00 closed: 12 per cell
        assert f"weather: windows=1 written=1 new_points={12 * weather_cells} rewritten_points=0" in first
        second = run(HALF + timedelta(hours=6, minutes=5))  # 03:00-06:00 closed since: 12 more per cell
        assert f"weather: windows=1 written=1 new_points={12 * weather_cells} " in second
        assert f"rewritten_points={12 * weather_cells}" in second  # the day's earlier bins, written again
        assert f"coverage {day(HALF)}=1.00" in second  # the 6 hours published so far are complete
        third = run(HALF + timedelta(hours=6, minutes=6))  # nothing closed since: nothing new
        assert "weather: windows=1 written=0 new_points=0 rewritten_points=0 suppressed=0" in third

        # the long-running job logs the same line per run
        job = CharterJob(settings, CHARTER, registry, influx)
        stop = threading.Event()
        monkeypatch.setattr(job, "run_once", lambda: stop.set() or [])
        lines: list[str] = []
        handler = logging.Handler(logging.INFO)
        handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
        logger = logging.getLogger("datacharter.job")
        logger.addHandler(handler)
        level, logger.level = logger.level, logging.INFO
        try:
            job.run_forever(60, stop)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            job.store.close()
        assert lines == ["charter 2026.12.0 run: nothing to publish"]
    finally:
        drop_zone_databases(influx, settings)
        influx.close()


def test_the_registry_says_when_each_sensor_should_report(tmp_path, monkeypatch, capsys):
    """Intervals: the sensor's own, else its LoRaWAN profile's, else its category's; validated; a sensor
    installed mid-day is expected only from then on."""
    import yaml

    from datacharter.coverage import Schedule
    from smartzone.errors import ConfigurationError

    doc = yaml.safe_load(REGISTRY.read_text())
    registry = Registry.load(REGISTRY)
    assert registry.interval("traffic-egmont-1") == doc["reporting_intervals"]["traffic"] == 300
    assert registry.interval("parking-lora-bay-volkstraat-1") == 3600  # the Bosch profile's uplink_interval
    doc["sensors"][0] |= {"interval": 30, "installed": datetime(2026, 11, 24, 12, tzinfo=UTC).date()}
    doc["sensors"][1]["category"] = "noise"
    del doc["reporting_intervals"]["noise"]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    edited = Registry.load(path)
    first, second = doc["sensors"][0]["id"], doc["sensors"][1]["id"]
    assert edited.interval(first) == 30 and edited.interval(second) is None
    assert edited.sensors[first].installed == datetime(2026, 11, 24, tzinfo=UTC)
    half = int(datetime(2026, 11, 24, 12, tzinfo=UTC).timestamp()) * 1_000_000_000
    day0 = half - 43_200 * 1_000_000_000
    assert Schedule(300, installed=half).expected(day0, day0 + 86_400 * 1_000_000_000) == 144
    monkeypatch.setenv("SMARTZONE_REGISTRY", str(path))
    monkeypatch.setenv("SMARTZONE_CONFIG", "/nonexistent.toml")
    assert cli.main(["registry", "check"]) == 0
    out = capsys.readouterr().out
    assert "4 sensors have no reporting interval" in out  # the 3 noise meters and the re-categorised sensor
    assert out.rstrip().endswith(f"{second}, noise-nationalestraat-1, noise-sint-andries-1, noise-volkstraat-1")
    for bad, message in (
        ({"reporting_intervals": {"weather": 0}}, "give seconds between 1 and 86400"),
        ({"reporting_intervals": {"pollen": 60}}, "unknown categories ['pollen']"),
    ):
        path.write_text(yaml.safe_dump(doc | bad))
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            Registry.load(path)
    doc["sensors"][0] |= {"removed": "2026-11-01"}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigurationError, match="removed must come after installed"):
        Registry.load(path)
